// Why a snapshot was refused or could not be made. `code` is stable, for code and tests; the message says
// what was wrong with which file, for people.

export type SnapshotErrorCode =
  | "NOT_FOUND" // the state or memory file does not exist
  | "TRUNCATED" // the state file is shorter than its header says
  | "NOT_A_SNAPSHOT" // the magic is wrong
  | "WRONG_VERSION" // a format version this kindling does not read
  | "CORRUPTED" // the checksum does not match
  | "INVALID" // the checksum matches but the content does not make sense
  | "INCOMPATIBLE" // made on a host this one cannot stand in for (CPU vendor, MSRs, TSC, XSAVE)
  | "MEMORY_FILE_TOO_SHORT" // the memory file is smaller than the guest's RAM
  | "VM_RUNNING" // create on a VM that is not paused, or load into a process that already has a VM
  | "WRITE_FAILED";

export class SnapshotError extends Error {
  constructor(
    readonly code: SnapshotErrorCode,
    message: string,
  ) {
    super(message);
    this.name = "SnapshotError";
  }
}
