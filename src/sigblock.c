// SPDX-License-Identifier: MIT
/*
 * Blocking asynchronous signals across uhmm's critical regions (sigblock.h).
 *
 * Cost: two rt_sigprocmask calls per outermost region, nothing for nested
 * ones and nothing on the service threads.  Callers enter a region only
 * when the operation really concerns memory uhmm manages, so the libc
 * wrappers over unrelated memory never pay it.
 */
#include <pthread.h>
#include <signal.h>

#include "base.h"
#include "sigblock.h"

static sigset_t async_set;

/* Built before anything can run a region (a constructor of the library). */
__attribute__((constructor)) static void sig_set_init(void)
{
	sigfillset(&async_set);
	/* Raised by the thread's own instruction: blocking them kills. */
	sigdelset(&async_set, SIGSEGV);
	sigdelset(&async_set, SIGBUS);
	sigdelset(&async_set, SIGFPE);
	sigdelset(&async_set, SIGILL);
	sigdelset(&async_set, SIGTRAP);
	sigdelset(&async_set, SIGSYS);
	/* Cannot be blocked anyway; said for the reader. */
	sigdelset(&async_set, SIGKILL);
	sigdelset(&async_set, SIGSTOP);
}

static __thread unsigned int sig_depth;
static __thread sigset_t sig_saved;
/* The caller's cancelability state, restored by the outermost leave. */
static __thread int cancel_saved;
/* One of uhmm's service threads: every signal blocked for its life. */
static __thread bool service_thread;

void uhmm__set_service_thread(void)
{
	service_thread = true;
}

bool uhmm__on_service_thread(void)
{
	return service_thread;
}

void uhmm__sig_enter(void)
{
	if (uhmm__on_service_thread())
		return;		/* everything is blocked there for good */
	if (sig_depth++ == 0) {
		/*
		 * No cancellation either: a pthread_cancel() acted on at a
		 * cancellation point inside the region (a pread of pagemap, an
		 * open of /proc/self/maps, a condition wait) would unwind the
		 * thread with locks held and pages frozen (issue 12 hunt).  The
		 * kernel's migrate_vma and munmap are not cancellation points.
		 */
		cancel_saved = uhmm__nocancel_begin();
		pthread_sigmask(SIG_BLOCK, &async_set, &sig_saved);
	}
}

void uhmm__sig_leave(void)
{
	if (uhmm__on_service_thread() || sig_depth == 0)
		return;
	if (--sig_depth == 0) {
		pthread_sigmask(SIG_SETMASK, &sig_saved, NULL);
		uhmm__nocancel_end(cancel_saved);
	}
}

int uhmm__nocancel_begin(void)
{
	int old = PTHREAD_CANCEL_ENABLE;

	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
	return old;
}

void uhmm__nocancel_end(int old)
{
	pthread_setcancelstate(old, NULL);
}

bool uhmm__sig_blocked(void)
{
	return uhmm__on_service_thread() || sig_depth > 0;
}
