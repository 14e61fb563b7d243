// The request bodies of Firecracker's API, as zod schemas written by hand from the "definitions" section
// of firecracker-api.yaml (Firecracker's OpenAPI 2.0 spec). Field names are the spec's, verbatim.
//
// The same schemas type the TypeScript library's configuration (src/microvm.ts) and the --config-file
// JSON (src/config.ts), so a body, a config file and a library call are checked by the same rules.
// Every object is strict: an unknown field is refused, as Firecracker's serde(deny_unknown_fields) does.
// Rules the spec states (vcpu_count 1..32, mtu 68..65535, guest_cid >= 3) are here; rules of kindling's
// own (the memory range, id characters) say so in a comment. What kindling does not implement of a valid
// body (rate limiters, SMT, ...) is refused later, by src/config/resources.ts, with a message naming it.

import { z } from "../zod.ts";
import { ValidationError } from "./errors.ts";
import { CpuConfigSchema } from "../arch/x86_64/cpu-templates.ts";

/** An integer in [min, max]; the error names the range. JSON has no integer type, so 1.5 is refused here. */
export function int(min: number, max: number) {
  const range = `must be ${min}..${max}`;
  return z.int().min(min, { error: range }).max(max, { error: range });
}

const U64 = int(0, Number.MAX_SAFE_INTEGER);
const nonEmpty = z.string().min(1, { error: "must not be empty" });
/** A host path: PATH_MAX is 4096 bytes with the terminating NUL (linux/limits.h). */
const hostPath = nonEmpty.refine((p) => Buffer.byteLength(p) < 4096 && !p.includes("\0"), { error: "must be a path of at most 4095 bytes" });

/**
 * kindling's rule for resource ids (drive_id, iface_id): 1 to 64 letters, digits or underscores, the
 * characters Firecracker allows in ids. They become metric names (block_<id>) and the drive's serial.
 */
export const ResourceId = z.string().regex(/^[A-Za-z0-9_]{1,64}$/, { error: "must be 1 to 64 letters, digits or _" });

// ---- RateLimiter, TokenBucket ----

/** Firecracker's Option<...> fields: absent or null both mean "none" (serde), as Kata's runtime-rs sends them. */
const orNull = <T extends z.ZodType>(t: T) => t.nullish().transform((v) => v ?? undefined);

export const TokenBucket = z.strictObject({
  size: U64,
  one_time_burst: orNull(U64),
  refill_time: U64,
});

export const RateLimiter = z.strictObject({
  bandwidth: orNull(TokenBucket),
  ops: orNull(TokenBucket),
});

// ---- BootSource ----

export const BootSource = z.strictObject({
  kernel_image_path: hostPath,
  initrd_path: hostPath.optional(),
  // The kernel reads its command line up to the first NUL: one inside would silently cut it short.
  boot_args: z.string().refine((s) => !s.includes("\0"), { error: "must not contain a NUL character" }).optional(),
});

// ---- MachineConfiguration ----

export const CPU_TEMPLATE_NAMES = ["C3", "T2", "T2S", "T2CL", "T2A", "V1N1", "None"] as const;
export const HUGE_PAGES = ["None", "Transparent", "2M"] as const;
/** kindling's memory range in MiB, the one `kindling boot --memory` accepts (the spec sets no bounds). */
export const MEM_SIZE_MIB = { min: 32, max: 65536 } as const;

const machineFields = {
  vcpu_count: int(1, 32),
  mem_size_mib: int(MEM_SIZE_MIB.min, MEM_SIZE_MIB.max),
  smt: z.boolean().optional(),
  track_dirty_pages: z.boolean().optional(),
  cpu_template: z.enum(CPU_TEMPLATE_NAMES).optional(),
  huge_pages: z.enum(HUGE_PAGES).optional(),
};

/** "With SMT enabled, the vCPU count is required to be either 1 or an even number in the range." */
function smtVcpus(m: { smt?: boolean; vcpu_count?: number }, ctx: z.RefinementCtx): void {
  if (m.smt && m.vcpu_count !== undefined && m.vcpu_count > 1 && m.vcpu_count % 2 !== 0) {
    ctx.addIssue({ code: "custom", path: ["vcpu_count"], message: "must be 1 or even when smt is true" });
  }
}

export const MachineConfiguration = z.strictObject(machineFields).superRefine(smtVcpus);
/** PATCH /machine-config: any subset of the fields ("Partially updates the Machine Configuration"). */
export const MachineConfigurationUpdate = z.strictObject(machineFields).partial().superRefine(smtVcpus);

// ---- Drive, PartialDrive ----

export const Drive = z.strictObject({
  drive_id: ResourceId,
  is_root_device: z.boolean(),
  partuuid: z.string().regex(/^[A-Za-z0-9-]{1,64}$/, { error: "must be 1 to 64 letters, digits or -" }).optional(),
  cache_type: z.enum(["Unsafe", "Writeback"]).optional(),
  is_read_only: z.boolean().optional(),
  path_on_host: hostPath.optional(),
  rate_limiter: RateLimiter.optional(),
  io_engine: z.enum(["Sync", "Async"]).optional(),
  socket: hostPath.optional(),
});

export const PartialDrive = z.strictObject({
  drive_id: ResourceId,
  path_on_host: hostPath.optional(),
  rate_limiter: RateLimiter.optional(),
});

// ---- NetworkInterface, PartialNetworkInterface ----

export const NetworkInterface = z.strictObject({
  iface_id: ResourceId,
  // A TAP device's name: at most IFNAMSIZ - 1 = 15 bytes (include/uapi/linux/if.h). kindling's rule.
  host_dev_name: z.string().regex(/^[A-Za-z0-9_.-]{1,15}$/, { error: "must be 1 to 15 letters, digits, _, . or - (a network interface name)" }),
  guest_mac: z.string().regex(/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/, { error: "must be a MAC address like 06:00:ac:10:00:02" }).optional(),
  mtu: int(68, 65535).optional(),
  rx_rate_limiter: RateLimiter.optional(),
  tx_rate_limiter: RateLimiter.optional(),
});

export const PartialNetworkInterface = z.strictObject({
  iface_id: ResourceId,
  rx_rate_limiter: RateLimiter.optional(),
  tx_rate_limiter: RateLimiter.optional(),
});

// ---- Vsock ----

export const Vsock = z.strictObject({
  // CIDs 0-2 are reserved (hypervisor, local, host); 0xFFFFFFFF is VMADDR_CID_ANY (linux/vm_sockets.h).
  guest_cid: int(3, 0xffff_fffe),
  // sockaddr_un.sun_path holds 108 bytes with the terminating NUL (linux/un.h UNIX_PATH_MAX).
  uds_path: nonEmpty.refine((p) => Buffer.byteLength(p) <= 107, { error: "must be at most 107 bytes (a Unix socket path)" }),
  vsock_id: z.string().optional(),
});

// ---- EntropyDevice, SerialDevice ----

export const EntropyDevice = z.strictObject({ rate_limiter: RateLimiter.optional() });

export const SerialDevice = z.strictObject({
  serial_out_path: hostPath.optional(),
  rate_limiter: TokenBucket.optional(),
});

// ---- MmdsConfig ----

export const MmdsConfig = z.strictObject({
  version: z.enum(["V1", "V2"]).optional(),
  network_interfaces: z.array(ResourceId),
  // Checked to be a link-local address by VmResources.setMmdsConfig, with Firecracker's message.
  ipv4_address: z.string().optional(),
  imds_compat: z.boolean().optional(),
});

// ---- Balloon, BalloonUpdate, BalloonStatsUpdate ----

// Firecracker's types: amount_mib is a u32, stats_polling_interval_s a u16.
export const Balloon = z.strictObject({
  amount_mib: int(0, 0xffff_ffff),
  deflate_on_oom: z.boolean(),
  stats_polling_interval_s: int(0, 0xffff).optional(),
  free_page_hinting: z.boolean().optional(),
  free_page_reporting: z.boolean().optional(),
});

export const BalloonUpdate = z.strictObject({ amount_mib: int(0, 0xffff_ffff) });

export const BalloonStatsUpdate = z.strictObject({ stats_polling_interval_s: int(0, 0xffff) });

// ---- CpuConfig (PUT /cpu-config): Firecracker's custom CPU template, src/arch/x86_64/cpu-templates.ts ----

export const CpuConfig = CpuConfigSchema;

// ---- InstanceActionInfo, Vm ----

export const InstanceActionInfo = z.strictObject({
  action_type: z.enum(["FlushMetrics", "InstanceStart", "SendCtrlAltDel"]),
});

export const VmState = z.strictObject({ state: z.enum(["Paused", "Resumed"]) });

// ---- Logger, Metrics ----

export const LOG_LEVEL_NAMES = ["Error", "Warning", "Info", "Debug", "Trace", "Off"] as const;
export type LogLevelName = (typeof LOG_LEVEL_NAMES)[number];

/** "The possible values are case-insensitive": "debug" is accepted and becomes "Debug". */
const LogLevel = z
  .string()
  .refine((v) => LOG_LEVEL_NAMES.some((l) => l.toLowerCase() === v.toLowerCase()), { error: `must be one of ${LOG_LEVEL_NAMES.join(", ")}` })
  .transform((v) => LOG_LEVEL_NAMES.find((l) => l.toLowerCase() === v.toLowerCase())!);

export const Logger = z.strictObject({
  level: LogLevel.optional(),
  log_path: hostPath.optional(),
  show_level: z.boolean().optional(),
  show_log_origin: z.boolean().optional(),
  module: z.string().optional(),
});

export const Metrics = z.strictObject({
  metrics_path: hostPath,
  emit_id: z.boolean().optional(),
  properties: z.record(z.string(), z.string()).optional(),
});

// ---- FullVmConfiguration: GET /vm/config and --config-file ----

/** At most this many drives and network interfaces: the virtio-mmio windows there are (layout.ts). */
const MAX_DEVICES = 32;

export const FullVmConfiguration = z.strictObject({
  "boot-source": BootSource.optional(),
  drives: z.array(Drive).max(MAX_DEVICES, { error: `must have at most ${MAX_DEVICES} entries` }).optional(),
  "machine-config": MachineConfiguration.optional(),
  "network-interfaces": z.array(NetworkInterface).max(MAX_DEVICES, { error: `must have at most ${MAX_DEVICES} entries` }).optional(),
  vsock: Vsock.optional(),
  logger: Logger.optional(),
  metrics: Metrics.optional(),
  entropy: EntropyDevice.optional(),
  "mmds-config": MmdsConfig.optional(),
  balloon: Balloon.optional(),
  "cpu-config": CpuConfig.optional(),
});

/** Keys of the spec's FullVmConfiguration that kindling does not implement, and what each is. */
export const UNSUPPORTED_CONFIG_KEYS: Record<string, string> = {
  "memory-hotplug": "memory hotplug (virtio-mem)",
  pmem: "virtio-pmem devices",
};

export type BootSource = z.output<typeof BootSource>;
export type MachineConfiguration = z.output<typeof MachineConfiguration>;
export type MachineConfigurationUpdate = z.output<typeof MachineConfigurationUpdate>;
export type Drive = z.output<typeof Drive>;
export type PartialDrive = z.output<typeof PartialDrive>;
export type NetworkInterface = z.output<typeof NetworkInterface>;
export type PartialNetworkInterface = z.output<typeof PartialNetworkInterface>;
export type Vsock = z.output<typeof Vsock>;
export type EntropyDevice = z.output<typeof EntropyDevice>;
export type Balloon = z.output<typeof Balloon>;
export type CpuConfig = z.output<typeof CpuConfig>;
export type SerialDevice = z.output<typeof SerialDevice>;
export type MmdsConfig = z.output<typeof MmdsConfig>;
export type RateLimiter = z.output<typeof RateLimiter>;
export type LoggerConfig = z.output<typeof Logger>;
export type MetricsConfig = z.output<typeof Metrics>;
export type FullVmConfiguration = z.output<typeof FullVmConfiguration>;
/** What `new MicroVM(config)` accepts: the --config-file shape (log levels in any case). */
export type MicroVMConfig = z.input<typeof FullVmConfiguration>;

// ---- turning zod's issues into messages that name the field and the rule ----

const TYPE_RULE: Record<string, string> = {
  string: "must be a string",
  int: "must be an integer",
  number: "must be an integer",
  boolean: "must be true or false",
  object: "must be an object",
  array: "must be an array",
  record: "must be an object",
};

/** `drives[0].path_on_host` from a prefix and a zod path. */
function fieldName(prefix: string, path: readonly PropertyKey[]): string {
  let name = prefix;
  for (const p of path) name += typeof p === "number" ? `[${p}]` : `${name ? "." : ""}${String(p)}`;
  return name || "body";
}

function isMissing(input: unknown, path: readonly PropertyKey[]): boolean {
  let v: unknown = input;
  for (const p of path.slice(0, -1)) v = v !== null && typeof v === "object" ? (v as Record<PropertyKey, unknown>)[p] : undefined;
  const last = path[path.length - 1];
  return last !== undefined && v !== null && typeof v === "object" && !Object.hasOwn(v, last);
}

function rule(issue: z.core.$ZodIssue, input: unknown): string {
  if ((issue.code === "invalid_type" || issue.code === "invalid_value") && isMissing(input, issue.path)) return "required";
  switch (issue.code) {
    case "invalid_type":
      return TYPE_RULE[issue.expected] ?? `must be ${issue.expected}`;
    case "invalid_value":
      return `must be one of ${issue.values.map(String).join(", ")}`;
    default:
      return issue.message;
  }
}

/** One message per field (the last rule broken, which is the most specific), each naming the field. */
export function describeIssues(prefix: string, issues: readonly z.core.$ZodIssue[], input: unknown): string[] {
  const byField = new Map<string, string>();
  for (const issue of issues) {
    if (issue.code === "unrecognized_keys") {
      for (const k of issue.keys) byField.set(fieldName(prefix, [...issue.path, k]), "unknown field");
    } else {
      byField.set(fieldName(prefix, issue.path), rule(issue, input));
    }
  }
  return [...byField].map(([field, text]) => `${field}: ${text}`);
}

/** Parse `input` with `schema`, or throw a ValidationError naming each bad field after `prefix`. */
export function parseWith<S extends z.ZodType>(schema: S, input: unknown, prefix: string): z.output<S> {
  const r = schema.safeParse(input);
  if (!r.success) throw new ValidationError(describeIssues(prefix, r.error.issues, input));
  return r.data;
}
