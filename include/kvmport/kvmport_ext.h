/* SPDX-License-Identifier: (GPL-2.0 WITH Linux-syscall-note) OR MIT */
/*
 * kvmport's extensions to the KVM API.  Nothing here exists in Linux; the
 * numbers are chosen so they cannot collide with Linux's.
 */
#ifndef KVMPORT_KVMPORT_EXT_H
#define KVMPORT_KVMPORT_EXT_H

#include "kvmport.h"

/*
 * Extension ioctls use their own type byte, not KVMIO (0xAE), so no future
 * Linux KVM ioctl can take their numbers.
 */
#define KVMPIO_EXT 0xB7U

/*
 * Capabilities live far above Linux's (which count up from 0 and stay in
 * the hundreds): 0x4b50xxxx, "KP".
 */
#define KVMP_EXT_CAP_BASE	0x4b500000
/* KVMP_MMAP_VCPU is implemented */
#define KVMP_CAP_MMAP_VCPU	(KVMP_EXT_CAP_BASE + 1)

/*
 * KVMP_MMAP_VCPU, on a VCPU fd: maps the VCPU's run area into the caller and
 * returns where, for hosts whose kernel cannot mmap a device (XNU).  The
 * mapping is the same shared page that mmap(vcpu_fd, 0) gives.  flags other
 * than 0: EINVAL; a bad argument pointer: EFAULT.
 *
 * Its lifetime depends on the host.  Linux: it holds the pages and stays
 * valid until the caller unmaps it (munmap(addr, size)); closing the VCPU fd
 * does not tear it down.  XNU (kext/): it holds nothing, so the driver
 * removes it when the VCPU is destroyed (its handle's last close) and it
 * must not be touched after that; the caller must not munmap it either,
 * since the driver then deallocates that range again, whatever is mapped
 * there by then (docs/kext.md).
 */
struct kvmp_mmap_vcpu {
	kvmp_u64 addr;	/* out: user address of the run area */
	kvmp_u64 size;	/* out: its length, KVMP_GET_VCPU_MMAP_SIZE bytes */
	kvmp_u64 flags;	/* in: must be 0 */
};

#define KVMP_MMAP_VCPU	KVMP_IOWR(KVMPIO_EXT, 0x01, struct kvmp_mmap_vcpu)

#endif /* KVMPORT_KVMPORT_EXT_H */
