// Build the probe guests with GNU binutils: `as` assembles, `ld` links at the probe's load address, and
// `objcopy -O binary` strips the ELF wrapper so the VMM can copy the bytes straight into guest RAM.
// Results are cached under ~/.cache/kindling/probes/<hash of sources and symbols>/.
//
// Finding a cached probe is on the path to every probe VM's first instruction, so it uses Bun's own file
// calls (Bun.Glob, Bun.mmap): loading node:fs costs a process 2 to 15 ms here (bench/README.md, start to
// first instruction). node:fs is loaded only to build.

import { PROBES, PROBE_SYMBOLS, type ProbeSpec } from "./probes.ts";

const SRC_DIR = import.meta.dir;
/** The file whose presence marks a complete cache directory (non-empty: Bun.mmap refuses empty files). */
const COMPLETE = ".complete";

const join = (...parts: string[]) => parts.join("/");
/** node:fs, loaded only when probes are built. */
const fs = (): typeof import("node:fs") => require("node:fs");

function cacheRoot(): string {
  const home = process.env.HOME || (require("node:os") as typeof import("node:os")).homedir();
  const base = process.env.KINDLING_CACHE_DIR ?? join(process.env.XDG_CACHE_HOME ?? join(home, ".cache"), "kindling");
  return join(base, "probes");
}

/** A file's bytes, or undefined when it does not exist (or is empty). */
function readIfPresent(path: string): Uint8Array | undefined {
  try {
    return Bun.mmap(path, { shared: false });
  } catch {
    return undefined;
  }
}

function run(cmd: string[], cwd: string): void {
  const r = Bun.spawnSync(cmd, { cwd, stderr: "pipe", stdout: "pipe" });
  if (r.exitCode !== 0) {
    const hint = r.exitCode === null || !Bun.which(cmd[0]!) ? ` (is binutils installed? apt-get install binutils)` : "";
    throw new Error(`${cmd.join(" ")} failed${hint}:\n${r.stderr.toString()}${r.stdout.toString()}`);
  }
}

/** What the cache directory is named after: the probe sources, their symbols and specs (sha256, 16 hex digits). */
export function probeSourceHash(): string {
  const h = new Bun.CryptoHasher("sha256");
  const files = [...new Bun.Glob("*.{S,ts}").scanSync({ cwd: SRC_DIR, dot: false })].sort();
  for (const f of files) h.update(f).update(readIfPresent(join(SRC_DIR, f)) ?? new Uint8Array());
  h.update(JSON.stringify(PROBE_SYMBOLS)).update(JSON.stringify(PROBES));
  return h.digest("hex").slice(0, 16);
}

/**
 * A bundle (scripts/bundle.ts) defines this as probeSourceHash() of the sources it was built from, so that
 * a bundled program finds its probes without reading and hashing every source file (~0.7 ms here, on the
 * way to the first instruction). If that directory is gone, the sources are hashed as usual.
 */
declare const KINDLING_PROBE_SOURCE_HASH: string | undefined;

/** Build (or find in the cache) every probe; returns the directory holding `<name>.bin`. */
export function buildProbes(): string {
  if (typeof KINDLING_PROBE_SOURCE_HASH === "string") {
    const bundled = join(cacheRoot(), KINDLING_PROBE_SOURCE_HASH);
    if (readIfPresent(join(bundled, COMPLETE))) return bundled;
  }
  const dir = join(cacheRoot(), probeSourceHash());
  if (readIfPresent(join(dir, COMPLETE))) return dir;
  const { mkdirSync, renameSync, rmSync } = fs();
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
  fs().writeFileSync(join(tmp, COMPLETE), "complete\n");
  rmSync(dir, { recursive: true, force: true });
  renameSync(tmp, dir);
  return dir;
}

export function probeBinary(spec: ProbeSpec): Uint8Array {
  const path = join(buildProbes(), `${spec.name}.bin`);
  const bytes = readIfPresent(path);
  if (!bytes) throw new Error(`${path}: missing from a complete probe cache (delete the directory to rebuild)`);
  return bytes;
}

if (import.meta.main) {
  const dir = buildProbes();
  for (const p of Object.values(PROBES)) console.log(`${p.name.padEnd(9)} ${join(dir, `${p.name}.bin`)}  (${p.about})`);
}
