// SPDX-License-Identifier: MIT
/*
 * "uhmm bench --model NAME" (figure "sim"): workloads run on simdev with a
 * cost model, reported in modelled time next to the wall time they took
 * here.  They are the workloads of the published measurements the model
 * is validated against (docs/PERFORMANCE.md, "Cost model"):
 *
 *  - an explicit migration of the whole buffer to the device (cudaMemcpy's
 *    counterpart) and back;
 *  - a device kernel streaming over the buffer in system memory with the
 *    migrate policy: every page arrives by a device fault (UVM's on-demand
 *    migration), 64 KiB per fault (a UVM prefetch-tree leaf), and again
 *    2 MiB per fault (a whole UVM VA block, the prefetcher's limit);
 *  - the CPU reading the buffer back from the device (CPU faults,
 *    adaptive fault-around).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "bench_sim.h"
#include "timing.h"

/* Item i: one 8-byte load per 64 bytes of page i (a streaming read). */
static void stream_kernel(struct uhmm_simdev_thread *t, size_t item, void *arg)
{
	const char *p = (const char *)arg + item * (size_t)sysconf(_SC_PAGESIZE);
	size_t ps = (size_t)sysconf(_SC_PAGESIZE);
	uint64_t sum = 0;

	for (size_t off = 0; off < ps; off += 64)
		sum += uhmm_simdev_load64(t, p + off);
	(void)sum;
}

static struct uhmm_simdev *sim_dev(const struct uhmm_simdev_model *m, size_t npages,
				   size_t window)
{
	struct uhmm_simdev_config cfg = {
		.capacity_pages = npages + 1024, .policy = UHMM_SIMDEV_POLICY_MIGRATE,
		.migrate_window = window,
	};
	struct uhmm_simdev *d = NULL;

	if (uhmm_simdev_create(&cfg, &d))
		return NULL;
	if (uhmm_simdev_set_model(d, m)) {
		uhmm_simdev_destroy(d);
		return NULL;
	}
	return d;
}

static double ms_of(uint64_t ps)
{
	return (double)ps / 1e9;
}

static bool intact(const char *p, size_t len, int r)
{
	size_t ps = (size_t)sysconf(_SC_PAGESIZE);

	for (size_t o = 0; o < len; o += ps)
		if (p[o] != (char)(r + 1))
			return false;
	return p[len - 1] == (char)(r + 1);
}

int bench_sim(const struct uhmm_simdev_model *m, size_t len, int reps, struct sim_figures *o)
{
	size_t ps = (size_t)sysconf(_SC_PAGESIZE), n = len / ps;
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	memset(o, 0, sizeof(*o));
	if (p == MAP_FAILED)
		return -1;
	madvise(p, len, MADV_NOHUGEPAGE);
	for (int r = 0; r < reps && r < SIM_MAX_REPS; r++) {
		struct uhmm_simdev_stats st;
		struct uhmm_simdev_cost c;
		struct uhmm_simdev *d;
		uint64_t t, wall = 0, sim = 0;

		memset(p, r + 1, len);
		/* Explicit migration there and back. */
		d = sim_dev(m, n, 16);
		if (!d)
			goto fail;
		t = now_ns();
		if (uhmm_simdev_migrate_to_dev(d, p, n, &st) || st.cpages != n)
			goto fail_dev;
		uhmm_simdev_get_cost(d, &c);
		o->explicit_gbs[r] = (double)len / ((double)c.total_ps / 1e3);
		sim += c.total_ps;
		uhmm_simdev_reset_cost(d);
		if (uhmm_simdev_migrate_to_sys(d, p, n, &st) || st.cpages != n)
			goto fail_dev;
		wall += now_ns() - t;
		uhmm_simdev_get_cost(d, &c);
		o->explicit_back_gbs[r] = (double)len / ((double)c.total_ps / 1e3);
		sim += c.total_ps;
		/* On demand, 64 KiB per device fault. */
		uhmm_simdev_reset_cost(d);
		t = now_ns();
		if (uhmm_simdev_launch(d, n, stream_kernel, p, NULL))
			goto fail_dev;
		wall += now_ns() - t;
		uhmm_simdev_get_cost(d, &c);
		o->ondemand64_gbs[r] = (double)len / ((double)c.total_ps / 1e3);
		o->batch_us[r] = c.fault_batches ?
			(double)(c.fault_ps + c.h2d_ps) / 1e6 / (double)c.fault_batches : 0;
		o->faults_per_batch[r] = c.fault_batches ?
			(double)c.faults / (double)c.fault_batches : 0;
		sim += c.total_ps;
		/* The CPU reads it back. */
		uhmm_simdev_reset_cost(d);
		t = now_ns();
		if (!intact(p, len, r))
			goto fail_dev;
		wall += now_ns() - t;
		uhmm_simdev_get_cost(d, &c);
		o->readback_gbs[r] = (double)len / ((double)c.total_ps / 1e3);
		sim += c.total_ps;
		uhmm_simdev_destroy(d);
		/* On demand, 2 MiB per device fault. */
		d = sim_dev(m, n, 512);
		if (!d)
			goto fail;
		t = now_ns();
		if (uhmm_simdev_launch(d, n, stream_kernel, p, NULL))
			goto fail_dev;
		wall += now_ns() - t;
		uhmm_simdev_get_cost(d, &c);
		o->ondemand2m_gbs[r] = (double)len / ((double)c.total_ps / 1e3);
		sim += c.total_ps;
		uhmm_simdev_destroy(d);		/* the pages come home, not timed */
		if (!intact(p, len, r))
			goto fail;
		o->wall_ms[r] = (double)wall / 1e6;
		o->sim_ms[r] = ms_of(sim);
		o->n = r + 1;
		continue;
fail_dev:
		fprintf(stderr, "bench: sim: %s\n", uhmm_last_error());
		uhmm_simdev_destroy(d);
		goto fail;
	}
	munmap(p, len);
	return 0;
fail:
	fprintf(stderr, "bench: sim: the workload failed (data or device): %s\n",
		uhmm_last_error());
	munmap(p, len);
	return -1;
}
