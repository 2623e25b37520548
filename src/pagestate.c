// SPDX-License-Identifier: MIT
/*
 * CPU page state of a range: pagemap entries, PAGEMAP_SCAN categories (zero
 * page, PMD-mapped huge page), the mappings list and uhmm's special entries.
 *
 * Without PAGEMAP_SCAN the zero page and huge mappings are recognised from
 * page frame numbers, which only root can read: an unprivileged process on a
 * kernel older than 6.7 sees neither (documented in the README).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base.h"
#include "context.h"
#include "devmem_priv.h"
#include "exclusive_priv.h"
#include "features_priv.h"
#include "inject_priv.h"
#include "log.h"
#include "ownmem.h"
#include "pagemap.h"
#include "pagestate_priv.h"
#include "ptable.h"
#include "sigblock.h"
#include "sys.h"
#include "vma.h"

#define CHUNK_PAGES	65536u		/* pagemap entries read at a time */
#define SCAN_REGIONS	256u

static pthread_mutex_t zero_lock = PTHREAD_MUTEX_INITIALIZER;	/* the probe below */
static uint64_t zero_pfn;		/* 0: unknown */
static uint64_t huge_zero_pfn;		/* first frame of the huge zero page, 0: unknown */
static bool zero_pfn_probed;

void uhmm__pagestate_atfork_child(void)
{
	pthread_mutex_init(&zero_lock, NULL);
}

/* The zero page's frame number, for the no-PAGEMAP_SCAN path (root only). */
static uint64_t find_zero_pfn(int fd)
{
	volatile char *p;
	uint64_t e = 0;

	pthread_mutex_lock(&zero_lock);
	if (zero_pfn_probed) {
		pthread_mutex_unlock(&zero_lock);
		return zero_pfn;
	}
	zero_pfn_probed = true;
	if (uhmm__sysinfo()->zero_page == 1) {
		p = uhmm__sys_mmap(NULL, uhmm__page_size, PROT_READ,
				   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if ((void *)p != MAP_FAILED) {
			(void)p[0];
			if (uhmm__pagemap_read(fd, (uintptr_t)p, 1, &e) == 0 && (e & PM_PRESENT))
				zero_pfn = e & PM_PFN_MASK;
			uhmm__sys_munmap((void *)p, uhmm__page_size);
		}
		/* The huge zero page: a read fault of an aligned THP region. */
		{
			const size_t huge = 2u << 20;
			char *r = uhmm__sys_mmap(NULL, 2 * huge, PROT_READ,
						 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

			if (r != MAP_FAILED) {
				volatile char *a = (char *)(((uintptr_t)r + huge - 1) &
							    ~(uintptr_t)(huge - 1));

				uhmm__sys_madvise((void *)a, huge, MADV_HUGEPAGE);
				(void)a[0];
				if (uhmm__pagemap_read(fd, (uintptr_t)a, 1, &e) == 0 &&
				    (e & PM_PRESENT) && (e & PM_PFN_MASK) &&
				    (e & PM_PFN_MASK) != zero_pfn)
					huge_zero_pfn = e & PM_PFN_MASK;
				uhmm__sys_munmap(r, 2 * huge);
			}
		}
	}
	pthread_mutex_unlock(&zero_lock);
	return zero_pfn;
}

/*
 * Mark ZERO / HUGE bits in @out for [start, start + n pages) with
 * PAGEMAP_SCAN; or, with @out NULL, in the range fault words @pfns of the
 * present (VALID) pages: the zero page is not writable.
 */
static int scan_categories(int fd, uintptr_t start, size_t n, uint32_t *out, uint64_t *pfns)
{
	struct page_region regs[SCAN_REGIONS];
	uintptr_t end = start + (n << uhmm__page_shift);
	uintptr_t cur = start;

	while (cur < end) {
		struct pm_scan_arg arg = {
			.size = sizeof(arg),
			.start = cur,
			.end = end,
			.vec = (uintptr_t)regs,
			.vec_len = SCAN_REGIONS,
			.category_anyof_mask = PAGE_IS_PFNZERO | PAGE_IS_HUGE,
			.return_mask = PAGE_IS_PFNZERO | PAGE_IS_HUGE,
		};
		long got = ioctl(fd, PAGEMAP_SCAN, &arg);

		if (got < 0)
			return uhmm__proc_err(errno);
		for (long i = 0; i < got; i++) {
			uint32_t bits = 0;

			if (regs[i].categories & PAGE_IS_PFNZERO)
				bits |= UHMM_PS_ZERO;
			if (regs[i].categories & PAGE_IS_HUGE)
				bits |= UHMM_PS_HUGE;
			if (out) {
				for (uintptr_t a = regs[i].start; a < regs[i].end;
				     a += uhmm__page_size)
					out[(a - start) >> uhmm__page_shift] |= bits;
				continue;
			}
			for (uintptr_t a = regs[i].start; a < regs[i].end; a += uhmm__page_size) {
				uint64_t *w = &pfns[(a - start) >> uhmm__page_shift];

				if (!(*w & UHMM_PFN_VALID))
					continue;
				if (bits & UHMM_PS_ZERO)
					*w = (*w & ~UHMM_PFN_WRITE) | UHMM_PFN_ZERO;
				if (bits & UHMM_PS_HUGE)
					*w |= (uint64_t)(21 - uhmm__page_shift)
					      << UHMM_PFN_ORDER_SHIFT;
			}
		}
		if (arg.walk_end <= cur)
			break;
		cur = arg.walk_end;
	}
	return 0;
}

/*
 * Can PAGEMAP_SCAN tell anything about these @n pagemap entries of one
 * 2 MiB-aligned block, the first at @first?  ZERO and HUGE only count for
 * present pages (the caller drops them elsewhere).  The zero page, small
 * or huge, is never mapped exclusively: pagemap sets bit 56 only for a
 * page with a struct page mapped once (vm_normal_page() gives none for the
 * zero pfn; the huge zero folio is never counted as mapped).  A PMD-mapped
 * huge page is present on all its pages, and where frame numbers are
 * visible (root) they run on from a 2 MiB-aligned frame.  So a block whose
 * present pages are all exclusive, and which has a hole or frames that
 * cannot be one huge page, needs no scan; anything else is scanned.
 */
static bool block_needs_scan(const uint64_t *pm, size_t n, uintptr_t first)
{
	const uint64_t hp = (2u << 20) >> uhmm__page_shift;
	uint64_t k0 = (first >> uhmm__page_shift) & (hp - 1);
	uint64_t base = UINT64_MAX;
	bool all_present = true, frames_ok = true;

	for (size_t i = 0; i < n; i++) {
		uint64_t e = pm[i], pfn = e & PM_PFN_MASK, b;

		if (!(e & PM_PRESENT)) {
			all_present = false;
			continue;
		}
		if (!(e & PM_MMAP_EXCLUSIVE))
			return true;		/* could be the zero page */
		if (!pfn)
			continue;		/* frame numbers hidden */
		b = pfn - (k0 + i);
		if ((b & (hp - 1)) || (base != UINT64_MAX && b != base))
			frames_ok = false;
		base = b;
	}
	return all_present && frames_ok;
}

/* scan_categories() on the runs of 2 MiB blocks that block_needs_scan(). */
static int scan_where_needed(int fd, uintptr_t start, size_t n, const uint64_t *pm,
			     uint32_t *out)
{
	const size_t hp = (2u << 20) >> uhmm__page_shift;
	size_t i = 0, run = SIZE_MAX;
	int ret;

	while (i < n) {
		uintptr_t a = start + (i << uhmm__page_shift);
		size_t bn = UHMM__MIN(n - i, hp - ((a >> uhmm__page_shift) & (hp - 1)));

		if (block_needs_scan(pm + i, bn, a)) {
			if (run == SIZE_MAX)
				run = i;
		} else if (run != SIZE_MAX) {
			ret = scan_categories(fd, start + (run << uhmm__page_shift), i - run,
					      out + run, NULL);
			if (ret)
				return ret;
			run = SIZE_MAX;
		}
		i += bn;
	}
	if (run != SIZE_MAX)
		return scan_categories(fd, start + (run << uhmm__page_shift), n - run,
				       out + run, NULL);
	return 0;
}

/* AnonHugePages (kB) of the mapping containing @addr, from smaps; -1 unknown. */
static long smaps_anon_huge_kb(uintptr_t addr)
{
	FILE *f = fopen("/proc/self/smaps", "re");
	char line[512];
	bool in = false;
	long kb = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		unsigned long s, e;

		if (sscanf(line, "%lx-%lx ", &s, &e) == 2 && strchr(line, ' ') &&
		    line[strcspn(line, " ") - 1] != ':') {
			if (in)
				break;
			in = s <= addr && addr < e;
			continue;
		}
		if (in && sscanf(line, "AnonHugePages: %ld kB", &kb) == 1)
			break;
	}
	fclose(f);
	return kb;
}

/* Is @addr in a hugetlbfs mapping of @vmas (sorted, @nv of them)? */
static bool in_hugetlb(const struct uhmm__vma *vmas, size_t nv, uintptr_t addr)
{
	size_t lo = 0, hi = nv;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (vmas[mid].end <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < nv && vmas[lo].start <= addr && (vmas[lo].flags & UHMM__VMA_HUGETLB);
}

/*
 * Without PAGEMAP_SCAN (root only: frame numbers are needed): the zero page
 * by its frame number; a huge page as a 2 MiB-aligned block whose 512 pages
 * are present with consecutive frame numbers starting 2 MiB-aligned, in a
 * mapping whose smaps shows AnonHugePages (a split block keeps consecutive
 * frames until the kernel splits the page itself, but no longer counts
 * there).  The whole enclosing block is read, so the answer for a page does
 * not depend on the range asked about.
 */
static void pfn_categories(int fd, uintptr_t start, size_t n, const uint64_t *pm,
			   uint32_t *out, const struct uhmm__vma *vmas, size_t nv)
{
	const size_t huge_pages = (2u << 20) >> uhmm__page_shift;
	const uintptr_t huge = 2u << 20;
	uintptr_t end = start + (n << uhmm__page_shift);
	uint64_t zpfn = find_zero_pfn(fd);
	uint64_t *blk;
	bool any = false;

	for (size_t i = 0; i < n; i++) {
		uint64_t pfn = pm[i] & PM_PFN_MASK;

		if (!(pm[i] & PM_PRESENT) || !pfn)
			continue;
		any = true;
		if ((zpfn && pfn == zpfn) ||
		    (huge_zero_pfn && pfn >= huge_zero_pfn &&
		     pfn < huge_zero_pfn + ((2u << 20) >> uhmm__page_shift)))
			out[i] |= UHMM_PS_ZERO;
	}
	if (!any)
		return;		/* nothing present, or frame numbers hidden */
	blk = uhmm__malloc(huge_pages * sizeof(*blk));
	if (!blk)
		return;
	for (uintptr_t b = start & ~(huge - 1); b < end; b += huge) {
		uint64_t pfn0;
		bool ok;

		/*
		 * A hugetlbfs mapping's order is its own (uhmm__page_state()
		 * takes it from the mapping): no smaps read per block for it.
		 */
		if (in_hugetlb(vmas, nv, b))
			continue;
		if (uhmm__pagemap_read(fd, b, huge_pages, blk))
			break;
		pfn0 = blk[0] & PM_PFN_MASK;
		ok = (blk[0] & PM_PRESENT) && pfn0 && !(pfn0 & (huge_pages - 1));
		for (size_t k = 1; ok && k < huge_pages; k++)
			ok = (blk[k] & PM_PRESENT) && (blk[k] & PM_PFN_MASK) == pfn0 + k;
		/* The huge zero page is PMD-mapped but not in AnonHugePages. */
		if (!ok || (pfn0 != huge_zero_pfn && smaps_anon_huge_kb(b) <= 0))
			continue;
		for (uintptr_t a = UHMM__MAX(b, start); a < UHMM__MIN(b + huge, end);
		     a += uhmm__page_size)
			out[(a - start) >> uhmm__page_shift] |= UHMM_PS_HUGE;
		if (b + huge < b)
			break;
	}
	uhmm__free(blk);
}

struct special_ctx {
	struct uhmm_mm *mm;
	uintptr_t start;
	uint32_t *out;
	uint64_t *entries;
};

static int mark_special(void *arg, uintptr_t addr, _Atomic uint64_t *slot, uint64_t e)
{
	struct special_ctx *c = arg;
	size_t i = (addr - c->start) >> uhmm__page_shift;

	(void)slot;
	switch (e & UHMM__PTE_TYPE_MASK) {
	case UHMM__PTE_DEVICE: {
		struct uhmm_page *page = uhmm__pfn_to_page(c->mm, uhmm__pte_payload(e));

		c->out[i] |= page && uhmm__is_exclusive_pool(c->mm, page->pgmap) ?
				     UHMM_PS_DEVICE_EXCLUSIVE : UHMM_PS_DEVICE_PRIVATE;
		break;
	}
	case UHMM__PTE_MIGRATING:
	case UHMM__PTE_BUSY:
		c->out[i] |= UHMM_PS_MIGRATING;
		break;
	case UHMM__PTE_EXCLUSIVE:
		c->out[i] |= UHMM_PS_DEVICE_EXCLUSIVE;
		break;
	}
	if (c->entries)
		c->entries[i] = e;
	return 0;
}

/*
 * Is this pagemap entry a swapped-out page?  Not a uffd-wp marker, which
 * pagemap shows as PM_SWAP too: uhmm's picture of a device-resident page
 * (wpmarker.c), or a stale one, which has no data.  A marker carries
 * PM_UFFD_WP; so would a swapped page that a userfaultfd write-protected,
 * which uhmm never does, but a program's own userfaultfd may on memory
 * uhmm does not register.  Where the swap type is visible (root), the
 * marker's own type (31, the last of the 5-bit field) tells them apart.
 */
static bool pm_swapped(uint64_t e)
{
	const uint64_t type_mask = (UINT64_C(1) << 5) - 1;

	if (!(e & PM_SWAP) || (e & PM_PRESENT))
		return false;
	if (!(e & PM_UFFD_WP))
		return true;
	return (e & PM_PFN_MASK) != 0 && (e & type_mask) != type_mask;
}

static uint32_t vma_bits(unsigned int f)
{
	uint32_t b = UHMM_PS_MAPPED;

	if (f & UHMM__VMA_READ)
		b |= UHMM_PS_READ;
	if (f & UHMM__VMA_WRITE)
		b |= UHMM_PS_MAYWRITE;
	if (f & UHMM__VMA_FILE)
		b |= UHMM_PS_FILE;
	if (f & (UHMM__VMA_SHARED | UHMM__VMA_SHMEM))
		b |= UHMM_PS_SHARED;
	if (f & UHMM__VMA_HUGETLB)
		b |= UHMM_PS_HUGETLB;
	if (f & UHMM__VMA_SPECIAL)
		b |= UHMM_PS_SPECIAL;
	return b;
}

/*
 * The mappings of [start, end) into @stackv (@nstack entries, > 0), or into
 * a heap array left in *@vmas when there are more; the caller frees *@vmas
 * when it is not @stackv, also on failure.  Each look-up continues from
 * where the last stopped (uhmm__vma_find() never counts ahead): about one
 * look-up per mapping of the range.  0 or -errno with a reason.
 */
static int vmas_of(uintptr_t start, uintptr_t end, struct uhmm__vma *stackv, size_t nstack,
		   struct uhmm__vma **vmas, size_t *nv, bool fresh)
{
	struct uhmm__vma *v = stackv;
	size_t cap = nstack, got = 0;
	int ret = uhmm__vma_find(start, end, v, cap, &got, fresh);

	*vmas = stackv;
	*nv = got;
	while (!ret && *nv > cap) {
		size_t have = cap, ncap = cap * 4;
		struct uhmm__vma *nb = v == stackv ? uhmm__malloc(ncap * sizeof(*nb))
						   : uhmm__realloc(v, ncap * sizeof(*nb));

		if (!nb) {
			*nv = have;
			return uhmm__err(ENOMEM, "page state: out of memory");
		}
		if (v == stackv)
			memcpy(nb, stackv, have * sizeof(*nb));
		*vmas = v = nb;
		cap = ncap;
		ret = uhmm__vma_find(v[have - 1].end, end, v + have, cap - have, &got, false);
		*nv = have + got;
	}
	if (ret)
		return uhmm__err(-ret, "cannot read the mappings list");
	return 0;
}

int uhmm__page_state(struct uhmm_mm *mm, uintptr_t start, size_t npages,
		     uint32_t *out, uint64_t *entries, bool fresh_vmas)
{
	const unsigned int ps = uhmm__page_shift;
	uintptr_t end = start + (npages << ps);
	struct uhmm__vma stackv[16], *vmas = stackv;
	size_t nv = 0, vi = 0;
	uint64_t *pm = NULL;
	int fd, ret;

	fd = uhmm__pagemap_fd();
	if (fd < 0)
		return uhmm__err(-fd, "cannot open /proc/self/pagemap");
	ret = vmas_of(start, end, stackv, UHMM__ARRAY_SIZE(stackv), &vmas, &nv, fresh_vmas);
	if (ret)
		goto out;
	pm = uhmm__malloc(UHMM__MIN(npages, (size_t)CHUNK_PAGES) * sizeof(uint64_t));
	if (!pm) {
		ret = uhmm__err(ENOMEM, "page state: out of memory");
		goto out;
	}
	if (entries)
		memset(entries, 0, npages * sizeof(*entries));

	for (size_t base = 0; base < npages; base += CHUNK_PAGES) {
		size_t n = UHMM__MIN((size_t)CHUNK_PAGES, npages - base);
		uintptr_t cs = start + (base << ps);
		uint32_t *o = out + base;

		ret = uhmm__pagemap_read(fd, cs, n, pm);
		if (ret) {
			ret = uhmm__err(-ret, "cannot read /proc/self/pagemap");
			goto out;
		}
		memset(o, 0, n * sizeof(*o));
		if (uhmm__has(UHMM_FEAT_PAGEMAP_SCAN)) {
			ret = scan_where_needed(fd, cs, n, pm, o);
			if (ret) {
				ret = uhmm__err(-ret, "PAGEMAP_SCAN failed");
				goto out;
			}
		} else {
			pfn_categories(fd, cs, n, pm, o, vmas, nv);
		}
		for (size_t i = 0; i < n;) {
			uintptr_t a = cs + (i << ps);
			uintptr_t run_end;
			uint32_t vb;

			while (vi < nv && vmas[vi].end <= a)
				vi++;
			if (vi >= nv || vmas[vi].start > a) {
				/* A hole: up to the next mapping. */
				run_end = vi < nv ? vmas[vi].start : end;
				for (; i < n && cs + (i << ps) < run_end; i++)
					o[i] = 0;
				continue;
			}
			vb = vma_bits(vmas[vi].flags) |
			     (((uint32_t)vmas[vi].order << UHMM__PS_ORDER_SHIFT) &
			      UHMM__PS_ORDER_MASK);
			run_end = vmas[vi].end;
			for (; i < n && cs + (i << ps) < run_end; i++) {
				uint64_t e = pm[i];
				uint32_t b = vb | (o[i] & (UHMM_PS_ZERO | UHMM_PS_HUGE));

				if (e & PM_PRESENT) {
					b |= UHMM_PS_PRESENT;
					if (e & PM_MMAP_EXCLUSIVE)
						b |= UHMM_PS_EXCLUSIVE;
					if ((vb & UHMM_PS_MAYWRITE) && !(b & UHMM_PS_ZERO) &&
					    ((vb & UHMM_PS_SHARED) ||
					     ((e & PM_MMAP_EXCLUSIVE) && !(e & PM_FILE))))
						b |= UHMM_PS_WRITABLE;
				} else {
					b &= ~(UHMM_PS_ZERO | UHMM_PS_HUGE);
					if (pm_swapped(e))
						b |= UHMM_PS_SWAPPED;
				}
				if (e & PM_SOFT_DIRTY)
					b |= UHMM_PS_SOFT_DIRTY;
				o[i] = b;
			}
		}
	}
	if (mm && !uhmm__ptable_empty(&mm->ptable)) {
		struct special_ctx c = { .mm = mm, .start = start, .out = out, .entries = entries };

		uhmm__ptable_walk(&mm->ptable, start, end, mark_special, &c);
	}
	ret = 0;
out:
	uhmm__free(pm);
	if (vmas != stackv)
		uhmm__free(vmas);
	return ret;
}

/*
 * Pagemap entries per read in uhmm__page_pfns(): they are read straight
 * into the caller's words and turned into snapshot words in place, while
 * still in cache.
 */
#define PFN_CHUNK	8192u

struct pfns_special_ctx {
	uintptr_t start;
	uint64_t *pfns;
	uint32_t vb;
	void (*fn)(void *arg, uint64_t *pfn, uint64_t e, uint32_t vma_bits);
	void *arg;
};

static int pfns_special(void *arg, uintptr_t addr, _Atomic uint64_t *slot, uint64_t e)
{
	struct pfns_special_ctx *c = arg;

	(void)slot;
	c->fn(c->arg, &c->pfns[(addr - c->start) >> uhmm__page_shift], e, c->vb);
	return 0;
}

static bool pfns_bad_mapping(uint32_t vb)
{
	return !(vb & UHMM_PS_READ) || (vb & UHMM_PS_SPECIAL);
}

/*
 * The words of a hugetlbfs mapping's pages [@i, @i + @n) of a chunk, as
 * the kernel's hugetlb walk gives them: every page carries the huge page
 * order, present or not; a present one is VALID (WRITE as for any page).
 * Nothing to scan: the order is the mapping's, and there is no zero page.
 * @o may be @pm.
 */
static void pfns_hugetlb(uintptr_t cs, const uint64_t *pm, uint64_t *o, size_t i, size_t n,
			 uint32_t vb, unsigned int order)
{
	const unsigned int ps = uhmm__page_shift;
	uint64_t wshared = (vb & UHMM_PS_MAYWRITE) && (vb & UHMM_PS_SHARED);
	uint64_t wpriv = (vb & UHMM_PS_MAYWRITE) && !(vb & UHMM_PS_SHARED);
	uint64_t ord = ((uint64_t)order << UHMM_PFN_ORDER_SHIFT) & UHMM_PFN_ORDER_MASK;

	for (size_t k = i; k < i + n; k++) {
		uint64_t e = pm[k], vpn = (cs >> ps) + k;
		uint64_t pres = e >> 63, m = -pres;
		uint64_t excl = (e >> 56) & 1, file = (e >> 61) & 1;
		uint64_t w = wshared | (wpriv & excl & (file ^ 1));

		o[k] = (m & (UHMM_PFN_VALID | vpn | (w << 62))) | ord;
	}
}

/*
 * The words of one usable mapping's pages [@i, @i + @n) of a chunk, 2 MiB
 * block by block, in the same pass telling whether PAGEMAP_SCAN can add
 * anything (the test of block_needs_scan()).  *@run is the first page of
 * the pending run of blocks to scan, or SIZE_MAX.  @o may be @pm: each
 * entry is read before its word is written.
 */
static int pfns_mapping(int fd, uintptr_t cs, const uint64_t *pm, uint64_t *o, size_t i,
			size_t n, uint32_t vb, size_t *run)
{
	const unsigned int ps = uhmm__page_shift;
	const uint64_t hp = (2u << 20) >> ps;
	uint64_t wshared = (vb & UHMM_PS_MAYWRITE) && (vb & UHMM_PS_SHARED);
	uint64_t wpriv = (vb & UHMM_PS_MAYWRITE) && !(vb & UHMM_PS_SHARED);

	for (size_t stop = i + n; i < stop;) {
		uint64_t vpn0 = (cs >> ps) + i;
		size_t bn = UHMM__MIN(stop - i, (size_t)(hp - (vpn0 & (hp - 1))));
		uint64_t d0 = (pm[i] & PM_PFN_MASK) - vpn0;
		uint64_t nonexcl = 0, absent = 0, frames = 0;
		bool hidden = !(pm[i] & PM_PFN_MASK), needs;

		for (size_t k = 0; k < bn; k++) {
			uint64_t e = pm[i + k], vpn = vpn0 + k;
			uint64_t pres = e >> 63, m = -pres;
			uint64_t excl = (e >> 56) & 1, file = (e >> 61) & 1;
			uint64_t w = wshared | (wpriv & excl & (file ^ 1));

			o[i + k] = m & (UHMM_PFN_VALID | vpn | (w << 62));
			nonexcl |= pres & (excl ^ 1);
			absent |= pres ^ 1;
			frames |= (((e & PM_PFN_MASK) - vpn) ^ d0) & m;
		}
		needs = nonexcl || (!absent && (hidden || (!frames && !(d0 & (hp - 1)))));
		if (needs) {
			if (*run == SIZE_MAX)
				*run = i;
		} else if (*run != SIZE_MAX) {
			int ret = scan_categories(fd, cs + (*run << ps), i - *run, NULL, o + *run);

			if (ret)
				return ret;
			*run = SIZE_MAX;
		}
		i += bn;
	}
	return 0;
}

int uhmm__page_pfns(struct uhmm_mm *mm, uintptr_t start, size_t npages, uint64_t *pfns,
		    void (*special)(void *arg, uint64_t *pfn, uint64_t e, uint32_t vma_bits),
		    void *arg)
{
	const unsigned int ps = uhmm__page_shift;
	uintptr_t end = start + (npages << ps);
	struct uhmm__vma stackv[16], *vmas = stackv;
	size_t nv = 0, vi = 0;
	int fd, ret;

	_Static_assert(UHMM_PFN_VALID == UINT64_C(1) << 63 && UHMM_PFN_WRITE == UINT64_C(1) << 62,
		       "pfns_mapping() builds VALID and WRITE by shifts");
	if (!uhmm__has(UHMM_FEAT_PAGEMAP_SCAN))
		return 1;
	fd = uhmm__pagemap_fd();
	if (fd < 0)
		return uhmm__err(-fd, "cannot open /proc/self/pagemap");
	ret = vmas_of(start, end, stackv, UHMM__ARRAY_SIZE(stackv), &vmas, &nv, false);
	if (ret)
		goto out;
	for (size_t base = 0; base < npages; base += PFN_CHUNK) {
		size_t n = UHMM__MIN((size_t)PFN_CHUNK, npages - base), run = SIZE_MAX;
		uintptr_t cs = start + (base << ps);
		uint64_t *o = pfns + base, *pm = o;

		ret = uhmm__pagemap_read(fd, cs, n, pm);
		if (ret) {
			ret = uhmm__err(-ret, "cannot read /proc/self/pagemap");
			goto out;
		}
		for (size_t i = 0; i < n;) {
			uintptr_t a = cs + (i << ps), run_end;
			size_t rn;
			uint32_t vb = 0;

			while (vi < nv && vmas[vi].end <= a)
				vi++;
			if (vi >= nv || vmas[vi].start > a) {
				run_end = vi < nv ? vmas[vi].start : end;	/* a hole */
			} else {
				vb = vma_bits(vmas[vi].flags);
				run_end = vmas[vi].end;
			}
			rn = UHMM__MIN(n - i, (size_t)((UHMM__MIN(run_end, end) - a) >> ps));
			if (vb && !pfns_bad_mapping(vb) && (vb & UHMM_PS_HUGETLB)) {
				if (run != SIZE_MAX &&
				    (ret = scan_categories(fd, cs + (run << ps), i - run, NULL,
							   o + run))) {
					ret = uhmm__err(-ret, "PAGEMAP_SCAN failed");
					goto out;
				}
				run = SIZE_MAX;
				pfns_hugetlb(cs, pm, o, i, rn, vb, vmas[vi].order);
			} else if (!vb || pfns_bad_mapping(vb)) {
				for (size_t k = i; k < i + rn; k++)
					o[k] = UHMM_PFN_ERROR;
				if (run != SIZE_MAX &&
				    (ret = scan_categories(fd, cs + (run << ps), i - run, NULL,
							   o + run))) {
					ret = uhmm__err(-ret, "PAGEMAP_SCAN failed");
					goto out;
				}
				run = SIZE_MAX;
			} else if ((ret = pfns_mapping(fd, cs, pm, o, i, rn, vb, &run))) {
				ret = uhmm__err(-ret, "PAGEMAP_SCAN failed");
				goto out;
			}
			i += rn;
		}
		if (run != SIZE_MAX &&
		    (ret = scan_categories(fd, cs + (run << ps), n - run, NULL, o + run))) {
			ret = uhmm__err(-ret, "PAGEMAP_SCAN failed");
			goto out;
		}
	}
	if (special && mm && !uhmm__ptable_empty(&mm->ptable)) {
		for (size_t k = 0; k < nv; k++) {
			struct pfns_special_ctx c = {
				.start = start, .pfns = pfns, .vb = vma_bits(vmas[k].flags),
				.fn = special, .arg = arg,
			};
			uintptr_t s = UHMM__MAX(vmas[k].start, start), e = UHMM__MIN(vmas[k].end, end);

			if (s < e && !pfns_bad_mapping(c.vb))
				uhmm__ptable_walk(&mm->ptable, s, e, pfns_special, &c);
		}
	}
	ret = 0;
out:
	if (vmas != stackv)
		uhmm__free(vmas);
	return ret;
}

int uhmm_page_state(struct uhmm_mm *mm, uintptr_t start, size_t npages, uint32_t *out)
{
	int ret;

	if (!mm || !out)
		return uhmm__err(EINVAL, "uhmm_page_state: NULL argument");
	if (mm != &uhmm__the_mm)
		return uhmm__err(EINVAL, "uhmm_page_state: not a uhmm context");
	if (!uhmm__page_aligned(start))
		return uhmm__err(EINVAL, "uhmm_page_state: start %#lx is not page aligned",
				 (unsigned long)start);
	if (npages == 0 || npages > (UINTPTR_MAX >> uhmm__page_shift) ||
	    start + (npages << uhmm__page_shift) <= start)
		return uhmm__err(EINVAL, "uhmm_page_state: empty or wrapping range");
	/*
	 * vma_lock and pm_lock, which the worker's fault path takes too: a
	 * handler touching device memory here would wait for this very thread
	 * (sigblock.h).
	 */
	uhmm__sig_enter();
	ret = uhmm__page_state(mm, start, npages, out, NULL, false);
	uhmm__sig_leave();
	for (size_t i = 0; !ret && i < npages; i++)
		out[i] &= ~UHMM__PS_ORDER_MASK;
	return ret;
}

int uhmm_find_mapping(struct uhmm_mm *mm, uintptr_t addr, struct uhmm_mapping *out)
{
	struct uhmm__vma v;
	size_t n = 0;
	int ret;

	if (!mm || !out || mm != &uhmm__the_mm)
		return uhmm__err(EINVAL, "uhmm_find_mapping: NULL argument or not a context");
	uhmm__sig_enter();	/* vma_lock, as uhmm_page_state() */
	ret = uhmm__vma_find(addr, UINTPTR_MAX, &v, 1, &n, false);
	if (!ret && (n == 0 || v.start > addr))
		ret = uhmm__vma_find(addr, UINTPTR_MAX, &v, 1, &n, true);
	uhmm__sig_leave();
	if (ret)	/* -ENOMEM or -EIO, as the look-up said */
		return uhmm__err(-ret, "uhmm_find_mapping: cannot read the mappings");
	if (n == 0)
		return uhmm__err(ENOENT, "uhmm_find_mapping: no mapping ends after %#lx",
				 (unsigned long)addr);
	out->start = v.start;
	out->end = v.end;
	out->flags = vma_bits(v.flags);
	return 0;
}
