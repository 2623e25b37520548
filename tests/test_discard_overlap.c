// SPDX-License-Identifier: MIT
/*
 * Two discards of overlapping ranges from two threads (round 4 hunt,
 * tests/hunt/FINDINGS.md): one thread keeps calling madvise(MADV_FREE)
 * over a whole buffer while the owner writes a run of it, migrates the
 * run to the device and discards it with madvise(MADV_DONTNEED).  The
 * kernel's MADV_DONTNEED zaps device-private entries (the data is gone:
 * zeroes), and a MADV_FREE can only ever turn data into zeroes, never
 * bring discarded data back.  So after MADV_DONTNEED returns, every page
 * of the run reads zero.
 *
 * Before the fix the service thread judged the DONTNEED's event by every
 * wrapper call in flight whose range covered it: the MADV_FREE over the
 * whole buffer said "device pages stay", so the DONTNEED's device pages
 * stayed and the CPU read the discarded data back (every round, both
 * modes, within the first iterations).
 *
 * Usage: test_discard_overlap [CASE...]; UHMM_TEST_ROUNDS=N rounds (a fresh
 * process each), UHMM_TEST_KEEP_GOING=1 to run every round.
 */
#include "common.h"
#include "page_version.h"
#include "watchdog.h"

#include <pthread.h>
#include <sys/mman.h>

#include <uhmm/simdev.h>

#define NAME "test_discard_overlap"
#define NPG 64
#define MAXRUN 8

/*
 * Before the fix every round failed at its first or second iteration; the
 * rounds are short because each MADV_FREE's event slows the owner's
 * migrations (tests/hunt/FINDINGS.md item 11).
 */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define DEFAULT_ROUNDS 2
#define ITERS 200
#else
#define DEFAULT_ROUNDS 4
#define ITERS 600
#endif

struct shared {
	char *buf;
	atomic_int stop;
};

static void *freer(void *arg)
{
	struct shared *sh = arg;

	while (!atomic_load(&sh->stop)) {
		CHECK_EQ(madvise(sh->buf, NPG * page_size, MADV_FREE), 0);
		/*
		 * Each call's event makes the owner's migration wait (a
		 * migration first waits out events pending): without a yield,
		 * on one loaded CPU a round took minutes.
		 */
		sched_yield();
	}
	return NULL;
}

static int one_round(void *arg)
{
	struct uhmm_simdev_config cfg = { .capacity_pages = 16 * NPG, .threads = 1 };
	struct uhmm_simdev *dev;
	struct shared sh = { .stop = 0 };
	unsigned int seed = (unsigned int)getpid() * 7919u;
	unsigned long moved = 0;
	pthread_t th;

	(void)arg;
	CHECK_EQ(uhmm_simdev_create(&cfg, &dev), 0);
	sh.buf = map_anon(NPG * page_size, PROT_READ | PROT_WRITE);
	CHECK_EQ(pthread_create(&th, NULL, freer, &sh), 0);
	for (uint32_t it = 0; it < ITERS; it++) {
		size_t i = next(&seed) % NPG;
		size_t n = 1 + next(&seed) % (NPG - i < MAXRUN ? NPG - i : MAXRUN);
		char *a = sh.buf + i * page_size;
		struct uhmm_simdev_stats st = { 0 };

		for (size_t k = 0; k < n; k++)
			put_page(a + k * page_size, i + k, it + 1);
		/* Some pages may have been freed meanwhile: what moved, moved. */
		if (uhmm_simdev_migrate_to_dev(dev, a, n, &st) == 0)
			moved += st.cpages;
		CHECK_EQ(madvise(a, n * page_size, MADV_DONTNEED), 0);
		for (size_t k = 0; k < n; k++) {
			int s = page_is(a + k * page_size, i + k, it + 1);

			CHECK(s == 0, "iteration %u: page %zu of [%zu, +%zu) holds %s after "
			      "MADV_DONTNEED returned, not zeroes", it, i + k, i, n,
			      s == 1 ? "the discarded data" : "other data");
		}
	}
	atomic_store(&sh.stop, 1);
	CHECK_EQ(pthread_join(th, NULL), 0);
	CHECK(moved > 0, "no page ever reached the device");
	uhmm_simdev_destroy(dev);
	return 0;
}

static void case_free_over_dontneed(void)
{
	const char *what = "MADV_DONTNEED under another thread's MADV_FREE of the whole";
	int failed = run_rounds(one_round, NULL, DEFAULT_ROUNDS, what);

	CHECK(failed == 0, "%s: %d rounds failed", what, failed);
	printf("%s: %s: every discarded page zero: ok\n", NAME, what);
}

static const struct test_case cases[] = {
	{ "free_over_dontneed", case_free_over_dontneed },
};

TEST_MAIN(NAME, NULL, NULL)
