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
#include <link.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "base.h"
#include "context.h"
#include "devmem_priv.h"
#include "features_priv.h"
#include "inject_priv.h"
#include "log.h"
#include "migrate_lock.h"
#include "migrate_priv.h"
#include "migrate_state.h"
#include "notifier_priv.h"
#include "ownmem.h"
#include "pagemap.h"
#include "ptable.h"
#include "service.h"
#include "sigblock.h"
#include "staging.h"
#include "sys.h"
#include "uffd.h"
#include "vma.h"
#include "wpmarker.h"

#ifndef MOVE_MIN_PAGES
#define MOVE_MIN_PAGES	8	/* shorter runs of staged pages install by copy */
#endif

static inline bool bit_test(const uint64_t *map, size_t i)
{
	return map && (map[i / 64] & (UINT64_C(1) << (i % 64)));
}

static inline void bit_set(uint64_t *map, size_t i)
{
	map[i / 64] |= UINT64_C(1) << (i % 64);
}

static inline void bit_clear(uint64_t *map, size_t i)
{
	if (map)
		map[i / 64] &= ~(UINT64_C(1) << (i % 64));
}

/* ---- small helpers ----------------------------------------------------- */

static _Atomic uint64_t *slot_of(struct uhmm_mm *mm, uintptr_t a)
{
	return uhmm__ptable_slot(&mm->ptable, a, true);
}


/* Slots of a borrowed entry that finalize moved into the range. */
static size_t moved_from_cache(struct uhmm_migrate_vma *m)
{
	struct uhmm_migrate_state *s = m->state;
	/* Slots past a trimmed entry's bound were populated for this migration. */
	uintptr_t filled = uhmm__staging_cache_filled(s);
	size_t lim = filled <= m->start ? 0 :
		     UHMM__MIN(m->npages, (filled - m->start) >> uhmm__page_shift);
	size_t n = 0;

	for (size_t i = 0; i < lim; i++)
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
	if (s->locked)
		uhmm__migrate_unlock(m->mm);
	if (s->cache)
		uhmm__staging_cache_release(m, moved_from_cache(m));
	if (s->remap_user) {
		pthread_mutex_lock(&m->mm->remap_lock);
		if (--m->mm->remap_users == 0)
			m->mm->remap_n = 0;	/* nobody needs the moves logged */
		pthread_mutex_unlock(&m->mm->remap_lock);
	}
	uhmm__staging_destroy(m->mm, s);
	uhmm__free(s->kind);
	uhmm__free(s->orig);
	uhmm__free(s->dst_given);
	uhmm__free(s->full_src);
	uhmm__free(s->csrc);
	uhmm__free(s->chead);
	uhmm__free(s->cwhole);
	uhmm__free(s);
	m->state = NULL;
	uhmm__sig_leave();	/* entered with the state, in setup */
}

void uhmm__migrate_done_broadcast(struct uhmm_mm *mm)
{
	atomic_fetch_add_explicit(&mm->migrations_done, 1, memory_order_relaxed);
	pthread_mutex_lock(&mm->mig_lock);
	pthread_cond_broadcast(&mm->mig_cond);
	pthread_mutex_unlock(&mm->mig_lock);
}

static int has_migrating(void *arg, uintptr_t a, _Atomic uint64_t *slot, uint64_t e)
{
	(void)arg; (void)a; (void)slot;
	return (e & UHMM__PTE_TYPE_MASK) == UHMM__PTE_MIGRATING;
}

void uhmm__wait_migrations(struct uhmm_mm *mm, uintptr_t start, uintptr_t end)
{
	if (uhmm__ptable_empty(&mm->ptable) || uhmm__on_service_thread())
		return;
	int nc = uhmm__nocancel_begin();	/* no unwind with mig_lock held */

	pthread_mutex_lock(&mm->mig_lock);
	while (uhmm__ptable_walk(&mm->ptable, start, end, has_migrating, NULL))
		pthread_cond_wait(&mm->mig_cond, &mm->mig_lock);
	pthread_mutex_unlock(&mm->mig_lock);
	uhmm__nocancel_end(nc);
}

/* ---- where a page is now ------------------------------------------------ */

/*
 * A raw mremap (the system call, or glibc's realloc() of a large block,
 * which calls it itself) may move pages a migration holds: the REMAP
 * event's ptable_move() (service.c) moves their MIGRATING entries to the
 * new addresses and logs the move (mm->remap_log) under remap_lock.  An
 * entry's payload names its page (ptable.h, UHMM__PTE_TAG), so the
 * migration finds it again: at the page's address, or else by following
 * the moves logged since setup from there, in order.  Data installed at
 * the old address before the move went with it (the kernel moves the
 * page table entries; UFFDIO_COPY and UFFDIO_MOVE into the old address
 * after it fail with ENOENT), so finalize installs where the entry is
 * when it looks, and commits where the entry is when it commits.
 * tests/hunt/FINDINGS.md item 19.
 */

/* The payload of page i's MIGRATING entry: its device pfn, or its tag. */
static uint64_t page_ident(const struct uhmm_migrate_vma *m, size_t i)
{
	const struct uhmm_migrate_state *s = m->state;

	return s->kind[i] == K_DEV ? uhmm__pte_payload(s->orig[i]) :
	       uhmm__pte_tag(s->serial, i);
}

static bool is_mine(uint64_t e, uint64_t id)
{
	return (e & UHMM__PTE_TYPE_MASK) == UHMM__PTE_MIGRATING && uhmm__pte_payload(e) == id;
}

/*
 * The slot of page i's entry now, with its address (*cur) and value
 * (*ent); NULL when no slot holds it any more: it was unmapped (GONE) and
 * an entry moved there over it, which is what GONE means.
 */
static _Atomic uint64_t *page_slot(const struct uhmm_migrate_vma *m, size_t i, uintptr_t *cur,
				   uint64_t *ent)
{
	struct uhmm_mm *mm = m->mm;
	const uint64_t id = page_ident(m, i);
	uintptr_t a = m->start + (i << uhmm__page_shift);
	_Atomic uint64_t *slot = uhmm__ptable_slot(&mm->ptable, a, false);
	uint64_t e = slot ? atomic_load(slot) : 0;
	size_t r = 0;

	if (!is_mine(e, id)) {	/* moved (or moving: the lock waits that out) */
		pthread_mutex_lock(&mm->remap_lock);
		while (r < mm->remap_n && mm->remap_log[r].seq <= m->state->remap_seq0)
			r++;
		for (;;) {
			const struct uhmm__remap_rec *rec;

			slot = uhmm__ptable_slot(&mm->ptable, a, false);
			e = slot ? atomic_load(slot) : 0;
			if (is_mine(e, id))
				break;
			while (r < mm->remap_n && (a < mm->remap_log[r].from ||
						   a - mm->remap_log[r].from >= mm->remap_log[r].len))
				r++;
			if (r == mm->remap_n) {
				slot = NULL;
				break;
			}
			rec = &mm->remap_log[r++];
			a = rec->to + (a - rec->from);
		}
		pthread_mutex_unlock(&mm->remap_lock);
		if (!slot)
			return NULL;
	}
	*cur = a;
	*ent = e;
	return slot;
}

/* Where page i's entry was found (page_slot()). */
struct where {
	_Atomic uint64_t *slot;
	uintptr_t cur;
	uint64_t e;
};

/*
 * Store page i's final entry where its entry is now (a device page's
 * address with it), and wake a thread waiting there if that is not the
 * page's own address.  A device page for an entry unmapped meanwhile
 * (GONE) is dropped instead.  @w: where it was a moment ago, tried first.
 */
static void commit_page(struct uhmm_migrate_vma *m, size_t i, uint64_t final,
			const struct where *w)
{
	uintptr_t a = m->start + (i << uhmm__page_shift), cur = w->cur;
	_Atomic uint64_t *slot = w->slot;
	uint64_t e = w->e;

	for (bool first = true;; first = false) {
		if (!first)
			slot = page_slot(m, i, &cur, &e);
		if ((!slot || (e & UHMM__PTE_GONE)) &&
		    (final & UHMM__PTE_TYPE_MASK) == UHMM__PTE_DEVICE) {
			uhmm__drop_device_entry(m->mm, final);
			final = 0;
		}
		if (!slot)
			return;
		/* The caller set the device page's address where it found the entry. */
		if (!first && (final & UHMM__PTE_TYPE_MASK) == UHMM__PTE_DEVICE)
			atomic_store(&uhmm__pfn_to_page(m->mm, uhmm__pte_payload(final))->addr, cur);
		if (uhmm__ptable_cmpxchg(&m->mm->ptable, slot, &e, final))
			break;
	}
	if (cur != a)
		uhmm__uffd_wake(m->mm, cur, cur + uhmm__page_size);
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
	uintptr_t cur;
	uint64_t e;

	/* At its own address: a raw mremap may have moved it (its marker stays behind). */
	return m->state->kind[i] == K_SYS && (m->src[i] & UHMM_MIGRATE_PFN_MIGRATE) &&
	       page_slot(m, i, &cur, &e) && cur == m->start + (i << uhmm__page_shift) &&
	       !(e & UHMM__PTE_GONE);
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

/* ---- compound entries (UHMM_MIGRATE_PFN_COMPOUND) ------------------------ */

/*
 * The kernel's src/dst arrays stay one entry per page, but a block that
 * migrates whole is shown as one entry: its first, with
 * MIGRATE_PFN_COMPOUND, and 511 zeroes.  Inside uhmm every path works page
 * by page (the special-entry table, staging, the device page
 * descriptors), so the block's per-page entries are kept aside
 * (full_src) and put back ("expanded") wherever uhmm needs them: in
 * uhmm_migrate_vma_pages(), which shows the block as one entry again when
 * all of it migrates to a compound destination (or leaves it split when
 * the driver gave pages one by one), and at the start of finalize.
 */
#define CNR	512u				/* pages of a compound block */

static bool compound_alloc(struct uhmm_migrate_vma *m)
{
	struct uhmm_migrate_state *s = m->state;
	size_t words = (m->npages + 63) / 64;

	if (s->full_src)
		return true;
	s->full_src = uhmm__calloc(m->npages, sizeof(*s->full_src));
	s->csrc = uhmm__calloc(m->npages, sizeof(*s->csrc));
	s->chead = uhmm__calloc(words, sizeof(uint64_t));
	s->cwhole = uhmm__calloc(words, sizeof(uint64_t));
	if (s->full_src && s->csrc && s->chead && s->cwhole)
		return true;
	uhmm__free(s->full_src);
	uhmm__free(s->csrc);
	uhmm__free(s->chead);
	uhmm__free(s->cwhole);
	s->full_src = s->csrc = s->chead = s->cwhole = NULL;
	return false;
}

/* Can the aligned block at entry @b migrate as one entry? */
static bool compound_block_ok(struct uhmm_migrate_vma *m, size_t b)
{
	struct uhmm_migrate_state *s = m->state;
	uint8_t kind = s->kind[b];
	struct uhmm_page *head;

	if (kind != K_SYS && kind != K_DEV)
		return false;
	for (size_t i = b; i < b + CNR; i++)
		if (s->kind[i] != kind || !(m->src[i] & UHMM_MIGRATE_PFN_MIGRATE))
			return false;
	if (kind == K_SYS)
		return true;
	/* A whole compound device page, page i at its place. */
	head = uhmm__pfn_to_page(m->mm, uhmm_migrate_pfn_to_pfn(m->src[b]));
	if (!head || uhmm_page_folio(head) != head || !uhmm__folio_intact(head))
		return false;
	for (size_t i = 1; i < CNR; i++)
		if (uhmm_migrate_pfn_to_pfn(m->src[b + i]) != head->pfn + i)
			return false;
	return true;
}

/*
 * End of setup: with SELECT_COMPOUND, show each whole block as one entry;
 * device pages collected alone split their compound page.
 */
static void compound_collect(struct uhmm_migrate_vma *m)
{
	struct uhmm_migrate_state *s = m->state;
	const unsigned int ps = uhmm__page_shift;
	const uintptr_t huge = (uintptr_t)CNR << ps;

	if ((m->flags & UHMM_MIGRATE_VMA_SELECT_COMPOUND) && ps == 12) {
		for (uintptr_t a = (m->start + huge - 1) & ~(huge - 1);
		     a >= m->start && a + huge <= m->end; a += huge) {
			size_t b = (a - m->start) >> ps;
			uint64_t head = 0;

			if (!compound_block_ok(m, b) || !compound_alloc(m))
				continue;
			memcpy(s->full_src + b, m->src + b, CNR * sizeof(*m->src));
			if (s->kind[b] == K_SYS) {
				bool data = false;

				for (size_t i = b; i < b + CNR && !data; i++)
					data = (m->src[i] & UHMM_MIGRATE_PFN_VALID) != 0;
				head = UHMM_MIGRATE_PFN_MIGRATE | (m->src[b] & UHMM_MIGRATE_PFN_WRITE);
				if (data)
					head |= uhmm_migrate_pfn(((uintptr_t)s->staging >> ps) + b);
			} else {
				head = m->src[b];
			}
			head |= UHMM_MIGRATE_PFN_COMPOUND;
			s->csrc[b] = head;
			m->src[b] = head;
			memset(m->src + b + 1, 0, (CNR - 1) * sizeof(*m->src));
			bit_set(s->chead, b);
			m->cpages -= CNR - 1;
		}
	}
	for (size_t i = 0; i < m->npages; i++)
		if (s->kind[i] == K_DEV && !bit_test(s->chead, i) &&
		    (m->src[i] & UHMM_MIGRATE_PFN_MIGRATE))
			uhmm__folio_split(uhmm__pfn_to_page(m->mm,
					uhmm_migrate_pfn_to_pfn(m->src[i])));
}

/*
 * Show the block at head @b page by page again.  A compound dst becomes
 * 512 consecutive destinations and the block is marked migrating whole
 * (cwhole); any other dst is the driver's split: its per-page dst entries
 * stand.
 */
static void compound_expand(struct uhmm_migrate_vma *m, size_t b)
{
	struct uhmm_migrate_state *s = m->state;
	uint64_t d = m->dst[b];
	uint64_t mig = m->src[b] & UHMM_MIGRATE_PFN_MIGRATE;
	bool whole = false;

	bit_clear(s->chead, b);
	for (size_t i = b; i < b + CNR; i++)
		m->src[i] = (s->full_src[i] & ~UHMM_MIGRATE_PFN_MIGRATE) | mig;
	if ((d & UHMM_MIGRATE_PFN_COMPOUND) && (d & UHMM_MIGRATE_PFN_VALID)) {
		uint64_t pfn = uhmm_migrate_pfn_to_pfn(d);

		if (s->kind[b] == K_SYS) {
			struct uhmm_page *pg = uhmm__pfn_to_page(m->mm, pfn);

			whole = pg && uhmm_page_folio(pg) == pg &&
				uhmm_page_order(pg) == UHMM_PMD_ORDER;
		} else {
			whole = !uhmm_migrate_pfn_is_device(d);
		}
		if (whole) {
			for (size_t i = 0; i < CNR; i++)
				m->dst[b + i] = uhmm_migrate_pfn(pfn + i) |
						(d & UHMM_MIGRATE_PFN_WRITE);
			bit_set(s->cwhole, b);
		} else {
			/* Not a 2 MiB destination: only its own page is released. */
			m->dst[b] = d & ~UHMM_MIGRATE_PFN_COMPOUND;
			for (size_t i = b; i < b + CNR; i++)
				m->src[i] &= ~UHMM_MIGRATE_PFN_MIGRATE;
		}
	}
	if (!whole && s->kind[b] == K_DEV)	/* migrating in pieces */
		uhmm__folio_split(uhmm__pfn_to_page(m->mm,
				uhmm_migrate_pfn_to_pfn(s->full_src[b])));
}

static void compound_expand_all(struct uhmm_migrate_vma *m)
{
	if (!m->state->chead)
		return;
	for (size_t b = 0; b < m->npages; b++)
		if (bit_test(m->state->chead, b))
			compound_expand(m, b);
}

/* After pages(): a block that migrates whole is one entry again. */
static void compound_compress(struct uhmm_migrate_vma *m)
{
	struct uhmm_migrate_state *s = m->state;

	if (!s->cwhole)
		return;
	for (size_t b = 0; b < m->npages; b++) {
		bool all = true;

		if (!bit_test(s->cwhole, b))
			continue;
		for (size_t i = b; i < b + CNR && all; i++)
			all = (m->src[i] & UHMM_MIGRATE_PFN_MIGRATE) != 0;
		if (!all)
			continue;	/* partly gone meanwhile: shown page by page */
		m->src[b] = s->csrc[b] | UHMM_MIGRATE_PFN_MIGRATE;
		memset(m->src + b + 1, 0, (CNR - 1) * sizeof(*m->src));
		m->dst[b] |= UHMM_MIGRATE_PFN_COMPOUND;
		memset(m->dst + b + 1, 0, (CNR - 1) * sizeof(*m->dst));
		bit_set(s->chead, b);
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
	_Atomic uint64_t *slot;
	uintptr_t cur;
	uint64_t e;

	/* Where it is now: a raw mremap may have moved the claim. */
	while ((slot = page_slot(m, i, &cur, &e)) &&
	       !uhmm__ptable_cmpxchg(&m->mm->ptable, slot, &e, m->state->orig[i]))
		;
	m->state->kind[i] = K_NONE;
	m->src[i] = 0;
}

/*
 * Unclaim every claimed system page from index @from on: they were never
 * frozen (setup failed before it reached them), so their data is still in
 * place and there is nothing in staging to restore them from.
 */
static void unclaim_from(struct uhmm_migrate_vma *m, size_t from)
{
	for (size_t i = from; i < m->npages; i++)
		if (m->state->kind[i] == K_SYS)
			unclaim(m, i);
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
	int fd = uhmm__staging_freeze_fd(m->mm, m->state);
	int err;

	uhmm__uffd_move_fd(m->mm, fd, st, a, uhmm__page_size, true, &err);
	if (err == -EBUSY && writable &&
	    uhmm__sys_madvise((void *)a, uhmm__page_size, MADV_POPULATE_WRITE) == 0)
		uhmm__uffd_move_fd(m->mm, fd, st, a, uhmm__page_size, true, &err);
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
		done = uhmm__uffd_move_fd(m->mm, uhmm__staging_freeze_fd(m->mm, s),
					  (uintptr_t)s->staging + (i << ps), m->start + (i << ps),
					  (j - i) << ps, true, &err);
		if (!err) {
			moved_any = true;
			i = j;
			continue;
		}
		moved_any |= done > 0;
		/* The page at i + done stopped the move. */
		i += done >> ps;
		if (err == -EEXIST && s->sarea && !moved_any && i == first_sys(m))
			return -EEXIST;	/* the area's slots are not empty: staging of its own */
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

	if (uhmm__on_service_thread()) {
		unclaim_from(m, 0);	/* nothing frozen */
		return -EDEADLK;	/* keep the worker free of REMAP waits */
	}
	uhmm__selfop_begin(m->mm, &op, m->start, m->end, UHMM__SELFOP_INTERNAL);
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
			/*
			 * (RLIMIT_AS, say: the moved copy counts.)  A failed
			 * mremap moved nothing: this run and the ones after it
			 * keep their data in place, only the runs before it are
			 * in staging for the unwind to put back.
			 */
			ret = -errno;
			unclaim_from(m, i);
			break;
		}
		{
			/* The new mapping may carry the registration: drop it. */
			struct uffdio_range rr = { .start = st, .len = (j - i) << ps };

			pthread_mutex_lock(&m->mm->reg_lock);
			uhmm__uffd_ioctl(m->mm->uffd, UFFDIO_UNREGISTER, &rr);
			pthread_mutex_unlock(&m->mm->reg_lock);
		}
		/*
		 * The moved piece keeps the range's protection of this moment,
		 * which an mprotect() racing the migration may have made
		 * PROT_NONE since setup looked: the driver copies from staging
		 * (and the restore copies out of it), as the kernel copies
		 * through its own mapping whatever the range's protection.
		 * A no-op (no page-table walk) when it is already so.
		 */
		uhmm__sys_mprotect((void *)st, (j - i) << ps, PROT_READ | PROT_WRITE);
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
 * count as one.  0; -EINVAL if it is not inside one mapping; the error of
 * the look-up (-ENOMEM, -EIO) if the mappings could not be read.
 */
static int find_mapping(uintptr_t start, uintptr_t end, struct uhmm__vma *out, bool fresh)
{
	const unsigned int kind = UHMM__VMA_READ | UHMM__VMA_WRITE | UHMM__VMA_EXEC |
				  UHMM__VMA_SHARED | UHMM__VMA_FILE | UHMM__VMA_ANON |
				  UHMM__VMA_SHMEM | UHMM__VMA_HUGETLB | UHMM__VMA_SPECIAL;
	struct uhmm__vma v[64];
	size_t n = 0;

	int ret = uhmm__vma_find(start, end, v, UHMM__ARRAY_SIZE(v), &n, fresh);

	if (ret)
		return ret;
	if (n == 0 || n > UHMM__ARRAY_SIZE(v) || v[0].start > start || v[n - 1].end < end)
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

/*
 * What setup reads of the range before it claims anything: each page's
 * special entry, and (system pages) whether pagemap has data for it.
 */
struct setup_scan {
	uint64_t *ent;		/* the special entry of page i, or 0 */
	uint8_t *data;		/* 1 present, 2 swapped out, 0 no data */
	size_t nsys;		/* system pages claimed */
	bool any_present;	/* one of them had data when looked at */
};

static void scan_free(struct setup_scan *sc)
{
	uhmm__free(sc->ent);
	uhmm__free(sc->data);
}

/* The arguments, the context and the mapping: 0 or the error to return. */
static int setup_check(struct uhmm_migrate_vma *m, struct uhmm__vma *v)
{
	struct uhmm_mm *mm = m->mm;
	int ret;

	if (mm != &uhmm__the_mm || atomic_load(&mm->state) != UHMM__MM_LIVE)
		return uhmm__err(EINVAL, "migrate setup: context is not live");
	if (!uhmm__page_aligned(m->start) || !uhmm__page_aligned(m->end) ||
	    m->end <= m->start)
		return uhmm__err(EINVAL, "migrate setup: [%#lx, %#lx) is empty or unaligned",
				 (unsigned long)m->start, (unsigned long)m->end);
	if (!(m->flags & (UHMM_MIGRATE_VMA_SELECT_SYSTEM |
			  UHMM_MIGRATE_VMA_SELECT_DEVICE_PRIVATE)))
		return uhmm__err(EINVAL, "migrate setup: no selection flag");
	if (m->flags & ~(UHMM_MIGRATE_VMA_SELECT_SYSTEM | UHMM_MIGRATE_VMA_SELECT_DEVICE_PRIVATE |
			 UHMM_MIGRATE_VMA_SELECT_COMPOUND | UHMM__MIGRATE_EXCLUSIVE))
		return uhmm__err(EINVAL, "migrate setup: unknown flags %#x", m->flags);
	if (m->fault_page && uhmm__pfn_to_page(mm, m->fault_page->pfn) != m->fault_page)
		return uhmm__err(EINVAL, "migrate setup: fault_page is not a page of a live pool");
	if (uhmm__in_invalidate_callback())
		return uhmm__err(EDEADLK, "migrate setup from an invalidate callback");
	/* The unmaps of the addresses' earlier tenants are done with first. */
	uhmm__events_catch_up(mm);
	/*
	 * migrate_to_ram of a CPU fault: the fault path looked the mapping
	 * up a moment ago (one PROCMAP_QUERY per fault less).
	 */
	ret = uhmm__fault_mapping(m->fault_page, m->start, m->end, v) ? 0 :
	      find_mapping(m->start, m->end, v, false);
	if (ret)
		ret = find_mapping(m->start, m->end, v, true);
	if (ret == -EINVAL)
		return uhmm__err(EINVAL, "migrate setup: [%#lx, %#lx) is not inside one mapping",
				 (unsigned long)m->start, (unsigned long)m->end);
	if (ret)	/* a failure to look is not "no mapping" */
		return uhmm__err(-ret, "migrate setup: cannot read the mappings of [%#lx, %#lx)",
				 (unsigned long)m->start, (unsigned long)m->end);
	if (v->flags & UHMM__VMA_HUGETLB)
		return uhmm__err(EINVAL, "migrate setup: [%#lx, %#lx) is hugetlbfs: huge pages "
				 "are not migrated (as the kernel's migrate_vma_setup); a range "
				 "fault mirrors them", (unsigned long)m->start,
				 (unsigned long)m->end);
	if (!(v->flags & UHMM__VMA_READ) || (v->flags & UHMM__VMA_SPECIAL))
		return uhmm__err(EINVAL, "migrate setup: [%#lx, %#lx) has no access, or is "
				 "an IO mapping",
				 (unsigned long)m->start, (unsigned long)m->end);
	return 0;
}

/* Private anonymous memory: the only system pages uhmm migrates. */
static bool vma_anon(const struct uhmm__vma *v)
{
	return (v->flags & UHMM__VMA_ANON) && !(v->flags & UHMM__VMA_SHARED);
}

/*
 * The migration's state (m->state, freed by state_free()) and the scan
 * buffers; migrate_lock for reading unless this thread holds it.
 */
static int setup_state(struct uhmm_migrate_vma *m, struct setup_scan *sc)
{
	struct uhmm_migrate_state *s;

	m->npages = (m->end - m->start) >> uhmm__page_shift;
	memset(m->src, 0, m->npages * sizeof(*m->src));
	memset(m->dst, 0, m->npages * sizeof(*m->dst));
	s = uhmm__calloc(1, sizeof(*s));
	if (!s)
		return uhmm__err(ENOMEM, "migrate setup: out of memory");
	m->state = s;
	uhmm__sig_enter();	/* left by state_free() */
	/* Run for a CPU fault: finalize leaves it the waking. */
	s->fault = m->fault_page ? uhmm__fault_of(m->fault_page) : NULL;
	s->kind = uhmm__calloc(m->npages, 1);
	s->orig = uhmm__calloc(m->npages, sizeof(*s->orig));
	s->dst_given = uhmm__calloc((m->npages + 63) / 64, sizeof(uint64_t));
	sc->data = uhmm__malloc(m->npages);
	sc->ent = uhmm__malloc(m->npages * sizeof(*sc->ent));
	if (!s->kind || !s->orig || !s->dst_given || !sc->data || !sc->ent)
		return uhmm__err(ENOMEM, "migrate setup: out of memory");
	if (!uhmm__migrate_lock_held()) {
		uhmm__migrate_lock_read(m->mm);
		s->locked = true;
	}
	/* Before the first claim: every move of a claimed page is logged after. */
	pthread_mutex_lock(&m->mm->remap_lock);
	m->mm->remap_users++;
	s->remap_user = true;
	s->remap_seq0 = m->mm->remap_seq;
	s->serial = ++m->mm->mig_serial;
	pthread_mutex_unlock(&m->mm->remap_lock);
	return 0;
}

/*
 * Device mirrors drop the range first (the owner may skip its own); the
 * invalidation stays open until the pages are frozen.  System pages of an
 * anonymous range: the range is registered for MISSING faults, exactly:
 * the kernel may have merged memory the caller never gave uhmm (libc's, a
 * runtime's, uhmm's own) into the same mapping, and a missing fault there
 * could wait for the very thread that takes it.  The split this makes is
 * seen through by find_mapping(), and moves are done piece by piece.
 */
static int setup_start(struct uhmm_migrate_vma *m, const struct uhmm__vma *v)
{
	int ret;

	m->state->inv_active = uhmm__invalidate_start(m->mm, m->start, m->end,
			(m->flags & UHMM__MIGRATE_EXCLUSIVE) ? UHMM_NOTIFY_EXCLUSIVE
							      : UHMM_NOTIFY_MIGRATE,
			0, m->pgmap_owner);
	if (!vma_anon(v) || !(m->flags & UHMM_MIGRATE_VMA_SELECT_SYSTEM))
		return 0;
	ret = uhmm__register_missing(m->mm, m->start, m->end);
	if (ret)
		return uhmm__err(-ret, "migrate setup: cannot register [%#lx, %#lx) "
				 "with userfaultfd", (unsigned long)m->start,
				 (unsigned long)m->end);
	return 0;
}

/*
 * Collect: uhmm's own entries, and for system pages which ones are
 * present or swapped: that is all the claim needs (the protection is the
 * mapping's, one for the whole range), and PAGEMAP_SCAN gives it a run at
 * a time.  Device pages only: their CPU entries are empty.
 */
static int collect(struct uhmm_migrate_vma *m, struct setup_scan *sc)
{
	int ret;

	memset(sc->ent, 0, m->npages * sizeof(*sc->ent));
	uhmm__ptable_walk(&m->mm->ptable, m->start, m->end, collect_entry,
			  &(struct collect_ctx){ .start = m->start, .ent = sc->ent });
	if (!(m->flags & UHMM_MIGRATE_VMA_SELECT_SYSTEM))
		return 0;
	ret = uhmm__pagemap_has_data(m->start, m->npages, sc->data);
	if (ret)	/* -ENOMEM or -EIO */
		return uhmm__err(-ret, "migrate setup: cannot read /proc/self/pagemap");
	return 0;
}

/* Claim device page i (entry @e) of the caller's pool: MIGRATING. */
static void claim_device(struct uhmm_migrate_vma *m, size_t i, uint64_t e)
{
	struct uhmm_mm *mm = m->mm;
	uintptr_t a = m->start + (i << uhmm__page_shift);
	struct uhmm_page *page = uhmm__pfn_to_page(mm, uhmm__pte_payload(e));
	uint64_t orig = e;
	_Atomic uint64_t *slot;

	if (!page || page->pgmap->owner != m->pgmap_owner)
		return;
	/* Found with nothing held (the fault page is the caller's). */
	if (page != m->fault_page && !uhmm__page_grab(mm, page, a))
		return;
	slot = slot_of(mm, a);
	if (!slot || !uhmm__ptable_cmpxchg(&mm->ptable, slot, &e,
			(e & ~UHMM__PTE_TYPE_MASK) | UHMM__PTE_MIGRATING)) {
		if (page != m->fault_page) {
			uhmm_page_unlock(page);
			uhmm_page_put(page);
		}
		return;
	}
	/* The entry's reference keeps it now: drop the grab's. */
	if (page != m->fault_page)
		uhmm_page_put(page);
	m->state->orig[i] = orig;
	m->state->kind[i] = K_DEV;
	m->src[i] = uhmm_migrate_pfn(page->pfn) | UHMM_MIGRATE_PFN_MIGRATE;
	if (e & UHMM__PTE_WRITE)
		m->src[i] |= UHMM_MIGRATE_PFN_WRITE;
	m->cpages++;
}

/*
 * Claim system page i (no special entry, or a zero fill in flight):
 * MIGRATING, WRITE if the mapping is writable.  True if claimed.
 */
static bool claim_system(struct uhmm_migrate_vma *m, size_t i, bool writable)
{
	uint64_t w = writable ? UHMM__PTE_WRITE : 0, zero;
	_Atomic uint64_t *slot = slot_of(m->mm, m->start + (i << uhmm__page_shift));
	/* Its payload names it (page_slot()). */
	uint64_t claim = UHMM__PTE_MIGRATING | w |
			 (uhmm__pte_tag(m->state->serial, i) << UHMM__PTE_PAYLOAD_SHIFT);

	if (!slot)
		return false;
	/*
	 * A zero fill in flight (BUSY) lasts one ioctl on the worker, which
	 * never waits in between: wait it out.
	 */
	for (;;) {
		zero = 0;
		if (uhmm__ptable_cmpxchg(&m->mm->ptable, slot, &zero, claim) ||
		    zero != UHMM__PTE_BUSY)
			break;
		sched_yield();
	}
	if (zero != 0)
		return false;
	m->state->orig[i] = 0;
	m->state->kind[i] = K_SYS;
	m->src[i] = UHMM_MIGRATE_PFN_MIGRATE;
	if (w)
		m->src[i] |= UHMM_MIGRATE_PFN_WRITE;
	return true;
}

/*
 * Memory the calling thread touches while its migration holds pages
 * frozen: its stack around here (uhmm's frames below, the caller's and
 * the driver's above), its TCB and static TLS (errno, uhmm's last error),
 * and the migration's own arguments.  Frozen, such a page would make the
 * thread fault on its own migration, which only it can finish
 * (tests/hunt/FINDINGS.md item 18: a thread migrating the page of its own
 * frame hung).  The kernel runs migrate_vma on a stack of its own; here
 * such system pages are left where they are, as the kernel leaves a page
 * it cannot isolate (device pages there may still come home).
 *
 * Only addresses, no look-up: a look-up of the thread's stack block
 * (pthread_getattr_np) allocates, and a service thread may run this while
 * an application thread holds the allocator's lock.  The zones must not
 * reach into the application's memory next to the stack (the kernel may
 * have merged that mapping with the stack's): with glibc a thread's TCB
 * ends its stack block, so on x86-64, where the static TLS lies below the
 * thread pointer, a thread pointer just above the stack pointer bounds
 * the zone above it; elsewhere (the main thread, whose TCB is not on its
 * stack, and arm64, whose TLS lies above the thread pointer) the TCB and
 * the static TLS the loaded modules use (never more than its block
 * holds) and errno's page are kept.  NZONES ranges of page indices.
 */
enum { NZONES = 6 };
#define SELF_STACK_BELOW (128u << 10)	/* deeper than uhmm's calls go */
#define SELF_STACK_ABOVE (64u << 10)	/* the caller's and the driver's frames */

/*
 * Static TLS below the thread pointer: at least 64 KiB, more when the
 * modules loaded with the program need it (a sanitizer runtime keeps its
 * per-thread state there: 768 KiB for libtsan).  Summed at load.
 */
static size_t self_tls = 64u << 10;
/*
 * The static TLS of the modules loaded with the program, each block with
 * its alignment: no more than the thread's static TLS block holds below
 * (x86-64) or above (arm64) its thread pointer, so a zone this long never
 * leaves that block, wherever the block lies.
 */
static size_t self_tls_used;

static int add_tls(struct dl_phdr_info *info, size_t size, void *sum)
{
	(void)size;
	for (int i = 0; i < info->dlpi_phnum; i++)
		if (info->dlpi_phdr[i].p_type == PT_TLS)
			*(size_t *)sum += info->dlpi_phdr[i].p_memsz + info->dlpi_phdr[i].p_align;
	return 0;
}

__attribute__((constructor)) static void self_tls_init(void)
{
	size_t sum = 0;

	dl_iterate_phdr(add_tls, &sum);
	self_tls_used = sum;
	/* On the stack: the TCB's alignment and glibc's surplus too. */
	self_tls = UHMM__MAX(self_tls, sum + (8u << 10));
}

static void self_zone(const struct uhmm_migrate_vma *m, uintptr_t lo, uintptr_t hi,
		      size_t *zlo, size_t *zhi)
{
	const unsigned int ps = uhmm__page_shift;

	*zlo = *zhi = 0;
	if (hi <= m->start || lo >= m->end || hi <= lo)
		return;
	*zlo = lo > m->start ? (lo - m->start) >> ps : 0;
	*zhi = hi < m->end ? ((hi - m->start) + uhmm__page_size - 1) >> ps : m->npages;
}

static void self_zones(const struct uhmm_migrate_vma *m, size_t zlo[NZONES],
		       size_t zhi[NZONES])
{
	uintptr_t sp = (uintptr_t)__builtin_frame_address(0);
	uintptr_t tp = (uintptr_t)__builtin_thread_pointer();
	uintptr_t err = (uintptr_t)&errno;
	uintptr_t lo = sp > SELF_STACK_BELOW ? sp - SELF_STACK_BELOW : 0;
	uintptr_t hi = sp + SELF_STACK_ABOVE;
	size_t arr = m->npages * sizeof(*m->src);
	bool tcb_on_stack = false;

#if defined(__x86_64__)
	/*
	 * The TCB (glibc's struct pthread, over 1 KiB, its fields uhmm's
	 * calls touch in the first) ends the block, which ends on a page
	 * boundary: stop at the page of its first KiB.
	 */
	tcb_on_stack = sp < tp && tp - sp < SELF_STACK_ABOVE + self_tls;
	if (tcb_on_stack)
		hi = tp + 1024;
#endif
	self_zone(m, lo, hi, &zlo[0], &zhi[0]);
	if (tcb_on_stack)
		self_zone(m, tp > self_tls ? tp - self_tls : 0, hi, &zlo[1], &zhi[1]);
#if defined(__x86_64__)
	/*
	 * Elsewhere (the main thread; a thread whose caller's frames between
	 * here and its TCB are large): the TCB's first KiB and the static
	 * TLS in use below it.  A sanitizer runtime keeps its per-thread
	 * state there (libtsan: 768 KiB), which every instrumented access
	 * touches: frozen, the thread hung on its own migration (item 18,
	 * under TSan).
	 */
	else
		self_zone(m, tp > self_tls_used ? tp - self_tls_used : 0, tp + 1024,
			  &zlo[1], &zhi[1]);
#elif defined(__aarch64__)
	/* The TCB (16 bytes) and the static TLS above it. */
	else
		self_zone(m, tp, tp + 16 + self_tls_used, &zlo[1], &zhi[1]);
#else
	else
		self_zone(m, tp, tp + 1, &zlo[1], &zhi[1]);
#endif
	self_zone(m, err, err + sizeof(errno), &zlo[2], &zhi[2]);
	self_zone(m, (uintptr_t)m, (uintptr_t)(m + 1), &zlo[3], &zhi[3]);
	self_zone(m, (uintptr_t)m->src, (uintptr_t)m->src + arr, &zlo[4], &zhi[4]);
	self_zone(m, (uintptr_t)m->dst, (uintptr_t)m->dst + arr, &zlo[5], &zhi[5]);
}

static bool in_self_zone(size_t i, const size_t zlo[NZONES], const size_t zhi[NZONES])
{
	for (int z = 0; z < NZONES; z++)
		if (zlo[z] <= i && i < zhi[z])
			return true;
	return false;
}

/* The per-page decision: which pages the migration takes. */
static void claim(struct uhmm_migrate_vma *m, const struct uhmm__vma *v,
		  struct setup_scan *sc)
{
	bool sys = vma_anon(v) && (m->flags & UHMM_MIGRATE_VMA_SELECT_SYSTEM);
	size_t zlo[NZONES], zhi[NZONES];

	self_zones(m, zlo, zhi);
	for (size_t i = 0; i < m->npages; i++) {
		switch (sc->ent[i] & UHMM__PTE_TYPE_MASK) {
		case UHMM__PTE_DEVICE:
			if (m->flags & UHMM_MIGRATE_VMA_SELECT_DEVICE_PRIVATE)
				claim_device(m, i, sc->ent[i]);
			break;
		case UHMM__PTE_BUSY:	/* a zero fill in flight: waited out */
		case 0:
			/* Swapped out: the kernel does not migrate it. */
			if (!sys || sc->data[i] == UHMM__PM_SWAPPED || in_self_zone(i, zlo, zhi) ||
			    !claim_system(m, i, (v->flags & UHMM__VMA_WRITE) != 0))
				break;
			sc->nsys++;
			sc->any_present |= sc->data[i] == UHMM__PM_PRESENT;
			break;
		default:
			break;	/* another migration, a fault in flight, exclusive */
		}
	}
}

/*
 * Freeze the claimed system pages into staging (unmap, in the kernel's
 * words): every claimed page, present or not when looked at, as a page
 * can be filled between that look and the claim, and only the staging
 * page table tells for sure what has data.  Anything it holds counts (a
 * zero page too: copying zeroes is harmless; calling data "empty" would
 * lose it).
 */
static int stage_and_freeze(struct uhmm_migrate_vma *m, const struct uhmm__vma *v,
			    struct setup_scan *sc)
{
	struct uhmm_migrate_state *s = m->state;
	bool use_move = uhmm__has(UHMM_FEAT_MOVE) && uhmm__has(UHMM_FEAT_UFFD_WP);
	int ret;

	clear_stale_markers(m, sc->data);
	/* A few pages: slots of the small staging area if it has them (staging.c). */
	ret = use_move && uhmm__sarea_take(m, v->flags) ? 0 : uhmm__staging_create(m, use_move);
	if (ret) {
		/* Nothing frozen: every page keeps its data where it is. */
		unclaim_from(m, 0);
		return uhmm__err(-ret, "migrate setup: no memory for staging");
	}
	ret = use_move ? freeze_move(m, (v->flags & UHMM__VMA_WRITE) != 0) : -EINVAL;
	if ((ret == -EINVAL || ret == -EEXIST) && s->sarea) {
		/*
		 * Refused before anything moved: a mlock()ed range (VM_LOCKED
		 * differs from the area's), or slots that are not empty
		 * (mlockall(MCL_CURRENT) faulted the area in: no more slots
		 * from it).  Staging of its own, as without the area, which
		 * mremap must never map over.
		 */
		if (ret == -EEXIST)
			uhmm__sarea_off(m->mm);
		uhmm__staging_destroy(m->mm, s);
		ret = uhmm__staging_create(m, use_move);
		if (ret) {
			unclaim_from(m, 0);
			return uhmm__err(-ret, "migrate setup: no memory for staging");
		}
		ret = freeze_move(m, (v->flags & UHMM__VMA_WRITE) != 0);
	}
	if (ret == -EINVAL)
		ret = freeze_mremap(m);
	if (ret)
		return uhmm__err(-ret, "migrate setup: cannot freeze [%#lx, %#lx)",
				 (unsigned long)m->start, (unsigned long)m->end);
	ret = uhmm__pagemap_has_data((uintptr_t)s->staging, m->npages, sc->data);
	if (ret) {
		/*
		 * Frozen, but which pages hold data is unknown (a page may
		 * have been filled after the collect's look): the unwind
		 * puts every one back, an empty one as zeroes.
		 */
		sc->any_present = true;
		return uhmm__err(-ret, "migrate setup: cannot read /proc/self/pagemap");
	}
	for (size_t i = 0; i < m->npages; i++) {
		if (s->kind[i] != K_SYS)
			continue;
		if (sc->data[i] && sc->data[i] != UHMM__PM_MARKER)
			m->src[i] |= UHMM_MIGRATE_PFN_VALID |
				     (((uint64_t)((uintptr_t)s->staging >> uhmm__page_shift) + i)
				      << UHMM_MIGRATE_PFN_SHIFT);
		m->cpages++;
	}
	return 0;
}

/*
 * Setup failed after claiming: give everything back as it was.  Whatever
 * was frozen is restored from staging (a page that was empty restores as
 * zeroes: the same content); a page that was not frozen was unclaimed
 * where the freeze stopped (its data never left), so only frozen pages
 * are still K_SYS here.
 */
static void setup_unwind(struct uhmm_migrate_vma *m, const struct setup_scan *sc)
{
	struct uhmm_migrate_state *s = m->state;

	for (size_t i = 0; i < m->npages; i++)
		if (s->kind[i] == K_SYS && (sc->any_present || s->by_mremap))
			m->src[i] |= UHMM_MIGRATE_PFN_VALID;
	uhmm_migrate_vma_pages(m);
	for (size_t i = 0; i < m->npages; i++)
		m->src[i] &= ~UHMM_MIGRATE_PFN_MIGRATE;
	uhmm_migrate_vma_finalize(m);
}

/*
 * An unmap of the range behind the wrappers that became visible after
 * setup caught up with the events (setup_check()), and before the claims,
 * is applied later, when the addresses may already be another mapping's,
 * whose pages the claims took: it marks them GONE, and finalize would drop
 * them, frozen in staging (round 7 hunt, FINDINGS item 25).  Once the
 * claims are made, catch up again: a system page's claim marked GONE now
 * is given back, never frozen (its data stays where it is, whoever's it
 * is); an unmap read after this one came after the claim, and the kernel
 * took the pages with it.
 */
static void unclaim_unmapped(struct uhmm_migrate_vma *m, struct setup_scan *sc)
{
	uhmm__events_catch_up_claimed(m->mm);
	for (size_t i = 0; i < m->npages; i++) {
		uint64_t e = uhmm__ptable_get(&m->mm->ptable, m->start + (i << uhmm__page_shift));

		if (m->state->kind[i] == K_SYS && (e & UHMM__PTE_GONE)) {
			unclaim(m, i);
			sc->nsys--;
		}
	}
}

/*
 * As the kernel's: check, collect the pages, then claim and freeze
 * (unmap) them; the invalidation opened at the start closes once they
 * are frozen.
 */
static int migrate_vma_setup(struct uhmm_migrate_vma *m)
{
	struct setup_scan sc = { 0 };
	struct uhmm__vma v;
	int ret;

	if (!m || !m->mm || !m->src || !m->dst)
		return uhmm__err(EINVAL, "migrate setup: NULL argument");
	m->cpages = 0;
	m->state = NULL;
	ret = setup_check(m, &v);
	if (ret)
		return ret;
	ret = setup_state(m, &sc);
	if (!ret)
		ret = setup_start(m, &v);
	if (!ret)
		ret = collect(m, &sc);
	if (ret) {
		state_free(m);
		scan_free(&sc);
		return ret;
	}
	claim(m, &v, &sc);
	if (sc.nsys && m->state->locked)
		unclaim_unmapped(m, &sc);
	ret = sc.nsys ? stage_and_freeze(m, &v, &sc) : 0;
	if (ret)
		setup_unwind(m, &sc);
	scan_free(&sc);
	if (ret)
		return ret;
	compound_collect(m);
	if (m->state->inv_active) {
		uhmm__invalidate_end(m->mm);
		m->state->inv_active = false;
	}
	return 0;
}

/* ---- driver helpers -------------------------------------------------------- */

/*
 * Fault in the staging pages of every device entry in one call per run:
 * much cheaper than one page fault per page as the driver writes them.
 */
static void populate_staging(struct uhmm_migrate_vma *m, uintptr_t from)
{
	struct uhmm_migrate_state *s = m->state;
	const unsigned int ps = uhmm__page_shift;

	if (!uhmm__has(UHMM_FEAT_MADV_POPULATE))
		return;
	for (size_t i = (from - m->start) >> ps; i < m->npages;) {
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
	if (!s->map && !uhmm__staging_cache_take(m) && !uhmm__bounce_take(m)) {
		if (uhmm__staging_create(m, false)) {
			uhmm__err(ENOMEM, "migrate alloc sys: no memory for staging");
			return NULL;
		}
		/* 2 MiB destinations: transparent huge pages where there are any. */
		if (s->chead)
			uhmm__sys_madvise(s->map, s->map_len, MADV_HUGEPAGE);
		populate_staging(m, m->start);	/* recycled slots need none */
	} else if (s->cache && uhmm__staging_cache_filled(s) < m->end && !s->populated) {
		/* Slots a trimmed entry emptied (staging.c, entry_trim()). */
		populate_staging(m, UHMM__MAX(uhmm__staging_cache_filled(s), m->start));
		s->populated = true;
	}
	p = s->staging + ((size_t)i << uhmm__page_shift);
	s->dst_given[i / 64] |= UINT64_C(1) << (i % 64);
	m->dst[i] = uhmm_migrate_pfn((uintptr_t)p >> uhmm__page_shift);
	if (bit_test(s->chead, i)) {
		for (size_t k = i; k < i + CNR; k++)
			s->dst_given[k / 64] |= UINT64_C(1) << (k % 64);
		m->dst[i] |= UHMM_MIGRATE_PFN_COMPOUND;
	}
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
	compound_expand_all(m);
	for (size_t i = 0; i < m->npages; i++) {
		uintptr_t a = m->start + (i << uhmm__page_shift);

		if (!(m->src[i] & UHMM_MIGRATE_PFN_MIGRATE))
			continue;
		if (m->state->kind[i] == K_NONE || !dst_ok(m, i) ||
		    (uhmm__ptable_get(&m->mm->ptable, a) & UHMM__PTE_GONE))
			m->src[i] &= ~UHMM_MIGRATE_PFN_MIGRATE;
	}
	compound_compress(m);
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
		       size_t len, bool may_move, size_t *donep)
{
	size_t moved = 0, copied = 0;
	int err = 0;

	if (may_move && uhmm__has(UHMM_FEAT_MOVE) && uhmm__install_by_move) {
		moved = uhmm__uffd_move(m->mm, a, src, len, false, &err);
		if (!err) {
			if (donep)
				*donep = len;
			return 0;
		}
	}
	err = uhmm__uffd_copy_done(m->mm, a + moved, src + moved, len - moved, &copied);
	if (donep)
		*donep = moved + copied;
	return err;
}

/*
 * An error of restoring @a from @stage that retrying cannot cure, where
 * the page's data is not in staging (so giving up loses nothing): -EEXIST
 * (@a already holds a page) or -EFAULT (@stage unreadable) while staging
 * has no data for the page, or @stage outside staging.  Setup's unwind no
 * longer gets here; this keeps a future slip from spinning for ever with
 * signals blocked (issue 12 hunt).  Any other failure (the kernel short of
 * memory) may pass: retried.
 */
static bool restore_hopeless(struct uhmm_migrate_vma *m, uintptr_t a, uintptr_t stage, int err)
{
	struct uhmm_migrate_state *s = m->state;
	uint8_t d = UHMM__PM_PRESENT;

	if (err != -EEXIST && err != -EFAULT)
		return false;
	if (s->map && stage >= (uintptr_t)s->map &&
	    stage + uhmm__page_size <= (uintptr_t)s->map + s->map_len &&
	    (uhmm__pagemap_has_data(stage, 1, &d) || (d != UHMM__PM_NONE && d != UHMM__PM_MARKER)))
		return false;	/* staging holds (or may hold) the data: keep trying */
	uhmm__warn("migrate: nothing in staging to restore %#lx from (%d): left as it is",
		   (unsigned long)a, err);
	return true;
}

/*
 * Put system page i, which did not migrate, back where its entry is, from
 * staging.  Its only copy is in staging, which finalize frees: giving up
 * would lose the page, so a failure (the kernel out of memory for the
 * page table or the charge) is retried until it passes, the way the
 * kernel's own restoring of migration entries cannot fail.  Each try
 * looks again where the entry is: an address unmapped or moved by a raw
 * system call fails with ENOENT until the worker has applied the event,
 * which marks the entry GONE (nothing to restore) or moves it.
 */
static void restore_sys(struct uhmm_migrate_vma *m, size_t i, uintptr_t stage)
{
	for (unsigned long tries = 0;; tries++) {
		uintptr_t a;
		uint64_t e;
		int err;

		if (!page_slot(m, i, &a, &e) || (e & UHMM__PTE_GONE))
			return;
		err = m->state->by_mremap ? uhmm__uffd_copy(m->mm, a, stage, uhmm__page_size) :
		      install_sys(m, a, stage, uhmm__page_size, true, NULL);
		if (!err)
			return;
		if (restore_hopeless(m, a, stage, err))
			return;
		if (err == -ENOENT && uhmm__on_service_thread()) {
			/* The event that would settle it waits for this very thread. */
			uhmm__warn("migrate: %#lx was unmapped or moved under a migration on "
				   "the service thread: its data is lost", (unsigned long)a);
			return;
		}
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

/* Fresh staging for 2 MiB installs, in transparent huge pages if any. */
static bool huge_staging(struct uhmm_migrate_vma *m)
{
	struct uhmm_migrate_state *s = m->state;

	if (s->map)
		return true;
	if (uhmm__staging_create(m, false))
		return false;
	uhmm__sys_madvise(s->map, s->map_len, MADV_HUGEPAGE);
	return true;
}

/*
 * Install the data of device entries that migrated to system memory, in
 * runs whose sources are consecutive (staging always is; a driver buffer
 * may be), one ioctl per run.  Entries whose install failed lose MIGRATE.
 */
/*
 * Page i's install at its address failed with @err: if a raw mremap moved
 * its entry meanwhile, install it where the entry is now.  0 or the error.
 */
static int install_moved(struct uhmm_migrate_vma *m, size_t i, uintptr_t src, int err)
{
	uintptr_t a = m->start + (i << uhmm__page_shift), cur;
	uint64_t e;

	if (!page_slot(m, i, &cur, &e) || cur == a || (e & UHMM__PTE_GONE))
		return err;
	return install_sys(m, cur, src, uhmm__page_size, false, NULL);
}

/* Is page i's entry at its own address, and not GONE? */
static bool at_home(const struct uhmm_migrate_vma *m, size_t i)
{
	uintptr_t cur;
	uint64_t e;

	return page_slot(m, i, &cur, &e) && cur == m->start + (i << uhmm__page_shift) &&
	       !(e & UHMM__PTE_GONE);
}

/*
 * Install page i (device to system) where a raw mremap moved its entry;
 * nothing for an entry gone (finalize drops it).  Never at its own address
 * then: another mapping may be there now (round 7 hunt, FINDINGS item 22).
 * A page that cannot be installed stays on the device.
 */
static void install_away(struct uhmm_migrate_vma *m, size_t i)
{
	uintptr_t src = (uintptr_t)(uhmm_migrate_pfn_to_pfn(m->dst[i]) << uhmm__page_shift);
	uintptr_t cur;
	uint64_t e;
	int err;

	if (!page_slot(m, i, &cur, &e) || (e & UHMM__PTE_GONE))
		return;
	err = install_sys(m, cur, src, uhmm__page_size, false, NULL);
	if (err) {
		uhmm__warn("migrate: cannot install %#lx: %d", (unsigned long)cur, err);
		m->src[i] &= ~UHMM_MIGRATE_PFN_MIGRATE;
		if (m->state->fault)
			m->state->fault->install_err = err;
	}
}

static void install_runs(struct uhmm_migrate_vma *m)
{
	struct uhmm_migrate_state *s = m->state;
	const unsigned int ps = uhmm__page_shift;
	uintptr_t stage_lo, stage_hi;

	if (!s->map)
		uhmm__staging_cache_take(m);	/* recycled pages for a driver that copies from its buffer */
	stage_lo = (uintptr_t)s->staging;
	stage_hi = stage_lo + (m->end - m->start);

	for (size_t i = 0; i < m->npages;) {
		uintptr_t src0, a0;
		bool staged;
		size_t j;
		int err;

		if (s->kind[i] != K_DEV || !(m->src[i] & UHMM_MIGRATE_PFN_MIGRATE)) {
			i++;
			continue;
		}
		if (!at_home(m, i)) {
			install_away(m, i);
			i++;
			continue;
		}
		src0 = (uintptr_t)(uhmm_migrate_pfn_to_pfn(m->dst[i]) << ps);
		a0 = m->start + (i << ps);
		staged = s->map && src0 >= stage_lo && src0 < stage_hi;
		for (j = i + 1; j < m->npages; j++) {
			if (s->kind[j] != K_DEV || !(m->src[j] & UHMM_MIGRATE_PFN_MIGRATE) ||
			    (uintptr_t)(uhmm_migrate_pfn_to_pfn(m->dst[j]) << ps) !=
				    src0 + ((j - i) << ps) || !at_home(m, j))
				break;
		}
		/*
		 * UFFDIO_MOVE flushes the source entry from every CPU running
		 * the process, an IPI when one does (a CPU fault's window: the
		 * service threads); for a few pages, letting UFFDIO_COPY take
		 * a new page costs less.
		 */
		if (staged && (j - i < MOVE_MIN_PAGES || s->bounce)) {
			/*
			 * By copy.  A borrowed cache entry still counts these
			 * slots as given out (moved_from_cache()), so it empties
			 * and goes (unmapped at the next put, off the fault's
			 * path): kept, such entries outlived the addresses they
			 * mirror, and a later large migration over the same
			 * addresses scanned 15% slower (figure 5 after figure 4).
			 */
			staged = false;
		} else if (!staged && !s->cache && bit_test(s->cwhole, i) && uhmm__install_by_move &&
			 uhmm__has(UHMM_FEAT_MOVE) && huge_staging(m)) {
			/*
			 * A 2 MiB destination from the driver's buffer and no
			 * recycled pages: UFFDIO_COPY would map 512 small
			 * pages.  Copy into a transparent huge page of staging
			 * instead and move it into place as one PMD.
			 */
			memcpy(s->staging + (i << ps), (const void *)src0, (j - i) << ps);
			src0 = (uintptr_t)s->staging + (i << ps);
			staged = true;
		} else if (!staged && s->cache && j - i >= MOVE_MIN_PAGES) {
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
		size_t done = 0;

		err = install_sys(m, a0, src0, (j - i) << ps, staged, &done);
		if (err) {
			/*
			 * Page by page from the first the run did not install
			 * (those before hold their data), to find which ones
			 * cannot be installed.
			 */
			for (size_t k = i + (done >> ps); k < j; k++)
				if ((err = install_sys(m, m->start + (k << ps),
						       src0 + ((k - i) << ps),
						       uhmm__page_size, staged, NULL)) &&
				    (err = install_moved(m, k, src0 + ((k - i) << ps), err))) {
					/* The page stays on the device, intact. */
					uhmm__warn("migrate: cannot install %#lx: %d",
						   (unsigned long)(m->start + (k << ps)), err);
					m->src[k] &= ~UHMM_MIGRATE_PFN_MIGRATE;
					if (s->fault)
						s->fault->install_err = err;
				}
		}
		i = j;
	}
}

static void migrate_vma_finalize(struct uhmm_migrate_vma *m);

/*
 * Wake the threads faulting in the range, or, for a migration a CPU fault
 * runs, leave it to the fault path, which wakes when all is done.
 */
static void wake(struct uhmm_migrate_vma *m)
{
	struct uhmm__fault *f = m->state->fault;

	if (!f) {
		uhmm__uffd_wake(m->mm, m->start, m->end);
	} else if (f->wake_end == 0) {
		f->wake_start = m->start;
		f->wake_end = m->end;
	} else {
		f->wake_start = UHMM__MIN(f->wake_start, m->start);
		f->wake_end = UHMM__MAX(f->wake_end, m->end);
	}
}

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
	compound_expand_all(m);		/* page by page from here on */
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
		uintptr_t stage = (uintptr_t)s->staging + (i << ps);
		bool migrated = (m->src[i] & UHMM_MIGRATE_PFN_MIGRATE) != 0;
		struct where w;
		uint64_t final;
		bool gone;

		if (s->kind[i] == K_NONE) {
			if (m->dst[i])
				release_dst(m, i);
			continue;
		}
		/* Where its entry is now: a raw mremap may have moved it. */
		w.slot = page_slot(m, i, &w.cur, &w.e);
		gone = !w.slot || (w.e & UHMM__PTE_GONE);
		if (s->kind[i] == K_SYS) {
			if (migrated && !gone) {
				struct uhmm_page *page = uhmm__pfn_to_page(mm,
						uhmm_migrate_pfn_to_pfn(m->dst[i]));

				final = UHMM__PTE_DEVICE | (w.e & UHMM__PTE_WRITE) |
					(page->pfn << UHMM__PTE_PAYLOAD_SHIFT);
				atomic_store(&page->addr, w.cur);
				atomic_fetch_add(&page->pgmap->nr_resident, 1);
				uhmm_page_unlock(page);
				/* The driver's reference now belongs to the mapping. */
			} else {
				if (m->dst[i])
					release_dst(m, i);
				final = 0;
				/* An empty or zero page has nothing to restore. */
				if (!gone && (m->src[i] & UHMM_MIGRATE_PFN_VALID))
					restore_sys(m, i, stage);
			}
			commit_page(m, i, final, &w);
		} else {	/* K_DEV */
			struct uhmm_page *old = uhmm__pfn_to_page(mm,
					uhmm__pte_payload(s->orig[i]));

			if (gone || migrated) {
				/*
				 * Unmapped, or installed by install_runs():
				 * the entry goes before the page does, so a
				 * look-up of it never meets a freed page.
				 */
				commit_page(m, i, 0, &w);
				if (m->dst[i] && !migrated)
					release_dst(m, i);
				atomic_fetch_sub(&old->pgmap->nr_resident, 1);
				if (old != m->fault_page)
					uhmm_page_unlock(old);
				uhmm_page_put(old);
			} else {
				if (m->dst[i])
					release_dst(m, i);
				if (old != m->fault_page)
					uhmm_page_unlock(old);
				commit_page(m, i, s->orig[i], &w);
			}
		}
	}
	wake(m);
	uhmm__staging_cache_put(m);		/* system->device: keep staging for the way back */
	state_free(m);
	uhmm__migrate_done_broadcast(mm);
}
