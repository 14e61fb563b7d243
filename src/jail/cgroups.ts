// The jailer's cgroups: a cgroup per microVM, <mount>/<parent>/<id>/, its limits written as files, and
// the jailer's own pid written to cgroup.procs so that the VMM it becomes (execve keeps the pid) is in it.
// Firecracker's jailer does the same with the same flags (--cgroup-version, --cgroup KEY=VALUE,
// --parent-cgroup); see Documentation/admin-guide/cgroup-v2.rst for the file names.
//
//   cgroup v2 (one hierarchy): a key's controller is its prefix (`memory.max` -> memory, `pids.max` -> pids;
//   `cgroup.*` keys need none). Each controller must be enabled in cgroup.subtree_control of every
//   ancestor, from the mount's root down to <parent>, before the files exist in <id>/.
//   cgroup v1 (a hierarchy per controller): `memory.limit_in_bytes` goes to the hierarchy mounted with the
//   `memory` option, at <that mount>/<parent>/<id>/.
//
// The mounts are read from /proc/self/mountinfo (proc(5), "/proc/pid/mountinfo").

import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export interface CgroupSetting {
  key: string;
  value: string;
}

/** Where each cgroup hierarchy is mounted: the v2 one, and v1's by controller. */
export interface CgroupMounts {
  v2?: string;
  v1: Map<string, string>;
}

export function cgroupMounts(mountinfo = readFileSync("/proc/self/mountinfo", "utf8")): CgroupMounts {
  const mounts: CgroupMounts = { v1: new Map() };
  for (const line of mountinfo.split("\n")) {
    // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS
    const [left, right] = line.split(" - ");
    if (!left || !right) continue;
    const point = left.split(" ")[4]!.replace(/\\040/g, " ");
    const [fstype, , superOptions = ""] = right.split(" ");
    if (fstype === "cgroup2") mounts.v2 ??= point;
    if (fstype === "cgroup") for (const o of superOptions.split(",")) if (o !== "rw" && o !== "ro") mounts.v1.set(o, point);
  }
  return mounts;
}

/** The controller a key belongs to: `memory.max` -> memory, `cgroup.max.descendants` -> undefined. */
export function controllerOf(key: string): string | undefined {
  const c = key.split(".")[0]!;
  return c === "cgroup" ? undefined : c;
}

/** KEY=VALUE, as --cgroup takes it. Keys are file names: letters, digits, dots and underscores. */
export function parseCgroupSetting(text: string): CgroupSetting {
  const m = /^([a-z][a-z0-9_]*(?:\.[a-zA-Z0-9_]+)+)=(.+)$/.exec(text);
  if (!m) throw new Error(`--cgroup ${text}: expected KEY=VALUE with KEY a cgroup file name such as memory.max`);
  if (/[\n/]/.test(m[2]!)) throw new Error(`--cgroup ${text}: the value cannot hold a newline or a slash`);
  return { key: m[1]!, value: m[2]! };
}

export interface JailCgroups {
  /** The directories made, one per hierarchy used (v2: one). */
  dirs: string[];
  /** Put a process in them (the jailer itself, before it becomes the VMM). */
  join(pid: number): void;
}

/** Make <parent>/<id> in each hierarchy the settings need and write the settings. */
export function setupCgroups(version: 1 | 2, parent: string, id: string, settings: readonly CgroupSetting[], mounts = cgroupMounts()): JailCgroups {
  const rel = join(parent, id);
  if (version === 2) {
    if (!mounts.v2) throw new Error("--cgroup-version 2: no cgroup2 file system is mounted (see /proc/self/mountinfo)");
    const root = mounts.v2;
    const controllers = [...new Set(settings.map((s) => controllerOf(s.key)).filter((c) => c !== undefined))];
    const available = readFileSync(join(root, "cgroup.controllers"), "utf8").trim().split(/\s+/);
    const missing = controllers.filter((c) => !available.includes(c));
    if (missing.length) {
      throw new Error(`--cgroup-version 2: the ${missing.join(", ")} controller${missing.length > 1 ? "s are" : " is"} not available in ${root} (it has: ${available.join(" ") || "none"}); on a host where cgroup v1 holds them, use --cgroup-version 1`);
    }
    // Enable the controllers from the root down to <parent> (cgroup-v2.rst, "Enabling and Disabling").
    let at = root;
    for (const part of ["", ...parent.split("/").filter(Boolean)]) {
      at = join(at, part);
      mkdirSync(at, { recursive: true });
      for (const c of controllers) writeFileSync(join(at, "cgroup.subtree_control"), `+${c}`);
    }
    const dir = join(root, rel);
    mkdirSync(dir, { recursive: true });
    for (const s of settings) writeSetting(dir, s);
    return { dirs: [dir], join: (pid) => writeFileSync(join(dir, "cgroup.procs"), String(pid)) };
  }
  const dirs = new Map<string, string>();
  for (const s of settings) {
    const c = controllerOf(s.key);
    const mount = c === undefined ? undefined : mounts.v1.get(c);
    if (!mount) throw new Error(`--cgroup ${s.key}: no cgroup v1 hierarchy has the ${c ?? "(none)"} controller mounted`);
    const dir = join(mount, rel);
    if (!dirs.has(mount)) {
      mkdirSync(dir, { recursive: true });
      dirs.set(mount, dir);
    }
    writeSetting(dir, s);
  }
  return { dirs: [...dirs.values()], join: (pid) => dirs.forEach((dir) => writeFileSync(join(dir, "cgroup.procs"), String(pid))) };
}

function writeSetting(dir: string, s: CgroupSetting): void {
  const file = join(dir, s.key);
  if (!existsSync(file)) throw new Error(`--cgroup ${s.key}: ${dir} has no file ${s.key}`);
  try {
    writeFileSync(file, s.value);
  } catch (e) {
    throw new Error(`--cgroup ${s.key}=${s.value}: writing ${file} failed: ${(e as Error).message}`);
  }
}
