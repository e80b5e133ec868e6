/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * The portable core's objects (VMs, VCPUs, memory slots) and the services its
 * files give each other and the backends.  Three headers, by audience:
 * kvmp_port.h (what a port calls), this one (the core's insides),
 * kvmp_backend.h (what a hardware backend implements).
 */
#ifndef KVMPORT_CORE_KVMP_CORE_H
#define KVMPORT_CORE_KVMP_CORE_H

#include "kvmp_decode.h"
#include "kvmp_msr.h"
#include "kvmp_os.h"
#include "kvmp_port.h"

#define KVMP_MAX_VCPUS		64
#define KVMP_MAX_VCPU_ID	1023
#define KVMP_MAX_SLOTS		32
#define KVMP_MAX_CPUID_ENTRIES	256
#define KVMP_MAX_MSR_ENTRIES	256
/* run area (KVMP_RUN_PAGES, kvmp_port.h): the page port I/O data goes through */
#define KVMP_PIO_OFFSET		KVMP_PAGE_SIZE
/* coalesced MMIO: zones a VM may have; writes the ring holds */
#define KVMP_MAX_COALESCED_ZONES	100
#define KVMP_COALESCED_MMIO_MAX \
	((KVMP_PAGE_SIZE - sizeof(struct kvmp_coalesced_mmio_ring)) / \
	 sizeof(struct kvmp_coalesced_mmio))

/* GPR indices, in the x86 encoding order */
enum {
	KVMP_RAX, KVMP_RCX, KVMP_RDX, KVMP_RBX, KVMP_RSP, KVMP_RBP, KVMP_RSI,
	KVMP_RDI, KVMP_R8, KVMP_R9, KVMP_R10, KVMP_R11, KVMP_R12, KVMP_R13,
	KVMP_R14, KVMP_R15, KVMP_NR_GPRS
};

#define KVMP_CR0_PE	(1ULL << 0)
#define KVMP_CR0_TS	(1ULL << 3)
#define KVMP_CR0_ET	(1ULL << 4)
#define KVMP_CR0_NW	(1ULL << 29)
#define KVMP_CR0_CD	(1ULL << 30)
#define KVMP_CR0_PG	(1ULL << 31)
#define KVMP_CR4_PSE	(1ULL << 4)
#define KVMP_CR4_PAE	(1ULL << 5)
#define KVMP_CR4_PGE	(1ULL << 7)
#define KVMP_CR4_OSXSAVE (1ULL << 18)
#define KVMP_EFER_SCE	(1ULL << 0)
#define KVMP_EFER_LME	(1ULL << 8)
#define KVMP_EFER_LMA	(1ULL << 10)
#define KVMP_EFER_NX	(1ULL << 11)
/* the EFER bits a guest may have (no SVME: kvmport offers no nesting) */
#define KVMP_EFER_GUEST_BITS	(KVMP_EFER_SCE | KVMP_EFER_LME | \
				 KVMP_EFER_LMA | KVMP_EFER_NX)
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
	/* KVMP_MEM_LOG_DIRTY_PAGES: a bit a page written since the last GET_DIRTY_LOG */
	u64 *dirty;
};

/* a coalesced MMIO or port I/O zone */
struct kvmp_zone {
	u64 addr;
	u64 size;
	bool pio;
};

struct kvmp_vm {
	struct kvmp_os_mutex *lock;	/* slots, vcpus[], the nested page tables */
	/*
	 * What the MMU notifier touches, which must not wait on vm->lock (held
	 * across allocations whose reclaim may call it): changes of slots[]
	 * and vcpus[] (under both locks), the slots' pins, dirty bitmaps and
	 * the nested tables' leaves.  Nothing sleeps under it.
	 */
	struct kvmp_os_spinlock *mmu_lock;
	/*
	 * A fault pins with both locks dropped and keeps the page only if
	 * mem_seq did not move meanwhile and no invalidation is under way.
	 */
	u64 mem_seq;			/* mmu_lock: invalidations, slot changes */
	u32 mm_invalidating;		/* atomic: invalidations under way */
	struct kvmp_os_mm *mm;		/* the creator's memory: pins are charged there */
	int refs;			/* the VM fd and each VCPU hold one */
	struct kvmp_slot *slots[KVMP_MAX_SLOTS];
	struct kvmp_vcpu *vcpus[KVMP_MAX_VCPUS];
	int nr_vcpus;
	/*
	 * As Linux's created_vcpus: a VCPU's id and its place count until the VM
	 * goes, even after its fd is closed (Linux frees VCPUs only with the VM)
	 */
	int created_vcpus;
	u64 vcpu_ids[(KVMP_MAX_VCPU_ID + 64) / 64];
	u32 max_vcpu_ids;		/* KVM_CAP_MAX_VCPU_ID's; 0: not fixed yet */
	/*
	 * KVM_SET/GET_NR_MMU_PAGES: a limit Linux's shadow MMU keeps.  kvmport's
	 * nested tables have none; the numbers answer as Linux's (vm->lock).
	 */
	bool nr_mmu_pages_set;		/* by the VMM: slots no longer change it */
	u64 nr_mmu_pages;
	/* bumped when mappings go away: VCPUs flush their TLB before re-entry */
	u32 tlb_generation;
	u64 kvm_wall_clock;		/* the old KVM wall-clock MSR, per VM */
	u64 id;				/* unique while the module lives (never 0) */
	u64 tsc_base;			/* host TSC when the first VCPU came */
	bool tsc_started;
	/* coalesced MMIO/PIO: the ring page every VCPU fd maps, the zones (vm->lock) */
	struct kvmp_coalesced_mmio_ring *ring;
	u64 ring_pa;
	struct kvmp_zone zones[KVMP_MAX_COALESCED_ZONES];
	u32 nr_zones;
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
	/* MOVS: the exit reads the source (else it writes the destination) */
	bool movs_read;
	bool movs_dst_mmio;	/* and the destination is MMIO too */
	u64 movs_dst;		/* the destination's guest-physical address */
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
	u64 tsc_adjust;			/* IA32_TSC_ADJUST, kept in software */
};

/*
 * The event the next entry delivers, which an exit may have left behind
 * (EVENTINJ on SVM, the VM-entry interruption information on VMX): an
 * exception or an NMI.  Interrupts are the core's (pending_irq).
 */
enum { KVMP_EVENT_NONE, KVMP_EVENT_EXCEPTION, KVMP_EVENT_NMI };

struct kvmp_event {
	u8 type;
	u8 vector;
	bool has_error;
	u32 error;
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
	/*
	 * The task priority (CR8) for every backend: with the local APIC in
	 * the VMM it goes in and out through run->cr8 around each KVM_RUN
	 */
	u8 cr8;
	u64 misc_enable;
	struct kvmp_msr_state msr;

	u8 *fpu;			/* x87/SSE/AVX: an XSAVE area, a page */
	u64 xcr0;			/* the guest's XCR0 (XSETBV) */
	int pending_irq;		/* KVM_INTERRUPT vector, or -1 */
	bool pending_nmi;
	bool entered;		/* KVM_RUN has entered the guest once */
	/* an injected NMI (KVM_SET_VCPU_EVENTS) waiting behind an exception */
	bool nmi_injected;
	/*
	 * What KVM_GET_VCPU_EVENTS reports of the last exception and interrupt
	 * after their delivery (Linux keeps the vector, error code, ...)
	 */
	struct kvmp_event last_exception;
	u8 last_irq;
	struct kvmp_pio pio;
	struct kvmp_mmio mmio;

	u32 tlb_generation;
	/* the CPU it is in guest mode on, or -1 (kvmp_vcpu_guest_enter/exit) */
	int guest_cpu;
	u32 run_count;			/* KVM_RUN calls: per-run host state */
	void *arch;			/* the backend's per-VCPU state */
};

/* segment register numbers for backend get_segment */
enum {
	KVMP_SEG_ES, KVMP_SEG_CS, KVMP_SEG_SS, KVMP_SEG_DS, KVMP_SEG_FS,
	KVMP_SEG_GS
};

int kvmp_check_extension(unsigned long cap);

/* kvmp_mem.c: coalesced MMIO and port I/O (KVM_REGISTER_COALESCED_MMIO) */
int kvmp_coalesced_zone(struct kvmp_vm *vm,
			const struct kvmp_coalesced_mmio_zone *zone, bool add);
bool kvmp_coalesce(struct kvmp_vm *vm, u64 addr, u32 len, const void *data,
		   bool pio);

/* kvmp_mem.c: slots and guest memory */
int kvmp_set_user_memory_region(struct kvmp_vm *vm,
				const struct kvmp_userspace_memory_region *r);
void kvmp_free_slots(struct kvmp_vm *vm);
u64 kvmp_max_gfn(void);
/*
 * A backend brackets each guest entry with these, preemption off: enter
 * before it reads vm->tlb_generation, exit after the #VMEXIT.  Slot changes
 * then force out of guest mode only the CPUs running this VM.
 */
void kvmp_vcpu_guest_enter(struct kvmp_vcpu *vcpu, int cpu);
void kvmp_vcpu_guest_exit(struct kvmp_vcpu *vcpu);
struct kvmp_slot *kvmp_find_slot(struct kvmp_vm *vm, u64 gpa);
bool kvmp_gpa_is_mmio(struct kvmp_vm *vm, u64 gpa, bool write);
int kvmp_get_dirty_log(struct kvmp_vm *vm, const struct kvmp_dirty_log *log);
int kvmp_read_guest(struct kvmp_vm *vm, u64 gpa, void *dst, unsigned long n);
int kvmp_write_guest(struct kvmp_vm *vm, u64 gpa, const void *src,
		     unsigned long n);
int kvmp_gva_to_gpa(struct kvmp_vcpu *vcpu, const struct kvmp_sregs *s,
		    u64 gva, u64 *gpa);
int kvmp_read_guest_virt(struct kvmp_vcpu *vcpu, const struct kvmp_sregs *s,
			 u64 gva, void *dst, unsigned int n);
int kvmp_write_guest_virt(struct kvmp_vcpu *vcpu, const struct kvmp_sregs *s,
			  u64 gva, const void *src, unsigned int n);

/* kvmp_tdp.c: the nested (NPT) or extended (EPT) page table of a VM */
/*
 * Bit 1 is the write permission in both formats (NPT R/W, EPT W): dirty
 * logging maps pages without it until the guest writes them.
 */
#define KVMP_TDP_WRITE	(1ULL << 1)

struct kvmp_tdp {
	u64 *root;
	u64 root_pa;
	u64 table_bits;		/* a non-leaf entry's permission bits */
	u64 leaf_bits;		/* a leaf's permission and memory-type bits */
};

int kvmp_tdp_init(struct kvmp_tdp *t, u64 table_bits, u64 leaf_bits);
void kvmp_tdp_destroy(struct kvmp_tdp *t);
int kvmp_tdp_prepare(struct kvmp_tdp *t, u64 gpa);
int kvmp_tdp_map(struct kvmp_tdp *t, u64 gpa, u64 hpa, bool writable);
u64 kvmp_tdp_lookup(struct kvmp_tdp *t, u64 gpa);	/* the leaf, or 0 */
void kvmp_tdp_unmap_range(struct kvmp_tdp *t, u64 gpa, u64 size);
/* kvmp_mem.c: -ENOENT no slot (MMIO), -EAGAIN enter again (mappings moved) */
int kvmp_tdp_fault(struct kvmp_vm *vm, struct kvmp_tdp *t, u64 gpa, bool write);

/* kvmp_fpu.c: the guest's FPU/SSE/AVX state */
void kvmp_fpu_reset(struct kvmp_vcpu *vcpu);
void kvmp_fpu_get(struct kvmp_vcpu *vcpu, struct kvmp_fpu *f);
void kvmp_fpu_set(struct kvmp_vcpu *vcpu, const struct kvmp_fpu *f);
void kvmp_fpu_load_guest(struct kvmp_vcpu *vcpu);	/* interrupts off */
void kvmp_fpu_save_guest(struct kvmp_vcpu *vcpu);
void kvmp_fpu_get_xsave(struct kvmp_vcpu *vcpu, u8 *region);	/* 4096 bytes */
int kvmp_fpu_set_xsave(struct kvmp_vcpu *vcpu, const u8 *region);
/* kvmp_state.c: KVM_GET/SET_VCPU_EVENTS, DEBUGREGS, XSAVE, XCRS */
long kvmp_vcpu_state_ioctl(struct kvmp_vcpu *vcpu, unsigned int ioctl,
			   u64 uarg);
/*
 * kvmp_check.c: guest state from the VMM, checked as Linux checks it.  The
 * core's KVM_SET_SREGS calls kvmp_check_sregs before the backend's
 * set_sregs; a backend checking a guest's own CR0/CR4 write may use the
 * other two.
 */
int kvmp_check_sregs(struct kvmp_vcpu *vcpu, const struct kvmp_sregs *s);
bool kvmp_is_valid_cr0(u64 cr0);
bool kvmp_is_valid_cr4(struct kvmp_vcpu *vcpu, u64 cr4);
int kvmp_guest_set_cr0(struct kvmp_vcpu *vcpu, u64 old, u64 *cr0, u64 cr4,
		       u64 *efer, bool cs_l);
int kvmp_guest_set_cr4(struct kvmp_vcpu *vcpu, u64 cr4, u64 efer);

/* kvmp_x86.c: CPUID and MSRs, exits completed in the core, the run loop */
/* Linux's floor for KVM_SET_NR_MMU_PAGES and its default (KVM_MIN_ALLOC_MMU_PAGES) */
#define KVMP_MIN_MMU_PAGES	64

u64 kvmp_reserved_gpa_bits(struct kvmp_vcpu *vcpu);
bool kvmp_apic_base_valid(struct kvmp_vcpu *vcpu, u64 data);
struct kvmp_cpuid_entry2 *kvmp_find_cpuid(struct kvmp_vcpu *vcpu, u32 leaf,
					  u32 subleaf);
int kvmp_get_supported_cpuid(u64 uarg);
void kvmp_build_supported_cpuid(void);
void kvmp_check_init(void);	/* kvmp_check.c: the host's fixed CR4 limits */
void kvmp_cpuid_runtime(struct kvmp_vcpu *vcpu, u64 guest_cr4,
			struct kvmp_cpuid_entry2 *e);
void kvmp_emulate_cpuid(struct kvmp_vcpu *vcpu, u64 guest_cr4, u32 *eax,
			u32 *ebx, u32 *ecx, u32 *edx);
/* XSAVE state components: x87, SSE, AVX (the upper halves of YMM0-15) */
#define KVMP_XFEATURE_FP	1ULL
#define KVMP_XFEATURE_SSE	2ULL
#define KVMP_XFEATURE_YMM	4ULL
#define KVMP_XFEATURE_XTILE_DATA	(1ULL << 18)	/* AMX: Linux's dynamic feature */
/* XSAVE state components guests may use (x87, SSE, AVX), 0 without XSAVE */
extern u64 kvmp_xcr0_supported;
extern u64 kvmp_host_xcr0;
extern u32 kvmp_mxcsr_mask;	/* MXCSR bits the host CPU has */
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
int kvmp_emulate_rdpmc(struct kvmp_vcpu *vcpu, u32 ecx, unsigned int cpl,
		       u64 cr0, u64 cr4, u64 *value);
int kvmp_guest_set_cr8(struct kvmp_vcpu *vcpu, u64 cr8);
int kvmp_exit_pio(struct kvmp_vcpu *vcpu, struct kvmp_pio *pio);
int kvmp_cpu_mode(const struct kvmp_sregs *s);	/* 16, 32 or 64 */
unsigned int kvmp_fetch_insn(struct kvmp_vcpu *vcpu, const struct kvmp_regs *regs,
			     const struct kvmp_sregs *s, u8 *code);
int kvmp_exit_mmio(struct kvmp_vcpu *vcpu, u64 gpa, const u8 *insn_bytes,
		   unsigned int insn_len);
int kvmp_vcpu_run(struct kvmp_vcpu *vcpu);
void kvmp_spec_vm_switch(u64 *cpu_last_vm, const struct kvmp_vm *vm);
void kvmp_internal_error(struct kvmp_vcpu *vcpu, u32 suberror, u64 data0,
			 u64 data1);

/*
 * Every SVM and VMX instruction in inline asm: KVMP_VIRT_INSN("vmxoff")
 * opens an asm goto whose label `fault` the instruction reaches through the
 * port's exception table (kvmp_os.h, KVMP_EXTABLE) and a jump beside it if
 * it faults; the code there calls kvmp_virt_fault.  The asm files do the same with
 * KVMP_EXTABLE_S.  tests/kext/test_extable.py checks that no such
 * instruction in the built module lacks an entry.
 */
#define KVMP_VIRT_INSN(insn)					\
	"1: " insn "\n\t"						\
	"jmp 3f\n\t"	/* flags intact: a caller may test them after */	\
	"2: jmp %l[fault]\n\t"					\
	"3:\n\t"							\
	KVMP_EXTABLE(1b, 2b)
/*
 * A virtualization instruction faulted: virtualization went off on this CPU
 * under us.  kvmp_virt_fault says so in the host's log (not while a reboot
 * turns it off); the backend's run() then returns kvmp_virt_fault_action():
 * KVMP_REENTER while rebooting (the run loop waits), else -KVMP_EIO.
 */
void kvmp_virt_fault(const char *insn);
int kvmp_virt_fault_action(void);

#ifndef KVMP_CDEF	/* cffi (tests) reads declarations only */
/* host CPUID, for the backend and the supported-CPUID table */
static inline void kvmp_cpuid(u32 leaf, u32 subleaf, u32 *a, u32 *b, u32 *c,
			      u32 *d)
{
	asm volatile("cpuid"
		     : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d)
		     : "a"(leaf), "c"(subleaf));
}

/*
 * A machine check the CPU reported as a VM exit belongs to the host: raise
 * it again (vector 18) so the host's handler runs, as Linux's KVM does.
 */
static inline void kvmp_host_machine_check(void)
{
	asm volatile("int $0x12");
}

/* a 48-bit virtual address, sign-extended */
static inline bool kvmp_is_canonical(u64 a)
{
	return (u64)((long long)(a << 16) >> 16) == a;
}

static inline u64 kvmp_rdtsc(void)
{
	u32 lo, hi;

	asm volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((u64)hi << 32) | lo;
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
