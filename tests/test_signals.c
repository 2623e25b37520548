// SPDX-License-Identifier: MIT
/*
 * Signal handlers that touch device memory while the interrupted thread is
 * inside uhmm (issue 12.4).
 *
 * In the kernel no signal handler runs in the middle of migrate_vma, of a
 * munmap's invalidation callbacks, of madvise or of hmm_range_fault: they
 * are kernel code.  In uhmm they run on the caller's thread, so uhmm keeps
 * asynchronous signals blocked where a handler touching device memory would
 * wait for the very thread it interrupted.  Each scenario below has a
 * thread do one such operation in a loop while another thread signals it
 * (pthread_kill, one signal at a time, the next once the handler ran); the
 * handler reads a device-resident page and checks its content.  Every round
 * runs in a watched child process: a hang fails the test.
 *
 * The device's migrate_to_ram and the mirror's invalidate callback take the
 * same driver lock, as simdev's (and a real driver's) do.
 *
 * The handler's fault is served on uhmm's service thread, which runs the
 * device's migrate_to_ram.  So whatever that path takes (uhmm's own
 * allocator and locks, the driver's locks and memory) must not be held by
 * an application thread with signals open; the last scenarios interrupt
 * the thread where it holds such things the library does not block
 * signals for: inside malloc (the handler's fault must not need the
 * application's allocator: the process runs with one malloc arena, as
 * MALLOC_ARENA_MAX=1 would, so the service thread shares it), and inside
 * notifier insert / remove and the device's own allocation (uhmm's
 * allocator lock, the driver's lock).
 */
#include <malloc.h>
#include <sched.h>
#include <signal.h>

#include "watchdog.h"

#define SIGNALS_PER_ROUND 400	/* UHMM_TEST_SIGNALS overrides */
#define ROUNDS 2
#define SEED 0xa11ce5u

struct scenario {
	const char *name;
	void (*setup)(void);
	void (*op)(void);
	void (*teardown)(void);
};

static struct uhmm_mm *mm;
static struct tdev *dev;
static pthread_mutex_t drv_lock = PTHREAD_MUTEX_INITIALIZER;

/* What the handler reads, and what it must find there. */
static volatile uint32_t *handler_word;
static uint32_t handler_expect;
static atomic_long handled;
static atomic_int handler_bad;
static atomic_bool sender_done;
static pthread_t target;
static long nsignals = SIGNALS_PER_ROUND;

static char *pbuf;	/* the handler's page: on the device most of the time */
static char *region;	/* the operation's memory */
#define REGION_PAGES 8
static struct uhmm_interval_notifier mni;
static bool mni_inserted;

static int locked_to_ram(struct uhmm_vm_fault *vmf)
{
	int ret;

	pthread_mutex_lock(&drv_lock);
	ret = tdev_migrate_to_ram(vmf);
	pthread_mutex_unlock(&drv_lock);
	return ret;
}

static const struct uhmm_devmem_ops locked_ops = {
	.page_free = tdev_page_free,
	.migrate_to_ram = locked_to_ram,
};

static bool locked_invalidate(struct uhmm_interval_notifier *n,
			      const struct uhmm_notifier_range *r, unsigned long seq)
{
	volatile unsigned long spin = 0;

	(void)r;
	pthread_mutex_lock(&drv_lock);
	uhmm_interval_set_seq(n, seq);
	/* A device page-table update takes a while. */
	for (int i = 0; i < 2000; i++)
		spin += (unsigned long)i;
	pthread_mutex_unlock(&drv_lock);
	return true;
}

static const struct uhmm_interval_notifier_ops locked_nops = {
	.invalidate = locked_invalidate,
};

static void handler(int sig)
{
	int saved = errno;

	(void)sig;
	if (*handler_word != handler_expect)
		atomic_store(&handler_bad, 1);
	atomic_fetch_add(&handled, 1);
	errno = saved;
}

static void *sender(void *arg)
{
	(void)arg;
	for (long i = 0; i < nsignals; i++) {
		pthread_kill(target, SIGUSR1);
		while (atomic_load(&handled) <= i)
			sched_yield();
	}
	atomic_store(&sender_done, true);
	return NULL;
}

/* The handler's page: pattern, on the device. */
static void pbuf_to_device(void)
{
	tdev_to_dev(dev, (uintptr_t)pbuf, (uintptr_t)pbuf + page_size, NULL);
}

static void pbuf_setup(void)
{
	pbuf = map_anon(page_size, PROT_READ | PROT_WRITE);
	fill_pattern(pbuf, 1, SEED);
	handler_word = (volatile uint32_t *)(pbuf + 40);
	handler_expect = SEED * 2654435761u + 10;
	pbuf_to_device();
}

/* ---- a handler touching the range its own thread is migrating ---------- */

static void migrate_setup(void)
{
	region = map_anon(REGION_PAGES * page_size, PROT_READ | PROT_WRITE);
	fill_pattern(region, REGION_PAGES, SEED);
	/* The handler reads the range being migrated. */
	handler_word = (volatile uint32_t *)(region + page_size + 40);
	handler_expect = SEED * 2654435761u + (uint32_t)(page_size / 4) + 10;
}

static void migrate_op(void)
{
	uintptr_t s = (uintptr_t)region, e = s + REGION_PAGES * page_size;

	tdev_to_dev(dev, s, e, NULL);
	tdev_to_sys(dev, s, e, NULL);
}

static void region_teardown(void)
{
	CHECK_EQ(check_pattern(region, REGION_PAGES, SEED), -1);
	munmap(region, REGION_PAGES * page_size);
}

/* ---- wrappers whose invalidation callbacks hold the driver lock --------- */

static void wrap_setup(void)
{
	pbuf_setup();
	region = map_far(REGION_PAGES * page_size, PROT_READ | PROT_WRITE);
	memset(region, 1, REGION_PAGES * page_size);
	memset(&mni, 0, sizeof(mni));
	CHECK_EQ(uhmm_interval_notifier_insert(&mni, mm, (uintptr_t)region,
					       REGION_PAGES * page_size, &locked_nops), 0);
	mni_inserted = true;
}

static void wrap_op(void)
{
	char *last = region + (REGION_PAGES - 1) * page_size;

	pbuf_to_device();
	CHECK_EQ(mprotect(region, REGION_PAGES * page_size, PROT_READ), 0);
	CHECK_EQ(mprotect(region, REGION_PAGES * page_size, PROT_READ | PROT_WRITE), 0);
	CHECK_EQ(munmap(last, page_size), 0);
	CHECK(mmap(last, page_size, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0) == last,
	      "mmap back: %s", strerror(errno));
	CHECK(mmap(region, page_size, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == region,
	      "mmap fixed: %s", strerror(errno));
}

static void notifier_teardown(void)
{
	if (mni_inserted)
		uhmm_interval_notifier_remove(&mni);
	mni_inserted = false;
	munmap(region, REGION_PAGES * page_size);
	CHECK_EQ(check_pattern(pbuf, 1, SEED), -1);
	munmap(pbuf, page_size);
}

/* ---- MADV_DONTNEED over device pages (holds the migrate lock) ----------- */

static void discard_setup(void)
{
	pbuf_setup();
	region = map_anon(REGION_PAGES * page_size, PROT_READ | PROT_WRITE);
}

static void discard_op(void)
{
	uintptr_t s = (uintptr_t)region;

	pbuf_to_device();
	memset(region, 2, 2 * page_size);
	tdev_to_dev(dev, s, s + 2 * page_size, NULL);	/* device pages in range */
	CHECK_EQ(madvise(region, REGION_PAGES * page_size, MADV_DONTNEED), 0);
}

static void discard_teardown(void)
{
	for (size_t i = 0; i < REGION_PAGES * page_size; i++)
		CHECK(region[i] == 0, "discarded byte %zu is %d", i, region[i]);
	munmap(region, REGION_PAGES * page_size);
	CHECK_EQ(check_pattern(pbuf, 1, SEED), -1);
	munmap(pbuf, page_size);
}

/* ---- range fault bringing another owner's device page home -------------- */

static bool nop_invalidate(struct uhmm_interval_notifier *n,
			   const struct uhmm_notifier_range *r, unsigned long seq)
{
	(void)r;
	uhmm_interval_set_seq(n, seq);
	return true;
}

static const struct uhmm_interval_notifier_ops nop_nops = { .invalidate = nop_invalidate };

static void range_setup(void)
{
	region = map_anon(REGION_PAGES * page_size, PROT_READ | PROT_WRITE);
	fill_pattern(region, REGION_PAGES, SEED);
	memset(&mni, 0, sizeof(mni));
	CHECK_EQ(uhmm_interval_notifier_insert(&mni, mm, (uintptr_t)region,
					       REGION_PAGES * page_size, &nop_nops), 0);
	mni_inserted = true;
	/* The handler reads the page the range fault brings home. */
	handler_word = (volatile uint32_t *)(region + 40);
	handler_expect = SEED * 2654435761u + 10;
}

static void range_op(void)
{
	uintptr_t s = (uintptr_t)region;
	uint64_t pfns[REGION_PAGES] = { 0 };
	struct uhmm_range r = {
		.notifier = &mni, .start = s, .end = s + REGION_PAGES * page_size,
		.hmm_pfns = pfns, .default_flags = UHMM_PFN_REQ_FAULT,
	};
	int ret;

	tdev_to_dev(dev, s, s + REGION_PAGES * page_size, NULL);
	r.notifier_seq = uhmm_interval_read_begin(&mni);
	ret = uhmm_range_fault(&r);
	CHECK(ret == 0 || ret == -EBUSY, "range fault: %d", ret);
}

static void range_teardown(void)
{
	uhmm_interval_notifier_remove(&mni);
	mni_inserted = false;
	region_teardown();
}

/* ---- device-exclusive access (migrates under the hood) ------------------ */

static int excl_owner;

static void excl_op(void)
{
	void *pages[REGION_PAGES];
	long n = uhmm_make_exclusive(mm, (uintptr_t)region, REGION_PAGES, &excl_owner, pages);

	CHECK(n >= 0, "make exclusive: %ld", n);
}

/* ---- uhmm_page_state / uhmm_find_mapping (vma_lock, pm_lock) ------------ */

static void state_setup(void)
{
	pbuf_setup();
	region = map_anon(REGION_PAGES * page_size, PROT_READ | PROT_WRITE);
	fill_pattern(region, REGION_PAGES, SEED);
}

static void state_op(void)
{
	uint32_t st[REGION_PAGES];
	struct uhmm_mapping m;

	pbuf_to_device();
	CHECK_EQ(uhmm_page_state(mm, (uintptr_t)region, REGION_PAGES, st), 0);
	CHECK_EQ(uhmm_find_mapping(mm, (uintptr_t)region, &m), 0);
}

static void state_teardown(void)
{
	region_teardown();
	CHECK_EQ(check_pattern(pbuf, 1, SEED), -1);
	munmap(pbuf, page_size);
}

/* ---- the thread interrupted inside malloc (the allocator's lock) -------- */

static void malloc_op(void)
{
	void *blk[72];

	/*
	 * Many small blocks, of the size of a small migration's arrays (a
	 * sanitizer's allocator takes a lock per size class whenever a
	 * thread's cache of that class runs dry), and blocks above glibc's
	 * per-thread cache, each of which takes the arena's lock.  The page
	 * goes back to the device each time, so most handlers fault.
	 */
	for (int rep = 0; rep < 8; rep++) {
		pbuf_to_device();
		for (size_t i = 0; i < 72; i++) {
			blk[i] = malloc(i < 64 ? 8 : 2048 + i * 512);
			CHECK(blk[i] != NULL, "malloc");
			memset(blk[i], (int)i, 8);
		}
		for (size_t i = 0; i < 72; i++)
			free(blk[i]);
	}
}

/* ---- notifier insert / remove (uhmm's allocator) ------------------------ */

static void notifier_op(void)
{
	pbuf_to_device();
	for (int rep = 0; rep < 8; rep++) {
		memset(&mni, 0, sizeof(mni));
		CHECK_EQ(uhmm_interval_notifier_insert(&mni, mm, (uintptr_t)region,
						       REGION_PAGES * page_size, &nop_nops), 0);
		uhmm_interval_notifier_remove(&mni);
	}
	/* And the driver's lock taken outside a migration. */
	CHECK(tdev_used(dev) <= dev->nr_pages, "device pages in use");
}

/* ---- uhmm_devmem_remove evicting the page the handler reads ------------- */

static void remove_op(void)
{
	uintptr_t s = (uintptr_t)region, e = s + REGION_PAGES * page_size;
	struct tdev *d2 = tdev_create(mm, REGION_PAGES, 1);

	d2->pgmap.ops = &locked_ops;	/* eviction's migrate_to_ram takes drv_lock */
	tdev_to_dev(d2, s, e, NULL);
	tdev_destroy(d2);		/* uhmm_devmem_remove brings the pages home */
}

static const struct scenario scenarios[] = {
	{ "handler reads the range its thread migrates", migrate_setup, migrate_op,
	  region_teardown },
	{ "handler faults on device memory during mprotect/munmap/mmap callbacks",
	  wrap_setup, wrap_op, notifier_teardown },
	{ "handler faults on device memory during madvise(MADV_DONTNEED)",
	  discard_setup, discard_op, discard_teardown },
	{ "handler reads the page a range fault brings home", range_setup, range_op,
	  range_teardown },
	{ "handler reads the range being made exclusive", migrate_setup, excl_op,
	  region_teardown },
	{ "handler faults on device memory during uhmm_page_state / uhmm_find_mapping",
	  state_setup, state_op, state_teardown },
	{ "handler reads the pages uhmm_devmem_remove evicts", migrate_setup, remove_op,
	  region_teardown },
	{ "handler faults on device memory while its thread is inside malloc", state_setup,
	  malloc_op, state_teardown },
	{ "handler faults on device memory during notifier insert / remove and the "
	  "device's allocation", state_setup, notifier_op, state_teardown },
};

static int round_fn(void *arg)
{
	const struct scenario *sc = arg;
	struct sigaction sa = { .sa_handler = handler };
	pthread_t snd;

	/*
	 * One malloc arena for every thread (MALLOC_ARENA_MAX=1), set before
	 * any thread is made: a service thread that called malloc would share
	 * the lock of the arena the interrupted thread holds.  (The sanitizer
	 * runtimes have one allocator for all threads anyway.)
	 */
	mallopt(M_ARENA_MAX, 1);
	mm = test_mm();
	dev = tdev_create(mm, 256, 1);
	dev->pgmap.ops = &locked_ops;	/* before any page is on the device */
	sigemptyset(&sa.sa_mask);
	CHECK_EQ(sigaction(SIGUSR1, &sa, NULL), 0);
	target = pthread_self();
	sc->setup();
	CHECK_EQ(pthread_create(&snd, NULL, sender, NULL), 0);
	while (!atomic_load(&sender_done))
		sc->op();
	CHECK_EQ(pthread_join(snd, NULL), 0);
	CHECK(!atomic_load(&handler_bad), "a handler read wrong data");
	sc->teardown();
	/* Nothing may stay blocked: the caller's mask is the one it had. */
	{
		sigset_t now;

		pthread_sigmask(SIG_BLOCK, NULL, &now);
		CHECK(!sigismember(&now, SIGUSR1) && !sigismember(&now, SIGALRM),
		      "signals left blocked");
	}
	tdev_destroy(dev);
	uhmm_mm_put(mm);
	return 0;
}

static int bad;	/* rounds failed or hung: the program fails at the end */

/*
 * Signal frames on a sigaltstack that another thread keeps migrating to the
 * device (tests/hunt/FINDINGS.md item 17).  A thread spins with a 16-page
 * alternate stack; the main thread sends it SIGUSR1 every 100 us (a pace
 * for the signals, not a synchronisation: nothing waits on it) and migrates
 * the alternate stack to the device before every 10th.  The kernel then
 * writes a frame to a page that was brought home by an earlier frame and
 * is on the device again: the worker took such faults for stale messages
 * of that earlier serve whenever the thread was not seen asleep yet, and
 * only woke it; the thread faulted again at once, was seen awake again,
 * and the two looped for ever (6 of 6 rounds in the hunt).  The thread
 * must finish and its handler must have run.
 */
#define ALT_SIGNALS 2000
#define ALT_BYTES (64 * 1024)
static char *alt;
static atomic_bool alt_stop;

static void alt_handler(int sig)
{
	volatile char locals[256];

	(void)sig;
	memset((char *)locals, 1, sizeof(locals));
	atomic_fetch_add(&handled, 1);
}

static void *alt_thread(void *arg)
{
	stack_t ss = { .ss_sp = alt, .ss_size = ALT_BYTES }, old;

	(void)arg;
	CHECK_EQ(sigaltstack(&ss, &old), 0);
	while (!atomic_load(&alt_stop))
		for (volatile int i = 0; i < 1000; i++)
			;
	/*
	 * The one it had back: AddressSanitizer's runtime unmaps the
	 * thread's alternate stack when the thread exits, taking it for its
	 * own (a raw munmap of our device-resident buffer, behind the test's
	 * back).
	 */
	CHECK_EQ(sigaltstack(&old, NULL), 0);
	return NULL;
}

static int alt_round(void *arg)
{
	struct sigaction sa = { .sa_handler = alt_handler, .sa_flags = SA_ONSTACK | SA_RESTART };
	struct timespec pace = { 0, 100 * 1000 };
	uintptr_t s;
	pthread_t th;

	(void)arg;
	mm = test_mm();
	dev = tdev_create(mm, 256, 0);
	alt = map_anon(ALT_BYTES, PROT_READ | PROT_WRITE);
	memset(alt, 0x5a, ALT_BYTES);
	s = (uintptr_t)alt;
	sigemptyset(&sa.sa_mask);
	CHECK_EQ(sigaction(SIGUSR1, &sa, NULL), 0);
	CHECK_EQ(pthread_create(&th, NULL, alt_thread, NULL), 0);
	for (int k = 0; k < ALT_SIGNALS; k++) {
		if (k % 10 == 0)
			tdev_to_dev(dev, s, s + ALT_BYTES, NULL);
		pthread_kill(th, SIGUSR1);
		nanosleep(&pace, NULL);
	}
	atomic_store(&alt_stop, true);
	CHECK_EQ(pthread_join(th, NULL), 0);
	CHECK(atomic_load(&handled) > 0, "the handler never ran");
	/* The alternate stack is readable, every page of it (home by faults). */
	for (size_t i = 0; i < ALT_BYTES; i += page_size)
		(void)*(volatile char *)(alt + i);
	printf("%d signals sent, the handler ran %ld times\n", ALT_SIGNALS,
	       atomic_load(&handled));
	tdev_destroy(dev);
	uhmm_mm_put(mm);
	return 0;
}

static void altstack(void)
{
	struct uhmm_sysinfo si;

	/*
	 * The kernel writes a signal frame itself: with a userfaultfd that
	 * serves user-mode faults only (unprivileged, vm.unprivileged_
	 * userfaultfd=0), a frame on a device-resident page cannot be
	 * faulted in and the thread gets SIGSEGV, as for any kernel access
	 * to device memory in that mode (docs/LIMITATIONS.md).
	 */
	uhmm_sysinfo(&si);
	if (si.uffd_mode != UHMM_UFFD_FULL)
		SKIP("user-mode-only userfaultfd: the kernel's own writes of a signal frame "
		     "to device memory cannot be served");
	bad += run_rounds(alt_round, NULL, ROUNDS, "signal frames on a migrating sigaltstack");
}

static void run_scenario(size_t i)
{
	bad += run_rounds(round_fn, (void *)&scenarios[i], ROUNDS, scenarios[i].name);
}

#define SCENARIO_CASE(name, i)                                                \
	static void name(void)                                                \
	{                                                                     \
		run_scenario(i);                                              \
	}
SCENARIO_CASE(migrate, 0)
SCENARIO_CASE(wrapped_calls, 1)
SCENARIO_CASE(madv_dontneed, 2)
SCENARIO_CASE(range_fault, 3)
SCENARIO_CASE(make_exclusive, 4)
SCENARIO_CASE(page_state, 5)
SCENARIO_CASE(devmem_remove, 6)
SCENARIO_CASE(in_malloc, 7)
SCENARIO_CASE(notifier_insert, 8)

static void start(void)
{
	if (getenv("UHMM_TEST_SIGNALS") && atol(getenv("UHMM_TEST_SIGNALS")) > 0)
		nsignals = atol(getenv("UHMM_TEST_SIGNALS"));
}

static int finish(void)
{
	return bad ? 1 : 0;
}

/* In the order of scenarios[]: `test_signals N` runs scenario N (as before). */
static const struct test_case cases[] = {
	TEST_CASE(migrate),
	TEST_CASE(wrapped_calls),
	TEST_CASE(madv_dontneed),
	TEST_CASE(range_fault),
	TEST_CASE(make_exclusive),
	TEST_CASE(page_state),
	TEST_CASE(devmem_remove),
	TEST_CASE(in_malloc),
	TEST_CASE(notifier_insert),
	TEST_CASE(altstack),
};

int main(int argc, char **argv)
{
	_Static_assert(sizeof(cases) / sizeof(cases[0]) ==
		       sizeof(scenarios) / sizeof(scenarios[0]) + 1,
		       "one case per scenario, and altstack");
	if (argc == 2 && argv[1][0] >= '0' && argv[1][0] <= '9') {
		size_t i = strtoul(argv[1], NULL, 10);

		if (i < sizeof(cases) / sizeof(cases[0]))
			argv[1] = (char *)test_case_name(&cases[i]);
	}
	return test_main(argc, argv, "test_signals", TEST_CASES(cases), start, finish);
}
