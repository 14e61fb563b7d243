# first-write: the benchmark's "first guest instruction". Its first two instructions store the byte
# BOOT_TIMER_MAGIC (123) to the boot-timer device, so the VMM can time process start to guest code.
# Then it prints one marker byte on COM1 and resets the machine through the i8042.
#
# It runs in two CPU modes, from the same bytes:
#   - kindling loads the flat binary at HIMEM_START and enters _start in 64-bit mode at CPL0;
#   - the benchmark links it a second time as a PVH ELF for QEMU (bench/pvh.ts), entered at _start in
#     32-bit protected mode with paging off (xen's docs/misc/pvh.pandoc).
# Every instruction below encodes the same way in both modes: `mov $imm32, %eax` (B8 id) zero-extends
# into RAX in 64-bit mode, and `movb $imm8, (%rax)` (C6 00 ib) is `movb $imm8, (%eax)` in 32-bit mode
# (Intel SDM vol. 2, MOV; no REX prefix is needed). An absolute `movb $123, BOOT_TIMER_START` would not
# do: in 64-bit mode a 32-bit displacement is sign-extended, and 0xC0000000 would become 0xFFFFFFFFC0000000.
# KVM_EXIT_MMIO, KVM_EXIT_IO and the reset are all a VMM sees; no stack, no interrupts.

	.code64
	.text
	.globl _start
_start:
	mov	$BOOT_TIMER_START, %eax
	movb	$BOOT_TIMER_MAGIC, (%rax)	# the first write: KVM_EXIT_MMIO at the boot-timer device
	mov	$COM1_PORT, %edx
	mov	$'!', %al
	out	%al, %dx			# a marker on the UART (what the benchmark watches under QEMU)
	mov	$0xfe, %al			# i8042 "pulse reset line" command: the VMM ends the VM
	out	%al, $I8042_COMMAND_PORT
1:	hlt
	jmp	1b
