// SPDX-License-Identifier: MIT
/*
 * A thread's own migration must never wait for itself: while a migration
 * holds pages frozen, uhmm may only touch memory of its own.  Here the
 * memory a migration could touch behind the caller's back is itself on the
 * device and frozen by that very migration:
 *
 * - the heap the library allocates from (its migration state, the arrays
 *   uhmm_migrate_device_pfns() and simdev's release used to malloc),
 * - the environment, moved onto the heap by setenv() (uhmm used to read
 *   UHMM_LOG with getenv() at the first error, mid-migration),
 * - the migrating thread's DTV, which glibc mallocs in the creating
 *   thread's arena (general-dynamic TLS reads it on thread-local accesses),
 * - a buffer the program migrated and then freed, whose pages a device-
 *   range migration collects while the library's (or the driver's) arrays
 *   sit on them.
 *
 * Each round is a child process watched by the parent (watchdog.h): a
 * child that does not finish within the watchdog's bound hung (the failure
 * this test is about) and is killed.  "test_frozen_self N [S]" runs N
 * rounds (with an S-second watchdog) and counts the failing ones instead of
 * stopping at the first (UHMM_TEST_ROUNDS, UHMM_TEST_WATCHDOG and
 * UHMM_TEST_KEEP_GOING, as for every watched test).
 */
#include <uhmm/simdev.h>

#include "common.h"
#include "watchdog.h"

#define NAME "test_frozen_self"
#define ROUNDS 6
#define DEV_PAGES 2048
#define WIN 32			/* pages migrated each side of an address */
#define BATCH 64		/* pages per migration */
#define LIVE_PAGES 8

/* ---- a device whose state is all in its own mappings ---------------------- */

struct fdev {
	struct uhmm_devmem pgmap;
	struct uhmm_mm *mm;
	char *arena;		/* device memory */
	char *bounce;		/* device-range migration destinations */
	uint64_t *dst;		/* its dst array */
	pthread_mutex_t lock;
	size_t nfree;
	size_t free_list[DEV_PAGES];
	bool used[DEV_PAGES];
	int owner;
};

static void *own_map(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	CHECK(p != MAP_FAILED, "mmap: %s", strerror(errno));
	return p;
}

static struct uhmm_page *fdev_alloc(struct fdev *d)
{
	struct uhmm_page *p = NULL;

	pthread_mutex_lock(&d->lock);
	if (d->nfree) {
		size_t i = d->free_list[--d->nfree];

		d->used[i] = true;
		p = uhmm_devmem_page(&d->pgmap, i);
	}
	pthread_mutex_unlock(&d->lock);
	if (p)
		uhmm_page_init(p);
	return p;
}

static void fdev_page_free(struct uhmm_page *p)
{
	struct fdev *d = p->pgmap->driver_data;

	pthread_mutex_lock(&d->lock);
	d->used[uhmm_page_index(p)] = false;
	d->free_list[d->nfree++] = uhmm_page_index(p);
	pthread_mutex_unlock(&d->lock);
}

static char *fdev_mem(struct fdev *d, struct uhmm_page *p)
{
	return d->arena + uhmm_page_index(p) * page_size;
}

/* Device -> system for [s, e) (at most BATCH pages); arrays on the stack. */
static long fdev_to_sys(struct fdev *d, uintptr_t s, uintptr_t e, struct uhmm_page *fp)
{
	uint64_t src[BATCH], dst[BATCH];
	struct uhmm_migrate_vma m = {
		.mm = d->mm, .start = s, .end = e, .src = src, .dst = dst,
		.pgmap_owner = &d->owner, .fault_page = fp,
		.flags = UHMM_MIGRATE_VMA_SELECT_DEVICE_PRIVATE,
	};
	long n = 0;
	int ret = uhmm_migrate_vma_setup(&m);

	if (ret)
		return ret;
	for (size_t i = 0; i < m.npages; i++) {
		void *to;

		if (!(src[i] & UHMM_MIGRATE_PFN_MIGRATE))
			continue;
		to = uhmm_migrate_alloc_sys(&m, i);
		if (!to)
			continue;
		memcpy(to, fdev_mem(d, uhmm_pfn_to_page(d->mm, uhmm_migrate_pfn_to_pfn(src[i]))),
		       page_size);
		n++;
	}
	uhmm_migrate_vma_pages(&m);
	uhmm_migrate_vma_finalize(&m);
	return n;
}

static int fdev_migrate_to_ram(struct uhmm_vm_fault *vmf)
{
	struct fdev *d = vmf->page->pgmap->driver_data;
	uintptr_t s = vmf->window_start, e = vmf->window_end;

	if ((e - s) / page_size > BATCH) {
		s = vmf->address;
		e = s + page_size;
	}
	return fdev_to_sys(d, s, e, vmf->page) < 0 ? -EFAULT : 0;
}

static const struct uhmm_devmem_ops fdev_ops = {
	.page_free = fdev_page_free,
	.migrate_to_ram = fdev_migrate_to_ram,
};

/* System -> device for [s, e) (at most BATCH pages); pages migrated. */
static long fdev_to_dev(struct fdev *d, uintptr_t s, uintptr_t e)
{
	uint64_t src[BATCH], dst[BATCH];
	struct uhmm_migrate_vma m = {
		.mm = d->mm, .start = s, .end = e, .src = src, .dst = dst,
		.pgmap_owner = &d->owner, .flags = UHMM_MIGRATE_VMA_SELECT_SYSTEM,
	};
	long n = 0;
	int ret = uhmm_migrate_vma_setup(&m);

	if (ret)
		return ret;
	for (size_t i = 0; i < m.npages; i++) {
		struct uhmm_page *p;
		const void *from;

		if (!(src[i] & UHMM_MIGRATE_PFN_MIGRATE) || !(p = fdev_alloc(d)))
			continue;
		from = uhmm_migrate_pfn_addr(&m, i);
		if (from)
			memcpy(fdev_mem(d, p), from, page_size);
		else
			memset(fdev_mem(d, p), 0, page_size);
		dst[i] = uhmm_migrate_pfn(uhmm_page_to_pfn(p)) |
			 (src[i] & UHMM_MIGRATE_PFN_WRITE);
		n++;
	}
	uhmm_migrate_vma_pages(&m);
	uhmm_migrate_vma_finalize(&m);
	return n;
}

/*
 * Device-range migration of @n pages whose collection array @src the
 * caller allocated (from the heap, as simdev did); @err_mid records an
 * error while the pages are frozen (uhmm's first: the log setting).
 */
static long fdev_evict(struct fdev *d, uint64_t *src, unsigned long n, bool pfns,
		       bool err_mid)
{
	uint64_t first = uhmm_page_to_pfn(uhmm_devmem_page(&d->pgmap, 0));
	long moved = 0;
	int ret;

	ret = pfns ? uhmm_migrate_device_pfns(d->mm, src, n)
		   : uhmm_migrate_device_range(d->mm, src, first, n);
	if (ret)
		return ret;
	if (err_mid)
		CHECK(uhmm_migrate_pfn_addr(NULL, 0) == NULL, "a NULL migration has no page");
	for (unsigned long i = 0; i < n; i++) {
		struct uhmm_page *p;
		size_t idx;

		d->dst[i] = 0;
		if (!(src[i] & UHMM_MIGRATE_PFN_MIGRATE))
			continue;
		p = uhmm_pfn_to_page(d->mm, uhmm_migrate_pfn_to_pfn(src[i]));
		idx = uhmm_page_index(p);
		memcpy(d->bounce + idx * page_size, fdev_mem(d, p), page_size);
		d->dst[i] = uhmm_migrate_pfn((uintptr_t)(d->bounce + idx * page_size) >>
					     __builtin_ctzl(page_size));
		moved++;
	}
	uhmm_migrate_device_pages(d->mm, src, d->dst, n);
	uhmm_migrate_device_finalize(d->mm, src, d->dst, n);
	return moved;
}

static size_t fdev_used(struct fdev *d)
{
	size_t n;

	pthread_mutex_lock(&d->lock);
	n = DEV_PAGES - d->nfree;
	pthread_mutex_unlock(&d->lock);
	return n;
}

/* ---- the round ----------------------------------------------------------- */

extern char **environ;

struct range {
	uintptr_t s, e;
};

static struct range *wins;	/* own mapping */
static size_t nwins;

/* The anonymous private writable mapping holding @a, or false. */
static bool anon_mapping_of(uintptr_t a, uintptr_t *ms, uintptr_t *me)
{
	FILE *f = fopen("/proc/self/maps", "re");
	char line[512];
	bool found = false;

	CHECK(f, "open maps");
	while (!found && fgets(line, sizeof(line), f)) {
		unsigned long s, e, off, ino;
		char perms[8];
		int pos = 0;

		if (sscanf(line, "%lx-%lx %7s %lx %*x:%*x %lu %n", &s, &e, perms, &off, &ino,
			   &pos) < 5 || a < s || a >= e)
			continue;
		found = ino == 0 && perms[0] == 'r' && perms[1] == 'w' && perms[3] == 'p' &&
			(line[pos] == '\n' || line[pos] == 0 || !strncmp(line + pos, "[heap]", 6));
		*ms = s;
		*me = e;
	}
	fclose(f);
	return found;
}

/* Add [a - WIN pages, a + WIN pages) clipped to its mapping. */
static void add_window(const void *addr)
{
	uintptr_t a = (uintptr_t)addr & ~(uintptr_t)(page_size - 1), ms, me;

	if (!addr || !anon_mapping_of(a, &ms, &me))
		return;
	wins[nwins].s = a - ms > WIN * page_size ? a - WIN * page_size : ms;
	wins[nwins].e = me - a > WIN * page_size ? a + WIN * page_size : me;
	nwins++;
}

static void *thread_dtv(void)
{
	void *dtv = NULL;
#if defined(__x86_64__)
	__asm__ volatile("mov %%fs:8, %0" : "=r"(dtv));
#elif defined(__aarch64__)
	void *tp;

	__asm__ volatile("mrs %0, tpidr_el0" : "=r"(tp));
	dtv = *(void **)tp;
#endif
	return dtv;
}

static long to_dev_windows(struct fdev *d)
{
	long moved = 0;

	for (size_t w = 0; w < nwins; w++)
		for (uintptr_t a = wins[w].s; a < wins[w].e; a += BATCH * page_size) {
			uintptr_t e = (a + BATCH * page_size < wins[w].e ? a + BATCH * page_size : wins[w].e);
			long r = fdev_to_dev(d, a, e);

			/* -EINVAL: the heap shrank under the window meanwhile. */
			CHECK(r >= 0 || r == -EINVAL || r == -ENOENT, "to_dev [%#lx, %#lx): %ld",
			      (unsigned long)a, (unsigned long)e, r);
			if (r > 0)
				moved += r;
		}
	return moved;
}

struct targs {
	struct uhmm_mm *mm;
	int ok;
};

static void *driver_thread(void *arg)
{
	struct targs *ta = arg;
	struct fdev *d = own_map(sizeof(*d));
	static const size_t sizes[] = { 16, 40, 72, 100, 200, 400, 520, 1000, 2100, 4100, 8200 };
	char *live, *freed, *guard;
	uint64_t *src;
	size_t k = 0;
	long moved;

	d->mm = ta->mm;
	d->arena = own_map(DEV_PAGES * page_size);
	d->bounce = own_map(DEV_PAGES * page_size);
	d->dst = own_map(DEV_PAGES * sizeof(uint64_t));
	pthread_mutex_init(&d->lock, NULL);
	for (size_t i = 0; i < DEV_PAGES; i++)
		d->free_list[i] = DEV_PAGES - 1 - i;
	d->nfree = DEV_PAGES;
	d->pgmap.ops = &fdev_ops;
	d->pgmap.owner = &d->owner;
	d->pgmap.nr_pages = DEV_PAGES;
	d->pgmap.fault_around = 1;	/* a fault brings back only its page */
	d->pgmap.driver_data = d;
	CHECK_EQ(uhmm_devmem_add(d->mm, &d->pgmap), 0);

	/* Live data, and a buffer to migrate and free. */
	live = malloc(LIVE_PAGES * page_size);
	freed = malloc(24 * page_size);
	guard = malloc(64);		/* keeps @freed from merging with the top */
	CHECK(live && freed && guard, "malloc");
	memset(live, 0x5a, LIVE_PAGES * page_size);
	memset(freed, 0xa5, 24 * page_size);

	/* Where the library's allocations will come from: this thread's arena. */
	wins = own_map(64 * sizeof(*wins));
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		void *p = malloc(sizes[i]);

		add_window(p);
		free(p);
	}
	add_window(environ);		/* moved onto the heap by setenv */
	add_window(environ[0]);
	add_window(thread_dtv());	/* malloced by the creating thread */
	add_window(live);
	add_window(freed);
	CHECK(nwins > 0, "no heap window found");

	moved = to_dev_windows(d);
	CHECK(moved > 0, "nothing of the heap migrated");
	if (getenv("FROZEN_SELF_VERBOSE"))
		printf("%s: %ld heap pages in %zu windows on the device\n", NAME, moved, nwins);
	free(freed);			/* its pages stay on the device */

	/* By pfns: every other page in use; the pfn array from the heap. */
	src = malloc(DEV_PAGES * sizeof(*src));
	CHECK(src, "malloc");
	pthread_mutex_lock(&d->lock);
	for (size_t i = 0; i < DEV_PAGES; i += 2)
		if (d->used[i])
			src[k++] = uhmm_page_to_pfn(uhmm_devmem_page(&d->pgmap, i));
	pthread_mutex_unlock(&d->lock);
	if (k)
		CHECK(fdev_evict(d, src, k, true, false) >= 0, "migrate_device_pfns");
	free(src);

	/* Again to the device, then the whole device range, an error in the middle. */
	to_dev_windows(d);
	src = malloc(DEV_PAGES * sizeof(*src));
	CHECK(src, "malloc");
	CHECK(fdev_evict(d, src, DEV_PAGES, false, true) >= 0, "migrate_device_range");
	free(src);

	CHECK(!strcmp(getenv("FROZEN_SELF_A") ?: "", "alpha"), "environment lost");
	CHECK(!strcmp(getenv("FROZEN_SELF_B") ?: "", "beta"), "environment lost");
	for (size_t i = 0; i < LIVE_PAGES * page_size; i++)
		CHECK(live[i] == 0x5a, "live data lost at byte %zu", i);
	free(live);
	free(guard);
	CHECK_EQ(fdev_used(d), 0);
	CHECK_EQ(uhmm_devmem_remove(&d->pgmap), 0);
	ta->ok = 1;
	return NULL;
}

/* simdev: a migrated buffer freed, then release and destroy collect its pages. */
static void simdev_part(void)
{
	struct uhmm_simdev_config cfg = { .capacity_pages = 1024, .threads = 1, .fault_around = 1 };

	for (int pass = 0; pass < 2; pass++) {
		struct uhmm_simdev *dev;
		char *buf, *guard;
		uintptr_t s, e;
		struct uhmm_simdev_stats st;

		CHECK_EQ(uhmm_simdev_create(&cfg, &dev), 0);
		buf = malloc(24 * page_size);
		guard = malloc(64);
		CHECK(buf && guard, "malloc");
		memset(buf, 0x3c, 24 * page_size);
		s = ((uintptr_t)buf + page_size - 1) & ~(uintptr_t)(page_size - 1);
		e = ((uintptr_t)buf + 24 * page_size) & ~(uintptr_t)(page_size - 1);
		CHECK_EQ(uhmm_simdev_migrate_to_dev(dev, (void *)s, (e - s) / page_size, &st), 0);
		free(buf);		/* freed while its pages are on the device */
		if (pass == 0)
			CHECK_EQ(uhmm_simdev_release(dev), 0);
		uhmm_simdev_destroy(dev);
		free(guard);
	}
}

static int round_child(void *arg)
{
	(void)arg;
	struct targs ta = { 0 };
	pthread_t t;

	/* New variables: glibc moves environ itself onto the heap. */
	setenv("FROZEN_SELF_A", "alpha", 1);
	setenv("FROZEN_SELF_B", "beta", 1);
	ta.mm = test_mm();
	CHECK_EQ(pthread_create(&t, NULL, driver_thread, &ta), 0);
	CHECK_EQ(pthread_join(t, NULL), 0);
	CHECK(ta.ok, "driver thread");
	simdev_part();
	uhmm_mm_put(ta.mm);
	return 0;
}

/*
 * A thread migrating (to the device, exclusive, home) the range from its
 * own frame's page to the top of its stack, a large array of its caller's
 * included (tests/hunt/FINDINGS.md item 18: such a thread hung, its own
 * calls faulting on the frame it froze).  The pages the migrating thread
 * runs on are left in place; the rest of the range migrates, and the
 * array's data is intact after every call.
 */
#define OWN_STACK (4096u << 10)	/* room for a sanitizer's static TLS too */
#define OWN_ARRAY (512u << 10)
static char *own_stack;

static __attribute__((noinline)) bool migrate_own_frame(struct uhmm_simdev *dev, int k,
							 size_t *moved)
{
	volatile char here = 0;
	uintptr_t lo = (uintptr_t)&here & ~(uintptr_t)(page_size - 1);
	size_t n = ((uintptr_t)own_stack + OWN_STACK - lo) / page_size;
	struct uhmm_simdev_stats st = { 0 };
	int r;

	switch (k % 3) {
	case 0:
		r = uhmm_simdev_migrate_to_dev(dev, (void *)lo, n, &st);
		if (r == 0)
			*moved += st.cpages;
		break;
	case 1:
		/* -EPERM: not every page taken (the thread's own are not). */
		r = uhmm_simdev_exclusive(dev, (void *)lo, n, &st);
		if (r == -EPERM)
			r = 0;
		break;
	default:
		r = uhmm_simdev_migrate_to_sys(dev, (void *)lo, n, &st);
		break;
	}
	if (r && r != -ENOENT)
		fprintf(stderr, "%s: call %d returned %d (%s)\n", NAME, k, r, uhmm_last_error());
	return r == 0 || r == -ENOENT;
}

static void *own_stack_thread(void *arg)
{
	struct uhmm_simdev_config cfg = { .capacity_pages = 1024, .threads = 1, .fault_around = 1 };
	char array[OWN_ARRAY];
	struct uhmm_simdev *dev;
	size_t moved = 0;
	bool *ok = arg;

	memset(array, 0x6b, sizeof(array));
	if (uhmm_simdev_create(&cfg, &dev))
		return NULL;
	for (int k = 0; k < 150; k++) {
		if (!migrate_own_frame(dev, k, &moved)) {
			fprintf(stderr, "%s: call %d failed\n", NAME, k);
			break;
		}
		for (size_t i = 0; i < sizeof(array); i++)
			if (array[i] != 0x6b) {
				fprintf(stderr, "%s: byte %zu of the array lost\n", NAME, i);
				goto out;
			}
		if (k == 149)
			*ok = moved > 0;	/* the rest of the range did migrate */
	}
out:
	if (!*ok)
		fprintf(stderr, "%s: %zu pages moved in all\n", NAME, moved);
	uhmm_simdev_destroy(dev);
	return NULL;
}

static int stack_child(void *arg)
{
	struct uhmm_mm *mm = test_mm();
	pthread_attr_t at;
	bool ok = false;
	pthread_t t;

	(void)arg;
	own_stack = mmap(NULL, OWN_STACK, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
	CHECK(own_stack != MAP_FAILED, "mmap");
	pthread_attr_init(&at);
	pthread_attr_setstack(&at, own_stack, OWN_STACK);
	CHECK_EQ(pthread_create(&t, &at, own_stack_thread, &ok), 0);
	CHECK_EQ(pthread_join(t, NULL), 0);
	CHECK(ok, "the thread migrating its own stack");
	uhmm_mm_put(mm);
	return 0;
}

static void test_heap_frozen_by_own_migration(void)
{
	CHECK_EQ(run_rounds(round_child, NULL, ROUNDS, "heap frozen by its own migration"), 0);
}

static void test_stack_frozen_by_own_migration(void)
{
	CHECK_EQ(run_rounds(stack_child, NULL, ROUNDS, "stack frozen by its own migration"), 0);
}

static const struct test_case cases[] = {
	TEST_CASE(test_heap_frozen_by_own_migration),
	TEST_CASE(test_stack_frozen_by_own_migration),
};

int main(int argc, char **argv)
{
	/* `test_frozen_self N [S]`: N rounds, each given S seconds, all of them run. */
	if (argc > 1 && argv[1][0] >= '0' && argv[1][0] <= '9') {
		int n = 1;

		setenv("UHMM_TEST_ROUNDS", argv[1], 1);
		setenv("UHMM_TEST_KEEP_GOING", "1", 1);
		if (argc > 2 && argv[2][0] >= '0' && argv[2][0] <= '9')
			setenv("UHMM_TEST_WATCHDOG", argv[n++ + 1], 1);
		argv[n] = argv[0];
		argv += n;
		argc -= n;
	}
	return test_main(argc, argv, NAME, TEST_CASES(cases), NULL, NULL);
}
