// SPDX-License-Identifier: MIT
/*
 * Staging: the mappings a migration freezes system pages into (system to
 * device) or the driver copies device data into (device to system), and
 * the staging cache that keeps a system->device migration's staging for the
 * device->system migration that brings the same addresses back.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "base.h"
#include "context.h"
#include "devmem_priv.h"
#include "features_priv.h"
#include "inject_priv.h"
#include "migrate_state.h"
#include "ownmem.h"
#include "sigblock.h"
#include "staging.h"
#include "sys.h"
#include "vma.h"

/*
 * A staging mapping whose page i sits at the same 2 MiB offset as the
 * range's, so that a whole huge page can move with one PMD.  The mapping
 * is registered whole, not only the slots: it stays one VMA (a registered
 * middle would make three), which matters for the staging cache's count of
 * mappings.
 */
int uhmm__staging_create(struct uhmm_migrate_vma *m, bool reg)
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

static void sarea_release(struct uhmm_mm *mm, void *p, size_t len, unsigned long gen);

void uhmm__staging_destroy(struct uhmm_mm *mm, struct uhmm_migrate_state *s)
{
	if (!s->map)
		return;
	if (s->sarea) {
		s->sarea = false;
		s->registered = false;
		sarea_release(mm, s->map, s->map_len, mm->generation);
		s->map = NULL;
		return;
	}
	if (s->bounce) {
		s->bounce = false;
		s->map = NULL;
		atomic_store_explicit(&mm->bounce_busy, false, memory_order_release);
		return;
	}
	if (s->registered) {
		struct uffdio_range r = { .start = (uintptr_t)s->map, .len = s->map_len };

		pthread_mutex_lock(&mm->reg_lock);
		uhmm__uffd_ioctl(mm->uffd, UFFDIO_UNREGISTER, &r);
		pthread_mutex_unlock(&mm->reg_lock);
	}
	uhmm__sys_munmap(s->map, s->map_len);
	s->map = NULL;
}

/* ---- the bounce area -------------------------------------------------------- */

/*
 * Small device->system migrations the cache has no entry for (a one-page
 * CPU fault-back whose entry was pushed out, a driver's own small
 * migration) would each map staging, populate it, and unmap it: five
 * system calls and a first touch of a new page table entry, on a CPU
 * fault's path.  The bounce area is made with the context, never
 * registered by uhmm (a notifier watching it for events changes nothing:
 * nothing is moved into or out of it), MADV_DONTFORK, and its slots are
 * installed by copy only (migrate.c), so once written they stay populated.
 * Made with the context, so it is not a hole the application freed a
 * moment ago (docs/LIMITATIONS.md: a driver's own memory).
 */
static size_t bounce_len(void)
{
	return (size_t)UHMM__BOUNCE_PAGES << uhmm__page_shift;
}

int uhmm__bounce_create(struct uhmm_mm *mm)
{
	size_t len = bounce_len();
	void *p = uhmm__sys_mmap(NULL, len, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	if (p == MAP_FAILED)
		return -ENOMEM;
	uhmm__sys_madvise(p, len, MADV_DONTFORK);
	mm->bounce = p;
	atomic_store(&mm->bounce_busy, false);
	return 0;
}

void uhmm__bounce_destroy(struct uhmm_mm *mm)
{
	if (mm->bounce)
		uhmm__sys_munmap(mm->bounce, bounce_len());
	mm->bounce = NULL;
}

bool uhmm__bounce_take(struct uhmm_migrate_vma *m)
{
	struct uhmm_migrate_state *s = m->state;
	struct uhmm_mm *mm = m->mm;

	if (!mm->bounce || m->npages > UHMM__BOUNCE_PAGES ||
	    atomic_exchange_explicit(&mm->bounce_busy, true, memory_order_acquire))
		return false;
	s->bounce = true;
	s->map = mm->bounce;
	s->map_len = bounce_len();
	s->staging = mm->bounce;
	return true;
}

/* ---- the small staging area ------------------------------------------------- */

/*
 * A system->device migration of a few pages would map its own staging,
 * register it, and (when the staging cache lets the entry go) unregister
 * and unmap it: five system calls, two of which split and merge VMAs.
 * The small staging area is one mapping made on first use, whose pages
 * are handed out as slots: a migration of n <= UHMM__SAREA_MAX_PAGES
 * pages takes n consecutive free pages (page i of the range <-> slot i;
 * no 2 MiB offset: such a migration never moves a whole huge page), and
 * they stay taken while the migration and then the staging cache entry
 * that keeps them refer to them.  When the last of them lets go, the
 * slots are emptied (MADV_DONTNEED: an empty slot is what UFFDIO_MOVE
 * needs as its destination) and given back, never unmapped.
 *
 * UFFDIO_MOVE needs its destination registered with the userfaultfd the
 * ioctl is made on.  The area is registered whole (it stays one VMA) for
 * WP, which faults on nothing uhmm does, with a userfaultfd of its own
 * that asks for no events: registered with the context's, MADV_DONTNEED
 * would send a REMOVE event and wait for the service thread to read it.
 * Freezing into the area uses the area's userfaultfd
 * (uhmm__staging_freeze_fd()); moving slots back into the range uses the
 * context's, as the range is the destination then.
 *
 * The area is MADV_DONTFORK and MADV_NOHUGEPAGE.  A free slot must be
 * empty: under mlockall(MCL_FUTURE) the area would be made populated and
 * VM_LOCKED (it is not made then); mlockall(MCL_CURRENT) later faults in
 * every page of it, which the first freeze into it finds (-EEXIST before
 * anything moved: uhmm__sarea_off()), and a failed MADV_DONTNEED
 * (VM_LOCKED) keeps the slots taken: either gives up the area until
 * teardown, and such migrations map their staging again.  A slot
 * populated by anything else (a driver writing where it should only
 * read) makes that page's freeze fail: the page stays where it is, it
 * does not migrate.  UFFDIO_MOVE also wants the
 * source's protection and VM_LOCKED to match the destination's: only a
 * read-write, not executable mapping takes slots, and a mlock()ed range
 * (refused with -EINVAL) is frozen again into staging of its own
 * (migrate.c, stage_and_freeze()).  Without UFFDIO_MOVE or WP (fallback,
 * UHMM_DISABLE=all) the area is never made.  c->lock guards the bitmap;
 * the pages of a taken slot belong to its holder.
 */
static size_t sarea_len(void)
{
	return (size_t)UHMM__SAREA_PAGES << uhmm__page_shift;
}

static inline bool sa_bit(const uint64_t *u, size_t i)
{
	return u[i / 64] & (UINT64_C(1) << (i % 64));
}

static void sa_set(uint64_t *u, size_t i, size_t n, bool on)
{
	for (size_t k = i; k < i + n; k++) {
		if (on)
			u[k / 64] |= UINT64_C(1) << (k % 64);
		else
			u[k / 64] &= ~(UINT64_C(1) << (k % 64));
	}
}

/* The first run of @n free pages in [@from, @to); -1 if none. */
static long sa_find(const uint64_t *u, size_t from, size_t to, size_t n)
{
	size_t i = from;

	while (i + n <= to) {
		size_t j;

		if (!(i % 64) && u[i / 64] == UINT64_MAX) {
			i += 64;
			continue;
		}
		for (j = i; j < i + n && !sa_bit(u, j); j++)
			;
		if (j == i + n)
			return (long)i;
		i = j + 1;
	}
	return -1;
}

/* Make the area (c->lock held); if it cannot be, sa_off. */
static void sarea_create(struct uhmm_mm *mm, struct uhmm__staging_cache *c)
{
	size_t len = sarea_len();
	unsigned char v = 0;
	char *p;
	int fd;

	c->sa_off = true;
	if (!uhmm__has(UHMM_FEAT_MOVE) || !uhmm__has(UHMM_FEAT_UFFD_WP))
		return;
	p = uhmm__sys_mmap(NULL, len, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return;
	if (mincore(p, uhmm__page_size, &v) || (v & 1)) {
		/* mlockall(MCL_FUTURE): populated and VM_LOCKED. */
		uhmm__sys_munmap(p, len);
		return;
	}
	uhmm__sys_madvise(p, len, MADV_DONTFORK);
	uhmm__sys_madvise(p, len, MADV_NOHUGEPAGE);
	fd = uhmm__uffd_open_move_only();
	if (fd >= 0) {
		struct uffdio_register r = {
			.range = { .start = (uintptr_t)p, .len = len },
			.mode = UFFDIO_REGISTER_MODE_WP,
		};

		if (uhmm__uffd_ioctl(fd, UFFDIO_REGISTER, &r)) {
			close(fd);
			fd = -1;
		}
	}
	if (fd < 0) {
		uhmm__sys_munmap(p, len);
		return;
	}
	c->sa_map = p;
	c->sa_uffd = fd;
	c->sa_gen = mm->generation;
	c->sa_hint = 0;
	memset(c->sa_used, 0, sizeof(c->sa_used));
	c->sa_off = false;
}

bool uhmm__sarea_take(struct uhmm_migrate_vma *m, unsigned int vma_flags)
{
	struct uhmm__staging_cache *c = &m->mm->staging_cache;
	struct uhmm_migrate_state *s = m->state;
	const unsigned int ps = uhmm__page_shift;
	size_t n = m->npages;
	long at = -1;
	char *p;

	if (!n || n > UHMM__SAREA_MAX_PAGES ||
	    (vma_flags & (UHMM__VMA_READ | UHMM__VMA_WRITE | UHMM__VMA_EXEC | UHMM__VMA_ANON |
			  UHMM__VMA_SHARED)) !=
		    (UHMM__VMA_READ | UHMM__VMA_WRITE | UHMM__VMA_ANON))
		return false;
	pthread_mutex_lock(&c->lock);
	if (!c->sa_map && !c->sa_off)
		sarea_create(m->mm, c);
	if (c->sa_map && !c->sa_off && c->sa_gen == m->mm->generation) {
		at = sa_find(c->sa_used, c->sa_hint, UHMM__SAREA_PAGES, n);
		if (at < 0)
			at = sa_find(c->sa_used, 0, UHMM__MIN(c->sa_hint + n, (size_t)UHMM__SAREA_PAGES), n);
		if (at >= 0) {
			sa_set(c->sa_used, (size_t)at, n, true);
			c->sa_hint = (size_t)at + n;
			if (c->sa_hint >= UHMM__SAREA_PAGES)
				c->sa_hint = 0;
		}
	}
	p = at >= 0 ? c->sa_map + ((size_t)at << ps) : NULL;
	pthread_mutex_unlock(&c->lock);
	if (!p)
		return false;	/* no area, or no free run: staging of its own */
	s->sarea = true;
	s->map = p;
	s->map_len = n << ps;
	s->staging = p;
	s->registered = true;
	return true;
}

int uhmm__staging_freeze_fd(struct uhmm_mm *mm, const struct uhmm_migrate_state *s)
{
	/* The area outlives every slot taken (teardown runs no migration). */
	return s->sarea ? mm->staging_cache.sa_uffd : mm->uffd;
}

/*
 * Empty the slots [@p, +@len) of the area made in generation @gen and
 * give them back (the caller holds c->lock not).  Under c->lock, so that
 * the area cannot go (and the range be someone else's) meanwhile.
 */
static void sarea_release(struct uhmm_mm *mm, void *p, size_t len, unsigned long gen)
{
	struct uhmm__staging_cache *c = &mm->staging_cache;
	char *q = p;

	pthread_mutex_lock(&c->lock);
	if (c->sa_map && gen == c->sa_gen && q >= c->sa_map && q + len <= c->sa_map + sarea_len()) {
		if (uhmm__sys_madvise(p, len, MADV_DONTNEED) == 0)
			sa_set(c->sa_used, (size_t)(q - c->sa_map) >> uhmm__page_shift,
			       len >> uhmm__page_shift, false);
		else
			c->sa_off = true;	/* VM_LOCKED (mlockall): keep them, take no more */
	}
	pthread_mutex_unlock(&c->lock);
}

void uhmm__sarea_off(struct uhmm_mm *mm)
{
	struct uhmm__staging_cache *c = &mm->staging_cache;

	pthread_mutex_lock(&c->lock);
	c->sa_off = true;
	pthread_mutex_unlock(&c->lock);
}

void uhmm__sarea_destroy(struct uhmm_mm *mm)
{
	struct uhmm__staging_cache *c = &mm->staging_cache;

	pthread_mutex_lock(&c->lock);
	if (c->sa_map) {
		uhmm__sys_munmap(c->sa_map, sarea_len());
		close(c->sa_uffd);
	}
	c->sa_map = NULL;
	c->sa_off = false;
	pthread_mutex_unlock(&c->lock);
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
 * CACHE_MAX_ENTRIES mappings; the oldest entries go first.  A migration
 * larger than the bound keeps the pages of its first bound's worth of
 * addresses and frees the rest at once (entry_trim()), so the cache never
 * holds more than the bound in pages, whatever the migrations' sizes.  An entry goes
 * as soon as its pages have been moved out, when a newer entry covers its
 * range, when the pool its pages went to is removed, and at context
 * teardown.  Staging is MADV_DONTFORK: a fork child
 * forgets the cache without touching it.
 */
#define CACHE_MAX_ENTRIES 256

struct uhmm__stage_entry {
	struct uhmm__stage_entry *next, *prev;	/* the list (next also: victims, dead) */
	struct uhmm__itree_node it;	/* [start, end - 1] in c->tree */
	unsigned long seq;		/* higher: put later */
	uintptr_t start, end;		/* the range the slots mirror */
	uintptr_t filled;		/* slots from here to end were emptied (bound) */
	uintptr_t staging;		/* slot of start */
	void *map;
	size_t map_len;
	size_t pages;			/* populated slots it still accounts for */
	const struct uhmm_devmem *pool;	/* where the pages went */
	unsigned long gen;		/* context generation it was made in */
	int users;			/* migrations using it now */
	bool registered;		/* [map, +map_len) registered WP */
	bool sarea;			/* slots of the small staging area */
	bool dead;			/* dropped while in use: the last user frees */
};

/*
 * Entries emptied by a device->system migration, unmapped later by the next
 * uhmm__staging_cache_put() (or teardown): unregistering and unmapping would otherwise
 * add to a CPU fault's latency.  At most CACHE_MAX_DEAD wait.
 */
#define CACHE_MAX_DEAD 16

static void cache_atfork_child(void)
{
	struct uhmm__staging_cache *c = &uhmm__the_mm.staging_cache;

	/* The mappings are not in the child (MADV_DONTFORK): forget them. */
	pthread_mutex_init(&c->lock, NULL);
	c->head = c->tail = NULL;
	uhmm__itree_init(&c->tree);
	c->pages = 0;
	c->dead = NULL;
	c->ndead = 0;
	c->pid = getpid();
	c->checked_gen = 0;
	/* The area is not here either; its userfaultfd is the parent's. */
	if (c->sa_map)
		close(c->sa_uffd);
	c->sa_map = NULL;
	c->sa_off = false;
	memset(c->sa_used, 0, sizeof(c->sa_used));
}

/*
 * The bound, from the environment, and the fork handler: at load time,
 * for the one context (uhmm__the_mm, static and never freed), as neither
 * has a context argument.
 */
__attribute__((constructor)) static void cache_init(void)
{
	struct uhmm__staging_cache *c = &uhmm__the_mm.staging_cache;
	const char *v = getenv("UHMM_STAGING_CACHE_MIB");
	long phys = sysconf(_SC_PHYS_PAGES);
	size_t mib = 64;

	if (phys > 0)
		mib = UHMM__MIN((size_t)1024, UHMM__MAX((size_t)64,
			(size_t)phys / 64 * (size_t)sysconf(_SC_PAGESIZE) >> 20));
	if (v && *v)
		mib = strtoul(v, NULL, 0);
	c->cap = (mib << 20) / (size_t)sysconf(_SC_PAGESIZE);
	c->pid = getpid();
	pthread_atfork(NULL, NULL, cache_atfork_child);
}

/* Unmap an entry taken off the list (c->lock not held). */
static void entry_destroy(struct uhmm_mm *mm, struct uhmm__stage_entry *e)
{
	if (e->sarea) {
		sarea_release(mm, e->map, e->map_len, e->gen);
		uhmm__free(e);
		return;
	}
	if (e->registered && e->gen == mm->generation && mm->uffd >= 0) {
		struct uffdio_range r = { .start = (uintptr_t)e->map, .len = e->map_len };

		pthread_mutex_lock(&mm->reg_lock);
		uhmm__uffd_ioctl(mm->uffd, UFFDIO_UNREGISTER, &r);
		pthread_mutex_unlock(&mm->reg_lock);
	}
	uhmm__sys_munmap(e->map, e->map_len);
	uhmm__free(e);
}

static struct uhmm__stage_entry *entry_of(struct uhmm__itree_node *it)
{
	return UHMM__CONTAINER_OF(it, struct uhmm__stage_entry, it);
}

/* Put @e on the list as the newest (c->lock held). */
static void entry_link(struct uhmm__staging_cache *c, struct uhmm__stage_entry *e)
{
	e->prev = NULL;
	e->next = c->head;
	if (c->head)
		c->head->prev = e;
	else
		c->tail = e;
	c->head = e;
	e->seq = ++c->seq;
	e->it.start = e->start;
	e->it.last = e->end - 1;
	uhmm__itree_insert(&c->tree, &e->it);
	c->pages += e->pages;
}

/*
 * Take @e, on the list, off it (c->lock held) and, unless a migration uses
 * it (its last user frees it then), add it to @victims for entry_destroy().
 */
static void entry_unlink(struct uhmm__staging_cache *c, struct uhmm__stage_entry *e,
			 struct uhmm__stage_entry **victims)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		c->head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		c->tail = e->prev;
	uhmm__itree_remove(&c->tree, &e->it);
	c->pages -= e->pages;
	e->pages = 0;
	if (e->users) {
		e->dead = true;
		return;
	}
	e->next = *victims;
	*victims = e;
}

/*
 * Is the cache this process's (c->lock held)?  A service thread runs only
 * in the process that made the context, where c->pid is its pid (set at
 * load or by the fork handler; a child made by a raw clone cannot make a
 * context, uhmm_mm_get() says ECHILD there): it needs no getpid(), a
 * system call per migration on the fault path (glibc caches no pid).
 */
static bool cache_mine(const struct uhmm__staging_cache *c)
{
	return uhmm__on_service_thread() || c->pid == getpid();
}

/* Drop entries of another context or process (c->lock held). */
static void cache_check_owner(struct uhmm_mm *mm, struct uhmm__stage_entry **victims)
{
	struct uhmm__staging_cache *c = &mm->staging_cache;

	if (!cache_mine(c)) {
		/* A child made without pthread_atfork: nothing here is ours. */
		c->head = c->tail = c->dead = NULL;
		uhmm__itree_init(&c->tree);
		c->pages = c->ndead = 0;
		c->pid = getpid();
		c->checked_gen = mm->generation;
		return;
	}
	/*
	 * Entries are only ever added with the current generation: once
	 * every entry was checked against it, none needs looking at again
	 * until the context is made anew (a walk of up to CACHE_MAX_ENTRIES
	 * entries on every CPU fault-back otherwise).
	 */
	if (c->checked_gen == mm->generation)
		return;
	for (struct uhmm__stage_entry *e = c->head, *n; e; e = n) {
		n = e->next;
		if (e->gen != mm->generation)
			entry_unlink(c, e, victims);
	}
	c->checked_gen = mm->generation;
}

/* Take the emptied entries waiting to be unmapped (c->lock held). */
static void take_dead(struct uhmm__staging_cache *c, struct uhmm__stage_entry **victims)
{
	while (c->dead) {
		struct uhmm__stage_entry *e = c->dead;

		c->dead = e->next;
		e->next = *victims;
		*victims = e;
	}
	c->ndead = 0;
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
 * A migration larger than the whole bound keeps the slots of its first
 * @cap pages with data and frees the rest (the order a sequential scan
 * brings them back in): the mapping stays whole, so the entry still
 * mirrors the whole range, and a migration back that reaches past
 * e->filled populates those slots again (migrate.c's populate_staging()).
 * Cut at a 2 MiB boundary when there is one, so that a huge page is kept
 * or freed whole.  The entry is unregistered first (no REMOVE event for
 * the discard; nothing is ever moved into cached staging again).
 */
static void entry_trim(struct uhmm_migrate_vma *m, struct uhmm__stage_entry *e, size_t cap)
{
	const unsigned int ps = uhmm__page_shift;
	const uintptr_t huge = 2u << 20;
	struct uhmm_migrate_state *s = m->state;
	size_t kept = 0, cut = 0;
	uintptr_t a;

	for (size_t i = 0; i < m->npages && kept < cap; i++)
		if (s->kind[i] == K_SYS &&
		    (m->src[i] & (UHMM_MIGRATE_PFN_MIGRATE | UHMM_MIGRATE_PFN_VALID)) ==
			    (UHMM_MIGRATE_PFN_MIGRATE | UHMM_MIGRATE_PFN_VALID)) {
			kept++;
			cut = i + 1;
		}
	a = m->start + (cut << ps);
	if ((a & ~(huge - 1)) > m->start) {
		a &= ~(huge - 1);
		cut = (a - m->start) >> ps;
		kept = 0;
		for (size_t i = 0; i < cut; i++)
			kept += s->kind[i] == K_SYS &&
				(m->src[i] & (UHMM_MIGRATE_PFN_MIGRATE | UHMM_MIGRATE_PFN_VALID)) ==
					(UHMM_MIGRATE_PFN_MIGRATE | UHMM_MIGRATE_PFN_VALID);
	}
	{
		struct uffdio_range r = { .start = (uintptr_t)e->map, .len = e->map_len };

		pthread_mutex_lock(&m->mm->reg_lock);
		uhmm__uffd_ioctl(m->mm->uffd, UFFDIO_UNREGISTER, &r);
		pthread_mutex_unlock(&m->mm->reg_lock);
		e->registered = false;
	}
	uhmm__sys_madvise(s->staging + (cut << ps), (m->npages - cut) << ps, MADV_DONTNEED);
	e->filled = a;
	e->pages = kept;
}

/* Where a borrowed entry's emptied slots begin (its end if none were). */
uintptr_t uhmm__staging_cache_filled(const struct uhmm_migrate_state *s)
{
	return s->cache->filled;
}

/*
 * A system->device migration is done: keep its staging (the slots of the
 * pages that migrated with data) in the cache instead of unmapping it.
 */
void uhmm__staging_cache_put(struct uhmm_migrate_vma *m)
{
	struct uhmm__staging_cache *c = &m->mm->staging_cache;
	struct uhmm_migrate_state *s = m->state;
	struct uhmm__stage_entry *e, *victims = NULL;
	const struct uhmm_devmem *pool = NULL;
	size_t pages = 0;

	if (!s->map || !s->registered || s->by_mremap || s->cache || !uhmm__install_by_move ||
	    !uhmm__has(UHMM_FEAT_MOVE) || !c->cap)
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
	if (!pages || (s->sarea && pages > c->cap))
		return;		/* (area slots are never trimmed: entry_trim() unregisters) */
	e = uhmm__calloc(1, sizeof(*e));
	if (!e)
		return;		/* staging is unmapped as without a cache */
	*e = (struct uhmm__stage_entry){
		.start = m->start, .end = m->end, .filled = m->end,
		.staging = (uintptr_t)s->staging,
		.map = s->map, .map_len = s->map_len, .pages = pages, .pool = pool,
		.gen = m->mm->generation, .registered = true, .sarea = s->sarea,
	};
	if (pages > c->cap)
		entry_trim(m, e, c->cap);
	s->map = NULL;		/* the entry owns the mapping (or the slots) now */
	s->sarea = false;
	pthread_mutex_lock(&c->lock);
	cache_check_owner(m->mm, &victims);
	take_dead(c, &victims);
	/* Entries inside this range are superseded: their slots are stale. */
	for (struct uhmm__itree_node *it = uhmm__itree_iter_first(&c->tree, e->start, e->end - 1),
				     *n; it; it = n) {
		struct uhmm__stage_entry *o = entry_of(it);

		n = uhmm__itree_iter_next(it, e->start, e->end - 1);
		if (o->start >= e->start && o->end <= e->end)
			entry_unlink(c, o, &victims);
	}
	entry_link(c, e);
	/* Over the bound: the oldest entries not in use go. */
	while (c->pages > c->cap || c->tree.count > CACHE_MAX_ENTRIES) {
		struct uhmm__stage_entry *o = c->tail;

		while (o && (o->users || o == e))
			o = o->prev;
		if (!o)
			break;
		entry_unlink(c, o, &victims);
	}
	pthread_mutex_unlock(&c->lock);
	destroy_victims(m->mm, victims);
}

/*
 * A device->system migration needs staging: borrow the newest cache entry
 * whose slots cover every device page it migrates.  true if one was found.
 */
bool uhmm__staging_cache_take(struct uhmm_migrate_vma *m)
{
	struct uhmm__staging_cache *c = &m->mm->staging_cache;
	struct uhmm_migrate_state *s = m->state;
	const unsigned int ps = uhmm__page_shift;
	struct uhmm__stage_entry *victims = NULL, *found = NULL;
	size_t lo = m->npages, hi = 0;
	uintptr_t a_lo, a_hi;

	if (!c->cap || !uhmm__install_by_move || !uhmm__has(UHMM_FEAT_MOVE))
		return false;
	for (size_t i = 0; i < m->npages; i++)
		if (s->kind[i] == K_DEV) {
			lo = UHMM__MIN(lo, i);
			hi = i + 1;
		}
	if (lo >= hi)
		return false;
	a_lo = m->start + (lo << ps);
	a_hi = m->start + (hi << ps);
	pthread_mutex_lock(&c->lock);
	cache_check_owner(m->mm, &victims);
	/* The newest entry covering [a_lo, a_hi). */
	for (struct uhmm__itree_node *it = uhmm__itree_iter_first(&c->tree, a_lo, a_hi - 1); it;
	     it = uhmm__itree_iter_next(it, a_lo, a_hi - 1)) {
		struct uhmm__stage_entry *e = entry_of(it);

		if (e->start <= a_lo && a_hi <= e->end && (!found || e->seq > found->seq))
			found = e;
	}
	if (found) {
		found->users++;
		s->cache = found;
		/* Slot of m->start (it may lie before the entry: never touched). */
		s->staging = (char *)(found->staging + (m->start - found->start));
		s->map = found->map;
		s->map_len = found->map_len;
	}
	pthread_mutex_unlock(&c->lock);
	destroy_victims(m->mm, victims);
	return found != NULL;
}

/* Give back a borrowed entry; @moved slots were moved out into the range. */
void uhmm__staging_cache_release(struct uhmm_migrate_vma *m, size_t moved)
{
	struct uhmm__staging_cache *c = &m->mm->staging_cache;
	struct uhmm_migrate_state *s = m->state;
	struct uhmm__stage_entry *e = s->cache, *victim = NULL;

	s->cache = NULL;
	s->map = NULL;		/* the entry's mapping, not ours to unmap */
	pthread_mutex_lock(&c->lock);
	e->users--;
	if (!e->dead) {
		moved = UHMM__MIN(moved, e->pages);
		e->pages -= moved;
		c->pages -= moved;
		if (!e->pages)
			entry_unlink(c, e, &victim);	/* not dead: on the list */
	} else if (!e->users) {
		victim = e;
	}
	if (victim && c->ndead < CACHE_MAX_DEAD) {
		victim->next = c->dead;
		c->dead = victim;
		c->ndead++;
		victim = NULL;
	}
	pthread_mutex_unlock(&c->lock);
	if (victim)
		entry_destroy(m->mm, victim);
}

void uhmm__staging_cache_drop(struct uhmm_mm *mm)
{
	struct uhmm__staging_cache *c = &mm->staging_cache;
	struct uhmm__stage_entry *victims = NULL;

	pthread_mutex_lock(&c->lock);
	if (cache_mine(c)) {
		take_dead(c, &victims);
		while (c->head)
			entry_unlink(c, c->head, &victims);
	}
	pthread_mutex_unlock(&c->lock);
	destroy_victims(mm, victims);
}

void uhmm__staging_cache_drop_pool(struct uhmm_mm *mm, const struct uhmm_devmem *pool)
{
	struct uhmm__staging_cache *c = &mm->staging_cache;
	struct uhmm__stage_entry *victims = NULL;

	pthread_mutex_lock(&c->lock);
	if (cache_mine(c)) {
		take_dead(c, &victims);
		for (struct uhmm__stage_entry *e = c->head, *n; e; e = n) {
			n = e->next;
			if (e->pool == pool)
				entry_unlink(c, e, &victims);
		}
	}
	pthread_mutex_unlock(&c->lock);
	destroy_victims(mm, victims);
}
