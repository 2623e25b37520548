/* SPDX-License-Identifier: MIT */
/*
 * Regions in which no asynchronous signal handler may run on the calling
 * thread (docs/CONCURRENCY.md, "Signals").
 *
 * The kernel never runs a signal handler in the middle of migrate_vma, of
 * an munmap's invalidation or of hmm_range_fault: they are kernel code.
 * uhmm runs them on the caller's thread, with locks held and pages frozen,
 * and a handler that touches device memory there waits for the very thread
 * it interrupted.  So uhmm blocks asynchronous signals for the length of
 * such a region.  Synchronous signals (SIGSEGV, SIGBUS, SIGFPE, SIGILL,
 * SIGTRAP, SIGSYS) are never blocked: the kernel would kill the process
 * instead of delivering one raised by the thread's own instruction.
 *
 * Regions nest (a counter per thread): the outermost enter saves the
 * caller's mask, the matching leave restores exactly that mask.  On uhmm's
 * service threads, which block every signal for good, both are no-ops.
 */
#ifndef UHMM__SIGBLOCK_H
#define UHMM__SIGBLOCK_H

#include <stdbool.h>

#include "hidden.h"

/* Enter a region: asynchronous signals stay pending until the last leave. */
UHMM__HIDDEN void uhmm__sig_enter(void);
/* Leave it; the outermost leave restores the mask the thread had. */
UHMM__HIDDEN void uhmm__sig_leave(void);
/*
 * A wait of the caller's thread on one of uhmm's locks or conditions
 * outside a region: no pthread_cancel() is acted on inside it (the
 * condition wait would unwind with the mutex held).  Returns the state
 * to give back to uhmm__nocancel_end().
 */
UHMM__HIDDEN int uhmm__nocancel_begin(void);
UHMM__HIDDEN void uhmm__nocancel_end(int old);
/* Is the calling thread inside a region (for assertions and tests)? */
UHMM__HIDDEN bool uhmm__sig_blocked(void);
/*
 * On one of uhmm's service threads, which block every signal for good
 * (each says so when it starts, before it runs anything else).
 */
UHMM__HIDDEN bool uhmm__on_service_thread(void);
UHMM__HIDDEN void uhmm__set_service_thread(void);

#endif /* UHMM__SIGBLOCK_H */
