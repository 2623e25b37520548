/* SPDX-License-Identifier: MIT */
/*
 * The bare userfaultfd handler the benchmarks compare uhmm's fault path
 * with: one thread that waits in poll(), reads a message and answers a
 * page fault with a waking UFFDIO_COPY of one source page, as a minimal
 * user-space pager does.  Figure 4's baseline (bench.c) and
 * bench/fault_after.c use it; bench/bare_variants.c has its own, with
 * uhmm's structural differences switched on one at a time.
 */
#ifndef UHMM_BENCH_BARE_UFFD_H
#define UHMM_BENCH_BARE_UFFD_H

#include <linux/userfaultfd.h>
#include <poll.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <unistd.h>

struct bare_uffd {
	int uffd;		/* the handler's userfaultfd */
	char *src;		/* the page every fault gets a copy of */
	size_t page_size;
	bool idle;		/* run SCHED_IDLE: every thread it wakes preempts it */
	atomic_bool stop;	/* set, and the thread ends within 100 ms */
};

/* The handler thread's body (pthread_create() it with a struct bare_uffd). */
static inline void *bare_uffd_main(void *arg)
{
	struct bare_uffd *b = arg;
	struct uffd_msg msg;

	if (b->idle) {
		struct sched_param sp = { 0 };

		if (sched_setscheduler(0, SCHED_IDLE, &sp))
			perror("bare handler: SCHED_IDLE");
	}
	while (!atomic_load(&b->stop)) {
		struct pollfd pfd = { .fd = b->uffd, .events = POLLIN };

		if (poll(&pfd, 1, 100) <= 0)
			continue;
		if (read(b->uffd, &msg, sizeof(msg)) != sizeof(msg) ||
		    msg.event != UFFD_EVENT_PAGEFAULT)
			continue;
		struct uffdio_copy c = {
			.dst = msg.arg.pagefault.address & ~(uint64_t)(b->page_size - 1),
			.src = (uintptr_t)b->src, .len = b->page_size,
		};

		ioctl(b->uffd, UFFDIO_COPY, &c);
	}
	return NULL;
}

#endif /* UHMM_BENCH_BARE_UFFD_H */
