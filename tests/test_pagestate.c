// SPDX-License-Identifier: MIT
/*
 * CPU page state: uhmm_page_state() and the snapshot mode of
 * uhmm_range_fault() (default_flags 0, per-page input ignored) for each kind
 * of CPU page, on real mappings:
 *  - a hole between two mappings (state 0, pfn ERROR);
 *  - a PROT_NONE mapping, empty or over data (MAPPED without READ, pfn ERROR);
 *  - a never-touched anonymous page (exactly MAPPED|READ|MAYWRITE, pfn 0);
 *  - the shared zero page after a read fault (ZERO, not WRITABLE; pfn
 *    VALID|ZERO without WRITE), also 600 zero pages alternating with written
 *    ones, when the kernel maps it and uhmm can see it (PAGEMAP_SCAN or root);
 *  - a read-only mapping with data (PRESENT, not MAYWRITE / WRITABLE);
 *  - a written private page (PRESENT|WRITABLE|EXCLUSIVE; pfn VALID|WRITE
 *    naming the page's own address);
 *  - a page shared copy-on-write with a live fork child (not EXCLUSIVE, not
 *    WRITABLE; pfn without WRITE), WRITABLE again once the child has exited
 *    and the parent wrote it;
 *  - a PMD-mapped transparent huge page (HUGE on all 512 pages, map order 9),
 *    when the kernel gave one (smaps AnonHugePages is the referee); part of
 *    it asked alone is still HUGE / order 9; once mprotect of one page has
 *    split the PMD mapping, no page is HUGE and the order is 0;
 *  - file-backed MAP_SHARED and MAP_PRIVATE mappings (FILE, SHARED,
 *    WRITABLE only where a write needs no copy);
 *  - shared anonymous memory (SHARED, not FILE);
 *  - [vvar], [vvar_vclock], [vdso] (SPECIAL; pfn ERROR);
 *  - one call over a range mixing all of these (and over 40 mappings)
 *    agrees page by page with one call per page, for both functions;
 *  - snapshots have no side effect (never-touched pages stay absent,
 *    mincore() agrees, the notifier is not invalidated);
 *  - bad input (NULL mm or out, unaligned start, npages 0, wrapping range)
 *    gives -EINVAL and records a reason (each case on a fresh thread);
 *  - a large populated range (64 MiB) is PRESENT / VALID everywhere.
 * Every sub-check prints one line saying that it ran or why it was skipped.
 */
#include "common.h"

#include <stdarg.h>

static struct uhmm_mm *mm;
static struct uhmm_sysinfo si;
static char tmp_path[64];

#define PS_ALL_KNOWN	((UHMM_PS_EXCLUSIVE << 1) - 1)

static void ok(const char *what)
{
	printf("%s: %s: ok\n", test_name, what);
}

static void skip_sub(const char *what, const char *why)
{
	printf("%s: %s: SKIP: %s\n", test_name, what, why);
}

/*
 * Non-fatal check, for sub-checks that compare answers and leave nothing
 * broken behind: print the failure, go on, fail the program at the end.
 */
static int failures;

__attribute__((format(printf, 2, 3)))
static bool soft_check(bool cond, const char *fmt, ...)
{
	va_list ap;

	if (cond)
		return true;
	fprintf(stderr, "%s: FAIL: ", test_name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	failures++;
	return false;
}

static void sub_result(const char *what, int failures_before)
{
	if (failures == failures_before)
		ok(what);
	else
		printf("%s: %s: FAILED\n", test_name, what);
}

static const char *ps_names(uint32_t st, char *buf, size_t len)
{
	static const char *const names[] = {
		"MAPPED", "READ", "MAYWRITE", "PRESENT", "WRITABLE", "ZERO",
		"HUGE", "SWAPPED", "FILE", "SHARED", "HUGETLB", "SPECIAL",
		"DEVICE_PRIVATE", "MIGRATING", "DEVICE_EXCLUSIVE", "SOFT_DIRTY",
		"EXCLUSIVE",
	};
	size_t n = 0;

	buf[0] = 0;
	for (unsigned int i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (st & (1u << i))
			n += (size_t)snprintf(buf + n, n < len ? len - n : 0, "%s%s",
					      n ? "|" : "", names[i]);
	if (st & ~(uint32_t)PS_ALL_KNOWN)
		snprintf(buf + n, n < len ? len - n : 0, "|unknown %#x",
			 st & ~(uint32_t)PS_ALL_KNOWN);
	if (!st)
		snprintf(buf, len, "0");
	return buf;
}

/* Every bit of @set present, none of @clear. */
static void check_ps(const char *what, uint32_t st, uint32_t set, uint32_t clear)
{
	char b1[256], b2[256], b3[256];

	CHECK((st & set) == set && !(st & clear),
	      "%s: page state %s, want %s set and none of %s", what,
	      ps_names(st, b1, sizeof(b1)), ps_names(set, b2, sizeof(b2)),
	      ps_names(clear, b3, sizeof(b3)));
}

/* The state, ignoring the soft-dirty bit, is exactly @want. */
static void check_ps_exact(const char *what, uint32_t st, uint32_t want)
{
	char b1[256], b2[256];

	st &= ~UHMM_PS_SOFT_DIRTY;
	CHECK(st == want, "%s: page state %s, want exactly %s", what,
	      ps_names(st, b1, sizeof(b1)), ps_names(want, b2, sizeof(b2)));
}

static void check_pfn(const char *what, uint64_t pfn, uint64_t set, uint64_t clear)
{
	CHECK((pfn & set) == set && !(pfn & clear),
	      "%s: pfn %#llx, want %#llx set and none of %#llx", what,
	      (unsigned long long)pfn, (unsigned long long)set,
	      (unsigned long long)clear);
}

/* A valid pfn word must name the page at @addr. */
static void check_pfn_addr(const char *what, uint64_t pfn, const void *addr)
{
	CHECK(uhmm_pfn_to_addr(pfn) == (uintptr_t)addr,
	      "%s: pfn %#llx names %#lx, not the page %p", what,
	      (unsigned long long)pfn, (unsigned long)uhmm_pfn_to_addr(pfn), addr);
}

static uint32_t state1(const void *addr)
{
	uint32_t st = 0xdeadbeef;

	CHECK_EQ(uhmm_page_state(mm, (uintptr_t)addr, 1, &st), 0);
	return st;
}

static void states(const void *addr, size_t npages, uint32_t *out)
{
	CHECK_EQ(uhmm_page_state(mm, (uintptr_t)addr, npages, out), 0);
}

/* ---- a trivial notifier ----------------------------------------------- */

struct ntf {
	struct uhmm_interval_notifier mni;
	atomic_int calls;
};

static bool ntf_invalidate(struct uhmm_interval_notifier *mni,
			   const struct uhmm_notifier_range *r, unsigned long seq)
{
	struct ntf *n = (struct ntf *)mni;

	(void)r;
	uhmm_interval_set_seq(mni, seq);
	atomic_fetch_add(&n->calls, 1);
	return true;
}

static const struct uhmm_interval_notifier_ops ntf_ops = {
	.invalidate = ntf_invalidate,
};

static void ntf_insert(struct ntf *n, const void *start, size_t len)
{
	memset(n, 0, sizeof(*n));
	atomic_init(&n->calls, 0);
	CHECK_EQ(uhmm_interval_notifier_insert(&n->mni, mm, (uintptr_t)start, len,
					       &ntf_ops), 0);
}

/*
 * Snapshot [start, start + npages) with the range fault: no fault requested
 * (default_flags 0, per-page input ignored: it is filled with every bit
 * set to show that it is).  -EBUSY is retried a bounded number of times.
 */
static void snap(struct ntf *n, const void *start, size_t npages, uint64_t *pfns)
{
	int ret = -EBUSY;

	for (int tries = 0; tries < 100 && ret == -EBUSY; tries++) {
		struct uhmm_range r = {
			.notifier = &n->mni,
			.start = (uintptr_t)start,
			.end = (uintptr_t)start + npages * page_size,
			.hmm_pfns = pfns,
			.default_flags = 0,
			.pfn_flags_mask = 0,
		};

		for (size_t i = 0; i < npages; i++)
			pfns[i] = ~UINT64_C(0);
		r.notifier_seq = uhmm_interval_read_begin(&n->mni);
		ret = uhmm_range_fault(&r);
	}
	CHECK_EQ(ret, 0);
}

static uint64_t snap1(struct ntf *n, const void *addr)
{
	uint64_t pfn;

	snap(n, addr, 1, &pfn);
	return pfn;
}

/* ---- the page kinds ---------------------------------------------------- */

/* Is anything mapped at @a? (mincore fails with ENOMEM on a hole) */
static bool is_mapped(const void *a)
{
	unsigned char v;

	return mincore((void *)a, page_size, &v) == 0;
}

static void test_hole(void)
{
	char *p = NULL, *hole = NULL;
	uint32_t st[3];
	uint64_t pfns[3];
	struct ntf n;

	/*
	 * Far from other mappings, so that nothing another thread maps (a
	 * sanitizer runtime, the library's own mallocs under a sanitizer)
	 * lands in the hole: common.h, map_far().
	 */
	p = map_far(3 * page_size, PROT_READ | PROT_WRITE);
	hole = p + page_size;
	CHECK_EQ(munmap(hole, page_size), 0);
	CHECK(!is_mapped(hole), "the hole is unmapped");
	check_ps_exact("hole", state1(hole), 0);
	states(p, 3, st);
	check_ps_exact("hole (in a range)", st[1], 0);
	check_ps("mapping before the hole", st[0], UHMM_PS_MAPPED, 0);
	check_ps("mapping after the hole", st[2], UHMM_PS_MAPPED, 0);

	ntf_insert(&n, p, 3 * page_size);
	snap(&n, p, 3, pfns);
	CHECK_EQ(pfns[1], UHMM_PFN_ERROR);
	CHECK_EQ(pfns[0], 0);
	CHECK_EQ(pfns[2], 0);
	CHECK_EQ(snap1(&n, hole), UHMM_PFN_ERROR);
	uhmm_interval_notifier_remove(&n.mni);
	CHECK(!is_mapped(hole), "the hole stayed a hole");
	munmap(p, page_size);
	munmap(p + 2 * page_size, page_size);
	ok("hole: state 0, pfn ERROR");
}

static void test_prot_none(void)
{
	char *p = map_anon(page_size, PROT_NONE);
	struct ntf n;

	check_ps("PROT_NONE", state1(p), UHMM_PS_MAPPED,
		 UHMM_PS_READ | UHMM_PS_MAYWRITE | UHMM_PS_PRESENT |
		 UHMM_PS_WRITABLE | UHMM_PS_SPECIAL);
	ntf_insert(&n, p, page_size);
	CHECK_EQ(snap1(&n, p), UHMM_PFN_ERROR);
	uhmm_interval_notifier_remove(&n.mni);
	munmap(p, page_size);
	ok("PROT_NONE: MAPPED without READ, pfn ERROR");

	/* PROT_NONE over a page that holds data. */
	p = map_anon(page_size, PROT_READ | PROT_WRITE);
	p[0] = 1;
	CHECK_EQ(mprotect(p, page_size, PROT_NONE), 0);
	check_ps("PROT_NONE over data", state1(p), UHMM_PS_MAPPED,
		 UHMM_PS_READ | UHMM_PS_MAYWRITE | UHMM_PS_WRITABLE);
	ntf_insert(&n, p, page_size);
	CHECK_EQ(snap1(&n, p), UHMM_PFN_ERROR);
	uhmm_interval_notifier_remove(&n.mni);
	munmap(p, page_size);
	ok("PROT_NONE over data: MAPPED without READ/WRITABLE, pfn ERROR");
}

static void test_untouched(void)
{
	char *p = map_anon(4 * page_size, PROT_READ | PROT_WRITE);
	uint32_t st[4];
	uint64_t pfns[4];
	struct ntf n;

	states(p, 4, st);
	for (int i = 0; i < 4; i++)
		check_ps_exact("never-touched anonymous page", st[i],
			       UHMM_PS_MAPPED | UHMM_PS_READ | UHMM_PS_MAYWRITE);
	ntf_insert(&n, p, 4 * page_size);
	snap(&n, p, 4, pfns);
	for (int i = 0; i < 4; i++)
		CHECK_EQ(pfns[i], 0);
	/* After inserting the notifier (uffd registration) nothing changed. */
	states(p, 4, st);
	for (int i = 0; i < 4; i++)
		check_ps_exact("never-touched page under a notifier", st[i],
			       UHMM_PS_MAPPED | UHMM_PS_READ | UHMM_PS_MAYWRITE);
	uhmm_interval_notifier_remove(&n.mni);
	munmap(p, 4 * page_size);
	ok("never-touched anonymous: MAPPED|READ|MAYWRITE, not PRESENT, pfn 0");
}

/*
 * Zero pages alternating with written pages: more separate zero-page runs
 * than one PAGEMAP_SCAN output vector holds, so its scan must continue.
 */
static void test_many_zero_pages(void)
{
	const size_t np = 1200;
	volatile char *p = map_anon(np * page_size, PROT_READ | PROT_WRITE);
	uint32_t *st = calloc(np, sizeof(*st));
	uint64_t *pfns = calloc(np, sizeof(*pfns));
	struct ntf n;

	CHECK(st && pfns, "calloc");
	madvise((void *)p, np * page_size, MADV_NOHUGEPAGE);
	for (size_t i = 0; i < np; i++) {
		if (i & 1)
			p[i * page_size] = 1;
		else
			(void)p[i * page_size];
	}
	states((void *)p, np, st);
	ntf_insert(&n, (void *)p, np * page_size);
	snap(&n, (void *)p, np, pfns);
	for (size_t i = 0; i < np; i++) {
		if (i & 1) {
			CHECK(!(st[i] & UHMM_PS_ZERO) && (st[i] & UHMM_PS_WRITABLE),
			      "written page %zu: state %#x", i, st[i]);
			CHECK((pfns[i] & (UHMM_PFN_ZERO | UHMM_PFN_WRITE)) == UHMM_PFN_WRITE,
			      "written page %zu: pfn %#llx", i, (unsigned long long)pfns[i]);
		} else {
			CHECK((st[i] & UHMM_PS_ZERO) && !(st[i] & UHMM_PS_WRITABLE),
			      "zero page %zu of %zu: state %#x", i, np, st[i]);
			CHECK((pfns[i] & (UHMM_PFN_ZERO | UHMM_PFN_WRITE)) == UHMM_PFN_ZERO,
			      "zero page %zu: pfn %#llx", i, (unsigned long long)pfns[i]);
		}
	}
	uhmm_interval_notifier_remove(&n.mni);
	free(st);
	free(pfns);
	munmap((void *)p, np * page_size);
	ok("600 zero pages alternating with written pages: each told apart");
}

static void test_zero_page(void)
{
	const char *what = "zero page after a read fault";
	volatile char *p;
	uint64_t pfn;
	struct ntf n;

	if (!zero_page_supported()) {
		skip_sub(what, "this kernel does not map the shared zero page "
			 "(a freshly read page is not PFNZERO)");
		return;
	}
	if (!(si.active & UHMM_FEAT_PAGEMAP_SCAN) && geteuid() != 0) {
		skip_sub(what, "neither PAGEMAP_SCAN is active nor running as root: "
			 "the zero page cannot be told (documented fallback)");
		return;
	}
	p = map_anon(page_size, PROT_READ | PROT_WRITE);
	/* Keep a huge zero page out of the picture. */
	madvise((void *)p, page_size, MADV_NOHUGEPAGE);
	(void)p[0];
	check_ps(what, state1((void *)p),
		 UHMM_PS_MAPPED | UHMM_PS_READ | UHMM_PS_MAYWRITE |
		 UHMM_PS_PRESENT | UHMM_PS_ZERO,
		 UHMM_PS_WRITABLE | UHMM_PS_HUGE | UHMM_PS_FILE);
	ntf_insert(&n, (void *)p, page_size);
	pfn = snap1(&n, (void *)p);
	check_pfn(what, pfn, UHMM_PFN_VALID | UHMM_PFN_ZERO,
		  UHMM_PFN_WRITE | UHMM_PFN_ERROR | UHMM_PFN_ORDER_MASK);
	check_pfn_addr(what, pfn, (void *)p);

	/* A write replaces the zero page with a private page. */
	p[0] = 1;
	check_ps("zero page after a write", state1((void *)p),
		 UHMM_PS_PRESENT | UHMM_PS_WRITABLE, UHMM_PS_ZERO);
	pfn = snap1(&n, (void *)p);
	check_pfn("zero page after a write", pfn, UHMM_PFN_VALID | UHMM_PFN_WRITE,
		  UHMM_PFN_ZERO | UHMM_PFN_ERROR);
	uhmm_interval_notifier_remove(&n.mni);
	munmap((void *)p, page_size);
	ok("zero page: ZERO, not WRITABLE; pfn VALID|ZERO without WRITE");
	test_many_zero_pages();
}

static void test_read_only(void)
{
	const char *what = "read-only mapping with data";
	char *p = map_anon(page_size, PROT_READ | PROT_WRITE);
	uint64_t pfn;
	struct ntf n;

	p[0] = 42;
	CHECK_EQ(mprotect(p, page_size, PROT_READ), 0);
	check_ps(what, state1(p), UHMM_PS_MAPPED | UHMM_PS_READ | UHMM_PS_PRESENT,
		 UHMM_PS_MAYWRITE | UHMM_PS_WRITABLE | UHMM_PS_ZERO);
	ntf_insert(&n, p, page_size);
	pfn = snap1(&n, p);
	check_pfn(what, pfn, UHMM_PFN_VALID,
		  UHMM_PFN_WRITE | UHMM_PFN_ERROR | UHMM_PFN_ZERO);
	check_pfn_addr(what, pfn, p);
	uhmm_interval_notifier_remove(&n.mni);
	munmap(p, page_size);
	ok("read-only with data: PRESENT, not MAYWRITE/WRITABLE; pfn VALID without WRITE");
}

static void test_writable(void)
{
	const char *what = "written private page";
	char *p = map_anon(2 * page_size, PROT_READ | PROT_WRITE);
	uint64_t pfns[2];
	struct ntf n;

	madvise(p, 2 * page_size, MADV_NOHUGEPAGE);
	p[0] = 1;
	p[page_size] = 2;
	for (int i = 0; i < 2; i++)
		check_ps(what, state1(p + i * page_size),
			 UHMM_PS_MAPPED | UHMM_PS_READ | UHMM_PS_MAYWRITE |
			 UHMM_PS_PRESENT | UHMM_PS_WRITABLE | UHMM_PS_EXCLUSIVE,
			 UHMM_PS_ZERO | UHMM_PS_HUGE | UHMM_PS_FILE |
			 UHMM_PS_SHARED | UHMM_PS_SPECIAL | UHMM_PS_SWAPPED);
	ntf_insert(&n, p, 2 * page_size);
	snap(&n, p, 2, pfns);
	for (int i = 0; i < 2; i++) {
		check_pfn(what, pfns[i], UHMM_PFN_VALID | UHMM_PFN_WRITE,
			  UHMM_PFN_ERROR | UHMM_PFN_ZERO | UHMM_PFN_DEVICE_PRIVATE);
		check_pfn_addr(what, pfns[i], p + i * page_size);
		CHECK_EQ(uhmm_pfn_to_map_order(pfns[i]), 0);
	}
	uhmm_interval_notifier_remove(&n.mni);
	munmap(p, 2 * page_size);
	ok("written private page: PRESENT|WRITABLE|EXCLUSIVE; pfn VALID|WRITE at its address");
}

static void test_cow_fork(void)
{
	const char *what = "page shared copy-on-write with a child";
	volatile char *p = map_anon(page_size, PROT_READ | PROT_WRITE);
	int fds[2], status;
	uint64_t pfn;
	struct ntf n;
	pid_t pid;
	char c = 'x';

	madvise((void *)p, page_size, MADV_NOHUGEPAGE);
	p[0] = 1;
	ntf_insert(&n, (void *)p, page_size);
	check_ps("private page before fork", state1((void *)p),
		 UHMM_PS_PRESENT | UHMM_PS_WRITABLE | UHMM_PS_EXCLUSIVE, 0);
	CHECK_EQ(pipe(fds), 0);
	pid = fork();
	CHECK(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		/* Keep sharing the page, untouched, until the parent is done. */
		close(fds[1]);
		while (read(fds[0], &c, 1) < 0 && errno == EINTR)
			;
		_exit(p[0] == 1 ? 0 : 3);
	}
	close(fds[0]);
	/* The child exists and shares the page from here until released. */
	check_ps(what, state1((void *)p),
		 UHMM_PS_MAPPED | UHMM_PS_READ | UHMM_PS_MAYWRITE | UHMM_PS_PRESENT,
		 UHMM_PS_EXCLUSIVE | UHMM_PS_WRITABLE | UHMM_PS_ZERO);
	pfn = snap1(&n, (void *)p);
	check_pfn(what, pfn, UHMM_PFN_VALID, UHMM_PFN_WRITE | UHMM_PFN_ERROR);
	check_pfn_addr(what, pfn, (void *)p);

	CHECK_EQ(write(fds[1], &c, 1), 1);
	close(fds[1]);
	CHECK(waitpid(pid, &status, 0) == pid, "waitpid: %s", strerror(errno));
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	      "child status %#x", status);

	p[0] = 2;
	check_ps("COW page after the child exited and the parent wrote",
		 state1((void *)p),
		 UHMM_PS_PRESENT | UHMM_PS_WRITABLE | UHMM_PS_EXCLUSIVE, 0);
	pfn = snap1(&n, (void *)p);
	check_pfn("COW page after the write", pfn, UHMM_PFN_VALID | UHMM_PFN_WRITE,
		  UHMM_PFN_ERROR);
	check_pfn_addr("COW page after the write", pfn, (void *)p);
	uhmm_interval_notifier_remove(&n.mni);
	munmap((void *)p, page_size);
	ok("COW after fork: not EXCLUSIVE/WRITABLE, pfn without WRITE; WRITABLE after the write");
}

/* AnonHugePages (kB) of the mapping at @addr; *@exact: it is [addr, addr + len). */
static long anon_huge_kb(uintptr_t addr, size_t len, bool *exact)
{
	uintptr_t s = 0, e = 0;
	long kb = smaps_anon_huge_kb((const void *)addr, &s, &e);

	*exact = s == addr && e == addr + len;
	return kb;
}

static void test_thp(void)
{
	const char *what = "THP-mapped region";
	const size_t huge = 2u << 20, n = huge / page_size;
	uint32_t *st, one;
	uint64_t *pfns;
	struct ntf nt;
	char *p;
	bool exact, exact2;
	long kb, kb2;
	int f0;

	if (!(si.active & UHMM_FEAT_PAGEMAP_SCAN) && geteuid() != 0) {
		skip_sub(what, "neither PAGEMAP_SCAN is active nor running as root: "
			 "huge mappings cannot be told (documented fallback)");
		return;
	}
	if (!strcmp(si.thp, "never") || !strcmp(si.thp, "unavailable")) {
		skip_sub(what, "transparent huge pages are off here");
		return;
	}
	p = map_aligned_2m(huge, PROT_READ | PROT_WRITE);
	if (madvise(p, huge, MADV_HUGEPAGE)) {
		skip_sub(what, "madvise(MADV_HUGEPAGE) failed");
		munmap(p, huge);
		return;
	}
	for (size_t i = 0; i < n; i++)
		p[i * page_size] = 1;
	kb = anon_huge_kb((uintptr_t)p, huge, &exact);
	if (kb < 2048 || !exact) {
		printf("%s: %s: SKIP: the kernel did not map it with a PMD "
		       "(AnonHugePages %ld kB, own mapping %d)\n", test_name, what,
		       kb, exact);
		munmap(p, huge);
		return;
	}
	st = calloc(n, sizeof(*st));
	pfns = calloc(n, sizeof(*pfns));
	CHECK(st && pfns, "calloc");
	states(p, n, st);
	for (size_t i = 0; i < n; i++)
		check_ps(what, st[i],
			 UHMM_PS_MAPPED | UHMM_PS_PRESENT | UHMM_PS_WRITABLE |
			 UHMM_PS_HUGE,
			 UHMM_PS_ZERO | UHMM_PS_FILE | UHMM_PS_HUGETLB);
	ntf_insert(&nt, p, huge);
	snap(&nt, p, n, pfns);
	for (size_t i = 0; i < n; i++) {
		check_pfn(what, pfns[i], UHMM_PFN_VALID | UHMM_PFN_WRITE,
			  UHMM_PFN_ERROR | UHMM_PFN_ZERO);
		CHECK(uhmm_pfn_to_map_order(pfns[i]) == 9,
		      "page %zu: map order %u, want 9", i,
		      uhmm_pfn_to_map_order(pfns[i]));
		check_pfn_addr(what, pfns[i], p + i * page_size);
	}
	ok("THP: HUGE on all 512 pages, map order 9");

	/*
	 * The answer for a page does not depend on the window asked about:
	 * one page, or a few pages in the middle, of the huge page.
	 */
	f0 = failures;
	one = state1(p + 77 * page_size);
	soft_check(one & UHMM_PS_HUGE, "page 77 of a PMD-mapped THP asked alone: "
		   "state %#x without HUGE", one);
	states(p + 100 * page_size, 10, st);
	snap(&nt, p + 100 * page_size, 10, pfns);
	for (size_t i = 0; i < 10; i++) {
		if (!soft_check(st[i] & UHMM_PS_HUGE, "pages 100..109 of a THP: page "
				"%zu: state %#x without HUGE", 100 + i, st[i]))
			break;
		if (!soft_check(uhmm_pfn_to_map_order(pfns[i]) == 9,
				"pages 100..109 of a THP: page %zu: map order %u, "
				"want 9", 100 + i, uhmm_pfn_to_map_order(pfns[i])))
			break;
	}
	sub_result("THP: part of a huge page asked alone is still HUGE, order 9", f0);

	/*
	 * mprotect of one page splits the PMD mapping: the pages are now
	 * mapped by PTEs (the folio itself may stay whole), so none is
	 * "mapped by a 2 MiB huge page" and the map order is 0.
	 */
	CHECK_EQ(mprotect(p, page_size, PROT_READ), 0);
	kb = anon_huge_kb((uintptr_t)p, page_size, &exact);
	kb2 = anon_huge_kb((uintptr_t)p + page_size, huge - page_size, &exact2);
	if (kb != 0 || kb2 != 0 || !exact || !exact2) {
		printf("%s: THP split by mprotect: SKIP: the PMD mapping was not "
		       "split as expected (AnonHugePages %ld + %ld kB)\n",
		       test_name, kb, kb2);
	} else {
		f0 = failures;
		states(p, n, st);
		snap(&nt, p, n, pfns);
		for (size_t i = 0; i < n; i++) {
			if (!soft_check(!(st[i] & UHMM_PS_HUGE) &&
					(st[i] & UHMM_PS_PRESENT),
					"THP split to PTEs by mprotect: page %zu: "
					"state %#x (HUGE, or not PRESENT)", i, st[i]))
				break;
			if (!soft_check(uhmm_pfn_to_map_order(pfns[i]) == 0 &&
					(pfns[i] & UHMM_PFN_VALID),
					"THP split to PTEs by mprotect: page %zu: "
					"pfn %#llx, want VALID, map order 0", i,
					(unsigned long long)pfns[i]))
				break;
		}
		soft_check(!(pfns[0] & UHMM_PFN_WRITE) && (pfns[1] & UHMM_PFN_WRITE),
			   "split THP: read-only first page %#llx, writable second "
			   "page %#llx", (unsigned long long)pfns[0],
			   (unsigned long long)pfns[1]);
		sub_result("THP split to PTEs by mprotect: no HUGE, map order 0", f0);
	}
	uhmm_interval_notifier_remove(&nt.mni);
	free(st);
	free(pfns);
	munmap(p, huge);
}

static void rm_tmp(void)
{
	if (tmp_path[0])
		unlink(tmp_path);
}

/* A temp file of @npages pages of data; its fd. */
static int tmp_file(size_t npages)
{
	char *buf;
	int fd;

	snprintf(tmp_path, sizeof(tmp_path), "/tmp/uhmm_pagestate_XXXXXX");
	fd = mkstemp(tmp_path);
	CHECK(fd >= 0, "mkstemp: %s", strerror(errno));
	atexit(rm_tmp);
	buf = malloc(npages * page_size);
	CHECK(buf, "malloc");
	memset(buf, 'f', npages * page_size);
	CHECK(write(fd, buf, npages * page_size) == (ssize_t)(npages * page_size),
	      "write: %s", strerror(errno));
	free(buf);
	return fd;
}

static void test_file(int fd)
{
	char *sh = mmap(NULL, page_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	char *pr = mmap(NULL, page_size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd,
			(off_t)page_size);
	uint64_t pfn;
	struct ntf n1, n2;

	CHECK(sh != MAP_FAILED && pr != MAP_FAILED, "mmap file: %s", strerror(errno));
	sh[0] = 's';
	check_ps("file MAP_SHARED written", state1(sh),
		 UHMM_PS_MAPPED | UHMM_PS_READ | UHMM_PS_MAYWRITE | UHMM_PS_FILE |
		 UHMM_PS_SHARED | UHMM_PS_PRESENT | UHMM_PS_WRITABLE,
		 UHMM_PS_ZERO | UHMM_PS_SPECIAL | UHMM_PS_HUGETLB);
	ntf_insert(&n1, sh, page_size);
	pfn = snap1(&n1, sh);
	check_pfn("file MAP_SHARED written", pfn, UHMM_PFN_VALID | UHMM_PFN_WRITE,
		  UHMM_PFN_ERROR | UHMM_PFN_ZERO);
	check_pfn_addr("file MAP_SHARED written", pfn, sh);
	ok("file MAP_SHARED: FILE|SHARED|PRESENT|WRITABLE");

	CHECK_EQ(((volatile char *)pr)[0], 'f');
	check_ps("file MAP_PRIVATE read", state1(pr),
		 UHMM_PS_MAPPED | UHMM_PS_READ | UHMM_PS_MAYWRITE | UHMM_PS_FILE |
		 UHMM_PS_PRESENT,
		 UHMM_PS_WRITABLE | UHMM_PS_SHARED | UHMM_PS_ZERO | UHMM_PS_SPECIAL);
	ntf_insert(&n2, pr, page_size);
	pfn = snap1(&n2, pr);
	check_pfn("file MAP_PRIVATE read", pfn, UHMM_PFN_VALID,
		  UHMM_PFN_WRITE | UHMM_PFN_ERROR);
	check_pfn_addr("file MAP_PRIVATE read", pfn, pr);
	pr[0] = 'p';
	check_ps("file MAP_PRIVATE written", state1(pr),
		 UHMM_PS_FILE | UHMM_PS_PRESENT | UHMM_PS_WRITABLE, UHMM_PS_SHARED);
	pfn = snap1(&n2, pr);
	check_pfn("file MAP_PRIVATE written", pfn, UHMM_PFN_VALID | UHMM_PFN_WRITE,
		  UHMM_PFN_ERROR);
	ok("file MAP_PRIVATE: FILE|PRESENT, WRITABLE only after a write");

	uhmm_interval_notifier_remove(&n1.mni);
	uhmm_interval_notifier_remove(&n2.mni);
	munmap(sh, page_size);
	munmap(pr, page_size);
}

static void test_shared_anon(void)
{
	const char *what = "shared anonymous memory";
	char *p = mmap(NULL, 2 * page_size, PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	uint32_t st[2];
	uint64_t pfns[2];
	struct ntf n;

	CHECK(p != MAP_FAILED, "mmap: %s", strerror(errno));
	p[0] = 1;
	states(p, 2, st);
	check_ps(what, st[0],
		 UHMM_PS_MAPPED | UHMM_PS_READ | UHMM_PS_MAYWRITE | UHMM_PS_SHARED |
		 UHMM_PS_PRESENT | UHMM_PS_WRITABLE,
		 UHMM_PS_FILE | UHMM_PS_SPECIAL | UHMM_PS_ZERO);
	check_ps("shared anonymous, untouched", st[1],
		 UHMM_PS_MAPPED | UHMM_PS_SHARED,
		 UHMM_PS_FILE | UHMM_PS_PRESENT | UHMM_PS_WRITABLE);
	ntf_insert(&n, p, 2 * page_size);
	snap(&n, p, 2, pfns);
	check_pfn(what, pfns[0], UHMM_PFN_VALID | UHMM_PFN_WRITE, UHMM_PFN_ERROR);
	check_pfn_addr(what, pfns[0], p);
	CHECK_EQ(pfns[1], 0);
	uhmm_interval_notifier_remove(&n.mni);
	munmap(p, 2 * page_size);
	ok("shared anonymous: SHARED, not FILE");
}

static void test_special(void)
{
	static const char *const names[] = { "[vvar]", "[vvar_vclock]", "[vdso]" };
	FILE *f = fopen("/proc/self/maps", "re");
	struct special_map {
		uintptr_t s, e;
		const char *name;
	} found[8];
	int nfound = 0;
	char line[512];

	CHECK(f, "open /proc/self/maps");
	while (fgets(line, sizeof(line), f) && nfound < 8) {
		unsigned long s, e;
		char *name = strrchr(line, ' ');

		if (sscanf(line, "%lx-%lx ", &s, &e) != 2 || !name)
			continue;
		name[strcspn(name, "\n")] = 0;
		name++;
		for (unsigned int i = 0; i < sizeof(names) / sizeof(names[0]); i++)
			if (!strcmp(name, names[i]))
				found[nfound++] = (struct special_map){ s, e, names[i] };
	}
	fclose(f);
	if (!nfound) {
		skip_sub("[vvar]/[vdso]", "no [vvar] or [vdso] mapping in /proc/self/maps");
		return;
	}
	for (int k = 0; k < nfound; k++) {
		size_t np = (found[k].e - found[k].s) / page_size;
		uint32_t *st = calloc(np, sizeof(*st));
		uint64_t *pfns = calloc(np, sizeof(*pfns));
		struct ntf n;
		char what[64];

		CHECK(st && pfns, "calloc");
		snprintf(what, sizeof(what), "%s", found[k].name);
		states((void *)found[k].s, np, st);
		for (size_t i = 0; i < np; i++)
			check_ps(what, st[i], UHMM_PS_MAPPED | UHMM_PS_SPECIAL,
				 UHMM_PS_MAYWRITE | UHMM_PS_WRITABLE | UHMM_PS_FILE);
		ntf_insert(&n, (void *)found[k].s, found[k].e - found[k].s);
		snap(&n, (void *)found[k].s, np, pfns);
		for (size_t i = 0; i < np; i++)
			CHECK(pfns[i] == UHMM_PFN_ERROR, "%s page %zu: pfn %#llx, want ERROR",
			      what, i, (unsigned long long)pfns[i]);
		uhmm_interval_notifier_remove(&n.mni);
		free(st);
		free(pfns);
		printf("%s: %s (%zu pages): SPECIAL, pfn ERROR: ok\n", test_name,
		       found[k].name, np);
	}
}

/* ---- one range over all kinds ----------------------------------------- */

enum {
	K_WRITTEN, K_UNTOUCHED, K_HOLE, K_NONE, K_RO, K_ZERO, K_SHANON,
	K_FSHARED, K_FPRIV_READ, K_FPRIV_WRITTEN, K_WRITTEN2, K_NR
};

static void test_mixed(int fd)
{
	const char *what = "mixed range";
	char *base = map_anon(K_NR * page_size, PROT_NONE);
	uint32_t whole[K_NR], one;
	uint64_t pfns[K_NR];
	char *q;
	struct ntf n;

#define PG(k) (base + (k) * page_size)
	/* Written and untouched private anonymous pages. */
	q = mmap(PG(K_WRITTEN), 2 * page_size, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	CHECK(q == PG(K_WRITTEN), "mmap fixed");
	madvise(q, 2 * page_size, MADV_NOHUGEPAGE);
	q[0] = 1;
	CHECK_EQ(munmap(PG(K_HOLE), page_size), 0);
	/* PG(K_NONE) stays PROT_NONE. */
	q = mmap(PG(K_RO), 2 * page_size, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	CHECK(q == PG(K_RO), "mmap fixed");
	madvise(q, 2 * page_size, MADV_NOHUGEPAGE);
	q[0] = 1;
	CHECK_EQ(mprotect(q, page_size, PROT_READ), 0);
	(void)((volatile char *)PG(K_ZERO))[0];	/* zero page, where mapped */
	q = mmap(PG(K_SHANON), page_size, PROT_READ | PROT_WRITE,
		 MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	CHECK(q == PG(K_SHANON), "mmap fixed");
	q[0] = 1;
	q = mmap(PG(K_FSHARED), page_size, PROT_READ | PROT_WRITE,
		 MAP_SHARED | MAP_FIXED, fd, 0);
	CHECK(q == PG(K_FSHARED), "mmap fixed");
	q[0] = 1;
	q = mmap(PG(K_FPRIV_READ), 2 * page_size, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_FIXED, fd, 0);
	CHECK(q == PG(K_FPRIV_READ), "mmap fixed");
	(void)((volatile char *)q)[0];
	q[page_size] = 1;
	q = mmap(PG(K_WRITTEN2), page_size, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	CHECK(q == PG(K_WRITTEN2), "mmap fixed");
	q[0] = 1;

	states(base, K_NR, whole);
	/* The range does hold the kinds it is meant to. */
	check_ps("mixed: written", whole[K_WRITTEN], UHMM_PS_WRITABLE, 0);
	check_ps("mixed: untouched", whole[K_UNTOUCHED], UHMM_PS_MAPPED, UHMM_PS_PRESENT);
	check_ps_exact("mixed: hole", whole[K_HOLE], 0);
	check_ps("mixed: PROT_NONE", whole[K_NONE], UHMM_PS_MAPPED, UHMM_PS_READ);
	check_ps("mixed: read-only", whole[K_RO], UHMM_PS_PRESENT, UHMM_PS_MAYWRITE);
	if (zero_page_supported())
		check_ps("mixed: zero page", whole[K_ZERO], UHMM_PS_PRESENT,
			 UHMM_PS_WRITABLE);
	else if (variant.zero_page == 0)
		/* No zero page here: the read fault installed a private, writable page. */
		check_ps("mixed: read fault", whole[K_ZERO], UHMM_PS_PRESENT | UHMM_PS_WRITABLE,
			 UHMM_PS_ZERO);
	else
		check_ps("mixed: read fault", whole[K_ZERO], UHMM_PS_PRESENT, 0);
	check_ps("mixed: shared anon", whole[K_SHANON], UHMM_PS_SHARED | UHMM_PS_WRITABLE,
		 UHMM_PS_FILE);
	check_ps("mixed: file shared", whole[K_FSHARED],
		 UHMM_PS_FILE | UHMM_PS_SHARED | UHMM_PS_WRITABLE, 0);
	check_ps("mixed: file private read", whole[K_FPRIV_READ],
		 UHMM_PS_FILE | UHMM_PS_PRESENT, UHMM_PS_WRITABLE | UHMM_PS_SHARED);
	check_ps("mixed: file private written", whole[K_FPRIV_WRITTEN],
		 UHMM_PS_FILE | UHMM_PS_WRITABLE, UHMM_PS_SHARED);
	check_ps("mixed: written after", whole[K_WRITTEN2], UHMM_PS_WRITABLE, 0);

	for (int k = 0; k < K_NR; k++) {
		one = state1(PG(k));
		CHECK(one == whole[k], "%s: page %d: alone %#x, in the range %#x",
		      what, k, one, whole[k]);
	}
	/* Sub-ranges starting and ending anywhere agree too. */
	for (int s = 0; s < K_NR; s++) {
		uint32_t sub[K_NR];

		states(PG(s), (size_t)(K_NR - s), sub);
		for (int k = s; k < K_NR; k++)
			CHECK(sub[k - s] == whole[k], "%s: page %d from %d: %#x vs %#x",
			      what, k, s, sub[k - s], whole[k]);
	}

	ntf_insert(&n, base, K_NR * page_size);
	snap(&n, base, K_NR, pfns);
	for (int k = 0; k < K_NR; k++) {
		uint64_t p1 = snap1(&n, PG(k));
		bool bad = !(whole[k] & UHMM_PS_MAPPED) || !(whole[k] & UHMM_PS_READ) ||
			   (whole[k] & UHMM_PS_SPECIAL);

		CHECK(p1 == pfns[k], "%s: page %d: pfn alone %#llx, in the range %#llx",
		      what, k, (unsigned long long)p1, (unsigned long long)pfns[k]);
		if (bad)
			CHECK(pfns[k] == UHMM_PFN_ERROR, "%s: page %d: pfn %#llx, want ERROR",
			      what, k, (unsigned long long)pfns[k]);
		else if (!(whole[k] & UHMM_PS_PRESENT))
			CHECK(pfns[k] == 0, "%s: page %d: pfn %#llx, want 0", what, k,
			      (unsigned long long)pfns[k]);
		else
			check_pfn(what, pfns[k],
				  UHMM_PFN_VALID |
				  ((whole[k] & UHMM_PS_WRITABLE) ? UHMM_PFN_WRITE : 0),
				  UHMM_PFN_ERROR |
				  ((whole[k] & UHMM_PS_WRITABLE) ? 0 : UHMM_PFN_WRITE));
	}
	uhmm_interval_notifier_remove(&n.mni);
	munmap(base, K_NR * page_size);
#undef PG
	ok("mixed range: one call agrees with per-page calls (page state and pfns)");
}

/*
 * More mappings in one range than the page-state walk keeps on its stack:
 * 40 written pages whose protection alternates read-write / read-only.
 */
static void test_many_vmas(void)
{
	const size_t np = 40;
	char *p = map_anon(np * page_size, PROT_READ | PROT_WRITE);
	uint32_t st[40];
	uint64_t pfns[40];
	struct ntf n;

	madvise(p, np * page_size, MADV_NOHUGEPAGE);
	for (size_t i = 0; i < np; i++) {
		p[i * page_size] = 1;
		if (i & 1)
			CHECK_EQ(mprotect(p + i * page_size, page_size, PROT_READ), 0);
	}
	states(p, np, st);
	ntf_insert(&n, p, np * page_size);
	snap(&n, p, np, pfns);
	for (size_t i = 0; i < np; i++) {
		uint32_t one = state1(p + i * page_size);
		uint64_t w = (i & 1) ? 0 : UHMM_PFN_WRITE;

		CHECK(one == st[i], "page %zu: alone %#x, in the range %#x", i, one, st[i]);
		if (i & 1)
			check_ps("many mappings: read-only page", st[i], UHMM_PS_PRESENT,
				 UHMM_PS_MAYWRITE | UHMM_PS_WRITABLE);
		else
			check_ps("many mappings: writable page", st[i],
				 UHMM_PS_PRESENT | UHMM_PS_WRITABLE, 0);
		CHECK((pfns[i] & (UHMM_PFN_VALID | UHMM_PFN_WRITE | UHMM_PFN_ERROR)) ==
		      (UHMM_PFN_VALID | w), "page %zu: pfn %#llx", i,
		      (unsigned long long)pfns[i]);
		CHECK_EQ(snap1(&n, p + i * page_size), pfns[i]);
	}
	uhmm_interval_notifier_remove(&n.mni);
	munmap(p, np * page_size);
	ok("40 mappings in one range: per-page answers agree");
}

/* ---- no side effects ----------------------------------------------------- */

static void test_no_side_effects(void)
{
	const size_t np = 16;
	char *p = map_anon(np * page_size, PROT_READ | PROT_WRITE);
	uint32_t st[16];
	uint64_t pfns[16];
	unsigned char vec[16];
	struct ntf n;
	unsigned long seq;

	ntf_insert(&n, p, np * page_size);
	seq = uhmm_interval_read_begin(&n.mni);
	for (int round = 0; round < 3; round++) {
		states(p, np, st);
		for (size_t i = 0; i < np; i++)
			check_ps("snapshot of untouched pages", st[i], UHMM_PS_MAPPED,
				 UHMM_PS_PRESENT | UHMM_PS_ZERO);
		snap(&n, p, np, pfns);
		for (size_t i = 0; i < np; i++)
			CHECK_EQ(pfns[i], 0);
	}
	CHECK_EQ(mincore(p, np * page_size, vec), 0);
	for (size_t i = 0; i < np; i++)
		CHECK(!(vec[i] & 1), "page %zu became resident after snapshots", i);
	CHECK(!uhmm_interval_read_retry(&n.mni, seq), "snapshots invalidated the notifier");
	CHECK_EQ(atomic_load(&n.calls), 0);
	uhmm_interval_notifier_remove(&n.mni);
	munmap(p, np * page_size);
	ok("snapshots have no side effect (pages stay absent, mincore agrees, no invalidation)");
}

/* ---- bad input ------------------------------------------------------------ */

struct bad_case {
	const char *name;
	struct uhmm_mm *mm;
	uintptr_t start;
	size_t npages;
	bool null_out;
	int ret;
	char err[256];
	char err_before[256];
};

/* Each case runs in a new thread, whose last error starts out empty. */
static void *bad_thread(void *arg)
{
	struct bad_case *c = arg;
	uint32_t out[4];

	snprintf(c->err_before, sizeof(c->err_before), "%s", uhmm_last_error());
	c->ret = uhmm_page_state(c->mm, c->start, c->npages, c->null_out ? NULL : out);
	snprintf(c->err, sizeof(c->err), "%s", uhmm_last_error());
	return NULL;
}

static void test_bad_input(void)
{
	char *p = map_anon(page_size, PROT_READ | PROT_WRITE);
	uintptr_t top = UINTPTR_MAX & ~(uintptr_t)(page_size - 1);
	struct bad_case cases[] = {
		{ .name = "NULL mm", .mm = NULL, .start = (uintptr_t)p, .npages = 1 },
		{ .name = "NULL out", .mm = mm, .start = (uintptr_t)p, .npages = 1,
		  .null_out = true },
		{ .name = "unaligned start", .mm = mm, .start = (uintptr_t)p + 1,
		  .npages = 1 },
		{ .name = "npages 0", .mm = mm, .start = (uintptr_t)p, .npages = 0 },
		{ .name = "wrapping range", .mm = mm, .start = top, .npages = 2 },
		{ .name = "npages SIZE_MAX", .mm = mm, .start = (uintptr_t)p,
		  .npages = SIZE_MAX },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		pthread_t t;

		CHECK_EQ(pthread_create(&t, NULL, bad_thread, &cases[i]), 0);
		CHECK_EQ(pthread_join(t, NULL), 0);
		CHECK(cases[i].ret == -EINVAL, "%s: returned %d, want -EINVAL",
		      cases[i].name, cases[i].ret);
		CHECK(!cases[i].err_before[0], "%s: a new thread starts with no error",
		      cases[i].name);
		CHECK(cases[i].err[0], "%s: no reason recorded", cases[i].name);
		printf("%s: bad input %s: -EINVAL (%s): ok\n", test_name, cases[i].name,
		       cases[i].err);
	}
	/* A good call right after still works. */
	check_ps("after bad input", state1(p), UHMM_PS_MAPPED, 0);
	munmap(p, page_size);
}

/* ---- a large range --------------------------------------------------------- */

static void test_large(void)
{
	const size_t len = 64u << 20, np = len / page_size;
	char *p = map_anon(len, PROT_READ | PROT_WRITE);
	uint32_t *st = calloc(np, sizeof(*st));
	uint64_t *pfns = calloc(np, sizeof(*pfns));
	struct ntf n;

	CHECK(st && pfns, "calloc");
	for (size_t i = 0; i < np; i++)
		p[i * page_size] = 1;
	states(p, np, st);
	for (size_t i = 0; i < np; i++)
		CHECK((st[i] & (UHMM_PS_PRESENT | UHMM_PS_WRITABLE)) ==
		      (UHMM_PS_PRESENT | UHMM_PS_WRITABLE),
		      "large range page %zu: state %#x", i, st[i]);
	ntf_insert(&n, p, len);
	snap(&n, p, np, pfns);
	for (size_t i = 0; i < np; i++) {
		CHECK((pfns[i] & (UHMM_PFN_VALID | UHMM_PFN_WRITE | UHMM_PFN_ERROR)) ==
		      (UHMM_PFN_VALID | UHMM_PFN_WRITE),
		      "large range page %zu: pfn %#llx", i, (unsigned long long)pfns[i]);
		CHECK(uhmm_pfn_to_addr(pfns[i]) == (uintptr_t)p + i * page_size,
		      "large range page %zu: wrong address", i);
	}
	uhmm_interval_notifier_remove(&n.mni);
	free(st);
	free(pfns);
	munmap(p, len);
	ok("large range (64 MiB): PRESENT on every page, pfn VALID|WRITE");
}

static int file_fd = -1;	/* a two-page temporary file (tmp_file()) */

static void case_file(void)
{
	test_file(file_fd);
}

static void case_mixed(void)
{
	test_mixed(file_fd);
}

static void start(void)
{
	CHECK_EQ(uhmm_sysinfo(&si), 0);
	printf("%s: active features %#x, zero_page %d, thp %s, euid %d\n", test_name,
	       si.active, si.zero_page, si.thp, (int)geteuid());
	mm = test_mm();
	file_fd = tmp_file(2);
}

static int finish(void)
{
	close(file_fd);
	uhmm_mm_put(mm);
	if (failures) {
		printf("%s: FAIL: %d sub-check(s) failed (see above)\n", test_name,
		       failures);
		return 1;
	}
	return 0;
}

static const struct test_case cases[] = {
	TEST_CASE(test_hole),
	TEST_CASE(test_prot_none),
	TEST_CASE(test_untouched),
	TEST_CASE(test_zero_page),
	TEST_CASE(test_read_only),
	TEST_CASE(test_writable),
	TEST_CASE(test_cow_fork),
	TEST_CASE(test_thp),
	{ "file", case_file },
	TEST_CASE(test_shared_anon),
	TEST_CASE(test_special),
	{ "mixed", case_mixed },
	TEST_CASE(test_many_vmas),
	TEST_CASE(test_no_side_effects),
	TEST_CASE(test_bad_input),
	TEST_CASE(test_large),
};

TEST_MAIN("test_pagestate", start, finish)
