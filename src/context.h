/* SPDX-License-Identifier: MIT */
/*
 * context.c: the process context (struct uhmm_mm, one per process:
 * uhmm__the_mm), what the calling thread is doing in it (in a callback),
 * and the changes uhmm's wrappers already notified.  The bottom of the
 * core: every module reads the context through this header, and none of
 * it calls upward.  Its lifetime (creation, references, teardown, fork)
 * is mm.c's, above everything (mm_priv.h).
 */
#ifndef UHMM__CONTEXT_H
#define UHMM__CONTEXT_H

#include "base.h"
#include "itree.h"
#include "ptable.h"
#include "staging.h"

enum uhmm__mm_state { UHMM__MM_DEAD = 0, UHMM__MM_LIVE, UHMM__MM_TEARDOWN };

/* What the service thread skips for events inside a selfop's range. */
#define UHMM__SELFOP_NOTIFIED	(1u << 0)	/* notifiers already ran */
#define UHMM__SELFOP_INTERNAL	(1u << 1)	/* uhmm's own change: ignore */
#define UHMM__SELFOP_KEEP_DEVICE	(1u << 2)	/* MADV_FREE: device pages stay */
/*
 * A discard that drops device pages (MADV_DONTNEED, MADV_REMOVE...).  An
 * event is judged by every change in flight whose range covers it, and
 * its own call may be the discard while another thread's MADV_FREE covers
 * it: a discard's mark wins, so its device pages go (round 4 hunt).
 */
#define UHMM__SELFOP_DROP_DEVICE	(1u << 4)
/*
 * Allocated (uhmm__malloc), never ended by its maker: the worker frees it
 * at the first event it handles once every batch up to @done_seq (the
 * event read sequence after the change returned; 0 while it runs) is
 * processed.  For a change the worker itself makes, which cannot wait for
 * its own events (wpmarker.c).
 */
#define UHMM__SELFOP_ONESHOT	(1u << 3)

struct uhmm__selfop {
	uintptr_t start;
	uintptr_t end;
	unsigned int flags;
	unsigned long done_seq;	/* UHMM__SELFOP_ONESHOT only */
	struct uhmm__selfop *next;
};

#define UHMM__MAX_POOLS 256
#define UHMM__RETRY_MAX 256

#define UHMM__WAKE_LOG 64

struct uhmm_mm {
	/* Lifetime: see mm.c.  The structure itself is static and never freed. */
	atomic_int users;
	atomic_int state;
	unsigned long generation;	/* bumped at each creation */

	/* userfaultfd and the service thread (service.c). */
	int uffd;
	uint64_t uffd_features;
	int stop_fd;			/* eventfd: tells the service thread to stop */
	pthread_t service;		/* the worker */
	pthread_t reader;		/* reads the uffd into msgq */
	struct uhmm__msgq *msgq;
	void *reader_stack;
	bool service_started;
	/*
	 * Event sequence (service.c): ev_read is bumped just before each
	 * read(2) of the uffd, ev_done when that batch is processed.  A thread
	 * that made a syscall which may have produced an event waits for
	 * ev_done >= the ev_read it sees afterwards.
	 */
	atomic_ulong ev_read;
	atomic_ulong ev_done;
	atomic_ulong ev_read_returned;	/* the last read(2) that returned (its ev_read) */
	/*
	 * The last UHMM__WAKE_LOG wakes (uffd.c): the range each woke, the
	 * reads of the uffd done before it and those begun by its end, to
	 * tell whether a fault message was read before a wake of its page.
	 * Each slot is a sequence lock of its own (ver odd while written); a
	 * writer that finds its slot busy logs nothing.
	 */
	struct uhmm__wake_rec {
		atomic_ulong ver;
		_Atomic uintptr_t start, end;
		atomic_ulong done, begun;
	} wake_log[UHMM__WAKE_LOG];
	atomic_uint wake_next;
	atomic_ulong wake_max_begun;	/* the largest begun logged: a quick no */
	pthread_mutex_t ev_lock;
	pthread_cond_t ev_cond;

	/* Changes uhmm's wrappers already notified (not to notify twice). */
	pthread_mutex_t selfop_lock;
	struct uhmm__selfop *selfops;

	/* Interval notifiers (notifier.c). */
	pthread_mutex_t nlock;
	pthread_cond_t ncond;
	struct uhmm__itree tree;
	unsigned long invalidate_seq;	/* odd while invalidations run */
	unsigned int active_invalidate;
	struct uhmm__mni_node *deferred;
	atomic_int nr_notifiers;
	/* Migrations finished (finalize), for exclusive.c's retake: see there. */
	atomic_ulong migrations_done;

	/*
	 * The counterpart of the kernel's mmap_lock for one purpose: the
	 * wrappers hold it for writing across a system call that changes
	 * notified memory, and a range fault's fallback (touching pages from
	 * the library) holds it for reading, so it never touches a page while
	 * a wrapped munmap / mprotect of it is under way.
	 */
	pthread_rwlock_t as_lock;

	/*
	 * Registration bookkeeping (service.c, migrate.c): reg_lock
	 * serializes UFFDIO_REGISTER; split[] remembers the boundaries uhmm's
	 * MISSING registrations cut mappings at (kept across fork: the child
	 * inherits the split mappings), so a mapping the kernel still treats
	 * as one can be recognised.
	 */
	pthread_mutex_t reg_lock;
	uintptr_t *split;		/* a hash set (uffd.c) */
	size_t nsplit, split_used, split_cap;

	/* Special entries. */
	struct uhmm__ptable ptable;

	/* Device memory pools by id (devmem.c); pool_lock guards the table. */
	pthread_mutex_t pool_lock;
	struct uhmm_devmem *pools[UHMM__MAX_POOLS];

	/*
	 * Migrations hold migrate_lock for reading from setup to finalize;
	 * fork holds it for writing while it brings device pages home.
	 * mig_cond is broadcast (under mig_lock) by every finalize, for
	 * threads waiting for a range to have no migration in flight.
	 */
	pthread_rwlock_t migrate_lock;
	pthread_mutex_t mig_lock;
	pthread_cond_t mig_cond;

	/*
	 * Raw mremaps of pages a migration holds (service.c ptable_move(),
	 * migrate.c and migrate_device.c "where a page is now").  The move
	 * of a MIGRATING entry and the look-up of where one is now happen
	 * under remap_lock, which nests inside nothing uhmm holds but
	 * migrate_lock, and inside which only the allocator's lock is taken.
	 * remap_log[] holds every move of a MIGRATING entry since the oldest
	 * migrate_vma in flight began (remap_users of them): from, to, len
	 * and a sequence number (remap_seq, the last one given).
	 */
	pthread_mutex_t remap_lock;
	struct uhmm__remap_rec {
		uintptr_t from, to;
		size_t len;
		unsigned long seq;
	} *remap_log;
	size_t remap_n, remap_cap;
	unsigned long remap_seq;
	unsigned long remap_users;
	uint32_t mig_serial;		/* the last migrate_vma's serial (uhmm__pte_tag()) */

	/* The internal pool for device-exclusive pages (exclusive.c). */
	pthread_mutex_t excl_lock;
	struct uhmm_devmem *excl_pool;

	/* The staging cache of recycled system pages (staging.c). */
	struct uhmm__staging_cache staging_cache;
	/* Staging for small device->system migrations (staging.c): one user at a time. */
	void *bounce;
	atomic_bool bounce_busy;

	/* Faults the service thread must retry after reading events. */
	struct uffd_msg retry[UHMM__RETRY_MAX];
	size_t nretry;
};

UHMM__HIDDEN extern struct uhmm_mm uhmm__the_mm;
/* True on uhmm's service thread, or inside an invalidate callback. */
UHMM__HIDDEN bool uhmm__in_callback(void);
/* In an invalidate callback (notifier.c enters and leaves them). */
UHMM__HIDDEN bool uhmm__in_invalidate_callback(void);
UHMM__HIDDEN void uhmm__callback_enter(void);
UHMM__HIDDEN void uhmm__callback_leave(void);
/*
 * Record / forget a change whose notifiers the wrappers already ran (the
 * service thread reads the list when the change's events arrive).
 */
UHMM__HIDDEN int uhmm__selfop_begin(struct uhmm_mm *mm, struct uhmm__selfop *op,
				      uintptr_t start, uintptr_t end, unsigned int flags);
UHMM__HIDDEN void uhmm__selfop_end(struct uhmm_mm *mm, struct uhmm__selfop *op);

#endif /* UHMM__CONTEXT_H */
