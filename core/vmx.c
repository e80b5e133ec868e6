// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * The Intel VMX backend: VMXON per CPU, a VMCS per VCPU, EPT built lazily
 * from the slots (core/kvmp_tdp.c), VPIDs when the CPU has them, and exit
 * handlers in a table indexed by exit reason.  Unrestricted guest is
 * required: guests start in real mode.
 *
 * The VMCS is current on a CPU only inside vmx_run: it is loaded, written
 * from the VCPU's copy of the guest state, entered, read back and cleared
 * again before preemption comes back, so a VCPU can move between CPUs with
 * no IPI and every other backend op works on plain memory (as SVM's VMCB).
 */
#include "kvmp_backend.h"
#include "vmx.h"


#define PAT_DEFAULT		0x0007040600070406ULL

#define CR0_MP			(1ULL << 1)
#define CR0_NE			(1ULL << 5)
#define CR4_PCIDE		(1ULL << 17)
#define DR6_FIXED		0xffff0ff0ULL
#define DR6_VOLATILE		0x0001e00fULL
#define DR7_FIXED		0x400ULL
#define DR7_VOLATILE		0xffff2bffULL
#define EFLAGS_TF		(1ULL << 8)
#define EFLAGS_FIXED		2ULL

/* --- global and per-CPU state -------------------------------------------- */
struct vmx_cpu {
	void *vmxon;
	u64 vmxon_pa;
	bool on;		/* VMXON done by us: only then VMXOFF */
	u64 last_vm;		/* the id of the VM that ran here last */
};

static struct vmx_cpu *vmx_cpus;
static int vmx_ncpus;
static u32 vmx_revision;
static u32 vmx_pin, vmx_proc, vmx_proc2, vmx_exit_ctls, vmx_entry_ctls;
static u64 vmx_cr0_fixed0, vmx_cr0_fixed1, vmx_cr4_fixed0, vmx_cr4_fixed1;
static u64 vmx_ept_cap;
static bool vmx_has_vnmi, vmx_has_vpid, vmx_has_inout_info;
static void *vmx_io_bitmap, *vmx_msr_bitmap;
static u64 vmx_io_bitmap_pa, vmx_msr_bitmap_pa;
/* VPIDs in use; 0 is the host's */
static u64 vmx_vpids[65536 / 64];

/* MSRs the guest reads and writes without an exit (their state is in the
 * VMCS, or switched around every entry)
 */
static const u32 vmx_passthrough_msrs[] = {
	MSR_FS_BASE, MSR_GS_BASE, MSR_KERNEL_GS_BASE,
	MSR_SYSENTER_CS, MSR_SYSENTER_ESP, MSR_SYSENTER_EIP,
};

/* MSRs VM entry and exit do not switch: the guest's are loaded around it */
enum { SW_STAR, SW_LSTAR, SW_CSTAR, SW_SFMASK, SW_KERNEL_GS_BASE, SW_NR };
static const u32 vmx_switched_msrs[SW_NR] = {
	MSR_STAR, MSR_LSTAR, MSR_CSTAR, MSR_SFMASK, MSR_KERNEL_GS_BASE,
};

struct vmx_vm {
	struct kvmp_tdp ept;
	u64 eptp;
};

struct vmx_seg {
	u64 base;
	u32 limit;
	u32 ar;
	u16 sel;
};

/* the guest state the VMCS holds between entries, kept here (see the top) */
struct vmx_guest {
	struct vmx_seg seg[VMX_NR_SEGS];
	u64 gdtr_base, idtr_base;
	u32 gdtr_limit, idtr_limit;
	u64 cr0, cr2, cr3, cr4;		/* as the guest sees them */
	u64 rsp, rip, rflags;
	u64 efer, pat;
	u64 sysenter_cs, sysenter_esp, sysenter_eip;
	u64 pdpte[4];
	u32 interruptibility;
	u64 tsc_offset;
	u64 msr[SW_NR];
	u64 dr[4], dr6, dr7;		/* the guest's: never loaded (MOV DR exits) */
	u64 feature_control;
};

/* what the last VM exit reported */
struct vmx_exit {
	u32 reason;
	u64 qual;
	u32 intr_info, intr_error;
	u32 idt_info, idt_error;
	u32 insn_len, insn_info;
	u64 gpa;
	u32 insn_error;
};

struct vmx_vcpu {
	u64 gprs[KVMP_NR_GPRS];		/* RSP unused: it is guest.rsp */
	struct vmx_guest guest;
	struct vmx_exit exit;
	void *vmcs;
	u64 vmcs_pa;
	u32 proc;			/* primary controls: the window exits vary */
	u32 entry_intr, entry_error, entry_len;	/* the event to inject */
	u16 vpid;
	bool vmcs_cleared;		/* VMCLEARed once: usable */
	bool need_flush;		/* the guest's TLB changed under it */
	int last_cpu;
	u32 tlb_generation;
	u32 run_count;			/* the KVM_RUN host_debugctl is from */
	u64 host_debugctl;
};

_Static_assert(__builtin_offsetof(struct vmx_vcpu, gprs) == 0,
	       "vmx_enter.S takes gprs");

static struct vmx_vcpu *to_vmx(struct kvmp_vcpu *vcpu)
{
	return vcpu->arch;
}

/* --- VMX instructions -------------------------------------------------------- */
/*
 * Each faults if VMX went off on this CPU under us (kvmp_core.h,
 * KVMP_VIRT_INSN): the exception table sends it to a label that says so in
 * the log; VMREAD then reads 0, VMXON, VMCLEAR and VMPTRLD give -EFAULT.
 */
static void vmcs_write(u64 field, u64 value)
{
	asm goto(KVMP_VIRT_INSN("vmwrite %1, %0")
		 : : "r"(field), "rm"(value) : "cc" : fault);
	return;
fault:
	kvmp_virt_fault("VMWRITE");
}

static u64 vmcs_read(u64 field)
{
	u8 faulted = 0;
	u64 value;

	/* no asm goto with outputs (older compilers): the fixup is inline */
	asm volatile("1: vmread %[f], %[v]\n\t"
		     "jmp 3f\n\t"
		     "2: movb $1, %[faulted]\n\t"
		     "xor %k[v], %k[v]\n\t"
		     "3:\n\t"
		     KVMP_EXTABLE(1b, 2b)
		     : [v] "=r"(value), [faulted] "+qm"(faulted)
		     : [f] "r"(field) : "cc");
	if (faulted)
		kvmp_virt_fault("VMREAD");
	return value;
}

/* VMXON, VMCLEAR, VMPTRLD: 0, -EIO on VMfail (CF or ZF), -EFAULT on a fault */
static int vmx_insn_pa(int op, u64 pa)
{
	static const char *const names[] = { "VMXON", "VMCLEAR", "VMPTRLD" };

	switch (op) {
	case 0:
		asm goto(KVMP_VIRT_INSN("vmxon %0") "\n\tjbe %l[fail]"
			 : : "m"(pa) : "cc", "memory" : fail, fault);
		break;
	case 1:
		asm goto(KVMP_VIRT_INSN("vmclear %0") "\n\tjbe %l[fail]"
			 : : "m"(pa) : "cc", "memory" : fail, fault);
		break;
	default:
		op = 2;
		asm goto(KVMP_VIRT_INSN("vmptrld %0") "\n\tjbe %l[fail]"
			 : : "m"(pa) : "cc", "memory" : fail, fault);
		break;
	}
	return 0;
fail:
	return -KVMP_EIO;
fault:
	kvmp_virt_fault(names[op]);
	return -KVMP_EFAULT;
}

#define vmxon(pa)	vmx_insn_pa(0, pa)
#define vmclear(pa)	vmx_insn_pa(1, pa)
#define vmptrld(pa)	vmx_insn_pa(2, pa)

static void ept_invalidate(u64 type, u64 eptp)
{
	struct { u64 eptp, zero; } desc = { eptp, 0 };

	asm goto(KVMP_VIRT_INSN("invept %0, %1")
		 : : "m"(desc), "r"(type) : "cc", "memory" : fault);
	return;
fault:
	kvmp_virt_fault("INVEPT");
}

static void vpid_invalidate(u64 type, u16 vpid)
{
	struct { u64 vpid, addr; } desc = { vpid, 0 };

	asm goto(KVMP_VIRT_INSN("invvpid %0, %1")
		 : : "m"(desc), "r"(type) : "cc", "memory" : fault);
	return;
fault:
	kvmp_virt_fault("INVVPID");
}

/* drop what this CPU cached of the VCPU's translations */
static void vmx_flush(struct kvmp_vcpu *vcpu)
{
	struct vmx_vcpu *vmx = to_vmx(vcpu);
	struct vmx_vm *v = vcpu->vm->arch;

	if (vmx_ept_cap & EPT_CAP_INVEPT_SINGLE)
		ept_invalidate(1, v->eptp);
	else
		ept_invalidate(2, 0);
	if (!vmx->vpid)
		return;		/* VM entry and exit flush VPID 0 */
	if (vmx_ept_cap & VPID_CAP_INVVPID_SINGLE)
		vpid_invalidate(1, vmx->vpid);
	else
		vpid_invalidate(2, 0);
}

/* --- setup ------------------------------------------------------------------- */
/* the controls we want, adjusted to what the CPU allows; need must survive */
static int vmx_adjust(u32 msr, u32 want, u32 need, u32 *ctl)
{
	u64 cap = kvmp_rdmsr(msr);
	u32 v = (want | (u32)cap) & (u32)(cap >> 32);

	if ((v & need) != need)
		return -KVMP_ENODEV;
	*ctl = v;
	return 0;
}

static void vmx_hardware_unsetup(void)
{
	int i;

	for (i = 0; vmx_cpus && i < vmx_ncpus; i++)
		if (vmx_cpus[i].vmxon)
			kvmp_os_free_pages(vmx_cpus[i].vmxon, 1);
	kvmp_os_free(vmx_cpus);
	vmx_cpus = NULL;
	if (vmx_io_bitmap)
		kvmp_os_free_pages(vmx_io_bitmap, 2);
	if (vmx_msr_bitmap)
		kvmp_os_free_pages(vmx_msr_bitmap, 1);
	vmx_io_bitmap = vmx_msr_bitmap = NULL;
}

/* let the guest access an MSR without an exit (read and write) */
static void vmx_msr_passthrough(u8 *bitmap, u32 msr)
{
	u32 base = msr >= 0xc0000000 ? 1024 : 0, bit = msr & 0x1fff;

	bitmap[base + bit / 8] &= ~(1 << (bit % 8));		/* read */
	bitmap[2048 + base + bit / 8] &= ~(1 << (bit % 8));	/* write */
}

static int vmx_hardware_setup(void)
{
	u32 a, b, c, d, pin_msr, proc_msr, exit_msr, entry_msr;
	u64 basic, fc;
	unsigned int i;
	int n;

	kvmp_cpuid(1, 0, &a, &b, &c, &d);
	if (!(c & (1U << 5)))
		return -KVMP_ENODEV;	/* not an Intel CPU with VMX */
	fc = kvmp_rdmsr(MSR_FEATURE_CONTROL);
	if ((fc & FEATURE_CONTROL_LOCKED) && !(fc & FEATURE_CONTROL_VMXON)) {
		kvmp_err("Intel VMX is disabled by the firmware\n");
		return -KVMP_ENODEV;
	}
	basic = kvmp_rdmsr(MSR_VMX_BASIC);
	vmx_revision = basic & 0x7fffffff;
	vmx_has_inout_info = basic & VMX_BASIC_INOUT_INFO;
	if (((basic >> 32) & 0x1fff) > KVMP_PAGE_SIZE ||
	    ((basic >> 50) & 0xf) != 6) {
		kvmp_err("Intel VMX: unsupported VMCS region (VMX_BASIC %llx)\n",
			 (unsigned long long)basic);
		return -KVMP_ENODEV;
	}
	if (basic & VMX_BASIC_TRUE_CTLS) {
		pin_msr = MSR_VMX_TRUE_PINBASED;
		proc_msr = MSR_VMX_TRUE_PROCBASED;
		exit_msr = MSR_VMX_TRUE_EXIT;
		entry_msr = MSR_VMX_TRUE_ENTRY;
	} else {
		pin_msr = MSR_VMX_PINBASED;
		proc_msr = MSR_VMX_PROCBASED;
		exit_msr = MSR_VMX_EXIT;
		entry_msr = MSR_VMX_ENTRY;
	}
	if (vmx_adjust(pin_msr, PIN_EXT_INTR | PIN_NMI | PIN_VIRTUAL_NMIS,
		       PIN_EXT_INTR | PIN_NMI, &vmx_pin) ||
	    vmx_adjust(proc_msr, PROC_TSC_OFFSET | PROC_HLT | PROC_MWAIT |
		       PROC_RDPMC | PROC_CR8_LOAD | PROC_CR8_STORE |
		       PROC_MOV_DR | PROC_IO_BITMAPS | PROC_MSR_BITMAPS |
		       PROC_MONITOR | PROC_SECONDARY,
		       PROC_TSC_OFFSET | PROC_HLT | PROC_CR8_LOAD |
		       PROC_CR8_STORE | PROC_MOV_DR | PROC_IO_BITMAPS |
		       PROC_MSR_BITMAPS | PROC_SECONDARY, &vmx_proc) ||
	    vmx_adjust(exit_msr, EXIT_HOST_64 | EXIT_SAVE_PAT | EXIT_LOAD_PAT |
		       EXIT_SAVE_EFER | EXIT_LOAD_EFER, EXIT_HOST_64 |
		       EXIT_SAVE_PAT | EXIT_LOAD_PAT | EXIT_SAVE_EFER |
		       EXIT_LOAD_EFER, &vmx_exit_ctls) ||
	    vmx_adjust(entry_msr, ENTRY_LOAD_PAT | ENTRY_LOAD_EFER,
		       ENTRY_LOAD_PAT | ENTRY_LOAD_EFER, &vmx_entry_ctls)) {
		kvmp_err("Intel VMX lacks a control kvmport needs\n");
		return -KVMP_ENODEV;
	}
	if ((vmx_proc & (PROC_CR3_LOAD | PROC_CR3_STORE | PROC_INVLPG |
			 PROC_UNCOND_IO | PROC_TPR_SHADOW)) ||
	    !(kvmp_rdmsr(entry_msr) & ((u64)ENTRY_IA32E << 32))) {
		kvmp_err("Intel VMX forces a control kvmport cannot have\n");
		return -KVMP_ENODEV;
	}
	if (vmx_adjust(MSR_VMX_PROCBASED2, PROC2_EPT | PROC2_UNRESTRICTED |
		       PROC2_VPID | PROC2_WBINVD, PROC2_EPT, &vmx_proc2)) {
		kvmp_err("Intel VMX without EPT is not supported\n");
		return -KVMP_ENODEV;
	}
	if (!(vmx_proc2 & PROC2_UNRESTRICTED)) {
		kvmp_err("Intel VMX without unrestricted guest is not supported (guests start in real mode)\n");
		return -KVMP_ENODEV;
	}
	vmx_ept_cap = kvmp_rdmsr(MSR_VMX_EPT_VPID_CAP);
	if (!(vmx_ept_cap & EPT_CAP_4LEVEL) || !(vmx_ept_cap & EPT_CAP_WB) ||
	    !(vmx_ept_cap & EPT_CAP_INVEPT) ||
	    !(vmx_ept_cap & (EPT_CAP_INVEPT_SINGLE | EPT_CAP_INVEPT_ALL))) {
		kvmp_err("Intel VMX: EPT without 4 levels, write-back or INVEPT\n");
		return -KVMP_ENODEV;
	}
	vmx_has_vpid = (vmx_proc2 & PROC2_VPID) &&
		       (vmx_ept_cap & VPID_CAP_INVVPID) &&
		       (vmx_ept_cap & (VPID_CAP_INVVPID_SINGLE |
				       VPID_CAP_INVVPID_ALL));
	if (!vmx_has_vpid)
		vmx_proc2 &= ~PROC2_VPID;
	vmx_has_vnmi = vmx_pin & PIN_VIRTUAL_NMIS;
	vmx_cr0_fixed0 = kvmp_rdmsr(MSR_VMX_CR0_FIXED0);
	vmx_cr0_fixed1 = kvmp_rdmsr(MSR_VMX_CR0_FIXED1);
	vmx_cr4_fixed0 = kvmp_rdmsr(MSR_VMX_CR4_FIXED0);
	vmx_cr4_fixed1 = kvmp_rdmsr(MSR_VMX_CR4_FIXED1);
	vmx_vpids[0] = 1;

	n = kvmp_os_cpu_count();
	vmx_cpus = kvmp_os_zalloc(n * sizeof(*vmx_cpus));
	if (!vmx_cpus)
		goto nomem;
	vmx_ncpus = n;
	for (i = 0; i < (unsigned int)n; i++) {
		vmx_cpus[i].vmxon = kvmp_os_alloc_pages(1, &vmx_cpus[i].vmxon_pa);
		if (!vmx_cpus[i].vmxon)
			goto nomem;
		*(u32 *)vmx_cpus[i].vmxon = vmx_revision;
	}
	/* every port exits; every MSR but the few passed through */
	vmx_io_bitmap = kvmp_os_alloc_pages(2, &vmx_io_bitmap_pa);
	vmx_msr_bitmap = kvmp_os_alloc_pages(1, &vmx_msr_bitmap_pa);
	if (!vmx_io_bitmap || !vmx_msr_bitmap)
		goto nomem;
	kvmp_os_memset(vmx_io_bitmap, 0xff, 2 * KVMP_PAGE_SIZE);
	kvmp_os_memset(vmx_msr_bitmap, 0xff, KVMP_PAGE_SIZE);
	for (i = 0; i < ARRAY_SIZE(vmx_passthrough_msrs); i++)
		vmx_msr_passthrough(vmx_msr_bitmap, vmx_passthrough_msrs[i]);
	kvmp_info("Intel VMX: EPT, unrestricted guest, VPID %s, virtual NMIs %s\n",
		  vmx_has_vpid ? "yes" : "no", vmx_has_vnmi ? "yes" : "no");
	return 0;

nomem:
	vmx_hardware_unsetup();
	return -KVMP_ENOMEM;
}

static u64 read_cr4(void)
{
	u64 v;

	asm volatile("mov %%cr4, %0" : "=r"(v));
	return v;
}

static int vmx_cpu_enable(void *unused)
{
	struct vmx_cpu *c = &vmx_cpus[kvmp_os_cpu()];
	u64 fc = kvmp_rdmsr(MSR_FEATURE_CONTROL);

	if (c->on)		/* a CPU that came back online, say */
		return 0;
	if (read_cr4() & CR4_VMXE)
		return -KVMP_EBUSY;	/* another hypervisor has this CPU */
	if (!(fc & FEATURE_CONTROL_LOCKED))	/* as Linux: enable, lock */
		kvmp_wrmsr(MSR_FEATURE_CONTROL, fc | FEATURE_CONTROL_LOCKED |
			   FEATURE_CONTROL_VMXON);
	else if (!(fc & FEATURE_CONTROL_VMXON))
		return -KVMP_ENODEV;
	kvmp_os_cr4_update(CR4_VMXE, 0);
	if (vmxon(c->vmxon_pa)) {
		kvmp_os_cr4_update(0, CR4_VMXE);
		return -KVMP_EBUSY;
	}
	c->on = true;
	/* whoever used VMX here before may have left translations behind */
	if (vmx_ept_cap & EPT_CAP_INVEPT_ALL)
		ept_invalidate(2, 0);
	if (vmx_has_vpid && (vmx_ept_cap & VPID_CAP_INVVPID_ALL))
		vpid_invalidate(2, 0);
	return 0;
}

static int vmx_cpu_disable(void *unused)
{
	struct vmx_cpu *c = &vmx_cpus[kvmp_os_cpu()];

	if (!c->on)
		return 0;
	/* a fault: VMX is off already (an emergency VMXOFF); CR4.VMXE goes too */
	asm goto(KVMP_VIRT_INSN("vmxoff") : : : "cc", "memory" : fault);
	goto off;
fault:
	kvmp_virt_fault("VMXOFF");
off:
	kvmp_os_cr4_update(0, CR4_VMXE);
	c->on = false;
	return 0;
}

/* --- EPT ---------------------------------------------------------------------- */
static int vmx_vm_init(struct kvmp_vm *vm)
{
	struct vmx_vm *v = kvmp_os_zalloc(sizeof(*v));

	if (!v)
		return -KVMP_ENOMEM;
	if (kvmp_tdp_init(&v->ept, EPT_RWX,
			  EPT_RWX | EPT_MT_WB | EPT_IGNORE_PAT)) {
		kvmp_os_free(v);
		return -KVMP_ENOMEM;
	}
	v->eptp = v->ept.root_pa | EPTP_WB_4LEVEL;
	vm->arch = v;
	return 0;
}

static void vmx_vm_destroy(struct kvmp_vm *vm)
{
	struct vmx_vm *v = vm->arch;

	kvmp_tdp_destroy(&v->ept);
	kvmp_os_free(v);
}

static void vmx_unmap_range(struct kvmp_vm *vm, u64 gpa, u64 size)
{
	kvmp_tdp_unmap_range(&((struct vmx_vm *)vm->arch)->ept, gpa, size);
}

/* --- VCPUs ---------------------------------------------------------------- */
static void vmx_set_seg(struct vmx_seg *v, u16 sel, u64 base, u32 limit, u32 ar)
{
	v->sel = sel;
	v->base = base;
	v->limit = limit;
	v->ar = ar;
}

/* the state after RESET, as Linux's KVM sets it */
static void vmx_reset(struct kvmp_vcpu *vcpu)
{
	struct vmx_vcpu *vmx = to_vmx(vcpu);
	struct vmx_guest *g = &vmx->guest;
	u32 data = 0x93, code = 0x9b;	/* present, S, read/write or exec/read */
	int i;

	vmx_set_seg(&g->seg[KVMP_SEG_CS], 0xf000, 0xffff0000, 0xffff, code);
	for (i = 0; i < 6; i++)
		if (i != KVMP_SEG_CS)
			vmx_set_seg(&g->seg[i], 0, 0, 0xffff, data);
	vmx_set_seg(&g->seg[VMX_SEG_LDTR], 0, 0, 0xffff, 0x82);
	vmx_set_seg(&g->seg[VMX_SEG_TR], 0, 0, 0xffff, 0x8b);
	g->gdtr_limit = g->idtr_limit = 0xffff;
	g->cr0 = 0x60000010;		/* CD, NW, ET */
	g->dr6 = DR6_FIXED;
	g->dr7 = DR7_FIXED;
	g->rflags = EFLAGS_FIXED;
	g->rip = 0xfff0;
	g->pat = PAT_DEFAULT;
	vmx->gprs[KVMP_RDX] = 0x600;	/* the reset signature */
	vmx->proc = vmx_proc;
}

static u16 vmx_alloc_vpid(void)
{
	unsigned int i;
	u64 w, bit;

	for (i = 0; vmx_has_vpid && i < ARRAY_SIZE(vmx_vpids); i++) {
		w = __atomic_load_n(&vmx_vpids[i], __ATOMIC_RELAXED);
		while (~w) {
			bit = ~w & (w + 1);	/* lowest clear bit */
			if (__atomic_compare_exchange_n(&vmx_vpids[i], &w, w | bit,
							false, __ATOMIC_ACQ_REL,
							__ATOMIC_RELAXED))
				return i * 64 + __builtin_ctzll(bit);
		}
	}
	return 0;	/* none left: VPID 0, flushed at every entry and exit */
}

static void vmx_free_vpid(u16 vpid)
{
	if (vpid)
		__atomic_and_fetch(&vmx_vpids[vpid / 64], ~(1ULL << (vpid % 64)),
				   __ATOMIC_ACQ_REL);
}

static int vmx_vcpu_create(struct kvmp_vcpu *vcpu)
{
	struct vmx_vcpu *vmx = kvmp_os_zalloc(sizeof(*vmx));

	if (!vmx)
		return -KVMP_ENOMEM;
	vmx->vmcs = kvmp_os_alloc_pages(1, &vmx->vmcs_pa);
	if (!vmx->vmcs) {
		kvmp_os_free(vmx);
		return -KVMP_ENOMEM;
	}
	*(u32 *)vmx->vmcs = vmx_revision;
	vmx->vpid = vmx_alloc_vpid();
	vmx->last_cpu = -1;
	vcpu->arch = vmx;
	vmx_reset(vcpu);
	return 0;
}

/* the VMCS is never current outside vmx_run: nothing to VMCLEAR here */
static void vmx_vcpu_free(struct kvmp_vcpu *vcpu)
{
	struct vmx_vcpu *vmx = to_vmx(vcpu);

	vmx_free_vpid(vmx->vpid);
	kvmp_os_free_pages(vmx->vmcs, 1);
	kvmp_os_free(vmx);
}

static void vmx_get_regs(struct kvmp_vcpu *vcpu, struct kvmp_regs *r)
{
	struct vmx_vcpu *vmx = to_vmx(vcpu);
	const u64 *g = vmx->gprs;

	r->rax = g[KVMP_RAX];
	r->rbx = g[KVMP_RBX];
	r->rcx = g[KVMP_RCX];
	r->rdx = g[KVMP_RDX];
	r->rsi = g[KVMP_RSI];
	r->rdi = g[KVMP_RDI];
	r->rsp = vmx->guest.rsp;
	r->rbp = g[KVMP_RBP];
	r->r8 = g[KVMP_R8];
	r->r9 = g[KVMP_R9];
	r->r10 = g[KVMP_R10];
	r->r11 = g[KVMP_R11];
	r->r12 = g[KVMP_R12];
	r->r13 = g[KVMP_R13];
	r->r14 = g[KVMP_R14];
	r->r15 = g[KVMP_R15];
	r->rip = vmx->guest.rip;
	r->rflags = vmx->guest.rflags;
}

static void vmx_set_regs(struct kvmp_vcpu *vcpu, const struct kvmp_regs *r)
{
	struct vmx_vcpu *vmx = to_vmx(vcpu);
	u64 *g = vmx->gprs;

	g[KVMP_RAX] = r->rax;
	g[KVMP_RBX] = r->rbx;
	g[KVMP_RCX] = r->rcx;
	g[KVMP_RDX] = r->rdx;
	g[KVMP_RSI] = r->rsi;
	g[KVMP_RDI] = r->rdi;
	vmx->guest.rsp = r->rsp;
	g[KVMP_RBP] = r->rbp;
	g[KVMP_R8] = r->r8;
	g[KVMP_R9] = r->r9;
	g[KVMP_R10] = r->r10;
	g[KVMP_R11] = r->r11;
	g[KVMP_R12] = r->r12;
	g[KVMP_R13] = r->r13;
	g[KVMP_R14] = r->r14;
	g[KVMP_R15] = r->r15;
	if (vmx->guest.rip != r->rip)	/* a new RIP leaves any interrupt shadow */
		vmx->guest.interruptibility &= ~(INTERRUPTIBILITY_STI |
						 INTERRUPTIBILITY_MOV_SS);
	vmx->guest.rip = r->rip;
	vmx->guest.rflags = r->rflags | EFLAGS_FIXED;
}

static void seg_to_vmx(struct vmx_seg *v, const struct kvmp_segment *s,
		       bool accessed)
{
	v->sel = s->selector;
	v->base = s->base;
	v->limit = s->limit;
	if (s->unusable || !s->present) {
		v->ar = AR_UNUSABLE;
		return;
	}
	/* unrestricted guest: VM entry wants the accessed bit, as Linux sets it */
	v->ar = ((s->type | (accessed ? 1 : 0)) & 0xf) | (s->s & 1) << 4 |
		(s->dpl & 3) << 5 | (s->present & 1) << 7 | (s->avl & 1) << 12 |
		(s->l & 1) << 13 | (s->db & 1) << 14 | (s->g & 1) << 15;
}

static void seg_from_vmx(struct kvmp_segment *s, const struct vmx_seg *v)
{
	kvmp_os_memset(s, 0, sizeof(*s));
	s->selector = v->sel;
	s->base = v->base;
	s->limit = v->limit;
	s->unusable = (v->ar & AR_UNUSABLE) != 0;
	s->type = v->ar & 0xf;
	s->s = (v->ar >> 4) & 1;
	s->dpl = (v->ar >> 5) & 3;
	s->present = !s->unusable;	/* a usable segment is present */
	s->avl = (v->ar >> 12) & 1;
	s->l = (v->ar >> 13) & 1;
	s->db = (v->ar >> 14) & 1;
	s->g = (v->ar >> 15) & 1;
}

static void vmx_get_sregs(struct kvmp_vcpu *vcpu, struct kvmp_sregs *s)
{
	struct vmx_guest *g = &to_vmx(vcpu)->guest;

	kvmp_os_memset(s, 0, sizeof(*s));
	seg_from_vmx(&s->es, &g->seg[KVMP_SEG_ES]);
	seg_from_vmx(&s->cs, &g->seg[KVMP_SEG_CS]);
	seg_from_vmx(&s->ss, &g->seg[KVMP_SEG_SS]);
	seg_from_vmx(&s->ds, &g->seg[KVMP_SEG_DS]);
	seg_from_vmx(&s->fs, &g->seg[KVMP_SEG_FS]);
	seg_from_vmx(&s->gs, &g->seg[KVMP_SEG_GS]);
	seg_from_vmx(&s->ldt, &g->seg[VMX_SEG_LDTR]);
	seg_from_vmx(&s->tr, &g->seg[VMX_SEG_TR]);
	s->gdt.base = g->gdtr_base;
	s->gdt.limit = g->gdtr_limit;
	s->idt.base = g->idtr_base;
	s->idt.limit = g->idtr_limit;
	s->cr0 = g->cr0;
	s->cr2 = g->cr2;
	s->cr3 = g->cr3;
	s->cr4 = g->cr4;
	s->cr8 = vcpu->cr8;
	s->efer = g->efer;
	s->apic_base = vcpu->apic_base;
}

static bool vmx_pae_paging(const struct vmx_guest *g)
{
	return (g->cr0 & KVMP_CR0_PG) && (g->cr4 & KVMP_CR4_PAE) &&
	       !(g->efer & KVMP_EFER_LMA);
}

/*
 * With EPT, VM entry takes PAE paging's four PDPTEs from the VMCS, not from
 * memory: read them when paging is set up from outside the guest's own
 * MOV CR3 (which loads them itself).  A reserved bit fails (#GP in the guest).
 */
static int vmx_load_pdptes(struct kvmp_vcpu *vcpu)
{
	struct vmx_guest *g = &to_vmx(vcpu)->guest;
	u64 pdpte[4];
	int i;

	if (!vmx_pae_paging(g))
		return 0;
	if (kvmp_read_guest(vcpu->vm, g->cr3 & 0xffffffe0ULL, pdpte, sizeof(pdpte)))
		return -KVMP_EINVAL;
	for (i = 0; i < 4; i++)
		if ((pdpte[i] & 1) && (pdpte[i] & 0xfff00000000001e6ULL))
			return -KVMP_EINVAL;
	kvmp_os_memcpy(g->pdpte, pdpte, sizeof(pdpte));
	return 0;
}

static int vmx_set_sregs(struct kvmp_vcpu *vcpu, const struct kvmp_sregs *s)
{
	struct vmx_guest *g = &to_vmx(vcpu)->guest;

	/* the core checked the values (kvmp_check_sregs) */
	seg_to_vmx(&g->seg[KVMP_SEG_ES], &s->es, true);
	seg_to_vmx(&g->seg[KVMP_SEG_CS], &s->cs, true);
	seg_to_vmx(&g->seg[KVMP_SEG_SS], &s->ss, true);
	seg_to_vmx(&g->seg[KVMP_SEG_DS], &s->ds, true);
	seg_to_vmx(&g->seg[KVMP_SEG_FS], &s->fs, true);
	seg_to_vmx(&g->seg[KVMP_SEG_GS], &s->gs, true);
	seg_to_vmx(&g->seg[VMX_SEG_LDTR], &s->ldt, false);
	seg_to_vmx(&g->seg[VMX_SEG_TR], &s->tr, true);
	g->gdtr_base = s->gdt.base;
	g->gdtr_limit = s->gdt.limit;
	g->idtr_base = s->idt.base;
	g->idtr_limit = s->idt.limit;
	g->cr0 = s->cr0;
	g->cr2 = s->cr2;
	g->cr3 = s->cr3;
	g->cr4 = s->cr4;
	g->efer = s->efer;
	/* as Linux: PDPTEs that cannot be loaded leave the ioctl a success */
	if (vmx_load_pdptes(vcpu))
		kvmp_os_memset(g->pdpte, 0, sizeof(g->pdpte));
	return 0;
}

/* each byte a memory type the PAT knows (0, 1, 4-7) */
static bool pat_valid(u64 pat)
{
	int i;

	for (i = 0; i < 8; i++) {
		u8 t = pat >> (8 * i);

		if (t > 7 || t == 2 || t == 3)
			return false;
	}
	return true;
}

static u64 *vmx_msr_field(struct vmx_vcpu *vmx, u32 index, bool *address)
{
	struct vmx_guest *g = &vmx->guest;
	unsigned int i;

	*address = true;
	switch (index) {
	case MSR_SYSENTER_ESP: return &g->sysenter_esp;
	case MSR_SYSENTER_EIP: return &g->sysenter_eip;
	case MSR_FS_BASE: return &g->seg[KVMP_SEG_FS].base;
	case MSR_GS_BASE: return &g->seg[KVMP_SEG_GS].base;
	case MSR_LSTAR: return &g->msr[SW_LSTAR];
	case MSR_CSTAR: return &g->msr[SW_CSTAR];
	case MSR_KERNEL_GS_BASE: return &g->msr[SW_KERNEL_GS_BASE];
	}
	*address = false;
	switch (index) {
	case MSR_SYSENTER_CS: return &g->sysenter_cs;
	}
	for (i = 0; i < SW_NR; i++)
		if (vmx_switched_msrs[i] == index)
			return &g->msr[i];
	return NULL;
}

static int vmx_get_msr(struct kvmp_vcpu *vcpu, u32 index, u64 *data)
{
	struct vmx_vcpu *vmx = to_vmx(vcpu);
	bool address;
	u64 *field;

	switch (index) {
	case MSR_EFER:
		*data = vmx->guest.efer;
		return 0;
	case MSR_PAT:
		*data = vmx->guest.pat;
		return 0;
	case MSR_FEATURE_CONTROL:	/* Intel's, as kvm_intel keeps it */
		*data = vmx->guest.feature_control;
		return 0;
	}
	field = vmx_msr_field(vmx, index, &address);
	if (!field)
		return -KVMP_ENOENT;
	*data = *field;
	return 0;
}

static int vmx_set_msr(struct kvmp_vcpu *vcpu, u32 index, u64 data)
{
	struct vmx_vcpu *vmx = to_vmx(vcpu);
	bool address;
	u64 *field;

	switch (index) {
	case MSR_EFER:
		if (data & ~KVMP_EFER_GUEST_BITS)
			return -KVMP_EINVAL;
		/* LMA is the CPU's to set (when paging turns on), as in Linux */
		vmx->guest.efer = (data & ~KVMP_EFER_LMA) |
				  (vmx->guest.efer & KVMP_EFER_LMA);
		return 0;
	case MSR_PAT:
		if (!pat_valid(data))
			return -KVMP_EINVAL;
		vmx->guest.pat = data;
		return 0;
	case MSR_FEATURE_CONTROL:
		/* only the lock: no VMX, SGX or LMCE is offered to guests */
		if ((data & ~FEATURE_CONTROL_LOCKED) ||
		    (vmx->guest.feature_control & FEATURE_CONTROL_LOCKED))
			return -KVMP_EINVAL;
		vmx->guest.feature_control = data;
		return 0;
	}
	field = vmx_msr_field(vmx, index, &address);
	if (!field || (address && !kvmp_is_canonical(data)))
		return -KVMP_EINVAL;
	if (index == MSR_SYSENTER_CS)
		data &= 0xffff;
	*field = data;
	return 0;
}

/* written into the VMCS at every entry (vmx_write_guest) */
static u64 vmx_get_tsc_offset(struct kvmp_vcpu *vcpu)
{
	return to_vmx(vcpu)->guest.tsc_offset;
}

static void vmx_set_tsc_offset(struct kvmp_vcpu *vcpu, u64 offset)
{
	to_vmx(vcpu)->guest.tsc_offset = offset;
}

static bool vmx_if_flag(struct kvmp_vcpu *vcpu)
{
	return to_vmx(vcpu)->guest.rflags & KVMP_EFLAGS_IF;
}

static bool vmx_interrupt_allowed(struct kvmp_vcpu *vcpu)
{
	struct vmx_vcpu *vmx = to_vmx(vcpu);

	return (vmx->guest.rflags & KVMP_EFLAGS_IF) &&
	       !(vmx->guest.interruptibility &
		 (INTERRUPTIBILITY_STI | INTERRUPTIBILITY_MOV_SS)) &&
	       !(vmx->entry_intr & INTR_INFO_VALID);
}

static bool vmx_nmi_allowed(struct kvmp_vcpu *vcpu)
{
	struct vmx_vcpu *vmx = to_vmx(vcpu);

	return !(vmx->guest.interruptibility &
		 (INTERRUPTIBILITY_STI | INTERRUPTIBILITY_MOV_SS |
		  INTERRUPTIBILITY_NMI)) &&
	       !(vmx->entry_intr & INTR_INFO_VALID);
}

/* --- events ------------------------------------------------------------------ */
static void vmx_inject(struct vmx_vcpu *vmx, u32 info, u32 error, u32 len)
{
	vmx->entry_intr = info | INTR_INFO_VALID;
	vmx->entry_error = error;
	vmx->entry_len = len;
}

/*
 * Real mode pushes no error code (as Linux: has_error_code only in protected
 * mode), and VM entry refuses one there with unrestricted guest.
 */
static void vmx_inject_exception(struct kvmp_vcpu *vcpu, u8 vector,
				 bool has_error, u32 error)
{
	if (!(to_vmx(vcpu)->guest.cr0 & KVMP_CR0_PE))
		has_error = false;
	vmx_inject(to_vmx(vcpu), INTR_TYPE_HW_EXCEPTION | vector |
		   (has_error ? INTR_INFO_ERROR_VALID : 0), error, 0);
}

static void vmx_inject_irq(struct kvmp_vcpu *vcpu, u8 vector)
{
	vmx_inject(to_vmx(vcpu), INTR_TYPE_EXT | vector, 0, 0);
}

static void vmx_inject_nmi(struct kvmp_vcpu *vcpu)
{
	vmx_inject(to_vmx(vcpu), INTR_TYPE_NMI | 2, 0, 0);
}

/*
 * The window exits come when the guest can take an interrupt or an NMI; with
 * an event injected this entry, that is after its handler (IF and NMI
 * blocking hold them off until its IRET).
 */
static void vmx_set_windows(struct kvmp_vcpu *vcpu, bool irq, bool nmi)
{
	struct vmx_vcpu *vmx = to_vmx(vcpu);

	vmx->proc &= ~(PROC_INTR_WINDOW | PROC_NMI_WINDOW);
	if (irq)
		vmx->proc |= PROC_INTR_WINDOW;
	if (nmi && vmx_has_vnmi)
		vmx->proc |= PROC_NMI_WINDOW;
}

/* an event whose delivery the exit cut off is delivered again */
static void vmx_complete_event(struct kvmp_vcpu *vcpu)
{
	struct vmx_vcpu *vmx = to_vmx(vcpu);
	u32 info = vmx->exit.idt_info, type = info & INTR_TYPE_MASK;

	if (!(info & INTR_INFO_VALID))
		return;
	switch (type) {
	case INTR_TYPE_EXT:
		vcpu->pending_irq = info & 0xff;
		break;
	case INTR_TYPE_NMI:
		vmx->guest.interruptibility &= ~INTERRUPTIBILITY_NMI;
		vmx_inject(vmx, info & ~INTR_INFO_ERROR_VALID, 0, 0);
		break;
	case INTR_TYPE_HW_EXCEPTION:
		vmx_inject(vmx, info, vmx->exit.idt_error, 0);
		break;
	default:	/* INT n, INT3, INTO, INT1: again, with their length */
		vmx_inject(vmx, info, vmx->exit.idt_error, vmx->exit.insn_len);
		break;
	}
}

/* --- KVM_GET/SET_VCPU_EVENTS and DEBUGREGS --------------------------------------- */
/* soft interrupts and exceptions are not reported (the ABI has no length) */
static void vmx_get_event(struct kvmp_vcpu *vcpu, struct kvmp_event *e)
{
	struct vmx_vcpu *vmx = to_vmx(vcpu);
	u32 info = vmx->entry_intr;

	kvmp_os_memset(e, 0, sizeof(*e));
	if (!(info & INTR_INFO_VALID))
		return;
	switch (info & INTR_TYPE_MASK) {
	case INTR_TYPE_HW_EXCEPTION:
		e->type = KVMP_EVENT_EXCEPTION;
		e->vector = info & 0xff;
		e->has_error = info & INTR_INFO_ERROR_VALID;
		e->error = vmx->entry_error;
		break;
	case INTR_TYPE_NMI:
		e->type = KVMP_EVENT_NMI;
		e->vector = 2;
		break;
	}
}

/* as given: an error code in real mode is dropped only at the entry (as Linux) */
static void vmx_set_event(struct kvmp_vcpu *vcpu, const struct kvmp_event *e)
{
	to_vmx(vcpu)->entry_intr = 0;
	if (e->type == KVMP_EVENT_EXCEPTION)
		vmx_inject(to_vmx(vcpu), INTR_TYPE_HW_EXCEPTION | e->vector |
			   (e->has_error ? INTR_INFO_ERROR_VALID : 0), e->error, 0);
	else if (e->type == KVMP_EVENT_NMI)
		vmx_inject_nmi(vcpu);
}

/* as kvm_intel: the two kinds of blocking, MOV SS first */
static u8 vmx_get_interrupt_shadow(struct kvmp_vcpu *vcpu)
{
	u32 i = to_vmx(vcpu)->guest.interruptibility;

	return (i & INTERRUPTIBILITY_STI ? KVMP_X86_SHADOW_INT_STI : 0) |
	       (i & INTERRUPTIBILITY_MOV_SS ? KVMP_X86_SHADOW_INT_MOV_SS : 0);
}

static void vmx_set_interrupt_shadow(struct kvmp_vcpu *vcpu, u8 shadow)
{
	u32 *i = &to_vmx(vcpu)->guest.interruptibility;

	*i &= ~(INTERRUPTIBILITY_STI | INTERRUPTIBILITY_MOV_SS);
	if (shadow & KVMP_X86_SHADOW_INT_MOV_SS)
		*i |= INTERRUPTIBILITY_MOV_SS;
	else if (shadow & KVMP_X86_SHADOW_INT_STI)
		*i |= INTERRUPTIBILITY_STI;
}

/* NMI blocking is the CPU's with virtual NMIs; without them there is none */
static bool vmx_get_nmi_mask(struct kvmp_vcpu *vcpu)
{
	return to_vmx(vcpu)->guest.interruptibility & INTERRUPTIBILITY_NMI;
}

static void vmx_set_nmi_mask(struct kvmp_vcpu *vcpu, bool masked)
{
	u32 *i = &to_vmx(vcpu)->guest.interruptibility;

	*i &= ~INTERRUPTIBILITY_NMI;
	if (masked && vmx_has_vnmi)
		*i |= INTERRUPTIBILITY_NMI;
}

static void vmx_get_debugregs(struct kvmp_vcpu *vcpu, struct kvmp_debugregs *d)
{
	struct vmx_guest *g = &to_vmx(vcpu)->guest;

	kvmp_os_memcpy(d->db, g->dr, sizeof(d->db));
	d->dr6 = g->dr6;
	d->dr7 = g->dr7;
}

static void vmx_set_debugregs(struct kvmp_vcpu *vcpu,
			      const struct kvmp_debugregs *d)
{
	struct vmx_guest *g = &to_vmx(vcpu)->guest;

	kvmp_os_memcpy(g->dr, d->db, sizeof(g->dr));
	g->dr6 = d->dr6;
	g->dr7 = d->dr7;
}

/* --- entering the guest -------------------------------------------------------- */
struct vmx_dtr {
	u16 limit;
	u64 base;
} __packed;

/* what VM exit does not restore of the host, saved before the entry */
struct vmx_host {
	struct vmx_dtr gdt, idt;
	u16 ds, es, fs, gs, ldt, tr;
	u64 fs_base, kernel_gs_base, dr7;
	u64 msr[SW_NR];
};

static u16 read_sel(int which)
{
	u16 v;

	switch (which) {
	case 0:
		asm volatile("mov %%ds, %0" : "=r"(v));
		break;
	case 1:
		asm volatile("mov %%es, %0" : "=r"(v));
		break;
	case 2:
		asm volatile("mov %%fs, %0" : "=r"(v));
		break;
	case 3:
		asm volatile("mov %%gs, %0" : "=r"(v));
		break;
	case 4:
		asm volatile("mov %%cs, %0" : "=r"(v));
		break;
	case 5:
		asm volatile("mov %%ss, %0" : "=r"(v));
		break;
	case 6:
		asm volatile("sldt %0" : "=r"(v));
		break;
	default:
		asm volatile("str %0" : "=r"(v));
		break;
	}
	return v;
}

static u64 read_cr(int n)
{
	u64 v;

	switch (n) {
	case 0:
		asm volatile("mov %%cr0, %0" : "=r"(v));
		break;
	case 2:
		asm volatile("mov %%cr2, %0" : "=r"(v));
		break;
	case 3:
		asm volatile("mov %%cr3, %0" : "=r"(v));
		break;
	default:
		v = read_cr4();
		break;
	}
	return v;
}

static u64 read_dr7(void)
{
	u64 v;

	asm volatile("mov %%dr7, %0" : "=r"(v));
	return v;
}

/* the base of a system descriptor (TSS) in the GDT */
static u64 gdt_sys_base(u64 gdt, u16 sel)
{
	const u8 *d = (const u8 *)(gdt + (sel & ~7));

	return d[2] | (u64)d[3] << 8 | (u64)d[4] << 16 | (u64)d[7] << 24 |
	       (u64)*(const u32 *)(d + 8) << 32;
}

/* a selector VM exit may load: RPL 0, GDT */
static u16 host_sel(u16 sel)
{
	return (sel & 7) ? 0 : sel;
}

static void vmx_save_host(struct vmx_host *h)
{
	unsigned int i;

	asm volatile("sgdt %0" : "=m"(h->gdt));
	asm volatile("sidt %0" : "=m"(h->idt));
	h->ds = read_sel(0);
	h->es = read_sel(1);
	h->fs = read_sel(2);
	h->gs = read_sel(3);
	h->ldt = read_sel(6);
	h->tr = read_sel(7);
	h->fs_base = kvmp_rdmsr(MSR_FS_BASE);
	h->dr7 = read_dr7();
	for (i = 0; i < SW_NR; i++)
		h->msr[i] = kvmp_rdmsr(vmx_switched_msrs[i]);

	vmcs_write(VMCS_HOST_CR0, read_cr(0));
	vmcs_write(VMCS_HOST_CR3, read_cr(3));
	vmcs_write(VMCS_HOST_CR4, read_cr(4));
	vmcs_write(VMCS_HOST_CS_SEL, read_sel(4));
	vmcs_write(VMCS_HOST_SS_SEL, host_sel(read_sel(5)));
	vmcs_write(VMCS_HOST_DS_SEL, 0);
	vmcs_write(VMCS_HOST_ES_SEL, 0);
	vmcs_write(VMCS_HOST_FS_SEL, host_sel(h->fs));
	vmcs_write(VMCS_HOST_GS_SEL, host_sel(h->gs));
	vmcs_write(VMCS_HOST_TR_SEL, h->tr);
	vmcs_write(VMCS_HOST_TR_BASE, gdt_sys_base(h->gdt.base, h->tr));
	vmcs_write(VMCS_HOST_GDTR_BASE, h->gdt.base);
	vmcs_write(VMCS_HOST_IDTR_BASE, h->idt.base);
	vmcs_write(VMCS_HOST_FS_BASE, h->fs_base);
	vmcs_write(VMCS_HOST_GS_BASE, kvmp_rdmsr(MSR_GS_BASE));
	vmcs_write(VMCS_HOST_SYSENTER_CS, kvmp_rdmsr(MSR_SYSENTER_CS));
	vmcs_write(VMCS_HOST_SYSENTER_ESP, kvmp_rdmsr(MSR_SYSENTER_ESP));
	vmcs_write(VMCS_HOST_SYSENTER_EIP, kvmp_rdmsr(MSR_SYSENTER_EIP));
	vmcs_write(VMCS_HOST_EFER, kvmp_rdmsr(MSR_EFER));
	vmcs_write(VMCS_HOST_PAT, kvmp_rdmsr(MSR_PAT));
	vmcs_write(VMCS_HOST_RIP, (u64)kvmp_vmx_exit_point);
}

/*
 * After the exit: VM exit set the GDT and IDT limits to 0xffff, TR's to 0x67,
 * LDTR to null, DR7 to 0x400, DEBUGCTL to 0 and the data selectors to what
 * the VMCS said; put the host's back.
 */
static void vmx_restore_host(struct vmx_host *h, const u64 *guest_msr,
			     u64 debugctl)
{
	unsigned int i;

	if (h->gdt.limit != 0xffff)
		asm volatile("lgdt %0" : : "m"(h->gdt));
	if (h->idt.limit != 0xffff)
		asm volatile("lidt %0" : : "m"(h->idt));
	kvmp_os_tss_limit_lost();
	if (h->ldt)
		asm volatile("lldt %0" : : "r"(h->ldt));
	if (h->ds)
		asm volatile("mov %0, %%ds" : : "r"(h->ds));
	if (h->es)
		asm volatile("mov %0, %%es" : : "r"(h->es));
	if (host_sel(h->fs) != h->fs) {
		asm volatile("mov %0, %%fs" : : "r"(h->fs));
		kvmp_wrmsr(MSR_FS_BASE, h->fs_base);
	}
	if (host_sel(h->gs) != h->gs)	/* the user's GS: its base is in KGSBASE */
		asm volatile("swapgs; mov %0, %%gs; swapgs" : : "r"(h->gs));
	for (i = 0; i < SW_NR; i++)
		if (guest_msr[i] != h->msr[i])
			kvmp_wrmsr(vmx_switched_msrs[i], h->msr[i]);
	if (h->dr7 != DR7_FIXED)
		asm volatile("mov %0, %%dr7" : : "r"(h->dr7));
	if (debugctl)
		kvmp_wrmsr(MSR_DEBUGCTL, debugctl);
}

/* the hardware CR0 and CR4, and which bits the guest owns */
static u64 vmx_cr0_owned_by_host(void)
{
	return (vmx_cr0_fixed0 & ~(KVMP_CR0_PE | KVMP_CR0_PG)) | KVMP_CR0_CD | KVMP_CR0_NW;
}

/* caches stay on in the hardware CR0, whatever the guest's CD and NW say */
static u64 vmx_hw_cr0(u64 cr0)
{
	return ((cr0 & ~(KVMP_CR0_CD | KVMP_CR0_NW)) |
		(vmx_cr0_fixed0 & ~(KVMP_CR0_PE | KVMP_CR0_PG))) & vmx_cr0_fixed1;
}

static void vmx_write_controls(struct vmx_vcpu *vmx, struct kvmp_vcpu *vcpu)
{
	struct vmx_vm *v = vcpu->vm->arch;

	vmcs_write(VMCS_PIN_CTLS, vmx_pin);
	vmcs_write(VMCS_PROC_CTLS2, vmx_proc2);
	vmcs_write(VMCS_EXIT_CTLS, vmx_exit_ctls);
	vmcs_write(VMCS_IO_BITMAP_A, vmx_io_bitmap_pa);
	vmcs_write(VMCS_IO_BITMAP_B, vmx_io_bitmap_pa + KVMP_PAGE_SIZE);
	vmcs_write(VMCS_MSR_BITMAP, vmx_msr_bitmap_pa);
	vmcs_write(VMCS_EPT_POINTER, v->eptp);
	vmcs_write(VMCS_VPID, vmx->vpid);
	vmcs_write(VMCS_LINK_POINTER, ~0ULL);
	vmcs_write(VMCS_CR3_TARGET_COUNT, 0);
	vmcs_write(VMCS_EXIT_MSR_STORE_COUNT, 0);
	vmcs_write(VMCS_EXIT_MSR_LOAD_COUNT, 0);
	vmcs_write(VMCS_ENTRY_MSR_LOAD_COUNT, 0);
	vmcs_write(VMCS_PF_ERROR_MASK, 0);
	vmcs_write(VMCS_PF_ERROR_MATCH, 0);
	/*
	 * #DB and #AC exit: guests can loop the CPU in microcode on them; #MC
	 * exits so the host's handler gets it.
	 */
	vmcs_write(VMCS_EXCEPTION_BITMAP, (1U << 1) | (1U << 17) | (1U << 18));
	vmcs_write(VMCS_CR0_MASK, vmx_cr0_owned_by_host());
	vmcs_write(VMCS_CR4_MASK, ~0ULL);	/* every CR4 change is checked */
	vmcs_write(VMCS_GUEST_DEBUGCTL, 0);
	vmcs_write(VMCS_GUEST_ACTIVITY, 0);
}

static void vmx_write_guest(struct vmx_vcpu *vmx)
{
	struct vmx_guest *g = &vmx->guest;
	int i;

	for (i = 0; i < VMX_NR_SEGS; i++) {
		vmcs_write(VMCS_GUEST_SEL(i), g->seg[i].sel);
		vmcs_write(VMCS_GUEST_BASE(i), g->seg[i].base);
		vmcs_write(VMCS_GUEST_LIMIT(i), g->seg[i].limit);
		vmcs_write(VMCS_GUEST_AR(i), g->seg[i].ar);
	}
	vmcs_write(VMCS_GUEST_GDTR_BASE, g->gdtr_base);
	vmcs_write(VMCS_GUEST_GDTR_LIMIT, g->gdtr_limit);
	vmcs_write(VMCS_GUEST_IDTR_BASE, g->idtr_base);
	vmcs_write(VMCS_GUEST_IDTR_LIMIT, g->idtr_limit);
	vmcs_write(VMCS_GUEST_CR0, vmx_hw_cr0(g->cr0));
	vmcs_write(VMCS_CR0_SHADOW, g->cr0);
	vmcs_write(VMCS_GUEST_CR3, g->cr3);
	vmcs_write(VMCS_GUEST_CR4, (g->cr4 | vmx_cr4_fixed0) & vmx_cr4_fixed1);
	vmcs_write(VMCS_CR4_SHADOW, g->cr4);
	vmcs_write(VMCS_GUEST_DR7, DR7_FIXED);
	vmcs_write(VMCS_GUEST_RSP, g->rsp);
	vmcs_write(VMCS_GUEST_RIP, g->rip);
	vmcs_write(VMCS_GUEST_RFLAGS, g->rflags);
	/*
	 * VM entry's rules: STI blocking needs IF; an NMI goes in neither under
	 * MOV SS nor under NMI blocking (a VMM may restore them together); TF
	 * under a shadow is pending
	 */
	if (!(g->rflags & KVMP_EFLAGS_IF))
		g->interruptibility &= ~INTERRUPTIBILITY_STI;
	if ((vmx->entry_intr & (INTR_INFO_VALID | INTR_TYPE_MASK)) ==
	    (INTR_INFO_VALID | INTR_TYPE_NMI))
		g->interruptibility &= ~(INTERRUPTIBILITY_MOV_SS |
					 INTERRUPTIBILITY_NMI);
	vmcs_write(VMCS_GUEST_PENDING_DBG, (g->rflags & EFLAGS_TF) &&
		(g->interruptibility & (INTERRUPTIBILITY_STI |
					INTERRUPTIBILITY_MOV_SS)) ? 1 << 14 : 0);
	vmcs_write(VMCS_GUEST_INTERRUPTIBILITY, g->interruptibility);
	vmcs_write(VMCS_GUEST_SYSENTER_CS, g->sysenter_cs);
	vmcs_write(VMCS_GUEST_SYSENTER_ESP, g->sysenter_esp);
	vmcs_write(VMCS_GUEST_SYSENTER_EIP, g->sysenter_eip);
	vmcs_write(VMCS_GUEST_EFER, g->efer);
	vmcs_write(VMCS_GUEST_PAT, g->pat);
	for (i = 0; i < 4; i++)
		vmcs_write(VMCS_GUEST_PDPTE(i), g->pdpte[i]);
	vmcs_write(VMCS_ENTRY_CTLS, vmx_entry_ctls |
		((g->efer & KVMP_EFER_LMA) ? ENTRY_IA32E : 0));
	vmcs_write(VMCS_TSC_OFFSET, g->tsc_offset);
	vmcs_write(VMCS_PROC_CTLS, vmx->proc);
	/* real mode pushes no error code (one the VMM restored is dropped here) */
	if (!(g->cr0 & KVMP_CR0_PE))
		vmx->entry_intr &= ~INTR_INFO_ERROR_VALID;
	vmcs_write(VMCS_ENTRY_INTR_INFO, vmx->entry_intr);
	vmcs_write(VMCS_ENTRY_EXCEPTION_ERROR, vmx->entry_error);
	vmcs_write(VMCS_ENTRY_INSN_LEN, vmx->entry_len);
}

static void vmx_read_guest(struct vmx_vcpu *vmx)
{
	struct vmx_guest *g = &vmx->guest;
	struct vmx_exit *e = &vmx->exit;
	u64 mask = vmx_cr0_owned_by_host();
	int i;

	for (i = 0; i < VMX_NR_SEGS; i++) {
		g->seg[i].sel = vmcs_read(VMCS_GUEST_SEL(i));
		g->seg[i].base = vmcs_read(VMCS_GUEST_BASE(i));
		g->seg[i].limit = vmcs_read(VMCS_GUEST_LIMIT(i));
		g->seg[i].ar = vmcs_read(VMCS_GUEST_AR(i));
	}
	g->gdtr_base = vmcs_read(VMCS_GUEST_GDTR_BASE);
	g->gdtr_limit = vmcs_read(VMCS_GUEST_GDTR_LIMIT);
	g->idtr_base = vmcs_read(VMCS_GUEST_IDTR_BASE);
	g->idtr_limit = vmcs_read(VMCS_GUEST_IDTR_LIMIT);
	g->cr0 = (vmcs_read(VMCS_GUEST_CR0) & ~mask) | (g->cr0 & mask);
	g->cr3 = vmcs_read(VMCS_GUEST_CR3);
	g->rsp = vmcs_read(VMCS_GUEST_RSP);
	g->rip = vmcs_read(VMCS_GUEST_RIP);
	g->rflags = vmcs_read(VMCS_GUEST_RFLAGS);
	g->interruptibility = vmcs_read(VMCS_GUEST_INTERRUPTIBILITY);
	g->sysenter_cs = vmcs_read(VMCS_GUEST_SYSENTER_CS);
	g->sysenter_esp = vmcs_read(VMCS_GUEST_SYSENTER_ESP);
	g->sysenter_eip = vmcs_read(VMCS_GUEST_SYSENTER_EIP);
	g->efer = vmcs_read(VMCS_GUEST_EFER);
	g->pat = vmcs_read(VMCS_GUEST_PAT);
	if (vmx_pae_paging(g))
		for (i = 0; i < 4; i++)
			g->pdpte[i] = vmcs_read(VMCS_GUEST_PDPTE(i));

	e->reason = vmcs_read(VMCS_EXIT_REASON);
	e->qual = vmcs_read(VMCS_EXIT_QUALIFICATION);
	e->intr_info = vmcs_read(VMCS_EXIT_INTR_INFO);
	e->intr_error = vmcs_read(VMCS_EXIT_INTR_ERROR);
	e->idt_info = vmcs_read(VMCS_IDT_VECTORING_INFO);
	e->idt_error = vmcs_read(VMCS_IDT_VECTORING_ERROR);
	e->insn_len = vmcs_read(VMCS_EXIT_INSN_LEN);
	e->insn_info = vmcs_read(VMCS_EXIT_INSN_INFO);
	e->gpa = vmcs_read(VMCS_GUEST_PHYS_ADDR);
}

static void write_cr2(u64 v)
{
	asm volatile("mov %0, %%cr2" : : "r"(v) : "memory");
}

/*
 * One entry, with preemption and interrupts off (external interrupts and
 * NMIs exit; the host takes them when interrupts are on again).  Returns 0
 * after an exit, with vmx->exit filled, -EIO if the entry failed, or -EFAULT
 * if a VMX instruction faulted (VMX went off on this CPU under us).
 */
static int vmx_enter(struct kvmp_vcpu *vcpu, int cpu)
{
	struct vmx_vcpu *vmx = to_vmx(vcpu);
	u32 gen = __atomic_load_n(&vcpu->vm->tlb_generation, __ATOMIC_ACQUIRE);
	struct vmx_host host;
	unsigned int i;
	int r;

	if (!vmx->vmcs_cleared) {
		vmclear(vmx->vmcs_pa);	/* a fresh VMCS starts in the clear state */
		vmx->vmcs_cleared = true;
	}
	r = vmptrld(vmx->vmcs_pa);
	if (r)
		return r;
	vmx_write_controls(vmx, vcpu);
	vmx_write_guest(vmx);
	vmx_save_host(&host);
	/*
	 * The host's DEBUGCTL (VM exit clears it) is the thread's own: read it
	 * once a KVM_RUN and on a new CPU, as Linux does at vcpu_load.
	 */
	if (vmx->last_cpu != cpu || vmx->run_count != vcpu->run_count) {
		vmx->host_debugctl = kvmp_rdmsr(MSR_DEBUGCTL);
		vmx->run_count = vcpu->run_count;
	}
	if (vmx->last_cpu != cpu || vmx->tlb_generation != gen || vmx->need_flush)
		vmx_flush(vcpu);
	vmx->need_flush = false;
	vmx->last_cpu = cpu;
	vmx->tlb_generation = gen;
	vmx->entry_intr = 0;	/* VM entry consumes it */
	for (i = 0; i < SW_NR; i++)	/* WRMSR is slow: only what differs */
		if (vmx->guest.msr[i] != host.msr[i])
			kvmp_wrmsr(vmx_switched_msrs[i], vmx->guest.msr[i]);
	write_cr2(vmx->guest.cr2);

	r = kvmp_vmx_enter(vmx->gprs, 0);

	vmx->guest.cr2 = read_cr(2);
	/* the guest writes the others only through WRMSR exits; SWAPGS this one */
	vmx->guest.msr[SW_KERNEL_GS_BASE] = kvmp_rdmsr(MSR_KERNEL_GS_BASE);
	vmx_restore_host(&host, vmx->guest.msr, vmx->host_debugctl);
	if (r == 2) {		/* VMLAUNCH or VMRESUME faulted: VMX is off */
		kvmp_virt_fault("VMWRITE, VMLAUNCH or VMRESUME");
		return -KVMP_EFAULT;
	}
	if (r) {
		vmx->exit.insn_error = vmcs_read(VMCS_INSN_ERROR);
		vmx->exit.reason = EXIT_ENTRY_FAILED;
		vmclear(vmx->vmcs_pa);
		return -KVMP_EIO;
	}
	vmx_read_guest(vmx);
	vmclear(vmx->vmcs_pa);
	/* a host NMI caused this exit: the host's handler takes it */
	if ((vmx->exit.reason & 0xffff) == EXIT_EXCEPTION_NMI &&
	    (vmx->exit.intr_info & INTR_TYPE_MASK) == INTR_TYPE_NMI &&
	    (vmx->exit.intr_info & INTR_INFO_VALID))
		asm volatile("int $2");
	return 0;
}

static int vmx_handle_exit(struct kvmp_vcpu *vcpu);

static int vmx_run(struct kvmp_vcpu *vcpu)
{
	struct vmx_vcpu *vmx = to_vmx(vcpu);
	int cpu, r;

	kvmp_os_fpu_begin();	/* preemption off until fpu_end */
	kvmp_os_irq_disable();
	cpu = kvmp_os_cpu();
	/* VMX went off here (CPU going offline, reboot): see svm_run */
	if (!vmx_cpus[cpu].on) {
		kvmp_os_irq_enable();
		kvmp_os_fpu_end();
		return KVMP_REENTER;
	}
	kvmp_vcpu_guest_enter(vcpu, cpu);	/* before the TLB generation */
	kvmp_spec_vm_switch(&vmx_cpus[cpu].last_vm, vcpu->vm);
	kvmp_fpu_load_guest(vcpu);
	r = vmx_enter(vcpu, cpu);
	kvmp_fpu_save_guest(vcpu);
	kvmp_vcpu_guest_exit(vcpu);
	kvmp_os_irq_enable();
	kvmp_os_fpu_end();

	if (r == -KVMP_EFAULT)	/* VMX went off under us: no exit to handle */
		return kvmp_virt_fault_action();
	if (r) {
		vcpu->run->exit_reason = KVMP_EXIT_FAIL_ENTRY;
		vcpu->run->fail_entry.hardware_entry_failure_reason =
			vmx->exit.insn_error;
		vcpu->run->fail_entry.cpu = cpu;
		return KVMP_TO_USER;
	}
	return vmx_handle_exit(vcpu);
}

/* --- exit handlers --------------------------------------------------------------- */
/* move past the instruction that exited, leaving its interrupt shadow */
static int vmx_skip(struct kvmp_vcpu *vcpu)
{
	struct vmx_vcpu *vmx = to_vmx(vcpu);
	u32 len = vmx->exit.insn_len;

	if (len < 1 || len > KVMP_INSN_MAX_LEN) {	/* the CPU's word, checked */
		kvmp_internal_error(vcpu, KVMP_INTERNAL_ERROR_EMULATION,
				    vmx->exit.reason, len);
		return KVMP_TO_USER;
	}
	vmx->guest.rip += len;
	if (!(vmx->guest.efer & KVMP_EFER_LMA) ||
	    !(vmx->guest.seg[KVMP_SEG_CS].ar & (1U << 13)))
		vmx->guest.rip &= 0xffffffffULL;
	vmx->guest.interruptibility &= ~(INTERRUPTIBILITY_STI |
					 INTERRUPTIBILITY_MOV_SS);
	return KVMP_REENTER;
}

static int vmx_exit_reenter(struct kvmp_vcpu *vcpu)
{
	return KVMP_REENTER;	/* a host interrupt: the host took it */
}

static int vmx_exit_ud(struct kvmp_vcpu *vcpu)
{
	vmx_inject_exception(vcpu, 6, false, 0);
	return KVMP_REENTER;
}

static int vmx_exit_gp(struct kvmp_vcpu *vcpu)
{
	vmx_inject_exception(vcpu, 13, true, 0);
	return KVMP_REENTER;
}

static int vmx_exit_exception(struct kvmp_vcpu *vcpu)
{
	struct vmx_vcpu *vmx = to_vmx(vcpu);
	u32 info = vmx->exit.intr_info, type = info & INTR_TYPE_MASK;
	u8 vector = info & 0xff;

	if (type == INTR_TYPE_NMI)
		return KVMP_REENTER;	/* the host's, taken in vmx_enter */
	if (vector == 1) {	/* #DB: the guest's DR6 gets what happened */
		vmx->guest.dr6 = (vmx->guest.dr6 & ~DR6_VOLATILE) |
				 (vmx->exit.qual & DR6_VOLATILE);
		if (type == INTR_TYPE_PRIV_SOFT)	/* INT1: after it */
			vmx_inject(vmx, INTR_TYPE_PRIV_SOFT | 1, 0,
				   vmx->exit.insn_len);
		else
			vmx_inject(vmx, INTR_TYPE_HW_EXCEPTION | 1, 0, 0);
		return KVMP_REENTER;
	}
	if (vector == 18) {	/* #MC: the host's machine check */
		kvmp_host_machine_check();
		return KVMP_REENTER;
	}
	if (vector == 17) {	/* #AC: the guest's own, reflected */
		vmx_inject(vmx, INTR_TYPE_HW_EXCEPTION | INTR_INFO_ERROR_VALID | 17,
			   0, 0);
		return KVMP_REENTER;
	}
	kvmp_internal_error(vcpu, KVMP_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON,
			    vmx->exit.reason, info);
	return KVMP_TO_USER;
}

static int vmx_exit_triple_fault(struct kvmp_vcpu *vcpu)
{
	vcpu->run->exit_reason = KVMP_EXIT_SHUTDOWN;
	return KVMP_TO_USER;
}

static int vmx_exit_window(struct kvmp_vcpu *vcpu)
{
	to_vmx(vcpu)->proc &= ~(PROC_INTR_WINDOW | PROC_NMI_WINDOW);
	return KVMP_REENTER;	/* the run loop injects or reports the window */
}

static int vmx_exit_cpuid(struct kvmp_vcpu *vcpu)
{
	struct vmx_vcpu *vmx = to_vmx(vcpu);
	u64 *g = vmx->gprs;
	u32 a = g[KVMP_RAX], b, c = g[KVMP_RCX], d;

	kvmp_emulate_cpuid(vcpu, vmx->guest.cr4, &a, &b, &c, &d);
	g[KVMP_RAX] = a;
	g[KVMP_RBX] = b;
	g[KVMP_RCX] = c;
	g[KVMP_RDX] = d;
	return vmx_skip(vcpu);
}

static int vmx_exit_hlt(struct kvmp_vcpu *vcpu)
{
	int r = vmx_skip(vcpu);

	if (r == KVMP_REENTER)
		vcpu->run->exit_reason = KVMP_EXIT_HLT;	/* no in-kernel irqchip */
	return KVMP_TO_USER;
}

/* INVD, WBINVD: nothing for a guest to write back or drop */
static int vmx_exit_skip(struct kvmp_vcpu *vcpu)
{
	return vmx_skip(vcpu);
}

static u64 *vmx_gpr(struct vmx_vcpu *vmx, unsigned int n)
{
	return n == KVMP_RSP ? &vmx->guest.rsp : &vmx->gprs[n & 15];
}

static int vmx_cpl(struct vmx_vcpu *vmx)
{
	if (!(vmx->guest.cr0 & KVMP_CR0_PE))
		return 0;
	return (vmx->guest.seg[KVMP_SEG_SS].ar >> 5) & 3;
}

/* RDPMC: the core answers (no PMU for guests, never the host's counters) */
static int vmx_exit_rdpmc(struct kvmp_vcpu *vcpu)
{
	struct vmx_vcpu *vmx = to_vmx(vcpu);
	u64 value;

	if (kvmp_emulate_rdpmc(vcpu, vmx->gprs[KVMP_RCX], vmx_cpl(vmx),
			       vmx->guest.cr0, vmx->guest.cr4, &value))
		return vmx_exit_gp(vcpu);
	vmx->gprs[KVMP_RAX] = (u32)value;
	vmx->gprs[KVMP_RDX] = value >> 32;
	return vmx_skip(vcpu);
}

/* MOV to CR0 (the bits the host owns changed), as Linux's kvm_set_cr0 */
static bool vmx_cs_l(struct vmx_guest *g)
{
	return g->seg[KVMP_SEG_CS].ar & (1U << 13);
}

static int vmx_set_cr0(struct kvmp_vcpu *vcpu, u64 cr0)
{
	struct vmx_guest *g = &to_vmx(vcpu)->guest;
	u64 old = g->cr0, old_efer = g->efer;

	if (kvmp_guest_set_cr0(vcpu, old, &cr0, g->cr4, &g->efer, vmx_cs_l(g)))
		return -KVMP_EINVAL;
	g->cr0 = cr0;
	if (((old ^ cr0) & KVMP_CR0_PG) && vmx_load_pdptes(vcpu)) {
		g->cr0 = old;
		g->efer = old_efer;
		return -KVMP_EINVAL;
	}
	if ((old ^ cr0) & KVMP_CR0_PG)
		to_vmx(vcpu)->need_flush = true;	/* translations change */
	return 0;
}

static int vmx_set_cr4(struct kvmp_vcpu *vcpu, u64 cr4)
{
	struct vmx_guest *g = &to_vmx(vcpu)->guest;
	u64 old = g->cr4;

	if (kvmp_guest_set_cr4(vcpu, cr4, g->efer))
		return -KVMP_EINVAL;
	g->cr4 = cr4;
	if (((old ^ cr4) & (KVMP_CR4_PAE | KVMP_CR4_PSE)) && vmx_load_pdptes(vcpu)) {
		g->cr4 = old;
		return -KVMP_EINVAL;
	}
	if ((old ^ cr4) & (KVMP_CR4_PGE | KVMP_CR4_PAE | KVMP_CR4_PSE))
		to_vmx(vcpu)->need_flush = true;	/* a global flush, as on hardware */
	return 0;
}

static int vmx_exit_cr(struct kvmp_vcpu *vcpu)
{
	struct vmx_vcpu *vmx = to_vmx(vcpu);
	u64 q = vmx->exit.qual, *reg = vmx_gpr(vmx, (q >> 8) & 15);
	unsigned int cr = q & 15, type = (q >> 4) & 3;
	u64 v = *reg;
	int r = 0;

	if (!(vmx->guest.efer & KVMP_EFER_LMA) ||
	    !(vmx->guest.seg[KVMP_SEG_CS].ar & (1U << 13)))
		v &= 0xffffffffULL;
	if (type == 0) {		/* MOV to CR */
		switch (cr) {
		case 0:
			r = vmx_set_cr0(vcpu, v);
			break;
		case 3:
			vmx->guest.cr3 = v;
			break;
		case 4:
			r = vmx_set_cr4(vcpu, v);
			break;
		case 8:		/* the core keeps it (kvmp_guest_set_cr8) */
			r = kvmp_guest_set_cr8(vcpu, v);
			if (r < 0)
				return vmx_exit_gp(vcpu);
			return vmx_skip(vcpu) == KVMP_REENTER ? r : KVMP_TO_USER;
		default:
			return vmx_exit_ud(vcpu);
		}
	} else if (type == 1) {		/* MOV from CR */
		if (cr == 3)
			*reg = vmx->guest.cr3;
		else if (cr == 8)
			*reg = vcpu->cr8;
		else
			return vmx_exit_ud(vcpu);
	} else {			/* CLTS, LMSW touch no bit we own */
		kvmp_internal_error(vcpu, KVMP_INTERNAL_ERROR_EMULATION,
				    vmx->exit.reason, q);
		return KVMP_TO_USER;
	}
	if (r)
		return vmx_exit_gp(vcpu);
	return vmx_skip(vcpu);
}

/*
 * MOV DR: the guest's debug registers live here and are never loaded, so
 * the host's breakpoints neither leak to the guest nor get overwritten.
 */
static int vmx_exit_dr(struct kvmp_vcpu *vcpu)
{
	struct vmx_vcpu *vmx = to_vmx(vcpu);
	struct vmx_guest *g = &vmx->guest;
	u64 q = vmx->exit.qual, *reg = vmx_gpr(vmx, (q >> 8) & 15);
	unsigned int dr = q & 7;
	bool read = q & (1 << 4);

	if (vmx_cpl(vmx))
		return vmx_exit_gp(vcpu);
	if (dr == 4 || dr == 5) {
		if (g->cr4 & (1ULL << 3))	/* CR4.DE */
			return vmx_exit_ud(vcpu);
		dr += 2;
	}
	if (read) {
		*reg = dr < 4 ? g->dr[dr] : dr == 6 ? g->dr6 : g->dr7;
	} else if (dr < 4) {
		g->dr[dr] = *reg;
	} else {
		if (*reg >> 32)
			return vmx_exit_gp(vcpu);
		if (dr == 6)
			g->dr6 = (*reg & DR6_VOLATILE) | DR6_FIXED;
		else
			g->dr7 = (*reg & DR7_VOLATILE) | DR7_FIXED;
	}
	return vmx_skip(vcpu);
}

static int vmx_exit_io(struct kvmp_vcpu *vcpu)
{
	struct vmx_vcpu *vmx = to_vmx(vcpu);
	u64 q = vmx->exit.qual;
	struct kvmp_pio pio = { 0 };
	u32 info = vmx->exit.insn_info, len = vmx->exit.insn_len;
	static const u8 sizes[8] = { 1, 2, 0, 4 };
	static const u8 addr_sizes[8] = { 2, 4, 8 };

	pio.size = sizes[q & 7];
	pio.in = q & (1 << 3);
	pio.string = q & (1 << 4);
	pio.rep = q & (1 << 5);
	pio.port = q >> 16;
	pio.seg = KVMP_SEG_DS;
	if (pio.string && vmx_has_inout_info) {
		pio.addr_size = addr_sizes[(info >> 7) & 7];
		if (!pio.in)
			pio.seg = (info >> 15) & 7;
	} else if (pio.string) {	/* the default address size of the mode */
		pio.addr_size = (vmx->guest.efer & KVMP_EFER_LMA) &&
				(vmx->guest.seg[KVMP_SEG_CS].ar & (1U << 13)) ? 8 :
				(vmx->guest.seg[KVMP_SEG_CS].ar & (1U << 14)) ? 4 : 2;
	}
	/* the CPU's fields, checked before anything is indexed by them */
	if (!pio.size || (pio.string && !pio.addr_size) || pio.seg > KVMP_SEG_GS ||
	    len < 1 || len > KVMP_INSN_MAX_LEN) {
		kvmp_internal_error(vcpu, KVMP_INTERNAL_ERROR_EMULATION, q, info);
		return KVMP_TO_USER;
	}
	pio.next_rip = vmx->guest.rip + len;
	vmx->guest.interruptibility &= ~(INTERRUPTIBILITY_STI |
					 INTERRUPTIBILITY_MOV_SS);
	return kvmp_exit_pio(vcpu, &pio);
}

static int vmx_exit_msr(struct kvmp_vcpu *vcpu)
{
	struct vmx_vcpu *vmx = to_vmx(vcpu);
	u64 *g = vmx->gprs;
	u32 index = g[KVMP_RCX];
	u64 data;

	if ((vmx->exit.reason & 0xffff) == EXIT_WRMSR) {
		data = (g[KVMP_RDX] << 32) | (u32)g[KVMP_RAX];
		if (kvmp_set_msr(vcpu, index, data))
			return vmx_exit_gp(vcpu);
	} else {
		if (kvmp_get_msr(vcpu, index, &data))
			return vmx_exit_gp(vcpu);
		g[KVMP_RAX] = (u32)data;
		g[KVMP_RDX] = data >> 32;
	}
	return vmx_skip(vcpu);
}

/* XSETBV: the core checks the value; XCR0 is loaded at entry */
static int vmx_exit_xsetbv(struct kvmp_vcpu *vcpu)
{
	struct vmx_vcpu *vmx = to_vmx(vcpu);
	u64 *g = vmx->gprs;
	u64 value = (g[KVMP_RDX] << 32) | (u32)g[KVMP_RAX];

	if (!(vmx->guest.cr4 & KVMP_CR4_OSXSAVE))
		return vmx_exit_ud(vcpu);
	if (vmx_cpl(vmx) || kvmp_set_xcr(vcpu, (u32)g[KVMP_RCX], value))
		return vmx_exit_gp(vcpu);
	return vmx_skip(vcpu);
}

static int vmx_exit_ept_violation(struct kvmp_vcpu *vcpu)
{
	struct vmx_vcpu *vmx = to_vmx(vcpu);
	struct vmx_vm *v = vcpu->vm->arch;
	u64 q = vmx->exit.qual, gpa = vmx->exit.gpa;
	int r;

	/* an IRET that faulted unblocked NMIs: block them again, as the SDM says */
	if ((q & EPT_QUAL_NMI_UNBLOCK) && vmx_has_vnmi &&
	    !(vmx->exit.idt_info & INTR_INFO_VALID))
		vmx->guest.interruptibility |= INTERRUPTIBILITY_NMI;
	r = kvmp_tdp_fault(vcpu->vm, &v->ept, gpa, q & EPT_QUAL_WRITE);
	if (!r || r == -KVMP_EAGAIN)	/* EAGAIN: the VMM's mappings moved */
		return KVMP_REENTER;
	if (r != -KVMP_ENOENT)
		return r;	/* pinning failed: KVM_RUN reports it */
	/* no slot: MMIO, which only a data access to a linear address can be */
	if ((q & EPT_QUAL_FETCH) || !(q & EPT_QUAL_GLA_VALID) ||
	    !(q & EPT_QUAL_GLA_TRANSLATED)) {
		kvmp_internal_error(vcpu, KVMP_INTERNAL_ERROR_EMULATION, gpa, q);
		return KVMP_TO_USER;
	}
	return kvmp_exit_mmio(vcpu, gpa, NULL, 0);
}

static int vmx_exit_ept_misconfig(struct kvmp_vcpu *vcpu)
{
	kvmp_internal_error(vcpu, KVMP_INTERNAL_ERROR_EMULATION,
			    to_vmx(vcpu)->exit.gpa, EXIT_EPT_MISCONFIG);
	return KVMP_TO_USER;
}

typedef int (*vmx_exit_handler)(struct kvmp_vcpu *vcpu);

static const vmx_exit_handler vmx_exit_handlers[EXIT_MAX] = {
	[EXIT_EXCEPTION_NMI]	= vmx_exit_exception,
	[EXIT_EXTERNAL_INTR]	= vmx_exit_reenter,
	[EXIT_TRIPLE_FAULT]	= vmx_exit_triple_fault,
	[EXIT_INTR_WINDOW]	= vmx_exit_window,
	[EXIT_NMI_WINDOW]	= vmx_exit_window,
	[EXIT_CPUID]		= vmx_exit_cpuid,
	[EXIT_GETSEC]		= vmx_exit_ud,
	[EXIT_HLT]		= vmx_exit_hlt,
	[EXIT_INVD]		= vmx_exit_skip,
	[EXIT_RDPMC]		= vmx_exit_rdpmc,
	[EXIT_VMCALL]		= vmx_exit_ud,
	[EXIT_VMCLEAR]		= vmx_exit_ud,
	[EXIT_VMLAUNCH]		= vmx_exit_ud,
	[EXIT_VMPTRLD]		= vmx_exit_ud,
	[EXIT_VMPTRST]		= vmx_exit_ud,
	[EXIT_VMREAD]		= vmx_exit_ud,
	[EXIT_VMRESUME]		= vmx_exit_ud,
	[EXIT_VMWRITE]		= vmx_exit_ud,
	[EXIT_VMXOFF]		= vmx_exit_ud,
	[EXIT_VMXON]		= vmx_exit_ud,
	[EXIT_CR_ACCESS]	= vmx_exit_cr,
	[EXIT_DR_ACCESS]	= vmx_exit_dr,
	[EXIT_IO]		= vmx_exit_io,
	[EXIT_RDMSR]		= vmx_exit_msr,
	[EXIT_WRMSR]		= vmx_exit_msr,
	[EXIT_MWAIT]		= vmx_exit_ud,
	[EXIT_MONITOR]		= vmx_exit_ud,
	[EXIT_EPT_VIOLATION]	= vmx_exit_ept_violation,
	[EXIT_EPT_MISCONFIG]	= vmx_exit_ept_misconfig,
	[EXIT_INVEPT]		= vmx_exit_ud,
	[EXIT_INVVPID]		= vmx_exit_ud,
	[EXIT_WBINVD]		= vmx_exit_skip,
	[EXIT_XSETBV]		= vmx_exit_xsetbv,
	[EXIT_VMFUNC]		= vmx_exit_ud,
};

static int vmx_handle_exit(struct kvmp_vcpu *vcpu)
{
	struct vmx_vcpu *vmx = to_vmx(vcpu);
	u32 reason = vmx->exit.reason, basic = reason & 0xffff;
	struct kvmp_run *run = vcpu->run;

	if (reason & EXIT_ENTRY_FAILED) {	/* invalid guest state, MSR loading */
		run->exit_reason = KVMP_EXIT_FAIL_ENTRY;
		run->fail_entry.hardware_entry_failure_reason = reason;
		run->fail_entry.cpu = vmx->last_cpu;
		return KVMP_TO_USER;
	}
	vmx_complete_event(vcpu);
	if (basic < EXIT_MAX && vmx_exit_handlers[basic])
		return vmx_exit_handlers[basic](vcpu);
	kvmp_internal_error(vcpu, KVMP_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON,
			    reason, vmx->exit.qual);
	return KVMP_TO_USER;
}

const struct kvmp_backend kvmp_vmx_backend = {
	.name = "vmx",
	.hardware_setup = vmx_hardware_setup,
	.hardware_unsetup = vmx_hardware_unsetup,
	.cpu_enable = vmx_cpu_enable,
	.cpu_disable = vmx_cpu_disable,
	.vm_init = vmx_vm_init,
	.vm_destroy = vmx_vm_destroy,
	.unmap_range = vmx_unmap_range,
	.vcpu_create = vmx_vcpu_create,
	.vcpu_free = vmx_vcpu_free,
	.get_regs = vmx_get_regs,
	.set_regs = vmx_set_regs,
	.get_sregs = vmx_get_sregs,
	.set_sregs = vmx_set_sregs,
	.get_msr = vmx_get_msr,
	.set_msr = vmx_set_msr,
	.get_tsc_offset = vmx_get_tsc_offset,
	.set_tsc_offset = vmx_set_tsc_offset,
	.interrupt_allowed = vmx_interrupt_allowed,
	.nmi_allowed = vmx_nmi_allowed,
	.inject_irq = vmx_inject_irq,
	.inject_nmi = vmx_inject_nmi,
	.set_windows = vmx_set_windows,
	.if_flag = vmx_if_flag,
	.get_event = vmx_get_event,
	.set_event = vmx_set_event,
	.get_interrupt_shadow = vmx_get_interrupt_shadow,
	.set_interrupt_shadow = vmx_set_interrupt_shadow,
	.get_nmi_mask = vmx_get_nmi_mask,
	.set_nmi_mask = vmx_set_nmi_mask,
	.get_debugregs = vmx_get_debugregs,
	.set_debugregs = vmx_set_debugregs,
	.run = vmx_run,
};
