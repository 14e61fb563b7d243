// The API under random input: thousands of requests with random methods, paths and bodies (valid bodies,
// mutated ones, malformed JSON, huge numbers, wrong types, invalid UTF-8, oversize), then raw bytes that
// are not HTTP at all. Every answer must be a success or a 4xx with a JSON fault_message, the server must
// keep answering, and the whole run must stay under 20 s. The VM boots with a stand-in (no KVM needed).
//
// The seed is printed; KINDLING_FUZZ_SEED=<n> replays a run.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { consola } from "consola";
import { INTERNAL_ERROR_MESSAGE } from "../src/api/handlers.ts";
import { serveApi } from "../src/api/server.ts";
import { fakeMicroVM, fixtureFiles, serveFake } from "./support/api.ts";
import { waitFor } from "./support/virtio-driver.ts";

consola.level = -1;
const files = fixtureFiles();
const cwd = process.cwd();
// Random bodies may name relative paths (log_path, serial_out_path ...): let them land in the temporary directory.
beforeAll(() => process.chdir(files.dir));
afterAll(() => {
  process.chdir(cwd);
  rmSync(files.dir, { recursive: true, force: true });
});

const SEED = Number(process.env.KINDLING_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 32));
const REQUESTS = 3000;
const TIME_LIMIT_MS = 20_000;

/** mulberry32: a small seeded PRNG, so a failing run can be replayed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rand = prng(SEED);
const int = (n: number) => Math.floor(rand() * n);
const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;

// No "/" in random strings: a path they name stays inside the temporary directory.
const CHARS = "abcXYZ019_-. :\"'\\{}[],\u00e9\u4e2d\u{1f600}\u0000\n%";
const randomString = (max: number) => Array.from({ length: int(max) }, () => pick([...CHARS])).join("");

const NUMBERS = [0, -0, 1, -1, 2, 31, 32, 33, 128, 65536, 65537, 2 ** 31, 2 ** 32, 2 ** 53, 2 ** 53 + 2, 1e308, -1e308, 0.5, -7.25, Number.MAX_SAFE_INTEGER];
const FIELDS = [
  "vcpu_count", "mem_size_mib", "smt", "cpu_template", "huge_pages", "track_dirty_pages", "kernel_image_path", "initrd_path", "boot_args",
  "drive_id", "is_root_device", "is_read_only", "path_on_host", "partuuid", "cache_type", "io_engine", "rate_limiter", "iface_id", "host_dev_name",
  "guest_mac", "mtu", "guest_cid", "uds_path", "action_type", "state", "log_path", "level", "metrics_path", "serial_out_path", "__proto__", "constructor",
];

function randomJson(depth = 0): unknown {
  switch (int(depth > 3 ? 4 : 6)) {
    case 0: return pick(NUMBERS);
    case 1: return randomString(40);
    case 2: return pick([true, false, null]);
    case 3: return pick(["Paused", "Resumed", "InstanceStart", "FlushMetrics", "None", "Info", "Sync", "x1"]);
    case 4: return Array.from({ length: int(4) }, () => randomJson(depth + 1));
    default: return Object.fromEntries(Array.from({ length: int(5) }, () => [rand() < 0.7 ? pick(FIELDS) : randomString(10), randomJson(depth + 1)]));
  }
}

const VALID: [string, string, Record<string, unknown>][] = [
  ["PUT", "/boot-source", { kernel_image_path: files.kernel, boot_args: "console=ttyS0" }],
  ["PUT", "/machine-config", { vcpu_count: 2, mem_size_mib: 256 }],
  ["PATCH", "/machine-config", { mem_size_mib: 512 }],
  ["PUT", "/drives/x1", { drive_id: "x1", path_on_host: files.disk, is_root_device: false }],
  ["PATCH", "/drives/x1", { drive_id: "x1" }],
  ["PUT", "/network-interfaces/x1", { iface_id: "x1", host_dev_name: "tap0" }],
  ["PUT", "/vsock", { guest_cid: 3, uds_path: "v.sock" }],
  ["PUT", "/entropy", {}],
  ["PUT", "/actions", { action_type: "InstanceStart" }],
  ["PUT", "/actions", { action_type: "FlushMetrics" }],
  ["PATCH", "/vm", { state: "Paused" }],
  ["PATCH", "/vm", { state: "Resumed" }],
  ["PUT", "/logger", { level: "Debug" }],
  ["PUT", "/metrics", { metrics_path: "metrics.json" }],
  ["PUT", "/serial", { serial_out_path: "serial.out" }],
];
const PATHS = ["/", "/version", "/machine-config", "/boot-source", "/drives/x1", "/network-interfaces/x1", "/vsock", "/entropy", "/actions", "/vm", "/vm/config",
  "/logger", "/metrics", "/serial", "/balloon", "/balloon/statistics", "/snapshot/create", "/mmds", "/cpu-config", "/pmem/p1", "/hotplug/memory"];

function randomPath(): string {
  switch (int(6)) {
    case 0: return pick(PATHS);
    case 1: return pick(PATHS) + pick(["/", "/x", "//", "/..", "?a=1", "#f", "%", "%zz", "%2F", "/%00", "/\u00e9"]);
    case 2: return pick(["/drives/", "/network-interfaces/"]) + encodeURIComponent(randomString(70));
    case 3: return "/" + Array.from({ length: 1 + int(4) }, () => encodeURIComponent(randomString(12))).join("/");
    case 4: return "/" + "a".repeat(1000 + int(6000));
    default: return pick(VALID)[1];
  }
}

function mutate(body: Record<string, unknown>): Record<string, unknown> {
  const b = { ...body };
  const keys = Object.keys(b);
  switch (int(3)) {
    case 0: if (keys.length) delete b[pick(keys)]; break;
    case 1: b[keys.length && rand() < 0.8 ? pick(keys) : pick(FIELDS)] = randomJson(1); break;
    default: b[randomString(8)] = randomJson(2);
  }
  return b;
}

function randomBody(method: string, path: string): string | Uint8Array | undefined {
  const valid = VALID.find(([m, p]) => m === method && p === path)?.[2] ?? pick(VALID)[2];
  const text = JSON.stringify(valid);
  switch (int(9)) {
    case 0: return undefined;
    case 1: return text;
    case 2: case 3: return JSON.stringify(mutate(valid));
    case 4: return JSON.stringify(randomJson());
    case 5: return text.slice(0, int(text.length)) + pick(["", "}", ",", "\u0000", "1e400", "]"]);
    case 6: return pick(["[".repeat(5000) + "]".repeat(5000), `{"vcpu_count": 1e400, "mem_size_mib": -1e400}`, `{"a": 1, "a": 2}`, "", " ", "null", "\"\\ud800\""]);
    case 7: return new Uint8Array(Array.from({ length: int(200) }, () => int(256)));
    default: return JSON.stringify({ ...valid, boot_args: "x".repeat(40_000 + int(30_000)) });
  }
}

describe(`API fuzz (seed ${SEED}; replay with KINDLING_FUZZ_SEED=${SEED})`, () => {
  test(`${REQUESTS} random requests: every answer is a success or a 4xx JSON fault, in under ${TIME_LIMIT_MS / 1000} s`, async () => {
    const started = performance.now();
    const vm = fakeMicroVM();
    const { server, call } = await serveFake(vm, files.dir);
    const statuses = new Map<number, number>();
    const bad: string[] = [];
    let next = 0;
    async function worker(): Promise<void> {
      while (next < REQUESTS && bad.length < 5) {
        next++;
        // One request in six is a valid one as it is, so the VM also changes state (starts, pauses ...) on the way.
        const valid = rand() < 1 / 6 ? pick(VALID) : undefined;
        const method = valid?.[0] ?? pick(["GET", "PUT", "PATCH", "PUT", "PATCH", "DELETE", "POST", "OPTIONS", "HEAD"]);
        const path = valid?.[1] ?? randomPath();
        const body = valid ? JSON.stringify(valid[2]) : method === "GET" || method === "HEAD" ? undefined : randomBody(method, path);
        const res = await fetch(`http://localhost${path}`, { method, body, unix: server.socketPath } as RequestInit);
        const text = await res.text();
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
        const what = `${method} ${path.slice(0, 80)} ${typeof body === "string" ? body.slice(0, 120) : body ? `<${body.byteLength} bytes>` : ""} -> ${res.status} ${text.slice(0, 200)}`;
        const success = res.status === 200 || res.status === 204;
        if (!success && (res.status < 400 || res.status > 499)) bad.push(`status: ${what}`);
        else if (method !== "HEAD" && res.status !== 204) {
          let json: unknown;
          try {
            json = JSON.parse(text);
          } catch {
            bad.push(`not JSON: ${what}`);
            continue;
          }
          if (res.status >= 400 && typeof (json as { fault_message?: unknown }).fault_message !== "string") bad.push(`no fault_message: ${what}`);
        }
      }
    }
    await Promise.all(Array.from({ length: 8 }, worker));
    expect(bad, `seed ${SEED}`).toEqual([]);
    // The run exercised both sides: successes and refusals.
    expect((statuses.get(204) ?? 0) + (statuses.get(200) ?? 0)).toBeGreaterThan(REQUESTS / 50);
    expect(statuses.get(400) ?? 0).toBeGreaterThan(REQUESTS / 2);
    // Still serving, still sane.
    const root = await call("GET", "/");
    expect(root.status === 200 || (root.json as { fault_message?: string }).fault_message === "the microVM has stopped").toBe(true);
    server.close();
    await vm.stop();
    expect(performance.now() - started).toBeLessThan(TIME_LIMIT_MS);
  }, TIME_LIMIT_MS + 10_000);

  test("bytes that are not HTTP do not stop the server", async () => {
    const { server, call } = await serveFake(fakeMicroVM(), files.dir);
    const garbage = [
      "GARBAGE\r\n\r\n",
      "PUT /vm HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n{",
      "PATCH /vm HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
      `GET /${"a".repeat(100_000)} HTTP/1.1\r\nHost: x\r\n\r\n`,
      `GET / HTTP/1.1\r\n${"X-H: v\r\n".repeat(5000)}\r\n`,
      "\u0000\u0001\u0002\u00ff".repeat(1000),
      "PUT /actions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n{", // then hang up mid-body
    ];
    for (const g of garbage) {
      const socket = await Bun.connect({ unix: server.socketPath, socket: { data() {} } });
      socket.write(g);
      await Bun.sleep(20);
      socket.end();
    }
    for (let i = 0; i < 20; i++) expect((await call("GET", "/version")).status).toBe(200);
    server.close();
  });

  test("deep JSON, in objects and arrays, is a 400 with a fault_message", async () => {
    const { server, call } = await serveFake(fakeMicroVM(), files.dir);
    for (const body of ['{"a":'.repeat(12_000) + "1" + "}".repeat(12_000), "[".repeat(25_000) + "]".repeat(25_000), '{"a":['.repeat(6000)]) {
      const r = await call("PUT", "/machine-config", body);
      expect(r.status).toBe(400);
      expect((r.json as { fault_message: string }).fault_message).toBeString();
    }
    server.close();
  });

  test("a bug answers 500 with a fixed fault_message; the details go to the log only", async () => {
    const vm = fakeMicroVM();
    const log = join(files.dir, "internal.log");
    vm.setLogger({ log_path: log, level: "Error" });
    vm.setBootSource = () => {
      throw new TypeError("secret detail at /very/private/path");
    };
    const { server, call } = await serveFake(vm, files.dir);
    const r = await call("PUT", "/boot-source", { kernel_image_path: "k" });
    expect(r.status).toBe(500);
    expect(r.json).toEqual({ fault_message: INTERNAL_ERROR_MESSAGE });
    expect(r.text).not.toContain("secret");
    expect(readFileSync(log, "utf8")).toContain("secret detail at /very/private/path");
    server.close();
  });

  test("many concurrent connections are all answered", async () => {
    const { server } = await serveFake(fakeMicroVM(), files.dir);
    const statuses = await Promise.all(Array.from({ length: 400 }, (_, i) =>
      fetch(`http://localhost${i % 2 ? "/version" : "/machine-config"}`, { method: i % 3 ? "GET" : "PUT", body: i % 3 ? undefined : "{", unix: server.socketPath } as RequestInit)
        .then(async (res) => {
          const j = (await res.json()) as { fault_message?: string };
          return res.status === 200 || (res.status === 400 && typeof j.fault_message === "string") ? "ok" : `${res.status}`;
        })));
    expect(statuses.filter((x) => x !== "ok")).toEqual([]);
    server.close();
  });

  test("slow and stalled connections are closed (idle timeouts) or answered 408 (body timeout)", async () => {
    const vm = fakeMicroVM();
    const server = await serveApi({ socketPath: join(files.dir, "slow.sock"), microvm: vm, idleTimeoutSeconds: 1, bodyTimeoutSeconds: 1 });
    const started = performance.now();
    const open = async (first: string) => {
      let closedAt: number | undefined;
      let got = "";
      const socket = await Bun.connect({
        unix: server.socketPath,
        socket: { data: (_s, d) => void (got += new TextDecoder().decode(d)), close: () => void (closedAt ??= performance.now() - started) },
      });
      socket.write(first);
      return { socket, closedAt: () => closedAt, got: () => got };
    };
    // A keep-alive connection that goes quiet after one request: closed after idleTimeoutSeconds (Bun's
    // timers tick every 4 s, so within 1 + 4 s). A body that trickles in: 408 after bodyTimeoutSeconds.
    // One that sends nothing, and one that stops halfway through its headers: Bun closes those itself
    // after its fixed 10 s request timeout (+ a tick), whatever idleTimeout says.
    const keepAlive = await open("GET /version HTTP/1.1\r\nHost: x\r\n\r\n");
    const trickle = await open("PUT /machine-config HTTP/1.1\r\nHost: x\r\nContent-Length: 200\r\n\r\n{");
    const silent = await open("");
    const halfHeaders = await open("GET / HTTP/1.1\r\nHost: x\r\nX-Slow:");
    const dripper = setInterval(() => trickle.socket.write(" "), 200);
    try {
      await waitFor(() => trickle.got().includes("\r\n\r\n{"), "the trickling body to be refused", 4000);
      expect(trickle.got()).toStartWith("HTTP/1.1 408");
      expect(trickle.got()).toContain('"fault_message":"PUT /machine-config: the body did not arrive in time"');
      await waitFor(() => keepAlive.closedAt() !== undefined, "the idle keep-alive connection to be closed", 7000);
      expect(keepAlive.got()).toStartWith("HTTP/1.1 200");
      await waitFor(() => silent.closedAt() !== undefined && halfHeaders.closedAt() !== undefined, "the stalled connections to be closed", 16_000);
    } finally {
      clearInterval(dripper);
    }
    expect(keepAlive.closedAt()!).toBeLessThan(6000);
    for (const c of [keepAlive, trickle, silent, halfHeaders]) c.socket.end();
    // The server still answers.
    const res = await fetch("http://localhost/version", { unix: server.socketPath } as RequestInit);
    expect(res.status).toBe(200);
    server.close();
  }, 25_000);
});
