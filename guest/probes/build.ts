// Build the probe guests with GNU binutils: `as` assembles, `ld` links at the probe's load address, and
// `objcopy -O binary` strips the ELF wrapper so the VMM can copy the bytes straight into guest RAM.
// Results are cached under ~/.cache/kindling/probes/<hash of sources and symbols>/.

import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { PROBES, PROBE_SYMBOLS, type ProbeSpec } from "./probes.ts";

const SRC_DIR = import.meta.dir;

function cacheRoot(): string {
  const base = process.env.KINDLING_CACHE_DIR ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "kindling");
  return join(base, "probes");
}

function run(cmd: string[], cwd: string): void {
  const r = Bun.spawnSync(cmd, { cwd, stderr: "pipe", stdout: "pipe" });
  if (r.exitCode !== 0) {
    const hint = r.exitCode === null || !Bun.which(cmd[0]!) ? ` (is binutils installed? apt-get install binutils)` : "";
    throw new Error(`${cmd.join(" ")} failed${hint}:\n${r.stderr.toString()}${r.stdout.toString()}`);
  }
}

function sourceHash(): string {
  const h = new Bun.CryptoHasher("sha256");
  for (const f of readdirSync(SRC_DIR).sort()) if (f.endsWith(".S") || f.endsWith(".ts")) h.update(f).update(readFileSync(join(SRC_DIR, f)));
  h.update(JSON.stringify(PROBE_SYMBOLS)).update(JSON.stringify(PROBES));
  return h.digest("hex").slice(0, 16);
}

/** Build (or find in the cache) every probe; returns the directory holding `<name>.bin`. */
export function buildProbes(): string {
  const dir = join(cacheRoot(), sourceHash());
  if (existsSync(join(dir, ".complete"))) return dir;
  const tmp = `${dir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  const defsyms = Object.entries(PROBE_SYMBOLS).flatMap(([k, v]) => ["--defsym", `${k}=0x${v.toString(16)}`]);
  for (const p of Object.values(PROBES)) {
    const obj = join(tmp, `${p.name}.o`);
    const elf = join(tmp, `${p.name}.elf`);
    run(["as", "--64", "-I", SRC_DIR, ...defsyms, "-o", obj, join(SRC_DIR, `${p.name}.S`)], tmp);
    // A real-mode probe is linked at 0: its addresses are offsets within its code segment.
    const linkAt = p.mode === "real" ? 0 : p.load;
    run(["ld", "-m", "elf_x86_64", "--no-warn-rwx-segments", "-Ttext", `0x${linkAt.toString(16)}`, "-e", "_start", "-o", elf, obj], tmp);
    run(["objcopy", "-O", "binary", elf, join(tmp, `${p.name}.bin`)], tmp);
  }
  Bun.write(join(tmp, ".complete"), "");
  rmSync(dir, { recursive: true, force: true });
  renameSync(tmp, dir);
  return dir;
}

export function probeBinary(spec: ProbeSpec): Uint8Array {
  return readFileSync(join(buildProbes(), `${spec.name}.bin`));
}

if (import.meta.main) {
  const dir = buildProbes();
  for (const p of Object.values(PROBES)) console.log(`${p.name.padEnd(9)} ${join(dir, `${p.name}.bin`)}  (${p.about})`);
}
