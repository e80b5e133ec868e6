/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/* What the userspace build adds for tests (core/user/). */
#ifndef KVMPORT_CORE_USER_KVMP_USER_H
#define KVMPORT_CORE_USER_KVMP_USER_H

#include "../kvmp_core.h"

extern long kvmp_user_pinned;
extern u64 kvmp_user_unmapped_bytes;

#endif /* KVMPORT_CORE_USER_KVMP_USER_H */
