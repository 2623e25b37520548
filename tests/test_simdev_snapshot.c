// SPDX-License-Identifier: MIT
/*
 * simdev conformance: snapshot, device-exclusive access and fork, after the
 * kernel's hmm-tests.c (hmm2 snapshot, hmm exclusive / exclusive_mprotect /
 * exclusive_cow, migrate + fork), checked byte for byte.
 *
 *  1. snapshot of a mixed range (one reservation and its neighbours) on two
 *     devices: PROT_NONE page and unmapped hole -> ERROR; never touched ->
 *     NONE; zero page after a CPU read -> ZERO|READ (in a read-only and in a
 *     writable mapping); read-only data -> READ; written data -> WRITE; a
 *     page on device 0 -> DEV_PRIVATE_LOCAL|WRITE from device 0 and NONE
 *     from device 1; a page on device 1 -> the reverse;
 *  2. snapshot faults nothing in: untouched pages stay not present, device
 *     pages stay on their device, the zero page stays the zero page, no
 *     device fault is counted;
 *  3. snapshot of a THP (PMD-mapped) region: every page PMD|WRITE, and after
 *     mprotect(PROT_READ) of the whole 2 MiB, PMD|READ (when the kernel gave
 *     a PMD mapping and huge mappings are detectable here);
 *  4. exclusive access: taken, check_exclusive -EPERM, device write and read
 *     served from the exclusive pages without a device fault, each CPU read
 *     revokes exactly its page and sees the device's writes;
 *  5. exclusive then mprotect(PROT_READ): the CPU reads the device's data,
 *     a device write fails -EPERM, a device read works;
 *  6. exclusive then fork: the child reads the right data and writes its own
 *     copy; the parent's data is unchanged, the device's exclusivity revoked;
 *  7. copy-on-write of device-resident pages across fork (pipes): the child
 *     sees the data, its writes are its own, the parent's later writes are
 *     not seen by the child;
 *  8. two processes, two devices: the child creates its own simdev and
 *     migrates its copy there; the parent's data and device state are
 *     unaffected; the child then destroys its device and drops its context
 *     (the child's device part is not run under ThreadSanitizer, which
 *     cannot start threads in the child of a multi-threaded fork);
 *  9. teardown: destroying both devices and dropping the last context
 *     reference returns.
 */
#include "common.h"

#include <signal.h>
#include <uhmm/simdev.h>

#define PG(p, i) ((char *)(p) + (size_t)(i) * page_size)

#define P_ERROR		UHMM_SIMDEV_PROT_ERROR
#define P_NONE		UHMM_SIMDEV_PROT_NONE
#define P_READ		UHMM_SIMDEV_PROT_READ
#define P_WRITE		UHMM_SIMDEV_PROT_WRITE
#define P_PMD		UHMM_SIMDEV_PROT_PMD
#define P_ZERO		UHMM_SIMDEV_PROT_ZERO
#define P_LOCAL		UHMM_SIMDEV_PROT_DEV_PRIVATE_LOCAL

#if defined(__SANITIZE_THREAD__)
#define SDSNAP_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SDSNAP_TSAN 1
#endif
#endif
#ifdef SDSNAP_TSAN
static const bool child_threads_ok = false;
#else
static const bool child_threads_ok = true;
#endif

static struct uhmm_mm *mm;
static struct uhmm_simdev *dev0, *dev1;
static struct uhmm_sysinfo si;

/* ---- helpers ------------------------------------------------------------- */

/* Word k of page i of pattern @seed. */
static uint64_t pat(uint32_t seed, size_t i, size_t k)
{
	return ((uint64_t)seed << 40) ^ ((uint64_t)i << 20) ^ (uint64_t)k ^ UINT64_C(0x5a5a000000000000);
}

static void fill(void *p, size_t first, size_t n, uint32_t seed)
{
	const size_t words = page_size / sizeof(uint64_t);

	for (size_t i = first; i < first + n; i++)
		for (size_t k = 0; k < words; k++)
			((uint64_t *)PG(p, i))[k] = pat(seed, i, k);
}

/* First page of [first, first + n) of @p (page i compared as page i) not holding @seed, or -1. */
static long bad_page(const void *p, size_t first, size_t n, uint32_t seed)
{
	const size_t words = page_size / sizeof(uint64_t);

	for (size_t i = first; i < first + n; i++)
		for (size_t k = 0; k < words; k++)
			if (((const uint64_t *)PG(p, i))[k] != pat(seed, i, k))
				return (long)i;
	return -1;
}

/* Device read of pages [first, first + n) of @p into a buffer laid out as @p. */
static void *dev_read(struct uhmm_simdev *d, void *p, size_t first, size_t n,
		      struct uhmm_simdev_stats *st)
{
	char *buf = malloc((first + n) * page_size);
	int ret;

	CHECK(buf, "malloc");
	ret = uhmm_simdev_read(d, PG(p, first), n, PG(buf, first), st);
	CHECK_EQ(ret, 0);
	return buf;
}

/* Device write of pattern @seed to pages [first, first + n) of @p. */
static int dev_write(struct uhmm_simdev *d, void *p, size_t first, size_t n, uint32_t seed,
		     struct uhmm_simdev_stats *st)
{
	char *buf = malloc((first + n) * page_size);
	int ret;

	CHECK(buf, "malloc");
	fill(buf, first, n, seed);
	ret = uhmm_simdev_write(d, PG(p, first), n, PG(buf, first), st);
	free(buf);
	return ret;
}

static void snapshot(struct uhmm_simdev *d, const void *p, size_t n, uint8_t *out)
{
	struct uhmm_simdev_stats st = { 0 };

	memset(out, 0xAA, n);
	CHECK_EQ(uhmm_simdev_snapshot(d, p, n, out, &st), 0);
	CHECK_EQ(st.cpages, n);
	CHECK_EQ(st.faults, 0);
}

static void hex(char *s, size_t len, const uint8_t *b, size_t n)
{
	size_t o = 0;

	s[0] = 0;
	for (size_t i = 0; i < n && o + 4 < len; i++)
		o += (size_t)snprintf(s + o, len - o, "%s%02x", i ? " " : "", b[i]);
}

static void check_bytes(const char *what, const uint8_t *got, const int *want, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char g[256];

		if (want[i] < 0 || got[i] == want[i])
			continue;
		hex(g, sizeof(g), got, n);
		CHECK(0, "%s: page %zu is %#04x, expected %#04x (all: %s)", what, i, got[i],
		      want[i], g);
	}
}

static void all_bytes(const char *what, const uint8_t *got, size_t n, uint8_t want)
{
	for (size_t i = 0; i < n; i++)
		CHECK(got[i] == want, "%s: page %zu is %#04x, expected %#04x", what, i, got[i],
		      want);
}

static uint32_t pstate(const void *p)
{
	uint32_t st = 0;

	CHECK_EQ(uhmm_page_state(mm, (uintptr_t)p, 1, &st), 0);
	return st;
}

static bool is_unmapped(const void *p)
{
	unsigned char v;

	return mincore((void *)p, page_size, &v) != 0 && errno == ENOMEM;
}

/* Zero page and huge mappings are visible with PAGEMAP_SCAN, or to root. */
static bool categories_visible(void)
{
	return (si.active & UHMM_FEAT_PAGEMAP_SCAN) || geteuid() == 0;
}

static bool pmd_mapped(const void *p)
{
	uintptr_t s = 0, e = 0;
	long kb = smaps_anon_huge_kb(p, &s, &e);

	return kb >= 2048 && s <= (uintptr_t)p && (uintptr_t)p + (2u << 20) <= e;
}

/* ---- children: no CHECK (it would exit() through the parent's handlers) ---- */

#define CCHECK(cond, ...)                                                     \
	do {                                                                  \
		if (!(cond)) {                                                \
			fprintf(stderr, "%s: child FAIL %s:%d: %s: ", test_name, \
				__FILE__, __LINE__, #cond);                   \
			fprintf(stderr, __VA_ARGS__);                         \
			fprintf(stderr, "\n");                                \
			_exit(2);                                             \
		}                                                             \
	} while (0)

static void xwrite(int fd, char c)
{
	CHECK(write(fd, &c, 1) == 1, "pipe write: %s", strerror(errno));
}

static char xread(int fd)
{
	char c = 0;
	ssize_t r;

	do {
		r = read(fd, &c, 1);
	} while (r < 0 && errno == EINTR);
	return r == 1 ? c : 0;
}

static void wait_child(pid_t pid)
{
	int status;

	CHECK(waitpid(pid, &status, 0) == pid, "waitpid: %s", strerror(errno));
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %#x (exit %d)",
	      status, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
}

/* ---- 1, 2: snapshot of a mixed range, faulting nothing in ------------------ */

enum {
	M_PROTNONE,	/* PROT_NONE */
	M_HOLE,		/* unmapped */
	M_UNTOUCHED,	/* RW, never touched */
	M_ZERO_RO,	/* PROT_READ, read by the CPU */
	M_ZERO_RW,	/* RW, read by the CPU */
	M_RO,		/* written, then PROT_READ */
	M_RW,		/* written */
	M_DEV0,		/* written, on device 0 */
	M_DEV1,		/* written, on device 1 */
	M_N
};

static void test_snapshot_mixed(void)
{
	/* Far from other mappings: nothing else can land in the hole (common.h). */
	char *p = map_far(M_N * page_size, PROT_NONE);
	struct uhmm_simdev_stats st = { 0 };
	uint8_t s0[M_N], s1[M_N];
	int w0[M_N], w1[M_N];
	int zro, zrw;
	char line[256];

	CHECK_EQ(mprotect(PG(p, M_UNTOUCHED), (M_N - M_UNTOUCHED) * page_size,
			  PROT_READ | PROT_WRITE), 0);
	CHECK_EQ(mprotect(PG(p, M_ZERO_RO), page_size, PROT_READ), 0);
	CHECK_EQ(*(volatile uint64_t *)PG(p, M_ZERO_RO), 0);
	CHECK_EQ(*(volatile uint64_t *)PG(p, M_ZERO_RW), 0);
	fill(p, M_RO, 1, 11);
	CHECK_EQ(mprotect(PG(p, M_RO), page_size, PROT_READ), 0);
	fill(p, M_RW, 3, 12);
	CHECK_EQ(uhmm_simdev_migrate_to_dev(dev0, PG(p, M_DEV0), 1, &st), 0);
	CHECK_EQ(st.cpages, 1);
	CHECK_EQ(uhmm_simdev_migrate_to_dev(dev1, PG(p, M_DEV1), 1, &st), 0);
	CHECK_EQ(st.cpages, 1);
	CHECK_EQ(uhmm_simdev_used_pages(dev0), 1);
	CHECK_EQ(uhmm_simdev_used_pages(dev1), 1);
	CHECK(pstate(PG(p, M_DEV0)) & UHMM_PS_DEVICE_PRIVATE, "page on device 0");
	CHECK(pstate(PG(p, M_DEV1)) & UHMM_PS_DEVICE_PRIVATE, "page on device 1");
	/*
	 * Both devices' notifiers exist before the hole is punched (snapshot
	 * inserts them on first use).  That alone did not keep the hole a
	 * hole: a sanitizer runtime or a service thread maps memory of its
	 * own at any time, and a fresh one-page gap is where the kernel puts
	 * it.  The region is far from every other mapping for that (map_far).
	 */
	snapshot(dev0, p, M_N, s0);
	snapshot(dev1, p, M_N, s1);
	CHECK_EQ(munmap(PG(p, M_HOLE), page_size), 0);
	CHECK(is_unmapped(PG(p, M_HOLE)), "hole");
	snapshot(dev0, p, M_N, s0);
	snapshot(dev1, p, M_N, s1);
	CHECK(is_unmapped(PG(p, M_HOLE)), "the hole stayed a hole");

	/*
	 * Expected, as the kernel's test device reports them.  PROT_NONE:
	 * ERROR (a range fault reports ERROR for a mapping without read
	 * access, as hmm_range_fault does for a !VM_READ vma).
	 */
	/* The machine's behaviour as observed (common.h), not uhmm's probe. */
	if (variant.zero_page == 1 && categories_visible()) {
		zro = zrw = P_ZERO | P_READ;
	} else if (variant.zero_page == 1) {
		/* The zero page is shared: never writable; not recognisable here. */
		zro = zrw = P_READ;
		printf("note: zero page not recognisable here (no PAGEMAP_SCAN, not root): "
		       "expecting READ without ZERO\n");
	} else if (variant.zero_page == 0) {
		/* A read fault installs a private zeroed page. */
		zro = P_READ;
		zrw = P_WRITE;
		printf("note: this kernel maps no zero page: expecting READ / WRITE for "
		       "the CPU-read pages\n");
	} else {
		zro = zrw = -1;
		printf("note: zero page support unknown: CPU-read pages not checked\n");
	}
	w0[M_PROTNONE] = P_ERROR;
	w0[M_HOLE] = P_ERROR;
	w0[M_UNTOUCHED] = P_NONE;
	w0[M_ZERO_RO] = zro;
	w0[M_ZERO_RW] = zrw;
	w0[M_RO] = P_READ;
	w0[M_RW] = P_WRITE;
	memcpy(w1, w0, sizeof(w0));
	w0[M_DEV0] = P_LOCAL | P_WRITE;
	w0[M_DEV1] = P_NONE;	/* another device's page */
	w1[M_DEV0] = P_NONE;
	w1[M_DEV1] = P_LOCAL | P_WRITE;
	check_bytes("device 0 snapshot", s0, w0, M_N);
	check_bytes("device 1 snapshot", s1, w1, M_N);
	hex(line, sizeof(line), s0, M_N);
	printf("snapshot, mixed range, device 0: %s: ok\n", line);
	hex(line, sizeof(line), s1, M_N);
	printf("snapshot, mixed range, device 1: %s: ok\n", line);

	/* 2: nothing was faulted in or migrated by the four snapshots. */
	CHECK(!(pstate(PG(p, M_UNTOUCHED)) & UHMM_PS_PRESENT), "untouched page stays absent");
	CHECK(pstate(PG(p, M_DEV0)) & UHMM_PS_DEVICE_PRIVATE, "stays on device 0");
	CHECK(pstate(PG(p, M_DEV1)) & UHMM_PS_DEVICE_PRIVATE, "stays on device 1");
	CHECK_EQ(uhmm_simdev_used_pages(dev0), 1);
	CHECK_EQ(uhmm_simdev_used_pages(dev1), 1);
	if (zro == (P_ZERO | P_READ)) {
		CHECK(pstate(PG(p, M_ZERO_RO)) & UHMM_PS_ZERO, "still the zero page");
		CHECK(pstate(PG(p, M_ZERO_RW)) & UHMM_PS_ZERO, "still the zero page");
	}
	/* The data is where it was. */
	CHECK_EQ(bad_page(p, M_RO, 1, 11), -1);
	CHECK_EQ(bad_page(p, M_RW, 3, 12), -1);
	CHECK_EQ(uhmm_simdev_used_pages(dev0), 0);
	CHECK_EQ(uhmm_simdev_used_pages(dev1), 0);
	CHECK(is_unmapped(PG(p, M_HOLE)), "the hole stayed a hole to the end");
	/* Not over the hole: only what is the test's. */
	CHECK_EQ(munmap(p, M_HOLE * page_size), 0);
	CHECK_EQ(munmap(PG(p, M_HOLE + 1), (M_N - M_HOLE - 1) * page_size), 0);
}

static void test_snapshot_no_fault(void)
{
	const size_t n = 64;
	char *p = map_anon(n * page_size, PROT_READ | PROT_WRITE);
	uint32_t before[64], after[64];
	uint8_t s[64];

	/* Every fourth page written, the rest never touched. */
	for (size_t i = 0; i < n; i += 4)
		fill(p, i, 1, 20);
	CHECK_EQ(uhmm_page_state(mm, (uintptr_t)p, n, before), 0);
	snapshot(dev0, p, n, s);
	snapshot(dev1, p, n, s);
	CHECK_EQ(uhmm_page_state(mm, (uintptr_t)p, n, after), 0);
	for (size_t i = 0; i < n; i++) {
		CHECK_EQ(s[i], i % 4 ? P_NONE : P_WRITE);
		CHECK(!!(before[i] & UHMM_PS_PRESENT) == !(i % 4), "page %zu before: %#x", i,
		      before[i]);
		CHECK((before[i] & ~UHMM_PS_SOFT_DIRTY) == (after[i] & ~UHMM_PS_SOFT_DIRTY),
		      "page %zu: state %#x became %#x", i, before[i], after[i]);
	}
	for (size_t i = 0; i < n; i += 4)
		CHECK_EQ(bad_page(p, i, 1, 20), -1);
	CHECK_EQ(munmap(p, n * page_size), 0);
	printf("snapshot faults nothing in: 48 never-touched pages stay not present, "
	       "16 written pages WRITE: ok\n");
}

/* ---- 3: THP ---------------------------------------------------------------- */

static void test_snapshot_thp(void)
{
	const size_t huge = 2u << 20, n = huge / page_size;
	uint8_t *s = malloc(n);
	char *h;

	CHECK(s, "malloc");
	if (!categories_visible()) {
		printf("snapshot of a THP: not checked: huge mappings are not detectable "
		       "here (no PAGEMAP_SCAN, not root)\n");
		free(s);
		return;
	}
	h = map_aligned_2m(huge, PROT_READ | PROT_WRITE);
	if (madvise(h, huge, MADV_HUGEPAGE)) {
		printf("snapshot of a THP: not checked: MADV_HUGEPAGE: %s\n", strerror(errno));
		goto out;
	}
	fill(h, 0, n, 30);
	if (!pmd_mapped(h)) {
		printf("snapshot of a THP: not checked: the kernel did not map the 2 MiB "
		       "region with a PMD (smaps AnonHugePages; THP mode %s)\n", si.thp);
		goto out;
	}
	snapshot(dev0, h, n, s);
	all_bytes("THP snapshot", s, n, P_PMD | P_WRITE);
	CHECK_EQ(mprotect(h, huge, PROT_READ), 0);
	if (!pmd_mapped(h)) {
		printf("snapshot of a THP: PMD|WRITE (%#04x) on all %zu pages: ok; read-only "
		       "huge mapping not checked: mprotect split the PMD\n", P_PMD | P_WRITE, n);
		goto out;
	}
	snapshot(dev0, h, n, s);
	all_bytes("read-only THP snapshot", s, n, P_PMD | P_READ);
	CHECK(pmd_mapped(h), "the snapshot kept the PMD");
	CHECK_EQ(bad_page(h, 0, n, 30), -1);
	printf("snapshot of a THP: PMD|WRITE (%#04x) on all %zu pages, after "
	       "mprotect(PROT_READ) PMD|READ (%#04x): ok\n", P_PMD | P_WRITE, n, P_PMD | P_READ);
out:
	CHECK_EQ(munmap(h, huge), 0);
	free(s);
}

/* ---- 4, 5, 6: exclusive access --------------------------------------------- */

#define XN 8

static void test_exclusive(void)
{
	char *p = map_anon(XN * page_size, PROT_READ | PROT_WRITE);
	struct uhmm_simdev_stats st = { 0 };
	char *buf;

	fill(p, 0, XN, 40);
	CHECK_EQ(uhmm_simdev_exclusive(dev0, p, XN, &st), 0);
	CHECK_EQ(st.cpages, XN);
	CHECK_EQ(uhmm_simdev_check_exclusive(dev0, p, XN), -EPERM);
	for (size_t i = 0; i < XN; i++)
		CHECK(pstate(PG(p, i)) & UHMM_PS_DEVICE_EXCLUSIVE, "page %zu exclusive", i);

	/* The device reads and writes its exclusive pages: no device fault. */
	buf = dev_read(dev0, p, 0, XN, &st);
	CHECK_EQ(st.faults, 0);
	CHECK_EQ(bad_page(buf, 0, XN, 40), -1);
	free(buf);
	CHECK_EQ(dev_write(dev0, p, 0, XN, 41, &st), 0);
	CHECK_EQ(st.faults, 0);
	buf = dev_read(dev0, p, 0, XN, &st);
	CHECK_EQ(st.faults, 0);
	CHECK_EQ(bad_page(buf, 0, XN, 41), -1);
	free(buf);
	CHECK_EQ(uhmm_simdev_check_exclusive(dev0, p, XN), -EPERM);
	for (size_t i = 0; i < XN; i++)
		CHECK(pstate(PG(p, i)) & UHMM_PS_DEVICE_EXCLUSIVE, "page %zu still exclusive", i);

	/* Each CPU read revokes exactly its page and sees the device's writes. */
	for (size_t i = 0; i < XN; i++) {
		CHECK_EQ(bad_page(p, i, 1, 41), -1);
		CHECK_EQ(uhmm_simdev_check_exclusive(dev0, PG(p, i), 1), 0);
		CHECK(!(pstate(PG(p, i)) & UHMM_PS_DEVICE_EXCLUSIVE), "page %zu revoked", i);
		if (i + 1 < XN)
			CHECK_EQ(uhmm_simdev_check_exclusive(dev0, PG(p, i + 1), XN - i - 1),
				 -EPERM);
	}
	CHECK_EQ(uhmm_simdev_check_exclusive(dev0, p, XN), 0);
	CHECK_EQ(bad_page(p, 0, XN, 41), -1);
	CHECK_EQ(munmap(p, XN * page_size), 0);
	printf("exclusive: taken (-EPERM from check_exclusive), device write+read without "
	       "device faults, each CPU read revokes its page and sees the device's data: ok\n");
}

static void test_exclusive_mprotect(void)
{
	char *p = map_anon(XN * page_size, PROT_READ | PROT_WRITE);
	struct uhmm_simdev_stats st = { 0 };
	char *buf;

	fill(p, 0, XN, 50);
	CHECK_EQ(uhmm_simdev_exclusive(dev0, p, XN, &st), 0);
	CHECK_EQ(uhmm_simdev_check_exclusive(dev0, p, XN), -EPERM);
	CHECK_EQ(dev_write(dev0, p, 0, XN, 51, &st), 0);
	CHECK_EQ(mprotect(p, XN * page_size, PROT_READ), 0);
	/* The PROTECTION invalidation took the device's mapping away. */
	CHECK_EQ(uhmm_simdev_check_exclusive(dev0, p, XN), 0);
	CHECK_EQ(bad_page(p, 0, XN, 51), -1);
	CHECK_EQ(dev_write(dev0, p, 0, XN, 52, &st), -EPERM);
	CHECK_EQ(dev_write(dev0, p, 3, 1, 52, &st), -EPERM);
	CHECK_EQ(bad_page(p, 0, XN, 51), -1);
	buf = dev_read(dev0, p, 0, XN, &st);
	CHECK_EQ(bad_page(buf, 0, XN, 51), -1);
	free(buf);
	CHECK_EQ(munmap(p, XN * page_size), 0);
	printf("exclusive then mprotect(PROT_READ): CPU reads the device's data, device "
	       "write -EPERM, device read ok: ok\n");
}

/* Pages [0, XN/2) hold seed 61 (device writes), the rest seed 60. */
static int child_excl(void *arg)
{
	char *p = arg;

	CCHECK(bad_page(p, 0, XN / 2, 61) == -1, "child: device-written pages");
	CCHECK(bad_page(p, XN / 2, XN / 2, 60) == -1, "child: other pages");
	fill(p, 0, XN, 62);
	CCHECK(bad_page(p, 0, XN, 62) == -1, "child: its own copy");
	return 0;
}

static void test_exclusive_fork(void)
{
	char *p = map_anon(XN * page_size, PROT_READ | PROT_WRITE);
	struct uhmm_simdev_stats st = { 0 };
	char *buf;

	fill(p, 0, XN, 60);
	CHECK_EQ(uhmm_simdev_exclusive(dev0, p, XN, &st), 0);
	CHECK_EQ(dev_write(dev0, p, 0, XN / 2, 61, &st), 0);
	CHECK_EQ(st.faults, 0);
	CHECK_EQ(uhmm_simdev_check_exclusive(dev0, p, XN), -EPERM);
	CHECK_EQ(run_child(child_excl, p), 0);
	/* fork revoked the device's exclusive access (FORK invalidation). */
	CHECK_EQ(uhmm_simdev_check_exclusive(dev0, p, XN), 0);
	for (size_t i = 0; i < XN; i++)
		CHECK(!(pstate(PG(p, i)) & UHMM_PS_DEVICE_EXCLUSIVE), "page %zu home", i);
	CHECK_EQ(bad_page(p, 0, XN / 2, 61), -1);
	CHECK_EQ(bad_page(p, XN / 2, XN / 2, 60), -1);
	buf = dev_read(dev0, p, 0, XN, &st);
	CHECK_EQ(bad_page(buf, 0, XN / 2, 61), -1);
	CHECK_EQ(bad_page(buf, XN / 2, XN / 2, 60), -1);
	free(buf);
	CHECK_EQ(munmap(p, XN * page_size), 0);
	printf("exclusive then fork: the child read the device's data and wrote its own "
	       "copy; the parent's data unchanged, exclusivity revoked: ok\n");
}

/* ---- 7: copy-on-write of device-resident pages across fork ------------------ */

#define FN 8

struct pipes {
	int to_child[2], from_child[2];
};

static void open_pipes(struct pipes *pp)
{
	CHECK_EQ(pipe(pp->to_child), 0);
	CHECK_EQ(pipe(pp->from_child), 0);
}

static void child_ends(struct pipes *pp)
{
	close(pp->to_child[1]);
	close(pp->from_child[0]);
}

static void parent_ends(struct pipes *pp)
{
	close(pp->to_child[0]);
	close(pp->from_child[1]);
}

static void close_parent(struct pipes *pp)
{
	close(pp->to_child[1]);
	close(pp->from_child[0]);
}

static int cow_child(char *p, struct pipes *pp)
{
	CCHECK(xread(pp->to_child[0]) == 'g', "child: no go");
	CCHECK(bad_page(p, 0, FN, 70) == -1, "child: the device-resident data");
	fill(p, 0, FN, 71);
	CCHECK(bad_page(p, 0, FN, 71) == -1, "child: its own writes");
	xwrite(pp->from_child[1], 'a');
	CCHECK(xread(pp->to_child[0]) == 'b', "child: no second go");
	CCHECK(bad_page(p, 0, FN, 71) == -1, "child: sees the parent's writes");
	return 0;
}

static void test_fork_cow(void)
{
	char *p = map_anon(FN * page_size, PROT_READ | PROT_WRITE);
	struct uhmm_simdev_stats st = { 0 };
	struct pipes pp;
	uint8_t s[FN];
	char *buf;
	pid_t pid;

	fill(p, 0, FN, 70);
	CHECK_EQ(uhmm_simdev_migrate_to_dev(dev0, p, FN, &st), 0);
	CHECK_EQ(st.cpages, FN);
	CHECK_EQ(uhmm_simdev_used_pages(dev0), FN);
	snapshot(dev0, p, FN, s);
	all_bytes("on device before fork", s, FN, P_LOCAL | P_WRITE);
	open_pipes(&pp);
	pid = fork();
	CHECK(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		child_ends(&pp);
		_exit(cow_child(p, &pp));
	}
	parent_ends(&pp);
	/* fork brought the device's pages home: now shared copy-on-write. */
	CHECK_EQ(uhmm_simdev_used_pages(dev0), 0);
	snapshot(dev0, p, FN, s);
	all_bytes("shared copy-on-write after fork", s, FN, P_READ);
	buf = dev_read(dev0, p, 0, FN, &st);
	CHECK_EQ(bad_page(buf, 0, FN, 70), -1);
	free(buf);
	xwrite(pp.to_child[1], 'g');
	if (xread(pp.from_child[0]) != 'a')
		wait_child(pid);
	/* The child's writes went to its own copy. */
	CHECK_EQ(bad_page(p, 0, FN, 70), -1);
	buf = dev_read(dev0, p, 0, FN, &st);
	CHECK_EQ(bad_page(buf, 0, FN, 70), -1);
	free(buf);
	fill(p, 0, FN, 72);
	snapshot(dev0, p, FN, s);
	all_bytes("written by the parent after fork", s, FN, P_WRITE);
	xwrite(pp.to_child[1], 'b');
	wait_child(pid);
	close_parent(&pp);
	CHECK_EQ(bad_page(p, 0, FN, 72), -1);
	CHECK_EQ(uhmm_simdev_migrate_to_dev(dev0, p, FN, &st), 0);
	CHECK_EQ(st.cpages, FN);
	buf = dev_read(dev0, p, 0, FN, &st);
	CHECK_EQ(bad_page(buf, 0, FN, 72), -1);
	free(buf);
	CHECK_EQ(munmap(p, FN * page_size), 0);
	CHECK_EQ(uhmm_simdev_used_pages(dev0), 0);
	printf("copy-on-write of device-resident pages across fork: the child saw the "
	       "data and wrote its own copy, the parent's data unchanged (READ while "
	       "shared), the parent's later writes unseen by the child: ok\n");
}

/* ---- 8: two processes, each with its own device ---------------------------- */

static int two_child(char *p, struct pipes *pp)
{
	struct uhmm_simdev_stats st = { 0 };
	struct uhmm_simdev *cd = NULL;
	struct uhmm_mm *cmm = NULL;
	uint8_t s[FN];
	char *buf;
	int ret;

	CCHECK(xread(pp->to_child[0]) == 'g', "child: no go");
	CCHECK(bad_page(p, 0, FN, 80) == -1, "child: its copy");
	if (!child_threads_ok) {
		/* No context in the child under TSan: CPU copy only. */
		fill(p, 0, FN, 82);
		xwrite(pp->from_child[1], 'a');
		CCHECK(xread(pp->to_child[0]) == 'b', "child: no second go");
		CCHECK(bad_page(p, 0, FN, 82) == -1, "child: its writes");
		return 0;
	}
	ret = uhmm_simdev_create(NULL, &cd);
	CCHECK(ret == 0, "child: simdev_create: %d", ret);
	ret = uhmm_mm_get(&cmm);
	CCHECK(ret == 0, "child: mm_get: %d", ret);
	ret = uhmm_simdev_migrate_to_dev(cd, p, FN, &st);
	CCHECK(ret == 0 && st.cpages == FN, "child: migrate: %d, %llu pages", ret,
	       (unsigned long long)st.cpages);
	CCHECK(uhmm_simdev_used_pages(cd) == FN, "child: used %zu", uhmm_simdev_used_pages(cd));
	ret = uhmm_simdev_snapshot(cd, p, FN, s, &st);
	CCHECK(ret == 0, "child: snapshot: %d", ret);
	for (size_t i = 0; i < FN; i++) {
		uint32_t ps = 0;

		CCHECK(s[i] == (P_LOCAL | P_WRITE), "child: snapshot page %zu: %#x", i, s[i]);
		CCHECK(uhmm_page_state(cmm, (uintptr_t)PG(p, i), 1, &ps) == 0 &&
		       (ps & UHMM_PS_DEVICE_PRIVATE), "child: page %zu state %#x", i, ps);
	}
	buf = malloc(FN * page_size);
	CCHECK(buf, "malloc");
	CCHECK(uhmm_simdev_read(cd, p, FN, buf, &st) == 0, "child: device read");
	CCHECK(bad_page(buf, 0, FN, 80) == -1, "child: device read of its copy");
	fill(buf, 0, FN, 81);
	CCHECK(uhmm_simdev_write(cd, p, FN, buf, &st) == 0, "child: device write");
	CCHECK(uhmm_simdev_used_pages(cd) == FN, "child: used %zu", uhmm_simdev_used_pages(cd));
	xwrite(pp->from_child[1], 'a');
	CCHECK(xread(pp->to_child[0]) == 'b', "child: no second go");
	memset(buf, 0, FN * page_size);
	CCHECK(uhmm_simdev_read(cd, p, FN, buf, &st) == 0, "child: device read");
	CCHECK(bad_page(buf, 0, FN, 81) == -1, "child: its device data");
	free(buf);
	CCHECK(uhmm_simdev_migrate_to_sys(cd, p, FN, &st) == 0 && st.cpages == FN,
	       "child: migrate back");
	CCHECK(bad_page(p, 0, FN, 81) == -1, "child: its data back home");
	xwrite(pp->from_child[1], 'c');
	/* The child's own teardown: device, then its context. */
	uhmm_simdev_destroy(cd);
	uhmm_mm_put(cmm);
	return 0;
}

static void test_two_processes(void)
{
	char *p = map_anon(FN * page_size, PROT_READ | PROT_WRITE);
	struct uhmm_simdev_stats st = { 0 };
	struct pipes pp;
	uint8_t s[FN];
	char *buf;
	pid_t pid;

	fill(p, 0, FN, 80);
	open_pipes(&pp);
	pid = fork();
	CHECK(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		child_ends(&pp);
		_exit(two_child(p, &pp));
	}
	parent_ends(&pp);
	/* The parent's own device state: the first half, rewritten, on device 0. */
	fill(p, 0, FN / 2, 83);
	CHECK_EQ(uhmm_simdev_migrate_to_dev(dev0, p, FN / 2, &st), 0);
	CHECK_EQ(st.cpages, FN / 2);
	xwrite(pp.to_child[1], 'g');
	if (xread(pp.from_child[0]) != 'a')
		wait_child(pid);
	/* The child migrated its copy to its device and wrote it there. */
	CHECK_EQ(uhmm_simdev_used_pages(dev0), FN / 2);
	CHECK_EQ(uhmm_simdev_used_pages(dev1), 0);
	snapshot(dev0, p, FN / 2, s);
	all_bytes("parent's device pages", s, FN / 2, P_LOCAL | P_WRITE);
	snapshot(dev1, p, FN / 2, s);
	all_bytes("parent's device-0 pages seen by device 1", s, FN / 2, P_NONE);
	buf = dev_read(dev0, p, 0, FN / 2, &st);
	CHECK_EQ(bad_page(buf, 0, FN / 2, 83), -1);
	free(buf);
	CHECK_EQ(bad_page(p, FN / 2, FN / 2, 80), -1);
	CHECK_EQ(uhmm_simdev_used_pages(dev0), FN / 2);
	xwrite(pp.to_child[1], 'b');
	if (child_threads_ok && xread(pp.from_child[0]) == 'c')
		printf("two processes: the child's checks passed; waiting for it to destroy "
		       "its simdev and tear its context down\n");
	wait_child(pid);
	close_parent(&pp);
	CHECK_EQ(uhmm_simdev_used_pages(dev0), FN / 2);
	CHECK_EQ(bad_page(p, 0, FN / 2, 83), -1);
	CHECK_EQ(bad_page(p, FN / 2, FN / 2, 80), -1);
	CHECK_EQ(uhmm_simdev_used_pages(dev0), 0);
	CHECK_EQ(munmap(p, FN * page_size), 0);
	if (child_threads_ok)
		printf("two processes: the child's own simdev held its copy (snapshot "
		       "DEV_PRIVATE_LOCAL|WRITE, device writes); the parent's data and "
		       "device 0 state unaffected: ok\n");
	else
		printf("two processes: the parent's data and device state unaffected by "
		       "the child's writes: ok (the child's own simdev not created: "
		       "ThreadSanitizer cannot start threads after a multi-threaded fork)\n");
}

static void start(void)
{
	signal(SIGPIPE, SIG_IGN);	/* a dead child fails a CHECK, not the process */
	uhmm_sysinfo(&si);
	mm = test_mm();
	CHECK_EQ(uhmm_simdev_create(NULL, &dev0), 0);
	CHECK_EQ(uhmm_simdev_create(NULL, &dev1), 0);
}

static int finish(void)
{
	/* Teardown with the devices' notifiers gone: must return. */
	uhmm_simdev_destroy(dev1);
	uhmm_simdev_destroy(dev0);
	uhmm_mm_put(mm);
	printf("teardown: both devices destroyed, context dropped: ok\n");
	return 0;
}

static const struct test_case cases[] = {
	TEST_CASE(test_snapshot_mixed),
	TEST_CASE(test_snapshot_no_fault),
	TEST_CASE(test_snapshot_thp),
	TEST_CASE(test_exclusive),
	TEST_CASE(test_exclusive_mprotect),
	TEST_CASE(test_exclusive_fork),
	TEST_CASE(test_fork_cow),
	TEST_CASE(test_two_processes),
};

TEST_MAIN("test_simdev_snapshot", start, finish)
