// SPDX-License-Identifier: MIT
/*
 * fork() against a device mirror filled with the sequence retry loop
 * (Documentation/mm/hmm.rst's pattern; include/uhmm/notifier.h).
 *
 * fork makes the parent's private writable pages copy-on-write, and the
 * kernel brackets that with an invalidation (dup_mmap:
 * MMU_NOTIFY_PROTECTION_PAGE) that is in progress until the page tables
 * are copied: a range fault that overlaps it fails its retry check, and
 * mmu_interval_read_begin() waits until it has ended.  So once fork()
 * has returned, no mirror holds a writable translation of a page the
 * child now shares.
 *
 * Round 2 hunt (tests/hunt/FINDINGS.md, "mirror"): uhmm ran the fork
 * invalidation to its end in the pthread_atfork prepare handler, before
 * the eviction of device pages and before the clone; a range fault by
 * another thread in between committed a writable translation that the
 * fork then made stale (the mirror writes to a page the child shares).
 *
 * Every round, in a fresh process: a mirror over NPAGES pages, two
 * threads filling it with write range faults; the main thread forks
 * (the child waits until the parent has looked), pauses the fillers and
 * compares each mirrored word with a fresh snapshot: WRITE in the mirror
 * needs WRITE in the snapshot.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE	/* PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP */
#endif
#include <pthread.h>
#include <stdatomic.h>
#include <sys/wait.h>

#include <uhmm/simdev.h>

#include "common.h"
#include "watchdog.h"

#define NAME "test_fork_mirror"
#define NPAGES 32
#define FORKS 20
#define OTHER 64	/* device-resident pages elsewhere, which fork brings home */
#define ROUNDS 6

struct mirror {
	struct uhmm_interval_notifier mni;
	pthread_mutex_t lock;
	uintptr_t start;
	uint64_t pt[NPAGES];
};

static struct mirror M = { .lock = PTHREAD_MUTEX_INITIALIZER };
/* Writer-preferring: the checking thread must not starve behind the fillers. */
static pthread_rwlock_t pause_lock = PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP;
static atomic_int stop;

static bool m_invalidate(struct uhmm_interval_notifier *mni, const struct uhmm_notifier_range *r,
			 unsigned long cur_seq)
{
	pthread_mutex_lock(&M.lock);
	uhmm_interval_set_seq(mni, cur_seq);
	for (size_t i = 0; i < NPAGES; i++) {
		uintptr_t a = M.start + i * page_size;

		if (a >= r->start && a < r->end)
			M.pt[i] = 0;
	}
	pthread_mutex_unlock(&M.lock);
	return true;
}

static const struct uhmm_interval_notifier_ops m_ops = { .invalidate = m_invalidate };

/* Fill the mirror for [idx, idx + n): the sequence retry loop. */
static int m_fault(size_t idx, size_t n, uint64_t flags)
{
	uint64_t pfns[NPAGES];
	struct uhmm_range rg = {
		.notifier = &M.mni,
		.start = M.start + idx * page_size,
		.end = M.start + (idx + n) * page_size,
		.hmm_pfns = pfns,
		.default_flags = flags,
	};
	int r;

	for (;;) {
		rg.notifier_seq = uhmm_interval_read_begin(&M.mni);
		r = uhmm_range_fault(&rg);
		if (r == -EBUSY)
			continue;
		if (r)
			return r;
		pthread_mutex_lock(&M.lock);
		if (!uhmm_interval_read_retry(&M.mni, rg.notifier_seq))
			break;
		pthread_mutex_unlock(&M.lock);
	}
	if (flags & UHMM_PFN_REQ_FAULT)
		memcpy(&M.pt[idx], pfns, n * sizeof(pfns[0]));
	else		/* a snapshot: compare under the lock */
		for (size_t i = 0; i < n; i++) {
			uint64_t m = M.pt[idx + i], f = pfns[i];

			if ((m & UHMM_PFN_VALID) && (m & UHMM_PFN_WRITE) && !(f & UHMM_PFN_WRITE)) {
				fprintf(stderr, "%s: page %zu: mirror %#llx writable, the CPU's %#llx "
					"is not (a stale translation after fork)\n", NAME, idx + i,
					(unsigned long long)m, (unsigned long long)f);
				r = 1;
			}
		}
	pthread_mutex_unlock(&M.lock);
	return r;
}

static void *filler(void *arg)
{
	unsigned int s = (unsigned int)(uintptr_t)arg;

	while (!atomic_load(&stop)) {
		s = s * 1103515245u + 12345u;
		pthread_rwlock_rdlock(&pause_lock);
		int r = m_fault((s >> 8) % NPAGES, 1, UHMM_PFN_REQ_FAULT | UHMM_PFN_REQ_WRITE);
		pthread_rwlock_unlock(&pause_lock);
		if (r) {
			fprintf(stderr, "%s: range fault: %d (%s)\n", NAME, r, uhmm_last_error());
			_exit(1);
		}
	}
	return NULL;
}

static int one_round(void *arg)
{
	struct uhmm_simdev_config cfg = { .capacity_pages = 2 * OTHER, .threads = 1 };
	struct uhmm_simdev *dev;
	struct uhmm_mm *mm;
	pthread_t th[2];
	char *buf, *other;
	int bad = 0;

	(void)arg;
	CHECK_EQ(uhmm_mm_get(&mm), 0);
	CHECK_EQ(uhmm_simdev_create(&cfg, &dev), 0);
	other = map_anon(OTHER * page_size, PROT_READ | PROT_WRITE);
	fill_pattern(other, OTHER, 0x07e5u);
	buf = map_anon(NPAGES * page_size, PROT_READ | PROT_WRITE);
	fill_pattern(buf, NPAGES, 0xf0c4u);
	M.start = (uintptr_t)buf;
	CHECK_EQ(uhmm_interval_notifier_insert(&M.mni, mm, M.start, NPAGES * page_size, &m_ops), 0);
	for (int i = 0; i < 2; i++)
		CHECK_EQ(pthread_create(&th[i], NULL, filler, (void *)(uintptr_t)(i + 1)), 0);
	for (int k = 0; k < FORKS && !bad; k++) {
		int pfd[2];
		pid_t c;
		char ch = 0;

		/* Device pages elsewhere: fork brings them home first. */
		CHECK_EQ(uhmm_simdev_migrate_to_dev(dev, other, OTHER, NULL), 0);
		CHECK_EQ(pipe(pfd), 0);
		c = fork();
		CHECK(c >= 0, "fork: %s", strerror(errno));
		if (c == 0) {
			/* Keep the pages shared until the parent has looked. */
			close(pfd[1]);
			if (read(pfd[0], &ch, 1) < 0)
				_exit(2);
			_exit(0);
		}
		pthread_rwlock_wrlock(&pause_lock);
		bad = m_fault(0, NPAGES, 0) != 0;
		pthread_rwlock_unlock(&pause_lock);
		close(pfd[0]);
		close(pfd[1]);
		CHECK_EQ(waitpid(c, NULL, 0), c);
	}
	atomic_store(&stop, 1);
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	CHECK(check_pattern(buf, NPAGES, 0xf0c4u) < 0, "data changed");
	CHECK(check_pattern(other, OTHER, 0x07e5u) < 0, "device data changed");
	uhmm_simdev_destroy(dev);
	uhmm_interval_notifier_remove(&M.mni);
	uhmm_mm_put(mm);
	return bad;
}

static void test_fork_vs_range_fault(void)
{
	const char *env = getenv("UHMM_TEST_ROUNDS");
	bool keep = getenv("UHMM_TEST_KEEP_GOING") != NULL;
	int rounds = env && atoi(env) > 0 ? atoi(env) : ROUNDS;
	int bad = 0, r;

	for (r = 0; r < rounds && (keep || !bad); r++)
		bad += run_watched(one_round, NULL, WATCHDOG_SECONDS,
				   "fork against write range faults") != ROUND_OK;
	printf("%s: %d rounds of %d forks, %d failed or hung\n", NAME, r, FORKS, bad);
	CHECK(bad == 0, "a mirror kept a writable translation of a page fork made copy-on-write");
	printf("%s: no stale writable translation after fork\n", NAME);
}

static const struct test_case cases[] = {
	TEST_CASE(test_fork_vs_range_fault),
};

TEST_MAIN(NAME, NULL, NULL)
