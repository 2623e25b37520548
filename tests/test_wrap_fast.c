// SPDX-License-Identifier: MIT
/*
 * The libc wrappers' fast path (src/managed.c): over memory uhmm has
 * nothing to do with they go straight to the system call; over memory it
 * manages they must still do everything the kernel's munmap / madvise /
 * mprotect do before returning: device pages of the range freed, notifiers
 * told.  The cases are those where the summary could be wrong: memory that
 * moved (mremap through the wrapper or by a raw system call, which the
 * service thread learns about only through the REMAP event), memory next
 * to managed memory, a notifier that came and went.
 */
#include <sys/syscall.h>

#include "common.h"

static struct uhmm_mm *mm;
static struct tdev *dev;
static atomic_long ncalls;
static atomic_int last_event;

static bool count_inv(struct uhmm_interval_notifier *n, const struct uhmm_notifier_range *r,
		      unsigned long seq)
{
	uhmm_interval_set_seq(n, seq);
	atomic_store(&last_event, (int)r->event);
	atomic_fetch_add(&ncalls, 1);
	return true;
}

static const struct uhmm_interval_notifier_ops count_ops = { .invalidate = count_inv };

/* n device-resident pages with a pattern, and a PROT_NONE page after them. */
static char *on_device(size_t n, uint32_t seed)
{
	char *p = map_far((n + 1) * page_size, PROT_READ | PROT_WRITE);

	CHECK_EQ(mprotect(p + n * page_size, page_size, PROT_NONE), 0);
	fill_pattern(p, n, seed);
	CHECK_EQ(tdev_to_dev(dev, (uintptr_t)p, (uintptr_t)p + n * page_size, NULL), (long)n);
	return p;
}

static void test_munmap_frees(void)
{
	const size_t n = 8;
	long f0 = atomic_load(&dev->frees);
	char *p = on_device(n, 1);

	CHECK_EQ(munmap(p, (n + 1) * page_size), 0);
	CHECK_EQ(atomic_load(&dev->frees) - f0, (long)n);
	printf("munmap of device-resident memory frees its device pages before it returns: ok\n");
}

static void test_moved(bool raw, bool discard)
{
	const size_t n = 8;
	long f0 = atomic_load(&dev->frees);
	char *p = on_device(n, 2), *q;

	if (raw)
		q = (char *)syscall(SYS_mremap, p, n * page_size, 2 * n * page_size,
				    MREMAP_MAYMOVE);
	else
		q = mremap(p, n * page_size, 2 * n * page_size, MREMAP_MAYMOVE);
	CHECK(q != MAP_FAILED && q != p, "mremap: %s", strerror(errno));
	if (discard) {
		CHECK_EQ(madvise(q, 2 * n * page_size, MADV_DONTNEED), 0);
		CHECK_EQ(atomic_load(&dev->frees) - f0, (long)n);
		for (size_t i = 0; i < 2 * n * page_size; i += 64)
			CHECK(q[i] == 0, "byte %zu after MADV_DONTNEED", i);
		CHECK_EQ(munmap(q, 2 * n * page_size), 0);
	} else {
		CHECK_EQ(munmap(q, 2 * n * page_size), 0);
		CHECK_EQ(atomic_load(&dev->frees) - f0, (long)n);
	}
	CHECK_EQ(munmap(p + n * page_size, page_size), 0);	/* the guard */
	printf("%s mremap of device-resident memory, then %s at the new address: device "
	       "pages freed before it returns: ok\n", raw ? "raw" : "wrapped",
	       discard ? "MADV_DONTNEED" : "munmap");
}

static void test_neighbours(void)
{
	const size_t n = 4;
	struct uhmm_interval_notifier mni = { 0 };
	char *p = map_far(3 * n * page_size, PROT_READ | PROT_WRITE);
	char *mid = p + n * page_size;
	long c;

	memset(p, 1, 3 * n * page_size);
	CHECK_EQ(uhmm_interval_notifier_insert(&mni, mm, (uintptr_t)mid, n * page_size,
					       &count_ops), 0);
	c = atomic_load(&ncalls);
	/* Right next to the notifier, on both sides: nothing to tell. */
	CHECK_EQ(mprotect(p, n * page_size, PROT_READ), 0);
	CHECK_EQ(madvise(mid + n * page_size, n * page_size, MADV_DONTNEED), 0);
	CHECK_EQ(munmap(p, n * page_size), 0);
	CHECK_EQ(munmap(mid + n * page_size, n * page_size), 0);
	CHECK_EQ(atomic_load(&ncalls), c);
	/* Its own range: told, before the call returns. */
	CHECK_EQ(mprotect(mid, page_size, PROT_READ), 0);
	CHECK_EQ(atomic_load(&ncalls), c + 1);
	CHECK_EQ(atomic_load(&last_event), UHMM_NOTIFY_PROTECTION);
	CHECK_EQ(madvise(mid, page_size, MADV_DONTNEED), 0);
	CHECK_EQ(atomic_load(&ncalls), c + 2);
	CHECK(mmap(mid + page_size, page_size, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == mid + page_size, "mmap");
	CHECK_EQ(atomic_load(&ncalls), c + 3);
	CHECK_EQ(munmap(mid + (n - 1) * page_size, page_size), 0);
	CHECK_EQ(atomic_load(&ncalls), c + 4);
	CHECK_EQ(atomic_load(&last_event), UHMM_NOTIFY_UNMAP);
	uhmm_interval_notifier_remove(&mni);
	/* Gone: nothing is told any more. */
	CHECK_EQ(munmap(mid, n * page_size), 0);
	CHECK_EQ(atomic_load(&ncalls), c + 4);
	printf("notifier told of changes to its range only, none of its neighbours', "
	       "none after removal: ok\n");
}

/* The same address used again: new mapping, new migration, new munmap. */
static void test_reuse(void)
{
	const size_t n = 8;

	for (int i = 0; i < 20; i++) {
		long f0 = atomic_load(&dev->frees);
		char *p = on_device(n, 100 + (uint32_t)i);

		CHECK_EQ(check_pattern(p, 1, 100 + (uint32_t)i), -1);	/* page 0 home */
		CHECK_EQ(munmap(p, (n + 1) * page_size), 0);
		CHECK_EQ(atomic_load(&dev->frees) - f0, (long)n);
	}
	printf("map, migrate, munmap repeated: every device page freed in its munmap: ok\n");
}

static void mremap_munmap(void)
{
	test_moved(false, false);
}

static void raw_mremap_munmap(void)
{
	test_moved(true, false);
}

static void raw_mremap_dontneed(void)
{
	test_moved(true, true);
}

static void mremap_dontneed(void)
{
	test_moved(false, true);
}

static void start(void)
{
	mm = test_mm();
	dev = tdev_create(mm, 256, 1);
}

static int finish(void)
{
	tdev_destroy(dev);
	uhmm_mm_put(mm);
	return 0;
}

static const struct test_case cases[] = {
	TEST_CASE(test_munmap_frees),
	TEST_CASE(mremap_munmap),
	TEST_CASE(raw_mremap_munmap),
	TEST_CASE(raw_mremap_dontneed),
	TEST_CASE(mremap_dontneed),
	TEST_CASE(test_neighbours),
	TEST_CASE(test_reuse),
};

TEST_MAIN("test_wrap_fast", start, finish)
