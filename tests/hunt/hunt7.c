// SPDX-License-Identifier: MIT
/*
 * Adversarial programs against the public API, round 7 (tests/hunt/FINDINGS.md):
 * the item 19 fix (a raw mremap moves the pages a migration holds, and the
 * migration follows them: docs/CONCURRENCY.md rule 11).  Not in CTest.
 * Usage: hunt7 SCENARIO ROUNDS [TIMEOUT_S]; each round a forked child with
 * alarm() (round.h); HUNT7_FIRST=k HUNT7_STEP=s rerun one round kind;
 * ROUNDS 0 runs one round in this process.  The device is tdev
 * (testdev/tdev.c, public API only, linked in).
 *
 * Lock-step scenarios (no sleeps): a "flight" is a migrate_vma (to the
 * device or home, tdev's copy done here) run by its own thread and
 * stopped inside, after its setup or after uhmm_migrate_vma_pages(); the
 * round's main thread then moves memory with raw system calls
 * (syscall(SYS_mremap), so uhmm sees only the events), optionally waits
 * until uhmm's worker has applied them (a migration setup of an unrelated
 * page: uhmm__events_catch_up()), releases the flights in a chosen order
 * and checks every byte where the kernel's semantics put the data, then
 * unmaps everything and requires tdev_used() == 0.  HUNT7_EV: 0 the
 * events are applied before the flights end, 1 left to uhmm's worker, 2
 * the worker is held (in a second device's migrate_to_ram) from before
 * the move until every flight has ended (default: by round).
 *
 *  chain	one region, one flight; moved A->B->C, A->B->A, or A->B
 *		and B->C with the event applied between the two moves
 *  partial	one flight over 16 pages; part of it moved (a middle run,
 *		the head, the tail), or the mapping shrunk in place (tail
 *		unmapped), shrunk and moved, grown and moved
 *  collide	MREMAP_FIXED onto memory another flight holds (X over A,
 *		Y over B, A moved onto B; finalize order varies), one
 *		flight over [A, A+2n) with one half moved onto the other,
 *		and X moved onto Y whose pages a device-range eviction
 *		holds (HUNT7_KIND=0, 1, 2 picks one; default round % 3)
 *  reuse	a flight's region moved away, a new tenant mapped at once at
 *		the old address (raw mmap or the wrapper): it must work at
 *		once (no wait for the old migration) and keep its own data;
 *		with HUNT7_REG (default: odd round kinds) the tenant is
 *		registered with uhmm first (migrated to tdev and home) and
 *		half of it discarded by a raw MADV_DONTNEED
 *  compound	a TDEV_COMPOUND pool (2 MiB device pages): a 2 MiB aligned
 *		region of 1024 pages on the device as compound pages, a flight
 *		home or a device-range eviction stopped inside, the region (or
 *		a part of it) moved to an address not 2 MiB aligned
 *		(HUNT7_HOW=3: all of it, and a new tenant at the old address)
 *  lateunmap	an UNMAP applied late drops what a migration claimed at the
 *		address after it was mapped again (see its comment)
 *
 * Free-running: stress (see its comment).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uhmm/uhmm.h>
#include <uhmm/simdev.h>

#include "round.h"
#include "../../testdev/tdev.h"

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

#define PG 4096UL

static unsigned seed;
static int g_round;

#define FAIL(...) do { fprintf(stderr, "FAIL round %d %s:%d: ", g_round, __func__, __LINE__); fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); _exit(1); } while (0)

#include "pages.h"

static void nap_us(long us)
{
	struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };
	nanosleep(&ts, NULL);
}

static struct uhmm_mm *getmm(void)
{
	struct uhmm_mm *mm = NULL;
	int r = uhmm_mm_get(&mm);
	if (r) FAIL("mm get %d", r);
	return mm;
}

/* Which (tag, page) a page holds, among tags [1, 64) and pages [0, 2048). */
static void ident(const char *p, char *out, size_t n)
{
	const uint64_t w0 = *(const uint64_t *)(const void *)p;
	for (unsigned t = 1; t < 64; t++)
		for (size_t pg = 0; pg < 2048; pg++)
			if (w0 == word(t, pg, 0)) {
				snprintf(out, n, "tag %u page %zu%s", t, pg, page_is(p, t, pg) == 1 ? "" : " (word 0 only)");
				return;
			}
	snprintf(out, n, w0 ? "unknown data" : "zero");
}

static long raw_mremap(void *from, size_t olen, size_t nlen, int flags, void *to)
{
	return syscall(SYS_mremap, from, olen, nlen, flags, to);
}

/* ---- the reservation every lock-step round maps into ---- */

static char *area;		/* PROT_NONE, slots of SLOT pages */
#define SLOT 1024		/* pages a slot (4 MiB): room for any region + guard */
#define NSLOT 16

static char *slot_at(int k) { return area + (size_t)k * SLOT * PG; }

static void area_init(bool aligned)
{
	size_t len = (size_t)NSLOT * SLOT * PG, blk = (size_t)2 << 20;
	char *p = mmap(NULL, len + blk, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED) FAIL("reserve %d", errno);
	area = aligned ? (char *)(((uintptr_t)p + blk - 1) & ~(uintptr_t)(blk - 1)) : p;
}

/* A region of @np pages at @at (inside a slot), filled with @tag's data. */
static char *region_map(char *at, size_t np, unsigned tag)
{
	char *p = mmap(at, np * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	if (p != at) FAIL("mmap %p: %d", (void *)at, errno);
	fill(p, np, tag, 0);
	return p;
}

/*
 * Put the PROT_NONE reservation back over a hole (a region moved away).
 * False if something else was mapped there meanwhile (another thread's
 * mmap(NULL), uhmm's staging included, may take the hole first): the
 * slot is no longer the program's to move into.
 */
static bool rereserve(char *at, size_t np)
{
	void *p = (void *)syscall(SYS_mmap, at, np * PG, PROT_NONE,
				  MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE | MAP_NORESERVE, -1, 0);
	if (p != at && p != MAP_FAILED)
		munmap(p, np * PG);
	return p == at;
}

/*
 * Check @np pages at @p: page i must hold (tag, pgoff + i), or zero when
 * @tag is 0.  Returns the wrong pages (the first few printed).
 */
static int check(const char *when, const char *p, size_t np, unsigned tag, size_t pgoff)
{
	int bad = 0;
	for (size_t i = 0; i < np; i++) {
		int k = page_is(p + i * PG, tag, pgoff + i);
		if (tag ? k == 1 : k == 0)
			continue;
		if (bad++ < 4) {
			char id[80];
			ident(p + i * PG, id, sizeof(id));
			fprintf(stderr, "round %d: %s: page %zu at %p reads %s, want %s (tag %u page %zu)\n",
				g_round, when, i, (const void *)(p + i * PG), id, tag ? "its data" : "zero",
				tag, pgoff + i);
		}
	}
	return bad;
}

/* ---- events: wait until uhmm's worker has applied every event read ---- */

static struct tdev *g_td;
static struct uhmm_mm *g_mm;
static char *g_dummy;

static void catch_up(void)
{
	/* A migration's setup applies every pending event first (rule 4). */
	long r = tdev_to_sys(g_td, (uintptr_t)g_dummy, (uintptr_t)g_dummy + PG, NULL);
	if (r < 0 && r != -ENOENT && r != -EBUSY) FAIL("catch-up migration %ld", r);
}

/* ---- a flight: a migrate_vma stopped inside, run by its own thread ---- */

enum { H_SETUP, H_PAGES };

struct flight {
	pthread_t th;
	struct tdev *td;
	uintptr_t start;
	size_t np;
	bool to_dev;
	int hook;
	int state;		/* 1 inside, 2 go, 3 done */
	long collected, migrated;
	int setup_ret;
};

static pthread_mutex_t fl_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t fl_cv = PTHREAD_COND_INITIALIZER;

static void fl_set(struct flight *f, int s)
{
	pthread_mutex_lock(&fl_mu);
	f->state = s;
	pthread_cond_broadcast(&fl_cv);
	pthread_mutex_unlock(&fl_mu);
}

static void fl_wait(struct flight *f, int s)
{
	pthread_mutex_lock(&fl_mu);
	while (f->state < s)
		pthread_cond_wait(&fl_cv, &fl_mu);
	pthread_mutex_unlock(&fl_mu);
}

static void fl_hook(struct flight *f)
{
	fl_set(f, 1);
	fl_wait(f, 2);
}

static void fl_copy(struct flight *f, struct uhmm_migrate_vma *m)
{
	for (size_t i = 0; i < f->np; i++) {
		if (!(m->src[i] & UHMM_MIGRATE_PFN_MIGRATE))
			continue;
		if (m->src[i] & UHMM_MIGRATE_PFN_COMPOUND)
			FAIL("a compound entry in a flight without SELECT_COMPOUND");
		if (f->to_dev) {
			struct uhmm_page *p = tdev_alloc(f->td);
			const void *from;
			if (!p) continue;
			from = (m->src[i] & UHMM_MIGRATE_PFN_VALID) ? uhmm_migrate_pfn_addr(m, i) : NULL;
			if (from) memcpy(tdev_page_mem(f->td, p), from, PG);
			else memset(tdev_page_mem(f->td, p), 0, PG);
			m->dst[i] = uhmm_migrate_pfn(uhmm_page_to_pfn(p)) | (m->src[i] & UHMM_MIGRATE_PFN_WRITE);
		} else {
			struct uhmm_page *p = uhmm_pfn_to_page(f->td->mm, uhmm_migrate_pfn_to_pfn(m->src[i]));
			void *to = p ? uhmm_migrate_alloc_sys(m, i) : NULL;
			if (to) memcpy(to, tdev_page_mem(f->td, p), PG);
		}
	}
}

static void *fl_thread(void *a)
{
	struct flight *f = a;
	uint64_t *src = calloc(f->np, 8), *dst = calloc(f->np, 8);
	struct uhmm_migrate_vma m = {
		.mm = f->td->mm, .start = f->start, .end = f->start + f->np * PG, .src = src, .dst = dst,
		.pgmap_owner = &f->td->owner_token,
		.flags = f->to_dev ? UHMM_MIGRATE_VMA_SELECT_SYSTEM : UHMM_MIGRATE_VMA_SELECT_DEVICE_PRIVATE,
	};
	if (!src || !dst) FAIL("calloc");
	f->setup_ret = uhmm_migrate_vma_setup(&m);
	if (f->setup_ret) {
		fl_hook(f);
		fl_set(f, 3);
		return NULL;
	}
	for (size_t i = 0; i < f->np; i++)
		f->collected += !!(src[i] & UHMM_MIGRATE_PFN_MIGRATE);
	if (f->hook == H_SETUP) fl_hook(f);
	fl_copy(f, &m);
	uhmm_migrate_vma_pages(&m);
	if (f->hook == H_PAGES) fl_hook(f);
	uhmm_migrate_vma_finalize(&m);
	for (size_t i = 0; i < f->np; i++)
		f->migrated += !!(src[i] & UHMM_MIGRATE_PFN_MIGRATE);
	free(src);
	free(dst);
	fl_set(f, 3);
	return NULL;
}

static void fl_start(struct flight *f, struct tdev *td, void *start, size_t np, bool to_dev, int hook)
{
	memset(f, 0, sizeof(*f));
	f->td = td;
	f->start = (uintptr_t)start;
	f->np = np;
	f->to_dev = to_dev;
	f->hook = hook;
	if (pthread_create(&f->th, NULL, fl_thread, f)) FAIL("pthread_create");
	fl_wait(f, 1);
}


/*
 * Holding uhmm's worker (the one thread that applies events) in a second
 * device's migrate_to_ram, from before a move until after the finalize:
 * the REMAP / UNMAP events are read (the mremap returns) but applied only
 * after the migrations ended (as tests/test_remap_race.c's evict does).
 */
static struct tdev *h_td;
static char *h_page;
static int h_req, h_held, h_rel;
static bool h_stop;
static pthread_t h_th;

static int h_migrate_to_ram(struct uhmm_vm_fault *vmf)
{
	pthread_mutex_lock(&fl_mu);
	if (h_req > h_held) {
		int s = h_held = h_req;
		pthread_cond_broadcast(&fl_cv);
		while (h_rel < s)
			pthread_cond_wait(&fl_cv, &fl_mu);
	}
	pthread_mutex_unlock(&fl_mu);
	return tdev_migrate_to_ram(vmf);
}

static const struct uhmm_devmem_ops h_ops = {
	.page_free = tdev_page_free,
	.migrate_to_ram = h_migrate_to_ram,
};

static void *h_thread(void *a)
{
	int served = 0;
	(void)a;
	for (;;) {
		pthread_mutex_lock(&fl_mu);
		while (h_req <= served && !h_stop)
			pthread_cond_wait(&fl_cv, &fl_mu);
		if (h_req <= served) {
			pthread_mutex_unlock(&fl_mu);
			return NULL;
		}
		served = h_req;
		pthread_mutex_unlock(&fl_mu);
		if (*(volatile char *)h_page != 0x5a) FAIL("the holding page lost its data");
		if (tdev_to_dev(h_td, (uintptr_t)h_page, (uintptr_t)h_page + PG, NULL) != 1)
			FAIL("the holding page back to its device");
	}
}

static bool h_is_held;

static void hold_worker(void)
{
	if (h_is_held) return;
	pthread_mutex_lock(&fl_mu);
	h_req++;
	pthread_cond_broadcast(&fl_cv);
	while (h_held < h_req)
		pthread_cond_wait(&fl_cv, &fl_mu);
	pthread_mutex_unlock(&fl_mu);
	h_is_held = true;
}

static void release_worker(void)
{
	if (!h_is_held) return;
	pthread_mutex_lock(&fl_mu);
	h_rel = h_req;
	pthread_cond_broadcast(&fl_cv);
	pthread_mutex_unlock(&fl_mu);
	h_is_held = false;
}

/* How the events of a move meet the migrations: HUNT7_EV overrides the round's choice. */
enum { EV_CAUGHT_UP, EV_WORKER, EV_HELD };

static int evmode(int dflt) { return hunt_envi("HUNT7_EV", dflt); }

static const char *ev_name(int ev)
{
	return ev == EV_CAUGHT_UP ? "applied before finalize" : ev == EV_WORKER ? "left to the worker" :
	       "applied after finalize (worker held)";
}

/* Before a move with migrations in flight. */
static void ev_before(int ev) { if (ev == EV_HELD) hold_worker(); }
/* After it. */
static void ev_after(int ev) { if (ev == EV_CAUGHT_UP) catch_up(); }

static atomic_long late_waits;

/* A flight's end; with the worker held, a finalize that waits for it is let go after 5 s. */
static void fl_finish_ev(struct flight *f, int ev)
{
	double t0 = hunt_now();
	fl_set(f, 2);
	for (;;) {
		pthread_mutex_lock(&fl_mu);
		int st = f->state;
		pthread_mutex_unlock(&fl_mu);
		if (st >= 3) break;
		if (ev == EV_HELD && h_is_held && hunt_now() - t0 > 5) {
			fprintf(stderr, "round %d: note: a finalize still runs 5 s after its release with "
				"uhmm's worker held: it waits for the worker (released now)\n", g_round);
			atomic_fetch_add(&late_waits, 1);
			release_worker();
		}
		nap_us(1000);
	}
	pthread_join(f->th, NULL);
}

/* After every flight ended: let the worker go and apply the events. */
static void ev_end(int ev)
{
	if (ev == EV_HELD) {
		release_worker();
		catch_up();
	}
}

static const char *dir_name(bool to_dev) { return to_dev ? "to the device" : "home"; }
static const char *hook_name(int h) { return h == H_SETUP ? "after setup" : "after pages"; }

/* Region on the device (all of it: tdev_to_dev must move every page). */
static void to_dev_all(char *p, size_t np)
{
	long m = tdev_to_dev(g_td, (uintptr_t)p, (uintptr_t)p + np * PG, NULL);
	if (m != (long)np) FAIL("region %p to the device: %ld of %zu", (void *)p, m, np);
}

static void lockstep_init(int round, size_t pool, unsigned flags)
{
	(void)round;
	g_mm = getmm();
	int r = tdev_open(g_mm, pool, 0, NULL, flags, &g_td);
	if (r) FAIL("tdev open %d", r);
	area_init(flags & TDEV_COMPOUND);
	g_dummy = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (g_dummy == MAP_FAILED) FAIL("dummy");
	g_dummy[0] = 1;
	r = tdev_open(g_mm, 4, 0, &h_ops, 0, &h_td);
	if (r) FAIL("tdev open (holder) %d", r);
	h_page = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (h_page == MAP_FAILED) FAIL("holder page");
	h_page[0] = 0x5a;
	if (tdev_to_dev(h_td, (uintptr_t)h_page, (uintptr_t)h_page + PG, NULL) != 1) FAIL("holder page to its device");
	h_req = h_held = h_rel = 0;
	h_stop = false;
	h_is_held = false;
	pthread_create(&h_th, NULL, h_thread, NULL);
}

/* The end of a round: everything home, unmapped, the pool empty. */
static void lockstep_end(int bad)
{
	size_t used;
	release_worker();
	pthread_mutex_lock(&fl_mu);
	h_stop = true;
	pthread_cond_broadcast(&fl_cv);
	pthread_mutex_unlock(&fl_mu);
	pthread_join(h_th, NULL);
	/* Every live page was read by the checks (brought home); the unmap drops the rest. */
	munmap(area, (size_t)NSLOT * SLOT * PG);
	catch_up();
	used = tdev_used(g_td);
	if (used) {
		int r = uhmm_devmem_remove(&g_td->pgmap);
		fprintf(stderr, "round %d: %zu tdev pages still allocated after every region came home "
			"and was unmapped (leak); uhmm_devmem_remove() then: %d (%s), %zu pages allocated\n",
			g_round, used, r, r ? uhmm_last_error() : "removed", tdev_used(g_td));
		_exit(1);
	}
	if (bad) FAIL("%d pages wrong or leaked", bad);
	int r = tdev_close(g_td);
	if (r) FAIL("tdev close %d", r);
}

/* ================= chain: A->B->C, A->B->A ================================================== */

static void sc_chain(int round)
{
	const size_t n = 16;
	bool to_dev = round % 2;
	int hook = round / 2 % 2, how = round / 4 % 3;
	int ev = evmode(round / 12 % 2 ? EV_CAUGHT_UP : EV_WORKER);	/* caught up: after each move */
	char *A, *B, *C, *end;
	struct flight f;
	int bad = 0;

	lockstep_init(round, 256, 0);
	A = slot_at(1), B = slot_at(3), C = slot_at(5);
	region_map(A, n, 7);
	if (!to_dev) to_dev_all(A, n);
	else { to_dev_all(A, n); tdev_to_sys(g_td, (uintptr_t)A, (uintptr_t)A + n * PG, NULL); }
	fl_start(&f, g_td, A, n, to_dev, hook);
	ev_before(ev);
	if (raw_mremap(A, n * PG, n * PG, MREMAP_MAYMOVE | MREMAP_FIXED, B) != (long)B) FAIL("mremap A->B %d", errno);
	ev_after(ev);
	end = how == 1 ? A : C;
	if (how != 1 && !rereserve(A, n)) FAIL("the hole at A was taken");
	ev_before(ev);
	if (raw_mremap(B, n * PG, n * PG, MREMAP_MAYMOVE | MREMAP_FIXED, end) != (long)end) FAIL("mremap B->%s %d", how == 1 ? "A" : "C", errno);
	if (ev == EV_CAUGHT_UP || (how == 2 && ev == EV_WORKER)) catch_up();
	fl_finish_ev(&f, ev);
	ev_end(ev);
	printf("round %d: chain %s, flight %s stopped %s, events %s: collected %ld, migrated %ld\n", round,
	       how == 1 ? "A->B->A" : how == 2 ? "A->B, B->C (caught up at the end)" : "A->B->C",
	       dir_name(to_dev), hook_name(hook), ev == EV_CAUGHT_UP ? "applied after each move" : ev_name(ev),
	       f.collected, f.migrated);
	bad += check("after the chain", end, n, 7, 0);
	lockstep_end(bad);
}

/* ================= partial: part of a migrating range moved, shrink, grow =================== */

static void sc_partial(int round)
{
	const size_t n = 16;
	bool to_dev = round % 2;
	int hook = round / 2 % 2, how = round / 4 % 6;
	int ev = evmode(round / 24 % 2 == 0 ? EV_CAUGHT_UP : EV_WORKER);
	char *A, *B;
	struct flight f;
	int bad = 0;
	static const char *const hows[] = {
		"pages 4-11 moved (split in three)", "pages 0-7 moved (head)", "pages 8-15 moved (tail)",
		"shrunk in place to 10 pages (tail unmapped)", "shrunk to 10 pages and moved",
		"grown to 24 pages and moved",
	};

	lockstep_init(round, 256, 0);
	A = slot_at(1), B = slot_at(3);
	region_map(A, n, 9);
	to_dev_all(A, n);
	if (to_dev) tdev_to_sys(g_td, (uintptr_t)A, (uintptr_t)A + n * PG, NULL);
	fl_start(&f, g_td, A, n, to_dev, hook);
	switch (how) {
	case 0: case 1: case 2: {
		size_t off = how == 0 ? 4 : how == 1 ? 0 : 8, len = 8;
		ev_before(ev);
	if (raw_mremap(A + off * PG, len * PG, len * PG, MREMAP_MAYMOVE | MREMAP_FIXED, B) != (long)B)
			FAIL("mremap part %d", errno);
		ev_after(ev);
		fl_finish_ev(&f, ev);
		ev_end(ev);
		if (off) bad += check("the part that stayed (head)", A, off, 9, 0);
		bad += check("the part that moved", B, len, 9, off);
		if (off + len < n) bad += check("the part that stayed (tail)", A + (off + len) * PG, n - off - len, 9, off + len);
		break;
	}
	case 3:
		ev_before(ev);
	if (raw_mremap(A, n * PG, 10 * PG, 0, NULL) != (long)A) FAIL("shrink %d", errno);
		ev_after(ev);
		fl_finish_ev(&f, ev);
		ev_end(ev);
		bad += check("after the shrink", A, 10, 9, 0);
		break;
	case 4:
		ev_before(ev);
	if (raw_mremap(A, n * PG, 10 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, B) != (long)B) FAIL("shrink+move %d", errno);
		ev_after(ev);
		fl_finish_ev(&f, ev);
		ev_end(ev);
		bad += check("after the shrinking move", B, 10, 9, 0);
		break;
	case 5:
		ev_before(ev);
	if (raw_mremap(A, n * PG, 24 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, B) != (long)B) FAIL("grow+move %d", errno);
		ev_after(ev);
		fl_finish_ev(&f, ev);
		ev_end(ev);
		bad += check("after the growing move", B, n, 9, 0);
		bad += check("the grown tail", B + n * PG, 8, 0, 0);
		break;
	}
	printf("round %d: partial: %s, flight %s stopped %s, events %s: collected %ld, migrated %ld\n",
	       round, hows[how], dir_name(to_dev), hook_name(hook), ev_name(ev), f.collected, f.migrated);
	lockstep_end(bad);
}

/* A device-range eviction of pool pages [start, start + np) stopped inside (a flight's fields). */
static void *ev_thread(void *a)
{
	struct flight *f = a;	/* np pages of pool from index start (a pool index here) */
	uint64_t *src = calloc(f->np, 8), *dst = calloc(f->np, 8);
	char *buf = mmap(NULL, f->np * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint64_t base = uhmm_page_to_pfn(uhmm_devmem_page(&f->td->pgmap, 0));
	int r = uhmm_migrate_device_range(f->td->mm, src, base + f->start, f->np);
	if (r) FAIL("device range %d", r);
	for (size_t i = 0; i < f->np; i++) f->collected += !!(src[i] & UHMM_MIGRATE_PFN_MIGRATE);
	if (f->hook == H_SETUP) fl_hook(f);
	for (size_t i = 0; i < f->np; i++) {
		dst[i] = 0;
		if (!(src[i] & UHMM_MIGRATE_PFN_MIGRATE)) continue;
		struct uhmm_page *pg = uhmm_pfn_to_page(f->td->mm, uhmm_migrate_pfn_to_pfn(src[i]));
		if (!pg) FAIL("collected pfn names no page");
		memcpy(buf + i * PG, tdev_page_mem(f->td, pg), PG);
		dst[i] = uhmm_migrate_pfn((uintptr_t)(buf + i * PG) / PG);
	}
	uhmm_migrate_device_pages(f->td->mm, src, dst, f->np);
	if (f->hook == H_PAGES) fl_hook(f);
	uhmm_migrate_device_finalize(f->td->mm, src, dst, f->np);
	for (size_t i = 0; i < f->np; i++) f->migrated += !!(src[i] & UHMM_MIGRATE_PFN_MIGRATE);
	/* buf stays mapped: its unmap may wait for migrations (the held worker's). */
	fl_set(f, 3);
	free(src);
	free(dst);
	return NULL;
}

/* ================= collide: MREMAP_FIXED onto memory a migration holds ====================== */

static void sc_collide(int round)
{
	const size_t n = 16;
	int kind = hunt_envi("HUNT7_KIND", round % 3);	/* 0: two flights; 1: one flight, halves; 2: eviction */
	int bad = 0;

	lockstep_init(round, 256, 0);
	if (kind == 0) {
		bool xdev = round / 3 % 2, ydev = round / 6 % 2, yfirst = round / 12 % 2;
		int hook = round / 24 % 2;
		int ev = evmode(round / 48 % 2 == 0 ? EV_CAUGHT_UP : EV_WORKER);
		char *A = slot_at(1), *B = slot_at(3);
		struct flight x, y;

		region_map(A, n, 11);
		region_map(B, n, 12);
		to_dev_all(A, n);
		to_dev_all(B, n);
		if (xdev) tdev_to_sys(g_td, (uintptr_t)A, (uintptr_t)A + n * PG, NULL);
		if (ydev) tdev_to_sys(g_td, (uintptr_t)B, (uintptr_t)B + n * PG, NULL);
		fl_start(&x, g_td, A, n, xdev, hook);
		fl_start(&y, g_td, B, n, ydev, hook);
		ev_before(ev);
	if (raw_mremap(A, n * PG, n * PG, MREMAP_MAYMOVE | MREMAP_FIXED, B) != (long)B) FAIL("mremap A->B %d", errno);
		ev_after(ev);
		if (yfirst) { fl_finish_ev(&y, ev); fl_finish_ev(&x, ev); } else { fl_finish_ev(&x, ev); fl_finish_ev(&y, ev); }
		ev_end(ev);
		printf("round %d: collide: X (A, tag 11) %s onto Y (B, tag 12) %s, stopped %s, events %s, "
		       "%s finalized first: X collected %ld migrated %ld, Y collected %ld migrated %ld\n",
		       round, dir_name(xdev), dir_name(ydev), hook_name(hook),
		       ev_name(ev), yfirst ? "Y" : "X",
		       x.collected, x.migrated, y.collected, y.migrated);
		bad += check("B after X moved onto it", B, n, 11, 0);
	} else if (kind == 2) {
		/* Y's pages held by a device-range eviction of the whole pool; X on the device or not. */
		bool xsys = round / 3 % 2;
		int ev = evmode(round / 6 % 2 == 0 ? EV_CAUGHT_UP : EV_WORKER);
		int hook = round / 12 % 2;
		bool yonly = round / 24 % 2;	/* evict Y's pfns only (tdev hands out 0, 1, ...: X's first) */
		char *A = slot_at(1), *B = slot_at(3);
		struct flight y;

		region_map(A, n, 11);
		region_map(B, n, 12);
		if (!xsys) to_dev_all(A, n);
		to_dev_all(B, n);
		memset(&y, 0, sizeof(y));
		y.td = g_td;
		y.start = yonly && !xsys ? n : 0;
		y.np = yonly ? n : g_td->nr_pages;
		y.hook = hook;
		pthread_create(&y.th, NULL, ev_thread, &y);
		fl_wait(&y, 1);
		ev_before(ev);
	if (raw_mremap(A, n * PG, n * PG, MREMAP_MAYMOVE | MREMAP_FIXED, B) != (long)B) FAIL("mremap A->B %d", errno);
		ev_after(ev);
		fl_finish_ev(&y, ev);
		ev_end(ev);
		printf("round %d: collide: X (A, tag 11, %s) moved onto Y (B, tag 12, on the device) whose "
		       "pages a device-range eviction (%s) holds, stopped %s, events %s: collected %ld, migrated %ld\n",
		       round, xsys ? "in system memory" : "on the device", yonly ? "of Y's pfns" : "of the pool",
		       hook_name(hook),
		       ev_name(ev), y.collected, y.migrated);
		bad += check("B after X moved onto it", B, n, 11, 0);
	} else {
		bool to_dev = round / 3 % 2, second_onto_first = round / 6 % 2;
		int hook = round / 12 % 2;
		int ev = evmode(round / 24 % 2 == 0 ? EV_CAUGHT_UP : EV_WORKER);
		char *A = slot_at(1);
		char *from = second_onto_first ? A + n * PG : A, *to = second_onto_first ? A : A + n * PG;
		struct flight f;

		region_map(A, 2 * n, 13);
		to_dev_all(A, 2 * n);
		if (to_dev) tdev_to_sys(g_td, (uintptr_t)A, (uintptr_t)A + 2 * n * PG, NULL);
		fl_start(&f, g_td, A, 2 * n, to_dev, hook);
		ev_before(ev);
	if (raw_mremap(from, n * PG, n * PG, MREMAP_MAYMOVE | MREMAP_FIXED, to) != (long)to) FAIL("mremap half %d", errno);
		ev_after(ev);
		fl_finish_ev(&f, ev);
		ev_end(ev);
		printf("round %d: collide: one flight %s over 2x%zu pages stopped %s, the %s half moved "
		       "onto the %s, events %s: collected %ld migrated %ld\n", round, dir_name(to_dev), n,
		       hook_name(hook), second_onto_first ? "second" : "first",
		       second_onto_first ? "first" : "second", ev_name(ev), f.collected, f.migrated);
		bad += check("the half that was moved onto", to, n, 13, second_onto_first ? n : 0);
	}
	lockstep_end(bad);
}

/* ================= reuse: a new tenant at the old address of a moved flight ================= */

static atomic_int wd_stop;
static void *watchdog(void *a)
{
	const char *what_ = a;
	double t0 = hunt_now();
	while (!atomic_load(&wd_stop)) {
		if (hunt_now() - t0 > 10) {
			fprintf(stderr, "round %d: %s: still waiting after 10 s (the new tenant waits "
				"for the old migration?)\n", g_round, what_);
			_exit(3);
		}
		nap_us(20000);
	}
	return NULL;
}

static void sc_reuse(int round)
{
	const size_t n = 16;
	bool to_dev = round % 2;
	int hook = round / 2 % 2;
	int ev = evmode(round / 4 % 2 == 0 ? EV_CAUGHT_UP : EV_WORKER);
	bool rawmap = round / 8 % 2;
	bool reg = hunt_envi("HUNT7_REG", round / 16 % 2) && ev != EV_HELD;	/* its setup waits for the worker */
	char *A, *B, *T;
	struct flight f;
	pthread_t wd;
	int bad = 0;

	lockstep_init(round, 256, 0);
	A = slot_at(1), B = slot_at(3);
	region_map(A, n, 21);
	to_dev_all(A, n);
	if (to_dev) tdev_to_sys(g_td, (uintptr_t)A, (uintptr_t)A + n * PG, NULL);
	fl_start(&f, g_td, A, n, to_dev, hook);
	ev_before(ev);
	if (raw_mremap(A, n * PG, n * PG, MREMAP_MAYMOVE | MREMAP_FIXED, B) != (long)B) FAIL("mremap %d", errno);
	ev_after(ev);
	atomic_store(&wd_stop, 0);
	pthread_create(&wd, NULL, watchdog, "the new tenant");
	if (rawmap)
		T = (char *)syscall(SYS_mmap, A, n * PG, PROT_READ | PROT_WRITE,
				    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	else
		T = mmap(A, n * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (T != A) FAIL("new tenant at %p: got %p, errno %d", (void *)A, (void *)T, errno);
	fill(T, n, 22, 0);
	if (reg) {
		/* Registered with uhmm's userfaultfd: migrated to the device and home. */
		to_dev_all(T, n);
		if (tdev_to_sys(g_td, (uintptr_t)T, (uintptr_t)T + n * PG, NULL) != (long)n) FAIL("tenant home");
		if (syscall(SYS_madvise, T + n / 2 * PG, n / 2 * PG, MADV_DONTNEED)) FAIL("madvise %d", errno);
	}
	bad += check("the new tenant, before the old migration ended", T, reg ? n / 2 : n, 22, 0);
	/* The discarded half is left empty (not read) until the old migration has ended. */
	atomic_store(&wd_stop, 1);
	pthread_join(wd, NULL);
	fl_finish_ev(&f, ev);
	ev_end(ev);
	printf("round %d: reuse: flight %s stopped %s, events %s, new tenant by %s%s: collected %ld, "
	       "migrated %ld\n", round, dir_name(to_dev), hook_name(hook), ev == EV_CAUGHT_UP ? "applied before the tenant" : ev_name(ev), rawmap ? "raw mmap" : "the mmap wrapper",
	       reg ? ", registered, half discarded" : "", f.collected, f.migrated);
	bad += check("the moved region", B, n, 21, 0);
	bad += check("the new tenant, after the old migration ended", T, reg ? n / 2 : n, 22, 0);
	if (reg) bad += check("the new tenant's discarded half, after the old migration ended",
			      T + n / 2 * PG, n / 2, 0, 0);
	lockstep_end(bad);
}

/* ================= compound: 2 MiB device pages moved unaligned =========================== */

static void sc_compound(int round)
{
	const size_t n = 1024;		/* two 2 MiB blocks */
	bool evict = round % 2;
	int hook = round / 2 % 2, how = hunt_envi("HUNT7_HOW", round / 4 % 4);
	int ev = evmode(round / 16 % 2 == 0 ? EV_CAUGHT_UP : EV_WORKER);
	char *A, *B;
	struct flight f;
	int bad = 0;
	/* how 3: all of it moved, a new tenant (raw mmap, its own data) at once at A */
	size_t off = how == 2 ? 300 : 0, len = how == 0 || how == 3 ? n : how == 1 ? n - 100 : 400;

	lockstep_init(round, 2048, TDEV_COMPOUND);
	A = slot_at(2), B = slot_at(6) + 5 * PG;	/* B: not 2 MiB aligned */
	region_map(A, n, 31);
	if (madvise(A, n * PG, MADV_HUGEPAGE)) {}
	to_dev_all(A, n);
	size_t used0 = tdev_used(g_td);
	if (evict) {
		memset(&f, 0, sizeof(f));
		f.td = g_td;
		f.start = 0;
		f.np = g_td->nr_pages;
		f.hook = hook;
		pthread_create(&f.th, NULL, ev_thread, &f);
		fl_wait(&f, 1);
	} else {
		fl_start(&f, g_td, A, n, false, hook);
	}
	ev_before(ev);
	if (raw_mremap(A + off * PG, len * PG, len * PG, MREMAP_MAYMOVE | MREMAP_FIXED, B) != (long)B)
		FAIL("mremap %d", errno);
	ev_after(ev);
	if (how == 3) {
		char *t = (char *)syscall(SYS_mmap, A, n * PG, PROT_READ | PROT_WRITE,
					  MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
		if (t != A) FAIL("new tenant at %p: %p %d", (void *)A, (void *)t, errno);
		fill(t, n, 32, 0);
	}
	fl_finish_ev(&f, ev);
	ev_end(ev);
	printf("round %d: compound: %s stopped %s, pages %zu-%zu of 1024 (2 MiB aligned, %zu tdev pages "
	       "used) moved to an address 5 pages past 2 MiB%s, events %s: collected %ld, migrated %ld\n",
	       round, evict ? "device-range eviction of the pool" : "flight home", hook_name(hook), off,
	       off + len - 1, used0, how == 3 ? ", a new tenant at the old address" : "", ev_name(ev),
	       f.collected, f.migrated);
	if (how == 3) bad += check("the new tenant at the old address", A, n, 32, 0);
	bad += check("the moved part", B, len, 31, off);
	if (off) bad += check("the head that stayed", A, off, 31, 0);
	if (off + len < n) bad += check("the tail that stayed", A + (off + len) * PG, n - off - len, 31, off + len);
	lockstep_end(bad);
}

/* ================= stress: free-running raw mremap against faults, eviction, removal ====== *
 * ST_NR regions of ST_P pages; region g lives in one of 3 slots of its own
 * (PROT_NONE reservations) and its owner thread moves it between them with
 * raw mremap (MREMAP_FIXED; so over time A->B->C, A->B->A chains), puts the
 * reservation back over the hole, checks every byte at the new place and
 * now and then rewrites it (new tag) and migrates it (or a run of it) to
 * tdev.  Each region has a sequence count, odd while its owner moves or
 * rewrites it.  Meanwhile: CPU readers read whole random pages of random
 * regions (device-resident ones fault: migrate_to_ram on uhmm's worker,
 * fault-around windows of 0-7 pages); a read that began and ended with the
 * same even count must succeed and hold the region's data (SIGSEGV or
 * SIGBUS there, or other data, fails the round); a migrator moves random
 * runs of regions to tdev and home (the region may move under it: any
 * setup error but ENOMEM/EBUSY/EINVAL/ENOENT/EFAULT fails); an evictor
 * evicts runs of the pool's pfns (device-range migration); a remover
 * removes and re-adds the pool (HUNT7_REM=0: not).  At the end every byte
 * is checked, everything unmapped, and the pool must come off with no page
 * allocated.  HUNT7_SECS seconds (3); HUNT7_RACERS picks the racers (bits:
 * 1 readers, 2 migrator, 4 evictor, 8 remover; default 15); HUNT7_COMPOUND=1: a TDEV_COMPOUND
 * pool and regions of 1024 pages (2 MiB aligned slots, moves keep or
 * break the alignment). */
#define ST_NR 4
static size_t st_p = 16;
static char *st_slot[ST_NR][3];
static _Atomic(char *) st_at[ST_NR];
static bool st_lost[ST_NR][3];	/* a slot someone else mapped into while it was a hole */
static atomic_ulong st_slots_lost;
static atomic_uint st_tag[ST_NR];
static atomic_uint st_seq[ST_NR];
static atomic_int st_stop;
static pthread_rwlock_t st_pool;
static atomic_bool st_added;
static atomic_ulong st_moves, st_reads, st_readseg, st_migs, st_migerr, st_evpg, st_rm, st_rmerr,
	st_rewrites, st_migerrk[6];
static atomic_int st_bad;
static bool st_compound;

static __thread sigjmp_buf *volatile tl_env;
static __thread volatile int tl_sig;

static void st_report_bad(const char *when, int g, size_t pg, const char *p, unsigned tag)
{
	if (atomic_fetch_add(&st_bad, 1) < 6) {
		char id[80];
		ident(p, id, sizeof(id));
		fprintf(stderr, "round %d: %s: region %d page %zu at %p reads %s, want tag %u page %zu\n",
			g_round, when, g, pg, (const void *)p, id, tag, pg);
	}
}

static int st_check_region(int g, const char *when)
{
	char *p = atomic_load(&st_at[g]);
	unsigned tag = atomic_load(&st_tag[g]);
	int bad = 0;
	for (size_t i = 0; i < st_p; i++)
		if (page_is(p + i * PG, tag, i) != 1) {
			st_report_bad(when, g, i, p + i * PG, tag);
			bad++;
		}
	return bad;
}

static long st_migrate(char *a, size_t np, bool to_dev)
{
	long m = -ENODEV;
	pthread_rwlock_rdlock(&st_pool);
	if (atomic_load(&st_added))
		m = tdev_migrate(g_td, (uintptr_t)a, (uintptr_t)a + np * PG, to_dev, NULL, NULL);
	pthread_rwlock_unlock(&st_pool);
	return m;
}

static void *st_owner(void *a)
{
	unsigned s = seed ^ (unsigned)(uintptr_t)a * 0x3131u;
	int g0 = (int)(uintptr_t)a;
	while (!atomic_load(&st_stop)) {
		int g = g0 + 2 * (int)(rnd_r(&s) % (ST_NR / 2));	/* owner 0: even regions, 1: odd */
		char *from = atomic_load(&st_at[g]);
		unsigned op = rnd_r(&s) % 8;
		if (op < 5) {	/* move */
			int k, tries = 0;
			do k = (int)(rnd_r(&s) % 3); while ((st_slot[g][k] == from || st_lost[g][k]) && ++tries < 64);
			if (st_slot[g][k] == from || st_lost[g][k])
				continue;	/* both other slots lost: the region stays */
			char *to = st_slot[g][k];
			atomic_fetch_add(&st_seq[g], 1);
			long r = raw_mremap(from, st_p * PG, st_p * PG, MREMAP_MAYMOVE | MREMAP_FIXED, to);
			if (r != (long)to) FAIL("raw mremap region %d %p -> %p: %d", g, (void *)from, (void *)to, errno);
			atomic_store(&st_at[g], to);
			if (!rereserve(from, st_p)) {
				for (int j = 0; j < 3; j++)
					if (st_slot[g][j] == from)
						st_lost[g][j] = true;
				atomic_fetch_add(&st_slots_lost, 1);
			}
			atomic_fetch_add(&st_seq[g], 1);
			atomic_fetch_add(&st_moves, 1);
			if (st_check_region(g, "after a raw mremap")) FAIL("data lost or wrong after a raw mremap");
		} else if (op < 6) {	/* rewrite, migrate */
			atomic_fetch_add(&st_seq[g], 1);
			if (st_check_region(g, "before a rewrite")) FAIL("data lost or wrong before a rewrite");
			atomic_store(&st_tag[g], atomic_load(&st_tag[g]) + ST_NR);
			fill(from, st_p, atomic_load(&st_tag[g]), 0);
			atomic_fetch_add(&st_seq[g], 1);
			atomic_fetch_add(&st_rewrites, 1);
			st_migrate(from, st_p, true);
		} else {	/* migrate a run (to the device mostly) */
			size_t x = rnd_r(&s) % st_p, n = 1 + rnd_r(&s) % (st_p - x);
			st_migrate(from + x * PG, n, op == 6);
		}
	}
	return NULL;
}

/*
 * The readers race the owner's rewrites by design (a sequence count tells
 * the reads to trust): not a data race to report (ThreadSanitizer builds).
 */
#if defined(__SANITIZE_THREAD__)
__attribute__((no_sanitize("thread")))
#endif
static int st_page_is(const char *p, unsigned tag, size_t pg)
{
	const volatile uint64_t *q = (const volatile uint64_t *)(const volatile void *)p;
	bool data = true, zero = true;

	for (size_t w = 0; w < PG / 8; w++) {
		uint64_t v = q[w];
		if (v != word(tag, pg, w)) data = false;
		if (v) zero = false;
		if (!data && !zero) return -1;
	}
	return data ? 1 : 0;
}

static void st_sig(int sig)
{
	tl_sig = sig;
	siglongjmp(*tl_env, 1);
}

static void *st_reader(void *a)
{
	volatile unsigned s = seed ^ (unsigned)(uintptr_t)a * 0x5151u;
	sigjmp_buf env;
	while (!atomic_load(&st_stop)) {
		unsigned s2 = s;
		int g = (int)(rnd_r(&s2) % ST_NR);
		size_t pg = rnd_r(&s2) % st_p;
		s = s2;
		unsigned q1 = atomic_load(&st_seq[g]);
		if (q1 & 1) { sched_yield(); continue; }
		char *p = atomic_load(&st_at[g]) + pg * PG;
		unsigned tag = atomic_load(&st_tag[g]);
		volatile int k = -2;
		tl_sig = 0;
		if (sigsetjmp(env, 1) == 0) {
			tl_env = &env;
			k = st_page_is(p, tag, pg);
		}
		tl_env = NULL;
		unsigned q2 = atomic_load(&st_seq[g]);
		if (q1 != q2) {
			atomic_fetch_add(&st_readseg, tl_sig != 0);
			continue;	/* moved or rewritten meanwhile: anything goes */
		}
		atomic_fetch_add(&st_reads, 1);
		if (tl_sig) {
			if (atomic_fetch_add(&st_bad, 1) < 6)
				fprintf(stderr, "round %d: a read of region %d page %zu at %p got signal %d with "
					"the region there all along\n", g_round, g, pg, (void *)p, tl_sig);
		} else if (k != 1) {
			st_report_bad("a CPU read (the region there all along)", g, pg, p, tag);
		}
	}
	return NULL;
}

static void *st_migrator(void *a)
{
	(void)a;
	unsigned s = seed ^ 0x7373u;
	while (!atomic_load(&st_stop)) {
		int g = (int)(rnd_r(&s) % ST_NR);
		size_t x = rnd_r(&s) % st_p, n = 1 + rnd_r(&s) % (st_p - x);
		char *p = atomic_load(&st_at[g]);
		long m = st_migrate(p + x * PG, n, rnd_r(&s) % 2);
		if (m != -ENODEV) atomic_fetch_add(&st_migs, 1);
		if (m == -ENODEV) { nap_us(200); continue; }	/* the pool is off */
		if (m < 0) {
			atomic_fetch_add(&st_migerr, 1);
			atomic_fetch_add(&st_migerrk[m == -ENOMEM ? 0 : m == -EBUSY ? 1 : m == -EINVAL ? 2 : m == -ENOENT ? 3 : 4], 1);
			if (m != -ENOMEM && m != -EBUSY && m != -EINVAL && m != -ENOENT && m != -EFAULT && m != -ENODEV)
				FAIL("migration of region %d run %zu+%zu: %ld %s", g, x, n, m, uhmm_last_error());
		}
	}
	return NULL;
}

static void *st_evictor(void *a)
{
	(void)a;
	unsigned s = seed ^ 0x9393u;
	enum { NE = 64 };
	uint64_t src[NE], dst[NE];
	char *buf = mmap(NULL, NE * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED) FAIL("evict buffer");
	while (!atomic_load(&st_stop)) {
		pthread_rwlock_rdlock(&st_pool);
		if (atomic_load(&st_added)) {
			size_t n = 1 + rnd_r(&s) % NE, idx = rnd_r(&s) % g_td->nr_pages;
			if (idx + n > g_td->nr_pages) n = g_td->nr_pages - idx;
			uint64_t base = uhmm_page_to_pfn(uhmm_devmem_page(&g_td->pgmap, 0));
			int r = uhmm_migrate_device_range(g_mm, src, base + idx, n);
			if (r) FAIL("device range %d %s", r, uhmm_last_error());
			for (size_t i = 0; i < n; i++) {
				dst[i] = 0;
				if (!(src[i] & UHMM_MIGRATE_PFN_MIGRATE)) continue;
				struct uhmm_page *pg = uhmm_pfn_to_page(g_mm, uhmm_migrate_pfn_to_pfn(src[i]));
				if (!pg) FAIL("collected pfn names no page");
				memcpy(buf + i * PG, tdev_page_mem(g_td, pg), PG);
				dst[i] = uhmm_migrate_pfn((uintptr_t)(buf + i * PG) / PG);
				atomic_fetch_add(&st_evpg, 1);
			}
			uhmm_migrate_device_pages(g_mm, src, dst, n);
			uhmm_migrate_device_finalize(g_mm, src, dst, n);
		}
		pthread_rwlock_unlock(&st_pool);
		nap_us(rnd_r(&s) % 1000);
	}
	return NULL;
}

static int st_remove(void)
{
	int r = uhmm_devmem_remove(&g_td->pgmap);
	if (r == 0) {
		atomic_store(&st_added, false);
		atomic_fetch_add(&st_rm, 1);
		if (tdev_used(g_td)) FAIL("remove returned 0 with %zu tdev pages allocated", tdev_used(g_td));
	} else {
		atomic_fetch_add(&st_rmerr, 1);
		if (r != -EBUSY && r != -EINVAL && r != -EFAULT && r != -ENOENT)
			FAIL("remove: %d %s", r, uhmm_last_error());
	}
	return r;
}

static void st_readd(void)
{
	int r = uhmm_devmem_add(g_mm, &g_td->pgmap);
	if (r) FAIL("re-add %d %s", r, uhmm_last_error());
	atomic_store(&st_added, true);
}

static void *st_remover(void *a)
{
	(void)a;
	unsigned s = seed ^ 0x8383u;
	while (!atomic_load(&st_stop)) {
		pthread_rwlock_wrlock(&st_pool);
		if (!atomic_load(&st_added)) st_readd();
		else if (st_remove() == 0 && rnd_r(&s) % 4) st_readd();
		pthread_rwlock_unlock(&st_pool);
		nap_us(2000 + rnd_r(&s) % 20000);
	}
	return NULL;
}

static void sc_stress(int round)
{
	double secs_ = hunt_envi("HUNT7_SECS", 3);
	size_t fa = (size_t)1 << (round % 4) >> 1;	/* 0, 1, 2, 4 */
	pthread_rwlockattr_t ra;
	pthread_t t[8];
	int nt = 0, r;

	st_compound = hunt_envi("HUNT7_COMPOUND", 0);
	st_p = (size_t)hunt_envi("HUNT7_NP", st_compound ? 1024 : 16);	/* pages a region, <= 1019 + 5 */
	if (st_p > SLOT - 5) st_p = SLOT - 5;
	pthread_rwlockattr_init(&ra);
	pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&st_pool, &ra);
	g_mm = getmm();
	r = tdev_open(g_mm, st_p > 16 ? 4096 : 256, fa, NULL, st_compound ? TDEV_COMPOUND : 0, &g_td);
	if (r) FAIL("tdev open %d", r);
	atomic_store(&st_added, true);
	area_init(true);
	for (int g = 0; g < ST_NR; g++) {
		for (int k = 0; k < 3; k++)	/* compound: slot 2 is 5 pages past 2 MiB */
			st_slot[g][k] = slot_at(g * 4 + k) + (st_compound && k == 2 ? 5 * PG : 0);
		atomic_store(&st_tag[g], 1 + (unsigned)g);
		atomic_store(&st_at[g], region_map(st_slot[g][0], st_p, 1 + (unsigned)g));
		if (st_compound || hunt_envi("HUNT7_THP", 0)) madvise(st_slot[g][0], st_p * PG, MADV_HUGEPAGE);
		st_migrate(st_slot[g][0], st_p, true);
	}
	/* HUNT7_RACERS: bit 0 the CPU readers, 1 the migrator, 2 the evictor, 3 the remover */
	int racers = hunt_envi("HUNT7_RACERS", 15) & (hunt_envi("HUNT7_REM", 1) ? 15 : 7);
	printf("round %d: stress, fault_around %zu, %zu pages a region%s, racers %#x (1 readers, 2 "
	       "migrator, 4 evictor, 8 remover)\n", round, fa, st_p, st_compound ? " (2 MiB device pages)" : "",
	       racers);
	pthread_create(&t[nt++], NULL, st_owner, (void *)0);
	pthread_create(&t[nt++], NULL, st_owner, (void *)1);
	if (racers & 1) pthread_create(&t[nt++], NULL, st_reader, (void *)2);
	if (racers & 1) pthread_create(&t[nt++], NULL, st_reader, (void *)3);
	if (racers & 2) pthread_create(&t[nt++], NULL, st_migrator, NULL);
	if (racers & 4) pthread_create(&t[nt++], NULL, st_evictor, NULL);
	if (racers & 8) pthread_create(&t[nt++], NULL, st_remover, NULL);
	double t0 = hunt_now();
	while (hunt_now() - t0 < secs_ && !atomic_load(&st_bad)) nap_us(20000);
	atomic_store(&st_stop, 1);
	for (int i = 0; i < nt; i++) pthread_join(t[i], NULL);
	int bad = atomic_load(&st_bad);
	for (int g = 0; g < ST_NR; g++) bad += st_check_region(g, "final");
	printf("round %d: %lu moves, %lu rewrites, %lu reads checked (%lu signals while moving), %lu "
	       "migrations (%lu refused: ENOMEM %lu EBUSY %lu EINVAL %lu ENOENT %lu EFAULT %lu), %lu pages evicted, "
	       "%lu removals (%lu refused); %lu slots lost to other mappings\n", round, st_moves, st_rewrites,
	       st_reads, st_readseg, st_migs, st_migerr, st_migerrk[0], st_migerrk[1], st_migerrk[2],
	       st_migerrk[3], st_migerrk[4], st_evpg, st_rm, st_rmerr, st_slots_lost);
	if (bad) FAIL("%d pages wrong", bad);
	for (int g = 0; g < ST_NR; g++)
		munmap(atomic_load(&st_at[g]), st_p * PG);
	if (!atomic_load(&st_slots_lost))	/* else leave the reservations: a lost slot is not ours */
		munmap(area, (size_t)NSLOT * SLOT * PG);
	if (!atomic_load(&st_added)) st_readd();
	int tries = 0;
	while ((r = st_remove()) != 0) {
		if (++tries == 1000) FAIL("the pool never comes off: %d, %zu pages allocated: stranded", r, tdev_used(g_td));
		sched_yield();
	}
	tdev_free(g_td);
}

/* ================= lateunmap: an unmap applied after the old address was mapped again ======
 * The kernel sends UNMAP for a moving mremap's old range after its REMAP
 * (and raw munmap sends UNMAP); uhmm's worker applies them later.  A
 * migration whose setup caught up with the events before the change
 * (rule 4) and claims after it, once the old address holds memory again
 * (the region moved back, or a new tenant), meets the late UNMAP after
 * its finalize.  Played in lock step with an interval notifier over the
 * region: its invalidate callback stops the migration's thread in its
 * MIGRATE invalidation (setup, after the catch-up and the mapping's look,
 * before the collection) and stops uhmm's worker in the invalidation of
 * the late UNMAP (before it drops the range's entries).
 *   how 0: raw mremap A->B, then B->A (the region comes back)
 *   how 1: raw mremap A->B, a new tenant mapped at A (raw mmap)
 *   how 2: raw munmap of A, a new tenant mapped at A (raw mmap)
 * The migration (to the device) must leave the data at A: the region's
 * (0) or the tenant's (1, 2). */
static struct uhmm_interval_notifier lu_mni;
static pthread_t lu_mth;
static uintptr_t lu_a;
static int lu_arm_m, lu_arm_w, lu_wcalls, lu_wblock_at;
static int lu_m_in, lu_m_go, lu_w_in, lu_w_go;

static void lu_wait(int *flag)
{
	pthread_mutex_lock(&fl_mu);
	while (!*flag)
		pthread_cond_wait(&fl_cv, &fl_mu);
	pthread_mutex_unlock(&fl_mu);
}

static void lu_set(int *flag)
{
	pthread_mutex_lock(&fl_mu);
	*flag = 1;
	pthread_cond_broadcast(&fl_cv);
	pthread_mutex_unlock(&fl_mu);
}

static bool lu_invalidate(struct uhmm_interval_notifier *mni, const struct uhmm_notifier_range *r,
			  unsigned long seq)
{
	uhmm_interval_set_seq(mni, seq);
	if (pthread_equal(pthread_self(), lu_mth) && r->event == UHMM_NOTIFY_MIGRATE && lu_arm_m) {
		lu_arm_m = 0;
		lu_set(&lu_m_in);
		lu_wait(&lu_m_go);
	} else if (!pthread_equal(pthread_self(), lu_mth) && r->event == UHMM_NOTIFY_UNMAP &&
		   r->start == lu_a && lu_arm_w && ++lu_wcalls == lu_wblock_at) {
		lu_arm_w = 0;
		lu_set(&lu_w_in);
		lu_wait(&lu_w_go);
	}
	return true;
}

static const struct uhmm_interval_notifier_ops lu_ops = { .invalidate = lu_invalidate };
static long lu_moved;

static void *lu_migrator(void *a)
{
	(void)a;
	lu_moved = tdev_to_dev(g_td, lu_a, lu_a + 16 * PG, NULL);
	return NULL;
}

static void sc_lateunmap(int round)
{
	const size_t n = 16;
	int how = round % 3;
	char *A, *B;
	int bad = 0, r;
	unsigned want;

	lockstep_init(round, 256, 0);
	A = slot_at(1), B = slot_at(3);
	lu_a = (uintptr_t)A;
	region_map(A, n, 41);
	/* Registered with uhmm's userfaultfd (so its unmap and moves are events). */
	to_dev_all(A, n);
	if (tdev_to_sys(g_td, (uintptr_t)A, (uintptr_t)A + n * PG, NULL) != (long)n) FAIL("home");
	memset(&lu_mni, 0, sizeof(lu_mni));
	r = uhmm_interval_notifier_insert(&lu_mni, g_mm, (uintptr_t)A, n * PG, &lu_ops);
	if (r) FAIL("notifier insert %d", r);
	lu_arm_m = 1;
	lu_arm_w = 1;
	lu_wcalls = 0;
	lu_wblock_at = how == 2 ? 1 : 2;	/* mremap: REMAP's invalidation first, then UNMAP's */
	lu_m_in = lu_m_go = lu_w_in = lu_w_go = 0;
	pthread_create(&lu_mth, NULL, lu_migrator, NULL);
	lu_wait(&lu_m_in);		/* caught up, mapping looked up, not collected yet */
	if (how == 2) {
		if (syscall(SYS_munmap, A, n * PG)) FAIL("munmap %d", errno);
	} else if (raw_mremap(A, n * PG, n * PG, MREMAP_MAYMOVE | MREMAP_FIXED, B) != (long)B) {
		FAIL("mremap A->B %d", errno);
	}
	lu_wait(&lu_w_in);		/* the worker: REMAP applied, the late UNMAP of A not yet */
	if (how == 0) {
		if (raw_mremap(B, n * PG, n * PG, MREMAP_MAYMOVE | MREMAP_FIXED, A) != (long)A) FAIL("mremap B->A %d", errno);
		want = 41;
	} else {
		char *t = (char *)syscall(SYS_mmap, A, n * PG, PROT_READ | PROT_WRITE,
					  MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
		if (t != A) FAIL("new tenant at %p: %p %d", (void *)A, (void *)t, errno);
		fill(t, n, 42, 0);
		want = 42;
	}
	lu_set(&lu_m_go);
	/*
	 * The migration ends; with the fallbacks its freeze (mremap) waits
	 * for uhmm's worker to apply its own event, after its claim: the
	 * worker is let go after 5 s then (the claim is made by then).
	 */
	struct timespec dl;
	bool waited = false;
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += 5;
	if (pthread_timedjoin_np(lu_mth, NULL, &dl)) {
		waited = true;
		lu_set(&lu_w_go);
		pthread_join(lu_mth, NULL);
	}
	lu_set(&lu_w_go);
	catch_up();
	printf("round %d: lateunmap: %s; the migration to the device claimed A after it and moved %ld pages "
	       "%s\n", round,
	       how == 0 ? "raw mremap A->B, B->A" : how == 1 ? "raw mremap A->B, new tenant at A" :
	       "raw munmap A, new tenant at A", lu_moved, waited ? "(its freeze waited for the worker: "
	       "let go after 5 s, the old UNMAP applied after the claim, before the finalize)" :
	       "before the worker applied the old UNMAP of A");
	bad += check(how == 0 ? "the region back at A" : "the new tenant at A", A, n, want, 0);
	uhmm_interval_notifier_remove(&lu_mni);
	lockstep_end(bad);
}

static void h7_sig(int sig, siginfo_t *si, void *uc)
{
	if (tl_env)
		st_sig(sig);
	hunt_segv(sig, si, uc);
}

static const struct hunt_scenario scs[] = {
	{"chain", sc_chain}, {"partial", sc_partial}, {"collide", sc_collide}, {"reuse", sc_reuse},
	{"compound", sc_compound}, {"stress", sc_stress},
	{"lateunmap", sc_lateunmap},
};

int main(int argc, char **argv)
{
	return hunt_main(argc, argv, "HUNT7", scs, sizeof(scs) / sizeof(scs[0]), &seed, &g_round,
			 h7_sig);
}
