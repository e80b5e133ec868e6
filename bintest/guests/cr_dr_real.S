/* pyhost-mode: real -- CR0, CR4 and debug registers as the guest sees them: each value,
   read back after its write, goes out on port 0xe0 (32 bits); then a reserved CR4 bit
   faults (#GP) at `fault`. */
	.code16
	.globl _start, fault
_start:
	mov	%cr0, %eax
	outl	%eax, $0xe0		/* the reset value: CD, NW, ET */
	and	$0x9fffffff, %eax	/* caches on */
	or	$0x20, %eax		/* NE */
	mov	%eax, %cr0
	mov	%cr0, %eax
	outl	%eax, $0xe0
	mov	%cr4, %eax
	outl	%eax, $0xe0
	or	$0x90, %eax		/* PSE, PGE */
	mov	%eax, %cr4
	mov	%cr4, %eax
	outl	%eax, $0xe0
	mov	$0x1000, %eax
	mov	%eax, %dr0
	mov	%dr0, %eax
	outl	%eax, $0xe0
	mov	%dr6, %eax
	outl	%eax, $0xe0
	mov	$0x500, %eax		/* LE, no breakpoint enabled */
	mov	%eax, %dr7
	mov	%dr7, %eax
	outl	%eax, $0xe0
	mov	%cr4, %eax
	or	$0x80000000, %eax	/* reserved */
fault:	mov	%eax, %cr4
	hlt
