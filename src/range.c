// SPDX-License-Identifier: MIT
/*
 * uhmm_range_fault(): the counterpart of the kernel's hmm_range_fault().
 *
 * One pass reads the CPU state of the whole range (pagestate.c) and decides,
 * page by page, what the request needs.  If any requested page cannot be
 * satisfied the call fails before faulting anything.  Otherwise the pages
 * that need a fault are faulted in runs (MADV_POPULATE_READ/WRITE, or a
 * touch from this thread on kernels without them, or where user-mode-only
 * userfaultfd refuses kernel-mode faults) and the range is read again,
 * until a pass needs no fault.  The notifier sequence is checked before and
 * after: any invalidation in between gives -EBUSY.
 */
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "context.h"
#include "devmem_priv.h"
#include "features_priv.h"
#include "inject_priv.h"
#include "log.h"
#include "migrate_priv.h"
#include "ownmem.h"
#include "pagestate_priv.h"
#include "ptable.h"
#include "range_priv.h"
#include "service.h"
#include "sigblock.h"
#include "sys.h"

#define MAX_PASSES 8

/*
 * What a page needs; the DEVICE kinds are another owner's device pages.
 * WAIT: a migration holds it; EFAULT, EPERM: its request cannot be met.
 */
enum need {
	NEED_NONE = 0, NEED_READ, NEED_WRITE, NEED_DEVICE_READ, NEED_DEVICE_WRITE,
	NEED_WAIT, NEED_EFAULT, NEED_EPERM
};

uintptr_t uhmm_pfn_to_addr(uint64_t pfn)
{
	if (!(pfn & UHMM_PFN_VALID) || (pfn & (UHMM_PFN_ERROR | UHMM_PFN_DEVICE_PRIVATE))) {
		uhmm__err(EINVAL, "uhmm_pfn_to_addr: %#llx is not a valid system pfn word",
			  (unsigned long long)pfn);
		return 0;
	}
	return (uintptr_t)((pfn & UHMM_PFN_NUMBER_MASK) << uhmm__page_shift);
}

/*
 * Touch pages from this thread, as the CPU would: the fallback fault path
 * (and make_exclusive's without MADV_POPULATE_WRITE).
 * The accesses are written in assembly: they fault pages in without
 * changing a byte (a write is an atomic add of zero), and a race detector
 * must not see them as accesses to data the application owns.
 */
void uhmm__touch_one(uintptr_t a, bool write)
{
#if defined(__x86_64__)
	if (write) {
		__asm__ __volatile__("lock; addb $0, (%0)" : : "r"(a) : "memory", "cc");
	} else {
		unsigned char v;

		__asm__ __volatile__("movb (%1), %0" : "=q"(v) : "r"(a) : "memory");
	}
#elif defined(__aarch64__)
	if (write) {
		unsigned int v, fail;

		__asm__ __volatile__("1: ldxrb %w0, [%2]\n"
				     "   stxrb %w1, %w0, [%2]\n"
				     "   cbnz %w1, 1b\n"
				     : "=&r"(v), "=&r"(fail) : "r"(a) : "memory");
	} else {
		unsigned int v;

		__asm__ __volatile__("ldrb %w0, [%1]" : "=r"(v) : "r"(a) : "memory");
	}
#else
	if (write)
		__atomic_fetch_add((volatile char *)a, 0, __ATOMIC_RELAXED);
	else
		(void)*(volatile const char *)a;
#endif
}

static void touch(uintptr_t s, uintptr_t e, bool write)
{
	for (uintptr_t a = s; a < e; a += uhmm__page_size)
		uhmm__touch_one(a, write);
}

static int fault_run(struct uhmm_range *range, uintptr_t s, uintptr_t e, bool write)
{
	struct uhmm_mm *mm = range->notifier->mm;
	int advice = write ? MADV_POPULATE_WRITE : MADV_POPULATE_READ;

	if (uhmm__has(UHMM_FEAT_MADV_POPULATE)) {
		if (uhmm__sys_madvise((void *)s, e - s, advice) == 0)
			return 0;
		/*
		 * EFAULT on memory uhmm itself registered: a user-mode-only
		 * userfaultfd refuses kernel-mode faults; touch instead.  Any
		 * other failure is the request's.
		 */
		if (errno != EFAULT ||
		    uhmm__sysinfo()->uffd_mode != UHMM_UFFD_USER_ONLY)
			return errno == EPERM || errno == EACCES ? -EPERM : -EFAULT;
	}
	/*
	 * Touch from this thread, as the CPU would.  Holding as_lock keeps
	 * wrapped munmap / mprotect of notified memory out; one that already
	 * happened since the snapshot changed the notifier's sequence.
	 */
	pthread_rwlock_rdlock(&mm->as_lock);
	if (uhmm_interval_check_retry(range->notifier, range->notifier_seq)) {
		pthread_rwlock_unlock(&mm->as_lock);
		return -EBUSY;
	}
	touch(s, e, write);
	pthread_rwlock_unlock(&mm->as_lock);
	return 0;
}

/*
 * Another owner's device page: bring it home from this thread, as the
 * kernel's range fault runs the fault (and so migrate_to_ram) itself,
 * instead of touching it and waiting for the service thread.  A page that
 * cannot come back fails the range fault (the kernel's VM_FAULT_ERROR);
 * one that is busy is looked at again in the next pass.
 */
static int fault_device_page(struct uhmm_mm *mm, uintptr_t a, bool write)
{
	struct uhmm__fault f = { .vmf = { .mm = mm, .address = a, .write = write } };
	uint64_t e = uhmm__ptable_get(&mm->ptable, a);
	int ret;

	if ((e & UHMM__PTE_TYPE_MASK) != UHMM__PTE_DEVICE)
		return 0;		/* changed since the snapshot */
	ret = uhmm__fault_device(&f, e);
	if (ret == -EAGAIN) {
		sched_yield();
		return 0;
	}
	if (ret)
		return uhmm__err(ret == -ENOMEM ? ENOMEM : EFAULT,
				 "range fault: the device could not give %#lx back (%d)",
				 (unsigned long)a, ret);
	return 0;
}

/*
 * The output word of a page from its state.  A page of a hugetlbfs mapping
 * carries its huge page order whether present or not, as the kernel's
 * hugetlb walk (hmm_vma_walk_hugetlb_entry) ORs the order into every word.
 */
static uint64_t output(uint32_t st, uintptr_t addr)
{
	uint64_t order = (st & UHMM__PS_ORDER_MASK) >> UHMM__PS_ORDER_SHIFT;
	uint64_t pfn;

	if (!(st & UHMM_PS_READ) || !(st & UHMM_PS_MAPPED))
		return 0;
	if (!(st & UHMM_PS_PRESENT))
		return order << UHMM_PFN_ORDER_SHIFT;
	pfn = UHMM_PFN_VALID | (uint64_t)(addr >> uhmm__page_shift);
	if (st & UHMM_PS_WRITABLE)
		pfn |= UHMM_PFN_WRITE;
	if (st & UHMM_PS_ZERO)
		pfn |= UHMM_PFN_ZERO;
	if (!order && (st & UHMM_PS_HUGE))
		order = 21 - uhmm__page_shift;
	return pfn | order << UHMM_PFN_ORDER_SHIFT;
}

/* Is @e a device-private entry of the range's owner? */
static bool own_device(struct uhmm_mm *mm, const struct uhmm_range *range, uint64_t e)
{
	struct uhmm_page *page;

	if ((e & UHMM__PTE_TYPE_MASK) != UHMM__PTE_DEVICE || !range->dev_private_owner)
		return false;
	page = uhmm__pfn_to_page(mm, uhmm__pte_payload(e));
	return page && page->pgmap->owner == range->dev_private_owner;
}

/* As the kernel, which makes device-private entries read-only on mprotect. */
static uint64_t device_output(struct uhmm_mm *mm, uint64_t e, uint32_t st)
{
	uint64_t pfn = UHMM_PFN_VALID | UHMM_PFN_DEVICE_PRIVATE | uhmm__pte_payload(e);

	if ((e & UHMM__PTE_WRITE) && (st & UHMM_PS_MAYWRITE))
		pfn |= UHMM_PFN_WRITE;
	/* A whole compound device page: its order, as the kernel's PMD entry. */
	return pfn | (uint64_t)uhmm__device_order(mm, e) << UHMM_PFN_ORDER_SHIFT;
}

/*
 * Mappings a range fault cannot mirror: holes, no read access, IO/PFNMAP.
 * hugetlbfs is mirrored, as the kernel's range fault does.
 */
static bool bad_mapping(uint32_t st)
{
	return !(st & UHMM_PS_MAPPED) || !(st & UHMM_PS_READ) || (st & UHMM_PS_SPECIAL);
}

#define SNAPSHOT_CHUNK	8192u	/* pages per page-state read of snapshot_only() */

/* Our own device pages in a snapshot, as the general path reports them. */
static void snapshot_special(void *arg, uint64_t *pfn, uint64_t e, uint32_t vma_bits)
{
	struct uhmm_range *range = arg;

	if (own_device(range->notifier->mm, range, e))
		*pfn = device_output(range->notifier->mm, e, vma_bits);
}

/*
 * A range fault in which no page requests a fault: one pass over pagemap
 * (uhmm__page_pfns()) writing hmm_pfns directly, or without PAGEMAP_SCAN
 * the page state chunk by chunk (buffers that stay in cache), with the
 * same output the general path gives.  Returns 1 when some page does
 * request a fault (the general path runs), otherwise 0 or a negative errno.
 */
static int snapshot_only(struct uhmm_range *range, size_t npages)
{
	struct uhmm_interval_notifier *mni = range->notifier;
	struct uhmm_mm *mm = mni->mm;
	size_t cn = UHMM__MIN(npages, (size_t)SNAPSHOT_CHUNK);
	uint64_t fault_mask = range->pfn_flags_mask & UHMM_PFN_REQ_FAULT;
	uint32_t *st = NULL;
	uint64_t *ent = NULL;
	int ret = 0;

	if (range->default_flags & UHMM_PFN_REQ_FAULT)
		return 1;
	if (fault_mask)
		for (size_t i = 0; i < npages; i++)
			if (range->hmm_pfns[i] & fault_mask)
				return 1;
	if (uhmm_interval_check_retry(mni, range->notifier_seq))
		return -EBUSY;
	ret = uhmm__page_pfns(mm, range->start, npages, range->hmm_pfns, snapshot_special, range);
	if (ret <= 0)
		goto check;
	/* Without PAGEMAP_SCAN: from the page state, chunk by chunk. */
	ret = 0;
	st = uhmm__malloc(cn * sizeof(*st));
	ent = uhmm__malloc(cn * sizeof(*ent));
	if (!st || !ent) {
		ret = uhmm__err(ENOMEM, "range fault: out of memory");
		goto out;
	}
	for (size_t base = 0; base < npages; base += cn) {
		size_t n = UHMM__MIN(cn, npages - base);
		uintptr_t cs = range->start + (base << uhmm__page_shift);
		uint64_t *o = range->hmm_pfns + base;

		ret = uhmm__page_state(mm, cs, n, st, ent, false);
		if (ret)
			goto out;
		for (size_t i = 0; i < n; i++) {
			if (bad_mapping(st[i]))
				o[i] = UHMM_PFN_ERROR;
			else if (own_device(mm, range, ent[i]))
				o[i] = device_output(mm, ent[i], st[i]);
			else
				o[i] = output(st[i], cs + (i << uhmm__page_shift));
		}
	}
check:
	if (!ret && uhmm_interval_check_retry(mni, range->notifier_seq))
		ret = -EBUSY;
out:
	uhmm__free(st);
	uhmm__free(ent);
	return ret;
}

/* A page's request (hmm_pfns[i] under the mask, or the default), decoded. */
#define WANT_FAULT	(1u << 0)
#define WANT_WRITE	(1u << 1)

/* One range fault's walk over its pages, repeated until nothing is needed. */
struct walk {
	struct uhmm_range *range;
	struct uhmm_mm *mm;
	size_t npages;
	uint8_t *want;		/* WANT_* of page i, decoded once */
	uint32_t *st;		/* page state of page i */
	uint64_t *ent;		/* special entry of page i */
	uint8_t *need;		/* enum need of page i */
	bool any_fault;		/* some page needs a fault */
	bool wait_mig;		/* some page waits for a migration */
	int err;		/* the first request that cannot be met */
};

/* The arguments and the context: 0 or the error to return. */
static int range_check(struct uhmm_range *range)
{
	struct uhmm_interval_notifier *mni;
	struct uhmm_mm *mm;

	if (!range || !range->notifier || !range->hmm_pfns)
		return uhmm__err(EINVAL, "range fault: NULL range, notifier or hmm_pfns");
	mni = range->notifier;
	mm = mni->mm;
	if (mm != &uhmm__the_mm || atomic_load(&mm->state) != UHMM__MM_LIVE)
		return uhmm__err(EINVAL, "range fault: notifier is not inserted in a live context");
	if (!uhmm__page_aligned(range->start) || !uhmm__page_aligned(range->end) ||
	    range->end <= range->start)
		return uhmm__err(EINVAL, "range fault: [%#lx, %#lx) is empty or not page aligned",
				 (unsigned long)range->start, (unsigned long)range->end);
	if (range->start < mni->start || (mni->end && range->end > mni->end))
		return uhmm__err(EINVAL, "range fault: [%#lx, %#lx) is not inside the notifier",
				 (unsigned long)range->start, (unsigned long)range->end);
	if (uhmm__in_callback())
		return uhmm__err(EDEADLK, "range fault from a uhmm callback would deadlock");
	/* No entry of a freed mapping's is reported for its successor. */
	uhmm__events_catch_up(mm);
	return 0;
}

/* Decode every page's request once: the walk's passes do not change it. */
static void decode_requests(struct walk *w)
{
	const struct uhmm_range *range = w->range;

	for (size_t i = 0; i < w->npages; i++) {
		uint64_t req = (range->hmm_pfns[i] & range->pfn_flags_mask) |
			       range->default_flags;

		w->want[i] = ((req & UHMM_PFN_REQ_FAULT) ? WANT_FAULT : 0) |
			     ((req & UHMM_PFN_REQ_WRITE) ? WANT_WRITE : 0);
	}
}

/* The per-page decision (the kernel's hmm_pte_need_fault). */
static enum need need_fault(const struct walk *w, size_t i)
{
	unsigned int want = w->want[i];
	bool write = want & WANT_WRITE;
	uint32_t s = w->st[i];
	uint64_t e = w->ent[i], type = e & UHMM__PTE_TYPE_MASK;

	if (!(want & WANT_FAULT))
		return NEED_NONE;
	if (bad_mapping(s))
		return NEED_EFAULT;
	if (write && !(s & UHMM_PS_MAYWRITE))
		return NEED_EPERM;
	/*
	 * As the kernel's migration entry wait: let the migration end and
	 * look again (faulting now could pull back a page it is giving to us).
	 */
	if (type == UHMM__PTE_MIGRATING || type == UHMM__PTE_BUSY)
		return NEED_WAIT;
	/* Ours: valid in place unless a write needs a writable entry. */
	if (own_device(w->mm, w->range, e))
		return write && !(e & UHMM__PTE_WRITE) ? NEED_WRITE : NEED_NONE;
	if (type == UHMM__PTE_DEVICE)
		return write ? NEED_DEVICE_WRITE : NEED_DEVICE_READ;
	if (!(s & UHMM_PS_PRESENT))
		return write ? NEED_WRITE : NEED_READ;
	if (write && !(s & UHMM_PS_WRITABLE))
		return NEED_WRITE;
	return NEED_NONE;
}

/*
 * Read the pages' state and decide what each needs.  A request that
 * cannot be met reads the mappings again, not from the cache, once, and
 * the decision is the fresh read's alone: as the kernel's hmm_range_fault
 * returns what its last walk found, a page that is fine when looked at
 * again is not an error (tests/test_range_fault.c, fresh_reread).
 */
static int walk_decide(struct walk *w)
{
	for (bool fresh = false;; fresh = true) {
		int ret = uhmm__page_state(w->mm, w->range->start, w->npages, w->st,
					   w->ent, fresh);

		if (ret)
			return ret;
		w->err = 0;
		w->any_fault = w->wait_mig = false;
		for (size_t i = 0; i < w->npages; i++) {
			w->need[i] = need_fault(w, i);
			if (w->need[i] == NEED_EFAULT || w->need[i] == NEED_EPERM)
				w->err = w->err ? w->err :
					 w->need[i] == NEED_EPERM ? -EPERM : -EFAULT;
			else if (w->need[i] == NEED_WAIT)
				w->wait_mig = true;
			else
				w->any_fault |= w->need[i] != NEED_NONE;
		}
		if (!w->err || fresh)
			return 0;
	}
}

/* Nothing faulted: report which requests failed, the rest as they are. */
static int report_errors(struct walk *w)
{
	struct uhmm_range *range = w->range;

	for (size_t i = 0; i < w->npages; i++) {
		bool bad = w->need[i] == NEED_EFAULT || w->need[i] == NEED_EPERM;

		range->hmm_pfns[i] = bad || bad_mapping(w->st[i]) ? UHMM_PFN_ERROR :
			output(w->st[i], range->start + (i << uhmm__page_shift));
	}
	return uhmm__err(-w->err, "range fault: %s in [%#lx, %#lx)",
			 w->err == -EPERM ? "write to a read-only mapping"
					  : "no mapping, no access or an IO mapping",
			 (unsigned long)range->start, (unsigned long)range->end);
}

/* Every request is met: write the output words. */
static void write_output(struct walk *w)
{
	struct uhmm_range *range = w->range;

	for (size_t i = 0; i < w->npages; i++) {
		uintptr_t a = range->start + (i << uhmm__page_shift);

		range->hmm_pfns[i] = bad_mapping(w->st[i]) ? UHMM_PFN_ERROR
							   : output(w->st[i], a);
		if (own_device(w->mm, range, w->ent[i]) && !bad_mapping(w->st[i]))
			range->hmm_pfns[i] = device_output(w->mm, w->ent[i], w->st[i]);
	}
}

/* Fault what the pages need: another owner's device pages one by one, runs of the rest. */
static int fault_pages(struct walk *w)
{
	struct uhmm_range *range = w->range;
	const unsigned int ps = uhmm__page_shift;
	int ret;

	for (size_t i = 0, j; i < w->npages; i = j) {
		j = i + 1;
		if (w->need[i] == NEED_NONE)
			continue;
		if (w->need[i] == NEED_DEVICE_READ || w->need[i] == NEED_DEVICE_WRITE) {
			ret = fault_device_page(w->mm, range->start + (i << ps),
						w->need[i] == NEED_DEVICE_WRITE);
			if (ret)
				return ret;
			continue;
		}
		while (j < w->npages && w->need[j] == w->need[i])
			j++;
		ret = fault_run(range, range->start + (i << ps), range->start + (j << ps),
				w->need[i] == NEED_WRITE);
		if (ret == -EBUSY)
			return ret;
		/*
		 * MADV_POPULATE_* fails with EFAULT once a wrapped mprotect
		 * (or munmap) came in after the walk's look; that change has
		 * run the notifiers, so the sequence moved: -EBUSY, and the
		 * caller's next walk sees the new mapping (-EPERM for a write
		 * to what is now read-only), as the kernel's range fault,
		 * under mmap_lock, sees one or the other (round 5 hunt).
		 */
		if (ret && uhmm_interval_check_retry(range->notifier, range->notifier_seq))
			return -EBUSY;
		if (ret)
			return uhmm__err(-ret, "range fault: fault at [%#lx, %#lx) failed",
					 (unsigned long)(range->start + (i << ps)),
					 (unsigned long)(range->start + (j << ps)));
	}
	return 0;
}

/*
 * The walk, repeated while pages needed a fault (the kernel's
 * hmm_range_fault repeats its walk while it returns -EBUSY): decide,
 * fault, look again, until every request is met, one cannot be, or the
 * notifier's sequence moved (-EBUSY).
 */
static int walk_passes(struct walk *w)
{
	struct uhmm_interval_notifier *mni = w->range->notifier;
	int ret;

	for (int pass = 0;; pass++) {
		if (uhmm_interval_check_retry(mni, w->range->notifier_seq))
			return -EBUSY;
		ret = walk_decide(w);
		if (ret)
			return ret;
		if (w->err)
			return report_errors(w);
		if (w->wait_mig) {
			if (pass >= MAX_PASSES)
				return -EBUSY;
			uhmm__wait_migrations(w->mm, w->range->start, w->range->end);
			continue;
		}
		if (!w->any_fault) {
			write_output(w);
			return uhmm_interval_check_retry(mni, w->range->notifier_seq) ? -EBUSY : 0;
		}
		if (pass >= MAX_PASSES)
			return -EBUSY;	/* pages keep changing under us */
		ret = fault_pages(w);
		if (ret)
			return ret;
	}
}

/* The general path: some page requests a fault. */
static int range_walk(struct uhmm_range *range, size_t npages)
{
	struct walk w = {
		.range = range, .mm = range->notifier->mm, .npages = npages,
		.want = uhmm__malloc(npages),
		.st = uhmm__malloc(npages * sizeof(*w.st)),
		.ent = uhmm__malloc(npages * sizeof(*w.ent)),
		.need = uhmm__malloc(npages),
	};
	int ret;

	if (!w.want || !w.st || !w.ent || !w.need) {
		ret = uhmm__err(ENOMEM, "range fault: out of memory");
	} else {
		decode_requests(&w);
		ret = walk_passes(&w);
	}
	uhmm__free(w.want);
	uhmm__free(w.st);
	uhmm__free(w.ent);
	uhmm__free(w.need);
	return ret;
}

int uhmm_range_fault(struct uhmm_range *range)
{
	size_t npages;
	int ret = range_check(range);

	if (ret)
		return ret;
	npages = (range->end - range->start) >> uhmm__page_shift;
	/*
	 * The walk and the faults hold locks the service thread's fault path
	 * takes too, and device pages: no handler here (sigblock.h).
	 */
	uhmm__sig_enter();
	ret = snapshot_only(range, npages);
	if (ret > 0)
		ret = range_walk(range, npages);
	uhmm__sig_leave();
	if (ret == -EBUSY)
		uhmm__err(EBUSY, "range fault: [%#lx, %#lx) changed since the sequence was "
			  "read: read it again and retry", (unsigned long)range->start,
			  (unsigned long)range->end);
	return ret;
}
