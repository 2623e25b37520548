// SPDX-License-Identifier: MIT
/*
 * Thrashing detection and mitigation, and the attributes that keep pages
 * where they are, on simdev with real memory and real threads.
 *
 *  - pin: the CPU and the device take turns writing one word of each of
 *    four pages; with UHMM_POLICY_THRASH_PIN the pages are found thrashing
 *    (3 migrations within the window), pinned in system memory and then
 *    written by the device in place: the migrations stop (the CPU faults
 *    no more), every value right; with UHMM_POLICY_THRASH_NONE the same
 *    rounds are counted as thrashing and keep migrating;
 *  - throttle: the faulting device is delayed and the page still migrates;
 *  - two threads at once: a CPU thread and a device kernel ping-pong on the
 *    same pages, each adding to its own word; every add counted;
 *  - preferred location CPU and accessed-by: device faults map the pages
 *    in system memory, nothing migrates.
 *
 * The thrashing window is 60 s here, so "3 migrations within the window"
 * holds whatever the machine's speed: no timing threshold is asserted.
 */
#include "policy_common.h"

#define NP	4		/* pages ping-ponged */
#define ROUNDS	12

static struct uhmm_policy_stats pingpong(unsigned int mitigation, struct uhmm_simdev_counters *c)
{
	struct uhmm_policy_config cfg = { .thrash_window_ns = 60ull * 1000000000u,
					  .thrash_mitigation = mitigation,
					  .throttle_ns = 100000 };
	struct uhmm_policy *pol = ppol(&cfg);
	struct uhmm_policy_attr at = { .preferred = UHMM_POLICY_NONE, .granularity = 1 };
	struct uhmm_policy_range *r;
	struct uhmm_policy_stats st;
	struct uhmm_simdev *d;
	size_t pages[NP];
	char *p = map_aligned_2m(BLK, RW);
	uint64_t faults_at_half = 0;

	memset(p, 0, BLK);
	for (size_t i = 0; i < NP; i++)
		pages[i] = i * 64;	/* far apart: CPU fault-around takes one each */
	d = pdev(pol, 1024, 1, NULL);
	CHECK_EQ(uhmm_policy_range_add(pol, p, BLK, &at, &r), 0);
	for (int round = 0; round < ROUNDS; round++) {
		touch(d, p, pages, NP, true);	/* device: word 0 += 1 */
		for (size_t i = 0; i < NP; i++) {
			volatile uint64_t *w = (volatile uint64_t *)(void *)(p + pages[i] * page_size);

			CHECK_EQ(w[0], (uint64_t)round + 1);
			w[1] += 1;		/* CPU: word 1 += 1 */
		}
		if (round == ROUNDS / 2)
			faults_at_half = pstats(r, false).cpu_faults;
	}
	st = pstats(r, true);
	for (size_t i = 0; i < NP; i++) {
		volatile uint64_t *w = (volatile uint64_t *)(void *)(p + pages[i] * page_size);

		CHECK_EQ(w[0], ROUNDS);
		CHECK_EQ(w[1], ROUNDS);
	}
	if (mitigation == UHMM_POLICY_THRASH_PIN) {
		CHECK_EQ(st.pinned, NP);
		CHECK_EQ(st.thrash_events, NP);
		CHECK_EQ(st.cpu_faults, faults_at_half);	/* no migration after the pin */
		CHECK_EQ(st.resident_dev[0], 0);
		CHECK(st.remote_maps >= NP, "remote maps %llu", (unsigned long long)st.remote_maps);
	} else {
		CHECK_EQ(st.pinned, 0);
		CHECK(st.thrash_events >= NP, "thrash events %llu",
		      (unsigned long long)st.thrash_events);
		CHECK(st.cpu_faults > faults_at_half, "CPU faults stopped without a pin");
		if (mitigation == UHMM_POLICY_THRASH_THROTTLE)
			CHECK_EQ(st.throttled, st.thrash_events);
		else
			CHECK_EQ(st.throttled, 0);
	}
	CHECK_EQ(uhmm_simdev_get_counters(d, c), 0);
	pteardown(pol, &d, 1);
	munmap(p, BLK);
	return st;
}

/* A CPU thread and device kernels at once on the same pages. */
struct race {
	char *p;
	atomic_int stop;
	uint64_t cpu_adds;
};

static void *cpu_side(void *arg)
{
	struct race *rc = arg;

	while (!atomic_load(&rc->stop)) {
		for (size_t i = 0; i < NP; i++)
			__atomic_fetch_add((uint64_t *)(void *)(rc->p + i * 64 * page_size) + 1, 1,
					   __ATOMIC_SEQ_CST);
		rc->cpu_adds++;
	}
	return NULL;
}

struct dev_adds {
	char *p;
};

static void dev_kernel(struct uhmm_simdev_thread *t, size_t item, void *arg)
{
	struct dev_adds *k = arg;

	uhmm_simdev_atomic_add64(t, k->p + (item % NP) * 64 * page_size, 1);
}

static void concurrent_case(void)
{
	struct uhmm_policy_config cfg = { .thrash_window_ns = 60ull * 1000000000u,
					  .thrash_mitigation = UHMM_POLICY_THRASH_PIN };
	struct uhmm_policy *pol = ppol(&cfg);
	struct uhmm_policy_attr at = { .preferred = UHMM_POLICY_NONE, .granularity = 1 };
	struct uhmm_policy_range *r;
	struct uhmm_policy_stats st;
	struct uhmm_simdev *d;
	struct race rc = { .p = map_aligned_2m(BLK, RW) };
	struct dev_adds k = { .p = rc.p };
	pthread_t th;
	const size_t items = 2000;
	uint64_t dev_total = 0, cpu_total = 0;

	memset(rc.p, 0, BLK);
	d = pdev(pol, 1024, 2, NULL);
	CHECK_EQ(uhmm_policy_range_add(pol, rc.p, BLK, &at, &r), 0);
	CHECK_EQ(pthread_create(&th, NULL, cpu_side, &rc), 0);
	for (int l = 0; l < 5; l++)
		CHECK_EQ(uhmm_simdev_launch(d, items, dev_kernel, &k, NULL), 0);
	atomic_store(&rc.stop, 1);
	pthread_join(th, NULL);
	for (size_t i = 0; i < NP; i++) {
		dev_total += ((uint64_t *)(void *)(rc.p + i * 64 * page_size))[0];
		cpu_total += ((uint64_t *)(void *)(rc.p + i * 64 * page_size))[1];
	}
	CHECK_EQ(dev_total, 5 * items);
	CHECK_EQ(cpu_total, rc.cpu_adds * NP);
	st = pstats(r, true);
	printf("%s: ok: CPU thread and device kernels at once: %llu + %llu adds all counted; "
	       "%llu thrash events, %llu pinned, %llu CPU faults\n", test_name,
	       (unsigned long long)dev_total, (unsigned long long)cpu_total,
	       (unsigned long long)st.thrash_events, (unsigned long long)st.pinned,
	       (unsigned long long)st.cpu_faults);
	pteardown(pol, &d, 1);
	munmap(rc.p, BLK);
}

static void stay_case(bool cpu_preferred)
{
	struct uhmm_policy *pol = ppol(NULL);
	struct uhmm_policy_range *r;
	struct uhmm_policy_stats st;
	struct uhmm_simdev *d;
	size_t pages[64];
	char *p = map_aligned_2m(BLK, RW);
	int id;

	memset(p, 0, BLK);
	for (size_t i = 0; i < 64; i++)
		pages[i] = i * 3;
	d = pdev(pol, 1024, 2, &id);
	{
		struct uhmm_policy_attr at = {
			.preferred = cpu_preferred ? UHMM_POLICY_CPU : UHMM_POLICY_NONE,
			.accessed_by = cpu_preferred ? 0 : 1u << id,
		};

		CHECK_EQ(uhmm_policy_range_add(pol, p, BLK, &at, &r), 0);
	}
	touch(d, p, pages, 64, true);
	st = pstats(r, true);
	CHECK_EQ(st.resident_dev[0], 0);
	CHECK_EQ(st.to_dev_pages, 0);
	CHECK_EQ(st.remote_maps, 64);
	CHECK_EQ(on_dev(d, p, BLK / page_size), 0);
	for (size_t i = 0; i < 64; i++)
		CHECK_EQ(*(uint64_t *)(void *)(p + pages[i] * page_size), 1);
	printf("%s: ok: %s: 64 device writes in place, nothing migrated\n", test_name,
	       cpu_preferred ? "preferred location CPU" : "accessed-by");
	pteardown(pol, &d, 1);
	munmap(p, BLK);
}

static void test_pingpong(void)
{
	struct uhmm_policy_stats pin, none, thr;
	struct uhmm_simdev_counters cp, cn, ct;

	pin = pingpong(UHMM_POLICY_THRASH_PIN, &cp);
	none = pingpong(UHMM_POLICY_THRASH_NONE, &cn);
	thr = pingpong(UHMM_POLICY_THRASH_THROTTLE, &ct);
	CHECK(cp.to_dev_pages < cn.to_dev_pages, "pinning did not save migrations: %llu vs %llu",
	      (unsigned long long)cp.to_dev_pages, (unsigned long long)cn.to_dev_pages);
	printf("%s: ok: pin: %d pages x %d rounds: %llu thrash events, %llu pinned, %llu pages "
	       "to the device, %llu CPU faults (without mitigation: %llu thrash events, %llu "
	       "pages to the device, %llu CPU faults)\n", test_name, NP, ROUNDS,
	       (unsigned long long)pin.thrash_events, (unsigned long long)pin.pinned,
	       (unsigned long long)cp.to_dev_pages, (unsigned long long)pin.cpu_faults,
	       (unsigned long long)none.thrash_events, (unsigned long long)cn.to_dev_pages,
	       (unsigned long long)none.cpu_faults);
	printf("%s: ok: throttle: %llu device faults delayed, %llu pages to the device\n",
	       test_name, (unsigned long long)thr.throttled, (unsigned long long)ct.to_dev_pages);
}

static void stay_cpu(void)
{
	stay_case(true);
}

static void stay_dev(void)
{
	stay_case(false);
}

static const struct test_case cases[] = {
	TEST_CASE(test_pingpong),
	{ "concurrent", concurrent_case },
	{ "stay_cpu_preferred", stay_cpu },
	{ "stay_dev_preferred", stay_dev },
};

TEST_MAIN("test_policy_thrash", NULL, NULL)
