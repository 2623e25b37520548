// SPDX-License-Identifier: MIT
/*
 * Adversarial programs against the public API, round 4 (tests/hunt/FINDINGS.md).
 * Not registered in CTest.  Usage: hunt4 SCENARIO ROUNDS [TIMEOUT_S]
 * Each round runs in a forked child with alarm(); the parent (round.h)
 * reports hangs with every thread's gdb stacks, and failed rounds.
 * HUNT4_FIRST=k HUNT4_STEP=s rerun one round kind.  ROUNDS 0 runs one
 * round in this process (for a debugger).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uhmm/uhmm.h>
#include <uhmm/simdev.h>

#include "round.h"

#define PG 4096UL

static unsigned seed;
static int g_round;
extern char **environ;

#define FAIL(...) do { fprintf(stderr, "FAIL round %d %s:%d: ", g_round, __func__, __LINE__); fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); _exit(1); } while (0)

#include "pages.h"

static const char *what(int st) { return st == 1 ? "right" : st == 0 ? "zero" : "other data"; }

static void *amap(size_t np)
{
	void *p = mmap(NULL, np * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) FAIL("mmap %d", errno);
	return p;
}

/* ================= 1: freewrite: MADV_FREE, then a write, under migrations ==================
 * The owner MADV_FREEs a run, accepts old data or zero (the kernel may have
 * freed the clean pages), writes a new version and checks it.  A write after
 * MADV_FREE must stay (the kernel keeps a page written after MADV_FREE).
 * Migrator (HUNT4_MIG or round % 4): 0 to the device, 1 exclusive, 2 to the
 * device and back, 3 all three. */
static char *fw_b; static size_t fw_np = 64; static struct uhmm_simdev *fw_dev;
static atomic_int fw_stop;
static void *fw_mig(void *a)
{
	int kind = (int)(intptr_t)a;
	unsigned s = seed ^ 0x1234;
	while (!atomic_load(&fw_stop)) {
		size_t i = rnd_r(&s) % fw_np, n = 1 + rnd_r(&s) % (fw_np - i < 16 ? fw_np - i : 16);
		int k = kind == 3 ? (int)(rnd_r(&s) % 3) : kind;
		if (k == 0 || k == 2) uhmm_simdev_migrate_to_dev(fw_dev, fw_b + i * PG, n, NULL);
		if (k == 1) uhmm_simdev_exclusive(fw_dev, fw_b + i * PG, n, NULL);
		if (k == 2) uhmm_simdev_migrate_to_sys(fw_dev, fw_b + i * PG, n, NULL);
	}
	return NULL;
}
static void sc_freewrite(int round)
{
	int kind = hunt_envi("HUNT4_MIG", round % 4);
	int iters = hunt_envi("HUNT4_ITERS", 4000);
	unsigned ver[64];
	fw_dev = mkdev(1024, 1, 0);
	fw_b = amap(fw_np);
	for (size_t k = 0; k < fw_np; k++) ver[k] = 1;
	fill(fw_b, fw_np, 1, 0);
	pthread_t th;
	pthread_create(&th, NULL, fw_mig, (void *)(intptr_t)kind);
	for (int it = 0; it < iters; it++) {
		size_t i = rnd() % fw_np, n = 1 + rnd() % (fw_np - i < 8 ? fw_np - i : 8);
		if (madvise(fw_b + i * PG, n * PG, MADV_FREE)) FAIL("MADV_FREE %d", errno);
		for (size_t k = i; k < i + n; k++) {
			int st = page_is(fw_b + k * PG, ver[k], k);
			if (st < 0) FAIL("it %d: after MADV_FREE page %zu neither old nor zero", it, k);
			ver[k] = (unsigned)it + 2;
			fill(fw_b + k * PG, 1, ver[k], k);
		}
		for (int pass = 0; pass < 2; pass++) {
			for (size_t k = i; k < i + n; k++) {
				int st = page_is(fw_b + k * PG, ver[k], k);
				if (st != 1)
					FAIL("it %d pass %d: page %zu of [%zu, +%zu), written after MADV_FREE, is %s",
					     it, pass, k, i, n, what(st));
			}
			sched_yield();
		}
	}
	atomic_store(&fw_stop, 1);
	pthread_join(th, NULL);
	for (size_t k = 0; k < fw_np; k++)
		if (page_is(fw_b + k * PG, ver[k], k) != 1)
			FAIL("end: page %zu is %s", k, what(page_is(fw_b + k * PG, ver[k], k)));
	uhmm_simdev_destroy(fw_dev);
	fprintf(stderr, "round %d (migrator %d): ok\n", round, kind);
}

/* ================= 2: heap: brk memory and malloc'd blocks reused under migrations ============
 * round % 3: 0 malloc/calloc/free churn in the main arena (brk heap, trimmed and
 * regrown: M_TRIM_THRESHOLD small), a thread migrating the blocks' pages to the
 * device and back, the device reading and writing blocks; calloc must return
 * zeroes, every live block its data (CPU and device).  1 the same with sbrk()
 * (the wrapper) growing and shrinking a region of our own; 2 with raw brk
 * system calls (no wrapper: uhmm sees only the UNMAP event), the break put
 * back at the end.  Fresh break memory must read zero. */
#include <malloc.h>
#define HB_MAX 48
struct hblk { char *p; size_t sz; unsigned ver; };
static struct hblk hb[HB_MAX];
static pthread_mutex_t hb_lock = PTHREAD_MUTEX_INITIALIZER;
static struct uhmm_simdev *h_dev;
static atomic_int h_stop;
static atomic_uintptr_t h_lo, h_hi;	/* brk kinds: the region */
static int h_kind;
static void hfill(char *p, size_t sz, unsigned ver, uintptr_t salt)
{
	for (size_t i = 0; i + 8 <= sz; i += 8)
		*(uint64_t *)(p + i) = word(ver, salt, i / 8);
}
static long hbad(const char *p, size_t sz, unsigned ver, uintptr_t salt)
{
	for (size_t i = 0; i + 8 <= sz; i += 8)
		if (*(const uint64_t *)(p + i) != word(ver, salt, i / 8))
			return (long)i;
	return -1;
}
static void *h_mig(void *a)
{
	(void)a;
	unsigned s = seed ^ 0x4444;
	while (!atomic_load(&h_stop)) {
		uintptr_t lo, hi;
		if (h_kind == 0) {
			pthread_mutex_lock(&hb_lock);
			struct hblk b = hb[rnd_r(&s) % HB_MAX];
			pthread_mutex_unlock(&hb_lock);
			if (!b.p) { sched_yield(); continue; }
			lo = (uintptr_t)b.p & ~(PG - 1);
			hi = ((uintptr_t)b.p + b.sz + PG - 1) & ~(PG - 1);
		} else {
			lo = atomic_load(&h_lo); hi = atomic_load(&h_hi);
			if (hi <= lo) { sched_yield(); continue; }
			size_t np = (hi - lo) / PG, i = rnd_r(&s) % np, n = 1 + rnd_r(&s) % (np - i < 16 ? np - i : 16);
			lo += i * PG; hi = lo + n * PG;
		}
		/* the memory may be freed, trimmed or regrown meanwhile: refusals are fine */
		uhmm_simdev_migrate_to_dev(h_dev, (void *)lo, (hi - lo) / PG, NULL);
		if (rnd_r(&s) % 3 == 0) uhmm_simdev_migrate_to_sys(h_dev, (void *)lo, (hi - lo) / PG, NULL);
	}
	return NULL;
}
static void *rawbrk(void *to) { return (void *)syscall(SYS_brk, to); }
static void heap_malloc(int round)
{
	unsigned ver = 1;
	char *dbuf = amap(64);
	mallopt(M_MMAP_THRESHOLD, 1 << 20);
	mallopt(M_TRIM_THRESHOLD, 64 << 10);
	mallopt(M_TOP_PAD, 0);
	for (int it = 0; it < 6000; it++) {
		int k = (int)(rnd() % HB_MAX), op = (int)(rnd() % 8);
		struct hblk b = hb[k];
		if (!b.p) {
			size_t sz = 8 * (1 + rnd() % ((round & 4) ? 32768 : 4096));
			char *p = (op & 1) ? calloc(1, sz) : malloc(sz);
			if (!p) FAIL("alloc %zu", sz);
			if (op & 1)
				for (size_t i = 0; i < sz; i++)
					if (p[i]) FAIL("it %d: calloc(%zu) at %p: byte %zu is %#x, not 0", it, sz, (void *)p, i, (unsigned char)p[i]);
			hfill(p, sz, ++ver, (uintptr_t)p);
			pthread_mutex_lock(&hb_lock);
			hb[k] = (struct hblk){ p, sz, ver };
			pthread_mutex_unlock(&hb_lock);
			continue;
		}
		long bad = hbad(b.p, b.sz, b.ver, (uintptr_t)b.p);
		if (bad >= 0) FAIL("it %d: block %p (%zu bytes, version %u) wrong at byte %ld", it, (void *)b.p, b.sz, b.ver, bad);
		if (op < 3) {
			pthread_mutex_lock(&hb_lock);
			hb[k].p = NULL;
			pthread_mutex_unlock(&hb_lock);
			free(b.p);
		} else if (op < 5) {
			hfill(b.p, b.sz, ++ver, (uintptr_t)b.p);
			hb[k].ver = ver;
		} else if (op < 7) {
			/* device read of the block's whole pages */
			uintptr_t lo = (uintptr_t)b.p & ~(PG - 1), hi = ((uintptr_t)b.p + b.sz + PG - 1) & ~(PG - 1);
			size_t np = (hi - lo) / PG;
			if (np > 64) np = 64;
			int r = uhmm_simdev_read(h_dev, (void *)lo, np, dbuf, NULL);
			if (r) FAIL("device read %d %s", r, uhmm_last_error());
			size_t n = np * PG - ((uintptr_t)b.p - lo);
			if (n > b.sz) n = b.sz;
			bad = hbad(dbuf + ((uintptr_t)b.p - lo), n, b.ver, (uintptr_t)b.p);
			if (bad >= 0) FAIL("it %d: device reads block %p (version %u) wrong at byte %ld (CPU right)", it, (void *)b.p, b.ver, bad);
		} else {
			/* the device writes the block's interior pages */
			uintptr_t lo = ((uintptr_t)b.p + PG - 1) & ~(PG - 1), hi = ((uintptr_t)b.p + b.sz) & ~(PG - 1);
			if (hi <= lo) continue;
			size_t np = (hi - lo) / PG;
			if (np > 64) np = 64;
			hi = lo + np * PG;
			/* new version: the device writes its pages, the CPU the rest */
			hfill(dbuf, np * PG, ++ver, lo);
			/* salt by the block: rebuild the pattern the block would hold */
			char *tmp = malloc(b.sz);
			hfill(tmp, b.sz, ver, (uintptr_t)b.p);
			memcpy(dbuf, tmp + (lo - (uintptr_t)b.p), np * PG);
			int r = uhmm_simdev_write(h_dev, (void *)lo, np, dbuf, NULL);
			if (r) { free(tmp); continue; }
			memcpy(b.p, tmp, lo - (uintptr_t)b.p);
			memcpy((char *)hi, tmp + (hi - (uintptr_t)b.p), (uintptr_t)b.p + b.sz - hi);
			free(tmp);
			hb[k].ver = ver;
			bad = hbad(b.p, b.sz, ver, (uintptr_t)b.p);
			if (bad >= 0) FAIL("it %d: after a device write block %p wrong at byte %ld", it, (void *)b.p, bad);
		}
	}
}
static void heap_brk(int round)
{
	bool raw = h_kind == 2;
	char *base0 = sbrk(0);
	/* page-align the break first */
	uintptr_t b0 = ((uintptr_t)base0 + PG - 1) & ~(PG - 1);
	if (raw ? rawbrk((void *)b0) != (void *)b0 : sbrk((intptr_t)(b0 - (uintptr_t)base0)) == (void *)-1)
		FAIL("align brk");
	size_t np = 0, maxnp = (round & 4) ? 512 : 96;
	unsigned *ver = calloc(maxnp, sizeof(unsigned));	/* before any break change of ours */
	char *dbuf = amap(16);
	atomic_store(&h_lo, b0);
	atomic_store(&h_hi, b0);
	for (int it = 0; it < 4000; it++) {
		int op = (int)(rnd() % 6);
		if (op == 0 && np < maxnp) {	/* grow: fresh pages read zero */
			size_t k = 1 + rnd() % (maxnp - np < 32 ? maxnp - np : 32);
			uintptr_t at = b0 + np * PG;
			if (raw ? rawbrk((void *)(at + k * PG)) != (void *)(at + k * PG) : sbrk((intptr_t)(k * PG)) != (void *)at)
				FAIL("grow brk by %zu pages: %d", k, errno);
			for (size_t i = 0; i < k; i++) {
				long z = -1;
				for (size_t w = 0; w < PG && z < 0; w++) if (((char *)at)[i * PG + w]) z = (long)w;
				if (z >= 0) FAIL("it %d: fresh break page %zu (%#lx) not zero at byte %ld (%s)", it, np + i, (unsigned long)(at + i * PG), z,
						 page_is((char *)at + i * PG, ver[np + i], np + i) == 1 ? "its old data" : "other data");
				ver[np + i] = (unsigned)it + 2;
				fill((char *)at + i * PG, 1, ver[np + i], np + i);
			}
			np += k;
			atomic_store(&h_hi, b0 + np * PG);
		} else if (op == 1 && np) {	/* shrink */
			size_t k = 1 + rnd() % (np < 32 ? np : 32);
			atomic_store(&h_hi, b0 + (np - k) * PG);
			if (raw ? rawbrk((void *)(b0 + (np - k) * PG)) != (void *)(b0 + (np - k) * PG) : sbrk(-(intptr_t)(k * PG)) == (void *)-1)
				FAIL("shrink brk: %d", errno);
			np -= k;
		} else if (op == 2 && np) {	/* rewrite a run */
			size_t i = rnd() % np, n = 1 + rnd() % (np - i < 16 ? np - i : 16);
			for (size_t k = i; k < i + n; k++) { ver[k] = (unsigned)it + 2; fill((char *)b0 + k * PG, 1, ver[k], k); }
		} else if (op == 3 && np) {	/* device read */
			size_t i = rnd() % np, n = 1 + rnd() % (np - i < 16 ? np - i : 16);
			int r = uhmm_simdev_read(h_dev, (char *)b0 + i * PG, n, dbuf, NULL);
			if (r) FAIL("device read %d %s", r, uhmm_last_error());
			for (size_t k = 0; k < n; k++)
				if (page_is(dbuf + k * PG, ver[i + k], i + k) != 1)
					FAIL("it %d: device reads break page %zu as %s, not version %u (CPU %s)", it, i + k,
					     what(page_is(dbuf + k * PG, ver[i + k], i + k)), ver[i + k],
					     what(page_is((char *)b0 + (i + k) * PG, ver[i + k], i + k)));
		} else if (op == 4 && np) {	/* device write */
			size_t i = rnd() % np, n = 1 + rnd() % (np - i < 16 ? np - i : 16);
			for (size_t k = 0; k < n; k++) fill(dbuf + k * PG, 1, (unsigned)it + 2, i + k);
			int r = uhmm_simdev_write(h_dev, (char *)b0 + i * PG, n, dbuf, NULL);
			if (r == 0) for (size_t k = i; k < i + n; k++) ver[k] = (unsigned)it + 2;
			else if (r != -EFAULT) FAIL("device write %d %s", r, uhmm_last_error());
		} else {
			for (size_t k = 0; k < np; k++)
				if (page_is((char *)b0 + k * PG, ver[k], k) != 1)
					FAIL("it %d: break page %zu is %s, not version %u", it, k, what(page_is((char *)b0 + k * PG, ver[k], k)), ver[k]);
		}
	}
	atomic_store(&h_hi, b0);
	if (raw ? rawbrk(base0) != base0 : sbrk(-(intptr_t)(b0 + np * PG - (uintptr_t)base0)) == (void *)-1)
		FAIL("restore brk");
}
static void sc_heap(int round)
{
	h_kind = hunt_envi("HUNT4_HOW", round % 3);
	h_dev = mkdev(4096, 1, 0);
	pthread_t th;
	pthread_create(&th, NULL, h_mig, NULL);
	if (h_kind == 0) heap_malloc(round); else heap_brk(round);
	atomic_store(&h_stop, 1);
	pthread_join(th, NULL);
	uhmm_simdev_destroy(h_dev);
	fprintf(stderr, "round %d (%s): ok\n", round, h_kind == 0 ? "malloc" : h_kind == 1 ? "sbrk" : "raw brk");
}

/* ================= 3: spawn: posix_spawn / vfork+exec while threads fault on device memory ======
 * The program's argument lives in device-resident memory (the kernel reads it in
 * execve, from the child, another thread group sharing the memory); the child
 * echoes it into a pipe.  Two threads check a buffer migrated meanwhile. */
static char *sp_buf; static size_t sp_np = 64; static atomic_int sp_stop; static struct uhmm_simdev *sp_dev;
static void *sp_mig(void *a)
{
	(void)a;
	unsigned s = seed ^ 0x9999;
	while (!atomic_load(&sp_stop)) {
		size_t i = rnd_r(&s) % sp_np, n = 1 + rnd_r(&s) % (sp_np - i);
		uhmm_simdev_migrate_to_dev(sp_dev, sp_buf + i * PG, n, NULL);
	}
	return NULL;
}
static void *sp_check(void *a)
{
	(void)a;
	while (!atomic_load(&sp_stop))
		for (size_t i = 0; i < sp_np - 1; i++)
			if (page_is(sp_buf + i * PG, 3, i) != 1) FAIL("checker: page %zu is %s", i, what(page_is(sp_buf + i * PG, 3, i)));
	return NULL;
}
struct sp_arg { int how; char *msg; int ok; };
static void *sp_spawner(void *a)
{
	struct sp_arg *x = a;
	for (int k = 0; k < 40; k++) {
		int pfd[2];
		if (pipe(pfd)) FAIL("pipe");
		/* the argument string: in the last page, device-resident most of the time */
		char *arg = x->msg;
		snprintf(arg, 64, "hunt4-%d-%d", g_round, k);
		uhmm_simdev_migrate_to_dev(sp_dev, sp_buf + (sp_np - 1) * PG, 1, NULL);
		char *argv[] = { "/bin/echo", arg, NULL };
		pid_t c;
		if (x->how == 0) {
			posix_spawn_file_actions_t fa;
			posix_spawn_file_actions_init(&fa);
			posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
			int r = posix_spawn(&c, "/bin/echo", &fa, NULL, argv, environ);
			posix_spawn_file_actions_destroy(&fa);
			if (r) FAIL("posix_spawn %d", r);
		} else {
			c = vfork();
			if (c == 0) {
				dup2(pfd[1], 1);
				execve("/bin/echo", argv, environ);
				_exit(127);
			}
			if (c < 0) FAIL("vfork %d", errno);
		}
		close(pfd[1]);
		char out[128] = {0};
		ssize_t got = 0, r;
		while ((r = read(pfd[0], out + got, sizeof out - 1 - (size_t)got)) > 0) got += r;
		close(pfd[0]);
		int st;
		if (waitpid(c, &st, 0) != c) FAIL("waitpid");
		if (!WIFEXITED(st) || WEXITSTATUS(st)) FAIL("child %d status %#x", k, st);
		char want[80];
		snprintf(want, sizeof want, "hunt4-%d-%d\n", g_round, k);
		if (strcmp(out, want)) FAIL("child %d printed '%s', not '%s'", k, out, want);
		x->ok++;
	}
	return NULL;
}
static void sc_spawn(int round)
{
	sp_dev = mkdev(1024, 1, 0);
	sp_buf = amap(sp_np);
	fill(sp_buf, sp_np, 3, 0);
	struct sp_arg x[2] = { { .how = round & 1, .msg = sp_buf + (sp_np - 1) * PG }, { .how = !(round & 1), .msg = sp_buf + (sp_np - 1) * PG + 2048 } };
	pthread_t m, c1, c2, s1, s2;
	pthread_create(&m, NULL, sp_mig, NULL);
	pthread_create(&c1, NULL, sp_check, NULL);
	pthread_create(&c2, NULL, sp_check, NULL);
	pthread_create(&s1, NULL, sp_spawner, &x[0]);
	if (round & 2) pthread_create(&s2, NULL, sp_spawner, &x[1]);
	pthread_join(s1, NULL);
	if (round & 2) pthread_join(s2, NULL);
	atomic_store(&sp_stop, 1);
	pthread_join(m, NULL); pthread_join(c1, NULL); pthread_join(c2, NULL);
	for (size_t i = 0; i < sp_np - 1; i++)
		if (page_is(sp_buf + i * PG, 3, i) != 1) FAIL("end: page %zu", i);
	uhmm_simdev_destroy(sp_dev);
	fprintf(stderr, "round %d: %d + %d children ok\n", round, x[0].ok, x[1].ok);
}

/* ================= 4: forkmig: fork from a thread while another is inside a migration ======
 * and a third faults; the child checks every page (it must see the parent's data at
 * the fork), writes its own, the parent checks its own after. */
static char *fm_buf; static size_t fm_np = 128; static atomic_int fm_stop; static struct uhmm_simdev *fm_dev;
static unsigned fm_ver[128]; static pthread_mutex_t fm_lk[128];
static void *fm_mig(void *a)
{
	unsigned s = seed ^ (unsigned)(uintptr_t)a;
	while (!atomic_load(&fm_stop)) {
		size_t i = rnd_r(&s) % fm_np, n = 1 + rnd_r(&s) % (fm_np - i < 64 ? fm_np - i : 64);
		if (rnd_r(&s) & 1) uhmm_simdev_migrate_to_dev(fm_dev, fm_buf + i * PG, n, NULL);
		else uhmm_simdev_migrate_to_sys(fm_dev, fm_buf + i * PG, n, NULL);
	}
	return NULL;
}
static void *fm_writer(void *a)
{
	unsigned s = seed ^ (unsigned)(uintptr_t)a;
	while (!atomic_load(&fm_stop)) {
		size_t i = rnd_r(&s) % fm_np;
		pthread_mutex_lock(&fm_lk[i]);
		if (page_is(fm_buf + i * PG, fm_ver[i], i) != 1) FAIL("writer: page %zu is %s, not version %u", i, what(page_is(fm_buf + i * PG, fm_ver[i], i)), fm_ver[i]);
		fm_ver[i]++;
		fill(fm_buf + i * PG, 1, fm_ver[i], i);
		pthread_mutex_unlock(&fm_lk[i]);
	}
	return NULL;
}
static void sc_forkmig(int round)
{
	fm_dev = mkdev(1024, 1, 0);
	fm_buf = amap(fm_np);
	if (round & 1) madvise(fm_buf, fm_np * PG, MADV_HUGEPAGE);
	for (size_t i = 0; i < fm_np; i++) { fm_ver[i] = 1; pthread_mutex_init(&fm_lk[i], NULL); }
	fill(fm_buf, fm_np, 1, 0);
	pthread_t m1, m2, w1, w2;
	pthread_create(&m1, NULL, fm_mig, (void *)1);
	pthread_create(&m2, NULL, fm_mig, (void *)2);
	pthread_create(&w1, NULL, fm_writer, (void *)3);
	pthread_create(&w2, NULL, fm_writer, (void *)4);
	for (int k = 0; k < 30; k++) {
		/* take every page lock: the versions are what the child must see */
		for (size_t i = 0; i < fm_np; i++) pthread_mutex_lock(&fm_lk[i]);
		unsigned snap[128];
		memcpy(snap, fm_ver, sizeof snap);
		pid_t c = fork();
		if (c == 0) {
			for (size_t i = 0; i < fm_np; i++)
				if (page_is(fm_buf + i * PG, snap[i], i) != 1) { fprintf(stderr, "child: page %zu is %s, not version %u\n", i, what(page_is(fm_buf + i * PG, snap[i], i)), snap[i]); _exit(3); }
			fill(fm_buf, fm_np, 999, 0);	/* copy-on-write: the parent must not see it */
			_exit(0);
		}
		for (size_t i = 0; i < fm_np; i++) pthread_mutex_unlock(&fm_lk[i]);
		if (c < 0) FAIL("fork %d", errno);
		int st;
		if (waitpid(c, &st, 0) != c) FAIL("waitpid");
		if (!WIFEXITED(st) || WEXITSTATUS(st)) FAIL("fork %d: child status %#x", k, st);
	}
	atomic_store(&fm_stop, 1);
	pthread_join(m1, NULL); pthread_join(m2, NULL); pthread_join(w1, NULL); pthread_join(w2, NULL);
	for (size_t i = 0; i < fm_np; i++)
		if (page_is(fm_buf + i * PG, fm_ver[i], i) != 1) FAIL("end: page %zu is %s", i, what(page_is(fm_buf + i * PG, fm_ver[i], i)));
	uhmm_simdev_destroy(fm_dev);
	fprintf(stderr, "round %d: ok\n", round);
}

/* ================= 5: threxit: threads leave (pthread_exit from a signal handler) while ======
 * their fault on device memory is being served; others fault on the same pages. */
static char *te_buf; static size_t te_np = 64; static atomic_int te_stop; static struct uhmm_simdev *te_dev;
static void te_handler(int sig) { (void)sig; pthread_exit(NULL); }
static void *te_mig(void *a)
{
	(void)a;
	unsigned s = seed ^ 0x3131;
	while (!atomic_load(&te_stop)) {
		size_t i = rnd_r(&s) % te_np, n = 1 + rnd_r(&s) % (te_np - i);
		uhmm_simdev_migrate_to_dev(te_dev, te_buf + i * PG, n, NULL);
	}
	return NULL;
}
static void *te_reader(void *a)
{
	(void)a;
	for (;;)
		for (size_t i = 0; i < te_np; i++)
			if (page_is(te_buf + i * PG, 5, i) != 1) FAIL("reader: page %zu is %s", i, what(page_is(te_buf + i * PG, 5, i)));
	return NULL;
}
static void sc_threxit(int round)
{
	te_dev = mkdev(1024, 1, 0);
	te_buf = amap(te_np);
	fill(te_buf, te_np, 5, 0);
	struct sigaction sa = { .sa_handler = te_handler };
	sigaction(SIGUSR1, &sa, NULL);
	pthread_t m, keep;
	pthread_create(&m, NULL, te_mig, NULL);
	pthread_create(&keep, NULL, te_reader, NULL);	/* lives on: its faults race the others' exits */
	int exited = 0;
	for (int k = 0; k < 300; k++) {
		pthread_t t[4];
		int nt = 1 + (int)(rnd() % 4);
		for (int j = 0; j < nt; j++) pthread_create(&t[j], NULL, te_reader, NULL);
		for (volatile unsigned d = 0; d < rnd() % 200000; d++) {}
		for (int j = 0; j < nt; j++) pthread_kill(t[j], SIGUSR1);
		for (int j = 0; j < nt; j++) { pthread_join(t[j], NULL); exited++; }
		if (round & 1) uhmm_simdev_migrate_to_dev(te_dev, te_buf, te_np, NULL);
	}
	atomic_store(&te_stop, 1);
	pthread_join(m, NULL);
	/* the keeper still runs: check from here too */
	for (size_t i = 0; i < te_np; i++)
		if (page_is(te_buf + i * PG, 5, i) != 1) FAIL("end: page %zu", i);
	pthread_kill(keep, SIGUSR1);
	pthread_join(keep, NULL);
	uhmm_simdev_destroy(te_dev);
	fprintf(stderr, "round %d: %d threads left mid-fault: ok\n", round, exited);
}

/* ================= 6: sigalrm: a SIGALRM handler touching device memory, delivered ======
 * during faults and migrations.  The handler checks and rewrites a page of its own
 * buffer (migrated meanwhile); the threads check theirs. */
static char *sa_buf, *sa_hbuf; static size_t sa_np = 64; static atomic_int sa_stop; static struct uhmm_simdev *sa_dev;
static atomic_int sa_busy; static atomic_ulong sa_runs; static unsigned sa_hver[16];
static volatile sig_atomic_t sa_bad = -1;
static void alrm_handler(int sig)
{
	(void)sig;
	int z = 0;
	if (!atomic_compare_exchange_strong(&sa_busy, &z, 1)) return;
	unsigned long r = atomic_fetch_add(&sa_runs, 1);
	size_t i = r % 16;
	if (page_is(sa_hbuf + i * PG, sa_hver[i], i) != 1) sa_bad = (sig_atomic_t)i;
	sa_hver[i]++;
	fill(sa_hbuf + i * PG, 1, sa_hver[i], i);
	atomic_store(&sa_busy, 0);
}
static void *sa_mig(void *a)
{
	unsigned s = seed ^ (unsigned)(uintptr_t)a;
	while (!atomic_load(&sa_stop)) {
		size_t i = rnd_r(&s) % sa_np, n = 1 + rnd_r(&s) % (sa_np - i);
		if ((uintptr_t)a & 1) uhmm_simdev_migrate_to_dev(sa_dev, sa_buf + i * PG, n, NULL);
		else uhmm_simdev_migrate_to_dev(sa_dev, sa_hbuf, 16, NULL);
		if (rnd_r(&s) % 4 == 0) uhmm_simdev_migrate_to_sys(sa_dev, sa_buf + i * PG, n, NULL);
	}
	return NULL;
}
static void *sa_reader(void *a)
{
	(void)a;
	while (!atomic_load(&sa_stop))
		for (size_t i = 0; i < sa_np; i++)
			if (page_is(sa_buf + i * PG, 6, i) != 1) FAIL("reader: page %zu is %s", i, what(page_is(sa_buf + i * PG, 6, i)));
	return NULL;
}
static void sc_sigalrm(int round)
{
	sa_dev = mkdev(1024, 1, 0);
	sa_buf = amap(sa_np);
	sa_hbuf = amap(16);
	fill(sa_buf, sa_np, 6, 0);
	for (size_t i = 0; i < 16; i++) sa_hver[i] = 1;
	fill(sa_hbuf, 16, 1, 0);
	struct sigaction sa = { .sa_handler = alrm_handler, .sa_flags = (round & 1) ? SA_RESTART : 0 };
	sigaction(SIGALRM, &sa, NULL);	/* replaces the round's alarm(): the parent's watchdog stays */
	pthread_t m1, m2, r1, r2;
	pthread_create(&m1, NULL, sa_mig, (void *)1);
	pthread_create(&m2, NULL, sa_mig, (void *)2);
	pthread_create(&r1, NULL, sa_reader, NULL);
	pthread_create(&r2, NULL, sa_reader, NULL);
	struct itimerval itv = { { 0, 200 + (round % 4) * 300 }, { 0, 1000 } };
	setitimer(ITIMER_REAL, &itv, NULL);
	while (atomic_load(&sa_runs) < 20000 && sa_bad < 0) {
		for (size_t i = 0; i < sa_np; i++)
			if (page_is(sa_buf + i * PG, 6, i) != 1) FAIL("main: page %zu is %s", i, what(page_is(sa_buf + i * PG, 6, i)));
	}
	struct itimerval off = { { 0, 0 }, { 0, 0 } };
	setitimer(ITIMER_REAL, &off, NULL);
	if (sa_bad >= 0) FAIL("handler: its page %d was not its last version", (int)sa_bad);
	atomic_store(&sa_stop, 1);
	pthread_join(m1, NULL); pthread_join(m2, NULL); pthread_join(r1, NULL); pthread_join(r2, NULL);
	while (atomic_load(&sa_busy)) sched_yield();
	for (size_t i = 0; i < 16; i++)
		if (page_is(sa_hbuf + i * PG, sa_hver[i], i) != 1) FAIL("end: handler page %zu", i);
	uhmm_simdev_destroy(sa_dev);
	fprintf(stderr, "round %d: %lu handler runs: ok\n", round, (unsigned long)atomic_load(&sa_runs));
}

/* ================= 7: freecover: MADV_DONTNEED of a part while another thread's MADV_FREE =====
 * covers the whole.  The owner writes a run, migrates it to the device, discards it
 * with MADV_DONTNEED: it must read zero afterwards (the kernel zaps device-private
 * entries), whatever MADV_FREE another thread runs over the whole buffer meanwhile
 * (which may only ever turn data into zero, never bring old data back). */
static char *fc_buf; static size_t fc_np = 64; static atomic_int fc_stop;
static void *fc_free(void *a)
{
	(void)a;
	while (!atomic_load(&fc_stop))
		if (madvise(fc_buf, fc_np * PG, MADV_FREE)) FAIL("MADV_FREE %d", errno);
	return NULL;
}
static void sc_freecover(int round)
{
	struct uhmm_simdev *d = mkdev(1024, 1, 0);
	fc_buf = amap(fc_np);
	pthread_t th;
	pthread_create(&th, NULL, fc_free, NULL);
	int iters = hunt_envi("HUNT4_ITERS", 4000), moved = 0;
	for (int it = 0; it < iters; it++) {
		size_t i = rnd() % fc_np, n = 1 + rnd() % (fc_np - i < 8 ? fc_np - i : 8);
		char *a = fc_buf + i * PG;
		fill(a, n, (unsigned)it + 2, i);
		struct uhmm_simdev_stats st = {0};
		if (uhmm_simdev_migrate_to_dev(d, a, n, &st) == 0) moved += (int)st.cpages;
		static char rb[8 * PG];
		if (round & 1) uhmm_simdev_read(d, a, n, rb, NULL);
		if (madvise(a, n * PG, MADV_DONTNEED)) FAIL("MADV_DONTNEED %d", errno);
		for (size_t k = 0; k < n; k++) {
			int stt = page_is(a + k * PG, (unsigned)it + 2, i + k);
			if (stt != 0 && !getenv("HUNT4_NOCHECK"))
				FAIL("it %d: page %zu of [%zu, +%zu) after MADV_DONTNEED returned: %s", it, i + k, i, n,
				     stt == 1 ? "the discarded data" : "other data");
		}
	}
	atomic_store(&fc_stop, 1);
	pthread_join(th, NULL);
	uhmm_simdev_destroy(d);
	fprintf(stderr, "round %d: ok (%d pages migrated)\n", round, moved);
}

/* ================= 8: mlockall: how long mlockall / munlockall take beside uhmm ==============
 * (round 3's full torture mix was reported hung in munlockall at a round's end.)
 * A thread migrates a buffer to the device, takes exclusive access and brings it
 * back; the main thread times mlockall(MCL_CURRENT | MCL_FUTURE) and munlockall(),
 * and checks the buffer after each.  Prints the slowest calls and the locked size. */
static char *ml_buf; static size_t ml_np = 512; static atomic_int ml_stop; static struct uhmm_simdev *ml_dev;
static void *ml_mig(void *a)
{
	(void)a;
	unsigned s = seed ^ 0x7171;
	while (!atomic_load(&ml_stop)) {
		size_t i = rnd_r(&s) % ml_np, n = 1 + rnd_r(&s) % (ml_np - i < 32 ? ml_np - i : 32);
		switch (rnd_r(&s) % 3) {
		case 0: uhmm_simdev_migrate_to_dev(ml_dev, ml_buf + i * PG, n, NULL); break;
		case 1: uhmm_simdev_exclusive(ml_dev, ml_buf + i * PG, n, NULL); break;
		default: uhmm_simdev_migrate_to_sys(ml_dev, ml_buf + i * PG, n, NULL); break;
		}
	}
	return NULL;
}
static long vm_kb(const char *key)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256]; long v = -1;
	while (f && fgets(line, sizeof line, f))
		if (!strncmp(line, key, strlen(key))) v = atol(line + strlen(key));
	if (f) fclose(f);
	return v;
}
static void sc_mlockall(int round)
{
	ml_dev = mkdev(1024, 1, 0);
	ml_buf = amap(ml_np);
	fill(ml_buf, ml_np, 8, 0);
	pthread_t th;
	pthread_create(&th, NULL, ml_mig, NULL);
	double worst_l = 0, worst_u = 0;
	long locked = 0;
	for (int k = 0; k < 6; k++) {
		double t0 = hunt_now();
		if (mlockall(MCL_CURRENT | MCL_FUTURE) && errno != EAGAIN && errno != ENOMEM) FAIL("mlockall %d", errno);
		double t1 = hunt_now();
		long l = vm_kb("VmLck:");
		if (l > locked) locked = l;
		for (size_t i = 0; i < ml_np; i++)
			if (page_is(ml_buf + i * PG, 8, i) != 1) FAIL("after mlockall: page %zu is %s", i, what(page_is(ml_buf + i * PG, 8, i)));
		double t2 = hunt_now();
		if (munlockall()) FAIL("munlockall %d", errno);
		double t3 = hunt_now();
		if (t1 - t0 > worst_l) worst_l = t1 - t0;
		if (t3 - t2 > worst_u) worst_u = t3 - t2;
		for (size_t i = 0; i < ml_np; i++)
			if (page_is(ml_buf + i * PG, 8, i) != 1) FAIL("after munlockall: page %zu is %s", i, what(page_is(ml_buf + i * PG, 8, i)));
	}
	atomic_store(&ml_stop, 1);
	pthread_join(th, NULL);
	uhmm_simdev_destroy(ml_dev);
	fprintf(stderr, "round %d: slowest mlockall %.2f s, munlockall %.2f s, up to %ld MiB locked (VmRSS now %ld MiB)\n",
		round, worst_l, worst_u, locked >> 10, vm_kb("VmRSS:") >> 10);
}

static const struct hunt_scenario scs[] = {
	{"freewrite", sc_freewrite}, {"heap", sc_heap}, {"spawn", sc_spawn},
	{"forkmig", sc_forkmig}, {"threxit", sc_threxit}, {"sigalrm", sc_sigalrm},
	{"freecover", sc_freecover}, {"mlockall", sc_mlockall},
};

int main(int argc, char **argv)
{
	return hunt_main(argc, argv, "HUNT4", scs, sizeof(scs) / sizeof(scs[0]), &seed, &g_round,
			 hunt_segv);
}
