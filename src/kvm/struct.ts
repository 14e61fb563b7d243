// Kernel structs, declared once.
//
// Every structure kindling passes to the kernel (or writes into guest memory for the guest kernel to read)
// is declared with `struct(...)` below, field by field, in the kernel's own order and with the kernel's own
// names. Offsets, padding and size follow the C rules of the x86_64 System V ABI: each field is aligned to
// its own alignment, and the struct's size is rounded up to the largest alignment inside it. `packed`
// structs (the boot protocol's `__attribute__((packed))` ones) get no padding at all.
//
// Nothing in kindling writes a byte offset by hand: code asks a layout for `offsetOf("io.port")`, or uses a
// `StructView` to get and set fields by name. test/struct-layouts.test.ts checks every size and offset
// against the values the kernel's UAPI headers give.

export type Scalar = "u8" | "u16" | "u32" | "u64" | "i8" | "i16" | "i32" | "i64";

/** An array field: `length` elements of a scalar or a struct. */
export interface ArrayOf {
  readonly of: Scalar | Layout;
  readonly length: number;
}

export type FieldType = Scalar | ArrayOf | Layout;

export interface Field {
  readonly name: string;
  readonly offset: number;
  readonly type: FieldType;
  readonly size: number;
}

export interface Layout {
  readonly kind: "struct" | "union";
  readonly name: string;
  readonly size: number;
  readonly align: number;
  readonly fields: readonly Field[];
  /** Byte offset of a field path such as `"io.port"`, `"entries.2.function"` or `"s.regs"`. */
  offsetOf(path: string): number;
  /** Size in bytes of the field at a path. */
  sizeAt(path: string): number;
  /** The scalar type at a field path (throws if the path names a struct or an array). */
  scalarAt(path: string): Scalar;
}

const SCALAR_SIZE: Record<Scalar, number> = { u8: 1, i8: 1, u16: 2, i16: 2, u32: 4, i32: 4, u64: 8, i64: 8 };

export function array(of: Scalar | Layout, length: number): ArrayOf {
  if (!Number.isInteger(length) || length < 0) throw new Error(`array length ${length} is not a whole number`);
  return { of, length };
}

function sizeOf(t: FieldType): number {
  if (typeof t === "string") return SCALAR_SIZE[t];
  if ("kind" in t) return t.size;
  return sizeOf(t.of) * t.length;
}

function alignOf(t: FieldType): number {
  if (typeof t === "string") return SCALAR_SIZE[t];
  if ("kind" in t) return t.align;
  return alignOf(t.of);
}

const roundUp = (n: number, a: number) => Math.ceil(n / a) * a;

interface Options {
  /** `__attribute__((packed))`: no padding anywhere. */
  packed?: boolean;
  /** Assert the computed size (a cheap guard against a mistyped field). */
  size?: number;
}

function build(kind: "struct" | "union", name: string, spec: [string, FieldType][], opts: Options): Layout {
  const fields: Field[] = [];
  let offset = 0;
  let size = 0;
  let align = 1;
  for (const [fname, type] of spec) {
    const a = opts.packed ? 1 : alignOf(type);
    const s = sizeOf(type);
    const at = kind === "union" ? 0 : roundUp(offset, a);
    fields.push({ name: fname, offset: at, type, size: s });
    offset = at + s;
    size = Math.max(size, at + s);
    align = Math.max(align, a);
  }
  size = roundUp(size, align);
  if (opts.size !== undefined && opts.size !== size) {
    throw new Error(`struct ${name}: computed size ${size}, declared ${opts.size}`);
  }
  // Made at the first lookup: most of the ~70 layouts a process declares are never looked up by name, and
  // two Maps per layout were about an eighth of loading uapi.ts (bench/README.md, start to first instruction).
  let byName: Map<string, Field> | undefined;
  let cache: Map<string, { offset: number; type: FieldType }> | undefined;

  function resolve(path: string): { offset: number; type: FieldType } {
    byName ??= new Map(fields.map((f) => [f.name, f]));
    cache ??= new Map();
    const hit = cache.get(path);
    if (hit) return hit;
    let layout: Layout | undefined = self;
    let type: FieldType = self;
    let at = 0;
    for (const part of path.split(".")) {
      if (typeof type === "object" && !("kind" in type)) {
        // An array: the part must be an index.
        const i = Number(part);
        if (!Number.isInteger(i) || i < 0 || i >= type.length) throw new Error(`${name}: bad index ${part} in ${path}`);
        at += i * sizeOf(type.of);
        type = type.of;
        layout = typeof type === "object" && "kind" in type ? type : undefined;
        continue;
      }
      const f: Field | undefined = layout === self ? byName.get(part) : layout?.fields.find((x) => x.name === part);
      if (!f) throw new Error(`${name}: no field ${path}`);
      at += f.offset;
      type = f.type;
      layout = typeof type === "object" && "kind" in type ? type : undefined;
    }
    const r = { offset: at, type };
    cache.set(path, r);
    return r;
  }

  const self: Layout = {
    kind,
    name,
    size,
    align,
    fields,
    offsetOf: (path) => resolve(path).offset,
    sizeAt: (path) => sizeOf(resolve(path).type),
    scalarAt(path) {
      const t = resolve(path).type;
      if (typeof t !== "string") throw new Error(`${name}: ${path} is not a scalar field`);
      return t;
    },
  };
  return self;
}

export function struct(name: string, spec: [string, FieldType][], opts: Options = {}): Layout {
  return build("struct", name, spec, opts);
}

export function union(name: string, spec: [string, FieldType][], opts: Options = {}): Layout {
  return build("union", name, spec, opts);
}

/**
 * A layout laid over bytes: `view.get("rip")`, `view.set("cr0", 0x80050033)`.
 * Values come back as numbers; 64-bit fields that do not fit a double exactly throw (use `getBig`).
 */
export class StructView {
  readonly dv: DataView;
  constructor(
    readonly layout: Layout,
    readonly bytes: Uint8Array = new Uint8Array(layout.size),
    readonly base = 0,
  ) {
    if (base < 0 || base + layout.size > bytes.byteLength) {
      throw new RangeError(`${layout.name}: ${layout.size} bytes at ${base} do not fit in a ${bytes.byteLength}-byte buffer`);
    }
    this.dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  getBig(path: string): bigint {
    const at = this.base + this.layout.offsetOf(path);
    return readScalar(this.dv, at, this.layout.scalarAt(path));
  }

  get(path: string): number {
    const v = this.getBig(path);
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) {
      throw new RangeError(`${this.layout.name}.${path} = 0x${v.toString(16)} does not fit a number; use getBig`);
    }
    return Number(v);
  }

  set(path: string, value: number | bigint): this {
    const at = this.base + this.layout.offsetOf(path);
    writeScalar(this.dv, at, this.layout.scalarAt(path), value);
    return this;
  }

  /** Set several fields at once: `view.assign({ cr0: 1, "cs.base": 0 })`. */
  assign(values: Record<string, number | bigint>): this {
    for (const [k, v] of Object.entries(values)) this.set(k, v);
    return this;
  }

  /** The bytes of a sub-field (an array or nested struct), as a view into the same memory. */
  slice(path: string, length?: number): Uint8Array {
    const at = this.base + this.layout.offsetOf(path);
    return this.bytes.subarray(at, at + (length ?? this.layout.sizeAt(path)));
  }
}

export function readScalar(dv: DataView, at: number, t: Scalar): bigint {
  switch (t) {
    case "u8": return BigInt(dv.getUint8(at));
    case "i8": return BigInt(dv.getInt8(at));
    case "u16": return BigInt(dv.getUint16(at, true));
    case "i16": return BigInt(dv.getInt16(at, true));
    case "u32": return BigInt(dv.getUint32(at, true));
    case "i32": return BigInt(dv.getInt32(at, true));
    case "u64": return dv.getBigUint64(at, true);
    case "i64": return dv.getBigInt64(at, true);
  }
}

export function writeScalar(dv: DataView, at: number, t: Scalar, value: number | bigint): void {
  // A whole number into a field of up to 32 bits: DataView's setters already wrap modulo 2^bits, as
  // BigInt.asUintN does below, with no BigInt made (most fields a VM's start sets are such).
  if (typeof value === "number" && Number.isSafeInteger(value)) {
    switch (t) {
      case "u8": case "i8": dv.setUint8(at, value); return;
      case "u16": case "i16": dv.setUint16(at, value, true); return;
      case "u32": case "i32": dv.setUint32(at, value, true); return;
    }
  }
  const big = BigInt(value);
  switch (t) {
    case "u8": case "i8": dv.setUint8(at, Number(BigInt.asUintN(8, big))); break;
    case "u16": case "i16": dv.setUint16(at, Number(BigInt.asUintN(16, big)), true); break;
    case "u32": case "i32": dv.setUint32(at, Number(BigInt.asUintN(32, big)), true); break;
    case "u64": case "i64": dv.setBigUint64(at, BigInt.asUintN(64, big), true); break;
  }
}
