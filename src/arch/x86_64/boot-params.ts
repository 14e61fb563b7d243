// The x86 Linux boot protocol's structures: struct setup_header, struct boot_params ("the zero page") and
// struct boot_e820_entry, declared field by field as arch/x86/include/uapi/asm/bootparam.h (Linux 6.1) has
// them. What each field means is in Documentation/x86/boot.rst (setup_header) and
// Documentation/x86/zero-page.rst (the rest of boot_params).
//
// A bzImage starts with the same bytes a boot_params page does: its setup header sits at
// boot_params.offsetOf("hdr") (0x1f1) in the file. That is how bzimage.ts finds it without an offset of
// its own.

import { array, struct } from "../../kvm/struct.ts";

// ---- Constants from bootparam.h ----

/** setup_header.loadflags bits (boot.rst, "loadflags"). */
export const LOADED_HIGH = 1 << 0; // the protected-mode code is loaded at 0x100000
export const KASLR_FLAG = 1 << 1; // set by the kernel itself; loaders leave it alone
export const QUIET_FLAG = 1 << 5;
export const KEEP_SEGMENTS = 1 << 6; // obsolete
export const CAN_USE_HEAP = 1 << 7; // heap_end_ptr is valid (only the real-mode setup code uses the heap)

/** setup_header.xloadflags bits (protocol 2.12+). */
export const XLF_KERNEL_64 = 1 << 0; // the kernel has the 64-bit entry point at load address + 0x200
export const XLF_CAN_BE_LOADED_ABOVE_4G = 1 << 1;
export const XLF_EFI_HANDOVER_32 = 1 << 2;
export const XLF_EFI_HANDOVER_64 = 1 << 3;
export const XLF_EFI_KEXEC = 1 << 4;
export const XLF_5LEVEL = 1 << 5;
export const XLF_5LEVEL_ENABLED = 1 << 6;

/** boot_params.hdr.boot_flag: the 0xAA55 "boot sector" signature (boot.rst). */
export const BOOT_FLAG_MAGIC = 0xaa55;
/** boot_params.hdr.header: the bytes "HdrS", read as a little-endian u32 (boot.rst, protocol 2.00+). */
export const HDRS_MAGIC = 0x53726448;
/** boot_params.hdr.type_of_loader: 0xFF means "undefined" (boot.rst, "type_of_loader"). */
export const TYPE_OF_LOADER_UNDEFINED = 0xff;
/** boot_params.hdr.vid_mode: 0xFFFF asks for the "normal" VGA mode (boot.rst, "vid_mode"; NORMAL_VGA in arch/x86/boot/video.h). */
export const NORMAL_VGA = 0xffff;
/** The number of entries boot_params.e820_table has room for. */
export const E820_MAX_ENTRIES_ZEROPAGE = 128;

/** boot.rst's protocol versions are (major << 8) | minor: 0x020c is 2.12. */
export const bootProtocolVersion = (major: number, minor: number) => (major << 8) | minor;

// ---- struct setup_header ----

export const setup_header = struct(
  "setup_header",
  [
    ["setup_sects", "u8"],
    ["root_flags", "u16"],
    ["syssize", "u32"],
    ["ram_size", "u16"],
    ["vid_mode", "u16"],
    ["root_dev", "u16"],
    ["boot_flag", "u16"],
    ["jump", "u16"],
    ["header", "u32"],
    ["version", "u16"],
    ["realmode_swtch", "u32"],
    ["start_sys_seg", "u16"],
    ["kernel_version", "u16"],
    ["type_of_loader", "u8"],
    ["loadflags", "u8"],
    ["setup_move_size", "u16"],
    ["code32_start", "u32"],
    ["ramdisk_image", "u32"],
    ["ramdisk_size", "u32"],
    ["bootsect_kludge", "u32"],
    ["heap_end_ptr", "u16"],
    ["ext_loader_ver", "u8"],
    ["ext_loader_type", "u8"],
    ["cmd_line_ptr", "u32"],
    ["initrd_addr_max", "u32"],
    ["kernel_alignment", "u32"],
    ["relocatable_kernel", "u8"],
    ["min_alignment", "u8"],
    ["xloadflags", "u16"],
    ["cmdline_size", "u32"],
    ["hardware_subarch", "u32"],
    ["hardware_subarch_data", "u64"],
    ["payload_offset", "u32"],
    ["payload_length", "u32"],
    ["setup_data", "u64"],
    ["pref_address", "u64"],
    ["init_size", "u32"],
    ["handover_offset", "u32"],
    ["kernel_info_offset", "u32"],
  ],
  { packed: true, size: 0x7b },
);

// ---- The other members of boot_params (only their sizes matter to kindling; kept whole for readers) ----

/** include/uapi/linux/screen_info.h: what the firmware left the display in. Kindling leaves it zero. */
export const screen_info = struct(
  "screen_info",
  [
    ["orig_x", "u8"], ["orig_y", "u8"], ["ext_mem_k", "u16"], ["orig_video_page", "u16"],
    ["orig_video_mode", "u8"], ["orig_video_cols", "u8"], ["flags", "u8"], ["unused2", "u8"],
    ["orig_video_ega_bx", "u16"], ["unused3", "u16"], ["orig_video_lines", "u8"], ["orig_video_isVGA", "u8"],
    ["orig_video_points", "u16"],
    ["lfb_width", "u16"], ["lfb_height", "u16"], ["lfb_depth", "u16"], ["lfb_base", "u32"], ["lfb_size", "u32"],
    ["cl_magic", "u16"], ["cl_offset", "u16"], ["lfb_linelength", "u16"],
    ["red_size", "u8"], ["red_pos", "u8"], ["green_size", "u8"], ["green_pos", "u8"],
    ["blue_size", "u8"], ["blue_pos", "u8"], ["rsvd_size", "u8"], ["rsvd_pos", "u8"],
    ["vesapm_seg", "u16"], ["vesapm_off", "u16"], ["pages", "u16"], ["vesa_attributes", "u16"],
    ["capabilities", "u32"], ["ext_lfb_base", "u32"], ["_reserved", array("u8", 2)],
  ],
  { packed: true, size: 0x40 },
);

/** include/uapi/linux/apm_bios.h */
export const apm_bios_info = struct(
  "apm_bios_info",
  [
    ["version", "u16"], ["cseg", "u16"], ["offset", "u32"], ["cseg_16", "u16"], ["dseg", "u16"],
    ["flags", "u16"], ["cseg_len", "u16"], ["cseg_16_len", "u16"], ["dseg_len", "u16"],
  ],
  { size: 0x14 },
);

/** arch/x86/include/uapi/asm/ist.h (Intel SpeedStep). */
export const ist_info = struct("ist_info", [
  ["signature", "u32"], ["command", "u32"], ["event", "u32"], ["perf_level", "u32"],
]);

export const sys_desc_table = struct("sys_desc_table", [["length", "u16"], ["table", array("u8", 14)]]);

export const olpc_ofw_header = struct(
  "olpc_ofw_header",
  [["ofw_magic", "u32"], ["ofw_version", "u32"], ["cif_handler", "u32"], ["irq_desc_table", "u32"]],
  { packed: true },
);

/** include/uapi/video/edid.h */
export const edid_info = struct("edid_info", [["dummy", array("u8", 128)]]);

export const efi_info = struct("efi_info", [
  ["efi_loader_signature", "u32"], ["efi_systab", "u32"], ["efi_memdesc_size", "u32"],
  ["efi_memdesc_version", "u32"], ["efi_memmap", "u32"], ["efi_memmap_size", "u32"],
  ["efi_systab_hi", "u32"], ["efi_memmap_hi", "u32"],
]);

/**
 * include/uapi/linux/edd.h: BIOS Enhanced Disk Drive info. `params` is struct edd_device_params (74 packed
 * bytes of disk geometry and device path), kept as bytes: nothing in a microVM fills it.
 */
export const EDD_DEVICE_PARAM_SIZE = 74;
export const edd_info = struct(
  "edd_info",
  [
    ["device", "u8"], ["version", "u8"], ["interface_support", "u16"], ["legacy_max_cylinder", "u16"],
    ["legacy_max_head", "u8"], ["legacy_sectors_per_track", "u8"], ["params", array("u8", EDD_DEVICE_PARAM_SIZE)],
  ],
  { packed: true, size: 82 },
);
export const EDD_MBR_SIG_MAX = 16;
export const EDDMAXNR = 6;

// ---- struct boot_e820_entry and struct boot_params ----

/** One memory-map entry as the boot protocol carries it (types in e820.ts). */
export const boot_e820_entry = struct("boot_e820_entry", [["addr", "u64"], ["size", "u64"], ["type", "u32"]], {
  packed: true,
  size: 20,
});

/** The "zero page": everything the kernel learns from its loader (zero-page.rst lists each field). */
export const boot_params = struct(
  "boot_params",
  [
    ["screen_info", screen_info],
    ["apm_bios_info", apm_bios_info],
    ["_pad2", array("u8", 4)],
    ["tboot_addr", "u64"],
    ["ist_info", ist_info],
    ["acpi_rsdp_addr", "u64"],
    ["_pad3", array("u8", 8)],
    ["hd0_info", array("u8", 16)],
    ["hd1_info", array("u8", 16)],
    ["sys_desc_table", sys_desc_table],
    ["olpc_ofw_header", olpc_ofw_header],
    ["ext_ramdisk_image", "u32"],
    ["ext_ramdisk_size", "u32"],
    ["ext_cmd_line_ptr", "u32"],
    ["_pad4", array("u8", 112)],
    ["cc_blob_address", "u32"],
    ["edid_info", edid_info],
    ["efi_info", efi_info],
    ["alt_mem_k", "u32"],
    ["scratch", "u32"],
    ["e820_entries", "u8"],
    ["eddbuf_entries", "u8"],
    ["edd_mbr_sig_buf_entries", "u8"],
    ["kbd_status", "u8"],
    ["secure_boot", "u8"],
    ["_pad5", array("u8", 2)],
    // The kernel's header.S sets this to 0xff in the image; a loader that copies more than the setup header
    // into a clean page carries it along, and the kernel then knows to distrust the rest (bootparam.h).
    ["sentinel", "u8"],
    ["_pad6", array("u8", 1)],
    ["hdr", setup_header],
    // Padding up to 0x290; its length is the kernel's own expression (0x290 - 0x1f1 - sizeof(setup_header)).
    ["_pad7", array("u8", 0x290 - 0x1f1 - setup_header.size)],
    ["edd_mbr_sig_buffer", array("u32", EDD_MBR_SIG_MAX)],
    ["e820_table", array(boot_e820_entry, E820_MAX_ENTRIES_ZEROPAGE)],
    ["_pad8", array("u8", 48)],
    ["eddbuf", array(edd_info, EDDMAXNR)],
    ["_pad9", array("u8", 276)],
  ],
  { packed: true, size: 4096 },
);
