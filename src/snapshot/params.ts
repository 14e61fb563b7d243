// The bodies of PUT /snapshot/create and PUT /snapshot/load, from firecracker-api.yaml's
// SnapshotCreateParams and SnapshotLoadParams (with MemoryBackend, NetworkOverride, VsockOverride), checked
// with zod like every other body (src/config/schemas.ts). Unknown fields are refused, as Firecracker does.

import { z } from "../zod.ts";

const path = z.string().min(1, "must not be empty");

export const SnapshotCreateParams = z.strictObject({
  snapshot_path: path,
  mem_file_path: path,
  snapshot_type: z.enum(["Full", "Diff"]).optional(),
});

export const MemoryBackend = z.strictObject({
  backend_type: z.enum(["File", "Uffd"]),
  backend_path: path,
});

export const NetworkOverride = z.strictObject({ iface_id: z.string().min(1), host_dev_name: z.string().min(1) });
export const VsockOverride = z.strictObject({ uds_path: path });

export const SnapshotLoadParams = z.strictObject({
  snapshot_path: path,
  mem_file_path: path.optional(),
  mem_backend: MemoryBackend.optional(),
  enable_diff_snapshots: z.boolean().optional(),
  track_dirty_pages: z.boolean().optional(),
  resume_vm: z.boolean().optional(),
  network_overrides: z.array(NetworkOverride).optional(),
  vsock_override: VsockOverride.optional(),
  clock_realtime: z.boolean().optional(),
  huge_pages: z.enum(["Snapshot", "None", "Transparent", "2M"]).optional(),
});
// The spec also says "Exactly one of the two `mem_*` fields must be present": loadSnapshotBody checks it.

export type SnapshotCreateParams = z.infer<typeof SnapshotCreateParams>;
export type SnapshotLoadParams = z.infer<typeof SnapshotLoadParams>;
