// The VMM as one file, for the jailer's chroot: `bun build --compile` of the kindling command line, with
// Bun's runtime inside.
//
// A compiled binary embeds its modules under /$bunfs/root/, laid out relative to the common directory of
// the entry points, while every bundled module sees `import.meta.url` as the binary's own name
// (file:///$bunfs/root/<outfile>). So `new URL("./vcpu-worker.ts", import.meta.url)` and main.ts's
// `new URL("./api.ts", import.meta.url)` both point at /$bunfs/root/<name>: this build makes every
// file loaded that way an entry point of its own, through a one-line stub in a flat staging directory,
// so that each lands exactly there. The source is not changed. The stubs are found, not listed:
//   - every Worker started from a URL relative to its module (`new Worker(new URL(<"./file.ts">, ...))`) under
//     src/: the vCPU and TAP reader threads;
//   - every src/cli/*.ts (the subcommands main.ts imports lazily).
// Two such files with the same name would collide; the build refuses that.

import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join, resolve } from "node:path";

const SRC = resolve(import.meta.dir, "..");
const WORKER_URL = /new Worker\(\s*new URL\(\s*"\.\/([^"]+)"\s*,\s*import\.meta\.url\s*\)/g;

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sourceFiles(join(dir, e.name)) : e.name.endsWith(".ts") ? [join(dir, e.name)] : [],
  );
}

/** The files that must sit at /$bunfs/root/<name>: worker scripts and lazily imported subcommands. */
export function lazyEntries(): string[] {
  const found = new Set<string>();
  for (const file of sourceFiles(SRC)) {
    for (const m of readFileSync(file, "utf8").matchAll(WORKER_URL)) found.add(resolve(file, "..", m[1]!));
  }
  for (const f of readdirSync(join(SRC, "cli"))) if (f.endsWith(".ts") && f !== "main.ts") found.add(join(SRC, "cli", f));
  const byName = new Map<string, string>();
  for (const f of found) {
    const prior = byName.get(basename(f));
    if (prior) throw new Error(`${prior} and ${f} would both be /$bunfs/root/${basename(f)} in the compiled binary`);
    byName.set(basename(f), f);
  }
  return [...found];
}

/** Compile kindling to `outfile`. Returns its size in bytes. */
export async function buildVmm(outfile: string): Promise<number> {
  const stage = mkdtempSync(join(tmpdir(), "kindling-build-"));
  try {
    const entry = join(stage, "kindling.ts");
    writeFileSync(entry, `import { main } from ${JSON.stringify(join(SRC, "cli/main.ts"))};\nprocess.exit(await main(process.argv.slice(2)));\n`);
    const stubs = lazyEntries().map((file) => {
      const stub = join(stage, basename(file));
      const body = readFileSync(file, "utf8").includes("export default") ? `export { default } from ${JSON.stringify(file)};\n` : `import ${JSON.stringify(file)};\n`;
      writeFileSync(stub, body);
      return stub;
    });
    const p = Bun.spawnSync([process.execPath, "build", "--compile", "--splitting", entry, ...stubs, "--outfile", resolve(outfile)], { cwd: stage, stdout: "pipe", stderr: "pipe" });
    if (p.exitCode !== 0) throw new Error(`bun build --compile failed:\n${p.stderr.toString()}${p.stdout.toString()}`);
    return statSync(outfile).size;
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
}

if (import.meta.main) {
  const out = process.argv[2];
  if (!out) {
    console.error("usage: bun src/jail/build.ts OUTFILE");
    process.exit(2);
  }
  const size = await buildVmm(out);
  console.log(`${out}: ${(size / 1e6).toFixed(1)} MB`);
}
