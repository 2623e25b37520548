/* SPDX-License-Identifier: MIT */
/**
 * DOC: device memory (the kernel's dev_pagemap and device-private pages)
 *
 * A device registers a pool of device pages with uhmm_devmem_add().  Each
 * page has a descriptor, &struct uhmm_page, with a reference count, a lock
 * and a pointer for the driver; its data lives wherever the device keeps it
 * (a host arena, GPU memory...): uhmm never reads or writes device memory
 * itself.  A device page that holds the data of an address of the process
 * ("device-resident" or "device-private" page) is not mapped for the CPU;
 * a CPU access to its address calls the pool's migrate_to_ram operation.
 *
 * Device pages are named by device pfns (uhmm_page_to_pfn()), which have
 * %UHMM_DEVICE_PFN_BASE set and never collide with system page numbers.
 */
#ifndef UHMM_DEVMEM_H
#define UHMM_DEVMEM_H

#include <stddef.h>
#include <stdint.h>
#include <uhmm/mm.h>

#ifdef __cplusplus
extern "C" {
#endif

#define UHMM_DEVICE_PFN_BASE	(UINT64_C(1) << 50)

struct uhmm_devmem;

/**
 * struct uhmm_page - descriptor of one device page
 * @pgmap: the pool the page belongs to
 * @zone_device_data: for the driver
 *
 * The remaining bytes are private to uhmm.  Descriptors are allocated by
 * uhmm_devmem_add() and reached with uhmm_devmem_page() or
 * uhmm_pfn_to_page(): a caller never allocates, copies or indexes an array
 * of them, so their size may change between releases.
 */
struct uhmm_page {
	struct uhmm_devmem *pgmap;
	void *zone_device_data;
	union {
		uint64_t uhmm_reserved[3];		/* private */
#ifdef UHMM__PAGE_PRIVATE
		struct { UHMM__PAGE_PRIVATE };
#endif
	};
};

/**
 * struct uhmm_vm_fault - a CPU access to a device-resident page
 * @page: the device page (referenced and locked by uhmm for the call)
 * @address: the page-aligned address that was accessed
 * @write: the access was a write (or unknown, for library-initiated calls)
 * @window_start: suggested first address to migrate (fault-around), inside
 *	the mapping of @address
 * @window_end: suggested end (exclusive)
 * @mm: the process context
 */
struct uhmm_vm_fault {
	struct uhmm_page *page;
	uintptr_t address;
	bool write;
	uintptr_t window_start;
	uintptr_t window_end;
	struct uhmm_mm *mm;
};

/**
 * struct uhmm_devmem_ops - device memory operations
 * @page_free: the last reference to a device page is gone (its address
 *	was unmapped or discarded, or it was migrated back): return it to the
 *	driver's allocator.  May run on any thread, including uhmm's service
 *	thread; must not block on a migration.
 * @migrate_to_ram: bring @vmf->page (and, as the driver decides, other
 *	pages of @vmf's window) back to system memory with
 *	uhmm_migrate_vma_setup() (%UHMM_MIGRATE_VMA_SELECT_DEVICE_PRIVATE,
 *	fault_page = @vmf->page), a copy, uhmm_migrate_vma_pages() and
 *	uhmm_migrate_vma_finalize().  Called on uhmm's service thread for CPU
 *	faults, or on the thread that forks or tears the context down.  Return
 *	0, or a negative errno: the access then fails (SIGBUS).
 *
 * Both may run on the service thread to serve a fault that a signal
 * handler made, with the handler's thread stopped at any instruction
 * outside uhmm: neither may call malloc, calloc, realloc, free or stdio
 * (that thread may hold the allocator's lock), nor take a driver lock
 * that a thread holds outside a migration with asynchronous signals
 * unblocked (docs/CONCURRENCY.md, "Signals").
 */
struct uhmm_devmem_ops {
	void (*page_free)(struct uhmm_page *page);
	int (*migrate_to_ram)(struct uhmm_vm_fault *vmf);
};

/**
 * struct uhmm_devmem - a pool of device pages (the kernel's dev_pagemap)
 * @ops: operations, set before uhmm_devmem_add()
 * @owner: owner token: migration and range faults select device pages by it
 * @nr_pages: number of device pages, set before uhmm_devmem_add()
 * @fault_around: pages migrated back around a CPU fault (a power of two:
 *	exactly that aligned window every time); 0 = the default: the
 *	aligned %UHMM_FAULT_AROUND_DEFAULT pages around an isolated fault,
 *	and, as readahead, a window doubling up to 2048 pages from a fault
 *	on the page just after the previous window
 * @driver_data: for the driver
 * @flags: %UHMM_DEVMEM_COMPOUND or 0 (carved out of the reserved bytes: 0
 *	is the behaviour of a pool without the field)
 *
 * The caller allocates the pool (usually embedded in its device structure)
 * and must zero it first (``= {0}``, calloc or memset): the reserved bytes
 * are uhmm's private state, and a later release may give documented
 * meaning to some of them with zero as the old behaviour.
 */
struct uhmm_devmem {
	const struct uhmm_devmem_ops *ops;
	const void *owner;
	size_t nr_pages;
	size_t fault_around;
	void *driver_data;
	uint64_t flags;
	union {
		uint64_t uhmm_reserved[7];		/* private, zero */
#ifdef UHMM__DEVMEM_PRIVATE
		struct { UHMM__DEVMEM_PRIVATE };
#endif
	};
};

#define UHMM_FAULT_AROUND_DEFAULT 32

/*
 * Pool flag: the pool can hand out compound device pages ("device THP",
 * the kernel's device-private folios of order HPAGE_PMD_ORDER):
 * uhmm_folio_init() makes 2^UHMM_PMD_ORDER consecutive pages of it one
 * 2 MiB device page.  It costs 4 bytes per page of the pool.
 */
#define UHMM_DEVMEM_COMPOUND	(UINT64_C(1) << 0)

/*
 * The order of a compound device page: a PMD's worth of pages (2 MiB with
 * 4 KiB pages).  Compound pages need 4 KiB pages (uhmm_folio_init()).
 */
#define UHMM_PMD_ORDER		9

/**
 * uhmm_devmem_add() - register a pool of device pages (memremap_pages)
 * @mm: the process context (a reference is taken until removal)
 * @pgmap: the pool: @ops, @owner (non-NULL) and @nr_pages set
 *
 * Every page starts free (reference count 0) and unlocked.
 *
 * Return: 0; -EINVAL for a NULL argument, missing ops, NULL owner, zero or
 * too many pages, a fault_around that is not a power of two, or a pool
 * already added; -ENOSPC when 255 pools exist; -ENOMEM.
 */
UHMM_API int uhmm_devmem_add(struct uhmm_mm *mm, struct uhmm_devmem *pgmap);

/**
 * uhmm_devmem_remove() - unregister a pool (memunmap_pages)
 * @pgmap: an added pool
 *
 * Every page of the pool that still holds process data is first migrated
 * back to system memory through @pgmap->ops->migrate_to_ram, so no data is
 * lost.  Must not be called from a uhmm callback.
 *
 * Context: as uhmm_migrate_vma_setup(), it first waits until every pending
 * unmap event has been applied (an unmap libc or a raw system call made
 * behind uhmm's wrappers: the device pages of those addresses are freed,
 * as the kernel's munmap frees them), which may run invalidate callbacks:
 * do not call it holding a lock that an invalidate callback takes.  An
 * unmap behind the wrappers *concurrent* with the call may still make it
 * fail with the error migrate_to_ram gave for a page whose mapping went
 * away meanwhile (the pool stays added): call it again.
 *
 * Return: 0; -EINVAL if @pgmap is NULL or not added (never, or removed
 * already); -EDEADLK from a callback; if a page could not be brought back
 * (the pool stays added, every page as it was): the error
 * @pgmap->ops->migrate_to_ram returned for it (e.g. -ENOMEM), or -EBUSY
 * when it returned 0 but the page stayed, or the page was busy.
 */
UHMM_API int uhmm_devmem_remove(struct uhmm_devmem *pgmap);

/**
 * uhmm_devmem_page() - descriptor of page @index of @pgmap
 * @pgmap: an added pool
 * @index: 0 .. @pgmap->nr_pages - 1
 *
 * Return: the descriptor; NULL (with a reason in uhmm_last_error()) for a
 * NULL or not added pool or an index beyond it.  A descriptor is valid until
 * the pool is removed.
 */
UHMM_API struct uhmm_page *uhmm_devmem_page(struct uhmm_devmem *pgmap, size_t index);

/**
 * uhmm_page_index() - index of @page in its pool
 * @page: a descriptor of an added pool (not NULL)
 *
 * Thread safe, lock free.  Return: the index, 0 .. nr_pages - 1.
 */
UHMM_API size_t uhmm_page_index(const struct uhmm_page *page);

/**
 * uhmm_page_to_pfn() - the device pfn of @page
 * @page: a descriptor of an added pool (not NULL)
 *
 * Thread safe, lock free.  Return: the device pfn (%UHMM_DEVICE_PFN_BASE set).
 */
UHMM_API uint64_t uhmm_page_to_pfn(const struct uhmm_page *page);

/**
 * uhmm_pfn_to_page() - the device page a device pfn names
 * @mm: the process context
 * @pfn: a device pfn (from uhmm_page_to_pfn(), a range fault or a migrate
 *	entry with uhmm_migrate_pfn_to_pfn())
 *
 * Return: the page, or NULL (with a reason in uhmm_last_error()) if @mm is
 * not the context or @pfn names no page of a live pool.  A pfn of a removed
 * pool names whatever pool now has its id, as a kernel pfn names whatever
 * page is there now.
 */
UHMM_API struct uhmm_page *uhmm_pfn_to_page(struct uhmm_mm *mm, uint64_t pfn);

/**
 * uhmm_page_init() - prepare a free device page for use (zone_device_page_init)
 * @page: a page with reference count 0
 *
 * Sets the reference count to 1 and locks the page, as the kernel does for a
 * page the driver is about to use as a migration destination.  A page that
 * is in use (reference count not 0) is left unchanged, and NULL ignored,
 * with a reason in uhmm_last_error() (re-initialising it would lose its
 * references).
 */
UHMM_API void uhmm_page_init(struct uhmm_page *page);

/**
 * uhmm_folio_init() - prepare free device pages as one device page of @order
 *	(zone_device_folio_init)
 * @page: the first page (the head): its index in the pool a multiple of
 *	2^@order
 * @order: 0 (as uhmm_page_init()) or %UHMM_PMD_ORDER
 *
 * For %UHMM_PMD_ORDER the 512 pages from @page on become one compound
 * device page, a 2 MiB destination for a migration that keeps a
 * transparent huge page whole (%UHMM_MIGRATE_PFN_COMPOUND in the dst entry
 * of the head): each page gets a reference count of 1 and is locked, as
 * uhmm_page_init() does for one page.  The pages keep one descriptor each;
 * pages of it that are freed (an address unmapped, part of it migrated
 * back alone) wait until the last page of the compound page is free, and
 * @pgmap->ops->page_free is then called once, for the head, with
 * uhmm_page_order() still giving @order: the driver takes the 2 MiB back
 * whole.  A compound page that is no longer mapped whole at one 2 MiB
 * aligned address (part of it unmapped, moved, protected differently, or
 * migrated alone) is split: it is reported and migrated page by page from
 * then on, and freed as above.
 *
 * Context: any thread; the pages must be free (reference count 0) and the
 * driver's own.
 *
 * Return: 0; -EINVAL for a NULL @page, an @order other than 0 and
 * %UHMM_PMD_ORDER, a pool added without %UHMM_DEVMEM_COMPOUND, a page size
 * other than 4 KiB, an unaligned head or one whose compound page would run
 * past the pool's end; -EBUSY when a page of it is in use (nothing is
 * changed).
 */
UHMM_API int uhmm_folio_init(struct uhmm_page *page, unsigned int order);

/**
 * uhmm_page_order() - the order of the device page @page belongs to
 * @page: a descriptor of an added pool (not NULL)
 *
 * Thread safe, lock free.  Return: %UHMM_PMD_ORDER for a page of a compound
 * device page (in use, or being freed: in page_free), else 0.
 */
UHMM_API unsigned int uhmm_page_order(const struct uhmm_page *page);

/**
 * uhmm_page_folio() - the head of the device page @page belongs to
 * @page: a descriptor of an added pool (not NULL)
 *
 * Thread safe, lock free.  Return: the first page of @page's compound
 * device page, or @page itself for a page of order 0.
 */
UHMM_API struct uhmm_page *uhmm_page_folio(struct uhmm_page *page);

/**
 * uhmm_page_get() - take a reference on a device page
 * @page: a page in use (reference count > 0)
 *
 * A free page (count 0) is left unchanged, and NULL ignored, with a reason
 * in uhmm_last_error(): a reference taken there would free it twice.
 */
UHMM_API void uhmm_page_get(struct uhmm_page *page);

/**
 * uhmm_page_put() - drop a reference; the last one calls ops->page_free
 * @page: a page in use
 *
 * On a free page (an underflow) nothing changes and page_free is not
 * called; NULL is ignored; both with a reason in uhmm_last_error().
 */
UHMM_API void uhmm_page_put(struct uhmm_page *page);

/** uhmm_page_trylock() - try to lock a device page; true on success (false for NULL) */
UHMM_API bool uhmm_page_trylock(struct uhmm_page *page);

/**
 * uhmm_page_unlock() - unlock a device page
 * @page: a locked page
 *
 * Unlocking a page that is not locked, or NULL, changes nothing and records
 * a reason in uhmm_last_error().
 */
UHMM_API void uhmm_page_unlock(struct uhmm_page *page);

/**
 * uhmm_page_refcount() - current reference count (for tests and stats)
 * @page: a descriptor of an added pool (not NULL)
 *
 * Thread safe; the value may change as soon as it is read.
 * Return: the reference count (0 for a free page).
 */
UHMM_API int uhmm_page_refcount(const struct uhmm_page *page);

#ifdef __cplusplus
}
#endif
#endif /* UHMM_DEVMEM_H */
