// SPDX-License-Identifier: MIT
/*
 * Adversarial programs against the public API, round 5 (tests/hunt/FINDINGS.md).
 * Not registered in CTest.  Usage: hunt5 SCENARIO ROUNDS [TIMEOUT_S]
 * Each round runs in a forked child with alarm(); the parent (round.h)
 * reports hangs with every thread's gdb stacks, and failed rounds.
 * HUNT5_FIRST=k HUNT5_STEP=s rerun one round kind.  ROUNDS 0 runs one
 * round in this process (for a debugger).  HUNT5_SECS: seconds of racing
 * per round (default 3).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
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
#include <uhmm/policy.h>
#include <uhmm/simdev.h>

#include "round.h"

#define PG 4096UL

static unsigned seed;
static int g_round;

#define FAIL(...) do { fprintf(stderr, "FAIL round %d %s:%d: ", g_round, __func__, __LINE__); fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); _exit(1); } while (0)

#include "pages.h"

static double secs(void) { return hunt_envi("HUNT5_SECS", 3); }

static void *amap_aligned(size_t np)
{
	size_t blk = (size_t)2 << 20;
	char *p = mmap(NULL, np * PG + blk, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) FAIL("mmap %d", errno);
	char *a = (char *)(((uintptr_t)p + blk - 1) & ~(uintptr_t)(blk - 1));
	if (a > p) munmap(p, (size_t)(a - p));
	munmap(a + np * PG, (size_t)(p + np * PG + blk - (a + np * PG)));
	return a;
}

static struct uhmm_mm *getmm(void)
{
	struct uhmm_mm *mm = NULL;
	int r = uhmm_mm_get(&mm);
	if (r) FAIL("mm get %d", r);
	return mm;
}

/* A simdev attached to @pol. */
static struct uhmm_simdev *pdev(struct uhmm_policy *pol, size_t cap, unsigned thr, int *id)
{
	struct uhmm_simdev *d = mkdev(cap, thr, UHMM_SIMDEV_POLICY_MIRROR);
	int r = uhmm_simdev_attach_policy(d, pol, NULL, id);
	if (r) FAIL("attach %d %s", r, uhmm_last_error());
	return d;
}

/* ================= 1: rmwrite: read-mostly duplication under CPU and device writes ==========
 * A read-mostly range of rw_np pages on two devices (small capacity: copies
 * are evicted).  Words of page p: [0, 4) CPU thread k's counter (one writer
 * each, increasing, published in rw_pubc after the store returned); [8, 8 + 2)
 * device k's launch number (written by device k's write launches, published
 * after the launch returned); [16, 512) a constant pattern.  Device read
 * items read the published numbers first, then the page: a word older than
 * its published value is a stale copy.  Every launch must succeed (a device
 * write to a read-mostly page is allowed).  Finally every word is checked on
 * the CPU and through both devices. */
#define RW_MAXNP 1024
static char *rw_b; static size_t rw_np; static struct uhmm_policy *rw_pol;
static struct uhmm_simdev *rw_dev[2];
static _Atomic uint64_t rw_pubc[4][RW_MAXNP], rw_pubd[2][RW_MAXNP];
static atomic_int rw_stop, rw_bad;
static atomic_ulong rw_launches, rw_cpuw;
static unsigned rw_ncpu;

static void rw_report(const char *who, size_t p, size_t w, uint64_t got, uint64_t want)
{
	if (atomic_fetch_add(&rw_bad, 1) < 5)
		fprintf(stderr, "round %d: %s: page %zu word %zu: %#llx, expected %s %#llx\n", g_round,
			who, p, w, (unsigned long long)got, w < 16 ? "at least" : "", (unsigned long long)want);
}

struct rwk { int dev; bool write; uint64_t l; };

static void rw_kernel(struct uhmm_simdev_thread *t, size_t item, void *arg)
{
	struct rwk *k = arg;
	size_t p = item % rw_np;
	uint64_t *q = (uint64_t *)(void *)(rw_b + p * PG);

	if (k->write && item < rw_np) {
		uhmm_simdev_store64(t, &q[8 + k->dev], k->l);
		return;
	}
	uint64_t pc[4], pd[2];
	for (unsigned c = 0; c < rw_ncpu; c++) pc[c] = atomic_load(&rw_pubc[c][p]);
	for (int d = 0; d < 2; d++) pd[d] = atomic_load(&rw_pubd[d][p]);
	for (unsigned c = 0; c < rw_ncpu; c++) {
		uint64_t v = uhmm_simdev_load64(t, &q[c]);
		if (v < pc[c]) rw_report("device read, CPU word", p, c, v, pc[c]);
	}
	for (int d = 0; d < 2; d++) {
		uint64_t v = uhmm_simdev_load64(t, &q[8 + d]);
		if (v < pd[d]) rw_report("device read, device word", p, 8 + d, v, pd[d]);
	}
	for (size_t w = 16; w < PG / 8; w += 1 + (item & 7)) {
		uint64_t v = uhmm_simdev_load64(t, &q[w]);
		if (v != word(7, p, w)) rw_report("device read, constant", p, w, v, word(7, p, w));
	}
}

static void *rw_devthr(void *a)
{
	int dv = (int)(intptr_t)a;
	unsigned s = seed ^ (0x777u * (unsigned)(dv + 1));
	uint64_t l = 0;
	while (!atomic_load(&rw_stop)) {
		struct rwk k = { .dev = dv, .write = rnd_r(&s) % 3 == 0, .l = ++l };
		size_t n = k.write ? rw_np + rw_np / 2 : rw_np;
		int r = uhmm_simdev_launch(rw_dev[dv], n, rw_kernel, &k, NULL);
		if (r) FAIL("device %d launch %llu (%s): %d %s", dv, (unsigned long long)l,
			    k.write ? "write" : "read", r, uhmm_last_error());
		if (k.write)
			for (size_t p = 0; p < rw_np; p++) atomic_store(&rw_pubd[dv][p], l);
		atomic_fetch_add(&rw_launches, 1);
	}
	return NULL;
}

static void *rw_cputhr(void *a)
{
	unsigned c = (unsigned)(intptr_t)a;
	unsigned s = seed ^ (0x999u * (c + 1));
	uint64_t v = 0;
	while (!atomic_load(&rw_stop)) {
		size_t p = rnd_r(&s) % rw_np;
		uint64_t *q = (uint64_t *)(void *)(rw_b + p * PG);
		v++;
		if (rnd_r(&s) % 4 == 0)
			__atomic_fetch_add(&q[c], 0, __ATOMIC_SEQ_CST);	/* an atomic RMW write */
		__atomic_store_n(&q[c], v, __ATOMIC_RELAXED);
		if (__atomic_load_n(&q[c], __ATOMIC_RELAXED) != v)
			rw_report("CPU read back own word", p, c, q[c], v);
		atomic_store(&rw_pubc[c][p], v);
		atomic_fetch_add(&rw_cpuw, 1);
		if (rnd_r(&s) % 64 == 0) sched_yield();
	}
	return NULL;
}

static void sc_rmwrite(int round)
{
	rw_np = (size_t)hunt_envi("HUNT5_NP", round % 2 ? 1024 : 96);
	rw_ncpu = 2;
	size_t gran = (size_t)1 << (round % 5);			/* 1 .. 16 */
	size_t cap = (size_t)hunt_envi("HUNT5_CAP", round % 3 == 0 ? 4096 : round % 3 == 1 ? 600 : 40);
	unsigned thr = 2 + (unsigned)(round % 2);
	bool toggle = hunt_envi("HUNT5_TOGGLE", round % 4 == 3);
	struct uhmm_policy_config cfg = { 0 };
	int r = uhmm_policy_create(getmm(), &cfg, &rw_pol);
	if (r) FAIL("policy create %d", r);
	int id[2];
	for (int d = 0; d < 2; d++) rw_dev[d] = pdev(rw_pol, cap, thr, &id[d]);
	rw_b = amap_aligned(rw_np);
	for (size_t p = 0; p < rw_np; p++) {
		fill(rw_b + p * PG, 1, 7, p);
		memset(rw_b + p * PG, 0, 16 * 8);
	}
	struct uhmm_policy_attr at = { .preferred = UHMM_POLICY_NONE, .read_mostly = true,
				       .granularity = gran };
	struct uhmm_policy_range *rg;
	r = uhmm_policy_range_add(rw_pol, rw_b, rw_np * PG, &at, &rg);
	if (r) FAIL("range add %d %s", r, uhmm_last_error());
	printf("round %d: rmwrite np %zu gran %zu cap %zu threads %u toggle %d\n", round, rw_np, gran,
	       cap, thr, toggle);
	pthread_t dt[2], ct[4];
	for (int d = 0; d < 2; d++) pthread_create(&dt[d], NULL, rw_devthr, (void *)(intptr_t)d);
	for (unsigned c = 0; c < rw_ncpu; c++) pthread_create(&ct[c], NULL, rw_cputhr, (void *)(intptr_t)c);
	double t0 = hunt_now();
	unsigned toggles = 0;
	while (hunt_now() - t0 < secs()) {
		struct timespec ts = { 0, 20000000 };
		nanosleep(&ts, NULL);
		if (toggle) {
			at.read_mostly = !at.read_mostly;
			r = uhmm_policy_range_set(rg, &at);
			if (r) FAIL("range set %d %s", r, uhmm_last_error());
			toggles++;
		}
		if (atomic_load(&rw_bad)) break;
	}
	atomic_store(&rw_stop, 1);
	for (int d = 0; d < 2; d++) pthread_join(dt[d], NULL);
	for (unsigned c = 0; c < rw_ncpu; c++) pthread_join(ct[c], NULL);
	if (atomic_load(&rw_bad)) FAIL("%d bad reads during the race", atomic_load(&rw_bad));
	/* Final: every word on the CPU, then through both devices. */
	for (size_t p = 0; p < rw_np; p++) {
		const uint64_t *q = (const uint64_t *)(const void *)(rw_b + p * PG);
		for (unsigned c = 0; c < rw_ncpu; c++)
			if (q[c] != atomic_load(&rw_pubc[c][p])) FAIL("CPU: page %zu word %u %#llx != %#llx", p, c, (unsigned long long)q[c], (unsigned long long)rw_pubc[c][p]);
		for (int d = 0; d < 2; d++)
			if (q[8 + d] != atomic_load(&rw_pubd[d][p])) FAIL("CPU: page %zu dev word %d %#llx != %#llx", p, d, (unsigned long long)q[8 + d], (unsigned long long)rw_pubd[d][p]);
		for (size_t w = 16; w < PG / 8; w++)
			if (q[w] != word(7, p, w)) FAIL("CPU: page %zu word %zu constant lost", p, w);
	}
	char *out = malloc(rw_np * PG);
	for (int d = 0; d < 2; d++) {
		r = uhmm_simdev_read(rw_dev[d], rw_b, rw_np, out, NULL);
		if (r) FAIL("simdev_read %d", r);
		if (memcmp(out, rw_b, rw_np * PG)) FAIL("device %d (simdev_read) differs from memory", d);
		struct rwk k = { .dev = d };
		r = uhmm_simdev_launch(rw_dev[d], rw_np, rw_kernel, &k, NULL);
		if (r || atomic_load(&rw_bad)) FAIL("final device %d launch %d bad %d", d, r, atomic_load(&rw_bad));
	}
	struct uhmm_policy_stats st;
	uhmm_policy_range_stats(rg, false, &st);
	printf("round %d: ok: %lu launches, %lu CPU writes, %u toggles, dup %llu collapses %llu "
	       "evicted %llu\n", round, atomic_load(&rw_launches), atomic_load(&rw_cpuw), toggles,
	       (unsigned long long)st.duplicated, (unsigned long long)st.collapses,
	       (unsigned long long)st.evicted_pages);
	for (int d = 0; d < 2; d++) uhmm_simdev_attach_policy(rw_dev[d], NULL, NULL, NULL);
	uhmm_policy_destroy(rw_pol);
	for (int d = 0; d < 2; d++) uhmm_simdev_destroy(rw_dev[d]);
	free(out);
}

/* ================= 2: lru: eviction, prefetch, discard, MAP_FIXED under capacity pressure =====
 * A policy range of lr_np pages (several 2 MiB blocks) on two devices whose
 * capacity holds much less.  Pages are owned: page p by actor p % 4 (0, 1:
 * CPU threads; 2, 3: device 0 and 1's launches).  The owner checks its page
 * (version or zero) and writes a new version over the whole page; CPU owners
 * also discard (uhmm_policy_discard) or mmap(MAP_FIXED) their page (zero).
 * Device launches also read pages they do not own (faults, migrations,
 * eviction).  The main thread queues prefetches to each device and to the
 * CPU over random ranges, waiting for some.  Budgets and thrashing
 * mitigation vary with the round. */
#define LR_MAXNP 4096
static char *lr_b; static size_t lr_np; static struct uhmm_policy *lr_pol;
static struct uhmm_simdev *lr_dev[2];
static unsigned lr_ver[LR_MAXNP];		/* owner's current version, 0: zero */
static atomic_int lr_stop, lr_bad;
static atomic_ulong lr_ops[8];

struct lrk { int dev; unsigned s; size_t *pages; size_t n; unsigned *newver; };

static void lr_kernel(struct uhmm_simdev_thread *t, size_t item, void *arg)
{
	struct lrk *k = arg;
	size_t p = k->pages[item];
	uint64_t *q = (uint64_t *)(void *)(lr_b + p * PG);
	if (p % 4 != (size_t)(2 + k->dev)) {	/* someone else's page: just touch it */
		(void)uhmm_simdev_load64(t, &q[item % (PG / 8)]);
		return;
	}
	unsigned v = lr_ver[p];
	for (size_t w = 0; w < PG / 8; w++) {
		uint64_t x = uhmm_simdev_load64(t, &q[w]);
		uint64_t want = v ? word(v, p, w) : 0;
		if (x != want) {
			if (atomic_fetch_add(&lr_bad, 1) < 5)
				fprintf(stderr, "round %d: device %d: page %zu word %zu: %#llx, expected version %u (%#llx)\n",
					g_round, k->dev, p, w, (unsigned long long)x, v, (unsigned long long)want);
			break;
		}
	}
	for (size_t w = 0; w < PG / 8; w++)
		uhmm_simdev_store64(t, &q[w], word(k->newver[item], p, w));
}

static void *lr_devthr(void *a)
{
	int dv = (int)(intptr_t)a;
	unsigned s = seed ^ (0x555u * (unsigned)(dv + 1));
	size_t pages[256]; unsigned nv[256];
	unsigned vc = 1000000u * (unsigned)(dv + 1);
	while (!atomic_load(&lr_stop)) {
		size_t n = 16 + rnd_r(&s) % 200, base = rnd_r(&s) % lr_np;
		bool seq = rnd_r(&s) % 2;
		for (size_t i = 0; i < n; i++) {
			size_t p = seq ? (base + i) % lr_np : rnd_r(&s) % lr_np;
			/* an owned page at most once per launch */
			for (size_t j = 0; j < i; j++) if (pages[j] == p) { p = (p + 1) % lr_np; j = (size_t)-1; }
			pages[i] = p;
			nv[i] = ++vc;
		}
		struct lrk k = { .dev = dv, .pages = pages, .n = n, .newver = nv };
		int r = uhmm_simdev_launch(lr_dev[dv], n, lr_kernel, &k, NULL);
		if (r) FAIL("device %d launch: %d %s", dv, r, uhmm_last_error());
		for (size_t i = 0; i < n; i++) if (pages[i] % 4 == (size_t)(2 + dv)) lr_ver[pages[i]] = nv[i];
		atomic_fetch_add(&lr_ops[2 + dv], 1);
	}
	return NULL;
}

static void lr_check_cpu(size_t p, const char *when)
{
	unsigned v = lr_ver[p];
	int st = page_is(lr_b + p * PG, v, p);
	if (!(v ? st == 1 : st == 0)) {
		if (!v && page_is(lr_b + p * PG, 0, p) == 1) return;
		FAIL("CPU %s: page %zu: %s, expected %s %u", when, p, st == 1 ? "right" : st == 0 ? "zero" : "other data",
		     v ? "version" : "zero", v);
	}
}

static void *lr_cputhr(void *a)
{
	unsigned c = (unsigned)(intptr_t)a;
	unsigned s = seed ^ (0x333u * (c + 1));
	unsigned vc = 3000000u * (c + 1);
	while (!atomic_load(&lr_stop)) {
		size_t p = (rnd_r(&s) % (lr_np / 4)) * 4 + c;
		unsigned op = rnd_r(&s) % 16;
		lr_check_cpu(p, "before");
		if (op == 0) {
			long n = uhmm_policy_discard(lr_pol, lr_b + p * PG, PG);
			if (n < 0) FAIL("discard %ld %s", n, uhmm_last_error());
			lr_ver[p] = 0;
			atomic_fetch_add(&lr_ops[4], 1);
		} else if (op == 1) {
			void *m = mmap(lr_b + p * PG, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
			if (m == MAP_FAILED) FAIL("MAP_FIXED %d", errno);
			lr_ver[p] = 0;
			atomic_fetch_add(&lr_ops[5], 1);
		} else {
			unsigned v = ++vc;
			fill(lr_b + p * PG, 1, v, p);
			lr_ver[p] = v;
			atomic_fetch_add(&lr_ops[c], 1);
		}
		lr_check_cpu(p, "after");
	}
	return NULL;
}

static atomic_ulong lr_done_calls;
static void lr_done(void *arg, int status, uint64_t pages)
{
	(void)arg; (void)pages;
	if (status) fprintf(stderr, "round %d: prefetch status %d\n", g_round, status);
	atomic_fetch_add(&lr_done_calls, 1);
}

static void sc_lru(int round)
{
	lr_np = (size_t)hunt_envi("HUNT5_NP", 2048);
	size_t cap = (size_t)hunt_envi("HUNT5_CAP", round % 3 == 0 ? 700 : round % 3 == 1 ? 300 : 64);
	struct uhmm_policy_config cfg = {
		.thrash_mitigation = (unsigned)(round % 3),
		.throttle_ns = 100000,
		.pin_ns = round % 2 ? 0 : 2000000,
		.prefetch_batch = (size_t)1 << (4 + round % 6),
		.flags = round % 5 == 4 ? UHMM_POLICY_NO_DENSITY : 0,
	};
	int r = uhmm_policy_create(getmm(), &cfg, &lr_pol);
	if (r) FAIL("policy create %d", r);
	int id[2];
	for (int d = 0; d < 2; d++) lr_dev[d] = pdev(lr_pol, cap, 2, &id[d]);
	if (round % 4 >= 2) {
		uhmm_policy_set_budget(lr_pol, 1, id[0], cap / 3, 0);
		uhmm_policy_set_budget(lr_pol, 0, id[1], cap / 2, 1);
	}
	lr_b = amap_aligned(lr_np);
	for (size_t p = 0; p < lr_np; p++) { lr_ver[p] = 1 + (unsigned)p; fill(lr_b + p * PG, 1, lr_ver[p], p); }
	/* Two ranges, different tenants and granularities. */
	size_t half = lr_np / 2 + (round % 2 ? 100 : 0);
	struct uhmm_policy_attr a0 = { .preferred = UHMM_POLICY_NONE, .granularity = (size_t)1 << (round % 5), .tenant = 0 };
	struct uhmm_policy_attr a1 = { .preferred = UHMM_POLICY_NONE, .granularity = 16, .tenant = 1,
				       .accessed_by = round % 7 == 6 ? 1u : 0 };
	struct uhmm_policy_range *r0, *r1;
	if ((r = uhmm_policy_range_add(lr_pol, lr_b, half * PG, &a0, &r0))) FAIL("range add %d", r);
	if ((r = uhmm_policy_range_add(lr_pol, lr_b + half * PG, (lr_np - half) * PG, &a1, &r1))) FAIL("range add %d", r);
	printf("round %d: lru np %zu cap %zu thrash %u batch %zu budgets %d\n", round, lr_np, cap,
	       cfg.thrash_mitigation, cfg.prefetch_batch, round % 4 >= 2);
	pthread_t dt[2], ct[2];
	for (int d = 0; d < 2; d++) pthread_create(&dt[d], NULL, lr_devthr, (void *)(intptr_t)d);
	for (int c = 0; c < 2; c++) pthread_create(&ct[c], NULL, lr_cputhr, (void *)(intptr_t)c);
	double t0 = hunt_now();
	unsigned s = seed ^ 0xabc;
	unsigned long pf = 0;
	while (hunt_now() - t0 < secs() && !atomic_load(&lr_bad)) {
		size_t i = rnd_r(&s) % lr_np, n = 1 + rnd_r(&s) % (lr_np - i);
		int loc = (int)(rnd_r(&s) % 3) - 1;
		struct uhmm_policy_req *q = NULL;
		bool wait = rnd_r(&s) % 2;
		r = uhmm_policy_prefetch(lr_pol, lr_b + i * PG, n * PG, loc == -1 ? UHMM_POLICY_CPU : id[loc],
					 lr_done, NULL, wait ? &q : NULL);
		if (r) FAIL("prefetch %d", r);
		if (wait && (r = uhmm_policy_wait(q, NULL))) FAIL("prefetch wait %d", r);
		pf++;
		struct timespec ts = { 0, 5000000 };
		nanosleep(&ts, NULL);
	}
	atomic_store(&lr_stop, 1);
	for (int d = 0; d < 2; d++) pthread_join(dt[d], NULL);
	for (int c = 0; c < 2; c++) pthread_join(ct[c], NULL);
	if (atomic_load(&lr_bad)) FAIL("%d bad device reads", atomic_load(&lr_bad));
	/* Every page through device 0 (a launch checks every owned page), then on the CPU. */
	char *out = malloc(lr_np * PG);
	r = uhmm_simdev_read(lr_dev[0], lr_b, lr_np, out, NULL);
	if (r) FAIL("simdev_read %d", r);
	for (size_t p = 0; p < lr_np; p++) {
		int st = page_is(out + p * PG, lr_ver[p], p);
		if (!(lr_ver[p] ? st == 1 : st == 0)) FAIL("device 0 read: page %zu %s, expected %u", p, st == 1 ? "right" : st == 0 ? "zero" : "other", lr_ver[p]);
	}
	for (size_t p = 0; p < lr_np; p++) lr_check_cpu(p, "final");
	uint64_t tp0 = uhmm_policy_tenant_pages(lr_pol, 0, id[0]) + uhmm_policy_tenant_pages(lr_pol, 1, id[0]);
	struct uhmm_policy_stats st0, st1;
	uhmm_policy_range_stats(r0, true, &st0);
	uhmm_policy_range_stats(r1, true, &st1);
	if (st0.resident_dev[id[0]] + st1.resident_dev[id[0]] > cap) FAIL("device 0 holds %llu pages, capacity %zu", (unsigned long long)(st0.resident_dev[id[0]] + st1.resident_dev[id[0]]), cap);
	printf("round %d: ok: cpu writes %lu %lu, launches %lu %lu, discards %lu, map_fixed %lu, prefetches %lu (done %lu), "
	       "evicted %llu, thrash %llu, dev0 holds %llu (tenant count %llu)\n", round,
	       atomic_load(&lr_ops[0]), atomic_load(&lr_ops[1]), atomic_load(&lr_ops[2]), atomic_load(&lr_ops[3]),
	       atomic_load(&lr_ops[4]), atomic_load(&lr_ops[5]), pf, atomic_load(&lr_done_calls),
	       (unsigned long long)(st0.evicted_pages + st1.evicted_pages),
	       (unsigned long long)(st0.thrash_events + st1.thrash_events),
	       (unsigned long long)(st0.resident_dev[id[0]] + st1.resident_dev[id[0]]), (unsigned long long)tp0);
	for (int d = 0; d < 2; d++) uhmm_simdev_attach_policy(lr_dev[d], NULL, NULL, NULL);
	uhmm_policy_destroy(lr_pol);
	for (int d = 0; d < 2; d++) uhmm_simdev_destroy(lr_dev[d]);
	for (size_t p = 0; p < lr_np; p++) lr_check_cpu(p, "after destroy");
	free(out);
}

/* ================= 3: rmfork: fork with a read-mostly range, copies on devices ===============
 * Copies on two devices, a device thread launching reads all the time and a
 * CPU writer; the main thread forks.  The child (its own alarm) writes every
 * page of its copy of the range and checks it; the parent checks its own
 * data afterwards.  A child write to its private copy must work as any
 * write (the kernel's copy-on-write); a hang or a crash is a failure. */
static void *rf_devthr(void *a)
{
	(void)a;
	while (!atomic_load(&rw_stop)) {
		struct rwk k = { .dev = 0 };
		int r = uhmm_simdev_launch(rw_dev[0], rw_np, rw_kernel, &k, NULL);
		if (r) FAIL("launch %d %s", r, uhmm_last_error());
		atomic_fetch_add(&rw_launches, 1);
	}
	return NULL;
}

static void sc_rmfork(int round)
{
	rw_np = 64;
	rw_ncpu = 1;
	bool launching = round % 2;
	int r = uhmm_policy_create(getmm(), NULL, &rw_pol);
	if (r) FAIL("policy create %d", r);
	int id[2];
	for (int d = 0; d < 2; d++) rw_dev[d] = pdev(rw_pol, 1024, 2, &id[d]);
	rw_b = amap_aligned(rw_np);
	for (size_t p = 0; p < rw_np; p++) { fill(rw_b + p * PG, 1, 7, p); memset(rw_b + p * PG, 0, 16 * 8); }
	struct uhmm_policy_attr at = { .preferred = UHMM_POLICY_NONE, .read_mostly = true, .granularity = 1 };
	struct uhmm_policy_range *rg;
	if ((r = uhmm_policy_range_add(rw_pol, rw_b, rw_np * PG, &at, &rg))) FAIL("range add %d", r);
	for (int d = 0; d < 2; d++) {
		struct rwk k = { .dev = d };
		if ((r = uhmm_simdev_launch(rw_dev[d], rw_np, rw_kernel, &k, NULL))) FAIL("launch %d", r);
	}
	pthread_t dt, ct;
	if (launching) pthread_create(&dt, NULL, rf_devthr, NULL);
	pthread_create(&ct, NULL, rw_cputhr, (void *)(intptr_t)0);
	int forks = 0;
	double t0 = hunt_now();
	while (hunt_now() - t0 < secs() && forks < 40) {
		pid_t c = fork();
		if (c < 0) FAIL("fork %d", errno);
		if (c == 0) {
			alarm(10);
			for (size_t p = 0; p < rw_np; p++) fill(rw_b + p * PG, 1, 99, p);
			for (size_t p = 0; p < rw_np; p++)
				if (page_is(rw_b + p * PG, 99, p) != 1) { fprintf(stderr, "child: page %zu wrong\n", p); _exit(3); }
			_exit(0);
		}
		int st;
		if (waitpid(c, &st, 0) != c) FAIL("waitpid");
		if (!WIFEXITED(st) || WEXITSTATUS(st))
			FAIL("fork %d (%s): child status %#x (%s)", forks, launching ? "launch running" : "no launch",
			     st, WIFSIGNALED(st) ? strsignal(WTERMSIG(st)) : "exit");
		forks++;
	}
	atomic_store(&rw_stop, 1);
	if (launching) pthread_join(dt, NULL);
	pthread_join(ct, NULL);
	for (size_t p = 0; p < rw_np; p++)
		for (size_t w = 16; w < PG / 8; w++)
			if (((uint64_t *)(void *)(rw_b + p * PG))[w] != word(7, p, w)) FAIL("parent page %zu changed", p);
	printf("round %d: ok: %d forks (%s)\n", round, forks, launching ? "launch running" : "no launch");
	for (int d = 0; d < 2; d++) uhmm_simdev_attach_policy(rw_dev[d], NULL, NULL, NULL);
	uhmm_policy_destroy(rw_pol);
	for (int d = 0; d < 2; d++) uhmm_simdev_destroy(rw_dev[d]);
}

/* ================= 4: stack: migrate a running thread's stack, TLS and signal stack ==========
 * Thread T runs on a stack the test mapped (pthread_attr_setstack: glibc
 * puts its TCB and static TLS at the top of it) with a sigaltstack of the
 * test's own; it keeps recursing with checked local arrays and taking
 * SIGUSR1 on the alternate stack (the handler checks its own locals and
 * T's TLS).  A migrator moves T's stack and signal stack to the device,
 * takes exclusive access of them, and back (HUNT5_HOW or round % 4:
 * 0 both, 1 stack only, 2 also the migrator's own stack (its own call
 * frame: a refusal or success, never a hang), 3 also the page(s) holding the
 * environment strings while the main thread calls getenv()).
 * Any wrong local, any hang fails. */
#define ST_SIZE (256 * 1024)
static char *st_stack, *st_alt, *st_mig_stack;
static struct uhmm_simdev *st_dev;
static atomic_int st_stop;
static atomic_ulong st_iter, st_sigs, st_migs, st_refused;
static __thread unsigned long st_tls = 0x1234;

static unsigned long st_rec(unsigned depth, unsigned long salt)
{
	volatile unsigned long loc[128];
	for (unsigned i = 0; i < 128; i++) loc[i] = salt * 31 + i + depth;
	unsigned long r = depth ? st_rec(depth - 1, salt + 1) : 7;
	for (unsigned i = 0; i < 128; i++)
		if (loc[i] != salt * 31 + i + depth) FAIL("stack local %u at depth %u: %lx", i, depth, loc[i]);
	return r + loc[depth % 128];
}

static void st_usr1(int sig)
{
	(void)sig;
	volatile unsigned long loc[64];
	unsigned long t = st_tls;
	for (unsigned i = 0; i < 64; i++) loc[i] = t + i;
	for (unsigned i = 0; i < 64; i++) if (loc[i] != t + i) FAIL("alt stack local %u", i);
	atomic_fetch_add(&st_sigs, 1);
}

static void *st_thread(void *a)
{
	(void)a;
	stack_t ss = { .ss_sp = st_alt, .ss_size = 64 * 1024 };
	if (sigaltstack(&ss, NULL)) FAIL("sigaltstack %d", errno);
	st_tls = 0x5150;
	unsigned long salt = 1;
	while (!atomic_load(&st_stop)) {
		if (st_tls != 0x5150) FAIL("TLS changed: %lx", st_tls);
		st_rec(20 + (unsigned)(salt % 20), salt);
		salt++;
		atomic_fetch_add(&st_iter, 1);
	}
	return NULL;
}

static char *st_env_lo, *st_env_hi;
static int st_altmig = 1;	/* HUNT5_ALT=0: never migrate the signal stack (item 17) */

static void st_mig_range(char *lo, char *hi, unsigned k)
{
	size_t np = (size_t)(hi - lo) / PG;
	int r;
	if (k == 0) r = uhmm_simdev_migrate_to_dev(st_dev, lo, np, NULL);
	else if (k == 1) r = uhmm_simdev_exclusive(st_dev, lo, np, NULL);
	else r = uhmm_simdev_migrate_to_sys(st_dev, lo, np, NULL);
	if (r && r != -ENOENT) atomic_fetch_add(&st_refused, 1);
	atomic_fetch_add(&st_migs, 1);
}

static void *st_migrator(void *a)
{
	unsigned how = (unsigned)(intptr_t)a;
	unsigned s = seed ^ 0x4242;
	while (!atomic_load(&st_stop)) {
		unsigned k = rnd_r(&s) % 3, what = rnd_r(&s) % 4;
		if (what == 0 && how != 1 && st_altmig) st_mig_range(st_alt, st_alt + 64 * 1024, k);
		else if (what == 1 && how == 2) {
			/* the page of this very frame and the rest of this stack above it */
			char here;
			char *lo = (char *)((uintptr_t)&here & ~(PG - 1));
			st_mig_range(lo, st_mig_stack + ST_SIZE, k);
		} else if (what == 2 && how == 3 && st_env_lo) st_mig_range(st_env_lo, st_env_hi, k);
		else {
			size_t off = (rnd_r(&s) % (ST_SIZE / PG)) * PG, n = 1 + rnd_r(&s) % (ST_SIZE / PG - off / PG);
			st_mig_range(st_stack + off, st_stack + off + n * PG, k);
		}
	}
	return NULL;
}

extern char **environ;

static void sc_stack(int round)
{
	unsigned how = (unsigned)hunt_envi("HUNT5_HOW", round % 4);
	st_altmig = hunt_envi("HUNT5_ALT", 1);
	st_dev = mkdev(4096, 1, 0);
	st_stack = mmap(NULL, ST_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
	st_alt = mmap(NULL, 64 * 1024, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	st_mig_stack = mmap(NULL, ST_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
	if (st_stack == MAP_FAILED || st_alt == MAP_FAILED || st_mig_stack == MAP_FAILED) FAIL("mmap");
	if (how == 3) {
		/* the environment strings: from the first one's page to the end of [stack] */
		FILE *f = fopen("/proc/self/maps", "r");
		char line[512];
		uintptr_t e0 = (uintptr_t)environ[0];
		while (f && fgets(line, sizeof line, f)) {
			unsigned long lo, hi;
			if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && e0 >= lo && e0 < hi) {
				st_env_lo = (char *)(e0 & ~(PG - 1));
				st_env_hi = (char *)hi;
			}
		}
		if (f) fclose(f);
	}
	struct sigaction sa = { .sa_handler = st_usr1, .sa_flags = SA_ONSTACK | SA_RESTART };
	sigaction(SIGUSR1, &sa, NULL);
	pthread_attr_t at;
	pthread_t t, m;
	pthread_attr_init(&at);
	pthread_attr_setstack(&at, st_stack, ST_SIZE);
	if (pthread_create(&t, &at, st_thread, NULL)) FAIL("create");
	pthread_attr_setstack(&at, st_mig_stack, ST_SIZE);
	if (pthread_create(&m, &at, st_migrator, (void *)(intptr_t)how)) FAIL("create");
	printf("round %d: stack how %u env [%p, %p)\n", round, how, (void *)st_env_lo, (void *)st_env_hi);
	double t0 = hunt_now();
	unsigned long envs = 0;
	while (hunt_now() - t0 < secs()) {
		pthread_kill(t, SIGUSR1);
		if (how == 3) {
			const char *v = getenv("PATH");
			if (!v) FAIL("PATH lost");
			envs++;
		}
		struct timespec ts = { 0, 200000 };
		nanosleep(&ts, NULL);
	}
	atomic_store(&st_stop, 1);
	pthread_join(t, NULL);
	pthread_join(m, NULL);
	printf("round %d: ok: %lu iterations, %lu signals, %lu migrations (%lu refused), %lu getenv\n", round,
	       atomic_load(&st_iter), atomic_load(&st_sigs), atomic_load(&st_migs), atomic_load(&st_refused), envs);
	if (!atomic_load(&st_iter) || !atomic_load(&st_migs)) FAIL("no progress");
	uhmm_simdev_destroy(st_dev);
}

/* ================= 5: mfork: MADV_DONTFORK / MADV_WIPEONFORK on device-resident ranges, fork ===
 * 64 pages with data, a random part migrated to the device (a thread keeps
 * migrating runs both ways); the main thread marks a run DONTFORK or
 * WIPEONFORK (or takes it back with DOFORK / KEEPONFORK) and forks.  The
 * child: DONTFORK pages are not mapped (mincore ENOMEM), WIPEONFORK pages
 * read zero, every other page its data.  The parent's data stays, through
 * the CPU and the device. */
static char *mf_b; static struct uhmm_simdev *mf_dev; static atomic_int mf_stop;
static void *mf_mig(void *a)
{
	(void)a;
	unsigned s = seed ^ 0x8888;
	while (!atomic_load(&mf_stop)) {
		size_t i = rnd_r(&s) % 64, n = 1 + rnd_r(&s) % (64 - i);
		if (rnd_r(&s) % 2) uhmm_simdev_migrate_to_dev(mf_dev, mf_b + i * PG, n, NULL);
		else uhmm_simdev_migrate_to_sys(mf_dev, mf_b + i * PG, n, NULL);
	}
	return NULL;
}

static void sc_mfork(int round)
{
	mf_dev = mkdev(1024, 1, 0);
	mf_b = amap_aligned(64);
	for (size_t p = 0; p < 64; p++) fill(mf_b + p * PG, 1, 5, p);
	int mode[64] = { 0 };	/* bit 0 dontfork, bit 1 wipeonfork */
	pthread_t t;
	pthread_create(&t, NULL, mf_mig, NULL);
	unsigned s = seed;
	int forks = 0;
	double t0 = hunt_now();
	while (hunt_now() - t0 < secs() && forks < 200) {
		size_t i = rnd_r(&s) % 64, n = 1 + rnd_r(&s) % (64 - i < 8 ? 64 - i : 8);
		int m = (int)(rnd_r(&s) % 3);
		int adv = m == 1 ? MADV_DONTFORK : m == 2 ? MADV_WIPEONFORK : (rnd_r(&s) % 2 ? MADV_DOFORK : MADV_KEEPONFORK);
		if (madvise(mf_b + i * PG, n * PG, adv)) FAIL("madvise %d: %d", adv, errno);
		/* mode bit 0: VM_DONTCOPY, bit 1: VM_WIPEONFORK (independent flags) */
		for (size_t k = i; k < i + n; k++) {
			if (adv == MADV_DONTFORK) mode[k] |= 1;
			else if (adv == MADV_WIPEONFORK) mode[k] |= 2;
			else if (adv == MADV_DOFORK) mode[k] &= ~1;
			else mode[k] &= ~2;
		}
		pid_t c = fork();
		if (c < 0) FAIL("fork %d", errno);
		if (c == 0) {
			alarm(20);
			for (size_t p = 0; p < 64; p++) {
				unsigned char v;
				int r = mincore(mf_b + p * PG, PG, &v);
				if (mode[p] & 1) { if (!(r && errno == ENOMEM)) { fprintf(stderr, "child: DONTFORK page %zu mapped\n", p); _exit(3); } continue; }
				if (r) { fprintf(stderr, "child: page %zu (mode %d) not mapped\n", p, mode[p]); _exit(4); }
				int st = page_is(mf_b + p * PG, 5, p);
				if (mode[p] & 2 ? st != 0 : st != 1) { fprintf(stderr, "child: page %zu mode %d: %s\n", p, mode[p], st == 1 ? "data" : st == 0 ? "zero" : "other"); _exit(5); }
			}
			_exit(0);
		}
		int st;
		if (waitpid(c, &st, 0) != c) FAIL("waitpid");
		if (!WIFEXITED(st) || WEXITSTATUS(st)) FAIL("fork %d: child status %#x", forks, st);
		for (size_t p = 0; p < 64; p++) if (page_is(mf_b + p * PG, 5, p) != 1) FAIL("parent page %zu lost after fork %d", p, forks);
		forks++;
	}
	atomic_store(&mf_stop, 1);
	pthread_join(t, NULL);
	char *out = malloc(64 * PG);
	if (uhmm_simdev_read(mf_dev, mf_b, 64, out, NULL)) FAIL("read");
	for (size_t p = 0; p < 64; p++) if (page_is(out + p * PG, 5, p) != 1) FAIL("device read page %zu", p);
	printf("round %d: ok: %d forks\n", round, forks);
	free(out);
	uhmm_simdev_destroy(mf_dev);
}

/* ================= 6: altsig: signals delivered on a sigaltstack that keeps migrating ========
 * Minimal form of the stack hang: thread T spins with its sigaltstack in
 * a 16-page buffer; the main thread sends it SIGUSR1 every 100 us (2000
 * times) and migrates the alternate stack to the device every 10th
 * signal (HUNT5_EVERY); then it stops and joins T.  The handler only
 * writes 256 bytes of locals.  T must finish. */
static atomic_long as_got; static atomic_int as_stop; static char *as_alt;
static void as_h(int sig) { (void)sig; volatile char loc[256]; memset((char *)loc, 1, sizeof loc); atomic_fetch_add(&as_got, 1); }
static void *as_t(void *a)
{
	(void)a;
	stack_t ss = { .ss_sp = as_alt, .ss_size = 64 * 1024 };
	if (sigaltstack(&ss, NULL)) FAIL("sigaltstack");
	while (!atomic_load(&as_stop)) { volatile int x = 0; for (int i = 0; i < 1000; i++) x += i; }
	return NULL;
}
static void sc_altsig(int round)
{
	int every = hunt_envi("HUNT5_EVERY", 10);
	struct uhmm_simdev *d = mkdev(256, 1, 0);
	as_alt = mmap(NULL, 64 * 1024, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	memset(as_alt, 0x5a, 64 * 1024);
	struct sigaction sa = { .sa_handler = as_h, .sa_flags = SA_ONSTACK | SA_RESTART };
	sigaction(SIGUSR1, &sa, NULL);
	pthread_t th;
	pthread_create(&th, NULL, as_t, NULL);
	for (int k = 0; k < 2000; k++) {
		if (every && k % every == 0) uhmm_simdev_migrate_to_dev(d, as_alt, 16, NULL);
		pthread_kill(th, SIGUSR1);
		struct timespec ts = { 0, 100000 };
		nanosleep(&ts, NULL);
	}
	atomic_store(&as_stop, 1);
	pthread_join(th, NULL);
	printf("round %d: ok: handler ran %ld times\n", round, atomic_load(&as_got));
	uhmm_simdev_destroy(d);
}

static const struct hunt_scenario scs[] = {
	{"rmwrite", sc_rmwrite}, {"lru", sc_lru}, {"rmfork", sc_rmfork},
	{"stack", sc_stack}, {"mfork", sc_mfork}, {"altsig", sc_altsig},
};

int main(int argc, char **argv)
{
	return hunt_main(argc, argv, "HUNT5", scs, sizeof(scs) / sizeof(scs[0]), &seed, &g_round,
			 hunt_segv);
}
