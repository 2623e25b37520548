// SPDX-License-Identifier: MIT
/*
 * A device destroyed while its pages are mapped and while other threads
 * fault on them: uhmm_simdev_destroy() evicts every page it holds (its
 * uhmm_devmem_remove), racing CPU faults that bring the same pages back
 * through its migrate_to_ram.  Every thread must see the right bytes on
 * every read, nothing may hang, and afterwards no page is device-resident
 * and a new device works on the same memory.
 *
 * The interleaving differs from run to run; what is asserted holds for all
 * of them.  The readers are known to be faulting when the destroy starts:
 * each has served at least one fault-back of this round.
 */
#include <uhmm/simdev.h>

#include "common.h"

#define NAME "test_simdev_destroy"
#define NPAGES 512
#define READERS 3
#define ROUNDS 20

static char *mem;
/* The round readers work in: 0 while main changes the data, -1 at the end. */
static atomic_int active;
static atomic_int started;		/* readers that read in this round */
static atomic_int parked;		/* readers that saw the round end */
static atomic_long reads, bad;

static uint64_t expected(size_t page, size_t word, int round)
{
	return ((uint64_t)round << 40) ^ ((uint64_t)page << 20) ^ word;
}

static void fill_round(int round)
{
	for (size_t p = 0; p < NPAGES; p++) {
		uint64_t *w = (uint64_t *)(mem + p * page_size);

		for (size_t i = 0; i < page_size / 8; i++)
			w[i] = expected(p, i, round);
	}
}

static bool page_ok(size_t p, int round)
{
	const volatile uint64_t *w = (const volatile uint64_t *)(mem + p * page_size);

	for (size_t i = 0; i < page_size / 8; i++)
		if (w[i] != expected(p, i, round))
			return false;
	return true;
}

static void *reader(void *arg)
{
	unsigned int seed = (unsigned int)(uintptr_t)arg;
	int seen_round = 0, parked_round = 0;

	for (;;) {
		int r = atomic_load(&active);
		size_t p;

		if (r < 0)
			break;
		if (r == 0) {
			/* Between rounds: say so once, then keep off the data. */
			if (seen_round != parked_round) {
				parked_round = seen_round;
				atomic_fetch_add(&parked, 1);
			}
			sched_yield();
			continue;
		}
		p = (size_t)rand_r(&seed) % NPAGES;
		if (!page_ok(p, r))
			atomic_fetch_add(&bad, 1);
		atomic_fetch_add(&reads, 1);
		if (r != seen_round) {
			seen_round = r;
			atomic_fetch_add(&started, 1);
		}
	}
	return NULL;
}

static void test_destroy_under_faults(void)
{
	struct uhmm_simdev_config cfg = { .capacity_pages = NPAGES, .fault_around = 4 };
	struct uhmm_simdev_stats st;
	pthread_t th[READERS];
	uint8_t *prot = malloc(NPAGES);

	CHECK(prot, "malloc");
	mem = map_anon(NPAGES * page_size, PROT_READ | PROT_WRITE);
	for (int i = 0; i < READERS; i++)
		CHECK_EQ(pthread_create(&th[i], NULL, reader, (void *)(uintptr_t)(i + 1)), 0);

	for (int r = 1; r <= ROUNDS; r++) {
		struct uhmm_simdev *d = NULL;

		/* Readers idle (round over): new data, all of it on a new device. */
		fill_round(r);
		CHECK_EQ(uhmm_simdev_create(&cfg, &d), 0);
		CHECK_EQ(uhmm_simdev_migrate_to_dev(d, mem, NPAGES, &st), 0);
		CHECK_EQ(st.cpages, NPAGES);
		atomic_store(&started, 0);
		atomic_store(&parked, 0);
		atomic_store(&active, r);
		/* Every reader is faulting pages back of this round... */
		while (atomic_load(&started) < READERS)
			sched_yield();
		/* ...when the device goes away under them. */
		uhmm_simdev_destroy(d);
		atomic_store(&active, 0);
		while (atomic_load(&parked) < READERS)
			sched_yield();

		/* Nothing is left on a device; every byte is right. */
		{
			struct uhmm_simdev *probe = NULL;

			CHECK_EQ(uhmm_simdev_create(&cfg, &probe), 0);
			CHECK_EQ(uhmm_simdev_snapshot(probe, mem, NPAGES, prot, &st), 0);
			for (size_t p = 0; p < NPAGES; p++) {
				CHECK(!(prot[p] & UHMM_SIMDEV_PROT_DEV_PRIVATE_LOCAL),
				      "round %d: page %zu still device-resident (%#x)", r, p, prot[p]);
				CHECK(page_ok(p, r), "round %d: page %zu wrong after destroy", r, p);
			}
			/* The same memory works with the next device. */
			CHECK_EQ(uhmm_simdev_migrate_to_dev(probe, mem, 8, &st), 0);
			CHECK_EQ(st.cpages, 8);
			uhmm_simdev_destroy(probe);
			CHECK(page_ok(0, r), "round %d: page 0 after the probe device", r);
		}
		CHECK_EQ(atomic_load(&bad), 0);
	}
	atomic_store(&active, -1);
	for (int i = 0; i < READERS; i++)
		pthread_join(th[i], NULL);
	CHECK_EQ(atomic_load(&bad), 0);
	printf("%s: %d rounds, %d readers faulting while the device was destroyed: %ld reads, "
	       "all right, nothing left on a device\n", NAME, ROUNDS, READERS,
	       atomic_load(&reads));
	CHECK_EQ(munmap(mem, NPAGES * page_size), 0);
	free(prot);
}

static const struct test_case cases[] = {
	TEST_CASE(test_destroy_under_faults),
};

TEST_MAIN(NAME, NULL, NULL)
