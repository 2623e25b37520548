// SPDX-License-Identifier: MIT
/*
 * dlclose() of a library that uses uhmm while its context is live, its
 * device memory holds the program's pages and its notifier watches them
 * (tests/test_dlclose_plugin.c).  This program does not link uhmm: the
 * plugin's reference is the only one.  The kernel never unloads a module
 * whose device pages or notifiers are in use; uhmm keeps itself (linked
 * -z nodelete) and the module of a pool's or notifier's callbacks loaded
 * for the life of the context.  Afterwards every byte must read back
 * (CPU faults run the plugin's migrate_to_ram on uhmm's service thread),
 * and an munmap (the plugin's page_free and invalidate) must not crash.
 * Each round runs in a child; a crash is a failed round.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cases.h"

#define NAME "test_dlclose"
#define NPAGES 32
#define ROUNDS 4

static int round_child(void)
{
	long (*start)(char *, size_t);
	size_t ps = (size_t)sysconf(_SC_PAGESIZE);
	char *buf = mmap(NULL, NPAGES * ps, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	void *h;
	long r;

	if (buf == MAP_FAILED)
		return 2;
	for (size_t i = 0; i < NPAGES * ps; i++)
		buf[i] = (char)(i * 13 + (i >> 12));
	h = dlopen(PLUGIN_PATH, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		fprintf(stderr, "%s: dlopen: %s\n", NAME, dlerror());
		return 2;
	}
	start = (long (*)(char *, size_t))dlsym(h, "plugin_start");
	if (!start)
		return 2;
	r = start(buf, NPAGES);
	if (r == -ENOSYS || r == -EPERM) {
		printf("%s: SKIP: no userfaultfd (%ld)\n", NAME, r);
		return 77;
	}
	if (r != NPAGES) {
		fprintf(stderr, "%s: FAIL: plugin migrated %ld of %d pages\n", NAME, r, NPAGES);
		return 1;
	}
	if (dlclose(h)) {
		fprintf(stderr, "%s: dlclose: %s\n", NAME, dlerror());
		return 1;
	}
	for (size_t i = 0; i < NPAGES * ps; i++)
		if (buf[i] != (char)(i * 13 + (i >> 12))) {
			fprintf(stderr, "%s: FAIL: byte %zu lost after dlclose\n", NAME, i);
			return 1;
		}
	munmap(buf, NPAGES * ps);
	return 0;
}

static void test_dlclose_live_context(void)
{
	int failed = 0;

	for (int r = 0; r < ROUNDS; r++) {
		pid_t pid = fork();
		int st;

		if (pid < 0)
			exit(1);
		if (pid == 0)
			_exit(round_child());
		if (waitpid(pid, &st, 0) != pid)
			exit(1);
		if (WIFEXITED(st) && WEXITSTATUS(st) == 77)
			exit(77);
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			fprintf(stderr, "%s: round %d: %s %d\n", NAME, r,
				WIFSIGNALED(st) ? "killed by signal" : "exit",
				WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
			failed++;
		}
	}
	printf("%s: %d rounds, %d failed\n", NAME, ROUNDS, failed);
	if (failed)
		exit(1);
}

static const struct test_case cases[] = {
	TEST_CASE(test_dlclose_live_context),
};

int main(int argc, char **argv)
{
	struct test_suite s = {
		.name = NAME, .cases = cases, .nr_cases = sizeof(cases) / sizeof(cases[0]),
	};

	setvbuf(stdout, NULL, _IONBF, 0);
	return test_run(argc, argv, &s);
}
