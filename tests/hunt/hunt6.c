// SPDX-License-Identifier: MIT
/*
 * Adversarial programs against the public API, round 6 (tests/hunt/FINDINGS.md):
 * device memory exhaustion, failure injection, SIGBUS accounting.
 * Not registered in CTest.  Usage: hunt6 SCENARIO ROUNDS [TIMEOUT_S]
 * Each round runs in a forked child with alarm(); the parent (round.h)
 * reports hangs with every thread's gdb stacks, and failed rounds.
 * HUNT6_FIRST=k HUNT6_STEP=s rerun one round kind.  ROUNDS 0 runs one
 * round in this process (for a debugger).  HUNT6_SECS: seconds of racing
 * per round (default 3).  The device pools are tdev (testdev/tdev.c,
 * public API only, linked in) and simdev.
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

#define PG 4096UL

static unsigned seed;
static int g_round;

#define FAIL(...) do { fprintf(stderr, "FAIL round %d %s:%d: ", g_round, __func__, __LINE__); fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); _exit(1); } while (0)

#include "pages.h"

static double secs(void) { return hunt_envi("HUNT6_SECS", 3); }

static void nap_us(long us)
{
	struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };
	nanosleep(&ts, NULL);
}

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

/* ---- SIGBUS accounting: a thread's access may be wrapped in a jump point ---- */
static __thread sigjmp_buf *volatile tl_env;	/* volatile: set around the access, never elided */
static __thread volatile int tl_bus;	/* SIGBUS since the attempt began */

static void h6_sig(int sig, siginfo_t *si, void *uc)
{
	if (sig == SIGBUS && tl_env) {
		tl_bus++;
		siglongjmp(*tl_env, 1);
	}
	hunt_segv(sig, si, uc);
}

/* What a page reads as, for a report. */
static const char *what(const char *p, unsigned ver, size_t pg)
{
	int k = page_is(p, ver, pg);
	if (k == 1) return "right";
	if (k == 0) return "zero";
	for (unsigned v = ver > 3 ? ver - 3 : 0; v < ver + 3; v++)
		if (v != ver && page_is(p, v, pg) == 1) return v < ver ? "an older version" : "a newer version";
	return "other data";
}

/* ================= 1, 2: exhaust / inject: small pools, big data ==========================
 * A buffer of ex_np pages (8-32 MiB) on a tdev pool of 128-512 pages and a
 * simdev of 64-256 pages.  Pages are owned: p % 4 == 0, 1: CPU thread 0, 1
 * (check the page against its version, write the next version over it);
 * 2: the device writer (a simdev launch checks and rewrites a run of them;
 * with injection, CPU thread (p / 4) % 2 owns them instead and the device
 * only reads); 3: nobody writes (version 1).  Two migrators move random
 * overlapping ranges to tdev / simdev and back (partial, -ENOMEM, pages
 * left in place), the evictor evicts runs of tdev pfns
 * (uhmm_migrate_device_range), releases simdev and removes and re-adds the
 * tdev pool (remove: 0 with every page home, or an error with the pages
 * intact).  Every step (~0.25 s) everything pauses and every byte is
 * checked against the versions.  inject: an injector thread arms random
 * points (malloc, COPY/MOVE/ZEROPAGE with ENOMEM/EAGAIN/EFAULT) for a few
 * ms at a time; CPU accesses take SIGBUS with a jump back, wait for the
 * injection to be cleared and retry: SIGBUS only while EFAULT or malloc was
 * armed, one per access. */
#define EX_MAXNP 8192
#define EX_NTHR 6		/* cpu0, cpu1, devw, mig0, mig1, evict (+ injector) */
static char *ex_b; static size_t ex_np;
static struct uhmm_mm *ex_mm;
static struct tdev *ex_td;
static struct uhmm_simdev *ex_sd;
static pthread_rwlock_t ex_pool;
static atomic_bool ex_added;
static _Atomic uint64_t ex_base;		/* tdev pfn of page 0 while added */
static _Atomic unsigned ex_ver[EX_MAXNP];
static atomic_int ex_bad, ex_stop, ex_pause, ex_paused;
static int ex_nthr;
static bool ex_inject, ex_evict_locked;
static atomic_int ex_inj_on;			/* an injection is armed */
static atomic_uint ex_inj_gen;			/* bumped at every clear */
static atomic_int ex_step_busok;		/* EFAULT / malloc armed in this step */
enum { C_CPUW, C_CPUR, C_BUS, C_LAUNCH, C_LAUNCHERR, C_TODEV, C_TODEVPG, C_TOSYS, C_SDDEV,
       C_SDSYS, C_EVICT, C_EVICTPG, C_RELEASE, C_RM0, C_RMERR, C_READD, C_MIGERR, C_INJ,
       C_DUPBUS, C_NCNT };
static atomic_ulong ex_cnt[C_NCNT];
static atomic_int ex_lasterr[4];

static void ex_report(const char *who, size_t p, const char *got, unsigned ver)
{
	if (atomic_fetch_add(&ex_bad, 1) < 8)
		fprintf(stderr, "round %d: %s: page %zu (owner %zu) reads %s, want version %u\n", g_round,
			who, p, p % 4, got, ver);
}

static void ex_checkpoint(void)
{
	if (!atomic_load(&ex_pause)) return;
	atomic_fetch_add(&ex_paused, 1);
	while (atomic_load(&ex_pause)) nap_us(500);
	atomic_fetch_sub(&ex_paused, 1);
}

static bool ex_owner_cpu(size_t p, unsigned c)
{
	if (p % 4 == c) return true;
	return ex_inject && p % 4 == 2 && (p / 4) % 2 == c;
}

/*
 * One CPU access to page @p: check (write == 0) or fill with @v.  A
 * SIGBUS jumps back here; the thread waits until the injection it came
 * from is cleared and tries again.  Checks one SIGBUS per attempt.
 */
static void ex_cpu_access(size_t p, bool write, unsigned v)
{
	sigjmp_buf env;
	volatile unsigned gen0 = 0;
	volatile int on0 = 0;

	if (sigsetjmp(env, 1)) {
		int n = tl_bus;
		atomic_fetch_add(&ex_cnt[C_BUS], 1);
		if (!ex_inject)
			FAIL("SIGBUS on page %zu (%s) with nothing injected", p, write ? "write" : "read");
		if (!atomic_load(&ex_step_busok))
			FAIL("SIGBUS on page %zu (%s) with only ENOMEM/EAGAIN injected this step", p,
			     write ? "write" : "read");
		if (!on0 && atomic_load(&ex_inj_gen) == gen0 && !atomic_load(&ex_inj_on))
			FAIL("SIGBUS on page %zu with no injection armed during the attempt (%d this attempt)",
			     p, n);
		if (n > 1) {
			atomic_fetch_add(&ex_cnt[C_DUPBUS], 1);
			FAIL("%d SIGBUS for one access to page %zu", n, p);
		}
		/*
		 * Wait for the clear, then retry (a late duplicate lands here
		 * with n == 2).  The injector clears before it parks for a step
		 * check, and the check waits for this thread: never park here.
		 */
		unsigned g = atomic_load(&ex_inj_gen);
		while (atomic_load(&ex_inj_gen) == g && atomic_load(&ex_inj_on)) nap_us(200);
	}
	gen0 = atomic_load(&ex_inj_gen);
	on0 = atomic_load(&ex_inj_on);
	tl_bus = 0;
	tl_env = &env;
	char *q = ex_b + p * PG;
	if (write) {
		fill(q, 1, v, p);
	} else {
		int k = page_is(q, v, p);
		if (k != 1) { tl_env = NULL; ex_report("CPU check", p, what(q, v, p), v); }
	}
	tl_env = NULL;
}

static void *ex_cputhr(void *a)
{
	unsigned c = (unsigned)(intptr_t)a;
	unsigned s = seed ^ (0x1234u * (c + 1));
	while (!atomic_load(&ex_stop)) {
		ex_checkpoint();
		size_t p = rnd_r(&s) % ex_np;
		if (rnd_r(&s) % 4 == 0) {		/* read someone's stable page */
			p = (p & ~(size_t)3) | 3;
			if (p >= ex_np) continue;
			ex_cpu_access(p, false, 1);
			atomic_fetch_add(&ex_cnt[C_CPUR], 1);
			continue;
		}
		p = (p & ~(size_t)3) | c;
		if (ex_inject && rnd_r(&s) % 2) p = ((p / 8) * 8 + 2 + 4 * c);
		if (p >= ex_np || !ex_owner_cpu(p, c)) continue;
		unsigned v = atomic_load(&ex_ver[p]);
		ex_cpu_access(p, false, v);
		ex_cpu_access(p, true, v + 1);
		atomic_store(&ex_ver[p], v + 1);
		ex_cpu_access(p, false, v + 1);
		atomic_fetch_add(&ex_cnt[C_CPUW], 1);
	}
	return NULL;
}

struct exk { size_t p0; size_t n; bool write; atomic_int bad; };

static void ex_kernel(struct uhmm_simdev_thread *t, size_t item, void *arg)
{
	struct exk *k = arg;
	size_t p = k->p0 + 4 * item;
	uint64_t *q = (uint64_t *)(void *)(ex_b + p * PG);
	unsigned v = atomic_load(&ex_ver[p]);
	for (size_t w = 0; w < PG / 8; w++)
		if (uhmm_simdev_load64(t, &q[w]) != word(v, p, w)) {
			if (atomic_fetch_add(&k->bad, 1) == 0 && !ex_inject)
				fprintf(stderr, "round %d: device read: page %zu word %zu: %#llx, want version %u\n",
					g_round, p, w, (unsigned long long)uhmm_simdev_load64(t, &q[w]), v);
			return;
		}
	if (!k->write) return;
	for (size_t w = 0; w < PG / 8; w++)
		uhmm_simdev_store64(t, &q[w], word(v + 1, p, w));
}

static void *ex_devthr(void *a)
{
	(void)a;
	unsigned s = seed ^ 0x5151u;
	while (!atomic_load(&ex_stop)) {
		ex_checkpoint();
		struct exk k = { .write = !ex_inject };
		size_t nown = ex_np / 4;
		k.n = 1 + rnd_r(&s) % 96;
		size_t i0 = rnd_r(&s) % nown;
		if (i0 + k.n > nown) k.n = nown - i0;
		/* writes: owner-2 pages; reads with injection: the stable owner-3 pages */
		k.p0 = 4 * i0 + (ex_inject ? 3 : 2);
		if (k.p0 + 4 * (k.n - 1) >= ex_np) continue;
		int r = uhmm_simdev_launch(ex_sd, k.n, ex_kernel, &k, NULL);
		atomic_fetch_add(&ex_cnt[C_LAUNCH], 1);
		if (r) {
			atomic_fetch_add(&ex_cnt[C_LAUNCHERR], 1);
			if (!ex_inject)
				FAIL("launch of %zu items at page %zu: %d %s", k.n, k.p0, r, uhmm_last_error());
			continue;
		}
		if (atomic_load(&k.bad)) {
			atomic_fetch_add(&ex_bad, 1);
			FAIL("device launch (ok) read %d wrong pages from page %zu", atomic_load(&k.bad), k.p0);
		}
		if (k.write)
			for (size_t i = 0; i < k.n; i++) atomic_fetch_add(&ex_ver[k.p0 + 4 * i], 1);
	}
	return NULL;
}

static void ex_migerr(int r, const char *what)
{
	atomic_fetch_add(&ex_cnt[C_MIGERR], 1);
	bool ok = ex_inject ? (r == -ENOMEM || r == -EAGAIN || r == -EFAULT || r == -EBUSY || r == -ENOENT ||
			       r == -EIO)
			    : (r == -ENOMEM || r == -ENOENT);
	if (!ok) FAIL("%s: %d %s", what, r, uhmm_last_error());
}

static void *ex_migthr(void *a)
{
	unsigned s = seed ^ (0x7777u * (unsigned)((intptr_t)a + 1));
	struct uhmm_simdev_stats st;
	while (!atomic_load(&ex_stop)) {
		ex_checkpoint();
		size_t p = rnd_r(&s) % ex_np;
		size_t n = 1 + rnd_r(&s) % (rnd_r(&s) % 4 ? 64 : 1024);
		if (p + n > ex_np) n = ex_np - p;
		uintptr_t st0 = (uintptr_t)(ex_b + p * PG), en = st0 + n * PG;
		long r;
		switch (rnd_r(&s) % 5) {
		case 0: case 1:
			pthread_rwlock_rdlock(&ex_pool);
			if (atomic_load(&ex_added)) {
				r = tdev_to_dev(ex_td, st0, en, NULL);
				atomic_fetch_add(&ex_cnt[C_TODEV], 1);
				if (r < 0) ex_migerr((int)r, "tdev to dev");
				else atomic_fetch_add(&ex_cnt[C_TODEVPG], (unsigned long)r);
			}
			pthread_rwlock_unlock(&ex_pool);
			break;
		case 2:
			r = tdev_to_sys(ex_td, st0, en, NULL);
			atomic_fetch_add(&ex_cnt[C_TOSYS], 1);
			if (r < 0) ex_migerr((int)r, "tdev to sys");
			break;
		case 3:
			r = uhmm_simdev_migrate_to_dev(ex_sd, (void *)st0, n, &st);
			atomic_fetch_add(&ex_cnt[C_SDDEV], 1);
			if (r) ex_migerr((int)r, "simdev to dev");
			break;
		case 4:
			r = uhmm_simdev_migrate_to_sys(ex_sd, (void *)st0, n, &st);
			atomic_fetch_add(&ex_cnt[C_SDSYS], 1);
			if (r) ex_migerr((int)r, "simdev to sys");
			break;
		}
	}
	return NULL;
}

/*
 * The rest of a device-range migration whose collection filled @src: copy
 * each collected page of @td into @buf, then pages and finalize.  Returns
 * how many pages were copied.
 */
static size_t evict_copy(struct uhmm_mm *mm, struct tdev *td, uint64_t *src, uint64_t *dst,
			 size_t n, char *buf)
{
	size_t copied = 0;

	for (size_t i = 0; i < n; i++) {
		dst[i] = 0;
		if (!(src[i] & UHMM_MIGRATE_PFN_MIGRATE)) continue;
		struct uhmm_page *pg = uhmm_pfn_to_page(mm, uhmm_migrate_pfn_to_pfn(src[i]));
		if (!pg) FAIL("collected pfn %#llx names no page", (unsigned long long)uhmm_migrate_pfn_to_pfn(src[i]));
		memcpy(buf + i * PG, tdev_page_mem(td, pg), PG);
		dst[i] = uhmm_migrate_pfn((uintptr_t)(buf + i * PG) / PG);
		copied++;
	}
	uhmm_migrate_device_pages(mm, src, dst, n);
	uhmm_migrate_device_finalize(mm, src, dst, n);
	return copied;
}

/* Evict n tdev pages from index idx with a device-range migration. */
static void ex_evict(size_t idx, size_t n, char *buf)
{
	uint64_t src[64], dst[64];
	uint64_t base = atomic_load(&ex_base);
	int r = uhmm_migrate_device_range(ex_mm, src, base + idx, n);
	atomic_fetch_add(&ex_cnt[C_EVICT], 1);
	if (r) {
		/* unlocked: the pool may be gone (-EINVAL) */
		if (!(r == -EINVAL && !ex_evict_locked) && !(ex_inject && (r == -ENOMEM || r == -EFAULT)))
			FAIL("device range %zu+%zu: %d %s", idx, n, r, uhmm_last_error());
		return;
	}
	atomic_fetch_add(&ex_cnt[C_EVICTPG], evict_copy(ex_mm, ex_td, src, dst, n, buf));
}

static void ex_readd(void)
{
	int r, tries = 0;

	/* With injection the add's own allocation may fail: -ENOMEM, nothing added; again. */
	while ((r = uhmm_devmem_add(ex_mm, &ex_td->pgmap)) == -ENOMEM && ex_inject && tries++ < 1000)
		nap_us(200);
	if (r) FAIL("re-add: %d %s", r, uhmm_last_error());
	atomic_store(&ex_base, uhmm_page_to_pfn(uhmm_devmem_page(&ex_td->pgmap, 0)));
	atomic_store(&ex_added, true);
	atomic_fetch_add(&ex_cnt[C_READD], 1);
}

static void *ex_evthr(void *a)
{
	(void)a;
	unsigned s = seed ^ 0x3131u;
	char *buf = mmap(NULL, 64 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED) FAIL("mmap");
	while (!atomic_load(&ex_stop)) {
		ex_checkpoint();
		unsigned k = rnd_r(&s) % 10;
		if (k < 5) {
			size_t n = 1 + rnd_r(&s) % 64, idx = rnd_r(&s) % ex_td->nr_pages;
			if (idx + n > ex_td->nr_pages) n = ex_td->nr_pages - idx;
			if (ex_evict_locked) {
				pthread_rwlock_rdlock(&ex_pool);
				if (atomic_load(&ex_added)) ex_evict(idx, n, buf);
				pthread_rwlock_unlock(&ex_pool);
			} else if (atomic_load(&ex_added)) {
				ex_evict(idx, n, buf);
			}
		} else if (k < 7) {
			int r = uhmm_simdev_release(ex_sd);
			atomic_fetch_add(&ex_cnt[C_RELEASE], 1);
			if (r && !(ex_inject && (r == -ENOMEM || r == -EFAULT || r == -EBUSY || r == -EAGAIN)))
				FAIL("simdev release: %d %s", r, uhmm_last_error());
		} else {
			pthread_rwlock_wrlock(&ex_pool);
			if (!atomic_load(&ex_added)) {
				ex_readd();
			} else {
				int r = uhmm_devmem_remove(&ex_td->pgmap);
				if (r == 0) {
					atomic_store(&ex_added, false);
					atomic_fetch_add(&ex_cnt[C_RM0], 1);
					size_t u = tdev_used(ex_td);
					if (u) FAIL("remove returned 0 with %zu tdev pages still allocated", u);
					if (rnd_r(&s) % 2) ex_readd();
				} else {
					atomic_fetch_add(&ex_cnt[C_RMERR], 1);
					atomic_store(&ex_lasterr[0], r);
					if (!(r == -EBUSY || (ex_inject && (r == -ENOMEM || r == -EFAULT || r == -EAGAIN))))
						FAIL("remove: %d %s", r, uhmm_last_error());
				}
			}
			pthread_rwlock_unlock(&ex_pool);
		}
		nap_us(rnd_r(&s) % 3000);
	}
	munmap(buf, 64 * PG);
	return NULL;
}

static void *ex_injthr(void *a)
{
	(void)a;
	unsigned s = seed ^ 0x9191u;
	static const unsigned pts[] = { UHMM_INJECT_MALLOC, UHMM_INJECT_UFFD_COPY, UHMM_INJECT_UFFD_MOVE,
					UHMM_INJECT_UFFD_ZEROPAGE };
	static const int errs[] = { ENOMEM, EAGAIN, EFAULT };
	while (!atomic_load(&ex_stop)) {
		ex_checkpoint();
		unsigned pt = pts[rnd_r(&s) % 4];
		int err = pt == UHMM_INJECT_MALLOC ? ENOMEM : errs[rnd_r(&s) % 3];
		if (err == EFAULT || pt == UHMM_INJECT_MALLOC) atomic_store(&ex_step_busok, 1);
		atomic_store(&ex_inj_on, 1);
		if (uhmm_inject_set(pt, rnd_r(&s) % 200, 1 + rnd_r(&s) % 8, err)) FAIL("inject set");
		atomic_fetch_add(&ex_cnt[C_INJ], 1);
		nap_us(500 + rnd_r(&s) % 4000);
		uhmm_inject_clear();
		atomic_store(&ex_inj_on, 0);
		atomic_fetch_add(&ex_inj_gen, 1);
		nap_us(500 + rnd_r(&s) % 3000);
	}
	return NULL;
}

static void ex_check_all(const char *when)
{
	/* through simdev first (a range fault brings tdev pages home), then the CPU */
	size_t n = 64, p0 = rnd() % ex_np;
	if (p0 + n > ex_np) n = ex_np - p0;
	char *out = malloc(n * PG);
	int r = uhmm_simdev_read(ex_sd, ex_b + p0 * PG, n, out, NULL);
	if (r) FAIL("%s: simdev read: %d %s", when, r, uhmm_last_error());
	for (size_t i = 0; i < n; i++) {
		unsigned v = atomic_load(&ex_ver[p0 + i]);
		if (page_is(out + i * PG, v, p0 + i) != 1)
			ex_report("simdev_read check", p0 + i, what(out + i * PG, v, p0 + i), v);
	}
	free(out);
	for (size_t p = 0; p < ex_np; p++) {
		unsigned v = atomic_load(&ex_ver[p]);
		if (page_is(ex_b + p * PG, v, p) != 1) {
			uint32_t ps = 0;
			uhmm_page_state(ex_mm, (uintptr_t)(ex_b + p * PG), 1, &ps);
			ex_report(when, p, what(ex_b + p * PG, v, p), v);
			fprintf(stderr, "  page state %#x\n", ps);
		}
	}
	if (atomic_load(&ex_bad)) FAIL("%s: %d bad pages", when, atomic_load(&ex_bad));
}

static void sc_exhaust_common(int round, bool inject)
{
	ex_inject = inject;
	ex_np = (size_t)hunt_envi("HUNT6_NP", (int[]){ 2048, 4096, 8192 }[round % 3]);
	size_t tcap = (size_t)hunt_envi("HUNT6_TCAP", (int[]){ 128, 256, 512 }[(round / 3) % 3]);
	size_t scap = (size_t)hunt_envi("HUNT6_SCAP", round % 2 ? 64 : 256);
	size_t fa = (size_t[]){ 0, 1, 16, 64 }[(round / 2) % 4];
	ex_evict_locked = hunt_envi("HUNT6_EVLOCK", round % 4 < 2);
	unsigned spol = round % 3 == 2 ? UHMM_SIMDEV_POLICY_MIRROR : UHMM_SIMDEV_POLICY_MIGRATE;
	bool evict_full = round % 5 < 3;
	pthread_rwlockattr_t ra;
	pthread_rwlockattr_init(&ra);
	pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&ex_pool, &ra);
	/* HUNT6_COMPOUND (default: rounds 6, 13, ...): 2 MiB device pages, few of them */
	bool comp = hunt_envi("HUNT6_COMPOUND", round % 7 == 6);
	if (comp) { tcap = 1024; fa = 0; }
	ex_mm = getmm();
	int r = tdev_open(ex_mm, tcap, fa, NULL, comp ? TDEV_COMPOUND : 0, &ex_td);
	if (r) FAIL("tdev open %d", r);
	atomic_store(&ex_base, uhmm_page_to_pfn(uhmm_devmem_page(&ex_td->pgmap, 0)));
	atomic_store(&ex_added, true);
	struct uhmm_simdev_config c = { .capacity_pages = scap, .threads = 2, .policy = spol,
					.evict_when_full = evict_full, .huge_pages = comp ? 2 : 0 };
	r = uhmm_simdev_create(&c, &ex_sd);
	if (r) FAIL("simdev create %d", r);
	ex_b = amap_aligned(ex_np);
	for (size_t p = 0; p < ex_np; p++) {
		fill(ex_b + p * PG, 1, 1, p);
		atomic_store(&ex_ver[p], 1);
	}
	printf("round %d: %s np %zu tdev %zu%s (fault_around %zu) simdev %zu %s%s evict %s\n", round,
	       inject ? "inject" : "exhaust", ex_np, tcap, comp ? " compound" : "", fa, scap,
	       spol == UHMM_SIMDEV_POLICY_MIGRATE ? "migrate" : "mirror", evict_full ? "+evict" : "",
	       ex_evict_locked ? "locked" : "unlocked");
	pthread_t t[8];
	ex_nthr = 0;
	pthread_create(&t[ex_nthr++], NULL, ex_cputhr, (void *)0);
	pthread_create(&t[ex_nthr++], NULL, ex_cputhr, (void *)1);
	pthread_create(&t[ex_nthr++], NULL, ex_devthr, NULL);
	pthread_create(&t[ex_nthr++], NULL, ex_migthr, (void *)0);
	pthread_create(&t[ex_nthr++], NULL, ex_migthr, (void *)1);
	pthread_create(&t[ex_nthr++], NULL, ex_evthr, NULL);
	if (inject) pthread_create(&t[ex_nthr++], NULL, ex_injthr, NULL);
	double t0 = hunt_now();
	int steps = 0;
	while (hunt_now() - t0 < secs()) {
		nap_us(250000);
		atomic_store(&ex_pause, 1);
		while (atomic_load(&ex_paused) < ex_nthr) nap_us(1000);
		uhmm_inject_clear();
		atomic_store(&ex_inj_on, 0);
		atomic_fetch_add(&ex_inj_gen, 1);
		ex_check_all("step check");
		atomic_store(&ex_step_busok, 0);
		steps++;
		atomic_store(&ex_pause, 0);
	}
	atomic_store(&ex_stop, 1);
	for (int i = 0; i < ex_nthr; i++) pthread_join(t[i], NULL);
	uhmm_inject_clear();
	ex_check_all("final check");
	uhmm_simdev_destroy(ex_sd);
	if (atomic_load(&ex_added)) {
		r = tdev_close(ex_td);
		if (r) FAIL("tdev close at the end: %d %s", r, uhmm_last_error());
	} else {
		tdev_free(ex_td);
	}
	for (size_t p = 0; p < ex_np; p++)
		if (page_is(ex_b + p * PG, ex_ver[p], p) != 1) FAIL("after teardown: page %zu", p);
	printf("round %d: ok: %d steps; cpu w %lu r %lu sigbus %lu; launches %lu (err %lu); tdev todev %lu "
	       "(%lu pages) tosys %lu; simdev todev %lu tosys %lu; migration errors %lu; evictions %lu "
	       "(%lu pages); releases %lu; remove ok %lu err %lu (last %d) readd %lu; injections %lu\n",
	       round, steps, ex_cnt[C_CPUW], ex_cnt[C_CPUR], ex_cnt[C_BUS], ex_cnt[C_LAUNCH],
	       ex_cnt[C_LAUNCHERR], ex_cnt[C_TODEV], ex_cnt[C_TODEVPG], ex_cnt[C_TOSYS], ex_cnt[C_SDDEV],
	       ex_cnt[C_SDSYS], ex_cnt[C_MIGERR], ex_cnt[C_EVICT], ex_cnt[C_EVICTPG], ex_cnt[C_RELEASE],
	       ex_cnt[C_RM0], ex_cnt[C_RMERR], atomic_load(&ex_lasterr[0]), ex_cnt[C_READD],
	       ex_cnt[C_INJ]);
}

static void sc_exhaust(int round) { sc_exhaust_common(round, false); }
static void sc_inject(int round) { sc_exhaust_common(round, true); }

/* ================= 3: sigbus: one SIGBUS per failed access, several threads ===============
 * sb_np pages on tdev; every CPU fault-back fails (UFFDIO_COPY and
 * UFFDIO_MOVE EFAULT, armed for every call).  2-8 threads each make one
 * access (read or write) to a page: all the same page, each its own, or
 * random; each must get exactly one SIGBUS, then (after the injection is
 * cleared) its retry must succeed with no signal and the right data.  In
 * odd rounds a thread migrates neighbouring pages (the same fault-around
 * window) both ways meanwhile: their wakes cover the faulting pages.
 * Iterations: HUNT6_ITERS (default 30). */
#define SB_NP 64
static char *sb_b; static struct tdev *sb_td;
static unsigned sb_nthr, sb_mode;
static pthread_barrier_t sb_bar1, sb_bar2;
static atomic_int sb_stopmig;
static unsigned sb_ver;
static atomic_int sb_bus[8], sb_ok_armed[8], sb_counted;

/* One access with SIGBUS caught; then @late_us to catch a late second one.  Returns the SIGBUS count. */
static __attribute__((noinline)) int sb_access(volatile uint64_t *q, bool write, uint64_t v, long late_us)
{
	sigjmp_buf env;

	tl_bus = 0;
	if (sigsetjmp(env, 1) == 0) {
		tl_env = &env;
		if (write) *q = v; else (void)*q;
	}
	tl_env = NULL;
	if (late_us) {
		if (sigsetjmp(env, 1) == 0) {
			tl_env = &env;
			nap_us(late_us);
		}
		tl_env = NULL;
	}
	return tl_bus;
}

static void *sb_thr(void *a)
{
	unsigned t = (unsigned)(intptr_t)a;
	unsigned s = seed ^ (0x4545u * (t + 1));
	int iters = hunt_envi("HUNT6_ITERS", 30);
	for (int it = 0; it < iters; it++) {
		size_t p = sb_mode == 0 ? 5 : sb_mode == 1 ? 1 + 2 * t : rnd_r(&s) % SB_NP;
		bool write = rnd_r(&s) % 2;
		volatile uint64_t *q = (volatile uint64_t *)(void *)(sb_b + p * PG) + t;
		pthread_barrier_wait(&sb_bar1);		/* armed, all on the device */
		int n = sb_access(q, write, word(sb_ver, p, t), 2000);
		if (n == 0) atomic_fetch_add(&sb_ok_armed[t], 1);	/* no SIGBUS while armed */
		atomic_fetch_add(&sb_bus[t], n);
		atomic_fetch_add(&sb_counted, 1);
		if (n > 1)
			FAIL("iteration %d thread %u: %d SIGBUS for one %s of page %zu", it, t, n,
			     write ? "write" : "read", p);
		pthread_barrier_wait(&sb_bar2);		/* cleared */
		n = sb_access(q, write, word(sb_ver, p, t), 0);
		if (n)
			FAIL("iteration %d thread %u: %d SIGBUS on the retry (nothing injected) of page %zu",
			     it, t, n, p);
		pthread_barrier_wait(&sb_bar1);		/* checked by main */
	}
	return NULL;
}

static void *sb_migthr(void *a)
{
	(void)a;
	unsigned s = seed ^ 0x2727u;
	while (!atomic_load(&sb_stopmig)) {
		size_t p = rnd_r(&s) % SB_NP, n = 1 + rnd_r(&s) % 4;
		if (p + n > SB_NP) n = SB_NP - p;
		uintptr_t st = (uintptr_t)(sb_b + p * PG);
		if (rnd_r(&s) % 2) (void)tdev_to_dev(sb_td, st, st + n * PG, NULL);
		else (void)tdev_to_sys(sb_td, st, st + n * PG, NULL);
	}
	return NULL;
}

static void sc_sigbus(int round)
{
	sb_nthr = 2 + (unsigned)(round % 7);
	sb_mode = (unsigned)(round / 2) % 3;
	bool mig = round % 2;
	size_t fa = (round / 6) % 2 ? 1 : 0;
	struct uhmm_mm *mm = getmm();
	int r = tdev_open(mm, 256, fa, NULL, 0, &sb_td);
	if (r) FAIL("tdev open %d", r);
	sb_b = amap_aligned(SB_NP);
	pthread_barrier_init(&sb_bar1, NULL, sb_nthr + 1);
	pthread_barrier_init(&sb_bar2, NULL, sb_nthr + 1);
	printf("round %d: sigbus threads %u mode %s migrator %d fault_around %zu\n", round, sb_nthr,
	       sb_mode == 0 ? "same page" : sb_mode == 1 ? "own page" : "random", mig, fa);
	pthread_t t[8], mt;
	for (unsigned i = 0; i < sb_nthr; i++) pthread_create(&t[i], NULL, sb_thr, (void *)(intptr_t)i);
	int iters = hunt_envi("HUNT6_ITERS", 30);
	unsigned long total_bus = 0;
	for (int it = 0; it < iters; it++) {
		sb_ver = (unsigned)it + 2;
		fill(sb_b, SB_NP, sb_ver - 1, 0);
		/* the threads write word t of their page with version sb_ver: prepare the expected image */
		long m = tdev_to_dev(sb_td, (uintptr_t)sb_b, (uintptr_t)sb_b + SB_NP * PG, NULL);
		if (m != SB_NP) FAIL("to dev: %ld", m);
		atomic_store(&sb_stopmig, 0);
		uhmm_inject_set(UHMM_INJECT_UFFD_COPY, 0, ~0ul >> 1, EFAULT);
		uhmm_inject_set(UHMM_INJECT_UFFD_MOVE, 0, ~0ul >> 1, EFAULT);
		if (mig) pthread_create(&mt, NULL, sb_migthr, NULL);
		pthread_barrier_wait(&sb_bar1);
		/* the threads fault and count their SIGBUS; then the injection is cleared */
		while (atomic_load(&sb_counted) < (int)sb_nthr) nap_us(500);
		atomic_store(&sb_counted, 0);
		atomic_store(&sb_stopmig, 1);
		if (mig) pthread_join(mt, NULL);
		/* can't clear before every thread counted its SIGBUS: they wait at bar2 */
		uhmm_inject_clear();
		pthread_barrier_wait(&sb_bar2);
		pthread_barrier_wait(&sb_bar1);
		/* check every page: version sb_ver - 1, but word t of written pages */
		for (size_t p = 0; p < SB_NP; p++) {
			const uint64_t *q = (const uint64_t *)(const void *)(sb_b + p * PG);
			for (size_t w = 0; w < PG / 8; w++)
				if (q[w] != word(sb_ver - 1, p, w) && !(w < sb_nthr && q[w] == word(sb_ver, p, w)))
					FAIL("iteration %d: page %zu word %zu: %#llx (%s)", it, p, w,
					     (unsigned long long)q[w], what((const char *)q, sb_ver - 1, p));
		}
	}
	for (unsigned i = 0; i < sb_nthr; i++) pthread_join(t[i], NULL);
	unsigned long ok_armed = 0;
	for (unsigned i = 0; i < sb_nthr; i++) { total_bus += (unsigned long)sb_bus[i]; ok_armed += (unsigned long)sb_ok_armed[i]; }
	if (total_bus + ok_armed != (unsigned long)iters * sb_nthr)
		FAIL("%lu SIGBUS + %lu accesses done while armed for %lu accesses", total_bus, ok_armed,
		     (unsigned long)iters * sb_nthr);
	printf("round %d: ok: %lu accesses, %lu SIGBUS, %lu succeeded while armed\n", round,
	       (unsigned long)iters * sb_nthr, total_bus, ok_armed);
	r = tdev_close(sb_td);
	if (r) FAIL("close %d", r);
}

/* ================= 4: rawunmap: raw munmap / mremap of device ranges racing pool removal ====
 * RU_NR regions of RU_P pages, each mapped, filled and migrated to tdev by
 * its owner thread, which then: rewrites and migrates again; unmaps it
 * with a raw munmap system call (uhmm sees only the UNMAP event) and maps
 * a new tenant at the same address at once (raw mmap in even rounds,
 * the wrapper in odd ones), writing half of its pages: the written half
 * must read the new data, the rest zero; unmaps it with the wrapper;
 * moves it with mremap (wrapper, or the raw system call) to a reserved
 * address and checks the data there.  Meanwhile a thread removes and
 * re-adds the pool (remove: 0 only with no device page left allocated;
 * else an error, counted by errno) and another evicts pfn runs.  At the
 * end every region is unmapped and the pool must come off within a
 * bounded number of tries. */
#define RU_NR 8
#define RU_P 16
static char *ru_addr[RU_NR]; static unsigned ru_tag[RU_NR];
static struct tdev *ru_td; static struct uhmm_mm *ru_mm;
static pthread_rwlock_t ru_pool;
static atomic_bool ru_added;
static atomic_int ru_stop;
static atomic_ulong ru_rm_ok, ru_rm_err[8], ru_ops[8], ru_readd;
static bool ru_rawmap;

static int ru_errslot(int r)
{
	switch (r) { case -EBUSY: return 0; case -EINVAL: return 1; case -EFAULT: return 2;
	case -ENOMEM: return 3; case -ENOENT: return 4; default: return 5; }
}

static char *ru_map_at(char *hint, bool raw)
{
	char *p;
	int fl = MAP_PRIVATE | MAP_ANONYMOUS | (hint ? MAP_FIXED_NOREPLACE : 0);
	if (raw)
		p = (char *)syscall(SYS_mmap, hint, RU_P * PG, PROT_READ | PROT_WRITE, fl, -1, 0);
	else
		p = mmap(hint, RU_P * PG, PROT_READ | PROT_WRITE, fl, -1, 0);
	if (p == MAP_FAILED) return NULL;
	return p;
}

static void ru_todev(int i)
{
	pthread_rwlock_rdlock(&ru_pool);
	if (atomic_load(&ru_added)) {
		long m = tdev_to_dev(ru_td, (uintptr_t)ru_addr[i], (uintptr_t)ru_addr[i] + RU_P * PG, NULL);
		if (m < 0 && m != -ENOMEM) FAIL("region %d to dev: %ld %s", i, m, uhmm_last_error());
	}
	pthread_rwlock_unlock(&ru_pool);
}

static void ru_check(int i, const char *when, size_t written)
{
	for (size_t p = 0; p < RU_P; p++) {
		int k = page_is(ru_addr[i] + p * PG, ru_tag[i], p);
		int want = p < written ? 1 : 0;
		if (k != want)
			FAIL("%s: region %d page %zu reads %s, want %s", when, i, p,
			     what(ru_addr[i] + p * PG, ru_tag[i], p), want ? "its data" : "zero");
	}
}

static void *ru_owner(void *a)
{
	(void)a;
	unsigned s = seed ^ 0x6161u, tag = 100;
	while (!atomic_load(&ru_stop)) {
		int i = (int)(rnd_r(&s) % RU_NR);
		unsigned op = rnd_r(&s) % 5;
		if (!(hunt_envi("HUNT6_RUOPS", 31) >> op & 1)) continue;
		atomic_fetch_add(&ru_ops[op], 1);
		switch (op) {
		case 0: {	/* rewrite, migrate */
			ru_check(i, "before rewrite", RU_P);
			ru_tag[i] = ++tag;
			fill(ru_addr[i], RU_P, ru_tag[i], 0);
			ru_todev(i);
			break;
		}
		case 1: case 2: {	/* raw (1) or wrapped (2) munmap, a new tenant at once */
			char *old = ru_addr[i];
			if (op == 1) syscall(SYS_munmap, old, RU_P * PG);
			else munmap(old, RU_P * PG);
			char *n = ru_map_at(old, ru_rawmap);
			if (!n) n = ru_map_at(NULL, false);
			if (!n) FAIL("map %d", errno);
			ru_addr[i] = n;
			ru_tag[i] = ++tag;
			fill(n, RU_P / 2, ru_tag[i], 0);
			ru_check(i, n == old ? "new tenant at the old address" : "new tenant", RU_P / 2);
			fill(n, RU_P, ru_tag[i], 0);
			ru_todev(i);
			break;
		}
		case 3: case 4: {	/* mremap (wrapper: 3, raw: 4) to a reserved place */
			char *dst = mmap(NULL, RU_P * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			if (dst == MAP_FAILED) FAIL("reserve");
			char *n;
			if (op == 3)
				n = mremap(ru_addr[i], RU_P * PG, RU_P * PG, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
			else
				n = (char *)syscall(SYS_mremap, ru_addr[i], RU_P * PG, RU_P * PG,
						    MREMAP_MAYMOVE | MREMAP_FIXED, dst);
			if (n != dst) FAIL("mremap %d", errno);
			ru_addr[i] = n;
			ru_check(i, op == 3 ? "after mremap" : "after raw mremap", RU_P);
			ru_todev(i);
			break;
		}
		}
	}
	return NULL;
}

static void ru_readd_pool(void)
{
	int r = uhmm_devmem_add(ru_mm, &ru_td->pgmap);
	if (r) FAIL("re-add %d %s", r, uhmm_last_error());
	atomic_store(&ru_added, true);
	atomic_fetch_add(&ru_readd, 1);
}

static int ru_remove(bool final)
{
	int r = uhmm_devmem_remove(&ru_td->pgmap);
	if (r == 0) {
		atomic_store(&ru_added, false);
		atomic_fetch_add(&ru_rm_ok, 1);
		size_t u = tdev_used(ru_td);
		if (u) FAIL("%sremove returned 0 with %zu tdev pages still allocated", final ? "final " : "", u);
	} else {
		atomic_fetch_add(&ru_rm_err[ru_errslot(r)], 1);
		if (r != -EBUSY && r != -EINVAL && r != -EFAULT)
			FAIL("remove: %d %s", r, uhmm_last_error());
	}
	return r;
}

static void *ru_remover(void *a)
{
	(void)a;
	unsigned s = seed ^ 0x8181u;
	while (!atomic_load(&ru_stop)) {
		pthread_rwlock_wrlock(&ru_pool);
		if (!atomic_load(&ru_added)) ru_readd_pool();
		else if (ru_remove(false) == 0 && rnd_r(&s) % 2) ru_readd_pool();
		pthread_rwlock_unlock(&ru_pool);
		nap_us(rnd_r(&s) % 2000);
	}
	return NULL;
}

static void *ru_evictor(void *a)
{
	(void)a;
	unsigned s = seed ^ 0x9292u;
	uint64_t src[32], dst[32];
	char *buf = mmap(NULL, 32 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	while (!atomic_load(&ru_stop)) {
		pthread_rwlock_rdlock(&ru_pool);
		if (atomic_load(&ru_added)) {
			size_t n = 1 + rnd_r(&s) % 32, idx = rnd_r(&s) % ru_td->nr_pages;
			if (idx + n > ru_td->nr_pages) n = ru_td->nr_pages - idx;
			uint64_t base = uhmm_page_to_pfn(uhmm_devmem_page(&ru_td->pgmap, 0));
			int r = uhmm_migrate_device_range(ru_mm, src, base + idx, n);
			if (r) FAIL("device range %d", r);
			evict_copy(ru_mm, ru_td, src, dst, n, buf);
		}
		pthread_rwlock_unlock(&ru_pool);
		nap_us(rnd_r(&s) % 3000);
	}
	return NULL;
}

static void *ru_idle(void *a) { (void)a; return NULL; }

static void sc_rawunmap(int round)
{
	ru_rawmap = round % 2 == 0;
	size_t fa = round % 4 < 2 ? 0 : 1;
	pthread_rwlockattr_t ra;
	pthread_rwlockattr_init(&ra);
	pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&ru_pool, &ra);
	ru_mm = getmm();
	int r = tdev_open(ru_mm, 512, fa, NULL, 0, &ru_td);
	if (r) FAIL("tdev open %d", r);
	atomic_store(&ru_added, true);
	for (int i = 0; i < RU_NR; i++) {
		ru_addr[i] = ru_map_at(NULL, false);
		ru_tag[i] = 1 + (unsigned)i;
		fill(ru_addr[i], RU_P, ru_tag[i], 0);
		ru_todev(i);
	}
	printf("round %d: rawunmap new tenant by %s, fault_around %zu\n", round,
	       ru_rawmap ? "raw mmap" : "the mmap wrapper", fa);
	pthread_t t[3];
	pthread_create(&t[0], NULL, ru_owner, NULL);
	pthread_create(&t[1], NULL, hunt_envi("HUNT6_RUREM", 1) ? ru_remover : ru_idle, NULL);
	pthread_create(&t[2], NULL, hunt_envi("HUNT6_RUEV", 1) ? ru_evictor : ru_idle, NULL);
	double t0 = hunt_now();
	while (hunt_now() - t0 < secs()) nap_us(50000);
	atomic_store(&ru_stop, 1);
	for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
	for (int i = 0; i < RU_NR; i++) ru_check(i, "final", RU_P);
	for (int i = 0; i < RU_NR; i++) munmap(ru_addr[i], RU_P * PG);
	if (!atomic_load(&ru_added)) ru_readd_pool();
	int tries = 0;
	while ((r = ru_remove(true)) != 0) {
		if (++tries == 1000) FAIL("the pool never comes off: %d, %zu pages allocated: stranded", r, tdev_used(ru_td));
		sched_yield();
	}
	tdev_free(ru_td);
	printf("round %d: ok: ops rewrite %lu rawunmap %lu unmap %lu mremap %lu rawmremap %lu; remove ok %lu "
	       "EBUSY %lu EINVAL %lu EFAULT %lu; readd %lu; final remove after %d failed tries\n", round,
	       ru_ops[0], ru_ops[1], ru_ops[2], ru_ops[3], ru_ops[4], ru_rm_ok, ru_rm_err[0], ru_rm_err[1],
	       ru_rm_err[2], ru_readd, tries);
}

/* ================= 5: realloc: glibc's realloc of a device-resident block ===================
 * glibc's realloc() of a block above the mmap threshold moves it with its
 * own mremap system call (not the wrapper: uhmm sees the REMAP event
 * only).  A block of 1 MiB is malloc'd, filled, its page-aligned interior
 * migrated to tdev; another thread keeps evicting the pool's pages with
 * device-range migrations (HUNT6_HOW=1: nothing races, the control;
 * 2: pool remove / re-add instead); the block is realloc'd
 * to 2x and back and every byte checked after each.  The kernel never
 * loses a byte here. */
static char *rl_blk; static size_t rl_len;
static struct tdev *rl_td; static struct uhmm_mm *rl_mm;
static atomic_int rl_stop;
static pthread_mutex_t rl_lock = PTHREAD_MUTEX_INITIALIZER;	/* pool add/remove vs to_dev */

static void *rl_evictor(void *a)
{
	int how = (int)(intptr_t)a;
	unsigned s = seed ^ 0x4141u;
	uint64_t src[64], dst[64];
	char *buf = mmap(NULL, 64 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (how == 1) return NULL;
	while (!atomic_load(&rl_stop)) {
		if (how == 2) {
			pthread_mutex_lock(&rl_lock);
			int r = uhmm_devmem_remove(&rl_td->pgmap);
			if (r == 0) {
				if (tdev_used(rl_td)) FAIL("remove 0 with pages allocated");
				r = uhmm_devmem_add(rl_mm, &rl_td->pgmap);
				if (r) FAIL("re-add %d", r);
			}
			pthread_mutex_unlock(&rl_lock);
		} else {
			size_t n = 64;
			uint64_t base = uhmm_page_to_pfn(uhmm_devmem_page(&rl_td->pgmap, 0));
			int r = uhmm_migrate_device_range(rl_mm, src, base + rnd_r(&s) % (rl_td->nr_pages - 63), n);
			if (r) FAIL("device range %d", r);
			evict_copy(rl_mm, rl_td, src, dst, n, buf);
		}
		nap_us(rnd_r(&s) % 300);
	}
	return NULL;
}

static void rl_check(const char *when, unsigned tag)
{
	for (size_t off = 0; off + 8 <= rl_len; off += 8) {
		uint64_t w = *(uint64_t *)(void *)(rl_blk + off);
		if (w != word(tag, 0, off / 8)) {
			size_t pg = ((uintptr_t)(rl_blk + off) - ((uintptr_t)rl_blk & ~(PG - 1))) / PG;
			FAIL("%s: byte %zu (page %zu of the block) reads %#llx, want %#llx%s", when, off, pg,
			     (unsigned long long)w, (unsigned long long)word(tag, 0, off / 8), w ? "" : " (zero)");
		}
	}
}

static void sc_realloc(int round)
{
	int how = hunt_envi("HUNT6_HOW", round % 3);
	int iters = hunt_envi("HUNT6_ITERS", 300);
	rl_mm = getmm();
	int r = tdev_open(rl_mm, 512, round % 2 ? 1 : 0, NULL, 0, &rl_td);
	if (r) FAIL("tdev open %d", r);
	printf("round %d: realloc, racer %s\n", round, how == 0 ? "device-range eviction" : how == 1 ? "none" : "pool remove");
	pthread_t t;
	pthread_create(&t, NULL, rl_evictor, (void *)(intptr_t)how);
	unsigned long moved_blocks = 0, migrated = 0;
	for (int it = 0; it < iters; it++) {
		unsigned tag = 10 + (unsigned)it;
		rl_len = (size_t)1 << 20;
		rl_blk = malloc(rl_len);
		if (!rl_blk) FAIL("malloc");
		for (size_t off = 0; off < rl_len; off += 8) *(uint64_t *)(void *)(rl_blk + off) = word(tag, 0, off / 8);
		for (int k = 0; k < 4; k++) {
			uintptr_t a = ((uintptr_t)rl_blk + PG - 1) & ~(PG - 1);
			uintptr_t e = ((uintptr_t)rl_blk + rl_len) & ~(PG - 1);
			pthread_mutex_lock(&rl_lock);
			long m = tdev_to_dev(rl_td, a, e, NULL);
			pthread_mutex_unlock(&rl_lock);
			if (m > 0) migrated += (unsigned long)m;
			size_t nl = k % 2 ? rl_len / 2 : rl_len * 2;
			char *old = rl_blk;
			char *nb = realloc(rl_blk, nl);
			if (!nb) FAIL("realloc");
			if (nb != old) moved_blocks++;
			rl_blk = nb;
			size_t keep = nl < rl_len ? nl : rl_len;
			rl_len = keep;
			rl_check(k % 2 ? "after realloc (shrink)" : "after realloc (grow)", tag);
			for (size_t off = 0; off < nl; off += 8) *(uint64_t *)(void *)(rl_blk + off) = word(tag, 0, off / 8);
			rl_len = nl;
		}
		free(rl_blk);
	}
	atomic_store(&rl_stop, 1);
	pthread_join(t, NULL);
	r = tdev_close(rl_td);
	if (r) FAIL("close %d", r);
	printf("round %d: ok: %d blocks, %lu reallocs moved the block, %lu pages migrated\n", round, iters,
	       moved_blocks, migrated);
}

static const struct hunt_scenario scs[] = {
	{"exhaust", sc_exhaust}, {"inject", sc_inject}, {"sigbus", sc_sigbus}, {"rawunmap", sc_rawunmap}, {"realloc", sc_realloc},
};

int main(int argc, char **argv)
{
	return hunt_main(argc, argv, "HUNT6", scs, sizeof(scs) / sizeof(scs[0]), &seed, &g_round,
			 h6_sig);
}
