// The API against Firecracker's own OpenAPI spec (../shared/firecracker/firecracker-api.yaml, read with
// Bun.YAML; without it, the facts committed from it in test/fixtures/firecracker-api-facts.json): for
// every path and method the spec lists, kindling either serves it or answers 400 naming the missing
// feature. For every served one, example bodies built from the spec's schemas are accepted
// (or refused by name where kindling lacks a feature, listed below), answers match the spec's response
// schemas, and bodies with a missing required field, a wrong type or an unknown field get 400 with a
// fault_message naming the field. The VM behind the socket boots with a stand-in (no KVM needed).

import { afterAll, describe, expect, test } from "bun:test";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { consola } from "consola";
import { ROUTES } from "../src/api/handlers.ts";
import type { MicroVM } from "../src/microvm.ts";
import { type ApiFacts, extractApiFacts, FACTS_PATH, factsText, type Operation, type Schema, SPEC_PATH } from "../scripts/firecracker-api-facts.ts";
import { fakeMicroVM, fixtureFiles, serveFake } from "./support/api.ts";

consola.level = -1;

// The spec itself when it sits beside the repository, else the facts extracted from it and committed
// (test/fixtures/firecracker-api-facts.json, written by scripts/firecracker-api-facts.ts).
const specPresent = await Bun.file(SPEC_PATH).exists();
const committedFacts = (await Bun.file(FACTS_PATH).json()) as ApiFacts;
const specFacts = specPresent ? extractApiFacts(Bun.YAML.parse(await Bun.file(SPEC_PATH).text())) : null;
const spec: ApiFacts = specFacts ?? committedFacts;

const files = fixtureFiles();
afterAll(() => rmSync(files.dir, { recursive: true, force: true }));

// ---- reading the spec's schemas ----

function resolve(s: Schema): Schema {
  return s.$ref ? resolve(spec.definitions[s.$ref.replace("#/definitions/", "")]!) : s;
}
const defName = (s: Schema) => s.$ref?.replace("#/definitions/", "") ?? "body";

/** Values for string fields whose meaning the spec gives only in prose (paths must exist, ids must match). */
function exampleString(name: string): string {
  const byName: Record<string, string> = {
    kernel_image_path: files.kernel, initrd_path: files.initrd, path_on_host: files.disk,
    log_path: join(files.dir, "log"), metrics_path: join(files.dir, "metrics"), serial_out_path: join(files.dir, "serial"),
    uds_path: join(files.dir, "v.sock"), socket: join(files.dir, "vhost.sock"),
    drive_id: "x1", iface_id: "x1", host_dev_name: "tap0", guest_mac: "06:00:ac:10:00:02", partuuid: "0eaa91a0-01",
    // CpuConfig's number strings and tri-state bitmaps ("hex, binary, or decimal"; 0, 1 or x per bit).
    leaf: "0x80000001", subleaf: "0x0", addr: "0x10a", bitmap: "0bxxxx1",
  };
  return byName[name] ?? "x";
}

/** A value for `s`: its default, its first enum value, or the smallest thing of its type. Objects get their required fields. */
function example(s0: Schema, name: string): unknown {
  const s = resolve(s0);
  if (s.default !== undefined) return s.default;
  if (s.enum) return s.enum[0];
  switch (s.type) {
    case "integer":
      return name === "mem_size_mib" ? 128 : (s.minimum ?? 1); // the spec's documented default memory size
    case "boolean":
      return false;
    case "string":
      return exampleString(name);
    case "array":
      return [example(s.items!, name)];
    default: {
      const o: Record<string, unknown> = {};
      for (const p of [...(s.required ?? []), ...(KINDLING_REQUIRES[name] ?? [])]) o[p] = example(s.properties![p]!, p);
      if (!s.properties && typeof s.additionalProperties === "object") o.k = example(s.additionalProperties, "k");
      return o;
    }
  }
}

/** Checks `v` against a response schema, strictly: a field the spec does not declare is a problem. */
function validate(v: unknown, s0: Schema, at = "response"): string[] {
  const s = resolve(s0);
  if (s.enum && !s.enum.includes(v)) return [`${at}: ${JSON.stringify(v)} is not one of ${s.enum.join(", ")}`];
  const typeOk: Record<string, (x: unknown) => boolean> = {
    integer: Number.isInteger, string: (x) => typeof x === "string", boolean: (x) => typeof x === "boolean",
    array: Array.isArray, object: (x) => x !== null && typeof x === "object" && !Array.isArray(x),
  };
  const type = s.type ?? "object";
  if (!typeOk[type]!(v)) return [`${at}: ${JSON.stringify(v)} is not ${type}`];
  if (type === "integer" && ((s.minimum !== undefined && (v as number) < s.minimum) || (s.maximum !== undefined && (v as number) > s.maximum))) return [`${at}: ${v} out of range`];
  if (type === "array") return (v as unknown[]).flatMap((x, i) => validate(x, s.items!, `${at}[${i}]`));
  if (type !== "object") return [];
  const o = v as Record<string, unknown>;
  const problems = (s.required ?? []).filter((r) => !(r in o)).map((r) => `${at}.${r}: missing`);
  for (const [k, x] of Object.entries(o)) {
    const p = s.properties?.[k] ?? (typeof s.additionalProperties === "object" ? s.additionalProperties : undefined);
    if (p) problems.push(...validate(x, p, `${at}.${k}`));
    else if (s.additionalProperties !== true) problems.push(`${at}.${k}: not in the spec`);
  }
  return problems;
}

// ---- what kindling adds to the spec, stated once ----

/** Fields the spec makes optional that kindling needs: "path_on_host ... is required for virtio-block config". */
const KINDLING_REQUIRES: Record<string, string[]> = { Drive: ["path_on_host"] };

/** Valid bodies kindling refuses because it lacks the feature: label -> what the fault_message must say. */
const REFUSED: Record<string, RegExp> = {
  // T2, T2S, T2CL, T2A and C3 are accepted and checked against the host's CPU at InstanceStart.
  "MachineConfiguration.cpu_template=V1N1": /cpu_template: V1N1 is an aarch64/,
  "Balloon.free_page_hinting=true": /free page hinting is not supported/,
  "CpuConfig.kvm_capabilities": /kvm_capabilities: not supported by kindling/,
  "CpuConfig.reg_modifiers": /reg_modifiers: .*aarch64/,
  "CpuConfig.vcpu_features": /vcpu_features: .*aarch64/,
  "MachineConfiguration.huge_pages=Transparent": /huge pages .* not supported/,
  "MachineConfiguration.huge_pages=2M": /huge pages .* not supported/,
  "Drive.socket": /vhost-user-block is not supported/,
  "Drive.io_engine=Async": /Async .* not supported/,
  // Firecracker too refuses it before boot ("not supported before starting the microVM").
  "InstanceActionInfo.action_type=SendCtrlAltDel": /SendCtrlAltDel: the microVM has not started/,
};

/** What each operation needs before a valid body can succeed. */
const SETUP: Record<string, (vm: MicroVM) => Promise<void>> = {
  "PUT /actions": async (vm) => {
    vm.setBootSource({ kernel_image_path: files.kernel });
    vm.setMetrics({ metrics_path: join(files.dir, `m-${Math.random()}`) }); // for FlushMetrics
  },
  "PATCH /drives/{drive_id}": async (vm) => {
    vm.setBootSource({ kernel_image_path: files.kernel });
    vm.putDrive({ drive_id: "x1", is_root_device: false, path_on_host: files.disk });
    await vm.start();
  },
  "PATCH /network-interfaces/{iface_id}": async (vm) => {
    vm.setBootSource({ kernel_image_path: files.kernel });
    vm.putNetworkInterface({ iface_id: "x1", host_dev_name: "tap0" });
    await vm.start();
  },
  "PUT /mmds/config": async (vm) => {
    vm.putNetworkInterface({ iface_id: "x", host_dev_name: "tap0" });
  },
  // "PATCH: the MMDS data store is not initialized" until a PUT.
  "PATCH /mmds": async (vm) => vm.putMmds({}),
  "GET /balloon": async (vm) => vm.putBalloon({ amount_mib: 1, deflate_on_oom: false }),
  "PATCH /balloon": async (vm) => vm.putBalloon({ amount_mib: 1, deflate_on_oom: false }),
  "GET /balloon/statistics": async (vm) => vm.putBalloon({ amount_mib: 1, deflate_on_oom: false, stats_polling_interval_s: 1 }),
  "PATCH /balloon/statistics": async (vm) => vm.putBalloon({ amount_mib: 1, deflate_on_oom: false, stats_polling_interval_s: 1 }),
  "PATCH /vm": async (vm) => {
    vm.setBootSource({ kernel_image_path: files.kernel });
    await vm.start();
  },
  "PUT /snapshot/create": async (vm) => {
    vm.setBootSource({ kernel_image_path: files.kernel });
    await vm.start();
    vm.pause();
  },
};

/**
 * Operations whose every valid body is refused here, by name: the stand-in VM cannot be snapshotted, and
 * there are no snapshot files to load (test/snapshot-api.test.ts creates and loads real ones).
 */
const REFUSED_ALL: Record<string, RegExp> = {
  SnapshotCreateParams: /a stand-in cannot be snapshotted/,
  SnapshotLoadParams: /exactly one of mem_file_path and mem_backend|NOT_FOUND: snapshot file .* does not exist|Uffd is not supported|huge_pages: .* not supported/,
};
/** Bodies that are any JSON document (MmdsContentsObject): no field is unknown, no shape is wrong. */
const FREE_FORM = ["PUT /mmds", "PATCH /mmds"];
/** GETs that answer only once the microVM runs, as in Firecracker: what they must say before. */
const ONLY_AFTER_START: Record<string, RegExp> = { "GET /balloon/statistics": /balloon statistics: the microVM has not started/ };
/** kindling's pre-boot-only operations besides those the spec's summaries mark "Pre-boot only" (as in Firecracker). */
const ALSO_PRE_BOOT = ["PUT /logger", "PUT /metrics", "PUT /serial"];

// ---- the operations ----

interface Op {
  key: string;
  method: string;
  path: string;
  /** The path with its {param} filled in. */
  url: string;
  op: Operation;
  body?: Schema;
}
const ops: Op[] = Object.entries(spec.paths).flatMap(([path, methods]) =>
  Object.entries(methods).map(([m, op]) => {
    const method = m.toUpperCase();
    return { key: `${method} ${path}`, method, path, url: path.replace(/\{[^}]+\}/, "x1"), op, body: op.parameters?.find((p) => p.in === "body")?.schema };
  }),
);
const served = (o: Op) => ROUTES.some((r) => r.method === o.method && r.path === o.path);

async function withVm(o: Op, fn: (call: Awaited<ReturnType<typeof serveFake>>["call"], vm: MicroVM) => Promise<void>, setup = true): Promise<void> {
  const vm = fakeMicroVM();
  if (setup) await SETUP[o.key]?.(vm);
  const { server, call } = await serveFake(vm, files.dir);
  try {
    await fn(call, vm);
  } finally {
    server.close();
  }
}

const ERROR_SCHEMA = spec.definitions.Error!;
function expectFault(r: { status: number; json: unknown; text: string }, pattern: RegExp | string, label: string): void {
  expect(r.status, `${label}: ${r.text}`).toBe(400);
  expect(validate(r.json, ERROR_SCHEMA), label).toEqual([]);
  const message = (r.json as { fault_message?: string }).fault_message ?? "";
  expect(message.length, label).toBeGreaterThan(0);
  expect(message, label).toMatch(pattern);
}

/** Valid bodies for an operation: the minimal one, one per optional field, one per other enum value or boolean. */
function validBodies(schemaRef: Schema): { label: string; body: unknown }[] {
  const name = defName(schemaRef);
  const s = resolve(schemaRef);
  const minimal = example(schemaRef, name) as Record<string, unknown>;
  const out = [{ label: name, body: minimal }];
  for (const [p, ps0] of Object.entries(s.properties ?? {})) {
    const ps = resolve(ps0);
    if (!(p in minimal)) out.push({ label: `${name}.${p}`, body: { ...minimal, [p]: example(ps0, p) } });
    for (const v of ps.enum ?? (ps.type === "boolean" ? [true, false] : [])) {
      if (v !== example(ps0, p)) out.push({ label: `${name}.${p}=${v}`, body: { ...minimal, [p]: v } });
    }
  }
  return out;
}

/** A value of the wrong JSON type for a field of schema `s`. */
function wrongType(s0: Schema): unknown {
  const s = resolve(s0);
  if (s.enum) return 7;
  return ({ integer: "1", number: "1", string: 1, boolean: "true", array: {}, object: [] } as Record<string, unknown>)[s.type ?? "object"];
}

describe("the committed facts", () => {
  // Only where the spec is (a fresh clone has nothing to compare against, and reports no skipped test).
  if (specFacts) {
    test("match firecracker-api.yaml (re-run scripts/firecracker-api-facts.ts when the spec changes)", () => {
      expect(factsText(specFacts)).toBe(factsText(committedFacts));
    });
  }
  test("are the spec's facts: paths with methods, definitions with schemas", () => {
    expect(Object.keys(committedFacts.paths).length).toBeGreaterThan(20);
    expect(committedFacts.definitions.Drive?.required).toContain("drive_id");
    expect(committedFacts.paths["/actions"]?.put?.parameters?.[0]?.schema?.$ref).toBe("#/definitions/InstanceActionInfo");
  });
});

describe("every path and method of firecracker-api.yaml", () => {
  test("the spec was read: it has the paths kindling serves", () => {
    expect(ops.length).toBeGreaterThan(30);
    for (const r of ROUTES) expect(ops.some((o) => o.method === r.method && o.path === r.path), `${r.method} ${r.path} is in the spec`).toBe(true);
  });

  test("paths kindling does not serve yet answer 400 naming the missing feature", async () => {
    const missing = ops.filter((o) => !served(o));
    expect(missing.map((o) => o.key)).toContain("PUT /mmds");
    for (const o of missing) {
      await withVm(o, async (call) => {
        expectFault(await call(o.method, o.url, o.body ? example(o.body, defName(o.body)) : undefined), /kindling does not implement .+ yet/, o.key);
      });
    }
  });
});

describe.each(ops.filter(served).map((o) => [o.key, o] as const))("%s", (_key, o) => {
  const response200 = o.op.responses["200"]?.schema;

  if (response200) {
    test("answers 200 with a body matching the spec's response schema, before and after start", async () => {
      for (const started of [false, true]) {
        await withVm(o, async (call, vm) => {
          if (started) {
            vm.setBootSource({ kernel_image_path: files.kernel });
            await vm.start();
          }
          const r = await call(o.method, o.url);
          if (!started && ONLY_AFTER_START[o.key]) return expectFault(r, ONLY_AFTER_START[o.key]!, o.key);
          expect(r.status, r.text).toBe(200);
          expect(validate(r.json, response200), r.text).toEqual([]);
        });
      }
    });
  }

  if (!o.body) return;
  const body = o.body;

  test("valid bodies built from the spec's schema are accepted (or refused by name where kindling lacks the feature)", async () => {
    for (const { label, body: b } of validBodies(body)) {
      await withVm(o, async (call) => {
        const r = await call(o.method, o.url, b);
        const refused = REFUSED[label] ?? REFUSED_ALL[defName(body)];
        if (refused) expectFault(r, refused, label);
        else {
          expect(r.status, `${label} ${JSON.stringify(b)}: ${r.text}`).toBe(204);
          expect(r.text, label).toBe("");
        }
      });
    }
  });

  if (FREE_FORM.includes(o.key)) {
    test("any JSON document is accepted; no body or a body that is not JSON is refused", async () => {
      await withVm(o, async (call) => {
        for (const doc of [{ a: { b: [1, "x", null] } }, { no_such_field: 1 }]) expect((await call(o.method, o.url, doc)).status).toBe(204);
        expectFault(await call(o.method, o.url), /needs a JSON body/, `${o.key} without a body`);
        expectFault(await call(o.method, o.url, "{not json"), /not valid JSON/, `${o.key} with bad JSON`);
      });
    });
    return;
  }

  test("missing required fields, wrong types and unknown fields get 400 naming the field", async () => {
    await withVm(o, async (call, vm) => {
      const before = JSON.stringify(vm.config);
      const s = resolve(body);
      const minimal = example(body, defName(body)) as Record<string, unknown>;
      // PATCH /machine-config is a partial update by design ("Partially updates the Machine Configuration").
      const partial = o.key === "PATCH /machine-config";
      for (const p of partial ? [] : [...(s.required ?? []), ...(KINDLING_REQUIRES[defName(body)] ?? [])]) {
        const { [p]: _, ...without } = minimal;
        expectFault(await call(o.method, o.url, without), new RegExp(`\\b${p}: required`), `${o.key} without ${p}`);
      }
      for (const [p, ps] of Object.entries(s.properties ?? {})) {
        expectFault(await call(o.method, o.url, { ...minimal, [p]: wrongType(ps) }), new RegExp(`\\b${p}: must be`), `${o.key} with ${p} of the wrong type`);
      }
      expectFault(await call(o.method, o.url, { ...minimal, no_such_field: 1 }), /\bno_such_field: unknown field/, `${o.key} with an unknown field`);
      for (const notObject of [[], "text", 5, null]) expectFault(await call(o.method, o.url, JSON.stringify(notObject)), /must be an object/, `${o.key} with ${JSON.stringify(notObject)}`);
      expectFault(await call(o.method, o.url), /needs a JSON body/, `${o.key} without a body`);
      // Refused requests changed nothing.
      expect(JSON.stringify(vm.config)).toBe(before);
    });
  });

  const preBootOnly = /Pre-boot only/.test(o.op.summary ?? "") || ALSO_PRE_BOOT.includes(o.key);
  const postBootOnly = /Post-boot only/.test(o.op.summary ?? "");
  if (preBootOnly) {
    test("is pre-boot only: refused with a reason once the microVM runs", async () => {
      await withVm(o, async (call, vm) => {
        vm.setBootSource({ kernel_image_path: files.kernel });
        await vm.start();
        expectFault(await call(o.method, o.url, example(body, defName(body))), /only be configured before the microVM starts/, o.key);
      });
    });
  }
  if (postBootOnly) {
    test("is post-boot only: refused with a reason before the microVM runs", async () => {
      await withVm(o, async (call) => expectFault(await call(o.method, o.url, example(body, defName(body))), /has not started/, o.key), false);
    });
  }
  if (o.path.includes("{")) {
    test("the id in the path must match the id in the body", async () => {
      await withVm(o, async (call) => {
        const b = { ...(example(body, defName(body)) as Record<string, unknown>) };
        const idField = Object.keys(b).find((k) => k.endsWith("_id"))!;
        expectFault(await call(o.method, o.url, { ...b, [idField]: "x2" }), /does not match/, o.key);
        expectFault(await call(o.method, o.path.replace(/\{[^}]+\}/, "bad%20id"), b), /path: .* must be 1 to 64 letters/, o.key);
      });
    });
  }
});
