// SPDX-License-Identifier: GPL-2.0
/*
 * The OS contract in userspace, for the core's pure-logic files (decoder,
 * CPUID and MSR filtering, slot bookkeeping) that tests drive directly.
 * Only what those files use is here; the rest of the contract needs a kernel.
 */
#include <stdarg.h>
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
