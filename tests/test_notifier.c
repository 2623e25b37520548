// SPDX-License-Identifier: MIT
/*
 * The interval notifier API and its concurrency:
 *  - insert / remove basics and page widening; -EINVAL for NULL mni, mm,
 *    ops or ops->invalidate, zero length, a wrapping range and a double
 *    insert; remove of a never-inserted (zeroed) notifier, of NULL and a
 *    second remove are harmless; a removed notifier can be inserted again;
 *  - interval boundaries: changes touching the first and the last page call
 *    the notifier, the page just before and just after do not (aligned and
 *    unaligned intervals);
 *  - the sequence protocol: read_begin / read_retry / check_retry / set_seq,
 *    including that an invalidation of another, non-overlapping notifier
 *    does not force a retry;
 *  - read_begin waits while an invalidation of that notifier is running;
 *  - notifiers inserted and removed by several threads while another thread
 *    keeps changing the memory (mmap MAP_FIXED, mprotect, MADV_DONTNEED, and
 *    raw MADV_DONTNEED when the uffd_wp backstop runs): no callback on a
 *    notifier that is not inserted, remove() never returns while its
 *    callback runs, every callback overlaps its notifier, an always-present
 *    notifier gets exactly one synchronous callback per wrapped change;
 *  - removing a notifier from another notifier's callback does not deadlock
 *    and takes effect when that invalidation ends;
 *  - insert and uhmm_mm_get from a callback return -EDEADLK (on the calling
 *    thread, and on uhmm's service thread when the uffd_wp backstop runs);
 *  - 10000 notifiers over disjoint pages: a change of one page calls exactly
 *    one callback, of three pages exactly three.
 * Run last because it currently exposes a library bug:
 *  - read_begin while a libc call is between notifying and changing (here
 *    mremap MREMAP_FIXED, held in its second notifier's callback) must not
 *    return a sequence that read_retry still accepts after the change.
 */
#include "common.h"

#include <sched.h>
#include <sys/syscall.h>

static struct uhmm_mm *mm;
static struct uhmm_sysinfo si;

static void ok(const char *what)
{
	printf("%s: %s: ok\n", test_name, what);
}

/* ---- a counting notifier ----------------------------------------------------- */

struct cnt {
	struct uhmm_interval_notifier mni;	/* first: the callbacks cast */
	atomic_int calls;
	atomic_uintptr_t last_start;
	atomic_uintptr_t last_end;
	atomic_int last_event;
};

static bool cnt_invalidate(struct uhmm_interval_notifier *mni,
			   const struct uhmm_notifier_range *r,
			   unsigned long cur_seq)
{
	struct cnt *c = (struct cnt *)mni;

	uhmm_interval_set_seq(mni, cur_seq);
	atomic_store(&c->last_start, r->start);
	atomic_store(&c->last_end, r->end);
	atomic_store(&c->last_event, (int)r->event);
	atomic_fetch_add(&c->calls, 1);
	return true;
}

static const struct uhmm_interval_notifier_ops cnt_ops = {
	.invalidate = cnt_invalidate,
};

static void cnt_insert(struct cnt *c, const void *start, size_t len)
{
	memset(c, 0, sizeof(*c));
	CHECK_EQ(uhmm_interval_notifier_insert(&c->mni, mm, (uintptr_t)start, len,
					       &cnt_ops), 0);
}

static int calls(struct cnt *c)
{
	return atomic_load(&c->calls);
}

/* Discard one range through the libc wrapper. */
static void discard(void *p, size_t len)
{
	CHECK(madvise(p, len, MADV_DONTNEED) == 0, "madvise: %s", strerror(errno));
}

/* ---- API basics and errors ----------------------------------------------------- */

static void test_api(void)
{
	static const struct uhmm_interval_notifier_ops no_inv = { .invalidate = NULL };
	char *p = map_anon(4 * page_size, PROT_READ | PROT_WRITE);
	const uintptr_t top = UINTPTR_MAX - page_size + 1;
	struct cnt c, zero;

	memset(&c, 0, sizeof(c));
	CHECK_EQ(uhmm_interval_notifier_insert(NULL, mm, (uintptr_t)p, page_size,
					       &cnt_ops), -EINVAL);
	CHECK(strlen(uhmm_last_error()) > 0, "an error reason is recorded");
	CHECK_EQ(uhmm_interval_notifier_insert(&c.mni, NULL, (uintptr_t)p, page_size,
					       &cnt_ops), -EINVAL);
	CHECK_EQ(uhmm_interval_notifier_insert(&c.mni, mm, (uintptr_t)p, page_size,
					       NULL), -EINVAL);
	CHECK_EQ(uhmm_interval_notifier_insert(&c.mni, mm, (uintptr_t)p, page_size,
					       &no_inv), -EINVAL);
	CHECK_EQ(uhmm_interval_notifier_insert(&c.mni, mm, (uintptr_t)p, 0, &cnt_ops),
		 -EINVAL);
	CHECK_EQ(uhmm_interval_notifier_insert(&c.mni, mm, top, 2 * page_size, &cnt_ops),
		 -EINVAL);
	CHECK_EQ(uhmm_interval_notifier_insert(&c.mni, mm, (uintptr_t)p, SIZE_MAX,
					       &cnt_ops), -EINVAL);
	ok("insert: -EINVAL for NULL mni / mm / ops / ops->invalidate, zero length, "
	   "wrapping range");

	/* None of the failures left anything behind: the notifier inserts. */
	CHECK_EQ(uhmm_interval_notifier_insert(&c.mni, mm, (uintptr_t)p + 100,
					       page_size, &cnt_ops), 0);
	CHECK(c.mni.start == (uintptr_t)p && c.mni.end == (uintptr_t)p + 2 * page_size,
	      "interval [%#lx, %#lx) not widened to pages", (unsigned long)c.mni.start,
	      (unsigned long)c.mni.end);
	CHECK_EQ(uhmm_interval_notifier_insert(&c.mni, mm, (uintptr_t)p, page_size,
					       &cnt_ops), -EINVAL);
	CHECK_EQ(uhmm_interval_notifier_insert(&c.mni, mm, (uintptr_t)p + 2 * page_size,
					       page_size, &cnt_ops), -EINVAL);
	CHECK(c.mni.start == (uintptr_t)p && c.mni.end == (uintptr_t)p + 2 * page_size,
	      "a failed double insert changed the interval");
	discard(p + page_size, page_size);
	CHECK_EQ(calls(&c), 1);	/* in the tree once, not twice */
	discard(p + 2 * page_size, 2 * page_size);
	CHECK_EQ(calls(&c), 1);
	ok("insert widens the interval to pages; double insert -> -EINVAL and the "
	   "notifier is called once per change");

	uhmm_interval_notifier_remove(&c.mni);
	discard(p, 4 * page_size);
	CHECK_EQ(calls(&c), 1);
	uhmm_interval_notifier_remove(&c.mni);	/* second remove: no-op */
	memset(&zero, 0, sizeof(zero));
	uhmm_interval_notifier_remove(&zero.mni);
	uhmm_interval_notifier_remove(NULL);
	discard(p, 4 * page_size);
	CHECK_EQ(calls(&c), 1);
	CHECK_EQ(calls(&zero), 0);
	ok("remove stops callbacks; a second remove, remove of a zeroed "
	   "never-inserted notifier and remove(NULL) are harmless");

	/* The same structure can be inserted again after remove. */
	CHECK_EQ(uhmm_interval_notifier_insert(&c.mni, mm, (uintptr_t)p + 3 * page_size,
					       page_size, &cnt_ops), 0);
	discard(p + 3 * page_size, page_size);
	CHECK_EQ(calls(&c), 2);
	uhmm_interval_notifier_remove(&c.mni);
	ok("a removed notifier can be inserted again");
	CHECK_EQ(munmap(p, 4 * page_size), 0);
}

/* ---- interval boundaries --------------------------------------------------------- */

static void boundaries(char *p, struct cnt *c, const char *kind)
{
	char what[160];
	int base = calls(c);

	/* The notifier covers pages 2..5 of p. */
	discard(p + page_size, page_size);
	CHECK(calls(c) == base, "%s: called for the page just before", kind);
	CHECK_EQ(mprotect(p + 6 * page_size, page_size, PROT_READ), 0);
	CHECK_EQ(mprotect(p + 6 * page_size, page_size, PROT_READ | PROT_WRITE), 0);
	discard(p + 6 * page_size, 2 * page_size);
	CHECK(calls(c) == base, "%s: called for the page just after", kind);
	discard(p + 2 * page_size, page_size);
	CHECK(calls(c) == base + 1, "%s: not called for its first page", kind);
	CHECK(atomic_load(&c->last_start) == (uintptr_t)p + 2 * page_size &&
	      atomic_load(&c->last_end) == (uintptr_t)p + 3 * page_size, "range");
	CHECK_EQ(mprotect(p + 5 * page_size, page_size, PROT_READ), 0);
	CHECK(calls(c) == base + 2, "%s: not called for its last page", kind);
	CHECK_EQ(atomic_load(&c->last_event), UHMM_NOTIFY_PROTECTION);
	CHECK_EQ(mprotect(p + 5 * page_size, page_size, PROT_READ | PROT_WRITE), 0);
	discard(p + 5 * page_size, 1);	/* one byte of the last page */
	CHECK(calls(c) == base + 3, "%s: not called for one byte of its last page", kind);
	discard(p, 2 * page_size + 1);	/* spills one byte into the first page */
	CHECK(calls(c) == base + 4, "%s: not called for a change spilling into it", kind);
	CHECK(atomic_load(&c->last_start) == (uintptr_t)p &&
	      atomic_load(&c->last_end) == (uintptr_t)p + 3 * page_size, "range");
	discard(p, 8 * page_size);
	CHECK(calls(c) == base + 5, "%s: not called for a change covering it", kind);
	snprintf(what, sizeof(what), "%s interval: first and last page call it, the "
		 "pages just before and after do not", kind);
	ok(what);
}

static void test_boundaries(void)
{
	char *p = map_anon(8 * page_size, PROT_READ | PROT_WRITE);
	struct cnt c;

	cnt_insert(&c, p + 2 * page_size, 4 * page_size);
	boundaries(p, &c, "page-aligned");
	uhmm_interval_notifier_remove(&c.mni);
	cnt_insert(&c, p + 2 * page_size + 100, 4 * page_size - 200);
	CHECK(c.mni.start == (uintptr_t)p + 2 * page_size &&
	      c.mni.end == (uintptr_t)p + 6 * page_size, "widened");
	boundaries(p, &c, "unaligned");
	uhmm_interval_notifier_remove(&c.mni);
	CHECK_EQ(munmap(p, 8 * page_size), 0);
}

/* ---- the sequence protocol ---------------------------------------------------------- */

static void test_seq(void)
{
	char *p = map_anon(6 * page_size, PROT_READ | PROT_WRITE);
	struct cnt a, b;
	unsigned long sa, sb, sa2;

	cnt_insert(&a, p, 2 * page_size);
	cnt_insert(&b, p + 4 * page_size, 2 * page_size);
	sa = uhmm_interval_read_begin(&a.mni);
	sb = uhmm_interval_read_begin(&b.mni);
	CHECK(!uhmm_interval_read_retry(&a.mni, sa), "no invalidation: no retry");
	CHECK(!uhmm_interval_check_retry(&a.mni, sa), "no invalidation: no retry");
	CHECK_EQ(uhmm_interval_read_begin(&a.mni), sa);
	ok("seq taken, no invalidation -> read_retry / check_retry false");

	discard(p + 4 * page_size, page_size);
	CHECK_EQ(calls(&b), 1);
	CHECK_EQ(calls(&a), 0);
	CHECK(uhmm_interval_read_retry(&b.mni, sb), "b was invalidated");
	CHECK(!uhmm_interval_read_retry(&a.mni, sa),
	      "an invalidation of another, non-overlapping notifier forced a retry");
	CHECK(!uhmm_interval_check_retry(&a.mni, sa), "check_retry");
	ok("invalidation of another, non-overlapping notifier -> still no retry");

	discard(p + page_size, page_size);
	CHECK_EQ(calls(&a), 1);
	CHECK(uhmm_interval_read_retry(&a.mni, sa), "a was invalidated");
	CHECK(uhmm_interval_check_retry(&a.mni, sa), "a was invalidated");
	sa2 = uhmm_interval_read_begin(&a.mni);
	CHECK(sa2 != sa, "read_begin returns the new sequence");
	CHECK(sa2 & 1, "the sequence set by the callback is odd");
	CHECK(!uhmm_interval_read_retry(&a.mni, sa2), "nothing since");
	CHECK(!uhmm_interval_check_retry(&a.mni, sa2), "nothing since");
	ok("invalidation of this notifier -> read_retry / check_retry true; a new "
	   "read_begin starts clean");

	uhmm_interval_notifier_remove(&a.mni);
	uhmm_interval_notifier_remove(&b.mni);
	CHECK_EQ(munmap(p, 6 * page_size), 0);
}

/* ---- read_begin waits for a running invalidation ----------------------------------- */

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool in_cb;		/* A's callback is blocked */
	bool go;		/* main lets A's callback finish */
	bool b_about;		/* B is about to call read_begin */
	atomic_int cb_done;	/* A's callback is about to return */
	atomic_int b_returned;
	atomic_ulong cb_seq;
	unsigned long b_seq;
	int b_saw_done;
	char *p;
	struct uhmm_interval_notifier mni;
} w = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };

static bool block_invalidate(struct uhmm_interval_notifier *mni,
			     const struct uhmm_notifier_range *r,
			     unsigned long cur_seq)
{
	uhmm_interval_set_seq(mni, cur_seq);
	atomic_store(&w.cb_seq, cur_seq);
	pthread_mutex_lock(&w.lock);
	w.in_cb = true;
	pthread_cond_broadcast(&w.cond);
	while (!w.go)
		pthread_cond_wait(&w.cond, &w.lock);
	pthread_mutex_unlock(&w.lock);
	atomic_store(&w.cb_done, 1);
	return true;
}

static const struct uhmm_interval_notifier_ops block_ops = {
	.invalidate = block_invalidate,
};

static void *thread_a(void *arg)
{
	(void)arg;
	discard(w.p, page_size);
	return NULL;
}

static void *thread_b(void *arg)
{
	unsigned long seq;

	(void)arg;
	pthread_mutex_lock(&w.lock);
	w.b_about = true;
	pthread_cond_broadcast(&w.cond);
	pthread_mutex_unlock(&w.lock);
	seq = uhmm_interval_read_begin(&w.mni);
	w.b_saw_done = atomic_load(&w.cb_done);
	w.b_seq = seq;
	atomic_store(&w.b_returned, 1);
	return NULL;
}

static void test_read_begin_waits(void)
{
	pthread_t ta, tb;
	int returned_early;

	w.p = map_anon(2 * page_size, PROT_READ | PROT_WRITE);
	memset(&w.mni, 0, sizeof(w.mni));
	CHECK_EQ(uhmm_interval_notifier_insert(&w.mni, mm, (uintptr_t)w.p, 2 * page_size,
					       &block_ops), 0);
	CHECK_EQ(pthread_create(&ta, NULL, thread_a, NULL), 0);
	pthread_mutex_lock(&w.lock);
	while (!w.in_cb)
		pthread_cond_wait(&w.cond, &w.lock);
	pthread_mutex_unlock(&w.lock);

	/* A's invalidation is running and blocked: B calls read_begin. */
	CHECK_EQ(pthread_create(&tb, NULL, thread_b, NULL), 0);
	pthread_mutex_lock(&w.lock);
	while (!w.b_about)
		pthread_cond_wait(&w.cond, &w.lock);
	returned_early = atomic_load(&w.b_returned);
	w.go = true;
	pthread_cond_broadcast(&w.cond);
	pthread_mutex_unlock(&w.lock);
	CHECK(!returned_early, "read_begin returned while the invalidation was running");
	CHECK_EQ(pthread_join(ta, NULL), 0);
	CHECK_EQ(pthread_join(tb, NULL), 0);

	CHECK(w.b_saw_done, "read_begin returned before the running callback finished");
	CHECK(w.b_seq == atomic_load(&w.cb_seq),
	      "read_begin returned %lu, the invalidation set %lu", w.b_seq,
	      atomic_load(&w.cb_seq));
	CHECK(w.b_seq & 1, "odd");
	CHECK(!uhmm_interval_read_retry(&w.mni, w.b_seq),
	      "the sequence read_begin returned is already stale");
	ok("read_begin waits for a running invalidation of its notifier and "
	   "returns that invalidation's sequence, which needs no retry");
	uhmm_interval_notifier_remove(&w.mni);
	CHECK_EQ(munmap(w.p, 2 * page_size), 0);
}

/*
 * ---- read_begin during a change that is not finished yet -----------------------
 *
 * mremap(MREMAP_FIXED) onto another notifier's interval invalidates two
 * ranges: the old one (notifier NA) and the target (notifier NB).  While NB's
 * callback is still running the mremap has not happened yet: NA's pages are
 * still mapped at the old address, but are about to move away.  As with the
 * kernel's invalidate_range_start/end, a reader of NA must not be able to
 * take a sequence now, snapshot the old pages and have read_retry accept it
 * after the move: read_begin must wait for the change to finish, or the
 * sequence it returns must be retried.
 */
static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool nb_in_cb, go, c_about;
	char *a, *b;
	struct cnt na;
	struct uhmm_interval_notifier nb;
	atomic_int nb_armed;
	unsigned long c_seq;
	bool c_saw_old_pages;
} mw = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };

static bool mw_nb_invalidate(struct uhmm_interval_notifier *mni,
			     const struct uhmm_notifier_range *r,
			     unsigned long cur_seq)
{
	uhmm_interval_set_seq(mni, cur_seq);
	if (!atomic_exchange(&mw.nb_armed, 0))
		return true;
	pthread_mutex_lock(&mw.lock);
	mw.nb_in_cb = true;
	pthread_cond_broadcast(&mw.cond);
	while (!mw.go)
		pthread_cond_wait(&mw.cond, &mw.lock);
	pthread_mutex_unlock(&mw.lock);
	return true;
}

static const struct uhmm_interval_notifier_ops mw_nb_ops = {
	.invalidate = mw_nb_invalidate,
};

static void *mw_mover(void *arg)
{
	char *q;

	(void)arg;
	q = mremap(mw.a, 2 * page_size, 2 * page_size, MREMAP_MAYMOVE | MREMAP_FIXED,
		   mw.b + 2 * page_size);
	CHECK(q == mw.b + 2 * page_size, "mremap FIXED: %s", strerror(errno));
	return NULL;
}

static void *mw_reader(void *arg)
{
	unsigned char vec[2];
	unsigned long seq;

	(void)arg;
	pthread_mutex_lock(&mw.lock);
	mw.c_about = true;
	pthread_cond_broadcast(&mw.cond);
	pthread_mutex_unlock(&mw.lock);
	seq = uhmm_interval_read_begin(&mw.na.mni);
	/* The "snapshot": are NA's pages still at the old address? */
	mw.c_saw_old_pages = mincore(mw.a, 2 * page_size, vec) == 0 && (vec[0] & 1);
	mw.c_seq = seq;
	return NULL;
}

/* One round; returns whether the reader saw the old pages. */
static bool mid_change_round(void)
{
	pthread_t t1, c;

	mw.nb_in_cb = mw.go = mw.c_about = false;
	mw.c_saw_old_pages = false;
	mw.a = map_anon(2 * page_size, PROT_READ | PROT_WRITE);
	mw.b = map_anon(4 * page_size, PROT_READ | PROT_WRITE);
	memset(mw.a, 1, 2 * page_size);
	cnt_insert(&mw.na, mw.a, 2 * page_size);
	memset(&mw.nb, 0, sizeof(mw.nb));
	CHECK_EQ(uhmm_interval_notifier_insert(&mw.nb, mm, (uintptr_t)mw.b,
					       4 * page_size, &mw_nb_ops), 0);
	atomic_store(&mw.nb_armed, 1);
	CHECK_EQ(pthread_create(&t1, NULL, mw_mover, NULL), 0);
	pthread_mutex_lock(&mw.lock);
	while (!mw.nb_in_cb)
		pthread_cond_wait(&mw.cond, &mw.lock);
	pthread_mutex_unlock(&mw.lock);
	CHECK_EQ(calls(&mw.na), 1);	/* NA was told; the move is pending */

	CHECK_EQ(pthread_create(&c, NULL, mw_reader, NULL), 0);
	pthread_mutex_lock(&mw.lock);
	while (!mw.c_about)
		pthread_cond_wait(&mw.cond, &mw.lock);
	mw.go = true;
	pthread_cond_broadcast(&mw.cond);
	pthread_mutex_unlock(&mw.lock);
	CHECK_EQ(pthread_join(t1, NULL), 0);
	CHECK_EQ(pthread_join(c, NULL), 0);

	if (mw.c_saw_old_pages)
		CHECK(uhmm_interval_read_retry(&mw.na.mni, mw.c_seq),
		      "read_begin returned while the mremap that NA was told about "
		      "had not moved the pages yet, and read_retry accepts that "
		      "sequence after the move: a mirror filled from it is stale");
	uhmm_interval_notifier_remove(&mw.na.mni);
	uhmm_interval_notifier_remove(&mw.nb);
	CHECK_EQ(munmap(mw.b, 4 * page_size), 0);
	return mw.c_saw_old_pages;
}

/*
 * Whether the reader gets in before the mover depends on scheduling, so
 * several rounds are run; a correct library passes every interleaving.
 */
#define MID_ROUNDS 16

static void test_read_begin_mid_change(void)
{
	int saw = 0;

	for (int i = 0; i < MID_ROUNDS; i++)
		saw += mid_change_round();
	printf("%s: read_begin during mremap: the reader saw the old pages in %d of "
	       "%d rounds\n", test_name, saw, MID_ROUNDS);
	ok("read_begin during an unfinished change (another notifier's callback "
	   "still running) never yields a sequence that survives the change");
}

/* ---- insert / remove concurrent with invalidations --------------------------------- */

#define C_PAGES		64
#define C_THREADS	3
#define C_SLOTS		4
#define C_MUTATIONS	1500
#define C_OPS_PER_MUT	16	/* inserter ops allowed per mutation done */

struct cn {
	struct uhmm_interval_notifier mni;	/* first */
	atomic_int live;	/* 1 from just before insert to after remove */
	atomic_int in_cb;
	atomic_int calls;
	atomic_int sync_calls;	/* flags == 0 */
};

static char *c_region;
static atomic_int c_dead_calls;		/* callbacks on a removed notifier */
static atomic_int c_bad_range;		/* callbacks not overlapping the interval */
static atomic_int c_remove_while_cb;	/* removes that met a running callback */
static atomic_long c_total_calls;
static atomic_long c_inserts;
static atomic_int c_raw_mutations;	/* raw syscalls: not synchronous */
/* The mutator's progress; inserters never run more than C_OPS_PER_MUT ahead. */
static pthread_mutex_t c_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t c_cond = PTHREAD_COND_INITIALIZER;
static int c_mutations;
static bool c_mutator_done;

/* Wait until the inserter may do its @op-th operation; false when done. */
static bool inserter_may_go(long op)
{
	bool go;

	pthread_mutex_lock(&c_lock);
	while (!c_mutator_done && op >= (long)C_OPS_PER_MUT * (c_mutations + 1))
		pthread_cond_wait(&c_cond, &c_lock);
	go = !c_mutator_done;
	pthread_mutex_unlock(&c_lock);
	return go;
}

static pthread_barrier_t c_barrier;

static bool cn_invalidate(struct uhmm_interval_notifier *mni,
			  const struct uhmm_notifier_range *r,
			  unsigned long cur_seq)
{
	struct cn *c = (struct cn *)mni;

	atomic_fetch_add(&c->in_cb, 1);
	if (!atomic_load(&c->live))
		atomic_fetch_add(&c_dead_calls, 1);
	if (r->end <= mni->start || (mni->end && r->start >= mni->end))
		atomic_fetch_add(&c_bad_range, 1);
	uhmm_interval_set_seq(mni, cur_seq);
	/* Widen the window in which a remove can meet this callback. */
	sched_yield();
	atomic_fetch_add(&c->calls, 1);
	if (r->flags == 0)
		atomic_fetch_add(&c->sync_calls, 1);
	atomic_fetch_add(&c_total_calls, 1);
	atomic_fetch_sub(&c->in_cb, 1);
	return true;
}

static const struct uhmm_interval_notifier_ops cn_ops = { .invalidate = cn_invalidate };

static void *inserter(void *arg)
{
	unsigned int seed = (unsigned int)(uintptr_t)arg * 7919u + 1;
	struct cn *slots = calloc(C_SLOTS, sizeof(*slots));
	bool inserted[C_SLOTS] = { false };

	CHECK(slots, "calloc");
	pthread_barrier_wait(&c_barrier);
	for (long op = 0; inserter_may_go(op); op++) {
		int k = (int)(rand_r(&seed) % C_SLOTS);
		struct cn *c = &slots[k];

		if (inserted[k]) {
			if (atomic_load(&c->in_cb))
				atomic_fetch_add(&c_remove_while_cb, 1);
			uhmm_interval_notifier_remove(&c->mni);
			CHECK(atomic_load(&c->in_cb) == 0,
			      "remove returned while its callback was running");
			atomic_store(&c->live, 0);
			inserted[k] = false;
		} else {
			size_t first = rand_r(&seed) % C_PAGES;
			size_t n = 1 + rand_r(&seed) % 8;
			size_t skew = rand_r(&seed) % 2 ? rand_r(&seed) % page_size : 0;
			int ret;

			if (first + n > C_PAGES)
				n = C_PAGES - first;
			atomic_store(&c->live, 1);
			ret = uhmm_interval_notifier_insert(&c->mni, mm,
							    (uintptr_t)c_region +
							    first * page_size + skew,
							    n * page_size - skew, &cn_ops);
			CHECK(ret == 0, "insert: %d", ret);
			atomic_fetch_add(&c_inserts, 1);
			inserted[k] = true;
		}
	}
	for (int k = 0; k < C_SLOTS; k++) {
		if (!inserted[k])
			continue;
		uhmm_interval_notifier_remove(&slots[k].mni);
		CHECK(atomic_load(&slots[k].in_cb) == 0,
		      "remove returned while its callback was running");
		atomic_store(&slots[k].live, 0);
	}
	free(slots);
	return NULL;
}

static void *mutator(void *arg)
{
	unsigned int seed = 12345;
	const int rw = PROT_READ | PROT_WRITE;
	/* With the backstop, raw madvise too: callbacks on the service thread. */
	int kinds = si.active & UHMM_FEAT_UFFD_WP ? 4 : 3;

	(void)arg;
	pthread_barrier_wait(&c_barrier);
	for (int i = 0; i < C_MUTATIONS; i++) {
		size_t first = rand_r(&seed) % C_PAGES;
		size_t n = 1 + rand_r(&seed) % 4;
		char *a;

		if (first + n > C_PAGES)
			n = C_PAGES - first;
		a = c_region + first * page_size;
		switch (i % kinds) {
		case 0:
			CHECK(mmap(a, n * page_size, rw,
				   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == a,
			      "mmap MAP_FIXED: %s", strerror(errno));
			a[0] = 1;
			break;
		case 1:
			CHECK_EQ(mprotect(a, n * page_size, PROT_READ), 0);
			CHECK_EQ(mprotect(a, n * page_size, rw), 0);
			break;
		case 2:
			a[0] = 1;
			discard(a, n * page_size);
			break;
		default:
			a[0] = 1;
			CHECK(syscall(SYS_madvise, a, n * page_size, MADV_DONTNEED) == 0,
			      "raw madvise: %s", strerror(errno));
			atomic_fetch_add(&c_raw_mutations, 1);
			break;
		}
		pthread_mutex_lock(&c_lock);
		c_mutations++;
		pthread_cond_broadcast(&c_cond);
		pthread_mutex_unlock(&c_lock);
	}
	pthread_mutex_lock(&c_lock);
	c_mutator_done = true;
	pthread_cond_broadcast(&c_cond);
	pthread_mutex_unlock(&c_lock);
	return NULL;
}

static void test_concurrent(void)
{
	pthread_t ins[C_THREADS], mut;
	struct cn whole;

	c_region = map_anon(C_PAGES * page_size, PROT_READ | PROT_WRITE);
	memset(&whole, 0, sizeof(whole));
	atomic_store(&whole.live, 1);
	CHECK_EQ(uhmm_interval_notifier_insert(&whole.mni, mm, (uintptr_t)c_region,
					       C_PAGES * page_size, &cn_ops), 0);
	CHECK_EQ(pthread_barrier_init(&c_barrier, NULL, C_THREADS + 1), 0);
	for (long i = 0; i < C_THREADS; i++)
		CHECK_EQ(pthread_create(&ins[i], NULL, inserter, (void *)i), 0);
	CHECK_EQ(pthread_create(&mut, NULL, mutator, NULL), 0);
	for (int i = 0; i < C_THREADS; i++)
		CHECK_EQ(pthread_join(ins[i], NULL), 0);
	CHECK_EQ(pthread_join(mut, NULL), 0);
	pthread_barrier_destroy(&c_barrier);

	printf("%s: concurrent: %ld inserts, %ld callbacks (%ld on the moving "
	       "notifiers), %d removes met a running callback\n", test_name,
	       atomic_load(&c_inserts), atomic_load(&c_total_calls),
	       atomic_load(&c_total_calls) - atomic_load(&whole.calls),
	       atomic_load(&c_remove_while_cb));
	CHECK(atomic_load(&c_dead_calls) == 0,
	      "%d callbacks on notifiers that were not inserted",
	      atomic_load(&c_dead_calls));
	CHECK(atomic_load(&c_bad_range) == 0, "%d callbacks outside their interval",
	      atomic_load(&c_bad_range));
	/* Each wrapped change reached the always-present notifier once, in sync. */
	CHECK_EQ(atomic_load(&whole.sync_calls),
		 C_MUTATIONS - atomic_load(&c_raw_mutations));
	printf("%s: concurrent: %d raw MADV_DONTNEED, %d after-the-fact callbacks on "
	       "the permanent notifier\n", test_name, atomic_load(&c_raw_mutations),
	       atomic_load(&whole.calls) - atomic_load(&whole.sync_calls));
	uhmm_interval_notifier_remove(&whole.mni);
	CHECK_EQ(atomic_load(&whole.in_cb), 0);
	CHECK_EQ(munmap(c_region, C_PAGES * page_size), 0);
	ok("notifiers inserted/removed by 3 threads during mmap MAP_FIXED / mprotect / "
	   "MADV_DONTNEED (and raw MADV_DONTNEED with the backstop): no callback on a "
	   "removed notifier, remove never returns while its callback runs, every "
	   "wrapped change reaches a permanent notifier once");
}

/* ---- remove from another notifier's callback --------------------------------------- */

static struct cnt rm_victim, rm_far;
static atomic_int rm_armed;

static bool remover_invalidate(struct uhmm_interval_notifier *mni,
			       const struct uhmm_notifier_range *r,
			       unsigned long cur_seq)
{
	struct cnt *c = (struct cnt *)mni;

	uhmm_interval_set_seq(mni, cur_seq);
	if (atomic_exchange(&rm_armed, 0)) {
		uhmm_interval_notifier_remove(&rm_victim.mni);
		uhmm_interval_notifier_remove(&rm_far.mni);
	}
	atomic_fetch_add(&c->calls, 1);
	return true;
}

static const struct uhmm_interval_notifier_ops remover_ops = {
	.invalidate = remover_invalidate,
};

static void test_remove_in_callback(void)
{
	char *p = map_anon(8 * page_size, PROT_READ | PROT_WRITE);
	struct cnt remover;
	int v;

	memset(&remover, 0, sizeof(remover));
	CHECK_EQ(uhmm_interval_notifier_insert(&remover.mni, mm, (uintptr_t)p,
					       2 * page_size, &remover_ops), 0);
	cnt_insert(&rm_victim, p, 2 * page_size);		/* same interval */
	cnt_insert(&rm_far, p + 6 * page_size, 2 * page_size);	/* elsewhere */
	atomic_store(&rm_armed, 1);
	discard(p, page_size);	/* would hang here on a deadlock */
	CHECK_EQ(calls(&remover), 1);
	CHECK_EQ(atomic_load(&rm_armed), 0);
	v = calls(&rm_victim);
	CHECK(v <= 1, "victim called %d times", v);
	ok("removing notifiers from another notifier's callback does not deadlock");

	discard(p, 8 * page_size);
	CHECK_EQ(calls(&remover), 2);
	CHECK_EQ(calls(&rm_victim), v);
	CHECK_EQ(calls(&rm_far), 0);
	uhmm_interval_notifier_remove(&rm_victim.mni);	/* already removed: no-op */
	uhmm_interval_notifier_remove(&rm_far.mni);
	ok("the removal took effect when that invalidation ended; a later remove is "
	   "a no-op");

	/* The structure may be reused once the invalidation has ended. */
	cnt_insert(&rm_victim, p + 4 * page_size, page_size);
	discard(p + 4 * page_size, page_size);
	CHECK_EQ(calls(&rm_victim), 1);
	uhmm_interval_notifier_remove(&rm_victim.mni);
	uhmm_interval_notifier_remove(&remover.mni);
	ok("a notifier removed from a callback can be inserted again afterwards");
	CHECK_EQ(munmap(p, 8 * page_size), 0);
}

/* ---- -EDEADLK from callbacks ----------------------------------------------------------- */

static struct {
	char *p;
	struct uhmm_interval_notifier inner;
	atomic_int insert_ret;
	atomic_int get_ret;
	atomic_int calls;
	pthread_mutex_t lock;
	pthread_cond_t cond;
} dl = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };

static bool deadlock_invalidate(struct uhmm_interval_notifier *mni,
				const struct uhmm_notifier_range *r,
				unsigned long cur_seq)
{
	struct uhmm_mm *m2 = NULL;
	int ret;

	uhmm_interval_set_seq(mni, cur_seq);
	memset(&dl.inner, 0, sizeof(dl.inner));
	atomic_store(&dl.insert_ret,
		     uhmm_interval_notifier_insert(&dl.inner, mm, (uintptr_t)dl.p + page_size,
						   page_size, &cnt_ops));
	ret = uhmm_mm_get(&m2);
	if (ret == 0)
		uhmm_mm_put(m2);
	atomic_store(&dl.get_ret, ret);
	pthread_mutex_lock(&dl.lock);
	atomic_fetch_add(&dl.calls, 1);
	pthread_cond_broadcast(&dl.cond);
	pthread_mutex_unlock(&dl.lock);
	return true;
}

static const struct uhmm_interval_notifier_ops deadlock_ops = {
	.invalidate = deadlock_invalidate,
};

static void test_deadlock_calls(void)
{
	struct uhmm_interval_notifier n;
	struct cnt probe;

	dl.p = map_anon(4 * page_size, PROT_READ | PROT_WRITE);
	memset(dl.p, 1, 4 * page_size);
	memset(&n, 0, sizeof(n));
	CHECK_EQ(uhmm_interval_notifier_insert(&n, mm, (uintptr_t)dl.p, 4 * page_size,
					       &deadlock_ops), 0);
	discard(dl.p, page_size);
	CHECK_EQ(atomic_load(&dl.calls), 1);
	CHECK_EQ(atomic_load(&dl.insert_ret), -EDEADLK);
	CHECK_EQ(atomic_load(&dl.get_ret), -EDEADLK);
	/* The refused insert left nothing behind. */
	cnt_insert(&probe, dl.p + page_size, page_size);
	discard(dl.p + page_size, page_size);
	CHECK_EQ(calls(&probe), 1);
	CHECK_EQ(atomic_load(&dl.calls), 2);
	uhmm_interval_notifier_remove(&probe.mni);
	ok("insert and uhmm_mm_get from a callback -> -EDEADLK");

	if (si.active & UHMM_FEAT_UFFD_WP) {
		atomic_store(&dl.insert_ret, 1);
		atomic_store(&dl.get_ret, 1);
		CHECK(syscall(SYS_madvise, dl.p + 2 * page_size, page_size,
			      MADV_DONTNEED) == 0, "raw madvise: %s", strerror(errno));
		pthread_mutex_lock(&dl.lock);
		while (atomic_load(&dl.calls) < 3)
			pthread_cond_wait(&dl.cond, &dl.lock);
		pthread_mutex_unlock(&dl.lock);
		CHECK_EQ(atomic_load(&dl.insert_ret), -EDEADLK);
		CHECK_EQ(atomic_load(&dl.get_ret), -EDEADLK);
		ok("insert and uhmm_mm_get from a callback on uhmm's service thread -> "
		   "-EDEADLK");
	} else {
		printf("%s: uffd_wp backstop off in this mode: service-thread callback "
		       "case not exercised\n", test_name);
	}
	uhmm_interval_notifier_remove(&n);
	CHECK_EQ(munmap(dl.p, 4 * page_size), 0);
}

/* ---- many notifiers ------------------------------------------------------------------- */

#define MANY 10000

static void expect_only(struct cnt *cs, const int *want, int nwant, const char *what)
{
	int total = 0;

	for (int i = 0; i < MANY; i++) {
		int c = calls(&cs[i]);
		bool wanted = false;

		for (int j = 0; j < nwant; j++)
			wanted |= want[j] == i;
		CHECK(c == (wanted ? 1 : 0), "%s: notifier %d called %d times", what, i, c);
		total += c;
		atomic_store(&cs[i].calls, 0);
	}
	CHECK(total == nwant, "%s: %d callbacks", what, total);
}

static void test_many(void)
{
	char *p = map_anon((size_t)MANY * page_size, PROT_READ | PROT_WRITE);
	struct cnt *cs = calloc(MANY, sizeof(*cs));
	const int one_mid[] = { 4321 }, one_first[] = { 0 }, one_last[] = { MANY - 1 };
	const int three[] = { 100, 101, 102 };

	CHECK(cs, "calloc");
	for (int i = 0; i < MANY; i++)
		cnt_insert(&cs[i], p + (size_t)i * page_size, page_size);
	CHECK_EQ(munmap(p + 4321 * page_size, page_size), 0);
	expect_only(cs, one_mid, 1, "munmap of one page");
	discard(p, page_size);
	expect_only(cs, one_first, 1, "first page");
	discard(p + (size_t)(MANY - 1) * page_size, page_size);
	expect_only(cs, one_last, 1, "last page");
	CHECK_EQ(mprotect(p + 100 * page_size, 3 * page_size, PROT_READ), 0);
	expect_only(cs, three, 3, "three pages");
	for (int i = 0; i < MANY; i++)
		uhmm_interval_notifier_remove(&cs[i].mni);
	/* Not over the hole at page 4321: something else may be mapped there. */
	CHECK_EQ(munmap(p, 4321 * page_size), 0);
	CHECK_EQ(munmap(p + 4322 * page_size, (size_t)(MANY - 4322) * page_size), 0);
	for (int i = 0; i < MANY; i++)
		CHECK_EQ(calls(&cs[i]), 0);
	free(cs);
	ok("10000 notifiers over disjoint pages: a change of one page calls exactly "
	   "one callback, of three pages exactly three");
}

static void start(void)
{
	uhmm_sysinfo(&si);
	mm = test_mm();
}

static int finish(void)
{
	uhmm_mm_put(mm);
	return 0;
}

static const struct test_case cases[] = {
	TEST_CASE(test_api),
	TEST_CASE(test_boundaries),
	TEST_CASE(test_seq),
	TEST_CASE(test_read_begin_waits),
	TEST_CASE(test_concurrent),
	TEST_CASE(test_remove_in_callback),
	TEST_CASE(test_deadlock_calls),
	TEST_CASE(test_many),
	/* Last: it exposes a library bug (see the header comment). */
	TEST_CASE(test_read_begin_mid_change),
};

TEST_MAIN("test_notifier", start, finish)
