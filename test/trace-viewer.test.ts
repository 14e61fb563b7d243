// The exit-trace viewer (`kindling trace view`) in headless Chromium: the page loads a recorded trace, shows
// the right counts, filters by device, zooms, and opens one exit's details from the list and from the
// timeline. Chromium is Debian's `chromium` package, driven by playwright-core; `bun run test` provisions it.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium, type BrowserContext, type Page } from "playwright-core";
import { serveTrace, type TraceServer } from "../src/trace/server.ts";
import { isExit, readTrace, type TraceExit } from "../src/trace/format.ts";

const CHROMIUM = "/usr/bin/chromium";
const FIXTURE = join(import.meta.dir, "fixtures", "traces", "linux-quiet.jsonl");
const exits = readTrace(FIXTURE).records.filter(isExit);
const count = (f: (e: TraceExit) => boolean) => exits.filter(f).length;

let server: TraceServer;
let context: BrowserContext;
let page: Page;
const shots = mkdtempSync(join(tmpdir(), "kindling-viewer-"));

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: \`bun run test\` provisions it (Debian package chromium)`);
  server = serveTrace(FIXTURE);
  context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), "kindling-chromium-")), {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1400, height: 900 },
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  page = await context.newPage();
  await page.goto(server.url);
  await page.waitForSelector("#counts tbody tr");
}, 60_000);

afterAll(async () => {
  await context?.close();
  server?.stop();
});

/** The counts table as "device register dir" -> exits. */
async function countsShown(): Promise<Map<string, number>> {
  const rows = await page.$$eval("#counts tbody tr", (trs) => trs.map((tr) => [...tr.querySelectorAll("td")].map((td) => td.textContent ?? "")));
  return new Map(rows.map(([device, register, dir, n]) => [`${device} ${register} ${dir}`, Number(n)]));
}

describe("trace viewer", () => {
  test("the summary and the counts per device register match the trace", async () => {
    expect(await page.textContent("#summary")).toStartWith(`${exits.length} exits on 1 vCPU(s)`);
    expect(await page.textContent("#shown")).toBe(`showing ${exits.length} of ${exits.length} exits`);
    const counts = await countsShown();
    expect(counts.get("8250 THR out")).toBe(count((e) => e.device === "8250" && e.register === "THR"));
    expect(counts.get("8250 LSR in")).toBe(count((e) => e.device === "8250" && e.register === "LSR"));
    expect(counts.get("virtio-blk Status read")).toBe(count((e) => e.device === "virtio-blk" && e.register === "Status" && e.dir === "read"));
    expect(counts.get("i8042 COMMAND out")).toBe(1);
    expect([...counts.values()].reduce((a, b) => a + b, 0)).toBe(exits.length);
  });

  test("a device filter hides its exits from the counts, the list and the timeline", async () => {
    const uart = count((e) => e.device === "8250");
    await page.uncheck('#filter-devices input[value="8250"]');
    expect(await page.textContent("#shown")).toBe(`showing ${exits.length - uart} of ${exits.length} exits`);
    expect([...(await countsShown()).keys()].some((k) => k.startsWith("8250 "))).toBe(false);
    expect(await page.$$eval("#exits tbody tr", (trs) => trs.length)).toBe(exits.length - uart);
    await page.screenshot({ path: join(shots, "filtered.png"), fullPage: true });
    await page.check('#filter-devices input[value="8250"]');
    expect(await page.textContent("#shown")).toBe(`showing ${exits.length} of ${exits.length} exits`);
  });

  test("a register row narrows the list; an exit in the list opens its details", async () => {
    await page.click('#counts tbody tr[data-key="virtio-rng|DeviceID|read"]');
    expect(await page.$$eval("#exits tbody tr", (trs) => trs.length)).toBe(1);
    await page.click("#exits tbody tr");
    const rec = exits.find((e) => e.device === "virtio-rng" && e.register === "DeviceID")!;
    const details = await page.textContent("#details");
    expect(details).toContain(`trace line ${rec.line}`);
    expect(details).toContain("registerDeviceID");
    expect(details).toContain("data0x4 (4)"); // VIRTIO_ID_RNG
    await page.click('#counts tbody tr[data-key="virtio-rng|DeviceID|read"]'); // clear the narrowing
  });

  test("the timeline zooms, and a click on an exit's tick selects it", async () => {
    const before = await page.textContent("#window");
    await page.click("#zoom-in");
    expect(await page.textContent("#window")).not.toBe(before);
    await page.click("#zoom-reset");
    expect(await page.textContent("#window")).toBe(before);
    // The reset is the last exit, 1 ms after the status read before it: zoom in on it with the wheel until
    // the two are far apart, then click its tick.
    const last = exits.at(-1)!;
    const box = (await page.locator("#timeline").boundingBox())!;
    const xOf = async () => (await page.evaluate(`xOf(${last.t}, document.getElementById("timeline").clientWidth)`)) as number;
    const laneY = box.y + 22 + 15;
    for (let round = 0; round < 4; round++) {
      await page.mouse.move(box.x + (await xOf()), laneY); // aim again: a pixel is a long time when zoomed out
      for (let i = 0; i < 10; i++) await page.mouse.wheel(0, -100);
    }
    const [a, b] = ((await page.textContent("#window")) ?? "").split(" – ").map(parseFloat);
    expect(b! - a!).toBeLessThan(100); // ms: zoomed in from the whole 215 s
    await page.mouse.click(box.x + (await xOf()) + 0.5, laneY);
    expect(await page.textContent("#details")).toContain("registerCOMMAND");
    await page.screenshot({ path: join(shots, "selected.png"), fullPage: true });
    console.log(`trace viewer screenshots: ${shots}`);
  });
});
