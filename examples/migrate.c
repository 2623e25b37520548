// SPDX-License-Identifier: MIT
/*
 * A migrating device: a pool of device pages (its memory is a host arena
 * the CPU does not map at the process's addresses), migrate_vma to move a
 * buffer into it, a device "kernel" that works on device memory, and a CPU
 * touch that brings the pages back through migrate_to_ram; then eviction
 * of the pool (docs/GUIDE.md "Migrating").  Public headers only.
 *
 *   cc migrate.c $(pkg-config --cflags --libs uhmm) -o migrate && ./migrate
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <uhmm/uhmm.h>

#define NPAGES 64		/* buffer */
#define DEV_PAGES 128		/* device memory */

static struct {
	struct uhmm_devmem pgmap;	/* zeroed (static storage) */
	struct uhmm_mm *mm;
	char *mem;			/* device memory */
	size_t page_size;
	pthread_mutex_t lock;		/* the free list */
	size_t free_list[DEV_PAGES], nr_free;
	uintptr_t base;			/* the buffer the device works on */
	struct uhmm_page *pt[NPAGES];	/* device page table (under lock) */
	unsigned long cpu_faults;
} dev = { .lock = PTHREAD_MUTEX_INITIALIZER };

static char *page_mem(struct uhmm_page *p)	/* a device page's memory */
{ return dev.mem + uhmm_page_index(p) * dev.page_size; }

/* The last reference is gone (data migrated back, or address unmapped). */
static void dev_page_free(struct uhmm_page *p)
{
	pthread_mutex_lock(&dev.lock);
	dev.pt[(uintptr_t)p->zone_device_data] = NULL;
	dev.free_list[dev.nr_free++] = uhmm_page_index(p);
	pthread_mutex_unlock(&dev.lock);
}

static struct uhmm_page *dev_alloc(void)
{
	struct uhmm_page *p = NULL;

	pthread_mutex_lock(&dev.lock);
	if (dev.nr_free)
		p = uhmm_devmem_page(&dev.pgmap, dev.free_list[--dev.nr_free]);
	pthread_mutex_unlock(&dev.lock);
	if (p)
		uhmm_page_init(p);	/* refcount 1, locked: a destination */
	return p;
}

/* Move [start, end) system -> device (@to_dev) or back (@fault_page: the
 * page of a CPU fault, if any): setup, allocate and copy, pages, finalize. */
static int dev_migrate(uintptr_t start, uintptr_t end, bool to_dev,
		       struct uhmm_page *fault_page)
{
	uint64_t src[NPAGES], dst[NPAGES];
	struct uhmm_migrate_vma m = {
		.mm = dev.mm, .start = start, .end = end, .src = src, .dst = dst,
		.pgmap_owner = &dev, .fault_page = fault_page,
		.flags = to_dev ? UHMM_MIGRATE_VMA_SELECT_SYSTEM
				: UHMM_MIGRATE_VMA_SELECT_DEVICE_PRIVATE,
	};
	int ret = uhmm_migrate_vma_setup(&m);

	if (ret)
		return ret;
	/* Entries without MIGRATE were not selected: they stay where they are. */
	for (unsigned long i = 0; i < m.npages; i++) {
		if (!(src[i] & UHMM_MIGRATE_PFN_MIGRATE))
			continue;
		if (to_dev) {
			struct uhmm_page *dp = dev_alloc();
			const void *from = uhmm_migrate_pfn_addr(&m, i);

			if (!dp)
				continue;	/* device full: this page stays */
			if (from)
				memcpy(page_mem(dp), from, dev.page_size);
			else			/* never touched: zero */
				memset(page_mem(dp), 0, dev.page_size);
			dst[i] = uhmm_migrate_pfn(uhmm_page_to_pfn(dp)) |
				 (src[i] & UHMM_MIGRATE_PFN_WRITE);
			size_t idx = (start - dev.base) / dev.page_size + i;
			dp->zone_device_data = (void *)idx;
			pthread_mutex_lock(&dev.lock);
			dev.pt[idx] = dp;
			pthread_mutex_unlock(&dev.lock);
		} else {
			struct uhmm_page *sp = uhmm_pfn_to_page(dev.mm,
					uhmm_migrate_pfn_to_pfn(src[i]));
			void *to = uhmm_migrate_alloc_sys(&m, i);

			if (sp && to)
				memcpy(to, page_mem(sp), dev.page_size);
		}
	}
	uhmm_migrate_vma_pages(&m);
	uhmm_migrate_vma_finalize(&m);
	return 0;
}

/* A CPU access to a device-resident page (runs on uhmm's service thread). */
static int dev_migrate_to_ram(struct uhmm_vm_fault *vmf)
{
	pthread_mutex_lock(&dev.lock);
	dev.cpu_faults++;
	pthread_mutex_unlock(&dev.lock);
	return dev_migrate(vmf->window_start, vmf->window_end, false, vmf->page);
}

static const struct uhmm_devmem_ops dev_ops = {
	.page_free = dev_page_free,
	.migrate_to_ram = dev_migrate_to_ram,
};

/* The device "kernel": add 1 to every word of each device-resident page. */
static unsigned long dev_compute(void)
{
	unsigned long done = 0;

	pthread_mutex_lock(&dev.lock);
	for (size_t i = 0; i < NPAGES; i++) {
		uint32_t *w = dev.pt[i] ? (uint32_t *)page_mem(dev.pt[i]) : NULL;
		for (size_t k = 0; w && k < dev.page_size / 4; k++)
			w[k]++;
		done += w != NULL;
	}
	pthread_mutex_unlock(&dev.lock);
	return done;
}

static int check(const uint32_t *buf, size_t nwords, uint32_t add)
{
	size_t k = 0;

	while (k < nwords && buf[k] == (uint32_t)k + add)	/* CPU reads */
		k++;
	return k != nwords;
}

int main(void)
{
	int ret = uhmm_mm_get(&dev.mm);

	if (ret) {	/* no userfaultfd here: "uhmm info" says why */
		printf("SKIP: uhmm_mm_get: %s (%s)\n", strerror(-ret), uhmm_last_error());
		return 77;
	}
	dev.page_size = (size_t)sysconf(_SC_PAGESIZE);
	size_t len = NPAGES * dev.page_size, nwords = len / 4;
	dev.mem = mmap(NULL, DEV_PAGES * dev.page_size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint32_t *buf = mmap(NULL, len, PROT_READ | PROT_WRITE,
			     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (dev.mem == MAP_FAILED || buf == MAP_FAILED)
		return 1;
	dev.base = (uintptr_t)buf;
	for (size_t i = 0; i < DEV_PAGES; i++)
		dev.free_list[dev.nr_free++] = DEV_PAGES - 1 - i;
	dev.pgmap.ops = &dev_ops;
	dev.pgmap.owner = &dev;
	dev.pgmap.nr_pages = DEV_PAGES;
	if (uhmm_devmem_add(dev.mm, &dev.pgmap))
		return printf("devmem_add: %s\n", uhmm_last_error()), 1;

	for (size_t k = 0; k < nwords; k++)
		buf[k] = (uint32_t)k;
	/* 1. To the device, compute there, CPU reads: pages come back. */
	ret = dev_migrate(dev.base, dev.base + len, true, NULL);
	unsigned long on_dev = dev_compute();
	int bad = ret || on_dev != NPAGES || check(buf, nwords, 1);
	printf("migrate: %lu pages computed on the device, CPU reads brought them "
	       "back\n", on_dev);

	/* 2. To the device again, then evict the pool: every page is
	 * migrated back before uhmm_devmem_remove() returns. */
	bad |= dev_migrate(dev.base, dev.base + len, true, NULL) != 0;
	bad |= dev_compute() != NPAGES;
	bad |= uhmm_devmem_remove(&dev.pgmap) != 0;
	pthread_mutex_lock(&dev.lock);
	bad |= check(buf, nwords, 2) || dev.nr_free != DEV_PAGES;
	printf("migrate: %lu CPU faults; pool evicted, %zu of %d device pages "
	       "free, %s\n", dev.cpu_faults, dev.nr_free, DEV_PAGES,
	       bad ? "MISMATCH" : "all data correct");
	pthread_mutex_unlock(&dev.lock);
	munmap(buf, len);
	munmap(dev.mem, DEV_PAGES * dev.page_size);
	uhmm_mm_put(dev.mm);
	return bad;
}
