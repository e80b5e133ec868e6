/* pyhost-mode: real -- an illegal instruction in real mode, for the VMM's trap IVT. */
	.code16
	.globl _start, fault
_start:
	mov	$0x1234, %dx
fault:	ud2
