# virtio-blk: a CPL3 guest driving a virtio-blk device the way a driver does (virtio 1.2 §3.1, §2.7, §5.2).
#
# The device is virtio-mmio device 0 (VIRTIO_BLK_BASE, interrupt VIRTIO_BLK_IRQ). The guest negotiates
# VIRTIO_F_VERSION_1 only, gives the device one split virtqueue of QSIZE entries, and submits requests as
# three-descriptor chains: header (device-readable), data (readable for writes, writable for reads), status
# byte (writable). Each request is announced by a write of the queue index to QueueNotify, which KVM turns
# into an ioeventfd signal (no exit); the device's completion arrives as an interrupt through irqfd, whose
# CPL0 handler acknowledges it (InterruptStatus / InterruptACK) and counts it.
#
# Registers at entry, set by the VMM: r12 = number of requests for benchmark mode (0: the functional
# test), r13 = bytes per request (a multiple of 512, at most BUF_SIZE), r14 = 1 for writes, 0 for reads,
# r15 = sector mask (the disk's sector count - 1, a power of two - 1).

	.code64
	.text
	.globl _start
_start:
	mov	$(PIC_VECTOR_BASE + VIRTIO_BLK_IRQ), %edi
	lea	blk_irq(%rip), %rsi
	call	set_gate
	lea	user(%rip), %rdi
	mov	$(RFLAGS_USER | RFLAGS_IF), %rsi
	jmp	enter_user

blk_irq:					# CPL0: acknowledge the device, then the PIC
	push	%rax
	push	%rbx
	mov	$VIRTIO_BLK_BASE, %rbx
	mov	VIRTIO_MMIO_INTERRUPT_STATUS(%rbx), %eax
	mov	%eax, VIRTIO_MMIO_INTERRUPT_ACK(%rbx)
	incl	irq_count(%rip)
	mov	$0x20, %al			# non-specific EOI
	out	%al, $0x20
	pop	%rbx
	pop	%rax
	iretq

user:
	mov	$VIRTIO_BLK_IRQ, %edi
	call	pic_init
	mov	$VIRTIO_BLK_BASE, %rbx
	cmpl	$VIRTIO_MMIO_MAGIC, VIRTIO_MMIO_MAGIC_VALUE(%rbx)
	jne	fail
	# Device initialization, virtio 1.2 §3.1.1.
	movl	$0, VIRTIO_MMIO_STATUS(%rbx)		# reset
	movl	$VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_MMIO_STATUS(%rbx)
	movl	$(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER), VIRTIO_MMIO_STATUS(%rbx)
	movl	$1, VIRTIO_MMIO_DRIVER_FEATURES_SEL(%rbx)	# features 32-63: VIRTIO_F_VERSION_1 is bit 32
	movl	$1, VIRTIO_MMIO_DRIVER_FEATURES(%rbx)
	movl	$0, VIRTIO_MMIO_DRIVER_FEATURES_SEL(%rbx)	# features 0-31: none
	movl	$0, VIRTIO_MMIO_DRIVER_FEATURES(%rbx)
	movl	$(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK), VIRTIO_MMIO_STATUS(%rbx)
	testl	$VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_MMIO_STATUS(%rbx)	# the device must keep FEATURES_OK
	jz	fail
	movl	$0, VIRTIO_MMIO_QUEUE_SEL(%rbx)
	cmpl	$QSIZE, VIRTIO_MMIO_QUEUE_NUM_MAX(%rbx)
	jb	fail
	movl	$QSIZE, VIRTIO_MMIO_QUEUE_NUM(%rbx)
	lea	desc(%rip), %rax
	mov	%eax, VIRTIO_MMIO_QUEUE_DESC_LOW(%rbx)
	shr	$32, %rax
	mov	%eax, VIRTIO_MMIO_QUEUE_DESC_HIGH(%rbx)
	lea	avail(%rip), %rax
	mov	%eax, VIRTIO_MMIO_QUEUE_AVAIL_LOW(%rbx)
	shr	$32, %rax
	mov	%eax, VIRTIO_MMIO_QUEUE_AVAIL_HIGH(%rbx)
	lea	used(%rip), %rax
	mov	%eax, VIRTIO_MMIO_QUEUE_USED_LOW(%rbx)
	shr	$32, %rax
	mov	%eax, VIRTIO_MMIO_QUEUE_USED_HIGH(%rbx)
	movl	$1, VIRTIO_MMIO_QUEUE_READY(%rbx)
	movl	$(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK), VIRTIO_MMIO_STATUS(%rbx)
	test	%r12, %r12
	jnz	bench

	# Functional test: write a pattern to sector 1, read it back into a cleared buffer, compare, get the id.
	call	fill_pattern
	mov	$VIRTIO_BLK_T_OUT, %edi
	mov	$1, %rsi
	mov	$512, %edx
	xor	%ecx, %ecx
	call	blk_request
	test	%eax, %eax
	jnz	fail
	lea	buf(%rip), %rdi			# clear 512 bytes
	mov	$512, %ecx
	xor	%eax, %eax
	rep stosb
	mov	$VIRTIO_BLK_T_IN, %edi
	mov	$1, %rsi
	mov	$512, %edx
	mov	$1, %ecx
	call	blk_request
	test	%eax, %eax
	jnz	fail
	call	check_pattern
	jne	fail
	lea	m_rw(%rip), %rsi
	call	puts
	mov	$VIRTIO_BLK_T_GET_ID, %edi
	xor	%esi, %esi
	mov	$20, %edx
	mov	$1, %ecx
	call	blk_request
	test	%eax, %eax
	jnz	fail
	movb	$0, buf + 20(%rip)		# the id is at most 20 bytes, NUL-padded
	lea	m_id(%rip), %rsi
	call	puts
	lea	buf(%rip), %rsi
	call	puts
	lea	m_irqs(%rip), %rsi
	call	puts
	mov	irq_count(%rip), %edi
	call	puthex
	lea	m_nl(%rip), %rsi
	call	puts
	call	reset

bench:						# r12 requests of r13 bytes, writes if r14, sectors masked by r15
	xor	%ebp, %ebp			# request number
1:	mov	%rbp, %rsi
	mov	%r13, %rax
	shr	$9, %rax			# sectors per request
	imul	%rax, %rsi
	and	%r15, %rsi
	mov	$VIRTIO_BLK_T_IN, %edi
	mov	$1, %ecx			# data device-writable (a read)
	test	%r14, %r14
	jz	2f
	mov	$VIRTIO_BLK_T_OUT, %edi
	xor	%ecx, %ecx
2:	mov	%r13d, %edx
	call	blk_request
	test	%eax, %eax
	jnz	fail
	inc	%rbp
	cmp	%r12, %rbp
	jb	1b
	lea	m_cycles(%rip), %rsi		# the average TSC cycles one notify cost the vCPU
	call	puts
	mov	notify_cycles(%rip), %rax
	xor	%edx, %edx
	div	%r12
	mov	%rax, %rdi
	call	puthex
	lea	m_nl(%rip), %rsi
	call	puts
	call	reset

fail:
	lea	m_fail(%rip), %rsi
	call	puts
	call	reset

# blk_request: type %edi, sector %rsi, %edx data bytes in `buf` (0: none), %ecx 1 if the device writes the
# data. Submits one chain, notifies, waits for the interrupt and the used entry. Returns the status byte.
# Clobbers rax, rcx, rdx, rsi, rdi, r8-r11. Adds the TSC cycles the notify store took to notify_cycles.
blk_request:
	lea	hdr(%rip), %rax			# struct virtio_blk_outhdr { le32 type; le32 ioprio; le64 sector; }
	mov	%edi, (%rax)
	movl	$0, 4(%rax)
	mov	%rsi, 8(%rax)
	lea	desc(%rip), %r8			# struct vring_desc { le64 addr; le32 len; le16 flags; le16 next; }
	mov	%rax, (%r8)			# desc 0: the header
	movl	$16, 8(%r8)
	movw	$VRING_DESC_F_NEXT, 12(%r8)
	movw	$1, 14(%r8)
	test	%edx, %edx
	jnz	1f
	movw	$2, 14(%r8)			# no data: header -> status
1:	lea	buf(%rip), %rax			# desc 1: the data
	mov	%rax, 16(%r8)
	mov	%edx, 24(%r8)
	mov	$VRING_DESC_F_NEXT, %eax
	test	%ecx, %ecx
	jz	2f
	or	$VRING_DESC_F_WRITE, %eax
2:	mov	%ax, 28(%r8)
	movw	$2, 30(%r8)
	lea	status(%rip), %rax		# desc 2: the status byte, written by the device
	mov	%rax, 32(%r8)
	movl	$1, 40(%r8)
	movw	$VRING_DESC_F_WRITE, 44(%r8)
	movw	$0, 46(%r8)
	movb	$0xff, status(%rip)
	mov	irq_count(%rip), %r11d		# interrupts so far
	lea	avail(%rip), %r9		# struct vring_avail { le16 flags; le16 idx; le16 ring[QSIZE]; }
	movzwl	2(%r9), %eax
	mov	%eax, %r10d
	and	$(QSIZE - 1), %eax
	movw	$0, 4(%r9,%rax,2)		# chain head: descriptor 0
	inc	%r10d
	mov	%r10w, 2(%r9)			# publish: x86 keeps stores in order, so the ring entry is seen first
	push	%rdx
	rdtsc					# time the notify as the guest sees it: cycles in edx:eax
	shl	$32, %rdx
	or	%rdx, %rax
	mov	%rax, %rcx
	movl	$0, VIRTIO_MMIO_QUEUE_NOTIFY(%rbx)	# queue 0: an ioeventfd, not an exit
	rdtsc
	shl	$32, %rdx
	or	%rdx, %rax
	sub	%rcx, %rax
	add	%rax, notify_cycles(%rip)
	pop	%rdx
	lea	used(%rip), %r9			# struct vring_used { le16 flags; le16 idx; elem ring[QSIZE]; }
3:	pause
	cmp	irq_count(%rip), %r11d		# wait for the interrupt...
	je	3b
	cmp	2(%r9), %r10w			# ...and for the used entry
	jne	3b
	movzbl	status(%rip), %eax
	ret

fill_pattern:					# buf[i] = i ^ 0x5a for 512 bytes
	lea	buf(%rip), %rdi
	xor	%ecx, %ecx
1:	mov	%ecx, %eax
	xor	$0x5a, %eax
	mov	%al, (%rdi,%rcx)
	inc	%ecx
	cmp	$512, %ecx
	jb	1b
	ret

check_pattern:					# ZF set when buf holds the pattern
	lea	buf(%rip), %rdi
	xor	%ecx, %ecx
1:	mov	%ecx, %eax
	xor	$0x5a, %eax
	cmp	%al, (%rdi,%rcx)
	jne	2f
	inc	%ecx
	cmp	$512, %ecx
	jb	1b
	xor	%eax, %eax			# sets ZF
2:	ret

	.section .rodata
m_rw:	.asciz	"virtio-blk: wrote sector 1 and read it back\n"
m_id:	.asciz	"virtio-blk: id "
m_irqs:	.asciz	"\nvirtio-blk: interrupts "
m_nl:	.asciz	"\n"
m_fail:	.asciz	"virtio-blk: FAILED\n"
m_cycles:	.asciz	"virtio-blk: notify cycles "

	.data
irq_count:	.long	0
	.align	8
notify_cycles:	.quad	0

	.bss
	.align	4096
desc:	.skip	16 * QSIZE
avail:	.skip	4 + 2 * QSIZE + 2
	.align	4
used:	.skip	4 + 8 * QSIZE + 2
	.align	16
hdr:	.skip	16
status:	.skip	1
	.align	4096
buf:	.skip	BUF_SIZE + 1

	.include "lib.S"
