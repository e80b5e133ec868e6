// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * The OS contract in userspace, for the core's pure-logic files (decoder,
 * CPUID and MSR filtering, slot bookkeeping) that tests drive directly.
 * Only what those files use is here; the rest of the contract needs a kernel.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kvmp_os.h"

void *kvmp_os_zalloc(unsigned long size)
{
	return calloc(1, size);
}

void kvmp_os_free(void *p)
{
	free(p);
}

void *kvmp_os_memset(void *p, int c, unsigned long n)
{
	return memset(p, c, n);
}

void *kvmp_os_memcpy(void *dst, const void *src, unsigned long n)
{
	return memcpy(dst, src, n);
}

void kvmp_os_log(int level, const char *fmt, ...)
{
	va_list ap;

	(void)level;
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
}

/*
 * Enough of the rest for the slot and CPUID logic to run in one thread: user
 * addresses are this process's own pointers, "physical" addresses of pinned
 * pages are the addresses themselves, and every CPU is this one.
 */
long kvmp_user_pinned;		/* pages pinned now: tests check it returns to 0 */
static long kvmp_user_mm;	/* the one address space: a VM's handle points here */

struct kvmp_os_mm *kvmp_os_mm_get(void)
{
	return (struct kvmp_os_mm *)&kvmp_user_mm;
}

void kvmp_os_mm_put(struct kvmp_os_mm *mm)
{
	(void)mm;
}

int kvmp_os_pin_user_page(struct kvmp_os_mm *mm, u64 uaddr, bool write,
			  struct kvmp_os_pin **pin, u64 *pa)
{
	(void)mm;
	(void)write;
	*pin = (struct kvmp_os_pin *)(uintptr_t)uaddr;
	*pa = uaddr;
	kvmp_user_pinned++;
	return 0;
}

void kvmp_os_unpin_user_page(struct kvmp_os_mm *mm, struct kvmp_os_pin *pin,
			     bool dirty)
{
	(void)mm;
	(void)pin;
	(void)dirty;
	kvmp_user_pinned--;
}

int kvmp_os_copy_from_user(void *dst, u64 usrc, unsigned long n)
{
	if (usrc < 4096)	/* the null page stands for any bad pointer */
		return -KVMP_EFAULT;
	memcpy(dst, (const void *)(uintptr_t)usrc, n);
	return 0;
}

int kvmp_os_copy_to_user(u64 udst, const void *src, unsigned long n)
{
	if (udst < 4096)
		return -KVMP_EFAULT;
	memcpy((void *)(uintptr_t)udst, src, n);
	return 0;
}

struct kvmp_os_mutex {
	int held;
};

struct kvmp_os_mutex *kvmp_os_mutex_create(enum kvmp_lock_role role)
{
	return calloc(1, sizeof(struct kvmp_os_mutex));
}

void kvmp_os_mutex_destroy(struct kvmp_os_mutex *m)
{
	free(m);
}

void kvmp_os_mutex_lock(struct kvmp_os_mutex *m)
{
	m->held++;
}

int kvmp_os_mutex_lock_killable(struct kvmp_os_mutex *m)
{
	m->held++;	/* single-threaded tests: never contended */
	return 0;
}

void kvmp_os_mutex_unlock(struct kvmp_os_mutex *m)
{
	m->held--;
}

struct kvmp_os_spinlock {
	int held;
};

struct kvmp_os_spinlock *kvmp_os_spinlock_create(void)
{
	return calloc(1, sizeof(struct kvmp_os_spinlock));
}

void kvmp_os_spinlock_destroy(struct kvmp_os_spinlock *l)
{
	free(l);
}

void kvmp_os_spin_lock(struct kvmp_os_spinlock *l)
{
	l->held++;
}

void kvmp_os_spin_unlock(struct kvmp_os_spinlock *l)
{
	l->held--;
}

/* the tests call kvmp_vm_mm_invalidate_* themselves */
const bool kvmp_os_mm_notifier;

void kvmp_os_cpus_lock(void)
{
}

void kvmp_os_cpus_unlock(void)
{
}

int kvmp_os_on_each_cpu(int (*fn)(void *arg), void *arg)
{
	return fn(arg);
}

int kvmp_os_on_cpu(int cpu, int (*fn)(void *arg), void *arg)
{
	(void)cpu;
	return fn(arg);
}

bool kvmp_os_signal_pending(void)
{
	return false;
}

void kvmp_os_cond_resched(void)
{
}

void *kvmp_os_alloc_pages(unsigned int npages, u64 *pa)
{
	void *p = aligned_alloc(KVMP_PAGE_SIZE, npages * KVMP_PAGE_SIZE);

	if (p) {
		memset(p, 0, npages * KVMP_PAGE_SIZE);
		*pa = (uintptr_t)p;
	}
	return p;
}

void kvmp_os_free_pages(void *va, unsigned int npages)
{
	(void)npages;
	free(va);
}
