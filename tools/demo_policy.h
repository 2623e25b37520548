/* SPDX-License-Identifier: MIT */
#ifndef UHMM_DEMO_POLICY_H
#define UHMM_DEMO_POLICY_H
/* "uhmm demo --policy <layer preset>": the policy layer in the demo (demo_policy.c). */
#include <stddef.h>
#include <stdio.h>

struct uhmm_simdev;
struct demo_policy;

#define DEMO_POLICY_BASE 100	/* demo policy values from here on are layer presets */

/* The preset's number (DEMO_POLICY_BASE + i) for @name, or -1. */
int demo_policy_parse(const char *name);
/* The presets' names, for --help. */
const char *demo_policy_names(void);
/* One line (or a few) saying what the preset does. */
void demo_policy_describe(int preset, FILE *f);
/* Attach the layer to @dev over the demo's three buffers; NULL on failure (reason printed). */
struct demo_policy *demo_policy_start(int preset, struct uhmm_simdev *dev, void *in, void *out,
				      void *bins, size_t bytes, size_t bins_bytes);
/* The per-range counters. */
void demo_policy_report(struct demo_policy *dp);
/* Detach and destroy (before the device is destroyed). */
void demo_policy_end(struct demo_policy *dp);
#endif
