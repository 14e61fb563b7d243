// The MMDS data store (Firecracker's src/vmm/src/mmds/data_store.rs): one JSON document the host writes
// through the API (`PUT /mmds` replaces it, `PATCH /mmds` merges into it as RFC 7396 JSON Merge Patch) and
// the guest reads over HTTP (`GET /<json pointer>`), with the settings of `PUT /mmds/config` that concern
// the store: the version (V1, or V2 with session tokens) and `imds_compat`.
//
// Size: the document, serialized, may not exceed the limit (Firecracker's default `--mmds-size-limit`,
// which defaults to its API payload limit, 51200 bytes); a PUT or PATCH that would make it larger is
// refused and changes nothing.
//
// Output follows serde_json's, which Firecracker uses: object keys in sorted order, compact.

import { TokenAuthority } from "./token.ts";

/** Firecracker's default MMDS data store limit (= its default HTTP API payload limit), bytes. */
export const MMDS_DEFAULT_SIZE_LIMIT = 51200;

export type MmdsVersion = "V1" | "V2";
export type OutputFormat = "json" | "imds";

export type MmdsErrorKind = "NotInitialized" | "DataStoreLimitExceeded" | "NotFound" | "UnsupportedValueType";

/** The data store's errors, with Firecracker's messages. */
export class MmdsError extends Error {
  static readonly messages: Record<MmdsErrorKind, string> = {
    NotInitialized: "The MMDS data store is not initialized.",
    DataStoreLimitExceeded: "The MMDS patch request doesn't fit.",
    NotFound: "The MMDS resource does not exist.",
    UnsupportedValueType: "Cannot retrieve value. The value has an unsupported type.",
  };
  constructor(readonly kind: MmdsErrorKind) {
    super(MmdsError.messages[kind]);
  }
}

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

const isObject = (v: unknown): v is { [k: string]: Json } => typeof v === "object" && v !== null && !Array.isArray(v);

/** RFC 7396 §2: apply `patch` to `target`, returning the result (target is not modified). */
export function mergePatch(target: Json, patch: Json): Json {
  if (!isObject(patch)) return patch;
  const out: { [k: string]: Json } = isObject(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    // defineProperty, not assignment: a key "__proto__" must stay a key, not set the prototype.
    else Object.defineProperty(out, k, { value: mergePatch(Object.hasOwn(out, k) ? out[k]! : null, v), enumerable: true, writable: true, configurable: true });
  }
  return out;
}

/** Compact JSON with object keys sorted, as serde_json's default map writes it. */
export function serialize(v: Json): string {
  if (Array.isArray(v)) return `[${v.map(serialize).join(",")}]`;
  if (isObject(v)) return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${serialize(v[k]!)}`).join(",")}}`;
  return JSON.stringify(v);
}

/**
 * RFC 6901 JSON Pointer: "" is the whole document; otherwise "/"-separated reference tokens with "~1"
 * for "/" and "~0" for "~"; an array index is digits without a leading zero.
 */
export function jsonPointer(doc: Json, pointer: string): Json | undefined {
  if (pointer === "") return doc;
  if (!pointer.startsWith("/")) return undefined;
  let cur: Json | undefined = doc;
  for (const raw of pointer.slice(1).split("/")) {
    const token = raw.replaceAll("~1", "/").replaceAll("~0", "~");
    if (Array.isArray(cur)) {
      if (!/^(0|[1-9][0-9]*)$/.test(token)) return undefined;
      cur = cur[Number(token)];
    } else if (isObject(cur)) {
      cur = Object.hasOwn(cur, token) ? cur[token] : undefined;
    } else {
      return undefined;
    }
    if (cur === undefined) return undefined;
  }
  return cur;
}

/** EC2 IMDS's plain-text form: an object lists its keys (an object's with a trailing "/"), a string is itself. */
function formatImds(v: Json): string {
  if (isObject(v)) return Object.keys(v).sort().map((k) => (isObject(v[k]) ? `${k}/` : k)).join("\n");
  if (typeof v === "string") return v;
  throw new MmdsError("UnsupportedValueType");
}

/**
 * Firecracker's `mmds` metrics group (the ones kindling counts), shared by every interface's stack:
 * frames taken for MMDS, the unusual ones among them (not TCP, malformed), frames and bytes sent back,
 * TCP connections, and GETs without a token or with one not valid (counted under V1 too, as Firecracker
 * does, to show how ready a guest is for V2).
 */
export interface MmdsCounters {
  rx_accepted: number;
  rx_accepted_unusual: number;
  tx_frames: number;
  tx_bytes: number;
  connections_created: number;
  connections_destroyed: number;
  rx_no_token: number;
  rx_invalid_token: number;
}

export class MmdsStore {
  readonly counters: MmdsCounters = {
    rx_accepted: 0, rx_accepted_unusual: 0, tx_frames: 0, tx_bytes: 0, connections_created: 0, connections_destroyed: 0, rx_no_token: 0, rx_invalid_token: 0,
  };
  version: MmdsVersion = "V1";
  imdsCompat = false;
  readonly tokens: TokenAuthority;
  private data: Json = null;
  private initialized = false;

  constructor(
    readonly sizeLimit = MMDS_DEFAULT_SIZE_LIMIT,
    clock?: () => number,
  ) {
    this.tokens = new TokenAuthority(clock);
  }

  /** PUT /mmds: replace the document. Throws MmdsError DataStoreLimitExceeded. */
  put(data: unknown): void {
    const v = data as Json;
    this.checkSize(v);
    this.data = v;
    this.initialized = true;
  }

  /** PATCH /mmds: merge `patch` in (RFC 7396). Throws MmdsError NotInitialized before any PUT. */
  patch(patch: unknown): void {
    if (!this.initialized) throw new MmdsError("NotInitialized");
    const next = mergePatch(this.data, patch as Json);
    this.checkSize(next);
    this.data = next;
  }

  /** GET /mmds: the document (null before the first PUT; the API shows that as {}). */
  value(): unknown {
    return this.data;
  }

  /** The document as the API returns it. */
  serialized(): string {
    return this.data === null ? "{}" : serialize(this.data);
  }

  /**
   * What the guest gets for `path` (a sanitized URI path): the value at that JSON pointer (a trailing "/"
   * ignored), as JSON or in IMDS form (always IMDS with imds_compat). Throws MmdsError NotFound or
   * UnsupportedValueType.
   */
  get(path: string, format: OutputFormat): string {
    const pointer = path.endsWith("/") ? path.slice(0, -1) : path;
    const v = jsonPointer(this.data, pointer);
    if (v === undefined) throw new MmdsError("NotFound");
    return this.imdsCompat || format === "imds" ? formatImds(v) : serialize(v);
  }

  private checkSize(v: Json): void {
    if (Buffer.byteLength(serialize(v)) > this.sizeLimit) throw new MmdsError("DataStoreLimitExceeded");
  }
}
