// The import structure of src/, checked: no import cycle between files, and every import points down the
// layers docs/architecture.md draws. A module may import its own area and the areas of lower layers,
// never a higher layer and never another area of its own layer.
//
//   9  cli/, index.ts          entry points: the command line, the library's exports
//   8  api/, exec.ts           HTTP on a Unix socket, Firecracker's routes; one command in a fresh microVM
//      seccomp/, jail/         the VMM's seccomp filter; the jailer
//   7  microvm.ts              one microVM's configuration and life cycle
//   6  config/, explain.ts, snapshot/  schemas, resources, logger, metrics, --config-file; --explain's decoding;
//                              snapshots (KVM state, files, create, restore onto the recipe's devices)
//   5  boot/, trace/           the recipe that builds and boots a machine; the exit trace and its replay
//   4  vm.ts                   one VM: KVM objects, RAM, buses, legacy devices, vCPUs
//   3  vcpu/, devices/, loader/  the exit loop and its thread; device models; kernel loaders
//   2  arch/, net/, mmds/      the x86 machine (layout, boot structures, CPUID); TAP devices; the metadata service
//   1  memory.ts, bus.ts, lifecycle.ts, host.ts, console.ts   guest RAM, buses, VM states, host facts, the terminal
//   0  kvm/, host-file.ts, rate-limit.ts, zod.ts   the KVM API and libc through bun:ffi; host paths opened with checks;
//                              token buckets; zod, configured (the last three import nothing of kindling's)

import { expect, test } from "bun:test";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";

const SRC = resolve(import.meta.dir, "../src");

const LAYERS: Record<string, number> = {
  "cli/": 9, "index.ts": 9,
  "api/": 8, "exec.ts": 8, "seccomp/": 8, "jail/": 8,
  "microvm.ts": 7,
  "config/": 6, "explain.ts": 6, "snapshot/": 6,
  "boot/": 5, "trace/": 5,
  "vm.ts": 4,
  "vcpu/": 3, "devices/": 3, "loader/": 3,
  "arch/": 2, "net/": 2, "mmds/": 2,
  "memory.ts": 1, "bus.ts": 1, "lifecycle.ts": 1, "host.ts": 1, "console.ts": 1,
  "kvm/": 0, "host-file.ts": 0, "rate-limit.ts": 0, "zod.ts": 0,
};

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? sourceFiles(p) : p.endsWith(".ts") ? [p] : [];
  });
}

/** "devices/" for src/devices/virtio/mmio.ts, "vm.ts" for src/vm.ts. */
const areaOf = (file: string) => {
  const parts = relative(SRC, file).split("/");
  return parts.length > 1 ? `${parts[0]}/` : parts[0]!;
};

/** Every relative import and re-export of a file inside src/ (static, type-only and dynamic alike). */
function importsOf(file: string): string[] {
  const text = readFileSync(file, "utf8");
  const specs = [...text.matchAll(/^\s*(?:import|export)\b[^;]*?\bfrom\s+"([^"]+)"|\bimport\(\s*"([^"]+)"\s*\)/gm)].map((m) => m[1] ?? m[2]!);
  return specs.filter((s) => s.startsWith(".")).map((s) => resolve(dirname(file), s)).filter((t) => t.startsWith(`${SRC}/`));
}

const files = sourceFiles(SRC);
const graph = new Map(files.map((f) => [f, importsOf(f)]));

test("every area of src/ has a layer", () => {
  const unplaced = [...new Set(files.map(areaOf))].filter((a) => LAYERS[a] === undefined);
  expect(unplaced, "add new areas to LAYERS and to docs/architecture.md").toEqual([]);
});

test("imports point down: never to a higher layer, never sideways to another area of the same layer", () => {
  const wrong: string[] = [];
  for (const [from, targets] of graph) {
    const a = areaOf(from);
    for (const to of targets) {
      const b = areaOf(to);
      if (a === b) continue;
      if (LAYERS[b]! >= LAYERS[a]!) wrong.push(`${relative(SRC, from)} (${a}, layer ${LAYERS[a]}) imports ${relative(SRC, to)} (${b}, layer ${LAYERS[b]})`);
    }
  }
  expect(wrong).toEqual([]);
});

test("no import cycles between files", () => {
  const cycles: string[] = [];
  const state = new Map<string, "open" | "done">();
  const stack: string[] = [];
  const visit = (f: string) => {
    state.set(f, "open");
    stack.push(f);
    for (const t of graph.get(f) ?? []) {
      const s = state.get(t);
      if (s === "open") cycles.push([...stack.slice(stack.indexOf(t)), t].map((x) => relative(SRC, x)).join(" -> "));
      else if (s === undefined && graph.has(t)) visit(t);
    }
    stack.pop();
    state.set(f, "done");
  };
  for (const f of files) if (!state.has(f)) visit(f);
  expect(cycles).toEqual([]);
});

test("the import reader sees the imports (a regex that stopped matching would pass everything)", () => {
  expect(graph.get(join(SRC, "vm.ts"))).toContain(join(SRC, "vcpu/vcpu.ts"));
  expect([...graph.values()].flat().length).toBeGreaterThan(200);
  expect(importsOf(join(SRC, "cli/boot.ts")).some((t) => t.endsWith("explain.ts"))).toBe(true);
});
