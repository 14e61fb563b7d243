// The host networking UAPI a TAP backend needs: `struct ifreq` (<linux/if.h>) and the tun/tap ioctls and
// flags (<linux/if_tun.h>), with the kernel's names. The kernel side is drivers/net/tun.c; the user-level
// story is Documentation/networking/tuntap.rst.

import { _IOR, _IOW, registerIoctlName } from "../kvm/ioctl.ts";
import { array, struct, union } from "../kvm/struct.ts";

/** Longest interface name plus its NUL (<linux/if.h>). */
export const IFNAMSIZ = 16;

/** `struct ifmap` (<linux/if.h>): only here because it is the widest member of ifreq's union. */
export const ifmap = struct("ifmap", [
  ["mem_start", "u64"], ["mem_end", "u64"], ["base_addr", "u16"], ["irq", "u8"], ["dma", "u8"], ["port", "u8"],
], { size: 24 });

/** `struct sockaddr` (<linux/socket.h>): family and 14 bytes of address. */
export const sockaddr = struct("sockaddr", [["sa_family", "u16"], ["sa_data", array("u8", 14)]], { size: 16 });

/**
 * `struct ifreq` (<linux/if.h>): an interface name, then a union of per-request arguments. The tun ioctls
 * use `ifr_flags` (IFF_TAP, IFF_NO_PI, IFF_VNET_HDR). In C the members are reached through macros
 * (`ifr_name` is `ifr_ifrn.ifrn_name`, `ifr_flags` is `ifr_ifru.ifru_flags`); here by their full paths.
 * 40 bytes on x86_64.
 */
export const ifreq = struct("ifreq", [
  ["ifr_ifrn", union("ifr_ifrn", [["ifrn_name", array("u8", IFNAMSIZ)]])],
  ["ifr_ifru", union("ifr_ifru", [
    ["ifru_addr", sockaddr],
    ["ifru_flags", "i16"],
    ["ifru_ivalue", "i32"],
    ["ifru_mtu", "i32"],
    ["ifru_map", ifmap],
    ["ifru_slave", array("u8", IFNAMSIZ)],
    ["ifru_newname", array("u8", IFNAMSIZ)],
    ["ifru_data", "u64"],
  ])],
], { size: 40 });

// ---- <linux/if_tun.h> ----

/** The ioctl family of tun/tap. */
const TUN_IOC_TYPE = "T".charCodeAt(0);

// TUNSETIFF takes a struct ifreq but is declared with `int` (historical), so its number carries 4 as size.
export const TUNSETIFF = _IOW(TUN_IOC_TYPE, 202, 4);
export const TUNSETPERSIST = _IOW(TUN_IOC_TYPE, 203, 4);
export const TUNGETFEATURES = _IOR(TUN_IOC_TYPE, 207, 4);
/** The argument is the TUN_F_* mask itself, not a pointer to it. */
export const TUNSETOFFLOAD = _IOW(TUN_IOC_TYPE, 208, 4);
export const TUNGETIFF = _IOR(TUN_IOC_TYPE, 210, 4);
export const TUNGETVNETHDRSZ = _IOR(TUN_IOC_TYPE, 215, 4);
/** The argument points to an int: the size of the virtio-net header before each frame. */
export const TUNSETVNETHDRSZ = _IOW(TUN_IOC_TYPE, 216, 4);

for (const [name, request] of Object.entries({
  TUNSETIFF, TUNSETPERSIST, TUNGETFEATURES, TUNSETOFFLOAD, TUNGETIFF, TUNGETVNETHDRSZ, TUNSETVNETHDRSZ,
})) registerIoctlName(name, request);

// ifr_flags for TUNSETIFF.
export const IFF_TUN = 0x0001;
/** Ethernet frames (a TUN device carries IP packets). */
export const IFF_TAP = 0x0002;
/** No 4-byte packet-information prefix before each frame. */
export const IFF_NO_PI = 0x1000;
/** Each frame is preceded by a virtio-net header (size set with TUNSETVNETHDRSZ, default 10). */
export const IFF_VNET_HDR = 0x4000;

// TUNSETOFFLOAD flags: what the reader of the fd (kindling, for the guest) can take. The kernel may then
// hand over frames with a partial checksum (CSUM) or GSO super-frames (TSO4/6, UFO) instead of finishing them.
export const TUN_F_CSUM = 0x01;
export const TUN_F_TSO4 = 0x02;
export const TUN_F_TSO6 = 0x04;
export const TUN_F_TSO_ECN = 0x08;
/** Accepted but ignored since Linux 4.14, which stopped producing UFO frames. */
export const TUN_F_UFO = 0x10;
