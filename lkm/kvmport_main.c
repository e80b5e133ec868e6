// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * kvmport on Linux: module entry, the device node, and the VM and VCPU file
 * descriptors.  Every ioctl goes to the portable core (core/kvmp_main.c),
 * except the ones that make file descriptors or mappings, which only a port
 * can do.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/anon_inodes.h>
#include <linux/cpuhotplug.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/mmu_notifier.h>
#include <linux/mm.h>
#include <linux/mman.h>
#include <linux/module.h>
#include <linux/reboot.h>
#include <linux/refcount.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>
#include <linux/syscore_ops.h>

#include "kvmp_port.h"
#include "kvmp_os_linux.h"

static bool as_kvm;
module_param(as_kvm, bool, 0444);
MODULE_PARM_DESC(as_kvm,
		 "register as /dev/kvm (misc minor 232) so unmodified KVM tools use kvmport; fails if Linux's KVM is loaded");

/*
 * The process that made a VM owns it: its memory is what the slots point
 * into, so ioctls from another process are refused (EIO), as in Linux.
 * Its VM fd and each of its VCPUs hold a reference.
 */
struct kvmport_vm {
	refcount_t refs;
	struct kvmp_vm *vm;
	struct mm_struct *mm;
	struct mmu_notifier mn;	/* the guest follows the process's mappings */
};

struct kvmport_vcpu {
	struct kvmp_vcpu *vcpu;
	struct kvmport_vm *owner;
};

static bool kvmport_foreign(struct kvmport_vm *v)
{
	return current->mm != v->mm;
}

/* --- VMs and VCPUs, whichever ABI serves them ------------------------------ */
/*
 * The process's mappings change: the pages of [start, end) leave the guest
 * (KVM_CAP_SYNC_MMU).  The core never sleeps here, so every caller is fine.
 */
static int kvmport_mn_start(struct mmu_notifier *mn,
			    const struct mmu_notifier_range *range)
{
	struct kvmport_vm *v = container_of(mn, struct kvmport_vm, mn);

	kvmp_vm_mm_invalidate_start(v->vm, range->start, range->end);
	return 0;
}

static void kvmport_mn_end(struct mmu_notifier *mn,
			   const struct mmu_notifier_range *range)
{
	kvmp_vm_mm_invalidate_end(container_of(mn, struct kvmport_vm, mn)->vm);
}

/* the process exits (or the notifier goes): nothing of its memory stays */
static void kvmport_mn_release(struct mmu_notifier *mn, struct mm_struct *mm)
{
	struct kvmport_vm *v = container_of(mn, struct kvmport_vm, mn);

	kvmp_vm_mm_invalidate_start(v->vm, 0, ULONG_MAX);
	kvmp_vm_mm_invalidate_end(v->vm);
}

static const struct mmu_notifier_ops kvmport_mn_ops = {
	.invalidate_range_start = kvmport_mn_start,
	.invalidate_range_end = kvmport_mn_end,
	.release = kvmport_mn_release,
};

/* a VM of the calling process */
static long kvmport_vm_new(unsigned long type, struct kvmport_vm **vp)
{
	struct kvmport_vm *v;
	int r;

	v = kzalloc(sizeof(*v), GFP_KERNEL_ACCOUNT);
	if (!v)
		return -ENOMEM;
	r = kvmp_vm_create(type, &v->vm);
	if (r) {
		kfree(v);
		return r;
	}
	refcount_set(&v->refs, 1);
	mmgrab(current->mm);
	v->mm = current->mm;
	v->mn.ops = &kvmport_mn_ops;
	r = mmu_notifier_register(&v->mn, v->mm);
	if (r) {
		kvmp_vm_put(v->vm);
		mmdrop(v->mm);
		kfree(v);
		return r;
	}
	*vp = v;
	return 0;
}

static void kvmport_vm_put(struct kvmport_vm *v)
{
	if (!refcount_dec_and_test(&v->refs))
		return;
	/* every VCPU is gone (each held a reference); no callback runs after this */
	mmu_notifier_unregister(&v->mn, v->mm);
	kvmp_vm_put(v->vm);
	mmdrop(v->mm);
	kfree(v);
}

static long kvmport_vcpu_new(struct kvmport_vm *owner, unsigned long id,
			     struct kvmport_vcpu **vp)
{
	struct kvmport_vcpu *v;
	int r;

	v = kzalloc(sizeof(*v), GFP_KERNEL_ACCOUNT);
	if (!v)
		return -ENOMEM;
	r = kvmp_vcpu_create(owner->vm, id, &v->vcpu);
	if (r) {
		kfree(v);
		return r;
	}
	refcount_inc(&owner->refs);
	v->owner = owner;
	*vp = v;
	return 0;
}

static void kvmport_vcpu_free(struct kvmport_vcpu *v)
{
	kvmp_vcpu_destroy(v->vcpu);
	kvmport_vm_put(v->owner);
	kfree(v);
}

/*
 * The run area's pages, for a mapping of a VCPU fd (Linux ABI) or handle
 * (kext ABI); the mapping holds the file, so the VCPU outlives it.
 */
static vm_fault_t kvmport_run_area_fault(struct kvmport_vcpu *v,
					 struct vm_fault *vmf)
{
	u64 pa = kvmp_vcpu_run_page_pa(v->vcpu, vmf->pgoff);

	if (!pa)
		return VM_FAULT_SIGBUS;
	vmf->page = pfn_to_page(pa >> PAGE_SHIFT);
	get_page(vmf->page);
	return 0;
}

static int kvmport_run_area_mmap(struct vm_area_struct *vma,
				 const struct vm_operations_struct *ops)
{
	if (vma->vm_pgoff + vma_pages(vma) > KVMP_MMAP_PAGES)
		return -EINVAL;
	vma->vm_ops = ops;
	return 0;
}

/* KVMP_MMAP_VCPU: the same mapping mmap() gives, made on the caller's behalf */
static long kvmport_mmap_vcpu(struct file *file, unsigned long arg)
{
	struct kvmp_mmap_vcpu req;
	unsigned long addr;

	if (copy_from_user(&req, (void __user *)arg, sizeof(req)))
		return -EFAULT;
	if (req.flags)
		return -EINVAL;
	addr = vm_mmap(file, 0, KVMP_MMAP_PAGES * PAGE_SIZE,
		       PROT_READ | PROT_WRITE, MAP_SHARED, 0);
	if (IS_ERR_VALUE(addr))
		return (long)addr;
	req.addr = addr;
	req.size = KVMP_MMAP_PAGES * PAGE_SIZE;
	if (copy_to_user((void __user *)arg, &req, sizeof(req))) {
		vm_munmap(addr, req.size);
		return -EFAULT;
	}
	return 0;
}

static long kvmport_vcpu_call(struct file *file, struct kvmport_vcpu *v,
			      unsigned int ioctl, unsigned long arg)
{
	if (kvmport_foreign(v->owner))
		return -EIO;
	if (ioctl == KVMP_MMAP_VCPU)
		return kvmport_mmap_vcpu(file, arg);
	return kvmp_vcpu_ioctl(v->vcpu, ioctl, arg);
}

/* --- VCPU fds -------------------------------------------------------------- */
static vm_fault_t kvmport_vcpu_fault(struct vm_fault *vmf)
{
	return kvmport_run_area_fault(vmf->vma->vm_file->private_data, vmf);
}

static const struct vm_operations_struct kvmport_vcpu_vm_ops = {
	.fault = kvmport_vcpu_fault,
};

static int kvmport_vcpu_mmap(struct file *file, struct vm_area_struct *vma)
{
	return kvmport_run_area_mmap(vma, &kvmport_vcpu_vm_ops);
}

static long kvmport_vcpu_ioctl(struct file *file, unsigned int ioctl,
			       unsigned long arg)
{
	return kvmport_vcpu_call(file, file->private_data, ioctl, arg);
}

static int kvmport_vcpu_release(struct inode *inode, struct file *file)
{
	kvmport_vcpu_free(file->private_data);
	return 0;
}

static const struct file_operations kvmport_vcpu_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = kvmport_vcpu_ioctl,
	.mmap = kvmport_vcpu_mmap,
	.release = kvmport_vcpu_release,
	.llseek = noop_llseek,
};

/* --- VM fds ------------------------------------------------------------------ */
static long kvmport_create_vcpu(struct kvmport_vm *owner, unsigned long id)
{
	struct kvmport_vcpu *v;
	long r;
	int fd;

	r = kvmport_vcpu_new(owner, id, &v);
	if (r)
		return r;
	fd = anon_inode_getfd("kvmport-vcpu", &kvmport_vcpu_fops, v,
			      O_RDWR | O_CLOEXEC);
	if (fd < 0)
		kvmport_vcpu_free(v);
	return fd;
}

static long kvmport_vm_ioctl(struct file *file, unsigned int ioctl,
			     unsigned long arg)
{
	struct kvmport_vm *v = file->private_data;

	if (kvmport_foreign(v))
		return -EIO;
	if (ioctl == KVMP_CREATE_VCPU)
		return kvmport_create_vcpu(v, arg);
	return kvmp_vm_ioctl(v->vm, ioctl, arg);
}

static int kvmport_vm_release(struct inode *inode, struct file *file)
{
	kvmport_vm_put(file->private_data);
	return 0;
}

static const struct file_operations kvmport_vm_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = kvmport_vm_ioctl,
	.release = kvmport_vm_release,
	.llseek = noop_llseek,
};

static long kvmport_create_vm(unsigned long type)
{
	struct kvmport_vm *v;
	long r;
	int fd;

	r = kvmport_vm_new(type, &v);
	if (r)
		return r;
	fd = anon_inode_getfd("kvmport-vm", &kvmport_vm_fops, v,
			      O_RDWR | O_CLOEXEC);
	if (fd < 0)
		kvmport_vm_put(v);
	return fd;
}

/* --- the kext ABI's node: handles instead of file descriptors -------------- */
static long kvmport_kext_vm_create(void *ctx, unsigned long type, void **vm)
{
	return kvmport_vm_new(type, (struct kvmport_vm **)vm);
}

static long kvmport_kext_vcpu_create(void *ctx, void *vm, unsigned long id,
				     void **vcpu)
{
	return kvmport_vcpu_new(vm, id, (struct kvmport_vcpu **)vcpu);
}

static long kvmport_kext_vm_ioctl(void *ctx, void *vm, unsigned int ioctl,
				  unsigned long arg)
{
	return kvmp_vm_ioctl(((struct kvmport_vm *)vm)->vm, ioctl, arg);
}

static long kvmport_kext_vcpu_ioctl(void *ctx, void *vcpu, unsigned int ioctl,
				    unsigned long arg)
{
	return kvmport_vcpu_call(ctx, vcpu, ioctl, arg);
}

static void kvmport_kext_vm_put(void *vm)
{
	kvmport_vm_put(vm);
}

static void kvmport_kext_vcpu_put(void *vcpu)
{
	kvmport_vcpu_free(vcpu);
}

static const struct kvmp_kext_port kvmport_kext_port = {
	.vm_create = kvmport_kext_vm_create,
	.vcpu_create = kvmport_kext_vcpu_create,
	.vm_ioctl = kvmport_kext_vm_ioctl,
	.vcpu_ioctl = kvmport_kext_vcpu_ioctl,
	.vm_put = kvmport_kext_vm_put,
	.vcpu_put = kvmport_kext_vcpu_put,
};

static int kvmport_kext_open(struct inode *inode, struct file *file)
{
	struct kvmp_kext_handle *h = kzalloc(sizeof(*h), GFP_KERNEL_ACCOUNT);

	if (!h)
		return -ENOMEM;
	kvmp_kext_open(h);
	file->private_data = h;
	return 0;
}

static int kvmport_kext_release(struct inode *inode, struct file *file)
{
	kvmp_kext_close(file->private_data);
	kfree(file->private_data);
	return 0;
}

/* the process is the caller's address space, as for the Linux ABI's fds */
static long kvmport_kext_ioctl(struct file *file, unsigned int ioctl,
			       unsigned long arg)
{
	return kvmp_kext_ioctl(file->private_data, file,
			       (u64)(uintptr_t)current->mm, ioctl, arg);
}

static vm_fault_t kvmport_kext_fault(struct vm_fault *vmf)
{
	struct kvmport_vcpu *v = kvmp_kext_vcpu_of(vmf->vma->vm_file->private_data);

	return v ? kvmport_run_area_fault(v, vmf) : VM_FAULT_SIGBUS;
}

static const struct vm_operations_struct kvmport_kext_vm_ops = {
	.fault = kvmport_kext_fault,
};

/* what KVMP_MMAP_VCPU maps, on a VCPU handle only (XNU has no device mmap) */
static int kvmport_kext_mmap(struct file *file, struct vm_area_struct *vma)
{
	if (!kvmp_kext_vcpu_of(file->private_data))
		return -ENODEV;
	return kvmport_run_area_mmap(vma, &kvmport_kext_vm_ops);
}

static const struct file_operations kvmport_kext_fops = {
	.owner = THIS_MODULE,
	.open = kvmport_kext_open,
	.release = kvmport_kext_release,
	.unlocked_ioctl = kvmport_kext_ioctl,
	.mmap = kvmport_kext_mmap,
	.llseek = noop_llseek,
};

static struct miscdevice kvmport_kext_dev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "kvmport-kext",
	.fops = &kvmport_kext_fops,
	.mode = 0660,
};

/* --- the device ---------------------------------------------------------------- */
static long kvmport_dev_ioctl(struct file *file, unsigned int ioctl,
			      unsigned long arg)
{
	if (ioctl == KVMP_CREATE_VM)
		return kvmport_create_vm(arg);
	return kvmp_system_ioctl(ioctl, arg);
}

static const struct file_operations kvmport_dev_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = kvmport_dev_ioctl,
	.llseek = noop_llseek,
};

/* both x86 backends; the CPU's vendor decides which one sets up */
const struct kvmp_backend *const kvmp_backends[] = {
	&kvmp_vmx_backend,
	&kvmp_svm_backend,
};
const unsigned int kvmp_nr_backends = ARRAY_SIZE(kvmp_backends);

static struct miscdevice kvmport_dev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "kvmport",
	.fops = &kvmport_dev_fops,
	.mode = 0660,
};

/*
 * CPU hotplug, suspend and reboot: a CPU that comes online while VMs exist
 * gets virtualization on before the scheduler may run a VCPU there, and
 * one that goes offline (or the machine, at suspend and reboot) gets it off.
 */
static enum cpuhp_state kvmport_cpuhp;

static int kvmport_cpu_online(unsigned int cpu)
{
	return kvmp_cpu_online();
}

static int kvmport_cpu_offline(unsigned int cpu)
{
	kvmp_cpu_offline();
	return 0;
}

static int kvmport_suspend(void)
{
	kvmp_cpu_offline();	/* the last CPU, interrupts off */
	return 0;
}

static void kvmport_resume(void)
{
	if (kvmp_cpu_online())
		pr_err("virtualization did not come back on after resume\n");
}

static struct syscore_ops kvmport_syscore = {
	.suspend = kvmport_suspend,
	.resume = kvmport_resume,
};

static int kvmport_reboot(struct notifier_block *nb, unsigned long code,
			  void *unused)
{
	kvmp_reboot();
	return NOTIFY_OK;
}

static struct notifier_block kvmport_reboot_nb = {
	.notifier_call = kvmport_reboot,
};

static int kvmport_power_hooks(void)
{
	int r = cpuhp_setup_state_nocalls(CPUHP_AP_ONLINE_DYN, "kvmport:online",
					  kvmport_cpu_online,
					  kvmport_cpu_offline);

	if (r < 0)
		return r;
	kvmport_cpuhp = r;
	register_syscore_ops(&kvmport_syscore);
	register_reboot_notifier(&kvmport_reboot_nb);
	return 0;
}

static void kvmport_power_unhook(void)
{
	unregister_reboot_notifier(&kvmport_reboot_nb);
	unregister_syscore_ops(&kvmport_syscore);
	cpuhp_remove_state_nocalls(kvmport_cpuhp);
}

static int __init kvmport_init(void)
{
	int r;

	r = kvmp_core_init();
	if (r)
		return r;
	r = kvmp_kext_init(&kvmport_kext_port);
	if (r)
		goto fail_core;
	r = kvmport_power_hooks();
	if (r)
		goto fail_kext;
	if (as_kvm) {
		kvmport_dev.minor = 232;	/* KVM_MINOR */
		kvmport_dev.name = "kvm";
	}
	r = misc_register(&kvmport_dev);
	if (r) {
		pr_err("cannot register /dev/%s: %d%s\n", kvmport_dev.name, r,
		       as_kvm ? " (is Linux's kvm module loaded?)" : "");
		goto fail_power;
	}
	r = misc_register(&kvmport_kext_dev);
	if (r) {
		pr_err("cannot register /dev/%s: %d\n", kvmport_kext_dev.name, r);
		goto fail_dev;
	}
	pr_info("loaded, API version %d, devices /dev/%s and /dev/%s (kext ABI)\n",
		KVMP_API_VERSION, kvmport_dev.name, kvmport_kext_dev.name);
	return 0;

fail_dev:
	misc_deregister(&kvmport_dev);
fail_power:
	kvmport_power_unhook();
fail_kext:
	kvmp_kext_exit();
fail_core:
	kvmp_core_exit();
	return r;
}

static void __exit kvmport_exit(void)
{
	misc_deregister(&kvmport_kext_dev);
	misc_deregister(&kvmport_dev);
	kvmport_power_unhook();
	kvmp_kext_exit();
	kvmp_core_exit();
	kvmp_os_report_leaks();
	pr_info("unloaded\n");
}

module_init(kvmport_init);
module_exit(kvmport_exit);

MODULE_DESCRIPTION("kvmport: portable KVM-compatible hypervisor driver");
MODULE_LICENSE("Dual MIT/GPL");
