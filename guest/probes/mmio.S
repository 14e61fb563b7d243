# mmio: a CPL3 guest reading and writing an MMIO device. Each access to an address without RAM behind it is
# a KVM_EXIT_MMIO. The test registers a device at SCRATCH_MMIO_START; nothing is at SCRATCH_MMIO_START +
# 0x2000, so that read returns all-ones.

	.code64
	.text
	.globl _start
_start:
	lea	user(%rip), %rdi
	mov	$RFLAGS_USER, %rsi
	jmp	enter_user

user:
	mov	$SCRATCH_MMIO_START, %rbx
	movb	$0x11, 0x0(%rbx)		# 1-byte write
	movw	$0x2233, 0x2(%rbx)		# 2-byte write
	movl	$0x44556677, 0x4(%rbx)		# 4-byte write
	movabs	$0x8899aabbccddeeff, %rax
	mov	%rax, 0x8(%rbx)			# 8-byte write
	lea	m_read(%rip), %rsi
	call	puts
	mov	0x10(%rbx), %edi		# 4-byte read: the device answers
	mov	%rdi, %r12
	call	puthex
	inc	%r12
	mov	%r12d, 0x18(%rbx)		# write back what was read, plus one
	lea	m_unclaimed(%rip), %rsi
	call	puts
	mov	0x2000(%rbx), %edi		# nobody claims this: all-ones
	call	puthex
	lea	m_nl(%rip), %rsi
	call	puts
	call	reset

	.section .rodata
m_read:		.asciz	"mmio: read "
m_unclaimed:	.asciz	"\nmmio: unclaimed read "
m_nl:		.asciz	"\n"

	.include "lib.S"
