// SPDX-License-Identifier: MIT
/*
 * simdev adopts the policy layer (include/uhmm/policy.h), as a driver
 * would: its operations for the layer are simdev's own migrations and a
 * page-table unmap, and its compute kernels' device faults and
 * migrate_to_ram report to the layer through the hooks of simdev_hooks.h.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/mman.h>

#include <uhmm/policy.h>
#include <uhmm/simdev.h>

#include "simdev_hooks.h"

struct attach {
	struct uhmm_simdev__hooks hooks;	/* first */
	struct uhmm_simdev *dev;
	struct uhmm_policy *pol;
	int id;
};

static long op_to_dev(void *drv, uintptr_t addr, size_t npages)
{
	struct uhmm_simdev_stats st = { 0 };
	int ret = uhmm_simdev_migrate_to_dev(drv, (void *)addr, npages, &st);

	/* Full or nothing movable: the layer maps the pages where they are. */
	return ret == -ENOENT || ret == -ENOMEM ? 0 : ret < 0 ? ret : (long)st.cpages;
}

static long op_to_sys(void *drv, uintptr_t addr, size_t npages)
{
	struct uhmm_simdev_stats st = { 0 };
	int ret = uhmm_simdev_migrate_to_sys(drv, (void *)addr, npages, &st);

	return ret == -ENOENT ? 0 : ret < 0 ? ret : (long)st.cpages;
}

static int op_unmap(void *drv, uintptr_t addr, size_t npages)
{
	return uhmm_simdev__unmap(drv, addr, npages);
}

static const struct uhmm_policy_dev_ops simdev_policy_ops = {
	.migrate_to_dev = op_to_dev,
	.migrate_to_sys = op_to_sys,
	.unmap = op_unmap,
};

static bool hook_fault(void *arg, uintptr_t page, bool write, const void **copy,
		       uint64_t *cookie)
{
	struct attach *at = arg;
	struct uhmm_policy_fault f = { .addr = page, .write = write };

	if (uhmm_policy_device_fault(at->pol, at->id, &f) != UHMM_POLICY_FAULT_COPY)
		return false;
	*copy = f.copy;
	*cookie = f.cookie;
	return true;
}

static bool hook_copy_valid(void *arg, uintptr_t page, uint64_t cookie)
{
	struct attach *at = arg;

	return uhmm_policy_copy_valid(at->pol, at->id, page, cookie);
}

static void hook_pages_home(void *arg, uintptr_t fault, uintptr_t s, uintptr_t e)
{
	struct attach *at = arg;

	uhmm_policy_cpu_fault(at->pol, at->id, fault, s, e);
}

int uhmm_simdev_attach_policy(struct uhmm_simdev *dev, struct uhmm_policy *pol,
			      const char *name, int *id)
{
	struct uhmm_policy_dev_desc desc;
	struct attach *at;
	int ret;

	if (!dev)
		return uhmm_set_error(EINVAL, "simdev attach policy: NULL device");
	if (!pol) {
		/* Detach.  The old hooks' memory stays: a fault may still be reading it. */
		uhmm_simdev__set_hooks(dev, NULL);
		return 0;
	}
	/* The hooks run on the fault paths: not in the heap (docs/CONCURRENCY.md). */
	at = mmap(NULL, sizeof(*at), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (at == MAP_FAILED)
		return uhmm_set_error(ENOMEM, "simdev attach policy: out of memory");
	desc = (struct uhmm_policy_dev_desc){
		.ops = &simdev_policy_ops, .drv = dev, .owner = uhmm_simdev__owner(dev),
		.capacity_pages = uhmm_simdev__capacity(dev), .name = name,
	};
	ret = uhmm_policy_dev_add(pol, &desc);
	if (ret < 0) {
		munmap(at, sizeof(*at));
		return ret;
	}
	at->dev = dev;
	at->pol = pol;
	at->id = ret;
	at->hooks = (struct uhmm_simdev__hooks){
		.device_fault = hook_fault, .copy_valid = hook_copy_valid,
		.pages_home = hook_pages_home, .arg = at,
	};
	uhmm_simdev__set_hooks(dev, &at->hooks);
	if (id)
		*id = ret;
	return 0;
}
