// `kindling exec` from the command line: one Linux boot for the command's output, exit status and quoted
// arguments, and checks that need no boot (the timeout, a missing command).

import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { kvmTest } from "./support/kvm.ts";

const MAIN = join(import.meta.dir, "..", "src", "cli", "main.ts");

async function kindling(args: string[], timeoutMs: number) {
  const started = performance.now();
  const p = Bun.spawn([process.execPath, MAIN, ...args], { stdout: "pipe", stderr: "pipe", stdin: "ignore" });
  const timer = setTimeout(() => p.kill(), timeoutMs);
  const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  clearTimeout(timer);
  return { stdout, stderr, code, ms: performance.now() - started };
}

describe("kindling exec", () => {
  kvmTest(
    "runs the command in a fresh microVM: its stdout alone on stdout, arguments intact, its exit status",
    async () => {
      // The example, plus arguments with two spaces, a quote and double quotes passed through $@.
      const script = 'echo $((6*7)); printf "[%s]" "$@"; echo; echo oops >&2; exit 3';
      const r = await kindling(["exec", "--", "sh", "-c", script, "argv0", "two  spaces", `it's "quoted"`], 900_000);
      const report = `exit ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`;
      expect(r.stdout, report).toBe(`42\n[two  spaces][it's "quoted"]\n`);
      expect(r.stderr, report).toContain("oops\n");
      // No kernel log on stdout: the guest's console messages are kept off it.
      expect(r.stdout).not.toMatch(/\[\s*\d+\.\d+\]/);
      // kindling's own log (the exec summary line) goes to stderr too.
      expect(r.stderr, report).toContain("exec: exit status 3");
      expect(r.code, report).toBe(3);
      console.log(`kindling exec -- sh -c '...; exit 3': ${(r.ms / 1000).toFixed(1)} s from spawn to exit`);
    },
    1_000_000,
  );

  kvmTest("--timeout ends the microVM and exits 124", async () => {
    const r = await kindling(["exec", "--timeout", "2", "--", "sleep", "100"], 60_000);
    expect(r.code, r.stderr).toBe(124);
    expect(r.stderr).toContain("did not finish within 2 s");
    expect(r.ms).toBeLessThan(30_000);
  });

  test("no command is a usage error", async () => {
    const r = await kindling(["exec", "--memory", "64"], 30_000);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("no command");
  });

  test("a bad flag value is a usage error naming the flag", async () => {
    const r = await kindling(["exec", "--timeout", "soon", "--", "true"], 30_000);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("--timeout");
  });
});
