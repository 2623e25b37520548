// SPDX-License-Identifier: MIT
/*
 * The small staging area (src/staging.c): system->device migrations of at
 * most 32 pages freeze their pages into slots of one area of 8192 pages
 * instead of staging of their own, and the staging cache keeps the slots
 * for the way back.  Its edges, each with every byte checked:
 *
 *  full       all slots held by cache entries (256 entries of 32 pages),
 *             then one more migration, which maps staging of its own; back
 *             in a shuffled order, then again (the slots reused);
 *  order      sizes 1..32, back in a shuffled order, part of a range first;
 *  fork       fork while entries hold slots (of ranges munmapped on the
 *             device, or brought back by copy): the child has no area and
 *             reads its own copy of the data; the parent's stays intact;
 *  remap      munmap / mremap of ranges whose staging sits in the area;
 *  mlock      a mlock()ed range, and mlockall(MCL_CURRENT), which faults
 *             in the whole area (its slots are not empty any more);
 *  inject     failures injected in the freeze (UFFDIO_MOVE: -EINVAL, the
 *             refusal that makes a migration freeze into staging of its
 *             own, -EFAULT, -ENOMEM) and in the install (UFFDIO_MOVE and
 *             UFFDIO_COPY), at each call in turn.
 *
 * Where the area is expected (UFFDIO_MOVE and write-protect registration,
 * not UHMM_DISABLE=all), "full" also checks in /proc/self/maps that the
 * 257th migration, and only it, mapped staging of its own (32 pages +
 * 2 MiB); the data checks hold in every mode.  The staging cache's bound is
 * read at load time: the test runs itself again with
 * UHMM_STAGING_CACHE_MIB=64, so that 256 entries of 32 pages fit.
 */
#include "common.h"

#include <uhmm/inject.h>

#define AREA_PAGES 8192
#define MAX_PAGES 32
#define STRIDE 64		/* pages between ranges: none touches another */

static bool area_expected(void)
{
	struct uhmm_sysinfo si;

	uhmm_sysinfo(&si);
	return (si.active & UHMM_FEAT_MOVE) && (si.active & UHMM_FEAT_UFFD_WP);
}

/* The test's own ranges, which maps_of_len() leaves out. */
static uintptr_t ex_lo, ex_hi;

/* Mappings of exactly @len bytes in /proc/self/maps; the first 8 in @at. */
static int maps_of_len(size_t len, uintptr_t *at)
{
	FILE *f = fopen("/proc/self/maps", "re");
	char line[512];
	int n = 0;

	CHECK(f, "/proc/self/maps");
	while (fgets(line, sizeof(line), f)) {
		unsigned long long s, e;

		if (sscanf(line, "%llx-%llx ", &s, &e) == 2 && e - s == len &&
		    !(s >= ex_lo && e <= ex_hi)) {			if (at && n < 8)
				at[n] = (uintptr_t)s;
			n++;
		}
	}
	fclose(f);
	return n;
}

static int own_staging_maps(void)
{
	return maps_of_len((size_t)MAX_PAGES * page_size + (2u << 20), NULL);
}

static uint32_t rng_state = 12345;

static uint32_t rng(void)
{
	rng_state = rng_state * 1103515245u + 12345u;
	return rng_state >> 8;
}

static void shuffle(size_t *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		v[i] = i;
	for (size_t i = n; i > 1; i--) {
		size_t j = rng() % i, t = v[i - 1];

		v[i - 1] = v[j];
		v[j] = t;
	}
}

static char *range_at(char *base, size_t i)
{
	return base + i * STRIDE * page_size;
}

/* Bring [p, +n pages) home: explicitly, or by touching it (CPU faults). */
static void home(struct tdev *d, char *p, size_t n, bool by_fault)
{
	if (by_fault) {
		for (size_t k = 0; k < n; k++)
			(void)*(volatile char *)(p + k * page_size);
	} else {
		long r = tdev_to_sys(d, (uintptr_t)p, (uintptr_t)p + n * page_size, NULL);

		CHECK(r >= 0, "tdev_to_sys: %ld", r);
	}
}

static void check_range(const char *p, size_t n, uint32_t seed, size_t idx)
{
	long bad = check_pattern(p, n, seed);

	CHECK(bad == -1, "range %zu (%zu pages): word %ld wrong", idx, n, bad);
}

/* Case "full": every slot held, then one more; shuffled back; again. */
static void test_full(void)
{
	const size_t nr = AREA_PAGES / MAX_PAGES + 8;	/* 264 */
	const size_t len = nr * STRIDE * page_size;
	bool area = area_expected();
	struct uhmm_mm *mm = test_mm();
	struct tdev *d = tdev_create(mm, nr * MAX_PAGES, 0);
	size_t *order = calloc(nr, sizeof(*order));
	char *base = map_far(len, PROT_READ | PROT_WRITE);

	CHECK(base != MAP_FAILED && order, "map");
	madvise(base, len, MADV_NOHUGEPAGE);
	ex_lo = (uintptr_t)base;
	ex_hi = (uintptr_t)base + len;
	printf("area %s\n", area ? "expected" : "not expected (no UFFDIO_MOVE or uffd-wp)");
	for (int round = 0; round < 3; round++) {
		int before = 0;

		for (size_t i = 0; i < nr; i++)
			fill_pattern(range_at(base, i), MAX_PAGES, 100 * round + i);
		for (size_t i = 0; i < nr; i++) {
			char *p = range_at(base, i);

			CHECK_EQ(tdev_to_dev(d, (uintptr_t)p, (uintptr_t)p + MAX_PAGES * page_size,
					     NULL), MAX_PAGES);
			/* (The first one's put unmapped the emptied entries still mapped.) */
			if (!i)
				before = own_staging_maps();
			if (area && i + 1 == AREA_PAGES / MAX_PAGES)
				CHECK(own_staging_maps() == before,
				      "round %d: %zu migrations of %d pages mapped staging of their own (%d, %d before)",
				      round, i + 1, MAX_PAGES, own_staging_maps(), before);
			if (area && i == AREA_PAGES / MAX_PAGES)
				CHECK(own_staging_maps() == before + 1,
				      "round %d: the migration past a full area: %d own staging mappings, "
				      "%d before", round, own_staging_maps(), before);
		}
		if (area)
			CHECK(own_staging_maps() == before + 1,
			      "round %d: slots given back by the entries the cache dropped were not "
			      "reused (%d own staging mappings, %d before)", round,
			      own_staging_maps(), before);
		shuffle(order, nr);
		for (size_t k = 0; k < nr; k++) {
			size_t i = order[k];

			home(d, range_at(base, i), MAX_PAGES, (k + round) & 1);
			check_range(range_at(base, i), MAX_PAGES, 100 * round + i, i);
		}
		CHECK_EQ(tdev_used(d), 0);
		printf("round %d: %zu ranges of %d pages there and back in a shuffled order: "
		       "data intact\n", round, nr, MAX_PAGES);
	}
	munmap(base, len);
	free(order);
	tdev_destroy(d);
	uhmm_mm_put(mm);
}

/* Case "order": sizes 1..32, out of order, part of a range first. */
static void test_order(void)
{
	const size_t nr = 200, len = nr * STRIDE * page_size;
	struct uhmm_mm *mm = test_mm();
	struct tdev *d = tdev_create(mm, nr * MAX_PAGES, 0);
	size_t *order = calloc(nr, sizeof(*order));
	char *base = map_far(len, PROT_READ | PROT_WRITE);

	CHECK(base != MAP_FAILED && order, "map");
	madvise(base, len, MADV_NOHUGEPAGE);
	for (int round = 0; round < 4; round++) {
		for (size_t i = 0; i < nr; i++) {
			size_t n = (i + round) % MAX_PAGES + 1;
			char *p = range_at(base, i);

			fill_pattern(p, n, 7 * round + i);
			CHECK_EQ(tdev_to_dev(d, (uintptr_t)p, (uintptr_t)p + n * page_size, NULL),
				 (long)n);
		}
		shuffle(order, nr);
		for (size_t k = 0; k < nr; k++) {
			size_t i = order[k], n = (i + round) % MAX_PAGES + 1, h = n / 2;
			char *p = range_at(base, i);

			/* The second half first (a take inside the entry), then the rest. */
			if (h)
				home(d, p + h * page_size, n - h, k & 1);
			home(d, p, n, !(k & 1));
			check_range(p, n, 7 * round + i, i);
		}
		CHECK_EQ(tdev_used(d), 0);
		printf("round %d: %zu ranges of 1..%d pages back out of order: data intact\n",
		       round, nr, MAX_PAGES);
	}
	munmap(base, len);
	free(order);
	tdev_destroy(d);
	uhmm_mm_put(mm);
}

struct fork_arg {
	char *base;
	size_t nr, n;
	uintptr_t area[8];	/* mappings of the area's size in the parent */
	int nareas;
	int round;
};

static int fork_child(void *v)
{
	struct fork_arg *a = v;
	struct uhmm_mm *mm;
	struct tdev *d;
	unsigned char c;

	/* MADV_DONTFORK: the parent's area (one of these) is not here. */
	if (a->nareas) {
		int here = 0;

		for (int k = 0; k < a->nareas && k < 8; k++)
			here += mincore((void *)a->area[k], page_size, &c) == 0;
		if (here == (a->nareas < 8 ? a->nareas : 8)) {
			printf("child: every mapping of the area's size is mapped here\n");
			return 1;
		}
	}
	for (size_t i = 0; i < a->nr; i++) {
		if (i % 4 == 0)
			continue;	/* munmapped on the device */
		if (check_pattern(range_at(a->base, i), a->n, 1000 * a->round + i) != -1) {
			printf("child: range %zu wrong\n", i);
			return 1;
		}
	}
#ifdef __SANITIZE_THREAD__
	/* A fork child of threads cannot start any under TSan: no context of its own. */
	(void)mm;
	(void)d;
	for (size_t i = 1; i < a->nr; i += 4)
		fill_pattern(range_at(a->base, i), a->n, 5000 + i);
	return 0;
#else
	/* A context of its own, its own area; the data its own copy. */
	if (uhmm_mm_get(&mm) || tdev_open(mm, a->nr * a->n, 0, NULL, 0, &d))
		return 1;
	for (size_t i = 1; i < a->nr; i += 4) {
		char *p = range_at(a->base, i);

		fill_pattern(p, a->n, 5000 + i);
		if (tdev_to_dev(d, (uintptr_t)p, (uintptr_t)p + a->n * page_size, NULL) != (long)a->n)
			return 1;
	}
	for (size_t i = 1; i < a->nr; i += 4)
		if (check_pattern(range_at(a->base, i), a->n, 5000 + i) != -1) {
			printf("child: its own range %zu wrong after the way back\n", i);
			return 1;
		}
	if (tdev_close(d))
		return 1;
	uhmm_mm_put(mm);
	return 0;
#endif
}

/* Case "fork": fork while cache entries hold slots of the area. */
static void test_fork(void)
{
	const size_t nr = 64, n = 8, len = nr * STRIDE * page_size;
	bool area = area_expected();
	struct uhmm_mm *mm = test_mm();
	struct tdev *d = tdev_create(mm, nr * n, 0);
	char *base = map_far(len, PROT_READ | PROT_WRITE);
	struct fork_arg a = { .base = base, .nr = nr, .n = n };

	CHECK(base != MAP_FAILED, "map");
	madvise(base, len, MADV_NOHUGEPAGE);
	ex_lo = (uintptr_t)base;
	ex_hi = (uintptr_t)base + len;
	for (int round = 0; round < 3; round++) {
		a.round = round;
		a.nareas = 0;
		for (size_t i = 0; i < nr; i++) {
			char *p = range_at(base, i);

			if (i % 4 == 0 && round)
				CHECK(mmap(p, n * page_size, PROT_READ | PROT_WRITE,
					   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == p, "remap");
			fill_pattern(p, n, 1000 * round + i);
			CHECK_EQ(tdev_to_dev(d, (uintptr_t)p, (uintptr_t)p + n * page_size, NULL),
				 (long)n);
		}
		/* Entries that outlive their addresses, and ones emptied by copy. */
		for (size_t i = 0; i < nr; i += 4)
			CHECK_EQ(munmap(range_at(base, i), n * page_size), 0);
		for (size_t i = 2; i < nr; i += 4)
			home(d, range_at(base, i), 1, true);
		if (area) {
			a.nareas = maps_of_len((size_t)AREA_PAGES * page_size, a.area);
			CHECK(a.nareas >= 1, "no mapping of the area's size");
		}
		CHECK_EQ(run_child(fork_child, &a), 0);
		CHECK_EQ(run_child(fork_child, &a), 0);	/* the child's changes were its own */
		for (size_t i = 0; i < nr; i++) {
			if (i % 4 == 0)
				continue;
			home(d, range_at(base, i), n, i & 1);
			check_range(range_at(base, i), n, 1000 * round + i, i);
		}
		CHECK_EQ(tdev_used(d), 0);
		printf("round %d: two children forked while entries held slots; parent's data "
		       "intact\n", round);
	}
	munmap(base, len);
	tdev_destroy(d);
	uhmm_mm_put(mm);
}

/* Case "remap": munmap and mremap of ranges whose staging is in the area. */
static void test_remap(void)
{
	const size_t nr = 48, n = 16, len = nr * STRIDE * page_size;
	struct uhmm_mm *mm = test_mm();
	struct tdev *d = tdev_create(mm, nr * n * 2, 0);
	char *base = map_far(len, PROT_READ | PROT_WRITE);
	char *dst = map_far(len, PROT_READ | PROT_WRITE);

	CHECK(base != MAP_FAILED && dst != MAP_FAILED, "map");
	madvise(base, len, MADV_NOHUGEPAGE);
	madvise(dst, len, MADV_NOHUGEPAGE);
	for (int round = 0; round < 4; round++) {
		for (size_t i = 0; i < nr; i++) {
			char *p = range_at(base, i);

			fill_pattern(p, n, 300 * round + i);
			CHECK_EQ(tdev_to_dev(d, (uintptr_t)p, (uintptr_t)p + n * page_size, NULL),
				 (long)n);
		}
		for (size_t i = 0; i < nr; i++) {
			char *p = range_at(base, i), *q = range_at(dst, i);

			switch (i % 3) {
			case 0:	/* moved while on the device: the data follows it */
				CHECK(mremap(p, n * page_size, n * page_size,
					     MREMAP_MAYMOVE | MREMAP_FIXED, q) == q,
				      "mremap: %s", strerror(errno));
				home(d, q, n, i & 1);
				check_range(q, n, 300 * round + i, i);
				/* Back where it was, for the next round. */
				CHECK(mremap(q, n * page_size, n * page_size,
					     MREMAP_MAYMOVE | MREMAP_FIXED, p) == p, "mremap back");
				check_range(p, n, 300 * round + i, i);
				break;
			case 1:	/* unmapped on the device; new memory there reads zeros */
				CHECK_EQ(munmap(p, n * page_size), 0);
				CHECK(mmap(p, n * page_size, PROT_READ | PROT_WRITE,
					   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == p, "mmap");
				for (size_t k = 0; k < n * page_size; k++)
					CHECK(p[k] == 0, "range %zu: new memory byte %zu is %d", i, k,
					      p[k]);
				fill_pattern(p, n, 300 * round + i);
				CHECK_EQ(tdev_to_dev(d, (uintptr_t)p,
						     (uintptr_t)p + n * page_size, NULL), (long)n);
				home(d, p, n, !(i & 1));
				check_range(p, n, 300 * round + i, i);
				break;
			default:
				home(d, p, n, i & 1);
				check_range(p, n, 300 * round + i, i);
			}
		}
		CHECK_EQ(tdev_used(d), 0);
		printf("round %d: mremap / munmap of ranges on the device: data intact\n", round);
	}
	munmap(base, len);
	munmap(dst, len);
	tdev_destroy(d);
	uhmm_mm_put(mm);
}

static void there_and_back(struct tdev *d, char *base, size_t nr, size_t n, uint32_t seed);

struct inj {
	const char *name;
	unsigned int point;
	int err;
	bool on_install;	/* injected on the way back, else in the freeze */
	unsigned long times;	/* calls failed in a row */
};

/* Case "inject": each failure at each call of a small migration in turn. */
static void test_inject(void)
{
	static const struct inj inj[] = {
		{ "freeze MOVE -EINVAL", UHMM_INJECT_UFFD_MOVE, EINVAL, false, 1 },
		/* Twice: the refusal that sends the freeze to staging of its own. */
		{ "freeze MOVE -EINVAL x2", UHMM_INJECT_UFFD_MOVE, EINVAL, false, 2 },
		{ "freeze MOVE -EFAULT", UHMM_INJECT_UFFD_MOVE, EFAULT, false, 1 },
		{ "freeze MOVE -ENOMEM", UHMM_INJECT_UFFD_MOVE, ENOMEM, false, 1 },
		{ "freeze MOVE -EBUSY", UHMM_INJECT_UFFD_MOVE, EBUSY, false, 1 },
		{ "install MOVE -ENOMEM", UHMM_INJECT_UFFD_MOVE, ENOMEM, true, 1 },
		{ "install MOVE -EFAULT", UHMM_INJECT_UFFD_MOVE, EFAULT, true, 1 },
		{ "install COPY -ENOMEM", UHMM_INJECT_UFFD_COPY, ENOMEM, true, 1 },
		{ "install COPY -EFAULT", UHMM_INJECT_UFFD_COPY, EFAULT, true, 1 },
		/* Last: slots not empty turn the area off (then staging of its own). */
		{ "freeze MOVE -EEXIST", UHMM_INJECT_UFFD_MOVE, EEXIST, false, 1 },
	};
	static const size_t sizes[] = { 1, 8, 32 };
	const size_t nr = 8, len = nr * STRIDE * page_size;
	struct uhmm_mm *mm = test_mm();
	struct tdev *d = tdev_create(mm, nr * MAX_PAGES, 0);
	char *base = map_far(len, PROT_READ | PROT_WRITE);
	uint32_t seed = 1;
	int areas;

	CHECK(base != MAP_FAILED, "map");
	madvise(base, len, MADV_NOHUGEPAGE);
	ex_lo = (uintptr_t)base;
	ex_hi = (uintptr_t)base + len;
	there_and_back(d, base, nr, 1, 1);	/* the area exists now */
	areas = maps_of_len((size_t)AREA_PAGES * page_size, NULL);
	for (size_t t = 0; t < sizeof(inj) / sizeof(inj[0]); t++) {
		for (size_t z = 0; z < 3; z++) {
			size_t n = sizes[z];
			unsigned long total = 0, calls = 0;

			for (unsigned long skip = 0; skip < 64; skip++) {
				unsigned long hits;

				seed++;
				/* Entries of other ranges hold slots meanwhile. */
				for (size_t i = 1; i < nr; i++) {
					char *p = range_at(base, i);

					fill_pattern(p, n, seed * 16 + i);
					CHECK_EQ(tdev_to_dev(d, (uintptr_t)p,
							     (uintptr_t)p + n * page_size, NULL),
						 (long)n);
				}
				fill_pattern(base, n, seed * 16);
				if (inj[t].on_install)
					CHECK_EQ(tdev_to_dev(d, (uintptr_t)base,
							     (uintptr_t)base + n * page_size, NULL),
						 (long)n);
				CHECK_EQ(uhmm_inject_set(inj[t].point, skip, inj[t].times, inj[t].err), 0);
				if (inj[t].on_install)
					(void)tdev_to_sys(d, (uintptr_t)base,
							  (uintptr_t)base + n * page_size, NULL);
				else
					(void)tdev_to_dev(d, (uintptr_t)base,
							  (uintptr_t)base + n * page_size, NULL);
				hits = uhmm_inject_hits(inj[t].point);
				uhmm_inject_clear();
				total += hits;
				/* Whatever happened, every byte comes home as it was. */
				for (size_t i = 0; i < nr; i++) {
					home(d, range_at(base, i), n, (skip + i) & 1);
					check_range(range_at(base, i), n, seed * 16 + i, i);
				}
				CHECK_EQ(tdev_used(d), 0);
				if (!hits)
					break;
				calls++;
			}
			CHECK(maps_of_len((size_t)AREA_PAGES * page_size, NULL) == areas,
			      "%s: the area is not one mapping any more", inj[t].name);
			printf("%-22s %2zu pages: %lu calls failed in turn, data intact\n",
			       inj[t].name, n, calls);
		}
	}
	munmap(base, len);
	tdev_destroy(d);
	uhmm_mm_put(mm);
}

/* Migrate ranges 0..nr-1 of @n pages there and back; every byte checked. */
static void there_and_back(struct tdev *d, char *base, size_t nr, size_t n, uint32_t seed)
{
	for (size_t i = 0; i < nr; i++) {
		char *p = range_at(base, i);

		fill_pattern(p, n, seed + i);
		CHECK_EQ(tdev_to_dev(d, (uintptr_t)p, (uintptr_t)p + n * page_size, NULL), (long)n);
	}
	for (size_t i = 0; i < nr; i++) {
		home(d, range_at(base, i), n, i & 1);
		check_range(range_at(base, i), n, seed + i, i);
	}
	CHECK_EQ(tdev_used(d), 0);
}

/*
 * Case "mlock": UFFDIO_MOVE wants VM_LOCKED equal at both ends.  A range
 * mlock()ed alone is refused by the (unlocked) area and frozen into
 * staging of its own; after mlockall(MCL_CURRENT), which faults in every
 * page of the area, the area's slots are not empty: small migrations
 * still migrate every page, into staging of their own.
 */
static void test_mlock(void)
{
	const size_t nr = 16, n = 8, len = nr * STRIDE * page_size;
	int areas;
	struct uhmm_mm *mm = test_mm();
	struct tdev *d = tdev_create(mm, nr * n, 0);
	char *base = map_far(len, PROT_READ | PROT_WRITE);

	CHECK(base != MAP_FAILED, "map");
	madvise(base, len, MADV_NOHUGEPAGE);
	ex_lo = (uintptr_t)base;
	ex_hi = (uintptr_t)base + len;
	there_and_back(d, base, nr, n, 10);	/* the area exists now */
	areas = maps_of_len((size_t)AREA_PAGES * page_size, NULL);
	CHECK(!area_expected() || areas >= 1, "no mapping of the area's size");
	if (mlock(base, n * page_size)) {
		printf("mlock: %s: the mlock()ed range is not exercised\n", strerror(errno));
	} else {
		there_and_back(d, base, nr, n, 20);
		munlock(base, n * page_size);
		/* The refused freeze went elsewhere: nothing was mremapped into the area. */
		CHECK(maps_of_len((size_t)AREA_PAGES * page_size, NULL) == areas,
		      "the area is not one mapping any more");
		printf("one range mlock()ed: every page migrated, data intact, the area whole\n");
	}
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
	printf("sanitizer build: no mlockall (it would fault in the runtime's shadow)\n");
#else
	if (mlockall(MCL_CURRENT)) {
		printf("mlockall: %s: not exercised\n", strerror(errno));
	} else {
		there_and_back(d, base, nr, n, 30);
		munlockall();
		there_and_back(d, base, nr, n, 40);
		printf("after mlockall(MCL_CURRENT): every page migrated, data intact\n");
	}
#endif
	munmap(base, len);
	tdev_destroy(d);
	uhmm_mm_put(mm);
}

static const struct test_case cases[] = {
	TEST_CASE(test_full),
	TEST_CASE(test_order),
	TEST_CASE(test_fork),
	TEST_CASE(test_remap),
	TEST_CASE(test_inject),
	TEST_CASE(test_mlock),
};

int main(int argc, char **argv)
{
	if (!getenv("UHMM_STAGING_CACHE_MIB")) {
		/* The bound is read at load time: run again with it set. */
		setenv("UHMM_STAGING_CACHE_MIB", "64", 1);
		execv("/proc/self/exe", argv);
		perror("execv");
		return 1;
	}
	return test_main(argc, argv, "test_small_staging", TEST_CASES(cases), NULL, NULL);
}
