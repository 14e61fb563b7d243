// Tests that need /dev/kvm use `kvmTest` instead of `test` (see gated.ts for what that means).

import { gatedTest, type GatedTest } from "./gated.ts";
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

export const kvmTest: GatedTest = gatedTest("KVM", KVM_MISSING);
