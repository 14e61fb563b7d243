// The VM state machine (src/lifecycle.ts): its table, stated here once more from Firecracker's API so that
// a change to either shows up; the checker refuses what the table refuses; MicroVM walks through it (with
// the stand-in boot from test/support/api.ts, no KVM needed).

import { afterAll, describe, expect, test } from "bun:test";
import { rmSync } from "node:fs";
import { consola } from "consola";
import { Lifecycle, LifecycleError, VM_TRANSITIONS, validTransition, type VmState } from "../src/lifecycle.ts";
import { fakeMicroVM, fixtureFiles } from "./support/api.ts";

consola.level = -1;
const files = fixtureFiles();
afterAll(() => rmSync(files.dir, { recursive: true, force: true }));

const STATES: VmState[] = ["Not started", "Starting", "Running", "Paused", "Stopped"];

describe("the transition table", () => {
  test("allows exactly Firecracker's transitions", () => {
    const allowed = STATES.flatMap((from) => STATES.filter((to) => validTransition(from, to)).map((to) => `${from} -> ${to}`));
    expect(allowed).toEqual([
      "Not started -> Starting", // InstanceStart (MicroVM)
      "Not started -> Running", // Vm.start(): a Vm has no configuration phase to close
      "Not started -> Stopped", // stopped before it ever ran
      "Starting -> Not started", // the boot failed: configure and try again
      "Starting -> Running",
      "Starting -> Stopped",
      "Running -> Running", // PATCH /vm Resumed on a running VM: succeeds, changes nothing
      "Running -> Paused",
      "Running -> Stopped",
      "Paused -> Running",
      "Paused -> Paused",
      "Paused -> Stopped",
    ]);
    expect(VM_TRANSITIONS.Stopped).toEqual([]);
  });

  test("Lifecycle refuses what the table refuses and keeps its state", () => {
    const l = new Lifecycle();
    expect(l.state).toBe("Not started");
    expect(() => l.to("Paused")).toThrow(new LifecycleError("Not started", "Paused"));
    expect(l.state).toBe("Not started");
    expect(l.to("Running")).toBe("Not started");
    expect(l.to("Paused")).toBe("Running");
    expect(l.can("Starting")).toBe(false);
    l.to("Stopped");
    for (const s of STATES) expect(() => l.to(s)).toThrow('a VM cannot go from "Stopped"');
  });
});

describe("MicroVM follows the table", () => {
  test("Not started -> Starting -> Running <-> Paused -> Stopped", async () => {
    const vm = fakeMicroVM({ "boot-source": { kernel_image_path: files.kernel } });
    expect(vm.state).toBe("Not started");
    expect(() => vm.pause()).toThrow("has not started");
    const starting = vm.start();
    expect(vm.state).toBe("Starting");
    await starting;
    expect(vm.state).toBe("Running");
    vm.pause();
    vm.pause();
    expect(vm.state).toBe("Paused");
    vm.resume();
    expect(vm.state).toBe("Running");
    await vm.stop();
    expect(vm.state).toBe("Stopped");
    expect(() => vm.resume()).toThrow("has stopped");
    await expect(vm.start()).rejects.toThrow("already been started");
  });

  test("a failed boot goes back to Not started; a stop before start ends in Stopped", async () => {
    const vm = fakeMicroVM({}, { boot: () => Promise.reject(new Error("no kernel")) });
    vm.setBootSource({ kernel_image_path: files.kernel });
    await expect(vm.start()).rejects.toThrow("InstanceStart failed: no kernel");
    expect(vm.state).toBe("Not started");
    await vm.stop();
    expect(vm.state).toBe("Stopped");
  });
});
