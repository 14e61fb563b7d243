// Build the guest's own tools (guest/tools/*.S): small static x86-64 Linux programs in assembly, for what
// busybox lacks. `as` assembles, `ld -static` links; no libc, so they run on any guest kernel.
// guest/userland.ts puts each one in the guest's /bin under its file name (vsock.S -> /bin/vsock).

import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";

export const TOOLS_DIR = import.meta.dir;

/** The tools' sources, for the guest build's cache key. */
export function toolSources(): string[] {
  return readdirSync(TOOLS_DIR).filter((f) => f.endsWith(".S")).sort().map((f) => join(TOOLS_DIR, f));
}

function run(cmd: string[]): void {
  const r = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) {
    const hint = Bun.which(cmd[0]!) ? "" : " (is binutils installed? apt-get install binutils)";
    throw new Error(`${cmd.join(" ")} failed${hint}:\n${r.stderr.toString()}${r.stdout.toString()}`);
  }
}

/** Each tool's name and its linked ELF bytes. */
export function buildGuestTools(): { name: string; elf: Uint8Array }[] {
  const tmp = mkdtempSync(join(tmpdir(), "kindling-tools-"));
  try {
    return toolSources().map((src) => {
      const name = basename(src, ".S");
      run(["as", "--64", "-o", join(tmp, `${name}.o`), src]);
      run(["ld", "-m", "elf_x86_64", "-static", "-e", "_start", "-o", join(tmp, name), join(tmp, `${name}.o`)]);
      return { name, elf: new Uint8Array(readFileSync(join(tmp, name))) };
    });
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}
