// SPDX-License-Identifier: MIT
/*
 * uhmm_devmem_remove() after the addresses of device-resident pages were
 * unmapped behind the wrappers: by a raw munmap system call, or by free()
 * of a malloc'd block above the mmap threshold (libc unmaps it with its
 * own system call).  In the kernel the unmap frees the device-private
 * pages before munmap() returns, so a later memunmap_pages() finds none of
 * them; here the unmap reaches uhmm as a userfaultfd UNMAP event that the
 * worker applies afterwards.  The removal must see it applied: it returns
 * 0 with no device page left allocated, never the error of a migration
 * home of a page whose mapping is gone (-EINVAL, which the removal also
 * uses for "pool not added", or -EBUSY).  Hunt round 6, item 20
 * (tests/hunt/FINDINGS.md).
 *
 * Each round (a forked, watched child) maps, fills and migrates to tdev
 * ITERS times, unmaps behind the wrappers, removes the pool (one thread:
 * the unmap returned before the removal began) and adds it again.
 */
#include "common.h"

#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/syscall.h>

#include "watchdog.h"

#define NPAGES	16
#define ITERS	200
#define ROUNDS	4

static int one_round(void *arg)
{
	bool use_free = *(bool *)arg;
	struct uhmm_mm *m = test_mm();
	struct tdev *d = tdev_create(m, 4 * NPAGES, 0);
	int bad = 0;

	/* A fixed threshold: glibc raises it to the size of a freed mmapped block. */
	mallopt(M_MMAP_THRESHOLD, 64 << 10);
	for (int it = 0; it < ITERS; it++) {
		char *blk = NULL, *p;
		long moved;
		int ret;

		if (use_free) {
			/* above the mmap threshold: its own mapping, page-aligned interior */
			blk = malloc(4 * NPAGES * page_size);
			CHECK(blk, "malloc");
			p = (char *)(((uintptr_t)blk + page_size - 1) & ~(uintptr_t)(page_size - 1));
		} else {
			p = map_anon(NPAGES * page_size, PROT_READ | PROT_WRITE);
		}
		fill_pattern(p, NPAGES, (uint32_t)it);
		moved = tdev_to_dev(d, (uintptr_t)p, (uintptr_t)p + NPAGES * page_size, NULL);
		CHECK(moved == NPAGES, "iteration %d: migrated %ld of %d pages", it, moved, NPAGES);
		if (use_free)
			free(blk);
		else
			CHECK_EQ(syscall(SYS_munmap, p, NPAGES * page_size), 0);
		ret = uhmm_devmem_remove(&d->pgmap);
		if (ret) {
			if (bad++ < 5)
				fprintf(stderr, "%s: iteration %d: remove after the unmap: %d (%s), "
					"%zu device pages allocated\n", test_name, it, ret,
					uhmm_last_error(), tdev_used(d));
			CHECK(ret == -EBUSY || ret == -EINVAL, "remove: %d", ret);
			/* the pool stayed added: it must come off once the event is applied */
			for (int t = 0; (ret = uhmm_devmem_remove(&d->pgmap)) && t < 10000; t++)
				sched_yield();
			CHECK_EQ(ret, 0);
		}
		CHECK(tdev_used(d) == 0, "iteration %d: remove returned 0 with %zu device pages "
		      "allocated", it, tdev_used(d));
		CHECK_EQ(uhmm_devmem_add(m, &d->pgmap), 0);
	}
	if (bad)
		fprintf(stderr, "%s: %d of %d removals failed after an unmap that had returned\n",
			test_name, bad, ITERS);
	tdev_destroy(d);
	return bad ? 1 : 0;
}

static void run(bool use_free, const char *what)
{
	int failed = run_rounds(one_round, &use_free, ROUNDS, what);

	CHECK(failed == 0, "%s: %d rounds failed", what, failed);
	printf("%s: %s: the pool comes off at once, no device page left: ok\n", test_name, what);
}

static void test_raw_munmap(void)
{
	run(false, "remove after a raw munmap");
}

static void test_free(void)
{
	run(true, "remove after free() of a migrated block");
}

/*
 * concurrent: another thread keeps mapping, migrating and raw-munmapping
 * while this one removes and re-adds the pool (the driver's lock keeps its
 * migrations to the device off a removed pool, as a driver must).  The
 * worker applies each UNMAP event with no lock a removal waits for: it
 * took the page's residency off the pool, then dropped its reference.  A
 * removal that returns 0 must have every page of the pool free (the
 * kernel's memunmap_pages waits for the last reference): a page still
 * allocated then is a page_free still to come on descriptors the removal
 * freed.  A removal may fail (-EBUSY, or the driver's -EINVAL for a page
 * whose mapping went away during it) and is made again.
 */
static pthread_mutex_t c_lock = PTHREAD_MUTEX_INITIALIZER;
static struct tdev *c_dev;
static atomic_int c_stop;
static atomic_long c_unmaps;

static void *c_unmapper(void *arg)
{
	(void)arg;
	while (!atomic_load(&c_stop)) {
		char *p = map_anon(NPAGES * page_size, PROT_READ | PROT_WRITE);
		long moved;

		fill_pattern(p, NPAGES, 7);
		pthread_mutex_lock(&c_lock);
		moved = tdev_to_dev(c_dev, (uintptr_t)p, (uintptr_t)p + NPAGES * page_size, NULL);
		pthread_mutex_unlock(&c_lock);
		CHECK(moved >= 0, "migrate: %ld", moved);
		CHECK_EQ(syscall(SYS_munmap, p, NPAGES * page_size), 0);
		atomic_fetch_add(&c_unmaps, 1);
	}
	return NULL;
}

static int concurrent_round(void *arg)
{
	struct uhmm_mm *m = test_mm();
	long removed = 0, failed = 0;
	pthread_t t;

	(void)arg;
	c_dev = tdev_create(m, 4 * NPAGES, 0);
	CHECK_EQ(pthread_create(&t, NULL, c_unmapper, NULL), 0);
	for (int it = 0; it < 4 * ITERS; it++) {
		int ret;
		size_t used;

		pthread_mutex_lock(&c_lock);
		ret = uhmm_devmem_remove(&c_dev->pgmap);
		used = ret ? 0 : tdev_used(c_dev);
		if (ret == 0)
			CHECK_EQ(uhmm_devmem_add(m, &c_dev->pgmap), 0);
		pthread_mutex_unlock(&c_lock);
		CHECK(ret == 0 || ret == -EBUSY || ret == -EINVAL, "remove: %d", ret);
		CHECK(used == 0, "iteration %d: remove returned 0 with %zu device pages still "
		      "allocated", it, used);
		removed += ret == 0;
		failed += ret != 0;
		if (it % 16 == 0)
			sched_yield();
	}
	atomic_store(&c_stop, 1);
	pthread_join(t, NULL);
	printf("%s: %ld removals, %ld refused, %ld raw munmaps\n", test_name, removed, failed,
	       atomic_load(&c_unmaps));
	tdev_destroy(c_dev);
	return 0;
}

static void test_concurrent(void)
{
	int failed = run_rounds(concurrent_round, NULL, ROUNDS, "remove racing raw munmaps");

	CHECK(failed == 0, "remove racing raw munmaps: %d rounds failed", failed);
	printf("%s: remove racing raw munmaps: every removal that returned 0 left no page "
	       "allocated: ok\n", test_name);
}

static const struct test_case cases[] = {
	TEST_CASE(test_raw_munmap),
	TEST_CASE(test_free),
	TEST_CASE(test_concurrent),
};

TEST_MAIN("test_remove_unmapped", NULL, NULL)
