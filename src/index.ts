// kindling as a library: `import { MicroVM } from "kindling"`. See docs/api.md.

export { MicroVM, MicroVMError, ValidationError, checkInstanceId } from "./microvm.ts";
export type { MicroVMOptions, MicroVMEvents, MicroVMState, RunningVm, BootFn, DeviceClass, VmEnd, BootCompleteInfo } from "./microvm.ts";
export { serveApi, defaultApiSocket, type ApiServer, type ApiServerOptions } from "./api/server.ts";
export { loadConfigFile } from "./config/file.ts";
export * as schemas from "./config/schemas.ts";
export type { MicroVMConfig, FullVmConfiguration } from "./config/schemas.ts";
export { exec, ExecError, quoteArgs, EXEC_TIMEOUT_STATUS, type ExecOptions, type ExecResult } from "./exec.ts";
