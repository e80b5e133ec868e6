/*
 * pyhost-mode: protected -- alignment check: ring 3 with CR0.AM and EFLAGS.AC
 * loads from an odd address, which raises #AC (error code 0) into the VMM's
 * trap IDT.  kvm_amd intercepts #AC and gives it back to the guest
 * (CVE-2015-5307); the guest must see it exactly as without a hypervisor.
 * Its own GDT adds ring-3 code and data and a TSS for the stack switch.
 */
	.code32
	.globl _start, fault
_start:
	mov	$tss, %eax		/* the TSS descriptor's base, at run time */
	mov	%ax, gdt + 0x28 + 2
	shr	$16, %eax
	mov	%al, gdt + 0x28 + 4
	mov	%ah, gdt + 0x28 + 7
	lgdt	gdtr
	mov	$0x28, %ax
	ltr	%ax
	mov	%cr0, %eax
	or	$(1 << 18), %eax	/* CR0.AM */
	mov	%eax, %cr0
	push	$0x23			/* SS: ring-3 data */
	push	$0x7800			/* ring-3 stack */
	pushf
	orl	$(1 << 18), (%esp)	/* EFLAGS.AC */
	push	$0x1b			/* CS: ring-3 code */
	push	$user
	iret
user:
	mov	$0x9001, %ebx
fault:	mov	(%ebx), %eax		/* misaligned: #AC */
	ud2

	.p2align 3
gdt:	.quad	0
	.quad	0x00cf9b000000ffff	/* 0x08: ring-0 code (the trap IDT's) */
	.quad	0x00cf93000000ffff	/* 0x10: ring-0 data */
	.quad	0x00cffb000000ffff	/* 0x18: ring-3 code */
	.quad	0x00cff3000000ffff	/* 0x20: ring-3 data */
	.quad	0x0000890000000067	/* 0x28: 32-bit TSS, base set above */
gdtr:	.word	gdtr - gdt - 1
	.long	gdt
	.p2align 2
tss:	.long	0
	.long	0x7000			/* ESP0 */
	.long	0x10			/* SS0 */
	.fill	23, 4, 0
