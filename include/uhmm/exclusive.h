/* SPDX-License-Identifier: MIT */
/**
 * DOC: device-exclusive access (the kernel's make_device_exclusive)
 *
 * A device that needs atomic access to a page the CPU also uses (device
 * atomics on system memory) takes it exclusively: the page leaves the CPU
 * page table (it is not copied and not migrated) and the device accesses it
 * at a holding address uhmm gives.  The first CPU access to the address
 * revokes the exclusivity: every notifier over the page receives a
 * %UHMM_NOTIFY_EXCLUSIVE invalidation (owner NULL), so the device stops
 * using the holding address, and then the page is mapped back with its data
 * and the CPU access proceeds.
 */
#ifndef UHMM_EXCLUSIVE_H
#define UHMM_EXCLUSIVE_H

#include <stddef.h>
#include <stdint.h>
#include <uhmm/mm.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * uhmm_make_exclusive() - take device-exclusive access to pages
 * @mm: the process context
 * @start: first byte (page aligned)
 * @npages: number of pages, > 0
 * @owner: the device's owner token: it is passed to the
 *	%UHMM_NOTIFY_EXCLUSIVE invalidation that runs first, so the owner's
 *	own mirror may keep its mapping
 * @pages: @npages entries: the holding address of each page the device now
 *	holds, NULL for a page it could not get
 *
 * Each page is first faulted in writable from the calling thread (breaking
 * copy-on-write, as a CPU write would; a page in device memory, another
 * device's or held exclusively by another owner, is brought home by its
 * device's migrate_to_ram; a page in a migration is waited for), then taken
 * out of the CPU page table.  A page another thread moves away between the
 * two is faulted in and taken again, as the kernel retries.  Pages already
 * held exclusively by the same owner are given again.  Pages of a mapping
 * that is not private anonymous and writable are not taken, nor a page its
 * device cannot give back.
 *
 * Context: any thread but uhmm's service thread; not from a callback.  It
 * may run device callbacks (migrate_to_ram) on the calling thread.
 *
 * Return: the number of pages now held (>= 0); -EINVAL for bad arguments,
 * a context that is not live, a range across mappings or holes, without
 * access, or in hugetlbfs or an IO mapping (checked before anything is
 * faulted in); -EPERM if the mapping is not writable; -ENOMEM (also when
 * there was no memory to look the mappings up); -EIO if /proc/self cannot
 * be read; -EDEADLK from a callback.  Once the range is checked, @pages is set to NULL first.
 */
UHMM_API long uhmm_make_exclusive(struct uhmm_mm *mm, uintptr_t start, size_t npages,
				  const void *owner, void **pages);

/**
 * uhmm_exclusive_held() - is a page still held exclusively?
 * @mm: the process context
 * @addr: the page's address
 * @owner: the owner that took it
 *
 * Return: the holding address while @owner holds the page, NULL once the
 * CPU has revoked it (or if it never was); NULL with a reason in
 * uhmm_last_error() if @mm is not the context.
 */
UHMM_API void *uhmm_exclusive_held(struct uhmm_mm *mm, uintptr_t addr, const void *owner);

#ifdef __cplusplus
}
#endif
#endif /* UHMM_EXCLUSIVE_H */
