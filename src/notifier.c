// SPDX-License-Identifier: MIT
/*
 * Interval notifiers and the invalidation sequence protocol.
 *
 * The scheme follows the kernel's mmu_interval_notifier: the context keeps
 * one sequence number, odd while at least one invalidation is running.  An
 * invalidation takes nlock only to enter and leave; the callbacks run with no
 * uhmm lock held, while the tree is stable because inserts and removes that
 * arrive while any invalidation runs are deferred to the moment the last one
 * ends.  A notifier records the odd sequence of the invalidation that last
 * hit it (uhmm_interval_set_seq), so a reader can tell whether one ran
 * since it began.
 */
#include <stdlib.h>

#include "base.h"
#include "context.h"
#include "features_priv.h"
#include "inject_priv.h"
#include "itree.h"
#include "log.h"
#include "managed.h"
#include "notifier_priv.h"
#include "ownmem.h"
#include "service.h"
#include "sigblock.h"
#include "uffd.h"
#include "vma.h"

static struct uhmm__mni_node *to_node(struct uhmm__itree_node *it)
{
	return UHMM__CONTAINER_OF(it, struct uhmm__mni_node, it);
}

bool uhmm__notifier_overlaps(struct uhmm_mm *mm, uintptr_t start, uintptr_t end)
{
	bool ret;

	if (atomic_load_explicit(&mm->nr_notifiers, memory_order_acquire) == 0 ||
	    end <= start)
		return false;
	pthread_mutex_lock(&mm->nlock);
	ret = uhmm__itree_iter_first(&mm->tree, start, end - 1) != NULL;
	pthread_mutex_unlock(&mm->nlock);
	return ret;
}

/* Apply deferred inserts and removes; nlock held, no invalidation active. */
static void apply_deferred(struct uhmm_mm *mm)
{
	struct uhmm__mni_node *n = mm->deferred, *next;

	mm->deferred = NULL;
	for (; n; n = next) {
		next = n->deferred_next;
		n->deferred_next = NULL;
		if (n->deferred_add) {
			uhmm__itree_insert(&mm->tree, &n->it);
		} else {
			uhmm__itree_remove(&mm->tree, &n->it);
			if (n->free_on_apply)
				uhmm__free(n);
		}
	}
}

static unsigned long inv_begin(struct uhmm_mm *mm)
{
	unsigned long seq;

	pthread_mutex_lock(&mm->nlock);
	mm->active_invalidate++;
	mm->invalidate_seq |= 1;
	seq = mm->invalidate_seq;
	pthread_mutex_unlock(&mm->nlock);
	return seq;
}

static void inv_end(struct uhmm_mm *mm)
{
	pthread_mutex_lock(&mm->nlock);
	if (--mm->active_invalidate == 0) {
		mm->invalidate_seq++;	/* even: no invalidation running */
		apply_deferred(mm);
		pthread_cond_broadcast(&mm->ncond);
	}
	pthread_mutex_unlock(&mm->nlock);
}

static void call_one(struct uhmm__mni_node *n, const struct uhmm_notifier_range *r,
		     unsigned long seq)
{
	struct uhmm_interval_notifier *mni = n->mni;

	uhmm__callback_enter();
	mni->ops->invalidate(mni, r, seq);
	uhmm__callback_leave();
}

bool uhmm__invalidate_start(struct uhmm_mm *mm, uintptr_t start, uintptr_t end,
			    enum uhmm_notify_event ev, unsigned int flags,
			    const void *owner)
{
	struct uhmm_notifier_range r = {
		.start = start, .end = end, .event = ev, .flags = flags, .owner = owner,
	};
	struct uhmm__itree_node *it;
	unsigned long seq;

	if (end <= start || !uhmm__notifier_overlaps(mm, start, end))
		return false;
	seq = inv_begin(mm);
	/* The tree cannot change until inv_end(): walk it without nlock. */
	for (it = uhmm__itree_iter_first(&mm->tree, start, end - 1); it;
	     it = uhmm__itree_iter_next(it, start, end - 1))
		call_one(to_node(it), &r, seq);
	return true;
}

void uhmm__invalidate_end(struct uhmm_mm *mm)
{
	inv_end(mm);
}

void uhmm__invalidate_hold(struct uhmm_mm *mm)
{
	(void)inv_begin(mm);
}

void uhmm__invalidate_unhold(struct uhmm_mm *mm)
{
	inv_end(mm);
}

void uhmm__invalidate(struct uhmm_mm *mm, uintptr_t start, uintptr_t end,
		      enum uhmm_notify_event ev, unsigned int flags,
		      const void *owner)
{
	if (uhmm__invalidate_start(mm, start, end, ev, flags, owner))
		uhmm__invalidate_end(mm);
}

void uhmm__notifier_release_all(struct uhmm_mm *mm)
{
	struct uhmm__itree_node *it;
	unsigned long seq;

	if (atomic_load(&mm->nr_notifiers) == 0)
		return;
	/*
	 * Let running invalidations end first: that applies inserts deferred
	 * meanwhile, so those notifiers are released too.
	 */
	pthread_mutex_lock(&mm->nlock);
	while (mm->active_invalidate && !uhmm__in_callback())
		pthread_cond_wait(&mm->ncond, &mm->nlock);
	pthread_mutex_unlock(&mm->nlock);
	seq = inv_begin(mm);
	for (it = uhmm__itree_iter_first(&mm->tree, 0, UINTPTR_MAX); it;
	     it = uhmm__itree_iter_next(it, 0, UINTPTR_MAX)) {
		struct uhmm__mni_node *n = to_node(it);
		struct uhmm_notifier_range r = {
			.start = n->mni->start, .end = n->mni->end,
			.event = UHMM_NOTIFY_RELEASE,
		};

		call_one(n, &r, seq);
	}
	inv_end(mm);

	/* Detach everything: later removes are no-ops. */
	pthread_mutex_lock(&mm->nlock);
	while (mm->active_invalidate)
		pthread_cond_wait(&mm->ncond, &mm->nlock);
	while ((it = uhmm__itree_iter_first(&mm->tree, 0, UINTPTR_MAX))) {
		struct uhmm__mni_node *n = to_node(it);

		uhmm__itree_remove(&mm->tree, it);
		n->mni->mm = NULL;
		n->mni->node = NULL;
		uhmm__free(n);
		atomic_fetch_sub(&mm->nr_notifiers, 1);
	}
	pthread_mutex_unlock(&mm->nlock);
	uhmm__managed_reset();
}

/* In a fork child: the parent's notifiers do not exist here. */
UHMM__HIDDEN void uhmm__notifier_atfork_child(struct uhmm_mm *mm)
{
	struct uhmm__itree_node *it;
	struct uhmm__mni_node *n, *next;

	for (n = mm->deferred; n; n = next) {
		next = n->deferred_next;
		if (n->deferred_add) {
			n->mni->mm = NULL;
			n->mni->node = NULL;
			uhmm__free(n);
		}
	}
	mm->deferred = NULL;
	while ((it = uhmm__itree_iter_first(&mm->tree, 0, UINTPTR_MAX))) {
		n = to_node(it);
		uhmm__itree_remove(&mm->tree, it);
		n->mni->mm = NULL;
		n->mni->node = NULL;
		uhmm__free(n);
	}
	atomic_store(&mm->nr_notifiers, 0);
	mm->active_invalidate = 0;
	mm->invalidate_seq = 0;
}

int uhmm_interval_notifier_insert(struct uhmm_interval_notifier *mni,
				  struct uhmm_mm *mm, uintptr_t start,
				  size_t length,
				  const struct uhmm_interval_notifier_ops *ops)
{
	struct uhmm__mni_node *n;
	uintptr_t s, e;

	if (!mni || !mm || !ops || !ops->invalidate)
		return uhmm__err(EINVAL, "notifier insert: NULL argument");
	if (mm != &uhmm__the_mm || atomic_load(&mm->state) != UHMM__MM_LIVE)
		return uhmm__err(EINVAL, "notifier insert: context is not live");
	if (length == 0 || start + length - 1 < start)
		return uhmm__err(EINVAL, "notifier insert: empty or wrapping range "
				 "[%#lx, +%#zx)", (unsigned long)start, length);
	if (uhmm__in_invalidate_callback())
		return uhmm__err(EDEADLK, "notifier insert from an invalidate callback");
	if (mni->node || mni->mm)
		return uhmm__err(EINVAL, "notifier insert: notifier already inserted");
	s = uhmm__page_align_down(start);
	e = start + length - 1;
	e = (e | (uhmm__page_size - 1));	/* inclusive, page granular */
	uhmm__pin_module((const void *)ops->invalidate);	/* dlclose keeps it */
	n = uhmm__calloc(1, sizeof(*n));
	if (!n)
		return uhmm__err(ENOMEM, "notifier insert: out of memory");
	n->mni = mni;
	n->it.start = s;
	n->it.last = e;
	mni->start = s;
	mni->end = e + 1;		/* 0 when the range ends at the top */
	mni->ops = ops;

	uhmm__sig_enter();	/* nlock, reg_lock, vma_lock below (sigblock.h) */
	uhmm__managed_notifier_add(s, e);	/* before any wrapper can miss it */
	/*
	 * A wrapper's fast path that read the summary before the entry was
	 * there may still be before its system call: read_begin waits for it
	 * (managed.h; the slow path is covered by uhmm__invalidate_hold()).
	 */
	n->fast_target = uhmm__fast_inflight();
	pthread_mutex_lock(&mm->nlock);
	mni->mm = mm;
	mni->node = n;
	if (mm->active_invalidate) {
		/*
		 * The running invalidation does not see the new notifier;
		 * read_begin() on it waits for that invalidation to end.
		 */
		mni->invalidate_seq = mm->invalidate_seq;
		n->deferred_add = true;
		n->deferred_next = mm->deferred;
		mm->deferred = n;
	} else {
		mni->invalidate_seq = mm->invalidate_seq - 1;
		uhmm__itree_insert(&mm->tree, &n->it);
	}
	atomic_fetch_add(&mm->nr_notifiers, 1);
	pthread_mutex_unlock(&mm->nlock);

	uhmm__register_for_events(mm, s, e + 1 ? e + 1 : UINTPTR_MAX);
	uhmm__sig_leave();
	return 0;
}

void uhmm_interval_notifier_remove(struct uhmm_interval_notifier *mni)
{
	struct uhmm_mm *mm;
	struct uhmm__mni_node *n;
	unsigned long seq = 0;
	bool wait = false;

	if (!mni) {
		uhmm__err(EINVAL, "uhmm_interval_notifier_remove: NULL notifier");
		return;
	}
	mm = &uhmm__the_mm;
	uhmm__sig_enter();	/* left at each return (sigblock.h) */
	pthread_mutex_lock(&mm->nlock);
	if (mni->mm != mm || !mni->node) {
		pthread_mutex_unlock(&mm->nlock);	/* released by teardown */
		uhmm__sig_leave();
		return;
	}
	n = mni->node;
	if (mm->active_invalidate) {
		struct uhmm__mni_node **pp;
		bool was_pending_add = false;

		for (pp = &mm->deferred; *pp; pp = &(*pp)->deferred_next) {
			if (*pp == n) {
				*pp = n->deferred_next;
				was_pending_add = true;
				break;
			}
		}
		if (!was_pending_add) {
			n->deferred_add = false;
			n->deferred_next = mm->deferred;
			mm->deferred = n;
			seq = mm->invalidate_seq;
			wait = true;
		}
	} else {
		uhmm__itree_remove(&mm->tree, &n->it);
	}
	mni->mm = NULL;
	mni->node = NULL;
	atomic_fetch_sub(&mm->nr_notifiers, 1);
	uhmm__managed_notifier_del(n->it.start, n->it.last);
	if (wait) {
		if (uhmm__in_invalidate_callback() || uhmm__on_service_thread()) {
			/*
			 * Called from a callback: waiting for the running
			 * invalidation would wait for ourselves.  The removal
			 * is applied when it ends; the node is freed then.
			 */
			uhmm__warn("notifier removed from an invalidate callback: "
				   "it may still be called until that invalidation ends");
			n->free_on_apply = true;
			pthread_mutex_unlock(&mm->nlock);
			uhmm__sig_leave();
			return;
		}
		while (mm->invalidate_seq == seq)
			pthread_cond_wait(&mm->ncond, &mm->nlock);
	}
	pthread_mutex_unlock(&mm->nlock);
	uhmm__sig_leave();
	uhmm__free(n);
}

unsigned long uhmm_interval_read_begin(struct uhmm_interval_notifier *mni)
{
	struct uhmm_mm *mm = &uhmm__the_mm;
	unsigned long seq;

	if (!mni) {
		uhmm__err(EINVAL, "uhmm_interval_read_begin: NULL notifier");
		return 0;
	}
	uhmm__sig_enter();	/* nlock: the worker's migrations take it (sigblock.h) */
	pthread_mutex_lock(&mm->nlock);
	if (mni->mm == mm && mni->node &&
	    ((struct uhmm__mni_node *)mni->node)->fast_target &&
	    !uhmm__in_invalidate_callback() && !uhmm__on_service_thread()) {
		/*
		 * Fast paths of wrappers were in flight when it was inserted:
		 * wait until their system calls are done (each waits for
		 * nothing of uhmm's), as the kernel's read_begin waits for an
		 * invalidation in progress at the insertion.
		 */
		unsigned long t = ((struct uhmm__mni_node *)mni->node)->fast_target;

		pthread_mutex_unlock(&mm->nlock);
		uhmm__fast_wait(t);
		pthread_mutex_lock(&mm->nlock);
		if (mni->mm == mm && mni->node &&
		    ((struct uhmm__mni_node *)mni->node)->fast_target == t)
			((struct uhmm__mni_node *)mni->node)->fast_target = 0;
	}
	seq = __atomic_load_n(&mni->invalidate_seq, __ATOMIC_ACQUIRE);
	/* Wait out an invalidation of this notifier that is still running. */
	while (mni->mm == mm && (seq & 1) && seq == mm->invalidate_seq &&
	       !uhmm__in_invalidate_callback() && !uhmm__on_service_thread()) {
		pthread_cond_wait(&mm->ncond, &mm->nlock);
		seq = __atomic_load_n(&mni->invalidate_seq, __ATOMIC_ACQUIRE);
	}
	pthread_mutex_unlock(&mm->nlock);
	uhmm__sig_leave();
	return seq;
}

bool uhmm_interval_read_retry(struct uhmm_interval_notifier *mni, unsigned long seq)
{
	if (!mni)
		return uhmm__err(EINVAL, "uhmm_interval_read_retry: NULL notifier"), true;
	return __atomic_load_n(&mni->invalidate_seq, __ATOMIC_ACQUIRE) != seq;
}

bool uhmm_interval_check_retry(struct uhmm_interval_notifier *mni, unsigned long seq)
{
	if (!mni)
		return uhmm__err(EINVAL, "uhmm_interval_check_retry: NULL notifier"), true;
	return __atomic_load_n(&mni->invalidate_seq, __ATOMIC_ACQUIRE) != seq;
}

void uhmm_interval_set_seq(struct uhmm_interval_notifier *mni, unsigned long cur_seq)
{
	if (!mni) {
		uhmm__err(EINVAL, "uhmm_interval_set_seq: NULL notifier");
		return;
	}
	__atomic_store_n(&mni->invalidate_seq, cur_seq, __ATOMIC_RELEASE);
}
