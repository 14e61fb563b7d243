# Helpers shared by the 64-bit probes. Their CPL3 code may use every I/O port: the boot TSS's I/O
# permission bitmap, built by the VMM, allows them all (Intel SDM vol. 1 19.5.2).
# Included with `.include "lib.S"`.

	.text
# puts: print the NUL-terminated string at %rsi on COM1. Clobbers rax, rdx, rsi.
puts:
	mov	$COM1_PORT, %dx
1:	lodsb
	test	%al, %al
	jz	2f
	out	%al, %dx
	jmp	1b
2:	ret

# puthex: print %rdi as 0x + 8 hex digits (low 32 bits). Clobbers rax, rcx, rdx.
puthex:
	mov	$COM1_PORT, %dx
	mov	$'0', %al
	out	%al, %dx
	mov	$'x', %al
	out	%al, %dx
	mov	$28, %ecx
1:	mov	%rdi, %rax
	shr	%cl, %rax
	and	$0xf, %eax
	cmp	$10, %al
	jb	2f
	add	$('a' - '0' - 10), %al
2:	add	$'0', %al
	out	%al, %dx
	sub	$4, %ecx
	jns	1b
	ret

# enter_user: drop from CPL0 to CPL3 at the address in %rdi, with its own stack and RFLAGS = %rsi.
# iretq pops RIP, CS, RFLAGS, RSP, SS (Intel SDM vol. 3A 6.14.1); CS and SS are the boot GDT's DPL 3 ones.
enter_user:
	lea	user_stack_top(%rip), %rax
	pushq	$USER_DS
	pushq	%rax
	pushq	%rsi
	pushq	$USER_CS
	pushq	%rdi
	iretq

# set_gate: make IDT entry %rdi a 64-bit interrupt gate to the handler at %rsi, and load the IDT
# (CPL0 only: lidt is privileged). Gate layout: Intel SDM vol. 3A 6.14.1, Figure 6-8.
# Clobbers rax, rdi.
set_gate:
	shl	$4, %rdi			# 16 bytes per gate
	lea	idt(%rip), %rax
	add	%rax, %rdi
	mov	%rsi, %rax
	mov	%ax, (%rdi)			# offset 15:0
	movw	$BOOT_CS, 2(%rdi)		# code segment selector
	movw	$0x8e00, 4(%rdi)		# P=1, DPL=0, type 0xE (64-bit interrupt gate)
	shr	$16, %rax
	mov	%ax, 6(%rdi)			# offset 31:16
	shr	$16, %rax
	mov	%eax, 8(%rdi)			# offset 63:32
	lidt	idtr(%rip)
	ret

# pic_init: program the 8259 pair (ICW1-ICW4) so IRQ n arrives as vector PIC_VECTOR_BASE + n, and unmask
# only IRQ %edi (0-7, on the master). Port I/O from CPL3 is allowed by the TSS's I/O bitmap.
# Clobbers rax, rcx.
pic_init:
	mov	$0x11, %al			# ICW1: edge triggered, cascade, ICW4 follows
	out	%al, $0x20
	out	%al, $0xa0
	mov	$PIC_VECTOR_BASE, %al		# ICW2: vector base
	out	%al, $0x21
	add	$8, %al
	out	%al, $0xa1
	mov	$0x04, %al			# ICW3 master: a slave on IRQ 2
	out	%al, $0x21
	mov	$0x02, %al			# ICW3 slave: cascade identity 2
	out	%al, $0xa1
	mov	$0x01, %al			# ICW4: 8086 mode
	out	%al, $0x21
	out	%al, $0xa1
	mov	%edi, %ecx			# OCW1: mask everything but IRQ %edi
	mov	$1, %eax
	shl	%cl, %eax
	not	%eax
	out	%al, $0x21
	mov	$0xff, %al
	out	%al, $0xa1
	ret

# reset: ask the i8042 to pulse the CPU reset line; the VMM ends the VM.
reset:
	mov	$0xfe, %al
	out	%al, $I8042_COMMAND_PORT
1:	jmp	1b

	.data
	.align	8
idtr:	.word	256 * 16 - 1
	.quad	idt

	.bss
	.align	4096
idt:	.skip	256 * 16
	.align	16
user_stack:
	.skip	4096
user_stack_top:
