// SPDX-License-Identifier: MIT
/*
 * Read-mostly ranges under writes that race the layer's own changes
 * (round 5 hunt, tests/hunt/FINDINGS.md).  Each round is a fresh process
 * (watchdog.h): a layer, two simdev devices, a 64-page read-mostly range.
 *
 *  - device_write: device 0 launches kernels that write a word of every
 *    page while device 1 keeps launching kernels that read every page.  A
 *    device write to a read-mostly page is allowed (the layer collapses the
 *    copies and gives write access back); device 1's read fault may
 *    re-protect the page (a new copy) between device 0's collapse and its
 *    range fault.  Every launch must succeed and every word end right.
 *    Before the fix: "range fault: write to a read-only mapping" (-EPERM)
 *    from device 0's launch.
 *  - cpu_write: two CPU threads keep writing their own words, mostly of
 *    the same page, while the main thread makes copies (device reads, which
 *    write-protect each page again) and now and then clears and sets
 *    read-mostly again (uhmm_policy_range_set()).  A write whose fault
 *    another thread's collapse (or the clearing) served first finds the
 *    page writable: it must be retried, never killed or lost.  Before the
 *    fix the layer's SIGSEGV handler counted such faults at one address
 *    over the thread's life, and the third passed the fault on to the
 *    previous handler (the default: the process died of SIGSEGV).
 *  - set_while_reading: as cpu_write, but the clearing and setting run
 *    while device 1 keeps reading in another thread.  A read fault that
 *    found the range read-mostly and got the range's lock after it was
 *    cleared write-protected the page again (a copy of a range no longer
 *    read-mostly): the CPU's next write had no one to collapse it and died
 *    of SIGSEGV.
 *  - fork_child_writes: fork() while device 1 reads and a CPU thread
 *    writes; the child writes every page of its copy.  Before the fix the
 *    child's write went to the layer's SIGSEGV handler, which waited in
 *    the child for a lock another parent thread held at the fork (or for
 *    the device's compute threads, which do not exist in the child) with
 *    asynchronous signals blocked: the child hung for ever.
 *
 * UHMM_TEST_ROUNDS=N rounds, UHMM_TEST_KEEP_GOING=1 to run every round.
 */
#include "policy_common.h"
#include "watchdog.h"

#include <pthread.h>

#define NAME	"test_policy_race"
#define NPG	64

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define DEFAULT_ROUNDS	2
#define LAUNCHES	40
#define TOGGLES		40
#define FORKS		10
#else
#define DEFAULT_ROUNDS	4
#define LAUNCHES	150
#define TOGGLES		400
#define FORKS		30
#endif

struct race {
	struct uhmm_policy *pol;
	struct uhmm_policy_range *r;
	struct uhmm_simdev *d[2];
	uint64_t *p;			/* NPG pages, word w of page i: see below */
	atomic_int stop;
	_Atomic uint64_t cpu_last[2][NPG];
};

/* Word 0 and 1: CPU thread 0 / 1; word 8: device 0's launch; the rest: i * 4096 + w. */
static uint64_t konst(size_t i, size_t w)
{
	return i * 4096 + w + 0x5000000;
}

static void race_setup(struct race *s)
{
	struct uhmm_policy_attr at = { .preferred = UHMM_POLICY_NONE, .read_mostly = true,
				       .granularity = 1 };
	size_t words = page_size / 8;

	memset(s, 0, sizeof(*s));
	s->pol = ppol(NULL);
	s->d[0] = pdev(s->pol, 1024, 2, NULL);
	s->d[1] = pdev(s->pol, 1024, 2, NULL);
	s->p = map_aligned_2m(BLK, RW);
	for (size_t i = 0; i < NPG; i++)
		for (size_t w = 0; w < words; w++)
			s->p[i * words + w] = w < 16 ? 0 : konst(i, w);
	CHECK_EQ(uhmm_policy_range_add(s->pol, s->p, NPG * page_size, &at, &s->r), 0);
}

struct kern {
	struct race *s;
	uint64_t v;		/* 0: read and check the constants */
	atomic_int bad;
};

static void race_kernel(struct uhmm_simdev_thread *t, size_t item, void *arg)
{
	struct kern *k = arg;
	uint64_t *pg = k->s->p + item * (page_size / 8);

	if (k->v) {
		uhmm_simdev_store64(t, &pg[8], k->v);
		return;
	}
	for (size_t w = 16; w < page_size / 8; w += 61)
		if (uhmm_simdev_load64(t, &pg[w]) != konst(item, w))
			atomic_fetch_add(&k->bad, 1);
}

static void *reader(void *arg)
{
	struct race *s = arg;

	while (!atomic_load(&s->stop)) {
		struct kern k = { .s = s };
		int ret = uhmm_simdev_launch(s->d[1], NPG, race_kernel, &k, NULL);

		CHECK(ret == 0, "device 1 read launch: %d (%s)", ret, uhmm_last_error());
		CHECK(atomic_load(&k.bad) == 0, "device 1 read wrong constants");
	}
	return NULL;
}

static int round_device_write(void *arg)
{
	struct race s;
	pthread_t th;

	(void)arg;
	race_setup(&s);
	CHECK_EQ(pthread_create(&th, NULL, reader, &s), 0);
	for (uint64_t v = 1; v <= LAUNCHES; v++) {
		struct kern k = { .s = &s, .v = v };
		int ret = uhmm_simdev_launch(s.d[0], NPG, race_kernel, &k, NULL);

		CHECK(ret == 0, "device 0 write launch %llu of %d: %d (%s)",
		      (unsigned long long)v, LAUNCHES, ret, uhmm_last_error());
	}
	atomic_store(&s.stop, 1);
	CHECK_EQ(pthread_join(th, NULL), 0);
	for (size_t i = 0; i < NPG; i++)
		CHECK(s.p[i * (page_size / 8) + 8] == LAUNCHES,
		      "page %zu: device 0's word %llu, not %d", i,
		      (unsigned long long)s.p[i * (page_size / 8) + 8], LAUNCHES);
	pteardown(s.pol, s.d, 2);
	return 0;
}

struct writer_arg {
	struct race *s;
	int id;
};

static void *cpu_writer(void *arg)
{
	struct writer_arg *wa = arg;
	struct race *s = wa->s;
	uint64_t v = 0;

	while (!atomic_load(&s->stop)) {
		/* Mostly page 0, which both threads write: their faults race. */
		size_t i = v % 8 ? 0 : v / 8 % NPG;

		v++;
		__atomic_store_n(&s->p[i * (page_size / 8) + wa->id], v, __ATOMIC_RELAXED);
		atomic_store(&s->cpu_last[wa->id][i], v);
	}
	return NULL;
}

static int round_cpu_write(void *arg)
{
	struct uhmm_policy_attr on = { .preferred = UHMM_POLICY_NONE, .read_mostly = true,
				       .granularity = 1 };
	struct uhmm_policy_attr off = on;
	struct writer_arg wa[2];
	struct race s;
	pthread_t th[2];

	(void)arg;
	off.read_mostly = false;
	race_setup(&s);
	for (int i = 0; i < 2; i++) {
		wa[i] = (struct writer_arg){ .s = &s, .id = i };
		CHECK_EQ(pthread_create(&th[i], NULL, cpu_writer, &wa[i]), 0);
	}
	for (int it = 0; it < TOGGLES; it++) {
		struct kern k = { .s = &s };

		CHECK_EQ(uhmm_simdev_launch(s.d[it & 1], NPG, race_kernel, &k, NULL), 0);
		CHECK(atomic_load(&k.bad) == 0, "device read wrong constants");
		if (it % 4 == 3) {
			CHECK_EQ(uhmm_policy_range_set(s.r, &off), 0);
			CHECK_EQ(uhmm_policy_range_set(s.r, &on), 0);
		}
	}
	atomic_store(&s.stop, 1);
	for (int i = 0; i < 2; i++)
		CHECK_EQ(pthread_join(th[i], NULL), 0);
	for (size_t i = 0; i < NPG; i++)
		for (int c = 0; c < 2; c++)
			CHECK(s.p[i * (page_size / 8) + c] == atomic_load(&s.cpu_last[c][i]),
			      "page %zu: CPU thread %d's last write lost", i, c);
	pteardown(s.pol, s.d, 2);
	return 0;
}

/*
 * Read-mostly cleared and set while device 1 keeps reading (its faults
 * re-duplicate) and the CPU writes: a device read fault that saw the range
 * read-mostly and took the range's lock after the clearing must not
 * write-protect the page again (the CPU write then has no one to collapse
 * it and dies).
 */
static int round_set_while_reading(void *arg)
{
	struct uhmm_policy_attr on = { .preferred = UHMM_POLICY_NONE, .read_mostly = true,
				       .granularity = 1 };
	struct uhmm_policy_attr off = on;
	struct writer_arg wa[2];
	struct race s;
	pthread_t th[2], rd;

	(void)arg;
	off.read_mostly = false;
	race_setup(&s);
	CHECK_EQ(pthread_create(&rd, NULL, reader, &s), 0);
	for (int i = 0; i < 2; i++) {
		wa[i] = (struct writer_arg){ .s = &s, .id = i };
		CHECK_EQ(pthread_create(&th[i], NULL, cpu_writer, &wa[i]), 0);
	}
	for (int it = 0; it < TOGGLES; it++) {
		CHECK_EQ(uhmm_policy_range_set(s.r, it & 1 ? &on : &off), 0);
		sched_yield();
	}
	atomic_store(&s.stop, 1);
	for (int i = 0; i < 2; i++)
		CHECK_EQ(pthread_join(th[i], NULL), 0);
	CHECK_EQ(pthread_join(rd, NULL), 0);
	for (size_t i = 0; i < NPG; i++)
		for (int c = 0; c < 2; c++)
			CHECK(s.p[i * (page_size / 8) + c] == atomic_load(&s.cpu_last[c][i]),
			      "page %zu: CPU thread %d's last write lost", i, c);
	pteardown(s.pol, s.d, 2);
	return 0;
}

/* DEFAULT_ROUNDS rounds of @round_fn in watched children; all must pass. */
static void run_case(int (*round_fn)(void *), const char *what, const char *ok)
{
	int failed = run_rounds(round_fn, NULL, DEFAULT_ROUNDS, what);

	CHECK(failed == 0, "%s: %d rounds failed", what, failed);
	printf("%s: %s: %s: ok\n", NAME, what, ok);
}

static void case_set_while_reading(void)
{
	run_case(round_set_while_reading, "read-mostly cleared and set while a device reads and the CPU writes",
		 "no write killed or lost");
}

/*
 * fork() while device 1 keeps reading (copies made and dropped, the
 * layer's locks taken all the time) and a CPU thread writes: the child
 * writes every page of its copy of the range.  The kernel gives the child
 * a private copy-on-write copy it may write; it must neither hang nor die.
 */
static int round_fork_child_writes(void *arg)
{
	struct writer_arg wa;
	struct race s;
	pthread_t th, rd;

	(void)arg;
	race_setup(&s);
	CHECK_EQ(pthread_create(&rd, NULL, reader, &s), 0);
	wa = (struct writer_arg){ .s = &s, .id = 0 };
	CHECK_EQ(pthread_create(&th, NULL, cpu_writer, &wa), 0);
	for (int f = 0; f < FORKS; f++) {
		pid_t pid = fork();
		int status = 0, waited = 0;

		CHECK(pid >= 0, "fork: %s", strerror(errno));
		if (pid == 0) {
			for (size_t i = 0; i < NPG; i++)
				s.p[i * (page_size / 8) + 3] = 0xc0de + i;
			for (size_t i = 0; i < NPG; i++)
				if (s.p[i * (page_size / 8) + 3] != 0xc0de + i ||
				    s.p[i * (page_size / 8) + 16] != konst(i, 16))
					_exit(3);
			_exit(0);
		}
		/* 10 s for 64 writes: a child still running then is stuck. */
		while (waitpid(pid, &status, WNOHANG) == 0 && waited++ < 1000)
			usleep(10000);
		if (waited > 1000) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			CHECK(0, "fork %d: the child writing its copy of the range hung", f);
		}
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		      "fork %d: the child writing its copy of the range: status %#x", f, status);
	}
	atomic_store(&s.stop, 1);
	CHECK_EQ(pthread_join(th, NULL), 0);
	CHECK_EQ(pthread_join(rd, NULL), 0);
	for (size_t i = 0; i < NPG; i++)
		CHECK(s.p[i * (page_size / 8) + 3] == 0, "page %zu: the child's write reached the "
		      "parent", i);
	pteardown(s.pol, s.d, 2);
	return 0;
}

static void case_fork_child_writes(void)
{
	run_case(round_fork_child_writes, "a fork child writes its copy of a read-mostly range",
		 "every child wrote its copy");
}

static void case_device_write(void)
{
	run_case(round_device_write, "device writes to a read-mostly range another device reads",
		 "every launch succeeded, every word right");
}

static void case_cpu_write(void)
{
	run_case(round_cpu_write, "CPU writes racing each other, re-duplication and read-mostly cleared",
		 "no write killed or lost");
}

static const struct test_case cases[] = {
	{ "device_write", case_device_write },
	{ "cpu_write", case_cpu_write },
	{ "set_while_reading", case_set_while_reading },
	{ "fork_child_writes", case_fork_child_writes },
};

TEST_MAIN(NAME, NULL, NULL)
