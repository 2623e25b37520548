// SPDX-License-Identifier: MIT
/*
 * Device-exclusive access, built on migration: taking a page exclusively
 * migrates it into an internal pool whose "device memory" is a host holding
 * area the device reads and writes directly; a CPU access migrates it back
 * (only that page, after an EXCLUSIVE invalidation with no owner, so every
 * mirror stops using the holding address first).  Reusing migration gives
 * exclusive pages everything migrated pages have: freezing without losing
 * CPU writes, fork and teardown bringing them home, munmap / mremap /
 * discard handling, and the no-UFFDIO_MOVE fallback.
 *
 * Taking a page follows the kernel's make_device_exclusive: the page is
 * faulted in writable first from the calling thread (a page in device
 * memory through its device's migrate_to_ram, as a CPU fault brings it
 * home; a page in a migration waited for), and a page another thread moved
 * away before the migration took it is faulted in and taken again.
 */
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "context.h"
#include "devmem_priv.h"
#include "exclusive_priv.h"
#include "features_priv.h"
#include "inject_priv.h"
#include "log.h"
#include "migrate_priv.h"
#include "ownmem.h"
#include "ptable.h"
#include "range_priv.h"
#include "sigblock.h"
#include "sys.h"
#include "uffd.h"
#include "vma.h"

#define EXCL_PAGES (UINT64_C(1) << 18)	/* 1 GiB of holding address space */
/*
 * Looks at one page that the service thread or a fork holds busy, and
 * rounds of fault-in and migration of one page that another thread keeps
 * moving between the two (to a device, into a migration of its own).
 */
#define EXCL_PAGE_TRIES	1000

struct excl_pool {
	struct uhmm_devmem pgmap;
	char *arena;
	size_t *free_list;
	size_t nr_free;
	pthread_mutex_t lock;
	int token;
};

static char *slot_mem(struct excl_pool *x, struct uhmm_page *p)
{
	return x->arena + (uhmm_page_index(p) << uhmm__page_shift);
}

static void excl_page_free(struct uhmm_page *p)
{
	struct excl_pool *x = p->pgmap->driver_data;

	__atomic_store_n(&p->zone_device_data, NULL, __ATOMIC_RELEASE);
	/* Give the holding memory back to the system. */
	uhmm__sys_madvise(slot_mem(x, p), uhmm__page_size, MADV_DONTNEED);
	pthread_mutex_lock(&x->lock);
	x->free_list[x->nr_free++] = uhmm_page_index(p);
	pthread_mutex_unlock(&x->lock);
}

/* Migrate the exclusive pages of [s, e) back; the holding page is the source. */
static int excl_back(struct excl_pool *x, struct uhmm_mm *mm, uintptr_t s, uintptr_t e,
		     struct uhmm_page *fault_page)
{
	size_t n = (e - s) >> uhmm__page_shift;
	uint64_t stack_src[16], stack_dst[16];
	uint64_t *src = n <= 16 ? stack_src : uhmm__malloc(n * 8);
	uint64_t *dst = n <= 16 ? stack_dst : uhmm__malloc(n * 8);
	struct uhmm_migrate_vma m = {
		.mm = mm, .start = s, .end = e, .src = src, .dst = dst,
		.pgmap_owner = &x->token, .fault_page = fault_page,
		.flags = UHMM_MIGRATE_VMA_SELECT_DEVICE_PRIVATE | UHMM__MIGRATE_EXCLUSIVE,
	};
	int ret;

	if (!src || !dst) {
		ret = -ENOMEM;
		goto out;
	}
	ret = uhmm_migrate_vma_setup(&m);
	if (ret)
		goto out;
	for (size_t i = 0; i < n; i++) {
		struct uhmm_page *p;

		if (!(src[i] & UHMM_MIGRATE_PFN_MIGRATE))
			continue;
		p = uhmm__pfn_to_page(mm, uhmm_migrate_pfn_to_pfn(src[i]));
		if (p)
			dst[i] = uhmm_migrate_pfn((uintptr_t)slot_mem(x, p) >> uhmm__page_shift);
	}
	uhmm_migrate_vma_pages(&m);
	uhmm_migrate_vma_finalize(&m);
out:
	if (src != stack_src)
		uhmm__free(src);
	if (dst != stack_dst)
		uhmm__free(dst);
	return ret;
}

/* A CPU access revokes exclusivity of exactly that page. */
static int excl_migrate_to_ram(struct uhmm_vm_fault *vmf)
{
	struct excl_pool *x = vmf->page->pgmap->driver_data;

	return excl_back(x, vmf->mm, vmf->address, vmf->address + uhmm__page_size, vmf->page);
}

static const struct uhmm_devmem_ops excl_ops = {
	.page_free = excl_page_free,
	.migrate_to_ram = excl_migrate_to_ram,
};

static struct excl_pool *get_pool(struct uhmm_mm *mm)
{
	struct excl_pool *x;

	pthread_mutex_lock(&mm->excl_lock);
	if (mm->excl_pool) {
		x = mm->excl_pool->driver_data;
		pthread_mutex_unlock(&mm->excl_lock);
		return x;
	}
	x = uhmm__calloc(1, sizeof(*x));
	if (!x)
		goto fail;
	x->arena = uhmm__sys_mmap(NULL, EXCL_PAGES << uhmm__page_shift,
				  PROT_READ | PROT_WRITE,
				  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	x->free_list = uhmm__malloc(EXCL_PAGES * sizeof(size_t));
	if (x->arena == MAP_FAILED || !x->free_list)
		goto fail_x;
	for (size_t i = 0; i < EXCL_PAGES; i++)
		x->free_list[i] = EXCL_PAGES - 1 - i;
	x->nr_free = EXCL_PAGES;
	pthread_mutex_init(&x->lock, NULL);
	x->pgmap.ops = &excl_ops;
	x->pgmap.owner = &x->token;
	x->pgmap.nr_pages = EXCL_PAGES;
	x->pgmap.fault_around = 1;
	x->pgmap.driver_data = x;
	if (uhmm__devmem_add(mm, &x->pgmap, true))
		goto fail_x;
	__atomic_store_n(&mm->excl_pool, &x->pgmap, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&mm->excl_lock);
	return x;

fail_x:
	if (x->arena != MAP_FAILED && x->arena)
		uhmm__sys_munmap(x->arena, EXCL_PAGES << uhmm__page_shift);
	uhmm__free(x->free_list);
	uhmm__free(x);
fail:
	pthread_mutex_unlock(&mm->excl_lock);
	return NULL;
}

void uhmm__exclusive_teardown(struct uhmm_mm *mm)
{
	struct excl_pool *x;

	if (!mm->excl_pool)
		return;
	x = mm->excl_pool->driver_data;
	__atomic_store_n(&mm->excl_pool, NULL, __ATOMIC_RELEASE);
	uhmm__pool_detach(mm, &x->pgmap);
	uhmm__sys_munmap(x->arena, EXCL_PAGES << uhmm__page_shift);
	uhmm__free(x->free_list);
	pthread_mutex_destroy(&x->lock);
	uhmm__free(x);
}

static void *held_by(struct uhmm_mm *mm, struct excl_pool *x, uintptr_t a, const void *owner)
{
	uint64_t e = uhmm__ptable_get(&mm->ptable, a);
	struct uhmm_page *p;

	if ((e & UHMM__PTE_TYPE_MASK) != UHMM__PTE_DEVICE)
		return NULL;
	p = uhmm__pfn_to_page(mm, uhmm__pte_payload(e));
	if (!p || p->pgmap != &x->pgmap ||
	    __atomic_load_n(&p->zone_device_data, __ATOMIC_ACQUIRE) != owner)
		return NULL;
	return slot_mem(x, p);
}

/*
 * The mapping holding [start, end): pieces that uhmm's own userfaultfd
 * registration split off (a migration registers exactly its range) count
 * as one, as they do for migration; *@n = 0 if the range is not in one.
 */
static int excl_find_mapping(uintptr_t start, uintptr_t end, struct uhmm__vma *out, size_t *n)
{
	const unsigned int kind = UHMM__VMA_READ | UHMM__VMA_WRITE | UHMM__VMA_EXEC |
				  UHMM__VMA_SHARED | UHMM__VMA_FILE | UHMM__VMA_ANON |
				  UHMM__VMA_SHMEM | UHMM__VMA_HUGETLB | UHMM__VMA_SPECIAL;
	struct uhmm__vma v[64];
	int ret;

	for (int tries = 0;; tries++) {
		bool one = true;

		ret = uhmm__vma_find(start, end, v, UHMM__ARRAY_SIZE(v), n, true);
		if (ret || *n == 0 || *n > UHMM__ARRAY_SIZE(v)) {
			*n = 0;
			return ret;
		}
		for (size_t i = 1; i < *n && one; i++)
			one = v[i].start == v[i - 1].end &&
			      (v[i].flags & kind) == (v[0].flags & kind) &&
			      uhmm__is_our_split(&uhmm__the_mm, v[i].start);
		if (one)
			break;
		if (tries > 0) {
			*n = 0;
			return 0;
		}
		/*
		 * A migration registering exactly its range splits the
		 * mapping before it notes the split (under reg_lock): let a
		 * registration in flight finish, and look once more.
		 */
		pthread_mutex_lock(&uhmm__the_mm.reg_lock);
		pthread_mutex_unlock(&uhmm__the_mm.reg_lock);
	}
	out->start = v[0].start;
	out->end = v[*n - 1].end;
	out->flags = v[0].flags;
	return 0;
}

/*
 * One page not held by the caller's owner, as the kernel's GUP with
 * FOLL_WRITE finds it before make_device_exclusive: a page in device memory
 * (a device's, or held exclusively by another owner) is brought home by its
 * device's migrate_to_ram from this thread, as a CPU write fault would (the
 * kernel's do_swap_page on a device-private entry); a page in a migration
 * is waited for (the kernel's migration_entry_wait), a page the service
 * thread is filling is looked at again.  A page its device cannot give
 * back stays where it is and is not taken.
 */
static int excl_bring_home(struct uhmm_mm *mm, uintptr_t a)
{
	for (int tries = 0; tries < EXCL_PAGE_TRIES; tries++) {
		uint64_t e = uhmm__ptable_get(&mm->ptable, a);
		int ret;

		switch (e & UHMM__PTE_TYPE_MASK) {
		case UHMM__PTE_DEVICE: {
			struct uhmm__fault f = {
				.vmf = { .mm = mm, .address = a, .write = true },
			};

			ret = uhmm__fault_device(&f, e);
			if (ret != -EAGAIN)
				return ret;
			break;		/* busy (fork, another fault): look again */
		}
		case UHMM__PTE_MIGRATING:
			uhmm__wait_migrations(mm, a, a + uhmm__page_size);
			continue;
		case UHMM__PTE_BUSY:
			break;
		default:
			return 0;	/* in the CPU page table (or never touched) */
		}
		sched_yield();
	}
	return -EBUSY;
}

/* Fault [a, b) in writable from this thread, as a CPU write would. */
static void excl_populate(struct uhmm_mm *mm, uintptr_t a, uintptr_t b)
{
	struct uhmm__vma v;
	size_t n = 0;

	if (uhmm__has(UHMM_FEAT_MADV_POPULATE)) {
		if (uhmm__sys_madvise((void *)a, b - a, MADV_POPULATE_WRITE) == 0)
			return;
		/*
		 * A user-mode-only userfaultfd refuses the kernel-mode fault
		 * of a never-touched page in a range uhmm registered: touch
		 * instead.  Any other failure leaves the pages as they are
		 * (the migration then takes what it can).
		 */
		if (errno != EFAULT || uhmm__sysinfo()->uffd_mode != UHMM_UFFD_USER_ONLY)
			return;
	}
	/*
	 * Under as_lock a wrapped munmap / mprotect cannot pull the pages
	 * away between the check and the touches.
	 */
	pthread_rwlock_rdlock(&mm->as_lock);
	if (!excl_find_mapping(a, b, &v, &n) && n && v.start <= a && b <= v.end &&
	    (v.flags & UHMM__VMA_WRITE))
		for (uintptr_t c = a; c < b; c += uhmm__page_size)
			uhmm__touch_one(c, true);	/* unseen by TSan */
	pthread_rwlock_unlock(&mm->as_lock);
}

/*
 * Fault in every page of [start, end) that @owner does not hold yet;
 * return whether there was any.
 */
static bool excl_fault_in(struct uhmm_mm *mm, struct excl_pool *x, uintptr_t start,
			  uintptr_t end, const void *owner)
{
	bool todo = false;

	for (uintptr_t a = start; a < end;) {
		uintptr_t b = a;

		while (b < end && !held_by(mm, x, b, owner)) {
			(void)excl_bring_home(mm, b);	/* a page not home is not taken */
			b += uhmm__page_size;
		}
		if (b > a) {
			todo = true;
			excl_populate(mm, a, b);
		}
		a = b + uhmm__page_size;
	}
	return todo;
}

/*
 * Give every page the setup selected a holding page with its data; false
 * if the holding pool ran out of pages.
 */
static bool excl_take(struct uhmm_migrate_vma *m, struct excl_pool *x, const void *owner,
		      size_t npages)
{
	for (size_t i = 0; i < npages; i++) {
		struct uhmm_page *p = NULL;
		const void *from;

		if (!(m->src[i] & UHMM_MIGRATE_PFN_MIGRATE))
			continue;
		pthread_mutex_lock(&x->lock);
		if (x->nr_free)
			p = uhmm_devmem_page(&x->pgmap, x->free_list[--x->nr_free]);
		pthread_mutex_unlock(&x->lock);
		if (!p)
			return false;
		uhmm_page_init(p);
		__atomic_store_n(&p->zone_device_data, (void *)owner, __ATOMIC_RELEASE);
		from = uhmm_migrate_pfn_addr(m, i);
		if (from)
			memcpy(slot_mem(x, p), from, uhmm__page_size);
		else
			memset(slot_mem(x, p), 0, uhmm__page_size);
		m->dst[i] = uhmm_migrate_pfn(uhmm_page_to_pfn(p)) | UHMM_MIGRATE_PFN_WRITE;
	}
	return true;
}

/*
 * One migration of [s, e) into the holding pool: 0, -ENOSPC when the pool
 * ran out, or the setup's error.
 */
static int excl_take_range(struct uhmm_mm *mm, struct excl_pool *x, const void *owner,
			   uintptr_t s, uintptr_t e, uint64_t *src, uint64_t *dst,
			   bool *selected)
{
	struct uhmm_migrate_vma m = {
		.mm = mm, .start = s, .end = e, .src = src, .dst = dst,
		.pgmap_owner = owner,
		.flags = UHMM_MIGRATE_VMA_SELECT_SYSTEM | UHMM__MIGRATE_EXCLUSIVE,
	};
	int ret = uhmm_migrate_vma_setup(&m);

	if (ret)
		return ret;
	if (selected)
		*selected = m.cpages > 0;
	if (!excl_take(&m, x, owner, (e - s) >> uhmm__page_shift))
		ret = -ENOSPC;
	uhmm_migrate_vma_pages(&m);
	uhmm_migrate_vma_finalize(&m);
	return ret;
}

/*
 * Rounds in a row in which a page in the CPU page table was not selected
 * by the migration before the page is given up as one the kernel will not
 * move (see excl_retake).
 */
#define EXCL_STUCK_TRIES 2
/*
 * The same, when another migration finished during the round: the page may
 * have gone to a device and come back meanwhile (not selected because it
 * was in that migration), which is no refusal; but a page the kernel
 * refuses beside a busy process must still be given up in bounded time.
 */
#define EXCL_STUCK_BUSY_TRIES 16

/*
 * A page another thread took between its fault-in and the migration (to
 * its device, into a migration of its own): fault it in and take it
 * again, alone, as the kernel's make_device_exclusive retries a page whose
 * page table entry changed after GUP.  Given up when its device cannot
 * give it back, the migration fails (the mapping changed) or the holding
 * pool is full, or after EXCL_PAGE_TRIES rounds.
 *
 * Also given up, after EXCL_STUCK_TRIES rounds, when the page is in the
 * CPU page table (uhmm has no entry for it) before and after a migration
 * that did not select it: nothing of uhmm's moved it away, the freeze's
 * UFFDIO_MOVE refused it (seen on pieces of THPs under the stress mix; a
 * large folio the kernel cannot split, e.g. with extra references), and
 * further rounds were refused alike (issue 12: up to 1000 each).  Such
 * a page is returned not taken (its pages[] entry NULL), as the kernel's
 * make_device_exclusive leaves a page it cannot take.
 */
static void excl_retake(struct uhmm_mm *mm, struct excl_pool *x, const void *owner,
			uintptr_t a, uint64_t *src, uint64_t *dst)
{
	int stuck = 0, stuck_busy = 0;

	for (int tries = 0; tries < EXCL_PAGE_TRIES; tries++) {
		bool selected = false;
		uint64_t before;
		unsigned long done0;

		if (excl_bring_home(mm, a))
			return;
		excl_populate(mm, a, a + uhmm__page_size);
		before = uhmm__ptable_get(&mm->ptable, a);
		done0 = atomic_load_explicit(&mm->migrations_done, memory_order_relaxed);
		if (excl_take_range(mm, x, owner, a, a + uhmm__page_size, src, dst, &selected) ||
		    held_by(mm, x, a, owner))
			return;
		if (!selected && before == 0 && uhmm__ptable_get(&mm->ptable, a) == 0) {
			/* Our own take finalizes once: more means another migration ran. */
			bool alone = atomic_load_explicit(&mm->migrations_done,
							  memory_order_relaxed) - done0 <= 1;

			if (alone ? ++stuck >= EXCL_STUCK_TRIES : ++stuck_busy >= EXCL_STUCK_BUSY_TRIES)
				return;
		} else {
			stuck = 0;
		}
	}
}

static long make_exclusive(struct uhmm_mm *mm, uintptr_t start, size_t npages,
			   const void *owner, void **pages)
{
	const unsigned int ps = uhmm__page_shift;
	struct excl_pool *x;
	struct uhmm__vma v;
	uint64_t *src, *dst;
	size_t n = 0;
	long held = 0;
	uintptr_t end;
	int ret;

	if (!mm || !pages || !owner)
		return uhmm__err(EINVAL, "make exclusive: NULL argument");
	if (mm != &uhmm__the_mm || atomic_load(&mm->state) != UHMM__MM_LIVE)
		return uhmm__err(EINVAL, "make exclusive: context is not live");
	if (!uhmm__page_aligned(start) || npages == 0 ||
	    npages > (UINTPTR_MAX >> ps) || start + (npages << ps) <= start)
		return uhmm__err(EINVAL, "make exclusive: unaligned, empty or wrapping range");
	if (uhmm__in_callback())
		return uhmm__err(EDEADLK, "make exclusive from a uhmm callback");
	end = start + (npages << ps);
	for (size_t i = 0; i < npages; i++)
		pages[i] = NULL;
	ret = excl_find_mapping(start, end, &v, &n);
	if (ret)	/* no memory to look: not "no mapping" (issue 12) */
		return uhmm__err(-ret, "make exclusive: cannot read the mappings of [%#lx, %#lx)",
				 (unsigned long)start, (unsigned long)end);
	if (n == 0 || v.start > start || v.end < end)
		return uhmm__err(EINVAL, "make exclusive: [%#lx, %#lx) is not inside one mapping",
				 (unsigned long)start, (unsigned long)end);
	if (v.flags & UHMM__VMA_HUGETLB)
		return uhmm__err(EINVAL, "make exclusive: [%#lx, %#lx) is hugetlbfs: huge pages "
				 "cannot be taken exclusive (the kernel refuses hugetlb folios)",
				 (unsigned long)start, (unsigned long)end);
	if (!(v.flags & UHMM__VMA_READ))
		return uhmm__err(EINVAL, "make exclusive: no access to [%#lx, %#lx)",
				 (unsigned long)start, (unsigned long)end);
	if (v.flags & UHMM__VMA_SPECIAL)
		return uhmm__err(EINVAL, "make exclusive: [%#lx, %#lx) is an IO mapping",
				 (unsigned long)start, (unsigned long)end);
	if (!(v.flags & UHMM__VMA_WRITE))
		return uhmm__err(EPERM, "make exclusive: [%#lx, %#lx) is not writable",
				 (unsigned long)start, (unsigned long)end);
	if (!(v.flags & UHMM__VMA_ANON) || (v.flags & UHMM__VMA_SHARED))
		return 0;	/* only private anonymous pages can be taken */
	x = get_pool(mm);
	if (!x)
		return uhmm__err(ENOMEM, "make exclusive: no memory for the holding area");

	src = uhmm__malloc(npages * 8);
	dst = uhmm__malloc(npages * 8);
	if (!src || !dst) {
		uhmm__free(src);
		uhmm__free(dst);
		return uhmm__err(ENOMEM, "make exclusive: out of memory");
	}
	if (excl_fault_in(mm, x, start, end, owner)) {
		ret = excl_take_range(mm, x, owner, start, end, src, dst, NULL);
		if (ret && ret != -ENOSPC) {
			uhmm__free(src);
			uhmm__free(dst);
			return ret;
		}
		for (uintptr_t a = start; a < end && !ret; a += uhmm__page_size)
			if (!held_by(mm, x, a, owner))
				excl_retake(mm, x, owner, a, src, dst);
	}
	uhmm__free(src);
	uhmm__free(dst);

	for (size_t i = 0; i < npages; i++) {
		pages[i] = held_by(mm, x, start + (i << ps), owner);
		held += pages[i] != NULL;
	}
	return held;
}

/* No signal handler on this thread while pages are taken (sigblock.h). */
long uhmm_make_exclusive(struct uhmm_mm *mm, uintptr_t start, size_t npages,
			 const void *owner, void **pages)
{
	long ret;

	uhmm__sig_enter();
	ret = make_exclusive(mm, start, npages, owner, pages);
	uhmm__sig_leave();
	return ret;
}

void *uhmm_exclusive_held(struct uhmm_mm *mm, uintptr_t addr, const void *owner)
{
	struct excl_pool *x;

	if (!mm || mm != &uhmm__the_mm) {
		uhmm__err(EINVAL, "uhmm_exclusive_held: NULL or not a uhmm context");
		return NULL;
	}
	if (!mm->excl_pool)
		return NULL;
	x = mm->excl_pool->driver_data;
	return held_by(mm, x, uhmm__page_align_down(addr), owner);
}
