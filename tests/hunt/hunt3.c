// SPDX-License-Identifier: MIT
/*
 * Adversarial programs against the public API, round 3 (tests/hunt/FINDINGS.md).
 * Not registered in CTest.  Usage: hunt3 SCENARIO ROUNDS [TIMEOUT_S]
 * Each round runs in a forked child with alarm(); the parent (round.h)
 * reports hangs with every thread's gdb stacks, and failed rounds.
 * HUNT3_FIRST=k HUNT3_STEP=s rerun one round kind; HUNT3_OPS=mask limits
 * the torture scenario's operations (bit per op, see ops[]).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <spawn.h>
#include <uhmm/uhmm.h>
#include <uhmm/simdev.h>

#include "round.h"

#define PG 4096UL
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#define MADV_POPULATE_WRITE 23
#endif
#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4
#endif
#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

static unsigned seed;
static int g_round;

#define FAIL(...) do { fprintf(stderr, "FAIL round %d %s:%d: ", g_round, __func__, __LINE__); fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); _exit(1); } while (0)

#include "pages.h"

static long check(const char *p, size_t np, unsigned tag, size_t pgoff)
{
	for (size_t i = 0; i < np; i++)
		if (page_is(p + i * PG, tag, pgoff + i) != 1)
			return (long)i;
	return -1;
}
static long check_zero(const char *p, size_t np)
{
	for (size_t i = 0; i < np * PG; i++)
		if (p[i])
			return (long)(i / PG);
	return -1;
}


static void *amap(size_t np)
{
	void *p = mmap(NULL, np * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) FAIL("mmap %d", errno);
	return p;
}

static size_t dev_resident(struct uhmm_simdev *d, const void *p, size_t np)
{
	uint8_t *s = malloc(np);
	size_t n = 0;
	if (uhmm_simdev_snapshot(d, p, np, s, NULL)) FAIL("snapshot %s", uhmm_last_error());
	for (size_t i = 0; i < np; i++)
		n += (s[i] & 0xf0) == UHMM_SIMDEV_PROT_DEV_PRIVATE_LOCAL;
	free(s);
	return n;
}

/* ================= 1: torture: every page has a version; racers change the mapping ======
 * Writers of a page (CPU, device, discards) hold its lock and publish its version;
 * migrations, mprotect, mlock, madvise COLD/PAGEOUT/POPULATE race freely.
 * After a discard (DONTNEED, MAP_FIXED, MREMAP_DONTUNMAP) returned, the page must read
 * zero (never the old data, even with a migration of it in flight); after MADV_FREE,
 * the old data or zero. */
#define TMAX 512
static char *tb; static size_t tnp;
static struct uhmm_simdev *tdev;
static pthread_mutex_t tlk[TMAX];
static unsigned tver[TMAX];
static pthread_rwlock_t t_wok = PTHREAD_RWLOCK_INITIALIZER;	/* CPU writes: buffer writable */
static pthread_rwlock_t t_rok = PTHREAD_RWLOCK_INITIALIZER;	/* CPU reads: buffer readable */
static atomic_int t_stop;
static atomic_ulong t_cnt[32];
static unsigned t_opmask;

static void lock_pages(size_t i, size_t n) { for (size_t k = i; k < i + n; k++) pthread_mutex_lock(&tlk[k]); }
static void unlock_pages(size_t i, size_t n) { for (size_t k = i; k < i + n; k++) pthread_mutex_unlock(&tlk[k]); }

static void cpu_write(size_t i, size_t n, unsigned *s)
{
	for (size_t k = i; k < i + n; k++) {
		unsigned v = (rnd_r(s) & 0xffff) + 1;
		fill(tb + k * PG, 1, v, k);
		tver[k] = v;
	}
}

static const char *opnames[] = {
	"migrate_to_dev", "migrate_to_sys", "cpu_write", "dev_write", "cpu_check", "dev_check",
	"mprotect_ro", "mprotect_none", "mlock", "mlockall", "cold_pageout", "populate",
	"free", "dontneed", "map_fixed", "mremap_move", "mremap_dontunmap", "exclusive",
	"noreplace",
};
#define NOPS (int)(sizeof opnames / sizeof opnames[0])

static void t_op(int op, unsigned *s, char *scratch)
{
	size_t i = rnd_r(s) % tnp, n = 1 + rnd_r(s) % (tnp - i < 32 ? tnp - i : 32);
	char *a = tb + i * PG;
	size_t len = n * PG;
	int r;
	switch (op) {
	case 0:
		uhmm_simdev_migrate_to_dev(tdev, a, n, NULL);
		break;
	case 1:
		uhmm_simdev_migrate_to_sys(tdev, a, n, NULL);
		break;
	case 2:
		pthread_rwlock_rdlock(&t_wok);
		lock_pages(i, n);
		cpu_write(i, n, s);
		unlock_pages(i, n);
		pthread_rwlock_unlock(&t_wok);
		break;
	case 3: {
		char *b = malloc(len);
		unsigned v[32];
		for (size_t k = 0; k < n; k++) { v[k] = (rnd_r(s) & 0xffff) + 1; fill(b + k * PG, 1, v[k], i + k); }
		lock_pages(i, n);
		r = uhmm_simdev_write(tdev, a, n, b, NULL);
		if (r == 0)
			for (size_t k = 0; k < n; k++) tver[i + k] = v[k];
		else if (r != -EPERM && r != -EFAULT)
			FAIL("dev write %d %s", r, uhmm_last_error());
		unlock_pages(i, n);
		free(b);
		break; }
	case 4:
		pthread_rwlock_rdlock(&t_rok);
		lock_pages(i, n);
		for (size_t k = i; k < i + n; k++)
			if (page_is(tb + k * PG, tver[k], k) != 1)
				FAIL("cpu check: page %zu not version %u (%s)", k, tver[k],
				     page_is(tb + k * PG, tver[k], k) == 0 ? "zero" : "other data");
		unlock_pages(i, n);
		pthread_rwlock_unlock(&t_rok);
		break;
	case 5: {
		char *b = malloc(len);
		lock_pages(i, n);
		r = uhmm_simdev_read(tdev, a, n, b, NULL);
		if (r == 0) {
			for (size_t k = 0; k < n; k++)
				if (page_is(b + k * PG, tver[i + k], i + k) != 1) {
					uint8_t sn = 0;
					uhmm_simdev_snapshot(tdev, a + k * PG, 1, &sn, NULL);
					pthread_rwlock_rdlock(&t_rok);
					int cpu = page_is(tb + (i + k) * PG, tver[i + k], i + k);
					FAIL("device check: page %zu of [%zu, +%zu) not version %u (%s); snapshot %#x, CPU sees %s", i + k, i, n, tver[i + k],
					     page_is(b + k * PG, tver[i + k], i + k) == 0 ? "zero" : "other data", sn,
					     cpu == 1 ? "the version" : cpu == 0 ? "zero" : "other data");
				}
		} else if (r != -EFAULT)
			FAIL("dev read %d %s", r, uhmm_last_error());
		unlock_pages(i, n);
		free(b);
		break; }
	case 6: case 7:	/* held for the whole window: CPU writes (and, for NONE, reads) wait */
		if (op == 7) pthread_rwlock_wrlock(&t_rok);
		pthread_rwlock_wrlock(&t_wok);
		if (mprotect(a, len, op == 6 ? PROT_READ : PROT_NONE)) FAIL("mprotect %d", errno);
		for (int k = 0; k < 3; k++) sched_yield();
		if (mprotect(a, len, PROT_READ | PROT_WRITE)) FAIL("mprotect back %d", errno);
		pthread_rwlock_unlock(&t_wok);
		if (op == 7) pthread_rwlock_unlock(&t_rok);
		break;
	case 8:
		if (mlock(a, len) && errno != EAGAIN && errno != ENOMEM) FAIL("mlock %d", errno);
		for (int k = 0; k < 3; k++) sched_yield();
		if (munlock(a, len)) FAIL("munlock %d", errno);
		break;
	case 9:
		if (rnd_r(s) & 1) {
			if (mlockall(MCL_CURRENT | MCL_FUTURE) && errno != EAGAIN && errno != ENOMEM) FAIL("mlockall %d", errno);
		} else if (munlockall()) FAIL("munlockall %d", errno);
		break;
	case 10:
		r = madvise(a, len, (rnd_r(s) & 1) ? MADV_COLD : MADV_PAGEOUT);
		if (r && errno != EINVAL && errno != EAGAIN) FAIL("cold/pageout %d", errno);
		break;
	case 11:
		r = madvise(a, len, (rnd_r(s) & 1) ? MADV_POPULATE_READ : MADV_POPULATE_WRITE);
		/* EFAULT: PROT_NONE / PROT_READ for POPULATE_WRITE; ENOMEM: a hole */
		if (r && errno != EFAULT && errno != EINVAL && errno != ENOMEM && errno != EINTR)
			FAIL("populate %d", errno);
		break;
	case 12:	/* MADV_FREE: old data or zero, then defined again */
		pthread_rwlock_rdlock(&t_rok);
		pthread_rwlock_rdlock(&t_wok);
		lock_pages(i, n);
		if (madvise(a, len, MADV_FREE) && errno != EINVAL)	/* EINVAL: mlocked, the mappings before it freed */
			FAIL("free %d", errno);
		if (rnd_r(s) & 1) madvise(a, len, MADV_PAGEOUT);
		for (size_t k = i; k < i + n; k++) {
			int st = page_is(tb + k * PG, tver[k], k);
			if (st < 0) FAIL("after MADV_FREE page %zu neither version %u nor zero", k, tver[k]);
		}
		cpu_write(i, n, s);
		unlock_pages(i, n);
		pthread_rwlock_unlock(&t_wok);
		pthread_rwlock_unlock(&t_rok);
		break;
	case 13: case 14: case 16: {	/* discards: zero afterwards, never the old data */
		pthread_rwlock_rdlock(&t_rok);
		pthread_rwlock_rdlock(&t_wok);
		lock_pages(i, n);
		if (op == 13) {
			if (madvise(a, len, MADV_DONTNEED)) {
				/* EINVAL: mlocked; the mappings before the locked one were discarded */
				if (errno != EINVAL) FAIL("dontneed %d", errno);
				for (size_t k = i; k < i + n; k++)
					if (page_is(tb + k * PG, tver[k], k) < 0)
						FAIL("after a refused MADV_DONTNEED page %zu neither version %u nor zero", k, tver[k]);
				cpu_write(i, n, s);
				goto out16;
			}
		} else if (op == 14) {
			if (mmap(a, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != a)
				FAIL("map_fixed %d", errno);
		} else {
			char *t = mremap(a, len, len, MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, scratch);
			if (t == MAP_FAILED) {
				/* EFAULT/EINVAL: the range spans mappings (mprotect / mlock split it) */
				if (errno != EFAULT && errno != EINVAL) FAIL("mremap dontunmap %d", errno);
				goto out16;
			}
			for (size_t k = 0; k < n; k++)
				if (page_is(t + k * PG, tver[i + k], i + k) != 1)
					FAIL("MREMAP_DONTUNMAP: moved page %zu not version %u", i + k, tver[i + k]);
			/* scratch stays mapped (never a hole another thread's mapping could take) */
		}
		for (size_t k = i; k < i + n; k++) {
			int st = page_is(tb + k * PG, tver[k], k);
			if (check_zero(tb + k * PG, 1) >= 0)
				FAIL("after %s page %zu not zero (%s)", opnames[op], k, st == 1 ? "the old data" : "other data");
		}
		cpu_write(i, n, s);
	out16:
		unlock_pages(i, n);
		pthread_rwlock_unlock(&t_wok);
		pthread_rwlock_unlock(&t_rok);
		break; }
	case 15: {	/* move out and back: the data travels */
		pthread_rwlock_rdlock(&t_rok);
		pthread_rwlock_rdlock(&t_wok);
		lock_pages(i, n);
		/* DONTUNMAP both ways: no hole is ever left at either end */
		char *t = mremap(a, len, len, MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, scratch);
		if (t == MAP_FAILED) {
			if (errno != EFAULT && errno != EINVAL) FAIL("mremap %d", errno);
		} else {
			for (size_t k = 0; k < n; k++)
				if (page_is(t + k * PG, tver[i + k], i + k) != 1)
					FAIL("mremap: moved page %zu not version %u", i + k, tver[i + k]);
			if (mremap(t, len, len, MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, a) != a) FAIL("mremap back %d", errno);
			for (size_t k = i; k < i + n; k++)
				if (page_is(tb + k * PG, tver[k], k) != 1)
					FAIL("mremap back: page %zu not version %u", k, tver[k]);
		}
		unlock_pages(i, n);
		pthread_rwlock_unlock(&t_wok);
		pthread_rwlock_unlock(&t_rok);
		break; }
	case 17:
		uhmm_simdev_exclusive(tdev, a, n, NULL);
		break;
	case 18:	/* MAP_FIXED_NOREPLACE over it must fail, nothing changes */
		if (mmap(a, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0) != MAP_FAILED)
			FAIL("MAP_FIXED_NOREPLACE over a mapping succeeded");
		if (errno != EEXIST) FAIL("MAP_FIXED_NOREPLACE errno %d", errno);
		break;
	}
	atomic_fetch_add(&t_cnt[op], 1);
}

static void *t_thr(void *arg)
{
	unsigned s = (unsigned)(uintptr_t)arg * 2654435761u ^ seed;
	char *scratch = amap(32);
	while (!atomic_load(&t_stop)) {
		int op;
		do op = (int)(rnd_r(&s) % NOPS); while (!(t_opmask & (1u << op)));
		t_op(op, &s, scratch);
	}
	return NULL;
}

static void sc_torture(int round)
{
	t_opmask = getenv("HUNT3_OPS") ? (unsigned)strtoul(getenv("HUNT3_OPS"), NULL, 0) : ~0u;
	tnp = (round & 1) ? 512 : 96;
	tdev = mkdev(1024, 2, 0);
	/* THP in half the rounds: 2 MiB aligned */
	char *raw = amap(tnp + 512);
	tb = (char *)(((uintptr_t)raw + (2u << 20) - 1) & ~((uintptr_t)(2u << 20) - 1));
	if (round & 2) madvise(tb, tnp * PG, MADV_HUGEPAGE);
	for (size_t k = 0; k < tnp; k++) { pthread_mutex_init(&tlk[k], NULL); tver[k] = 1; }
	fill(tb, tnp, 1, 0);
	int nthr = 3 + (round & 4 ? 1 : 0);
	pthread_t th[8];
	for (int k = 0; k < nthr; k++) pthread_create(&th[k], NULL, t_thr, (void *)(uintptr_t)(k + 1));
	struct timespec ts = { 4, 0 };
	nanosleep(&ts, NULL);	/* how long the racers run, not synchronisation */
	atomic_store(&t_stop, 1);
	for (int k = 0; k < nthr; k++) pthread_join(th[k], NULL);
	munlockall();
	if (mprotect(tb, tnp * PG, PROT_READ | PROT_WRITE)) FAIL("mprotect end");
	for (size_t k = 0; k < tnp; k++)
		if (page_is(tb + k * PG, tver[k], k) != 1)
			FAIL("end: page %zu not version %u (%s)", k, tver[k], page_is(tb + k * PG, tver[k], k) == 0 ? "zero" : "other");
	uhmm_simdev_destroy(tdev);
	for (size_t k = 0; k < tnp; k++)
		if (page_is(tb + k * PG, tver[k], k) != 1)
			FAIL("after destroy: page %zu not version %u", k, tver[k]);
	fprintf(stderr, "round %d ops:", round);
	for (int k = 0; k < NOPS; k++) if (t_cnt[k]) fprintf(stderr, " %s %lu", opnames[k], (unsigned long)t_cnt[k]);
	fprintf(stderr, "\n");
}


/* ================= 2: discard: one owner changes the mapping under a migrating thread ======
 * HUNT3_HOW (or round % 4): 0 MADV_DONTNEED, 1 mmap MAP_FIXED, 2 mremap out and back
 * (MREMAP_DONTUNMAP both ways), 3 mremap DONTUNMAP out (the old range must read zero).
 * The other thread only migrates (to the device, and back when HUNT3_TOSYS=1): the
 * owner's view is the only truth.  After each change: zero where the kernel says
 * zero, then a new version, checked by the CPU and by a device read. */
static char *db; static size_t dnp = 64;
static struct uhmm_simdev *ddev;
static atomic_int d_stop;
static void *d_mig(void *a)
{
	(void)a;
	unsigned s = seed ^ 0x5555;
	bool tosys = getenv("HUNT3_TOSYS") && atoi(getenv("HUNT3_TOSYS"));
	while (!atomic_load(&d_stop)) {
		size_t i = rnd_r(&s) % dnp, n = 1 + rnd_r(&s) % (dnp - i);
		if (getenv("HUNT3_NOMIG")) { sched_yield(); continue; }
		int r = uhmm_simdev_migrate_to_dev(ddev, db + i * PG, n, NULL);
		if (getenv("HUNT3_TRACE")) fprintf(stderr, "mig [%zu, +%zu) %d\n", i, n, r);
		if (tosys && (rnd_r(&s) & 1))
			uhmm_simdev_migrate_to_sys(ddev, db + i * PG, n, NULL);
	}
	return NULL;
}
static void *d_racer(void *a)
{
	const char *kind = a;
	unsigned s = seed ^ 0x7777;
	while (!atomic_load(&d_stop)) {
		size_t i = rnd_r(&s) % dnp, n = 1 + rnd_r(&s) % (dnp - i);
		if (!strcmp(kind, "mlock")) {
			mlock(db + i * PG, n * PG);
			sched_yield();
			munlock(db + i * PG, n * PG);
		} else if (!strcmp(kind, "mlockall")) {
			mlockall(MCL_CURRENT | MCL_FUTURE);
			sched_yield();
			munlockall();
		} else if (!strcmp(kind, "excl")) {
			uhmm_simdev_exclusive(ddev, db + i * PG, n, NULL);
		} else if (!strcmp(kind, "tosys")) {
			uhmm_simdev_migrate_to_sys(ddev, db + i * PG, n, NULL);
		}
	}
	return NULL;
}
static void sc_discard(int round)
{
	int how = getenv("HUNT3_HOW") ? atoi(getenv("HUNT3_HOW")) : round % 4;
	static const char *hn[] = { "MADV_DONTNEED", "MAP_FIXED", "mremap out and back", "MREMAP_DONTUNMAP" };
	ddev = mkdev(1024, 1, 0);
	db = amap(dnp);
	char *scratch = amap(dnp);
	unsigned ver[64];
	for (size_t k = 0; k < dnp; k++) ver[k] = 1;
	fill(db, dnp, 1, 0);
	pthread_t th, th2;
	pthread_create(&th, NULL, d_mig, NULL);
	const char *racer = getenv("HUNT3_RACER");
	if (racer) pthread_create(&th2, NULL, d_racer, (void *)racer);
	char *b = malloc(dnp * PG);
	for (int it = 0; it < 3000; it++) {
		size_t i = rnd() % dnp, n = 1 + rnd() % (dnp - i < 16 ? dnp - i : 16);
		char *a = db + i * PG;
		size_t len = n * PG;
		bool zero = true, zero_or_old = false;
		if (getenv("HUNT3_TRACE")) fprintf(stderr, "it %d %s [%zu, +%zu)\n", it, hn[how], i, n);
		switch (how) {
		case 0:
			if (madvise(a, len, MADV_DONTNEED)) {
				/* mlocked: the kernel discarded the mappings before the locked one */
				if (errno != EINVAL) FAIL("dontneed %d", errno);
				zero_or_old = true;
			}
			break;
		case 1:
			if (mmap(a, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != a) FAIL("map_fixed %d", errno);
			break;
		case 2: case 3: {
			char *t = mremap(a, len, len, MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, scratch);
			if (t == MAP_FAILED) {
				if (errno != EFAULT && errno != EINVAL) FAIL("mremap %d", errno);
				continue;
			}
			for (size_t k = 0; k < n; k++)
				if (page_is(t + k * PG, ver[i + k], i + k) != 1)
					FAIL("it %d %s: moved page %zu (of [%zu, +%zu)) not version %u (%s)", it, hn[how], i + k, i, n, ver[i + k],
					     page_is(t + k * PG, ver[i + k], i + k) == 0 ? "zero" : "other data");
			if (how == 2) {
				if (mremap(t, len, len, MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, a) != a) FAIL("mremap back %d", errno);
				zero = false;
			}
			break; }
		}
		for (size_t k = i; k < i + n; k++) {
			int st = page_is(db + k * PG, ver[k], k);
			if (zero_or_old ? st < 0 : zero ? check_zero(db + k * PG, 1) >= 0 : st != 1)
				FAIL("it %d after %s: page %zu (of [%zu, +%zu)) %s", it, hn[how], k, i, n,
				     st == 1 ? "holds the old data" : st == 0 ? "is zero" : "holds other data");
		}
		for (size_t k = i; k < i + n; k++) {
			ver[k] = (unsigned)it + 2;
			fill(db + k * PG, 1, ver[k], k);
		}
		size_t j = rnd() % dnp, m = 1 + rnd() % (dnp - j);
		if (getenv("HUNT3_FULL")) { j = 0; m = dnp; }
		for (size_t k = j; k < j + m; k++)
			if (page_is(db + k * PG, ver[k], k) != 1)
				FAIL("it %d (last %s of [%zu, +%zu)): CPU check: page %zu (%p) not version %u (%s)", it, hn[how], i, n, k, (void *)(db + k * PG), ver[k],
				     page_is(db + k * PG, ver[k], k) == 0 ? "zero" : "other data");
		int r = uhmm_simdev_read(ddev, db + j * PG, m, b, NULL);
		if (r) FAIL("device read %d", r);
		for (size_t k = 0; k < m; k++)
			if (page_is(b + k * PG, ver[j + k], j + k) != 1) {
				uint8_t sn = 0;
				uhmm_simdev_snapshot(ddev, db + (j + k) * PG, 1, &sn, NULL);
				FAIL("it %d (last %s of [%zu, +%zu)): device read: page %zu not version %u (%s; snapshot %#x, CPU %s)", it, hn[how], i, n,
				     j + k, ver[j + k], page_is(b + k * PG, ver[j + k], j + k) == 0 ? "zero" : "other data", sn,
				     page_is(db + (j + k) * PG, ver[j + k], j + k) == 1 ? "right" : "wrong");
			}
	}
	atomic_store(&d_stop, 1);
	pthread_join(th, NULL);
	if (racer) pthread_join(th2, NULL);
	munlockall();
	long bad = -1;
	for (size_t k = 0; k < dnp && bad < 0; k++)
		if (page_is(db + k * PG, ver[k], k) != 1) bad = (long)k;
	if (bad >= 0) FAIL("end: page %ld not version %u", bad, ver[bad]);
	uhmm_simdev_destroy(ddev);
	fprintf(stderr, "round %d (%s): ok\n", round, hn[how]);
}

/* ================= 3: the application's own userfaultfd ====================================
 * round % 3: 0 the app registers its buffer (MISSING) with its own uffd and serves faults
 * with a pattern; uhmm is asked to migrate it and the device reads it: refused or done,
 * never a hang, every byte the app's.  1 uhmm migrated it first: the app's UFFDIO_REGISTER
 * must fail (EBUSY) and the CPU must get the data back.  2 the app registers the upper half
 * of a mapping whose lower half uhmm migrated. */
static int au_fd = -1; static atomic_int au_stop; static atomic_ulong au_faults;
static char *au_buf; static size_t au_np = 64;
static void *au_handler(void *a)
{
	(void)a;
	char *pg = aligned_alloc(PG, PG);
	while (!atomic_load(&au_stop)) {
		struct pollfd pf = { .fd = au_fd, .events = POLLIN };
		if (poll(&pf, 1, 10) <= 0) continue;
		struct uffd_msg msg;
		if (read(au_fd, &msg, sizeof msg) != sizeof msg) continue;
		if (msg.event != UFFD_EVENT_PAGEFAULT) continue;
		uintptr_t addr = msg.arg.pagefault.address & ~(PG - 1);
		size_t idx = (addr - (uintptr_t)au_buf) / PG;
		fill(pg, 1, 77, idx);
		struct uffdio_copy c = { .dst = addr, .src = (uintptr_t)pg, .len = PG };
		if (ioctl(au_fd, UFFDIO_COPY, &c) && errno != EEXIST) {
			struct uffdio_range r = { .start = addr, .len = PG };
			ioctl(au_fd, UFFDIO_WAKE, &r);
		}
		atomic_fetch_add(&au_faults, 1);
	}
	return NULL;
}
static int au_register(char *p, size_t np)
{
	struct uffdio_register r = { .range = { (uintptr_t)p, np * PG }, .mode = UFFDIO_REGISTER_MODE_MISSING };
	return ioctl(au_fd, UFFDIO_REGISTER, &r) ? -errno : 0;
}
static void sc_ownuffd(int round)
{
	int kind = round % 3;
	au_fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (au_fd < 0) au_fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | 1 /* UFFD_USER_MODE_ONLY */);
	if (au_fd < 0) FAIL("userfaultfd %d", errno);
	struct uffdio_api api = { .api = UFFD_API };
	if (ioctl(au_fd, UFFDIO_API, &api)) FAIL("api %d", errno);
	struct uhmm_simdev *d = mkdev(1024, 1, round & 4 ? UHMM_SIMDEV_POLICY_MIGRATE : 0);
	au_buf = amap(au_np);
	pthread_t th;
	pthread_create(&th, NULL, au_handler, NULL);
	char *b = malloc(au_np * PG);
	long bad;
	int r, r2, r3;
	switch (kind) {
	case 0:
		fill(au_buf, au_np / 2, 5, 0);	/* upper half never touched: the app's handler fills it */
		if ((r = au_register(au_buf, au_np))) FAIL("app register %d", r);
		r = uhmm_simdev_migrate_to_dev(d, au_buf, au_np, NULL);
		r2 = uhmm_simdev_read(d, au_buf, au_np, b, NULL);
		r3 = uhmm_simdev_migrate_to_sys(d, au_buf, au_np, NULL);
		fprintf(stderr, "round %d: app-registered buffer: to_dev %d (%s), device read %d, to_sys %d, app faults %lu\n",
			round, r, r ? uhmm_last_error() : "", r2, r3, (unsigned long)atomic_load(&au_faults));
		if (r2 == 0) {
			if ((bad = check(b, au_np / 2, 5, 0)) >= 0) FAIL("device read: lower page %ld", bad);
			if ((bad = check(b + au_np / 2 * PG, au_np / 2, 77, au_np / 2)) >= 0) FAIL("device read: upper page %ld", bad);
		}
		if ((bad = check(au_buf, au_np / 2, 5, 0)) >= 0) FAIL("CPU: lower page %ld", bad);
		if ((bad = check(au_buf + au_np / 2 * PG, au_np / 2, 77, au_np / 2)) >= 0) FAIL("CPU: upper page %ld", bad);
		break;
	case 1:
		fill(au_buf, au_np, 6, 0);
		if ((r = uhmm_simdev_migrate_to_dev(d, au_buf, au_np, NULL))) FAIL("to_dev %d", r);
		r = au_register(au_buf, au_np);
		fprintf(stderr, "round %d: app register over migrated memory: %d\n", round, r);
		if (r == 0) FAIL("the app's UFFDIO_REGISTER over uhmm's migrated range succeeded");
		if ((bad = check(au_buf, au_np, 6, 0)) >= 0) FAIL("CPU: page %ld", bad);
		break;
	case 2:
		fill(au_buf, au_np / 2, 7, 0);
		if ((r = uhmm_simdev_migrate_to_dev(d, au_buf, au_np / 2, NULL))) FAIL("to_dev %d", r);
		r = au_register(au_buf + au_np / 2 * PG, au_np / 2);
		r2 = uhmm_simdev_migrate_to_dev(d, au_buf, au_np, NULL);
		r3 = uhmm_simdev_read(d, au_buf, au_np, b, NULL);
		fprintf(stderr, "round %d: app registers the upper half: %d; whole to_dev %d, device read %d, app faults %lu\n",
			round, r, r2, r3, (unsigned long)atomic_load(&au_faults));
		if ((bad = check(au_buf, au_np / 2, 7, 0)) >= 0) FAIL("CPU: lower page %ld", bad);
		if (r == 0 && (bad = check(au_buf + au_np / 2 * PG, au_np / 2, 77, au_np / 2)) >= 0) FAIL("CPU: upper page %ld", bad);
		if (r3 == 0 && (bad = check(b, au_np / 2, 7, 0)) >= 0) FAIL("device: lower page %ld", bad);
		break;
	}
	munmap(au_buf, au_np * PG);
	uhmm_simdev_destroy(d);
	atomic_store(&au_stop, 1);
	pthread_join(th, NULL);
}

/* ================= 4: GiB of sparse address space ===========================================
 * 16 GiB reserved (NORESERVE), 64 pages written at random places; migrations of 64 MiB
 * windows (most pages empty), a snapshot of the whole, CPU checks, munmap of the whole. */
static void sc_sparse(int round)
{
	size_t np = (size_t)16 << 18;	/* 16 GiB in pages */
	char *p = mmap(NULL, np * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED) FAIL("mmap 16 GiB %d", errno);
	struct uhmm_simdev *d = mkdev(65536, 2, 0);
	size_t at[64];
	for (int k = 0; k < 64; k++) { at[k] = rnd() % np; fill(p + at[k] * PG, 1, 40 + k, at[k]); }
	time_t t0 = time(NULL);
	for (int k = 0; k < 8; k++) {
		size_t w = (size_t)16384;	/* 64 MiB */
		size_t c = at[rnd() % 64];
		size_t s = c > w / 2 ? c - w / 2 : 0;
		if (s + w > np) s = np - w;
		struct uhmm_simdev_stats st = {0};
		int r = uhmm_simdev_migrate_to_dev(d, p + s * PG, w, &st);
		if (r && r != -ENOMEM) FAIL("to_dev %d %s", r, uhmm_last_error());
		if (round & 1) uhmm_simdev_migrate_to_sys(d, p + s * PG, w, NULL);
	}
	uint8_t *snap = malloc(np / 64);
	int r = uhmm_simdev_snapshot(d, p, np / 64, snap, NULL);	/* first 256 MiB */
	if (r) FAIL("snapshot %d", r);
	for (int k = 0; k < 64; k++)
		for (int j = 0; j < 64; j++)
			if (j != k && at[j] == at[k]) goto skip;
	for (int k = 0; k < 64; k++)
		if (page_is(p + at[k] * PG, 40 + (unsigned)k, at[k]) != 1) FAIL("page at %zu lost", at[k]);
skip:
	fprintf(stderr, "round %d: %ld s, device used %zu pages\n", round, (long)(time(NULL) - t0), uhmm_simdev_used_pages(d));
	if (munmap(p, np * PG)) FAIL("munmap %d", errno);
	uhmm_simdev_destroy(d);
}

/* ================= 5: clone(CLONE_VM) children fault on device memory; one is killed in it === */
static char *cv_buf; static size_t cv_np = 64; static atomic_int cv_go;
static int cv_child(void *a)
{
	int id = (int)(uintptr_t)a;
	for (int k = 0; k < 200; k++) {
		for (size_t i = 0; i < cv_np; i++)
			if (page_is(cv_buf + i * PG, 9, i) != 1) return 10 + id;
		atomic_fetch_add(&cv_go, 1);
	}
	return 0;
}
static void sc_clonevm(int round)
{
	struct uhmm_simdev *d = mkdev(1024, 1, 0);
	cv_buf = amap(cv_np);
	fill(cv_buf, cv_np, 9, 0);
	pid_t c[4];
	char *stk[4];
	for (int k = 0; k < 4; k++) {
		stk[k] = amap(64);
		c[k] = clone(cv_child, stk[k] + 64 * PG, CLONE_VM | SIGCHLD, (void *)(uintptr_t)k);
		if (c[k] < 0) FAIL("clone %d", errno);
	}
	int kill_one = round & 1;
	for (int it = 0; it < 200; it++) {
		uhmm_simdev_migrate_to_dev(d, cv_buf, cv_np, NULL);
		if (kill_one && it == 50) kill(c[0], SIGKILL);
	}
	for (int k = 0; k < 4; k++) {
		int st;
		if (waitpid(c[k], &st, __WALL) != c[k]) FAIL("waitpid %d", errno);
		if (k == 0 && kill_one && WIFSIGNALED(st)) continue;
		if (!WIFEXITED(st) || WEXITSTATUS(st)) FAIL("clone child %d status %x", k, st);
	}
	long bad;
	if ((bad = check(cv_buf, cv_np, 9, 0)) >= 0) FAIL("page %ld lost", bad);
	uhmm_simdev_destroy(d);
}

/* ================= 6: execve (or exit_group) from one thread while others migrate and fault ==== */
static void *ex_mig(void *a)
{
	struct uhmm_simdev *d = a;
	for (;;) { uhmm_simdev_migrate_to_dev(d, cv_buf, cv_np, NULL); uhmm_simdev_migrate_to_sys(d, cv_buf, cv_np / 2, NULL); }
	return NULL;
}
static void *ex_fault(void *a)
{
	(void)a;
	for (;;) if (check(cv_buf, cv_np, 9, 0) >= 0) { fprintf(stderr, "fault thread: bad data\n"); _exit(3); }
	return NULL;
}
static void sc_exec(int round)
{
	pid_t c = fork();
	if (c == 0) {
		struct uhmm_simdev *d = mkdev(1024, 2, 0);
		cv_buf = amap(cv_np);
		fill(cv_buf, cv_np, 9, 0);
		pthread_t t1, t2, t3;
		pthread_create(&t1, NULL, ex_mig, d);
		pthread_create(&t2, NULL, ex_fault, NULL);
		pthread_create(&t3, NULL, ex_mig, d);
		for (volatile unsigned i = 0; i < 100000u * (1 + rnd() % 20); i++) {}
		if (round & 1) { char *argv[] = { "/bin/true", NULL }; execv("/bin/true", argv); _exit(5); }
		exit(0);	/* exit_group with migrations and faults in flight */
	}
	int st;
	if (waitpid(c, &st, 0) != c) FAIL("waitpid");
	if (!WIFEXITED(st) || WEXITSTATUS(st)) FAIL("%s child status %x", round & 1 ? "execve" : "exit", st);
}

static void segv(int sig, siginfo_t *si, void *uc)
{
	char b[200];
	int n;

	(void)uc;
	hunt_signal_report(sig, si);
	if (tb) { n = snprintf(b, sizeof b, "tb %p..%p\n", (void *)tb, (void *)(tb + tnp * PG)); if (write(2, b, (size_t)n)) {} }
	_exit(128 + sig);
}

static const struct hunt_scenario scs[] = {
	{"torture", sc_torture}, {"discard", sc_discard}, {"ownuffd", sc_ownuffd},
	{"sparse", sc_sparse}, {"clonevm", sc_clonevm}, {"exec", sc_exec},
};

int main(int argc, char **argv)
{
	return hunt_main(argc, argv, "HUNT3", scs, sizeof(scs) / sizeof(scs[0]), &seed, &g_round,
			 segv);
}
