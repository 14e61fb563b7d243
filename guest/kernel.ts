// Builds the guest kernel from Debian's linux-source-6.1: unpack, `make tinyconfig`, merge our fragment,
// check that kconfig kept every option, compile vmlinux and bzImage.
//
// The result (vmlinux, bzImage, config, System.map, build.log) is cached in guest/kernel-<hash>/, keyed
// by the fragment, this file, kconfig.ts, the linux-source-6.1 package version and the compiler version.

import { copyFileSync, createWriteStream, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { installedVersion } from "./apt.ts";
import { buildAtomically, guestCacheDir, hashFile, hashInputs, isComplete } from "./cache.ts";
import { droppedOptions, fragmentOptions } from "./kconfig.ts";

export const KERNEL_SOURCE_PACKAGE = "linux-source-6.1";
/** Where the Debian package puts the source tarball. */
export const KERNEL_SOURCE_TARBALL = "/usr/src/linux-source-6.1.tar.xz";
export const KERNEL_FRAGMENT = join(import.meta.dir, "kernel", "kindling.config");

/** The files a finished kernel directory holds. `config` is the resolved .config. */
export const KERNEL_FILES = ["vmlinux", "bzImage", "config", "System.map"] as const;

export type PhaseTimes = Record<string, number>;

function compilerVersion(): string {
  const r = Bun.spawnSync(["gcc", "--version"], { stdout: "pipe", stderr: "pipe" });
  return r.exitCode === 0 ? (r.stdout.toString().split("\n")[0] ?? "") : "no gcc";
}

/** The cache key of the kernel, or undefined if linux-source-6.1 is not installed (so nothing can be built). */
export function kernelHash(): string | undefined {
  const source = installedVersion(KERNEL_SOURCE_PACKAGE);
  if (!source) return undefined;
  return hashInputs({
    fragment: readFileSync(KERNEL_FRAGMENT, "utf8"),
    "kernel.ts": hashFile(join(import.meta.dir, "kernel.ts")),
    "kconfig.ts": hashFile(join(import.meta.dir, "kconfig.ts")),
    [KERNEL_SOURCE_PACKAGE]: source,
    gcc: compilerVersion(),
  });
}

export function kernelDir(hash: string): string {
  return join(guestCacheDir(), `kernel-${hash}`);
}

/**
 * Runs a command with its output appended to `logPath`. While it runs, `onLine` sees every output line
 * (used for progress). Throws with the log's tail if the command fails.
 */
async function run(cmd: string[], cwd: string, logPath: string, onLine?: (line: string) => void): Promise<void> {
  const logFile = createWriteStream(logPath, { flags: "a" });
  logFile.write(`$ ${cmd.join(" ")}\n`);
  const proc = Bun.spawn(cmd, {
    cwd,
    stdout: "pipe",
    stderr: "pipe",
    // Reproducible version strings: no build host, user or date baked into the kernel.
    env: { ...process.env, KBUILD_BUILD_USER: "kindling", KBUILD_BUILD_HOST: "kindling", KBUILD_BUILD_TIMESTAMP: "1970-01-01" },
  });
  const tail: string[] = [];
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    const decoder = new TextDecoder();
    let pending = "";
    for await (const chunk of stream) {
      const text = decoder.decode(chunk, { stream: true });
      logFile.write(text);
      const lines = (pending + text).split("\n");
      pending = lines.pop() ?? "";
      for (const line of lines) {
        onLine?.(line);
        tail.push(line);
        if (tail.length > 40) tail.shift();
      }
    }
  };
  await Promise.all([pump(proc.stdout), pump(proc.stderr)]);
  const code = await proc.exited;
  await new Promise<void>((resolve) => logFile.end(resolve));
  if (code !== 0) {
    throw new Error(`\`${cmd.join(" ")}\` failed with exit code ${code} (full log: ${logPath}):\n${tail.join("\n")}`);
  }
}

/** Builds the kernel into `outDir` (which must exist); returns the time each phase took, in seconds. */
async function buildKernelInto(outDir: string, log: (line: string) => void): Promise<PhaseTimes> {
  const times: PhaseTimes = {};
  const logPath = join(outDir, "build.log");
  const work = join(outDir, "work");
  mkdirSync(work);
  const src = join(work, "linux-source-6.1");
  let t = performance.now();
  const lap = (phase: string) => {
    times[phase] = Math.round((performance.now() - t) / 100) / 10;
    t = performance.now();
    return times[phase];
  };

  log(`unpacking ${KERNEL_SOURCE_TARBALL} (about 15 s)...`);
  await run(["tar", "-xJf", KERNEL_SOURCE_TARBALL, "-C", work], work, logPath);
  log(`unpacked in ${lap("unpack")} s`);

  log("configuring: make tinyconfig + guest/kernel/kindling.config...");
  await run(["make", "tinyconfig"], src, logPath);
  // merge_config.sh -m: merge only, don't run `make alldefconfig` itself; olddefconfig then resolves the
  // dependencies of what we asked for and fills every other option with its default.
  await run(["scripts/kconfig/merge_config.sh", "-m", ".config", KERNEL_FRAGMENT], src, logPath);
  await run(["make", "olddefconfig"], src, logPath);
  const fragment = readFileSync(KERNEL_FRAGMENT, "utf8");
  const dotconfig = readFileSync(join(src, ".config"), "utf8");
  const dropped = droppedOptions(fragment, dotconfig);
  if (dropped.length > 0) {
    const list = dropped.map((d) => `  ${d.name}: asked ${d.wanted}, kconfig chose ${d.got}`).join("\n");
    throw new Error(`kconfig did not keep these options of ${KERNEL_FRAGMENT} (unmet dependencies?):\n${list}`);
  }
  log(`configured in ${lap("config")} s; all ${fragmentOptions(fragment).length} fragment options kept`);

  const jobs = availableParallelism();
  log(`compiling vmlinux and bzImage with make -j${jobs} (3 to 10 minutes on 2 busy cores)...`);
  let objects = 0;
  const started = performance.now();
  const ticker = setInterval(() => {
    log(`  compiling: ${Math.round((performance.now() - started) / 1000)} s, ${objects} files compiled`);
  }, 20_000);
  try {
    await run(["make", `-j${jobs}`, "vmlinux", "bzImage"], src, logPath, (line) => {
      if (/^\s+(CC|AS)\s/.test(line)) objects++;
    });
  } finally {
    clearInterval(ticker);
  }
  log(`compiled in ${lap("compile")} s`);

  copyFileSync(join(src, "vmlinux"), join(outDir, "vmlinux"));
  copyFileSync(join(src, "arch/x86/boot/bzImage"), join(outDir, "bzImage"));
  copyFileSync(join(src, ".config"), join(outDir, "config"));
  copyFileSync(join(src, "System.map"), join(outDir, "System.map"));
  // The object tree is about a gigabyte; the four files above are all anyone needs from it.
  rmSync(work, { recursive: true, force: true });
  writeFileSync(join(outDir, "times.json"), JSON.stringify(times, null, 2) + "\n");
  return times;
}

/**
 * The kernel directory for the current inputs, building it first if needed (or if `force`).
 * `times` is empty when the cache already had it.
 */
export async function ensureKernel(opts: { force?: boolean; log: (line: string) => void }): Promise<{ dir: string; times: PhaseTimes }> {
  if (process.arch !== "x64") throw new Error(`the guest kernel is built for x86-64 on an x86-64 host; this is ${process.arch}`);
  const hash = kernelHash();
  if (!hash) throw new Error(`${KERNEL_SOURCE_PACKAGE} is not installed`);
  const dir = kernelDir(hash);
  if (!opts.force && isComplete(dir, KERNEL_FILES)) return { dir, times: {} };
  let times: PhaseTimes = {};
  await buildAtomically(dir, async (tmp) => {
    times = await buildKernelInto(tmp, opts.log);
  }, { replace: opts.force });
  return { dir, times };
}
