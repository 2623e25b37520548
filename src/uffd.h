/* SPDX-License-Identifier: MIT */
/*
 * uffd.c: the userfaultfd page primitives and MISSING registrations.
 */
#ifndef UHMM__UFFD_H
#define UHMM__UFFD_H

#include "base.h"

/* Retry an ioctl that fails with EAGAIN while a uffd event is pending. */
UHMM__HIDDEN void uhmm__eagain_backoff(struct uhmm_mm *mm);
/*
 * UFFDIO_MOVE [@src, +@len) to @dst (waking nobody), across EAGAIN and
 * partial moves; @holes lets empty source pages move as holes.  Returns
 * the bytes moved, and 0 or -errno in *@err.
 */
UHMM__HIDDEN size_t uhmm__uffd_move(struct uhmm_mm *mm, uintptr_t dst, uintptr_t src,
				      size_t len, bool holes, int *err);
/* The same on userfaultfd @fd (@dst registered with it: staging.c's small area). */
UHMM__HIDDEN size_t uhmm__uffd_move_fd(struct uhmm_mm *mm, int fd, uintptr_t dst,
					 uintptr_t src, size_t len, bool holes, int *err);
/* UFFDIO_COPY [@src, +@len) to @dst (waking nobody); 0 or -errno. */
UHMM__HIDDEN int uhmm__uffd_copy(struct uhmm_mm *mm, uintptr_t dst, uintptr_t src,
				   size_t len);
/*
 * The same, and *@donep (if not NULL) the bytes from @dst installed (on
 * failure too: a partial copy's pages hold their data).
 */
UHMM__HIDDEN int uhmm__uffd_copy_done(struct uhmm_mm *mm, uintptr_t dst, uintptr_t src,
					size_t len, size_t *donep);
/* Wake the threads faulting in [@s, @e) (and log the wake: below). */
UHMM__HIDDEN void uhmm__uffd_wake(struct uhmm_mm *mm, uintptr_t s, uintptr_t e);
/*
 * Was @page woken (uhmm__uffd_wake) after the read of the uffd that gave a
 * fault message sequence @seq (0: unknown)?  YES: the message's thread was
 * woken and faults again if it still needs the page, so the message is
 * answered.  MAYBE: a wake of the page ran while that read did.  NO: none
 * known (the log is short: an old wake may be forgotten).
 */
enum { UHMM__WOKEN_NO, UHMM__WOKEN_MAYBE, UHMM__WOKEN_YES };
UHMM__HIDDEN int uhmm__uffd_woken_since(struct uhmm_mm *mm, uintptr_t page,
					  unsigned long seq);
/* Forget every logged wake (a new uffd: its read sequence starts at 0). */
UHMM__HIDDEN void uhmm__uffd_wake_log_reset(struct uhmm_mm *mm);
/* Make sure [start, end) is registered for MISSING faults. */
UHMM__HIDDEN int uhmm__register_missing(struct uhmm_mm *mm, uintptr_t start,
					  uintptr_t end);
/* [start, end) was unmapped: its cut points mean nothing any more. */
UHMM__HIDDEN void uhmm__forget_splits(struct uhmm_mm *mm, uintptr_t start, uintptr_t end);
/* Did uhmm's registration cut a mapping at @addr? */
UHMM__HIDDEN bool uhmm__is_our_split(struct uhmm_mm *mm, uintptr_t addr);

/* Best-effort write-protect-mode registration of [start, end) for events. */
UHMM__HIDDEN void uhmm__register_for_events(struct uhmm_mm *mm,
					      uintptr_t start, uintptr_t end);


#endif /* UHMM__UFFD_H */
