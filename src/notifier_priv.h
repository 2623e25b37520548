/* SPDX-License-Identifier: MIT */
/* notifier.c: interval notifiers and running their invalidations. */
#ifndef UHMM_NOTIFIER_PRIV_H
#define UHMM_NOTIFIER_PRIV_H

#include "base.h"
#include "itree.h"

struct uhmm__mni_node {
	struct uhmm__itree_node it;
	struct uhmm_interval_notifier *mni;
	struct uhmm__mni_node *deferred_next;
	bool deferred_add;
	bool free_on_apply;	/* removed from a callback: freed when applied */
	/*
	 * Wrappers' fast paths were in flight when it was inserted: its
	 * read_begin first waits for them (uhmm__fast_wait()); 0 once done.
	 */
	unsigned long fast_target;
};

/*
 * Run every overlapping notifier's invalidate callback for
 * [start, end) and return when all have returned.
 */
UHMM_HIDDEN void uhmm__invalidate(struct uhmm_mm *mm, uintptr_t start,
				     uintptr_t end, enum uhmm_notify_event ev,
				     unsigned int flags, const void *owner);
/*
 * The two halves, for a change made in between (the kernel's
 * invalidate_range_start / _end): from start until end the sequence stays
 * odd, so uhmm_interval_read_begin() on a notifier that was told waits until
 * the change is really done.  start returns false (and end must not be
 * called) when no notifier overlaps.
 */
UHMM_HIDDEN bool uhmm__invalidate_start(struct uhmm_mm *mm, uintptr_t start,
					   uintptr_t end, enum uhmm_notify_event ev,
					   unsigned int flags, const void *owner);
UHMM_HIDDEN void uhmm__invalidate_end(struct uhmm_mm *mm);
/*
 * A wrapper's change, notifiers or not (the kernel's invalidate_range_start
 * counts as an invalidation in progress whatever it covers): from hold to
 * unhold a notifier inserted meanwhile is deferred, and its read_begin
 * waits for the unhold, so a wrapper that found no notifier to call never
 * misses one inserted before its system call is done.
 */
UHMM_HIDDEN void uhmm__invalidate_hold(struct uhmm_mm *mm);
UHMM_HIDDEN void uhmm__invalidate_unhold(struct uhmm_mm *mm);
/* True if some notifier overlaps [start, end). */
UHMM_HIDDEN bool uhmm__notifier_overlaps(struct uhmm_mm *mm, uintptr_t start,
					    uintptr_t end);
/* Teardown: RELEASE every notifier and detach it. */
UHMM_HIDDEN void uhmm__notifier_release_all(struct uhmm_mm *mm);
/* A fork child: the notifier lock and state as they must be (mm.c). */
UHMM_HIDDEN void uhmm__notifier_atfork_child(struct uhmm_mm *mm);

#endif /* UHMM_NOTIFIER_PRIV_H */
