// SPDX-License-Identifier: MIT
/*
 * "uhmm demo --policy <preset>": the demo's device faults decided by the
 * policy layer (include/uhmm/policy.h) instead of simdev's own policy, and
 * the layer's per-range counters printed after the run.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uhmm/policy.h>
#include <uhmm/simdev.h>

#include "demo_policy.h"

static const struct {
	const char *name, *what;
} presets[] = {
	{ "density", "layer: 16-page granules, density prefetch of 2 MiB blocks past\n"
		     "                 51%, LRU eviction of whole blocks when device memory is full" },
	{ "per-page", "layer: one page per device fault, no density prefetch, LRU\n"
		      "                 block eviction" },
	{ "prefetch", "layer: the input and output are prefetched to the device\n"
		      "                 (asynchronously, batched) before the kernel runs" },
	{ "read-mostly", "layer: the input is read-mostly: the device reads a\n"
			 "                 read-only copy; the output migrates as with 'density'" },
};

#define NPRESETS (int)(sizeof(presets) / sizeof(presets[0]))

struct demo_policy {
	struct uhmm_policy *pol;
	struct uhmm_simdev *dev;
	struct uhmm_policy_range *r[3];
};

int demo_policy_parse(const char *name)
{
	for (int i = 0; i < NPRESETS; i++)
		if (!strcmp(name, presets[i].name))
			return DEMO_POLICY_BASE + i;
	return -1;
}

const char *demo_policy_names(void)
{
	return "density, per-page, prefetch, read-mostly";
}

void demo_policy_describe(int preset, FILE *f)
{
	fprintf(f, "  policy:        %s\n", presets[preset - DEMO_POLICY_BASE].what);
}

struct demo_policy *demo_policy_start(int preset, struct uhmm_simdev *dev, void *in, void *out,
				      void *bins, size_t bytes, size_t bins_bytes)
{
	struct uhmm_policy_config cfg = { 0 };
	struct uhmm_policy_attr at = { .preferred = UHMM_POLICY_NONE };
	struct uhmm_policy_attr in_at;
	struct demo_policy *dp = calloc(1, sizeof(*dp));
	struct uhmm_mm *mm = NULL;
	int id = 0, ret;

	preset -= DEMO_POLICY_BASE;
	if (!dp)
		return NULL;
	if (preset == 1) {
		cfg.flags = UHMM_POLICY_NO_DENSITY;
		at.granularity = 1;
	}
	ret = uhmm_mm_get(&mm);
	if (!ret)
		ret = uhmm_policy_create(mm, &cfg, &dp->pol);
	uhmm_mm_put(mm);
	if (!ret)
		ret = uhmm_simdev_attach_policy(dev, dp->pol, "simdev", &id);
	dp->dev = dev;
	in_at = at;
	in_at.read_mostly = preset == 3;
	if (!ret)
		ret = uhmm_policy_range_add(dp->pol, in, bytes, &in_at, &dp->r[0]);
	if (!ret)
		ret = uhmm_policy_range_add(dp->pol, out, bytes, &at, &dp->r[1]);
	if (!ret)
		ret = uhmm_policy_range_add(dp->pol, bins, bins_bytes, &at, &dp->r[2]);
	if (!ret && preset == 2) {
		struct uhmm_policy_req *q[2] = { NULL, NULL };

		ret = uhmm_policy_prefetch(dp->pol, in, bytes, id, NULL, NULL, &q[0]);
		if (!ret)
			ret = uhmm_policy_prefetch(dp->pol, out, bytes, id, NULL, NULL, &q[1]);
		for (int i = 0; i < 2; i++)
			if (q[i] && uhmm_policy_wait(q[i], NULL) && !ret)
				ret = -1;
	}
	if (ret) {
		fprintf(stderr, "uhmm demo: cannot set up the policy layer: %s\n",
			uhmm_last_error());
		demo_policy_end(dp);
		return NULL;
	}
	return dp;
}

void demo_policy_report(struct demo_policy *dp)
{
	static const char *names[3] = { "input", "output", "histogram" };

	printf("\npolicy layer, per range (pages; 'exact' residency read now)\n");
	printf("  %-10s %9s %9s %9s %9s %9s %9s %9s %9s %9s\n", "range", "on CPU", "on dev",
	       "copies", "dev flt", "CPU flt", "to dev", "to sys", "density", "evicted");
	for (int i = 0; i < 3; i++) {
		struct uhmm_policy_stats st;

		if (!dp->r[i] || uhmm_policy_range_stats(dp->r[i], true, &st))
			continue;
		printf("  %-10s %9llu %9llu %9llu %9llu %9llu %9llu %9llu %9llu %9llu\n", names[i],
		       (unsigned long long)st.resident_cpu, (unsigned long long)st.resident_dev[0],
		       (unsigned long long)st.copies_dev[0], (unsigned long long)st.dev_faults[0],
		       (unsigned long long)st.cpu_faults, (unsigned long long)st.to_dev_pages,
		       (unsigned long long)st.to_sys_pages, (unsigned long long)st.density_pages,
		       (unsigned long long)st.evicted_pages);
		if (st.prefetched_pages || st.duplicated || st.thrash_events || st.remote_maps)
			printf("  %-10s prefetched %llu, copies made %llu, collapses %llu, thrash "
			       "events %llu, mapped in place %llu\n", "",
			       (unsigned long long)st.prefetched_pages,
			       (unsigned long long)st.duplicated, (unsigned long long)st.collapses,
			       (unsigned long long)st.thrash_events,
			       (unsigned long long)st.remote_maps);
	}
}

void demo_policy_end(struct demo_policy *dp)
{
	if (!dp)
		return;
	if (dp->dev)
		uhmm_simdev_attach_policy(dp->dev, NULL, NULL, NULL);
	uhmm_policy_destroy(dp->pol);
	free(dp);
}
