// `kindling jailer`: start the VMM jailed, as Firecracker's jailer does, with its flags:
//
//   kindling jailer --id vm1 --exec-file ./kindling-vmm --uid 1234 --gid 1234 \
//     [--chroot-base-dir /srv/jailer] [--netns /var/run/netns/vm1] [--cgroup-version 2] \
//     [--cgroup memory.max=268435456 ...] [--parent-cgroup kindling] [--resource-limit no-file=2048 ...] \
//     [--new-pid-ns] [--daemonize] -- api --api-sock /api.sock
//
// --exec-file is kindling compiled to one file (`bun src/jail/build.ts kindling-vmm`). The steps are in
// src/jail/jail.ts; docs/security-jail.md explains the choices. It needs root (mknod, mounts, setuid).

import { defineCommand } from "citty";
import { basename } from "node:path";
import { CliError, EXIT } from "./main.ts";
import { RLIMIT_FSIZE, RLIMIT_NOFILE } from "../kvm/libc.ts";
import { parseCgroupSetting, type CgroupSetting } from "../jail/cgroups.ts";
import { enterJail, type JailOptions } from "../jail/jail.ts";

/** Firecracker's --resource-limit names. */
const RESOURCES: Record<string, number> = { fsize: RLIMIT_FSIZE, "no-file": RLIMIT_NOFILE };
/** Firecracker's default: the VMM may hold 2048 descriptors. */
const DEFAULT_NO_FILE = 2048n;

/** Every value of a flag that may be repeated (`--cgroup a=1 --cgroup b=2`), before `--`. */
function repeated(rawArgs: string[], flag: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < rawArgs.length && rawArgs[i] !== "--"; i++) {
    const a = rawArgs[i]!;
    if (a === flag && i + 1 < rawArgs.length) out.push(rawArgs[++i]!);
    else if (a.startsWith(`${flag}=`)) out.push(a.slice(flag.length + 1));
  }
  return out;
}

function id(text: string, flag: string, max = 0xffffffff): number {
  if (!/^\d+$/.test(text) || Number(text) > max) throw new CliError(`${flag} ${text}: expected a number 0..${max}`, EXIT.USAGE);
  return Number(text);
}

function usage<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    throw new CliError((e as Error).message, EXIT.USAGE);
  }
}

export default defineCommand({
  meta: { name: "jailer", description: "Start the VMM in a chroot, namespaces and a cgroup, as an unprivileged user (Firecracker's jailer flags); the VMM's arguments follow --" },
  args: {
    id: { type: "string", description: "The microVM's id: letters, digits and '-', up to 64 (names its chroot and cgroup)", required: true, valueHint: "id" },
    "exec-file": { type: "string", description: "The VMM binary: kindling compiled with `bun src/jail/build.ts FILE`", required: true, valueHint: "file" },
    uid: { type: "string", description: "The user id the VMM runs as", required: true, valueHint: "uid" },
    gid: { type: "string", description: "The group id the VMM runs as", required: true, valueHint: "gid" },
    "chroot-base-dir": { type: "string", description: "Where jails are made: <dir>/<exec-file name>/<id>/root", default: "/srv/jailer", valueHint: "dir" },
    netns: { type: "string", description: "Join this network namespace (a path such as /var/run/netns/NAME)", valueHint: "path" },
    "cgroup-version": { type: "string", description: "1 or 2", default: "2", valueHint: "n" },
    cgroup: { type: "string", description: "KEY=VALUE written to the microVM's cgroup (repeatable): memory.max=..., pids.max=...", valueHint: "key=value" },
    "parent-cgroup": { type: "string", description: "The cgroup under which <id> is made (default: the exec file's name)", valueHint: "path" },
    "resource-limit": { type: "string", description: `RESOURCE=VALUE (repeatable): ${Object.keys(RESOURCES).join(", ")} (default no-file=${DEFAULT_NO_FILE})`, valueHint: "res=value" },
    "new-pid-ns": { type: "boolean", description: "Start the VMM as pid 1 of a new PID namespace", default: false },
    daemonize: { type: "boolean", description: "Detach: a new session, no terminal; the jailer returns at once", default: false },
  },
  async run({ args, rawArgs }) {
    const dash = rawArgs.indexOf("--");
    const vmmArgs = dash < 0 ? [] : rawArgs.slice(dash + 1);
    if (!/^[a-zA-Z0-9-]{1,64}$/.test(args.id)) throw new CliError(`--id ${args.id}: letters, digits and '-' only, 1 to 64 of them`, EXIT.USAGE);
    if (args["cgroup-version"] !== "1" && args["cgroup-version"] !== "2") throw new CliError(`--cgroup-version ${args["cgroup-version"]}: 1 or 2`, EXIT.USAGE);
    const parent = args["parent-cgroup"] ?? basename(args["exec-file"]);
    if (parent.split("/").some((p) => p === ".." || p === ".")) throw new CliError(`--parent-cgroup ${parent}: no . or .. parts`, EXIT.USAGE);
    const cgroups: CgroupSetting[] = repeated(rawArgs, "--cgroup").map((c) => usage(() => parseCgroupSetting(c)));
    const limits = new Map<number, bigint>([[RLIMIT_NOFILE, DEFAULT_NO_FILE]]);
    for (const r of repeated(rawArgs, "--resource-limit")) {
      const m = /^([a-z-]+)=(\d+)$/.exec(r);
      if (!m || !(m[1]! in RESOURCES)) throw new CliError(`--resource-limit ${r}: expected RESOURCE=NUMBER with RESOURCE one of ${Object.keys(RESOURCES).join(", ")}`, EXIT.USAGE);
      limits.set(RESOURCES[m[1]!]!, BigInt(m[2]!));
    }
    if (vmmArgs.length === 0) throw new CliError("give the VMM's arguments after --, e.g. `-- api --api-sock /api.sock`", EXIT.USAGE);
    if (process.getuid?.() !== 0) throw new CliError("kindling jailer must run as root (it makes device nodes, mounts and changes user)", EXIT.USAGE);

    const o: JailOptions = {
      id: args.id,
      execFile: args["exec-file"],
      uid: id(args.uid, "--uid"),
      gid: id(args.gid, "--gid"),
      chrootBaseDir: args["chroot-base-dir"],
      netns: args.netns,
      cgroupVersion: args["cgroup-version"] === "1" ? 1 : 2,
      cgroups,
      parentCgroup: parent,
      resourceLimits: [...limits].map(([resource, value]) => ({ resource, value })),
      newPidNs: args["new-pid-ns"],
      vmmArgs,
    };

    if (args.daemonize) {
      // Detach the way a fork and setsid would: the same command, without --daemonize, in a new session.
      const argv = process.argv.slice(2);
      const end = argv.indexOf("--");
      const again = [...process.argv.slice(0, 2), ...argv.filter((a, i) => a !== "--daemonize" || (end >= 0 && i > end))];
      const child = Bun.spawn(again, { stdio: ["ignore", "ignore", "ignore"], detached: true });
      child.unref();
      console.log(child.pid);
      return;
    }
    try {
      process.exitCode = await enterJail(o);
    } catch (e) {
      throw new CliError(`kindling jailer: ${(e as Error).message}`, EXIT.VM_ERROR);
    }
  },
});
