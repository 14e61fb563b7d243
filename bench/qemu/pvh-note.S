# The ELF note that makes an ELF a PVH kernel: XEN_ELFNOTE_PHYS32_ENTRY (type 18, name "Xen"), whose
# descriptor is the guest-physical address of a 32-bit entry point (xen/include/public/elfnote.h;
# xen's docs/misc/pvh.pandoc). QEMU's -kernel loader looks for it and starts the guest there in 32-bit
# protected mode with paging off. `pvh_entry` is set at link time (ld --defsym or pvh-long.S).
# The descriptor is 8 bytes, as Linux's own note is on x86-64 (a pointer-sized value).

	.section .note.Xen, "a", @note
	.balign	4
	.long	2f - 1f				# n_namesz
	.long	4f - 3f				# n_descsz
	.long	XEN_ELFNOTE_PHYS32_ENTRY	# n_type
1:	.asciz	"Xen"
2:	.balign	4
3:	.quad	pvh_entry
4:
