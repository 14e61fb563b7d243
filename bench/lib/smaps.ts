// A process's memory from /proc/<pid>/smaps, the way Firecracker's memory test counts VMM overhead
// (tests/host_tools/memory.py: the sum of every mapping's Rss except the guest's memory). Besides Rss it
// sums Pss (shared pages divided among the processes that map them, so a Bun binary shared by several
// processes counts once in total) and Private_Dirty (pages only this process has written: the memory it
// really costs). Values in KiB, as smaps reports them (proc(5)).

import { closeSync, openSync, readFileSync, readSync } from "node:fs";

export interface Mapping {
  start: number;
  end: number;
  perms: string;
  path: string;
  /** Size, Rss, Pss, Private_Dirty, ... in KiB. */
  kib: Record<string, number>;
}

export function readSmaps(pid: number): Mapping[] {
  const maps: Mapping[] = [];
  for (const line of readFileSync(`/proc/${pid}/smaps`, "utf8").split("\n")) {
    const header = /^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (header) {
      maps.push({ start: parseInt(header[1]!, 16), end: parseInt(header[2]!, 16), perms: header[3]!, path: header[4]!, kib: {} });
      continue;
    }
    const field = /^(\w+):\s+(\d+) kB$/.exec(line);
    if (field && maps.length > 0) maps[maps.length - 1]!.kib[field[1]!] = Number(field[2]);
  }
  return maps;
}

export interface Overhead {
  rssKiB: number;
  pssKiB: number;
  privateDirtyKiB: number;
  /** What was left out: resident guest RAM. */
  guestRssKiB: number;
  /** Firecracker's own rule: leave out every mapping at least as large as guest RAM. */
  firecrackerRuleRssKiB: number;
}

const PAGE = 4096;
/** /proc/<pid>/pagemap: one 64-bit entry per virtual page, bit 63 = present in RAM (kernel pagemap.rst). */
const PM_PRESENT = 1n << 63n;

/**
 * KiB of [start, end) that are resident, from /proc/<pid>/pagemap. The kernel may merge guest RAM with
 * a neighbouring anonymous mapping into one smaps entry, so the guest's part is counted page by page.
 */
export function residentKiB(pid: number, start: number, end: number): number {
  const fd = openSync(`/proc/${pid}/pagemap`, "r");
  try {
    const pages = (end - start) / PAGE;
    const buf = Buffer.alloc(pages * 8);
    readSync(fd, buf, 0, buf.length, (start / PAGE) * 8);
    let present = 0;
    for (let i = 0; i < pages; i++) if (buf.readBigUInt64LE(i * 8) & PM_PRESENT) present++;
    return (present * PAGE) / 1024;
  } finally {
    closeSync(fd);
  }
}

/**
 * Sum a process's mappings less guest RAM. `guestKiB(m)` says how much of mapping m's Rss is guest RAM:
 * kindling reports its guest RAM's addresses (counted with residentKiB); for QEMU it is the whole Rss of the
 * mapping exactly as large as guest RAM. Guest pages are private and written, so they are taken off Rss,
 * Pss and Private_Dirty alike.
 */
export function overhead(maps: Mapping[], guestKiB: (m: Mapping) => number, guestMemBytes: number): Overhead {
  const o: Overhead = { rssKiB: 0, pssKiB: 0, privateDirtyKiB: 0, guestRssKiB: 0, firecrackerRuleRssKiB: 0 };
  for (const m of maps) {
    const rss = m.kib.Rss ?? 0;
    if (m.end - m.start < guestMemBytes) o.firecrackerRuleRssKiB += rss;
    const g = Math.min(guestKiB(m), rss);
    o.guestRssKiB += g;
    o.rssKiB += rss - g;
    o.pssKiB += Math.max(0, (m.kib.Pss ?? 0) - g);
    o.privateDirtyKiB += Math.max(0, (m.kib.Private_Dirty ?? 0) - g);
  }
  return o;
}
