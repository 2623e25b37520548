// SPDX-License-Identifier: MIT
/*
 * simdev: the reference simulated device.  See include/uhmm/simdev.h.
 *
 * Built only on uhmm's public API, as lib/test_hmm.c is built only on the
 * kernel's exported HMM API.
 *
 * The device page table maps virtual page numbers to what the device
 * accesses for that page: the process's own page (system memory is
 * accessed in place, at its virtual address: the "DMA address" of a page in
 * user space), a page of device memory (the arena), or a holding page for
 * device-exclusive access.  It is filled by uhmm_range_fault() with the
 * sequence protocol and emptied by the interval notifiers' callbacks.
 *
 * Locking: dev->lock protects the page table and the free list; it is held
 * while copying between the device and mapped pages (an invalidation waits
 * for such a copy to finish before the CPU side changes), and never across
 * a uhmm migration or range fault.  Compute threads cache translations in a
 * per-thread TLB, all of one generation of the page table (their epoch); an
 * invalidation clears entries, bumps dev->gen and waits until every compute
 * thread has dropped or renewed its epoch (translate_slow(), and
 * docs/CONCURRENCY.md).  A migration home also unmaps the pages it
 * collected before the copy (migrate_piece_to_sys()).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <uhmm/simdev.h>

#include "simdev_hooks.h"
#include "cost.h"

#define SPT_VALID	UINT64_C(0x1)
#define SPT_WRITE	UINT64_C(0x2)
#define SPT_DEV		UINT64_C(0x4)	/* device memory page */
#define SPT_ATOMIC	UINT64_C(0x8)	/* device-exclusive holding page */
#define SPT_ZERO	UINT64_C(0x10)
#define SPT_HUGE	UINT64_C(0x20)
#define SPT_FLAGS	UINT64_C(0xfff)

#define LVL_BITS	9
#define LVL_SIZE	(1u << LVL_BITS)
#define LEVELS		5		/* 45 bits of page number */
#define CHUNK_SHIFT	30		/* one notifier per 1 GiB of address space */
#define MAX_CHUNKS	4096
#define TLB_SETS	128		/* per-thread TLB: 128 sets of 2 ways */
#define MAX_THREADS	64
#define BATCH_PAGES	512

struct uhmm_simdev;

struct chunk {
	struct uhmm_interval_notifier mni;	/* first: container_of by cast */
	struct uhmm_simdev *dev;
	uintptr_t base;
};

struct tlb_entry {
	uint64_t vpn;
	uint64_t e;
};

/*
 * A compute thread.  It holds an epoch: @active is the generation its
 * cached translations (@tlb) were taken in, 0 while it holds none.  It is
 * set under dev->lock when the thread takes a translation, and cleared
 * (release) before the thread does anything that may wait (a device fault,
 * a migration) and when it ends; @gen is the thread's own copy, 0 when it
 * holds no epoch.  See translate_slow() for the protocol.
 */
struct uhmm_simdev_thread {
	/*
	 * The inline fast path's fields first (struct uhmm_simdev__fast in
	 * simdev.h, same layout): gen, devgen, shift, ld_vpn, st_vpn, ld_delta,
	 * st_delta.
	 */
	unsigned long gen;
	const unsigned long *devgen;	/* &dev->gen */
	unsigned int shift;
	uint64_t ld_vpn, st_vpn;	/* the last page read, written (~0: none) */
	uintptr_t ld_delta, st_delta;	/* host address of that page minus its address */
	struct uhmm_simdev *dev;
	atomic_ulong active;
	atomic_ulong self;		/* its pthread_t, once it runs */
	size_t ps;
	struct tlb_entry tlb[TLB_SETS][2];
	uint8_t lru[TLB_SETS];		/* the way filled last */
	int err;
	char reason[200];		/* uhmm_last_error() of @err, for the launcher */
	uint64_t faults, cpages;
};

#define INVAL_SLOTS	64
#define INVAL_SHIFT	21		/* 2 MiB blocks */

struct uhmm_simdev {
	struct uhmm_devmem pgmap;
	struct uhmm_mm *mm;
	struct uhmm_simdev_config cfg;
	size_t ps;
	unsigned int shift;
	char *arena;
	pthread_mutex_t lock;
	void *spt_root;			/* radix tree of uint64_t entries */
	size_t *free_list;
	size_t nr_free;
	/*
	 * 2 MiB device pages (cfg.huge_pages): pool pages [0, huge * 512),
	 * heads on free_huge; the small pages follow.  total: the pool.
	 */
	size_t *free_huge;
	size_t nr_free_huge;
	size_t total;
	atomic_size_t used;
	unsigned int flags;
	/*
	 * Bumped by every invalidation; read by every device access, so on a
	 * cache line of its own (nothing written in the steady state shares it).
	 */
	_Alignas(64) atomic_ulong gen;
	char gen_pad[64 - sizeof(atomic_ulong)];
	/*
	 * Invalidations seen per 2 MiB block (hashed; under lock): a
	 * migration maps its new device pages only if none of its blocks
	 * was invalidated since its setup.
	 */
	unsigned long inval_blk[INVAL_SLOTS];
	struct uhmm_simdev_thread *workers;
	unsigned int nworkers;
	unsigned int shootdowns;	/* invalidations looking at workers */
	pthread_cond_t shootdown_done;
	pthread_mutex_t chunk_lock;
	struct chunk *chunks[MAX_CHUNKS];
	unsigned int nchunks;
	int owner;			/* its address is the owner token */
	/* counters */
	atomic_ullong c_to_dev, c_to_sys, c_cpu_faults, c_cpu_fault_pages, c_evicted,
		      c_dev_faults;
	size_t clock_hand;		/* eviction: next device page to consider */
	pthread_mutex_t evict_lock;
	const struct uhmm_simdev__hooks *hooks;	/* a policy layer (simdev_policy.c) */
	struct sd_cost cost;		/* simulated time (cost.c) */
};

/* ---- signals ------------------------------------------------------------------------ */

/*
 * A kernel driver holds its locks in kernel context, where no signal
 * handler runs.  simdev runs on the caller's thread: a handler that touches
 * device memory while this thread holds dev->lock (a copy, a page-table
 * update, an eviction) faults into uhmm's worker, whose migrate_to_ram
 * needs dev->lock: both wait forever.  So every public entry that takes a
 * lock or calls uhmm keeps asynchronous signals blocked (the synchronous
 * ones, which the kernel would turn into a kill if blocked, stay open), and
 * compute threads inherit that mask from the launching thread for their
 * whole life: a kernel function must not wait for a signal.  Regions nest;
 * the outermost one restores the caller's mask.  The thread-local state is
 * initial-exec: reading it never touches the thread's DTV, which glibc
 * keeps in the heap, which the program may migrate.
 */
static sigset_t sd_async_set;
static __thread __attribute__((tls_model("initial-exec"))) unsigned int sd_sig_depth;
static __thread __attribute__((tls_model("initial-exec"))) sigset_t sd_sig_saved;

__attribute__((constructor)) static void sd_sig_init(void)
{
	static const int sync_sigs[] = { SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS };

	sigfillset(&sd_async_set);
	for (size_t i = 0; i < sizeof(sync_sigs) / sizeof(sync_sigs[0]); i++)
		sigdelset(&sd_async_set, sync_sigs[i]);
}

static void sd_sig_enter(void)
{
	if (sd_sig_depth++ == 0)
		pthread_sigmask(SIG_BLOCK, &sd_async_set, &sd_sig_saved);
}

static void sd_sig_leave(int *unused)
{
	(void)unused;
	if (sd_sig_depth && --sd_sig_depth == 0)
		pthread_sigmask(SIG_SETMASK, &sd_sig_saved, NULL);
}

/* For the rest of the enclosing block (left on every return). */
#define SD_NO_SIGNALS \
	int sd_sig_region_ __attribute__((cleanup(sd_sig_leave), unused)) = (sd_sig_enter(), 0)

/* ---- simdev's own memory ---------------------------------------------------------- */

/*
 * Everything simdev's callbacks and compute threads touch (the device
 * structure, its locks, the page-table nodes, the notifier chunks, the
 * free list, the compute threads' state, the temporary pfn arrays) lives in
 * memory simdev maps itself, never in the application's heap: a kernel
 * driver's memory is kernel memory, which no migration ever takes, while
 * the application may migrate any of its heap, and a migration running on
 * one thread freezes the pages until its finalize.  With the device
 * structure in a frozen [heap] chunk, the migrating thread's own callbacks
 * would wait for themselves, and another thread would wait for the
 * migration while holding dev->lock (docs/CONCURRENCY.md, "Frozen pages").
 *
 * Objects up to SD_SMALL bytes come from power-of-two size classes carved
 * from 64 KiB slabs (never returned: simdev's small objects are few); larger
 * ones from power-of-two classes of whole pages, kept on free lists when
 * freed.  Slabs and large blocks are carved from one reservation of
 * address space (SD_ARENA, MAP_NORESERVE: memory is committed only when
 * touched), made by the first allocation, i.e. when the first device is
 * created; only when it is used up, or for a block larger than the largest
 * class, does simdev map memory anew.  Why: a mapping made later can take
 * addresses the application has just unmapped, and a device fault racing
 * that munmap (the kernel's would find no mapping there and fail with
 * -EFAULT) then found simdev's own new memory at the application's
 * addresses and mirrored it: the device read returned 0 with simdev's
 * page-table data in place of the application's (issue 12,
 * tests/test_unmap_race.c: 31-37 of 100 cold rounds failed before,
 * docs/LIMITATIONS.md "A driver's own memory").  The caller gives the
 * size back at free.  All of it is zeroed on allocation.  sd_lock is a
 * leaf lock in .bss.
 */
#define SD_MIN_SHIFT	4
#define SD_CLASSES	8		/* 16 .. 2048 bytes */
#define SD_SMALL	((size_t)1 << (SD_MIN_SHIFT + SD_CLASSES - 1))
#define SD_SLAB		((size_t)64 << 10)
#define SD_ARENA	((size_t)256 << 20)	/* the reservation */
#define SD_BIG_CLASSES	17		/* 1 .. 65536 pages */

struct sd_free {
	struct sd_free *next;
};

static pthread_mutex_t sd_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sd_free *sd_free_list[SD_CLASSES];
static char *sd_cur;
static size_t sd_left;
static struct sd_free *sd_big_free[SD_BIG_CLASSES];
static char *sd_arena, *sd_arena_cur, *sd_arena_end;
static bool sd_arena_tried;

static unsigned int sd_class(size_t size)
{
	unsigned int c = 0;

	while (((size_t)1 << (SD_MIN_SHIFT + c)) < size)
		c++;
	return c;
}

static size_t sd_big_len(size_t size)
{
	size_t ps = (size_t)sysconf(_SC_PAGESIZE);

	return (size + ps - 1) & ~(ps - 1);
}

/* The class of a large block of @size bytes (SD_BIG_CLASSES: none). */
static unsigned int sd_big_class(size_t size)
{
	size_t pages = sd_big_len(size) / (size_t)sysconf(_SC_PAGESIZE);
	unsigned int c = 0;

	while (c < SD_BIG_CLASSES && ((size_t)1 << c) < pages)
		c++;
	return c;
}

/*
 * @len bytes (whole pages) of the reservation, or NULL when it is used up;
 * sd_lock held.  The first call makes the reservation.
 */
static void *sd_arena_take(size_t len)
{
	void *p;

	if (!sd_arena_tried) {
		sd_arena_tried = true;
		p = mmap(NULL, SD_ARENA, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (p != MAP_FAILED) {
			sd_arena = sd_arena_cur = p;
			sd_arena_end = sd_arena + SD_ARENA;
		}
	}
	if (!sd_arena || (size_t)(sd_arena_end - sd_arena_cur) < len)
		return NULL;
	p = sd_arena_cur;
	sd_arena_cur += len;
	return p;
}

static bool sd_in_arena(const void *p)
{
	return sd_arena && (const char *)p >= sd_arena && (const char *)p < sd_arena_end;
}

static void *sd_alloc(size_t size)
{
	void *p;

	if (size == 0)
		size = 1;
	if (size > SD_SMALL) {
		unsigned int c = sd_big_class(size);

		p = NULL;
		if (c < SD_BIG_CLASSES) {
			pthread_mutex_lock(&sd_lock);
			if (sd_big_free[c]) {
				p = sd_big_free[c];
				sd_big_free[c] = sd_big_free[c]->next;
			} else {
				p = sd_arena_take(((size_t)1 << c) *
						  (size_t)sysconf(_SC_PAGESIZE));
			}
			pthread_mutex_unlock(&sd_lock);
			if (p) {
				memset(p, 0, size);
				return p;
			}
		}
		/* Used up, or larger than the classes: a mapping of its own. */
		p = mmap(NULL, sd_big_len(size), PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		return p == MAP_FAILED ? NULL : p;
	}
	unsigned int c = sd_class(size);
	size_t len = (size_t)1 << (SD_MIN_SHIFT + c);

	pthread_mutex_lock(&sd_lock);
	if (sd_free_list[c]) {
		p = sd_free_list[c];
		sd_free_list[c] = sd_free_list[c]->next;
	} else {
		/* Each object aligned to its size (a slab is page-aligned). */
		size_t pad = (size_t)(-(uintptr_t)sd_cur & (len - 1));

		if (!sd_cur || sd_left < pad + len) {
			void *slab = sd_arena_take(SD_SLAB);

			if (!slab)
				slab = mmap(NULL, SD_SLAB, PROT_READ | PROT_WRITE,
					    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			if (slab == MAP_FAILED) {
				pthread_mutex_unlock(&sd_lock);
				return NULL;
			}
			sd_cur = slab;		/* the rest of the old slab is not used */
			sd_left = SD_SLAB;
			pad = 0;
		}
		p = sd_cur + pad;
		sd_cur += pad + len;
		sd_left -= pad + len;
	}
	pthread_mutex_unlock(&sd_lock);
	memset(p, 0, len);
	return p;
}

static void *sd_calloc(size_t n, size_t size)
{
	if (size && n > SIZE_MAX / size)
		return NULL;
	return sd_alloc(n * size);
}

static void sd_free(void *p, size_t size)
{
	if (!p)
		return;
	if (size == 0)
		size = 1;
	if (size > SD_SMALL) {
		unsigned int bc = sd_big_class(size);

		if (!sd_in_arena(p) || bc >= SD_BIG_CLASSES) {
			munmap(p, sd_big_len(size));
			return;
		}
		pthread_mutex_lock(&sd_lock);
		((struct sd_free *)p)->next = sd_big_free[bc];
		sd_big_free[bc] = p;
		pthread_mutex_unlock(&sd_lock);
		return;
	}
	unsigned int c = sd_class(size);

	pthread_mutex_lock(&sd_lock);
	((struct sd_free *)p)->next = sd_free_list[c];
	sd_free_list[c] = p;
	pthread_mutex_unlock(&sd_lock);
}

/* ---- device page table ------------------------------------------------------ */

static uint64_t *spt_slot(struct uhmm_simdev *d, uint64_t vpn, bool alloc)
{
	void **node = &d->spt_root;

	for (int l = LEVELS - 1; l >= 0; l--) {
		unsigned int idx = (unsigned int)(vpn >> (l * LVL_BITS)) & (LVL_SIZE - 1);

		if (!*node) {
			if (!alloc)
				return NULL;
			*node = sd_calloc(LVL_SIZE, sizeof(void *));
			if (!*node)
				return NULL;
		}
		if (l == 0)
			return &((uint64_t *)*node)[idx];
		node = &((void **)*node)[idx];
	}
	return NULL;
}

static uint64_t spt_get(struct uhmm_simdev *d, uint64_t vpn)
{
	uint64_t *s = spt_slot(d, vpn, false);

	return s ? *s : 0;
}

static void spt_set(struct uhmm_simdev *d, uint64_t vpn, uint64_t e)
{
	uint64_t *s = spt_slot(d, vpn, e != 0);

	if (s)
		*s = e;
}

/* Clear [vs, ve) (page numbers), skipping empty subtrees. */
static void spt_clear_rec(void *node, int level, uint64_t base, uint64_t vs, uint64_t ve)
{
	uint64_t span = (uint64_t)1 << (level * LVL_BITS);

	if (!node)
		return;
	for (unsigned int i = 0; i < LVL_SIZE; i++) {
		uint64_t lo = base + i * span, hi = lo + span;

		if (hi <= vs || lo >= ve)
			continue;
		if (level == 0)
			((uint64_t *)node)[i] = 0;
		else
			spt_clear_rec(((void **)node)[i], level - 1, lo, vs, ve);
	}
}

static void spt_free_rec(void *node, int level)
{
	if (!node)
		return;
	if (level > 0)
		for (unsigned int i = 0; i < LVL_SIZE; i++)
			spt_free_rec(((void **)node)[i], level - 1);
	sd_free(node, LVL_SIZE * sizeof(void *));
}

static char *entry_ptr(uint64_t e)
{
	return (char *)(uintptr_t)(e & ~SPT_FLAGS);
}

/* ---- invalidation --------------------------------------------------------- */

/*
 * Wait until no compute thread is mid-access with a translation older than
 * @gen.  @w / @nw were read under the lock with d->shootdowns raised, which
 * keeps launch from freeing them meanwhile.
 */
static void tlb_shootdown(struct uhmm_simdev_thread *w, unsigned int nw, unsigned long gen)
{
	const unsigned long me = (unsigned long)pthread_self();

	for (unsigned int i = 0; w && i < nw; i++) {
		/*
		 * A kernel's own invalidation (it munmaps, say) runs on its
		 * thread, which is not in the middle of an access: its next
		 * one sees the new generation.
		 */
		if (atomic_load(&w[i].self) == me)
			continue;
		for (;;) {
			unsigned long a = atomic_load(&w[i].active);

			if (a == 0 || a >= gen)
				break;
			sched_yield();
		}
	}
}

/*
 * Add @add to the invalidation counts of [start, end)'s blocks (every
 * slot for a range of INVAL_SLOTS blocks or more) and return their sum
 * (d->lock held): an invalidation adds 1; a migration reads the sum with 0
 * and sees it grow if any of its blocks is invalidated meanwhile.
 */
static unsigned long inval_blocks(struct uhmm_simdev *d, uintptr_t start, uintptr_t end,
				  unsigned long add)
{
	uintptr_t b0 = start >> INVAL_SHIFT, b1 = (end - 1) >> INVAL_SHIFT;
	unsigned long n = 0;

	if (end <= start || b1 - b0 >= INVAL_SLOTS) {
		b0 = 0;
		b1 = INVAL_SLOTS - 1;
	}
	for (uintptr_t b = b0; b <= b1; b++)
		n += d->inval_blk[b % INVAL_SLOTS] += add;
	return n;
}

/*
 * Entries were cleared from the device page table (d->lock held, released
 * here): make every compute thread drop what it cached and wait until none
 * is still in the middle of an access made through an entry cleared.
 */
static void flush_and_unlock(struct uhmm_simdev *d)
{
	struct uhmm_simdev_thread *w;
	unsigned int nw;
	unsigned long gen;

	gen = atomic_fetch_add(&d->gen, 1) + 1;
	w = d->workers;
	nw = d->nworkers;
	if (w)
		d->shootdowns++;
	pthread_mutex_unlock(&d->lock);
	if (w) {
		tlb_shootdown(w, nw, gen);
		pthread_mutex_lock(&d->lock);
		if (--d->shootdowns == 0)
			pthread_cond_broadcast(&d->shootdown_done);
		pthread_mutex_unlock(&d->lock);
	}
}

static bool simdev_invalidate(struct uhmm_interval_notifier *mni,
			      const struct uhmm_notifier_range *r, unsigned long cur_seq)
{
	struct chunk *c = (struct chunk *)mni;
	struct uhmm_simdev *d = c->dev;

	pthread_mutex_lock(&d->lock);
	uhmm_interval_set_seq(mni, cur_seq);
	/*
	 * Counted for the migrations to the device in flight (they map their
	 * pages only if no invalidation came since they began), except this
	 * device's own migrations: those never take pages another one of
	 * them holds, and each migration's own would stop it from mapping.
	 */
	if (r->event != UHMM_NOTIFY_MIGRATE || r->owner != &d->owner)
		inval_blocks(d, r->start, r->end ? r->end : UINTPTR_MAX, 1);
	spt_clear_rec(d->spt_root, LEVELS - 1, 0, r->start >> d->shift,
		      r->end ? r->end >> d->shift : (UINT64_MAX >> d->shift) + 1);
	flush_and_unlock(d);
	return true;
}

static const struct uhmm_interval_notifier_ops simdev_mni_ops = {
	.invalidate = simdev_invalidate,
};

/* The notifier of the 1 GiB chunk holding @addr, inserted on first use. */
static struct chunk *get_chunk(struct uhmm_simdev *d, uintptr_t addr)
{
	uintptr_t base = addr & ~(((uintptr_t)1 << CHUNK_SHIFT) - 1);
	struct chunk *c = NULL;

	pthread_mutex_lock(&d->chunk_lock);
	for (unsigned int i = 0; i < d->nchunks; i++)
		if (d->chunks[i]->base == base) {
			c = d->chunks[i];
			break;
		}
	if (!c && d->nchunks < MAX_CHUNKS) {
		c = sd_calloc(1, sizeof(*c));
		if (c) {
			c->dev = d;
			c->base = base;
			if (uhmm_interval_notifier_insert(&c->mni, d->mm, base,
							  (size_t)1 << CHUNK_SHIFT,
							  &simdev_mni_ops)) {
				sd_free(c, sizeof(*c));
				c = NULL;
			} else {
				d->chunks[d->nchunks++] = c;
			}
		}
	}
	pthread_mutex_unlock(&d->chunk_lock);
	return c;
}

/* ---- device memory -------------------------------------------------------------- */

static struct uhmm_page *dev_alloc(struct uhmm_simdev *d)
{
	struct uhmm_page *p = NULL;

	pthread_mutex_lock(&d->lock);
	if (d->flags & UHMM_SIMDEV_FAIL_ALLOC) {
		d->flags &= ~UHMM_SIMDEV_FAIL_ALLOC;
	} else if (d->nr_free && !sd_cost_full(&d->cost, d->cfg.capacity_pages - d->nr_free,
						 d->ps)) {
		p = uhmm_devmem_page(&d->pgmap, d->free_list[--d->nr_free]);
	}
	pthread_mutex_unlock(&d->lock);
	if (p) {
		uhmm_page_init(p);
		atomic_fetch_add(&d->used, 1);
	}
	return p;
}

/*
 * A 2 MiB device page (its head), or NULL: none free, or FAIL_ALLOC, which
 * fails the next allocation of either size (lib/test_hmm.c's flag); the
 * caller then falls back to 512 small pages.
 */
static struct uhmm_page *dev_alloc_huge(struct uhmm_simdev *d)
{
	struct uhmm_page *p = NULL;

	pthread_mutex_lock(&d->lock);
	if (d->flags & UHMM_SIMDEV_FAIL_ALLOC) {
		d->flags &= ~UHMM_SIMDEV_FAIL_ALLOC;
	} else if (d->nr_free_huge) {
		p = uhmm_devmem_page(&d->pgmap, d->free_huge[--d->nr_free_huge]);
	}
	pthread_mutex_unlock(&d->lock);
	if (p) {
		if (uhmm_folio_init(p, UHMM_PMD_ORDER)) {
			/* Cannot happen: the pages are free.  Keep them out of use. */
			return NULL;
		}
		atomic_fetch_add(&d->used, 512);
	}
	return p;
}

static char *page_mem(struct uhmm_simdev *d, struct uhmm_page *p)
{
	return d->arena + uhmm_page_index(p) * d->ps;
}

static void simdev_page_free(struct uhmm_page *p)
{
	struct uhmm_simdev *d = p->pgmap->driver_data;
	bool huge = uhmm_page_order(p) != 0;	/* a 2 MiB page, freed whole */

	pthread_mutex_lock(&d->lock);
	if (huge)
		d->free_huge[d->nr_free_huge++] = uhmm_page_index(p);
	else
		d->free_list[d->nr_free++] = uhmm_page_index(p);
	pthread_mutex_unlock(&d->lock);
	atomic_fetch_sub(&d->used, huge ? 512 : 1);
}

/* ---- range fault into the device page table -------------------------------------- */

static uint64_t pfn_to_entry(struct uhmm_simdev *d, uint64_t pfn)
{
	uint64_t e;

	if (!(pfn & UHMM_PFN_VALID) || (pfn & UHMM_PFN_ERROR))
		return 0;
	if (pfn & UHMM_PFN_DEVICE_PRIVATE) {
		struct uhmm_page *p = uhmm_pfn_to_page(d->mm, pfn & UHMM_PFN_NUMBER_MASK);

		if (!p || p->pgmap != &d->pgmap)
			return 0;
		e = (uint64_t)(uintptr_t)page_mem(d, p) | SPT_VALID | SPT_DEV;
	} else {
		e = (uint64_t)uhmm_pfn_to_addr(pfn) | SPT_VALID;
		if (pfn & UHMM_PFN_ZERO)
			e |= SPT_ZERO;
		if (uhmm_pfn_to_map_order(pfn))
			e |= SPT_HUGE;
	}
	if (pfn & UHMM_PFN_WRITE)
		e |= SPT_WRITE;
	return e;
}

/*
 * Fault [start, end) (inside one chunk) into the device page table: one
 * range fault, committed under the lock if no invalidation ran meanwhile.
 */
static int device_fault_chunk(struct uhmm_simdev *d, uintptr_t start, uintptr_t end,
			      bool write, uint64_t *faults)
{
	struct chunk *c = get_chunk(d, start);
	size_t n = (end - start) >> d->shift;
	uint64_t stack[BATCH_PAGES], *pfns;
	struct uhmm_range r = {
		.start = start, .end = end,
		.default_flags = UHMM_PFN_REQ_FAULT | (write ? UHMM_PFN_REQ_WRITE : 0),
		.dev_private_owner = &d->owner,
	};
	int ret;

	if (!c)
		return -ENOMEM;
	pfns = n <= BATCH_PAGES ? stack : sd_calloc(n, sizeof(*pfns));
	if (!pfns)
		return -ENOMEM;
	r.notifier = &c->mni;
	r.hmm_pfns = pfns;
	for (;;) {
		r.notifier_seq = uhmm_interval_read_begin(&c->mni);
		ret = uhmm_range_fault(&r);
		if (ret == -EBUSY)
			continue;
		if (ret)
			break;
		(*faults)++;
		atomic_fetch_add(&d->c_dev_faults, 1);
		sd_cost_device_fault(&d->cost);
		pthread_mutex_lock(&d->lock);
		if (uhmm_interval_read_retry(&c->mni, r.notifier_seq)) {
			pthread_mutex_unlock(&d->lock);
			continue;
		}
		for (size_t i = 0; i < n; i++)
			spt_set(d, (start >> d->shift) + i, pfn_to_entry(d, pfns[i]));
		pthread_mutex_unlock(&d->lock);
		break;
	}
	if (pfns != stack)
		sd_free(pfns, n * sizeof(*pfns));
	return ret;
}

static int device_fault(struct uhmm_simdev *d, uintptr_t start, uintptr_t end, bool write,
			uint64_t *faults)
{
	while (start < end) {
		uintptr_t ce = (start | (((uintptr_t)1 << CHUNK_SHIFT) - 1)) + 1;
		uintptr_t e = ce && ce < end ? ce : end;
		int ret = device_fault_chunk(d, start, e, write, faults);

		if (ret)
			return ret;
		start = e;
	}
	return 0;
}

static bool entry_ok(uint64_t e, bool write)
{
	return (e & SPT_VALID) && (!write || (e & SPT_WRITE));
}

/*
 * The simulated time of a device copy: its device-memory pages over device
 * memory, its system-memory pages as one transfer over the link.
 */
static void cost_copy(struct uhmm_simdev *d, size_t local, size_t sys, bool write)
{
	sd_cost_access(&d->cost, true, write, (uint64_t)local * d->ps);
	sd_cost_transfer(&d->cost, !write, (uint64_t)sys * d->ps);
}

/*
 * Device access of a whole range: fault in what is missing, then copy with
 * the lock held and every entry verified.  @out / @in: one of them.
 */
static int device_copy(struct uhmm_simdev *d, uintptr_t start, size_t npages, void *out,
		       const void *in, struct uhmm_simdev_stats *st)
{
	const bool write = in != NULL;
	uintptr_t end = start + npages * d->ps;
	uint64_t faults = 0;
	int ret = 0;

	for (int tries = 0;; tries++) {
		uintptr_t miss = 0;

		pthread_mutex_lock(&d->lock);
		for (uintptr_t a = start; a < end; a += d->ps) {
			if (!entry_ok(spt_get(d, a >> d->shift), write)) {
				miss = a;
				break;
			}
		}
		if (!miss) {
			size_t local = 0;

			for (size_t i = 0; i < npages; i++) {
				uint64_t e = spt_get(d, (start >> d->shift) + i);

				local += (e & SPT_DEV) != 0;
				if (write)
					memcpy(entry_ptr(e), (const char *)in + i * d->ps, d->ps);
				else
					memcpy((char *)out + i * d->ps, entry_ptr(e), d->ps);
			}
			pthread_mutex_unlock(&d->lock);
			cost_copy(d, local, npages - local, write);
			break;
		}
		pthread_mutex_unlock(&d->lock);
		if (tries > 64) {
			ret = -EBUSY;
			break;
		}
		/* One device fault over the rest of the range. */
		ret = device_fault(d, miss, end, write, &faults);
		if (ret)
			break;
	}
	if (st) {
		st->faults = faults;
		st->cpages = ret ? 0 : npages;
	}
	return ret;
}

/* ---- argument checks ---------------------------------------------------------- */

static int check_range(struct uhmm_simdev *d, const void *addr, size_t npages)
{
	uintptr_t a = (uintptr_t)addr;

	if (!d)
		return uhmm_set_error(EINVAL, "simdev: NULL device");
	if (a & (d->ps - 1))
		return uhmm_set_error(EINVAL, "simdev: address %p is not page aligned", addr);
	if (npages == 0 || npages > (UINTPTR_MAX >> d->shift) || a + npages * d->ps <= a)
		return uhmm_set_error(EINVAL, "simdev: %zu pages at %p: empty or wrapping range",
				      npages, addr);
	return 0;
}

int uhmm_simdev_read(struct uhmm_simdev *d, const void *addr, size_t npages, void *out,
		     struct uhmm_simdev_stats *st)
{
	SD_NO_SIGNALS;
	int ret = check_range(d, addr, npages);

	if (ret)
		return ret;
	if (!out)
		return uhmm_set_error(EINVAL, "simdev read: NULL output buffer");
	return device_copy(d, (uintptr_t)addr, npages, out, NULL, st);
}

int uhmm_simdev_write(struct uhmm_simdev *d, void *addr, size_t npages, const void *in,
		      struct uhmm_simdev_stats *st)
{
	SD_NO_SIGNALS;
	int ret = check_range(d, addr, npages);

	if (ret)
		return ret;
	if (!in)
		return uhmm_set_error(EINVAL, "simdev write: NULL input buffer");
	return device_copy(d, (uintptr_t)addr, npages, NULL, in, st);
}

/* ---- migration ------------------------------------------------------------------ */

/* Migrate [s, e) (one mapping) to the device; returns pages migrated or -errno. */
static long migrate_piece_to_dev(struct uhmm_simdev *d, uintptr_t s, uintptr_t e,
				 bool *alloc_failed)
{
	size_t n = (e - s) >> d->shift;
	uint64_t src[BATCH_PAGES], dst[BATCH_PAGES];
	struct uhmm_migrate_vma m = {
		.mm = d->mm, .start = s, .end = e, .src = src, .dst = dst,
		.pgmap_owner = &d->owner, .flags = UHMM_MIGRATE_VMA_SELECT_SYSTEM |
			(d->cfg.huge_pages ? UHMM_MIGRATE_VMA_SELECT_COMPOUND : 0),
	};
	struct chunk *c0 = get_chunk(d, s), *c1 = get_chunk(d, e - 1);
	unsigned long gen;
	bool map;
	long moved = 0;
	size_t copied = 0;
	int ret;

	/* The device will map these pages: it must hear of their changes. */
	if (!c0 || !c1)
		return -ENOMEM;
	/*
	 * Any invalidation of these addresses from here on is counted in
	 * their blocks (this device's own migrations are not), and the new
	 * pages are mapped below only if none came: read before setup, as a
	 * kernel driver reads mmu_interval_read_begin() before
	 * migrate_vma_setup().  A discard or unmap whose invalidation ran
	 * after this but before setup claimed the pages can zap them after
	 * setup froze them (its event marks them gone, and finalize drops
	 * them): counted only from after setup, the device mapped such a
	 * page anyway, and kept reading and writing a freed device page
	 * (round 3 hunt, tests/hunt/FINDINGS.md).
	 */
	pthread_mutex_lock(&d->lock);
	gen = inval_blocks(d, s, e, 0);
	pthread_mutex_unlock(&d->lock);
	/*
	 * An invalidation in progress (counted before, or the change of a
	 * notifier inserted while it ran, which it never reached) is waited
	 * out: read_begin() returns once it has ended, so that every change
	 * of these addresses from now on is counted or came before setup.
	 */
	uhmm_interval_read_begin(&c0->mni);
	if (c1 != c0)
		uhmm_interval_read_begin(&c1->mni);
	ret = uhmm_migrate_vma_setup(&m);
	if (ret)
		return ret;
	for (size_t i = 0; i < n; i++) {
		struct uhmm_page *p;
		const void *from;

		if (!(src[i] & UHMM_MIGRATE_PFN_MIGRATE))
			continue;
		from = uhmm_migrate_pfn_addr(&m, i);
		if (src[i] & UHMM_MIGRATE_PFN_COMPOUND) {
			/* A whole 2 MiB block: a 2 MiB device page, or 512 small ones. */
			p = dev_alloc_huge(d);
			if (p) {
				if (from) {
					memcpy(page_mem(d, p), from, 512 * d->ps);
					copied += 512;
				} else {
					memset(page_mem(d, p), 0, 512 * d->ps);
				}
				dst[i] = uhmm_migrate_pfn(uhmm_page_to_pfn(p)) |
					 (src[i] & UHMM_MIGRATE_PFN_WRITE) |
					 UHMM_MIGRATE_PFN_COMPOUND;
				continue;
			}
			for (size_t k = 0; k < 512 && i + k < n; k++) {
				p = dev_alloc(d);
				if (!p) {
					*alloc_failed = true;
					continue;
				}
				if (from) {
					memcpy(page_mem(d, p), (const char *)from + k * d->ps, d->ps);
					copied++;
				} else {
					memset(page_mem(d, p), 0, d->ps);
				}
				dst[i + k] = uhmm_migrate_pfn(uhmm_page_to_pfn(p)) |
					     (src[i] & UHMM_MIGRATE_PFN_WRITE);
			}
			i += 511;
			continue;
		}
		p = dev_alloc(d);
		if (!p) {
			*alloc_failed = true;
			continue;
		}
		if (from) {
			memcpy(page_mem(d, p), from, d->ps);
			copied++;
		} else {
			memset(page_mem(d, p), 0, d->ps);
		}
		dst[i] = uhmm_migrate_pfn(uhmm_page_to_pfn(p)) | (src[i] & UHMM_MIGRATE_PFN_WRITE);
	}
	sd_cost_transfer(&d->cost, true, (uint64_t)copied * d->ps);	/* one DMA batch */
	uhmm_migrate_vma_pages(&m);
	/*
	 * Map the new device pages in the device page table, unless an
	 * invalidation ran since setup: it may have been for these addresses
	 * (an munmap, a discard) before this could map them, and nothing
	 * would clear the entry then; the device faults them in instead.
	 */
	pthread_mutex_lock(&d->lock);
	map = inval_blocks(d, s, e, 0) == gen;
	for (size_t i = 0; i < n; i++) {
		size_t nr = (dst[i] & UHMM_MIGRATE_PFN_COMPOUND) ? 512 : 1;
		char *mem;

		if (!(src[i] & UHMM_MIGRATE_PFN_MIGRATE))
			continue;
		moved += (long)nr;
		mem = page_mem(d, uhmm_pfn_to_page(d->mm, uhmm_migrate_pfn_to_pfn(dst[i])));
		for (size_t k = 0; map && k < nr; k++)
			spt_set(d, (s >> d->shift) + i + k,
				(uint64_t)(uintptr_t)(mem + k * d->ps) | SPT_VALID | SPT_DEV |
				((src[i] & UHMM_MIGRATE_PFN_WRITE) ? SPT_WRITE : 0));
	}
	pthread_mutex_unlock(&d->lock);
	uhmm_migrate_vma_finalize(&m);
	atomic_fetch_add(&d->c_to_dev, (unsigned long long)moved);
	return moved;
}

/* Migrate this device's pages of [s, e) (one mapping) back. */
static long migrate_piece_to_sys(struct uhmm_simdev *d, uintptr_t s, uintptr_t e,
				 struct uhmm_page *fault_page)
{
	size_t n = (e - s) >> d->shift;
	uint64_t src[BATCH_PAGES], dst[BATCH_PAGES];
	struct uhmm_migrate_vma m = {
		.mm = d->mm, .start = s, .end = e, .src = src, .dst = dst,
		.pgmap_owner = &d->owner, .flags = UHMM_MIGRATE_VMA_SELECT_DEVICE_PRIVATE |
			(d->cfg.huge_pages ? UHMM_MIGRATE_VMA_SELECT_COMPOUND : 0),
		.fault_page = fault_page,
	};
	long moved = 0;
	int ret;

	ret = uhmm_migrate_vma_setup(&m);
	if (ret)
		return ret;
	/*
	 * Unmap what setup collected from the device page table before the
	 * copy (lib/test_hmm.c's fault path erases its entries the same
	 * way).  The invalidation setup ran is not enough: it comes before
	 * the collection, and a page a migration to the device committed in
	 * between (mapping it in its own step, after that invalidation) is
	 * collected too.  The device kept writing it through that entry
	 * after the copy home (the writes were lost), and after the page
	 * was freed and given to another address (they landed there).
	 */
	pthread_mutex_lock(&d->lock);
	for (size_t i = 0; i < n; i++)
		if (src[i] & UHMM_MIGRATE_PFN_MIGRATE)
			for (size_t k = 0; k < ((src[i] & UHMM_MIGRATE_PFN_COMPOUND) ? 512u : 1u);
			     k++)
				spt_set(d, (s >> d->shift) + i + k, 0);
	flush_and_unlock(d);
	for (size_t i = 0; i < n; i++) {
		struct uhmm_page *p;

		if (!(src[i] & UHMM_MIGRATE_PFN_MIGRATE))
			continue;
		p = uhmm_pfn_to_page(d->mm, uhmm_migrate_pfn_to_pfn(src[i]));
		if (!p)
			continue;
		/*
		 * Device memory is host memory here: uhmm copies it into place
		 * (a 2 MiB device page is 2 MiB of the arena: one destination).
		 */
		dst[i] = uhmm_migrate_pfn((uintptr_t)page_mem(d, p) >> d->shift) |
			 (src[i] & UHMM_MIGRATE_PFN_COMPOUND);
	}
	uhmm_migrate_vma_pages(&m);
	for (size_t i = 0; i < n; i++)
		if (src[i] & UHMM_MIGRATE_PFN_MIGRATE)
			moved += (src[i] & UHMM_MIGRATE_PFN_COMPOUND) ? 512 : 1;
	sd_cost_transfer(&d->cost, false, (uint64_t)moved * d->ps);
	uhmm_migrate_vma_finalize(&m);
	return moved;
}

/*
 * Walk [start, end) mapping by mapping in pieces of at most BATCH_PAGES,
 * as the kernel's test device walks VMAs; a hole or a mapping without read
 * access is -EINVAL.
 */
static int for_each_piece(struct uhmm_simdev *d, uintptr_t start, uintptr_t end,
			  long (*fn)(struct uhmm_simdev *, uintptr_t, uintptr_t, void *),
			  void *arg, uint64_t *total)
{
	uintptr_t a = start;

	*total = 0;
	while (a < end) {
		struct uhmm_mapping map;
		uintptr_t next;
		long r;

		if (uhmm_find_mapping(d->mm, a, &map) || map.start > a)
			return uhmm_set_error(EINVAL, "simdev: no mapping at %#lx", (unsigned long)a);
		if (!(map.flags & UHMM_PS_READ))
			return uhmm_set_error(EINVAL, "simdev: no read access at %#lx",
					      (unsigned long)a);
		next = end;
		if (next > map.end)
			next = map.end;
		if (next - a > (uintptr_t)BATCH_PAGES * d->ps)
			next = a + (uintptr_t)BATCH_PAGES * d->ps;
		r = fn(d, a, next, arg);
		if (r < 0)
			return (int)r;
		*total += (uint64_t)r;
		a = next;
	}
	return 0;
}

/*
 * What the device's view of [start, end) holds, one hmm_pfns word per page,
 * faulting nothing in (@pfns: (end - start) pages).
 */
static int snapshot_pfns(struct uhmm_simdev *d, uintptr_t start, uintptr_t end, uint64_t *pfns)
{
	int ret = 0;

	for (uintptr_t a = start; a < end && !ret;) {
		uintptr_t ce = (a | (((uintptr_t)1 << CHUNK_SHIFT) - 1)) + 1;
		uintptr_t e = ce && ce < end ? ce : end;
		struct chunk *c = get_chunk(d, a);
		struct uhmm_range r = {
			.notifier = c ? &c->mni : NULL, .start = a, .end = e,
			.hmm_pfns = pfns + ((a - start) >> d->shift),
			.dev_private_owner = &d->owner,
		};

		if (!c)
			return uhmm_set_error(ENOMEM, "simdev: out of memory for a notifier");
		do {
			r.notifier_seq = uhmm_interval_read_begin(&c->mni);
			ret = uhmm_range_fault(&r);
		} while (ret == -EBUSY);
		a = e;
	}
	return ret;
}

/* Is @pfn (a range fault's output word) a page of this device's memory? */
static bool pfn_is_local(struct uhmm_simdev *d, uint64_t pfn)
{
	struct uhmm_page *p;

	if ((pfn & (UHMM_PFN_VALID | UHMM_PFN_ERROR | UHMM_PFN_DEVICE_PRIVATE)) !=
	    (UHMM_PFN_VALID | UHMM_PFN_DEVICE_PRIVATE))
		return false;
	p = uhmm_pfn_to_page(d->mm, pfn & UHMM_PFN_NUMBER_MASK);
	return p && p->pgmap == &d->pgmap;
}

/*
 * Migrate one piece; count what of it is in this device's memory afterwards
 * (the contract's cpages, as the kernel's test device counts what its page
 * table holds for the range after the migration): the pages this call
 * moved, and those that were there already.
 */
struct to_dev {
	bool alloc_failed;	/* a device page could not be had */
	uint64_t moved;		/* pages this call moved */
};

static long to_dev_cb(struct uhmm_simdev *d, uintptr_t s, uintptr_t e, void *arg)
{
	struct to_dev *td = arg;
	uint64_t pfns[BATCH_PAGES];
	long r = migrate_piece_to_dev(d, s, e, &td->alloc_failed), n = 0;

	if (r < 0)
		return r;
	td->moved += (uint64_t)r;
	if (snapshot_pfns(d, s, e, pfns))
		return r;	/* cannot tell: what this call moved is there */
	for (size_t i = 0; i < (e - s) >> d->shift; i++)
		n += pfn_is_local(d, pfns[i]);
	return n;
}

static long to_sys_cb(struct uhmm_simdev *d, uintptr_t s, uintptr_t e, void *arg)
{
	long r = migrate_piece_to_sys(d, s, e, NULL);

	(void)arg;
	if (r > 0)
		atomic_fetch_add(&d->c_to_sys, (unsigned long long)r);
	return r;
}

int uhmm_simdev_migrate_to_dev(struct uhmm_simdev *d, void *addr, size_t npages,
			       struct uhmm_simdev_stats *st)
{
	SD_NO_SIGNALS;
	uintptr_t s = (uintptr_t)addr;
	struct to_dev td = { .alloc_failed = false };
	uint64_t resident = 0;
	int ret = check_range(d, addr, npages);

	if (ret)
		return ret;
	ret = for_each_piece(d, s, s + npages * d->ps, to_dev_cb, &td, &resident);
	if (st) {
		st->cpages = resident;	/* pages of the range now on the device */
		st->faults = 0;
	}
	if (ret)
		return ret;
	if (td.alloc_failed && td.moved == 0)
		return uhmm_set_error(ENOMEM, "simdev migrate to dev: device memory is full");
	if (resident == 0)
		return uhmm_set_error(ENOENT, "simdev migrate to dev: no page of the range "
				      "could migrate");
	return 0;
}

int uhmm_simdev_migrate_to_sys(struct uhmm_simdev *d, void *addr, size_t npages,
			       struct uhmm_simdev_stats *st)
{
	SD_NO_SIGNALS;
	uintptr_t s = (uintptr_t)addr;
	uint64_t moved = 0;
	int ret = check_range(d, addr, npages);

	if (ret)
		return ret;
	ret = for_each_piece(d, s, s + npages * d->ps, to_sys_cb, NULL, &moved);
	if (st) {
		st->cpages = moved;
		st->faults = 0;
	}
	if (ret)
		return ret;
	return moved ? 0 : uhmm_set_error(ENOENT, "simdev migrate to sys: no page of the "
					  "range is in this device's memory");
}

static void hooks_pages_home(struct uhmm_simdev *d, uintptr_t fault, uintptr_t s, uintptr_t e);

static int simdev_migrate_to_ram(struct uhmm_vm_fault *vmf)
{
	struct uhmm_simdev *d = vmf->page->pgmap->driver_data;
	uintptr_t s = vmf->window_start;

	atomic_fetch_add(&d->c_cpu_faults, 1);
	sd_cost_cpu_fault(&d->cost);
	while (s < vmf->window_end) {
		uintptr_t e = vmf->window_end;
		long r;

		if (e - s > (uintptr_t)BATCH_PAGES * d->ps)
			e = s + (uintptr_t)BATCH_PAGES * d->ps;
		r = migrate_piece_to_sys(d, s, e,
					 vmf->address >= s && vmf->address < e ? vmf->page : NULL);
		if (r < 0)
			return (int)r;
		atomic_fetch_add(&d->c_cpu_fault_pages, (unsigned long long)r);
		hooks_pages_home(d, vmf->address, s, e);
		s = e;
	}
	return 0;
}

static const struct uhmm_devmem_ops simdev_ops = {
	.page_free = simdev_page_free,
	.migrate_to_ram = simdev_migrate_to_ram,
};

/* ---- snapshot ------------------------------------------------------------------- */

static uint8_t pfn_to_prot(struct uhmm_simdev *d, uint64_t pfn)
{
	uint8_t prot;

	if (pfn & UHMM_PFN_ERROR)
		return UHMM_SIMDEV_PROT_ERROR;
	if (!(pfn & UHMM_PFN_VALID))
		return UHMM_SIMDEV_PROT_NONE;
	if (pfn & UHMM_PFN_DEVICE_PRIVATE) {
		struct uhmm_page *p = uhmm_pfn_to_page(d->mm, pfn & UHMM_PFN_NUMBER_MASK);

		prot = p && p->pgmap == &d->pgmap ? UHMM_SIMDEV_PROT_DEV_PRIVATE_LOCAL
						   : UHMM_SIMDEV_PROT_DEV_PRIVATE_REMOTE;
		/* A 2 MiB device page mapped whole, as the kernel's device-private PMD. */
		if (uhmm_pfn_to_map_order(pfn) == 21 - d->shift)
			prot |= UHMM_SIMDEV_PROT_PMD;
	} else {
		prot = 0;
		if (pfn & UHMM_PFN_ZERO)
			prot |= UHMM_SIMDEV_PROT_ZERO;
		if (uhmm_pfn_to_map_order(pfn) == 21 - d->shift)
			prot |= UHMM_SIMDEV_PROT_PMD;
		else if (uhmm_pfn_to_map_order(pfn) == 30 - d->shift)
			prot |= UHMM_SIMDEV_PROT_PUD;
	}
	prot |= (pfn & UHMM_PFN_WRITE) ? UHMM_SIMDEV_PROT_WRITE : UHMM_SIMDEV_PROT_READ;
	return prot;
}

int uhmm_simdev_snapshot(struct uhmm_simdev *d, const void *addr, size_t npages, uint8_t *prot,
			 struct uhmm_simdev_stats *st)
{
	SD_NO_SIGNALS;
	uintptr_t start = (uintptr_t)addr, end;
	size_t max;
	uint64_t *pfns;
	int ret = check_range(d, addr, npages);

	if (ret)
		return ret;
	if (!prot)
		return uhmm_set_error(EINVAL, "simdev snapshot: NULL output array");
	end = start + npages * d->ps;
	max = (size_t)1 << (CHUNK_SHIFT - d->shift);	/* one chunk at a time */
	pfns = sd_calloc(npages < max ? npages : max, sizeof(*pfns));
	if (!pfns)
		return uhmm_set_error(ENOMEM, "simdev snapshot: out of memory");
	for (uintptr_t a = start; a < end && !ret;) {
		uintptr_t ce = (a | (((uintptr_t)1 << CHUNK_SHIFT) - 1)) + 1;
		uintptr_t e = ce && ce < end ? ce : end;
		size_t off = (a - start) >> d->shift;

		ret = snapshot_pfns(d, a, e, pfns);
		for (size_t i = 0; !ret && i < (e - a) >> d->shift; i++)
			prot[off + i] = pfn_to_prot(d, pfns[i]);
		a = e;
	}
	sd_free(pfns, (npages < max ? npages : max) * sizeof(*pfns));
	if (st) {
		st->cpages = ret ? 0 : npages;
		st->faults = 0;
	}
	return ret;
}

/* ---- exclusive access ------------------------------------------------------------- */

int uhmm_simdev_exclusive(struct uhmm_simdev *d, void *addr, size_t npages,
			  struct uhmm_simdev_stats *st)
{
	SD_NO_SIGNALS;
	uintptr_t s = (uintptr_t)addr;
	struct chunk *c0, *c;
	void **held;
	long got;
	int ret = check_range(d, addr, npages);

	if (ret)
		return ret;
	c0 = get_chunk(d, s);
	if (!c0)
		return -ENOMEM;
	held = sd_calloc(npages, sizeof(*held));
	if (!held)
		return -ENOMEM;
	got = uhmm_make_exclusive(d->mm, s, npages, &d->owner, held);
	if (got < 0) {
		sd_free(held, npages * sizeof(*held));
		return (int)got;
	}
	c = get_chunk(d, s + (npages - 1) * d->ps);	/* a range may end in the next chunk */
	if (!c) {
		sd_free(held, npages * sizeof(*held));
		return -ENOMEM;
	}
	for (;;) {
		/*
		 * A CPU access may revoke a page at any time: its invalidation
		 * clears the device page table, so an entry set after it would
		 * stay.  Map only with no invalidation since the check began
		 * (read_begin waits out a revocation in progress).
		 */
		unsigned long seq0 = uhmm_interval_read_begin(&c0->mni);
		unsigned long seq1 = uhmm_interval_read_begin(&c->mni);

		pthread_mutex_lock(&d->lock);
		if (uhmm_interval_read_retry(&c0->mni, seq0) ||
		    uhmm_interval_read_retry(&c->mni, seq1)) {
			pthread_mutex_unlock(&d->lock);
			continue;
		}
		for (size_t i = 0; i < npages; i++) {
			/* Still held? (a CPU access may have revoked it already) */
			if (held[i] && uhmm_exclusive_held(d->mm, s + i * d->ps, &d->owner) == held[i])
				spt_set(d, (s >> d->shift) + i, (uint64_t)(uintptr_t)held[i] |
					SPT_VALID | SPT_WRITE | SPT_ATOMIC);
		}
		pthread_mutex_unlock(&d->lock);
		break;
	}
	sd_free(held, npages * sizeof(*held));
	if (st) {
		st->cpages = (uint64_t)got;
		st->faults = 0;
	}
	if (got != (long)npages)
		return uhmm_set_error(EPERM, "simdev exclusive: %ld of %zu pages taken (the "
				      "others are not private anonymous memory, or their "
				      "device could not give them back)", got, npages);
	return 0;
}

int uhmm_simdev_check_exclusive(struct uhmm_simdev *d, void *addr, size_t npages)
{
	SD_NO_SIGNALS;
	uintptr_t s = (uintptr_t)addr;
	int ret = check_range(d, addr, npages);

	if (ret)
		return ret;
	pthread_mutex_lock(&d->lock);
	for (size_t i = 0; i < npages && !ret; i++)
		if (spt_get(d, (s >> d->shift) + i) & SPT_ATOMIC)
			ret = -EPERM;
	pthread_mutex_unlock(&d->lock);
	if (ret)
		uhmm_set_error(EPERM, "simdev check exclusive: the device still holds a page "
			       "of the range");
	return ret;
}

/* ---- release: evict by device page range ------------------------------------------ */

/*
 * The simulated time of an eviction of @n device pages: one transfer per
 * batch of BATCH_PAGES migrated (the copy engine's descriptors).
 */
static void cost_evicted(struct uhmm_simdev *d, const uint64_t *src, size_t n)
{
	for (size_t b = 0; b < n; b += BATCH_PAGES) {
		size_t moved = 0;

		for (size_t i = b; i < n && i < b + BATCH_PAGES; i++)
			moved += (src[i] & UHMM_MIGRATE_PFN_MIGRATE) != 0;
		sd_cost_transfer(&d->cost, false, (uint64_t)moved * d->ps);
	}
}

int uhmm_simdev_release(struct uhmm_simdev *d)
{
	SD_NO_SIGNALS;
	size_t n = d ? d->pgmap.nr_pages : 0;
	uint64_t *src, *dst;
	uint64_t first;
	int ret;

	if (!d)
		return uhmm_set_error(EINVAL, "simdev release: NULL device");
	/*
	 * The arrays are the device's own mapping, not the heap: a freed
	 * heap block may still be in this device's memory, and collecting it
	 * freezes the page this would write (docs/CONCURRENCY.md).
	 */
	src = mmap(NULL, 2 * n * sizeof(*src), PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (src == MAP_FAILED)
		return uhmm_set_error(ENOMEM, "simdev release: out of memory");
	dst = src + n;
	first = uhmm_page_to_pfn(uhmm_devmem_page(&d->pgmap, 0));
	ret = uhmm_migrate_device_range(d->mm, src, first, n);
	if (!ret) {
		for (size_t i = 0; i < n; i++)
			if (src[i] & UHMM_MIGRATE_PFN_MIGRATE)
				dst[i] = uhmm_migrate_pfn((uintptr_t)(d->arena + i * d->ps) >>
							  d->shift);
		uhmm_migrate_device_pages(d->mm, src, dst, n);
		cost_evicted(d, src, n);
		for (size_t i = 0; i < n; i++)
			if (src[i] & UHMM_MIGRATE_PFN_MIGRATE)
				atomic_fetch_add(&d->c_evicted, 1);
		uhmm_migrate_device_finalize(d->mm, src, dst, n);
	}
	munmap(src, 2 * n * sizeof(*src));
	return ret;
}

/*
 * Evict up to @want resident pages, oldest allocation slot first (a clock
 * hand over the pool), by device pfn: the device does not need to know
 * their addresses.  Returns pages evicted.
 */
static size_t evict_some(struct uhmm_simdev *d, size_t want)
{
	size_t n = d->pgmap.nr_pages, batch = want < BATCH_PAGES ? want : BATCH_PAGES;
	uint64_t src[BATCH_PAGES], dst[BATCH_PAGES];
	size_t got = 0, scanned = 0, done = 0;

	pthread_mutex_lock(&d->evict_lock);
	while (got < batch && scanned < n) {
		struct uhmm_page *p = uhmm_devmem_page(&d->pgmap, d->clock_hand);

		d->clock_hand = (d->clock_hand + 1) % n;
		scanned++;
		if (uhmm_page_refcount(p) > 0)
			src[got++] = uhmm_page_to_pfn(p);
	}
	pthread_mutex_unlock(&d->evict_lock);
	if (!got || uhmm_migrate_device_pfns(d->mm, src, got))
		return 0;
	for (size_t i = 0; i < got; i++) {
		struct uhmm_page *p;

		dst[i] = 0;
		if (!(src[i] & UHMM_MIGRATE_PFN_MIGRATE))
			continue;
		p = uhmm_pfn_to_page(d->mm, uhmm_migrate_pfn_to_pfn(src[i]));
		dst[i] = uhmm_migrate_pfn((uintptr_t)page_mem(d, p) >> d->shift);
	}
	uhmm_migrate_device_pages(d->mm, src, dst, got);
	cost_evicted(d, src, got);
	for (size_t i = 0; i < got; i++)
		done += (src[i] & UHMM_MIGRATE_PFN_MIGRATE) != 0;
	uhmm_migrate_device_finalize(d->mm, src, dst, got);
	atomic_fetch_add(&d->c_evicted, done);
	return done;
}

int uhmm_simdev_get_counters(struct uhmm_simdev *d, struct uhmm_simdev_counters *o)
{
	if (!d || !o)
		return uhmm_set_error(EINVAL, "simdev get counters: NULL argument");
	o->to_dev_pages = atomic_load(&d->c_to_dev);
	o->to_sys_pages = atomic_load(&d->c_to_sys);
	o->cpu_faults = atomic_load(&d->c_cpu_faults);
	o->cpu_fault_pages = atomic_load(&d->c_cpu_fault_pages);
	o->evicted_pages = atomic_load(&d->c_evicted);
	o->device_faults = atomic_load(&d->c_dev_faults);
	return 0;
}

int uhmm_simdev_set_flags(struct uhmm_simdev *d, unsigned int flags)
{
	SD_NO_SIGNALS;
	if (!d || (flags & ~UHMM_SIMDEV_FAIL_ALLOC))
		return uhmm_set_error(EINVAL, "simdev set flags: %s", !d ? "NULL device" :
				      "unknown flags");
	pthread_mutex_lock(&d->lock);
	d->flags = flags;
	pthread_mutex_unlock(&d->lock);
	return 0;
}

size_t uhmm_simdev_used_pages(struct uhmm_simdev *d)
{
	if (!d) {
		uhmm_set_error(EINVAL, "simdev used pages: NULL device");
		return 0;
	}
	return atomic_load(&d->used);
}

/* ---- compute -------------------------------------------------------------------- */

static bool policy_migrate(struct uhmm_simdev *d)
{
	return d->cfg.policy == UHMM_SIMDEV_POLICY_MIGRATE;
}

/*
 * Device address translation.  Each compute thread caches translations in
 * its own TLB, all taken in one generation of the device page table
 * (t->gen, published in t->active).  Every change that removes entries
 * (an invalidation, a migration home unmapping what it collected) clears
 * them under dev->lock, bumps dev->gen, and then waits until every
 * compute thread has either dropped its epoch (active 0) or taken a newer
 * one (active >= the new gen): tlb_shootdown().
 *
 * The fast path (tlb_lookup) is the TLB probe plus one relaxed load of
 * dev->gen; no store, no barrier.  That is enough:
 *  - a thread only moves to a newer epoch in translate_slow(), which
 *    flushes its TLB first, and publishes it with a store that is ordered
 *    after every access it made through the old translations (release, as
 *    the store of 0 when it drops the epoch).  The invalidator reads
 *    active with acquire: once it sees the thread past the old generation,
 *    every access through a cleared entry is complete and visible to it,
 *    and none can follow, before its callback returns;
 *  - a relaxed load that still returns the old dev->gen only lets the
 *    thread go on using translations the invalidator is waiting for it to
 *    drop: it waits for that; coherent caches make the new value visible
 *    to the thread's next loads, so the wait ends at its next access;
 *  - entries are read and epochs taken under dev->lock, and dev->gen
 *    changes only under it after the entries are cleared, so a thread
 *    never caches an entry cleared in a generation it already holds.
 * The cost: an invalidation waits until each running compute thread makes
 * its next device access (or finishes its work); a kernel must therefore
 * reach memory that may be in device memory only through the access
 * functions (a direct CPU access from kernel code to such a page would
 * wait for an invalidation that waits for it).
 */
static inline unsigned int tlb_set(uint64_t vpn)
{
	/* Hashed: buffers a multiple of TLB_SETS pages apart must not collide. */
	return (unsigned int)((vpn * UINT64_C(0x9e3779b97f4a7c15)) >> 57) & (TLB_SETS - 1);
}

/* Forget every cached translation (the thread's epoch changes). */
static void tlb_flush(struct uhmm_simdev_thread *t)
{
	memset(t->tlb, 0, sizeof(t->tlb));
	t->ld_vpn = t->st_vpn = UINT64_MAX;
}

/* Drop the thread's epoch before it may wait (release: its accesses are done). */
static void epoch_drop(struct uhmm_simdev_thread *t)
{
	t->gen = 0;
	atomic_store_explicit(&t->active, 0, memory_order_release);
}

/*
 * Make @e (valid for the access) the page the next access of the same kind
 * (read; write or atomic) tries first: a kernel reading one array and
 * writing another keeps both.
 */
static char *use_entry(struct uhmm_simdev_thread *t, uint64_t vpn, uint64_t e, uintptr_t addr,
		       bool write)
{
	/* Unsigned: the difference wraps, the sum does not (no pointer overflow). */
	uintptr_t delta = (uintptr_t)entry_ptr(e) - (uintptr_t)(vpn << t->shift);

	if (write) {
		t->st_vpn = vpn;
		t->st_delta = delta;
	} else {
		t->ld_vpn = vpn;
		t->ld_delta = delta;
	}
	return (char *)(delta + addr);
}

static inline char *tlb_lookup(struct uhmm_simdev_thread *t, uintptr_t addr, bool write)
{
	uint64_t vpn = addr >> t->shift;
	struct tlb_entry *set = t->tlb[tlb_set(vpn)];
	uint64_t e;

	if (set[0].vpn == vpn)
		e = set[0].e;
	else if (set[1].vpn == vpn)
		e = set[1].e;
	else
		return NULL;
	if (t->gen != __atomic_load_n(t->devgen, __ATOMIC_RELAXED) || !entry_ok(e, write))
		return NULL;
	return use_entry(t, vpn, e, addr, write);
}

/*
 * The simulated time of a TLB fill: the thread will stream the page once,
 * over device memory or, for system memory accessed in place, the link.
 */
static void cost_fill(struct uhmm_simdev *d, uint64_t e, bool write)
{
	sd_cost_access(&d->cost, (e & SPT_DEV) != 0, write, d->ps);
}

/*
 * The slow path: walk the device page table, device fault, migrate on
 * touch.  Returns the host pointer (the thread holding an epoch in which
 * it is valid), or NULL with t->err set.
 */
static bool hooks_fault(struct uhmm_simdev *d, uintptr_t page, bool write);

static char *translate_slow(struct uhmm_simdev_thread *t, uintptr_t addr, bool write)
{
	struct uhmm_simdev *d = t->dev;
	uint64_t vpn = addr >> d->shift;
	unsigned int si = tlb_set(vpn);
	char *p;

	if (t->err)
		return NULL;
	p = tlb_lookup(t, addr, write);
	if (p)
		return p;
	for (int tries = 0; tries < 1000; tries++) {
		unsigned long g;
		uint64_t e;

		pthread_mutex_lock(&d->lock);
		g = atomic_load_explicit(&d->gen, memory_order_relaxed);
		if (t->gen != g) {
			/* A new epoch: nothing cached from an older one stays. */
			tlb_flush(t);
			t->gen = g;
			atomic_store_explicit(&t->active, g, memory_order_release);
		}
		e = spt_get(d, vpn);
		if (entry_ok(e, write)) {
			unsigned int way = t->lru[si] ^ 1;

			t->tlb[si][way] = (struct tlb_entry){ .vpn = vpn, .e = e };
			t->lru[si] = (uint8_t)way;
			pthread_mutex_unlock(&d->lock);
			cost_fill(d, e, write);
			return use_entry(t, vpn, e, addr, write);
		}
		pthread_mutex_unlock(&d->lock);
		/* Device fault: it may wait (migrations, invalidations). */
		epoch_drop(t);
		{
			uintptr_t page = addr & ~(uintptr_t)(d->ps - 1);
			size_t w = d->cfg.migrate_window;
			uintptr_t ws = page & ~(uintptr_t)(w * d->ps - 1), we = ws + w * d->ps;
			int ret;

			if (__atomic_load_n(&d->hooks, __ATOMIC_ACQUIRE)) {
				if (hooks_fault(d, page, write))
					continue;	/* a copy was mapped: translate again */
			} else if (policy_migrate(d) && !(e & SPT_DEV)) {
				struct uhmm_mapping map;
				bool af = false;
				long m;

				if (!uhmm_find_mapping(d->mm, page, &map) && map.start <= page) {
					if (ws < map.start)
						ws = map.start;
					if (we > map.end)
						we = map.end;
					m = migrate_piece_to_dev(d, ws, we, &af);
					if (af && d->cfg.evict_when_full &&
					    evict_some(d, 4 * d->cfg.migrate_window)) {
						long m2 = migrate_piece_to_dev(d, ws, we, &af);

						m = (m > 0 ? m : 0) + (m2 > 0 ? m2 : 0);
					}
					if (m > 0)
						t->cpages += (uint64_t)m;
				}
			}
			ret = device_fault(d, page, page + d->ps, write, &t->faults);
			/*
			 * A policy layer's write fault on a read-mostly page
			 * collapses its copies and gives the CPU write access,
			 * but another device thread's read fault may write-
			 * protect it again (a new copy) before this range
			 * fault: fault again (the layer collapses again), as
			 * for a page table that changed.  A page that stays
			 * read-only gets -EPERM once the tries run out.
			 */
			if (ret == -EPERM && write && __atomic_load_n(&d->hooks, __ATOMIC_ACQUIRE) &&
			    tries + 1 < 1000) {
				continue;
			}
			if (ret) {
				t->err = ret;	/* t->gen is 0: every access takes this path */
				snprintf(t->reason, sizeof(t->reason), "%s", uhmm_last_error());
				return NULL;
			}
		}
	}
	epoch_drop(t);
	t->err = -EBUSY;
	snprintf(t->reason, sizeof(t->reason), "the device page table kept changing");
	return NULL;
}

/*
 * The fast path: the page of the thread's last read (or write) again, in
 * the same generation.  A thread with an error holds no epoch (gen 0, which
 * no generation equals) and always takes the slow path, which refuses.
 */
static inline char *translate(struct uhmm_simdev_thread *t, uintptr_t addr, bool write)
{
	char *p = uhmm_simdev__hit(t, (const void *)addr, write);

	return __builtin_expect(p != NULL, 1) ? p : translate_slow(t, addr, write);
}

/* An access with no device thread: ignored (loads give 0). */
static bool no_thread(void)
{
	uhmm_set_error(EINVAL, "simdev access: NULL device thread");
	return true;
}

#define ACCESS(type, name, op)							\
	type name(struct uhmm_simdev_thread *t, const void *addr)		\
	{									\
		char *p;							\
		type v;								\
										\
		if (__builtin_expect(!t, 0) && no_thread())			\
			return 0;						\
		p = translate(t, (uintptr_t)addr, false);			\
		if (!p)								\
			return 0;						\
		v = op;								\
		return v;							\
	}

ACCESS(uint64_t, uhmm_simdev_load64_slow, __atomic_load_n((uint64_t *)p, __ATOMIC_RELAXED))
ACCESS(uint32_t, uhmm_simdev_load32_slow, __atomic_load_n((uint32_t *)p, __ATOMIC_RELAXED))

#define STORE(type, name)							\
	void name(struct uhmm_simdev_thread *t, void *addr, type v)		\
	{									\
		char *p;							\
										\
		if (__builtin_expect(!t, 0) && no_thread())			\
			return;							\
		p = translate(t, (uintptr_t)addr, true);			\
		if (!p)								\
			return;							\
		__atomic_store_n((type *)p, v, __ATOMIC_RELAXED);		\
	}

STORE(uint64_t, uhmm_simdev_store64_slow)
STORE(uint32_t, uhmm_simdev_store32_slow)

uint64_t uhmm_simdev_atomic_add64_slow(struct uhmm_simdev_thread *t, void *addr, uint64_t v)
{
	char *p;
	uint64_t old;

	if (__builtin_expect(!t, 0) && no_thread())
		return 0;
	p = translate(t, (uintptr_t)addr, true);
	if (!p)
		return 0;
	old = __atomic_fetch_add((uint64_t *)p, v, __ATOMIC_SEQ_CST);
	return old;
}

uint32_t uhmm_simdev_atomic_add32_slow(struct uhmm_simdev_thread *t, void *addr, uint32_t v)
{
	char *p;
	uint32_t old;

	if (__builtin_expect(!t, 0) && no_thread())
		return 0;
	p = translate(t, (uintptr_t)addr, true);
	if (!p)
		return 0;
	old = __atomic_fetch_add((uint32_t *)p, v, __ATOMIC_SEQ_CST);
	return old;
}

struct launch {
	struct uhmm_simdev *dev;
	struct uhmm_simdev_thread *t;
	size_t first, last;
	uhmm_simdev_kernel fn;
	void *arg;
	atomic_int *stop;
};

static void *worker(void *arg)
{
	struct launch *l = arg;

	atomic_store(&l->t->self, (unsigned long)pthread_self());
	for (size_t i = l->first; i < l->last && !l->t->err && !atomic_load(l->stop); i++)
		l->fn(l->t, i, l->arg);
	epoch_drop(l->t);	/* done: invalidations no longer wait for it */
	if (l->t->err)
		atomic_store(l->stop, 1);
	return NULL;
}

int uhmm_simdev_launch(struct uhmm_simdev *d, size_t nitems, uhmm_simdev_kernel fn, void *arg,
		       struct uhmm_simdev_stats *st)
{
	SD_NO_SIGNALS;
	unsigned int nt;
	struct uhmm_simdev_thread *ts;
	struct launch *ls;
	pthread_t *th;
	atomic_int stop = 0;
	int ret = 0;

	if (!d || !fn)
		return uhmm_set_error(EINVAL, "simdev launch: NULL %s", !d ? "device" : "kernel");
	nt = d->cfg.threads;
	if (nitems < nt)
		nt = nitems ? (unsigned int)nitems : 1;
	ts = sd_calloc(nt, sizeof(*ts));
	ls = sd_calloc(nt, sizeof(*ls));
	th = sd_calloc(nt, sizeof(*th));
	if (!ts || !ls || !th) {
		sd_free(ts, nt * sizeof(*ts));
		sd_free(ls, nt * sizeof(*ls));
		sd_free(th, nt * sizeof(*th));
		return uhmm_set_error(ENOMEM, "simdev launch: out of memory");
	}
	pthread_mutex_lock(&d->lock);
	if (d->workers) {
		pthread_mutex_unlock(&d->lock);
		sd_free(ts, nt * sizeof(*ts));
		sd_free(ls, nt * sizeof(*ls));
		sd_free(th, nt * sizeof(*th));
		return uhmm_set_error(EBUSY, "simdev launch: another launch is running "
				      "on this device");	/* one launch at a time */
	}
	d->workers = ts;
	d->nworkers = nt;
	pthread_mutex_unlock(&d->lock);
	for (unsigned int i = 0; i < nt; i++) {
		ts[i].dev = d;
		ts[i].devgen = (const unsigned long *)&d->gen;
		ts[i].shift = d->shift;
		ts[i].ps = d->ps;
		ts[i].ld_vpn = ts[i].st_vpn = UINT64_MAX;
		ls[i] = (struct launch){
			.dev = d, .t = &ts[i], .fn = fn, .arg = arg, .stop = &stop,
			.first = nitems * i / nt, .last = nitems * (i + 1) / nt,
		};
		if (pthread_create(&th[i], NULL, worker, &ls[i])) {
			ts[i].err = -EAGAIN;
			snprintf(ts[i].reason, sizeof(ts[i].reason), "cannot start a device thread");
			th[i] = 0;
		}
	}
	for (unsigned int i = 0; i < nt; i++) {
		if (th[i])
			pthread_join(th[i], NULL);
		if (ts[i].err && !ret) {
			ret = ts[i].err;
			/* The reason was recorded on the device thread: give it here. */
			uhmm_set_error(-ret, "simdev launch: device thread %u: %s", i,
				       ts[i].reason);
		}
		if (st) {
			st->faults += ts[i].faults;
			st->cpages += ts[i].cpages;
		}
	}
	pthread_mutex_lock(&d->lock);
	d->workers = NULL;
	d->nworkers = 0;
	while (d->shootdowns)
		pthread_cond_wait(&d->shootdown_done, &d->lock);
	pthread_mutex_unlock(&d->lock);
	sd_free(ts, nt * sizeof(*ts));
	sd_free(ls, nt * sizeof(*ls));
	sd_free(th, nt * sizeof(*th));
	return ret;
}

/* ---- create / destroy --------------------------------------------------------------- */

int uhmm_simdev_create(const struct uhmm_simdev_config *cfg, struct uhmm_simdev **out)
{
	SD_NO_SIGNALS;
	struct uhmm_simdev *d;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	int ret;

	if (!out)
		return uhmm_set_error(EINVAL, "simdev create: NULL out");
	*out = NULL;
	/* The pool's limit; also keeps the arena and free-list sizes from overflowing. */
	if (cfg && cfg->capacity_pages >= (UINT64_C(1) << 32))
		return uhmm_set_error(EINVAL, "simdev create: capacity of %zu pages is too big",
				      cfg->capacity_pages);
	d = sd_calloc(1, sizeof(*d));
	if (!d)
		return uhmm_set_error(ENOMEM, "simdev create: out of memory");
	if (cfg)
		d->cfg = *cfg;
	if (!d->cfg.capacity_pages)
		d->cfg.capacity_pages = 65536;
	if (d->cfg.huge_pages > ((UINT64_C(1) << 32) - d->cfg.capacity_pages) / 512 ||
	    (d->cfg.huge_pages && sysconf(_SC_PAGESIZE) != 4096)) {
		sd_free(d, sizeof(*d));
		return uhmm_set_error(EINVAL, "simdev create: %zu huge pages: too many, or "
				      "the page size is not 4 KiB", cfg->huge_pages);
	}
	d->total = d->cfg.huge_pages * 512 + d->cfg.capacity_pages;
	if (!d->cfg.threads)
		d->cfg.threads = ncpu > 0 ? (unsigned int)(ncpu < 8 ? ncpu : 8) : 2;
	if (d->cfg.threads > MAX_THREADS)
		d->cfg.threads = MAX_THREADS;
	if (!d->cfg.migrate_window)
		d->cfg.migrate_window = 16;
	if ((d->cfg.migrate_window & (d->cfg.migrate_window - 1)) ||
	    d->cfg.policy > UHMM_SIMDEV_POLICY_MIGRATE) {
		bool bad_policy = d->cfg.policy > UHMM_SIMDEV_POLICY_MIGRATE;

		sd_free(d, sizeof(*d));
		return uhmm_set_error(EINVAL, "simdev create: %s", bad_policy ?
				      "unknown policy" : "migrate_window is not a power of two");
	}
	d->ps = (size_t)sysconf(_SC_PAGESIZE);
	d->shift = (unsigned int)__builtin_ctzl(d->ps);
	pthread_mutex_init(&d->lock, NULL);
	pthread_mutex_init(&d->chunk_lock, NULL);
	pthread_mutex_init(&d->evict_lock, NULL);
	pthread_cond_init(&d->shootdown_done, NULL);
	sd_cost_init(&d->cost);
	ret = sd_cost_from_env(&d->cost);
	if (ret)
		goto err_free;
	/* A thread's active = 0 means "no access": generations start at 1. */
	atomic_store(&d->gen, 1);
	ret = uhmm_mm_get(&d->mm);
	if (ret)
		goto err_free;
	ret = -ENOMEM;
	d->arena = mmap(NULL, d->total * d->ps, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (d->arena == MAP_FAILED) {
		uhmm_set_error(ENOMEM, "simdev create: no memory for the device arena");
		goto err_mm;
	}
	d->free_list = sd_calloc(d->cfg.capacity_pages, sizeof(size_t));
	if (!d->free_list) {
		uhmm_set_error(ENOMEM, "simdev create: no memory for the free list");
		goto err_arena;
	}
	for (size_t i = 0; i < d->cfg.capacity_pages; i++)
		d->free_list[i] = d->total - 1 - i;
	d->nr_free = d->cfg.capacity_pages;
	if (d->cfg.huge_pages) {
		d->free_huge = sd_calloc(d->cfg.huge_pages, sizeof(size_t));
		if (!d->free_huge) {
			uhmm_set_error(ENOMEM, "simdev create: no memory for the free list");
			goto err_list;
		}
		for (size_t i = 0; i < d->cfg.huge_pages; i++)
			d->free_huge[i] = (d->cfg.huge_pages - 1 - i) * 512;
		d->nr_free_huge = d->cfg.huge_pages;
		d->pgmap.flags = UHMM_DEVMEM_COMPOUND;
	}
	d->pgmap.ops = &simdev_ops;
	d->pgmap.owner = &d->owner;
	d->pgmap.nr_pages = d->total;
	d->pgmap.fault_around = d->cfg.fault_around;
	d->pgmap.driver_data = d;
	ret = uhmm_devmem_add(d->mm, &d->pgmap);
	if (ret)
		goto err_list;
	*out = d;
	return 0;

err_list:
	sd_free(d->free_huge, d->cfg.huge_pages * sizeof(size_t));
	sd_free(d->free_list, d->cfg.capacity_pages * sizeof(size_t));
err_arena:
	munmap(d->arena, d->total * d->ps);
err_mm:
	uhmm_mm_put(d->mm);
err_free:
	sd_cost_fini(&d->cost);
	pthread_mutex_destroy(&d->lock);
	pthread_mutex_destroy(&d->chunk_lock);
	sd_free(d, sizeof(*d));
	return ret;
}

void uhmm_simdev_destroy(struct uhmm_simdev *d)
{
	SD_NO_SIGNALS;
	if (!d)
		return;
	uhmm_simdev_release(d);		/* bulk eviction first */
	uhmm_devmem_remove(&d->pgmap);	/* anything left comes home too */
	for (unsigned int i = 0; i < d->nchunks; i++) {
		uhmm_interval_notifier_remove(&d->chunks[i]->mni);
		sd_free(d->chunks[i], sizeof(*d->chunks[i]));
	}
	spt_free_rec(d->spt_root, LEVELS - 1);
	munmap(d->arena, d->total * d->ps);
	sd_free(d->free_list, d->cfg.capacity_pages * sizeof(size_t));
	sd_free(d->free_huge, d->cfg.huge_pages * sizeof(size_t));
	uhmm_mm_put(d->mm);
	sd_cost_fini(&d->cost);
	pthread_mutex_destroy(&d->lock);
	pthread_mutex_destroy(&d->chunk_lock);
	sd_free(d, sizeof(*d));
}

/* ---- a policy layer's hooks (simdev/simdev_hooks.h) ---------------------------------- */

void uhmm_simdev__set_hooks(struct uhmm_simdev *d, const struct uhmm_simdev__hooks *h)
{
	__atomic_store_n(&d->hooks, h, __ATOMIC_RELEASE);
}

/* Drop the device page-table entries of [addr, addr + npages pages). */
int uhmm_simdev__unmap(struct uhmm_simdev *d, uintptr_t addr, size_t npages)
{
	SD_NO_SIGNALS;
	uintptr_t end = addr + npages * d->ps;

	pthread_mutex_lock(&d->lock);
	inval_blocks(d, addr, end, 1);	/* a migration in flight does not map them */
	spt_clear_rec(d->spt_root, LEVELS - 1, 0, addr >> d->shift, end >> d->shift);
	flush_and_unlock(d);
	return 0;
}

const void *uhmm_simdev__owner(struct uhmm_simdev *d)
{
	return &d->owner;
}

size_t uhmm_simdev__capacity(struct uhmm_simdev *d)
{
	return d->cfg.capacity_pages;
}

static void hooks_pages_home(struct uhmm_simdev *d, uintptr_t fault, uintptr_t s, uintptr_t e)
{
	const struct uhmm_simdev__hooks *h = __atomic_load_n(&d->hooks, __ATOMIC_ACQUIRE);

	if (h)
		h->pages_home(h->arg, fault, s, e);
}

/*
 * A compute thread's device fault, with no lock and no epoch held: the
 * layer migrates what it decides; true when it gave a read-only copy that
 * is now mapped (or went stale meanwhile): the caller translates again.
 */
static bool hooks_fault(struct uhmm_simdev *d, uintptr_t page, bool write)
{
	const struct uhmm_simdev__hooks *h = __atomic_load_n(&d->hooks, __ATOMIC_ACQUIRE);
	const void *copy = NULL;
	uint64_t cookie = 0;

	if (!h->device_fault(h->arg, page, write, &copy, &cookie))
		return false;
	pthread_mutex_lock(&d->lock);
	if (h->copy_valid(h->arg, page, cookie))
		spt_set(d, page >> d->shift, (uint64_t)(uintptr_t)copy | SPT_VALID);
	pthread_mutex_unlock(&d->lock);
	return true;
}

/* ---- cost model (cost.c) ------------------------------------------------------------ */

int uhmm_simdev_set_model(struct uhmm_simdev *d, const struct uhmm_simdev_model *m)
{
	SD_NO_SIGNALS;	/* the cost model's lock (see "signals") */
	if (!d)
		return uhmm_set_error(EINVAL, "simdev set model: NULL device");
	return sd_cost_set(&d->cost, m);
}

int uhmm_simdev_get_model(struct uhmm_simdev *d, struct uhmm_simdev_model *out)
{
	if (!d || !out)
		return uhmm_set_error(EINVAL, "simdev get model: NULL argument");
	if (sd_cost_model(&d->cost, out))
		return uhmm_set_error(ENOENT, "simdev get model: the device has no model");
	return 0;
}

int uhmm_simdev_get_cost(struct uhmm_simdev *d, struct uhmm_simdev_cost *out)
{
	if (!d || !out)
		return uhmm_set_error(EINVAL, "simdev get cost: NULL argument");
	sd_cost_get(&d->cost, out);
	return 0;
}

int uhmm_simdev_reset_cost(struct uhmm_simdev *d)
{
	SD_NO_SIGNALS;	/* the cost model's lock (see "signals") */
	if (!d)
		return uhmm_set_error(EINVAL, "simdev reset cost: NULL device");
	sd_cost_reset(&d->cost);
	return 0;
}
