// SPDX-License-Identifier: MIT
/*
 * Failure injection (include/uhmm/inject.h), and the two doors every
 * injectable operation goes through: the library's allocation functions and
 * its userfaultfd ioctl.  Nothing in the library calls malloc/calloc/realloc
 * or ioctl on the userfaultfd directly.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/ioctl.h>

#include "base.h"
#include "features_priv.h"
#include "inject_priv.h"
#include "log.h"
#include "ownmem.h"
#include <uhmm/inject.h>

struct inject_point {
	atomic_long skip;
	atomic_long times;
	atomic_int err;
	atomic_ulong hits;
};

static struct inject_point points[UHMM_INJECT_COUNT];
static atomic_uint armed;		/* bit per point: a quick "nothing armed" */

int uhmm_inject_set(unsigned int point, unsigned long skip, unsigned long times, int err)
{
	struct inject_point *p;

	if (point >= UHMM_INJECT_COUNT)
		return uhmm__err(EINVAL, "inject: unknown point %u", point);
	if (err <= 0 || err > 4095)
		return uhmm__err(EINVAL, "inject: errno %d out of range 1..4095", err);
	if (skip > LONG_MAX || times > LONG_MAX)
		return uhmm__err(EINVAL, "inject: skip %lu or times %lu above LONG_MAX",
				 skip, times);
	p = &points[point];
	atomic_fetch_and(&armed, ~(1u << point));
	atomic_store(&p->skip, (long)skip);
	atomic_store(&p->times, (long)times);
	atomic_store(&p->err, err);
	atomic_store(&p->hits, 0);
	if (times)
		atomic_fetch_or(&armed, 1u << point);
	return 0;
}

unsigned long uhmm_inject_hits(unsigned int point)
{
	if (point >= UHMM_INJECT_COUNT) {
		uhmm__err(EINVAL, "inject: unknown point %u", point);
		return 0;
	}
	return atomic_load(&points[point].hits);
}

void uhmm_inject_clear(void)
{
	atomic_store(&armed, 0);
	for (unsigned int i = 0; i < UHMM_INJECT_COUNT; i++)
		atomic_store(&points[i].times, 0);
}

/* Should this call of @point fail?  Returns the errno, or 0. */
static int inject_fire(unsigned int point)
{
	struct inject_point *p = &points[point];
	long v;

	if (!(atomic_load_explicit(&armed, memory_order_relaxed) & (1u << point)))
		return 0;
	v = atomic_load(&p->skip);
	while (v > 0)
		if (atomic_compare_exchange_weak(&p->skip, &v, v - 1))
			return 0;
	v = atomic_load(&p->times);
	while (v > 0) {
		if (atomic_compare_exchange_weak(&p->times, &v, v - 1)) {
			if (v == 1)
				atomic_fetch_and(&armed, ~(1u << point));
			atomic_fetch_add(&p->hits, 1);
			return atomic_load(&p->err);
		}
	}
	return 0;
}

void *uhmm__malloc(size_t n)
{
	if (inject_fire(UHMM_INJECT_MALLOC)) {
		errno = ENOMEM;
		return NULL;
	}
	return uhmm__own_malloc(n);
}

void *uhmm__calloc(size_t n, size_t size)
{
	if (inject_fire(UHMM_INJECT_MALLOC)) {
		errno = ENOMEM;
		return NULL;
	}
	return uhmm__own_calloc(n, size);
}

void *uhmm__realloc(void *old, size_t n)
{
	if (inject_fire(UHMM_INJECT_MALLOC)) {
		errno = ENOMEM;
		return NULL;
	}
	return uhmm__own_realloc(old, n);
}

/*
 * A failing COPY/MOVE: with EAGAIN and more than a page asked, do the first
 * page for real and report the partial result, as the kernel does when an
 * event interrupts the call; otherwise do nothing and report @err.
 */
static int inject_partial(int fd, unsigned long req, void *arg, int err,
			  __u64 *len, __s64 *result)
{
	__u64 want = *len;
	int ret;

	if (err == EAGAIN && want > uhmm__page_size) {
		*len = uhmm__page_size;
		ret = ioctl(fd, req, arg);
		*len = want;
		if (ret == 0) {
			*result = (__s64)uhmm__page_size;
			errno = EAGAIN;
			return -1;
		}
		return ret;
	}
	*result = -err;
	errno = err;
	return -1;
}

int uhmm__uffd_ioctl(int fd, unsigned long req, void *arg)
{
	int err;

	switch (req) {
	case UFFDIO_COPY:
		if ((err = inject_fire(UHMM_INJECT_UFFD_COPY))) {
			struct uffdio_copy *c = arg;

			return inject_partial(fd, req, arg, err, &c->len, &c->copy);
		}
		break;
	case UFFDIO_MOVE:
		if ((err = inject_fire(UHMM_INJECT_UFFD_MOVE))) {
			struct uffdio_move *m = arg;

			return inject_partial(fd, req, arg, err, &m->len, &m->move);
		}
		break;
	case UFFDIO_ZEROPAGE:
		if ((err = inject_fire(UHMM_INJECT_UFFD_ZEROPAGE))) {
			struct uffdio_zeropage *z = arg;

			z->zeropage = -err;
			errno = err;
			return -1;
		}
		break;
	case UFFDIO_REGISTER:
		if ((err = inject_fire(UHMM_INJECT_UFFD_REGISTER))) {
			errno = err;
			return -1;
		}
		break;
	}
	return ioctl(fd, req, arg);
}
