/* SPDX-License-Identifier: MIT */
/*
 * service.c: the userfaultfd service threads (the reader and the worker),
 * the event sequence, the changes uhmm's wrappers already notified.
 */
#ifndef UHMM__SERVICE_H
#define UHMM__SERVICE_H

#include "base.h"
#include "context.h"

UHMM__HIDDEN int uhmm__service_start(struct uhmm_mm *mm);
UHMM__HIDDEN void uhmm__service_stop(struct uhmm_mm *mm);
UHMM__HIDDEN void uhmm__service_free_stack(struct uhmm_mm *mm);
/* In a fork child: close the parent's service threads' descriptors. */
UHMM__HIDDEN void uhmm__service_atfork_child(struct uhmm_mm *mm);
/* Wait until every uffd event read so far has been processed. */
UHMM__HIDDEN void uhmm__events_sync(struct uhmm_mm *mm);
/*
 * Before uhmm looks at or creates state for addresses (a migration's
 * setup, a device-range migration, a range fault): wait until no event is
 * pending, not even one not read yet, and every event read is processed,
 * so that the unmap of the addresses' previous tenant is applied before
 * anything of a new one exists; skipped while this thread holds
 * migrate_lock (docs/CONCURRENCY.md, rule 4).
 */
UHMM__HIDDEN void uhmm__events_catch_up(struct uhmm_mm *mm);
/*
 * The same for a migration that holds migrate_lock for reading, taken by
 * its own setup (not fork's, not a fault's): after its claims (migrate.c,
 * FINDINGS item 25).  Not on a service thread.
 */
UHMM__HIDDEN void uhmm__events_catch_up_claimed(struct uhmm_mm *mm);
#endif /* UHMM__SERVICE_H */
