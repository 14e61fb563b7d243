// Where built guest artifacts live, how they are keyed, and how a build becomes visible atomically.
//
//   $KINDLING_CACHE_DIR                 (default: $XDG_CACHE_HOME/kindling, else ~/.cache/kindling)
//     guest/kernel-<hash>/              vmlinux, bzImage, config, System.map, build.log
//     guest/<hash>/                     the kernel files again (hard links) + initramfs.cpio + rootfs.ext4
//     guest/<name>.partial-<pid>/       a build in progress (or abandoned by a process that died)
//     guest/build.lock                  the pid of the process building right now
//
// A hash covers every input of what is in its directory: file contents and Debian package versions. A
// build writes into a ".partial-<pid>" directory and renames it to its final name as the very last step,
// so a directory with a final name is always complete; an interrupted build leaves only a partial one,
// which the next build deletes once its process is gone. The lock makes a second process wait for the
// first instead of compiling the same kernel alongside it.

import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";

/** kindling's cache root: $KINDLING_CACHE_DIR, else $XDG_CACHE_HOME/kindling, else ~/.cache/kindling. */
export function cacheRoot(): string {
  const own = process.env.KINDLING_CACHE_DIR;
  if (own) return own;
  const xdg = process.env.XDG_CACHE_HOME;
  return join(xdg ? xdg : join(homedir(), ".cache"), "kindling");
}

export function guestCacheDir(): string {
  return join(cacheRoot(), "guest");
}

/** A short, stable hash of named inputs (the names are hashed too, so moving a value changes the key). */
export function hashInputs(inputs: Record<string, string>): string {
  const h = new Bun.CryptoHasher("sha256");
  for (const name of Object.keys(inputs).sort()) h.update(`${name}\0${inputs[name]}\0`);
  return h.digest("hex").slice(0, 16);
}

/** sha256 of a file's bytes, for hashing scripts and sources. */
export function hashFile(path: string): string {
  return new Bun.CryptoHasher("sha256").update(readFileSync(path)).digest("hex");
}

/** True if `dir` exists and holds every one of `files`. */
export function isComplete(dir: string, files: readonly string[]): boolean {
  return existsSync(dir) && files.every((f) => existsSync(join(dir, f)));
}

function processIsAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM"; // exists, but not ours to signal
  }
}

/** Removes partial build directories left behind by processes that no longer exist. */
export function removeAbandonedBuilds(parent: string): void {
  if (!existsSync(parent)) return;
  for (const name of readdirSync(parent)) {
    const m = /\.partial-(\d+)$/.exec(name);
    if (m && !processIsAlive(Number(m[1]))) rmSync(join(parent, name), { recursive: true, force: true });
  }
}

/**
 * Runs `build(tmpDir)` in a fresh partial directory, then renames it to `finalDir`. If another process
 * finished the same build first, its result is kept and ours is discarded (unless `replace`, for a forced
 * rebuild). On failure the partial directory is left in place for inspection (build.log) and cleaned up
 * by a later build.
 */
export async function buildAtomically(
  finalDir: string,
  build: (tmpDir: string) => Promise<void>,
  opts: { replace?: boolean } = {},
): Promise<void> {
  const tmp = `${finalDir}.partial-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  await build(tmp);
  if (existsSync(finalDir)) {
    if (opts.replace) {
      rmSync(finalDir, { recursive: true, force: true }); // a forced rebuild replaces the old result
    } else {
      rmSync(tmp, { recursive: true, force: true }); // a concurrent build won the race; same inputs, same result
      return;
    }
  }
  try {
    renameSync(tmp, finalDir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if ((code === "ENOTEMPTY" || code === "EEXIST") && existsSync(finalDir)) {
      rmSync(tmp, { recursive: true, force: true }); // a concurrent build won the race; same inputs, same result
      return;
    }
    throw e;
  }
}

/** A lock older than this is taken over even if its pid exists (after a reboot, pids get reused). */
const LOCK_MAX_AGE_MS = 60 * 60 * 1000;

/**
 * Runs `fn` holding `<parent>/build.lock`, so that only one build runs at a time, whether the others are
 * in other processes or in this one; they wait (and should then look in the cache again). A lock whose process is gone is taken over. Two waiters
 * taking over the same stale lock at once could both proceed; buildAtomically keeps even that correct.
 */
export async function withBuildLock<T>(parent: string, log: (line: string) => void, fn: () => Promise<T>): Promise<T> {
  mkdirSync(parent, { recursive: true });
  const lock = join(parent, "build.lock");
  let announced = false;
  for (;;) {
    try {
      const fd = openSync(lock, "wx"); // O_CREAT | O_EXCL: exactly one process succeeds
      writeSync(fd, String(process.pid));
      closeSync(fd);
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    }
    let holder = NaN;
    let age = 0;
    try {
      holder = Number(readFileSync(lock, "utf8")); // NaN for a moment, while the holder writes its pid
      age = Date.now() - statSync(lock).mtimeMs;
    } catch {
      continue; // released between our open and our read
    }
    if ((Number.isInteger(holder) && !processIsAlive(holder)) || age > LOCK_MAX_AGE_MS) {
      rmSync(lock, { force: true });
      continue;
    }
    if (!announced) log(`another build (pid ${holder}) holds ${lock}; waiting for it to finish...`);
    announced = true;
    await Bun.sleep(500);
  }
  try {
    return await fn();
  } finally {
    rmSync(lock, { force: true });
  }
}
