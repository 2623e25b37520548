// SPDX-License-Identifier: MIT
/*
 * Every source of invalidation delivers the right event over the right
 * range, synchronously: the callback has run, on the calling thread and with
 * flags == 0, before the libc call returns.  A recording notifier logs
 * {start, end, event, flags, owner, thread, cur_seq} under a mutex and the
 * log is checked right after each call returns.
 *
 * Covered:
 *  - munmap of a sub-range (length rounded up to pages) -> UNMAP;
 *  - mremap: MAYMOVE growth forced to move (guard page) -> UNMAP of the old
 *    range; shrink in place -> UNMAP of the removed tail only; MREMAP_FIXED
 *    onto another notifier's interval -> both get UNMAP (old range / target
 *    range); MREMAP_DONTUNMAP -> UNMAP of the old range;
 *  - madvise DONTNEED / FREE / DONTNEED_LOCKED / PAGEOUT (private) and
 *    REMOVE (shared anonymous) -> DISCARD; WILLNEED / NORMAL -> nothing;
 *  - mprotect RW->R and RW->NONE -> PROTECTION, R->RW -> nothing,
 *    pkey_mprotect -> PROTECTION;
 *  - mmap MAP_FIXED over a part -> UNMAP; MAP_FIXED_NOREPLACE -> EEXIST and
 *    nothing;
 *  - sbrk / brk shrink over a notifier -> UNMAP of the released pages;
 *  - fork -> FORK over the private writable mapping holding the interval;
 *    nothing for read-only or shared mappings;
 *  - a change outside every interval -> nothing; overlapping notifiers and
 *    notifiers with identical intervals all get it;
 *  - raw syscall(SYS_munmap) / syscall(SYS_madvise, MADV_DONTNEED) on
 *    private anonymous, shared anonymous, and private anonymous memory mapped
 *    by a raw mmap (as libc's malloc does): with the uffd_wp backstop,
 *    UNMAP / DISCARD arrive later on another thread with
 *    UHMM_NOTIFY_FLAG_AFTER, exactly once; without it, nothing arrives;
 *  - cur_seq is odd and read_retry / check_retry see the invalidation;
 *  - teardown (last uhmm_mm_put) -> RELEASE over each whole interval, once,
 *    and nothing afterwards.
 * Run last because they currently expose library bugs:
 *  - the raw-syscall checks again in a re-executed child with only
 *    procmap_query disabled (what kernels 5.7 - 6.10 offer);
 *  - teardown while a service-thread invalidation runs: a notifier inserted
 *    during it must still get its RELEASE.
 */
#include "common.h"

#include <sys/syscall.h>

#ifndef MADV_DONTNEED_LOCKED
#define MADV_DONTNEED_LOCKED 24
#endif

#define MAX_EV 64

struct ev {
	int id;
	uintptr_t start, end;
	enum uhmm_notify_event event;
	unsigned int flags;
	const void *owner;
	pid_t tid;
	unsigned long seq;
};

struct recn {
	struct uhmm_interval_notifier mni;	/* first: the callback casts */
	int id;
};

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t log_cond = PTHREAD_COND_INITIALIZER;
static struct ev evlog[MAX_EV];
static int nlog;
static bool log_overflow;

static struct uhmm_mm *mm;
static struct uhmm_sysinfo si;
static bool failed_later;	/* a failed child: reported, exit 1 at the end */

static const char *const ev_names[] = {
	"UNMAP", "DISCARD", "PROTECTION", "MIGRATE", "EXCLUSIVE", "FORK", "RELEASE",
};

static pid_t tid_self(void)
{
	return (pid_t)syscall(SYS_gettid);
}

static bool rec_invalidate(struct uhmm_interval_notifier *mni,
			   const struct uhmm_notifier_range *r,
			   unsigned long cur_seq)
{
	struct recn *n = (struct recn *)mni;

	pthread_mutex_lock(&log_lock);
	uhmm_interval_set_seq(mni, cur_seq);
	if (nlog < MAX_EV) {
		evlog[nlog++] = (struct ev){
			.id = n->id, .start = r->start, .end = r->end,
			.event = r->event, .flags = r->flags, .owner = r->owner,
			.tid = tid_self(), .seq = cur_seq,
		};
	} else {
		log_overflow = true;
	}
	pthread_cond_broadcast(&log_cond);
	pthread_mutex_unlock(&log_lock);
	return true;
}

static const struct uhmm_interval_notifier_ops rec_ops = {
	.invalidate = rec_invalidate,
};

static void log_clear(void)
{
	pthread_mutex_lock(&log_lock);
	nlog = 0;
	log_overflow = false;
	pthread_mutex_unlock(&log_lock);
}

/* Copy the log; returns the number of entries. */
static int log_snapshot(struct ev *out)
{
	int n;

	pthread_mutex_lock(&log_lock);
	CHECK(!log_overflow, "event log overflow");
	n = nlog;
	memcpy(out, evlog, sizeof(evlog[0]) * (size_t)n);
	pthread_mutex_unlock(&log_lock);
	return n;
}

/* Wait (no timeout: it must come) until the log holds @n entries. */
static void log_wait(int n)
{
	pthread_mutex_lock(&log_lock);
	while (nlog < n)
		pthread_cond_wait(&log_cond, &log_lock);
	pthread_mutex_unlock(&log_lock);
}

static void print_log(const char *what)
{
	struct ev l[MAX_EV];
	int n = log_snapshot(l);

	fprintf(stderr, "%s: %s: %d event(s) logged:\n", test_name, what, n);
	for (int i = 0; i < n; i++)
		fprintf(stderr, "  notifier %d [%#lx, %#lx) %s flags %#x tid %d seq %lu\n",
			l[i].id, (unsigned long)l[i].start, (unsigned long)l[i].end,
			ev_names[l[i].event], l[i].flags, (int)l[i].tid, l[i].seq);
}

static void rec_insert(struct recn *n, int id, const void *start, size_t len)
{
	memset(n, 0, sizeof(*n));
	n->id = id;
	CHECK_EQ(uhmm_interval_notifier_insert(&n->mni, mm, (uintptr_t)start, len,
					       &rec_ops), 0);
}

static uintptr_t page_up(uintptr_t a)
{
	return (a + page_size - 1) & ~(uintptr_t)(page_size - 1);
}

/* The log must hold exactly @total entries. */
static void expect_total(const char *what, int total)
{
	struct ev l[MAX_EV];
	int n = log_snapshot(l);

	if (n != total)
		print_log(what);
	CHECK(n == total, "%s: %d event(s), expected %d", what, n, total);
}

/*
 * The log must hold exactly one entry for notifier @rn, with this range and
 * event, made synchronously (flags 0, on this thread) or afterwards (FLAG_AFTER,
 * on another thread).  Returns the entry.
 */
static struct ev expect_one(const char *what, const struct recn *rn,
			    uintptr_t s, uintptr_t e, enum uhmm_notify_event evt,
			    bool after)
{
	struct ev l[MAX_EV], found = { 0 };
	int n = log_snapshot(l), hits = 0;

	for (int i = 0; i < n; i++) {
		if (l[i].id == rn->id) {
			found = l[i];
			hits++;
		}
	}
	if (hits != 1 || found.start != s || found.end != e || found.event != evt)
		print_log(what);
	CHECK(hits == 1, "%s: notifier %d got %d events, expected 1", what, rn->id, hits);
	CHECK(found.start == s && found.end == e,
	      "%s: range [%#lx, %#lx), expected [%#lx, %#lx)", what,
	      (unsigned long)found.start, (unsigned long)found.end,
	      (unsigned long)s, (unsigned long)e);
	CHECK(found.event == evt, "%s: event %s, expected %s", what,
	      ev_names[found.event], ev_names[evt]);
	CHECK(found.owner == NULL, "%s: owner %p", what, found.owner);
	CHECK(found.seq & 1, "%s: cur_seq %lu is even", what, found.seq);
	if (after) {
		CHECK(found.flags == UHMM_NOTIFY_FLAG_AFTER, "%s: flags %#x", what,
		      found.flags);
		CHECK(found.tid != tid_self(),
		      "%s: an after-the-fact event ran on the calling thread", what);
	} else {
		CHECK(found.flags == 0, "%s: flags %#x, expected 0", what, found.flags);
		CHECK(found.tid == tid_self(),
		      "%s: callback ran on thread %d, not the caller %d", what,
		      (int)found.tid, (int)tid_self());
	}
	return found;
}

static void ok(const char *what)
{
	printf("%s: %s: ok\n", test_name, what);
}

/* ---- munmap ---------------------------------------------------------------- */

static void test_munmap(void)
{
	char *p = map_anon(8 * page_size, PROT_READ | PROT_WRITE);
	struct recn n;
	unsigned long seq;
	struct ev e;

	memset(p, 1, 8 * page_size);
	rec_insert(&n, 1, p, 8 * page_size);
	log_clear();
	seq = uhmm_interval_read_begin(&n.mni);
	CHECK(!uhmm_interval_read_retry(&n.mni, seq), "no invalidation yet");
	/* Length not a page multiple: the kernel rounds it up, so must uhmm. */
	CHECK_EQ(munmap(p + 2 * page_size, page_size + 1), 0);
	e = expect_one("munmap sub-range", &n, (uintptr_t)p + 2 * page_size,
		       (uintptr_t)p + 4 * page_size, UHMM_NOTIFY_UNMAP, false);
	expect_total("munmap sub-range", 1);
	ok("munmap of a sub-range -> UNMAP of exactly that range (page-rounded), "
	   "synchronous");

	CHECK(e.seq & 1, "cur_seq odd");
	CHECK(uhmm_interval_read_retry(&n.mni, seq),
	      "read_retry must see the invalidation");
	CHECK(uhmm_interval_check_retry(&n.mni, seq),
	      "check_retry must see the invalidation");
	seq = uhmm_interval_read_begin(&n.mni);
	CHECK_EQ(seq, e.seq);
	CHECK(!uhmm_interval_read_retry(&n.mni, seq), "nothing ran since");
	ok("cur_seq is odd; read_retry/check_retry true after the callback's set_seq");

	uhmm_interval_notifier_remove(&n.mni);
	/* Not over the hole: another thread may have mapped something there. */
	CHECK_EQ(munmap(p, 2 * page_size), 0);
	CHECK_EQ(munmap(p + 4 * page_size, 4 * page_size), 0);
}

/* ---- mremap ---------------------------------------------------------------- */

static void test_mremap_grow(void)
{
	char *p = map_anon(5 * page_size, PROT_READ | PROT_WRITE);
	struct recn n;
	char *q;

	/* A guard page right after the region: growing must move it. */
	CHECK_EQ(mprotect(p + 4 * page_size, page_size, PROT_NONE), 0);
	memset(p, 7, 4 * page_size);
	rec_insert(&n, 2, p, 4 * page_size);
	log_clear();
	q = mremap(p, 4 * page_size, 8 * page_size, MREMAP_MAYMOVE);
	CHECK(q != MAP_FAILED, "mremap: %s", strerror(errno));
	CHECK(q != p, "mremap should have moved the region");
	expect_one("mremap grow (moved)", &n, (uintptr_t)p, (uintptr_t)p + 4 * page_size,
		   UHMM_NOTIFY_UNMAP, false);
	expect_total("mremap grow (moved)", 1);
	CHECK_EQ(q[4 * page_size - 1], 7);
	ok("mremap MAYMOVE growth that moves -> UNMAP of the old range");
	uhmm_interval_notifier_remove(&n.mni);
	CHECK_EQ(munmap(q, 8 * page_size), 0);
	CHECK_EQ(munmap(p + 4 * page_size, page_size), 0);
}

static void test_mremap_shrink(void)
{
	char *p = map_anon(4 * page_size, PROT_READ | PROT_WRITE);
	struct recn n;
	char *q;

	memset(p, 7, 4 * page_size);
	rec_insert(&n, 3, p, 4 * page_size);
	log_clear();
	q = mremap(p, 4 * page_size, page_size, 0);
	CHECK(q == p, "mremap shrink: %p (%s)", (void *)q, strerror(errno));
	expect_one("mremap shrink", &n, (uintptr_t)p + page_size,
		   (uintptr_t)p + 4 * page_size, UHMM_NOTIFY_UNMAP, false);
	expect_total("mremap shrink", 1);
	ok("mremap shrink in place -> UNMAP of the removed tail only");
	uhmm_interval_notifier_remove(&n.mni);
	CHECK_EQ(munmap(p, page_size), 0);
}

static void test_mremap_fixed(void)
{
	char *a = map_anon(4 * page_size, PROT_READ | PROT_WRITE);
	char *b = map_anon(6 * page_size, PROT_READ | PROT_WRITE);
	struct recn na, nb;
	char *q;

	memset(a, 1, 4 * page_size);
	memset(b, 2, 6 * page_size);
	rec_insert(&na, 4, a, 4 * page_size);
	rec_insert(&nb, 5, b, 6 * page_size);
	log_clear();
	q = mremap(a, 2 * page_size, 2 * page_size, MREMAP_MAYMOVE | MREMAP_FIXED,
		   b + 2 * page_size);
	CHECK(q == b + 2 * page_size, "mremap FIXED: %s", strerror(errno));
	expect_one("mremap FIXED (source)", &na, (uintptr_t)a, (uintptr_t)a + 2 * page_size,
		   UHMM_NOTIFY_UNMAP, false);
	expect_one("mremap FIXED (target)", &nb, (uintptr_t)b + 2 * page_size,
		   (uintptr_t)b + 4 * page_size, UHMM_NOTIFY_UNMAP, false);
	expect_total("mremap FIXED", 2);
	CHECK_EQ(q[0], 1);
	ok("mremap MREMAP_FIXED -> UNMAP of the old range, and of the target range "
	   "for the notifier covering it");
	uhmm_interval_notifier_remove(&na.mni);
	uhmm_interval_notifier_remove(&nb.mni);
	CHECK_EQ(munmap(a + 2 * page_size, 2 * page_size), 0);	/* not the hole */
	CHECK_EQ(munmap(b, 6 * page_size), 0);
}

static void test_mremap_dontunmap(void)
{
	char *p = map_anon(4 * page_size, PROT_READ | PROT_WRITE);
	struct recn n;
	char *q;

	memset(p, 9, 4 * page_size);
	rec_insert(&n, 6, p, 4 * page_size);
	log_clear();
	q = mremap(p, 4 * page_size, 4 * page_size, MREMAP_MAYMOVE | MREMAP_DONTUNMAP);
	CHECK(q != MAP_FAILED && q != p, "mremap DONTUNMAP: %s", strerror(errno));
	expect_one("mremap DONTUNMAP", &n, (uintptr_t)p, (uintptr_t)p + 4 * page_size,
		   UHMM_NOTIFY_UNMAP, false);
	expect_total("mremap DONTUNMAP", 1);
	CHECK_EQ(q[0], 9);
	ok("mremap MREMAP_DONTUNMAP -> UNMAP of the old range");
	uhmm_interval_notifier_remove(&n.mni);
	CHECK_EQ(munmap(q, 4 * page_size), 0);
	CHECK_EQ(munmap(p, 4 * page_size), 0);
}

/* ---- madvise --------------------------------------------------------------- */

static void test_madvise(void)
{
	static const struct { int advice; const char *name; } discard[] = {
		{ MADV_DONTNEED, "MADV_DONTNEED" },
		{ MADV_FREE, "MADV_FREE" },
		{ MADV_DONTNEED_LOCKED, "MADV_DONTNEED_LOCKED" },
		{ MADV_PAGEOUT, "MADV_PAGEOUT" },
	};
	static const struct { int advice; const char *name; } harmless[] = {
		{ MADV_WILLNEED, "MADV_WILLNEED" },
		{ MADV_NORMAL, "MADV_NORMAL" },
	};
	char *p = map_anon(8 * page_size, PROT_READ | PROT_WRITE);
	char *s = mmap(NULL, 4 * page_size, PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct recn n, ns;
	char what[128];

	CHECK(s != MAP_FAILED, "mmap shared: %s", strerror(errno));
	rec_insert(&n, 7, p, 8 * page_size);
	rec_insert(&ns, 8, s, 4 * page_size);
	for (size_t i = 0; i < sizeof(discard) / sizeof(discard[0]); i++) {
		memset(p, 3, 8 * page_size);
		log_clear();
		/* The last one with a length that is not a page multiple. */
		CHECK(madvise(p + page_size, 2 * page_size - (i == 3 ? 10 : 0),
			      discard[i].advice) == 0, "%s: %s", discard[i].name,
		      strerror(errno));
		snprintf(what, sizeof(what), "%s", discard[i].name);
		expect_one(what, &n, (uintptr_t)p + page_size,
			   (uintptr_t)p + 3 * page_size, UHMM_NOTIFY_DISCARD, false);
		expect_total(what, 1);
		snprintf(what, sizeof(what), "madvise %s -> DISCARD of the range",
			 discard[i].name);
		ok(what);
	}

	memset(s, 4, 4 * page_size);
	log_clear();
	CHECK(madvise(s + page_size, page_size, MADV_REMOVE) == 0, "MADV_REMOVE: %s",
	      strerror(errno));
	expect_one("MADV_REMOVE", &ns, (uintptr_t)s + page_size,
		   (uintptr_t)s + 2 * page_size, UHMM_NOTIFY_DISCARD, false);
	expect_total("MADV_REMOVE", 1);
	CHECK_EQ(s[page_size], 0);
	ok("madvise MADV_REMOVE on shared anonymous memory -> DISCARD of the range");

	for (size_t i = 0; i < sizeof(harmless) / sizeof(harmless[0]); i++) {
		log_clear();
		CHECK(madvise(p, 8 * page_size, harmless[i].advice) == 0, "%s: %s",
		      harmless[i].name, strerror(errno));
		CHECK(madvise(s, 4 * page_size, harmless[i].advice) == 0, "%s: %s",
		      harmless[i].name, strerror(errno));
		expect_total(harmless[i].name, 0);
		snprintf(what, sizeof(what), "madvise %s -> no callback", harmless[i].name);
		ok(what);
	}
	uhmm_interval_notifier_remove(&n.mni);
	uhmm_interval_notifier_remove(&ns.mni);
	CHECK_EQ(munmap(p, 8 * page_size), 0);
	CHECK_EQ(munmap(s, 4 * page_size), 0);
}

/* ---- mprotect -------------------------------------------------------------- */

static void test_mprotect(void)
{
	char *p = map_anon(4 * page_size, PROT_READ | PROT_WRITE);
	const int rw = PROT_READ | PROT_WRITE;
	struct recn n;
	int key;

	memset(p, 5, 4 * page_size);
	rec_insert(&n, 9, p, 4 * page_size);

	log_clear();
	CHECK_EQ(mprotect(p + page_size, 2 * page_size, PROT_READ), 0);
	expect_one("mprotect RW->R", &n, (uintptr_t)p + page_size,
		   (uintptr_t)p + 3 * page_size, UHMM_NOTIFY_PROTECTION, false);
	expect_total("mprotect RW->R", 1);
	ok("mprotect PROT_READ on RW memory -> PROTECTION");

	log_clear();
	CHECK_EQ(mprotect(p + page_size, 2 * page_size, rw), 0);
	expect_total("mprotect R->RW", 0);
	ok("mprotect back to RW -> no callback (adding access)");

	log_clear();
	CHECK_EQ(mprotect(p, 4 * page_size, PROT_NONE), 0);
	expect_one("mprotect RW->NONE", &n, (uintptr_t)p, (uintptr_t)p + 4 * page_size,
		   UHMM_NOTIFY_PROTECTION, false);
	expect_total("mprotect RW->NONE", 1);
	ok("mprotect PROT_NONE -> PROTECTION");

	log_clear();
	CHECK_EQ(mprotect(p, 4 * page_size, rw), 0);
	expect_total("mprotect NONE->RW", 0);
	ok("mprotect NONE->RW -> no callback");

	key = pkey_alloc(0, 0);
	if (key < 0)
		printf("%s: pkey_alloc: %s: using pkey -1 (plain mprotect semantics)\n",
		       test_name, strerror(errno));
	log_clear();
	CHECK(pkey_mprotect(p, page_size, PROT_READ, key) == 0, "pkey_mprotect: %s",
	      strerror(errno));
	expect_one("pkey_mprotect RW->R", &n, (uintptr_t)p, (uintptr_t)p + page_size,
		   UHMM_NOTIFY_PROTECTION, false);
	expect_total("pkey_mprotect RW->R", 1);
	log_clear();
	CHECK(pkey_mprotect(p, page_size, rw, key < 0 ? -1 : 0) == 0,
	      "pkey_mprotect: %s", strerror(errno));
	expect_total("pkey_mprotect R->RW", 0);
	if (key >= 0)
		pkey_free(key);
	ok("pkey_mprotect PROT_READ -> PROTECTION; back to RW -> no callback");

	uhmm_interval_notifier_remove(&n.mni);
	CHECK_EQ(munmap(p, 4 * page_size), 0);
}

/* ---- mmap MAP_FIXED -------------------------------------------------------- */

static void test_mmap_fixed(void)
{
	char *p = map_anon(4 * page_size, PROT_READ | PROT_WRITE);
	const int rw = PROT_READ | PROT_WRITE;
	struct recn n;
	void *q;

	memset(p, 5, 4 * page_size);
	rec_insert(&n, 10, p, 4 * page_size);
	log_clear();
	q = mmap(p + page_size, 2 * page_size, rw, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
		 -1, 0);
	CHECK(q == p + page_size, "mmap MAP_FIXED: %s", strerror(errno));
	expect_one("mmap MAP_FIXED", &n, (uintptr_t)p + page_size,
		   (uintptr_t)p + 3 * page_size, UHMM_NOTIFY_UNMAP, false);
	expect_total("mmap MAP_FIXED", 1);
	ok("mmap MAP_FIXED over part of the region -> UNMAP of that part");

	log_clear();
	q = mmap(p + page_size, page_size, rw,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	CHECK(q == MAP_FAILED && errno == EEXIST, "MAP_FIXED_NOREPLACE: %p %s", q,
	      strerror(errno));
	expect_total("mmap MAP_FIXED_NOREPLACE", 0);
	ok("mmap MAP_FIXED_NOREPLACE over the region fails EEXIST -> no callback");

	uhmm_interval_notifier_remove(&n.mni);
	CHECK_EQ(munmap(p, 4 * page_size), 0);
}

/* ---- sbrk ------------------------------------------------------------------ */

static void test_sbrk(void)
{
	intptr_t inc = 4 * (intptr_t)page_size;
	struct recn n;
	char *old, *cur;
	void *r;

	old = sbrk(inc);
	if (old == (void *)-1) {
		printf("%s: sbrk: SKIP sub-check: sbrk(+%ld) failed: %s\n", test_name,
		       (long)inc, strerror(errno));
		return;
	}
	memset(old, 1, (size_t)inc);
	rec_insert(&n, 11, old, (size_t)inc);
	cur = sbrk(0);
	if (cur != old + inc) {
		/* Something (malloc) moved the break: shrinking would hurt it. */
		printf("%s: sbrk: SKIP sub-check: the break moved under the test\n",
		       test_name);
		uhmm_interval_notifier_remove(&n.mni);
		return;
	}
	log_clear();
	r = sbrk(-inc);
	CHECK(r == old + inc, "sbrk(-%ld) returned %p, expected %p (%s)", (long)inc, r,
	      (void *)(old + inc), strerror(errno));
	expect_one("sbrk shrink", &n, page_up((uintptr_t)old), page_up((uintptr_t)old + inc),
		   UHMM_NOTIFY_UNMAP, false);
	expect_total("sbrk shrink", 1);
	ok("sbrk(-N pages) -> UNMAP of the released part of the heap");
	uhmm_interval_notifier_remove(&n.mni);

	/* The same with brk(). */
	old = sbrk(inc);
	CHECK(old != (void *)-1, "sbrk(+%ld) again: %s", (long)inc, strerror(errno));
	memset(old, 1, (size_t)inc);
	rec_insert(&n, 11, old, (size_t)inc);
	if (sbrk(0) != old + inc) {
		printf("%s: brk: SKIP sub-check: the break moved under the test\n",
		       test_name);
		uhmm_interval_notifier_remove(&n.mni);
		return;
	}
	log_clear();
	CHECK(brk(old) == 0, "brk: %s", strerror(errno));
	CHECK(sbrk(0) == old, "the break is back");
	expect_one("brk shrink", &n, page_up((uintptr_t)old), page_up((uintptr_t)old + inc),
		   UHMM_NOTIFY_UNMAP, false);
	expect_total("brk shrink", 1);
	ok("brk(lower) -> UNMAP of the released part of the heap");
	uhmm_interval_notifier_remove(&n.mni);
}

/* ---- fork ------------------------------------------------------------------ */

static void test_fork(void)
{
	char *p = map_anon(4 * page_size, PROT_READ | PROT_WRITE);
	char *ro = map_anon(2 * page_size, PROT_READ);
	char *sh = mmap(NULL, 2 * page_size, PROT_READ | PROT_WRITE,
			MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct recn n, nro, nsh;
	struct ev l[MAX_EV];
	int cnt, hits = 0, status;
	uintptr_t s = (uintptr_t)p + page_size, e = (uintptr_t)p + 3 * page_size;
	pid_t pid;

	CHECK(sh != MAP_FAILED, "mmap shared: %s", strerror(errno));
	memset(p, 1, 4 * page_size);
	memset(sh, 1, 2 * page_size);
	rec_insert(&n, 12, p + page_size, 2 * page_size);
	rec_insert(&nro, 13, ro, 2 * page_size);
	rec_insert(&nsh, 14, sh, 2 * page_size);
	log_clear();
	pid = fork();
	CHECK(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0)
		_exit(0);
	CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %#x", status);

	cnt = log_snapshot(l);
	for (int i = 0; i < cnt; i++) {
		if (l[i].id != n.id)
			continue;
		hits++;
		CHECK(l[i].event == UHMM_NOTIFY_FORK, "fork: event %s", ev_names[l[i].event]);
		CHECK(l[i].flags == 0 && l[i].tid == tid_self(),
		      "fork: flags %#x, tid %d: must be synchronous", l[i].flags,
		      (int)l[i].tid);
		CHECK(l[i].start <= s && e <= l[i].end,
		      "fork: range [%#lx, %#lx) must contain the interval [%#lx, %#lx)",
		      (unsigned long)l[i].start, (unsigned long)l[i].end,
		      (unsigned long)s, (unsigned long)e);
		CHECK((l[i].start | l[i].end) % page_size == 0, "fork: page aligned");
		CHECK(l[i].seq & 1, "fork: cur_seq odd");
	}
	if (hits != 1 || cnt != 1)
		print_log("fork");
	CHECK_EQ(hits, 1);
	CHECK_EQ(cnt, 1);
	ok("fork -> FORK over the private writable mapping containing the interval; "
	   "nothing for a read-only or a shared mapping");

	uhmm_interval_notifier_remove(&n.mni);
	uhmm_interval_notifier_remove(&nro.mni);
	uhmm_interval_notifier_remove(&nsh.mni);
	CHECK_EQ(munmap(p, 4 * page_size), 0);
	CHECK_EQ(munmap(ro, 2 * page_size), 0);
	CHECK_EQ(munmap(sh, 2 * page_size), 0);
}

/* ---- selection of notifiers ------------------------------------------------ */

static void test_selection(void)
{
	char *p = map_anon(8 * page_size, PROT_READ | PROT_WRITE);
	char *other = map_anon(2 * page_size, PROT_READ | PROT_WRITE);
	uintptr_t a = (uintptr_t)p;
	struct recn n1, n2, n3;

	memset(p, 1, 8 * page_size);
	rec_insert(&n1, 21, p, 4 * page_size);			/* pages 0-3 */
	rec_insert(&n2, 22, p + 3 * page_size, 3 * page_size);	/* pages 3-5 */
	rec_insert(&n3, 23, p, 4 * page_size);			/* same as n1 */

	log_clear();
	CHECK_EQ(madvise(p + 6 * page_size, 2 * page_size, MADV_DONTNEED), 0);
	CHECK_EQ(mprotect(p + 6 * page_size, 2 * page_size, PROT_READ), 0);
	CHECK_EQ(munmap(other, 2 * page_size), 0);
	expect_total("outside every interval", 0);
	ok("changes outside every notifier's interval -> no callback");

	log_clear();
	CHECK_EQ(madvise(p + 3 * page_size, page_size, MADV_DONTNEED), 0);
	expect_one("overlap n1", &n1, a + 3 * page_size, a + 4 * page_size,
		   UHMM_NOTIFY_DISCARD, false);
	expect_one("overlap n2", &n2, a + 3 * page_size, a + 4 * page_size,
		   UHMM_NOTIFY_DISCARD, false);
	expect_one("overlap n3", &n3, a + 3 * page_size, a + 4 * page_size,
		   UHMM_NOTIFY_DISCARD, false);
	expect_total("overlap", 3);
	ok("a change overlapping several notifiers -> each gets it");

	log_clear();
	CHECK_EQ(madvise(p + page_size, page_size, MADV_DONTNEED), 0);
	expect_one("identical n1", &n1, a + page_size, a + 2 * page_size,
		   UHMM_NOTIFY_DISCARD, false);
	expect_one("identical n3", &n3, a + page_size, a + 2 * page_size,
		   UHMM_NOTIFY_DISCARD, false);
	expect_total("identical", 2);
	ok("notifiers with identical intervals -> both get it, the other does not");

	log_clear();
	CHECK_EQ(munmap(p + 5 * page_size, page_size), 0);
	expect_one("only n2", &n2, a + 5 * page_size, a + 6 * page_size,
		   UHMM_NOTIFY_UNMAP, false);
	expect_total("only n2", 1);
	ok("a change overlapping one notifier only -> only that one");

	uhmm_interval_notifier_remove(&n1.mni);
	uhmm_interval_notifier_remove(&n2.mni);
	uhmm_interval_notifier_remove(&n3.mni);
	CHECK_EQ(munmap(p, 5 * page_size), 0);	/* not the hole at page 5 */
	CHECK_EQ(munmap(p + 6 * page_size, 2 * page_size), 0);
}

/* ---- raw system calls ------------------------------------------------------ */

/*
 * The log must hold exactly one entry for notifier @rn over [s, e), with
 * this event, synchronous or after the fact.
 */
static void expect_at(const char *what, const struct recn *rn, uintptr_t s,
		      uintptr_t e, enum uhmm_notify_event evt, bool after)
{
	struct ev l[MAX_EV], found = { 0 };
	int n = log_snapshot(l), hits = 0;

	for (int i = 0; i < n; i++) {
		if (l[i].id == rn->id && l[i].start == s && l[i].end == e) {
			found = l[i];
			hits++;
		}
	}
	if (hits != 1)
		print_log(what);
	CHECK(hits == 1, "%s: %d events for notifier %d over [%#lx, %#lx), expected 1",
	      what, hits, rn->id, (unsigned long)s, (unsigned long)e);
	CHECK(found.event == evt, "%s: event %s, expected %s", what,
	      ev_names[found.event], ev_names[evt]);
	CHECK(found.seq & 1, "%s: cur_seq %lu is even", what, found.seq);
	if (after)
		CHECK(found.flags == UHMM_NOTIFY_FLAG_AFTER && found.tid != tid_self(),
		      "%s: flags %#x tid %d: expected FLAG_AFTER on another thread",
		      what, found.flags, (int)found.tid);
	else
		CHECK(found.flags == 0 && found.tid == tid_self(),
		      "%s: flags %#x tid %d: expected 0 on this thread", what,
		      found.flags, (int)found.tid);
}

/*
 * Raw munmap of page 1 and raw MADV_DONTNEED of page 2 of the 6-page region
 * @p, then a wrapped munmap of page 5.  With @wait, each after-the-fact
 * callback is awaited on the condition variable (it must come); without, the
 * wrapped munmap is the synchronisation point (its wrapper waits for every
 * userfaultfd event read so far to be processed), so a missing callback
 * fails instead of hanging.
 */
static void raw_checks(char *p, struct recn *n, const char *kind, bool wait)
{
	uintptr_t a = (uintptr_t)p;
	bool backstop = si.active & UHMM_FEAT_UFFD_WP;
	char what[200];
	unsigned long seq;

	log_clear();
	seq = uhmm_interval_read_begin(&n->mni);
	CHECK(syscall(SYS_munmap, p + page_size, page_size) == 0, "raw munmap: %s",
	      strerror(errno));
	if (backstop && wait)
		log_wait(1);
	CHECK(syscall(SYS_madvise, p + 2 * page_size, page_size, MADV_DONTNEED) == 0,
	      "raw madvise: %s", strerror(errno));
	if (backstop && wait)
		log_wait(2);
	/* Synchronization point: a wrapped munmap, whose callback we expect. */
	CHECK_EQ(munmap(p + 5 * page_size, page_size), 0);
	snprintf(what, sizeof(what), "libc munmap after raw syscalls (%s)", kind);
	expect_at(what, n, a + 5 * page_size, a + 6 * page_size, UHMM_NOTIFY_UNMAP,
		  false);
	if (!backstop) {
		expect_total(what, 1);
		printf("%s: the raw-syscall backstop is off in this mode (uffd_wp not "
		       "active)\n", test_name);
		snprintf(what, sizeof(what), "raw munmap / MADV_DONTNEED on %s memory -> "
			 "no callback (only the wrapped munmap's)", kind);
		ok(what);
		return;
	}
	snprintf(what, sizeof(what), "raw munmap (%s)", kind);
	expect_at(what, n, a + page_size, a + 2 * page_size, UHMM_NOTIFY_UNMAP, true);
	snprintf(what, sizeof(what), "raw syscall(SYS_munmap) on %s memory -> UNMAP "
		 "with FLAG_AFTER on another thread", kind);
	ok(what);
	snprintf(what, sizeof(what), "raw madvise (%s)", kind);
	expect_at(what, n, a + 2 * page_size, a + 3 * page_size, UHMM_NOTIFY_DISCARD,
		  true);
	snprintf(what, sizeof(what), "raw syscall(SYS_madvise, MADV_DONTNEED) on %s "
		 "memory -> DISCARD with FLAG_AFTER on another thread", kind);
	ok(what);
	CHECK(uhmm_interval_read_retry(&n->mni, seq),
	      "read_retry must see the after-the-fact invalidations");
	snprintf(what, sizeof(what), "raw syscalls (%s): all", kind);
	expect_total(what, 3);
	snprintf(what, sizeof(what), "no duplicate or stray events after the raw "
		 "syscalls (%s)", kind);
	ok(what);
}

/* Unmap what raw_checks() left: pages 0 and 2-4 (not the holes at 1 and 5). */
static void unmap_raw_region(char *p)
{
	CHECK_EQ(munmap(p, page_size), 0);
	CHECK_EQ(munmap(p + 2 * page_size, 3 * page_size), 0);
}

static void test_raw_syscalls(bool wait)
{
	const int rw = PROT_READ | PROT_WRITE;
	char *p = map_anon(6 * page_size, rw);
	char *s = mmap(NULL, 6 * page_size, rw, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct recn n, ns, nr;
	char *r;

	CHECK(s != MAP_FAILED, "mmap shared: %s", strerror(errno));
	memset(p, 1, 6 * page_size);
	memset(s, 1, 6 * page_size);
	rec_insert(&n, 31, p, 6 * page_size);
	rec_insert(&ns, 32, s, 6 * page_size);
	/*
	 * A mapping made the way libc makes its own (malloc of a large block):
	 * a raw mmap, no wrapper, after uhmm has already looked at the
	 * mappings.  A notifier over it must still get the backstop.
	 */
	r = (char *)syscall(SYS_mmap, NULL, 6 * page_size, rw,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(r != MAP_FAILED, "raw mmap: %s", strerror(errno));
	memset(r, 1, 6 * page_size);
	rec_insert(&nr, 33, r, 6 * page_size);
	raw_checks(p, &n, "private anonymous", wait);
	raw_checks(s, &ns, "shared anonymous", wait);
	raw_checks(r, &nr, "private anonymous mapped by a raw mmap", wait);
	uhmm_interval_notifier_remove(&n.mni);
	uhmm_interval_notifier_remove(&ns.mni);
	uhmm_interval_notifier_remove(&nr.mni);
	unmap_raw_region(p);
	unmap_raw_region(s);
	unmap_raw_region(r);
}

/*
 * Kernels 5.7 - 6.10 have uffd-wp but no PROCMAP_QUERY: run the raw-syscall
 * checks once more in a fresh process with only procmap_query disabled.
 */
static int child_procmap_off(void *arg)
{
	(void)arg;
	setenv("UHMM_DISABLE", "procmap_query", 1);
	execl("/proc/self/exe", "test_invalidate_sources", "procmap-off", (char *)NULL);
	return 4;
}

static int exec_procmap_off(void)
{
	test_init("test_invalidate_sources[procmap_query off]");
	uhmm_sysinfo(&si);
	if (!(si.active & UHMM_FEAT_UFFD_WP) || (si.active & UHMM_FEAT_PROCMAP_QUERY))
		SKIP("not the uffd_wp-without-procmap_query mode");
	mm = test_mm();
	test_raw_syscalls(false);
	uhmm_mm_put(mm);
	printf("%s: PASS\n", test_name);
	return 0;
}

static void test_raw_procmap_off(void)
{
	const unsigned int both = UHMM_FEAT_UFFD_WP | UHMM_FEAT_PROCMAP_QUERY;
	int st;

	if ((si.active & both) != both)
		SKIP_CASE("%s: raw syscalls without procmap_query: this mode does not have "
			  "both uffd_wp and procmap_query active", test_name);
	st = run_child(child_procmap_off, NULL);
	if (st != 0) {
		/* Go on with the other checks; fail at the end. */
		fprintf(stderr, "%s: FAIL: the raw-syscall checks with procmap_query "
			"disabled failed (status %d)\n", test_name, st);
		failed_later = true;
		return;
	}
	ok("raw-syscall checks repeated with procmap_query disabled (uffd_wp on)");
}

/* ---- teardown -------------------------------------------------------------- */

static void test_release(void)
{
	char *p = map_anon(6 * page_size, PROT_READ | PROT_WRITE);
	struct recn n1, n2;
	struct ev l[MAX_EV];
	int cnt, h1 = 0, h2 = 0;

	/* Unaligned: the interval is widened to pages 0-3. */
	rec_insert(&n1, 41, p + 10, 3 * page_size);
	CHECK(n1.mni.start == (uintptr_t)p && n1.mni.end == (uintptr_t)p + 4 * page_size,
	      "interval widened to pages");
	rec_insert(&n2, 42, p + page_size, page_size);
	log_clear();
	uhmm_mm_put(mm);		/* the last reference: teardown */
	mm = NULL;
	cnt = log_snapshot(l);
	for (int i = 0; i < cnt; i++) {
		const struct recn *rn = l[i].id == n1.id ? &n1 : &n2;

		CHECK(l[i].id == n1.id || l[i].id == n2.id, "unknown notifier");
		if (rn == &n1)
			h1++;
		else
			h2++;
		CHECK(l[i].event == UHMM_NOTIFY_RELEASE, "event %s", ev_names[l[i].event]);
		CHECK(l[i].start == (uintptr_t)p + (rn == &n1 ? 0 : page_size) &&
		      l[i].end == (uintptr_t)p + (rn == &n1 ? 4 : 2) * page_size,
		      "release of notifier %d over [%#lx, %#lx): not its whole interval",
		      l[i].id, (unsigned long)l[i].start, (unsigned long)l[i].end);
		CHECK(l[i].tid == tid_self(), "release runs in uhmm_mm_put's thread");
		CHECK(l[i].seq & 1, "cur_seq odd");
	}
	if (h1 != 1 || h2 != 1)
		print_log("release");
	CHECK_EQ(h1, 1);
	CHECK_EQ(h2, 1);

	/* Detached: nothing more, ever. */
	log_clear();
	uhmm_interval_notifier_remove(&n1.mni);
	CHECK_EQ(munmap(p, 6 * page_size), 0);
	uhmm_interval_notifier_remove(&n2.mni);
	expect_total("after teardown", 0);
	ok("teardown (last uhmm_mm_put) -> RELEASE over each notifier's whole "
	   "interval, exactly once; nothing afterwards");
}

/*
 * Teardown while an after-the-fact invalidation is still running on uhmm's
 * service thread, with a notifier inserted during it: the insert returned 0
 * before the last put, so that notifier is "still registered" and must get
 * its RELEASE like every other.  The service thread's callback is let go
 * just before the put, so nothing waits for teardown: a teardown that first
 * waits for running invalidations passes, and one that walks the notifiers
 * while that callback is still finishing (the usual interleaving: the
 * service thread must first be woken) is checked too.
 */
static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool blocked, putting, go;
} rr = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };

/* Lets the service thread's callback go once main is about to put. */
static void *rr_releaser(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&rr.lock);
	while (!rr.putting)
		pthread_cond_wait(&rr.cond, &rr.lock);
	rr.go = true;
	pthread_cond_broadcast(&rr.cond);
	pthread_mutex_unlock(&rr.lock);
	return NULL;
}

static bool rr_invalidate(struct uhmm_interval_notifier *mni,
			  const struct uhmm_notifier_range *r,
			  unsigned long cur_seq)
{
	rec_invalidate(mni, r, cur_seq);
	pthread_mutex_lock(&rr.lock);
	if (r->flags & UHMM_NOTIFY_FLAG_AFTER) {
		rr.blocked = true;
		pthread_cond_broadcast(&rr.cond);
		while (!rr.go)
			pthread_cond_wait(&rr.cond, &rr.lock);
	}
	pthread_mutex_unlock(&rr.lock);
	return true;
}

static const struct uhmm_interval_notifier_ops rr_ops = { .invalidate = rr_invalidate };

static void release_round(void)
{
	char *p, *q;
	struct recn np, nq;
	struct ev l[MAX_EV];
	int cnt, hq = 0;
	pthread_t g;

	rr.blocked = rr.putting = rr.go = false;
	mm = test_mm();
	p = map_anon(2 * page_size, PROT_READ | PROT_WRITE);
	q = map_anon(2 * page_size, PROT_READ | PROT_WRITE);
	memset(p, 1, 2 * page_size);
	memset(&np, 0, sizeof(np));
	np.id = 51;
	CHECK_EQ(uhmm_interval_notifier_insert(&np.mni, mm, (uintptr_t)p, 2 * page_size,
					       &rr_ops), 0);
	log_clear();
	CHECK(syscall(SYS_madvise, p, page_size, MADV_DONTNEED) == 0, "raw madvise: %s",
	      strerror(errno));
	pthread_mutex_lock(&rr.lock);
	while (!rr.blocked)
		pthread_cond_wait(&rr.cond, &rr.lock);
	pthread_mutex_unlock(&rr.lock);
	/* The service thread's invalidation is running: insert, then tear down. */
	rec_insert(&nq, 52, q, 2 * page_size);
	CHECK_EQ(pthread_create(&g, NULL, rr_releaser, NULL), 0);
	pthread_mutex_lock(&rr.lock);
	rr.putting = true;
	pthread_cond_broadcast(&rr.cond);
	pthread_mutex_unlock(&rr.lock);
	uhmm_mm_put(mm);
	CHECK_EQ(pthread_join(g, NULL), 0);
	mm = NULL;

	cnt = log_snapshot(l);
	for (int i = 0; i < cnt; i++) {
		if (l[i].id != nq.id)
			continue;
		hq++;
		CHECK(l[i].event == UHMM_NOTIFY_RELEASE &&
		      l[i].start == (uintptr_t)q && l[i].end == (uintptr_t)q + 2 * page_size,
		      "notifier inserted during an invalidation: %s over [%#lx, %#lx)",
		      ev_names[l[i].event], (unsigned long)l[i].start,
		      (unsigned long)l[i].end);
	}
	if (hq != 1)
		print_log("teardown during a service-thread invalidation");
	CHECK(hq == 1, "a notifier inserted (insert returned 0) while a service-thread "
	      "invalidation ran got %d RELEASE callbacks at teardown, expected 1", hq);
	uhmm_interval_notifier_remove(&np.mni);
	uhmm_interval_notifier_remove(&nq.mni);
	CHECK_EQ(munmap(p, 2 * page_size), 0);
	CHECK_EQ(munmap(q, 2 * page_size), 0);
}

/*
 * Whether teardown walks the notifiers before the service thread's callback
 * has returned depends on scheduling: run several rounds (each with a new
 * context).  A correct library passes every interleaving.
 */
#define RELEASE_ROUNDS 16

static void test_release_during_invalidation(void)
{
	if (!(si.active & UHMM_FEAT_UFFD_WP))
		SKIP_CASE("%s: teardown during a service-thread invalidation: not exercised "
			  "(uffd_wp backstop off in this mode)", test_name);
	for (int i = 0; i < RELEASE_ROUNDS; i++)
		release_round();
	ok("teardown while a service-thread invalidation runs: a notifier inserted "
	   "during it still gets its RELEASE");
}

static void case_raw_syscalls(void)
{
	test_raw_syscalls(true);
}

/*
 * The release cases need the program's own reference gone, so that theirs
 * is the last one (test_release() drops it itself when the cases run in order).
 */
static void case_release_during_invalidation(void)
{
	if (mm) {
		uhmm_mm_put(mm);
		mm = NULL;
	}
	test_release_during_invalidation();
}

static void start(void)
{
	uhmm_sysinfo(&si);
	mm = test_mm();
	printf("%s: uffd_wp backstop %s\n", test_name,
	       si.active & UHMM_FEAT_UFFD_WP ? "active" : "off");
}

static int finish(void)
{
	if (mm)		/* test_release() drops the last reference itself */
		uhmm_mm_put(mm);
	return failed_later ? 1 : 0;
}

static const struct test_case cases[] = {
	TEST_CASE(test_munmap),
	TEST_CASE(test_mremap_grow),
	TEST_CASE(test_mremap_shrink),
	TEST_CASE(test_mremap_fixed),
	TEST_CASE(test_mremap_dontunmap),
	TEST_CASE(test_madvise),
	TEST_CASE(test_mprotect),
	TEST_CASE(test_mmap_fixed),
	TEST_CASE(test_sbrk),
	TEST_CASE(test_fork),
	TEST_CASE(test_selection),
	{ "raw_syscalls", case_raw_syscalls },
	TEST_CASE(test_release),
	/* Last: these expose library bugs (see the header comment). */
	TEST_CASE(test_raw_procmap_off),
	{ "release_during_invalidation", case_release_during_invalidation },
};

int main(int argc, char **argv)
{
	if (argc > 1 && !strcmp(argv[1], "procmap-off"))
		return exec_procmap_off();
	return test_main(argc, argv, "test_invalidate_sources", TEST_CASES(cases), start,
			 finish);
}
