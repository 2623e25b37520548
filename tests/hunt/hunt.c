// SPDX-License-Identifier: MIT
/*
 * Adversarial programs against the public API (issue 12 style hunt).
 * Not registered in CTest.  Usage: hunt SCENARIO ROUNDS
 * Each round runs in a forked child with alarm(); the parent reports hangs
 * (and dumps the child's stacks with gdb) and byte mismatches.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <spawn.h>
#include <uhmm/uhmm.h>
#include <uhmm/simdev.h>

#include "round.h"

#define PG 4096UL
static struct uhmm_simdev *dev, *dev2;
static unsigned seed;

#define FAIL(...) do { fprintf(stderr, "FAIL %s:%d: ", __func__, __LINE__); fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); _exit(1); } while (0)

static void fill(char *p, size_t np, unsigned tag)
{
	for (size_t i = 0; i < np * PG / 8; i++)
		((uint64_t *)p)[i] = ((uint64_t)tag << 40) ^ (i * 0x9E3779B97F4A7C15ull);
}

/* returns first bad page index or -1 */
static long check(const char *p, size_t np, unsigned tag, size_t pgoff)
{
	for (size_t i = 0; i < np * PG / 8; i++) {
		uint64_t want = ((uint64_t)tag << 40) ^ ((i + pgoff * PG / 8) * 0x9E3779B97F4A7C15ull);
		if (((const uint64_t *)p)[i] != want)
			return (long)(i * 8 / PG);
	}
	return -1;
}

static long check_zero(const char *p, size_t np)
{
	for (size_t i = 0; i < np * PG; i++)
		if (p[i])
			return (long)(i / PG);
	return -1;
}

static void mk(size_t cap)
{
	struct uhmm_simdev_config c = { .capacity_pages = cap, .threads = 2 };
	int r = uhmm_simdev_create(&c, &dev);
	if (r) FAIL("create %d", r);
}

static void to_dev(void *p, size_t np)
{
	struct uhmm_simdev_stats st = {0};
	int r = uhmm_simdev_migrate_to_dev(dev, p, np, &st);
	if (r) FAIL("migrate_to_dev %d %s", r, uhmm_last_error());
	if (st.cpages != np) FAIL("cpages %lu/%zu", (unsigned long)st.cpages, np);
}

static void *amap(size_t np)
{
	void *p = mmap(NULL, np * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) FAIL("mmap");
	return p;
}

/* ---------------- A: mremap of device-resident ranges ---------------- */
static void sc_mremap(int round)
{
	size_t np = 64;
	int op = round % 6;
	mk(1024);
	char *p = amap(np + 64);
	munmap(p + np * PG, 64 * PG);	/* room to grow maybe */
	if (round & 8) madvise(p, np * PG, MADV_HUGEPAGE);
	fill(p, np, 7);
	to_dev(p, np);
	char *q = NULL;
	long b;
	switch (op) {
	case 0: /* grow maymove */
		q = mremap(p, np * PG, 2 * np * PG, MREMAP_MAYMOVE);
		if (q == MAP_FAILED) FAIL("mremap0 %d", errno);
		if ((b = check(q, np, 7, 0)) >= 0) FAIL("grow: page %ld lost", b);
		if ((b = check_zero(q + np * PG, np)) >= 0) FAIL("grow: new page %ld not zero", b);
		break;
	case 1: /* shrink */
		q = mremap(p, np * PG, np / 2 * PG, 0);
		if (q == MAP_FAILED) FAIL("mremap1 %d", errno);
		if ((b = check(q, np / 2, 7, 0)) >= 0) FAIL("shrink: page %ld lost", b);
		break;
	case 2: { /* move fixed */
		char *t = amap(np);
		q = mremap(p, np * PG, np * PG, MREMAP_MAYMOVE | MREMAP_FIXED, t);
		if (q == MAP_FAILED) FAIL("mremap2 %d", errno);
		if ((b = check(q, np, 7, 0)) >= 0) FAIL("move: page %ld lost", b);
		break; }
	case 3: /* dontunmap */
		q = mremap(p, np * PG, np * PG, MREMAP_MAYMOVE | MREMAP_DONTUNMAP);
		if (q == MAP_FAILED) FAIL("mremap3 %d", errno);
		if ((b = check(q, np, 7, 0)) >= 0) FAIL("dontunmap: new page %ld lost", b);
		if ((b = check_zero(p, np)) >= 0) FAIL("dontunmap: old page %ld not zero", b);
		break;
	case 4: { /* move, then device read at new address, then migrate again */
		q = mremap(p, np * PG, np * PG, MREMAP_MAYMOVE | MREMAP_FIXED, p + 128 * PG);
		if (q == MAP_FAILED) FAIL("mremap4 %d", errno);
		char *buf = malloc(np * PG);
		int r = uhmm_simdev_read(dev, q, np, buf, NULL);
		if (r) FAIL("read after move %d", r);
		if ((b = check(buf, np, 7, 0)) >= 0) FAIL("move: device read page %ld bad", b);
		to_dev(q, np);
		if ((b = check(q, np, 7, 0)) >= 0) FAIL("move+remigrate: page %ld lost", b);
		free(buf);
		break; }
	case 5: /* shrink from the front by moving the tail */
		q = mremap(p + np / 2 * PG, np / 2 * PG, np / 2 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, p + 256 * PG);
		if (q == MAP_FAILED) FAIL("mremap5 %d", errno);
		if ((b = check(q, np / 2, 7, np / 2)) >= 0) FAIL("tail move: page %ld lost", b);
		if ((b = check(p, np / 2, 7, 0)) >= 0) FAIL("tail move: head page %ld lost", b);
		break;
	}
	uhmm_simdev_destroy(dev);
}

/* ---------------- B: fork while migrations run ---------------- */
static char *fbuf; static size_t fnp = 128;
static volatile int stop;
static void *migrator(void *a)
{
	(void)a;
	while (!stop) {
		uhmm_simdev_migrate_to_dev(dev, fbuf, fnp, NULL);
		uhmm_simdev_migrate_to_sys(dev, fbuf, fnp, NULL);
		uhmm_simdev_migrate_to_dev(dev, fbuf + PG * 8, 16, NULL);
	}
	return NULL;
}
static void sc_fork(int round)
{
	mk(1024);
	fbuf = amap(fnp);
	if (round & 1) madvise(fbuf, fnp * PG, MADV_HUGEPAGE);
	fill(fbuf, fnp, 3);
	pthread_t th;
	pthread_create(&th, NULL, migrator, NULL);
	for (int k = 0; k < 4; k++) {
		pid_t c;
		int how = (round + k) % 3;
		if (how == 0) c = fork();
		else if (how == 1) c = vfork();
		else {
			char *argv[] = { "/bin/true", NULL };
			if (posix_spawn(&c, "/bin/true", NULL, NULL, argv, NULL)) FAIL("spawn");
			goto waitc;
		}
		if (c == 0) {
			if (how == 1) _exit(check(fbuf, fnp, 3, 0) >= 0 ? 3 : 0);
			long b = check(fbuf, fnp, 3, 0);
			if (b >= 0) { fprintf(stderr, "child: page %ld bad\n", b); _exit(2); }
			fill(fbuf, fnp, 9);
			if ((b = check(fbuf, fnp, 9, 0)) >= 0) _exit(4);
			_exit(0);
		}
waitc:;
		int st;
		if (waitpid(c, &st, 0) != c) FAIL("waitpid");
		if (!WIFEXITED(st) || WEXITSTATUS(st)) FAIL("child status %x (how %d)", st, how);
		long b = check(fbuf, fnp, 3, 0);
		if (b >= 0) FAIL("parent after fork: page %ld bad", b);
	}
	stop = 1;
	pthread_join(th, NULL);
	long b = check(fbuf, fnp, 3, 0);
	if (b >= 0) FAIL("end: page %ld bad", b);
	uhmm_simdev_destroy(dev);
}

/* ---------------- C: madvise on device pages ---------------- */
static void sc_madv(int round)
{
	size_t np = 64;
	int op = round % 6;
	mk(1024);
	char *p = amap(np);
	fill(p, np, 5);
	to_dev(p, np);
	long b;
	switch (op) {
	case 0: case 1: { /* DONTFORK / WIPEONFORK */
		if (madvise(p, np * PG, op == 0 ? MADV_DONTFORK : MADV_WIPEONFORK)) FAIL("madvise %d", errno);
		pid_t c = fork();
		if (c == 0) {
			if (op == 1) _exit(check_zero(p, np) >= 0 ? 2 : 0);
			/* DONTFORK: not mapped in the child */
			unsigned char v;
			_exit(mincore(p, PG, &v) == 0 ? 3 : 0);
		}
		int st; waitpid(c, &st, 0);
		if (!WIFEXITED(st) || WEXITSTATUS(st)) FAIL("child %x op %d", st, op);
		if ((b = check(p, np, 5, 0)) >= 0) FAIL("parent page %ld lost op %d", b, op);
		break; }
	case 2: { /* MADV_FREE: each page either data or zero */
		if (madvise(p, np * PG, MADV_FREE)) FAIL("free %d", errno);
		for (size_t i = 0; i < np; i++)
			if (check(p + i * PG, 1, 5, i) >= 0 && check_zero(p + i * PG, 1) >= 0)
				FAIL("MADV_FREE page %zu neither data nor zero", i);
		break; }
	case 3: case 4: /* COLD / PAGEOUT */
		if (madvise(p, np * PG, op == 3 ? MADV_COLD : MADV_PAGEOUT) && errno != EINVAL) FAIL("cold %d", errno);
		if ((b = check(p, np, 5, 0)) >= 0) FAIL("op %d page %ld lost", op, b);
		break;
	case 5: /* MADV_DONTNEED half, the other half must stay */
		if (madvise(p, np / 2 * PG, MADV_DONTNEED)) FAIL("dontneed");
		if ((b = check_zero(p, np / 2)) >= 0) FAIL("dontneed page %ld not zero", b);
		if ((b = check(p + np / 2 * PG, np / 2, 5, np / 2)) >= 0) FAIL("kept half page %ld lost", b);
		break;
	}
	uhmm_simdev_destroy(dev);
}

/* ---------------- D: mprotect over device pages ---------------- */
static void sc_mprot(int round)
{
	size_t np = 64;
	mk(1024);
	char *p = amap(np);
	fill(p, np, 6);
	to_dev(p, np);
	long b;
	if (mprotect(p, np / 2 * PG, PROT_READ)) FAIL("mprot");
	if (round & 1) {
		char tmp[PG];
		int r = uhmm_simdev_write(dev, p, 1, tmp, NULL);
		if (r != -EPERM) FAIL("device write to RO: %d", r);
	}
	if ((b = check(p, np / 2, 6, 0)) >= 0) FAIL("RO half page %ld lost", b);
	if (mprotect(p + np / 2 * PG, np / 2 * PG, PROT_NONE)) FAIL("mprot2");
	if (mprotect(p, np * PG, PROT_READ | PROT_WRITE)) FAIL("mprot3");
	if ((b = check(p, np, 6, 0)) >= 0) FAIL("page %ld lost", b);
	fill(p, np, 8);
	to_dev(p, np);
	if (mprotect(p, np * PG, PROT_NONE)) FAIL("mprot4");
	if (mprotect(p, np * PG, PROT_READ)) FAIL("mprot5");
	if ((b = check(p, np, 8, 0)) >= 0) FAIL("page %ld lost after NONE->READ", b);
	uhmm_simdev_destroy(dev);
}

/* ---------------- E: munmap middle during compute ---------------- */
static char *ebuf; static size_t enp = 256;
static void kern_read(struct uhmm_simdev_thread *t, size_t item, void *arg)
{
	(void)arg;
	for (size_t o = 0; o < PG; o += 512)
		(void)uhmm_simdev_load64(t, ebuf + item * PG + o);
}
static void *unmapper(void *a)
{
	(void)a;
	sched_yield();
	munmap(ebuf + 64 * PG, 64 * PG);
	return NULL;
}
static void sc_munmap_compute(int round)
{
	struct uhmm_simdev_config c = { .capacity_pages = 1024, .threads = 2,
		.policy = (round & 1) ? UHMM_SIMDEV_POLICY_MIGRATE : UHMM_SIMDEV_POLICY_MIRROR };
	if (uhmm_simdev_create(&c, &dev)) FAIL("create");
	ebuf = amap(enp);
	fill(ebuf, enp, 4);
	if (round & 2) to_dev(ebuf, enp);
	pthread_t th;
	pthread_create(&th, NULL, unmapper, NULL);
	int r = uhmm_simdev_launch(dev, enp, kern_read, NULL, NULL);
	pthread_join(th, NULL);
	if (r && r != -EFAULT) FAIL("launch %d", r);
	long b;
	if ((b = check(ebuf, 64, 4, 0)) >= 0) FAIL("head page %ld lost", b);
	if ((b = check(ebuf + 128 * PG, 128, 4, 128)) >= 0) FAIL("tail page %ld lost", b);
	r = uhmm_simdev_launch(dev, enp, kern_read, NULL, NULL);
	if (r != -EFAULT) FAIL("launch over hole %d", r);
	uhmm_simdev_destroy(dev);
}

/* ---------------- F: two devices, one range ---------------- */
static void sc_twodev(int round)
{
	size_t np = 64;
	mk(1024);
	struct uhmm_simdev_config c = { .capacity_pages = 1024, .threads = 1 };
	if (uhmm_simdev_create(&c, &dev2)) FAIL("create2");
	char *p = amap(np);
	fill(p, np, 11);
	to_dev(p, np);
	struct uhmm_simdev_stats st = {0};
	int r = uhmm_simdev_migrate_to_dev(dev2, p, np, &st);
	char *buf = malloc(np * PG);
	long b;
	if (uhmm_simdev_read(dev2, p, np, buf, NULL)) FAIL("read2");
	if ((b = check(buf, np, 11, 0)) >= 0) FAIL("dev2 read page %ld bad (r %d)", b, r);
	if (uhmm_simdev_read(dev, p, np, buf, NULL)) FAIL("read1");
	if ((b = check(buf, np, 11, 0)) >= 0) FAIL("dev1 read page %ld bad", b);
	if (round & 1) {
		uhmm_simdev_destroy(dev);
		dev = NULL;
	} else {
		uhmm_simdev_destroy(dev2);
		dev2 = NULL;
	}
	if ((b = check(p, np, 11, 0)) >= 0) FAIL("page %ld lost after destroy", b);
	uhmm_simdev_destroy(dev);
	uhmm_simdev_destroy(dev2);
	free(buf);
}

/* ---------------- G: destroy while CPU touches ---------------- */
static char *gbuf; static size_t gnp = 256;
static void *toucher(void *a)
{
	(void)a;
	long b = check(gbuf, gnp, 12, 0);
	return (void *)(intptr_t)(b + 1);
}
static void sc_destroy(int round)
{
	(void)round;
	mk(1024);
	gbuf = amap(gnp);
	fill(gbuf, gnp, 12);
	to_dev(gbuf, gnp);
	pthread_t th;
	pthread_create(&th, NULL, toucher, NULL);
	uhmm_simdev_destroy(dev);
	void *rv;
	pthread_join(th, &rv);
	if (rv) FAIL("toucher page %ld lost", (long)(intptr_t)rv - 1);
	long b;
	if ((b = check(gbuf, gnp, 12, 0)) >= 0) FAIL("page %ld lost", b);
}

/* ---------------- H: exit from another thread while migrating ------- */
static void *exiter(void *a)
{
	(void)a;
	for (volatile int i = 0; i < (int)(20000 * (1 + (seed % 7))); i++);
	exit(0);
}
static void sc_exit(int round)
{
	(void)round;
	mk(1024);
	fbuf = amap(fnp);
	fill(fbuf, fnp, 1);
	pthread_t th;
	pthread_create(&th, NULL, exiter, NULL);
	for (;;) {
		uhmm_simdev_migrate_to_dev(dev, fbuf, fnp, NULL);
		if (check(fbuf, fnp, 1, 0) >= 0) FAIL("lost");
	}
}

/* ---------------- I: brk shrink under device pages ---------------- */
static void sc_brk(int round)
{
	(void)round;
	mk(1024);
	char *cur = sbrk(0);
	uintptr_t al = ((uintptr_t)cur + PG - 1) & ~(PG - 1);
	if (sbrk(al - (uintptr_t)cur + 64 * PG) == (void *)-1) FAIL("sbrk");
	char *p = (char *)al;
	fill(p, 64, 13);
	to_dev(p, 64);
	long b;
	if (sbrk(-32 * (long)PG) == (void *)-1) FAIL("sbrk shrink");
	if ((b = check(p, 32, 13, 0)) >= 0) FAIL("head page %ld lost", b);
	if (sbrk(32 * PG) == (void *)-1) FAIL("sbrk grow");
	if ((b = check_zero(p + 32 * PG, 32)) >= 0) FAIL("regrown page %ld not zero", b);
	to_dev(p, 64);
	if ((b = check(p, 32, 13, 0)) >= 0) FAIL("head page %ld lost 2", b);
	uhmm_simdev_destroy(dev);
}

/* ---------------- J: shared mapping refused, data kept ---------------- */
static void sc_shared(int round)
{
	size_t np = 32;
	mk(1024);
	char *p = mmap(NULL, np * PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	fill(p, np, 14);
	int r = uhmm_simdev_migrate_to_dev(dev, p, np, NULL);
	if (r == 0) FAIL("shared migrated?");
	long b;
	if ((b = check(p, np, 14, 0)) >= 0) FAIL("page %ld lost (r %d)", b, r);
	/* mixed: private then shared adjacent */
	char *q = amap(2 * np);
	if (mmap(q + np * PG, np * PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED) FAIL("mmap fixed");
	fill(q, 2 * np, 15);
	r = uhmm_simdev_migrate_to_dev(dev, q, 2 * np, NULL);
	if ((b = check(q, 2 * np, 15, 0)) >= 0) FAIL("mixed page %ld lost (r %d)", b, r);
	(void)round;
	uhmm_simdev_destroy(dev);
}

/* ---------------- K: big range beyond the staging bound ------------- */
static void sc_big(int round)
{
	size_t np = (round & 1 ? 10 : 24) << 8;	/* 10 / 24 MiB */
	mk(np + 16);
	char *p = amap(np);
	if (round & 2) madvise(p, np * PG, MADV_HUGEPAGE);
	fill(p, np, 16);
	to_dev(p, np);
	long b;
	if ((b = check(p, np, 16, 0)) >= 0) FAIL("page %ld lost", b);
	to_dev(p, np);
	if (uhmm_simdev_migrate_to_sys(dev, p, np, NULL)) FAIL("to_sys");
	if ((b = check(p, np, 16, 0)) >= 0) FAIL("page %ld lost 2", b);
	uhmm_simdev_destroy(dev);
}

/* ---------------- L: pthread_cancel a migrating thread ---------------- */
static void *canc(void *a)
{
	(void)a;
	for (;;) {
		uhmm_simdev_migrate_to_dev(dev, fbuf, fnp, NULL);
		uhmm_simdev_migrate_to_sys(dev, fbuf, fnp, NULL);
		pthread_testcancel();
	}
	return NULL;
}
static void sc_cancel(int round)
{
	mk(1024);
	fbuf = amap(fnp);
	fill(fbuf, fnp, 17);
	pthread_t th;
	pthread_create(&th, NULL, canc, NULL);
	if (round & 1) {
		int t = pthread_setcanceltype(PTHREAD_CANCEL_DEFERRED, NULL); (void)t;
	}
	for (volatile int i = 0; i < 10000 * (1 + round % 13); i++);
	pthread_cancel(th);
	pthread_join(th, NULL);
	long b;
	if ((b = check(fbuf, fnp, 17, 0)) >= 0) FAIL("page %ld lost after cancel", b);
	uhmm_simdev_destroy(dev);
	if ((b = check(fbuf, fnp, 17, 0)) >= 0) FAIL("page %ld lost after destroy", b);
}

/* ---------------- M: longjmp out of a handler that touched device memory --- */
static sigjmp_buf jb; static char *mbuf;
static volatile long hbad = -1;
static void hnd(int s)
{
	(void)s;
	hbad = check(mbuf, 16, 18, 0);
	siglongjmp(jb, 1);
}
static void sc_longjmp(int round)
{
	mk(1024);
	mbuf = amap(16);
	fill(mbuf, 16, 18);
	signal(SIGUSR1, hnd);
	for (int k = 0; k < 20; k++) {
		to_dev(mbuf, 16);
		if (sigsetjmp(jb, 1) == 0) {
			if (round & 1) raise(SIGUSR1);
			else { struct timespec ts = {0, 1000}; pthread_kill(pthread_self(), SIGUSR1); nanosleep(&ts, NULL); }
		}
		if (hbad >= 0) FAIL("handler saw page %ld bad", hbad);
	}
	long b;
	if ((b = check(mbuf, 16, 18, 0)) >= 0) FAIL("page %ld lost", b);
	uhmm_simdev_destroy(dev);
}

/* ---------------- N: RLIMIT_AS hit during migration ---------------- */
static void sc_rlimit(int round)
{
	size_t np = 2048;
	mk(np + 16);
	char *p = amap(np);
	fill(p, np, 19);
	to_dev(p, np / 2);
	struct rlimit rl;
	/* current VM + a little */
	FILE *f = fopen("/proc/self/statm", "r"); unsigned long vm; if (fscanf(f, "%lu", &vm) != 1) FAIL("statm"); fclose(f);
	rl.rlim_cur = rl.rlim_max = vm * PG + (size_t)(round % 8) * 2 * 1024 * 1024;
	if (round & 8) { if (setrlimit(RLIMIT_MEMLOCK, &rl)) FAIL("setrlimit"); mlockall(MCL_CURRENT|MCL_FUTURE); }
	else if (setrlimit(RLIMIT_AS, &rl)) FAIL("setrlimit");
	int r1 = uhmm_simdev_migrate_to_dev(dev, p, np, NULL);
	int r2 = uhmm_simdev_migrate_to_sys(dev, p, np, NULL);
	long b;
	if ((b = check(p, np, 19, 0)) >= 0) FAIL("page %ld lost (r %d %d)", b, r1, r2);
	uhmm_simdev_destroy(dev);
}

/* ---------------- O: DONTNEED racing fault-back ---------------- */
static char *obuf;
static void *dn(void *a)
{
	(void)a;
	madvise(obuf, 32 * PG, MADV_DONTNEED);
	return NULL;
}
static void sc_dontneed(int round)
{
	(void)round;
	mk(1024);
	obuf = amap(64);
	for (int k = 0; k < 10; k++) {
		fill(obuf, 64, 20 + k);
		to_dev(obuf, 64);
		pthread_t th;
		pthread_create(&th, NULL, dn, NULL);
		long b = check(obuf + 32 * PG, 32, 20 + k, 32);
		pthread_join(th, NULL);
		if (b >= 0) FAIL("untouched half page %ld lost", b);
		for (size_t i = 0; i < 32; i++)
			if (check(obuf + i * PG, 1, 20 + k, i) >= 0 && check_zero(obuf + i * PG, 1) >= 0)
				FAIL("page %zu neither data nor zero", i);
	}
	uhmm_simdev_destroy(dev);
}

/* ---------------- P: stack memory ---------------- */
static void *stk(void *a)
{
	(void)a;
	char big[80 * 4096];
	char *p = (char *)(((uintptr_t)big + PG - 1) & ~(PG - 1));
	fill(p, 64, 21);
	struct uhmm_simdev_stats st = {0};
	int r = uhmm_simdev_migrate_to_dev(dev, p, 64, &st);
	long b = check(p, 64, 21, 0);
	if (b >= 0) FAIL("stack page %ld lost (r %d)", b, r);
	return NULL;
}
static void sc_stack(int round)
{
	(void)round;
	mk(1024);
	pthread_attr_t at; pthread_attr_init(&at); pthread_attr_setstacksize(&at, 1 << 20);
	pthread_t th; pthread_create(&th, &at, stk, NULL); pthread_join(th, NULL);
	uhmm_simdev_destroy(dev);
}

/* ---------------- Q: multiple uhmm users (mm_get twice) + fork child exits mid-migration ---- */
static void sc_childexit(int round)
{
	mk(1024);
	fbuf = amap(fnp);
	fill(fbuf, fnp, 22);
	to_dev(fbuf, fnp);
	pid_t c = fork();
	if (c == 0) {
		/* child: start migrating in a thread, exit from main */
		if (check(fbuf, 16, 22, 0) >= 0) _exit(2);
		pthread_t th; stop = 0;
		pthread_create(&th, NULL, migrator, NULL);
		for (volatile int i = 0; i < 5000 * (1 + round % 11); i++);
		exit(0);
	}
	int st; waitpid(c, &st, 0);
	if (!WIFEXITED(st) || WEXITSTATUS(st)) FAIL("child %x", st);
	long b;
	if ((b = check(fbuf, fnp, 22, 0)) >= 0) FAIL("parent page %ld lost", b);
	uhmm_simdev_destroy(dev);
}

static struct { const char *n; void (*f)(int); } scs[] = {
	{"mremap", sc_mremap}, {"fork", sc_fork}, {"madv", sc_madv}, {"mprot", sc_mprot},
	{"munmap_compute", sc_munmap_compute}, {"twodev", sc_twodev}, {"destroy", sc_destroy},
	{"exit", sc_exit}, {"brk", sc_brk}, {"shared", sc_shared}, {"big", sc_big},
	{"cancel", sc_cancel}, {"longjmp", sc_longjmp}, {"rlimit", sc_rlimit},
	{"dontneed", sc_dontneed}, {"stack", sc_stack}, {"childexit", sc_childexit},
};

int main(int argc, char **argv)
{
	if (argc < 3) { fprintf(stderr, "usage: hunt SCENARIO ROUNDS\n"); return 2; }
	int rounds = atoi(argv[2]), fails = 0, hangs = 0;
	unsigned to = argc > 3 ? atoi(argv[3]) : 60;
	void (*f)(int) = NULL;
	for (size_t i = 0; i < sizeof(scs) / sizeof(scs[0]); i++)
		if (!strcmp(scs[i].n, argv[1])) f = scs[i].f;
	if (!f) { fprintf(stderr, "unknown scenario\n"); return 2; }
	if (rounds == 0) {	/* in-process, for a debugger */
		f(argc > 4 ? atoi(argv[4]) : 0);
		return 0;
	}
	for (int r = 0; r < rounds; r++) {
		pid_t c = fork();
		if (c == 0) {
			seed = getpid();
			alarm(to);
			f(r);
			_exit(0);
		}
		int st;
		if (hunt_wait(c, r, to, 80, NULL, NULL, &st))
			hangs++;
		else if (WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM) { hangs++; fprintf(stderr, "round %d: alarm (hang)\n", r); }
		else if (!WIFEXITED(st) || WEXITSTATUS(st)) { fails++; fprintf(stderr, "round %d: status %x\n", r, st); }
	}
	printf("%s: %d rounds, %d failed, %d hung (UHMM_DISABLE=%s)\n", argv[1], rounds, fails, hangs,
	       getenv("UHMM_DISABLE") ? getenv("UHMM_DISABLE") : "");
	return fails || hangs;
}
