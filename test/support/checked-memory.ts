// Guest memory for hostile-guest tests: low RAM, a hole, then a small region at 4 GiB (buffers that span
// the hole must be refused), counting every access (`slice`, which every read and write goes through, and
// `contains`) and every access that would fall outside guest RAM. Devices are expected to check before
// they touch: `outOfRange` must stay 0, not merely be caught.

import { RAM_64BIT_START } from "../../src/arch/x86_64/layout.ts";
import { GuestMemory } from "../../src/memory.ts";

export class CheckedMemory extends GuestMemory {
  accesses = 0;
  outOfRange = 0;
  constructor(lowSize: number, highSize: number) {
    super([
      { gpa: 0, bytes: new Uint8Array(lowSize) },
      { gpa: RAM_64BIT_START, bytes: new Uint8Array(highSize) },
    ]);
  }
  override slice(gpa: number, length: number): Uint8Array {
    this.accesses++;
    if (!super.contains(gpa, length)) this.outOfRange++;
    return super.slice(gpa, length);
  }
  override contains(gpa: number, length: number): boolean {
    this.accesses++;
    return super.contains(gpa, length);
  }
}
