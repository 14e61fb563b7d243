// Spawn a process and time it from the outside: from just before spawn() to the moment its stdout first
// matches a pattern (the guest's signal), and to its exit. CPU time comes from the kernel's accounting of
// the child (getrusage, through Bun's resourceUsage()), user + system, all threads, until exit.
// kindling and QEMU are timed by this same function, so the two figures mean the same thing.

export interface TimedRun {
  /** Milliseconds from spawn to the first stdout match; undefined if it never matched. */
  signalMs?: number;
  /** Milliseconds from spawn to exit. */
  exitMs: number;
  /** User + system CPU of the child, in milliseconds, until it exited. */
  cpuMs: number;
  exitCode: number | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

export interface TimedSpawnOptions {
  /** Tested against all stdout seen so far, after each chunk. */
  signal: RegExp;
  /** Kill the child (SIGKILL) this long after spawn. */
  timeoutMs: number;
  /** Kill the child as soon as the signal is seen (for guests that do not end by themselves). */
  killOnSignal?: boolean;
  /** Called once with the child's pid, the signal time and its stdout so far, while it still runs. */
  onSignal?: (pid: number, ms: number, stdout: string) => Promise<void> | void;
  cwd?: string;
}

export async function timedSpawn(cmd: string[], opts: TimedSpawnOptions): Promise<TimedRun> {
  const t0 = performance.now();
  const child = Bun.spawn(cmd, { stdin: "ignore", stdout: "pipe", stderr: "pipe", cwd: opts.cwd });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill("SIGKILL");
  }, opts.timeoutMs);
  const decoder = new TextDecoder();
  let stdout = "";
  let signalMs: number | undefined;
  const stderrText = new Response(child.stderr).text();
  for await (const chunk of child.stdout) {
    const now = performance.now();
    stdout += decoder.decode(chunk, { stream: true });
    if (signalMs === undefined && opts.signal.test(stdout)) {
      signalMs = now - t0;
      try {
        await opts.onSignal?.(child.pid, signalMs, stdout);
      } catch (e) {
        child.kill("SIGKILL");
        throw e;
      }
      if (opts.killOnSignal) child.kill("SIGKILL");
    }
  }
  const exitCode = await child.exited;
  const exitMs = performance.now() - t0;
  clearTimeout(timer);
  const usage = child.resourceUsage();
  const cpuMs = usage ? Number(usage.cpuTime.user + usage.cpuTime.system) / 1000 : NaN;
  return { signalMs, exitMs, cpuMs, exitCode, stdout, stderr: await stderrText, timedOut };
}
