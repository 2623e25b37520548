// SPDX-License-Identifier: MIT
/*
 * A new mapping at the addresses of a migrated (or registered), gone
 * mapping is a new mapping: nothing uhmm learned about the old one may
 * apply to it, as in the kernel, where the unmap is done with before the
 * addresses can be mapped again.
 *
 * Each round runs in a fresh process (uhmm's state starts empty): a 512 KiB
 * private anonymous mapping, THP-advised, is filled, migrated to simdev and
 * back, and then goes away; a new 512 KiB mapping is made at the same
 * addresses, every int of it written, and it is migrated to the device.
 * Every page must migrate and every int must read back as written (CPU
 * reads, which bring the pages home).  Variants of how the old mapping
 * goes and the new one comes:
 *
 *  - munmap:   munmap, then mmap without an address (lands on the hole),
 *              a malloc'd buffer of the same size beside it;
 *  - free:     as munmap, and then the malloc'd buffer is freed: libc
 *              unmaps it with its own system call, which uhmm sees only as
 *              a userfaultfd UNMAP event (the first migration registered
 *              the buffer for events); the new mapping lands on the
 *              buffer's addresses.  The case: 131,072 of 131,072
 *              ints read zero, or -ENOENT;
 *  - fixed:    mmap(MAP_FIXED) over the old mapping (no munmap);
 *  - mremap:   another mapping mremap'd (MREMAP_FIXED) onto the old one;
 *  - heap:     a malloc'd buffer (in [heap], brk memory) migrated, freed,
 *              malloc'd again at the same address;
 *  - brk:      the heap shrunk with sbrk over a migrated tail, then grown
 *              again over the same addresses;
 *  - raw-munmap:  the migrated mapping unmapped with the system call itself
 *              (as libc does inside free()), then mapped again there;
 *  - raw-discard: the migrated mapping discarded with the madvise system
 *              call itself (MADV_DONTNEED, as libc does for free memory),
 *              then written and migrated again (a REMOVE event);
 *  - race:     one thread unmaps the migrated mapping with the system call
 *              while another maps the same addresses as soon as they are
 *              free, writes one int per page and migrates: nothing orders
 *              the second thread after the first one's unmap event.
 *
 * The test runs two worker processes at once (the interleavings that lose
 * data need the other CPU busy), each forking one child per round, for a
 * bound of rounds (UHMM_TEST_ROUNDS overrides it).  Any lost or wrong int
 * or a migration that does not take every page fails the test.
 */
#include "common.h"

#include <malloc.h>
#include <sys/syscall.h>

#include <uhmm/simdev.h>

#define LEN		(512u << 10)
#define NINT		(LEN / sizeof(int))
#define ROUNDS_DEFAULT	40

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1
#else
#define SANITIZED 0
#endif

enum variant { V_MUNMAP, V_FREE, V_FIXED, V_MREMAP, V_HEAP, V_BRK, V_RAW_MUNMAP, V_RAW_DISCARD,
	       V_RACE, V_COUNT };
static const char *const vname[V_COUNT] = { "munmap", "free", "fixed", "mremap", "heap", "brk",
					    "raw-munmap", "raw-discard", "race" };

/* Child exit codes besides 0 (pass) and 1 (CHECK failure). */
#define RC_NOREUSE	3	/* the new mapping did not land on the old addresses */

static struct uhmm_simdev *dev;

static void fill(int *p, unsigned seed)
{
	for (size_t i = 0; i < NINT; i++)
		p[i] = (int)(seed * 0x9E3779B1u ^ (unsigned)i) | 1;
}

/* Count the ints of @p that are not pattern @seed; print the first few. */
static size_t lost(const int *p, unsigned seed, const char *what)
{
	size_t bad = 0;

	for (size_t i = 0; i < NINT; i++) {
		int want = (int)(seed * 0x9E3779B1u ^ (unsigned)i) | 1;

		if (p[i] != want && bad++ < 3)
			fprintf(stderr, "%s: %s: int %zu = %#x, expected %#x\n", test_name,
				what, i, (unsigned)p[i], (unsigned)want);
	}
	return bad;
}

/*
 * Set by the heap round where uhmm has no write-protect events: libc trims
 * and grows [heap] with its own brk, which uhmm then never hears of, so the
 * registration splits it recorded may no longer match the kernel's, and a
 * migration across such a boundary is refused (-EINVAL, "not inside one
 * mapping", nothing frozen; docs/LIMITATIONS.md).  The data must still be
 * intact, and new_life checks it.
 */
static bool refusal_allowed;
static unsigned long refusals;

/* Migrate [p, p + LEN) to the device: every page must go. */
static void to_dev(void *p, const char *what)
{
	struct uhmm_simdev_stats st = { 0 };
	int ret = uhmm_simdev_migrate_to_dev(dev, p, LEN / page_size, &st);

	if (refusal_allowed && ret == -EINVAL) {
		refusals++;
		return;
	}
	CHECK(ret == 0 && st.cpages == LEN / page_size,
	      "%s: migrate_to_dev = %d, %llu of %zu pages", what, ret,
	      (unsigned long long)st.cpages, LEN / page_size);
}

static void to_sys(void *p, const char *what)
{
	struct uhmm_simdev_stats st = { 0 };
	int ret = uhmm_simdev_migrate_to_sys(dev, p, LEN / page_size, &st);

	CHECK(ret == 0 && st.cpages == LEN / page_size,
	      "%s: migrate_to_sys = %d, %llu of %zu pages", what, ret,
	      (unsigned long long)st.cpages, LEN / page_size);
}

/* The old mapping's life: filled, to the device and back. */
static void old_life(int *p, unsigned seed)
{
	fill(p, seed);
	to_dev(p, "old mapping");
	to_sys(p, "old mapping");
	CHECK(lost(p, seed, "old mapping") == 0, "old mapping lost data");
}

/* The new mapping's life: every int written, migrated, read back. */
static int new_life(int *q, unsigned seed)
{
	size_t bad;

	fill(q, seed);
	to_dev(q, "new mapping");
	bad = lost(q, seed, "new mapping");
	CHECK(bad == 0, "new mapping: %zu of %zu ints lost", bad, (size_t)NINT);
	return 0;
}

static void *map_thp(void *hint, int flags)
{
	void *p = mmap(hint, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | flags,
		       -1, 0);

	CHECK(p != MAP_FAILED, "mmap: %s", strerror(errno));
	madvise(p, LEN, MADV_HUGEPAGE);	/* may fail where THP is off: not needed */
	return p;
}

/* The new mapping overlaps [o, o + olen). */
static bool overlaps(uintptr_t q, uintptr_t o, size_t olen)
{
	return q < o + olen && o < q + LEN;
}

/*
 * munmap() of the migrated mapping (the wrapper's), a new mapping on its
 * addresses, a malloc'd buffer beside it.
 */
static int round_munmap(unsigned seed)
{
	void *nb = malloc(LEN);	/* its own mapping (above the mmap threshold) */
	int *p, *q;

	CHECK(nb, "malloc");
	memset(nb, 0x5a, LEN);
	p = map_thp(NULL, 0);
	old_life(p, seed);
	CHECK(munmap(p, LEN) == 0, "munmap: %s", strerror(errno));
	q = map_thp(NULL, 0);
	if (q != p)
		return RC_NOREUSE;
	new_life(q, seed + 1);
	free(nb);
	return 0;
}

/*
 * free() of a malloc'd buffer (libc unmaps it itself: uhmm sees only the
 * userfaultfd event, its migration having registered the buffer for
 * events), then a new mapping over its addresses is migrated.
 */
static int round_free(unsigned seed)
{
	char *nb = malloc(LEN);	/* its own mapping (above the mmap threshold) */
	uintptr_t old;
	int *p, *q;

	CHECK(nb, "malloc");
	memset(nb, 0x5a, LEN);
	old = (uintptr_t)nb;
	p = map_thp(NULL, 0);
	old_life(p, seed);
	CHECK(munmap(p, LEN) == 0, "munmap: %s", strerror(errno));
	free(nb);
	/*
	 * A hint at the freed buffer's first page: where the kernel puts a
	 * hint-less mapping depends on every gap of this run's layout (the
	 * first device's reservation included), and in about 2 of 100 runs
	 * it chose another gap in every round.  The addresses are free, so
	 * the kernel takes the hint; a mapping elsewhere is still "no reuse".
	 */
	q = map_thp((void *)(old & ~(uintptr_t)(page_size - 1)), 0);
	if (!overlaps((uintptr_t)q, old - page_size, LEN + 2 * page_size))
		return RC_NOREUSE;
	return new_life(q, seed + 1);
}

static int round_fixed(unsigned seed)
{
	int *p = map_thp(NULL, 0), *q;

	old_life(p, seed);
	q = map_thp(p, MAP_FIXED);
	CHECK(q == p, "MAP_FIXED moved");
	return new_life(q, seed + 1);
}

static int round_mremap(unsigned seed)
{
	int *p = map_thp(NULL, 0), *o = map_thp(NULL, 0), *q;

	old_life(p, seed);
	memset(o, 0, LEN);
	q = mremap(o, LEN, LEN, MREMAP_MAYMOVE | MREMAP_FIXED, p);
	CHECK(q == p, "mremap: %s", strerror(errno));
	return new_life(q, seed + 1);
}

/*
 * Heap memory: a migrated malloc'd buffer in [heap] (below the mmap
 * threshold) is freed and malloc'd again at the same address; libc may
 * trim the heap in between (its own brk, seen only as an event).
 */
static int round_heap(unsigned seed)
{
	uintptr_t old;
	int ret;
	char *b;
	int *p, *q;

	mallopt(M_MMAP_THRESHOLD, 8 * LEN);	/* a sanitizer's allocator: no-op */
	b = malloc(2 * LEN);
	CHECK(b, "malloc");
	p = (int *)(((uintptr_t)b + LEN - 1) & ~(uintptr_t)(LEN - 1));
	old_life(p, seed);
	old = (uintptr_t)b;
	free(b);
	b = malloc(2 * LEN);
	CHECK(b, "malloc");
	if ((uintptr_t)b != old)
		return RC_NOREUSE;
	q = (int *)(((uintptr_t)b + LEN - 1) & ~(uintptr_t)(LEN - 1));
	refusal_allowed = !(variant.active & UHMM_FEAT_UFFD_WP);
	ret = new_life(q, seed + 1);
	refusal_allowed = false;
	if (refusals)
		printf("%s: heap: the new buffer's migration refused (-EINVAL) without "
		       "write-protect events, data intact\n", test_name);
	return ret;
}

static int round_brk(unsigned seed)
{
	char *top = sbrk(0), *p;
	uintptr_t a = ((uintptr_t)top + 2 * LEN - 1) & ~(uintptr_t)(LEN - 1);

	/* Our own stretch of the heap, past whatever malloc has. */
	CHECK(top != (void *)-1, "sbrk");
	CHECK(sbrk((intptr_t)(a + LEN - (uintptr_t)top)) != (void *)-1, "sbrk grow: %s",
	      strerror(errno));
	p = (char *)a;
	old_life((int *)p, seed);
	CHECK(sbrk(-(intptr_t)LEN) != (void *)-1, "sbrk shrink: %s", strerror(errno));
	CHECK(sbrk((intptr_t)LEN) != (void *)-1, "sbrk regrow: %s", strerror(errno));
	return new_life((int *)p, seed + 1);
}

/* Unmapped behind uhmm's wrappers (an UNMAP event), mapped again. */
static int round_raw_munmap(unsigned seed)
{
	int *p = map_thp(NULL, 0), *q;

	old_life(p, seed);
	CHECK(syscall(SYS_munmap, p, LEN) == 0, "munmap: %s", strerror(errno));
	q = map_thp(p, 0);
	if (q != p)
		return RC_NOREUSE;
	return new_life(q, seed + 1);
}

/* Discarded behind uhmm's wrappers (a REMOVE event), then used again. */
static int round_raw_discard(unsigned seed)
{
	int *p = map_thp(NULL, 0);

	old_life(p, seed);
	CHECK(syscall(SYS_madvise, p, LEN, MADV_DONTNEED) == 0, "madvise: %s", strerror(errno));
	return new_life(p, seed + 1);
}

static atomic_bool race_unmapped;

static void *race_unmap(void *p)
{
	CHECK(syscall(SYS_munmap, p, LEN) == 0, "munmap: %s", strerror(errno));
	atomic_store(&race_unmapped, true);
	return NULL;
}

/* One int per page: the new mapping is ready to migrate at once. */
static int round_race(unsigned seed)
{
	int *p = map_thp(NULL, 0), *q = MAP_FAILED;
	size_t per = page_size / sizeof(int), bad = 0;
	struct uhmm_simdev_stats st = { 0 };
	pthread_t t;
	int ret;

	old_life(p, seed);
	CHECK(pthread_create(&t, NULL, race_unmap, p) == 0, "pthread_create");
	/* Until the addresses are free; one last try once the unmap returned. */
	for (bool done = false; !done;) {
		done = atomic_load(&race_unmapped);
		q = mmap(p, LEN, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
		if (q == p)
			break;
		if (q != MAP_FAILED)
			munmap(q, LEN);	/* an old kernel took the hint as a hint */
	}
	if (q != p) {
		pthread_join(t, NULL);
		return RC_NOREUSE;
	}
	for (size_t i = 0; i < NINT; i += per)
		q[i] = (int)(seed + i) | 1;
	ret = uhmm_simdev_migrate_to_dev(dev, q, LEN / page_size, &st);
	pthread_join(t, NULL);
	for (size_t i = 0; i < NINT; i++)
		bad += q[i] != (i % per ? 0 : (int)(seed + i) | 1);
	CHECK(ret == 0 && st.cpages == LEN / page_size,
	      "race: migrate_to_dev = %d, %llu of %zu pages", ret,
	      (unsigned long long)st.cpages, LEN / page_size);
	CHECK(bad == 0, "race: new mapping: %zu of %zu ints wrong", bad, (size_t)NINT);
	return 0;
}

static int one_round(enum variant v, unsigned seed)
{
	struct uhmm_simdev_config cfg = { .threads = 1 };
	int ret = uhmm_simdev_create(&cfg, &dev);

	CHECK(ret == 0, "uhmm_simdev_create: %d", ret);
	switch (v) {
	case V_MUNMAP:
		return round_munmap(seed);
	case V_FREE:
		return round_free(seed);
	case V_FIXED:
		return round_fixed(seed);
	case V_MREMAP:
		return round_mremap(seed);
	case V_HEAP:
		return round_heap(seed);
	case V_BRK:
		return round_brk(seed);
	case V_RAW_MUNMAP:
		return round_raw_munmap(seed);
	case V_RAW_DISCARD:
		return round_raw_discard(seed);
	default:
		return round_race(seed);
	}
}

struct tally {
	long fail[V_COUNT], noreuse[V_COUNT], rounds[V_COUNT];
};

/* One worker: @rounds rounds of each selected variant, one child each. */
static void worker(int id, long rounds, unsigned vmask, int out)
{
	struct tally t = { 0 };

	for (long r = 0; r < rounds; r++) {
		for (int v = 0; v < V_COUNT; v++) {
			pid_t pid;
			int st;

			if (!(vmask & (1u << v)))
				continue;
			pid = fork();
			CHECK(pid >= 0, "fork: %s", strerror(errno));
			if (pid == 0)
				_exit(one_round(v, (unsigned)(id * 1000003 + r * 7 + v)));
			CHECK(waitpid(pid, &st, 0) == pid, "waitpid");
			t.rounds[v]++;
			if (WIFEXITED(st) && WEXITSTATUS(st) == RC_NOREUSE) {
				t.noreuse[v]++;
			} else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
				t.fail[v]++;
				fprintf(stderr, "%s: worker %d: %s round %ld failed (status %#x)\n",
					test_name, id, vname[v], r, st);
			}
		}
	}
	CHECK(write(out, &t, sizeof(t)) == (ssize_t)sizeof(t), "write");
}

/* Rounds of the variants in @vmask, in two workers at once. */
static void run_variants(unsigned vmask)
{
	const char *e = getenv("UHMM_TEST_ROUNDS");
	long rounds = e ? atol(e) : ROUNDS_DEFAULT;
	struct tally sum = { 0 };
	long failed = 0;
	int pfd[2];

#if SANITIZED
	if (!e)
		rounds = ROUNDS_DEFAULT / 8;	/* each round is a slow process start */
#endif
	CHECK(pipe(pfd) == 0, "pipe");
	for (int w = 0; w < 2; w++) {
		pid_t pid = fork();

		CHECK(pid >= 0, "fork: %s", strerror(errno));
		if (pid == 0) {
			close(pfd[0]);
			worker(w, rounds, vmask, pfd[1]);
			_exit(0);
		}
	}
	close(pfd[1]);
	for (int w = 0; w < 2; w++) {
		struct tally t;
		int st;

		CHECK(read(pfd[0], &t, sizeof(t)) == (ssize_t)sizeof(t), "a worker died");
		for (int v = 0; v < V_COUNT; v++) {
			sum.fail[v] += t.fail[v];
			sum.noreuse[v] += t.noreuse[v];
			sum.rounds[v] += t.rounds[v];
		}
		CHECK(wait(&st) > 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "worker status %#x",
		      st);
	}
	for (int v = 0; v < V_COUNT; v++) {
		if (!(vmask & (1u << v)))
			continue;
		printf("%s: %s: %ld rounds, %ld failed, %ld without reuse\n", test_name, vname[v],
		       sum.rounds[v], sum.fail[v], sum.noreuse[v]);
		failed += sum.fail[v];
		if (sum.rounds[v] && sum.noreuse[v] == sum.rounds[v] && SANITIZED &&
		    (v == V_FREE || v == V_HEAP)) {
			/* A sanitizer's allocator places and reuses blocks its own way. */
			printf("%s: %s: note: the sanitizer's allocator never reused the "
			       "addresses: not exercised\n", test_name, vname[v]);
			continue;
		}
		CHECK(sum.noreuse[v] < sum.rounds[v] || !sum.rounds[v],
		      "%s: the new mapping never reused the old addresses", vname[v]);
	}
	CHECK(!failed, "%ld rounds failed", failed);
}

/* One case per variant; UHMM_TEST_VARIANTS (a mask of them) still selects. */
static void run_variant(enum variant v)
{
	const char *vs = getenv("UHMM_TEST_VARIANTS");

	if (vs && !((unsigned)strtoul(vs, NULL, 0) & (1u << v)))
		SKIP_CASE("%s: %s: not in UHMM_TEST_VARIANTS=%s", test_name, vname[v], vs);
	run_variants(1u << v);
}

#define VARIANT_CASE(name, v)                                                 \
	static void name(void)                                                \
	{                                                                     \
		run_variant(v);                                               \
	}
VARIANT_CASE(case_munmap, V_MUNMAP)
VARIANT_CASE(case_free, V_FREE)
VARIANT_CASE(case_fixed, V_FIXED)
VARIANT_CASE(case_mremap, V_MREMAP)
VARIANT_CASE(case_heap, V_HEAP)
VARIANT_CASE(case_brk, V_BRK)
VARIANT_CASE(case_raw_munmap, V_RAW_MUNMAP)
VARIANT_CASE(case_raw_discard, V_RAW_DISCARD)
VARIANT_CASE(case_race, V_RACE)

static const struct test_case cases[] = {
	{ "munmap", case_munmap },
	{ "free", case_free },
	{ "fixed", case_fixed },
	{ "mremap", case_mremap },
	{ "heap", case_heap },
	{ "brk", case_brk },
	{ "raw_munmap", case_raw_munmap },
	{ "raw_discard", case_raw_discard },
	{ "race", case_race },
};

int main(int argc, char **argv)
{
	_Static_assert(sizeof(cases) / sizeof(cases[0]) == V_COUNT, "one case per variant");
	return test_main(argc, argv, "test_addr_reuse", TEST_CASES(cases), NULL, NULL);
}
