// SPDX-License-Identifier: MIT
/*
 * Migration between system memory and device pages (migrate_vma_* and
 * migrate_device_*).
 *
 * Freezing a system page: the page is claimed in the special-entry table
 * (MIGRATING) before it leaves the CPU page table, so a CPU access that
 * finds the page gone faults into uhmm's service thread, which sees the claim
 * and leaves the thread asleep until finalize wakes it.  The page itself is
 * taken out with UFFDIO_MOVE into a staging area at the same offsets (no
 * copy); the driver reads it there.  Without UFFDIO_MOVE (or where the
 * kernel refuses it: read-only or mlocked mappings), the whole range is
 * moved with mremap(MREMAP_DONTUNMAP), which also leaves the range mapped
 * with empty entries.  A page that does not migrate is moved back (or, on
 * the mremap path, copied back).
 *
 * Installing a system page (device to system): the driver copies into a
 * staging page uhmm_migrate_alloc_sys() gives; finalize moves it into place
 * with UFFDIO_MOVE (UFFDIO_COPY without it, or from the driver's own buffer).
 *
 * While a migration runs it holds mm->migrate_lock for reading (fork takes
 * it for writing).
 */
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"
#include "sigblock.h"
#include "managed.h"

__thread bool uhmm__holds_migrate_lock;
__thread int uhmm__install_err;

/*
 * Device -> system installs from staging: UFFDIO_MOVE takes the staged page
 * as it is (no second copy) but clears and flushes the staging entry page
 * by page; UFFDIO_COPY allocates and copies.  UHMM_INSTALL=copy|move picks
 * (default move); docs/PERFORMANCE.md has the measurements.
 */
static bool install_by_move = true;
#define MOVE_MIN_PAGES	8	/* shorter runs of staged pages install by copy */

__attribute__((constructor)) static void install_mode_init(void)
{
	const char *v = getenv("UHMM_INSTALL");

	if (v && !strcmp(v, "copy"))
		install_by_move = false;
}

enum uhmm__entry_kind { K_NONE = 0, K_SYS, K_DEV };

struct uhmm_migrate_state {
	char *staging;		/* page i of the range <-> staging + i pages */
	void *map;		/* the staging mapping */
	size_t map_len;
	bool registered;	/* staging registered with the uffd */
	bool by_mremap;		/* frozen with mremap(MREMAP_DONTUNMAP) */
	bool locked;		/* took migrate_lock */
	bool inv_active;	/* the MIGRATE invalidation is open */
	uint8_t *kind;
	uint64_t *orig;		/* the entry before the migration claimed it */
	uint64_t *dst_given;	/* alloc_sys pages handed out (bitmap) */
	struct uhmm__stage_entry *cache;	/* staging borrowed from the staging cache */
};

/* ---- small helpers ----------------------------------------------------- */

static _Atomic uint64_t *slot_of(struct uhmm_mm *mm, uintptr_t a)
{
	return uhmm__ptable_slot(&mm->ptable, a, true);
}

void uhmm__eagain_backoff(struct uhmm_mm *mm)
{
	/* The reader thread reads the pending event whoever we are. */
	(void)mm;
	sched_yield();
}

/*
 * How many of the pages at [@src, @src + @len) a failed UFFDIO_MOVE did move
 * to @dst after all, counted from the start.  Linux 6.18 can move a whole
 * run out of a PTE-mapped THP that another thread is splitting and still
 * report -EEXIST (tests/test_migrate_thp.c shows it): the page tables
 * are the truth.  Both ends are uhmm's alone here (fresh or cached staging,
 * or an address held MIGRATING), so data at @dst with none left at @src is
 * the page that moved; with @holes, an empty pair is a hole moved.
 */
static size_t moved_anyway(uintptr_t dst, uintptr_t src, size_t len, bool holes)
{
	const unsigned int ps = uhmm__page_shift;
	uint8_t d[512], sv[512];
	size_t n = 0, npages = len >> ps;

	while (n < npages) {
		size_t k = UHMM_MIN((size_t)512, npages - n);

		if (uhmm__pagemap_has_data(dst + (n << ps), k, d) ||
		    uhmm__pagemap_has_data(src + (n << ps), k, sv))
			break;
		for (size_t i = 0; i < k; i++, n++) {
			/* A uffd-wp marker holds no data (wpmarker.c). */
			bool sdata = sv[i] && sv[i] != UHMM__PM_MARKER;
			bool ddata = d[i] && d[i] != UHMM__PM_MARKER;

			if (sdata || (!ddata && !holes))
				return n << ps;
		}
	}
	return n << ps;
}

/* UFFDIO_MOVE [src, src+len) -> dst; returns bytes moved and -errno in *err. */
static size_t do_move(struct uhmm_mm *mm, uintptr_t dst, uintptr_t src, size_t len,
		      bool holes, int *err)
{
	size_t done = 0;

	*err = 0;
	while (done < len) {
		struct uffdio_move mv = {
			.dst = dst + done, .src = src + done, .len = len - done,
			/* Waiters are woken by finalize, after the bookkeeping. */
			.mode = UFFDIO_MOVE_MODE_DONTWAKE |
				(holes ? UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES : 0),
		};

		if (uhmm__uffd_ioctl(mm->uffd, UFFDIO_MOVE, &mv) == 0) {
			done = len;
			break;
		}
		if (mv.move > 0)
			done += (size_t)mv.move;
		if (errno == EAGAIN) {
			if (mv.move <= 0)
				uhmm__eagain_backoff(mm);
			continue;
		}
		*err = -errno;
		{
			size_t more = moved_anyway(dst + done, src + done, len - done, holes);

			if (more) {
				/* Moved after all: go on from the first page that did not. */
				done += more;
				*err = 0;
				continue;
			}
		}
		break;
	}
	return done;
}

/* UFFDIO_COPY one run; retries EAGAIN. */
static int do_copy(struct uhmm_mm *mm, uintptr_t dst, uintptr_t src, size_t len)
{
	size_t done = 0;

	while (done < len) {
		struct uffdio_copy c = {
			.dst = dst + done, .src = src + done, .len = len - done,
			.mode = UFFDIO_COPY_MODE_DONTWAKE,
		};

		if (uhmm__uffd_ioctl(mm->uffd, UFFDIO_COPY, &c) == 0)
			return 0;
		if (c.copy > 0)
			done += (size_t)c.copy;
		if (errno == EAGAIN) {
			if (c.copy <= 0)
				uhmm__eagain_backoff(mm);
			continue;
		}
		if (errno == EEXIST && c.copy <= 0) {
			/* Populated under a frozen page: a bug; never overwrite. */
			uhmm__warn("UFFDIO_COPY: %#lx already populated",
				   (unsigned long)(dst + done));
			done += uhmm__page_size;
			continue;
		}
		return -errno;
	}
	return 0;
}

__thread struct uhmm__wake_defer uhmm__wake_defer;

static void wake_range(struct uhmm_mm *mm, uintptr_t s, uintptr_t e)
{
	struct uffdio_range r = { .start = s, .len = e - s };

	if (uhmm__wake_defer.active) {
		/* Serving a CPU fault: wake once the fault path is done. */
		if (uhmm__wake_defer.end == 0) {
			uhmm__wake_defer.start = s;
			uhmm__wake_defer.end = e;
		} else {
			uhmm__wake_defer.start = UHMM_MIN(uhmm__wake_defer.start, s);
			uhmm__wake_defer.end = UHMM_MAX(uhmm__wake_defer.end, e);
		}
		return;
	}
	uhmm__uffd_ioctl(mm->uffd, UFFDIO_WAKE, &r);
}

/* Remember a boundary a registration may cut a mapping at (reg_lock held). */
static void note_split(struct uhmm_mm *mm, uintptr_t a)
{
	for (size_t i = 0; i < mm->nsplit; i++)
		if (mm->split[i] == a)
			return;
	if (mm->nsplit == mm->split_cap) {
		size_t cap = mm->split_cap ? mm->split_cap * 2 : 64;
		uintptr_t *n = uhmm__realloc(mm->split, cap * sizeof(*n));

		if (!n)
			return;
		mm->split = n;
		mm->split_cap = cap;
	}
	mm->split[mm->nsplit++] = a;
}

int uhmm__register_missing(struct uhmm_mm *mm, uintptr_t start, uintptr_t end)
{
	struct uffdio_register reg = {
		.range = { .start = start, .len = end - start },
		.mode = UFFDIO_REGISTER_MODE_MISSING,
	};
	int ret = 0;

	if (uhmm__has(UHMM_FEAT_UFFD_WP))
		reg.mode |= UFFDIO_REGISTER_MODE_WP;
	uhmm__managed_registered(start, end);	/* the wrappers' fast check */
	pthread_mutex_lock(&mm->reg_lock);
	if (uhmm__uffd_ioctl(mm->uffd, UFFDIO_REGISTER, &reg) < 0) {
		ret = -errno;
	} else {
		note_split(mm, start);
		note_split(mm, end);
	}
	pthread_mutex_unlock(&mm->reg_lock);
	return ret;
}

void uhmm__forget_splits(struct uhmm_mm *mm, uintptr_t start, uintptr_t end)
{
	pthread_mutex_lock(&mm->reg_lock);
	for (size_t i = 0; i < mm->nsplit;) {
		if (mm->split[i] >= start && mm->split[i] <= end)
			mm->split[i] = mm->split[--mm->nsplit];
		else
			i++;
	}
	pthread_mutex_unlock(&mm->reg_lock);
}

bool uhmm__is_our_split(struct uhmm_mm *mm, uintptr_t addr)
{
	bool ret = false;

	pthread_mutex_lock(&mm->reg_lock);
	for (size_t i = 0; i < mm->nsplit && !ret; i++)
		ret = mm->split[i] == addr;
	pthread_mutex_unlock(&mm->reg_lock);
	return ret;
}


/*
 * A staging mapping whose page i sits at the same 2 MiB offset as the
 * range's, so that a whole huge page can move with one PMD.  The mapping
 * is registered whole, not only the slots: it stays one VMA (a registered
 * middle would make three), which matters for the staging cache's count of
 * mappings.
 */
static int staging_create(struct uhmm_migrate_vma *m, bool reg)
{
	struct uhmm_migrate_state *s = m->state;
	const size_t huge = 2u << 20;
	size_t len = m->end - m->start;
	uintptr_t base, want;
	char *p;

	s->map_len = len + huge;
	p = uhmm__sys_mmap(NULL, s->map_len, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return -ENOMEM;
	base = (uintptr_t)p;
	want = (base & ~(uintptr_t)(huge - 1)) + (m->start & (huge - 1));
	if (want < base)
		want += huge;
	s->map = p;
	s->staging = (char *)want;
	{
		/*
		 * Under mlockall(MCL_FUTURE) the new mapping is VM_LOCKED and
		 * already populated, and UFFDIO_MOVE needs an empty
		 * destination whose VM_LOCKED matches the source's (which
		 * mlockall(MCL_CURRENT) locked too): empty it and keep it
		 * locked, on fault only.  The kernel migrates mlocked pages
		 * (mlock pins in RAM, not in place).
		 */
		unsigned char v = 0;

		if (mincore(p, uhmm__page_size, &v) == 0 && (v & 1) &&
		    munlock(p, s->map_len) == 0) {
			uhmm__sys_madvise(p, s->map_len, MADV_DONTNEED);
			mlock2(p, s->map_len, MLOCK_ONFAULT);
		}
	}
	/* Staging (and the staging cache) is never the child's business. */
	uhmm__sys_madvise(p, s->map_len, MADV_DONTFORK);
	if (reg) {
		struct uffdio_register r = {
			.range = { .start = base, .len = s->map_len },
			.mode = UFFDIO_REGISTER_MODE_WP,
		};

		pthread_mutex_lock(&m->mm->reg_lock);
		if (uhmm__uffd_ioctl(m->mm->uffd, UFFDIO_REGISTER, &r) == 0)
			s->registered = true;
		pthread_mutex_unlock(&m->mm->reg_lock);
		if (!s->registered)
			return -errno;
	}
	return 0;
}

static void staging_destroy(struct uhmm_mm *mm, struct uhmm_migrate_state *s)
{
	if (!s->map)
		return;
	if (s->registered) {
		struct uffdio_range r = { .start = (uintptr_t)s->map, .len = s->map_len };

		pthread_mutex_lock(&mm->reg_lock);
		uhmm__uffd_ioctl(mm->uffd, UFFDIO_UNREGISTER, &r);
		pthread_mutex_unlock(&mm->reg_lock);
	}
	uhmm__sys_munmap(s->map, s->map_len);
	s->map = NULL;
}

/* ---- the staging cache: system pages recycled for device->system ---------- */

/*
 * After a system->device migration, staging holds the old system copies of
 * pages whose data is now on the device.  The kernel frees such pages; here
 * they are kept, up to a bound, for the device->system migration that
 * brings the same addresses back: the data is copied into pages that exist
 * already (no allocation, zeroing, memcg charge or LRU insertion) and
 * finalize moves them into place with UFFDIO_MOVE, whole PMDs at a time
 * for 2 MiB-aligned THP staging.  Slot i of an entry mirrors address
 * start + i pages, so a migration of any part of [start, end) finds its
 * pages at the same offsets.  A slot's old content is never given out as
 * data: the driver (or uhmm, from the driver's buffer) overwrites the page
 * before it is installed.
 *
 * Bound: UHMM_STAGING_CACHE_MIB of pages handed in (default 1/64 of the
 * RAM, clamped to 64 MiB .. 1 GiB; 0 turns recycling off), at most
 * CACHE_MAX_ENTRIES mappings; the oldest entries go first.  An entry goes
 * as soon as its pages have been moved out, when a newer entry covers its
 * range, when the pool its pages went to is removed, and at context
 * teardown.  Staging is MADV_DONTFORK: a fork child
 * forgets the cache without touching it.
 */
#define CACHE_MAX_ENTRIES 256

struct uhmm__stage_entry {
	struct uhmm__stage_entry *next;
	uintptr_t start, end;		/* the range the slots mirror */
	uintptr_t staging;		/* slot of start */
	void *map;
	size_t map_len;
	size_t pages;			/* populated slots it still accounts for */
	const struct uhmm_devmem *pool;	/* where the pages went */
	unsigned long gen;		/* context generation it was made in */
	int users;			/* migrations using it now */
	bool registered;		/* [map, +map_len) registered WP */
	bool dead;			/* dropped while in use: the last user frees */
};

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct uhmm__stage_entry *cache_head;	/* newest first */
static size_t cache_pages, cache_entries;
/*
 * Entries emptied by a device->system migration, unmapped later by the next
 * cache_put() (or teardown): unregistering and unmapping would otherwise
 * add to a CPU fault's latency.  At most CACHE_MAX_DEAD wait.
 */
#define CACHE_MAX_DEAD 16
static struct uhmm__stage_entry *cache_dead;
static size_t cache_ndead;
static size_t cache_cap;		/* pages; SIZE_MAX until computed */
static pid_t cache_pid;

static void cache_atfork_child(void)
{
	/* The mappings are not in the child (MADV_DONTFORK): forget them. */
	pthread_mutex_init(&cache_lock, NULL);
	cache_head = NULL;
	cache_pages = 0;
	cache_entries = 0;
	cache_dead = NULL;
	cache_ndead = 0;
	cache_pid = getpid();
}

__attribute__((constructor)) static void cache_init(void)
{
	const char *v = getenv("UHMM_STAGING_CACHE_MIB");
	long phys = sysconf(_SC_PHYS_PAGES);
	size_t mib = 64;

	if (phys > 0)
		mib = UHMM_MIN((size_t)1024, UHMM_MAX((size_t)64,
			(size_t)phys / 64 * (size_t)sysconf(_SC_PAGESIZE) >> 20));
	if (v && *v)
		mib = strtoul(v, NULL, 0);
	cache_cap = (mib << 20) / (size_t)sysconf(_SC_PAGESIZE);
	cache_pid = getpid();
	pthread_atfork(NULL, NULL, cache_atfork_child);
}

/* Unmap an entry taken off the list (cache_lock not held). */
static void entry_destroy(struct uhmm_mm *mm, struct uhmm__stage_entry *e)
{
	if (e->registered && e->gen == mm->generation && mm->uffd >= 0) {
		struct uffdio_range r = { .start = (uintptr_t)e->map, .len = e->map_len };

		pthread_mutex_lock(&mm->reg_lock);
		uhmm__uffd_ioctl(mm->uffd, UFFDIO_UNREGISTER, &r);
		pthread_mutex_unlock(&mm->reg_lock);
	}
	uhmm__sys_munmap(e->map, e->map_len);
	uhmm__free(e);
}

/*
 * Unlink the entry at *@pp (cache_lock held) and, unless a migration uses
 * it (its last user frees it then), add it to @victims for entry_destroy().
 */
static void entry_unlink(struct uhmm__stage_entry **pp, struct uhmm__stage_entry **victims)
{
	struct uhmm__stage_entry *e = *pp;

	*pp = e->next;
	cache_pages -= e->pages;
	cache_entries--;
	e->pages = 0;
	if (e->users) {
		e->dead = true;
		return;
	}
	e->next = *victims;
	*victims = e;
}

/* Drop entries of another context or process (cache_lock held). */
static void cache_check_owner(struct uhmm_mm *mm, struct uhmm__stage_entry **victims)
{
	if (cache_pid != getpid()) {
		/* A child made without pthread_atfork: nothing here is ours. */
		cache_head = cache_dead = NULL;
		cache_pages = cache_entries = cache_ndead = 0;
		cache_pid = getpid();
		return;
	}
	for (struct uhmm__stage_entry **pp = &cache_head, *e; (e = *pp);) {
		if (e->gen != mm->generation) {
			entry_unlink(pp, victims);
			continue;
		}
		pp = &e->next;
	}
}

/* Take the emptied entries waiting to be unmapped (cache_lock held). */
static void take_dead(struct uhmm__stage_entry **victims)
{
	while (cache_dead) {
		struct uhmm__stage_entry *e = cache_dead;

		cache_dead = e->next;
		e->next = *victims;
		*victims = e;
	}
	cache_ndead = 0;
}

static void destroy_victims(struct uhmm_mm *mm, struct uhmm__stage_entry *v)
{
	while (v) {
		struct uhmm__stage_entry *n = v->next;

		entry_destroy(mm, v);
		v = n;
	}
}

/*
 * A system->device migration is done: keep its staging (the slots of the
 * pages that migrated with data) in the cache instead of unmapping it.
 */
static void cache_put(struct uhmm_migrate_vma *m)
{
	struct uhmm_migrate_state *s = m->state;
	struct uhmm__stage_entry *e, *victims = NULL;
	const struct uhmm_devmem *pool = NULL;
	size_t pages = 0;

	if (!s->map || !s->registered || s->by_mremap || s->cache || !install_by_move ||
	    !uhmm__has(UHMM_FEAT_MOVE) || !cache_cap)
		return;
	for (size_t i = 0; i < m->npages; i++) {
		if (s->kind[i] != K_SYS ||
		    (m->src[i] & (UHMM_MIGRATE_PFN_MIGRATE | UHMM_MIGRATE_PFN_VALID)) !=
			    (UHMM_MIGRATE_PFN_MIGRATE | UHMM_MIGRATE_PFN_VALID))
			continue;
		if (!pages++) {
			struct uhmm_page *pg = uhmm__pfn_to_page(m->mm,
					uhmm_migrate_pfn_to_pfn(m->dst[i]));

			pool = pg ? pg->pgmap : NULL;
		}
	}
	if (!pages || pages > cache_cap)
		return;
	e = uhmm__calloc(1, sizeof(*e));
	if (!e)
		return;		/* staging is unmapped as without a cache */
	*e = (struct uhmm__stage_entry){
		.start = m->start, .end = m->end, .staging = (uintptr_t)s->staging,
		.map = s->map, .map_len = s->map_len, .pages = pages, .pool = pool,
		.gen = m->mm->generation, .registered = true,
	};
	s->map = NULL;		/* the entry owns the mapping now */
	pthread_mutex_lock(&cache_lock);
	cache_check_owner(m->mm, &victims);
	take_dead(&victims);
	/* Entries inside this range are superseded: their slots are stale. */
	for (struct uhmm__stage_entry **pp = &cache_head, *o; (o = *pp);) {
		if (o->start >= e->start && o->end <= e->end) {
			entry_unlink(pp, &victims);
			continue;
		}
		pp = &o->next;
	}
	e->next = cache_head;
	cache_head = e;
	cache_pages += pages;
	cache_entries++;
	/* Over the bound: the oldest entries not in use go. */
	while (cache_pages > cache_cap || cache_entries > CACHE_MAX_ENTRIES) {
		struct uhmm__stage_entry **pp = NULL, **last = NULL;

		for (pp = &cache_head; *pp; pp = &(*pp)->next)
			if (!(*pp)->users && *pp != e)
				last = pp;
		if (!last)
			break;
		entry_unlink(last, &victims);
	}
	pthread_mutex_unlock(&cache_lock);
	destroy_victims(m->mm, victims);
}

/*
 * A device->system migration needs staging: borrow the newest cache entry
 * whose slots cover every device page it migrates.  true if one was found.
 */
static bool cache_take(struct uhmm_migrate_vma *m)
{
	struct uhmm_migrate_state *s = m->state;
	const unsigned int ps = uhmm__page_shift;
	struct uhmm__stage_entry *victims = NULL, *found = NULL;
	size_t lo = m->npages, hi = 0;
	uintptr_t a_lo, a_hi;

	if (!cache_cap || !install_by_move || !uhmm__has(UHMM_FEAT_MOVE))
		return false;
	for (size_t i = 0; i < m->npages; i++)
		if (s->kind[i] == K_DEV) {
			lo = UHMM_MIN(lo, i);
			hi = i + 1;
		}
	if (lo >= hi)
		return false;
	a_lo = m->start + (lo << ps);
	a_hi = m->start + (hi << ps);
	pthread_mutex_lock(&cache_lock);
	cache_check_owner(m->mm, &victims);
	for (struct uhmm__stage_entry *e = cache_head; e && !found; e = e->next)
		if (e->start <= a_lo && a_hi <= e->end)
			found = e;
	if (found) {
		found->users++;
		s->cache = found;
		/* Slot of m->start (it may lie before the entry: never touched). */
		s->staging = (char *)(found->staging + (m->start - found->start));
		s->map = found->map;
		s->map_len = found->map_len;
	}
	pthread_mutex_unlock(&cache_lock);
	destroy_victims(m->mm, victims);
	return found != NULL;
}

/* Give back a borrowed entry; @moved slots were moved out into the range. */
static void cache_release(struct uhmm_migrate_vma *m, size_t moved)
{
	struct uhmm_migrate_state *s = m->state;
	struct uhmm__stage_entry *e = s->cache, *victim = NULL;

	s->cache = NULL;
	s->map = NULL;		/* the entry's mapping, not ours to unmap */
	pthread_mutex_lock(&cache_lock);
	e->users--;
	if (!e->dead) {
		moved = UHMM_MIN(moved, e->pages);
		e->pages -= moved;
		cache_pages -= moved;
		if (!e->pages) {
			for (struct uhmm__stage_entry **pp = &cache_head; *pp; pp = &(*pp)->next)
				if (*pp == e) {
					entry_unlink(pp, &victim);
					break;
				}
		}
	} else if (!e->users) {
		victim = e;
	}
	if (victim && cache_ndead < CACHE_MAX_DEAD) {
		victim->next = cache_dead;
		cache_dead = victim;
		cache_ndead++;
		victim = NULL;
	}
	pthread_mutex_unlock(&cache_lock);
	if (victim)
		entry_destroy(m->mm, victim);
}

void uhmm__staging_cache_drop(struct uhmm_mm *mm)
{
	struct uhmm__stage_entry *victims = NULL;

	pthread_mutex_lock(&cache_lock);
	if (cache_pid == getpid()) {
		take_dead(&victims);
		while (cache_head)
			entry_unlink(&cache_head, &victims);
	}
	pthread_mutex_unlock(&cache_lock);
	destroy_victims(mm, victims);
}

void uhmm__staging_cache_drop_pool(struct uhmm_mm *mm, const struct uhmm_devmem *pool)
{
	struct uhmm__stage_entry *victims = NULL;

	pthread_mutex_lock(&cache_lock);
	if (cache_pid == getpid()) {
		take_dead(&victims);
		for (struct uhmm__stage_entry **pp = &cache_head, *e; (e = *pp);) {
			if (e->pool == pool) {
				entry_unlink(pp, &victims);
				continue;
			}
			pp = &e->next;
		}
	}
	pthread_mutex_unlock(&cache_lock);
	destroy_victims(mm, victims);
}

/* Slots of a borrowed entry that finalize moved into the range. */
static size_t moved_from_cache(struct uhmm_migrate_vma *m)
{
	struct uhmm_migrate_state *s = m->state;
	size_t n = 0;

	for (size_t i = 0; i < m->npages; i++)
		n += s->kind[i] == K_DEV && (m->src[i] & UHMM_MIGRATE_PFN_MIGRATE) &&
		     (s->dst_given[i / 64] & (UINT64_C(1) << (i % 64)));
	return n;
}

static void state_free(struct uhmm_migrate_vma *m)
{
	struct uhmm_migrate_state *s = m->state;

	if (!s)
		return;
	if (s->inv_active)
		uhmm__invalidate_end(m->mm);
	if (s->locked) {
		uhmm__holds_migrate_lock = false;
		pthread_rwlock_unlock(&m->mm->migrate_lock);
	}
	if (s->cache)
		cache_release(m, moved_from_cache(m));
	staging_destroy(m->mm, s);
	uhmm__free(s->kind);
	uhmm__free(s->orig);
	uhmm__free(s->dst_given);
	uhmm__free(s);
	m->state = NULL;
	uhmm__sig_leave();	/* entered with the state, in setup */
}

static void mig_done_broadcast(struct uhmm_mm *mm)
{
	pthread_mutex_lock(&mm->mig_lock);
	pthread_cond_broadcast(&mm->mig_cond);
	pthread_mutex_unlock(&mm->mig_lock);
}

static int has_migrating(void *arg, uintptr_t a, _Atomic uint64_t *slot, uint64_t e)
{
	(void)arg; (void)a; (void)slot;
	return (e & UHMM_PTE_TYPE_MASK) == UHMM_PTE_MIGRATING;
}

void uhmm__wait_migrations(struct uhmm_mm *mm, uintptr_t start, uintptr_t end)
{
	if (uhmm__ptable_empty(&mm->ptable) || uhmm__is_service_thread)
		return;
	pthread_mutex_lock(&mm->mig_lock);
	while (uhmm__ptable_walk(&mm->ptable, start, end, has_migrating, NULL))
		pthread_cond_wait(&mm->mig_cond, &mm->mig_lock);
	pthread_mutex_unlock(&mm->mig_lock);
}

/* ---- uffd-wp markers on device-resident pages (wpmarker.c) ---------------- */

/*
 * Claimed system pages whose entry is a marker without a device page (a
 * stale picture): a marker cannot be moved (-EFAULT), so drop it before
 * the page is frozen; the page is empty, as the kernel would see it.
 */
static void clear_stale_markers(struct uhmm_migrate_vma *m, const uint8_t *st)
{
	const unsigned int ps = uhmm__page_shift;

	for (size_t i = 0; i < m->npages;) {
		size_t j = i;

		while (j < m->npages && m->state->kind[j] == K_SYS && st[j] == UHMM__PM_MARKER)
			j++;
		if (j == i) {
			i++;
			continue;
		}
		uhmm__marker_clear(m->mm, m->start + (i << ps), m->start + (j << ps));
		i = j;
	}
}

/* Would finalize commit page @i, a system page, as a device page? */
static bool becomes_device(struct uhmm_migrate_vma *m, size_t i)
{
	return m->state->kind[i] == K_SYS && (m->src[i] & UHMM_MIGRATE_PFN_MIGRATE) &&
	       !(uhmm__ptable_get(&m->mm->ptable, m->start + (i << uhmm__page_shift)) &
		 UHMM_PTE_GONE);
}

/*
 * Before finalize commits system pages as device pages: their entries,
 * empty since they were frozen, get a marker, one ioctl per run, while
 * they are still MIGRATING (nobody else fills or marks them then), so
 * pagemap shows them swapped, as the kernel shows device-private pages.
 */
static void mark_device_runs(struct uhmm_migrate_vma *m)
{
	const unsigned int ps = uhmm__page_shift;

	if (!uhmm__markers_on(m->mm))
		return;
	for (size_t i = 0; i < m->npages;) {
		size_t j = i;

		while (j < m->npages && becomes_device(m, j))
			j++;
		if (j == i) {
			i++;
			continue;
		}
		uhmm__marker_set(m->mm, m->start + (i << ps), m->start + (j << ps));
		i = j;
	}
}

/* ---- setup ------------------------------------------------------------- */

struct collect_ctx {
	uintptr_t start;
	uint64_t *ent;
};

static int collect_entry(void *arg, uintptr_t a, _Atomic uint64_t *slot, uint64_t e)
{
	struct collect_ctx *c = arg;

	(void)slot;
	c->ent[(a - c->start) >> uhmm__page_shift] = e;
	return 0;
}

/* Unclaim page i of a system run (it will not migrate). */
static void unclaim(struct uhmm_migrate_vma *m, size_t i)
{
	uintptr_t a = m->start + (i << uhmm__page_shift);
	_Atomic uint64_t *slot = slot_of(m->mm, a);
	uint64_t e = atomic_load(slot);

	while (!uhmm__ptable_cmpxchg(&m->mm->ptable, slot, &e, m->state->orig[i]))
		;
	m->state->kind[i] = K_NONE;
	m->src[i] = 0;
}

static size_t first_sys(struct uhmm_migrate_vma *m)
{
	for (size_t i = 0; i < m->npages; i++)
		if (m->state->kind[i] == K_SYS)
			return i;
	return m->npages;
}

/*
 * Freeze the claimed system pages with UFFDIO_MOVE.  Returns -EINVAL when
 * the kernel refuses the move for this mapping (the caller falls back).
 */
/*
 * Move page @i alone to staging; a page shared copy-on-write (-EBUSY) gets
 * a private copy first (same data) and one more try.  0 or -errno.
 */
static int move_one(struct uhmm_migrate_vma *m, size_t i, bool writable)
{
	const unsigned int ps = uhmm__page_shift;
	uintptr_t a = m->start + (i << ps);
	uintptr_t st = (uintptr_t)m->state->staging + (i << ps);
	int err;

	do_move(m->mm, st, a, uhmm__page_size, true, &err);
	if (err == -EBUSY && writable &&
	    uhmm__sys_madvise((void *)a, uhmm__page_size, MADV_POPULATE_WRITE) == 0)
		do_move(m->mm, st, a, uhmm__page_size, true, &err);
	return err;
}

static int freeze_move(struct uhmm_migrate_vma *m, bool writable)
{
	struct uhmm_migrate_state *s = m->state;
	const unsigned int ps = uhmm__page_shift;
	bool moved_any = false;

	for (size_t i = 0; i < m->npages;) {
		size_t j = i;
		size_t done;
		int err;

		if (s->kind[i] != K_SYS) {
			i++;
			continue;
		}
		while (j < m->npages && s->kind[j] == K_SYS)
			j++;
		done = do_move(m->mm, (uintptr_t)s->staging + (i << ps), m->start + (i << ps),
			       (j - i) << ps, true, &err);
		if (!err) {
			moved_any = true;
			i = j;
			continue;
		}
		moved_any |= done > 0;
		/* The page at i + done stopped the move. */
		i += done >> ps;
		if (err == -EINVAL || err == -EFAULT) {
			/*
			 * The run crosses a piece boundary of a split mapping
			 * (one move stays inside one VMA): go on page by page
			 * up to the end of the run.
			 */
			for (; i < j; i++) {
				err = move_one(m, i, writable);
				if (err == -EINVAL && !moved_any && i == first_sys(m))
					return -EINVAL;	/* refused for this mapping: fall back */
				if (err)
					unclaim(m, i);
				else
					moved_any = true;
			}
			continue;
		}
		/* Pinned or otherwise immovable pages stay and do not migrate. */
		if (err != -EBUSY || move_one(m, i, writable))
			unclaim(m, i);
		i++;
	}
	return 0;
}

/*
 * Freeze the claimed runs with mremap(MREMAP_DONTUNMAP), each to its place
 * in staging: the range stays mapped with empty entries.  Only claimed
 * pages move, so a page another migration holds is never taken along.
 */
static int freeze_mremap(struct uhmm_migrate_vma *m)
{
	struct uhmm_migrate_state *s = m->state;
	const unsigned int ps = uhmm__page_shift;
	struct uhmm__selfop op;
	int ret = 0;

	if (uhmm__is_service_thread)
		return -EDEADLK;	/* keep the worker free of REMAP waits */
	uhmm__selfop_begin(m->mm, &op, m->start, m->end, UHMM_SELFOP_INTERNAL);
	for (size_t i = 0; i < m->npages && !ret;) {
		size_t j = i;
		uintptr_t a, st;
		void *r;

		if (s->kind[i] != K_SYS) {
			i++;
			continue;
		}
		while (j < m->npages && s->kind[j] == K_SYS)
			j++;
		a = m->start + (i << ps);
		{
			/* One mremap stays inside one piece of a split mapping. */
			struct uhmm__vma pv;
			size_t pn = 0;

			if (!uhmm__vma_find(a, a + uhmm__page_size, &pv, 1, &pn, true) && pn == 1 &&
			    pv.end < m->start + (j << ps))
				j = (pv.end - m->start) >> ps;
		}
		st = (uintptr_t)s->staging + (i << ps);
		atomic_fetch_add(&uhmm__as_gen, 1);
		r = (void *)syscall(SYS_mremap, a, (j - i) << ps, (j - i) << ps,
				    MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, st);
		if (r == MAP_FAILED) {
			ret = -errno;
			break;
		}
		{
			/* The new mapping may carry the registration: drop it. */
			struct uffdio_range rr = { .start = st, .len = (j - i) << ps };

			pthread_mutex_lock(&m->mm->reg_lock);
			uhmm__uffd_ioctl(m->mm->uffd, UFFDIO_UNREGISTER, &rr);
			pthread_mutex_unlock(&m->mm->reg_lock);
		}
		s->by_mremap = true;
		i = j;
	}
	uhmm__events_sync(m->mm);
	uhmm__selfop_end(m->mm, &op);
	s->registered = false;
	return ret;
}

/*
 * The mapping [start, end) lies in, as the kernel sees it: uhmm's own
 * registration splits a mapping into pieces that differ only in their
 * userfaultfd flags, so adjacent pieces with the same kind and protection
 * count as one.  0, or -EINVAL.
 */
static int find_mapping(uintptr_t start, uintptr_t end, struct uhmm__vma *out, bool fresh)
{
	const unsigned int kind = UHMM_VMA_READ | UHMM_VMA_WRITE | UHMM_VMA_EXEC |
				  UHMM_VMA_SHARED | UHMM_VMA_FILE | UHMM_VMA_ANON |
				  UHMM_VMA_SHMEM | UHMM_VMA_HUGETLB | UHMM_VMA_SPECIAL;
	struct uhmm__vma v[64];
	size_t n = 0;

	if (uhmm__vma_find(start, end, v, UHMM_ARRAY_SIZE(v), &n, fresh) || n == 0 ||
	    n > UHMM_ARRAY_SIZE(v) || v[0].start > start || v[n - 1].end < end)
		return -EINVAL;
	for (size_t i = 1; i < n; i++)
		if (v[i].start != v[i - 1].end || (v[i].flags & kind) != (v[0].flags & kind) ||
		    !uhmm__is_our_split(&uhmm__the_mm, v[i].start))
			return -EINVAL;
	out->start = v[0].start;
	out->end = v[n - 1].end;
	out->flags = v[0].flags;
	return 0;
}

static int migrate_vma_setup(struct uhmm_migrate_vma *m);

/* No signal handler on this thread from here to finalize (sigblock.h). */
int uhmm_migrate_vma_setup(struct uhmm_migrate_vma *m)
{
	int ret;

	uhmm__sig_enter();
	ret = migrate_vma_setup(m);	/* the state holds its own region */
	uhmm__sig_leave();
	return ret;
}

static int migrate_vma_setup(struct uhmm_migrate_vma *m)
{
	const unsigned int ps = uhmm__page_shift;
	struct uhmm_migrate_state *s;
	struct uhmm__vma v;
	struct uhmm_mm *mm;
	uint32_t *st = NULL;
	uint64_t *ent = NULL;
	size_t nsys = 0;
	bool anon, any_present = false;
	int ret;

	if (!m || !m->mm || !m->src || !m->dst)
		return uhmm__err(EINVAL, "migrate setup: NULL argument");
	mm = m->mm;
	m->cpages = 0;
	m->state = NULL;
	if (mm != &uhmm__the_mm || atomic_load(&mm->state) != UHMM_MM_LIVE)
		return uhmm__err(EINVAL, "migrate setup: context is not live");
	if (!uhmm__page_aligned(m->start) || !uhmm__page_aligned(m->end) ||
	    m->end <= m->start)
		return uhmm__err(EINVAL, "migrate setup: [%#lx, %#lx) is empty or unaligned",
				 (unsigned long)m->start, (unsigned long)m->end);
	if (!(m->flags & (UHMM_MIGRATE_VMA_SELECT_SYSTEM |
			  UHMM_MIGRATE_VMA_SELECT_DEVICE_PRIVATE)))
		return uhmm__err(EINVAL, "migrate setup: no selection flag");
	if (m->flags & ~(UHMM_MIGRATE_VMA_SELECT_SYSTEM | UHMM_MIGRATE_VMA_SELECT_DEVICE_PRIVATE |
			 UHMM__MIGRATE_EXCLUSIVE))
		return uhmm__err(EINVAL, "migrate setup: unknown flags %#x", m->flags);
	if (m->fault_page && uhmm__pfn_to_page(mm, m->fault_page->pfn) != m->fault_page)
		return uhmm__err(EINVAL, "migrate setup: fault_page is not a page of a live pool");
	if (uhmm__callback_depth > 0)
		return uhmm__err(EDEADLK, "migrate setup from an invalidate callback");
	/* The unmaps of the addresses' earlier tenants are done with first. */
	uhmm__events_catch_up(mm);
	ret = find_mapping(m->start, m->end, &v, false);
	if (ret)
		ret = find_mapping(m->start, m->end, &v, true);
	if (ret)
		return uhmm__err(EINVAL, "migrate setup: [%#lx, %#lx) is not inside one mapping",
				 (unsigned long)m->start, (unsigned long)m->end);
	if (v.flags & UHMM_VMA_HUGETLB)
		return uhmm__err(EINVAL, "migrate setup: [%#lx, %#lx) is hugetlbfs: huge pages "
				 "are not migrated (as the kernel's migrate_vma_setup); a range "
				 "fault mirrors them", (unsigned long)m->start,
				 (unsigned long)m->end);
	if (!(v.flags & UHMM_VMA_READ) || (v.flags & UHMM_VMA_SPECIAL))
		return uhmm__err(EINVAL, "migrate setup: [%#lx, %#lx) has no access, or is "
				 "an IO mapping",
				 (unsigned long)m->start, (unsigned long)m->end);
	anon = (v.flags & UHMM_VMA_ANON) && !(v.flags & UHMM_VMA_SHARED);

	m->npages = (m->end - m->start) >> ps;
	memset(m->src, 0, m->npages * sizeof(*m->src));
	memset(m->dst, 0, m->npages * sizeof(*m->dst));
	s = uhmm__calloc(1, sizeof(*s));
	if (!s)
		return uhmm__err(ENOMEM, "migrate setup: out of memory");
	m->state = s;
	uhmm__sig_enter();	/* left by state_free() */
	s->kind = uhmm__calloc(m->npages, 1);
	s->orig = uhmm__calloc(m->npages, sizeof(*s->orig));
	s->dst_given = uhmm__calloc((m->npages + 63) / 64, sizeof(uint64_t));
	st = uhmm__malloc(m->npages * sizeof(*st));
	ent = uhmm__malloc(m->npages * sizeof(*ent));
	if (!s->kind || !s->orig || !s->dst_given || !st || !ent) {
		ret = uhmm__err(ENOMEM, "migrate setup: out of memory");
		goto fail;
	}
	if (!uhmm__holds_migrate_lock) {
		pthread_rwlock_rdlock(&mm->migrate_lock);
		uhmm__holds_migrate_lock = true;
		s->locked = true;
	}

	/*
	 * Device mirrors drop the range first (the owner may skip its own);
	 * the invalidation stays open until the pages are frozen.
	 */
	s->inv_active = uhmm__invalidate_start(mm, m->start, m->end,
			(m->flags & UHMM__MIGRATE_EXCLUSIVE) ? UHMM_NOTIFY_EXCLUSIVE
							      : UHMM_NOTIFY_MIGRATE,
			0, m->pgmap_owner);

	if (anon && (m->flags & UHMM_MIGRATE_VMA_SELECT_SYSTEM)) {
		/*
		 * Register exactly the range: the kernel may have merged memory
		 * the caller never gave uhmm (libc's, a runtime's, uhmm's own)
		 * into the same mapping, and a missing fault there could wait
		 * for the very thread that takes it.  The split this makes is
		 * seen through by find_mapping(), and moves are done piece by
		 * piece.
		 */
		ret = uhmm__register_missing(mm, m->start, m->end);
		if (ret) {
			ret = uhmm__err(-ret, "migrate setup: cannot register [%#lx, %#lx) "
					"with userfaultfd", (unsigned long)m->start,
					(unsigned long)m->end);
			goto fail;
		}
	}
	/*
	 * uhmm's own entries, and for system pages which ones are present or
	 * swapped: that is all the claim needs (the protection is the
	 * mapping's, one for the whole range), and PAGEMAP_SCAN gives it a
	 * run at a time.  Device pages only: their CPU entries are empty.
	 */
	memset(ent, 0, m->npages * sizeof(*ent));
	uhmm__ptable_walk(&mm->ptable, m->start, m->end, collect_entry,
			  &(struct collect_ctx){ .start = m->start, .ent = ent });
	if (m->flags & UHMM_MIGRATE_VMA_SELECT_SYSTEM) {
		ret = uhmm__pagemap_has_data(m->start, m->npages, (uint8_t *)st);
		if (ret) {
			ret = uhmm__err(EIO, "migrate setup: cannot read /proc/self/pagemap");
			goto fail;
		}
	}

	for (size_t i = 0; i < m->npages; i++) {
		uintptr_t a = m->start + (i << ps);
		uint64_t e = ent[i];
		_Atomic uint64_t *slot;

		switch (e & UHMM_PTE_TYPE_MASK) {
		case UHMM_PTE_DEVICE: {
			struct uhmm_page *page;

			if (!(m->flags & UHMM_MIGRATE_VMA_SELECT_DEVICE_PRIVATE))
				break;
			page = uhmm__pfn_to_page(mm, uhmm__pte_payload(e));
			if (!page || page->pgmap->owner != m->pgmap_owner)
				break;
			/* Found with nothing held (the fault page is the caller's). */
			if (page != m->fault_page && !uhmm__page_grab(mm, page, a))
				break;
			slot = slot_of(mm, a);
			if (!slot || !uhmm__ptable_cmpxchg(&mm->ptable, slot, &e,
					(e & ~UHMM_PTE_TYPE_MASK) | UHMM_PTE_MIGRATING)) {
				if (page != m->fault_page) {
					uhmm_page_unlock(page);
					uhmm_page_put(page);
				}
				break;
			}
			/* The entry's reference keeps it now: drop the grab's. */
			if (page != m->fault_page)
				uhmm_page_put(page);
			s->orig[i] = ent[i];
			s->kind[i] = K_DEV;
			m->src[i] = uhmm_migrate_pfn(page->pfn) | UHMM_MIGRATE_PFN_MIGRATE;
			if (e & UHMM_PTE_WRITE)
				m->src[i] |= UHMM_MIGRATE_PFN_WRITE;
			m->cpages++;
			break;
		}
		case UHMM_PTE_BUSY:	/* a zero fill in flight: waited out below */
		case 0: {
			uint64_t w, zero = 0;

			if (!anon || !(m->flags & UHMM_MIGRATE_VMA_SELECT_SYSTEM))
				break;
			if (((uint8_t *)st)[i] == UHMM__PM_SWAPPED)
				break;	/* swapped out: the kernel does not migrate it */
			w = (v.flags & UHMM_VMA_WRITE) ? UHMM_PTE_WRITE : 0;
			slot = slot_of(mm, a);
			if (!slot)
				break;
			/*
			 * A zero fill in flight (BUSY) lasts one ioctl on the
			 * worker, which never waits in between: wait it out.
			 */
			for (;;) {
				zero = 0;
				if (uhmm__ptable_cmpxchg(&mm->ptable, slot, &zero,
							 UHMM_PTE_MIGRATING | w) ||
				    zero != UHMM_PTE_BUSY)
					break;
				sched_yield();
			}
			if (zero != 0)
				break;
			s->orig[i] = 0;
			s->kind[i] = K_SYS;
			m->src[i] = UHMM_MIGRATE_PFN_MIGRATE;
			if (w)
				m->src[i] |= UHMM_MIGRATE_PFN_WRITE;
			nsys++;
			any_present |= ((uint8_t *)st)[i] == UHMM__PM_PRESENT;
			break;
		}
		default:
			break;	/* another migration, a fault in flight, exclusive */
		}
	}

	if (nsys) {
		bool use_move = uhmm__has(UHMM_FEAT_MOVE) && uhmm__has(UHMM_FEAT_UFFD_WP);

		clear_stale_markers(m, (const uint8_t *)st);

		ret = staging_create(m, use_move);
		if (ret) {
			ret = uhmm__err(-ret, "migrate setup: no memory for staging");
			goto fail_claimed;
		}
		/*
		 * Freeze every claimed page, present or not when we looked: a
		 * page can be filled between that look and the claim, and only
		 * the staging page table tells for sure what has data.
		 */
		ret = use_move ? freeze_move(m, (v.flags & UHMM_VMA_WRITE) != 0) : -EINVAL;
		if (ret == -EINVAL)
			ret = freeze_mremap(m);
		if (ret) {
			ret = uhmm__err(-ret, "migrate setup: cannot freeze [%#lx, %#lx)",
					(unsigned long)m->start, (unsigned long)m->end);
			goto fail_claimed;
		}
		/*
		 * Which frozen pages have data?  Anything the staging page table
		 * holds counts (a zero page too: copying zeroes is harmless;
		 * calling data "empty" would lose it).
		 */
		ret = uhmm__pagemap_has_data((uintptr_t)s->staging, m->npages,
					     (uint8_t *)st);
		if (ret)
			goto fail_claimed;
		for (size_t i = 0; i < m->npages; i++) {
			bool data = ((uint8_t *)st)[i] &&
				    ((uint8_t *)st)[i] != UHMM__PM_MARKER;

			if (s->kind[i] != K_SYS)
				continue;
			if (data)
				m->src[i] |= UHMM_MIGRATE_PFN_VALID |
					     (((uint64_t)((uintptr_t)s->staging >> ps) + i)
					      << UHMM_MIGRATE_PFN_SHIFT);
			m->cpages++;
		}
	}
	uhmm__free(st);
	uhmm__free(ent);
	if (s->inv_active) {
		uhmm__invalidate_end(mm);
		s->inv_active = false;
	}
	return 0;

fail_claimed:
	/*
	 * Give everything back as it was.  Whatever was frozen is restored
	 * from staging (a page that was empty restores as zeroes: the same
	 * content).
	 */
	for (size_t i = 0; i < m->npages; i++)
		if (s->kind[i] == K_SYS && (any_present || s->by_mremap))
			m->src[i] |= UHMM_MIGRATE_PFN_VALID;
	uhmm_migrate_vma_pages(m);
	for (size_t i = 0; i < m->npages; i++)
		m->src[i] &= ~UHMM_MIGRATE_PFN_MIGRATE;
	uhmm_migrate_vma_finalize(m);
	uhmm__free(st);
	uhmm__free(ent);
	return ret;
fail:
	state_free(m);
	uhmm__free(st);
	uhmm__free(ent);
	return ret;
}

/* ---- driver helpers -------------------------------------------------------- */

/*
 * Fault in the staging pages of every device entry in one call per run:
 * much cheaper than one page fault per page as the driver writes them.
 */
static void populate_staging(struct uhmm_migrate_vma *m)
{
	struct uhmm_migrate_state *s = m->state;
	const unsigned int ps = uhmm__page_shift;

	if (!uhmm__has(UHMM_FEAT_MADV_POPULATE))
		return;
	for (size_t i = 0; i < m->npages;) {
		size_t j = i;

		if (s->kind[i] != K_DEV) {
			i++;
			continue;
		}
		while (j < m->npages && s->kind[j] == K_DEV)
			j++;
		uhmm__sys_madvise(s->staging + (i << ps), (j - i) << ps, MADV_POPULATE_WRITE);
		i = j;
	}
}

void *uhmm_migrate_alloc_sys(struct uhmm_migrate_vma *m, unsigned long i)
{
	struct uhmm_migrate_state *s;
	char *p;

	if (!m || !m->state || i >= m->npages) {
		uhmm__err(EINVAL, "migrate alloc sys: %s", !m || !m->state ?
			  "no migration between setup and finalize" : "entry out of range");
		return NULL;
	}
	s = m->state;
	if (s->kind[i] != K_DEV || !(m->src[i] & UHMM_MIGRATE_PFN_MIGRATE)) {
		uhmm__err(EINVAL, "migrate alloc sys: entry %lu is not a device page "
			  "selected to migrate", i);
		return NULL;
	}
	if (!s->map && !cache_take(m)) {
		if (staging_create(m, false)) {
			uhmm__err(ENOMEM, "migrate alloc sys: no memory for staging");
			return NULL;
		}
		populate_staging(m);	/* recycled slots need none */
	}
	p = s->staging + ((size_t)i << uhmm__page_shift);
	s->dst_given[i / 64] |= UINT64_C(1) << (i % 64);
	m->dst[i] = uhmm_migrate_pfn((uintptr_t)p >> uhmm__page_shift);
	return p;
}

const void *uhmm_migrate_pfn_addr(struct uhmm_migrate_vma *m, unsigned long i)
{
	if (!m || !m->state || i >= m->npages || !(m->src[i] & UHMM_MIGRATE_PFN_VALID) ||
	    uhmm_migrate_pfn_is_device(m->src[i])) {
		uhmm__err(EINVAL, "migrate pfn addr: %s", !m || !m->state ?
			  "no migration between setup and finalize" : i >= m->npages ?
			  "entry out of range" : "entry holds no system page data");
		return NULL;
	}
	return (const void *)(uintptr_t)(uhmm_migrate_pfn_to_pfn(m->src[i]) <<
					 uhmm__page_shift);
}

/* ---- pages / finalize ------------------------------------------------------ */

static bool dst_ok(struct uhmm_migrate_vma *m, size_t i)
{
	uint64_t d = m->dst[i];

	if (!(d & UHMM_MIGRATE_PFN_VALID))
		return false;
	if (m->state->kind[i] == K_SYS)
		return uhmm_migrate_pfn_is_device(d) &&
		       uhmm__pfn_to_page(m->mm, uhmm_migrate_pfn_to_pfn(d)) != NULL;
	/* device -> system */
	return !uhmm_migrate_pfn_is_device(d);
}

void uhmm_migrate_vma_pages(struct uhmm_migrate_vma *m)
{
	if (!m || !m->state) {
		uhmm__err(EINVAL, "migrate pages: no migration between setup and finalize");
		return;
	}
	for (size_t i = 0; i < m->npages; i++) {
		uintptr_t a = m->start + (i << uhmm__page_shift);

		if (!(m->src[i] & UHMM_MIGRATE_PFN_MIGRATE))
			continue;
		if (m->state->kind[i] == K_NONE || !dst_ok(m, i) ||
		    (uhmm__ptable_get(&m->mm->ptable, a) & UHMM_PTE_GONE))
			m->src[i] &= ~UHMM_MIGRATE_PFN_MIGRATE;
	}
}

/* Release the driver's destination page of an entry that did not migrate. */
static void release_dst(struct uhmm_migrate_vma *m, size_t i)
{
	uint64_t d = m->dst[i];
	struct uhmm_page *page;

	if (!uhmm_migrate_pfn_is_device(d))
		return;
	page = uhmm__pfn_to_page(m->mm, uhmm_migrate_pfn_to_pfn(d));
	if (page) {
		uhmm_page_unlock(page);
		uhmm_page_put(page);
	}
}

/*
 * Put system page data at [@a, @a + @len) from @src: staging (which may be
 * moved) or the driver's buffer (copied).
 */
static int install_sys(struct uhmm_migrate_vma *m, uintptr_t a, uintptr_t src,
		       size_t len, bool may_move)
{
	int err = 0;

	if (may_move && uhmm__has(UHMM_FEAT_MOVE) && install_by_move) {
		size_t done = do_move(m->mm, a, src, len, false, &err);

		if (!err)
			return 0;
		a += done;
		src += done;
		len -= done;
	}
	return do_copy(m->mm, a, src, len);
}

/*
 * Store the final entry.  Only an unmap or discard can change a MIGRATING
 * entry meanwhile (it sets GONE): then a device page that was about to be
 * mapped there is dropped instead.
 */
static void commit_entry(struct uhmm_mm *mm, _Atomic uint64_t *slot, uint64_t e,
			 uint64_t final)
{
	while (!uhmm__ptable_cmpxchg(&mm->ptable, slot, &e, final)) {
		if ((e & UHMM_PTE_GONE) &&
		    (final & UHMM_PTE_TYPE_MASK) == UHMM_PTE_DEVICE) {
			uhmm__drop_device_entry(mm, final);
			final = 0;
		}
	}
}

/*
 * Put a system page that did not migrate back where it was, from staging.
 * Its only copy is in staging, which finalize frees: giving up would lose
 * the page, so a failure (the kernel out of memory for the page table or
 * the charge) is retried until it passes, the way the kernel's own
 * restoring of migration entries cannot fail.
 */
static void restore_sys(struct uhmm_migrate_vma *m, uintptr_t a, uintptr_t stage)
{
	for (unsigned long tries = 0;; tries++) {
		int err = m->state->by_mremap ?
			do_copy(m->mm, a, stage, uhmm__page_size) :
			install_sys(m, a, stage, uhmm__page_size, true);

		if (!err)
			return;
		if (tries == 0)
			uhmm__warn("migrate: cannot restore %#lx yet (%d): retrying",
				   (unsigned long)a, err);
		if (tries < 64) {
			sched_yield();
		} else {
			struct timespec ts = { 0, 1000000 };	/* back off: 1 ms */

			nanosleep(&ts, NULL);
		}
	}
}

/*
 * Install the data of device entries that migrated to system memory, in
 * runs whose sources are consecutive (staging always is; a driver buffer
 * may be), one ioctl per run.  Entries whose install failed lose MIGRATE.
 */
static void install_runs(struct uhmm_migrate_vma *m)
{
	struct uhmm_migrate_state *s = m->state;
	const unsigned int ps = uhmm__page_shift;
	uintptr_t stage_lo, stage_hi;

	if (!s->map)
		cache_take(m);	/* recycled pages for a driver that copies from its buffer */
	stage_lo = (uintptr_t)s->staging;
	stage_hi = stage_lo + (m->end - m->start);

	for (size_t i = 0; i < m->npages;) {
		uintptr_t src0, a0;
		bool staged;
		size_t j;
		int err;

		if (s->kind[i] != K_DEV || !(m->src[i] & UHMM_MIGRATE_PFN_MIGRATE) ||
		    (uhmm__ptable_get(&m->mm->ptable, m->start + (i << ps)) & UHMM_PTE_GONE)) {
			i++;
			continue;
		}
		src0 = (uintptr_t)(uhmm_migrate_pfn_to_pfn(m->dst[i]) << ps);
		a0 = m->start + (i << ps);
		staged = s->map && src0 >= stage_lo && src0 < stage_hi;
		for (j = i + 1; j < m->npages; j++) {
			if (s->kind[j] != K_DEV || !(m->src[j] & UHMM_MIGRATE_PFN_MIGRATE) ||
			    (uintptr_t)(uhmm_migrate_pfn_to_pfn(m->dst[j]) << ps) !=
				    src0 + ((j - i) << ps) ||
			    (uhmm__ptable_get(&m->mm->ptable, m->start + (j << ps)) &
			     UHMM_PTE_GONE))
				break;
		}
		/*
		 * UFFDIO_MOVE flushes the source entry from every CPU running
		 * the process, an IPI when one does (a CPU fault's window: the
		 * service threads); for a few pages, letting UFFDIO_COPY take
		 * a new page costs less.
		 */
		if (staged && j - i < MOVE_MIN_PAGES)
			staged = false;
		else if (!staged && s->cache && j - i >= MOVE_MIN_PAGES) {
			/*
			 * The driver's own buffer, and recycled pages for these
			 * addresses: copy into them and move them into place
			 * rather than have UFFDIO_COPY allocate new ones.
			 */
			memcpy(s->staging + (i << ps), (const void *)src0, (j - i) << ps);
			for (size_t k = i; k < j; k++)
				s->dst_given[k / 64] |= UINT64_C(1) << (k % 64);
			src0 = (uintptr_t)s->staging + (i << ps);
			staged = true;
		}
		if (staged) {	/* a UFFDIO_MOVE destination must be empty */
			uhmm__marker_make_pmd_room(m->mm, a0, a0 + ((j - i) << ps), src0);
			uhmm__marker_clear(m->mm, a0, a0 + ((j - i) << ps));
		}
		err = install_sys(m, a0, src0, (j - i) << ps, staged);
		if (err) {
			/* Page by page, to find which ones cannot be installed. */
			for (size_t k = i; k < j; k++)
				if ((err = install_sys(m, m->start + (k << ps),
						       src0 + ((k - i) << ps),
						       uhmm__page_size, staged))) {
					/* The page stays on the device, intact. */
					uhmm__warn("migrate: cannot install %#lx: %d",
						   (unsigned long)(m->start + (k << ps)), err);
					m->src[k] &= ~UHMM_MIGRATE_PFN_MIGRATE;
					uhmm__install_err = err;
				}
		}
		i = j;
	}
}

static void migrate_vma_finalize(struct uhmm_migrate_vma *m);

/* The region setup entered ends after the last lock (sigblock.h). */
void uhmm_migrate_vma_finalize(struct uhmm_migrate_vma *m)
{
	uhmm__sig_enter();
	migrate_vma_finalize(m);
	uhmm__sig_leave();
}

static void migrate_vma_finalize(struct uhmm_migrate_vma *m)
{
	const unsigned int ps = uhmm__page_shift;
	struct uhmm_migrate_state *s;
	struct uhmm_mm *mm;

	if (!m || !m->state) {
		uhmm__err(EINVAL, "migrate finalize: no migration between setup and finalize");
		return;
	}
	s = m->state;
	mm = m->mm;
	/*
	 * What uhmm_migrate_vma_pages() drops, dropped again: a driver that
	 * skipped it (or changed dst since) must not get an invalid
	 * destination installed.
	 */
	for (size_t i = 0; i < m->npages; i++)
		if ((m->src[i] & UHMM_MIGRATE_PFN_MIGRATE) &&
		    (s->kind[i] == K_NONE || !dst_ok(m, i)))
			m->src[i] &= ~UHMM_MIGRATE_PFN_MIGRATE;
	install_runs(m);
	mark_device_runs(m);
	for (size_t i = 0; i < m->npages; i++) {
		uintptr_t a = m->start + (i << ps);
		uintptr_t stage = (uintptr_t)s->staging + (i << ps);
		bool migrated = (m->src[i] & UHMM_MIGRATE_PFN_MIGRATE) != 0;
		_Atomic uint64_t *slot;
		uint64_t e, final;

		if (s->kind[i] == K_NONE) {
			if (m->dst[i])
				release_dst(m, i);
			continue;
		}
		slot = slot_of(mm, a);
		e = atomic_load(slot);
		if (s->kind[i] == K_SYS) {
			if (migrated && !(e & UHMM_PTE_GONE)) {
				struct uhmm_page *page = uhmm__pfn_to_page(mm,
						uhmm_migrate_pfn_to_pfn(m->dst[i]));

				final = UHMM_PTE_DEVICE | (e & UHMM_PTE_WRITE) |
					(page->pfn << UHMM_PTE_PAYLOAD_SHIFT);
				atomic_store(&page->addr, a);
				atomic_fetch_add(&page->pgmap->nr_resident, 1);
				uhmm_page_unlock(page);
				/* The driver's reference now belongs to the mapping. */
			} else {
				if (m->dst[i])
					release_dst(m, i);
				final = 0;
				/* An empty or zero page has nothing to restore. */
				if (!(e & UHMM_PTE_GONE) && (m->src[i] & UHMM_MIGRATE_PFN_VALID))
					restore_sys(m, a, stage);
			}
		} else {	/* K_DEV */
			struct uhmm_page *old = uhmm__pfn_to_page(mm,
					uhmm__pte_payload(s->orig[i]));

			if (e & UHMM_PTE_GONE) {
				final = 0;
				if (m->dst[i] && !migrated)
					release_dst(m, i);
				atomic_fetch_sub(&old->pgmap->nr_resident, 1);
				if (old != m->fault_page)
					uhmm_page_unlock(old);
				uhmm_page_put(old);
			} else if (migrated) {
				/* Installed by install_runs(). */
				final = 0;
				atomic_fetch_sub(&old->pgmap->nr_resident, 1);
				if (old != m->fault_page)
					uhmm_page_unlock(old);
				uhmm_page_put(old);
			} else {
				if (m->dst[i])
					release_dst(m, i);
				final = s->orig[i];
				if (old != m->fault_page)
					uhmm_page_unlock(old);
			}
		}
		commit_entry(mm, slot, e, final);
	}
	wake_range(mm, m->start, m->end);
	cache_put(m);		/* system->device: keep staging for the way back */
	state_free(m);
	mig_done_broadcast(mm);
}

/* ---- device-range migration (eviction by device pfn) ------------------------ */

/*
 * A device-range migration holds migrate_lock for reading from collection
 * to uhmm_migrate_device_finalize(), as a migrate_vma does from setup to
 * finalize: fork's prepare handler (which takes it for writing) must not
 * find device pages locked by one half done, or it cannot bring them home
 * and the child reads zeroes there.
 */
static __thread bool devmig_locked;

static void devmig_unlock(struct uhmm_mm *mm)
{
	if (devmig_locked) {
		devmig_locked = false;
		uhmm__holds_migrate_lock = false;
		pthread_rwlock_unlock(&mm->migrate_lock);
		uhmm__sig_leave();
	}
}

static int collect_device_locked(struct uhmm_mm *mm, uint64_t *src, const uint64_t *pfns,
				 uint64_t start_pfn, unsigned long npages);

/* No signal handler on this thread from here to finalize (sigblock.h). */
static int collect_device(struct uhmm_mm *mm, uint64_t *src, const uint64_t *pfns,
			  uint64_t start_pfn, unsigned long npages)
{
	int ret;

	uhmm__sig_enter();
	ret = collect_device_locked(mm, src, pfns, start_pfn, npages);
	uhmm__sig_leave();	/* the lock's own region lasts to finalize */
	return ret;
}

static int collect_device_locked(struct uhmm_mm *mm, uint64_t *src, const uint64_t *pfns,
				 uint64_t start_pfn, unsigned long npages)
{
	if (!mm || !src || npages == 0)
		return uhmm__err(EINVAL, "migrate device: NULL argument or no pages");
	if (mm != &uhmm__the_mm || atomic_load(&mm->state) == UHMM_MM_DEAD)
		return uhmm__err(EINVAL, "migrate device: context is not live");
	if (uhmm__callback_depth > 0)
		return uhmm__err(EDEADLK, "migrate device from an invalidate callback");
	/* A page's address may be a freed mapping's whose unmap is not done. */
	uhmm__events_catch_up(mm);
	/*
	 * The caller's array is written below while pages are frozen: a page
	 * of it in device memory (a heap block the program migrated and
	 * freed) would be collected and frozen here, in pfn order, and the
	 * next write to it would wait for this very migration.  Fault it in
	 * first, while nothing is frozen.
	 */
	for (uintptr_t a = uhmm__page_align_down((uintptr_t)src);
	     a < (uintptr_t)(src + npages); a += uhmm__page_size)
		uhmm__touch_one(a, true);
	/* Every pfn is checked before any page is claimed. */
	for (unsigned long i = 0; i < npages; i++) {
		uint64_t pfn = pfns ? pfns[i] : start_pfn + i;

		if (!uhmm__pfn_to_page(mm, pfn))
			return uhmm__err(EINVAL, "migrate device: pfn %#llx names no device page",
					 (unsigned long long)pfn);
	}
	if (!uhmm__holds_migrate_lock) {
		pthread_rwlock_rdlock(&mm->migrate_lock);
		uhmm__holds_migrate_lock = true;
		devmig_locked = true;
		uhmm__sig_enter();	/* until uhmm_migrate_device_finalize() */
	}
	for (unsigned long i = 0; i < npages; i++) {
		uint64_t pfn = pfns ? pfns[i] : start_pfn + i;
		struct uhmm_page *page = uhmm__pfn_to_page(mm, pfn);
		_Atomic uint64_t *slot;
		bool inv, ok;
		uintptr_t a;
		uint64_t e;

		src[i] = 0;
		if (!page)
			continue;	/* its pool was removed meanwhile */
		a = atomic_load(&page->addr);
		if (!a || !uhmm__page_grab(mm, page, a))
			continue;
		/* Mirrors of the page's address drop it before it is frozen. */
		inv = uhmm__invalidate_start(mm, a, a + uhmm__page_size,
					     UHMM_NOTIFY_MIGRATE, 0, NULL);
		slot = uhmm__ptable_slot(&mm->ptable, a, false);
		e = slot ? atomic_load(slot) : 0;
		ok = (e & UHMM_PTE_TYPE_MASK) == UHMM_PTE_DEVICE &&
		     uhmm__pte_payload(e) == pfn &&
		     uhmm__ptable_cmpxchg(&mm->ptable, slot, &e,
					  (e & ~UHMM_PTE_TYPE_MASK) | UHMM_PTE_MIGRATING);
		if (inv)
			uhmm__invalidate_end(mm);
		if (!ok) {
			uhmm_page_unlock(page);
			uhmm_page_put(page);
			continue;
		}
		uhmm_page_put(page);	/* the entry's reference keeps it now */
		src[i] = uhmm_migrate_pfn(pfn) | UHMM_MIGRATE_PFN_MIGRATE;
		if (e & UHMM_PTE_WRITE)
			src[i] |= UHMM_MIGRATE_PFN_WRITE;
	}
	return 0;
}

int uhmm_migrate_device_range(struct uhmm_mm *mm, uint64_t *src, uint64_t start_pfn,
			      unsigned long npages)
{
	return collect_device(mm, src, NULL, start_pfn, npages);
}

int uhmm_migrate_device_pfns(struct uhmm_mm *mm, uint64_t *src, unsigned long npages)
{
	if (!mm || !src || npages == 0)
		return uhmm__err(EINVAL, "migrate device pfns: NULL argument or no pages");
	/*
	 * No copy of the pfns: collection reads entry i before it writes it,
	 * and allocating (and freeing, with pages frozen) is what it must not
	 * do.
	 */
	return collect_device(mm, src, src, 0, npages);
}

void uhmm_migrate_device_pages(struct uhmm_mm *mm, uint64_t *src, uint64_t *dst,
			       unsigned long npages)
{
	if (!mm || !src || !dst) {
		uhmm__err(EINVAL, "migrate device pages: NULL argument");
		return;
	}
	for (unsigned long i = 0; i < npages; i++)
		if ((src[i] & UHMM_MIGRATE_PFN_MIGRATE) &&
		    (!(dst[i] & UHMM_MIGRATE_PFN_VALID) || uhmm_migrate_pfn_is_device(dst[i])))
			src[i] &= ~UHMM_MIGRATE_PFN_MIGRATE;
}

static void migrate_device_finalize(struct uhmm_mm *mm, uint64_t *src, uint64_t *dst,
				    unsigned long npages);

/* The region collection entered ends after the last lock (sigblock.h). */
void uhmm_migrate_device_finalize(struct uhmm_mm *mm, uint64_t *src, uint64_t *dst,
				  unsigned long npages)
{
	uhmm__sig_enter();
	migrate_device_finalize(mm, src, dst, npages);
	uhmm__sig_leave();
}

static void migrate_device_finalize(struct uhmm_mm *mm, uint64_t *src, uint64_t *dst,
				    unsigned long npages)
{
	if (!mm || !src || !dst) {
		if (mm == &uhmm__the_mm)
			devmig_unlock(mm);
		uhmm__err(EINVAL, "migrate device finalize: NULL argument");
		return;
	}
	for (unsigned long i = 0; i < npages; i++) {
		struct uhmm_page *page;
		_Atomic uint64_t *slot;
		uintptr_t a;
		uint64_t e, final;

		if (!(src[i] & UHMM_MIGRATE_PFN_VALID))
			continue;
		page = uhmm__pfn_to_page(mm, uhmm_migrate_pfn_to_pfn(src[i]));
		if (!page)
			continue;
		a = atomic_load(&page->addr);
		slot = uhmm__ptable_slot(&mm->ptable, a, false);
		e = slot ? atomic_load(slot) : 0;
		if (!slot || (e & UHMM_PTE_TYPE_MASK) != UHMM_PTE_MIGRATING) {
			uhmm_page_unlock(page);
			continue;
		}
		final = (e & ~UHMM_PTE_TYPE_MASK) | UHMM_PTE_DEVICE;
		if (e & UHMM_PTE_GONE) {
			final = 0;
			atomic_fetch_sub(&page->pgmap->nr_resident, 1);
			uhmm_page_unlock(page);
			uhmm_page_put(page);
		} else if (src[i] & UHMM_MIGRATE_PFN_MIGRATE) {
			uintptr_t from = (uintptr_t)(uhmm_migrate_pfn_to_pfn(dst[i]) <<
						     uhmm__page_shift);

			if (do_copy(mm, a, from, uhmm__page_size) == 0) {
				final = 0;
				atomic_fetch_sub(&page->pgmap->nr_resident, 1);
				uhmm_page_unlock(page);
				uhmm_page_put(page);
			} else {
				uhmm__warn("migrate device: cannot install %#lx",
					   (unsigned long)a);
				uhmm_page_unlock(page);
			}
		} else {
			uhmm_page_unlock(page);
		}
		commit_entry(mm, slot, e, final);
		wake_range(mm, a, a + uhmm__page_size);
	}
	devmig_unlock(mm);
	mig_done_broadcast(mm);
}
