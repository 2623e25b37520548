// SPDX-License-Identifier: MIT
/*
 * /proc/self/pagemap: the file, and what it alone tells of memory uhmm
 * registered (present, swapped, a uffd-wp marker; the PMD-mapped huge
 * pages).  Below the page-state walks (pagestate.c) and the userfaultfd
 * primitives that read it (uffd.c, wpmarker.c, migrate.c): it calls
 * nothing of uhmm but the feature probe.
 */
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "base.h"
#include "features_priv.h"
#include "pagemap.h"

#define SCAN_REGIONS	256u

static pthread_mutex_t pm_lock = PTHREAD_MUTEX_INITIALIZER;
static int pagemap_fd = -1;

void uhmm__pagemap_atfork_child(void)
{
	pthread_mutex_init(&pm_lock, NULL);
	if (pagemap_fd >= 0)
		close(pagemap_fd);	/* it reads the parent's page table */
	pagemap_fd = -1;
}

int uhmm__pagemap_fd(void)
{
	int fd;

	pthread_mutex_lock(&pm_lock);
	if (pagemap_fd < 0)
		pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	fd = pagemap_fd < 0 ? uhmm__proc_err(errno) : pagemap_fd;
	pthread_mutex_unlock(&pm_lock);
	return fd;
}

int uhmm__pagemap_read(int fd, uintptr_t start, size_t n, uint64_t *buf)
{
	size_t done = 0, want = n * sizeof(uint64_t);
	off_t off = (off_t)((start >> uhmm__page_shift) * sizeof(uint64_t));

	while (done < want) {
		ssize_t r = pread(fd, (char *)buf + done, want - done, off + (off_t)done);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			return uhmm__proc_err(errno);
		}
		if (r == 0)
			break;
		done += (size_t)r;
	}
	if (done < want)
		memset((char *)buf + done, 0, want - done);
	return 0;
}

int uhmm__pagemap_has_data(uintptr_t start, size_t npages, uint8_t *out)
{
	uint64_t buf[512];
	int fd = uhmm__pagemap_fd(), ret;

	if (fd < 0)
		return fd;
	if (uhmm__has(UHMM_FEAT_PAGEMAP_SCAN)) {
		/*
		 * One region per run of the same kind instead of an entry per
		 * page (which also costs the kernel a page lookup and a
		 * mapcount each, for the exclusive bit nobody needs here).
		 */
		struct page_region regs[SCAN_REGIONS];
		uintptr_t end = start + (npages << uhmm__page_shift), cur = start;

		memset(out, 0, npages);
		while (cur < end) {
			struct pm_scan_arg arg = {
				.size = sizeof(arg), .start = cur, .end = end,
				.vec = (uintptr_t)regs, .vec_len = SCAN_REGIONS,
				.category_anyof_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
				/*
				 * WRITTEN tells a uffd-wp marker (SWAPPED, not
				 * WRITTEN) from a swap entry: uhmm write-protects
				 * no page of its own, so no swapped one either.
				 */
				.return_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED |
					       PAGE_IS_WRITTEN,
			};
			long got = ioctl(fd, PAGEMAP_SCAN, &arg);

			if (got < 0)
				return uhmm__proc_err(errno);
			for (long r = 0; r < got; r++) {
				uint64_t c = regs[r].categories;
				uint8_t v = (c & PAGE_IS_PRESENT) ? UHMM__PM_PRESENT :
					    (c & PAGE_IS_WRITTEN) ? UHMM__PM_SWAPPED :
								    UHMM__PM_MARKER;

				memset(out + ((regs[r].start - start) >> uhmm__page_shift), v,
				       (regs[r].end - regs[r].start) >> uhmm__page_shift);
			}
			if (arg.walk_end <= cur)
				break;
			cur = arg.walk_end;
		}
		return 0;
	}
	for (size_t base = 0; base < npages; base += 512) {
		size_t n = UHMM__MIN((size_t)512, npages - base);

		ret = uhmm__pagemap_read(fd, start + (base << uhmm__page_shift), n, buf);
		if (ret)
			return ret;
		for (size_t i = 0; i < n; i++)
			out[base + i] = (buf[i] & PM_PRESENT) ? UHMM__PM_PRESENT :
					uhmm__pm_is_marker(buf[i]) ? UHMM__PM_MARKER :
					(buf[i] & PM_SWAP) ? UHMM__PM_SWAPPED : UHMM__PM_NONE;
	}
	return 0;
}

int uhmm__pagemap_huge_span(uintptr_t start, uintptr_t end, uintptr_t *lo, uintptr_t *hi)
{
	struct page_region regs[SCAN_REGIONS];
	uintptr_t cur = start;
	int fd, found = 0;

	if (!uhmm__has(UHMM_FEAT_PAGEMAP_SCAN) || (fd = uhmm__pagemap_fd()) < 0)
		return -1;
	while (cur < end) {
		struct pm_scan_arg arg = {
			.size = sizeof(arg), .start = cur, .end = end,
			.vec = (uintptr_t)regs, .vec_len = SCAN_REGIONS,
			.category_mask = PAGE_IS_HUGE, .return_mask = PAGE_IS_HUGE,
		};
		long got = ioctl(fd, PAGEMAP_SCAN, &arg);

		if (got < 0)
			return -1;
		for (long r = 0; r < got; r++) {
			if (!found++)
				*lo = regs[r].start;
			*hi = regs[r].end;
		}
		if (arg.walk_end <= cur)
			break;
		cur = arg.walk_end;
	}
	return found ? 0 : 1;
}
