// `kindling trace view FILE [--port N]` and `kindling trace replay FILE`: look at an exit trace recorded
// with `kindling boot --trace FILE` (src/trace/).

import { defineCommand } from "citty";
import { consola } from "consola";
import { z } from "../zod.ts";
import { readTrace, TraceFormatError } from "../trace/format.ts";
import { replayTrace } from "../trace/replay.ts";
import { serveTrace } from "../trace/server.ts";
import { CliError, EXIT } from "./main.ts";

const TraceArgs = z.object({
  action: z.enum(["view", "replay"], { error: () => "the first argument must be view or replay" }),
  file: z.string({ error: () => "give the trace file: kindling trace view|replay FILE" }).min(1, "give the trace file"),
  port: z.coerce.number({ error: () => "--port: must be a number" }).int("--port: must be a whole number").min(0, "--port: 0..65535").max(65535, "--port: 0..65535"),
});

export default defineCommand({
  meta: {
    name: "trace",
    description: "view FILE: a timeline of the exits in a browser; replay FILE: re-run its device accesses against fresh device models and compare every read",
  },
  args: {
    action: { type: "positional", description: "view or replay", required: false },
    file: { type: "positional", description: "A trace written by `kindling boot --trace FILE`", required: false },
    port: { type: "string", description: "view: the port to listen on, on 127.0.0.1 (0: any free port)", default: "0", valueHint: "n" },
  },
  async run({ args }) {
    const parsed = TraceArgs.safeParse(args);
    if (!parsed.success) throw new CliError(parsed.error.issues.map((i) => i.message).join("; "), EXIT.USAGE);
    const { action, file, port } = parsed.data;
    try {
      if (action === "view") await view(file, port);
      else replay(file);
    } catch (e) {
      if (e instanceof TraceFormatError) throw new CliError(e.message, EXIT.USAGE);
      throw e;
    }
  },
});

async function view(file: string, port: number): Promise<void> {
  const server = serveTrace(file, { port });
  consola.info(`serving ${file} at ${server.url} (Ctrl-C to stop)`);
  await new Promise<void>((resolve) => {
    process.once("SIGINT", resolve);
    process.once("SIGTERM", resolve);
  });
  server.stop();
}

function replay(file: string): void {
  const report = replayTrace(readTrace(file));
  const skipped = Object.entries(report.skipped).map(([why, n]) => `${n} ${why}`);
  consola.info(`replayed ${report.accesses} device accesses, compared ${report.compared} reads${skipped.length ? `; skipped: ${skipped.join(", ")}` : ""}`);
  if (report.mismatch) {
    throw new CliError(`${file}:${report.mismatch.line}: ${report.mismatch.message}`, EXIT.VM_ERROR);
  }
  consola.success("every read answered what it answered when the trace was recorded");
}
