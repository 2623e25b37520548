/* SPDX-License-Identifier: MIT */
/**
 * DOC: the memory-policy layer (libuhmm_policy)
 *
 * What NVIDIA's UVM, AMD's SVM and Intel's drm_gpusvm put on top of HMM,
 * once, for any driver built on uhmm: range attributes (preferred
 * location, accessed-by, read-mostly, migration granularity, the tenant
 * whose budget a range counts against), explicit asynchronous prefetch
 * with completion, discard, and the automatic policies: density prefetch,
 * thrashing detection and mitigation, LRU eviction of 2 MiB blocks under
 * capacity pressure, read-mostly duplication with collapse on write, and
 * per-tenant budgets with eviction priority.  Every range's counters
 * (residency by location, faults by side, pages migrated each way, thrash
 * events, evictions) can be read at any time.
 *
 * The layer is built only on uhmm's public mechanism API (interval
 * notifiers, range fault, the libc calls uhmm wraps) and on what each
 * driver gives it in struct uhmm_policy_dev_desc: how to migrate a range
 * to its memory and back, how to drop its page-table entries, its owner
 * token and its capacity.  The driver calls uhmm_policy_device_fault() on
 * a device page-table miss, uhmm_policy_copy_valid() before it installs a
 * read-only copy, and uhmm_policy_cpu_fault() from its migrate_to_ram.
 * simdev adopts it with uhmm_simdev_attach_policy() (<uhmm/simdev.h>).
 *
 * fork: the child's copies of read-mostly ranges are plain writable memory,
 * and the parent's policies cannot be used in the child.
 *
 * Locking: each policy has one lock, a leaf below every driver and uhmm
 * lock (taken inside invalidate callbacks and migrate_to_ram, never held
 * while the layer calls a driver or uhmm), and one mutex per read-mostly
 * range, held while its protection changes (docs/CONCURRENCY.md).  Every
 * call returns 0 (or a count where said) or a negative errno with a
 * reason in uhmm_last_error(); none may be called from an invalidate
 * callback except uhmm_policy_copy_valid() and uhmm_policy_cpu_fault().
 */
#ifndef UHMM_POLICY_H
#define UHMM_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uhmm/mm.h>

#ifdef __cplusplus
extern "C" {
#endif

struct uhmm_policy;
struct uhmm_policy_range;
struct uhmm_policy_req;

#define UHMM_POLICY_MAX_DEVS	8	/* devices per policy */
#define UHMM_POLICY_MAX_TENANTS	16	/* tenants 0 .. 15 */

/* Locations: a device id (0 ..), or these. */
#define UHMM_POLICY_CPU		(-1)	/* system memory */
#define UHMM_POLICY_NONE	(-2)	/* no preference: migrate to the faulting device */

/* Thrashing mitigation (struct uhmm_policy_config.thrash_mitigation). */
#define UHMM_POLICY_THRASH_NONE		0	/* detect and count only */
#define UHMM_POLICY_THRASH_PIN		1	/* pin in system memory; devices map it remotely */
#define UHMM_POLICY_THRASH_THROTTLE	2	/* delay the faulting device, then migrate */

/* struct uhmm_policy_config.flags */
#define UHMM_POLICY_NO_DENSITY	0x1u	/* no density prefetch: only the fault's granule moves */
#define UHMM_POLICY_NO_EVICT	0x2u	/* never evict: a full device maps the rest remotely */

/**
 * struct uhmm_policy_config - policy parameters (zero = default)
 * @density_percent: fetch the rest of an aligned region of a 2 MiB block
 *	(the largest such region, from the granule up to the block) once
 *	more than this share of it is resident or faulted on the device
 *	(default 51, UVM's); above 100: off
 * @thrash_count: migrations of a page that make it thrashing ... (default 3)
 * @thrash_window_ns: ... when they fall within this time (default 500 us)
 * @thrash_mitigation: UHMM_POLICY_THRASH_*
 * @throttle_ns: how long the THROTTLE mitigation delays a device fault on
 *	a thrashing page (default 500 us)
 * @pin_ns: how long a page stays pinned (0: until the range's attributes
 *	are set again or the range is removed)
 * @prefetch_batch: pages an explicit prefetch migrates per call (power of
 *	two, default 512: one 2 MiB block of 4 KiB pages)
 * @flags: UHMM_POLICY_NO_*
 */
struct uhmm_policy_config {
	unsigned int density_percent;
	unsigned int thrash_count;
	uint64_t thrash_window_ns;
	unsigned int thrash_mitigation;
	uint64_t throttle_ns;
	uint64_t pin_ns;
	size_t prefetch_batch;
	unsigned int flags;
};

/**
 * struct uhmm_policy_dev_ops - what the layer asks of a driver
 * @migrate_to_dev: migrate the pages of [@addr, @addr + @npages pages) (inside
 *	one policy range, at most 2 MiB, not crossing a 2 MiB boundary) into
 *	the device's memory; return the pages moved (0 when none could be, the
 *	device being full included) or a negative errno.  Called with no lock
 *	of the layer held, from the thread that called the layer.
 * @migrate_to_sys: migrate the device's pages of the range back; return the
 *	pages moved or a negative errno.  Same context.
 * @unmap: remove the device's page-table entries of the range, and return
 *	only once no device access through them is in flight (the layer then
 *	frees or changes what they pointed at).  Same context, and from the
 *	layer's SIGSEGV handler on a CPU write to a read-mostly page.
 */
struct uhmm_policy_dev_ops {
	long (*migrate_to_dev)(void *drv, uintptr_t addr, size_t npages);
	long (*migrate_to_sys)(void *drv, uintptr_t addr, size_t npages);
	int (*unmap)(void *drv, uintptr_t addr, size_t npages);
};

/**
 * struct uhmm_policy_dev_desc - a device, for uhmm_policy_dev_add()
 * @ops: the driver's operations (all three required)
 * @drv: passed to them
 * @owner: the owner token of the device's memory (struct uhmm_devmem.owner):
 *	the layer reads residency with uhmm_range_fault() snapshots
 * @capacity_pages: device memory the layer may fill (evicting beyond it)
 * @name: for the tool's output (may be NULL)
 */
struct uhmm_policy_dev_desc {
	const struct uhmm_policy_dev_ops *ops;
	void *drv;
	const void *owner;
	size_t capacity_pages;
	const char *name;
};

/**
 * struct uhmm_policy_attr - range attributes
 * @preferred: UHMM_POLICY_NONE (migrate to the device that faults),
 *	UHMM_POLICY_CPU (stay in system memory; devices map it remotely) or a
 *	device id (that device's faults migrate; the others map the pages in
 *	system memory: uhmm devices cannot map each other's memory)
 * @accessed_by: bit i set: device i maps the pages where they are (in
 *	system memory) instead of migrating them
 * @read_mostly: devices reading the range get read-only copies of its pages
 *	in their own memory; the first write (CPU or device) to a granule
 *	drops every copy of it (the data is always right in system memory,
 *	which the CPU keeps write-protected while copies exist)
 * @granularity: pages one device fault migrates at least (a power of two,
 *	at most one 2 MiB block; 0 = 16 pages)
 * @tenant: whose budget the range's device pages count against (0 .. 15)
 */
struct uhmm_policy_attr {
	int preferred;
	uint32_t accessed_by;
	bool read_mostly;
	size_t granularity;
	unsigned int tenant;
};

/**
 * struct uhmm_policy_stats - one range's counters
 * @npages: pages in the range
 * @resident_cpu: pages in no device's memory
 * @resident_dev: pages in each device's memory
 * @copies_dev: read-only copies each device holds (read-mostly)
 * @cpu_faults: CPU faults on the range's device-resident pages
 * @dev_faults: device faults the layer decided, per device
 * @to_dev_pages: pages migrated to devices (faults, density, prefetch)
 * @to_sys_pages: pages migrated back (CPU faults, eviction, prefetch to CPU)
 * @density_pages: pages moved by density prefetch beyond the faulting granule
 * @prefetched_pages: pages moved by explicit prefetch
 * @remote_maps: device faults served in place, without a migration
 * @thrash_events: pages found thrashing
 * @pinned: pages pinned by the PIN mitigation (now)
 * @throttled: device faults delayed by the THROTTLE mitigation
 * @evicted_pages: pages evicted to make room (capacity or budget)
 * @evicted_blocks: 2 MiB blocks those evictions took
 * @duplicated: read-only copies made
 * @collapses: granules whose copies were dropped by a write
 * @discarded: pages discarded (dropped, not migrated back)
 */
struct uhmm_policy_stats {
	uint64_t npages;
	uint64_t resident_cpu;
	uint64_t resident_dev[UHMM_POLICY_MAX_DEVS];
	uint64_t copies_dev[UHMM_POLICY_MAX_DEVS];
	uint64_t cpu_faults;
	uint64_t dev_faults[UHMM_POLICY_MAX_DEVS];
	uint64_t to_dev_pages;
	uint64_t to_sys_pages;
	uint64_t density_pages;
	uint64_t prefetched_pages;
	uint64_t remote_maps;
	uint64_t thrash_events;
	uint64_t pinned;
	uint64_t throttled;
	uint64_t evicted_pages;
	uint64_t evicted_blocks;
	uint64_t duplicated;
	uint64_t collapses;
	uint64_t discarded;
};

/**
 * uhmm_policy_create() - create a policy over a context
 * @mm: the context (a reference is taken)
 * @cfg: parameters (NULL: defaults)
 * @out: the new policy
 *
 * Return: 0; -EINVAL for a NULL @mm or @out, an unknown mitigation or
 * flag, a prefetch batch that is not a power of two; -ENOMEM.
 */
UHMM_API int uhmm_policy_create(struct uhmm_mm *mm, const struct uhmm_policy_config *cfg,
				struct uhmm_policy **out);

/**
 * uhmm_policy_destroy() - remove every range (restoring read-mostly ranges'
 *	protection) and free the policy
 * @pol: the policy (NULL ignored)
 *
 * Waits for queued prefetches.  Call it before the devices are destroyed;
 * device-resident pages stay where they are.
 */
UHMM_API void uhmm_policy_destroy(struct uhmm_policy *pol);

/**
 * uhmm_policy_dev_add() - add a device
 * @pol: the policy
 * @desc: the device (copied)
 *
 * Return: the device id (0 ..); -EINVAL for a NULL argument, missing ops
 * or owner, zero capacity; -ENOSPC with UHMM_POLICY_MAX_DEVS devices.
 */
UHMM_API int uhmm_policy_dev_add(struct uhmm_policy *pol, const struct uhmm_policy_dev_desc *desc);

/**
 * uhmm_policy_set_budget() - a tenant's share of a device's memory
 * @pol: the policy
 * @tenant: 0 .. UHMM_POLICY_MAX_TENANTS - 1
 * @dev: device id
 * @max_pages: the tenant's pages (migrated and copies) on @dev never exceed
 *	it (SIZE_MAX: no budget, the default)
 * @priority: under device capacity pressure, blocks of the lowest priority
 *	tenant are evicted first (default 0 for all)
 *
 * A budget smaller than what the tenant holds now evicts nothing by
 * itself: the next migration to @dev for that tenant evicts first.
 *
 * Return: 0; -EINVAL for a NULL @pol or an unknown tenant or device.
 */
UHMM_API int uhmm_policy_set_budget(struct uhmm_policy *pol, unsigned int tenant, int dev,
				    size_t max_pages, int priority);

/**
 * uhmm_policy_tenant_pages() - what a tenant holds on a device now
 * @pol: the policy
 * @tenant: the tenant
 * @dev: the device
 *
 * Return: pages (migrated and copies) counted against the budget, including
 * those reserved by migrations in flight; 0 for bad arguments.
 */
UHMM_API size_t uhmm_policy_tenant_pages(struct uhmm_policy *pol, unsigned int tenant, int dev);

/**
 * uhmm_policy_range_add() - put [@addr, @addr + @len) under the policy
 * @pol: the policy
 * @addr: page aligned
 * @len: page aligned, > 0; the memory must be mapped, private anonymous
 *	and (for read-mostly) readable and writable
 * @attr: the attributes (NULL: defaults: no preference, granularity 16)
 * @out: the range's handle
 *
 * The layer inserts an interval notifier over the range (to read residency
 * and to drop copies when the CPU side changes).  Ranges must not overlap.
 * Migrate memory under a policy only through the layer (its faults,
 * prefetch, discard): the budget counts what the layer moved.
 *
 * Return: 0; -EINVAL for NULL arguments, bad alignment, bad attributes;
 * -EEXIST if it overlaps a range; -ENOMEM; the errors of
 * uhmm_interval_notifier_insert() and, for read-mostly, mprotect().
 */
UHMM_API int uhmm_policy_range_add(struct uhmm_policy *pol, void *addr, size_t len,
				   const struct uhmm_policy_attr *attr,
				   struct uhmm_policy_range **out);

/**
 * uhmm_policy_range_set() - change a range's attributes
 * @r: the range
 * @attr: the new attributes
 *
 * Setting read-mostly brings the range's pages home from every device and
 * write-protects it for the CPU; clearing it drops every copy and restores
 * write access.  Pins are released.
 *
 * Return: 0; -EINVAL; the errors of mprotect().
 */
UHMM_API int uhmm_policy_range_set(struct uhmm_policy_range *r, const struct uhmm_policy_attr *attr);

/**
 * uhmm_policy_range_remove() - take a range out of the policy
 * @r: the range (NULL ignored); freed
 *
 * Drops its copies, restores write access to a read-mostly range, removes
 * the notifier; device-resident pages stay where they are (their budget
 * charge goes).  Do not call it while a device fault or prefetch may be
 * acting on the range.
 */
UHMM_API void uhmm_policy_range_remove(struct uhmm_policy_range *r);

/**
 * uhmm_policy_range_stats() - read a range's counters
 * @r: the range
 * @exact: recount residency with a uhmm_range_fault() snapshot per device
 *	(otherwise: the layer's own record, exact for what the layer moved)
 * @out: filled
 *
 * Context: any thread, at any time, but not from a callback.
 * Return: 0; -EINVAL for NULL arguments; the snapshot's errors.
 */
UHMM_API int uhmm_policy_range_stats(struct uhmm_policy_range *r, bool exact,
				     struct uhmm_policy_stats *out);

/**
 * uhmm_policy_range_find() - the range holding @addr
 * Return: the range or NULL.
 */
UHMM_API struct uhmm_policy_range *uhmm_policy_range_find(struct uhmm_policy *pol,
							  const void *addr);

/** typedef uhmm_policy_done_fn - completion callback: @status is 0 or -errno */
typedef void (*uhmm_policy_done_fn)(void *arg, int status, uint64_t pages);

/**
 * uhmm_policy_prefetch() - asynchronous, batched prefetch
 * @pol: the policy
 * @addr: page aligned
 * @len: page aligned, > 0
 * @loc: a device id or UHMM_POLICY_CPU
 * @done: called once on the layer's prefetch thread when it is complete
 *	(may be NULL); it must not call uhmm_policy_wait() on this request
 * @arg: its argument
 * @req: if not NULL, a handle for uhmm_policy_wait(), which must then be
 *	called exactly once
 *
 * Queues the work and returns.  The layer's prefetch thread migrates the
 * parts of the range that lie in policy ranges, @prefetch_batch pages per
 * migration, evicting as a device fault would (budget, capacity); pages
 * outside policy ranges are ignored.  Requests complete in order.
 *
 * Return: 0; -EINVAL for bad arguments or an unknown device; -ENOMEM; -EAGAIN
 * if the prefetch thread could not be started.
 */
UHMM_API int uhmm_policy_prefetch(struct uhmm_policy *pol, void *addr, size_t len, int loc,
				  uhmm_policy_done_fn done, void *arg,
				  struct uhmm_policy_req **req);

/**
 * uhmm_policy_wait() - wait for a prefetch and free its handle
 * @req: from uhmm_policy_prefetch()
 * @pages: if not NULL, the pages it moved
 *
 * Return: the prefetch's status (0 or its first error); -EINVAL for NULL.
 */
UHMM_API int uhmm_policy_wait(struct uhmm_policy_req *req, uint64_t *pages);

/**
 * uhmm_policy_discard() - declare the data of a range dead
 * @pol: the policy
 * @addr: page aligned
 * @len: page aligned, > 0
 *
 * The pages are dropped wherever they are, device memory included, without
 * being migrated back (MADV_DONTNEED through libc, which uhmm wraps: device
 * pages are freed, the next access reads zeroes); copies are dropped.
 *
 * Return: the pages discarded from device memory (>= 0); -EINVAL; the
 * errors of madvise().
 */
UHMM_API long uhmm_policy_discard(struct uhmm_policy *pol, void *addr, size_t len);

/* ---- the driver side ------------------------------------------------------ */

/* uhmm_policy_device_fault() results */
#define UHMM_POLICY_FAULT_MAP	0	/* fill the entry from uhmm_range_fault(), as usual */
#define UHMM_POLICY_FAULT_COPY	1	/* map @copy read-only, after uhmm_policy_copy_valid() */

/**
 * struct uhmm_policy_fault - one device fault
 * @addr: the faulting address (any byte of the page)
 * @write: a write (or atomic)
 * @copy: out, for UHMM_POLICY_FAULT_COPY: a read-only copy of the page in
 *	the layer's memory, to map in place of the page
 * @cookie: out, for uhmm_policy_copy_valid()
 */
struct uhmm_policy_fault {
	uintptr_t addr;
	bool write;
	const void *copy;
	uint64_t cookie;
};

/**
 * uhmm_policy_device_fault() - decide and act on a device fault
 * @pol: the policy
 * @dev: the faulting device's id
 * @f: the fault
 *
 * Migrates what the policy says (the granule, density prefetch, evicting
 * first under capacity or budget pressure), pins or throttles a thrashing
 * page, collapses read-mostly copies on a write, or makes a copy on a read.
 * An address in no policy range is UHMM_POLICY_FAULT_MAP with nothing done.
 *
 * A write to a read-mostly page answers UHMM_POLICY_FAULT_MAP with the
 * copies collapsed and write access given back; another device's read
 * fault may write-protect the page again before the driver's range fault,
 * which then fails with -EPERM: the driver calls this again (fault again),
 * as after -EBUSY.
 *
 * Context: a device thread or any thread, with no driver lock held and the
 * device's own in-flight-access state dropped (it calls the driver's ops,
 * which migrate and shoot down translations).
 * Return: UHMM_POLICY_FAULT_MAP, UHMM_POLICY_FAULT_COPY, or -EINVAL.
 * A migration the policy wanted and could not make is not an error: the
 * page is then mapped where it is.
 */
UHMM_API int uhmm_policy_device_fault(struct uhmm_policy *pol, int dev,
				      struct uhmm_policy_fault *f);

/**
 * uhmm_policy_copy_valid() - may the copy of a COPY fault still be mapped?
 * @pol: the policy
 * @dev: the device
 * @addr: the fault's address
 * @cookie: the fault's cookie
 *
 * Call it under the lock that protects the device page table, and map the
 * copy only if it returns true: a collapse that started since the fault
 * unmaps the device's entries after marking the copy dead, so a copy
 * checked and mapped under that lock is always removed by it.
 * Context: any thread, under driver locks (the layer's lock is a leaf).
 */
UHMM_API bool uhmm_policy_copy_valid(struct uhmm_policy *pol, int dev, uintptr_t addr,
				     uint64_t cookie);

/**
 * uhmm_policy_cpu_fault() - tell the layer pages came home
 * @pol: the policy
 * @dev: the device they left
 * @fault_addr: the CPU fault's address (0: not a CPU fault: an eviction,
 *	another device's range fault)
 * @start: the window migrated back
 * @end: its end
 *
 * Call it from the driver's migrate_to_ram after the window's migration.
 * Context: any thread, uhmm's service thread included (the layer's lock is
 * a leaf; it calls nothing).
 */
UHMM_API void uhmm_policy_cpu_fault(struct uhmm_policy *pol, int dev, uintptr_t fault_addr,
				    uintptr_t start, uintptr_t end);

/**
 * uhmm_policy_dev_name() - the name a device was added with ("dev<N>" if none)
 * Return: the name, or NULL for a bad id.
 */
UHMM_API const char *uhmm_policy_dev_name(struct uhmm_policy *pol, int dev);

#ifdef __cplusplus
}
#endif
#endif /* UHMM_POLICY_H */
