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
#ifndef UHMM__MANAGED_H
#define UHMM__MANAGED_H

#include <stdbool.h>
#include <stdint.h>

#include "hidden.h"

/* An interval notifier over [start, last] (inclusive) came / went. */
UHMM__HIDDEN void uhmm__managed_notifier_add(uintptr_t start, uintptr_t last);
UHMM__HIDDEN void uhmm__managed_notifier_del(uintptr_t start, uintptr_t last);
/* [start, end) is registered with uhmm's userfaultfd (MISSING mode). */
UHMM__HIDDEN void uhmm__managed_registered(uintptr_t start, uintptr_t end);
/* [start, end) was unmapped: its registration is gone. */
UHMM__HIDDEN void uhmm__managed_unmapped(uintptr_t start, uintptr_t end);
/* Forget everything (context teardown; a fork child forgets by itself). */
UHMM__HIDDEN void uhmm__managed_reset(void);
/* Might [start, end) concern uhmm?  Lock free; false only when it cannot. */
UHMM__HIDDEN bool uhmm__managed_hit(uintptr_t start, uintptr_t end);

#endif /* UHMM__MANAGED_H */
