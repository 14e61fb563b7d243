// The boot steps are declared once (src/boot/steps.ts) and told in three places: docs/boot-sequence.md's
// numbered headings, the header of src/boot/linux.ts, and the `explain` calls in bootLinux. This test keeps
// the three in step with the declaration, as test/memory-map.test.ts does for the memory map.

import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { BOOT_STEP_COUNT, BOOT_STEPS, type BootStepNumber } from "../src/boot/steps.ts";

const read = (path: string) => readFileSync(new URL(path, import.meta.url), "utf8");
const numbers = Object.keys(BOOT_STEPS).map(Number) as BootStepNumber[];

test("the steps are numbered 1..N without gaps", () => {
  expect(numbers).toEqual(Array.from({ length: BOOT_STEP_COUNT }, (_, i) => i + 1) as BootStepNumber[]);
});

test("docs/boot-sequence.md has one heading per step, in order, as declared", () => {
  const headings = [...read("../docs/boot-sequence.md").matchAll(/^## (\d+)\. (.+?)(?: \(\[.*)?$/gm)].map((m) => `${m[1]}. ${m[2]}`);
  expect(headings).toEqual(numbers.map((n) => `${n}. ${BOOT_STEPS[n].heading}`));
});

test("src/boot/linux.ts's header lists the steps by their titles", () => {
  const src = read("../src/boot/linux.ts");
  const header = src.slice(0, src.indexOf("\nimport "));
  const listed = [...header.matchAll(/^\/\/ {3}(\d+)\. (.+)$/gm)].map((m) => [Number(m[1]), m[2]!] as const);
  expect(listed.map(([n]) => n)).toEqual(numbers);
  for (const [n, line] of listed) expect(line.startsWith(BOOT_STEPS[n as BootStepNumber].title), `step ${n}: "${line}"`).toBe(true);
});

test("bootLinux reports every step, in order", () => {
  const calls = [...read("../src/boot/linux.ts").matchAll(/\bexplain\((\d+),/g)].map((m) => Number(m[1]));
  expect(calls).toEqual(numbers);
});
