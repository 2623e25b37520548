/* SPDX-License-Identifier: MIT */
/**
 * DOC: uhmm process context
 *
 * One &struct uhmm_mm exists per process: the user-space counterpart of the
 * kernel's mm_struct plus struct hmm.  It owns the userfaultfd, the service
 * thread that handles its faults and events, the table of special page
 * entries (pages uhmm took out of the CPU page table), and the interval
 * notifier tree.  It is created on first uhmm_mm_get() and torn down by the
 * last uhmm_mm_put().
 */
#ifndef UHMM_MM_H
#define UHMM_MM_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef UHMM_API
#define UHMM_API __attribute__((visibility("default")))
#endif

struct uhmm_mm;

/** enum uhmm_uffd_mode - which userfaultfd the library obtained */
enum uhmm_uffd_mode {
	UHMM_UFFD_NONE = 0,		/* none: the library cannot work */
	UHMM_UFFD_USER_ONLY = 1,	/* UFFD_USER_MODE_ONLY: kernel-mode
					 * access to device-resident memory
					 * (read(2) into it...) fails EFAULT */
	UHMM_UFFD_FULL = 2,		/* full: kernel-mode access waits */
};

/* Kernel features uhmm can use; each has a fallback (see README). */
#define UHMM_FEAT_MOVE		(1u << 0)	/* UFFDIO_MOVE, 6.8 */
#define UHMM_FEAT_PAGEMAP_SCAN	(1u << 1)	/* PAGEMAP_SCAN ioctl, 6.7 */
#define UHMM_FEAT_WP_UNPOPULATED (1u << 2)	/* uffd-wp markers, 6.4 */
#define UHMM_FEAT_MADV_POPULATE	(1u << 3)	/* MADV_POPULATE_*, 5.14 */
#define UHMM_FEAT_PROCMAP_QUERY	(1u << 4)	/* PROCMAP_QUERY ioctl, 6.11 */
#define UHMM_FEAT_UFFD_WP	(1u << 5)	/* uffd write-protect, 5.7 */
#define UHMM_FEAT_COUNT		6

/**
 * struct uhmm_sysinfo - what the running system offers uhmm
 * @kernel_release: uname -r
 * @uffd_mode: the userfaultfd mode uhmm obtains here
 * @uffd_errno: when @uffd_mode is %UHMM_UFFD_NONE (or only user-mode-only
 *	was granted), the errno of the full-mode attempt
 * @uffd_source: how the userfaultfd was obtained ("syscall",
 *	"/dev/userfaultfd", "syscall, user-mode-only", "none")
 * @uffd_kernel_features: the UFFD_FEATURE_* mask the kernel offers
 * @features: UHMM_FEAT_* the kernel offers
 * @disabled: UHMM_FEAT_* forced off by the UHMM_DISABLE environment variable
 * @active: @features & ~@disabled: the fast paths in use
 * @page_size: base page size in bytes
 * @zero_page: 1 when a read fault of anonymous memory maps the shared zero
 *	page, 0 when this kernel installs private zeroed pages instead (some
 *	kernels are built or booted that way), -1 when it could not be told
 * @thp: transparent huge page mode: "always", "madvise", "never" or
 *	"unavailable"
 * @advice: when the library cannot work here, one paragraph saying what to
 *	change; empty otherwise
 * @reserved: zero; a later release may report more here without changing
 *	the structure's size
 */
struct uhmm_sysinfo {
	char kernel_release[65];
	enum uhmm_uffd_mode uffd_mode;
	int uffd_errno;
	char uffd_source[40];
	uint64_t uffd_kernel_features;
	unsigned int features;
	unsigned int disabled;
	unsigned int active;
	size_t page_size;
	int zero_page;
	char thp[16];
	char advice[512];
	uint64_t reserved[8];	/* zero; room for new fields (CONTRIBUTING.md, ABI) */
};

/**
 * uhmm_sysinfo() - probe the running kernel once and report it
 * @info: filled on return
 *
 * The probe runs once per process (thread safe); later calls copy the
 * cached result.  It needs no context and never fails on a system where
 * userfaultfd is unavailable: that is reported in @info.
 *
 * Return: 0, or -EINVAL if @info is NULL.
 */
UHMM_API int uhmm_sysinfo(struct uhmm_sysinfo *info);

/**
 * uhmm_feature_name() - short name of one UHMM_FEAT_* bit
 * @feature: a single UHMM_FEAT_* bit
 *
 * The names are those UHMM_DISABLE accepts ("move", "pagemap_scan",
 * "wp_unpopulated", "madv_populate", "procmap_query", "uffd_wp").
 *
 * Return: a static string, or "unknown" (with a reason in uhmm_last_error())
 * for 0, several bits or an unknown bit.
 */
UHMM_API const char *uhmm_feature_name(unsigned int feature);

/**
 * uhmm_mm_get() - get a reference on the process context, creating it
 * @mmp: receives the context
 *
 * The first call opens the userfaultfd and starts the service thread; later
 * calls take another reference on the same context.  Thread safe.  Must not
 * be called from an invalidate callback or a device callback.
 *
 * Return: 0; -EINVAL if @mmp is NULL; -ENOSYS or -EPERM when no userfaultfd
 * can be obtained here (uhmm_sysinfo() and "uhmm info" say why); -ENOMEM;
 * -EAGAIN when the service thread cannot be started; -ECHILD in a child
 * created by vfork() before exec (or by a raw clone that bypassed
 * pthread_atfork): the context there is the parent's.
 */
UHMM_API int uhmm_mm_get(struct uhmm_mm **mmp);

/**
 * uhmm_mm_put() - drop a reference on the process context
 * @mm: the context (NULL is ignored)
 *
 * The last put tears the context down: every interval notifier still
 * registered receives a %UHMM_NOTIFY_RELEASE invalidation over its whole
 * range and is detached (a later uhmm_interval_notifier_remove() on it is a
 * no-op), the service thread stops and the userfaultfd is closed.  Must not
 * be called from a callback.
 */
UHMM_API void uhmm_mm_put(struct uhmm_mm *mm);

/**
 * struct uhmm_mm_stats - what the context holds, and the memory it costs
 * @device_pages: pages resident in device memory (every pool, the
 *	internal exclusive-access pool included)
 * @special_entries: pages uhmm keeps an entry for (device-resident,
 *	exclusive, in a migration)
 * @entry_table_bytes: memory of the special-entry table's nodes (4 KiB
 *	per node; a leaf covers 512 pages of address space); the top level, a
 *	reservation the kernel backs only where it is touched, is not counted
 * @page_desc_bytes: memory of the device page descriptors of every pool
 *	(40 bytes per page, 44 in a pool with %UHMM_DEVMEM_COMPOUND)
 *	(one struct uhmm_page per device page, resident or not)
 * @pools: device memory pools added and not removed
 * @notifiers: interval notifiers inserted
 * @reserved: zero; room for new counters without a change of size
 */
struct uhmm_mm_stats {
	uint64_t device_pages;
	uint64_t special_entries;
	uint64_t entry_table_bytes;
	uint64_t page_desc_bytes;
	uint64_t pools;
	uint64_t notifiers;
	uint64_t reserved[8];	/* zero; room for new counters */
};

/**
 * uhmm_mm_stats() - read the context's counters
 * @mm: a context reference from uhmm_mm_get()
 * @out: filled in
 *
 * The counters are read without stopping other threads: each is exact at
 * some moment during the call.  Callable from any thread, callbacks too.
 *
 * Return: 0; -EINVAL for a NULL argument or a context that is not live.
 */
UHMM_API int uhmm_mm_stats(struct uhmm_mm *mm, struct uhmm_mm_stats *out);

/**
 * uhmm_last_error() - human-readable reason for the last failure
 *
 * Every call that returns a negative errno for bad input or an unsupported
 * situation records a one-line reason for the calling thread.  Setting the
 * environment variable UHMM_LOG=1 also prints each reason to stderr as it
 * happens.
 *
 * Return: the calling thread's last message ("" if none); valid until the
 * thread's next uhmm call.
 */
UHMM_API const char *uhmm_last_error(void);

/**
 * uhmm_set_error() - record a failure reason for the calling thread
 * @err: the positive errno of the failure
 * @fmt: printf format of the one-line reason (NULL or "": a placeholder
 *	reason is recorded)
 *
 * For drivers built on uhmm (simdev is one): their own refusals then show
 * in uhmm_last_error(), and with UHMM_LOG=1 on stderr, like the library's.
 * Never fails.
 *
 * Return: -@err, so that a driver can write
 * "return uhmm_set_error(EINVAL, "...", ...);".
 */
UHMM_API int uhmm_set_error(int err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#ifdef __cplusplus
}
#endif
#endif /* UHMM_MM_H */
