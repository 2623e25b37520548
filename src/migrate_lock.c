// SPDX-License-Identifier: MIT
/*
 * mm->migrate_lock and whether this thread holds it.  The one thread-local
 * here is re-entrancy detection private to this file (as lockdep's held
 * locks are per task): a driver's callback run under the lock (a CPU
 * fault's migrate_to_ram, eviction by fork or a pool removal) starts a
 * migration on the same thread, which must neither take the lock again
 * (a writer may be queued) nor wait for events the holder holds back.
 */
#include "base.h"
#include "context.h"
#include "migrate_lock.h"

static __thread bool held;

void uhmm__migrate_lock_read(struct uhmm_mm *mm)
{
	pthread_rwlock_rdlock(&mm->migrate_lock);
	held = true;
}

void uhmm__migrate_lock_write(struct uhmm_mm *mm)
{
	pthread_rwlock_wrlock(&mm->migrate_lock);
	held = true;
}

bool uhmm__migrate_trylock_read(struct uhmm_mm *mm)
{
	if (pthread_rwlock_tryrdlock(&mm->migrate_lock))
		return false;
	held = true;
	return true;
}

void uhmm__migrate_unlock(struct uhmm_mm *mm)
{
	held = false;
	pthread_rwlock_unlock(&mm->migrate_lock);
}

bool uhmm__migrate_lock_held(void)
{
	return held;
}

bool uhmm__migrate_lock_assume(bool now)
{
	bool was = held;

	held = now;
	return was;
}
