// SPDX-License-Identifier: MIT
/*
 * The userfaultfd page primitives (the counterpart of the kernel's
 * mm/userfaultfd.c as uhmm uses it): move and copy runs of pages with
 * UFFDIO_MOVE / UFFDIO_COPY, wake the threads a fault left asleep, and the
 * MISSING registrations with the boundaries they cut mappings at.
 */
#include <errno.h>
#include <sched.h>

#include "base.h"
#include "context.h"
#include "features_priv.h"
#include "inject_priv.h"
#include "log.h"
#include "managed.h"
#include "pagemap.h"
#include "uffd.h"
#include "vma.h"

void uhmm__eagain_backoff(struct uhmm_mm *mm)
{
	/* The reader thread reads the pending event whoever we are. */
	(void)mm;
	sched_yield();
}

/*
 * How many of the pages at [@src, @src + @len) a failed UFFDIO_MOVE did move
 * to @dst after all, counted from the start.  Linux 6.18 can move a whole
 * run out of a PTE-mapped THP that another thread is splitting and still
 * report -EEXIST (tests/test_migrate_thp.c shows it): the page tables
 * are the truth.  Both ends are uhmm's alone here (fresh or cached staging,
 * or an address held MIGRATING), so data at @dst with none left at @src is
 * the page that moved; with @holes, an empty pair is a hole moved.
 */
static size_t moved_anyway(uintptr_t dst, uintptr_t src, size_t len, bool holes)
{
	const unsigned int ps = uhmm__page_shift;
	uint8_t d[512], sv[512];
	size_t n = 0, npages = len >> ps;

	while (n < npages) {
		size_t k = UHMM__MIN((size_t)512, npages - n);

		if (uhmm__pagemap_has_data(dst + (n << ps), k, d) ||
		    uhmm__pagemap_has_data(src + (n << ps), k, sv))
			break;
		for (size_t i = 0; i < k; i++, n++) {
			/* A uffd-wp marker holds no data (wpmarker.c). */
			bool sdata = sv[i] && sv[i] != UHMM__PM_MARKER;
			bool ddata = d[i] && d[i] != UHMM__PM_MARKER;

			if (sdata || (!ddata && !holes))
				return n << ps;
		}
	}
	return n << ps;
}

/* UFFDIO_MOVE [src, src+len) -> dst; returns bytes moved and -errno in *err. */
size_t uhmm__uffd_move(struct uhmm_mm *mm, uintptr_t dst, uintptr_t src, size_t len,
		      bool holes, int *err)
{
	return uhmm__uffd_move_fd(mm, mm->uffd, dst, src, len, holes, err);
}

size_t uhmm__uffd_move_fd(struct uhmm_mm *mm, int fd, uintptr_t dst, uintptr_t src,
			  size_t len, bool holes, int *err)
{
	size_t done = 0;

	*err = 0;
	while (done < len) {
		struct uffdio_move mv = {
			.dst = dst + done, .src = src + done, .len = len - done,
			/* Waiters are woken by finalize, after the bookkeeping. */
			.mode = UFFDIO_MOVE_MODE_DONTWAKE |
				(holes ? UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES : 0),
		};

		if (uhmm__uffd_ioctl(fd, UFFDIO_MOVE, &mv) == 0) {
			done = len;
			break;
		}
		if (mv.move > 0)
			done += (size_t)mv.move;
		if (errno == EAGAIN) {
			if (mv.move <= 0)
				uhmm__eagain_backoff(mm);
			continue;
		}
		*err = -errno;
		{
			size_t more = moved_anyway(dst + done, src + done, len - done, holes);

			if (more) {
				/* Moved after all: go on from the first page that did not. */
				done += more;
				*err = 0;
				continue;
			}
		}
		break;
	}
	return done;
}

/* UFFDIO_COPY one run; retries EAGAIN. */
int uhmm__uffd_copy(struct uhmm_mm *mm, uintptr_t dst, uintptr_t src, size_t len)
{
	size_t done = 0;

	while (done < len) {
		struct uffdio_copy c = {
			.dst = dst + done, .src = src + done, .len = len - done,
			.mode = UFFDIO_COPY_MODE_DONTWAKE,
		};

		if (uhmm__uffd_ioctl(mm->uffd, UFFDIO_COPY, &c) == 0)
			return 0;
		if (c.copy > 0)
			done += (size_t)c.copy;
		if (errno == EAGAIN) {
			if (c.copy <= 0)
				uhmm__eagain_backoff(mm);
			continue;
		}
		if (errno == EEXIST && c.copy <= 0) {
			/* Populated under a frozen page: a bug; never overwrite. */
			uhmm__warn("UFFDIO_COPY: %#lx already populated",
				   (unsigned long)(dst + done));
			done += uhmm__page_size;
			continue;
		}
		return -errno;
	}
	return 0;
}

void uhmm__uffd_wake(struct uhmm_mm *mm, uintptr_t s, uintptr_t e)
{
	struct uffdio_range r = { .start = s, .len = e - s };

	uhmm__uffd_ioctl(mm->uffd, UFFDIO_WAKE, &r);
}

/* Remember a boundary a registration may cut a mapping at (reg_lock held). */
static void note_split(struct uhmm_mm *mm, uintptr_t a)
{
	for (size_t i = 0; i < mm->nsplit; i++)
		if (mm->split[i] == a)
			return;
	if (mm->nsplit == mm->split_cap) {
		size_t cap = mm->split_cap ? mm->split_cap * 2 : 64;
		uintptr_t *n = uhmm__realloc(mm->split, cap * sizeof(*n));

		if (!n)
			return;
		mm->split = n;
		mm->split_cap = cap;
	}
	mm->split[mm->nsplit++] = a;
}

int uhmm__register_missing(struct uhmm_mm *mm, uintptr_t start, uintptr_t end)
{
	struct uffdio_register reg = {
		.range = { .start = start, .len = end - start },
		.mode = UFFDIO_REGISTER_MODE_MISSING,
	};
	int ret = 0;

	if (uhmm__has(UHMM_FEAT_UFFD_WP))
		reg.mode |= UFFDIO_REGISTER_MODE_WP;
	uhmm__managed_registered(start, end);	/* the wrappers' fast check */
	pthread_mutex_lock(&mm->reg_lock);
	if (uhmm__uffd_ioctl(mm->uffd, UFFDIO_REGISTER, &reg) < 0) {
		ret = -errno;
	} else {
		note_split(mm, start);
		note_split(mm, end);
	}
	pthread_mutex_unlock(&mm->reg_lock);
	return ret;
}

void uhmm__forget_splits(struct uhmm_mm *mm, uintptr_t start, uintptr_t end)
{
	pthread_mutex_lock(&mm->reg_lock);
	for (size_t i = 0; i < mm->nsplit;) {
		if (mm->split[i] >= start && mm->split[i] <= end)
			mm->split[i] = mm->split[--mm->nsplit];
		else
			i++;
	}
	pthread_mutex_unlock(&mm->reg_lock);
}

bool uhmm__is_our_split(struct uhmm_mm *mm, uintptr_t addr)
{
	bool ret = false;

	pthread_mutex_lock(&mm->reg_lock);
	for (size_t i = 0; i < mm->nsplit && !ret; i++)
		ret = mm->split[i] == addr;
	pthread_mutex_unlock(&mm->reg_lock);
	return ret;
}

void uhmm__register_for_events(struct uhmm_mm *mm, uintptr_t start, uintptr_t end)
{
	struct uhmm__vma vmas[64];
	bool fresh = true;
	size_t n = 0;

	if (!uhmm__has(UHMM_FEAT_UFFD_WP))
		return;
	while (start < end) {
		size_t i;

		/*
		 * Fresh: the cache may miss mappings libc made without a
		 * wrapper.  Once: a registration changes no mapping, and the
		 * calls after the first continue the same list.
		 */
		if (uhmm__vma_find(start, end, vmas, UHMM__ARRAY_SIZE(vmas), &n, fresh) ||
		    n == 0)
			return;
		fresh = false;
		for (i = 0; i < UHMM__MIN(n, UHMM__ARRAY_SIZE(vmas)); i++) {
			struct uffdio_register reg = { .mode = UFFDIO_REGISTER_MODE_WP };
			uintptr_t s = UHMM__MAX(vmas[i].start, start);
			uintptr_t e = UHMM__MIN(vmas[i].end, end);

			if (!(vmas[i].flags & (UHMM__VMA_ANON | UHMM__VMA_SHMEM)) ||
			    (vmas[i].flags & (UHMM__VMA_HUGETLB | UHMM__VMA_SPECIAL)))
				continue;
			reg.range.start = s;
			reg.range.len = e - s;
			uhmm__managed_registered(s, e);	/* the wrappers' fast check */
			pthread_mutex_lock(&mm->reg_lock);
			int rerr = uhmm__uffd_ioctl(mm->uffd, UFFDIO_REGISTER, &reg) < 0 ? errno : 0;

			pthread_mutex_unlock(&mm->reg_lock);
			if (rerr)	/* after reg_lock: a warning writes to stderr */
				uhmm__warn("could not register [%#lx, %#lx) for events: %s",
					   (unsigned long)s, (unsigned long)e, uhmm__err_text(rerr));
		}
		if (n <= UHMM__ARRAY_SIZE(vmas))
			return;
		start = vmas[UHMM__ARRAY_SIZE(vmas) - 1].end;
	}
}
