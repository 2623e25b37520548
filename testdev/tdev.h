/* SPDX-License-Identifier: MIT */
/*
 * tdev, the small device the tests and the benchmark migrate to (simdev,
 * the reference device, is the full one: include/uhmm/simdev.h).  Device
 * memory is a pre-faulted host arena the CPU does not map at the process's
 * addresses; a free page is reused at once (last freed, first allocated:
 * what the tests of reuse races want), or with TDEV_NEXT_FIT pages are
 * handed out in ascending runs, as a device allocator hands out contiguous
 * memory (what the benchmark wants); the copy engine takes one memcpy
 * per run of pages contiguous on both sides, as a DMA engine takes one
 * descriptor per run.  A CPU fault migrates the fault-around window back
 * (migrate_to_ram).  Counters and failure injection serve the tests.
 * Public API only, as a driver would use it; built once as the static
 * library uhmm_testdev, linked by the tests and by the `uhmm` tool's bench.
 * Every function returns 0 or a count, or a negative errno; none exits.
 */
#ifndef UHMM_TESTDEV_TDEV_H
#define UHMM_TESTDEV_TDEV_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uhmm/uhmm.h>

struct tdev {
	struct uhmm_devmem pgmap;	/* driver_data is the tdev */
	struct uhmm_mm *mm;
	char *arena;
	size_t nr_pages, page_size;
	unsigned int flags;		/* TDEV_* */
	pthread_mutex_t lock;		/* free_list[], used[], cursor, nr_free */
	size_t nr_free;
	size_t *free_list;		/* a stack of free pages (not next-fit) */
	uint8_t *used;			/* next-fit: per device page */
	size_t cursor;			/* next-fit: where the search starts */
	atomic_long frees;		/* page_free calls */
	atomic_long cpu_faults;		/* migrate_to_ram calls */
	atomic_long to_ram_pages;	/* pages migrated back by CPU faults */
	/* failure injection: -1 = off, else fail when the count reaches 0 */
	atomic_long fail_alloc_after;
	atomic_long fail_copy_after;
	int owner_token;		/* pgmap.owner and pgmap_owner */
};

/* tdev_open() flags */
#define TDEV_NEXT_FIT 1u	/* allocate in ascending runs, not last freed first */
/*
 * 2 MiB device pages (UHMM_DEVMEM_COMPOUND): a migration to the device
 * selects whole 2 MiB blocks (UHMM_MIGRATE_VMA_SELECT_COMPOUND) and gives
 * each a 2 MiB device page, 512 free pages aligned to 512, where one is
 * free; where none is, the block's head gets a small page (uhmm splits
 * the block).  Implies TDEV_NEXT_FIT.
 */
#define TDEV_COMPOUND 2u

/* The device's callbacks, for a test that wraps them in its own ops. */
extern const struct uhmm_devmem_ops tdev_ops;
void tdev_page_free(struct uhmm_page *p);
int tdev_migrate_to_ram(struct uhmm_vm_fault *vmf);

/*
 * Create a device of @nr_pages pages whose CPU faults bring back
 * @fault_around pages around the faulting one, and add its pool to @mm
 * with @ops (NULL: tdev_ops); @flags: TDEV_*.  Pages are handed out from
 * index 0 up.  Returns 0 (*@out set), -ENOMEM, or uhmm_devmem_add()'s error.
 */
int tdev_open(struct uhmm_mm *mm, size_t nr_pages, size_t fault_around,
	      const struct uhmm_devmem_ops *ops, unsigned int flags, struct tdev **out);

/*
 * Remove the pool (uhmm_devmem_remove(): the device's pages go home) and
 * free the device.  Returns 0, the removal's error (the device is kept),
 * or -ENOTEMPTY: a device page was still allocated after the removal
 * (the device is freed all the same).
 */
int tdev_close(struct tdev *d);

/*
 * One device page for a driver's own migration code: initialised (locked,
 * one reference, as uhmm_page_init() leaves it), or NULL (none free, or an
 * injected failure).
 */
struct uhmm_page *tdev_alloc(struct tdev *d);

/* Free a device whose pool the caller removed already (or never added). */
void tdev_free(struct tdev *d);

/* Device pages allocated now (a 2 MiB device page counts 512). */
size_t tdev_used(struct tdev *d);

/* The device memory behind device page @p. */
static inline char *tdev_page_mem(struct tdev *d, struct uhmm_page *p)
{
	return d->arena + uhmm_page_index(p) * d->page_size;
}

/*
 * Migrate [@start, @end) to the device (@to_dev) or back to system memory
 * (only this device's pages; @fault_page as uhmm_migrate_vma's).  Returns
 * the pages migrated or a negative errno; *@cpages (may be NULL) gets the
 * pages the setup collected.
 */
long tdev_migrate(struct tdev *d, uintptr_t start, uintptr_t end, bool to_dev,
		  struct uhmm_page *fault_page, unsigned long *cpages);

/* Device -> system for [start, end); returns pages migrated or -errno. */
static inline long tdev_to_sys(struct tdev *d, uintptr_t start, uintptr_t end,
			       struct uhmm_page *fault_page)
{
	return tdev_migrate(d, start, end, false, fault_page, NULL);
}

/* System -> device for [start, end); returns pages migrated or -errno. */
static inline long tdev_to_dev(struct tdev *d, uintptr_t start, uintptr_t end,
			       unsigned long *cpages_out)
{
	return tdev_migrate(d, start, end, true, NULL, cpages_out);
}

#endif
