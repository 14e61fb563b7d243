// The life of a VM, as one state machine shared by Vm (src/vm.ts) and MicroVM (src/microvm.ts).
//
//   Not started --start--> Starting --booted--> Running <--pause/resume--> Paused
//        |                    |  \                 |                         |
//        |                    |   `--boot failed--> Not started              |
//        `--------------------+-------------------------> Stopped <----------'
//
// The states are Firecracker's InstanceInfo.state ("Not started", "Running", "Paused"), plus "Starting"
// (between InstanceStart and the vCPUs running: configuration is closed, the VM not yet up) and "Stopped"
// (the VM ended, from inside or from outside; no way back, as in Firecracker, whose process exits).
// The transitions are those Firecracker's API allows: InstanceStart once, from "Not started"; PATCH /vm
// Paused or Resumed only once started (both idempotent: pausing a paused VM succeeds and changes nothing);
// any state may end in "Stopped", and a VmEnd says how. cloud-hypervisor keeps the same kind of table
// (VmState::valid_transition).

/** How a VM ended. `reason` is stable, for code; `message` is for people. */
export interface VmEnd {
  reason: "halt" | "reset" | "poweroff" | "shutdown" | "crash" | "stopped" | "error";
  message: string;
  vcpu?: number;
  /** Register dump at the exit, for the reasons that are failures. */
  registers?: string;
}

export type VmState = "Not started" | "Starting" | "Running" | "Paused" | "Stopped";

/** For each state, the states it may go to. A state listed as its own successor is an allowed no-op. */
export const VM_TRANSITIONS: Readonly<Record<VmState, readonly VmState[]>> = {
  "Not started": ["Starting", "Running", "Stopped"],
  Starting: ["Running", "Not started", "Stopped"],
  Running: ["Running", "Paused", "Stopped"],
  Paused: ["Paused", "Running", "Stopped"],
  Stopped: [],
};

export function validTransition(from: VmState, to: VmState): boolean {
  return VM_TRANSITIONS[from].includes(to);
}

/** A transition the table does not allow. */
export class LifecycleError extends Error {
  constructor(
    readonly from: VmState,
    readonly to: VmState,
  ) {
    super(`a VM cannot go from "${from}" to "${to}"`);
    this.name = "LifecycleError";
  }
}

/** One VM's current state; every change goes through the table. */
export class Lifecycle {
  private current: VmState = "Not started";

  get state(): VmState {
    return this.current;
  }

  /** Whether `to` is allowed from here. */
  can(to: VmState): boolean {
    return validTransition(this.current, to);
  }

  /** Go to `to`, or throw LifecycleError if the table does not allow it. Returns the state left. */
  to(to: VmState): VmState {
    const from = this.current;
    if (!validTransition(from, to)) throw new LifecycleError(from, to);
    this.current = to;
    return from;
  }
}
