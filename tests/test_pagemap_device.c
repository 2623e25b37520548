// SPDX-License-Identifier: MIT
/*
 * /proc/self/pagemap over device-resident pages, as the kernel shows them.
 *
 * The kernel's CPU page table holds a swap-type entry for a device-private
 * page: pagemap reports PM_SWAP, not present (fs/proc/task_mmu.c), and the
 * kernel's own HMM selftest checks exactly that (hmm-tests.c,
 * migrate_anon_huge_fault).  Where uhmm can (UFFD_FEATURE_WP_UNPOPULATED
 * and uffd write-protect, not disabled), it leaves a userfaultfd
 * write-protect marker on such pages, which pagemap shows the same way;
 * elsewhere (the fallback, UHMM_DISABLE=wp_unpopulated or =all) the entry
 * is empty: neither present nor swapped.  Either way a CPU access brings
 * the page home intact, uhmm_page_state() never calls a device page
 * swapped nor a swapped page a device page, and no change of the mapping
 * (fork, mremap, munmap, MADV_DONTNEED, MADV_FREE, mprotect) loses data.
 */
#include <sys/syscall.h>

#include "common.h"

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif
#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif
#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif
#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4
#endif

static struct uhmm_mm *mm;
static struct tdev *dev;
static bool markers;		/* device pages expected as swap entries */
static int pm_fd;

static uint64_t pm_entry(const void *p)
{
	uint64_t e = 0;

	CHECK(pread(pm_fd, &e, 8, (off_t)((uintptr_t)p / page_size * 8)) == 8,
	      "pread pagemap: %s", strerror(errno));
	return e;
}

/* PAGEMAP_SCAN categories of one page; -1 when the kernel has no PAGEMAP_SCAN. */
static long long scan_categories(const void *p)
{
	struct page_region r = { 0 };
	struct pm_scan_arg arg = {
		.size = sizeof(arg),
		.start = (uintptr_t)p, .end = (uintptr_t)p + page_size,
		.vec = (uintptr_t)&r, .vec_len = 1,
		.category_anyof_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_WRITTEN,
		.return_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_WRITTEN,
	};
	long n = ioctl(pm_fd, PAGEMAP_SCAN, &arg);

	if (n < 0)
		return -1;
	return n == 1 ? (long long)r.categories : 0;
}

/* Every page of [p, +n) is on the device and shows so. */
static void expect_device(const char *what, const void *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const char *a = (const char *)p + i * page_size;
		uint64_t e = pm_entry(a);
		uint32_t st = page_state_of(mm, a);
		long long c = scan_categories(a);

		CHECK(!(e & PM_PRESENT), "%s: page %zu present on the device: %#llx", what, i,
		      (unsigned long long)e);
		if (markers) {
			CHECK((e & PM_SWAP) && (e & PM_UFFD_WP),
			      "%s: page %zu: pagemap %#llx, expected PM_SWAP|PM_UFFD_WP", what, i,
			      (unsigned long long)e);
			CHECK(c < 0 || (c & PAGE_IS_SWAPPED),
			      "%s: page %zu: PAGEMAP_SCAN %#llx not SWAPPED", what, i, c);
		} else {
			CHECK(!(e & PM_SWAP), "%s: page %zu: pagemap %#llx swapped in the fallback",
			      what, i, (unsigned long long)e);
		}
		CHECK((st & UHMM_PS_DEVICE_PRIVATE) && !(st & UHMM_PS_PRESENT) &&
		      !(st & UHMM_PS_SWAPPED),
		      "%s: page %zu: page state %#x, expected DEVICE_PRIVATE, not SWAPPED", what, i,
		      st);
	}
}

/* Every page of [p, +n) is a system page, present or empty, never "swapped". */
static void expect_home(const char *what, const void *p, size_t n, bool present)
{
	for (size_t i = 0; i < n; i++) {
		const char *a = (const char *)p + i * page_size;
		uint64_t e = pm_entry(a);
		uint32_t st = page_state_of(mm, a);

		CHECK(!(e & PM_SWAP), "%s: page %zu: pagemap %#llx still swapped", what, i,
		      (unsigned long long)e);
		if (present)
			CHECK(e & PM_PRESENT, "%s: page %zu: pagemap %#llx not present", what, i,
			      (unsigned long long)e);
		CHECK(!(st & (UHMM_PS_DEVICE_PRIVATE | UHMM_PS_SWAPPED)),
		      "%s: page %zu: page state %#x", what, i, st);
	}
}

static char *fresh(size_t n, uint32_t seed)
{
	char *p = map_anon(n * page_size, PROT_READ | PROT_WRITE);

	madvise(p, n * page_size, MADV_NOHUGEPAGE);
	fill_pattern(p, n, seed);
	return p;
}

static void to_dev(const char *what, char *p, size_t n)
{
	long moved = tdev_to_dev(dev, (uintptr_t)p, (uintptr_t)p + n * page_size, NULL);

	CHECK(moved == (long)n, "%s: migrated %ld of %zu pages", what, moved, n);
}

/* Migrate, read pagemap, touch one page (the window is one page), then all. */
static void t_basic(void)
{
	const size_t n = 64;
	char *p = fresh(n, 1);
	long bad;

	to_dev("basic", p, n);
	expect_device("basic", p, n);
	/* A read of page 5 brings page 5 home (fault_around 1), data intact. */
	CHECK_EQ(((volatile uint32_t *)(p + 5 * page_size))[0], 1 * 2654435761u + 5 * page_size / 4);
	expect_home("basic, read page", p + 5 * page_size, 1, true);
	expect_device("basic, the others", p, 5);
	expect_device("basic, the others", p + 6 * page_size, n - 6);
	/* A write to page 9. */
	((volatile uint32_t *)(p + 9 * page_size))[1] += 0;
	expect_home("basic, written page", p + 9 * page_size, 1, true);
	bad = check_pattern(p, n, 1);
	CHECK(bad < 0, "basic: word %ld wrong after the fault-back", bad);
	expect_home("basic, all read", p, n, true);
	munmap(p, n * page_size);
}

/* Many pages back at once through UFFDIO_MOVE (runs of 8 and more). */
static void t_migrate_back(void)
{
	const size_t n = 256;
	char *p = fresh(n, 2);
	long back, bad;

	to_dev("migrate back", p, n);
	expect_device("migrate back", p, n);
	back = tdev_to_sys(dev, (uintptr_t)p, (uintptr_t)p + n * page_size, NULL);
	CHECK(back == (long)n, "migrate back: %ld of %zu pages came back", back, n);
	expect_home("migrate back", p, n, true);
	bad = check_pattern(p, n, 2);
	CHECK(bad < 0, "migrate back: word %ld wrong", bad);
	/* And again, the staging cache's way. */
	to_dev("migrate back, again", p, n);
	expect_device("migrate back, again", p, n);
	back = tdev_to_sys(dev, (uintptr_t)p, (uintptr_t)p + n * page_size, NULL);
	CHECK(back == (long)n, "migrate back again: %ld of %zu pages", back, n);
	bad = check_pattern(p, n, 2);
	CHECK(bad < 0, "migrate back again: word %ld wrong", bad);
	munmap(p, n * page_size);
}

static void t_mprotect(void)
{
	const size_t n = 32;
	char *p = fresh(n, 3);
	long bad;

	to_dev("mprotect", p, n);
	CHECK_EQ(mprotect(p, n * page_size, PROT_READ), 0);
	expect_device("mprotect read-only", p, n);
	CHECK_EQ(mprotect(p + 8 * page_size, 8 * page_size, PROT_NONE), 0);
	expect_device("mprotect none", p + 8 * page_size, 8);
	CHECK_EQ(mprotect(p, n * page_size, PROT_READ | PROT_WRITE), 0);
	expect_device("mprotect back", p, n);
	bad = check_pattern(p, n, 3);
	CHECK(bad < 0, "mprotect: word %ld wrong", bad);
	munmap(p, n * page_size);
}

static void t_mremap(bool dontunmap)
{
	const size_t n = 32;
	const char *what = dontunmap ? "mremap DONTUNMAP" : "mremap";
	char *p = fresh(n, 4);
	char *q = map_anon(n * page_size, PROT_NONE);
	char *r;
	long bad;

	to_dev(what, p, n);
	r = mremap(p, n * page_size, n * page_size,
		   MREMAP_MAYMOVE | MREMAP_FIXED | (dontunmap ? MREMAP_DONTUNMAP : 0), q);
	CHECK(r == q, "%s: %s", what, strerror(errno));
	expect_device(what, q, n);
	if (dontunmap) {
		/* The old range stays mapped, empty: it reads zeroes. */
		for (size_t i = 0; i < n; i++) {
			uint64_t e = pm_entry(p + i * page_size);

			CHECK(!(e & (PM_PRESENT | PM_SWAP)), "%s: old page %zu: %#llx", what, i,
			      (unsigned long long)e);
			CHECK_EQ(((volatile char *)p)[i * page_size], 0);
		}
		munmap(p, n * page_size);
	}
	bad = check_pattern(q, n, 4);
	CHECK(bad < 0, "%s: word %ld wrong", what, bad);
	munmap(q, n * page_size);
}

static void t_dontneed_free_munmap(void)
{
	const size_t n = 32;
	char *p = fresh(n, 5);

	to_dev("discard", p, n);
	/* MADV_DONTNEED discards the first quarter: empty, reads zero. */
	CHECK_EQ(madvise(p, 8 * page_size, MADV_DONTNEED), 0);
	for (size_t i = 0; i < 8; i++) {
		uint64_t e = pm_entry(p + i * page_size);

		CHECK(!(e & (PM_PRESENT | PM_SWAP)), "DONTNEED: page %zu: %#llx", i,
		      (unsigned long long)e);
		CHECK(!(page_state_of(mm, p + i * page_size) & UHMM_PS_DEVICE_PRIVATE),
		      "DONTNEED: page %zu still on the device", i);
	}
	expect_device("DONTNEED, the rest", p + 8 * page_size, n - 8);
	/* MADV_FREE keeps device pages, as the kernel's keeps device entries. */
	CHECK_EQ(madvise(p + 8 * page_size, 8 * page_size, MADV_FREE), 0);
	expect_device("MADV_FREE", p + 8 * page_size, 8);
	/* munmap of the third quarter. */
	CHECK_EQ(munmap(p + 16 * page_size, 8 * page_size), 0);
	expect_device("munmap, the rest", p + 24 * page_size, 8);
	for (size_t i = 0; i < 8; i++)
		CHECK_EQ(((volatile char *)p)[i * page_size], 0);
	{
		const uint32_t *w = (const uint32_t *)(p + 8 * page_size);

		for (size_t k = 0; k < 8 * page_size / 4; k++)
			CHECK(w[k] == 5 * 2654435761u + (uint32_t)(8 * page_size / 4 + k),
			      "MADV_FREE: word %zu lost", k);
		w = (const uint32_t *)(p + 24 * page_size);
		for (size_t k = 0; k < 8 * page_size / 4; k++)
			CHECK(w[k] == 5 * 2654435761u + (uint32_t)(24 * page_size / 4 + k),
			      "munmap neighbour: word %zu lost", k);
	}
	munmap(p, 16 * page_size);
	munmap(p + 24 * page_size, 8 * page_size);
}

static int child_check(void *arg)
{
	const char *p = arg;

	return check_pattern(p, 32, 6) < 0 ? 0 : 1;
}

static void t_fork(void)
{
	const size_t n = 32;
	char *p = fresh(n, 6);
	long bad;

	to_dev("fork", p, n);
	expect_device("fork", p, n);
	CHECK_EQ(run_child(child_check, p), 0);
	bad = check_pattern(p, n, 6);
	CHECK(bad < 0, "fork: parent word %ld wrong", bad);
	expect_home("fork, parent", p, n, true);
	munmap(p, n * page_size);
}

/*
 * The kernel selftest's expectation (hmm-tests.c, migrate_anon_huge_fault):
 * a PMD-sized THP migrated to the device reads PM_SWAP and not present on
 * every page, and faults back intact.
 */
static void t_selftest_thp(void)
{
	const size_t huge = 2u << 20, n = huge / page_size;
	char *p = map_aligned_2m(huge, PROT_READ | PROT_WRITE);
	bool collapsed;
	long bad;

	madvise(p, huge, MADV_HUGEPAGE);
	fill_pattern(p, n, 7);
	collapsed = madvise(p, huge, MADV_COLLAPSE) == 0;
	printf("%s: selftest THP case: %s\n", test_name,
	       collapsed ? "collapsed to a huge page" : "MADV_COLLAPSE refused, small pages");
	to_dev("selftest THP", p, n);
	for (size_t i = 0; i < n; i++) {
		uint64_t e = pm_entry(p + i * page_size);

		CHECK(!(e & PM_PRESENT), "selftest THP: page %zu present", i);
		CHECK(!markers || (e & PM_SWAP), "selftest THP: page %zu: %#llx, PM_SWAP expected",
		      i, (unsigned long long)e);
	}
	bad = check_pattern(p, n, 7);
	CHECK(bad < 0, "selftest THP: word %ld wrong after the fault-back", bad);
	munmap(p, huge);

	/*
	 * A huge page migrated back whole comes back as one PMD where pages
	 * return by UFFDIO_MOVE: the markers' page table must not be in the
	 * way (a destination PMD with a page table splits the huge page).
	 */
	p = map_aligned_2m(huge, PROT_READ | PROT_WRITE);
	madvise(p, huge, MADV_HUGEPAGE);
	fill_pattern(p, n, 12);
	if (madvise(p, huge, MADV_COLLAPSE) == 0 && (page_state_of(mm, p) & UHMM_PS_HUGE) &&
	    (variant.active & UHMM_FEAT_MOVE)) {
		long back;

		to_dev("THP round trip", p, n);
		expect_device("THP round trip", p, n);
		back = tdev_to_sys(dev, (uintptr_t)p, (uintptr_t)p + huge, NULL);
		CHECK(back == (long)n, "THP round trip: %ld of %zu back", back, n);
		CHECK(page_state_of(mm, p) & UHMM_PS_HUGE,
		      "THP round trip: the huge page came back split (state %#x)",
		      page_state_of(mm, p));
		bad = check_pattern(p, n, 12);
		CHECK(bad < 0, "THP round trip: word %ld wrong", bad);
		printf("%s: THP round trip: back as one huge page\n", test_name);
	} else {
		printf("%s: THP round trip: no huge page or no UFFDIO_MOVE here, not checked\n",
		       test_name);
	}
	munmap(p, huge);
}

/*
 * A marker whose device page is gone: a raw MADV_FREE (no wrapper) drops
 * uhmm's device entries through the REMOVE event (MADV_FREE data may read
 * back as zeroes), while the kernel keeps the markers.  Such a page is
 * empty: not a device page, not swapped; a CPU access fills it (no fault
 * loop on ZEROPAGE -EEXIST); a migration takes it (a marker is not a swap
 * entry, and cannot be moved: it is dropped first).
 */
static void t_stale_marker(void)
{
	const size_t n = 16;
	char *p = fresh(n, 8), *other = fresh(1, 9);
	long moved, bad;

	to_dev("stale", p, n);
	CHECK_EQ(syscall(SYS_madvise, p, n * page_size, MADV_FREE), 0);
	/* Any migration first applies the events read so far (the REMOVE). */
	to_dev("stale, another range", other, 1);
	for (size_t i = 0; i < n; i++) {
		uint32_t st = page_state_of(mm, p + i * page_size);
		uint64_t e = pm_entry(p + i * page_size);

		CHECK(!(st & (UHMM_PS_DEVICE_PRIVATE | UHMM_PS_SWAPPED | UHMM_PS_PRESENT)),
		      "stale: page %zu: page state %#x (pagemap %#llx)", i, st,
		      (unsigned long long)e);
		if (i == 0)
			printf("%s: stale marker case: pagemap %#llx after a raw MADV_FREE\n",
			       test_name, (unsigned long long)e);
	}
	/* Untouched stale pages migrate (as empty pages: zeroes). */
	moved = tdev_to_dev(dev, (uintptr_t)p + 8 * page_size, (uintptr_t)p + n * page_size, NULL);
	CHECK(moved == (long)(n - 8), "stale: %ld of %zu empty pages under markers migrated",
	      moved, n - 8);
	expect_device("stale, migrated", p + 8 * page_size, n - 8);
	CHECK_EQ(((volatile uint32_t *)(p + 8 * page_size))[0], 0);
	/* Page 0 is touched (zeroes: the device page was dropped). */
	CHECK_EQ(((volatile uint32_t *)p)[0], 0);
	expect_home("stale, touched", p, 1, true);
	/* Written whole (a write fault on each stale marker), then migrated whole. */
	fill_pattern(p, n, 10);
	expect_home("stale, written", p, n, true);
	moved = tdev_to_dev(dev, (uintptr_t)p, (uintptr_t)p + n * page_size, NULL);
	CHECK(moved == (long)n, "stale: migrated %ld of %zu", moved, n);
	expect_device("stale, migrated again", p, n);
	bad = check_pattern(p, n, 10);
	CHECK(bad < 0, "stale: word %ld wrong after the round trip", bad);
	munmap(p, n * page_size);
	munmap(other, page_size);
}

/*
 * A page swapped out (where swap is on), or a guard region (another
 * swap-type entry, 6.13), next to device pages: never taken for one, and
 * never migrated (the kernel's migrate_vma skips swap entries).
 */
static void t_swap_like(void)
{
	const size_t n = 8;
	char *p = fresh(n, 11);
	const char *how = NULL;
	FILE *f = fopen("/proc/swaps", "re");
	char line[256];
	int lines = 0;
	long moved;

	if (f) {
		while (fgets(line, sizeof(line), f))
			lines++;
		fclose(f);
	}
	if (lines > 1) {
		for (int tries = 0; tries < 50 && !(pm_entry(p) & PM_SWAP); tries++)
			madvise(p, page_size, MADV_PAGEOUT);
		if (pm_entry(p) & PM_SWAP)
			how = "a page swapped out";
	}
	if (!how && madvise(p, page_size, MADV_GUARD_INSTALL) == 0)
		how = "a guard region (no swap here)";
	if (!how) {
		printf("%s: swap case: no swap and no guard regions here: not checked\n",
		       test_name);
		munmap(p, n * page_size);
		return;
	}
	printf("%s: swap case: %s, pagemap %#llx\n", test_name, how,
	       (unsigned long long)pm_entry(p));
	CHECK(page_state_of(mm, p) & UHMM_PS_SWAPPED, "swap case: page state %#x not SWAPPED",
	      page_state_of(mm, p));
	moved = tdev_to_dev(dev, (uintptr_t)p, (uintptr_t)p + n * page_size, NULL);
	CHECK(moved == (long)n - 1, "swap case: migrated %ld of %zu (the swap entry stays)",
	      moved, n);
	{
		uint32_t st = page_state_of(mm, p);

		CHECK((st & UHMM_PS_SWAPPED) && !(st & UHMM_PS_DEVICE_PRIVATE),
		      "swap case: page state %#x", st);
	}
	expect_device("swap case, its neighbours", p + page_size, n - 1);
	for (size_t i = 1; i < n; i++) {
		const uint32_t *w = (const uint32_t *)(p + i * page_size);

		CHECK(w[3] == 11 * 2654435761u + (uint32_t)(i * page_size / 4 + 3),
		      "swap case: page %zu lost", i);
	}
	munmap(p, n * page_size);
}

static void start(void)
{
	struct uhmm_sysinfo si;

	uhmm_sysinfo(&si);
	markers = (si.active & UHMM_FEAT_WP_UNPOPULATED) && (si.active & UHMM_FEAT_UFFD_WP);
	printf("%s: pagemap variant: device pages %s\n", test_name,
	       markers ? "as swap entries (uffd-wp markers), as the kernel shows them" :
			 "as empty entries (fallback: no WP_UNPOPULATED or uffd-wp, or disabled)");
	pm_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	CHECK(pm_fd >= 0, "open pagemap: %s", strerror(errno));
	mm = test_mm();
	dev = tdev_create(mm, 2048, 1);
}

static int finish(void)
{
	tdev_destroy(dev);
	uhmm_mm_put(mm);
	close(pm_fd);
	return 0;
}

static void t_mremap_move(void)
{
	t_mremap(false);
}

static void t_mremap_dontunmap(void)
{
	t_mremap(true);
}

static void t_selftest_thp_case(void)
{
	if (!thp_enabled())
		SKIP_CASE("selftest THP case: THP %s here, not checked", variant.thp);
	t_selftest_thp();
}

static const struct test_case cases[] = {
	{ "basic", t_basic },
	{ "migrate_back", t_migrate_back },
	{ "mprotect", t_mprotect },
	{ "mremap", t_mremap_move },
	{ "mremap_dontunmap", t_mremap_dontunmap },
	{ "dontneed_free_munmap", t_dontneed_free_munmap },
	{ "fork", t_fork },
	{ "selftest_thp", t_selftest_thp_case },
	{ "stale_marker", t_stale_marker },
	{ "swap_like", t_swap_like },
};

TEST_MAIN("test_pagemap_device", start, finish)
