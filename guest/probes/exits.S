# exits: the cost of a VM exit, measured from a guest. At CPL3 (native speed on every host) it writes
# EXIT_LOOPS times to SCRATCH_PORT (each a KVM_EXIT_IO), then EXIT_LOOPS times to SCRATCH_MMIO_START
# (each a KVM_EXIT_MMIO), then resets. The benchmark's devices time the first and last access of each.

	.code64
	.text
	.globl _start
_start:
	lea	user(%rip), %rdi
	mov	$RFLAGS_USER, %rsi
	jmp	enter_user

user:
	mov	$SCRATCH_PORT, %dx
	mov	$EXIT_LOOPS, %ecx
1:	mov	%ecx, %eax
	out	%eax, %dx			# 4-byte port write: one KVM_EXIT_IO
	dec	%ecx
	jnz	1b
	mov	$SCRATCH_MMIO_START, %rbx
	mov	$EXIT_LOOPS, %ecx
2:	mov	%ecx, (%rbx)			# 4-byte store to MMIO: one KVM_EXIT_MMIO
	dec	%ecx
	jnz	2b
	call	reset

	.include "lib.S"
