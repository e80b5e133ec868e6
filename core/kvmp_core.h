/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The portable core's objects: VMs, VCPUs, memory slots, and the interface a
 * hardware backend (SVM now, VMX next) implements.
 */
#ifndef KVMPORT_CORE_KVMP_CORE_H
#define KVMPORT_CORE_KVMP_CORE_H

#include <kvmport/kvmport_ext.h>

#include "kvmp_decode.h"
#include "kvmp_os.h"

#define KVMP_MAX_VCPUS		64
#define KVMP_MAX_VCPU_ID	1023
#define KVMP_MAX_SLOTS		32
#define KVMP_MAX_CPUID_ENTRIES	256
#define KVMP_MAX_MSR_ENTRIES	256
/* run area: the kvmp_run page, then the page port I/O data goes through */
#define KVMP_RUN_PAGES		2
#define KVMP_PIO_OFFSET		KVMP_PAGE_SIZE

/* GPR indices, in the x86 encoding order */
enum {
	KVMP_RAX, KVMP_RCX, KVMP_RDX, KVMP_RBX, KVMP_RSP, KVMP_RBP, KVMP_RSI,
	KVMP_RDI, KVMP_R8, KVMP_R9, KVMP_R10, KVMP_R11, KVMP_R12, KVMP_R13,
	KVMP_R14, KVMP_R15, KVMP_NR_GPRS
};

#define KVMP_CR0_PE	(1ULL << 0)
#define KVMP_CR0_PG	(1ULL << 31)
#define KVMP_CR4_PSE	(1ULL << 4)
#define KVMP_CR4_PAE	(1ULL << 5)
#define KVMP_CR4_OSXSAVE (1ULL << 18)
#define KVMP_EFER_LME	(1ULL << 8)
#define KVMP_EFER_LMA	(1ULL << 10)
#define KVMP_EFLAGS_IF	(1ULL << 9)
#define KVMP_EFLAGS_DF	(1ULL << 10)

struct kvmp_slot {
	u32 id;
	u32 flags;
	u64 gpa;		/* guest-physical start */
	u64 size;		/* bytes */
	u64 uaddr;		/* where the VMM has it */
	/* pages pinned so far (lazily, on first guest touch), by page index */
	struct kvmp_os_pin **pins;
	u64 *pas;
};

struct kvmp_vm {
	struct kvmp_os_mutex *lock;	/* slots, vcpus[], the nested page tables */
	int refs;			/* the VM fd and each VCPU hold one */
	struct kvmp_slot *slots[KVMP_MAX_SLOTS];
	struct kvmp_vcpu *vcpus[KVMP_MAX_VCPUS];
	int nr_vcpus;
	/* bumped when mappings go away: VCPUs flush their TLB before re-entry */
	u32 tlb_generation;
	u64 kvm_wall_clock;		/* the old KVM wall-clock MSR, per VM */
	void *arch;			/* the backend's per-VM state */
};

/* a port I/O exit in flight: finished on the next KVM_RUN */
struct kvmp_pio {
	bool pending;
	bool in;
	bool string;
	bool rep;
	u8 size;
	u16 port;
	u32 count;
	u8 addr_size;		/* string: 2, 4 or 8 */
	int seg;		/* string OUTS: the source segment (KVMP_SEG_*) */
	u64 next_rip;
};

struct kvmp_mmio {
	bool pending;		/* a load waits for run->mmio.data */
	struct kvmp_insn insn;
	u64 next_rip;
};

/* Linux's numbers: MCE banks a VMM may set up, variable MTRRs offered */
#define KVMP_MCE_BANKS_MAX	32
#define KVMP_NR_VAR_MTRR	8
#define KVMP_NR_FIXED_MTRR	11

/* MSR state the core keeps per VCPU (the policy is in kvmp_x86.c) */
struct kvmp_msr_state {
	u64 mtrr_deftype;
	u64 mtrr_fixed[KVMP_NR_FIXED_MTRR];
	u64 mtrr_var[2 * KVMP_NR_VAR_MTRR];	/* base, mask, base, ... */
	u64 mcg_cap;				/* KVM_X86_SETUP_MCE's */
	u64 mcg_ctl;
	u64 mcg_status;
	u64 mce_banks[4 * KVMP_MCE_BANKS_MAX];	/* CTL, STATUS, ADDR, MISC */
	u64 mci_ctl2[KVMP_MCE_BANKS_MAX];
	u64 hwcr;
	u64 ucode_rev;
	u64 de_cfg;
	u64 vm_cr;
	u64 hsave_pa;
	u64 smbase;
	u64 smi_count;
	u64 power_ctl;
	u64 misc_features;
	u64 platform_info;
	u64 kvm_system_time;		/* the old KVM clock MSR, stored only */
};

struct kvmp_vcpu {
	struct kvmp_vm *vm;
	u32 id;
	struct kvmp_os_mutex *lock;	/* one ioctl at a time */
	struct kvmp_run *run;		/* KVMP_RUN_PAGES pages */
	u64 run_pa[KVMP_RUN_PAGES];

	struct kvmp_cpuid_entry2 *cpuid;
	u32 cpuid_nent;

	u64 apic_base;			/* MSRs the core keeps itself */
	u64 misc_enable;
	struct kvmp_msr_state msr;

	u64 xcr0;			/* the guest's XCR0 (XSETBV) */
	int pending_irq;		/* KVM_INTERRUPT vector, or -1 */
	bool pending_nmi;
	struct kvmp_pio pio;
	struct kvmp_mmio mmio;

	u32 tlb_generation;
	void *arch;			/* the backend's per-VCPU state */
};

/* segment register numbers for backend get_segment */
enum {
	KVMP_SEG_ES, KVMP_SEG_CS, KVMP_SEG_SS, KVMP_SEG_DS, KVMP_SEG_FS,
	KVMP_SEG_GS
};

/* what the run loop does after a backend handled one exit */
enum kvmp_exit_action {
	KVMP_REENTER = 1,	/* handled in the kernel: enter the guest again */
	KVMP_TO_USER = 0,	/* run->exit_reason is set: return to the VMM */
};

/*
 * A hardware backend.  run() enters the guest once and handles the exit; it
 * returns enum kvmp_exit_action or a negative errno.  Everything else is
 * called with the VCPU lock held and may sleep.
 */
struct kvmp_backend {
	const char *name;
	int (*hardware_setup)(void);		/* checks support; global state */
	void (*hardware_unsetup)(void);
	int (*cpu_enable)(void *unused);	/* on each CPU */
	int (*cpu_disable)(void *unused);

	int (*vm_init)(struct kvmp_vm *vm);
	void (*vm_destroy)(struct kvmp_vm *vm);
	/* drop every nested mapping of [gpa, gpa + size) */
	void (*unmap_range)(struct kvmp_vm *vm, u64 gpa, u64 size);

	int (*vcpu_create)(struct kvmp_vcpu *vcpu);
	void (*vcpu_free)(struct kvmp_vcpu *vcpu);
	void (*get_regs)(struct kvmp_vcpu *vcpu, struct kvmp_regs *regs);
	void (*set_regs)(struct kvmp_vcpu *vcpu, const struct kvmp_regs *regs);
	void (*get_sregs)(struct kvmp_vcpu *vcpu, struct kvmp_sregs *sregs);
	int (*set_sregs)(struct kvmp_vcpu *vcpu, const struct kvmp_sregs *sregs);
	void (*get_fpu)(struct kvmp_vcpu *vcpu, struct kvmp_fpu *fpu);
	void (*set_fpu)(struct kvmp_vcpu *vcpu, const struct kvmp_fpu *fpu);
	/* MSRs the backend keeps (EFER, SYSCALL and SYSENTER state, ...) */
	int (*get_msr)(struct kvmp_vcpu *vcpu, u32 index, u64 *data);
	int (*set_msr)(struct kvmp_vcpu *vcpu, u32 index, u64 data);
	/* the guest can take an external interrupt right now */
	bool (*interrupt_allowed)(struct kvmp_vcpu *vcpu);
	bool (*if_flag)(struct kvmp_vcpu *vcpu);
	int (*run)(struct kvmp_vcpu *vcpu);
};

extern const struct kvmp_backend *kvmp_backend;
extern const struct kvmp_backend kvmp_svm_backend;

/* kvmp_main.c: the entry points a port calls (from its fd operations) */
int kvmp_core_init(void);
void kvmp_core_exit(void);
long kvmp_system_ioctl(unsigned int ioctl, unsigned long arg);
int kvmp_vm_create(unsigned long type, struct kvmp_vm **vmp);
void kvmp_vm_put(struct kvmp_vm *vm);
long kvmp_vm_ioctl(struct kvmp_vm *vm, unsigned int ioctl, unsigned long arg);
int kvmp_vcpu_create(struct kvmp_vm *vm, unsigned long id,
		     struct kvmp_vcpu **vcpup);
void kvmp_vcpu_destroy(struct kvmp_vcpu *vcpu);
long kvmp_vcpu_ioctl(struct kvmp_vcpu *vcpu, unsigned int ioctl,
		     unsigned long arg);
u64 kvmp_vcpu_run_page_pa(struct kvmp_vcpu *vcpu, unsigned long pgoff);
int kvmp_check_extension(unsigned long cap);

/* kvmp_mem.c: slots and guest memory */
int kvmp_set_user_memory_region(struct kvmp_vm *vm,
				const struct kvmp_userspace_memory_region *r);
void kvmp_free_slots(struct kvmp_vm *vm);
struct kvmp_slot *kvmp_find_slot(struct kvmp_vm *vm, u64 gpa);
int kvmp_gpa_to_hpa(struct kvmp_vm *vm, u64 gpa, bool write, u64 *hpa);
int kvmp_read_guest(struct kvmp_vm *vm, u64 gpa, void *dst, unsigned long n);
int kvmp_write_guest(struct kvmp_vm *vm, u64 gpa, const void *src,
		     unsigned long n);
int kvmp_gva_to_gpa(struct kvmp_vcpu *vcpu, const struct kvmp_sregs *s,
		    u64 gva, u64 *gpa);
int kvmp_read_guest_virt(struct kvmp_vcpu *vcpu, const struct kvmp_sregs *s,
			 u64 gva, void *dst, unsigned int n);
int kvmp_write_guest_virt(struct kvmp_vcpu *vcpu, const struct kvmp_sregs *s,
			  u64 gva, const void *src, unsigned int n);

/* kvmp_x86.c: CPUID and MSRs, exits completed in the core, the run loop */
int kvmp_get_supported_cpuid(u64 uarg);
void kvmp_build_supported_cpuid(void);
void kvmp_emulate_cpuid(struct kvmp_vcpu *vcpu, u64 guest_cr4, u32 *eax,
			u32 *ebx, u32 *ecx, u32 *edx);
/* XSAVE state components: x87, SSE, AVX (the upper halves of YMM0-15) */
#define KVMP_XFEATURE_FP	1ULL
#define KVMP_XFEATURE_SSE	2ULL
#define KVMP_XFEATURE_YMM	4ULL
/* XSAVE state components guests may use (x87, SSE, AVX), 0 without XSAVE */
extern u64 kvmp_xcr0_supported;
extern u64 kvmp_host_xcr0;
#define KVMP_XSAVE_AREA_MAX	1024	/* legacy + header + AVX fit */
int kvmp_set_xcr(struct kvmp_vcpu *vcpu, u32 index, u64 value);
/* RDMSR/WRMSR by the guest; non-zero means #GP */
int kvmp_get_msr(struct kvmp_vcpu *vcpu, u32 index, u64 *data);
int kvmp_set_msr(struct kvmp_vcpu *vcpu, u32 index, u64 data);
/* KVM_GET/SET_MSRS: the VMM may read and write more than the guest may */
int kvmp_host_get_msr(struct kvmp_vcpu *vcpu, u32 index, u64 *data);
int kvmp_host_set_msr(struct kvmp_vcpu *vcpu, u32 index, u64 data);
void kvmp_msr_init(struct kvmp_vcpu *vcpu);
#define KVMP_MCE_CAP_SUPPORTED	((1ULL << 8) | (1ULL << 24))	/* CTL_P SER_P */
int kvmp_setup_mce(struct kvmp_vcpu *vcpu, u64 mcg_cap);
extern const u32 kvmp_msr_list[];
extern const unsigned int kvmp_msr_list_len;
int kvmp_exit_pio(struct kvmp_vcpu *vcpu, struct kvmp_pio *pio);
int kvmp_exit_mmio(struct kvmp_vcpu *vcpu, u64 gpa, const u8 *insn_bytes,
		   unsigned int insn_len);
int kvmp_vcpu_run(struct kvmp_vcpu *vcpu);
void kvmp_internal_error(struct kvmp_vcpu *vcpu, u32 suberror, u64 data0,
			 u64 data1);

#ifndef KVMP_CDEF	/* cffi (tests) reads declarations only */
/* host CPUID, for the backend and the supported-CPUID table */
static inline void kvmp_cpuid(u32 leaf, u32 subleaf, u32 *a, u32 *b, u32 *c,
			      u32 *d)
{
	asm volatile("cpuid"
		     : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d)
		     : "a"(leaf), "c"(subleaf));
}

static inline u64 kvmp_xgetbv(u32 index)
{
	u32 lo, hi;

	asm volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(index));
	return ((u64)hi << 32) | lo;
}

static inline u64 kvmp_rdmsr(u32 index)
{
	u32 lo, hi;

	asm volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(index));
	return ((u64)hi << 32) | lo;
}

static inline void kvmp_wrmsr(u32 index, u64 v)
{
	asm volatile("wrmsr" : : "c"(index), "a"((u32)v), "d"((u32)(v >> 32))
		     : "memory");
}
#endif

#endif /* KVMPORT_CORE_KVMP_CORE_H */
