// The virtio fuzzer (test/fuzz/virtio.ts) at a suite-sized count: hostile descriptor chains, register and
// configuration writes and resets at any moment against blk, net, vsock and rng. No exception may escape,
// no guest-memory access may fall outside RAM, and every notify stays within a fixed number of accesses.
// The full run (`bun test/fuzz/virtio.ts --cases 1000000`) is the same code with more cases.
//
// The seed is printed; KINDLING_FUZZ_SEED=<n> replays a run.

import { describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DEVICE_KINDS, fuzzDevice, MAX_ACCESSES_PER_NOTIFY, report } from "./fuzz/virtio.ts";

const SEED = Number(process.env.KINDLING_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 32));
const CASES_PER_DEVICE = 10_000;

describe(`virtio fuzz (seed ${SEED}; replay with KINDLING_FUZZ_SEED=${SEED})`, () => {
  for (const [i, kind] of DEVICE_KINDS.entries()) {
    test(`${kind}: ${CASES_PER_DEVICE} hostile cases`, async () => {
      const dir = mkdtempSync(join(existsSync("/dev/shm") ? "/dev/shm" : tmpdir(), "kindling-fuzz-test-"));
      try {
        const r = await fuzzDevice(kind, (SEED + i) >>> 0, CASES_PER_DEVICE, dir);
        console.log(report([r]).split("\n")[0]);
        expect(r.escaped).toEqual([]);
        expect(r.outOfRange).toBe(0);
        expect(r.worstAccesses).toBeLessThanOrEqual(MAX_ACCESSES_PER_NOTIFY);
        // The run reached both outcomes: chains used, and the device refusing a broken queue.
        expect(r.used).toBeGreaterThan(CASES_PER_DEVICE / 10);
        expect(r.needsReset).toBeGreaterThan(CASES_PER_DEVICE / 20);
        expect(r.running).toBeGreaterThan(CASES_PER_DEVICE / 4);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }, 20_000);
  }
});
