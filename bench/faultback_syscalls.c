// SPDX-License-Identifier: MIT
/*
 * System calls and CPU time of a one-page CPU fault-back (figure 4's
 * pattern: one device page in each 32-page window), for measuring the
 * fault path's levers one at a time (docs/PERFORMANCE.md, issue 16.3).
 * Mode "migrate" only migrates the N pages to the device; mode "fault"
 * then touches each once.  The difference of the two runs' system-call
 * counts, divided by N, is the cost of one fault-back:
 *
 *   perf stat -e raw_syscalls:sys_enter ./faultback_syscalls 2000 migrate
 *   perf stat -e raw_syscalls:sys_enter ./faultback_syscalls 2000 fault
 *
 * (or strace -f -c for the calls by name).  The program prints the
 * process's CPU time and context switches per fault of the touching phase.
 * Not built by default (from the source tree, after a build in build/):
 *   cc -O2 -Iinclude -Itestdev -o build/faultback_syscalls \
 *      bench/faultback_syscalls.c testdev/tdev.c -Lbuild -luhmm -lpthread \
 *      -Wl,-rpath,$PWD/build
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "tdev.h"

static unsigned long long cpu_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
	return (unsigned long long)t.tv_sec * 1000000000ull + (unsigned long long)t.tv_nsec;
}

static long csw(void)
{
	struct rusage r;

	getrusage(RUSAGE_SELF, &r);
	return r.ru_nvcsw + r.ru_nivcsw;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 2000;
	bool touch = argc > 2 && !strcmp(argv[2], "fault");
	size_t ps = (size_t)sysconf(_SC_PAGESIZE), stride = 32 * ps, len = (size_t)n * stride;
	struct uhmm_mm *mm;
	struct tdev *d;
	char *p;
	unsigned long long c;
	long s;

	if (n <= 0 || uhmm_mm_get(&mm))
		return 77;
	if (tdev_open(mm, (size_t)n, 0, NULL, TDEV_NEXT_FIT, &d))
		return 1;
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		 -1, 0);
	if (p == MAP_FAILED)
		return 1;
	madvise(p, len, MADV_NOHUGEPAGE);
	for (int i = 0; i < n; i++) {
		char *pg = p + (size_t)i * stride;

		pg[0] = (char)i;
		if (tdev_migrate(d, (uintptr_t)pg, (uintptr_t)pg + ps, true, NULL, NULL) != 1)
			return 1;
	}
	if (touch) {
		c = cpu_ns();
		s = csw();
		for (int i = 0; i < n; i++)
			if (*(volatile char *)(p + (size_t)i * stride) != (char)i)
				return 1;
		c = cpu_ns() - c;
		s = csw() - s;
		printf("fault-back: cpu %.2f us/fault, %.2f context switches/fault\n",
		       (double)c / 1000.0 / n, (double)s / n);
	}
	munmap(p, len);
	tdev_close(d);
	uhmm_mm_put(mm);
	return 0;
}
