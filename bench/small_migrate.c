// SPDX-License-Identifier: MIT
/*
 * Small migrations, timed one by one: N ranges of P pages (one range in
 * each 64-page window, THP off) each migrated to the test device, then
 * each back, for P = 1, 8 and 32 (or the sizes given).  Prints the fastest
 * tenth and the median of each direction, in microseconds, and the
 * process's system calls are easy to count around it:
 *
 *   taskset -c 1 ./build/small_migrate 1000            # 1, 8, 32 pages
 *   strace -f -c ./build/small_migrate 1000 1          # calls by name
 *
 * (docs/PERFORMANCE.md, "Small system->device migrations": the small
 * staging area).  Not built by default (from the source tree, after a
 * build in build/):
 *   cc -O2 -Iinclude -Itestdev -o build/small_migrate \
 *      bench/small_migrate.c testdev/tdev.c -Lbuild -luhmm -lpthread \
 *      -Wl,-rpath,$PWD/build
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "tdev.h"
#include "timing.h"

int main(int argc, char **argv)
{
	static const size_t def_sizes[] = { 1, 8, 32 };
	size_t n = argc > 1 ? strtoul(argv[1], NULL, 0) : 1000;
	size_t sizes[16], nsizes = 0, maxp = 0;
	const size_t ps = (size_t)sysconf(_SC_PAGESIZE), stride = 64 * ps;
	struct uhmm_mm *mm;
	struct tdev *d;
	double *to_dev, *to_sys;
	char *p;

	for (int i = 2; i < argc && nsizes < 16; i++)
		sizes[nsizes++] = strtoul(argv[i], NULL, 0);
	if (!nsizes)
		for (size_t i = 0; i < 3; i++)
			sizes[nsizes++] = def_sizes[i];
	for (size_t i = 0; i < nsizes; i++) {
		if (!sizes[i] || sizes[i] > 64) {
			fprintf(stderr, "sizes are 1..64 pages\n");
			return 2;
		}
		maxp = sizes[i] > maxp ? sizes[i] : maxp;
	}
	if (!n) {
		fprintf(stderr, "usage: %s [ranges] [pages...]\n", argv[0]);
		return 2;
	}
	to_dev = calloc(n, sizeof(double));
	to_sys = calloc(n, sizeof(double));
	if (!to_dev || !to_sys || uhmm_mm_get(&mm))
		return 77;
	if (tdev_open(mm, n * maxp, 0, NULL, TDEV_NEXT_FIT, &d))
		return 1;
	p = mmap(NULL, n * stride, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return 1;
	madvise(p, n * stride, MADV_NOHUGEPAGE);
	for (size_t z = 0; z < nsizes; z++) {
		size_t np = sizes[z], bad = 0;

		for (size_t i = 0; i < n; i++) {
			char *r = p + i * stride;
			uint64_t t;

			memset(r, (int)(i + z + 1), np * ps);
			t = now_ns();
			if (tdev_migrate(d, (uintptr_t)r, (uintptr_t)r + np * ps, true, NULL, NULL) !=
			    (long)np)
				bad++;
			to_dev[i] = (double)(now_ns() - t) / 1000.0;
		}
		for (size_t i = 0; i < n; i++) {
			char *r = p + i * stride;
			uint64_t t = now_ns();

			if (tdev_migrate(d, (uintptr_t)r, (uintptr_t)r + np * ps, false, NULL, NULL) !=
			    (long)np)
				bad++;
			to_sys[i] = (double)(now_ns() - t) / 1000.0;
			if (r[0] != (char)(i + z + 1) || r[np * ps - 1] != (char)(i + z + 1))
				bad++;
		}
		qsort(to_dev, n, sizeof(double), cmp_d);
		qsort(to_sys, n, sizeof(double), cmp_d);
		printf("%2zu page(s) x %zu: to device p10 %6.1f us p50 %6.1f us; "
		       "to system p10 %6.1f us p50 %6.1f us%s\n",
		       np, n, to_dev[n / 10], to_dev[n / 2], to_sys[n / 10], to_sys[n / 2],
		       bad ? "  (SOME MIGRATIONS FAILED)" : "");
	}
	munmap(p, n * stride);
	tdev_close(d);
	uhmm_mm_put(mm);
	free(to_dev);
	free(to_sys);
	return 0;
}
