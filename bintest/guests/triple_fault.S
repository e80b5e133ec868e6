/*
 * pyhost-mode: protected -- a triple fault: the guest loads an IDT whose gates
 * are all not present and executes UD2: #UD, then #NP, then #DF cannot be
 * delivered, and the CPU shuts down.
 */
	.code32
	.globl _start, fault
_start:
	lidt	idtr
fault:	ud2
	hlt
	.p2align 3
idtr:	.word	256 * 8 - 1
	.long	idt
	.p2align 3
idt:	.fill	256 * 8, 1, 0
