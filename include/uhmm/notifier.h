/* SPDX-License-Identifier: MIT */
/**
 * DOC: interval notifiers (the kernel's mmu_interval_notifier)
 *
 * A device that mirrors part of the address space in its own page table
 * registers an interval notifier over that part.  Whenever the CPU side of
 * any page in the interval changes in a way that makes a device mapping of it
 * stale (unmap, discard, protection change, migration, fork, teardown), the
 * notifier's invalidate callback runs and the device must drop its mappings
 * of that range before returning.
 *
 * A device page table is filled with the sequence-count protocol, which lets
 * the slow part (uhmm_range_fault()) run without the driver's lock and
 * commits the result only if no invalidation ran in between::
 *
 *	static bool my_invalidate(struct uhmm_interval_notifier *mni,
 *				  const struct uhmm_notifier_range *r,
 *				  unsigned long cur_seq)
 *	{
 *		struct my_dev *dev = container_of(mni, struct my_dev, notifier);
 *
 *		pthread_mutex_lock(&dev->lock);
 *		uhmm_interval_set_seq(mni, cur_seq);
 *		my_device_unmap(dev, r->start, r->end);
 *		pthread_mutex_unlock(&dev->lock);
 *		return true;
 *	}
 *
 *	int my_fill(struct my_dev *dev, uintptr_t start, uintptr_t end)
 *	{
 *		struct uhmm_range range = {
 *			.notifier = &dev->notifier, .start = start, .end = end,
 *			.hmm_pfns = dev->pfns, .default_flags = UHMM_PFN_REQ_FAULT,
 *		};
 *		int ret;
 *	again:
 *		range.notifier_seq = uhmm_interval_read_begin(&dev->notifier);
 *		ret = uhmm_range_fault(&range);
 *		if (ret == -EBUSY)
 *			goto again;
 *		if (ret)
 *			return ret;
 *		pthread_mutex_lock(&dev->lock);
 *		if (uhmm_interval_read_retry(&dev->notifier, range.notifier_seq)) {
 *			pthread_mutex_unlock(&dev->lock);
 *			goto again;
 *		}
 *		my_device_map(dev, &range);
 *		pthread_mutex_unlock(&dev->lock);
 *		return 0;
 *	}
 *
 * Which CPU-side changes reach the callback synchronously (before the
 * changing call returns) and which only afterwards is documented in
 * docs/CONCURRENCY.md and summarised at &enum uhmm_notify_event.
 */
#ifndef UHMM_NOTIFIER_H
#define UHMM_NOTIFIER_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <uhmm/mm.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * enum uhmm_notify_event - why a range is being invalidated
 * @UHMM_NOTIFY_UNMAP: the range is unmapped (munmap, mremap's old range,
 *	mmap MAP_FIXED over it, brk shrink).  Kernel: MMU_NOTIFY_UNMAP.
 * @UHMM_NOTIFY_DISCARD: the pages are discarded (MADV_DONTNEED, MADV_FREE,
 *	MADV_REMOVE, MADV_DONTNEED_LOCKED).  Kernel: MMU_NOTIFY_CLEAR.
 * @UHMM_NOTIFY_PROTECTION: access is reduced (mprotect, pkey_mprotect that
 *	removes read or write).  Kernel: MMU_NOTIFY_PROTECTION_VMA.
 * @UHMM_NOTIFY_MIGRATE: uhmm is migrating the pages; &uhmm_notifier_range.owner
 *	is the device-memory owner that asked.  Kernel: MMU_NOTIFY_MIGRATE.
 * @UHMM_NOTIFY_EXCLUSIVE: a device takes exclusive access to the pages.
 *	Kernel: MMU_NOTIFY_EXCLUSIVE.
 * @UHMM_NOTIFY_FORK: fork() is about to make private writable pages
 *	copy-on-write.  Kernel: MMU_NOTIFY_PROTECTION_PAGE from dup_mmap.
 * @UHMM_NOTIFY_RELEASE: the context is torn down or the process exits; the
 *	notifier will receive nothing more.  Kernel: MMU_NOTIFY_RELEASE.
 */
enum uhmm_notify_event {
	UHMM_NOTIFY_UNMAP = 0,
	UHMM_NOTIFY_DISCARD,
	UHMM_NOTIFY_PROTECTION,
	UHMM_NOTIFY_MIGRATE,
	UHMM_NOTIFY_EXCLUSIVE,
	UHMM_NOTIFY_FORK,
	UHMM_NOTIFY_RELEASE,
};

/*
 * The change already happened when the callback runs: it was seen through a
 * userfaultfd event (a raw syscall or a libc-internal unmap that bypassed
 * uhmm's wrappers), not before the call that made it.
 */
#define UHMM_NOTIFY_FLAG_AFTER	(1u << 0)

/**
 * struct uhmm_notifier_range - one invalidation
 * @start: first byte of the invalidated range (page aligned)
 * @end: one past the last byte (page aligned)
 * @event: why
 * @flags: UHMM_NOTIFY_FLAG_*
 * @owner: for %UHMM_NOTIFY_MIGRATE and %UHMM_NOTIFY_EXCLUSIVE, the owner
 *	token of the device memory that caused it, so that owner can skip
 *	invalidating what it is migrating itself; NULL otherwise
 */
struct uhmm_notifier_range {
	uintptr_t start;
	uintptr_t end;
	enum uhmm_notify_event event;
	unsigned int flags;
	const void *owner;
};

struct uhmm_interval_notifier;

/**
 * struct uhmm_interval_notifier_ops - callbacks of an interval notifier
 * @invalidate: the CPU side of [@range->start, @range->end) is changing.
 *	Call uhmm_interval_set_seq(@mni, @cur_seq) under the lock that also
 *	protects the device page table, drop the device's mappings of the
 *	range, and return true.  It runs on the thread making the change (or
 *	on uhmm's service thread for changes seen only afterwards); several
 *	invalidations can run at once.  It must not insert or remove
 *	notifiers, take a reference on the context, migrate, or munmap /
 *	madvise memory uhmm manages: uhmm returns -EDEADLK for such calls.
 *	The return value exists for kernel compatibility (non-blocking
 *	invalidation); uhmm always allows blocking and ignores it.
 */
struct uhmm_interval_notifier_ops {
	bool (*invalidate)(struct uhmm_interval_notifier *mni,
			   const struct uhmm_notifier_range *range,
			   unsigned long cur_seq);
};

/**
 * struct uhmm_interval_notifier - a notifier over one interval
 *
 * Embed it in the driver's structure and get back with container_of().  All
 * fields are private to uhmm; @start and @end may be read after insert.
 * Zero it before insert; the reserved bytes are uhmm's private state (their
 * size is fixed, so the structure's size does not change between releases
 * of one soname).
 */
struct uhmm_interval_notifier {
	uintptr_t start;
	uintptr_t end;
	union {
		uint64_t uhmm_reserved[8];		/* private, zero */
#ifdef UHMM__NOTIFIER_PRIVATE
		struct { UHMM__NOTIFIER_PRIVATE };
#endif
	};
};

/**
 * uhmm_interval_notifier_insert() - start watching an interval
 * @mni: the notifier (zero it first); stays owned by the caller
 * @mm: the process context
 * @start: first byte of the interval (any alignment; it is widened to pages)
 * @length: length in bytes, > 0; the interval may cover holes and any kind
 *	of mapping, and mappings created in it later are covered too
 * @ops: callbacks
 *
 * Takes a reference on @mm's memory (not a user reference: the context can
 * still be torn down, which releases the notifier).  Where the interval
 * covers anonymous or shared memory, uhmm also registers it with its
 * userfaultfd in write-protect mode only (which makes no CPU access slower)
 * so that unmaps that bypass the libc wrappers are still seen.
 * Thread safe; may run concurrently with invalidations (the new notifier then
 * sees the next invalidation, never half of a running one).
 *
 * Return: 0; -EINVAL for a NULL argument, zero length, a range that wraps, or
 * a notifier already inserted; -ENOMEM; -EDEADLK from a callback.
 */
UHMM_API int uhmm_interval_notifier_insert(struct uhmm_interval_notifier *mni,
					   struct uhmm_mm *mm, uintptr_t start,
					   size_t length,
					   const struct uhmm_interval_notifier_ops *ops);

/**
 * uhmm_interval_notifier_remove() - stop watching
 * @mni: an inserted notifier (or one released by teardown: then a no-op)
 *
 * When it returns, no invalidate callback of @mni is running or will run, so
 * the caller may free it.  Removing a notifier that is not inserted (never
 * was, already removed, or released by teardown) is a no-op; NULL is
 * ignored with a reason in uhmm_last_error().  From @mni's own callback the
 * removal is deferred to the end of the running invalidation (the callback
 * may still be called until then) instead of deadlocking; do not free @mni
 * before that invalidation has returned.
 */
UHMM_API void uhmm_interval_notifier_remove(struct uhmm_interval_notifier *mni);

/**
 * uhmm_interval_read_begin() - begin a read-side critical section
 * @mni: the notifier
 *
 * If an invalidation of @mni is running, waits for it to finish: a range
 * fault started during it could only be discarded.  Returns the sequence to
 * pass to uhmm_interval_read_retry() / uhmm_range_fault().
 *
 * Return: the current sequence of @mni; 0 for a NULL @mni (with a reason in
 * uhmm_last_error(); a range fault with it then fails -EINVAL).
 */
UHMM_API unsigned long uhmm_interval_read_begin(struct uhmm_interval_notifier *mni);

/**
 * uhmm_interval_read_retry() - end a read-side critical section
 * @mni: the notifier
 * @seq: the value uhmm_interval_read_begin() returned
 *
 * Call with the driver lock that the invalidate callback takes around
 * uhmm_interval_set_seq() held; if it returns false, the snapshot taken since
 * @seq is still valid and may be committed to the device before unlocking.
 *
 * Return: true if an invalidation ran since @seq and the caller must retry
 * (also for a NULL @mni, with a reason in uhmm_last_error()).
 */
UHMM_API bool uhmm_interval_read_retry(struct uhmm_interval_notifier *mni,
				       unsigned long seq);

/**
 * uhmm_interval_check_retry() - lock-free early test for a retry
 * @mni: the notifier
 * @seq: the value uhmm_interval_read_begin() returned
 *
 * Like uhmm_interval_read_retry() but without the driver lock: a false
 * answer is only a hint; true is final (and the answer for a NULL @mni).
 */
UHMM_API bool uhmm_interval_check_retry(struct uhmm_interval_notifier *mni,
					unsigned long seq);

/**
 * uhmm_interval_set_seq() - record an invalidation in the notifier
 * @mni: the notifier
 * @cur_seq: the value passed to the invalidate callback
 *
 * Call from the invalidate callback with the driver lock held.  A NULL
 * @mni is ignored with a reason in uhmm_last_error().
 */
UHMM_API void uhmm_interval_set_seq(struct uhmm_interval_notifier *mni,
				    unsigned long cur_seq);

#ifdef __cplusplus
}
#endif
#endif /* UHMM_NOTIFIER_H */
