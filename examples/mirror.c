// SPDX-License-Identifier: MIT
/*
 * A mirror-only device: it reads and writes the process's memory through
 * its own page table, which an interval notifier keeps coherent with the
 * CPU page table (the kernel's hmm_range_fault() + mmu_interval_notifier
 * pattern, docs/GUIDE.md "Mirroring").  Public headers only.
 *
 *   cc mirror.c $(pkg-config --cflags --libs uhmm) -o mirror && ./mirror
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <uhmm/uhmm.h>

#define NPAGES 16

struct mirror {
	struct uhmm_interval_notifier notifier;	/* zeroed, embedded */
	pthread_mutex_t lock;		/* the device page table lock */
	uintptr_t start;
	size_t page_size;
	uint64_t pt[NPAGES];		/* device page table: range_fault words */
	unsigned long faults, invalidations;
};

/* The CPU side changed: drop the device's mappings, under the table lock. */
static bool mirror_invalidate(struct uhmm_interval_notifier *mni,
			      const struct uhmm_notifier_range *r,
			      unsigned long cur_seq)
{
	struct mirror *m = (struct mirror *)((char *)mni -
					     offsetof(struct mirror, notifier));
	uintptr_t s = r->start > m->start ? r->start : m->start;
	uintptr_t e = r->end < m->start + NPAGES * m->page_size ?
		      r->end : m->start + NPAGES * m->page_size;

	pthread_mutex_lock(&m->lock);
	uhmm_interval_set_seq(mni, cur_seq);
	for (uintptr_t a = s; a < e; a += m->page_size)
		m->pt[(a - m->start) / m->page_size] = 0;
	m->invalidations++;
	pthread_mutex_unlock(&m->lock);
	return true;
}

static const struct uhmm_interval_notifier_ops mirror_ops = {
	.invalidate = mirror_invalidate,
};

/*
 * Device page fault: snapshot (and fault in) one page, then commit it to
 * the device page table only if no invalidation ran meanwhile.  Returns
 * with m->lock held and the page mapped, or a negative errno.
 */
static int mirror_fault_locked(struct mirror *m, size_t idx, bool write)
{
	uint64_t pfn;
	struct uhmm_range range = {
		.notifier = &m->notifier,
		.start = m->start + idx * m->page_size,
		.end = m->start + (idx + 1) * m->page_size,
		.hmm_pfns = &pfn,
		.default_flags = UHMM_PFN_REQ_FAULT | (write ? UHMM_PFN_REQ_WRITE : 0),
	};
	int ret;

	for (;;) {
		range.notifier_seq = uhmm_interval_read_begin(&m->notifier);
		ret = uhmm_range_fault(&range);
		if (ret == -EBUSY)
			continue;		/* invalidated meanwhile: again */
		if (ret)
			return ret;
		pthread_mutex_lock(&m->lock);
		if (!uhmm_interval_read_retry(&m->notifier, range.notifier_seq))
			break;			/* still valid: commit */
		pthread_mutex_unlock(&m->lock);
	}
	m->pt[idx] = pfn;
	m->faults++;
	return 0;
}

/* A device access to byte @off of the buffer, through the device page table. */
static int mirror_access(struct mirror *m, size_t off, uint8_t *val, bool write)
{
	size_t idx = off / m->page_size;
	uint64_t pte;
	int ret;

	pthread_mutex_lock(&m->lock);
	pte = m->pt[idx];
	if (!(pte & UHMM_PFN_VALID) || (write && !(pte & UHMM_PFN_WRITE))) {
		pthread_mutex_unlock(&m->lock);
		ret = mirror_fault_locked(m, idx, write);
		if (ret)
			return ret;
		pte = m->pt[idx];
	}
	/* The "DMA": the page's address, valid while the lock is held. */
	uint8_t *p = (uint8_t *)uhmm_pfn_to_addr(pte) + off % m->page_size;
	if (write)
		*p = *val;
	else
		*val = *p;
	pthread_mutex_unlock(&m->lock);
	return 0;
}

int main(void)
{
	struct mirror m = { .lock = PTHREAD_MUTEX_INITIALIZER };
	struct uhmm_mm *mm;
	uint8_t v;
	int ret, bad = 0;

	ret = uhmm_mm_get(&mm);
	if (ret) {	/* no userfaultfd here: "uhmm info" says why */
		printf("SKIP: uhmm_mm_get: %s (%s)\n", strerror(-ret), uhmm_last_error());
		return 77;
	}
	m.page_size = (size_t)sysconf(_SC_PAGESIZE);
	uint8_t *buf = mmap(NULL, NPAGES * m.page_size, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);	/* page aligned */
	if (buf == MAP_FAILED)
		return 1;
	m.start = (uintptr_t)buf;
	ret = uhmm_interval_notifier_insert(&m.notifier, mm, m.start,
					    NPAGES * m.page_size, &mirror_ops);
	if (ret)
		return printf("insert: %s\n", uhmm_last_error()), 1;

	/* 1. The CPU writes, the device reads the same bytes. */
	for (size_t i = 0; i < NPAGES; i++)
		buf[i * m.page_size] = (uint8_t)(i + 1);
	for (size_t i = 0; i < NPAGES; i++)
		bad += mirror_access(&m, i * m.page_size, &v, false) || v != i + 1;

	/* 2. The device writes, the CPU sees it. */
	v = 0xab;
	bad += mirror_access(&m, 5 * m.page_size + 7, &v, true) != 0;
	bad += buf[5 * m.page_size + 7] != 0xab;

	/* 3. The CPU discards pages: the notifier drops the device's
	 * mappings before madvise returns, so the device reads zeros, never
	 * the freed pages. */
	madvise(buf, 4 * m.page_size, MADV_DONTNEED);
	pthread_mutex_lock(&m.lock);
	bad += m.pt[0] != 0;
	pthread_mutex_unlock(&m.lock);
	bad += mirror_access(&m, 0, &v, false) || v != 0;

	printf("mirror: %lu device faults, %lu invalidations, %s\n",
	       m.faults, m.invalidations, bad ? "MISMATCH" : "all reads correct");
	uhmm_interval_notifier_remove(&m.notifier);
	munmap(buf, NPAGES * m.page_size);
	uhmm_mm_put(mm);
	return bad ? 1 : 0;
}
