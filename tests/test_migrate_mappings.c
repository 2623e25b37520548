// SPDX-License-Identifier: MIT
/*
 * Migration of mappings with unusual attributes, judged by what the
 * kernel's migrate_vma does (mm/migrate_device.c):
 *
 * - mlocked memory migrates (mlock pins pages in RAM, not in place; the
 *   collect step has no VM_LOCKED check), after mlockall(MCL_CURRENT |
 *   MCL_FUTURE) as after mlock() of one range, both ways, data intact;
 * - a MAP_PRIVATE mapping of a memfd (tmpfs) file: uhmm migrates no page
 *   of it, not even the written (copy-on-write, anonymous) ones the kernel
 *   would migrate (docs/LIMITATIONS.md says so): -ENOENT, data intact;
 * - a kernel-mode read of device-resident memory through
 *   process_vm_readv() (what docs/LIMITATIONS.md advises instead of
 *   /proc/self/mem) gets the data, with a full-mode userfaultfd.
 *
 * Each part runs in a child: mlockall() is for the whole process.
 */
#include "common.h"

#include <sys/uio.h>

#include <uhmm/simdev.h>

#define NAME "test_migrate_mappings"
#define NPAGES 64

static void fill(char *p, size_t n, unsigned int seed)
{
	for (size_t i = 0; i < n * page_size; i++)
		p[i] = (char)(seed + i * 7 + (i >> 12));
}

static long first_bad(const char *p, size_t n, unsigned int seed)
{
	for (size_t i = 0; i < n * page_size; i++)
		if (p[i] != (char)(seed + i * 7 + (i >> 12)))
			return (long)i;
	return -1;
}

static size_t on_device(struct uhmm_simdev *dev, const void *p, size_t n)
{
	uint8_t prot[NPAGES];
	size_t k = 0;

	CHECK_EQ(uhmm_simdev_snapshot(dev, p, n, prot, NULL), 0);
	for (size_t i = 0; i < n; i++)
		k += prot[i] != UHMM_SIMDEV_PROT_ERROR &&
		     (prot[i] & 0xF0) == UHMM_SIMDEV_PROT_DEV_PRIVATE_LOCAL;
	return k;
}

/* mlockall() or mlock() of the buffer, then both ways. */
static int locked_part(void *arg)
{
	bool all = arg != NULL;
	struct uhmm_simdev_config cfg = { .capacity_pages = 256, .threads = 1 };
	struct uhmm_simdev_stats st = { 0 };
	struct uhmm_simdev *dev;
	char *buf;

	if (all && mlockall(MCL_CURRENT | MCL_FUTURE)) {
		printf("%s: mlockall: %s: part skipped\n", NAME, strerror(errno));
		return 0;
	}
	CHECK_EQ(uhmm_simdev_create(&cfg, &dev), 0);
	buf = map_anon(NPAGES * page_size, PROT_READ | PROT_WRITE);
	fill(buf, NPAGES, 11);
	if (!all)
		CHECK(mlock(buf, NPAGES * page_size) == 0, "mlock: %s", strerror(errno));
	CHECK_EQ(uhmm_simdev_migrate_to_dev(dev, buf, NPAGES, &st), 0);
	CHECK_EQ(st.cpages, NPAGES);
	CHECK_EQ(on_device(dev, buf, NPAGES), NPAGES);
	/* Back by CPU faults. */
	CHECK_EQ(first_bad(buf, NPAGES, 11), -1);
	fill(buf, NPAGES, 12);
	/* And by an explicit migration. */
	CHECK_EQ(uhmm_simdev_migrate_to_dev(dev, buf, NPAGES, &st), 0);
	CHECK_EQ(st.cpages, NPAGES);
	CHECK_EQ(uhmm_simdev_migrate_to_sys(dev, buf, NPAGES, &st), 0);
	CHECK_EQ(st.cpages, NPAGES);
	CHECK_EQ(on_device(dev, buf, NPAGES), 0);
	CHECK_EQ(first_bad(buf, NPAGES, 12), -1);
	/* Still locked: every page resident. */
	{
		unsigned char v[NPAGES];

		CHECK(mincore(buf, NPAGES * page_size, v) == 0, "mincore");
		for (size_t i = 0; i < NPAGES; i++)
			CHECK(v[i] & 1, "page %zu not resident after coming back", i);
	}
	uhmm_simdev_destroy(dev);
	return 0;
}

/* A private mapping of a memfd: documented as not migrated at all. */
static int memfd_part(void *arg)
{
	struct uhmm_simdev_config cfg = { .capacity_pages = 256, .threads = 1 };
	struct uhmm_simdev_stats st = { 0 };
	struct uhmm_simdev *dev;
	char *file = map_anon(NPAGES * page_size, PROT_READ | PROT_WRITE);
	int fd = memfd_create("uhmm-test", MFD_CLOEXEC);
	char *p;

	(void)arg;
	CHECK(fd >= 0, "memfd_create: %s", strerror(errno));
	fill(file, NPAGES, 21);
	CHECK(write(fd, file, NPAGES * page_size) == (ssize_t)(NPAGES * page_size), "write");
	p = mmap(NULL, NPAGES * page_size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	CHECK(p != MAP_FAILED, "mmap: %s", strerror(errno));
	fill(p, NPAGES / 2, 22);	/* the first half copied on write */
	CHECK_EQ(uhmm_simdev_create(&cfg, &dev), 0);
	CHECK_EQ(uhmm_simdev_migrate_to_dev(dev, p, NPAGES, &st), -ENOENT);
	CHECK_EQ(on_device(dev, p, NPAGES), 0);
	CHECK_EQ(first_bad(p, NPAGES / 2, 22), -1);
	CHECK(!memcmp(p + NPAGES / 2 * page_size, file + NPAGES / 2 * page_size,
		      NPAGES / 2 * page_size), "the file's pages changed");
	uhmm_simdev_destroy(dev);
	return 0;
}

/* process_vm_readv() of device-resident pages waits for them (full mode). */
static int kernel_read_part(void *arg)
{
	struct uhmm_simdev_config cfg = { .capacity_pages = 256, .threads = 1 };
	struct uhmm_simdev_stats st = { 0 };
	struct uhmm_sysinfo si;
	struct uhmm_simdev *dev;
	char *buf = map_anon(NPAGES * page_size, PROT_READ | PROT_WRITE);
	char *out = map_anon(NPAGES * page_size, PROT_READ | PROT_WRITE);
	struct iovec local = { out, NPAGES * page_size }, remote = { buf, NPAGES * page_size };

	(void)arg;
	uhmm_sysinfo(&si);
	if (si.uffd_mode != UHMM_UFFD_FULL)
		return TEST_SKIP;	/* user-mode-only userfaultfd */
	fill(buf, NPAGES, 31);
	CHECK_EQ(uhmm_simdev_create(&cfg, &dev), 0);
	CHECK_EQ(uhmm_simdev_migrate_to_dev(dev, buf, NPAGES, &st), 0);
	CHECK_EQ(on_device(dev, buf, NPAGES), NPAGES);
	CHECK(process_vm_readv(getpid(), &local, 1, &remote, 1, 0) ==
	      (ssize_t)(NPAGES * page_size), "process_vm_readv: %s", strerror(errno));
	CHECK_EQ(first_bad(out, NPAGES, 31), -1);
	uhmm_simdev_destroy(dev);
	return 0;
}

static void test_mlockall(void)
{
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
	/* mlockall(MCL_CURRENT) would populate the sanitizer's shadow. */
	SKIP_CASE("%s: mlockall part skipped under a sanitizer", NAME);
#else
	CHECK_EQ(run_child(locked_part, (void *)1), 0);
#endif
}

static void test_mlock(void)
{
	CHECK_EQ(run_child(locked_part, NULL), 0);
}

static void test_memfd_private(void)
{
	CHECK_EQ(run_child(memfd_part, NULL), 0);
}

static void test_kernel_read(void)
{
	int st = run_child(kernel_read_part, NULL);

	if (st == TEST_SKIP)
		SKIP_CASE("%s: user-mode-only userfaultfd: kernel-read part skipped", NAME);
	CHECK_EQ(st, 0);
}

static const struct test_case cases[] = {
	TEST_CASE(test_mlockall),
	TEST_CASE(test_mlock),
	TEST_CASE(test_memfd_private),
	TEST_CASE(test_kernel_read),
};

TEST_MAIN(NAME, NULL, NULL)
