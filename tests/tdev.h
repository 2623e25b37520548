/* SPDX-License-Identifier: MIT */
/*
 * A minimal in-test device for the migration tests: device memory is a host
 * arena the CPU does not map at the process's addresses, with a free list,
 * a CPU-fault handler (migrate_to_ram over the fault-around window) and
 * failure injection.  Uses only the public API, as a driver would.
 */
#ifndef UHMM_TEST_TDEV_H
#define UHMM_TEST_TDEV_H

#include "common.h"

struct tdev {
	struct uhmm_devmem pgmap;
	struct uhmm_mm *mm;
	char *arena;
	size_t nr_pages;
	pthread_mutex_t lock;
	size_t *free_list;
	size_t nr_free;
	atomic_long frees;		/* page_free calls */
	atomic_long cpu_faults;		/* migrate_to_ram calls */
	atomic_long to_ram_pages;	/* pages migrated back by CPU faults */
	/* failure injection: -1 = off, else fail when the count reaches 0 */
	atomic_long fail_alloc_after;
	atomic_long fail_copy_after;
	int owner_token;
};

static inline char *tdev_page_mem(struct tdev *d, struct uhmm_page *p)
{
	return d->arena + uhmm_page_index(p) * page_size;
}

static inline struct uhmm_page *tdev_alloc(struct tdev *d)
{
	struct uhmm_page *p = NULL;
	long f = atomic_load(&d->fail_alloc_after);

	if (f >= 0) {
		if (f == 0)
			return NULL;
		atomic_fetch_sub(&d->fail_alloc_after, 1);
	}
	pthread_mutex_lock(&d->lock);
	if (d->nr_free)
		p = uhmm_devmem_page(&d->pgmap, d->free_list[--d->nr_free]);
	pthread_mutex_unlock(&d->lock);
	if (p)
		uhmm_page_init(p);
	return p;
}

static inline bool tdev_copy_ok(struct tdev *d)
{
	long f = atomic_load(&d->fail_copy_after);

	if (f < 0)
		return true;
	if (f == 0)
		return false;
	atomic_fetch_sub(&d->fail_copy_after, 1);
	return true;
}

static void tdev_page_free(struct uhmm_page *p)
{
	struct tdev *d = p->pgmap->driver_data;

	atomic_fetch_add(&d->frees, 1);
	pthread_mutex_lock(&d->lock);
	d->free_list[d->nr_free++] = uhmm_page_index(p);
	pthread_mutex_unlock(&d->lock);
}

/* Device -> system for [start, end); returns pages migrated or -errno. */
static inline long tdev_to_sys(struct tdev *d, uintptr_t start, uintptr_t end,
			       struct uhmm_page *fault_page)
{
	size_t n = (end - start) / page_size;
	uint64_t *src = calloc(n, 8), *dst = calloc(n, 8);
	struct uhmm_migrate_vma m = {
		.mm = d->mm, .start = start, .end = end, .src = src, .dst = dst,
		.pgmap_owner = &d->owner_token,
		.flags = UHMM_MIGRATE_VMA_SELECT_DEVICE_PRIVATE,
		.fault_page = fault_page,
	};
	long moved = 0;
	int ret;

	if (!src || !dst)
		return -ENOMEM;
	ret = uhmm_migrate_vma_setup(&m);
	if (ret) {
		free(src);
		free(dst);
		return ret;
	}
	for (size_t i = 0; i < n; i++) {
		struct uhmm_page *sp;
		void *to;

		if (!(src[i] & UHMM_MIGRATE_PFN_MIGRATE))
			continue;
		sp = uhmm_pfn_to_page(d->mm, uhmm_migrate_pfn_to_pfn(src[i]));
		if (!sp || !tdev_copy_ok(d))
			continue;
		to = uhmm_migrate_alloc_sys(&m, i);
		if (!to)
			continue;
		memcpy(to, tdev_page_mem(d, sp), page_size);
		moved++;
	}
	uhmm_migrate_vma_pages(&m);
	uhmm_migrate_vma_finalize(&m);
	free(src);
	free(dst);
	return moved;
}

/* System -> device for [start, end); returns pages migrated (cpages-like) or -errno. */
static inline long tdev_to_dev(struct tdev *d, uintptr_t start, uintptr_t end,
			       unsigned long *cpages_out)
{
	size_t n = (end - start) / page_size;
	uint64_t *src = calloc(n, 8), *dst = calloc(n, 8);
	struct uhmm_migrate_vma m = {
		.mm = d->mm, .start = start, .end = end, .src = src, .dst = dst,
		.pgmap_owner = &d->owner_token,
		.flags = UHMM_MIGRATE_VMA_SELECT_SYSTEM,
	};
	long moved = 0;
	int ret;

	if (!src || !dst)
		return -ENOMEM;
	ret = uhmm_migrate_vma_setup(&m);
	if (ret) {
		free(src);
		free(dst);
		return ret;
	}
	if (cpages_out)
		*cpages_out = m.cpages;
	for (size_t i = 0; i < n; i++) {
		struct uhmm_page *dp;
		const void *from;

		if (!(src[i] & UHMM_MIGRATE_PFN_MIGRATE))
			continue;
		dp = tdev_alloc(d);
		if (!dp)
			continue;
		if (!tdev_copy_ok(d)) {
			/* Copy failed: give the page back, entry not migrated. */
			uhmm_page_unlock(dp);
			uhmm_page_put(dp);
			continue;
		}
		from = uhmm_migrate_pfn_addr(&m, i);
		if (from)
			memcpy(tdev_page_mem(d, dp), from, page_size);
		else
			memset(tdev_page_mem(d, dp), 0, page_size);
		dst[i] = uhmm_migrate_pfn(uhmm_page_to_pfn(dp));
		if (src[i] & UHMM_MIGRATE_PFN_WRITE)
			dst[i] |= UHMM_MIGRATE_PFN_WRITE;
		moved++;
	}
	uhmm_migrate_vma_pages(&m);
	uhmm_migrate_vma_finalize(&m);
	free(src);
	free(dst);
	return moved;
}

static int tdev_migrate_to_ram(struct uhmm_vm_fault *vmf)
{
	struct tdev *d = vmf->page->pgmap->driver_data;
	long r;

	atomic_fetch_add(&d->cpu_faults, 1);
	r = tdev_to_sys(d, vmf->window_start, vmf->window_end, vmf->page);
	if (r < 0)
		return (int)r;
	atomic_fetch_add(&d->to_ram_pages, r);
	return 0;
}

static const struct uhmm_devmem_ops tdev_ops = {
	.page_free = tdev_page_free,
	.migrate_to_ram = tdev_migrate_to_ram,
};

static inline struct tdev *tdev_create(struct uhmm_mm *mm, size_t nr_pages,
				       size_t fault_around)
{
	struct tdev *d = calloc(1, sizeof(*d));

	CHECK(d, "calloc");
	d->mm = mm;
	d->nr_pages = nr_pages;
	d->arena = mmap(NULL, nr_pages * page_size, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(d->arena != MAP_FAILED, "arena");
	d->free_list = calloc(nr_pages, sizeof(size_t));
	CHECK(d->free_list, "free list");
	for (size_t i = 0; i < nr_pages; i++)
		d->free_list[i] = nr_pages - 1 - i;
	d->nr_free = nr_pages;
	pthread_mutex_init(&d->lock, NULL);
	atomic_store(&d->fail_alloc_after, -1);
	atomic_store(&d->fail_copy_after, -1);
	d->pgmap.ops = &tdev_ops;
	d->pgmap.owner = &d->owner_token;
	d->pgmap.nr_pages = nr_pages;
	d->pgmap.fault_around = fault_around;
	d->pgmap.driver_data = d;
	CHECK_EQ(uhmm_devmem_add(mm, &d->pgmap), 0);
	return d;
}

static inline size_t tdev_used(struct tdev *d)
{
	size_t used;

	pthread_mutex_lock(&d->lock);
	used = d->nr_pages - d->nr_free;
	pthread_mutex_unlock(&d->lock);
	return used;
}

static inline void tdev_destroy(struct tdev *d)
{
	CHECK_EQ(uhmm_devmem_remove(&d->pgmap), 0);
	CHECK_EQ(tdev_used(d), 0);
	munmap(d->arena, d->nr_pages * page_size);
	free(d->free_list);
	pthread_mutex_destroy(&d->lock);
	free(d);
}

/* Fill [p, p + n pages) with a pattern derived from @seed and the offset. */
static inline void fill_pattern(void *p, size_t n, uint32_t seed)
{
	uint32_t *w = p;

	for (size_t i = 0; i < n * page_size / 4; i++)
		w[i] = seed * 2654435761u + (uint32_t)i;
}

/* Index of the first wrong 32-bit word, or -1. */
static inline long check_pattern(const void *p, size_t n, uint32_t seed)
{
	const uint32_t *w = p;

	for (size_t i = 0; i < n * page_size / 4; i++)
		if (w[i] != seed * 2654435761u + (uint32_t)i)
			return (long)i;
	return -1;
}

static inline uint32_t page_state_of(struct uhmm_mm *mm, const void *p)
{
	uint32_t st = 0;

	CHECK_EQ(uhmm_page_state(mm, (uintptr_t)p, 1, &st), 0);
	return st;
}

#endif
