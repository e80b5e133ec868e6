/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * AMD SVM's hardware layouts and numbers: the VMCB, intercept and exit codes,
 * event injection, MSRs (AMD APM vol. 2, chapter 15 and appendix B).
 */
#ifndef KVMPORT_CORE_SVM_H
#define KVMPORT_CORE_SVM_H

#include "kvmp_os.h"

struct vmcb_seg {
	u16 selector;
	u16 attrib;
	u32 limit;
	u64 base;
} __packed;

struct vmcb_control {
	u32 intercepts[6];		/* 0x000: CR, DR, exceptions, misc 1-3 */
	u8 reserved_1[0x3c - 0x18];
	u16 pause_filter_thresh;	/* 0x03c */
	u16 pause_filter_count;
	u64 iopm_base_pa;		/* 0x040 */
	u64 msrpm_base_pa;		/* 0x048 */
	u64 tsc_offset;			/* 0x050 */
	u32 asid;			/* 0x058 */
	u8 tlb_ctl;			/* 0x05c */
	u8 reserved_2[3];
	u32 int_ctl;			/* 0x060 */
	u32 int_vector;			/* 0x064 */
	u32 int_state;			/* 0x068 */
	u8 reserved_3[4];
	u64 exit_code;			/* 0x070 */
	u64 exit_info_1;		/* 0x078 */
	u64 exit_info_2;		/* 0x080 */
	u64 exit_int_info;		/* 0x088: low 32 bits info, high 32 error */
	u64 nested_ctl;			/* 0x090 */
	u64 avic_vapic_bar;		/* 0x098 */
	u64 ghcb_gpa;			/* 0x0a0 */
	u64 event_inj;			/* 0x0a8: low 32 bits event, high 32 error */
	u64 nested_cr3;			/* 0x0b0 */
	u64 virt_ext;			/* 0x0b8 */
	u32 clean;			/* 0x0c0 */
	u32 reserved_5;
	u64 next_rip;			/* 0x0c8 */
	u8 insn_len;			/* 0x0d0 */
	u8 insn_bytes[15];
	u8 reserved_6[0x400 - 0xe0];
} __packed;

struct vmcb_save {
	struct vmcb_seg es, cs, ss, ds, fs, gs, gdtr, ldtr, idtr, tr; /* 0x000 */
	u8 reserved_1[0xcb - 0xa0];
	u8 cpl;				/* 0x0cb */
	u8 reserved_2[4];
	u64 efer;			/* 0x0d0 */
	u8 reserved_3[0x148 - 0xd8];
	u64 cr4;			/* 0x148 */
	u64 cr3;
	u64 cr0;
	u64 dr7;
	u64 dr6;
	u64 rflags;
	u64 rip;			/* 0x178 */
	u8 reserved_4[0x1d8 - 0x180];
	u64 rsp;			/* 0x1d8 */
	u8 reserved_5[0x1f8 - 0x1e0];
	u64 rax;			/* 0x1f8 */
	u64 star;
	u64 lstar;
	u64 cstar;
	u64 sfmask;
	u64 kernel_gs_base;
	u64 sysenter_cs;
	u64 sysenter_esp;
	u64 sysenter_eip;
	u64 cr2;			/* 0x240 */
	u8 reserved_6[0x268 - 0x248];
	u64 g_pat;			/* 0x268 */
} __packed;

struct vmcb {
	struct vmcb_control control;
	struct vmcb_save save;
} __packed;

_Static_assert(__builtin_offsetof(struct vmcb_control, exit_code) == 0x70, "vmcb");
_Static_assert(__builtin_offsetof(struct vmcb_control, event_inj) == 0xa8, "vmcb");
_Static_assert(__builtin_offsetof(struct vmcb_control, insn_bytes) == 0xd1, "vmcb");
_Static_assert(sizeof(struct vmcb_control) == 0x400, "vmcb control area");
_Static_assert(__builtin_offsetof(struct vmcb, save.efer) == 0x4d0, "vmcb");
_Static_assert(__builtin_offsetof(struct vmcb, save.rip) == 0x578, "vmcb");
_Static_assert(__builtin_offsetof(struct vmcb, save.rax) == 0x5f8, "vmcb");
_Static_assert(__builtin_offsetof(struct vmcb, save.g_pat) == 0x668, "vmcb");

/* intercept bits: word 0 (0x000) CR reads/writes, word 2 (0x008) exceptions,
 * word 3 (0x00c) and 4 (0x010)
 */
#define ICPT0_CR0_READ		(1U << 0)
#define ICPT0_CR0_WRITE		(1U << 16)
#define ICPT0_CR4_WRITE		(1U << 20)
#define ICPT0_CR8_WRITE		(1U << 24)
#define ICPT2_DB		(1U << 1)
#define ICPT2_AC		(1U << 17)
#define ICPT2_MC		(1U << 18)
#define ICPT3_INTR		(1U << 0)
#define ICPT3_NMI		(1U << 1)
#define ICPT3_VINTR		(1U << 4)
#define ICPT3_RDPMC		(1U << 15)
#define ICPT3_CPUID		(1U << 18)
#define ICPT3_IRET		(1U << 20)
#define ICPT3_INVD		(1U << 22)
#define ICPT3_HLT		(1U << 24)
#define ICPT3_INVLPGA		(1U << 26)
#define ICPT3_IOIO		(1U << 27)
#define ICPT3_MSR		(1U << 28)
#define ICPT3_SHUTDOWN		(1U << 31)
#define ICPT4_VMRUN		(1U << 0)
#define ICPT4_VMMCALL		(1U << 1)
#define ICPT4_VMLOAD		(1U << 2)
#define ICPT4_VMSAVE		(1U << 3)
#define ICPT4_STGI		(1U << 4)
#define ICPT4_CLGI		(1U << 5)
#define ICPT4_SKINIT		(1U << 6)
#define ICPT4_RDTSCP		(1U << 7)
#define ICPT4_WBINVD		(1U << 9)
#define ICPT4_MONITOR		(1U << 10)
#define ICPT4_MWAIT		(1U << 11)
#define ICPT4_MWAIT_COND	(1U << 12)
#define ICPT4_XSETBV		(1U << 13)
#define ICPT4_RDPRU		(1U << 14)

#define V_TPR_MASK		0xfU
#define V_IRQ			(1U << 8)
#define V_INTR_PRIO_SHIFT	16
#define V_IGN_TPR		(1U << 20)
#define V_INTR_MASKING		(1U << 24)
#define INT_STATE_SHADOW	(1U << 0)

#define EVENT_VALID		(1U << 31)
#define EVENT_ERROR_VALID	(1U << 11)
#define EVENT_TYPE_INTR		(0U << 8)
#define EVENT_TYPE_NMI		(2U << 8)
#define EVENT_TYPE_EXCEPTION	(3U << 8)
#define EVENT_TYPE_SOFT		(4U << 8)
#define EVENT_TYPE_MASK		(7U << 8)

#define TLB_FLUSH_ALL		1
#define TLB_FLUSH_ASID		3

/* exit codes */
#define SVM_EXIT_READ_CR0	0x000
#define SVM_EXIT_WRITE_CR0	0x010
#define SVM_EXIT_WRITE_CR4	0x014
#define SVM_EXIT_WRITE_CR8	0x018
#define SVM_EXIT_EXCP_DB	0x041
#define SVM_EXIT_EXCP_AC	0x051
#define SVM_EXIT_EXCP_MC	0x052
#define SVM_EXIT_INTR		0x060
#define SVM_EXIT_NMI		0x061
#define SVM_EXIT_SMI		0x062
#define SVM_EXIT_VINTR		0x064
#define SVM_EXIT_RDPMC		0x06f
#define SVM_EXIT_CPUID		0x072
#define SVM_EXIT_IRET		0x074
#define SVM_EXIT_INVD		0x076
#define SVM_EXIT_HLT		0x078
#define SVM_EXIT_INVLPGA	0x07a
#define SVM_EXIT_IOIO		0x07b
#define SVM_EXIT_MSR		0x07c
#define SVM_EXIT_SHUTDOWN	0x07f
#define SVM_EXIT_VMRUN		0x080
#define SVM_EXIT_VMMCALL	0x081
#define SVM_EXIT_VMLOAD		0x082
#define SVM_EXIT_VMSAVE		0x083
#define SVM_EXIT_STGI		0x084
#define SVM_EXIT_CLGI		0x085
#define SVM_EXIT_SKINIT		0x086
#define SVM_EXIT_RDTSCP		0x087
#define SVM_EXIT_WBINVD		0x089
#define SVM_EXIT_MONITOR	0x08a
#define SVM_EXIT_MWAIT		0x08b
#define SVM_EXIT_MWAIT_COND	0x08c
#define SVM_EXIT_XSETBV		0x08d
#define SVM_EXIT_RDPRU		0x08e
#define SVM_EXIT_NPF		0x400
#define SVM_EXIT_INVALID	(~0ULL)

#define EFER_SVME		(1ULL << 12)
#define VM_CR_SVMDIS		(1ULL << 4)

#define NPT_PRESENT_RW_USER	0x7ULL
#define PAT_DEFAULT		0x0007040600070406ULL

#endif /* KVMPORT_CORE_SVM_H */
