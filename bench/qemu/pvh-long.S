# A PVH front end that gives a probe under QEMU what kindling's VMM gives it through KVM_SET_SREGS:
# 64-bit mode with identity-mapped pages, and CPL3. The benchmark runs the exits probe's CPL3 loops
# through it, so QEMU drives exactly the bytes kindling drives, in the same CPU mode.
#
# Entered in 32-bit protected mode, paging off (xen's docs/misc/pvh.pandoc). Then, as a boot loader would
# (Intel SDM vol. 3A 9.8.5 "Initializing IA-32e Mode"): load a GDT with 64-bit code segments, CR4.PAE,
# CR3 = the PML4, EFER.LME, CR0.PG, and a far jump into the 64-bit code segment. In 64-bit mode it prints
# the marker byte on COM1 (the benchmark's start of the timed interval) and IRETQs to USER_ENTRY at CPL3
# with IOPL 3, so that CPL3 may use every port (SDM vol. 1 19.5) as the TSS I/O bitmap allows in kindling.
#
# The page tables map two 2 MiB pages: the one holding the code (HIMEM_START) and the one holding
# SCRATCH_MMIO_START (PDPT index SCRATCH_PDPT_INDEX, page-directory index SCRATCH_PD_INDEX).
# Symbols in capitals come from the benchmark's --defsym list (bench/qemu/pvh.ts).

	.code32
	.text
	.globl	pvh_entry
pvh_entry:
	lgdt	pvh_gdtr
	mov	$X86_CR4_PAE, %eax
	mov	%eax, %cr4
	mov	$pvh_pml4, %eax
	mov	%eax, %cr3
	mov	$MSR_EFER, %ecx
	rdmsr
	or	$EFER_LME, %eax
	wrmsr
	mov	$PVH_CR0, %eax			# PE | ET | NE | PG: paging on activates long mode
	mov	%eax, %cr0
	ljmp	$BOOT_CS, $pvh_long

	.code64
pvh_long:
	mov	$BOOT_DS, %ax
	mov	%ax, %ds
	mov	%ax, %es
	mov	%ax, %ss
	mov	$COM1_PORT, %dx
	mov	$PVH_MARKER, %al
	out	%al, %dx			# the start marker
	pushq	$USER_DS			# IRETQ pops RIP, CS, RFLAGS, RSP, SS (SDM vol. 3A 6.14.1)
	pushq	$pvh_user_stack_top
	pushq	$PVH_RFLAGS_USER
	pushq	$USER_CS
	pushq	$USER_ENTRY
	iretq

	.data
	.balign	8
pvh_gdt:
	.quad	GDT_0, GDT_1, GDT_2, GDT_3, GDT_4, GDT_5
pvh_gdt_end:
pvh_gdtr:
	.word	pvh_gdt_end - pvh_gdt - 1
	.long	pvh_gdt

	.balign	4096
pvh_pml4:
	.quad	pvh_pdpt + PTE_FLAGS
	.fill	511, 8, 0
pvh_pdpt:
	.quad	pvh_pd_low + PTE_FLAGS
	.fill	SCRATCH_PDPT_INDEX - 1, 8, 0
	.quad	pvh_pd_scratch + PTE_FLAGS
	.fill	511 - SCRATCH_PDPT_INDEX, 8, 0
pvh_pd_low:
	.quad	0 + PTE_FLAGS + PTE_PS		# the first 2 MiB: code, data, stack
	.fill	511, 8, 0
pvh_pd_scratch:
	.fill	SCRATCH_PD_INDEX, 8, 0
	.quad	SCRATCH_2M_PAGE + PTE_FLAGS + PTE_PS
	.fill	511 - SCRATCH_PD_INDEX, 8, 0

	.balign	16
	.skip	4096
pvh_user_stack_top:
