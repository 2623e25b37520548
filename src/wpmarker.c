// SPDX-License-Identifier: MIT
/*
 * Device-resident pages in /proc/self/pagemap as the kernel shows them.
 *
 * The kernel's CPU page table holds a swap-type entry for a device-private
 * page: pagemap reports it as PM_SWAP, not present (fs/proc/task_mmu.c,
 * pte_to_pagemap_entry), and so does PAGEMAP_SCAN (PAGE_IS_SWAPPED).  uhmm
 * takes the page out of the CPU page table, which leaves an empty entry.
 * Where the kernel offers UFFD_FEATURE_WP_UNPOPULATED (6.4), uhmm puts a
 * userfaultfd write-protect marker there instead: UFFDIO_WRITEPROTECT on an
 * empty entry of an anonymous mapping registered MISSING|WP.  pagemap shows
 * a marker as PM_SWAP|PM_UFFD_WP (root also sees swap type 31, the
 * marker type, offset 1), PAGEMAP_SCAN as SWAPPED without WRITTEN, and a
 * CPU access to it raises a MISSING fault, as an empty entry does
 * (mm/memory.c: handle_pte_marker -> pte_marker_handle_uffd_wp ->
 * do_pte_missing), so the fault path is the same.  Measured on 6.18:
 * MISSING fault with flags 0 on a read, WRITE on a write.
 *
 * What the kernel does with a marker, and what uhmm does about it:
 *  - UFFDIO_COPY installs over a marker; UFFDIO_ZEROPAGE and a UFFDIO_MOVE
 *    destination need a truly empty entry (-EEXIST), and a marker as a
 *    MOVE source is -EFAULT.  So a fault-back that installs by MOVE clears
 *    the run's markers first (UFFDIO_WRITEPROTECT without MODE_WP drops
 *    them, one ioctl per run); installs by COPY need nothing.
 *  - MADV_DONTNEED (and munmap) drop markers of anonymous memory, as they
 *    drop device-private entries; MADV_FREE keeps both; mprotect keeps
 *    markers; mremap moves them with the mapping (uhmm uses EVENT_REMAP);
 *    fork drops them in the child (its mapping is not registered), where
 *    uhmm brought every device page home before anyway.
 *
 * The markers are a picture, never the truth: uhmm's special-entry table
 * says which pages are on a device.  A device page without a marker
 * (the ioctl failed, UHMM_DISABLE=wp_unpopulated, an older kernel) works
 * exactly as before, and a marker whose page is no longer on a device (a
 * raw MADV_FREE dropped the device entry, a race with an unmap) counts as
 * an empty entry everywhere: pagemap decoding (pagestate.c), a fault's
 * zero fill (service.c clears it and fills), a migration's claim (migrate.c
 * clears it before freezing the page).  Nothing depends on a marker being
 * there, so nothing is lost when one is missing or stale.
 */
#include <string.h>
#include <sys/mman.h>

#include "base.h"
#include "context.h"
#include "features_priv.h"
#include "inject_priv.h"
#include "pagemap.h"
#include "sys.h"
#include "uffd.h"
#include "wpmarker.h"

bool uhmm__markers_on(const struct uhmm_mm *mm)
{
	const uint64_t need = UFFD_FEATURE_WP_UNPOPULATED | UFFD_FEATURE_PAGEFAULT_FLAG_WP;

	return uhmm__has(UHMM_FEAT_WP_UNPOPULATED) && uhmm__has(UHMM_FEAT_UFFD_WP) &&
	       (mm->uffd_features & need) == need;
}

/* UFFDIO_WRITEPROTECT over [start, end), retrying while an event is pending. */
static int writeprotect(struct uhmm_mm *mm, uintptr_t start, uintptr_t end, uint64_t mode)
{
	for (;;) {
		struct uffdio_writeprotect wp = {
			.range = { .start = start, .len = end - start },
			.mode = mode,
		};

		if (uhmm__uffd_ioctl(mm->uffd, UFFDIO_WRITEPROTECT, &wp) == 0)
			return 0;
		if (errno != EAGAIN)
			return -errno;
		uhmm__eagain_backoff(mm);
	}
}

int uhmm__marker_set(struct uhmm_mm *mm, uintptr_t start, uintptr_t end)
{
	if (start >= end || !uhmm__markers_on(mm))
		return 0;
	return writeprotect(mm, start, end, UFFDIO_WRITEPROTECT_MODE_WP);
}

int uhmm__marker_clear(struct uhmm_mm *mm, uintptr_t start, uintptr_t end)
{
	if (start >= end || !uhmm__markers_on(mm))
		return 0;
	/* Waking is the caller's business (finalize wakes once all is done). */
	return writeprotect(mm, start, end, UFFDIO_WRITEPROTECT_MODE_DONTWAKE);
}

/*
 * Markers need a page table under them: where a huge page left for the
 * device (its PMD moved whole to staging), marking its pages allocated
 * one, and a UFFDIO_MOVE of the huge page back finds a PMD that is not
 * empty and splits the page (measured: a 2 MiB THP round trip came back
 * as 512 small pages).  MADV_DONTNEED of the whole blocks drops their
 * markers and, with CONFIG_PT_RECLAIM (6.14), frees the empty page tables,
 * after which the move installs one PMD again.  Every page of such a block
 * is held MIGRATING by the caller and has no CPU data (its data is in
 * staging), so the discard loses nothing.  Its UFFD_EVENT_REMOVE is uhmm's
 * own: a one-shot selfop makes the worker ignore it, and is freed once the
 * worker has handled it; the caller may be the worker itself (a CPU
 * fault's migrate_to_ram), which could not wait for its own event.
 */
void uhmm__marker_make_pmd_room(struct uhmm_mm *mm, uintptr_t start, uintptr_t end,
				uintptr_t src)
{
	const uintptr_t huge = 2u << 20;
	uintptr_t hs = (start + huge - 1) & ~(huge - 1), he = end & ~(huge - 1);
	uintptr_t lo, hi;
	struct uhmm__selfop *op;

	if (hs >= he || hs < start || !uhmm__markers_on(mm) ||
	    !strcmp(uhmm__sysinfo()->thp, "never") ||
	    !strcmp(uhmm__sysinfo()->thp, "unavailable"))
		return;
	/*
	 * Only blocks whose staging is a huge page can come back as one: for
	 * small pages the discard would cost an event and the page table
	 * would be allocated again by the move.  Staging sits at the same
	 * offsets within 2 MiB as the range.
	 */
	switch (uhmm__pagemap_huge_span(src + (hs - start), src + (he - start), &lo, &hi)) {
	case 1:
		return;
	case 0:
		hs += (lo - src) - (hs - start);
		he = hs + (hi - lo);
		break;
	default:
		break;	/* cannot tell: discard every whole block */
	}
	op = uhmm__malloc(sizeof(*op));
	if (!op)
		return;		/* the move splits the huge page: slower, nothing lost */
	uhmm__selfop_begin(mm, op, hs, he, UHMM__SELFOP_INTERNAL | UHMM__SELFOP_ONESHOT);
	uhmm__sys_madvise((void *)hs, he - hs, MADV_DONTNEED);
	/* Its events (if any) were read before madvise returned. */
	pthread_mutex_lock(&mm->selfop_lock);
	op->done_seq = UHMM__MAX(atomic_load(&mm->ev_read), 1ul);
	pthread_mutex_unlock(&mm->selfop_lock);
}
