// SPDX-License-Identifier: MIT
/*
 * simdev's cost model: presets and the accounting.  See cost.h and
 * include/uhmm/simdev.h ("cost model"); the presets' figures and their
 * sources are in docs/PERFORMANCE.md ("Cost model").
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "cost.h"

/* An immutable copy of a model, with its bandwidths in bytes per second. */
struct sd_model {
	struct uhmm_simdev_model pub;
	uint64_t h2d_bps, d2h_bps, mem_bps;	/* 0: free */
	struct sd_model *older;			/* the list of copies (c->all) */
};

#define GB 1000000000ull

/*
 * The presets.  Every figure is either taken from the source named in
 * docs/PERFORMANCE.md or marked there as an assumption.
 */
static const struct uhmm_simdev_model presets[] = {
	{
		.name = "pcie4",
		.desc = "a PCIe 4.0 x16 GPU (NVIDIA A100 40GB PCIe, HBM2)",
		.h2d_gbps = 25, .d2h_gbps = 25,
		.h2d_latency_ns = 2000, .d2h_latency_ns = 2000,
		.fault_service_ns = 30000,
		.fault_batch_window_ns = 50000,
		.fault_batch_size = 256,
		.cpu_fault_ns = 30000,
		.mem_gbps = 1555,
		.capacity_bytes = 40ull * GB,
	},
	{
		.name = "cxl",
		.desc = "a CXL Type-3 memory expander (PCIe 5.0 x8 link, DDR5)",
		.h2d_gbps = 25, .d2h_gbps = 25,
		.h2d_latency_ns = 250, .d2h_latency_ns = 250,
		.fault_service_ns = 0,
		.fault_batch_window_ns = 0,
		.fault_batch_size = 1,
		.cpu_fault_ns = 0,
		.mem_gbps = 25,
		.capacity_bytes = 128ull * GB,
	},
	{
		.name = "c2c",
		.desc = "a chip-to-chip coherent link (NVIDIA GH200, NVLink-C2C, HBM3)",
		.h2d_gbps = 450, .d2h_gbps = 450,
		.h2d_latency_ns = 200, .d2h_latency_ns = 200,
		.fault_service_ns = 30000,
		.fault_batch_window_ns = 50000,
		.fault_batch_size = 256,
		.cpu_fault_ns = 30000,
		.mem_gbps = 4000,
		.capacity_bytes = 96ull * GB,
	},
};

#define NPRESETS (sizeof(presets) / sizeof(presets[0]))

int uhmm_simdev_model_preset(const char *name, struct uhmm_simdev_model *out)
{
	if (!name || !out)
		return uhmm_set_error(EINVAL, "simdev model preset: NULL %s",
				      !name ? "name" : "output");
	for (size_t i = 0; i < NPRESETS; i++)
		if (!strcmp(presets[i].name, name)) {
			*out = presets[i];
			return 0;
		}
	return uhmm_set_error(ENOENT, "simdev model preset: no preset '%s' (pcie4, cxl, c2c)",
			      name);
}

const char *uhmm_simdev_model_name(unsigned int i)
{
	return i < NPRESETS ? presets[i].name : NULL;
}

/* GB/s into bytes/s; -1 for a value that is not a bandwidth. */
static int64_t to_bps(double gbps)
{
	if (!isfinite(gbps) || gbps < 0 || gbps > 1e9)
		return -1;
	return (int64_t)(gbps * 1e9 + 0.5);
}

void sd_cost_init(struct sd_cost *c)
{
	atomic_init(&c->model, NULL);
	for (int i = 0; i < SD_PARTS; i++)
		atomic_init(&c->ps[i], 0);
	for (int i = 0; i < SD_COUNTS; i++)
		atomic_init(&c->n[i], 0);
	pthread_mutex_init(&c->lock, NULL);
	c->all = NULL;
	c->batch_open_ps = 0;
	c->batch_n = 0;
}

void sd_cost_fini(struct sd_cost *c)
{
	struct sd_model *m = c->all;

	while (m) {
		struct sd_model *o = m->older;

		munmap(m, sizeof(*m));
		m = o;
	}
	c->all = NULL;
	atomic_store(&c->model, NULL);
	pthread_mutex_destroy(&c->lock);
}

int sd_cost_set(struct sd_cost *c, const struct uhmm_simdev_model *pub)
{
	struct sd_model *m;
	int64_t h2d, d2h, mem;

	if (!pub) {
		pthread_mutex_lock(&c->lock);
		atomic_store(&c->model, NULL);
		c->batch_n = 0;
		pthread_mutex_unlock(&c->lock);
		return 0;
	}
	h2d = to_bps(pub->h2d_gbps);
	d2h = to_bps(pub->d2h_gbps);
	mem = to_bps(pub->mem_gbps);
	if (h2d < 0 || d2h < 0 || mem < 0)
		return uhmm_set_error(EINVAL, "simdev set model: a bandwidth is negative, not "
				      "finite or above 10^9 GB/s");
	if (!pub->fault_batch_size)
		return uhmm_set_error(EINVAL, "simdev set model: fault_batch_size is 0");
	if (!memchr(pub->name, 0, sizeof(pub->name)) || !memchr(pub->desc, 0, sizeof(pub->desc)))
		return uhmm_set_error(EINVAL, "simdev set model: name or desc is not terminated");
	/* simdev's own memory, not the heap (simdev.c, "simdev's own memory"). */
	m = mmap(NULL, sizeof(*m), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return uhmm_set_error(ENOMEM, "simdev set model: out of memory");
	m->pub = *pub;
	m->h2d_bps = (uint64_t)h2d;
	m->d2h_bps = (uint64_t)d2h;
	m->mem_bps = (uint64_t)mem;
	pthread_mutex_lock(&c->lock);
	m->older = c->all;
	c->all = m;
	atomic_store(&c->model, m);
	c->batch_n = 0;
	pthread_mutex_unlock(&c->lock);
	return 0;
}

int sd_cost_model(struct sd_cost *c, struct uhmm_simdev_model *out)
{
	struct sd_model *m = atomic_load(&c->model);

	if (!m)
		return -ENOENT;
	*out = m->pub;
	return 0;
}

int sd_cost_from_env(struct sd_cost *c)
{
	const char *v = getenv("UHMM_SIMDEV_MODEL");
	struct uhmm_simdev_model m;

	if (!v || !*v)
		return 0;
	if (uhmm_simdev_model_preset(v, &m))
		return uhmm_set_error(EINVAL, "simdev create: UHMM_SIMDEV_MODEL=%s is no preset "
				      "(pcie4, cxl, c2c)", v);
	return sd_cost_set(c, &m);
}

/* @bytes at @bps, in picoseconds (rounded down); 0 for a free part. */
static uint64_t bytes_ps(uint64_t bytes, uint64_t bps)
{
	if (!bps)
		return 0;
	return (uint64_t)((unsigned __int128)bytes * 1000000000000ull / bps);
}

static void add(struct sd_cost *c, enum sd_part p, uint64_t ps)
{
	if (ps)
		atomic_fetch_add_explicit(&c->ps[p], ps, memory_order_relaxed);
}

static void count(struct sd_cost *c, enum sd_count k, uint64_t n)
{
	atomic_fetch_add_explicit(&c->n[k], n, memory_order_relaxed);
}

void sd_cost_transfer(struct sd_cost *c, bool to_dev, uint64_t bytes)
{
	struct sd_model *m = atomic_load_explicit(&c->model, memory_order_acquire);

	if (!m || !bytes)
		return;
	if (to_dev) {
		add(c, SD_H2D, m->pub.h2d_latency_ns * 1000 + bytes_ps(bytes, m->h2d_bps));
		count(c, SD_N_H2D_BYTES, bytes);
		count(c, SD_N_H2D_XFERS, 1);
	} else {
		add(c, SD_D2H, m->pub.d2h_latency_ns * 1000 + bytes_ps(bytes, m->d2h_bps));
		count(c, SD_N_D2H_BYTES, bytes);
		count(c, SD_N_D2H_XFERS, 1);
	}
}

void sd_cost_access(struct sd_cost *c, bool dev_mem, bool write, uint64_t bytes)
{
	struct sd_model *m = atomic_load_explicit(&c->model, memory_order_acquire);

	if (!m || !bytes)
		return;
	if (dev_mem) {
		add(c, SD_MEM, bytes_ps(bytes, m->mem_bps));
		count(c, SD_N_MEM_BYTES, bytes);
	} else if (write) {
		add(c, SD_D2H, bytes_ps(bytes, m->d2h_bps));
		count(c, SD_N_D2H_BYTES, bytes);
	} else {
		add(c, SD_H2D, bytes_ps(bytes, m->h2d_bps));
		count(c, SD_N_H2D_BYTES, bytes);
	}
}

/* The device's clock: everything accrued. */
static uint64_t clock_ps(struct sd_cost *c)
{
	uint64_t t = 0;

	for (int i = 0; i < SD_PARTS; i++)
		t += atomic_load_explicit(&c->ps[i], memory_order_relaxed);
	return t;
}

void sd_cost_device_fault(struct sd_cost *c)
{
	struct sd_model *m = atomic_load_explicit(&c->model, memory_order_acquire);
	uint64_t now;
	bool join;

	if (!m)
		return;
	pthread_mutex_lock(&c->lock);
	now = clock_ps(c);
	join = c->batch_n && c->batch_n < m->pub.fault_batch_size &&
	       now - c->batch_open_ps <= m->pub.fault_batch_window_ns * 1000;
	if (join) {
		c->batch_n++;
	} else {
		c->batch_open_ps = now;
		c->batch_n = 1;
		count(c, SD_N_BATCHES, 1);
		add(c, SD_FAULT, m->pub.fault_service_ns * 1000);
	}
	count(c, SD_N_FAULTS, 1);
	pthread_mutex_unlock(&c->lock);
}

void sd_cost_cpu_fault(struct sd_cost *c)
{
	struct sd_model *m = atomic_load_explicit(&c->model, memory_order_acquire);

	if (!m)
		return;
	add(c, SD_CPU_FAULT, m->pub.cpu_fault_ns * 1000);
	count(c, SD_N_CPU_FAULTS, 1);
}

bool sd_cost_full(struct sd_cost *c, uint64_t used, uint64_t ps)
{
	struct sd_model *m = atomic_load_explicit(&c->model, memory_order_acquire);

	return m && m->pub.capacity_bytes && (used + 1) * ps > m->pub.capacity_bytes;
}

void sd_cost_get(struct sd_cost *c, struct uhmm_simdev_cost *o)
{
	memset(o, 0, sizeof(*o));
	o->h2d_ps = atomic_load(&c->ps[SD_H2D]);
	o->d2h_ps = atomic_load(&c->ps[SD_D2H]);
	o->fault_ps = atomic_load(&c->ps[SD_FAULT]);
	o->cpu_fault_ps = atomic_load(&c->ps[SD_CPU_FAULT]);
	o->mem_ps = atomic_load(&c->ps[SD_MEM]);
	o->total_ps = o->h2d_ps + o->d2h_ps + o->fault_ps + o->cpu_fault_ps + o->mem_ps;
	o->h2d_bytes = atomic_load(&c->n[SD_N_H2D_BYTES]);
	o->d2h_bytes = atomic_load(&c->n[SD_N_D2H_BYTES]);
	o->mem_bytes = atomic_load(&c->n[SD_N_MEM_BYTES]);
	o->h2d_transfers = atomic_load(&c->n[SD_N_H2D_XFERS]);
	o->d2h_transfers = atomic_load(&c->n[SD_N_D2H_XFERS]);
	o->faults = atomic_load(&c->n[SD_N_FAULTS]);
	o->fault_batches = atomic_load(&c->n[SD_N_BATCHES]);
	o->cpu_faults = atomic_load(&c->n[SD_N_CPU_FAULTS]);
}

void sd_cost_reset(struct sd_cost *c)
{
	pthread_mutex_lock(&c->lock);
	for (int i = 0; i < SD_PARTS; i++)
		atomic_store(&c->ps[i], 0);
	for (int i = 0; i < SD_COUNTS; i++)
		atomic_store(&c->n[i], 0);
	c->batch_n = 0;
	pthread_mutex_unlock(&c->lock);
}
