// A child process for test/seccomp.test.ts: installs a seccomp filter exactly as `kindling api`/`run` do
// (src/cli/run.ts, step 3b), then makes a system call the VMM never makes and prints what happened.
//   bun test/support/seccomp-child.ts builtin|FILE execve|ptrace
// The filter covers the whole process, which is why this runs apart from the test runner.

import { readFileSync, readdirSync } from "node:fs";
import { installProgram, loadFilterFile, programFor } from "../../src/seccomp/install.ts";
import { syscallRaw, errnoName } from "../../src/kvm/libc.ts";
import { syscallNumber } from "../../src/seccomp/syscalls.ts";

const [which, call] = process.argv.slice(2);
const choice = which === "builtin" ? ({ kind: "builtin" } as const) : ({ kind: "file", path: which!, filter: loadFilterFile(which!) } as const);
// A Worker started before the filter must be covered too (TSYNC), and one started after inherits it.
const before = new Worker("data:text/javascript,setInterval(() => {}, 1000)");
await Bun.sleep(50);
installProgram(programFor(choice)!);
const after = new Worker("data:text/javascript,postMessage('ok')");
await new Promise((resolve) => (after.onmessage = resolve));
const seccomp = readdirSync("/proc/self/task").map((t) => /Seccomp:\s+(\d)/.exec(readFileSync(`/proc/self/task/${t}/status`, "utf8"))?.[1]);
console.log(`threads ${seccomp.length} seccomp modes ${[...new Set(seccomp)].join(",")}`);
const PTRACE_TRACEME = 0;
const r = call === "ptrace" ? syscallRaw(syscallNumber("ptrace")!, PTRACE_TRACEME) : syscallRaw(syscallNumber("execve")!, 0, 0, 0);
console.log(`${call} returned ${r < 0 ? errnoName(-r) : r}`);
before.terminate();
after.terminate();
