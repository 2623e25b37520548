// SPDX-License-Identifier: MIT
/*
 * A bare userfaultfd round trip with uhmm's structural differences added
 * one at a time (docs/PERFORMANCE.md, "Issue 16.3, session 9"): how much
 * of figure 4's budget the shape of uhmm's fault path takes before uhmm
 * does any work of its own.  Each line prints the median latency of 2000
 * faults, each a fresh page, for:
 *
 *   bare        poll() + read() + a waking UFFDIO_COPY from one source page
 *   stride      the same pages one per 32-page window, one registration
 *   per-page    one registration per faulting page (uhmm registers exactly
 *               the migrated range: 2000 pages are 2000 mappings)
 *   dontwake    UFFDIO_COPY with DONTWAKE, then UFFDIO_WAKE
 *   epoll       epoll_wait with the userfaultfd added EPOLLEXCLUSIVE (and an
 *               eventfd), as uhmm's worker waits
 *   bounce      the page copied into a 4 KiB buffer first, then UFFDIO_COPY
 *   all         per-page + dontwake + epoll + bounce
 *
 * Not built by default (from the source tree):
 *   cc -O2 -o build/bare_variants bench/bare_variants.c -lpthread
 *   taskset -c 1 ./build/bare_variants [faults] [runs]
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "timing.h"

enum {
	V_EPOLL = 1, V_DONTWAKE = 2, V_BOUNCE = 8, V_PER_PAGE = 16, V_STRIDE = 64,
};

struct handler {
	int uffd, ep;
	unsigned int v;
	char *src;
	atomic_bool stop;
};

static const size_t ps = 4096;
static char bounce[4096] __attribute__((aligned(4096)));

static void *handle(void *arg)
{
	struct handler *h = arg;
	struct uffd_msg m;

	while (!atomic_load(&h->stop)) {
		uintptr_t src = (uintptr_t)h->src;

		if (h->v & V_EPOLL) {
			struct epoll_event ev[2];

			if (epoll_wait(h->ep, ev, 2, 100) <= 0)
				continue;
		} else {
			struct pollfd p = { .fd = h->uffd, .events = POLLIN };

			if (poll(&p, 1, 100) <= 0)
				continue;
		}
		if (read(h->uffd, &m, sizeof(m)) != sizeof(m) || m.event != UFFD_EVENT_PAGEFAULT)
			continue;
		if (h->v & V_BOUNCE) {
			memcpy(bounce, h->src, ps);
			src = (uintptr_t)bounce;
		}
		struct uffdio_copy c = {
			.dst = m.arg.pagefault.address & ~(uint64_t)(ps - 1), .src = src, .len = ps,
			.mode = (h->v & V_DONTWAKE) ? UFFDIO_COPY_MODE_DONTWAKE : 0,
		};
		ioctl(h->uffd, UFFDIO_COPY, &c);
		if (h->v & V_DONTWAKE) {
			struct uffdio_range r = { .start = c.dst, .len = ps };

			ioctl(h->uffd, UFFDIO_WAKE, &r);
		}
	}
	return NULL;
}

static double run(int n, unsigned int v)
{
	size_t stride = (v & (V_PER_PAGE | V_STRIDE)) ? 32 : 1, len = (size_t)n * ps * stride;
	struct handler h = { .v = v };
	struct uffdio_api api = { .api = UFFD_API };
	struct uffdio_register reg = { .mode = UFFDIO_REGISTER_MODE_MISSING };
	double *lat = calloc((size_t)n, sizeof(double)), med;
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	pthread_t th;

	h.uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (h.uffd < 0 || ioctl(h.uffd, UFFDIO_API, &api) || p == MAP_FAILED || !lat) {
		perror("bare_variants: userfaultfd");
		exit(1);
	}
	h.src = mmap(NULL, ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	memset(h.src, 7, ps);
	madvise(p, len, MADV_NOHUGEPAGE);
	for (int i = 0; i < ((v & V_PER_PAGE) ? n : 1); i++) {
		reg.range.start = (uintptr_t)p + (size_t)i * stride * ps;
		reg.range.len = (v & V_PER_PAGE) ? ps : len;
		if (ioctl(h.uffd, UFFDIO_REGISTER, &reg)) {
			perror("bare_variants: UFFDIO_REGISTER");
			exit(1);
		}
	}
	if (v & V_EPOLL) {
		struct epoll_event e = { .events = EPOLLIN | EPOLLEXCLUSIVE, .data.fd = h.uffd };
		struct epoll_event k = { .events = EPOLLIN };

		h.ep = epoll_create1(EPOLL_CLOEXEC);
		k.data.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		epoll_ctl(h.ep, EPOLL_CTL_ADD, h.uffd, &e);
		epoll_ctl(h.ep, EPOLL_CTL_ADD, k.data.fd, &k);
	}
	pthread_create(&th, NULL, handle, &h);
	for (int i = 0; i < n; i++) {
		uint64_t t = now_ns();

		(void)*(volatile char *)(p + (size_t)i * stride * ps);
		lat[i] = (double)(now_ns() - t) / 1000.0;
	}
	atomic_store(&h.stop, true);
	pthread_join(th, NULL);
	close(h.uffd);
	munmap(p, len);
	munmap(h.src, ps);
	qsort(lat, (size_t)n, sizeof(double), cmp_d);
	med = lat[n / 2];
	free(lat);
	return med;
}

int main(int argc, char **argv)
{
	static const struct { const char *name; unsigned int v; } variants[] = {
		{ "bare", 0 }, { "stride", V_STRIDE }, { "per-page", V_PER_PAGE },
		{ "dontwake", V_DONTWAKE }, { "epoll", V_EPOLL }, { "bounce", V_BOUNCE },
		{ "all", V_PER_PAGE | V_DONTWAKE | V_EPOLL | V_BOUNCE },
	};
	int n = argc > 1 ? atoi(argv[1]) : 2000, runs = argc > 2 ? atoi(argv[2]) : 3;

	for (int r = 0; r < runs; r++) {
		for (size_t k = 0; k < sizeof(variants) / sizeof(variants[0]); k++)
			printf("%s %.2f us%s", variants[k].name, run(n, variants[k].v),
			       k + 1 < sizeof(variants) / sizeof(variants[0]) ? ", " : "\n");
		fflush(stdout);
	}
	return 0;
}
