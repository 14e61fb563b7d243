// scripts/cloud-kernel.ts: run a command with Debian's own cloud kernel, unmodified, as a guest.
//
//   bun run cloud-kernel [-- CMD ARGS...]     (default command: uname -r, then a line of output)
//
// Opt-in, not part of `bun run test`: on a host that emulates guest kernel code it takes several minutes.
// It shows that the syscall assist (src/arch/x86_64/syscall-assist.ts) needs nothing from the guest kernel:
//   1. `apt-get download` the package linux-image-cloud-amd64 depends on, into the kindling cache;
//   2. `dpkg-deb -x` it and take /boot/vmlinuz-*, a bzImage;
//   3. extract the ELF vmlinux from it on the host: the setup header's payload_offset/payload_length
//      (Linux boot protocol 2.08+) locate the compressed kernel, decompressed here by its magic (gzip, xz,
//      zstd, lz4), so the guest does not spend minutes of emulated CPL0 code decompressing itself;
//   4. exec() the command with that kernel and kindling's initramfs (busybox and guest/init.sh), adding
//      CLOUD_BOOT_ARGS to the command line.

import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { StructView } from "../src/kvm/struct.ts";
import { setup_header } from "../src/arch/x86_64/boot-params.ts";
import { parseSetupHeader } from "../src/loader/bzimage.ts";
import { exec } from "../src/exec.ts";
import { guestCacheDir } from "../guest/cache.ts";
import { buildGuest } from "../guest/build.ts";

const log = (line: string) => console.error(`[cloud-kernel] ${line}`);

/**
 * Kernel command-line words for this kernel, which is built for hardware (kernel-parameters.txt):
 *  - mitigations=off: Debian's kernel routes every indirect call and return through speculation thunks
 *    (retpolines, the SRSO return thunk on AMD); on an emulating host each is more CPL0 instructions to
 *    emulate, and they protect nothing there, where the guest kernel does not run on the CPU;
 *  - nowatchdog: at emulated speed an initcall can run for minutes, and each soft-lockup report then
 *    symbolizes a stack trace, more slow CPL0 work;
 *  - cryptomgr.notests: the crypto self-tests run RSA private-key operations with big-number arithmetic
 *    (mpihelp_submul_1 was where a sampled boot spent minutes).
 */
const CLOUD_BOOT_ARGS = "mitigations=off nowatchdog cryptomgr.notests";

function run(cmd: string[], cwd?: string): string {
  const r = Bun.spawnSync(cmd, { cwd, stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${cmd.join(" ")} failed: ${r.stderr.toString()}`);
  return r.stdout.toString();
}

/** The versioned image package the metapackage points at, e.g. linux-image-6.1.0-50-cloud-amd64. */
function imagePackage(): string {
  const deps = run(["apt-cache", "depends", "linux-image-cloud-amd64"]);
  const m = /Depends: (linux-image-[^\s]+-cloud-amd64)/.exec(deps);
  if (!m) throw new Error(`apt-cache depends linux-image-cloud-amd64 names no image package:\n${deps}`);
  return m[1]!;
}

const MAGICS: { name: string; magic: number[]; cmd: string[] }[] = [
  { name: "gzip", magic: [0x1f, 0x8b], cmd: ["gzip", "-dc"] },
  { name: "xz", magic: [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00], cmd: ["xz", "-dc"] },
  { name: "zstd", magic: [0x28, 0xb5, 0x2f, 0xfd], cmd: ["zstd", "-dc"] },
  { name: "lz4", magic: [0x02, 0x21, 0x4c, 0x18], cmd: ["lz4", "-dc"] },
];

/** The ELF vmlinux inside a bzImage. */
function extractVmlinux(bzImage: Uint8Array, out: string): string {
  const hdr = parseSetupHeader(bzImage);
  const view = new StructView(setup_header, hdr.raw);
  // payload_offset counts from the start of the protected-mode code, after the setup sectors.
  const start = (hdr.setup_sects + 1) * 512 + view.get("payload_offset");
  const payload = bzImage.subarray(start, start + view.get("payload_length"));
  const kind = MAGICS.find((k) => k.magic.every((b, i) => payload[i] === b));
  if (!kind) throw new Error(`unknown compression: payload starts ${[...payload.subarray(0, 6)].map((b) => b.toString(16)).join(" ")}`);
  const r = Bun.spawnSync(kind.cmd, { stdin: payload, stdout: "pipe", stderr: "pipe" });
  // The payload may carry trailing bytes (its size is appended): decompressors warn, the output is whole.
  const elf = r.stdout;
  if (elf.byteLength < 4 || elf[0] !== 0x7f || elf[1] !== 0x45) throw new Error(`${kind.cmd.join(" ")} gave no ELF: ${r.stderr.toString()}`);
  writeFileSync(out, elf);
  log(`vmlinux: ${kind.name} payload of ${payload.byteLength} bytes -> ${elf.byteLength} bytes`);
  return out;
}

async function main(): Promise<number> {
  // `bun run cloud-kernel -- CMD` reaches here without its `--`; `bun scripts/cloud-kernel.ts -- CMD` with it.
  const dash = process.argv.indexOf("--");
  const given = dash >= 0 ? process.argv.slice(dash + 1) : process.argv.slice(2);
  const argv = given.length > 0 ? given : ["sh", "-c", "uname -r; echo hello from the Debian cloud kernel"];
  const pkg = imagePackage();
  const dir = join(guestCacheDir(), "..", "cloud-kernel", pkg);
  mkdirSync(dir, { recursive: true });
  const vmlinux = join(dir, "vmlinux");
  if (!existsSync(vmlinux)) {
    log(`downloading ${pkg}`);
    run(["apt-get", "download", pkg], dir);
    const deb = readdirSync(dir).find((f) => f.startsWith(pkg) && f.endsWith(".deb"));
    if (!deb) throw new Error(`apt-get download ${pkg} left no .deb in ${dir}`);
    run(["dpkg-deb", "-x", deb, "root"], dir);
    const vmlinuz = readdirSync(join(dir, "root", "boot")).find((f) => f.startsWith("vmlinuz-"));
    if (!vmlinuz) throw new Error(`${deb} has no /boot/vmlinuz-*`);
    extractVmlinux(new Uint8Array(readFileSync(join(dir, "root", "boot", vmlinuz))), vmlinux);
  }
  const guest = await buildGuest({ log });
  log(`exec ${JSON.stringify(argv)} with ${pkg} (unmodified) and kindling's initramfs`);
  const r = await exec(argv, {
    kernel: vmlinux, initrd: guest.initramfs, memoryMib: 256, timeoutMs: 3_600_000, bootArgs: CLOUD_BOOT_ARGS,
    onStdout: (b) => process.stdout.write(b), onStderr: (b) => process.stderr.write(b),
    onConsole: (l) => log(`console: ${l}`), log: (l) => log(`vmm: ${l}`),
  });
  log(`exit status ${r.exitCode}; boot complete ${r.timings.bootCompleteMs} ms, first output ${r.timings.firstOutputMs} ms, total ${r.timings.totalMs} ms`);
  return r.exitCode;
}

process.exit(await main());
