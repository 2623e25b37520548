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

static unsigned rnd_r(unsigned *s)
{
	*s = *s * 1103515245u + 12345u;
	return *s >> 8;
}
static unsigned rnd(void) { return rnd_r(&seed); }
static int envi(const char *n, int def) { const char *v = getenv(n); return v ? atoi(v) : def; }

static uint64_t word(unsigned tag, size_t pg, size_t w)
{
	return ((uint64_t)tag << 40) ^ ((pg * PG / 8 + w) * 0x9E3779B97F4A7C15ull);
}
static void fill(char *p, size_t np, unsigned tag, size_t pgoff)
{
	for (size_t i = 0; i < np; i++)
		for (size_t w = 0; w < PG / 8; w++)
			((uint64_t *)(p + i * PG))[w] = word(tag, pgoff + i, w);
}
/* 1 if page holds tag's data, 0 if all zero, -1 otherwise */
static int page_is(const char *p, unsigned tag, size_t pg)
{
	const uint64_t *q = (const uint64_t *)p;
	bool data = true, zero = true;
	for (size_t w = 0; w < PG / 8; w++) {
		if (q[w] != word(tag, pg, w)) data = false;
		if (q[w]) zero = false;
		if (!data && !zero) return -1;
	}
	return data ? 1 : 0;
}
static const char *what(int st) { return st == 1 ? "right" : st == 0 ? "zero" : "other data"; }

static struct uhmm_simdev *mkdev(size_t cap, unsigned threads, unsigned policy)
{
	struct uhmm_simdev *d;
	struct uhmm_simdev_config c = { .capacity_pages = cap, .threads = threads, .policy = policy };
	int r = uhmm_simdev_create(&c, &d);
	if (r) FAIL("create %d %s", r, uhmm_last_error());
	return d;
}

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
	int kind = envi("HUNT4_MIG", round % 4);
	int iters = envi("HUNT4_ITERS", 4000);
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

#include <execinfo.h>
static void segv(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	char b[200];
	int n = snprintf(b, sizeof b, "SIGNAL %d at %p (code %d) tid %ld\n", sig, si->si_addr, si->si_code, (long)syscall(SYS_gettid));
	if (write(2, b, (size_t)n)) {}
	void *bt[32];
	int k = backtrace(bt, 32);
	backtrace_symbols_fd(bt, k, 2);
	_exit(128 + sig);
}

static struct { const char *n; void (*f)(int); } scs[] = {
	{"freewrite", sc_freewrite},
};

int main(int argc, char **argv)
{
	if (argc < 3) { fprintf(stderr, "usage: hunt4 SCENARIO ROUNDS [TIMEOUT]\n"); return 2; }
	int rounds = atoi(argv[2]), fails = 0, hangs = 0;
	unsigned to = argc > 3 ? (unsigned)atoi(argv[3]) : 60;
	void (*f)(int) = NULL;
	for (size_t i = 0; i < sizeof(scs) / sizeof(scs[0]); i++)
		if (!strcmp(scs[i].n, argv[1])) f = scs[i].f;
	if (!f) { fprintf(stderr, "unknown scenario\n"); return 2; }
	if (rounds == 0) {	/* in-process, for a debugger */
		seed = (unsigned)getpid();
		g_round = argc > 4 ? atoi(argv[4]) : 0;
		f(g_round);
		return 0;
	}
	int first = envi("HUNT4_FIRST", 0);
	int step = envi("HUNT4_STEP", 1);
	for (int r = first; r < first + rounds * step; r += step) {
		fflush(stdout);
		fflush(stderr);
		pid_t c = fork();
		if (c == 0) {
			seed = (unsigned)getpid() ^ (unsigned)r * 7919u;
			g_round = r;
			struct sigaction sa = { .sa_sigaction = segv, .sa_flags = SA_SIGINFO };
			sigaction(SIGSEGV, &sa, NULL);
			sigaction(SIGBUS, &sa, NULL);
			alarm(to);
			f(r);
			_exit(0);
		}
		int st;
		if (hunt_wait(c, r, to, 1500, NULL, NULL, &st))
			hangs++;
		else if (WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM) { hangs++; fprintf(stderr, "round %d: alarm (hang)\n", r); }
		else if (!WIFEXITED(st) || WEXITSTATUS(st)) { fails++; fprintf(stderr, "round %d: status %x\n", r, st); }
	}
	printf("%s: %d rounds, %d failed, %d hung (UHMM_DISABLE=%s)\n", argv[1], rounds, fails, hangs,
	       getenv("UHMM_DISABLE") ? getenv("UHMM_DISABLE") : "");
	return fails || hangs;
}
