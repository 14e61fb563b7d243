// The virtio constants and structures kindling's devices use, with Linux's UAPI names
// (<linux/virtio_config.h>, <linux/virtio_ring.h>, <linux/virtio_mmio.h>, <linux/virtio_ids.h>,
// <linux/virtio_blk.h>, <linux/virtio_balloon.h>). The virtio 1.2 specification uses other names for some of them (VIRTQ_DESC_F_NEXT
// for VRING_DESC_F_NEXT, VIRTIO_F_INDIRECT_DESC for VIRTIO_RING_F_INDIRECT_DESC); both are given where
// they differ, so either can be searched.
//
// Everything virtio puts in memory or in configuration space is little-endian (virtio 1.2 §1.4).

import { array, struct } from "../../kvm/struct.ts";

// ---- Device status (§2.1; <linux/virtio_config.h>) ----

export const VIRTIO_CONFIG_S_ACKNOWLEDGE = 1;
export const VIRTIO_CONFIG_S_DRIVER = 2;
export const VIRTIO_CONFIG_S_DRIVER_OK = 4;
export const VIRTIO_CONFIG_S_FEATURES_OK = 8;
/** Spec name DEVICE_NEEDS_RESET: set by the device after an error it cannot recover from. */
export const VIRTIO_CONFIG_S_NEEDS_RESET = 0x40;
export const VIRTIO_CONFIG_S_FAILED = 0x80;

// ---- Reserved feature bits (§6; <linux/virtio_config.h>, <linux/virtio_ring.h>) ----

/** Spec name VIRTIO_F_INDIRECT_DESC: descriptors with VRING_DESC_F_INDIRECT (§2.7.5.3). */
export const VIRTIO_RING_F_INDIRECT_DESC = 28;
/** Spec name VIRTIO_F_EVENT_IDX: the used_event / avail_event fields (§2.7.7, §2.7.10). */
export const VIRTIO_RING_F_EVENT_IDX = 29;
/** A non-legacy (virtio 1.x) device; virtio-mmio version 2 requires it. */
export const VIRTIO_F_VERSION_1 = 32;
export const VIRTIO_F_ACCESS_PLATFORM = 33;
export const VIRTIO_F_RING_PACKED = 34;
export const VIRTIO_F_NOTIFICATION_DATA = 38;

/** A feature bit number as a mask in the 64-bit feature word. */
export const bit = (n: number): bigint => 1n << BigInt(n);

// ---- Device types (§5; <linux/virtio_ids.h>) ----

export const VIRTIO_ID_NET = 1;
export const VIRTIO_ID_BLOCK = 2;
export const VIRTIO_ID_CONSOLE = 3;
export const VIRTIO_ID_RNG = 4;
export const VIRTIO_ID_BALLOON = 5;
export const VIRTIO_ID_VSOCK = 19;

// ---- Split virtqueues (§2.7; <linux/virtio_ring.h>) ----

/** Spec VIRTQ_DESC_F_NEXT: the chain continues at `next`. */
export const VRING_DESC_F_NEXT = 1;
/** Spec VIRTQ_DESC_F_WRITE: the buffer is device-writable (otherwise device-readable). */
export const VRING_DESC_F_WRITE = 2;
/** Spec VIRTQ_DESC_F_INDIRECT: the buffer is a table of further descriptors. */
export const VRING_DESC_F_INDIRECT = 4;
/** Spec VIRTQ_USED_F_NO_NOTIFY: the device asks the driver not to notify (without EVENT_IDX). */
export const VRING_USED_F_NO_NOTIFY = 1;
/** Spec VIRTQ_AVAIL_F_NO_INTERRUPT: the driver asks for no used-buffer interrupts (without EVENT_IDX). */
export const VRING_AVAIL_F_NO_INTERRUPT = 1;

/** The largest split-queue size (§2.7: Queue Size is a power of 2 up to 32768). */
export const VIRTQUEUE_MAX_SIZE = 32768;

/** One descriptor table entry (§2.7.5). */
export const vring_desc = struct("vring_desc", [
  ["addr", "u64"], ["len", "u32"], ["flags", "u16"], ["next", "u16"],
], { size: 16 });

/** The available ring (§2.7.6); `ring` has Queue Size entries, then `used_event` follows (EVENT_IDX). */
export const vring_avail = struct("vring_avail", [["flags", "u16"], ["idx", "u16"], ["ring", array("u16", 0)]]);

/** One used ring element (§2.7.8): the head of a returned chain and the bytes written into it. */
export const vring_used_elem = struct("vring_used_elem", [["id", "u32"], ["len", "u32"]], { size: 8 });

/** The used ring (§2.7.8); `ring` has Queue Size entries, then `avail_event` follows (EVENT_IDX). */
export const vring_used = struct("vring_used", [["flags", "u16"], ["idx", "u16"], ["ring", array(vring_used_elem, 0)]]);

/** Alignment the driver must give each part (§2.7 table "Virtqueue Part Alignment"). */
export const VRING_DESC_ALIGN = 16;
export const VRING_AVAIL_ALIGN = 2;
export const VRING_USED_ALIGN = 4;

/** Bytes of each part for a queue of `size` entries, the trailing event field included (§2.7). */
export const vringDescBytes = (size: number) => vring_desc.size * size;
export const vringAvailBytes = (size: number) => vring_avail.offsetOf("ring") + 2 * size + 2;
export const vringUsedBytes = (size: number) => vring_used.offsetOf("ring") + vring_used_elem.size * size + 2;

/**
 * Linux's vring_need_event(): with EVENT_IDX, should moving the index from `old` to `newIdx` notify the
 * side that asked to hear about `eventIdx`? True when `eventIdx` lies in [old, newIdx), modulo 2^16.
 */
export function vring_need_event(eventIdx: number, newIdx: number, old: number): boolean {
  return ((newIdx - eventIdx - 1) & 0xffff) < ((newIdx - old) & 0xffff);
}

// ---- The virtio-mmio transport, version 2 (§4.2.2; <linux/virtio_mmio.h>) ----

/** "virt" in little-endian ASCII. */
export const VIRTIO_MMIO_MAGIC = 0x74726976;
/** Version 2 is the virtio 1.x register layout (version 1 is legacy). */
export const VIRTIO_MMIO_VERSION_2 = 2;

export const VIRTIO_MMIO_MAGIC_VALUE = 0x000;
export const VIRTIO_MMIO_VERSION = 0x004;
export const VIRTIO_MMIO_DEVICE_ID = 0x008;
export const VIRTIO_MMIO_VENDOR_ID = 0x00c;
export const VIRTIO_MMIO_DEVICE_FEATURES = 0x010;
export const VIRTIO_MMIO_DEVICE_FEATURES_SEL = 0x014;
export const VIRTIO_MMIO_DRIVER_FEATURES = 0x020;
export const VIRTIO_MMIO_DRIVER_FEATURES_SEL = 0x024;
/** Legacy (version 1) only. */
export const VIRTIO_MMIO_GUEST_PAGE_SIZE = 0x028;
export const VIRTIO_MMIO_QUEUE_SEL = 0x030;
export const VIRTIO_MMIO_QUEUE_NUM_MAX = 0x034;
export const VIRTIO_MMIO_QUEUE_NUM = 0x038;
/** Legacy (version 1) only. */
export const VIRTIO_MMIO_QUEUE_ALIGN = 0x03c;
/** Legacy (version 1) only. */
export const VIRTIO_MMIO_QUEUE_PFN = 0x040;
export const VIRTIO_MMIO_QUEUE_READY = 0x044;
export const VIRTIO_MMIO_QUEUE_NOTIFY = 0x050;
export const VIRTIO_MMIO_INTERRUPT_STATUS = 0x060;
export const VIRTIO_MMIO_INTERRUPT_ACK = 0x064;
export const VIRTIO_MMIO_STATUS = 0x070;
export const VIRTIO_MMIO_QUEUE_DESC_LOW = 0x080;
export const VIRTIO_MMIO_QUEUE_DESC_HIGH = 0x084;
/** Spec name QueueDriverLow: the available ring. */
export const VIRTIO_MMIO_QUEUE_AVAIL_LOW = 0x090;
export const VIRTIO_MMIO_QUEUE_AVAIL_HIGH = 0x094;
/** Spec name QueueDeviceLow: the used ring. */
export const VIRTIO_MMIO_QUEUE_USED_LOW = 0x0a0;
export const VIRTIO_MMIO_QUEUE_USED_HIGH = 0x0a4;
export const VIRTIO_MMIO_SHM_SEL = 0x0ac;
export const VIRTIO_MMIO_SHM_LEN_LOW = 0x0b0;
export const VIRTIO_MMIO_SHM_LEN_HIGH = 0x0b4;
export const VIRTIO_MMIO_SHM_BASE_LOW = 0x0b8;
export const VIRTIO_MMIO_SHM_BASE_HIGH = 0x0bc;
/** Only with VIRTIO_F_RING_RESET, which kindling does not offer. */
export const VIRTIO_MMIO_QUEUE_RESET = 0x0c0;
export const VIRTIO_MMIO_CONFIG_GENERATION = 0x0fc;
/** Device-specific configuration space starts here. */
export const VIRTIO_MMIO_CONFIG = 0x100;

/** InterruptStatus bits: a used buffer was returned / the configuration changed. */
export const VIRTIO_MMIO_INT_VRING = 1 << 0;
export const VIRTIO_MMIO_INT_CONFIG = 1 << 1;

// ---- Block device (§5.2; <linux/virtio_blk.h>) ----

export const VIRTIO_BLK_F_SIZE_MAX = 1;
export const VIRTIO_BLK_F_SEG_MAX = 2;
export const VIRTIO_BLK_F_GEOMETRY = 4;
export const VIRTIO_BLK_F_RO = 5;
export const VIRTIO_BLK_F_BLK_SIZE = 6;
export const VIRTIO_BLK_F_FLUSH = 9;
export const VIRTIO_BLK_F_TOPOLOGY = 10;
export const VIRTIO_BLK_F_CONFIG_WCE = 11;
export const VIRTIO_BLK_F_MQ = 12;
export const VIRTIO_BLK_F_DISCARD = 13;
export const VIRTIO_BLK_F_WRITE_ZEROES = 14;

export const VIRTIO_BLK_T_IN = 0;
export const VIRTIO_BLK_T_OUT = 1;
export const VIRTIO_BLK_T_FLUSH = 4;
export const VIRTIO_BLK_T_GET_ID = 8;
export const VIRTIO_BLK_T_DISCARD = 11;
export const VIRTIO_BLK_T_WRITE_ZEROES = 13;

export const VIRTIO_BLK_S_OK = 0;
export const VIRTIO_BLK_S_IOERR = 1;
export const VIRTIO_BLK_S_UNSUPP = 2;

/** Length of the GET_ID answer: a serial string, NUL-padded, not necessarily NUL-terminated. */
export const VIRTIO_BLK_ID_BYTES = 20;
/** virtio-blk addresses in 512-byte sectors whatever blk_size says (§5.2.6). */
export const SECTOR_SHIFT = 9;
export const SECTOR_SIZE = 1 << SECTOR_SHIFT;

/** The request header every virtio-blk request starts with (§5.2.6). The status byte ends the request. */
export const virtio_blk_outhdr = struct("virtio_blk_outhdr", [
  ["type", "u32"], ["ioprio", "u32"], ["sector", "u64"],
], { size: 16 });

export const virtio_blk_geometry = struct("virtio_blk_geometry", [
  ["cylinders", "u16"], ["heads", "u8"], ["sectors", "u8"],
], { packed: true });

export const virtio_blk_topology = struct("virtio_blk_topology", [
  ["physical_block_exp", "u8"], ["alignment_offset", "u8"], ["min_io_size", "u16"], ["opt_io_size", "u32"],
], { packed: true });

/**
 * Block configuration space (§5.2.4), `__attribute__((packed))` in Linux. Fields past the ones a driver's
 * features enable read as whatever the device put there (kindling: zero). Later kernels append the
 * secure-erase fields after `unused1`; kindling offers none of the features that need them.
 */
export const virtio_blk_config = struct("virtio_blk_config", [
  ["capacity", "u64"],
  ["size_max", "u32"],
  ["seg_max", "u32"],
  ["geometry", virtio_blk_geometry],
  ["blk_size", "u32"],
  ["topology", virtio_blk_topology],
  ["writeback", "u8"],
  ["unused0", "u8"],
  ["num_queues", "u16"],
  ["max_discard_sectors", "u32"],
  ["max_discard_seg", "u32"],
  ["discard_sector_alignment", "u32"],
  ["max_write_zeroes_sectors", "u32"],
  ["max_write_zeroes_seg", "u32"],
  ["write_zeroes_may_unmap", "u8"],
  ["unused1", array("u8", 3)],
], { packed: true, size: 60 });

// ---- Network device (§5.1; <linux/virtio_net.h>) ----

/** The device finishes partial checksums the driver leaves (NEEDS_CSUM on transmit). */
export const VIRTIO_NET_F_CSUM = 0;
/** The driver accepts received frames with a partial checksum (NEEDS_CSUM) or DATA_VALID. */
export const VIRTIO_NET_F_GUEST_CSUM = 1;
export const VIRTIO_NET_F_CTRL_GUEST_OFFLOADS = 2;
export const VIRTIO_NET_F_MTU = 3;
/** `mac` in configuration space is valid. */
export const VIRTIO_NET_F_MAC = 5;
/** The driver accepts TCP/IPv4 GSO frames (up to 64 KiB) on receive. */
export const VIRTIO_NET_F_GUEST_TSO4 = 7;
export const VIRTIO_NET_F_GUEST_TSO6 = 8;
export const VIRTIO_NET_F_GUEST_ECN = 9;
export const VIRTIO_NET_F_GUEST_UFO = 10;
/** The device accepts TCP/IPv4 GSO frames on transmit and segments them. */
export const VIRTIO_NET_F_HOST_TSO4 = 11;
export const VIRTIO_NET_F_HOST_TSO6 = 12;
export const VIRTIO_NET_F_HOST_ECN = 13;
export const VIRTIO_NET_F_HOST_UFO = 14;
/** A received frame may span several receive chains; the header's num_buffers says how many. */
export const VIRTIO_NET_F_MRG_RXBUF = 15;
/** `status` in configuration space is valid. */
export const VIRTIO_NET_F_STATUS = 16;
export const VIRTIO_NET_F_CTRL_VQ = 17;

/** `status` bits. */
export const VIRTIO_NET_S_LINK_UP = 1;
export const VIRTIO_NET_S_ANNOUNCE = 2;

/** Network configuration space (§5.1.4), packed in Linux. kindling fills `mac` and `status`. */
export const virtio_net_config = struct("virtio_net_config", [
  ["mac", array("u8", 6)],
  ["status", "u16"],
  ["max_virtqueue_pairs", "u16"],
  ["mtu", "u16"],
  ["speed", "u32"],
  ["duplex", "u8"],
  ["rss_max_key_size", "u8"],
  ["rss_max_indirection_table_length", "u16"],
  ["supported_hash_types", "u32"],
], { packed: true, size: 24 });

/** `flags`: csum_start/csum_offset describe a checksum still to compute (§5.1.6.2). */
export const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
/** `flags` (receive): the checksum was already checked. */
export const VIRTIO_NET_HDR_F_DATA_VALID = 2;
export const VIRTIO_NET_HDR_F_RSC_INFO = 4;

export const VIRTIO_NET_HDR_GSO_NONE = 0;
export const VIRTIO_NET_HDR_GSO_TCPV4 = 1;
export const VIRTIO_NET_HDR_GSO_UDP = 3;
export const VIRTIO_NET_HDR_GSO_TCPV6 = 4;
export const VIRTIO_NET_HDR_GSO_UDP_L4 = 5;
/** Or'd into gso_type: the TCP segments carry ECN's CWR flag. */
export const VIRTIO_NET_HDR_GSO_ECN = 0x80;

/**
 * The header before every frame on both queues (§5.1.6). With VIRTIO_F_VERSION_1 it is always these
 * 12 bytes, num_buffers included, whether or not VIRTIO_NET_F_MRG_RXBUF was negotiated.
 */
export const virtio_net_hdr_v1 = struct("virtio_net_hdr_v1", [
  ["flags", "u8"], ["gso_type", "u8"], ["hdr_len", "u16"], ["gso_size", "u16"],
  ["csum_start", "u16"], ["csum_offset", "u16"], ["num_buffers", "u16"],
], { size: 12 });

// ---- Socket device, vsock (§5.10; <linux/virtio_vsock.h>) ----

/** SOCK_SEQPACKET sockets as well as streams; kindling, like Firecracker, offers streams only. */
export const VIRTIO_VSOCK_F_SEQPACKET = 1;

/** The context ID of the host (<linux/vm_sockets.h> VMADDR_CID_HOST). Guests get 3 and up. */
export const VMADDR_CID_HOST = 2;

/** Socket configuration space (§5.10.4): the guest's context ID; only the low 32 bits are used. */
export const virtio_vsock_config = struct("virtio_vsock_config", [["guest_cid", "u64"]], { packed: true, size: 8 });

/** The header before every packet on the rx and tx queues (§5.10.6), packed in Linux. */
export const virtio_vsock_hdr = struct("virtio_vsock_hdr", [
  ["src_cid", "u64"], ["dst_cid", "u64"], ["src_port", "u32"], ["dst_port", "u32"],
  ["len", "u32"], ["type", "u16"], ["op", "u16"], ["flags", "u32"], ["buf_alloc", "u32"], ["fwd_cnt", "u32"],
], { packed: true, size: 44 });

export const VIRTIO_VSOCK_TYPE_STREAM = 1;
export const VIRTIO_VSOCK_TYPE_SEQPACKET = 2;

export const VIRTIO_VSOCK_OP_INVALID = 0;
/** Connect request. */
export const VIRTIO_VSOCK_OP_REQUEST = 1;
/** Connection accepted. */
export const VIRTIO_VSOCK_OP_RESPONSE = 2;
/** Connection refused or torn down. */
export const VIRTIO_VSOCK_OP_RST = 3;
/** The sender will receive and/or send no more (flags: VIRTIO_VSOCK_SHUTDOWN_RCV/SEND). */
export const VIRTIO_VSOCK_OP_SHUTDOWN = 4;
/** Data: `len` bytes follow the header. */
export const VIRTIO_VSOCK_OP_RW = 5;
/** The sender's buf_alloc/fwd_cnt changed: the receiver may have more credit. */
export const VIRTIO_VSOCK_OP_CREDIT_UPDATE = 6;
/** Please send a CREDIT_UPDATE. */
export const VIRTIO_VSOCK_OP_CREDIT_REQUEST = 7;

export const VIRTIO_VSOCK_SHUTDOWN_RCV = 1;
export const VIRTIO_VSOCK_SHUTDOWN_SEND = 2;

/** An event on the event queue (§5.10.6.7). */
export const virtio_vsock_event = struct("virtio_vsock_event", [["id", "u32"]], { size: 4 });
/** All connections were reset (after migration or a snapshot restore): the guest drops them. */
export const VIRTIO_VSOCK_EVENT_TRANSPORT_RESET = 0;

// ---- Traditional memory balloon (§5.5; <linux/virtio_balloon.h>) ----

/** The host must be told before the guest uses a deflated page (kindling does not offer it). */
export const VIRTIO_BALLOON_F_MUST_TELL_HOST = 0;
/** A statistics queue: the guest reports its memory statistics when the device returns the buffer. */
export const VIRTIO_BALLOON_F_STATS_VQ = 1;
/** The guest deflates the balloon when it runs out of memory, instead of invoking the OOM killer. */
export const VIRTIO_BALLOON_F_DEFLATE_ON_OOM = 2;
/** Free page hinting (free_page_vq, free_page_hint_cmd_id): not offered by kindling. */
export const VIRTIO_BALLOON_F_FREE_PAGE_HINT = 3;
/** The guest poisons free pages with poison_val: not offered by kindling. */
export const VIRTIO_BALLOON_F_PAGE_POISON = 4;
/** Free page reporting: the guest hands over ranges of free memory on reporting_vq. */
export const VIRTIO_BALLOON_F_PAGE_REPORTING = 5;

/** Inflate and deflate buffers are arrays of le32 page frame numbers of 4 KiB pages, whatever the guest's page size. */
export const VIRTIO_BALLOON_PFN_SHIFT = 12;

/** Configuration space (§5.5.4): num_pages is the host's target, actual the guest's answer. */
export const virtio_balloon_config = struct("virtio_balloon_config", [
  ["num_pages", "u32"], ["actual", "u32"], ["free_page_hint_cmd_id", "u32"], ["poison_val", "u32"],
], { size: 16 });

/** One statistic on the stats queue (§5.5.6.3): packed, 10 bytes. */
export const virtio_balloon_stat = struct("virtio_balloon_stat", [["tag", "u16"], ["val", "u64"]], { packed: true, size: 10 });

// Statistic tags (§5.5.6.3, and the later ones from Linux's header). Memory amounts are in bytes.
export const VIRTIO_BALLOON_S_SWAP_IN = 0;
export const VIRTIO_BALLOON_S_SWAP_OUT = 1;
export const VIRTIO_BALLOON_S_MAJFLT = 2;
export const VIRTIO_BALLOON_S_MINFLT = 3;
export const VIRTIO_BALLOON_S_MEMFREE = 4;
export const VIRTIO_BALLOON_S_MEMTOT = 5;
export const VIRTIO_BALLOON_S_AVAIL = 6;
export const VIRTIO_BALLOON_S_CACHES = 7;
export const VIRTIO_BALLOON_S_HTLB_PGALLOC = 8;
export const VIRTIO_BALLOON_S_HTLB_PGFAIL = 9;
export const VIRTIO_BALLOON_S_OOM_KILL = 10;
export const VIRTIO_BALLOON_S_ALLOC_STALL = 11;
export const VIRTIO_BALLOON_S_ASYNC_SCAN = 12;
export const VIRTIO_BALLOON_S_DIRECT_SCAN = 13;
export const VIRTIO_BALLOON_S_ASYNC_RECLAIM = 14;
export const VIRTIO_BALLOON_S_DIRECT_RECLAIM = 15;
