// SPDX-License-Identifier: MIT
/*
 * "uhmm bench": every figure is measured in the same run as its baseline and
 * reported as a ratio, repeated, with the median and the spread.  The
 * targets are those of the project's benchmark issue; a missed target is
 * said plainly.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "bare_uffd.h"
#include "bench.h"
#include "tdev.h"	/* testdev/: the device the benchmarks migrate to */
#include "bench_sim.h"
#include "timing.h"
#include "opts.h"

static size_t ps;
static bool quick;
static int reps = 5;

/*
 * The device the benchmarks migrate to (testdev/tdev.h): next-fit, as a
 * device allocator hands out contiguous memory; @flags adds TDEV_COMPOUND
 * (2 MiB device pages).  NULL if it cannot be had.
 */
static struct tdev *bench_dev(struct uhmm_mm *mm, size_t nr_pages, size_t fault_around,
			      unsigned int flags)
{
	struct tdev *d = NULL;

	return tdev_open(mm, nr_pages, fault_around, NULL, TDEV_NEXT_FIT | flags, &d) ? NULL : d;
}

static double pct(double *v, int n, double p)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_d);
	return v[(int)((n - 1) * p + 0.5)];
}

/* ---- results ---------------------------------------------------------------- */

struct result {
	char id[8];
	char name[96];
	char unit[16];
	double value, lo, hi;		/* median and spread of the figure */
	double base;			/* median of the baseline */
	char base_name[48];
	double ratio;			/* value / base (or as the figure defines) */
	char target[24];		/* e.g. ">= 0.5", "" */
	int met;			/* 1 met, 0 missed, -1 no target */
	bool cost;			/* a difference of two timings: never below 0 */
};

static struct result results[64];
static int nres;

static struct result *add(const char *id, const char *name, const char *unit,
			  double *v, int n, double base, const char *base_name,
			  double ratio, const char *target, int met)
{
	struct result *r = &results[nres++];
	double tmp[64];

	memcpy(tmp, v, (size_t)n * sizeof(*v));
	snprintf(r->id, sizeof(r->id), "%s", id);
	snprintf(r->name, sizeof(r->name), "%s", name);
	snprintf(r->unit, sizeof(r->unit), "%s", unit);
	r->value = pct(tmp, n, 0.5);
	r->lo = tmp[0];
	r->hi = tmp[n - 1];
	r->base = base;
	snprintf(r->base_name, sizeof(r->base_name), "%s", base_name);
	r->ratio = ratio;
	snprintf(r->target, sizeof(r->target), "%s", target);
	r->met = met;
	return r;
}

static void *map(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

static void *map_2m(size_t len)
{
	char *p = mmap(NULL, len + (2u << 20), PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	char *a;

	if (p == MAP_FAILED)
		return NULL;
	a = (char *)(((uintptr_t)p + (2u << 20) - 1) & ~(uintptr_t)((2u << 20) - 1));
	return a;
}

/* memcpy baseline between two pre-faulted buffers, GB/s. */
static double memcpy_gbs(size_t len)
{
	char *a = map(len), *b = map(len);
	double best;
	uint64_t t;

	memset(a, 1, len);
	memset(b, 2, len);
	t = now_ns();
	memcpy(b, a, len);
	best = (double)len / (double)(now_ns() - t);
	munmap(a, len);
	munmap(b, len);
	return best;
}

/* ---- 1-3: explicit migration ----------------------------------------------------- */

static void bench_migrate(struct uhmm_mm *mm, size_t len, bool thp, const char *id_to,
			  const char *id_back)
{
	struct tdev *d = bench_dev(mm, len / ps, 0, 0);
	double to[16], back[16], mc[16];
	char name[96];

	/*
	 * One source buffer for every repetition, as the device's memory is:
	 * on a host where a page's first allocation costs microseconds, fresh
	 * memory per repetition made the untimed memset most of the run.
	 */
	char *p = thp ? map_2m(len) : map(len);

	if (!d || !p) {
		fprintf(stderr, "bench: cannot create the device\n");
		if (d)
			tdev_close(d);
		return;
	}
	if (thp)
		madvise(p, len, MADV_HUGEPAGE);
	else
		madvise(p, len, MADV_NOHUGEPAGE);
	for (int r = 0; r < reps; r++) {
		uint64_t t;
		long n;

		memset(p, r + 1, len);
		mc[r] = memcpy_gbs(len);
		t = now_ns();
		n = tdev_migrate(d, (uintptr_t)p, (uintptr_t)p + len, true, NULL, NULL);
		to[r] = (double)len / (double)(now_ns() - t);
		if (n != (long)(len / ps))
			fprintf(stderr, "bench: migrated %ld of %zu pages\n", n, len / ps);
		t = now_ns();
		n = tdev_migrate(d, (uintptr_t)p, (uintptr_t)p + len, false, NULL, NULL);
		back[r] = (double)len / (double)(now_ns() - t);
		if (p[0] != (char)(r + 1) || p[len - 1] != (char)(r + 1))
			fprintf(stderr, "bench: data check failed\n");
	}
	munmap(p, len);
	{
		double m = pct(mc, reps, 0.5), v;

		snprintf(name, sizeof(name), "migrate system->device, %zu MiB of %s pages",
			 len >> 20, thp ? "2 MiB (THP)" : "4 KiB");
		v = pct(to, reps, 0.5);
		add(id_to, name, "GB/s", to, reps, m, "memcpy GB/s", v / m, ">= 0.5", v / m >= 0.5);
		snprintf(name, sizeof(name), "migrate device->system, %zu MiB of %s pages",
			 len >> 20, thp ? "2 MiB (THP)" : "4 KiB");
		v = pct(back, reps, 0.5);
		add(id_back, name, "GB/s", back, reps, m, "memcpy GB/s", v / m, ">= 0.5",
		    v / m >= 0.5);
	}
	tdev_close(d);
}

/* ---- thp: 2 MiB device pages vs 4 KiB device pages for THP migration ------------- */

/*
 * The same 2 MiB aligned THP buffer migrated to a device and back, by a
 * device with 2 MiB device pages (UHMM_MIGRATE_VMA_SELECT_COMPOUND: one
 * entry, one allocation and one copy per 2 MiB) and by one with 4 KiB
 * pages only (512 entries per 2 MiB), alternating in the same repetition.
 * The kernel's device-private THP series reports about +350% for the
 * same comparison (hmm-tests benchmark_thp_migration).
 */
static double time_migrate(struct tdev *d, char *p, size_t len, bool to_dev)
{
	uint64_t t = now_ns();
	long n = tdev_migrate(d, (uintptr_t)p, (uintptr_t)p + len, to_dev, NULL, NULL);

	if (n != (long)(len / ps))
		fprintf(stderr, "bench: thp: migrated %ld of %zu pages\n", n, len / ps);
	return (double)len / (double)(now_ns() - t);
}

static void bench_thp(struct uhmm_mm *mm, size_t len)
{
	struct tdev *small = bench_dev(mm, len / ps, 0, 0);
	struct tdev *huge = bench_dev(mm, len / ps, 0, TDEV_COMPOUND);
	double to_s[16], to_h[16], back_s[16], back_h[16];
	char *p = map_2m(len);
	char name[96];

	if (!small || !huge || !p || ps != 4096) {
		fprintf(stderr, "bench: thp: cannot create the devices (4 KiB pages only)\n");
		goto out;
	}
	madvise(p, len, MADV_HUGEPAGE);
	for (int r = 0; r < reps; r++) {
		for (int k = 0; k < 2; k++) {
			struct tdev *d = k ? huge : small;
			char v = (char)(2 * r + k + 1);

			memset(p, v, len);
			(k ? to_h : to_s)[r] = time_migrate(d, p, len, true);
			(k ? back_h : back_s)[r] = time_migrate(d, p, len, false);
			for (size_t off = 0; off < len; off += ps)
				if (p[off] != v) {
					fprintf(stderr, "bench: thp: data check failed\n");
					break;
				}
		}
	}
	{
		double b = pct(to_s, reps, 0.5), v = pct(to_h, reps, 0.5);

		snprintf(name, sizeof(name), "THP system->device, %zu MiB, 2 MiB device pages",
			 len >> 20);
		add("thp", name, "GB/s", to_h, reps, b, "4 KiB device pages GB/s", v / b, "", -1);
		b = pct(back_s, reps, 0.5);
		v = pct(back_h, reps, 0.5);
		snprintf(name, sizeof(name), "THP device->system, %zu MiB, 2 MiB device pages",
			 len >> 20);
		add("thp", name, "GB/s", back_h, reps, b, "4 KiB device pages GB/s", v / b, "", -1);
	}
out:
	if (p)
		munmap(p, len);
	if (small)
		tdev_close(small);
	if (huge)
		tdev_close(huge);
}

/* ---- 4: single-page fault-back latency vs a bare userfaultfd round trip ---------- */

/*
 * A bare round trip: faults on a region registered with a userfaultfd of
 * its own that one handler thread answers.  With @after, each fault
 * follows what figure 4's follow: a one-page migration of another page to
 * @after (not timed), which leaves the caches and page-walk state as it
 * leaves them before uhmm's fault; on a 2-vCPU guest it made the bare
 * round trip 4-7 us slower (docs/PERFORMANCE.md, issue 16.3, session 9).
 */
struct bare_rt {
	struct bare_uffd b;
	char *p, *other;
	struct tdev *after;
	size_t len;
	pthread_t th;
};

static int bare_open(struct bare_rt *rt, int n, struct tdev *after)
{
	struct uffdio_api api = { .api = UFFD_API };
	struct uffdio_register reg = { .mode = UFFDIO_REGISTER_MODE_MISSING };

	memset(rt, 0, sizeof(*rt));
	rt->len = (size_t)n * ps;
	rt->after = after;
	rt->p = map(rt->len);
	rt->b.uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (rt->b.uffd < 0)
		rt->b.uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | 1);
	if (!rt->p || rt->b.uffd < 0 || ioctl(rt->b.uffd, UFFDIO_API, &api))
		return -1;
	rt->b.src = map(ps);
	rt->b.page_size = ps;
	memset(rt->b.src, 7, ps);
	madvise(rt->p, rt->len, MADV_NOHUGEPAGE);
	reg.range.start = (uintptr_t)rt->p;
	reg.range.len = rt->len;
	if (ioctl(rt->b.uffd, UFFDIO_REGISTER, &reg))
		return -1;
	if (after) {
		rt->other = map((size_t)n * 32 * ps);
		madvise(rt->other, (size_t)n * 32 * ps, MADV_NOHUGEPAGE);
	}
	pthread_create(&rt->th, NULL, bare_uffd_main, &rt->b);
	return 0;
}

static void bare_run(struct bare_rt *rt, double *lat, int from, int to)
{
	for (int i = from; i < to; i++) {
		uint64_t t;

		if (rt->other) {
			char *pg = rt->other + (size_t)i * 32 * ps;

			pg[0] = 1;
			tdev_migrate(rt->after, (uintptr_t)pg, (uintptr_t)pg + ps, true, NULL, NULL);
		}
		t = now_ns();
		(void)*(volatile char *)(rt->p + (size_t)i * ps);
		lat[i] = (double)(now_ns() - t) / 1000.0;
		if (rt->other) {
			/*
			 * Home again, as figure 4's fault-back brings its page
			 * home: device pages and staging-cache entries do not
			 * pile up and change what uhmm's next turn finds.
			 */
			char *pg = rt->other + (size_t)i * 32 * ps;

			tdev_migrate(rt->after, (uintptr_t)pg, (uintptr_t)pg + ps, false, NULL, NULL);
		}
	}
}

static void bare_close(struct bare_rt *rt, int n)
{
	atomic_store(&rt->b.stop, true);
	pthread_join(rt->th, NULL);
	close(rt->b.uffd);
	munmap(rt->p, rt->len);
	munmap(rt->b.src, ps);
	if (rt->other)
		munmap(rt->other, (size_t)n * 32 * ps);
}

/*
 * Figure 4: uhmm's fault-backs and the bare round trips run in turns, a
 * tenth of each at a time, so that a burst of the host's noise falls on
 * both sides of the ratio.
 */
static void bench_faultback(struct uhmm_mm *mm)
{
	enum { TURNS = 10 };
	int n = quick ? 200 : 2000;
	double *lat = calloc((size_t)n, sizeof(double)), *bare = calloc((size_t)n, sizeof(double));
	double *bare2 = calloc((size_t)n, sizeof(double));
	struct tdev *d = bench_dev(mm, 64, 0, 0), *d2 = bench_dev(mm, 64, 0, 0);
	/* One device-resident page in each 32-page window: one page per fault. */
	size_t stride = 32 * ps, len = (size_t)n * stride;
	char *p = map(len);
	struct bare_rt rt, rt2;
	double med, bmed, amed;

	if (!d || !d2 || !p || !lat || !bare || !bare2)
		return;
	if (bare_open(&rt, n, NULL) || bare_open(&rt2, n, d2)) {
		fprintf(stderr, "bench: bare userfaultfd round trip unavailable\n");
		return;
	}
	madvise(p, len, MADV_NOHUGEPAGE);
	for (int turn = 0; turn < TURNS; turn++) {
		int from = n * turn / TURNS, to = n * (turn + 1) / TURNS;

		for (int i = from; i < to; i++) {
			char *pg = p + (size_t)i * stride;
			uint64_t t;

			pg[0] = 1;
			tdev_migrate(d, (uintptr_t)pg, (uintptr_t)pg + ps, true, NULL, NULL);
			t = now_ns();
			(void)*(volatile char *)pg;
			lat[i] = (double)(now_ns() - t) / 1000.0;
		}
		bare_run(&rt, bare, from, to);
		bare_run(&rt2, bare2, from, to);
	}
	bare_close(&rt, n);
	bare_close(&rt2, n);
	{
		double l2[4096];

		memcpy(l2, lat, (size_t)n * sizeof(double));
		med = pct(l2, n, 0.5);
		memcpy(l2, bare, (size_t)n * sizeof(double));
		bmed = pct(l2, n, 0.5);
		memcpy(l2, bare2, (size_t)n * sizeof(double));
		amed = pct(l2, n, 0.5);
	}
	{
		struct result *r;
		double v[1] = { med };
		double l3[4096];

		memcpy(l3, lat, (size_t)n * sizeof(double));
		r = add("4", "CPU fault-back of one device page, median latency", "us",
			v, 1, bmed, "bare uffd round trip us", med / bmed, "<= 1.3",
			med / bmed <= 1.3);
		r->lo = pct(l3, n, 0.0);
		r->hi = pct(l3, n, 0.99);	/* spread shown as min .. p99 */
		/* The fault path's own share: the bare faults after the same migration. */
		add("4", "CPU fault-back of one device page, vs bare faults after a migration",
		    "us", v, 1, amed, "bare round trip after a one-page migration us",
		    med / amed, "", -1);
	}
	munmap(p, len);
	tdev_close(d);
	tdev_close(d2);
	free(lat);
	free(bare);
	free(bare2);
}

/* ---- 5: sequential scan over device-resident memory ------------------------------- */

static void bench_scan(struct uhmm_mm *mm, size_t len)
{
	struct tdev *d = bench_dev(mm, len / ps, 0, 0);
	double v[16], mc[16];

	if (!d)
		return;
	for (int r = 0; r < reps; r++) {
		char *p = map(len);
		volatile uint64_t sum = 0;
		uint64_t t;

		madvise(p, len, MADV_NOHUGEPAGE);
		memset(p, 3, len);
		tdev_migrate(d, (uintptr_t)p, (uintptr_t)p + len, true, NULL, NULL);
		mc[r] = memcpy_gbs(len);
		t = now_ns();
		for (size_t off = 0; off < len; off += 64)
			sum += *(uint64_t *)(p + off);
		v[r] = (double)len / (double)(now_ns() - t);
		(void)sum;
		munmap(p, len);
	}
	{
		double m = pct(mc, reps, 0.5), x = pct(v, reps, 0.5);
		char name[96];

		snprintf(name, sizeof(name),
			 "sequential CPU scan of %zu MiB device-resident, default fault-around",
			 len >> 20);
		add("5", name, "GB/s", v, reps, m, "memcpy GB/s", x / m, ">= 0.25", x / m >= 0.25);
	}
	tdev_close(d);
}

/* ---- peer: a minimal userfaultfd pager, as LLNL UMap serves a region ------------- */

/*
 * The peer: one handler thread that reads each fault and answers it with one
 * UFFDIO_COPY of the faulting page from a store kept in memory (populated
 * before the timed part), as UMap's fill workers do with a page size of one
 * system page.  It is the cost floor of a user-space pager on this machine:
 * uhmm's device-resident memory should come back not much slower.
 */
struct peer {
	int uffd;
	char *base, *store;
	size_t len;
	atomic_bool stop;
};

static void *peer_handler(void *arg)
{
	struct peer *pe = arg;
	struct uffd_msg msg;

	while (!atomic_load(&pe->stop)) {
		struct pollfd pfd = { .fd = pe->uffd, .events = POLLIN };

		if (poll(&pfd, 1, 20) <= 0)
			continue;
		if (read(pe->uffd, &msg, sizeof(msg)) != sizeof(msg))
			continue;
		if (msg.event == UFFD_EVENT_PAGEFAULT) {
			uint64_t a = msg.arg.pagefault.address & ~(uint64_t)(ps - 1);
			struct uffdio_copy c = {
				.dst = a, .src = (uintptr_t)pe->store + (a - (uintptr_t)pe->base),
				.len = ps,
			};

			/* -EEXIST: another thread's fault on the page was served. */
			if (ioctl(pe->uffd, UFFDIO_COPY, &c) && errno != EEXIST) {
				struct uffdio_range w = { .start = a, .len = ps };

				ioctl(pe->uffd, UFFDIO_WAKE, &w);
			}
		}
	}
	return NULL;
}

/* A fresh region of @len registered with a new pager serving it from @store. */
static int peer_start(struct peer *pe, char *store, size_t len, pthread_t *th)
{
	struct uffdio_api api = { .api = UFFD_API };
	struct uffdio_register reg = { .mode = UFFDIO_REGISTER_MODE_MISSING };

	*pe = (struct peer){ .store = store, .len = len };
	pe->uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (pe->uffd < 0)
		pe->uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | 1);
	if (pe->uffd < 0)
		return -1;
	pe->base = map(len);
	if (!pe->base || ioctl(pe->uffd, UFFDIO_API, &api)) {
		close(pe->uffd);
		return -1;
	}
	madvise(pe->base, len, MADV_NOHUGEPAGE);
	reg.range.start = (uintptr_t)pe->base;
	reg.range.len = len;
	if (ioctl(pe->uffd, UFFDIO_REGISTER, &reg) ||
	    pthread_create(th, NULL, peer_handler, pe)) {
		munmap(pe->base, len);
		close(pe->uffd);
		return -1;
	}
	return 0;
}

static void peer_stop(struct peer *pe, pthread_t th)
{
	atomic_store(&pe->stop, true);
	pthread_join(th, NULL);
	close(pe->uffd);
	munmap(pe->base, pe->len);
}

/* The random touches: the same pages, in the same order, on both sides. */
#define PEER_TOUCHES 4096

static void touch_order(size_t *pg, size_t npages)
{
	uint64_t x = 0x9e3779b97f4a7c15u;

	for (int i = 0; i < PEER_TOUCHES; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		pg[i] = (size_t)(x % npages);
	}
}

/* CPU time of the whole process, ns: every thread's, service threads' too. */
static uint64_t process_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/*
 * ns for one pass of @kind (0: scan every 64 bytes, 1: the random touches);
 * the process CPU time it took in *@cpu (the pager's or uhmm's threads
 * included: on a loaded machine the steadier figure).
 */
static double peer_pass(char *p, size_t len, int kind, const size_t *pg, double *cpu)
{
	volatile uint64_t sum = 0;
	uint64_t c = process_ns(), t = now_ns();

	if (kind == 0) {
		for (size_t off = 0; off < len; off += 64)
			sum += *(uint64_t *)(p + off);
	} else {
		for (int i = 0; i < PEER_TOUCHES; i++)
			sum += *(volatile uint64_t *)(p + pg[i] * ps + (size_t)(i % 8) * 8);
	}
	(void)sum;
	t = now_ns() - t;
	*cpu = (double)(process_ns() - c);
	return (double)t;
}

/*
 * The sequential scan and PEER_TOUCHES random one-word reads of @len of
 * device-resident memory (default fault-around), against the same on a
 * region the peer serves; the two alternate which goes first.  Every
 * repetition starts from fresh memory on both sides.
 */
static void bench_peer(struct uhmm_mm *mm, size_t len)
{
	struct tdev *d = bench_dev(mm, len / ps, 0, 0);
	char *store = map(len);
	size_t *pg = calloc(PEER_TOUCHES, sizeof(*pg));
	double u[2][16], b[2][16], ratio[2][16], uc[2][16], bc[2][16], rc[2][16];

	if (!d || !store || !pg) {
		fprintf(stderr, "bench: peer: no memory\n");
		return;
	}
	memset(store, 9, len);
	touch_order(pg, len / ps);
	for (int kind = 0; kind < 2; kind++) {
		for (int r = 0; r < reps; r++) {
			for (int k = 0; k < 2; k++) {
				if ((k == 0) == ((r & 1) == 0)) {
					char *p = map(len);

					madvise(p, len, MADV_NOHUGEPAGE);
					memset(p, 9, len);
					tdev_migrate(d, (uintptr_t)p, (uintptr_t)p + len, true, NULL, NULL);
					u[kind][r] = peer_pass(p, len, kind, pg, &uc[kind][r]);
					munmap(p, len);
				} else {
					struct peer pe;
					pthread_t th;

					if (peer_start(&pe, store, len, &th)) {
						fprintf(stderr, "bench: peer: no userfaultfd pager\n");
						goto out;
					}
					b[kind][r] = peer_pass(pe.base, len, kind, pg, &bc[kind][r]);
					peer_stop(&pe, th);
				}
			}
			ratio[kind][r] = u[kind][r] / b[kind][r];
			rc[kind][r] = uc[kind][r] / bc[kind][r];
		}
	}
	{
		char name[96];
		double rs = pct(ratio[0], reps, 0.5), rr = pct(ratio[1], reps, 0.5);
		double us[16], bs[16];

		for (int r = 0; r < reps; r++) {
			us[r] = (double)len / u[0][r];
			bs[r] = (double)len / b[0][r];
		}
		snprintf(name, sizeof(name),
			 "sequential scan of %zu MiB device-resident vs uffd pager (time)", len >> 20);
		add("p-scan", name, "GB/s", us, reps, pct(bs, reps, 0.5), "pager GB/s", rs, "", -1);
		for (int r = 0; r < reps; r++) {
			us[r] = u[1][r] / 1e6;
			bs[r] = b[1][r] / 1e6;
		}
		snprintf(name, sizeof(name),
			 "%d random one-word reads of %zu MiB device-resident vs pager (time)",
			 PEER_TOUCHES, len >> 20);
		add("p-rand", name, "ms", us, reps, pct(bs, reps, 0.5), "pager ms", rr, "", -1);
		for (int k = 0; k < 2; k++) {
			for (int r = 0; r < reps; r++) {
				us[r] = uc[k][r] / 1e6;
				bs[r] = bc[k][r] / 1e6;
			}
			snprintf(name, sizeof(name), "%s, process CPU time",
				 k ? "the random reads vs pager" : "the scan vs pager");
			add(k ? "p-rand" : "p-scan", name, "ms", us, reps, pct(bs, reps, 0.5),
			    "pager CPU ms", pct(rc[k], reps, 0.5), "", -1);
		}
	}
out:
	tdev_close(d);
	munmap(store, len);
	free(pg);
}

/* ---- 6: snapshot vs reading pagemap ---------------------------------------------- */

static bool nop_inv(struct uhmm_interval_notifier *mni, const struct uhmm_notifier_range *r,
		    unsigned long seq)
{
	(void)r;
	uhmm_interval_set_seq(mni, seq);
	return true;
}

static const struct uhmm_interval_notifier_ops nop_ops = { .invalidate = nop_inv };

static void bench_snapshot(struct uhmm_mm *mm, size_t len, const char *id, bool report_ratio)
{
	size_t n = len / ps;
	char *p = map(len);
	uint64_t *pfns = malloc(n * 8), *raw = malloc(n * 8);
	struct uhmm_interval_notifier mni = { 0 };
	struct uhmm_range range = {
		.notifier = &mni, .start = (uintptr_t)p, .end = (uintptr_t)p + len,
		.hmm_pfns = pfns,
	};
	double v[16], b[16];
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	char name[96];

	if (!p || !pfns || !raw || fd < 0)
		return;
	memset(p, 1, len);
	/* Both output arrays faulted in first: neither side times its first touch. */
	memset(pfns, 0, n * 8);
	memset(raw, 0, n * 8);
	uhmm_interval_notifier_insert(&mni, mm, (uintptr_t)p, len, &nop_ops);
	/*
	 * The first walk of freshly populated page tables is slower for
	 * whichever side goes first: one untimed pread first, then the two
	 * alternate which goes first.
	 */
	if (pread(fd, raw, n * 8, (off_t)((uintptr_t)p / ps * 8)) != (ssize_t)(n * 8))
		fprintf(stderr, "bench: pagemap read short\n");
	for (int r = 0; r < reps; r++) {
		for (int k = 0; k < 2; k++) {
			uint64_t t = now_ns();
			int ret;

			if ((k == 0) == ((r & 1) == 0)) {
				do {
					range.notifier_seq = uhmm_interval_read_begin(&mni);
					ret = uhmm_range_fault(&range);
				} while (ret == -EBUSY);
				v[r] = (double)n / ((double)(now_ns() - t) / 1e9);
			} else {
				if (pread(fd, raw, n * 8, (off_t)((uintptr_t)p / ps * 8)) !=
				    (ssize_t)(n * 8))
					fprintf(stderr, "bench: pagemap read short\n");
				b[r] = (double)n / ((double)(now_ns() - t) / 1e9);
			}
		}
	}	{
		double x = pct(v, reps, 0.5), m = pct(b, reps, 0.5);

		snprintf(name, sizeof(name), "range fault snapshot of %zu MiB populated", len >> 20);
		add(id, name, "pages/s", v, reps, m, "pagemap pread pages/s", x / m,
		    report_ratio ? ">= 0.8" : "", report_ratio ? x / m >= 0.8 : -1);
	}
	uhmm_interval_notifier_remove(&mni);
	close(fd);
	munmap(p, len);
	free(pfns);
	free(raw);
}

/* ---- 7: CPU overhead on managed, not migrated memory ------------------------------ */

static double cpu_pass(char *p, size_t len)
{
	uint64_t t = now_ns();

	for (size_t off = 0; off < len; off += ps)
		p[off] = 1;		/* first touch */
	for (size_t off = 0; off < len; off += 64)
		p[off]++;		/* second pass */
	return (double)(now_ns() - t);
}

static void bench_managed(struct uhmm_mm *mm, size_t len)
{
	double man[16], un[16];

	for (int r = 0; r < reps; r++) {
		struct uhmm_interval_notifier mni = { 0 };
		char *a = map(len), *b = map(len);

		madvise(a, len, MADV_NOHUGEPAGE);
		madvise(b, len, MADV_NOHUGEPAGE);
		uhmm_interval_notifier_insert(&mni, mm, (uintptr_t)a, len, &nop_ops);
		if (r & 1) {
			man[r] = cpu_pass(a, len);
			un[r] = cpu_pass(b, len);
		} else {
			un[r] = cpu_pass(b, len);
			man[r] = cpu_pass(a, len);
		}
		uhmm_interval_notifier_remove(&mni);
		munmap(a, len);
		munmap(b, len);
	}
	{
		double ratio[16], x, u;

		for (int r = 0; r < reps; r++)
			ratio[r] = man[r] / un[r];
		x = pct(man, reps, 0.5) / 1e6;
		u = pct(un, reps, 0.5) / 1e6;
		{
			char name[96];
			double rm = pct(ratio, reps, 0.5);
			struct result *res;

			snprintf(name, sizeof(name),
				 "CPU first touch + second pass, %zu MiB under a notifier", len >> 20);
			res = add("7", name, "ms", (double[]){ x }, 1, u, "unmanaged ms", rm,
				  "<= 1.05", rm <= 1.05);
			res->lo = pct(man, reps, 0.0) / 1e6;
			res->hi = pct(man, reps, 1.0) / 1e6;
		}
	}
}

/* ---- 8: the naive way: PROT_NONE + SIGSEGV handler, one page per fault ------------ */

static char *naive_base, *naive_backup;
static size_t naive_len;

static void naive_segv(int sig, siginfo_t *si, void *uc)
{
	uintptr_t a = (uintptr_t)si->si_addr & ~(uintptr_t)(ps - 1);

	(void)sig;
	(void)uc;
	if (a < (uintptr_t)naive_base || a >= (uintptr_t)naive_base + naive_len)
		abort();
	syscall(SYS_mprotect, a, ps, PROT_READ | PROT_WRITE);
	memcpy((void *)a, naive_backup + (a - (uintptr_t)naive_base), ps);
}

static void bench_naive(struct uhmm_mm *mm, size_t len)
{
	struct sigaction sa = { .sa_sigaction = naive_segv, .sa_flags = SA_SIGINFO }, old;
	double nv[16], uh[16];
	struct tdev *d = bench_dev(mm, len / ps, 0, 0);

	if (!d)
		return;
	sigaction(SIGSEGV, &sa, &old);
	for (int r = 0; r < reps; r++) {
		volatile uint64_t sum = 0;
		char *p = map(len);
		uint64_t t;

		naive_len = len;
		naive_base = map(len);
		naive_backup = map(len);
		madvise(naive_base, len, MADV_NOHUGEPAGE);
		memset(naive_backup, 5, len);
		syscall(SYS_mprotect, naive_base, len, PROT_NONE);
		t = now_ns();
		for (size_t off = 0; off < len; off += 64)
			sum += *(volatile uint64_t *)(naive_base + off);
		nv[r] = (double)len / (double)(now_ns() - t);
		munmap(naive_base, len);
		munmap(naive_backup, len);

		madvise(p, len, MADV_NOHUGEPAGE);
		memset(p, 5, len);
		tdev_migrate(d, (uintptr_t)p, (uintptr_t)p + len, true, NULL, NULL);
		t = now_ns();
		for (size_t off = 0; off < len; off += 64)
			sum += *(volatile uint64_t *)(p + off);
		uh[r] = (double)len / (double)(now_ns() - t);
		munmap(p, len);
		(void)sum;
	}
	sigaction(SIGSEGV, &old, NULL);
	{
		double x = pct(uh, reps, 0.5), b = pct(nv, reps, 0.5);
		char name[96];

		snprintf(name, sizeof(name),
			 "fault-back scan of %zu MiB vs mprotect+SIGSEGV, one page per fault",
			 len >> 20);
		add("8", name, "GB/s", uh, reps, b, "naive GB/s", x / b, "", -1);
	}
	tdev_close(d);
}

/* ---- 9: scaling -------------------------------------------------------------------- */

static void bench_scaling(struct uhmm_mm *mm)
{
	static const size_t mib[] = { 1, 4, 16, 64, 256 };
	size_t max = quick ? 3 : 5;

	for (size_t k = 0; k < max; k++) {
		size_t len = mib[k] << 20, n = len / ps;
		char *p = map(len);
		uint64_t *pfns = malloc(n * 8);
		struct uhmm_interval_notifier mni = { 0 };
		struct uhmm_range range = {
			.notifier = &mni, .start = (uintptr_t)p, .end = (uintptr_t)p + len,
			.hmm_pfns = pfns,
		};
		struct tdev *d = bench_dev(mm, n, 0, 0);
		double rf[16], mg[16];
		char name[96];

		if (!p || !pfns || !d)
			return;
		madvise(p, len, MADV_NOHUGEPAGE);
		memset(p, 1, len);
		uhmm_interval_notifier_insert(&mni, mm, (uintptr_t)p, len, &nop_ops);
		for (int r = 0; r < reps; r++) {
			uint64_t t = now_ns();
			int ret;

			do {
				range.notifier_seq = uhmm_interval_read_begin(&mni);
				ret = uhmm_range_fault(&range);
			} while (ret == -EBUSY);
			rf[r] = (double)(now_ns() - t) / (double)n;
			t = now_ns();
			tdev_migrate(d, (uintptr_t)p, (uintptr_t)p + len, true, NULL, NULL);
			tdev_migrate(d, (uintptr_t)p, (uintptr_t)p + len, false, NULL, NULL);
			mg[r] = (double)(now_ns() - t) / (double)n / 2;
		}
		snprintf(name, sizeof(name), "scaling: range fault snapshot, %zu MiB", mib[k]);
		add("9", name, "ns/page", rf, reps, 0, "", 0, "", -1);
		snprintf(name, sizeof(name), "scaling: migration one way, %zu MiB", mib[k]);
		add("9", name, "ns/page", mg, reps, 0, "", 0, "", -1);
		uhmm_interval_notifier_remove(&mni);
		tdev_close(d);
		munmap(p, len);
		free(pfns);
	}
	{
		/* A 1 TiB sparse region: nothing proportional to untouched memory. */
		size_t len = (size_t)1 << 40;
		char *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		struct uhmm_interval_notifier mni = { 0 };
		double v[1];
		uint64_t t;

		if (p == MAP_FAILED)
			return;
		t = now_ns();
		uhmm_interval_notifier_insert(&mni, mm, (uintptr_t)p, len, &nop_ops);
		p[0] = 1;
		p[len - 1] = 1;
		uhmm_interval_notifier_remove(&mni);
		v[0] = (double)(now_ns() - t) / 1000.0;
		add("9", "scaling: notifier over a 1 TiB sparse region, insert+touch+remove",
		    "us", v, 1, 0, "", 0, "", -1);
		munmap(p, len);
	}
}

/* ---- notifier invalidation cost -------------------------------------------------- */

static void bench_invalidate(struct uhmm_mm *mm)
{
	int n = quick ? 2000 : 20000;
	char *p = map(2 * ps);
	struct uhmm_interval_notifier mni = { 0 };
	double with[16], without[16];

	if (!p)
		return;
	p[0] = 1;
	p[ps] = 1;
	uhmm_interval_notifier_insert(&mni, mm, (uintptr_t)p, ps, &nop_ops);
	for (int r = 0; r < reps; r++) {
		uint64_t t = now_ns();

		for (int i = 0; i < n; i++) {
			mprotect(p, ps, PROT_READ);	/* invalidates */
			mprotect(p, ps, PROT_READ | PROT_WRITE);
		}
		with[r] = (double)(now_ns() - t) / n;
		t = now_ns();
		for (int i = 0; i < n; i++) {
			mprotect(p + ps, ps, PROT_READ);	/* no notifier */
			mprotect(p + ps, ps, PROT_READ | PROT_WRITE);
		}
		without[r] = (double)(now_ns() - t) / n;
	}
	{
		double d[16];

		for (int r = 0; r < reps; r++)
			d[r] = with[r] - without[r];
		add("inv", "cost of one notifier invalidation (mprotect RO+RW pair, difference)",
		    "ns", d, reps, pct(without, reps, 0.5), "mprotect pair ns", 0, "", -1)->cost =
			true;
	}
	uhmm_interval_notifier_remove(&mni);
	munmap(p, 2 * ps);
}

/* ---- wrappers: the libc wrappers' cost on memory uhmm does not manage -------------- */

/* One mmap / mprotect / madvise(DONTNEED) / munmap cycle, through the wrappers. */
static void wrap_cycle_libc(int n)
{
	for (int i = 0; i < n; i++) {
		char *p = mmap(NULL, 4 * ps, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (p == MAP_FAILED)
			return;
		mprotect(p, ps, PROT_READ);
		madvise(p, 4 * ps, MADV_DONTNEED);
		munmap(p, 4 * ps);
	}
}

/* The same cycle as raw system calls: what a process without uhmm pays. */
static void wrap_cycle_raw(int n)
{
	for (int i = 0; i < n; i++) {
		char *p = (char *)syscall(SYS_mmap, NULL, 4 * ps, PROT_READ | PROT_WRITE,
					  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (p == MAP_FAILED)
			return;
		syscall(SYS_mprotect, p, ps, PROT_READ);
		syscall(SYS_madvise, p, 4 * ps, MADV_DONTNEED);
		syscall(SYS_munmap, p, 4 * ps);
	}
}

/* CPU time of the calling thread, ns: a loaded machine's preemption not included. */
static uint64_t thread_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/*
 * With a live context and a live device (device-resident pages, a
 * notifier), the cycle on memory neither covers, against the raw system
 * calls, alternating in the same run.  Timed in the thread's CPU time
 * (user and system): the figure is a few microseconds, and on a shared
 * machine wall time is mostly other processes' time slices.
 */
static void bench_wrappers(struct uhmm_mm *mm)
{
	int n = quick ? 2000 : 20000;
	size_t len = 64 * ps;
	struct tdev *d = bench_dev(mm, 64, 1, 0);
	struct uhmm_interval_notifier mni = { 0 };
	double libc[16], raw[16], ratio[16];
	char *buf = map(len);

	if (!d || !buf)
		return;
	memset(buf, 1, len);
	uhmm_interval_notifier_insert(&mni, mm, (uintptr_t)buf, len, &nop_ops);
	tdev_migrate(d, (uintptr_t)buf, (uintptr_t)buf + len / 2, true, NULL, NULL);
	wrap_cycle_libc(n / 10);	/* warm up */
	wrap_cycle_raw(n / 10);
	for (int r = 0; r < reps; r++) {
		/* Small alternating batches: drift and noise fall on both alike. */
		const int batch = 100;
		uint64_t tl = 0, tr = 0;

		for (int b = 0; b < n / batch; b++) {
			uint64_t t = thread_ns();

			if (b & 1) {
				wrap_cycle_libc(batch);
				tl += thread_ns() - t;
				t = thread_ns();
				wrap_cycle_raw(batch);
				tr += thread_ns() - t;
			} else {
				wrap_cycle_raw(batch);
				tr += thread_ns() - t;
				t = thread_ns();
				wrap_cycle_libc(batch);
				tl += thread_ns() - t;
			}
		}
		libc[r] = (double)tl / (n / batch * batch);
		raw[r] = (double)tr / (n / batch * batch);
		ratio[r] = libc[r] / raw[r];
	}
	{
		double rm = pct(ratio, reps, 0.5);
		struct result *res = add("wrap", "mmap+mprotect+madvise+munmap, unrelated memory, live device "
					 "(thread CPU)", "ns", libc, reps, pct(raw, reps, 0.5),
					 "raw syscalls ns", rm, "<= 1.05", rm <= 1.05);

		(void)res;
	}
	uhmm_interval_notifier_remove(&mni);
	munmap(buf, len);
	tdev_close(d);
}

/* ---- output ------------------------------------------------------------------------ */

/* The 1-minute load average and the CPUs online, or -1. */
static double load_avg(long *ncpu)
{
	FILE *f = fopen("/proc/loadavg", "re");
	double l = -1;

	*ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	if (f) {
		if (fscanf(f, "%lf", &l) != 1)
			l = -1;
		fclose(f);
	}
	return l;
}

/* What every reader of the figures must know first. */
static void print_header(FILE *f)
{
	long ncpu;
	double l = load_avg(&ncpu);

	fprintf(f,
		"uhmm bench: each figure is the median of %d repetitions, with its spread\n"
		"[min .. max], and its ratio to a baseline measured in this same run. On a\n"
		"busy or shared machine both sides are disturbed differently, so a ratio can\n"
		"miss its target, and a difference of two timings can drop below zero, by\n"
		"noise alone. For stable figures: an idle machine, more repetitions\n"
		"(--reps 16), and one pinned CPU (taskset -c 1 uhmm bench).\n", reps);
	if (l >= 0)
		fprintf(f, "Load average when the run ended: %.2f on %ld CPUs%s\n", l, ncpu,
			l >= 0.5 * (double)ncpu ? " (busy: expect noise)" : "");
	fprintf(f, "\n");
}

/* A figure as text; a cost (a difference) at or below 0 is noise, not a figure. */
static const char *fmt_value(char *buf, size_t n, const struct result *r, double v)
{
	if (r->cost && v <= 0)
		return "below noise";
	snprintf(buf, n, "%.3g", v);
	return buf;
}

static void print_text(FILE *f)
{
	print_header(f);
	fprintf(f, "%-4s %-72s %12s %s\n", "#", "figure", "median", "spread / baseline / ratio");
	for (int i = 0; i < nres; i++) {
		struct result *r = &results[i];
		char v[3][32];

		fprintf(f, "%-4s %-72s %10s %-7s [%s .. %s]", r->id, r->name,
			fmt_value(v[0], sizeof(v[0]), r, r->value), r->unit,
			fmt_value(v[1], sizeof(v[1]), r, r->lo),
			fmt_value(v[2], sizeof(v[2]), r, r->hi));
		if (r->base_name[0])
			fprintf(f, "  %s %.3g", r->base_name, r->base);
		if (r->ratio)
			fprintf(f, "  ratio %.3f", r->ratio);
		if (r->met >= 0)
			fprintf(f, "  target %s: %s", r->target, r->met ? "met" : "MISSED");
		if (r->cost && r->value <= 0)
			fprintf(f, "  (too small to measure here: smaller than the run-to-run "
				"variation of the baseline)");
		fprintf(f, "\n");
	}
	{
		int with = 0, missed = 0;

		for (int i = 0; i < nres; i++) {
			with += results[i].met >= 0;
			missed += results[i].met == 0;
		}
		fprintf(f, "\n%d of %d targets met%s\n", with - missed, with,
			missed ? "; missed:" : "");
		for (int i = 0; i < nres; i++)
			if (results[i].met == 0)
				fprintf(f, "  MISSED %-4s %s: ratio %.3f, target %s\n", results[i].id,
					results[i].name, results[i].ratio, results[i].target);
		if (missed)
			fprintf(f, "A missed target on a busy machine may be noise: rerun on an idle\n"
				"machine with --reps 16 before reading anything into it. What limits\n"
				"each missed target, and what would close it: docs/PERFORMANCE.md.\n");
	}
}

static void print_json(FILE *f)
{
	long ncpu;
	double l = load_avg(&ncpu);

	/* A cost at or below 0 is noise: null, with "below_noise": true. */
	fprintf(f, "{\"note\":\"same-run ratios; noisy on a busy machine: use an idle machine, "
		"--reps 16, taskset -c 1\",\"reps\":%d,\"loadavg\":%.2f,\"cpus\":%ld,"
		"\"results\":[\n", reps, l, ncpu);
	for (int i = 0; i < nres; i++) {
		struct result *r = &results[i];
		char v[3][32];

		for (int k = 0; k < 3; k++) {
			double x = k == 0 ? r->value : k == 1 ? r->lo : r->hi;

			if (r->cost && x <= 0)
				snprintf(v[k], sizeof(v[k]), "null");
			else
				snprintf(v[k], sizeof(v[k]), "%g", x);
		}
		fprintf(f, "  {\"id\":\"%s\",\"name\":\"%s\",\"unit\":\"%s\",\"median\":%s,"
			"\"min\":%s,\"max\":%s,\"below_noise\":%s,\"baseline\":\"%s\","
			"\"baseline_median\":%g,\"ratio\":%g,\"target\":\"%s\",\"met\":%s}%s\n",
			r->id, r->name, r->unit, v[0], v[1], v[2],
			r->cost && r->value <= 0 ? "true" : "false", r->base_name, r->base,
			r->ratio, r->target, r->met < 0 ? "null" : r->met ? "true" : "false",
			i + 1 < nres ? "," : "");
	}
	fprintf(f, "]}\n");
}

/* Bars of the ratios against their targets, one row per figure with a ratio. */
static int write_svg(const char *path)
{
	FILE *f = fopen(path, "w");
	int rows = 0, y = 40;

	if (!f)
		return -errno;
	for (int i = 0; i < nres; i++)
		rows += results[i].ratio != 0;
	fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"900\" height=\"%d\" "
		"font-family=\"sans-serif\" font-size=\"12\">\n", 60 + rows * 28);
	fprintf(f, "<text x=\"10\" y=\"20\" font-size=\"15\">uhmm bench: ratio to the "
		"baseline measured in the same run (bar), target (line)</text>\n");
	for (int i = 0; i < nres; i++) {
		struct result *r = &results[i];
		double scale = 150.0;	/* px per 1.0 of ratio, capped at 3.0 */
		double w = (r->ratio > 3 ? 3 : r->ratio) * scale;
		double tv = 0;

		if (r->ratio == 0)
			continue;
		fprintf(f, "<text x=\"10\" y=\"%d\">%s %.60s</text>\n", y + 14, r->id, r->name);
		fprintf(f, "<rect x=\"420\" y=\"%d\" width=\"%.1f\" height=\"18\" fill=\"%s\"/>\n",
			y, w, r->met == 0 ? "#d9534f" : "#5b9bd5");
		fprintf(f, "<text x=\"%.1f\" y=\"%d\">%.2f</text>\n", 425 + w, y + 14, r->ratio);
		if (r->target[0] && sscanf(r->target + 3, "%lf", &tv) == 1)
			fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%d\" y2=\"%d\" "
				"stroke=\"black\" stroke-width=\"2\"/>\n",
				420 + tv * scale, 420 + tv * scale, y - 2, y + 20);
		y += 28;
	}
	fprintf(f, "</svg>\n");
	fclose(f);
	return 0;
}

static const char *const figure_ids[] = { "1", "2", "3", "4", "5", "p-scan", "p-rand", "6", "7", "8", "9", "inv", "wrap", "sim", "thp" };

/* ---- sim: simdev with a cost model ------------------------------------------------ */

static void bench_model(const struct uhmm_simdev_model *m, size_t len)
{
	struct sim_figures f;
	char name[96];
	double ex, back;

	if (bench_sim(m, len, reps, &f) || f.n == 0)
		return;
	ex = pct(f.explicit_gbs, f.n, 0.5);
	back = pct(f.explicit_back_gbs, f.n, 0.5);
	snprintf(name, sizeof(name), "modelled on %s: migrate system->device, %zu MiB", m->name,
		 len >> 20);
	add("sim", name, "GB/s", f.explicit_gbs, f.n, m->h2d_gbps, "link GB/s", ex / m->h2d_gbps,
	    "", -1);
	snprintf(name, sizeof(name), "modelled on %s: migrate device->system, %zu MiB", m->name,
		 len >> 20);
	add("sim", name, "GB/s", f.explicit_back_gbs, f.n, m->d2h_gbps, "link GB/s",
	    back / m->d2h_gbps, "", -1);
	snprintf(name, sizeof(name), "modelled on %s: on demand (device faults), 64 KiB a fault",
		 m->name);
	add("sim", name, "GB/s", f.ondemand64_gbs, f.n, ex, "explicit GB/s",
	    pct(f.ondemand64_gbs, f.n, 0.5) / ex, "", -1);
	snprintf(name, sizeof(name), "modelled on %s: on demand (device faults), 2 MiB a fault",
		 m->name);
	add("sim", name, "GB/s", f.ondemand2m_gbs, f.n, ex, "explicit GB/s",
	    pct(f.ondemand2m_gbs, f.n, 0.5) / ex, "", -1);
	snprintf(name, sizeof(name), "modelled on %s: one device fault batch (64 KiB a fault)",
		 m->name);
	add("sim", name, "us", f.batch_us, f.n, 0, "", 0, "", -1);
	snprintf(name, sizeof(name), "modelled on %s: device faults per batch", m->name);
	add("sim", name, "faults", f.faults_per_batch, f.n, 0, "", 0, "", -1);
	snprintf(name, sizeof(name), "modelled on %s: CPU read-back by CPU faults", m->name);
	add("sim", name, "GB/s", f.readback_gbs, f.n, m->d2h_gbps, "link GB/s",
	    pct(f.readback_gbs, f.n, 0.5) / m->d2h_gbps, "", -1);
	snprintf(name, sizeof(name), "the sim workload: modelled time on %s, vs wall time here",
		 m->name);
	add("sim", name, "ms", f.sim_ms, f.n, pct(f.wall_ms, f.n, 0.5), "wall ms here",
	    pct(f.sim_ms, f.n, 0.5) / pct(f.wall_ms, f.n, 0.5), "", -1);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: uhmm bench [--quick] [--json] [--plot FILE.svg] [--reps N] [--only LIST]\n"
		"                  [--model NAME]\n"
		"\n"
		"Measures uhmm on this machine. Each figure is measured in the same run as\n"
		"its baseline (memcpy, a bare userfaultfd round trip, a minimal userfaultfd\n"
		"pager as LLNL UMap, a pagemap read,\n"
		"unmanaged memory, the mprotect+SIGSEGV way) and reported as a ratio, with\n"
		"the median and the spread of N repetitions. Missed targets are marked.\n"
		"The figures are only as steady as the machine: on a busy one, use more\n"
		"repetitions, an idle machine and one pinned CPU (taskset -c 1 uhmm bench).\n"
		"\n"
		"Options take their value as '--opt value' or '--opt=value'.\n"
		"  --quick        small sizes and few repetitions (a smoke run)\n"
		"  --json         machine-readable output\n"
		"  --plot FILE    also write the ratios as an SVG chart\n"
		"  --reps N       repetitions per figure, 1..16 (default 5, 3 with --quick)\n"
		"  --only LIST    comma-separated figure ids to run (1,2,3,thp,4,5,p-scan,\n"
		"                 p-rand,6,7,8,9,inv,wrap,sim; p-scan and p-rand run together)\n"
		"  --model NAME   run figure sim (simdev with a cost model: modelled time and\n"
		"                 bandwidth next to the wall time here) with the preset NAME:\n"
		"                 pcie4, cxl or c2c (default with --only sim: pcie4)\n"
		"\n"
		"Exit status: 0 measured (a missed target is a figure, not a failure);\n"
		"1 the chart could not be written; 2 bad command line; 77 no userfaultfd\n"
		"here (see 'uhmm info').\n");
}

static bool want(const char *only, const char *id)
{
	char buf[128], *save = NULL;

	if (!only)
		return true;
	snprintf(buf, sizeof(buf), "%s", only);
	for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save))
		if (!strcmp(t, id))
			return true;
	return false;
}

/* Every id of --only's list is a figure's, and there is at least one. */
static int check_only(const struct opts *o, const char *only)
{
	char buf[128], *save = NULL;
	int n = 0;

	if (strlen(only) >= sizeof(buf))
		return opts_bad_value(o, only, "too long");
	snprintf(buf, sizeof(buf), "%s", only);
	for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save), n++) {
		size_t k;

		for (k = 0; k < sizeof(figure_ids) / sizeof(figure_ids[0]); k++)
			if (!strcmp(t, figure_ids[k]))
				break;
		if (k == sizeof(figure_ids) / sizeof(figure_ids[0]))
			return opts_bad_value(o, only, "no figure '%s' (the ids are 1 to 9, p-scan, p-rand, inv, wrap, sim and thp)",
					      t);
	}
	if (!n)
		return opts_bad_value(o, only, "names no figure (the ids are 1 to 9, p-scan, p-rand, inv, wrap, sim and thp)");
	return 0;
}

int uhmm_bench_main(int argc, char **argv)
{
	const char *plot = NULL, *only = NULL;
	struct uhmm_simdev_model model;
	bool have_model = false;
	struct uhmm_mm *mm;
	bool json = false, reps_set = false;
	unsigned int r;
	struct opts o;
	size_t big;
	int ret;

	/* The policy layer's figures have their own options (bench/policy_bench.c). */
	if (argc > 1 && !strcmp(argv[1], "--policy"))
		return uhmm_bench_policy_main(argc - 1, argv + 1);
	opts_init(&o, "uhmm bench", argc, argv);
	while (opts_next(&o)) {
		if (opts_is(&o, "--quick")) {
			if (opts_flag(&o))
				return TOOL_EXIT_USAGE;
			quick = true;
		} else if (opts_is(&o, "--json")) {
			if (opts_flag(&o))
				return TOOL_EXIT_USAGE;
			json = true;
		} else if (opts_is(&o, "--plot")) {
			if (opts_str(&o, &plot))
				return TOOL_EXIT_USAGE;
		} else if (opts_is(&o, "--reps")) {
			if (opts_uint(&o, 1, 16, &r))
				return TOOL_EXIT_USAGE;
			reps = (int)r;
			reps_set = true;
		} else if (opts_is(&o, "--only")) {
			if (opts_str(&o, &only) || check_only(&o, only))
				return TOOL_EXIT_USAGE;
		} else if (opts_is(&o, "--model")) {
			if (opts_model(&o, &model))
				return TOOL_EXIT_USAGE;
			have_model = true;
		} else {
			return opts_other(&o, usage);
		}
	}
	if (quick && !reps_set)
		reps = 3;
	if (plot) {
		/* Refused now rather than after the whole run. */
		FILE *f = fopen(plot, "we");

		if (!f) {
			fprintf(stderr, "uhmm bench: --plot '%s': cannot write it: %s\n", plot,
				strerror(errno));
			return TOOL_EXIT_USAGE;
		}
		fclose(f);
	}
	ret = tool_need_uffd("uhmm bench");
	if (ret)
		return ret;
	ps = (size_t)sysconf(_SC_PAGESIZE);
	ret = uhmm_mm_get(&mm);
	if (ret) {
		fprintf(stderr, "uhmm bench: cannot create uhmm's context: %s\n", strerror(-ret));
		tool_print_wrapped(stderr, uhmm_last_error(), 78);
		return TOOL_EXIT_FAIL;
	}
	big = quick ? (16u << 20) : (256u << 20);
	if (want(only, "1") || want(only, "2"))
		bench_migrate(mm, big, false, "1", "2");
	if (want(only, "3"))
		bench_migrate(mm, big, true, "3", "3");
	if (want(only, "thp"))
		bench_thp(mm, big);
	if (want(only, "4"))
		bench_faultback(mm);
	if (want(only, "5"))
		bench_scan(mm, big);
	if (want(only, "p-scan") || want(only, "p-rand"))
		bench_peer(mm, big);
	if (want(only, "6"))
		bench_snapshot(mm, quick ? (64u << 20) : (1u << 30), "6", true);
	if (want(only, "7"))
		bench_managed(mm, big);
	if (want(only, "8"))
		bench_naive(mm, quick ? (16u << 20) : (64u << 20));
	if (want(only, "9"))
		bench_scaling(mm);
	if (want(only, "inv"))
		bench_invalidate(mm);
	if (want(only, "wrap"))
		bench_wrappers(mm);
	/* sim runs with a model: --model's, or pcie4 when asked for by --only. */
	if (only && want(only, "sim") && !have_model)
		have_model = !uhmm_simdev_model_preset("pcie4", &model);
	if (have_model && want(only, "sim"))
		bench_model(&model, big);
	uhmm_mm_put(mm);
	if (json)
		print_json(stdout);
	else
		print_text(stdout);
	if (plot && (ret = write_svg(plot))) {
		fprintf(stderr, "uhmm bench: cannot write %s: %s\n", plot, strerror(-ret));
		return TOOL_EXIT_FAIL;
	}
	return TOOL_EXIT_OK;
}
