// SPDX-License-Identifier: MIT
/*
 * A plugin that uses uhmm, for tests/test_dlclose.c: a tiny device (all of
 * its state in this module's data and its own mapping), an interval
 * notifier on the caller's buffer, and a migration of the buffer to the
 * device.  It returns with the context live and the pages on the device:
 * the caller then dlcloses the plugin.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <uhmm/devmem.h>
#include <uhmm/migrate.h>
#include <uhmm/mm.h>
#include <uhmm/notifier.h>

#define DEV_PAGES 256
#define BATCH 64

static struct uhmm_devmem pgmap;
static struct uhmm_mm *mm;
static char *arena;
static size_t ps;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static size_t free_list[DEV_PAGES], nfree;
static int owner;
static struct uhmm_interval_notifier mni;

static char *mem_of(struct uhmm_page *p)
{
	return arena + uhmm_page_index(p) * ps;
}

static void page_free_cb(struct uhmm_page *p)
{
	pthread_mutex_lock(&lock);
	free_list[nfree++] = uhmm_page_index(p);
	pthread_mutex_unlock(&lock);
}

static int to_ram_cb(struct uhmm_vm_fault *vmf)
{
	uint64_t src[1], dst[1];
	struct uhmm_migrate_vma m = {
		.mm = mm, .start = vmf->address, .end = vmf->address + ps,
		.src = src, .dst = dst, .pgmap_owner = &owner, .fault_page = vmf->page,
		.flags = UHMM_MIGRATE_VMA_SELECT_DEVICE_PRIVATE,
	};
	int ret = uhmm_migrate_vma_setup(&m);

	if (ret)
		return ret;
	if (src[0] & UHMM_MIGRATE_PFN_MIGRATE) {
		void *to = uhmm_migrate_alloc_sys(&m, 0);

		if (to)
			memcpy(to, mem_of(uhmm_pfn_to_page(mm, uhmm_migrate_pfn_to_pfn(src[0]))),
			       ps);
	}
	uhmm_migrate_vma_pages(&m);
	uhmm_migrate_vma_finalize(&m);
	return 0;
}

static const struct uhmm_devmem_ops ops = {
	.page_free = page_free_cb,
	.migrate_to_ram = to_ram_cb,
};

static bool invalidate_cb(struct uhmm_interval_notifier *n,
			  const struct uhmm_notifier_range *r, unsigned long seq)
{
	uhmm_interval_set_seq(n, seq);
	return true;
}

static const struct uhmm_interval_notifier_ops nops = {
	.invalidate = invalidate_cb,
};

/* Pages of [buf, +npages) now on the device, or -errno. */
__attribute__((visibility("default"))) long plugin_start(char *buf, size_t npages)
{
	uint64_t src[BATCH], dst[BATCH];
	struct uhmm_migrate_vma m = {
		.src = src, .dst = dst, .pgmap_owner = &owner,
		.flags = UHMM_MIGRATE_VMA_SELECT_SYSTEM,
	};
	long moved = 0;
	int ret;

	ps = (size_t)sysconf(_SC_PAGESIZE);
	if (npages > BATCH)
		return -EINVAL;
	ret = uhmm_mm_get(&mm);
	if (ret)
		return ret;
	arena = mmap(NULL, DEV_PAGES * ps, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (arena == MAP_FAILED)
		return -ENOMEM;
	for (size_t i = 0; i < DEV_PAGES; i++)
		free_list[i] = DEV_PAGES - 1 - i;
	nfree = DEV_PAGES;
	pgmap.ops = &ops;
	pgmap.owner = &owner;
	pgmap.nr_pages = DEV_PAGES;
	pgmap.fault_around = 1;
	ret = uhmm_devmem_add(mm, &pgmap);
	if (ret)
		return ret;
	ret = uhmm_interval_notifier_insert(&mni, mm, (uintptr_t)buf, npages * ps, &nops);
	if (ret)
		return ret;
	m.mm = mm;
	m.start = (uintptr_t)buf;
	m.end = (uintptr_t)buf + npages * ps;
	ret = uhmm_migrate_vma_setup(&m);
	if (ret)
		return ret;
	for (size_t i = 0; i < npages; i++) {
		struct uhmm_page *p = NULL;
		const void *from;

		if (!(src[i] & UHMM_MIGRATE_PFN_MIGRATE))
			continue;
		pthread_mutex_lock(&lock);
		if (nfree)
			p = uhmm_devmem_page(&pgmap, free_list[--nfree]);
		pthread_mutex_unlock(&lock);
		if (!p)
			continue;
		uhmm_page_init(p);
		from = uhmm_migrate_pfn_addr(&m, i);
		if (from)
			memcpy(mem_of(p), from, ps);
		else
			memset(mem_of(p), 0, ps);
		dst[i] = uhmm_migrate_pfn(uhmm_page_to_pfn(p)) | (src[i] & UHMM_MIGRATE_PFN_WRITE);
		moved++;
	}
	uhmm_migrate_vma_pages(&m);
	uhmm_migrate_vma_finalize(&m);
	return moved;
}
