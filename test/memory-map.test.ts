// docs/memory-map.md and src/arch/x86_64/layout.ts must agree: the tables in the doc name every address and
// port constant with the value the layout module gives it (the doc explains how a row names a value).

import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import * as layout from "../src/arch/x86_64/layout.ts";

const DOC = new URL("../docs/memory-map.md", import.meta.url);
const UNITS: Record<string, number> = { B: 1, KiB: 2 ** 10, MiB: 2 ** 20, GiB: 2 ** 30 };

/** "0x0000_0500", "8193 B", "4 KiB", "32", "0x3f8-0x3ff" (its first number); undefined for "—" or text. */
function parseNumber(cell: string): number | undefined {
  const s = cell.replace(/`/g, "").trim();
  const hex = s.match(/^0x([0-9a-f_]+)(-0x[0-9a-f]+)?$/i);
  if (hex) return parseInt(hex[1]!.replace(/_/g, ""), 16);
  const sized = s.match(/^(\d+) (B|KiB|MiB|GiB)$/);
  if (sized) return Number(sized[1]) * UNITS[sized[2]!]!;
  return /^\d+$/.test(s) ? Number(s) : undefined;
}

/** The rows of the markdown table whose header row starts with `| first |`, as arrays of cells. */
function tableRows(md: string, first: string): string[][] {
  const lines = md.split("\n");
  const at = lines.findIndex((l) => l.startsWith(`| ${first} |`));
  if (at < 0) throw new Error(`no table starting with "| ${first} |"`);
  const rows: string[][] = [];
  for (const l of lines.slice(at + 2)) {
    if (!l.startsWith("|")) break;
    rows.push(l.slice(1, -1).split("|").map((c) => c.trim()));
  }
  return rows;
}

interface Named {
  name: string;
  value: number | undefined;
  row: string;
}

/** Each constant a row names, with the value the row gives it (by suffix, or written out as NAME = value). */
function namedConstants(row: { label: string; start?: number; end?: number; size?: number }, cell: string): Named[] {
  return cell.split(",").map((c) => c.trim()).filter(Boolean).map((c) => {
    const [name, explicit] = c.split("=").map((p) => p.trim()) as [string, string | undefined];
    let value: number | undefined;
    if (explicit !== undefined) value = parseNumber(explicit);
    else if (/_(START|ADDRESS|PORT)$/.test(name)) value = row.start;
    else if (/_END$/.test(name)) value = row.end;
    else if (/_SIZE$/.test(name)) value = row.size;
    return { name, value, row: row.label };
  });
}

function docConstants(md: string): { regions: Named[]; ports: Named[]; rows: { label: string; start?: number; end?: number; size?: number }[] } {
  const rows = tableRows(md, "region").map(([label, start, end, size]) => ({
    label: label!, start: parseNumber(start!), end: parseNumber(end!), size: parseNumber(size!), cell: "",
  }));
  const regionCells = tableRows(md, "region").map((r) => r[5] ?? "");
  const regions = rows.flatMap((r, i) => namedConstants(r, regionCells[i]!));
  const ports = tableRows(md, "ports").flatMap(([ports, label, cell]) => namedConstants({ label: label!, start: parseNumber(ports!) }, cell ?? ""));
  return { regions, ports, rows };
}

const numeric = Object.entries(layout).filter((e): e is [string, number] => typeof e[1] === "number");
const addressConstants = numeric.filter(([k]) => /_(START|END|ADDRESS|POINTER)$/.test(k)).map(([k]) => k);
const portConstants = numeric.filter(([k]) => /_PORT$/.test(k)).map(([k]) => k);

describe("docs/memory-map.md against layout.ts", () => {
  const md = readFileSync(DOC, "utf8");
  const { regions, ports, rows } = docConstants(md);

  test("the parser reads the tables (a table that vanished would make the rest pass vacuously)", () => {
    expect(rows.length).toBeGreaterThan(20);
    expect(addressConstants.length).toBeGreaterThan(20);
    expect(parseNumber("0x1_0000_0000")).toBe(2 ** 32);
    expect(parseNumber("8193 B")).toBe(8193);
    expect(parseNumber("—")).toBeUndefined();
  });

  test("every address constant is in the regions table, every port constant in the ports table", () => {
    const named = new Set(regions.map((n) => n.name));
    expect(addressConstants.filter((k) => !named.has(k))).toEqual([]);
    const portNames = new Set(ports.map((n) => n.name));
    expect(portConstants.filter((k) => !portNames.has(k))).toEqual([]);
  });

  test("every constant the tables name exists in layout.ts with the value the table gives it", () => {
    const actual = new Map(numeric);
    const wrong = [...regions, ...ports]
      .filter((n) => actual.get(n.name) === undefined || n.value !== actual.get(n.name))
      .map((n) => `${n.name} (row "${n.row}"): table ${n.value === undefined ? "gives no value" : `0x${n.value.toString(16)}`}, layout.ts ${actual.has(n.name) ? `0x${actual.get(n.name)!.toString(16)}` : "has no such constant"}`);
    expect(wrong).toEqual([]);
  });

  test("rows are in ascending order and each size is end - start", () => {
    const starts = rows.map((r) => r.start!);
    expect(starts).toEqual([...starts].sort((a, b) => a - b));
    const bad = rows.filter((r) => r.end !== undefined && r.size !== r.end - r.start!).map((r) => r.label);
    expect(bad).toEqual([]);
  });

  test("a changed table is caught: a wrong value and a missing constant both fail", () => {
    const broken = md.replace("| 0x0000_7000 | 0x0000_8000 | 4 KiB |", "| 0x0000_7100 | 0x0000_8000 | 3840 B |").replace("KVM_TSS_ADDRESS, ", "");
    const b = docConstants(broken);
    const zero = b.regions.find((n) => n.name === "ZERO_PAGE_START")!;
    expect(zero.value).not.toBe(layout.ZERO_PAGE_START);
    expect(b.regions.some((n) => n.name === "KVM_TSS_ADDRESS")).toBe(false);
  });
});
