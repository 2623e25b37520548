// SPDX-License-Identifier: MIT
/*
 * "uhmm demo": a heterogeneous workload on ordinary memory.
 *
 * The CPU fills an array it allocated with mmap, and computes the expected
 * answer.  The simulated device then runs a kernel over it on its own
 * threads: a 3-point stencil into a second array and a 256-bin histogram,
 * every access going through the device page table; with the migrate
 * policy, pages move into device memory on first device touch (and are
 * evicted when device memory is full).  Finally the CPU reads the results,
 * which brings the pages back through CPU faults, and checks them.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <uhmm/simdev.h>

#include "demo.h"

#define ITEM 1024			/* elements per work item */

struct work {
	uint32_t *in, *out;
	uint64_t *bins;
	size_t n;
	atomic_size_t done;
};

#define HUGE (2u << 20)

static void *map_aligned(size_t len)
{
	char *p = mmap(NULL, len + HUGE, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	char *a;

	if (p == MAP_FAILED)
		return MAP_FAILED;
	a = (char *)(((uintptr_t)p + HUGE - 1) & ~(uintptr_t)(HUGE - 1));
	if (a > p)
		munmap(p, (size_t)(a - p));
	if (a + len < p + len + HUGE)
		munmap(a + len, (size_t)(p + len + HUGE - (a + len)));
	return a;
}

static uint64_t now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static uint32_t stencil(uint32_t a, uint32_t b, uint32_t c)
{
	return (uint32_t)(((uint64_t)a + 2 * (uint64_t)b + c) / 4);
}

/* The device kernel: one work item = ITEM consecutive elements. */
static void kernel(struct uhmm_simdev_thread *t, size_t item, void *arg)
{
	struct work *w = arg;
	size_t first = item * ITEM, last = first + ITEM < w->n ? first + ITEM : w->n;
	uint64_t hist[256] = { 0 };
	uint32_t prev = first ? uhmm_simdev_load32(t, &w->in[first - 1])
			      : uhmm_simdev_load32(t, &w->in[0]);
	uint32_t cur = uhmm_simdev_load32(t, &w->in[first]);

	for (size_t j = first; j < last; j++) {
		uint32_t next = j + 1 < w->n ? uhmm_simdev_load32(t, &w->in[j + 1]) : cur;

		uhmm_simdev_store32(t, &w->out[j], stencil(prev, cur, next));
		hist[cur >> 24]++;
		prev = cur;
		cur = next;
	}
	for (int b = 0; b < 256; b++)
		if (hist[b])
			uhmm_simdev_atomic_add64(t, &w->bins[b], hist[b]);
	atomic_fetch_add(&w->done, 1);
}

struct progress {
	struct work *w;
	size_t items;
	atomic_bool stop;
	bool tty;
};

static void *progress_main(void *arg)
{
	struct progress *p = arg;
	int last = -1;

	while (!atomic_load(&p->stop)) {
		int pct = (int)(atomic_load(&p->w->done) * 100 / (p->items ? p->items : 1));

		if (p->tty && pct != last) {
			int bar = pct / 4;

			fprintf(stderr, "\r  device kernel [%.*s%*s] %3d%%", bar,
				"#########################", 25 - bar, "", pct);
			last = pct;
		} else if (!p->tty && pct / 25 != last / 25) {
			fprintf(stderr, "  device kernel: %d%% done\n", pct);
			last = pct;
		}
		/* A display refresh, not synchronisation. */
		usleep(100000);
	}
	if (p->tty)
		fprintf(stderr, "\r  device kernel [#########################] 100%%\n");
	return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: uhmm demo [options]\n"
		"\n"
		"Runs a stencil and a histogram on the simulated device over memory this\n"
		"program allocates with mmap: pages migrate to device memory when the\n"
		"device touches them and come back when the CPU reads the results, which\n"
		"are checked against a CPU-only computation.\n"
		"\n"
		"  --size MiB        input array size (default: 256, or 1/16 of RAM if less)\n"
		"  --capacity MiB    device memory (default: room for all the data; smaller\n"
		"                    values make the device evict pages to make room)\n"
		"  --fault-around N  pages brought back per CPU fault (power of two,\n"
		"                    default %d)\n"
		"  --policy P        migrate (default): pages move to the device on first\n"
		"                    device touch; mirror: the device accesses system\n"
		"                    memory in place through its page table\n"
		"  --threads N       device compute threads (default: CPUs, at most 8)\n"
		"  --quick           a 16 MiB run (for smoke tests)\n"
		"  --help            this text\n", UHMM_FAULT_AROUND_DEFAULT);
}

int uhmm_demo_main(int argc, char **argv)
{
	size_t size_mib = 256, cap_mib = 0, fault_around = 0;
	unsigned int threads = 0;
	int policy = UHMM_SIMDEV_POLICY_MIGRATE;
	long pages_total = sysconf(_SC_PHYS_PAGES);
	struct uhmm_simdev_config cfg = { 0 };
	struct uhmm_simdev_counters c0, c1, c2;
	struct uhmm_simdev_stats st = { 0 };
	struct uhmm_simdev *dev;
	struct progress prog = { 0 };
	struct work w = { 0 };
	uint32_t *ref_out;
	uint64_t ref_bins[256] = { 0 };
	uint64_t *lat;
	size_t nlat = 0, ps = (size_t)sysconf(_SC_PAGESIZE), bytes, mism = 0;
	uint64_t t0, t1, t2, t3;
	pthread_t pt;
	int ret;

	if (pages_total > 0 && (size_t)pages_total * ps / 16 < (256u << 20))
		size_mib = (size_t)pages_total * ps / 16 >> 20;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(a, "--quick")) {
			size_mib = 16;
		} else if (i + 1 < argc && !strcmp(a, "--size")) {
			size_mib = strtoul(argv[++i], NULL, 0);
		} else if (i + 1 < argc && !strcmp(a, "--capacity")) {
			cap_mib = strtoul(argv[++i], NULL, 0);
		} else if (i + 1 < argc && !strcmp(a, "--fault-around")) {
			fault_around = strtoul(argv[++i], NULL, 0);
		} else if (i + 1 < argc && !strcmp(a, "--threads")) {
			threads = (unsigned int)strtoul(argv[++i], NULL, 0);
		} else if (i + 1 < argc && !strcmp(a, "--policy")) {
			const char *p = argv[++i];

			if (!strcmp(p, "migrate"))
				policy = UHMM_SIMDEV_POLICY_MIGRATE;
			else if (!strcmp(p, "mirror"))
				policy = UHMM_SIMDEV_POLICY_MIRROR;
			else {
				fprintf(stderr, "uhmm demo: unknown policy '%s'\n", p);
				return 2;
			}
		} else {
			fprintf(stderr, "uhmm demo: unknown option '%s'\n", a);
			usage(stderr);
			return 2;
		}
	}
	if (size_mib == 0 || size_mib > (1u << 20)) {
		fprintf(stderr, "uhmm demo: --size must be 1..1048576 MiB\n");
		return 2;
	}
	if (fault_around & (fault_around - 1)) {
		fprintf(stderr, "uhmm demo: --fault-around must be a power of two\n");
		return 2;
	}
	bytes = size_mib << 20;
	w.n = bytes / sizeof(uint32_t);
	cfg.capacity_pages = cap_mib ? (cap_mib << 20) / ps : 2 * bytes / ps + 16;
	cfg.threads = threads;
	cfg.fault_around = fault_around;
	cfg.policy = (unsigned int)policy;
	cfg.migrate_window = 64;
	cfg.evict_when_full = true;
	ret = uhmm_simdev_create(&cfg, &dev);
	if (ret) {
		fprintf(stderr, "uhmm demo: cannot create the device: %s\n%s\n", strerror(-ret),
			uhmm_last_error());
		return 1;
	}

	printf("uhmm demo: %zu MiB input + %zu MiB output on the simulated device "
	       "(%zu MiB of device memory, policy %s)\n", size_mib, size_mib,
	       cfg.capacity_pages * ps >> 20, policy ? "migrate" : "mirror");
	/*
	 * 2 MiB-aligned buffers whose sizes are multiples of 2 MiB: the
	 * device's migration windows (aligned, at most 2 MiB) then never
	 * reach past a buffer into memory that happens to share its mapping
	 * (another allocation, a runtime's), which the device never touched.
	 */
	bytes = (bytes + HUGE - 1) & ~(size_t)(HUGE - 1);
	w.n = bytes / sizeof(uint32_t);
	w.in = map_aligned(bytes);
	w.out = map_aligned(bytes);
	w.bins = map_aligned(HUGE);
	ref_out = malloc(bytes);
	lat = malloc((bytes / ps + 1) * sizeof(*lat));
	if (w.in == MAP_FAILED || w.out == MAP_FAILED || w.bins == MAP_FAILED || !ref_out || !lat) {
		fprintf(stderr, "uhmm demo: out of memory\n");
		return 1;
	}

	/* 1. The CPU prepares the data and the expected answer. */
	{
		uint64_t x = 0x9e3779b97f4a7c15ull;

		for (size_t i = 0; i < w.n; i++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			w.in[i] = (uint32_t)x;
		}
		for (size_t i = 0; i < w.n; i++) {
			uint32_t a = w.in[i ? i - 1 : 0], b = w.in[i];
			uint32_t c = w.in[i + 1 < w.n ? i + 1 : i];

			ref_out[i] = stencil(a, b, c);
			ref_bins[b >> 24]++;
		}
	}
	printf("  CPU prepared %zu elements\n", w.n);

	/* 2. The device computes. */
	uhmm_simdev_get_counters(dev, &c0);
	prog.w = &w;
	prog.items = (w.n + ITEM - 1) / ITEM;
	prog.tty = isatty(STDERR_FILENO);
	pthread_create(&pt, NULL, progress_main, &prog);
	t0 = now_ns();
	ret = uhmm_simdev_launch(dev, prog.items, kernel, &w, &st);
	t1 = now_ns();
	atomic_store(&prog.stop, true);
	pthread_join(pt, NULL);
	if (ret) {
		fprintf(stderr, "uhmm demo: device kernel failed: %s\n", strerror(-ret));
		return 1;
	}
	uhmm_simdev_get_counters(dev, &c1);

	/* 3. The CPU reads the results: device-resident pages come back. */
	t2 = now_ns();
	for (size_t pg = 0; pg < bytes / ps; pg++) {
		uint64_t before = 0, ts = now_ns(), te;
		struct uhmm_simdev_counters cc;
		volatile uint32_t v;

		uhmm_simdev_get_counters(dev, &cc);
		before = cc.cpu_faults;
		v = w.out[pg * (ps / 4)];
		(void)v;
		te = now_ns();
		uhmm_simdev_get_counters(dev, &cc);
		if (cc.cpu_faults != before)
			lat[nlat++] = te - ts;
	}
	for (size_t i = 0; i < w.n; i++)
		mism += w.out[i] != ref_out[i];
	for (int b = 0; b < 256; b++)
		mism += w.bins[b] != ref_bins[b];
	for (size_t i = 0; i < w.n; i += ps / 4)
		(void)*(volatile uint32_t *)&w.in[i];	/* the input comes home too */
	t3 = now_ns();
	uhmm_simdev_get_counters(dev, &c2);

	qsort(lat, nlat, sizeof(*lat), cmp_u64);
	{
		uint64_t to_dev = c1.to_dev_pages - c0.to_dev_pages;
		uint64_t back = (c2.cpu_fault_pages - c0.cpu_fault_pages) +
				(c2.evicted_pages - c0.evicted_pages);
		double moved = (double)(to_dev + back) * (double)ps;

		printf("\n");
		printf("  device kernel            %8.1f ms  (%.2f GB/s of input)\n",
		       (double)(t1 - t0) / 1e6, (double)bytes / (double)(t1 - t0));
		printf("  CPU read-back + check    %8.1f ms\n", (double)(t3 - t2) / 1e6);
		printf("  pages to device          %8llu\n", (unsigned long long)to_dev);
		printf("  pages back to system     %8llu  (%llu by CPU faults, %llu evicted)\n",
		       (unsigned long long)back,
		       (unsigned long long)(c2.cpu_fault_pages - c0.cpu_fault_pages),
		       (unsigned long long)(c2.evicted_pages - c0.evicted_pages));
		printf("  device faults            %8llu\n",
		       (unsigned long long)(c2.device_faults - c0.device_faults));
		printf("  CPU faults served        %8llu\n",
		       (unsigned long long)(c2.cpu_faults - c0.cpu_faults));
		printf("  bytes moved              %8.1f MiB\n", moved / (1 << 20));
		if (nlat)
			printf("  CPU fault latency        median %.1f us, p99 %.1f us (%zu faults timed)\n",
			       (double)lat[nlat / 2] / 1e3,
			       (double)lat[(size_t)((double)(nlat - 1) * 0.99)] / 1e3, nlat);
		printf("  check against the CPU    %s\n", mism ? "FAILED" : "ok");
	}
	if (mism)
		fprintf(stderr, "uhmm demo: %zu results differ from the CPU computation\n", mism);
	uhmm_simdev_destroy(dev);
	munmap(w.in, bytes);
	munmap(w.out, bytes);
	munmap(w.bins, HUGE);
	free(ref_out);
	free(lat);
	return mism ? 1 : 0;
}
