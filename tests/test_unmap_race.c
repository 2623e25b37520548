// SPDX-License-Identifier: MIT
/*
 * A device's first use racing a change of the range it reads (issue 12,
 * "a device read racing with the first munmap").
 *
 * Each round is a fresh process (a forked child: nothing warmed up, the
 * device has no notifier yet), in which one thread changes the upper half
 * of a 32-page range and the other makes the device's first read of all 32
 * pages at the same moment:
 *
 *	munmap		munmap() of the upper half
 *	mremap		mremap() of the upper half to another address (MAYMOVE|FIXED)
 *	mprotect	mprotect(PROT_NONE) of the upper half
 *	madvise		madvise(MADV_DONTNEED) of the upper half
 *
 * The kernel's rule, judged here: during the race the read gives the right
 * data or fails with -EFAULT (the discard: old data or zeroes, never a
 * failure), and once the call has returned the device never reads through
 * a translation taken before it (a read of the upper half then fails with
 * -EFAULT, or reads zeroes after the discard).  Two devices:
 *
 *	simdev_*	simdev (uhmm_simdev_read(): notifier inserted by its
 *			first device fault, range fault, device page table)
 *	mirror_*	a bare mirror on the public API, as a third-party
 *			driver writes one: uhmm_interval_notifier_insert(),
 *			uhmm_interval_read_begin(), uhmm_range_fault(),
 *			uhmm_interval_read_retry() under its own lock, an
 *			invalidate callback that clears its entries; after the
 *			call returned, none of its entries for the changed half
 *			may be left from a fault that began before the call
 *			(madvise: none may hold the old content, as a device
 *			keeping copies would; the mirror takes its copy under
 *			its lock while the entry is valid)
 *
 * Usage: test_unmap_race [CASE...]; UHMM_TEST_ROUNDS=N rounds per case
 * (default 40, 10 under a sanitizer), UHMM_TEST_KEEP_GOING=1 to run every
 * round and count the failures (tests/watchdog.h).
 */
#include "common.h"
#include "watchdog.h"

#include <uhmm/simdev.h>

#define NAME "test_unmap_race"
#define HALF 16
#define NPG (2 * HALF)

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define DEFAULT_ROUNDS 10
#else
#define DEFAULT_ROUNDS 40
#endif

enum op { OP_MUNMAP, OP_MREMAP, OP_MPROTECT, OP_MADVISE };

static const char *const op_name[] = { "munmap", "mremap", "mprotect", "madvise" };

struct race {
	enum op op;
	pthread_barrier_t bar;
	char *p;		/* NPG pages */
	char *dst;		/* mremap's destination, HALF pages */
	int ret;		/* the call's */
	atomic_bool done;	/* the call has returned */
};

/* Page @i's words: its number and @seed, so a page from elsewhere shows. */
static void fill(char *p, size_t n, uint32_t seed)
{
	for (size_t i = 0; i < n; i++) {
		uint32_t *w = (uint32_t *)(p + i * page_size);

		for (size_t j = 0; j < page_size / sizeof(*w); j++)
			w[j] = seed * 7919u + (uint32_t)(i * 1024 + j);
	}
}

/* The first page of @n at @p that does not hold what fill() put, or -1. */
static long bad_page(const char *p, size_t first, size_t n, uint32_t seed)
{
	for (size_t i = first; i < first + n; i++) {
		const uint32_t *w = (const uint32_t *)(p + i * page_size);

		for (size_t j = 0; j < page_size / sizeof(*w); j++)
			if (w[j] != seed * 7919u + (uint32_t)(i * 1024 + j))
				return (long)i;
	}
	return -1;
}

static bool page_zero(const char *p)
{
	for (size_t j = 0; j < page_size; j++)
		if (p[j])
			return false;
	return true;
}

static void *changer(void *arg)
{
	struct race *r = arg;
	char *up = r->p + HALF * page_size;

	pthread_barrier_wait(&r->bar);
	switch (r->op) {
	case OP_MUNMAP:
		r->ret = munmap(up, HALF * page_size);
		break;
	case OP_MREMAP:
		r->ret = mremap(up, HALF * page_size, HALF * page_size,
				MREMAP_MAYMOVE | MREMAP_FIXED, r->dst) == r->dst ? 0 : -1;
		break;
	case OP_MPROTECT:
		r->ret = mprotect(up, HALF * page_size, PROT_NONE);
		break;
	case OP_MADVISE:
		r->ret = madvise(up, HALF * page_size, MADV_DONTNEED);
		break;
	}
	atomic_store(&r->done, true);
	return NULL;
}

/* The range and the thread; the caller races its device read against it. */
static void race_start(struct race *r, pthread_t *th, enum op op, uint32_t seed)
{
	r->op = op;
	r->p = map_anon(NPG * page_size, PROT_READ | PROT_WRITE);
	fill(r->p, NPG, seed);
	/* mremap's destination exists already: the move vacates the old half. */
	r->dst = op == OP_MREMAP ? map_anon(HALF * page_size, PROT_READ | PROT_WRITE) : NULL;
	atomic_store(&r->done, false);
	CHECK_EQ(pthread_barrier_init(&r->bar, NULL, 2), 0);
	CHECK_EQ(pthread_create(th, NULL, changer, r), 0);
	pthread_barrier_wait(&r->bar);
}

static void race_join(struct race *r, pthread_t th)
{
	CHECK_EQ(pthread_join(th, NULL), 0);
	CHECK(r->ret == 0, "%s of the upper half failed: %s", op_name[r->op], strerror(errno));
	pthread_barrier_destroy(&r->bar);
}

/* ---- simdev ----------------------------------------------------------------------- */

static int simdev_round(void *arg)
{
	enum op op = (enum op)(uintptr_t)arg;
	const uint32_t seed = 1 + (uint32_t)getpid();
	struct uhmm_simdev *d = NULL;
	struct uhmm_simdev_stats st;
	struct race r;
	pthread_t th;
	char *buf;
	int ret, ret2;

	CHECK_EQ(uhmm_simdev_create(NULL, &d), 0);
	buf = map_anon(NPG * page_size, PROT_READ | PROT_WRITE);
	memset(buf, 0xa5, NPG * page_size);
	race_start(&r, &th, op, seed);
	ret = uhmm_simdev_read(d, r.p, NPG, buf, &st);	/* the device's first access */
	race_join(&r, th);

	if (ret == 0) {
		long b = bad_page(buf, 0, HALF, seed);

		CHECK(b == -1, "%s: read returned 0, page %ld (lower half) wrong", op_name[op], b);
		for (size_t i = HALF; i < NPG; i++) {
			const char *pg = buf + i * page_size;
			bool old = bad_page(buf, i, 1, seed) == -1;

			CHECK(old || (op == OP_MADVISE && page_zero(pg)),
			      "%s: read returned 0 with wrong data in page %zu (first word %#lx)",
			      op_name[op], i, *(const unsigned long *)pg);
		}
	} else {
		CHECK(ret == -EFAULT && op != OP_MADVISE, "%s: read returned %d", op_name[op], ret);
	}

	/* After the call: no translation from before it. */
	memset(buf, 0xa5, HALF * page_size);
	ret2 = uhmm_simdev_read(d, r.p + HALF * page_size, HALF, buf, &st);
	if (op == OP_MADVISE) {
		CHECK(ret2 == 0, "%s: read after it returned %d", op_name[op], ret2);
		for (size_t i = 0; i < HALF; i++)
			CHECK(page_zero(buf + i * page_size),
			      "%s: page %zu read after the discard is not zero", op_name[op],
			      HALF + i);
	} else {
		CHECK(ret2 == -EFAULT,
		      "%s: read of the changed half after the call returned %d (first word "
		      "%#lx): a translation survived it", op_name[op], ret2,
		      *(const unsigned long *)buf);
	}
	/* The other half is untouched. */
	CHECK_EQ(uhmm_simdev_read(d, r.p, HALF, buf, &st), 0);
	CHECK_EQ(bad_page(buf, 0, HALF, seed), -1);
	uhmm_simdev_destroy(d);
	return 0;
}

/* ---- a bare mirror on the public API ------------------------------------------------ */

struct mirror {
	struct uhmm_interval_notifier mni;
	pthread_mutex_t lock;
	uintptr_t start;
	uint64_t pfn[NPG];	/* 0: no entry */
	bool before[NPG];	/* the entry's fault began before the call returned */
	uint64_t sum[NPG];	/* the page's content when mirrored (a device's copy) */
};

static uint64_t page_sum(const char *pg)
{
	const uint64_t *w = (const uint64_t *)pg;
	uint64_t h = 0;

	for (size_t j = 0; j < page_size / sizeof(*w); j++)
		h = h * 1000003u + w[j];
	return h;
}

static struct mirror mir;

static bool mirror_invalidate(struct uhmm_interval_notifier *mni,
			      const struct uhmm_notifier_range *range, unsigned long cur_seq)
{
	struct mirror *m = &mir;

	pthread_mutex_lock(&m->lock);
	uhmm_interval_set_seq(mni, cur_seq);
	for (size_t i = 0; i < NPG; i++) {
		uintptr_t a = m->start + i * page_size;

		if (a + page_size > range->start && a < range->end) {
			m->pfn[i] = 0;
			m->before[i] = false;
		}
	}
	pthread_mutex_unlock(&m->lock);
	return true;
}

static const struct uhmm_interval_notifier_ops mirror_ops = {
	.invalidate = mirror_invalidate,
};

static int mirror_round(void *arg)
{
	enum op op = (enum op)(uintptr_t)arg;
	const uint32_t seed = 1 + (uint32_t)getpid();
	struct uhmm_mm *mm = test_mm();		/* the context exists; the notifier not yet */
	uint64_t pfns[NPG];
	struct uhmm_range rg = {
		.hmm_pfns = pfns,
		.default_flags = UHMM_PFN_REQ_FAULT,
	};
	uint64_t stale_pfn = 0;
	long stale = -1;
	struct race r;
	pthread_t th;
	int ret;

	pthread_mutex_init(&mir.lock, NULL);
	race_start(&r, &th, op, seed);
	/* The driver's first use: its notifier, then a range fault. */
	mir.start = (uintptr_t)r.p;
	CHECK_EQ(uhmm_interval_notifier_insert(&mir.mni, mm, (uintptr_t)r.p, NPG * page_size,
					       &mirror_ops), 0);
	rg.notifier = &mir.mni;
	rg.start = (uintptr_t)r.p;
	rg.end = (uintptr_t)r.p + NPG * page_size;
	for (;;) {
		bool before;

		rg.notifier_seq = uhmm_interval_read_begin(&mir.mni);
		before = !atomic_load(&r.done);
		ret = uhmm_range_fault(&rg);
		if (ret == -EBUSY)
			continue;
		if (ret)
			break;
		pthread_mutex_lock(&mir.lock);
		if (uhmm_interval_read_retry(&mir.mni, rg.notifier_seq)) {
			pthread_mutex_unlock(&mir.lock);
			continue;
		}
		for (size_t i = 0; i < NPG; i++) {
			mir.pfn[i] = pfns[i] & UHMM_PFN_VALID ? pfns[i] : 0;
			mir.before[i] = before;
			/*
			 * What a device that keeps copies would hold: read
			 * through the entry while it is valid (the discard's
			 * invalidation would wait for this lock).
			 */
			if (mir.pfn[i] && op == OP_MADVISE)
				mir.sum[i] = page_sum(r.p + i * page_size);
		}
		pthread_mutex_unlock(&mir.lock);
		break;
	}
	race_join(&r, th);
	CHECK(ret == 0 || (ret == -EFAULT && op != OP_MADVISE), "%s: range fault returned %d",
	      op_name[op], ret);

	/*
	 * After the call: no entry for the changed half from a fault that
	 * began before it.  Checked outside the lock: a failing check exits,
	 * and the exit's teardown calls the callback, which takes it.
	 */
	pthread_mutex_lock(&mir.lock);
	for (size_t i = HALF; i < NPG && stale < 0; i++) {
		bool bad;

		if (op == OP_MADVISE)
			/*
			 * The pages are still mapped: an entry of a fault made
			 * after the zap (even before the call returned) holds
			 * the new, zeroed page; one from before it that no
			 * invalidation removed holds the old content.
			 */
			bad = mir.pfn[i] && mir.sum[i] != page_sum(r.p + i * page_size);
		else
			bad = mir.pfn[i] && mir.before[i];
		if (bad) {
			stale = (long)i;
			stale_pfn = mir.pfn[i];
		}
	}
	pthread_mutex_unlock(&mir.lock);
	CHECK(stale < 0, "%s: page %ld is still mirrored (%#llx) after the call returned, "
	      "from a range fault that began before it (madvise: with the old content)",
	      op_name[op], stale, (unsigned long long)stale_pfn);
	uhmm_interval_notifier_remove(&mir.mni);
	uhmm_mm_put(mm);
	return 0;
}

/* ---- cases ------------------------------------------------------------------------- */

static void rounds_of(int (*fn)(void *), enum op op, const char *dev)
{
	char what[64];
	int failed;

	snprintf(what, sizeof(what), "%s first read vs %s", dev, op_name[op]);
	failed = run_rounds(fn, (void *)(uintptr_t)op, DEFAULT_ROUNDS, what);
	CHECK(failed == 0, "%s: %d rounds failed", what, failed);
	printf("%s: %s: every round right data or -EFAULT, no translation left after the "
	       "call: ok\n", NAME, what);
}

static void case_simdev_munmap(void) { rounds_of(simdev_round, OP_MUNMAP, "simdev"); }
static void case_simdev_mremap(void) { rounds_of(simdev_round, OP_MREMAP, "simdev"); }
static void case_simdev_mprotect(void) { rounds_of(simdev_round, OP_MPROTECT, "simdev"); }
static void case_simdev_madvise(void) { rounds_of(simdev_round, OP_MADVISE, "simdev"); }
static void case_mirror_munmap(void) { rounds_of(mirror_round, OP_MUNMAP, "mirror"); }
static void case_mirror_mremap(void) { rounds_of(mirror_round, OP_MREMAP, "mirror"); }
static void case_mirror_mprotect(void) { rounds_of(mirror_round, OP_MPROTECT, "mirror"); }
static void case_mirror_madvise(void) { rounds_of(mirror_round, OP_MADVISE, "mirror"); }

static const struct test_case cases[] = {
	{ "simdev_munmap", case_simdev_munmap },
	{ "simdev_mremap", case_simdev_mremap },
	{ "simdev_mprotect", case_simdev_mprotect },
	{ "simdev_madvise", case_simdev_madvise },
	{ "mirror_munmap", case_mirror_munmap },
	{ "mirror_mremap", case_mirror_mremap },
	{ "mirror_mprotect", case_mirror_mprotect },
	{ "mirror_madvise", case_mirror_madvise },
};

TEST_MAIN(NAME, NULL, NULL)
