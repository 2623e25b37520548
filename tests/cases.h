/* SPDX-License-Identifier: MIT */
/*
 * Named test cases, the way the kernel selftests' TEST_F() names theirs:
 * a test program is a table of cases, and
 *
 *	prog              runs every case, in the table's order, in this process
 *	prog CASE...      runs only the cases named (CTest runs one per entry)
 *	prog --list       prints the case names, one a line, and nothing else
 *
 * The build runs `prog --list` after linking the program and registers one
 * CTest entry per case, twice (tests/CMakeLists.txt, CONTRIBUTING.md):
 * `ctest -R test_migrate.roundtrip` runs one case.  A case is a function
 * without arguments; it fails by exiting non-zero (CHECK()), skips by
 * exiting 77 with its reason printed (SKIP()), passes by returning.
 *
 * This header needs only libc (test_itree and test_dlclose do not link
 * uhmm); common.h adds the uhmm-specific start (test_init()).
 */
#ifndef UHMM_TEST_CASES_H
#define UHMM_TEST_CASES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct test_case {
	const char *name;
	void (*fn)(void);
};

/*
 * A table entry for function @fn, named without its "test_" prefix:
 * TEST_CASE(test_roundtrip) is the case "roundtrip".
 */
#define TEST_CASE(fn) { #fn, fn }

#define TEST_CASES(table) (table), sizeof(table) / sizeof((table)[0])

/*
 * struct test_suite - what test_run() needs of a program
 * @name: the program's name, as CTest prefixes its entries
 * @cases, @nr_cases: the table (TEST_CASES(table) fills both)
 * @init: called once with @name before @start (common.h's test_init():
 *	the variant probe, the skip where no userfaultfd can be had); may be NULL
 * @start: called once, before the first case that runs (the program's
 *	common setup, e.g. its context); may be NULL
 * @finish: called once after the cases that ran; its return value is the
 *	program's exit status (soft failures counted by the cases); may be NULL
 */
struct test_suite {
	const char *name;
	const struct test_case *cases;
	size_t nr_cases;
	void (*init)(const char *name);
	void (*start)(void);
	int (*finish)(void);
};

/* Only one case runs in this process (as CTest runs them): see SKIP_CASE(). */
static bool test_case_alone;

/*
 * A case that cannot run here: when it runs alone, it is skipped (exit 77,
 * the reason printed), so CTest shows it skipped; when the program runs
 * all its cases, the reason is printed and the next case runs.
 */
#define SKIP_CASE(...)                                                        \
	do {                                                                  \
		if (test_case_alone) {                                        \
			printf("SKIP: ");                                     \
			printf(__VA_ARGS__);                                  \
			printf("\n");                                         \
			exit(77);                                             \
		}                                                             \
		printf("not run: ");                                          \
		printf(__VA_ARGS__);                                          \
		printf("\n");                                                 \
		return;                                                       \
	} while (0)

static inline const char *test_case_name(const struct test_case *c)
{
	return strncmp(c->name, "test_", 5) ? c->name : c->name + 5;
}

static inline const struct test_case *test_case_find(const struct test_suite *s,
						     const char *name)
{
	for (size_t i = 0; i < s->nr_cases; i++)
		if (!strcmp(test_case_name(&s->cases[i]), name))
			return &s->cases[i];
	return NULL;
}

static inline void test_case_run(const struct test_suite *s, const struct test_case *c)
{
	printf("%s.%s: start\n", s->name, test_case_name(c));
	fflush(stdout);
	c->fn();
	printf("%s.%s: ok\n", s->name, test_case_name(c));
	fflush(stdout);
}

/*
 * Run the cases argv names, or all of them; `--list` prints their names.
 * Returns the exit status: 0 passed, 2 a name that is no case (the list is
 * printed), else @finish's value.  A failing or skipping case exits the
 * process itself.
 */
static inline int test_run(int argc, char **argv, const struct test_suite *s)
{
	int ret = 0;

	if (argc == 2 && !strcmp(argv[1], "--list")) {
		for (size_t i = 0; i < s->nr_cases; i++)
			printf("%s\n", test_case_name(&s->cases[i]));
		return 0;
	}
	for (int a = 1; a < argc; a++) {
		if (!test_case_find(s, argv[a])) {
			fprintf(stderr, "%s: no case \"%s\"; the cases are:\n", s->name, argv[a]);
			for (size_t i = 0; i < s->nr_cases; i++)
				fprintf(stderr, "  %s\n", test_case_name(&s->cases[i]));
			return 2;
		}
	}
	test_case_alone = argc == 2;
	if (s->init)
		s->init(s->name);
	if (s->start)
		s->start();
	if (argc > 1) {
		for (int a = 1; a < argc; a++)
			test_case_run(s, test_case_find(s, argv[a]));
	} else {
		for (size_t i = 0; i < s->nr_cases; i++)
			test_case_run(s, &s->cases[i]);
	}
	if (s->finish)
		ret = s->finish();
	if (!ret)
		printf("%s: PASS\n", s->name);
	return ret;
}

#endif
