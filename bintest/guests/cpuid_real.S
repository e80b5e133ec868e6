/* pyhost-mode: real -- CPUID of the leaf in EAX and subleaf in ECX the VMM set, then HLT. */
	.code16
	.globl _start
_start:
	cpuid
	hlt
