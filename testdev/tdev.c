/* SPDX-License-Identifier: MIT */
/* tdev: the tests' and the benchmark's device (tdev.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "tdev.h"

/* One failure-injection counter: true while it lets the operation pass. */
static bool tdev_pass(atomic_long *after)
{
	long f = atomic_load(after);

	if (f < 0)
		return true;
	if (f == 0)
		return false;
	atomic_fetch_sub(after, 1);
	return true;
}

/*
 * A free page (d->lock held): the one freed last, or next-fit from where
 * the last search ended.  Returns its index, or -1 (none free, or an
 * injected allocation failure).
 */
static long tdev_alloc_index(struct tdev *d)
{
	if (!tdev_pass(&d->fail_alloc_after) || !d->nr_free)
		return -1;
	d->nr_free--;
	if (!(d->flags & TDEV_NEXT_FIT))
		return (long)d->free_list[d->nr_free];
	while (d->used[d->cursor])
		d->cursor = (d->cursor + 1) % d->nr_pages;
	d->used[d->cursor] = 1;
	return (long)d->cursor;
}

/*
 * TDEV_COMPOUND: the head of 512 free pages aligned to 512, for a 2 MiB
 * device page (d->lock held).  Returns its index, or -1 (none free, or an
 * injected allocation failure).
 */
static long tdev_alloc_huge(struct tdev *d)
{
	const size_t nr = (size_t)1 << UHMM_PMD_ORDER;

	if (!tdev_pass(&d->fail_alloc_after) || d->nr_free < nr)
		return -1;
	for (size_t h = 0; h + nr <= d->nr_pages; h += nr) {
		size_t k = 0;

		while (k < nr && !d->used[h + k])
			k++;
		if (k == nr) {
			memset(d->used + h, 1, nr);
			d->nr_free -= nr;
			return (long)h;
		}
	}
	return -1;
}

/*
 * d->lock from outside a migration: asynchronous signals stay blocked
 * while it is held.  migrate_to_ram runs on uhmm's service thread and its
 * finalize frees pages (tdev_page_free takes d->lock); a signal handler
 * that touched device memory while this thread held the lock would wait
 * for that migration, which waits for the lock (docs/CONCURRENCY.md,
 * "Signals": a driver's lock is uhmm's problem too).  Inside a migration
 * (setup to finalize) and on the service thread uhmm has them blocked
 * already, so tdev_fill_dev() and tdev_page_free() take the lock plainly.
 */
static void tdev_lock_outside(struct tdev *d, sigset_t *saved)
{
	sigset_t all;

	sigfillset(&all);
	sigdelset(&all, SIGSEGV);	/* raised by the thread's own access */
	sigdelset(&all, SIGBUS);
	sigdelset(&all, SIGFPE);
	sigdelset(&all, SIGILL);
	sigdelset(&all, SIGTRAP);
	sigdelset(&all, SIGSYS);
	pthread_sigmask(SIG_BLOCK, &all, saved);
	pthread_mutex_lock(&d->lock);
}

static void tdev_unlock_outside(struct tdev *d, const sigset_t *saved)
{
	pthread_mutex_unlock(&d->lock);
	pthread_sigmask(SIG_SETMASK, saved, NULL);
}

struct uhmm_page *tdev_alloc(struct tdev *d)
{
	struct uhmm_page *p;
	sigset_t saved;
	long idx;

	tdev_lock_outside(d, &saved);
	idx = tdev_alloc_index(d);
	tdev_unlock_outside(d, &saved);
	if (idx < 0)
		return NULL;
	p = uhmm_devmem_page(&d->pgmap, (size_t)idx);
	uhmm_page_init(p);
	return p;
}

void tdev_page_free(struct uhmm_page *p)
{
	struct tdev *d = p->pgmap->driver_data;

	size_t nr = (size_t)1 << uhmm_page_order(p);	/* a 2 MiB page is freed whole */

	atomic_fetch_add(&d->frees, 1);
	pthread_mutex_lock(&d->lock);
	if (d->flags & TDEV_NEXT_FIT)
		memset(d->used + uhmm_page_index(p), 0, nr);
	else
		d->free_list[d->nr_free] = uhmm_page_index(p);
	d->nr_free += nr;
	pthread_mutex_unlock(&d->lock);
}

size_t tdev_used(struct tdev *d)
{
	sigset_t saved;
	size_t used;

	tdev_lock_outside(d, &saved);
	used = d->nr_pages - d->nr_free;
	tdev_unlock_outside(d, &saved);
	return used;
}

/*
 * The copy engine: one memcpy per run of pages contiguous on both sides
 * (as the memcpy baseline of the benchmark copies).
 */
struct tdev_run {
	char *to;
	const char *from;
	size_t len;
};

static void tdev_run_flush(struct tdev_run *r)
{
	if (r->len)
		memcpy(r->to, r->from, r->len);
	r->len = 0;
}

static void tdev_run_add(struct tdev_run *r, char *to, const char *from, size_t len)
{
	if (r->len && r->to + r->len == to && r->from + r->len == from) {
		r->len += len;
		return;
	}
	tdev_run_flush(r);
	*r = (struct tdev_run){ .to = to, .from = from, .len = len };
}

/* Bytes an entry of a migration covers: 2 MiB for a compound one. */
static size_t tdev_entry_len(struct tdev *d, uint64_t mpfn)
{
	return (mpfn & UHMM_MIGRATE_PFN_COMPOUND) ? d->page_size << UHMM_PMD_ORDER
						  : d->page_size;
}

/*
 * To the device: allocate every destination first (one lock hold), then
 * copy run by run.  A copy that fails gives its page back: the entry is
 * not migrated and keeps its data in system memory.  A compound source
 * (TDEV_COMPOUND) gets a 2 MiB device page, or, where none is free, a
 * small one for its head (uhmm splits the block).
 */
static long tdev_fill_dev(struct tdev *d, struct uhmm_migrate_vma *m, size_t n)
{
	struct tdev_run run = { 0 };
	long moved = 0;

	pthread_mutex_lock(&d->lock);
	for (size_t i = 0; i < n; i++) {
		struct uhmm_page *p;
		long idx;

		if (!(m->src[i] & UHMM_MIGRATE_PFN_MIGRATE))
			continue;
		if (m->src[i] & UHMM_MIGRATE_PFN_COMPOUND) {
			idx = tdev_alloc_huge(d);
			if (idx >= 0) {
				p = uhmm_devmem_page(&d->pgmap, (size_t)idx);
				uhmm_folio_init(p, UHMM_PMD_ORDER);
				m->dst[i] = uhmm_migrate_pfn(uhmm_page_to_pfn(p)) |
					    (m->src[i] & UHMM_MIGRATE_PFN_WRITE) |
					    UHMM_MIGRATE_PFN_COMPOUND;
				continue;
			}
			/* No 2 MiB page: this block's head only (a split). */
		}
		idx = tdev_alloc_index(d);
		if (idx < 0)
			continue;
		p = uhmm_devmem_page(&d->pgmap, (size_t)idx);
		uhmm_page_init(p);
		m->dst[i] = uhmm_migrate_pfn(uhmm_page_to_pfn(p)) |
			    (m->src[i] & UHMM_MIGRATE_PFN_WRITE);
	}
	pthread_mutex_unlock(&d->lock);
	for (size_t i = 0; i < n; i++) {
		size_t len = tdev_entry_len(d, m->dst[i]);
		struct uhmm_page *p;
		const void *from;
		char *to;

		if (!m->dst[i])
			continue;
		p = uhmm_pfn_to_page(d->mm, uhmm_migrate_pfn_to_pfn(m->dst[i]));
		if (!tdev_pass(&d->fail_copy_after)) {
			m->dst[i] = 0;
			uhmm_page_unlock(p);
			uhmm_page_put(p);
			continue;
		}
		to = tdev_page_mem(d, p);
		from = uhmm_migrate_pfn_addr(m, i);
		if (from) {
			tdev_run_add(&run, to, from, len);
		} else {
			tdev_run_flush(&run);
			memset(to, 0, len);
		}
		moved += (long)(len / d->page_size);
	}
	tdev_run_flush(&run);
	return moved;
}

/*
 * Back to system memory: as a device the CPU cannot read, DMA into the
 * system page uhmm gives (one it recycles when it can), which finalize
 * moves into place.
 */
static long tdev_fill_sys(struct tdev *d, struct uhmm_migrate_vma *m, size_t n)
{
	struct tdev_run run = { 0 };
	long moved = 0;

	for (size_t i = 0; i < n; i++) {
		struct uhmm_page *p;
		void *to;

		if (!(m->src[i] & UHMM_MIGRATE_PFN_MIGRATE))
			continue;
		p = uhmm_pfn_to_page(d->mm, uhmm_migrate_pfn_to_pfn(m->src[i]));
		if (!p || !tdev_pass(&d->fail_copy_after))
			continue;
		to = uhmm_migrate_alloc_sys(m, i);
		if (!to)
			continue;
		tdev_run_add(&run, to, tdev_page_mem(d, p), tdev_entry_len(d, m->src[i]));
		moved += (long)(tdev_entry_len(d, m->src[i]) / d->page_size);
	}
	tdev_run_flush(&run);
	return moved;
}

/*
 * The src and dst arrays of a migration.  Never malloc in migrate_to_ram:
 * it runs on uhmm's service thread to serve a CPU fault, and that fault
 * may come from a signal handler whose thread was interrupted inside
 * malloc, holding the allocator's lock, which the service thread's malloc
 * then waits for while the handler waits for the service thread
 * (docs/CONCURRENCY.md, "Signals"; tests/test_signals.c hung so under
 * ASan).  So a migration of up to TDEV_STACK_PAGES pages (uhmm's largest
 * fault-around window, FAULT_AROUND_MAX; a 2 MiB compound window is 512)
 * keeps them on the stack (32 KiB; the service threads have 1 MiB), and a
 * larger migrate_to_ram window gets a mapping of its own: mmap is an
 * async-signal-safe system call, and the raw munmap keeps uhmm's wrapper
 * (and its invalidations) out of a callback on the service thread.  A
 * larger migration without a fault page is the caller's own, on its own
 * thread, where malloc is the application's business (the bulk
 * migrations of the tests and the benchmark).
 */
#define TDEV_STACK_PAGES 2048

static uint64_t *tdev_arrays_get(size_t n, bool fault, uint64_t *stack)
{
	void *p;

	if (n <= TDEV_STACK_PAGES)
		return stack;
	if (!fault)
		return calloc(2 * n, sizeof(uint64_t));
	p = mmap(NULL, 2 * n * sizeof(uint64_t), PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

static void tdev_arrays_put(uint64_t *a, size_t n, bool fault, uint64_t *stack)
{
	if (a == stack)
		return;
	if (!fault)
		free(a);
	else
		syscall(SYS_munmap, a, 2 * n * sizeof(uint64_t));
}

long tdev_migrate(struct tdev *d, uintptr_t start, uintptr_t end, bool to_dev,
		  struct uhmm_page *fault_page, unsigned long *cpages)
{
	size_t n = (end - start) / d->page_size;
	uint64_t stack[2 * TDEV_STACK_PAGES];
	uint64_t *arrays = tdev_arrays_get(n, fault_page != NULL, stack);
	uint64_t *src = arrays, *dst = arrays ? arrays + n : NULL;
	struct uhmm_migrate_vma m = {
		.mm = d->mm, .start = start, .end = end, .src = src, .dst = dst,
		.pgmap_owner = &d->owner_token, .fault_page = fault_page,
		.flags = (to_dev ? UHMM_MIGRATE_VMA_SELECT_SYSTEM
				 : UHMM_MIGRATE_VMA_SELECT_DEVICE_PRIVATE) |
			 ((d->flags & TDEV_COMPOUND) ? UHMM_MIGRATE_VMA_SELECT_COMPOUND : 0),
	};
	long moved;
	int ret;

	if (!arrays)
		return -ENOMEM;
	ret = uhmm_migrate_vma_setup(&m);
	if (ret) {
		moved = ret;
		goto out;
	}
	if (cpages)
		*cpages = m.cpages;
	moved = to_dev ? tdev_fill_dev(d, &m, n) : tdev_fill_sys(d, &m, n);
	uhmm_migrate_vma_pages(&m);
	uhmm_migrate_vma_finalize(&m);
out:
	tdev_arrays_put(arrays, n, fault_page != NULL, stack);
	return moved;
}

int tdev_migrate_to_ram(struct uhmm_vm_fault *vmf)
{
	struct tdev *d = vmf->page->pgmap->driver_data;
	long r;

	atomic_fetch_add(&d->cpu_faults, 1);
	r = tdev_migrate(d, vmf->window_start, vmf->window_end, false, vmf->page, NULL);
	if (r < 0)
		return (int)r;
	atomic_fetch_add(&d->to_ram_pages, r);
	return 0;
}

const struct uhmm_devmem_ops tdev_ops = {
	.page_free = tdev_page_free,
	.migrate_to_ram = tdev_migrate_to_ram,
};

void tdev_free(struct tdev *d)
{
	if (d->arena && d->arena != MAP_FAILED)
		munmap(d->arena, d->nr_pages * d->page_size);
	free(d->used);
	free(d->free_list);
	pthread_mutex_destroy(&d->lock);
	free(d);
}

int tdev_open(struct uhmm_mm *mm, size_t nr_pages, size_t fault_around,
	      const struct uhmm_devmem_ops *ops, unsigned int flags, struct tdev **out)
{
	struct tdev *d = calloc(1, sizeof(*d));
	int ret;

	if (!d)
		return -ENOMEM;
	pthread_mutex_init(&d->lock, NULL);
	d->mm = mm;
	if (flags & TDEV_COMPOUND)
		flags |= TDEV_NEXT_FIT;
	d->flags = flags;
	d->page_size = (size_t)sysconf(_SC_PAGESIZE);
	d->nr_pages = nr_pages;
	d->nr_free = nr_pages;
	atomic_store(&d->fail_alloc_after, -1);
	atomic_store(&d->fail_copy_after, -1);
	d->arena = mmap(NULL, nr_pages * d->page_size, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	d->used = calloc(nr_pages ? nr_pages : 1, 1);
	d->free_list = calloc(nr_pages ? nr_pages : 1, sizeof(size_t));
	if (d->arena == MAP_FAILED || !d->used || !d->free_list) {
		tdev_free(d);
		return -ENOMEM;
	}
	for (size_t i = 0; i < nr_pages; i++)	/* the top of the stack: page 0 */
		d->free_list[i] = nr_pages - 1 - i;
	d->pgmap.ops = ops ? ops : &tdev_ops;
	d->pgmap.owner = &d->owner_token;
	d->pgmap.nr_pages = nr_pages;
	d->pgmap.fault_around = fault_around;
	d->pgmap.driver_data = d;
	d->pgmap.flags = (flags & TDEV_COMPOUND) ? UHMM_DEVMEM_COMPOUND : 0;
	ret = uhmm_devmem_add(mm, &d->pgmap);
	if (ret) {
		tdev_free(d);
		return ret;
	}
	*out = d;
	return 0;
}

int tdev_close(struct tdev *d)
{
	int ret = uhmm_devmem_remove(&d->pgmap);

	if (ret)
		return ret;
	ret = tdev_used(d) ? -ENOTEMPTY : 0;
	tdev_free(d);
	return ret;
}
