// Installs the Debian packages the guest build needs, through apt-get, and reports their versions.
//
// Idempotent: a package `dpkg-query -W` already reports as installed is not touched, so a warm machine
// never runs apt-get at all. The versions feed the cache key (cache.ts): a new linux-source-6.1 from a
// Debian point release means a new kernel.

/** What the guest build uses, and why. Nothing else from Debian is required. */
export const KERNEL_BUILD_PACKAGES = [
  "linux-source-6.1", // /usr/src/linux-source-6.1.tar.xz: the kernel we build
  "make",
  "gcc",
  "bc", // kernel/time/timeconst.bc is evaluated at build time
  "bison", // scripts/kconfig and scripts/genksyms grammars
  "flex",
  "libelf-dev", // objtool (x86-64 always builds it) reads and writes ELF objects
  "xz-utils", // to unpack the .tar.xz
] as const;
export const USERLAND_PACKAGES = [
  "busybox-static", // /bin/busybox: a statically linked userland in one binary
  "e2fsprogs", // mkfs.ext4 -d builds the root filesystem from a directory, no loop mount needed
] as const;

/** The installed version of a Debian package, or undefined if it is not installed. */
export function installedVersion(pkg: string): string | undefined {
  const r = Bun.spawnSync(["dpkg-query", "-W", "-f=${Status}\t${Version}", pkg], { stderr: "pipe" });
  if (r.exitCode !== 0) return undefined;
  const [status, version] = r.stdout.toString().split("\t");
  return status === "install ok installed" && version ? version : undefined;
}

function aptGetInstall(pkgs: string[]): { ok: boolean; output: string } {
  const r = Bun.spawnSync(["apt-get", "install", "-y", "-q", "--no-install-recommends", ...pkgs], {
    env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
    stdout: "pipe",
    stderr: "pipe",
  });
  return { ok: r.exitCode === 0, output: r.stdout.toString() + r.stderr.toString() };
}

/** Installs whichever of `pkgs` are missing. Throws with apt-get's own output if that fails. */
export function ensureDebianPackages(pkgs: readonly string[], log: (line: string) => void): void {
  const missing = pkgs.filter((p) => installedVersion(p) === undefined);
  if (missing.length === 0) return;
  if (process.getuid?.() !== 0) {
    throw new Error(`the guest build needs these Debian packages: ${missing.join(" ")}\n` +
      `install them as root: sudo apt-get install --no-install-recommends ${missing.join(" ")}`);
  }
  log(`installing Debian packages: ${missing.join(" ")}`);
  let r = aptGetInstall(missing);
  if (!r.ok && /Unable to locate package|has no installation candidate/.test(r.output)) {
    // A fresh container has empty package lists; fetch them once and retry.
    log("apt-get could not find a package; running apt-get update first");
    const u = Bun.spawnSync(["apt-get", "update", "-q"], { stdout: "pipe", stderr: "pipe" });
    if (u.exitCode !== 0) throw new Error(`apt-get update failed:\n${u.stderr.toString()}`);
    r = aptGetInstall(missing);
  }
  if (!r.ok) throw new Error(`apt-get install ${missing.join(" ")} failed:\n${r.output.slice(-4000)}`);
  const still = missing.filter((p) => installedVersion(p) === undefined);
  if (still.length) throw new Error(`apt-get reported success but these are still not installed: ${still.join(" ")}`);
}
