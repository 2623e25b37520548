// SPDX-License-Identifier: MIT
/*
 * Device-exclusive access (uhmm_make_exclusive): taking pages, device
 * atomics through the holding address, the EXCLUSIVE invalidations (with
 * the owner when taken, without when the CPU revokes), revocation by CPU
 * read and write with the device's updates intact, fork and mprotect with
 * exclusive pages, bad input; pages resident on a device (this owner's,
 * another device's, held exclusively by another owner) are brought home
 * and taken, as the kernel's make_device_exclusive faults them in with
 * FOLL_WRITE; pages in a migration are waited for, not refused (rounds
 * against a thread migrating the range to a device and back).  The
 * device-page scenario also runs with a user-mode-only userfaultfd (a child
 * run with UHMM_DISABLE=uffd_full), the mode an unprivileged process gets.
 */
#include <linux/io_uring.h>
#include <sys/syscall.h>
#include <sys/uio.h>

#include "common.h"
#include "watchdog.h"

struct rec {
	struct uhmm_interval_notifier mni;
	atomic_int excl_owner, excl_null, other;
};

static int owner_token;

static bool rec_inv(struct uhmm_interval_notifier *mni, const struct uhmm_notifier_range *r,
		    unsigned long seq)
{
	struct rec *rc = (struct rec *)mni;

	uhmm_interval_set_seq(mni, seq);
	if (r->event == UHMM_NOTIFY_EXCLUSIVE)
		atomic_fetch_add(r->owner == &owner_token ? &rc->excl_owner : &rc->excl_null, 1);
	else
		atomic_fetch_add(&rc->other, 1);
	return true;
}

static const struct uhmm_interval_notifier_ops rec_ops = { .invalidate = rec_inv };

static int child_check(void *arg)
{
	uint64_t *p = arg;

	for (int i = 0; i < 4; i++)
		if (p[i * 512] != 1000u + (unsigned)i + 1)
			return 10 + i;
	p[0] = 7;	/* the child's own copy */
	return 0;
}

static int other_token;

/* Every held page gives the data of pattern @seed, page by page. */
static void check_held(void **held, size_t n, uint32_t seed, const char *what)
{
	uint32_t *want = malloc(n * page_size);

	CHECK(want, "malloc");
	fill_pattern(want, n, seed);
	for (size_t i = 0; i < n; i++)
		CHECK(held[i] && !memcmp(held[i], (char *)want + i * page_size, page_size),
		      "%s: page %zu held %p with the wrong data", what, i, held[i]);
	free(want);
}

/*
 * Pages on a device are faulted home and taken: the kernel's
 * make_device_exclusive gets each page with FOLL_WRITE, which runs the
 * device's migrate_to_ram for a device-private page.
 */
static int device_pages_child(void *arg)
{
	const size_t n = 8;
	struct uhmm_mm *mm = test_mm();
	struct tdev *a = tdev_create(mm, 64, 1), *b = tdev_create(mm, 64, 4);
	char *p = map_anon(n * page_size, PROT_READ | PROT_WRITE);
	void *held[8];
	struct uhmm_sysinfo si;

	(void)arg;
	uhmm_sysinfo(&si);
	fill_pattern(p, n, 77);

	/* On another owner's device. */
	CHECK_EQ(tdev_to_dev(a, (uintptr_t)p, (uintptr_t)p + n * page_size, NULL), (long)n);
	CHECK(page_state_of(mm, p) & UHMM_PS_DEVICE_PRIVATE, "page 0 on device a");
	CHECK_EQ(uhmm_make_exclusive(mm, (uintptr_t)p, n, &owner_token, held), (long)n);
	check_held(held, n, 77, "from another owner's device");
	CHECK_EQ(tdev_used(a), 0);

	/* Held exclusively by another owner. */
	CHECK_EQ(uhmm_make_exclusive(mm, (uintptr_t)p, n, &other_token, held), (long)n);
	check_held(held, n, 77, "from another owner's exclusive access");
	CHECK(uhmm_exclusive_held(mm, (uintptr_t)p, &owner_token) == NULL, "still held by the first");
	CHECK_EQ(check_pattern(p, n, 77), -1);	/* revokes */

	/* Half on one device, half on another, one page untouched by either. */
	CHECK_EQ(tdev_to_dev(a, (uintptr_t)p, (uintptr_t)p + n / 2 * page_size, NULL),
		 (long)n / 2);
	CHECK_EQ(tdev_to_dev(b, (uintptr_t)p + n / 2 * page_size,
			     (uintptr_t)p + (n - 1) * page_size, NULL), (long)n / 2 - 1);
	CHECK_EQ(uhmm_make_exclusive(mm, (uintptr_t)p, n, &owner_token, held), (long)n);
	check_held(held, n, 77, "from two devices");
	CHECK_EQ(tdev_used(a) + tdev_used(b), 0);

	/* On the device of the owner that asks. */
	CHECK_EQ(check_pattern(p, n, 77), -1);
	CHECK_EQ(tdev_to_dev(a, (uintptr_t)p, (uintptr_t)p + n * page_size, NULL), (long)n);
	CHECK_EQ(uhmm_make_exclusive(mm, (uintptr_t)p, n, &a->owner_token, held), (long)n);
	check_held(held, n, 77, "from the asking owner's own device");
	CHECK_EQ(check_pattern(p, n, 77), -1);

	printf("device-resident pages (another device, another owner's exclusive, two "
	       "devices, the owner's own device) taken with their data (userfaultfd %s): ok\n",
	       si.uffd_mode == UHMM_UFFD_FULL ? "full" : "user-mode-only");
	CHECK_EQ(munmap(p, n * page_size), 0);
	tdev_destroy(a);
	tdev_destroy(b);
	uhmm_mm_put(mm);
	return 0;
}

struct mig_loop {
	struct tdev *d;
	char *p;
	size_t n;
	atomic_bool stop;
	atomic_long moved;
};

static void *mig_loop_fn(void *arg)
{
	struct mig_loop *l = arg;
	uintptr_t s = (uintptr_t)l->p, e = s + l->n * page_size;

	while (!atomic_load(&l->stop)) {
		long r = tdev_to_dev(l->d, s, e, NULL);

		if (r > 0)
			atomic_fetch_add(&l->moved, r);
		tdev_to_sys(l->d, s, e, NULL);
	}
	return NULL;
}

#define RACE_ROUNDS	10
#define RACE_TAKES	16

/*
 * One round: a thread migrates the range to a device and back without
 * pause while this thread takes it exclusively RACE_TAKES times (and
 * revokes it by reading it).  A page in a migration or on the device is
 * waited for or brought home: every take must get every page.
 */
static int race_child(void *arg)
{
	const size_t n = 8;
	struct uhmm_mm *mm = test_mm();
	struct mig_loop l = { .n = n };
	char *p = map_anon(n * page_size, PROT_READ | PROT_WRITE);
	long short_takes = 0;
	char *want = malloc(n * page_size);
	void *held[8];
	pthread_t t;

	(void)arg;
	CHECK(want, "malloc");
	fill_pattern(want, n, 91);
	fill_pattern(p, n, 91);
	l.d = tdev_create(mm, 64, 4);
	l.p = p;
	CHECK_EQ(pthread_create(&t, NULL, mig_loop_fn, &l), 0);
	for (int k = 0; k < RACE_TAKES; k++) {
		long got = uhmm_make_exclusive(mm, (uintptr_t)p, n, &owner_token, held);

		CHECK(got >= 0, "make exclusive: %ld", got);
		if (got != (long)n) {
			if (!short_takes)
				fprintf(stderr, "take %d: %ld of %zu pages [%s]\n", k, got, n,
					uhmm_last_error());
			short_takes++;
		}
		for (size_t i = 0; i < n; i++)
			CHECK(!held[i] || !memcmp(held[i], want + i * page_size, page_size),
			      "take %d page %zu: wrong data", k, i);
		CHECK_EQ(check_pattern(p, n, 91), -1);	/* revokes, and checks */
	}
	atomic_store(&l.stop, true);
	pthread_join(t, NULL);
	CHECK_EQ(check_pattern(p, n, 91), -1);
	CHECK_EQ(munmap(p, n * page_size), 0);
	tdev_destroy(l.d);
	uhmm_mm_put(mm);
	free(want);
	return short_takes ? 1 : 0;
}

static void test_race_rounds(void)
{
	int failed = 0;

	for (int r = 0; r < RACE_ROUNDS; r++)
		failed += run_child(race_child, NULL) != 0;
	printf("exclusive access against a migrating thread: %d of %d rounds had a take "
	       "that missed pages\n", failed, RACE_ROUNDS);
	CHECK_EQ(failed, 0);
}

/*
 * The device-page scenario again with a user-mode-only userfaultfd: this
 * program run with "uffd_full" added to UHMM_DISABLE.
 */
static void test_user_mode_only(void)
{
	const char *dis = getenv("UHMM_DISABLE");
	char env[300];
	pid_t pid;
	int st;

	snprintf(env, sizeof(env), "%s%suffd_full", dis ? dis : "", dis && *dis ? "," : "");
	pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		setenv("UHMM_DISABLE", env, 1);
		setenv("TEST_EXCLUSIVE_DEVICE_ONLY", "1", 1);
		execl("/proc/self/exe", "test_exclusive", (char *)NULL);
		_exit(127);
	}
	CHECK_EQ(waitpid(pid, &st, 0), pid);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "user-mode-only child: status %#x", st);
}

/* Forked before this process has a context (and threads). */
static void test_device_pages(void)
{
	CHECK_EQ(run_child(device_pages_child, NULL), 0);
}

static void test_user_mode_only_child(void)
{
	struct uhmm_sysinfo si;

	uhmm_sysinfo(&si);
	if (si.uffd_mode != UHMM_UFFD_FULL)
		SKIP_CASE("this process has a user-mode-only userfaultfd already");
	test_user_mode_only();
}

/*
 * Take, device atomics, CPU read and write revoke, fork, mprotect, bad
 * input, munmap: one sequence on the same pages.
 */
static void test_lifecycle(void)
{
	struct uhmm_mm *mm;
	const size_t n = 4;
	uint64_t *p;
	void *held[4];
	struct rec r = { 0 };
	long got;

	mm = test_mm();
	p = map_anon(n * page_size, PROT_READ | PROT_WRITE);
	for (size_t i = 0; i < n; i++)
		p[i * 512] = 1000 + i;
	CHECK_EQ(uhmm_interval_notifier_insert(&r.mni, mm, (uintptr_t)p, n * page_size,
					       &rec_ops), 0);

	got = uhmm_make_exclusive(mm, (uintptr_t)p, n, &owner_token, held);
	CHECK_EQ(got, (long)n);
	CHECK(atomic_load(&r.excl_owner) >= 1, "EXCLUSIVE invalidation with the owner");
	for (size_t i = 0; i < n; i++) {
		uint32_t st = 0;

		CHECK(held[i] != NULL, "page %zu held", i);
		CHECK_EQ(((uint64_t *)held[i])[0], 1000 + i);
		CHECK_EQ(uhmm_page_state(mm, (uintptr_t)p + i * page_size, 1, &st), 0);
		CHECK(st & UHMM_PS_DEVICE_EXCLUSIVE, "state %#x", st);
		CHECK(uhmm_exclusive_held(mm, (uintptr_t)p + i * page_size, &owner_token) == held[i],
		      "held");
		/* Device atomics on the holding page. */
		__atomic_fetch_add((uint64_t *)held[i], 1, __ATOMIC_SEQ_CST);
	}
	/* Taking again gives the same pages. */
	{
		void *again[4];

		CHECK_EQ(uhmm_make_exclusive(mm, (uintptr_t)p, n, &owner_token, again), (long)n);
		for (size_t i = 0; i < n; i++)
			CHECK(again[i] == held[i], "same holding page");
	}
	printf("take exclusive, device atomics: ok\n");

	/* A CPU read of page 0 revokes exactly page 0, with the device's update. */
	CHECK_EQ(p[0], 1001);
	CHECK(atomic_load(&r.excl_null) >= 1, "EXCLUSIVE invalidation without owner on revoke");
	CHECK(uhmm_exclusive_held(mm, (uintptr_t)p, &owner_token) == NULL, "revoked");
	CHECK(uhmm_exclusive_held(mm, (uintptr_t)p + page_size, &owner_token) != NULL,
	      "page 1 still held");
	/* A CPU write revokes page 1. */
	p[512] += 0;
	CHECK_EQ(p[512], 1002);
	CHECK(uhmm_exclusive_held(mm, (uintptr_t)p + page_size, &owner_token) == NULL, "revoked");
	printf("CPU read and write revoke, data intact: ok\n");

	/* fork with pages 2-3 still exclusive: both processes see the data. */
	{
		int st = run_child(child_check, p);

		CHECK_EQ(st, 0);
		CHECK_EQ(p[0], 1001);
		CHECK_EQ(p[2 * 512], 1003);
		CHECK_EQ(p[3 * 512], 1004);
	}
	printf("fork with exclusive pages: ok\n");

	/* Exclusive, then mprotect read-only: data readable, writes refused. */
	CHECK_EQ(uhmm_make_exclusive(mm, (uintptr_t)p, n, &owner_token, held), (long)n);
	CHECK_EQ(mprotect(p, n * page_size, PROT_READ), 0);
	CHECK_EQ(p[3 * 512], 1004);
	CHECK_EQ(uhmm_make_exclusive(mm, (uintptr_t)p, n, &owner_token, held), -EPERM);
	CHECK_EQ(mprotect(p, n * page_size, PROT_READ | PROT_WRITE), 0);
	for (size_t i = 0; i < n; i++)
		CHECK_EQ(p[i * 512], 1000 + i + 1);
	printf("exclusive then mprotect: ok\n");

	/* Bad input. */
	CHECK_EQ(uhmm_make_exclusive(mm, (uintptr_t)p + 1, 1, &owner_token, held), -EINVAL);
	CHECK_EQ(uhmm_make_exclusive(mm, (uintptr_t)p, 0, &owner_token, held), -EINVAL);
	CHECK_EQ(uhmm_make_exclusive(mm, (uintptr_t)p, 1, NULL, held), -EINVAL);
	CHECK_EQ(uhmm_make_exclusive(NULL, (uintptr_t)p, 1, &owner_token, held), -EINVAL);
	printf("bad input: ok\n");

	/* munmap of exclusive pages frees them; teardown with none left. */
	CHECK_EQ(uhmm_make_exclusive(mm, (uintptr_t)p, n, &owner_token, held), (long)n);
	uhmm_interval_notifier_remove(&r.mni);
	CHECK_EQ(munmap(p, n * page_size), 0);
	uhmm_mm_put(mm);
}

/* ---- pages the kernel refuses to move ------------------------------------- */

/*
 * A long-term pin from user space: an io_uring fixed buffer (pin_user_pages
 * with FOLL_LONGTERM, held until unregistered).  UFFDIO_MOVE refuses a
 * maybe-pinned folio with -EBUSY (mm/userfaultfd.c, move_present_pte),
 * and a pinned large folio cannot be split.  -errno if io_uring cannot be
 * had here (disabled, seccomp, an old kernel).
 */
static int pin_range(void *p, size_t len)
{
	struct io_uring_params par;
	struct iovec iov = { .iov_base = p, .iov_len = len };
	int fd;

	memset(&par, 0, sizeof(par));
	fd = (int)syscall(__NR_io_uring_setup, 1, &par);
	if (fd < 0)
		return -errno;
	if (syscall(__NR_io_uring_register, fd, IORING_REGISTER_BUFFERS, &iov, 1) < 0) {
		int e = errno;

		close(fd);
		return -e;
	}
	return fd;
}

static void unpin_range(int fd)
{
	CHECK(syscall(__NR_io_uring_register, fd, IORING_UNREGISTER_BUFFERS, NULL, 0) == 0,
	      "IORING_UNREGISTER_BUFFERS: %s", strerror(errno));
	close(fd);
}

struct refused {
	const char *what;
	bool thp;		/* the pages lie in a PMD-mapped transparent huge page */
	size_t npages;		/* pages asked for */
	size_t pin_first, pin_n; /* pages pinned, from the start of the range */
};

/*
 * Take @r's pages while some are pinned: each page is either held (with its
 * data) or NULL, the count matches, every byte is intact afterwards, and
 * the call ends after a bounded number of migrations (the EXCLUSIVE
 * invalidations with the owner): a page the kernel keeps refusing is given
 * up, not retaken for as long as it is refused.
 */
static int refused_child(void *arg)
{
	const struct refused *r = arg;
	const size_t huge = 2u << 20;
	struct uhmm_mm *mm = test_mm();
	struct rec rc = { 0 };
	size_t n = r->npages, maplen = r->thp ? 2 * huge : n * page_size, held_n = 0;
	char *map = map_anon(maplen, PROT_READ | PROT_WRITE), *p = map;
	void **held = calloc(n, sizeof(*held));
	uint32_t seed = 4242;
	long got, migrations;
	int pin;

	CHECK(held, "calloc");
	if (r->thp) {
		/* One aligned 2 MiB block; the range is 16 pages inside it. */
		char *blk = (char *)(((uintptr_t)map + huge - 1) & ~(uintptr_t)(huge - 1));

		CHECK_EQ(madvise(blk, huge, MADV_HUGEPAGE), 0);
		memset(blk, 1, huge);
		if (!(page_state_of(mm, blk) & UHMM_PS_HUGE)) {
			printf("not run: %s: no transparent huge page could be had\n", r->what);
			return 0;
		}
		p = blk + 64 * page_size;
	}
	fill_pattern(p, n, seed);
	pin = pin_range(p + r->pin_first * page_size, r->pin_n * page_size);
	CHECK(pin >= 0, "%s: io_uring fixed buffer: %s", r->what, strerror(-pin));
	CHECK_EQ(uhmm_interval_notifier_insert(&rc.mni, mm, (uintptr_t)p, n * page_size,
					       &rec_ops), 0);
	got = uhmm_make_exclusive(mm, (uintptr_t)p, n, &owner_token, held);
	migrations = atomic_load(&rc.excl_owner);
	CHECK(got >= 0 && got <= (long)n, "%s: make_exclusive %ld [%s]", r->what, got,
	      uhmm_last_error());
	for (size_t i = 0; i < n; i++) {
		const uint32_t *w = held[i];

		if (!w)
			continue;
		for (size_t k = 0; k < page_size / 4; k++)
			CHECK(w[k] == seed * 2654435761u + (uint32_t)(i * (page_size / 4) + k),
			      "%s: held page %zu has the wrong data", r->what, i);
		held_n++;
	}
	CHECK_EQ((long)held_n, got);
	/*
	 * Bounded: a few migrations per page at most.  Retaking a refused
	 * page until it moves (up to 1000 times each, before issue 12) is
	 * what this catches.
	 */
	CHECK(migrations <= 8 + 8 * (long)n, "%s: %ld migrations for %zu pages: a refused page "
	      "was retaken over and over", r->what, migrations, n);
	/* The CPU reads everything back (revoking what was taken). */
	CHECK_EQ(check_pattern(p, n, seed), -1);
	unpin_range(pin);
	CHECK_EQ(check_pattern(p, n, seed), -1);
	printf("%s: %ld of %zu pages taken (%zu pinned), %ld migrations, data intact: ok\n",
	       r->what, got, n, r->pin_n, migrations);
	uhmm_interval_notifier_remove(&rc.mni);
	CHECK_EQ(munmap(map, maplen), 0);
	free(held);
	uhmm_mm_put(mm);
	return 0;
}

static void test_refused_pages(void)
{
	static const struct refused sc[] = {
		{ "pinned small pages (io_uring fixed buffer)", false, 16, 4, 8 },
		{ "THP with pinned pages (io_uring fixed buffer)", true, 16, 4, 8 },
	};
	char *probe = map_anon(page_size, PROT_READ | PROT_WRITE);
	int pin;

	/* Can this process pin with io_uring at all (disabled, seccomp, old kernel)? */
	probe[0] = 1;
	pin = pin_range(probe, page_size);
	CHECK_EQ(munmap(probe, page_size), 0);
	if (pin < 0)
		SKIP_CASE("io_uring fixed buffers (the pin from user space) unavailable: %s",
			  strerror(-pin));
	unpin_range(pin);
	for (size_t i = 0; i < sizeof(sc) / sizeof(sc[0]); i++) {
		int st;

		if (sc[i].thp && !thp_enabled()) {
			printf("not run: %s: THP is \"%s\" here\n", sc[i].what, variant.thp);
			continue;
		}
		st = run_watched(refused_child, (void *)&sc[i], WATCHDOG_SECONDS, sc[i].what);
		CHECK(st == ROUND_OK, "%s: %s", sc[i].what, st == ROUND_HUNG ? "hung" : "failed");
	}
	/*
	 * Not covered: a KSM-merged page (also -EBUSY: not anon-exclusive)
	 * needs KSM on (/sys/kernel/mm/ksm/run), a machine setting.
	 */
}

static const struct test_case cases[] = {
	TEST_CASE(test_device_pages),
	TEST_CASE(test_race_rounds),
	TEST_CASE(test_user_mode_only_child),
	TEST_CASE(test_lifecycle),
	TEST_CASE(test_refused_pages),
};

int main(int argc, char **argv)
{
	if (getenv("TEST_EXCLUSIVE_DEVICE_ONLY")) {
		test_init("test_exclusive");
		return run_child(device_pages_child, NULL);
	}
	return test_main(argc, argv, "test_exclusive", TEST_CASES(cases), NULL, NULL);
}
