// kindling's own log (not the guest's console): lines about the VMM, the API and the devices.
//
// Until a log path is configured (PUT /logger, the config file's "logger", or --log-path) the lines go
// to consola, on stderr, filtered by kindling's --level (and by the logger's level once one is set). Once
// a path is configured they go, Firecracker-style, to that file or named pipe instead, one line each:
//
//   2025-01-01T12:00:00.000Z [anonymous-instance:INFO:api] PUT /boot-source 204
//
// with the level shown if show_level is set and the origin if show_log_origin is set.

import { closeSync, writeSync } from "node:fs";
import { consola } from "consola";
import { openOutput } from "../host-file.ts";
import { MicroVMError } from "./errors.ts";
import type { LoggerConfig, LogLevelName } from "./schemas.ts";

export type Level = "error" | "warn" | "info" | "debug" | "trace";

/** How severe each level is; a line is written when its rank is at most the configured level's. */
const RANK: Record<LogLevelName, number> = { Off: -1, Error: 0, Warning: 1, Info: 2, Debug: 3, Trace: 4 };
const LEVEL_RANK: Record<Level, number> = { error: 0, warn: 1, info: 2, debug: 3, trace: 4 };
const LEVEL_TAG: Record<Level, string> = { error: "ERROR", warn: "WARN", info: "INFO", debug: "DEBUG", trace: "TRACE" };

/**
 * Open a file or named pipe for appending, as Firecracker opens its log, metrics and serial outputs:
 * created if missing (mode 0600), non-blocking so a pipe nobody reads never stalls the VMM.
 */
export function openAppend(field: string, path: string): number {
  // No symlinks, regular files and named pipes only (src/host-file.ts says why).
  try {
    return openOutput(field, path);
  } catch (e) {
    throw new MicroVMError((e as Error).message);
  }
}

/** Write all of `text`, or give up quietly: a full pipe or a vanished file must not stop the VM. */
export function writeQuietly(fd: number, bytes: Uint8Array | string): boolean {
  try {
    const buf = typeof bytes === "string" ? Buffer.from(bytes) : bytes;
    for (let done = 0; done < buf.byteLength;) done += writeSync(fd, buf, done, buf.byteLength - done);
    return true;
  } catch {
    return false;
  }
}

export class Logger {
  private config?: LoggerConfig;
  private fd?: number;
  /** Lines that could not be written (a full named pipe). */
  dropped = 0;
  /** Where lines go instead of consola while no log path is set (the library's exec() passes its caller's). */
  sink?: (message: string, level: Level) => void;

  constructor(readonly instanceId: string) {}

  /** The configuration in effect, as GET /vm/config reports it. */
  get current(): LoggerConfig | undefined {
    return this.config && { ...this.config };
  }

  /** Apply a Logger body (already parsed by schemas.ts). Opens the new file before closing the old one. */
  configure(config: LoggerConfig, prefix = "logger"): void {
    const fd = config.log_path === undefined ? undefined : openAppend(`${prefix}.log_path`, config.log_path);
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = fd;
    this.config = { ...config, level: config.level ?? "Info" };
  }

  error(message: string, origin = "vmm"): void {
    this.log("error", message, origin);
  }
  warn(message: string, origin = "vmm"): void {
    this.log("warn", message, origin);
  }
  info(message: string, origin = "vmm"): void {
    this.log("info", message, origin);
  }
  debug(message: string, origin = "vmm"): void {
    this.log("debug", message, origin);
  }

  log(level: Level, message: string, origin = "vmm"): void {
    const c = this.config;
    if (c && LEVEL_RANK[level] > RANK[c.level ?? "Info"]) return;
    if (c?.module && !origin.startsWith(c.module)) return;
    if (this.fd === undefined || !c) {
      if (this.sink) this.sink(message, level);
      else consola[level](message);
      return;
    }
    const tags = [this.instanceId, c.show_level ? LEVEL_TAG[level] : "", c.show_log_origin ? origin : ""].filter(Boolean).join(":");
    if (!writeQuietly(this.fd, `${new Date().toISOString()} [${tags}] ${message}\n`)) this.dropped++;
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}
