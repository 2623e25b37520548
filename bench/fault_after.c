// SPDX-License-Identifier: MIT
/*
 * What a bare userfaultfd round trip costs right after other work
 * (docs/PERFORMANCE.md, "Issue 16.3, session 9"): figure 4 times a fault
 * that follows a one-page migration to the device, and the work before a
 * fault changes what the fault costs.  Each line is the median of 2000
 * bare round trips (fresh pages of one registered range, a handler thread
 * answering with UFFDIO_COPY), each right after, untimed:
 *
 *   nothing               back-to-back faults (figure 4's baseline)
 *   uhmm 1-page migration a one-page migration of another page to a test
 *                         device (what figure 4's faults follow)
 *   19 getpid             nineteen trivial system calls (about as many as
 *                         one uhmm round trip of one page makes)
 *   register split        UFFDIO_REGISTER of one page of another mapping
 *                         (a split, as a migration's registration makes)
 *   2 PAGEMAP_SCAN        two PAGEMAP_SCANs of one page
 *   UFFDIO_MOVE 1 page    one page moved between two places
 *   memset 64K, 1M        that much memory written
 *   spin 3, 10, 30 us     that long in user space, no system call (only
 *                         time spent by the faulting thread)
 *
 * The kinds run in turns, a tenth of each at a time.  With the environment
 * variable FAULT_AFTER_IDLE_HANDLER=1 the handler thread runs SCHED_IDLE:
 * a thread its copy wakes then always preempts it, so the handler's own
 * return and its next poll() leave the timed path (docs/PERFORMANCE.md,
 * "Issue 16.3, session 10": how much of the penalty after work is that
 * the woken thread waits for the handler to block).  Not built by default
 * (from the source tree, after a build in build/):
 *   cc -O2 -Iinclude -Isrc -Itestdev -o build/fault_after bench/fault_after.c \
 *      testdev/tdev.c -Lbuild -luhmm -lpthread -Wl,-rpath,$PWD/build
 *   taskset -c 1 ./build/fault_after
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "bare_uffd.h"
#include "compat.h"	/* UFFDIO_MOVE and PAGEMAP_SCAN for older headers */
#include "tdev.h"
#include "timing.h"

#define N 2000
#define KINDS 11

static const size_t ps = 4096;

static void *anon(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	if (p == MAP_FAILED) {
		perror("fault_after: mmap");
		exit(1);
	}
	madvise(p, len, MADV_NOHUGEPAGE);
	return p;
}

int main(void)
{
	static const char *const names[KINDS] = {
		"nothing", "uhmm 1-page migration", "19 getpid", "register split",
		"2 PAGEMAP_SCAN", "UFFDIO_MOVE 1 page", "memset 64K", "memset 1M",
		"spin 3 us", "spin 10 us", "spin 30 us",
	};
	static const unsigned int spin_ns[KINDS] = { [8] = 3000, [9] = 10000, [10] = 30000 };
	static double lat[KINDS][N];
	static char big[1 << 20];
	struct uffdio_api api = { .api = UFFD_API }, api2 = { .api = UFFD_API,
							     .features = UFFD_FEATURE_MOVE };
	struct bare_uffd h = { .page_size = ps, .idle = getenv("FAULT_AFTER_IDLE_HANDLER") != NULL };
	struct uhmm_mm *mm;
	struct tdev *d;
	char *p, *other, *split, *mv;
	int u2, pm;
	pthread_t th;

	if (uhmm_mm_get(&mm) || tdev_open(mm, 64, 0, NULL, 0, &d)) {
		fprintf(stderr, "fault_after: no uhmm context\n");
		return 77;
	}
	h.uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	u2 = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (h.uffd < 0 || u2 < 0 || pm < 0 || ioctl(h.uffd, UFFDIO_API, &api) ||
	    ioctl(u2, UFFDIO_API, &api2)) {
		perror("fault_after: userfaultfd");
		return 77;
	}
	h.src = anon(ps);
	memset(h.src, 7, ps);
	p = anon((size_t)N * KINDS * ps);
	other = anon((size_t)N * 32 * ps);
	split = anon((size_t)N * 64 * ps);
	mv = anon(2 * ps);
	mv[0] = 1;
	{
		struct uffdio_register r = { .mode = UFFDIO_REGISTER_MODE_MISSING,
			.range = { (uintptr_t)p, (size_t)N * KINDS * ps } };
		struct uffdio_register r2 = { .mode = UFFDIO_REGISTER_MODE_MISSING,
			.range = { (uintptr_t)mv, 2 * ps } };

		if (ioctl(h.uffd, UFFDIO_REGISTER, &r) || ioctl(u2, UFFDIO_REGISTER, &r2)) {
			perror("fault_after: UFFDIO_REGISTER");
			return 1;
		}
	}
	pthread_create(&th, NULL, bare_uffd_main, &h);
	for (int turn = 0; turn < 10; turn++) {
		for (int k = 0; k < KINDS; k++) {
			for (int i = turn * N / 10; i < (turn + 1) * N / 10; i++) {
				uint64_t t;

				switch (k) {
				case 1: {
					char *pg = other + (size_t)i * 32 * ps;

					pg[0] = 1;
					tdev_migrate(d, (uintptr_t)pg, (uintptr_t)pg + ps, true,
						     NULL, NULL);
					break; }
				case 2:
					for (int z = 0; z < 19; z++)
						syscall(SYS_getpid);
					break;
				case 3: {
					struct uffdio_register r = {
						.mode = UFFDIO_REGISTER_MODE_MISSING,
						.range = { (uintptr_t)split + (size_t)i * 64 * ps, ps },
					};

					ioctl(u2, UFFDIO_REGISTER, &r);
					break; }
				case 4: {
					struct page_region rg[1];
					struct pm_scan_arg a = {
						.size = sizeof(a), .start = (uintptr_t)h.src,
						.end = (uintptr_t)h.src + ps,
						.vec = (uintptr_t)rg, .vec_len = 1,
						.category_mask = PAGE_IS_PRESENT,
						.return_mask = PAGE_IS_PRESENT,
					};

					ioctl(pm, PAGEMAP_SCAN, &a);
					ioctl(pm, PAGEMAP_SCAN, &a);
					break; }
				case 5: {
					/* The page sits at one of the two places: move it to the other. */
					struct uffdio_move m = { .dst = (uintptr_t)mv + ps,
								 .src = (uintptr_t)mv, .len = ps };

					if (ioctl(u2, UFFDIO_MOVE, &m)) {
						m.dst = (uintptr_t)mv;
						m.src = (uintptr_t)mv + ps;
						ioctl(u2, UFFDIO_MOVE, &m);
					}
					break; }
				case 6:
					memset(big, i, 64 << 10);
					break;
				case 7:
					memset(big, i, sizeof(big));
					break;
				default: {
					uint64_t t0 = now_ns();

					while (now_ns() - t0 < spin_ns[k])
						;
					break; }
				}
				t = now_ns();
				(void)*(volatile char *)(p + ((size_t)k * N + (size_t)i) * ps);
				lat[k][i] = (double)(now_ns() - t) / 1000.0;
			}
		}
	}
	atomic_store(&h.stop, true);
	pthread_join(th, NULL);
	for (int k = 0; k < KINDS; k++) {
		qsort(lat[k], N, sizeof(double), cmp_d);
		printf("after %-22s %6.2f us\n", names[k], lat[k][N / 2]);
	}
	tdev_close(d);
	uhmm_mm_put(mm);
	return 0;
}
