// The host side of the Linux tests' vsock exchanges, through Firecracker's Unix-socket vsock interface
// (docs/api.md): the guest tool is guest/tools/vsock.S (`vsock connect CID PORT`, `vsock listen PORT`).

import { connect, createServer } from "node:net";

/**
 * Guest-initiated: listen on `<udsPath>_<port>` (Firecracker's rule), read what the guest sends until it
 * shuts down its side, answer "from-host-to-<it>" and close. Resolves to what the guest sent.
 * `cleanups` gets the server's close.
 */
export function vsockListener(udsPath: string, port: number, cleanups: (() => void)[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const server = createServer((s) => {
      let got = "";
      s.on("data", (d) => (got += d.toString()));
      s.on("end", () => s.end(`from-host-to-${got.trim()}\n`, () => {
        server.close();
        resolve(got);
      }));
      s.on("error", reject);
    });
    server.listen(`${udsPath}_${port}`);
    cleanups.push(() => server.close());
  });
}

/**
 * Host-initiated: `CONNECT <port>\n` on the vsock's socket, read the guest's line after "OK <n>", answer
 * "from-host" and close. Resolves to the guest's text; rejects if the connection closed without "OK" (the
 * guest had no listener on that port yet).
 */
export function vsockConnectOnce(udsPath: string, port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(udsPath);
    let text = "";
    s.on("connect", () => s.write(`CONNECT ${port}\n`));
    s.on("data", (d) => {
      text += d.toString();
      const ok = /^OK \d+\n/.exec(text);
      if (ok && text.includes("\n", ok[0].length)) s.end("from-host\n");
    });
    s.on("close", () => (text.startsWith("OK ") ? resolve(text.replace(/^OK \d+\n/, "")) : reject(new Error(`connection closed: ${JSON.stringify(text)}`))));
    s.on("error", reject);
  });
}

/** vsockConnectOnce, tried up to `attempts` times `everyMs` apart while the guest's listener comes up. */
export async function vsockConnect(udsPath: string, port: number, attempts = 20, everyMs = 500): Promise<string> {
  for (let i = 1; ; i++) {
    try {
      return await vsockConnectOnce(udsPath, port);
    } catch (e) {
      if (i >= attempts) throw e;
      await Bun.sleep(everyMs);
    }
  }
}
