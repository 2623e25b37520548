/* SPDX-License-Identifier: MIT */
/*
 * Kernel ABI constants and structures that older system headers lack.
 *
 * The machine's headers may be older than the running kernel (Debian 12
 * ships 6.1 headers while the kernel may be 6.18).  Everything here is
 * defined only when the system header did not define it, and every feature
 * it names is probed at run time (features.c) before it is used.
 */
#ifndef UHMM__COMPAT_H
#define UHMM__COMPAT_H

#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <linux/types.h>
#include <linux/userfaultfd.h>
#include <linux/fs.h>

/* ---- userfaultfd ---------------------------------------------------- */
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1				/* 5.11 */
#endif
#ifndef USERFAULTFD_IOC
#define USERFAULTFD_IOC 0xAA				/* /dev/userfaultfd, 6.1 */
#define USERFAULTFD_IOC_NEW _IO(USERFAULTFD_IOC, 0x00)
#endif
#ifndef UFFD_FEATURE_EXACT_ADDRESS
#define UFFD_FEATURE_EXACT_ADDRESS (1 << 11)
#endif
#ifndef UFFD_FEATURE_WP_HUGETLBFS_SHMEM
#define UFFD_FEATURE_WP_HUGETLBFS_SHMEM (1 << 12)
#endif
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)		/* 6.4 */
#endif
#ifndef UFFD_FEATURE_POISON
#define UFFD_FEATURE_POISON (1 << 14)			/* 6.6 */
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)			/* 6.7 */
#endif
#ifndef UFFD_FEATURE_MOVE
#define UFFD_FEATURE_MOVE (1 << 16)			/* 6.8 */
#endif

#ifndef _UFFDIO_MOVE
#define _UFFDIO_MOVE (0x05)
#endif
#ifndef UFFDIO_MOVE
struct uffdio_move {
	__u64 dst;
	__u64 src;
	__u64 len;
#define UFFDIO_MOVE_MODE_DONTWAKE		((__u64)1 << 0)
#define UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES	((__u64)1 << 1)
	__u64 mode;
	__s64 move;	/* bytes moved, or a negative errno */
};
#define UFFDIO_MOVE _IOWR(UFFDIO, _UFFDIO_MOVE, struct uffdio_move)
#endif

/* ---- /proc/self/pagemap entries (Documentation/admin-guide/mm/pagemap.rst) */
#define PM_PFN_MASK		((UINT64_C(1) << 55) - 1)
#define PM_SOFT_DIRTY		(UINT64_C(1) << 55)
#define PM_MMAP_EXCLUSIVE	(UINT64_C(1) << 56)
#define PM_UFFD_WP		(UINT64_C(1) << 57)
#define PM_GUARD_REGION		(UINT64_C(1) << 58)
#define PM_FILE			(UINT64_C(1) << 61)
#define PM_SWAP			(UINT64_C(1) << 62)
#define PM_PRESENT		(UINT64_C(1) << 63)

/* /proc/kpageflags bits (root only) */
#define KPF_THP_BIT		22
#define KPF_ZERO_PAGE_BIT	24

/* ---- PAGEMAP_SCAN (6.7) -------------------------------------------- */
#ifndef PAGEMAP_SCAN
#define PAGE_IS_WPALLOWED	(1 << 0)
#define PAGE_IS_WRITTEN		(1 << 1)
#define PAGE_IS_FILE		(1 << 2)
#define PAGE_IS_PRESENT		(1 << 3)
#define PAGE_IS_SWAPPED		(1 << 4)
#define PAGE_IS_PFNZERO		(1 << 5)
#define PAGE_IS_HUGE		(1 << 6)
#define PAGE_IS_SOFT_DIRTY	(1 << 7)
struct page_region {
	__u64 start;
	__u64 end;
	__u64 categories;
};
#define PM_SCAN_WP_MATCHING	(1 << 0)
#define PM_SCAN_CHECK_WPASYNC	(1 << 1)
struct pm_scan_arg {
	__u64 size;
	__u64 flags;
	__u64 start;
	__u64 end;
	__u64 walk_end;
	__u64 vec;
	__u64 vec_len;
	__u64 max_pages;
	__u64 category_inverted;
	__u64 category_mask;
	__u64 category_anyof_mask;
	__u64 return_mask;
};
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#endif
#ifndef PAGE_IS_GUARD
#define PAGE_IS_GUARD		(1 << 8)		/* 6.15 */
#endif

/* ---- PROCMAP_QUERY (6.11) ------------------------------------------ */
#ifndef PROCMAP_QUERY
#define PROCMAP_QUERY_VMA_READABLE		0x01
#define PROCMAP_QUERY_VMA_WRITABLE		0x02
#define PROCMAP_QUERY_VMA_EXECUTABLE		0x04
#define PROCMAP_QUERY_VMA_SHARED		0x08
#define PROCMAP_QUERY_COVERING_OR_NEXT_VMA	0x10
#define PROCMAP_QUERY_FILE_BACKED_VMA		0x20
struct procmap_query {
	__u64 size;
	__u64 query_flags;
	__u64 query_addr;
	__u64 vma_start;
	__u64 vma_end;
	__u64 vma_flags;
	__u64 vma_page_size;
	__u64 vma_offset;
	__u64 inode;
	__u32 dev_major;
	__u32 dev_minor;
	__u32 vma_name_size;
	__u32 build_id_size;
	__u64 vma_name_addr;
	__u64 build_id_addr;
};
#define PROCMAP_QUERY _IOWR('f', 17, struct procmap_query)
#endif

/* ---- madvise ------------------------------------------------------- */
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22				/* 5.14 */
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#ifndef MADV_DONTNEED_LOCKED
#define MADV_DONTNEED_LOCKED 24
#endif

#endif /* UHMM__COMPAT_H */
