// `kindling trace view FILE`: a local web server for one exit trace. It reads and checks the trace once,
// then serves three things on 127.0.0.1 (never on other interfaces):
//   /            the page (viewer.html)
//   /viewer.js   its script
//   /trace.json  the trace: { name, header, records }
// The page draws everything itself (viewer.js); there is no framework and no build step.

import { basename } from "node:path";
import { readTrace } from "./format.ts";

export interface TraceServer {
  url: string;
  stop(): void;
}

const STATIC: Record<string, { file: string; type: string }> = {
  "/": { file: "viewer.html", type: "text/html; charset=utf-8" },
  "/viewer.js": { file: "viewer.js", type: "text/javascript; charset=utf-8" },
};

/** Serve the trace at `path`; port 0 lets the system choose one. Throws TraceFormatError for a bad trace. */
export function serveTrace(path: string, opts: { port?: number } = {}): TraceServer {
  const trace = readTrace(path);
  const json = JSON.stringify({ name: basename(path), header: trace.header, records: trace.records });
  let server: ReturnType<typeof Bun.serve>;
  try {
    server = Bun.serve({
      hostname: "127.0.0.1",
      port: opts.port ?? 0,
      fetch(req) {
        const { pathname } = new URL(req.url);
        const headers = { "cache-control": "no-store" };
        if (pathname === "/trace.json") return new Response(json, { headers: { ...headers, "content-type": "application/json" } });
        const s = STATIC[pathname];
        if (!s) return new Response("not found", { status: 404 });
        return new Response(Bun.file(new URL(`./${s.file}`, import.meta.url)), { headers: { ...headers, "content-type": s.type } });
      },
    });
  } catch (e) {
    throw new Error(`cannot serve on 127.0.0.1:${opts.port ?? 0}: ${(e as Error).message}`);
  }
  return { url: `http://127.0.0.1:${server.port}/`, stop: () => void server.stop(true) };
}
