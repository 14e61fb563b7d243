# vsock: a tiny static Linux program for the guest, in assembly (no libc): the one vsock client and server
# busybox lacks. Built by guest/tools/build.ts with `as` and `ld`, installed in the guest as /bin/vsock.
#
#   vsock connect CID PORT   connect to CID:PORT (CID 2 is the host: Firecracker's uds_path_<PORT> socket)
#   vsock listen PORT        accept one connection on PORT (the host connects with "CONNECT <PORT>\n")
#
# Then, on the connection: copy standard input to it until EOF, shut down the sending side, and copy what
# arrives to standard output until the other side shuts down. Exit status 0, or 1 with a message on stderr.
#
# System call numbers are x86-64 Linux's (arch/x86/entry/syscalls/syscall_64.tbl); arguments in rdi, rsi,
# rdx, r10, the number in rax, the result (or -errno) back in rax.

	.set	SYS_read, 0
	.set	SYS_write, 1
	.set	SYS_socket, 41
	.set	SYS_connect, 42
	.set	SYS_accept, 43
	.set	SYS_shutdown, 48
	.set	SYS_bind, 49
	.set	SYS_listen, 50
	.set	SYS_exit, 60
	.set	AF_VSOCK, 40			# include/linux/socket.h
	.set	SOCK_STREAM, 1
	.set	SHUT_WR, 1
	.set	VMADDR_CID_ANY, 0xffffffff	# include/uapi/linux/vm_sockets.h
	.set	BUF_SIZE, 4096

	.text
	.globl	_start
_start:
	mov	(%rsp), %r12			# argc
	lea	8(%rsp), %r13			# argv
	cmp	$3, %r12
	jl	usage
	mov	8(%r13), %rdi			# argv[1]: the verb
	lea	s_connect(%rip), %rsi
	call	streq
	jz	do_connect
	mov	8(%r13), %rdi
	lea	s_listen(%rip), %rsi
	call	streq
	jz	do_listen
usage:	lea	m_usage(%rip), %rsi
	jmp	die_msg

do_connect:					# vsock connect CID PORT
	cmp	$4, %r12
	jne	usage
	mov	16(%r13), %rdi
	call	atou
	mov	%eax, addr_cid(%rip)
	mov	24(%r13), %rdi
	call	atou
	mov	%eax, addr_port(%rip)
	call	new_socket
	mov	%rax, %r14
	mov	$SYS_connect, %eax
	mov	%r14, %rdi
	lea	addr(%rip), %rsi
	mov	$ADDR_SIZE, %edx
	syscall
	lea	m_connect(%rip), %rsi
	test	%rax, %rax
	js	die_errno
	jmp	relay

do_listen:					# vsock listen PORT
	mov	16(%r13), %rdi
	call	atou
	mov	%eax, addr_port(%rip)
	movl	$VMADDR_CID_ANY, addr_cid(%rip)
	call	new_socket
	mov	%rax, %r15			# the listening socket
	mov	$SYS_bind, %eax
	mov	%r15, %rdi
	lea	addr(%rip), %rsi
	mov	$ADDR_SIZE, %edx
	syscall
	lea	m_bind(%rip), %rsi
	test	%rax, %rax
	js	die_errno
	mov	$SYS_listen, %eax
	mov	%r15, %rdi
	mov	$1, %esi
	syscall
	lea	m_listen(%rip), %rsi
	test	%rax, %rax
	js	die_errno
	mov	$SYS_accept, %eax
	mov	%r15, %rdi
	xor	%esi, %esi
	xor	%edx, %edx
	syscall
	lea	m_accept(%rip), %rsi
	test	%rax, %rax
	js	die_errno
	mov	%rax, %r14			# the connection

relay:						# r14: the connected socket
	xor	%edi, %edi			# stdin -> socket
	mov	%r14, %rsi
	call	copy
	mov	$SYS_shutdown, %eax
	mov	%r14, %rdi
	mov	$SHUT_WR, %esi
	syscall
	mov	%r14, %rdi			# socket -> stdout
	mov	$1, %esi
	call	copy
	xor	%edi, %edi
	mov	$SYS_exit, %eax
	syscall

# new_socket: socket(AF_VSOCK, SOCK_STREAM, 0) in rax, or die.
new_socket:
	mov	$SYS_socket, %eax
	mov	$AF_VSOCK, %edi
	mov	$SOCK_STREAM, %esi
	xor	%edx, %edx
	syscall
	lea	m_socket(%rip), %rsi
	test	%rax, %rax
	js	die_errno
	ret

# copy: read from fd %rdi and write everything to fd %rsi until read returns 0 (EOF); dies on an error.
copy:
	push	%rbx
	push	%rbp
	mov	%rdi, %rbx
	mov	%rsi, %rbp
1:	mov	$SYS_read, %eax
	mov	%rbx, %rdi
	lea	buf(%rip), %rsi
	mov	$BUF_SIZE, %edx
	syscall
	test	%rax, %rax
	jz	3f
	lea	m_read(%rip), %rsi
	js	die_errno
	lea	buf(%rip), %rsi			# write all %rax bytes, however many writes it takes
	mov	%rax, %rdx
2:	push	%rsi
	push	%rdx
	mov	$SYS_write, %eax
	mov	%rbp, %rdi
	syscall
	pop	%rdx
	pop	%rsi
	test	%rax, %rax
	jle	4f
	add	%rax, %rsi
	sub	%rax, %rdx
	jnz	2b
	jmp	1b
3:	pop	%rbp
	pop	%rbx
	ret
4:	lea	m_write(%rip), %rsi
	jmp	die_errno

# streq: compare the NUL-terminated strings at %rdi and %rsi; ZF set when equal.
streq:
1:	mov	(%rdi), %al
	cmp	(%rsi), %al
	jne	2f
	inc	%rdi
	inc	%rsi
	test	%al, %al
	jnz	1b
2:	ret

# atou: the decimal number at %rdi in %eax (digits only; anything else ends it, an empty string is 0).
atou:
	xor	%eax, %eax
1:	movzbl	(%rdi), %ecx
	sub	$'0', %ecx
	cmp	$9, %ecx
	ja	2f
	imul	$10, %eax, %eax
	add	%ecx, %eax
	inc	%rdi
	jmp	1b
2:	ret

# die_errno: print "vsock: <message at %rsi> failed (errno N)\n" where -N is in %rax, exit 1.
die_errno:
	neg	%rax
	mov	%rax, %r15
	push	%rsi
	lea	m_prefix(%rip), %rsi
	call	puts2
	pop	%rsi
	call	puts2
	lea	m_errno(%rip), %rsi
	call	puts2
	mov	%r15, %rax			# the number, in decimal, built backwards in numbuf
	lea	numbuf_end(%rip), %rsi
	movb	$0, (%rsi)
	mov	$10, %ecx
1:	xor	%edx, %edx
	div	%rcx
	add	$'0', %dl
	dec	%rsi
	mov	%dl, (%rsi)
	test	%rax, %rax
	jnz	1b
	call	puts2
	lea	m_close(%rip), %rsi
die_msg:
	call	puts2
	mov	$1, %edi
	mov	$SYS_exit, %eax
	syscall

# puts2: write the NUL-terminated string at %rsi to stderr.
puts2:
	mov	%rsi, %rdx
1:	cmpb	$0, (%rdx)
	je	2f
	inc	%rdx
	jmp	1b
2:	sub	%rsi, %rdx
	mov	$SYS_write, %eax
	mov	$2, %edi
	syscall
	ret

	.section .rodata
s_connect:	.asciz	"connect"
s_listen:	.asciz	"listen"
m_usage:	.asciz	"usage: vsock connect CID PORT | vsock listen PORT\n"
m_prefix:	.asciz	"vsock: "
m_socket:	.asciz	"socket(AF_VSOCK)"
m_connect:	.asciz	"connect"
m_bind:		.asciz	"bind"
m_listen:	.asciz	"listen"
m_accept:	.asciz	"accept"
m_read:		.asciz	"read"
m_write:	.asciz	"write"
m_errno:	.asciz	" failed (errno "
m_close:	.asciz	")\n"

	.data
	.align	4
# struct sockaddr_vm (include/uapi/linux/vm_sockets.h): family, reserved, port, cid, flags, zero padding.
addr:		.short	AF_VSOCK
		.short	0
addr_port:	.long	0
addr_cid:	.long	0
		.byte	0
		.skip	3
	.set	ADDR_SIZE, . - addr

	.bss
buf:		.skip	BUF_SIZE
numbuf:		.skip	24
numbuf_end:	.skip	1
