// SPDX-License-Identifier: MIT
/*
 * Device memory pools (dev_pagemap), device page descriptors, and the CPU
 * fault path into a device: a CPU access to a device-resident page reaches
 * the pool's migrate_to_ram with the page referenced and locked.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "base.h"
#include "context.h"
#include "devmem_priv.h"
#include "features_priv.h"
#include "inject_priv.h"
#include "log.h"
#include "migrate_lock.h"
#include "ownmem.h"
#include "ptable.h"
#include "sigblock.h"
#include "sys.h"
#include "uffd.h"
#include "vma.h"

#define POOL_SHIFT 32
#define MAX_POOL_PAGES (UINT64_C(1) << POOL_SHIFT)

static struct uhmm__pool_faults *fa_new(bool adaptive);
static void fa_free(struct uhmm__pool_faults *fa);

/*
 * mm->pools[] is written under pool_lock with release stores and read
 * anywhere (the fault path, eviction, stats) with acquire loads: every
 * access goes through these two, never a plain read.
 */
static inline struct uhmm_devmem *pool_at(struct uhmm_mm *mm, unsigned int id)
{
	return __atomic_load_n(&mm->pools[id], __ATOMIC_ACQUIRE);
}

static inline void pool_set(struct uhmm_mm *mm, unsigned int id, struct uhmm_devmem *pgmap)
{
	__atomic_store_n(&mm->pools[id], pgmap, __ATOMIC_RELEASE);
}

int uhmm__devmem_add(struct uhmm_mm *mm, struct uhmm_devmem *pgmap, bool internal)
{
	struct uhmm__pool_faults *fa;
	struct uhmm_page *pages;
	unsigned int id;

	if (!mm || !pgmap || !pgmap->ops || !pgmap->ops->page_free ||
	    !pgmap->ops->migrate_to_ram)
		return uhmm__err(EINVAL, "devmem add: NULL argument or missing ops");
	if (mm != &uhmm__the_mm || atomic_load(&mm->state) != UHMM__MM_LIVE)
		return uhmm__err(EINVAL, "devmem add: context is not live");
	if (!pgmap->owner)
		return uhmm__err(EINVAL, "devmem add: NULL owner");
	if (pgmap->nr_pages == 0 || pgmap->nr_pages >= MAX_POOL_PAGES)
		return uhmm__err(EINVAL, "devmem add: nr_pages %zu out of range",
				 pgmap->nr_pages);
	if (pgmap->fault_around & (pgmap->fault_around - 1))
		return uhmm__err(EINVAL, "devmem add: fault_around %zu is not a power of two",
				 pgmap->fault_around);
	if (pgmap->pages)
		return uhmm__err(EINVAL, "devmem add: pool already added");
	if (pgmap->flags & ~UHMM_DEVMEM_COMPOUND)
		return uhmm__err(EINVAL, "devmem add: unknown flags %#llx",
				 (unsigned long long)pgmap->flags);
	if (!internal && uhmm__in_callback())
		return uhmm__err(EDEADLK, "devmem add from a uhmm callback");
	if (!internal && pgmap->ops) {
		/* dlclose of the driver's module keeps it (docs/LIMITATIONS.md). */
		uhmm__pin_module((const void *)pgmap->ops->migrate_to_ram);
		uhmm__pin_module((const void *)pgmap->ops->page_free);
	}
	pages = uhmm__calloc(pgmap->nr_pages, sizeof(*pages));
	/* The default window adapts; one the driver chose does not. */
	fa = pages ? fa_new(!pgmap->fault_around) : NULL;
	if (!fa) {
		uhmm__free(pages);
		return uhmm__err(ENOMEM, "devmem add: out of memory for %zu pages",
				 pgmap->nr_pages);
	}
	pgmap->folio_meta = NULL;
	if (pgmap->flags & UHMM_DEVMEM_COMPOUND) {
		pgmap->folio_meta = uhmm__calloc(pgmap->nr_pages, sizeof(*pgmap->folio_meta));
		if (!pgmap->folio_meta) {
			uhmm__free(pages);
			fa_free(fa);
			return uhmm__err(ENOMEM, "devmem add: out of memory for %zu pages",
					 pgmap->nr_pages);
		}
	}

	pthread_mutex_lock(&mm->pool_lock);
	for (id = 1; id < UHMM__MAX_POOLS && pool_at(mm, id); id++)
		;
	if (id == UHMM__MAX_POOLS) {
		pthread_mutex_unlock(&mm->pool_lock);
		uhmm__free(pages);
		uhmm__free((void *)pgmap->folio_meta);
		pgmap->folio_meta = NULL;
		fa_free(fa);
		return uhmm__err(ENOSPC, "devmem add: too many pools");
	}
	for (size_t i = 0; i < pgmap->nr_pages; i++) {
		pages[i].pgmap = pgmap;
		pages[i].pfn = UHMM_DEVICE_PFN_BASE | ((uint64_t)id << POOL_SHIFT) | i;
	}
	if (!pgmap->fault_around)
		pgmap->fault_around = UHMM_FAULT_AROUND_DEFAULT;
	pgmap->pages = pages;
	pgmap->faults = fa;
	pgmap->id = id;
	pgmap->mm = mm;
	atomic_store(&pgmap->nr_resident, 0);
	pool_set(mm, id, pgmap);
	pthread_mutex_unlock(&mm->pool_lock);
	if (!internal)
		atomic_fetch_add(&mm->users, 1);	/* the pool holds a reference */
	return 0;
}

int uhmm_devmem_add(struct uhmm_mm *mm, struct uhmm_devmem *pgmap)
{
	int ret;

	/* ownmem's and pool_lock: no handler may run while they are held (sigblock.h). */
	uhmm__sig_enter();
	ret = uhmm__devmem_add(mm, pgmap, false);
	uhmm__sig_leave();
	return ret;
}

void uhmm__pool_detach(struct uhmm_mm *mm, struct uhmm_devmem *pgmap)
{
	pthread_mutex_lock(&mm->pool_lock);
	pool_set(mm, pgmap->id, NULL);
	pthread_mutex_unlock(&mm->pool_lock);
	uhmm__free(pgmap->pages);
	uhmm__free((void *)pgmap->folio_meta);
	pgmap->folio_meta = NULL;
	pgmap->pages = NULL;
	fa_free(pgmap->faults);
	pgmap->faults = NULL;
	pgmap->mm = NULL;
	pgmap->id = 0;
}

bool uhmm__pool_added(struct uhmm_mm *mm, const struct uhmm_devmem *pgmap)
{
	return pgmap && pgmap->pages && pgmap->mm == mm && pool_at(mm, pgmap->id) == pgmap;
}

void uhmm__devmem_detach_all(struct uhmm_mm *mm)
{
	for (unsigned int id = 1; id < UHMM__MAX_POOLS; id++) {
		struct uhmm_devmem *pgmap = pool_at(mm, id);

		if (pgmap)
			uhmm__pool_detach(mm, pgmap);
	}
}

struct uhmm_page *uhmm_devmem_page(struct uhmm_devmem *pgmap, size_t index)
{
	if (!pgmap || !pgmap->pages || index >= pgmap->nr_pages) {
		uhmm__err(EINVAL, "uhmm_devmem_page: %s", !pgmap ? "NULL pool" :
			  !pgmap->pages ? "pool not added" : "index beyond the pool");
		return NULL;
	}
	return &pgmap->pages[index];
}

struct uhmm_page *uhmm__pfn_to_page(struct uhmm_mm *mm, uint64_t pfn)
{
	unsigned int id;
	struct uhmm_devmem *pgmap;
	uint64_t idx;

	if (!(pfn & UHMM_DEVICE_PFN_BASE))
		return NULL;
	id = (unsigned int)((pfn & ~UHMM_DEVICE_PFN_BASE) >> POOL_SHIFT);
	idx = pfn & (MAX_POOL_PAGES - 1);
	if (id == 0 || id >= UHMM__MAX_POOLS)
		return NULL;
	pgmap = pool_at(mm, id);
	if (!pgmap || idx >= pgmap->nr_pages)
		return NULL;
	return &pgmap->pages[idx];
}

struct uhmm_page *uhmm_pfn_to_page(struct uhmm_mm *mm, uint64_t pfn)
{
	struct uhmm_page *page;

	if (mm != &uhmm__the_mm) {
		uhmm__err(EINVAL, "uhmm_pfn_to_page: NULL or not a uhmm context");
		return NULL;
	}
	page = uhmm__pfn_to_page(mm, pfn);
	if (!page)
		uhmm__err(EINVAL, "uhmm_pfn_to_page: %#llx names no page of a live pool",
			  (unsigned long long)pfn);
	return page;
}

static int folio_page_init(struct uhmm_page *page);

void uhmm_page_init(struct uhmm_page *page)
{
	int z = 0;

	if (!page) {
		uhmm__err(EINVAL, "uhmm_page_init: NULL page");
		return;
	}
	if (page->pgmap->folio_meta) {
		folio_page_init(page);	/* a page of a compound pool */
		return;
	}
	/* Only a free page: re-initialising one in use would lose its references. */
	if (!atomic_compare_exchange_strong(&page->refcount, &z, 1)) {
		uhmm__err(EBUSY, "uhmm_page_init: device page %#llx is in use "
			  "(reference count %d): left unchanged",
			  (unsigned long long)page->pfn, z);
		return;
	}
	atomic_store(&page->locked, 1);
	atomic_store(&page->addr, 0);
}

/*
 * Add @delta to a page's reference count, never from 0 (a free page gains
 * no reference and loses none, as with the kernel's get_page/put_page).
 * The count before, or 0 when refused (with a reason, unless @who is NULL:
 * a caller that only tries).
 */
static int page_ref_add(struct uhmm_page *page, int delta, const char *who)
{
	int old;

	if (!page) {
		if (who)
			uhmm__err(EINVAL, "%s: NULL page", who);
		return 0;
	}
	old = atomic_load(&page->refcount);
	do {
		if (old <= 0) {
			if (who)
				uhmm__err(EINVAL, "%s: device page %#llx %s: left unchanged", who,
					  (unsigned long long)page->pfn,
					  delta > 0 ? "is free" : "has no reference to drop");
			return 0;
		}
	} while (!atomic_compare_exchange_weak(&page->refcount, &old, old + delta));
	return old;
}

void uhmm_page_get(struct uhmm_page *page)
{
	page_ref_add(page, 1, "uhmm_page_get");
}

/*
 * A reference on a page in use (reference count above 0), or false: the
 * page is free.  For a page found through an entry read with nothing held.
 */
static bool page_tryget(struct uhmm_page *page)
{
	return page_ref_add(page, 1, NULL) != 0;
}

/*
 * @page was found through the entry at @addr, read with nothing held:
 * since then it may have been migrated home and freed, and even given to
 * another address.  Take a reference only on a page in use, lock it, and
 * only then check that it is still the page mapped at @addr (a migration
 * needs the lock to take it away; the reference keeps it from being freed
 * and reused).  true with both held, or false with neither.  Locking and
 * "referencing" a free page instead let the last put free it a second time
 * while another address mapped it.
 */
bool uhmm__page_grab(struct uhmm_mm *mm, struct uhmm_page *page, uintptr_t addr)
{
	uint64_t now;

	if (!page_tryget(page))
		return false;
	if (!uhmm_page_trylock(page)) {
		uhmm_page_put(page);
		return false;
	}
	now = uhmm__ptable_get(&mm->ptable, addr);
	if ((now & UHMM__PTE_TYPE_MASK) != UHMM__PTE_DEVICE ||
	    uhmm__pte_payload(now) != page->pfn) {
		uhmm_page_unlock(page);
		uhmm_page_put(page);
		return false;
	}
	return true;
}

static struct uhmm_page *folio_release(struct uhmm_page *page);

void uhmm_page_put(struct uhmm_page *page)
{
	if (page_ref_add(page, -1, "uhmm_page_put") == 1) {
		if (page->pgmap->folio_meta) {
			page = folio_release(page);
			if (!page)
				return;	/* the rest of its compound page is in use */
		}
		atomic_store(&page->addr, 0);
		page->pgmap->ops->page_free(page);
	}
}

bool uhmm_page_trylock(struct uhmm_page *page)
{
	int z = 0;

	if (!page)
		return uhmm__err(EINVAL, "uhmm_page_trylock: NULL page"), false;
	return atomic_compare_exchange_strong(&page->locked, &z, 1);
}

void uhmm_page_unlock(struct uhmm_page *page)
{
	if (!page) {
		uhmm__err(EINVAL, "uhmm_page_unlock: NULL page");
		return;
	}
	if (atomic_exchange(&page->locked, 0) == 0) {
		uhmm__err(EINVAL, "uhmm_page_unlock: device page %#llx was not locked",
			  (unsigned long long)page->pfn);
	}
}

void uhmm__drop_device_entry(struct uhmm_mm *mm, uint64_t e)
{
	struct uhmm_page *page = uhmm__pfn_to_page(mm, uhmm__pte_payload(e));
	struct uhmm_devmem *pgmap;

	if (!page)
		return;
	/* Part of a compound page unmapped: the rest is mapped page by page. */
	uhmm__folio_split(page);
	/*
	 * The put (and the driver's page_free) before the residency count:
	 * this runs on the worker for an unmap or discard event, with no lock
	 * uhmm_devmem_remove() waits for, and a removal that saw the count
	 * reach 0 frees the pool's descriptors (round 6 hunt, FINDINGS item
	 * 21; TSan in test_remove_unmapped concurrent).  While the count
	 * still holds the page, a removal says -EBUSY and the pool stays.
	 */
	pgmap = page->pgmap;
	uhmm_page_put(page);
	atomic_fetch_sub(&pgmap->nr_resident, 1);
}

/* ---- compound device pages (UHMM_DEVMEM_COMPOUND) ---------------------- */

/*
 * A compound device page is 512 consecutive, aligned descriptors of a pool
 * added with UHMM_DEVMEM_COMPOUND: each keeps its own reference count,
 * lock and address (every entry of the special-entry table names one
 * page, as before), and a 32-bit word of pgmap->folio_meta:
 *
 *   bits 0-4	the order of the compound page the page belongs to (0 or 9)
 *   DEFERRED	the page's last reference went while its compound page was
 *		in use: page_free waits for the rest of it
 *   SPLIT	(head) the compound page is no longer mapped whole at one
 *		2 MiB aligned address: reported and migrated page by page
 *   bits 16-31	(head) pages of it still in use
 *
 * Orders, DEFERRED and the live count change under folio_lock; SPLIT is
 * set by an atomic or; readers load the words with nothing held.  When the
 * last page of a compound page is put, page_free runs once, for the head,
 * which still says order 9, so the driver takes its 2 MiB back whole (the
 * kernel splits the folio at a partial unmap or migration and frees the
 * pieces; docs/LIMITATIONS.md).
 */
#define FM_ORDER	UINT32_C(0x1f)
#define FM_DEFERRED	UINT32_C(0x20)
#define FM_SPLIT	UINT32_C(0x40)
#define FM_LIVE_SHIFT	16
#define FOLIO_NR	(1u << UHMM_PMD_ORDER)

static pthread_mutex_t folio_lock = PTHREAD_MUTEX_INITIALIZER;

static inline size_t page_idx(const struct uhmm_page *page)
{
	return (size_t)(page->pfn & (MAX_POOL_PAGES - 1));
}

static inline uint32_t meta_of(const struct uhmm_page *page)
{
	_Atomic uint32_t *meta = page->pgmap->folio_meta;

	return meta ? atomic_load_explicit(&meta[page_idx(page)], memory_order_acquire) : 0;
}

unsigned int uhmm_page_order(const struct uhmm_page *page)
{
	return page ? (unsigned int)(meta_of(page) & FM_ORDER) : 0;
}

struct uhmm_page *uhmm_page_folio(struct uhmm_page *page)
{
	if (!page || !(meta_of(page) & FM_ORDER))
		return page;
	return &page->pgmap->pages[page_idx(page) & ~(size_t)(FOLIO_NR - 1)];
}

/* uhmm_page_init() of a page of a compound pool: order 0 from now on. */
static int folio_page_init(struct uhmm_page *page)
{
	_Atomic uint32_t *meta = page->pgmap->folio_meta;
	size_t idx = page_idx(page);
	int z = 0, ret = 0;

	uhmm__sig_enter();	/* folio_lock: no handler may run while it is held */
	pthread_mutex_lock(&folio_lock);
	if ((atomic_load(&meta[idx]) & FM_DEFERRED) ||
	    !atomic_compare_exchange_strong(&page->refcount, &z, 1)) {
		ret = uhmm__err(EBUSY, "uhmm_page_init: device page %#llx is in use "
				"(reference count %d, or its compound page is): left unchanged",
				(unsigned long long)page->pfn, z);
	} else {
		atomic_store(&meta[idx], 0);
		atomic_store(&page->locked, 1);
		atomic_store(&page->addr, 0);
	}
	pthread_mutex_unlock(&folio_lock);
	uhmm__sig_leave();
	return ret;
}

int uhmm_folio_init(struct uhmm_page *page, unsigned int order)
{
	struct uhmm_devmem *pgmap;
	_Atomic uint32_t *meta;
	size_t head;

	if (!page)
		return uhmm__err(EINVAL, "uhmm_folio_init: NULL page");
	pgmap = page->pgmap;
	if (order == 0) {
		if (pgmap->folio_meta)
			return folio_page_init(page);
		{
			int z = 0;

			if (!atomic_compare_exchange_strong(&page->refcount, &z, 1))
				return uhmm__err(EBUSY, "uhmm_folio_init: device page %#llx is "
						 "in use: left unchanged",
						 (unsigned long long)page->pfn);
			atomic_store(&page->locked, 1);
			atomic_store(&page->addr, 0);
			return 0;
		}
	}
	if (order != UHMM_PMD_ORDER)
		return uhmm__err(EINVAL, "uhmm_folio_init: order %u is neither 0 nor %u",
				 order, UHMM_PMD_ORDER);
	meta = pgmap->folio_meta;
	if (!meta)
		return uhmm__err(EINVAL, "uhmm_folio_init: the pool was added without "
				 "UHMM_DEVMEM_COMPOUND");
	if (uhmm__page_shift != 12)
		return uhmm__err(EINVAL, "uhmm_folio_init: compound device pages need 4 KiB "
				 "pages (the page size is %zu)", uhmm__page_size);
	head = page_idx(page);
	if ((head & (FOLIO_NR - 1)) || head + FOLIO_NR > pgmap->nr_pages)
		return uhmm__err(EINVAL, "uhmm_folio_init: page %zu is not the aligned head "
				 "of %u pages inside the pool", head, FOLIO_NR);
	uhmm__sig_enter();
	pthread_mutex_lock(&folio_lock);
	for (size_t j = head; j < head + FOLIO_NR; j++)
		if (atomic_load(&pgmap->pages[j].refcount) != 0 ||
		    (atomic_load(&meta[j]) & FM_DEFERRED)) {
			pthread_mutex_unlock(&folio_lock);
			uhmm__sig_leave();
			return uhmm__err(EBUSY, "uhmm_folio_init: device page %#llx of the "
					 "compound page is in use: left unchanged",
					 (unsigned long long)pgmap->pages[j].pfn);
		}
	for (size_t j = head; j < head + FOLIO_NR; j++) {
		atomic_store(&pgmap->pages[j].refcount, 1);
		atomic_store(&pgmap->pages[j].locked, 1);
		atomic_store(&pgmap->pages[j].addr, 0);
		atomic_store(&meta[j], UHMM_PMD_ORDER);
	}
	atomic_store(&meta[head], UHMM_PMD_ORDER | ((uint32_t)FOLIO_NR << FM_LIVE_SHIFT));
	pthread_mutex_unlock(&folio_lock);
	uhmm__sig_leave();
	return 0;
}

/*
 * @page's last reference is gone (a compound pool): the page to give to
 * page_free, or NULL while the rest of its compound page is in use.
 */
static struct uhmm_page *folio_release(struct uhmm_page *page)
{
	struct uhmm_devmem *pgmap = page->pgmap;
	_Atomic uint32_t *meta = pgmap->folio_meta;
	size_t idx = page_idx(page), head = idx & ~(size_t)(FOLIO_NR - 1);
	struct uhmm_page *ret = NULL;
	uint32_t hm, live;

	if (!(atomic_load(&meta[idx]) & FM_ORDER))
		return page;
	uhmm__sig_enter();	/* folio_lock (sigblock.h) */
	pthread_mutex_lock(&folio_lock);
	if (!(atomic_load(&meta[idx]) & FM_ORDER)) {
		pthread_mutex_unlock(&folio_lock);
		uhmm__sig_leave();
		return page;
	}
	atomic_fetch_or(&meta[idx], FM_DEFERRED);
	atomic_store(&page->addr, 0);
	hm = atomic_load(&meta[head]);
	live = hm >> FM_LIVE_SHIFT;
	live = live ? live - 1 : 0;
	atomic_store(&meta[head], (hm & ((UINT32_C(1) << FM_LIVE_SHIFT) - 1)) |
				  (live << FM_LIVE_SHIFT));
	if (live == 0) {
		/* The whole compound page is free: it goes back whole. */
		for (size_t j = head; j < head + FOLIO_NR; j++)
			atomic_store(&meta[j], UHMM_PMD_ORDER);
		ret = &pgmap->pages[head];
	}
	pthread_mutex_unlock(&folio_lock);
	uhmm__sig_leave();
	return ret;
}

void uhmm__folio_split(struct uhmm_page *page)
{
	_Atomic uint32_t *meta;
	size_t head;

	if (!page || !(meta_of(page) & FM_ORDER))
		return;
	meta = page->pgmap->folio_meta;
	head = page_idx(page) & ~(size_t)(FOLIO_NR - 1);
	if (!(atomic_load(&meta[head]) & FM_SPLIT))
		atomic_fetch_or(&meta[head], FM_SPLIT);
}

bool uhmm__folio_intact(const struct uhmm_page *page)
{
	uint32_t m = meta_of(page), hm;
	size_t idx, head;

	if (!(m & FM_ORDER))
		return false;
	idx = page_idx(page);
	head = idx & ~(size_t)(FOLIO_NR - 1);
	hm = atomic_load_explicit(&page->pgmap->folio_meta[head], memory_order_acquire);
	return !(hm & FM_SPLIT) && (hm >> FM_LIVE_SHIFT) == FOLIO_NR &&
	       ((atomic_load(&page->addr) >> uhmm__page_shift) & (FOLIO_NR - 1)) ==
		       (idx & (FOLIO_NR - 1));
}

/* A change of [s, e) that splits a PMD at an unaligned edge. */
void uhmm__folio_split_edges(struct uhmm_mm *mm, uintptr_t s, uintptr_t e)
{
	const uintptr_t huge = (uintptr_t)FOLIO_NR << uhmm__page_shift;
	const uintptr_t edges[2] = { s, e };

	if (uhmm__ptable_empty(&mm->ptable))
		return;
	for (int k = 0; k < 2; k++) {
		if (!(edges[k] & (huge - 1)))
			continue;	/* an aligned edge splits nothing */
		for (int side = 0; side < 2; side++) {
			uint64_t ent = uhmm__ptable_get(&mm->ptable,
					edges[k] - (side ? 0 : uhmm__page_size));
			uint64_t type = ent & UHMM__PTE_TYPE_MASK;

			if (type == UHMM__PTE_DEVICE || type == UHMM__PTE_MIGRATING)
				uhmm__folio_split(uhmm__pfn_to_page(mm, uhmm__pte_payload(ent)));
		}
	}
}

unsigned int uhmm__device_order(struct uhmm_mm *mm, uint64_t e)
{
	struct uhmm_page *page = uhmm__pfn_to_page(mm, uhmm__pte_payload(e));

	return page && uhmm__folio_intact(page) ? UHMM_PMD_ORDER : 0;
}

/*
 * Adaptive fault-around, as the kernel's readahead, for pools added with
 * fault_around 0 (the default): an isolated CPU fault brings back the
 * aligned FAULT_AROUND_FIRST pages around the page; a fault on the page
 * just after the window the pool's previous fault of the same stream
 * brought back is sequential, and gets a window twice as large starting at
 * that page, up to FAULT_AROUND_MAX pages.  (Nothing is brought back ahead
 * of the CPU, as asynchronous readahead would: the CPU would then see
 * pages of a migration still being finalized, their device pages not yet
 * freed.)  A pool whose driver chose fault_around gets exactly that aligned
 * window every time; eviction uses the pool's fault_around.  A few streams
 * per pool are followed (STREAMS), in the pool's own state (pgmap->faults,
 * made with the pool's pages and freed with them).
 *
 * FAULT_AROUND_FIRST stays the documented UHMM_FAULT_AROUND_DEFAULT: one
 * page (as the kernel's test driver and LLNL UMap fault) was measured
 * (docs/PERFORMANCE.md, "Fault-around of isolated faults") and made 4,096
 * random one-word reads of 256 MiB take 1.4x the CPU time: a fault's fixed
 * cost (about 45 us of CPU here) is far above a window page's (about
 * 1 us), so a window pays as soon as more than about 1 in 45 of its pages
 * is touched later, as 1 in 16 is there.
 */
#define FAULT_AROUND_MAX 2048	/* pages: 8 MiB with 4 KiB pages */
#define FAULT_AROUND_FIRST UHMM_FAULT_AROUND_DEFAULT	/* pages, a power of two */
#define STREAMS 4

struct fa_stream {
	uintptr_t next;		/* where a sequential fault lands */
	size_t pages;		/* the window that ended there */
	unsigned long used;	/* for replacing the least recent */
};

/*
 * A pool's CPU-fault state (pgmap->faults), made and freed with its pages
 * array: the fault-around streams, and the faults in flight, for the
 * migration a driver's migrate_to_ram runs to find its fault by its
 * fault_page (uhmm__fault_of()).  lock is a leaf lock.
 */
struct uhmm__pool_faults {
	pthread_mutex_t lock;
	struct fa_stream streams[STREAMS];
	bool adaptive;		/* the default window: it adapts */
	unsigned long clock;	/* for fa_stream.used */
	struct uhmm__fault *inflight;	/* linked by next */
};

static struct uhmm__pool_faults *fa_new(bool adaptive)
{
	struct uhmm__pool_faults *fa = uhmm__calloc(1, sizeof(*fa));

	if (fa) {
		pthread_mutex_init(&fa->lock, NULL);
		fa->adaptive = adaptive;
	}
	return fa;
}

static void fa_free(struct uhmm__pool_faults *fa)
{
	if (fa) {
		pthread_mutex_destroy(&fa->lock);
		uhmm__free(fa);
	}
}

/*
 * The adaptive window of a CPU fault at @addr, in pages, and whether it is
 * sequential (the window then starts at @addr; else it is aligned around
 * it); 0 pages: the pool's window is fixed.
 */
static size_t fa_window(struct uhmm_devmem *pgmap, uintptr_t addr, bool *seq)
{
	struct uhmm__pool_faults *fa = pgmap->faults;
	struct fa_stream *st = fa->streams;
	size_t pages = 0;

	*seq = false;
	pthread_mutex_lock(&fa->lock);
	if (fa->adaptive) {
		pages = FAULT_AROUND_FIRST;
		for (int k = 0; k < STREAMS; k++)
			if (st[k].pages && st[k].next == addr) {
				pages = UHMM__MIN(2 * st[k].pages, (size_t)FAULT_AROUND_MAX);
				*seq = true;
				break;
			}
	}
	pthread_mutex_unlock(&fa->lock);
	return pages;
}

/*
 * A fault at @addr brought back @returned pages of the window [@ws, @we).
 * A window mostly not on the device (a sparse pattern: one page in every
 * so many) is no stream to follow: growing it would only make each fault
 * migrate a larger, emptier range.
 */
static void fa_note(struct uhmm_devmem *pgmap, uintptr_t addr, uintptr_t ws, uintptr_t we,
		    long returned)
{
	size_t pages = (we - ws) >> uhmm__page_shift;
	bool dense = returned > 0 && 2 * (size_t)returned >= pages;
	struct uhmm__pool_faults *fa = pgmap->faults;
	struct fa_stream *st = fa->streams, *v;

	pthread_mutex_lock(&fa->lock);
	if (!fa->adaptive) {
		pthread_mutex_unlock(&fa->lock);
		return;
	}
	v = &st[0];
	for (int k = 0; k < STREAMS; k++) {
		if (st[k].pages && st[k].next == addr) {
			v = &st[k];	/* the stream this fault continues */
			break;
		}
		if (st[k].used < v->used)
			v = &st[k];
	}
	if (dense || v->next == addr) {
		/* A sparse window ends the stream it continued. */
		v->next = dense ? we : 0;
		v->pages = dense ? pages : 0;
		v->used = ++fa->clock;
	}
	pthread_mutex_unlock(&fa->lock);
}

/*
 * The mapping the last CPU fault's window was cut to, and the address-space
 * generation it was looked up in (uhmm__as_gen: every wrapper, every unmap
 * or remap event and uhmm's own mapping changes move it).  Consecutive CPU
 * faults in one mapping then cost one look-up (PROCMAP_QUERY, a system call
 * of about a microsecond here: the fallback's maps cache has the same rule).
 */
static struct {
	pthread_mutex_t lock;
	unsigned long gen;
	struct uhmm__vma v;
} last_fault_vma = { .lock = PTHREAD_MUTEX_INITIALIZER };

/* The mapping holding @addr, from the last fault's when still valid. */
static bool fault_vma(uintptr_t addr, struct uhmm__vma *v)
{
	unsigned long gen = atomic_load(&uhmm__as_gen);	/* before the look-up */
	bool hit;
	size_t n = 0;

	pthread_mutex_lock(&last_fault_vma.lock);
	hit = last_fault_vma.gen == gen && last_fault_vma.v.start <= addr &&
	      addr < last_fault_vma.v.end;
	if (hit)
		*v = last_fault_vma.v;
	pthread_mutex_unlock(&last_fault_vma.lock);
	if (hit)
		return true;
	if (uhmm__vma_find(addr, addr + uhmm__page_size, v, 1, &n, false) || n != 1 ||
	    v->start > addr)
		return false;
	pthread_mutex_lock(&last_fault_vma.lock);
	last_fault_vma.gen = gen;
	last_fault_vma.v = *v;
	pthread_mutex_unlock(&last_fault_vma.lock);
	return true;
}

/*
 * Is @addr the only device page in [@ws, @we)?  Then the window of a CPU
 * fault is that page, and its mapping needs no look-up: a device entry
 * exists only in a private anonymous mapping (migrations make them only
 * there; the events of an unmap or remap drop or move them), and the
 * kernel just reported the fault at the page.  *@write: whether the page
 * was writable when it migrated.
 */
static int other_device_page(void *arg, uintptr_t a, _Atomic uint64_t *slot, uint64_t e)
{
	(void)slot;
	return a != *(const uintptr_t *)arg &&
	       (e & UHMM__PTE_TYPE_MASK) == UHMM__PTE_DEVICE;
}

static bool lone_device_page(struct uhmm_mm *mm, uintptr_t addr, uintptr_t ws,
			     uintptr_t we, bool *write)
{
	uint64_t e = uhmm__ptable_get(&mm->ptable, addr);

	if ((e & UHMM__PTE_TYPE_MASK) != UHMM__PTE_DEVICE)
		return false;
	*write = (e & UHMM__PTE_WRITE) != 0;
	return !uhmm__ptable_walk(&mm->ptable, ws, we, other_device_page, &addr);
}

/*
 * The fault-around window of @addr inside its mapping; @adaptive for CPU
 * faults (it may grow, see above), not for eviction.  @found (CPU faults
 * only) gets the mapping, for the migration's setup.
 */
static void fault_window(struct uhmm_devmem *pgmap, uintptr_t addr,
			 uintptr_t *ws, uintptr_t *we, bool adaptive, struct uhmm__vma *found)
{
	size_t span = pgmap->fault_around << uhmm__page_shift;
	bool seq = false, write;
	size_t pages = adaptive ? fa_window(pgmap, addr, &seq) : 0;
	struct uhmm__vma v;

	if (pages)
		span = pages << uhmm__page_shift;
	if (seq) {
		*ws = addr;
		*we = addr + span;
	} else {
		*ws = addr & ~(uintptr_t)(span - 1);
		*we = *ws + span;
	}
	if (*we < *ws)
		*we = UINTPTR_MAX & ~(uintptr_t)(uhmm__page_size - 1);
	if (found && lone_device_page(&uhmm__the_mm, addr, *ws, *we, &write)) {
		/* One page fault-back: one PROCMAP_QUERY less (figure 4). */
		*ws = addr;
		*we = addr + uhmm__page_size;
		*found = (struct uhmm__vma){
			.start = *ws, .end = *we,
			.flags = UHMM__VMA_ANON | UHMM__VMA_READ | (write ? UHMM__VMA_WRITE : 0),
		};
		return;
	}
	if (!fault_vma(addr, &v)) {
		*ws = addr;
		*we = addr + uhmm__page_size;
		return;
	}
	*ws = UHMM__MAX(*ws, v.start);
	*we = UHMM__MIN(*we, v.end);
	if (found)
		*found = v;
}

/*
 * A CPU fault on a page of a whole compound device page brings the whole
 * 2 MiB back, as the kernel's fault on a device-private PMD migrates the
 * folio (lib/test_hmm.c's fault handler aligns its range to the folio):
 * the window is exactly that 2 MiB when it lies in one mapping.
 */
static bool folio_window(struct uhmm_page *page, uintptr_t addr, uintptr_t *ws, uintptr_t *we,
			 struct uhmm__vma *found)
{
	const uintptr_t huge = (uintptr_t)FOLIO_NR << uhmm__page_shift;
	struct uhmm__vma v;
	size_t n = 0;

	if (!uhmm__folio_intact(page))
		return false;
	*ws = addr & ~(huge - 1);
	*we = *ws + huge;
	if (uhmm__vma_find(*ws, *we, &v, 1, &n, false) || n != 1 ||
	    v.start > *ws || v.end < *we)
		return false;
	if (found)
		*found = v;
	return true;
}

/* A fault is in flight on its page (from grab to put): findable by the page. */
static void fault_enter(struct uhmm__fault *f)
{
	struct uhmm__pool_faults *pf = f->vmf.page->pgmap->faults;

	pthread_mutex_lock(&pf->lock);
	f->next = pf->inflight;
	pf->inflight = f;
	pthread_mutex_unlock(&pf->lock);
}

static void fault_leave(struct uhmm__fault *f)
{
	struct uhmm__pool_faults *pf = f->vmf.page->pgmap->faults;

	pthread_mutex_lock(&pf->lock);
	for (struct uhmm__fault **pp = &pf->inflight; *pp; pp = &(*pp)->next)
		if (*pp == f) {
			*pp = f->next;
			break;
		}
	pthread_mutex_unlock(&pf->lock);
}

struct uhmm__fault *uhmm__fault_of(struct uhmm_page *fault_page)
{
	struct uhmm__pool_faults *pf = fault_page->pgmap->faults;
	struct uhmm__fault *f;

	pthread_mutex_lock(&pf->lock);
	for (f = pf->inflight; f && f->vmf.page != fault_page; f = f->next)
		;
	pthread_mutex_unlock(&pf->lock);
	return f;
}

bool uhmm__fault_mapping(struct uhmm_page *fault_page, uintptr_t start, uintptr_t end,
			 struct uhmm__vma *v)
{
	struct uhmm__fault *f = fault_page ? uhmm__fault_of(fault_page) : NULL;

	/*
	 * Every wrapper, every unmap or remap event read and uhmm's own
	 * mapping changes bump uhmm__as_gen; the caller has caught up with
	 * the events of changes made before it was called.
	 */
	if (!f || !f->vma.end || f->vma.start > start || end > f->vma.end ||
	    f->vma_gen != atomic_load(&uhmm__as_gen))
		return false;
	*v = f->vma;
	return true;
}

int uhmm__fault_device(struct uhmm__fault *f, uint64_t e)
{
	struct uhmm_mm *mm = f->vmf.mm;
	uintptr_t addr = f->vmf.address;
	struct uhmm_page *page;
	long resident;
	int ret;

	if (!uhmm__migrate_trylock_read(mm))
		return -EAGAIN;		/* fork is bringing pages home */
	/*
	 * The descriptor only under migrate_lock: a pool removal frees the
	 * descriptors under it, for writing (round 7 hunt, FINDINGS item 26:
	 * TSan saw this look-up race uhmm__pool_detach()).  @e was read with
	 * nothing held: a pool gone since means its entry went first.
	 */
	page = uhmm__pfn_to_page(mm, uhmm__pte_payload(e));
	if (!page) {
		ret = uhmm__ptable_get(&mm->ptable, addr) == e ? -EFAULT : -EAGAIN;
		uhmm__migrate_unlock(mm);
		return ret;
	}
	if (!uhmm__page_grab(mm, page, addr)) {
		uhmm__migrate_unlock(mm);
		return -EAGAIN;
	}
	f->vmf.page = page;
	f->vma.end = 0;
	f->vma_gen = atomic_load(&uhmm__as_gen);	/* before the look-up */
	if (!folio_window(page, addr, &f->vmf.window_start, &f->vmf.window_end, &f->vma))
		fault_window(page->pgmap, addr, &f->vmf.window_start, &f->vmf.window_end,
			     true, &f->vma);
	f->wake_start = f->wake_end = 0;
	f->install_err = 0;
	fault_enter(f);
	resident = atomic_load(&page->pgmap->nr_resident);
	ret = page->pgmap->ops->migrate_to_ram(&f->vmf);
	f->brought = resident - atomic_load(&page->pgmap->nr_resident);
	fa_note(page->pgmap, addr, f->vmf.window_start, f->vmf.window_end, f->brought);
	fault_leave(f);
	if (!ret && f->install_err) {
		/*
		 * The driver copied the page but it could not be put back
		 * (it stays on the device, intact): a failed fault, as the
		 * kernel's VM_FAULT_SIGBUS / OOM.  The CPU fault path
		 * (service.c) retries -ENOMEM after taking a page by an
		 * ordinary fault, as the kernel retries VM_FAULT_OOM after
		 * waiting in the memory cgroup; -EFAULT and others are
		 * SIGBUS there, and an error for a range fault or exclusive
		 * access.
		 */
		uint64_t now = uhmm__ptable_get(&mm->ptable, addr);

		if ((now & UHMM__PTE_TYPE_MASK) == UHMM__PTE_DEVICE &&
		    uhmm__pte_payload(now) == page->pfn)
			ret = f->install_err;
	}
	uhmm_page_unlock(page);
	uhmm_page_put(page);
	uhmm__migrate_unlock(mm);
	/* Like the kernel's fault path: the thread resumes when all is done. */
	if (f->wake_end && !f->defer_wake)
		uhmm__uffd_wake(mm, f->wake_start, f->wake_end);
	return ret;
}

struct evict_ctx {
	struct uhmm_mm *mm;
	struct uhmm_devmem *only;
	int err;
};

/*
 * Bring the device pages of every pool (or of @only) home, one
 * migrate_to_ram call per page still resident.  The caller holds
 * migrate_lock for writing or is tearing down.
 */
static long resident_pages(struct uhmm_mm *mm, struct uhmm_devmem *only)
{
	long n = 0;

	for (unsigned int id = 1; id < UHMM__MAX_POOLS; id++) {
		struct uhmm_devmem *pgmap = pool_at(mm, id);

		if (pgmap && (!only || pgmap == only))
			n += atomic_load(&pgmap->nr_resident);
	}
	return n;
}

/*
 * One pass over the pools; returns the first error a migrate_to_ram
 * returned, else -EBUSY if a page was busy or stayed.  A failure for
 * one page may be made good by a later page's fault-around window, so the
 * caller judges by what is still resident afterwards.
 */
static int evict_pass(struct uhmm_mm *mm, struct uhmm_devmem *only)
{
	int err = 0;

	for (unsigned int id = 1; id < UHMM__MAX_POOLS; id++) {
		struct uhmm_devmem *pgmap = pool_at(mm, id);

		if (!pgmap || (only && pgmap != only))
			continue;
		for (size_t i = 0; i < pgmap->nr_pages &&
				   atomic_load(&pgmap->nr_resident) > 0; i++) {
			struct uhmm_page *page = &pgmap->pages[i];
			uintptr_t addr = atomic_load(&page->addr);
			struct uhmm_vm_fault vmf = { .page = page, .address = addr, .mm = mm };
			bool held;
			uint64_t e;
			int ret;

			if (!addr)
				continue;
			e = uhmm__ptable_get(&mm->ptable, addr);
			if ((e & UHMM__PTE_TYPE_MASK) != UHMM__PTE_DEVICE ||
			    uhmm__pte_payload(e) != page->pfn)
				continue;
			if (!uhmm__page_grab(mm, page, addr)) {
				err = err ? err : -EBUSY;
				continue;
			}
			if (!folio_window(page, addr, &vmf.window_start, &vmf.window_end, NULL))
				fault_window(pgmap, addr, &vmf.window_start, &vmf.window_end,
					     false, NULL);
			held = uhmm__migrate_lock_assume(true);
			ret = pgmap->ops->migrate_to_ram(&vmf);
			uhmm__migrate_lock_assume(held);
			uhmm_page_unlock(page);
			uhmm_page_put(page);
			e = uhmm__ptable_get(&mm->ptable, addr);
			if (ret || ((e & UHMM__PTE_TYPE_MASK) == UHMM__PTE_DEVICE &&
				    uhmm__pte_payload(e) == page->pfn)) {
				uhmm__warn("could not bring device page %#llx at %#lx home: %d",
					   (unsigned long long)page->pfn,
					   (unsigned long)addr, ret);
				/* The driver's reason (-ENOMEM ...) over a mere "busy". */
				if (ret < 0 && (!err || err == -EBUSY))
					err = ret;
				else if (!err)
					err = -EBUSY;
			}
		}
	}
	return err;
}

int uhmm__evict_all(struct uhmm_mm *mm, struct uhmm_devmem *only)
{
	long left = resident_pages(mm, only), before;
	int err = 0;

	/* Another pass as long as the last one brought pages home. */
	while (left > 0) {
		err = evict_pass(mm, only);
		before = left;
		left = resident_pages(mm, only);
		if (left == 0 || left >= before)
			break;
	}
	return left == 0 ? 0 : (err ? err : -EBUSY);
}
