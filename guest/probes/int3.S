# int3: a breakpoint at CPL0 in 64-bit mode, as Linux's int3 self-test executes one at boot.
#
# Hardware runs `int3` itself: #BP (vector 3) is raised as a trap and the handler's iretq returns to the
# instruction after it. A host that emulates guest CPL0 code cannot execute it and exits to the VMM, whose
# emulation assist (src/arch/x86_64/emulation-assist.ts) delivers the same #BP. Either way this guest
# prints the same line.

	.code64
	.text
	.globl _start
_start:
	mov	$BP_VECTOR, %edi
	lea	bp_handler(%rip), %rsi
	call	set_gate
	int3					# -> bp_handler, which returns here
	lea	user(%rip), %rdi
	mov	$RFLAGS_USER, %rsi
	jmp	enter_user

bp_handler:
	incl	bp_count(%rip)
	iretq

user:
	lea	m_ok(%rip), %rsi
	cmpl	$1, bp_count(%rip)		# exactly one breakpoint, and execution went on after it
	je	1f
	lea	m_bad(%rip), %rsi
1:	call	puts
	call	reset

	.section .rodata
m_ok:	.asciz	"int3: the #BP handler ran once and returned past the breakpoint\n"
m_bad:	.asciz	"int3: wrong number of breakpoints\n"

	.data
bp_count:	.long	0

	.include "lib.S"
