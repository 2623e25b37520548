/* SPDX-License-Identifier: MIT */
/* Shared helpers of the policy tests: a device with the layer attached, kernels. */
#ifndef UHMM_TEST_POLICY_COMMON_H
#define UHMM_TEST_POLICY_COMMON_H

#include "common.h"

#include <uhmm/policy.h>
#include <uhmm/simdev.h>

#define RW		(PROT_READ | PROT_WRITE)
#define BLK		((size_t)2 << 20)

/* A simdev with @cap pages and @threads compute threads, attached to @pol. */
static inline struct uhmm_simdev *pdev(struct uhmm_policy *pol, size_t cap, unsigned int threads,
				       int *id)
{
	struct uhmm_simdev_config cfg = { .capacity_pages = cap, .threads = threads,
					  .policy = UHMM_SIMDEV_POLICY_MIRROR };
	struct uhmm_simdev *d = NULL;
	int ret = uhmm_simdev_create(&cfg, &d);

	CHECK(ret == 0, "simdev create: %d", ret);
	ret = uhmm_simdev_attach_policy(d, pol, NULL, id);
	CHECK(ret == 0, "attach: %d", ret);
	return d;
}

static inline struct uhmm_policy *ppol(const struct uhmm_policy_config *cfg)
{
	struct uhmm_policy *pol = NULL;
	struct uhmm_mm *mm = test_mm();
	int ret = uhmm_policy_create(mm, cfg, &pol);

	CHECK(ret == 0, "policy create: %d", ret);
	uhmm_mm_put(mm);
	return pol;
}

static inline void pteardown(struct uhmm_policy *pol, struct uhmm_simdev **devs, int n)
{
	for (int i = 0; i < n; i++)
		CHECK_EQ(uhmm_simdev_attach_policy(devs[i], NULL, NULL, NULL), 0);
	uhmm_policy_destroy(pol);
	for (int i = 0; i < n; i++)
		uhmm_simdev_destroy(devs[i]);
}

/* Kernel: item i reads the first word of page pages[i] (pages: offsets in pages). */
struct touch {
	char *base;
	const size_t *pages;
	bool write;
	uint64_t add;
};

static inline void touch_kernel(struct uhmm_simdev_thread *t, size_t item, void *arg)
{
	struct touch *k = arg;
	uint64_t *p = (uint64_t *)(void *)(k->base + k->pages[item] * page_size);

	if (k->write)
		uhmm_simdev_store64(t, p, uhmm_simdev_load64(t, p) + k->add);
	else
		(void)uhmm_simdev_load64(t, p);
}

static inline void touch(struct uhmm_simdev *d, char *base, const size_t *pages, size_t n,
			 bool write)
{
	struct touch k = { .base = base, .pages = pages, .write = write, .add = 1 };
	struct uhmm_simdev_stats st = { 0 };
	int ret = uhmm_simdev_launch(d, n, touch_kernel, &k, &st);

	CHECK(ret == 0, "launch: %d", ret);
}

static inline void touch_one(struct uhmm_simdev *d, char *base, size_t page, bool write)
{
	touch(d, base, &page, 1, write);
}

static inline struct uhmm_policy_stats pstats(struct uhmm_policy_range *r, bool exact)
{
	struct uhmm_policy_stats st;
	int ret = uhmm_policy_range_stats(r, exact, &st);

	CHECK(ret == 0, "range stats: %d", ret);
	return st;
}

/* Pages of [p, p + n pages) in @d's memory, from the device's own snapshot. */
static inline size_t on_dev(struct uhmm_simdev *d, const void *p, size_t n)
{
	uint8_t *prot = malloc(n);
	size_t c = 0;
	int ret;

	CHECK(prot != NULL, "malloc");
	ret = uhmm_simdev_snapshot(d, p, n, prot, NULL);
	CHECK(ret == 0, "snapshot: %d", ret);
	for (size_t i = 0; i < n; i++)
		c += (prot[i] & 0xF0) == UHMM_SIMDEV_PROT_DEV_PRIVATE_LOCAL;
	free(prot);
	return c;
}

#endif
