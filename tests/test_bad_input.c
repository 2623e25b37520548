// SPDX-License-Identifier: MIT
/*
 * Bad input to every public call (docs/BAD-INPUT.md has the table this test
 * checks row by row).
 *
 * Each refusal must be a specific negative errno (never a crash, a hang or a
 * silent success), uhmm_last_error() must give a reason recorded by that
 * very call (a unique marker is recorded just before it, and must have been
 * replaced), and nothing may change: the memory the call was given keeps
 * every byte, and its page state (uhmm_page_state(): present, device
 * resident, migrating...) is the same afterwards.
 *
 * Sections: a context torn down and made again (stale handles), the
 * context calls, notifiers, page state, range fault, device memory,
 * migration, device-range migration, exclusive access, failure injection,
 * simdev, hugetlbfs, calls from an invalidate callback and from the service
 * thread (-EDEADLK), a fork child and a vfork child using the parent's
 * context.
 */
#include "common.h"

#include <limits.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <uhmm/inject.h>
#include <uhmm/simdev.h>

#define container_of(p, type, member) ((type *)((char *)(p) - offsetof(type, member)))

#define UHMM_MAX_POOLS_FOR_TEST 256

static struct uhmm_mm *mm;
static unsigned int pshift;
static char marker[64];
static unsigned long nrows;

static void ok(const char *what)
{
	printf("%s: ok: %s\n", test_name, what);
}

/* A unique reason, recorded just before the call under test. */
static void mark(void)
{
	static unsigned int n;

	snprintf(marker, sizeof(marker), "bad-input marker %u", ++n);
	CHECK_EQ(uhmm_set_error(EINVAL, "%s", marker), -EINVAL);
	CHECK(strcmp(uhmm_last_error(), marker) == 0, "uhmm_set_error records its reason");
}

/* The call under test replaced the marker with a reason of its own. */
static void reason_given(const char *what)
{
	const char *e = uhmm_last_error();

	CHECK(e[0] && strcmp(e, marker) != 0, "%s: no reason recorded (last error \"%s\")",
	      what, e);
	nrows++;
}

#define REFUSE(expr, err)                                                      \
	do {                                                                   \
		long r_;                                                       \
		mark();                                                        \
		r_ = (long)(expr);                                             \
		CHECK(r_ == -(long)(err), "%s = %ld (%s), expected -%s", #expr,\
		      r_, r_ < 0 ? strerror((int)-r_) : "not an error", #err);  \
		reason_given(#expr);                                           \
	} while (0)

#define REFUSE_NULL(expr)                                                      \
	do {                                                                   \
		const void *r_;                                                \
		mark();                                                        \
		r_ = (expr);                                                   \
		CHECK(r_ == NULL, "%s = %p, expected NULL", #expr, r_);        \
		reason_given(#expr);                                           \
	} while (0)

/* A void call (or one whose value is checked separately) that must say why. */
#define REFUSE_VOID(stmt)                                                      \
	do {                                                                   \
		mark();                                                        \
		stmt;                                                          \
		reason_given(#stmt);                                           \
	} while (0)

/* Private state (a public structure's reserved bytes) still all zero. */
static bool zeroed(const void *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (((const unsigned char *)p)[i])
			return false;
	return true;
}

static char *pg(void *base, size_t i)
{
	return (char *)base + i * page_size;
}

/* ---- nothing changed: bytes and page state ---------------------------------- */

#define GMAX 16

struct guard {
	const char *what;
	char *p;
	size_t n;
	uint32_t st[GMAX];
	char *copy;
};

static void guard_begin(struct guard *g, const char *what, void *p, size_t n)
{
	CHECK(n <= GMAX, "guard of %zu pages", n);
	g->what = what;
	g->p = p;
	g->n = n;
	CHECK_EQ(uhmm_page_state(mm, (uintptr_t)p, n, g->st), 0);
	g->copy = malloc(n * page_size);
	CHECK(g->copy, "malloc");
	/* Only pages that are there to be read: reading others would fault them in. */
	for (size_t i = 0; i < n; i++)
		if ((g->st[i] & (UHMM_PS_PRESENT | UHMM_PS_READ)) ==
		    (UHMM_PS_PRESENT | UHMM_PS_READ))
			memcpy(g->copy + i * page_size, pg(p, i), page_size);
}

static void guard_check(struct guard *g)
{
	uint32_t st[GMAX];

	CHECK_EQ(uhmm_page_state(mm, (uintptr_t)g->p, g->n, st), 0);
	for (size_t i = 0; i < g->n; i++) {
		uint32_t a = g->st[i] & ~UHMM_PS_SOFT_DIRTY, b = st[i] & ~UHMM_PS_SOFT_DIRTY;

		CHECK(a == b, "%s: page %zu state changed from %#x to %#x", g->what, i, a, b);
		if ((a & (UHMM_PS_PRESENT | UHMM_PS_READ)) == (UHMM_PS_PRESENT | UHMM_PS_READ))
			CHECK(memcmp(g->copy + i * page_size, pg(g->p, i), page_size) == 0,
			      "%s: page %zu bytes changed", g->what, i);
	}
	free(g->copy);
	g->copy = NULL;
}

/* Run @stmt between a guard's begin and check. */
#define GUARDED(what, p, n, ...)                                               \
	do {                                                                   \
		struct guard g_;                                               \
		guard_begin(&g_, what, p, n);                                  \
		__VA_ARGS__;                                                   \
		guard_check(&g_);                                              \
	} while (0)

/* ---- memory ------------------------------------------------------------------ */

/*
 * @n pages where no other thread's mapping can land in a hole punched into
 * them (common.h, map_far()).
 */
static char *far_map(size_t n)
{
	return map_far(n * page_size, PROT_READ | PROT_WRITE);
}

/*
 * The test region R, one mapping per kind:
 *   0-3 read-write, written (present)   4-5 read-write, never touched
 *   6-7 hole                            8 PROT_NONE (written before)
 *   9 read-only (written before)
 */
#define R_PAGES 10
enum { R_RW = 0, R_UNTOUCHED = 4, R_HOLE = 6, R_NONE = 8, R_RO = 9 };

static char *make_region(uint32_t seed)
{
	char *r = far_map(R_PAGES);

	fill_pattern(r, 4, seed);
	fill_pattern(pg(r, R_NONE), 2, seed + 1);
	CHECK_EQ(munmap(pg(r, R_HOLE), 2 * page_size), 0);
	CHECK_EQ(mprotect(pg(r, R_NONE), page_size, PROT_NONE), 0);
	CHECK_EQ(mprotect(pg(r, R_RO), page_size, PROT_READ), 0);
	return r;
}

/* The hole stayed a hole (the rows that used it tested unmapped memory). */
static void free_region(char *r)
{
	CHECK(range_is_hole(pg(r, R_HOLE), 2 * page_size),
	      "something else was mapped into the test region's hole");
	/* Not over the hole: only what is the test's. */
	munmap(r, R_HOLE * page_size);
	munmap(pg(r, R_NONE), (R_PAGES - R_NONE) * page_size);
}

/* Two mappings side by side, both read-write: private, then shared. */
static char *make_two_mappings(void)
{
	char *p = map_anon(2 * page_size, PROT_READ | PROT_WRITE);
	char *s = mmap(pg(p, 1), page_size, PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED, -1, 0);

	CHECK(s == pg(p, 1), "mmap MAP_FIXED: %s", strerror(errno));
	fill_pattern(p, 2, 77);
	return p;
}

static char *map_shared_anon(size_t n)
{
	char *p = mmap(NULL, n * page_size, PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	CHECK(p != MAP_FAILED, "mmap shared: %s", strerror(errno));
	fill_pattern(p, n, 31);
	return p;
}

/* A private mapping of a regular file, written (its pages are anonymous copies). */
static char *map_private_file(size_t n)
{
	char path[] = "bad_input_file_XXXXXX";
	int fd = mkstemp(path);
	char *p;

	if (fd < 0) {
		snprintf(path, sizeof(path), "/tmp/bi_XXXXXX");
		fd = mkstemp(path);
	}
	CHECK(fd >= 0, "mkstemp: %s", strerror(errno));
	unlink(path);
	CHECK_EQ(ftruncate(fd, (off_t)(n * page_size)), 0);
	p = mmap(NULL, n * page_size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	CHECK(p != MAP_FAILED, "mmap file: %s", strerror(errno));
	close(fd);
	fill_pattern(p, n, 41);
	return p;
}

/* ---- hugetlbfs ------------------------------------------------------------------ */

#define HUGE_SZ ((size_t)2 << 20)

static long reserved_hugepages;	/* how many this process added to the pool */
static int hugetlb_lock_fd = -1;

static long read_nr_hugepages(void)
{
	FILE *f = fopen("/proc/sys/vm/nr_hugepages", "r");
	long v = -1;

	if (f) {
		if (fscanf(f, "%ld", &v) != 1)
			v = -1;
		fclose(f);
	}
	return v;
}

static bool write_nr_hugepages(long v)
{
	FILE *f = fopen("/proc/sys/vm/nr_hugepages", "w");
	bool ok_ = false;

	if (f) {
		ok_ = fprintf(f, "%ld\n", v) > 0;
		ok_ = (fclose(f) == 0) && ok_;
	}
	return ok_;
}

/*
 * The sysctl is shared with other tests running at the same time: each one
 * adds to it and takes back only what it added, under a file lock.
 */
static void hugetlb_lock(bool lock)
{
	if (hugetlb_lock_fd < 0)
		hugetlb_lock_fd = open("/tmp/uhmm-test-hugetlb.lock", O_RDWR | O_CREAT | O_CLOEXEC,
				       0666);
	if (hugetlb_lock_fd >= 0)
		while (flock(hugetlb_lock_fd, lock ? LOCK_EX : LOCK_UN) && errno == EINTR)
			;
}

static void restore_hugepages(void)
{
	long cur;

	if (!reserved_hugepages)
		return;
	hugetlb_lock(true);
	cur = read_nr_hugepages();
	if (cur >= reserved_hugepages)
		write_nr_hugepages(cur - reserved_hugepages);
	reserved_hugepages = 0;
	hugetlb_lock(false);
}

static char *huge_map(void)
{
	return mmap(NULL, HUGE_SZ, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
}

/* A 2 MiB hugetlbfs mapping, never touched; NULL with the reason in @why. */
static char *get_huge(char *why, size_t whylen)
{
	char *h = huge_map();
	long cur, now;

	if (h != MAP_FAILED)
		return h;
	snprintf(why, whylen, "mmap MAP_HUGETLB: %s (no huge pages reserved)", strerror(errno));
	if (geteuid() != 0)
		return NULL;
	hugetlb_lock(true);
	cur = read_nr_hugepages();
	if (cur < 0 || !write_nr_hugepages(cur + 2) || (now = read_nr_hugepages()) <= cur) {
		hugetlb_lock(false);
		snprintf(why, whylen, "cannot reserve huge pages in /proc/sys/vm/nr_hugepages");
		return NULL;
	}
	reserved_hugepages = now - cur;
	atexit(restore_hugepages);
	hugetlb_lock(false);
	h = huge_map();
	if (h == MAP_FAILED) {
		snprintf(why, whylen, "mmap MAP_HUGETLB after reserving %ld more: %s",
			 reserved_hugepages, strerror(errno));
		return NULL;
	}
	printf("%s: note: reserved %ld huge pages (nr_hugepages %ld -> %ld), given back at exit\n",
	       test_name, reserved_hugepages, cur, now);
	return h;
}

/* ---- a notifier that only counts ------------------------------------------------ */

struct ntf {
	struct uhmm_interval_notifier mni;
	atomic_int calls;
};

static bool ntf_invalidate(struct uhmm_interval_notifier *mni,
			   const struct uhmm_notifier_range *r, unsigned long seq)
{
	struct ntf *n = container_of(mni, struct ntf, mni);

	(void)r;
	uhmm_interval_set_seq(mni, seq);
	atomic_fetch_add(&n->calls, 1);
	return true;
}

static const struct uhmm_interval_notifier_ops ntf_ops = { .invalidate = ntf_invalidate };

static void ntf_insert(struct ntf *n, void *p, size_t npages)
{
	memset(n, 0, sizeof(*n));
	CHECK_EQ(uhmm_interval_notifier_insert(&n->mni, mm, (uintptr_t)p, npages * page_size,
					       &ntf_ops), 0);
}

static struct uhmm_range range_of(struct ntf *n, void *p, size_t npages, uint64_t *pfns,
				  uint64_t flags)
{
	struct uhmm_range r = {
		.notifier = &n->mni, .start = (uintptr_t)p,
		.end = (uintptr_t)p + npages * page_size, .hmm_pfns = pfns,
		.default_flags = flags,
	};

	r.notifier_seq = uhmm_interval_read_begin(&n->mni);
	return r;
}

/* ================================================================================== */

/* A context torn down and made again: handles of the old one are refused. */
static void test_stale_context(void)
{
	struct tdev *d;
	struct ntf n;
	char *p = map_anon(4 * page_size, PROT_READ | PROT_WRITE);
	uint64_t pfns[4], src[4], dst[4], old_pfn;
	void *held[4];
	struct uhmm_range r;
	struct uhmm_migrate_vma m;
	struct uhmm_devmem pool = { .ops = &tdev_ops, .owner = &n, .nr_pages = 1 };
	uint32_t st[4];

	fill_pattern(p, 4, 5);
	mm = test_mm();
	d = tdev_create(mm, 4, 0);
	old_pfn = uhmm_page_to_pfn(uhmm_devmem_page(&d->pgmap, 0));
	ntf_insert(&n, p, 4);
	r = range_of(&n, p, 4, pfns, UHMM_PFN_REQ_FAULT);
	CHECK_EQ(uhmm_devmem_remove(&d->pgmap), 0);
	uhmm_mm_put(mm);		/* the last reference: teardown */
	CHECK_EQ(count_uffds(), 0);

	/* The handle after the last put: calls that need the context refuse. */
	GUARDED("dead context", p, 4, {
		struct ntf n2 = { 0 };

		REFUSE(uhmm_interval_notifier_insert(&n2.mni, mm, (uintptr_t)p, page_size,
						     &ntf_ops), EINVAL);
		CHECK(zeroed(n2.mni.uhmm_reserved, sizeof(n2.mni.uhmm_reserved)),
		      "notifier left untouched");
		REFUSE(uhmm_range_fault(&r), EINVAL);
		REFUSE(uhmm_devmem_add(mm, &pool), EINVAL);
		CHECK(zeroed(pool.uhmm_reserved, sizeof(pool.uhmm_reserved)) &&
		      pool.fault_around == 0, "pool left untouched");
		m = (struct uhmm_migrate_vma){ .mm = mm, .start = (uintptr_t)p,
			.end = (uintptr_t)pg(p, 4), .src = src, .dst = dst,
			.flags = UHMM_MIGRATE_VMA_SELECT_SYSTEM };
		REFUSE(uhmm_migrate_vma_setup(&m), EINVAL);
		REFUSE(uhmm_make_exclusive(mm, (uintptr_t)p, 4, &n, held), EINVAL);
		REFUSE(uhmm_migrate_device_range(mm, src, old_pfn, 1), EINVAL);
		{
			struct uhmm_mm_stats ms;

			memset(&ms, 0x3c, sizeof(ms));
			REFUSE(uhmm_mm_stats(mm, &ms), EINVAL);
			CHECK(((unsigned char *)&ms)[0] == 0x3c, "stats untouched");
		}
		/* Pure queries still answer: they only read /proc/self (decision). */
		CHECK_EQ(uhmm_page_state(mm, (uintptr_t)p, 4, st), 0);
		CHECK(st[0] & UHMM_PS_PRESENT, "page state after teardown");
	});

	/* A new context: the old notifier, pool and pfns name nothing in it. */
	mm = test_mm();
	GUARDED("new context", p, 4, {
		r.notifier_seq = uhmm_interval_read_begin(&n.mni);
		REFUSE(uhmm_range_fault(&r), EINVAL);		/* released by teardown */
		uhmm_interval_notifier_remove(&n.mni);		/* no-op */
		REFUSE(uhmm_devmem_remove(&d->pgmap), EINVAL);	/* removed before */
		REFUSE_NULL(uhmm_devmem_page(&d->pgmap, 0));
		REFUSE_NULL(uhmm_pfn_to_page(mm, old_pfn));
		REFUSE(uhmm_migrate_device_range(mm, src, old_pfn, 1), EINVAL);
	});
	CHECK_EQ(check_pattern(p, 4, 5), -1);
	/* The pool structure itself can be added again (it was detached). */
	CHECK_EQ(uhmm_devmem_add(mm, &d->pgmap), 0);
	tdev_destroy(d);
	munmap(p, 4 * page_size);
	ok("stale context: a torn-down context's handles are refused, or are no-ops");
}

/* ---- mm.h ---------------------------------------------------------------------- */

static void test_context_calls(void)
{
	struct uhmm_mm_stats ms;
	int not_a_context;

	REFUSE(uhmm_sysinfo(NULL), EINVAL);
	REFUSE(uhmm_mm_get(NULL), EINVAL);
	memset(&ms, 0x3c, sizeof(ms));
	REFUSE(uhmm_mm_stats(NULL, &ms), EINVAL);
	REFUSE(uhmm_mm_stats(mm, NULL), EINVAL);
	REFUSE(uhmm_mm_stats((struct uhmm_mm *)&not_a_context, &ms), EINVAL);
	CHECK(((unsigned char *)&ms)[sizeof(ms) - 1] == 0x3c, "stats untouched");
	mark();
	CHECK(strcmp(uhmm_feature_name(0), "unknown") == 0, "feature 0");
	reason_given("uhmm_feature_name(0)");
	mark();
	CHECK(strcmp(uhmm_feature_name(UHMM_FEAT_MOVE | UHMM_FEAT_PAGEMAP_SCAN), "unknown") == 0,
	      "two features");
	reason_given("uhmm_feature_name(two bits)");
	mark();
	CHECK(strcmp(uhmm_feature_name(1u << 31), "unknown") == 0, "feature 1 << 31");
	reason_given("uhmm_feature_name(1u << 31)");
	uhmm_mm_put(NULL);		/* ignored */
	/* uhmm_set_error() never refuses; an empty format gets a placeholder. */
	CHECK_EQ(uhmm_set_error(EIO, "%s", ""), -EIO);
	CHECK(uhmm_last_error()[0], "a placeholder reason");
	ok("context calls: NULL arguments and unknown features refused with a reason");
}

/* ---- notifier.h ---------------------------------------------------------------- */

static void test_notifier_calls(void)
{
	static const struct uhmm_interval_notifier_ops no_cb = { .invalidate = NULL };
	char *p = map_anon(4 * page_size, PROT_READ | PROT_WRITE);
	struct ntf n = { 0 }, n2;
	struct uhmm_interval_notifier saved;
	int not_a_context;

	fill_pattern(p, 4, 9);
	GUARDED("notifier insert", p, 4, {
		REFUSE(uhmm_interval_notifier_insert(NULL, mm, (uintptr_t)p, page_size,
						     &ntf_ops), EINVAL);
		REFUSE(uhmm_interval_notifier_insert(&n.mni, NULL, (uintptr_t)p, page_size,
						     &ntf_ops), EINVAL);
		REFUSE(uhmm_interval_notifier_insert(&n.mni, mm, (uintptr_t)p, page_size, NULL),
		       EINVAL);
		REFUSE(uhmm_interval_notifier_insert(&n.mni, mm, (uintptr_t)p, page_size, &no_cb),
		       EINVAL);
		REFUSE(uhmm_interval_notifier_insert(&n.mni, (struct uhmm_mm *)&not_a_context,
						     (uintptr_t)p, page_size, &ntf_ops), EINVAL);
		REFUSE(uhmm_interval_notifier_insert(&n.mni, mm, (uintptr_t)p, 0, &ntf_ops),
		       EINVAL);
		REFUSE(uhmm_interval_notifier_insert(&n.mni, mm, UINTPTR_MAX - page_size + 1,
						     2 * page_size, &ntf_ops), EINVAL);
		CHECK(zeroed(n.mni.uhmm_reserved, sizeof(n.mni.uhmm_reserved)) && n.mni.start == 0,
		      "refused notifier untouched");
	});

	/* Already inserted: refused, and its interval is unchanged. */
	ntf_insert(&n, p, 2);
	saved = n.mni;
	REFUSE(uhmm_interval_notifier_insert(&n.mni, mm, (uintptr_t)pg(p, 2), page_size,
					     &ntf_ops), EINVAL);
	CHECK(memcmp(&saved, &n.mni, sizeof(saved)) == 0, "inserted notifier untouched");

	/* Any alignment is widened to pages (decision: as documented). */
	memset(&n2, 0, sizeof(n2));
	CHECK_EQ(uhmm_interval_notifier_insert(&n2.mni, mm, (uintptr_t)p + 5, 10, &ntf_ops), 0);
	CHECK(n2.mni.start == (uintptr_t)p && n2.mni.end == (uintptr_t)pg(p, 1),
	      "unaligned interval widened to its page");
	uhmm_interval_notifier_remove(&n2.mni);

	/* remove: NULL says why; a second remove, or of a never-inserted one, is a no-op. */
	REFUSE_VOID(uhmm_interval_notifier_remove(NULL));
	uhmm_interval_notifier_remove(&n.mni);
	uhmm_interval_notifier_remove(&n.mni);
	memset(&n2, 0, sizeof(n2));
	uhmm_interval_notifier_remove(&n2.mni);
	atomic_store(&n.calls, 0);
	CHECK_EQ(mprotect(p, page_size, PROT_READ), 0);
	CHECK_EQ(atomic_load(&n.calls), 0);	/* removed: told nothing */
	CHECK_EQ(mprotect(p, page_size, PROT_READ | PROT_WRITE), 0);

	/* Sequence helpers with no notifier. */
	mark();
	CHECK_EQ(uhmm_interval_read_begin(NULL), 0);
	reason_given("uhmm_interval_read_begin(NULL)");
	mark();
	CHECK(uhmm_interval_read_retry(NULL, 0), "read_retry(NULL) says retry");
	reason_given("uhmm_interval_read_retry(NULL)");
	mark();
	CHECK(uhmm_interval_check_retry(NULL, 0), "check_retry(NULL) says retry");
	reason_given("uhmm_interval_check_retry(NULL)");
	REFUSE_VOID(uhmm_interval_set_seq(NULL, 1));
	CHECK_EQ(check_pattern(p, 4, 9), -1);
	munmap(p, 4 * page_size);
	ok("notifiers: NULL, empty, wrapping, double insert refused; double remove a no-op");
}

/* ---- pagestate.h ---------------------------------------------------------------- */

static void test_pagestate_calls(void)
{
	char *p = map_anon(2 * page_size, PROT_READ | PROT_WRITE);
	uint32_t out[2] = { 0xdeadbeef, 0xdeadbeef };
	struct uhmm_mapping map = { 1, 2, 3 };
	int not_a_context;

	fill_pattern(p, 2, 3);
	GUARDED("page state", p, 2, {
		REFUSE(uhmm_page_state(NULL, (uintptr_t)p, 2, out), EINVAL);
		REFUSE(uhmm_page_state(mm, (uintptr_t)p, 2, NULL), EINVAL);
		REFUSE(uhmm_page_state((struct uhmm_mm *)&not_a_context, (uintptr_t)p, 2, out),
		       EINVAL);
		REFUSE(uhmm_page_state(mm, (uintptr_t)p + 1, 2, out), EINVAL);
		REFUSE(uhmm_page_state(mm, (uintptr_t)p, 0, out), EINVAL);
		REFUSE(uhmm_page_state(mm, UINTPTR_MAX - page_size + 1, 2, out), EINVAL);
		REFUSE(uhmm_page_state(mm, (uintptr_t)p, SIZE_MAX / 2, out), EINVAL);
		CHECK(out[0] == 0xdeadbeef && out[1] == 0xdeadbeef, "out untouched");
		REFUSE(uhmm_find_mapping(NULL, (uintptr_t)p, &map), EINVAL);
		REFUSE(uhmm_find_mapping(mm, (uintptr_t)p, NULL), EINVAL);
		REFUSE(uhmm_find_mapping((struct uhmm_mm *)&not_a_context, (uintptr_t)p, &map),
		       EINVAL);
		REFUSE(uhmm_find_mapping(mm, UINTPTR_MAX, &map), ENOENT);
		CHECK(map.start == 1 && map.end == 2 && map.flags == 3, "mapping untouched");
	});
	munmap(p, 2 * page_size);
	ok("page state: NULL, unaligned, empty, wrapping refused; no mapping: ENOENT");
}

/* ---- range.h ---------------------------------------------------------------------- */

static void test_range_calls(void)
{
	char *r = make_region(11);
	struct ntf n, gone, never = { 0 };
	uint64_t pfns[R_PAGES];
	struct uhmm_range rr;

	ntf_insert(&n, r, R_PAGES);
	GUARDED("range fault arguments", r, R_PAGES, {
		rr = range_of(&n, r, 2, pfns, UHMM_PFN_REQ_FAULT);
		REFUSE(uhmm_range_fault(NULL), EINVAL);
		rr.notifier = NULL;
		REFUSE(uhmm_range_fault(&rr), EINVAL);
		rr = range_of(&n, r, 2, NULL, UHMM_PFN_REQ_FAULT);
		REFUSE(uhmm_range_fault(&rr), EINVAL);
		rr = range_of(&never, r, 2, pfns, UHMM_PFN_REQ_FAULT);
		REFUSE(uhmm_range_fault(&rr), EINVAL);		/* never inserted */
		rr = range_of(&n, r, 2, pfns, UHMM_PFN_REQ_FAULT);
		rr.start += 1;
		REFUSE(uhmm_range_fault(&rr), EINVAL);		/* unaligned start */
		rr = range_of(&n, r, 2, pfns, UHMM_PFN_REQ_FAULT);
		rr.end -= 1;
		REFUSE(uhmm_range_fault(&rr), EINVAL);		/* unaligned end */
		rr = range_of(&n, r, 2, pfns, UHMM_PFN_REQ_FAULT);
		rr.end = rr.start;
		REFUSE(uhmm_range_fault(&rr), EINVAL);		/* empty */
		rr.end = rr.start - page_size;
		REFUSE(uhmm_range_fault(&rr), EINVAL);		/* backwards */
		rr = range_of(&n, r, 2, pfns, UHMM_PFN_REQ_FAULT);
		rr.start -= page_size;
		REFUSE(uhmm_range_fault(&rr), EINVAL);		/* starts before the notifier */
		rr = range_of(&n, pg(r, R_PAGES - 1), 2, pfns, UHMM_PFN_REQ_FAULT);
		REFUSE(uhmm_range_fault(&rr), EINVAL);		/* ends after it */
	});

	/* A removed notifier (use after remove is detected). */
	ntf_insert(&gone, r, R_PAGES);
	uhmm_interval_notifier_remove(&gone.mni);
	GUARDED("removed notifier", r, R_PAGES, {
		rr = range_of(&gone, r, 2, pfns, UHMM_PFN_REQ_FAULT);
		REFUSE(uhmm_range_fault(&rr), EINVAL);
	});

	/* An invalidation since read_begin. */
	rr = range_of(&n, pg(r, R_UNTOUCHED), 2, pfns, UHMM_PFN_REQ_FAULT);
	CHECK_EQ(mprotect(pg(r, 3), page_size, PROT_READ), 0);
	CHECK_EQ(mprotect(pg(r, 3), page_size, PROT_READ | PROT_WRITE), 0);
	GUARDED("stale sequence", r, R_PAGES, REFUSE(uhmm_range_fault(&rr), EBUSY));

	/* Requests that cannot be satisfied: nothing is faulted in. */
	GUARDED("unsatisfiable requests", r, R_PAGES, {
		rr = range_of(&n, pg(r, R_HOLE), 2, pfns, UHMM_PFN_REQ_FAULT);
		REFUSE(uhmm_range_fault(&rr), EFAULT);		/* unmapped */
		CHECK(pfns[0] == UHMM_PFN_ERROR && pfns[1] == UHMM_PFN_ERROR, "hole: ERROR");
		rr = range_of(&n, pg(r, R_UNTOUCHED), 4, pfns, UHMM_PFN_REQ_FAULT);
		REFUSE(uhmm_range_fault(&rr), EFAULT);		/* mapped, then a hole */
		CHECK(pfns[0] == 0 && pfns[1] == 0 && pfns[2] == UHMM_PFN_ERROR,
		      "not-present pages reported, not faulted");
		rr = range_of(&n, pg(r, R_NONE), 1, pfns, UHMM_PFN_REQ_FAULT);
		REFUSE(uhmm_range_fault(&rr), EFAULT);		/* PROT_NONE */
		rr = range_of(&n, pg(r, R_RO), 1, pfns, UHMM_PFN_REQ_FAULT | UHMM_PFN_REQ_WRITE);
		REFUSE(uhmm_range_fault(&rr), EPERM);		/* write to read-only */
		rr = range_of(&n, pg(r, R_UNTOUCHED), 6, pfns,
			      UHMM_PFN_REQ_FAULT | UHMM_PFN_REQ_WRITE);
		REFUSE(uhmm_range_fault(&rr), EFAULT);		/* across four mappings */
	});

	/* Bits that are not requests are ignored, as the kernel does (decision). */
	GUARDED("junk request bits", r, R_PAGES, {
		rr = range_of(&n, pg(r, R_UNTOUCHED), 2, pfns,
			      UHMM_PFN_ERROR | UHMM_PFN_ZERO | UHMM_PFN_REQ_WRITE);
		CHECK_EQ(uhmm_range_fault(&rr), 0);
		CHECK(pfns[0] == 0 && pfns[1] == 0, "snapshot only");
	});
	mark();
	CHECK_EQ(uhmm_pfn_to_addr(0), 0);
	reason_given("uhmm_pfn_to_addr(0)");
	mark();
	CHECK_EQ(uhmm_pfn_to_addr(UHMM_PFN_VALID | UHMM_PFN_DEVICE_PRIVATE | 5), 0);
	reason_given("uhmm_pfn_to_addr(device pfn)");
	mark();
	CHECK_EQ(uhmm_pfn_to_addr(UHMM_PFN_ERROR), 0);
	reason_given("uhmm_pfn_to_addr(ERROR)");
	uhmm_interval_notifier_remove(&n.mni);
	CHECK_EQ(check_pattern(r, 4, 11), -1);
	free_region(r);
	ok("range fault: bad arguments EINVAL, stale EBUSY, hole/PROT_NONE EFAULT, "
	   "read-only EPERM, nothing faulted");
}

/* ---- devmem.h ---------------------------------------------------------------------- */

static void test_devmem_calls(void)
{
	static const struct uhmm_devmem_ops no_free = { .migrate_to_ram = tdev_migrate_to_ram };
	static const struct uhmm_devmem_ops no_to_ram = { .page_free = tdev_page_free };
	static struct uhmm_devmem many[UHMM_MAX_POOLS_FOR_TEST];
	struct tdev *pd = tdev_create(mm, 4, 0);
	struct uhmm_devmem g, saved;
	struct uhmm_page *page;
	int tok, not_a_context;
	size_t added = 0;
	int ret;

#define POOL() ((struct uhmm_devmem){ .ops = &tdev_ops, .owner = &tok, .nr_pages = 1 })
#define ADD_REFUSED(mm_, err, ...)                                             \
	do {                                                                   \
		g = POOL();                                                    \
		__VA_ARGS__;                                                   \
		saved = g;                                                     \
		REFUSE(uhmm_devmem_add(mm_, &g), err);                         \
		CHECK(memcmp(&g, &saved, sizeof(g)) == 0, "refused pool untouched"); \
	} while (0)

	REFUSE(uhmm_devmem_add(mm, NULL), EINVAL);
	ADD_REFUSED(NULL, EINVAL);
	ADD_REFUSED((struct uhmm_mm *)&not_a_context, EINVAL);
	ADD_REFUSED(mm, EINVAL, g.ops = NULL);
	ADD_REFUSED(mm, EINVAL, g.ops = &no_free);
	ADD_REFUSED(mm, EINVAL, g.ops = &no_to_ram);
	ADD_REFUSED(mm, EINVAL, g.owner = NULL);
	ADD_REFUSED(mm, EINVAL, g.nr_pages = 0);
	ADD_REFUSED(mm, EINVAL, g.nr_pages = (size_t)1 << 32);
	ADD_REFUSED(mm, EINVAL, g.fault_around = 3);
	REFUSE(uhmm_devmem_add(mm, &pd->pgmap), EINVAL);	/* already added */

	/* Every pool id taken: -ENOSPC, and the refused pool is untouched. */
	for (;;) {
		many[added] = POOL();
		ret = uhmm_devmem_add(mm, &many[added]);
		if (ret)
			break;
		CHECK(++added < UHMM_MAX_POOLS_FOR_TEST, "more pools than pool ids");
	}
	CHECK_EQ(ret, -ENOSPC);
	CHECK(added > 200, "only %zu pools added before ENOSPC", added);
	ADD_REFUSED(mm, ENOSPC);
	for (size_t i = 0; i < added; i++)
		CHECK_EQ(uhmm_devmem_remove(&many[i]), 0);

	REFUSE(uhmm_devmem_remove(NULL), EINVAL);
	g = POOL();
	REFUSE(uhmm_devmem_remove(&g), EINVAL);			/* never added */
	REFUSE_NULL(uhmm_devmem_page(NULL, 0));
	REFUSE_NULL(uhmm_devmem_page(&g, 0));			/* not added */
	REFUSE_NULL(uhmm_devmem_page(&pd->pgmap, 4));		/* beyond the pool */

	page = uhmm_devmem_page(&pd->pgmap, 0);
	REFUSE_NULL(uhmm_pfn_to_page(NULL, uhmm_page_to_pfn(page)));
	REFUSE_NULL(uhmm_pfn_to_page((struct uhmm_mm *)&not_a_context, uhmm_page_to_pfn(page)));
	REFUSE_NULL(uhmm_pfn_to_page(mm, (uintptr_t)&tok >> pshift));	/* a system pfn */
	REFUSE_NULL(uhmm_pfn_to_page(mm, UHMM_DEVICE_PFN_BASE | 7));	/* pool id 0 */
	REFUSE_NULL(uhmm_pfn_to_page(mm, UHMM_DEVICE_PFN_BASE | ((uint64_t)250 << 32)));
	REFUSE_NULL(uhmm_pfn_to_page(mm, uhmm_page_to_pfn(page) + 4));	/* beyond the pool */

	/* Page descriptors: NULL, and operations a page's state forbids. */
	REFUSE_VOID(uhmm_page_init(NULL));
	REFUSE_VOID(uhmm_page_get(NULL));
	REFUSE_VOID(uhmm_page_put(NULL));
	REFUSE_VOID(uhmm_page_unlock(NULL));
	mark();
	CHECK(!uhmm_page_trylock(NULL), "trylock(NULL) fails");
	reason_given("uhmm_page_trylock(NULL)");

	page = uhmm_devmem_page(&pd->pgmap, 3);			/* free: count 0, unlocked */
	CHECK(tdev_used(pd) == 0 && uhmm_page_refcount(page) == 0, "a free page");
	REFUSE_VOID(uhmm_page_get(page));
	CHECK_EQ(uhmm_page_refcount(page), 0);
	REFUSE_VOID(uhmm_page_put(page));			/* underflow */
	CHECK_EQ(uhmm_page_refcount(page), 0);
	CHECK_EQ(atomic_load(&pd->frees), 0);			/* page_free not called */
	REFUSE_VOID(uhmm_page_unlock(page));			/* not locked */
	CHECK(uhmm_page_trylock(page), "still unlocked");
	uhmm_page_unlock(page);
	page = tdev_alloc(pd);					/* in use: count 1, locked */
	CHECK(page && uhmm_page_refcount(page) == 1, "allocated");
	REFUSE_VOID(uhmm_page_init(page));
	CHECK_EQ(uhmm_page_refcount(page), 1);
	CHECK(!uhmm_page_trylock(page), "still locked");
	uhmm_page_unlock(page);
	uhmm_page_put(page);
	CHECK_EQ(atomic_load(&pd->frees), 1);
	CHECK_EQ(tdev_used(pd), 0);

	/* A page the driver cannot bring back: remove refuses, the pool stays. */
	{
		char *p = map_anon(2 * page_size, PROT_READ | PROT_WRITE);
		uint32_t st;

		fill_pattern(p, 2, 21);
		CHECK_EQ(tdev_to_dev(pd, (uintptr_t)p, (uintptr_t)pg(p, 1), NULL), 1);
		atomic_store(&pd->fail_copy_after, 0);
		GUARDED("remove refused", p, 2, REFUSE(uhmm_devmem_remove(&pd->pgmap), EBUSY));
		CHECK_EQ(uhmm_page_state(mm, (uintptr_t)p, 1, &st), 0);
		CHECK(st & UHMM_PS_DEVICE_PRIVATE, "still on the device");
		atomic_store(&pd->fail_copy_after, -1);
		CHECK_EQ(check_pattern(p, 2, 21), -1);		/* comes back on touch */
		munmap(p, 2 * page_size);
	}
	page = uhmm_devmem_page(&pd->pgmap, 0);
	{
		uint64_t pfn = uhmm_page_to_pfn(page);

		tdev_destroy(pd);
		REFUSE_NULL(uhmm_pfn_to_page(mm, pfn));		/* pool removed */
	}
	ok("device memory: bad pools EINVAL, full ENOSPC, unremovable EBUSY, page misuse "
	   "refused and left unchanged");
#undef POOL
#undef ADD_REFUSED
}

/* ---- migrate.h ---------------------------------------------------------------------- */

static void test_migrate_calls(char *huge)
{
	struct tdev *d = tdev_create(mm, 8, 0);
	char *a = map_anon(4 * page_size, PROT_READ | PROT_WRITE);
	/* The other mappings first: a later one could land in the region's hole. */
	char *two = make_two_mappings(), *sh = map_shared_anon(2), *fb = map_private_file(2);
	char *r = make_region(13);
	uint64_t src[8], dst[8];
	struct uhmm_migrate_vma m, t;
	struct uhmm_page fake = { 0 };

	fill_pattern(a, 4, 17);
	t = (struct uhmm_migrate_vma){
		.mm = mm, .start = (uintptr_t)a, .end = (uintptr_t)pg(a, 4), .src = src,
		.dst = dst, .pgmap_owner = &d->owner_token,
		.flags = UHMM_MIGRATE_VMA_SELECT_SYSTEM,
	};
#define SETUP_REFUSED(err, ...)                                                \
	do {                                                                   \
		m = t;                                                         \
		__VA_ARGS__;                                                   \
		memset(src, 0xa5, sizeof(src));                                \
		memset(dst, 0xa5, sizeof(dst));                                \
		REFUSE(uhmm_migrate_vma_setup(&m), err);                       \
		CHECK(src[0] == 0xa5a5a5a5a5a5a5a5ull && dst[7] == 0xa5a5a5a5a5a5a5a5ull, \
		      "src/dst untouched");                                    \
		CHECK(zeroed(m.uhmm_reserved, sizeof(m.uhmm_reserved)),         \
		      "no migration state");                                   \
	} while (0)

	GUARDED("migrate setup arguments", a, 4, {
		REFUSE(uhmm_migrate_vma_setup(NULL), EINVAL);
		SETUP_REFUSED(EINVAL, m.mm = NULL);
		SETUP_REFUSED(EINVAL, m.src = NULL);
		SETUP_REFUSED(EINVAL, m.dst = NULL);
		SETUP_REFUSED(EINVAL, m.start += 1);
		SETUP_REFUSED(EINVAL, m.end -= 1);
		SETUP_REFUSED(EINVAL, m.end = m.start);
		SETUP_REFUSED(EINVAL, m.end = m.start - page_size);
		SETUP_REFUSED(EINVAL, m.flags = 0);
		SETUP_REFUSED(EINVAL, m.flags |= 1u << 5);
		memset(fake.uhmm_reserved, 0x5a, sizeof(fake.uhmm_reserved));
		SETUP_REFUSED(EINVAL, m.fault_page = &fake);
	});
	GUARDED("migrate setup mappings", r, R_PAGES, {
		SETUP_REFUSED(EINVAL, m.start = (uintptr_t)pg(r, R_HOLE),
			      m.end = (uintptr_t)pg(r, R_HOLE + 2));
		SETUP_REFUSED(EINVAL, m.start = (uintptr_t)pg(r, 2),
			      m.end = (uintptr_t)pg(r, R_HOLE + 1));
		SETUP_REFUSED(EINVAL, m.start = (uintptr_t)pg(r, R_NONE),
			      m.end = (uintptr_t)pg(r, R_NONE + 1));
	});
	GUARDED("migrate across two mappings", two, 2,
		SETUP_REFUSED(EINVAL, m.start = (uintptr_t)two, m.end = (uintptr_t)pg(two, 2)));
	if (huge) {
		GUARDED("migrate hugetlb", huge, 1,
			SETUP_REFUSED(EINVAL, m.start = (uintptr_t)huge,
				      m.end = (uintptr_t)pg(huge, 1)));
	}

	/* Shared and file-backed memory: nothing is selected (decision, as the kernel). */
	GUARDED("migrate shared", sh, 2, {
		m = t;
		m.start = (uintptr_t)sh;
		m.end = (uintptr_t)pg(sh, 2);
		CHECK_EQ(uhmm_migrate_vma_setup(&m), 0);
		CHECK_EQ(m.cpages, 0);
		uhmm_migrate_vma_pages(&m);
		uhmm_migrate_vma_finalize(&m);
	});
	GUARDED("migrate private file", fb, 2, {
		m = t;
		m.start = (uintptr_t)fb;
		m.end = (uintptr_t)pg(fb, 2);
		CHECK_EQ(uhmm_migrate_vma_setup(&m), 0);
		CHECK_EQ(m.cpages, 0);
		uhmm_migrate_vma_pages(&m);
		uhmm_migrate_vma_finalize(&m);
	});

	/* Helpers of a running migration, and a driver that skips a step. */
	REFUSE_NULL(uhmm_migrate_alloc_sys(NULL, 0));
	REFUSE_NULL(uhmm_migrate_pfn_addr(NULL, 0));
	m = t;
	REFUSE_NULL(uhmm_migrate_alloc_sys(&m, 0));		/* before setup */
	REFUSE_NULL(uhmm_migrate_pfn_addr(&m, 0));
	REFUSE_VOID(uhmm_migrate_vma_pages(NULL));
	REFUSE_VOID(uhmm_migrate_vma_finalize(NULL));
	GUARDED("finalize without pages, bad dst", a, 4, {
		m = t;
		CHECK_EQ(uhmm_migrate_vma_setup(&m), 0);
		CHECK_EQ(m.cpages, 4);
		REFUSE_NULL(uhmm_migrate_alloc_sys(&m, 4));	/* beyond npages */
		REFUSE_NULL(uhmm_migrate_alloc_sys(&m, 0));	/* a system page */
		REFUSE_NULL(uhmm_migrate_pfn_addr(&m, 4));
		/* A pfn of no pool, and a system pfn where a device page belongs. */
		dst[0] = uhmm_migrate_pfn(UHMM_DEVICE_PFN_BASE | ((uint64_t)200 << 32));
		dst[1] = uhmm_migrate_pfn((uintptr_t)a >> pshift);
		dst[2] = UHMM_MIGRATE_PFN_MIGRATE;		/* not VALID */
		uhmm_migrate_vma_finalize(&m);			/* pages() skipped */
		REFUSE_NULL(uhmm_migrate_pfn_addr(&m, 0));	/* after finalize */
		REFUSE_NULL(uhmm_migrate_alloc_sys(&m, 0));
		REFUSE_VOID(uhmm_migrate_vma_pages(&m));
		REFUSE_VOID(uhmm_migrate_vma_finalize(&m));	/* a second finalize */
	});
	CHECK_EQ(check_pattern(a, 4, 17), -1);

	/* Device to system: alloc_sys only for a selected device entry. */
	CHECK_EQ(tdev_to_dev(d, (uintptr_t)a, (uintptr_t)pg(a, 1), NULL), 1);
	GUARDED("device-private migration", a, 4, {
		m = t;
		m.flags = UHMM_MIGRATE_VMA_SELECT_DEVICE_PRIVATE;
		m.end = (uintptr_t)pg(a, 2);
		CHECK_EQ(uhmm_migrate_vma_setup(&m), 0);
		CHECK_EQ(m.cpages, 1);
		REFUSE_NULL(uhmm_migrate_alloc_sys(&m, 1));	/* not selected */
		uhmm_migrate_vma_pages(&m);
		uhmm_migrate_vma_finalize(&m);			/* no dst: stays on the device */
	});
	CHECK_EQ(check_pattern(a, 4, 17), -1);

	tdev_destroy(d);
	munmap(a, 4 * page_size);
	free_region(r);
	munmap(two, 2 * page_size);
	munmap(sh, 2 * page_size);
	munmap(fb, 2 * page_size);
	ok("migrate_vma: bad arguments and mappings EINVAL, shared/file select nothing, "
	   "misused helpers refused, a skipped pages() installs nothing bad");
#undef SETUP_REFUSED
}

static void test_migrate_device_calls(void)
{
	struct tdev *d = tdev_create(mm, 2, 0);
	char *a = map_anon(2 * page_size, PROT_READ | PROT_WRITE);
	uint64_t src[4], list[2], pfn0;
	struct uhmm_page *page;

	fill_pattern(a, 2, 19);
	CHECK_EQ(tdev_to_dev(d, (uintptr_t)a, (uintptr_t)pg(a, 1), NULL), 1);
	page = uhmm_pfn_to_page(mm, uhmm_page_to_pfn(uhmm_devmem_page(&d->pgmap, 0)));
	CHECK(page && uhmm_page_refcount(page) == 1, "the resident page is index 0");
	pfn0 = uhmm_page_to_pfn(page);
	memset(src, 0x5a, sizeof(src));
	GUARDED("device-range migration", a, 2, {
		REFUSE(uhmm_migrate_device_range(NULL, src, pfn0, 1), EINVAL);
		REFUSE(uhmm_migrate_device_range(mm, NULL, pfn0, 1), EINVAL);
		REFUSE(uhmm_migrate_device_range(mm, src, pfn0, 0), EINVAL);
		REFUSE(uhmm_migrate_device_range(mm, src, (uintptr_t)a >> pshift, 1), EINVAL);
		/* Runs past the pool: nothing is claimed, not even the resident page. */
		REFUSE(uhmm_migrate_device_range(mm, src, pfn0, 3), EINVAL);
		CHECK(src[0] == 0x5a5a5a5a5a5a5a5aull, "src untouched");
		CHECK(uhmm_page_trylock(page), "the resident page was left unlocked");
		uhmm_page_unlock(page);
		list[0] = pfn0;
		list[1] = UHMM_DEVICE_PFN_BASE | ((uint64_t)250 << 32);
		REFUSE(uhmm_migrate_device_pfns(mm, list, 2), EINVAL);
		CHECK(list[0] == pfn0, "pfn list untouched");
		REFUSE(uhmm_migrate_device_pfns(NULL, list, 1), EINVAL);
		REFUSE(uhmm_migrate_device_pfns(mm, NULL, 1), EINVAL);
		REFUSE(uhmm_migrate_device_pfns(mm, list, 0), EINVAL);
		REFUSE_VOID(uhmm_migrate_device_pages(NULL, src, src, 1));
		REFUSE_VOID(uhmm_migrate_device_pages(mm, NULL, src, 1));
		REFUSE_VOID(uhmm_migrate_device_finalize(NULL, src, src, 1));
		REFUSE_VOID(uhmm_migrate_device_finalize(mm, src, NULL, 1));
	});
	CHECK_EQ(check_pattern(a, 2, 19), -1);
	tdev_destroy(d);
	munmap(a, 2 * page_size);
	ok("migrate_device: bad arguments EINVAL; a bad pfn claims nothing");
}

/* ---- exclusive.h ---------------------------------------------------------------------- */

static void test_exclusive_calls(char *huge)
{
	/* The other mappings first: a later one could land in the region's hole. */
	char *two = make_two_mappings(), *sh = map_shared_anon(2), *fb = map_private_file(2);
	char *r = make_region(23);
	void *held[R_PAGES];
	int owner;

	GUARDED("make exclusive", r, R_PAGES, {
		REFUSE(uhmm_make_exclusive(NULL, (uintptr_t)r, 1, &owner, held), EINVAL);
		REFUSE(uhmm_make_exclusive(mm, (uintptr_t)r, 1, NULL, held), EINVAL);
		REFUSE(uhmm_make_exclusive(mm, (uintptr_t)r, 1, &owner, NULL), EINVAL);
		REFUSE(uhmm_make_exclusive(mm, (uintptr_t)r + 1, 1, &owner, held), EINVAL);
		REFUSE(uhmm_make_exclusive(mm, (uintptr_t)r, 0, &owner, held), EINVAL);
		REFUSE(uhmm_make_exclusive(mm, UINTPTR_MAX - page_size + 1, 2, &owner, held),
		       EINVAL);
		REFUSE(uhmm_make_exclusive(mm, (uintptr_t)pg(r, R_HOLE), 2, &owner, held),
		       EINVAL);
		REFUSE(uhmm_make_exclusive(mm, (uintptr_t)pg(r, 3), 4, &owner, held), EINVAL);
		REFUSE(uhmm_make_exclusive(mm, (uintptr_t)pg(r, R_NONE), 1, &owner, held),
		       EINVAL);
		REFUSE(uhmm_make_exclusive(mm, (uintptr_t)pg(r, R_RO), 1, &owner, held), EPERM);
	});
	GUARDED("exclusive across two mappings", two, 2,
		REFUSE(uhmm_make_exclusive(mm, (uintptr_t)two, 2, &owner, held), EINVAL));
	if (huge) {
		GUARDED("exclusive hugetlb", huge, 1,
			REFUSE(uhmm_make_exclusive(mm, (uintptr_t)huge, 1, &owner, held), EINVAL));
	}
	/* Not private anonymous: nothing taken (decision, documented). */
	GUARDED("exclusive shared", sh, 2, {
		held[0] = held[1] = (void *)1;
		CHECK_EQ(uhmm_make_exclusive(mm, (uintptr_t)sh, 2, &owner, held), 0);
		CHECK(!held[0] && !held[1], "nothing held");
	});
	GUARDED("exclusive private file", fb, 2, {
		CHECK_EQ(uhmm_make_exclusive(mm, (uintptr_t)fb, 2, &owner, held), 0);
		CHECK(!held[0] && !held[1], "nothing held");
	});
	REFUSE_NULL(uhmm_exclusive_held(NULL, (uintptr_t)r, &owner));
	CHECK_EQ(check_pattern(r, 4, 23), -1);
	free_region(r);
	munmap(two, 2 * page_size);
	munmap(sh, 2 * page_size);
	munmap(fb, 2 * page_size);
	ok("make exclusive: bad arguments and mappings EINVAL, read-only EPERM, "
	   "shared/file take nothing");
}

/* ---- inject.h ---------------------------------------------------------------------- */

static void test_inject_calls(void)
{
	uint32_t st;
	char *p = map_anon(page_size, PROT_READ | PROT_WRITE);

	REFUSE(uhmm_inject_set(UHMM_INJECT_COUNT, 0, 1, ENOMEM), EINVAL);
	REFUSE(uhmm_inject_set(UHMM_INJECT_MALLOC, 0, 1, 0), EINVAL);
	REFUSE(uhmm_inject_set(UHMM_INJECT_MALLOC, 0, 1, -ENOMEM), EINVAL);
	REFUSE(uhmm_inject_set(UHMM_INJECT_MALLOC, 0, 1, 4096), EINVAL);
	REFUSE(uhmm_inject_set(UHMM_INJECT_MALLOC, (unsigned long)LONG_MAX + 1, 1, ENOMEM),
	       EINVAL);
	REFUSE(uhmm_inject_set(UHMM_INJECT_MALLOC, 0, ULONG_MAX, ENOMEM), EINVAL);
	mark();
	CHECK_EQ(uhmm_inject_hits(UHMM_INJECT_COUNT), 0);
	reason_given("uhmm_inject_hits(unknown)");
	/* Nothing was armed: the library's allocations still work. */
	CHECK_EQ(uhmm_page_state(mm, (uintptr_t)p, 1, &st), 0);
	CHECK_EQ(uhmm_inject_hits(UHMM_INJECT_MALLOC), 0);
	munmap(p, page_size);
	ok("failure injection: unknown points and out-of-range values refused, nothing armed");
}

/* ---- simdev.h ---------------------------------------------------------------------- */

struct kargs {
	struct uhmm_simdev *dev;
	void *addr;
	int mode;		/* 0 load, 1 store, 2 nested launch */
	atomic_int nested_ret;
};

static void nop_kernel(struct uhmm_simdev_thread *t, size_t item, void *arg)
{
	(void)t, (void)item, (void)arg;
}

static void bad_kernel(struct uhmm_simdev_thread *t, size_t item, void *arg)
{
	struct kargs *k = arg;

	(void)item;
	if (k->mode == 0)
		(void)uhmm_simdev_load64(t, k->addr);
	else if (k->mode == 1)
		uhmm_simdev_store64(t, k->addr, 0x1234);
	else
		atomic_store(&k->nested_ret,
			     uhmm_simdev_launch(k->dev, 1, nop_kernel, NULL, NULL));
}

/* NULL device, unaligned, empty, wrapping and too long: @call uses D, A and N. */
#define RANGE_REFUSED(call)                                                    \
	do {                                                                   \
		struct uhmm_simdev *D = NULL;                                  \
		void *A = r;                                                   \
		size_t N = 1;                                                  \
		REFUSE(call, EINVAL);                                          \
		D = dev;                                                       \
		A = r + 1;                                                     \
		REFUSE(call, EINVAL);                                          \
		A = r;                                                         \
		N = 0;                                                         \
		REFUSE(call, EINVAL);                                          \
		A = (void *)(UINTPTR_MAX - page_size + 1);                     \
		N = 2;                                                         \
		REFUSE(call, EINVAL);                                          \
		A = r;                                                         \
		N = SIZE_MAX / 2;                                              \
		REFUSE(call, EINVAL);                                          \
	} while (0)

static void test_simdev_calls(char *huge)
{
	struct uhmm_simdev_config cfg = { .capacity_pages = 8, .threads = 2 };
	struct uhmm_simdev *dev, *out;
	/* The other mappings first: a later one could land in the region's hole. */
	char *two = make_two_mappings(), *sh = map_shared_anon(2), *fb = map_private_file(2);
	char *r = make_region(29);
	char *buf = malloc(R_PAGES * page_size);
	struct uhmm_simdev_stats st;
	struct uhmm_simdev_counters c;
	uint8_t prot[R_PAGES];
	struct kargs k = { 0 };
	int not_a_device;

	(void)not_a_device;
	CHECK(buf, "malloc");
	/* create */
	REFUSE(uhmm_simdev_create(&cfg, NULL), EINVAL);
#define CREATE_REFUSED(err, ...)                                               \
	do {                                                                   \
		struct uhmm_simdev_config c_ = cfg;                            \
		__VA_ARGS__;                                                   \
		out = (struct uhmm_simdev *)&c_;                               \
		REFUSE(uhmm_simdev_create(&c_, &out), err);                    \
		CHECK(out == NULL, "*out is NULL");                            \
	} while (0)
	CREATE_REFUSED(EINVAL, c_.policy = 9);
	CREATE_REFUSED(EINVAL, c_.migrate_window = 3);
	CREATE_REFUSED(EINVAL, c_.fault_around = 3);
	CREATE_REFUSED(EINVAL, c_.capacity_pages = (size_t)1 << 32);
	CREATE_REFUSED(EINVAL, c_.capacity_pages = SIZE_MAX / 2);
	CREATE_REFUSED(EINVAL, c_.capacity_pages = ((size_t)1 << 61) + 1);	/* sizes wrap */
	CHECK_EQ(uhmm_simdev_create(&cfg, &dev), 0);
	uhmm_simdev_destroy(NULL);	/* ignored */

	/* Arguments every range call checks. */
	GUARDED("simdev arguments", r, R_PAGES, {
		memset(buf, 0x77, R_PAGES * page_size);
		memset(prot, 0x77, sizeof(prot));
		RANGE_REFUSED(uhmm_simdev_read(D, A, N, buf, &st));
		RANGE_REFUSED(uhmm_simdev_write(D, A, N, buf, &st));
		RANGE_REFUSED(uhmm_simdev_migrate_to_dev(D, A, N, &st));
		RANGE_REFUSED(uhmm_simdev_migrate_to_sys(D, A, N, &st));
		RANGE_REFUSED(uhmm_simdev_snapshot(D, A, N, prot, &st));
		RANGE_REFUSED(uhmm_simdev_exclusive(D, A, N, &st));
		RANGE_REFUSED(uhmm_simdev_check_exclusive(D, A, N));
		REFUSE(uhmm_simdev_read(dev, r, 1, NULL, &st), EINVAL);
		REFUSE(uhmm_simdev_write(dev, r, 1, NULL, &st), EINVAL);
		REFUSE(uhmm_simdev_snapshot(dev, r, 1, NULL, &st), EINVAL);
		for (size_t i = 0; i < R_PAGES * page_size; i++)
			CHECK(buf[i] == 0x77, "output buffer untouched at %zu", i);
		for (size_t i = 0; i < R_PAGES; i++)
			CHECK(prot[i] == 0x77, "snapshot output untouched at %zu", i);
	});

	/* Device accesses the CPU mappings do not allow. */
	GUARDED("simdev accesses", r, R_PAGES, {
		memset(buf, 0x77, R_PAGES * page_size);
		REFUSE(uhmm_simdev_read(dev, pg(r, R_HOLE), 1, buf, &st), EFAULT);
		REFUSE(uhmm_simdev_read(dev, pg(r, 2), 6, buf, &st), EFAULT);
		REFUSE(uhmm_simdev_read(dev, pg(r, R_NONE), 1, buf, &st), EFAULT);
		for (size_t i = 0; i < R_PAGES * page_size; i++)
			CHECK(buf[i] == 0x77, "nothing copied out (byte %zu)", i);
		memset(buf, 0x66, R_PAGES * page_size);
		REFUSE(uhmm_simdev_write(dev, pg(r, R_RO), 1, buf, &st), EPERM);
		REFUSE(uhmm_simdev_write(dev, pg(r, R_NONE), 1, buf, &st), EFAULT);
		REFUSE(uhmm_simdev_write(dev, pg(r, R_HOLE), 1, buf, &st), EFAULT);
		REFUSE(uhmm_simdev_write(dev, pg(r, 5), 2, buf, &st), EFAULT);	/* into a hole */
	});

	/* Migration of a range without a usable mapping at its start: nothing moves. */
	GUARDED("simdev migration", r, R_PAGES, {
		REFUSE(uhmm_simdev_migrate_to_dev(dev, pg(r, R_HOLE), 2, &st), EINVAL);
		CHECK_EQ(st.cpages, 0);
		REFUSE(uhmm_simdev_migrate_to_dev(dev, pg(r, R_NONE), 1, &st), EINVAL);
		REFUSE(uhmm_simdev_migrate_to_sys(dev, pg(r, 2), 5, &st), EINVAL);
		REFUSE(uhmm_simdev_migrate_to_sys(dev, r, 4, &st), ENOENT);	/* none on it */
	});
	CHECK_EQ(uhmm_simdev_used_pages(dev), 0);
	/*
	 * A hole after the start: the pieces before it migrate and cpages says
	 * how many (decision: as the kernel's test device walks mappings);
	 * from the hole on, nothing changes.
	 */
	GUARDED("simdev migration up to a hole", pg(r, R_HOLE), R_PAGES - R_HOLE, {
		REFUSE(uhmm_simdev_migrate_to_dev(dev, pg(r, 2), 5, &st), EINVAL);
		CHECK_EQ(st.cpages, 4);
	});
	CHECK_EQ(uhmm_simdev_used_pages(dev), 4);
	CHECK_EQ(uhmm_simdev_migrate_to_sys(dev, pg(r, 2), 4, &st), 0);
	CHECK_EQ(st.cpages, 4);
	CHECK_EQ(check_pattern(r, 4, 29), -1);
	GUARDED("simdev migrate shared", sh, 2,
		REFUSE(uhmm_simdev_migrate_to_dev(dev, sh, 2, &st), ENOENT));
	GUARDED("simdev migrate private file", fb, 2,
		REFUSE(uhmm_simdev_migrate_to_dev(dev, fb, 2, &st), ENOENT));
	if (huge) {
		GUARDED("simdev hugetlb", huge, 1, {
			REFUSE(uhmm_simdev_migrate_to_dev(dev, huge, 1, &st), EINVAL);
			REFUSE(uhmm_simdev_exclusive(dev, huge, 1, &st), EINVAL);
		});
	}
	/* Full: a device with one page. */
	{
		struct uhmm_simdev_config one = { .capacity_pages = 1, .threads = 1 };
		struct uhmm_simdev *small;
		char *p = map_anon(2 * page_size, PROT_READ | PROT_WRITE);

		fill_pattern(p, 2, 33);
		CHECK_EQ(uhmm_simdev_create(&one, &small), 0);
		CHECK_EQ(uhmm_simdev_migrate_to_dev(small, p, 1, &st), 0);
		GUARDED("simdev full", pg(p, 1), 1,
			REFUSE(uhmm_simdev_migrate_to_dev(small, pg(p, 1), 1, &st), ENOMEM));
		uhmm_simdev_destroy(small);
		CHECK_EQ(check_pattern(p, 2, 33), -1);
		munmap(p, 2 * page_size);
	}

	/* Exclusive access. */
	GUARDED("simdev exclusive", r, R_PAGES, {
		REFUSE(uhmm_simdev_exclusive(dev, pg(r, 2), 5, &st), EINVAL);
		REFUSE(uhmm_simdev_exclusive(dev, pg(r, R_NONE), 1, &st), EINVAL);
		REFUSE(uhmm_simdev_exclusive(dev, pg(r, R_RO), 1, &st), EPERM);
	});
	GUARDED("simdev exclusive two mappings", two, 2,
		REFUSE(uhmm_simdev_exclusive(dev, two, 2, &st), EINVAL));
	GUARDED("simdev exclusive shared", sh, 2,
		REFUSE(uhmm_simdev_exclusive(dev, sh, 2, &st), EPERM));
	{
		char *p = map_anon(page_size, PROT_READ | PROT_WRITE);

		fill_pattern(p, 1, 35);
		CHECK_EQ(uhmm_simdev_exclusive(dev, p, 1, &st), 0);
		REFUSE(uhmm_simdev_check_exclusive(dev, p, 1), EPERM);	/* still held */
		CHECK_EQ(check_pattern(p, 1, 35), -1);			/* revokes */
		CHECK_EQ(uhmm_simdev_check_exclusive(dev, p, 1), 0);
		munmap(p, page_size);
	}

	/* The small calls. */
	REFUSE(uhmm_simdev_release(NULL), EINVAL);
	REFUSE(uhmm_simdev_set_flags(NULL, 0), EINVAL);
	REFUSE(uhmm_simdev_set_flags(dev, 0x80), EINVAL);
	REFUSE(uhmm_simdev_get_counters(NULL, &c), EINVAL);
	REFUSE(uhmm_simdev_get_counters(dev, NULL), EINVAL);
	mark();
	CHECK_EQ(uhmm_simdev_used_pages(NULL), 0);
	reason_given("uhmm_simdev_used_pages(NULL)");

	/* Compute: bad launches, and kernels whose accesses the mappings forbid. */
	REFUSE(uhmm_simdev_launch(NULL, 1, nop_kernel, NULL, NULL), EINVAL);
	REFUSE(uhmm_simdev_launch(dev, 1, NULL, NULL, NULL), EINVAL);
	k.dev = dev;
	GUARDED("simdev kernels", r, R_PAGES, {
		k.mode = 0;
		k.addr = pg(r, R_HOLE);
		REFUSE(uhmm_simdev_launch(dev, 1, bad_kernel, &k, NULL), EFAULT);
		k.addr = pg(r, R_NONE);
		REFUSE(uhmm_simdev_launch(dev, 1, bad_kernel, &k, NULL), EFAULT);
		k.mode = 1;
		k.addr = pg(r, R_RO);
		REFUSE(uhmm_simdev_launch(dev, 1, bad_kernel, &k, NULL), EPERM);
		k.mode = 2;
		CHECK_EQ(uhmm_simdev_launch(dev, 1, bad_kernel, &k, NULL), 0);
		CHECK_EQ(atomic_load(&k.nested_ret), -EBUSY);
		mark();
		CHECK_EQ(uhmm_simdev_load64(NULL, r), 0);
		reason_given("uhmm_simdev_load64(NULL)");
		mark();
		CHECK_EQ(uhmm_simdev_load32(NULL, r), 0);
		reason_given("uhmm_simdev_load32(NULL)");
		REFUSE_VOID(uhmm_simdev_store64(NULL, r, 1));
		REFUSE_VOID(uhmm_simdev_store32(NULL, r, 1));
		mark();
		CHECK_EQ(uhmm_simdev_atomic_add64(NULL, r, 1), 0);
		reason_given("uhmm_simdev_atomic_add64(NULL)");
		mark();
		CHECK_EQ(uhmm_simdev_atomic_add32(NULL, r, 1), 0);
		reason_given("uhmm_simdev_atomic_add32(NULL)");
	});
	CHECK_EQ(uhmm_simdev_get_counters(dev, &c), 0);
	CHECK_EQ(c.to_dev_pages, 4);		/* only the pieces before the hole */
	uhmm_simdev_destroy(dev);
	CHECK_EQ(check_pattern(r, 4, 29), -1);
	free_region(r);
	munmap(two, 2 * page_size);
	munmap(sh, 2 * page_size);
	munmap(fb, 2 * page_size);
	free(buf);
	ok("simdev: bad arguments EINVAL, forbidden accesses EFAULT/EPERM with nothing "
	   "copied, migration all or nothing, full ENOMEM, nothing to do ENOENT");
#undef CREATE_REFUSED
}

/* ---- hugetlbfs with the range fault ------------------------------------------------ */

static void test_hugetlb_range(char *huge)
{
	struct ntf n;
	uint64_t pfns[1];
	struct uhmm_range rr;

	ntf_insert(&n, huge, 1);
	/* Mirrored as the kernel does (tests/test_hugetlb.c): only a snapshot here. */
	GUARDED("hugetlb range snapshot", huge, 1, {
		rr = range_of(&n, huge, 1, pfns, 0);
		CHECK_EQ(uhmm_range_fault(&rr), 0);
		CHECK_EQ(pfns[0], (uint64_t)(21 - pshift) << UHMM_PFN_ORDER_SHIFT);
	});
	uhmm_interval_notifier_remove(&n.mni);
	ok("hugetlbfs: migration and exclusive EINVAL, nothing faulted; a snapshot is "
	   "not refused (the order, nothing valid)");
}

/* ---- an IO/PFNMAP-style mapping: [vvar] ---------------------------------------------- */

static char *find_vvar(void)
{
	FILE *f = fopen("/proc/self/maps", "re");
	char line[512];
	unsigned long s = 0, e;

	CHECK(f, "/proc/self/maps");
	while (fgets(line, sizeof(line), f))
		if (strstr(line, "[vvar]") && sscanf(line, "%lx-%lx", &s, &e) == 2)
			break;
		else
			s = 0;
	fclose(f);
	return (char *)s;
}

static void test_io_mapping(void)
{
	char *v = find_vvar();
	struct ntf n;
	uint64_t pfns[1], src[1], dst[1];
	void *held[1];
	int owner;
	uint32_t st0, st1;
	struct uhmm_range rr;
	struct uhmm_migrate_vma m = {
		.mm = mm, .start = (uintptr_t)v, .end = (uintptr_t)pg(v, 1), .src = src,
		.dst = dst, .flags = UHMM_MIGRATE_VMA_SELECT_SYSTEM,
	};

	if (!v) {
		printf("%s: SKIP rows: IO mapping: no [vvar] in /proc/self/maps\n", test_name);
		return;
	}
	/* Its contents are the kernel's clock data: only the page state is compared. */
	CHECK_EQ(uhmm_page_state(mm, (uintptr_t)v, 1, &st0), 0);
	CHECK(st0 & UHMM_PS_SPECIAL, "[vvar] is an IO-style mapping: %#x", st0);
	ntf_insert(&n, v, 1);
	rr = range_of(&n, v, 1, pfns, UHMM_PFN_REQ_FAULT);
	REFUSE(uhmm_range_fault(&rr), EFAULT);
	CHECK_EQ(pfns[0], UHMM_PFN_ERROR);
	REFUSE(uhmm_migrate_vma_setup(&m), EINVAL);
	REFUSE(uhmm_make_exclusive(mm, (uintptr_t)v, 1, &owner, held), EINVAL);
	uhmm_interval_notifier_remove(&n.mni);
	CHECK_EQ(uhmm_page_state(mm, (uintptr_t)v, 1, &st1), 0);
	CHECK_EQ(st0 & ~UHMM_PS_SOFT_DIRTY, st1 & ~UHMM_PS_SOFT_DIRTY);
	ok("IO mapping ([vvar]): range fault EFAULT, migration and exclusive EINVAL");
}

/* ---- calls from an invalidate callback: -EDEADLK ------------------------------------ */

#define NPROBES 10

struct probe {
	struct uhmm_interval_notifier mni;
	atomic_int armed;
	/* what to call */
	char *tgt;
	struct ntf *tgt_ntf;
	unsigned long tgt_seq;
	struct tdev *dev;
	uint64_t dev_pfn;
	/* results */
	int n;
	const char *name[NPROBES];
	long ret[NPROBES];
	bool reason[NPROBES];
	bool mm_untouched;
};

static void probe_one(struct probe *pr, const char *name, long ret)
{
	const char *e = uhmm_last_error();

	pr->name[pr->n] = name;
	pr->ret[pr->n] = ret;
	pr->reason[pr->n] = e[0] && strcmp(e, marker) != 0;
	pr->n++;
}

#define PROBE(pr, expr)                                                        \
	do {                                                                   \
		long r_;                                                       \
		mark();                                                        \
		r_ = (long)(expr);                                             \
		probe_one(pr, #expr, r_);                                      \
	} while (0)

static void probe_calls(struct probe *pr)
{
	struct uhmm_mm *m2 = (struct uhmm_mm *)pr;
	struct ntf other = { 0 };
	uint64_t pfns[2], src[2], dst[2];
	void *held[2];
	struct uhmm_range rr = {
		.notifier = &pr->tgt_ntf->mni, .notifier_seq = pr->tgt_seq,
		.start = (uintptr_t)pr->tgt, .end = (uintptr_t)pg(pr->tgt, 2),
		.hmm_pfns = pfns, .default_flags = UHMM_PFN_REQ_FAULT | UHMM_PFN_REQ_WRITE,
	};
	struct uhmm_migrate_vma m = {
		.mm = mm, .start = (uintptr_t)pr->tgt, .end = (uintptr_t)pg(pr->tgt, 2),
		.src = src, .dst = dst, .pgmap_owner = &pr->dev->owner_token,
		.flags = UHMM_MIGRATE_VMA_SELECT_SYSTEM,
	};
	int tok;
	struct uhmm_devmem pool = { .ops = &tdev_ops, .owner = &tok, .nr_pages = 1 };

	PROBE(pr, uhmm_mm_get(&m2));
	pr->mm_untouched = m2 == (struct uhmm_mm *)pr;
	PROBE(pr, uhmm_interval_notifier_insert(&other.mni, mm, (uintptr_t)pr->tgt, page_size,
						 &ntf_ops));
	PROBE(pr, uhmm_range_fault(&rr));
	PROBE(pr, uhmm_migrate_vma_setup(&m));
	PROBE(pr, uhmm_make_exclusive(mm, (uintptr_t)pr->tgt, 2, &tok, held));
	PROBE(pr, uhmm_devmem_add(mm, &pool));
	PROBE(pr, uhmm_devmem_remove(&pr->dev->pgmap));
	PROBE(pr, uhmm_migrate_device_range(mm, src, pr->dev_pfn, 1));
	src[0] = pr->dev_pfn;
	PROBE(pr, uhmm_migrate_device_pfns(mm, src, 1));
}

static bool probe_invalidate(struct uhmm_interval_notifier *mni,
			     const struct uhmm_notifier_range *r, unsigned long seq)
{
	struct probe *pr = container_of(mni, struct probe, mni);

	uhmm_interval_set_seq(mni, seq);
	if (r->event == UHMM_NOTIFY_PROTECTION && atomic_exchange(&pr->armed, 0))
		probe_calls(pr);
	return true;
}

static const struct uhmm_interval_notifier_ops probe_ops = { .invalidate = probe_invalidate };

/* A counting notifier (struct ntf) that removes itself from its own callback
 * (documented: deferred, no deadlock). */
static bool selfrm_invalidate(struct uhmm_interval_notifier *mni,
			      const struct uhmm_notifier_range *r, unsigned long seq)
{
	struct ntf *s = container_of(mni, struct ntf, mni);

	(void)r;
	uhmm_interval_set_seq(mni, seq);
	if (atomic_fetch_add(&s->calls, 1) == 0)
		uhmm_interval_notifier_remove(mni);
	return true;
}

static const struct uhmm_interval_notifier_ops selfrm_ops = { .invalidate = selfrm_invalidate };

static void check_probes(struct probe *pr, const char *where)
{
	CHECK_EQ(pr->n, NPROBES - 1);
	for (int i = 0; i < pr->n; i++) {
		CHECK(pr->ret[i] == -EDEADLK, "%s: %s = %ld, expected -EDEADLK", where,
		      pr->name[i], pr->ret[i]);
		CHECK(pr->reason[i], "%s: %s gave no reason", where, pr->name[i]);
		nrows++;
	}
	CHECK(pr->mm_untouched, "%s: uhmm_mm_get left *mmp alone", where);
}

static void test_callback_calls(void)
{
	static struct probe pr;
	struct tdev *d = tdev_create(mm, 2, 0);
	char *tgt = map_anon(2 * page_size, PROT_READ | PROT_WRITE);
	char *dp = map_anon(page_size, PROT_READ | PROT_WRITE);
	char *trig = map_anon(2 * page_size, PROT_READ | PROT_WRITE);
	struct ntf tn;
	static struct ntf srm;

	fill_pattern(tgt, 2, 37);
	fill_pattern(dp, 1, 39);
	CHECK_EQ(tdev_to_dev(d, (uintptr_t)dp, (uintptr_t)pg(dp, 1), NULL), 1);
	ntf_insert(&tn, tgt, 2);
	memset(&pr, 0, sizeof(pr));
	pr.tgt = tgt;
	pr.tgt_ntf = &tn;
	pr.tgt_seq = uhmm_interval_read_begin(&tn.mni);
	pr.dev = d;
	pr.dev_pfn = uhmm_page_to_pfn(uhmm_devmem_page(&d->pgmap, 0));
	CHECK_EQ(uhmm_interval_notifier_insert(&pr.mni, mm, (uintptr_t)trig, page_size,
					       &probe_ops), 0);
	{
		struct guard g1, g2;

		guard_begin(&g1, "callback target", tgt, 2);
		guard_begin(&g2, "callback device page", dp, 1);
		atomic_store(&pr.armed, 1);
		CHECK_EQ(mprotect(trig, page_size, PROT_READ), 0);	/* runs the callback */
		CHECK_EQ(atomic_load(&pr.armed), 0);
		guard_check(&g1);
		guard_check(&g2);
	}
	check_probes(&pr, "invalidate callback");
	CHECK_EQ(tdev_used(d), 1);
	CHECK(uhmm_devmem_page(&d->pgmap, 0), "pool still added");

	/* A notifier that removes itself from its callback: no deadlock, told no more. */
	memset(&srm, 0, sizeof(srm));
	CHECK_EQ(uhmm_interval_notifier_insert(&srm.mni, mm, (uintptr_t)pg(trig, 1), page_size,
					       &selfrm_ops), 0);
	CHECK_EQ(mprotect(pg(trig, 1), page_size, PROT_READ), 0);
	CHECK_EQ(atomic_load(&srm.calls), 1);
	CHECK_EQ(mprotect(pg(trig, 1), page_size, PROT_NONE), 0);
	CHECK_EQ(atomic_load(&srm.calls), 1);
	uhmm_interval_notifier_remove(&srm.mni);		/* a no-op now */

	uhmm_interval_notifier_remove(&pr.mni);
	uhmm_interval_notifier_remove(&tn.mni);
	CHECK_EQ(check_pattern(dp, 1, 39), -1);
	CHECK_EQ(check_pattern(tgt, 2, 37), -1);
	tdev_destroy(d);
	munmap(tgt, 2 * page_size);
	munmap(dp, page_size);
	munmap(trig, 2 * page_size);
	ok("invalidate callback: context get, notifier insert, range fault, migration, "
	   "exclusive, pool add/remove, device-range migration: -EDEADLK, nothing changed");
}

/* ---- calls from migrate_to_ram on the service thread: -EDEADLK ---------------------- */

static struct {
	pthread_mutex_t lock;
	struct ntf *n;
	char *tgt;
	int done;
	long get_ret, fault_ret;
	bool get_reason, fault_reason;
} svc = { .lock = PTHREAD_MUTEX_INITIALIZER };

static int probe_migrate_to_ram(struct uhmm_vm_fault *vmf)
{
	struct uhmm_mm *m2 = NULL;
	uint64_t pfns[2];
	struct uhmm_range rr;
	const char *e;

	pthread_mutex_lock(&svc.lock);
	if (!svc.done) {
		rr = (struct uhmm_range){
			.notifier = &svc.n->mni, .start = (uintptr_t)svc.tgt,
			.end = (uintptr_t)pg(svc.tgt, 2), .hmm_pfns = pfns,
			.default_flags = UHMM_PFN_REQ_FAULT,
			.notifier_seq = uhmm_interval_read_begin(&svc.n->mni),
		};
		mark();
		svc.get_ret = uhmm_mm_get(&m2);
		e = uhmm_last_error();
		svc.get_reason = e[0] && strcmp(e, marker) != 0 && m2 == NULL;
		mark();
		svc.fault_ret = uhmm_range_fault(&rr);
		e = uhmm_last_error();
		svc.fault_reason = e[0] && strcmp(e, marker) != 0;
		svc.done = 1;
	}
	pthread_mutex_unlock(&svc.lock);
	return tdev_migrate_to_ram(vmf);
}

static const struct uhmm_devmem_ops probe_dev_ops = {
	.page_free = tdev_page_free,
	.migrate_to_ram = probe_migrate_to_ram,
};

static void test_service_thread_calls(void)
{
	struct tdev *d = tdev_create(mm, 2, 1);
	char *tgt = map_anon(2 * page_size, PROT_READ | PROT_WRITE);
	char *dp = map_anon(page_size, PROT_READ | PROT_WRITE);
	struct ntf tn;

	/* The same pool with the probing ops (nothing is on it yet). */
	CHECK_EQ(uhmm_devmem_remove(&d->pgmap), 0);
	d->pgmap.ops = &probe_dev_ops;
	CHECK_EQ(uhmm_devmem_add(mm, &d->pgmap), 0);
	fill_pattern(tgt, 2, 43);
	fill_pattern(dp, 1, 45);
	ntf_insert(&tn, tgt, 2);
	pthread_mutex_lock(&svc.lock);
	svc.n = &tn;
	svc.tgt = tgt;
	pthread_mutex_unlock(&svc.lock);
	CHECK_EQ(tdev_to_dev(d, (uintptr_t)dp, (uintptr_t)pg(dp, 1), NULL), 1);
	GUARDED("service thread target", tgt, 2, {
		CHECK_EQ(check_pattern(dp, 1, 45), -1);	/* a CPU fault: migrate_to_ram */
	});
	pthread_mutex_lock(&svc.lock);
	CHECK_EQ(svc.done, 1);
	CHECK_EQ(svc.get_ret, -EDEADLK);
	CHECK(svc.get_reason, "mm_get on the service thread: reason, *mmp left NULL");
	CHECK_EQ(svc.fault_ret, -EDEADLK);
	CHECK(svc.fault_reason, "range fault on the service thread: reason");
	pthread_mutex_unlock(&svc.lock);
	nrows += 2;
	uhmm_interval_notifier_remove(&tn.mni);
	tdev_destroy(d);
	munmap(tgt, 2 * page_size);
	munmap(dp, page_size);
	ok("service thread (migrate_to_ram): context get and range fault: -EDEADLK");
}

/* ---- the parent's context in a fork child and in a vfork child ---------------------- */

static char *child_p;
static struct ntf child_n;

static int fork_child(void *arg)
{
	struct ntf n2 = { 0 };
	uint64_t pfns[1], src[1], dst[1];
	void *held[1];
	int tok;
	struct uhmm_devmem pool = { .ops = &tdev_ops, .owner = &tok, .nr_pages = 1 };
	struct uhmm_range rr = {
		.notifier = &child_n.mni, .start = (uintptr_t)child_p,
		.end = (uintptr_t)pg(child_p, 1), .hmm_pfns = pfns,
		.default_flags = UHMM_PFN_REQ_FAULT,
	};
	struct uhmm_migrate_vma m = {
		.mm = mm, .start = (uintptr_t)child_p, .end = (uintptr_t)pg(child_p, 1),
		.src = src, .dst = dst, .flags = UHMM_MIGRATE_VMA_SELECT_SYSTEM,
	};

	(void)arg;
#define CHILD_REFUSE(code, expr)                                               \
	do {                                                                   \
		mark();                                                        \
		if ((expr) != -EINVAL || !strcmp(uhmm_last_error(), marker))   \
			return code;                                           \
	} while (0)
	CHILD_REFUSE(10, uhmm_interval_notifier_insert(&n2.mni, mm, (uintptr_t)child_p,
						       page_size, &ntf_ops));
	CHILD_REFUSE(11, uhmm_range_fault(&rr));
	CHILD_REFUSE(12, uhmm_devmem_add(mm, &pool));
	CHILD_REFUSE(13, uhmm_migrate_vma_setup(&m));
	CHILD_REFUSE(14, uhmm_make_exclusive(mm, (uintptr_t)child_p, 1, &tok, held));
	if (check_pattern(child_p, 1, 47) != -1)
		return 15;
	return 0;
#undef CHILD_REFUSE
}

static volatile int vfork_shared;
static volatile long vfork_ret;
static struct uhmm_mm *vfork_mm;

static void test_child_calls(void)
{
	pid_t pid;
	int st;

	child_p = map_anon(page_size, PROT_READ | PROT_WRITE);
	fill_pattern(child_p, 1, 47);
	ntf_insert(&child_n, child_p, 1);
	CHECK_EQ(run_child(fork_child, NULL), 0);
	nrows += 5;
	uhmm_interval_notifier_remove(&child_n.mni);

	/* vfork: the child shares the parent's memory, context included. */
#ifdef __SANITIZE_THREAD__
	/* TSan runs vfork() as fork(), and a fork child of threads cannot start any. */
	printf("%s: note: vfork() is fork() under TSan: the -ECHILD row is not exercised\n",
	       test_name);
	munmap(child_p, page_size);
	ok("fork child: the parent's context refused (EINVAL)");
	return;
#endif
	vfork_shared = 0;
	vfork_ret = 0;
	vfork_mm = NULL;
	pid = vfork();
	if (pid == 0) {
		vfork_shared = 1;
		vfork_ret = uhmm_mm_get(&vfork_mm);
		_exit(0);
	}
	CHECK(pid > 0, "vfork: %s", strerror(errno));
	CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st), "vfork child");
	if (vfork_shared) {
		CHECK_EQ(vfork_ret, -ECHILD);
		CHECK(vfork_mm == NULL, "no context given to the vfork child");
		CHECK(uhmm_last_error()[0], "reason (recorded by the child in the shared memory)");
		nrows++;
	} else {
		printf("%s: note: vfork() ran as fork() here (a sanitizer does that): "
		       "the -ECHILD row is not exercised\n", test_name);
	}
	munmap(child_p, page_size);
	ok("fork child: the parent's context refused (EINVAL); vfork child: ECHILD");
}

/* A 2 MiB hugetlbfs mapping, asked for once, by the first case using it. */
static char *huge;
static bool huge_tried;

static char *need_huge(void)
{
	char why[160] = "";

	if (huge_tried)
		return huge;
	huge_tried = true;
	huge = get_huge(why, sizeof(why));
	if (!huge)
		printf("%s: SKIP rows: hugetlbfs: %s\n", test_name, why);
	return huge;
}

static void drop_huge(void)
{
	if (huge) {
		munmap(huge, HUGE_SZ);
		restore_hugepages();
		huge = NULL;
	}
}

static void migrate_calls(void)
{
	test_migrate_calls(need_huge());
}

static void exclusive_calls(void)
{
	test_exclusive_calls(need_huge());
}

static void simdev_calls(void)
{
	test_simdev_calls(need_huge());
}

static void hugetlb_range(void)
{
	if (!need_huge())
		SKIP_CASE("%s: hugetlb range: no hugetlbfs page", test_name);
	test_hugetlb_range(huge);
	drop_huge();
}

/*
 * The context: test_stale_context() makes its own (and leaves the program
 * a fresh one); a case run without it takes one first (MM_CASE).
 */
MM_CASE(test_context_calls)
MM_CASE(test_notifier_calls)
MM_CASE(test_pagestate_calls)
MM_CASE(test_range_calls)
MM_CASE(test_devmem_calls)
MM_CASE(migrate_calls)
MM_CASE(test_migrate_device_calls)
MM_CASE(exclusive_calls)
MM_CASE(test_inject_calls)
MM_CASE(simdev_calls)
MM_CASE(hugetlb_range)
MM_CASE(test_io_mapping)
MM_CASE(test_callback_calls)
MM_CASE(test_service_thread_calls)
MM_CASE(test_child_calls)

static void start(void)
{
	pshift = (unsigned int)__builtin_ctzl(page_size);
}

static int finish(void)
{
	drop_huge();
	if (mm)
		uhmm_mm_put(mm);
	printf("%s: %lu refusals checked\n", test_name, nrows);
	return 0;
}

static const struct test_case cases[] = {
	TEST_CASE(test_stale_context),
	{ "context_calls", case_test_context_calls },
	{ "notifier_calls", case_test_notifier_calls },
	{ "pagestate_calls", case_test_pagestate_calls },
	{ "range_calls", case_test_range_calls },
	{ "devmem_calls", case_test_devmem_calls },
	{ "migrate_calls", case_migrate_calls },
	{ "migrate_device_calls", case_test_migrate_device_calls },
	{ "exclusive_calls", case_exclusive_calls },
	{ "inject_calls", case_test_inject_calls },
	{ "simdev_calls", case_simdev_calls },
	{ "hugetlb_range", case_hugetlb_range },
	{ "io_mapping", case_test_io_mapping },
	{ "callback_calls", case_test_callback_calls },
	{ "service_thread_calls", case_test_service_thread_calls },
	{ "child_calls", case_test_child_calls },
};

TEST_MAIN("test_bad_input", start, finish)
