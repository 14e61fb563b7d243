// Installing the seccomp filter on every thread of the process, and choosing which filter (the flags).
//
// prctl(PR_SET_NO_NEW_PRIVS, 1) first: an unprivileged process may only install a filter once it has
// promised never to gain privileges through execve (Documentation/userspace-api/no_new_privs.rst); the
// jailer drops to a plain uid before kindling starts, so this is needed there. Then
// seccomp(SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog) attaches the program to every
// thread at once: the main thread, Bun's threads (JIT compiler, GC helpers, the event loop's workers) and
// every Worker already started. Threads created later (the vCPU Workers, the TAP reader) inherit it, as
// every thread made by clone() inherits its creator's filters. A filter cannot be removed, only stacked.

import { readFileSync, statSync } from "node:fs";
import { addressOf, prctl, PR_SET_NO_NEW_PRIVS, seccompSetModeFilter, SECCOMP_FILTER_FLAG_TSYNC } from "../kvm/libc.ts";
import { StructView } from "../kvm/struct.ts";
import { MicroVMError } from "../config/errors.ts";
import { encode, sock_fprog, type Insn } from "./bpf.ts";
import { compileFilter, kindlingFilter, parseFilter, type SeccompFilter } from "./filter.ts";

/** A filter file larger than this is a mistake (the built-in filter is about 17 kB of JSON). */
const FILTER_FILE_MAX_SIZE = 1024 * 1024;

/** Install a compiled program on every thread of this process. */
export function installProgram(program: readonly Insn[]): void {
  const code = encode(program);
  const fprog = new StructView(sock_fprog).assign({ len: program.length, filter: addressOf(code) });
  prctl(PR_SET_NO_NEW_PRIVS, 1);
  seccompSetModeFilter(SECCOMP_FILTER_FLAG_TSYNC, fprog.bytes);
}

/** Read and check a --seccomp-filter FILE. Throws MicroVMError naming the file and the problem. */
export function loadFilterFile(path: string): SeccompFilter {
  let json: unknown;
  try {
    const size = statSync(path).size;
    if (size > FILTER_FILE_MAX_SIZE) throw new Error(`${size} bytes is more than a filter file can be (${FILTER_FILE_MAX_SIZE})`);
    json = JSON.parse(readFileSync(path, "utf8"));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new MicroVMError(`${path}: ${code === "ENOENT" ? "no such file" : (e as Error).message}`);
  }
  return parseFilter(json, path);
}

/** What --no-seccomp / --seccomp-filter chose: nothing, the built-in filter, or a file's. */
export type SeccompChoice = { kind: "off" } | { kind: "builtin" } | { kind: "file"; path: string; filter: SeccompFilter };

/** The filter a choice stands for (undefined: none), compiled. */
export function programFor(choice: SeccompChoice, pid = process.pid): Insn[] | undefined {
  if (choice.kind === "off") return undefined;
  return compileFilter(choice.kind === "file" ? choice.filter : kindlingFilter(pid));
}
