// The jail, step by step, in Firecracker's jailer order (its docs/jailer.md, "Jailer Operation"):
//
//   1. The jail's root, <chroot-base>/<exec-file name>/<id>/root/, holding only what the VMM needs: the
//      VMM binary (a `bun build --compile` of kindling, build.ts), the shared libraries it is linked
//      against (Bun's runtime is a glibc program: the loader, libc, libm, libdl, libpthread; Firecracker is
//      static and needs none), and three device nodes made with mknod: /dev/kvm, /dev/net/tun, /dev/urandom.
//      The root, the nodes and /dev belong to the VMM's uid and gid, so it can make its API socket there.
//   2. The cgroup <parent>/<id> with the --cgroup settings; the jailer joins it (cgroups.ts).
//   3. --resource-limit (setrlimit), --netns (setns into an existing network namespace).
//   4. A new mount namespace (and, with --new-pid-ns, a new PID namespace for the VMM), where the jail's
//      root becomes / through pivot_root(2) and the old root is detached: nothing of the host's file
//      system is reachable any more. Paths in API requests are now inside the jail.
//   5. Drop to --uid/--gid (no supplementary groups), then execve the VMM: same pid, same cgroup, same
//      namespaces. With --new-pid-ns the VMM is started as the new namespace's pid 1 instead, its pid is
//      written to /<exec-file name>.pid in the jail and the jailer ends (Firecracker's behaviour). The VMM
//      then installs its seccomp filter (on by default) once it is set up.
//
// Bun is multi-threaded. unshare(CLONE_NEWNS), setns and pivot_root act on the calling thread only (the
// main thread here), and execve keeps exactly that thread, so the VMM starts with the main thread's
// namespaces and root. setresuid/setresgid go through glibc, which applies them to every thread.

import { chownSync, copyFileSync, existsSync, linkSync, mkdirSync, realpathSync, rmdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import {
  CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWPID, MNT_DETACH, MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_REC, MS_SLAVE, O_RDONLY,
  chdir, close, dropPrivileges, execve, mknodChar, mount, open, pivotRoot, setns, setResourceLimit, umount2, unshare,
} from "../kvm/libc.ts";
import { setupCgroups, type CgroupSetting } from "./cgroups.ts";

export interface JailOptions {
  id: string;
  execFile: string;
  uid: number;
  gid: number;
  chrootBaseDir: string;
  netns?: string;
  cgroupVersion: 1 | 2;
  cgroups: CgroupSetting[];
  parentCgroup: string;
  resourceLimits: { resource: number; value: bigint }[];
  newPidNs: boolean;
  /** The VMM's own arguments (after `--`). */
  vmmArgs: string[];
}

/** The device nodes the VMM needs: path, major, minor (Documentation/admin-guide/devices.txt). */
export const JAIL_DEVICES = [
  { path: "/dev/kvm", major: 10, minor: 232 },
  { path: "/dev/net/tun", major: 10, minor: 200 },
  { path: "/dev/urandom", major: 1, minor: 9 },
] as const;

/** Environment variables passed to the VMM; everything else of the jailer's environment stays outside. */
const PASSED_ENV = ["KINDLING_LOG_LEVEL", "NO_COLOR", "FORCE_COLOR", "TERM"];

export function jailRoot(o: Pick<JailOptions, "chrootBaseDir" | "execFile" | "id">): string {
  return join(o.chrootBaseDir, basename(o.execFile), o.id, "root");
}

/** The shared objects a dynamically linked program needs, as ldd(1) lists them (absolute paths). */
export function sharedLibraries(file: string): string[] {
  const p = Bun.spawnSync(["ldd", file], { stdout: "pipe", stderr: "pipe" });
  const text = p.stdout.toString();
  if (p.exitCode !== 0) {
    if (/not a dynamic executable/.test(text + p.stderr.toString())) return [];
    throw new Error(`ldd ${file} failed: ${p.stderr.toString()}`);
  }
  return [...text.matchAll(/(?:=>\s*)?(\/\S+)\s+\(0x/g)].map((m) => m[1]!);
}

/** Copy (or hard-link) a host file to the same path under the jail's root. */
function install(root: string, from: string, to = from): string {
  const dest = join(root, to);
  mkdirSync(dirname(dest), { recursive: true });
  rmSync(dest, { force: true });
  // The file itself, not a symlink to it (/lib64/ld-linux-x86-64.so.2 is one): the link would point outside.
  const real = realpathSync(from);
  try {
    linkSync(real, dest);
  } catch {
    copyFileSync(real, dest);
  }
  return dest;
}

/** Step 1: the jail's root directory. Returns the VMM's path inside the jail. */
export function prepareRoot(o: JailOptions): string {
  const root = jailRoot(o);
  const st = statSync(o.execFile, { throwIfNoEntry: false });
  if (!st?.isFile()) throw new Error(`--exec-file ${o.execFile}: not a regular file`);
  mkdirSync(root, { recursive: true });
  const inside = `/${basename(o.execFile)}`;
  install(root, o.execFile, inside);
  for (const lib of sharedLibraries(o.execFile)) install(root, lib);
  for (const d of JAIL_DEVICES) {
    const node = join(root, d.path);
    mkdirSync(dirname(node), { recursive: true });
    chownSync(dirname(node), o.uid, o.gid);
    rmSync(node, { force: true });
    mknodChar(node, 0o600, d.major, d.minor);
    chownSync(node, o.uid, o.gid);
  }
  chownSync(root, o.uid, o.gid);
  return inside;
}

/** Steps 2 to 5. Returns only with --new-pid-ns (0, once the VMM is started); otherwise this process becomes the VMM. */
export async function enterJail(o: JailOptions): Promise<number> {
  const root = jailRoot(o);
  const exec = prepareRoot(o);

  // 2. cgroups, joined by this process (the VMM keeps its pid through execve).
  if (o.cgroups.length) setupCgroups(o.cgroupVersion, o.parentCgroup, o.id, o.cgroups).join(process.pid);

  // 3. Limits and the network namespace.
  for (const l of o.resourceLimits) setResourceLimit(l.resource, l.value);
  if (o.netns) {
    const fd = open(o.netns, O_RDONLY);
    setns(fd, CLONE_NEWNET);
    close(fd);
  }

  // 4. New namespaces; the jail's root becomes / (pivot_root(2): new_root must be a mount point, hence
  // the bind mount; MS_SLAVE first so that nothing mounted here propagates back to the host).
  unshare(CLONE_NEWNS | (o.newPidNs ? CLONE_NEWPID : 0));
  mount("none", "/", null, MS_SLAVE | MS_REC);
  mount(root, root, null, MS_BIND | MS_REC);
  const oldRoot = join(root, "old_root");
  mkdirSync(oldRoot, { recursive: true });
  chdir(root);
  pivotRoot(".", "old_root");
  chdir("/");
  umount2("/old_root", MNT_DETACH);
  rmdirSync("/old_root");
  // Bun needs a /proc: JavaScriptCore finds the main thread's stack through pthread_getattr_np, which
  // reads /proc/self/maps, and aborts without it. Only the process directories (subset=pid), and only
  // those of the VMM's own uid (hidepid=invisible): proc(5), "Mount options".
  mkdirSync("/proc", { recursive: true });
  mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=invisible,subset=pid");

  // 5. Who the VMM runs as, then the VMM.
  dropPrivileges(o.uid, o.gid);
  const env = PASSED_ENV.filter((k) => process.env[k] !== undefined).map((k) => `${k}=${process.env[k]}`);
  if (!o.newPidNs) execve(exec, [basename(exec), ...o.vmmArgs], env);
  // With a new PID namespace the VMM must be a child (unshare(CLONE_NEWPID) moves only the children). As
  // Firecracker's jailer does, the child's pid goes to /<exec-file name>.pid in the jail and the jailer
  // ends: after unshare(CLONE_NEWPID) this thread can no longer create threads (clone(CLONE_THREAD) fails
  // with EINVAL while pid_ns_for_children differs from its own), and Bun would need one to wait.
  const child = Bun.spawn([exec, ...o.vmmArgs], { env: Object.fromEntries(env.map((e) => e.split("=", 2) as [string, string])), stdio: ["inherit", "inherit", "inherit"] });
  writeFileSync(`${exec}.pid`, `${child.pid}\n`);
  child.unref();
  return 0;
}

/** Whether the jail's root still exists (for cleanup by callers). */
export function jailExists(o: Pick<JailOptions, "chrootBaseDir" | "execFile" | "id">): boolean {
  return existsSync(jailRoot(o));
}
