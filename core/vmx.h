/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * Intel VMX's numbers: VMCS field encodings, control bits, exit reasons and
 * the capability MSRs (Intel SDM vol. 3, chapters 24-27 and appendices A-C).
 */
#ifndef KVMPORT_CORE_VMX_H
#define KVMPORT_CORE_VMX_H

#include "kvmp_os.h"

/* --- VMCS fields: 16-bit ------------------------------------------------- */
#define VMCS_VPID			0x0000
#define VMCS_GUEST_SEL(seg)		(0x0800 + 2 * (seg))	/* ES..GS, LDTR, TR */
#define VMCS_HOST_ES_SEL		0x0c00
#define VMCS_HOST_CS_SEL		0x0c02
#define VMCS_HOST_SS_SEL		0x0c04
#define VMCS_HOST_DS_SEL		0x0c06
#define VMCS_HOST_FS_SEL		0x0c08
#define VMCS_HOST_GS_SEL		0x0c0a
#define VMCS_HOST_TR_SEL		0x0c0c
/* 64-bit */
#define VMCS_IO_BITMAP_A		0x2000
#define VMCS_IO_BITMAP_B		0x2002
#define VMCS_MSR_BITMAP			0x2004
#define VMCS_EXIT_MSR_STORE_ADDR	0x2006
#define VMCS_EXIT_MSR_LOAD_ADDR		0x2008
#define VMCS_ENTRY_MSR_LOAD_ADDR	0x200a
#define VMCS_TSC_OFFSET			0x2010
#define VMCS_EPT_POINTER		0x201a
#define VMCS_GUEST_PHYS_ADDR		0x2400
#define VMCS_LINK_POINTER		0x2800
#define VMCS_GUEST_DEBUGCTL		0x2802
#define VMCS_GUEST_PAT			0x2804
#define VMCS_GUEST_EFER			0x2806
#define VMCS_GUEST_PDPTE(n)		(0x280a + 2 * (n))
#define VMCS_HOST_PAT			0x2c00
#define VMCS_HOST_EFER			0x2c02
/* 32-bit */
#define VMCS_PIN_CTLS			0x4000
#define VMCS_PROC_CTLS			0x4002
#define VMCS_EXCEPTION_BITMAP		0x4004
#define VMCS_PF_ERROR_MASK		0x4006
#define VMCS_PF_ERROR_MATCH		0x4008
#define VMCS_CR3_TARGET_COUNT		0x400a
#define VMCS_EXIT_CTLS			0x400c
#define VMCS_EXIT_MSR_STORE_COUNT	0x400e
#define VMCS_EXIT_MSR_LOAD_COUNT	0x4010
#define VMCS_ENTRY_CTLS			0x4012
#define VMCS_ENTRY_MSR_LOAD_COUNT	0x4014
#define VMCS_ENTRY_INTR_INFO		0x4016
#define VMCS_ENTRY_EXCEPTION_ERROR	0x4018
#define VMCS_ENTRY_INSN_LEN		0x401a
#define VMCS_PROC_CTLS2			0x401e
#define VMCS_INSN_ERROR			0x4400
#define VMCS_EXIT_REASON		0x4402
#define VMCS_EXIT_INTR_INFO		0x4404
#define VMCS_EXIT_INTR_ERROR		0x4406
#define VMCS_IDT_VECTORING_INFO		0x4408
#define VMCS_IDT_VECTORING_ERROR	0x440a
#define VMCS_EXIT_INSN_LEN		0x440c
#define VMCS_EXIT_INSN_INFO		0x440e
#define VMCS_GUEST_LIMIT(seg)		(0x4800 + 2 * (seg))
#define VMCS_GUEST_GDTR_LIMIT		0x4810
#define VMCS_GUEST_IDTR_LIMIT		0x4812
#define VMCS_GUEST_AR(seg)		(0x4814 + 2 * (seg))
#define VMCS_GUEST_INTERRUPTIBILITY	0x4824
#define VMCS_GUEST_ACTIVITY		0x4826
#define VMCS_GUEST_SYSENTER_CS		0x482a
#define VMCS_HOST_SYSENTER_CS		0x4c00
/* natural width */
#define VMCS_CR0_MASK			0x6000
#define VMCS_CR4_MASK			0x6002
#define VMCS_CR0_SHADOW			0x6004
#define VMCS_CR4_SHADOW			0x6006
#define VMCS_EXIT_QUALIFICATION		0x6400
#define VMCS_GUEST_CR0			0x6800
#define VMCS_GUEST_CR3			0x6802
#define VMCS_GUEST_CR4			0x6804
#define VMCS_GUEST_BASE(seg)		(0x6806 + 2 * (seg))
#define VMCS_GUEST_GDTR_BASE		0x6816
#define VMCS_GUEST_IDTR_BASE		0x6818
#define VMCS_GUEST_DR7			0x681a
#define VMCS_GUEST_RSP			0x681c
#define VMCS_GUEST_RIP			0x681e
#define VMCS_GUEST_RFLAGS		0x6820
#define VMCS_GUEST_PENDING_DBG		0x6822
#define VMCS_GUEST_SYSENTER_ESP		0x6824
#define VMCS_GUEST_SYSENTER_EIP		0x6826
#define VMCS_HOST_CR0			0x6c00
#define VMCS_HOST_CR3			0x6c02
#define VMCS_HOST_CR4			0x6c04
#define VMCS_HOST_FS_BASE		0x6c06
#define VMCS_HOST_GS_BASE		0x6c08
#define VMCS_HOST_TR_BASE		0x6c0a
#define VMCS_HOST_GDTR_BASE		0x6c0c
#define VMCS_HOST_IDTR_BASE		0x6c0e
#define VMCS_HOST_SYSENTER_ESP		0x6c10
#define VMCS_HOST_SYSENTER_EIP		0x6c12
#define VMCS_HOST_RSP			0x6c14
#define VMCS_HOST_RIP			0x6c16

/* the guest segments in VMCS order (the same as KVMP_SEG_ES..GS) */
#define VMX_SEG_LDTR			6
#define VMX_SEG_TR			7
#define VMX_NR_SEGS			8

/* --- controls ---------------------------------------------------------------- */
#define PIN_EXT_INTR			(1U << 0)
#define PIN_NMI				(1U << 3)
#define PIN_VIRTUAL_NMIS		(1U << 5)

#define PROC_INTR_WINDOW		(1U << 2)
#define PROC_TSC_OFFSET			(1U << 3)
#define PROC_HLT			(1U << 7)
#define PROC_INVLPG			(1U << 9)
#define PROC_MWAIT			(1U << 10)
#define PROC_RDPMC			(1U << 11)
#define PROC_RDTSC			(1U << 12)
#define PROC_CR3_LOAD			(1U << 15)
#define PROC_CR3_STORE			(1U << 16)
#define PROC_CR8_LOAD			(1U << 19)
#define PROC_CR8_STORE			(1U << 20)
#define PROC_TPR_SHADOW			(1U << 21)
#define PROC_NMI_WINDOW			(1U << 22)
#define PROC_MOV_DR			(1U << 23)
#define PROC_UNCOND_IO			(1U << 24)
#define PROC_IO_BITMAPS			(1U << 25)
#define PROC_MSR_BITMAPS		(1U << 28)
#define PROC_MONITOR			(1U << 29)
#define PROC_SECONDARY			(1U << 31)

#define PROC2_EPT			(1U << 1)
#define PROC2_RDTSCP			(1U << 3)
#define PROC2_VPID			(1U << 5)
#define PROC2_WBINVD			(1U << 6)
#define PROC2_UNRESTRICTED		(1U << 7)

#define EXIT_HOST_64			(1U << 9)
#define EXIT_ACK_INTR			(1U << 15)
#define EXIT_SAVE_PAT			(1U << 18)
#define EXIT_LOAD_PAT			(1U << 19)
#define EXIT_SAVE_EFER			(1U << 20)
#define EXIT_LOAD_EFER			(1U << 21)

#define ENTRY_IA32E			(1U << 9)
#define ENTRY_LOAD_PAT			(1U << 14)
#define ENTRY_LOAD_EFER			(1U << 15)

/* interruption information (entry, exit, IDT vectoring) */
#define INTR_INFO_VALID			(1U << 31)
#define INTR_INFO_ERROR_VALID		(1U << 11)
#define INTR_INFO_NMI_UNBLOCK		(1U << 12)
#define INTR_TYPE_EXT			(0U << 8)
#define INTR_TYPE_NMI			(2U << 8)
#define INTR_TYPE_HW_EXCEPTION		(3U << 8)
#define INTR_TYPE_SOFT_INTR		(4U << 8)
#define INTR_TYPE_PRIV_SOFT		(5U << 8)
#define INTR_TYPE_SOFT_EXCEPTION	(6U << 8)
#define INTR_TYPE_MASK			(7U << 8)

#define INTERRUPTIBILITY_STI		(1U << 0)
#define INTERRUPTIBILITY_MOV_SS		(1U << 1)
#define INTERRUPTIBILITY_NMI		(1U << 3)

/* segment access rights */
#define AR_UNUSABLE			(1U << 16)

/* --- exit reasons ----------------------------------------------------------- */
#define EXIT_EXCEPTION_NMI		0
#define EXIT_EXTERNAL_INTR		1
#define EXIT_TRIPLE_FAULT		2
#define EXIT_INTR_WINDOW		7
#define EXIT_NMI_WINDOW			8
#define EXIT_CPUID			10
#define EXIT_GETSEC			11
#define EXIT_HLT			12
#define EXIT_INVD			13
#define EXIT_RDPMC			15
#define EXIT_VMCALL			18
#define EXIT_VMCLEAR			19
#define EXIT_VMLAUNCH			20
#define EXIT_VMPTRLD			21
#define EXIT_VMPTRST			22
#define EXIT_VMREAD			23
#define EXIT_VMRESUME			24
#define EXIT_VMWRITE			25
#define EXIT_VMXOFF			26
#define EXIT_VMXON			27
#define EXIT_CR_ACCESS			28
#define EXIT_DR_ACCESS			29
#define EXIT_IO				30
#define EXIT_RDMSR			31
#define EXIT_WRMSR			32
#define EXIT_MWAIT			36
#define EXIT_MONITOR			39
#define EXIT_EPT_VIOLATION		48
#define EXIT_EPT_MISCONFIG		49
#define EXIT_INVEPT			50
#define EXIT_INVVPID			53
#define EXIT_WBINVD			54
#define EXIT_XSETBV			55
#define EXIT_VMFUNC			59
#define EXIT_MAX			65
#define EXIT_ENTRY_FAILED		(1U << 31)

/* EPT violation qualification */
#define EPT_QUAL_WRITE			(1ULL << 1)
#define EPT_QUAL_FETCH			(1ULL << 2)
#define EPT_QUAL_GLA_VALID		(1ULL << 7)
#define EPT_QUAL_GLA_TRANSLATED		(1ULL << 8)
#define EPT_QUAL_NMI_UNBLOCK		(1ULL << 12)

/* EPT entries and pointer: read/write/execute, write-back */
#define EPT_RWX				0x7ULL
#define EPT_MT_WB			(6ULL << 3)
#define EPT_IGNORE_PAT			(1ULL << 6)
#define EPTP_WB_4LEVEL			(6ULL | (3ULL << 3))

/* --- MSRs ---------------------------------------------------------------------- */
#define FEATURE_CONTROL_LOCKED		(1ULL << 0)
#define FEATURE_CONTROL_VMXON		(1ULL << 2)
#define MSR_VMX_BASIC			0x480
#define MSR_VMX_PINBASED		0x481
#define MSR_VMX_PROCBASED		0x482
#define MSR_VMX_EXIT			0x483
#define MSR_VMX_ENTRY			0x484
#define MSR_VMX_CR0_FIXED0		0x486
#define MSR_VMX_CR0_FIXED1		0x487
#define MSR_VMX_CR4_FIXED0		0x488
#define MSR_VMX_CR4_FIXED1		0x489
#define MSR_VMX_PROCBASED2		0x48b
#define MSR_VMX_EPT_VPID_CAP		0x48c
#define MSR_VMX_TRUE_PINBASED		0x48d
#define MSR_VMX_TRUE_PROCBASED		0x48e
#define MSR_VMX_TRUE_EXIT		0x48f
#define MSR_VMX_TRUE_ENTRY		0x490
#define VMX_BASIC_TRUE_CTLS		(1ULL << 55)
#define VMX_BASIC_INOUT_INFO		(1ULL << 54)

#define EPT_CAP_4LEVEL			(1ULL << 6)
#define EPT_CAP_WB			(1ULL << 14)
#define EPT_CAP_INVEPT			(1ULL << 20)
#define EPT_CAP_INVEPT_SINGLE		(1ULL << 25)
#define EPT_CAP_INVEPT_ALL		(1ULL << 26)
#define VPID_CAP_INVVPID		(1ULL << 32)
#define VPID_CAP_INVVPID_SINGLE		(1ULL << 41)
#define VPID_CAP_INVVPID_ALL		(1ULL << 42)

#define CR4_VMXE			(1ULL << 13)

/* vmx_enter.S: one entry; 0 after a VM exit, 1 if the entry failed */
int kvmp_vmx_enter(u64 *gprs, unsigned long launched);
void kvmp_vmx_exit_point(void);		/* HOST_RIP */

#endif /* KVMPORT_CORE_VMX_H */
