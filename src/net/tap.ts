// A TAP device: a virtual Ethernet interface on the host whose "wire" is a file descriptor. Every write()
// on the fd is one frame the host's network stack receives on the interface; every frame the host sends
// out of the interface is one read() (Documentation/networking/tuntap.rst).
//
// kindling opens it the way Firecracker does: IFF_TAP|IFF_NO_PI|IFF_VNET_HDR, so each frame is preceded
// by a virtio-net header (virtio 1.2 §5.1.6) and the guest's checksum and segmentation offloads pass
// through the host untouched; TUNSETVNETHDRSZ makes that header the 12-byte virtio_net_hdr_v1 a VERSION_1
// driver uses. TUNSETIFF attaches to the interface of that name, creating it if it does not exist (a
// non-persistent interface disappears when the fd is closed). The host puts an address on it and sets it
// up (`ip addr add`, `ip link set up`), or bridges it.
//
// Frames from the host are read by a TapReader worker thread (tap-reader-worker.ts), which blocks in read()
// so the main thread never does; the fd is therefore blocking. Writes come from the main thread and do not
// block: a TAP's socket send buffer is unlimited (INT_MAX), and the frame goes straight into the host stack.

import { close, ioctl, kickSignal, installKickHandler, open, O_RDWR, pthreadKill, write_ } from "../kvm/libc.ts";
import { StructView } from "../kvm/struct.ts";
import { TAP_READER, TAP_READER_WORDS, type TapReaderInit } from "./tap-reader-protocol.ts";
import {
  IFF_NO_PI, IFF_TAP, IFF_VNET_HDR, IFNAMSIZ, ifreq, TUNGETVNETHDRSZ, TUNSETIFF, TUNSETOFFLOAD, TUNSETVNETHDRSZ,
} from "./uapi.ts";

export const TUN_DEVICE = "/dev/net/tun";

/**
 * The largest frame kindling moves through a TAP, virtio-net header included: 12 (virtio_net_hdr_v1) +
 * 14 (Ethernet header) + 65535 (the largest IP packet a GSO frame carries) + 1, Firecracker's bound.
 */
export const TAP_MAX_FRAME = 65562;

/**
 * Check an interface name as the kernel's dev_valid_name() does (net/core/dev.c): 1 to IFNAMSIZ-1 bytes,
 * not "." or "..", no '/', ':' or whitespace. Returns a message naming the problem, or undefined.
 */
export function invalidInterfaceName(name: string): string | undefined {
  const bytes = new TextEncoder().encode(name);
  if (bytes.byteLength === 0) return "an interface name cannot be empty";
  if (bytes.byteLength >= IFNAMSIZ) return `interface name ${JSON.stringify(name)} is ${bytes.byteLength} bytes; at most ${IFNAMSIZ - 1}`;
  if (name === "." || name === "..") return `interface name ${JSON.stringify(name)} is not allowed`;
  if (/[/:\s]/.test(name)) return `interface name ${JSON.stringify(name)} contains '/', ':' or whitespace`;
  return undefined;
}

export interface TapOptions {
  /** Bytes of virtio-net header before each frame (default 12: virtio_net_hdr_v1). */
  vnetHdrSize?: number;
}

export interface TapReadOptions {
  /** Frames handed over and not yet released before the reader waits (default 64). */
  maxInFlight?: number;
  /** The reader thread stopped on an error (the interface was deleted, its namespace went away). */
  onError?: (message: string) => void;
}

/** How long close() keeps kicking a reader thread before giving up on it. */
const STOP_TIMEOUT_MS = 2000;
const KICK_INTERVAL_MS = 5;

export class Tap {
  /** The interface name the kernel gave back (the one asked for). */
  readonly name: string;
  readonly vnetHdrSize: number;
  private fdOrClosed: number;
  private worker?: Worker;
  private ctl?: Int32Array;
  private thread?: bigint;
  private stopping?: Promise<void>;
  /** Called when the reader thread reports that it left its loop. */
  private onStopped?: () => void;

  /** Open `/dev/net/tun` and attach to (or create) the TAP interface `name`. Errors name the step that failed. */
  constructor(name: string, opts: TapOptions = {}) {
    const bad = invalidInterfaceName(name);
    if (bad) throw new Error(`TAP: ${bad}`);
    this.vnetHdrSize = opts.vnetHdrSize ?? 12;
    let fd: number;
    try {
      fd = open(TUN_DEVICE, O_RDWR);
    } catch (e) {
      throw new Error(`TAP ${name}: ${(e as Error).message} (is the tun module loaded, and may this user open it?)`);
    }
    try {
      const req = new StructView(ifreq);
      req.slice("ifr_ifrn.ifrn_name").set(new TextEncoder().encode(name));
      req.set("ifr_ifru.ifru_flags", IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
      ioctl(fd, TUNSETIFF, req.bytes,
        `TAP interface ${name} (needs CAP_NET_ADMIN or a TAP the host made for this user; fails if ${name} is a TUN, lacks vnet_hdr, or is in use)`);
      const nameBytes = req.slice("ifr_ifrn.ifrn_name");
      const end = nameBytes.indexOf(0);
      this.name = new TextDecoder().decode(nameBytes.subarray(0, end < 0 ? IFNAMSIZ : end));
      const size = new Int32Array([this.vnetHdrSize]);
      ioctl(fd, TUNSETVNETHDRSZ, new Uint8Array(size.buffer), `${this.vnetHdrSize}-byte virtio-net header on ${name}`);
    } catch (e) {
      close(fd);
      throw e;
    }
    this.fdOrClosed = fd;
  }

  get fd(): number {
    if (this.fdOrClosed < 0) throw new Error(`TAP ${this.name} is closed`);
    return this.fdOrClosed;
  }

  get closed(): boolean {
    return this.fdOrClosed < 0 || this.stopping !== undefined;
  }

  /** The virtio-net header size the kernel uses (TUNGETVNETHDRSZ), for checks. */
  kernelVnetHdrSize(): number {
    const size = new Int32Array(1);
    ioctl(this.fd, TUNGETVNETHDRSZ, new Uint8Array(size.buffer));
    return size[0]!;
  }

  /** TUNSETOFFLOAD: which of TUN_F_CSUM/TSO4/TSO6/UFO the reader (the guest) accepts. */
  setOffload(flags: number): void {
    ioctl(this.fd, TUNSETOFFLOAD, flags, `offload flags 0x${flags.toString(16)} on ${this.name}`);
  }

  /** Send one frame, virtio-net header first. Throws a SysError if the kernel refuses it (EINVAL: bad header). */
  write(frame: Uint8Array): void {
    if (this.closed) throw new Error(`TAP ${this.name} is closed`);
    write_(this.fd, frame);
  }

  /**
   * Start the reader thread: each frame (virtio-net header first) is passed to `onFrame` on the main
   * thread. Call `releaseFrame()` once per frame when done with it: at `maxInFlight` unreleased frames the
   * reader stops reading, and further frames wait in the kernel.
   */
  startReading(onFrame: (frame: Uint8Array) => void, opts: TapReadOptions = {}): void {
    if (this.worker) throw new Error(`TAP ${this.name}: already reading`);
    const fd = this.fd;
    installKickHandler();
    const ctl = new Int32Array(new SharedArrayBuffer(TAP_READER_WORDS * 4));
    const worker = new Worker(new URL("./tap-reader-worker.ts", import.meta.url).href);
    // A reader must not keep the process alive on its own.
    worker.unref();
    worker.onmessage = (e: MessageEvent<Uint8Array | { thread?: bigint; stopped?: boolean; error?: string }>) => {
      const m = e.data;
      if (m instanceof Uint8Array) {
        if (!this.stopping) onFrame(m);
      } else if (m.thread !== undefined) {
        // Kept even while closing: close() needs it to interrupt a read() the thread is blocked in.
        this.thread = m.thread;
      } else if (m.stopped) {
        if (m.error && !this.stopping) opts.onError?.(`TAP ${this.name}: reader stopped: ${m.error}`);
        this.onStopped?.();
      }
    };
    worker.onerror = (e) => opts.onError?.(`TAP ${this.name}: reader thread failed: ${e.message}`);
    this.worker = worker;
    this.ctl = ctl;
    const init: TapReaderInit = { fd, control: ctl.buffer as SharedArrayBuffer, maxFrame: TAP_MAX_FRAME, maxInFlight: opts.maxInFlight ?? 64 };
    worker.postMessage(init);
  }

  /** One frame passed to onFrame is no longer held: the reader may read another. */
  releaseFrame(): void {
    const ctl = this.ctl;
    if (!ctl) return;
    if (Atomics.sub(ctl, TAP_READER.IN_FLIGHT, 1) <= 0) Atomics.store(ctl, TAP_READER.IN_FLIGHT, 0);
    Atomics.notify(ctl, TAP_READER.IN_FLIGHT);
  }

  /**
   * Stop the reader and close the fd (a non-persistent interface then disappears). The reader thread may
   * be blocked in read(): it is kicked with a signal until it stops, and only then is the fd closed, so its
   * number cannot be reused under a read in progress. Resolves when the fd is closed.
   */
  close(): Promise<void> {
    if (this.stopping) return this.stopping;
    const worker = this.worker;
    const ctl = this.ctl;
    if (!worker || !ctl) {
      if (this.fdOrClosed >= 0) close(this.fdOrClosed);
      this.fdOrClosed = -1;
      this.stopping = Promise.resolve();
      return this.stopping;
    }
    this.stopping = new Promise<void>((resolve) => {
      const started = performance.now();
      let timer: ReturnType<typeof setInterval> | undefined;
      let finished = false;
      const finish = () => {
        if (finished) return;
        finished = true;
        if (timer) clearInterval(timer);
        worker.terminate();
        if (this.fdOrClosed >= 0) close(this.fdOrClosed);
        this.fdOrClosed = -1;
        resolve();
      };
      this.onStopped = finish;
      const kick = () => {
        Atomics.notify(ctl, TAP_READER.IN_FLIGHT);
        try {
          // The thread lives until terminate() in finish(), so the signal always has a target.
          if (this.thread !== undefined) pthreadKill(this.thread, kickSignal());
        } catch {
          // Nothing to interrupt.
        }
        // A thread that never answers (it never started): give up on it rather than hang.
        if (performance.now() - started > STOP_TIMEOUT_MS) finish();
      };
      Atomics.store(ctl, TAP_READER.STOP, 1);
      kick();
      // The kick can land just before the thread enters read(): repeat it until the thread says it stopped.
      timer = setInterval(kick, KICK_INTERVAL_MS);
    });
    return this.stopping;
  }
}
