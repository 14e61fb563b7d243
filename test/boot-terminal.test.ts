// `bun run boot` as a person uses it: in a terminal (tmux gives the test one), the default guest boots to a
// shell prompt, a typed command runs, and `poweroff` ends the VM with the VMM exiting 0. One Linux boot,
// slow where the host emulates guest kernel code (the syscall assist completes every system call).

import { afterAll, describe, expect } from "bun:test";
import { join } from "node:path";
import { kvmTest } from "./support/kvm.ts";

const ROOT = join(import.meta.dir, "..");
const session = `kindling-boot-${process.pid}`;

function tmux(...args: string[]): string {
  const r = Bun.spawnSync(["tmux", ...args], { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`tmux ${args.join(" ")}: ${r.stderr.toString()}`);
  return r.stdout.toString();
}

/** The whole pane, scrollback included, without trailing blank lines. */
const screen = () => tmux("capture-pane", "-p", "-J", "-t", session, "-S", "-5000").replace(/\s+$/, "");

async function waitFor(what: string, ok: (text: string) => boolean, ms: number): Promise<string> {
  const until = Date.now() + ms;
  for (;;) {
    const text = screen();
    if (ok(text)) return text;
    if (Date.now() > until) throw new Error(`waited ${ms / 1000} s for ${what}; the terminal shows (last 3000 chars):\n${text.slice(-3000)}`);
    await Bun.sleep(500);
  }
}

afterAll(() => Bun.spawnSync(["tmux", "kill-session", "-t", session]));

describe("bun run boot in a terminal", () => {
  kvmTest(
    "reaches a shell prompt; `echo hi` prints hi; poweroff ends the VM and the process exits 0",
    async () => {
      if (!Bun.which("tmux")) throw new Error("tmux is not installed (scripts/provision.ts installs it for `test`)");
      // The exit status lands on the screen after the VMM ends; the pane then stays for capture-pane.
      tmux("new-session", "-d", "-s", session, "-x", "200", "-y", "50", "-c", ROOT,
        `${process.execPath} run boot; echo "kindling-exit=$?"; sleep 600`);
      const started = Date.now();
      // The prompt: busybox ash prints "# " (or "~ # ") for root, at the end of the screen.
      await waitFor("the shell prompt", (t) => t.includes("kindling: init ready") && /# ?$/.test(t), 900_000);
      const promptAt = Date.now();
      tmux("send-keys", "-t", session, "echo h''i", "Enter");
      await waitFor("the output of echo", (t) => /^hi\r?$/m.test(t.slice(t.lastIndexOf("echo h''i"))), 300_000);
      tmux("send-keys", "-t", session, "poweroff", "Enter");
      const text = await waitFor("the VMM to exit", (t) => /kindling-exit=\d+/.test(t), 300_000);
      expect(text).toContain("kindling-exit=0");
      expect(text).toContain("guest ended");
      console.log(`bun run boot: prompt ${((promptAt - started) / 1000).toFixed(1)} s after start, exit ${((Date.now() - started) / 1000).toFixed(1)} s`);
    },
    1_500_000,
  );
});
