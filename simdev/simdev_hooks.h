/* SPDX-License-Identifier: MIT */
/*
 * Not API: how simdev/simdev_policy.c plugs the policy layer into simdev's
 * compute kernels (simdev.c calls these hooks; hidden symbols).
 */
#ifndef UHMM_SIMDEV_HOOKS_H
#define UHMM_SIMDEV_HOOKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct uhmm_simdev;

struct uhmm_simdev__hooks {
	/*
	 * A compute thread's device fault on @page (no simdev lock, no
	 * epoch held).  Returns true with a read-only copy to map.
	 */
	bool (*device_fault)(void *arg, uintptr_t page, bool write, const void **copy,
			     uint64_t *cookie);
	/* Under dev->lock: may the copy still be mapped? */
	bool (*copy_valid)(void *arg, uintptr_t page, uint64_t cookie);
	/* From migrate_to_ram, after [s, e) came home (@fault: the faulting address). */
	void (*pages_home)(void *arg, uintptr_t fault, uintptr_t s, uintptr_t e);
	void *arg;
};

__attribute__((visibility("hidden")))
void uhmm_simdev__set_hooks(struct uhmm_simdev *d, const struct uhmm_simdev__hooks *h);
__attribute__((visibility("hidden")))
int uhmm_simdev__unmap(struct uhmm_simdev *d, uintptr_t addr, size_t npages);
__attribute__((visibility("hidden")))
const void *uhmm_simdev__owner(struct uhmm_simdev *d);
__attribute__((visibility("hidden")))
size_t uhmm_simdev__capacity(struct uhmm_simdev *d);

#endif
