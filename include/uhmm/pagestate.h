/* SPDX-License-Identifier: MIT */
/**
 * DOC: CPU page state
 *
 * uhmm_page_state() tells, for each page of a range, what the CPU side holds
 * there, without changing anything.  It combines /proc/self/pagemap (or the
 * PAGEMAP_SCAN ioctl), the process's mappings list and uhmm's own table of
 * special entries.
 */
#ifndef UHMM_PAGESTATE_H
#define UHMM_PAGESTATE_H

#include <stddef.h>
#include <stdint.h>
#include <uhmm/mm.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Per-page state bits. */
#define UHMM_PS_MAPPED		(1u << 0)	/* some mapping covers the page */
#define UHMM_PS_READ		(1u << 1)	/* the mapping allows reads */
#define UHMM_PS_MAYWRITE	(1u << 2)	/* the mapping allows writes */
#define UHMM_PS_PRESENT		(1u << 3)	/* a CPU page is mapped */
#define UHMM_PS_WRITABLE	(1u << 4)	/* present, and a write needs no
						 * fault: MAYWRITE and the page is
						 * this process's alone (or the
						 * mapping is shared) */
#define UHMM_PS_ZERO		(1u << 5)	/* the shared zero page */
#define UHMM_PS_HUGE		(1u << 6)	/* mapped by a huge page: a PMD THP, or a hugetlb page of the mapping's size (with UHMM_PS_HUGETLB) */
#define UHMM_PS_SWAPPED		(1u << 7)	/* swapped out (a swap entry
						 * with data; not a device page,
						 * which pagemap shows as swapped
						 * too, nor a uffd-wp marker) */
#define UHMM_PS_FILE		(1u << 8)	/* file-backed mapping */
#define UHMM_PS_SHARED		(1u << 9)	/* MAP_SHARED mapping */
#define UHMM_PS_HUGETLB		(1u << 10)	/* hugetlbfs mapping */
#define UHMM_PS_SPECIAL		(1u << 11)	/* IO/PFNMAP-style ([vvar]...) */
#define UHMM_PS_DEVICE_PRIVATE	(1u << 12)	/* in device-private memory */
#define UHMM_PS_MIGRATING	(1u << 13)	/* frozen by a running migration */
#define UHMM_PS_DEVICE_EXCLUSIVE (1u << 14)	/* a device holds exclusive access */
#define UHMM_PS_SOFT_DIRTY	(1u << 15)	/* pagemap soft-dirty bit */
#define UHMM_PS_EXCLUSIVE	(1u << 16)	/* mapped only by this process */

/**
 * uhmm_page_state() - describe the CPU state of each page of a range
 * @mm: the process context
 * @start: first byte (page aligned)
 * @npages: number of pages, > 0
 * @out: @npages words of UHMM_PS_* bits
 *
 * A snapshot: pages can change as soon as it returns unless the caller
 * holds an interval notifier and checks its sequence.  Changes made by raw
 * syscalls that bypass uhmm's libc wrappers may be seen late in the
 * mapping attributes (see docs/CONCURRENCY.md).
 *
 * Return: 0; -EINVAL for a NULL argument, unaligned @start, zero @npages or
 * a range that wraps; -ENOMEM; -EIO if /proc/self cannot be read.
 */
UHMM_API int uhmm_page_state(struct uhmm_mm *mm, uintptr_t start,
			     size_t npages, uint32_t *out);

/**
 * struct uhmm_mapping - one mapping of the process (the kernel's VMA)
 * @start: first byte
 * @end: one past the last byte
 * @flags: UHMM_PS_MAPPED and the mapping bits: UHMM_PS_READ, _MAYWRITE,
 *	_FILE, _SHARED, _HUGETLB, _SPECIAL
 */
struct uhmm_mapping {
	uintptr_t start;
	uintptr_t end;
	uint32_t flags;
};

/**
 * uhmm_find_mapping() - the mapping containing or following an address
 * @mm: the process context
 * @addr: the address
 * @out: filled with the first mapping that ends after @addr (it contains
 *	@addr if @out->start <= @addr), as the kernel's find_vma()
 *
 * Return: 0; -ENOENT if no mapping ends after @addr; -EINVAL for NULL
 * arguments; -ENOMEM if there was no memory to read them; -EIO if the
 * mappings cannot be read otherwise.
 */
UHMM_API int uhmm_find_mapping(struct uhmm_mm *mm, uintptr_t addr,
			       struct uhmm_mapping *out);

#ifdef __cplusplus
}
#endif
#endif /* UHMM_PAGESTATE_H */
