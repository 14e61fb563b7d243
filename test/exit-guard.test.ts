// However `kindling api` ends (SIGINT, SIGTERM once or twice, SIGHUP, a crash), its API socket file is
// removed and the terminal restored (src/cli/exit-guard.ts). The restore itself is one of the cleanups
// checked here through a marker; the CLI runs here without a terminal.

import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawnKindling } from "./support/api.ts";
import { waitFor } from "./support/virtio-driver.ts";

const dir = mkdtempSync(join(tmpdir(), "kindling-exit-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;

async function apiProcess() {
  const sock = join(dir, `api-${n++}.sock`);
  const p = spawnKindling(["api", "--api-sock", sock]);
  await waitFor(() => existsSync(sock), "the API socket", 15_000);
  return { p, sock };
}

describe("kindling api removes its socket however it is stopped", () => {
  for (const signals of [["SIGINT"], ["SIGTERM"], ["SIGHUP"], ["SIGTERM", "SIGTERM"], ["SIGINT", "SIGINT"]] as const) {
    test(signals.join(" then "), async () => {
      const { p, sock } = await apiProcess();
      for (const s of signals) p.kill(s);
      const code = await Promise.race([p.exited, Bun.sleep(10_000).then(() => "hung")]);
      if (code === "hung") p.kill("SIGKILL");
      expect(code).not.toBe("hung");
      expect(existsSync(sock)).toBe(false);
    }, 30_000);
  }
});

describe("guardExit", () => {
  for (const [what, crash] of [
    ["an uncaught exception", "setTimeout(() => { throw new Error('boom'); }, 10);"],
    ["an unhandled rejection", "setTimeout(() => { Promise.reject(new Error('boom')); }, 10);"],
  ] as const) {
    test(`${what}: the cleanups run, exit status 1`, async () => {
      const marker = join(dir, `marker-${n++}`);
      const script = join(dir, `crash-${n++}.ts`);
      writeFileSync(script, `
        import { guardExit } from ${JSON.stringify(join(import.meta.dir, "../src/cli/exit-guard.ts"))};
        import { writeFileSync } from "node:fs";
        guardExit(() => {}, [() => writeFileSync(${JSON.stringify(marker)}, "terminal restored"), () => writeFileSync(${JSON.stringify(marker)}, " socket removed", { flag: "a" })]);
        ${crash}
        setTimeout(() => {}, 5000);`);
      const p = Bun.spawn([process.execPath, script], { stdout: "pipe", stderr: "pipe" });
      expect(await p.exited).toBe(1);
      expect(readFileSync(marker, "utf8")).toBe("terminal restored socket removed");
      expect(await new Response(p.stderr).text()).toContain("boom");
    });
  }
});
