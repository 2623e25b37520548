// SPDX-License-Identifier: MIT
/*
 * Raw system calls: the library's own changes to memory bypass libc's
 * wrappers, and so uhmm's (interpose.c).  The bottom layer.
 */
#include <sys/syscall.h>
#include <unistd.h>

#include "sys.h"

atomic_ulong uhmm__as_gen = 1;

int uhmm__sys_munmap(void *addr, size_t len)
{
	atomic_fetch_add(&uhmm__as_gen, 1);
	return (int)syscall(SYS_munmap, addr, len);
}

int uhmm__sys_madvise(void *addr, size_t len, int advice)
{
	return (int)syscall(SYS_madvise, addr, len, advice);
}

int uhmm__sys_mprotect(void *addr, size_t len, int prot)
{
	atomic_fetch_add(&uhmm__as_gen, 1);
	return (int)syscall(SYS_mprotect, addr, len, prot);
}

void *uhmm__sys_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	void *p = (void *)syscall(SYS_mmap, addr, len, prot, flags, fd, off);

	atomic_fetch_add(&uhmm__as_gen, 1);
	return p;
}
