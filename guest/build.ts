// Builds kindling's default guest (kernel, initramfs, ext4 root) into the cache, or finds it there.
//
//   bun guest/build.ts [--force]      build if needed (or always, with --force) and print the paths
//
// Phases: apt (apt.ts) -> kernel: unpack, config, compile (kernel.ts) -> initramfs (initramfs.ts)
// -> rootfs (rootfs.ts). The result lands in <cache>/guest/<hash>/ (cache.ts), where the hash covers the
// kernel's inputs, init.sh, these scripts and the busybox-static and e2fsprogs versions.

import { copyFileSync, linkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ensureDebianPackages, installedVersion, KERNEL_BUILD_PACKAGES, USERLAND_PACKAGES } from "./apt.ts";
import { buildAtomically, guestCacheDir, hashFile, hashInputs, isComplete, removeAbandonedBuilds, withBuildLock } from "./cache.ts";
import { ensureKernel, kernelHash, type PhaseTimes } from "./kernel.ts";
import { writeInitramfs } from "./initramfs.ts";
import { writeRootfs } from "./rootfs.ts";
import { INIT_SCRIPT } from "./userland.ts";
import { toolSources } from "./tools/build.ts";

/** Absolute paths of a built guest. `config` is the kernel's resolved .config. */
export interface GuestArtifacts {
  dir: string;
  vmlinux: string;
  bzImage: string;
  initramfs: string;
  rootfs: string;
  config: string;
}

const KERNEL_FILES_COPIED = ["vmlinux", "bzImage", "config", "System.map"] as const;
const GUEST_FILES = [...KERNEL_FILES_COPIED, "initramfs.cpio", "rootfs.ext4"] as const;
/** The scripts whose code shapes the initramfs and root filesystem (kernel.ts hashes its own inputs). */
const USERLAND_SCRIPTS = ["build.ts", "cache.ts", "cpio.ts", "userland.ts", "initramfs.ts", "rootfs.ts", "tools/build.ts"];

function defaultLog(line: string): void {
  process.stderr.write(`[guest] ${line}\n`);
}

/** The cache key of the whole guest, or undefined if a package it is built from is not installed. */
function guestHash(): string | undefined {
  const kernel = kernelHash();
  const versions = USERLAND_PACKAGES.map((p) => installedVersion(p));
  if (!kernel || versions.some((v) => v === undefined)) return undefined;
  const inputs: Record<string, string> = { kernel, "init.sh": hashFile(INIT_SCRIPT) };
  USERLAND_PACKAGES.forEach((p, i) => (inputs[p] = versions[i]!));
  for (const s of USERLAND_SCRIPTS) inputs[s] = hashFile(join(import.meta.dir, s));
  for (const t of toolSources()) inputs[t.slice(import.meta.dir.length + 1)] = hashFile(t);
  return hashInputs(inputs);
}

function artifactsIn(dir: string): GuestArtifacts {
  return {
    dir,
    vmlinux: join(dir, "vmlinux"),
    bzImage: join(dir, "bzImage"),
    initramfs: join(dir, "initramfs.cpio"),
    rootfs: join(dir, "rootfs.ext4"),
    config: join(dir, "config"),
  };
}

/** The guest for the current inputs if it is already in the cache; never builds anything. */
export function guestArtifactsIfBuilt(): GuestArtifacts | undefined {
  const hash = guestHash();
  if (!hash) return undefined;
  const dir = join(guestCacheDir(), hash);
  return isComplete(dir, GUEST_FILES) ? artifactsIn(dir) : undefined;
}

/** Builds whatever part of the guest is missing from the cache (everything, with `force`) and returns it. */
export async function buildGuest(opts: { force?: boolean; log?: (line: string) => void } = {}): Promise<GuestArtifacts> {
  if (!opts.force) {
    const cached = guestArtifactsIfBuilt();
    if (cached) return cached;
  }
  const log = opts.log ?? defaultLog;
  // One build at a time, across processes and within this one (see withBuildLock in cache.ts).
  return withBuildLock(guestCacheDir(), log, async () => {
    // Another build may have finished what we need while we waited for the lock.
    const cached = opts.force ? undefined : guestArtifactsIfBuilt();
    return cached ?? (await build(opts.force ?? false, log));
  });
}

async function build(force: boolean, log: (line: string) => void): Promise<GuestArtifacts> {
  removeAbandonedBuilds(guestCacheDir());
  const times: PhaseTimes = {};
  const started = performance.now();
  let t = started;
  const lap = (phase: string) => {
    times[phase] = Math.round((performance.now() - t) / 10) / 100;
    t = performance.now();
    return times[phase];
  };

  ensureDebianPackages([...KERNEL_BUILD_PACKAGES, ...USERLAND_PACKAGES], log);
  lap("apt");
  const kernel = await ensureKernel({ force, log });
  Object.assign(times, kernel.times);
  if (Object.keys(kernel.times).length === 0) log(`kernel: cached in ${kernel.dir}`);
  t = performance.now();

  const hash = guestHash();
  if (!hash) throw new Error("a package the guest is built from is missing after installing it");
  const dir = join(guestCacheDir(), hash);
  await buildAtomically(dir, async (tmp) => {
    for (const f of KERNEL_FILES_COPIED) {
      // Hard links share the kernel directory's bytes; a copy if the cache spans filesystems.
      try {
        linkSync(join(kernel.dir, f), join(tmp, f));
      } catch {
        copyFileSync(join(kernel.dir, f), join(tmp, f));
      }
    }
    log("writing initramfs.cpio (busybox, applet links, /init)...");
    const size = writeInitramfs(join(tmp, "initramfs.cpio"));
    log(`initramfs: ${(size / 1024 / 1024).toFixed(1)} MiB in ${lap("initramfs")} s`);
    log("writing rootfs.ext4 with mkfs.ext4 -d...");
    writeRootfs(join(tmp, "rootfs.ext4"));
    log(`rootfs: done in ${lap("rootfs")} s`);
    times.total = Math.round((performance.now() - started) / 100) / 10;
    writeFileSync(join(tmp, "times.json"), JSON.stringify(times, null, 2) + "\n");
  }, { replace: force });

  const phases = Object.entries(times).map(([phase, s]) => `${phase} ${s} s`).join(", ");
  log(`guest ready in ${dir} (${phases})`);
  return artifactsIn(dir);
}

if (import.meta.main) {
  const args = process.argv.slice(2);
  const unknown = args.filter((a) => a !== "--force");
  if (unknown.length > 0) {
    process.stderr.write(`usage: bun guest/build.ts [--force]\nunknown argument: ${unknown.join(" ")}\n`);
    process.exit(2);
  }
  try {
    const artifacts = await buildGuest({ force: args.includes("--force") });
    for (const [name, path] of Object.entries(artifacts)) console.log(`${name.padEnd(10)}${path}`);
  } catch (e) {
    process.stderr.write(`[guest] build failed: ${(e as Error).message}\n`);
    process.exit(1);
  }
}
