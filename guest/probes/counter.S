# counter: a guest that counts, for snapshot and restore. Forever: add 1 to the 32-bit counter in its own
# memory, write the new value to SCRATCH_PORT (4 bytes) and its low byte to COM1. A snapshot taken at any
# point and restored elsewhere must go on from the value in memory, with no gap and no repeat, and the
# bytes on the port show where it stopped and where it went on.
#
# Like first-write it runs from the same bytes in two CPU modes: kindling enters it in 64-bit mode at CPL0,
# the benchmark boots it under QEMU as a PVH ELF in 32-bit protected mode. Every instruction below encodes
# the same in both (no REX prefix, no `inc`: 0x40-0x4f are REX prefixes in 64-bit mode); `counter` is linked
# below 4 GiB, so `mov $counter, %ebx` zero-extends into RBX.

	.code64
	.text
	.globl _start
_start:
	mov	$counter, %ebx
1:	mov	(%rbx), %eax
	add	$1, %eax
	mov	%eax, (%rbx)			# the count, in memory
	mov	$SCRATCH_PORT, %edx
	out	%eax, %dx			# the count, on the port: one KVM_EXIT_IO
	mov	$COM1_PORT, %edx
	out	%al, %dx			# its low byte, on the UART
	jmp	1b

	.data
	.align	8
counter:
	.long	0
