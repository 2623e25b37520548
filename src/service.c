// SPDX-License-Identifier: MIT
/*
 * The service thread: reads the context's userfaultfd and handles its page
 * faults and non-cooperative events (UNMAP, REMOVE, REMAP).
 *
 * Rules the kernel imposes (docs/CONCURRENCY.md has the full story):
 *  - A thread that munmaps, mremaps or MADV_DONTNEEDs a registered range
 *    sleeps in the kernel until this thread has *read* the event, and while
 *    the event is unread UFFDIO_COPY/ZEROPAGE/MOVE fail with EAGAIN.  So this
 *    thread never blocks on a lock that such a thread may hold, and a fault
 *    whose resolution fails with EAGAIN is retried after reading events.
 *  - This thread must never unmap or discard registered memory itself.
 *
 * The event sequence (ev_read / ev_done) lets a thread whose system call may
 * have produced an event wait until that event has been *processed*, so that
 * for example munmap() returns only after the special entries of the range
 * were dropped.
 */
#include <poll.h>
#include <sched.h>
#include <sys/syscall.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

#define MSG_BATCH 64

/* ---- changes the wrappers already notified ---------------------------- */

int uhmm__selfop_begin(struct uhmm_mm *mm, struct uhmm_selfop *op,
		       uintptr_t start, uintptr_t end, unsigned int flags)
{
	op->start = start;
	op->end = end;
	op->flags = flags;
	pthread_mutex_lock(&mm->selfop_lock);
	op->next = mm->selfops;
	mm->selfops = op;
	pthread_mutex_unlock(&mm->selfop_lock);
	return 0;
}

void uhmm__selfop_end(struct uhmm_mm *mm, struct uhmm_selfop *op)
{
	struct uhmm_selfop **pp;

	pthread_mutex_lock(&mm->selfop_lock);
	for (pp = &mm->selfops; *pp; pp = &(*pp)->next) {
		if (*pp == op) {
			*pp = op->next;
			break;
		}
	}
	pthread_mutex_unlock(&mm->selfop_lock);
}

/* UHMM_SELFOP_* flags of the change(s) covering [start, end), 0 if none. */
static unsigned int selfop_covers(struct uhmm_mm *mm, uintptr_t start, uintptr_t end)
{
	struct uhmm_selfop *op;
	unsigned int ret = 0;

	pthread_mutex_lock(&mm->selfop_lock);
	for (op = mm->selfops; op; op = op->next)
		if (op->start <= start && end <= op->end)
			ret |= op->flags;
	pthread_mutex_unlock(&mm->selfop_lock);
	return ret;
}

/* ---- event sequence ---------------------------------------------------- */

void uhmm__events_sync(struct uhmm_mm *mm)
{
	unsigned long r = atomic_load_explicit(&mm->ev_read, memory_order_acquire);

	if (atomic_load_explicit(&mm->ev_done, memory_order_acquire) >= r ||
	    uhmm__is_service_thread)
		return;
	pthread_mutex_lock(&mm->ev_lock);
	while (atomic_load_explicit(&mm->ev_done, memory_order_acquire) < r)
		pthread_cond_wait(&mm->ev_cond, &mm->ev_lock);
	pthread_mutex_unlock(&mm->ev_lock);
}

static void events_done(struct uhmm_mm *mm, unsigned long seq)
{
	pthread_mutex_lock(&mm->ev_lock);
	atomic_store_explicit(&mm->ev_done, seq, memory_order_release);
	pthread_cond_broadcast(&mm->ev_cond);
	pthread_mutex_unlock(&mm->ev_lock);
}

/* ---- registration ------------------------------------------------------ */

void uhmm__register_for_events(struct uhmm_mm *mm, uintptr_t start, uintptr_t end)
{
	struct uhmm_vma vmas[64];
	size_t n = 0;

	if (!uhmm__has(UHMM_FEAT_UFFD_WP))
		return;
	while (start < end) {
		size_t i;

		/* Fresh: the cache may miss mappings libc made without a wrapper. */
		if (uhmm__vma_find(start, end, vmas, UHMM_ARRAY_SIZE(vmas), &n, true) ||
		    n == 0)
			return;
		for (i = 0; i < UHMM_MIN(n, UHMM_ARRAY_SIZE(vmas)); i++) {
			struct uffdio_register reg = { .mode = UFFDIO_REGISTER_MODE_WP };
			uintptr_t s = UHMM_MAX(vmas[i].start, start);
			uintptr_t e = UHMM_MIN(vmas[i].end, end);

			if (!(vmas[i].flags & (UHMM_VMA_ANON | UHMM_VMA_SHMEM)) ||
			    (vmas[i].flags & (UHMM_VMA_HUGETLB | UHMM_VMA_SPECIAL)))
				continue;
			reg.range.start = s;
			reg.range.len = e - s;
			pthread_mutex_lock(&mm->reg_lock);
			if (ioctl(mm->uffd, UFFDIO_REGISTER, &reg) < 0)
				uhmm__warn("could not register [%#lx, %#lx) for events: %s",
					   (unsigned long)s, (unsigned long)e,
					   strerror(errno));
			pthread_mutex_unlock(&mm->reg_lock);
		}
		if (n <= UHMM_ARRAY_SIZE(vmas))
			return;
		start = vmas[UHMM_ARRAY_SIZE(vmas) - 1].end;
	}
}

/* ---- faults ------------------------------------------------------------ */

/* Resolve a fault on a page uhmm holds nothing for: map a zeroed page. */
static int fault_fill_zero(struct uhmm_mm *mm, uintptr_t page)
{
	struct uffdio_zeropage z = {
		.range = { .start = page, .len = uhmm__page_size },
	};

	if (ioctl(mm->uffd, UFFDIO_ZEROPAGE, &z) == 0)
		return 0;
	if (errno == EEXIST) {
		/* Populated meanwhile (a migration put it back): just wake. */
		struct uffdio_range r = { .start = page, .len = uhmm__page_size };

		ioctl(mm->uffd, UFFDIO_WAKE, &r);
		return 0;
	}
	return -errno;
}

/*
 * Handle one page fault.  Returns -EAGAIN when it must be retried after the
 * pending events are read.
 */
static int handle_fault(struct uhmm_mm *mm, const struct uffd_msg *msg)
{
	uintptr_t page = uhmm__page_align_down((uintptr_t)msg->arg.pagefault.address);
	uint64_t flags = msg->arg.pagefault.flags;
	_Atomic uint64_t *slot;
	uint64_t e;
	int ret;

	if (flags & UFFD_PAGEFAULT_FLAG_WP) {
		/* uhmm write-protects nothing it does not also resolve. */
		struct uffdio_writeprotect wp = {
			.range = { .start = page, .len = uhmm__page_size },
			.mode = 0,
		};

		if (ioctl(mm->uffd, UFFDIO_WRITEPROTECT, &wp) < 0 && errno == EAGAIN)
			return -EAGAIN;
		return 0;
	}

	slot = uhmm__ptable_slot(&mm->ptable, page, false);
	e = slot ? atomic_load_explicit(slot, memory_order_acquire) : 0;
	switch (e & UHMM_PTE_TYPE_MASK) {
	case 0:
		/*
		 * Claim the page so a migration that starts collecting it now
		 * sees it busy, fill it, and release the claim.
		 */
		slot = uhmm__ptable_slot(&mm->ptable, page, true);
		if (!slot)
			return fault_fill_zero(mm, page);
		e = 0;
		if (!uhmm__ptable_cmpxchg(&mm->ptable, slot, &e, UHMM_PTE_BUSY))
			return -EAGAIN;	/* changed under us: look again */
		ret = fault_fill_zero(mm, page);
		e = UHMM_PTE_BUSY;
		uhmm__ptable_cmpxchg(&mm->ptable, slot, &e, 0);
		return ret;
	case UHMM_PTE_MIGRATING:
	case UHMM_PTE_BUSY:
		/*
		 * The migration wakes the faulting thread when it finishes;
		 * the thread then faults again and finds the final entry.
		 */
		return 0;
	case UHMM_PTE_DEVICE:
		ret = uhmm__fault_device(mm, page, e,
					 (flags & UFFD_PAGEFAULT_FLAG_WRITE) != 0);
		if (ret == -EAGAIN)
			return -EAGAIN;
		if (ret) {
			/* The device could not give the page back: SIGBUS. */
			uhmm__warn("migrate_to_ram failed for %#lx: %d",
				   (unsigned long)page, ret);
			syscall(SYS_tgkill, getpid(), (pid_t)msg->arg.pagefault.feat.ptid,
				SIGBUS);
		}
		{
			struct uffdio_range r = { .start = page, .len = uhmm__page_size };

			ioctl(mm->uffd, UFFDIO_WAKE, &r);
		}
		return 0;
	default:
		/* Device-exclusive: served by the exclusive-access layer. */
		return 0;
	}
}

/* ---- events ------------------------------------------------------------ */

/* Drop every special entry in [start, end): the memory is gone. */
struct drop_ctx {
	struct uhmm_mm *mm;
	bool keep_device;
};

static int drop_entry(void *arg, uintptr_t addr, _Atomic uint64_t *slot, uint64_t e)
{
	struct drop_ctx *c = arg;
	struct uhmm_mm *mm = c->mm;

	(void)addr;
	for (;;) {
		switch (e & UHMM_PTE_TYPE_MASK) {
		case UHMM_PTE_MIGRATING:
			/* The migration drops it when it finishes. */
			if (uhmm__ptable_cmpxchg(&mm->ptable, slot, &e, e | UHMM_PTE_GONE))
				return 0;
			continue;
		case UHMM_PTE_DEVICE:
			if (c->keep_device)
				return 0;	/* MADV_FREE keeps device pages */
			if (uhmm__ptable_cmpxchg(&mm->ptable, slot, &e, 0)) {
				uhmm__drop_device_entry(mm, e);
				return 0;
			}
			continue;
		case UHMM_PTE_BUSY:
			return 0;
		default:
			if (uhmm__ptable_cmpxchg(&mm->ptable, slot, &e, 0))
				return 0;
			continue;
		}
	}
}

static void drop_range(struct uhmm_mm *mm, uintptr_t s, uintptr_t e, bool keep_device)
{
	struct drop_ctx c = { .mm = mm, .keep_device = keep_device };

	uhmm__ptable_walk(&mm->ptable, s, e, drop_entry, &c);
}

static void handle_event(struct uhmm_mm *mm, const struct uffd_msg *msg)
{
	uintptr_t s, e;
	unsigned int self;

	switch (msg->event) {
	case UFFD_EVENT_UNMAP:
		s = msg->arg.remove.start;
		e = msg->arg.remove.end;
		atomic_fetch_add(&uhmm__as_gen, 1);
		self = selfop_covers(mm, s, e);
		if (self & UHMM_SELFOP_INTERNAL)
			break;
		if (!(self & UHMM_SELFOP_NOTIFIED))
			uhmm__invalidate(mm, s, e, UHMM_NOTIFY_UNMAP,
					 UHMM_NOTIFY_FLAG_AFTER, NULL);
		drop_range(mm, s, e, false);
		break;
	case UFFD_EVENT_REMOVE:
		s = msg->arg.remove.start;
		e = msg->arg.remove.end;
		self = selfop_covers(mm, s, e);
		if (self & UHMM_SELFOP_INTERNAL)
			break;
		if (!(self & UHMM_SELFOP_NOTIFIED))
			uhmm__invalidate(mm, s, e, UHMM_NOTIFY_DISCARD,
					 UHMM_NOTIFY_FLAG_AFTER, NULL);
		drop_range(mm, s, e, (self & UHMM_SELFOP_KEEP_DEVICE) != 0);
		break;
	case UFFD_EVENT_REMAP:
		s = msg->arg.remap.from;
		e = s + msg->arg.remap.len;
		atomic_fetch_add(&uhmm__as_gen, 1);
		self = selfop_covers(mm, s, e);
		if (self & UHMM_SELFOP_INTERNAL)
			break;
		if (!(self & UHMM_SELFOP_NOTIFIED))
			uhmm__invalidate(mm, s, e, UHMM_NOTIFY_UNMAP,
					 UHMM_NOTIFY_FLAG_AFTER, NULL);
		uhmm__ptable_move(mm, s, msg->arg.remap.to, msg->arg.remap.len);
		break;
	default:
		break;
	}
}

/*
 * Process the messages of one read; faults that must wait are queued, and
 * with @queue_faults every fault is (reading events from inside a device
 * callback must not call into a device again).
 */
static void process_msgs(struct uhmm_mm *mm, const struct uffd_msg *msgs, size_t n,
			 bool queue_faults)
{
	for (size_t i = 0; i < n; i++) {
		if (msgs[i].event == UFFD_EVENT_PAGEFAULT) {
			if (queue_faults || handle_fault(mm, &msgs[i]) == -EAGAIN) {
				if (mm->nretry < UHMM_RETRY_MAX)
					mm->retry[mm->nretry++] = msgs[i];
				else
					uhmm__warn("fault retry queue full: "
						   "the fault is served when it recurs");
			}
		} else {
			handle_event(mm, &msgs[i]);
		}
	}
}

void uhmm__service_drain_events(struct uhmm_mm *mm)
{
	struct uffd_msg msgs[16];
	unsigned long seq;
	ssize_t got;

	if (!uhmm__is_service_thread)
		return;
	seq = atomic_fetch_add_explicit(&mm->ev_read, 1, memory_order_acq_rel) + 1;
	got = read(mm->uffd, msgs, sizeof(msgs));
	if (got > 0)
		process_msgs(mm, msgs, (size_t)got / sizeof(msgs[0]), true);
	else
		sched_yield();
	events_done(mm, seq);
}

/* mremap moved a range: its special entries move with it. */
void uhmm__ptable_move(struct uhmm_mm *mm, uintptr_t from, uintptr_t to, size_t len)
{
	for (size_t off = 0; off < len; off += uhmm__page_size) {
		_Atomic uint64_t *os = uhmm__ptable_slot(&mm->ptable, from + off, false);
		_Atomic uint64_t *ns;
		uint64_t e = os ? atomic_load(os) : 0, z = 0;

		if (!e)
			continue;
		if ((e & UHMM_PTE_TYPE_MASK) != UHMM_PTE_DEVICE) {
			/* A migration in flight: it finds its page gone. */
			drop_entry(&(struct drop_ctx){ .mm = mm }, from + off, os, e);
			continue;
		}
		ns = uhmm__ptable_slot(&mm->ptable, to + off, true);
		if (!ns || !uhmm__ptable_cmpxchg(&mm->ptable, os, &e, 0))
			continue;
		if (!uhmm__ptable_cmpxchg(&mm->ptable, ns, &z, e)) {
			uhmm__drop_device_entry(mm, e);	/* cannot happen: target was unmapped */
			continue;
		}
		{
			struct uhmm_page *page = uhmm__pfn_to_page(mm, uhmm__pte_payload(e));

			if (page)
				atomic_store(&page->addr, to + off);
		}
	}
}

/* ---- the thread --------------------------------------------------------- */

static void *service_main(void *arg)
{
	struct uhmm_mm *mm = arg;
	struct uffd_msg msgs[MSG_BATCH];
	struct uffd_msg retry[UHMM_RETRY_MAX];
	sigset_t all;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	uhmm__is_service_thread = true;

	for (;;) {
		struct pollfd pfd[2] = {
			{ .fd = mm->uffd, .events = POLLIN },
			{ .fd = mm->stop_fd, .events = POLLIN },
		};
		unsigned long seq;
		ssize_t got;
		size_t n;

		/* With faults waiting for an event, poll briefly and retry. */
		if (poll(pfd, 2, mm->nretry ? 1 : -1) < 0) {
			if (errno == EINTR)
				continue;
			uhmm__warn("service thread: poll: %s", strerror(errno));
			break;
		}
		if (pfd[1].revents)
			break;
		seq = atomic_fetch_add_explicit(&mm->ev_read, 1, memory_order_acq_rel) + 1;
		got = read(mm->uffd, msgs, sizeof(msgs));
		n = got > 0 ? (size_t)got / sizeof(msgs[0]) : 0;
		process_msgs(mm, msgs, n, false);
		events_done(mm, seq);
		/* Faults that could not be served: try again now. */
		if (mm->nretry) {
			n = mm->nretry;
			memcpy(retry, mm->retry, n * sizeof(retry[0]));
			mm->nretry = 0;
			process_msgs(mm, retry, n, false);
		}
	}
	return NULL;
}

int uhmm__service_start(struct uhmm_mm *mm)
{
	pthread_attr_t attr;
	int ret;

	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	ret = pthread_create(&mm->service, &attr, service_main, mm);
	pthread_attr_destroy(&attr);
	if (ret)
		return uhmm__err(EAGAIN, "cannot start the service thread: %s",
				 strerror(ret));
	mm->service_started = true;
	return 0;
}

void uhmm__service_stop(struct uhmm_mm *mm)
{
	uint64_t one = 1;

	if (!mm->service_started)
		return;
	if (write(mm->stop_fd, &one, sizeof(one)) != sizeof(one))
		uhmm__warn("service thread: cannot signal stop");
	pthread_join(mm->service, NULL);
	mm->service_started = false;
}
