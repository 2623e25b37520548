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
#include "devmem_priv.h"
#include "features_priv.h"
#include "inject_priv.h"
#include "log.h"
#include "migrate_priv.h"
#include "mm_priv.h"
#include "ownmem.h"
#include "pagestate_priv.h"
#include "ptable.h"
#include "range_priv.h"
#include "service.h"
#include "sigblock.h"
#include "sys.h"

#define MAX_PASSES 8

/* What a page needs; the DEVICE kinds are another owner's device pages. */
enum need {
	NEED_NONE = 0, NEED_READ, NEED_WRITE, NEED_DEVICE_READ, NEED_DEVICE_WRITE
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
	uint64_t e = uhmm__ptable_get(&mm->ptable, a);
	int ret;

	if ((e & UHMM_PTE_TYPE_MASK) != UHMM_PTE_DEVICE)
		return 0;		/* changed since the snapshot */
	ret = uhmm__fault_device(mm, a, e, write);
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

	if ((e & UHMM_PTE_TYPE_MASK) != UHMM_PTE_DEVICE || !range->dev_private_owner)
		return false;
	page = uhmm__pfn_to_page(mm, uhmm__pte_payload(e));
	return page && page->pgmap->owner == range->dev_private_owner;
}

/* As the kernel, which makes device-private entries read-only on mprotect. */
static uint64_t device_output(struct uhmm_mm *mm, uint64_t e, uint32_t st)
{
	uint64_t pfn = UHMM_PFN_VALID | UHMM_PFN_DEVICE_PRIVATE | uhmm__pte_payload(e);

	if ((e & UHMM_PTE_WRITE) && (st & UHMM_PS_MAYWRITE))
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
	size_t cn = UHMM_MIN(npages, (size_t)SNAPSHOT_CHUNK);
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
		size_t n = UHMM_MIN(cn, npages - base);
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

int uhmm_range_fault(struct uhmm_range *range)
{
	struct uhmm_interval_notifier *mni;
	struct uhmm_mm *mm;
	uint32_t *st = NULL;
	uint64_t *ent = NULL;
	uint8_t *need = NULL;
	bool sig = false;
	size_t npages;
	int ret = 0;

	if (!range || !range->notifier || !range->hmm_pfns)
		return uhmm__err(EINVAL, "range fault: NULL range, notifier or hmm_pfns");
	mni = range->notifier;
	mm = mni->mm;
	if (mm != &uhmm__the_mm || atomic_load(&mm->state) != UHMM_MM_LIVE)
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

	npages = (range->end - range->start) >> uhmm__page_shift;
	/*
	 * The walk and the faults hold locks the service thread's fault path
	 * takes too, and device pages: no handler here (sigblock.h).
	 */
	uhmm__sig_enter();
	sig = true;
	ret = snapshot_only(range, npages);
	if (ret <= 0)
		goto out;
	ret = 0;
	st = uhmm__malloc(npages * sizeof(*st));
	need = uhmm__malloc(npages);
	ent = uhmm__malloc(npages * sizeof(*ent));
	if (!st || !need || !ent) {
		ret = uhmm__err(ENOMEM, "range fault: out of memory");
		goto out;
	}

	for (int pass = 0;; pass++) {
		bool any_fault = false, fresh = false, wait_mig = false;
		int err = 0;

		if (uhmm_interval_check_retry(mni, range->notifier_seq)) {
			ret = -EBUSY;
			goto out;
		}
again:
		ret = uhmm__page_state(mm, range->start, npages, st, ent, fresh);
		if (ret)
			goto out;
		for (size_t i = 0; i < npages; i++) {
			uint64_t req = ((range->hmm_pfns[i] & range->pfn_flags_mask) |
					range->default_flags);
			uint32_t s = st[i];

			need[i] = NEED_NONE;
			if (!(req & UHMM_PFN_REQ_FAULT))
				continue;
			if (bad_mapping(s)) {
				err = err ? err : -EFAULT;
				continue;
			}
			if ((req & UHMM_PFN_REQ_WRITE) && !(s & UHMM_PS_MAYWRITE)) {
				err = err ? err : -EPERM;
				continue;
			}
			if ((ent[i] & UHMM_PTE_TYPE_MASK) == UHMM_PTE_MIGRATING ||
			    (ent[i] & UHMM_PTE_TYPE_MASK) == UHMM_PTE_BUSY) {
				/*
				 * As the kernel's migration entry wait: let the
				 * migration end and look again (faulting now
				 * could pull back a page it is giving to us).
				 */
				wait_mig = true;
				continue;
			}
			if (own_device(mm, range, ent[i])) {
				/* Ours: valid in place unless a write needs a writable entry. */
				if ((req & UHMM_PFN_REQ_WRITE) && !(ent[i] & UHMM_PTE_WRITE))
					need[i] = NEED_WRITE;
				any_fault |= need[i] != NEED_NONE;
				continue;
			}
			if ((ent[i] & UHMM_PTE_TYPE_MASK) == UHMM_PTE_DEVICE)
				need[i] = (req & UHMM_PFN_REQ_WRITE) ? NEED_DEVICE_WRITE
								     : NEED_DEVICE_READ;
			else if (!(s & UHMM_PS_PRESENT))
				need[i] = (req & UHMM_PFN_REQ_WRITE) ? NEED_WRITE : NEED_READ;
			else if ((req & UHMM_PFN_REQ_WRITE) && !(s & UHMM_PS_WRITABLE))
				need[i] = NEED_WRITE;
			any_fault |= need[i] != NEED_NONE;
		}
		if (err && !fresh) {
			/* The cached mappings list may be stale: read it again. */
			fresh = true;
			goto again;
		}
		if (err) {
			/* Nothing faulted: report which requests failed. */
			for (size_t i = 0; i < npages; i++) {
				uint64_t req = ((range->hmm_pfns[i] & range->pfn_flags_mask) |
						range->default_flags);
				uint32_t s = st[i];
				bool bad = (req & UHMM_PFN_REQ_FAULT) &&
					   (bad_mapping(s) ||
					    ((req & UHMM_PFN_REQ_WRITE) &&
					     !(s & UHMM_PS_MAYWRITE)));

				range->hmm_pfns[i] = bad ? UHMM_PFN_ERROR :
					bad_mapping(s) ? UHMM_PFN_ERROR :
					output(s, range->start + (i << uhmm__page_shift));
			}
			ret = uhmm__err(-err, "range fault: %s in [%#lx, %#lx)",
					err == -EPERM ? "write to a read-only mapping"
						      : "no mapping, no access or an IO mapping",
					(unsigned long)range->start,
					(unsigned long)range->end);
			goto out;
		}
		if (wait_mig) {
			if (pass >= MAX_PASSES) {
				ret = -EBUSY;
				goto out;
			}
			uhmm__wait_migrations(mm, range->start, range->end);
			continue;
		}
		if (!any_fault) {
			for (size_t i = 0; i < npages; i++) {
				uintptr_t a = range->start + (i << uhmm__page_shift);

				range->hmm_pfns[i] = bad_mapping(st[i]) ? UHMM_PFN_ERROR
									: output(st[i], a);
				if (own_device(mm, range, ent[i]) && !bad_mapping(st[i]))
					range->hmm_pfns[i] = device_output(mm, ent[i], st[i]);
			}
			break;
		}
		if (pass >= MAX_PASSES) {
			ret = -EBUSY;	/* pages keep changing under us */
			goto out;
		}
		for (size_t i = 0; i < npages;) {
			size_t j = i + 1;
			uintptr_t s;

			if (need[i] == NEED_NONE) {
				i++;
				continue;
			}
			if (need[i] == NEED_DEVICE_READ || need[i] == NEED_DEVICE_WRITE) {
				ret = fault_device_page(mm, range->start + (i << uhmm__page_shift),
							need[i] == NEED_DEVICE_WRITE);
				if (ret)
					goto out;
				i++;
				continue;
			}
			while (j < npages && need[j] == need[i])
				j++;
			s = range->start + (i << uhmm__page_shift);
			ret = fault_run(range, s, range->start + (j << uhmm__page_shift),
					need[i] == NEED_WRITE);
			if (ret == -EBUSY)
				goto out;
			if (ret) {
				ret = uhmm__err(-ret, "range fault: fault at [%#lx, %#lx) failed",
						(unsigned long)s,
						(unsigned long)(range->start +
								(j << uhmm__page_shift)));
				goto out;
			}
			i = j;
		}
	}
	if (uhmm_interval_check_retry(mni, range->notifier_seq))
		ret = -EBUSY;
out:
	if (sig)
		uhmm__sig_leave();
	uhmm__free(st);
	uhmm__free(ent);
	uhmm__free(need);
	if (ret == -EBUSY)
		uhmm__err(EBUSY, "range fault: [%#lx, %#lx) changed since the sequence was "
			  "read: read it again and retry", (unsigned long)range->start,
			  (unsigned long)range->end);
	return ret;
}
