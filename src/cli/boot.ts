// `kindling boot`: boot a guest with the terminal attached to its serial console.
// Today the default guest is the `hello` probe; `--probe NAME` boots another probe guest.

import { defineCommand } from "citty";
import { consola } from "consola";
import { z } from "zod";
import { bootProbe } from "../boot/probe.ts";
import { PROBES } from "../../guest/probes/probes.ts";
import { CliError, EXIT } from "./main.ts";

const BootArgs = z.object({
  probe: z.enum(Object.keys(PROBES) as [string, ...string[]], {
    error: () => `--probe: must be one of ${Object.keys(PROBES).join(", ")}`,
  }),
});

export default defineCommand({
  meta: { name: "boot", description: "Boot a guest with this terminal on its serial console" },
  args: {
    probe: { type: "string", description: `Boot a probe guest (${Object.keys(PROBES).join(", ")})`, default: "hello", valueHint: "name" },
  },
  async run({ args }) {
    const parsed = BootArgs.safeParse(args);
    if (!parsed.success) throw new CliError(parsed.error.issues.map((i) => i.message).join("; "), EXIT.USAGE);
    const name = parsed.data.probe;
    consola.info(`booting the ${name} probe guest (${PROBES[name]!.about})`);
    const vm = await bootProbe(name, {
      consoleOutput: (bytes) => process.stdout.write(bytes),
      log: (line) => consola.debug(line),
    });
    const stop = () => void vm.stop("interrupted (SIGINT)");
    process.once("SIGINT", stop);
    const exit = await vm.exited;
    process.off("SIGINT", stop);
    const clean = exit.reason === "halt" || exit.reason === "reset" || exit.reason === "poweroff";
    if (!clean) {
      consola.error(`${exit.message}${exit.registers ? `\n${exit.registers}` : ""}`);
      throw new CliError(`the guest ended with ${exit.reason}`, EXIT.VM_ERROR);
    }
    consola.success(`guest ended: ${exit.message}`);
  },
});
