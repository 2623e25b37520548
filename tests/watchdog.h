/* SPDX-License-Identifier: MIT */
/*
 * Rounds in forked children, watched from the parent: a round that hangs
 * fails the test instead of hanging it.  The bound is a watchdog, not a
 * synchronisation: a round that works ends long before it.
 */
#ifndef UHMM_TEST_WATCHDOG_H
#define UHMM_TEST_WATCHDOG_H

#include <signal.h>
#include <time.h>

#include "common.h"

#define WATCHDOG_SECONDS 60

enum { ROUND_OK = 0, ROUND_FAILED = 1, ROUND_HUNG = 2 };

/*
 * With UHMM_TEST_HANG_DUMP=1, a hung round's threads are described before
 * it is killed: each task's wchan and kernel stack (/proc), and gdb's
 * backtrace of every thread when gdb is installed.  Diagnostics only.
 */
static inline void dump_hung(pid_t pid)
{
	char cmd[512];

	if (!getenv("UHMM_TEST_HANG_DUMP"))
		return;
	snprintf(cmd, sizeof(cmd),
		 "for t in /proc/%d/task/*; do echo \"== task ${t##*/} $(cat $t/comm)"
		 " wchan=$(cat $t/wchan)\"; cat $t/stack 2>/dev/null; done 1>&2; "
		 "command -v gdb >/dev/null && gdb -p %d -batch -ex 'thread apply all bt'"
		 " 1>&2 2>/dev/null",
		 (int)pid, (int)pid);
	fflush(stdout);
	fflush(stderr);
	if (system(cmd) < 0)
		fprintf(stderr, "%s: cannot describe the hung round\n", test_name);
}

/*
 * Run @fn(@arg) in a child in its own process group (so anything it forks,
 * vforks or spawns is killed with it).  Returns ROUND_OK, ROUND_FAILED (the
 * child said so or died of a signal; printed) or ROUND_HUNG (still running
 * after @seconds: the whole group was killed).
 */
static inline int run_watched(int (*fn)(void *), void *arg, int seconds, const char *what)
{
	struct timespec deadline, now;
	sigset_t chld, old;
	pid_t pid;
	int status;

	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	pthread_sigmask(SIG_BLOCK, &chld, &old);
	pid = fork();
	CHECK(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		setpgid(0, 0);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		_exit(fn(arg));
	}
	setpgid(pid, pid);
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += seconds;
	for (;;) {
		struct timespec left;
		pid_t w = waitpid(pid, &status, WNOHANG);

		CHECK(w >= 0, "waitpid: %s", strerror(errno));
		if (w == pid)
			break;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec > deadline.tv_sec ||
		    (now.tv_sec == deadline.tv_sec && now.tv_nsec >= deadline.tv_nsec)) {
			fprintf(stderr, "%s: %s: still running after %d s: hung\n",
				test_name, what, seconds);
			dump_hung(pid);
			kill(-pid, SIGKILL);
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			pthread_sigmask(SIG_SETMASK, &old, NULL);
			return ROUND_HUNG;
		}
		left.tv_sec = deadline.tv_sec - now.tv_sec;
		left.tv_nsec = deadline.tv_nsec - now.tv_nsec;
		if (left.tv_nsec < 0) {
			left.tv_sec--;
			left.tv_nsec += 1000000000L;
		}
		/* Wakes when a child exits (SIGCHLD) or when the time is up. */
		sigtimedwait(&chld, NULL, &left);
	}
	kill(-pid, SIGKILL);	/* leftovers of the round's group, if any */
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (WIFSIGNALED(status)) {
		fprintf(stderr, "%s: %s: killed by signal %d\n", test_name, what,
			WTERMSIG(status));
		return ROUND_FAILED;
	}
	if (WEXITSTATUS(status) == TEST_SKIP)
		SKIP("%s", what);
	if (WEXITSTATUS(status) != 0) {
		fprintf(stderr, "%s: %s: failed (exit %d)\n", test_name, what,
			WEXITSTATUS(status));
		return ROUND_FAILED;
	}
	return ROUND_OK;
}

/*
 * Rounds of @fn: @rounds of them, each watched; UHMM_TEST_ROUNDS overrides
 * the count (for reproducing a bug: fork per round, many rounds),
 * UHMM_TEST_WATCHDOG the seconds a round may take, and with
 * UHMM_TEST_KEEP_GOING=1 every round runs and the failures are counted
 * (UHMM_TEST_HANG_DUMP=1: a hung round's stacks are printed, dump_hung()).
 * Returns the number of rounds that failed or hung.
 */
static inline int run_rounds(int (*fn)(void *), void *arg, int rounds, const char *what)
{
	const char *env = getenv("UHMM_TEST_ROUNDS");
	bool keep = getenv("UHMM_TEST_KEEP_GOING") != NULL;
	int failed = 0, hung = 0;

	const char *wd = getenv("UHMM_TEST_WATCHDOG");
	int seconds = wd && atoi(wd) > 0 ? atoi(wd) : WATCHDOG_SECONDS;

	if (env && atoi(env) > 0)
		rounds = atoi(env);
	for (int r = 0; r < rounds; r++) {
		int ret = run_watched(fn, arg, seconds, what);

		failed += ret == ROUND_FAILED;
		hung += ret == ROUND_HUNG;
		if ((failed || hung) && !keep)
			break;
	}
	if (keep || failed || hung)
		printf("%s: %s: %d rounds, %d failed, %d hung\n", test_name, what, rounds,
		       failed, hung);
	return failed + hung;
}

#endif
