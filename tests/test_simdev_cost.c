// SPDX-License-Identifier: MIT
/*
 * simdev's cost model (include/uhmm/simdev.h, "cost model"): the simulated
 * time of known work equals the model's formula, exactly (picoseconds).
 *
 *  - no model: migrations both ways, a CPU fault, device reads and a kernel
 *    accrue nothing; removing a model stops accrual;
 *  - presets: every name resolves, unknown names and bad figures are refused;
 *    UHMM_SIMDEV_MODEL gives a new device its preset, a bad name fails create;
 *  - migrations: 600 pages to the device and back are 2 batches each way
 *    (512 + 88 pages): latency per batch + bytes / bandwidth;
 *  - a CPU fault (fault-around 1): one service cost + one page back;
 *  - device faults: 10 faults with a batch size of 4 and a wide window cost
 *    3 services; with a window of 0, 10; with a window equal to the service
 *    cost (the clock moves only by it), 1;
 *  - a device kernel on 32 device-resident pages (1 thread): 32 pages of
 *    device memory traffic; the same kernel writing system memory in place
 *    (mirror policy): 32 pages over the link, device->system, no latency;
 *  - the model's capacity bounds the device's memory;
 *  - two threads migrating their own ranges at once: the totals are the sum.
 */
#include "common.h"

#include <uhmm/simdev.h>

#define RW	(PROT_READ | PROT_WRITE)

static uint64_t bytes_ps(uint64_t bytes, double gbps)
{
	uint64_t bps = (uint64_t)(gbps * 1e9 + 0.5);

	return bps ? (uint64_t)((unsigned __int128)bytes * 1000000000000ull / bps) : 0;
}

static struct uhmm_simdev *new_dev(size_t capacity, size_t fault_around, unsigned int threads,
				   unsigned int policy)
{
	struct uhmm_simdev_config cfg = {
		.capacity_pages = capacity, .fault_around = fault_around, .threads = threads,
		.policy = policy,
	};
	struct uhmm_simdev *d = NULL;
	int ret = uhmm_simdev_create(&cfg, &d);

	CHECK(ret == 0 && d, "uhmm_simdev_create: %d", ret);
	return d;
}

/* A model where nothing costs anything; callers set what they test. */
static struct uhmm_simdev_model zero_model(void)
{
	struct uhmm_simdev_model m;

	memset(&m, 0, sizeof(m));
	snprintf(m.name, sizeof(m.name), "test");
	snprintf(m.desc, sizeof(m.desc), "a test model");
	m.fault_batch_size = 1;
	return m;
}

static char *populated(size_t n)
{
	char *p = map_anon(n * page_size, RW);

	madvise(p, n * page_size, MADV_NOHUGEPAGE);	/* one page per copy, always */
	for (size_t i = 0; i < n; i++)
		memset(p + i * page_size, (int)(i * 7 + 1), page_size);
	return p;
}

static void check_data(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		CHECK(p[i * page_size] == (char)(i * 7 + 1) &&
		      p[i * page_size + page_size - 1] == (char)(i * 7 + 1),
		      "page %zu: data lost", i);
}

static struct uhmm_simdev_cost cost(struct uhmm_simdev *d)
{
	struct uhmm_simdev_cost c;

	CHECK_EQ(uhmm_simdev_get_cost(d, &c), 0);
	CHECK_EQ(c.total_ps, c.h2d_ps + c.d2h_ps + c.fault_ps + c.cpu_fault_ps + c.mem_ps);
	return c;
}

/* ---- kernels ------------------------------------------------------------------ */

struct kargs {
	char *base;
	bool write;
};

/* Item i: every 8 bytes of page i, read (summed into the page's first word) or written. */
static void page_kernel(struct uhmm_simdev_thread *t, size_t item, void *arg)
{
	struct kargs *k = arg;
	char *p = k->base + item * page_size;
	uint64_t sum = 0;

	for (size_t off = 0; off < page_size; off += 8) {
		if (k->write)
			uhmm_simdev_store64(t, p + off, off);
		else
			sum += uhmm_simdev_load64(t, p + off);
	}
	(void)sum;
}

/* ---- scenarios ---------------------------------------------------------------- */

static void test_off(void)
{
	struct uhmm_simdev *d = new_dev(0, 1, 1, UHMM_SIMDEV_POLICY_MIRROR);
	struct uhmm_simdev_model m;
	struct uhmm_simdev_stats st = { 0 };
	struct uhmm_simdev_cost c;
	const size_t n = 16;
	char *p = populated(n), *buf = malloc(2 * page_size);
	struct kargs k = { .base = p, .write = false };

	CHECK_EQ(uhmm_simdev_get_model(d, &m), -ENOENT);
	CHECK_EQ(uhmm_simdev_migrate_to_dev(d, p, n, &st), 0);
	CHECK_EQ(st.cpages, n);
	CHECK_EQ(uhmm_simdev_read(d, p, 2, buf, &st), 0);
	(void)*(volatile char *)p;				/* a CPU fault */
	CHECK_EQ(uhmm_simdev_migrate_to_sys(d, p + page_size, n - 1, &st), 0);
	CHECK_EQ(uhmm_simdev_launch(d, n, page_kernel, &k, NULL), 0);
	check_data(p, n);
	c = cost(d);
	CHECK(c.total_ps == 0 && c.h2d_bytes == 0 && c.d2h_bytes == 0 && c.mem_bytes == 0 &&
	      c.faults == 0 && c.cpu_faults == 0 && c.h2d_transfers == 0 &&
	      c.d2h_transfers == 0 && c.fault_batches == 0, "no model, yet %llu ps accrued",
	      (unsigned long long)c.total_ps);

	/* A model set, then removed: nothing more accrues. */
	m = zero_model();
	m.h2d_gbps = 1;
	m.h2d_latency_ns = 1000;
	CHECK_EQ(uhmm_simdev_set_model(d, &m), 0);
	CHECK_EQ(uhmm_simdev_migrate_to_dev(d, p, n, &st), 0);
	c = cost(d);
	CHECK_EQ(c.h2d_transfers, 1);
	CHECK_EQ(uhmm_simdev_set_model(d, NULL), 0);
	CHECK_EQ(uhmm_simdev_get_model(d, &m), -ENOENT);
	CHECK_EQ(uhmm_simdev_migrate_to_sys(d, p, n, &st), 0);
	CHECK_EQ(uhmm_simdev_migrate_to_dev(d, p, n, &st), 0);
	CHECK_EQ(cost(d).total_ps, c.total_ps);
	CHECK_EQ(uhmm_simdev_reset_cost(d), 0);
	CHECK_EQ(cost(d).total_ps, 0);
	uhmm_simdev_destroy(d);
	check_data(p, n);
	munmap(p, n * page_size);
	free(buf);
	printf("%s: ok: no model, or a model removed: nothing accrues\n", test_name);
}

static void test_presets(void)
{
	struct uhmm_simdev_model m, got;
	struct uhmm_simdev *d;
	unsigned int i;

	for (i = 0; uhmm_simdev_model_name(i); i++) {
		const char *name = uhmm_simdev_model_name(i);

		CHECK_EQ(uhmm_simdev_model_preset(name, &m), 0);
		CHECK(!strcmp(m.name, name) && m.desc[0], "preset %s", name);
		CHECK(m.h2d_gbps > 0 && m.d2h_gbps > 0 && m.mem_gbps > 0 &&
		      m.fault_batch_size >= 1 && m.capacity_bytes > 0, "preset %s: figures", name);
	}
	CHECK_EQ(i, 3);
	CHECK_EQ(uhmm_simdev_model_preset("pcie5x", &m), -ENOENT);
	CHECK_EQ(uhmm_simdev_model_preset(NULL, &m), -EINVAL);
	CHECK_EQ(uhmm_simdev_model_preset("pcie4", NULL), -EINVAL);

	d = new_dev(64, 0, 1, 0);
	m = zero_model();
	m.fault_batch_size = 0;
	CHECK_EQ(uhmm_simdev_set_model(d, &m), -EINVAL);
	m = zero_model();
	m.h2d_gbps = -1;
	CHECK_EQ(uhmm_simdev_set_model(d, &m), -EINVAL);
	m = zero_model();
	m.mem_gbps = 0.0 / 0.0;
	CHECK_EQ(uhmm_simdev_set_model(d, &m), -EINVAL);
	m = zero_model();
	memset(m.name, 'x', sizeof(m.name));
	CHECK_EQ(uhmm_simdev_set_model(d, &m), -EINVAL);
	CHECK_EQ(uhmm_simdev_set_model(NULL, NULL), -EINVAL);
	CHECK_EQ(uhmm_simdev_get_cost(d, NULL), -EINVAL);
	CHECK_EQ(uhmm_simdev_get_cost(NULL, &(struct uhmm_simdev_cost){ 0 }), -EINVAL);
	CHECK_EQ(uhmm_simdev_get_model(NULL, &got), -EINVAL);
	CHECK_EQ(uhmm_simdev_reset_cost(NULL), -EINVAL);
	CHECK_EQ(uhmm_simdev_get_model(d, &got), -ENOENT);	/* refusals set nothing */
	uhmm_simdev_destroy(d);

	/* The environment. */
	setenv("UHMM_SIMDEV_MODEL", "c2c", 1);
	d = new_dev(64, 0, 1, 0);
	CHECK_EQ(uhmm_simdev_get_model(d, &got), 0);
	CHECK(!strcmp(got.name, "c2c"), "UHMM_SIMDEV_MODEL=c2c gave '%s'", got.name);
	uhmm_simdev_destroy(d);
	setenv("UHMM_SIMDEV_MODEL", "nosuch", 1);
	d = (struct uhmm_simdev *)&got;
	CHECK_EQ(uhmm_simdev_create(NULL, &d), -EINVAL);
	CHECK(d == NULL, "a failed create left *out set");
	unsetenv("UHMM_SIMDEV_MODEL");
	printf("%s: ok: presets, refusals, UHMM_SIMDEV_MODEL\n", test_name);
}

static void test_migrations(void)
{
	struct uhmm_simdev *d = new_dev(1024, 0, 1, 0);
	struct uhmm_simdev_model m = zero_model();
	struct uhmm_simdev_stats st = { 0 };
	struct uhmm_simdev_cost c;
	const size_t n = 600, b1 = 512, b2 = n - 512;	/* simdev's batches: 512 pages */
	char *p = populated(n);
	uint64_t want_h2d, want_d2h;

	m.h2d_gbps = 10;
	m.d2h_gbps = 8;
	m.h2d_latency_ns = 1000;
	m.d2h_latency_ns = 3000;
	m.mem_gbps = 100;			/* no device access here: must stay 0 */
	m.fault_service_ns = 5000;		/* no device fault here either */
	CHECK_EQ(uhmm_simdev_set_model(d, &m), 0);
	CHECK_EQ(uhmm_simdev_migrate_to_dev(d, p, n, &st), 0);
	CHECK_EQ(st.cpages, n);
	want_h2d = 2 * 1000000ull + bytes_ps(b1 * page_size, 10) + bytes_ps(b2 * page_size, 10);
	c = cost(d);
	CHECK_EQ(c.h2d_ps, want_h2d);
	CHECK_EQ(c.h2d_bytes, n * page_size);
	CHECK_EQ(c.h2d_transfers, 2);
	CHECK_EQ(c.total_ps, want_h2d);
	CHECK_EQ(uhmm_simdev_migrate_to_sys(d, p, n, &st), 0);
	CHECK_EQ(st.cpages, n);
	want_d2h = 2 * 3000000ull + bytes_ps(b1 * page_size, 8) + bytes_ps(b2 * page_size, 8);
	c = cost(d);
	CHECK_EQ(c.d2h_ps, want_d2h);
	CHECK_EQ(c.d2h_bytes, n * page_size);
	CHECK_EQ(c.d2h_transfers, 2);
	CHECK_EQ(c.total_ps, want_h2d + want_d2h);
	CHECK(c.faults == 0 && c.mem_ps == 0 && c.cpu_faults == 0, "migrations only");
	check_data(p, n);
	uhmm_simdev_destroy(d);
	munmap(p, n * page_size);
	printf("%s: ok: %zu pages there and back: %llu + %llu ps, the formula's\n", test_name, n,
	       (unsigned long long)want_h2d, (unsigned long long)want_d2h);
}

static void test_cpu_fault(void)
{
	struct uhmm_simdev *d = new_dev(64, 1, 1, 0);	/* fault-around: 1 page */
	struct uhmm_simdev_model m = zero_model();
	struct uhmm_simdev_stats st = { 0 };
	struct uhmm_simdev_cost c;
	const size_t n = 8;
	char *p = populated(n);

	m.d2h_gbps = 8;
	m.d2h_latency_ns = 3000;
	m.cpu_fault_ns = 5000;
	CHECK_EQ(uhmm_simdev_migrate_to_dev(d, p, n, &st), 0);
	CHECK_EQ(uhmm_simdev_set_model(d, &m), 0);
	CHECK(p[3 * page_size] == (char)(3 * 7 + 1), "data");
	c = cost(d);
	CHECK_EQ(c.cpu_faults, 1);
	CHECK_EQ(c.cpu_fault_ps, 5000000);
	CHECK_EQ(c.d2h_transfers, 1);
	CHECK_EQ(c.d2h_bytes, page_size);
	CHECK_EQ(c.total_ps, 5000000 + 3000000 + bytes_ps(page_size, 8));
	check_data(p, n);
	uhmm_simdev_destroy(d);
	munmap(p, n * page_size);
	printf("%s: ok: a CPU fault: service + one page back\n", test_name);
}

/* 10 device reads of one fresh page each (10 device faults): the batches. */
static uint64_t batches_of(uint64_t window_ns, uint32_t size, uint64_t *fault_ps)
{
	struct uhmm_simdev *d = new_dev(64, 0, 1, UHMM_SIMDEV_POLICY_MIRROR);
	struct uhmm_simdev_model m = zero_model();
	struct uhmm_simdev_cost c;
	const size_t n = 10;
	char *p = populated(n), *buf = malloc(page_size);

	CHECK(buf, "malloc");
	m.fault_service_ns = 7000;
	m.fault_batch_window_ns = window_ns;
	m.fault_batch_size = size;
	CHECK_EQ(uhmm_simdev_set_model(d, &m), 0);
	for (size_t i = 0; i < n; i++)
		CHECK_EQ(uhmm_simdev_read(d, p + i * page_size, 1, buf, NULL), 0);
	c = cost(d);
	CHECK_EQ(c.faults, n);
	CHECK_EQ(c.h2d_transfers, n);			/* the reads, at no cost */
	CHECK_EQ(c.total_ps, c.fault_ps);
	*fault_ps = c.fault_ps;
	uhmm_simdev_destroy(d);
	munmap(p, n * page_size);
	free(buf);
	return c.fault_batches;
}

static void test_batches(void)
{
	uint64_t ps;

	CHECK_EQ(batches_of(1000000000, 4, &ps), 3);
	CHECK_EQ(ps, 3 * 7000000ull);
	CHECK_EQ(batches_of(0, 256, &ps), 10);
	CHECK_EQ(ps, 10 * 7000000ull);
	CHECK_EQ(batches_of(7000, 256, &ps), 1);
	CHECK_EQ(ps, 7000000ull);
	CHECK_EQ(batches_of(6999, 256, &ps), 10);
	printf("%s: ok: fault batches: size 4 -> 3, window 0 -> 10, window = service -> 1\n",
	       test_name);
}

static void test_kernel(void)
{
	struct uhmm_simdev *d = new_dev(64, 0, 1, 0);
	struct uhmm_simdev_model m = zero_model();
	struct uhmm_simdev_stats st = { 0 };
	struct uhmm_simdev_cost c;
	const size_t n = 32;
	char *p = populated(n);
	struct kargs k = { .base = p, .write = false };

	m.mem_gbps = 100;
	m.h2d_gbps = 10;
	m.d2h_gbps = 8;
	m.d2h_latency_ns = 3000;
	CHECK_EQ(uhmm_simdev_migrate_to_dev(d, p, n, &st), 0);
	CHECK_EQ(st.cpages, n);
	CHECK_EQ(uhmm_simdev_set_model(d, &m), 0);
	CHECK_EQ(uhmm_simdev_launch(d, n, page_kernel, &k, NULL), 0);
	c = cost(d);
	CHECK_EQ(c.mem_bytes, n * page_size);
	CHECK_EQ(c.mem_ps, n * bytes_ps(page_size, 100));
	CHECK_EQ(c.total_ps, c.mem_ps);
	uhmm_simdev_destroy(d);			/* the pages come home */
	check_data(p, n);

	/* In place: system memory over the link, writes device->system. */
	d = new_dev(64, 0, 1, UHMM_SIMDEV_POLICY_MIRROR);
	CHECK_EQ(uhmm_simdev_set_model(d, &m), 0);
	k.write = true;
	CHECK_EQ(uhmm_simdev_launch(d, n, page_kernel, &k, NULL), 0);
	c = cost(d);
	CHECK_EQ(c.d2h_bytes, n * page_size);
	CHECK_EQ(c.d2h_ps, n * bytes_ps(page_size, 8));
	CHECK_EQ(c.d2h_transfers, 0);
	CHECK(c.mem_bytes == 0 && c.h2d_bytes == 0, "mirror: no device memory traffic");
	for (size_t i = 0; i < n; i++)
		CHECK(*(uint64_t *)(p + i * page_size + 8) == 8, "kernel's write, page %zu", i);
	uhmm_simdev_destroy(d);
	munmap(p, n * page_size);
	printf("%s: ok: a kernel: one page of traffic per page translated\n", test_name);
}

static void test_capacity(void)
{
	struct uhmm_simdev *d = new_dev(64, 0, 1, 0);
	struct uhmm_simdev_model m = zero_model();
	struct uhmm_simdev_stats st = { 0 };
	const size_t n = 16;
	char *p = populated(n);

	m.capacity_bytes = 8 * page_size;
	CHECK_EQ(uhmm_simdev_set_model(d, &m), 0);
	CHECK_EQ(uhmm_simdev_migrate_to_dev(d, p, n, &st), 0);
	CHECK_EQ(st.cpages, 8);
	CHECK_EQ(uhmm_simdev_used_pages(d), 8);
	CHECK_EQ(uhmm_simdev_migrate_to_dev(d, p + 8 * page_size, 8, &st), -ENOMEM);
	CHECK_EQ(uhmm_simdev_set_model(d, NULL), 0);
	CHECK_EQ(uhmm_simdev_migrate_to_dev(d, p, n, &st), 0);
	CHECK_EQ(st.cpages, n);
	uhmm_simdev_destroy(d);
	check_data(p, n);
	munmap(p, n * page_size);
	printf("%s: ok: the model's capacity bounds the device\n", test_name);
}

struct mig_thread {
	struct uhmm_simdev *d;
	char *p;
	size_t n;
	int rounds;
	int err;
};

static void *mig_main(void *arg)
{
	struct mig_thread *t = arg;
	struct uhmm_simdev_stats st;

	for (int r = 0; r < t->rounds && !t->err; r++) {
		t->err = uhmm_simdev_migrate_to_dev(t->d, t->p, t->n, &st);
		if (!t->err && st.cpages != t->n)
			t->err = -EIO;
		if (!t->err)
			t->err = uhmm_simdev_migrate_to_sys(t->d, t->p, t->n, &st);
		if (!t->err && st.cpages != t->n)
			t->err = -EIO;
	}
	return NULL;
}

static void test_threads(void)
{
	struct uhmm_simdev *d = new_dev(1024, 0, 1, 0);
	struct uhmm_simdev_model m = zero_model();
	struct mig_thread t[2];
	pthread_t th[2];
	struct uhmm_simdev_cost c;
	const size_t n = 256;
	const int rounds = 20;
	uint64_t per_h2d, per_d2h;

	m.h2d_gbps = 10;
	m.d2h_gbps = 8;
	m.h2d_latency_ns = 1000;
	m.d2h_latency_ns = 3000;
	CHECK_EQ(uhmm_simdev_set_model(d, &m), 0);
	for (int i = 0; i < 2; i++) {
		t[i] = (struct mig_thread){ .d = d, .p = populated(n), .n = n, .rounds = rounds };
		CHECK_EQ(pthread_create(&th[i], NULL, mig_main, &t[i]), 0);
	}
	for (int i = 0; i < 2; i++) {
		pthread_join(th[i], NULL);
		CHECK(t[i].err == 0, "thread %d: %d", i, t[i].err);
		check_data(t[i].p, n);
		munmap(t[i].p, n * page_size);
	}
	per_h2d = 1000000ull + bytes_ps(n * page_size, 10);
	per_d2h = 3000000ull + bytes_ps(n * page_size, 8);
	c = cost(d);
	CHECK_EQ(c.h2d_transfers, 2 * rounds);
	CHECK_EQ(c.d2h_transfers, 2 * rounds);
	CHECK_EQ(c.h2d_ps, 2 * rounds * per_h2d);
	CHECK_EQ(c.d2h_ps, 2 * rounds * per_d2h);
	CHECK_EQ(c.total_ps, 2 * rounds * (per_h2d + per_d2h));
	uhmm_simdev_destroy(d);
	printf("%s: ok: two threads, %d rounds each: the sum, exactly\n", test_name, rounds);
}

static void start(void)
{
	unsetenv("UHMM_SIMDEV_MODEL");	/* the tests set their own models */
}

static const struct test_case cases[] = {
	TEST_CASE(test_off),
	TEST_CASE(test_presets),
	TEST_CASE(test_migrations),
	TEST_CASE(test_cpu_fault),
	TEST_CASE(test_batches),
	TEST_CASE(test_kernel),
	TEST_CASE(test_capacity),
	TEST_CASE(test_threads),
};

TEST_MAIN("test_simdev_cost", start, NULL)
