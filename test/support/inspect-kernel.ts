// Run by hand: parse real kernel images with kindling's loaders and print what they found.
//
//   bun test/support/inspect-kernel.ts [image ...]
//
// Without arguments it inspects every finished guest kernel in ~/.cache/kindling/guest/*/ (vmlinux and
// bzImage). When a System.map sits next to the image, the ELF entry points are checked against the
// symbols they should be: startup_64 and pvh_start_xen (physical = virtual - __START_KERNEL_map).
// Not a test: the committed tests build synthetic images and never depend on a kernel being present.

import { existsSync, readFileSync, readdirSync, statSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { CMDLINE_START, GiB } from "../../src/arch/x86_64/layout.ts";
import { e820Map } from "../../src/arch/x86_64/e820.ts";
import { buildBootParams } from "../../src/arch/x86_64/zero-page.ts";
import { boot_params } from "../../src/arch/x86_64/boot-params.ts";
import { StructView } from "../../src/kvm/struct.ts";
import { loadKernel } from "../../src/loader/kernel.ts";
import { loadInitrd } from "../../src/loader/initrd.ts";
import { GuestMemory } from "../../src/memory.ts";

/** x86_64's __START_KERNEL_map: kernel virtual = physical + this. */
const START_KERNEL_MAP = 0xffffffff80000000n;
const hex = (n: number | bigint | undefined) => (n === undefined ? "-" : `0x${n.toString(16)}`);

function defaultImages(): string[] {
  const root = join(process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "kindling", "guest");
  if (!existsSync(root)) return [];
  const seen = new Set<string>();
  return readdirSync(root)
    .filter((d) => !d.includes(".partial"))
    .flatMap((d) => ["vmlinux", "bzImage"].map((f) => join(root, d, f)))
    .filter(existsSync)
    .filter((f) => {
      // The cache hard-links one build into several directories: inspect each file once.
      const { dev, ino } = statSync(f);
      const key = `${dev}:${ino}`;
      if (seen.has(key)) return false;
      seen.add(key);
      return true;
    });
}

function symbols(image: string): Map<string, bigint> {
  const map = new Map<string, bigint>();
  const path = join(dirname(image), "System.map");
  if (!existsSync(path)) return map;
  for (const line of readFileSync(path, "utf8").split("\n")) {
    const [addr, , name] = line.split(" ");
    if (addr && name) map.set(name, BigInt(`0x${addr}`));
  }
  return map;
}

let failures = 0;
function check(what: string, got: number | undefined, want: bigint | undefined): void {
  if (want === undefined) return console.log(`  (no System.map symbol for ${what})`);
  const ok = got !== undefined && BigInt(got) === want;
  if (!ok) failures++;
  console.log(`  ${ok ? "ok  " : "FAIL"} ${what}: loader ${hex(got)}, System.map ${hex(want)}`);
}

const images = process.argv.slice(2).length ? process.argv.slice(2) : defaultImages();
if (images.length === 0) console.log("no kernel images given and none found in ~/.cache/kindling/guest/*/");

for (const path of images) {
  const image = new Uint8Array(readFileSync(path));
  const mem = GuestMemory.plain([{ gpa: 0, size: 1 * GiB }]);
  console.log(`${path} (${image.byteLength} bytes)`);
  const k = loadKernel(mem, image);
  console.log(`  kind ${k.kind}, entry ${hex(k.entry)}, pvhEntry ${hex(k.pvhEntry)}, kernelEnd ${hex(k.kernelEnd)}`);

  if (k.kind === "elf") {
    const syms = symbols(path);
    const phys = (name: string) => { const v = syms.get(name); return v === undefined ? undefined : v - START_KERNEL_MAP; };
    check("entry = startup_64", k.entry, phys("startup_64"));
    if (k.pvhEntry !== undefined) check("pvhEntry = pvh_start_xen", k.pvhEntry, phys("pvh_start_xen"));
    check("kernelEnd = _end", k.kernelEnd, phys("_end"));
  }
  if (k.setupHeader) {
    const { raw, ...fields } = k.setupHeader;
    const shown = Object.entries(fields).map(([n, v]) => `${n}=${hex(v)}`).join(" ");
    console.log(`  setup header (${raw.byteLength} bytes): ${shown}`);
    const page = new StructView(boot_params, buildBootParams({
      setupHeader: raw, kernelLoadAddr: k.loadAddr, cmdline: { addr: CMDLINE_START, size: 1 }, e820: e820Map(1 * GiB),
    }));
    console.log(`  zero page: loadflags=${hex(page.get("hdr.loadflags"))} type_of_loader=${hex(page.get("hdr.type_of_loader"))} kernel_alignment=${hex(page.get("hdr.kernel_alignment"))}`);
  }
  const initrd = loadInitrd(mem, new Uint8Array(4 * 1024 * 1024), k.kernelEnd, k.setupHeader);
  console.log(`  a 4 MiB initrd would go at ${hex(initrd.addr)} in a 1 GiB VM`);
}
if (failures) {
  console.log(`${failures} check(s) failed`);
  process.exit(1);
}
