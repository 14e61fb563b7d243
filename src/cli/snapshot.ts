// `kindling snapshot create|load|merge`: snapshots from scripts.
//
//   kindling snapshot create --api-sock S --snapshot FILE --mem FILE [--type Full|Diff] [--pause] [--resume]
//       asks a running `kindling api` (or `run --api-sock`) for PUT /snapshot/create; --pause pauses it first
//       (PATCH /vm), --resume lets it run again afterwards.
//   kindling snapshot load --snapshot FILE --mem FILE [--resume] [--api-sock S] [--track-dirty-pages]
//       a new VMM process that loads the snapshot at once (as `kindling api` would on PUT /snapshot/load),
//       with the guest's console on this terminal; --api-sock also serves the API.
//   kindling snapshot merge --base-mem FILE --diff-mem FILE --diff-snapshot FILE
//       copies a Diff snapshot's pages onto its base's memory file, which then restores with the diff's
//       state file (Firecracker's rebase-snap).

import { defineCommand } from "citty";
import { consola } from "consola";
import { z } from "../zod.ts";
import { readSnapshotFile } from "../snapshot/format.ts";
import { mergeDiff } from "../snapshot/memory-file.ts";
import { SnapshotError } from "../snapshot/errors.ts";
import { CliError, EXIT } from "./main.ts";
import { runVmm, VMM_ARGS } from "./run.ts";

const Args = z.object({
  action: z.enum(["create", "load", "merge"], { error: () => "the first argument must be create, load or merge" }),
});

/** One request to the API socket; a non-2xx answer becomes a CliError with the fault_message. */
async function call(sock: string, method: string, path: string, body: unknown): Promise<void> {
  let res: Response;
  try {
    res = await fetch(`http://localhost${path}`, { method, unix: sock, body: JSON.stringify(body) } as RequestInit);
  } catch (e) {
    throw new CliError(`--api-sock ${sock}: ${(e as Error).message}`, EXIT.USAGE);
  }
  if (res.status >= 300) {
    const text = await res.text();
    let message = text;
    try {
      message = (JSON.parse(text) as { fault_message?: string }).fault_message ?? text;
    } catch {
      // not JSON: show it as it is
    }
    throw new CliError(`${method} ${path}: ${message}`, EXIT.VM_ERROR);
  }
}

function need(args: Record<string, unknown>, ...names: string[]): string[] {
  return names.map((n) => {
    const v = args[n];
    if (typeof v !== "string" || v === "") throw new CliError(`--${n} is required`, EXIT.USAGE);
    return v;
  });
}

export default defineCommand({
  meta: { name: "snapshot", description: "create (through a running VMM's API), load (in a new VMM process) or merge (a Diff onto its base) snapshots" },
  args: {
    action: { type: "positional", description: "create, load or merge", required: false },
    snapshot: { type: "string", description: "The snapshot (state) file", valueHint: "file" },
    mem: { type: "string", description: "The guest memory file", valueHint: "file" },
    "api-sock": { type: "string", description: "create: the running VMM's API socket; load: serve the API here too", valueHint: "path" },
    type: { type: "string", description: "create: Full (default) or Diff", valueHint: "Full|Diff" },
    pause: { type: "boolean", description: "create: pause the VM first", default: false },
    resume: { type: "boolean", description: "create: resume the VM afterwards; load: run it at once (else it comes up Paused)", default: false },
    "track-dirty-pages": { type: "boolean", description: "load: track dirty pages, for Diff snapshots of the restored VM", default: false },
    "base-mem": { type: "string", description: "merge: the base snapshot's memory file (changed in place)", valueHint: "file" },
    "diff-mem": { type: "string", description: "merge: the Diff snapshot's memory file", valueHint: "file" },
    "diff-snapshot": { type: "string", description: "merge: the Diff snapshot's state file (it lists the pages)", valueHint: "file" },
    id: VMM_ARGS.id,
    "log-path": VMM_ARGS["log-path"],
    "metrics-path": VMM_ARGS["metrics-path"],
  },
  async run({ args }) {
    const parsed = Args.safeParse(args);
    if (!parsed.success) throw new CliError(parsed.error.issues.map((i) => i.message).join("; "), EXIT.USAGE);
    const a = args as Record<string, unknown>;
    if (parsed.data.action === "create") {
      const [sock, snapshot, mem] = need(a, "api-sock", "snapshot", "mem");
      const type = args.type ?? "Full";
      if (type !== "Full" && type !== "Diff") throw new CliError("--type must be Full or Diff", EXIT.USAGE);
      if (args.pause) await call(sock!, "PATCH", "/vm", { state: "Paused" });
      await call(sock!, "PUT", "/snapshot/create", { snapshot_path: snapshot, mem_file_path: mem, snapshot_type: type });
      if (args.resume) await call(sock!, "PATCH", "/vm", { state: "Resumed" });
      consola.success(`snapshot written: ${snapshot} (state), ${mem} (memory)`);
    } else if (parsed.data.action === "load") {
      const [snapshot, mem] = need(a, "snapshot", "mem");
      await runVmm({
        config: {},
        source: "snapshot load",
        id: args.id,
        apiSock: args["api-sock"],
        bootNow: false,
        bootTimer: false,
        logPath: args["log-path"],
        metricsPath: args["metrics-path"],
        loadSnapshot: { snapshot_path: snapshot, mem_backend: { backend_type: "File", backend_path: mem }, resume_vm: args.resume, track_dirty_pages: args["track-dirty-pages"] },
      });
    } else {
      const [base, diffMem, diffState] = need(a, "base-mem", "diff-mem", "diff-snapshot");
      try {
        const state = readSnapshotFile(diffState!);
        if (state.memory.snapshot_type !== "Diff" || !state.memory.pages) throw new CliError(`${diffState} is a ${state.memory.snapshot_type} snapshot, not a Diff`, EXIT.USAGE);
        const bytes = mergeDiff(base!, diffMem!, state.memory.pages);
        consola.success(`merged ${bytes} bytes of ${diffMem} onto ${base}; restore it with ${diffState}`);
      } catch (e) {
        if (e instanceof SnapshotError) throw new CliError(`${e.code}: ${e.message}`, EXIT.USAGE);
        throw e;
      }
    }
  },
});
