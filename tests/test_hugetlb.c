// SPDX-License-Identifier: MIT
/*
 * Mirroring hugetlbfs memory (issue 13 item 6), judged by the kernel's
 * semantics (mm/hmm.c hmm_vma_walk_hugetlb_entry; hmm-tests.c
 * "anon_write_hugetlbfs" and "compound"):
 *  - a snapshot of never-touched MAP_HUGETLB memory: no page VALID, every
 *    word carries the huge page order (9 for 2 MiB on 4 KiB pages), simdev
 *    sees PROT_NONE; nothing is faulted in;
 *  - a read fault: every page VALID with its address and the order, the
 *    data readable; a write fault: VALID|WRITE;
 *  - after the CPU wrote every page: a snapshot gives WRITE and the order,
 *    simdev WRITE|PMD; after mprotect(PROT_READ): READ|PMD, and a write
 *    request -EPERM;
 *  - a device write of never-touched hugetlb memory (simdev) lands in it;
 *  - invalidation: munmap and MADV_DONTNEED through libc run the notifier
 *    (a range fault with the older sequence is -EBUSY); after the discard
 *    the pages are not present and read as zero;
 *  - migration and exclusive access stay refused (-EINVAL), with a reason
 *    naming hugetlbfs; nothing is lost;
 *  - MAP_SHARED hugetlb (memfd MFD_HUGETLB): a read fault is VALID|WRITE;
 *  - 1 GiB pages (order 18, simdev PUD) when a free one exists.
 *
 * Needs free 2 MiB huge pages; it never changes system settings: without
 * one it exits 77 saying how to get some.
 */
#include "common.h"

#include <stddef.h>
#include <uhmm/simdev.h>

#ifndef MAP_HUGE_SHIFT
#define MAP_HUGE_SHIFT 26
#endif
#ifndef MFD_HUGETLB
#define MFD_HUGETLB 4U
#endif

#define HUGE_2M ((size_t)2 << 20)
#define HUGE_1G ((size_t)1 << 30)
#define RW (PROT_READ | PROT_WRITE)

static struct uhmm_mm *mm;
static unsigned int pshift;

struct ntf {
	struct uhmm_interval_notifier mni;
	atomic_int calls;
	_Atomic uintptr_t last_start, last_end;
};

static bool ntf_invalidate(struct uhmm_interval_notifier *mni,
			   const struct uhmm_notifier_range *r, unsigned long seq)
{
	struct ntf *n = (struct ntf *)((char *)mni - offsetof(struct ntf, mni));

	uhmm_interval_set_seq(mni, seq);
	atomic_store(&n->last_start, r->start);
	atomic_store(&n->last_end, r->end);
	atomic_fetch_add(&n->calls, 1);
	return true;
}

static const struct uhmm_interval_notifier_ops ntf_ops = { .invalidate = ntf_invalidate };

static long free_huge(const char *dir)
{
	char path[160];
	long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/sys/kernel/mm/hugepages/%s/free_hugepages", dir);
	f = fopen(path, "r");
	if (f) {
		if (fscanf(f, "%ld", &v) != 1)
			v = -1;
		fclose(f);
	}
	return v;
}

static char *map_huge(size_t len, int shift)
{
	return mmap(NULL, len, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB |
		    (shift << MAP_HUGE_SHIFT), -1, 0);
}

/* One range fault with the sequence protocol; -EBUSY retried. */
static int rfault(struct ntf *n, void *p, size_t npages, uint64_t *pfns, uint64_t flags)
{
	struct uhmm_range r = {
		.notifier = &n->mni, .start = (uintptr_t)p,
		.end = (uintptr_t)p + npages * page_size, .hmm_pfns = pfns,
		.default_flags = flags,
	};
	int ret, tries = 0;

	do {
		r.notifier_seq = uhmm_interval_read_begin(&n->mni);
		ret = uhmm_range_fault(&r);
	} while (ret == -EBUSY && ++tries < 1000);
	CHECK(ret != -EBUSY, "range fault still -EBUSY after %d tries (flags %#llx)", tries,
	      (unsigned long long)flags);
	return ret;
}

static uint32_t present_pages(void *p, size_t npages, uint32_t *st)
{
	uint32_t cnt = 0;

	CHECK_EQ(uhmm_page_state(mm, (uintptr_t)p, npages, st), 0);
	for (size_t i = 0; i < npages; i++)
		cnt += !!(st[i] & UHMM_PS_PRESENT);
	return cnt;
}

static void check_words(const char *what, char *p, size_t npages, const uint64_t *pfns,
			unsigned int order, bool valid, bool write)
{
	for (size_t i = 0; i < npages; i++) {
		uint64_t w = pfns[i];

		CHECK(uhmm_pfn_to_map_order(w) == order, "%s: page %zu order %u, expected %u "
		      "(word %#llx)", what, i, uhmm_pfn_to_map_order(w), order,
		      (unsigned long long)w);
		CHECK(!(w & UHMM_PFN_ERROR), "%s: page %zu ERROR", what, i);
		CHECK(!!(w & UHMM_PFN_VALID) == valid, "%s: page %zu VALID %d, expected %d",
		      what, i, !!(w & UHMM_PFN_VALID), valid);
		if (!valid)
			continue;
		CHECK(uhmm_pfn_to_addr(w) == (uintptr_t)(p + i * page_size),
		      "%s: page %zu address %#lx", what, i, (unsigned long)uhmm_pfn_to_addr(w));
		CHECK(!!(w & UHMM_PFN_WRITE) == write, "%s: page %zu WRITE %d, expected %d",
		      what, i, !!(w & UHMM_PFN_WRITE), write);
	}
}

static void check_prot(const char *what, struct uhmm_simdev *dev, void *p, size_t npages,
		       uint8_t *prot, uint8_t want)
{
	CHECK_EQ(uhmm_simdev_snapshot(dev, p, npages, prot, NULL), 0);
	for (size_t i = 0; i < npages; i++)
		CHECK(prot[i] == want, "%s: simdev page %zu prot %#x, expected %#x", what, i,
		      prot[i], want);
}

/*
 * The mirror of one private hugetlb mapping of @len bytes (huge page order
 * @order), range faults and snapshots over its first @win bytes (every
 * page of one huge page has the same entry; a whole 1 GiB range costs
 * minutes under ThreadSanitizer).
 */
static void mirror_private(struct uhmm_simdev *dev, char *h, size_t len, size_t win,
			   unsigned int order, uint8_t huge_prot)
{
	size_t npages = win / page_size;
	uint64_t *pfns = calloc(npages, sizeof(*pfns));
	uint32_t *st = calloc(npages, sizeof(*st));
	uint8_t *prot = malloc(npages);
	struct ntf n;

	CHECK(pfns && st && prot, "out of memory");
	memset(&n, 0, sizeof(n));
	CHECK_EQ(uhmm_interval_notifier_insert(&n.mni, mm, (uintptr_t)h, len, &ntf_ops), 0);

	/* Snapshot of untouched memory: the order on every word, nothing valid. */
	CHECK_EQ(rfault(&n, h, npages, pfns, 0), 0);
	check_words("snapshot untouched", h, npages, pfns, order, false, false);
	CHECK_EQ(present_pages(h, npages, st), 0);
	check_prot("simdev snapshot untouched", dev, h, npages, prot, UHMM_SIMDEV_PROT_NONE);
	CHECK_EQ(present_pages(h, npages, st), 0);
	OK("%zu KiB (first %zu KiB mirrored): snapshot of untouched memory: order %u on every word, nothing VALID, "
	   "nothing faulted in", len >> 10, win >> 10, order);

	/* Read fault. */
	CHECK_EQ(rfault(&n, h, npages, pfns, UHMM_PFN_REQ_FAULT), 0);
	for (size_t i = 0; i < npages; i++)
		CHECK(pfns[i] & UHMM_PFN_VALID, "read fault: page %zu not VALID", i);
	check_words("read fault", h, npages, pfns, order, true, !!(pfns[0] & UHMM_PFN_WRITE));
	CHECK_EQ(present_pages(h, npages, st), npages);
	CHECK(h[0] == 0 && h[win - 1] == 0, "fresh huge page reads as zero");
	OK("read fault: every page VALID at its address with order %u", order);

	/* Write fault. */
	CHECK_EQ(rfault(&n, h, npages, pfns, UHMM_PFN_REQ_FAULT | UHMM_PFN_REQ_WRITE), 0);
	check_words("write fault", h, npages, pfns, order, true, true);
	OK("write fault: VALID|WRITE with order %u", order);

	/* The CPU writes every page: snapshot WRITE + order, simdev WRITE|PMD/PUD. */
	for (size_t i = 0; i < npages; i++)
		memset(h + i * page_size, (int)(i & 0x7f) + 1, 8);
	CHECK_EQ(rfault(&n, h, npages, pfns, 0), 0);
	check_words("snapshot written", h, npages, pfns, order, true, true);
	check_prot("simdev snapshot written", dev, h, npages, prot,
		   UHMM_SIMDEV_PROT_WRITE | huge_prot);
	OK("after CPU writes: snapshot VALID|WRITE order %u, simdev WRITE|%s", order,
	   huge_prot == UHMM_SIMDEV_PROT_PMD ? "PMD" : "PUD");

	/* Read-only: READ|PMD, and a write request is refused. */
	CHECK_EQ(mprotect(h, len, PROT_READ), 0);
	CHECK_EQ(rfault(&n, h, npages, pfns, 0), 0);
	check_words("snapshot read-only", h, npages, pfns, order, true, false);
	check_prot("simdev snapshot read-only", dev, h, npages, prot,
		   UHMM_SIMDEV_PROT_READ | huge_prot);
	CHECK_EQ(rfault(&n, h, 1, pfns, UHMM_PFN_REQ_FAULT | UHMM_PFN_REQ_WRITE), -EPERM);
	CHECK_EQ(mprotect(h, len, RW), 0);
	for (size_t i = 0; i < npages; i += npages / 8)
		CHECK(h[i * page_size] == (char)((i & 0x7f) + 1), "data kept at page %zu", i);
	OK("mprotect(PROT_READ): snapshot READ order %u, simdev READ|huge, write request "
	   "-EPERM, data kept", order);

	/* Migration and exclusive access stay refused, naming hugetlbfs. */
	{
		uint64_t src[4], dst[4];
		void *held[4];
		struct uhmm_migrate_vma m = {
			.mm = mm, .start = (uintptr_t)h, .end = (uintptr_t)h + 4 * page_size,
			.src = src, .dst = dst, .flags = UHMM_MIGRATE_VMA_SELECT_SYSTEM,
		};

		CHECK_EQ(uhmm_migrate_vma_setup(&m), -EINVAL);
		CHECK(strstr(uhmm_last_error(), "hugetlbfs"), "migrate reason: %s",
		      uhmm_last_error());
		CHECK_EQ(uhmm_make_exclusive(mm, (uintptr_t)h, 4, &n, held), -EINVAL);
		CHECK(strstr(uhmm_last_error(), "hugetlbfs"), "exclusive reason: %s",
		      uhmm_last_error());
		CHECK_EQ(uhmm_simdev_migrate_to_dev(dev, h, 4, NULL), -EINVAL);
		CHECK(strstr(uhmm_last_error(), "hugetlbfs"), "simdev migrate reason: %s",
		      uhmm_last_error());
		for (size_t i = 0; i < npages; i += npages / 8)
			CHECK(h[i * page_size] == (char)((i & 0x7f) + 1), "data kept at %zu", i);
	}
	OK("migrate setup, make_exclusive, simdev migrate: -EINVAL naming hugetlbfs, data "
	   "kept");

	/* MADV_DONTNEED through libc: notified, -EBUSY, pages gone, zero. */
	{
		struct uhmm_range r = {
			.notifier = &n.mni, .start = (uintptr_t)h,
			.end = (uintptr_t)h + page_size, .hmm_pfns = pfns,
		};
		int before = atomic_load(&n.calls);

		r.notifier_seq = uhmm_interval_read_begin(&n.mni);
		CHECK_EQ(madvise(h, len, MADV_DONTNEED), 0);
		CHECK(atomic_load(&n.calls) > before, "MADV_DONTNEED not notified");
		CHECK(atomic_load(&n.last_start) <= (uintptr_t)h &&
		      atomic_load(&n.last_end) >= (uintptr_t)h + len,
		      "MADV_DONTNEED notified [%#lx, %#lx)",
		      (unsigned long)atomic_load(&n.last_start),
		      (unsigned long)atomic_load(&n.last_end));
		CHECK_EQ(uhmm_range_fault(&r), -EBUSY);
		CHECK_EQ(rfault(&n, h, npages, pfns, 0), 0);
		check_words("snapshot after MADV_DONTNEED", h, npages, pfns, order, false,
			    false);
		CHECK(h[0] == 0 && h[win - page_size] == 0, "discarded huge page reads zero");
	}
	OK("MADV_DONTNEED: notifier ran over the range, old sequence -EBUSY, pages gone");

	/* munmap through libc: notified, old sequence -EBUSY. */
	{
		struct uhmm_range r = {
			.notifier = &n.mni, .start = (uintptr_t)h,
			.end = (uintptr_t)h + page_size, .hmm_pfns = pfns,
		};
		int before = atomic_load(&n.calls);

		/*
		 * No fault after the discard: a private mapping's reservation
		 * is used up, and another test may hold the pool's pages.
		 */
		r.notifier_seq = uhmm_interval_read_begin(&n.mni);
		CHECK_EQ(munmap(h, len), 0);
		CHECK(atomic_load(&n.calls) > before, "munmap not notified");
		CHECK(atomic_load(&n.last_start) <= (uintptr_t)h &&
		      atomic_load(&n.last_end) >= (uintptr_t)h + len, "munmap range");
		CHECK_EQ(uhmm_range_fault(&r), -EBUSY);
		CHECK_EQ(rfault(&n, h, 1, pfns, 0), 0);
		CHECK_EQ(pfns[0], UHMM_PFN_ERROR);
	}
	OK("munmap: notifier ran over the range, old sequence -EBUSY, then ERROR (no "
	   "mapping)");
	uhmm_interval_notifier_remove(&n.mni);
	free(pfns);
	free(st);
	free(prot);
}

/* hmm-tests.c anon_write_hugetlbfs: the device writes never-touched huge pages. */
static void device_write(struct uhmm_simdev *dev, char *h)
{
	size_t npages = HUGE_2M / page_size;
	char *in = malloc(HUGE_2M), *out = malloc(HUGE_2M);
	struct uhmm_simdev_stats st;

	CHECK(in && out, "out of memory");
	for (size_t i = 0; i < HUGE_2M; i++)
		in[i] = (char)(i * 7 + 3);
	CHECK_EQ(uhmm_simdev_write(dev, h, npages, in, &st), 0);
	CHECK_EQ(st.cpages, npages);
	CHECK(memcmp(h, in, HUGE_2M) == 0, "what the device wrote is in memory");
	memset(h, 0x5a, HUGE_2M);
	CHECK_EQ(uhmm_simdev_read(dev, h, npages, out, &st), 0);
	CHECK_EQ(st.cpages, npages);
	for (size_t i = 0; i < HUGE_2M; i += 4093)
		CHECK(out[i] == 0x5a, "device read at %zu", i);
	CHECK_EQ(munmap(h, HUGE_2M), 0);
	free(in);
	free(out);
	OK("simdev writes never-touched hugetlb memory and reads the CPU's data back");
}

/* MAP_SHARED hugetlb: a read fault maps it writable (shared), as the kernel's. */
static void shared_hugetlb(void)
{
	size_t npages = HUGE_2M / page_size;
	uint64_t *pfns = calloc(npages, sizeof(*pfns));
	int fd = memfd_create("uhmm-hugetlb", MFD_HUGETLB | MFD_CLOEXEC);
	struct ntf n;
	char *h;

	CHECK(pfns, "out of memory");
	if (fd < 0) {
		free(pfns);
		SKIP_CASE("%s: memfd_create(MFD_HUGETLB): %s: shared case not run",
			  test_name, strerror(errno));
	}
	CHECK_EQ(ftruncate(fd, (off_t)HUGE_2M), 0);
	h = mmap(NULL, HUGE_2M, RW, MAP_SHARED, fd, 0);
	if (h == MAP_FAILED) {
		int err = errno;

		close(fd);
		free(pfns);
		SKIP_CASE("%s: mmap of a hugetlb memfd: %s: shared case not run",
			  test_name, strerror(err));
	}
	memset(&n, 0, sizeof(n));
	CHECK_EQ(uhmm_interval_notifier_insert(&n.mni, mm, (uintptr_t)h, HUGE_2M, &ntf_ops), 0);
	CHECK_EQ(rfault(&n, h, npages, pfns, 0), 0);
	check_words("shared snapshot", h, npages, pfns, 21 - pshift, false, false);
	CHECK_EQ(rfault(&n, h, npages, pfns, UHMM_PFN_REQ_FAULT), 0);
	check_words("shared read fault", h, npages, pfns, 21 - pshift, true, true);
	uhmm_interval_notifier_remove(&n.mni);
	CHECK_EQ(munmap(h, HUGE_2M), 0);
	close(fd);
	free(pfns);
	OK("MAP_SHARED hugetlb (memfd): snapshot order 9, read fault VALID|WRITE");
}

static struct uhmm_simdev *dev;
static char *h2m;	/* two 2 MiB pages: the first mirrored, the second written */

static void mirror_2m(void)
{
	mirror_private(dev, h2m, HUGE_2M, HUGE_2M, 21 - pshift, UHMM_SIMDEV_PROT_PMD);
}

static void device_write_2m(void)
{
	device_write(dev, h2m + HUGE_2M);
}

static void mirror_1g(void)
{
	char *h;

	if (free_huge("hugepages-1048576kB") <= 0 || (h = map_huge(HUGE_1G, 30)) == MAP_FAILED)
		SKIP_CASE("%s: no free 1 GiB huge page: the PUD case is not run "
			  "(echo 1 > /sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages)",
			  test_name);
	mirror_private(dev, h, HUGE_1G, HUGE_2M, 30 - pshift, UHMM_SIMDEV_PROT_PUD);
}

static void start(void)
{
	struct uhmm_simdev_config cfg = { .capacity_pages = 64, .threads = 1 };

	pshift = (unsigned int)__builtin_ctzl(page_size);
	/*
	 * Both 2 MiB pages at once: mmap reserves them, so no other program
	 * taking the pool's pages meanwhile can fail a fault half-way.
	 */
	h2m = map_huge(2 * HUGE_2M, 21);
	if (h2m == MAP_FAILED)
		SKIP("no free hugetlb pages: echo N > /proc/sys/vm/nr_hugepages "
		     "(two 2 MiB pages needed; mmap MAP_HUGETLB: %s; free 2 MiB pages: %ld)",
		     strerror(errno), free_huge("hugepages-2048kB"));
	mm = test_mm();
	CHECK_EQ(uhmm_simdev_create(&cfg, &dev), 0);
}

static int finish(void)
{
	uhmm_simdev_destroy(dev);
	uhmm_mm_put(mm);
	return 0;
}

static const struct test_case cases[] = {
	TEST_CASE(mirror_2m),
	TEST_CASE(device_write_2m),
	TEST_CASE(shared_hugetlb),
	TEST_CASE(mirror_1g),
};

TEST_MAIN("test_hugetlb", start, finish)
