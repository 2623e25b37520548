// SPDX-License-Identifier: MIT
/*
 * Run-time detection of what the kernel offers, done once per process, and
 * the UHMM_DISABLE switch that forces the fallback paths.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "base.h"
#include "features_priv.h"
#include "log.h"
#include "sys.h"

size_t uhmm__page_size = 4096;
unsigned int uhmm__page_shift = 12;

static struct uhmm_sysinfo sysinfo;
static pthread_once_t probe_once = PTHREAD_ONCE_INIT;
/* Which way of opening a userfaultfd worked in the probe. */
static enum { OPEN_NONE, OPEN_SYSCALL, OPEN_DEV, OPEN_USER_ONLY } open_way;

static const char *const feat_names[UHMM_FEAT_COUNT] = {
	"move", "pagemap_scan", "wp_unpopulated", "madv_populate",
	"procmap_query", "uffd_wp",
};

const char *uhmm_feature_name(unsigned int feature)
{
	for (unsigned int i = 0; i < UHMM_FEAT_COUNT; i++)
		if (feature == (1u << i))
			return feat_names[i];
	uhmm__err(EINVAL, "uhmm_feature_name: %#x is not a single UHMM_FEAT_* bit", feature);
	return "unknown";
}

/*
 * The worker reads the userfaultfd itself when it is idle (service.c);
 * UHMM_DISABLE=worker_read (or "all") leaves all reading to the reader.
 */
bool uhmm__worker_reads = true;

/*
 * UHMM_DISABLE=name[,name...] or "all"; "uffd_full" forces user-mode-only;
 * "wpmarker" is another name for "wp_unpopulated" (wpmarker.c);
 * "worker_read" is no kernel feature but a path of uhmm's own (above).
 */
static unsigned int parse_disable(bool *no_full)
{
	const char *env = getenv("UHMM_DISABLE");
	unsigned int mask = 0;
	char buf[256], *save = NULL, *tok;

	*no_full = false;
	if (!env || !*env)
		return 0;
	snprintf(buf, sizeof(buf), "%s", env);
	for (tok = strtok_r(buf, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
		bool found = false;

		if (!strcmp(tok, "all")) {
			mask |= (1u << UHMM_FEAT_COUNT) - 1;
			uhmm__worker_reads = false;
			continue;
		}
		if (!strcmp(tok, "worker_read")) {
			uhmm__worker_reads = false;
			continue;
		}
		if (!strcmp(tok, "uffd_full")) {
			*no_full = true;
			continue;
		}
		if (!strcmp(tok, "wpmarker")) {
			/* What wp_unpopulated is used for: device pages as markers. */
			mask |= UHMM_FEAT_WP_UNPOPULATED;
			continue;
		}
		for (unsigned int i = 0; i < UHMM_FEAT_COUNT; i++) {
			if (!strcmp(tok, feat_names[i])) {
				mask |= 1u << i;
				found = true;
			}
		}
		if (!found)
			fprintf(stderr, "uhmm: UHMM_DISABLE: unknown feature '%s' ignored\n", tok);
	}
	return mask;
}

static int uffd_syscall(int flags)
{
#ifdef SYS_userfaultfd
	return (int)syscall(SYS_userfaultfd, flags);
#else
	errno = ENOSYS;
	return -1;
#endif
}

static int uffd_dev_open(int flags)
{
	int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	int fd;

	if (dev < 0)
		return -1;
	fd = ioctl(dev, USERFAULTFD_IOC_NEW, flags);
	if (fd < 0) {
		int e = errno;

		close(dev);
		errno = e;
		return -1;
	}
	close(dev);
	return fd;
}

static int uffd_open_way(int way)
{
	const int flags = O_CLOEXEC | O_NONBLOCK;

	switch (way) {
	case OPEN_SYSCALL:
		return uffd_syscall(flags);
	case OPEN_DEV:
		return uffd_dev_open(flags);
	case OPEN_USER_ONLY:
		return uffd_syscall(flags | UFFD_USER_MODE_ONLY);
	}
	errno = ENOSYS;
	return -1;
}

static void probe_uffd(bool no_full)
{
	struct uffdio_api api = { .api = UFFD_API, .features = 0 };
	int fd = -1, full_errno = 0;

	if (!no_full) {
		fd = uffd_open_way(OPEN_SYSCALL);
		if (fd >= 0) {
			open_way = OPEN_SYSCALL;
			snprintf(sysinfo.uffd_source, sizeof(sysinfo.uffd_source), "syscall");
		} else {
			full_errno = errno;
			fd = uffd_open_way(OPEN_DEV);
			if (fd >= 0) {
				open_way = OPEN_DEV;
				snprintf(sysinfo.uffd_source, sizeof(sysinfo.uffd_source),
					 "/dev/userfaultfd");
			}
		}
	} else {
		full_errno = EPERM;
	}
	if (fd < 0) {
		fd = uffd_open_way(OPEN_USER_ONLY);
		if (fd >= 0) {
			open_way = OPEN_USER_ONLY;
			snprintf(sysinfo.uffd_source, sizeof(sysinfo.uffd_source),
				 no_full ? "syscall, user-mode-only (forced)"
					 : "syscall, user-mode-only");
		} else if (!full_errno || no_full) {
			/* Forced user-mode-only: full mode was not refused, this was. */
			full_errno = errno;
		}
	}
	sysinfo.uffd_errno = full_errno;
	if (fd < 0) {
		open_way = OPEN_NONE;
		sysinfo.uffd_mode = UHMM_UFFD_NONE;
		snprintf(sysinfo.uffd_source, sizeof(sysinfo.uffd_source), "none");
		snprintf(sysinfo.advice, sizeof(sysinfo.advice),
			 "No userfaultfd could be opened (%s). uhmm needs one to catch CPU "
			 "accesses to device-resident memory. Run on Linux 5.11 or newer "
			 "with CONFIG_USERFAULTFD, outside a seccomp profile that blocks the "
			 "userfaultfd system call (for containers: allow 'userfaultfd' in the "
			 "seccomp profile). For full mode, also set "
			 "'sysctl vm.unprivileged_userfaultfd=1', give the user read/write "
			 "access to /dev/userfaultfd, or grant CAP_SYS_PTRACE.",
			 strerror(full_errno ? full_errno : ENOSYS));
		return;
	}
	sysinfo.uffd_mode = open_way == OPEN_USER_ONLY ? UHMM_UFFD_USER_ONLY : UHMM_UFFD_FULL;
	if (ioctl(fd, UFFDIO_API, &api) == 0)
		sysinfo.uffd_kernel_features = api.features;
	close(fd);
}

int uhmm__uffd_open(uint64_t *features_out)
{
	const struct uhmm_sysinfo *si = uhmm__sysinfo();
	uint64_t want = UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMOVE |
			UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_THREAD_ID;
	struct uffdio_api api = { .api = UFFD_API };
	int fd, e;

	if (si->uffd_mode == UHMM_UFFD_NONE)
		return uhmm__err(si->uffd_errno == EPERM || si->uffd_errno == EACCES ?
					 EPERM : ENOSYS,
				 "no userfaultfd available: %s", si->advice);
	if (si->active & UHMM_FEAT_MOVE)
		want |= UFFD_FEATURE_MOVE;
	if (si->active & UHMM_FEAT_UFFD_WP)
		want |= UFFD_FEATURE_PAGEFAULT_FLAG_WP;
	if (si->active & UHMM_FEAT_WP_UNPOPULATED)
		want |= UFFD_FEATURE_WP_UNPOPULATED;
	api.features = want & si->uffd_kernel_features;

	fd = uffd_open_way(open_way);
	if (fd < 0)
		return uhmm__err(errno, "userfaultfd: %s", strerror(errno));
	if (ioctl(fd, UFFDIO_API, &api) < 0) {
		e = errno;
		close(fd);
		return uhmm__err(e, "UFFDIO_API failed");
	}
	*features_out = api.features;
	return fd;
}

int uhmm__uffd_open_move_only(void)
{
	const struct uhmm_sysinfo *si = uhmm__sysinfo();
	struct uffdio_api api = { .api = UFFD_API, .features = UFFD_FEATURE_MOVE };
	int fd;

	if (si->uffd_mode == UHMM_UFFD_NONE || !(si->active & UHMM_FEAT_MOVE) ||
	    !(si->uffd_kernel_features & UFFD_FEATURE_MOVE))
		return -ENOSYS;
	fd = uffd_open_way(open_way);
	if (fd < 0)
		return -errno;
	if (ioctl(fd, UFFDIO_API, &api) < 0) {
		int e = errno;

		close(fd);
		return -e;
	}
	return fd;
}

static bool probe_pagemap_scan(void)
{
	struct page_region r;
	static volatile char probe_page[1];
	uintptr_t a = (uintptr_t)probe_page & ~(uintptr_t)(uhmm__page_size - 1);
	struct pm_scan_arg arg = {
		.size = sizeof(arg),
		.start = a,
		.end = a + uhmm__page_size,
		.vec = (uintptr_t)&r,
		.vec_len = 1,
		.category_anyof_mask = PAGE_IS_PRESENT,
		.return_mask = PAGE_IS_PRESENT,
	};
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	bool ok;

	if (fd < 0)
		return false;
	probe_page[0] = 1;
	ok = ioctl(fd, PAGEMAP_SCAN, &arg) >= 0;
	close(fd);
	return ok;
}

static bool probe_procmap_query(void)
{
	struct procmap_query q = {
		.size = sizeof(q),
		.query_addr = (uintptr_t)&probe_procmap_query,
	};
	int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	bool ok;

	if (fd < 0)
		return false;
	ok = ioctl(fd, PROCMAP_QUERY, &q) == 0;
	close(fd);
	return ok;
}

static bool probe_madv_populate(void)
{
	void *p = uhmm__sys_mmap(NULL, uhmm__page_size, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	bool ok;

	if (p == MAP_FAILED)
		return false;
	ok = uhmm__sys_madvise(p, uhmm__page_size, MADV_POPULATE_READ) == 0;
	uhmm__sys_munmap(p, uhmm__page_size);
	return ok;
}

/*
 * Does a read fault of anonymous memory map the shared zero page?  Some
 * kernels never do (mm_forbids_zeropage, or booted/built without it).
 */
static int probe_zero_page(bool have_scan)
{
	size_t len = uhmm__page_size;
	volatile char *p = uhmm__sys_mmap(NULL, len, PROT_READ | PROT_WRITE,
					  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int ret = -1;

	if ((void *)p == MAP_FAILED)
		return -1;
	uhmm__sys_madvise((void *)p, len, MADV_NOHUGEPAGE);
	(void)p[0];
	if (have_scan) {
		struct page_region r = { 0 };
		struct pm_scan_arg arg = {
			.size = sizeof(arg),
			.start = (uintptr_t)p,
			.end = (uintptr_t)p + len,
			.vec = (uintptr_t)&r,
			.vec_len = 1,
			.category_anyof_mask = PAGE_IS_PFNZERO | PAGE_IS_PRESENT,
			.return_mask = PAGE_IS_PFNZERO | PAGE_IS_PRESENT,
		};
		int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);

		if (fd >= 0) {
			if (ioctl(fd, PAGEMAP_SCAN, &arg) == 1)
				ret = (r.categories & PAGE_IS_PFNZERO) ? 1 : 0;
			close(fd);
		}
	}
	if (ret < 0) {
		/* Root: the PFN and /proc/kpageflags tell. */
		int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
		uint64_t e = 0, kf = 0;

		if (fd >= 0) {
			if (pread(fd, &e, 8, ((uintptr_t)p / len) * 8) == 8 &&
			    (e & PM_PRESENT) && (e & PM_PFN_MASK)) {
				int kfd = open("/proc/kpageflags", O_RDONLY | O_CLOEXEC);

				if (kfd >= 0) {
					if (pread(kfd, &kf, 8, (e & PM_PFN_MASK) * 8) == 8)
						ret = (kf >> KPF_ZERO_PAGE_BIT) & 1;
					close(kfd);
				}
			}
			close(fd);
		}
	}
	uhmm__sys_munmap((void *)p, len);
	return ret;
}

static void probe_thp(void)
{
	char buf[128];
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "re");

	snprintf(sysinfo.thp, sizeof(sysinfo.thp), "unavailable");
	if (!f)
		return;
	if (fgets(buf, sizeof(buf), f)) {
		char *a = strchr(buf, '['), *b = a ? strchr(a, ']') : NULL;

		if (a && b) {
			*b = 0;
			snprintf(sysinfo.thp, sizeof(sysinfo.thp), "%s", a + 1);
		}
	}
	fclose(f);
}

static void probe(void)
{
	struct utsname u;
	long ps = sysconf(_SC_PAGESIZE);
	bool no_full;

	if (ps > 0) {
		uhmm__page_size = (size_t)ps;
		uhmm__page_shift = (unsigned int)__builtin_ctzl((unsigned long)ps);
	}
	sysinfo.page_size = uhmm__page_size;
	if (uname(&u) == 0)
		snprintf(sysinfo.kernel_release, sizeof(sysinfo.kernel_release), "%s",
			 u.release);
	sysinfo.disabled = parse_disable(&no_full);
	probe_uffd(no_full);

	if (sysinfo.uffd_kernel_features & UFFD_FEATURE_MOVE)
		sysinfo.features |= UHMM_FEAT_MOVE;
	if (sysinfo.uffd_kernel_features & UFFD_FEATURE_WP_UNPOPULATED)
		sysinfo.features |= UHMM_FEAT_WP_UNPOPULATED;
	if (sysinfo.uffd_kernel_features & UFFD_FEATURE_PAGEFAULT_FLAG_WP)
		sysinfo.features |= UHMM_FEAT_UFFD_WP;
	if (probe_pagemap_scan())
		sysinfo.features |= UHMM_FEAT_PAGEMAP_SCAN;
	if (probe_procmap_query())
		sysinfo.features |= UHMM_FEAT_PROCMAP_QUERY;
	if (probe_madv_populate())
		sysinfo.features |= UHMM_FEAT_MADV_POPULATE;
	sysinfo.active = sysinfo.features & ~sysinfo.disabled;
	sysinfo.zero_page = probe_zero_page(sysinfo.active & UHMM_FEAT_PAGEMAP_SCAN);
	probe_thp();
}

const struct uhmm_sysinfo *uhmm__sysinfo(void)
{
	pthread_once(&probe_once, probe);
	return &sysinfo;
}

int uhmm_sysinfo(struct uhmm_sysinfo *info)
{
	if (!info)
		return uhmm__err(EINVAL, "uhmm_sysinfo: NULL info");
	*info = *uhmm__sysinfo();
	return 0;
}

/*
 * Device -> system installs from staging: UFFDIO_MOVE takes the staged page
 * as it is (no second copy) but clears and flushes the staging entry page
 * by page; UFFDIO_COPY allocates and copies.  UHMM_INSTALL=copy|move picks
 * (default move); docs/PERFORMANCE.md has the measurements.
 */
bool uhmm__install_by_move = true;

__attribute__((constructor)) static void install_mode_init(void)
{
	const char *v = getenv("UHMM_INSTALL");

	if (v && !strcmp(v, "copy"))
		uhmm__install_by_move = false;
}
