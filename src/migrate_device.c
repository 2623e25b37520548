// SPDX-License-Identifier: MIT
/*
 * Device-range migration (the kernel's migrate_device_range(),
 * migrate_device_pfns(), migrate_device_pages() and
 * migrate_device_finalize()): a driver evicts its pages by device pfn,
 * whatever address holds them.
 */
#include "base.h"
#include "context.h"
#include "devmem_priv.h"
#include "features_priv.h"
#include "log.h"
#include "migrate_lock.h"
#include "migrate_priv.h"
#include "notifier_priv.h"
#include "ptable.h"
#include "range_priv.h"
#include "service.h"
#include "sigblock.h"
#include "uffd.h"

/* ---- device-range migration (eviction by device pfn) ------------------------ */

/*
 * A device-range migration holds migrate_lock for reading from collection
 * to uhmm_migrate_device_finalize(), as a migrate_vma does from setup to
 * finalize: fork's prepare handler (which takes it for writing) must not
 * find device pages locked by one half done, or it cannot bring them home
 * and the child reads zeroes there.
 */
static __thread bool devmig_locked;

static void devmig_unlock(struct uhmm_mm *mm)
{
	if (devmig_locked) {
		devmig_locked = false;
		uhmm__migrate_unlock(mm);
		uhmm__sig_leave();
	}
}

static int collect_device_locked(struct uhmm_mm *mm, uint64_t *src, const uint64_t *pfns,
				 uint64_t start_pfn, unsigned long npages);

/* No signal handler on this thread from here to finalize (sigblock.h). */
static int collect_device(struct uhmm_mm *mm, uint64_t *src, const uint64_t *pfns,
			  uint64_t start_pfn, unsigned long npages)
{
	int ret;

	uhmm__sig_enter();
	ret = collect_device_locked(mm, src, pfns, start_pfn, npages);
	uhmm__sig_leave();	/* the lock's own region lasts to finalize */
	return ret;
}

static int collect_device_locked(struct uhmm_mm *mm, uint64_t *src, const uint64_t *pfns,
				 uint64_t start_pfn, unsigned long npages)
{
	if (!mm || !src || npages == 0)
		return uhmm__err(EINVAL, "migrate device: NULL argument or no pages");
	if (mm != &uhmm__the_mm || atomic_load(&mm->state) == UHMM__MM_DEAD)
		return uhmm__err(EINVAL, "migrate device: context is not live");
	if (uhmm__in_invalidate_callback())
		return uhmm__err(EDEADLK, "migrate device from an invalidate callback");
	/* A page's address may be a freed mapping's whose unmap is not done. */
	uhmm__events_catch_up(mm);
	/*
	 * The caller's array is written below while pages are frozen: a page
	 * of it in device memory (a heap block the program migrated and
	 * freed) would be collected and frozen here, in pfn order, and the
	 * next write to it would wait for this very migration.  Fault it in
	 * first, while nothing is frozen.
	 */
	for (uintptr_t a = uhmm__page_align_down((uintptr_t)src);
	     a < (uintptr_t)(src + npages); a += uhmm__page_size)
		uhmm__touch_one(a, true);
	/* Every pfn is checked before any page is claimed. */
	for (unsigned long i = 0; i < npages; i++) {
		uint64_t pfn = pfns ? pfns[i] : start_pfn + i;

		if (!uhmm__pfn_to_page(mm, pfn))
			return uhmm__err(EINVAL, "migrate device: pfn %#llx names no device page",
					 (unsigned long long)pfn);
	}
	if (!uhmm__migrate_lock_held()) {
		uhmm__migrate_lock_read(mm);
		devmig_locked = true;
		uhmm__sig_enter();	/* until uhmm_migrate_device_finalize() */
	}
	for (unsigned long i = 0; i < npages; i++) {
		uint64_t pfn = pfns ? pfns[i] : start_pfn + i;
		struct uhmm_page *page = uhmm__pfn_to_page(mm, pfn);
		_Atomic uint64_t *slot;
		bool inv, ok;
		uintptr_t a;
		uint64_t e;

		src[i] = 0;
		if (!page)
			continue;	/* its pool was removed meanwhile */
		a = atomic_load(&page->addr);
		if (!a || !uhmm__page_grab(mm, page, a))
			continue;
		/* Mirrors of the page's address drop it before it is frozen. */
		inv = uhmm__invalidate_start(mm, a, a + uhmm__page_size,
					     UHMM_NOTIFY_MIGRATE, 0, NULL);
		slot = uhmm__ptable_slot(&mm->ptable, a, false);
		e = slot ? atomic_load(slot) : 0;
		ok = (e & UHMM__PTE_TYPE_MASK) == UHMM__PTE_DEVICE &&
		     uhmm__pte_payload(e) == pfn &&
		     uhmm__ptable_cmpxchg(&mm->ptable, slot, &e,
					  (e & ~UHMM__PTE_TYPE_MASK) | UHMM__PTE_MIGRATING);
		if (inv)
			uhmm__invalidate_end(mm);
		if (!ok) {
			uhmm_page_unlock(page);
			uhmm_page_put(page);
			continue;
		}
		uhmm_page_put(page);	/* the entry's reference keeps it now */
		src[i] = uhmm_migrate_pfn(pfn) | UHMM_MIGRATE_PFN_MIGRATE;
		if (e & UHMM__PTE_WRITE)
			src[i] |= UHMM_MIGRATE_PFN_WRITE;
	}
	return 0;
}

int uhmm_migrate_device_range(struct uhmm_mm *mm, uint64_t *src, uint64_t start_pfn,
			      unsigned long npages)
{
	return collect_device(mm, src, NULL, start_pfn, npages);
}

int uhmm_migrate_device_pfns(struct uhmm_mm *mm, uint64_t *src, unsigned long npages)
{
	if (!mm || !src || npages == 0)
		return uhmm__err(EINVAL, "migrate device pfns: NULL argument or no pages");
	/*
	 * No copy of the pfns: collection reads entry i before it writes it,
	 * and allocating (and freeing, with pages frozen) is what it must not
	 * do.
	 */
	return collect_device(mm, src, src, 0, npages);
}

void uhmm_migrate_device_pages(struct uhmm_mm *mm, uint64_t *src, uint64_t *dst,
			       unsigned long npages)
{
	if (!mm || !src || !dst) {
		uhmm__err(EINVAL, "migrate device pages: NULL argument");
		return;
	}
	for (unsigned long i = 0; i < npages; i++)
		if ((src[i] & UHMM_MIGRATE_PFN_MIGRATE) &&
		    (!(dst[i] & UHMM_MIGRATE_PFN_VALID) || uhmm_migrate_pfn_is_device(dst[i])))
			src[i] &= ~UHMM_MIGRATE_PFN_MIGRATE;
}

static void migrate_device_finalize(struct uhmm_mm *mm, uint64_t *src, uint64_t *dst,
				    unsigned long npages);

/*
 * Where the entry of @page is, under remap_lock: a raw mremap moves it
 * (service.c, ptable_move()) and the page's address with it.  0 if the
 * page's MIGRATING entry is not there: an entry moved over it (its
 * address was unmapped first), which means GONE.
 */
static uintptr_t page_where(struct uhmm_mm *mm, struct uhmm_page *page,
			    _Atomic uint64_t **slotp, uint64_t *ep)
{
	uintptr_t a;

	pthread_mutex_lock(&mm->remap_lock);
	a = atomic_load(&page->addr);
	*slotp = a ? uhmm__ptable_slot(&mm->ptable, a, false) : NULL;
	*ep = *slotp ? atomic_load(*slotp) : 0;
	pthread_mutex_unlock(&mm->remap_lock);
	if (!*slotp || (*ep & UHMM__PTE_TYPE_MASK) != UHMM__PTE_MIGRATING ||
	    uhmm__pte_payload(*ep) != page->pfn)
		return 0;
	return a;
}

/*
 * Finish one collected page: its copy installed where its entry is now
 * (data installed before a raw mremap moved the entry went with it), or,
 * not migrated or not installable, back to a device entry there; an
 * entry unmapped meanwhile (GONE) is dropped with its page.  The entry
 * changes before the page is unlocked or freed.
 */
static void settle(struct uhmm_mm *mm, struct uhmm_page *page, uint64_t src, uint64_t dst)
{
	bool placed = false, keep;
	_Atomic uint64_t *slot;
	uintptr_t a;
	uint64_t e;

	for (;;) {
		a = page_where(mm, page, &slot, &e);
		if (!a) {
			/* Gone, and its slot another's now: drop the page, leave the slot. */
			keep = false;
			break;
		}
		keep = false;
		if (!(e & UHMM__PTE_GONE) && (src & UHMM_MIGRATE_PFN_MIGRATE) && !placed) {
			uintptr_t from = (uintptr_t)(uhmm_migrate_pfn_to_pfn(dst) << uhmm__page_shift);

			if (uhmm__uffd_copy(mm, a, from, uhmm__page_size) == 0) {
				placed = true;
			} else {
				_Atomic uint64_t *s2;
				uint64_t e2;

				if (page_where(mm, page, &s2, &e2) != a)
					continue;	/* moved meanwhile: install there */
				uhmm__warn("migrate device: cannot install %#lx", (unsigned long)a);
				keep = true;
			}
		} else if (!(e & UHMM__PTE_GONE) && !placed) {
			keep = true;	/* not migrating: a device page again */
		}
		if (uhmm__ptable_cmpxchg(&mm->ptable, slot, &e, keep ?
					 (e & ~UHMM__PTE_TYPE_MASK) | UHMM__PTE_DEVICE : 0))
			break;
		/* Marked GONE or moved meanwhile: look again (an install stays done). */
	}
	if (!keep) {
		atomic_fetch_sub(&page->pgmap->nr_resident, 1);
		uhmm_page_unlock(page);
		uhmm_page_put(page);
	} else {
		uhmm_page_unlock(page);
	}
	if (a)
		uhmm__uffd_wake(mm, a, a + uhmm__page_size);
}

/* The region collection entered ends after the last lock (sigblock.h). */
void uhmm_migrate_device_finalize(struct uhmm_mm *mm, uint64_t *src, uint64_t *dst,
				  unsigned long npages)
{
	uhmm__sig_enter();
	migrate_device_finalize(mm, src, dst, npages);
	uhmm__sig_leave();
}

static void migrate_device_finalize(struct uhmm_mm *mm, uint64_t *src, uint64_t *dst,
				    unsigned long npages)
{
	if (!mm || !src || !dst) {
		if (mm == &uhmm__the_mm)
			devmig_unlock(mm);
		uhmm__err(EINVAL, "migrate device finalize: NULL argument");
		return;
	}
	for (unsigned long i = 0; i < npages; i++) {
		struct uhmm_page *page;

		if (!(src[i] & UHMM_MIGRATE_PFN_VALID))
			continue;
		page = uhmm__pfn_to_page(mm, uhmm_migrate_pfn_to_pfn(src[i]));
		if (page)
			settle(mm, page, src[i], dst[i]);
	}
	devmig_unlock(mm);
	uhmm__migrate_done_broadcast(mm);
}
