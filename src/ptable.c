// SPDX-License-Identifier: MIT
/*
 * The table of special page entries: a four-level radix tree indexed by
 * virtual page number, like a page table.  Memory is proportional to the
 * 2 MiB regions that ever held a special entry (one 4 KiB leaf of 512
 * eight-byte entries each), nothing for untouched address space; the top
 * level is mapped lazily, so its untouched part costs no memory either.
 *
 * Concurrency: lookups are lock free (acquire loads down the tree).  Nodes
 * are published with compare-and-swap and never freed before the context is
 * torn down, so a lookup cannot see a freed node.  Entries change only by
 * compare-and-swap (uhmm__ptable_cmpxchg), which keeps nr_entries exact.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "base.h"
#include "features_priv.h"
#include "inject_priv.h"
#include "ownmem.h"
#include "ptable.h"

#define LVL_BITS	9
#define LVL_SIZE	(1u << LVL_BITS)
#define LVL_MASK	(LVL_SIZE - 1)
#define VA_BITS		57	/* enough for 5-level paging */

static unsigned int top_shift(void)
{
	return 3 * LVL_BITS;	/* vpn bits below the top level */
}

int uhmm__ptable_init(struct uhmm__ptable *pt)
{
	unsigned int bits = VA_BITS - uhmm__page_shift - top_shift();
	void *top;

	pt->top_entries = (size_t)1 << bits;
	/*
	 * calloc of this size is a fresh zero mapping (untouched parts cost
	 * nothing), and leak checkers can see the nodes it points to.
	 */
	top = uhmm__calloc(pt->top_entries, sizeof(void *));
	if (!top)
		return -ENOMEM;
	pt->top = top;
	atomic_store(&pt->nr_entries, 0);
	atomic_store(&pt->nr_nodes, 0);
	return 0;
}

static void free_level(void *node, int level)
{
	_Atomic(void *) *n = node;

	if (!node)
		return;
	if (level > 0)
		for (unsigned int i = 0; i < LVL_SIZE; i++)
			free_level(atomic_load_explicit(&n[i], memory_order_relaxed),
				   level - 1);
	uhmm__free(node);
}

void uhmm__ptable_destroy(struct uhmm__ptable *pt)
{
	if (!pt->top)
		return;
	for (size_t i = 0; i < pt->top_entries; i++) {
		void *n = atomic_load_explicit(&pt->top[i], memory_order_relaxed);

		if (n)
			free_level(n, 2);	/* l1 -> l2 -> leaf */
	}
	uhmm__free((void *)pt->top);
	pt->top = NULL;
	atomic_store(&pt->nr_entries, 0);
	atomic_store(&pt->nr_nodes, 0);
}

/* Get or create the child at @slot. */
static void *child(struct uhmm__ptable *pt, _Atomic(void *) *slot, bool alloc)
{
	void *n = atomic_load_explicit(slot, memory_order_acquire);
	void *expected = NULL;

	if (n || !alloc)
		return n;
	n = uhmm__calloc(LVL_SIZE, sizeof(uint64_t));
	if (!n)
		return NULL;
	if (!atomic_compare_exchange_strong_explicit(slot, &expected, n,
						     memory_order_acq_rel,
						     memory_order_acquire)) {
		uhmm__free(n);
		return expected;
	}
	atomic_fetch_add_explicit(&pt->nr_nodes, 1, memory_order_relaxed);
	return n;
}

_Atomic uint64_t *uhmm__ptable_slot(struct uhmm__ptable *pt, uintptr_t addr,
				    bool alloc)
{
	uint64_t vpn = (uint64_t)addr >> uhmm__page_shift;
	size_t ti = vpn >> top_shift();
	_Atomic(void *) *l1, *l2;
	_Atomic uint64_t *leaf;

	if (!pt->top || ti >= pt->top_entries)
		return NULL;
	l1 = child(pt, &pt->top[ti], alloc);
	if (!l1)
		return NULL;
	l2 = child(pt, &l1[(vpn >> (2 * LVL_BITS)) & LVL_MASK], alloc);
	if (!l2)
		return NULL;
	leaf = child(pt, &l2[(vpn >> LVL_BITS) & LVL_MASK], alloc);
	if (!leaf)
		return NULL;
	return &leaf[vpn & LVL_MASK];
}

uint64_t uhmm__ptable_get(struct uhmm__ptable *pt, uintptr_t addr)
{
	_Atomic uint64_t *slot;

	if (uhmm__ptable_empty(pt))
		return 0;
	slot = uhmm__ptable_slot(pt, addr, false);
	return slot ? atomic_load_explicit(slot, memory_order_acquire) : 0;
}

bool uhmm__ptable_cmpxchg(struct uhmm__ptable *pt, _Atomic uint64_t *slot,
			  uint64_t *old, uint64_t new_val)
{
	uint64_t was = *old;

	if (!atomic_compare_exchange_strong_explicit(slot, old, new_val,
						     memory_order_acq_rel,
						     memory_order_acquire))
		return false;
	if (!was && new_val)
		atomic_fetch_add_explicit(&pt->nr_entries, 1, memory_order_release);
	else if (was && !new_val)
		atomic_fetch_sub_explicit(&pt->nr_entries, 1, memory_order_release);
	return true;
}

int uhmm__ptable_walk(struct uhmm__ptable *pt, uintptr_t start, uintptr_t end,
		      uhmm__ptable_fn fn, void *arg)
{
	const unsigned int ps = uhmm__page_shift;
	uint64_t vpn = (uint64_t)start >> ps, vend = (uint64_t)end >> ps;

	if (uhmm__ptable_empty(pt) || !pt->top)
		return 0;
	while (vpn < vend) {
		size_t ti = vpn >> top_shift();
		_Atomic(void *) *l1, *l2;
		_Atomic uint64_t *leaf;
		uint64_t span;

		if (ti >= pt->top_entries)
			break;
		l1 = atomic_load_explicit(&pt->top[ti], memory_order_acquire);
		if (!l1) {
			vpn = ((uint64_t)ti + 1) << top_shift();
			continue;
		}
		l2 = atomic_load_explicit(&l1[(vpn >> (2 * LVL_BITS)) & LVL_MASK],
					  memory_order_acquire);
		if (!l2) {
			span = (uint64_t)1 << (2 * LVL_BITS);
			vpn = (vpn & ~(span - 1)) + span;
			continue;
		}
		leaf = atomic_load_explicit(&l2[(vpn >> LVL_BITS) & LVL_MASK],
					    memory_order_acquire);
		span = LVL_SIZE;
		if (!leaf) {
			vpn = (vpn & ~(span - 1)) + span;
			continue;
		}
		for (uint64_t v = vpn; v < vend && v < (vpn & ~(span - 1)) + span; v++) {
			_Atomic uint64_t *slot = &leaf[v & LVL_MASK];
			uint64_t e = atomic_load_explicit(slot, memory_order_acquire);
			int ret;

			if (!e)
				continue;
			ret = fn(arg, (uintptr_t)(v << ps), slot, e);
			if (ret)
				return ret;
		}
		vpn = (vpn & ~(span - 1)) + span;
	}
	return 0;
}
