# irq: an interrupt from a device, through KVM's irqfd, handled by the guest.
#
# CPL0 (emulated instruction by instruction on some hosts, so kept short): install one IDT gate for the
# UART's vector, load the IDT, and enter CPL3 with interrupts enabled (nothing can fire yet: the PIC and
# the UART are not programmed). CPL3: program the 8259 PIC, enable the UART's receive interrupt, say it is
# waiting, and spin. When the VMM feeds a byte to the UART, the UART model
# writes its irqfd, KVM raises ISA IRQ 4 in the in-kernel PIC, the local APIC's LINT0 (ExtINT) delivers
# vector PIC_VECTOR_BASE + 4, and the CPU switches to CPL0 on the TSS's RSP0 stack to run irq_handler.

	.code64
	.text
	.globl _start
_start:
	mov	$(PIC_VECTOR_BASE + COM1_IRQ), %edi
	lea	irq_handler(%rip), %rsi
	call	set_gate
	lea	user(%rip), %rdi
	mov	$(RFLAGS_USER | RFLAGS_IF), %rsi	# IF=1: CPL3 cannot STI itself (that needs IOPL=3)
	jmp	enter_user

irq_handler:					# CPL0, on the TSS's RSP0 stack
	push	%rax
	push	%rdx
	mov	$COM1_PORT, %dx
	in	%dx, %al			# read the received byte: clears the UART's interrupt
	mov	%al, got_char(%rip)
	incl	irq_count(%rip)
	mov	$0x20, %al			# OCW2 non-specific EOI to the master PIC
	out	%al, $0x20
	pop	%rdx
	pop	%rax
	iretq

user:
	mov	$COM1_IRQ, %edi			# the 8259s, with only the UART's IRQ unmasked
	call	pic_init
	mov	$(COM1_PORT + 1), %dx		# UART_IER: UART_IER_RDI, interrupt on received data
	mov	$0x01, %al
	out	%al, %dx
	mov	$(COM1_PORT + 4), %dx		# UART_MCR: OUT2 gates the UART's interrupt onto the bus on a PC
	mov	$0x08, %al
	out	%al, %dx
	lea	m_wait(%rip), %rsi
	call	puts
1:	pause					# native CPL3 spin until the handler has run
	cmpl	$0, irq_count(%rip)
	je	1b
	lea	m_got(%rip), %rsi
	call	puts
	mov	$COM1_PORT, %dx
	movzbl	got_char(%rip), %eax
	out	%al, %dx
	lea	m_end(%rip), %rsi
	call	puts
	call	reset

	.section .rodata
m_wait:	.asciz	"irq: waiting for an interrupt\n"
m_got:	.asciz	"irq: handler ran at CPL0, received '"
m_end:	.asciz	"'\n"

	.data
irq_count:	.long	0
got_char:	.byte	0

	.include "lib.S"
