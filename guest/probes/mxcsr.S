# mxcsr: `ldmxcsr` and `stmxcsr` at CPL0, as Linux's kernel_fpu_begin_mask() runs `ldmxcsr` before kernel
# SIMD code, then `stmxcsr` at CPL3 to see what the CPU really holds.
#
# Hardware runs both itself. A host that emulates guest CPL0 code cannot, and exits to the VMM, whose
# emulation assist (src/arch/x86_64/emulation-assist.ts) decodes the memory operand and moves MXCSR
# through KVM_GET/SET_XSAVE. CPL3 code runs natively on every host, so the value read there is the one
# the vCPU really has. Either way this guest prints the same line.

	.code64
	.text
	.globl _start
_start:
	ldmxcsr	mx_in(%rip)			# RIP-relative operand: MXCSR = 0x7f80 (all exceptions masked, RC = toward zero)
	stmxcsr	0x4(%rsp)			# SIB operand on the stack, as Linux writes it
	mov	0x4(%rsp), %eax
	mov	%eax, mx_cpl0(%rip)
	lea	user(%rip), %rdi
	mov	$RFLAGS_USER, %rsi
	jmp	enter_user

user:
	stmxcsr	mx_cpl3(%rip)
	lea	m_set(%rip), %rsi
	call	puts
	mov	mx_in(%rip), %edi
	call	puthex
	lea	m_cpl0(%rip), %rsi
	call	puts
	mov	mx_cpl0(%rip), %edi
	call	puthex
	lea	m_cpl3(%rip), %rsi
	call	puts
	mov	mx_cpl3(%rip), %edi
	call	puthex
	lea	m_end(%rip), %rsi
	call	puts
	call	reset

	.section .rodata
m_set:	.asciz	"mxcsr: ldmxcsr at CPL0 loaded "
m_cpl0:	.asciz	"; stmxcsr read "
m_cpl3:	.asciz	" at CPL0 and "
m_end:	.asciz	" at CPL3\n"

	.data
mx_in:	.long	0x7f80
mx_cpl0:	.long	0
mx_cpl3:	.long	0

	.include "lib.S"
