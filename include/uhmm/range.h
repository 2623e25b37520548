/* SPDX-License-Identifier: MIT */
/**
 * DOC: range fault (the kernel's hmm_range_fault)
 *
 * uhmm_range_fault() snapshots, and optionally faults in, the CPU page table
 * entries of a range so that a device can mirror them.  Each page gets one
 * 64-bit "pfn" word: flags in the high bits, and in the low bits either the
 * page's system page number (its virtual address divided by the page size:
 * in user space the address *is* the system page's name) or, for a page in
 * device-private memory of the caller's owner, the device page id.
 */
#ifndef UHMM_RANGE_H
#define UHMM_RANGE_H

#include <stddef.h>
#include <stdint.h>
#include <uhmm/mm.h>
#include <uhmm/notifier.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Output flags. */
#define UHMM_PFN_VALID		(UINT64_C(1) << 63)	/* CPU may read */
#define UHMM_PFN_WRITE		(UINT64_C(1) << 62)	/* CPU may write, no COW */
#define UHMM_PFN_ERROR		(UINT64_C(1) << 61)	/* no usable mapping */
#define UHMM_PFN_ZERO		(UINT64_C(1) << 60)	/* the shared zero page */
#define UHMM_PFN_DEVICE_PRIVATE	(UINT64_C(1) << 59)	/* low bits: device page id */
#define UHMM_PFN_ORDER_SHIFT	52			/* 5 bits: log2(mapping size / page size) */
#define UHMM_PFN_ORDER_MASK	(UINT64_C(0x1f) << UHMM_PFN_ORDER_SHIFT)
#define UHMM_PFN_FLAGS		(UINT64_C(0xfff) << 52)
#define UHMM_PFN_NUMBER_MASK	((UINT64_C(1) << 52) - 1)

/* Input (request) flags, as the kernel's: the same bits as VALID/WRITE. */
#define UHMM_PFN_REQ_FAULT	UHMM_PFN_VALID
#define UHMM_PFN_REQ_WRITE	UHMM_PFN_WRITE

/**
 * struct uhmm_range - one range fault request
 * @notifier: the interval notifier covering [@start, @end)
 * @notifier_seq: from uhmm_interval_read_begin(@notifier)
 * @start: first byte (page aligned)
 * @end: one past the last byte (page aligned, > @start)
 * @hmm_pfns: one word per page: input request flags, output pfn words
 * @default_flags: request flags applied to every page
 * @pfn_flags_mask: which bits of each @hmm_pfns input word are honoured
 *	(0 = ignore the per-page input and use only @default_flags)
 * @dev_private_owner: pages in device-private memory whose owner is this
 *	token are reported as such instead of being faulted back
 */
struct uhmm_range {
	struct uhmm_interval_notifier *notifier;
	unsigned long notifier_seq;
	uintptr_t start;
	uintptr_t end;
	uint64_t *hmm_pfns;
	uint64_t default_flags;
	uint64_t pfn_flags_mask;
	const void *dev_private_owner;
};

/**
 * uhmm_range_fault() - snapshot and optionally fault in a range
 * @range: the request
 *
 * For each page the request is (input & @pfn_flags_mask) | @default_flags.
 * Pages without %UHMM_PFN_REQ_FAULT are only snapshotted, with no side
 * effect: a present page gives VALID (and WRITE when the mapping allows
 * writes and the page is not shared copy-on-write), ZERO for the zero page,
 * an order of 9 (x86-64, 4 KiB pages) when mapped by a 2 MiB huge page; a
 * page of the caller's device-private memory gives VALID|DEVICE_PRIVATE and
 * its device page id; anything not present gives 0; no mapping, no read
 * access and VM_IO/PFNMAP-style mappings give ERROR.  hugetlbfs memory is
 * mirrored as the kernel mirrors it: every word of a hugetlbfs mapping,
 * present or not, carries the huge page's order (9 for 2 MiB, 18 for 1 GiB
 * pages on x86-64; read it with uhmm_pfn_to_map_order() on VALID words).
 * Pages with REQ_FAULT are made present as a CPU access would (REQ_WRITE:
 * as a CPU write, allocating or breaking copy-on-write); a page in another
 * owner's device memory is brought back to system memory first, from the
 * calling thread (its pool's migrate_to_ram runs there, as in the kernel).
 *
 * All requests are checked before anything is faulted: if any cannot be
 * satisfied, those pages are set to ERROR and the call returns an error
 * with nothing faulted.
 *
 * Context: any thread but uhmm's service thread (-EDEADLK there), without
 * driver locks that the invalidate callback takes: it first waits until
 * the service thread has applied every pending unmap event, which runs
 * invalidate callbacks.
 *
 * Return: 0; -EBUSY if an invalidation of @range->notifier ran since
 * @range->notifier_seq (call uhmm_interval_read_begin() and retry); -EFAULT
 * if a faulting request hits no mapping, no access or an IO/PFNMAP
 * mapping, or a hugetlbfs page cannot be allocated; -EPERM if a write request hits a read-only mapping;
 * -EINVAL for a NULL argument, a notifier that is not inserted (never, or
 * no longer: removed or released by teardown), an unaligned or empty range,
 * or a range not inside the notifier; -ENOMEM (also when a device page could
 * not be put back in system memory: it stays on the device, intact); -EFAULT
 * when the device's migrate_to_ram failed; -EIO if /proc/self cannot be
 * read; -EDEADLK from a callback or on uhmm's service thread.  Bits of a request other than %UHMM_PFN_REQ_FAULT
 * and %UHMM_PFN_REQ_WRITE are ignored, and REQ_WRITE without REQ_FAULT asks
 * for nothing, as in the kernel.
 */
UHMM_API int uhmm_range_fault(struct uhmm_range *range);

/**
 * uhmm_pfn_to_addr() - system address of a valid, non-device pfn word
 * @pfn: an output word of uhmm_range_fault()
 *
 * Return: the virtual address of the page; 0 (with a reason in
 * uhmm_last_error()) for a word without %UHMM_PFN_VALID, or with
 * %UHMM_PFN_ERROR or %UHMM_PFN_DEVICE_PRIVATE.
 */
UHMM_API uintptr_t uhmm_pfn_to_addr(uint64_t pfn);

/**
 * uhmm_pfn_to_map_order() - log2 of the CPU mapping size in pages
 * @pfn: an output word of uhmm_range_fault()
 */
static inline unsigned int uhmm_pfn_to_map_order(uint64_t pfn)
{
	return (unsigned int)((pfn & UHMM_PFN_ORDER_MASK) >> UHMM_PFN_ORDER_SHIFT);
}

#ifdef __cplusplus
}
#endif
#endif /* UHMM_RANGE_H */
