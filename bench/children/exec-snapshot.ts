// The process the `exec --snapshot` benchmark times as a program using kindling's library would run it:
// execFromSnapshot(["echo", "hi"]) on a snapshot of the guest's shell (src/exec.ts), run from this source
// or compiled to a standalone executable (scripts/bundle.ts --executable). It prints the command's output,
// then one line with the call's own timings:
//
//   exec-snapshot {"loadMs":N,"firstOutputMs":N,"totalMs":N,"exitCode":N}
//
//   exec-snapshot DIR
//
// No top-level await: a bytecode bundle is CommonJS, which has none.

import { execFromSnapshot } from "../../src/exec.ts";

async function main(): Promise<void> {
  const r = await execFromSnapshot(["echo", "hi"], process.argv[2]!, { timeoutMs: 120_000 });
  process.stdout.write(`${r.stdout}exec-snapshot ${JSON.stringify({ ...r.timings, exitCode: r.exitCode })}\n`);
  process.exit(r.exitCode);
}

main().catch((e: Error) => {
  process.stderr.write(`exec-snapshot: ${e.stack ?? e.message}\n`);
  process.exit(1);
});
