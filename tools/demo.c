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
 *
 * Every figure printed says what it counts: a CPU fault on device-resident
 * memory brings back a whole window of pages (fault-around), so there are
 * far fewer CPU faults than pages brought back, and a fault's latency is
 * that of migrating its window.  The device is simulated by CPU threads
 * translating every access in software: its compute speed is the
 * simulator's; the page movement is uhmm's real work.
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
#include "demo_policy.h"
#include "opts.h"

#define ITEM 1024			/* elements per work item */
#define MIGRATE_WINDOW 64		/* pages the migrate policy moves at once */
#define FAULT_AROUND_MAX 2048		/* the adaptive window's limit (src/devmem.c) */

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

static double ms(uint64_t ps)
{
	return (double)ps / 1e9;
}

/*
 * The simulated time of the run (the device kernel: @k0..@k1; the CPU's
 * read-back: @k1..@k2) next to the wall time it took here.
 */
static void print_cost(const struct uhmm_simdev_model *m, const struct uhmm_simdev_cost *k0,
		       const struct uhmm_simdev_cost *k1, const struct uhmm_simdev_cost *k2,
		       double kernel_ms, double readback_ms)
{
	double mib = 1 << 20;

	printf("\nsimulated time on %s (%s)\n", m->desc, m->name);
	printf("  on it this run would take    %10.2f ms   (here: %.1f ms of wall time)\n",
	       ms(k2->total_ps - k0->total_ps), kernel_ms + readback_ms);
	printf("    the device kernel          %10.2f ms   (here: %.1f ms)\n",
	       ms(k1->total_ps - k0->total_ps), kernel_ms);
	printf("    the CPU's read-back        %10.2f ms   (here: %.1f ms)\n",
	       ms(k2->total_ps - k1->total_ps), readback_ms);
	printf("  of which\n");
	printf("    link system->device        %10.2f ms   %.1f MiB in %llu transfers\n",
	       ms(k2->h2d_ps), (double)k2->h2d_bytes / mib,
	       (unsigned long long)k2->h2d_transfers);
	printf("    link device->system        %10.2f ms   %.1f MiB in %llu transfers\n",
	       ms(k2->d2h_ps), (double)k2->d2h_bytes / mib,
	       (unsigned long long)k2->d2h_transfers);
	printf("    device fault service       %10.2f ms   %llu faults in %llu batches\n",
	       ms(k2->fault_ps), (unsigned long long)k2->faults,
	       (unsigned long long)k2->fault_batches);
	printf("    CPU fault service          %10.2f ms   %llu faults\n", ms(k2->cpu_fault_ps),
	       (unsigned long long)k2->cpu_faults);
	printf("    device memory traffic      %10.2f ms   %.1f MiB\n", ms(k2->mem_ps),
	       (double)k2->mem_bytes / mib);
	printf("  (a serial device: nothing overlaps; the sum is an upper bound)\n");
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
		"The device is simulated by CPU threads that translate every load and\n"
		"store through the device's page table in software: its compute speed is\n"
		"the simulator's, far below any real device's. The page movement (pages\n"
		"migrated, CPU faults and their latency) is uhmm's real work.\n"
		"\n"
		"Options take their value as '--opt value' or '--opt=value'.\n"
		"  --size MiB        input array size, 1..1048576 (default: 256, or 1/16 of\n"
		"                    the RAM if that is less); the output is as large\n"
		"  --capacity MiB    device memory, 1..1048576 (default: room for all the\n"
		"                    data; smaller values make the device evict pages)\n"
		"  --fault-around N  pages brought back by each CPU fault on device memory:\n"
		"                    a power of two 1..%d, or 'adaptive' (the default:\n"
		"                    %d pages around an isolated fault, the window doubling\n"
		"                    up to %d pages while the CPU faults sequentially)\n"
		"  --policy P        migrate (default): pages move to the device on first\n"
		"                    device touch, %d pages at a time; mirror: the device\n"
		"                    accesses system memory in place through its page table;\n"
		"                    or the policy layer decides (uhmm/policy.h): %s\n"
		"  --threads N       device compute threads, 1..64 (default: the number of\n"
		"                    CPUs, at most 8)\n"
		"  --model NAME      also report the simulated time of the run on a modelled\n"
		"                    device: pcie4 (a PCIe 4.0 x16 GPU), cxl (a CXL memory\n"
		"                    expander), c2c (a chip-to-chip coherent link, GH200);\n"
		"                    default: none, or UHMM_SIMDEV_MODEL's preset\n"
		"  --quick           a 16 MiB run (for smoke tests; --size wins)\n"
		"  -h, --help        this text\n"
		"\n"
		"Exit status: 0 results correct; 1 a result differs or the run failed;\n"
		"2 bad command line; 77 no userfaultfd here (see 'uhmm info').\n",
		FAULT_AROUND_MAX, UHMM_FAULT_AROUND_DEFAULT, FAULT_AROUND_MAX, MIGRATE_WINDOW,
		demo_policy_names());
}

/* --fault-around: "adaptive" (0) or a power of two 1..FAULT_AROUND_MAX. */
static int parse_fault_around(struct opts *o, size_t *out)
{
	const char *s;
	char *end;
	unsigned long v;

	if (opts_str(o, &s))
		return -1;
	if (!strcmp(s, "adaptive")) {
		*out = 0;
		return 0;
	}
	errno = 0;
	v = strtoul(s, &end, 10);
	if (s[0] < '0' || s[0] > '9' || *end || errno || v == 0 || v > FAULT_AROUND_MAX ||
	    (v & (v - 1)))
		return opts_bad_value(o, s, "not a power of two 1..%d, nor 'adaptive'",
				      FAULT_AROUND_MAX);
	*out = v;
	return 0;
}

/* The command line into the demo's settings; TOOL_EXIT_* or -1 to go on. */
static int parse_args(int argc, char **argv, size_t *size_mib, size_t *cap_mib,
		      size_t *fault_around, unsigned int *threads, int *policy,
		      struct uhmm_simdev_model *model, bool *have_model)
{
	bool quick = false, size_set = false;
	struct opts o;
	uint64_t v;

	opts_init(&o, "uhmm demo", argc, argv);
	while (opts_next(&o)) {
		if (opts_is(&o, "--quick")) {
			if (opts_flag(&o))
				return TOOL_EXIT_USAGE;
			quick = true;
		} else if (opts_is(&o, "--size")) {
			if (opts_u64(&o, 1, 1u << 20, &v))
				return TOOL_EXIT_USAGE;
			*size_mib = (size_t)v;
			size_set = true;
		} else if (opts_is(&o, "--capacity")) {
			if (opts_u64(&o, 1, 1u << 20, &v))
				return TOOL_EXIT_USAGE;
			*cap_mib = (size_t)v;
		} else if (opts_is(&o, "--fault-around")) {
			if (parse_fault_around(&o, fault_around))
				return TOOL_EXIT_USAGE;
		} else if (opts_is(&o, "--threads")) {
			if (opts_uint(&o, 1, 64, threads))
				return TOOL_EXIT_USAGE;
		} else if (opts_is(&o, "--model")) {
			if (opts_model(&o, model))
				return TOOL_EXIT_USAGE;
			*have_model = true;
		} else if (opts_is(&o, "--policy")) {
			const char *p;

			if (opts_str(&o, &p))
				return TOOL_EXIT_USAGE;
			if (!strcmp(p, "migrate"))
				*policy = UHMM_SIMDEV_POLICY_MIGRATE;
			else if (!strcmp(p, "mirror"))
				*policy = UHMM_SIMDEV_POLICY_MIRROR;
			else if (demo_policy_parse(p) >= 0)
				*policy = demo_policy_parse(p);
			else
				return opts_bad_value(&o, p, "not a policy (migrate, mirror, %s)",
						      demo_policy_names()),
				       TOOL_EXIT_USAGE;
		} else {
			return opts_other(&o, usage);
		}
	}
	if (quick && !size_set)
		*size_mib = 16;
	return -1;
}

int uhmm_demo_main(int argc, char **argv)
{
	size_t size_mib = 256, cap_mib = 0, fault_around = 0;
	unsigned int threads = 0;
	int policy = UHMM_SIMDEV_POLICY_MIGRATE;
	long pages_total = sysconf(_SC_PHYS_PAGES), ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	struct uhmm_simdev_config cfg = { 0 };
	struct uhmm_simdev_counters c0, c2;
	struct uhmm_simdev_model model;
	struct uhmm_simdev_cost k0, k1, k2;
	bool have_model = false;
	struct uhmm_simdev_stats st = { 0 };
	struct uhmm_simdev *dev;
	struct progress prog = { 0 };
	struct demo_policy *dpol = NULL;
	struct work w = { 0 };
	uint32_t *ref_out;
	uint64_t ref_bins[256] = { 0 };
	uint64_t *lat, *lat_pages;
	size_t nlat = 0, ps = (size_t)sysconf(_SC_PAGESIZE), bytes, mism = 0;
	uint64_t t0, t1, t2, t3;
	pthread_t pt;
	int ret;

	if (pages_total > 0 && (size_t)pages_total * ps / 16 < (256u << 20))
		size_mib = (size_t)pages_total * ps / 16 >> 20;
	if (size_mib == 0)
		size_mib = 1;
	ret = parse_args(argc, argv, &size_mib, &cap_mib, &fault_around, &threads, &policy,
			 &model, &have_model);
	if (ret >= 0)
		return ret;
	ret = tool_need_uffd("uhmm demo");
	if (ret)
		return ret;
	/*
	 * 2 MiB-aligned buffers whose sizes are multiples of 2 MiB: the
	 * device's migration windows (aligned, at most 2 MiB) then never
	 * reach past a buffer into memory that happens to share its mapping
	 * (another allocation, a runtime's), which the device never touched.
	 */
	bytes = ((size_mib << 20) + HUGE - 1) & ~(size_t)(HUGE - 1);
	w.n = bytes / sizeof(uint32_t);
	/* Room for the input, the output and the histogram's whole 2 MiB. */
	cfg.capacity_pages = cap_mib ? (cap_mib << 20) / ps : (2 * bytes + HUGE) / ps;
	cfg.threads = threads;
	cfg.fault_around = fault_around;
	cfg.policy = policy >= DEMO_POLICY_BASE ? UHMM_SIMDEV_POLICY_MIRROR : (unsigned int)policy;
	cfg.migrate_window = MIGRATE_WINDOW;
	cfg.evict_when_full = policy < DEMO_POLICY_BASE;	/* the layer evicts itself */
	ret = uhmm_simdev_create(&cfg, &dev);
	if (ret) {
		fprintf(stderr, "uhmm demo: cannot create the device: %s\n%s\n", strerror(-ret),
			uhmm_last_error());
		return TOOL_EXIT_FAIL;
	}
	if (have_model && (ret = uhmm_simdev_set_model(dev, &model))) {
		fprintf(stderr, "uhmm demo: cannot set the model: %s\n", uhmm_last_error());
		return TOOL_EXIT_FAIL;
	}
	have_model = uhmm_simdev_get_model(dev, &model) == 0;	/* UHMM_SIMDEV_MODEL too */
	if (!threads)
		threads = ncpu > 0 ? (unsigned int)(ncpu < 8 ? ncpu : 8) : 2;

	printf("uhmm demo: a stencil and a histogram over %zu MiB of input into %zu MiB of\n"
	       "output, computed by the simulated device, checked by the CPU\n",
	       size_mib, size_mib);
	printf("  device:        %zu MiB of device memory, %u compute threads (CPU threads\n"
	       "                 translating every access in software: a simulator)\n",
	       cfg.capacity_pages * ps >> 20, threads);
	if (policy >= DEMO_POLICY_BASE)
		demo_policy_describe(policy, stdout);
	else if (policy == UHMM_SIMDEV_POLICY_MIGRATE)
		printf("  policy:        migrate: a page moves into device memory when the device\n"
		       "                 first touches it, %d pages at a time%s\n", MIGRATE_WINDOW,
		       cap_mib ? "; the oldest are evicted\n"
				 "                 to system memory when device memory is full" : "");
	else
		printf("  policy:        mirror: the device reads and writes system memory in\n"
		       "                 place through its page table; no page moves\n");
	if (have_model)
		printf("  cost model:    %s: %s\n"
		       "                 link %.0f / %.0f GB/s, %.2f us per transfer; device faults\n"
		       "                 %.0f us per batch of up to %u; device memory %.0f GB/s\n",
		       model.name, model.desc, model.h2d_gbps, model.d2h_gbps,
		       (double)model.h2d_latency_ns / 1e3, (double)model.fault_service_ns / 1e3,
		       model.fault_batch_size, model.mem_gbps);
	if (fault_around)
		printf("  fault-around:  each CPU fault on device memory brings back the aligned\n"
		       "                 %zu pages around it\n", fault_around);
	else
		printf("  fault-around:  adaptive: a CPU fault on device memory brings back the\n"
		       "                 aligned %d pages around it, the window doubling up to\n"
		       "                 %d pages while the CPU faults sequentially\n",
		       UHMM_FAULT_AROUND_DEFAULT, FAULT_AROUND_MAX);

	w.in = map_aligned(bytes);
	w.out = map_aligned(bytes);
	w.bins = map_aligned(HUGE);
	ref_out = malloc(bytes);
	lat = malloc((bytes / ps + 1) * sizeof(*lat));
	lat_pages = malloc((bytes / ps + 1) * sizeof(*lat_pages));
	if (w.in == MAP_FAILED || w.out == MAP_FAILED || w.bins == MAP_FAILED || !ref_out ||
	    !lat || !lat_pages) {
		fprintf(stderr, "uhmm demo: out of memory\n");
		return TOOL_EXIT_FAIL;
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
	printf("\n1. the CPU wrote %zu input elements and computed the expected answer\n", w.n);
	if (policy >= DEMO_POLICY_BASE) {
		dpol = demo_policy_start(policy, dev, w.in, w.out, w.bins, bytes, HUGE);
		if (!dpol)
			return TOOL_EXIT_FAIL;
	}
	printf("2. the device computes%s\n", policy != UHMM_SIMDEV_POLICY_MIRROR ?
	       " (pages move to it as it touches them)" : " (on system memory, in place)");
	fflush(stdout);

	/* 2. The device computes. */
	uhmm_simdev_get_counters(dev, &c0);
	uhmm_simdev_reset_cost(dev);
	uhmm_simdev_get_cost(dev, &k0);
	prog.w = &w;
	prog.items = (w.n + ITEM - 1) / ITEM;
	prog.tty = isatty(STDERR_FILENO);
	pthread_create(&pt, NULL, progress_main, &prog);
	t0 = now_ns();
	ret = uhmm_simdev_launch(dev, prog.items, kernel, &w, &st);
	t1 = now_ns();
	uhmm_simdev_get_cost(dev, &k1);
	atomic_store(&prog.stop, true);
	pthread_join(pt, NULL);
	if (ret) {
		fprintf(stderr, "uhmm demo: device kernel failed: %s\n", strerror(-ret));
		return TOOL_EXIT_FAIL;
	}
	printf("3. the CPU reads the results and the input back (device-resident pages\n"
	   "   come back through CPU faults) and checks them\n");

	/*
	 * 3. The CPU reads the results: device-resident pages come back.  The
	 * first read of each output page is timed; a read during which the
	 * device served a CPU fault is one fault's latency, with the pages it
	 * brought back.
	 */
	t2 = now_ns();
	for (size_t pg = 0; pg < bytes / ps; pg++) {
		uint64_t ts, te;
		struct uhmm_simdev_counters cb, ca;
		volatile uint32_t v;

		uhmm_simdev_get_counters(dev, &cb);
		ts = now_ns();
		v = w.out[pg * (ps / 4)];
		(void)v;
		te = now_ns();
		uhmm_simdev_get_counters(dev, &ca);
		if (ca.cpu_faults != cb.cpu_faults) {
			lat[nlat] = te - ts;
			lat_pages[nlat++] = ca.cpu_fault_pages - cb.cpu_fault_pages;
		}
	}
	for (size_t i = 0; i < w.n; i++)
		mism += w.out[i] != ref_out[i];
	for (int b = 0; b < 256; b++)
		mism += w.bins[b] != ref_bins[b];
	for (size_t i = 0; i < w.n; i += ps / 4)
		(void)*(volatile uint32_t *)&w.in[i];	/* the input comes home too */
	t3 = now_ns();
	uhmm_simdev_get_counters(dev, &c2);
	uhmm_simdev_get_cost(dev, &k2);

	{
		uint64_t faults = c2.cpu_faults - c0.cpu_faults;
		uint64_t fault_pages = c2.cpu_fault_pages - c0.cpu_fault_pages;
		uint64_t evicted = c2.evicted_pages - c0.evicted_pages;
		uint64_t to_dev_all = c2.to_dev_pages - c0.to_dev_pages;
		uint64_t back = fault_pages + evicted;
		uint64_t left = to_dev_all > back ? to_dev_all - back : 0;
		double moved = (double)(to_dev_all + back) * (double)ps;
		double secs = (double)(t1 - t0) / 1e9;

		printf("\nresults (pages are %zu KiB)\n", ps >> 10);
		printf("  device kernel time           %10.1f ms   %.2f M elements/s: the simulator's\n"
		       "                                               speed, not a real device's\n",
		       (double)(t1 - t0) / 1e6, (double)w.n / secs / 1e6);
		printf("  CPU read-back + check time   %10.1f ms   includes bringing pages back\n",
		       (double)(t3 - t2) / 1e6);
		printf("  pages moved to the device    %10llu      on the device's first touch\n",
		       (unsigned long long)to_dev_all);
		printf("  pages moved back to system   %10llu      (= the two lines below)\n",
		       (unsigned long long)back);
		printf("    by CPU faults              %10llu      in %llu CPU faults: each fault brings\n"
		       "                                               back a window of pages, %.0f on average\n",
		       (unsigned long long)fault_pages, (unsigned long long)faults,
		       faults ? (double)fault_pages / (double)faults : 0.0);
		printf("    evicted                    %10llu      to make room in device memory\n",
		       (unsigned long long)evicted);
		printf("  pages left on the device     %10llu      never read back by the CPU; they\n"
		       "                                               return when the device is removed\n",
		       (unsigned long long)left);
		printf("  data moved, both directions  %10.1f MiB\n", moved / (1 << 20));
		printf("  device faults                %10llu      device page-table misses; each one\n"
		       "                                               fills or migrates a window of pages\n",
		       (unsigned long long)(c2.device_faults - c0.device_faults));
		if (nlat) {
			uint64_t sum_ns = 0, sum_pages = 0;
			bool few = nlat < 100;

			for (size_t i = 0; i < nlat; i++) {
				sum_ns += lat[i];
				sum_pages += lat_pages[i];
			}
			qsort(lat, nlat, sizeof(*lat), cmp_u64);
			printf("  CPU fault latency            median %.1f us, %s %.1f us, over the %zu faults\n"
			       "                               of the output's read-back; a fault returns once\n"
			       "                               its whole window is back (%.0f pages on average,\n"
			       "                               %.2f us per page brought back)\n",
			       (double)lat[nlat / 2] / 1e3, few ? "max" : "p99",
			       (double)lat[few ? nlat - 1 : (size_t)((double)(nlat - 1) * 0.99)] / 1e3,
			       nlat, (double)sum_pages / (double)nlat,
			       sum_pages ? (double)sum_ns / 1e3 / (double)sum_pages : 0.0);
		}
		printf("  check against the CPU        %s\n", mism ? "FAILED" : "ok");
	}
	if (have_model)
		print_cost(&model, &k0, &k1, &k2, (double)(t1 - t0) / 1e6, (double)(t3 - t2) / 1e6);
	if (dpol)
		demo_policy_report(dpol);
	if (mism)
		fprintf(stderr, "uhmm demo: %zu results differ from the CPU computation\n", mism);
	demo_policy_end(dpol);
	uhmm_simdev_destroy(dev);
	munmap(w.in, bytes);
	munmap(w.out, bytes);
	munmap(w.bins, HUGE);
	free(ref_out);
	free(lat);
	free(lat_pages);
	return mism ? TOOL_EXIT_FAIL : TOOL_EXIT_OK;
}
