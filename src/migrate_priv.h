/* SPDX-License-Identifier: MIT */
/*
 * migrate.c (migrate_vma): what other files use of it.
 */
#ifndef UHMM__MIGRATE_PRIV_H
#define UHMM__MIGRATE_PRIV_H

#include "base.h"

/* Internal migrate flag: invalidate with UHMM_NOTIFY_EXCLUSIVE, not MIGRATE. */
#define UHMM__MIGRATE_EXCLUSIVE (1u << 31)
/* Wait until no migration holds a page in [start, end). */
UHMM__HIDDEN void uhmm__wait_migrations(struct uhmm_mm *mm, uintptr_t start,
					  uintptr_t end);
/* A migration ended: wake the threads in uhmm__wait_migrations(). */
UHMM__HIDDEN void uhmm__migrate_done_broadcast(struct uhmm_mm *mm);

#endif /* UHMM__MIGRATE_PRIV_H */
