/* SPDX-License-Identifier: MIT */
/*
 * Migrations out of transparent huge pages: several threads migrating
 * windows of the same PMD-mapped THP at once, each window smaller than the
 * huge page, so that every migration splits the page another one is
 * splitting too.  Linux 6.18 can move such a window and still report
 * -EEXIST from UFFDIO_MOVE; a library that believes the error loses the
 * window's data (it stays in staging that is then freed).  Every byte is
 * checked after the pages come back.
 */
#include "common.h"

#define WINDOW_PAGES 16
#define THREADS 2
#define ROUNDS 64

static struct uhmm_mm *mm;
static const size_t huge = 2u << 20;

struct worker {
	struct tdev *dev;
	char *thp;
	int first;
	pthread_barrier_t *start;
	long migrated;
};

static void *migrate_windows(void *arg)
{
	struct worker *w = arg;
	const size_t wlen = WINDOW_PAGES * page_size;

	pthread_barrier_wait(w->start);
	for (size_t off = (size_t)w->first * wlen; off < huge; off += THREADS * wlen) {
		long r = tdev_to_dev(w->dev, (uintptr_t)w->thp + off,
				     (uintptr_t)w->thp + off + wlen, NULL);

		CHECK(r >= 0, "migrate window at +%#zx: %ld", off, r);
		w->migrated += r;
	}
	return NULL;
}

static void test_windows_of_one_thp(void)
{
	const size_t npages = huge / page_size;
	struct tdev *d = tdev_create(mm, npages, 1);
	pthread_barrier_t start;
	long migrated = 0, huge_rounds = 0;

	pthread_barrier_init(&start, NULL, THREADS);
	for (int round = 0; round < ROUNDS; round++) {
		char *thp = map_aligned_2m(huge, PROT_READ | PROT_WRITE);
		struct worker w[THREADS];
		pthread_t t[THREADS];
		long bad;

		CHECK_EQ(madvise(thp, huge, MADV_HUGEPAGE), 0);
		fill_pattern(thp, npages, (uint32_t)round + 1);
		if (smaps_anon_huge_kb(thp, NULL, NULL) < 2048) {
			munmap(thp, huge);
			continue;	/* no huge page this time (fragmented memory) */
		}
		huge_rounds++;
		for (int i = 0; i < THREADS; i++) {
			w[i] = (struct worker){ .dev = d, .thp = thp, .first = i, .start = &start };
			CHECK_EQ(pthread_create(&t[i], NULL, migrate_windows, &w[i]), 0);
		}
		for (int i = 0; i < THREADS; i++) {
			CHECK_EQ(pthread_join(t[i], NULL), 0);
			migrated += w[i].migrated;
		}
		/* CPU reads bring every device page back (migrate_to_ram). */
		bad = check_pattern(thp, npages, (uint32_t)round + 1);
		CHECK(bad < 0, "round %d: word %ld (page %ld) wrong: %#x", round, bad,
		      bad * 4 / (long)page_size, ((uint32_t *)thp)[bad]);
		CHECK_EQ(tdev_used(d), 0);
		munmap(thp, huge);
	}
	pthread_barrier_destroy(&start);
	tdev_destroy(d);
	if (!huge_rounds)
		SKIP("no transparent huge page could be had in %d tries", ROUNDS);
	/* Not all of them need to move (a page may be busy), but most do. */
	CHECK(migrated > 0, "nothing migrated");
	printf("test_migrate_thp: %ld rounds on a THP, %ld of %ld pages migrated\n",
	       huge_rounds, migrated, huge_rounds * (long)npages);
}

static void start(void)
{
	FILE *f;
	char mode[128] = "";

	f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
	if (!f || !fgets(mode, sizeof(mode), f) || strstr(mode, "[never]"))
		SKIP("transparent huge pages are off (%s)", f ? "enabled = never" : "no sysfs file");
	fclose(f);
	mm = test_mm();
}

static int finish(void)
{
	uhmm_mm_put(mm);
	return 0;
}

static const struct test_case cases[] = {
	TEST_CASE(test_windows_of_one_thp),
};

TEST_MAIN("test_migrate_thp", start, finish)
