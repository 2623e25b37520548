/* SPDX-License-Identifier: MIT */
/*
 * migrate_lock.c: taking mm->migrate_lock (docs/CONCURRENCY.md, lock 2) and
 * knowing whether this thread holds it.  Migrations hold it for reading
 * from setup to finalize; fork, the removal of a pool and the CPU fault
 * path take it too, and the driver callbacks they run may start a
 * migration, which must then not take it again, nor wait for events the
 * lock holds back (uhmm__events_catch_up).
 */
#ifndef UHMM__MIGRATE_LOCK_H
#define UHMM__MIGRATE_LOCK_H

#include "base.h"

/* Take it for reading / for writing; this thread then holds it. */
UHMM__HIDDEN void uhmm__migrate_lock_read(struct uhmm_mm *mm);
UHMM__HIDDEN void uhmm__migrate_lock_write(struct uhmm_mm *mm);
/* Try for reading: false if a writer (fork, a pool removal) has it. */
UHMM__HIDDEN bool uhmm__migrate_trylock_read(struct uhmm_mm *mm);
/* Release it; this thread no longer holds it. */
UHMM__HIDDEN void uhmm__migrate_unlock(struct uhmm_mm *mm);
/* Does this thread hold it (or act for a thread that does)? */
UHMM__HIDDEN bool uhmm__migrate_lock_held(void);
/*
 * Set what uhmm__migrate_lock_held() answers without locking, and return
 * what it answered: for device callbacks run on behalf of a holder
 * (eviction at teardown, when no migration can start) and for fork, which
 * keeps the lock until its parent and child handlers but no longer acts
 * under it.
 */
UHMM__HIDDEN bool uhmm__migrate_lock_assume(bool held);

#endif /* UHMM__MIGRATE_LOCK_H */
