// SPDX-License-Identifier: MIT
/*
 * The reader must read every event whatever the worker is doing (the soak
 * hang of 2026-12-07, docs/STRESS.md).
 *
 * The kernel makes a thread that unmaps or discards registered memory
 * sleep until its event has been *read* (KERNEL-FACTS.md section 3), and
 * while an event is unread every UFFDIO_COPY / ZEROPAGE / MOVE fails with
 * EAGAIN.  uhmm's reader reads the userfaultfd into a queue for the worker;
 * it used to wait for the worker when that queue was full.  The worker in
 * turn waits for the reader: for its own munmap / MADV_DONTNEED of a
 * registered staging mapping (it sleeps in the kernel until the reader
 * reads the event) and for any event pending before its next COPY or MOVE
 * can succeed.  A full queue then stopped both for good.
 *
 * Here the worker is held in a notifier's invalidate callback (an event
 * seen afterwards, flag AFTER) until another thread has made EVENTS raw
 * MADV_DONTNEED calls on a registered page, each of which sleeps until the
 * reader has read its REMOVE event.  A callback may wait for such a
 * thread: it needs nothing but the reader.  With a bounded queue the
 * thread stops once the queue is full and the round hangs; with a reader
 * that never waits for the worker every event is read, then delivered to
 * the callback exactly once (checked).
 *
 * The page is registered by a migration (MISSING mode), so the events come
 * with every fallback forced too.  Rounds run in watched child processes
 * (a hang fails the round), two copies of the test at once.
 * UHMM_TEST_ROUNDS overrides the rounds per copy, UHMM_TEST_EVENTS the
 * events per round.
 */
#include <sys/syscall.h>

#include "common.h"
#include "watchdog.h"

#define ROUNDS 3
#define EVENTS 20000	/* several times any fixed queue the reader could have */

static long nevents = EVENTS;
static struct uhmm_interval_notifier mni;
static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static long issued;		/* raw discards done (gate_lock) */
static long after_calls;	/* DISCARD callbacks seen afterwards (gate_lock) */
static char *page;

static bool held_invalidate(struct uhmm_interval_notifier *n,
			    const struct uhmm_notifier_range *r, unsigned long cur_seq)
{
	uhmm_interval_set_seq(n, cur_seq);
	if (r->event != UHMM_NOTIFY_DISCARD || !(r->flags & UHMM_NOTIFY_FLAG_AFTER))
		return true;
	pthread_mutex_lock(&gate_lock);
	after_calls++;
	/* On the worker: held until the other thread made every event. */
	while (issued < nevents)
		pthread_cond_wait(&gate_cond, &gate_lock);
	pthread_mutex_unlock(&gate_lock);
	return true;
}

static const struct uhmm_interval_notifier_ops held_ops = {
	.invalidate = held_invalidate,
};

static void *discarder(void *arg)
{
	(void)arg;
	for (long i = 0; i < nevents; i++) {
		/* Bypasses the wrapper: uhmm sees it only as a REMOVE event. */
		CHECK(syscall(SYS_madvise, page, page_size, MADV_DONTNEED) == 0,
		      "madvise: %s", strerror(errno));
		pthread_mutex_lock(&gate_lock);
		if (++issued == nevents)
			pthread_cond_broadcast(&gate_cond);
		pthread_mutex_unlock(&gate_lock);
	}
	return NULL;
}

static int one_round(void *arg)
{
	struct uhmm_mm *mm;
	struct tdev *dev;
	pthread_t t;
	unsigned long cpages = 0;
	long seen;

	(void)arg;
	CHECK_EQ(uhmm_mm_get(&mm), 0);
	dev = tdev_create(mm, 4, 1);
	page = map_far(page_size, PROT_READ | PROT_WRITE);
	CHECK(page != MAP_FAILED, "map_far");
	fill_pattern(page, 1, 7);
	/* A migration registers the page (MISSING): its discards become events. */
	CHECK(tdev_to_dev(dev, (uintptr_t)page, (uintptr_t)page + page_size, &cpages) == 1,
	      "migrate to the device");
	CHECK_EQ(tdev_to_sys(dev, (uintptr_t)page, (uintptr_t)page + page_size, NULL), 1);
	CHECK_EQ(check_pattern(page, 1, 7), -1);
	CHECK_EQ(uhmm_interval_notifier_insert(&mni, mm, (uintptr_t)page, page_size,
					       &held_ops), 0);
	CHECK_EQ(pthread_create(&t, NULL, discarder, NULL), 0);
	CHECK_EQ(pthread_join(t, NULL), 0);
	/* A migration first applies every event read so far. */
	fill_pattern(page, 1, 8);
	CHECK(tdev_to_dev(dev, (uintptr_t)page, (uintptr_t)page + page_size, &cpages) == 1,
	      "migrate to the device after the events");
	pthread_mutex_lock(&gate_lock);
	seen = after_calls;
	pthread_mutex_unlock(&gate_lock);
	CHECK(seen == nevents, "%ld REMOVE events delivered to the notifier, %ld made", seen,
	      nevents);
	CHECK_EQ(check_pattern(page, 1, 8), -1);
	uhmm_interval_notifier_remove(&mni);
	CHECK_EQ(munmap(page, page_size), 0);
	tdev_destroy(dev);
	uhmm_mm_put(mm);
	return 0;
}

static void test_backlog(void)
{
	const char *e = getenv("UHMM_TEST_EVENTS");
	int status[2];
	pid_t pid[2];
	int bad = 0;

	if (e && atol(e) > 0)
		nevents = atol(e);
	fflush(stdout);
	/* Two copies at once: more pressure on the CPU, each with its rounds. */
	for (int c = 0; c < 2; c++) {
		pid[c] = fork();
		CHECK(pid[c] >= 0, "fork: %s", strerror(errno));
		if (pid[c] == 0) {
			int bad_rounds = run_rounds(one_round, NULL, ROUNDS,
						    "events behind a held worker");

			fflush(stdout);
			_exit(bad_rounds ? 1 : 0);
		}
	}
	for (int c = 0; c < 2; c++) {
		CHECK(waitpid(pid[c], &status[c], 0) == pid[c], "waitpid");
		if (WIFEXITED(status[c]) && WEXITSTATUS(status[c]) == TEST_SKIP)
			SKIP("see above");
		bad |= !WIFEXITED(status[c]) || WEXITSTATUS(status[c]) != 0;
	}
	CHECK(!bad, "a copy failed (see above)");
	printf("%s: ok (%ld events per round)\n", test_name, nevents);
}

static const struct test_case cases[] = {
	TEST_CASE(test_backlog),
};

TEST_MAIN("test_reader_backlog", NULL, NULL)
