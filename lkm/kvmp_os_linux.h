/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/* What the Linux port's files share beyond the OS contract. */
#ifndef KVMPORT_LKM_KVMP_OS_LINUX_H
#define KVMPORT_LKM_KVMP_OS_LINUX_H

/* log what the core still holds (nothing, after the last VM is gone) */
void kvmp_os_report_leaks(void);

#endif /* KVMPORT_LKM_KVMP_OS_LINUX_H */
