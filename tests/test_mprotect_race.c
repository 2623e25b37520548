// SPDX-License-Identifier: MIT
/*
 * mprotect racing a migration of the same range.  The kernel serialises
 * the two (mprotect takes mmap_lock for writing, migrate_vma_setup runs
 * under it for reading) and copies pages through kernel mappings, so the
 * range's protection never matters to the driver's copy: a migration that
 * began while the range was readable completes, and a driver never faults
 * on the source of its copy.  Round 3 hunt (tests/hunt/FINDINGS.md): when
 * the freeze fell back to mremap(MREMAP_DONTUNMAP) (always with
 * UHMM_DISABLE=all; with UFFDIO_MOVE when the move is refused because the
 * protections differ), the moved piece took the range's protection of
 * that moment into staging, and simdev's copy from staging (or
 * uhmm_make_exclusive's) died of SIGSEGV on a PROT_NONE piece.
 *
 * Every round, in a fresh process: one thread flips the buffer to
 * PROT_NONE or PROT_READ and back, another migrates it to simdev and back
 * and takes it exclusive; the round must neither die nor lose a byte.
 * range_fault_vs_mprotect: a write range fault racing mprotect (below).
 */
#include "common.h"
#include "watchdog.h"

#include <pthread.h>
#include <sys/mman.h>

#include <uhmm/simdev.h>

#define NAME "test_mprotect_race"
#define NPAGES 64
#define SEED 0x3a0dd00du
#define ROUNDS 6
#define FLIPS 1000

struct race {
	struct uhmm_simdev *dev;
	char *buf;
	atomic_int stop;
};

static void *protector(void *arg)
{
	struct race *r = arg;

	for (int k = 0; k < FLIPS; k++) {
		int prot = (k & 1) ? PROT_READ : PROT_NONE;
		size_t off = (size_t)(k % 3) * (NPAGES / 4);

		/* the whole buffer, or a part of it (the mapping splits) */
		CHECK_EQ(mprotect(r->buf + off * page_size, (NPAGES - off) * page_size, prot), 0);
		sched_yield();
		CHECK_EQ(mprotect(r->buf, NPAGES * page_size, PROT_READ | PROT_WRITE), 0);
	}
	atomic_store(&r->stop, 1);
	return NULL;
}

static int one_round(void *arg)
{
	struct uhmm_simdev_config cfg = { .capacity_pages = 4 * NPAGES, .threads = 1 };
	struct race r = { .stop = 0 };
	pthread_t th;
	long bad;
	int k = 0;

	(void)arg;
	CHECK_EQ(uhmm_simdev_create(&cfg, &r.dev), 0);
	r.buf = map_anon(NPAGES * page_size, PROT_READ | PROT_WRITE);
	fill_pattern(r.buf, NPAGES, SEED);
	CHECK_EQ(pthread_create(&th, NULL, protector, &r), 0);
	while (!atomic_load(&r.stop)) {
		/* Refusals (-EINVAL: no access at the look, -ENOENT, -EPERM) are fine. */
		switch (k++ % 3) {
		case 0:
			uhmm_simdev_migrate_to_dev(r.dev, r.buf, NPAGES, NULL);
			break;
		case 1:
			uhmm_simdev_migrate_to_sys(r.dev, r.buf, NPAGES, NULL);
			break;
		case 2:
			uhmm_simdev_exclusive(r.dev, r.buf, NPAGES / 2, NULL);
			break;
		}
	}
	CHECK_EQ(pthread_join(th, NULL), 0);
	bad = check_pattern(r.buf, NPAGES, SEED);
	CHECK(bad < 0, "word %ld wrong after the race", bad);
	uhmm_simdev_destroy(r.dev);
	bad = check_pattern(r.buf, NPAGES, SEED);
	CHECK(bad < 0, "word %ld wrong after the destroy", bad);
	return 0;
}

static void test_migrate_vs_mprotect(void)
{
	const char *env = getenv("UHMM_TEST_ROUNDS");
	bool keep = getenv("UHMM_TEST_KEEP_GOING") != NULL;
	int rounds = env && atoi(env) > 0 ? atoi(env) : ROUNDS;
	int bad = 0, n;

	for (n = 0; n < rounds && (keep || !bad); n++)
		bad += run_watched(one_round, NULL,
				   getenv("UHMM_TEST_WATCHDOG") ? atoi(getenv("UHMM_TEST_WATCHDOG"))
								 : WATCHDOG_SECONDS,
				   "migrations racing mprotect") != ROUND_OK;
	printf("%s: %d rounds, %d failed or hung\n", NAME, n, bad);
	CHECK(bad == 0, "a migration racing mprotect died or lost data");
	printf("%s: every byte kept, no fault in a copy\n", NAME);
}

/*
 * A range fault for writing racing mprotect(PROT_READ) of the range (round
 * 5 hunt: a simdev write launch on a read-mostly range failed with
 * -EFAULT).  The kernel's hmm_range_fault runs under mmap_lock for reading,
 * so it sees the mapping either writable (success; the mprotect then
 * invalidates) or read-only (-EPERM); the invalidation in between makes
 * it -EBUSY.  uhmm's range fault looked at the mapping, then faulted with
 * MADV_POPULATE_WRITE, which failed with EFAULT once the mprotect had
 * come in between: -EFAULT, "no mapping", which a driver takes as fatal.
 * Every result must be 0, -EBUSY (the notifier's sequence moved) or -EPERM.
 */
struct rf_race {
	char *buf;
	atomic_int stop;
};

static void *rf_protector(void *arg)
{
	struct rf_race *r = arg;

	for (int k = 0; k < FLIPS; k++) {
		/* not present again, so the next write fault must populate */
		CHECK_EQ(madvise(r->buf, NPAGES * page_size, MADV_DONTNEED), 0);
		CHECK_EQ(mprotect(r->buf, NPAGES * page_size, PROT_READ), 0);
		sched_yield();
		CHECK_EQ(mprotect(r->buf, NPAGES * page_size, PROT_READ | PROT_WRITE), 0);
		sched_yield();
	}
	atomic_store(&r->stop, 1);
	return NULL;
}

static bool rf_invalidate(struct uhmm_interval_notifier *mni, const struct uhmm_notifier_range *nr,
			  unsigned long cur_seq)
{
	(void)nr;
	uhmm_interval_set_seq(mni, cur_seq);
	return true;
}

static const struct uhmm_interval_notifier_ops rf_ops = { .invalidate = rf_invalidate };

static int rf_round(void *arg)
{
	struct uhmm_interval_notifier mni = { 0 };
	uint64_t pfns[NPAGES];
	struct rf_race r = { .stop = 0 };
	struct uhmm_mm *mm = test_mm();
	long ok = 0, eperm = 0, ebusy = 0;
	pthread_t th;

	(void)arg;
	r.buf = map_anon(NPAGES * page_size, PROT_READ | PROT_WRITE);
	CHECK_EQ(uhmm_interval_notifier_insert(&mni, mm, (uintptr_t)r.buf, NPAGES * page_size,
					       &rf_ops), 0);
	CHECK_EQ(pthread_create(&th, NULL, rf_protector, &r), 0);
	while (!atomic_load(&r.stop)) {
		struct uhmm_range rg = {
			.notifier = &mni, .start = (uintptr_t)r.buf,
			.end = (uintptr_t)r.buf + NPAGES * page_size, .hmm_pfns = pfns,
			.default_flags = UHMM_PFN_REQ_FAULT | UHMM_PFN_REQ_WRITE,
		};
		int ret;

		rg.notifier_seq = uhmm_interval_read_begin(&mni);
		ret = uhmm_range_fault(&rg);
		CHECK(ret == 0 || ret == -EBUSY || ret == -EPERM,
		      "write range fault racing mprotect: %d (%s)", ret, uhmm_last_error());
		ok += ret == 0;
		ebusy += ret == -EBUSY;
		eperm += ret == -EPERM;
	}
	CHECK_EQ(pthread_join(th, NULL), 0);
	uhmm_interval_notifier_remove(&mni);
	munmap(r.buf, NPAGES * page_size);
	uhmm_mm_put(mm);
	printf("%s: range faults: %ld succeeded, %ld -EBUSY, %ld -EPERM\n", NAME, ok, ebusy, eperm);
	return 0;
}

static void test_range_fault_vs_mprotect(void)
{
	const char *what = "write range faults racing mprotect(PROT_READ)";
	/* Before the fix every round failed: three are enough. */
	int failed = run_rounds(rf_round, NULL, 3, what);

	CHECK(failed == 0, "%s: %d rounds failed", what, failed);
	printf("%s: %s: only 0, -EBUSY or -EPERM\n", NAME, what);
}

static const struct test_case cases[] = {
	TEST_CASE(test_migrate_vs_mprotect),
	TEST_CASE(test_range_fault_vs_mprotect),
};

TEST_MAIN(NAME, NULL, NULL)
