// zod for kindling's modules: configured once, here, before anything parses.
//
// jitless: zod 4 compiles a fast parser for each object schema the first time it parses with it (code
// generated with `new Function`). kindling parses most of its inputs once per process (a config file, a
// snapshot's state, a CLI's options), so the compiling is all cost: a Linux snapshot's state took 9-11 ms
// to validate in a fresh process with it, 5-6.5 ms without (AMD EPYC, Bun 1.4.5). Measured again in
// bench/README.md (exec --snapshot).
import { z } from "zod";

z.config({ jitless: true });

export { z };
