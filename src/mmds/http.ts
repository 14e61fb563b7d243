// The HTTP side of MMDS: one request's bytes in, one response's bytes out, as Firecracker answers them
// (its src/vmm/src/mmds/mod.rs convert_to_response, with requests parsed and responses written the way
// its micro_http crate does).
//
// Requests: "METHOD URI VERSION" CRLF, header lines, CRLF. Methods GET, PUT, PATCH, DELETE parse (others:
// 501); HTTP/1.0 and HTTP/1.1 (others: 501). The URI is a path ("/latest/meta-data") or an absolute URI
// ("http://169.254.169.254/latest"); repeated slashes collapse. `Accept: application/json` asks for JSON;
// no Accept, `text/plain` or anything else gets the plain-text (IMDS) form. A body is refused: MMDS reads
// nothing but headers.
//
// Answers:
//   GET   V1: the value at the path (a token, if given, is only checked for metrics).
//         V2: 401 without `X-metadata-token` (or `X-aws-ec2-metadata-token`) or with one not valid now.
//         404 for a path with no value, 501 for a value IMDS form cannot show (numbers, arrays ...).
//   PUT   /latest/api/token with `X-metadata-token-ttl-seconds` (or the `X-aws-ec2-` one), 1..21600:
//         200 and a token; 400 with `X-Forwarded-For` (a request relayed from elsewhere), no TTL, or a bad
//         one; 404 for any other path.
//   other methods: 405 with `Allow: GET, PUT`.
// Responses: "HTTP/1.x CODE " CRLF, `Server: Firecracker API`, `Connection: keep-alive`, then the
// content type and length, a blank line, the body, byte for byte micro_http's layout.

import { MmdsError, type MmdsStore } from "./store.ts";
import { PATH_TO_TOKEN, TokenTtlError } from "./token.ts";

export const X_METADATA_TOKEN = "x-metadata-token";
export const X_AWS_EC2_METADATA_TOKEN = "x-aws-ec2-metadata-token";
export const X_METADATA_TOKEN_TTL_SECONDS = "x-metadata-token-ttl-seconds";
export const X_AWS_EC2_METADATA_TOKEN_TTL_SECONDS = "x-aws-ec2-metadata-token-ttl-seconds";
export const X_FORWARDED_FOR = "x-forwarded-for";

type MediaType = "text/plain" | "application/json";
const REASONS: Record<number, string> = { 200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large", 501: "Not Implemented" };

export interface HttpResponse {
  version: "HTTP/1.0" | "HTTP/1.1";
  status: number;
  contentType: MediaType;
  body: string;
  allow?: string[];
  /** Extra headers, name as the request spelled it. */
  headers?: [string, string][];
}

export interface HttpRequest {
  method: string;
  /** The path part of the URI ("" if it had none). */
  path: string;
  version: "HTTP/1.0" | "HTTP/1.1";
  accept: MediaType;
  /** Headers micro_http does not interpret itself, as [name, value] with the name's spelling kept. */
  custom: [string, string][];
}

/** Firecracker's messages for its VmmMmdsError. */
const MSG = {
  invalidToken: "MMDS token not valid.",
  invalidUri: "Invalid URI.",
  methodNotAllowed: "Not allowed HTTP method.",
  noToken: "No MMDS token provided. Use `X-metadata-token` or `X-aws-ec2-metadata-token` header to specify the session token.",
  noTtl: "Token time to live value not found. Use `X-metadata-token-ttl-seconds` or `X-aws-ec2-metadata-token-ttl-seconds` header to specify the token's lifetime.",
  notFound: (uri: string) => `Resource not found: ${uri}.`,
};

/** micro_http's Uri::get_abs_path: the path of "http://host/path", or the URI itself if it starts with "/". */
function absPath(uri: string): string {
  if (uri.startsWith("http://")) {
    const rest = uri.slice("http://".length);
    const slash = rest.indexOf("/");
    return slash < 0 ? "" : rest.slice(slash);
  }
  return uri.startsWith("/") ? uri : "";
}

/** Collapse repeated slashes ("/a//b" is "/a/b"): the store wants a strict JSON pointer. */
export function sanitizeUri(uri: string): string {
  return uri.replace(/\/{2,}/g, "/");
}

const error = (status: number, body: string, version: HttpResponse["version"] = "HTTP/1.1"): HttpResponse => ({ version, status, contentType: "text/plain", body });

/** Parse a request (up to and including its blank line); a malformed one becomes the error response. */
export function parseRequest(bytes: Uint8Array): HttpRequest | HttpResponse {
  // Headers are ASCII: bytes past 0x7f make the request invalid, as micro_http's UTF-8 check would.
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    return error(400, "Invalid request.");
  }
  const lineEnd = text.indexOf("\r\n");
  if (lineEnd < 0) return error(400, "Invalid request.");
  const line = text.slice(0, lineEnd);
  // The shortest request line: "GET" SP one-character URI SP "HTTP/1.0".
  if (line.length < "GET".length + 1 + "HTTP/1.0".length + 2) return error(400, "Invalid request.");
  const sp1 = line.indexOf(" ");
  const sp2 = sp1 < 0 ? -1 : line.indexOf(" ", sp1 + 1);
  if (sp1 < 0 || sp2 < 0) return error(400, "Invalid request.");
  const method = line.slice(0, sp1);
  const uri = line.slice(sp1 + 1, sp2);
  const version = line.slice(sp2 + 1);
  if (!["GET", "PUT", "PATCH", "DELETE"].includes(method)) return error(501, "Invalid HTTP Method: Unsupported HTTP method.");
  if (uri.length === 0) return error(400, "Invalid URI: Empty URI not allowed.");
  if (version !== "HTTP/1.0" && version !== "HTTP/1.1") return error(501, "Invalid HTTP Version: Unsupported HTTP version.");
  const headersEnd = text.indexOf("\r\n\r\n", lineEnd);
  if (headersEnd < 0) return error(400, "Invalid request.");
  const req: HttpRequest = { method, path: absPath(uri), version, accept: "text/plain", custom: [] };
  for (const h of text.slice(lineEnd + 2, headersEnd).split("\r\n")) {
    if (h === "") break;
    const colon = h.indexOf(":");
    if (colon < 0) return error(400, `Invalid header. Reason: Invalid format. Key: ${h}`);
    const name = h.slice(0, colon).trim();
    const value = h.slice(colon + 1).trim();
    switch (name.toLowerCase()) {
      case "content-length": {
        if (!/^\+?[0-9]+$/.test(value) || Number(value) > 0xffffffff) return error(400, `Invalid header. Reason: Invalid value. Key:${h.slice(0, colon)}; Value:${h.slice(colon + 1)}`);
        // A body was announced but MMDS reads only up to the blank line: the request cannot be complete.
        if (Number(value) > 0) return error(400, "Invalid request.");
        break;
      }
      case "accept":
        // An Accept micro_http does not know (*/*, text/html) is ignored: the default stays.
        if (value === "application/json" || value === "text/plain") req.accept = value;
        break;
      case "content-type":
      case "transfer-encoding":
      case "expect":
      case "server":
      case "accept-encoding":
        break;
      default:
        req.custom.push([name, value]);
    }
  }
  return req;
}

function header(req: HttpRequest, names: string[]): [string, string] | undefined {
  return req.custom.find(([k]) => names.includes(k.toLowerCase()));
}

/** Firecracker's convert_to_response: the answer to one parsed request. */
export function respond(store: MmdsStore, req: HttpRequest): HttpResponse {
  const v = req.version;
  if (req.path === "") return error(400, MSG.invalidUri, v);
  if (req.method === "GET") {
    const token = header(req, [X_METADATA_TOKEN, X_AWS_EC2_METADATA_TOKEN]);
    const valid = token !== undefined && store.tokens.isValid(token[1]);
    if (!token) store.counters.rx_no_token++;
    else if (!valid) store.counters.rx_invalid_token++;
    if (store.version === "V2") {
      if (!token) return error(401, MSG.noToken, v);
      if (!valid) return error(401, MSG.invalidToken, v);
    }
    try {
      return { version: v, status: 200, contentType: req.accept, body: store.get(sanitizeUri(req.path), req.accept === "application/json" ? "json" : "imds") };
    } catch (e) {
      if (!(e instanceof MmdsError)) throw e;
      if (e.kind === "NotFound") return error(404, MSG.notFound(req.path), v);
      return error(e.kind === "UnsupportedValueType" ? 501 : 413, e.message, v);
    }
  }
  if (req.method === "PUT") {
    const fwd = header(req, [X_FORWARDED_FOR]);
    if (fwd) return error(400, `Invalid header. Reason: Unsupported header name. Key: ${fwd[0]}`, v);
    if (sanitizeUri(req.path) !== PATH_TO_TOKEN) return error(404, MSG.notFound(req.path), v);
    const ttl = header(req, [X_METADATA_TOKEN_TTL_SECONDS, X_AWS_EC2_METADATA_TOKEN_TTL_SECONDS]);
    if (!ttl) return error(400, MSG.noTtl, v);
    const [name, value] = ttl;
    if (!/^\+?[0-9]+$/.test(value) || Number(value) > 0xffffffff) return error(400, `Invalid header. Reason: Invalid value. Key:${name}; Value:${value}`, v);
    const seconds = Number(value);
    try {
      return { version: v, status: 200, contentType: "text/plain", body: store.tokens.generate(seconds), headers: [[name, String(seconds)]] };
    } catch (e) {
      if (e instanceof TokenTtlError) return error(400, e.message, v);
      throw e;
    }
  }
  return { ...error(405, MSG.methodNotAllowed, v), allow: ["GET", "PUT"] };
}

/** micro_http's Response::write_all. */
export function encodeResponse(r: HttpResponse): Uint8Array {
  const body = new TextEncoder().encode(r.body);
  let head = `${r.version} ${r.status} \r\nServer: Firecracker API\r\nConnection: keep-alive\r\n`;
  if (r.allow?.length) head += `Allow: ${r.allow.join(", ")}\r\n`;
  for (const [k, val] of r.headers ?? []) head += `${k}: ${val}\r\n`;
  head += `Content-Type: ${r.contentType}\r\nContent-Length: ${body.byteLength}\r\n\r\n`;
  const h = new TextEncoder().encode(head);
  const out = new Uint8Array(h.byteLength + body.byteLength);
  out.set(h);
  out.set(body, h.byteLength);
  return out;
}

/** One request's bytes to one response's bytes: what the TCP endpoint calls. */
export function answer(store: MmdsStore, request: Uint8Array): Uint8Array {
  const req = parseRequest(request);
  return encodeResponse("status" in req ? req : respond(store, req));
}

/** The reason phrase, for logs and tests (micro_http's status line carries none). */
export const reason = (status: number): string => REASONS[status] ?? "";
