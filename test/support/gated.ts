// Tests that need something of the host (/dev/kvm, network namespaces) are declared with a gated test
// function. Where the host lacks it they fail loudly under CI=true (CI must run them) and are skipped with
// a printed reason elsewhere (a laptop without KVM).

import { test } from "bun:test";

export type GatedTest = (name: string, fn: () => Promise<void> | void, timeout?: number) => void;

/** A test function for tests needing `what`; `missing` says why the host cannot run them, or is undefined. */
export function gatedTest(what: string, missing: string | undefined): GatedTest {
  let told = false;
  return (name, fn, timeout) => {
    if (missing && process.env.CI !== "true") {
      if (!told) {
        console.warn(`[kindling tests] skipping tests that need ${what}: ${missing}`);
        told = true;
      }
      test.skip(name, fn);
      return;
    }
    test(
      name,
      async () => {
        if (missing) throw new Error(`this test needs ${what} and CI=true: ${missing}`);
        await fn();
      },
      timeout,
    );
  };
}
