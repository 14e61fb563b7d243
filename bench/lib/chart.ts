// The results as an SVG picture (bench/results/latest.svg): one panel per headline figure, a bar for
// kindling and one for QEMU, each labelled with its value, so the chart reads without the JSON.
// Written by hand: SVG is text, and a few rectangles need no charting library.

import type { Row } from "./report.ts";
import { round } from "./stats.ts";

const COLORS = { kindling: "#d9480f", qemu: "#1864ab" };
const PANEL_W = 440;
const PANEL_H = 104;
const COLUMNS = 2;
const MARGIN = 20;
const HEADER_H = 108;
const LABEL_W = 70;
const BAR_H = 18;

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

function text(x: number, y: number, s: string, attrs = ""): string {
  return `<text x="${x}" y="${y}" ${attrs}>${esc(s)}</text>`;
}

function panel(row: Row, x: number, y: number): string {
  const bars = ([["kindling", row.kindling], ["QEMU", row.qemu]] as const).filter(([, v]) => v !== undefined && Number.isFinite(v)) as [string, number][];
  const max = Math.max(...bars.map(([, v]) => v), 1e-9);
  const barMax = PANEL_W - LABEL_W - 90;
  const parts = [
    `<rect x="${x}" y="${y}" width="${PANEL_W}" height="${PANEL_H}" fill="#f8f9fa" stroke="#dee2e6"/>`,
    text(x + 10, y + 20, row.title ?? row.metric.trim(), `font-size="13" font-weight="bold"`),
    text(x + 10, y + PANEL_H - 8, `${row.unit}, ${row.better} is better${row.note ? `; ${row.note}` : ""}`, `font-size="11" fill="#495057"`),
  ];
  bars.forEach(([name, v], i) => {
    const by = y + 34 + i * (BAR_H + 8);
    const w = Math.max(1, (v / max) * barMax);
    const color = name === "kindling" ? COLORS.kindling : COLORS.qemu;
    parts.push(text(x + 10, by + 13, name, `font-size="12"`));
    parts.push(`<rect x="${x + LABEL_W}" y="${by}" width="${w.toFixed(1)}" height="${BAR_H}" fill="${color}"/>`);
    parts.push(text(x + LABEL_W + w + 6, by + 13, `${round(v)} ${row.unit}`, `font-size="12"`));
  });
  if (bars.length === 1) parts.push(text(x + 10, y + 34 + BAR_H + 21, "QEMU: no comparable figure (a VM is a process)", `font-size="11" fill="#868e96"`));
  if (row.target) {
    parts.push(text(x + PANEL_W - 10, y + PANEL_H - 8, `target ${row.target.text}: ${row.target.met ? "met" : "missed"}`,
      `font-size="11" text-anchor="end" fill="${row.target.met ? "#2b8a3e" : "#c92a2a"}"`));
  }
  return parts.join("\n");
}

export function renderChart(rows: Row[], header: { title: string; lines: string[] }): string {
  const shown = rows.filter((r) => r.chart && r.kindling !== undefined);
  const rowsOfPanels = Math.ceil(shown.length / COLUMNS);
  const width = MARGIN * 2 + COLUMNS * PANEL_W + (COLUMNS - 1) * MARGIN;
  const height = HEADER_H + rowsOfPanels * (PANEL_H + MARGIN) + MARGIN;
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    text(MARGIN, 30, header.title, `font-size="18" font-weight="bold"`),
    ...header.lines.map((l, i) => text(MARGIN, 50 + i * 15, l, `font-size="11" fill="#495057"`)),
  ];
  shown.forEach((row, i) => {
    const x = MARGIN + (i % COLUMNS) * (PANEL_W + MARGIN);
    const y = HEADER_H + Math.floor(i / COLUMNS) * (PANEL_H + MARGIN);
    out.push(panel(row, x, y));
  });
  out.push("</svg>");
  return `${out.join("\n")}\n`;
}
