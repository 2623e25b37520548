// SPDX-License-Identifier: MIT
/*
 * Address-space changes over device-resident memory, with the kernel's
 * semantics as the reference (a minimal in-test device, tests/tdev.h):
 *  - munmap of a fully device-resident region frees every device page by the
 *    time munmap returns; partial munmap (first page, last page, middle pages,
 *    head, tail, several offsets, a region only partly on the device) frees
 *    exactly the unmapped part and the rest keeps its data; a raw munmap
 *    system call that bypasses the wrappers frees them too (UNMAP event);
 *  - mremap(MREMAP_MAYMOVE) of device-resident memory forced to move by a
 *    guard page: the data is at the new address (reading faults it back),
 *    nothing is left at the old one, no device page is freed early or
 *    leaked; explicit migration back at the new address; MREMAP_FIXED over
 *    another device-resident region; mremap before migration; mremap shrink;
 *    MREMAP_DONTUNMAP (the old range reads zero); sub-ranges of a larger
 *    device-resident region (DONTUNMAP, FIXED, grow);
 *  - MADV_DONTNEED frees the device pages and the range reads zero;
 *    MADV_FREE leaves device-private pages alone: data and device pages
 *    stay until touched;
 *  - fork: the child sees every page's data (pages on the device at fork
 *    time included), copy-on-write both ways (also after the parent migrates
 *    pages still shared with the child), MAP_SHARED|MAP_ANONYMOUS memory
 *    written by the child is seen by the parent, and the child gets a fresh
 *    context of its own with its own device (checked by exit status);
 *  - uhmm_devmem_remove() with pages resident (moved by mremap, partly
 *    unmapped, next to another device's pages) brings every byte home;
 *  - one mmap migrated in parts is still one mapping, as for the kernel:
 *    migrating all of it, mremap of all of it (device and system pages
 *    together), and a fork child migrating all of its copy work (these
 *    checks report and go on, so all of them show in one run);
 *  - context lifetime: a pool holds a context reference, so the test's last
 *    put does not tear the context down (data still readable, migration still
 *    works); after removal the context is gone and a fresh one works (also
 *    removing the device right after a CPU fault-back).
 */
#include "common.h"

#include <dirent.h>
#include <signal.h>
#include <sys/syscall.h>
#include <time.h>

#define PG(p, i) ((char *)(p) + (size_t)(i) * page_size)

/*
 * Under ThreadSanitizer a child of a multi-threaded fork cannot start
 * threads ("not supported"; it dies or reuses the parent's thread ids), so
 * fork children do not create a uhmm context (its service thread) there.
 */
#if defined(__SANITIZE_THREAD__)
#define DEVVM_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define DEVVM_TSAN 1
#endif
#endif
#ifdef DEVVM_TSAN
static const bool under_tsan = true;
#else
static const bool under_tsan = false;
#endif

static struct uhmm_mm *mm;

/* ---- helpers ------------------------------------------------------------- */

/* Each page gets its own seed, so any sub-range can be checked on its own. */
static void fill_pages(void *p, size_t n, uint32_t seed)
{
	for (size_t i = 0; i < n; i++)
		fill_pattern(PG(p, i), 1, seed + (uint32_t)i);
}

/* First page of [p, p + n pages) not holding its pattern, or -1. */
static long check_pages(const void *p, size_t n, uint32_t seed)
{
	for (size_t i = 0; i < n; i++)
		if (check_pattern(PG(p, i), 1, seed + (uint32_t)i) != -1)
			return (long)i;
	return -1;
}

/* First page of [p, p + n pages) with a non-zero byte, or -1. */
static long first_nonzero(const void *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const volatile unsigned char *b = (const void *)PG(p, i);

		for (size_t k = 0; k < page_size; k++)
			if (b[k])
				return (long)i;
	}
	return -1;
}

/*
 * True if nothing of the program's mapping is left in [p, p + n pages):
 * every page is unmapped, or (sanitizer runtimes map memory of their own at
 * any time, e.g. when the service thread handling the UNMAP event allocates,
 * and such a mapping may land in the fresh hole) mapped anew without uhmm
 * holding a device-private or migrating entry there.  Called right after the
 * munmap/mremap.
 */
static bool unmapped(const void *p, size_t n)
{
	size_t reused = 0;
	unsigned char v;

	for (size_t i = 0; i < n; i++) {
		uint32_t st = 0;

		if (mincore(PG(p, i), page_size, &v) != 0 && errno == ENOMEM)
			continue;
		if (uhmm_page_state(mm, (uintptr_t)PG(p, i), 1, &st) != 0 ||
		    (st & (UHMM_PS_DEVICE_PRIVATE | UHMM_PS_MIGRATING)))
			return false;
		reused++;
	}
	if (reused)
		printf("note: %zu pages of the unmapped range [%p, %p) were mapped anew by "
		       "someone else (a sanitizer runtime)\n", reused, p, (void *)PG(p, n));
	return true;
}

/* True if every page of [p, p + n pages) is mapped. */
static bool mapped(const void *p, size_t n)
{
	unsigned char v;

	for (size_t i = 0; i < n; i++)
		if (mincore(PG(p, i), page_size, &v) != 0)
			return false;
	return true;
}

/* How many pages of [p, p + n pages) are device-private. */
static size_t on_device(struct uhmm_mm *m, const void *p, size_t n)
{
	uint32_t st[64];
	size_t cnt = 0;

	CHECK(n <= 64, "on_device: %zu pages", n);
	if (n == 0)
		return 0;
	CHECK_EQ(uhmm_page_state(m, (uintptr_t)p, n, st), 0);
	for (size_t i = 0; i < n; i++)
		cnt += (st[i] & UHMM_PS_DEVICE_PRIVATE) != 0;
	return cnt;
}

/* n pages, followed by a PROT_NONE guard page so mremap cannot grow in place. */
static char *map_guarded(size_t n)
{
	char *p = map_anon((n + 1) * page_size, PROT_READ | PROT_WRITE);

	CHECK_EQ(mprotect(PG(p, n), page_size, PROT_NONE), 0);
	return p;
}

static void to_dev(struct tdev *d, void *p, size_t n)
{
	CHECK_EQ(tdev_to_dev(d, (uintptr_t)p, (uintptr_t)PG(p, n), NULL), n);
}

static long frees(struct tdev *d)
{
	return atomic_load(&d->frees);
}

/*
 * A tdev whose page_free also signals a condition variable, to wait for
 * frees that happen on uhmm's service thread (changes that bypass the
 * wrappers) without sleeping.
 */
static pthread_mutex_t free_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t free_cond = PTHREAD_COND_INITIALIZER;

static void vdev_page_free(struct uhmm_page *p)
{
	tdev_page_free(p);
	pthread_mutex_lock(&free_lock);
	pthread_cond_broadcast(&free_cond);
	pthread_mutex_unlock(&free_lock);
}

static const struct uhmm_devmem_ops vdev_ops = {
	.page_free = vdev_page_free,
	.migrate_to_ram = tdev_migrate_to_ram,
};

static struct tdev *vdev_create(struct uhmm_mm *m, size_t nr_pages)
{
	return tdev_create_ops(m, nr_pages, 0, &vdev_ops);
}

/*
 * Wait until at most @want pages of @d are in use.  The deadline only turns
 * a hang into a failure; passing never depends on it.
 */
static bool vdev_wait_used(struct tdev *d, size_t want)
{
	struct timespec ts;
	bool ok = true;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 60;
	pthread_mutex_lock(&free_lock);
	while (tdev_used(d) > want) {
		if (pthread_cond_timedwait(&free_cond, &free_lock, &ts) == ETIMEDOUT) {
			ok = tdev_used(d) <= want;
			break;
		}
	}
	pthread_mutex_unlock(&free_lock);
	return ok;
}

/* ---- munmap -------------------------------------------------------------- */

static void test_munmap_full(void)
{
	const size_t n = 48;
	struct tdev *d = tdev_create(mm, 64, 0);
	char *p = map_anon(n * page_size, PROT_READ | PROT_WRITE);

	fill_pages(p, n, 100);
	to_dev(d, p, n);
	CHECK_EQ(tdev_used(d), n);
	CHECK_EQ(on_device(mm, p, n), n);
	CHECK_EQ(frees(d), 0);
	CHECK_EQ(munmap(p, n * page_size), 0);
	CHECK(unmapped(p, n), "region still mapped");
	CHECK_EQ(tdev_used(d), 0);
	CHECK_EQ(frees(d), n);
	CHECK_EQ(atomic_load(&d->cpu_faults), 0);
	printf("munmap of a fully device-resident region: all %zu device pages freed "
	       "when munmap returns: ok\n", n);

	/* A mapping whose pages [4, 20) are on the device, unmapped whole. */
	p = map_anon(24 * page_size, PROT_READ | PROT_WRITE);
	fill_pages(PG(p, 4), 16, 110);
	to_dev(d, PG(p, 4), 16);
	CHECK_EQ(tdev_used(d), 16);
	CHECK_EQ(munmap(p, 24 * page_size), 0);
	CHECK_EQ(tdev_used(d), 0);
	CHECK_EQ(frees(d), n + 16);
	printf("munmap of a mapping whose middle is device-resident: all freed: ok\n");
	tdev_destroy(d);
}

struct cut {
	size_t off, len;
	const char *what;
};

static void test_munmap_partial(void)
{
	static const struct cut cuts[] = {
		{ 0, 1, "first page" },
		{ 15, 1, "last page" },
		{ 7, 1, "one middle page" },
		{ 5, 3, "middle pages" },
		{ 1, 2, "pages 1-2" },
		{ 0, 6, "head" },
		{ 10, 6, "tail" },
		{ 1, 14, "all but the first and last page" },
	};
	const size_t n = 16;
	struct tdev *d = tdev_create(mm, 32, 0);

	for (size_t c = 0; c < sizeof(cuts) / sizeof(cuts[0]); c++) {
		const size_t off = cuts[c].off, len = cuts[c].len, rest = n - off - len;
		const uint32_t seed = 200 + 100 * (uint32_t)c;
		char *p = map_anon(n * page_size, PROT_READ | PROT_WRITE);
		long f0 = frees(d);

		fill_pages(p, n, seed);
		to_dev(d, p, n);
		CHECK_EQ(munmap(PG(p, off), len * page_size), 0);
		CHECK(unmapped(PG(p, off), len), "%s: still mapped", cuts[c].what);
		CHECK(tdev_used(d) == n - len && frees(d) - f0 == (long)len,
		      "%s: used %zu, freed %ld, expected %zu and %zu", cuts[c].what,
		      tdev_used(d), frees(d) - f0, n - len, len);
		CHECK(on_device(mm, p, off) == off &&
		      on_device(mm, PG(p, off + len), rest) == rest,
		      "%s: the remaining pages must still be on the device", cuts[c].what);
		CHECK(check_pages(p, off, seed) == -1, "%s: head data", cuts[c].what);
		CHECK(check_pages(PG(p, off + len), rest, seed + (uint32_t)(off + len)) == -1,
		      "%s: tail data", cuts[c].what);
		CHECK(tdev_used(d) == 0 && frees(d) - f0 == (long)n,
		      "%s: after reading back: used %zu, freed %ld", cuts[c].what,
		      tdev_used(d), frees(d) - f0);
		if (off)
			CHECK_EQ(munmap(p, off * page_size), 0);
		if (rest)
			CHECK_EQ(munmap(PG(p, off + len), rest * page_size), 0);
		printf("partial munmap of a device-resident region (%s, pages [%zu, %zu) of %zu): "
		       "exactly %zu freed, the rest intact: ok\n", cuts[c].what, off,
		       off + len, n, len);
	}

	/* A region only partly on the device: [4, 12) resident. */
	{
		char *p = map_anon(n * page_size, PROT_READ | PROT_WRITE);
		long f0 = frees(d);

		fill_pages(p, n, 1200);
		to_dev(d, PG(p, 4), 8);
		CHECK_EQ(munmap(PG(p, 2), 4 * page_size), 0);	/* 2 system, 2 device */
		CHECK_EQ(tdev_used(d), 6);
		CHECK_EQ(frees(d) - f0, 2);
		CHECK_EQ(munmap(PG(p, 10), 4 * page_size), 0);	/* 2 device, 2 system */
		CHECK_EQ(tdev_used(d), 4);
		CHECK_EQ(frees(d) - f0, 4);
		CHECK_EQ(on_device(mm, PG(p, 6), 4), 4);
		CHECK_EQ(check_pages(p, 2, 1200), -1);
		CHECK_EQ(check_pages(PG(p, 6), 4, 1206), -1);
		CHECK_EQ(check_pages(PG(p, 14), 2, 1214), -1);
		CHECK_EQ(tdev_used(d), 0);
		CHECK_EQ(frees(d) - f0, 8);
		munmap(p, 2 * page_size);
		munmap(PG(p, 6), 4 * page_size);
		munmap(PG(p, 14), 2 * page_size);
		printf("partial munmap across device and system pages: only the device "
		       "pages unmapped are freed: ok\n");
	}
	tdev_destroy(d);
}

/* munmap by raw system call: seen through the UNMAP event of the registered range. */
static void test_munmap_raw(void)
{
	const size_t n = 16;
	struct tdev *d = vdev_create(mm, 32);
	char *p = map_anon(n * page_size, PROT_READ | PROT_WRITE);

	fill_pages(p, n, 1300);
	to_dev(d, p, n);
	CHECK_EQ(syscall(SYS_munmap, PG(p, 4), 8 * page_size), 0);
	CHECK(unmapped(PG(p, 4), 8), "still mapped");
	CHECK(vdev_wait_used(d, n - 8), "raw munmap: %zu device pages still used, "
	      "expected %zu", tdev_used(d), n - 8);
	CHECK_EQ(frees(d), 8);
	CHECK_EQ(check_pages(p, 4, 1300), -1);
	CHECK_EQ(check_pages(PG(p, 12), 4, 1312), -1);
	CHECK_EQ(tdev_used(d), 0);
	CHECK_EQ(syscall(SYS_munmap, p, 4 * page_size), 0);
	CHECK_EQ(syscall(SYS_munmap, PG(p, 12), 4 * page_size), 0);
	printf("raw munmap syscall (bypassing the wrappers) of device-resident pages: "
	       "freed through the UNMAP event, the rest intact: ok\n");
	tdev_destroy(d);
}

/* ---- mremap -------------------------------------------------------------- */

static void test_mremap_move(void)
{
	const size_t n = 16;
	struct tdev *d = tdev_create(mm, 64, 0);
	char *p, *q, *a, *b;
	long f0, cf0;

	/* Grow with MREMAP_MAYMOVE: the guard page forces a move. */
	p = map_guarded(n);
	fill_pages(p, n, 1400);
	to_dev(d, p, n);
	q = mremap(p, n * page_size, 2 * n * page_size, MREMAP_MAYMOVE);
	CHECK(q != MAP_FAILED, "mremap: %s", strerror(errno));
	CHECK(q != p, "mremap did not move the region");
	CHECK(unmapped(p, n), "the old range is still mapped");
	CHECK_EQ(tdev_used(d), n);
	CHECK_EQ(frees(d), 0);
	CHECK_EQ(on_device(mm, q, n), n);
	CHECK_EQ(first_nonzero(PG(q, n), n), -1);	/* the grown part */
	CHECK_EQ(tdev_used(d), n);
	CHECK_EQ(check_pages(q, n, 1400), -1);
	CHECK(atomic_load(&d->cpu_faults) > 0, "CPU faults at the new address");
	CHECK_EQ(tdev_used(d), 0);
	CHECK_EQ(frees(d), n);
	CHECK_EQ(munmap(q, 2 * n * page_size), 0);
	CHECK_EQ(munmap(PG(p, n), page_size), 0);
	printf("mremap(MAYMOVE) of device-resident memory: data at the new address, "
	       "old range unmapped, no device page freed early or leaked: ok\n");

	/* Moved, then migrated back explicitly at the new address, then unmapped. */
	p = map_guarded(n);
	fill_pages(p, n, 1500);
	to_dev(d, p, n);
	q = mremap(p, n * page_size, 2 * n * page_size, MREMAP_MAYMOVE);
	CHECK(q != MAP_FAILED && q != p, "mremap: %s", strerror(errno));
	cf0 = atomic_load(&d->cpu_faults);
	f0 = frees(d);
	CHECK_EQ(tdev_to_sys(d, (uintptr_t)q, (uintptr_t)PG(q, n), NULL), n);
	CHECK_EQ(atomic_load(&d->cpu_faults), cf0);
	CHECK_EQ(tdev_used(d), 0);
	CHECK_EQ(frees(d) - f0, n);
	CHECK_EQ(check_pages(q, n, 1500), -1);
	to_dev(d, q, 2 * n);	/* the grown, empty part too */
	CHECK_EQ(tdev_used(d), 2 * n);
	CHECK_EQ(munmap(q, 2 * n * page_size), 0);
	CHECK_EQ(tdev_used(d), 0);
	CHECK_EQ(frees(d) - f0, 3 * n);
	CHECK_EQ(munmap(PG(p, n), page_size), 0);
	printf("mremap then explicit migration back at the new address, to the device "
	       "again, munmap: ok\n");

	/* MREMAP_FIXED onto another device-resident region. */
	a = map_anon(n * page_size, PROT_READ | PROT_WRITE);
	b = map_anon(n * page_size, PROT_READ | PROT_WRITE);
	fill_pages(a, n, 1600);
	fill_pages(b, n, 1700);
	to_dev(d, a, n);
	to_dev(d, b, n);
	f0 = frees(d);
	q = mremap(a, n * page_size, n * page_size, MREMAP_MAYMOVE | MREMAP_FIXED, b);
	CHECK(q == b, "mremap FIXED: %p (%s)", (void *)q, strerror(errno));
	CHECK(unmapped(a, n), "the old range is still mapped");
	CHECK_EQ(tdev_used(d), n);
	CHECK_EQ(frees(d) - f0, n);	/* the replaced region's pages */
	CHECK_EQ(on_device(mm, b, n), n);
	CHECK_EQ(check_pages(b, n, 1600), -1);
	CHECK_EQ(tdev_used(d), 0);
	CHECK_EQ(frees(d) - f0, 2 * n);
	CHECK_EQ(munmap(b, n * page_size), 0);
	printf("mremap(FIXED) of device-resident memory over another device-resident "
	       "region: the replaced pages freed, the moved data intact: ok\n");

	/* mremap before migration, then migrate at the new address. */
	p = map_guarded(n);
	fill_pages(p, n, 1800);
	q = mremap(p, n * page_size, 2 * n * page_size, MREMAP_MAYMOVE);
	CHECK(q != MAP_FAILED && q != p, "mremap: %s", strerror(errno));
	CHECK(unmapped(p, n), "the old range is still mapped");
	to_dev(d, q, n);
	CHECK_EQ(on_device(mm, q, n), n);
	CHECK_EQ(check_pages(q, n, 1800), -1);
	CHECK_EQ(tdev_used(d), 0);
	CHECK_EQ(munmap(q, 2 * n * page_size), 0);
	CHECK_EQ(munmap(PG(p, n), page_size), 0);
	printf("mremap before migration, then migration at the new address: ok\n");

	/* Shrink in place: the cut-off tail is unmapped. */
	p = map_anon(n * page_size, PROT_READ | PROT_WRITE);
	fill_pages(p, n, 1900);
	to_dev(d, p, n);
	f0 = frees(d);
	q = mremap(p, n * page_size, n / 2 * page_size, 0);
	CHECK(q == p, "mremap shrink: %s", strerror(errno));
	CHECK(unmapped(PG(p, n / 2), n / 2), "the tail is still mapped");
	CHECK_EQ(tdev_used(d), n / 2);
	CHECK_EQ(frees(d) - f0, n / 2);
	CHECK_EQ(on_device(mm, p, n / 2), n / 2);
	CHECK_EQ(check_pages(p, n / 2, 1900), -1);
	CHECK_EQ(tdev_used(d), 0);
	CHECK_EQ(munmap(p, n / 2 * page_size), 0);
	printf("mremap shrink of device-resident memory: the tail's device pages freed, "
	       "the head intact: ok\n");
	tdev_destroy(d);
}

static void test_mremap_dontunmap(void)
{
	const size_t n = 16;
	struct tdev *d = tdev_create(mm, 32, 0);
	char *p = map_anon(n * page_size, PROT_READ | PROT_WRITE), *q;

	fill_pages(p, n, 2000);
	to_dev(d, p, n);
	q = mremap(p, n * page_size, n * page_size, MREMAP_MAYMOVE | MREMAP_DONTUNMAP);
	if (q == MAP_FAILED && errno == EINVAL) {
		printf("MREMAP_DONTUNMAP: SKIP: not supported here for this mapping\n");
		munmap(p, n * page_size);
		tdev_destroy(d);
		return;
	}
	CHECK(q != MAP_FAILED && q != p, "mremap DONTUNMAP: %s", strerror(errno));
	CHECK_EQ(tdev_used(d), n);
	CHECK_EQ(frees(d), 0);
	CHECK_EQ(on_device(mm, q, n), n);
	CHECK(mapped(p, n), "the old range must stay mapped");
	CHECK_EQ(on_device(mm, p, n), 0);
	CHECK_EQ(first_nonzero(p, n), -1);
	CHECK_EQ(tdev_used(d), n);	/* reading the old range took nothing back */
	CHECK_EQ(check_pages(q, n, 2000), -1);
	CHECK_EQ(tdev_used(d), 0);
	CHECK_EQ(frees(d), n);
	fill_pages(p, n, 2100);		/* the old range is ordinary memory again */
	CHECK_EQ(check_pages(p, n, 2100), -1);
	CHECK_EQ(check_pages(q, n, 2000), -1);
	CHECK_EQ(munmap(p, n * page_size), 0);
	CHECK_EQ(munmap(q, n * page_size), 0);
	printf("mremap(DONTUNMAP) of device-resident memory: data at the new address, "
	       "the old range reads zero: ok\n");
	tdev_destroy(d);
}

static void test_mremap_subrange(void)
{
	const size_t n = 16;
	struct tdev *d = tdev_create(mm, 32, 0);
	char *p, *q, *dst;
	long f0;

	/* DONTUNMAP of pages [4, 8). */
	p = map_anon(n * page_size, PROT_READ | PROT_WRITE);
	fill_pages(p, n, 2200);
	to_dev(d, p, n);
	f0 = frees(d);
	q = mremap(PG(p, 4), 4 * page_size, 4 * page_size,
		   MREMAP_MAYMOVE | MREMAP_DONTUNMAP);
	if (q == MAP_FAILED && errno == EINVAL) {
		printf("sub-range MREMAP_DONTUNMAP: SKIP: not supported here\n");
	} else {
		CHECK(q != MAP_FAILED, "mremap DONTUNMAP: %s", strerror(errno));
		CHECK_EQ(tdev_used(d), n);
		CHECK_EQ(frees(d) - f0, 0);
		CHECK_EQ(on_device(mm, q, 4), 4);
		CHECK_EQ(on_device(mm, p, 4), 4);
		CHECK_EQ(on_device(mm, PG(p, 4), 4), 0);
		CHECK_EQ(on_device(mm, PG(p, 8), 8), 8);
		CHECK_EQ(first_nonzero(PG(p, 4), 4), -1);
		CHECK_EQ(tdev_used(d), n);
		CHECK_EQ(check_pages(q, 4, 2204), -1);
		CHECK_EQ(check_pages(p, 4, 2200), -1);
		CHECK_EQ(check_pages(PG(p, 8), 8, 2208), -1);
		CHECK_EQ(tdev_used(d), 0);
		CHECK_EQ(frees(d) - f0, n);
		CHECK_EQ(munmap(q, 4 * page_size), 0);
		printf("mremap(DONTUNMAP) of a sub-range of a device-resident region: moved "
		       "part at the new address, its old place reads zero, the rest "
		       "still on the device and intact: ok\n");
	}
	CHECK_EQ(munmap(p, n * page_size), 0);

	/* MREMAP_FIXED of pages [10, 13) onto a reserved place. */
	p = map_anon(n * page_size, PROT_READ | PROT_WRITE);
	dst = map_anon(3 * page_size, PROT_NONE);
	fill_pages(p, n, 2300);
	to_dev(d, p, n);
	f0 = frees(d);
	q = mremap(PG(p, 10), 3 * page_size, 3 * page_size, MREMAP_MAYMOVE | MREMAP_FIXED,
		   dst);
	CHECK(q == dst, "mremap FIXED: %s", strerror(errno));
	CHECK(unmapped(PG(p, 10), 3), "the moved pages' old place is still mapped");
	CHECK_EQ(tdev_used(d), n);
	CHECK_EQ(frees(d) - f0, 0);
	CHECK_EQ(on_device(mm, dst, 3), 3);
	CHECK_EQ(on_device(mm, p, 10), 10);
	CHECK_EQ(on_device(mm, PG(p, 13), 3), 3);
	CHECK_EQ(check_pages(dst, 3, 2310), -1);
	CHECK_EQ(check_pages(p, 10, 2300), -1);
	CHECK_EQ(check_pages(PG(p, 13), 3, 2313), -1);
	CHECK_EQ(tdev_used(d), 0);
	CHECK_EQ(frees(d) - f0, n);
	CHECK_EQ(munmap(p, 10 * page_size), 0);
	CHECK_EQ(munmap(PG(p, 13), 3 * page_size), 0);
	CHECK_EQ(munmap(dst, 3 * page_size), 0);
	printf("mremap(FIXED) of a sub-range of a device-resident region: ok\n");

	/* Grow pages [2, 6) to 8 pages: page 6 is mapped, so it must move. */
	p = map_anon(n * page_size, PROT_READ | PROT_WRITE);
	fill_pages(p, n, 2400);
	to_dev(d, p, n);
	f0 = frees(d);
	q = mremap(PG(p, 2), 4 * page_size, 8 * page_size, MREMAP_MAYMOVE);
	CHECK(q != MAP_FAILED && q != PG(p, 2), "mremap grow: %s", strerror(errno));
	CHECK(unmapped(PG(p, 2), 4), "the moved pages' old place is still mapped");
	CHECK_EQ(tdev_used(d), n);
	CHECK_EQ(frees(d) - f0, 0);
	CHECK_EQ(on_device(mm, q, 4), 4);
	CHECK_EQ(first_nonzero(PG(q, 4), 4), -1);
	CHECK_EQ(check_pages(q, 4, 2402), -1);
	CHECK_EQ(check_pages(p, 2, 2400), -1);
	CHECK_EQ(check_pages(PG(p, 6), 10, 2406), -1);
	CHECK_EQ(tdev_used(d), 0);
	CHECK_EQ(frees(d) - f0, n);
	CHECK_EQ(munmap(p, 2 * page_size), 0);
	CHECK_EQ(munmap(PG(p, 6), 10 * page_size), 0);
	CHECK_EQ(munmap(q, 8 * page_size), 0);
	printf("mremap(MAYMOVE) growing a sub-range of a device-resident region: ok\n");
	tdev_destroy(d);
}

/* ---- madvise ------------------------------------------------------------- */

static void test_madv_dontneed(void)
{
	const size_t n = 16;
	struct tdev *d = tdev_create(mm, 32, 0);
	char *p;
	long f0;

	p = map_anon(n * page_size, PROT_READ | PROT_WRITE);
	fill_pages(p, n, 2600);
	to_dev(d, p, n);
	CHECK_EQ(madvise(PG(p, 4), 4 * page_size, MADV_DONTNEED), 0);
	CHECK_EQ(tdev_used(d), n - 4);
	CHECK_EQ(frees(d), 4);
	CHECK_EQ(on_device(mm, PG(p, 4), 4), 0);
	CHECK_EQ(first_nonzero(PG(p, 4), 4), -1);
	CHECK_EQ(tdev_used(d), n - 4);
	CHECK_EQ(check_pages(p, 4, 2600), -1);
	CHECK_EQ(check_pages(PG(p, 8), 8, 2608), -1);
	CHECK_EQ(tdev_used(d), 0);
	CHECK_EQ(frees(d), n);
	printf("MADV_DONTNEED over device-resident pages [4, 8): freed, reads zero, the "
	       "rest intact: ok\n");

	f0 = frees(d);
	fill_pages(p, n, 2700);
	to_dev(d, p, n);
	CHECK_EQ(madvise(p, n * page_size, MADV_DONTNEED), 0);
	CHECK_EQ(tdev_used(d), 0);
	CHECK_EQ(frees(d) - f0, n);
	CHECK_EQ(first_nonzero(p, n), -1);
	printf("MADV_DONTNEED over a whole device-resident region: all freed, reads "
	       "zero: ok\n");

	/* Device pages [0, 8), system pages [8, 16); discard [4, 12). */
	f0 = frees(d);
	fill_pages(p, n, 2800);
	to_dev(d, p, 8);
	CHECK_EQ(madvise(PG(p, 4), 8 * page_size, MADV_DONTNEED), 0);
	CHECK_EQ(tdev_used(d), 4);
	CHECK_EQ(frees(d) - f0, 4);
	CHECK_EQ(first_nonzero(PG(p, 4), 8), -1);
	CHECK_EQ(check_pages(p, 4, 2800), -1);
	CHECK_EQ(check_pages(PG(p, 12), 4, 2812), -1);
	CHECK_EQ(tdev_used(d), 0);
	CHECK_EQ(munmap(p, n * page_size), 0);
	printf("MADV_DONTNEED across device and system pages: ok\n");
	tdev_destroy(d);
}

static void test_madv_free(void)
{
	const size_t n = 16;
	struct tdev *d = tdev_create(mm, 32, 0);
	char *p = map_anon(n * page_size, PROT_READ | PROT_WRITE);
	long f0;

	fill_pages(p, n, 2900);
	to_dev(d, p, n);
	CHECK_EQ(madvise(p, n * page_size, MADV_FREE), 0);
	CHECK_EQ(tdev_used(d), n);
	CHECK_EQ(frees(d), 0);
	CHECK_EQ(on_device(mm, p, n), n);
	CHECK_EQ(check_pages(p, n, 2900), -1);
	CHECK_EQ(tdev_used(d), 0);
	CHECK_EQ(frees(d), n);
	printf("MADV_FREE over device-resident pages: they stay on the device with "
	       "their data until touched: ok\n");

	/* Device pages [0, 8), system pages [8, 16); MADV_FREE [4, 12). */
	f0 = frees(d);
	fill_pages(p, n, 3000);
	to_dev(d, p, 8);
	CHECK_EQ(madvise(PG(p, 4), 8 * page_size, MADV_FREE), 0);
	CHECK_EQ(tdev_used(d), 8);
	CHECK_EQ(frees(d) - f0, 0);
	CHECK_EQ(on_device(mm, p, 8), 8);
	CHECK_EQ(check_pages(p, 8, 3000), -1);
	CHECK_EQ(tdev_used(d), 0);
	printf("MADV_FREE across device and system pages: device pages kept with their "
	       "data: ok\n");

	/* Then discarded for real. */
	f0 = frees(d);
	to_dev(d, p, n);
	CHECK_EQ(madvise(p, n * page_size, MADV_FREE), 0);
	CHECK_EQ(tdev_used(d), n);
	CHECK_EQ(munmap(p, n * page_size), 0);
	CHECK_EQ(tdev_used(d), 0);
	CHECK_EQ(frees(d) - f0, n);
	printf("MADV_FREE then munmap: the kept device pages are freed: ok\n");
	tdev_destroy(d);
}

/* ---- fork ---------------------------------------------------------------- */

#define FN 32			/* pages of the private region */
#define SHN 4			/* pages of the shared region */

struct fork_ctx {
	char *p;		/* private: [0, 16) on the device at fork, [16, 32) system */
	char *sh;		/* MAP_SHARED | MAP_ANONYMOUS */
	int to_child, from_child;
};

static void xwrite(int fd, char c)
{
	ssize_t r;

	do
		r = write(fd, &c, 1);
	while (r < 0 && errno == EINTR);
	CHECK_EQ(r, 1);
}

/* One byte from @fd, or 0 at end of file (the other side exited). */
static char xread(int fd)
{
	ssize_t r;
	char c = 0;

	do
		r = read(fd, &c, 1);
	while (r < 0 && errno == EINTR);
	return r == 1 ? c : 0;
}

#define CHILD_CHECK(cond, code, ...)                                          \
	do {                                                                  \
		if (!(cond)) {                                                \
			fprintf(stderr, "%s: child FAIL line %d: %s: ", test_name, \
				__LINE__, #cond);                             \
			fprintf(stderr, __VA_ARGS__);                         \
			fprintf(stderr, "\n");                                \
			_exit(code);                                          \
		}                                                             \
	} while (0)

static int fork_child(struct fork_ctx *c)
{
	struct uhmm_mm *cm = NULL;
	struct tdev *cd;
	long r;

	/* Every page, device-resident at fork time or not, holds its data. */
	r = check_pages(c->p, FN, 3100);
	CHILD_CHECK(r == -1, 10, "page %ld of the parent's data wrong in the child", r);
	fill_pages(c->sh, SHN, 3200);
	xwrite(c->from_child, 'a');
	if (xread(c->to_child) != 'b')
		_exit(11);
	/* The parent wrote and migrated meanwhile: not visible here. */
	r = check_pages(c->p, FN, 3100);
	CHILD_CHECK(r == -1, 12, "page %ld: the parent's post-fork change is visible", r);
	fill_pages(c->p, FN, 3300);
	r = check_pages(c->p, FN, 3300);
	CHILD_CHECK(r == -1, 13, "page %ld: the child's own write", r);

	/* A fresh context of the child's own, with its own device. */
	CHILD_CHECK(count_uffds() == 0, 14, "the parent's userfaultfd leaked into the child");
	if (under_tsan) {
		xwrite(c->from_child, 'c');
		return 0;
	}
	CHILD_CHECK(uhmm_mm_get(&cm) == 0 && cm, 15, "uhmm_mm_get in the child: %s",
		    uhmm_last_error());
	CHILD_CHECK(count_uffds() == 1, 16, "the child's context has no userfaultfd");
	cd = tdev_create(cm, 32, 0);
	/* [16, 32): the part that was never on the parent's device. */
	r = tdev_to_dev(cd, (uintptr_t)PG(c->p, 16), (uintptr_t)PG(c->p, FN), NULL);
	CHILD_CHECK(r == 16, 17, "child migration: %ld (%s)", r, uhmm_last_error());
	CHILD_CHECK(tdev_used(cd) == 16, 18, "child device used %zu", tdev_used(cd));
	CHILD_CHECK(on_device(cm, PG(c->p, 16), 16) == 16, 19, "child pages not on its device");
	CHILD_CHECK(munmap(PG(c->p, 24), 8 * page_size) == 0, 20, "munmap");
	CHILD_CHECK(tdev_used(cd) == 8 && atomic_load(&cd->frees) == 8, 21,
		    "child munmap: used %zu", tdev_used(cd));
	r = check_pages(PG(c->p, 16), 8, 3316);
	CHILD_CHECK(r == -1, 22, "page %ld of the child's data after its migration", r);
	CHILD_CHECK(tdev_used(cd) == 0, 23, "child device used %zu", tdev_used(cd));
	/* [0, 8): on the parent's device at fork time. */
	r = tdev_to_dev(cd, (uintptr_t)c->p, (uintptr_t)PG(c->p, 8), NULL);
	CHILD_CHECK(r == 8, 26, "child migration: %ld (%s)", r, uhmm_last_error());
	tdev_destroy(cd);
	r = check_pages(c->p, 16, 3300);
	CHILD_CHECK(r == -1, 24, "page %ld after the child's device removal", r);
	uhmm_mm_put(cm);
	CHILD_CHECK(count_uffds() == 0, 25, "the child's context was not torn down");
	xwrite(c->from_child, 'c');
	return 0;
}

static void test_fork(void)
{
	struct tdev *d = tdev_create(mm, 64, 0);
	struct fork_ctx c;
	int to_child[2], from_child[2], status;
	long migrated;
	char c_done;
	pid_t pid;

	signal(SIGPIPE, SIG_IGN);	/* a dead child fails a CHECK, not the process */
	c.p = map_anon(FN * page_size, PROT_READ | PROT_WRITE);
	c.sh = mmap(NULL, SHN * page_size, PROT_READ | PROT_WRITE,
		    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	CHECK(c.sh != MAP_FAILED, "mmap shared: %s", strerror(errno));
	fill_pages(c.p, FN, 3100);
	to_dev(d, c.p, 16);
	CHECK_EQ(on_device(mm, c.p, FN), 16);
	CHECK_EQ(pipe(to_child), 0);
	CHECK_EQ(pipe(from_child), 0);
	c.to_child = to_child[0];
	c.from_child = from_child[1];

	pid = fork();
	CHECK(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		close(to_child[1]);
		close(from_child[0]);
		_exit(fork_child(&c));
	}
	close(to_child[0]);
	close(from_child[1]);

	/* The child checked the data and wrote the shared region. */
	if (xread(from_child[0]) != 'a') {
		CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
		CHECK(0, "child failed early: status %#x (exit %d)", status,
		      WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	}
	CHECK_EQ(check_pages(c.sh, SHN, 3200), -1);
	printf("fork: MAP_SHARED|MAP_ANONYMOUS memory written by the child is seen by "
	       "the parent: ok\n");
	CHECK_EQ(check_pages(c.p, FN, 3100), -1);
	/* Write some pages (some were on the device), migrate others still shared. */
	fill_pages(c.p, 8, 3400);
	fill_pages(PG(c.p, 16), 4, 3416);
	migrated = tdev_to_dev(d, (uintptr_t)PG(c.p, 24), (uintptr_t)PG(c.p, FN), NULL);
	CHECK(migrated >= 0, "migration after fork: %ld", migrated);
	fill_pages(PG(c.p, 20), 2, 3420);
	xwrite(to_child[1], 'b');
	c_done = xread(from_child[0]);
	CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
	CHECK(c_done == 'c', "the child did not finish: status %#x (exit %d)", status,
	      WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	      "child status %#x (exit %d)", status, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	CHECK_EQ(check_pages(c.p, 8, 3400), -1);
	CHECK_EQ(check_pages(PG(c.p, 8), 8, 3108), -1);
	CHECK_EQ(check_pages(PG(c.p, 16), 4, 3416), -1);
	CHECK_EQ(check_pages(PG(c.p, 20), 2, 3420), -1);
	CHECK_EQ(check_pages(PG(c.p, 22), 10, 3122), -1);
	CHECK_EQ(tdev_used(d), 0);
	printf("fork with device-resident memory: the child saw every page's data, its "
	       "writes stayed private, the parent's writes and migration (%ld pages) "
	       "after fork stayed invisible to the child: ok\n", migrated);
	if (!under_tsan)
		printf("fork: the child got a fresh context (uhmm_mm_get), its own device, "
		       "migrated, unmapped and removed it: ok\n");
	else
		printf("fork: the child's own context: SKIP under ThreadSanitizer (no "
		       "thread creation after a multi-threaded fork)\n");

	/* The parent's context and device still work after the fork. */
	to_dev(d, c.p, 16);
	CHECK_EQ(munmap(PG(c.p, 8), 8 * page_size), 0);
	CHECK_EQ(tdev_used(d), 8);
	CHECK_EQ(check_pages(c.p, 8, 3400), -1);
	CHECK_EQ(tdev_used(d), 0);
	CHECK_EQ(munmap(c.p, 8 * page_size), 0);
	CHECK_EQ(munmap(PG(c.p, 16), 16 * page_size), 0);
	CHECK_EQ(munmap(c.sh, SHN * page_size), 0);
	close(to_child[1]);
	close(from_child[0]);
	printf("after fork: the parent migrates and unmaps device memory as before: ok\n");
	tdev_destroy(d);
}

/* ---- device removal ------------------------------------------------------- */

static void test_devmem_remove(void)
{
	struct tdev *d = tdev_create(mm, 64, 4);
	struct tdev *d2 = tdev_create(mm, 16, 0);
	char *a = map_anon(24 * page_size, PROT_READ | PROT_WRITE);
	char *b = map_guarded(8), *bq;
	char *c = map_anon(8 * page_size, PROT_READ | PROT_WRITE);
	char *e = map_anon(8 * page_size, PROT_READ | PROT_WRITE);
	char *f = map_anon(8 * page_size, PROT_READ | PROT_WRITE), *fq;
	char *fdst = map_anon(8 * page_size, PROT_NONE);

	fill_pages(a, 24, 3500);
	fill_pages(b, 8, 3600);
	fill_pages(c, 8, 3700);
	fill_pages(e, 8, 3800);
	fill_pages(f, 8, 3900);
	to_dev(d, a, 24);
	to_dev(d, b, 8);
	to_dev(d, c, 8);
	to_dev(d2, e, 8);
	to_dev(d, f, 8);
	bq = mremap(b, 8 * page_size, 16 * page_size, MREMAP_MAYMOVE);
	CHECK(bq != MAP_FAILED && bq != b, "mremap: %s", strerror(errno));
	CHECK_EQ(munmap(PG(c, 2), 3 * page_size), 0);
	fq = mremap(f, 8 * page_size, 8 * page_size, MREMAP_MAYMOVE | MREMAP_FIXED, fdst);
	CHECK(fq == fdst, "mremap FIXED: %s", strerror(errno));
	CHECK_EQ(tdev_used(d), 24 + 8 + 5 + 8);
	CHECK_EQ(tdev_used(d2), 8);

	tdev_destroy(d);	/* checks remove() == 0 and nothing left used */
	CHECK_EQ(tdev_used(d2), 8);
	CHECK_EQ(on_device(mm, e, 8), 8);
	CHECK_EQ(on_device(mm, a, 24), 0);
	CHECK_EQ(on_device(mm, bq, 8), 0);
	CHECK_EQ(on_device(mm, fq, 8), 0);
	CHECK_EQ(check_pages(a, 24, 3500), -1);
	CHECK_EQ(check_pages(bq, 8, 3600), -1);
	CHECK_EQ(first_nonzero(PG(bq, 8), 8), -1);
	CHECK_EQ(check_pages(c, 2, 3700), -1);
	CHECK_EQ(check_pages(PG(c, 5), 3, 3705), -1);
	CHECK_EQ(check_pages(fq, 8, 3900), -1);
	CHECK_EQ(tdev_used(d2), 8);
	printf("uhmm_devmem_remove with pages resident (moved by mremap, partly "
	       "unmapped): every page's data home, nothing left used, another "
	       "device's pages untouched: ok\n");
	tdev_destroy(d2);
	CHECK_EQ(check_pages(e, 8, 3800), -1);
	printf("uhmm_devmem_remove of the second device: data home: ok\n");
	munmap(a, 24 * page_size);
	munmap(bq, 16 * page_size);
	munmap(PG(b, 8), page_size);
	munmap(c, 2 * page_size);
	munmap(PG(c, 5), 3 * page_size);
	munmap(e, 8 * page_size);
	munmap(fq, 8 * page_size);
}

/* ---- one mmap, migrated in parts ------------------------------------------ */

/*
 * Checks whose failure is reported but does not stop the program, so every
 * scenario of this section is reported in one run.
 */
static int soft_failures;

#define EXPECT(cond, ...)                                                     \
	({                                                                    \
		bool ok_ = (cond);                                            \
		if (!ok_) {                                                   \
			fprintf(stderr, "%s: FAIL %s:%d: %s: ", test_name,    \
				__FILE__, __LINE__, #cond);                   \
			fprintf(stderr, __VA_ARGS__);                         \
			fprintf(stderr, "\n");                                \
			soft_failures++;                                      \
		}                                                             \
		ok_;                                                          \
	})

/*
 * A region the program mapped with one mmap is one mapping for the kernel
 * however its pages were migrated before: migrate_vma_setup over all of it
 * works, and mremap moves it whole (device-private entries and system pages
 * together).  Also in a fork child, whose copy of the region the parent had
 * partly migrated.
 */
static int split_child(void *arg)
{
	char *p = arg;
	struct uhmm_mm *cm = NULL;
	struct tdev *cd;
	long r;

	CHILD_CHECK(check_pages(p, 32, 4300) == -1, 30, "data in the child");
	CHILD_CHECK(uhmm_mm_get(&cm) == 0, 31, "uhmm_mm_get in the child");
	cd = tdev_create(cm, 32, 0);
	r = tdev_to_dev(cd, (uintptr_t)p, (uintptr_t)PG(p, 32), NULL);
	if (r != 32)
		fprintf(stderr, "%s: child: migrating the whole region [0, 32): %ld (%s)\n",
			test_name, r, uhmm_last_error());
	CHILD_CHECK(check_pages(p, 32, 4300) == -1, 32, "data in the child");
	tdev_destroy(cd);
	uhmm_mm_put(cm);
	return r == 32 ? 0 : 33;
}

static void test_split_region(void)
{
	const size_t n = 16;
	struct tdev *d = tdev_create(mm, 64, 0);
	char *p, *q;
	long r;
	int st;

	/* Migrated in two parts, then as a whole. */
	p = map_anon(32 * page_size, PROT_READ | PROT_WRITE);
	fill_pages(p, 32, 4100);
	to_dev(d, p, 8);
	to_dev(d, PG(p, 16), 8);
	/* SELECT_SYSTEM only: the 16 pages already on the device are not collected. */
	r = tdev_to_dev(d, (uintptr_t)p, (uintptr_t)PG(p, 32), NULL);
	if (EXPECT(r == 16, "migrating all of a 32-page mmap after migrating pages "
		   "[0, 8) and [16, 24) of it: %ld, expected the 16 system pages (one "
		   "mapping for the kernel): %s", r, uhmm_last_error())) {
		CHECK_EQ(on_device(mm, p, 32), 32);
		printf("one mmap migrated in parts, then whole: ok\n");
	}
	CHECK_EQ(check_pages(p, 32, 4100), -1);
	CHECK_EQ(tdev_used(d), 0);
	CHECK_EQ(munmap(p, 32 * page_size), 0);

	/* mremap of a region whose pages [4, 12) are on the device. */
	p = map_guarded(n);
	fill_pages(p, n, 4200);
	to_dev(d, PG(p, 4), 8);
	q = mremap(p, n * page_size, 2 * n * page_size, MREMAP_MAYMOVE);
	if (EXPECT(q != MAP_FAILED, "mremap(MAYMOVE) of a %zu-page mmap whose pages "
		   "[4, 12) are on the device: %s (the kernel moves the mapping whole)",
		   n, strerror(errno))) {
		CHECK(q != p, "not moved");
		CHECK(unmapped(p, n), "the old range is still mapped");
		CHECK_EQ(tdev_used(d), 8);
		CHECK_EQ(on_device(mm, PG(q, 4), 8), 8);
		CHECK_EQ(check_pages(q, n, 4200), -1);
		CHECK_EQ(first_nonzero(PG(q, n), n), -1);
		CHECK_EQ(tdev_used(d), 0);
		CHECK_EQ(munmap(q, 2 * n * page_size), 0);
		printf("mremap(MAYMOVE) of a region partly on the device: moved whole, "
		       "data intact: ok\n");
	} else {
		/* Nothing may be lost meanwhile. */
		CHECK_EQ(check_pages(p, n, 4200), -1);
		CHECK_EQ(tdev_used(d), 0);
		CHECK_EQ(munmap(p, n * page_size), 0);
	}
	CHECK_EQ(munmap(PG(p, n), page_size), 0);

	/* Fork child migrating all of a region the parent had migrated in part. */
	p = map_anon(32 * page_size, PROT_READ | PROT_WRITE);
	fill_pages(p, 32, 4300);
	to_dev(d, p, 16);
	st = under_tsan ? 0 : run_child(split_child, p);
	if (under_tsan)
		printf("fork child migrating all of a region the parent migrated in part: "
		       "SKIP under ThreadSanitizer (no thread creation after a "
		       "multi-threaded fork)\n");
	else if (EXPECT(st == 0, "fork child migrating all of a 32-page mmap whose pages "
		   "[0, 16) the parent had on its device at fork: child exit %d", st))
		printf("fork child migrates all of a region the parent migrated in "
		       "part: ok\n");
	CHECK_EQ(check_pages(p, 32, 4300), -1);
	CHECK_EQ(tdev_used(d), 0);
	CHECK_EQ(munmap(p, 32 * page_size), 0);
	tdev_destroy(d);
}

/* ---- context lifetime ----------------------------------------------------- */

/*
 * A small migration to the device (at most 32 pages) makes the context's
 * small staging area, with a userfaultfd of its own, where UFFDIO_MOVE
 * and write-protect registration are in use (src/staging.c).
 */
static int area_uffds(void)
{
	struct uhmm_sysinfo si;

	uhmm_sysinfo(&si);
	return (si.active & UHMM_FEAT_MOVE) && (si.active & UHMM_FEAT_UFFD_WP);
}

/* Runs with no other context reference held. */
static void test_teardown(void)
{
	const size_t n = 16;
	struct uhmm_mm *m;
	struct tdev *d;
	char *p;

	CHECK_EQ(count_uffds(), 0);	/* every earlier reference was dropped */
	m = test_mm();
	CHECK_EQ(count_uffds(), 1);
	d = tdev_create(m, 32, 0);
	p = map_anon(n * page_size, PROT_READ | PROT_WRITE);
	fill_pages(p, n, 4000);
	to_dev(d, p, n);
	uhmm_mm_put(m);			/* the pool still holds the context */
	CHECK_EQ(count_uffds(), 1 + area_uffds());
	CHECK_EQ(on_device(m, p, n), n);
	CHECK_EQ(check_pages(p, n, 4000), -1);
	CHECK_EQ(tdev_used(d), 0);
	to_dev(d, p, n);		/* still a live context */
	CHECK_EQ(tdev_used(d), n);
	printf("last uhmm_mm_put with a device pool: no teardown, device data still "
	       "readable, migration still works: ok\n");
	tdev_destroy(d);		/* the pool's reference was the last */
	CHECK_EQ(count_uffds(), 0);
	CHECK_EQ(check_pages(p, n, 4000), -1);
	printf("device removal after the last put: data home, context torn down: ok\n");

	/*
	 * A fresh context; the device is removed right after a CPU fault-back
	 * (the pages the service thread just brought home belong to the pool
	 * being removed).
	 */
	m = test_mm();
	CHECK_EQ(count_uffds(), 1);
	d = tdev_create(m, 32, 0);
	to_dev(d, p, n);
	CHECK_EQ(check_pages(p, n, 4000), -1);
	tdev_destroy(d);
	uhmm_mm_put(m);
	CHECK_EQ(count_uffds(), 0);
	munmap(p, n * page_size);
	printf("a fresh context after teardown: device and migration work: ok\n");
}

/* Runs with no other context reference held: the program's own is dropped. */
static void case_teardown(void)
{
	if (mm) {
		uhmm_mm_put(mm);
		mm = NULL;
	}
	test_teardown();
}

static void start(void)
{
	mm = test_mm();
}

static int finish(void)
{
	if (mm)
		uhmm_mm_put(mm);
	if (soft_failures) {
		printf("test_devmem_vm: FAIL (%d checks failed, see above)\n", soft_failures);
		return 1;
	}
	return 0;
}

static const struct test_case cases[] = {
	TEST_CASE(test_munmap_full),
	TEST_CASE(test_munmap_partial),
	TEST_CASE(test_munmap_raw),
	TEST_CASE(test_mremap_move),
	TEST_CASE(test_mremap_dontunmap),
	TEST_CASE(test_mremap_subrange),
	TEST_CASE(test_madv_dontneed),
	TEST_CASE(test_madv_free),
	TEST_CASE(test_fork),
	TEST_CASE(test_devmem_remove),
	TEST_CASE(test_split_region),
	{ "teardown", case_teardown },
};

TEST_MAIN("test_devmem_vm", start, finish)
