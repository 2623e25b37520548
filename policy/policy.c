// SPDX-License-Identifier: MIT
/*
 * libuhmm_policy: the memory-policy layer.  See include/uhmm/policy.h.
 *
 * Built only on uhmm's public API and the driver's operations, as UVM's
 * policy code sits on the kernel's HMM in each driver.
 *
 * State.  Per range: one record per page (where the layer last saw it,
 * pinned, which devices hold a valid read-only copy, the copy generation,
 * the times of its last migrations), one record per 2 MiB block and device
 * (the LRU stamp, pages resident, the "resident or faulted" bitmap density
 * prefetch reads, the copy area), and the range's counters.  Per policy:
 * device and tenant usage, reservations of migrations in flight, budgets.
 *
 * Locking.  pol->lock (a mutex) protects all of that; it is a leaf: taken
 * inside the driver's invalidate callback and migrate_to_ram (through
 * uhmm_policy_cpu_fault() and this layer's own notifier), so it is never
 * held while the layer calls the driver, uhmm, mprotect or madvise.  A
 * read-mostly range has r->rm_lock, held across a change of its CPU
 * protection and the driver unmaps that go with it (collapse, re-protect):
 * it nests outside everything the driver and uhmm take.
 *
 * Residency.  After every migration it makes, the layer reads what is
 * where with a uhmm_range_fault() snapshot per device (pages of the
 * device's owner come back DEVICE_PRIVATE, everything else as not
 * resident there), so its record is exact for what it moved; pages that
 * leave a device behind its back are reported by the driver
 * (uhmm_policy_cpu_fault()) or seen by its notifier (unmap, discard).  A
 * budget counts what the layer recorded plus what is reserved by
 * migrations in flight, and every page that can arrive is reserved first:
 * the record can only overcount (a page left unseen), never undercount.
 *
 * Memory.  Everything the layer touches from a fault path lives in memory
 * it maps itself, never in the heap, which the program may migrate
 * (docs/CONCURRENCY.md, "Frozen pages").  Public entries block
 * asynchronous signals, as uhmm's and simdev's do: a handler touching
 * device memory while this thread holds pol->lock would wait for the
 * worker, whose migrate_to_ram waits for pol->lock.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <uhmm/policy.h>
#include <uhmm/range.h>
#include <uhmm/notifier.h>

#define BLOCK_SHIFT	21
#define BLOCK_SIZE	((uintptr_t)1 << BLOCK_SHIFT)
#define MAX_PPB		512		/* pages per block (4 KiB pages) */
#define BITMAP_WORDS	(MAX_PPB / 64)
#define MIG_SLOTS	8		/* migration times kept per page */
#define MAX_POLICIES	16
#define DEFAULT_GRAN	16

#define PM_PINNED	0x1u

struct page_meta {
	int8_t loc;			/* UHMM_POLICY_CPU or a device id */
	uint8_t flags;			/* PM_* */
	uint8_t copies;			/* devices holding a valid copy */
	uint8_t mig_next;		/* next slot of @mig */
	uint32_t gen;			/* copy generation: bumped when copies die */
	uint64_t pin_until;		/* 0: pinned for good (with PM_PINNED) */
	uint64_t mig[MIG_SLOTS];	/* times of the last migrations (ns) */
};

struct block_dev {
	uint64_t stamp;			/* LRU: last fault or migration (pol->clock) */
	uint32_t resident;		/* pages recorded in the device's memory */
	uint32_t ncopies;		/* valid copies */
	uint64_t seen[BITMAP_WORDS];	/* resident or faulted since it last left */
	char *copy_area;		/* a block's worth of copies, mapped on first use */
};

/*
 * A block's lock is held across a migration into or out of the block and
 * the snapshot that records its result, so results are recorded in the
 * order the migrations happened: two threads' snapshots applied in the
 * other order left a page recorded in system memory while it sat on the
 * device, and the budget test saw 576 pages against a budget of 300.
 * Never held while another block's lock is taken (reservations, which
 * evict, are made before it).
 */
struct block {
	pthread_mutex_t lock;
	struct block_dev d[UHMM_POLICY_MAX_DEVS];
};

struct uhmm_policy_range {
	struct uhmm_interval_notifier mni;	/* first */
	struct uhmm_policy *pol;
	struct uhmm_policy_range *next;
	uintptr_t start, end;
	size_t npages;
	uintptr_t blk0;			/* start >> BLOCK_SHIFT */
	size_t nblocks;
	struct uhmm_policy_attr attr;
	struct page_meta *pm;
	struct block *blk;
	uint8_t *rm_prot;		/* per granule: write-protected, copies allowed */
	size_t ngran;
	pthread_mutex_t rm_lock;
	struct uhmm_policy_stats st;	/* residency fields unused here */
	size_t alloc_pm, alloc_blk, alloc_rm;
};

struct dev {
	struct uhmm_policy_dev_desc desc;
	char name[32];
	size_t used;			/* pages recorded (migrated + copies) */
	size_t reserved;		/* reserved by migrations in flight */
};

struct tenant {
	size_t budget[UHMM_POLICY_MAX_DEVS];
	size_t used[UHMM_POLICY_MAX_DEVS];
	size_t reserved[UHMM_POLICY_MAX_DEVS];
	int priority;
};

struct uhmm_policy_req {
	struct uhmm_policy_req *next;
	struct uhmm_policy *pol;
	uintptr_t start, end;
	int loc;
	uhmm_policy_done_fn done;
	void *arg;
	bool waited;			/* a handle was given: freed by wait */
	bool complete;
	int status;
	uint64_t pages;
};

struct uhmm_policy {
	struct uhmm_mm *mm;
	struct uhmm_policy_config cfg;
	size_t ps;
	unsigned int shift;
	size_t ppb;			/* pages per block */
	pthread_mutex_t lock;
	struct uhmm_policy_range *ranges;
	struct dev devs[UHMM_POLICY_MAX_DEVS];
	int ndev;
	struct tenant tenants[UHMM_POLICY_MAX_TENANTS];
	uint64_t clock;
	/* prefetch */
	pthread_cond_t pf_cond, pf_done;
	struct uhmm_policy_req *pf_head, *pf_tail;
	bool pf_running, pf_stop;
	pthread_t pf_thread;
};

/* ---- signals, memory, time ------------------------------------------------ */

static sigset_t pol_async_set;
static __thread __attribute__((tls_model("initial-exec"))) unsigned int pol_sig_depth;
static __thread __attribute__((tls_model("initial-exec"))) sigset_t pol_sig_saved;

__attribute__((constructor)) static void pol_sig_init(void)
{
	static const int sync_sigs[] = { SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS };

	sigfillset(&pol_async_set);
	for (size_t i = 0; i < sizeof(sync_sigs) / sizeof(sync_sigs[0]); i++)
		sigdelset(&pol_async_set, sync_sigs[i]);
}

static void pol_sig_enter(void)
{
	if (pol_sig_depth++ == 0)
		pthread_sigmask(SIG_BLOCK, &pol_async_set, &pol_sig_saved);
}

static void pol_sig_leave(int *unused)
{
	(void)unused;
	if (pol_sig_depth && --pol_sig_depth == 0)
		pthread_sigmask(SIG_SETMASK, &pol_sig_saved, NULL);
}

#define POL_NO_SIGNALS \
	int pol_sig_region_ __attribute__((cleanup(pol_sig_leave), unused)) = (pol_sig_enter(), 0)

/* Zeroed memory of the layer's own (never the heap): see the file comment. */
static void *pol_alloc(size_t size)
{
	void *p = mmap(NULL, size ? size : 1, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

static void pol_free(void *p, size_t size)
{
	if (p)
		munmap(p, size ? size : 1);
}

static uint64_t now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static size_t min_sz(size_t a, size_t b)
{
	return a < b ? a : b;
}

/* ---- ranges and records ------------------------------------------------------ */

/* pol->lock held */
static struct uhmm_policy_range *find_range(struct uhmm_policy *pol, uintptr_t a)
{
	for (struct uhmm_policy_range *r = pol->ranges; r; r = r->next)
		if (a >= r->start && a < r->end)
			return r;
	return NULL;
}

static size_t page_idx(const struct uhmm_policy_range *r, uintptr_t a)
{
	return (a - r->start) >> r->pol->shift;
}

static struct block_dev *bdev(struct uhmm_policy_range *r, uintptr_t a, int d)
{
	return &r->blk[(a >> BLOCK_SHIFT) - r->blk0].d[d];
}

static pthread_mutex_t *block_lock(struct uhmm_policy_range *r, uintptr_t a)
{
	return &r->blk[(a >> BLOCK_SHIFT) - r->blk0].lock;
}

/* Bit of @a's page in its block's bitmap. */
static unsigned int bit_of(const struct uhmm_policy *pol, uintptr_t a)
{
	return (unsigned int)((a & (BLOCK_SIZE - 1)) >> pol->shift);
}

static size_t gran_pages(const struct uhmm_policy_range *r)
{
	return r->attr.granularity;
}

static void record_migration(struct uhmm_policy *pol, struct page_meta *pm, uint64_t t)
{
	pm->mig[pm->mig_next] = t;
	pm->mig_next = (uint8_t)((pm->mig_next + 1) % MIG_SLOTS);
	(void)pol;
}

/*
 * Set where page @i is (pol->lock held), moving its charge: the device's
 * and the tenant's usage and the block's resident count.  @moved: a
 * migration (recorded for thrashing detection and the seen bitmap) rather
 * than pages freed or found.
 */
static void set_loc(struct uhmm_policy_range *r, size_t i, int loc, bool moved, uint64_t t)
{
	struct uhmm_policy *pol = r->pol;
	struct page_meta *pm = &r->pm[i];
	uintptr_t a = r->start + (i << pol->shift);
	struct tenant *tn = &pol->tenants[r->attr.tenant];
	int old = pm->loc;

	if (old == loc)
		return;
	if (old >= 0) {
		struct block_dev *b = bdev(r, a, old);
		unsigned int bit = bit_of(pol, a);

		pol->devs[old].used--;
		tn->used[old]--;
		b->resident--;
		b->seen[bit / 64] &= ~(UINT64_C(1) << (bit % 64));
	}
	if (loc >= 0) {
		struct block_dev *b = bdev(r, a, loc);
		unsigned int bit = bit_of(pol, a);

		pol->devs[loc].used++;
		tn->used[loc]++;
		b->resident++;
		b->seen[bit / 64] |= UINT64_C(1) << (bit % 64);
		b->stamp = ++pol->clock;
	}
	pm->loc = (int8_t)loc;
	if (moved)
		record_migration(pol, pm, t);
}

/* Drop page @i's copies (pol->lock held); returns the devices that had one. */
static unsigned int drop_copies(struct uhmm_policy_range *r, size_t i)
{
	struct uhmm_policy *pol = r->pol;
	struct page_meta *pm = &r->pm[i];
	unsigned int had = pm->copies;
	uintptr_t a = r->start + (i << pol->shift);

	for (int d = 0; d < pol->ndev; d++) {
		if (!(had & (1u << d)))
			continue;
		pol->devs[d].used--;
		pol->tenants[r->attr.tenant].used[d]--;
		bdev(r, a, d)->ncopies--;
	}
	pm->copies = 0;
	pm->gen++;
	return had;
}

/*
 * Read what is in each device's memory for [s, e) (inside @r, at most one
 * block) and record it.  Called without pol->lock.
 */
static int refresh_res(struct uhmm_policy_range *r, uintptr_t s, uintptr_t e, bool count_to_dev,
		       uint64_t *arrived, int res_dev, size_t *res)
{
	struct uhmm_policy *pol = r->pol;
	size_t n = (e - s) >> pol->shift;
	uint64_t pfns[MAX_PPB];
	int8_t where[MAX_PPB];
	uint64_t t = now_ns();
	int ret = 0;

	memset(where, UHMM_POLICY_CPU, sizeof(where));
	for (int d = 0; d < pol->ndev; d++) {
		struct uhmm_range rg = {
			.notifier = &r->mni, .start = s, .end = e, .hmm_pfns = pfns,
			.dev_private_owner = pol->devs[d].desc.owner,
		};

		memset(pfns, 0, n * sizeof(*pfns));
		do {
			rg.notifier_seq = uhmm_interval_read_begin(&r->mni);
			ret = uhmm_range_fault(&rg);
		} while (ret == -EBUSY);
		if (ret)
			return ret;
		for (size_t i = 0; i < n; i++)
			if ((pfns[i] & (UHMM_PFN_VALID | UHMM_PFN_DEVICE_PRIVATE | UHMM_PFN_ERROR)) ==
			    (UHMM_PFN_VALID | UHMM_PFN_DEVICE_PRIVATE))
				where[i] = (int8_t)d;
	}
	pthread_mutex_lock(&pol->lock);
	for (size_t i = 0; i < n; i++) {
		size_t pi = page_idx(r, s) + i;
		int old = r->pm[pi].loc;

		if (old == where[i])
			continue;
		if (where[i] >= 0 && arrived)
			(*arrived)++;
		if (where[i] >= 0 && where[i] == res_dev && res && *res) {
			/* The reservation becomes the page's charge. */
			(*res)--;
			pol->devs[res_dev].reserved--;
			pol->tenants[r->attr.tenant].reserved[res_dev]--;
		}
		if (count_to_dev && where[i] >= 0)
			r->st.to_dev_pages++;
		else if (old >= 0 && where[i] < 0)
			r->st.to_sys_pages++;
		set_loc(r, pi, where[i], true, t);
	}
	pthread_mutex_unlock(&pol->lock);
	return 0;
}

static int refresh(struct uhmm_policy_range *r, uintptr_t s, uintptr_t e, bool count_to_dev,
		   uint64_t *arrived)
{
	return refresh_res(r, s, e, count_to_dev, arrived, -1, NULL);
}

/* ---- eviction and reservations ---------------------------------------------- */

struct victim {
	struct uhmm_policy_range *r;
	uintptr_t s, e;		/* the block's part in the range */
};

/*
 * The block to evict from device @d (pol->lock held): a tenant's own
 * least recently used block when @tenant >= 0 (its budget), otherwise the
 * least recently used block of the lowest priority tenant.  Blocks
 * overlapping [xs, xe) (the fault being served) are not taken.
 */
static bool pick_victim(struct uhmm_policy *pol, int d, int tenant, uintptr_t xs, uintptr_t xe,
			struct victim *v)
{
	uint64_t best_stamp = UINT64_MAX;
	int best_prio = INT32_MAX;
	bool found = false;

	for (struct uhmm_policy_range *r = pol->ranges; r; r = r->next) {
		int prio = pol->tenants[r->attr.tenant].priority;

		if (tenant >= 0 && (int)r->attr.tenant != tenant)
			continue;
		for (size_t b = 0; b < r->nblocks; b++) {
			struct block_dev *bd = &r->blk[b].d[d];
			uintptr_t s = (r->blk0 + b) << BLOCK_SHIFT, e = s + BLOCK_SIZE;

			if (!bd->resident && !bd->ncopies)
				continue;
			if (s < r->start)
				s = r->start;
			if (e > r->end)
				e = r->end;
			if (s < xe && xs < e)
				continue;
			if (prio < best_prio || (prio == best_prio && bd->stamp < best_stamp)) {
				best_prio = prio;
				best_stamp = bd->stamp;
				*v = (struct victim){ .r = r, .s = s, .e = e };
				found = true;
			}
		}
	}
	return found;
}

/* Evict block @v from device @d: its pages go home, its copies die. */
static bool evict_block(struct uhmm_policy *pol, int d, struct victim *v)
{
	struct uhmm_policy_range *r = v->r;
	const struct dev *dv = &pol->devs[d];
	size_t n = (v->e - v->s) >> pol->shift;
	uint64_t before, after;
	bool had_copies = false;

	pthread_mutex_lock(block_lock(r, v->s));
	pthread_mutex_lock(&pol->lock);
	before = bdev(r, v->s, d)->resident + bdev(r, v->s, d)->ncopies;
	for (size_t i = page_idx(r, v->s); i < page_idx(r, v->s) + n; i++) {
		if (r->pm[i].copies & (1u << d)) {
			/* Only this device's copy dies; the others stay valid. */
			r->pm[i].copies &= (uint8_t)~(1u << d);
			r->pm[i].gen++;
			pol->devs[d].used--;
			pol->tenants[r->attr.tenant].used[d]--;
			bdev(r, v->s, d)->ncopies--;
			had_copies = true;
		}
	}
	pthread_mutex_unlock(&pol->lock);
	if (had_copies)
		dv->desc.ops->unmap(dv->desc.drv, v->s, n);
	dv->desc.ops->migrate_to_sys(dv->desc.drv, v->s, n);
	refresh(r, v->s, v->e, false, NULL);
	pthread_mutex_unlock(block_lock(r, v->s));
	pthread_mutex_lock(&pol->lock);
	after = bdev(r, v->s, d)->resident + bdev(r, v->s, d)->ncopies;
	if (after < before) {
		r->st.evicted_pages += before - after;
		r->st.evicted_blocks++;
	}
	pthread_mutex_unlock(&pol->lock);
	return after < before;
}

static size_t room(struct uhmm_policy *pol, unsigned int t, int d, bool *budget_bound)
{
	struct dev *dv = &pol->devs[d];
	struct tenant *tn = &pol->tenants[t];
	size_t cap = dv->desc.capacity_pages, bud = tn->budget[d];
	size_t dev_room = cap > dv->used + dv->reserved ? cap - dv->used - dv->reserved : 0;
	size_t ten_room = bud > tn->used[d] + tn->reserved[d] ?
			  bud - tn->used[d] - tn->reserved[d] : 0;

	*budget_bound = ten_room < dev_room;
	return min_sz(dev_room, ten_room);
}

/*
 * Reserve @want pages on device @d for tenant @t, evicting blocks (not
 * those of [xs, xe)) until they fit.  Returns what was reserved: @want,
 * or less when nothing more can be evicted.  Called without pol->lock.
 */
static size_t reserve(struct uhmm_policy *pol, unsigned int t, int d, size_t want,
		      uintptr_t xs, uintptr_t xe)
{
	for (int tries = 0;; tries++) {
		struct victim v;
		bool budget_bound, have;
		size_t got;

		pthread_mutex_lock(&pol->lock);
		got = room(pol, t, d, &budget_bound);
		if (got >= want || (pol->cfg.flags & UHMM_POLICY_NO_EVICT) || tries > 64) {
			got = min_sz(got, want);
			pol->devs[d].reserved += got;
			pol->tenants[t].reserved[d] += got;
			pthread_mutex_unlock(&pol->lock);
			return got;
		}
		have = pick_victim(pol, d, budget_bound ? (int)t : -1, xs, xe, &v);
		if (!have) {
			got = min_sz(got, want);
			pol->devs[d].reserved += got;
			pol->tenants[t].reserved[d] += got;
			pthread_mutex_unlock(&pol->lock);
			return got;
		}
		pthread_mutex_unlock(&pol->lock);
		if (!evict_block(pol, d, &v))
			tries += 16;	/* it would not move: do not insist */
	}
}

static void unreserve(struct uhmm_policy *pol, unsigned int t, int d, size_t n)
{
	pthread_mutex_lock(&pol->lock);
	pol->devs[d].reserved -= n;
	pol->tenants[t].reserved[d] -= n;
	pthread_mutex_unlock(&pol->lock);
}

/* Pages of [s, e) not recorded on device @d (pol->lock held). */
static size_t not_on(struct uhmm_policy_range *r, uintptr_t s, uintptr_t e, int d)
{
	size_t n = 0;

	for (size_t i = page_idx(r, s); i < page_idx(r, e); i++)
		n += r->pm[i].loc != d;
	return n;
}

/*
 * Migrate [s, e) (inside one block of @r) to device @d with a reservation
 * for what may arrive.  Returns pages that arrived (0 if nothing could).
 */
static uint64_t migrate_in(struct uhmm_policy_range *r, int d, uintptr_t s, uintptr_t e,
			   uintptr_t gs, uintptr_t ge)
{
	struct uhmm_policy *pol = r->pol;
	const struct dev *dv = &pol->devs[d];
	unsigned int t;
	uint64_t arrived = 0;
	size_t need, got = 0;

	/* uhmm_policy_range_set() changes the attributes under pol->lock. */
	pthread_mutex_lock(&pol->lock);
	t = r->attr.tenant;
	pthread_mutex_unlock(&pol->lock);

	/*
	 * What may arrive is counted under the block's lock (no other
	 * migration or eviction of the block meanwhile), and reserved
	 * without it (a reservation may evict other blocks, taking their
	 * locks).  A page the CPU takes back meanwhile frees the place its
	 * return takes.
	 */
	for (;;) {
		size_t more;

		pthread_mutex_lock(block_lock(r, s));
		pthread_mutex_lock(&pol->lock);
		need = not_on(r, s, e, d);
		pthread_mutex_unlock(&pol->lock);
		if (need <= got)
			break;
		pthread_mutex_unlock(block_lock(r, s));
		more = reserve(pol, t, d, need - got, s, e);
		got += more;
		if (got >= need)
			continue;
		/* No room for all of it: the granule alone, or nothing. */
		if (s == gs && e == ge) {
			unreserve(pol, t, d, got);
			return 0;
		}
		s = gs;
		e = ge;
	}
	if (need) {
		dv->desc.ops->migrate_to_dev(dv->desc.drv, s, (e - s) >> pol->shift);
		refresh_res(r, s, e, true, &arrived, d, &got);
	}
	pthread_mutex_unlock(block_lock(r, s));
	unreserve(pol, t, d, got);
	return arrived;
}

/* ---- read-mostly ------------------------------------------------------------- */

static void register_segv(void);

/* Bumped by every collapse, after it gave write access back (for pol_segv()). */
static atomic_ulong unprotects;

/*
 * Drop every copy of granule @g and give the CPU write access back
 * (r->rm_lock held).  The copies are marked dead first, then unmapped
 * from every device that had one, then the CPU may write: no device reads
 * a copy once the page can change.
 */
static void collapse(struct uhmm_policy_range *r, size_t g)
{
	struct uhmm_policy *pol = r->pol;
	size_t gp = gran_pages(r);
	size_t i0 = g * gp, i1 = min_sz(i0 + gp, r->npages);
	uintptr_t s = r->start + (i0 << pol->shift), e = r->start + (i1 << pol->shift);
	unsigned int had = 0;

	pthread_mutex_lock(&pol->lock);
	if (!r->rm_prot[g]) {
		pthread_mutex_unlock(&pol->lock);
		return;
	}
	r->rm_prot[g] = 0;
	for (size_t i = i0; i < i1; i++)
		had |= drop_copies(r, i);
	if (had)
		r->st.collapses++;
	pthread_mutex_unlock(&pol->lock);
	for (int d = 0; d < pol->ndev; d++)
		if (had & (1u << d))
			pol->devs[d].desc.ops->unmap(pol->devs[d].desc.drv, s, i1 - i0);
	mprotect((void *)s, e - s, PROT_READ | PROT_WRITE);
	atomic_fetch_add(&unprotects, 1);	/* for the SIGSEGV handler */
}

/* Write-protect granule @g again so copies may be made (r->rm_lock held). */
static int reprotect(struct uhmm_policy_range *r, size_t g)
{
	struct uhmm_policy *pol = r->pol;
	size_t gp = gran_pages(r);
	size_t i0 = g * gp, i1 = min_sz(i0 + gp, r->npages);
	uintptr_t s = r->start + (i0 << pol->shift), e = r->start + (i1 << pol->shift);

	/* The invalidation drops every device's writable mapping of it. */
	if (mprotect((void *)s, e - s, PROT_READ))
		return -errno;
	pthread_mutex_lock(&pol->lock);
	r->rm_prot[g] = 1;
	pthread_mutex_unlock(&pol->lock);
	return 0;
}

static int rm_fault(struct uhmm_policy_range *r, int d, struct uhmm_policy_fault *f)
{
	struct uhmm_policy *pol = r->pol;
	uintptr_t a = f->addr & ~(uintptr_t)(pol->ps - 1);
	size_t i = page_idx(r, a), g;
	struct block_dev *b;
	struct page_meta *pm = &r->pm[i];
	uint32_t gen;
	char *copy;
	int ret = UHMM_POLICY_FAULT_MAP;

	pthread_mutex_lock(&r->rm_lock);
	/*
	 * uhmm_policy_range_set() may have cleared read-mostly between the
	 * caller's look and this lock: then neither re-protect nor copy (the
	 * CPU's next write would have no collapse to serve it), map the page.
	 * The attributes (the granularity too) change only under both locks.
	 */
	pthread_mutex_lock(&pol->lock);
	if (!r->attr.read_mostly) {
		pthread_mutex_unlock(&pol->lock);
		goto out;
	}
	g = i / gran_pages(r);
	pthread_mutex_unlock(&pol->lock);
	if (f->write) {
		collapse(r, g);
		pthread_mutex_lock(&pol->lock);
		r->st.remote_maps++;
		pthread_mutex_unlock(&pol->lock);
		goto out;
	}
	if (!r->rm_prot[g] && reprotect(r, g))
		goto out;
	pthread_mutex_lock(&pol->lock);
	b = bdev(r, a, d);
	b->stamp = ++pol->clock;
	if (pm->copies & (1u << d)) {
		f->copy = b->copy_area + ((a & (BLOCK_SIZE - 1)));
		f->cookie = pm->gen;
		pthread_mutex_unlock(&pol->lock);
		ret = UHMM_POLICY_FAULT_COPY;
		goto out;
	}
	pthread_mutex_unlock(&pol->lock);
	if (!b->copy_area) {
		/* rm_lock keeps this block's area from being mapped twice. */
		char *area = mmap(NULL, BLOCK_SIZE, PROT_READ | PROT_WRITE,
				  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

		if (area == MAP_FAILED)
			goto remote;
		pthread_mutex_lock(&pol->lock);
		b->copy_area = area;
		pthread_mutex_unlock(&pol->lock);
	}
	if (reserve(pol, r->attr.tenant, d, 1, a, a + pol->ps) < 1) {
		unreserve(pol, r->attr.tenant, d, 0);
		goto remote;
	}
	pthread_mutex_lock(&pol->lock);
	gen = pm->gen;
	pthread_mutex_unlock(&pol->lock);
	copy = b->copy_area + (a & (BLOCK_SIZE - 1));
	/*
	 * The page is write-protected: no one changes it while it is copied.
	 * Word by word with relaxed atomic loads, as a device reads memory
	 * the CPU may have written just before the protection (a sanitizer
	 * cannot see that mprotect orders them).
	 */
	for (size_t w = 0; w < pol->ps / 8; w++)
		((uint64_t *)(void *)copy)[w] =
			__atomic_load_n((const uint64_t *)a + w, __ATOMIC_RELAXED);
	pthread_mutex_lock(&pol->lock);
	pol->devs[d].reserved--;
	pol->tenants[r->attr.tenant].reserved[d]--;
	if (pm->gen == gen && r->rm_prot[g]) {
		pm->copies |= (uint8_t)(1u << d);
		pol->devs[d].used++;
		pol->tenants[r->attr.tenant].used[d]++;
		b->ncopies++;
		r->st.duplicated++;
		f->copy = copy;
		f->cookie = gen;
		ret = UHMM_POLICY_FAULT_COPY;
	} else {
		r->st.remote_maps++;
	}
	pthread_mutex_unlock(&pol->lock);
	goto out;
remote:
	pthread_mutex_lock(&pol->lock);
	r->st.remote_maps++;
	pthread_mutex_unlock(&pol->lock);
out:
	pthread_mutex_unlock(&r->rm_lock);
	return ret;
}

/* The layer's SIGSEGV handler: a CPU write to a write-protected read-mostly page. */
static _Atomic(struct uhmm_policy *) policies[MAX_POLICIES];
static struct sigaction old_segv;
static pthread_mutex_t segv_lock = PTHREAD_MUTEX_INITIALIZER;
static bool segv_installed;
static __thread __attribute__((tls_model("initial-exec"))) uintptr_t segv_last;
static __thread __attribute__((tls_model("initial-exec"))) unsigned long segv_seen;
static __thread __attribute__((tls_model("initial-exec"))) unsigned int segv_repeat;

static void pol_segv(int sig, siginfo_t *si, void *uc)
{
	uintptr_t a = (uintptr_t)si->si_addr;

	if (si->si_code == SEGV_ACCERR) {
		bool ours = false;
		unsigned long seen;

		for (int k = 0; k < MAX_POLICIES; k++) {
			struct uhmm_policy *pol = atomic_load(&policies[k]);
			struct uhmm_policy_range *r;
			size_t g = 0;
			bool rm = false;

			if (!pol)
				continue;
			pthread_mutex_lock(&pol->lock);
			r = find_range(pol, a);
			if (r && r->attr.read_mostly) {
				rm = true;
				g = page_idx(r, a) / gran_pages(r);
			}
			pthread_mutex_unlock(&pol->lock);
			if (rm) {
				pthread_mutex_lock(&r->rm_lock);
				pthread_mutex_lock(&pol->lock);
				ours = r->rm_prot[g];
				pthread_mutex_unlock(&pol->lock);
				collapse(r, g);
				pthread_mutex_unlock(&r->rm_lock);
				break;
			}
		}
		/*
		 * A fault the layer protected is always retried.  One it did
		 * not protect now was usually served first by another thread's
		 * collapse, or read-mostly was cleared (or the range removed)
		 * between the fault and this look: the page is writable again,
		 * retry.  If the program protected it itself, the same write
		 * faults again with no collapse anywhere in between: then it
		 * goes to the handler that was there before.  (Counting such
		 * faults per address over the thread's life killed a thread
		 * whose writes lost that race three times: round 5 hunt.)
		 */
		seen = atomic_load(&unprotects);
		if (ours) {
			segv_last = 0;
			return;
		}
		if (segv_last != a || (segv_seen != seen && ++segv_repeat < 100000)) {
			if (segv_last != a)
				segv_repeat = 0;
			segv_last = a;
			segv_seen = seen;
			return;		/* the write is retried */
		}
		segv_last = 0;
	}
	/* Not ours: as if the layer were not there. */
	if (old_segv.sa_flags & SA_SIGINFO) {
		old_segv.sa_sigaction(sig, si, uc);
	} else if (old_segv.sa_handler != SIG_DFL && old_segv.sa_handler != SIG_IGN) {
		old_segv.sa_handler(sig);
	} else {
		signal(SIGSEGV, SIG_DFL);	/* the access faults again and kills */
	}
}

/*
 * A fork child: the layer's devices, threads and lock holders are the
 * parent's.  The child's copy of a read-mostly range must stay writable
 * memory, as the kernel gives a child a private copy-on-write copy: give
 * every read-mostly range write access back and forget the policies, so
 * a write there never reaches pol_segv() (which would wait for locks held
 * by parent threads at the fork, or for device threads that are not here,
 * with asynchronous signals blocked: round 5 hunt).  The list is read
 * without pol->lock, which another parent thread may have held; a range
 * is unlinked before it is freed, so a linked one is whole.  The parent's
 * policies cannot be used in the child.
 */
static void pol_atfork_child(void)
{
	for (int k = 0; k < MAX_POLICIES; k++) {
		struct uhmm_policy *pol = atomic_load(&policies[k]);

		if (!pol)
			continue;
		for (struct uhmm_policy_range *r = pol->ranges; r; r = r->next)
			if (r->attr.read_mostly)
				mprotect((void *)r->start, r->end - r->start,
					 PROT_READ | PROT_WRITE);
		atomic_store(&policies[k], NULL);
	}
}

static void register_segv(void)
{
	static bool atfork_done;

	pthread_mutex_lock(&segv_lock);
	if (!atfork_done && !pthread_atfork(NULL, NULL, pol_atfork_child))
		atfork_done = true;
	if (!segv_installed) {
		struct sigaction sa;

		memset(&sa, 0, sizeof(sa));
		sa.sa_sigaction = pol_segv;
		sa.sa_flags = SA_SIGINFO | SA_RESTART;
		sa.sa_mask = pol_async_set;
		if (!sigaction(SIGSEGV, &sa, &old_segv))
			segv_installed = true;
	}
	pthread_mutex_unlock(&segv_lock);
}

/* Bring the range home from every device and write-protect it. */
static int rm_enable(struct uhmm_policy_range *r)
{
	struct uhmm_policy *pol = r->pol;

	register_segv();
	pthread_mutex_lock(&r->rm_lock);
	for (uintptr_t s = r->start; s < r->end;) {
		uintptr_t e = ((s >> BLOCK_SHIFT) + 1) << BLOCK_SHIFT;

		if (e > r->end)
			e = r->end;
		pthread_mutex_lock(block_lock(r, s));
		for (int d = 0; d < pol->ndev; d++)
			pol->devs[d].desc.ops->migrate_to_sys(pol->devs[d].desc.drv, s,
							     (e - s) >> pol->shift);
		refresh(r, s, e, false, NULL);
		pthread_mutex_unlock(block_lock(r, s));
		s = e;
	}
	if (mprotect((void *)r->start, r->end - r->start, PROT_READ)) {
		int err = errno;

		pthread_mutex_unlock(&r->rm_lock);
		return uhmm_set_error(err, "policy: read-mostly: mprotect failed");
	}
	pthread_mutex_lock(&pol->lock);
	memset(r->rm_prot, 1, r->ngran);
	pthread_mutex_unlock(&pol->lock);
	pthread_mutex_unlock(&r->rm_lock);
	return 0;
}

/*
 * Drop every copy, give write access back, and stop being read-mostly
 * before rm_lock is released: a device read fault that found the range
 * read-mostly and waits for rm_lock must then see it is no longer
 * (rm_fault()), or it would write-protect a granule again that no
 * SIGSEGV would collapse any more (round 5 hunt).
 */
static void rm_disable(struct uhmm_policy_range *r)
{
	pthread_mutex_lock(&r->rm_lock);
	for (size_t g = 0; g < r->ngran; g++)
		collapse(r, g);
	pthread_mutex_lock(&r->pol->lock);
	r->attr.read_mostly = false;
	pthread_mutex_unlock(&r->pol->lock);
	pthread_mutex_unlock(&r->rm_lock);
}

/* ---- the layer's notifier: copies die when the CPU side changes --------- */

static bool pol_invalidate(struct uhmm_interval_notifier *mni,
			   const struct uhmm_notifier_range *nr, unsigned long cur_seq)
{
	struct uhmm_policy_range *r = (struct uhmm_policy_range *)mni;
	struct uhmm_policy *pol = r->pol;
	uintptr_t s = nr->start > r->start ? nr->start : r->start;
	uintptr_t e = nr->end && nr->end < r->end ? nr->end : r->end;
	bool gone = nr->event == UHMM_NOTIFY_UNMAP || nr->event == UHMM_NOTIFY_DISCARD ||
		    nr->event == UHMM_NOTIFY_RELEASE;
	unsigned int had = 0;

	pthread_mutex_lock(&pol->lock);
	uhmm_interval_set_seq(mni, cur_seq);
	if (nr->event != UHMM_NOTIFY_MIGRATE && nr->event != UHMM_NOTIFY_PROTECTION &&
	    nr->event != UHMM_NOTIFY_FORK && s < e) {
		for (size_t i = page_idx(r, s); i < page_idx(r, e); i++) {
			if (r->pm[i].copies)
				had |= drop_copies(r, i);
			/* Device pages of a discarded or unmapped range are freed. */
			if (gone && r->pm[i].loc >= 0)
				set_loc(r, i, UHMM_POLICY_CPU, false, 0);
		}
	}
	pthread_mutex_unlock(&pol->lock);
	/*
	 * A dead copy may still be mapped in a device's page table: the
	 * device mapped it from the layer's fault hook, not through a mirror
	 * of its own that this invalidation reaches.  Unmap it from each
	 * device that had one, as collapse() does, before the CPU side
	 * changes (driver locks come before pol->lock: after releasing it).
	 */
	for (int d = 0; d < pol->ndev; d++)
		if (had & (1u << d))
			pol->devs[d].desc.ops->unmap(pol->devs[d].desc.drv, s,
						     (e - s) >> pol->shift);
	return true;
}

static const struct uhmm_interval_notifier_ops pol_mni_ops = {
	.invalidate = pol_invalidate,
};

/* ---- create / destroy / devices / budgets -------------------------------------- */

int uhmm_policy_create(struct uhmm_mm *mm, const struct uhmm_policy_config *cfg,
		       struct uhmm_policy **out)
{
	POL_NO_SIGNALS;
	struct uhmm_policy *pol;
	struct uhmm_mm *ref;
	int ret;

	if (!mm || !out)
		return uhmm_set_error(EINVAL, "policy create: NULL %s", !mm ? "context" : "out");
	*out = NULL;
	if (cfg && (cfg->thrash_mitigation > UHMM_POLICY_THRASH_THROTTLE ||
		    (cfg->flags & ~(UHMM_POLICY_NO_DENSITY | UHMM_POLICY_NO_EVICT)) ||
		    (cfg->prefetch_batch & (cfg->prefetch_batch - 1)) ||
		    cfg->thrash_count > MIG_SLOTS + 1))
		return uhmm_set_error(EINVAL, "policy create: bad configuration (mitigation, "
				      "flags, prefetch batch not a power of two, or more "
				      "than %d thrash migrations)", MIG_SLOTS + 1);
	ret = uhmm_mm_get(&ref);
	if (ret)
		return ret;
	pol = pol_alloc(sizeof(*pol));
	if (!pol) {
		uhmm_mm_put(ref);
		return uhmm_set_error(ENOMEM, "policy create: out of memory");
	}
	pol->mm = ref;
	(void)mm;
	if (cfg)
		pol->cfg = *cfg;
	if (!pol->cfg.density_percent)
		pol->cfg.density_percent = 51;
	if (!pol->cfg.thrash_count)
		pol->cfg.thrash_count = 3;
	if (pol->cfg.thrash_count < 2)
		pol->cfg.thrash_count = 2;
	if (!pol->cfg.thrash_window_ns)
		pol->cfg.thrash_window_ns = 500 * 1000;
	if (!pol->cfg.throttle_ns)
		pol->cfg.throttle_ns = 500 * 1000;
	pol->ps = (size_t)sysconf(_SC_PAGESIZE);
	pol->shift = (unsigned int)__builtin_ctzl(pol->ps);
	pol->ppb = BLOCK_SIZE >> pol->shift;
	if (!pol->cfg.prefetch_batch || pol->cfg.prefetch_batch > pol->ppb)
		pol->cfg.prefetch_batch = pol->ppb;
	for (int t = 0; t < UHMM_POLICY_MAX_TENANTS; t++)
		for (int d = 0; d < UHMM_POLICY_MAX_DEVS; d++)
			pol->tenants[t].budget[d] = SIZE_MAX;
	pthread_mutex_init(&pol->lock, NULL);
	pthread_cond_init(&pol->pf_cond, NULL);
	pthread_cond_init(&pol->pf_done, NULL);
	for (int k = 0; k < MAX_POLICIES; k++) {
		struct uhmm_policy *expect = NULL;

		if (atomic_compare_exchange_strong(&policies[k], &expect, pol)) {
			*out = pol;
			return 0;
		}
	}
	pthread_mutex_destroy(&pol->lock);
	uhmm_mm_put(ref);
	pol_free(pol, sizeof(*pol));
	return uhmm_set_error(ENOSPC, "policy create: more than %d policies", MAX_POLICIES);
}

int uhmm_policy_dev_add(struct uhmm_policy *pol, const struct uhmm_policy_dev_desc *desc)
{
	POL_NO_SIGNALS;
	int id;

	if (!pol || !desc || !desc->ops || !desc->ops->migrate_to_dev ||
	    !desc->ops->migrate_to_sys || !desc->ops->unmap || !desc->owner ||
	    !desc->capacity_pages)
		return uhmm_set_error(EINVAL, "policy dev add: NULL policy, description, "
				      "operation or owner, or zero capacity");
	pthread_mutex_lock(&pol->lock);
	if (pol->ndev >= UHMM_POLICY_MAX_DEVS) {
		pthread_mutex_unlock(&pol->lock);
		return uhmm_set_error(ENOSPC, "policy dev add: %d devices already",
				      UHMM_POLICY_MAX_DEVS);
	}
	id = pol->ndev;
	pol->devs[id].desc = *desc;
	snprintf(pol->devs[id].name, sizeof(pol->devs[id].name), "%s",
		 desc->name ? desc->name : "");
	if (!desc->name)
		snprintf(pol->devs[id].name, sizeof(pol->devs[id].name), "dev%d", id);
	pol->devs[id].desc.name = pol->devs[id].name;
	pol->ndev++;
	pthread_mutex_unlock(&pol->lock);
	return id;
}

const char *uhmm_policy_dev_name(struct uhmm_policy *pol, int dev)
{
	if (!pol || dev < 0 || dev >= pol->ndev)
		return NULL;
	return pol->devs[dev].name;
}

int uhmm_policy_set_budget(struct uhmm_policy *pol, unsigned int tenant, int dev,
			   size_t max_pages, int priority)
{
	POL_NO_SIGNALS;

	if (!pol || tenant >= UHMM_POLICY_MAX_TENANTS || dev < 0 || dev >= pol->ndev)
		return uhmm_set_error(EINVAL, "policy set budget: NULL policy or unknown "
				      "tenant or device");
	pthread_mutex_lock(&pol->lock);
	pol->tenants[tenant].budget[dev] = max_pages;
	pol->tenants[tenant].priority = priority;
	pthread_mutex_unlock(&pol->lock);
	return 0;
}

size_t uhmm_policy_tenant_pages(struct uhmm_policy *pol, unsigned int tenant, int dev)
{
	POL_NO_SIGNALS;
	size_t n;

	if (!pol || tenant >= UHMM_POLICY_MAX_TENANTS || dev < 0 || dev >= pol->ndev)
		return 0;
	pthread_mutex_lock(&pol->lock);
	n = pol->tenants[tenant].used[dev] + pol->tenants[tenant].reserved[dev];
	pthread_mutex_unlock(&pol->lock);
	return n;
}

/* ---- ranges -------------------------------------------------------------------- */

static int check_attr(struct uhmm_policy *pol, const struct uhmm_policy_attr *a)
{
	if (a->preferred != UHMM_POLICY_NONE && a->preferred != UHMM_POLICY_CPU &&
	    (a->preferred < 0 || a->preferred >= pol->ndev))
		return uhmm_set_error(EINVAL, "policy: unknown preferred location %d",
				      a->preferred);
	if (a->granularity && ((a->granularity & (a->granularity - 1)) ||
			       a->granularity > pol->ppb))
		return uhmm_set_error(EINVAL, "policy: granularity %zu is not a power of two "
				      "up to %zu pages", a->granularity, pol->ppb);
	if (a->tenant >= UHMM_POLICY_MAX_TENANTS)
		return uhmm_set_error(EINVAL, "policy: unknown tenant %u", a->tenant);
	return 0;
}

static void range_free(struct uhmm_policy_range *r)
{
	for (size_t b = 0; r->blk && b < r->nblocks; b++)
		for (int d = 0; d < UHMM_POLICY_MAX_DEVS; d++)
			if (r->blk[b].d[d].copy_area)
				munmap(r->blk[b].d[d].copy_area, BLOCK_SIZE);
	/* (block mutexes hold no resources: nothing to destroy) */
	pol_free(r->pm, r->alloc_pm);
	pol_free(r->blk, r->alloc_blk);
	pol_free(r->rm_prot, r->alloc_rm);
	pthread_mutex_destroy(&r->rm_lock);
	pol_free(r, sizeof(*r));
}

int uhmm_policy_range_add(struct uhmm_policy *pol, void *addr, size_t len,
			  const struct uhmm_policy_attr *attr, struct uhmm_policy_range **out)
{
	POL_NO_SIGNALS;
	struct uhmm_policy_attr def = { .preferred = UHMM_POLICY_NONE };
	uintptr_t s = (uintptr_t)addr;
	struct uhmm_policy_range *r;
	int ret;

	if (!pol || !out)
		return uhmm_set_error(EINVAL, "policy range add: NULL %s", !pol ? "policy" : "out");
	*out = NULL;
	if ((s | len) & (pol->ps - 1) || !len || s + len < s)
		return uhmm_set_error(EINVAL, "policy range add: %zu bytes at %p: unaligned, "
				      "empty or wrapping", len, addr);
	if (!attr)
		attr = &def;
	ret = check_attr(pol, attr);
	if (ret)
		return ret;
	r = pol_alloc(sizeof(*r));
	if (!r)
		return uhmm_set_error(ENOMEM, "policy range add: out of memory");
	r->pol = pol;
	r->start = s;
	r->end = s + len;
	r->npages = len >> pol->shift;
	r->blk0 = s >> BLOCK_SHIFT;
	r->nblocks = ((r->end - 1) >> BLOCK_SHIFT) - r->blk0 + 1;
	r->attr = *attr;
	if (!r->attr.granularity)
		r->attr.granularity = min_sz(DEFAULT_GRAN, pol->ppb);
	r->ngran = (r->npages + r->attr.granularity - 1) / r->attr.granularity;
	r->alloc_pm = r->npages * sizeof(*r->pm);
	r->alloc_blk = r->nblocks * sizeof(*r->blk);
	r->alloc_rm = r->npages;	/* enough for any granularity set later */
	r->pm = pol_alloc(r->alloc_pm);
	r->blk = pol_alloc(r->alloc_blk);
	r->rm_prot = pol_alloc(r->alloc_rm);
	pthread_mutex_init(&r->rm_lock, NULL);
	if (!r->pm || !r->blk || !r->rm_prot) {
		range_free(r);
		return uhmm_set_error(ENOMEM, "policy range add: out of memory");
	}
	for (size_t i = 0; i < r->npages; i++)
		r->pm[i].loc = UHMM_POLICY_CPU;
	for (size_t b = 0; b < r->nblocks; b++)
		pthread_mutex_init(&r->blk[b].lock, NULL);
	r->st.npages = r->npages;
	pthread_mutex_lock(&pol->lock);
	for (struct uhmm_policy_range *o = pol->ranges; o; o = o->next) {
		if (o->start < r->end && r->start < o->end) {
			pthread_mutex_unlock(&pol->lock);
			range_free(r);
			return uhmm_set_error(EEXIST, "policy range add: overlaps a range at %#lx",
					      (unsigned long)o->start);
		}
	}
	pthread_mutex_unlock(&pol->lock);
	ret = uhmm_interval_notifier_insert(&r->mni, pol->mm, s, len, &pol_mni_ops);
	if (ret) {
		range_free(r);
		return ret;
	}
	pthread_mutex_lock(&pol->lock);
	r->next = pol->ranges;
	pol->ranges = r;
	pthread_mutex_unlock(&pol->lock);
	/* What is on a device already counts against the budget. */
	for (uintptr_t a = r->start; a < r->end;) {
		uintptr_t e = ((a >> BLOCK_SHIFT) + 1) << BLOCK_SHIFT;

		if (e > r->end)
			e = r->end;
		pthread_mutex_lock(block_lock(r, a));
		refresh(r, a, e, false, NULL);
		pthread_mutex_unlock(block_lock(r, a));
		a = e;
	}
	if (r->attr.read_mostly) {
		ret = rm_enable(r);
		if (ret) {
			uhmm_policy_range_remove(r);
			return ret;
		}
	}
	*out = r;
	return 0;
}

int uhmm_policy_range_set(struct uhmm_policy_range *r, const struct uhmm_policy_attr *attr)
{
	POL_NO_SIGNALS;
	struct uhmm_policy *pol;
	bool was_rm;
	int ret;

	if (!r || !attr)
		return uhmm_set_error(EINVAL, "policy range set: NULL argument");
	pol = r->pol;
	ret = check_attr(pol, attr);
	if (ret)
		return ret;
	was_rm = r->attr.read_mostly;
	if (was_rm)
		rm_disable(r);
	/*
	 * The attributes change under rm_lock and pol->lock: a read-mostly
	 * path (rm_fault(), collapse()) reads them under either.
	 */
	pthread_mutex_lock(&r->rm_lock);
	pthread_mutex_lock(&pol->lock);
	if (attr->tenant != r->attr.tenant) {
		/* Move the charge. */
		for (size_t i = 0; i < r->npages; i++) {
			int l = r->pm[i].loc;

			if (l >= 0) {
				pol->tenants[r->attr.tenant].used[l]--;
				pol->tenants[attr->tenant].used[l]++;
			}
		}
	}
	r->attr = *attr;
	if (!r->attr.granularity)
		r->attr.granularity = min_sz(DEFAULT_GRAN, pol->ppb);
	r->ngran = (r->npages + r->attr.granularity - 1) / r->attr.granularity;
	for (size_t i = 0; i < r->npages; i++) {
		if (r->pm[i].flags & PM_PINNED)
			r->st.pinned--;
		r->pm[i].flags &= (uint8_t)~PM_PINNED;
		memset(r->pm[i].mig, 0, sizeof(r->pm[i].mig));
	}
	pthread_mutex_unlock(&pol->lock);
	pthread_mutex_unlock(&r->rm_lock);
	if (attr->read_mostly)
		return rm_enable(r);
	return 0;
}

void uhmm_policy_range_remove(struct uhmm_policy_range *r)
{
	POL_NO_SIGNALS;
	struct uhmm_policy *pol;

	if (!r)
		return;
	pol = r->pol;
	if (r->attr.read_mostly)
		rm_disable(r);
	uhmm_interval_notifier_remove(&r->mni);
	pthread_mutex_lock(&pol->lock);
	for (struct uhmm_policy_range **pp = &pol->ranges; *pp; pp = &(*pp)->next) {
		if (*pp == r) {
			*pp = r->next;
			break;
		}
	}
	for (size_t i = 0; i < r->npages; i++) {
		drop_copies(r, i);
		set_loc(r, i, UHMM_POLICY_CPU, false, 0);
	}
	pthread_mutex_unlock(&pol->lock);
	range_free(r);
}

struct uhmm_policy_range *uhmm_policy_range_find(struct uhmm_policy *pol, const void *addr)
{
	POL_NO_SIGNALS;
	struct uhmm_policy_range *r;

	if (!pol)
		return NULL;
	pthread_mutex_lock(&pol->lock);
	r = find_range(pol, (uintptr_t)addr);
	pthread_mutex_unlock(&pol->lock);
	return r;
}

int uhmm_policy_range_stats(struct uhmm_policy_range *r, bool exact, struct uhmm_policy_stats *out)
{
	POL_NO_SIGNALS;
	struct uhmm_policy *pol;

	if (!r || !out)
		return uhmm_set_error(EINVAL, "policy range stats: NULL argument");
	pol = r->pol;
	if (exact) {
		for (uintptr_t a = r->start; a < r->end;) {
			uintptr_t e = ((a >> BLOCK_SHIFT) + 1) << BLOCK_SHIFT;
			int ret;

			if (e > r->end)
				e = r->end;
			pthread_mutex_lock(block_lock(r, a));
			ret = refresh(r, a, e, false, NULL);
			pthread_mutex_unlock(block_lock(r, a));
			if (ret)
				return ret;
			a = e;
		}
	}
	pthread_mutex_lock(&pol->lock);
	*out = r->st;
	out->npages = r->npages;
	out->resident_cpu = 0;
	memset(out->resident_dev, 0, sizeof(out->resident_dev));
	memset(out->copies_dev, 0, sizeof(out->copies_dev));
	for (size_t i = 0; i < r->npages; i++) {
		int l = r->pm[i].loc;

		if (l >= 0)
			out->resident_dev[l]++;
		else
			out->resident_cpu++;
		for (int d = 0; d < pol->ndev; d++)
			out->copies_dev[d] += (r->pm[i].copies >> d) & 1;
	}
	pthread_mutex_unlock(&pol->lock);
	return 0;
}

/* ---- device faults ----------------------------------------------------------------- */

static bool thrashing(struct uhmm_policy *pol, const struct page_meta *pm, uint64_t t)
{
	unsigned int n = 0;

	for (int k = 0; k < MIG_SLOTS; k++)
		if (pm->mig[k] && t - pm->mig[k] <= pol->cfg.thrash_window_ns)
			n++;
	/* This migration would be the thrash_count-th within the window. */
	return n + 1 >= pol->cfg.thrash_count;
}

/*
 * Density prefetch (pol->lock held): the largest aligned region of @a's
 * block, from the granule [*s, *e) up, more than density_percent of which
 * is resident or faulted once this fault's granule is counted.
 */
static void density(struct uhmm_policy_range *r, int d, uintptr_t a, uintptr_t *s, uintptr_t *e)
{
	struct uhmm_policy *pol = r->pol;
	struct block_dev *b = bdev(r, a, d);
	uint64_t seen[BITMAP_WORDS];
	uintptr_t blk = a & ~(BLOCK_SIZE - 1);

	memcpy(seen, b->seen, sizeof(seen));
	for (uintptr_t p = *s; p < *e; p += pol->ps) {
		unsigned int bit = bit_of(pol, p);

		seen[bit / 64] |= UINT64_C(1) << (bit % 64);
	}
	memcpy(b->seen, seen, sizeof(seen));	/* faulted counts from now on */
	if (pol->cfg.density_percent > 100 || (pol->cfg.flags & UHMM_POLICY_NO_DENSITY))
		return;
	for (size_t size = gran_pages(r) * 2; size <= pol->ppb; size *= 2) {
		uintptr_t rs = blk + (((a - blk) >> pol->shift) / size * size << pol->shift);
		uintptr_t re = rs + (size << pol->shift);
		unsigned int b0 = bit_of(pol, rs), cnt = 0;

		for (unsigned int k = b0; k < b0 + size; k++)
			cnt += (seen[k / 64] >> (k % 64)) & 1;
		if ((uint64_t)cnt * 100 > (uint64_t)pol->cfg.density_percent * size) {
			*s = rs > r->start ? rs : r->start;
			*e = re < r->end ? re : r->end;
		}
	}
}

int uhmm_policy_device_fault(struct uhmm_policy *pol, int d, struct uhmm_policy_fault *f)
{
	POL_NO_SIGNALS;
	struct uhmm_policy_range *r;
	struct page_meta *pm;
	uintptr_t a, gs, ge, ws, we;
	size_t gbytes;
	uint64_t t, arrived;
	bool throttle = false;

	if (!pol || !f || d < 0 || d >= pol->ndev)
		return uhmm_set_error(EINVAL, "policy device fault: NULL argument or unknown "
				      "device");
	a = f->addr & ~(uintptr_t)(pol->ps - 1);
	f->copy = NULL;
	f->cookie = 0;
	pthread_mutex_lock(&pol->lock);
	r = find_range(pol, a);
	if (!r) {
		pthread_mutex_unlock(&pol->lock);
		return UHMM_POLICY_FAULT_MAP;
	}
	r->st.dev_faults[d]++;
	if (r->attr.read_mostly) {
		pthread_mutex_unlock(&pol->lock);
		return rm_fault(r, d, f);
	}
	pm = &r->pm[page_idx(r, a)];
	t = now_ns();
	bdev(r, a, d)->stamp = ++pol->clock;
	if ((pm->flags & PM_PINNED) && pm->pin_until && t >= pm->pin_until) {
		pm->flags &= (uint8_t)~PM_PINNED;
		memset(pm->mig, 0, sizeof(pm->mig));
		r->st.pinned--;
	}
	if (pm->loc == d) {
		pthread_mutex_unlock(&pol->lock);
		return UHMM_POLICY_FAULT_MAP;
	}
	if ((pm->flags & PM_PINNED) || (r->attr.accessed_by & (1u << d)) ||
	    r->attr.preferred == UHMM_POLICY_CPU ||
	    (r->attr.preferred >= 0 && r->attr.preferred != d))
		goto remote;
	if (thrashing(pol, pm, t)) {
		r->st.thrash_events++;
		switch (pol->cfg.thrash_mitigation) {
		case UHMM_POLICY_THRASH_PIN:
			pm->flags |= PM_PINNED;
			pm->pin_until = pol->cfg.pin_ns ? t + pol->cfg.pin_ns : 0;
			r->st.pinned++;
			goto remote;
		case UHMM_POLICY_THRASH_THROTTLE:
			r->st.throttled++;
			throttle = true;
			break;
		default:
			break;
		}
	}
	gbytes = gran_pages(r) << pol->shift;
	gs = a & ~(uintptr_t)(gbytes - 1);
	ge = gs + gbytes;
	if (gs < r->start)
		gs = r->start;
	if (ge > r->end)
		ge = r->end;
	ws = gs;
	we = ge;
	density(r, d, a, &ws, &we);
	pthread_mutex_unlock(&pol->lock);
	if (throttle) {
		struct timespec ts = {
			.tv_sec = (time_t)(pol->cfg.throttle_ns / 1000000000u),
			.tv_nsec = (long)(pol->cfg.throttle_ns % 1000000000u),
		};

		nanosleep(&ts, NULL);
	}
	arrived = migrate_in(r, d, ws, we, gs, ge);
	pthread_mutex_lock(&pol->lock);
	if (arrived && (we - ws) > (ge - gs)) {
		uint64_t in_gran = 0;

		/* What density brought beyond the granule. */
		for (size_t i = page_idx(r, gs); i < page_idx(r, ge); i++)
			in_gran += r->pm[i].loc == d;
		if (arrived > in_gran)
			r->st.density_pages += arrived - in_gran;
	}
	if (!arrived && r->pm[page_idx(r, a)].loc != d)
		r->st.remote_maps++;
	pthread_mutex_unlock(&pol->lock);
	return UHMM_POLICY_FAULT_MAP;

remote:
	r->st.remote_maps++;
	pthread_mutex_unlock(&pol->lock);
	return UHMM_POLICY_FAULT_MAP;
}

bool uhmm_policy_copy_valid(struct uhmm_policy *pol, int d, uintptr_t addr, uint64_t cookie)
{
	struct uhmm_policy_range *r;
	bool ok = false;

	if (!pol || d < 0 || d >= pol->ndev)
		return false;
	pthread_mutex_lock(&pol->lock);
	r = find_range(pol, addr);
	if (r) {
		struct page_meta *pm = &r->pm[page_idx(r, addr)];

		ok = (pm->copies & (1u << d)) && pm->gen == (uint32_t)cookie &&
		     r->rm_prot[page_idx(r, addr) / gran_pages(r)];
	}
	pthread_mutex_unlock(&pol->lock);
	return ok;
}

void uhmm_policy_cpu_fault(struct uhmm_policy *pol, int d, uintptr_t fault_addr,
			   uintptr_t start, uintptr_t end)
{
	uint64_t t = now_ns();

	if (!pol || d < 0 || d >= pol->ndev || end <= start)
		return;
	pthread_mutex_lock(&pol->lock);
	for (struct uhmm_policy_range *r = pol->ranges; r; r = r->next) {
		uintptr_t s = start > r->start ? start : r->start;
		uintptr_t e = end < r->end ? end : r->end;

		/* Once per fault: the call whose window holds the faulting address. */
		if (fault_addr >= s && fault_addr < e)
			r->st.cpu_faults++;
		if (s >= e)
			continue;
		s &= ~(uintptr_t)(pol->ps - 1);
		for (size_t i = page_idx(r, s); i < page_idx(r, e); i++) {
			if (r->pm[i].loc == d) {
				set_loc(r, i, UHMM_POLICY_CPU, true, t);
				r->st.to_sys_pages++;
			}
		}
	}
	pthread_mutex_unlock(&pol->lock);
}

/* ---- prefetch ---------------------------------------------------------------------- */

static int prefetch_range(struct uhmm_policy *pol, struct uhmm_policy_range *r, uintptr_t s,
			  uintptr_t e, int loc, uint64_t *pages)
{
	size_t batch = pol->cfg.prefetch_batch << pol->shift;

	while (s < e) {
		uintptr_t ce = (s & ~(uintptr_t)(batch - 1)) + batch;

		if (ce > e)
			ce = e;
		if (loc >= 0) {
			uint64_t got = migrate_in(r, loc, s, ce, s, ce);

			pthread_mutex_lock(&pol->lock);
			r->st.prefetched_pages += got;
			pthread_mutex_unlock(&pol->lock);
			*pages += got;
		} else {
			uint64_t before = 0, after = 0;

			pthread_mutex_lock(&pol->lock);
			before = not_on(r, s, ce, UHMM_POLICY_CPU);
			pthread_mutex_unlock(&pol->lock);
			pthread_mutex_lock(block_lock(r, s));
			for (int d = 0; d < pol->ndev && before; d++)
				pol->devs[d].desc.ops->migrate_to_sys(pol->devs[d].desc.drv, s,
								     (ce - s) >> pol->shift);
			if (before)
				refresh(r, s, ce, false, NULL);
			pthread_mutex_unlock(block_lock(r, s));
			pthread_mutex_lock(&pol->lock);
			after = not_on(r, s, ce, UHMM_POLICY_CPU);
			if (before > after) {
				r->st.prefetched_pages += before - after;
				*pages += before - after;
			}
			pthread_mutex_unlock(&pol->lock);
		}
		s = ce;
	}
	return 0;
}

static void run_req(struct uhmm_policy *pol, struct uhmm_policy_req *q)
{
	uintptr_t a = q->start;

	while (a < q->end) {
		struct uhmm_policy_range *r;
		uintptr_t next = q->end, s, e;

		pthread_mutex_lock(&pol->lock);
		r = find_range(pol, a);
		if (!r) {
			/* Skip to the next range starting inside the request. */
			for (struct uhmm_policy_range *o = pol->ranges; o; o = o->next)
				if (o->start > a && o->start < next)
					next = o->start;
			pthread_mutex_unlock(&pol->lock);
			a = next;
			continue;
		}
		s = a;
		e = r->end < q->end ? r->end : q->end;
		pthread_mutex_unlock(&pol->lock);
		if (!r->attr.read_mostly)
			prefetch_range(pol, r, s, e, q->loc, &q->pages);
		a = e;
	}
}

static void *prefetch_thread(void *arg)
{
	struct uhmm_policy *pol = arg;
	sigset_t all;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	pthread_mutex_lock(&pol->lock);
	for (;;) {
		struct uhmm_policy_req *q = pol->pf_head;

		if (!q) {
			if (pol->pf_stop)
				break;
			pthread_cond_wait(&pol->pf_cond, &pol->lock);
			continue;
		}
		pthread_mutex_unlock(&pol->lock);
		run_req(pol, q);
		if (q->done)
			q->done(q->arg, q->status, q->pages);
		pthread_mutex_lock(&pol->lock);
		pol->pf_head = q->next;
		if (!pol->pf_head)
			pol->pf_tail = NULL;
		if (q->waited) {
			q->complete = true;
			pthread_cond_broadcast(&pol->pf_done);
		} else {
			/*
			 * Freed without the lock: the munmap may wait for the
			 * migrations in flight (docs/CONCURRENCY.md rule 9),
			 * and a migration's invalidation callback takes
			 * pol->lock.
			 */
			pthread_mutex_unlock(&pol->lock);
			pol_free(q, sizeof(*q));
			pthread_mutex_lock(&pol->lock);
		}
	}
	pthread_mutex_unlock(&pol->lock);
	return NULL;
}

int uhmm_policy_prefetch(struct uhmm_policy *pol, void *addr, size_t len, int loc,
			 uhmm_policy_done_fn done, void *arg, struct uhmm_policy_req **req)
{
	POL_NO_SIGNALS;
	uintptr_t s = (uintptr_t)addr;
	struct uhmm_policy_req *q;

	if (req)
		*req = NULL;
	if (!pol || (s | len) & (pol->ps - 1) || !len || s + len < s ||
	    (loc != UHMM_POLICY_CPU && (loc < 0 || loc >= pol->ndev)))
		return uhmm_set_error(EINVAL, "policy prefetch: NULL policy, unaligned, empty or "
				      "wrapping range, or unknown location %d", loc);
	q = pol_alloc(sizeof(*q));
	if (!q)
		return uhmm_set_error(ENOMEM, "policy prefetch: out of memory");
	*q = (struct uhmm_policy_req){ .pol = pol, .start = s, .end = s + len, .loc = loc,
				       .done = done,
				       .arg = arg, .waited = req != NULL };
	pthread_mutex_lock(&pol->lock);
	if (!pol->pf_running) {
		if (pthread_create(&pol->pf_thread, NULL, prefetch_thread, pol)) {
			pthread_mutex_unlock(&pol->lock);
			pol_free(q, sizeof(*q));
			return uhmm_set_error(EAGAIN, "policy prefetch: cannot start its thread");
		}
		pol->pf_running = true;
	}
	if (pol->pf_tail)
		pol->pf_tail->next = q;
	else
		pol->pf_head = q;
	pol->pf_tail = q;
	pthread_cond_signal(&pol->pf_cond);
	pthread_mutex_unlock(&pol->lock);
	if (req)
		*req = q;
	return 0;
}

int uhmm_policy_wait(struct uhmm_policy_req *q, uint64_t *pages)
{
	POL_NO_SIGNALS;
	struct uhmm_policy *pol;
	int status;

	if (!q || !q->waited)
		return uhmm_set_error(EINVAL, "policy wait: NULL or handle-less request");
	pol = q->pol;
	pthread_mutex_lock(&pol->lock);
	while (!q->complete)
		pthread_cond_wait(&pol->pf_done, &pol->lock);
	status = q->status;
	if (pages)
		*pages = q->pages;
	pthread_mutex_unlock(&pol->lock);
	pol_free(q, sizeof(*q));
	return status;
}

/* ---- discard ----------------------------------------------------------------------- */

long uhmm_policy_discard(struct uhmm_policy *pol, void *addr, size_t len)
{
	POL_NO_SIGNALS;
	uintptr_t s = (uintptr_t)addr, e = s + len;
	long n = 0;

	if (!pol || (s | len) & (pol->ps - 1) || !len || e < s)
		return uhmm_set_error(EINVAL, "policy discard: NULL policy, or unaligned, empty "
				      "or wrapping range");
	pthread_mutex_lock(&pol->lock);
	for (struct uhmm_policy_range *r = pol->ranges; r; r = r->next) {
		uintptr_t rs = s > r->start ? s : r->start, re = e < r->end ? e : r->end;
		long k = 0;

		for (uintptr_t a = rs; a < re; a += pol->ps)
			k += r->pm[page_idx(r, a)].loc >= 0;
		r->st.discarded += (uint64_t)k;
		n += k;
	}
	pthread_mutex_unlock(&pol->lock);
	/*
	 * Through libc, which uhmm wraps: device pages of the range are
	 * freed without a migration (their page_free runs), and the layer's
	 * notifier records them gone and drops copies.
	 */
	if (madvise(addr, len, MADV_DONTNEED))
		return uhmm_set_error(errno, "policy discard: madvise failed");
	return n;
}

/* ---- destroy ----------------------------------------------------------------------- */

void uhmm_policy_destroy(struct uhmm_policy *pol)
{
	POL_NO_SIGNALS;

	if (!pol)
		return;
	pthread_mutex_lock(&pol->lock);
	pol->pf_stop = true;
	pthread_cond_broadcast(&pol->pf_cond);
	pthread_mutex_unlock(&pol->lock);
	if (pol->pf_running)
		pthread_join(pol->pf_thread, NULL);
	while (pol->ranges)
		uhmm_policy_range_remove(pol->ranges);
	for (int k = 0; k < MAX_POLICIES; k++) {
		struct uhmm_policy *expect = pol;

		atomic_compare_exchange_strong(&policies[k], &expect, NULL);
	}
	uhmm_mm_put(pol->mm);
	pthread_mutex_destroy(&pol->lock);
	pthread_cond_destroy(&pol->pf_cond);
	pthread_cond_destroy(&pol->pf_done);
	pol_free(pol, sizeof(*pol));
}
