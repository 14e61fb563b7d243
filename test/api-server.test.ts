// The API server's HTTP and socket behaviour (src/api/server.ts), and what the API drives besides the VM:
// the logger, the metrics, the serial output file. The VM boots with a stand-in (no KVM needed).

import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { consola } from "consola";
import { HTTP_MAX_PAYLOAD_SIZE, defaultApiSocket, serveApi } from "../src/api/server.ts";
import { fakeBoot, fakeMicroVM, fixtureFiles, serveFake, type FakeVm } from "./support/api.ts";
import { MicroVM } from "../src/microvm.ts";

consola.level = -1;
const files = fixtureFiles();
afterAll(() => rmSync(files.dir, { recursive: true, force: true }));

describe("the API socket", () => {
  test("is created with mode 0600 and removed on close", async () => {
    const { server, call } = await serveFake(fakeMicroVM(), files.dir);
    expect(statSync(server.socketPath).mode & 0o777).toBe(0o600);
    expect((await call("GET", "/")).status).toBe(200);
    server.close();
    expect(existsSync(server.socketPath)).toBe(false);
    server.close(); // twice is fine
  });

  test("a live socket is refused; a stale one is replaced; anything else is left alone", async () => {
    const path = join(files.dir, "shared.sock");
    const first = await serveApi({ socketPath: path, microvm: fakeMicroVM() });
    await expect(serveApi({ socketPath: path, microvm: fakeMicroVM() })).rejects.toThrow("another process is serving on this socket");
    first.close();

    // A process that dies without removing its socket leaves a stale file behind.
    const child = Bun.spawn([process.execPath, "-e", `Bun.listen({ unix: ${JSON.stringify(path)}, socket: { data() {} } }); console.log("up")`], { stdout: "pipe" });
    for await (const _ of child.stdout) break;
    child.kill("SIGKILL");
    await child.exited;
    expect(statSync(path).isSocket()).toBe(true);
    const second = await serveApi({ socketPath: path, microvm: fakeMicroVM() });
    second.close();

    const plain = join(files.dir, "not-a-socket");
    writeFileSync(plain, "keep me");
    await expect(serveApi({ socketPath: plain, microvm: fakeMicroVM() })).rejects.toThrow("exists and is not a socket");
    expect(readFileSync(plain, "utf8")).toBe("keep me");
  });

  test("the default path is per user where $XDG_RUNTIME_DIR is set, else Firecracker's /run", () => {
    expect(defaultApiSocket({ XDG_RUNTIME_DIR: "/run/user/1000" })).toBe("/run/user/1000/kindling.socket");
    expect(defaultApiSocket({})).toBe("/run/kindling.socket");
  });
});

describe("request bodies", () => {
  test(`over ${HTTP_MAX_PAYLOAD_SIZE} bytes are refused, with or without a Content-Length`, async () => {
    const { server, call } = await serveFake(fakeMicroVM(), files.dir);
    const sized = (n: number) => JSON.stringify({ kernel_image_path: "/no/such/vmlinux" }).padEnd(n, " ");
    expect(sized(HTTP_MAX_PAYLOAD_SIZE).length).toBe(HTTP_MAX_PAYLOAD_SIZE);
    const atLimit = await call("PUT", "/boot-source", sized(HTTP_MAX_PAYLOAD_SIZE));
    expect(atLimit.status).toBe(400);
    expect(atLimit.text).toContain("no such file"); // read and checked, not refused for its size
    const over = await call("PUT", "/boot-source", sized(HTTP_MAX_PAYLOAD_SIZE + 1));
    expect(over.json).toEqual({ fault_message: `PUT /boot-source: the body is larger than the limit of ${HTTP_MAX_PAYLOAD_SIZE} bytes` });
    // Chunked: no Content-Length, the limit is found while reading.
    const chunks = new ReadableStream({
      start(c) {
        for (let i = 0; i < 8; i++) c.enqueue(new Uint8Array(10_000).fill(32));
        c.close();
      },
    });
    const res = await fetch("http://localhost/boot-source", { method: "PUT", body: chunks, unix: server.socketPath } as RequestInit);
    expect(res.status).toBe(400);
    expect(await res.text()).toContain("larger than the limit");
    server.close();
  });

  test("must be UTF-8 JSON", async () => {
    const { server } = await serveFake(fakeMicroVM(), files.dir);
    const put = (body: Uint8Array | string) => fetch("http://localhost/vm", { method: "PATCH", body, unix: server.socketPath } as RequestInit).then((r) => r.json());
    expect(await put(new Uint8Array([0x7b, 0xff, 0x7d]))).toEqual({ fault_message: "PATCH /vm: the body is not valid UTF-8" });
    expect(((await put("{state: Paused}")) as { fault_message: string }).fault_message).toStartWith("PATCH /vm: the body is not valid JSON");
    server.close();
  });
});

describe("requests run one at a time", () => {
  test("a configuration change sent during InstanceStart is answered after it, as pre-boot-only", async () => {
    const slow = fakeBoot();
    const vm = new MicroVM({ "boot-source": { kernel_image_path: files.kernel } }, { boot: async (o) => (await Bun.sleep(200), slow(o)) });
    const { server, call } = await serveFake(vm, files.dir);
    const [start, change] = await Promise.all([
      call("PUT", "/actions", { action_type: "InstanceStart" }),
      Bun.sleep(20).then(() => call("PUT", "/boot-source", { kernel_image_path: files.kernel })),
    ]);
    expect(start.status).toBe(204);
    expect(change.status).toBe(400);
    expect(change.text).toContain("only be configured before the microVM starts");
    await vm.stop();
    server.close();
  });
});

describe("logger, metrics and serial through the API", () => {
  test("PUT /logger sends kindling's log to a file, in Firecracker's line format", async () => {
    const log = join(files.dir, "kindling.log");
    const { server, call } = await serveFake(fakeMicroVM({}, { id: "logtest" }), files.dir);
    expect((await call("PUT", "/logger", { log_path: log, level: "debug", show_level: true, show_log_origin: true })).status).toBe(204);
    await call("PUT", "/boot-source", { kernel_image_path: files.kernel });
    await call("GET", "/machine-config");
    server.close();
    const lines = readFileSync(log, "utf8").trim().split("\n");
    expect(lines.find((l) => l.includes("PUT /boot-source -> 204"))).toMatch(/^\d{4}-\d\d-\d\dT[\d:.]+Z \[logtest:INFO:api\] PUT \/boot-source -> 204$/);
    expect(lines.some((l) => l.includes("[logtest:DEBUG:api] GET /machine-config -> 200"))).toBe(true);
  });

  test("PUT /metrics, FlushMetrics and the end of the VM write JSON lines of changes since the last line", async () => {
    const metricsPath = join(files.dir, "metrics.json");
    const booted: FakeVm[] = [];
    const vm = fakeMicroVM({}, { id: "mtest" }, booted);
    const { server, call } = await serveFake(vm, files.dir);
    expect((await call("PUT", "/metrics", { metrics_path: metricsPath, emit_id: true, properties: { team: "kindling" } })).status).toBe(204);
    expect((await call("PUT", "/metrics", { metrics_path: metricsPath })).text).toContain("already initialized");
    await call("PUT", "/boot-source", { kernel_image_path: files.kernel });
    await call("PUT", "/drives/rootfs", { drive_id: "rootfs", is_root_device: true, path_on_host: files.disk });
    await call("PUT", "/drives/rootfs", { drive_id: "rootfs" }); // fails: is_root_device missing
    await call("PUT", "/actions", { action_type: "InstanceStart" });
    await call("GET", "/");
    expect((await call("PUT", "/actions", { action_type: "FlushMetrics" })).status).toBe(204);
    expect((await call("PUT", "/actions", { action_type: "FlushMetrics" })).status).toBe(204);
    await vm.stop();
    server.close();
    const lines = readFileSync(metricsPath, "utf8").trim().split("\n").map((l) => JSON.parse(l));
    expect(lines.length).toBe(3);
    const [first, second] = lines;
    expect(first).toMatchObject({
      id: "mtest",
      properties: { team: "kindling" },
      put_api_requests: { metrics_count: 2, metrics_fails: 1, boot_source_count: 1, boot_source_fails: 0, drive_count: 2, drive_fails: 1, actions_count: 1, actions_fails: 0 },
      get_api_requests: { instance_info_count: 1 },
      vcpu: { exit_io: 7, exit_mmio: 3 },
      uart: { write_count: 10, interrupt_count: 2 },
      block_rootfs: { reads: 1 },
    });
    expect(typeof first.utc_timestamp_ms).toBe("number");
    // The second line: only what changed since the first (one more FlushMetrics request).
    expect(second.put_api_requests).toMatchObject({ actions_count: 1, drive_count: 0, boot_source_count: 0 });
    expect(second.vcpu).toEqual({ exit_io: 0, exit_mmio: 0 });
  });

  test("FlushMetrics without PUT /metrics is refused", async () => {
    const { server, call } = await serveFake(fakeMicroVM(), files.dir);
    expect((await call("PUT", "/actions", { action_type: "FlushMetrics" })).text).toContain("the metrics system is not initialized");
    server.close();
  });

  test("PUT /serial sends the console to serial_out_path", async () => {
    const out = join(files.dir, "console.txt");
    const booted: FakeVm[] = [];
    const vm = fakeMicroVM({ "boot-source": { kernel_image_path: files.kernel } }, {}, booted);
    const { server, call } = await serveFake(vm, files.dir);
    expect((await call("PUT", "/serial", { serial_out_path: out })).status).toBe(204);
    await call("PUT", "/actions", { action_type: "InstanceStart" });
    booted[0]!.print("Linux version 6.1.0\n");
    await vm.stop();
    server.close();
    expect(readFileSync(out, "utf8")).toBe("Linux version 6.1.0\n");
  });

  test("GET / reports the state; a stopped microVM says so", async () => {
    const vm = fakeMicroVM({ "boot-source": { kernel_image_path: files.kernel } }, { id: "states" });
    const { server, call } = await serveFake(vm, files.dir);
    const state = async () => ((await call("GET", "/")).json as { state: string }).state;
    expect(await state()).toBe("Not started");
    await call("PUT", "/actions", { action_type: "InstanceStart" });
    expect(await state()).toBe("Running");
    await call("PATCH", "/vm", { state: "Paused" });
    expect(await state()).toBe("Paused");
    await call("PATCH", "/vm", { state: "Resumed" });
    expect(await state()).toBe("Running");
    await vm.stop();
    expect((await call("GET", "/")).json).toEqual({ fault_message: "the microVM has stopped" });
    expect((await call("PATCH", "/vm", { state: "Paused" })).text).toContain("the microVM has stopped");
    server.close();
  });
});
