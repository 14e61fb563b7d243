# hello: the smallest guest. Real mode, no page tables, no interrupts.
#
# The VMM loads this flat binary at REAL_MODE_PROBE_START and starts the vCPU at CS:IP = 0x1000:0000.
# It prints a greeting on the 16550 UART's transmit register (COM1, port COM1_PORT) and halts. The VM has no
# in-kernel interrupt controller, so HLT exits to the VMM (KVM_EXIT_HLT), which ends the VM.
# Symbols in capitals (COM1_PORT) come from src/arch/x86_64/layout.ts through `as --defsym`.

	.code16
	.text
	.globl _start
_start:
	mov	%cs, %ax		# real mode: address = segment * 16 + offset; use one segment for all
	mov	%ax, %ds
	mov	$msg, %si
	mov	$COM1_PORT, %dx
1:	lodsb				# al = ds:[si++]
	test	%al, %al
	jz	2f
	out	%al, %dx		# one KVM_EXIT_IO per byte
	jmp	1b
2:	hlt
	jmp	2b

msg:	.asciz	"Hello from kindling: a real-mode probe guest wrote this through the 8250 UART.\n"
