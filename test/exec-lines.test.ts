// The lines `kindling exec` sends a guest's shell, and the marker that says a snapshot's shell is the quick
// one (src/exec.ts). No KVM: a shell on the host runs the lines, as the guest's busybox sh would.

import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EXEC_SNAPSHOT_INFO, EXEC_SNAPSHOT_STATE, hasQuickShell, QUICK_SHELL_FUNCTION, quickExecLine, quoteArgs, typedExecLine } from "../src/exec.ts";

const dir = mkdtempSync(join(tmpdir(), "kindling-exec-lines-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The quick shell's function, then `line`, in the host's sh. */
function runQuick(line: string): string {
  const script = `${QUICK_SHELL_FUNCTION}\n${line}`;
  const r = Bun.spawnSync(["sh", "-c", script], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  return r.stdout.toString();
}

describe("the lines typed into a restored shell", () => {
  const argv = ["printf", "%s|", "two  spaces", `it's "quoted"`, "$HOME", "a;b"];

  test("the quick line passes every argument through intact and reports the status", () => {
    expect(quickExecLine(argv)).toBe(`k ${quoteArgs(argv)}\n`);
    expect(runQuick(quickExecLine(argv))).toBe(`two  spaces|it's "quoted"|$HOME|a;b|kindling: exit status 0\n`);
    expect(runQuick(quickExecLine(["sh", "-c", "echo out; exit 7"]))).toBe("out\nkindling: exit status 7\n");
  });

  test("the long line brackets the output with a marker and reads /dev/null", () => {
    const r = Bun.spawnSync(["sh", "-c", typedExecLine(["sh", "-c", "cat; echo out >&2; exit 3"])], { stdin: "pipe", stdout: "pipe" });
    expect(r.stdout.toString()).toBe("\x1eS\nout\nkindling: exit status 3\n");
  });
});

describe("exec.json: is this snapshot's shell the quick one?", () => {
  const state = join(dir, EXEC_SNAPSHOT_STATE);
  const info = join(dir, EXEC_SNAPSHOT_INFO);
  const sha = (s: string) => new Bun.CryptoHasher("sha256").update(s).digest("hex");

  test("only with the quick shell's version and the state file's SHA-256", () => {
    writeFileSync(state, "state bytes");
    expect(hasQuickShell(dir)).toBe(false); // no exec.json
    writeFileSync(info, JSON.stringify({ shell: 2, state_sha256: sha("state bytes") }));
    expect(hasQuickShell(dir)).toBe(true);
    writeFileSync(state, "a snapshot made over it later");
    expect(hasQuickShell(dir)).toBe(false);
    writeFileSync(info, JSON.stringify({ shell: 1, state_sha256: sha("a snapshot made over it later") }));
    expect(hasQuickShell(dir)).toBe(false); // an older quick shell
    writeFileSync(info, "not json");
    expect(hasQuickShell(dir)).toBe(false);
  });
});
