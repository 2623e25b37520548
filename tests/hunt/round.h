/* SPDX-License-Identifier: MIT */
/*
 * The hunt programs' round runner (hunt.c, hunt2.c): wait for a round's
 * forked child with a watchdog, and on a hang print every thread's stack
 * (gdb) and kill it.  Header-only: each hunt program is one file.
 */
#ifndef HUNT_ROUND_H
#define HUNT_ROUND_H

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>

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

#endif /* HUNT_ROUND_H */
