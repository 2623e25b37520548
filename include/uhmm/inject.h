/* SPDX-License-Identifier: MIT */
/**
 * DOC: failure injection
 *
 * The counterpart of the kernel's fault-injection framework (failslab,
 * fail_page_alloc): make chosen operations inside libuhmm fail on purpose,
 * so that a test can prove that every error path leaves every byte of every
 * page right.  Each injection point counts its calls; once armed, it lets
 * @skip calls through, then fails the next @times calls with @err, then
 * disarms itself.
 *
 * The points are process-wide and count calls from every thread, the
 * service threads included (a CPU fault is served there).  An unarmed point
 * costs one relaxed atomic load.
 *
 * What a failure looks like to the library:
 *  - %UHMM_INJECT_MALLOC: the library's own malloc/calloc/realloc returns
 *    NULL (errno ENOMEM; @err is ignored).
 *  - %UHMM_INJECT_UFFD_COPY, %UHMM_INJECT_UFFD_MOVE,
 *    %UHMM_INJECT_UFFD_ZEROPAGE: the ioctl fails with @err as the kernel
 *    reports it (the result field is -@err).  With @err == EAGAIN and a
 *    request longer than one page, the first page is really done and the
 *    call reports a partial result, as the kernel does when a
 *    non-cooperative event interrupts it.
 *  - %UHMM_INJECT_UFFD_REGISTER: UFFDIO_REGISTER fails with @err.
 */
#ifndef UHMM_INJECT_H
#define UHMM_INJECT_H

#include <uhmm/mm.h>

#ifdef __cplusplus
extern "C" {
#endif

enum uhmm_inject_point {
	UHMM_INJECT_MALLOC = 0,		/* the library's own allocations */
	UHMM_INJECT_UFFD_COPY,		/* UFFDIO_COPY */
	UHMM_INJECT_UFFD_MOVE,		/* UFFDIO_MOVE */
	UHMM_INJECT_UFFD_ZEROPAGE,	/* UFFDIO_ZEROPAGE */
	UHMM_INJECT_UFFD_REGISTER,	/* UFFDIO_REGISTER */
	UHMM_INJECT_COUNT
};

/**
 * uhmm_inject_set() - arm (or disarm) one injection point
 * @point: enum uhmm_inject_point
 * @skip: calls let through before the first failure
 * @times: calls to fail after that (0 disarms the point)
 * @err: positive errno the failing calls report (ENOMEM, EAGAIN, ...)
 *
 * Re-arming replaces the point's previous setting and resets its hit count.
 * Callable from any thread at any time.
 *
 * Return: 0; -EINVAL for an unknown @point, @err not in 1..4095 (even to
 * disarm), or @skip or @times above LONG_MAX.  On an error nothing changes.
 */
UHMM_API int uhmm_inject_set(unsigned int point, unsigned long skip,
			     unsigned long times, int err);

/**
 * uhmm_inject_hits() - failures injected at @point since it was last armed
 * @point: enum uhmm_inject_point
 *
 * Return: the count; 0 for an unknown point (with a reason in
 * uhmm_last_error()).
 */
UHMM_API unsigned long uhmm_inject_hits(unsigned int point);

/** uhmm_inject_clear() - disarm every point. */
UHMM_API void uhmm_inject_clear(void);

#ifdef __cplusplus
}
#endif
#endif /* UHMM_INJECT_H */
