// A benchmark child must not outlive the benchmark: a guest spinning at CPL3 would hold a core forever.
// When the parent dies, the kernel re-parents the child (to init or a subreaper), and process.ppid changes.

export function exitWhenOrphaned(): void {
  const parent = process.ppid;
  setInterval(() => {
    if (process.ppid !== parent) process.exit(3);
  }, 500).unref();
}
