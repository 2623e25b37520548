// SPDX-License-Identifier: MIT
/*
 * simdev conformance: device access (the counterpart of the kernel's
 * hmm-tests.c open/close, anon_read, anon_write, anon_write_child,
 * anon_write_huge, file_read/write, read/write prot, concurrent unmap and
 * compute-style tests, written against include/uhmm/simdev.h).
 *
 *  - open/close of one device and of two devices at once (NULL config and
 *    an explicit config), bad configurations;
 *  - anonymous read of a range whose leading pages were only read by the
 *    CPU (the shared zero page where the kernel has one), whose middle pages
 *    were never touched and whose tail was written: exact bytes, one device
 *    fault for the fresh range, none for a second read of the same range;
 *  - read of PROT_NONE memory (whole range, and a range that is only
 *    partly inaccessible, and a hole): -EFAULT, output buffer untouched;
 *  - device write: the CPU sees the bytes (fresh pages and pages the CPU
 *    only read, i.e. zero-page mapped);
 *  - write to a PROT_READ mapping: -EPERM, memory untouched; after
 *    mprotect(PROT_READ|PROT_WRITE) the same write succeeds;
 *  - write after fork in the child with its own fresh device: the parent is
 *    unchanged (plain memory the parent's device had mapped writable, memory
 *    migrated to the parent's device before fork, THP-backed memory), and the
 *    parent's device writes after fork are invisible to the child;
 *    MAP_SHARED|MAP_ANONYMOUS: the child's device write is seen by the parent;
 *  - device write to a 2 MiB THP, then CPU reads back;
 *  - file-backed MAP_SHARED: device read gives the file's bytes, a device
 *    write changes the file (pread after msync); a PROT_READ shared mapping
 *    refuses device writes with -EPERM;
 *  - 1000 device reads of a small range interleaved with CPU writes (and
 *    periodic MADV_DONTNEED): each read sees the latest CPU data;
 *  - device read while another thread unmaps half of the range: no crash,
 *    either 0 with the right bytes or -EFAULT;
 *  - compute: uhmm_simdev_launch() kernels with load64/store64/atomic_add64
 *    (out[i] = in[i] * 3 and a histogram), MIRROR and MIGRATE policies (every
 *    touched page ends up on the device, once; the CPU then reads correct
 *    results), -EFAULT for PROT_NONE memory, -EPERM for stores and atomics to
 *    PROT_READ memory (MIRROR and MIGRATE); launches while another thread
 *    keeps invalidating the device's address-space chunk (400); MIGRATE with 4
 *    device threads, 8 rounds;
 *  - bad input: unaligned address, npages 0, wrapping range, NULL buffers,
 *    NULL device: -EINVAL;
 *  - pages resident in device memory obey the mapping's protection too:
 *    PROT_NONE -> read -EFAULT, PROT_READ (before or after migration) ->
 *    write -EPERM with nothing written;
 *  - closing the last device tears the context down (its notifiers cover
 *    the chunks of the service threads' stacks) and a new device works.
 *
 * main() holds a context reference until the last scenario, so that closing
 * a scenario's last device does not tear the context down: the teardown is
 * test_teardown()'s subject alone.  The scenarios that exposed library or
 * simdev bugs when they were written run last, so that one failure does not
 * hide the other scenarios' results.
 */
#include "common.h"

#include <dirent.h>

#include <uhmm/simdev.h>

#define NAME "test_simdev_access"
#define PG(p, i) ((char *)(p) + (size_t)(i) * page_size)
#define HUGE_SZ ((size_t)2 << 20)
#define CHUNK_SZ ((uintptr_t)1 << 30)

#define P_NONE	UHMM_SIMDEV_PROT_NONE
#define P_READ	UHMM_SIMDEV_PROT_READ
#define P_WRITE	UHMM_SIMDEV_PROT_WRITE
#define P_ZERO	UHMM_SIMDEV_PROT_ZERO
#define P_PMD	UHMM_SIMDEV_PROT_PMD
#define P_DEV	UHMM_SIMDEV_PROT_DEV_PRIVATE_LOCAL

/*
 * ThreadSanitizer does not support starting threads in the child of a
 * multi-threaded fork, and a simdev (its context's service thread, its
 * compute threads) needs threads: under it the fork children check their
 * CPU view only.
 */
#if defined(__SANITIZE_THREAD__)
#define SDA_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SDA_TSAN 1
#endif
#endif
#ifdef SDA_TSAN
static const bool child_threads_ok = false;
#else
static const bool child_threads_ok = true;
#endif

static struct uhmm_sysinfo si;

/* ---- helpers ------------------------------------------------------------- */

static uint64_t mix(uint64_t x)
{
	x += UINT64_C(0x9e3779b97f4a7c15);
	x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
	return x ^ (x >> 31);
}

static uint64_t pat_word(uint32_t seed, size_t page, size_t w)
{
	return mix(((uint64_t)seed << 40) ^ ((uint64_t)page << 20) ^ w);
}

/* Page i of [p, p + n pages) gets pattern (seed, i): any sub-range checkable. */
static void fill(void *p, size_t n, uint32_t seed)
{
	size_t words = page_size / sizeof(uint64_t);

	for (size_t i = 0; i < n; i++)
		for (size_t w = 0; w < words; w++)
			((uint64_t *)PG(p, i))[w] = pat_word(seed, i, w);
}

/*
 * First page of [p, p + n pages) not holding pattern (seed, first + i), or
 * -1.  @p may be unaligned (a device read into an unaligned buffer).
 */
static long check_from(const void *p, size_t n, uint32_t seed, size_t first)
{
	size_t words = page_size / sizeof(uint64_t);

	for (size_t i = 0; i < n; i++)
		for (size_t w = 0; w < words; w++) {
			uint64_t v;

			memcpy(&v, PG(p, i) + w * sizeof(v), sizeof(v));
			if (v != pat_word(seed, first + i, w))
				return (long)i;
		}
	return -1;
}

static long check(const void *p, size_t n, uint32_t seed)
{
	return check_from(p, n, seed, 0);
}

/* First page of [p, p + n pages) with a byte other than @c, or -1. */
static long check_bytes(const void *p, size_t n, unsigned char c)
{
	const unsigned char *b = p;

	for (size_t i = 0; i < n * page_size; i++)
		if (b[i] != c)
			return (long)(i / page_size);
	return -1;
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n);

	CHECK(p, "malloc %zu", n);
	return p;
}

/* Anonymous private memory that does not straddle a simdev 1 GiB chunk. */
static void *map_range(size_t npages, int prot)
{
	void *bad[4];
	int nbad = 0;
	char *p;

	for (;;) {
		p = map_anon(npages * page_size, prot);
		if (((uintptr_t)p & ~(CHUNK_SZ - 1)) ==
		    (((uintptr_t)p + npages * page_size - 1) & ~(CHUNK_SZ - 1)))
			break;
		CHECK(nbad < 4, "cannot place %zu pages inside one 1 GiB chunk", npages);
		bad[nbad++] = p;
	}
	while (nbad--)
		CHECK_EQ(munmap(bad[nbad], npages * page_size), 0);
	return p;
}

static struct uhmm_simdev *dev_new(const struct uhmm_simdev_config *cfg)
{
	struct uhmm_simdev *d = NULL;
	int ret = uhmm_simdev_create(cfg, &d);

	CHECK(ret == 0 && d, "uhmm_simdev_create: %d", ret);
	return d;
}

/* Is the 2 MiB region at @p backed by a transparent huge page (smaps)? */
static bool thp_backed(const void *p)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[512];
	bool in = false, huge = false;

	CHECK(f, "open smaps");
	while (fgets(line, sizeof(line), f)) {
		unsigned long s, e, kb;

		if (sscanf(line, "%lx-%lx ", &s, &e) == 2 && strchr(line, '-') &&
		    strchr(line, ' ') > strchr(line, '-')) {
			in = s <= (uintptr_t)p && (uintptr_t)p + HUGE_SZ <= e;
			continue;
		}
		if (in && sscanf(line, "AnonHugePages: %lu kB", &kb) == 1) {
			huge = kb >= HUGE_SZ / 1024;
			break;
		}
	}
	fclose(f);
	return huge;
}

/* Can a snapshot tell huge mappings here? (PAGEMAP_SCAN, or root's fallback) */
static bool huge_detectable(void)
{
	return (si.active & UHMM_FEAT_PAGEMAP_SCAN) || geteuid() == 0;
}

/* A 2 MiB THP-backed region written with pattern @seed, or NULL (reason printed). */
static char *map_thp(uint32_t seed, const char *what)
{
	char *p;

	if (strcmp(si.thp, "always") && strcmp(si.thp, "madvise")) {
		printf("%s: %s: SKIP (THP mode \"%s\")\n", NAME, what, si.thp);
		return NULL;
	}
	p = map_aligned_2m(HUGE_SZ, PROT_READ | PROT_WRITE);
	CHECK_EQ(madvise(p, HUGE_SZ, MADV_HUGEPAGE), 0);
	p[0] = 1;		/* one fault: one huge page if one is available */
	if (!thp_backed(p)) {
		printf("%s: %s: SKIP (no transparent huge page was mapped)\n", NAME, what);
		CHECK_EQ(munmap(p, HUGE_SZ), 0);
		return NULL;
	}
	fill(p, HUGE_SZ / page_size, seed);
	CHECK(thp_backed(p), "the huge page was split by the fill");
	return p;
}

/* Stack pointers of the process's other threads (blocked ones), up to @max. */
static int other_thread_sps(uintptr_t *sps, int max)
{
	DIR *dir = opendir("/proc/self/task");
	struct dirent *de;
	pid_t self = gettid();
	int n = 0;

	CHECK(dir, "opendir /proc/self/task");
	while ((de = readdir(dir)) && n < max) {
		char path[300], line[512], *tok, *prev = NULL, *last = NULL, *save;
		FILE *f;

		if (de->d_name[0] == '.' || atoi(de->d_name) == self)
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/syscall", de->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		if (!fgets(line, sizeof(line), f)) {
			fclose(f);
			continue;
		}
		fclose(f);
		/* "nr args... sp pc" or "-1 sp pc"; "running" has none. */
		for (tok = strtok_r(line, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save)) {
			prev = last;
			last = tok;
		}
		if (prev && !strncmp(prev, "0x", 2))
			sps[n++] = (uintptr_t)strtoull(prev, NULL, 16);
	}
	closedir(dir);
	return n;
}

/* Map one page in a free spot of the 1 GiB chunk holding @addr. */
static void *map_in_chunk_of(uintptr_t addr)
{
	uintptr_t lo = addr & ~(CHUNK_SZ - 1), hi = lo + CHUNK_SZ, prev_end = lo, cand = 0;
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	void *p;

	CHECK(f, "open maps");
	while (fgets(line, sizeof(line), f)) {
		unsigned long s, e;

		if (sscanf(line, "%lx-%lx", &s, &e) != 2)
			continue;
		if (e <= lo || s >= hi)
			continue;
		/* The highest gap of at least 3 pages below this mapping. */
		if (s > prev_end && s - prev_end >= 3 * page_size)
			cand = s - 2 * page_size;
		if (e > prev_end)
			prev_end = e;
	}
	fclose(f);
	if (hi > prev_end && hi - prev_end >= 3 * page_size)
		cand = prev_end + page_size;
	CHECK(cand, "no free page in the chunk of %#lx", (unsigned long)addr);
	p = mmap((void *)cand, page_size, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	CHECK(p == (void *)cand, "mmap at %#lx: %s", (unsigned long)cand, strerror(errno));
	return p;
}

/* ---- open / close ---------------------------------------------------------- */

static void test_open_close(void)
{
	struct uhmm_simdev_config cfg = {
		.capacity_pages = 64, .threads = 2, .fault_around = 4,
		.policy = UHMM_SIMDEV_POLICY_MIRROR, .migrate_window = 8,
	};
	struct uhmm_simdev_config bad;
	struct uhmm_simdev_stats st;
	struct uhmm_simdev *a, *b, *d;
	size_t n = 4;
	char *p, *buf;

	/* One device, defaults. */
	a = dev_new(NULL);
	CHECK_EQ(uhmm_simdev_used_pages(a), 0);
	uhmm_simdev_destroy(a);

	/* One device, explicit configuration. */
	a = dev_new(&cfg);
	CHECK_EQ(uhmm_simdev_used_pages(a), 0);
	uhmm_simdev_destroy(a);
	printf("%s: open/close of one device (NULL cfg, explicit cfg): ok\n", NAME);

	/* Two devices at once, both reading the same memory, closed in creation order. */
	p = map_range(n, PROT_READ | PROT_WRITE);
	buf = xmalloc(n * page_size);
	fill(p, n, 11);
	a = dev_new(NULL);
	b = dev_new(&cfg);
	CHECK(a != b, "two devices are the same object");
	memset(buf, 0, n * page_size);
	CHECK_EQ(uhmm_simdev_read(a, p, n, buf, &st), 0);
	CHECK_EQ(check(buf, n, 11), -1);
	memset(buf, 0, n * page_size);
	CHECK_EQ(uhmm_simdev_read(b, p, n, buf, &st), 0);
	CHECK_EQ(check(buf, n, 11), -1);
	/* Migrated to one: the other still reads the data (it faults it back). */
	CHECK_EQ(uhmm_simdev_migrate_to_dev(a, p, n, &st), 0);
	CHECK_EQ(st.cpages, n);
	CHECK_EQ(uhmm_simdev_used_pages(a), n);
	memset(buf, 0, n * page_size);
	CHECK_EQ(uhmm_simdev_read(b, p, n, buf, &st), 0);
	CHECK_EQ(check(buf, n, 11), -1);
	uhmm_simdev_destroy(a);
	memset(buf, 0, n * page_size);
	CHECK_EQ(uhmm_simdev_read(b, p, n, buf, &st), 0);
	CHECK_EQ(check(buf, n, 11), -1);
	uhmm_simdev_destroy(b);
	CHECK_EQ(check(p, n, 11), -1);

	/* Two devices, closed in reverse order, with data on the first one. */
	a = dev_new(&cfg);
	b = dev_new(NULL);
	CHECK_EQ(uhmm_simdev_migrate_to_dev(a, p, n, &st), 0);
	CHECK_EQ(uhmm_simdev_used_pages(a), n);
	CHECK_EQ(uhmm_simdev_used_pages(b), 0);
	uhmm_simdev_destroy(b);
	uhmm_simdev_destroy(a);		/* device-resident pages come home first */
	CHECK_EQ(check(p, n, 11), -1);
	printf("%s: open/close of two devices (both orders, data on one of them): ok\n", NAME);

	/* Bad configurations and arguments. */
	CHECK_EQ(uhmm_simdev_create(NULL, NULL), -EINVAL);
	d = (struct uhmm_simdev *)&bad;
	bad = cfg;
	bad.policy = 7;
	CHECK_EQ(uhmm_simdev_create(&bad, &d), -EINVAL);
	CHECK(d == NULL, "*out not cleared on failure");
	bad = cfg;
	bad.migrate_window = 3;
	d = (struct uhmm_simdev *)&bad;
	CHECK_EQ(uhmm_simdev_create(&bad, &d), -EINVAL);
	CHECK(d == NULL, "*out not cleared on failure");
	uhmm_simdev_destroy(NULL);
	printf("%s: create with NULL out, bad policy, non-power-of-two window: -EINVAL; "
	       "destroy(NULL) is a no-op: ok\n", NAME);
	free(buf);
	CHECK_EQ(munmap(p, n * page_size), 0);
}

/* ---- anonymous read ----------------------------------------------------- */

static void test_anon_read(void)
{
	const size_t lead = 8, mid = 8, tail = 16, n = lead + mid + tail;
	const bool zp = zero_page_supported();
	/*
	 * A CPU-read page: the zero page (ZERO|READ, or READ alone where uhmm
	 * cannot tell the zero page: UHMM_DISABLE=all and not root) or, on a
	 * kernel without one, a private writable page (WRITE); -1: the
	 * machine's behaviour could not be observed, not checked.
	 */
	const int cpu_read = variant.zero_page < 0 ? -1 :
			     !zp ? P_WRITE :
			     si.zero_page == 1 ? (P_ZERO | P_READ) : P_READ;
	struct uhmm_simdev_stats st;
	struct uhmm_simdev *d = dev_new(NULL);
	uint8_t *prot = xmalloc(n);
	char *p = map_range(n, PROT_READ | PROT_WRITE);
	char *buf = xmalloc(n * page_size);
	volatile char sink = 0;

	/* Leading pages: read by the CPU only; middle: untouched; tail: written. */
	for (size_t i = 0; i < lead; i++)
		sink += *(volatile char *)PG(p, i);
	(void)sink;
	fill(PG(p, lead + mid), tail, 21);

	/* The snapshot faults nothing in and says what the CPU did. */
	CHECK_EQ(uhmm_simdev_snapshot(d, p, n, prot, &st), 0);
	for (size_t i = 0; i < n; i++) {
		int want = i < lead ? cpu_read : i < lead + mid ? P_NONE : P_WRITE;

		if (want < 0)
			continue;	/* cannot be told here */
		CHECK(prot[i] == want, "snapshot page %zu: %#x, expected %#x", i, prot[i], want);
	}

	memset(buf, 0xa5, n * page_size);
	memset(&st, 0xff, sizeof(st));
	CHECK_EQ(uhmm_simdev_read(d, p, n, buf, &st), 0);
	CHECK_EQ(check_bytes(buf, lead + mid, 0), -1);
	CHECK_EQ(check(PG(buf, lead + mid), tail, 21), -1);
	CHECK_EQ(st.cpages, n);
	CHECK_EQ(st.faults, 1);
	printf("%s: anon read (%zu CPU-read%s, %zu untouched, %zu written pages): exact bytes, "
	       "cpages %llu, faults %llu: ok\n", NAME, lead,
	       zp ? " zero-page" : "", mid, tail, (unsigned long long)st.cpages,
	       (unsigned long long)st.faults);

	/* Nothing changed: the device page table still maps all of it. */
	memset(buf, 0x5a, n * page_size);
	memset(&st, 0xff, sizeof(st));
	CHECK_EQ(uhmm_simdev_read(d, p, n, buf, &st), 0);
	CHECK_EQ(check_bytes(buf, lead + mid, 0), -1);
	CHECK_EQ(check(PG(buf, lead + mid), tail, 21), -1);
	CHECK_EQ(st.cpages, n);
	CHECK_EQ(st.faults, 0);
	printf("%s: second read of the same range: faults 0: ok\n", NAME);

	/* The read faulted the untouched pages in for reading only. */
	CHECK_EQ(uhmm_simdev_snapshot(d, p, n, prot, &st), 0);
	for (size_t i = lead; i < lead + mid && cpu_read >= 0; i++)
		CHECK(prot[i] == cpu_read, "page %zu after the read: %#x, expected %#x", i,
		      prot[i], cpu_read);
	/* And the CPU's memory was not changed by the read. */
	CHECK_EQ(check_bytes(p, lead + mid, 0), -1);
	CHECK_EQ(check(PG(p, lead + mid), tail, 21), -1);

	/* A read of a sub-range in the middle, with an unaligned buffer. */
	CHECK_EQ(uhmm_simdev_read(d, PG(p, lead + mid + 3), 5, buf + 1, &st), 0);
	CHECK_EQ(check_from(buf + 1, 5, 21, 3), -1);
	CHECK_EQ(st.cpages, 5);
	CHECK_EQ(st.faults, 0);

	/* NULL stats is allowed. */
	CHECK_EQ(uhmm_simdev_read(d, p, n, buf, NULL), 0);
	CHECK_EQ(check(PG(buf, lead + mid), tail, 21), -1);

	uhmm_simdev_destroy(d);
	CHECK_EQ(munmap(p, n * page_size), 0);
	free(buf);
	free(prot);
}

/* ---- PROT_NONE read ------------------------------------------------------- */

static void test_prot_none_read(void)
{
	const size_t n = 8;
	struct uhmm_simdev_stats st;
	struct uhmm_simdev *d = dev_new(NULL);
	/* Far from other mappings: the hole made below stays a hole (common.h). */
	char *p = map_far(n * page_size, PROT_READ | PROT_WRITE);
	char *buf = xmalloc(n * page_size);

	fill(p, n, 31);
	CHECK_EQ(mprotect(p, n * page_size, PROT_NONE), 0);
	memset(buf, 0xa5, n * page_size);
	CHECK_EQ(uhmm_simdev_read(d, p, n, buf, &st), -EFAULT);
	CHECK_EQ(check_bytes(buf, n, 0xa5), -1);
	CHECK_EQ(st.cpages, 0);

	/* Only the second half inaccessible: still nothing copied. */
	CHECK_EQ(mprotect(p, n / 2 * page_size, PROT_READ), 0);
	CHECK_EQ(uhmm_simdev_read(d, p, n, buf, &st), -EFAULT);
	CHECK_EQ(check_bytes(buf, n, 0xa5), -1);
	CHECK_EQ(st.cpages, 0);
	/* The accessible half reads fine. */
	CHECK_EQ(uhmm_simdev_read(d, p, n / 2, buf, &st), 0);
	CHECK_EQ(check(buf, n / 2, 31), -1);
	CHECK_EQ(check_bytes(PG(buf, n / 2), n / 2, 0xa5), -1);
	/* The device read entries of the first half must not leak access to the second. */
	memset(buf, 0xa5, n * page_size);
	CHECK_EQ(uhmm_simdev_read(d, p, n, buf, &st), -EFAULT);
	CHECK_EQ(check_bytes(buf, n, 0xa5), -1);

	/* A hole: no mapping at all. */
	CHECK_EQ(munmap(PG(p, n / 2), n / 2 * page_size), 0);
	CHECK_EQ(uhmm_simdev_read(d, p, n, buf, &st), -EFAULT);
	CHECK_EQ(check_bytes(buf, n, 0xa5), -1);
	/* Back to readable: the data is intact. */
	CHECK_EQ(mprotect(p, n / 2 * page_size, PROT_READ | PROT_WRITE), 0);
	CHECK_EQ(check(p, n / 2, 31), -1);
	printf("%s: read of PROT_NONE memory (whole, half) and of a hole: -EFAULT, output "
	       "untouched, cpages 0: ok\n", NAME);
	uhmm_simdev_destroy(d);
	CHECK_EQ(munmap(p, n / 2 * page_size), 0);
	free(buf);
}

/* ---- write ------------------------------------------------------------------ */

/*
 * @n pages at @q that the CPU and then the device only read get a device
 * write.  Where the read faults mapped the shared zero page, the device's
 * entries are read-only and its write faults once; where the pages are
 * private (no zero page on this machine, or populated by a write before),
 * the entries are writable and the write needs no fault, as in the kernel.
 * Told from the pages themselves (PFNZERO), else from what the device sees.
 */
static void write_after_reads(struct uhmm_simdev *d, char *q, size_t n, char *buf,
			      const char *what)
{
	struct uhmm_simdev_stats st;
	volatile char sink = 0;
	uint8_t prot[16];
	size_t zero = 0, ro = 0;
	bool told = true;

	CHECK(n <= 16, "n %zu", n);
	for (size_t i = 0; i < n; i++)
		sink += *(volatile char *)PG(q, i);
	(void)sink;
	CHECK_EQ(uhmm_simdev_read(d, q, n, buf, &st), 0);
	CHECK_EQ(check_bytes(buf, n, 0), -1);
	for (size_t i = 0; i < n; i++) {
		int z = page_is_zero_page(PG(q, i));

		told &= z >= 0;
		zero += z == 1;
	}
	CHECK_EQ(uhmm_simdev_snapshot(d, q, n, prot, NULL), 0);
	for (size_t i = 0; i < n; i++)
		ro += !(prot[i] & P_WRITE);
	if (told)
		CHECK_EQ(ro, zero);	/* exactly the zero pages are read-only */
	fill(buf, n, 43);
	CHECK_EQ(uhmm_simdev_write(d, q, n, buf, &st), 0);
	CHECK_EQ(st.cpages, n);
	CHECK_EQ(st.faults, (told ? zero : ro) ? 1 : 0);
	CHECK_EQ(check(q, n, 43), -1);
	/* The zero page itself was not written: fresh memory still reads zero. */
	CHECK_EQ(madvise(q, n * page_size, MADV_DONTNEED), 0);
	CHECK_EQ(check_bytes(q, n, 0), -1);
	printf("%s: device write of %s the CPU and device only read (%zu of %zu on the zero "
	       "page%s: %s): the CPU sees the bytes, the zero page stays zero: ok\n", NAME,
	       what, told ? zero : ro, n, told ? "" : " as the device sees them",
	       (told ? zero : ro) ? "one write fault" : "writable, no write fault");
}

static void test_write(void)
{
	const size_t n = 16;
	struct uhmm_simdev_stats st;
	struct uhmm_simdev *d = dev_new(NULL);
	char *p = map_range(n, PROT_READ | PROT_WRITE);
	char *q = map_range(n, PROT_READ | PROT_WRITE);
	char *buf = xmalloc(n * page_size);

	/* Never touched. */
	fill(buf, n, 41);
	memset(&st, 0xff, sizeof(st));
	CHECK_EQ(uhmm_simdev_write(d, p, n, buf, &st), 0);
	CHECK_EQ(st.cpages, n);
	CHECK_EQ(st.faults, 1);
	CHECK_EQ(check(p, n, 41), -1);
	/* Again, other data: no fault. */
	fill(buf, n, 42);
	CHECK_EQ(uhmm_simdev_write(d, p, n, buf, &st), 0);
	CHECK_EQ(st.faults, 0);
	CHECK_EQ(check(p, n, 42), -1);
	printf("%s: device write of fresh pages: the CPU sees the bytes (faults 1, then 0): "
	       "ok\n", NAME);

	/* Pages the CPU and the device only read (zero page where there is one). */
	write_after_reads(d, q, n, buf, "fresh pages");
	/*
	 * The same with pages a write populated first: private zeroed pages
	 * that the CPU then only reads, what every read fault gives on a
	 * kernel without the zero page.
	 */
	if (madvise(q, n * page_size, MADV_POPULATE_WRITE) == 0)
		write_after_reads(d, q, n, buf, "pages populated by a write");
	else
		printf("%s: write after reads of populated pages: SKIP (MADV_POPULATE_WRITE: "
		       "%s)\n", NAME, strerror(errno));

	/* A sub-range from an unaligned buffer; the rest is left alone. */
	fill(p, n, 44);
	fill(buf, n, 45);
	CHECK_EQ(uhmm_simdev_write(d, PG(p, 4), 3, buf + 3, &st), 0);
	CHECK_EQ(st.cpages, 3);
	CHECK_EQ(check(p, 4, 44), -1);
	CHECK_EQ(memcmp(PG(p, 4), buf + 3, 3 * page_size), 0);
	CHECK_EQ(check_from(PG(p, 7), n - 7, 44, 7), -1);
	printf("%s: device write of a sub-range: exactly those bytes change: ok\n", NAME);

	uhmm_simdev_destroy(d);
	CHECK_EQ(munmap(p, n * page_size), 0);
	CHECK_EQ(munmap(q, n * page_size), 0);
	free(buf);
}

static void test_write_read_only(void)
{
	const size_t n = 8;
	struct uhmm_simdev_stats st;
	struct uhmm_simdev *d = dev_new(NULL);
	char *p = map_range(n, PROT_READ | PROT_WRITE);
	char *buf = xmalloc(n * page_size);

	fill(p, n, 51);
	CHECK_EQ(mprotect(p, n * page_size, PROT_READ), 0);
	/* Reading is allowed (and leaves read-only entries in the device page table). */
	CHECK_EQ(uhmm_simdev_read(d, p, n, buf, &st), 0);
	CHECK_EQ(check(buf, n, 51), -1);
	fill(buf, n, 52);
	memset(&st, 0xff, sizeof(st));
	CHECK_EQ(uhmm_simdev_write(d, p, n, buf, &st), -EPERM);
	CHECK_EQ(st.cpages, 0);
	CHECK_EQ(check(p, n, 51), -1);
	/* Only the last page read-only: nothing written either. */
	CHECK_EQ(mprotect(p, (n - 1) * page_size, PROT_READ | PROT_WRITE), 0);
	CHECK_EQ(uhmm_simdev_write(d, p, n, buf, &st), -EPERM);
	CHECK_EQ(check(p, n, 51), -1);
	printf("%s: write to a PROT_READ mapping (whole, last page): -EPERM, memory "
	       "untouched: ok\n", NAME);

	CHECK_EQ(mprotect(p, n * page_size, PROT_READ | PROT_WRITE), 0);
	CHECK_EQ(uhmm_simdev_write(d, p, n, buf, &st), 0);
	CHECK_EQ(st.cpages, n);
	CHECK_EQ(check(p, n, 52), -1);
	printf("%s: after mprotect(PROT_READ|PROT_WRITE) the same write succeeds: ok\n", NAME);

	uhmm_simdev_destroy(d);
	CHECK_EQ(munmap(p, n * page_size), 0);
	free(buf);
}

/* ---- fork ----------------------------------------------------------------- */

enum fork_kind { FK_PLAIN, FK_MIGRATED, FK_THP, FK_SHARED };

struct fork_case {
	enum fork_kind kind;
	char *p;
	size_t n;
	uint32_t seed_before;	/* data at fork */
	uint32_t seed_parent;	/* parent's device write after fork (private kinds) */
	uint32_t seed_child;	/* child's device write */
	int to_child[2];		/* the parent's "written after fork" signal */
};

/* Exit codes of the fork children (all distinct, none 0). */
static int fork_child(struct fork_case *c)
{
	struct uhmm_simdev_stats st;
	struct uhmm_simdev *cd = NULL;
	struct uhmm_mm *cm = NULL;
	char go = 0, *buf;
	int ret;

	/* Wait until the parent has written after the fork. */
	if (read(c->to_child[0], &go, 1) != 1 || go != 'g')
		return 10;
	/* The child's copy: the data at fork, never the parent's later writes. */
	if (check(c->p, c->n, c->seed_before) != -1)
		return 11;
	if (!child_threads_ok)
		return 0;
	/*
	 * A fresh context and a device of its own.  The child keeps a context
	 * reference of its own, as main() does: the context teardown is
	 * exercised by test_teardown() alone.
	 */
	if (uhmm_mm_get(&cm) || !cm)
		return 19;
	if (uhmm_simdev_create(NULL, &cd) || !cd)
		return 12;
	buf = malloc(c->n * page_size);
	if (!buf)
		return 13;
	memset(buf, 0, c->n * page_size);
	if (uhmm_simdev_read(cd, c->p, c->n, buf, &st) || check(buf, c->n, c->seed_before) != -1)
		return 14;
	fill(buf, c->n, c->seed_child);
	ret = uhmm_simdev_write(cd, c->p, c->n, buf, &st);
	if (ret || st.cpages != c->n)
		return 15;
	/* Its own view: the CPU and the device see the device's bytes. */
	if (check(c->p, c->n, c->seed_child) != -1)
		return 16;
	memset(buf, 0, c->n * page_size);
	if (uhmm_simdev_read(cd, c->p, c->n, buf, &st) || check(buf, c->n, c->seed_child) != -1)
		return 17;
	uhmm_simdev_destroy(cd);
	free(buf);
	if (check(c->p, c->n, c->seed_child) != -1)
		return 18;
	return 0;
}

static void run_fork_case(struct uhmm_simdev *d, struct fork_case *c, const char *what)
{
	struct uhmm_simdev_stats st;
	char *buf = xmalloc(c->n * page_size);
	int status;
	pid_t pid;

	CHECK_EQ(pipe(c->to_child), 0);
	pid = fork();
	CHECK(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		close(c->to_child[1]);
		_exit(fork_child(c));
	}
	close(c->to_child[0]);

	if (c->kind != FK_SHARED) {
		/* The parent's device writes after fork: invisible to the child. */
		fill(buf, c->n, c->seed_parent);
		CHECK_EQ(uhmm_simdev_write(d, c->p, c->n, buf, &st), 0);
		CHECK_EQ(check(c->p, c->n, c->seed_parent), -1);
	}
	CHECK_EQ(write(c->to_child[1], "g", 1), 1);
	CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	      "%s: child failed: %s %d", what, WIFEXITED(status) ? "exit" : "signal",
	      WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
	close(c->to_child[1]);

	/* The parent's memory afterwards, by the CPU and by its device. */
	if (c->kind == FK_SHARED) {
		uint32_t want = child_threads_ok ? c->seed_child : c->seed_before;

		CHECK_EQ(check(c->p, c->n, want), -1);
		memset(buf, 0, c->n * page_size);
		CHECK_EQ(uhmm_simdev_read(d, c->p, c->n, buf, &st), 0);
		CHECK_EQ(check(buf, c->n, want), -1);
	} else {
		CHECK_EQ(check(c->p, c->n, c->seed_parent), -1);
		memset(buf, 0, c->n * page_size);
		CHECK_EQ(uhmm_simdev_read(d, c->p, c->n, buf, &st), 0);
		CHECK_EQ(check(buf, c->n, c->seed_parent), -1);
	}
	free(buf);
	if (!child_threads_ok)
		printf("%s: %s: child saw the data at fork; its own device: SKIP under "
		       "ThreadSanitizer (no threads after a multi-threaded fork)\n", NAME, what);
	else if (c->kind == FK_SHARED)
		printf("%s: %s: the child's device write is seen by the parent: ok\n", NAME, what);
	else
		printf("%s: %s: the child's device write left the parent unchanged, the parent's "
		       "device write after fork stayed invisible to the child: ok\n", NAME, what);
}

static void test_fork(void)
{
	struct uhmm_simdev *d = dev_new(NULL);
	struct uhmm_simdev_stats st;
	const size_t n = 16;
	struct fork_case c;
	uint8_t prot[16];
	char *buf = xmalloc(n * page_size);

	/* Plain private memory, mapped writable in the parent's device page table. */
	c = (struct fork_case){ .kind = FK_PLAIN, .n = n, .seed_before = 61,
				.seed_parent = 62, .seed_child = 63 };
	c.p = map_range(n, PROT_READ | PROT_WRITE);
	fill(buf, n, 61);
	CHECK_EQ(uhmm_simdev_write(d, c.p, n, buf, &st), 0);
	CHECK_EQ(check(c.p, n, 61), -1);
	run_fork_case(d, &c, "fork, plain memory");
	CHECK_EQ(munmap(c.p, n * page_size), 0);

	/* Migrated to the parent's device before fork. */
	c = (struct fork_case){ .kind = FK_MIGRATED, .n = n, .seed_before = 64,
				.seed_parent = 65, .seed_child = 66 };
	c.p = map_range(n, PROT_READ | PROT_WRITE);
	fill(c.p, n, 64);
	CHECK_EQ(uhmm_simdev_migrate_to_dev(d, c.p, n, &st), 0);
	CHECK_EQ(st.cpages, n);
	CHECK_EQ(uhmm_simdev_used_pages(d), n);
	CHECK_EQ(uhmm_simdev_snapshot(d, c.p, n, prot, &st), 0);
	for (size_t i = 0; i < n; i++)
		CHECK(prot[i] == (P_DEV | P_WRITE), "page %zu: %#x", i, prot[i]);
	run_fork_case(d, &c, "fork, memory migrated to the device before fork");
	CHECK_EQ(munmap(c.p, n * page_size), 0);
	CHECK_EQ(uhmm_simdev_used_pages(d), 0);

	/* THP-backed. */
	c = (struct fork_case){ .kind = FK_THP, .n = HUGE_SZ / page_size, .seed_before = 67,
				.seed_parent = 68, .seed_child = 69 };
	c.p = map_thp(67, "fork, THP-backed memory");
	if (c.p) {
		run_fork_case(d, &c, "fork, THP-backed memory");
		CHECK_EQ(munmap(c.p, HUGE_SZ), 0);
	}

	/* MAP_SHARED | MAP_ANONYMOUS: the child's write is the parent's. */
	c = (struct fork_case){ .kind = FK_SHARED, .n = n, .seed_before = 70, .seed_child = 71 };
	c.p = mmap(NULL, n * page_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
		   -1, 0);
	CHECK(c.p != MAP_FAILED, "mmap shared");
	fill(c.p, n, 70);
	memset(buf, 0, n * page_size);
	CHECK_EQ(uhmm_simdev_read(d, c.p, n, buf, &st), 0);
	CHECK_EQ(check(buf, n, 70), -1);
	run_fork_case(d, &c, "fork, MAP_SHARED|MAP_ANONYMOUS memory");
	CHECK_EQ(munmap(c.p, n * page_size), 0);

	uhmm_simdev_destroy(d);
	free(buf);
}

/* ---- THP ---------------------------------------------------------------------- */

static void test_thp_write(void)
{
	const size_t n = HUGE_SZ / page_size;
	struct uhmm_simdev_stats st;
	struct uhmm_simdev *d = dev_new(NULL);
	uint8_t *prot = xmalloc(n);
	char *buf, *p = map_thp(81, "device write to a THP");

	if (!p) {
		uhmm_simdev_destroy(d);
		free(prot);
		return;
	}
	buf = xmalloc(HUGE_SZ);
	if (huge_detectable()) {
		CHECK_EQ(uhmm_simdev_snapshot(d, p, n, prot, &st), 0);
		for (size_t i = 0; i < n; i++)
			CHECK(prot[i] == (P_PMD | P_WRITE), "THP page %zu: %#x", i, prot[i]);
	}
	fill(buf, n, 82);
	CHECK_EQ(uhmm_simdev_write(d, p, n, buf, &st), 0);
	CHECK_EQ(st.cpages, n);
	CHECK_EQ(st.faults, 1);
	CHECK_EQ(check(p, n, 82), -1);
	memset(buf, 0, HUGE_SZ);
	CHECK_EQ(uhmm_simdev_read(d, p, n, buf, &st), 0);
	CHECK_EQ(st.faults, 0);
	CHECK_EQ(check(buf, n, 82), -1);
	printf("%s: device write to a 2 MiB THP%s, CPU reads it back: ok\n", NAME,
	       huge_detectable() ? " (snapshot: PMD)" : "");
	uhmm_simdev_destroy(d);
	CHECK_EQ(munmap(p, HUGE_SZ), 0);
	free(buf);
	free(prot);
}

/* ---- file-backed shared --------------------------------------------------------- */

static void test_file_shared(void)
{
	const size_t n = 8;
	struct uhmm_simdev_stats st;
	struct uhmm_simdev *d = dev_new(NULL);
	char path[] = "/tmp/uhmm-sdaccess-XXXXXX";
	char *buf = xmalloc(n * page_size), *fbuf = xmalloc(n * page_size);
	char *p, *r;
	int fd, rfd;

	fd = mkstemp(path);
	CHECK(fd >= 0, "mkstemp: %s", strerror(errno));
	rfd = open(path, O_RDONLY);
	CHECK(rfd >= 0, "open: %s", strerror(errno));
	CHECK_EQ(unlink(path), 0);
	fill(fbuf, n, 91);
	CHECK_EQ(pwrite(fd, fbuf, n * page_size, 0), (ssize_t)(n * page_size));
	p = mmap(NULL, n * page_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	CHECK(p != MAP_FAILED, "mmap file: %s", strerror(errno));

	memset(buf, 0, n * page_size);
	CHECK_EQ(uhmm_simdev_read(d, p, n, buf, &st), 0);
	CHECK_EQ(st.cpages, n);
	CHECK_EQ(check(buf, n, 91), -1);
	printf("%s: file-backed MAP_SHARED: device read gives the file's bytes: ok\n", NAME);

	fill(buf, n, 92);
	CHECK_EQ(uhmm_simdev_write(d, p, n, buf, &st), 0);
	CHECK_EQ(st.cpages, n);
	CHECK_EQ(msync(p, n * page_size, MS_SYNC), 0);
	memset(fbuf, 0, n * page_size);
	CHECK_EQ(pread(fd, fbuf, n * page_size, 0), (ssize_t)(n * page_size));
	CHECK_EQ(check(fbuf, n, 92), -1);
	CHECK_EQ(check(p, n, 92), -1);
	printf("%s: file-backed MAP_SHARED: device write changes the file (pread after "
	       "msync): ok\n", NAME);

	/* A read-only shared mapping of a read-only descriptor. */
	r = mmap(NULL, n * page_size, PROT_READ, MAP_SHARED, rfd, 0);
	CHECK(r != MAP_FAILED, "mmap file read-only: %s", strerror(errno));
	memset(buf, 0, n * page_size);
	CHECK_EQ(uhmm_simdev_read(d, r, n, buf, &st), 0);
	CHECK_EQ(check(buf, n, 92), -1);
	fill(buf, n, 93);
	CHECK_EQ(uhmm_simdev_write(d, r, n, buf, &st), -EPERM);
	CHECK_EQ(pread(fd, fbuf, n * page_size, 0), (ssize_t)(n * page_size));
	CHECK_EQ(check(fbuf, n, 92), -1);
	printf("%s: file-backed read-only MAP_SHARED: device read ok, device write -EPERM, "
	       "file untouched: ok\n", NAME);

	uhmm_simdev_destroy(d);
	CHECK_EQ(munmap(p, n * page_size), 0);
	CHECK_EQ(munmap(r, n * page_size), 0);
	close(fd);
	close(rfd);
	free(buf);
	free(fbuf);
}

/* ---- many reads ------------------------------------------------------------------ */

static void test_read_many(void)
{
	const size_t n = 4, words = n * page_size / sizeof(uint64_t);
	const int rounds = 1000, discard_every = 100;
	struct uhmm_simdev_stats st;
	struct uhmm_simdev *d = dev_new(NULL);
	uint64_t *p = (uint64_t *)map_range(n, PROT_READ | PROT_WRITE);
	uint64_t *buf = xmalloc(n * page_size);
	unsigned long faults = 0;

	for (int i = 0; i < rounds; i++) {
		bool discarded = i > 0 && i % discard_every == 0;

		if (discarded)
			CHECK_EQ(madvise(p, n * page_size, MADV_DONTNEED), 0);
		/* The CPU writes some words of every page (all of them every 10th round). */
		for (size_t w = (size_t)i % 7; w < words; w += (i % 10 == 0) ? 1 : 61)
			p[w] = ((uint64_t)i << 32) | w;
		CHECK_EQ(uhmm_simdev_read(d, p, n, buf, &st), 0);
		CHECK(memcmp(buf, p, n * page_size) == 0, "round %d: device read is stale", i);
		CHECK_EQ(st.cpages, n);
		/* A fault on the first read and after each discard, none otherwise. */
		CHECK(st.faults == (i == 0 || discarded ? 1u : 0u),
		      "round %d: %llu faults", i, (unsigned long long)st.faults);
		faults += st.faults;
	}
	printf("%s: %d device reads interleaved with CPU writes (and a discard every %d): "
	       "each saw the latest data, %lu device faults: ok\n", NAME, rounds,
	       discard_every, faults);
	uhmm_simdev_destroy(d);
	CHECK_EQ(munmap(p, n * page_size), 0);
	free(buf);
}

/* ---- read racing with munmap --------------------------------------------------- */

struct unmap_race {
	pthread_barrier_t bar;
	char *p;
	size_t half;
	int ret;
};

static void *unmapper(void *arg)
{
	struct unmap_race *u = arg;

	pthread_barrier_wait(&u->bar);
	u->ret = munmap(PG(u->p, u->half), u->half * page_size);
	return NULL;
}

static void test_read_vs_unmap(void)
{
	const size_t half = 16, n = 2 * half;
	const int rounds = 100;
	struct uhmm_simdev_stats st;
	struct uhmm_simdev *d = dev_new(NULL);
	char *buf = xmalloc(n * page_size);
	int ok = 0, efault = 0;

	for (int r = 0; r < rounds; r++) {
		struct unmap_race u = { .half = half };
		pthread_t th;
		int ret;

		u.p = map_range(n, PROT_READ | PROT_WRITE);
		fill(u.p, n, 100 + (uint32_t)r);
		/* Every other round, the device page table already maps the range. */
		if (r % 2)
			CHECK_EQ(uhmm_simdev_read(d, u.p, n, buf, &st), 0);
		memset(buf, 0xa5, n * page_size);
		CHECK_EQ(pthread_barrier_init(&u.bar, NULL, 2), 0);
		CHECK_EQ(pthread_create(&th, NULL, unmapper, &u), 0);
		pthread_barrier_wait(&u.bar);
		ret = uhmm_simdev_read(d, u.p, n, buf, &st);
		CHECK_EQ(pthread_join(th, NULL), 0);
		CHECK_EQ(u.ret, 0);
		pthread_barrier_destroy(&u.bar);
		if (ret == 0) {
			CHECK(check(buf, n, 100 + (uint32_t)r) == -1,
			      "round %d: read returned 0 with wrong data", r);
			ok++;
		} else {
			CHECK(ret == -EFAULT, "round %d: read returned %d", r, ret);
			CHECK_EQ(st.cpages, 0);
			efault++;
		}
		/* The surviving half still reads right. */
		CHECK_EQ(uhmm_simdev_read(d, u.p, half, buf, &st), 0);
		CHECK_EQ(check(buf, half, 100 + (uint32_t)r), -1);
		CHECK_EQ(munmap(u.p, half * page_size), 0);
	}
	printf("%s: device read racing with munmap of half the range, %d rounds: %d read "
	       "everything, %d got -EFAULT, never wrong data: ok\n", NAME, rounds, ok, efault);
	uhmm_simdev_destroy(d);
	free(buf);
}

/* ---- compute ------------------------------------------------------------------ */

#define NBINS 64

struct kargs {
	const uint64_t *in;
	uint64_t *out;
	uint64_t *hist;
};

static void k_triple_hist(struct uhmm_simdev_thread *t, size_t i, void *arg)
{
	struct kargs *a = arg;
	uint64_t v = uhmm_simdev_load64(t, &a->in[i]);

	uhmm_simdev_store64(t, &a->out[i], v * 3);
	uhmm_simdev_atomic_add64(t, &a->hist[v % NBINS], 1);
}

static void k_load(struct uhmm_simdev_thread *t, size_t i, void *arg)
{
	struct kargs *a = arg;

	(void)uhmm_simdev_load64(t, &a->in[i]);
}

static void k_store(struct uhmm_simdev_thread *t, size_t i, void *arg)
{
	struct kargs *a = arg;

	uhmm_simdev_store64(t, &a->out[i], i);
}

static void k_atomic(struct uhmm_simdev_thread *t, size_t i, void *arg)
{
	struct kargs *a = arg;

	uhmm_simdev_atomic_add64(t, &a->hist[i % NBINS], 1);
}

struct compute_mem {
	char *base;
	size_t npages, in_pages, out_pages, hist_pages;
	struct kargs k;
	size_t nitems;
};

/* in, out and hist in one 16-page aligned region (windows stay inside it). */
static void compute_mem_init(struct compute_mem *m, uint32_t seed)
{
	const size_t align = 16 * page_size;
	char *raw;

	m->in_pages = 32;
	m->out_pages = 32;
	m->hist_pages = 16;
	m->npages = m->in_pages + m->out_pages + m->hist_pages;
	m->nitems = m->in_pages * page_size / sizeof(uint64_t);
	raw = map_range(m->npages + 16, PROT_READ | PROT_WRITE);
	m->base = (char *)(((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1));
	if (m->base > raw)
		CHECK_EQ(munmap(raw, (size_t)(m->base - raw)), 0);
	if (m->base + m->npages * page_size < raw + (m->npages + 16) * page_size)
		CHECK_EQ(munmap(m->base + m->npages * page_size,
				(size_t)(raw + (m->npages + 16) * page_size -
					 (m->base + m->npages * page_size))), 0);
	m->k.in = (const uint64_t *)m->base;
	m->k.out = (uint64_t *)PG(m->base, m->in_pages);
	m->k.hist = (uint64_t *)PG(m->base, m->in_pages + m->out_pages);
	for (size_t i = 0; i < m->nitems; i++)
		((uint64_t *)m->k.in)[i] = mix(seed * UINT64_C(1000003) + i);
}

static void compute_check(const struct compute_mem *m, const char *what)
{
	uint64_t want[NBINS] = { 0 };

	for (size_t i = 0; i < m->nitems; i++) {
		uint64_t v = m->k.in[i];

		CHECK(m->k.out[i] == v * 3, "%s: out[%zu] = %#llx, expected %#llx", what, i,
		      (unsigned long long)m->k.out[i], (unsigned long long)(v * 3));
		want[v % NBINS]++;
	}
	for (size_t b = 0; b < NBINS; b++)
		CHECK(m->k.hist[b] == want[b], "%s: hist[%zu] = %llu, expected %llu", what, b,
		      (unsigned long long)m->k.hist[b], (unsigned long long)want[b]);
	for (size_t b = NBINS; b < m->hist_pages * page_size / sizeof(uint64_t); b++)
		CHECK(m->k.hist[b] == 0, "%s: hist[%zu] written", what, b);
}

static void compute_migrate(unsigned int threads, int rounds, uint32_t seed);

static void test_compute(void)
{
	struct uhmm_simdev_config cfg = { .threads = 4 };
	struct uhmm_simdev_stats st;
	struct uhmm_simdev *d;
	struct compute_mem m;

	/* Mirror: system memory accessed in place. */
	d = dev_new(&cfg);
	compute_mem_init(&m, 1);
	memset(&st, 0, sizeof(st));
	CHECK_EQ(uhmm_simdev_launch(d, m.nitems, k_triple_hist, &m.k, &st), 0);
	CHECK(st.faults > 0, "no device fault reported");
	CHECK_EQ(st.cpages, 0);
	CHECK_EQ(uhmm_simdev_used_pages(d), 0);
	compute_check(&m, "mirror");
	/* Run again over the results the CPU now holds (in place: out, hist doubled). */
	memset(&st, 0, sizeof(st));
	CHECK_EQ(uhmm_simdev_launch(d, m.nitems, k_triple_hist, &m.k, &st), 0);
	for (size_t b = 0; b < NBINS; b++)
		m.k.hist[b] /= 2;
	compute_check(&m, "mirror, second launch");
	printf("%s: compute, MIRROR policy (load64/store64/atomic_add64, %zu items, %u threads): "
	       "out = in * 3 and the histogram are exact: ok\n", NAME, m.nitems, cfg.threads);
	uhmm_simdev_destroy(d);
	CHECK_EQ(munmap(m.base, m.npages * page_size), 0);

	compute_migrate(1, 1, 2);
}

/*
 * MIGRATE policy: one launch per round over fresh memory with @threads
 * device threads; every touched page ends up in device memory (each exactly
 * once: the pages the policy migrated are the pages resident), the CPU then
 * reads exact results and faults them all back.
 */
static void compute_migrate(unsigned int threads, int rounds, uint32_t seed)
{
	struct uhmm_simdev_config cfg = {
		.threads = threads, .policy = UHMM_SIMDEV_POLICY_MIGRATE,
	};
	struct uhmm_simdev_stats st;
	struct uhmm_simdev *d = dev_new(&cfg);
	struct compute_mem m;
	uint8_t *prot = NULL;
	size_t touched = 0, used = 0;

	for (int r = 0; r < rounds; r++) {
		compute_mem_init(&m, seed + (uint32_t)r);
		if (!prot)
			prot = xmalloc(m.npages);
		touched = m.in_pages + m.out_pages + 1;
		memset(&st, 0, sizeof(st));
		CHECK_EQ(uhmm_simdev_launch(d, m.nitems, k_triple_hist, &m.k, &st), 0);
		used = uhmm_simdev_used_pages(d);
		CHECK_EQ(uhmm_simdev_snapshot(d, m.base, m.npages, prot, NULL), 0);
		for (size_t i = 0; i < touched; i++)
			CHECK(prot[i] == (P_DEV | P_WRITE), "%u threads, round %d: page %zu "
			      "after a MIGRATE launch: %#x (device holds %zu pages, policy "
			      "migrated %llu)", threads, r, i, prot[i], used,
			      (unsigned long long)st.cpages);
		CHECK(used >= touched && used <= m.npages,
		      "device holds %zu pages, expected %zu..%zu", used, touched, m.npages);
		CHECK(st.cpages == used, "%u threads, round %d: the policy migrated %llu pages, "
		      "%zu are resident", threads, r, (unsigned long long)st.cpages, used);
		compute_check(&m, "migrate");
		CHECK_EQ(uhmm_simdev_snapshot(d, m.base, touched, prot, NULL), 0);
		for (size_t i = 0; i < touched; i++)
			CHECK(!(prot[i] & P_DEV), "page %zu still on the device after CPU reads",
			      i);
		CHECK_EQ(munmap(m.base, m.npages * page_size), 0);
		CHECK_EQ(uhmm_simdev_used_pages(d), 0);
	}
	printf("%s: compute, MIGRATE policy, %u thread(s), %d round(s): every touched page "
	       "on the device (%zu pages, snapshot DEV_PRIVATE_LOCAL|WRITE), the CPU then "
	       "reads exact results and faults them back: ok\n", NAME, threads, rounds, used);
	uhmm_simdev_destroy(d);
	free(prot);
}

static void test_compute_errors(unsigned int policy, const char *pname)
{
	struct uhmm_simdev_config cfg = { .threads = 2, .policy = policy };
	struct uhmm_simdev_stats st;
	struct uhmm_simdev *d = dev_new(&cfg);
	struct compute_mem m;

	compute_mem_init(&m, 3);
	memset(m.k.out, 0x5a, m.out_pages * page_size);
	memset(m.k.hist, 0, m.hist_pages * page_size);

	/* Loads from PROT_NONE memory. */
	CHECK_EQ(mprotect((void *)m.k.in, m.in_pages * page_size, PROT_NONE), 0);
	memset(&st, 0, sizeof(st));
	CHECK_EQ(uhmm_simdev_launch(d, m.nitems, k_load, &m.k, &st), -EFAULT);
	/* The full kernel: stops at the first load; nothing may have been stored. */
	memset(&st, 0, sizeof(st));
	CHECK_EQ(uhmm_simdev_launch(d, m.nitems, k_triple_hist, &m.k, &st), -EFAULT);
	CHECK_EQ(mprotect((void *)m.k.in, m.in_pages * page_size, PROT_READ | PROT_WRITE), 0);
	CHECK_EQ(check_bytes(m.k.out, m.out_pages, 0x5a), -1);
	CHECK_EQ(check_bytes(m.k.hist, m.hist_pages, 0), -1);
	printf("%s: compute (%s): kernels touching PROT_NONE memory: -EFAULT: ok\n", NAME,
	       pname);

	/* Stores and atomics to PROT_READ memory. */
	CHECK_EQ(mprotect(m.k.out, (m.out_pages + m.hist_pages) * page_size, PROT_READ), 0);
	memset(&st, 0, sizeof(st));
	CHECK_EQ(uhmm_simdev_launch(d, m.nitems, k_store, &m.k, &st), -EPERM);
	memset(&st, 0, sizeof(st));
	CHECK_EQ(uhmm_simdev_launch(d, m.nitems, k_atomic, &m.k, &st), -EPERM);
	CHECK_EQ(check_bytes(m.k.out, m.out_pages, 0x5a), -1);
	CHECK_EQ(check_bytes(m.k.hist, m.hist_pages, 0), -1);
	/* Loads from it are fine. */
	memset(&st, 0, sizeof(st));
	CHECK_EQ(uhmm_simdev_launch(d, m.nitems, k_load, &m.k, &st), 0);
	CHECK_EQ(mprotect(m.k.out, (m.out_pages + m.hist_pages) * page_size,
			  PROT_READ | PROT_WRITE), 0);
	/* And once writable, the launch works. */
	memset(&st, 0, sizeof(st));
	CHECK_EQ(uhmm_simdev_launch(d, m.nitems, k_triple_hist, &m.k, &st), 0);
	compute_check(&m, pname);
	printf("%s: compute (%s): stores and atomics to PROT_READ memory: -EPERM, memory "
	       "untouched; loads fine; writable again: exact results: ok\n", NAME, pname);

	/* Bad launch arguments. */
	CHECK_EQ(uhmm_simdev_launch(NULL, 1, k_load, &m.k, &st), -EINVAL);
	CHECK_EQ(uhmm_simdev_launch(d, 1, NULL, &m.k, &st), -EINVAL);
	uhmm_simdev_destroy(d);
	CHECK_EQ(munmap(m.base, m.npages * page_size), 0);
}

/*
 * Launches while another thread keeps changing the CPU side of the device's
 * address-space chunk (mprotect of a neighbouring page: an invalidation of
 * the device page table, with a TLB shootdown, during and around launches).
 */
struct churn {
	char *page;
	atomic_bool stop;
	atomic_long rounds;
	int err;
};

static void *churner(void *arg)
{
	struct churn *c = arg;

	for (long i = 0; i < 10000000 && !atomic_load(&c->stop); i++) {
		if (mprotect(c->page, page_size, PROT_READ) ||
		    mprotect(c->page, page_size, PROT_READ | PROT_WRITE)) {
			c->err = errno;
			break;
		}
		atomic_fetch_add(&c->rounds, 1);
	}
	return NULL;
}

static void test_compute_vs_invalidation(void)
{
	struct uhmm_simdev_config cfg = { .threads = 4 };
	const int launches = 400;
	struct uhmm_simdev_stats st;
	struct uhmm_simdev *d = dev_new(&cfg);
	struct compute_mem m;
	struct churn c = { .stop = false };
	pthread_t th;

	compute_mem_init(&m, 5);
	c.page = map_in_chunk_of((uintptr_t)m.base);
	CHECK_EQ(pthread_create(&th, NULL, churner, &c), 0);
	for (int l = 0; l < launches; l++) {
		memset(&st, 0, sizeof(st));
		/* A small launch: 4 threads, one page of input. */
		m.nitems = page_size / sizeof(uint64_t);
		memset(m.k.hist, 0, NBINS * sizeof(uint64_t));
		memset(m.k.out, 0, m.nitems * sizeof(uint64_t));
		CHECK_EQ(uhmm_simdev_launch(d, m.nitems, k_triple_hist, &m.k, &st), 0);
		compute_check(&m, "compute during invalidations");
	}
	atomic_store(&c.stop, true);
	CHECK_EQ(pthread_join(th, NULL), 0);
	CHECK(c.err == 0, "mprotect: %s", strerror(c.err));
	printf("%s: compute: %d launches while another thread changed the protection of a "
	       "page in the device's chunk (%ld times): exact results: ok\n", NAME, launches,
	       atomic_load(&c.rounds));
	uhmm_simdev_destroy(d);
	CHECK_EQ(munmap(c.page, page_size), 0);
	CHECK_EQ(munmap(m.base, m.npages * page_size), 0);
}

/* ---- bad input ---------------------------------------------------------------- */

static void test_bad_input(void)
{
	struct uhmm_simdev_stats st;
	struct uhmm_simdev *d = dev_new(NULL);
	char *p = map_range(2, PROT_READ | PROT_WRITE);
	char *buf = xmalloc(2 * page_size);
	void *top = (void *)(UINTPTR_MAX & ~(uintptr_t)(page_size - 1));

	fill(p, 2, 111);
	memset(buf, 0xa5, 2 * page_size);
	CHECK_EQ(uhmm_simdev_read(d, p + 1, 1, buf, &st), -EINVAL);
	CHECK_EQ(uhmm_simdev_read(d, p + page_size / 2, 1, buf, &st), -EINVAL);
	CHECK_EQ(uhmm_simdev_read(d, p, 0, buf, &st), -EINVAL);
	CHECK_EQ(uhmm_simdev_read(d, top, 2, buf, &st), -EINVAL);
	CHECK_EQ(uhmm_simdev_read(d, p, SIZE_MAX, buf, &st), -EINVAL);
	CHECK_EQ(uhmm_simdev_read(d, p, SIZE_MAX / page_size + 1, buf, &st), -EINVAL);
	CHECK_EQ(uhmm_simdev_read(d, p, 1, NULL, &st), -EINVAL);
	CHECK_EQ(uhmm_simdev_read(NULL, p, 1, buf, &st), -EINVAL);
	CHECK_EQ(check_bytes(buf, 2, 0xa5), -1);

	CHECK_EQ(uhmm_simdev_write(d, p + 1, 1, buf, &st), -EINVAL);
	CHECK_EQ(uhmm_simdev_write(d, p, 0, buf, &st), -EINVAL);
	CHECK_EQ(uhmm_simdev_write(d, top, 2, buf, &st), -EINVAL);
	CHECK_EQ(uhmm_simdev_write(d, p, SIZE_MAX, buf, &st), -EINVAL);
	CHECK_EQ(uhmm_simdev_write(d, p, 1, NULL, &st), -EINVAL);
	CHECK_EQ(uhmm_simdev_write(NULL, p, 1, buf, &st), -EINVAL);
	CHECK_EQ(check(p, 2, 111), -1);
	printf("%s: bad input (unaligned address, npages 0, wrapping range, NULL out/in, NULL "
	       "device): -EINVAL, nothing copied: ok\n", NAME);
	uhmm_simdev_destroy(d);
	CHECK_EQ(munmap(p, 2 * page_size), 0);
	free(buf);
}

/* ---- protection of pages resident in device memory ------------------------ */

/*
 * The mapping's protection governs device access whether the pages are in
 * system memory or in this device's memory: PROT_NONE -> -EFAULT,
 * PROT_READ -> writes -EPERM with nothing written.
 */
static void test_device_resident_prot(void)
{
	const size_t n = 4;
	struct uhmm_simdev_stats st;
	struct uhmm_simdev *d = dev_new(NULL);
	char *p = map_range(n, PROT_READ | PROT_WRITE);
	char *q = map_range(n, PROT_READ | PROT_WRITE);
	char *buf = xmalloc(n * page_size);
	uint8_t prot[4];

	/* Migrated, then PROT_NONE: a device read must fail. */
	fill(p, n, 121);
	CHECK_EQ(uhmm_simdev_migrate_to_dev(d, p, n, &st), 0);
	CHECK_EQ(uhmm_simdev_used_pages(d), n);
	CHECK_EQ(mprotect(p, n * page_size, PROT_NONE), 0);
	memset(buf, 0xa5, n * page_size);
	CHECK_EQ(uhmm_simdev_read(d, p, n, buf, &st), -EFAULT);
	CHECK_EQ(check_bytes(buf, n, 0xa5), -1);
	printf("%s: read of PROT_NONE memory resident on the device: -EFAULT, output "
	       "untouched: ok\n", NAME);

	/* PROT_READ: reads work, writes are refused and write nothing. */
	CHECK_EQ(mprotect(p, n * page_size, PROT_READ), 0);
	CHECK_EQ(uhmm_simdev_snapshot(d, p, n, prot, &st), 0);
	for (size_t i = 0; i < n; i++)
		CHECK(prot[i] == (P_DEV | P_READ), "page %zu after mprotect(PROT_READ): %#x", i,
		      prot[i]);
	CHECK_EQ(uhmm_simdev_read(d, p, n, buf, &st), 0);
	CHECK_EQ(check(buf, n, 121), -1);
	fill(buf, n, 122);
	CHECK_EQ(uhmm_simdev_write(d, p, n, buf, &st), -EPERM);
	CHECK_EQ(check(p, n, 121), -1);
	printf("%s: migrated, then mprotect(PROT_READ): device write -EPERM, memory "
	       "untouched: ok\n", NAME);

	/* PROT_READ first, then migrated (read-only device pages). */
	fill(q, n, 123);
	CHECK_EQ(mprotect(q, n * page_size, PROT_READ), 0);
	CHECK_EQ(uhmm_simdev_migrate_to_dev(d, q, n, &st), 0);
	CHECK_EQ(uhmm_simdev_snapshot(d, q, n, prot, &st), 0);
	for (size_t i = 0; i < n; i++)
		CHECK(prot[i] == (P_DEV | P_READ), "read-only page %zu migrated: %#x", i, prot[i]);
	CHECK_EQ(uhmm_simdev_write(d, q, n, buf, &st), -EPERM);
	CHECK_EQ(check(q, n, 123), -1);
	printf("%s: mprotect(PROT_READ), then migrated: device write -EPERM, memory "
	       "untouched: ok\n", NAME);

	uhmm_simdev_destroy(d);
	CHECK_EQ(munmap(p, n * page_size), 0);
	CHECK_EQ(munmap(q, n * page_size), 0);
	free(buf);
}

/*
 * The device's page table holds writable entries for pages it wrote: when
 * the CPU mapping loses write access, or all access, those entries must go
 * (the invalidation), so the device can never write through a mapping the
 * process cannot write, nor read one it cannot read.
 */
static void test_mirror_loses_access(void)
{
	const size_t n = 4;
	struct uhmm_simdev_stats st;
	struct uhmm_simdev *d = dev_new(NULL);
	char *p = map_range(n, PROT_READ | PROT_WRITE);
	char *buf = xmalloc(n * page_size);

	fill(buf, n, 151);
	CHECK_EQ(uhmm_simdev_write(d, p, n, buf, &st), 0);	/* writable device entries */
	CHECK_EQ(uhmm_simdev_write(d, p, n, buf, &st), 0);
	CHECK_EQ(st.faults, 0);					/* ...that are cached */
	CHECK_EQ(mprotect(p, n * page_size, PROT_READ), 0);
	fill(buf, n, 152);
	CHECK_EQ(uhmm_simdev_write(d, p, n, buf, &st), -EPERM);
	CHECK_EQ(uhmm_simdev_write(d, PG(p, n - 1), 1, buf, &st), -EPERM);
	CHECK_EQ(check(p, n, 151), -1);
	CHECK_EQ(uhmm_simdev_read(d, p, n, buf, &st), 0);	/* reading is still allowed */
	CHECK_EQ(check(buf, n, 151), -1);
	CHECK_EQ(mprotect(p, n * page_size, PROT_NONE), 0);
	memset(buf, 0xa5, n * page_size);
	CHECK_EQ(uhmm_simdev_read(d, p, n, buf, &st), -EFAULT);
	CHECK_EQ(check_bytes(buf, n, 0xa5), -1);
	CHECK_EQ(mprotect(p, n * page_size, PROT_READ | PROT_WRITE), 0);
	CHECK_EQ(check(p, n, 151), -1);
	printf("%s: device wrote pages, then mprotect(PROT_READ): device write -EPERM, "
	       "memory untouched; PROT_NONE: device read -EFAULT: ok\n", NAME);
	uhmm_simdev_destroy(d);
	CHECK_EQ(munmap(p, n * page_size), 0);
	free(buf);
}

/* ---- the last device closed tears the context down -------------------------- */

/*
 * Closing the last device drops the last context reference: the context is
 * torn down (its service thread stops) and a later device gets a fresh one.
 * The device has used memory in the 1 GiB chunks holding the other threads'
 * stacks (the service thread's among them), so its notifiers cover them.
 */
static void test_teardown(struct uhmm_mm *hold)
{
	struct uhmm_simdev_stats st;
	struct uhmm_simdev *d = dev_new(NULL);
	uintptr_t sps[8];
	void *pages[8];
	char *buf = xmalloc(page_size);
	int n;

	uhmm_mm_put(hold);		/* the device holds the only reference now */
	/*
	 * A thread that is running at the moment shows no stack pointer
	 * ("running" in its syscall file): look again until one is found in
	 * a system call (the service threads wait in one almost always).
	 */
	for (long tries = 0; (n = other_thread_sps(sps, 8)) < 1 && tries < 1000000; tries++)
		sched_yield();
	CHECK(n >= 1, "no service thread found");
	for (int i = 0; i < n; i++) {
		pages[i] = map_in_chunk_of(sps[i]);
		fill(pages[i], 1, 130 + (uint32_t)i);
		CHECK_EQ(uhmm_simdev_read(d, pages[i], 1, buf, &st), 0);
		CHECK_EQ(check(buf, 1, 130 + (uint32_t)i), -1);
	}
	printf("%s: teardown: closing the last device (notifiers over the chunks of %d other "
	       "thread stack(s))...\n", NAME, n);
	CHECK_EQ(count_uffds(), 1);
	uhmm_simdev_destroy(d);
	CHECK_EQ(count_uffds(), 0);
	printf("%s: teardown: the last device closed, the context was torn down (its "
	       "userfaultfd closed): ok\n", NAME);

	/* A fresh context and device work. */
	d = dev_new(NULL);
	fill(pages[0], 1, 140);
	CHECK_EQ(uhmm_simdev_read(d, pages[0], 1, buf, &st), 0);
	CHECK_EQ(check(buf, 1, 140), -1);
	uhmm_simdev_destroy(d);
	for (int i = 0; i < n; i++)
		CHECK_EQ(munmap(pages[i], page_size), 0);
	free(buf);
	printf("%s: teardown: a new device after it works (fresh context): ok\n", NAME);
}

/*
 * A context reference held for the whole program, so that closing the last
 * device of a scenario does not tear the context down: that is the
 * teardown case's subject alone (it drops this reference).
 */
static struct uhmm_mm *hold;

/*
 * Cold or warm alike (UHMM_TEST_COLD=1 used to make the first round's read
 * return 0 with wrong data: simdev's own new memory, mapped by its first
 * device fault, took the addresses the munmap had just freed, and the
 * fault mirrored it; tests/test_unmap_race.c reproduces it in a fresh
 * process per round).
 */
static void case_read_vs_unmap(void)
{
	test_read_vs_unmap();
}

static void case_compute_errors_mirror(void)
{
	test_compute_errors(UHMM_SIMDEV_POLICY_MIRROR, "mirror");
}

static void case_compute_errors_migrate(void)
{
	test_compute_errors(UHMM_SIMDEV_POLICY_MIGRATE, "migrate");
}

static void case_compute_migrate(void)
{
	compute_migrate(4, 8, 20);
}

static void case_teardown(void)
{
	test_teardown(hold);
	hold = NULL;
}

static void start(void)
{
	uhmm_sysinfo(&si);
	hold = test_mm();
	printf("%s: zero page %d, THP \"%s\", active features %#x\n", NAME, si.zero_page,
	       si.thp, si.active);
}

static int finish(void)
{
	if (hold)
		uhmm_mm_put(hold);
	return 0;
}

static const struct test_case cases[] = {
	TEST_CASE(test_open_close),
	TEST_CASE(test_anon_read),
	TEST_CASE(test_prot_none_read),
	TEST_CASE(test_write),
	TEST_CASE(test_write_read_only),
	TEST_CASE(test_fork),
	TEST_CASE(test_thp_write),
	TEST_CASE(test_file_shared),
	TEST_CASE(test_read_many),
	{ "read_vs_unmap", case_read_vs_unmap },
	TEST_CASE(test_compute),
	{ "compute_errors_mirror", case_compute_errors_mirror },
	TEST_CASE(test_bad_input),
	TEST_CASE(test_compute_vs_invalidation),
	TEST_CASE(test_device_resident_prot),
	TEST_CASE(test_mirror_loses_access),
	{ "compute_errors_migrate", case_compute_errors_migrate },
	{ "compute_migrate", case_compute_migrate },
	{ "teardown", case_teardown },
};

TEST_MAIN(NAME, start, finish)
