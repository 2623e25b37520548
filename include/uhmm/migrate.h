/* SPDX-License-Identifier: MIT */
/**
 * DOC: migration (the kernel's migrate_vma and migrate_device_range)
 *
 * Migration moves the data of a range of the process between system memory
 * and device pages, in three steps with the kernel's contract:
 *
 * 1. uhmm_migrate_vma_setup() collects the range's pages into @src and
 *    freezes them: CPU accesses wait, contents are stable.  Each @src entry
 *    says whether the page can migrate (%UHMM_MIGRATE_PFN_MIGRATE) and, if it
 *    has data, where the driver can read it (%UHMM_MIGRATE_PFN_VALID and a pfn:
 *    a device pfn, or a system page number whose address uhmm_migrate_pfn_addr()
 *    gives).  An empty or zero page has MIGRATE without VALID: the device
 *    populates it with zeroes.
 * 2. The driver allocates destination pages, copies, and fills @dst:
 *    uhmm_migrate_pfn(device pfn) for a device page (initialised with
 *    uhmm_page_init()), or uhmm_migrate_alloc_sys() for a system page.
 *    A zero @dst entry means "do not migrate this page".
 * 3. uhmm_migrate_vma_pages() commits, uhmm_migrate_vma_finalize() installs
 *    the new entries (or restores the old ones for pages that did not
 *    migrate) and wakes the CPU threads waiting on the range.
 *
 * A page that does not migrate is left exactly as it was.
 */
#ifndef UHMM_MIGRATE_H
#define UHMM_MIGRATE_H

#include <stddef.h>
#include <stdint.h>
#include <uhmm/mm.h>
#include <uhmm/devmem.h>

#ifdef __cplusplus
extern "C" {
#endif

#define UHMM_MIGRATE_PFN_VALID		(UINT64_C(1) << 0)
#define UHMM_MIGRATE_PFN_MIGRATE	(UINT64_C(1) << 1)
#define UHMM_MIGRATE_PFN_WRITE		(UINT64_C(1) << 3)
/*
 * A compound entry (the kernel's MIGRATE_PFN_COMPOUND): the entry of the
 * first page of a 2 MiB aligned block stands for all 512 pages of it, and
 * the next 511 entries are 0.  In src (setup with
 * %UHMM_MIGRATE_VMA_SELECT_COMPOUND): the block migrates whole; its system
 * data is 2 MiB at uhmm_migrate_pfn_addr() of the entry, or the pfn is the
 * head of a compound device page (uhmm_folio_init()).  In dst: the
 * destination is 2 MiB too, the head of a compound device page (system to
 * device) or 2 MiB of system memory (uhmm_migrate_alloc_sys() gives it;
 * a buffer of the driver's must be 2 MiB contiguous).  A driver that has no
 * 2 MiB destination fills the 512 dst entries page by page instead, without
 * the flag: uhmm_migrate_vma_pages() then splits the src entry into 512
 * (the kernel's migrate_vma_split_unmapped_folio).
 */
#define UHMM_MIGRATE_PFN_COMPOUND	(UINT64_C(1) << 4)
#define UHMM_MIGRATE_PFN_SHIFT		6

static inline uint64_t uhmm_migrate_pfn(uint64_t pfn)
{
	return (pfn << UHMM_MIGRATE_PFN_SHIFT) | UHMM_MIGRATE_PFN_VALID;
}

static inline uint64_t uhmm_migrate_pfn_to_pfn(uint64_t mpfn)
{
	return mpfn >> UHMM_MIGRATE_PFN_SHIFT;
}

static inline bool uhmm_migrate_pfn_is_device(uint64_t mpfn)
{
	return (mpfn & UHMM_MIGRATE_PFN_VALID) &&
	       (uhmm_migrate_pfn_to_pfn(mpfn) & UHMM_DEVICE_PFN_BASE);
}

/* Selection flags. */
#define UHMM_MIGRATE_VMA_SELECT_SYSTEM		(1u << 0)
#define UHMM_MIGRATE_VMA_SELECT_DEVICE_PRIVATE	(1u << 1)
/*
 * Select 2 MiB aligned blocks whole (the kernel's MIGRATE_VMA_SELECT_COMPOUND):
 * with SELECT_SYSTEM, a block whose 512 pages all migrate (a PMD-mapped
 * transparent huge page, an empty block, or any aligned run of private
 * anonymous pages) gets one %UHMM_MIGRATE_PFN_COMPOUND src entry; with
 * SELECT_DEVICE_PRIVATE, a whole compound device page mapped at one 2 MiB
 * aligned address does.  4 KiB pages only (elsewhere the flag selects
 * nothing more).
 */
#define UHMM_MIGRATE_VMA_SELECT_COMPOUND	(1u << 3)

struct uhmm_migrate_state;

/**
 * struct uhmm_migrate_vma - one migration of [@start, @end)
 * @mm: the process context
 * @start: first byte (page aligned)
 * @end: end (page aligned), the range inside one mapping
 * @src: npages entries, filled by setup
 * @dst: npages entries, zeroed by setup, filled by the driver
 * @npages: set by setup
 * @cpages: set by setup: entries that can migrate, empty pages included (a
 *	%UHMM_MIGRATE_PFN_COMPOUND entry counts once, as in the kernel)
 * @pgmap_owner: owner of the device memory involved: passed to the
 *	%UHMM_NOTIFY_MIGRATE invalidation, and selects which device pages
 *	%UHMM_MIGRATE_VMA_SELECT_DEVICE_PRIVATE collects
 * @flags: UHMM_MIGRATE_VMA_SELECT_*
 * @fault_page: the device page whose CPU fault is being served, if any
 *
 * The reserved bytes at the end are private (set by setup, cleared by
 * finalize); initialise the structure with a designated initialiser or zero it.
 */
struct uhmm_migrate_vma {
	struct uhmm_mm *mm;
	uintptr_t start;
	uintptr_t end;
	uint64_t *src;
	uint64_t *dst;
	unsigned long npages;
	unsigned long cpages;
	const void *pgmap_owner;
	unsigned int flags;
	struct uhmm_page *fault_page;
	union {
		uint64_t uhmm_reserved[4];		/* private */
#ifdef UHMM__MIGRATE_PRIVATE
		struct { UHMM__MIGRATE_PRIVATE };
#endif
	};
};

/**
 * uhmm_migrate_vma_setup() - collect and freeze the pages of a range
 * @args: @mm, @start, @end, @src, @dst, @pgmap_owner and @flags set
 *
 * Collect rules, as the kernel's: in a private anonymous mapping, empty
 * entries and the zero page are selected (MIGRATE without VALID) so the
 * device can populate them, present pages are selected with their data,
 * device pages of @pgmap_owner are selected with
 * %UHMM_MIGRATE_VMA_SELECT_DEVICE_PRIVATE; shared or file-backed pages,
 * other owners' device pages, pinned pages and pages another migration holds
 * are not (src entry without MIGRATE).  Overlapping notifiers receive a
 * %UHMM_NOTIFY_MIGRATE invalidation with @pgmap_owner.
 *
 * With %UHMM_MIGRATE_VMA_SELECT_COMPOUND, blocks that can migrate whole get
 * one %UHMM_MIGRATE_PFN_COMPOUND entry (see there).  A page of a compound
 * device page collected alone (a range that covers part of it, or no
 * SELECT_COMPOUND) splits that compound page.
 *
 * On success the caller must call uhmm_migrate_vma_pages() and
 * uhmm_migrate_vma_finalize(), even when @cpages is 0.
 *
 * Context: any thread; on uhmm's service thread only from migrate_to_ram.
 * It first waits until uhmm's service thread has applied every pending
 * unmap event (an unmap libc made behind uhmm's wrappers), which may run
 * invalidate callbacks: do not call it holding a lock that an
 * invalidate callback takes or from a thread that one waits for.
 *
 * Return: 0; -EINVAL for NULL arguments, a context that is not live, an
 * unaligned or empty range, no selection flag or a flag uhmm does not know,
 * a @fault_page that is not a page of a live pool, a range that is not
 * inside one mapping (a hole, or two mappings), a mapping without read
 * access, hugetlbfs or an IO/PFNMAP mapping; -ENOMEM (also when there was
 * no memory to look the mappings up); -EIO if /proc/self cannot be read;
 * -EDEADLK from an invalidate callback.  On an error nothing is collected or frozen and
 * @src / @dst are not written.
 */
UHMM_API int uhmm_migrate_vma_setup(struct uhmm_migrate_vma *args);

/**
 * uhmm_migrate_alloc_sys() - system destination page for entry @i
 * @args: a migration between setup and pages
 * @i: the entry (its src has MIGRATE)
 *
 * Gives a page of system memory the driver copies the data into, and sets
 * @args->dst[@i] to name it.  Finalize installs it at the entry's address.
 * As the kernel's allocated page, it is not cleared: its content is
 * unspecified until the driver writes it (it may be a recycled page that
 * held this address's data before it went to the device; see
 * UHMM_STAGING_CACHE_MIB in docs/PERFORMANCE.md), so copy the whole page.
 *
 * For a %UHMM_MIGRATE_PFN_COMPOUND src entry the page is 2 MiB (a
 * transparent huge page where the system gives one), dst gets the flag
 * too, and finalize installs it as one PMD where the kernel can (an
 * UFFDIO_MOVE of 2 MiB aligned whole).
 *
 * Return: the address to copy to, or NULL (with a reason in
 * uhmm_last_error()) when @args is not between setup and finalize, @i is
 * out of range, entry @i is not a device page selected to migrate, or no
 * memory.
 */
UHMM_API void *uhmm_migrate_alloc_sys(struct uhmm_migrate_vma *args, unsigned long i);

/**
 * uhmm_migrate_pfn_addr() - where the data of a system src entry can be read
 * @args: the migration
 * @i: the entry (src VALID, not a device pfn)
 *
 * Return: the address of the frozen page's data, or NULL (with a reason)
 * when @args is not between setup and finalize, @i is out of range, or the
 * entry holds no system page data.
 */
UHMM_API const void *uhmm_migrate_pfn_addr(struct uhmm_migrate_vma *args,
					   unsigned long i);

/**
 * uhmm_migrate_vma_pages() - commit the migration of each entry
 * @args: after setup and the driver's copy
 *
 * Entries whose @dst is not valid lose their MIGRATE flag.  A compound src
 * entry whose dst is not compound is split first: its 512 src entries are
 * filled in, each with its own data and flags, and each migrates to its own
 * dst entry (the 511 the driver left 0 do not migrate); one whose dst is
 * compound stays one entry.  With no
 * migration between setup and finalize (NULL, never set up, finalized
 * already) it does nothing but record a reason in uhmm_last_error().
 */
UHMM_API void uhmm_migrate_vma_pages(struct uhmm_migrate_vma *args);

/**
 * uhmm_migrate_vma_finalize() - install the new pages or restore the old
 * @args: after uhmm_migrate_vma_pages()
 *
 * Migrated entries now hold the new page: device pages become device-private
 * entries (their reference moves to the mapping; they are unlocked), system
 * pages are mapped at their address; old device pages are unlocked and their
 * reference dropped.  Entries that did not migrate are restored exactly.
 * CPU threads waiting on the range are woken.  Afterwards @src and @dst
 * hold one entry per page (compound entries expanded).  An entry whose @dst is not
 * valid is restored even if uhmm_migrate_vma_pages() was skipped.  A second
 * finalize, or one with no migration set up, does nothing but record a
 * reason in uhmm_last_error().
 */
UHMM_API void uhmm_migrate_vma_finalize(struct uhmm_migrate_vma *args);

/**
 * uhmm_migrate_device_range() - collect device pages by pfn for eviction
 * @mm: the process context
 * @src: @npages entries, filled
 * @start_pfn: first device pfn
 * @npages: count
 *
 * Pages that hold process data are frozen and get MIGRATE|VALID src
 * entries; free pages get 0.  The driver then fills each dst entry with
 * uhmm_migrate_pfn(addr >> page shift) of a page-aligned buffer of its own
 * holding the copied data (any readable memory: uhmm copies it into place),
 * and calls uhmm_migrate_device_pages() and uhmm_migrate_device_finalize().
 * Afterwards every evicted page's data is at its address in system memory.
 * Until finalize the collected pages are frozen: a thread touching one
 * waits, the caller included, so the caller's arrays and buffers must not
 * be memory it (or anyone) migrates.  uhmm faults @src in before it
 * freezes anything (a heap block freed while on the device may hold it).
 *
 * Context: as uhmm_migrate_vma_setup(): it first waits until every pending
 * unmap event has been applied.
 *
 * Return: 0; -EINVAL for NULL arguments, zero @npages, a context that is
 * not live, or a pfn that names no device page (a range running past its
 * pool's end): then no page is claimed and @src is not written; -EDEADLK
 * from an invalidate callback.
 */
UHMM_API int uhmm_migrate_device_range(struct uhmm_mm *mm, uint64_t *src,
				       uint64_t start_pfn, unsigned long npages);

/**
 * uhmm_migrate_device_pfns() - like uhmm_migrate_device_range() for a list
 * @mm: the process context
 * @src: on entry each entry holds a device pfn (not shifted); on return the
 *	src entries as uhmm_migrate_device_range() gives them
 * @npages: count
 *
 * Return: as uhmm_migrate_device_range().  On an error @src still holds the
 * pfns it was given.  Nothing is allocated (entry i is read before it is
 * written).
 */
UHMM_API int uhmm_migrate_device_pfns(struct uhmm_mm *mm, uint64_t *src,
				      unsigned long npages);

/**
 * uhmm_migrate_device_pages() - commit a device-range migration
 *
 * NULL arguments: nothing is done; a reason is recorded in uhmm_last_error().
 */
UHMM_API void uhmm_migrate_device_pages(struct uhmm_mm *mm, uint64_t *src,
					uint64_t *dst, unsigned long npages);

/**
 * uhmm_migrate_device_finalize() - install or restore after a device-range migration
 *
 * NULL arguments: nothing is done; a reason is recorded in uhmm_last_error().
 * Calling it twice for the same @src is undefined (the entries were used up),
 * as in the kernel.
 */
UHMM_API void uhmm_migrate_device_finalize(struct uhmm_mm *mm, uint64_t *src,
					   uint64_t *dst, unsigned long npages);

#ifdef __cplusplus
}
#endif
#endif /* UHMM_MIGRATE_H */
