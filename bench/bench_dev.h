/* SPDX-License-Identifier: MIT */
/*
 * The device the benchmarks migrate to: device memory is a pre-faulted host
 * arena; copies are memcpy.  Public API only.
 */
#ifndef UHMM_BENCH_DEV_H
#define UHMM_BENCH_DEV_H

#include <errno.h>
#include <pthread.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <uhmm/uhmm.h>

struct bdev {
	struct uhmm_devmem pgmap;
	struct uhmm_mm *mm;
	char *arena;
	size_t nr_pages, page_size;
	pthread_mutex_t lock;
	uint8_t *used;			/* per device page */
	size_t cursor, nr_free;		/* next-fit allocation */
	bool compound;			/* 2 MiB device pages for 2 MiB blocks */
	int owner;
};

static inline char *bdev_mem(struct bdev *d, struct uhmm_page *p)
{
	return d->arena + uhmm_page_index(p) * d->page_size;
}

static void bdev_page_free(struct uhmm_page *p)
{
	struct bdev *d = p->pgmap->driver_data;

	size_t nr = (size_t)1 << uhmm_page_order(p);	/* a 2 MiB page is freed whole */

	pthread_mutex_lock(&d->lock);
	memset(d->used + uhmm_page_index(p), 0, nr);
	d->nr_free += nr;
	pthread_mutex_unlock(&d->lock);
}

/*
 * The head of 512 free pages, aligned, for a 2 MiB device page, or
 * SIZE_MAX (d->lock held).
 */
static inline size_t bdev_alloc_huge(struct bdev *d)
{
	const size_t nr = (size_t)1 << UHMM_PMD_ORDER;

	for (size_t h = 0; h + nr <= d->nr_pages; h += nr) {
		size_t k = 0;

		while (k < nr && !d->used[h + k])
			k++;
		if (k == nr) {
			memset(d->used + h, 1, nr);
			d->nr_free -= nr;
			return h;
		}
	}
	return SIZE_MAX;
}

/*
 * Next-fit: pages are handed out in ascending runs, as a device allocator
 * hands out contiguous device memory (d->lock held, d->nr_free > 0).
 */
static inline size_t bdev_alloc_index(struct bdev *d)
{
	while (d->used[d->cursor])
		d->cursor = (d->cursor + 1) % d->nr_pages;
	d->used[d->cursor] = 1;
	d->nr_free--;
	return d->cursor;
}

/*
 * The device's copy engine, one transfer per run of pages contiguous on
 * both sides (a DMA engine takes one descriptor per contiguous run): the
 * run is copied by memcpy, as the memcpy baseline is.
 */
struct bdev_run {
	char *to;
	const char *from;
	size_t len;
};

static inline void bdev_run_add(struct bdev_run *r, char *to, const char *from, size_t len)
{
	if (r->len && r->to + r->len == to && r->from + r->len == from) {
		r->len += len;
		return;
	}
	if (r->len)
		memcpy(r->to, r->from, r->len);
	*r = (struct bdev_run){ .to = to, .from = from, .len = len };
}

static inline void bdev_run_flush(struct bdev_run *r)
{
	if (r->len)
		memcpy(r->to, r->from, r->len);
	r->len = 0;
}

/* Migrate [s, e) to (to_dev) or from the device; returns pages moved or -errno. */
static long bdev_migrate(struct bdev *d, uintptr_t s, uintptr_t e, bool to_dev,
			 struct uhmm_page *fault_page)
{
	size_t n = (e - s) / d->page_size;
	uint64_t *src = malloc(n * 8), *dst = malloc(n * 8);
	struct uhmm_migrate_vma m = {
		.mm = d->mm, .start = s, .end = e, .src = src, .dst = dst,
		.pgmap_owner = &d->owner, .fault_page = fault_page,
		.flags = (to_dev ? UHMM_MIGRATE_VMA_SELECT_SYSTEM
				 : UHMM_MIGRATE_VMA_SELECT_DEVICE_PRIVATE) |
			 (d->compound ? UHMM_MIGRATE_VMA_SELECT_COMPOUND : 0),
	};
	struct bdev_run run = { 0 };
	long moved = 0;
	int ret;

	if (!src || !dst) {
		free(src);
		free(dst);
		return -ENOMEM;
	}
	ret = uhmm_migrate_vma_setup(&m);
	if (ret) {
		free(src);
		free(dst);
		return ret;
	}
	if (to_dev) {
		/*
		 * Allocate and initialise every destination first, then copy
		 * run by run.
		 */
		pthread_mutex_lock(&d->lock);
		for (size_t i = 0; i < n; i++) {
			struct uhmm_page *p;

			if (!(src[i] & UHMM_MIGRATE_PFN_MIGRATE))
				continue;
			if (src[i] & UHMM_MIGRATE_PFN_COMPOUND) {
				size_t h = bdev_alloc_huge(d);

				if (h != SIZE_MAX) {
					p = uhmm_devmem_page(&d->pgmap, h);
					uhmm_folio_init(p, UHMM_PMD_ORDER);
					dst[i] = uhmm_migrate_pfn(uhmm_page_to_pfn(p)) |
						 (src[i] & UHMM_MIGRATE_PFN_WRITE) |
						 UHMM_MIGRATE_PFN_COMPOUND;
					moved += 1 << UHMM_PMD_ORDER;
					continue;
				}
				/* No 2 MiB page: this block's head only (a split). */
			}
			if (!d->nr_free)
				break;
			p = uhmm_devmem_page(&d->pgmap, bdev_alloc_index(d));
			uhmm_page_init(p);
			dst[i] = uhmm_migrate_pfn(uhmm_page_to_pfn(p)) |
				 (src[i] & UHMM_MIGRATE_PFN_WRITE);
			moved++;
		}
		pthread_mutex_unlock(&d->lock);
		for (size_t i = 0; i < n; i++) {
			size_t len = (dst[i] & UHMM_MIGRATE_PFN_COMPOUND) ?
				     d->page_size << UHMM_PMD_ORDER : d->page_size;
			char *to;
			const void *from;

			if (!dst[i])
				continue;
			to = bdev_mem(d, uhmm_pfn_to_page(d->mm, uhmm_migrate_pfn_to_pfn(dst[i])));
			from = uhmm_migrate_pfn_addr(&m, i);
			if (from) {
				bdev_run_add(&run, to, from, len);
			} else {
				bdev_run_flush(&run);
				memset(to, 0, len);
			}
		}
		bdev_run_flush(&run);
	} else {
		for (size_t i = 0; i < n; i++) {
			/*
			 * As a device the CPU cannot read: DMA into the system
			 * page uhmm gives (a page it recycles when it can),
			 * which finalize moves into place.
			 */
			struct uhmm_page *p;
			void *to;

			if (!(src[i] & UHMM_MIGRATE_PFN_MIGRATE))
				continue;
			p = uhmm_pfn_to_page(d->mm, uhmm_migrate_pfn_to_pfn(src[i]));
			if (!p)
				continue;
			to = uhmm_migrate_alloc_sys(&m, i);
			if (!to)
				continue;
			if (src[i] & UHMM_MIGRATE_PFN_COMPOUND) {
				bdev_run_add(&run, to, bdev_mem(d, p),
					     d->page_size << UHMM_PMD_ORDER);
				moved += 1 << UHMM_PMD_ORDER;
				continue;
			}
			bdev_run_add(&run, to, bdev_mem(d, p), d->page_size);
			moved++;
		}
		bdev_run_flush(&run);
	}
	uhmm_migrate_vma_pages(&m);
	uhmm_migrate_vma_finalize(&m);
	free(src);
	free(dst);
	return moved;
}

static int bdev_migrate_to_ram(struct uhmm_vm_fault *vmf)
{
	struct bdev *d = vmf->page->pgmap->driver_data;
	long r = bdev_migrate(d, vmf->window_start, vmf->window_end, false, vmf->page);

	return r < 0 ? (int)r : 0;
}

static const struct uhmm_devmem_ops bdev_ops = {
	.page_free = bdev_page_free,
	.migrate_to_ram = bdev_migrate_to_ram,
};

static inline struct bdev *bdev_create_ex(struct uhmm_mm *mm, size_t nr_pages,
					  size_t fault_around, bool compound)
{
	struct bdev *d = calloc(1, sizeof(*d));

	if (!d)
		return NULL;
	d->mm = mm;
	d->page_size = (size_t)sysconf(_SC_PAGESIZE);
	d->nr_pages = nr_pages;
	d->arena = mmap(NULL, nr_pages * d->page_size, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	d->used = calloc(nr_pages, 1);
	if (d->arena == MAP_FAILED || !d->used) {
		free(d->used);
		free(d);
		return NULL;
	}
	d->nr_free = nr_pages;
	pthread_mutex_init(&d->lock, NULL);
	d->pgmap.ops = &bdev_ops;
	d->pgmap.owner = &d->owner;
	d->pgmap.nr_pages = nr_pages;
	d->pgmap.fault_around = fault_around;
	d->pgmap.driver_data = d;
	d->compound = compound;
	d->pgmap.flags = compound ? UHMM_DEVMEM_COMPOUND : 0;
	if (uhmm_devmem_add(mm, &d->pgmap)) {
		munmap(d->arena, nr_pages * d->page_size);
		free(d->used);
		free(d);
		return NULL;
	}
	return d;
}

static inline struct bdev *bdev_create(struct uhmm_mm *mm, size_t nr_pages,
				       size_t fault_around)
{
	return bdev_create_ex(mm, nr_pages, fault_around, false);
}

static inline void bdev_destroy(struct bdev *d)
{
	uhmm_devmem_remove(&d->pgmap);
	munmap(d->arena, d->nr_pages * d->page_size);
	free(d->used);
	free(d);
}

#endif
