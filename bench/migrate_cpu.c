// SPDX-License-Identifier: MIT
/*
 * A migration of 4 KiB pages to the test device and back, in wall time
 * and in the process's CPU time (the steadier figure on a loaded
 * machine), against memcpy of the same size (docs/PERFORMANCE.md, issue
 * 16.3; run it with UHMM_STAGING_CACHE_MIB set to compare staging-cache
 * bounds).  Every byte is checked after each round trip.  Not built by
 * default (from the source tree, after a build in build/):
 *   cc -O2 -Iinclude -Itestdev -o build/migrate_cpu bench/migrate_cpu.c \
 *      testdev/tdev.c -Lbuild -luhmm -lpthread -Wl,-rpath,$PWD/build
 *   UHMM_STAGING_CACHE_MIB=128 ./build/migrate_cpu 256 3
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "tdev.h"

static unsigned long long ns(clockid_t c)
{
	struct timespec t;

	clock_gettime(c, &t);
	return (unsigned long long)t.tv_sec * 1000000000ull + (unsigned long long)t.tv_nsec;
}

int main(int argc, char **argv)
{
	size_t len = (size_t)(argc > 1 ? atoi(argv[1]) : 256) << 20;
	size_t ps = (size_t)sysconf(_SC_PAGESIZE), n = len / ps;
	int reps = argc > 2 ? atoi(argv[2]) : 3;
	struct uhmm_mm *mm;
	struct tdev *d;
	char *p, *a, *b;

	if (uhmm_mm_get(&mm))
		return 77;
	if (tdev_open(mm, n, 0, NULL, TDEV_NEXT_FIT, &d))
		return 1;
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		 -1, 0);
	a = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
		 -1, 0);
	b = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
		 -1, 0);
	if (p == MAP_FAILED || a == MAP_FAILED || b == MAP_FAILED)
		return 1;
	madvise(p, len, MADV_NOHUGEPAGE);
	for (int r = 0; r < reps; r++) {
		unsigned long long c, w, mcc, mcw, tc, tw, bc, bw;
		long n1, n2;

		memset(p, r + 1, len);
		c = ns(CLOCK_PROCESS_CPUTIME_ID);
		w = ns(CLOCK_MONOTONIC);
		memcpy(b, a, len);
		mcc = ns(CLOCK_PROCESS_CPUTIME_ID) - c;
		mcw = ns(CLOCK_MONOTONIC) - w;
		c = ns(CLOCK_PROCESS_CPUTIME_ID);
		w = ns(CLOCK_MONOTONIC);
		n1 = tdev_migrate(d, (uintptr_t)p, (uintptr_t)p + len, true, NULL, NULL);
		tc = ns(CLOCK_PROCESS_CPUTIME_ID) - c;
		tw = ns(CLOCK_MONOTONIC) - w;
		c = ns(CLOCK_PROCESS_CPUTIME_ID);
		w = ns(CLOCK_MONOTONIC);
		n2 = tdev_migrate(d, (uintptr_t)p, (uintptr_t)p + len, false, NULL, NULL);
		bc = ns(CLOCK_PROCESS_CPUTIME_ID) - c;
		bw = ns(CLOCK_MONOTONIC) - w;
		for (size_t i = 0; i < len; i += 512)
			if (p[i] != (char)(r + 1)) {
				printf("CHECK FAILED at %zu\n", i);
				return 1;
			}
		if (n1 != (long)n || n2 != (long)n) {
			printf("CHECK FAILED: %ld / %ld of %zu pages\n", n1, n2, n);
			return 1;
		}
		printf("memcpy cpu %.0f ms wall %.0f | to-dev cpu %.0f ms (%.2f of memcpy) wall "
		       "%.0f | to-sys cpu %.0f ms (%.2f) wall %.0f\n",
		       mcc / 1e6, mcw / 1e6, tc / 1e6, (double)mcc / tc, tw / 1e6, bc / 1e6,
		       (double)mcc / bc, bw / 1e6);
	}
	munmap(p, len);
	tdev_close(d);
	uhmm_mm_put(mm);
	return 0;
}
