// SPDX-License-Identifier: MIT
/*
 * pthread_cancel() of a thread that is migrating (deferred cancellation,
 * the default).  The kernel's migrate_vma and hmm_range_fault are not
 * cancellation points; uhmm runs them on the caller's thread, where a
 * pread of /proc/self/pagemap or an open of /proc/self/maps is one.  A
 * cancellation acted on there unwound the thread with uhmm's vma_lock
 * (and simdev's lock, pages frozen) held: the next call that needed the
 * lock, uhmm_simdev_destroy() here, hung for good (issue 12 hunt, 8 of 8
 * rounds).  Every round: a thread migrates a buffer to simdev and back in
 * a loop, main cancels it after a varying number of iterations, joins it,
 * checks every byte, destroys the device (must not hang) and checks again.
 */
#include <uhmm/simdev.h>

#include "common.h"
#include "watchdog.h"

#define NAME "test_cancel"
#define NPAGES 128
#define SEED 0x5eedcafeu
#define ROUNDS 64

static struct uhmm_simdev *dev;
static char *buf;
static atomic_long iters;

static void *migrator(void *arg)
{
	(void)arg;
	for (;;) {
		uhmm_simdev_migrate_to_dev(dev, buf, NPAGES, NULL);
		uhmm_simdev_migrate_to_sys(dev, buf, NPAGES, NULL);
		atomic_fetch_add(&iters, 1);
		pthread_testcancel();
	}
	return NULL;
}

static int round_no;

static int one_round(void *arg)
{
	struct uhmm_simdev_config cfg = { .capacity_pages = 4 * NPAGES, .threads = 1 };
	pthread_t th;
	long bad;

	(void)arg;
	CHECK_EQ(uhmm_simdev_create(&cfg, &dev), 0);
	buf = map_anon(NPAGES * page_size, PROT_READ | PROT_WRITE);
	fill_pattern(buf, NPAGES, SEED);
	CHECK_EQ(pthread_create(&th, NULL, migrator, NULL), 0);
	/*
	 * Cancel while the thread is somewhere in its loop, mostly in uhmm:
	 * once it has migrated, after main read a varying part of the buffer
	 * (CPU faults racing its migrations; the bytes must be right).
	 */
	while (atomic_load(&iters) < 1)
		sched_yield();
	bad = check_pattern(buf, 1 + (size_t)round_no % 8, SEED);
	CHECK(bad < 0, "word %ld wrong while migrating", bad);
	CHECK_EQ(pthread_cancel(th), 0);
	CHECK_EQ(pthread_join(th, NULL), 0);
	bad = check_pattern(buf, NPAGES, SEED);
	CHECK(bad < 0, "word %ld wrong after the cancel", bad);
	uhmm_simdev_destroy(dev);	/* hung with a lock left held */
	bad = check_pattern(buf, NPAGES, SEED);
	CHECK(bad < 0, "word %ld wrong after the destroy", bad);
	return 0;
}

static void test_cancel_migrating(void)
{
	int bad = 0;

	for (round_no = 0; round_no < ROUNDS && !bad; round_no++)
		bad = run_rounds(one_round, NULL, 1, "cancel a migrating thread");
	CHECK(bad == 0, "a cancelled migration hung or lost data");
	printf("%s: %d rounds: every byte kept, no hang\n", NAME, ROUNDS);
}

static const struct test_case cases[] = {
	TEST_CASE(test_cancel_migrating),
};

TEST_MAIN(NAME, NULL, NULL)
