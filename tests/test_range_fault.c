// SPDX-License-Identifier: MIT
/*
 * uhmm_range_fault() in fault mode, and the interval notifier sequence
 * protocol (read_begin / range fault / lock / read_retry / commit).
 *
 * Covered:
 *  - read fault (default_flags REQ_FAULT) of never-touched anonymous memory:
 *    every pfn VALID with the page's address, pages present, read as zero,
 *    ZERO exactly where page state says the shared zero page;
 *  - write fault (REQ_FAULT|REQ_WRITE) of never-touched memory: VALID|WRITE,
 *    pages present and writable;
 *  - per-page requests (hmm_pfns input, pfn_flags_mask): only the requested
 *    pages are faulted; input bits outside the mask and a mask of 0 are
 *    ignored; default_flags and per-page bits combine; a hole that is not
 *    requested reports ERROR without failing the call;
 *  - copy-on-write break: a forked child shares the pages; a snapshot and a
 *    read fault keep them shared (no WRITE), a write fault gives WRITE,
 *    WRITABLE|EXCLUSIVE, leaves the data alone, and the child still sees the
 *    old data after the parent writes new data;
 *  - -EFAULT on a hole and on a PROT_NONE page (read and write requests, and
 *    a per-page request): the failing pages are ERROR, nothing else is
 *    faulted, memory contents are unchanged;
 *  - -EPERM on a write request that covers a PROT_READ mapping with data;
 *  - -EINVAL: NULL range / notifier / hmm_pfns, unaligned or empty range,
 *    range outside the notifier, a notifier never inserted or removed;
 *  - -EBUSY after munmap / mprotect (through libc) of part of the notifier
 *    since uhmm_interval_read_begin(); read_retry / check_retry agree;
 *  - the sequence protocol under concurrency: a fake device (mutex, device
 *    page table, notifier) filled by one thread with the documented loop and
 *    checked after every pass under its lock against the real memory, while
 *    another thread mprotects parts PROT_NONE and back and munmaps and
 *    re-creates parts (MAP_FIXED_NOREPLACE, pattern re-written).  A committed
 *    entry must never outlive the CPU mapping it mirrors;
 *  - THP: write fault of a 2 MiB-aligned MADV_HUGEPAGE region, order 9
 *    when the region is really PMD-mapped and uhmm can tell;
 *  - -EDEADLK for a range fault from inside an invalidate callback;
 *  - a mapping created in the notifier's interval after insert, by another
 *    thread that tells the faulting thread only through a relaxed atomic:
 *    a hole snapshots as ERROR, then faults in as VALID;
 *  - a mapping the cached copy of the mappings does not know yet (made with
 *    a raw mmap system call, which no wrapper sees): the first read says
 *    hole, the fresh re-read says mapped, and the range fault succeeds
 *    (the kernel's hmm_range_fault returns what its last walk found; an
 *    earlier walk's error does not stay counted).
 *
 * Every sub-check prints a line.  Pages this test unmaps can be reused by other
 * components' mmap(NULL) (sanitizer runtimes): see is_hole().
 */
#include "common.h"

#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <sys/syscall.h>
#include <sys/uio.h>

#define RW (PROT_READ | PROT_WRITE)
#define WAIT_SPINS 200000	/* bound on one wait for another thread */
#define REQ_RW (UHMM_PFN_REQ_FAULT | UHMM_PFN_REQ_WRITE)

static struct uhmm_mm *mm;
static struct uhmm_sysinfo si;

/*
 * CHECK for the threads of the concurrent test: exit(3) would run uhmm's exit
 * handler, whose RELEASE callback needs the device lock that the failing
 * thread may hold; _exit() instead.
 */
#define TCHECK(cond, ...)                                                     \
	do {                                                                  \
		if (!(cond)) {                                                \
			fprintf(stderr, "%s: FAIL %s:%d: %s: ", test_name,    \
				__FILE__, __LINE__, #cond);                   \
			fprintf(stderr, __VA_ARGS__);                         \
			fprintf(stderr, "\n");                                \
			_exit(1);                                             \
		}                                                             \
	} while (0)

/* ---- a recording notifier ---------------------------------------------- */

struct rec {
	struct uhmm_interval_notifier mni;
	atomic_int calls;
	atomic_uint events;		/* 1 << event of every call */
	/* A range fault to attempt from inside the callback (same thread). */
	struct uhmm_range *inner;
	atomic_int inner_done;
	atomic_int inner_ret;
};

static bool rec_inv(struct uhmm_interval_notifier *mni,
		    const struct uhmm_notifier_range *r, unsigned long cur_seq)
{
	struct rec *rc = (struct rec *)((char *)mni - offsetof(struct rec, mni));

	uhmm_interval_set_seq(mni, cur_seq);
	atomic_fetch_add(&rc->calls, 1);
	atomic_fetch_or(&rc->events, 1u << r->event);
	if (rc->inner && !atomic_load(&rc->inner_done)) {
		atomic_store(&rc->inner_ret, uhmm_range_fault(rc->inner));
		atomic_store(&rc->inner_done, 1);
	}
	return true;
}

static const struct uhmm_interval_notifier_ops rec_ops = { .invalidate = rec_inv };

static void rec_insert(struct rec *rc, void *p, size_t len)
{
	memset(rc, 0, sizeof(*rc));
	CHECK_EQ(uhmm_interval_notifier_insert(&rc->mni, mm, (uintptr_t)p, len,
					       &rec_ops), 0);
}

static char *pg(void *base, size_t i)
{
	return (char *)base + i * page_size;
}

/* One range fault with a fresh sequence. */
static int do_fault(struct rec *rc, void *start, size_t npages, uint64_t *pfns,
		    uint64_t dflt, uint64_t mask)
{
	struct uhmm_range r = {
		.notifier = &rc->mni,
		.start = (uintptr_t)start,
		.end = (uintptr_t)start + npages * page_size,
		.hmm_pfns = pfns,
		.default_flags = dflt,
		.pfn_flags_mask = mask,
	};

	r.notifier_seq = uhmm_interval_read_begin(&rc->mni);
	return uhmm_range_fault(&r);
}

static void states(void *p, size_t n, uint32_t *out)
{
	CHECK_EQ(uhmm_page_state(mm, (uintptr_t)p, n, out), 0);
}

static bool all_bytes(const void *p, int c, size_t len)
{
	const unsigned char *b = p;

	for (size_t i = 0; i < len; i++)
		if (b[i] != (unsigned char)c)
			return false;
	return true;
}

/*
 * Holes.  A page this test unmaps can be taken by any mmap(NULL) of another
 * component meanwhile (the sanitizer runtimes map single pages), so a test
 * that needs the hole to stay one checks it afterwards and repeats itself on
 * a fresh region if it did not, and no test unmaps or MAP_FIXEDs over a hole
 * it made: it could destroy somebody else's mapping.
 */
#define HOLE_TRIES 5

static bool is_hole(void *page)
{
	unsigned char v;

	return mincore(page, page_size, &v) < 0 && errno == ENOMEM;
}

/* Unmap the @n pages at @p except page @hole, which may not be ours any more. */
static void unmap_around(char *p, size_t n, size_t hole)
{
	if (hole > 0)
		CHECK_EQ(munmap(p, hole * page_size), 0);
	if (hole + 1 < n)
		CHECK_EQ(munmap(pg(p, hole + 1), (n - hole - 1) * page_size), 0);
}

static void hole_reused(const char *what, int attempt)
{
	printf("%s: note: %s: the hole was mapped by someone else meanwhile "
	       "(attempt %d of %d), trying again on a fresh region\n", test_name, what,
	       attempt + 1, HOLE_TRIES);
}

static void check_pfn_addr(uint64_t pfn, void *page, size_t i)
{
	CHECK(uhmm_pfn_to_addr(pfn) == (uintptr_t)page,
	      "page %zu: pfn %#llx names %#lx, expected %p", i,
	      (unsigned long long)pfn, (unsigned long)uhmm_pfn_to_addr(pfn), page);
}

/* ---- read and write faults of never-touched memory --------------------- */

static void test_read_fault(void)
{
	enum { N = 16 };
	char *p = map_anon(N * page_size, RW);
	uint64_t pfns[N];
	uint32_t st[N];
	struct rec rc;
	size_t zero = 0;

	rec_insert(&rc, p, N * page_size);
	states(p, N, st);
	for (size_t i = 0; i < N; i++)
		CHECK(!(st[i] & UHMM_PS_PRESENT), "page %zu present before any access", i);
	/* Garbage input: pfn_flags_mask 0 must ignore it. */
	memset(pfns, 0xa5, sizeof(pfns));
	CHECK_EQ(do_fault(&rc, p, N, pfns, UHMM_PFN_REQ_FAULT, 0), 0);
	states(p, N, st);
	for (size_t i = 0; i < N; i++) {
		CHECK(pfns[i] & UHMM_PFN_VALID, "page %zu: pfn %#llx not VALID", i,
		      (unsigned long long)pfns[i]);
		CHECK(!(pfns[i] & (UHMM_PFN_ERROR | UHMM_PFN_DEVICE_PRIVATE)),
		      "page %zu: pfn %#llx", i, (unsigned long long)pfns[i]);
		check_pfn_addr(pfns[i], pg(p, i), i);
		CHECK(st[i] & UHMM_PS_PRESENT, "page %zu not present after a read fault", i);
		CHECK(!!(pfns[i] & UHMM_PFN_ZERO) == !!(st[i] & UHMM_PS_ZERO),
		      "page %zu: pfn ZERO %d but page state ZERO %d", i,
		      !!(pfns[i] & UHMM_PFN_ZERO), !!(st[i] & UHMM_PS_ZERO));
		if (pfns[i] & UHMM_PFN_ZERO) {
			CHECK(!(pfns[i] & UHMM_PFN_WRITE), "zero page reported writable");
			zero++;
		}
		CHECK(all_bytes(pg(p, i), 0, page_size), "page %zu not zero", i);
	}
	CHECK_EQ(atomic_load(&rc.calls), 0);
	OK("read fault: %d never-touched pages VALID with their address, present, "
	   "read as zero (%zu on the shared zero page; kernel zero page %s)",
	   N, zero, zero_page_supported() ? "supported" : "not supported");
	uhmm_interval_notifier_remove(&rc.mni);
	CHECK_EQ(munmap(p, N * page_size), 0);
}

static void test_write_fault(void)
{
	enum { N = 16 };
	char *p = map_anon(N * page_size, RW);
	uint64_t pfns[N];
	uint32_t st[N];
	struct rec rc;

	rec_insert(&rc, p, N * page_size);
	memset(pfns, 0, sizeof(pfns));
	CHECK_EQ(do_fault(&rc, p, N, pfns, REQ_RW, 0), 0);
	states(p, N, st);
	for (size_t i = 0; i < N; i++) {
		CHECK((pfns[i] & (UHMM_PFN_VALID | UHMM_PFN_WRITE)) ==
		      (UHMM_PFN_VALID | UHMM_PFN_WRITE),
		      "page %zu: pfn %#llx not VALID|WRITE", i, (unsigned long long)pfns[i]);
		CHECK(!(pfns[i] & (UHMM_PFN_ERROR | UHMM_PFN_ZERO)), "page %zu: pfn %#llx",
		      i, (unsigned long long)pfns[i]);
		check_pfn_addr(pfns[i], pg(p, i), i);
		CHECK((st[i] & (UHMM_PS_PRESENT | UHMM_PS_WRITABLE)) ==
		      (UHMM_PS_PRESENT | UHMM_PS_WRITABLE),
		      "page %zu: state %#x not PRESENT|WRITABLE", i, st[i]);
		CHECK(!(st[i] & UHMM_PS_ZERO), "page %zu on the zero page after a write fault", i);
		CHECK(all_bytes(pg(p, i), 0, page_size), "page %zu not zero", i);
	}
	OK("write fault: %d never-touched pages VALID|WRITE, PRESENT|WRITABLE, zero", N);

	/* A snapshot of the result agrees, and the pages take writes. */
	CHECK_EQ(do_fault(&rc, p, N, pfns, 0, 0), 0);
	for (size_t i = 0; i < N; i++) {
		CHECK((pfns[i] & (UHMM_PFN_VALID | UHMM_PFN_WRITE)) ==
		      (UHMM_PFN_VALID | UHMM_PFN_WRITE), "snapshot of page %zu: %#llx",
		      i, (unsigned long long)pfns[i]);
		memset(pg(p, i), (int)(0x30 + i), page_size);
	}
	for (size_t i = 0; i < N; i++)
		CHECK(all_bytes(pg(p, i), (int)(0x30 + i), page_size), "page %zu", i);
	CHECK_EQ(atomic_load(&rc.calls), 0);
	OK("write fault: snapshot afterwards still VALID|WRITE; pages written and read back");
	uhmm_interval_notifier_remove(&rc.mni);
	CHECK_EQ(munmap(p, N * page_size), 0);
}

/* ---- per-page requests -------------------------------------------------- */

/* An unrequested hole is reported ERROR but does not fail the call. */
static bool per_page_hole(int attempt)
{
	enum { N = 8, HOLE = 6 };
	char *p = map_anon(N * page_size, RW);
	uint64_t pfns[N];
	uint32_t st[N];
	struct rec rc;
	int ret;

	rec_insert(&rc, p, N * page_size);
	CHECK_EQ(munmap(pg(p, HOLE), page_size), 0);
	for (size_t i = 0; i < N; i++)
		pfns[i] = i < 4 ? UHMM_PFN_REQ_FAULT : 0;
	ret = do_fault(&rc, p, N, pfns, 0, UHMM_PFN_REQ_FAULT);
	states(p, N, st);
	uhmm_interval_notifier_remove(&rc.mni);
	if (!is_hole(pg(p, HOLE))) {
		hole_reused("per-page hole", attempt);
		unmap_around(p, N, HOLE);
		return false;
	}
	CHECK_EQ(ret, 0);
	for (size_t i = 0; i < N; i++) {
		if (i < 4)
			CHECK((pfns[i] & UHMM_PFN_VALID) && (st[i] & UHMM_PS_PRESENT),
			      "requested page %zu: pfn %#llx state %#x", i,
			      (unsigned long long)pfns[i], st[i]);
		else if (i == HOLE)
			CHECK(pfns[i] == UHMM_PFN_ERROR, "hole: pfn %#llx, expected ERROR",
			      (unsigned long long)pfns[i]);
		else
			CHECK(pfns[i] == 0 && !(st[i] & UHMM_PS_PRESENT),
			      "unrequested page %zu: pfn %#llx state %#x", i,
			      (unsigned long long)pfns[i], st[i]);
	}
	OK("per-page: an unrequested hole gives ERROR, the call returns 0");
	unmap_around(p, N, HOLE);
	return true;
}

static void test_per_page_hole(void)
{
	for (int attempt = 0; attempt < HOLE_TRIES; attempt++)
		if (per_page_hole(attempt))
			return;
	CHECK(false, "the hole was reused %d times in a row", HOLE_TRIES);
}


static void test_per_page(void)
{
	enum { N = 8 };
	char *p = map_anon(N * page_size, RW);
	uint64_t pfns[N];
	uint32_t st[N];
	struct rec rc;

	rec_insert(&rc, p, N * page_size);
	/* Even pages: read; page 3: write; 1, 5, 7: nothing. */
	for (size_t i = 0; i < N; i++)
		pfns[i] = i % 2 == 0 ? UHMM_PFN_REQ_FAULT : 0;
	pfns[3] = REQ_RW;
	pfns[5] = UHMM_PFN_ERROR | UHMM_PFN_ZERO | 0x1234; /* outside the mask */
	CHECK_EQ(do_fault(&rc, p, N, pfns, 0, REQ_RW), 0);
	states(p, N, st);
	for (size_t i = 0; i < N; i++) {
		if (i % 2 == 0) {
			CHECK(pfns[i] & UHMM_PFN_VALID, "requested page %zu: %#llx", i,
			      (unsigned long long)pfns[i]);
			check_pfn_addr(pfns[i], pg(p, i), i);
			CHECK(st[i] & UHMM_PS_PRESENT, "requested page %zu not present", i);
		} else if (i == 3) {
			CHECK((pfns[i] & (UHMM_PFN_VALID | UHMM_PFN_WRITE)) ==
			      (UHMM_PFN_VALID | UHMM_PFN_WRITE), "write-requested page 3: %#llx",
			      (unsigned long long)pfns[i]);
			CHECK(st[i] & UHMM_PS_WRITABLE, "page 3 not writable: %#x", st[i]);
		} else {
			CHECK(pfns[i] == 0, "unrequested page %zu: pfn %#llx, expected 0", i,
			      (unsigned long long)pfns[i]);
			CHECK(!(st[i] & UHMM_PS_PRESENT), "unrequested page %zu was faulted", i);
		}
	}
	OK("per-page: pages 0,2,4,6 read-faulted, 3 write-faulted, 1,5,7 left "
	   "untouched (pfn 0, not present); bits outside the mask ignored");

	/* mask 0: the per-page requests are ignored entirely. */
	for (size_t i = 0; i < N; i++)
		pfns[i] = REQ_RW;
	CHECK_EQ(do_fault(&rc, pg(p, 5), 1, &pfns[5], 0, 0), 0);
	CHECK_EQ(pfns[5], 0);
	states(pg(p, 5), 1, &st[5]);
	CHECK(!(st[5] & UHMM_PS_PRESENT), "page 5 faulted with pfn_flags_mask 0");
	OK("per-page: pfn_flags_mask 0 ignores REQ_FAULT|REQ_WRITE input (nothing faulted)");

	/* default REQ_FAULT for all, REQ_WRITE through the mask for page 7 only. */
	for (size_t i = 0; i < N; i++)
		pfns[i] = UHMM_PFN_REQ_WRITE * (i == 7);
	CHECK_EQ(do_fault(&rc, p, N, pfns, UHMM_PFN_REQ_FAULT, UHMM_PFN_REQ_WRITE), 0);
	states(p, N, st);
	for (size_t i = 0; i < N; i++) {
		CHECK(pfns[i] & UHMM_PFN_VALID, "page %zu: %#llx", i, (unsigned long long)pfns[i]);
		CHECK(st[i] & UHMM_PS_PRESENT, "page %zu not present", i);
	}
	CHECK(pfns[7] & UHMM_PFN_WRITE, "page 7 asked for write: %#llx",
	      (unsigned long long)pfns[7]);
	CHECK(st[7] & UHMM_PS_WRITABLE, "page 7 not writable");
	OK("per-page: default_flags REQ_FAULT combined with a per-page REQ_WRITE");
	uhmm_interval_notifier_remove(&rc.mni);
	CHECK_EQ(munmap(p, N * page_size), 0);

	test_per_page_hole();
}

/* ---- copy-on-write break --------------------------------------------------- */

static void test_cow_break(void)
{
	enum { N = 4 };
	char *p = map_anon(N * page_size, RW);
	uint64_t pfns[N];
	uint32_t st[N];
	struct rec rc;
	unsigned long seq;
	int fds[2], status;
	pid_t pid;
	char c = 0;

	for (size_t i = 0; i < N; i++)
		memset(pg(p, i), (int)(0x40 + i), page_size);
	rec_insert(&rc, p, N * page_size);
	seq = uhmm_interval_read_begin(&rc.mni);
	CHECK_EQ(pipe(fds), 0);
	pid = fork();
	CHECK(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		close(fds[1]);
		if (read(fds[0], &c, 1) != 1)
			_exit(2);
		for (size_t i = 0; i < N; i++)
			if (!all_bytes(pg(p, i), (int)(0x40 + i), page_size))
				_exit(10 + (int)i);
		_exit(0);
	}
	close(fds[0]);
	CHECK(uhmm_interval_read_retry(&rc.mni, seq),
	      "fork did not invalidate the private writable region");
	CHECK(atomic_load(&rc.events) & (1u << UHMM_NOTIFY_FORK), "no FORK event: %#x",
	      atomic_load(&rc.events));
	OK("cow: fork ran a FORK invalidation; the pre-fork sequence must retry");

	/* Shared now: a snapshot and a read fault report no WRITE. */
	states(p, N, st);
	for (size_t i = 0; i < N; i++)
		CHECK((st[i] & UHMM_PS_PRESENT) &&
		      !(st[i] & (UHMM_PS_WRITABLE | UHMM_PS_EXCLUSIVE)),
		      "page %zu after fork: state %#x, expected present, shared", i, st[i]);
	CHECK_EQ(do_fault(&rc, p, N, pfns, 0, 0), 0);
	for (size_t i = 0; i < N; i++)
		CHECK((pfns[i] & (UHMM_PFN_VALID | UHMM_PFN_WRITE)) == UHMM_PFN_VALID,
		      "snapshot of shared page %zu: %#llx", i, (unsigned long long)pfns[i]);
	CHECK_EQ(do_fault(&rc, p, N, pfns, UHMM_PFN_REQ_FAULT, 0), 0);
	states(p, N, st);
	for (size_t i = 0; i < N; i++) {
		CHECK((pfns[i] & (UHMM_PFN_VALID | UHMM_PFN_WRITE)) == UHMM_PFN_VALID,
		      "read fault of shared page %zu: %#llx", i, (unsigned long long)pfns[i]);
		CHECK(!(st[i] & UHMM_PS_EXCLUSIVE), "read fault broke COW of page %zu", i);
	}
	OK("cow: shared pages snapshot and read-fault as VALID without WRITE, stay shared");

	CHECK_EQ(do_fault(&rc, p, N, pfns, REQ_RW, 0), 0);
	states(p, N, st);
	for (size_t i = 0; i < N; i++) {
		CHECK((pfns[i] & (UHMM_PFN_VALID | UHMM_PFN_WRITE)) ==
		      (UHMM_PFN_VALID | UHMM_PFN_WRITE),
		      "write fault of shared page %zu: %#llx", i, (unsigned long long)pfns[i]);
		check_pfn_addr(pfns[i], pg(p, i), i);
		CHECK((st[i] & (UHMM_PS_WRITABLE | UHMM_PS_EXCLUSIVE)) ==
		      (UHMM_PS_WRITABLE | UHMM_PS_EXCLUSIVE),
		      "page %zu after the write fault: state %#x", i, st[i]);
		CHECK(all_bytes(pg(p, i), (int)(0x40 + i), page_size),
		      "page %zu data changed by the COW break", i);
	}
	OK("cow: write fault gave VALID|WRITE, WRITABLE|EXCLUSIVE, data unchanged");

	for (size_t i = 0; i < N; i++)
		memset(pg(p, i), (int)(0x80 + i), page_size);
	CHECK_EQ(write(fds[1], "g", 1), 1);
	close(fds[1]);
	CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	      "child saw the parent's new data or failed (status %#x)", status);
	for (size_t i = 0; i < N; i++)
		CHECK(all_bytes(pg(p, i), (int)(0x80 + i), page_size), "parent page %zu", i);
	OK("cow: parent wrote new data after the break; the child still saw the old data");
	uhmm_interval_notifier_remove(&rc.mni);
	CHECK_EQ(munmap(p, N * page_size), 0);
}

/* ---- -EFAULT ---------------------------------------------------------------- */

/*
 * Page 0 holds data, page BAD is a hole or PROT_NONE (with data under it),
 * the others were never touched.  Any faulting request that covers BAD fails
 * with -EFAULT, marks BAD ERROR and faults nothing.  False if the hole was
 * taken by another mapping before the checks were done.
 */
static bool efault_case(bool prot_none, int attempt)
{
	enum { N = 8, BAD = 4 };
	const char *what = prot_none ? "PROT_NONE page" : "hole";
	char *p = map_anon(N * page_size, RW);
	uint64_t pfns[N];
	uint32_t st[N];
	struct rec rc;
	int ret;

	memset(pg(p, 0), 0x5a, page_size);
	rec_insert(&rc, p, N * page_size);
	if (prot_none) {
		memset(pg(p, BAD), 0x6b, page_size);
		CHECK_EQ(mprotect(pg(p, BAD), page_size, PROT_NONE), 0);
	} else {
		CHECK_EQ(munmap(pg(p, BAD), page_size), 0);
	}

	for (int w = 0; w < 3; w++) {
		uint64_t *req = w < 2 ? pfns : pfns + 1;

		if (w < 2) {
			memset(pfns, 0, sizeof(pfns));
			ret = do_fault(&rc, p, N, pfns, w ? REQ_RW : UHMM_PFN_REQ_FAULT, 0);
		} else {
			/* Per-page: only the bad page requested. */
			for (size_t i = 0; i < N; i++)
				pfns[i] = i == BAD ? UHMM_PFN_REQ_FAULT : 0;
			ret = do_fault(&rc, pg(p, 1), N - 1, req, 0, UHMM_PFN_REQ_FAULT);
		}
		states(p, N, st);
		if (!prot_none && !is_hole(pg(p, BAD))) {
			hole_reused("-EFAULT hole", attempt);
			uhmm_interval_notifier_remove(&rc.mni);
			unmap_around(p, N, BAD);
			return false;
		}
		CHECK(ret == -EFAULT, "%s request over a %s returned %d",
		      w == 0 ? "read" : w == 1 ? "write" : "per-page", what, ret);
		for (size_t i = w < 2 ? 0 : 1; i < N; i++) {
			if (i == BAD) {
				CHECK(pfns[i] == UHMM_PFN_ERROR, "%s: pfn %#llx, expected ERROR",
				      what, (unsigned long long)pfns[i]);
				continue;
			}
			CHECK(!(pfns[i] & UHMM_PFN_ERROR), "page %zu wrongly ERROR", i);
			if (i == 0) {
				CHECK(st[0] & UHMM_PS_PRESENT, "data page lost");
				continue;
			}
			CHECK(!(st[i] & UHMM_PS_PRESENT),
			      "page %zu faulted by a request that failed", i);
			CHECK(!(pfns[i] & UHMM_PFN_VALID), "page %zu: %#llx", i,
			      (unsigned long long)pfns[i]);
		}
		CHECK(all_bytes(pg(p, 0), 0x5a, page_size), "data page changed");
		if (w < 2)
			OK("-EFAULT: %s request over a %s: it is ERROR, the %d never-touched "
			   "pages stay not present, data unchanged", w ? "write" : "read",
			   what, N - 2);
		else
			OK("-EFAULT: per-page request of the %s alone fails, nothing faulted",
			   what);
	}

	uhmm_interval_notifier_remove(&rc.mni);
	if (prot_none) {
		CHECK_EQ(mprotect(pg(p, BAD), page_size, RW), 0);
		CHECK(all_bytes(pg(p, BAD), 0x6b, page_size), "data under PROT_NONE changed");
		OK("-EFAULT: data under the PROT_NONE page unchanged");
		CHECK_EQ(munmap(p, N * page_size), 0);
	} else {
		unmap_around(p, N, BAD);
	}
	return true;
}

static void test_efault(void)
{
	for (int prot_none = 0; prot_none < 2; prot_none++) {
		int attempt = 0;

		while (!efault_case(prot_none, attempt))
			CHECK(++attempt < HOLE_TRIES, "the hole was reused %d times in a row",
			      HOLE_TRIES);
	}
}

/* ---- -EPERM ----------------------------------------------------------------- */

static void test_eperm(void)
{
	enum { N = 6 };
	char *p = map_anon(N * page_size, RW);
	uint64_t pfns[N];
	uint32_t st[N];
	struct rec rc;

	/* 0-1: writable, never touched; 2-3: read-only with data; 4-5: read-only, empty. */
	memset(pg(p, 2), 0x21, page_size);
	memset(pg(p, 3), 0x31, page_size);
	CHECK_EQ(mprotect(pg(p, 2), 4 * page_size, PROT_READ), 0);
	rec_insert(&rc, p, N * page_size);

	CHECK_EQ(do_fault(&rc, p, N, pfns, REQ_RW, 0), -EPERM);
	states(p, N, st);
	for (size_t i = 0; i < N; i++) {
		if (i >= 2) {
			CHECK(pfns[i] == UHMM_PFN_ERROR, "read-only page %zu: pfn %#llx", i,
			      (unsigned long long)pfns[i]);
			CHECK(!(st[i] & (UHMM_PS_MAYWRITE | UHMM_PS_WRITABLE)),
			      "read-only page %zu: state %#x", i, st[i]);
		} else {
			CHECK(!(pfns[i] & UHMM_PFN_ERROR), "page %zu ERROR", i);
		}
		if (i < 2 || i >= 4)
			CHECK(!(st[i] & UHMM_PS_PRESENT), "page %zu faulted by a failed request", i);
	}
	CHECK(all_bytes(pg(p, 2), 0x21, page_size) && all_bytes(pg(p, 3), 0x31, page_size),
	      "read-only data changed");
	OK("-EPERM: write request over a PROT_READ mapping: ERROR there, data unchanged, "
	   "nothing faulted, still read-only");

	CHECK_EQ(do_fault(&rc, pg(p, 2), 2, pfns, REQ_RW, 0), -EPERM);
	CHECK(pfns[0] == UHMM_PFN_ERROR && pfns[1] == UHMM_PFN_ERROR, "pfns %#llx %#llx",
	      (unsigned long long)pfns[0], (unsigned long long)pfns[1]);
	OK("-EPERM: write request over the read-only data pages alone");

	CHECK_EQ(do_fault(&rc, pg(p, 2), 4, pfns, UHMM_PFN_REQ_FAULT, 0), 0);
	for (size_t i = 0; i < 4; i++)
		CHECK((pfns[i] & (UHMM_PFN_VALID | UHMM_PFN_WRITE)) == UHMM_PFN_VALID,
		      "read fault of read-only page %zu: %#llx", i + 2,
		      (unsigned long long)pfns[i]);
	CHECK(all_bytes(pg(p, 2), 0x21, page_size) && all_bytes(pg(p, 3), 0x31, page_size),
	      "read-only data changed");
	OK("-EPERM: a read request of the same pages succeeds with VALID, no WRITE");
	uhmm_interval_notifier_remove(&rc.mni);
	CHECK_EQ(munmap(p, N * page_size), 0);
}

/* ---- -EINVAL ---------------------------------------------------------------- */

static void test_einval(void)
{
	enum { N = 4 };
	char *p = map_anon(N * page_size, RW);
	uintptr_t a = (uintptr_t)p;
	uint64_t pfns[N + 1];
	uint32_t st[N];
	struct rec rc;
	struct uhmm_interval_notifier never = { 0 };
	struct uhmm_range r, good;

	/* The notifier covers pages 1 and 2 only. */
	rec_insert(&rc, pg(p, 1), 2 * page_size);
	good = (struct uhmm_range){
		.notifier = &rc.mni, .start = a + page_size, .end = a + 3 * page_size,
		.hmm_pfns = pfns, .default_flags = UHMM_PFN_REQ_FAULT,
	};
	good.notifier_seq = uhmm_interval_read_begin(&rc.mni);

	CHECK_EQ(uhmm_range_fault(NULL), -EINVAL);
	OK("-EINVAL: NULL range");
	r = good;
	r.notifier = NULL;
	CHECK_EQ(uhmm_range_fault(&r), -EINVAL);
	OK("-EINVAL: NULL notifier");
	r = good;
	r.hmm_pfns = NULL;
	CHECK_EQ(uhmm_range_fault(&r), -EINVAL);
	OK("-EINVAL: NULL hmm_pfns");
	r = good;
	r.start += 1;
	CHECK_EQ(uhmm_range_fault(&r), -EINVAL);
	OK("-EINVAL: unaligned start");
	r = good;
	r.end -= 8;
	CHECK_EQ(uhmm_range_fault(&r), -EINVAL);
	OK("-EINVAL: unaligned end");
	r = good;
	r.end = r.start;
	CHECK_EQ(uhmm_range_fault(&r), -EINVAL);
	OK("-EINVAL: end == start");
	r = good;
	r.end = r.start - page_size;
	CHECK_EQ(uhmm_range_fault(&r), -EINVAL);
	r.start = good.end;
	r.end = good.start;
	CHECK_EQ(uhmm_range_fault(&r), -EINVAL);
	OK("-EINVAL: end < start");
	r = good;
	r.start = a;
	CHECK_EQ(uhmm_range_fault(&r), -EINVAL);
	OK("-EINVAL: range starts before the notifier");
	r = good;
	r.end = a + 4 * page_size;
	CHECK_EQ(uhmm_range_fault(&r), -EINVAL);
	OK("-EINVAL: range ends after the notifier");
	r = good;
	r.start = a + 3 * page_size;
	r.end = a + 4 * page_size;
	CHECK_EQ(uhmm_range_fault(&r), -EINVAL);
	OK("-EINVAL: range entirely outside the notifier");
	r = good;
	r.notifier = &never;
	CHECK_EQ(uhmm_range_fault(&r), -EINVAL);
	OK("-EINVAL: notifier never inserted");
	states(p, N, st);
	for (size_t i = 0; i < N; i++)
		CHECK(!(st[i] & UHMM_PS_PRESENT), "page %zu faulted by an invalid request", i);
	OK("-EINVAL: none of the rejected requests faulted anything");

	/* The good request works, then not after remove. */
	CHECK_EQ(uhmm_range_fault(&good), 0);
	uhmm_interval_notifier_remove(&rc.mni);
	good.notifier_seq = uhmm_interval_read_begin(&rc.mni);
	CHECK_EQ(uhmm_range_fault(&good), -EINVAL);
	OK("-EINVAL: the valid request succeeds, and fails once the notifier is removed");
	CHECK_EQ(munmap(p, N * page_size), 0);
}

/* ---- -EBUSY ----------------------------------------------------------------- */

static void test_ebusy(void)
{
	enum { N = 8 };
	char *p = map_anon(N * page_size, RW);
	uint64_t pfns[N];
	struct rec rc;
	struct uhmm_range r;
	unsigned long seq;

	rec_insert(&rc, p, N * page_size);
	r = (struct uhmm_range){
		.notifier = &rc.mni, .start = (uintptr_t)p,
		.end = (uintptr_t)pg(p, 4), .hmm_pfns = pfns,
		.default_flags = UHMM_PFN_REQ_FAULT,
	};

	/* No invalidation between begin and fault: no retry. */
	r.notifier_seq = uhmm_interval_read_begin(&rc.mni);
	CHECK_EQ(uhmm_range_fault(&r), 0);
	CHECK(!uhmm_interval_read_retry(&rc.mni, r.notifier_seq), "spurious retry");
	OK("-EBUSY: without invalidation the fault succeeds and read_retry is false");

	seq = uhmm_interval_read_begin(&rc.mni);
	CHECK_EQ(munmap(pg(p, 7), page_size), 0);
	CHECK_EQ(atomic_load(&rc.calls), 1);
	r.notifier_seq = seq;
	CHECK_EQ(uhmm_range_fault(&r), -EBUSY);
	CHECK(uhmm_interval_read_retry(&rc.mni, seq), "read_retry false after munmap");
	CHECK(uhmm_interval_check_retry(&rc.mni, seq), "check_retry false after munmap");
	r.notifier_seq = uhmm_interval_read_begin(&rc.mni);
	CHECK(r.notifier_seq != seq, "read_begin returned the old sequence");
	CHECK_EQ(uhmm_range_fault(&r), 0);
	CHECK(!uhmm_interval_read_retry(&rc.mni, r.notifier_seq), "spurious retry");
	OK("-EBUSY: munmap of page 7 after read_begin: fault of pages 0-3 -EBUSY, "
	   "read_retry true; a new sequence succeeds");

	seq = uhmm_interval_read_begin(&rc.mni);
	CHECK_EQ(mprotect(pg(p, 6), page_size, PROT_READ), 0);
	CHECK_EQ(atomic_load(&rc.calls), 2);
	r.notifier_seq = seq;
	r.default_flags = 0;	/* a snapshot is refused too */
	CHECK_EQ(uhmm_range_fault(&r), -EBUSY);
	r.default_flags = UHMM_PFN_REQ_FAULT;
	CHECK_EQ(uhmm_range_fault(&r), -EBUSY);
	CHECK(uhmm_interval_read_retry(&rc.mni, seq), "read_retry false after mprotect");
	r.notifier_seq = uhmm_interval_read_begin(&rc.mni);
	CHECK_EQ(uhmm_range_fault(&r), 0);
	OK("-EBUSY: mprotect(PROT_READ) of page 6 after read_begin: snapshot and fault "
	   "-EBUSY, read_retry true; a new sequence succeeds");

	seq = uhmm_interval_read_begin(&rc.mni);
	CHECK_EQ(mprotect(pg(p, 5), page_size, PROT_NONE), 0);
	r.notifier_seq = seq;
	CHECK_EQ(uhmm_range_fault(&r), -EBUSY);
	CHECK(uhmm_interval_read_retry(&rc.mni, seq), "read_retry false after PROT_NONE");
	OK("-EBUSY: mprotect(PROT_NONE) of page 5 after read_begin: -EBUSY");
	uhmm_interval_notifier_remove(&rc.mni);
	unmap_around(p, N, 7);
}

/* ---- -EDEADLK from a callback ------------------------------------------------ */

static void test_edeadlk(void)
{
	enum { N = 4 };
	char *p = map_anon(N * page_size, RW);
	uint64_t pfns[2];
	uint32_t st[2];
	struct rec rc;
	struct uhmm_range inner;

	rec_insert(&rc, p, N * page_size);
	inner = (struct uhmm_range){
		.notifier = &rc.mni, .start = (uintptr_t)p, .end = (uintptr_t)pg(p, 2),
		.hmm_pfns = pfns, .default_flags = UHMM_PFN_REQ_FAULT,
	};
	inner.notifier_seq = uhmm_interval_read_begin(&rc.mni);
	rc.inner = &inner;
	atomic_store(&rc.inner_ret, 1);
	CHECK_EQ(munmap(pg(p, 3), page_size), 0);
	CHECK_EQ(atomic_load(&rc.inner_done), 1);
	CHECK_EQ(atomic_load(&rc.inner_ret), -EDEADLK);
	states(p, 2, st);
	CHECK(!(st[0] & UHMM_PS_PRESENT) && !(st[1] & UHMM_PS_PRESENT),
	      "the refused fault faulted pages");
	OK("-EDEADLK: uhmm_range_fault from inside the invalidate callback of a munmap");
	rc.inner = NULL;
	uhmm_interval_notifier_remove(&rc.mni);
	unmap_around(p, N, 3);
}

/* ---- THP ---------------------------------------------------------------------- */

static void test_thp(void)
{
	const size_t len = 2u << 20, n = len / page_size;
	char *p;
	uint64_t *pfns;
	uint32_t *st;
	struct rec rc;
	bool can_tell = (si.active & UHMM_FEAT_PAGEMAP_SCAN) || geteuid() == 0;
	long kb;

	if (strcmp(si.thp, "always") && strcmp(si.thp, "madvise")) {
		printf("%s: THP: transparent huge pages \"%s\": write fault of a huge "
		       "region not checked\n", test_name, si.thp);
		return;
	}
	p = map_aligned_2m(len, RW);
	CHECK_EQ(madvise(p, len, MADV_HUGEPAGE), 0);
	pfns = calloc(n, sizeof(*pfns));
	st = calloc(n, sizeof(*st));
	CHECK(pfns && st, "calloc");
	rec_insert(&rc, p, len);
	CHECK_EQ(do_fault(&rc, p, n, pfns, REQ_RW, 0), 0);
	for (size_t i = 0; i < n; i++) {
		CHECK((pfns[i] & (UHMM_PFN_VALID | UHMM_PFN_WRITE)) ==
		      (UHMM_PFN_VALID | UHMM_PFN_WRITE), "THP page %zu: %#llx", i,
		      (unsigned long long)pfns[i]);
		check_pfn_addr(pfns[i], pg(p, i), i);
	}
	OK("THP: write fault of a 2 MiB-aligned MADV_HUGEPAGE region: %zu pages VALID|WRITE", n);

	kb = smaps_anon_huge_kb(p, NULL, NULL);
	states(p, n, st);
	if (kb < 2048) {
		printf("%s: THP: region not PMD-mapped after the fault (AnonHugePages %ld kB): "
		       "order not checked\n", test_name, kb);
	} else if (!can_tell) {
		printf("%s: THP: PMD-mapped, but without PAGEMAP_SCAN and not root uhmm cannot "
		       "tell: order not checked\n", test_name);
	} else {
		for (size_t i = 0; i < n; i++) {
			CHECK_EQ(uhmm_pfn_to_map_order(pfns[i]), 9);
			CHECK(st[i] & UHMM_PS_HUGE, "page %zu: state %#x not HUGE", i, st[i]);
		}
		OK("THP: PMD-mapped (AnonHugePages %ld kB): every pfn has order 9, state HUGE",
		   kb);
	}
	uhmm_interval_notifier_remove(&rc.mni);
	free(pfns);
	free(st);
	CHECK_EQ(munmap(p, len), 0);
}

/* ---- a mapping created later in the interval, by another thread ------------ */

struct newmap {
	pthread_barrier_t go;	/* 1st: thread started; 2nd: the hole is ready */
	char *addr;
	size_t len;
	atomic_int state;	/* 1: mapped, -1: the hole was taken */
};

static void *newmap_thread(void *arg)
{
	struct newmap *nm = arg;
	void *q;

	pthread_barrier_wait(&nm->go);
	pthread_barrier_wait(&nm->go);
	if (!nm->addr) {		/* nothing to do */
		atomic_store(&nm->state, -1);
		return NULL;
	}
	q = mmap(nm->addr, nm->len, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
		 -1, 0);

	/*
	 * Relaxed on purpose: the faulting thread learns of the mapping only
	 * through the kernel, like a driver thread mirroring memory that the
	 * application maps.
	 */
	atomic_store_explicit(&nm->state, q == nm->addr ? 1 : -1, memory_order_relaxed);
	return NULL;
}

static bool new_mapping(int attempt)
{
	enum { N = 4 };
	struct newmap nm = { .len = N * page_size };
	uint64_t pfns[N];
	uint32_t st[N];
	struct rec rc;
	pthread_t t;
	int ret = -1, state = 0;
	bool early = false, hole = true;

	/* The thread first: starting it may map memory (sanitizer runtimes). */
	CHECK_EQ(pthread_barrier_init(&nm.go, NULL, 2), 0);
	CHECK_EQ(pthread_create(&t, NULL, newmap_thread, &nm), 0);
	pthread_barrier_wait(&nm.go);
	nm.addr = map_anon(nm.len, PROT_NONE);
	CHECK_EQ(munmap(nm.addr, nm.len), 0);
	rec_insert(&rc, nm.addr, nm.len);
	CHECK_EQ(do_fault(&rc, nm.addr, N, pfns, 0, 0), 0);
	for (size_t i = 0; i < N; i++)
		hole = hole && is_hole(pg(nm.addr, i));
	if (hole) {
		for (size_t i = 0; i < N; i++)
			CHECK(pfns[i] == UHMM_PFN_ERROR, "snapshot of a hole: page %zu: %#llx",
			      i, (unsigned long long)pfns[i]);
	} else {
		nm.addr = NULL;		/* not a hole any more: the thread does nothing */
	}
	pthread_barrier_wait(&nm.go);
	for (long k = 0; k < WAIT_SPINS && !state; k++) {
		state = atomic_load_explicit(&nm.state, memory_order_relaxed);
		if (!state)
			sched_yield();
	}
	if (state == 1) {
		/* Faulted while the mapping thread runs on, unsynchronised. */
		ret = do_fault(&rc, nm.addr, N, pfns, UHMM_PFN_REQ_FAULT, 0);
		early = true;
	}
	CHECK_EQ(pthread_join(t, NULL), 0);
	pthread_barrier_destroy(&nm.go);
	if (!hole || atomic_load(&nm.state) < 0) {
		hole_reused("new mapping", attempt);
		uhmm_interval_notifier_remove(&rc.mni);
		return false;
	}
	if (!early)
		ret = do_fault(&rc, nm.addr, N, pfns, UHMM_PFN_REQ_FAULT, 0);
	CHECK_EQ(ret, 0);
	states(nm.addr, N, st);
	for (size_t i = 0; i < N; i++) {
		CHECK(pfns[i] & UHMM_PFN_VALID, "page %zu: %#llx", i, (unsigned long long)pfns[i]);
		check_pfn_addr(pfns[i], pg(nm.addr, i), i);
		CHECK(st[i] & UHMM_PS_PRESENT, "page %zu not present", i);
		CHECK(all_bytes(pg(nm.addr, i), 0, page_size), "page %zu not zero", i);
	}
	OK("new mapping: a hole snapshots as ERROR; once another thread maps it, a read "
	   "fault of the notifier's range makes it VALID and present (%s)",
	   early ? "faulted while that thread ran on" : "faulted after joining it");
	uhmm_interval_notifier_remove(&rc.mni);
	CHECK_EQ(munmap(nm.addr, nm.len), 0);
	return true;
}

static void test_new_mapping(void)
{
	int attempt = 0;

	while (!new_mapping(attempt))
		CHECK(++attempt < HOLE_TRIES, "the hole was reused %d times in a row",
		      HOLE_TRIES);
}

/* ---- an error of the first read, gone in the fresh re-read ------------------ */

/*
 * The kernel's hmm_range_fault repeats its walk while a walk returns
 * -EBUSY (it did fault something, or the page tables changed) and returns
 * what the last walk found: a page that is fine when looked at again is
 * not an error.  uhmm reads the mappings from a cached copy first (without
 * PROCMAP_QUERY) and again, fresh, when a request cannot be met.  A
 * mapping made with a raw mmap system call does not change the copy's
 * generation: the first read sees a hole, the fresh one the mapping.
 */
static bool fresh_reread(int attempt)
{
	enum { N = 4 };
	uint64_t pfns[N];
	uint32_t st[N];
	struct rec rc;
	char *p = map_anon(N * page_size, PROT_NONE);
	void *q;
	int ret;

	CHECK_EQ(munmap(p, N * page_size), 0);
	rec_insert(&rc, p, N * page_size);
	/*
	 * A read fault of the hole fails (-EFAULT); it reads the copy of the
	 * mappings now, with the hole, and leaves the walk's buffers on the
	 * library's free lists, so the next walk maps nothing new (a mapping
	 * the library makes itself renews the copy).
	 */
	ret = do_fault(&rc, p, N, pfns, UHMM_PFN_REQ_FAULT, 0);
	if (!is_hole(p) || !is_hole(pg(p, N - 1))) {
		hole_reused("fresh re-read", attempt);
		uhmm_interval_notifier_remove(&rc.mni);
		return false;
	}
	CHECK(ret == -EFAULT, "read fault of a hole: %d", ret);
	q = (void *)syscall(SYS_mmap, p, N * page_size, RW,
			    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (q != p) {
		CHECK(q == MAP_FAILED && errno == EEXIST, "raw mmap: %p, errno %d", q, errno);
		hole_reused("fresh re-read", attempt);
		uhmm_interval_notifier_remove(&rc.mni);
		return false;
	}
	ret = do_fault(&rc, p, N, pfns, UHMM_PFN_REQ_FAULT, 0);
	CHECK(ret == 0, "read fault of a mapping the cached maps did not know: %d (%s)",
	      ret, uhmm_last_error());
	states(p, N, st);
	for (size_t i = 0; i < N; i++) {
		CHECK(pfns[i] & UHMM_PFN_VALID, "page %zu: %#llx", i, (unsigned long long)pfns[i]);
		check_pfn_addr(pfns[i], pg(p, i), i);
		CHECK(st[i] & UHMM_PS_PRESENT, "page %zu not present", i);
	}
	OK("fresh re-read: a mapping made behind the wrappers' back faults in (VALID, "
	   "present); the first read's hole is not an error (%s)",
	   si.active & UHMM_FEAT_PROCMAP_QUERY ? "PROCMAP_QUERY: every read is fresh"
					       : "cached maps, then a fresh read");
	uhmm_interval_notifier_remove(&rc.mni);
	CHECK_EQ(munmap(p, N * page_size), 0);
	return true;
}

static void test_fresh_reread(void)
{
	int attempt = 0;

	while (!fresh_reread(attempt))
		CHECK(++attempt < HOLE_TRIES, "the hole was reused %d times in a row",
		      HOLE_TRIES);
}

/* ---- the sequence protocol under concurrency ------------------------------- */

#define CN		32	/* pages in the mirrored region */
#define MUT_ITERS	2000	/* CPU-side changes */
#define MAP_MAX_PASSES	200000	/* bound on the mirroring thread */
#define MAP_AHEAD	8	/* mirror passes per CPU-side step, at most */

struct dev {
	struct uhmm_interval_notifier mni;
	pthread_mutex_t lock;		/* protects pt */
	uint64_t pt[CN];		/* the fake device page table */
	char *base;
	atomic_ulong invalidations;
};

static struct dev dev;
/* Per page: odd while it is being unmapped and re-created (content in flux). */
static atomic_uint flux[CN];
/* Per page: 1 from the return of munmap / mprotect(PROT_NONE) until it is restored. */
static atomic_int gone[CN];
static atomic_int mut_done, map_done, hole_taken;
static atomic_int mut_iters;
/* The part the CPU-side thread is changing: 1 << 16 | first << 8 | count. */
static atomic_uint target;
static atomic_ulong mut_steps, passes, commits, n_ebusy, n_efault, n_retry, n_checked;

static char pattern(size_t i)
{
	return (char)(0x11 + 3 * i);
}

static bool dev_inv(struct uhmm_interval_notifier *mni,
		    const struct uhmm_notifier_range *r, unsigned long cur_seq)
{
	struct dev *d = (struct dev *)((char *)mni - offsetof(struct dev, mni));
	uintptr_t b = (uintptr_t)d->base;

	pthread_mutex_lock(&d->lock);
	uhmm_interval_set_seq(mni, cur_seq);
	for (size_t i = 0; i < CN; i++) {
		uintptr_t a = b + i * page_size;

		if (a >= r->start && a < r->end)
			d->pt[i] = 0;
	}
	pthread_mutex_unlock(&d->lock);
	atomic_fetch_add(&d->invalidations, 1);
	return true;
}

static const struct uhmm_interval_notifier_ops dev_ops = { .invalidate = dev_inv };

/*
 * Every committed entry must still be right: called with dev.lock held.  The
 * device reads the first byte of each VALID page through its entry, as DMA
 * would, with one process_vm_readv() (which fails instead of faulting on
 * memory that is not readable: it stops at the first such page).
 */
static void dev_verify(void)
{
	struct iovec local[CN], remote[CN];
	size_t idx[CN], n = 0;
	unsigned int f1[CN];
	char got[CN];
	ssize_t r;

	for (size_t i = 0; i < CN; i++) {
		uint64_t e = dev.pt[i];
		uintptr_t a = (uintptr_t)pg(dev.base, i);

		if (!(e & UHMM_PFN_VALID))
			continue;
		TCHECK(uhmm_pfn_to_addr(e) == a, "device entry %zu names %#lx", i,
		       (unsigned long)uhmm_pfn_to_addr(e));
		if (atomic_load(&gone[i])) {
			bool unmapped = atomic_load(&flux[i]) & 1;

			if (unmapped && !is_hole((void *)a)) {
				/* Another component mapped our hole: fair game. */
				atomic_store(&hole_taken, 1);
				continue;
			}
			TCHECK(false, "stale device entry: page %zu is VALID in the device "
			       "table but its CPU mapping was already %s (the invalidate "
			       "callback must have cleared it and no fill may commit it "
			       "again)", i, unmapped ? "unmapped" : "made PROT_NONE");
		}
		f1[n] = atomic_load(&flux[i]);
		local[n] = (struct iovec){ .iov_base = &got[n], .iov_len = 1 };
		remote[n] = (struct iovec){ .iov_base = (void *)uhmm_pfn_to_addr(e),
					    .iov_len = 1 };
		idx[n++] = i;
	}
	if (!n)
		return;
	r = process_vm_readv(getpid(), local, n, remote, n, 0);
	TCHECK(r == (ssize_t)n, "stale device entry: page %zu is VALID but the device "
	       "cannot read it (%s)", r >= 0 && (size_t)r < n ? idx[r] : idx[0],
	       r < 0 ? strerror(errno) : "partial read");
	for (size_t k = 0; k < n; k++) {
		size_t i = idx[k];
		unsigned int f2;

		if (got[k] == pattern(i))
			continue;
		f2 = atomic_load(&flux[i]);
		TCHECK((f1[k] & 1) || f1[k] != f2,
		       "device entry %zu reads %#x, expected %#x (page not being "
		       "re-created)", i, (unsigned char)got[k], (unsigned char)pattern(i));
	}
	atomic_fetch_add(&n_checked, n);
}

/* Do not run far ahead of the CPU-side thread (bounded wait). */
static void wait_mutator(void)
{
	for (int k = 0; k < WAIT_SPINS && !atomic_load(&mut_done) &&
			atomic_load(&passes) >= MAP_AHEAD * (atomic_load(&mut_steps) + 1); k++)
		sched_yield();
}

static void *mirror_thread(void *arg)
{
	uint64_t pfns[CN];

	(void)arg;
	for (unsigned long k = 0; k < MAP_MAX_PASSES && !atomic_load(&mut_done); k++) {
		size_t s = (k * 7) % CN, n = 1 + k % 8;
		unsigned int t = atomic_load(&target);
		struct uhmm_range r;
		int ret;

		if (k % 2 && t) {
			/* Every other pass: the part the CPU side is changing now. */
			s = (t >> 8) & 0xff;
			n = t & 0xff;
		}

		if (s + n > CN)
			n = CN - s;
		r = (struct uhmm_range){
			.notifier = &dev.mni,
			.start = (uintptr_t)pg(dev.base, s),
			.end = (uintptr_t)pg(dev.base, s + n),
			.hmm_pfns = pfns,
			.default_flags = UHMM_PFN_REQ_FAULT,
		};
		r.notifier_seq = uhmm_interval_read_begin(&dev.mni);
		ret = uhmm_range_fault(&r);
		TCHECK(ret == 0 || ret == -EBUSY || ret == -EFAULT,
		      "concurrent range fault returned %d", ret);
		pthread_mutex_lock(&dev.lock);
		if (ret == 0) {
			if (uhmm_interval_read_retry(&dev.mni, r.notifier_seq)) {
				atomic_fetch_add(&n_retry, 1);
			} else {
				for (size_t i = 0; i < n; i++) {
					TCHECK(pfns[i] & UHMM_PFN_VALID,
					      "fault succeeded but page %zu is %#llx", s + i,
					      (unsigned long long)pfns[i]);
					dev.pt[s + i] = pfns[i];
				}
				atomic_fetch_add(&commits, 1);
			}
		} else if (ret == -EBUSY) {
			atomic_fetch_add(&n_ebusy, 1);
		} else {
			atomic_fetch_add(&n_efault, 1);
		}
		dev_verify();
		pthread_mutex_unlock(&dev.lock);
		atomic_fetch_add(&passes, 1);
		wait_mutator();
	}
	atomic_store(&map_done, 1);
	return NULL;
}

/* Let the mirror make two more passes (bounded): it checks stale entries. */
static void wait_mirror(void)
{
	unsigned long target = atomic_load(&passes) + 2;

	for (int k = 0; k < WAIT_SPINS && atomic_load(&passes) < target &&
			!atomic_load(&map_done); k++)
		sched_yield();
}

static void *mutator_thread(void *arg)
{
	uint32_t x = 12345;

	(void)arg;
	for (int it = 0; it < MUT_ITERS; it++) {
		size_t a, n;
		char *addr;

		atomic_fetch_add(&mut_steps, 1);
		x = x * 1103515245u + 12345u;
		a = (x >> 8) % CN;
		n = 1 + (x >> 20) % 4;
		if (a + n > CN)
			n = CN - a;
		addr = pg(dev.base, a);
		atomic_store(&target, (unsigned int)(1u << 16 | a << 8 | n));
		if (it % 2 == 0) {
			TCHECK(mprotect(addr, n * page_size, PROT_NONE) == 0, "mprotect: %s",
			       strerror(errno));
			for (size_t i = a; i < a + n; i++)
				atomic_store(&gone[i], 1);
			atomic_fetch_add(&mut_steps, 1);
			wait_mirror();
			for (size_t i = a; i < a + n; i++)
				atomic_store(&gone[i], 0);
			TCHECK(mprotect(addr, n * page_size, RW) == 0, "mprotect: %s",
			       strerror(errno));
		} else {
			void *q;

			for (size_t i = a; i < a + n; i++)
				atomic_fetch_add(&flux[i], 1);
			TCHECK(munmap(addr, n * page_size) == 0, "munmap: %s", strerror(errno));
			for (size_t i = a; i < a + n; i++)
				atomic_store(&gone[i], 1);
			atomic_fetch_add(&mut_steps, 1);
			wait_mirror();
			for (size_t i = a; i < a + n; i++)
				atomic_store(&gone[i], 0);
			/*
			 * MAP_FIXED, but never over a mapping that another
			 * component placed in the hole meanwhile: then stop.
			 */
			q = mmap(addr, n * page_size, RW,
				 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
			if (q == MAP_FAILED && errno == EEXIST) {
				atomic_store(&hole_taken, 1);
				break;
			}
			TCHECK(q == addr, "re-mmap: %s", strerror(errno));
			for (size_t i = a; i < a + n; i++)
				__atomic_store_n(pg(dev.base, i), pattern(i), __ATOMIC_RELAXED);
			for (size_t i = a; i < a + n; i++)
				atomic_fetch_add(&flux[i], 1);
		}
		atomic_fetch_add(&mut_iters, 1);
	}
	atomic_store(&mut_done, 1);
	return NULL;
}

static void segv_handler(int sig, siginfo_t *info, void *ctx)
{
	static const char hex[] = "0123456789abcdef";
	static const char head[] = "test_range_fault: FAIL: fatal signal at 0x";
	static const char tail[] = " in the concurrent test (the test itself never "
				   "touches memory it may have unmapped: a range fault did)\n";
	char msg[sizeof(head) + 16 + sizeof(tail)];
	size_t l = sizeof(head) - 1;
	uintptr_t a = (uintptr_t)info->si_addr;

	(void)sig;
	(void)ctx;
	memcpy(msg, head, l);
	for (int s = (int)sizeof(a) * 8 - 4; s >= 0; s -= 4)
		msg[l++] = hex[(a >> s) & 0xf];
	memcpy(msg + l, tail, sizeof(tail) - 1);
	l += sizeof(tail) - 1;
	if (write(2, msg, l) < 0)
		_exit(3);
	_exit(1);
}

static void test_concurrent(void)
{
	struct sigaction sa = { 0 }, old_segv, old_bus;
	pthread_t tm, tu;
	uint64_t pfns[CN];
	int ret = -EBUSY;

	dev.base = map_anon(CN * page_size, RW);
	for (size_t i = 0; i < CN; i++)
		memset(pg(dev.base, i), pattern(i), page_size);
	CHECK_EQ(pthread_mutex_init(&dev.lock, NULL), 0);
	CHECK_EQ(uhmm_interval_notifier_insert(&dev.mni, mm, (uintptr_t)dev.base,
					       CN * page_size, &dev_ops), 0);

	sa.sa_sigaction = segv_handler;
	sa.sa_flags = SA_SIGINFO;
	sigemptyset(&sa.sa_mask);
	CHECK_EQ(sigaction(SIGSEGV, &sa, &old_segv), 0);
	CHECK_EQ(sigaction(SIGBUS, &sa, &old_bus), 0);

	CHECK_EQ(pthread_create(&tm, NULL, mirror_thread, NULL), 0);
	CHECK_EQ(pthread_create(&tu, NULL, mutator_thread, NULL), 0);
	CHECK_EQ(pthread_join(tu, NULL), 0);
	CHECK_EQ(pthread_join(tm, NULL), 0);
	CHECK(atomic_load(&mut_done), "the CPU-side thread did not finish");
	CHECK(atomic_load(&map_done), "the mirroring thread did not finish");
	CHECK(atomic_load(&dev.invalidations) >= (unsigned long)atomic_load(&mut_iters),
	      "only %lu invalidations for %d changes", atomic_load(&dev.invalidations),
	      atomic_load(&mut_iters));
	OK("concurrent: %d CPU-side changes, %lu passes: %lu commits, %lu -EBUSY, "
	   "%lu -EFAULT, %lu read_retry; %lu committed entries checked against memory; "
	   "%lu invalidations; no stale entry", atomic_load(&mut_iters),
	   atomic_load(&passes), atomic_load(&commits), atomic_load(&n_ebusy),
	   atomic_load(&n_efault), atomic_load(&n_retry), atomic_load(&n_checked),
	   atomic_load(&dev.invalidations));
	CHECK_EQ(sigaction(SIGSEGV, &old_segv, NULL), 0);
	CHECK_EQ(sigaction(SIGBUS, &old_bus, NULL), 0);
	if (atomic_load(&hole_taken)) {
		printf("%s: note: concurrent: another component mapped a page the test had "
		       "unmapped (the test stopped there without touching it); the final "
		       "fill is not checked\n", test_name);
		uhmm_interval_notifier_remove(&dev.mni);
		for (size_t i = 0; i < CN; i++)
			if (!(atomic_load(&flux[i]) & 1))
				CHECK_EQ(munmap(pg(dev.base, i), page_size), 0);
		pthread_mutex_destroy(&dev.lock);
		return;
	}

	/* Quiet now: the documented loop fills the whole table (bounded retries). */
	for (int tries = 0; tries < 100 && ret == -EBUSY; tries++) {
		struct uhmm_range r = {
			.notifier = &dev.mni, .start = (uintptr_t)dev.base,
			.end = (uintptr_t)pg(dev.base, CN), .hmm_pfns = pfns,
			.default_flags = UHMM_PFN_REQ_FAULT,
		};

		r.notifier_seq = uhmm_interval_read_begin(&dev.mni);
		ret = uhmm_range_fault(&r);
		if (ret)
			continue;
		pthread_mutex_lock(&dev.lock);
		if (uhmm_interval_read_retry(&dev.mni, r.notifier_seq)) {
			ret = -EBUSY;
		} else {
			memcpy(dev.pt, pfns, sizeof(pfns));
			dev_verify();
		}
		pthread_mutex_unlock(&dev.lock);
	}
	if (ret) {
		uint32_t st[CN];

		states(dev.base, CN, st);
		for (size_t i = 0; i < CN; i++)
			fprintf(stderr, "page %2zu: pfn %#llx state %#x\n", i,
				(unsigned long long)pfns[i], st[i]);
	}
	CHECK(ret == 0, "fill of the quiet region returned %d", ret);
	for (size_t i = 0; i < CN; i++) {
		CHECK(dev.pt[i] & UHMM_PFN_VALID, "page %zu not VALID", i);
		CHECK_EQ(*pg(dev.base, i), pattern(i));
	}
	OK("concurrent: afterwards the full region fills and every page holds its pattern");

	uhmm_interval_notifier_remove(&dev.mni);
	CHECK_EQ(munmap(dev.base, CN * page_size), 0);
	pthread_mutex_destroy(&dev.lock);
}

static void start(void)
{
	mm = test_mm();
	CHECK_EQ(uhmm_sysinfo(&si), 0);
	printf("%s: active features %#x, zero page %d, THP %s, euid %d\n", test_name,
	       si.active, si.zero_page, si.thp, (int)geteuid());
}

static int finish(void)
{
	uhmm_mm_put(mm);
	return 0;
}

static const struct test_case cases[] = {
	TEST_CASE(test_read_fault),
	TEST_CASE(test_write_fault),
	TEST_CASE(test_per_page),
	TEST_CASE(test_cow_break),
	TEST_CASE(test_efault),
	TEST_CASE(test_eperm),
	TEST_CASE(test_einval),
	TEST_CASE(test_ebusy),
	TEST_CASE(test_edeadlk),
	TEST_CASE(test_thp),
	TEST_CASE(test_new_mapping),
	TEST_CASE(test_fresh_reread),
	TEST_CASE(test_concurrent),
};

TEST_MAIN("test_range_fault", start, finish)
