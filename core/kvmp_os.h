/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * The OS contract: everything the portable core needs from a host kernel.
 *
 * A new host port is "implement this header" (lkm/kvmp_os_linux.c is the Linux
 * one).  The core includes no OS header; it sees the host only through these
 * functions and the fixed-width types below.
 *
 * Context rules: functions marked "may sleep" must not be called with
 * preemption or interrupts disabled; the rest are safe anywhere.
 */
#ifndef KVMPORT_CORE_KVMP_OS_H
#define KVMPORT_CORE_KVMP_OS_H

#include <kvmport/kvmport.h>

#if defined(__KERNEL__) && defined(__linux__)
#include <linux/types.h>	/* u8..u64, bool: the kernel's own */
#else
#include <stdbool.h>		/* freestanding headers: fine in any kernel */
#include <stddef.h>
typedef kvmp_u8 u8;
typedef kvmp_u16 u16;
typedef kvmp_u32 u32;
typedef kvmp_u64 u64;
#endif

/* the kernel's spellings, where a host lacks them */
#define KVMP_ATTRIBUTE(...) __attribute__((__VA_ARGS__))
#ifndef __packed
#define __packed KVMP_ATTRIBUTE(__packed__)
#endif
#ifndef __aligned
#define __aligned(n) KVMP_ATTRIBUTE(__aligned__(n))
#endif
#ifndef __printf
#define __printf(a, b) KVMP_ATTRIBUTE(__format__(printf, a, b))
#endif
#ifndef ARRAY_SIZE
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#endif

#define KVMP_PAGE_SIZE	4096UL
#define KVMP_PAGE_SHIFT	12

/* errno values the core returns (negated), as Linux numbers them */
#define KVMP_EPERM	1
#define KVMP_ENOENT	2
#define KVMP_EINTR	4
#define KVMP_EIO	5
#define KVMP_ENXIO	6
#define KVMP_E2BIG	7
#define KVMP_EBADF	9
#define KVMP_EAGAIN	11
#define KVMP_ENOMEM	12
#define KVMP_EFAULT	14
#define KVMP_EBUSY	16
#define KVMP_EEXIST	17
#define KVMP_ENODEV	19
#define KVMP_EINVAL	22
#define KVMP_EMFILE	24
#define KVMP_ENOSPC	28
#define KVMP_ENOTTY	25
#define KVMP_EOPNOTSUPP	95

/* --- exception table ------------------------------------------------------ */
/*
 * KVMP_EXTABLE(from, to), inside an asm string: if the instruction at label
 * `from` faults, the host kernel resumes at label `to` instead of oopsing
 * (Linux: an entry of the module's __ex_table, _ASM_EXTABLE).  The core puts
 * one on every SVM and VMX instruction, which fault when virtualization was
 * turned off on the CPU under it (core/kvmp_core.h, KVMP_VIRT_INSN).  The
 * asm files get the same from kvmp_asm.inc.S (KVMP_EXTABLE_S).  XNU keeps
 * no exception table for kexts (its recovery table is the kernel's own,
 * for copyin/copyout): there the macro is empty and such a fault is the
 * host's panic, as before (docs/driver.md, "Security").
 */
#if defined(__KERNEL__) && defined(__linux__)
#include <asm/asm.h>
#define KVMP_EXTABLE(from, to)	_ASM_EXTABLE(from, to)
#else
#define KVMP_EXTABLE(from, to)	""
#endif

/* --- memory --------------------------------------------------------------- */
/* Zeroed kernel memory; may sleep.  NULL on failure. */
void *kvmp_os_zalloc(unsigned long size);
void kvmp_os_free(void *p);

/*
 * Zeroed, physically contiguous, page-aligned memory of npages pages, with
 * its host-physical address; may sleep.  For hardware structures (VMCB,
 * permission maps, nested page tables).
 */
void *kvmp_os_alloc_pages(unsigned int npages, u64 *pa);
void kvmp_os_free_pages(void *va, unsigned int npages);

/* --- user memory ------------------------------------------------------------ */
/*
 * The VMM's address space a VM's slots point into, as a handle the VM keeps
 * from KVM_CREATE_VM until it goes: the pins it makes are charged there
 * (Linux: the mm's pinned_vm, limited by RLIMIT_MEMLOCK).  Get takes the
 * calling process's (NULL if it has none).  Both may sleep.
 */
struct kvmp_os_mm;
struct kvmp_os_mm *kvmp_os_mm_get(void);
void kvmp_os_mm_put(struct kvmp_os_mm *mm);

/*
 * True where the port tells the core of every change to the VMM's mappings
 * (kvmp_vm_mm_invalidate_start/end: Linux's MMU notifier), so a page the
 * VMM drops leaves the guest too (KVM_CAP_SYNC_MMU).
 */
extern const bool kvmp_os_mm_notifier;

/*
 * Pin the user page at uaddr of the calling process, whose address space
 * mm is (writable if write), for as long as the guest may use it, and
 * return an opaque handle and its host-physical address; may sleep.  The
 * pin is charged to mm: -KVMP_ENOMEM when that would pass the process's
 * limit on pinned memory; -KVMP_EFAULT for an address the port cannot pin
 * for long (unmapped, no write permission, or file-backed memory whose
 * filesystem tracks dirty pages: only anonymous, shmem and hugetlbfs
 * memory on Linux, as the kernel's long-term pinners take).  Unpin may run
 * in any thread and never sleeps; it gives the charge back to mm.
 */
struct kvmp_os_pin;
int kvmp_os_pin_user_page(struct kvmp_os_mm *mm, u64 uaddr, bool write,
			  struct kvmp_os_pin **pin, u64 *pa);
void kvmp_os_unpin_user_page(struct kvmp_os_mm *mm, struct kvmp_os_pin *pin,
			     bool dirty);

/* Copy to/from the calling process; 0 or -KVMP_EFAULT; may sleep. */
int kvmp_os_copy_from_user(void *dst, u64 usrc, unsigned long n);
int kvmp_os_copy_to_user(u64 udst, const void *src, unsigned long n);

/* --- locks ---------------------------------------------------------------- */
struct kvmp_os_mutex;	/* a sleeping lock */
/*
 * What a mutex guards.  Locks of different roles nest (a VCPU's, then its
 * VM's); a lock-order checker (Linux's lockdep) must tell them apart, or it
 * sees recursion where there is an order.
 */
enum kvmp_lock_role {
	KVMP_LOCK_GLOBAL,	/* the core's list of VMs, CPU state */
	KVMP_LOCK_VM,
	KVMP_LOCK_VCPU,
	KVMP_LOCK_KEXT,		/* the kext ABI's handles (kvmp_kext.c, the ports') */
	KVMP_LOCK_ROLES
};

struct kvmp_os_mutex *kvmp_os_mutex_create(enum kvmp_lock_role role);
void kvmp_os_mutex_destroy(struct kvmp_os_mutex *m);
void kvmp_os_mutex_lock(struct kvmp_os_mutex *m);	/* may sleep */
/*
 * Like kvmp_os_mutex_lock, but a fatal signal ends the wait: 0 with the lock
 * held, or -KVMP_EINTR without it.  For locks a user may wait on for long
 * (a VCPU's, held through KVM_RUN), so the waiter stays killable.
 */
int kvmp_os_mutex_lock_killable(struct kvmp_os_mutex *m);
void kvmp_os_mutex_unlock(struct kvmp_os_mutex *m);

struct kvmp_os_spinlock;	/* never sleeps; nothing under it may sleep */
struct kvmp_os_spinlock *kvmp_os_spinlock_create(void);
void kvmp_os_spinlock_destroy(struct kvmp_os_spinlock *l);
void kvmp_os_spin_lock(struct kvmp_os_spinlock *l);
void kvmp_os_spin_unlock(struct kvmp_os_spinlock *l);

/* --- CPUs, preemption, interrupts ------------------------------------------- */
int kvmp_os_cpu(void);			/* the current CPU; call with preemption off */
/* no CPU comes online or goes offline between these (CPU hotplug) */
void kvmp_os_cpus_lock(void);
void kvmp_os_cpus_unlock(void);
int kvmp_os_cpu_count(void);		/* highest possible CPU number + 1 */
void kvmp_os_irq_enable(void);	/* for the guest-entry window only */
void kvmp_os_irq_disable(void);

/*
 * Run fn(arg) on every online CPU with preemption off and wait; returns the
 * first non-zero result.  Used to turn virtualisation on and off per CPU.
 * May sleep.
 */
int kvmp_os_on_each_cpu(int (*fn)(void *arg), void *arg);
/*
 * The same on one online CPU (the caller's own included): an interrupt that
 * forces that CPU out of guest mode.  May sleep.
 */
int kvmp_os_on_cpu(int cpu, int (*fn)(void *arg), void *arg);

/* --- control registers and descriptor tables ------------------------------- */
/*
 * Set and clear CR4 bits (CR4.VMXE) on this CPU the way the host kernel keeps
 * track of CR4; preemption off.
 */
void kvmp_os_cr4_update(u64 set, u64 clear);
/*
 * A VM exit left this CPU's TR limit at 0x67, which cuts off the TSS's I/O
 * permission bitmap: have the host restore it (at once or before it needs
 * it).  Interrupts off.
 */
void kvmp_os_tss_limit_lost(void);

/* --- the FPU ---------------------------------------------------------------- */
/*
 * Between begin and end the core owns the FPU/SSE/AVX registers: the host's
 * user state is saved and will be restored when the thread returns to user
 * mode.  begin disables preemption; end enables it.
 */
void kvmp_os_fpu_begin(void);
void kvmp_os_fpu_end(void);

/* --- scheduling ------------------------------------------------------------- */
bool kvmp_os_signal_pending(void);	/* a signal waits for the calling thread */
void kvmp_os_cond_resched(void);	/* may sleep */

/* --- logging ---------------------------------------------------------------- */
#define KVMP_LOG_ERR	3
#define KVMP_LOG_WARN	4
#define KVMP_LOG_INFO	6
#define KVMP_LOG_DEBUG	7
__printf(2, 3) void kvmp_os_log(int level, const char *fmt, ...);

#define kvmp_err(...)	kvmp_os_log(KVMP_LOG_ERR, __VA_ARGS__)
#define kvmp_warn(...)	kvmp_os_log(KVMP_LOG_WARN, __VA_ARGS__)
#define kvmp_info(...)	kvmp_os_log(KVMP_LOG_INFO, __VA_ARGS__)
#define kvmp_debug(...)	kvmp_os_log(KVMP_LOG_DEBUG, __VA_ARGS__)

/* --- string helpers (the core has no libc) ---------------------------------- */
void *kvmp_os_memset(void *p, int c, unsigned long n);
void *kvmp_os_memcpy(void *dst, const void *src, unsigned long n);

#endif /* KVMPORT_CORE_KVMP_OS_H */
