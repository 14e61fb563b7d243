// `kindling api`: Firecracker's default mode. Serve the REST API on a Unix socket and wait for a client to
// configure and start the microVM (PUT /boot-source, PUT /drives/..., PUT /actions InstanceStart).
// The flags are Firecracker's: with --config-file the VM boots at once and the API stays up for runtime
// calls (PATCH /vm); with --no-api (which needs --config-file) there is no socket at all.
//
// The VM's serial console is this terminal (or PUT /serial's serial_out_path); kindling exits when the VM ends.

import { defineCommand } from "citty";
import { defaultApiSocket } from "../api/server.ts";
import { loadConfigFile } from "../config/file.ts";
import type { MicroVMConfig } from "../config/schemas.ts";
import { ESCAPE_HELP } from "../console.ts";
import { CliError, EXIT } from "./main.ts";
import { runVmm, seccompChoice, usageErrors, VMM_ARGS } from "./run.ts";

export default defineCommand({
  meta: { name: "api", description: `Serve Firecracker's REST API on a Unix socket and run the microVM it configures. ${ESCAPE_HELP}.` },
  args: {
    "api-sock": { type: "string", description: `The API's Unix socket (default ${defaultApiSocket()})`, valueHint: "path" },
    ...VMM_ARGS,
    api: { type: "boolean", description: "Serve the API", default: true, negativeDescription: "No API socket: boot --config-file at once" },
  },
  async run({ args }) {
    const file = args["config-file"];
    if (!args.api && !file) throw new CliError("--no-api needs --config-file (with no API, the config file is the only way to describe the VM)", EXIT.USAGE);
    if (!args.api && args["api-sock"]) throw new CliError("--api-sock and --no-api contradict each other", EXIT.USAGE);
    const config: MicroVMConfig = file ? usageErrors(() => loadConfigFile(file)) : {};
    await runVmm({
      config,
      source: file ?? "api",
      id: args.id,
      apiSock: args.api ? (args["api-sock"] ?? defaultApiSocket()) : undefined,
      bootNow: file !== undefined,
      bootTimer: args["boot-timer"],
      enablePci: args["enable-pci"],
      logPath: args["log-path"],
      metricsPath: args["metrics-path"],
      metadata: args.metadata,
      seccomp: seccompChoice(args),
    });
  },
});
