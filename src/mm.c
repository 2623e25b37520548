// SPDX-License-Identifier: MIT
/*
 * The process context: creation, reference counting, teardown, fork.
 *
 * There is one context per process, so its structure is a static object
 * that is never freed; only its contents are created and torn down.  That
 * lets the libc wrappers (interpose.c) take a reference with one atomic
 * compare-and-swap and no lock, even while another thread tears the context
 * down: a wrapper that loses the race sees users == 0 and goes straight to
 * the system call.
 *
 * users: references from uhmm_mm_get() and from wrappers in flight.  The
 * context is LIVE while users > 0; the put that drops it to 0 takes
 * life_lock and tears down, unless a uhmm_mm_get() revived it meanwhile.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "base.h"
#include "devmem_priv.h"
#include "exclusive_priv.h"
#include "features_priv.h"
#include "inject_priv.h"
#include "log.h"
#include "migrate_lock.h"
#include "mm_priv.h"
#include "notifier_priv.h"
#include "ownmem.h"
#include "pagemap.h"
#include "pagestate_priv.h"
#include "ptable.h"
#include "service.h"
#include "sigblock.h"
#include "uffd.h"
#include "staging.h"
#include "vma.h"


/* Serializes creation and teardown of the context; outermost lock. */
static pthread_mutex_t life_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
/* The forking thread holds migrate_lock from prepare to parent/child. */
static __thread bool fork_held_migrate;
/* atfork_prepare left the fork invalidation in progress (uhmm__invalidate_hold) */
static __thread bool fork_held_inv;
/*
 * This process: set at load and in a fork child.  A vfork() child (or one a
 * raw clone made, bypassing pthread_atfork) shares or copies the parent's
 * context without being the process it was made for, and sees another pid.
 */
static pid_t proc_pid;

static void proc_pid_init(void)
{
	proc_pid = getpid();
}

/* At load, so that a fork before the first uhmm_mm_get() is known too. */
__attribute__((constructor)) static void proc_pid_setup(void)
{
	proc_pid_init();
	pthread_atfork(NULL, NULL, proc_pid_init);
}

struct uhmm_mm *uhmm__mm_tryget(void)
{
	struct uhmm_mm *mm = &uhmm__the_mm;
	int n = atomic_load_explicit(&mm->users, memory_order_acquire);

	while (n > 0) {
		if (atomic_compare_exchange_weak_explicit(&mm->users, &n, n + 1,
							  memory_order_acq_rel,
							  memory_order_acquire))
			return mm;
	}
	return NULL;
}

static void atfork_register(void);

static int mm_create(struct uhmm_mm *mm)
{
	int ret;

	ret = uhmm__uffd_open(&mm->uffd_features);
	if (ret < 0)
		return ret;
	mm->uffd = ret;
	mm->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (mm->stop_fd < 0) {
		ret = uhmm__err(errno, "eventfd failed");
		goto err_uffd;
	}
	ret = uhmm__ptable_init(&mm->ptable);
	if (ret)
		goto err_stop;
	pthread_mutex_lock(&mm->nlock);
	uhmm__itree_init(&mm->tree);
	mm->deferred = NULL;
	mm->active_invalidate = 0;
	pthread_mutex_unlock(&mm->nlock);
	atomic_store(&mm->ev_read, 0);
	atomic_store(&mm->ev_done, 0);
	atomic_store(&mm->ev_read_returned, 0);
	uhmm__uffd_wake_log_reset(mm);
	mm->selfops = NULL;
	/* An optimisation only: without it small fault-backs map their staging. */
	if (uhmm__bounce_create(mm))
		uhmm__warn("no bounce area: small device->system migrations map staging");
	ret = uhmm__service_start(mm);
	if (ret)
		goto err_ptable;
	mm->generation++;
	return 0;

err_ptable:
	uhmm__bounce_destroy(mm);
	uhmm__ptable_destroy(&mm->ptable);
err_stop:
	close(mm->stop_fd);
	mm->stop_fd = -1;
err_uffd:
	close(mm->uffd);
	mm->uffd = -1;
	return ret;
}

static void mm_teardown(struct uhmm_mm *mm)
{
	/* Device-resident data comes home before anything goes away. */
	if (uhmm__evict_all(mm, NULL))
		uhmm__warn("teardown: some device pages could not be brought home");
	uhmm__staging_cache_drop(mm);
	uhmm__sarea_destroy(mm);	/* after the cache's entries gave their slots back */
	uhmm__bounce_destroy(mm);
	uhmm__exclusive_teardown(mm);	/* its internal pool first */
	uhmm__devmem_detach_all(mm);
	uhmm__notifier_release_all(mm);
	uhmm__service_stop(mm);
	close(mm->uffd);		/* unregisters every range */
	mm->uffd = -1;
	uhmm__service_free_stack(mm);
	close(mm->stop_fd);
	mm->stop_fd = -1;
	uhmm__ptable_destroy(&mm->ptable);
	uhmm__free(mm->remap_log);	/* no migration is in flight */
	mm->remap_log = NULL;
	mm->remap_n = mm->remap_cap = 0;
	mm->remap_users = 0;
}

int uhmm_mm_get(struct uhmm_mm **mmp)
{
	struct uhmm_mm *mm = &uhmm__the_mm;
	int ret = 0;

	if (!mmp)
		return uhmm__err(EINVAL, "uhmm_mm_get: NULL mmp");
	if (uhmm__in_callback())
		return uhmm__err(EDEADLK, "uhmm_mm_get called from a uhmm callback");
	if (getpid() != proc_pid)
		return uhmm__err(ECHILD, "uhmm_mm_get in a vfork() child (or one made by a raw "
				 "clone): the context belongs to the parent");
	*mmp = NULL;
	if (uhmm__mm_tryget()) {
		*mmp = mm;
		return 0;
	}
	/* life_lock and the context's creation: no handler meanwhile (sigblock.h). */
	uhmm__sig_enter();
	pthread_once(&atfork_once, atfork_register);
	pthread_mutex_lock(&life_lock);
	if (atomic_load(&mm->state) == UHMM__MM_LIVE) {
		/* Revive a context whose last put is waiting for life_lock. */
		atomic_fetch_add(&mm->users, 1);
	} else {
		ret = mm_create(mm);
		if (!ret) {
			atomic_store(&mm->state, UHMM__MM_LIVE);
			atomic_store_explicit(&mm->users, 1, memory_order_release);
		}
	}
	pthread_mutex_unlock(&life_lock);
	uhmm__sig_leave();
	if (!ret)
		*mmp = mm;
	return ret;
}

void uhmm_mm_put(struct uhmm_mm *mm)
{
	if (!mm)
		return;
	if (atomic_fetch_sub_explicit(&mm->users, 1, memory_order_acq_rel) != 1)
		return;
	/* The teardown brings device pages home and calls callbacks (sigblock.h). */
	uhmm__sig_enter();
	pthread_mutex_lock(&life_lock);
	if (atomic_load(&mm->users) == 0 &&
	    atomic_load(&mm->state) == UHMM__MM_LIVE) {
		/*
		 * Device-resident pages (the exclusive pool's: a driver
		 * returns its own before its last put) come home while
		 * migration still accepts the context; once it is marked
		 * TEARDOWN their data would be lost.
		 */
		uhmm__evict_all(mm, NULL);
		atomic_store(&mm->state, UHMM__MM_TEARDOWN);
		mm_teardown(mm);
		atomic_store(&mm->state, UHMM__MM_DEAD);
	}
	pthread_mutex_unlock(&life_lock);
	uhmm__sig_leave();
}

/*
 * A pool holds a reference to the context (uhmm_devmem_add): its removal
 * brings its pages home, takes it out of the table, drops its staging
 * cache entries and puts the reference, so it lives with the lifetime.
 */
int uhmm_devmem_remove(struct uhmm_devmem *pgmap)
{
	struct uhmm_mm *mm;
	int ret;

	if (!uhmm__pool_added(&uhmm__the_mm, pgmap))
		return uhmm__err(EINVAL, "devmem remove: pool not added");
	if (uhmm__in_callback())
		return uhmm__err(EDEADLK, "devmem remove from a uhmm callback");
	mm = pgmap->mm;
	/*
	 * An unmap behind the wrappers (a raw munmap, libc's own in free())
	 * that returned before this call has freed its device pages in the
	 * kernel; here its UNMAP event may not be applied yet, and the
	 * eviction would send those pages' migrate_to_ram to addresses that
	 * are no longer mapped and fail the removal with its -EINVAL (round 6
	 * hunt, test_remove_unmapped).  So apply every event first, as a
	 * migration's setup does (CONCURRENCY.md rule 4); not under
	 * migrate_lock, which the worker may need to apply them.
	 */
	uhmm__events_catch_up(mm);
	/*
	 * The eviction below runs migrate_to_ram with a device page locked and
	 * migrate_lock held for writing: no handler may run meanwhile (sigblock.h).
	 */
	uhmm__sig_enter();
	/*
	 * As fork does: no CPU fault may still be using a page of the pool
	 * (the fault path holds migrate_lock for reading until its last put).
	 */
	uhmm__migrate_lock_write(mm);
	ret = uhmm__evict_all(mm, pgmap);
	if (!ret)
		uhmm__pool_detach(mm, pgmap);
	uhmm__migrate_unlock(mm);
	if (!ret)
		uhmm__staging_cache_drop_pool(mm, pgmap);	/* its pages are all home */
	if (!ret)
		uhmm_mm_put(mm);
	uhmm__sig_leave();
	if (ret)
		return uhmm__err(-ret, "devmem remove: %ld device pages could not be brought "
				 "home; the pool stays added",
				 atomic_load(&pgmap->nr_resident));
	return 0;
}

/*
 * fork(): the kernel write-protects the parent's private writable pages
 * (they become copy-on-write), which a device mirror must see as an
 * invalidation; the child starts with no context at all, as a child mm
 * starts with no notifiers.
 */
static void atfork_prepare(void)
{
	struct uhmm_mm *mm = uhmm__mm_tryget();

	/*
	 * From here to atfork_parent / atfork_child the forking thread holds
	 * migrate_lock, life_lock and nlock, and the eviction runs device
	 * callbacks: no asynchronous handler may run (sigblock.h).  The child
	 * inherits the depth and the saved mask, and leaves the same way.
	 */
	uhmm__sig_enter();
	if (mm) {
		/*
		 * The child must see every page's data: bring device-resident
		 * pages home, and hold new migrations off until the fork is done.
		 */
		uhmm__migrate_lock_write(mm);
		if (uhmm__evict_all(mm, NULL))
			uhmm__warn("fork: some device pages could not be brought home; "
				   "the child reads zeroes there");
		/* Held until the parent and child handlers, but not acted under. */
		uhmm__migrate_lock_assume(false);
		fork_held_migrate = true;
		uhmm_mm_put(mm);
	}
	pthread_mutex_lock(&life_lock);
	/* Under life_lock: no teardown runs until the parent handler. */
	mm = &uhmm__the_mm;
	if (atomic_load(&mm->state) == UHMM__MM_LIVE && uhmm__notifier_overlaps(mm, 0, UINTPTR_MAX)) {
		/* Every mapping once, 64 at a time (one look-up each). */
		struct uhmm__vma v[64];
		uintptr_t cur = 0;
		bool fresh = true;
		size_t n = 0;

		/*
		 * The fork invalidation stays in progress until the parent
		 * handler, as the kernel's (dup_mmap) lasts until the page
		 * tables are copied: a range fault that overlaps it fails its
		 * retry check and uhmm_interval_read_begin() waits for its end,
		 * so no mirror commits a writable translation in the window
		 * between the callbacks and the clone (CONCURRENCY.md rule 8).
		 */
		uhmm__invalidate_hold(mm);
		fork_held_inv = true;
		while (!uhmm__vma_find(cur, UINTPTR_MAX, v, UHMM__ARRAY_SIZE(v), &n, fresh)) {
			for (size_t i = 0; i < UHMM__MIN(n, UHMM__ARRAY_SIZE(v)); i++) {
				unsigned int f = v[i].flags;

				if ((f & UHMM__VMA_WRITE) && !(f & UHMM__VMA_SHARED))
					uhmm__invalidate(mm, v[i].start, v[i].end,
							 UHMM_NOTIFY_FORK, 0, NULL);
			}
			if (n <= UHMM__ARRAY_SIZE(v))
				break;
			cur = v[UHMM__ARRAY_SIZE(v) - 1].end;
			fresh = false;	/* the fallback walks one copy */
		}
	}
	pthread_mutex_lock(&uhmm__the_mm.nlock);
}

static void atfork_parent(void)
{
	pthread_mutex_unlock(&uhmm__the_mm.nlock);
	if (fork_held_inv) {
		fork_held_inv = false;
		uhmm__invalidate_unhold(&uhmm__the_mm);	/* takes nlock */
	}
	pthread_mutex_unlock(&life_lock);
	if (fork_held_migrate) {
		fork_held_migrate = false;
		pthread_rwlock_unlock(&uhmm__the_mm.migrate_lock);
	}
	uhmm__sig_leave();
}


static void atfork_child(void)
{
	struct uhmm_mm *mm = &uhmm__the_mm;
	pthread_mutexattr_t a;

	pthread_mutexattr_init(&a);
	pthread_mutex_init(&life_lock, &a);
	pthread_mutex_init(&mm->nlock, &a);
	pthread_mutex_init(&mm->ev_lock, &a);
	pthread_mutex_init(&mm->selfop_lock, &a);
	pthread_mutex_init(&mm->reg_lock, &a);
	pthread_mutex_init(&mm->pool_lock, &a);
	pthread_mutex_init(&mm->excl_lock, &a);
	pthread_mutex_init(&mm->mig_lock, &a);
	pthread_mutex_init(&mm->remap_lock, &a);
	pthread_rwlock_init(&mm->migrate_lock, NULL);
	pthread_rwlock_init(&mm->as_lock, NULL);
	fork_held_migrate = false;
	fork_held_inv = false;	/* the child's notifier state is reset below */
	pthread_cond_init(&mm->mig_cond, NULL);
	pthread_cond_init(&mm->ncond, NULL);
	pthread_cond_init(&mm->ev_cond, NULL);
	pthread_mutexattr_destroy(&a);

	uhmm__vma_atfork_child();
	uhmm__pagemap_atfork_child();
	uhmm__pagestate_atfork_child();
	if (atomic_load(&mm->state) != UHMM__MM_DEAD) {
		/* The parent's service thread does not exist here. */
		uhmm__notifier_atfork_child(mm);
		if (mm->uffd >= 0)
			close(mm->uffd);
		if (mm->stop_fd >= 0)
			close(mm->stop_fd);
		mm->uffd = -1;
		mm->stop_fd = -1;
		mm->service_started = false;
		uhmm__service_atfork_child(mm);
		mm->msgq = NULL;	/* the parent's; its threads are not here */
		mm->reader_stack = NULL;
		mm->bounce = NULL;	/* MADV_DONTFORK: not in this process */
		uhmm__ptable_destroy(&mm->ptable);
		mm->selfops = NULL;
		mm->nretry = 0;
		/* The parent's device pools are not this process's. */
		memset(mm->pools, 0, sizeof(mm->pools));
		mm->excl_pool = NULL;
	}
	atomic_store(&mm->users, 0);
	atomic_store(&mm->state, UHMM__MM_DEAD);
	uhmm__sig_leave();	/* entered in atfork_prepare, on the parent's thread */
}

static void atfork_register(void)
{
	pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

/* Process exit: tell every notifier, as the kernel's exit_mmap does. */
__attribute__((destructor)) static void uhmm_exit(void)
{
	struct uhmm_mm *mm = uhmm__mm_tryget();

	if (!mm)
		return;
	uhmm__notifier_release_all(mm);
	atomic_fetch_sub(&mm->users, 1);
}

int uhmm_mm_stats(struct uhmm_mm *mm, struct uhmm_mm_stats *out)
{
	struct uhmm_mm_stats s = { 0 };

	if (!mm || !out)
		return uhmm__err(EINVAL, "mm stats: NULL %s", mm ? "output" : "context");
	if (mm != &uhmm__the_mm || atomic_load(&mm->state) != UHMM__MM_LIVE)
		return uhmm__err(EINVAL, "mm stats: not a live uhmm context");
	s.special_entries = (uint64_t)atomic_load(&mm->ptable.nr_entries);
	s.entry_table_bytes = (uint64_t)atomic_load(&mm->ptable.nr_nodes) * 4096;
	s.notifiers = (uint64_t)atomic_load(&mm->nr_notifiers);
	uhmm__sig_enter();	/* pool_lock (sigblock.h) */
	pthread_mutex_lock(&mm->pool_lock);
	for (unsigned int id = 1; id < UHMM__MAX_POOLS; id++) {
		/* pools[] is only ever accessed atomically (src/devmem.c). */
		struct uhmm_devmem *pgmap = __atomic_load_n(&mm->pools[id], __ATOMIC_ACQUIRE);

		if (!pgmap)
			continue;
		s.pools++;
		s.device_pages += (uint64_t)atomic_load(&pgmap->nr_resident);
		s.page_desc_bytes += pgmap->nr_pages * sizeof(struct uhmm_page);
		if (pgmap->folio_meta)	/* UHMM_DEVMEM_COMPOUND: a word per page */
			s.page_desc_bytes += pgmap->nr_pages * sizeof(*pgmap->folio_meta);
	}
	pthread_mutex_unlock(&mm->pool_lock);
	uhmm__sig_leave();
	*out = s;
	return 0;
}
