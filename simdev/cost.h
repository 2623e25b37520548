/* SPDX-License-Identifier: MIT */
/*
 * simdev's cost model (include/uhmm/simdev.h, "cost model"): simulated time
 * accrued per operation.  Internal to libuhmm_simdev; simdev.c calls these
 * from its migration, fault and translation paths, each once per batch,
 * per fault or per page, never per load or store.
 *
 * Thread safety: every counter is an atomic added to with relaxed order;
 * the model in use is an immutable copy published through an atomic
 * pointer (a replaced copy stays allocated until sd_cost_fini(), so a
 * reader that loaded it may go on using it).  @lock guards the fault batch
 * and the list of copies; it is a leaf lock (nothing else is taken under
 * it, and it is taken with no lock of simdev's held or with dev->lock
 * held only around a TLB fill, which does not take it).
 */
#ifndef UHMM_SIMDEV_COST_H
#define UHMM_SIMDEV_COST_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <uhmm/simdev.h>

enum sd_part { SD_H2D, SD_D2H, SD_FAULT, SD_CPU_FAULT, SD_MEM, SD_PARTS };
enum sd_count {
	SD_N_H2D_BYTES, SD_N_D2H_BYTES, SD_N_MEM_BYTES, SD_N_H2D_XFERS, SD_N_D2H_XFERS,
	SD_N_FAULTS, SD_N_BATCHES, SD_N_CPU_FAULTS, SD_COUNTS
};

struct sd_model;

struct sd_cost {
	_Atomic(struct sd_model *) model;	/* NULL: nothing accrues */
	atomic_ullong ps[SD_PARTS];		/* simulated time per part */
	atomic_ullong n[SD_COUNTS];
	pthread_mutex_t lock;
	struct sd_model *all;			/* every copy set (under lock) */
	uint64_t batch_open_ps;			/* clock when the open batch opened */
	uint32_t batch_n;			/* faults in it; 0: none open */
};

__attribute__((visibility("hidden"))) void sd_cost_init(struct sd_cost *c);
__attribute__((visibility("hidden"))) void sd_cost_fini(struct sd_cost *c);
/* 0, -EINVAL (bad figures) or -ENOMEM; NULL removes the model. */
__attribute__((visibility("hidden"))) int sd_cost_set(struct sd_cost *c,
						      const struct uhmm_simdev_model *m);
/* 0 or -ENOENT (no model). */
__attribute__((visibility("hidden"))) int sd_cost_model(struct sd_cost *c,
							struct uhmm_simdev_model *out);
/* The model named by UHMM_SIMDEV_MODEL, if set: 0 or -EINVAL (unknown name). */
__attribute__((visibility("hidden"))) int sd_cost_from_env(struct sd_cost *c);
__attribute__((visibility("hidden"))) void sd_cost_get(struct sd_cost *c,
						       struct uhmm_simdev_cost *out);
__attribute__((visibility("hidden"))) void sd_cost_reset(struct sd_cost *c);

/* One transfer of @bytes over the link (latency + bytes); nothing for 0 bytes. */
__attribute__((visibility("hidden"))) void sd_cost_transfer(struct sd_cost *c, bool to_dev,
							    uint64_t bytes);
/* Device traffic without a transfer's latency: device memory, or the link in place. */
__attribute__((visibility("hidden"))) void sd_cost_access(struct sd_cost *c, bool dev_mem,
							  bool write, uint64_t bytes);
/* One device fault (batched). */
__attribute__((visibility("hidden"))) void sd_cost_device_fault(struct sd_cost *c);
/* One CPU fault on device memory (its transfers are charged separately). */
__attribute__((visibility("hidden"))) void sd_cost_cpu_fault(struct sd_cost *c);
/* Is a device holding @used pages of @ps bytes at the model's capacity? */
__attribute__((visibility("hidden"))) bool sd_cost_full(struct sd_cost *c, uint64_t used,
							uint64_t ps);

#endif
