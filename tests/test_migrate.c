// SPDX-License-Identifier: MIT
/*
 * Explicit migration with a minimal in-test device: to the device and back
 * with patterned data, CPU touch bringing pages back, empty and zero pages,
 * allocation and copy failures half-way with every byte intact, eviction by
 * device page range, range-fault reporting of device pages.
 */
#include "common.h"

static struct uhmm_mm *mm;

static void test_roundtrip(void)
{
	const size_t n = 64;
	struct tdev *d = tdev_create(mm, 128, 0);
	char *p = map_anon(n * page_size, PROT_READ | PROT_WRITE);
	unsigned long cpages = 0;

	fill_pattern(p, n, 1);
	CHECK_EQ(tdev_to_dev(d, (uintptr_t)p, (uintptr_t)p + n * page_size, &cpages), n);
	CHECK_EQ(cpages, n);
	CHECK_EQ(tdev_used(d), n);
	for (size_t i = 0; i < n; i++)
		CHECK(page_state_of(mm, p + i * page_size) & UHMM_PS_DEVICE_PRIVATE,
		      "page %zu on device", i);
	CHECK_EQ(tdev_to_sys(d, (uintptr_t)p, (uintptr_t)p + n * page_size, NULL), n);
	CHECK_EQ(tdev_used(d), 0);
	CHECK_EQ(atomic_load(&d->cpu_faults), 0);
	CHECK_EQ(check_pattern(p, n, 1), -1);
	printf("round trip: ok\n");

	/* Again, and back by CPU touch. */
	CHECK_EQ(tdev_to_dev(d, (uintptr_t)p, (uintptr_t)p + n * page_size, NULL), n);
	CHECK_EQ(check_pattern(p, n, 1), -1);
	CHECK(atomic_load(&d->cpu_faults) > 0, "CPU faults served");
	CHECK_EQ(tdev_used(d), 0);
	printf("CPU read fault-back: ok (%ld faults)\n", atomic_load(&d->cpu_faults));

	/* CPU write to a device-resident page lands. */
	CHECK_EQ(tdev_to_dev(d, (uintptr_t)p, (uintptr_t)p + n * page_size, NULL), n);
	p[5 * page_size + 7] = 'x';
	CHECK_EQ(p[5 * page_size + 7], 'x');
	p[5 * page_size + 7] = ((char *)(uint32_t[]){ 0 })[0];
	fill_pattern(p, n, 2);
	CHECK_EQ(check_pattern(p, n, 2), -1);
	printf("CPU write fault-back: ok\n");
	munmap(p, n * page_size);
	tdev_destroy(d);
}

static void test_empty_and_zero(void)
{
	const size_t n = 16;
	struct tdev *d = tdev_create(mm, 64, 0);
	char *p = map_anon(n * page_size, PROT_READ | PROT_WRITE);
	unsigned long cpages = 0;
	volatile char sink;

	/* Pages 0-7 never touched, 8-15 read (zero page where the kernel has one). */
	for (size_t i = 8; i < n; i++)
		sink = p[i * page_size];
	(void)sink;
	CHECK_EQ(tdev_to_dev(d, (uintptr_t)p, (uintptr_t)p + n * page_size, &cpages), n);
	CHECK_EQ(cpages, n);
	CHECK_EQ(tdev_used(d), n);
	for (size_t i = 0; i < n * page_size; i++)
		CHECK(p[i] == 0, "byte %zu is %d", i, p[i]);
	CHECK_EQ(tdev_used(d), 0);
	printf("empty and zero pages populated on the device: ok\n");
	munmap(p, n * page_size);
	tdev_destroy(d);
}

static void test_failures(void)
{
	const size_t n = 32;
	struct tdev *d = tdev_create(mm, 64, 0);
	char *p = map_anon(n * page_size, PROT_READ | PROT_WRITE);
	long moved;

	fill_pattern(p, n, 3);
	/* Allocation fails after 10 pages. */
	atomic_store(&d->fail_alloc_after, 10);
	moved = tdev_to_dev(d, (uintptr_t)p, (uintptr_t)p + n * page_size, NULL);
	atomic_store(&d->fail_alloc_after, -1);
	CHECK_EQ(moved, 10);
	CHECK_EQ(tdev_used(d), 10);
	for (size_t i = 0; i < n; i++) {
		uint32_t st = page_state_of(mm, p + i * page_size);

		CHECK(i < 10 ? (st & UHMM_PS_DEVICE_PRIVATE) != 0
			     : (st & UHMM_PS_PRESENT) && (st & UHMM_PS_WRITABLE),
		      "page %zu state %#x", i, st);
	}
	CHECK_EQ(check_pattern(p, n, 3), -1);
	CHECK_EQ(tdev_used(d), 0);
	printf("allocation failure half-way (to device): ok\n");

	/* Copy fails after 7 pages (to device). */
	atomic_store(&d->fail_copy_after, 7);
	moved = tdev_to_dev(d, (uintptr_t)p, (uintptr_t)p + n * page_size, NULL);
	atomic_store(&d->fail_copy_after, -1);
	CHECK_EQ(moved, 7);
	CHECK_EQ(check_pattern(p, n, 3), -1);
	printf("copy failure half-way (to device): ok\n");

	/* Copy fails half-way back: the rest stays on the device, intact. */
	CHECK_EQ(tdev_to_dev(d, (uintptr_t)p, (uintptr_t)p + n * page_size, NULL), n);
	atomic_store(&d->fail_copy_after, 5);
	moved = tdev_to_sys(d, (uintptr_t)p, (uintptr_t)p + n * page_size, NULL);
	atomic_store(&d->fail_copy_after, -1);
	CHECK_EQ(moved, 5);
	CHECK_EQ(tdev_used(d), n - 5);
	CHECK_EQ(check_pattern(p, n, 3), -1);
	CHECK_EQ(tdev_used(d), 0);
	printf("copy failure half-way (to system): ok\n");
	munmap(p, n * page_size);
	tdev_destroy(d);
}

static void test_evict_range(void)
{
	const size_t n = 24;
	struct tdev *d = tdev_create(mm, 32, 0);
	char *p = map_anon(n * page_size, PROT_READ | PROT_WRITE);
	uint64_t *src = calloc(d->nr_pages, 8), *dst = calloc(d->nr_pages, 8);
	char *bufs = map_anon(d->nr_pages * page_size, PROT_READ | PROT_WRITE);
	struct uhmm_page *first = uhmm_devmem_page(&d->pgmap, 0);
	size_t collected = 0;

	fill_pattern(p, n, 4);
	CHECK_EQ(tdev_to_dev(d, (uintptr_t)p, (uintptr_t)p + n * page_size, NULL), n);
	CHECK_EQ(uhmm_migrate_device_range(mm, src, uhmm_page_to_pfn(first), d->nr_pages), 0);
	for (size_t i = 0; i < d->nr_pages; i++) {
		struct uhmm_page *pg = uhmm_devmem_page(&d->pgmap, i);

		if (!(src[i] & UHMM_MIGRATE_PFN_MIGRATE))
			continue;
		collected++;
		memcpy(bufs + i * page_size, tdev_page_mem(d, pg), page_size);
		dst[i] = uhmm_migrate_pfn((uintptr_t)(bufs + i * page_size) / page_size);
	}
	CHECK_EQ(collected, n);
	uhmm_migrate_device_pages(mm, src, dst, d->nr_pages);
	uhmm_migrate_device_finalize(mm, src, dst, d->nr_pages);
	CHECK_EQ(tdev_used(d), 0);
	CHECK_EQ(atomic_load(&d->cpu_faults), 0);
	CHECK_EQ(check_pattern(p, n, 4), -1);
	CHECK_EQ(uhmm_migrate_device_range(mm, src, uhmm_page_to_pfn(first) + d->nr_pages, 1),
		 -EINVAL);
	printf("eviction by device page range: ok\n");
	free(src);
	free(dst);
	munmap(bufs, d->nr_pages * page_size);
	munmap(p, n * page_size);
	tdev_destroy(d);
}

static bool nop_inv(struct uhmm_interval_notifier *mni, const struct uhmm_notifier_range *r,
		    unsigned long seq)
{
	uhmm_interval_set_seq(mni, seq);
	return true;
}

static const struct uhmm_interval_notifier_ops nop_ops = { .invalidate = nop_inv };

static void test_range_fault_device(void)
{
	const size_t n = 8;
	struct tdev *d = tdev_create(mm, 16, 0);
	struct tdev *d2 = tdev_create(mm, 16, 0);
	char *p = map_anon(n * page_size, PROT_READ | PROT_WRITE);
	struct uhmm_interval_notifier mni = { 0 };
	uint64_t pfns[8];
	struct uhmm_range r = {
		.notifier = &mni, .start = (uintptr_t)p, .end = (uintptr_t)p + n * page_size,
		.hmm_pfns = pfns, .dev_private_owner = &d->owner_token,
	};
	int ret;

	fill_pattern(p, n, 5);
	CHECK_EQ(uhmm_interval_notifier_insert(&mni, mm, (uintptr_t)p, n * page_size,
					       &nop_ops), 0);
	CHECK_EQ(tdev_to_dev(d, (uintptr_t)p, (uintptr_t)p + 4 * page_size, NULL), 4);
	CHECK_EQ(tdev_to_dev(d2, (uintptr_t)p + 4 * page_size,
			     (uintptr_t)p + 6 * page_size, NULL), 2);
	do {
		r.notifier_seq = uhmm_interval_read_begin(&mni);
		ret = uhmm_range_fault(&r);
	} while (ret == -EBUSY);
	CHECK_EQ(ret, 0);
	for (size_t i = 0; i < 4; i++) {
		CHECK((pfns[i] & (UHMM_PFN_VALID | UHMM_PFN_DEVICE_PRIVATE)) ==
		      (UHMM_PFN_VALID | UHMM_PFN_DEVICE_PRIVATE), "own device page %zu", i);
		CHECK(uhmm_pfn_to_page(mm, pfns[i] & UHMM_PFN_NUMBER_MASK) != NULL, "page");
	}
	CHECK_EQ(pfns[4], 0);	/* another owner's page, not requested: not shown */
	CHECK(pfns[6] & UHMM_PFN_VALID, "system page");
	/* Requested: the other owner's pages come back, ours stay. */
	r.default_flags = UHMM_PFN_REQ_FAULT;
	do {
		r.notifier_seq = uhmm_interval_read_begin(&mni);
		ret = uhmm_range_fault(&r);
	} while (ret == -EBUSY);
	CHECK_EQ(ret, 0);
	CHECK_EQ(tdev_used(d2), 0);
	CHECK_EQ(tdev_used(d), 4);
	CHECK(!(pfns[4] & UHMM_PFN_DEVICE_PRIVATE) && (pfns[4] & UHMM_PFN_VALID), "back");
	CHECK_EQ(check_pattern(p, n, 5), -1);
	printf("range fault with device-private pages: ok\n");
	uhmm_interval_notifier_remove(&mni);
	munmap(p, n * page_size);
	tdev_destroy(d);
	tdev_destroy(d2);
}

static void test_bad_input(void)
{
	struct tdev *d = tdev_create(mm, 4, 0);
	char *p = map_far(4 * page_size, PROT_READ | PROT_WRITE);	/* a hole stays one */
	char *q = map_anon(4 * page_size, PROT_NONE);
	unsigned long cpages = 1;

	CHECK_EQ(tdev_to_dev(d, (uintptr_t)p + 1, (uintptr_t)p + page_size, NULL), -EINVAL);
	CHECK_EQ(tdev_to_dev(d, (uintptr_t)p, (uintptr_t)p, NULL), -EINVAL);
	CHECK_EQ(tdev_to_dev(d, (uintptr_t)q, (uintptr_t)q + page_size, NULL), -EINVAL);
	munmap(p + 2 * page_size, page_size);
	CHECK_EQ(tdev_to_dev(d, (uintptr_t)p, (uintptr_t)p + 4 * page_size, NULL), -EINVAL);
	{
		char *s = mmap(NULL, 2 * page_size, PROT_READ | PROT_WRITE,
			       MAP_SHARED | MAP_ANONYMOUS, -1, 0);

		CHECK(s != MAP_FAILED, "mmap shared");
		s[0] = 1;
		CHECK_EQ(tdev_to_dev(d, (uintptr_t)s, (uintptr_t)s + 2 * page_size, &cpages), 0);
		CHECK_EQ(cpages, 0);
		munmap(s, 2 * page_size);
	}
	CHECK_EQ(uhmm_devmem_add(mm, &d->pgmap), -EINVAL);	/* already added */
	printf("bad input: ok\n");
	munmap(p, 2 * page_size);
	munmap(p + 3 * page_size, page_size);
	munmap(q, 4 * page_size);
	tdev_destroy(d);
}

/*
 * The memory uhmm spends per device-resident page: one descriptor in the
 * pool (struct uhmm_page), and one 8-byte entry in the special-entry table,
 * whose 4 KiB leaves each cover 512 pages: dense ranges cost 8 bytes a page
 * plus interior nodes, a page alone in its 2 MiB of address space costs a
 * whole leaf.
 */
static void test_overhead(void)
{
	const size_t n = 4096, sparse = 16;
	struct tdev *d = tdev_create(mm, n + sparse, 0);
	char *p = map_aligned_2m(n * page_size, PROT_READ | PROT_WRITE);
	char *q = map_aligned_2m(sparse * (2u << 20), PROT_READ | PROT_WRITE);
	struct uhmm_mm_stats a, b, c;
	double dense_pp, sparse_pp;

	CHECK_EQ(uhmm_mm_stats(NULL, &a), -EINVAL);
	CHECK_EQ(uhmm_mm_stats(mm, NULL), -EINVAL);
	CHECK_EQ(uhmm_mm_stats(mm, &a), 0);
	fill_pattern(p, n, 9);
	CHECK_EQ(tdev_to_dev(d, (uintptr_t)p, (uintptr_t)p + n * page_size, NULL), n);
	CHECK_EQ(uhmm_mm_stats(mm, &b), 0);
	CHECK_EQ(b.device_pages - a.device_pages, n);
	CHECK_EQ(b.special_entries - a.special_entries, n);
	CHECK_EQ(b.page_desc_bytes, a.page_desc_bytes);	/* allocated at devmem_add */
	dense_pp = (double)(b.entry_table_bytes - a.entry_table_bytes) / n;
	/* 8 leaves of 512 entries, plus at most three interior nodes. */
	CHECK(b.entry_table_bytes - a.entry_table_bytes <= (n / 512 + 3) * 4096,
	      "entry table grew by %llu bytes for %zu dense pages",
	      (unsigned long long)(b.entry_table_bytes - a.entry_table_bytes), n);

	for (size_t i = 0; i < sparse; i++) {
		char *pg = q + i * (2u << 20);

		memset(pg, (int)i + 1, page_size);
		CHECK_EQ(tdev_to_dev(d, (uintptr_t)pg, (uintptr_t)pg + page_size, NULL), 1);
	}
	CHECK_EQ(uhmm_mm_stats(mm, &c), 0);
	CHECK_EQ(c.device_pages - b.device_pages, sparse);
	sparse_pp = (double)(c.entry_table_bytes - b.entry_table_bytes) / sparse;
	CHECK(c.entry_table_bytes - b.entry_table_bytes <= (sparse + 3) * 4096,
	      "entry table grew by %llu bytes for %zu sparse pages",
	      (unsigned long long)(c.entry_table_bytes - b.entry_table_bytes), sparse);
	printf("memory per device-resident page: %zu B descriptor (for every device page) + "
	       "%.1f B entry table when dense (%zu pages), %.0f B when alone in 2 MiB: ok\n",
	       sizeof(struct uhmm_page), dense_pp, n, sparse_pp);

	CHECK_EQ(check_pattern(p, n, 9), -1);
	for (size_t i = 0; i < sparse; i++)
		CHECK_EQ(q[i * (2u << 20)], (char)(i + 1));
	munmap(p, n * page_size);
	munmap(q, sparse * (2u << 20));
	tdev_destroy(d);
}

static void start(void)
{
	mm = test_mm();
}

static int finish(void)
{
	uhmm_mm_put(mm);
	return 0;
}

static const struct test_case cases[] = {
	TEST_CASE(test_roundtrip),
	TEST_CASE(test_empty_and_zero),
	TEST_CASE(test_failures),
	TEST_CASE(test_evict_range),
	TEST_CASE(test_range_fault_device),
	TEST_CASE(test_bad_input),
	TEST_CASE(test_overhead),
};

TEST_MAIN("test_migrate", start, finish)
