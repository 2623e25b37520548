// SPDX-License-Identifier: MIT
/*
 * The userfaultfd page primitives (the counterpart of the kernel's
 * mm/userfaultfd.c as uhmm uses it): move and copy runs of pages with
 * UFFDIO_MOVE / UFFDIO_COPY, wake the threads a fault left asleep, and the
 * MISSING registrations with the boundaries they cut mappings at.
 */
#include <errno.h>
#include <sched.h>

#include "base.h"
#include "context.h"
#include "features_priv.h"
#include "inject_priv.h"
#include "log.h"
#include "managed.h"
#include "ownmem.h"
#include "pagemap.h"
#include "uffd.h"
#include "vma.h"

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
		size_t k = UHMM__MIN((size_t)512, npages - n);

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
size_t uhmm__uffd_move(struct uhmm_mm *mm, uintptr_t dst, uintptr_t src, size_t len,
		      bool holes, int *err)
{
	return uhmm__uffd_move_fd(mm, mm->uffd, dst, src, len, holes, err);
}

size_t uhmm__uffd_move_fd(struct uhmm_mm *mm, int fd, uintptr_t dst, uintptr_t src,
			  size_t len, bool holes, int *err)
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

		if (uhmm__uffd_ioctl(fd, UFFDIO_MOVE, &mv) == 0) {
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
int uhmm__uffd_copy(struct uhmm_mm *mm, uintptr_t dst, uintptr_t src, size_t len)
{
	return uhmm__uffd_copy_done(mm, dst, src, len, NULL);
}

int uhmm__uffd_copy_done(struct uhmm_mm *mm, uintptr_t dst, uintptr_t src, size_t len,
			 size_t *donep)
{
	size_t done = 0;
	int ret = 0;

	while (done < len) {
		struct uffdio_copy c = {
			.dst = dst + done, .src = src + done, .len = len - done,
			.mode = UFFDIO_COPY_MODE_DONTWAKE,
		};

		if (uhmm__uffd_ioctl(mm->uffd, UFFDIO_COPY, &c) == 0) {
			done = len;
			break;
		}
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
		ret = -errno;
		break;
	}
	if (donep)
		*donep = done;
	return ret;
}

/*
 * The wake log.  A fault message is taken from the kernel by a read of the
 * uffd, and its thread then sleeps until a UFFDIO_WAKE covers its address
 * (or a signal comes); a wake that finds the message not yet read wakes
 * the thread and drops the message (both under the kernel's lock of the
 * pending queue).  The service thread may act on a message long after the
 * read: when a wake of its page came in between, the thread is awake and
 * has faulted again if it still needs the page, with a message of its own.
 * Acting on the old one as well answers one access twice: harmless when
 * the answer is a page, not when it is a SIGBUS (two for one access: CI,
 * test_inject.cpu_fault_sigbus).
 *
 * The order: reads of the uffd are serialized (the msgq's rd_lock); each
 * bumps ev_read just before it reads and sets ev_read_returned to that
 * number when the read returns.  A read numbered up to the ev_read_returned
 * seen before a wake's ioctl (@done) was over when the ioctl ran: YES.  One
 * numbered above the ev_read seen after the ioctl (@begun) began after it:
 * NO.  In between the read and the ioctl overlapped: MAYBE.  A wake is
 * logged only once its ioctl succeeded; a wake missing from the log
 * (overwritten, its slot busy) only means the old message is acted on, as
 * before: never a thread left asleep.
 */
void uhmm__uffd_wake(struct uhmm_mm *mm, uintptr_t s, uintptr_t e)
{
	struct uffdio_range r = { .start = s, .len = e - s };
	unsigned long done = atomic_load_explicit(&mm->ev_read_returned, memory_order_acquire);
	unsigned long begun;
	struct uhmm__wake_rec *w;
	unsigned long v;

	if (uhmm__uffd_ioctl(mm->uffd, UFFDIO_WAKE, &r) < 0)
		return;
	begun = atomic_load_explicit(&mm->ev_read, memory_order_acquire);
	w = &mm->wake_log[atomic_fetch_add_explicit(&mm->wake_next, 1, memory_order_relaxed) %
			  UHMM__WAKE_LOG];
	v = atomic_load_explicit(&w->ver, memory_order_relaxed);
	if ((v & 1) || !atomic_compare_exchange_strong_explicit(&w->ver, &v, v + 1,
								 memory_order_acquire,
								 memory_order_relaxed))
		return;		/* another writer has the slot: not logged */
	atomic_thread_fence(memory_order_release);
	atomic_store_explicit(&w->start, s, memory_order_relaxed);
	atomic_store_explicit(&w->end, e, memory_order_relaxed);
	atomic_store_explicit(&w->done, done, memory_order_relaxed);
	atomic_store_explicit(&w->begun, begun, memory_order_relaxed);
	atomic_store_explicit(&w->ver, v + 2, memory_order_release);
	v = atomic_load_explicit(&mm->wake_max_begun, memory_order_relaxed);
	while (v < begun &&
	       !atomic_compare_exchange_weak_explicit(&mm->wake_max_begun, &v, begun,
						      memory_order_release, memory_order_relaxed))
		;
}

int uhmm__uffd_woken_since(struct uhmm_mm *mm, uintptr_t page, unsigned long seq)
{
	int ret = UHMM__WOKEN_NO;

	if (!seq || atomic_load_explicit(&mm->wake_max_begun, memory_order_acquire) < seq)
		return UHMM__WOKEN_NO;
	for (unsigned int i = 0; i < UHMM__WAKE_LOG; i++) {
		struct uhmm__wake_rec *w = &mm->wake_log[i];
		unsigned long v = atomic_load_explicit(&w->ver, memory_order_acquire);
		unsigned long done, begun;
		uintptr_t s, e;

		if (v & 1)
			continue;
		s = atomic_load_explicit(&w->start, memory_order_relaxed);
		e = atomic_load_explicit(&w->end, memory_order_relaxed);
		done = atomic_load_explicit(&w->done, memory_order_relaxed);
		begun = atomic_load_explicit(&w->begun, memory_order_relaxed);
		atomic_thread_fence(memory_order_acquire);
		if (atomic_load_explicit(&w->ver, memory_order_relaxed) != v)
			continue;	/* rewritten while read */
		if (page < s || page >= e || seq > begun)
			continue;
		if (seq <= done)
			return UHMM__WOKEN_YES;
		ret = UHMM__WOKEN_MAYBE;
	}
	return ret;
}

void uhmm__uffd_wake_log_reset(struct uhmm_mm *mm)
{
	for (unsigned int i = 0; i < UHMM__WAKE_LOG; i++) {
		struct uhmm__wake_rec *w = &mm->wake_log[i];

		atomic_store(&w->start, 0);
		atomic_store(&w->end, 0);
		atomic_store(&w->done, 0);
		atomic_store(&w->begun, 0);
	}
	atomic_store(&mm->wake_max_begun, 0);
}

/*
 * The boundaries uhmm's registrations cut mappings at: a set of page
 * addresses, open addressing with linear probing (reg_lock held).  A
 * process that migrates many small separate ranges has thousands of them,
 * and every registration, unmap and mapping check looks one up: a list
 * walked on each made small migrations quadratic (issue 16, session 9).
 * Empty slots hold 0, removed ones SPLIT_GONE (no boundary is either: both
 * lie in page 0); the table grows when live plus removed reach half of it.
 */
#define SPLIT_GONE ((uintptr_t)1)

static size_t split_hash(uintptr_t a, size_t cap)
{
	return (size_t)(((uint64_t)(a >> uhmm__page_shift) * UINT64_C(0x9E3779B97F4A7C15)) >> 32) &
	       (cap - 1);
}

/* The slot holding @a, or NULL. */
static uintptr_t *split_find(struct uhmm_mm *mm, uintptr_t a)
{
	if (!mm->split_cap)
		return NULL;
	for (size_t i = split_hash(a, mm->split_cap);; i = (i + 1) & (mm->split_cap - 1)) {
		if (mm->split[i] == a)
			return &mm->split[i];
		if (!mm->split[i])
			return NULL;
	}
}

static void split_put(uintptr_t *tab, size_t cap, uintptr_t a)
{
	size_t i = split_hash(a, cap);

	while (tab[i] && tab[i] != SPLIT_GONE)
		i = (i + 1) & (cap - 1);
	tab[i] = a;
}

/* Remember a boundary a registration may cut a mapping at (reg_lock held). */
static void note_split(struct uhmm_mm *mm, uintptr_t a)
{
	if (a <= SPLIT_GONE || split_find(mm, a))
		return;
	if ((mm->split_used + 1) * 2 > mm->split_cap) {
		size_t cap = mm->split_cap ? mm->split_cap : 64;
		uintptr_t *n;

		while ((mm->nsplit + 1) * 2 > cap / 2)
			cap *= 2;	/* live entries at most a quarter after a rebuild */
		n = uhmm__calloc(cap, sizeof(*n));
		if (!n)
			return;
		for (size_t i = 0; i < mm->split_cap; i++)
			if (mm->split[i] > SPLIT_GONE)
				split_put(n, cap, mm->split[i]);
		uhmm__free(mm->split);
		mm->split = n;
		mm->split_cap = cap;
		mm->split_used = mm->nsplit;
	}
	split_put(mm->split, mm->split_cap, a);
	mm->nsplit++;
	mm->split_used++;
}

static void split_drop(struct uhmm_mm *mm, uintptr_t *slot)
{
	*slot = SPLIT_GONE;
	mm->nsplit--;
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
	const uintptr_t ps = uhmm__page_size;

	pthread_mutex_lock(&mm->reg_lock);
	if (mm->nsplit && (end - start) / ps < mm->split_cap) {
		/* Fewer pages in the range than slots: look each one up. */
		for (uintptr_t a = (start + ps - 1) & ~(ps - 1); a <= end && a >= start; a += ps) {
			uintptr_t *slot = split_find(mm, a);

			if (slot)
				split_drop(mm, slot);
		}
	} else {
		for (size_t i = 0; i < mm->split_cap && mm->nsplit; i++)
			if (mm->split[i] > SPLIT_GONE && mm->split[i] >= start &&
			    mm->split[i] <= end)
				split_drop(mm, &mm->split[i]);
	}
	pthread_mutex_unlock(&mm->reg_lock);
}

bool uhmm__is_our_split(struct uhmm_mm *mm, uintptr_t addr)
{
	bool ret;

	pthread_mutex_lock(&mm->reg_lock);
	ret = addr > SPLIT_GONE && split_find(mm, addr) != NULL;
	pthread_mutex_unlock(&mm->reg_lock);
	return ret;
}

void uhmm__register_for_events(struct uhmm_mm *mm, uintptr_t start, uintptr_t end)
{
	struct uhmm__vma vmas[64];
	bool fresh = true;
	size_t n = 0;

	if (!uhmm__has(UHMM_FEAT_UFFD_WP))
		return;
	while (start < end) {
		size_t i;

		/*
		 * Fresh: the cache may miss mappings libc made without a
		 * wrapper.  Once: a registration changes no mapping, and the
		 * calls after the first continue the same list.
		 */
		if (uhmm__vma_find(start, end, vmas, UHMM__ARRAY_SIZE(vmas), &n, fresh) ||
		    n == 0)
			return;
		fresh = false;
		for (i = 0; i < UHMM__MIN(n, UHMM__ARRAY_SIZE(vmas)); i++) {
			struct uffdio_register reg = { .mode = UFFDIO_REGISTER_MODE_WP };
			uintptr_t s = UHMM__MAX(vmas[i].start, start);
			uintptr_t e = UHMM__MIN(vmas[i].end, end);

			if (!(vmas[i].flags & (UHMM__VMA_ANON | UHMM__VMA_SHMEM)) ||
			    (vmas[i].flags & (UHMM__VMA_HUGETLB | UHMM__VMA_SPECIAL)))
				continue;
			reg.range.start = s;
			reg.range.len = e - s;
			uhmm__managed_registered(s, e);	/* the wrappers' fast check */
			pthread_mutex_lock(&mm->reg_lock);
			int rerr = uhmm__uffd_ioctl(mm->uffd, UFFDIO_REGISTER, &reg) < 0 ? errno : 0;

			pthread_mutex_unlock(&mm->reg_lock);
			if (rerr)	/* after reg_lock: a warning writes to stderr */
				uhmm__warn("could not register [%#lx, %#lx) for events: %s",
					   (unsigned long)s, (unsigned long)e, uhmm__err_text(rerr));
		}
		if (n <= UHMM__ARRAY_SIZE(vmas))
			return;
		start = vmas[UHMM__ARRAY_SIZE(vmas) - 1].end;
	}
}
