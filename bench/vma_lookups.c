// SPDX-License-Identifier: MIT
/*
 * How many mapping look-ups (PROCMAP_QUERY ioctls on /proc/self/maps) the
 * library makes per operation when the process has many mappings (issue 16
 * follow-up).  N separate one-page anonymous mappings (alternate
 * protections, so they never merge) are made first, then a 64-page working
 * range below them (mmap hands out addresses downwards: every one of the N
 * lies above it), then, phase by phase:
 *
 *   get       uhmm_mm_get, a tdev device, a notifier over the range
 *   migrate   the range to the device and back (tdev_migrate: the setup's
 *             find_mapping, the registration of the range)
 *   simdev    the same with simdev (uhmm_simdev_migrate_to_dev / _to_sys:
 *             simdev walks the range with uhmm_find_mapping)
 *   find      uhmm_find_mapping at the range's start
 *   state     uhmm_page_state of the range
 *   fork      fork() (the atfork handler walks every mapping once)
 *   teardown  the notifier removed, the device closed, the last
 *             uhmm_mm_put (unregister_all walks every mapping once)
 *
 * Each phase prints its PROCMAP_QUERY count (this program defines ioctl(),
 * which the library's calls reach first, and counts requests 'f'/17) and
 * its wall time.  A whole-run count by the kernel's view:
 *
 *   strace -f -c -e trace=ioctl ./build/vma_lookups 10000
 *   perf stat -e raw_syscalls:sys_enter ./build/vma_lookups 10000
 *
 * With UHMM_DISABLE=all (no PROCMAP_QUERY) the counts are 0 and the times
 * are those of the parsed /proc/self/maps cache.  Not built by default
 * (from the source tree, after a build in build/):
 *   cc -O2 -Iinclude -Itestdev -o build/vma_lookups bench/vma_lookups.c \
 *      testdev/tdev.c -Lbuild -luhmm_simdev -luhmm -lpthread -Wl,-rpath,$PWD/build
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <uhmm/simdev.h>

#include "procmap_count.h"
#include "tdev.h"

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static unsigned long q0;
static double t0;

static void phase_begin(void)
{
	q0 = atomic_load(&procmap_queries);
	t0 = now();
}

static void phase_end(const char *name)
{
	double t = now() - t0;

	printf("%-9s %9lu PROCMAP_QUERY  %9.3f ms\n", name, atomic_load(&procmap_queries) - q0,
	       t * 1e3);
}

static bool inval(struct uhmm_interval_notifier *mni, const struct uhmm_notifier_range *r,
		  unsigned long seq)
{
	(void)r;
	uhmm_interval_set_seq(mni, seq);
	return true;
}

static const struct uhmm_interval_notifier_ops nops = { .invalidate = inval };

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 1000;
	size_t ps = (size_t)sysconf(_SC_PAGESIZE), len = 64 * ps;
	struct uhmm_interval_notifier mni;
	struct uhmm_mapping map;
	struct uhmm_simdev *sd;
	struct uhmm_mm *mm;
	struct tdev *d;
	uint32_t st[64];
	char *p;
	pid_t pid;
	int status;

	if (n < 0)
		return 2;
	for (long i = 0; i < n; i++)
		if (mmap(NULL, ps, (i & 1) ? PROT_READ : PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) == MAP_FAILED) {
			perror("mmap (vm.max_map_count?)");
			return 1;
		}
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return 1;
	memset(p, 0x5a, len);
	printf("%ld mappings above the range; UHMM_DISABLE=%s\n", n,
	       getenv("UHMM_DISABLE") ? getenv("UHMM_DISABLE") : "");

	phase_begin();
	if (uhmm_mm_get(&mm))
		return 77;
	if (tdev_open(mm, 64, 0, NULL, TDEV_NEXT_FIT, &d))
		return 1;
	memset(&mni, 0, sizeof(mni));
	if (uhmm_interval_notifier_insert(&mni, mm, (uintptr_t)p, len, &nops))
		return 1;
	phase_end("get");

	phase_begin();
	if (tdev_to_dev(d, (uintptr_t)p, (uintptr_t)p + len, NULL) != 64 ||
	    tdev_to_sys(d, (uintptr_t)p, (uintptr_t)p + len, NULL) != 64)
		return 1;
	phase_end("migrate");

	if (uhmm_simdev_create(NULL, &sd))
		return 1;
	phase_begin();
	if (uhmm_simdev_migrate_to_dev(sd, p, 64, NULL) ||
	    uhmm_simdev_migrate_to_sys(sd, p, 64, NULL))
		return 1;
	phase_end("simdev");
	uhmm_simdev_destroy(sd);

	phase_begin();
	if (uhmm_find_mapping(mm, (uintptr_t)p, &map) || map.start > (uintptr_t)p)
		return 1;
	phase_end("find");

	phase_begin();
	if (uhmm_page_state(mm, (uintptr_t)p, 64, st))
		return 1;
	phase_end("state");

	phase_begin();
	pid = fork();
	if (pid == 0)
		_exit(p[0] == 0x5a ? 0 : 1);
	if (pid < 0 || waitpid(pid, &status, 0) != pid || status)
		return 1;
	phase_end("fork");

	phase_begin();
	uhmm_interval_notifier_remove(&mni);
	if (tdev_close(d))
		return 1;
	uhmm_mm_put(mm);
	phase_end("teardown");
	for (size_t i = 0; i < len; i++)
		if (p[i] != 0x5a)
			return 1;
	return 0;
}
