// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * The OS contract (core/kvmp_os.h) on Linux.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/capability.h>
#include <linux/cpu.h>
#include <linux/gfp.h>
#include <linux/hugetlb.h>
#include <linux/io.h>
#include <linux/mm.h>
#include <linux/mutex.h>
#include <linux/preempt.h>
#include <linux/printk.h>
#include <linux/sched.h>
#include <linux/sched/mm.h>
#include <linux/sched/signal.h>
#include <linux/shmem_fs.h>
#include <linux/slab.h>
#include <linux/smp.h>
#include <linux/spinlock.h>
#include <linux/string.h>
#include <linux/uaccess.h>
#include <asm/desc.h>
#include <asm/fpu/api.h>
#include <asm/tlbflush.h>

#include "kvmp_os.h"
#include "kvmp_os_linux.h"

/*
 * What the core holds right now; at unload every count must be zero, and the
 * module says so in the kernel log (tests read it: no kmemleak needed).
 */
static atomic_long_t kvmp_allocations, kvmp_page_blocks, kvmp_pins;

void kvmp_os_report_leaks(void)
{
	long a = atomic_long_read(&kvmp_allocations);
	long p = atomic_long_read(&kvmp_page_blocks);
	long u = atomic_long_read(&kvmp_pins);

	if (a || p || u)
		pr_warn("leak: %ld allocations, %ld page blocks, %ld pinned user pages still held\n",
			a, p, u);
	else
		pr_info("no leaks: every allocation and pinned page was released\n");
}

void *kvmp_os_zalloc(unsigned long size)
{
	/* sizes may come from a user (slot tables): fail quietly, never WARN */
	void *p = kvzalloc(size, GFP_KERNEL_ACCOUNT | __GFP_NOWARN);

	if (p)
		atomic_long_inc(&kvmp_allocations);
	return p;
}

void kvmp_os_free(void *p)
{
	if (p)
		atomic_long_dec(&kvmp_allocations);
	kvfree(p);
}

void *kvmp_os_alloc_pages(unsigned int npages, u64 *pa)
{
	void *va = alloc_pages_exact(npages * PAGE_SIZE,
				     GFP_KERNEL_ACCOUNT | __GFP_ZERO);

	if (va) {
		*pa = virt_to_phys(va);
		atomic_long_inc(&kvmp_page_blocks);
	}
	return va;
}

void kvmp_os_free_pages(void *va, unsigned int npages)
{
	if (va)
		atomic_long_dec(&kvmp_page_blocks);
	free_pages_exact(va, npages * PAGE_SIZE);
}

/* the VM's handle on its creator's memory is the mm itself, grabbed */
struct kvmp_os_mm *kvmp_os_mm_get(void)
{
	struct mm_struct *mm = current->mm;

	if (!mm)
		return NULL;
	mmgrab(mm);
	return (struct kvmp_os_mm *)mm;
}

void kvmp_os_mm_put(struct kvmp_os_mm *mm)
{
	mmdrop((struct mm_struct *)mm);
}

/*
 * Guest pages stay pinned for as long as the guest uses them, which is
 * what RLIMIT_MEMLOCK bounds for every long-term pinner: charged to the
 * mm's pinned_vm (VmPin in /proc/PID/status) as RDMA's umem does, without
 * the mmap lock (unpinning may run inside the MMU notifier), and refused
 * past the limit unless the caller has CAP_IPC_LOCK.  Linux's KVM holds no
 * pins, so it needs no such limit: docs/driver.md, "Security".
 */
static int kvmp_charge_pin(struct mm_struct *mm)
{
	u64 limit = rlimit(RLIMIT_MEMLOCK) >> PAGE_SHIFT;

	if (atomic64_add_return(1, &mm->pinned_vm) > limit &&
	    !capable(CAP_IPC_LOCK)) {
		atomic64_dec(&mm->pinned_vm);
		return -ENOMEM;
	}
	return 0;
}

/*
 * A long-term pin of page cache whose filesystem tracks dirty pages lets
 * writes reach the page behind the filesystem's back (newer kernels' GUP
 * refuses FOLL_LONGTERM writes to such mappings; 6.1's io_uring refuses
 * them for its pinned buffers): only anonymous, shmem (memfd, tmpfs,
 * shared anonymous) and hugetlbfs memory is kept.
 */
static bool kvmp_longterm_pinnable(struct page *page)
{
	struct address_space *mapping;

	if (PageAnon(page) || PageHuge(page))
		return true;
	mapping = page_mapping(page);
	return mapping && mapping->a_ops == &shmem_aops;
}

/* the handle is the struct page itself */
int kvmp_os_pin_user_page(struct kvmp_os_mm *os_mm, u64 uaddr, bool write,
			  struct kvmp_os_pin **pin, u64 *pa)
{
	struct mm_struct *mm = (struct mm_struct *)os_mm;
	struct page *page;
	int n;

	if (mm != current->mm)	/* the port refuses other processes' ioctls */
		return -EFAULT;
	n = kvmp_charge_pin(mm);
	if (n)
		return n;
	n = pin_user_pages_fast(uaddr, 1, (write ? FOLL_WRITE : 0) | FOLL_LONGTERM,
				&page);
	if (n == 1 && !kvmp_longterm_pinnable(page)) {
		unpin_user_page(page);
		n = -EFAULT;
	}
	if (n != 1) {
		atomic64_dec(&mm->pinned_vm);
		return n < 0 ? n : -EFAULT;
	}
	*pin = (struct kvmp_os_pin *)page;
	*pa = page_to_phys(page);
	atomic_long_inc(&kvmp_pins);
	return 0;
}

/*
 * May run inside an MMU notifier (never sleeps), whose caller may hold this
 * page's lock: mark it dirty without the lock, as Linux's KVM does.
 */
void kvmp_os_unpin_user_page(struct kvmp_os_mm *mm, struct kvmp_os_pin *pin,
			     bool dirty)
{
	struct page *page = (struct page *)pin;

	if (dirty)
		SetPageDirty(page);
	unpin_user_page(page);
	atomic64_dec(&((struct mm_struct *)mm)->pinned_vm);
	atomic_long_dec(&kvmp_pins);
}

const bool kvmp_os_mm_notifier = true;	/* lkm/kvmport_main.c: one a VM */

int kvmp_os_copy_from_user(void *dst, u64 usrc, unsigned long n)
{
	return copy_from_user(dst, u64_to_user_ptr(usrc), n) ? -EFAULT : 0;
}

int kvmp_os_copy_to_user(u64 udst, const void *src, unsigned long n)
{
	return copy_to_user(u64_to_user_ptr(udst), src, n) ? -EFAULT : 0;
}

struct kvmp_os_mutex {
	struct mutex m;
};

/* a lockdep class per role: mutex_init alone would make them all one class */
static struct lock_class_key kvmp_mutex_keys[KVMP_LOCK_ROLES];
static const char *const kvmp_mutex_names[KVMP_LOCK_ROLES] = {
	[KVMP_LOCK_GLOBAL] = "kvmport_global",
	[KVMP_LOCK_VM] = "kvmport_vm",
	[KVMP_LOCK_VCPU] = "kvmport_vcpu",
	[KVMP_LOCK_KEXT] = "kvmport_kext",
};

struct kvmp_os_mutex *kvmp_os_mutex_create(enum kvmp_lock_role role)
{
	struct kvmp_os_mutex *m = kmalloc(sizeof(*m), GFP_KERNEL);

	if (!m)
		return NULL;
	mutex_init(&m->m);
	lockdep_set_class_and_name(&m->m, &kvmp_mutex_keys[role],
				   kvmp_mutex_names[role]);
	return m;
}

void kvmp_os_mutex_destroy(struct kvmp_os_mutex *m)
{
	if (m)
		mutex_destroy(&m->m);
	kfree(m);
}

void kvmp_os_mutex_lock(struct kvmp_os_mutex *m)
{
	mutex_lock(&m->m);
}

int kvmp_os_mutex_lock_killable(struct kvmp_os_mutex *m)
{
	return mutex_lock_killable(&m->m) ? -KVMP_EINTR : 0;
}

void kvmp_os_mutex_unlock(struct kvmp_os_mutex *m)
{
	mutex_unlock(&m->m);
}

struct kvmp_os_spinlock {
	spinlock_t l;
};

struct kvmp_os_spinlock *kvmp_os_spinlock_create(void)
{
	struct kvmp_os_spinlock *l = kmalloc(sizeof(*l), GFP_KERNEL);

	if (l)
		spin_lock_init(&l->l);
	return l;
}

void kvmp_os_spinlock_destroy(struct kvmp_os_spinlock *l)
{
	kfree(l);
}

void kvmp_os_spin_lock(struct kvmp_os_spinlock *l)
{
	spin_lock(&l->l);
}

void kvmp_os_spin_unlock(struct kvmp_os_spinlock *l)
{
	spin_unlock(&l->l);
}

int kvmp_os_cpu(void)
{
	return smp_processor_id();
}

int kvmp_os_cpu_count(void)
{
	return nr_cpu_ids;
}

void kvmp_os_cpus_lock(void)
{
	cpus_read_lock();
}

void kvmp_os_cpus_unlock(void)
{
	cpus_read_unlock();
}

void kvmp_os_irq_enable(void)
{
	local_irq_enable();
}

void kvmp_os_irq_disable(void)
{
	local_irq_disable();
}

struct kvmp_each_cpu {
	int (*fn)(void *arg);
	void *arg;
	atomic_t error;
};

static void kvmp_each_cpu_call(void *data)
{
	struct kvmp_each_cpu *e = data;
	int r = e->fn(e->arg);

	if (r)
		atomic_cmpxchg(&e->error, 0, r);
}

int kvmp_os_on_each_cpu(int (*fn)(void *arg), void *arg)
{
	struct kvmp_each_cpu e = { .fn = fn, .arg = arg, .error = ATOMIC_INIT(0) };

	on_each_cpu(kvmp_each_cpu_call, &e, 1);
	return atomic_read(&e.error);
}

void kvmp_os_cr4_update(u64 set, u64 clear)
{
	unsigned long flags;

	local_irq_save(flags);
	cr4_update_irqsoff(set, clear);
	local_irq_restore(flags);
}

void kvmp_os_tss_limit_lost(void)
{
	invalidate_tss_limit();
}

int kvmp_os_on_cpu(int cpu, int (*fn)(void *arg), void *arg)
{
	struct kvmp_each_cpu e = { .fn = fn, .arg = arg, .error = ATOMIC_INIT(0) };
	int r = smp_call_function_single(cpu, kvmp_each_cpu_call, &e, 1);

	return r ? r : atomic_read(&e.error);
}

void kvmp_os_fpu_begin(void)
{
	kernel_fpu_begin();
}

void kvmp_os_fpu_end(void)
{
	kernel_fpu_end();
}

bool kvmp_os_signal_pending(void)
{
	return signal_pending(current);
}

void kvmp_os_cond_resched(void)
{
	cond_resched();
}

void kvmp_os_log(int level, const char *fmt, ...)
{
	struct va_format vaf;
	va_list args;

	va_start(args, fmt);
	vaf.fmt = fmt;
	vaf.va = &args;
	switch (level) {
	case KVMP_LOG_ERR:
		pr_err("%pV", &vaf);
		break;
	case KVMP_LOG_WARN:
		pr_warn("%pV", &vaf);
		break;
	case KVMP_LOG_INFO:
		pr_info("%pV", &vaf);
		break;
	default:
		pr_debug("%pV", &vaf);
	}
	va_end(args);
}

void *kvmp_os_memset(void *p, int c, unsigned long n)
{
	return memset(p, c, n);
}

void *kvmp_os_memcpy(void *dst, const void *src, unsigned long n)
{
	return memcpy(dst, src, n);
}
