/* SPDX-License-Identifier: MIT */
/* vma.c: the process's mappings (read from /proc/self/maps, cached). */
#ifndef UHMM__VMA_H
#define UHMM__VMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hidden.h"

#define UHMM__VMA_READ		(1u << 0)
#define UHMM__VMA_WRITE		(1u << 1)
#define UHMM__VMA_EXEC		(1u << 2)
#define UHMM__VMA_SHARED		(1u << 3)
#define UHMM__VMA_FILE		(1u << 4)	/* file-backed (incl. shmem files) */
#define UHMM__VMA_ANON		(1u << 5)	/* private anonymous (heap, stack, mmap) */
#define UHMM__VMA_SHMEM		(1u << 6)	/* shared anonymous / shmem */
#define UHMM__VMA_HUGETLB	(1u << 7)
#define UHMM__VMA_SPECIAL	(1u << 8)	/* IO/PFNMAP-style, vdso... */

struct uhmm__vma {
	uintptr_t start;
	uintptr_t end;
	unsigned int flags;
	unsigned int order;	/* hugetlb: log2(huge page size / page size); else 0 */
};

/*
 * Fill @out with the mappings intersecting [start, end), in address order,
 * at most @max of them.  *@n gets how many were stored, plus one when at
 * least one more mapping intersects the range: *@n <= @max + 1, never the
 * total (with PROCMAP_QUERY that would cost a look-up per mapping up to
 * @end, and callers pass end = UINTPTR_MAX).  A caller that wants them
 * all asks again from out[@max - 1].end while *@n > @max (with @fresh
 * false after the first call: the fallback then walks one copy of the
 * list instead of re-reading it per call).  At most @max + 1 look-ups.
 * @fresh forces a re-read instead of the cached copy.  0; -ENOMEM (no
 * memory for the text of /proc/self/maps or the cache, or the kernel had
 * none); -EIO if /proc/self/maps cannot be read otherwise.  Callers pass
 * the error on: a failure to look is not "no mapping there".
 */
UHMM__HIDDEN int uhmm__vma_find(uintptr_t start, uintptr_t end,
				  struct uhmm__vma *out, size_t max, size_t *n,
				  bool fresh);

/*
 * Keep the shared object holding @addr (a driver's callback) loaded for
 * the life of the process, as the kernel keeps a module whose device
 * memory or notifier is in use: a dlclose() of it would leave uhmm's
 * service threads calling unmapped code.  Not while pages are frozen.
 */
UHMM__HIDDEN void uhmm__pin_module(const void *addr);

/* A fork child re-reads the mappings (mm.c's atfork handler). */
UHMM__HIDDEN void uhmm__vma_atfork_child(void);

#endif /* UHMM__VMA_H */
