# longmode: the VMM puts the vCPU straight into 64-bit mode, with page tables and a GDT it built
# (src/arch/x86_64/paging.ts, gdt.ts). This guest's CPL0 part is three instructions; it drops to CPL3,
# proves it is there by printing the low bits of CS (the current privilege level), and resets.

	.code64
	.text
	.globl _start
_start:					# CPL0, 64-bit mode, RSP = BOOT_STACK_POINTER
	lea	user(%rip), %rdi
	mov	$RFLAGS_USER, %rsi
	jmp	enter_user

user:					# CPL3 from here on: runs natively even where CPL0 is emulated
	lea	msg(%rip), %rsi
	call	puts
	mov	%cs, %rax
	and	$3, %eax		# CPL = CS.RPL
	add	$'0', %al
	mov	$COM1_PORT, %dx
	out	%al, %dx
	mov	$0x0a, %al		# newline
	out	%al, %dx
	call	reset

	.section .rodata
msg:	.asciz	"longmode: 64-bit code at CPL"

	.include "lib.S"
