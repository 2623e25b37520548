// SPDX-License-Identifier: MIT
/*
 * The policy layer's migration policies, on simdev with real memory and
 * real compute threads.  Every scenario prints one line.
 *
 *  - density prefetch: touching every other 16-page granule of a 2 MiB
 *    block (50%) moves exactly those pages; one more granule (53%) moves
 *    the whole block, every byte right; with UHMM_POLICY_NO_DENSITY the
 *    same touches move only the granules;
 *  - LRU eviction by block: a device holding three blocks evicts the least
 *    recently used one (A, B, C touched in order, A touched again: D
 *    evicts B, then B evicts C), each block whole, every byte right;
 *  - eviction priority: under capacity pressure the lower-priority
 *    tenant's block goes first, even when the other tenant's is older;
 *  - budget: a tenant's pages on the device never exceed its budget while
 *    several compute threads fault all over a range four times larger,
 *    checked by a third thread against the device's own count all along;
 *  - prefetch: asynchronous, batched, completed through a handle and
 *    through a callback; to the device and back to the CPU, data intact;
 *  - discard: dropped from device memory without a migration back (no
 *    CPU-fault pages, no device page left, the range reads zeroes).
 */
#include "policy_common.h"

#include <ctype.h>
#include <semaphore.h>

static void fill(char *p, size_t len, uint64_t seed)
{
	for (size_t i = 0; i < len / 8; i++)
		((uint64_t *)(void *)p)[i] = seed * 0x9E3779B97F4A7C15ull + i;
}

static void check_fill(const char *p, size_t len, uint64_t seed)
{
	for (size_t i = 0; i < len / 8; i++)
		CHECK(((const uint64_t *)(const void *)p)[i] == seed * 0x9E3779B97F4A7C15ull + i,
		      "word %zu wrong", i);
}

static void density_case(bool off)
{
	struct uhmm_policy_config cfg = { .flags = off ? UHMM_POLICY_NO_DENSITY : 0 };
	struct uhmm_policy *pol = ppol(&cfg);
	struct uhmm_policy_attr at = { .preferred = UHMM_POLICY_NONE, .granularity = 16 };
	struct uhmm_policy_range *r;
	struct uhmm_simdev *d;
	struct uhmm_policy_stats st;
	size_t pages[16], n = 0, ppb = BLK / page_size;
	char *p = map_aligned_2m(BLK, RW);

	fill(p, BLK, 1);
	d = pdev(pol, 4 * ppb, 1, NULL);
	CHECK_EQ(uhmm_policy_range_add(pol, p, BLK, &at, &r), 0);
	/* Granules 0, 2, 4, ... 30: half the block, 16 of 32 granules. */
	for (size_t g = 0; g < ppb / 16; g += 2)
		pages[n++] = g * 16 + 3;
	touch(d, p, pages, n, false);
	st = pstats(r, true);
	CHECK_EQ(st.resident_dev[0], ppb / 2);
	CHECK_EQ(st.density_pages, 0);
	CHECK_EQ(on_dev(d, p, ppb), ppb / 2);
	/* One more granule: 17 of 32, past 51%. */
	touch_one(d, p, 16 + 5, false);
	st = pstats(r, true);
	if (off) {
		CHECK_EQ(st.resident_dev[0], ppb / 2 + 16);
		CHECK_EQ(st.density_pages, 0);
	} else {
		CHECK_EQ(st.resident_dev[0], ppb);
		CHECK_EQ(on_dev(d, p, ppb), ppb);
		CHECK(st.density_pages >= ppb / 2 - 16, "density moved %llu",
		      (unsigned long long)st.density_pages);
	}
	CHECK_EQ(st.dev_faults[0], n + 1);
	check_fill(p, BLK, 1);		/* CPU reads bring it all home */
	st = pstats(r, true);
	CHECK_EQ(st.resident_dev[0], 0);
	CHECK_EQ(st.resident_cpu, ppb);
	printf("%s: ok: density %s: 50%% of a block moves %zu pages, 53%% moves %llu "
	       "(density %llu), data intact\n", test_name, off ? "off" : "on", ppb / 2,
	       off ? (unsigned long long)(ppb / 2 + 16) : (unsigned long long)ppb,
	       (unsigned long long)st.density_pages);
	pteardown(pol, &d, 1);
	munmap(p, BLK);
}

static void lru_case(void)
{
	struct uhmm_policy *pol = ppol(NULL);
	size_t ppb = BLK / page_size;
	struct uhmm_policy_attr at = { .preferred = UHMM_POLICY_NONE, .granularity = ppb };
	struct uhmm_policy_range *r;
	struct uhmm_policy_stats st;
	struct uhmm_simdev *d;
	char *p = map_aligned_2m(4 * BLK, RW);
	const char *name = "ABCD";

	fill(p, 4 * BLK, 2);
	d = pdev(pol, 3 * ppb, 1, NULL);
	CHECK_EQ(uhmm_policy_range_add(pol, p, 4 * BLK, &at, &r), 0);
	for (size_t b = 0; b < 3; b++)
		touch_one(d, p, b * ppb, false);
	CHECK_EQ(on_dev(d, p, 4 * ppb), 3 * ppb);
	/* A again: the CPU takes a page back, the device faults on it. */
	CHECK_EQ(*(volatile uint64_t *)(void *)p, 2 * 0x9E3779B97F4A7C15ull);
	touch_one(d, p, 0, false);
	CHECK_EQ(on_dev(d, p, 4 * ppb), 3 * ppb);
	/* D: B is the least recently used block. */
	touch_one(d, p, 3 * ppb, false);
	for (size_t b = 0; b < 4; b++)
		CHECK(on_dev(d, p + b * BLK, ppb) == (b == 1 ? 0 : ppb), "block %c: %zu pages",
		      name[b], on_dev(d, p + b * BLK, ppb));
	/* B again: now C is. */
	touch_one(d, p, 1 * ppb, false);
	for (size_t b = 0; b < 4; b++)
		CHECK(on_dev(d, p + b * BLK, ppb) == (b == 2 ? 0 : ppb), "block %c: %zu pages",
		      name[b], on_dev(d, p + b * BLK, ppb));
	st = pstats(r, true);
	CHECK_EQ(st.evicted_blocks, 2);
	CHECK_EQ(st.evicted_pages, 2 * ppb);
	check_fill(p, 4 * BLK, 2);
	printf("%s: ok: LRU by block: D evicts B, B evicts C (2 blocks, %llu pages), "
	       "data intact\n", test_name, (unsigned long long)st.evicted_pages);
	pteardown(pol, &d, 1);
	munmap(p, 4 * BLK);
}

static void priority_case(void)
{
	struct uhmm_policy *pol = ppol(NULL);
	size_t ppb = BLK / page_size;
	struct uhmm_policy_attr lo = { .preferred = UHMM_POLICY_NONE, .granularity = ppb,
				       .tenant = 1 };
	struct uhmm_policy_attr hi = lo;
	struct uhmm_policy_range *rl, *rh;
	struct uhmm_simdev *d;
	char *p = map_aligned_2m(3 * BLK, RW);
	int id;

	hi.tenant = 2;
	fill(p, 3 * BLK, 3);
	d = pdev(pol, 2 * ppb, 1, &id);
	CHECK_EQ(uhmm_policy_set_budget(pol, 1, id, SIZE_MAX, 0), 0);
	CHECK_EQ(uhmm_policy_set_budget(pol, 2, id, SIZE_MAX, 5), 0);
	CHECK_EQ(uhmm_policy_range_add(pol, p, 2 * BLK, &hi, &rh), 0);
	CHECK_EQ(uhmm_policy_range_add(pol, p + 2 * BLK, BLK, &lo, &rl), 0);
	touch_one(d, p, 0, false);			/* high priority, oldest */
	touch_one(d, p, 2 * ppb, false);		/* low priority, newer */
	CHECK_EQ(on_dev(d, p, 3 * ppb), 2 * ppb);
	touch_one(d, p, ppb, false);			/* high priority needs room */
	CHECK_EQ(on_dev(d, p, 2 * ppb), 2 * ppb);
	CHECK_EQ(on_dev(d, p + 2 * BLK, ppb), 0);
	CHECK_EQ(uhmm_policy_tenant_pages(pol, 1, id), 0);
	CHECK_EQ(uhmm_policy_tenant_pages(pol, 2, id), 2 * ppb);
	check_fill(p, 3 * BLK, 3);
	printf("%s: ok: priority: the low-priority tenant's newer block is evicted before "
	       "the high-priority tenant's older one\n", test_name);
	pteardown(pol, &d, 1);
	munmap(p, 3 * BLK);
}

struct budget_run {
	struct uhmm_simdev *d;
	struct uhmm_policy *pol;
	char *p;
	size_t npages, budget;
	int id;
	atomic_int stop;
	size_t max_seen, max_layer, checks;
};

static void *budget_checker(void *arg)
{
	struct budget_run *b = arg;

	while (!atomic_load(&b->stop)) {
		size_t used = uhmm_simdev_used_pages(b->d);
		size_t layer = uhmm_policy_tenant_pages(b->pol, 0, b->id);

		if (used > b->max_seen)
			b->max_seen = used;
		if (layer > b->max_layer)
			b->max_layer = layer;
		b->checks++;
		sched_yield();
	}
	return NULL;
}

struct scatter {
	char *p;
	size_t npages;
};

static void scatter_kernel(struct uhmm_simdev_thread *t, size_t item, void *arg)
{
	struct scatter *s = arg;
	size_t pg = (item * 2654435761u) % s->npages;
	uint64_t *w = (uint64_t *)(void *)(s->p + pg * page_size);

	uhmm_simdev_atomic_add64(t, w + 1, 1);
}

static void budget_case(void)
{
	struct uhmm_policy *pol = ppol(NULL);
	struct uhmm_policy_attr at = { .preferred = UHMM_POLICY_NONE, .granularity = 16 };
	struct uhmm_policy_range *r;
	struct budget_run b = { .npages = 4 * BLK / page_size, .budget = 300 };
	struct scatter s;
	struct uhmm_policy_stats st;
	pthread_t th;
	uint64_t total = 0;
	const size_t items = 1500;
	int ret;

	b.p = map_aligned_2m(4 * BLK, RW);
	memset(b.p, 0, 4 * BLK);
	b.pol = pol;
	b.d = pdev(pol, 2 * b.npages, 3, &b.id);
	CHECK_EQ(uhmm_policy_set_budget(pol, 0, b.id, b.budget, 0), 0);
	CHECK_EQ(uhmm_policy_range_add(pol, b.p, 4 * BLK, &at, &r), 0);
	CHECK_EQ(pthread_create(&th, NULL, budget_checker, &b), 0);
	s = (struct scatter){ .p = b.p, .npages = b.npages };
	ret = uhmm_simdev_launch(b.d, items, scatter_kernel, &s, NULL);
	CHECK_EQ(ret, 0);
	ret = uhmm_simdev_launch(b.d, items, scatter_kernel, &s, NULL);
	CHECK_EQ(ret, 0);
	atomic_store(&b.stop, 1);
	pthread_join(th, NULL);
	st = pstats(r, true);
	CHECK(b.max_seen <= b.budget, "device held %zu pages, budget %zu", b.max_seen, b.budget);
	CHECK(b.max_layer <= b.budget, "layer counted %zu pages, budget %zu", b.max_layer,
	      b.budget);
	CHECK(st.resident_dev[0] <= b.budget, "resident %llu",
	      (unsigned long long)st.resident_dev[0]);
	CHECK(st.evicted_blocks > 0, "nothing evicted");
	for (size_t i = 0; i < b.npages; i++)
		total += ((uint64_t *)(void *)(b.p + i * page_size))[1];
	CHECK_EQ(total, 2 * items);
	printf("%s: ok: budget %zu pages never exceeded (max %zu on the device, %zu counted, "
	       "%zu checks), %llu blocks evicted, every add counted\n", test_name, b.budget,
	       b.max_seen, b.max_layer, b.checks, (unsigned long long)st.evicted_blocks);
	pteardown(pol, &b.d, 1);
	munmap(b.p, 4 * BLK);
}

struct done {
	sem_t sem;
	atomic_int calls;
	int status;
	uint64_t pages;
};

static void on_done(void *arg, int status, uint64_t pages)
{
	struct done *dn = arg;

	dn->status = status;
	dn->pages = pages;
	atomic_fetch_add(&dn->calls, 1);
	sem_post(&dn->sem);
}

static void prefetch_case(void)
{
	struct uhmm_policy *pol = ppol(NULL);
	struct uhmm_policy_range *r;
	struct uhmm_policy_req *q;
	struct uhmm_policy_stats st;
	struct uhmm_simdev *d;
	size_t n = 2 * BLK / page_size;
	char *p = map_aligned_2m(2 * BLK, RW);
	struct done dn = { .calls = 0 };
	uint64_t pages = 0;
	int id;

	fill(p, 2 * BLK, 4);
	d = pdev(pol, 2 * n, 2, &id);
	CHECK_EQ(uhmm_policy_range_add(pol, p, 2 * BLK, NULL, &r), 0);
	CHECK_EQ(uhmm_policy_prefetch(pol, p, 2 * BLK, id, NULL, NULL, &q), 0);
	CHECK_EQ(uhmm_policy_wait(q, &pages), 0);
	CHECK_EQ(pages, n);
	CHECK_EQ(on_dev(d, p, n), n);
	st = pstats(r, false);
	CHECK_EQ(st.prefetched_pages, n);
	CHECK_EQ(st.resident_dev[0], n);
	/* Back to the CPU, completion by callback. */
	sem_init(&dn.sem, 0, 0);
	CHECK_EQ(uhmm_policy_prefetch(pol, p, 2 * BLK, UHMM_POLICY_CPU, on_done, &dn, NULL), 0);
	while (sem_wait(&dn.sem) && errno == EINTR)
		;
	CHECK_EQ(atomic_load(&dn.calls), 1);
	CHECK_EQ(dn.status, 0);
	CHECK_EQ(dn.pages, n);
	CHECK_EQ(on_dev(d, p, n), 0);
	st = pstats(r, true);
	CHECK_EQ(st.resident_cpu, n);
	CHECK_EQ(st.cpu_faults, 0);
	check_fill(p, 2 * BLK, 4);
	/* Several requests in flight complete in order; a bad one is refused. */
	{
		struct uhmm_policy_req *qs[4];

		for (int k = 0; k < 4; k++)
			CHECK_EQ(uhmm_policy_prefetch(pol, p + (size_t)k * BLK / 2, BLK / 2,
						      k % 2 ? UHMM_POLICY_CPU : id, NULL, NULL,
						      &qs[k]), 0);
		for (int k = 0; k < 4; k++)
			CHECK_EQ(uhmm_policy_wait(qs[k], NULL), 0);
		CHECK_EQ(on_dev(d, p, n), n / 2);
		CHECK_EQ(uhmm_policy_prefetch(pol, p + 1, BLK, id, NULL, NULL, NULL), -EINVAL);
		CHECK_EQ(uhmm_policy_prefetch(pol, p, BLK, 7, NULL, NULL, NULL), -EINVAL);
	}
	check_fill(p, 2 * BLK, 4);
	sem_destroy(&dn.sem);
	printf("%s: ok: prefetch of %zu pages to the device (handle) and back (callback), "
	       "4 requests in flight, data intact\n", test_name, n);
	pteardown(pol, &d, 1);
	munmap(p, 2 * BLK);
}

static void discard_case(void)
{
	struct uhmm_policy *pol = ppol(NULL);
	struct uhmm_policy_range *r;
	struct uhmm_policy_req *q;
	struct uhmm_policy_stats st;
	struct uhmm_simdev_counters c0, c1;
	struct uhmm_simdev *d;
	size_t n = BLK / page_size;
	char *p = map_aligned_2m(BLK, RW);
	long got;
	int id;

	fill(p, BLK, 5);
	d = pdev(pol, 2 * n, 1, &id);
	CHECK_EQ(uhmm_policy_range_add(pol, p, BLK, NULL, &r), 0);
	CHECK_EQ(uhmm_policy_prefetch(pol, p, BLK, id, NULL, NULL, &q), 0);
	CHECK_EQ(uhmm_policy_wait(q, NULL), 0);
	CHECK_EQ(uhmm_simdev_used_pages(d), n);
	CHECK_EQ(uhmm_simdev_get_counters(d, &c0), 0);
	got = uhmm_policy_discard(pol, p, BLK);
	CHECK_EQ(got, (long)n);
	CHECK_EQ(uhmm_simdev_used_pages(d), 0);
	CHECK_EQ(on_dev(d, p, n), 0);
	for (size_t i = 0; i < BLK / 8; i++)
		CHECK(((uint64_t *)(void *)p)[i] == 0, "word %zu not zero", i);
	CHECK_EQ(uhmm_simdev_get_counters(d, &c1), 0);
	CHECK_EQ(c1.cpu_fault_pages, c0.cpu_fault_pages);
	CHECK_EQ(c1.cpu_faults, c0.cpu_faults);
	CHECK_EQ(c1.evicted_pages, c0.evicted_pages);
	CHECK_EQ(c1.to_sys_pages, c0.to_sys_pages);
	st = pstats(r, false);
	CHECK_EQ(st.discarded, n);
	CHECK_EQ(st.resident_cpu, n);
	CHECK_EQ(st.to_sys_pages, 0);
	printf("%s: ok: discard drops %zu device pages without migrating them back "
	       "(no CPU fault, no eviction), the range reads zeroes\n", test_name, n);
	pteardown(pol, &d, 1);
	munmap(p, BLK);
}

/*
 * "test_policy_migrate budget N": the budget case alone, N rounds, each in
 * a child of its own; prints how many rounds failed (the reproducer of the
 * out-of-order snapshots, docs/CONCURRENCY.md "The policy layer").
 */
static int budget_rounds(int rounds)
{
	int failed = 0;

	for (int i = 0; i < rounds; i++) {
		pid_t pid = fork();
		int status;

		CHECK(pid >= 0, "fork");
		if (pid == 0) {
			budget_case();
			_exit(0);
		}
		CHECK_EQ(waitpid(pid, &status, 0), pid);
		failed += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	printf("%s: budget: %d of %d rounds failed\n", test_name, failed, rounds);
	return failed ? 1 : 0;
}

static void density_on(void)
{
	density_case(false);
}

static void density_off(void)
{
	density_case(true);
}

static const struct test_case cases[] = {
	{ "density", density_on },
	{ "density_off", density_off },
	{ "lru", lru_case },
	{ "priority", priority_case },
	{ "budget", budget_case },
	{ "prefetch", prefetch_case },
	{ "discard", discard_case },
};

/*
 * `test_policy_migrate budget ROUNDS`: the budget scenario's rounds alone
 * (a number second; `budget` alone, or with other case names, is the case).
 */
int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "budget") && isdigit((unsigned char)argv[2][0])) {
		test_init("test_policy_migrate");
		return budget_rounds(atoi(argv[2]));
	}
	return test_main(argc, argv, "test_policy_migrate", TEST_CASES(cases), NULL, NULL);
}
