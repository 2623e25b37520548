/* SPDX-License-Identifier: MIT */
/**
 * DOC: simdev, the reference simulated device
 *
 * The counterpart of the kernel's lib/test_hmm.c ("dmirror"): a device with
 * its own memory (a host arena the process does not map at its addresses),
 * its own page table mirroring the process's address space through an
 * interval notifier and uhmm_range_fault(), migration both ways, device
 * exclusive access, and compute threads whose every load, store and atomic
 * goes through the device page table.  It uses only uhmm's public API,
 * which is what proves a third-party driver can be written on uhmm.
 *
 * Every call returns 0 (or a count, where said) or a negative errno, with
 * the reason in uhmm_last_error() (simdev records its own refusals with
 * uhmm_set_error()).  Addresses must be page aligned (-EINVAL), npages > 0,
 * no wrapping; a NULL device or buffer is -EINVAL.  docs/BAD-INPUT.md lists
 * every refusal.
 */
#ifndef UHMM_SIMDEV_H
#define UHMM_SIMDEV_H

#include <stddef.h>
#include <stdint.h>
#include <uhmm/uhmm.h>

#ifdef __cplusplus
extern "C" {
#endif

struct uhmm_simdev;

/* Migration policy for compute kernels (uhmm_simdev_launch). */
enum uhmm_simdev_policy {
	UHMM_SIMDEV_POLICY_MIRROR = 0,	/* access system memory in place */
	UHMM_SIMDEV_POLICY_MIGRATE,	/* migrate system pages to the device on first device touch */
};

/**
 * struct uhmm_simdev_config - creation parameters (zero = default)
 * @capacity_pages: device memory size in pages (default 65536 = 256 MiB)
 * @threads: compute threads (default: the number of CPUs, at most 8; more
 *	than 64 are clamped to 64)
 * @fault_around: pages migrated back around a CPU fault (power of two;
 *	default %UHMM_FAULT_AROUND_DEFAULT)
 * @policy: enum uhmm_simdev_policy for compute kernels
 * @migrate_window: pages migrated at once by the MIGRATE policy (default 16)
 * @evict_when_full: with the MIGRATE policy, evict device pages (oldest
 *	first) to make room when device memory is full, instead of accessing
 *	the rest in place
 * @huge_pages: 2 MiB device pages, in addition to the @capacity_pages
 *	small ones (default 0; 4 KiB pages only).  With them the device
 *	migrates whole 2 MiB aligned blocks (a transparent huge page) to one
 *	2 MiB device page and back (%UHMM_MIGRATE_VMA_SELECT_COMPOUND), falls
 *	back to 512 small pages when no 2 MiB page is free, and its snapshot
 *	shows such pages with %UHMM_SIMDEV_PROT_PMD, as the kernel's test
 *	device does
 */
struct uhmm_simdev_config {
	size_t capacity_pages;
	unsigned int threads;
	size_t fault_around;
	unsigned int policy;
	size_t migrate_window;
	bool evict_when_full;
	size_t huge_pages;
};

/**
 * struct uhmm_simdev_stats - what a call did
 * @cpages: pages copied (read/write); for migrate_to_dev the pages of the
 *	range in this device's memory afterwards (moved by the call or there
 *	already, as the kernel's test device counts its page table); for
 *	migrate_to_sys the pages moved back
 * @faults: device faults: range faults issued to fill the device page table
 */
struct uhmm_simdev_stats {
	uint64_t cpages;
	uint64_t faults;
};

/* Snapshot values, one byte per page (as the kernel's test device). */
#define UHMM_SIMDEV_PROT_ERROR			0xFF
#define UHMM_SIMDEV_PROT_NONE			0x00
#define UHMM_SIMDEV_PROT_READ			0x01
#define UHMM_SIMDEV_PROT_WRITE			0x02
#define UHMM_SIMDEV_PROT_PMD			0x04
#define UHMM_SIMDEV_PROT_PUD			0x08
#define UHMM_SIMDEV_PROT_ZERO			0x10
#define UHMM_SIMDEV_PROT_DEV_PRIVATE_LOCAL	0x20
#define UHMM_SIMDEV_PROT_DEV_PRIVATE_REMOTE	0x30
#define UHMM_SIMDEV_PROT_DEV_COHERENT_LOCAL	0x40
#define UHMM_SIMDEV_PROT_DEV_COHERENT_REMOTE	0x50

/*
 * The next device page allocation of a migration fails: a small page stays
 * behind in system memory; a 2 MiB one makes the device fall back to 512
 * small pages, so the block still migrates (lib/test_hmm.c's FAIL_ALLOC).
 */
#define UHMM_SIMDEV_FAIL_ALLOC	0x1u

/**
 * uhmm_simdev_create() - create a device (NULL @cfg = defaults)
 *
 * *@out is NULL on an error.  -EINVAL for a NULL @out, an unknown policy, a
 * migrate_window or fault_around that is not a power of two, or a capacity
 * of 2^32 pages or more; -ENOMEM; the errors of uhmm_mm_get().
 */
UHMM_API int uhmm_simdev_create(const struct uhmm_simdev_config *cfg, struct uhmm_simdev **out);
/**
 * uhmm_simdev_destroy() - destroy; device-resident pages go back to system memory first
 *
 * NULL is ignored; destroying a device twice is a use after free (undefined).
 */
UHMM_API void uhmm_simdev_destroy(struct uhmm_simdev *dev);
/**
 * uhmm_simdev_read() - device read of [addr, addr + npages pages) into @out
 *
 * Through the device page table; misses are device faults resolved with one
 * range fault over the rest of the range.  -EFAULT on no mapping or no
 * access (nothing copied to @out).
 */
UHMM_API int uhmm_simdev_read(struct uhmm_simdev *dev, const void *addr, size_t npages,
			      void *out, struct uhmm_simdev_stats *st);
/** uhmm_simdev_write() - device write; -EPERM on a read-only mapping (nothing written) */
UHMM_API int uhmm_simdev_write(struct uhmm_simdev *dev, void *addr, size_t npages,
			       const void *in, struct uhmm_simdev_stats *st);
/**
 * uhmm_simdev_migrate_to_dev() - migrate the range into device memory
 *
 * @st->cpages: the pages of the range in this device's memory after the
 * call, whether this call moved them or they were there already (a range
 * migrated, then partly faulted back by the CPU and migrated again counts
 * every page).  -ENOENT when afterwards no page of the range is in this
 * device's memory; -EINVAL for a range with a hole, without access, or in
 * hugetlbfs; -ENOMEM when the device is full and this call moved nothing.
 * As the kernel's test device, the range is migrated mapping by mapping:
 * on -EINVAL the pieces before the bad one stay migrated (@st->cpages
 * counts them).  Concurrent CPU faults may take pages back at any time:
 * the count is of the moment the call looked.
 */
UHMM_API int uhmm_simdev_migrate_to_dev(struct uhmm_simdev *dev, void *addr, size_t npages,
					struct uhmm_simdev_stats *st);
/**
 * uhmm_simdev_migrate_to_sys() - migrate this device's pages of the range back
 *
 * -ENOENT when none of the range is in this device's memory; -EINVAL as
 * uhmm_simdev_migrate_to_dev().
 */
UHMM_API int uhmm_simdev_migrate_to_sys(struct uhmm_simdev *dev, void *addr, size_t npages,
					struct uhmm_simdev_stats *st);
/** uhmm_simdev_snapshot() - one UHMM_SIMDEV_PROT_* byte per page, faulting nothing in */
UHMM_API int uhmm_simdev_snapshot(struct uhmm_simdev *dev, const void *addr, size_t npages,
				  uint8_t *prot, struct uhmm_simdev_stats *st);
/** uhmm_simdev_exclusive() - take device-exclusive access to the range */
UHMM_API int uhmm_simdev_exclusive(struct uhmm_simdev *dev, void *addr, size_t npages,
				   struct uhmm_simdev_stats *st);
/** uhmm_simdev_check_exclusive() - 0 once the CPU revoked every page, -EPERM otherwise */
UHMM_API int uhmm_simdev_check_exclusive(struct uhmm_simdev *dev, void *addr, size_t npages);
/** uhmm_simdev_release() - evict all of this device's memory (migrate_device_range) */
UHMM_API int uhmm_simdev_release(struct uhmm_simdev *dev);
/** uhmm_simdev_set_flags() - UHMM_SIMDEV_FAIL_* failure injection */
UHMM_API int uhmm_simdev_set_flags(struct uhmm_simdev *dev, unsigned int flags);

/**
 * struct uhmm_simdev_counters - totals since the device was created
 * @to_dev_pages: pages migrated to the device (explicitly or by policy)
 * @to_sys_pages: pages migrated back explicitly (migrate_to_sys)
 * @cpu_faults: CPU faults served (migrate_to_ram calls)
 * @cpu_fault_pages: pages those faults brought back (fault-around included)
 * @evicted_pages: pages evicted to make room or by release
 * @device_faults: device page-table misses resolved by a range fault
 */
struct uhmm_simdev_counters {
	uint64_t to_dev_pages;
	uint64_t to_sys_pages;
	uint64_t cpu_faults;
	uint64_t cpu_fault_pages;
	uint64_t evicted_pages;
	uint64_t device_faults;
};

/** uhmm_simdev_get_counters() - read the device's totals */
UHMM_API int uhmm_simdev_get_counters(struct uhmm_simdev *dev,
				      struct uhmm_simdev_counters *out);

/** uhmm_simdev_used_pages() - device pages holding process data (for tests) */
UHMM_API size_t uhmm_simdev_used_pages(struct uhmm_simdev *dev);

/* ---- the policy layer ---------------------------------------------------- */

struct uhmm_policy;

/**
 * uhmm_simdev_attach_policy() - let a policy decide the device's kernel faults
 * @dev: the device
 * @pol: a policy (include/uhmm/policy.h) of the same process; NULL detaches
 * @name: the device's name in the policy's output (NULL: "dev<N>")
 * @id: if not NULL, the device's id in @pol
 *
 * Adds @dev to @pol as a device (its capacity, its owner, its migrations)
 * and from then on every device fault of a compute kernel launched on
 * @dev goes to uhmm_policy_device_fault() instead of the @policy of the
 * device's configuration, and its migrate_to_ram reports to
 * uhmm_policy_cpu_fault().  uhmm_simdev_read() / _write() are not
 * affected.  Attach before launching, once per device.  Tear down in this
 * order: detach (@pol NULL, with no launch running), uhmm_policy_destroy(),
 * uhmm_simdev_destroy(): the policy's destroy drops copies through the
 * device, and the device's destroy brings pages home.  Do not
 * combine with @evict_when_full or explicit migrations of memory under the
 * policy: the layer evicts and migrates itself.
 *
 * Return: 0; -EINVAL for NULL arguments; -ENOMEM; the errors of
 * uhmm_policy_dev_add().
 */
UHMM_API int uhmm_simdev_attach_policy(struct uhmm_simdev *dev, struct uhmm_policy *pol,
				       const char *name, int *id);

/* ---- cost model ------------------------------------------------------------ */

/**
 * DOC: cost model
 *
 * simdev runs at the speed of the host's CPU and memory; a cost model says
 * how long the same work would take on a real device.  With a model set,
 * every operation accrues *simulated time* on the device (picoseconds,
 * exact integers), which uhmm_simdev_get_cost() reports:
 *
 *  - a migration to the device: one transfer per migrate_vma batch (at
 *    most 512 pages): @h2d_latency_ns + the bytes copied / @h2d_gbps
 *    (pages that had no data, migrated as zero pages, cross no link);
 *  - a migration to system memory (explicit, eviction, release, the pages
 *    a CPU fault brings back): @d2h_latency_ns + bytes / @d2h_gbps per batch;
 *  - a CPU fault on device memory: @cpu_fault_ns, plus its transfers;
 *  - a device fault (a device page-table miss filled by a range fault):
 *    @fault_service_ns per *batch*.  The device's clock is the sum of
 *    everything accrued so far; a fault joins the open batch when that
 *    batch holds fewer than @fault_batch_size faults and was opened at most
 *    @fault_batch_window_ns of simulated time before; otherwise it opens a
 *    new batch and pays the service cost;
 *  - a device kernel: for each page a compute thread translates (a TLB
 *    fill: once per page per thread, again after an invalidation), one
 *    page of traffic: over device memory at @mem_gbps for a page in device
 *    memory, over the link (h2d for a read, d2h for a write, no latency)
 *    for system memory accessed in place;
 *  - uhmm_simdev_read() / _write(): device-memory pages at @mem_gbps, the
 *    system-memory pages as one transfer over the link.
 *
 * Nothing is modelled as overlapping: simulated time is the sum (a serial
 * device: one link, one fault engine), an upper bound for a device that
 * overlaps transfers with compute.  Accounting happens per page or per run
 * of pages, never per load or store, with atomics outside the inline
 * access path.  A bandwidth of 0 means that part costs nothing.
 *
 * A model is set with uhmm_simdev_set_model(), or by the environment:
 * UHMM_SIMDEV_MODEL=<preset name> gives every device created afterwards
 * that preset (an unknown name makes uhmm_simdev_create() fail with
 * -EINVAL).  docs/PERFORMANCE.md lists the presets, where each figure
 * comes from, and how the model compares with published measurements.
 */

#define UHMM_SIMDEV_MODEL_NAME_LEN	16
#define UHMM_SIMDEV_MODEL_DESC_LEN	96

/**
 * struct uhmm_simdev_model - a device's link and memory, for the cost model
 * @name: short name (the presets: "pcie4", "cxl", "c2c")
 * @desc: what it models, one line
 * @h2d_gbps: link bandwidth system->device, GB/s (10^9 bytes/s); 0: free
 * @d2h_gbps: link bandwidth device->system, GB/s; 0: free
 * @h2d_latency_ns: fixed cost of one transfer system->device
 * @d2h_latency_ns: fixed cost of one transfer device->system
 * @fault_service_ns: service cost of one batch of device faults
 * @fault_batch_window_ns: a fault arriving at most this long (simulated
 *	time) after its batch opened joins it
 * @fault_batch_size: faults per batch at most (>= 1)
 * @cpu_fault_ns: service cost of one CPU fault on device memory
 * @mem_gbps: device memory bandwidth (device kernels' traffic), GB/s; 0: free
 * @capacity_bytes: the modelled device's memory; the simulated device uses
 *	at most this much of its own (a smaller model makes it evict or refuse
 *	sooner); 0: no limit beyond uhmm_simdev_config.capacity_pages
 */
struct uhmm_simdev_model {
	char name[UHMM_SIMDEV_MODEL_NAME_LEN];
	char desc[UHMM_SIMDEV_MODEL_DESC_LEN];
	double h2d_gbps, d2h_gbps;
	uint64_t h2d_latency_ns, d2h_latency_ns;
	uint64_t fault_service_ns;
	uint64_t fault_batch_window_ns;
	uint32_t fault_batch_size;
	uint64_t cpu_fault_ns;
	double mem_gbps;
	uint64_t capacity_bytes;
};

/**
 * struct uhmm_simdev_cost - simulated time accrued since the device was
 *	created (or uhmm_simdev_reset_cost())
 * @total_ps: the device's simulated time, picoseconds: the sum of the five
 *	components below (exact)
 * @h2d_ps: link transfers system->device (latencies included)
 * @d2h_ps: link transfers device->system (latencies included)
 * @fault_ps: device fault service (one cost per batch)
 * @cpu_fault_ps: CPU fault service
 * @mem_ps: device memory traffic
 * @h2d_bytes: bytes over the link system->device
 * @d2h_bytes: bytes over the link device->system
 * @mem_bytes: bytes of device memory traffic
 * @h2d_transfers: transfers system->device (each paid its latency)
 * @d2h_transfers: transfers device->system
 * @faults: device faults
 * @fault_batches: batches they were serviced in
 * @cpu_faults: CPU faults on device memory
 */
struct uhmm_simdev_cost {
	uint64_t total_ps;
	uint64_t h2d_ps, d2h_ps, fault_ps, cpu_fault_ps, mem_ps;
	uint64_t h2d_bytes, d2h_bytes, mem_bytes;
	uint64_t h2d_transfers, d2h_transfers;
	uint64_t faults, fault_batches, cpu_faults;
};

/**
 * uhmm_simdev_model_preset() - a named preset model
 * @name: "pcie4" (a PCIe 4.0 x16 discrete GPU: NVIDIA A100 40GB PCIe),
 *	"cxl" (a CXL Type-3 memory expander on a PCIe 5.0 x8 link), "c2c" (a
 *	cache-coherent chip-to-chip link: NVIDIA GH200, NVLink-C2C)
 * @out: the preset's figures
 *
 * Context: any thread; no device needed.
 * Return: 0; -EINVAL for a NULL argument; -ENOENT for an unknown name.
 */
UHMM_API int uhmm_simdev_model_preset(const char *name, struct uhmm_simdev_model *out);

/**
 * uhmm_simdev_model_name() - the name of preset @i (0, 1, ...)
 * @i: the preset's index
 *
 * Context: any thread; no device needed.
 * Return: a static string, or NULL past the last preset (not an error).
 */
UHMM_API const char *uhmm_simdev_model_name(unsigned int i);

/**
 * uhmm_simdev_set_model() - set, replace (or with NULL, remove) the device's model
 * @dev: the device
 * @model: the figures (copied); NULL: no model, nothing accrues
 *
 * What accrued so far stays (uhmm_simdev_reset_cost() clears it).  May be
 * called while other threads use the device: each operation accrues under
 * the model it read when it ran.  Each model set stays allocated (a few
 * hundred bytes) until the device is destroyed.
 *
 * Return: 0; -EINVAL for a NULL @dev, a negative or non-finite bandwidth,
 * a batch size of 0, or a name or description without its NUL; -ENOMEM.
 */
UHMM_API int uhmm_simdev_set_model(struct uhmm_simdev *dev, const struct uhmm_simdev_model *model);

/**
 * uhmm_simdev_get_model() - the device's current model
 * @dev: the device
 * @out: a copy of the figures in use
 *
 * Context: any thread, at any time.
 * Return: 0; -EINVAL for a NULL argument; -ENOENT when it has none.
 */
UHMM_API int uhmm_simdev_get_model(struct uhmm_simdev *dev, struct uhmm_simdev_model *out);

/**
 * uhmm_simdev_get_cost() - the simulated time accrued, with its parts
 * @dev: the device
 * @out: the figures
 *
 * Context: any thread, at any time; the components are read one by one, so
 * while operations run the figures may be of slightly different moments
 * (@total_ps is always the sum of the components returned).  All zero when
 * no model was ever set.
 * Return: 0; -EINVAL for a NULL argument.
 */
UHMM_API int uhmm_simdev_get_cost(struct uhmm_simdev *dev, struct uhmm_simdev_cost *out);

/**
 * uhmm_simdev_reset_cost() - set the simulated time and its counts to zero
 * @dev: the device
 *
 * Also closes the open fault batch.  Context: any thread; operations
 * running meanwhile may be counted on either side.
 * Return: 0; -EINVAL for a NULL @dev.
 */
UHMM_API int uhmm_simdev_reset_cost(struct uhmm_simdev *dev);

/* ---- device compute ------------------------------------------------------ */

struct uhmm_simdev_thread;

/**
 * typedef uhmm_simdev_kernel - a device kernel: called once per work item
 * @t: the device thread running it: pass to the access functions
 * @item: the work item index, 0 .. nitems - 1
 * @arg: the launch's argument
 */
typedef void (*uhmm_simdev_kernel)(struct uhmm_simdev_thread *t, size_t item, void *arg);

/**
 * uhmm_simdev_launch() - run a kernel on the device threads
 * @dev: the device
 * @nitems: work items, spread over the device threads
 * @fn: the kernel
 * @arg: its argument
 * @st: accumulated device faults and pages migrated by the policy
 *
 * Every access the kernel makes with uhmm_simdev_load*() / _store*() /
 * _atomic_add*() is translated through the device page table, checked for
 * permission, and a miss is a device fault.  An access that cannot be
 * satisfied (no mapping, no permission) stops the launch; the call then
 * returns that error (-EFAULT / -EPERM), its reason in the caller's
 * uhmm_last_error().
 *
 * Return: 0 or the first access error; -EINVAL for a NULL @dev or @fn;
 * -EBUSY while another launch runs on @dev (a kernel launching on its own
 * device included); -ENOMEM.
 */
UHMM_API int uhmm_simdev_launch(struct uhmm_simdev *dev, size_t nitems, uhmm_simdev_kernel fn,
				void *arg, struct uhmm_simdev_stats *st);

/*
 * Device accesses, for kernels: @t is the thread the kernel was given.  An
 * access that cannot be made stops the launch (loads then give 0); a NULL
 * @t is ignored (loads give 0) with a reason in uhmm_last_error().
 *
 * Each access goes through the device page table, translated once per page:
 * the functions below are inline and, while the thread keeps to the page
 * it last read (or wrote) and no invalidation has run since, access it
 * directly; anything else is the out-of-line *_slow() function (the TLB,
 * the page-table walk, device faults, migrate-on-touch), which may also be
 * called directly.  A kernel must reach memory that may be in device memory
 * only through these functions: an invalidation waits until every running
 * compute thread has made its next device access (or finished its work),
 * so a direct CPU access from kernel code that faults on device memory
 * would wait for itself.
 */
/**
 * uhmm_simdev_load64_slow() - the out-of-line device access (the same for
 *	_load32, _store64, _store32, _atomic_add64, _atomic_add32)
 * @t: the device thread the kernel was given
 * @addr: the process address accessed (naturally aligned)
 *
 * Context: only on @t's own thread, from the kernel it runs.  May wait: a
 * device fault (a range fault, a migration to the device, eviction).
 * Return: the value loaded (the old value for an atomic add).  An access
 * that cannot be made (-EFAULT no mapping or no access, -EPERM a write to
 * read-only memory, -EBUSY the page table kept changing, -ENOMEM) gives 0,
 * stops the launch and is what uhmm_simdev_launch() returns; a NULL @t is
 * ignored (0) with -EINVAL's reason in uhmm_last_error().
 */
UHMM_API uint64_t uhmm_simdev_load64_slow(struct uhmm_simdev_thread *t, const void *addr);
UHMM_API uint32_t uhmm_simdev_load32_slow(struct uhmm_simdev_thread *t, const void *addr);
UHMM_API void uhmm_simdev_store64_slow(struct uhmm_simdev_thread *t, void *addr, uint64_t v);
UHMM_API void uhmm_simdev_store32_slow(struct uhmm_simdev_thread *t, void *addr, uint32_t v);
UHMM_API uint64_t uhmm_simdev_atomic_add64_slow(struct uhmm_simdev_thread *t, void *addr,
						uint64_t v);
UHMM_API uint32_t uhmm_simdev_atomic_add32_slow(struct uhmm_simdev_thread *t, void *addr,
						uint32_t v);

/*
 * Not API: the first members of struct uhmm_simdev_thread, which the
 * inline accesses read (the last page read and written, and the generation
 * of the device page table they were translated in).  They change with the
 * library: build kernels against the header of the library they run with.
 */
struct uhmm_simdev__fast {
	unsigned long gen;		/* 0: no translation held */
	const unsigned long *devgen;	/* the device's current generation */
	unsigned int shift;		/* page shift */
	uint64_t ld_vpn, st_vpn;	/* page numbers, ~0: none */
	uintptr_t ld_delta, st_delta;	/* host address of the page minus its address */
};

/* The host address for @addr if the fast path applies, else NULL. */
static inline char *uhmm_simdev__hit(struct uhmm_simdev_thread *t, const void *addr, int write)
{
	const struct uhmm_simdev__fast *f = (const struct uhmm_simdev__fast *)(void *)t;
	uintptr_t a = (uintptr_t)addr;

	if (!t || (a >> f->shift) != (write ? f->st_vpn : f->ld_vpn) ||
	    f->gen != __atomic_load_n(f->devgen, __ATOMIC_RELAXED))
		return NULL;
	return (char *)((write ? f->st_delta : f->ld_delta) + a);	/* modulo 2^N */
}

/** uhmm_simdev_load64() - device load of 8 bytes (see above) */
static inline uint64_t uhmm_simdev_load64(struct uhmm_simdev_thread *t, const void *addr)
{
	char *p = uhmm_simdev__hit(t, addr, 0);

	return p ? __atomic_load_n((uint64_t *)(void *)p, __ATOMIC_RELAXED)
		 : uhmm_simdev_load64_slow(t, addr);
}

/** uhmm_simdev_load32() - device load of 4 bytes */
static inline uint32_t uhmm_simdev_load32(struct uhmm_simdev_thread *t, const void *addr)
{
	char *p = uhmm_simdev__hit(t, addr, 0);

	return p ? __atomic_load_n((uint32_t *)(void *)p, __ATOMIC_RELAXED)
		 : uhmm_simdev_load32_slow(t, addr);
}

/** uhmm_simdev_store64() - device store of 8 bytes */
static inline void uhmm_simdev_store64(struct uhmm_simdev_thread *t, void *addr, uint64_t v)
{
	char *p = uhmm_simdev__hit(t, addr, 1);

	if (p)
		__atomic_store_n((uint64_t *)(void *)p, v, __ATOMIC_RELAXED);
	else
		uhmm_simdev_store64_slow(t, addr, v);
}

/** uhmm_simdev_store32() - device store of 4 bytes */
static inline void uhmm_simdev_store32(struct uhmm_simdev_thread *t, void *addr, uint32_t v)
{
	char *p = uhmm_simdev__hit(t, addr, 1);

	if (p)
		__atomic_store_n((uint32_t *)(void *)p, v, __ATOMIC_RELAXED);
	else
		uhmm_simdev_store32_slow(t, addr, v);
}

/** uhmm_simdev_atomic_add64() - device atomic add (sequentially consistent); returns the old value */
static inline uint64_t uhmm_simdev_atomic_add64(struct uhmm_simdev_thread *t, void *addr, uint64_t v)
{
	char *p = uhmm_simdev__hit(t, addr, 1);

	return p ? __atomic_fetch_add((uint64_t *)(void *)p, v, __ATOMIC_SEQ_CST)
		 : uhmm_simdev_atomic_add64_slow(t, addr, v);
}

/** uhmm_simdev_atomic_add32() - device atomic add of 4 bytes; returns the old value */
static inline uint32_t uhmm_simdev_atomic_add32(struct uhmm_simdev_thread *t, void *addr, uint32_t v)
{
	char *p = uhmm_simdev__hit(t, addr, 1);

	return p ? __atomic_fetch_add((uint32_t *)(void *)p, v, __ATOMIC_SEQ_CST)
		 : uhmm_simdev_atomic_add32_slow(t, addr, v);
}

#ifdef __cplusplus
}
#endif
#endif /* UHMM_SIMDEV_H */
