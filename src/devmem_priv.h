/* SPDX-License-Identifier: MIT */
/*
 * devmem.c: device memory pools, device pages, and serving a CPU fault on a
 * device-private entry.
 */
#ifndef UHMM__DEVMEM_PRIV_H
#define UHMM__DEVMEM_PRIV_H

#include "base.h"
#include "vma.h"

/*
 * One CPU fault on a device page, passed explicitly from the fault message
 * to the page being back, the way the kernel passes struct vm_fault: the
 * caller fills vmf.mm, vmf.address and vmf.write; uhmm__fault_device()
 * sets vmf.page and the window and hands &vmf to the driver's
 * migrate_to_ram.  The migration the driver runs with fault_page =
 * vmf.page finds the fault (uhmm__fault_of()) and leaves it the range to
 * wake once the fault is done (the faulting thread resumes when all is
 * done, as in the kernel) and an install error.
 */
struct uhmm__fault {
	struct uhmm_vm_fault vmf;
	uintptr_t wake_start, wake_end;	/* to wake at the end; wake_end 0: none */
	/*
	 * Set by the CPU fault path: uhmm__fault_device() leaves the wake to
	 * its caller, which must first queue the SIGBUS of a fault that
	 * failed (a thread woken before that faults again, and its second
	 * message earns a second SIGBUS for one access).
	 */
	bool defer_wake;
	int install_err;	/* the driver copied a page that could not be put back */
	/*
	 * Pages of the faulting page's pool that left the device during the
	 * driver's call (net of other threads' migrations to it): whether a
	 * fault that failed still made progress (service.c, a fault short of
	 * memory).
	 */
	long brought;
	/*
	 * The mapping the window was clipped to (vma.end 0: none), looked
	 * up when uhmm__as_gen was @vma_gen: migration setup takes it
	 * instead of a second look-up while no change to the address space
	 * has been seen since (uhmm__fault_mapping()).
	 */
	struct uhmm__vma vma;
	unsigned long vma_gen;
	struct uhmm__fault *next;	/* the pool's faults in flight */
};
/* The page a device pfn names, or NULL. */
UHMM__HIDDEN struct uhmm_page *uhmm__pfn_to_page(struct uhmm_mm *mm, uint64_t pfn);
/*
 * Compound device pages (UHMM_DEVMEM_COMPOUND): mark @page's compound page
 * split (no longer mapped whole: reported and migrated page by page); is
 * it whole, with @page at its place in one 2 MiB aligned mapping; split
 * those a change of [s, e) cuts at an unaligned edge (mprotect); the map
 * order of a device entry for a range fault (9 for a whole compound page).
 */
UHMM__HIDDEN void uhmm__folio_split(struct uhmm_page *page);
UHMM__HIDDEN bool uhmm__folio_intact(const struct uhmm_page *page);
UHMM__HIDDEN void uhmm__folio_split_edges(struct uhmm_mm *mm, uintptr_t s, uintptr_t e);
UHMM__HIDDEN unsigned int uhmm__device_order(struct uhmm_mm *mm, uint64_t e);
/* A device-private entry's mapping is gone: drop its page. */
UHMM__HIDDEN void uhmm__drop_device_entry(struct uhmm_mm *mm, uint64_t e);
/* Reference and lock the device page still mapped at @addr, or hold nothing. */
UHMM__HIDDEN bool uhmm__page_grab(struct uhmm_mm *mm, struct uhmm_page *page,
				    uintptr_t addr);
/*
 * Serve the CPU fault @f on the device-private entry @e (read with nothing
 * held): 0 when the driver's migrate_to_ram returned 0 and the page could
 * be put back, -EAGAIN to look again (fork or a pool removal runs, the
 * page changed), -EFAULT when @e names no page, or the driver's error.
 */
UHMM__HIDDEN int uhmm__fault_device(struct uhmm__fault *f, uint64_t e);
/* The fault in flight whose page is @fault_page (locked by it), or NULL. */
UHMM__HIDDEN struct uhmm__fault *uhmm__fault_of(struct uhmm_page *fault_page);
/*
 * The mapping [start, end) lies in as the CPU fault on @fault_page looked
 * it up, if that fault is in flight, the mapping covers the range and no
 * change to the address space was seen since (uhmm__as_gen): true and *@v
 * set, else false.
 */
UHMM__HIDDEN bool uhmm__fault_mapping(struct uhmm_page *fault_page, uintptr_t start,
				     uintptr_t end, struct uhmm__vma *v);
/* Bring every device-resident page home (fork, teardown); 0 or -errno. */
UHMM__HIDDEN int uhmm__evict_all(struct uhmm_mm *mm, struct uhmm_devmem *only);
/* Add a pool to the context (@internal: uhmm's own, for exclusive.c). */
UHMM__HIDDEN int uhmm__devmem_add(struct uhmm_mm *mm, struct uhmm_devmem *pgmap,
				    bool internal);
/* Is @pgmap added to @mm (in its table)? */
UHMM__HIDDEN bool uhmm__pool_added(struct uhmm_mm *mm, const struct uhmm_devmem *pgmap);
/* Take a pool out of the context's table. */
UHMM__HIDDEN void uhmm__pool_detach(struct uhmm_mm *mm, struct uhmm_devmem *pgmap);
/* Teardown: detach all pools (the exclusive pool is torn down before). */
UHMM__HIDDEN void uhmm__devmem_detach_all(struct uhmm_mm *mm);

#endif /* UHMM__DEVMEM_PRIV_H */
