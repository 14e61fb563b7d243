// The API's HTTP side: a Unix socket served by Bun.serve, one JSON request at a time.
//
//   - The socket file is created with mode 0600 (only its owner may drive the VM) and removed on close.
//     A stale socket file (nobody accepts on it) is replaced; a live one is refused.
//   - Bodies over 51200 bytes are refused (Firecracker's HTTP_MAX_PAYLOAD_SIZE), as are bodies that are
//     not UTF-8 JSON. Every answer is JSON: 200 with a body, 204, or 4xx/5xx with {"fault_message"}.
//   - A connection idle for API_IDLE_TIMEOUT_S seconds (a client that opened it and sends nothing, or stops
//     halfway through its headers) is closed, and a body must arrive whole within API_BODY_TIMEOUT_S
//     seconds (else 408), so slow or stalled clients cannot hold connections open without end.
//   - A request that hits a bug gets 500 with a fixed fault_message; the details go to the log only.
//   - Requests are handled one after another, as Firecracker's API thread hands them to the VMM one by one,
//     so an InstanceStart in progress is never interleaved with a configuration change.

import { chmodSync, lstatSync, unlinkSync } from "node:fs";
import type { MicroVM } from "../microvm.ts";
import { fault, findRoute, INTERNAL_ERROR_MESSAGE, runRoute, type ApiResponse } from "./handlers.ts";

/** Firecracker's limit on a request body, in bytes. */
export const HTTP_MAX_PAYLOAD_SIZE = 51200;

/** Seconds a connection may stay idle (Bun.serve's idleTimeout) before it is closed. */
export const API_IDLE_TIMEOUT_S = 10;
/** Seconds a request's body may take to arrive in full. */
export const API_BODY_TIMEOUT_S = 10;

export interface ApiServerOptions {
  /** Where to create the socket. */
  socketPath: string;
  microvm: MicroVM;
  /** Default API_IDLE_TIMEOUT_S (tests use less). */
  idleTimeoutSeconds?: number;
  /** Default API_BODY_TIMEOUT_S. */
  bodyTimeoutSeconds?: number;
}

export interface ApiServer {
  readonly socketPath: string;
  /** Stop serving and remove the socket file. Safe to call twice. */
  close(): void;
}

/**
 * Firecracker's default is /run/firecracker.socket. kindling's is $XDG_RUNTIME_DIR/kindling.socket when
 * that is set (a per-user directory that only its user can enter), else /run/kindling.socket (root's).
 */
export function defaultApiSocket(env: Record<string, string | undefined> = process.env): string {
  return env.XDG_RUNTIME_DIR ? `${env.XDG_RUNTIME_DIR.replace(/\/$/, "")}/kindling.socket` : "/run/kindling.socket";
}

/** Whether something accepts connections on the Unix socket at `path`. */
async function socketIsLive(path: string): Promise<boolean> {
  try {
    const s = await Bun.connect({ unix: path, socket: { data() {} } });
    s.end();
    return true;
  } catch {
    return false;
  }
}

/** Make room for the socket: nothing there, or a stale socket (removed). Anything else is refused. */
async function claimSocketPath(path: string): Promise<void> {
  let st;
  try {
    st = lstatSync(path);
  } catch {
    return; // nothing there
  }
  if (!st.isSocket()) throw new Error(`--api-sock ${path}: the path exists and is not a socket; not replacing it`);
  if (await socketIsLive(path)) throw new Error(`--api-sock ${path}: another process is serving on this socket (another kindling?); choose another path`);
  unlinkSync(path);
}

type RawBody = Uint8Array | "too big" | "too slow" | undefined;

/**
 * The body, or undefined if there is none; "too big" past the limit (reading stops there); "too slow" if it
 * has not all arrived within `timeoutMs`.
 */
async function readBody(req: Request, timeoutMs: number): Promise<RawBody> {
  const declared = Number(req.headers.get("content-length") ?? 0);
  if (declared > HTTP_MAX_PAYLOAD_SIZE) return "too big";
  if (!req.body) return undefined;
  const chunks: Uint8Array[] = [];
  let total = 0;
  const reader = req.body.getReader();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<"late">((resolve) => (timer = setTimeout(() => resolve("late"), timeoutMs)));
  for (;;) {
    const next = await Promise.race([reader.read(), late]);
    if (next === "late") {
      await reader.cancel().catch(() => {});
      return "too slow";
    }
    const { done, value } = next;
    if (done) break;
    total += value.byteLength;
    if (total > HTTP_MAX_PAYLOAD_SIZE) {
      await reader.cancel().catch(() => {});
      return "too big";
    }
    chunks.push(value);
  }
  clearTimeout(timer);
  return total === 0 ? undefined : Buffer.concat(chunks);
}

/** The request body as JSON, or the 400 answer. Only PUT and PATCH read bodies. */
function parseBody(method: string, path: string, raw: Uint8Array | undefined): { body: unknown } | ApiResponse {
  if (method === "GET") return { body: undefined };
  if (raw === undefined) return fault(`${method} ${path}: the request needs a JSON body`);
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(raw);
  } catch {
    return fault(`${method} ${path}: the body is not valid UTF-8`);
  }
  try {
    return { body: JSON.parse(text) };
  } catch (e) {
    return fault(`${method} ${path}: the body is not valid JSON: ${(e as Error).message}`);
  }
}

function respond(r: ApiResponse): Response {
  return r.body === undefined ? new Response(null, { status: r.status }) : Response.json(r.body, { status: r.status });
}

async function handle(vm: MicroVM, req: Request, raw: RawBody): Promise<ApiResponse> {
  const url = new URL(req.url);
  let path: string;
  try {
    path = decodeURIComponent(url.pathname);
  } catch {
    return fault(`${req.method} ${url.pathname}: the path is not valid percent-encoding`);
  }
  const matched = findRoute(req.method, path);
  if (!("route" in matched)) return matched;
  const { route } = matched;
  let answer: ApiResponse;
  if (raw === "too big") {
    answer = fault(`${req.method} ${path}: the body is larger than the limit of ${HTTP_MAX_PAYLOAD_SIZE} bytes`);
  } else if (raw === "too slow") {
    answer = fault(`${req.method} ${path}: the body did not arrive in time`, 408);
  } else {
    const parsed = parseBody(req.method, path, raw);
    answer = "status" in parsed ? parsed : await runRoute(vm, matched, parsed.body);
  }
  vm.metrics.countRequest(route.method, route.metric, answer.status >= 400);
  return answer;
}

/** Serve the Firecracker API for `microvm` on a Unix socket. */
export async function serveApi(opts: ApiServerOptions): Promise<ApiServer> {
  const { socketPath, microvm: vm } = opts;
  const bodyTimeoutMs = 1000 * (opts.bodyTimeoutSeconds ?? API_BODY_TIMEOUT_S);
  await claimSocketPath(socketPath);
  let queue: Promise<unknown> = Promise.resolve();
  const log = vm.logger;
  // umask 0177 while the socket is bound: it is born 0600, with no moment of wider access.
  const umask = process.umask(0o177);
  let server: ReturnType<typeof Bun.serve>;
  try {
    server = Bun.serve({
      unix: socketPath,
      // bun-types leave idleTimeout out of the Unix-socket options; Bun honours it (test/api-fuzz.test.ts).
      ...({ idleTimeout: opts.idleTimeoutSeconds ?? API_IDLE_TIMEOUT_S } as object),
      async fetch(req) {
        const raw = await readBody(req, bodyTimeoutMs);
        const turn = queue.then(() => handle(vm, req, raw));
        queue = turn.catch(() => {});
        const answer = await turn;
        const line = `${req.method} ${new URL(req.url).pathname} -> ${answer.status}`;
        if (answer.status < 300 && req.method !== "GET") log.info(line, "api");
        else log.debug(answer.status >= 400 ? `${line}: ${(answer.body as { fault_message: string }).fault_message}` : line, "api");
        return respond(answer);
      },
      error(e) {
        log.error(`internal error in the API server: ${e.stack ?? e.message}`, "api");
        return respond(fault(INTERNAL_ERROR_MESSAGE, 500));
      },
    });
  } finally {
    process.umask(umask);
  }
  chmodSync(socketPath, 0o600);
  log.info(`API server listening on ${socketPath}`, "api");
  let closed = false;
  return {
    socketPath,
    close() {
      if (closed) return;
      closed = true;
      void server.stop(true);
      try {
        if (lstatSync(socketPath).isSocket()) unlinkSync(socketPath);
      } catch {
        // already gone
      }
    },
  };
}
