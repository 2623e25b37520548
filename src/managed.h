/* SPDX-License-Identifier: MIT */
/*
 * The managed-range summary: a small lock-free set of the address ranges
 * uhmm has anything to do with (interval notifiers, ranges registered with
 * its userfaultfd in MISSING mode), so that the libc wrappers over other
 * memory go straight to the system call without a lock, a reference or a
 * signal-mask change (src/interpose.c, docs/PERFORMANCE.md).
 *
 * Readers never wait: a sequence count tells them to look again, and when
 * the set overflows they are told "managed" (the full path then decides).
 * A range it reports unmanaged has no notifier, no MISSING registration and
 * so no special entry (migrations register the ranges they migrate first);
 * it can report managed for memory that is not (a registration is only
 * forgotten when the range is unmapped through a wrapper).
 */
#ifndef UHMM_MANAGED_H
#define UHMM_MANAGED_H

#include <stdbool.h>
#include <stdint.h>

#include "hidden.h"

/* An interval notifier over [start, last] (inclusive) came / went. */
UHMM_HIDDEN void uhmm__managed_notifier_add(uintptr_t start, uintptr_t last);
UHMM_HIDDEN void uhmm__managed_notifier_del(uintptr_t start, uintptr_t last);
/* [start, end) is registered with uhmm's userfaultfd (MISSING mode). */
UHMM_HIDDEN void uhmm__managed_registered(uintptr_t start, uintptr_t end);
/* [start, end) was unmapped: its registration is gone. */
UHMM_HIDDEN void uhmm__managed_unmapped(uintptr_t start, uintptr_t end);
/* Forget everything (context teardown; a fork child forgets by itself). */
UHMM_HIDDEN void uhmm__managed_reset(void);
/* Might [start, end) concern uhmm?  Lock free; false only when it cannot. */
UHMM_HIDDEN bool uhmm__managed_hit(uintptr_t start, uintptr_t end);

/*
 * The wrappers' fast path and notifier insertion, ordered (Dekker-style,
 * docs/CONCURRENCY.md "A wrapper's fast check and a new notifier"):
 *
 *	wrapper:  tok = uhmm__fast_enter();   (announce, seq_cst fence)
 *	          uhmm__managed_hit() ... the system call ...
 *	          uhmm__fast_leave(tok);
 *	insert:   uhmm__managed_notifier_add(); t = uhmm__fast_inflight();
 *	          (seq_cst fence, then look at the announcements)
 *	read_begin: uhmm__fast_wait(t);
 *
 * Either the wrapper sees the new notifier's summary entry (and takes the
 * full path), or the insertion sees the wrapper in flight and the
 * notifier's read_begin waits until it has left, its system call done.
 * Lock free and wait free for the wrapper: two atomic additions and a
 * fence, on one of a few counters.
 */
UHMM_HIDDEN unsigned int uhmm__fast_enter(void);
UHMM_HIDDEN void uhmm__fast_leave(unsigned int tok);
/* After a summary entry was added: 0, or what uhmm__fast_wait() must wait for. */
UHMM_HIDDEN unsigned long uhmm__fast_inflight(void);
/* Wait until every fast path in flight at that uhmm__fast_inflight() has left. */
UHMM_HIDDEN void uhmm__fast_wait(unsigned long target);

#endif /* UHMM_MANAGED_H */
