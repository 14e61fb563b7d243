// The configuration layer's errors: what kindling refuses of a configuration or a request. They live here,
// below MicroVM, because the checks that throw them (schemas.ts, resources.ts, file.ts, logger.ts,
// metrics.ts) are here; MicroVM throws them too, for a call in the wrong state, and re-exports them. The
// API (src/api/handlers.ts) answers a MicroVMError with 400 and its message as `fault_message`; the CLI
// makes it a usage error (exit 2).

/**
 * A configuration or request kindling refuses: a broken rule, a feature it lacks, a call in the wrong state
 * (pre-boot only, not started). The API answers these with 400 and the message as `fault_message`.
 */
export class MicroVMError extends Error {
  /** The HTTP status the API answers with: 400, or 413 where Firecracker answers that (MMDS over its limit). */
  constructor(
    message: string,
    readonly status = 400,
  ) {
    super(message);
    this.name = "MicroVMError";
  }
}

/** A body or config that breaks a rule. The message names the field: `machine-config.vcpu_count: must be 1..32`. */
export class ValidationError extends MicroVMError {
  constructor(readonly problems: string[]) {
    super(problems.join("; "));
    this.name = "ValidationError";
  }
}

