// SPDX-License-Identifier: MIT
/*
 * "uhmm bench --policy": the policy layer's figures pol-1 .. pol-5.  Each
 * compares two policies on the same work in the same run, alternating
 * them repetition by repetition, and reports the medians of wall time and
 * of what moved.  Each figure's target was stated before it was first
 * measured (docs/PERFORMANCE.md, "Policy figures"); the output says met or
 * missed.  The device is simdev: its compute speed is the simulator's, the
 * page movement is uhmm's real work.  Every device the figures create has
 * a cost model (--model NAME, pcie4 when not given): its simulated time
 * (include/uhmm/simdev.h, "cost model"), reset right before each measured
 * run, is printed next to the wall time; the targets are judged on wall
 * time, the simulated ratio is printed beside them.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <uhmm/policy.h>
#include <uhmm/simdev.h>

#include "bench.h"
#include "opts.h"
#include "timing.h"

#define BLK	((size_t)2 << 20)

static size_t ps;
static bool quick;
static int reps = 3;
static struct uhmm_simdev_model model;	/* set on every device made */

static char *map_blocks(size_t len)
{
	char *p = mmap(NULL, len + BLK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		       -1, 0);
	char *a;

	if (p == MAP_FAILED)
		return NULL;
	a = (char *)(((uintptr_t)p + BLK - 1) & ~(uintptr_t)(BLK - 1));
	if (a > p)
		munmap(p, (size_t)(a - p));
	if (a + len < p + len + BLK)
		munmap(a + len, (size_t)(p + len + BLK - (a + len)));
	return a;
}

/* One measured run of one policy. */
struct run {
	double ms;
	uint64_t sim_ps;	/* simulated time (the sum over the run's devices) */
	uint64_t moved;		/* pages migrated, both ways */
	uint64_t dev_faults;
	bool ok;
};

static struct run median(struct run *r, int n)
{
	double ms[16], mv[16], df[16], sp[16];
	struct run m = { .ok = true };

	for (int i = 0; i < n; i++) {
		ms[i] = r[i].ms;
		mv[i] = (double)r[i].moved;
		df[i] = (double)r[i].dev_faults;
		sp[i] = (double)r[i].sim_ps;
		m.ok &= r[i].ok;
	}
	qsort(ms, (size_t)n, sizeof(double), cmp_d);
	qsort(mv, (size_t)n, sizeof(double), cmp_d);
	qsort(df, (size_t)n, sizeof(double), cmp_d);
	qsort(sp, (size_t)n, sizeof(double), cmp_d);
	m.ms = ms[n / 2];
	m.moved = (uint64_t)mv[n / 2];
	m.dev_faults = (uint64_t)df[n / 2];
	m.sim_ps = (uint64_t)sp[n / 2];
	return m;
}

/* A device, with a policy attached when @pol is not NULL. */
static struct uhmm_simdev *dev_make(struct uhmm_policy *pol, size_t cap, unsigned int policy,
				    size_t window, bool evict)
{
	struct uhmm_simdev_config cfg = { .capacity_pages = cap, .threads = 2, .policy = policy,
					  .migrate_window = window, .evict_when_full = evict };
	struct uhmm_simdev *d = NULL;

	if (uhmm_simdev_create(&cfg, &d))
		return NULL;
	if (uhmm_simdev_set_model(d, &model)) {
		uhmm_simdev_destroy(d);
		return NULL;
	}
	if (pol && uhmm_simdev_attach_policy(d, pol, NULL, NULL)) {
		uhmm_simdev_destroy(d);
		return NULL;
	}
	return d;
}

static struct uhmm_policy *pol_make(const struct uhmm_policy_config *cfg)
{
	struct uhmm_mm *mm;
	struct uhmm_policy *pol = NULL;

	if (uhmm_mm_get(&mm))
		return NULL;
	uhmm_policy_create(mm, cfg, &pol);
	uhmm_mm_put(mm);
	return pol;
}

/* The end of every run: the devices, the layer and the run's mapping (@p may be NULL). */
static void teardown(struct uhmm_policy *pol, struct uhmm_simdev **d, int n, char *p,
		     size_t len)
{
	for (int i = 0; i < n; i++)
		if (d[i] && pol)
			uhmm_simdev_attach_policy(d[i], NULL, NULL, NULL);
	uhmm_policy_destroy(pol);
	for (int i = 0; i < n; i++)
		uhmm_simdev_destroy(d[i]);
	if (p)
		munmap(p, len);
}

/* Simulated time starts at zero for the measured part of a run. */
static bool cost_reset(struct uhmm_simdev **d, int n)
{
	bool ok = true;

	for (int i = 0; i < n; i++)
		ok &= !uhmm_simdev_reset_cost(d[i]);
	return ok;
}

/* The simulated time the devices accrued since cost_reset(). */
static uint64_t sim_of(struct uhmm_simdev **d, int n)
{
	struct uhmm_simdev_cost c;
	uint64_t s = 0;

	for (int i = 0; i < n; i++)
		if (!uhmm_simdev_get_cost(d[i], &c))
			s += c.total_ps;
	return s;
}

/*
 * The end of a run's measured part, begun at @t0: its wall time, and over
 * the @n devices the simulated time, the pages moved (both ways) and the
 * device faults.
 */
static void measured(struct run *out, uint64_t t0, struct uhmm_simdev **d, int n)
{
	out->ms = (double)(now_ns() - t0) / 1e6;
	out->sim_ps = sim_of(d, n);
	out->moved = out->dev_faults = 0;
	for (int i = 0; i < n; i++) {
		struct uhmm_simdev_counters c;

		uhmm_simdev_get_counters(d[i], &c);
		out->moved += c.to_dev_pages + c.cpu_fault_pages + c.evicted_pages +
			      c.to_sys_pages;
		out->dev_faults += c.device_faults;
	}
}

/* Kernel: item i adds 1 to word 0 of page idx[i] (or reads it). */
struct pages_k {
	char *base;
	const size_t *idx;
	bool write;
	atomic_ullong sum;
};

static void pages_kernel(struct uhmm_simdev_thread *t, size_t item, void *arg)
{
	struct pages_k *k = arg;
	uint64_t *w = (uint64_t *)(void *)(k->base + k->idx[item] * ps);

	if (k->write)
		uhmm_simdev_atomic_add64(t, w, 1);
	else
		atomic_fetch_add_explicit(&k->sum, uhmm_simdev_load64(t, w), memory_order_relaxed);
}

/* Kernel: item i reads every 512th byte of page i (a streaming read). */
struct stream_k {
	const char *base;
	atomic_ullong sum;
};

static void stream_kernel(struct uhmm_simdev_thread *t, size_t item, void *arg)
{
	struct stream_k *k = arg;
	uint64_t s = 0;

	for (size_t off = 0; off < ps; off += 512)
		s += uhmm_simdev_load64(t, k->base + item * ps + off);
	atomic_fetch_add_explicit(&k->sum, s, memory_order_relaxed);
}

static void fill(char *p, size_t len)
{
	for (size_t i = 0; i < len / 8; i++)
		((uint64_t *)(void *)p)[i] = i;
}

static uint64_t expect_stream(size_t npages)
{
	uint64_t s = 0;

	for (size_t pg = 0; pg < npages; pg++)
		for (size_t off = 0; off < ps; off += 512)
			s += (pg * ps + off) / 8;
	return s;
}

/* ---- pol-1: oversubscription ------------------------------------------------ */

static struct run pol1(bool layer, size_t cap_blocks, int passes)
{
	size_t cap = cap_blocks * BLK / ps, len = cap_blocks * BLK * 3 / 2, n = len / ps;
	struct uhmm_policy *pol = layer ? pol_make(NULL) : NULL;
	struct uhmm_simdev *d = dev_make(pol, cap, layer ? UHMM_SIMDEV_POLICY_MIRROR :
					 UHMM_SIMDEV_POLICY_MIGRATE, 1, !layer);
	char *p = map_blocks(len);
	struct uhmm_policy_range *r;
	struct stream_k k = { .base = p };
	struct run out = { .ok = d && p && (!layer || pol) };
	uint64_t t0;

	if (!out.ok)
		goto done;
	fill(p, len);
	if (layer && uhmm_policy_range_add(pol, p, len, NULL, &r))
		out.ok = false;
	out.ok &= cost_reset(&d, 1);
	t0 = now_ns();
	for (int i = 0; i < passes && out.ok; i++)
		out.ok = !uhmm_simdev_launch(d, n, stream_kernel, &k, NULL);
	measured(&out, t0, &d, 1);
	out.ok &= atomic_load(&k.sum) == passes * expect_stream(n);
done:
	teardown(pol, &d, 1, p, len);
	return out;
}

/* ---- pol-2: ping-pong -------------------------------------------------------- */

static struct run pol2(bool mitigate, size_t npages, int rounds)
{
	struct uhmm_policy_config cfg = {
		.thrash_mitigation = mitigate ? UHMM_POLICY_THRASH_PIN : UHMM_POLICY_THRASH_NONE,
		/* 3 migrations within 500 us is UVM's rule; a simulated round trip
		 * here takes longer than a GPU's, so the window scales with it. */
		.thrash_window_ns = 50ull * 1000000u,
	};
	struct uhmm_policy_attr at = { .preferred = UHMM_POLICY_NONE, .granularity = 1 };
	struct uhmm_policy *pol = pol_make(&cfg);
	struct uhmm_simdev *d = dev_make(pol, 4 * npages + 64, UHMM_SIMDEV_POLICY_MIRROR, 0,
					 false);
	size_t len = npages * 64 * ps;
	char *p = map_blocks((len + BLK - 1) & ~(BLK - 1));
	size_t *idx = malloc(npages * sizeof(*idx));
	struct uhmm_policy_range *r;
	struct pages_k k = { .base = p, .idx = idx, .write = true };
	struct run out = { .ok = d && p && pol && idx };
	uint64_t t0;

	if (!out.ok)
		goto done;
	memset(p, 0, len);
	for (size_t i = 0; i < npages; i++)
		idx[i] = i * 64;	/* one page per fault-around window */
	out.ok = !uhmm_policy_range_add(pol, p, len, &at, &r);
	out.ok &= cost_reset(&d, 1);
	t0 = now_ns();
	for (int i = 0; i < rounds && out.ok; i++) {
		out.ok = !uhmm_simdev_launch(d, npages, pages_kernel, &k, NULL);
		for (size_t j = 0; j < npages; j++)
			((volatile uint64_t *)(void *)(p + idx[j] * ps))[1] += 1;
	}
	measured(&out, t0, &d, 1);
	for (size_t j = 0; j < npages && out.ok; j++)
		out.ok = ((uint64_t *)(void *)(p + idx[j] * ps))[0] == (uint64_t)rounds &&
			 ((uint64_t *)(void *)(p + idx[j] * ps))[1] == (uint64_t)rounds;
done:
	teardown(pol, &d, 1, p, (len + BLK - 1) & ~(BLK - 1));
	free(idx);
	return out;
}

/* ---- pol-3: sparse access ---------------------------------------------------- */

static struct run pol3(bool density, size_t blocks)
{
	struct uhmm_policy_config cfg = { .flags = density ? 0 : UHMM_POLICY_NO_DENSITY };
	struct uhmm_policy_attr at = { .preferred = UHMM_POLICY_NONE, .granularity = 1 };
	struct uhmm_policy *pol = pol_make(&cfg);
	size_t len = blocks * BLK, ppb = BLK / ps, n = 0;
	struct uhmm_simdev *d = dev_make(pol, 2 * len / ps, UHMM_SIMDEV_POLICY_MIRROR, 0, false);
	char *p = map_blocks(len);
	size_t *idx = malloc(len / ps * sizeof(*idx));
	struct uhmm_policy_range *r;
	struct pages_k k = { .base = p, .idx = idx };
	struct run out = { .ok = d && p && pol && idx };
	uint64_t t0, expect = 0;

	if (!out.ok)
		goto done;
	fill(p, len);
	/* 60% of each block's pages, in a scattered order, one word each. */
	for (size_t b = 0; b < blocks; b++)
		for (size_t j = 0; j < ppb; j++) {
			size_t pg = (j * 193) % ppb;

			if ((pg * 2654435761u >> 7) % 10 < 6) {
				idx[n++] = b * ppb + pg;
				expect += (b * ppb + pg) * ps / 8;
			}
		}
	out.ok = !uhmm_policy_range_add(pol, p, len, &at, &r);
	out.ok &= cost_reset(&d, 1);
	t0 = now_ns();
	out.ok &= !uhmm_simdev_launch(d, n, pages_kernel, &k, NULL);
	measured(&out, t0, &d, 1);
	out.ok &= atomic_load(&k.sum) == expect;
done:
	teardown(pol, &d, 1, p, len);
	free(idx);
	return out;
}

/* ---- pol-4: two devices read the same data ------------------------------------ */

static struct run pol4(bool read_mostly, size_t blocks, int rounds)
{
	struct uhmm_policy_attr at = { .preferred = UHMM_POLICY_NONE,
				       .read_mostly = read_mostly };
	struct uhmm_policy *pol = pol_make(NULL);
	size_t len = blocks * BLK, n = len / ps;
	struct uhmm_simdev *d[2] = { dev_make(pol, 2 * n, UHMM_SIMDEV_POLICY_MIRROR, 0, false),
				     dev_make(pol, 2 * n, UHMM_SIMDEV_POLICY_MIRROR, 0, false) };
	char *p = map_blocks(len);
	struct uhmm_policy_range *r;
	struct stream_k k = { .base = p };
	struct run out = { .ok = d[0] && d[1] && p && pol };
	uint64_t t0;

	if (!out.ok)
		goto done;
	fill(p, len);
	out.ok = !uhmm_policy_range_add(pol, p, len, &at, &r);
	out.ok &= cost_reset(d, 2);
	t0 = now_ns();
	for (int i = 0; i < 2 * rounds && out.ok; i++)
		out.ok = !uhmm_simdev_launch(d[i % 2], n, stream_kernel, &k, NULL);
	measured(&out, t0, d, 2);
	out.ok &= atomic_load(&k.sum) == 2 * (uint64_t)rounds * expect_stream(n);
done:
	teardown(pol, d, 2, p, len);
	return out;
}

/* ---- pol-5: prefetch overlapped with compute ----------------------------------- */

static struct run pol5(bool prefetch, size_t blocks)
{
	struct uhmm_policy *pol = pol_make(NULL);
	size_t len = blocks * BLK, n = len / ps, ppb = BLK / ps;
	struct uhmm_simdev *d = dev_make(pol, 2 * n, UHMM_SIMDEV_POLICY_MIRROR, 0, false);
	char *p = map_blocks(len);
	struct uhmm_policy_range *r;
	struct uhmm_policy_req **req = calloc(blocks, sizeof(*req));
	struct stream_k k = { .base = p };
	struct run out = { .ok = d && p && pol && req };
	uint64_t t0;
	int id = 0;

	if (!out.ok)
		goto done;
	fill(p, len);
	out.ok = !uhmm_policy_range_add(pol, p, len, NULL, &r);
	out.ok &= cost_reset(&d, 1);
	t0 = now_ns();
	/* Block by block: with prefetch, block b + 1 moves while b computes. */
	if (prefetch)
		out.ok &= !uhmm_policy_prefetch(pol, p, BLK, id, NULL, NULL, &req[0]);
	for (size_t b = 0; b < blocks && out.ok; b++) {
		struct stream_k kb = { .base = p + b * BLK };

		if (prefetch && b + 1 < blocks)
			out.ok &= !uhmm_policy_prefetch(pol, p + (b + 1) * BLK, BLK, id, NULL,
							NULL, &req[b + 1]);
		if (prefetch)
			out.ok &= !uhmm_policy_wait(req[b], NULL);
		out.ok &= !uhmm_simdev_launch(d, ppb, stream_kernel, &kb, NULL);
		atomic_fetch_add(&k.sum, atomic_load(&kb.sum));
	}
	measured(&out, t0, &d, 1);
	out.ok &= atomic_load(&k.sum) == expect_stream(n);
done:
	teardown(pol, &d, 1, p, len);
	free(req);
	return out;
}

/* ---- the table ---------------------------------------------------------------------- */

/*
 * A figure: two variants of one run (run(true) is "a", run(false) "b"),
 * and the target for b / a (0: none).
 */
struct fig {
	const char *id, *what, *a_name, *b_name, *target;
	double time_target, moved_target, fault_target;
	struct run (*run)(bool a);
};

static struct run fig_pol1(bool a)
{
	return pol1(a, quick ? 2 : 4, 3);
}

static struct run fig_pol2(bool a)
{
	return pol2(a, 16, quick ? 20 : 40);
}

static struct run fig_pol3(bool a)
{
	return pol3(a, quick ? 4 : 16);
}

static struct run fig_pol4(bool a)
{
	return pol4(a, quick ? 2 : 8, 3);
}

static struct run fig_pol5(bool a)
{
	return pol5(a, quick ? 4 : 16);
}


static const struct fig figs[] = {
	{ "pol-1", "oversubscription: working set 1.5x device memory, 3 streaming passes",
	  "layer: LRU blocks + density", "simdev per-page migrate + evict", ">= 2x less time",
	  2, 0, 0, fig_pol1 },
	{ "pol-2", "CPU/device ping-pong, 16 pages, 40 rounds", "layer: thrash pin",
	  "layer: no mitigation", ">= 10x fewer pages moved and >= 3x less time", 3, 10, 0,
	  fig_pol2 },
	{ "pol-3", "sparse device access: 60% of the pages of every block",
	  "layer: density prefetch", "layer: no density",
	  ">= 1.5x fewer device faults and >= 1.2x less time", 1.2, 0, 1.5, fig_pol3 },
	{ "pol-4", "two devices read the same data in turn, 3 rounds each",
	  "layer: read-mostly", "layer: migration", ">= 3x less time", 3, 0, 0, fig_pol4 },
	{ "pol-5", "block-by-block compute over the range", "layer: prefetch next block",
	  "layer: on-demand faults", ">= 1.3x less time", 1.3, 0, 0, fig_pol5 },
};

static int report(const struct fig *f, struct run *a, struct run *b)
{
	struct run ma = median(a, reps), mb = median(b, reps);
	double tr = ma.ms > 0 ? mb.ms / ma.ms : 0;
	double sr = ma.sim_ps ? (double)mb.sim_ps / (double)ma.sim_ps : 0;
	/* Nothing moved (or faulted) by the first: the ratio is unbounded. */
	double mr = ma.moved ? (double)mb.moved / (double)ma.moved : (mb.moved ? 1.0 / 0.0 : 1);
	double fr = ma.dev_faults ? (double)mb.dev_faults / (double)ma.dev_faults :
		    (mb.dev_faults ? 1.0 / 0.0 : 1);
	bool met = (!f->time_target || tr >= f->time_target) &&
		   (!f->moved_target || mr >= f->moved_target) &&
		   (!f->fault_target || fr >= f->fault_target);

	printf("%-6s %s\n", f->id, f->what);
	printf("       %-34s %10.1f ms wall %10.3f ms sim %10llu pages moved %8llu device "
	       "faults%s\n", f->a_name, ma.ms, (double)ma.sim_ps / 1e9,
	       (unsigned long long)ma.moved, (unsigned long long)ma.dev_faults,
	       ma.ok ? "" : "  CHECK FAILED");
	printf("       %-34s %10.1f ms wall %10.3f ms sim %10llu pages moved %8llu device "
	       "faults%s\n", f->b_name, mb.ms, (double)mb.sim_ps / 1e9,
	       (unsigned long long)mb.moved, (unsigned long long)mb.dev_faults,
	       mb.ok ? "" : "  CHECK FAILED");
	printf("       ratio (second / first): time %.2fx wall, %.2fx sim on %s; pages moved "
	       "%.2fx, device faults %.2fx\n", tr, sr, model.name, mr, fr);
	printf("       target %s (judged on wall time): %s; on simulated time: %s\n",
	       f->target, met ? "met" : "MISSED",
	       !f->time_target ? "no time target" :
	       sr >= f->time_target ? "time part met" : "time part missed");
	fflush(stdout);
	return ma.ok && mb.ok ? 0 : 1;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: uhmm bench --policy [--quick] [--reps N] [--model NAME]\n"
		"\n"
		"The policy layer's figures (pol-1 .. pol-5): each compares two policies on\n"
		"the same work in the same run (alternating, median of N repetitions):\n"
		"  pol-1 oversubscription (working set 1.5x device memory, 3 passes):\n"
		"        LRU block eviction + density prefetch vs simdev's per-page migrate\n"
		"  pol-2 CPU/device ping-pong on shared pages: thrash pinning vs none\n"
		"  pol-3 sparse device access (60%% of every block): density prefetch vs none\n"
		"  pol-4 two devices reading the same data: read-mostly vs migration\n"
		"  pol-5 block-by-block compute: prefetch of the next block vs on-demand\n"
		"\n"
		"  --quick   smaller sizes (a smoke run)\n"
		"  --reps N  repetitions, 1..15 (default 3)\n"
		"  --model NAME  the cost model set on every device (pcie4, cxl or c2c;\n"
		"            default pcie4): its simulated time is printed next to the\n"
		"            wall time; targets are judged on wall time\n");
}

int uhmm_bench_policy_main(int argc, char **argv)
{
	struct run a[16], b[16];
	struct opts o;
	unsigned int r;
	int bad = 0, ret;
	bool have_model = false;

	opts_init(&o, "uhmm bench --policy", argc, argv);
	while (opts_next(&o)) {
		if (opts_is(&o, "--quick")) {
			if (opts_flag(&o))
				return TOOL_EXIT_USAGE;
			quick = true;
		} else if (opts_is(&o, "--reps")) {
			if (opts_uint(&o, 1, 15, &r))
				return TOOL_EXIT_USAGE;
			reps = (int)r;
		} else if (opts_is(&o, "--model")) {
			if (opts_model(&o, &model))
				return TOOL_EXIT_USAGE;
			have_model = true;
		} else {
			return opts_other(&o, usage);
		}
	}
	ret = tool_need_uffd("uhmm bench");
	if (ret)
		return ret;
	ps = (size_t)sysconf(_SC_PAGESIZE);
	if (!have_model && uhmm_simdev_model_preset("pcie4", &model))
		return TOOL_EXIT_FAIL;
	printf("uhmm bench --policy: medians of %d alternating repetitions; wall time on this\n"
	       "machine (load average matters: see docs/PERFORMANCE.md); simdev's compute is\n"
	       "a simulator's, the page movement is real.  Simulated time: model %s\n"
	       "(%s),\nreset before each measured run, summed over the run's devices;\n"
	       "targets are judged on wall time\n\n", reps, model.name, model.desc);
	for (size_t f = 0; f < sizeof(figs) / sizeof(figs[0]); f++) {
		/* Alternating a and b, repetition by repetition. */
		for (int i = 0; i < reps; i++) {
			a[i] = figs[f].run(true);
			b[i] = figs[f].run(false);
		}
		bad |= report(&figs[f], a, b);
	}
	return bad ? TOOL_EXIT_FAIL : TOOL_EXIT_OK;
}
