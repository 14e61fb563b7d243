// The host terminal as the guest's serial console: guest output to stdout, keystrokes to the UART.
//
// When stdin is a terminal it is put in raw mode, so every key (Ctrl-C included) goes to the guest, as on
// a real serial line. To leave, type Ctrl-A then x (QEMU's convention). The terminal is restored however
// the VM ends.

import { isatty, rawMode } from "./kvm/libc.ts";

/** Ctrl-A: the escape key. */
export const ESCAPE = 0x01;
export const ESCAPE_HELP = "Ctrl-A x to quit";

export interface AttachedConsole {
  /** Stop reading the terminal and restore its mode. Safe to call twice. */
  detach(): void;
}

/**
 * Attach stdin to `input` (the guest's UART). `onQuit` runs when the user types the escape sequence.
 * Returns a handle whose detach() restores the terminal.
 */
export function attachConsole(input: (bytes: Uint8Array) => void, onQuit: () => void): AttachedConsole {
  const tty = isatty(0);
  const restore = tty ? rawMode(0) : () => {};
  let escaped = false;
  const onData = (chunk: Buffer) => {
    const out: number[] = [];
    for (const b of chunk) {
      if (escaped) {
        escaped = false;
        if (b === 0x78 /* x */) return onQuit();
        if (b !== ESCAPE) out.push(ESCAPE); // Ctrl-A Ctrl-A sends one Ctrl-A
      } else if (b === ESCAPE && tty) {
        escaped = true;
        continue;
      }
      out.push(b);
    }
    if (out.length) input(new Uint8Array(out));
  };
  process.stdin.on("data", onData);
  process.stdin.resume();
  let detached = false;
  return {
    detach() {
      if (detached) return;
      detached = true;
      process.stdin.off("data", onData);
      process.stdin.pause();
      restore();
    },
  };
}
