/* SPDX-License-Identifier: MIT */
/* ptable.c: the sparse table of special page entries. */
#ifndef UHMM__PTABLE_H
#define UHMM__PTABLE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hidden.h"

/*
 * An entry is one 64-bit word per page, 0 when uhmm holds nothing special
 * for the page.  Readers use atomic loads and take no lock; writers change
 * an entry with compare-and-swap.  Interior nodes are never freed while the
 * context lives, so a reader can walk without a lock.
 */
#define UHMM__PTE_TYPE_MASK	UINT64_C(0x7)
#define UHMM__PTE_DEVICE		UINT64_C(1)	/* device-private page */
#define UHMM__PTE_MIGRATING	UINT64_C(2)	/* frozen by a migration */
#define UHMM__PTE_EXCLUSIVE	UINT64_C(3)	/* device-exclusive */
#define UHMM__PTE_BUSY		UINT64_C(4)	/* the service thread is filling it */
#define UHMM__PTE_WRITE		UINT64_C(0x8)	/* CPU mapping was writable */
#define UHMM__PTE_SOFT_DIRTY	UINT64_C(0x10)
#define UHMM__PTE_GONE		UINT64_C(0x20)	/* unmapped during a migration */
#define UHMM__PTE_PAYLOAD_SHIFT	8
/*
 * The payload of a MIGRATING entry names its page, so the migration that
 * holds it can find it again after a raw mremap moved it (service.c,
 * ptable_move(); migrate.c, "where a page is now"): a device page's pfn,
 * or for a system page frozen in staging a tag, this bit and the
 * migration's serial and the page's index (uhmm__pte_tag()).  No device
 * pfn has the bit (UHMM_DEVICE_PFN_BASE is bit 50 of the pfn).
 */
#define UHMM__PTE_TAG		(UINT64_C(1) << 55)

static inline uint64_t uhmm__pte_payload(uint64_t e)
{
	return e >> UHMM__PTE_PAYLOAD_SHIFT;
}

/* The payload of a frozen system page's entry: page @i of migration @serial. */
static inline uint64_t uhmm__pte_tag(uint32_t serial, uint64_t i)
{
	return UHMM__PTE_TAG | ((uint64_t)(serial & 0x7ffff) << 31) | (i & 0x7fffffff);
}

struct uhmm__ptable {
	_Atomic(void *) *top;		/* lazily mapped top level */
	size_t top_entries;
	atomic_long nr_entries;		/* non-zero leaf entries */
	atomic_long nr_nodes;		/* nodes allocated (for accounting) */
};

UHMM__HIDDEN int uhmm__ptable_init(struct uhmm__ptable *pt);
UHMM__HIDDEN void uhmm__ptable_destroy(struct uhmm__ptable *pt);
/* Entry for @addr, 0 if none. Lock free. */
UHMM__HIDDEN uint64_t uhmm__ptable_get(struct uhmm__ptable *pt, uintptr_t addr);
/* Pointer to the slot for @addr, allocating nodes; NULL on -ENOMEM. */
UHMM__HIDDEN _Atomic uint64_t *uhmm__ptable_slot(struct uhmm__ptable *pt,
						   uintptr_t addr, bool alloc);
/* CAS an entry; keeps nr_entries right.  True on success. */
UHMM__HIDDEN bool uhmm__ptable_cmpxchg(struct uhmm__ptable *pt,
					 _Atomic uint64_t *slot,
					 uint64_t *old, uint64_t new_val);
/* Call @fn for every non-zero entry in [start, end). Stops on non-zero return. */
typedef int (*uhmm__ptable_fn)(void *arg, uintptr_t addr, _Atomic uint64_t *slot,
			      uint64_t entry);
UHMM__HIDDEN int uhmm__ptable_walk(struct uhmm__ptable *pt, uintptr_t start,
				     uintptr_t end, uhmm__ptable_fn fn, void *arg);
static inline bool uhmm__ptable_empty(struct uhmm__ptable *pt)
{
	return atomic_load_explicit(&pt->nr_entries, memory_order_acquire) == 0;
}

#endif /* UHMM__PTABLE_H */
