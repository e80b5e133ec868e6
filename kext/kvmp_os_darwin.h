/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/* What the Darwin port's files share beyond the OS contract. */
#ifndef KVMPORT_KEXT_KVMP_OS_DARWIN_H
#define KVMPORT_KEXT_KVMP_OS_DARWIN_H

#include <mach/kmod.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * x86_64 XNU exports these to kexts (com.apple.kpi.unsupported), but the
 * Kernel.framework headers do not declare them.
 */
void mp_rendezvous(void (*setup)(void *arg), void (*action)(void *arg),
		   void (*teardown)(void *arg), void *arg);
int cpu_number(void);
extern unsigned int real_ncpus;

/* libkmod's entry points (c_start.c, c_stop.c), which kmod_info names */
kern_return_t _start(kmod_info_t *ki, void *data);
kern_return_t _stop(kmod_info_t *ki, void *data);

/* per-CPU state and IOKit's part; 0 or a negative KVMP_ errno */
int kvmp_os_darwin_init(void);
void kvmp_os_darwin_exit(void);

/* log what the core still holds (nothing, after the last VM is gone) */
void kvmp_os_report_leaks(void);

/*
 * kvmp_os_iokit.cpp: wire one page of the calling task with an
 * IOMemoryDescriptor (vslock is private KPI).  0 or a negative KVMP_ errno.
 */
int kvmp_os_iokit_init(void);
void kvmp_os_iokit_exit(void);
int kvmp_os_iokit_wire(unsigned long long uaddr, int write, void **md,
		       unsigned long long *pa);
void kvmp_os_iokit_unwire(void *md);
/* physically contiguous, zeroed, page-aligned kernel memory */
void *kvmp_os_iokit_alloc_contig(unsigned long size, unsigned long long *pa);
void kvmp_os_iokit_free_contig(void *va);

/*
 * KVMP_MMAP_VCPU on a VCPU handle: 0 or a negative KVMP_ errno.  The
 * mapping lasts until the VCPU is destroyed: freeing its run pages
 * (kvmp_os_free_pages, from kvmp_vcpu_destroy) unmaps it, so there is no
 * hook to call.
 */
struct kvmp_vcpu;
long kvmp_darwin_mmap_vcpu(struct kvmp_vcpu *vcpu, unsigned long long uarg);

#ifdef __cplusplus
}
#endif

#endif /* KVMPORT_KEXT_KVMP_OS_DARWIN_H */
