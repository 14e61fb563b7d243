// What each path of the API does: the route table, from firecracker-api.yaml's "paths", each entry a thin
// call into MicroVM (src/microvm.ts). HTTP itself (the socket, body limits, JSON framing) is server.ts's job.
//
// Answers follow the spec: 204 for a successful PUT/PATCH, 200 with a JSON body for GET, and 400 with
// {"fault_message": "..."} for anything refused. Paths of the spec that kindling does not serve answer 400
// naming the missing feature; paths outside the spec answer 400 too, never a bare 404.

import type { MicroVM } from "../microvm.ts";
import { MicroVMError } from "../config/errors.ts";
import { InstanceActionInfo, parseWith, ResourceId, VmState } from "../config/schemas.ts";

/** The version of firecracker-api.yaml this API follows: GET /version's `firecracker_version`. */
export const FIRECRACKER_API_VERSION = "1.17.0-dev";
export const KINDLING_VERSION = "0.1.0";

export type Method = "GET" | "PUT" | "PATCH";

export interface ApiResponse {
  status: number;
  /** JSON body; absent for 204. */
  body?: unknown;
}

export interface Route {
  /** As the spec writes it: "/drives/{drive_id}". */
  path: string;
  method: Method;
  /** Firecracker's metric name for the resource: put_api_requests.<metric>_count. */
  metric: string;
  /** Returns the 200 body, or undefined for 204. `id` is the {param} of the path. */
  handle(vm: MicroVM, body: unknown, id: string): unknown | Promise<unknown>;
}

/** The path's id must be the body's, as Firecracker checks: PUT /drives/rootfs with "drive_id": "rootfs". */
function sameId(field: string, id: string, body: unknown): unknown {
  const r = ResourceId.safeParse(id);
  if (!r.success) throw new MicroVMError(`path: ${field} ${JSON.stringify(id)} must be 1 to 64 letters, digits or _`);
  if (body !== null && typeof body === "object" && field in body) {
    const inBody = (body as Record<string, unknown>)[field];
    // A wrong type is the schema's to report (`drive_id: must be a string`).
    if (typeof inBody === "string" && inBody !== id) throw new MicroVMError(`${field}: ${JSON.stringify(inBody)} in the body does not match ${JSON.stringify(id)} in the path`);
  }
  return body;
}

function instanceState(vm: MicroVM): "Not started" | "Running" | "Paused" {
  switch (vm.state) {
    case "Not started":
    case "Starting":
      return "Not started";
    case "Running":
    case "Paused":
      return vm.state;
    case "Stopped":
      throw new MicroVMError("the microVM has stopped");
  }
}

// `as never`: the bodies are untrusted JSON; MicroVM checks each against its schema.
export const ROUTES: Route[] = [
  { path: "/", method: "GET", metric: "instance_info", handle: (vm) => ({ app_name: "kindling", id: vm.id, state: instanceState(vm), vmm_version: KINDLING_VERSION }) },
  { path: "/version", method: "GET", metric: "vmm_version", handle: () => ({ firecracker_version: FIRECRACKER_API_VERSION }) },
  { path: "/machine-config", method: "GET", metric: "machine_cfg", handle: (vm) => vm.machineConfig },
  { path: "/machine-config", method: "PUT", metric: "machine_cfg", handle: (vm, b) => vm.setMachineConfig(b as never) },
  { path: "/machine-config", method: "PATCH", metric: "machine_cfg", handle: (vm, b) => vm.patchMachineConfig(b as never) },
  { path: "/boot-source", method: "PUT", metric: "boot_source", handle: (vm, b) => vm.setBootSource(b as never) },
  { path: "/drives/{drive_id}", method: "PUT", metric: "drive", handle: (vm, b, id) => vm.putDrive(sameId("drive_id", id, b) as never) },
  { path: "/drives/{drive_id}", method: "PATCH", metric: "drive", handle: (vm, b, id) => vm.patchDrive(sameId("drive_id", id, b) as never) },
  { path: "/network-interfaces/{iface_id}", method: "PUT", metric: "network", handle: (vm, b, id) => vm.putNetworkInterface(sameId("iface_id", id, b) as never) },
  { path: "/network-interfaces/{iface_id}", method: "PATCH", metric: "network", handle: (vm, b, id) => vm.patchNetworkInterface(sameId("iface_id", id, b) as never) },
  { path: "/vsock", method: "PUT", metric: "vsock", handle: (vm, b) => vm.setVsock(b as never) },
  { path: "/entropy", method: "PUT", metric: "entropy", handle: (vm, b) => vm.setEntropy(b as never) },
  { path: "/balloon", method: "GET", metric: "balloon", handle: (vm) => vm.balloonConfig },
  { path: "/balloon", method: "PUT", metric: "balloon", handle: (vm, b) => vm.putBalloon(b as never) },
  { path: "/balloon", method: "PATCH", metric: "balloon", handle: (vm, b) => vm.patchBalloon(b as never) },
  { path: "/balloon/statistics", method: "GET", metric: "balloon", handle: (vm) => vm.balloonStatistics },
  { path: "/balloon/statistics", method: "PATCH", metric: "balloon", handle: (vm, b) => vm.patchBalloonStatistics(b as never) },
  { path: "/cpu-config", method: "PUT", metric: "cpu_cfg", handle: (vm, b) => vm.putCpuConfig(b as never) },
  { path: "/actions", method: "PUT", metric: "actions", handle: (vm, b) => action(vm, b) },
  { path: "/vm", method: "PATCH", metric: "vm", handle: (vm, b) => vmState(vm, b) },
  { path: "/vm/config", method: "GET", metric: "vm_config", handle: (vm) => vm.config },
  { path: "/logger", method: "PUT", metric: "logger", handle: (vm, b) => vm.setLogger(b as never) },
  { path: "/metrics", method: "PUT", metric: "metrics", handle: (vm, b) => vm.setMetrics(b as never) },
  { path: "/serial", method: "PUT", metric: "serial", handle: (vm, b) => vm.setSerial(b as never) },
  { path: "/mmds", method: "GET", metric: "mmds", handle: (vm) => vm.getMmds() },
  { path: "/mmds", method: "PUT", metric: "mmds", handle: (vm, b) => vm.putMmds(b) },
  { path: "/mmds", method: "PATCH", metric: "mmds", handle: (vm, b) => vm.patchMmds(b) },
  { path: "/mmds/config", method: "PUT", metric: "mmds", handle: (vm, b) => vm.setMmdsConfig(b as never) },
  { path: "/snapshot/create", method: "PUT", metric: "create_snapshot", handle: (vm, b) => vm.createSnapshot(b) },
  { path: "/snapshot/load", method: "PUT", metric: "load_snapshot", handle: (vm, b) => vm.loadSnapshot(b) },
];

async function action(vm: MicroVM, body: unknown): Promise<undefined> {
  const { action_type } = parseWith(InstanceActionInfo, body, "action");
  if (action_type === "InstanceStart") await vm.start();
  else if (action_type === "FlushMetrics") vm.flushMetrics();
  else vm.sendCtrlAltDel();
  return undefined;
}

function vmState(vm: MicroVM, body: unknown): undefined {
  const { state } = parseWith(VmState, body, "vm");
  if (state === "Paused") vm.pause();
  else vm.resume();
  return undefined;
}

/** Paths of the spec kindling does not serve yet, and the feature each belongs to. */
export const NOT_SERVED: { pattern: RegExp; feature: string }[] = [
  { pattern: /^\/balloon\/hinting\/(start|status|stop)$/, feature: "the balloon's free page hinting" },
  { pattern: /^\/pmem\/[^/]+$/, feature: "virtio-pmem devices" },
  { pattern: /^\/hotplug\/memory$/, feature: "memory hotplug (virtio-mem)" },
];

/** "/drives/rootfs" against "/drives/{drive_id}": the id, or undefined if it does not match. */
function matchPath(pattern: string, path: string): string | undefined {
  const p = pattern.split("/");
  const a = path.split("/");
  if (p.length !== a.length) return undefined;
  let id = "";
  for (let i = 0; i < p.length; i++) {
    if (p[i]!.startsWith("{")) id = a[i]!;
    else if (p[i] !== a[i]) return undefined;
  }
  return id;
}

export interface Matched {
  route: Route;
  id: string;
}

/** The route for a request, or the 400 answer explaining why there is none. */
export function findRoute(method: string, path: string): Matched | ApiResponse {
  const candidates = ROUTES.map((route) => ({ route, id: matchPath(route.path, path) })).filter((m) => m.id !== undefined);
  const hit = candidates.find((m) => m.route.method === method);
  if (hit) return hit as Matched;
  if (candidates.length) {
    const allowed = candidates.map((m) => m.route.method).join(", ");
    return fault(`${method} ${path}: not allowed; ${candidates[0]!.route.path} accepts ${allowed}`);
  }
  const missing = NOT_SERVED.find((n) => n.pattern.test(path));
  if (missing) return fault(`${method} ${path}: kindling does not implement ${missing.feature} yet`);
  return fault(`${method} ${path}: invalid request method and/or path; not a path of the Firecracker API`);
}

/** The whole answer to a request that hit a bug (500); the details are in the VMM's log. */
export const INTERNAL_ERROR_MESSAGE = "internal error in the VMM; the details are in its log";

export function fault(message: string, status = 400): ApiResponse {
  return { status, body: { fault_message: message } };
}

/** Run a matched route: its answer, with a MicroVMError turned into 400. Other errors are bugs: 500. */
export async function runRoute(vm: MicroVM, m: Matched, body: unknown): Promise<ApiResponse> {
  try {
    const out = await m.route.handle(vm, body, m.id);
    return out === undefined ? { status: 204 } : { status: 200, body: out };
  } catch (e) {
    if (e instanceof MicroVMError) return fault(e.message, e.status);
    // A bug, not the client's doing: the details go to the VMM's log, the client gets a fixed message (an
    // internal message may name host paths or state the client has no business seeing).
    vm.logger.error(`internal error serving ${m.route.method} ${m.route.path}: ${(e as Error)?.stack ?? String(e)}`, "api");
    return fault(INTERNAL_ERROR_MESSAGE, 500);
  }
}
