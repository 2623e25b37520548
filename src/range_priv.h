/* SPDX-License-Identifier: MIT */
/* range.c: the range fault (uhmm_range_fault) and touching pages in. */
#ifndef UHMM__RANGE_PRIV_H
#define UHMM__RANGE_PRIV_H

#include <stdbool.h>
#include <stdint.h>

#include "hidden.h"

/*
 * Fault page @a in from this thread as a CPU access would (a write is an
 * atomic add of zero), in assembly where it can be: not an access to the
 * application's data as a race detector sees it.
 */
UHMM__HIDDEN void uhmm__touch_one(uintptr_t a, bool write);

#endif /* UHMM__RANGE_PRIV_H */
