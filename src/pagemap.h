/* SPDX-License-Identifier: MIT */
/* pagemap.c: /proc/self/pagemap, read and scanned. */
#ifndef UHMM__PAGEMAP_H
#define UHMM__PAGEMAP_H

#include "base.h"

/* The pagemap file, opened once, or uhmm__proc_err() of the failed open. */
UHMM__HIDDEN int uhmm__pagemap_fd(void);
/* The @n entries of [start, +n pages) into @buf (zeros past the end); 0 or uhmm__proc_err(). */
UHMM__HIDDEN int uhmm__pagemap_read(int fd, uintptr_t start, size_t n, uint64_t *buf);
/*
 * From pagemap alone: out[i] = UHMM__PM_PRESENT when page i is present,
 * UHMM__PM_SWAPPED when it is swapped out (a swap entry: data),
 * UHMM__PM_MARKER for a userfaultfd write-protect marker (no data: a
 * device page's picture, or a stale one; wpmarker.c), UHMM__PM_NONE when
 * the entry is empty.  Only for memory uhmm registered (where nothing else
 * write-protects a page, so PM_SWAP with PM_UFFD_WP is a marker).
 */
#define UHMM__PM_NONE		0
#define UHMM__PM_PRESENT	1
#define UHMM__PM_SWAPPED	2
#define UHMM__PM_MARKER		3
UHMM__HIDDEN int uhmm__pagemap_has_data(uintptr_t start, size_t npages, uint8_t *out);
/* A pagemap entry of memory uhmm registered: is it a uffd-wp marker? */
static inline bool uhmm__pm_is_marker(uint64_t pm)
{
	return (pm & (PM_PRESENT | PM_SWAP | PM_UFFD_WP)) == (PM_SWAP | PM_UFFD_WP);
}
/*
 * The span [*lo, *hi) from the first to the last page of [start, end) that
 * a huge page maps (PMD-mapped THP): 0, 1 when none is, -1 when it cannot
 * be told (no PAGEMAP_SCAN).
 */
UHMM__HIDDEN int uhmm__pagemap_huge_span(uintptr_t start, uintptr_t end, uintptr_t *lo,
					   uintptr_t *hi);

/* A fork child: the pagemap file descriptor is the parent's (mm.c). */
UHMM__HIDDEN void uhmm__pagemap_atfork_child(void);

#endif /* UHMM__PAGEMAP_H */
