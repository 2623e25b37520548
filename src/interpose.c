// SPDX-License-Identifier: MIT
/*
 * libc wrappers that make invalidation synchronous.
 *
 * libuhmm defines munmap, mremap, madvise, mprotect, pkey_mprotect, mmap,
 * brk and sbrk.  A program linked with libuhmm (which comes before libc in
 * the lookup order) calls these instead of libc's: when the call changes
 * memory that an interval notifier covers, every overlapping notifier's
 * invalidate callback has returned before the change is made, exactly as the
 * kernel invalidates before it changes page tables.  With no context, or
 * over memory uhmm has nothing to do with (no notifier, no registration,
 * so no special entry: the lock-free summary of managed.h), a wrapper takes
 * no lock, no reference and no signal-mask change and goes straight to the
 * system call.
 *
 * What escapes: calls libc makes internally (free() unmapping a large block,
 * malloc trimming the heap) and raw syscall(2)s.  For ranges uhmm registered
 * with its userfaultfd, those still arrive as UNMAP / REMOVE / REMAP events
 * (service.c), delivered with UHMM_NOTIFY_FLAG_AFTER; elsewhere they are not
 * seen.  See docs/CONCURRENCY.md.
 */
#include <dlfcn.h>
#include <stdarg.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "base.h"
#include "devmem_priv.h"
#include "features_priv.h"
#include "log.h"
#include "managed.h"
#include "migrate_lock.h"
#include "migrate_priv.h"
#include "mm_priv.h"
#include "notifier_priv.h"
#include "ptable.h"
#include "service.h"
#include "sigblock.h"
#include "sys.h"
#include "uffd.h"
#include "vma.h"

/* ---- helpers ------------------------------------------------------------- */

/*
 * The fast check: may a wrapper over [s, e) go straight to the system call?
 * Only if no event read from the userfaultfd is still unprocessed (a REMAP
 * being processed marks its new range in the summary: a raw mremap returns
 * once its event is read) and the summary has nothing there (managed.h).
 * Lock free: two atomic loads and a short scan.
 */
static bool unmanaged(uintptr_t s, uintptr_t e)
{
	unsigned long r = atomic_load_explicit(&uhmm__the_mm.ev_read, memory_order_acquire);

	if (atomic_load_explicit(&uhmm__the_mm.ev_done, memory_order_acquire) < r)
		return false;
	return !uhmm__managed_hit(s, e);
}

/*
 * The fast check, announced (managed.h): true when the system call may go
 * straight, and then the caller makes it and calls uhmm__fast_leave(*tok)
 * after it; false (nothing to leave) when the full path must judge.  A
 * notifier inserted meanwhile either is in the summary the check reads, or
 * its insertion sees this call in flight and its read_begin waits until
 * the system call is done (docs/CONCURRENCY.md, "A wrapper's fast check
 * and a new notifier").
 */
static bool fast(uintptr_t s, uintptr_t e, unsigned int *tok)
{
	*tok = uhmm__fast_enter();
	if (unmanaged(s, e))
		return true;
	uhmm__fast_leave(*tok);
	return false;
}

/* This thread holds as_lock for writing (wrappers nest through callbacks). */
static __thread bool as_lock_held;

struct wrap {
	struct uhmm_mm *mm;
	struct uhmm__selfop op;
	bool notified;		/* op is recorded */
	bool active;		/* an invalidation is open until wrap_end */
	bool as_locked;		/* holds as_lock for writing */
	bool held;		/* uhmm__invalidate_hold() until wrap_end */
	bool sig;		/* entered a signal-blocked region (sigblock.h) */
};

/* The page range a call touches, or false if the kernel will reject it. */
static bool span(const void *addr, size_t len, uintptr_t *s, uintptr_t *e)
{
	uintptr_t a = (uintptr_t)addr;
	uintptr_t end;

	if (!uhmm__page_aligned(a) || len == 0)
		return false;
	end = a + ((len + uhmm__page_size - 1) & ~(uhmm__page_size - 1));
	if (end <= a)
		return false;
	*s = a;
	*e = end;
	return true;
}

/*
 * Before the call: notify if some notifier covers [s, e).  @flags are extra
 * UHMM__SELFOP_* for the service thread (e.g. MADV_FREE keeps device pages).
 */
static void wrap_begin_flags(struct wrap *w, uintptr_t s, uintptr_t e,
			     enum uhmm_notify_event ev, unsigned int flags)
{
	bool notify;

	w->notified = false;
	if (!w->mm)
		return;
	/*
	 * From here to wrap_end, no handler on this thread: it would run with
	 * uhmm's locks, the driver's (taken in a callback), as_lock or an open
	 * invalidation held, and a touch of device memory would wait for this
	 * very thread (docs/CONCURRENCY.md, "Signals").  Only wrappers over
	 * managed memory get here.
	 */
	if (!w->sig) {
		uhmm__sig_enter();
		w->sig = true;
	}
	/*
	 * An invalidation in progress from here to wrap_end, notifiers or not:
	 * one inserted after the look below is deferred and its read_begin
	 * waits until the system call is done (notifier_priv.h).
	 */
	if (!w->held) {
		uhmm__invalidate_hold(w->mm);
		w->held = true;
	}
	notify = uhmm__notifier_overlaps(w->mm, s, e);
	if (!notify && !flags)
		return;
	uhmm__selfop_begin(w->mm, &w->op, s, e,
			   flags | (notify ? UHMM__SELFOP_NOTIFIED : 0));
	w->notified = true;
	/* Kept open across the system call, like the kernel's start/end pair. */
	if (notify) {
		w->active = uhmm__invalidate_start(w->mm, s, e, ev, 0, NULL);
		/* Not again when nested (a callback of an outer wrapper). */
		if (!uhmm__on_service_thread() && !as_lock_held) {
			pthread_rwlock_wrlock(&w->mm->as_lock);
			w->as_locked = true;
			as_lock_held = true;
		}
	}
}

static void wrap_begin(struct wrap *w, uintptr_t s, uintptr_t e,
		       enum uhmm_notify_event ev)
{
	wrap_begin_flags(w, s, e, ev, 0);
}

/* After the call: wait for the events it caused, then forget it. */
static void wrap_end(struct wrap *w, bool changed_mappings)
{
	if (w->as_locked) {
		pthread_rwlock_unlock(&w->mm->as_lock);
		w->as_locked = false;
		as_lock_held = false;
	}
	if (changed_mappings)
		atomic_fetch_add(&uhmm__as_gen, 1);
	if (!w->mm)
		return;
	uhmm__events_sync(w->mm);
	if (w->active)
		uhmm__invalidate_end(w->mm);
	if (w->held) {
		uhmm__invalidate_unhold(w->mm);
		w->held = false;
	}
	if (w->notified)
		uhmm__selfop_end(w->mm, &w->op);
	uhmm_mm_put(w->mm);
	if (w->sig) {
		w->sig = false;
		uhmm__sig_leave();
	}
}

/*
 * A wrapper that unmaps, replaces, moves or discards managed memory waits
 * for every migration in flight and holds new ones off until its system
 * call and events are done: the kernel's munmap, mmap(MAP_FIXED) and
 * mremap take mmap_lock for writing, which a driver holds for reading from
 * migrate_vma_setup() to migrate_vma_finalize(), and its MADV_DONTNEED
 * zaps the migration entries a migration's finalize would restore.  Here a
 * migration's claim is not ordered against a wrapper's look at the special
 * entries: a page claimed just after the look and frozen after the system
 * call was a page of the new mapping (MAP_FIXED, mremap), whose data the
 * migration then dropped as gone, or the old data put back after a discard
 * (round 3 hunt, tests/hunt/FINDINGS.md; tests/test_unmap_migrate.c).
 * Taken after as_lock (wrap_begin): a range fault's fallback holds
 * as_lock for reading while it touches pages, and a touched page may wait
 * for a migration.  Not by a thread inside a migration (a callback's
 * munmap: it would wait for itself) nor on a service thread (its faults'
 * migrations only try the lock).  A handler's fault would wait for the
 * lock forever: signals stay blocked until it is released.
 */
static bool migrations_hold_off(struct uhmm_mm *mm)
{
	if (!mm || uhmm__migrate_lock_held() || uhmm__on_service_thread())
		return false;
	uhmm__sig_enter();
	pthread_rwlock_wrlock(&mm->migrate_lock);
	return true;
}

/* After wrap_end(): its events (which drop the entries) are done first. */
static void migrations_resume(bool held)
{
	if (held) {
		int err = errno;

		pthread_rwlock_unlock(&uhmm__the_mm.migrate_lock);
		uhmm__sig_leave();
		errno = err;
	}
}

/* ---- the wrappers ---------------------------------------------------------- */

__attribute__((visibility("default"))) int munmap(void *addr, size_t len)
{
	struct wrap w = { .mm = NULL };
	bool excl = false;
	unsigned int tok;
	uintptr_t s, e;
	int ret;

	if (!span(addr, len, &s, &e))
		return uhmm__sys_munmap(addr, len);
	if (fast(s, e, &tok)) {
		ret = uhmm__sys_munmap(addr, len);
		uhmm__fast_leave(tok);
		return ret;
	}
	w.mm = uhmm__mm_tryget();
	if (!w.mm)
		return uhmm__sys_munmap(addr, len);
	wrap_begin(&w, s, e, UHMM_NOTIFY_UNMAP);
	excl = migrations_hold_off(w.mm);
	/* Forgotten before the call: a registration made after it stays. */
	uhmm__managed_unmapped(s, e);
	ret = uhmm__sys_munmap(addr, len);
	if (ret == 0)
		uhmm__forget_splits(w.mm, s, e);
	else
		uhmm__managed_registered(s, e);	/* maybe still there */
	wrap_end(&w, true);
	migrations_resume(excl);
	return ret;
}

static bool advice_discards(int advice)
{
	switch (advice) {
	case MADV_DONTNEED:
	case MADV_DONTNEED_LOCKED:
	case MADV_FREE:
	case MADV_REMOVE:
	case MADV_PAGEOUT:
	case 102: /* MADV_GUARD_INSTALL (6.13) zaps the range */
		return true;
	default:
		return false;
	}
}

__attribute__((visibility("default"))) int madvise(void *addr, size_t len, int advice)
{
	struct wrap w = { .mm = NULL };
	bool excl = false;
	unsigned int tok;
	uintptr_t s, e;
	int ret;

	if (!advice_discards(advice)) {
		/* Advice such as MADV_DONTDUMP splits mappings. */
		atomic_fetch_add(&uhmm__as_gen, 1);
		return uhmm__sys_madvise(addr, len, advice);
	}
	/* Nothing registered there sends no event and has no entries. */
	if (!span(addr, len, &s, &e))
		return uhmm__sys_madvise(addr, len, advice);
	if (fast(s, e, &tok)) {
		ret = uhmm__sys_madvise(addr, len, advice);
		uhmm__fast_leave(tok);
		return ret;
	}
	w.mm = uhmm__mm_tryget();
	if (!w.mm)
		return uhmm__sys_madvise(addr, len, advice);
	/*
	 * A migration bringing pages of the range home could install them
	 * after the zap (the discard's REMOVE event is read, and the zap
	 * done, before the worker marks the entries gone): the discarded data
	 * would come back.  The kernel's zap removes migration entries, so a
	 * late migration finds nothing; here no migration may be in flight
	 * over a range with special entries while it is discarded.
	 */
	/*
	 * The kernel's MADV_FREE leaves device-private pages alone.  Every
	 * other discard says it drops them, even with no notifier to run:
	 * a MADV_FREE of another thread whose range covers this one must
	 * not make its event keep them (UHMM__SELFOP_DROP_DEVICE).
	 */
	if (span(addr, len, &s, &e))
		wrap_begin_flags(&w, s, e, UHMM_NOTIFY_DISCARD,
				 advice == MADV_FREE ? UHMM__SELFOP_KEEP_DEVICE :
						       UHMM__SELFOP_DROP_DEVICE);
	/* MADV_FREE keeps every page's data (migrations_hold_off()). */
	if (advice != MADV_FREE)
		excl = migrations_hold_off(w.mm);
	ret = uhmm__sys_madvise(addr, len, advice);
	/* Entries dropped (wrap_end waits for the REMOVE event) first. */
	wrap_end(&w, true);
	migrations_resume(excl);
	return ret;
}

/*
 * A moving mremap over several mappings: kernels that move several at once
 * (6.17+) refuse one that is registered with a userfaultfd, but only on
 * reaching it, and the mappings before it stay moved (the caller's data
 * is then split between the two places).  uhmm's registration (notifiers,
 * migrations) is what makes such a range fail, so the wrapper first makes
 * the registration uniform, which merges the pieces it split, and refuses
 * a range that still spans several mappings before anything moves
 * (EFAULT, as kernels before 6.17 refuse any range across mappings).
 * Returns true when the move must be refused.
 */
static bool multi_mapping_move(struct uhmm_mm *mm, uintptr_t s, uintptr_t e)
{
	struct uhmm__vma v[32];
	size_t n = 0;
	bool ours = false;

	if (uhmm__vma_find(s, e, v, UHMM__ARRAY_SIZE(v), &n, true) || n < 2)
		return false;
	for (size_t i = 0; i < n && i < UHMM__ARRAY_SIZE(v) && !ours; i++)
		ours = uhmm__is_our_split(mm, v[i].start) || uhmm__is_our_split(mm, v[i].end);
	if (!ours && !uhmm__notifier_overlaps(mm, s, e))
		return false;	/* nothing of uhmm's there: the kernel decides */
	if (ours)
		uhmm__register_missing(mm, s, e);
	return uhmm__vma_find(s, e, v, UHMM__ARRAY_SIZE(v), &n, true) || n >= 2;
}

/* Does changing [s, e) to @prot take away read or write access anywhere? */
static bool prot_reduces(uintptr_t s, uintptr_t e, int prot)
{
	struct uhmm__vma v[32];
	size_t n = 0;

	if ((prot & (PROT_READ | PROT_WRITE)) == (PROT_READ | PROT_WRITE))
		return false;
	if (uhmm__vma_find(s, e, v, UHMM__ARRAY_SIZE(v), &n, true) ||
	    n > UHMM__ARRAY_SIZE(v))
		return true;	/* cannot tell: be safe */
	for (size_t i = 0; i < n; i++) {
		if ((v[i].flags & UHMM__VMA_READ) && !(prot & PROT_READ))
			return true;
		if ((v[i].flags & UHMM__VMA_WRITE) && !(prot & PROT_WRITE))
			return true;
	}
	return false;
}

static int do_mprotect(void *addr, size_t len, int prot, bool pkey, int key)
{
	uintptr_t s = 0, e = 0;
	struct wrap w = { .mm = NULL };
	bool spans = span(addr, len, &s, &e), straight = true;
	unsigned int tok = 0;
	int ret;

	if (spans)
		straight = fast(s, e, &tok);
	if (straight) {
		if (pkey) {
			atomic_fetch_add(&uhmm__as_gen, 1);
			ret = (int)syscall(SYS_pkey_mprotect, addr, len, prot, key);
		} else {
			ret = uhmm__sys_mprotect(addr, len, prot);
		}
		if (spans)
			uhmm__fast_leave(tok);
		return ret;
	}
	w.mm = uhmm__mm_tryget();
	if (w.mm) {
		/* Blocked before the checks below take any lock. */
		uhmm__sig_enter();
		w.sig = true;
		/* Before the look for notifiers (wrap_begin_flags). */
		uhmm__invalidate_hold(w.mm);
		w.held = true;
	}
	if (w.mm && uhmm__notifier_overlaps(w.mm, s, e) && prot_reduces(s, e, prot))
		wrap_begin(&w, s, e, UHMM_NOTIFY_PROTECTION);
	if (w.mm)
		uhmm__folio_split_edges(w.mm, s, e);	/* the kernel splits such a PMD */
	if (pkey)
		ret = (int)syscall(SYS_pkey_mprotect, addr, len, prot, key);
	else
		ret = uhmm__sys_mprotect(addr, len, prot);
	wrap_end(&w, true);
	return ret;
}

__attribute__((visibility("default"))) int mprotect(void *addr, size_t len, int prot)
{
	return do_mprotect(addr, len, prot, false, 0);
}

__attribute__((visibility("default"))) int pkey_mprotect(void *addr, size_t len,
							int prot, int pkey)
{
	return do_mprotect(addr, len, prot, true, pkey);
}

__attribute__((visibility("default"))) void *mremap(void *old, size_t old_size,
						   size_t new_size, int flags, ...)
{
	struct wrap w = { .mm = NULL };
	struct wrap w2 = { .mm = NULL };
	void *new_addr = NULL, *ret;
	bool excl = false;
	unsigned int tok;
	uintptr_t s, e;

	if (flags & MREMAP_FIXED) {
		va_list ap;

		va_start(ap, flags);
		new_addr = va_arg(ap, void *);
		va_end(ap);
	}
	/* Neither end concerns uhmm (managed.h): the system call alone. */
	tok = uhmm__fast_enter();
	if (!(span(old, old_size ? old_size : uhmm__page_size, &s, &e) &&
	      !unmanaged(s, e)) &&
	    !((flags & MREMAP_FIXED) && span(new_addr, new_size, &s, &e) &&
	      !unmanaged(s, e))) {
		ret = (void *)syscall(SYS_mremap, old, old_size, new_size, flags, new_addr);
		uhmm__fast_leave(tok);
		atomic_fetch_add(&uhmm__as_gen, 1);
		return ret;
	}
	uhmm__fast_leave(tok);
	w.mm = uhmm__mm_tryget();
	if (w.mm) {
		/* Blocked before the checks below take any lock. */
		uhmm__sig_enter();
		w.sig = true;
	}
	if (w.mm && span(old, old_size ? old_size : uhmm__page_size, &s, &e)) {
		/*
		 * Pages in the middle of a migration must land first, and none
		 * may start until the move is done and its REMAP event has
		 * moved uhmm's entries: a device-range migration (eviction)
		 * collected before the move would put its page back at the
		 * old address (which MREMAP_DONTUNMAP keeps mapped).
		 */
		bool mig = !uhmm__migrate_lock_held() && !uhmm__on_service_thread();

		if (mig)
			uhmm__sig_enter();	/* left after migrate_lock (as madvise) */
		uhmm__wait_migrations(w.mm, s, e);
		if (flags & (MREMAP_MAYMOVE | MREMAP_FIXED)) {
			/* The pages may move: the whole old range goes. */
			wrap_begin(&w, s, e, UHMM_NOTIFY_UNMAP);
		} else if (new_size < old_size) {
			uintptr_t ns, ne;

			if (span((char *)old + new_size, old_size - new_size, &ns, &ne))
				wrap_begin(&w, ns, ne, UHMM_NOTIFY_UNMAP);
		}
		if ((flags & MREMAP_FIXED) && span(new_addr, new_size, &s, &e)) {
			w2.mm = uhmm__mm_tryget();
			wrap_begin(&w2, s, e, UHMM_NOTIFY_UNMAP);
		}
		/* After as_lock (wrap_begin), as in madvise(). */
		if (mig) {
			pthread_rwlock_wrlock(&w.mm->migrate_lock);
			excl = true;
		}
	}
	if (w.mm && old_size && (flags & (MREMAP_MAYMOVE | MREMAP_FIXED)) &&
	    span(old, old_size, &s, &e) && multi_mapping_move(w.mm, s, e)) {
		uhmm__err(EFAULT, "mremap: [%#lx, %#lx) spans several mappings",
			  (unsigned long)s, (unsigned long)e);
		if (w2.mm)
			wrap_end(&w2, false);
		wrap_end(&w, true);
		if (excl) {
			pthread_rwlock_unlock(&uhmm__the_mm.migrate_lock);
			uhmm__sig_leave();
		}
		errno = EFAULT;
		return MAP_FAILED;
	}
	ret = (void *)syscall(SYS_mremap, old, old_size, new_size, flags, new_addr);
	if (ret == MAP_FAILED && errno == EFAULT && w.mm && old_size &&
	    span(old, old_size, &s, &e)) {
		/*
		 * uhmm's registration may have cut the mapping in pieces that
		 * mremap will not cross: register the range uniformly (the
		 * pieces merge back) and try once more.
		 */
		if (uhmm__register_missing(w.mm, s, e) == 0)
			ret = (void *)syscall(SYS_mremap, old, old_size, new_size, flags,
					      new_addr);
		else
			errno = EFAULT;
	}
	if (w2.mm)
		wrap_end(&w2, false);
	wrap_end(&w, true);
	if (excl) {
		int err = errno;

		pthread_rwlock_unlock(&uhmm__the_mm.migrate_lock);
		uhmm__sig_leave();
		errno = err;
	}
	return ret;
}

static void *do_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	struct wrap w = { .mm = NULL };
	bool excl = false;
	unsigned int tok;
	uintptr_t s, e;
	void *ret;

	if ((flags & MAP_FIXED) && !(flags & MAP_FIXED_NOREPLACE) && span(addr, len, &s, &e)) {
		if (fast(s, e, &tok)) {
			ret = uhmm__sys_mmap(addr, len, prot, flags, fd, off);
			uhmm__fast_leave(tok);
			return ret;
		}
		w.mm = uhmm__mm_tryget();
		if (w.mm) {
			wrap_begin(&w, s, e, UHMM_NOTIFY_UNMAP);
			excl = migrations_hold_off(w.mm);
			uhmm__managed_unmapped(s, e);	/* as munmap() */
		}
		ret = uhmm__sys_mmap(addr, len, prot, flags, fd, off);
		if (w.mm && ret == MAP_FAILED)
			uhmm__managed_registered(s, e);
		wrap_end(&w, true);
		migrations_resume(excl);
		return ret;
	}
	return uhmm__sys_mmap(addr, len, prot, flags, fd, off);
}

__attribute__((visibility("default"))) void *mmap(void *addr, size_t len, int prot,
						 int flags, int fd, off_t off)
{
	return do_mmap(addr, len, prot, flags, fd, off);
}

__attribute__((visibility("default"))) void *mmap64(void *addr, size_t len, int prot,
						   int flags, int fd, off_t off)
{
	return do_mmap(addr, len, prot, flags, fd, off);
}

/*
 * brk/sbrk: libc keeps its own idea of the break, so call its functions
 * (found with RTLD_NEXT) rather than the system call.
 */
static int (*real_brk)(void *);
static void *(*real_sbrk)(intptr_t);
static pthread_once_t brk_once = PTHREAD_ONCE_INIT;

static void brk_resolve(void)
{
	real_brk = (int (*)(void *))dlsym(RTLD_NEXT, "brk");
	real_sbrk = (void *(*)(intptr_t))dlsym(RTLD_NEXT, "sbrk");
}

__attribute__((visibility("default"))) void *sbrk(intptr_t increment)
{
	struct wrap w = { .mm = NULL };
	void *ret;

	pthread_once(&brk_once, brk_resolve);
	if (!real_sbrk) {
		errno = ENOSYS;
		return (void *)-1;
	}
	if (increment < 0 && (w.mm = uhmm__mm_tryget())) {
		uintptr_t cur = (uintptr_t)real_sbrk(0);
		uintptr_t s = uhmm__page_align_down(cur + (uintptr_t)increment +
						    uhmm__page_size - 1);
		uintptr_t e = (cur + uhmm__page_size - 1) & ~(uhmm__page_size - 1);

		if (s < e)
			wrap_begin(&w, s, e, UHMM_NOTIFY_UNMAP);
	}
	ret = real_sbrk(increment);
	wrap_end(&w, increment != 0);
	return ret;
}

__attribute__((visibility("default"))) int brk(void *addr)
{
	struct wrap w = { .mm = NULL };
	int ret;

	pthread_once(&brk_once, brk_resolve);
	if (!real_brk || !real_sbrk) {
		errno = ENOSYS;
		return -1;
	}
	if ((w.mm = uhmm__mm_tryget())) {
		uintptr_t cur = (uintptr_t)real_sbrk(0);
		uintptr_t s = ((uintptr_t)addr + uhmm__page_size - 1) &
			      ~(uintptr_t)(uhmm__page_size - 1);
		uintptr_t e = (cur + uhmm__page_size - 1) & ~(uhmm__page_size - 1);

		if (s < e)
			wrap_begin(&w, s, e, UHMM_NOTIFY_UNMAP);
	}
	ret = real_brk(addr);
	wrap_end(&w, true);
	return ret;
}
