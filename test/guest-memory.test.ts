// Guest RAM as the VM allocates it (src/memory.ts): left out of the VMM's core dumps.

import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { allocateGuestMemory, freeGuestMemory } from "../src/memory.ts";

/** The VmFlags line of the /proc/self/smaps entry that holds `addr` (the kernel may merge it with a neighbour). */
function vmFlags(addr: number): string[] {
  const smaps = readFileSync("/proc/self/smaps", "utf8").split("\n");
  const start = smaps.findIndex((l) => {
    const m = /^([0-9a-f]+)-([0-9a-f]+) /.exec(l);
    return m !== null && parseInt(m[1]!, 16) <= addr && addr < parseInt(m[2]!, 16);
  });
  if (start < 0) throw new Error(`no mapping at 0x${addr.toString(16)} in /proc/self/smaps`);
  for (let i = start + 1; i < smaps.length && !/^[0-9a-f]+-/.test(smaps[i]!); i++) {
    if (smaps[i]!.startsWith("VmFlags:")) return smaps[i]!.slice(8).trim().split(/\s+/);
  }
  throw new Error("no VmFlags line");
}

test("guest RAM is mapped with MADV_DONTDUMP (VmFlags dd)", () => {
  const mem = allocateGuestMemory([{ gpa: 0, size: 2 << 20 }, { gpa: 4 << 20, size: 1 << 20 }]);
  try {
    for (const r of mem.regions) expect(vmFlags(r.hostAddr!)).toContain("dd");
  } finally {
    freeGuestMemory(mem);
  }
});
