/* SPDX-License-Identifier: MIT */
/* pagestate.c: the page-state walks over pagemap and the special entries. */
#ifndef UHMM__PAGESTATE_PRIV_H
#define UHMM__PAGESTATE_PRIV_H

#include "base.h"

/*
 * Internal bits of uhmm__page_state()'s words, above the public UHMM_PS_*
 * (uhmm_page_state() clears them): the huge page order of a hugetlbfs
 * mapping, on every page of it, present or not.
 */
#define UHMM__PS_ORDER_SHIFT	24
#define UHMM__PS_ORDER_MASK	(0x1fu << UHMM__PS_ORDER_SHIFT)

/*
 * The page-state walk shared by uhmm_page_state() and uhmm_range_fault():
 * fill @out[i] with UHMM_PS_* bits of page @start + i * page size.  When
 * @entries is not NULL, it receives each page's special entry (or 0).
 */
UHMM__HIDDEN int uhmm__page_state(struct uhmm_mm *mm, uintptr_t start,
				    size_t npages, uint32_t *out,
				    uint64_t *entries, bool fresh_vmas);

/*
 * The snapshot words of uhmm_range_fault() (include/uhmm/range.h) for
 * [start, +npages) in one pass over pagemap: VALID, WRITE, ZERO and the
 * huge order of present pages, ERROR where there is no usable mapping, 0
 * elsewhere.  For each page with a special entry in a usable mapping,
 * @special(@arg, &pfns[i], entry, UHMM_PS_* bits of the mapping) may change
 * its word.  Return: 0, 1 when it cannot (no PAGEMAP_SCAN: use
 * uhmm__page_state()), or a negative errno.
 */
UHMM__HIDDEN int uhmm__page_pfns(struct uhmm_mm *mm, uintptr_t start, size_t npages,
				   uint64_t *pfns,
				   void (*special)(void *arg, uint64_t *pfn, uint64_t e,
						   uint32_t vma_bits),
				   void *arg);

/* A fork child: the zero-page probe's lock is made anew (mm.c). */
UHMM__HIDDEN void uhmm__pagestate_atfork_child(void);

#endif /* UHMM__PAGESTATE_PRIV_H */
