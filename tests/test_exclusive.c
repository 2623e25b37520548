// SPDX-License-Identifier: MIT
/*
 * Device-exclusive access (uhmm_make_exclusive): taking pages, device
 * atomics through the holding address, the EXCLUSIVE invalidations (with
 * the owner when taken, without when the CPU revokes), revocation by CPU
 * read and write with the device's updates intact, fork and mprotect with
 * exclusive pages, bad input.
 */
#include "common.h"

struct rec {
	struct uhmm_interval_notifier mni;
	atomic_int excl_owner, excl_null, other;
};

static int owner_token;

static bool rec_inv(struct uhmm_interval_notifier *mni, const struct uhmm_notifier_range *r,
		    unsigned long seq)
{
	struct rec *rc = (struct rec *)mni;

	uhmm_interval_set_seq(mni, seq);
	if (r->event == UHMM_NOTIFY_EXCLUSIVE)
		atomic_fetch_add(r->owner == &owner_token ? &rc->excl_owner : &rc->excl_null, 1);
	else
		atomic_fetch_add(&rc->other, 1);
	return true;
}

static const struct uhmm_interval_notifier_ops rec_ops = { .invalidate = rec_inv };

static int child_check(void *arg)
{
	uint64_t *p = arg;

	for (int i = 0; i < 4; i++)
		if (p[i * 512] != 1000u + (unsigned)i + 1)
			return 10 + i;
	p[0] = 7;	/* the child's own copy */
	return 0;
}

int main(void)
{
	struct uhmm_mm *mm;
	const size_t n = 4;
	uint64_t *p;
	void *held[4];
	struct rec r = { 0 };
	long got;

	test_init("test_exclusive");
	mm = test_mm();
	p = map_anon(n * page_size, PROT_READ | PROT_WRITE);
	for (size_t i = 0; i < n; i++)
		p[i * 512] = 1000 + i;
	CHECK_EQ(uhmm_interval_notifier_insert(&r.mni, mm, (uintptr_t)p, n * page_size,
					       &rec_ops), 0);

	got = uhmm_make_exclusive(mm, (uintptr_t)p, n, &owner_token, held);
	CHECK_EQ(got, (long)n);
	CHECK(atomic_load(&r.excl_owner) >= 1, "EXCLUSIVE invalidation with the owner");
	for (size_t i = 0; i < n; i++) {
		uint32_t st = 0;

		CHECK(held[i] != NULL, "page %zu held", i);
		CHECK_EQ(((uint64_t *)held[i])[0], 1000 + i);
		CHECK_EQ(uhmm_page_state(mm, (uintptr_t)p + i * page_size, 1, &st), 0);
		CHECK(st & UHMM_PS_DEVICE_EXCLUSIVE, "state %#x", st);
		CHECK(uhmm_exclusive_held(mm, (uintptr_t)p + i * page_size, &owner_token) == held[i],
		      "held");
		/* Device atomics on the holding page. */
		__atomic_fetch_add((uint64_t *)held[i], 1, __ATOMIC_SEQ_CST);
	}
	/* Taking again gives the same pages. */
	{
		void *again[4];

		CHECK_EQ(uhmm_make_exclusive(mm, (uintptr_t)p, n, &owner_token, again), (long)n);
		for (size_t i = 0; i < n; i++)
			CHECK(again[i] == held[i], "same holding page");
	}
	printf("take exclusive, device atomics: ok\n");

	/* A CPU read of page 0 revokes exactly page 0, with the device's update. */
	CHECK_EQ(p[0], 1001);
	CHECK(atomic_load(&r.excl_null) >= 1, "EXCLUSIVE invalidation without owner on revoke");
	CHECK(uhmm_exclusive_held(mm, (uintptr_t)p, &owner_token) == NULL, "revoked");
	CHECK(uhmm_exclusive_held(mm, (uintptr_t)p + page_size, &owner_token) != NULL,
	      "page 1 still held");
	/* A CPU write revokes page 1. */
	p[512] += 0;
	CHECK_EQ(p[512], 1002);
	CHECK(uhmm_exclusive_held(mm, (uintptr_t)p + page_size, &owner_token) == NULL, "revoked");
	printf("CPU read and write revoke, data intact: ok\n");

	/* fork with pages 2-3 still exclusive: both processes see the data. */
	{
		int st = run_child(child_check, p);

		CHECK_EQ(st, 0);
		CHECK_EQ(p[0], 1001);
		CHECK_EQ(p[2 * 512], 1003);
		CHECK_EQ(p[3 * 512], 1004);
	}
	printf("fork with exclusive pages: ok\n");

	/* Exclusive, then mprotect read-only: data readable, writes refused. */
	CHECK_EQ(uhmm_make_exclusive(mm, (uintptr_t)p, n, &owner_token, held), (long)n);
	CHECK_EQ(mprotect(p, n * page_size, PROT_READ), 0);
	CHECK_EQ(p[3 * 512], 1004);
	CHECK_EQ(uhmm_make_exclusive(mm, (uintptr_t)p, n, &owner_token, held), -EPERM);
	CHECK_EQ(mprotect(p, n * page_size, PROT_READ | PROT_WRITE), 0);
	for (size_t i = 0; i < n; i++)
		CHECK_EQ(p[i * 512], 1000 + i + 1);
	printf("exclusive then mprotect: ok\n");

	/* Bad input. */
	CHECK_EQ(uhmm_make_exclusive(mm, (uintptr_t)p + 1, 1, &owner_token, held), -EINVAL);
	CHECK_EQ(uhmm_make_exclusive(mm, (uintptr_t)p, 0, &owner_token, held), -EINVAL);
	CHECK_EQ(uhmm_make_exclusive(mm, (uintptr_t)p, 1, NULL, held), -EINVAL);
	CHECK_EQ(uhmm_make_exclusive(NULL, (uintptr_t)p, 1, &owner_token, held), -EINVAL);
	printf("bad input: ok\n");

	/* munmap of exclusive pages frees them; teardown with none left. */
	CHECK_EQ(uhmm_make_exclusive(mm, (uintptr_t)p, n, &owner_token, held), (long)n);
	uhmm_interval_notifier_remove(&r.mni);
	CHECK_EQ(munmap(p, n * page_size), 0);
	uhmm_mm_put(mm);
	printf("test_exclusive: PASS\n");
	return 0;
}
