// SPDX-License-Identifier: MIT
/*
 * The owner of a buffer discards, replaces or moves parts of it while
 * another thread keeps migrating random parts of it to the device (round 3
 * hunt, tests/hunt/FINDINGS.md).  In the kernel a migration holds
 * mmap_lock for reading from migrate_vma_setup() to migrate_vma_finalize(),
 * so munmap, mmap(MAP_FIXED) and mremap (mmap_lock for writing) come
 * before or after a whole migration, and MADV_DONTNEED zaps the migration
 * entries finalize would restore.  What the owner must see, every
 * iteration:
 *
 *	dontneed	madvise(MADV_DONTNEED): zeroes afterwards
 *	map_fixed	mmap(MAP_FIXED) of new anonymous memory over it: zeroes
 *	mremap		mremap out to another address and back (MREMAP_DONTUNMAP
 *			both ways, so no hole is ever left): the data, at both ends
 *	free		madvise(MADV_FREE): the data or zeroes (the kernel may
 *			free a clean page), and a page written afterwards keeps
 *			what was written (the kernel skips migration entries
 *			and device-private pages, and a written page is dirty)
 *
 * and then the new data it writes, by its own reads and by the device's
 * (uhmm_simdev_read()).  Before the fixes: a page a migration claimed just
 * before such a call and froze after it was the new mapping's (map_fixed,
 * mremap: the migration took the owner's new data along and dropped it as
 * gone, the CPU read zeroes), or the discarded data was put back after the
 * discard had returned (dontneed, UHMM_DISABLE=all: the discard's event
 * was taken for the migration's own); and simdev mapped pages a discard
 * had zapped before it could map them (its count of invalidations was
 * read after setup), so its reads kept returning a freed device page.
 * free (round 4 hunt): MADV_FREE's event marked a page a migration had
 * claimed but not frozen yet as gone, the owner's write after the call
 * went into the page, the freeze took it along and finalize dropped it:
 * the CPU read zeroes where it had just written.
 *
 * Usage: test_unmap_migrate [CASE...]; UHMM_TEST_ROUNDS=N rounds per case
 * (a fresh process each), UHMM_TEST_KEEP_GOING=1 to run every round.
 */
#include "common.h"
#include "page_version.h"
#include "watchdog.h"

#include <pthread.h>
#include <sys/mman.h>

#include <uhmm/simdev.h>

#define NAME "test_unmap_migrate"
#define NPG 64
#define MAXRUN 16

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
/*
 * A TSan round of 800 iterations took 17-28 s alone and 45-55 s with a
 * second copy on the same CPU, close to the watchdog's 60 s: CI's TSan run
 * on 297d0e8, with other work on both CPUs, called one "hung" (the same
 * build, 4 rounds x 2 copies on one CPU, UHMM_TEST_HANG_DUMP=1: 0 hung).
 */
#define DEFAULT_ROUNDS 2
#define ITERS 300
#else
#define DEFAULT_ROUNDS 4
#define ITERS 1500
#endif

#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4
#endif

enum op { OP_DONTNEED, OP_MAP_FIXED, OP_MREMAP, OP_FREE };

static const char *const op_name[] = { "dontneed", "map_fixed", "mremap", "free" };

struct owner {
	struct uhmm_simdev *dev;
	char *buf;
	atomic_int stop;
	unsigned int seed;	/* the owner's */
	unsigned int mseed;	/* the migrator's */
	size_t maxmig;		/* the migrator's longest run */
	bool both_ways;		/* it also migrates back to system memory */
};

static void *migrator(void *arg)
{
	struct owner *o = arg;
	unsigned int s = o->mseed;

	while (!atomic_load(&o->stop)) {
		size_t i = next(&s) % NPG;
		size_t n = 1 + next(&s) % (NPG - i < o->maxmig ? NPG - i : o->maxmig);

		/* Refusals (a range across mappings the owner just made) are fine. */
		uhmm_simdev_migrate_to_dev(o->dev, o->buf + i * page_size, n, NULL);
		if (o->both_ways && (next(&s) & 1))
			uhmm_simdev_migrate_to_sys(o->dev, o->buf + i * page_size, n, NULL);
	}
	return NULL;
}

static int one_round(void *arg)
{
	enum op op = (enum op)(uintptr_t)arg;
	struct uhmm_simdev_config cfg = { .capacity_pages = 16 * NPG, .threads = 1 };
	struct owner o = { .stop = 0 };
	uint32_t ver[NPG];
	char *scratch, *b;
	pthread_t th;

	o.seed = (unsigned int)getpid() * 7919u;
	o.mseed = o.seed ^ 0x5555u;
	/*
	 * free: small migrations both ways, many of them, and short
	 * iterations: the window is between a migration's claim and its
	 * freeze (or, home, its install).
	 */
	o.maxmig = op == OP_FREE ? MAXRUN : NPG;
	o.both_ways = op == OP_FREE;
	CHECK_EQ(uhmm_simdev_create(&cfg, &o.dev), 0);
	o.buf = map_anon(NPG * page_size, PROT_READ | PROT_WRITE);
	scratch = map_anon(MAXRUN * page_size, PROT_READ | PROT_WRITE);
	b = map_anon(NPG * page_size, PROT_READ | PROT_WRITE);
	for (size_t i = 0; i < NPG; i++) {
		ver[i] = 1;
		put_page(o.buf + i * page_size, i, 1);
	}
	CHECK_EQ(pthread_create(&th, NULL, migrator, &o), 0);
	for (uint32_t it = 0; it < (op == OP_FREE ? 2 * ITERS : ITERS); it++) {
		size_t i = next(&o.seed) % NPG;
		size_t maxrun = op == OP_FREE ? MAXRUN / 2 : MAXRUN;
		size_t n = 1 + next(&o.seed) % (NPG - i < maxrun ? NPG - i : maxrun);
		size_t j = next(&o.seed) % NPG, m = 1 + next(&o.seed) % (NPG - j);
		char *a = o.buf + i * page_size;
		size_t len = n * page_size;
		bool zero = true, or_old = false;
		int r;

		switch (op) {
		case OP_DONTNEED:
			CHECK_EQ(madvise(a, len, MADV_DONTNEED), 0);
			break;
		case OP_MAP_FIXED:
			CHECK(mmap(a, len, PROT_READ | PROT_WRITE,
				   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == a,
			      "mmap MAP_FIXED: %s", strerror(errno));
			break;
		case OP_MREMAP: {
			char *t = mremap(a, len, len, MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP,
					 scratch);

			if (t == MAP_FAILED) {
				/* The range spans mappings an earlier move left. */
				CHECK(errno == EFAULT || errno == EINVAL, "mremap: %s", strerror(errno));
				continue;
			}
			for (size_t k = 0; k < n; k++) {
				int st = page_is(t + k * page_size, i + k, ver[i + k]);

				CHECK(st == 1, "iteration %u: page %zu moved out holds %s, not version %u",
				      it, i + k, st == 0 ? "zeroes" : "other data", ver[i + k]);
			}
			CHECK(mremap(t, len, len, MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP,
				     a) == a, "mremap back: %s", strerror(errno));
			zero = false;
			break; }
		case OP_FREE:
			CHECK_EQ(madvise(a, len, MADV_FREE), 0);
			or_old = true;
			break;
		}
		for (size_t k = i; k < i + n; k++) {
			int st = page_is(o.buf + k * page_size, k, ver[k]);

			CHECK(or_old ? st >= 0 : zero ? st == 0 : st == 1, "iteration %u: after %s of [%zu, +%zu) "
			      "returned, page %zu holds %s", it, op_name[op], i, n, k, what_is(st));
		}
		for (size_t k = i; k < i + n; k++)
			put_page(o.buf + k * page_size, k, ver[k] = it + 2);
		for (int pass = 0; pass < 2; pass++) {
			/* Again after a yield: the migrator may freeze it meanwhile. */
			if (pass)
				sched_yield();
			for (size_t k = i; k < i + n; k++) {
				int st = page_is(o.buf + k * page_size, k, ver[k]);

				CHECK(st == 1, "iteration %u: page %zu written after %s of [%zu, +%zu) "
				      "returned reads %s, not version %u", it, k, op_name[op], i, n,
				      st == 0 ? "zeroes" : "other data", ver[k]);
			}
		}
		if (op == OP_FREE && it % 64)
			continue;
		for (size_t k = 0; k < NPG; k++) {
			int st = page_is(o.buf + k * page_size, k, ver[k]);

			CHECK(st == 1, "iteration %u (%s of [%zu, +%zu)): the CPU reads %s in page "
			      "%zu, not its version %u", it, op_name[op], i, n, st == 0 ? "zeroes" :
			      "other data", k, ver[k]);
		}
		r = uhmm_simdev_read(o.dev, o.buf + j * page_size, m, b, NULL);
		CHECK(r == 0, "device read: %d", r);
		for (size_t k = 0; k < m; k++) {
			int st = page_is(b + k * page_size, j + k, ver[j + k]);

			CHECK(st == 1, "iteration %u (%s of [%zu, +%zu)): the device reads %s in "
			      "page %zu, not its version %u (the CPU reads it right)", it,
			      op_name[op], i, n, st == 0 ? "zeroes" : "other data", j + k,
			      ver[j + k]);
		}
	}
	atomic_store(&o.stop, 1);
	CHECK_EQ(pthread_join(th, NULL), 0);
	uhmm_simdev_destroy(o.dev);
	for (size_t k = 0; k < NPG; k++)
		CHECK(page_is(o.buf + k * page_size, k, ver[k]) == 1,
		      "page %zu not its version %u after the destroy", k, ver[k]);
	return 0;
}

static void rounds_of(enum op op)
{
	char what[64];
	int failed;

	snprintf(what, sizeof(what), "%s against migrations", op_name[op]);
	failed = run_rounds(one_round, (void *)(uintptr_t)op, DEFAULT_ROUNDS, what);
	CHECK(failed == 0, "%s: %d rounds failed", what, failed);
	printf("%s: %s: every page zero or its data after the call, then its new data for "
	       "the CPU and the device: ok\n", NAME, what);
}

static void case_dontneed(void) { rounds_of(OP_DONTNEED); }
static void case_map_fixed(void) { rounds_of(OP_MAP_FIXED); }
static void case_mremap(void) { rounds_of(OP_MREMAP); }
static void case_free(void) { rounds_of(OP_FREE); }

static const struct test_case cases[] = {
	{ "dontneed", case_dontneed },
	{ "map_fixed", case_map_fixed },
	{ "mremap", case_mremap },
	{ "free", case_free },
};

TEST_MAIN(NAME, NULL, NULL)
