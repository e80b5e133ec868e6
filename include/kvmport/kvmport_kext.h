/* SPDX-License-Identifier: (GPL-2.0 WITH Linux-syscall-note) OR MIT */
/*
 * The kext ABI: the same commands as kvmport.h and kvmport_ext.h, through a
 * BSD ioctl layer (XNU's), which cannot carry Linux's encoding unchanged:
 *
 * - BSD's direction bits are the reverse of Linux's, and XNU copies an
 *   argument in and out itself by the encoded size (at most IOCPARM_MAX),
 *   never showing the driver the user pointer.  Variable-length arguments
 *   (CPUID2, MSR lists) need the pointer.  So every command is BSD IOC_VOID,
 *   for which XNU hands the driver the caller's argument unchanged, with
 *   Linux's group, number and size fields: KVMP_KEXT_IOC(KVMP_x) is the
 *   number of every command KVMP_x, with no second list of numbers.
 * - An XNU ioctl returns 0 or an errno only.  Each call passes a
 *   struct kvmp_kext_call: the Linux command and its argument in, its
 *   (non-negative) result out; errno stays for errors (BSD's values).
 * - A kext cannot make file descriptors.  /dev/kvmport is a cloning node:
 *   every open is a fresh handle.  KVMP_CREATE_VM and KVMP_CREATE_VCPU
 *   return ids instead of descriptors, and KVMP_KEXT_ATTACH on a fresh
 *   handle makes it that VM's or VCPU's (as the descriptor Linux returns).
 *
 * A call, for KVMP_GET_REGS on a VCPU handle:
 *
 *	struct kvmp_kext_call c = { .cmd = KVMP_GET_REGS, .arg = (uintptr_t)&regs };
 *	ioctl(vcpu_fd, KVMP_KEXT_IOC(KVMP_GET_REGS), &c);
 *
 * This header compiles wherever kvmport.h does: a Linux host can serve the
 * kext ABI too.
 */
#ifndef KVMPORT_KVMPORT_KEXT_H
#define KVMPORT_KVMPORT_KEXT_H

#include "kvmport_ext.h"

/* <sys/ioccom.h>: IOC_VOID, and the 13 bits of size a BSD number has */
#define KVMP_KEXT_IOC_VOID	0x20000000U
#define KVMP_KEXT_IOCPARM_MASK	0x1fffU

/*
 * The kext number of a command: IOC_VOID, Linux's size, group and number.
 * Linux's size field has one bit more than BSD's; KVMP_KEXT_FITS says a
 * command's argument is small enough to keep it (the conformance test
 * asserts it for every command).
 */
#define KVMP_KEXT_IOC(cmd) \
	(KVMP_KEXT_IOC_VOID | ((cmd) & ((KVMP_KEXT_IOCPARM_MASK << 16) | 0xffffU)))
#define KVMP_KEXT_FITS(cmd)	((((cmd) >> 16) & 0x3fffU) <= KVMP_KEXT_IOCPARM_MASK)

/* the argument of every kext ioctl */
struct kvmp_kext_call {
	kvmp_u32 cmd;	/* in: the command, as kvmport.h numbers it (KVMP_RUN, ...) */
	kvmp_u32 flags;	/* in: 0 */
	kvmp_u64 arg;	/* in: its argument as Linux takes it: a value or a user pointer */
	kvmp_u64 result;	/* out: what Linux's ioctl returns on success */
};

/*
 * KVMP_KEXT_ATTACH, on a fresh handle (an open of /dev/kvmport that has made
 * no call yet): it becomes the handle of the VM or VCPU whose id
 * KVMP_CREATE_VM or KVMP_CREATE_VCPU returned, in the process that made it.
 * The object lives while a handle holds it: one that is never attached ends
 * with the handle that created it.
 */
struct kvmp_kext_attach {
	kvmp_u32 kind;	/* KVMP_KEXT_ATTACH_VM or KVMP_KEXT_ATTACH_VCPU */
	kvmp_u32 flags;	/* 0 */
	kvmp_u64 id;
};

#define KVMP_KEXT_ATTACH_VM	1
#define KVMP_KEXT_ATTACH_VCPU	2

#define KVMP_KEXT_ATTACH	KVMP_IOW(KVMPIO_EXT, 0x02, struct kvmp_kext_attach)

#if !defined(KVMP_CDEF) && !defined(__cplusplus)
_Static_assert(sizeof(struct kvmp_kext_call) == 24, "kvmp_kext_call size");
_Static_assert(sizeof(struct kvmp_kext_attach) == 16, "kvmp_kext_attach size");
#endif

#endif /* KVMPORT_KVMPORT_KEXT_H */
