/* SPDX-License-Identifier: MIT */
/*
 * Internal declarations shared by the library's source files.
 * Nothing here is exported (hidden visibility); see docs/CONCURRENCY.md for
 * the locks and the order they nest in.
 */
#ifndef UHMM_INTERNAL_H
#define UHMM_INTERNAL_H

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "private_fields.h"	/* before every public header */
#include <uhmm/uhmm.h>
#include "compat.h"
#include "itree.h"
#include <uhmm/devmem.h>
#include <uhmm/migrate.h>

#include "hidden.h"

/* The private fields fit the reserved bytes callers compiled against. */
#define UHMM__FITS(type, reserved)					\
	_Static_assert(sizeof(((type *)0)->reserved) ==			\
		       sizeof(type) - offsetof(type, reserved),		\
		       #type ": private fields larger than its reserved bytes")
UHMM__FITS(struct uhmm_page, uhmm_reserved);
UHMM__FITS(struct uhmm_devmem, uhmm_reserved);
UHMM__FITS(struct uhmm_interval_notifier, uhmm_reserved);
UHMM__FITS(struct uhmm_migrate_vma, uhmm_reserved);
_Static_assert(sizeof(struct uhmm_page) == 40, "README: 40 bytes per device page");

#define UHMM_MIN(a, b) ((a) < (b) ? (a) : (b))
#define UHMM_MAX(a, b) ((a) > (b) ? (a) : (b))
#define UHMM_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* ---- log.c: errors and messages -------------------------------------- */
/* Record a reason for the calling thread and return -err. */
UHMM_HIDDEN int uhmm__err(int err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
UHMM_HIDDEN const char *uhmm__err_text(int err);
UHMM_HIDDEN void uhmm__warn(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));

/* ---- inject.c: the doors failure injection watches (uhmm/inject.h) ---- */
/*
 * The library's allocations: never call malloc/calloc/realloc/free (or
 * anything that does, such as stdio) directly.  The memory is the
 * library's own (ownmem.c), never the application's heap, which may sit
 * in device memory or be frozen by a migration (docs/CONCURRENCY.md,
 * "Frozen pages"); free it with uhmm__free().
 */
UHMM_HIDDEN void *uhmm__malloc(size_t n);
UHMM_HIDDEN void *uhmm__calloc(size_t n, size_t size);
UHMM_HIDDEN void *uhmm__realloc(void *old, size_t n);
UHMM_HIDDEN void uhmm__free(void *p);
/* ownmem.c: the allocator behind them (no failure injection). */
UHMM_HIDDEN void *uhmm__own_malloc(size_t n);
UHMM_HIDDEN void *uhmm__own_calloc(size_t n, size_t size);
UHMM_HIDDEN void *uhmm__own_realloc(void *old, size_t n);
/* ioctl(2) on the userfaultfd: never call ioctl on it directly. */
UHMM_HIDDEN int uhmm__uffd_ioctl(int fd, unsigned long req, void *arg);

/* ---- features.c ------------------------------------------------------- */
UHMM_HIDDEN const struct uhmm_sysinfo *uhmm__sysinfo(void);
static inline bool uhmm__has(unsigned int feat)
{
	return (uhmm__sysinfo()->active & feat) != 0;
}
extern size_t uhmm__page_size UHMM_HIDDEN;
extern unsigned int uhmm__page_shift UHMM_HIDDEN;
/* Open a userfaultfd the way the probe found works; -errno on failure. */
UHMM_HIDDEN int uhmm__uffd_open(uint64_t *features_out);

/* ---- interpose.c: raw system calls that bypass uhmm's wrappers -------- */
UHMM_HIDDEN int uhmm__sys_munmap(void *addr, size_t len);
UHMM_HIDDEN int uhmm__sys_madvise(void *addr, size_t len, int advice);
UHMM_HIDDEN int uhmm__sys_mprotect(void *addr, size_t len, int prot);
UHMM_HIDDEN void *uhmm__sys_mmap(void *addr, size_t len, int prot,
				     int flags, int fd, off_t off);
/* Bumped whenever the mappings may have changed (vma cache generation). */
extern atomic_ulong uhmm__as_gen UHMM_HIDDEN;

/* ---- ptable.c: the sparse table of special page entries --------------- */
/*
 * An entry is one 64-bit word per page, 0 when uhmm holds nothing special
 * for the page.  Readers use atomic loads and take no lock; writers change
 * an entry with compare-and-swap.  Interior nodes are never freed while the
 * context lives, so a reader can walk without a lock.
 */
#define UHMM_PTE_TYPE_MASK	UINT64_C(0x7)
#define UHMM_PTE_DEVICE		UINT64_C(1)	/* device-private page */
#define UHMM_PTE_MIGRATING	UINT64_C(2)	/* frozen by a migration */
#define UHMM_PTE_EXCLUSIVE	UINT64_C(3)	/* device-exclusive */
#define UHMM_PTE_BUSY		UINT64_C(4)	/* the service thread is filling it */
#define UHMM_PTE_WRITE		UINT64_C(0x8)	/* CPU mapping was writable */
#define UHMM_PTE_SOFT_DIRTY	UINT64_C(0x10)
#define UHMM_PTE_GONE		UINT64_C(0x20)	/* unmapped during a migration */
#define UHMM_PTE_PAYLOAD_SHIFT	8

static inline uint64_t uhmm__pte_payload(uint64_t e)
{
	return e >> UHMM_PTE_PAYLOAD_SHIFT;
}

struct uhmm__ptable {
	_Atomic(void *) *top;		/* lazily mapped top level */
	size_t top_entries;
	atomic_long nr_entries;		/* non-zero leaf entries */
	atomic_long nr_nodes;		/* nodes allocated (for accounting) */
};

UHMM_HIDDEN int uhmm__ptable_init(struct uhmm__ptable *pt);
UHMM_HIDDEN void uhmm__ptable_destroy(struct uhmm__ptable *pt);
/* Entry for @addr, 0 if none. Lock free. */
UHMM_HIDDEN uint64_t uhmm__ptable_get(struct uhmm__ptable *pt, uintptr_t addr);
/* Pointer to the slot for @addr, allocating nodes; NULL on -ENOMEM. */
UHMM_HIDDEN _Atomic uint64_t *uhmm__ptable_slot(struct uhmm__ptable *pt,
						   uintptr_t addr, bool alloc);
/* CAS an entry; keeps nr_entries right.  True on success. */
UHMM_HIDDEN bool uhmm__ptable_cmpxchg(struct uhmm__ptable *pt,
					 _Atomic uint64_t *slot,
					 uint64_t *old, uint64_t new_val);
/* Call @fn for every non-zero entry in [start, end). Stops on non-zero return. */
typedef int (*uhmm__ptable_fn)(void *arg, uintptr_t addr, _Atomic uint64_t *slot,
			      uint64_t entry);
UHMM_HIDDEN int uhmm__ptable_walk(struct uhmm__ptable *pt, uintptr_t start,
				     uintptr_t end, uhmm__ptable_fn fn, void *arg);
static inline bool uhmm__ptable_empty(struct uhmm__ptable *pt)
{
	return atomic_load_explicit(&pt->nr_entries, memory_order_acquire) == 0;
}

/* ---- vma.c: the process's mappings ------------------------------------ */
#define UHMM_VMA_READ		(1u << 0)
#define UHMM_VMA_WRITE		(1u << 1)
#define UHMM_VMA_EXEC		(1u << 2)
#define UHMM_VMA_SHARED		(1u << 3)
#define UHMM_VMA_FILE		(1u << 4)	/* file-backed (incl. shmem files) */
#define UHMM_VMA_ANON		(1u << 5)	/* private anonymous (heap, stack, mmap) */
#define UHMM_VMA_SHMEM		(1u << 6)	/* shared anonymous / shmem */
#define UHMM_VMA_HUGETLB	(1u << 7)
#define UHMM_VMA_SPECIAL	(1u << 8)	/* IO/PFNMAP-style, vdso... */

struct uhmm__vma {
	uintptr_t start;
	uintptr_t end;
	unsigned int flags;
	unsigned int order;	/* hugetlb: log2(huge page size / page size); else 0 */
};

/*
 * Fill @out with the mappings intersecting [start, end), in address order,
 * at most @max of them; *@n gets how many intersect (may exceed @max).
 * @fresh forces a re-read instead of the cached copy.
 */
UHMM_HIDDEN int uhmm__vma_find(uintptr_t start, uintptr_t end,
				  struct uhmm__vma *out, size_t max, size_t *n,
				  bool fresh);

/*
 * Keep the shared object holding @addr (a driver's callback) loaded for
 * the life of the process, as the kernel keeps a module whose device
 * memory or notifier is in use: a dlclose() of it would leave uhmm's
 * service threads calling unmapped code.  Not while pages are frozen.
 */
UHMM_HIDDEN void uhmm__pin_module(const void *addr);

/* ---- notifier.c ------------------------------------------------------- */
struct uhmm__mni_node {
	struct uhmm__itree_node it;
	struct uhmm_interval_notifier *mni;
	struct uhmm__mni_node *deferred_next;
	bool deferred_add;
	bool free_on_apply;	/* removed from a callback: freed when applied */
};

/*
 * Run every overlapping notifier's invalidate callback for
 * [start, end) and return when all have returned.
 */
UHMM_HIDDEN void uhmm__invalidate(struct uhmm_mm *mm, uintptr_t start,
				     uintptr_t end, enum uhmm_notify_event ev,
				     unsigned int flags, const void *owner);
/*
 * The two halves, for a change made in between (the kernel's
 * invalidate_range_start / _end): from start until end the sequence stays
 * odd, so uhmm_interval_read_begin() on a notifier that was told waits until
 * the change is really done.  start returns false (and end must not be
 * called) when no notifier overlaps.
 */
UHMM_HIDDEN bool uhmm__invalidate_start(struct uhmm_mm *mm, uintptr_t start,
					   uintptr_t end, enum uhmm_notify_event ev,
					   unsigned int flags, const void *owner);
UHMM_HIDDEN void uhmm__invalidate_end(struct uhmm_mm *mm);
/* True if some notifier overlaps [start, end). */
UHMM_HIDDEN bool uhmm__notifier_overlaps(struct uhmm_mm *mm, uintptr_t start,
					    uintptr_t end);
/* Teardown: RELEASE every notifier and detach it. */
UHMM_HIDDEN void uhmm__notifier_release_all(struct uhmm_mm *mm);

/* ---- mm.c: the context ------------------------------------------------ */
enum uhmm__mm_state { UHMM_MM_DEAD = 0, UHMM_MM_LIVE, UHMM_MM_TEARDOWN };

/* What the service thread skips for events inside a selfop's range. */
#define UHMM_SELFOP_NOTIFIED	(1u << 0)	/* notifiers already ran */
#define UHMM_SELFOP_INTERNAL	(1u << 1)	/* uhmm's own change: ignore */
#define UHMM_SELFOP_KEEP_DEVICE	(1u << 2)	/* MADV_FREE: device pages stay */
/*
 * Allocated (uhmm__malloc), never ended by its maker: the worker frees it
 * at the first event it handles once every batch up to @done_seq (the
 * event read sequence after the change returned; 0 while it runs) is
 * processed.  For a change the worker itself makes, which cannot wait for
 * its own events (wpmarker.c).
 */
#define UHMM_SELFOP_ONESHOT	(1u << 3)

struct uhmm__selfop {
	uintptr_t start;
	uintptr_t end;
	unsigned int flags;
	unsigned long done_seq;	/* UHMM_SELFOP_ONESHOT only */
	struct uhmm__selfop *next;
};

#define UHMM_MAX_POOLS 256
#define UHMM_RETRY_MAX 256

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
	uintptr_t *split;
	size_t nsplit, split_cap;

	/* Special entries. */
	struct uhmm__ptable ptable;

	/* Device memory pools by id (devmem.c); pool_lock guards the table. */
	pthread_mutex_t pool_lock;
	struct uhmm_devmem *pools[UHMM_MAX_POOLS];

	/*
	 * Migrations hold migrate_lock for reading from setup to finalize;
	 * fork holds it for writing while it brings device pages home.
	 * mig_cond is broadcast (under mig_lock) by every finalize, for
	 * threads waiting for a range to have no migration in flight.
	 */
	pthread_rwlock_t migrate_lock;
	pthread_mutex_t mig_lock;
	pthread_cond_t mig_cond;

	/* The internal pool for device-exclusive pages (exclusive.c). */
	pthread_mutex_t excl_lock;
	struct uhmm_devmem *excl_pool;

	/* Faults the service thread must retry after reading events. */
	struct uffd_msg retry[UHMM_RETRY_MAX];
	size_t nretry;
};

UHMM_HIDDEN extern struct uhmm_mm uhmm__the_mm;
/* Take a user reference if the context is live; NULL otherwise. Lock free. */
UHMM_HIDDEN struct uhmm_mm *uhmm__mm_tryget(void);
/* True on uhmm's service thread, or inside an invalidate callback. */
UHMM_HIDDEN bool uhmm__in_callback(void);
extern __thread int uhmm__callback_depth UHMM_HIDDEN;
extern __thread bool uhmm__is_service_thread UHMM_HIDDEN;

/* ---- service.c -------------------------------------------------------- */
UHMM_HIDDEN int uhmm__service_start(struct uhmm_mm *mm);
UHMM_HIDDEN void uhmm__service_stop(struct uhmm_mm *mm);
UHMM_HIDDEN void uhmm__service_free_stack(struct uhmm_mm *mm);
/* Wait until every uffd event read so far has been processed. */
UHMM_HIDDEN void uhmm__events_sync(struct uhmm_mm *mm);
/*
 * Before uhmm looks at or creates state for addresses (a migration's
 * setup, a device-range migration, a range fault): wait until no event is
 * pending, not even one not read yet, and every event read is processed,
 * so that the unmap of the addresses' previous tenant is applied before
 * anything of a new one exists; skipped while this thread holds
 * migrate_lock (docs/CONCURRENCY.md, rule 4).
 */
UHMM_HIDDEN void uhmm__events_catch_up(struct uhmm_mm *mm);
/* Record / forget a change whose notifiers the wrappers already ran. */
UHMM_HIDDEN int uhmm__selfop_begin(struct uhmm_mm *mm,
				      struct uhmm__selfop *op,
				      uintptr_t start, uintptr_t end,
				      unsigned int flags);
/* Retry an ioctl that fails with EAGAIN while a uffd event is pending. */
UHMM_HIDDEN void uhmm__eagain_backoff(struct uhmm_mm *mm);
UHMM_HIDDEN void uhmm__selfop_end(struct uhmm_mm *mm, struct uhmm__selfop *op);
/* Best-effort write-protect-mode registration of [start, end) for events. */
UHMM_HIDDEN void uhmm__register_for_events(struct uhmm_mm *mm,
					      uintptr_t start, uintptr_t end);

/* ---- devmem.c / migrate.c --------------------------------------------- */
extern __thread bool uhmm__holds_migrate_lock UHMM_HIDDEN;
/* The last hard error installing a page back in system memory (this thread). */
extern __thread int uhmm__install_err UHMM_HIDDEN;
/* While serving a CPU fault, finalize leaves waking to the fault path. */
struct uhmm__wake_defer {
	bool active;
	uintptr_t start;
	uintptr_t end;
};
extern __thread struct uhmm__wake_defer uhmm__wake_defer UHMM_HIDDEN;
/* The window the last CPU fault on this thread offered (start/end used). */
extern __thread struct uhmm__wake_defer uhmm__last_fault_window UHMM_HIDDEN;
/* The page a device pfn names, or NULL. */
UHMM_HIDDEN struct uhmm_page *uhmm__pfn_to_page(struct uhmm_mm *mm, uint64_t pfn);
/* A device-private entry's mapping is gone: drop its page. */
UHMM_HIDDEN void uhmm__drop_device_entry(struct uhmm_mm *mm, uint64_t e);
/* A reference on a device page only if it is in use (found with nothing held). */
UHMM_HIDDEN bool uhmm__page_tryget(struct uhmm_page *page);
/* Reference and lock the device page still mapped at @addr, or hold nothing. */
UHMM_HIDDEN bool uhmm__page_grab(struct uhmm_mm *mm, struct uhmm_page *page,
				    uintptr_t addr);
/*
 * Fault page @a in from this thread as a CPU access would (a write is an
 * atomic add of zero), in assembly where it can be: not an access to the
 * application's data as a race detector sees it.  src/range.c.
 */
UHMM_HIDDEN void uhmm__touch_one(uintptr_t a, bool write);
/* Serve a CPU fault on a device-private entry (service thread). */
UHMM_HIDDEN int uhmm__fault_device(struct uhmm_mm *mm, uintptr_t page, uint64_t e,
				      bool write);
/* Bring every device-resident page home (fork, teardown); 0 or -errno. */
UHMM_HIDDEN int uhmm__evict_all(struct uhmm_mm *mm, struct uhmm_devmem *only);
UHMM_HIDDEN int uhmm__devmem_add(struct uhmm_mm *mm, struct uhmm_devmem *pgmap,
				    bool internal);
UHMM_HIDDEN void uhmm__pool_detach(struct uhmm_mm *mm, struct uhmm_devmem *pgmap);
/* exclusive.c: the internal pool that holds device-exclusive pages. */
UHMM_HIDDEN bool uhmm__is_exclusive_pool(struct uhmm_mm *mm, const struct uhmm_devmem *pgmap);
UHMM_HIDDEN void uhmm__exclusive_teardown(struct uhmm_mm *mm);
/* Internal migrate flag: invalidate with UHMM_NOTIFY_EXCLUSIVE, not MIGRATE. */
#define UHMM__MIGRATE_EXCLUSIVE (1u << 31)
/* Teardown: detach all pools. */
UHMM_HIDDEN void uhmm__devmem_detach_all(struct uhmm_mm *mm);
/* Wait until no migration holds a page in [start, end). */
UHMM_HIDDEN void uhmm__wait_migrations(struct uhmm_mm *mm, uintptr_t start,
					  uintptr_t end);
/* Move special entries of [from, from + len) to [to, to + len) (mremap). */
UHMM_HIDDEN void uhmm__ptable_move(struct uhmm_mm *mm, uintptr_t from,
				      uintptr_t to, size_t len);
/* [start, end) was unmapped: its cut points mean nothing any more. */
UHMM_HIDDEN void uhmm__forget_splits(struct uhmm_mm *mm, uintptr_t start, uintptr_t end);
/* Did uhmm's registration cut a mapping at @addr? */
UHMM_HIDDEN bool uhmm__is_our_split(struct uhmm_mm *mm, uintptr_t addr);
/* Unmap the staging cache of recycled system pages (context teardown). */
UHMM_HIDDEN void uhmm__staging_cache_drop(struct uhmm_mm *mm);
/* ... and the entries whose pages went to @pool (the pool is being removed). */
UHMM_HIDDEN void uhmm__staging_cache_drop_pool(struct uhmm_mm *mm,
						  const struct uhmm_devmem *pool);
/* Make sure [start, end) is registered for MISSING faults. */
UHMM_HIDDEN int uhmm__register_missing(struct uhmm_mm *mm, uintptr_t start,
					  uintptr_t end);

/* ---- pagestate.c ------------------------------------------------------ */
/*
 * Internal bits of uhmm__page_state()'s words, above the public UHMM_PS_*
 * (uhmm_page_state() clears them): the huge page order of a hugetlbfs
 * mapping, on every page of it, present or not.
 */
#define UHMM__PS_ORDER_SHIFT	24
#define UHMM__PS_ORDER_MASK	(0x1fu << UHMM__PS_ORDER_SHIFT)

/*
 * The page-state walk shared by uhmm_page_state() and uhmm_range_fault():
 * fill @out[i] with UHMM_PS_* bits of page @start + i * page size.  When
 * @entries is not NULL, it receives each page's special entry (or 0).
 */
UHMM_HIDDEN int uhmm__page_state(struct uhmm_mm *mm, uintptr_t start,
				    size_t npages, uint32_t *out,
				    uint64_t *entries, bool fresh_vmas);

/*
 * The snapshot words of uhmm_range_fault() (include/uhmm/range.h) for
 * [start, +npages) in one pass over pagemap: VALID, WRITE, ZERO and the
 * huge order of present pages, ERROR where there is no usable mapping, 0
 * elsewhere.  For each page with a special entry in a usable mapping,
 * @special(@arg, &pfns[i], entry, UHMM_PS_* bits of the mapping) may change
 * its word.  Return: 0, 1 when it cannot (no PAGEMAP_SCAN: use
 * uhmm__page_state()), or a negative errno.
 */
UHMM_HIDDEN int uhmm__page_pfns(struct uhmm_mm *mm, uintptr_t start, size_t npages,
				   uint64_t *pfns,
				   void (*special)(void *arg, uint64_t *pfn, uint64_t e,
						   uint32_t vma_bits),
				   void *arg);

/*
 * From pagemap alone: out[i] = UHMM__PM_PRESENT when page i is present,
 * UHMM__PM_SWAPPED when it is swapped out (a swap entry: data),
 * UHMM__PM_MARKER for a userfaultfd write-protect marker (no data: a
 * device page's picture, or a stale one; wpmarker.c), UHMM__PM_NONE when
 * the entry is empty.  Only for memory uhmm registered (where nothing else
 * write-protects a page, so PM_SWAP with PM_UFFD_WP is a marker).
 */
#define UHMM__PM_NONE		0
#define UHMM__PM_PRESENT	1
#define UHMM__PM_SWAPPED	2
#define UHMM__PM_MARKER		3
UHMM_HIDDEN int uhmm__pagemap_has_data(uintptr_t start, size_t npages, uint8_t *out);
/*
 * The span [*lo, *hi) from the first to the last page of [start, end) that
 * a huge page maps (PMD-mapped THP): 0, 1 when none is, -1 when it cannot
 * be told (no PAGEMAP_SCAN).
 */
UHMM_HIDDEN int uhmm__pagemap_huge_span(uintptr_t start, uintptr_t end, uintptr_t *lo,
					   uintptr_t *hi);
/* A pagemap entry of memory uhmm registered: is it a uffd-wp marker? */
static inline bool uhmm__pm_is_marker(uint64_t pm)
{
	return (pm & (PM_PRESENT | PM_SWAP | PM_UFFD_WP)) == (PM_SWAP | PM_UFFD_WP);
}

/* ---- wpmarker.c: device-resident pages shown as swap entries ---------- */
/*
 * Are uffd-wp markers put on device-resident pages (WP_UNPOPULATED and
 * uffd write-protect active, and the context's userfaultfd has both)?
 */
UHMM_HIDDEN bool uhmm__markers_on(const struct uhmm_mm *mm);
/*
 * Put markers on the empty entries of [start, end) (pages uhmm holds
 * MIGRATING and is about to commit as device pages), or drop the markers
 * of [start, end) without waking (before a UFFDIO_MOVE installs there, or
 * a stale one).  Best effort: 0 or -errno, and nothing depends on the
 * result (wpmarker.c).  No-ops when markers are off.
 */
UHMM_HIDDEN int uhmm__marker_set(struct uhmm_mm *mm, uintptr_t start, uintptr_t end);
UHMM_HIDDEN int uhmm__marker_clear(struct uhmm_mm *mm, uintptr_t start, uintptr_t end);
/*
 * Before a UFFDIO_MOVE from staging at @src installs [start, end), pages
 * uhmm holds MIGRATING whose entries may be markers: free the page tables
 * the markers needed under the whole 2 MiB blocks whose staging is a huge
 * page, so it can be moved in as one PMD (a destination PMD with a page
 * table splits it).
 */
UHMM_HIDDEN void uhmm__marker_make_pmd_room(struct uhmm_mm *mm, uintptr_t start,
					       uintptr_t end, uintptr_t src);

static inline uintptr_t uhmm__page_align_down(uintptr_t a)
{
	return a & ~(uintptr_t)(uhmm__page_size - 1);
}
static inline bool uhmm__page_aligned(uintptr_t a)
{
	return (a & (uhmm__page_size - 1)) == 0;
}

#endif /* UHMM_INTERNAL_H */
