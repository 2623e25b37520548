// SPDX-License-Identifier: MIT
/*
 * Mapping look-ups with many mappings (issue 16 follow-up): a look-up
 * reads only as far as its caller needs, never to the top of the address
 * space, so nothing that uhmm does once per operation costs a PROCMAP_QUERY
 * per mapping of the process, and nothing that walks every mapping once
 * (fork, teardown) costs more than about one query per mapping.
 *
 * The program defines ioctl() and open(), which the library's calls reach
 * before libc's: it counts PROCMAP_QUERY requests ('f', 17) and the opens
 * of /proc/self/maps (each a read of the whole list: the fallback's
 * cache reload), then does the call.  The counts are asserted, never a
 * time.  Normal mode (PROCMAP_QUERY in use): the bounds below apply to the
 * queries.  Fallback (UHMM_DISABLE=all, or a kernel before 6.11): no
 * query may be made; the teardown's reads of the list are bounded; every
 * case checks its results (the mappings found, each page's flags, the
 * data after fork and teardown) in both modes.  Each case prints which.
 *
 * 3000 one-page mappings of alternating protection (they cannot merge)
 * are made once; the cases skip when vm.max_map_count leaves no room.
 */
#include "common.h"
#include "procmap_count.h"

#include <stdarg.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>

#define NR_MANY		3000
#define NR_STATE	256	/* mappings in the page-state range */

static atomic_ulong maps_opens;

int open(const char *path, int flags, ...)
{
	unsigned int mode = 0;

	if ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE) {
		va_list ap;

		va_start(ap, flags);
		mode = va_arg(ap, unsigned int);
		va_end(ap);
	}
	if (!strcmp(path, "/proc/self/maps"))
		atomic_fetch_add(&maps_opens, 1);
	return (int)syscall(SYS_openat, AT_FDCWD, path, flags, mode);
}

static bool have_query(void)
{
	return variant.active & UHMM_FEAT_PROCMAP_QUERY;
}

static char *many[NR_MANY];	/* one page each; odd ones read-only (zeros) */

static char many_byte(int i)
{
	return (i & 1) ? 0 : (char)(i * 7 + 1);
}

static size_t count_mappings(void)
{
	FILE *f = fopen("/proc/self/maps", "re");
	size_t n = 0;
	int c;

	CHECK(f, "/proc/self/maps: %s", strerror(errno));
	while ((c = getc(f)) != EOF)
		n += c == '\n';
	fclose(f);
	return n;
}

/* The NR_MANY mappings, made once; a skip when the limit leaves no room. */
static void make_many(void)
{
	long max = read_long_file("/proc/sys/vm/max_map_count");
	size_t have = count_mappings();

	if (many[0])
		return;
	if (max < 0 || (size_t)max < have + NR_MANY + 2 * NR_STATE + 1024)
		SKIP("vm.max_map_count is %ld, %zu mappings exist: no room for %d more",
		     max, have, NR_MANY + 2 * NR_STATE);
	for (int i = 0; i < NR_MANY; i++) {
		many[i] = map_anon(page_size, (i & 1) ? PROT_READ : PROT_READ | PROT_WRITE);
		if (!(i & 1))
			many[i][0] = many_byte(i);
	}
	printf("%s: %d one-page mappings made; %zu in the process; mode: %s\n", test_name,
	       NR_MANY, count_mappings(),
	       have_query() ? "PROCMAP_QUERY (query counts asserted)"
			    : "fallback, /proc/self/maps cache (no query may be made)");
}

static void check_many(void)
{
	for (int i = 0; i < NR_MANY; i++)
		CHECK(many[i][0] == many_byte(i), "mapping %d lost its data", i);
}

static bool inval(struct uhmm_interval_notifier *mni, const struct uhmm_notifier_range *r,
		  unsigned long seq)
{
	(void)r;
	uhmm_interval_set_seq(mni, seq);
	return true;
}

static const struct uhmm_interval_notifier_ops nops = { .invalidate = inval };

/*
 * uhmm_find_mapping() below thousands of mappings: one mapping asked for,
 * at most two queries (it and "is there more").
 */
static void test_find_mapping(void)
{
	struct uhmm_mm *mm = test_mm();
	struct uhmm_mapping map;
	char *low = many[0];
	unsigned long q;
	int below = 0, lo = 0;

	make_many();
	for (int i = 0; i < NR_MANY; i++)
		if (many[i] < many[lo])
			lo = i;
	low = many[lo];
	for (int i = 0; i < NR_MANY; i++)
		below += many[i] < low;
	q = atomic_load(&procmap_queries);
	CHECK_EQ(uhmm_find_mapping(mm, (uintptr_t)low, &map), 0);
	q = atomic_load(&procmap_queries) - q;
	/* (A neighbour of the same kind made by someone else may have merged.) */
	CHECK(map.start <= (uintptr_t)low && map.end >= (uintptr_t)low + page_size,
	      "mapping [%#lx, %#lx) does not hold %p", (unsigned long)map.start,
	      (unsigned long)map.end, (void *)low);
	CHECK(map.flags & UHMM_PS_READ, "flags %#x", map.flags);
	CHECK(!(map.flags & UHMM_PS_MAYWRITE) == !!(lo & 1), "flags %#x of mapping %d",
	      map.flags, lo);
	if (have_query()) {
		CHECK(q >= 1 && q <= 2, "%lu PROCMAP_QUERY for one mapping with %d above it",
		      q, NR_MANY - 1 - below);
		OK("uhmm_find_mapping below %d mappings: %lu PROCMAP_QUERY (at most 2)",
		   NR_MANY - 1 - below, q);
	} else {
		CHECK_EQ(q, 0);
		OK("fallback: uhmm_find_mapping's result checked (no PROCMAP_QUERY made)");
	}
	uhmm_mm_put(mm);
}

/*
 * A migration there and back of a range in one mapping: its look-ups
 * ask for the range, not for what lies above it.
 */
static void test_migrate(void)
{
	const size_t n = 16;
	struct uhmm_mm *mm = test_mm();
	struct tdev *d = tdev_create(mm, n, 1);
	char *p = map_anon(n * page_size, PROT_READ | PROT_WRITE);
	unsigned long q;

	make_many();
	fill_pattern(p, n, 11);
	q = atomic_load(&procmap_queries);
	CHECK_EQ(tdev_to_dev(d, (uintptr_t)p, (uintptr_t)p + n * page_size, NULL), (long)n);
	CHECK_EQ(tdev_to_sys(d, (uintptr_t)p, (uintptr_t)p + n * page_size, NULL), (long)n);
	q = atomic_load(&procmap_queries) - q;
	CHECK_EQ(check_pattern(p, n, 11), -1);
	if (have_query()) {
		CHECK(q <= 16, "%lu PROCMAP_QUERY for a migration there and back", q);
		OK("migration there and back beside %d mappings: %lu PROCMAP_QUERY (at most 16)",
		   NR_MANY, q);
	} else {
		CHECK_EQ(q, 0);
		OK("fallback: the migration's data checked (no PROCMAP_QUERY made)");
	}
	munmap(p, n * page_size);
	tdev_destroy(d);
	uhmm_mm_put(mm);
}

/*
 * uhmm_page_state over NR_STATE mappings (more than any first guess of
 * the look-up): every page's flags right, about one query per mapping.
 */
static void test_page_state(void)
{
	struct uhmm_mm *mm = test_mm();
	char *p = map_anon(NR_STATE * page_size, PROT_READ | PROT_WRITE);
	uint32_t *st = calloc(NR_STATE, sizeof(*st));
	unsigned long q;

	make_many();
	CHECK(st, "calloc");
	for (size_t i = 1; i < NR_STATE; i += 2)
		CHECK_EQ(mprotect(p + i * page_size, page_size, PROT_READ), 0);
	q = atomic_load(&procmap_queries);
	CHECK_EQ(uhmm_page_state(mm, (uintptr_t)p, NR_STATE, st), 0);
	q = atomic_load(&procmap_queries) - q;
	for (size_t i = 0; i < NR_STATE; i++) {
		CHECK(st[i] & UHMM_PS_READ, "page %zu: state %#x", i, st[i]);
		CHECK(!(st[i] & UHMM_PS_MAYWRITE) == !!(i & 1), "page %zu: state %#x", i, st[i]);
	}
	if (have_query()) {
		CHECK(q >= 1 && q <= NR_STATE + NR_STATE / 16 + 4,
		      "%lu PROCMAP_QUERY for %d mappings", q, NR_STATE);
		OK("page state of %d mappings: %lu PROCMAP_QUERY (at most %d)", NR_STATE, q,
		   NR_STATE + NR_STATE / 16 + 4);
	} else {
		CHECK_EQ(q, 0);
		OK("fallback: the page state of %d mappings checked (no PROCMAP_QUERY made)",
		   NR_STATE);
	}
	free(st);
	munmap(p, NR_STATE * page_size);
	uhmm_mm_put(mm);
}

/*
 * fork() with a notifier: the atfork handler looks at every mapping once
 * (to invalidate the private writable ones), about one query each.
 */
static void test_fork(void)
{
	struct uhmm_mm *mm = test_mm();
	struct uhmm_interval_notifier mni = { 0 };
	char *p = map_anon(page_size, PROT_READ | PROT_WRITE);
	unsigned long q;
	size_t maps, bound;
	int status;
	pid_t pid;

	make_many();
	p[0] = 42;
	CHECK_EQ(uhmm_interval_notifier_insert(&mni, mm, (uintptr_t)p, page_size, &nops), 0);
	maps = count_mappings();
	bound = maps + maps / 16 + 64;
	q = atomic_load(&procmap_queries);
	pid = fork();
	CHECK(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		for (int i = 0; i < NR_MANY; i++)
			if (many[i][0] != many_byte(i))
				_exit(1);
		_exit(p[0] == 42 ? 0 : 1);
	}
	q = atomic_load(&procmap_queries) - q;
	CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && !WEXITSTATUS(status),
	      "the child saw wrong data (status %#x)", status);
	if (have_query()) {
		CHECK(q >= 1 && q <= bound, "%lu PROCMAP_QUERY for a fork with %zu mappings", q,
		      maps);
		OK("fork with %zu mappings: %lu PROCMAP_QUERY (at most %zu)", maps, q, bound);
	} else {
		CHECK_EQ(q, 0);
		OK("fallback: the child's data checked (no PROCMAP_QUERY made)");
	}
	uhmm_interval_notifier_remove(&mni);
	munmap(p, page_size);
	uhmm_mm_put(mm);
}

/*
 * The last uhmm_mm_put() unregisters every mapping from the userfaultfd,
 * walking them once: about one query per mapping; without PROCMAP_QUERY
 * one read of the list, not one per batch.
 */
static void test_teardown(void)
{
	const size_t n = 16;
	struct uhmm_mm *mm = test_mm();
	struct uhmm_interval_notifier mni = { 0 };
	struct tdev *d = tdev_create(mm, n, 1);
	char *p = map_anon(n * page_size, PROT_READ | PROT_WRITE);
	char *lo = p, *hi = p + n * page_size;
	unsigned long q, o;
	size_t maps, bound;

	make_many();
	for (int i = 0; i < NR_MANY; i++) {
		lo = many[i] < lo ? many[i] : lo;
		hi = many[i] + page_size > hi ? many[i] + page_size : hi;
	}
	fill_pattern(p, n, 5);
	CHECK_EQ(tdev_to_dev(d, (uintptr_t)p, (uintptr_t)p + n * page_size, NULL), (long)n);
	/* Every mapping between the lowest and the highest registered (events). */
	CHECK_EQ(uhmm_interval_notifier_insert(&mni, mm, (uintptr_t)lo, (size_t)(hi - lo),
					       &nops), 0);
	uhmm_interval_notifier_remove(&mni);
	tdev_destroy(d);	/* the pages come home */
	maps = count_mappings();
	bound = maps + maps / 16 + 64;
	q = atomic_load(&procmap_queries);
	o = atomic_load(&maps_opens);
	uhmm_mm_put(mm);	/* the last reference: the teardown */
	q = atomic_load(&procmap_queries) - q;
	o = atomic_load(&maps_opens) - o;
	CHECK_EQ(check_pattern(p, n, 5), -1);
	check_many();
	if (have_query()) {
		CHECK(q >= 1 && q <= bound, "%lu PROCMAP_QUERY for a teardown with %zu mappings",
		      q, maps);
		OK("teardown with %zu mappings: %lu PROCMAP_QUERY (at most %zu)", maps, q, bound);
	} else {
		CHECK_EQ(q, 0);
		CHECK(o >= 1 && o <= 4, "%lu reads of /proc/self/maps for a teardown with %zu "
		      "mappings", o, maps);
		OK("fallback: teardown with %zu mappings: %lu reads of /proc/self/maps "
		   "(at most 4), the data checked", maps, o);
	}
	munmap(p, n * page_size);
}

static const struct test_case cases[] = {
	TEST_CASE(test_find_mapping),
	TEST_CASE(test_migrate),
	TEST_CASE(test_page_state),
	TEST_CASE(test_fork),
	TEST_CASE(test_teardown),
};

TEST_MAIN("test_vma_lookups", NULL, NULL)
