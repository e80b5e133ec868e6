/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * Model-specific register numbers, named once for the core and both backends
 * (Intel SDM vol. 4, AMD APM vol. 2 appendix A).
 */
#ifndef KVMPORT_CORE_KVMP_MSR_H
#define KVMPORT_CORE_KVMP_MSR_H

/* architectural: segment bases, SYSCALL/SYSENTER, EFER, the TSC */
#define MSR_IA32_TSC		0x10
#define MSR_FEATURE_CONTROL	0x3a	/* Intel */
#define MSR_SYSENTER_CS		0x174
#define MSR_SYSENTER_ESP	0x175
#define MSR_SYSENTER_EIP	0x176
#define MSR_EFER		0xc0000080
#define MSR_STAR		0xc0000081
#define MSR_LSTAR		0xc0000082
#define MSR_CSTAR		0xc0000083
#define MSR_SFMASK		0xc0000084
#define MSR_FS_BASE		0xc0000100
#define MSR_GS_BASE		0xc0000101
#define MSR_KERNEL_GS_BASE	0xc0000102
#define MSR_TSC_AUX		0xc0000103

/* what Linux KVM answers for guests (kvmp_x86.c) */
#define MSR_P5_MC_ADDR		0x0
#define MSR_P5_MC_TYPE		0x1
#define MSR_KVM_WALL_CLOCK	0x11	/* the old KVM clock pair */
#define MSR_KVM_SYSTEM_TIME	0x12
#define MSR_PLATFORM_ID		0x17
#define MSR_IA32_APICBASE	0x1b
#define MSR_EBL_CR_POWERON	0x2a
#define MSR_EBC_FREQUENCY_ID	0x2c
#define MSR_SMI_COUNT		0x34
#define MSR_TSC_ADJUST		0x3b
#define MSR_UCODE_WRITE		0x79
#define MSR_UCODE_REV		0x8b
#define MSR_SMBASE		0x9e
#define MSR_P6_PERFCTR0		0xc1
#define MSR_P6_PERFCTR1		0xc2
#define MSR_FSB_FREQ		0xcd
#define MSR_PLATFORM_INFO	0xce
#define MSR_MTRRCAP		0xfe
#define MSR_BBL_CR_CTL3		0x11e
#define MSR_MISC_FEATURES	0x140
#define MSR_MCG_CAP		0x179
#define MSR_MCG_STATUS		0x17a
#define MSR_MCG_CTL		0x17b
#define MSR_P6_EVNTSEL0		0x186
#define MSR_P6_EVNTSEL1		0x187
#define MSR_PERF_STATUS		0x198
#define MSR_PERF_CTL		0x199
#define MSR_IA32_MISC_ENABLE	0x1a0
#define MSR_DEBUGCTL		0x1d9
#define MSR_LBR_FIRST		0x1db	/* last branch/interrupt from/to */
#define MSR_LBR_LAST		0x1de
#define MSR_POWER_CTL		0x1fc
#define MSR_MTRR_VAR_FIRST	0x200
#define MSR_MTRR_FIX64K		0x250
#define MSR_MTRR_FIX16K		0x258	/* and 0x259 */
#define MSR_MTRR_FIX4K		0x268	/* to 0x26f */
#define MSR_PAT			0x277
#define MSR_MC0_CTL2		0x280
#define MSR_MTRR_DEFTYPE	0x2ff
#define MSR_MC0_CTL		0x400
#define MSR_RAPL_POWER_UNIT	0x606
#define MSR_PKG_ENERGY		0x611
#define MSR_DRAM_ENERGY		0x619
#define MSR_PP0_ENERGY		0x639
#define MSR_PP1_ENERGY		0x641
#define MSR_TSC_DEADLINE	0x6e0
#define MSR_K7_EVNTSEL0		0xc0010000	/* to PERFCTR3, 0xc0010007 */
#define MSR_K7_PERFCTR3		0xc0010007
#define MSR_SYSCFG		0xc0010010
#define MSR_K7_HWCR		0xc0010015
#define MSR_K7_CLK_CTL		0xc001001b
#define MSR_NB_CFG		0xc001001f
#define MSR_PATCH_LOADER	0xc0010020
#define MSR_K8_INT_PENDING	0xc0010055
#define MSR_MMIO_CONF_BASE	0xc0010058
#define MSR_TSEG_ADDR		0xc0010112
#define MSR_TSEG_MASK		0xc0010113
#define MSR_VM_CR		0xc0010114
#define MSR_VM_IGNNE		0xc0010115
#define MSR_VM_HSAVE_PA		0xc0010117
#define MSR_F15H_IC_CFG		0xc0011021
#define MSR_DC_CFG		0xc0011022
#define MSR_TW_CFG		0xc0011023
#define MSR_DE_CFG		0xc0011029
#define MSR_BU_CFG2		0xc001102a
#define MSR_F15H_EX_CFG		0xc001102c

#endif /* KVMPORT_CORE_KVMP_MSR_H */
