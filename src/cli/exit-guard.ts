// However kindling's process ends, the terminal is left as it was found and the API socket file is gone.
//
//   - SIGINT, SIGTERM, SIGHUP (the terminal went away): the first asks the VM to stop, and the normal path
//     (the command's `finally`) cleans up once it has;
//   - a second one of these while the stop is under way: clean up now and exit (128 + the signal's number),
//     as a user pressing Ctrl-C again expects;
//   - an uncaught exception or an unhandled rejection: log it, clean up, exit 1;
//   - any other exit (process.exit anywhere): the `exit` event cleans up.
// The cleanups run at most once each and must be synchronous (restoring termios and unlinking a file are).

import { consola } from "consola";

/** Signal numbers on x86-64 Linux (signal(7)), for the exit status 128 + n. */
const SIGNALS = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 } as const;
type Signal = keyof typeof SIGNALS;

export interface ExitGuard {
  /** Remove the handlers (the command's normal end; run its cleanups yourself, or call cleanup()). */
  dispose(): void;
  /** Run the cleanups now (once). */
  cleanup(): void;
}

/**
 * Install the handlers. `stop` starts a graceful stop (the first signal); `cleanups` restore the terminal,
 * remove the socket ... in the order given.
 */
export function guardExit(stop: (why: string) => void, cleanups: (() => void)[]): ExitGuard {
  let cleaned = false;
  const cleanup = () => {
    if (cleaned) return;
    cleaned = true;
    for (const c of cleanups) {
      try {
        c();
      } catch (e) {
        consola.error(`cleanup: ${(e as Error).message}`);
      }
    }
  };
  let stopping = false;
  const onSignal = (signal: Signal) => {
    if (!stopping) {
      stopping = true;
      stop(`interrupted by a signal (${signal})`);
      return;
    }
    consola.warn(`${signal} again: exiting without waiting for the VM to stop`);
    cleanup();
    process.exit(128 + SIGNALS[signal]);
  };
  const onFatal = (e: unknown) => {
    consola.error(`kindling: internal error: ${(e as Error)?.stack ?? String(e)}`);
    cleanup();
    process.exit(1);
  };
  const handlers = (Object.keys(SIGNALS) as Signal[]).map((s) => [s, () => onSignal(s)] as const);
  for (const [s, h] of handlers) process.on(s, h);
  process.on("uncaughtException", onFatal);
  process.on("unhandledRejection", onFatal);
  process.on("exit", cleanup);
  return {
    cleanup,
    dispose() {
      for (const [s, h] of handlers) process.off(s, h);
      process.off("uncaughtException", onFatal);
      process.off("unhandledRejection", onFatal);
      process.off("exit", cleanup);
    },
  };
}
