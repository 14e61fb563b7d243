// Tests that need /dev/kvm use `kvmTest` instead of `test`. Where KVM is missing they fail loudly under
// CI=true (CI must run them) and are skipped with a printed reason elsewhere (a laptop without KVM).

import { test } from "bun:test";
import { existsSync, accessSync, constants } from "node:fs";

function kvmMissingReason(): string | undefined {
  if (!existsSync("/dev/kvm")) return "/dev/kvm does not exist";
  try {
    accessSync("/dev/kvm", constants.R_OK | constants.W_OK);
  } catch {
    return "/dev/kvm is not readable and writable by this user";
  }
  return undefined;
}

export const KVM_MISSING = kvmMissingReason();
let told = false;

export function kvmTest(name: string, fn: () => Promise<void> | void, timeout?: number): void {
  if (KVM_MISSING && process.env.CI !== "true") {
    if (!told) {
      console.warn(`[kindling tests] skipping tests that need KVM: ${KVM_MISSING}`);
      told = true;
    }
    test.skip(name, fn);
    return;
  }
  test(
    name,
    async () => {
      if (KVM_MISSING) throw new Error(`this test needs /dev/kvm and CI=true: ${KVM_MISSING}`);
      await fn();
    },
    timeout,
  );
}
