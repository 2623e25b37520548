// SPDX-License-Identifier: MIT
/*
 * RLIMIT_AS reached in the middle of a migration.  Staging and the
 * fallback freeze (mremap MREMAP_DONTUNMAP) take address space, so under
 * a tight RLIMIT_AS a migration's setup can fail before or part way
 * through freezing its pages.  The kernel's migrate_vma_setup() never
 * fails that way, but uhmm's may: then the call must return an error
 * (-ENOMEM) or succeed, every byte must stay as it was, and nothing may
 * hang.  Issue 12 hunt (tests/hunt/FINDINGS.md item 2): with the fallback
 * forced the setup's unwind "restored" pages that had never been frozen,
 * from a staging address that held nothing, and retried for ever.
 *
 * Every round, in a fresh process: half the buffer on simdev, RLIMIT_AS
 * set to the process's current size plus 0, 2 or 8 MiB, then the whole
 * buffer to the device and back; every byte is checked under the limit.
 */
#include <sys/resource.h>

#include <uhmm/simdev.h>

#include "common.h"
#include "watchdog.h"

/*
 * ThreadSanitizer's runtime maps memory of its own as the program runs
 * (its clock allocator): under a tight RLIMIT_AS it dies of that, before
 * uhmm's behaviour can be judged.  The test runs in the normal and the
 * ASan builds.
 */
#if defined(__SANITIZE_THREAD__)
#define RLIMIT_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define RLIMIT_TSAN 1
#endif
#endif

#define NAME "test_rlimit"
#define NPAGES 2048
#define SEED 0x0a5117edu
#define ROUNDS 24

static int round_no;

static bool ret_ok(int r)
{
	return r == 0 || r == -ENOMEM || r == -ENOENT;
}

static int one_round(void *arg)
{
	static const size_t extra_mib[] = { 0, 2, 8 };
	struct uhmm_simdev_config cfg = { .capacity_pages = 2 * NPAGES, .threads = 1 };
	struct uhmm_simdev *dev;
	unsigned long vm_pages;
	struct rlimit rl;
	char *buf;
	long bad;
	int r1, r2;
	FILE *f;

	(void)arg;
	CHECK_EQ(uhmm_simdev_create(&cfg, &dev), 0);
	buf = map_anon(NPAGES * page_size, PROT_READ | PROT_WRITE);
	fill_pattern(buf, NPAGES, SEED);
	if (round_no & 1)
		CHECK_EQ(uhmm_simdev_migrate_to_dev(dev, buf, NPAGES / 2, NULL), 0);
	f = fopen("/proc/self/statm", "r");
	CHECK(f != NULL, "statm: %s", strerror(errno));
	CHECK(fscanf(f, "%lu", &vm_pages) == 1, "statm: no size");
	fclose(f);
	CHECK_EQ(getrlimit(RLIMIT_AS, &rl), 0);
	rl.rlim_cur = vm_pages * page_size + (extra_mib[(round_no / 2) % 3] << 20);
	CHECK_EQ(setrlimit(RLIMIT_AS, &rl), 0);

	r1 = uhmm_simdev_migrate_to_dev(dev, buf, NPAGES, NULL);
	CHECK(ret_ok(r1), "migrate to the device: %d", r1);
	bad = check_pattern(buf, NPAGES, SEED);
	CHECK(bad < 0, "word %ld wrong after migrating to the device (%d)", bad, r1);
	r1 = uhmm_simdev_migrate_to_dev(dev, buf, NPAGES, NULL);
	CHECK(ret_ok(r1), "migrate to the device again: %d", r1);
	r2 = uhmm_simdev_migrate_to_sys(dev, buf, NPAGES, NULL);
	CHECK(ret_ok(r2), "migrate back: %d", r2);
	bad = check_pattern(buf, NPAGES, SEED);
	CHECK(bad < 0, "word %ld wrong after migrating back (%d %d)", bad, r1, r2);
	uhmm_simdev_destroy(dev);
	bad = check_pattern(buf, NPAGES, SEED);
	CHECK(bad < 0, "word %ld wrong after the destroy", bad);
	return 0;
}

static void test_rlimit_as_migrate(void)
{
	const char *env = getenv("UHMM_TEST_ROUNDS");
	bool keep = getenv("UHMM_TEST_KEEP_GOING") != NULL;
	int rounds = env && atoi(env) > 0 ? atoi(env) : ROUNDS;
	int bad = 0;

#ifdef RLIMIT_TSAN
	SKIP("ThreadSanitizer's runtime needs address space of its own under RLIMIT_AS");
#endif
	/* One watched round at a time: round_no picks the variant. */
	for (round_no = 0; round_no < rounds && (keep || !bad); round_no++)
		bad += run_watched(one_round, NULL,
				   getenv("UHMM_TEST_WATCHDOG") ? atoi(getenv("UHMM_TEST_WATCHDOG"))
								 : WATCHDOG_SECONDS,
				   "migrate under a tight RLIMIT_AS") != ROUND_OK;
	printf("%s: %d rounds, %d failed or hung\n", NAME, round_no, bad);
	CHECK(bad == 0, "a migration under RLIMIT_AS hung or lost data");
	printf("%s: every byte kept, no hang\n", NAME);
}

static const struct test_case cases[] = {
	TEST_CASE(test_rlimit_as_migrate),
};

TEST_MAIN(NAME, NULL, NULL)
