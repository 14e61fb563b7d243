// Milestones of a Linux boot, recognised on the serial console as the kernel prints them, with the time
// each was first seen. `kindling boot` prints them at the end; tests and benchmarks wait for them.

export const MILESTONES = {
  banner: /Linux version \d/,
  commandLine: /Command line: /,
  calibrate: /Calibrating delay loop|tsc: Detected/,
  smp: /smp: Brought up/,
  serial: /ttyS0 at I\/O 0x3f8/,
  freeing: /Freeing unused kernel image/,
  runInit: /Run \/init as init process|Run \/sbin\/init as init process/,
  initReady: /kindling: init ready/,
  panic: /Kernel panic - not syncing/,
} as const;
export type Milestone = keyof typeof MILESTONES;

export class ConsoleWatcher {
  /** The whole console output so far. */
  text = "";
  /** Milliseconds since `start` at which each milestone's line was first seen. */
  readonly seen = new Map<Milestone, number>();
  private readonly decoder = new TextDecoder();
  private lineStart = 0;
  private waiters: { test: (w: ConsoleWatcher) => boolean; resolve: () => void }[] = [];

  constructor(private readonly start = performance.now()) {}

  /** Feed console bytes (use as, or from, the VM's consoleOutput). */
  push(bytes: Uint8Array): void {
    this.text += this.decoder.decode(bytes, { stream: true });
    // Check each complete line once.
    let nl = this.text.indexOf("\n", this.lineStart);
    while (nl >= 0) {
      const line = this.text.slice(this.lineStart, nl);
      for (const [name, re] of Object.entries(MILESTONES) as [Milestone, RegExp][]) {
        if (!this.seen.has(name) && re.test(line)) this.seen.set(name, performance.now() - this.start);
      }
      this.lineStart = nl + 1;
      nl = this.text.indexOf("\n", this.lineStart);
    }
    this.waiters = this.waiters.filter((w) => (w.test(this) ? (w.resolve(), false) : true));
  }

  /** Resolves once `test` holds (checked after every chunk of output). */
  until(test: (w: ConsoleWatcher) => boolean): Promise<void> {
    if (test(this)) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ test, resolve }));
  }

  /** Lines of output, without the carriage returns the 8250 console adds. */
  lines(): string[] {
    return this.text.replace(/\r/g, "").split("\n");
  }
}
