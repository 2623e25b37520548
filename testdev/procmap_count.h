// SPDX-License-Identifier: MIT
/*
 * Counting PROCMAP_QUERY calls for the look-up tests and benchmark
 * (tests/test_vma_lookups.c, bench/vma_lookups.c): a program that includes
 * this header defines ioctl() itself, so every ioctl of the process, the
 * library's included, goes through it; PROCMAP_QUERY ('f', 17) adds one to
 * procmap_queries, then the call is made as a raw system call.  Include it
 * in one source file of the program only.
 */
#ifndef UHMM_TESTDEV_PROCMAP_COUNT_H
#define UHMM_TESTDEV_PROCMAP_COUNT_H

#include <stdarg.h>
#include <stdatomic.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static atomic_ulong procmap_queries;

int ioctl(int fd, unsigned long req, ...)
{
	va_list ap;
	void *arg;

	va_start(ap, req);
	arg = va_arg(ap, void *);
	va_end(ap);
	if (_IOC_TYPE(req) == 'f' && _IOC_NR(req) == 17)
		atomic_fetch_add(&procmap_queries, 1);
	return (int)syscall(SYS_ioctl, fd, req, arg);
}

#endif
