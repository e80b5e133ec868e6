// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * The OS contract (core/kvmp_os.h) on XNU, on public KPIs only
 * (com.apple.kpi.bsd, .iokit, .libkern, .mach; .unsupported where XNU has
 * nothing public: mp_rendezvous, cpu_number, real_ncpus).  docs/kext.md
 * lists every KPI and why.
 */
#include <sys/types.h>
#include <sys/param.h>
#include <sys/proc.h>
#include <sys/signal.h>
#include <kern/sched_prim.h>
#include <libkern/copyio.h>
#include <i386/machine_routines.h>
#include <IOKit/IOLib.h>
#include <IOKit/IOLocks.h>
#include <stdarg.h>

#include "kvmp_os.h"
#include "kvmp_os_darwin.h"

/* what the core holds right now; reported at unload as on Linux */
static long kvmp_allocations, kvmp_page_blocks, kvmp_pins;

static void kvmp_count(long *c, long d)
{
	__atomic_fetch_add(c, d, __ATOMIC_RELAXED);
}

void kvmp_os_report_leaks(void)
{
	long a = __atomic_load_n(&kvmp_allocations, __ATOMIC_RELAXED);
	long p = __atomic_load_n(&kvmp_page_blocks, __ATOMIC_RELAXED);
	long u = __atomic_load_n(&kvmp_pins, __ATOMIC_RELAXED);

	if (a || p || u)
		IOLog("kvmport: leak: %ld allocations, %ld page blocks, %ld pinned user pages still held\n",
		      a, p, u);
	else
		IOLog("kvmport: no leaks: every allocation and pinned page was released\n");
}

/* --- memory ------------------------------------------------------------------ */
/*
 * IOFree needs the size IOMalloc was given; the contract's free has none, so
 * it lives in a header in front of the block (16 bytes keep the alignment).
 */
#define KVMP_ALLOC_HDR	16UL

void *kvmp_os_zalloc(unsigned long size)
{
	unsigned long total = size + KVMP_ALLOC_HDR;
	unsigned long *p;

	if (total < size)	/* sizes may come from a user */
		return NULL;
	p = IOMalloc(total);
	if (!p)
		return NULL;
	memset(p, 0, total);
	p[0] = total;
	kvmp_count(&kvmp_allocations, 1);
	return (char *)p + KVMP_ALLOC_HDR;
}

void kvmp_os_free(void *q)
{
	unsigned long *p;

	if (!q)
		return;
	p = (unsigned long *)((char *)q - KVMP_ALLOC_HDR);
	kvmp_count(&kvmp_allocations, -1);
	IOFree(p, p[0]);
}

/* physically contiguous pages: IOBufferMemoryDescriptor, kvmp_os_iokit.cpp */
void *kvmp_os_alloc_pages(unsigned int npages, u64 *pa)
{
	void *va = kvmp_os_iokit_alloc_contig((unsigned long)npages * KVMP_PAGE_SIZE, pa);

	if (va)
		kvmp_count(&kvmp_page_blocks, 1);
	return va;
}

void kvmp_os_free_pages(void *va, unsigned int npages)
{
	if (!va)
		return;
	kvmp_count(&kvmp_page_blocks, -1);
	kvmp_os_iokit_free_contig(va);
}

/* --- user memory ------------------------------------------------------------- */
/*
 * XNU's KPI has no per-process count of kernel-wired user pages to charge
 * (IOMemoryDescriptor::prepare wires for the kernel, outside the task's
 * RLIMIT_MEMLOCK): the handle is only a token, and the kext's pins are not
 * limited (docs/driver.md, "Security").
 */
static char kvmp_darwin_mm;

struct kvmp_os_mm *kvmp_os_mm_get(void)
{
	return (struct kvmp_os_mm *)&kvmp_darwin_mm;
}

void kvmp_os_mm_put(struct kvmp_os_mm *mm)
{
	(void)mm;
}

int kvmp_os_pin_user_page(struct kvmp_os_mm *mm, u64 uaddr, bool write,
			  struct kvmp_os_pin **pin, u64 *pa)
{
	unsigned long long phys;
	void *md;
	int r;

	(void)mm;
	r = kvmp_os_iokit_wire(uaddr, write, &md, &phys);
	if (r)
		return r;
	*pin = (struct kvmp_os_pin *)md;
	*pa = phys;
	kvmp_count(&kvmp_pins, 1);
	return 0;
}

/* prepare() wired it for the direction asked: complete() dirties as needed */
void kvmp_os_unpin_user_page(struct kvmp_os_mm *mm, struct kvmp_os_pin *pin,
			     bool dirty)
{
	(void)mm;
	(void)dirty;
	kvmp_os_iokit_unwire(pin);
	kvmp_count(&kvmp_pins, -1);
}

/* no MMU notifier on XNU: wired pages stay in the guest until the slot goes */
const bool kvmp_os_mm_notifier;

int kvmp_os_copy_from_user(void *dst, u64 usrc, unsigned long n)
{
	return copyin((user_addr_t)usrc, dst, n) ? -KVMP_EFAULT : 0;
}

int kvmp_os_copy_to_user(u64 udst, const void *src, unsigned long n)
{
	return copyout(src, (user_addr_t)udst, n) ? -KVMP_EFAULT : 0;
}

/* --- locks ------------------------------------------------------------------- */
/*
 * IOLock is XNU's lck_mtx_t under IOKit's KPI, which also declares the
 * try-lock the killable wait needs (the Kernel.framework headers declare
 * no lck_mtx_try_lock).
 */
struct kvmp_os_mutex {
	IOLock *m;
};

/* XNU has no lock-order checker to tell the roles to */
struct kvmp_os_mutex *kvmp_os_mutex_create(enum kvmp_lock_role role)
{
	struct kvmp_os_mutex *m = IOMalloc(sizeof(*m));

	if (!m)
		return NULL;
	m->m = IOLockAlloc();
	if (!m->m) {
		IOFree(m, sizeof(*m));
		return NULL;
	}
	return m;
}

void kvmp_os_mutex_destroy(struct kvmp_os_mutex *m)
{
	if (!m)
		return;
	IOLockFree(m->m);
	IOFree(m, sizeof(*m));
}

void kvmp_os_mutex_lock(struct kvmp_os_mutex *m)
{
	IOLockLock(m->m);
}

/*
 * XNU's mutex waits cannot be interrupted.  Wait in short sleeps instead, so
 * a fatal signal (SIGKILL) still ends the wait, as mutex_lock_killable does.
 */
int kvmp_os_mutex_lock_killable(struct kvmp_os_mutex *m)
{
	while (!IOLockTryLock(m->m)) {
		if (proc_issignal(proc_selfpid(), sigmask(SIGKILL)))
			return -KVMP_EINTR;
		IOSleep(1);
	}
	return 0;
}

void kvmp_os_mutex_unlock(struct kvmp_os_mutex *m)
{
	IOLockUnlock(m->m);
}

struct kvmp_os_spinlock {
	IOSimpleLock *l;
};

struct kvmp_os_spinlock *kvmp_os_spinlock_create(void)
{
	struct kvmp_os_spinlock *l = IOMalloc(sizeof(*l));

	if (!l)
		return NULL;
	l->l = IOSimpleLockAlloc();
	if (!l->l) {
		IOFree(l, sizeof(*l));
		return NULL;
	}
	return l;
}

void kvmp_os_spinlock_destroy(struct kvmp_os_spinlock *l)
{
	if (!l)
		return;
	IOSimpleLockFree(l->l);
	IOFree(l, sizeof(*l));
}

void kvmp_os_spin_lock(struct kvmp_os_spinlock *l)
{
	IOSimpleLockLock(l->l);
}

void kvmp_os_spin_unlock(struct kvmp_os_spinlock *l)
{
	IOSimpleLockUnlock(l->l);
}

/* --- CPUs, preemption, interrupts ------------------------------------------ */
/*
 * XNU exports no preemption control to kexts (disable_preemption is
 * private): a thread with interrupts off is neither preempted nor moved, so
 * "preemption off" is "interrupts off" here, nested per CPU.
 *
 * Nor does XNU export a kernel-FPU call.  Between fpu_begin and fpu_end
 * interrupts stay off, so nothing else runs on this CPU: fpu_begin saves the
 * registers (the calling thread's user state, which XNU keeps live in them
 * while the thread is in the kernel) with XSAVE into this CPU's area, the
 * core's own XRSTOR/XSAVE (core/kvmp_fpu.c) swap the guest's in and out, and
 * fpu_end restores the thread's before interrupts come back.  The core's
 * kvmp_os_irq_enable inside that window is therefore a no-op: the host
 * interrupt that caused a VM exit stays pending in the local APIC and is
 * taken when fpu_end restores the interrupt flag.  VMX exits on external
 * interrupts whatever the host's IF is, so it runs this way; SVM's VMRUN
 * needs IF=1 to see them, which is why the Darwin build lists VMX only
 * (kvmport_main.c).
 */
struct kvmp_darwin_cpu {
	unsigned int preempt_depth;
	boolean_t preempt_if;	/* the interrupt flag before the first disable */
	bool in_fpu;
	u8 *xsave;		/* 64-byte aligned, kvmp_host_xsave_size bytes */
};

static struct kvmp_darwin_cpu *kvmp_cpus;
static unsigned int kvmp_ncpus;
static u64 kvmp_host_rfbm;	/* XCR0 at load: what XSAVE saves; 0 = FXSAVE */
static unsigned long kvmp_host_xsave_size;

static struct kvmp_darwin_cpu *kvmp_this_cpu(void)
{
	return &kvmp_cpus[cpu_number()];
}

int kvmp_os_cpu(void)
{
	return cpu_number();
}

int kvmp_os_cpu_count(void)
{
	return (int)real_ncpus;
}

/* kexts see no CPU hotplug on XNU: nothing to hold still */
void kvmp_os_cpus_lock(void)
{
}

void kvmp_os_cpus_unlock(void)
{
}

/* XNU exports no preemption control to kexts: interrupts off stand in for it */
static void kvmp_darwin_preempt_disable(void)
{
	boolean_t was = ml_set_interrupts_enabled(FALSE);
	struct kvmp_darwin_cpu *c = kvmp_this_cpu();

	if (c->preempt_depth++ == 0)
		c->preempt_if = was;
}

static void kvmp_darwin_preempt_enable(void)
{
	struct kvmp_darwin_cpu *c = kvmp_this_cpu();

	if (--c->preempt_depth == 0)
		ml_set_interrupts_enabled(c->preempt_if);
}

void kvmp_os_irq_enable(void)
{
	/* with interrupts off this thread stays on this CPU */
	if (ml_get_interrupts_enabled() || kvmp_this_cpu()->in_fpu)
		return;
	ml_set_interrupts_enabled(TRUE);
}

void kvmp_os_irq_disable(void)
{
	ml_set_interrupts_enabled(FALSE);
}

struct kvmp_each_cpu {
	int (*fn)(void *arg);
	void *arg;
	int cpu;		/* -1: every CPU */
	int error;		/* the first failure; atomics only */
};

/* mp_rendezvous runs this on every CPU at once, interrupts off */
static void kvmp_each_cpu_call(void *data)
{
	struct kvmp_each_cpu *e = data;
	int r;

	if (e->cpu >= 0 && e->cpu != cpu_number())
		return;
	r = e->fn(e->arg);
	if (r) {
		int none = 0;

		__atomic_compare_exchange_n(&e->error, &none, r, false,
					    __ATOMIC_RELAXED, __ATOMIC_RELAXED);
	}
}

int kvmp_os_on_each_cpu(int (*fn)(void *arg), void *arg)
{
	struct kvmp_each_cpu e = { .fn = fn, .arg = arg, .cpu = -1 };

	mp_rendezvous(NULL, kvmp_each_cpu_call, NULL, &e);
	return __atomic_load_n(&e.error, __ATOMIC_RELAXED);
}

/* no public single-CPU call: a rendezvous where only that CPU acts */
int kvmp_os_on_cpu(int cpu, int (*fn)(void *arg), void *arg)
{
	struct kvmp_each_cpu e = { .fn = fn, .arg = arg, .cpu = cpu };

	if (cpu < 0 || (unsigned int)cpu >= kvmp_ncpus)
		return -KVMP_EINVAL;
	mp_rendezvous(NULL, kvmp_each_cpu_call, NULL, &e);
	return __atomic_load_n(&e.error, __ATOMIC_RELAXED);
}

/* --- control registers ------------------------------------------------------- */
/* XNU reads CR4 from the register (no shadow copy to keep in step) */
void kvmp_os_cr4_update(u64 set, u64 clear)
{
	boolean_t was = ml_set_interrupts_enabled(FALSE);
	u64 cr4;

	asm volatile("mov %%cr4, %0" : "=r"(cr4));
	cr4 = (cr4 | set) & ~clear;
	asm volatile("mov %0, %%cr4" : : "r"(cr4) : "memory");
	ml_set_interrupts_enabled(was);
}

/*
 * XNU's x86_64 TSS has no I/O permission bitmap (user port I/O is never
 * granted), so the limit VM exit leaves (0x67) cuts nothing off.
 */
void kvmp_os_tss_limit_lost(void)
{
}

/* --- the FPU ----------------------------------------------------------------- */
static void kvmp_cpuid(u32 leaf, u32 sub, u32 *a, u32 *b, u32 *c, u32 *d)
{
	asm volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d)
		     : "a"(leaf), "c"(sub));
}

void kvmp_os_fpu_begin(void)
{
	struct kvmp_darwin_cpu *c;
	u64 rfbm = kvmp_host_rfbm;

	kvmp_darwin_preempt_disable();
	c = kvmp_this_cpu();
	c->in_fpu = true;
	if (!rfbm)
		asm volatile("fxsave64 %0" : "=m"(*(u8 (*)[512])c->xsave));
	else
		asm volatile("xsave64 %0" : "=m"(*(u8 (*)[4096])c->xsave)
			     : "a"((u32)rfbm), "d"((u32)(rfbm >> 32)) : "memory");
}

void kvmp_os_fpu_end(void)
{
	struct kvmp_darwin_cpu *c = kvmp_this_cpu();
	u64 rfbm = kvmp_host_rfbm;

	if (!rfbm)
		asm volatile("fxrstor64 %0" : : "m"(*(u8 (*)[512])c->xsave));
	else
		asm volatile("xrstor64 %0" : : "m"(*(u8 (*)[4096])c->xsave),
			     "a"((u32)rfbm), "d"((u32)(rfbm >> 32)));
	c->in_fpu = false;
	kvmp_darwin_preempt_enable();
}

/* --- scheduling -------------------------------------------------------------- */
/* any signal the thread has not blocked ends KVM_RUN, as on Linux */
bool kvmp_os_signal_pending(void)
{
	return proc_issignal(proc_selfpid(), ~(sigset_t)0) != 0;
}

/* with no wait asserted, thread_block is a yield */
void kvmp_os_cond_resched(void)
{
	thread_block(THREAD_CONTINUE_NULL);
}

/* --- logging ----------------------------------------------------------------- */
void kvmp_os_log(int level, const char *fmt, ...)
{
	char buf[256];
	va_list args;

	if (level > KVMP_LOG_INFO)	/* debug: as pr_debug, off by default */
		return;
	va_start(args, fmt);
	vsnprintf(buf, sizeof(buf), fmt, args);
	va_end(args);
	IOLog("kvmport: %s", buf);
}

void *kvmp_os_memset(void *p, int c, unsigned long n)
{
	return memset(p, c, n);
}

void *kvmp_os_memcpy(void *dst, const void *src, unsigned long n)
{
	return memcpy(dst, src, n);
}

/* --- load and unload --------------------------------------------------------- */
int kvmp_os_darwin_init(void)
{
	u32 a, b, c, d;
	unsigned int i;

	if (kvmp_os_iokit_init())
		return -KVMP_ENOMEM;
	/* the host's XSAVE layout: XCR0's components, their size from CPUID 0xd */
	kvmp_cpuid(1, 0, &a, &b, &c, &d);
	kvmp_host_xsave_size = 512;
	if (c & (1U << 27)) {	/* OSXSAVE */
		asm volatile("xgetbv" : "=a"(a), "=d"(d) : "c"(0));
		kvmp_host_rfbm = ((u64)d << 32) | a;
		kvmp_cpuid(0xd, 0, &a, &b, &c, &d);
		kvmp_host_xsave_size = b;
	}
	if (kvmp_host_xsave_size > 4096)
		goto fail_iokit;
	kvmp_ncpus = real_ncpus;
	kvmp_cpus = kvmp_os_zalloc(kvmp_ncpus * sizeof(*kvmp_cpus));
	if (!kvmp_cpus)
		goto fail_iokit;
	for (i = 0; i < kvmp_ncpus; i++) {
		/* page-aligned, so XSAVE's 64-byte rule holds */
		u64 pa;

		kvmp_cpus[i].xsave = kvmp_os_alloc_pages(1, &pa);
		if (!kvmp_cpus[i].xsave)
			goto fail_cpus;
	}
	return 0;

fail_cpus:
	while (i--)
		kvmp_os_free_pages(kvmp_cpus[i].xsave, 1);
	kvmp_os_free(kvmp_cpus);
fail_iokit:
	kvmp_os_iokit_exit();
	return -KVMP_ENOMEM;
}

void kvmp_os_darwin_exit(void)
{
	unsigned int i;

	for (i = 0; i < kvmp_ncpus; i++)
		kvmp_os_free_pages(kvmp_cpus[i].xsave, 1);
	kvmp_os_free(kvmp_cpus);
	kvmp_cpus = NULL;
	kvmp_os_iokit_exit();
}
