/* SPDX-License-Identifier: MIT */
/*
 * Shared helpers of the test programs: the start of every program
 * (test_main(): named cases, the variant probe), checks, skips, memory
 * helpers, and the test device (testdev/tdev.h) with checks around it.
 */
#ifndef UHMM_TEST_COMMON_H
#define UHMM_TEST_COMMON_H

#define _GNU_SOURCE
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <uhmm/uhmm.h>

#include "cases.h"
#include "tdev.h"	/* testdev/: the device the tests migrate to */

/* PAGEMAP_SCAN and pagemap bits where the system headers predate them. */
#include "../src/compat.h"

#define TEST_SKIP 77

static const char *test_name = "test";

#define CHECK(cond, ...)                                                      \
	do {                                                                  \
		if (!(cond)) {                                                \
			fprintf(stderr, "%s: FAIL %s:%d: %s: ", test_name,    \
				__FILE__, __LINE__, #cond);                   \
			fprintf(stderr, __VA_ARGS__);                         \
			fprintf(stderr, " [last uhmm error: %s]\n",           \
				uhmm_last_error());                           \
			exit(1);                                              \
		}                                                             \
	} while (0)

#define CHECK_EQ(a, b)                                                        \
	CHECK((long long)(a) == (long long)(b), "%s = %lld, expected %s = %lld", \
	      #a, (long long)(a), #b, (long long)(b))

/* A check passed: "NAME: ok: what" on stdout. */
#define OK(...)                                                               \
	do {                                                                  \
		printf("%s: ok: ", test_name);                                \
		printf(__VA_ARGS__);                                          \
		printf("\n");                                                 \
	} while (0)

#define SKIP(...)                                                             \
	do {                                                                  \
		printf("%s: SKIP: ", test_name);                              \
		printf(__VA_ARGS__);                                          \
		printf("\n");                                                 \
		exit(TEST_SKIP);                                              \
	} while (0)

static size_t page_size;

/*
 * What this machine does, found at run time, never assumed: machines of
 * one kind differ (the shared zero page, THP mode, free hugetlb pages,
 * privileges, userfaultfd mode and features).  Every test prints it once
 * ("variant: ...") and derives its machine-dependent expectations from it.
 *
 * @zero_page: observed on a freshly read page by the test itself
 *	(PAGEMAP_SCAN PAGE_IS_PFNZERO, else root's pagemap PFN and
 *	/proc/kpageflags), whatever UHMM_DISABLE says: 1 a read fault maps
 *	the shared zero page, 0 it installs a private page, -1 cannot be told
 * @lib_zero_page: what uhmm's probe says (struct uhmm_sysinfo.zero_page;
 *	-1 when uhmm itself cannot tell, e.g. UHMM_DISABLE=all and not root)
 * @thp: transparent_hugepage/enabled: "always", "madvise", "never" or
 *	"unavailable"
 * @hugetlb_total, @hugetlb_free: /proc/sys/vm/nr_hugepages and the
 *	default size's free_hugepages (-1 if unreadable)
 * @root: effective uid 0
 * @uffd_mode: UHMM_UFFD_FULL, _USER_ONLY or _NONE
 * @uffd_features: UFFD_FEATURE_* the kernel offers
 * @active: UHMM_FEAT_* uhmm uses (features minus UHMM_DISABLE)
 */
struct test_variant {
	int zero_page;
	int lib_zero_page;
	char thp[32];
	long hugetlb_total, hugetlb_free;
	bool root;
	int uffd_mode;
	uint64_t uffd_features;
	unsigned int active;
};

static struct test_variant variant;

/*
 * Is the page at @p the shared zero page? 1 yes, 0 no, -1 cannot be told
 * (no PAGEMAP_SCAN and not root).  Asked of the kernel directly, so the
 * answer does not depend on UHMM_DISABLE.
 */
static inline int page_is_zero_page(const void *p)
{
	uintptr_t a = (uintptr_t)p & ~(uintptr_t)(page_size - 1);
	struct page_region r = { 0 };
	struct pm_scan_arg arg = {
		.size = sizeof(arg),
		.start = a,
		.end = a + page_size,
		.vec = (uintptr_t)&r,
		.vec_len = 1,
		.category_anyof_mask = PAGE_IS_PFNZERO | PAGE_IS_PRESENT,
		.return_mask = PAGE_IS_PFNZERO | PAGE_IS_PRESENT,
	};
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	int ret = -1;
	long n;

	if (fd < 0)
		return -1;
	n = ioctl(fd, PAGEMAP_SCAN, &arg);
	if (n >= 0) {
		ret = n == 1 && (r.categories & PAGE_IS_PFNZERO) ? 1 : 0;
	} else {
		uint64_t e = 0, kf = 0;
		int kfd;

		if (pread(fd, &e, 8, (off_t)(a / page_size * 8)) == 8 && (e & PM_PRESENT) &&
		    (e & PM_PFN_MASK) && (kfd = open("/proc/kpageflags", O_RDONLY | O_CLOEXEC)) >= 0) {
			if (pread(kfd, &kf, 8, (off_t)((e & PM_PFN_MASK) * 8)) == 8)
				ret = (int)((kf >> KPF_ZERO_PAGE_BIT) & 1);
			close(kfd);
		}
	}
	close(fd);
	return ret;
}

static inline long read_long_file(const char *path)
{
	FILE *f = fopen(path, "re");
	long v = -1;

	if (!f)
		return -1;
	if (fscanf(f, "%ld", &v) != 1)
		v = -1;
	fclose(f);
	return v;
}

static inline void probe_variant(void)
{
	struct uhmm_sysinfo si;
	char path[128];
	long hp_kb = -1;
	FILE *f;
	volatile char *p;

	uhmm_sysinfo(&si);
	variant.lib_zero_page = si.zero_page;
	snprintf(variant.thp, sizeof(variant.thp), "%s", si.thp);
	variant.root = geteuid() == 0;
	variant.uffd_mode = (int)si.uffd_mode;
	variant.uffd_features = si.uffd_kernel_features;
	variant.active = si.active;

	/* A fresh page, read once, away from any huge zero page. */
	p = mmap(NULL, page_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	variant.zero_page = -1;
	if ((void *)p != MAP_FAILED) {
		madvise((void *)p, page_size, MADV_NOHUGEPAGE);
		(void)p[0];
		variant.zero_page = page_is_zero_page((const void *)p);
		munmap((void *)p, page_size);
	}
	if (variant.zero_page < 0)
		variant.zero_page = si.zero_page;

	variant.hugetlb_total = read_long_file("/proc/sys/vm/nr_hugepages");
	variant.hugetlb_free = -1;
	f = fopen("/proc/meminfo", "re");
	if (f) {
		char line[128];

		while (fgets(line, sizeof(line), f))
			if (sscanf(line, "Hugepagesize: %ld kB", &hp_kb) == 1)
				break;
		fclose(f);
	}
	if (hp_kb > 0) {
		snprintf(path, sizeof(path),
			 "/sys/kernel/mm/hugepages/hugepages-%ldkB/free_hugepages", hp_kb);
		variant.hugetlb_free = read_long_file(path);
	}
}

static inline void print_variant(const char *name)
{
	printf("%s: variant: zero page %s, THP %s, hugetlb %ld free of %ld, %s, uffd %s, "
	       "uffd features %#llx, uhmm active %#x (uhmm sees zero page: %d)\n", name,
	       variant.zero_page == 1 ? "yes" : variant.zero_page == 0 ? "no" : "unknown",
	       variant.thp, variant.hugetlb_free, variant.hugetlb_total,
	       variant.root ? "root" : "not root",
	       variant.uffd_mode == UHMM_UFFD_FULL ? "full" :
	       variant.uffd_mode == UHMM_UFFD_USER_ONLY ? "user-mode-only" : "none",
	       (unsigned long long)variant.uffd_features, variant.active,
	       variant.lib_zero_page);
}

static inline void test_init(const char *name)
{
	struct uhmm_sysinfo si;

	test_name = name;
	page_size = (size_t)sysconf(_SC_PAGESIZE);
	setvbuf(stdout, NULL, _IONBF, 0);
	uhmm_sysinfo(&si);
	probe_variant();
	print_variant(name);
	if (si.uffd_mode == UHMM_UFFD_NONE)
		SKIP("no userfaultfd here: %s", si.advice);
}

/* THP can be had on request here (mode "always" or "madvise"). */
static inline bool thp_enabled(void)
{
	return !strcmp(variant.thp, "always") || !strcmp(variant.thp, "madvise");
}

static inline struct uhmm_mm *test_mm(void)
{
	struct uhmm_mm *mm = NULL;
	int ret = uhmm_mm_get(&mm);

	CHECK(ret == 0 && mm, "uhmm_mm_get: %d", ret);
	return mm;
}

static inline void *map_anon(size_t len, int prot)
{
	void *p = mmap(NULL, len, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	CHECK(p != MAP_FAILED, "mmap %zu: %s", len, strerror(errno));
	return p;
}

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

/*
 * @len bytes for a test that punches holes into them (munmap of a page, then
 * uhmm must refuse the range or report the page unmapped).  A hole in memory
 * from map_anon() is a free gap where the kernel puts the next mapping made
 * without an address, whoever makes it: a sanitizer runtime, libc, uhmm's
 * service threads.  Such a mapping turns the hole into mapped memory (the
 * test then checks something else than it claims) and the test's own
 * munmap of the whole range unmaps it under its owner.  The kernel places
 * such mappings in the highest free gap that fits below the mmap base (or,
 * in the legacy layout, the lowest one above a third of the address
 * space), so here the memory lies far below both, in a range no runtime
 * uses: a hole there stays a hole.  Under ThreadSanitizer, which
 * allows application mappings only in its own ranges, in its low
 * application range.  Only if every candidate address is taken, anywhere
 * (a test's check that its hole stayed a hole then catches a refill).
 */
static inline void *map_far(size_t len, int prot)
{
#if defined(__SANITIZE_THREAD__)
	static uintptr_t next = (uintptr_t)0x004000000000ull, end = (uintptr_t)0x007f00000000ull;
#else
	static uintptr_t next = (uintptr_t)0x200000000000ull, end = (uintptr_t)0x280000000000ull;
#endif
	void *p = MAP_FAILED;

	if (sizeof(void *) == 8) {
		while (p == MAP_FAILED && next + len <= end) {
			p = mmap((void *)next, len, prot,
				 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
			if (p != MAP_FAILED && p != (void *)next) {
				/* An old kernel that took the address as a hint only. */
				munmap(p, len);
				p = MAP_FAILED;
			}
			next += ((len >> 30) + 1) << 30;
		}
	}
	return p != MAP_FAILED ? p : map_anon(len, prot);
}

/* Nothing at all is mapped in [p, p + len) (mincore: ENOMEM on unmapped pages). */
static inline bool range_is_hole(const void *p, size_t len)
{
	unsigned char v;

	for (size_t off = 0; off < len; off += page_size)
		if (mincore((char *)p + off, page_size, &v) == 0 || errno != ENOMEM)
			return false;
	return true;
}

/* A 2 MiB-aligned region of @len bytes (len a multiple of 2 MiB). */
static inline void *map_aligned_2m(size_t len, int prot)
{
	size_t huge = 2u << 20;
	char *p = mmap(NULL, len + huge, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *a;

	CHECK(p != MAP_FAILED, "mmap: %s", strerror(errno));
	a = (char *)(((uintptr_t)p + huge - 1) & ~(uintptr_t)(huge - 1));
	if (a > p)
		munmap(p, (size_t)(a - p));
	if (a + len < p + len + huge)
		munmap(a + len, (size_t)(p + len + huge - (a + len)));
	return a;
}

/*
 * AnonHugePages (kB) of the mapping holding @addr, from /proc/self/smaps,
 * and its bounds in *@ms, *@me (either may be NULL); -1 if none holds it.
 */
static inline long smaps_anon_huge_kb(const void *addr, uintptr_t *ms, uintptr_t *me)
{
	FILE *f = fopen("/proc/self/smaps", "re");
	char line[512];
	bool in = false;
	long kb = -1;

	CHECK(f, "open /proc/self/smaps: %s", strerror(errno));
	while (fgets(line, sizeof(line), f)) {
		unsigned long s, e;

		/* A mapping's first line: "start-end perms ..." (no "Name:"). */
		if (sscanf(line, "%lx-%lx ", &s, &e) == 2 && line[strcspn(line, " ") - 1] != ':') {
			if (in)
				break;
			in = s <= (uintptr_t)addr && (uintptr_t)addr < e;
			if (in && ms)
				*ms = s;
			if (in && me)
				*me = e;
			continue;
		}
		if (in && sscanf(line, "AnonHugePages: %ld kB", &kb) == 1)
			break;
	}
	fclose(f);
	return kb;
}

/* Run @fn in a forked child; return its exit status (or 128+signal). */
static inline int run_child(int (*fn)(void *), void *arg)
{
	pid_t pid = fork();
	int status;

	CHECK(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0)
		_exit(fn(arg));
	CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return WEXITSTATUS(status);
}

/*
 * Does a read fault of anonymous memory map the shared zero page here?
 * Observed by the test (probe_variant), else uhmm's probe.
 */
static inline bool zero_page_supported(void)
{
	return variant.zero_page == 1;
}

/* Open userfaultfds of this process (uhmm's context has one while it lives). */
static inline int count_uffds(void)
{
	DIR *dir = opendir("/proc/self/fd");
	struct dirent *de;
	int n = 0;

	CHECK(dir, "opendir /proc/self/fd");
	while ((de = readdir(dir))) {
		char path[300], target[256];
		ssize_t len;

		snprintf(path, sizeof(path), "/proc/self/fd/%s", de->d_name);
		len = readlink(path, target, sizeof(target) - 1);
		if (len <= 0)
			continue;
		target[len] = 0;
		if (strstr(target, "userfaultfd"))
			n++;
	}
	closedir(dir);
	return n;
}

/*
 * main() of a test program: run the cases argv names, or all of them, after
 * test_init(); `--list` prints their names (tests/cases.h).  @start and
 * @finish as in struct test_suite.
 */
static inline int test_main(int argc, char **argv, const char *name,
			    const struct test_case *cases, size_t nr_cases,
			    void (*start)(void), int (*finish)(void))
{
	struct test_suite s = {
		.name = name, .cases = cases, .nr_cases = nr_cases,
		.init = test_init, .start = start, .finish = finish,
	};

	test_name = name;
	return test_run(argc, argv, &s);
}

/*
 * main() of a program whose cases are in `cases[]` and that needs nothing
 * before test_main(): TEST_MAIN("test_x", start, finish).
 */
#define TEST_MAIN(name, start, finish)                                        \
	int main(int argc, char **argv)                                       \
	{                                                                     \
		return test_main(argc, argv, name, TEST_CASES(cases), start,  \
				 finish);                                     \
	}

/*
 * A case (named case_FN) that takes the program's context, the static
 * `mm`, first if it has none: for programs whose first cases must run
 * without one (test_mm() then happens where the cases run in order).
 */
#define MM_CASE(fn)                                                           \
	static void case_##fn(void)                                           \
	{                                                                     \
		if (!mm)                                                      \
			mm = test_mm();                                       \
		fn();                                                         \
	}

/*
 * UHMM_TEST_COLD=1: a case that warms up first, to start from the state it
 * had when the program ran every case in order, runs without it (where
 * that difference showed a bug, the case's comment says which).
 */
static inline bool test_cold(void)
{
	const char *e = getenv("UHMM_TEST_COLD");

	return e && *e && strcmp(e, "0");
}

/* ---- the test device (testdev/tdev.h), with its failures checked ---- */

static inline struct tdev *tdev_create_ops(struct uhmm_mm *mm, size_t nr_pages,
					   size_t fault_around,
					   const struct uhmm_devmem_ops *ops)
{
	struct tdev *d = NULL;
	int ret = tdev_open(mm, nr_pages, fault_around, ops, 0, &d);

	CHECK(ret == 0, "tdev_open(%zu pages): %d", nr_pages, ret);
	return d;
}

static inline struct tdev *tdev_create(struct uhmm_mm *mm, size_t nr_pages,
				       size_t fault_around)
{
	return tdev_create_ops(mm, nr_pages, fault_around, NULL);
}

/* Remove the pool; every device page must have gone home (been freed). */
static inline void tdev_destroy(struct tdev *d)
{
	int ret = tdev_close(d);

	CHECK(ret != -ENOTEMPTY, "device pages still allocated after uhmm_devmem_remove");
	CHECK_EQ(ret, 0);
}

/* Fill [p, p + n pages) with a pattern derived from @seed and the offset. */
static inline void fill_pattern(void *p, size_t n, uint32_t seed)
{
	uint32_t *w = p;

	for (size_t i = 0; i < n * page_size / 4; i++)
		w[i] = seed * 2654435761u + (uint32_t)i;
}

/* Index of the first wrong 32-bit word, or -1. */
static inline long check_pattern(const void *p, size_t n, uint32_t seed)
{
	const uint32_t *w = p;

	for (size_t i = 0; i < n * page_size / 4; i++)
		if (w[i] != seed * 2654435761u + (uint32_t)i)
			return (long)i;
	return -1;
}

static inline uint32_t page_state_of(struct uhmm_mm *mm, const void *p)
{
	uint32_t st = 0;

	CHECK_EQ(uhmm_page_state(mm, (uintptr_t)p, 1, &st), 0);
	return st;
}

#endif
