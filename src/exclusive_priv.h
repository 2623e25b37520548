/* SPDX-License-Identifier: MIT */
/* exclusive.c: device-exclusive access and the internal pool it uses. */
#ifndef UHMM__EXCLUSIVE_PRIV_H
#define UHMM__EXCLUSIVE_PRIV_H

#include "base.h"
#include "context.h"

/* Is @pgmap the internal pool that holds device-exclusive pages? */
static inline bool uhmm__is_exclusive_pool(struct uhmm_mm *mm, const struct uhmm_devmem *pgmap)
{
	return pgmap && pgmap == __atomic_load_n(&mm->excl_pool, __ATOMIC_ACQUIRE);
}
/* Teardown: restore every exclusive page and remove the internal pool. */
UHMM__HIDDEN void uhmm__exclusive_teardown(struct uhmm_mm *mm);

#endif /* UHMM__EXCLUSIVE_PRIV_H */
