/* SPDX-License-Identifier: MIT */
/*
 * Device-private huge pages (issue 13 item 4), as the kernel's 2025
 * device-private THP series and its hmm-tests (migrate_anon_huge_*):
 *
 *  - compound entries: setup with UHMM_MIGRATE_VMA_SELECT_COMPOUND shows an
 *    aligned 2 MiB block as one src entry (COMPOUND, 511 zeroes, cpages 1);
 *    a driver that declines leaves every byte in place;
 *  - a filled THP migrates to one 2 MiB device page of simdev and back
 *    (migrate_to_sys), every byte checked; the snapshot shows each page as
 *    DEV_PRIVATE_LOCAL|WRITE|PMD; an empty 2 MiB block too (zeroes);
 *  - a CPU read of one word brings the whole 2 MiB back (one fault, 512
 *    pages) and, where the THP mode gives huge pages and UFFDIO_MOVE is
 *    used, as one PMD again (smaps AnonHugePages);
 *  - splits: munmap of one page of a huge device page, mprotect of half,
 *    migrating back only 16 pages: the rest shows no PMD, every byte
 *    comes back, and the 2 MiB device page is free again afterwards (the
 *    next migration gets it: PMD again);
 *  - FAIL_ALLOC fails the huge allocation and the device falls back to 512
 *    small pages: all 512 migrate (no PMD); a device whose huge pages are
 *    used up does the same; a device without huge pages migrates 512
 *    small pages;
 *  - a failure half-way (UFFDIO_MOVE and UFFDIO_COPY failing on the way
 *    back, the staging allocation failing on the way out) loses nothing.
 */
#include "common.h"

#include <uhmm/simdev.h>
#include <uhmm/inject.h>
#include <sched.h>
#include <stdatomic.h>

#define HUGE	(2u << 20)
#define NR	512u
#define LOCAL_W	(UHMM_SIMDEV_PROT_DEV_PRIVATE_LOCAL | UHMM_SIMDEV_PROT_WRITE)
#define LOCAL_R	(UHMM_SIMDEV_PROT_DEV_PRIVATE_LOCAL | UHMM_SIMDEV_PROT_READ)

static struct uhmm_mm *mm;
static bool thp_ok;		/* THP mode always/madvise */
static bool move_ok;		/* uhmm uses UFFDIO_MOVE */

static struct uhmm_simdev *dev_create(size_t huge_pages)
{
	struct uhmm_simdev_config cfg = {
		.capacity_pages = 4 * NR, .threads = 1, .huge_pages = huge_pages,
	};
	struct uhmm_simdev *d = NULL;
	int ret = uhmm_simdev_create(&cfg, &d);

	CHECK(ret == 0 && d, "uhmm_simdev_create: %d (%s)", ret, uhmm_last_error());
	return d;
}

/* A 2 MiB aligned MADV_HUGEPAGE region filled with @seed's pattern; a THP? */
static char *thp_region(uint32_t seed, bool *is_thp)
{
	char *p = map_aligned_2m(HUGE, PROT_READ | PROT_WRITE);

	CHECK_EQ(madvise(p, HUGE, MADV_HUGEPAGE), 0);
	if (seed)
		fill_pattern(p, NR, seed);
	*is_thp = seed && smaps_anon_huge_kb(p, NULL, NULL) >= 2048;
	return p;
}

static void expect_snap(const char *what, struct uhmm_simdev *d, const char *p, size_t first,
			size_t n, uint8_t want)
{
	uint8_t prot[NR];

	CHECK_EQ(uhmm_simdev_snapshot(d, p, NR, prot, NULL), 0);
	for (size_t i = first; i < first + n; i++)
		CHECK(prot[i] == want, "%s: snapshot of page %zu is %#x, expected %#x", what, i,
		      prot[i], want);
}

static void expect_data(const char *what, const char *p, size_t n, uint32_t seed)
{
	long bad = check_pattern(p, n, seed);

	CHECK(bad < 0, "%s: word %ld (page %ld) is %#x", what, bad, bad * 4 / (long)page_size,
	      ((const uint32_t *)p)[bad]);
}

/* Setup with SELECT_COMPOUND shows the block as one entry; declining keeps it. */
static void test_compound_entries(void)
{
	bool thp;
	char *p = thp_region(11, &thp);
	uint64_t *src = calloc(NR, 8), *dst = calloc(NR, 8);
	struct uhmm_migrate_vma m = {
		.mm = mm, .start = (uintptr_t)p, .end = (uintptr_t)p + HUGE, .src = src, .dst = dst,
		.flags = UHMM_MIGRATE_VMA_SELECT_SYSTEM | UHMM_MIGRATE_VMA_SELECT_COMPOUND,
	};
	const uint32_t *data;

	CHECK(src && dst, "calloc");
	CHECK_EQ(uhmm_migrate_vma_setup(&m), 0);
	CHECK_EQ(m.npages, NR);
	CHECK_EQ(m.cpages, 1);
	CHECK(src[0] & UHMM_MIGRATE_PFN_COMPOUND, "src[0] %#llx has no COMPOUND",
	      (unsigned long long)src[0]);
	CHECK(src[0] & UHMM_MIGRATE_PFN_VALID, "src[0] %#llx has no data", (unsigned long long)src[0]);
	for (size_t i = 1; i < NR; i++)
		CHECK(src[i] == 0, "src[%zu] = %#llx, expected 0", i, (unsigned long long)src[i]);
	/* The block's data is 2 MiB at the head's address. */
	data = uhmm_migrate_pfn_addr(&m, 0);
	CHECK(data != NULL, "no data address for the compound entry");
	expect_data("compound source", (const char *)data, NR, 11);
	CHECK(uhmm_migrate_alloc_sys(&m, 0) == NULL, "alloc_sys of a system entry");
	uhmm_migrate_vma_pages(&m);	/* no dst: nothing migrates */
	CHECK(!(src[0] & UHMM_MIGRATE_PFN_MIGRATE), "declined block still MIGRATE");
	uhmm_migrate_vma_finalize(&m);
	expect_data("declined compound migration", p, NR, 11);
	/* Without the flag: 512 entries. */
	m = (struct uhmm_migrate_vma){
		.mm = mm, .start = (uintptr_t)p, .end = (uintptr_t)p + HUGE, .src = src, .dst = dst,
		.flags = UHMM_MIGRATE_VMA_SELECT_SYSTEM,
	};
	CHECK_EQ(uhmm_migrate_vma_setup(&m), 0);
	CHECK_EQ(m.cpages, NR);
	CHECK(!(src[0] & UHMM_MIGRATE_PFN_COMPOUND), "COMPOUND without SELECT_COMPOUND");
	uhmm_migrate_vma_pages(&m);
	uhmm_migrate_vma_finalize(&m);
	expect_data("declined migration", p, NR, 11);
	free(src);
	free(dst);
	munmap(p, HUGE);
	printf("%s: compound entries: src[0] COMPOUND, 511 zeroes, cpages 1 (THP source: %s)\n",
	       test_name, thp ? "yes" : "no");
}

/* A THP to one 2 MiB device page and back, by migration and by a CPU fault. */
static void test_whole(void)
{
	struct uhmm_simdev *d = dev_create(2);
	struct uhmm_simdev_stats st;
	struct uhmm_simdev_counters c0, c1;
	bool thp;
	char *p = thp_region(21, &thp);
	long kb;

	CHECK_EQ(uhmm_simdev_migrate_to_dev(d, p, NR, &st), 0);
	CHECK_EQ(st.cpages, NR);
	CHECK_EQ(uhmm_simdev_used_pages(d), NR);
	expect_snap("whole THP on the device", d, p, 0, NR, LOCAL_W | UHMM_SIMDEV_PROT_PMD);
	CHECK_EQ(uhmm_simdev_migrate_to_sys(d, p, NR, &st), 0);
	CHECK_EQ(st.cpages, NR);
	CHECK_EQ(uhmm_simdev_used_pages(d), 0);
	expect_data("migrated to the device and back", p, NR, 21);

	/* Again, and a CPU read of one word brings back all 2 MiB. */
	CHECK_EQ(uhmm_simdev_migrate_to_dev(d, p, NR, &st), 0);
	expect_snap("whole THP on the device again", d, p, 0, NR, LOCAL_W | UHMM_SIMDEV_PROT_PMD);
	CHECK_EQ(uhmm_simdev_get_counters(d, &c0), 0);
	CHECK_EQ(((volatile uint32_t *)p)[NR * page_size / 8], 21 * 2654435761u +
		 (uint32_t)(NR * page_size / 8));
	CHECK_EQ(uhmm_simdev_get_counters(d, &c1), 0);
	CHECK_EQ(c1.cpu_faults - c0.cpu_faults, 1);
	CHECK_EQ(c1.cpu_fault_pages - c0.cpu_fault_pages, NR);
	CHECK_EQ(uhmm_simdev_used_pages(d), 0);
	kb = smaps_anon_huge_kb(p, NULL, NULL);
	expect_data("faulted back", p, NR, 21);
	/*
	 * The frozen THP moved out whole (one PMD) into staging, which the
	 * way back reuses: with UFFDIO_MOVE it comes back as one PMD.
	 */
	if (thp && move_ok)
		CHECK(kb >= 2048, "faulted back as %ld kB of huge pages, expected one PMD", kb);
	printf("%s: whole THP to a 2 MiB device page and back; CPU fault brought back 512 pages, "
	       "AnonHugePages %ld kB (source THP %s, UFFDIO_MOVE %s: PMD %s)\n", test_name, kb,
	       thp ? "yes" : "no", move_ok ? "yes" : "no",
	       thp && move_ok ? "expected" : "not expected");

	/* An empty 2 MiB block: the device gets zeroes, the CPU reads zeroes. */
	{
		char *e = thp_region(0, &thp);
		uint8_t *buf = malloc(HUGE);

		CHECK(buf, "malloc");
		CHECK_EQ(uhmm_simdev_migrate_to_dev(d, e, NR, &st), 0);
		CHECK_EQ(st.cpages, NR);
		expect_snap("empty block on the device", d, e, 0, NR,
			    LOCAL_W | UHMM_SIMDEV_PROT_PMD);
		CHECK_EQ(uhmm_simdev_read(d, e, NR, buf, NULL), 0);
		for (size_t i = 0; i < HUGE; i++)
			CHECK(buf[i] == 0, "device read %#x at %zu of an empty block", buf[i], i);
		for (size_t i = 0; i < HUGE; i += page_size)
			CHECK(e[i] == 0, "CPU read %#x at %zu of an empty block", e[i], i);
		CHECK_EQ(uhmm_simdev_used_pages(d), 0);
		free(buf);
		munmap(e, HUGE);
	}
	munmap(p, HUGE);
	uhmm_simdev_destroy(d);
}

/* Only part of a huge device page is needed: the rest is split, nothing lost. */
static void test_splits(void)
{
	struct uhmm_simdev *d = dev_create(1);
	struct uhmm_simdev_stats st;
	bool thp;
	char *p;

	/* munmap of the last page. */
	p = thp_region(31, &thp);
	CHECK_EQ(uhmm_simdev_migrate_to_dev(d, p, NR, &st), 0);
	expect_snap("before the munmap", d, p, 0, NR, LOCAL_W | UHMM_SIMDEV_PROT_PMD);
	CHECK_EQ(munmap(p + HUGE - page_size, page_size), 0);
	{
		uint8_t prot[NR - 1];

		CHECK_EQ(uhmm_simdev_snapshot(d, p, NR - 1, prot, NULL), 0);
		for (size_t i = 0; i < NR - 1; i++)
			CHECK(prot[i] == LOCAL_W, "after munmap of one page: page %zu is %#x, "
			      "expected %#x (split: no PMD)", i, prot[i], LOCAL_W);
	}
	expect_data("after munmap of the last page", p, NR - 1, 31);
	CHECK_EQ(uhmm_simdev_used_pages(d), 0);	/* the 2 MiB page came back whole */
	munmap(p, HUGE - page_size);

	/* mprotect of the first half: two mappings, no PMD. */
	p = thp_region(32, &thp);
	CHECK_EQ(uhmm_simdev_migrate_to_dev(d, p, NR, &st), 0);
	expect_snap("before the mprotect", d, p, 0, NR, LOCAL_W | UHMM_SIMDEV_PROT_PMD);
	CHECK_EQ(mprotect(p, HUGE / 2, PROT_READ), 0);
	expect_snap("mprotect read-only half", d, p, 0, NR / 2, LOCAL_R);
	expect_snap("mprotect: the writable half", d, p, NR / 2, NR / 2, LOCAL_W);
	expect_data("after mprotect of half", p, NR, 32);
	CHECK_EQ(uhmm_simdev_used_pages(d), 0);
	munmap(p, HUGE);

	/* Migrating back only 16 pages. */
	p = thp_region(33, &thp);
	CHECK_EQ(uhmm_simdev_migrate_to_dev(d, p, NR, &st), 0);
	CHECK_EQ(uhmm_simdev_migrate_to_sys(d, p + 64 * page_size, 16, &st), 0);
	CHECK_EQ(st.cpages, 16);
	expect_snap("16 pages back: the rest", d, p, 0, 64, LOCAL_W);
	expect_snap("16 pages back: the rest", d, p, 80, NR - 80, LOCAL_W);
	CHECK_EQ(uhmm_simdev_used_pages(d), NR);	/* freed whole when the last goes */
	expect_data("after migrating back 16 pages", p, NR, 33);
	CHECK_EQ(uhmm_simdev_used_pages(d), 0);
	/* The 2 MiB device page is free again: the next migration gets it. */
	CHECK_EQ(uhmm_simdev_migrate_to_dev(d, p, NR, &st), 0);
	expect_snap("the 2 MiB page again", d, p, 0, NR, LOCAL_W | UHMM_SIMDEV_PROT_PMD);
	CHECK_EQ(uhmm_simdev_migrate_to_sys(d, p, NR, &st), 0);
	expect_data("the 2 MiB page again, back", p, NR, 33);
	munmap(p, HUGE);
	uhmm_simdev_destroy(d);
	printf("%s: splits (munmap of a page, mprotect of half, 16 pages back): no PMD after, "
	       "every byte back, the 2 MiB device page reused\n", test_name);
}

/* No 2 MiB device page to be had: 512 small ones, all of the block migrates. */
static void test_fallback(void)
{
	struct uhmm_simdev *d = dev_create(1), *small = dev_create(0);
	struct uhmm_simdev_stats st;
	bool thp;
	char *p = thp_region(41, &thp), *q = thp_region(42, &thp);

	CHECK_EQ(uhmm_simdev_set_flags(d, UHMM_SIMDEV_FAIL_ALLOC), 0);
	CHECK_EQ(uhmm_simdev_migrate_to_dev(d, p, NR, &st), 0);
	CHECK_EQ(st.cpages, NR);
	CHECK_EQ(uhmm_simdev_used_pages(d), NR);
	expect_snap("FAIL_ALLOC", d, p, 0, NR, LOCAL_W);
	/* Fault back a single page (hmm-tests migrate_anon_huge_err). */
	CHECK_EQ(((volatile uint32_t *)p)[2048], 41 * 2654435761u + 2048);
	expect_data("FAIL_ALLOC: back", p, NR, 41);
	CHECK_EQ(uhmm_simdev_used_pages(d), 0);

	/* The only 2 MiB page in use: the second block gets small pages. */
	CHECK_EQ(uhmm_simdev_migrate_to_dev(d, p, NR, &st), 0);
	CHECK_EQ(uhmm_simdev_migrate_to_dev(d, q, NR, &st), 0);
	CHECK_EQ(st.cpages, NR);
	expect_snap("huge pages used up: first", d, p, 0, NR, LOCAL_W | UHMM_SIMDEV_PROT_PMD);
	expect_snap("huge pages used up: second", d, q, 0, NR, LOCAL_W);
	expect_data("used up: first back", p, NR, 41);
	expect_data("used up: second back", q, NR, 42);

	/* A device with small pages only: 512 small migrations. */
	CHECK_EQ(uhmm_simdev_migrate_to_dev(small, p, NR, &st), 0);
	CHECK_EQ(st.cpages, NR);
	expect_snap("small pages only", small, p, 0, NR, LOCAL_W);
	expect_data("small pages only: back", p, NR, 41);
	munmap(p, HUGE);
	munmap(q, HUGE);
	uhmm_simdev_destroy(d);
	uhmm_simdev_destroy(small);
	printf("%s: FAIL_ALLOC and used-up huge pages fall back to 512 small pages; all migrate\n",
	       test_name);
}

/* Failures half-way lose nothing. */
static void test_failures(void)
{
	static const struct { unsigned int point; int err; const char *name; } f[] = {
		{ UHMM_INJECT_UFFD_MOVE, EBUSY, "UFFDIO_MOVE" },
		{ UHMM_INJECT_UFFD_COPY, ENOMEM, "UFFDIO_COPY" },
		{ UHMM_INJECT_MALLOC, ENOMEM, "malloc" },
	};
	struct uhmm_simdev *d = dev_create(1);
	struct uhmm_simdev_stats st;
	long injected = 0;

	for (size_t k = 0; k < sizeof(f) / sizeof(f[0]); k++) {
		for (unsigned long skip = 0; skip < 4; skip++) {
			bool thp;
			uint32_t seed = 50 + (uint32_t)(k * 8 + skip);
			char *p = thp_region(seed, &thp);
			int r;

			CHECK_EQ(uhmm_inject_set(f[k].point, skip, 1, f[k].err), 0);
			r = uhmm_simdev_migrate_to_dev(d, p, NR, &st);
			CHECK(r == 0 || r == -ENOMEM || r == -ENOENT || r == -EINVAL,
			      "%s skip %lu: migrate to dev: %d", f[k].name, skip, r);
			r = uhmm_simdev_migrate_to_sys(d, p, NR, &st);
			CHECK(r == 0 || r == -ENOENT || r == -ENOMEM,
			      "%s skip %lu: migrate to sys: %d", f[k].name, skip, r);
			injected += uhmm_inject_hits(f[k].point);
			CHECK_EQ(uhmm_inject_set(f[k].point, 0, 0, f[k].err), 0);
			expect_data(f[k].name, p, NR, seed);	/* faults back what stayed */
			CHECK_EQ(uhmm_simdev_used_pages(d), 0);
			munmap(p, HUGE);
		}
	}
	CHECK(injected > 0, "no failure was injected");
	uhmm_simdev_destroy(d);
	printf("%s: %ld injected failures (MOVE, COPY, malloc) lost no byte\n", test_name, injected);
}

/*
 * Races: one thread migrates a 2 MiB block to the device whole again and
 * again, one reads and writes words of it from the CPU (each fault brings
 * a whole 2 MiB device page back, or a split one's window), one migrates
 * 16 pages of it back (a split).  Every word is checked against what the
 * writer wrote.
 */
struct race {
	struct uhmm_simdev *d;
	uint32_t *p;
	pthread_barrier_t *go;
	atomic_int stop;
	int kind;
	long ops;
};

static void *race_thread(void *arg)
{
	struct race *r = arg;
	unsigned int seed = (unsigned int)r->kind * 7919u + 1;
	const size_t words = HUGE / 4;

	pthread_barrier_wait(r->go);
	while (!atomic_load(&r->stop)) {
		if (r->kind == 0) {
			int ret = uhmm_simdev_migrate_to_dev(r->d, r->p, NR, NULL);

			CHECK(ret == 0 || ret == -ENOENT || ret == -ENOMEM,
			      "race: migrate to dev: %d (%s)", ret, uhmm_last_error());
		} else if (r->kind == 1) {
			size_t w = (size_t)rand_r(&seed) % words;

			/* The word's value is its index plus a round count. */
			CHECK(__atomic_load_n(&r->p[w], __ATOMIC_RELAXED) % words == w,
			      "race: word %zu is %#x", w, r->p[w]);
			__atomic_fetch_add(&r->p[w], (uint32_t)words, __ATOMIC_RELAXED);
		} else {
			size_t pg = ((size_t)rand_r(&seed) % (NR / 16)) * 16;
			int ret = uhmm_simdev_migrate_to_sys(r->d, (char *)r->p + pg * page_size,
							     16, NULL);

			CHECK(ret == 0 || ret == -ENOENT, "race: migrate 16 back: %d", ret);
		}
		__atomic_fetch_add(&r->ops, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

static void test_races(void)
{
	const char *env = getenv("UHMM_TEST_ROUNDS");
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
	int rounds = env ? atoi(env) : 4;	/* within CTest's 120 s there */
#else
	int rounds = env ? atoi(env) : 20;
#endif
	struct uhmm_simdev *d = dev_create(2);
	long ops[3] = { 0 };

	for (int round = 0; round < rounds; round++) {
		bool thp;
		uint32_t *p = (uint32_t *)(void *)thp_region(0, &thp);
		pthread_barrier_t go;
		struct race r[3];
		pthread_t t[3];

		for (size_t w = 0; w < HUGE / 4; w++)
			p[w] = (uint32_t)w;
		pthread_barrier_init(&go, NULL, 4);
		for (int k = 0; k < 3; k++) {
			r[k] = (struct race){ .d = d, .p = p, .go = &go, .kind = k };
			CHECK_EQ(pthread_create(&t[k], NULL, race_thread, &r[k]), 0);
		}
		pthread_barrier_wait(&go);
		/* Until each thread did some work (no timing: counts). */
		for (;;) {
			bool enough = true;

			for (int k = 0; k < 3; k++)
				enough &= __atomic_load_n(&r[k].ops, __ATOMIC_RELAXED) >= 20;
			if (enough)
				break;
			sched_yield();
		}
		for (int k = 0; k < 3; k++)
			atomic_store(&r[k].stop, 1);
		for (int k = 0; k < 3; k++) {
			CHECK_EQ(pthread_join(t[k], NULL), 0);
			ops[k] += r[k].ops;
		}
		for (size_t w = 0; w < HUGE / 4; w++)
			CHECK(p[w] % (HUGE / 4) == w, "round %d: word %zu is %#x", round, w, p[w]);
		CHECK_EQ(uhmm_simdev_used_pages(d), 0);
		pthread_barrier_destroy(&go);
		munmap(p, HUGE);
	}
	uhmm_simdev_destroy(d);
	printf("%s: races: %d rounds, %ld migrations to the device, %ld CPU accesses, "
	       "%ld partial migrations back; every word right\n", test_name, rounds, ops[0],
	       ops[1], ops[2]);
}

static void start(void)
{
	struct uhmm_sysinfo si;

	if (page_size != 4096)
		SKIP("compound device pages need 4 KiB pages (page size %zu)", page_size);
	uhmm_sysinfo(&si);
	thp_ok = thp_enabled();
	/* UHMM_INSTALL=copy installs with UFFDIO_COPY: 512 small pages. */
	move_ok = (si.active & UHMM_FEAT_MOVE) != 0 &&
		  !(getenv("UHMM_INSTALL") && !strcmp(getenv("UHMM_INSTALL"), "copy"));
	mm = test_mm();
}

static int finish(void)
{
	uhmm_mm_put(mm);
	printf("test_devthp: THP %s\n", variant.thp);
	return 0;
}

static const struct test_case cases[] = {
	TEST_CASE(test_compound_entries),
	TEST_CASE(test_whole),
	TEST_CASE(test_splits),
	{ "small_pages", test_fallback },	/* not "fallback": CTest suffixes that */
	TEST_CASE(test_failures),
	TEST_CASE(test_races),
};

TEST_MAIN("test_devthp", start, finish)
