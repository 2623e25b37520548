// SPDX-License-Identifier: MIT
/*
 * CPU access to device-resident memory: the device's migrate_to_ram path.
 *
 *  - migrate_to_ram is reached from any thread, for a read or a write (the
 *    write lands), with the fault address, the access kind and a window that
 *    holds the address;
 *  - many threads faulting the SAME device-resident page at once (released
 *    together by a barrier), reading or each writing its own slot: all data
 *    right, at most one migrate_to_ram call per thread, the page comes back
 *    exactly once (every device page freed once, none left in use);
 *  - many threads faulting DIFFERENT device pages at once (interleaved page
 *    sets, fault-around windows crossing the sets), reads and writes;
 *  - CPU writes racing migrations to the device: threads keep rewriting their
 *    own pages with a sequence-numbered pattern while the main thread keeps
 *    migrating the whole region to the device; no write is ever lost;
 *  - fault-around: exactly the aligned window comes back; a window is clipped
 *    to the mapping (two adjacent mappings; a mapping split after migration)
 *    and never takes another owner's pages;
 *  - kernel-mode access (read(2)/write(2) with a device-resident buffer):
 *    works and gives the right bytes with a full userfaultfd; fails with
 *    EFAULT (or a short count), data intact, with a user-mode-only one (an
 *    unprivileged child that exec's this program to probe afresh).
 */
#include "common.h"

#include <grp.h>
#include <sys/syscall.h>

#define NT 8			/* threads of the concurrent tests */

static struct uhmm_mm *mm;

/* ---- a device that records its migrate_to_ram calls ------------------- */

static atomic_long rec_calls;		/* migrate_to_ram calls */
static atomic_long rec_writes;		/* ... of them for a write access */
static atomic_long rec_bad;		/* calls whose arguments were wrong */
static atomic_bool rec_write;		/* the last call's vmf->write */
static _Atomic uintptr_t rec_addr, rec_ws, rec_we;	/* the last call's */

static int rec_migrate_to_ram(struct uhmm_vm_fault *vmf)
{
	uintptr_t a = vmf->address;

	atomic_fetch_add(&rec_calls, 1);
	if (vmf->write)
		atomic_fetch_add(&rec_writes, 1);
	atomic_store(&rec_write, vmf->write);
	atomic_store(&rec_addr, a);
	atomic_store(&rec_ws, vmf->window_start);
	atomic_store(&rec_we, vmf->window_end);
	/* Referenced (the mapping's reference and uhmm's), page aligned, inside. */
	if (vmf->mm != mm || !vmf->page || uhmm_page_refcount(vmf->page) < 2 ||
	    a % page_size || vmf->window_start % page_size ||
	    vmf->window_end % page_size || vmf->window_start > a ||
	    vmf->window_end < a + page_size)
		atomic_fetch_add(&rec_bad, 1);
	return tdev_migrate_to_ram(vmf);
}

static const struct uhmm_devmem_ops rec_ops = {
	.page_free = tdev_page_free,
	.migrate_to_ram = rec_migrate_to_ram,
};

static void rec_reset(void)
{
	atomic_store(&rec_calls, 0);
	atomic_store(&rec_writes, 0);
	atomic_store(&rec_addr, 0);
	atomic_store(&rec_ws, 0);
	atomic_store(&rec_we, 0);
	atomic_store(&rec_write, false);
}

/* A tdev whose pool (still empty) is re-added with the recording ops. */
static struct tdev *rdev_create(size_t nr_pages, size_t fault_around)
{
	struct tdev *d = tdev_create(mm, nr_pages, fault_around);

	CHECK_EQ(uhmm_devmem_remove(&d->pgmap), 0);
	d->pgmap.ops = &rec_ops;
	CHECK_EQ(uhmm_devmem_add(mm, &d->pgmap), 0);
	return d;
}

/* ---- helpers ---------------------------------------------------------- */

/* @npages pages whose start is aligned to @align pages. */
static char *map_aligned(size_t npages, size_t align)
{
	size_t len = npages * page_size, al = align * page_size;
	char *p = map_anon(len + al, PROT_READ | PROT_WRITE);
	char *a = (char *)(((uintptr_t)p + al - 1) & ~(uintptr_t)(al - 1));

	if (a > p)
		CHECK_EQ(munmap(p, (size_t)(a - p)), 0);
	if (a + len < p + len + al)
		CHECK_EQ(munmap(a + len, (size_t)(p + len + al - (a + len))), 0);
	return a;
}

/* Page @i of @base: the pattern of seed @seed (each page its own). */
static uint32_t pseed(uint32_t seed, size_t i)
{
	return seed * 4096u + (uint32_t)i;
}

static void fill_page(char *base, size_t i, uint32_t seed)
{
	fill_pattern(base + i * page_size, 1, pseed(seed, i));
}

static long check_page(const char *base, size_t i, uint32_t seed)
{
	return check_pattern(base + i * page_size, 1, pseed(seed, i));
}

static void fill_pages(char *base, size_t n, uint32_t seed)
{
	for (size_t i = 0; i < n; i++)
		fill_page(base, i, seed);
}

static void check_pages(const char *base, size_t n, uint32_t seed)
{
	for (size_t i = 0; i < n; i++) {
		long w = check_page(base, i, seed);

		CHECK(w < 0, "page %zu: word %ld is wrong", i, w);
	}
}

/* The expected value of word @w of page @i. */
static uint32_t pword(uint32_t seed, size_t i, size_t w)
{
	return pseed(seed, i) * 2654435761u + (uint32_t)w;
}

static bool on_device(const char *p)
{
	return (page_state_of(mm, p) & UHMM_PS_DEVICE_PRIVATE) != 0;
}

/* Pages [from, to) of @base are (@dev) or are not (!@dev) device-private. */
static void check_states(const char *base, size_t from, size_t to, bool dev)
{
	for (size_t i = from; i < to; i++) {
		uint32_t st = page_state_of(mm, base + i * page_size);

		CHECK(!!(st & UHMM_PS_DEVICE_PRIVATE) == dev,
		      "page %zu: state %#x, expected %son the device", i, st,
		      dev ? "" : "not ");
	}
}

/* Migrate all @n pages of @p to @d; on a shortfall, say where each page is. */
static void to_dev_all(struct tdev *d, char *p, size_t n)
{
	unsigned long cpages = 0;
	long moved = tdev_to_dev(d, (uintptr_t)p, (uintptr_t)p + n * page_size, &cpages);

	if (moved != (long)n) {
		fprintf(stderr, "%s: migrating [%p, +%zu pages) to the device moved %ld "
			"(cpages %lu, device pages in use %zu of %zu)\n", test_name,
			(void *)p, n, moved, cpages, tdev_used(d), d->nr_pages);
		for (size_t i = 0; i < n; i++)
			fprintf(stderr, "  page %zu: state %#x\n", i,
				page_state_of(mm, p + i * page_size));
	}
	CHECK_EQ(moved, (long)n);
	check_states(p, 0, n, true);
}

static uint32_t read_word(const char *p)
{
	return *(const volatile uint32_t *)p;
}

/* ---- migrate_to_ram from any thread, read or write --------------------- */

struct one_arg {
	char *page;
	uint32_t seed;
	size_t idx;
	long bad;
};

static void *reader_thread(void *arg)
{
	struct one_arg *a = arg;

	a->bad = check_page(a->page, a->idx, a->seed);
	return NULL;
}

static void *writer_thread(void *arg)
{
	struct one_arg *a = arg;

	/* The first access to the page is this store. */
	*(volatile uint32_t *)(a->page + a->idx * page_size + 8) = 0xabcdef01u;
	return NULL;
}

static void test_any_thread(void)
{
	const size_t n = 4;
	struct tdev *d = rdev_create(8, 1);
	char *p = map_anon(n * page_size, PROT_READ | PROT_WRITE);
	struct one_arg a = { .page = p, .seed = 11 };
	pthread_t th;

	fill_pages(p, n, 11);
	to_dev_all(d, p, n);
	rec_reset();

	/* A read from another thread. */
	a.idx = 0;
	CHECK_EQ(pthread_create(&th, NULL, reader_thread, &a), 0);
	CHECK_EQ(pthread_join(th, NULL), 0);
	CHECK(a.bad < 0, "reader: word %ld is wrong", a.bad);
	CHECK_EQ(atomic_load(&rec_calls), 1);
	CHECK(!atomic_load(&rec_write), "a read fault reported as a write");
	CHECK(atomic_load(&rec_addr) == (uintptr_t)p, "fault address");
	check_states(p, 0, 1, false);
	check_states(p, 1, n, true);
	printf("read of a device page from another thread: ok\n");

	/* A write from another thread lands. */
	a.idx = 1;
	CHECK_EQ(pthread_create(&th, NULL, writer_thread, &a), 0);
	CHECK_EQ(pthread_join(th, NULL), 0);
	CHECK_EQ(atomic_load(&rec_calls), 2);
	CHECK(atomic_load(&rec_write), "a write fault reported as a read");
	CHECK(atomic_load(&rec_addr) == (uintptr_t)p + page_size, "fault address");
	check_states(p, 1, 2, false);
	check_states(p, 2, n, true);
	CHECK_EQ(read_word(p + page_size + 8), 0xabcdef01u);
	CHECK_EQ(atomic_load(&rec_calls), 2);	/* the page stayed home */
	*(uint32_t *)(p + page_size + 8) = pword(11, 1, 2);
	CHECK(check_page(p, 1, 11) < 0, "rest of the written page");
	printf("write to a device page from another thread lands: ok\n");

	/* And from this thread. */
	CHECK_EQ(read_word(p + 2 * page_size + 4), pword(11, 2, 1));
	CHECK_EQ(atomic_load(&rec_calls), 3);
	CHECK(atomic_load(&rec_addr) == (uintptr_t)p + 2 * page_size, "fault address");
	check_pages(p, n, 11);
	CHECK_EQ(atomic_load(&rec_calls), 4);
	CHECK_EQ(atomic_load(&rec_writes), 1);
	CHECK_EQ(atomic_load(&rec_bad), 0);
	CHECK_EQ(tdev_used(d), 0);
	CHECK_EQ(atomic_load(&d->frees), (long)n);
	printf("read from the main thread: ok\n");
	munmap(p, n * page_size);
	tdev_destroy(d);
}

/* ---- many threads, the same page ---------------------------------------- */

struct same_arg {
	pthread_barrier_t *bar;
	char *page;
	uint32_t seed;
	size_t idx;
	int t;
	bool write;
	long bad;
};

static uint64_t slot_value(int t, int round)
{
	return UINT64_C(0x5107000000000000) | ((uint64_t)round << 16) | (uint64_t)t;
}

static void *same_thread(void *arg)
{
	struct same_arg *a = arg;
	char *pg = a->page + a->idx * page_size;

	pthread_barrier_wait(a->bar);
	if (a->write) {
		volatile uint64_t *slot = (volatile uint64_t *)(pg + 64 * a->t);

		*slot = slot_value(a->t, (int)a->seed);
		a->bad = *slot == slot_value(a->t, (int)a->seed) ? -1 : 0;
	} else {
		a->bad = check_page(a->page, a->idx, a->seed);
	}
	return NULL;
}

/*
 * @n pages aligned to @n, fault-around @fa, every thread accesses page @idx:
 * reading it, or writing its own 8-byte slot of it.
 */
static void same_page_rounds(size_t n, size_t fa, size_t idx, int rounds)
{
	struct tdev *d = rdev_create(n, fa);
	char *p = map_aligned(n, n);
	long max_calls = 0;

	for (int r = 0; r < rounds; r++) {
		pthread_barrier_t bar;
		struct same_arg a[NT];
		pthread_t th[NT];
		bool write = r & 1;
		uint32_t seed = 100 + (uint32_t)r;
		long calls0 = atomic_load(&d->cpu_faults);
		long frees0 = atomic_load(&d->frees);
		long pages0 = atomic_load(&d->to_ram_pages);
		long calls;

		fill_pages(p, n, seed);
		to_dev_all(d, p, n);
		CHECK_EQ(tdev_used(d), n);
		pthread_barrier_init(&bar, NULL, NT);
		for (int t = 0; t < NT; t++) {
			a[t] = (struct same_arg){ .bar = &bar, .page = p, .seed = seed,
						  .idx = idx, .t = t, .write = write };
			CHECK_EQ(pthread_create(&th[t], NULL, same_thread, &a[t]), 0);
		}
		for (int t = 0; t < NT; t++)
			CHECK_EQ(pthread_join(th[t], NULL), 0);
		pthread_barrier_destroy(&bar);
		for (int t = 0; t < NT; t++)
			CHECK(a[t].bad < 0, "round %d thread %d: wrong data (word %ld)", r, t,
			      a[t].bad);
		calls = atomic_load(&d->cpu_faults) - calls0;
		CHECK(calls >= 1 && calls <= NT, "round %d: %ld migrate_to_ram calls", r,
		      calls);
		if (calls > max_calls)
			max_calls = calls;
		/* The window came back, once: each device page freed exactly once. */
		CHECK_EQ(atomic_load(&d->to_ram_pages) - pages0, (long)n);
		CHECK_EQ(atomic_load(&d->frees) - frees0, (long)n);
		CHECK_EQ(tdev_used(d), 0);
		check_states(p, 0, n, false);
		if (write) {
			char *pg = p + idx * page_size;

			for (int t = 0; t < NT; t++) {
				uint64_t *slot = (uint64_t *)(pg + 64 * t);

				CHECK(*slot == slot_value(t, (int)seed),
				      "round %d: thread %d's write was lost", r, t);
				/* Put the pattern back to check the rest. */
				memcpy(slot, &(uint32_t[2]){ pword(seed, idx, 16 * t),
							   pword(seed, idx, 16 * t + 1) },
				       8);
			}
		}
		check_pages(p, n, seed);
	}
	printf("same page, %d threads, %zu-page region, fault_around %zu, reads and "
	       "writes: ok (at most %ld migrate_to_ram calls per round)\n", NT, n,
	       d->pgmap.fault_around, max_calls);
	munmap(p, n * page_size);
	tdev_destroy(d);
}

static void test_same_page(void)
{
	rec_reset();
	same_page_rounds(1, 1, 0, 10);
	same_page_rounds(16, 16, 5, 10);
	CHECK_EQ(atomic_load(&rec_bad), 0);
}

/* ---- many threads, different pages ---------------------------------------- */

struct diff_arg {
	pthread_barrier_t *bar;
	char *p;
	size_t n;
	uint32_t seed;		/* pattern now on the device */
	uint32_t nseed;		/* pattern the thread writes */
	int t;
	long bad_page;
};

static void *diff_thread(void *arg)
{
	struct diff_arg *a = arg;

	a->bad_page = -1;
	pthread_barrier_wait(a->bar);
	for (size_t i = (size_t)a->t; i < a->n; i += NT) {
		if (a->t & 1) {
			/* Write first: the fault is a write fault. */
			fill_page(a->p, i, a->nseed);
		} else {
			if (check_page(a->p, i, a->seed) >= 0) {
				a->bad_page = (long)i;
				return NULL;
			}
			fill_page(a->p, i, a->nseed);
		}
		if (check_page(a->p, i, a->nseed) >= 0) {
			a->bad_page = (long)i;
			return NULL;
		}
	}
	return NULL;
}

static void test_different_pages(void)
{
	const size_t n = 8 * NT, fa = 4;
	struct tdev *d = rdev_create(n, fa);
	char *p = map_aligned(n, fa);
	long frees0 = atomic_load(&d->frees);

	fill_pages(p, n, 200);
	for (int r = 0; r < 4; r++) {
		pthread_barrier_t bar;
		struct diff_arg a[NT];
		pthread_t th[NT];
		uint32_t seed = 200 + (uint32_t)r;
		long calls0 = atomic_load(&d->cpu_faults);
		long pages0 = atomic_load(&d->to_ram_pages);
		long calls;

		to_dev_all(d, p, n);
		pthread_barrier_init(&bar, NULL, NT);
		for (int t = 0; t < NT; t++) {
			a[t] = (struct diff_arg){ .bar = &bar, .p = p, .n = n, .seed = seed,
						  .nseed = seed + 1, .t = t };
			CHECK_EQ(pthread_create(&th[t], NULL, diff_thread, &a[t]), 0);
		}
		for (int t = 0; t < NT; t++)
			CHECK_EQ(pthread_join(th[t], NULL), 0);
		pthread_barrier_destroy(&bar);
		for (int t = 0; t < NT; t++)
			CHECK(a[t].bad_page < 0, "round %d thread %d: page %ld wrong", r, t,
			      a[t].bad_page);
		calls = atomic_load(&d->cpu_faults) - calls0;
		CHECK(calls >= (long)(n / fa) && calls <= (long)n,
		      "round %d: %ld migrate_to_ram calls", r, calls);
		CHECK_EQ(atomic_load(&d->to_ram_pages) - pages0, (long)n);
		CHECK_EQ(tdev_used(d), 0);
		check_states(p, 0, n, false);
		check_pages(p, n, seed + 1);
	}
	CHECK_EQ(atomic_load(&d->frees) - frees0, (long)(4 * n));
	CHECK_EQ(atomic_load(&rec_bad), 0);
	printf("different pages, %d threads, interleaved, reads and writes: ok\n", NT);
	munmap(p, n * page_size);
	tdev_destroy(d);
}

/* ---- CPU writes racing migrations to the device ---------------------------- */

#define MIX_PAGES_PER_THREAD 2
#define MIX_MIGRATIONS 300	/* the main thread's migrations */
#define MIX_MAX_ITERS 100000	/* bound on each thread's rewrites */

struct mix_arg {
	pthread_barrier_t *bar;
	atomic_bool *stop;
	char *p;
	int t;
	uint32_t last;		/* the last sequence number written */
	long bad_page;
	long bad_word;
};

static uint32_t mix_seed(int t, int j, uint32_t k)
{
	return ((uint32_t)(t * MIX_PAGES_PER_THREAD + j) << 20) | k;
}

static size_t mix_page(int t, int j)
{
	return (size_t)t + (size_t)j * NT;
}

/* Rewrite the own pages with sequence k, checking sequence k - 1 is there. */
static void *mix_thread(void *arg)
{
	struct mix_arg *a = arg;

	a->bad_page = -1;
	pthread_barrier_wait(a->bar);
	for (uint32_t k = 1; k <= MIX_MAX_ITERS && !atomic_load(a->stop); k++) {
		for (int j = 0; j < MIX_PAGES_PER_THREAD; j++) {
			char *pg = a->p + mix_page(a->t, j) * page_size;
			long w = check_pattern(pg, 1, mix_seed(a->t, j, k - 1));

			if (w >= 0) {
				a->bad_page = (long)mix_page(a->t, j);
				a->bad_word = w;
				return NULL;
			}
			fill_pattern(pg, 1, mix_seed(a->t, j, k));
		}
		a->last = k;
	}
	return NULL;
}

static void test_write_vs_migrate(void)
{
	const size_t n = NT * MIX_PAGES_PER_THREAD;
	struct tdev *d = rdev_create(2 * n, 4);
	char *p = map_aligned(n, 4);
	long moved = 0, frees0 = atomic_load(&d->frees), calls0, writes = 0;
	pthread_barrier_t bar;
	struct mix_arg a[NT];
	pthread_t th[NT];
	atomic_bool stop = false;

	for (int t = 0; t < NT; t++)
		for (int j = 0; j < MIX_PAGES_PER_THREAD; j++)
			fill_pattern(p + mix_page(t, j) * page_size, 1, mix_seed(t, j, 0));
	moved = tdev_to_dev(d, (uintptr_t)p, (uintptr_t)p + n * page_size, NULL);
	CHECK_EQ(moved, (long)n);
	calls0 = atomic_load(&d->cpu_faults);
	pthread_barrier_init(&bar, NULL, NT + 1);
	for (int t = 0; t < NT; t++) {
		a[t] = (struct mix_arg){ .bar = &bar, .stop = &stop, .p = p, .t = t };
		CHECK_EQ(pthread_create(&th[t], NULL, mix_thread, &a[t]), 0);
	}
	pthread_barrier_wait(&bar);
	for (int it = 0; it < MIX_MIGRATIONS; it++) {
		long m = tdev_to_dev(d, (uintptr_t)p, (uintptr_t)p + n * page_size, NULL);

		CHECK(m >= 0, "migration %d to the device: %ld", it, m);
		moved += m;
	}
	atomic_store(&stop, true);
	for (int t = 0; t < NT; t++)
		CHECK_EQ(pthread_join(th[t], NULL), 0);
	pthread_barrier_destroy(&bar);
	for (int t = 0; t < NT; t++)
		CHECK(a[t].bad_page < 0, "thread %d: page %ld lost a write: word %ld wrong "
		      "after sequence %u", t, a[t].bad_page, a[t].bad_word, a[t].last);
	/* Every page holds the last value its thread wrote. */
	for (int t = 0; t < NT; t++) {
		writes += a[t].last;
		for (int j = 0; j < MIX_PAGES_PER_THREAD; j++) {
			long w = check_pattern(p + mix_page(t, j) * page_size, 1,
					       mix_seed(t, j, a[t].last));

			CHECK(w < 0, "thread %d page %zu: word %ld is not its last write (%u)",
			      t, mix_page(t, j), w, a[t].last);
		}
	}
	for (size_t i = 0; i < n; i++) {
		uint32_t st = page_state_of(mm, p + i * page_size);

		CHECK(!(st & UHMM_PS_DEVICE_PRIVATE),
		      "page %zu: state %#x: device-private%s after the CPU read it", i, st,
		      (st & UHMM_PS_PRESENT) ? " AND mapped for the CPU" : "");
	}
	CHECK_EQ(tdev_used(d), 0);
	check_states(p, 0, n, false);
	/* Each page the device received was freed exactly once. */
	CHECK_EQ(atomic_load(&d->frees) - frees0, moved);
	CHECK_EQ(atomic_load(&rec_bad), 0);
	printf("CPU writes racing migrations to the device: ok (%d migrations, %ld pages "
	       "moved, %ld CPU faults, %ld page rewrites)\n", MIX_MIGRATIONS, moved,
	       atomic_load(&d->cpu_faults) - calls0, writes * MIX_PAGES_PER_THREAD);
	munmap(p, n * page_size);
	tdev_destroy(d);
}

/* ---- fault-around ------------------------------------------------------------ */

static void test_fault_around(void)
{
	const size_t n = 64, fa = 16;
	struct tdev *d = rdev_create(n, fa);
	char *p = map_aligned(n, fa);

	fill_pages(p, n, 300);
	to_dev_all(d, p, n);
	rec_reset();

	CHECK_EQ(read_word(p), pword(300, 0, 0));
	CHECK_EQ(atomic_load(&rec_calls), 1);
	CHECK(atomic_load(&rec_ws) == (uintptr_t)p &&
	      atomic_load(&rec_we) == (uintptr_t)p + fa * page_size,
	      "window [%#lx, %#lx), expected [%p, +%zu pages)",
	      (unsigned long)atomic_load(&rec_ws), (unsigned long)atomic_load(&rec_we),
	      (void *)p, fa);
	check_states(p, 0, fa, false);
	check_states(p, fa, n, true);
	CHECK_EQ(atomic_load(&d->to_ram_pages), (long)fa);
	CHECK_EQ(atomic_load(&d->frees), (long)fa);
	CHECK_EQ(tdev_used(d), n - fa);
	printf("fault-around: a read of page 0 brings back pages 0..%zu only: ok\n", fa - 1);

	/* A read in the middle of a window: the aligned window around it. */
	CHECK_EQ(read_word(p + 37 * page_size + 12), pword(300, 37, 3));
	CHECK_EQ(atomic_load(&rec_calls), 2);
	CHECK(atomic_load(&rec_ws) == (uintptr_t)p + 32 * page_size &&
	      atomic_load(&rec_we) == (uintptr_t)p + 48 * page_size, "window of page 37");
	check_states(p, fa, 32, true);
	check_states(p, 32, 48, false);
	check_states(p, 48, n, true);
	CHECK_EQ(tdev_used(d), n - 2 * fa);

	/* A write to the last page. */
	*(volatile uint32_t *)(p + (n - 1) * page_size) = pword(300, n - 1, 0);
	CHECK_EQ(atomic_load(&rec_calls), 3);
	CHECK(atomic_load(&rec_write), "write fault");
	CHECK(atomic_load(&rec_ws) == (uintptr_t)p + 48 * page_size &&
	      atomic_load(&rec_we) == (uintptr_t)p + n * page_size, "window of page 63");
	check_states(p, 48, n, false);
	check_states(p, fa, 32, true);
	check_pages(p, n, 300);
	CHECK_EQ(atomic_load(&rec_calls), 4);
	CHECK_EQ(tdev_used(d), 0);
	CHECK_EQ(atomic_load(&d->frees), (long)n);
	CHECK_EQ(atomic_load(&rec_bad), 0);
	printf("fault-around: windows around pages 37 and 63 (write): ok\n");
	munmap(p, n * page_size);
	tdev_destroy(d);
}

/* Does /proc/self/maps show a mapping ending and another starting at @a? */
static bool maps_boundary_at(uintptr_t a)
{
	FILE *f = fopen("/proc/self/maps", "r");
	bool ends = false, starts = false;
	char line[512];

	CHECK(f, "open /proc/self/maps");
	while (fgets(line, sizeof(line), f)) {
		unsigned long s, e;

		if (sscanf(line, "%lx-%lx", &s, &e) != 2)
			continue;
		ends |= e == a;
		starts |= s == a;
	}
	fclose(f);
	return ends && starts;
}

/*
 * Two adjacent mappings A = [p, p + 8 pages) and B = [p + 8, p + 16 pages),
 * B set apart by MADV_DONTDUMP (now, or after both went to the device); the
 * fault-around window (16 pages, aligned at p) covers both.  A fault in A
 * brings back A only, a fault in B brings back B only.
 */
static void window_two_mappings(bool split_late)
{
	const size_t n = 16, half = 8;
	struct tdev *d = rdev_create(n, n);
	char *p = map_aligned(n, n);
	char *b = p + half * page_size;

	if (!split_late)
		CHECK_EQ(madvise(b, half * page_size, MADV_DONTDUMP), 0);
	fill_pages(p, n, split_late ? 410 : 400);
	if (split_late) {
		to_dev_all(d, p, n);
		CHECK_EQ(madvise(b, half * page_size, MADV_DONTDUMP), 0);
		/* Now two mappings: a migration over both is refused. */
		CHECK_EQ(tdev_to_sys(d, (uintptr_t)p, (uintptr_t)p + n * page_size, NULL),
			 -EINVAL);
		check_states(p, 0, n, true);
	} else {
		/* Not one mapping: a migration over both is refused. */
		CHECK_EQ(tdev_to_dev(d, (uintptr_t)p, (uintptr_t)p + n * page_size, NULL),
			 -EINVAL);
		CHECK_EQ(tdev_to_dev(d, (uintptr_t)p, (uintptr_t)b, NULL), (long)half);
		CHECK_EQ(tdev_to_dev(d, (uintptr_t)b, (uintptr_t)b + half * page_size, NULL),
			 (long)half);
		check_states(p, 0, n, true);
	}
	CHECK(maps_boundary_at((uintptr_t)b), "two mappings meet at %p", (void *)b);
	rec_reset();

	CHECK_EQ(read_word(p + 3 * page_size), pword(split_late ? 410 : 400, 3, 0));
	CHECK_EQ(atomic_load(&rec_calls), 1);
	CHECK(atomic_load(&rec_ws) == (uintptr_t)p && atomic_load(&rec_we) == (uintptr_t)b,
	      "window [%#lx, %#lx) for a fault in [%p, %p)",
	      (unsigned long)atomic_load(&rec_ws), (unsigned long)atomic_load(&rec_we),
	      (void *)p, (void *)b);
	check_states(p, 0, half, false);
	check_states(p, half, n, true);
	CHECK_EQ(tdev_used(d), half);

	CHECK_EQ(read_word(p + (n - 1) * page_size + 4),
		 pword(split_late ? 410 : 400, n - 1, 1));
	CHECK_EQ(atomic_load(&rec_calls), 2);
	CHECK(atomic_load(&rec_ws) == (uintptr_t)b &&
	      atomic_load(&rec_we) == (uintptr_t)p + n * page_size,
	      "window [%#lx, %#lx) for a fault in [%p, %p)",
	      (unsigned long)atomic_load(&rec_ws), (unsigned long)atomic_load(&rec_we),
	      (void *)b, (void *)(p + n * page_size));
	check_states(p, 0, n, false);
	CHECK_EQ(tdev_used(d), 0);
	check_pages(p, n, split_late ? 410 : 400);
	CHECK_EQ(atomic_load(&rec_bad), 0);
	printf("fault-around window clipped to the mapping (%s): ok\n",
	       split_late ? "mapping split after migration" : "two adjacent mappings");
	munmap(p, n * page_size);
	tdev_destroy(d);
}

/* Alternate pages on two devices: a fault never takes the other's pages. */
static void window_two_owners(void)
{
	const size_t n = 16;
	struct tdev *da = rdev_create(n, n), *db = rdev_create(n, n);
	char *p = map_aligned(n, n);

	for (int round = 0; round < 2; round++) {
		struct tdev *hit = round ? db : da, *other = round ? da : db;
		size_t page = round ? 3 : 0;	/* B has odd pages, A even */

		fill_pages(p, n, 500 + (uint32_t)round);
		for (size_t i = 0; i < n; i++)
			CHECK_EQ(tdev_to_dev(i & 1 ? db : da, (uintptr_t)p + i * page_size,
					     (uintptr_t)p + (i + 1) * page_size, NULL), 1);
		check_states(p, 0, n, true);
		CHECK_EQ(tdev_used(da), n / 2);
		CHECK_EQ(tdev_used(db), n / 2);
		rec_reset();
		CHECK_EQ(read_word(p + page * page_size), pword(500 + (uint32_t)round, page, 0));
		CHECK_EQ(atomic_load(&rec_calls), 1);
		CHECK(atomic_load(&rec_ws) == (uintptr_t)p &&
		      atomic_load(&rec_we) == (uintptr_t)p + n * page_size, "window");
		CHECK_EQ(tdev_used(hit), 0);
		CHECK_EQ(tdev_used(other), n / 2);
		for (size_t i = 0; i < n; i++)
			CHECK(on_device(p + i * page_size) == ((i & 1) != (size_t)round),
			      "round %d page %zu", round, i);
		check_pages(p, n, 500 + (uint32_t)round);
		CHECK_EQ(tdev_used(da), 0);
		CHECK_EQ(tdev_used(db), 0);
	}
	CHECK_EQ(atomic_load(&da->frees), (long)n);
	CHECK_EQ(atomic_load(&db->frees), (long)n);
	CHECK_EQ(atomic_load(&rec_bad), 0);
	printf("fault-around never migrates another owner's pages: ok\n");
	munmap(p, n * page_size);
	tdev_destroy(da);
	tdev_destroy(db);
}

/* ---- kernel-mode access ---------------------------------------------------- */

static int memfd_with(const char *data, size_t len)
{
	int fd = (int)syscall(SYS_memfd_create, "devfault", 0);

	CHECK(fd >= 0, "memfd_create: %s", strerror(errno));
	CHECK_EQ(pwrite(fd, data, len, 0), (long)len);
	return fd;
}

/* Full userfaultfd: the kernel waits for migrate_to_ram; the bytes are right. */
static void kernel_access_full(void)
{
	const size_t n = 4;
	struct tdev *d = rdev_create(8, 1);
	char *buf = map_anon(n * page_size, PROT_READ | PROT_WRITE);
	char *tmp = map_anon(n * page_size, PROT_READ | PROT_WRITE);
	size_t got = 0;
	int pfd[2], fd;

	/* write(2) from a device-resident buffer into a pipe. */
	fill_pages(buf, n, 600);
	to_dev_all(d, buf, n);
	rec_reset();
	CHECK_EQ(pipe(pfd), 0);
	CHECK_EQ(write(pfd[1], buf, n * page_size), (long)(n * page_size));
	CHECK_EQ(atomic_load(&rec_calls), (long)n);
	CHECK_EQ(atomic_load(&rec_writes), 0);	/* the kernel read the buffer */
	while (got < n * page_size) {
		ssize_t r = read(pfd[0], tmp + got, n * page_size - got);

		CHECK(r > 0, "read pipe: %s", strerror(errno));
		got += (size_t)r;
	}
	check_pages(tmp, n, 600);
	CHECK_EQ(tdev_used(d), 0);
	check_pages(buf, n, 600);
	close(pfd[0]);
	close(pfd[1]);
	printf("full userfaultfd: write(2) from a device-resident buffer: ok\n");

	/* read(2) into pages 1-2 of a device-resident buffer. */
	fill_pages(tmp, n, 610);
	fd = memfd_with(tmp + page_size, 2 * page_size);
	fill_pages(buf, n, 620);
	to_dev_all(d, buf, n);
	rec_reset();
	CHECK_EQ(read(fd, buf + page_size, 2 * page_size), (long)(2 * page_size));
	CHECK_EQ(atomic_load(&rec_calls), 2);
	CHECK_EQ(atomic_load(&rec_writes), 2);	/* the kernel wrote the buffer */
	check_states(buf, 0, 1, true);
	check_states(buf, 1, 3, false);
	check_states(buf, 3, 4, true);
	CHECK(check_page(buf, 1, 610) < 0 && check_page(buf, 2, 610) < 0,
	      "read(2) gave the file's bytes");
	CHECK(check_page(buf, 0, 620) < 0 && check_page(buf, 3, 620) < 0,
	      "the pages around kept the device's data");
	CHECK_EQ(tdev_used(d), 0);
	CHECK_EQ(atomic_load(&rec_bad), 0);
	close(fd);
	printf("full userfaultfd: read(2) into a device-resident buffer: ok\n");
	munmap(buf, n * page_size);
	munmap(tmp, n * page_size);
	tdev_destroy(d);
}

/* User-mode-only userfaultfd: kernel-mode access fails, nothing is lost. */
static void kernel_access_user_only(struct uhmm_mm *m)
{
	const size_t n = 4;
	struct tdev *d = tdev_create(m, 8, 1);
	char *buf = map_anon(n * page_size, PROT_READ | PROT_WRITE);
	char *tmp = map_anon(n * page_size, PROT_READ | PROT_WRITE);
	ssize_t r;
	int pfd[2], fd;

	fill_pages(buf, n, 700);
	CHECK_EQ(tdev_to_dev(d, (uintptr_t)buf, (uintptr_t)buf + n * page_size, NULL),
		 (long)n);
	CHECK_EQ(pipe(pfd), 0);
	errno = 0;
	r = write(pfd[1], buf, n * page_size);
	CHECK((r < 0 && errno == EFAULT) || (r >= 0 && (size_t)r < n * page_size),
	      "write(2) from device memory returned %zd (%s)", r, strerror(errno));
	printf("user-mode-only: write(2) from a device-resident buffer: %s\n",
	       r < 0 ? "EFAULT" : "short count");

	fill_pages(tmp, n, 710);
	fd = memfd_with(tmp, n * page_size);
	errno = 0;
	r = read(fd, buf, n * page_size);
	CHECK((r < 0 && errno == EFAULT) || (r >= 0 && (size_t)r < n * page_size),
	      "read(2) into device memory returned %zd (%s)", r, strerror(errno));
	printf("user-mode-only: read(2) into a device-resident buffer: %s\n",
	       r < 0 ? "EFAULT" : "short count");
	/* Whatever was not transferred is still the device's data. */
	CHECK(r <= 0, "kernel-mode access reached device-resident memory");
	check_pages(buf, n, 700);
	CHECK_EQ(tdev_used(d), 0);
	close(fd);
	close(pfd[0]);
	close(pfd[1]);
	munmap(buf, n * page_size);
	munmap(tmp, n * page_size);
	tdev_destroy(d);
	printf("user-mode-only: device data intact after the failed accesses: ok\n");
}

/* Runs in a fresh, unprivileged process (exec'd), so the probe is its own. */
static int exec_user_mode(void)
{
	struct uhmm_sysinfo si;
	struct uhmm_mm *m;

	uhmm_sysinfo(&si);
	if (si.uffd_mode != UHMM_UFFD_USER_ONLY) {
		fprintf(stderr, "unprivileged child: mode %d (%s)\n", si.uffd_mode,
			si.uffd_source);
		return si.uffd_mode == UHMM_UFFD_FULL ? 78 : 77;
	}
	printf("%s: child: uid %d, userfaultfd %s\n", test_name, (int)getuid(),
	       si.uffd_source);
	m = test_mm();
	kernel_access_user_only(m);
	uhmm_mm_put(m);
	return 0;
}

static int child_user_mode(void *arg)
{
	(void)arg;
	if (setgroups(0, NULL) && errno != EPERM)
		return 77;
	if (setgid(65534) || setuid(65534))
		return 77;
	execl("/proc/self/exe", "test_devfault", "user-mode", (char *)NULL);
	return 4;
}

/* Before the context exists: fork an unprivileged child that exec's. */
static void test_kernel_access_user_only_child(void)
{
	int st;

	if (geteuid() != 0)
		SKIP_CASE("not root: no unprivileged child (this process's own mode is "
			  "tested by kernel_access)");
	st = run_child(child_user_mode, NULL);
	if (st == 78)
		SKIP_CASE("unprivileged processes get a full userfaultfd here: "
			  "user-mode-only kernel access not exercised");
	if (st == 77)
		SKIP_CASE("the child could not drop privileges or has no "
			  "userfaultfd: user-mode-only kernel access not exercised");
	CHECK(st == 0, "unprivileged child failed with %d", st);
	printf("kernel-mode access, user-mode-only userfaultfd (unprivileged child): ok\n");
}

static void test_kernel_access(void)
{
	struct uhmm_sysinfo si;

	uhmm_sysinfo(&si);
	printf("this process: userfaultfd %s (%s)\n",
	       si.uffd_mode == UHMM_UFFD_FULL ? "full" : "user-mode-only", si.uffd_source);
	if (si.uffd_mode == UHMM_UFFD_FULL)
		kernel_access_full();
	else
		kernel_access_user_only(mm);
}

static void window_two_mappings_early(void)
{
	window_two_mappings(false);
}

static void window_two_mappings_late(void)
{
	window_two_mappings(true);
}

/*
 * The context is taken by the first case that needs it (MM_CASE):
 * kernel_access_user_only_child forks its child before this process has one.
 */
MM_CASE(test_any_thread)
MM_CASE(test_same_page)
MM_CASE(test_different_pages)
MM_CASE(test_write_vs_migrate)
MM_CASE(test_fault_around)
MM_CASE(window_two_mappings_early)
MM_CASE(window_two_mappings_late)
MM_CASE(window_two_owners)
MM_CASE(test_kernel_access)

static int finish(void)
{
	if (mm)
		uhmm_mm_put(mm);
	return 0;
}

static const struct test_case cases[] = {
	TEST_CASE(test_kernel_access_user_only_child),
	{ "any_thread", case_test_any_thread },
	{ "same_page", case_test_same_page },
	{ "different_pages", case_test_different_pages },
	{ "write_vs_migrate", case_test_write_vs_migrate },
	{ "fault_around", case_test_fault_around },
	{ "window_two_mappings_early", case_window_two_mappings_early },
	{ "window_two_mappings_late", case_window_two_mappings_late },
	{ "window_two_owners", case_window_two_owners },
	{ "kernel_access", case_test_kernel_access },
};

int main(int argc, char **argv)
{
	test_name = "test_devfault";
	page_size = (size_t)sysconf(_SC_PAGESIZE);
	setvbuf(stdout, NULL, _IONBF, 0);
	if (argc > 1 && !strcmp(argv[1], "user-mode"))
		return exec_user_mode();
	return test_main(argc, argv, "test_devfault", TEST_CASES(cases), NULL, finish);
}
