// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * The three ioctl layers (system, VM, VCPU), each a flat switch that hands
 * the work to the function that does it, and the lifetimes of VMs and VCPUs.
 * Unknown ioctls get the errno Linux gives: EINVAL on the device and on a
 * VCPU, ENOTTY on a VM.
 */
#include "kvmp_backend.h"

const struct kvmp_backend *kvmp_backend;

/* Virtualisation is on in the CPUs only while a VM exists, as Linux does, so
 * kvmport and another hypervisor (Linux's kvm_amd) can take turns.
 */
static struct kvmp_os_mutex *kvmp_global_lock;
static int kvmp_vm_count;

/*
 * The build lists its backends (kvmp_backends); a CPU has at most one of
 * them.  With none for this CPU the driver still loads: the device answers
 * the system ioctls and refuses KVM_CREATE_VM with ENODEV, and the log says
 * why.
 */
int kvmp_core_init(void)
{
	unsigned int i;
	int r;

	kvmp_global_lock = kvmp_os_mutex_create(KVMP_LOCK_GLOBAL);
	if (!kvmp_global_lock)
		return -KVMP_ENOMEM;
	for (i = 0; i < kvmp_nr_backends; i++) {
		r = kvmp_backends[i]->hardware_setup();
		if (!r) {
			kvmp_backend = kvmp_backends[i];
			break;
		}
		if (r != -KVMP_ENODEV) {
			kvmp_os_mutex_destroy(kvmp_global_lock);
			return r;
		}
	}
	kvmp_check_init();
	kvmp_build_supported_cpuid();
	if (kvmp_backend)
		kvmp_info("backend %s ready\n", kvmp_backend->name);
	else
		kvmp_warn("no backend for this CPU: KVM_CREATE_VM will fail with ENODEV\n");
	return 0;
}

void kvmp_core_exit(void)
{
	if (kvmp_backend)
		kvmp_backend->hardware_unsetup();
	kvmp_backend = NULL;
	kvmp_os_mutex_destroy(kvmp_global_lock);
}

static int kvmp_hardware_get(void)
{
	int r = 0;

	/* no CPU comes or goes meanwhile: kvmp_cpu_online reads the count */
	kvmp_os_mutex_lock(kvmp_global_lock);
	kvmp_os_cpus_lock();
	if (kvmp_vm_count == 0) {
		r = kvmp_os_on_each_cpu(kvmp_backend->cpu_enable, NULL);
		if (r)	/* some CPUs may be on: turn them all off again */
			kvmp_os_on_each_cpu(kvmp_backend->cpu_disable, NULL);
	}
	if (!r)
		kvmp_vm_count++;
	kvmp_os_cpus_unlock();
	kvmp_os_mutex_unlock(kvmp_global_lock);
	return r;
}

static void kvmp_hardware_put(void)
{
	kvmp_os_mutex_lock(kvmp_global_lock);
	kvmp_os_cpus_lock();
	if (--kvmp_vm_count == 0)
		kvmp_os_on_each_cpu(kvmp_backend->cpu_disable, NULL);
	kvmp_os_cpus_unlock();
	kvmp_os_mutex_unlock(kvmp_global_lock);
}

/*
 * CPU hotplug and power events (the port calls these on the CPU concerned,
 * with CPUs held still): while VMs exist every online CPU has
 * virtualization on, so a VCPU may run wherever the scheduler puts it.
 */
int kvmp_cpu_online(void)
{
	if (!kvmp_backend || !kvmp_vm_count)
		return 0;
	return kvmp_backend->cpu_enable(NULL);
}

void kvmp_cpu_offline(void)
{
	if (kvmp_backend && kvmp_vm_count)
		kvmp_backend->cpu_disable(NULL);
}

/*
 * Set for good once a reboot starts turning virtualization off: a VCPU that
 * faults on a virtualization instruction meanwhile is expected to (Linux's
 * kvm_rebooting).
 */
static bool kvmp_rebooting;

/* a reboot: off everywhere (a VCPU that tries to enter then waits) */
void kvmp_reboot(void)
{
	__atomic_store_n(&kvmp_rebooting, true, __ATOMIC_SEQ_CST);
	if (kvmp_backend)
		kvmp_os_on_each_cpu(kvmp_backend->cpu_disable, NULL);
}

/*
 * A fault on a virtualization instruction (kvmp_core.h): Linux's KVM calls
 * BUG when one happens outside a reboot (kvm_spurious_fault: it wants the
 * trace).  kvmport logs it (the first ten times) and fails the KVM_RUN, and
 * the host goes on.  Any context.
 */
void kvmp_virt_fault(const char *insn)
{
	static u32 reported;

	if (__atomic_load_n(&kvmp_rebooting, __ATOMIC_SEQ_CST))
		return;
	if (__atomic_fetch_add(&reported, 1, __ATOMIC_RELAXED) < 10)
		kvmp_err("%s faulted: virtualization was turned off on this CPU under kvmport\n",
			 insn);
}

int kvmp_virt_fault_action(void)
{
	return __atomic_load_n(&kvmp_rebooting, __ATOMIC_SEQ_CST) ?
		KVMP_REENTER : -KVMP_EIO;
}

/* --- capabilities ------------------------------------------------------- */
int kvmp_check_extension(unsigned long cap)
{
	if (!kvmp_backend)
		return 0;	/* no VM can be made: nothing is supported */
	switch (cap) {
	case KVMP_CAP_HLT:
	case KVMP_CAP_USER_MEMORY:
	case KVMP_CAP_SET_TSS_ADDR:
	case KVMP_CAP_EXT_CPUID:
	case KVMP_CAP_MP_STATE:
	case KVMP_CAP_DESTROY_MEMORY_REGION_WORKS:
	case KVMP_CAP_USER_NMI:
	case KVMP_CAP_JOIN_MEMORY_REGIONS_WORKS:
	case KVMP_CAP_IMMEDIATE_EXIT:
	case KVMP_CAP_ENABLE_CAP_VM:
	case KVMP_CAP_MMAP_VCPU:
	case KVMP_CAP_READONLY_MEM:
	case KVMP_CAP_COALESCED_PIO:
	case KVMP_CAP_VCPU_EVENTS:
	case KVMP_CAP_DEBUGREGS:
	case KVMP_CAP_XSAVE:
		return 1;
	case KVMP_CAP_XCRS:	/* as Linux: only with XSAVE on the host */
		return kvmp_xcr0_supported != 0;
	case KVMP_CAP_IRQ_ROUTING:
		/* QEMU 7.2 wants a non-zero answer; there is no routing to do */
		return 1;
	case KVMP_CAP_COALESCED_MMIO:	/* where the ring is: a page of the VCPU fd */
		return KVMP_COALESCED_MMIO_PAGE_OFFSET;
	case KVMP_CAP_SYNC_MMU:
		/* without a notifier the guest would keep a page the VMM drops */
		return kvmp_os_mm_notifier;
	case KVMP_CAP_NR_VCPUS:
	case KVMP_CAP_MAX_VCPUS:
		return KVMP_MAX_VCPUS;
	case KVMP_CAP_MAX_VCPU_ID:
		return KVMP_MAX_VCPU_ID + 1;
	case KVMP_CAP_NR_MEMSLOTS:
		return KVMP_MAX_SLOTS;
	case KVMP_CAP_MCE:
		return KVMP_MCE_BANKS_MAX;
	default:
		return 0;
	}
}

/* --- system ioctls --------------------------------------------------------- */
static long kvmp_get_msr_index_list(u64 uarg)
{
	struct kvmp_msr_list hdr;
	u32 n;

	if (kvmp_os_copy_from_user(&hdr, uarg, sizeof(hdr)))
		return -KVMP_EFAULT;
	n = hdr.nmsrs;
	hdr.nmsrs = kvmp_msr_list_len;
	if (kvmp_os_copy_to_user(uarg, &hdr, sizeof(hdr)))
		return -KVMP_EFAULT;
	if (n < kvmp_msr_list_len)
		return -KVMP_E2BIG;
	if (kvmp_os_copy_to_user(uarg + sizeof(hdr), kvmp_msr_list,
				 kvmp_msr_list_len * sizeof(u32)))
		return -KVMP_EFAULT;
	return 0;
}

long kvmp_system_ioctl(unsigned int ioctl, unsigned long arg)
{
	switch (ioctl) {
	case KVMP_GET_API_VERSION:
		return arg ? -KVMP_EINVAL : KVMP_API_VERSION;
	case KVMP_CHECK_EXTENSION:
		return kvmp_check_extension(arg);
	case KVMP_GET_VCPU_MMAP_SIZE:
		return arg ? -KVMP_EINVAL : (long)(KVMP_MMAP_PAGES * KVMP_PAGE_SIZE);
	case KVMP_GET_MSR_INDEX_LIST:
		return kvmp_get_msr_index_list(arg);
	case KVMP_GET_SUPPORTED_CPUID:
		return kvmp_get_supported_cpuid(arg);
	case KVMP_X86_GET_MCE_CAP_SUPPORTED: {
		u64 cap = KVMP_MCE_CAP_SUPPORTED;

		if (!kvmp_backend)
			return -KVMP_EINVAL;
		return kvmp_os_copy_to_user(arg, &cap, sizeof(cap)) ?
		       -KVMP_EFAULT : 0;
	}
	default:
		return -KVMP_EINVAL;
	}
}

/* --- VMs ----------------------------------------------------------------------- */
static u64 kvmp_vm_ids;

int kvmp_vm_create(unsigned long type, struct kvmp_vm **vmp)
{
	struct kvmp_vm *vm;
	int r;

	if (!kvmp_backend)
		return -KVMP_ENODEV;
	if (type)
		return -KVMP_EINVAL;
	r = kvmp_hardware_get();
	if (r)
		return r;
	r = -KVMP_ENOMEM;
	vm = kvmp_os_zalloc(sizeof(*vm));
	if (!vm)
		goto put_hw;
	vm->lock = kvmp_os_mutex_create(KVMP_LOCK_VM);
	vm->mmu_lock = kvmp_os_spinlock_create();
	if (!vm->lock || !vm->mmu_lock)
		goto free_lock;
	vm->mm = kvmp_os_mm_get();
	if (!vm->mm)
		goto free_lock;
	vm->refs = 1;
	vm->id = __atomic_add_fetch(&kvmp_vm_ids, 1, __ATOMIC_RELAXED);
	vm->ring = kvmp_os_alloc_pages(1, &vm->ring_pa);
	if (!vm->ring)
		goto free_lock;
	r = kvmp_backend->vm_init(vm);
	if (r)
		goto free_lock;
	*vmp = vm;
	return 0;

free_lock:
	if (vm->ring)
		kvmp_os_free_pages(vm->ring, 1);
	if (vm->mm)
		kvmp_os_mm_put(vm->mm);
	kvmp_os_spinlock_destroy(vm->mmu_lock);
	kvmp_os_mutex_destroy(vm->lock);
	kvmp_os_free(vm);
put_hw:
	kvmp_hardware_put();
	return r;
}

static void kvmp_vm_get(struct kvmp_vm *vm)
{
	__atomic_add_fetch(&vm->refs, 1, __ATOMIC_RELAXED);
}

void kvmp_vm_put(struct kvmp_vm *vm)
{
	if (__atomic_sub_fetch(&vm->refs, 1, __ATOMIC_ACQ_REL))
		return;
	kvmp_backend->vm_destroy(vm);	/* no VCPU is left to use it */
	kvmp_free_slots(vm);	/* gives the pins' charge back to vm->mm */
	kvmp_os_mm_put(vm->mm);
	kvmp_os_free_pages(vm->ring, 1);
	kvmp_os_spinlock_destroy(vm->mmu_lock);
	kvmp_os_mutex_destroy(vm->lock);
	kvmp_os_free(vm);
	kvmp_hardware_put();
}

/*
 * KVM_ENABLE_CAP on the VM: KVM_CAP_MAX_VCPU_ID, as Linux's x86 answers it (a
 * limit up to the one KVM_CHECK_EXTENSION gives, set once; the first VCPU
 * fixes it at that).  Linux's answer for a capability it does not enable, and
 * kvmport's for every other (none of them is offered): EINVAL.
 */
static long kvmp_vm_enable_cap(struct kvmp_vm *vm, u64 uarg)
{
	struct kvmp_enable_cap cap;
	long r = -KVMP_EINVAL;

	if (kvmp_os_copy_from_user(&cap, uarg, sizeof(cap)))
		return -KVMP_EFAULT;
	if (cap.flags || cap.cap != KVMP_CAP_MAX_VCPU_ID ||
	    cap.args[0] > KVMP_MAX_VCPU_ID + 1)
		return -KVMP_EINVAL;
	kvmp_os_mutex_lock(vm->lock);
	if (vm->max_vcpu_ids == cap.args[0]) {
		r = 0;
	} else if (!vm->max_vcpu_ids) {
		vm->max_vcpu_ids = cap.args[0];
		r = 0;
	}
	kvmp_os_mutex_unlock(vm->lock);
	return r;
}

static long kvmp_set_nr_mmu_pages(struct kvmp_vm *vm, unsigned long n)
{
	if (n < KVMP_MIN_MMU_PAGES)
		return -KVMP_EINVAL;
	kvmp_os_mutex_lock(vm->lock);
	vm->nr_mmu_pages_set = true;
	vm->nr_mmu_pages = n;
	kvmp_os_mutex_unlock(vm->lock);
	return 0;
}

long kvmp_vm_ioctl(struct kvmp_vm *vm, unsigned int ioctl, unsigned long arg)
{
	struct kvmp_userspace_memory_region region;
	struct kvmp_coalesced_mmio_zone zone;
	struct kvmp_dirty_log log;
	bool created;
	u64 addr;

	switch (ioctl) {
	case KVMP_SET_USER_MEMORY_REGION:
		if (kvmp_os_copy_from_user(&region, arg, sizeof(region)))
			return -KVMP_EFAULT;
		return kvmp_set_user_memory_region(vm, &region);
	case KVMP_REGISTER_COALESCED_MMIO:
	case KVMP_UNREGISTER_COALESCED_MMIO:
		if (kvmp_os_copy_from_user(&zone, arg, sizeof(zone)))
			return -KVMP_EFAULT;
		return kvmp_coalesced_zone(vm, &zone,
					   ioctl == KVMP_REGISTER_COALESCED_MMIO);
	case KVMP_GET_DIRTY_LOG:
		if (kvmp_os_copy_from_user(&log, arg, sizeof(log)))
			return -KVMP_EFAULT;
		return kvmp_get_dirty_log(vm, &log);
	case KVMP_SET_TSS_ADDR:
		/* Linux's bound: the TSS's 3 pages end below 4 GiB */
		if (arg > (unsigned int)(-3 * KVMP_PAGE_SIZE))
			return -KVMP_EINVAL;
		return 0;	/* only VMX real mode needs the TSS; SVM does not */
	case KVMP_SET_IDENTITY_MAP_ADDR:
		/* as Linux: only before the first VCPU, checked before the copy */
		kvmp_os_mutex_lock(vm->lock);
		created = vm->created_vcpus;
		kvmp_os_mutex_unlock(vm->lock);
		if (created)
			return -KVMP_EINVAL;
		if (kvmp_os_copy_from_user(&addr, arg, sizeof(addr)))
			return -KVMP_EFAULT;
		return 0;	/* likewise */
	case KVMP_CHECK_EXTENSION:
		return kvmp_check_extension(arg);
	case KVMP_ENABLE_CAP:
		return kvmp_vm_enable_cap(vm, arg);
	case KVMP_SET_NR_MMU_PAGES:
		return kvmp_set_nr_mmu_pages(vm, arg);
	case KVMP_GET_NR_MMU_PAGES:
		/* an unsigned long, returned as the ioctl's value (as Linux) */
		kvmp_os_mutex_lock(vm->lock);
		addr = vm->nr_mmu_pages;
		kvmp_os_mutex_unlock(vm->lock);
		return addr;
	default:
		return -KVMP_ENOTTY;
	}
}

/* --- VCPUs --------------------------------------------------------------------- */
/* id is a u32 as in Linux's kvm_vm_ioctl_create_vcpu: the ioctl's argument is cut to it */
int kvmp_vcpu_create(struct kvmp_vm *vm, u32 id,
		     struct kvmp_vcpu **vcpup)
{
	struct kvmp_vcpu *vcpu;
	u64 fpu_pa;
	int i, r;

	if (id > KVMP_MAX_VCPU_ID)
		return -KVMP_EINVAL;
	vcpu = kvmp_os_zalloc(sizeof(*vcpu));
	if (!vcpu)
		return -KVMP_ENOMEM;
	vcpu->vm = vm;
	vcpu->id = id;
	vcpu->pending_irq = -1;
	vcpu->guest_cpu = -1;
	vcpu->xcr0 = 1;			/* x87 only, as after reset */
	kvmp_msr_init(vcpu);
	r = -KVMP_ENOMEM;
	vcpu->lock = kvmp_os_mutex_create(KVMP_LOCK_VCPU);
	if (!vcpu->lock)
		goto free_vcpu;
	vcpu->run = kvmp_os_alloc_pages(KVMP_RUN_PAGES, &vcpu->run_pa[0]);
	if (!vcpu->run)
		goto free_lock;
	for (i = 1; i < KVMP_RUN_PAGES; i++)
		vcpu->run_pa[i] = vcpu->run_pa[0] + i * KVMP_PAGE_SIZE;
	vcpu->fpu = kvmp_os_alloc_pages(1, &fpu_pa);	/* 64-byte aligned */
	if (!vcpu->fpu)
		goto free_run;
	kvmp_fpu_reset(vcpu);
	r = kvmp_backend->vcpu_create(vcpu);
	if (r)
		goto free_fpu;

	kvmp_os_mutex_lock(vm->lock);
	r = -KVMP_EINVAL;
	if (vm->created_vcpus == KVMP_MAX_VCPUS)
		goto unlock;
	/* Linux's kvm_arch_vcpu_precreate: the first VCPU fixes the limit */
	if (!vm->max_vcpu_ids)
		vm->max_vcpu_ids = KVMP_MAX_VCPU_ID + 1;
	if (id >= vm->max_vcpu_ids)
		goto unlock;
	r = -KVMP_EEXIST;
	if (vm->vcpu_ids[id / 64] & (1ULL << (id % 64)))
		goto unlock;
	vm->vcpu_ids[id / 64] |= 1ULL << (id % 64);
	vm->created_vcpus++;
	kvmp_os_spin_lock(vm->mmu_lock);	/* the MMU notifier kicks vcpus[] */
	vm->vcpus[vm->nr_vcpus++] = vcpu;
	kvmp_os_spin_unlock(vm->mmu_lock);
	/*
	 * As Linux (kvm_synchronize_tsc): the VM's TSC starts at 0 with its
	 * first VCPU, and the later ones count on from the same start.
	 */
	if (!vm->tsc_started) {
		vm->tsc_base = kvmp_rdtsc();
		vm->tsc_started = true;
	}
	kvmp_backend->set_tsc_offset(vcpu, -vm->tsc_base);
	kvmp_os_mutex_unlock(vm->lock);
	kvmp_vm_get(vm);
	*vcpup = vcpu;
	return 0;

unlock:
	kvmp_os_mutex_unlock(vm->lock);
	kvmp_backend->vcpu_free(vcpu);
free_fpu:
	kvmp_os_free_pages(vcpu->fpu, 1);
free_run:
	kvmp_os_free_pages(vcpu->run, KVMP_RUN_PAGES);
free_lock:
	kvmp_os_mutex_destroy(vcpu->lock);
free_vcpu:
	kvmp_os_free(vcpu);
	return r;
}

void kvmp_vcpu_destroy(struct kvmp_vcpu *vcpu)
{
	struct kvmp_vm *vm = vcpu->vm;
	int i;

	kvmp_os_mutex_lock(vm->lock);
	for (i = 0; i < vm->nr_vcpus; i++) {
		if (vm->vcpus[i] == vcpu) {
			kvmp_os_spin_lock(vm->mmu_lock);
			vm->vcpus[i] = vm->vcpus[--vm->nr_vcpus];
			kvmp_os_spin_unlock(vm->mmu_lock);
			break;
		}
	}
	kvmp_os_mutex_unlock(vm->lock);
	kvmp_backend->vcpu_free(vcpu);
	kvmp_os_free_pages(vcpu->fpu, 1);
	kvmp_os_free_pages(vcpu->run, KVMP_RUN_PAGES);
	kvmp_os_free(vcpu->cpuid);
	kvmp_os_mutex_destroy(vcpu->lock);
	kvmp_os_free(vcpu);
	kvmp_vm_put(vm);
}

u64 kvmp_vcpu_run_page_pa(struct kvmp_vcpu *vcpu, unsigned long pgoff)
{
	if (pgoff == KVMP_COALESCED_MMIO_PAGE_OFFSET)
		return vcpu->vm->ring_pa;	/* one ring for the whole VM */
	return pgoff < KVMP_RUN_PAGES ? vcpu->run_pa[pgoff] : 0;
}

static long kvmp_vcpu_get_msrs(struct kvmp_vcpu *vcpu, u64 uarg, bool set)
{
	struct kvmp_msrs hdr;
	struct kvmp_msr_entry *e;
	u64 uentries = uarg + sizeof(hdr);
	long r;
	u32 i;

	if (kvmp_os_copy_from_user(&hdr, uarg, sizeof(hdr)))
		return -KVMP_EFAULT;
	if (hdr.nmsrs >= KVMP_MAX_MSR_ENTRIES)
		return -KVMP_E2BIG;
	e = kvmp_os_zalloc(hdr.nmsrs * sizeof(*e) + 1);
	if (!e)
		return -KVMP_ENOMEM;
	r = -KVMP_EFAULT;
	if (kvmp_os_copy_from_user(e, uentries, hdr.nmsrs * sizeof(*e)))
		goto out;
	for (i = 0; i < hdr.nmsrs; i++) {
		if (set ? kvmp_host_set_msr(vcpu, e[i].index, e[i].data) :
			  kvmp_host_get_msr(vcpu, e[i].index, &e[i].data))
			break;
	}
	r = i;
	if (!set && kvmp_os_copy_to_user(uentries, e, i * sizeof(*e)))
		r = -KVMP_EFAULT;
out:
	kvmp_os_free(e);
	return r;
}

/*
 * Linux's kvm_check_cpuid: 0x80000008's virtual address width is 48, 57 or 0; and
 * 0xd.0 may not offer AMX tile data, a dynamic feature (Linux: EPERM without the
 * process's guest permission; kvmport has no AMX state at all).  The first entry of a
 * leaf counts, as Linux's cpuid_entry2_find.
 */
static int kvmp_cpuid_check(const struct kvmp_cpuid_entry2 *e, u32 nent)
{
	const struct kvmp_cpuid_entry2 *addr = NULL, *xsave = NULL;
	u32 i, vaddr_bits;

	for (i = 0; i < nent; i++) {
		if (!addr && e[i].function == 0x80000008)
			addr = &e[i];
		if (!xsave && e[i].function == 0xd &&
		    (!(e[i].flags & KVMP_CPUID_FLAG_SIGNIFCANT_INDEX) || !e[i].index))
			xsave = &e[i];
	}
	if (addr) {
		vaddr_bits = (addr->eax >> 8) & 0xff;
		if (vaddr_bits != 48 && vaddr_bits != 57 && vaddr_bits)
			return -KVMP_EINVAL;
	}
	if (xsave && (xsave->eax & KVMP_XFEATURE_XTILE_DATA))
		return -KVMP_EPERM;
	return 0;
}

/*
 * After the guest ran, Linux takes only the table it has (kvm_cpuid_check_equal:
 * QEMU sets it again on CPU hotplug), compared as the guest sees both.
 */
static bool kvmp_cpuid_unchanged(struct kvmp_vcpu *vcpu,
				 const struct kvmp_cpuid_entry2 *e, u32 nent)
{
	struct kvmp_cpuid_entry2 a, b;
	struct kvmp_sregs sregs;
	u32 i;

	if (nent != vcpu->cpuid_nent)
		return false;
	kvmp_backend->get_sregs(vcpu, &sregs);
	for (i = 0; i < nent; i++) {
		a = e[i];
		b = vcpu->cpuid[i];
		kvmp_cpuid_runtime(vcpu, sregs.cr4, &a);
		kvmp_cpuid_runtime(vcpu, sregs.cr4, &b);
		if (a.function != b.function || a.index != b.index ||
		    a.flags != b.flags || a.eax != b.eax || a.ebx != b.ebx ||
		    a.ecx != b.ecx || a.edx != b.edx)
			return false;
	}
	return true;
}

static long kvmp_vcpu_set_cpuid2(struct kvmp_vcpu *vcpu, u64 uarg)
{
	struct kvmp_cpuid2 hdr;
	struct kvmp_cpuid_entry2 *e;
	int r;

	if (kvmp_os_copy_from_user(&hdr, uarg, sizeof(hdr)))
		return -KVMP_EFAULT;
	if (hdr.nent > KVMP_MAX_CPUID_ENTRIES)
		return -KVMP_E2BIG;
	e = kvmp_os_zalloc(hdr.nent * sizeof(*e) + 1);
	if (!e)
		return -KVMP_ENOMEM;
	if (kvmp_os_copy_from_user(e, uarg + sizeof(hdr), hdr.nent * sizeof(*e))) {
		kvmp_os_free(e);
		return -KVMP_EFAULT;
	}
	if (vcpu->entered) {
		r = kvmp_cpuid_unchanged(vcpu, e, hdr.nent) ? 0 : -KVMP_EINVAL;
		kvmp_os_free(e);
		return r;
	}
	r = kvmp_cpuid_check(e, hdr.nent);
	if (r) {
		kvmp_os_free(e);
		return r;
	}
	kvmp_os_free(vcpu->cpuid);
	vcpu->cpuid = e;
	vcpu->cpuid_nent = hdr.nent;
	return 0;
}

static long kvmp_vcpu_get_cpuid2(struct kvmp_vcpu *vcpu, u64 uarg)
{
	struct kvmp_cpuid_entry2 *e;
	struct kvmp_sregs sregs;
	struct kvmp_cpuid2 hdr;
	u32 asked, i;
	long r;

	if (kvmp_os_copy_from_user(&hdr, uarg, sizeof(hdr)))
		return -KVMP_EFAULT;
	asked = hdr.nent;
	/*
	 * E2BIG leaves nent alone (Linux); a success writes the count, as Linux
	 * does since 6.x (6.1 left it as given: a VMM then knows what it set).
	 */
	if (asked < vcpu->cpuid_nent)
		return -KVMP_E2BIG;
	hdr.nent = vcpu->cpuid_nent;
	if (kvmp_os_copy_to_user(uarg, &hdr, sizeof(hdr)))
		return -KVMP_EFAULT;
	/* as the guest's CPUID answers it now (kvmp_cpuid_runtime) */
	e = kvmp_os_zalloc(vcpu->cpuid_nent * sizeof(*e) + 1);
	if (!e)
		return -KVMP_ENOMEM;
	kvmp_backend->get_sregs(vcpu, &sregs);
	for (i = 0; i < vcpu->cpuid_nent; i++) {
		e[i] = vcpu->cpuid[i];
		kvmp_cpuid_runtime(vcpu, sregs.cr4, &e[i]);
	}
	r = kvmp_os_copy_to_user(uarg + sizeof(hdr), e,
				 vcpu->cpuid_nent * sizeof(*e)) ? -KVMP_EFAULT : 0;
	kvmp_os_free(e);
	return r;
}

/* what KVM_SET_SREGS sets outside the backend: APIC base, CR8, a queued interrupt */
static void kvmp_set_sregs_common(struct kvmp_vcpu *vcpu,
				  const struct kvmp_sregs *s)
{
	int i;

	vcpu->apic_base = s->apic_base;
	if (s->cr8 <= 15)	/* Linux ignores a reserved one */
		vcpu->cr8 = s->cr8;
	for (i = 0; i < KVMP_NR_INTERRUPTS / 64; i++) {
		if (s->interrupt_bitmap[i]) {
			vcpu->pending_irq = i * 64 +
				__builtin_ctzll(s->interrupt_bitmap[i]);
			break;
		}
	}
}

/* GET/SET of a fixed-size register block: copy through a kernel buffer */
union kvmp_reg_block {
	struct kvmp_regs regs;
	struct kvmp_sregs sregs;
	struct kvmp_fpu fpu;
	struct kvmp_interrupt irq;
	struct kvmp_mp_state mp;
};

static long kvmp_vcpu_ioctl_locked(struct kvmp_vcpu *vcpu, unsigned int ioctl,
				   unsigned long arg)
{
	const struct kvmp_backend *be = kvmp_backend;
	union kvmp_reg_block *b;
	long r = 0;

	switch (ioctl) {
	case KVMP_RUN:
		return arg ? -KVMP_EINVAL : kvmp_vcpu_run(vcpu);
	case KVMP_GET_MSRS:
		return kvmp_vcpu_get_msrs(vcpu, arg, false);
	case KVMP_SET_MSRS:
		return kvmp_vcpu_get_msrs(vcpu, arg, true);
	case KVMP_SET_CPUID2:
		return kvmp_vcpu_set_cpuid2(vcpu, arg);
	case KVMP_GET_CPUID2:
		return kvmp_vcpu_get_cpuid2(vcpu, arg);
	case KVMP_NMI:
		vcpu->pending_nmi = true;
		return 0;
	case KVMP_GET_VCPU_EVENTS:
	case KVMP_SET_VCPU_EVENTS:
	case KVMP_GET_DEBUGREGS:
	case KVMP_SET_DEBUGREGS:
	case KVMP_GET_XSAVE:
	case KVMP_SET_XSAVE:
	case KVMP_GET_XCRS:
	case KVMP_SET_XCRS:
		return kvmp_vcpu_state_ioctl(vcpu, ioctl, arg);
	case KVMP_X86_SETUP_MCE: {
		u64 cap;

		if (kvmp_os_copy_from_user(&cap, arg, sizeof(cap)))
			return -KVMP_EFAULT;
		return kvmp_setup_mce(vcpu, cap);
	}
	}

	b = kvmp_os_zalloc(sizeof(*b));
	if (!b)
		return -KVMP_ENOMEM;
	switch (ioctl) {
	case KVMP_GET_REGS:
		be->get_regs(vcpu, &b->regs);
		r = kvmp_os_copy_to_user(arg, &b->regs, sizeof(b->regs));
		break;
	case KVMP_SET_REGS:
		r = kvmp_os_copy_from_user(&b->regs, arg, sizeof(b->regs));
		if (!r)
			be->set_regs(vcpu, &b->regs);
		break;
	case KVMP_GET_SREGS:
		be->get_sregs(vcpu, &b->sregs);
		if (vcpu->pending_irq >= 0)	/* as Linux reports it */
			b->sregs.interrupt_bitmap[vcpu->pending_irq / 64] |=
				1ULL << (vcpu->pending_irq % 64);
		r = kvmp_os_copy_to_user(arg, &b->sregs, sizeof(b->sregs));
		break;
	case KVMP_SET_SREGS:
		r = kvmp_os_copy_from_user(&b->sregs, arg, sizeof(b->sregs));
		if (!r)		/* what Linux refuses never reaches a backend */
			r = kvmp_check_sregs(vcpu, &b->sregs);
		if (!r)
			r = be->set_sregs(vcpu, &b->sregs);
		if (!r)
			kvmp_set_sregs_common(vcpu, &b->sregs);
		break;
	case KVMP_GET_FPU:
		kvmp_fpu_get(vcpu, &b->fpu);
		r = kvmp_os_copy_to_user(arg, &b->fpu, sizeof(b->fpu));
		break;
	case KVMP_SET_FPU:
		r = kvmp_os_copy_from_user(&b->fpu, arg, sizeof(b->fpu));
		if (!r)
			kvmp_fpu_set(vcpu, &b->fpu);
		break;
	case KVMP_INTERRUPT:
		r = kvmp_os_copy_from_user(&b->irq, arg, sizeof(b->irq));
		if (!r && b->irq.irq >= KVMP_NR_INTERRUPTS)
			r = -KVMP_EINVAL;
		if (!r) {
			vcpu->pending_irq = b->irq.irq;
			vcpu->last_irq = b->irq.irq;
		}
		break;
	case KVMP_GET_MP_STATE:
		b->mp.mp_state = KVMP_MP_STATE_RUNNABLE;	/* HLT exits to the VMM */
		r = kvmp_os_copy_to_user(arg, &b->mp, sizeof(b->mp));
		break;
	case KVMP_SET_MP_STATE:
		r = kvmp_os_copy_from_user(&b->mp, arg, sizeof(b->mp));
		/* with no in-kernel APIC only RUNNABLE means anything (as in Linux) */
		if (!r && b->mp.mp_state != KVMP_MP_STATE_RUNNABLE)
			r = -KVMP_EINVAL;
		break;
	default:
		r = -KVMP_EINVAL;
	}
	kvmp_os_free(b);
	return r;
}

long kvmp_vcpu_ioctl(struct kvmp_vcpu *vcpu, unsigned int ioctl,
		     unsigned long arg)
{
	long r;

	/* another thread may hold it through a long KVM_RUN: wait killably */
	if (kvmp_os_mutex_lock_killable(vcpu->lock))
		return -KVMP_EINTR;
	r = kvmp_vcpu_ioctl_locked(vcpu, ioctl, arg);
	kvmp_os_mutex_unlock(vcpu->lock);
	return r;
}
