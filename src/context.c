// SPDX-License-Identifier: MIT
/*
 * The process context: the one struct uhmm_mm of the process, what the
 * calling thread is doing in it, and the changes the wrappers already
 * notified.  The bottom of the core (context.h): nothing here calls
 * another module of uhmm but sigblock.c; who creates and tears the
 * context down is mm.c.
 */
#include "base.h"
#include "context.h"
#include "sigblock.h"

struct uhmm_mm uhmm__the_mm = {
	.ev_lock = PTHREAD_MUTEX_INITIALIZER,
	.ev_cond = PTHREAD_COND_INITIALIZER,
	.selfop_lock = PTHREAD_MUTEX_INITIALIZER,
	.nlock = PTHREAD_MUTEX_INITIALIZER,
	.ncond = PTHREAD_COND_INITIALIZER,
	.reg_lock = PTHREAD_MUTEX_INITIALIZER,
	.pool_lock = PTHREAD_MUTEX_INITIALIZER,
	.excl_lock = PTHREAD_MUTEX_INITIALIZER,
	.migrate_lock = PTHREAD_RWLOCK_INITIALIZER,
	.as_lock = PTHREAD_RWLOCK_INITIALIZER,
	.mig_lock = PTHREAD_MUTEX_INITIALIZER,
	.remap_lock = PTHREAD_MUTEX_INITIALIZER,
	.staging_cache.lock = PTHREAD_MUTEX_INITIALIZER,
	.mig_cond = PTHREAD_COND_INITIALIZER,
	.uffd = -1,
	.stop_fd = -1,
};

/*
 * How deep this thread is in invalidate callbacks, for re-entrancy
 * detection (private to this file).
 */
static __thread int callback_depth;

void uhmm__callback_enter(void)
{
	callback_depth++;
}

void uhmm__callback_leave(void)
{
	callback_depth--;
}

bool uhmm__in_invalidate_callback(void)
{
	return callback_depth > 0;
}

bool uhmm__in_callback(void)
{
	return callback_depth > 0 || uhmm__on_service_thread();
}

/* ---- changes the wrappers already notified ---------------------------- */

int uhmm__selfop_begin(struct uhmm_mm *mm, struct uhmm__selfop *op,
		       uintptr_t start, uintptr_t end, unsigned int flags)
{
	op->start = start;
	op->end = end;
	op->flags = flags;
	op->done_seq = 0;
	pthread_mutex_lock(&mm->selfop_lock);
	op->next = mm->selfops;
	mm->selfops = op;
	pthread_mutex_unlock(&mm->selfop_lock);
	return 0;
}

void uhmm__selfop_end(struct uhmm_mm *mm, struct uhmm__selfop *op)
{
	struct uhmm__selfop **pp;

	pthread_mutex_lock(&mm->selfop_lock);
	for (pp = &mm->selfops; *pp; pp = &(*pp)->next) {
		if (*pp == op) {
			*pp = op->next;
			break;
		}
	}
	pthread_mutex_unlock(&mm->selfop_lock);
}

