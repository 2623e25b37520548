/* SPDX-License-Identifier: MIT */
/*
 * mm.c: the context's lifetime (creation, references, teardown, fork) and
 * the removal of a device pool, which holds a reference.  Above every
 * other module; the context itself is context.h's.
 */
#ifndef UHMM__MM_PRIV_H
#define UHMM__MM_PRIV_H

#include "context.h"

/* Take a user reference if the context is live; NULL otherwise. Lock free. */
UHMM__HIDDEN struct uhmm_mm *uhmm__mm_tryget(void);

#endif /* UHMM__MM_PRIV_H */
