/* SPDX-License-Identifier: MIT */
/*
 * The clock and the sort order every benchmark in bench/ uses: uhmm bench
 * (bench.c, bench_sim.c, policy_bench.c) and the standalone measuring
 * programs, which include it from their own directory.
 */
#ifndef UHMM_BENCH_TIMING_H
#define UHMM_BENCH_TIMING_H

#include <stdint.h>
#include <time.h>

/* CLOCK_MONOTONIC in nanoseconds. */
static inline uint64_t now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* qsort() order of doubles, smallest first. */
static inline int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

#endif /* UHMM_BENCH_TIMING_H */
