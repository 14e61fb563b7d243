// --config-file: a JSON file in the shape of Firecracker's FullVmConfiguration ("boot-source", "drives",
// "machine-config", "network-interfaces", "vsock", "logger", "metrics", "entropy"), read and checked
// before anything starts. The checks are the API's (src/config/schemas.ts); errors name the file and the
// field: `vm.json: machine-config.vcpu_count: must be 1..32`.

import { readFileSync, statSync } from "node:fs";
import { MicroVMError } from "./errors.ts";
import { FullVmConfiguration, parseWith, UNSUPPORTED_CONFIG_KEYS, type MicroVMConfig } from "./schemas.ts";

/** Far larger than any real configuration; a bigger file is a mistake (a disk image given by accident). */
export const CONFIG_FILE_MAX_SIZE = 1024 * 1024;

/** Read and check a config file. Throws MicroVMError naming the file and what is wrong with it. */
export function loadConfigFile(path: string): MicroVMConfig {
  let text: string;
  try {
    const size = statSync(path).size;
    if (size > CONFIG_FILE_MAX_SIZE) throw new Error(`${size} bytes is more than a config file can be (${CONFIG_FILE_MAX_SIZE})`);
    text = readFileSync(path, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new MicroVMError(`${path}: ${code === "ENOENT" ? "no such file" : (e as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new MicroVMError(`${path}: not valid JSON: ${(e as Error).message}`);
  }
  try {
    parseConfig(json);
  } catch (e) {
    throw e instanceof MicroVMError ? new MicroVMError(`${path}: ${e.message}`) : e;
  }
  return json as MicroVMConfig;
}

/** Check a configuration object's shape (the MicroVM constructor checks the rest: files, features). */
export function parseConfig(json: unknown): FullVmConfiguration {
  if (json !== null && typeof json === "object" && !Array.isArray(json)) {
    const unsupported = Object.keys(json).filter((k) => k in UNSUPPORTED_CONFIG_KEYS);
    if (unsupported.length) throw new MicroVMError(unsupported.map((k) => `${k}: ${UNSUPPORTED_CONFIG_KEYS[k]} is not supported by kindling yet`).join("; "));
  }
  return parseWith(FullVmConfiguration, json, "");
}
