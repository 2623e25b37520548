// SPDX-License-Identifier: MIT
/*
 * The staging cache's bound: a system->device migration larger than the
 * bound (UHMM_STAGING_CACHE_MIB) keeps at most the bound's worth of its old
 * system pages for the way back, and no less than that minus one 2 MiB
 * block (before, it kept nothing at all: a host whose bound is below the
 * migrated size recycled nothing).  Checked on the process's anonymous
 * resident memory (smaps, sanitizer regions left out), whatever the
 * machine: after the migration to the device the pages kept are what the
 * range's pages did not give back; after the migration home (explicit,
 * then by CPU faults) nothing is left behind.
 * Every byte is checked each round.  Without UFFDIO_MOVE and write-protect
 * registration (UHMM_DISABLE=all) there is no cache: nothing is kept.
 *
 * The bound is read when the library loads: the test runs itself again
 * with UHMM_STAGING_CACHE_MIB set.
 */
#include "common.h"

#define BOUND_MIB 8
#define RANGE_MIB 32

/*
 * Resident memory of the process's mappings, in kB, leaving out mappings
 * larger than 16 GiB: a sanitizer's shadow and allocator regions, whose
 * residency follows what the program touches, not what it keeps.
 */
static long rss_anon_kb(void)
{
	FILE *f = fopen("/proc/self/smaps", "re");
	char line[512];
	unsigned long long s, e;
	bool counted = false;
	long kb = 0, v;

	CHECK(f, "/proc/self/smaps");
	while (fgets(line, sizeof(line), f)) {
		/* A mapping's line starts with its address; a field with its name. */
		if (((line[0] >= '0' && line[0] <= '9') || (line[0] >= 'a' && line[0] <= 'f')) &&
		    sscanf(line, "%llx-%llx ", &s, &e) == 2) {
			counted = e - s <= (16ull << 30);
			continue;
		}
		if (counted && sscanf(line, "Anonymous: %ld kB", &v) == 1)
			kb += v;
	}
	fclose(f);
	return kb;
}

/* Case "bound": the bound both ways, and every byte, each round. */
static void test_bound(void)
{
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
	/* Data checks only (below): still above the bound, fewer rounds. */
	const size_t len = (size_t)(RANGE_MIB / 2) << 20, n = len / 4096;
	const int rounds = 2;
#else
	const size_t len = (size_t)RANGE_MIB << 20, n = len / 4096;
	const int rounds = 4;
#endif
	struct uhmm_sysinfo si;
	struct uhmm_mm *mm;
	struct tdev *d;
	bool cache;
	long slack_kb, r0, r1, r2, kept_kb;
	bool mem_checks = true;
	char *p;

	if (page_size != 4096)
		SKIP("the sizes here assume 4 KiB pages");
	uhmm_sysinfo(&si);
	cache = (si.active & UHMM_FEAT_MOVE) && (si.active & UHMM_FEAT_UFFD_WP) &&
		!(getenv("UHMM_INSTALL") && !strcmp(getenv("UHMM_INSTALL"), "copy"));
	/* The src/dst arrays, the test's own allocations; THP "always" may back staging. */
	slack_kb = 1024 + (!strcmp(variant.thp, "always") ? 4096 : 0);
	/*
	 * A sanitizer runtime's own memory grows with what the program
	 * touches (shadow, per-thread state: 12 MB in one TSan round without
	 * any cache): there only the data is checked.
	 */
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
	mem_checks = false;
	printf("sanitizer build: resident memory is the runtime's too; data checks only\n");
#endif
	printf("bound %d MiB, range %d MiB, cache %s\n", BOUND_MIB, RANGE_MIB,
	       cache ? "expected" : "not expected (no UFFDIO_MOVE or uffd-wp)");
	mm = test_mm();
	d = tdev_create(mm, n, 0);
	p = map_far(len, PROT_READ | PROT_WRITE);
	CHECK(p, "map");
	madvise(p, len, MADV_NOHUGEPAGE);

	/* Untimed round: the device arena gets its pages. */
	fill_pattern(p, n, 1);
	CHECK_EQ(tdev_to_dev(d, (uintptr_t)p, (uintptr_t)p + len, NULL), (long)n);
	CHECK_EQ(tdev_to_sys(d, (uintptr_t)p, (uintptr_t)p + len, NULL), (long)n);
	CHECK_EQ(check_pattern(p, n, 1), -1);

	for (int round = 0; round < rounds; round++) {
		bool by_fault = round & 1;

		fill_pattern(p, n, 10 + round);
		r0 = rss_anon_kb();
		CHECK_EQ(tdev_to_dev(d, (uintptr_t)p, (uintptr_t)p + len, NULL), (long)n);
		r1 = rss_anon_kb();
		/* The range gave its pages away; what did not leave is kept staging. */
		kept_kb = r1 - (r0 - (long)(len >> 10));
		printf("round %d: anonymous %ld -> %ld kB: %ld kB kept\n", round, r0, r1, kept_kb);
		if (!mem_checks) {
			/* data only */
		} else if (cache) {
			CHECK(kept_kb <= BOUND_MIB * 1024 + slack_kb,
			      "kept %ld kB, more than the bound %d MiB", kept_kb, BOUND_MIB);
			CHECK(kept_kb >= (BOUND_MIB - 2) * 1024 - slack_kb,
			      "kept %ld kB of a %d MiB migration: the bound is %d MiB",
			      kept_kb, RANGE_MIB, BOUND_MIB);
		} else {
			CHECK(kept_kb <= slack_kb, "kept %ld kB without a cache", kept_kb);
		}
		if (by_fault)
			CHECK_EQ(check_pattern(p, n, 10 + round), -1);	/* CPU faults */
		else
			CHECK_EQ(tdev_to_sys(d, (uintptr_t)p, (uintptr_t)p + len, NULL), (long)n);
		CHECK_EQ(check_pattern(p, n, 10 + round), -1);
		CHECK_EQ(tdev_used(d), 0);
		r2 = rss_anon_kb();
		printf("round %d (%s): home, anonymous %ld kB\n", round,
		       by_fault ? "CPU faults" : "explicit", r2);
		CHECK(!mem_checks || r2 <= r0 + slack_kb, "%ld kB left behind after the way back", r2 - r0);
	}
	munmap(p, len);
	tdev_destroy(d);
	uhmm_mm_put(mm);
}

/*
 * More separate small migrations than the cache keeps entries for (256):
 * the oldest go as new ones come, a larger migration over a range
 * supersedes the entries inside it, and a way back borrows the entry that
 * covers it.  Every byte is checked, and once all is home the cache holds
 * nothing (resident memory as before, outside the sanitizers).
 */
static void test_many_entries(void)
{
	enum { RANGES = 600, WIN = 8, BIG = 4 };
	const size_t len = (size_t)RANGES * WIN * 4096, n = len / 4096;
	bool mem_checks = true;
	long r0, r2, slack_kb;
	struct uhmm_mm *mm;
	struct tdev *d;
	char *p;

	if (page_size != 4096)
		SKIP("the sizes here assume 4 KiB pages");
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
	mem_checks = false;
	printf("sanitizer build: resident memory is the runtime's too; data checks only\n");
#endif
	slack_kb = 1024 + (!strcmp(variant.thp, "always") ? 4096 : 0);
	mm = test_mm();
	d = tdev_create(mm, (size_t)RANGES * BIG, 0);
	p = map_far(len, PROT_READ | PROT_WRITE);
	CHECK(p, "map");
	madvise(p, len, MADV_NOHUGEPAGE);
	fill_pattern(p, n, 3);
	r0 = rss_anon_kb();
	/* Range i: the first 1 + i % 3 pages of window i, one migration each. */
	for (size_t i = 0; i < RANGES; i++) {
		uintptr_t s = (uintptr_t)p + i * WIN * 4096;

		CHECK_EQ(tdev_to_dev(d, s, s + (1 + i % 3) * 4096, NULL), (long)(1 + i % 3));
	}
	/* The newest third again, larger: the rest of their first BIG pages. */
	for (size_t i = RANGES - RANGES / 3; i < RANGES; i++) {
		uintptr_t s = (uintptr_t)p + i * WIN * 4096;

		CHECK_EQ(tdev_to_dev(d, s, s + BIG * 4096, NULL), (long)(BIG - 1 - i % 3));
	}
	CHECK_EQ(check_pattern(p, n, 3), -1);	/* even windows' pages by CPU faults */
	for (size_t i = 1; i < RANGES; i += 2) {
		uintptr_t s = (uintptr_t)p + i * WIN * 4096;

		CHECK_EQ(tdev_to_sys(d, s, s + BIG * 4096, NULL), 0);	/* home already */
	}
	CHECK_EQ(tdev_used(d), 0);
	/* Once more, home explicitly this time. */
	fill_pattern(p, n, 4);
	for (size_t i = 0; i < RANGES; i++) {
		uintptr_t s = (uintptr_t)p + i * WIN * 4096;

		CHECK_EQ(tdev_to_dev(d, s, s + (1 + i % 3) * 4096, NULL), (long)(1 + i % 3));
	}
	for (size_t i = 0; i < RANGES; i++) {
		uintptr_t s = (uintptr_t)p + i * WIN * 4096;

		CHECK_EQ(tdev_to_sys(d, s, s + BIG * 4096, NULL), (long)(1 + i % 3));
	}
	CHECK_EQ(check_pattern(p, n, 4), -1);
	CHECK_EQ(tdev_used(d), 0);
	r2 = rss_anon_kb();
	printf("%d ranges: anonymous %ld kB before, %ld kB with all home\n", RANGES, r0, r2);
	CHECK(!mem_checks || r2 <= r0 + slack_kb, "%ld kB left behind after the way back", r2 - r0);
	munmap(p, len);
	tdev_destroy(d);
	uhmm_mm_put(mm);
}

static const struct test_case cases[] = {
	TEST_CASE(test_bound),
	TEST_CASE(test_many_entries),
};

int main(int argc, char **argv)
{
	if (!getenv("UHMM_STAGING_CACHE_MIB")) {
		/* The bound is read at load time: run again with it set. */
		setenv("UHMM_STAGING_CACHE_MIB", "8", 1);	/* BOUND_MIB */
		execv("/proc/self/exe", argv);
		perror("execv");
		return 1;
	}
	return test_main(argc, argv, "test_staging_cache", TEST_CASES(cases), NULL, NULL);
}
