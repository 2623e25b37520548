// SPDX-License-Identifier: MIT
/*
 * Adversarial programs against the public API, round 2 (tests/hunt/FINDINGS.md).
 * Not registered in CTest.  Usage: hunt2 SCENARIO ROUNDS [TIMEOUT_S]
 * Each round runs in a forked child with alarm(); the parent reports hangs
 * (and dumps the child's stacks with gdb), byte mismatches and, for the
 * cgroup scenario, OOM kills separately (an OOM kill is the kernel's answer).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uhmm/uhmm.h>
#include <uhmm/simdev.h>

#include "round.h"

#define PG 4096UL
static unsigned seed;

#define FAIL(...) do { fprintf(stderr, "FAIL %s:%d: ", __func__, __LINE__); fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); _exit(1); } while (0)

static unsigned rnd(void)
{
	seed = seed * 1103515245u + 12345u;
	return seed >> 8;
}

static void fill(char *p, size_t np, unsigned tag, size_t pgoff)
{
	for (size_t i = 0; i < np * PG / 8; i++)
		((uint64_t *)p)[i] = ((uint64_t)tag << 40) ^ ((i + pgoff * PG / 8) * 0x9E3779B97F4A7C15ull);
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

static struct uhmm_simdev *mkdev(size_t cap, unsigned threads, unsigned policy)
{
	struct uhmm_simdev *d;
	struct uhmm_simdev_config c = { .capacity_pages = cap, .threads = threads, .policy = policy };
	int r = uhmm_simdev_create(&c, &d);
	if (r) FAIL("create %d %s", r, uhmm_last_error());
	return d;
}

static void to_dev(struct uhmm_simdev *d, void *p, size_t np)
{
	struct uhmm_simdev_stats st = {0};
	int r = uhmm_simdev_migrate_to_dev(d, p, np, &st);
	if (r) FAIL("migrate_to_dev %d %s", r, uhmm_last_error());
	if (st.cpages != np) FAIL("cpages %lu/%zu", (unsigned long)st.cpages, np);
}

static void *amap(size_t np)
{
	void *p = mmap(NULL, np * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) FAIL("mmap %d", errno);
	return p;
}

/* device-resident pages according to the device (no fault) */
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

/* ================= 1: memory cgroup limit ================= */
/* set by the parent per round (cgroup v1 memory controller; v2 has none here) */
static char cg_dir[600];

static int cg_write(const char *file, const char *val)
{
	char path[640];
	snprintf(path, sizeof path, "%s/%s", cg_dir, file);
	int fd = open(path, O_WRONLY);
	if (fd < 0) return -errno;
	ssize_t w = write(fd, val, strlen(val));
	int e = w < 0 ? -errno : 0;
	close(fd);
	return e;
}

static unsigned long cg_read(const char *file)
{
	char path[640], b[64] = "";
	snprintf(path, sizeof path, "%s/%s", cg_dir, file);
	int fd = open(path, O_RDONLY);
	if (fd < 0) return 0;
	ssize_t n = read(fd, b, sizeof b - 1);
	close(fd);
	if (n > 0) b[n] = 0;
	return strtoul(b, NULL, 10);
}

static char *cbuf; static size_t cnp;
static void k_inc(struct uhmm_simdev_thread *t, size_t item, void *arg)
{
	(void)arg;
	uint64_t *w = (uint64_t *)(cbuf + item * PG);
	for (size_t o = 0; o < PG / 8; o += 64)
		uhmm_simdev_store64(t, &w[o], uhmm_simdev_load64(t, &w[o]) + 1);
}

/*
 * HUNT2_SIDE=1, rounds with OOM kill disabled: once the memory waiter waits
 * in the cgroup (its wchan), a side thread munmaps a registered buffer
 * with device pages, mremaps another, migrates a third home explicitly,
 * and then looks whether the limit is still on: those calls must not wait
 * for memory (the worker stays free; the explicit migration says -ENOMEM
 * or moves what it can).  A round where the limit was lifted first proves
 * nothing either way and is counted apart.
 */
#include <dirent.h>
/* The memory waiter's wchan, opened once before the limit (no allocation while polling). */
static int memwait_wchan_fd = -1;
static bool memwait_in_cgroup(void)
{
	char b[64];
	ssize_t n;

	if (memwait_wchan_fd < 0) {
		DIR *dir = opendir("/proc/self/task");
		struct dirent *de;

		while (dir && (de = readdir(dir)) && memwait_wchan_fd < 0) {
			char path[300];
			int fd;

			if (de->d_name[0] == '.') continue;
			snprintf(path, sizeof path, "/proc/self/task/%s/comm", de->d_name);
			fd = open(path, O_RDONLY);
			if (fd < 0) continue;
			n = read(fd, b, sizeof b - 1);
			close(fd);
			if (n <= 0 || strncmp(b, "uhmm-memwait", 12)) continue;
			snprintf(path, sizeof path, "/proc/self/task/%s/wchan", de->d_name);
			memwait_wchan_fd = open(path, O_RDONLY);
		}
		if (dir) closedir(dir);
		if (memwait_wchan_fd < 0) return false;
	}
	n = pread(memwait_wchan_fd, b, sizeof b - 1, 0);
	b[n > 0 ? n : 0] = 0;
	return strstr(b, "mem_cgroup_oom") != NULL;
}

static struct side {
	struct uhmm_simdev *d;
	char *b, *dd, *c;	/* munmap, mremap, migrate home: 256, 256, 64 pages */
	bool seen, limited, waiting;
	int r_munmap, r_mremap, r_mig;
} side;

static sem_t side_go;

static void *side_main(void *arg)
{
	(void)arg;
	/* Its stack, its malloc arena (opendir) and /proc reads touched before the limit. */
	(void)memwait_in_cgroup();
	sem_wait(&side_go);
	for (int k = 0; k < 20000 && !(side.seen = memwait_in_cgroup()); k++) {
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
	}
	if (!side.seen)
		return NULL;
	side.r_munmap = munmap(side.b, 256 * PG) ? -errno : 0;
	void *nd = mremap(side.dd, 256 * PG, 256 * PG, MREMAP_MAYMOVE);
	side.r_mremap = nd == MAP_FAILED ? -errno : 0;
	if (nd != MAP_FAILED && check(nd, 256, 43, 0) >= 0) FAIL("side: mremapped data bad");
	if (nd != MAP_FAILED) munmap(nd, 256 * PG);
	side.r_mig = uhmm_simdev_migrate_to_sys(side.d, side.c, 64, NULL);
	side.limited = cg_read("memory.limit_in_bytes") < (1ul << 60);
	side.waiting = memwait_in_cgroup();
	return NULL;
}

static void sc_cgroup(int round)
{
	char pid[32];
	snprintf(pid, sizeof pid, "%d", getpid());
	if (cg_write("cgroup.procs", pid)) FAIL("cannot enter %s", cg_dir);
	cnp = (round & 1) ? 4096 : 2048;	/* 16 / 8 MiB */
	unsigned policy = (round & 2) ? UHMM_SIMDEV_POLICY_MIGRATE : UHMM_SIMDEV_POLICY_MIRROR;
	struct uhmm_simdev *d = mkdev(cnp + 64, 2, policy);
	cbuf = amap(cnp);
	if (round & 4) madvise(cbuf, cnp * PG, MADV_HUGEPAGE);
	fill(cbuf, cnp, 31, 0);
	to_dev(d, cbuf, cnp / 2);	/* half device-resident before the limit */
	bool with_side = getenv("HUNT2_SIDE") && (round & 8);
	pthread_t st;
	if (with_side) {
		side.d = d;
		side.b = amap(256); fill(side.b, 256, 42, 0);
		to_dev(d, side.b, 256);
		if (uhmm_simdev_migrate_to_sys(d, side.b, 128, NULL) < 0) FAIL("side to_sys");
		side.dd = amap(256); fill(side.dd, 256, 43, 0);
		to_dev(d, side.dd, 256);
		if (uhmm_simdev_migrate_to_sys(d, side.dd, 256, NULL) < 0) FAIL("side to_sys");
		side.c = amap(64); fill(side.c, 64, 44, 0);
		to_dev(d, side.c, 64);
		sem_init(&side_go, 0, 0);
		if (pthread_create(&st, NULL, side_main, NULL)) FAIL("side thread");
	}
	unsigned long use = cg_read("memory.usage_in_bytes");
	size_t slack = (size_t)(round % 8) << 22;	/* 0..28 MiB above usage */
	char lim[32];
	snprintf(lim, sizeof lim, "%lu", use + slack);
	/* rounds 8..15: no OOM kill: charges from system calls fail with ENOMEM,
	 * user faults wait (the parent lifts the limit after 3 s) */
	if ((round & 8) && cg_write("memory.oom_control", "1")) FAIL("oom_kill_disable");
	int e = cg_write("memory.limit_in_bytes", lim);
	if (e) { fprintf(stderr, "round %d: limit %s refused %d\n", round, lim, e); }
	fprintf(stderr, "round %d: limit usage+%zu MiB: to_dev", round, slack >> 20);
	int r1 = uhmm_simdev_migrate_to_dev(d, cbuf, cnp, NULL);
	fprintf(stderr, " %d, launch", r1);
	int r2 = uhmm_simdev_launch(d, cnp, k_inc, NULL, NULL);
	fprintf(stderr, " %d, to_sys", r2);
	int r3 = uhmm_simdev_migrate_to_sys(d, cbuf, cnp / 2, NULL);
	fprintf(stderr, " %d, CPU check\n", r3);
	if (with_side) sem_post(&side_go);
	/* CPU faults back the rest, checking every byte (+1 where the kernel ran) */
	for (size_t i = 0; i < cnp; i++) {
		uint64_t *w = (uint64_t *)(cbuf + i * PG);
		for (size_t o = 0; o < PG / 8; o++) {
			uint64_t want = ((uint64_t)31 << 40) ^ ((i * PG / 8 + o) * 0x9E3779B97F4A7C15ull);
			if (r2 == 0 && o % 64 == 0) want++;
			if (w[o] != want) {
				if (r2 && o % 64 == 0 && w[o] == want + 1) continue; /* a failed launch may have run part */
				FAIL("page %zu word %zu bad (r %d %d %d, limit %s)", i, o, r1, r2, r3, lim);
			}
		}
	}
	if (with_side) {
		pthread_join(st, NULL);
		if (check(side.c, 64, 44, 0) >= 0) FAIL("side: migrated-home buffer bad");
		fprintf(stderr, "round %d: side: %s munmap %d, mremap %d, to_sys %d, limit %s, "
			"waiter %s\n", round, side.seen ? "while the waiter waited:" : "waiter never seen",
			side.r_munmap, side.r_mremap, side.r_mig, side.limited ? "still on" : "lifted",
			side.waiting ? "still waiting" : "done");
	}
	fprintf(stderr, "round %d: done, failcnt %lu\n", round, cg_read("memory.failcnt"));
	uhmm_simdev_destroy(d);
}

/* ================= 2: two independent uhmm users ================= */
struct user {
	const char *name;
	char *own; size_t own_np; unsigned tag;
	char *other; size_t other_np;	/* the other user's buffer (overlap) */
	struct uhmm_simdev *_Atomic dev;
	struct uhmm_interval_notifier mni, mni2;	/* own buffer; the other user's (overlap) */
	atomic_ulong inv;
	int iters;
};
static bool tu_inv(struct uhmm_interval_notifier *mni, const struct uhmm_notifier_range *r, unsigned long seq)
{
	(void)r;
	struct user *u = (struct user *)((char *)mni - offsetof(struct user, mni));
	uhmm_interval_set_seq(mni, seq);
	atomic_fetch_add(&u->inv, 1);
	return true;
}
static bool tu_inv2(struct uhmm_interval_notifier *mni, const struct uhmm_notifier_range *r, unsigned long seq)
{
	(void)r;
	struct user *u = (struct user *)((char *)mni - offsetof(struct user, mni2));
	uhmm_interval_set_seq(mni, seq);
	atomic_fetch_add(&u->inv, 1);
	return true;
}
static const struct uhmm_interval_notifier_ops tu_ops = { .invalidate = tu_inv };
static const struct uhmm_interval_notifier_ops tu_ops2 = { .invalidate = tu_inv2 };

static void *tu_user(void *a)
{
	struct user *u = a;
	for (int it = 0; it < u->iters; it++) {
		struct uhmm_mm *mm;
		int r = uhmm_mm_get(&mm);
		if (r) FAIL("%s mm_get %d", u->name, r);
		struct uhmm_simdev *d = mkdev(1024, 1 + (rnd() & 1), rnd() & 1);
		atomic_store(&u->dev, d);
		memset(&u->mni, 0, sizeof u->mni);
		bool ins = rnd() & 1;
		if (ins && (r = uhmm_interval_notifier_insert(&u->mni, mm, (uintptr_t)u->own, u->own_np * PG, &tu_ops)))
			FAIL("%s insert %d", u->name, r);
		memset(&u->mni2, 0, sizeof u->mni2);
		bool ins2 = rnd() & 1;
		if (ins2 && (r = uhmm_interval_notifier_insert(&u->mni2, mm, (uintptr_t)u->other + PG * (rnd() % 8), u->other_np * PG / 2, &tu_ops2)))
			FAIL("%s insert2 %d", u->name, r);
		int ops = 1 + rnd() % 6;
		for (int k = 0; k < ops; k++) {
			size_t off = rnd() % u->own_np, n = 1 + rnd() % (u->own_np - off);
			switch (rnd() % 5) {
			case 0: case 1:
				r = uhmm_simdev_migrate_to_dev(d, u->own + off * PG, n, NULL);
				break;
			case 2: {	/* the other user's buffer too */
				size_t o2 = rnd() % u->other_np, n2 = 1 + rnd() % (u->other_np - o2);
				r = uhmm_simdev_migrate_to_dev(d, u->other + o2 * PG, n2, NULL);
				break; }
			case 3: {
				char *b = malloc(n * PG);
				r = uhmm_simdev_read(d, u->own + off * PG, n, b, NULL);
				if (r == 0 && check(b, n, u->tag, off) >= 0) FAIL("%s device read bad", u->name);
				free(b);
				break; }
			case 4:
				r = uhmm_simdev_migrate_to_sys(d, u->own + off * PG, n, NULL);
				break;
			}
			(void)r;
		}
		if (ins && (rnd() & 1)) uhmm_interval_notifier_remove(&u->mni);
		if (rnd() & 1) {
			long b = check(u->own, u->own_np, u->tag, 0);
			if (b >= 0) FAIL("%s own page %ld bad", u->name, b);
		}
		atomic_store(&u->dev, NULL);
		uhmm_simdev_destroy(d);
		if (ins) uhmm_interval_notifier_remove(&u->mni);
		if (ins2 && (rnd() & 1)) uhmm_interval_notifier_remove(&u->mni2);
		uhmm_mm_put(mm);
		if (ins2) uhmm_interval_notifier_remove(&u->mni2);	/* maybe after the put: a no-op if teardown released it */
	}
	return NULL;
}

static void sc_twousers(int round)
{
	struct user L = { .name = "lib", .own_np = 96, .tag = 41, .iters = 6 + round % 5 };
	struct user A = { .name = "app", .own_np = 128, .tag = 42, .iters = 4 + round % 7 };
	L.own = amap(L.own_np); A.own = amap(A.own_np);
	fill(L.own, L.own_np, L.tag, 0); fill(A.own, A.own_np, A.tag, 0);
	L.other = A.own; L.other_np = A.own_np;
	A.other = L.own; A.other_np = L.own_np;
	struct uhmm_mm *hold = NULL;
	if (round & 1) uhmm_mm_get(&hold);	/* sometimes a third long-lived reference */
	pthread_t tl, ta;
	pthread_create(&tl, NULL, tu_user, &L);
	pthread_create(&ta, NULL, tu_user, &A);
	pthread_join(tl, NULL);
	pthread_join(ta, NULL);
	long b;
	if ((b = check(L.own, L.own_np, L.tag, 0)) >= 0) FAIL("lib page %ld bad at end", b);
	if ((b = check(A.own, A.own_np, A.tag, 0)) >= 0) FAIL("app page %ld bad at end", b);
	if (hold) {
		struct uhmm_mm_stats s;
		if (uhmm_mm_stats(hold, &s)) FAIL("stats");
		if (s.device_pages || s.pools || s.notifiers)
			FAIL("after both users left: %lu device pages, %lu pools, %lu notifiers",
			     (unsigned long)s.device_pages, (unsigned long)s.pools, (unsigned long)s.notifiers);
		uhmm_mm_put(hold);
	}
	/* the context must come back cleanly */
	struct uhmm_mm *mm;
	if (uhmm_mm_get(&mm)) FAIL("mm_get after");
	struct uhmm_simdev *d = mkdev(256, 1, 0);
	to_dev(d, L.own, 32);
	if ((b = check(L.own, 32, L.tag, 0)) >= 0) FAIL("after: page %ld bad", b);
	uhmm_simdev_destroy(d);
	uhmm_mm_put(mm);
}

/* ================= 3: bare public-API mirror ================= */
#define MNP 64
struct mirror {
	struct uhmm_interval_notifier mni;
	pthread_mutex_t lock;
	uintptr_t start;
	uint64_t pt[MNP];
	unsigned long faults, invs;
};
static struct mirror M = { .lock = PTHREAD_MUTEX_INITIALIZER };
static pthread_rwlock_t m_pause = PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP;	/* a writer must not starve */
static atomic_int m_stop;
static bool m_inv(struct uhmm_interval_notifier *mni, const struct uhmm_notifier_range *r, unsigned long seq)
{
	struct mirror *m = (struct mirror *)((char *)mni - offsetof(struct mirror, mni));
	pthread_mutex_lock(&m->lock);
	uhmm_interval_set_seq(mni, seq);
	for (size_t i = 0; i < MNP; i++) {
		uintptr_t a = m->start + i * PG;
		if (a >= r->start && a < r->end) m->pt[i] = 0;
	}
	m->invs++;
	pthread_mutex_unlock(&m->lock);
	return true;
}
static const struct uhmm_interval_notifier_ops m_ops = { .invalidate = m_inv };

static int m_fault(size_t idx, size_t n, bool write)
{
	uint64_t pfns[MNP];
	struct uhmm_range rg = { .notifier = &M.mni, .start = M.start + idx * PG, .end = M.start + (idx + n) * PG,
		.hmm_pfns = pfns, .default_flags = UHMM_PFN_REQ_FAULT | (write ? UHMM_PFN_REQ_WRITE : 0) };
	for (;;) {
		rg.notifier_seq = uhmm_interval_read_begin(&M.mni);
		int r = uhmm_range_fault(&rg);
		if (r == -EBUSY) continue;
		if (r) return r;
		pthread_mutex_lock(&M.lock);
		if (!uhmm_interval_read_retry(&M.mni, rg.notifier_seq)) break;
		pthread_mutex_unlock(&M.lock);
	}
	memcpy(&M.pt[idx], pfns, n * sizeof pfns[0]);
	M.faults++;
	pthread_mutex_unlock(&M.lock);
	return 0;
}

static void *m_faulter(void *a)
{
	(void)a;
	unsigned s = (unsigned)(uintptr_t)pthread_self();
	while (!atomic_load(&m_stop)) {
		s = s * 1103515245u + 12345u;
		size_t idx = (s >> 8) % MNP, n = 1 + (s >> 20) % (MNP - idx < 8 ? MNP - idx : 8);
		pthread_rwlock_rdlock(&m_pause);
		int r = m_fault(idx, n, (s >> 4) & 1);
		pthread_rwlock_unlock(&m_pause);
		if (r && r != -EFAULT && r != -EPERM) FAIL("range fault %d %s", r, uhmm_last_error());
	}
	return NULL;
}

/* mirror entries must agree with a fresh snapshot (faulters paused) */
static void m_verify(const char *what)
{
	uint64_t pfns[MNP];
	struct uhmm_range rg = { .notifier = &M.mni, .start = M.start, .end = M.start + MNP * PG,
		.hmm_pfns = pfns, .default_flags = 0 };
	for (;;) {
		rg.notifier_seq = uhmm_interval_read_begin(&M.mni);
		int r = uhmm_range_fault(&rg);
		if (r == -EBUSY) continue;
		if (r) FAIL("snapshot %d", r);
		pthread_mutex_lock(&M.lock);
		if (!uhmm_interval_read_retry(&M.mni, rg.notifier_seq)) break;
		pthread_mutex_unlock(&M.lock);
	}
	for (size_t i = 0; i < MNP; i++) {
		uint64_t m = M.pt[i], f = pfns[i];
		if (!(m & UHMM_PFN_VALID)) continue;
		if (!(f & UHMM_PFN_VALID) || (f & UHMM_PFN_ERROR) ||
		    ((m ^ f) & UHMM_PFN_NUMBER_MASK) || ((m & UHMM_PFN_WRITE) && !(f & UHMM_PFN_WRITE)))
			FAIL("after %s: page %zu mirror %#llx, fresh %#llx (stale translation)", what, i,
			     (unsigned long long)m, (unsigned long long)f);
	}
	pthread_mutex_unlock(&M.lock);
}

static void sc_mirror(int round)
{
	struct uhmm_mm *mm;
	if (uhmm_mm_get(&mm)) FAIL("mm_get");
	char *p = amap(MNP), *scratch = amap(MNP);
	M.start = (uintptr_t)p;
	fill(p, MNP, 51, 0);
	if (uhmm_interval_notifier_insert(&M.mni, mm, M.start, MNP * PG, &m_ops)) FAIL("insert");
	pthread_t th[2];
	for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, m_faulter, NULL);
	static const char *names[] = { "munmap", "mremap", "mprotect", "dontneed", "fork", "mmap_fixed", "migrate", "exclusive" };
	struct uhmm_simdev *md = mkdev(4 * MNP, 1, 0);
	for (int k = 0; k < 60; k++) {
		int op = (int)((rnd() + (unsigned)round) % 8);
		static unsigned opmask;	/* HUNT2_OPS: bit per op (munmap 1, mremap 2, mprotect 4, dontneed 8, fork 16, mmap_fixed 32) */
		if (!opmask) opmask = getenv("HUNT2_OPS") ? (unsigned)strtoul(getenv("HUNT2_OPS"), NULL, 0) : 255;
		while (!(opmask & (1u << op))) op = (int)(rnd() % 8);
		size_t idx = rnd() % MNP, n = 1 + rnd() % (MNP - idx);
		char *a = p + idx * PG;
		pid_t c = -1; int pfd[2] = { -1, -1 };
		switch (op) {
		case 0:
			if (munmap(a, n * PG)) FAIL("munmap");
			break;
		case 1: {
			char *t = mremap(a, n * PG, n * PG, MREMAP_MAYMOVE | MREMAP_FIXED, scratch);
			/* EFAULT: the range spans several VMAs (kernel rule), nothing moved */
			if (t == MAP_FAILED && errno != EFAULT) FAIL("mremap %d", errno);
			break; }
		case 2:
			if (mprotect(a, n * PG, (rnd() & 1) ? PROT_READ : PROT_NONE)) FAIL("mprotect");
			break;
		case 3:
			if (madvise(a, n * PG, MADV_DONTNEED)) FAIL("dontneed");
			break;
		case 4:
			if (pipe(pfd)) FAIL("pipe");
			c = fork();
			if (c == 0) { char ch; close(pfd[1]); if (read(pfd[0], &ch, 1) < 0) {} _exit(0); }
			break;
		case 5:
			if (mmap(a, n * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED) FAIL("mmap fixed");
			break;
		case 6: {	/* another device migrates part of the mirrored range */
			int r = uhmm_simdev_migrate_to_dev(md, a, n, NULL);
			if (r && r != -ENOENT && r != -EINVAL) FAIL("migrate %d %s", r, uhmm_last_error());
			break; }
		case 7: {
			int r = uhmm_simdev_exclusive(md, a, n, NULL);
			if (r && r != -EPERM && r != -EINVAL && r != -ENOENT) FAIL("exclusive %d %s", r, uhmm_last_error());
			break; }
		}
		pthread_rwlock_wrlock(&m_pause);
		m_verify(names[op]);
		if (c > 0) { close(pfd[0]); close(pfd[1]); waitpid(c, NULL, 0); }
		/* put the range back to a normal RW mapping */
		if (op != 4 && op != 3 && op != 6 && op != 7)
			if (mmap(a, n * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED) FAIL("remap");
		if (op == 1 && mmap(scratch, n * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED) FAIL("scratch");
		pthread_rwlock_unlock(&m_pause);
		pthread_rwlock_wrlock(&m_pause);
		m_verify("restore");
		pthread_rwlock_unlock(&m_pause);
	}
	atomic_store(&m_stop, 1);
	for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
	uhmm_interval_notifier_remove(&M.mni);
	uhmm_simdev_destroy(md);
	uhmm_mm_put(mm);
	fprintf(stderr, "round %d: %lu faults, %lu invalidations\n", round, M.faults, M.invs);
}

/* ================= 4: the kernel accessing device-resident memory ================= */
static int ur_read_write(int fd, void *buf, size_t len, off_t off, bool write)
{
	struct io_uring_params pr = {0};
	int rfd = (int)syscall(__NR_io_uring_setup, 4, &pr);
	if (rfd < 0) return -1000 - errno;
	size_t sql = pr.sq_off.array + pr.sq_entries * sizeof(unsigned);
	size_t cql = pr.cq_off.cqes + pr.cq_entries * sizeof(struct io_uring_cqe);
	char *sq = mmap(NULL, sql, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, rfd, IORING_OFF_SQ_RING);
	char *cq = mmap(NULL, cql, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, rfd, IORING_OFF_CQ_RING);
	struct io_uring_sqe *sqes = mmap(NULL, pr.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
					 MAP_SHARED | MAP_POPULATE, rfd, IORING_OFF_SQES);
	if (sq == MAP_FAILED || cq == MAP_FAILED || sqes == MAP_FAILED) FAIL("uring mmap");
	unsigned *tail = (unsigned *)(sq + pr.sq_off.tail), *mask = (unsigned *)(sq + pr.sq_off.ring_mask);
	unsigned *arr = (unsigned *)(sq + pr.sq_off.array);
	unsigned t = *tail, i = t & *mask;
	memset(&sqes[i], 0, sizeof sqes[i]);
	sqes[i].opcode = write ? IORING_OP_WRITE : IORING_OP_READ;
	sqes[i].fd = fd;
	sqes[i].addr = (uintptr_t)buf;
	sqes[i].len = (unsigned)len;
	sqes[i].off = (uint64_t)off;
	arr[i] = i;
	__atomic_store_n(tail, t + 1, __ATOMIC_RELEASE);
	int r = (int)syscall(__NR_io_uring_enter, rfd, 1, 1, IORING_ENTER_GETEVENTS, NULL, 0);
	if (r < 0) FAIL("uring enter %d", errno);
	unsigned *chead = (unsigned *)(cq + pr.cq_off.head);
	struct io_uring_cqe *cqes = (struct io_uring_cqe *)(cq + pr.cq_off.cqes);
	int res = cqes[*chead & *(unsigned *)(cq + pr.cq_off.ring_mask)].res;
	munmap(sq, sql); munmap(cq, cql); munmap(sqes, pr.sq_entries * sizeof(struct io_uring_sqe));
	close(rfd);
	return res;
}

static void *pipe_reader(void *a)
{
	int *fds = a;
	char *b = malloc(64 * PG);
	size_t got = 0;
	while (got < 64 * PG) {
		ssize_t n = read(fds[0], b + got, 64 * PG - got);
		if (n <= 0) FAIL("pipe read %zd %d", n, errno);
		got += (size_t)n;
	}
	return b;
}

static void sc_kio(int round)
{
	size_t np = 64;
	struct uhmm_simdev *d = mkdev(1024, 2, 0);
	int op = round % 9;
	char *p = amap(np);
	if (round & 16) madvise(p, np * PG, MADV_HUGEPAGE);
	long b;
	/* a helper forked before the pages go to the device (fork brings them home) */
	int req[2], rsp[2];
	if (pipe(req) || pipe(rsp)) FAIL("pipe");
	pid_t parent = getpid();
	pid_t h = fork();
	if (h == 0) {
		char cmd;
		close(req[1]); close(rsp[0]);
		while (read(req[0], &cmd, 1) == 1) {
			char *lb = malloc(np * PG);
			struct iovec l = { lb, np * PG }, rm = { p, np * PG };
			ssize_t n;
			int res = 0;
			if (cmd == 'r') {
				n = process_vm_readv(parent, &l, 1, &rm, 1, 0);
				res = n != (ssize_t)(np * PG) ? 2 : check(lb, np, 61, 0) >= 0 ? 3 : 0;
			} else {
				fill(lb, np, 62, 0);
				n = process_vm_writev(parent, &l, 1, &rm, 1, 0);
				res = n != (ssize_t)(np * PG) ? 2 : 0;
			}
			char c = (char)res;
			if (write(rsp[1], &c, 1) != 1) _exit(9);
			free(lb);
		}
		_exit(0);
	}
	close(req[0]); close(rsp[1]);
	fill(p, np, 61, 0);
	to_dev(d, p, np);
	if (dev_resident(d, p, np) != np) FAIL("not resident");
	char tmpl[] = "/tmp/hunt2-kio-XXXXXX";
	int fd = -1;
	switch (op) {
	case 0: { /* write(pipe) from device-resident memory */
		int fds[2]; if (pipe(fds)) FAIL("pipe");
		pthread_t th; pthread_create(&th, NULL, pipe_reader, fds);
		size_t put = 0;
		while (put < np * PG) {
			ssize_t n = write(fds[1], p + put, np * PG - put);
			if (n <= 0) FAIL("pipe write %zd %d", n, errno);
			put += (size_t)n;
		}
		void *rb; pthread_join(th, &rb);
		if ((b = check(rb, np, 61, 0)) >= 0) FAIL("pipe got page %ld bad", b);
		free(rb); close(fds[0]); close(fds[1]);
		break; }
	case 1: { /* read(pipe) into device-resident memory */
		int fds[2]; if (pipe(fds)) FAIL("pipe");
		if (fcntl(fds[1], F_SETPIPE_SZ, (int)(np * PG)) < 0) FAIL("setpipe");
		char *src = amap(np); fill(src, np, 63, 0);
		if (write(fds[1], src, np * PG) != (ssize_t)(np * PG)) FAIL("pipe fill");
		size_t got = 0;
		while (got < np * PG) {
			ssize_t n = read(fds[0], p + got, np * PG - got);
			if (n <= 0) FAIL("pipe read %zd %d", n, errno);
			got += (size_t)n;
		}
		if ((b = check(p, np, 63, 0)) >= 0) FAIL("page %ld bad after read()", b);
		close(fds[0]); close(fds[1]);
		break; }
	case 2: case 3: { /* pwrite from / pread into device memory, plain and O_DIRECT */
		fd = mkstemp(tmpl); if (fd < 0) FAIL("mkstemp"); unlink(tmpl);
		if (op == 3) {
			int fl = fcntl(fd, F_GETFL);
			if (fcntl(fd, F_SETFL, fl | O_DIRECT)) { fprintf(stderr, "O_DIRECT refused (%d): plain\n", errno); }
		}
		ssize_t n = pwrite(fd, p, np * PG, 0);
		if (n != (ssize_t)(np * PG)) FAIL("pwrite %zd %d", n, errno);
		to_dev(d, p, np);
		char *cmp = amap(np);
		if (pread(fd, cmp, np * PG, 0) != (ssize_t)(np * PG)) FAIL("pread cmp");
		if ((b = check(cmp, np, 61, 0)) >= 0) FAIL("file page %ld bad", b);
		fill(cmp, np, 64, 0);
		if (pwrite(fd, cmp, np * PG, 0) != (ssize_t)(np * PG)) FAIL("pwrite cmp");
		n = pread(fd, p, np * PG, 0);	/* into device-resident pages */
		if (n != (ssize_t)(np * PG)) FAIL("pread %zd %d", n, errno);
		if ((b = check(p, np, 64, 0)) >= 0) FAIL("page %ld bad after pread", b);
		break; }
	case 4: case 5: { /* process_vm_readv / writev from the helper */
		char cmd = op == 4 ? 'r' : 'w', res;
		if (write(req[1], &cmd, 1) != 1 || read(rsp[0], &res, 1) != 1) FAIL("helper");
		if (res) FAIL("helper %c result %d", cmd, res);
		if ((b = check(p, np, op == 4 ? 61 : 62, 0)) >= 0) FAIL("page %ld bad after vm_%s", b, op == 4 ? "readv" : "writev");
		break; }
	case 6: { /* /proc/self/mem: documented EIO; data must stay */
		int mfd = open("/proc/self/mem", O_RDWR);
		if (mfd < 0) FAIL("open mem");
		char *lb = malloc(np * PG);
		ssize_t n = pread(mfd, lb, np * PG, (off_t)(uintptr_t)p);
		if (n == (ssize_t)(np * PG) && check(lb, np, 61, 0) >= 0) FAIL("/proc/self/mem read wrong data");
		int rerr = n < 0 ? errno : 0;
		fill(lb, np, 65, 0);
		n = pwrite(mfd, lb + PG, PG, (off_t)(uintptr_t)(p + PG));	/* one page */
		int werr = n < 0 ? errno : 0;
		bool wrote = n == (ssize_t)PG;
		if (check(p, 1, 61, 0) >= 0) FAIL("page 0 bad after mem pwrite");
		if (wrote ? check(p + PG, 1, 65, 1) >= 0 : check(p + PG, 1, 61, 1) >= 0)
			FAIL("page 1 bad after mem pwrite (wrote %d errno %d)", wrote, werr);
		if ((b = check(p + 2 * PG, np - 2, 61, 2)) >= 0) FAIL("page %ld bad after mem", b + 2);
		if (round < 9) fprintf(stderr, "/proc/self/mem: read errno %d, write %s errno %d\n", rerr, wrote ? "done" : "refused", werr);
		free(lb); close(mfd);
		break; }
	case 7: case 8: { /* io_uring read into / write from device memory */
		fd = mkstemp(tmpl); if (fd < 0) FAIL("mkstemp"); unlink(tmpl);
		char *src = amap(np); fill(src, np, 66, 0);
		if (op == 7) {
			if (pwrite(fd, src, np * PG, 0) != (ssize_t)(np * PG)) FAIL("pwrite");
			int r = ur_read_write(fd, p, np * PG, 0, false);
			if (r <= -1000) { printf("SKIP io_uring %d\n", -r - 1000); break; }
			if (r != (int)(np * PG)) FAIL("uring read %d", r);
			if ((b = check(p, np, 66, 0)) >= 0) FAIL("page %ld bad after uring read", b);
		} else {
			int r = ur_read_write(fd, p, np * PG, 0, true);
			if (r <= -1000) { printf("SKIP io_uring %d\n", -r - 1000); break; }
			if (r != (int)(np * PG)) FAIL("uring write %d", r);
			if (pread(fd, src, np * PG, 0) != (ssize_t)(np * PG)) FAIL("pread");
			if ((b = check(src, np, 61, 0)) >= 0) FAIL("file page %ld bad after uring write", b);
			if ((b = check(p, np, 61, 0)) >= 0) FAIL("page %ld bad after uring write", b);
		}
		break; }
	}
	if (fd >= 0) close(fd);
	close(req[1]);
	waitpid(h, NULL, 0);
	uhmm_simdev_destroy(d);
}

/* ================= 5: fault storm ================= */
#define SNP 4
static char *sbuf; static int snthr;
static pthread_barrier_t sbar;
static atomic_int s_stop;
static unsigned s_gen;	/* written by main between barriers */
static void *storm_thr(void *a)
{
	size_t id = (size_t)(uintptr_t)a;
	char *mine = sbuf + id * SNP * PG;
	for (;;) {
		pthread_barrier_wait(&sbar);	/* pages are on the device */
		if (atomic_load(&s_stop)) return NULL;
		unsigned g = s_gen;
		long b = check(mine, SNP, 100 + g, id * SNP);
		if (b >= 0) FAIL("thread %zu page %ld bad gen %u", id, b, g);
		fill(mine, SNP, 101 + g, id * SNP);
		pthread_barrier_wait(&sbar);
	}
}
static char *other; static size_t onp = 256;
static struct uhmm_simdev *sdev;
static void *storm_mig(void *a)
{
	(void)a;
	while (!atomic_load(&s_stop)) {
		size_t off = rnd() % onp, n = 1 + rnd() % (onp - off);
		uhmm_simdev_migrate_to_dev(sdev, other + off * PG, n, NULL);
		if (rnd() & 1) uhmm_simdev_migrate_to_sys(sdev, other, onp, NULL);
	}
	return NULL;
}
static sem_t s_forksem;
static void *storm_fork(void *a)
{
	(void)a;
	for (;;) {
		/* one fork per storm, during it (a fork brings every device page home) */
		while (sem_wait(&s_forksem)) {}
		if (atomic_load(&s_stop)) return NULL;
		pid_t c = fork();
		if (c == 0) _exit(check(other, onp, 99, 0) >= 0 ? 3 : 0);
		int st;
		if (waitpid(c, &st, 0) != c || !WIFEXITED(st) || WEXITSTATUS(st)) FAIL("fork child %x", st);
	}
	return NULL;
}
static void sc_storm(int round)
{
	snthr = (round & 1) ? 64 : 32;
	sdev = mkdev(snthr * SNP + onp + 64, 2, 0);
	sbuf = amap((size_t)snthr * SNP);
	other = amap(onp);
	fill(other, onp, 99, 0);
	s_gen = 0;
	fill(sbuf, (size_t)snthr * SNP, 100, 0);
	pthread_barrier_init(&sbar, NULL, (unsigned)snthr + 1);
	pthread_t *th = calloc((size_t)snthr, sizeof *th), tm, tf;
	for (int i = 0; i < snthr; i++)
		if (pthread_create(&th[i], NULL, storm_thr, (void *)(uintptr_t)i)) FAIL("pthread_create");
	pthread_create(&tm, NULL, storm_mig, NULL);
	sem_init(&s_forksem, 0, 0);
	pthread_create(&tf, NULL, storm_fork, NULL);
	for (int it = 0; it < 12; it++) {
		/* migrate (part of) every thread's pages to the device */
		struct uhmm_simdev_stats st = {0};
		int r = uhmm_simdev_migrate_to_dev(sdev, sbuf, (size_t)snthr * SNP, &st);
		/* -ENOENT: the fork of the last storm (or a CPU fault) took them home: documented */
		if (r && r != -ENOENT) FAIL("to_dev %d %s", r, uhmm_last_error());
		pthread_barrier_wait(&sbar);	/* storm */
		sem_post(&s_forksem);
		pthread_barrier_wait(&sbar);	/* done */
		s_gen++;
	}
	atomic_store(&s_stop, 1);
	sem_post(&s_forksem);
	pthread_barrier_wait(&sbar);
	for (int i = 0; i < snthr; i++) pthread_join(th[i], NULL);
	pthread_join(tm, NULL);
	pthread_join(tf, NULL);
	long b;
	if ((b = check(other, onp, 99, 0)) >= 0) FAIL("other page %ld bad", b);
	for (int i = 0; i < snthr; i++)
		if ((b = check(sbuf + (size_t)i * SNP * PG, SNP, 100 + s_gen, (size_t)i * SNP)) >= 0)
			FAIL("thread %d page %ld bad at end", i, b);
	uhmm_simdev_destroy(sdev);
}


/* ================= 6: a remote writer (GUP with a plain reference) racing migrations ==== */
/* process_vm_writev / /proc/PID/mem pwrite from another process take a page
 * reference (FOLL_GET, not a pin) and copy into the page; the kernel's
 * migrate_vma skips a page with an extra reference, so the write lands. */
static atomic_int rw_stop;
static char *rwbuf; static size_t rwnp = 32;
static struct uhmm_simdev *rwdev;
static void *rw_mig(void *a)
{
	(void)a;
	while (!atomic_load(&rw_stop)) {
		size_t off = rnd() % rwnp, n = 1 + rnd() % (rwnp - off);
		uhmm_simdev_migrate_to_dev(rwdev, rwbuf + off * PG, n, NULL);
		if (rnd() % 3 == 0) uhmm_simdev_migrate_to_sys(rwdev, rwbuf, rwnp, NULL);
	}
	return NULL;
}
static void sc_vmw(int round)
{
	int how = round % 3;	/* 0 process_vm_writev, 1 /proc/PID/mem, 2 ptrace-free O_DIRECT-like: process_vm_writev of one page at a time */
	rwdev = mkdev(1024, 2, 0);
	rwbuf = amap(rwnp);
	fill(rwbuf, rwnp, 200, 0);
	int req[2], rsp[2];
	if (pipe(req) || pipe(rsp)) FAIL("pipe");
	pid_t parent = getpid();
	int iters = 300;
	pid_t h = fork();
	if (h == 0) {
		close(req[1]); close(rsp[0]);
		char *lb = malloc(rwnp * PG);
		char path[64]; snprintf(path, sizeof path, "/proc/%d/mem", parent);
		int mfd = how == 1 ? open(path, O_RDWR) : -1;
		if (how == 1 && mfd < 0) _exit(5);
		for (int k = 1; k <= iters; k++) {
			fill(lb, rwnp, 200 + (unsigned)k, 0);
			size_t done = 0;
			int tries = 0;
			while (done < rwnp * PG) {
				size_t len = how == 2 ? PG : rwnp * PG - done;
				ssize_t n;
				if (how == 1) {
					n = pwrite(mfd, lb + done, len, (off_t)(uintptr_t)(rwbuf + done));
					if (n < 0 && errno == EIO && ++tries < 100000) { sched_yield(); continue; }	/* device-resident: documented EIO */
				} else {
					struct iovec l = { lb + done, len }, rm = { rwbuf + done, len };
					n = process_vm_writev(parent, &l, 1, &rm, 1, 0);
				}
				if (n <= 0) _exit(6);
				done += (size_t)n;
			}
			char c = 1;
			if (write(rsp[1], &c, 1) != 1 || read(req[0], &c, 1) != 1) _exit(7);
		}
		_exit(0);
	}
	close(req[0]); close(rsp[1]);
	pthread_t tm;
	pthread_create(&tm, NULL, rw_mig, NULL);
	for (int k = 1; k <= iters; k++) {
		char c;
		if (read(rsp[0], &c, 1) != 1) {
			int st; waitpid(h, &st, 0);
			FAIL("helper died %x at %d", st, k);
		}
		/* the helper's write of iteration k returned: every byte must be k's */
		for (size_t i = 0; i < rwnp; i++) {
			if (check(rwbuf + i * PG, 1, 200 + (unsigned)k, i) >= 0) {
				int old = check(rwbuf + i * PG, 1, 200 + (unsigned)k - 1, i) < 0;
				FAIL("iteration %d (%s): page %zu lost the remote write (%s)", k,
				     how == 1 ? "/proc/PID/mem" : "process_vm_writev", i, old ? "holds the previous data" : "other data");
			}
		}
		if (write(req[1], &c, 1) != 1) FAIL("ack");
	}
	atomic_store(&rw_stop, 1);
	pthread_join(tm, NULL);
	int st; waitpid(h, &st, 0);
	if (!WIFEXITED(st) || WEXITSTATUS(st)) FAIL("helper %x", st);
	uhmm_simdev_destroy(rwdev);
}

/* ================= 7: O_DIRECT / buffered reads racing migrations ================= */
static void sc_dio(int round)
{
	int how = round % 3;	/* 0 O_DIRECT pread, 1 buffered pread, 2 read() from a pipe */
	rwdev = mkdev(1024, 2, 0);
	rwbuf = amap(rwnp);
	char tmpl[2][32] = { "/tmp/hunt2-dio-XXXXXX", "/tmp/hunt2-dio-XXXXXX" };
	int fd[2];
	char *src = amap(rwnp);
	for (int j = 0; j < 2; j++) {
		fd[j] = mkstemp(tmpl[j]); if (fd[j] < 0) FAIL("mkstemp"); unlink(tmpl[j]);
		fill(src, rwnp, 300 + (unsigned)j, 0);
		if (pwrite(fd[j], src, rwnp * PG, 0) != (ssize_t)(rwnp * PG)) FAIL("pwrite");
		fsync(fd[j]);
		if (how == 0 && fcntl(fd[j], F_SETFL, fcntl(fd[j], F_GETFL) | O_DIRECT)) FAIL("O_DIRECT %d", errno);
	}
	int pfd[2] = { -1, -1 };
	if (how == 2) { if (pipe(pfd)) FAIL("pipe"); fcntl(pfd[1], F_SETPIPE_SZ, (int)(rwnp * PG)); }
	fill(rwbuf, rwnp, 299, 0);
	pthread_t tm;
	pthread_create(&tm, NULL, rw_mig, NULL);
	for (int k = 0; k < 400; k++) {
		int j = k & 1;
		ssize_t n = 0;
		if (how == 2) {
			fill(src, rwnp, 300 + (unsigned)j, 0);
			if (write(pfd[1], src, rwnp * PG) != (ssize_t)(rwnp * PG)) FAIL("pipe write");
			size_t got = 0;
			while (got < rwnp * PG) {
				ssize_t m = read(pfd[0], rwbuf + got, rwnp * PG - got);
				if (m <= 0) FAIL("pipe read %zd %d", m, errno);
				got += (size_t)m;
			}
			n = (ssize_t)got;
		} else {
			n = pread(fd[j], rwbuf, rwnp * PG, 0);
		}
		if (n != (ssize_t)(rwnp * PG)) FAIL("read %zd errno %d", n, errno);
		for (size_t i = 0; i < rwnp; i++)
			if (check(rwbuf + i * PG, 1, 300 + (unsigned)j, i) >= 0) {
				int old = check(rwbuf + i * PG, 1, 300 + (unsigned)!j, i) < 0 || check(rwbuf + i * PG, 1, 299, i) < 0;
				FAIL("iteration %d (%s): page %zu lost the read's data (%s)", k,
				     how == 0 ? "O_DIRECT" : how == 1 ? "buffered" : "pipe", i, old ? "holds the previous data" : "other data");
			}
	}
	atomic_store(&rw_stop, 1);
	pthread_join(tm, NULL);
	uhmm_simdev_destroy(rwdev);
}

/* ================= 8: counters: many threads increment their own words of the same pages
 * while the pages migrate to the device and back (a lost update is lost data) ====== */
#define CNP 8
static char *cnbuf; static int cnthr; static atomic_int cn_stop;
static struct uhmm_simdev *cndev;
static int cn_iters;	/* migrations to run while the threads count */
static atomic_int cn_thr_stop;
static uint64_t cn_done[64];
static void *cn_thr(void *a)
{
	size_t t = (size_t)(uintptr_t)a;
	uint64_t k = 0;
	while (!atomic_load(&cn_thr_stop)) {
		for (size_t p = 0; p < CNP; p++) {
			volatile uint64_t *w = (volatile uint64_t *)(cnbuf + p * PG) + t;
			*w = *w + 1;
		}
		k++;
	}
	cn_done[t] = k;
	return NULL;
}
static void *cn_mig(void *a)
{
	(void)a;
	for (int m = 0; m < cn_iters; m++) {
		if (m % 100 == 0) fprintf(stderr, "[%ld] migrations %d\n", (long)time(NULL), m);
		size_t off = rnd() % CNP, n = 1 + rnd() % (CNP - off);
		uhmm_simdev_migrate_to_dev(cndev, cnbuf + off * PG, n, NULL);
		if (rnd() % 4 == 0) uhmm_simdev_migrate_to_sys(cndev, cnbuf, CNP, NULL);
		if (rnd() % 8 == 0) {	/* the device reads them too */
			char b[CNP * PG];
			uhmm_simdev_read(cndev, cnbuf, CNP, b, NULL);
		}
	}
	atomic_store(&cn_thr_stop, 1);
	return NULL;
}
static void *cn_fork(void *a)
{
	(void)a;
	while (!atomic_load(&cn_stop)) {
		pid_t c = fork();
		if (c == 0) {
			/* a snapshot: every word at most the final count */
			for (size_t p = 0; p < CNP; p++)
				for (int t = 1; t < cnthr; t++)	/* threads count in step, roughly: no check but bytes beyond */
					(void)t;
			for (size_t p = 0; p < CNP; p++)
				for (size_t o = (size_t)cnthr * 8; o < PG; o++)
					if (cnbuf[p * PG + o]) _exit(3);
			_exit(0);
		}
		int st;
		if (waitpid(c, &st, 0) != c || !WIFEXITED(st) || WEXITSTATUS(st)) FAIL("fork child %x", st);
		struct timespec ts = { 0, 2000000 };
		nanosleep(&ts, NULL);	/* pacing only, not synchronisation */
	}
	return NULL;
}
static void sc_counters(int round)
{
	cnthr = (round & 1) ? 64 : 32;
	cn_iters = 150;	/* 64 spinning threads on 2 CPUs: about 5 migrations a second in fallback mode */
	cndev = mkdev(256, 2, 0);
	cnbuf = amap(CNP);
	if (round & 2) madvise(cnbuf, CNP * PG, MADV_HUGEPAGE);
	memset(cnbuf, 0, CNP * PG);
	pthread_t *th = calloc((size_t)cnthr, sizeof *th), tm, tf;
	pthread_create(&tm, NULL, cn_mig, NULL);
	if (round & 4) pthread_create(&tf, NULL, cn_fork, NULL);
	for (int i = 0; i < cnthr; i++)
		if (pthread_create(&th[i], NULL, cn_thr, (void *)(uintptr_t)i)) FAIL("pthread_create");
	pthread_join(tm, NULL);
	for (int i = 0; i < cnthr; i++) pthread_join(th[i], NULL);
	atomic_store(&cn_stop, 1);
	if (round & 4) pthread_join(tf, NULL);
	for (size_t p = 0; p < CNP; p++)
		for (int t = 0; t < cnthr; t++) {
			uint64_t v = ((uint64_t *)(cnbuf + p * PG))[t];
			if (v != cn_done[t]) FAIL("page %zu thread %d: count %llu, want %llu (lost updates)", p, t, (unsigned long long)v, (unsigned long long)cn_done[t]);
		}
	for (size_t p = 0; p < CNP; p++)
		for (size_t o = (size_t)cnthr * 8; o < PG; o++)
			if (cnbuf[p * PG + o]) FAIL("page %zu byte %zu not zero", p, o);
	struct uhmm_simdev_counters sc;
	if (uhmm_simdev_get_counters(cndev, &sc) == 0)
		fprintf(stderr, "round %d: %d threads, %llu pages to the device, %llu CPU faults\n", round, cnthr,
			(unsigned long long)sc.to_dev_pages, (unsigned long long)sc.cpu_faults);
	uhmm_simdev_destroy(cndev);
}

static struct { const char *n; void (*f)(int); } scs[] = {
	{"counters", sc_counters},
	{"vmw", sc_vmw}, {"dio", sc_dio},
	{"cgroup", sc_cgroup}, {"twousers", sc_twousers}, {"mirror", sc_mirror},
	{"kio", sc_kio}, {"storm", sc_storm},
};

static char cg_base[512];
static int cg_setup(int r)
{
	FILE *f = fopen("/proc/self/cgroup", "r");
	char line[512], *mine = NULL;
	while (f && fgets(line, sizeof line, f))
		if (strstr(line, ":memory:")) { mine = strchr(strchr(line, ':') + 1, ':') + 1; mine[strcspn(mine, "\n")] = 0; break; }
	if (f) fclose(f);
	if (!mine) return -1;
	snprintf(cg_base, sizeof cg_base, "/sys/fs/cgroup/memory%s", mine);
	snprintf(cg_dir, sizeof cg_dir, "%s/uhmm-hunt2-%d-%d", cg_base, getpid(), r);
	if (mkdir(cg_dir, 0755)) return -errno;
	return 0;
}

/*
 * While a cgroup round runs (hunt_wait's tick): rounds 8..15 of each 16
 * (oom_kill_disable) get their limit lifted after 3 s, once (*@arg).
 */
static void cg_tick(int r, time_t elapsed, void *arg)
{
	bool *lifted = arg;
	unsigned long uo = 0;
	char path[700], b[128] = "";
	FILE *of;

	if (!(r & 8) || *lifted || elapsed < 3)
		return;
	snprintf(path, sizeof path, "%s/memory.oom_control", cg_dir);
	of = fopen(path, "r");
	if (of) { while (fgets(b, sizeof b, of)) if (!strncmp(b, "under_oom", 9)) uo = strtoul(b + 10, NULL, 10); fclose(of); }
	cg_write("memory.limit_in_bytes", "-1");
	*lifted = true;
	fprintf(stderr, "round %d: limit lifted after 3 s (under_oom %lu)\n", r, uo);
}

int main(int argc, char **argv)
{
	if (argc < 3) { fprintf(stderr, "usage: hunt2 SCENARIO ROUNDS [TIMEOUT]\n"); return 2; }
	int rounds = atoi(argv[2]), fails = 0, hangs = 0, ooms = 0;
	unsigned to = argc > 3 ? (unsigned)atoi(argv[3]) : 60;
	void (*f)(int) = NULL;
	for (size_t i = 0; i < sizeof(scs) / sizeof(scs[0]); i++)
		if (!strcmp(scs[i].n, argv[1])) f = scs[i].f;
	if (!f) { fprintf(stderr, "unknown scenario\n"); return 2; }
	bool cg = f == sc_cgroup;
	if (rounds == 0) {	/* in-process, for a debugger */
		seed = (unsigned)getpid();
		f(argc > 4 ? atoi(argv[4]) : 0);
		return 0;
	}
	int first = getenv("HUNT2_FIRST") ? atoi(getenv("HUNT2_FIRST")) : 0;	/* rerun one round kind */
	int step = getenv("HUNT2_STEP") ? atoi(getenv("HUNT2_STEP")) : 1;
	for (int r = first; r < first + rounds * step; r += step) {
		if (cg) {
			int e = cg_setup(r);
			if (e) { printf("cgroup: cannot create a memory cgroup (%d): skipped\n", e); return 77; }
		}
		pid_t c = fork();
		if (c == 0) {
			seed = (unsigned)getpid() ^ (unsigned)r * 7919u;
			alarm(to);
			f(r);
			_exit(0);
		}
		int st;
		bool lifted = false;
		if (hunt_wait(c, r, to, 1500, cg ? cg_tick : NULL, &lifted, &st))
			hangs++;
		else if (WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM) { hangs++; fprintf(stderr, "round %d: alarm (hang)\n", r); }
		else if (cg && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) {
			ooms++;
			fprintf(stderr, "round %d: SIGKILL (oom_control: ", r);
			char path[700]; snprintf(path, sizeof path, "cat %s/memory.oom_control | tr '\\n' ' ' >&2", cg_dir);
			if (system(path)) {}
			fprintf(stderr, ")\n");
		} else if (!WIFEXITED(st) || WEXITSTATUS(st)) { fails++; fprintf(stderr, "round %d: status %x\n", r, st); }
		if (cg) {
			/* wait for the cgroup to empty, then remove it */
			for (int k = 0; k < 200 && rmdir(cg_dir); k++) { struct timespec ts = {0, 10000000}; nanosleep(&ts, NULL); }
		}
	}
	char ooms_s[48];
	snprintf(ooms_s, sizeof ooms_s, ", %d OOM-killed", ooms);
	printf("%s: %d rounds, %d failed, %d hung%s (UHMM_DISABLE=%s)\n", argv[1], rounds, fails, hangs,
	       cg ? ooms_s : "", getenv("UHMM_DISABLE") ? getenv("UHMM_DISABLE") : "");
	return fails || hangs;
}
