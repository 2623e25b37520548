// SPDX-License-Identifier: MIT
/*
 * What a new page costs on this host (docs/PERFORMANCE.md): the first write
 * to fresh anonymous 4 KiB pages (page fault, allocation, zeroing, page
 * table entry) against a second write to the same pages, and the same after
 * MADV_POPULATE_WRITE (allocation done in one call, the first access then
 * only meets a new page-table entry).  Not built by default:
 *   cc -O2 -o first_touch bench/first_touch.c && ./first_touch
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

#define REPS 9

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* ns per page of one write to each page of [p, p + len). */
static double pass(char *p, size_t len, size_t ps, char v)
{
	double t = now();

	for (size_t i = 0; i < len; i += ps)
		((volatile char *)p)[i] = v;
	return (now() - t) / (double)(len / ps);
}

static void show(const char *what, double *v)
{
	qsort(v, REPS, sizeof(*v), cmp);
	printf("%-44s %7.0f ns/page [%.0f .. %.0f]\n", what, v[REPS / 2], v[0], v[REPS - 1]);
}

int main(void)
{
	const size_t ps = 4096, len = 64u << 20;
	double fresh[REPS], second[REPS], pop[REPS], after_pop[REPS], second_pop[REPS];

	for (int r = 0; r < REPS; r++) {
		char *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		double t;

		if (p == MAP_FAILED)
			return 1;
		madvise(p, len, MADV_NOHUGEPAGE);
		fresh[r] = pass(p, len, ps, 1);
		second[r] = pass(p, len, ps, 2);
		munmap(p, len);
		p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			return 1;
		madvise(p, len, MADV_NOHUGEPAGE);
		t = now();
		if (madvise(p, len, MADV_POPULATE_WRITE))
			return 1;
		pop[r] = (now() - t) / (double)(len / ps);
		after_pop[r] = pass(p, len, ps, 1);
		second_pop[r] = pass(p, len, ps, 2);
		munmap(p, len);
	}
	printf("64 MiB of 4 KiB pages, median [min .. max] of %d (fresh memory each)\n", REPS);
	show("first write to a fresh page (fault)", fresh);
	show("second write", second);
	show("MADV_POPULATE_WRITE", pop);
	show("first write after MADV_POPULATE_WRITE", after_pop);
	show("second write after MADV_POPULATE_WRITE", second_pop);
	return 0;
}
