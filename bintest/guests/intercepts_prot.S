/*
 * pyhost-mode: protected -- instructions kvm_amd intercepts, one per entry
 * point (the test picks one): each either runs and halts with its results in
 * registers, or raises an exception into the VMM's trap IDT at `fault_*`.
 */
	.code32
	.globl _start, icebp_entry, fault_icebp, tf_entry, fault_tf, rdpmc_entry
	.globl fault_rdpmc, invlpga_entry, fault_invlpga, rdpru_entry
	.globl fault_rdpru, wbinvd_entry, rdtscp_entry, fault_rdtscp
_start:
icebp_entry:
fault_icebp:
	.byte	0xf1			/* ICEBP (INT1): a trap-like #DB */
	hlt

tf_entry:				/* single step: #DB after one instruction */
	pushf
	orl	$(1 << 8), (%esp)
	popf
fault_tf:
	mov	$0x55, %eax
	hlt

rdpmc_entry:
	xor	%ecx, %ecx
	mov	$0x1111, %eax
	mov	$0x2222, %edx
fault_rdpmc:
	rdpmc
	hlt

rdpmc7_entry:				/* AMD has counters 0-3 (0-5) */
	mov	$7, %ecx
fault_rdpmc7:
	rdpmc
	hlt

invlpga_entry:
	xor	%eax, %eax
	xor	%ecx, %ecx
fault_invlpga:
	invlpga	%eax, %ecx
	hlt

rdpru_entry:
	mov	$1, %ecx		/* APERF */
fault_rdpru:
	.byte	0x0f, 0x01, 0xfd	/* RDPRU */
	hlt

wbinvd_entry:
	mov	$0x77, %ebx
	wbinvd
	mov	$0x88, %ebx
	hlt

rdtscp_entry:
	mov	$0xdead, %ecx
fault_rdtscp:
	rdtscp
	hlt
