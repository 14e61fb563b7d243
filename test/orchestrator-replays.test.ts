// The orchestrators that drive Firecracker, replayed against `kindling api`: each fixture in
// test/fixtures/orchestrators/ holds one tool's command line, config file and requests with their bodies as
// the tool sends them, and names the source files they were read from. None of these tools can be
// installed here, so their traffic is replayed instead.
//
// Every replay runs the real CLI (`kindling api` as a child process, real KVM). Booting Linux takes one to
// two minutes on a host that emulates guest kernel code, so ONE replay (firecracker-go-sdk, "boots": true)
// boots the default guest to its init, exercises the balloon, pauses, resumes and ends it with
// SendCtrlAltDel as the SDK's Shutdown does; the others check that every request is accepted (or refused
// by name, as listed below) while their guest boots in the background, and then stop it as the tool does.

import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildGuest, guestArtifactsIfBuilt, type GuestArtifacts } from "../guest/build.ts";
import { loadConfigFile } from "../src/config/file.ts";
import { kvmTest } from "./support/kvm.ts";
import { collect, spawnKindling } from "./support/api.ts";

/**
 * What the replays send that waits on work in other branches. Until that work lands, each of these must be
 * refused by name: a request with a 400 whose fault_message names the missing feature, a command-line flag
 * with a usage error, a config-file key with an error naming the key. The replay leaves it out and goes on.
 * The branch that implements a feature deletes its entries here (the test fails once they are accepted).
 * Keys: "<tool> <METHOD> <path>", "<tool> <--flag>", "<tool> config <key>".
 */
export const AWAITING_OTHER_BRANCHES: Record<string, { branch: string; refusal: RegExp }> = {
  // flintlock sends network_interfaces only for interfaces that allow MMDS, and this replay has no TAP: without
  // the field Firecracker refuses the file too (serde: missing field `network_interfaces`), as kindling does.
  "flintlock config mmds-config": { branch: "a network interface in the replay (a TAP)", refusal: /mmds-config\.network_interfaces: required/ },
};

interface Step {
  from?: string;
  method?: "GET" | "PUT" | "PATCH";
  path?: string;
  body?: unknown;
  expect?: number;
  expectBody?: Record<string, unknown>;
  /** For an expected 400: what the fault_message must contain. */
  fault?: string;
  signal?: "SIGTERM" | "SIGKILL";
  wait?: "console" | "exit" | "balloon" | "log";
  pattern?: string;
  code?: number;
  console?: string;
  actual_mib?: number;
  /** Ask again (every 10 ms, as Kata's waitVMMRunning does) until expectBody matches, for at most this many seconds. */
  repeatUntilMatch?: number;
}

interface Fixture {
  tool: string;
  source: { repo: string; commit: string; files: string[] };
  about: string;
  boots: boolean;
  argv: string[];
  /** Files the tool creates first: a size in bytes (zeros), JSON content, or "fifo" (a named pipe it reads). */
  files?: Record<string, number | object | "fifo">;
  config?: Record<string, unknown>;
  steps: Step[];
}

const FIXTURES = join(import.meta.dir, "fixtures", "orchestrators");
const fixtures: Fixture[] = readdirSync(FIXTURES).filter((f) => f.endsWith(".json")).sort().map((f) => JSON.parse(readFileSync(join(FIXTURES, f), "utf8")));

const root = mkdtempSync(join(tmpdir(), "kindling-replay-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

let guest: GuestArtifacts | undefined;
async function artifacts(): Promise<GuestArtifacts> {
  guest ??= guestArtifactsIfBuilt() ?? (await buildGuest({ log: () => {} }));
  return guest;
}

/** Fills the fixture's {placeholders}, in strings at any depth. */
function fill<T>(v: T, vars: Record<string, string>): T {
  if (typeof v === "string") return v.replace(/\{(\w+)\}/g, (m, k: string) => vars[k] ?? m) as T;
  if (Array.isArray(v)) return v.map((x) => fill(x, vars)) as T;
  if (v && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, fill(x, vars)])) as T;
  return v;
}

/** One request over the API socket. */
async function call(sock: string, method: string, path: string, body?: unknown) {
  const init: RequestInit & { unix: string } = { method, unix: sock };
  if (body !== undefined) init.body = JSON.stringify(body);
  const res = await fetch(`http://localhost${path}`, init);
  const text = await res.text();
  let json: unknown;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  return { status: res.status, json, text };
}

/** The fixture's command line without the flags that wait on other branches (a flag's value goes too). */
function argvNow(f: Fixture): { argv: string[]; awaiting: string[] } {
  const argv: string[] = [];
  const awaiting: string[] = [];
  for (let i = 0; i < f.argv.length; i++) {
    const a = f.argv[i]!;
    if (AWAITING_OTHER_BRANCHES[`${f.tool} ${a}`]) {
      awaiting.push(a);
      if (f.argv[i + 1] !== undefined && !f.argv[i + 1]!.startsWith("--")) i++;
    } else argv.push(a);
  }
  return { argv, awaiting };
}

async function replay(f: Fixture): Promise<void> {
  const g = await artifacts();
  const dir = join(root, f.tool.replace(/\W+/g, "-"));
  mkdirSync(dir, { recursive: true });
  const vars: Record<string, string> = {
    dir, sock: join(dir, "api.sock"), id: `replay-${f.tool.replace(/\W+/g, "-")}`.slice(0, 60), kernel: g.vmlinux, rootfs: g.rootfs, config: join(dir, "config.json"),
  };
  // "fifo": a named pipe with a reader on it, as Kata and firecracker-containerd read the log and metrics.
  const readers: { kill(): void }[] = [];
  for (const [name, content] of Object.entries(f.files ?? {})) {
    const path = join(dir, name);
    if (content === "fifo") {
      if (!existsSync(path)) Bun.spawnSync(["mkfifo", path]);
      readers.push(Bun.spawn(["cat", path], { stdout: "ignore", stderr: "ignore" }));
    } else writeFileSync(path, typeof content === "number" ? new Uint8Array(content) : JSON.stringify(fill(content, vars)));
  }
  if (f.config) {
    const config = fill(structuredClone(f.config), vars);
    for (const key of Object.keys(config)) if (AWAITING_OTHER_BRANCHES[`${f.tool} config ${key}`]) delete config[key];
    writeFileSync(vars.config!, JSON.stringify(config, null, "\t"));
  }

  // Flags waiting on other branches: each refused by name on its own, then left out.
  const { argv, awaiting } = argvNow(f);
  for (const flag of awaiting) {
    // --no-api without --config-file is a usage error of its own: nothing starts whichever way the flag goes.
    const value = f.argv[f.argv.indexOf(flag) + 1];
    const p = spawnKindling(["api", flag, ...(value && !value.startsWith("--") ? [fill(value, vars)] : []), "--no-api"]);
    const err = await new Response(p.stderr).text();
    await p.exited;
    expect(err, `${f.tool} ${flag}: refused by name until ${AWAITING_OTHER_BRANCHES[`${f.tool} ${flag}`]!.branch} lands`).toMatch(AWAITING_OTHER_BRANCHES[`${f.tool} ${flag}`]!.refusal);
  }
  for (const key of Object.keys(f.config ?? {})) {
    const waiting = AWAITING_OTHER_BRANCHES[`${f.tool} config ${key}`];
    if (!waiting) continue;
    const alone = join(dir, `only-${key}.json`);
    writeFileSync(alone, JSON.stringify({ [key]: fill(f.config![key], vars) }));
    expect(() => loadConfigFile(alone), `${f.tool} config ${key}: refused by name until ${waiting.branch} lands`).toThrow(waiting.refusal);
  }

  const p = spawnKindling(["api", ...fill(argv, vars), "--level", "info"]);
  const out = collect(p.stdout);
  const err = collect(p.stderr);
  const deadline = setTimeout(() => p.kill("SIGKILL"), f.boots ? 1_500_000 : 90_000);
  const report = () => `--- ${f.tool}: stdout (last 2500) ---\n${out.text.slice(-2500)}\n--- stderr (last 2500) ---\n${err.text.slice(-2500)}`;
  const state: { exitCode: number | null } = { exitCode: null };
  const exited = p.exited.then((c) => (state.exitCode = c));
  try {
    if (argv.includes("--api-sock")) {
      for (let i = 0; i < 100 && !existsSync(vars.sock!); i++) await Bun.sleep(100);
      expect(existsSync(vars.sock!), `no API socket\n${report()}`).toBe(true);
    }
    for (const s0 of f.steps) {
      const s = fill(s0, vars);
      const label = `${f.tool}: ${s.method ?? s.wait ?? s.signal} ${s.path ?? s.pattern ?? ""} (${s.from ?? "wait"})`;
      if (s.method && s.path) {
        const waiting = AWAITING_OTHER_BRANCHES[`${f.tool} ${s.method} ${s0.path}`];
        let r = await call(vars.sock!, s.method, s.path, s.body);
        const until = Date.now() + (s.repeatUntilMatch ?? 0) * 1000;
        const matches = (json: unknown) => Object.entries(s.expectBody ?? {}).every(([k, v]) => (json as Record<string, unknown> | undefined)?.[k] === v);
        while (s.repeatUntilMatch && !matches(r.json) && Date.now() < until) {
          await Bun.sleep(10);
          r = await call(vars.sock!, s.method, s.path, s.body);
        }
        if (waiting) {
          expect(r.status, `${label}: refused until ${waiting.branch} lands; remove it from AWAITING_OTHER_BRANCHES once it is accepted\n${r.text}`).toBe(400);
          expect(r.text, label).toMatch(waiting.refusal);
          continue;
        }
        expect(r.status, `${label}\n${r.text}\n${report()}`).toBe(s.expect ?? 204);
        if (s.fault) expect(r.text, label).toContain(s.fault);
        if (s.expectBody) expect(r.json, label).toMatchObject(s.expectBody);
      } else if (s.signal) {
        p.kill(s.signal);
      } else if (s.wait === "console") {
        // Minutes where the host emulates guest kernel code, and many more when other work shares its cores
        // (on a loaded 2-core host the kernel reports RCU stalls on the way).
        expect(await out.until(new RegExp(s.pattern!), 1_200_000), `${label}: not on the console\n${report()}`).toBe(true);
      } else if (s.wait === "log") {
        const log = JSON.stringify(f.config?.logger ?? {}).match(/"log_path":"([^"]+)"/)?.[1];
        const path = log ? fill(log, vars) : undefined;
        const seen = async () => (path && existsSync(path) ? new RegExp(s.pattern!).test(readFileSync(path, "utf8")) : false) || new RegExp(s.pattern!).test(err.text);
        const end = Date.now() + 30_000;
        while (!(await seen()) && Date.now() < end && state.exitCode === null) await Bun.sleep(200);
        expect(await seen(), `${label}: not in the log\n${report()}`).toBe(true);
      } else if (s.wait === "balloon") {
        let stats: { actual_mib?: number } = {};
        const end = Date.now() + 120_000;
        while (Date.now() < end) {
          stats = (await call(vars.sock!, "GET", "/balloon/statistics")).json as { actual_mib?: number };
          if (stats.actual_mib === s.actual_mib) break;
          await Bun.sleep(500);
        }
        expect(stats.actual_mib, `${label}: the guest's balloon driver did not reach the target\n${report()}`).toBe(s.actual_mib);
      } else if (s.wait === "exit") {
        await Promise.race([exited, Bun.sleep(60_000)]);
        expect(state.exitCode, `${label}: kindling did not exit\n${report()}`).not.toBeNull();
        if (s.code !== undefined) expect(state.exitCode, `${label}\n${report()}`).toBe(s.code);
        if (s.console) expect(out.text, report()).toContain(s.console);
      }
    }
  } finally {
    clearTimeout(deadline);
    p.kill("SIGKILL");
    await exited;
    for (const r of readers) r.kill();
  }
}

describe("orchestrator replays", () => {
  test("each fixture names the repository, commit and source files it came from", () => {
    expect(fixtures.map((f) => f.tool)).toEqual(expect.arrayContaining(["firecracker-go-sdk", "firecracker-containerd", "kata-containers (Go runtime)", "kata-containers (runtime-rs)", "flintlock"]));
    for (const f of fixtures) {
      expect(f.source.repo).toMatch(/^[\w-]+\/[\w-]+$/);
      expect(f.source.commit).toMatch(/^[0-9a-f]{40}$/);
      expect(f.source.files.length).toBeGreaterThan(0);
    }
    expect(fixtures.filter((f) => f.boots).map((f) => f.tool)).toEqual(["firecracker-go-sdk"]);
    // Every entry of the waiting list names something a fixture really sends.
    const sent = new Set(fixtures.flatMap((f) => [...f.argv.map((a) => `${f.tool} ${a}`), ...Object.keys(f.config ?? {}).map((k) => `${f.tool} config ${k}`), ...f.steps.map((s) => `${f.tool} ${s.method} ${s.path}`)]));
    for (const key of Object.keys(AWAITING_OTHER_BRANCHES)) expect(sent.has(key), key).toBe(true);
  });

  for (const f of fixtures) {
    kvmTest(`${f.tool}: ${f.boots ? "boots the default guest, balloon, pause, resume, SendCtrlAltDel" : "every request accepted or refused by name, then stopped as the tool stops it"}`, () => replay(f), f.boots ? 1_560_000 : 120_000);
  }
});

