// SPDX-License-Identifier: MIT
/*
 * A raw mremap of device-resident pages while a migration of those pages is
 * in flight (tests/hunt/FINDINGS.md item 19).  A raw system call bypasses
 * uhmm's mremap wrapper (which holds migrations off, docs/CONCURRENCY.md
 * rule 9), and glibc's realloc() of a block above the mmap threshold makes
 * one itself.  In the kernel mremap moves migration entries with the page
 * tables and the migration's end finds each page at its new address
 * (remove_migration_ptes() through the rmap); a device-range eviction holds
 * no mmap_lock at all, so the move can land anywhere inside it.  Whatever
 * the order, nothing is lost: after mremap() has returned and the
 * migration has ended, every byte at the new address is the data the owner
 * wrote before the move.
 *
 * The race is played in lock step, not left to the scheduler: per step the
 * owner gets the pages ready (written, on the device) and says so; the
 * racer starts its migration and stops inside it, after its collection
 * (setup) or after uhmm_migrate_*_pages(), at alternate steps; the owner
 * then moves the region with syscall(SYS_mremap, ..., MREMAP_MAYMOVE |
 * MREMAP_FIXED, dst) (or realloc()), the racer ends its migration, and the
 * owner checks every byte of every region.  Condition variables only: no
 * sleep, no timing.  The cases:
 *
 *	evict	 a thread evicts the pool's pfns (uhmm_migrate_device_range,
 *		 its copy into system buffers, pages, finalize; as
 *		 tests/hunt/hunt6.c's evict_copy()): the whole pool, or a run.
 *		 Every other pair of steps, uhmm's worker (which applies the
 *		 REMAP event) is held in a second device's migrate_to_ram from
 *		 before the mremap until after the finalize: the event is
 *		 applied after the migration instead of inside it
 *	to_sys	 a thread migrates the moving region back to system memory
 *		 with migrate_vma (device pages, installed at finalize)
 *	to_dev	 a thread migrates the moving region (system memory) to the
 *		 device (its pages frozen in staging until finalize)
 *	realloc	 glibc's realloc() of a block above the mmap threshold
 *		 (M_MMAP_THRESHOLD 64 KiB), grown (it moves: glibc's mremap
 *		 with MREMAP_MAYMOVE) and shrunk (in place), racing eviction.  The whole mapping goes to the device
 *		 and its first page (glibc's header, which realloc() reads)
 *		 comes home: a migration of part of it registers that part
 *		 alone, the mapping is then two, mremap() of the block fails
 *		 (EFAULT) and glibc copies instead, never moving a page
 *	fault	 a third thread reads a device-resident page of the moving
 *		 region; the device's migrate_to_ram (run by uhmm's worker)
 *		 stops inside its migration home until the owner's mremap has
 *		 returned.  The reading thread may get SIGSEGV (its address
 *		 moved away: the kernel's answer) or the data; never SIGBUS
 *
 * On main 082dad2 + the lead10 merge (da167db), Linux 6.18, one CPU: every
 * step of evict (but those with the worker held), to_sys, to_dev and every
 * grown realloc() lost the moving pages (they read zeroes at the new
 * address: the worker's REMAP event marks the migration's MIGRATING
 * entries GONE, src/service.c ptable_move(), and finalize drops them);
 * fault lost nothing but the reader got SIGBUS in most steps (the install
 * at the old address fails; the REMAP event waits for the worker, which is
 * in the migration).  Normal and UHMM_DISABLE=all alike.  Moving the
 * region after the migration has ended instead (a control, not a case)
 * lost nothing and the reader got the data.  A failure names the step, the
 * variant, the region, the page and what it read.  Under ASan and TSan,
 * whose malloc is not glibc's, realloc is skipped.
 *
 * Usage: test_remap_race [CASE...]; UHMM_TEST_ROUNDS=N rounds per case (a
 * fresh process each), UHMM_TEST_KEEP_GOING=1 to run every round.
 */
#include "common.h"
#include "page_version.h"
#include "watchdog.h"

#include <malloc.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/syscall.h>

#define NAME "test_remap_race"
#define NREG 2			/* regions; one of them moves at each step */
#define NPAGES 16		/* pages a region */
#define POOL (4 * NREG * NPAGES)	/* tdev pages */
#define RL_PAGES 64		/* realloc: the block, 256 KiB with 4 KiB pages */
#define RL_POOL (4 * RL_PAGES)
#define MAXWIN 64		/* fault: the largest migrate_to_ram window hooked */

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define ROUNDS 2
#define STEPS 32
#else
#define ROUNDS 4
#define STEPS 96
#endif

enum kind { K_EVICT, K_TO_SYS, K_TO_DEV, K_REALLOC, K_FAULT };

static const char *const kind_name[] = {
	"evict: device-range eviction of the pool's pfns",
	"to_sys: migrate_vma of the region to system memory",
	"to_dev: migrate_vma of the region to the device",
	"realloc: glibc realloc() of a device-resident block, racing eviction",
	"fault: a CPU read of a device-resident page, migrate_to_ram in flight",
};

/* Where the racer stops inside its migration, alternately. */
enum hook { H_SETUP, H_PAGES };

/*
 * The variants of a step: where the racer stops, and (evict) whether
 * uhmm's worker is held from before the mremap until after the finalize.
 */
#define NVAR 4
static const char *const var_name[NVAR] = {
	"after the collection", "after pages",
	"after the collection, the worker held past finalize",
	"after pages, the worker held past finalize",
};

/*
 * One round: the owner (the round's main thread), the racer thread, and
 * the lock-step stages.  Step s has stages 4s+1 (the owner: ready), 4s+2
 * (the racer: its migration stopped inside), 4s+3 (the owner: moved),
 * 4s+4 (the racer: its migration ended).
 */
struct race {
	enum kind kind;
	struct uhmm_mm *mm;
	struct tdev *d;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int stage;
	int steps;
	atomic_int step;		/* the owner's current step */
	_Atomic(char *) cur;		/* to_sys, to_dev, fault: the moving region */
	atomic_int armed;		/* fault: hook the next migrate_to_ram */
	/* what the racer saw, for the summary */
	atomic_long collected[NVAR];	/* pages collected, per variant */
	atomic_long hooked[NVAR];	/* steps stopped inside, per variant */
	atomic_long fault_segv, fault_bus, fault_read, fault_unhooked;
	atomic_int fault_bad;		/* the reader read something else */
	/* evict: the worker held in a callback of the second device */
	struct tdev *hold_dev;
	char *hold_page;		/* its one page, on hold_dev */
	int hold_req, held, release;	/* step + 1 of each, under mu */
	bool hold_stop;
	unsigned int seed;
};

static struct race R;

static atomic_int printed;	/* detail lines printed: the first few of a round */
#define PRINT_MAX 8

static void stage_set(struct race *r, int s)
{
	pthread_mutex_lock(&r->mu);
	if (r->stage < s)
		r->stage = s;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
}

static void stage_wait(struct race *r, int s)
{
	pthread_mutex_lock(&r->mu);
	while (r->stage < s)
		pthread_cond_wait(&r->cv, &r->mu);
	pthread_mutex_unlock(&r->mu);
}

#define ST_READY(s)	(4 * (s) + 1)
#define ST_INSIDE(s)	(4 * (s) + 2)
#define ST_MOVED(s)	(4 * (s) + 3)
#define ST_DONE(s)	(4 * (s) + 4)

/*
 * evict, every other pair of steps: hold uhmm's worker (the one thread
 * that applies the REMAP event) in a second device's migrate_to_ram, from
 * before the owner's mremap until the eviction has finalized: the event is
 * read (mremap returns) but applied only after the finalize, which finds
 * the old address unmapped.  The hold is a CPU read of that device's page
 * by the holder thread.
 */
static void hold_worker(struct race *r, int step)
{
	pthread_mutex_lock(&r->mu);
	r->hold_req = step + 1;
	pthread_cond_broadcast(&r->cv);
	while (r->held < step + 1)
		pthread_cond_wait(&r->cv, &r->mu);
	pthread_mutex_unlock(&r->mu);
}

static void release_worker(struct race *r, int step)
{
	pthread_mutex_lock(&r->mu);
	r->release = step + 1;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
}

/* The second device's migrate_to_ram, on uhmm's worker. */
static int hold_migrate_to_ram(struct uhmm_vm_fault *vmf)
{
	struct race *r = &R;

	pthread_mutex_lock(&r->mu);
	if (r->hold_req > r->held) {
		int s = r->held = r->hold_req;

		pthread_cond_broadcast(&r->cv);
		while (r->release < s)
			pthread_cond_wait(&r->cv, &r->mu);
	}
	pthread_mutex_unlock(&r->mu);
	return tdev_migrate_to_ram(vmf);
}

static const struct uhmm_devmem_ops hold_ops = {
	.page_free = tdev_page_free,
	.migrate_to_ram = hold_migrate_to_ram,
};

static void *holder(void *arg)
{
	struct race *r = arg;
	int served = 0;

	for (;;) {
		int step;
		long m;

		pthread_mutex_lock(&r->mu);
		while (r->hold_req <= served && !r->hold_stop)
			pthread_cond_wait(&r->cv, &r->mu);
		if (r->hold_req <= served) {	/* stopped */
			pthread_mutex_unlock(&r->mu);
			break;
		}
		served = r->hold_req;
		step = served - 1;
		pthread_mutex_unlock(&r->mu);
		/* The read faults; the worker's migrate_to_ram holds until released. */
		CHECK(*(volatile uint32_t *)(void *)r->hold_page == 0x686f6c64u,
		      "the holding page lost its data");
		m = tdev_to_dev(r->hold_dev, (uintptr_t)r->hold_page,
				(uintptr_t)r->hold_page + page_size, NULL);
		CHECK(m == 1, "step %d: the holding page to its device: %ld", step, m);
	}
	return NULL;
}

/* Alternate steps (realloc: alternate blocks, each grown then shrunk). */
static enum hook hook_of(const struct race *r, int step)
{
	if (r->kind == K_REALLOC)
		step /= 2;
	return step % 2 ? H_PAGES : H_SETUP;
}

/* evict: steps 4k + 2 and 4k + 3 hold the worker past the finalize. */
static bool late_of(const struct race *r, int step)
{
	return r->kind == K_EVICT && step % 4 >= 2;
}

static int var_of(const struct race *r, int step)
{
	return (int)hook_of(r, step) + (late_of(r, step) ? 2 : 0);
}

/* The racer stops inside its migration until the owner has moved the region. */
static void hook(struct race *r, int step, long collected)
{
	atomic_fetch_add(&r->collected[var_of(r, step)], collected);
	atomic_fetch_add(&r->hooked[var_of(r, step)], 1);
	if (late_of(r, step))
		hold_worker(r, step);
	stage_set(r, ST_INSIDE(step));
	stage_wait(r, ST_MOVED(step));
}

/* ---- the racers' migrations (public API only, as a driver's) ---- */

/*
 * Evict [idx, idx + n) of the pool by pfn: collect, copy each collected
 * page into @buf, pages, finalize; stopped inside at @h.
 */
static void evict_run(struct race *r, int step, size_t idx, size_t n, char *buf,
		      uint64_t *src, uint64_t *dst)
{
	enum hook h = hook_of(r, step);
	uint64_t base = uhmm_page_to_pfn(uhmm_devmem_page(&r->d->pgmap, 0));
	long collected = 0;
	int ret = uhmm_migrate_device_range(r->mm, src, base + idx, n);

	CHECK(ret == 0, "step %d: uhmm_migrate_device_range(%zu + %zu): %d", step, idx, n, ret);
	for (size_t i = 0; i < n; i++)
		collected += !!(src[i] & UHMM_MIGRATE_PFN_MIGRATE);
	if (h == H_SETUP)
		hook(r, step, collected);
	for (size_t i = 0; i < n; i++) {
		struct uhmm_page *pg;

		dst[i] = 0;
		if (!(src[i] & UHMM_MIGRATE_PFN_MIGRATE))
			continue;
		pg = uhmm_pfn_to_page(r->mm, uhmm_migrate_pfn_to_pfn(src[i]));
		CHECK(pg, "step %d: collected pfn %#llx names no page", step,
		      (unsigned long long)uhmm_migrate_pfn_to_pfn(src[i]));
		memcpy(buf + i * page_size, tdev_page_mem(r->d, pg), page_size);
		dst[i] = uhmm_migrate_pfn((uintptr_t)(buf + i * page_size) / page_size);
	}
	uhmm_migrate_device_pages(r->mm, src, dst, n);
	if (h == H_PAGES)
		hook(r, step, collected);
	uhmm_migrate_device_finalize(r->mm, src, dst, n);
	if (late_of(r, step))
		release_worker(r, step);
}

/*
 * migrate_vma of [start, end) to the device or home, tdev's copy
 * (testdev/tdev.c) with a stop inside at @h.  No malloc, no stdio: it also
 * serves migrate_to_ram on uhmm's worker.  Returns the pages set up to
 * migrate, or -errno of the setup (then the stop is taken all the same,
 * so the owner's step goes on).
 */
static long vma_migrate(struct race *r, int step, uintptr_t start, uintptr_t end, bool to_dev,
			struct uhmm_page *fault_page)
{
	enum hook h = hook_of(r, step);
	size_t n = (end - start) / page_size;
	uint64_t src[MAXWIN > NPAGES ? MAXWIN : NPAGES], dst[MAXWIN > NPAGES ? MAXWIN : NPAGES];
	struct uhmm_migrate_vma m = {
		.mm = r->mm, .start = start, .end = end, .src = src, .dst = dst,
		.pgmap_owner = &r->d->owner_token, .fault_page = fault_page,
		.flags = to_dev ? UHMM_MIGRATE_VMA_SELECT_SYSTEM
				: UHMM_MIGRATE_VMA_SELECT_DEVICE_PRIVATE,
	};
	long collected = 0;
	int ret;

	if (n > sizeof(src) / sizeof(src[0]))
		return -E2BIG;
	ret = uhmm_migrate_vma_setup(&m);
	if (ret) {
		hook(r, step, 0);
		return ret;
	}
	for (size_t i = 0; i < n; i++)
		collected += !!(src[i] & UHMM_MIGRATE_PFN_MIGRATE);
	if (h == H_SETUP)
		hook(r, step, collected);
	for (size_t i = 0; i < n; i++) {
		if (!(src[i] & UHMM_MIGRATE_PFN_MIGRATE))
			continue;
		if (to_dev) {
			struct uhmm_page *p = tdev_alloc(r->d);
			const void *from;

			if (!p)
				continue;
			from = (src[i] & UHMM_MIGRATE_PFN_VALID) ? uhmm_migrate_pfn_addr(&m, i) : NULL;
			if (from)
				memcpy(tdev_page_mem(r->d, p), from, page_size);
			else
				memset(tdev_page_mem(r->d, p), 0, page_size);
			dst[i] = uhmm_migrate_pfn(uhmm_page_to_pfn(p)) |
				 (src[i] & UHMM_MIGRATE_PFN_WRITE);
		} else {
			struct uhmm_page *p = uhmm_pfn_to_page(r->mm, uhmm_migrate_pfn_to_pfn(src[i]));
			void *to = p ? uhmm_migrate_alloc_sys(&m, i) : NULL;

			if (to)
				memcpy(to, tdev_page_mem(r->d, p), page_size);
		}
	}
	uhmm_migrate_vma_pages(&m);
	if (h == H_PAGES)
		hook(r, step, collected);
	uhmm_migrate_vma_finalize(&m);
	return collected;
}

/* fault: the device's migrate_to_ram; the armed one stops inside. */
static int race_migrate_to_ram(struct uhmm_vm_fault *vmf)
{
	struct race *r = &R;
	long ret;

	/* Too large a window is not hooked: the reader then sees it still armed. */
	if (vmf->window_end - vmf->window_start > MAXWIN * page_size ||
	    !atomic_exchange(&r->armed, 0))
		return tdev_migrate_to_ram(vmf);
	ret = vma_migrate(r, atomic_load(&r->step), vmf->window_start, vmf->window_end, false,
			  vmf->page);
	return ret < 0 ? (int)ret : 0;
}

static const struct uhmm_devmem_ops race_ops = {
	.page_free = tdev_page_free,
	.migrate_to_ram = race_migrate_to_ram,
};

/* ---- the racer threads ---- */

static void *evictor(void *arg)
{
	struct race *r = arg;
	size_t pool = r->d->nr_pages;
	char *buf = map_anon(pool * page_size, PROT_READ | PROT_WRITE);
	uint64_t *src = (uint64_t *)map_anon(2 * pool * sizeof(uint64_t), PROT_READ | PROT_WRITE);
	uint64_t *dst = src + pool;
	unsigned int s = r->seed ^ 0x9292u;

	for (int step = 0; step < r->steps; step++) {
		size_t idx = 0, n = pool;

		stage_wait(r, ST_READY(step));
		/* Four steps (one of each variant) evict the whole pool, four a run of it. */
		if (step / 4 % 2) {
			idx = next(&s) % (pool / 2);
			n = pool / 4 + next(&s) % (pool - idx - pool / 4 + 1);
		}
		evict_run(r, step, idx, n, buf, src, dst);
		stage_set(r, ST_DONE(step));
	}
	munmap(buf, pool * page_size);
	munmap(src, 2 * pool * sizeof(uint64_t));
	return NULL;
}

static void *vma_migrator(void *arg)
{
	struct race *r = arg;

	for (int step = 0; step < r->steps; step++) {
		uintptr_t a;
		long ret;

		stage_wait(r, ST_READY(step));
		a = (uintptr_t)atomic_load(&r->cur);
		ret = vma_migrate(r, step, a, a + NPAGES * page_size, r->kind == K_TO_DEV, NULL);
		CHECK(ret >= 0, "step %d: migrate_vma %s of the region: %ld", step,
		      r->kind == K_TO_DEV ? "to the device" : "home", ret);
		stage_set(r, ST_DONE(step));
	}
	return NULL;
}

/* fault: the reading thread; its address may move away under the read. */
static __thread sigjmp_buf rd_env;
static __thread volatile sig_atomic_t rd_armed, rd_sig;

static void rd_handler(int sig, siginfo_t *si, void *uc)
{
	(void)si;
	(void)uc;
	if (!rd_armed) {
		signal(sig, SIG_DFL);
		raise(sig);
		return;
	}
	rd_armed = 0;
	rd_sig = sig;
	siglongjmp(rd_env, 1);
}

/* Read the word at @p: 0, or the signal the read got (SIGSEGV: @p moved away). */
static __attribute__((noinline)) int read_word(const char *p, uint32_t *out)
{
	rd_sig = 0;
	if (sigsetjmp(rd_env, 1) == 0) {
		rd_armed = 1;
		*out = *(const volatile uint32_t *)(const volatile void *)p;
		rd_armed = 0;
	}
	return rd_sig;
}

static void *reader(void *arg)
{
	struct race *r = arg;
	unsigned int s = r->seed ^ 0x7171u;

	for (int step = 0; step < r->steps; step++) {
		char *a;
		size_t pg;
		uint32_t w = 0;
		unsigned int reg;
		int sig;

		stage_wait(r, ST_READY(step));
		a = atomic_load(&r->cur);
		pg = next(&s) % NPAGES;
		reg = (unsigned int)(step % NREG);
		sig = read_word(a + pg * page_size, &w);
		if (atomic_exchange(&r->armed, 0)) {
			/* No migrate_to_ram was hooked: the step goes on without a race. */
			atomic_fetch_add(&r->fault_unhooked, 1);
			stage_set(r, ST_INSIDE(step));
		}
		stage_wait(r, ST_MOVED(step));
		if (sig == SIGSEGV) {
			atomic_fetch_add(&r->fault_segv, 1);
		} else if (sig) {
			atomic_fetch_add(&r->fault_bus, 1);
			if (atomic_fetch_add(&printed, 1) < PRINT_MAX)
				fprintf(stderr, "%s: step %d (stopped %s): the read of region %u page %zu "
					"at %p got %s (the kernel gives the data, or SIGSEGV once the "
					"address moved away)\n", NAME, step, var_name[var_of(r, step)],
					reg, pg, (void *)(a + pg * page_size),
					sig == SIGBUS ? "SIGBUS" : "a signal");
			atomic_store(&r->fault_bad, 1);
		} else {
			/* word 0 of page (reg, pg) at the step's version (put_page()) */
			uint32_t want = (uint32_t)(step + 1) * 2654435761u ^
					(uint32_t)((reg * 64 + pg) << 16);

			atomic_fetch_add(&r->fault_read, 1);
			if (w != want) {
				if (atomic_fetch_add(&printed, 1) < PRINT_MAX)
					fprintf(stderr, "%s: step %d: the read of region %u page %zu "
						"at %p returned %#x, want %#x\n", NAME, step, reg, pg,
						(void *)(a + pg * page_size), w, want);
				atomic_store(&r->fault_bad, 1);
			}
		}
		stage_set(r, ST_DONE(step));
	}
	return NULL;
}

/* ---- the owner ---- */

/*
 * Check every page of a region (page index base + i at version @v);
 * print each wrong page (the first few in full).  Returns the wrong pages.
 */
static int check_pages(const char *what, int step, const char *when, int reg, const char *p,
		       size_t n, size_t base, uint32_t v)
{
	int bad = 0;

	for (size_t i = 0; i < n; i++) {
		const char *pg = p + i * page_size;
		const uint32_t *w = (const uint32_t *)(const void *)pg;
		int st = page_is(pg, base + i, v);
		size_t k;

		if (st == 1)
			continue;
		for (k = 0; k < page_size / 4; k++)
			if (w[k] != (v * 2654435761u ^ (uint32_t)((base + i) << 16) ^ (uint32_t)k))
				break;
		if (bad++ < 4 && atomic_fetch_add(&printed, 1) < PRINT_MAX)
			fprintf(stderr, "%s: %s: step %d (%s): region %d page %zu at %p reads %s: "
				"word %zu is %#x, want %#x (version %u)\n", NAME, what, step, when,
				reg, i, (const void *)pg, st == 0 ? "zeroes" : "other data", k,
				w[k], v * 2654435761u ^ (uint32_t)((base + i) << 16) ^ (uint32_t)k, v);
	}
	return bad;
}

static long raw_mremap(char *from, size_t len, char *to)
{
	return syscall(SYS_mremap, from, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, to);
}

/*
 * What ran: per variant, the steps stopped inside, the pages they
 * collected and (@bad_steps, may be NULL) the steps that lost data.
 */
static void print_summary(struct race *r, const int *bad_steps, const char *extra)
{
	printf("%s: variant %s; %d steps:", NAME, kind_name[r->kind], r->steps);
	for (int v = 0; v < NVAR; v++) {
		if (!atomic_load(&r->hooked[v]))
			continue;
		printf(" [stopped %s: %ld steps, %ld pages collected", var_name[v],
		       atomic_load(&r->hooked[v]), atomic_load(&r->collected[v]));
		if (bad_steps)
			printf(", %d steps lost data", bad_steps[v]);
		printf("]");
	}
	printf("%s\n", extra);
}

/* evict, to_sys, to_dev, fault: NREG regions, one moving at each step. */
static int region_round(void *arg)
{
	struct race *r = &R;
	size_t len = NPAGES * page_size;
	char *area, *slot[NREG][2];
	int at[NREG];
	uint32_t ver[NREG];
	pthread_t th, hth;
	int bad = 0, bad_steps[NVAR] = { 0 };
	struct sigaction sa;

	memset(r, 0, sizeof(*r));
	r->kind = (enum kind)(uintptr_t)arg;
	r->steps = STEPS;
	r->seed = (unsigned int)getpid() * 7919u;
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cv, NULL);
	r->mm = test_mm();
	r->d = tdev_create_ops(r->mm, POOL, r->kind == K_FAULT ? NPAGES : 0,
			       r->kind == K_FAULT ? &race_ops : NULL);
	if (r->kind == K_FAULT) {
		memset(&sa, 0, sizeof(sa));
		sa.sa_sigaction = rd_handler;
		sa.sa_flags = SA_SIGINFO;
		sigemptyset(&sa.sa_mask);
		CHECK_EQ(sigaction(SIGSEGV, &sa, NULL), 0);
		CHECK_EQ(sigaction(SIGBUS, &sa, NULL), 0);
	}
	/*
	 * Per region: guard, slot 0, guard, slot 1, all PROT_NONE reservations
	 * far from where anyone maps (map_far()), so a slot the region left is a
	 * hole nobody fills; a region moves from one slot to the other.
	 */
	area = map_far((4 * NREG + 1) * len, PROT_NONE);
	for (int g = 0; g < NREG; g++) {
		slot[g][0] = area + (size_t)(4 * g + 1) * len;
		slot[g][1] = area + (size_t)(4 * g + 3) * len;
		CHECK(mmap(slot[g][0], len, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == slot[g][0],
		      "mmap: %s", strerror(errno));
		at[g] = 0;
		ver[g] = 0;
		for (size_t i = 0; i < NPAGES; i++)
			put_page(slot[g][0] + i * page_size, (size_t)g * 64 + i, 0);
		CHECK_EQ(tdev_to_dev(r->d, (uintptr_t)slot[g][0], (uintptr_t)slot[g][0] + len, NULL),
			 NPAGES);
	}
	if (r->kind == K_EVICT) {
		r->hold_dev = tdev_create_ops(r->mm, 4, 0, &hold_ops);
		r->hold_page = map_anon(page_size, PROT_READ | PROT_WRITE);
		*(uint32_t *)(void *)r->hold_page = 0x686f6c64u;
		CHECK_EQ(tdev_to_dev(r->hold_dev, (uintptr_t)r->hold_page,
				     (uintptr_t)r->hold_page + page_size, NULL), 1);
		CHECK_EQ(pthread_create(&hth, NULL, holder, r), 0);
	}
	CHECK_EQ(pthread_create(&th, NULL, r->kind == K_EVICT ? evictor :
				r->kind == K_FAULT ? reader : vma_migrator, r), 0);
	for (int step = 0; step < r->steps; step++) {
		int g = step % NREG, step_bad = 0, b;
		char *from = slot[g][at[g]], *to = slot[g][!at[g]];
		long moved;

		/* The moving region: new data, on the device (to_dev: left in memory). */
		ver[g] = (uint32_t)step + 1;
		for (size_t i = 0; i < NPAGES; i++)
			put_page(from + i * page_size, (size_t)g * 64 + i, ver[g]);
		for (int o = 0; o < NREG; o++) {
			if (r->kind == K_TO_DEV && o == g)
				continue;
			/* Everything is on the device again (an eviction brought some home). */
			moved = tdev_to_dev(r->d, (uintptr_t)slot[o][at[o]],
					    (uintptr_t)slot[o][at[o]] + len, NULL);
			CHECK(moved >= 0, "step %d: region %d to the device: %ld", step, o, moved);
		}
		atomic_store(&r->cur, from);
		atomic_store(&r->step, step);
		if (r->kind == K_FAULT)
			atomic_store(&r->armed, 1);
		stage_set(r, ST_READY(step));
		stage_wait(r, ST_INSIDE(step));
		moved = raw_mremap(from, len, to);
		CHECK(moved == (long)(uintptr_t)to, "step %d: raw mremap of region %d %p -> %p: %s",
		      step, g, (void *)from, (void *)to, strerror(errno));
		at[g] = !at[g];
		stage_set(r, ST_MOVED(step));
		stage_wait(r, ST_DONE(step));
		for (int o = 0; o < NREG; o++) {
			char when[160];

			if (o == g)
				snprintf(when, sizeof(when), "stopped %s; the region moved %p -> %p",
					 var_name[var_of(r, step)], (void *)from, (void *)to);
			else
				snprintf(when, sizeof(when), "stopped %s; a region that did not move",
					 var_name[var_of(r, step)]);
			b = check_pages(kind_name[r->kind], step, when, o, slot[o][at[o]], NPAGES,
					(size_t)o * 64, ver[o]);
			/* What was lost is written again: each step is judged alone. */
			for (size_t i = 0; b && i < NPAGES; i++)
				put_page(slot[o][at[o]] + i * page_size, (size_t)o * 64 + i, ver[o]);
			step_bad += b;
		}
		if (step_bad) {
			bad += step_bad;
			bad_steps[var_of(r, step)]++;
		}
	}
	pthread_join(th, NULL);
	if (r->kind == K_EVICT) {
		pthread_mutex_lock(&r->mu);
		r->hold_stop = true;
		pthread_cond_broadcast(&r->cv);
		pthread_mutex_unlock(&r->mu);
		pthread_join(hth, NULL);
	}
	{
		char extra[300];
		int n = snprintf(extra, sizeof(extra), "; %d pages lost or wrong in all", bad);

		if (r->kind == K_FAULT)
			snprintf(extra + n, sizeof(extra) - (size_t)n, "; the reader got SIGSEGV %ld, "
				 "the data %ld, another signal %ld; %ld reads served without the "
				 "hook", atomic_load(&r->fault_segv), atomic_load(&r->fault_read),
				 atomic_load(&r->fault_bus), atomic_load(&r->fault_unhooked));
		print_summary(r, bad_steps, extra);
	}
	if (bad || atomic_load(&r->fault_bad))
		return 1;
	for (int g = 0; g < NREG; g++)
		CHECK_EQ(munmap(slot[g][at[g]], len), 0);
	munmap(area, (4 * NREG + 1) * len);
	tdev_destroy(r->d);
	if (r->kind == K_EVICT) {
		CHECK_EQ(munmap(r->hold_page, page_size), 0);
		tdev_destroy(r->hold_dev);
	}
	uhmm_mm_put(r->mm);
	return 0;
}

/* realloc: words of a block, numbered from its start, at version @v. */
static uint32_t rl_word(uint32_t v, size_t k)
{
	return v * 2654435761u ^ (uint32_t)k ^ 0x5a5a0000u;
}

static void rl_fill(char *b, size_t len, uint32_t v)
{
	uint32_t *w = (uint32_t *)(void *)b;

	for (size_t k = 0; k < len / 4; k++)
		w[k] = rl_word(v, k);
}

static int rl_check(int step, const char *when, uintptr_t old, const char *b, size_t len,
		    uint32_t v)
{
	const uint32_t *w = (const uint32_t *)(const void *)b;
	uintptr_t map = (uintptr_t)b & ~(uintptr_t)(page_size - 1);
	int bad = 0;
	long last_pg = -1;

	for (size_t k = 0; k < len / 4; k++) {
		/* the page of the block's mapping (0: glibc's header is in it) */
		long pg = (long)(((uintptr_t)(b + 4 * k) - map) / page_size);

		if (w[k] == rl_word(v, k) || pg == last_pg)
			continue;
		last_pg = pg;
		if (bad++ < 4 && atomic_fetch_add(&printed, 1) < PRINT_MAX)
			fprintf(stderr, "%s: realloc: step %d (%s; block %p -> %p): page %ld of the "
				"mapping at %p: word %zu of the block is %#x, want %#x (version "
				"%u)%s\n", NAME, step, when, (void *)old, (const void *)b, pg,
				(const void *)(b + 4 * k), k, w[k], rl_word(v, k), v,
				w[k] ? "" : " (zero)");
	}
	return bad;
}

/* One mapping of /proc/self/maps holds all of [s, e). */
static bool one_mapping(uintptr_t s, uintptr_t e)
{
	FILE *f = fopen("/proc/self/maps", "re");
	char line[512];
	bool found = false;

	CHECK(f, "open /proc/self/maps: %s", strerror(errno));
	while (fgets(line, sizeof(line), f)) {
		unsigned long ms, me;

		if (sscanf(line, "%lx-%lx ", &ms, &me) == 2 && ms <= s && s < me) {
			found = e <= me;
			break;
		}
	}
	fclose(f);
	return found;
}

/*
 * The mapping glibc made for block @b (above the mmap threshold): the chunk
 * starts a page, 2 * sizeof(size_t) before @b, and its size field (flag
 * IS_MMAPPED, 2) is the mapping's length.
 */
static void rl_mapping(const char *b, size_t len_hint, uintptr_t *s, size_t *len)
{
	size_t sz = ((const size_t *)(const void *)b)[-1];

	if (!(sz & 2))
		SKIP("block %p of %zu bytes is not a chunk glibc's malloc mmapped (size field "
		     "%#zx): not glibc's malloc?", (const void *)b, len_hint, sz);
	*s = (uintptr_t)b - 2 * sizeof(size_t);
	*len = sz & ~(size_t)7;
	CHECK(!(*s & (page_size - 1)) && !(*len & (page_size - 1)),
	      "block %p: mapping %#lx + %#zx is not page aligned", (const void *)b,
	      (unsigned long)*s, *len);
}

/*
 * One step: block @b of @len bytes at version @v goes to the device whole
 * (its first page, glibc's header, then comes home: realloc() reads it,
 * and the evictor stops holding what it collected); the evictor collects
 * and stops; realloc() to @nlen; the evictor ends; the first
 * min(len, nlen) bytes are checked.  A block the library's registration
 * left in two mappings cannot be mremapped (glibc copies it instead,
 * reading pages the evictor holds): that step realloc()s after the
 * eviction and races nothing.  Returns the new block.
 */
static char *rl_step(struct race *r, int step, char *b, size_t len, size_t nlen, uint32_t v,
		     int *bad, int *bad_steps, long *moved, long *raced)
{
	uintptr_t ms, old = (uintptr_t)b;
	size_t mlen;
	bool race;
	long m;
	char *nb;
	char when[80];
	int lost;

	rl_fill(b, len, v);
	rl_mapping(b, len, &ms, &mlen);
	m = tdev_to_dev(r->d, ms, ms + mlen, NULL);
	CHECK(m == (long)(mlen / page_size), "step %d: block %p (%zu pages) to the device: %ld",
	      step, (void *)b, mlen / page_size, m);
	m = tdev_to_sys(r->d, ms, ms + page_size, NULL);
	CHECK(m == 1, "step %d: the block's first page home: %ld", step, m);
	race = one_mapping(ms, ms + mlen);
	atomic_store(&r->step, step);
	stage_set(r, ST_READY(step));
	stage_wait(r, ST_INSIDE(step));
	nb = race ? realloc(b, nlen) : NULL;
	stage_set(r, ST_MOVED(step));
	stage_wait(r, ST_DONE(step));
	if (!race)
		nb = realloc(b, nlen);
	CHECK(nb, "step %d: realloc %zu -> %zu: %s", step, len, nlen, strerror(errno));
	*raced += race;
	*moved += (uintptr_t)nb != old;
	snprintf(when, sizeof(when), "%s %s%s", nlen > len ? "grown" : "shrunk",
		 (uintptr_t)nb != old ? "and moved" : "in place", race ? "" : ", not raced");
	lost = rl_check(step, when, old, nb, len < nlen ? len : nlen, v);
	*bad += lost;
	bad_steps[var_of(r, step)] += lost > 0;
	return nb;
}

static int realloc_round(void *arg)
{
	struct race *r = &R;
	size_t small = RL_PAGES * page_size, big = 2 * small;
	long moved = 0, raced = 0;
	pthread_t th;
	int bad = 0, bad_steps[NVAR] = { 0 };

	(void)arg;
	memset(r, 0, sizeof(*r));
	r->kind = K_REALLOC;
	r->steps = STEPS;	/* two per block: grow, shrink */
	r->seed = (unsigned int)getpid() * 7919u;
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cv, NULL);
	/* A fixed threshold: glibc raises it to the size of a freed mmapped block. */
	CHECK_EQ(mallopt(M_MMAP_THRESHOLD, 64 << 10), 1);
	r->mm = test_mm();
	r->d = tdev_create(r->mm, RL_POOL, 0);
	CHECK_EQ(pthread_create(&th, NULL, evictor, r), 0);
	for (int step = 0; step < r->steps; step += 2) {
		char *b = malloc(small);

		CHECK(b, "malloc %zu", small);
		b = rl_step(r, step, b, small, big, (uint32_t)step + 1, &bad, bad_steps, &moved,
			    &raced);
		b = rl_step(r, step + 1, b, big, small, (uint32_t)step + 2, &bad, bad_steps, &moved,
			    &raced);
		free(b);
	}
	pthread_join(th, NULL);
	{
		char extra[200];

		snprintf(extra, sizeof(extra), "; %ld of %d realloc() calls raced the eviction, %ld "
			 "moved the block; %d pages lost or wrong", raced, r->steps, moved, bad);
		print_summary(r, bad_steps, extra);
	}
	if (bad)
		return 1;
	CHECK(raced > 0 && moved > 0, "no realloc() moved a block racing the eviction: the case "
	      "raced nothing");
	tdev_destroy(r->d);
	uhmm_mm_put(r->mm);
	return 0;
}

static void run(enum kind k, int (*fn)(void *))
{
	int failed = run_rounds(fn, (void *)(uintptr_t)k, ROUNDS, kind_name[k]);

	CHECK(failed == 0, "%s: %d rounds failed", kind_name[k], failed);
	printf("%s: %s: every byte at the new address: ok\n", NAME, kind_name[k]);
}

static void test_evict(void)
{
	run(K_EVICT, region_round);
}

static void test_to_sys(void)
{
	run(K_TO_SYS, region_round);
}

static void test_to_dev(void)
{
	run(K_TO_DEV, region_round);
}

static void test_realloc(void)
{
	/* ASan's and TSan's allocators replace glibc's: no mremap in realloc(). */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
	SKIP_CASE("the sanitizer's malloc is not glibc's: its realloc() does not call mremap");
#endif
	if (mallopt(M_MMAP_THRESHOLD, 64 << 10) != 1)
		SKIP_CASE("mallopt(M_MMAP_THRESHOLD) refused: this malloc is not glibc's, "
			  "its realloc() need not call mremap");
	run(K_REALLOC, realloc_round);
}

static void test_fault(void)
{
	run(K_FAULT, region_round);
}

static const struct test_case cases[] = {
	TEST_CASE(test_evict),
	TEST_CASE(test_to_sys),
	TEST_CASE(test_to_dev),
	TEST_CASE(test_realloc),
	TEST_CASE(test_fault),
};

TEST_MAIN(NAME, NULL, NULL)
