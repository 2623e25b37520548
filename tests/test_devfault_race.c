// SPDX-License-Identifier: MIT
/*
 * A device fault racing the page's migration home (issue 6 item 2, "a
 * device reads another page's data").
 *
 * A fault on a device-resident address reads the address's entry, then
 * locks and references the device page it names and calls the pool's
 * migrate_to_ram.  Between the read and the lock, another thread may
 * migrate that page home, free it, and even give it to another address.
 * The fault must then look again: migrate_to_ram is only ever called for
 * the page mapped at vmf->address, referenced (the mapping's reference and
 * the fault's).  uhmm once locked and "referenced" whatever page the stale
 * entry named: a page already free (its reference refused, so the fault's
 * final put freed the page a second time while a new address mapped it:
 * two addresses then shared one device page and read each other's data),
 * or one already in use for another address.
 *
 * The driver here records, per device page, the address it migrated the
 * page to (0 while the page is free) and checks in migrate_to_ram that the
 * page is the one of vmf->address, referenced at least twice, and in
 * page_free that the page was in use (a second free is a failure).
 * Threads: one migrates a region to the device and back (explicitly, so
 * pages are freed and, with the free list's last-in-first-out order, reused
 * at once for other addresses); others range-fault the region in (without
 * the device's owner: every device page is a fault, run on the faulting
 * thread) and read it with the CPU (faults served by the service thread),
 * checking the data.  With the fault path looking again every check holds
 * whatever the interleaving; without it, the first bad call shows within a
 * few thousand rounds on a 2-CPU machine.
 */
#include "common.h"

#include <sched.h>

#define NPAGES	64
#define ROUNDS	3000
#define NRF	3		/* range-fault threads */

static struct uhmm_mm *mm;
static struct tdev *dev;
static char *region;
static _Atomic uintptr_t page_addr[NPAGES];	/* per device page: address, 0 = free */
static atomic_long bad_calls, bad_frees, bad_data, calls;
static atomic_bool stop;
static char bad_what[256];
static atomic_flag bad_once = ATOMIC_FLAG_INIT;

/* Keep the first failure's description. */
#define record_bad(...)								\
	do {									\
		if (!atomic_flag_test_and_set(&bad_once))			\
			snprintf(bad_what, sizeof(bad_what), __VA_ARGS__);	\
	} while (0)

static int vdev_migrate_to_ram(struct uhmm_vm_fault *vmf)
{
	size_t idx = uhmm_page_index(vmf->page);
	uintptr_t at = atomic_load(&page_addr[idx]);
	int ref = uhmm_page_refcount(vmf->page);

	atomic_fetch_add(&calls, 1);
	if (at != vmf->address || ref < 2) {
		atomic_fetch_add(&bad_calls, 1);
		record_bad("migrate_to_ram for %#lx got a device page that holds %#lx "
			   "(0: free), reference count %d", (unsigned long)vmf->address,
			   (unsigned long)at, ref);
	}
	return tdev_migrate_to_ram(vmf);
}

static void vdev_page_free(struct uhmm_page *p)
{
	size_t idx = uhmm_page_index(p);
	uintptr_t at = atomic_exchange(&page_addr[idx], 0);

	if (!at) {
		atomic_fetch_add(&bad_frees, 1);
		record_bad("page_free of device page %zu, which was free already", idx);
	}
	tdev_page_free(p);
}

static const struct uhmm_devmem_ops vdev_ops = {
	.page_free = vdev_page_free,
	.migrate_to_ram = vdev_migrate_to_ram,
};

/* System -> device for the region, recording each page's address. */
static void to_dev(void)
{
	uint64_t src[NPAGES], dst[NPAGES];
	struct uhmm_migrate_vma m = {
		.mm = mm, .start = (uintptr_t)region,
		.end = (uintptr_t)region + NPAGES * page_size, .src = src, .dst = dst,
		.pgmap_owner = &dev->owner_token, .flags = UHMM_MIGRATE_VMA_SELECT_SYSTEM,
	};

	if (uhmm_migrate_vma_setup(&m))
		return;
	for (size_t i = 0; i < NPAGES; i++) {
		struct uhmm_page *p;
		const void *from;

		if (!(src[i] & UHMM_MIGRATE_PFN_MIGRATE))
			continue;
		p = tdev_alloc(dev);
		if (!p)
			continue;
		if (atomic_exchange(&page_addr[uhmm_page_index(p)],
				    m.start + i * page_size)) {
			atomic_fetch_add(&bad_frees, 1);
			record_bad("device page %zu allocated while in use",
				   uhmm_page_index(p));
		}
		from = uhmm_migrate_pfn_addr(&m, i);
		if (from)
			memcpy(tdev_page_mem(dev, p), from, page_size);
		else
			memset(tdev_page_mem(dev, p), 0, page_size);
		dst[i] = uhmm_migrate_pfn(uhmm_page_to_pfn(p)) | (src[i] & UHMM_MIGRATE_PFN_WRITE);
	}
	uhmm_migrate_vma_pages(&m);
	uhmm_migrate_vma_finalize(&m);
}

static void check_page(size_t i, const char *what)
{
	long w = check_pattern(region + i * page_size, 1, (uint32_t)i + 1);

	if (w >= 0) {
		atomic_fetch_add(&bad_data, 1);
		record_bad("%s of page %zu: wrong data at word %ld", what, i, w);
	}
}

static bool range_noop(struct uhmm_interval_notifier *mni, const struct uhmm_notifier_range *r,
		       unsigned long cur_seq)
{
	(void)r;
	uhmm_interval_set_seq(mni, cur_seq);
	return true;
}

static const struct uhmm_interval_notifier_ops range_ops = { .invalidate = range_noop };
static struct uhmm_interval_notifier mni;

/* Range-fault the region in (another owner's view: every device page faults). */
static void *range_thread(void *arg)
{
	uint64_t pfns[NPAGES];

	(void)arg;
	while (!atomic_load(&stop)) {
		struct uhmm_range r = {
			.notifier = &mni, .start = (uintptr_t)region,
			.end = (uintptr_t)region + NPAGES * page_size, .hmm_pfns = pfns,
			.default_flags = UHMM_PFN_REQ_FAULT,
		};
		int ret;

		r.notifier_seq = uhmm_interval_read_begin(&mni);
		ret = uhmm_range_fault(&r);
		if (ret && ret != -EBUSY) {
			atomic_fetch_add(&bad_data, 1);
			record_bad("range fault returned %d", ret);
		}
	}
	return NULL;
}

/* CPU reads: faults served by uhmm's service thread. */
static void *cpu_thread(void *arg)
{
	unsigned int x = 12345;

	(void)arg;
	while (!atomic_load(&stop)) {
		x = x * 1103515245u + 12345u;
		check_page((x >> 8) % NPAGES, "cpu read");
	}
	return NULL;
}

static void test_fault_vs_migration_home(void)
{
	pthread_t rt[NRF], ct;
	int rounds;

	mm = test_mm();
	dev = tdev_create_ops(mm, NPAGES, 1, &vdev_ops);

	region = map_anon(NPAGES * page_size, PROT_READ | PROT_WRITE);
	for (size_t i = 0; i < NPAGES; i++)
		fill_pattern(region + i * page_size, 1, (uint32_t)i + 1);
	CHECK_EQ(uhmm_interval_notifier_insert(&mni, mm, (uintptr_t)region,
					       NPAGES * page_size, &range_ops), 0);

	for (int i = 0; i < NRF; i++)
		CHECK_EQ(pthread_create(&rt[i], NULL, range_thread, NULL), 0);
	CHECK_EQ(pthread_create(&ct, NULL, cpu_thread, NULL), 0);
	for (rounds = 0; rounds < ROUNDS && !atomic_load(&bad_calls) &&
			 !atomic_load(&bad_frees) && !atomic_load(&bad_data); rounds++) {
		to_dev();
		/* Back home explicitly: frees the pages the faults may be about to lock. */
		tdev_to_sys(dev, (uintptr_t)region, (uintptr_t)region + NPAGES * page_size, NULL);
	}
	atomic_store(&stop, true);
	for (int i = 0; i < NRF; i++)
		pthread_join(rt[i], NULL);
	pthread_join(ct, NULL);

	CHECK(!atomic_load(&bad_calls) && !atomic_load(&bad_frees) && !atomic_load(&bad_data),
	      "after %d rounds and %ld migrate_to_ram calls: %ld bad calls, %ld bad frees, "
	      "%ld bad reads; first: %s", rounds, atomic_load(&calls), atomic_load(&bad_calls),
	      atomic_load(&bad_frees), atomic_load(&bad_data), bad_what);
	for (size_t i = 0; i < NPAGES; i++)
		check_page(i, "final read");
	CHECK_EQ(atomic_load(&bad_data), 0);
	uhmm_interval_notifier_remove(&mni);
	CHECK_EQ(munmap(region, NPAGES * page_size), 0);
	tdev_destroy(dev);
	uhmm_mm_put(mm);
	printf("test_devfault_race: %d rounds, %ld migrate_to_ram calls\n", rounds,
	       atomic_load(&calls));
}

static const struct test_case cases[] = {
	TEST_CASE(test_fault_vs_migration_home),
};

TEST_MAIN("test_devfault_race", NULL, NULL)
