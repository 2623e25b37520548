/* SPDX-License-Identifier: MIT */
/*
 * The hunt programs' round runner (hunt.c, hunt2.c): wait for a round's
 * forked child with a watchdog, and on a hang print every thread's stack
 * (gdb) and kill it.  Header-only: each hunt program is one file.
 */
#ifndef HUNT_ROUND_H
#define HUNT_ROUND_H

#include <execinfo.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Called every 20 ms while round @r's child runs, @elapsed seconds in. */
typedef void (*hunt_tick_fn)(int r, time_t elapsed, void *arg);

/*
 * Wait for child @c of round @r; true if it hung: still running after 4/5
 * of @to seconds (its alarm fires at @to), in which case its threads'
 * stacks (at most @gdb_lines lines) go to stderr and it is killed.  *@st:
 * its wait status (0 after a hang).
 */
static bool hunt_wait(pid_t c, int r, unsigned to, int gdb_lines, hunt_tick_fn tick, void *arg,
		      int *st)
{
	time_t t0 = time(NULL);

	*st = 0;
	for (;;) {
		if (waitpid(c, st, WNOHANG) == c)
			return false;
		if (tick)
			tick(r, time(NULL) - t0, arg);
		if (time(NULL) - t0 > (time_t)(to * 4 / 5)) {
			char cmd[256];

			fprintf(stderr, "HANG round %d pid %d\n", r, c);
			/*
			 * Bounded: a thread in a killable wait (a madvise()
			 * waiting in userfaultfd_event_wait_completion for
			 * its event to be read) never stops for ptrace, while
			 * the stopped reader can no longer read it: gdb then
			 * waits for ever (round 4, FINDINGS.md item 11).
			 */
			snprintf(cmd, sizeof cmd, "timeout -s KILL 30 gdb -p %d -batch -ex 'thread apply all bt' 2>&1 | "
				 "grep -E '^#|^Thread' | head -%d >&2", c, gdb_lines);
			if (system(cmd)) {}
			kill(c, SIGKILL);
			waitpid(c, st, 0);
			*st = 0;
			return true;
		}
		struct timespec ts = { 0, 20000000 };
		nanosleep(&ts, NULL);
	}
}

/* The integer value of environment variable @n, @def if unset. */
static inline int hunt_envi(const char *n, int def)
{
	const char *v = getenv(n);

	return v ? atoi(v) : def;
}

/* Seconds on the monotonic clock. */
static inline double hunt_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/*
 * A round child's SIGSEGV / SIGBUS report: the signal, the address, the
 * thread and a backtrace on stderr (async-signal-safe but for the
 * backtrace, which is what a dying round is for).
 */
static inline void hunt_signal_report(int sig, const siginfo_t *si)
{
	char b[200];
	void *bt[32];
	int n = snprintf(b, sizeof b, "SIGNAL %d at %p (code %d) tid %ld\n", sig, si->si_addr,
			 si->si_code, (long)syscall(SYS_gettid));

	if (write(2, b, (size_t)n)) {}
	n = backtrace(bt, 32);
	backtrace_symbols_fd(bt, n, 2);
}

/* The handler hunt_main() installs in a round child: report and die. */
static inline void hunt_segv(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	hunt_signal_report(sig, si);
	_exit(128 + sig);
}

/* A scenario of a hunt program: its name and its round function. */
struct hunt_scenario {
	const char *n;
	void (*f)(int round);
};

/*
 * main() of hunt3, hunt4 and hunt5: `PROG SCENARIO ROUNDS [TIMEOUT]`, each
 * round a forked child watched by hunt_wait() with an alarm at TIMEOUT
 * seconds; ROUNDS 0 runs round N (the fourth argument, default 0) in
 * process, for a debugger.  @env_prefix names the variables that pick
 * the rounds (PREFIX_FIRST, PREFIX_STEP); @seed and @round are the
 * program's, set for each round; @segv is installed for SIGSEGV and
 * SIGBUS in the child.
 */
static inline int hunt_main(int argc, char **argv, const char *env_prefix,
			    const struct hunt_scenario *scs, size_t nscs, unsigned *seed,
			    int *round, void (*segv)(int, siginfo_t *, void *))
{
	char name[64];
	int rounds, fails = 0, hangs = 0, first, step;
	unsigned to;
	void (*f)(int) = NULL;

	if (argc < 3) {
		fprintf(stderr, "usage: %s SCENARIO ROUNDS [TIMEOUT]\n", argv[0]);
		return 2;
	}
	rounds = atoi(argv[2]);
	to = argc > 3 ? (unsigned)atoi(argv[3]) : 60;
	for (size_t i = 0; i < nscs; i++)
		if (!strcmp(scs[i].n, argv[1]))
			f = scs[i].f;
	if (!f) {
		fprintf(stderr, "unknown scenario\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (rounds == 0) {	/* in-process, for a debugger */
		*seed = (unsigned)getpid();
		*round = argc > 4 ? atoi(argv[4]) : 0;
		f(*round);
		return 0;
	}
	snprintf(name, sizeof(name), "%s_FIRST", env_prefix);
	first = getenv(name) ? atoi(getenv(name)) : 0;
	snprintf(name, sizeof(name), "%s_STEP", env_prefix);
	step = getenv(name) ? atoi(getenv(name)) : 1;
	for (int r = first; r < first + rounds * step; r += step) {
		pid_t c;
		int st;

		fflush(stdout);
		fflush(stderr);
		c = fork();
		if (c == 0) {
			struct sigaction sa = { .sa_sigaction = segv, .sa_flags = SA_SIGINFO };

			*seed = (unsigned)getpid() ^ (unsigned)r * 7919u;
			*round = r;
			sigaction(SIGSEGV, &sa, NULL);
			sigaction(SIGBUS, &sa, NULL);
			alarm(to);
			f(r);
			_exit(0);
		}
		if (hunt_wait(c, r, to, 1500, NULL, NULL, &st)) {
			hangs++;
		} else if (WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM) {
			hangs++;
			fprintf(stderr, "round %d: alarm (hang)\n", r);
		} else if (!WIFEXITED(st) || WEXITSTATUS(st)) {
			fails++;
			fprintf(stderr, "round %d: status %x\n", r, st);
		}
	}
	printf("%s: %d rounds, %d failed, %d hung (UHMM_DISABLE=%s)\n", argv[1], rounds, fails,
	       hangs, getenv("UHMM_DISABLE") ? getenv("UHMM_DISABLE") : "");
	return fails || hangs;
}

#endif /* HUNT_ROUND_H */
