// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * The AMD SVM backend: EFER.SVME and a host save area per CPU, a VMCB per
 * VCPU, nested paging built lazily from the slots, ASIDs per CPU, and exit
 * handlers in a table indexed by exit code.
 *
 * Works without next-RIP save and decode assists (QEMU's emulated SVM has
 * neither): instruction lengths are known per exit, and MMIO instructions
 * are decoded by the core.  Both are used when the CPU has them.
 */
#include "kvmp_backend.h"
#include "svm.h"

/* --- global and per-CPU state -------------------------------------------- */
struct svm_cpu {
	void *hsave;
	u64 hsave_pa;
	void *host_vmcb;	/* what VMSAVE keeps of the host: FS, GS, TR... */
	u64 host_vmcb_pa;
	u32 asid_generation;
	u32 next_asid;
	bool flush_all;
	bool enabled;		/* by us: only then do we turn it off */
	u64 last_vm;		/* the id of the VM that ran here last */
	u64 host_tsc_aux;	/* this CPU's TSC_AUX, hidden from guests (RDPID) */
};

static struct svm_cpu *svm_cpus;
static int svm_ncpus;
static void *svm_iopm, *svm_msrpm;
static u64 svm_iopm_pa, svm_msrpm_pa;
static u32 svm_max_asid;
static bool svm_has_nrips, svm_has_decode_assists, svm_has_flush_by_asid;
static bool svm_host_rdpid;	/* RDPID: TSC_AUX is switched around VMRUN */

#define SVM_IOPM_PAGES	3
#define SVM_MSRPM_PAGES	2

struct svm_vm {
	struct kvmp_tdp npt;
};

/* What the entry code reads and writes: guest GPRs (RAX and RSP live in the VMCB). */
struct svm_enter {
	u64 gprs[KVMP_NR_GPRS];
	u64 vmcb_pa;
	u64 host_vmcb_pa;
};
/* svm_enter.S's E_VMCB and E_HOST_VMCB */
_Static_assert(__builtin_offsetof(struct svm_enter, vmcb_pa) == 128 &&
	       __builtin_offsetof(struct svm_enter, host_vmcb_pa) == 136,
	       "svm_enter.S knows this layout");

struct svm_vcpu {
	struct svm_enter enter;
	struct vmcb *vmcb;
	u32 asid;
	u32 asid_generation;
	int asid_cpu;
	bool need_flush;	/* the guest's own CR write changed its TLB */
	/*
	 * NMI blocking, which SVM without vNMI leaves to us (as kvm_amd): from
	 * the NMI's injection until the handler's IRET has run (intercepted,
	 * then done once RIP moved past it).
	 */
	bool nmi_masked;
	bool nmi_iret;
	u64 nmi_iret_rip;
	u64 db[4];		/* the guest's DR0-3, in the CPU only while it runs */
	u64 cr0;		/* the guest's CR0; the VMCB's may lack CD and NW */
};

_Static_assert(sizeof(struct svm_vcpu) <= KVMP_PAGE_SIZE, "svm_vcpu fits a page");

static struct svm_vcpu *to_svm(struct kvmp_vcpu *vcpu)
{
	return vcpu->arch;
}

/*
 * The guest's CR0 goes into the VMCB without CD and NW, so caches stay on
 * whatever the guest says (Linux's default KVM_X86_QUIRK_CD_NW_CLEARED);
 * while the two differ, MOV from CR0 exits and is answered with the
 * guest's value.
 */
static void svm_set_cr0(struct svm_vcpu *svm, u64 cr0)
{
	struct vmcb *vmcb = svm->vmcb;

	svm->cr0 = cr0;
	vmcb->save.cr0 = cr0 & ~(KVMP_CR0_CD | KVMP_CR0_NW);
	if (vmcb->save.cr0 != cr0)
		vmcb->control.intercepts[0] |= ICPT0_CR0_READ;
	else
		vmcb->control.intercepts[0] &= ~ICPT0_CR0_READ;
}

/* --- setup ------------------------------------------------------------------- */
static void svm_hardware_unsetup(void)
{
	int i;

	for (i = 0; svm_cpus && i < svm_ncpus; i++) {
		if (svm_cpus[i].hsave)
			kvmp_os_free_pages(svm_cpus[i].hsave, 1);
		if (svm_cpus[i].host_vmcb)
			kvmp_os_free_pages(svm_cpus[i].host_vmcb, 1);
	}
	kvmp_os_free(svm_cpus);
	svm_cpus = NULL;
	if (svm_iopm)
		kvmp_os_free_pages(svm_iopm, SVM_IOPM_PAGES);
	if (svm_msrpm)
		kvmp_os_free_pages(svm_msrpm, SVM_MSRPM_PAGES);
	svm_iopm = svm_msrpm = NULL;
}

static int svm_hardware_setup(void)
{
	u32 a, b, c, d;
	int i;

	kvmp_cpuid(0x80000000, 0, &a, &b, &c, &d);
	if (a < 0x8000000a)
		goto no_svm;
	kvmp_cpuid(0x80000001, 0, &a, &b, &c, &d);
	if (!(c & (1U << 2)))
		goto no_svm;
	if (kvmp_rdmsr(MSR_VM_CR) & VM_CR_SVMDIS) {
		kvmp_err("AMD SVM is disabled by the firmware\n");
		return -KVMP_ENODEV;
	}
	kvmp_cpuid(0x8000000a, 0, &a, &b, &c, &d);
	if (!(d & (1U << 0))) {
		kvmp_err("AMD SVM without nested paging is not supported\n");
		return -KVMP_ENODEV;
	}
	svm_max_asid = b - 1;
	svm_has_nrips = d & (1U << 3);
	svm_has_flush_by_asid = d & (1U << 6);
	svm_has_decode_assists = d & (1U << 7);
	/* RDPID (CPUID 7.0 ECX[22]) reads TSC_AUX and no intercept stops it */
	kvmp_cpuid(0, 0, &a, &b, &c, &d);
	if (a >= 7) {
		kvmp_cpuid(7, 0, &a, &b, &c, &d);
		svm_host_rdpid = c & (1U << 22);
	}
	if (svm_max_asid < 1)
		goto no_svm;

	svm_ncpus = kvmp_os_cpu_count();
	svm_cpus = kvmp_os_zalloc(svm_ncpus * sizeof(*svm_cpus));
	if (!svm_cpus)
		goto nomem;
	for (i = 0; i < svm_ncpus; i++) {
		svm_cpus[i].hsave = kvmp_os_alloc_pages(1, &svm_cpus[i].hsave_pa);
		svm_cpus[i].host_vmcb =
			kvmp_os_alloc_pages(1, &svm_cpus[i].host_vmcb_pa);
		if (!svm_cpus[i].hsave || !svm_cpus[i].host_vmcb)
			goto nomem;
	}
	/* intercept every port and every MSR: the core decides */
	svm_iopm = kvmp_os_alloc_pages(SVM_IOPM_PAGES, &svm_iopm_pa);
	svm_msrpm = kvmp_os_alloc_pages(SVM_MSRPM_PAGES, &svm_msrpm_pa);
	if (!svm_iopm || !svm_msrpm)
		goto nomem;
	kvmp_os_memset(svm_iopm, 0xff, SVM_IOPM_PAGES * KVMP_PAGE_SIZE);
	kvmp_os_memset(svm_msrpm, 0xff, SVM_MSRPM_PAGES * KVMP_PAGE_SIZE);
	kvmp_info("AMD SVM: %u ASIDs, next-RIP save %s, decode assists %s\n",
		  svm_max_asid, svm_has_nrips ? "yes" : "no",
		  svm_has_decode_assists ? "yes" : "no");
	return 0;

no_svm:
	kvmp_err("this CPU has no usable AMD SVM\n");
	return -KVMP_ENODEV;
nomem:
	svm_hardware_unsetup();
	return -KVMP_ENOMEM;
}

static int svm_cpu_enable(void *unused)
{
	struct svm_cpu *c = &svm_cpus[kvmp_os_cpu()];
	u64 efer = kvmp_rdmsr(MSR_EFER);

	if (c->enabled)		/* a CPU that came back online, say */
		return 0;
	if (efer & EFER_SVME)
		return -KVMP_EBUSY;	/* another hypervisor has this CPU */
	kvmp_wrmsr(MSR_EFER, efer | EFER_SVME);
	kvmp_wrmsr(MSR_VM_HSAVE_PA, c->hsave_pa);
	c->enabled = true;
	/* the host set it (its CPU number) when the CPU came up */
	c->host_tsc_aux = svm_host_rdpid ? kvmp_rdmsr(MSR_TSC_AUX) : 0;
	c->asid_generation++;
	c->next_asid = 1;
	c->flush_all = true;	/* whoever used these ASIDs before us */
	return 0;
}

static int svm_cpu_disable(void *unused)
{
	struct svm_cpu *c = &svm_cpus[kvmp_os_cpu()];

	if (!c->enabled)
		return 0;
	kvmp_wrmsr(MSR_VM_HSAVE_PA, 0);
	kvmp_wrmsr(MSR_EFER, kvmp_rdmsr(MSR_EFER) & ~EFER_SVME);
	c->enabled = false;
	return 0;
}

/* --- nested page tables ----------------------------------------------------- */
static int svm_vm_init(struct kvmp_vm *vm)
{
	struct svm_vm *s = kvmp_os_zalloc(sizeof(*s));

	if (!s)
		return -KVMP_ENOMEM;
	if (kvmp_tdp_init(&s->npt, NPT_PRESENT_RW_USER, NPT_PRESENT_RW_USER)) {
		kvmp_os_free(s);
		return -KVMP_ENOMEM;
	}
	vm->arch = s;
	return 0;
}

static void svm_vm_destroy(struct kvmp_vm *vm)
{
	struct svm_vm *s = vm->arch;

	kvmp_tdp_destroy(&s->npt);
	kvmp_os_free(s);
}

static void svm_unmap_range(struct kvmp_vm *vm, u64 gpa, u64 size)
{
	kvmp_tdp_unmap_range(&((struct svm_vm *)vm->arch)->npt, gpa, size);
}

/* --- VCPUs ---------------------------------------------------------------- */
static void seg_to_vmcb(struct vmcb_seg *v, const struct kvmp_segment *s)
{
	v->selector = s->selector;
	v->base = s->base;
	v->limit = s->limit;
	v->attrib = s->unusable || !s->present ? 0 :
		(s->type & 0xf) | (s->s & 1) << 4 | (s->dpl & 3) << 5 |
		(s->present & 1) << 7 | (s->avl & 1) << 8 | (s->l & 1) << 9 |
		(s->db & 1) << 10 | (s->g & 1) << 11;
}

static void seg_from_vmcb(struct kvmp_segment *s, const struct vmcb_seg *v)
{
	kvmp_os_memset(s, 0, sizeof(*s));
	s->selector = v->selector;
	s->base = v->base;
	s->limit = v->limit;
	s->type = v->attrib & 0xf;
	s->s = (v->attrib >> 4) & 1;
	s->dpl = (v->attrib >> 5) & 3;
	s->present = (v->attrib >> 7) & 1;
	s->avl = (v->attrib >> 8) & 1;
	s->l = (v->attrib >> 9) & 1;
	s->db = (v->attrib >> 10) & 1;
	s->g = (v->attrib >> 11) & 1;
	s->unusable = !s->present;
}

static void svm_seg(struct vmcb_seg *v, u16 sel, u64 base, u32 limit, u16 attrib)
{
	v->selector = sel;
	v->base = base;
	v->limit = limit;
	v->attrib = attrib;
}

/* the state after RESET, as Linux's KVM sets it */
static void svm_reset(struct kvmp_vcpu *vcpu)
{
	struct svm_vcpu *svm = to_svm(vcpu);
	struct vmcb_save *save = &svm->vmcb->save;
	struct vmcb_control *ctl = &svm->vmcb->control;
	u16 data = 0x93, code = 0x9b;	/* present, S, read/write or exec/read */

	/*
	 * As kvm_amd: #DB and #AC, whose delivery can loop in microcode
	 * (CVE-2015-8104, CVE-2015-5307), go through us back to the guest;
	 * #MC goes to the host's handler; the host's caches, counters, TSC_AUX
	 * and the SVM instructions stay out of the guest's reach; CR0 and CR4
	 * writes are checked (a CR4 bit the host does not switch, like PKE).
	 */
	/* CR8 writes too: the core keeps the TPR (kvmp_guest_set_cr8) */
	ctl->intercepts[0] = ICPT0_CR0_WRITE | ICPT0_CR4_WRITE | ICPT0_CR8_WRITE;
	ctl->intercepts[2] = ICPT2_DB | ICPT2_AC | ICPT2_MC;
	ctl->intercepts[3] = ICPT3_INTR | ICPT3_NMI | ICPT3_RDPMC | ICPT3_CPUID |
			     ICPT3_INVD | ICPT3_HLT | ICPT3_INVLPGA | ICPT3_IOIO |
			     ICPT3_MSR | ICPT3_SHUTDOWN;
	ctl->intercepts[4] = ICPT4_VMRUN | ICPT4_VMMCALL | ICPT4_VMLOAD |
			     ICPT4_VMSAVE | ICPT4_STGI | ICPT4_CLGI | ICPT4_SKINIT |
			     ICPT4_RDTSCP | ICPT4_WBINVD | ICPT4_MONITOR |
			     ICPT4_MWAIT | ICPT4_MWAIT_COND | ICPT4_XSETBV |
			     ICPT4_RDPRU;
	ctl->iopm_base_pa = svm_iopm_pa;
	ctl->msrpm_base_pa = svm_msrpm_pa;
	ctl->int_ctl = V_INTR_MASKING;
	ctl->nested_ctl = 1;	/* nested paging */
	ctl->nested_cr3 = ((struct svm_vm *)vcpu->vm->arch)->npt.root_pa;

	svm_seg(&save->cs, 0xf000, 0xffff0000, 0xffff, code);
	svm_seg(&save->ds, 0, 0, 0xffff, data);
	svm_seg(&save->es, 0, 0, 0xffff, data);
	svm_seg(&save->ss, 0, 0, 0xffff, data);
	svm_seg(&save->fs, 0, 0, 0xffff, data);
	svm_seg(&save->gs, 0, 0, 0xffff, data);
	svm_seg(&save->gdtr, 0, 0, 0xffff, 0);
	svm_seg(&save->idtr, 0, 0, 0xffff, 0);
	svm_seg(&save->ldtr, 0, 0, 0xffff, 0x82);	/* present LDT */
	svm_seg(&save->tr, 0, 0, 0xffff, 0x8b);	/* present busy TSS */
	svm_set_cr0(svm, 0x60000010);	/* CD, NW, ET */
	save->dr6 = 0xffff0ff0;
	save->dr7 = 0x400;
	save->rflags = 2;
	save->rip = 0xfff0;
	save->g_pat = PAT_DEFAULT;
	save->efer = EFER_SVME;		/* VMRUN demands it; the guest never sees it */
	svm->enter.gprs[KVMP_RDX] = 0x600;	/* the reset signature */
}

static int svm_vcpu_create(struct kvmp_vcpu *vcpu)
{
	struct svm_vcpu *svm;
	u64 pa;

	svm = kvmp_os_alloc_pages(1, &pa);
	if (!svm)
		return -KVMP_ENOMEM;
	svm->vmcb = kvmp_os_alloc_pages(1, &svm->enter.vmcb_pa);
	if (!svm->vmcb) {
		kvmp_os_free_pages(svm, 1);
		return -KVMP_ENOMEM;
	}
	svm->asid_cpu = -1;
	vcpu->arch = svm;
	svm_reset(vcpu);
	return 0;
}

static void svm_vcpu_free(struct kvmp_vcpu *vcpu)
{
	struct svm_vcpu *svm = to_svm(vcpu);

	kvmp_os_free_pages(svm->vmcb, 1);
	kvmp_os_free_pages(svm, 1);
}

static void svm_get_regs(struct kvmp_vcpu *vcpu, struct kvmp_regs *r)
{
	struct svm_vcpu *svm = to_svm(vcpu);
	const u64 *g = svm->enter.gprs;
	struct vmcb_save *save = &svm->vmcb->save;

	r->rax = save->rax;
	r->rbx = g[KVMP_RBX];
	r->rcx = g[KVMP_RCX];
	r->rdx = g[KVMP_RDX];
	r->rsi = g[KVMP_RSI];
	r->rdi = g[KVMP_RDI];
	r->rsp = save->rsp;
	r->rbp = g[KVMP_RBP];
	r->r8 = g[KVMP_R8];
	r->r9 = g[KVMP_R9];
	r->r10 = g[KVMP_R10];
	r->r11 = g[KVMP_R11];
	r->r12 = g[KVMP_R12];
	r->r13 = g[KVMP_R13];
	r->r14 = g[KVMP_R14];
	r->r15 = g[KVMP_R15];
	r->rip = save->rip;
	r->rflags = save->rflags;
}

static void svm_set_regs(struct kvmp_vcpu *vcpu, const struct kvmp_regs *r)
{
	struct svm_vcpu *svm = to_svm(vcpu);
	u64 *g = svm->enter.gprs;
	struct vmcb_save *save = &svm->vmcb->save;

	save->rax = r->rax;
	g[KVMP_RBX] = r->rbx;
	g[KVMP_RCX] = r->rcx;
	g[KVMP_RDX] = r->rdx;
	g[KVMP_RSI] = r->rsi;
	g[KVMP_RDI] = r->rdi;
	save->rsp = r->rsp;
	g[KVMP_RBP] = r->rbp;
	g[KVMP_R8] = r->r8;
	g[KVMP_R9] = r->r9;
	g[KVMP_R10] = r->r10;
	g[KVMP_R11] = r->r11;
	g[KVMP_R12] = r->r12;
	g[KVMP_R13] = r->r13;
	g[KVMP_R14] = r->r14;
	g[KVMP_R15] = r->r15;
	if (save->rip != r->rip)	/* a new RIP leaves any interrupt shadow */
		svm->vmcb->control.int_state &= ~INT_STATE_SHADOW;
	save->rip = r->rip;
	save->rflags = r->rflags | 2;
}

static void svm_get_sregs(struct kvmp_vcpu *vcpu, struct kvmp_sregs *s)
{
	struct svm_vcpu *svm = to_svm(vcpu);
	struct vmcb_save *save = &svm->vmcb->save;

	kvmp_os_memset(s, 0, sizeof(*s));
	seg_from_vmcb(&s->cs, &save->cs);
	seg_from_vmcb(&s->ds, &save->ds);
	seg_from_vmcb(&s->es, &save->es);
	seg_from_vmcb(&s->fs, &save->fs);
	seg_from_vmcb(&s->gs, &save->gs);
	seg_from_vmcb(&s->ss, &save->ss);
	seg_from_vmcb(&s->tr, &save->tr);
	seg_from_vmcb(&s->ldt, &save->ldtr);
	s->gdt.base = save->gdtr.base;
	s->gdt.limit = save->gdtr.limit;
	s->idt.base = save->idtr.base;
	s->idt.limit = save->idtr.limit;
	s->cr0 = svm->cr0;
	s->cr2 = save->cr2;
	s->cr3 = save->cr3;
	s->cr4 = save->cr4;
	s->cr8 = vcpu->cr8;
	s->efer = save->efer & ~EFER_SVME;
	s->apic_base = vcpu->apic_base;
}

static int svm_set_sregs(struct kvmp_vcpu *vcpu, const struct kvmp_sregs *s)
{
	struct svm_vcpu *svm = to_svm(vcpu);
	struct vmcb_save *save = &svm->vmcb->save;

	/* the core checked the values (kvmp_check_sregs) */
	seg_to_vmcb(&save->cs, &s->cs);
	seg_to_vmcb(&save->ds, &s->ds);
	seg_to_vmcb(&save->es, &s->es);
	seg_to_vmcb(&save->fs, &s->fs);
	seg_to_vmcb(&save->gs, &s->gs);
	seg_to_vmcb(&save->ss, &s->ss);
	seg_to_vmcb(&save->tr, &s->tr);
	seg_to_vmcb(&save->ldtr, &s->ldt);
	save->gdtr.base = s->gdt.base;
	save->gdtr.limit = s->gdt.limit;
	save->idtr.base = s->idt.base;
	save->idtr.limit = s->idt.limit;
	save->cpl = (s->cr0 & KVMP_CR0_PE) ? s->ss.dpl : 0;
	svm_set_cr0(svm, s->cr0);
	save->cr2 = s->cr2;
	save->cr3 = s->cr3;
	save->cr4 = s->cr4;
	save->efer = s->efer | EFER_SVME;
	return 0;
}

static u64 *svm_msr_field(struct svm_vcpu *svm, u32 index, bool *address)
{
	struct vmcb_save *save = &svm->vmcb->save;

	*address = true;
	switch (index) {
	case MSR_SYSENTER_ESP: return &save->sysenter_esp;
	case MSR_SYSENTER_EIP: return &save->sysenter_eip;
	case MSR_LSTAR: return &save->lstar;
	case MSR_CSTAR: return &save->cstar;
	case MSR_FS_BASE: return &save->fs.base;
	case MSR_GS_BASE: return &save->gs.base;
	case MSR_KERNEL_GS_BASE: return &save->kernel_gs_base;
	}
	*address = false;
	switch (index) {
	case MSR_SYSENTER_CS: return &save->sysenter_cs;
	case MSR_PAT: return &save->g_pat;
	case MSR_STAR: return &save->star;
	case MSR_SFMASK: return &save->sfmask;
	}
	return NULL;
}

static int svm_get_msr(struct kvmp_vcpu *vcpu, u32 index, u64 *data)
{
	struct svm_vcpu *svm = to_svm(vcpu);
	bool address;
	u64 *field;

	switch (index) {
	case MSR_EFER:
		*data = svm->vmcb->save.efer & ~EFER_SVME;
		return 0;
	}
	field = svm_msr_field(svm, index, &address);
	if (!field)
		return -KVMP_ENOENT;
	*data = *field;
	return 0;
}

static int svm_set_msr(struct kvmp_vcpu *vcpu, u32 index, u64 data)
{
	struct svm_vcpu *svm = to_svm(vcpu);
	bool address;
	u64 *field;

	switch (index) {
	case MSR_EFER:
		if (data & ~KVMP_EFER_GUEST_BITS)
			return -KVMP_EINVAL;
		/* LMA is the CPU's to set (when paging turns on), as in Linux */
		data = (data & ~KVMP_EFER_LMA) |
		       (svm->vmcb->save.efer & KVMP_EFER_LMA);
		svm->vmcb->save.efer = data | EFER_SVME;
		return 0;
	}
	field = svm_msr_field(svm, index, &address);
	if (!field || (address && !kvmp_is_canonical(data)))
		return -KVMP_EINVAL;
	*field = data;
	return 0;
}

static u64 svm_get_tsc_offset(struct kvmp_vcpu *vcpu)
{
	return to_svm(vcpu)->vmcb->control.tsc_offset;
}

static void svm_set_tsc_offset(struct kvmp_vcpu *vcpu, u64 offset)
{
	to_svm(vcpu)->vmcb->control.tsc_offset = offset;
}

static bool svm_if_flag(struct kvmp_vcpu *vcpu)
{
	return to_svm(vcpu)->vmcb->save.rflags & KVMP_EFLAGS_IF;
}

static bool svm_interrupt_allowed(struct kvmp_vcpu *vcpu)
{
	struct vmcb *vmcb = to_svm(vcpu)->vmcb;

	return (vmcb->save.rflags & KVMP_EFLAGS_IF) &&
	       !(vmcb->control.int_state & INT_STATE_SHADOW) &&
	       !(vmcb->control.event_inj & EVENT_VALID);
}

/* --- events ------------------------------------------------------------------ */
static void svm_inject(struct vmcb *vmcb, u32 event, u32 error)
{
	vmcb->control.event_inj = (u64)error << 32 | event | EVENT_VALID;
}

/* real mode pushes no error code (as Linux: has_error_code only in protected mode) */
static void svm_inject_exception(struct kvmp_vcpu *vcpu, u8 vector,
				 bool has_error, u32 error)
{
	if (!(to_svm(vcpu)->vmcb->save.cr0 & KVMP_CR0_PE))
		has_error = false;
	svm_inject(to_svm(vcpu)->vmcb, EVENT_TYPE_EXCEPTION | vector |
		   (has_error ? EVENT_ERROR_VALID : 0), error);
}

/* V_IRQ, as a window (VINTR exits when it could be taken) or carrying an interrupt */
static void svm_virq(struct vmcb *vmcb, bool on, bool window, u8 vector)
{
	u32 bits = V_IRQ | (0xf << V_INTR_PRIO_SHIFT) | V_IGN_TPR;

	vmcb->control.int_ctl &= ~bits;
	vmcb->control.intercepts[3] &= ~ICPT3_VINTR;
	if (on) {
		vmcb->control.int_ctl |= bits;
		vmcb->control.int_vector = vector;
		if (window)
			vmcb->control.intercepts[3] |= ICPT3_VINTR;
	}
}

static void svm_irq_window(struct vmcb *vmcb, bool on)
{
	svm_virq(vmcb, on, true, 0);
}

static bool svm_nmi_allowed(struct kvmp_vcpu *vcpu)
{
	return !(to_svm(vcpu)->vmcb->control.event_inj & EVENT_VALID) &&
	       !to_svm(vcpu)->nmi_masked;
}

static void svm_inject_nmi(struct kvmp_vcpu *vcpu)
{
	svm_inject(to_svm(vcpu)->vmcb, EVENT_TYPE_NMI | 2, 0);
}

/*
 * External interrupts ride on V_IRQ, which the CPU takes as soon as IF and
 * the interrupt shadow allow, not on EVENTINJ: QEMU's emulated VMRUN leaves
 * an EVENTINJ interrupt's vector behind as a pending exception and may
 * deliver it a second time, with IF clear (docs/driver.md, "Open bug").
 */
static void svm_inject_irq(struct kvmp_vcpu *vcpu, u8 vector)
{
	svm_virq(to_svm(vcpu)->vmcb, true, false, vector);
}

/*
 * A window: VINTR exits when an interrupt could be taken.  When V_IRQ carries
 * one this entry, the handler's IRET exits instead, so the window can be
 * armed then.  There is no NMI window without vNMI: a waiting NMI goes in at
 * the next exit.
 */
static void svm_set_windows(struct kvmp_vcpu *vcpu, bool irq, bool nmi)
{
	struct vmcb *vmcb = to_svm(vcpu)->vmcb;

	vmcb->control.intercepts[3] &= ~ICPT3_IRET;
	if (to_svm(vcpu)->nmi_masked && !to_svm(vcpu)->nmi_iret)
		vmcb->control.intercepts[3] |= ICPT3_IRET;
	if ((vmcb->control.int_ctl & V_IRQ) &&
	    !(vmcb->control.intercepts[3] & ICPT3_VINTR)) {
		if (irq)
			vmcb->control.intercepts[3] |= ICPT3_IRET;
		return;
	}
	svm_irq_window(vmcb, irq && !svm_interrupt_allowed(vcpu));
}

/*
 * After #VMEXIT: V_IRQ still set without the VINTR intercept is an interrupt
 * the guest has not taken (the CPU clears V_IRQ when it takes one); queue it
 * again.  The next entry sets V_IRQ afresh either way.
 */
static void svm_complete_virq(struct kvmp_vcpu *vcpu)
{
	struct vmcb *vmcb = to_svm(vcpu)->vmcb;

	if ((vmcb->control.int_ctl & V_IRQ) &&
	    !(vmcb->control.intercepts[3] & ICPT3_VINTR))
		vcpu->pending_irq = vmcb->control.int_vector & 0xff;
	svm_virq(vmcb, false, false, 0);
}

/* --- KVM_GET/SET_VCPU_EVENTS and DEBUGREGS --------------------------------------- */
static void svm_get_event(struct kvmp_vcpu *vcpu, struct kvmp_event *e)
{
	u64 inj = to_svm(vcpu)->vmcb->control.event_inj;

	kvmp_os_memset(e, 0, sizeof(*e));
	if (!(inj & EVENT_VALID))
		return;
	switch (inj & EVENT_TYPE_MASK) {
	case EVENT_TYPE_EXCEPTION:
		e->type = KVMP_EVENT_EXCEPTION;
		e->vector = inj & 0xff;
		e->has_error = inj & EVENT_ERROR_VALID;
		e->error = inj >> 32;
		break;
	case EVENT_TYPE_NMI:
		e->type = KVMP_EVENT_NMI;
		e->vector = 2;
		break;
	}
}

/* as given: an error code in real mode is dropped only at the entry (as Linux) */
static void svm_set_event(struct kvmp_vcpu *vcpu, const struct kvmp_event *e)
{
	to_svm(vcpu)->vmcb->control.event_inj = 0;
	if (e->type == KVMP_EVENT_EXCEPTION)
		svm_inject(to_svm(vcpu)->vmcb, EVENT_TYPE_EXCEPTION | e->vector |
			   (e->has_error ? EVENT_ERROR_VALID : 0), e->error);
	else if (e->type == KVMP_EVENT_NMI)
		svm_inject_nmi(vcpu);
}

/* as kvm_amd: one shadow bit, reported as both kinds */
static u8 svm_get_interrupt_shadow(struct kvmp_vcpu *vcpu)
{
	return to_svm(vcpu)->vmcb->control.int_state & INT_STATE_SHADOW ?
	       KVMP_X86_SHADOW_INT_MOV_SS | KVMP_X86_SHADOW_INT_STI : 0;
}

static void svm_set_interrupt_shadow(struct kvmp_vcpu *vcpu, u8 shadow)
{
	struct vmcb_control *ctl = &to_svm(vcpu)->vmcb->control;

	ctl->int_state &= ~INT_STATE_SHADOW;
	if (shadow)
		ctl->int_state |= INT_STATE_SHADOW;
}

static bool svm_get_nmi_mask(struct kvmp_vcpu *vcpu)
{
	return to_svm(vcpu)->nmi_masked;
}

static void svm_set_nmi_mask(struct kvmp_vcpu *vcpu, bool masked)
{
	to_svm(vcpu)->nmi_masked = masked;
	to_svm(vcpu)->nmi_iret = false;
}

static void svm_get_debugregs(struct kvmp_vcpu *vcpu, struct kvmp_debugregs *d)
{
	struct svm_vcpu *svm = to_svm(vcpu);

	kvmp_os_memcpy(d->db, svm->db, sizeof(d->db));
	d->dr6 = svm->vmcb->save.dr6;
	d->dr7 = svm->vmcb->save.dr7;
}

static void svm_set_debugregs(struct kvmp_vcpu *vcpu,
			      const struct kvmp_debugregs *d)
{
	struct svm_vcpu *svm = to_svm(vcpu);

	kvmp_os_memcpy(svm->db, d->db, sizeof(svm->db));
	svm->vmcb->save.dr6 = d->dr6;
	svm->vmcb->save.dr7 = d->dr7;
}

/*
 * DR0-3 are not in the VMCB: the guest's go into the CPU for the entry and
 * the host's come back after it, each only where the two differ (mostly
 * both are 0).  The host's breakpoints are off meanwhile (so none fires on
 * a guest's address), and its DR7, which #VMEXIT resets, comes back too.
 * Interrupts are off.
 */
#define DR7_RESET	0x400ULL
#define DR7_ENABLES	0xffULL

static u64 svm_read_dr(int n)
{
	u64 v = 0;

	switch (n) {
	case 0:
		asm volatile("mov %%dr0, %0" : "=r"(v));
		break;
	case 1:
		asm volatile("mov %%dr1, %0" : "=r"(v));
		break;
	case 2:
		asm volatile("mov %%dr2, %0" : "=r"(v));
		break;
	case 3:
		asm volatile("mov %%dr3, %0" : "=r"(v));
		break;
	case 7:
		asm volatile("mov %%dr7, %0" : "=r"(v));
		break;
	}
	return v;
}

static void svm_write_dr(int n, u64 v)
{
	switch (n) {
	case 0:
		asm volatile("mov %0, %%dr0" : : "r"(v));
		break;
	case 1:
		asm volatile("mov %0, %%dr1" : : "r"(v));
		break;
	case 2:
		asm volatile("mov %0, %%dr2" : : "r"(v));
		break;
	case 3:
		asm volatile("mov %0, %%dr3" : : "r"(v));
		break;
	case 7:
		asm volatile("mov %0, %%dr7" : : "r"(v));
		break;
	}
}

static void svm_load_guest_dr(struct svm_vcpu *svm, u64 *host)
{
	int i;

	host[4] = svm_read_dr(7);
	if (host[4] & DR7_ENABLES)
		svm_write_dr(7, DR7_RESET);
	for (i = 0; i < 4; i++) {
		host[i] = svm_read_dr(i);
		if (host[i] != svm->db[i])
			svm_write_dr(i, svm->db[i]);
	}
}

static void svm_load_host_dr(struct svm_vcpu *svm, const u64 *host)
{
	int i;

	for (i = 0; i < 4; i++) {
		svm->db[i] = svm_read_dr(i);
		if (host[i] != svm->db[i])
			svm_write_dr(i, host[i]);
	}
	if (host[4] != DR7_RESET)
		svm_write_dr(7, host[4]);
}

/* --- entering the guest -------------------------------------------------------- */
/* svm_enter.S */
int kvmp_svm_enter(struct svm_enter *e);	/* 1: a fault, SVM is off */

/* a fresh ASID when the VCPU changed CPU or the CPU ran out; preemption off */
static void svm_prepare_asid(struct kvmp_vcpu *vcpu, struct svm_cpu *c, int cpu)
{
	struct svm_vcpu *svm = to_svm(vcpu);
	struct vmcb_control *ctl = &svm->vmcb->control;
	u32 gen = __atomic_load_n(&vcpu->vm->tlb_generation, __ATOMIC_ACQUIRE);

	ctl->tlb_ctl = 0;
	if (svm->asid_cpu != cpu || svm->asid_generation != c->asid_generation) {
		if (c->next_asid > svm_max_asid) {
			c->asid_generation++;
			c->next_asid = 1;
			c->flush_all = true;
		}
		svm->asid = c->next_asid++;
		svm->asid_generation = c->asid_generation;
		svm->asid_cpu = cpu;
	}
	ctl->asid = svm->asid;
	if (c->flush_all) {
		ctl->tlb_ctl = TLB_FLUSH_ALL;
		c->flush_all = false;
	} else if (gen != vcpu->tlb_generation || svm->need_flush) {
		ctl->tlb_ctl = svm_has_flush_by_asid ? TLB_FLUSH_ASID :
						       TLB_FLUSH_ALL;
	}
	vcpu->tlb_generation = gen;
	svm->need_flush = false;
	ctl->clean = 0;		/* we never tell the CPU anything is cached */
}

typedef int (*svm_exit_handler)(struct kvmp_vcpu *vcpu);
static const svm_exit_handler svm_exit_handlers[SVM_EXIT_NPF + 1];

static int svm_handle_exit(struct kvmp_vcpu *vcpu)
{
	struct svm_vcpu *svm = to_svm(vcpu);
	struct vmcb_control *ctl = &svm->vmcb->control;
	struct kvmp_run *run = vcpu->run;
	u64 code = ctl->exit_code;
	u32 info = (u32)ctl->exit_int_info;

	svm_complete_virq(vcpu);
	/* the NMI handler's IRET has run: NMIs may come again (as kvm_amd) */
	if (svm->nmi_iret && svm->vmcb->save.rip != svm->nmi_iret_rip) {
		svm->nmi_masked = false;
		svm->nmi_iret = false;
	}
	if (code == SVM_EXIT_INVALID || code == (u32)SVM_EXIT_INVALID) {
		run->exit_reason = KVMP_EXIT_FAIL_ENTRY;
		run->fail_entry.hardware_entry_failure_reason = code;
		run->fail_entry.cpu = svm->asid_cpu;
		return KVMP_TO_USER;
	}
	/* an event whose delivery the exit interrupted is delivered again */
	if (info & EVENT_VALID) {
		u32 type = info & EVENT_TYPE_MASK, vector = info & 0xff;

		/* an "exception" above 31 is an interrupt (QEMU reports V_IRQ so) */
		if (type == EVENT_TYPE_INTR ||
		    (type == EVENT_TYPE_EXCEPTION && vector > 31))
			vcpu->pending_irq = vector;
		else if (type != EVENT_TYPE_SOFT)
			ctl->event_inj = ctl->exit_int_info;
	}
	if (code <= SVM_EXIT_NPF && svm_exit_handlers[code])
		return svm_exit_handlers[code](vcpu);
	kvmp_internal_error(vcpu, KVMP_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON,
			    code, ctl->exit_info_1);
	return KVMP_TO_USER;
}

/* CLGI and STGI fault if SVM went off under us: true then */
static bool svm_clgi(void)
{
	asm goto(KVMP_VIRT_INSN("clgi") : : : "memory" : fault);
	return false;
fault:
	kvmp_virt_fault("CLGI");
	return true;
}

static bool svm_stgi(void)
{
	asm goto(KVMP_VIRT_INSN("stgi") : : : "memory" : fault);
	return false;
fault:
	kvmp_virt_fault("STGI");
	return true;
}

static int svm_run(struct kvmp_vcpu *vcpu)
{
	struct svm_vcpu *svm = to_svm(vcpu);
	struct vmcb_control *ctl = &svm->vmcb->control;
	struct svm_cpu *c;
	u64 host_dr[5];		/* DR0-3, DR7 */
	bool faulted;
	int cpu;

	/* an NMI going in blocks the next until its handler's IRET */
	if ((ctl->event_inj & (EVENT_VALID | EVENT_TYPE_MASK)) ==
	    (EVENT_VALID | EVENT_TYPE_NMI)) {
		svm->nmi_masked = true;
		svm->nmi_iret = false;
		ctl->intercepts[3] |= ICPT3_IRET;
	}
	/* real mode pushes no error code (one the VMM restored is dropped here) */
	if (!(svm->vmcb->save.cr0 & KVMP_CR0_PE))
		ctl->event_inj &= ~(u64)EVENT_ERROR_VALID;
	kvmp_os_fpu_begin();	/* preemption off until fpu_end */
	kvmp_os_irq_disable();
	cpu = kvmp_os_cpu();
	c = &svm_cpus[cpu];
	/*
	 * A CPU going offline (or a reboot) turned SVM off here, and the
	 * scheduler has not moved this thread yet: VMRUN would fault.  Let the
	 * run loop reschedule and come back.  Interrupts are off: it cannot
	 * change before VMRUN.
	 */
	if (!c->enabled) {
		kvmp_os_irq_enable();
		kvmp_os_fpu_end();
		return KVMP_REENTER;
	}
	kvmp_vcpu_guest_enter(vcpu, cpu);	/* before the TLB generation */
	kvmp_spec_vm_switch(&c->last_vm, vcpu->vm);
	svm_prepare_asid(vcpu, c, cpu);
	svm->enter.host_vmcb_pa = c->host_vmcb_pa;
	/* the guest reads CR8 from V_TPR; its writes exit (svm_exit_write_cr) */
	svm->vmcb->control.int_ctl = (svm->vmcb->control.int_ctl & ~V_TPR_MASK) |
				     vcpu->cr8;
	kvmp_fpu_load_guest(vcpu);
	svm_load_guest_dr(svm, host_dr);

	/*
	 * The guest's TSC_AUX is 0 (CPUID offers neither RDTSCP nor RDPID);
	 * the host's is back before any host code can read it.
	 */
	if (c->host_tsc_aux)
		kvmp_wrmsr(MSR_TSC_AUX, 0);
	faulted = svm_clgi();
	if (!faulted) {
		kvmp_os_irq_enable();	/* GIF=0 holds them until VMRUN sets it */
		faulted = kvmp_svm_enter(&svm->enter);
		if (faulted)
			kvmp_virt_fault("VMSAVE, VMLOAD or VMRUN");
		kvmp_os_irq_disable();
		faulted |= svm_stgi();
	}
	if (c->host_tsc_aux)
		kvmp_wrmsr(MSR_TSC_AUX, c->host_tsc_aux);
	kvmp_vcpu_guest_exit(vcpu);
	svm_load_host_dr(svm, host_dr);

	kvmp_fpu_save_guest(vcpu);
	kvmp_os_irq_enable();
	kvmp_os_fpu_end();

	if (faulted)	/* SVM went off under us: no exit to handle */
		return kvmp_virt_fault_action();
	return svm_handle_exit(vcpu);
}

/* --- exit handlers --------------------------------------------------------------- */
/* move past an instruction of len bytes (next-RIP when the CPU saves it) */
static void svm_skip(struct kvmp_vcpu *vcpu, unsigned int len)
{
	struct vmcb *vmcb = to_svm(vcpu)->vmcb;

	vmcb->save.rip = svm_has_nrips && vmcb->control.next_rip ?
		vmcb->control.next_rip : vmcb->save.rip + len;
	vmcb->control.int_state &= ~INT_STATE_SHADOW;
}

static int svm_exit_reenter(struct kvmp_vcpu *vcpu)
{
	return KVMP_REENTER;	/* a host interrupt or NMI: the host took it */
}

/* the handler of an interrupt V_IRQ carried returns: now a window can be armed */
static int svm_exit_iret(struct kvmp_vcpu *vcpu)
{
	struct svm_vcpu *svm = to_svm(vcpu);

	svm->vmcb->control.intercepts[3] &= ~ICPT3_IRET;
	/* an NMI handler's IRET: NMIs stay blocked until it has run */
	if (svm->nmi_masked && !svm->nmi_iret) {
		svm->nmi_iret = true;
		svm->nmi_iret_rip = svm->vmcb->save.rip;
	}
	return KVMP_REENTER;
}

static int svm_exit_vintr(struct kvmp_vcpu *vcpu)
{
	svm_irq_window(to_svm(vcpu)->vmcb, false);
	return KVMP_REENTER;	/* the run loop injects or reports the window */
}

static int svm_exit_cpuid(struct kvmp_vcpu *vcpu)
{
	struct svm_vcpu *svm = to_svm(vcpu);
	u64 *g = svm->enter.gprs;
	u32 a = svm->vmcb->save.rax, b, c = g[KVMP_RCX], d;

	kvmp_emulate_cpuid(vcpu, svm->vmcb->save.cr4, &a, &b, &c, &d);
	svm->vmcb->save.rax = a;
	g[KVMP_RBX] = b;
	g[KVMP_RCX] = c;
	g[KVMP_RDX] = d;
	svm_skip(vcpu, 2);
	return KVMP_REENTER;
}

static int svm_exit_hlt(struct kvmp_vcpu *vcpu)
{
	svm_skip(vcpu, 1);
	vcpu->run->exit_reason = KVMP_EXIT_HLT;	/* no in-kernel irqchip */
	return KVMP_TO_USER;
}

static int svm_exit_invd(struct kvmp_vcpu *vcpu)
{
	svm_skip(vcpu, 2);	/* nothing to invalidate for a guest */
	return KVMP_REENTER;
}

static int svm_exit_ud(struct kvmp_vcpu *vcpu)
{
	svm_inject_exception(vcpu, 6, false, 0);
	return KVMP_REENTER;
}

/*
 * #DB and #AC: the guest's own exceptions, intercepted only so their delivery
 * cannot hang the CPU; hand them back.  The CPU has updated the VMCB's DR6
 * for #DB; #AC's error code is always 0.
 */
static int svm_exit_excp_db(struct kvmp_vcpu *vcpu)
{
	svm_inject_exception(vcpu, 1, false, 0);
	return KVMP_REENTER;
}

static int svm_exit_excp_ac(struct kvmp_vcpu *vcpu)
{
	svm_inject_exception(vcpu, 17, true, 0);
	return KVMP_REENTER;
}

/* a machine check during the guest is the host's (as kvm_amd does) */
static int svm_exit_excp_mc(struct kvmp_vcpu *vcpu)
{
	kvmp_host_machine_check();
	return KVMP_REENTER;
}

/* RDPMC (0f 33): the core answers (no PMU for guests, never the host's) */
static int svm_exit_rdpmc(struct kvmp_vcpu *vcpu)
{
	struct svm_vcpu *svm = to_svm(vcpu);
	struct vmcb_save *save = &svm->vmcb->save;
	u64 value;

	if (kvmp_emulate_rdpmc(vcpu, svm->enter.gprs[KVMP_RCX], save->cpl,
			       save->cr0, save->cr4, &value)) {
		svm_inject_exception(vcpu, 13, true, 0);
		return KVMP_REENTER;
	}
	save->rax = (u32)value;
	svm->enter.gprs[KVMP_RDX] = value >> 32;
	svm_skip(vcpu, 2);
	return KVMP_REENTER;
}

/* WBINVD (0f 09): the guest has no non-coherent DMA; do not flush the host */
static int svm_exit_wbinvd(struct kvmp_vcpu *vcpu)
{
	svm_skip(vcpu, 2);
	return KVMP_REENTER;
}

/*
 * RDTSCP (0f 01 f9): the guest's TSC and its TSC_AUX, which is 0 (no guest
 * can set it: CPUID offers neither RDTSCP nor RDPID), not the host's CPU
 * number the CPU would give.
 */
static int svm_exit_rdtscp(struct kvmp_vcpu *vcpu)
{
	struct svm_vcpu *svm = to_svm(vcpu);
	u64 tsc = kvmp_rdtsc() + svm->vmcb->control.tsc_offset;

	svm->vmcb->save.rax = (u32)tsc;
	svm->enter.gprs[KVMP_RDX] = tsc >> 32;
	svm->enter.gprs[KVMP_RCX] = 0;
	svm_skip(vcpu, 3);
	return KVMP_REENTER;
}

static u64 *svm_gpr(struct svm_vcpu *svm, unsigned int n)
{
	if (n == KVMP_RAX)
		return &svm->vmcb->save.rax;
	if (n == KVMP_RSP)
		return &svm->vmcb->save.rsp;
	return &svm->enter.gprs[n & 15];
}

/*
 * MOV to CR0, CR4 or CR8, CLTS, LMSW: checked by the core as Linux checks them
 * (kvmp_guest_set_cr0/cr4), so no guest sets a CR4 bit the host does not
 * switch (PKE) or a state VMRUN refuses.  The instruction is decoded from
 * CS:RIP (no decode assists under QEMU; this path works with them too).
 */
static int svm_exit_write_cr(struct kvmp_vcpu *vcpu)
{
	struct svm_vcpu *svm = to_svm(vcpu);
	struct vmcb_save *save = &svm->vmcb->save;
	u64 cr = svm->vmcb->control.exit_code - SVM_EXIT_WRITE_CR0, v, efer;
	u8 code[KVMP_INSN_MAX_LEN];
	struct kvmp_cr_insn insn;
	struct kvmp_regs regs;
	struct kvmp_sregs s;
	int mode, r;

	svm_get_regs(vcpu, &regs);
	svm_get_sregs(vcpu, &s);
	mode = kvmp_cpu_mode(&s);
	if (kvmp_decode_cr(code, kvmp_fetch_insn(vcpu, &regs, &s, code), mode,
			   &insn) < 0 || insn.kind == KVMP_CR_READ ||
	    (insn.kind == KVMP_CR_MOV ? insn.cr != cr : cr != 0)) {
		kvmp_internal_error(vcpu, KVMP_INTERNAL_ERROR_EMULATION,
				    svm->vmcb->control.exit_code, regs.rip);
		return KVMP_TO_USER;
	}
	v = *svm_gpr(svm, insn.reg);
	if (insn.kind == KVMP_CR_CLTS)
		v = svm->cr0 & ~KVMP_CR0_TS;
	else if (insn.kind == KVMP_CR_LMSW)	/* can set PE, not clear it */
		v = (svm->cr0 & ~0xeULL) | (v & 0xf);
	else if (mode != 64)
		v &= 0xffffffffULL;
	if (cr == 8) {
		r = kvmp_guest_set_cr8(vcpu, v);
		if (r < 0)
			goto gp;
		svm_skip(vcpu, insn.length);
		return r;
	}
	if (cr == 0) {
		efer = save->efer;
		if (kvmp_guest_set_cr0(vcpu, svm->cr0, &v, save->cr4, &efer,
				       s.cs.l))
			goto gp;
		if ((svm->cr0 ^ v) & KVMP_CR0_PG)
			svm->need_flush = true;
		svm_set_cr0(svm, v);
		save->efer = efer;
	} else {
		if (kvmp_guest_set_cr4(vcpu, v, save->efer))
			goto gp;
		if ((save->cr4 ^ v) & (KVMP_CR4_PGE | KVMP_CR4_PAE | KVMP_CR4_PSE))
			svm->need_flush = true;
		save->cr4 = v;
	}
	svm_skip(vcpu, insn.length);
	return KVMP_REENTER;
gp:
	svm_inject_exception(vcpu, 13, true, 0);
	return KVMP_REENTER;
}

/* MOV from CR0 while the VMCB's lacks the guest's CD or NW (svm_set_cr0) */
static int svm_exit_read_cr0(struct kvmp_vcpu *vcpu)
{
	struct svm_vcpu *svm = to_svm(vcpu);
	u8 code[KVMP_INSN_MAX_LEN];
	struct kvmp_cr_insn insn;
	struct kvmp_regs regs;
	struct kvmp_sregs s;
	int mode;

	svm_get_regs(vcpu, &regs);
	svm_get_sregs(vcpu, &s);
	mode = kvmp_cpu_mode(&s);
	if (kvmp_decode_cr(code, kvmp_fetch_insn(vcpu, &regs, &s, code), mode,
			   &insn) < 0 || insn.kind != KVMP_CR_READ || insn.cr) {
		kvmp_internal_error(vcpu, KVMP_INTERNAL_ERROR_EMULATION,
				    svm->vmcb->control.exit_code, regs.rip);
		return KVMP_TO_USER;
	}
	/* outside 64-bit mode the operand is 32 bits, zero-extended */
	*svm_gpr(svm, insn.reg) = mode == 64 ? svm->cr0 : (u32)svm->cr0;
	svm_skip(vcpu, insn.length);
	return KVMP_REENTER;
}

/* XSETBV (0f 01 d1): the core checks the value; XCR0 is loaded at entry */
static int svm_exit_xsetbv(struct kvmp_vcpu *vcpu)
{
	struct svm_vcpu *svm = to_svm(vcpu);
	u64 *g = svm->enter.gprs;
	u64 value = (g[KVMP_RDX] << 32) | (u32)svm->vmcb->save.rax;

	if (!(svm->vmcb->save.cr4 & KVMP_CR4_OSXSAVE))
		return svm_exit_ud(vcpu);
	if (svm->vmcb->save.cpl ||
	    kvmp_set_xcr(vcpu, (u32)g[KVMP_RCX], value)) {
		svm_inject_exception(vcpu, 13, true, 0);
		return KVMP_REENTER;
	}
	svm_skip(vcpu, 3);
	return KVMP_REENTER;
}

static int svm_exit_ioio(struct kvmp_vcpu *vcpu)
{
	struct vmcb_control *ctl = &to_svm(vcpu)->vmcb->control;
	u64 info = ctl->exit_info_1;
	struct kvmp_pio pio = { 0 };

	pio.in = info & 1;
	pio.string = info & (1 << 2);
	pio.rep = info & (1 << 3);
	pio.size = (info & (1 << 4)) ? 1 : (info & (1 << 5)) ? 2 : 4;
	pio.addr_size = (info & (1 << 7)) ? 2 : (info & (1 << 8)) ? 4 : 8;
	/* OUTS names its segment only with decode assists; DS otherwise */
	pio.seg = svm_has_decode_assists ? (info >> 10) & 7 : KVMP_SEG_DS;
	pio.port = info >> 16;
	pio.next_rip = ctl->exit_info_2;
	to_svm(vcpu)->vmcb->control.int_state &= ~INT_STATE_SHADOW;
	return kvmp_exit_pio(vcpu, &pio);
}

static int svm_exit_msr(struct kvmp_vcpu *vcpu)
{
	struct svm_vcpu *svm = to_svm(vcpu);
	u64 *g = svm->enter.gprs;
	u32 index = g[KVMP_RCX];
	u64 data;

	if (svm->vmcb->control.exit_info_1) {	/* WRMSR */
		data = (g[KVMP_RDX] << 32) | (u32)svm->vmcb->save.rax;
		if (kvmp_set_msr(vcpu, index, data)) {
			svm_inject_exception(vcpu, 13, true, 0);
			return KVMP_REENTER;
		}
	} else {
		if (kvmp_get_msr(vcpu, index, &data)) {
			svm_inject_exception(vcpu, 13, true, 0);
			return KVMP_REENTER;
		}
		svm->vmcb->save.rax = (u32)data;
		g[KVMP_RDX] = data >> 32;
	}
	svm_skip(vcpu, 2);
	return KVMP_REENTER;
}

static int svm_exit_shutdown(struct kvmp_vcpu *vcpu)
{
	vcpu->run->exit_reason = KVMP_EXIT_SHUTDOWN;
	return KVMP_TO_USER;
}

#define NPF_WRITE	(1ULL << 1)
#define NPF_FETCH	(1ULL << 4)
#define NPF_IN_WALK	(1ULL << 33)

static int svm_exit_npf(struct kvmp_vcpu *vcpu)
{
	struct vmcb_control *ctl = &to_svm(vcpu)->vmcb->control;
	struct svm_vm *s = vcpu->vm->arch;
	u64 gpa = ctl->exit_info_2, err = ctl->exit_info_1;
	int r;

	r = kvmp_tdp_fault(vcpu->vm, &s->npt, gpa, err & NPF_WRITE);
	if (!r || r == -KVMP_EAGAIN)	/* EAGAIN: the VMM's mappings moved */
		return KVMP_REENTER;
	if (r != -KVMP_ENOENT)
		return r;	/* pinning failed: KVM_RUN reports it */
	/* no slot: MMIO, which only a data access outside a page walk can be */
	if (err & (NPF_FETCH | NPF_IN_WALK)) {
		kvmp_internal_error(vcpu, KVMP_INTERNAL_ERROR_EMULATION, gpa, err);
		return KVMP_TO_USER;
	}
	return kvmp_exit_mmio(vcpu, gpa,
			      svm_has_decode_assists ? ctl->insn_bytes : NULL,
			      svm_has_decode_assists ? ctl->insn_len : 0);
}

static const svm_exit_handler svm_exit_handlers[SVM_EXIT_NPF + 1] = {
	[SVM_EXIT_READ_CR0]	= svm_exit_read_cr0,
	[SVM_EXIT_WRITE_CR0]	= svm_exit_write_cr,
	[SVM_EXIT_WRITE_CR4]	= svm_exit_write_cr,
	[SVM_EXIT_WRITE_CR8]	= svm_exit_write_cr,
	[SVM_EXIT_EXCP_DB]	= svm_exit_excp_db,
	[SVM_EXIT_EXCP_AC]	= svm_exit_excp_ac,
	[SVM_EXIT_EXCP_MC]	= svm_exit_excp_mc,
	[SVM_EXIT_INTR]		= svm_exit_reenter,
	[SVM_EXIT_NMI]		= svm_exit_reenter,
	[SVM_EXIT_SMI]		= svm_exit_reenter,
	[SVM_EXIT_IRET]		= svm_exit_iret,
	[SVM_EXIT_VINTR]	= svm_exit_vintr,
	[SVM_EXIT_RDPMC]	= svm_exit_rdpmc,
	[SVM_EXIT_CPUID]	= svm_exit_cpuid,
	[SVM_EXIT_INVD]		= svm_exit_invd,
	[SVM_EXIT_HLT]		= svm_exit_hlt,
	[SVM_EXIT_INVLPGA]	= svm_exit_ud,
	[SVM_EXIT_IOIO]		= svm_exit_ioio,
	[SVM_EXIT_MSR]		= svm_exit_msr,
	[SVM_EXIT_SHUTDOWN]	= svm_exit_shutdown,
	[SVM_EXIT_VMRUN]	= svm_exit_ud,
	[SVM_EXIT_VMMCALL]	= svm_exit_ud,
	[SVM_EXIT_VMLOAD]	= svm_exit_ud,
	[SVM_EXIT_VMSAVE]	= svm_exit_ud,
	[SVM_EXIT_STGI]		= svm_exit_ud,
	[SVM_EXIT_CLGI]		= svm_exit_ud,
	[SVM_EXIT_SKINIT]	= svm_exit_ud,
	[SVM_EXIT_RDTSCP]	= svm_exit_rdtscp,
	[SVM_EXIT_WBINVD]	= svm_exit_wbinvd,
	[SVM_EXIT_MONITOR]	= svm_exit_ud,
	[SVM_EXIT_MWAIT]	= svm_exit_ud,
	[SVM_EXIT_MWAIT_COND]	= svm_exit_ud,
	[SVM_EXIT_XSETBV]	= svm_exit_xsetbv,
	[SVM_EXIT_RDPRU]	= svm_exit_ud,
	[SVM_EXIT_NPF]		= svm_exit_npf,
};

const struct kvmp_backend kvmp_svm_backend = {
	.name = "svm",
	.hardware_setup = svm_hardware_setup,
	.hardware_unsetup = svm_hardware_unsetup,
	.cpu_enable = svm_cpu_enable,
	.cpu_disable = svm_cpu_disable,
	.vm_init = svm_vm_init,
	.vm_destroy = svm_vm_destroy,
	.unmap_range = svm_unmap_range,
	.vcpu_create = svm_vcpu_create,
	.vcpu_free = svm_vcpu_free,
	.get_regs = svm_get_regs,
	.set_regs = svm_set_regs,
	.get_sregs = svm_get_sregs,
	.set_sregs = svm_set_sregs,
	.get_msr = svm_get_msr,
	.set_msr = svm_set_msr,
	.get_tsc_offset = svm_get_tsc_offset,
	.set_tsc_offset = svm_set_tsc_offset,
	.interrupt_allowed = svm_interrupt_allowed,
	.nmi_allowed = svm_nmi_allowed,
	.inject_irq = svm_inject_irq,
	.inject_nmi = svm_inject_nmi,
	.set_windows = svm_set_windows,
	.if_flag = svm_if_flag,
	.get_event = svm_get_event,
	.set_event = svm_set_event,
	.get_interrupt_shadow = svm_get_interrupt_shadow,
	.set_interrupt_shadow = svm_set_interrupt_shadow,
	.get_nmi_mask = svm_get_nmi_mask,
	.set_nmi_mask = svm_set_nmi_mask,
	.get_debugregs = svm_get_debugregs,
	.set_debugregs = svm_set_debugregs,
	.run = svm_run,
};
