// scripts/provision.ts <boot|test|bench>: makes this machine ready for one purpose, then gets out of the way.
// package.json runs it before the real command (`bun run test` = provision test, then the tests).
//
//   1. JavaScript dependencies: `bun install` when node_modules is missing or older than package.json/bun.lock.
//   2. Debian packages the purpose needs, installed with apt-get when dpkg says they are missing.
//   3. Hooks: scripts that prepare guests (the guest kernel build), run when their file exists.
//
// It runs before `bun install`, so it uses Bun's built-ins only. Every step is skipped when already done:
// on a ready machine the whole script takes a few tens of milliseconds.

import { existsSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";

const ROOT = resolve(import.meta.dir, "..");
const PURPOSES = ["boot", "test", "bench"] as const;
type Purpose = (typeof PURPOSES)[number];

interface DebianPackage {
  name: string;
  /** A command the package provides, checked instead on a machine without dpkg. */
  command: string;
  why: string;
}

const BINUTILS: DebianPackage = { name: "binutils", command: "as", why: "`as` and `ld` assemble and link the probe guests" };
const E2FSPROGS: DebianPackage = { name: "e2fsprogs", command: "mkfs.ext4", why: "`mkfs.ext4 -d` makes the ext4 disk images the block-device tests use" };
const CPIO: DebianPackage = { name: "cpio", command: "cpio", why: "`cpio` packs the initramfs archives the Linux boot tests use" };
const IPROUTE2: DebianPackage = { name: "iproute2", command: "ip", why: "`ip netns` makes the network namespaces the virtio-net tests use" };
const DNSMASQ: DebianPackage = { name: "dnsmasq-base", command: "dnsmasq", why: "`dnsmasq` answers the guest kernel's DHCP request in the Linux boot test" };
const CHROMIUM: DebianPackage = { name: "chromium", command: "chromium", why: "the trace viewer test drives headless Chromium through playwright-core" };
const TMUX: DebianPackage = { name: "tmux", command: "tmux", why: "the terminal test types into `bun run boot` through a tmux pane" };
const QEMU: DebianPackage = { name: "qemu-system-x86", command: "qemu-system-x86_64", why: "the benchmarks compare kindling with QEMU's microvm machine" };

const DEBIAN_PACKAGES: Record<Purpose, DebianPackage[]> = {
  boot: [BINUTILS], // `boot --probe NAME` boots a probe guest
  test: [BINUTILS, E2FSPROGS, CPIO, IPROUTE2, DNSMASQ, CHROMIUM, QEMU, TMUX], // QEMU: the bench smoke test's side-by-side run
  bench: [BINUTILS, QEMU],
};

/** Scripts run after the packages are in place, when their file exists. Each must skip work already done. */
const HOOKS: { file: string; purposes: Purpose[]; what: string }[] = [
  { file: "guest/build.ts", purposes: ["boot", "test", "bench"], what: "guest kernel build" },
];

class ProvisionError extends Error {}

const log = (line: string) => console.log(`provision: ${line}`);

// ---- 1. JavaScript dependencies ----

/** A stamp of the dependency files' contents, written into node_modules after a successful install. */
const STAMP = join(ROOT, "node_modules", ".kindling-install-stamp");

function dependencyStamp(): string {
  const text = ["package.json", "bun.lock"].map((f) => (existsSync(join(ROOT, f)) ? readFileSync(join(ROOT, f), "utf8") : "")).join("\0");
  return Bun.hash(text).toString(16);
}

function declaredDependencies(): string[] {
  const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as Record<string, Record<string, string> | undefined>;
  return [...Object.keys(pkg.dependencies ?? {}), ...Object.keys(pkg.devDependencies ?? {})];
}

function nodeModulesReady(): boolean {
  if (!existsSync(STAMP) || readFileSync(STAMP, "utf8") !== dependencyStamp()) return false;
  return declaredDependencies().every((d) => existsSync(join(ROOT, "node_modules", d, "package.json")));
}

function ensureNodeModules(): boolean {
  if (nodeModulesReady()) return false;
  // In CI the lockfile must already match package.json: a mismatch is a mistake to report, not to fix.
  const args = process.env.CI === "true" ? ["install", "--frozen-lockfile"] : ["install"];
  log(`node_modules is missing or older than package.json/bun.lock: running bun ${args.join(" ")}`);
  const r = Bun.spawnSync([process.execPath, ...args], { cwd: ROOT, stdout: "inherit", stderr: "inherit", stdin: "ignore" });
  if (r.exitCode !== 0) throw new ProvisionError(`bun ${args.join(" ")} failed (exit ${r.exitCode})`);
  writeFileSync(STAMP, dependencyStamp());
  return true;
}

// ---- 2. Debian packages ----

/** The packages dpkg does not report as "install ok installed". */
function missingPackages(pkgs: DebianPackage[]): DebianPackage[] {
  if (pkgs.length === 0) return [];
  if (Bun.which("dpkg-query") === null) {
    // Not Debian: check for the commands instead, and let the user install them their own way.
    const missing = pkgs.filter((p) => Bun.which(p.command) === null);
    if (missing.length > 0) {
      throw new ProvisionError(
        `this is not a Debian-based system (no dpkg-query), and these commands are missing:\n` +
          missing.map((p) => `  ${p.command} (Debian package ${p.name}): ${p.why}`).join("\n") +
          "\ninstall them with your system's package manager",
      );
    }
    return [];
  }
  const r = Bun.spawnSync(["dpkg-query", "-W", "-f=${Package}\t${Status}\n", ...pkgs.map((p) => p.name)], { stdout: "pipe", stderr: "pipe" });
  // dpkg-query exits 1 when a package is unknown to it; the known ones are still printed.
  const installed = new Set(
    r.stdout.toString().split("\n").filter((l) => l.endsWith("\tinstall ok installed")).map((l) => l.split("\t")[0]!.split(":")[0]),
  );
  return pkgs.filter((p) => !installed.has(p.name));
}

function aptListsPresent(): boolean {
  try {
    return readdirSync("/var/lib/apt/lists").some((f) => f.endsWith("_Packages") || f.includes("_Packages."));
  } catch {
    return false;
  }
}

async function apt(args: string[]): Promise<{ ok: boolean; stderr: string }> {
  const p = Bun.spawn(["apt-get", ...args], {
    env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
    stdin: "ignore",
    stdout: "inherit",
    stderr: "pipe",
  });
  let stderr = "";
  for await (const chunk of p.stderr) {
    process.stderr.write(chunk);
    stderr += new TextDecoder().decode(chunk);
  }
  return { ok: (await p.exited) === 0, stderr };
}

async function aptUpdate(): Promise<void> {
  log("fetching Debian's package lists: apt-get update");
  const u = await apt(["update", "-q"]);
  if (!u.ok) throw new ProvisionError("apt-get update failed (its output is above)");
}

async function ensureDebianPackages(purpose: Purpose): Promise<DebianPackage[]> {
  const missing = missingPackages(DEBIAN_PACKAGES[purpose]);
  if (missing.length === 0) return [];
  const names = missing.map((p) => p.name);
  const reasons = missing.map((p) => `  ${p.name}: ${p.why}`).join("\n");
  if (process.getuid?.() !== 0) {
    throw new ProvisionError(
      `\`${purpose}\` needs Debian packages that are not installed:\n${reasons}\n` +
        `install them as root: sudo apt-get install --no-install-recommends ${names.join(" ")}`,
    );
  }
  log(`installing Debian packages for ${purpose}:\n${reasons}`);
  if (!aptListsPresent()) await aptUpdate();
  const install = ["install", "-y", "-q", "-o", "Dpkg::Use-Pty=0", "--no-install-recommends", ...names];
  let r = await apt(install);
  if (!r.ok && /Unable to locate package|has no installation candidate|Failed to fetch/.test(r.stderr)) {
    // Lists that are old (or empty) name versions the mirror no longer has: refresh them once and retry.
    await aptUpdate();
    r = await apt(install);
  }
  if (!r.ok) throw new ProvisionError(`apt-get install ${names.join(" ")} failed (its output is above)`);
  const still = missingPackages(missing);
  if (still.length > 0) throw new ProvisionError(`apt-get succeeded but these are still not installed: ${still.map((p) => p.name).join(" ")}`);
  return missing;
}

// ---- 3. Hooks ----

function runHooks(purpose: Purpose): void {
  for (const hook of HOOKS) {
    if (!hook.purposes.includes(purpose) || !existsSync(join(ROOT, hook.file))) continue;
    log(`${hook.what}: bun ${hook.file}`);
    const r = Bun.spawnSync([process.execPath, hook.file], { cwd: ROOT, stdout: "inherit", stderr: "inherit", stdin: "ignore" });
    if (r.exitCode !== 0) throw new ProvisionError(`${hook.what} failed: bun ${hook.file} exited with ${r.exitCode ?? r.signalCode}`);
  }
}

// ---- main ----

async function provision(purpose: Purpose): Promise<void> {
  const start = performance.now();
  const installed = ensureNodeModules();
  const debs = await ensureDebianPackages(purpose);
  const wanted = DEBIAN_PACKAGES[purpose].map((p) => p.name);
  const ms = Math.round(performance.now() - start);
  log(
    `${purpose}: JavaScript dependencies ${installed ? "installed" : "ok"}` +
      (wanted.length > 0 ? `, Debian packages ${debs.length > 0 ? "installed" : "ok"} (${wanted.join(" ")})` : "") +
      ` [${ms} ms]`,
  );
  runHooks(purpose);
}

const purpose = process.argv[2];
if (!PURPOSES.includes(purpose as Purpose) || process.argv.length > 3) {
  console.error(`usage: bun scripts/provision.ts <${PURPOSES.join("|")}>`);
  process.exit(2);
}
try {
  await provision(purpose as Purpose);
} catch (e) {
  if (!(e instanceof ProvisionError)) throw e;
  console.error(`provision: ${e.message}`);
  process.exit(1);
}
