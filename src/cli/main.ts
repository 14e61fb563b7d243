#!/usr/bin/env bun
// The `kindling` command line: a table of subcommands, the global --level flag, and the exit codes.
//
// Each subcommand lives in a file of its own and is imported only when it runs, so `kindling --help` stays
// instant and a missing piece (a subcommand not written yet) is a clear message rather than a crash.

import { existsSync } from "node:fs";
import { defineCommand, runCommand, showUsage, type ArgsDef, type CommandDef, type CommandMeta } from "citty";
import { consola } from "consola";

/** What kindling's exit status means. Documented in README.md ("Exit codes"). */
export const EXIT = {
  /** The command did what was asked (for `boot`: the guest shut down cleanly). */
  OK: 0,
  /** The guest or the VMM failed while running, or kindling hit an internal error. */
  VM_ERROR: 1,
  /** Bad command line or input: unknown command or flag, invalid value, or a command not implemented yet. */
  USAGE: 2,
  /** This host cannot run guests: /dev/kvm is missing or not openable, or KVM lacks a needed capability. */
  NO_KVM: 3,
  /** A piece kindling needs is not there yet: a source file not written, or the guest kernel not built. */
  MISSING: 4,
} as const;
export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

/** An error a subcommand throws to end kindling with a message and a chosen exit code. */
export class CliError extends Error {
  constructor(message: string, readonly exitCode: ExitCode) {
    super(message);
    this.name = "CliError";
  }
}

// ---- log level: --level beats KINDLING_LOG_LEVEL beats "info" ----

const LOG_LEVELS = { silent: -Infinity, error: 0, warn: 1, info: 3, debug: 4, trace: 5 } as const;
type LogLevelName = keyof typeof LOG_LEVELS;
/** Firecracker's --level names (Off, Error, Warning, Info, Debug, Trace), accepted in any case like its own. */
const FIRECRACKER_LEVELS: Record<string, LogLevelName> = { off: "silent", warning: "warn" };

function applyLogLevel(flag: string | undefined): void {
  const given = flag ?? (process.env.KINDLING_LOG_LEVEL || "info");
  const name = FIRECRACKER_LEVELS[given.toLowerCase()] ?? given.toLowerCase();
  if (!(name in LOG_LEVELS)) {
    const source = flag === undefined ? `KINDLING_LOG_LEVEL=${given}` : `--level ${given}`;
    throw new CliError(`${source} is not a log level; use one of ${Object.keys(LOG_LEVELS).join(", ")} (or Firecracker's Off, Warning)`, EXIT.USAGE);
  }
  consola.level = LOG_LEVELS[name as LogLevelName];
}

// ---- subcommands ----

/**
 * A subcommand whose code is in another file. Its name and description are here, so help can list it
 * without loading it; its flags and its run() come from the file's default export (a citty command).
 */
function lazyCommand(meta: CommandMeta, file: string): CommandDef {
  const url = new URL(`./${file}`, import.meta.url);
  let loaded: Promise<CommandDef> | undefined;
  // In a `bun build --compile` binary (the jailer's) the file is embedded under /$bunfs/, which existsSync cannot see.
  const load = () =>
    (loaded ??= existsSync(url) || url.pathname.startsWith("/$bunfs/")
      ? import(url.href).then((m: { default?: CommandDef }) => {
          if (!m.default) throw new CliError(`src/cli/${file} has no default export (a citty command)`, EXIT.MISSING);
          return m.default;
        })
      : Promise.resolve<CommandDef>({
          run: () => {
            throw new CliError(`kindling ${meta.name}: src/cli/${file} is not in this checkout yet`, EXIT.MISSING);
          },
        }));
  return {
    meta,
    args: async () => ((await resolved((await load()).args)) ?? {}) as ArgsDef,
    setup: async (ctx) => (await load()).setup?.(ctx),
    run: async (ctx) => (await load()).run?.(ctx),
    cleanup: async (ctx) => (await load()).cleanup?.(ctx),
  };
}

type BuildGuest = (opts: { force?: boolean; log?: (line: string) => void }) => Promise<Record<string, string>>;

const guestBuild = defineCommand({
  meta: { name: "build", description: "Build the guest kernel, initramfs and root filesystem into the cache (skips what is cached)" },
  args: { force: { type: "boolean", description: "Rebuild even what is cached", default: false } },
  async run({ args }) {
    const file = new URL("../../guest/build.ts", import.meta.url);
    if (!existsSync(file)) throw new CliError("kindling guest build: guest/build.ts is not in this checkout yet", EXIT.MISSING);
    const m: { buildGuest?: BuildGuest } = await import(file.href);
    if (typeof m.buildGuest !== "function") throw new CliError("guest/build.ts does not export buildGuest()", EXIT.MISSING);
    const artifacts = await m.buildGuest({ force: args.force, log: (line) => consola.info(line) });
    for (const [name, path] of Object.entries(artifacts)) console.log(`${name.padEnd(10)}${path}`);
  },
});

export const kindling = defineCommand({
  meta: {
    name: "kindling",
    version: "0.1.0",
    description: "A microVM monitor in TypeScript on Bun: boots Linux in KVM through bun:ffi",
  },
  args: {
    level: {
      type: "string",
      description: `How much to log: ${Object.keys(LOG_LEVELS).join(", ")}, or Firecracker's names in any case (default: $KINDLING_LOG_LEVEL, else info)`,
      valueHint: "level",
    },
  },
  setup({ args }) {
    applyLogLevel(args.level);
  },
  subCommands: {
    doctor: lazyCommand({ name: "doctor", description: "Check that this host can run kindling's guests, and how fast" }, "doctor.ts"),
    boot: lazyCommand({ name: "boot", description: "Boot the default Linux guest (or a probe guest) on this terminal" }, "boot.ts"),
    trace: lazyCommand({ name: "trace", description: "View an exit trace in a browser, or replay it against the device models" }, "trace.ts"),
    exec: lazyCommand({ name: "exec", description: "Boot a fresh microVM, run a command in it, and exit with its exit status" }, "exec.ts"),
    run: lazyCommand({ name: "run", description: "Boot a microVM from a JSON config file (Firecracker's shape) or from flags" }, "run.ts"),
    api: lazyCommand({ name: "api", description: "Serve Firecracker's REST API on a Unix socket and run the microVM it configures" }, "api.ts"),
    jailer: lazyCommand({ name: "jailer", description: "Start the VMM in a chroot, namespaces and a cgroup as an unprivileged user (Firecracker's jailer)" }, "jailer.ts"),
    snapshot: lazyCommand({ name: "snapshot", description: "Snapshots from scripts: create (through a VMM's API), load (in a new VMM), merge (a Diff onto its base)" }, "snapshot.ts"),
    guest: defineCommand({
      meta: { name: "guest", description: "Build the guest images the tests and `boot` use" },
      subCommands: { build: guestBuild },
    }),
  },
});

// ---- running it ----

async function resolved<T>(v: T | Promise<T> | (() => T | Promise<T>) | undefined): Promise<T | undefined> {
  return typeof v === "function" ? (v as () => T | Promise<T>)() : v;
}

/** The chain of commands rawArgs names, root first, and the arguments that belong to the last one. */
async function commandChain(root: CommandDef, rawArgs: string[]): Promise<{ chain: CommandDef[]; rest: string[] }> {
  const chain = [root];
  let rest = rawArgs;
  for (;;) {
    const cmd = chain[chain.length - 1]!;
    const subs = await resolved(cmd.subCommands);
    if (!subs) return { chain, rest };
    const args = (await resolved(cmd.args)) ?? {};
    const i = firstPositional(rest, args);
    const name = i < 0 ? undefined : rest[i];
    if (name === undefined || !(name in subs)) return { chain, rest };
    chain.push((await resolved(subs[name]))!);
    rest = rest.slice(i + 1);
  }
}

function takesValue(def: ArgsDef[string] | undefined): boolean {
  return def?.type === "string" || def?.type === "enum";
}

/** Flag names a command accepts, as typed: --name, --kebab-name, -alias, --no-name for booleans. */
function flagNames(args: ArgsDef): Map<string, ArgsDef[string]> {
  const names = new Map<string, ArgsDef[string]>();
  for (const [name, def] of Object.entries(args)) {
    if (def.type === "positional") continue;
    const kebab = name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
    for (const n of [name, kebab]) names.set(`--${n}`, def);
    if (def.type === "boolean") names.set(`--no-${kebab}`, def);
    const aliases = "alias" in def ? def.alias : undefined;
    for (const a of aliases === undefined ? [] : Array.isArray(aliases) ? aliases : [aliases]) names.set(a.length === 1 ? `-${a}` : `--${a}`, def);
  }
  return names;
}

function firstPositional(rawArgs: string[], args: ArgsDef): number {
  const flags = flagNames(args);
  for (let i = 0; i < rawArgs.length; i++) {
    const a = rawArgs[i]!;
    if (a === "--") return -1;
    if (a.startsWith("-")) {
      if (!a.includes("=") && takesValue(flags.get(a))) i++;
      continue;
    }
    return i;
  }
  return -1;
}

/** citty ignores flags it does not know; kindling refuses them, so a typo is not silently dropped. */
async function checkFlags(chain: CommandDef[], rawArgs: string[]): Promise<void> {
  const known = new Map<string, ArgsDef[string]>();
  for (const cmd of chain) for (const [k, v] of flagNames((await resolved(cmd.args)) ?? {})) known.set(k, v);
  for (let i = 0; i < rawArgs.length; i++) {
    const a = rawArgs[i]!;
    if (a === "--") return;
    if (!a.startsWith("-") || a === "-" || /^-\d/.test(a)) continue;
    const name = a.split("=")[0]!;
    const def = known.get(name);
    if (!def) throw new CliError(`unknown option ${name}; see \`kindling ${chainNames(chain)}--help\``, EXIT.USAGE);
    if (!a.includes("=") && takesValue(def)) i++;
  }
}

function chainNames(chain: CommandDef[]): string {
  return chain.slice(1).map((c) => `${(c.meta as CommandMeta | undefined)?.name ?? ""} `).join("");
}

/** Runs kindling with `rawArgs` and returns the exit code; never throws. */
export async function main(rawArgs: string[]): Promise<number> {
  try {
    const { chain, rest } = await commandChain(kindling as CommandDef, rawArgs);
    const cmd = chain[chain.length - 1]!;
    // Everything after `--` belongs to the guest command (`kindling exec -- ls --help`).
    const own = rawArgs.includes("--") ? rawArgs.slice(0, rawArgs.indexOf("--")) : rawArgs;
    if (own.includes("--help") || own.includes("-h")) {
      await showUsage(cmd, chain.length > 1 ? chain[chain.length - 2] : undefined);
      return EXIT.OK;
    }
    if (rawArgs.length === 1 && rawArgs[0] === "--version") {
      console.log((kindling.meta as CommandMeta).version);
      return EXIT.OK;
    }
    if (cmd.subCommands && !cmd.run) {
      // `kindling` or `kindling guest` alone: show what can follow.
      await showUsage(cmd, chain.length > 1 ? chain[chain.length - 2] : undefined);
      const word = rest[firstPositional(rest, (await resolved(cmd.args)) ?? {})];
      consola.error(word === undefined ? "no command given" : `unknown command: ${word}`);
      return EXIT.USAGE;
    }
    await checkFlags(chain, rawArgs);
    await runCommand(kindling, { rawArgs });
    return typeof process.exitCode === "number" ? process.exitCode : EXIT.OK;
  } catch (e) {
    if (e instanceof CliError) {
      consola.error(e.message);
      return e.exitCode;
    }
    if (e instanceof Error && e.name === "CLIError") {
      // citty's own argument errors: a missing required argument, an enum value not in the list.
      consola.error(e.message);
      return EXIT.USAGE;
    }
    consola.error(e);
    return EXIT.VM_ERROR;
  }
}

if (import.meta.main) process.exit(await main(process.argv.slice(2)));
