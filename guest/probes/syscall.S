# syscall: system calls from CPL3 into a CPL0 entry point, as every Linux program makes them.
#
# The probe sets up what a kernel sets up for `syscall` (Intel SDM vol. 2B, SYSCALL; vol. 3A 5.8.8):
# EFER.SCE, MSR_STAR (kernel CS in bits 47:32, the SYSRET base in 63:48), MSR_LSTAR (the entry point) and
# MSR_SYSCALL_MASK, and puts its entry on a supervisor-only page, as Linux's entry_SYSCALL_64 is: a 2 MiB
# alias of low memory at SYSCALL_ALIAS without the U/S bit. It also installs a #PF handler.
#
# On hardware KVM each `syscall` switches to CPL0 at LSTAR and `sysretq` comes back. On a host that runs
# CPL3 natively but not the switch (see src/arch/x86_64/syscall-assist.ts), the fetch at LSTAR faults at
# CPL3 and the #PF reaches pf_handler: without the VMM's syscall assist, this probe then says so. With it,
# the VMM completes each syscall and the entry runs as on hardware; the one genuine page fault (a CPL3 load
# from the supervisor alias) must still reach pf_handler, and the syscall after it must still be completed.

	.code64
	.text
	.globl _start
_start:
	mov	$PF_VECTOR, %edi
	lea	pf_handler(%rip), %rsi
	call	set_gate
	# PDPT entry SYSCALL_ALIAS_PDPT_INDEX -> sup_pd, whose entry 0 maps physical 0-2 MiB without U/S.
	mov	%cr3, %rax
	mov	(%rax), %rax			# PML4[0] holds the PDPT's address (no NX bits in the VMM's map)
	and	$~0xfff, %rax
	lea	sup_pd(%rip), %rcx
	or	$7, %rcx			# P | RW | U/S here: the PD entry below takes U/S away
	mov	%rcx, SYSCALL_ALIAS_PDPT_INDEX * 8(%rax)
	movq	$0x83, sup_pd(%rip)		# P | RW | PS: a 2 MiB page at physical 0, CPL0 only
	mov	%cr3, %rax
	mov	%rax, %cr3			# flush the TLB

	mov	$MSR_EFER, %ecx
	rdmsr
	or	$EFER_SCE, %eax
	wrmsr
	mov	$MSR_STAR, %ecx
	xor	%eax, %eax
	mov	$((STAR_SYSRET_BASE << 16) | BOOT_CS), %edx
	wrmsr
	lea	syscall_entry(%rip), %rax
	movabs	$SYSCALL_ALIAS, %rdx
	add	%rdx, %rax			# the entry's supervisor alias
	mov	%rax, %rdx
	shr	$32, %rdx
	mov	$MSR_LSTAR, %ecx
	wrmsr
	mov	$MSR_SYSCALL_MASK, %ecx
	mov	$SYSCALL_MASK, %eax
	xor	%edx, %edx
	wrmsr

	# One exit before the first syscall, as any kernel makes many: the VMM looks at the IDT on exits.
	lea	m_ready(%rip), %rsi
	call	puts
	lea	user(%rip), %rdi
	mov	$RFLAGS_USER, %rsi
	jmp	enter_user

# The system call: count it, answer 2 * rax + 1, return to CPL3 at RCX with RFLAGS = R11.
# It runs at its supervisor alias, so its RIP-relative data references use the alias too.
	.align	16
syscall_entry:
	incl	syscall_count(%rip)
	lea	1(%rax,%rax), %rax
	sysretq

# The #PF handler, at CPL0 on the TSS's RSP0 stack: [rsp] = error code, then RIP, CS, RFLAGS, RSP, SS.
pf_handler:
	push	%rax
	mov	%cr2, %rax
	cmp	%rax, 16(%rsp)			# CR2 == the faulting RIP: an instruction fetch, i.e. a syscall at LSTAR
	je	1f
	incl	user_faults(%rip)
	addq	$2, 16(%rsp)			# skip the two-byte load that faulted
	pop	%rax
	add	$8, %rsp			# the error code
	iretq
1:	lea	m_unassisted(%rip), %rsi
	call	puts
	call	reset

user:
	mov	$1, %eax
	syscall
	cmp	$3, %rax
	jne	bad
	mov	$5, %eax
	syscall
	cmp	$11, %rax
	jne	bad
	movabs	$SYSCALL_ALIAS, %rbx
	mov	(%rbx), %al			# 8a 03: CPL3 reads a supervisor page -> #PF for pf_handler
	mov	$20, %eax
	syscall
	cmp	$41, %rax
	jne	bad
	cmpl	$3, syscall_count(%rip)
	jne	bad
	cmpl	$1, user_faults(%rip)
	jne	bad
	lea	m_ok(%rip), %rsi
	call	puts
	call	reset
bad:	lea	m_bad(%rip), %rsi
	call	puts
	call	reset

	.section .rodata
m_ready:	.asciz	"syscall: #PF gate and syscall MSRs set\n"
m_ok:	.asciz	"syscall: 3 system calls returned their answers; 1 page fault reached the guest's handler\n"
m_bad:	.asciz	"syscall: a wrong answer or count\n"
m_unassisted:	.asciz	"syscall: the #PF at LSTAR reached the guest: nothing completed the system call\n"

	.data
syscall_count:	.long	0
user_faults:	.long	0

	.bss
	.align	4096
sup_pd:	.skip	4096

	.include "lib.S"
