/* SPDX-License-Identifier: MIT */
/*
 * sys.c: raw system calls that bypass libc's wrappers and so uhmm's own
 * (interpose.c), for the library's changes to memory.  The bottom layer:
 * it calls nothing else of the library.
 */
#ifndef UHMM__SYS_H
#define UHMM__SYS_H

#include <stdatomic.h>
#include <stddef.h>
#include <sys/types.h>

#include "hidden.h"

UHMM__HIDDEN int uhmm__sys_munmap(void *addr, size_t len);
UHMM__HIDDEN int uhmm__sys_madvise(void *addr, size_t len, int advice);
UHMM__HIDDEN int uhmm__sys_mprotect(void *addr, size_t len, int prot);
UHMM__HIDDEN void *uhmm__sys_mmap(void *addr, size_t len, int prot,
				     int flags, int fd, off_t off);
/*
 * Bumped whenever the mappings may have changed (the vma cache's
 * generation, vma.c): by these calls and by the wrappers.
 */
extern atomic_ulong uhmm__as_gen UHMM__HIDDEN;

#endif /* UHMM__SYS_H */
