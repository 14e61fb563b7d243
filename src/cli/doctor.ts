// `kindling doctor`: the first thing to run on a new machine. It reports whether /dev/kvm can be used, the
// capabilities kindling needs, whether this host runs guest kernel code natively or emulates it, and whether
// the tools that assemble the probe guests are installed; then a one-line verdict. Exit status 3 (EXIT.NO_KVM)
// when KVM is unusable. `--json` prints the same facts for tools.

import { defineCommand } from "citty";
import { detectHost, emulatingHostWarning, type HostFacts } from "../host.ts";
import { KVM_API_VERSION } from "../kvm/uapi.ts";
import { EXIT } from "./main.ts";

export interface DoctorReport {
  host: HostFacts;
  /** emulatingHostWarning() when the host emulates guest kernel code, else null. */
  emulationWarning: string | null;
  /** The assembler and linker that build probe guests (Debian package binutils): their paths, or null. */
  tools: { as: string | null; ld: string | null };
  kvmUsable: boolean;
  probeToolsPresent: boolean;
  verdict: string;
}

export function doctorReport(host: HostFacts = detectHost()): DoctorReport {
  const tools = { as: Bun.which("as"), ld: Bun.which("ld") };
  const kvmUsable = host.kvm.error === null;
  const probeToolsPresent = tools.as !== null && tools.ld !== null;
  let verdict: string;
  if (!kvmUsable) verdict = `not ready: ${host.kvm.error}`;
  else if (host.emulatesGuestKernel)
    verdict = "ready, with guest kernel code emulated: probe guests run; Linux boots slowly (about 1.5 minutes to a shell) and guest system calls go through the syscall assist";
  else verdict = "ready: guests run on hardware virtualization";
  if (kvmUsable && !probeToolsPresent) verdict += "; install binutils (as, ld) for the probe guests (`bun run test` does)";
  return {
    host,
    emulationWarning: host.emulatesGuestKernel ? emulatingHostWarning(host) : null,
    tools,
    kvmUsable,
    probeToolsPresent,
    verdict,
  };
}

function row(label: string, value: string): string {
  return `  ${label.padEnd(26)}${value}`;
}

export function formatReport(r: DoctorReport): string {
  const { kvm } = r.host;
  const lines = ["KVM"];
  lines.push(row(kvm.device, !kvm.present ? "missing" : kvm.openable ? "ok: opened read-write" : "present but not usable"));
  if (kvm.apiVersion !== null) lines.push(row("API version", `${kvm.apiVersion} (kindling needs ${KVM_API_VERSION})`));
  for (const c of kvm.capabilities) lines.push(row(c.name, c.present ? "present" : "MISSING"));
  if (kvm.error !== null) lines.push(`  problem: ${kvm.error}`);

  lines.push("", "Host");
  const flag = r.host.virtualizationFlag === null ? "no vmx/svm flag" : `${r.host.virtualizationFlag} flag`;
  lines.push(row("CPU", `${r.host.cpuModel ?? "unknown (no model name in /proc/cpuinfo)"} (${flag})`));
  lines.push(row("kernel", r.host.kernelRelease));
  const cause = r.host.emulationCause === "pvm" ? "PVM" : "no hardware virtualization";
  lines.push(row("guest kernel code", r.host.emulatesGuestKernel ? `emulated (${cause})` : "runs natively (hardware KVM)"));
  if (r.emulationWarning !== null) lines.push(...r.emulationWarning.split("\n").map((l) => `    ${l}`));

  lines.push("", "Probe guest tools (Debian package binutils)");
  lines.push(row("as", r.tools.as ?? "MISSING"));
  lines.push(row("ld", r.tools.ld ?? "MISSING"));

  lines.push("", `verdict: ${r.verdict}`);
  return lines.join("\n");
}

// Name and description are in main.ts's table of subcommands.
export default defineCommand({
  args: {
    json: { type: "boolean", description: "Print the report as JSON", default: false },
  },
  run({ args }) {
    const report = doctorReport();
    console.log(args.json ? JSON.stringify(report, null, 2) : formatReport(report));
    if (!report.kvmUsable) process.exitCode = EXIT.NO_KVM;
  },
});
