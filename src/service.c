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
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base.h"
#include "context.h"
#include "devmem_priv.h"
#include "features_priv.h"
#include "inject_priv.h"
#include "log.h"
#include "managed.h"
#include "migrate_lock.h"
#include "notifier_priv.h"
#include "ownmem.h"
#include "ptable.h"
#include "service.h"
#include "sigblock.h"
#include "sys.h"
#include "uffd.h"
#include "vma.h"
#include "wpmarker.h"

#define MSG_BATCH 64

/* ---- changes the wrappers already notified (context.c records them) ---- */

/* UHMM__SELFOP_* flags of the change(s) covering [start, end), 0 if none. */
static unsigned int selfop_covers(struct uhmm_mm *mm, uintptr_t start, uintptr_t end)
{
	unsigned long done = atomic_load_explicit(&mm->ev_done, memory_order_acquire);
	struct uhmm__selfop *op, **pp, *dead = NULL;
	unsigned int ret = 0;

	pthread_mutex_lock(&mm->selfop_lock);
	for (pp = &mm->selfops; (op = *pp);) {
		/* A one-shot change whose events were all handled: gone. */
		if ((op->flags & UHMM__SELFOP_ONESHOT) && op->done_seq && done >= op->done_seq) {
			*pp = op->next;
			op->next = dead;
			dead = op;
			continue;
		}
		if (op->start <= start && end <= op->end)
			ret |= op->flags;
		pp = &op->next;
	}
	pthread_mutex_unlock(&mm->selfop_lock);
	while (dead) {
		op = dead->next;
		uhmm__free(dead);
		dead = op;
	}
	return ret;
}

/* ---- event sequence ---------------------------------------------------- */

void uhmm__events_sync(struct uhmm_mm *mm)
{
	unsigned long r = atomic_load_explicit(&mm->ev_read, memory_order_acquire);

	if (atomic_load_explicit(&mm->ev_done, memory_order_acquire) >= r ||
	    uhmm__on_service_thread())
		return;
	int nc = uhmm__nocancel_begin();	/* no unwind with ev_lock held */

	pthread_mutex_lock(&mm->ev_lock);
	while (atomic_load_explicit(&mm->ev_done, memory_order_acquire) < r)
		pthread_cond_wait(&mm->ev_cond, &mm->ev_lock);
	pthread_mutex_unlock(&mm->ev_lock);
	uhmm__nocancel_end(nc);
}

/*
 * An unmap that does not go through uhmm's wrappers (libc's own munmap in
 * free(), its heap trimming with its own brk, a raw system call) reaches
 * uhmm as an UNMAP event, and the kernel lets the thread that unmapped go
 * on once the event has been *read*, before the worker has applied it
 * (dropped the entries of the range, marked its migrating pages gone,
 * forgotten its registration cuts).  The next mapping at those addresses
 * is then a new tenant that the late event must never reach: a migration
 * of it would have its claims marked gone and its pages dropped (every int
 * read zero), or find the old entries and migrate nothing.  The kernel has
 * no such window: munmap is done with when it returns.  So anything that
 * creates or reads state for addresses first waits until every such event
 * is applied.
 *
 * "Every such event" includes one not read yet: thread A's unmap, thread
 * B's mmap on the freed addresses and B's migration can all come before
 * A's event is even queued.  The kernel marks the userfaultfd as changing
 * (mmap_changing) from before the unmap is visible until its event is
 * read, and UFFDIO_ZEROPAGE (as COPY and MOVE) fails with EAGAIN
 * meanwhile: on Linux 6.18, 3000 of 3000 probes made the moment another
 * thread's unmap became visible got EAGAIN.  The probe page is a populated
 * page of uhmm's own, registered MISSING: a probe is EEXIST when no event
 * is pending.  So: probe until no event is pending, then wait until every
 * event read so far is applied.  Any unmap that happened before the
 * caller's mapping existed is then done with.  Not while this thread
 * holds migrate_lock: fork's eviction holds it for writing, and the worker
 * may be waiting for it in a fault's migration.
 */
static void *probe_page;

static void probe_create(struct uhmm_mm *mm)
{
	struct uffdio_register reg = { .mode = UFFDIO_REGISTER_MODE_MISSING };
	char *p = uhmm__sys_mmap(NULL, uhmm__page_size, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);

	probe_page = NULL;
	if (p == MAP_FAILED)
		return;
	*(volatile char *)p = 1;
	uhmm__sys_madvise(p, uhmm__page_size, MADV_DONTFORK);
	reg.range.start = (uintptr_t)p;
	reg.range.len = uhmm__page_size;
	if (uhmm__uffd_ioctl(mm->uffd, UFFDIO_REGISTER, &reg) < 0) {
		uhmm__sys_munmap(p, uhmm__page_size);
		return;
	}
	probe_page = p;
}

/* True while an event is pending (queued or about to be), unread. */
static bool event_pending(struct uhmm_mm *mm)
{
	struct uffdio_zeropage z = {
		.range = { .start = (uintptr_t)probe_page, .len = uhmm__page_size },
	};

	/*
	 * Not through uhmm__uffd_ioctl(): this is no page operation, and
	 * failure injection counting it would shift every ZEROPAGE call an
	 * operation makes.
	 */
	return probe_page && ioctl(mm->uffd, UFFDIO_ZEROPAGE, &z) < 0 && errno == EAGAIN;
}

static void catch_up(struct uhmm_mm *mm)
{
	while (event_pending(mm))
		uhmm__eagain_backoff(mm);
	uhmm__events_sync(mm);
}

void uhmm__events_catch_up(struct uhmm_mm *mm)
{
	if (uhmm__migrate_lock_held() || uhmm__on_service_thread())
		return;
	catch_up(mm);
}

/*
 * Waiting for the worker with migrate_lock held for reading is safe for a
 * migration that took it itself: the worker never waits for migrate_lock
 * (a fault's migration only tries it), nor for a page a migration claimed
 * (MIGRATING: its fault is left waiting), and fork or a wrapper waiting
 * to take it for writing holds nothing the worker needs.
 */
void uhmm__events_catch_up_claimed(struct uhmm_mm *mm)
{
	if (uhmm__on_service_thread())
		return;
	catch_up(mm);
}

static void events_done(struct uhmm_mm *mm, unsigned long seq)
{
	pthread_mutex_lock(&mm->ev_lock);
	if (seq > atomic_load_explicit(&mm->ev_done, memory_order_acquire))
		atomic_store_explicit(&mm->ev_done, seq, memory_order_release);
	pthread_cond_broadcast(&mm->ev_cond);
	pthread_mutex_unlock(&mm->ev_lock);
}

/* ---- faults ------------------------------------------------------------ */

/* Resolve a fault on a page uhmm holds nothing for: map a zeroed page. */
/* Wake the threads waiting on @page (one page). */
static void wake_page(struct uhmm_mm *mm, uintptr_t page)
{
	uhmm__uffd_wake(mm, page, page + uhmm__page_size);
}

/* Wake the threads waiting on the page of fault message @msg. */
static void wake_msg(struct uhmm_mm *mm, const struct uffd_msg *msg)
{
	wake_page(mm, uhmm__page_align_down((uintptr_t)msg->arg.pagefault.address));
}

/*
 * Wake what a CPU fault's migration brought home (@f's wake range, left to
 * the caller: defer_wake), all but @page, whose fault the caller answers
 * itself: retried (-EAGAIN: woken once the pending events are read),
 * parked (short of memory) or failed (SIGBUS, then woken).
 */
static void wake_around(struct uhmm_mm *mm, const struct uhmm__fault *f, uintptr_t page)
{
	if (!f->wake_end)
		return;
	if (f->wake_start < page)
		uhmm__uffd_wake(mm, f->wake_start, UHMM__MIN(page, f->wake_end));
	if (page + uhmm__page_size < f->wake_end)
		uhmm__uffd_wake(mm, UHMM__MAX(page + uhmm__page_size, f->wake_start),
				f->wake_end);
}

static int fault_fill_zero(struct uhmm_mm *mm, uintptr_t page)
{
	struct uffdio_zeropage z = {
		.range = { .start = page, .len = uhmm__page_size },
	};

	if (uhmm__uffd_ioctl(mm->uffd, UFFDIO_ZEROPAGE, &z) == 0)
		return 0;
	if (errno == EEXIST && uhmm__markers_on(mm)) {
		/*
		 * A uffd-wp marker whose device page is gone (wpmarker.c): an
		 * empty page to the kernel's fault path, but not to ZEROPAGE.
		 * Drop it and fill (dropping the marker of a page populated
		 * meanwhile changes nothing: uhmm write-protects no page).
		 */
		uhmm__marker_clear(mm, page, page + uhmm__page_size);
		z.zeropage = 0;
		if (uhmm__uffd_ioctl(mm->uffd, UFFDIO_ZEROPAGE, &z) == 0)
			return 0;
	}
	if (errno == EEXIST || errno == ENOENT) {
		/*
		 * Populated meanwhile (a migration put it back), or the
		 * mapping or its registration is gone (an mremap or munmap
		 * since the message was queued; the thread that faulted has
		 * been woken by it and may be far away by now): just wake.
		 * A thread still waiting retries its access and meets what
		 * is there now, a fresh fault or SIGSEGV, never a SIGBUS it
		 * did not earn.
		 */
		wake_page(mm, page);
		return 0;
	}
	return -errno;
}

/*
 * Recently served CPU faults on device pages: the window each one brought
 * back and the read sequence at that moment.  A fault message read before
 * a window was served came from a thread that the serve woke (it already
 * saw its page): acting on it would pull a page back that nobody is
 * touching (the kernel has no such stale messages: the faulting thread
 * serves its own fault).
 */
#define SERVED_RING 64
static struct {
	uintptr_t start, end;
	unsigned long seq;
} served[SERVED_RING];
static unsigned int served_next;

/*
 * Is thread @tid still asleep in a userfault (not yet woken)?  False only
 * when the thread is seen awake; a thread that cannot be looked at counts
 * as waiting, so its fault is served.  /proc/<tid>, not /proc/self/task:
 * a vfork or posix_spawn child shares the memory but is another thread
 * group, which /proc/self/task does not list (KERNEL-FACTS.md section 11),
 * and taking it for gone would drop its fault and have it fault again
 * forever.  A thread that has really exited costs at most one migration
 * nobody asked for.
 */
static bool still_waiting(pid_t tid)
{
	char path[64], buf[64];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/wchan", (int)tid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return true;	/* cannot tell: serve it */
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return true;	/* cannot tell: serve it */
	buf[n] = 0;
	return strstr(buf, "userfault") != NULL;
}

static bool stale_fault(uintptr_t page, unsigned long msg_seq, pid_t tid)
{
	for (unsigned int i = 0; i < SERVED_RING; i++) {
		if (served[i].start > page || page >= served[i].end)
			continue;
		/* Read before that serve: its thread was woken by it. */
		if (msg_seq <= served[i].seq)
			return true;
		/*
		 * Read after, but maybe sent before: a recently served page
		 * is only served again for a thread that is still waiting.
		 * Once per serve: a thread queues its message before it
		 * sleeps, so it may be seen awake and still waiting; woken
		 * here, it faults again at once, and answering that with a
		 * wake too could go on for ever (a kernel access retrying a
		 * signal frame: tests/hunt/FINDINGS.md item 17).
		 */
		if (tid > 0 && !still_waiting(tid)) {
			served[i].start = served[i].end = 0;
			return true;
		}
		return false;
	}
	return false;
}

static void note_served(struct uhmm_mm *mm, uintptr_t start, uintptr_t end)
{
	served[served_next].start = start;
	served[served_next].end = end;
	served[served_next].seq = atomic_load(&mm->ev_read);
	served_next = (served_next + 1) % SERVED_RING;
}

/*
 * A fault that cannot be resolved (no memory for the page, the device could
 * not give it back): the kernel's VM_FAULT_SIGBUS.  The thread gets SIGBUS
 * and is woken; if its handler returns, the access faults again.
 */
static void fault_fail(struct uhmm_mm *mm, const struct uffd_msg *msg, unsigned long msg_seq,
		       uintptr_t page, int err)
{
	pid_t tid = (pid_t)msg->arg.pagefault.feat.ptid;

	/*
	 * Its page may have been woken since the message was read (a wake
	 * that ran while the read did: the log cannot tell the order).  Then
	 * the thread may be awake, faulting again with a message of its own
	 * that earns the SIGBUS: this one must not earn a second.  Woken
	 * again instead, a thread still waiting on this message faults again.
	 */
	if (uhmm__uffd_woken_since(mm, page, msg_seq) != UHMM__WOKEN_NO) {
		wake_page(mm, page);
		return;
	}
	uhmm__warn("fault at %#lx cannot be resolved: %d: SIGBUS", (unsigned long)page, err);
	/* A vfork / posix_spawn child is another thread group: tkill finds it. */
	if (syscall(SYS_tgkill, getpid(), tid, SIGBUS) < 0 && errno == ESRCH)
		syscall(SYS_tkill, tid, SIGBUS);
	wake_page(mm, page);
}

/*
 * Did the mapping of a fault's page go away (or give way to another)
 * since the fault looked it up?  An install's ENOENT says so, or that
 * the range is not registered; only a look tells the two apart, and only
 * the first is answered by waking the thread (it cannot loop: it faults
 * again and meets the change).
 */
static bool mapping_went(const struct uhmm__fault *f, uintptr_t page)
{
	struct uhmm__vma v;
	size_t n = 0;

	if (uhmm__vma_find(page, page + uhmm__page_size, &v, 1, &n, true))
		return false;	/* cannot tell: a SIGBUS, as before */
	return n == 0 || (f->vma.end && (v.start != f->vma.start || v.end != f->vma.end));
}

/*
 * On the worker (the served-window ring above is the worker's alone: the
 * rescue thread and the memory waiter neither read nor write it).
 */
static __thread bool on_worker;

/*
 * Handle one page fault.  Returns -EAGAIN when it must be retried after the
 * pending events are read, -ENOMEM when the page could not be installed for
 * want of memory (nothing changed, the thread not failed: the caller
 * retries after taking a page by a fault of its own, see "A fault short of
 * memory" below); *@brought (if not NULL) then says how many pages the
 * fault brought home all the same.
 */
static int handle_fault(struct uhmm_mm *mm, const struct uffd_msg *msg, unsigned long msg_seq,
			long *brought)
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

		if (uhmm__uffd_ioctl(mm->uffd, UFFDIO_WRITEPROTECT, &wp) < 0 && errno == EAGAIN)
			return -EAGAIN;
		return 0;
	}

	/*
	 * Its page was woken after the message was read: the thread is awake
	 * and faults again if it still needs the page, with a message of its
	 * own.  Answering this one too answers one access twice: a second
	 * SIGBUS for one access, or a page pulled home nobody waits for.
	 */
	if (uhmm__uffd_woken_since(mm, page, msg_seq) == UHMM__WOKEN_YES)
		return 0;
	slot = uhmm__ptable_slot(&mm->ptable, page, false);
	e = slot ? atomic_load_explicit(slot, memory_order_acquire) : 0;
	switch (e & UHMM__PTE_TYPE_MASK) {
	case 0:
		/*
		 * Claim the page so a migration that starts collecting it now
		 * sees it busy, fill it, and release the claim.
		 */
		slot = uhmm__ptable_slot(&mm->ptable, page, true);
		if (!slot) {
			ret = fault_fill_zero(mm, page);
		} else {
			e = 0;
			if (!uhmm__ptable_cmpxchg(&mm->ptable, slot, &e, UHMM__PTE_BUSY))
				return -EAGAIN;	/* changed under us: look again */
			ret = fault_fill_zero(mm, page);
			e = UHMM__PTE_BUSY;
			uhmm__ptable_cmpxchg(&mm->ptable, slot, &e, 0);
		}
		if (ret && ret != -EAGAIN && ret != -ENOMEM) {
			fault_fail(mm, msg, msg_seq, page, ret);
			return 0;
		}
		if (brought)
			*brought = 0;
		return ret;
	case UHMM__PTE_MIGRATING:
	case UHMM__PTE_BUSY:
		/*
		 * The migration wakes the faulting thread when it finishes;
		 * the thread then faults again and finds the final entry.
		 */
		return 0;
	case UHMM__PTE_DEVICE:
		if (on_worker &&
		    stale_fault(page, msg_seq, (pid_t)msg->arg.pagefault.feat.ptid)) {
			wake_page(mm, page);
			return 0;
		}
		struct uhmm__fault f = { .vmf = {
			.mm = mm, .address = page,
			.write = (flags & UFFD_PAGEFAULT_FLAG_WRITE) != 0,
		}, .defer_wake = true };

		ret = uhmm__fault_device(&f, e);
		if (!ret && on_worker)
			note_served(mm, f.vmf.window_start, f.vmf.window_end);
		if (!ret) {
			/*
			 * The migration's range (the window, after all was
			 * done), and the page if that did not cover it.  A
			 * thread that faulted on it after this wake has its
			 * own message.
			 */
			if (f.wake_end)
				uhmm__uffd_wake(mm, f.wake_start, f.wake_end);
			if (!(f.wake_end && f.wake_start <= page && page < f.wake_end))
				wake_page(mm, page);
			return 0;
		}
		if (ret == -EAGAIN) {
			wake_around(mm, &f, page);
			return -EAGAIN;
		}
		if (ret == -ENOMEM && f.install_err == -ENOMEM) {
			/*
			 * The copy is done, the page stays on the device,
			 * intact; its threads sleep on until it is served or
			 * failed (the rest of the window came home).
			 */
			wake_around(mm, &f, page);
			if (brought)
				*brought = f.brought;
			return -ENOMEM;
		}
		if (ret == -ENOENT && mapping_went(&f, page)) {
			/*
			 * The copy found no mapping to go into: a raw munmap
			 * or mremap took the address away after this fault
			 * (its event is applied after it, by this thread).
			 * The page stays on the device and goes with its
			 * entry.  In the kernel one of the two waits for the
			 * other; the fault is answered as if it came second:
			 * woken, the thread faults again and meets the change
			 * (SIGSEGV where nothing is mapped any more), never a
			 * SIGBUS (tests/test_remap_race.c, fault).
			 */
			wake_around(mm, &f, page);
			wake_page(mm, page);
			return 0;
		}
		/*
		 * The device could not give the page back: the SIGBUS is
		 * queued before anything wakes the thread (fault_fail).
		 */
		fault_fail(mm, msg, msg_seq, page, ret);
		wake_around(mm, &f, page);
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
		switch (e & UHMM__PTE_TYPE_MASK) {
		case UHMM__PTE_MIGRATING:
			/*
			 * MADV_FREE: the kernel's skips migration entries, and
			 * a page claimed but not frozen yet is still in place,
			 * where the caller may write it right after the call;
			 * the migration takes it along.  A GONE mark dropped
			 * that write at finalize (round 4 hunt).
			 */
			if (c->keep_device)
				return 0;
			/* The migration drops it when it finishes. */
			if (uhmm__ptable_cmpxchg(&mm->ptable, slot, &e, e | UHMM__PTE_GONE))
				return 0;
			continue;
		case UHMM__PTE_DEVICE:
			if (c->keep_device)
				return 0;	/* MADV_FREE keeps device pages */
			if (uhmm__ptable_cmpxchg(&mm->ptable, slot, &e, 0)) {
				uhmm__drop_device_entry(mm, e);
				return 0;
			}
			continue;
		case UHMM__PTE_BUSY:
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

static void ptable_move(struct uhmm_mm *mm, uintptr_t from, uintptr_t to, size_t len);
static bool nomem_parked(struct uhmm_mm *mm, const struct uffd_msg *msg);
static void nomem_park(struct uhmm_mm *mm, const struct uffd_msg *msg, unsigned long seq);

static void handle_event(struct uhmm_mm *mm, const struct uffd_msg *msg)
{
	uintptr_t s, e;
	unsigned int self;

	switch (msg->event) {
	case UFFD_EVENT_UNMAP:
		s = msg->arg.remove.start;
		e = msg->arg.remove.end;
		atomic_fetch_add(&uhmm__as_gen, 1);
		uhmm__forget_splits(mm, s, e);
		self = selfop_covers(mm, s, e);
		if (self & UHMM__SELFOP_INTERNAL)
			break;
		if (!(self & UHMM__SELFOP_NOTIFIED))
			uhmm__invalidate(mm, s, e, UHMM_NOTIFY_UNMAP,
					 UHMM_NOTIFY_FLAG_AFTER, NULL);
		drop_range(mm, s, e, false);
		break;
	case UFFD_EVENT_REMOVE:
		s = msg->arg.remove.start;
		e = msg->arg.remove.end;
		self = selfop_covers(mm, s, e);
		if (self & UHMM__SELFOP_INTERNAL)
			break;
		if (!(self & UHMM__SELFOP_NOTIFIED))
			uhmm__invalidate(mm, s, e, UHMM_NOTIFY_DISCARD,
					 UHMM_NOTIFY_FLAG_AFTER, NULL);
		/*
		 * Kept only for a MADV_FREE: a discard of the range in flight
		 * (maybe the very call that sent this event, under another
		 * thread's MADV_FREE of a covering range) drops them.
		 */
		drop_range(mm, s, e, (self & UHMM__SELFOP_KEEP_DEVICE) &&
				     !(self & UHMM__SELFOP_DROP_DEVICE));
		break;
	case UFFD_EVENT_REMAP:
		s = msg->arg.remap.from;
		e = s + msg->arg.remap.len;
		atomic_fetch_add(&uhmm__as_gen, 1);
		/* Only registered memory sends it: that moved with the mapping. */
		uhmm__managed_registered(msg->arg.remap.to,
					 msg->arg.remap.to + msg->arg.remap.len);
		self = selfop_covers(mm, s, e);
		if (self & UHMM__SELFOP_INTERNAL)
			break;
		if (!(self & UHMM__SELFOP_NOTIFIED))
			uhmm__invalidate(mm, s, e, UHMM_NOTIFY_UNMAP,
					 UHMM_NOTIFY_FLAG_AFTER, NULL);
		ptable_move(mm, s, msg->arg.remap.to, msg->arg.remap.len);
		break;
	default:
		break;
	}
}

/*
 * Process one batch: the non-cooperative events first (the kernel hands
 * out faults before events, but a fault may depend on an event read with
 * it: a REMAP moves the entry the fault needs), then the faults.  A fault
 * that cannot be served now goes to the retry list.
 */
static void process_msgs(struct uhmm_mm *mm, const struct uffd_msg *msgs,
			 const unsigned long *seqs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (msgs[i].event != UFFD_EVENT_PAGEFAULT)
			handle_event(mm, &msgs[i]);
	for (size_t i = 0; i < n; i++) {
		int r;

		if (msgs[i].event != UFFD_EVENT_PAGEFAULT || nomem_parked(mm, &msgs[i]))
			continue;
		r = handle_fault(mm, &msgs[i], seqs[i], NULL);
		if (r == -EAGAIN) {
			if (mm->nretry < UHMM__RETRY_MAX)
				mm->retry[mm->nretry++] = msgs[i];
			else
				uhmm__warn("fault retry queue full: the fault is served "
					   "when it recurs");
		} else if (r == -ENOMEM) {
			nomem_park(mm, &msgs[i], seqs[i]);
		}
	}
}

/*
 * Log a move of MIGRATING entries for the migrate_vma calls in flight
 * (under remap_lock); none in flight, none needed: a device-range
 * migration finds its pages through page->addr.  False without memory.
 */
static bool remap_log_add(struct uhmm_mm *mm, uintptr_t from, uintptr_t to, size_t len)
{
	if (!mm->remap_users)
		return true;
	if (mm->remap_n == mm->remap_cap) {
		size_t cap = mm->remap_cap ? 2 * mm->remap_cap : 16;
		struct uhmm__remap_rec *n = uhmm__realloc(mm->remap_log, cap * sizeof(*n));

		if (!n)
			return false;
		mm->remap_log = n;
		mm->remap_cap = cap;
	}
	mm->remap_log[mm->remap_n++] = (struct uhmm__remap_rec){
		.from = from, .to = to, .len = len, .seq = ++mm->remap_seq,
	};
	return true;
}

struct move_ctx {
	uintptr_t from, to;
	size_t len;
	bool logged;		/* this move is in the remap log */
};

/*
 * Move the entry at @os (page @off of the move) to its new address, under
 * remap_lock.  A MIGRATING entry moves too, with its payload, which names
 * its page: the migration holding it finds it at the new address, where a
 * fault waits for it as at the old one (FINDINGS item 19: dropped as
 * unmapped, a page in flight lost its data).  Returns a device entry the
 * caller drops once the lock is released (its page_free is driver code),
 * or 0.
 */
static uint64_t move_entry(struct uhmm_mm *mm, struct move_ctx *c, size_t off,
			   _Atomic uint64_t *os)
{
	uint64_t e = atomic_load(os), t;
	_Atomic uint64_t *ns;
	struct uhmm_page *page;

	for (;;) {
		switch (e & UHMM__PTE_TYPE_MASK) {
		case UHMM__PTE_MIGRATING:
			if (e & UHMM__PTE_GONE)
				return 0;	/* unmapped before: its migration drops it */
			if (!c->logged && !(c->logged = remap_log_add(mm, c->from, c->to, c->len))) {
				uhmm__warn("mremap: no memory to follow a page in flight at %#lx: "
					   "its data is lost", (unsigned long)(c->from + off));
				drop_entry(&(struct drop_ctx){ .mm = mm }, c->from + off, os, e);
				return 0;
			}
			break;
		case UHMM__PTE_DEVICE:
			break;
		default:
			if (e)
				drop_entry(&(struct drop_ctx){ .mm = mm }, c->from + off, os, e);
			return 0;
		}
		ns = uhmm__ptable_slot(&mm->ptable, c->to + off, true);
		if (!ns) {
			uhmm__warn("mremap: no memory for the entry of %#lx: its data is lost",
				   (unsigned long)(c->to + off));
			drop_entry(&(struct drop_ctx){ .mm = mm }, c->from + off, os, e);
			return 0;
		}
		if (uhmm__ptable_cmpxchg(&mm->ptable, os, &e, 0))
			break;
		/* Claimed, committed or failed meanwhile: look again. */
	}
	/*
	 * The new address was unmapped first (its UNMAP event came before
	 * this one): anything there is an entry of a migration that has
	 * not finished yet, whose page was unmapped; it finds its entry
	 * gone, as it would have found it GONE.
	 */
	t = atomic_load(ns);
	while (!uhmm__ptable_cmpxchg(&mm->ptable, ns, &t, e))
		;
	page = uhmm__pfn_to_page(mm, uhmm__pte_payload(e));
	if (page) {
		atomic_store(&page->addr, c->to + off);
		/* A compound device page moves whole only 2 MiB aligned. */
		if ((c->from | c->to | c->len) & ((2u << 20) - 1))
			uhmm__folio_split(page);
	}
	return (t & UHMM__PTE_TYPE_MASK) == UHMM__PTE_DEVICE ? t : 0;
}

/* mremap moved a range: its special entries move with it. */
static void ptable_move(struct uhmm_mm *mm, uintptr_t from, uintptr_t to, size_t len)
{
	struct move_ctx c = { .from = from, .to = to, .len = len };

	for (size_t off = 0; off < len; off += uhmm__page_size) {
		_Atomic uint64_t *os = uhmm__ptable_slot(&mm->ptable, from + off, false);
		uint64_t drop;

		if (!os || !atomic_load(os))
			continue;
		pthread_mutex_lock(&mm->remap_lock);
		drop = move_entry(mm, &c, off, os);
		pthread_mutex_unlock(&mm->remap_lock);
		if (drop)
			uhmm__drop_device_entry(mm, drop);
	}
}

/* ---- the threads --------------------------------------------------------- */

/*
 * Two threads serve the userfaultfd.  The reader only reads messages into a
 * queue: it never runs device code, never touches registered memory and
 * never waits for the worker, so a thread the kernel makes wait until its
 * event is read (munmap, mremap, MADV_DONTNEED of registered memory) is
 * released promptly, whoever it is: even the worker, whose own munmap or
 * MADV_DONTNEED of registered staging, and whose next COPY or MOVE after
 * any event, need the reader.  The worker handles the messages.
 *
 * So the queue has no fixed size: when it is full the reader maps a ring
 * twice as large (memory of its own, never registered, populated) and
 * moves the messages there.  It used to wait for the worker to make room,
 * and a worker waiting for the reader at that moment (its own event
 * unread, or its MOVE failing with EAGAIN on another thread's event that
 * the reader could no longer read) stopped both for good: the 2026-12-07
 * soak hang (docs/STRESS.md; tests/test_reader_backlog.c).  Only if no
 * memory can be had does it wait, a millisecond at a time, for either.
 * A ring is never shrunk: it stays the size of the largest backlog seen
 * (40 bytes a message; 4096 messages to start with).
 *
 * Who reads.  A fault served through the reader costs a second thread's
 * wake-up: the kernel wakes the reader, the reader wakes the worker (about
 * a third of a one-page fault-back here, docs/PERFORMANCE.md figure 4).
 * So an idle worker reads the userfaultfd itself.  Both threads wait on
 * it in epoll with EPOLLEXCLUSIVE, the worker's entry first: the kernel
 * wakes the first exclusive entry whose epoll has a thread waiting in it,
 * so a message goes to the worker when it waits, and to the reader
 * whenever the worker is busy.  The reader stays what it was: it reads
 * whatever comes while the worker is busy, and waits for nobody.
 *  - A woken worker reads before it does anything that can wait: a
 *    message the kernel gave it is unread until then, and the reader was
 *    not woken for it.  If it cannot read at once (the reader is between
 *    its read and its queueing, or messages read earlier are queued), it
 *    writes kick_fd, and the reader reads it instead.
 *  - Messages are handled in the order they were read: a read and the
 *    queueing of what it read happen under rd_lock, and the worker reads
 *    only when nothing is queued, and handles what it read before it
 *    takes from the queue again.
 *  - The worker only ever try-locks rd_lock; the reader holds it across
 *    one non-blocking read and the queueing.  The worker holds it across
 *    one non-blocking read: the reader may wait for that, never for a
 *    migration.
 * UHMM_DISABLE=worker_read (or =all), or a kernel without EPOLLEXCLUSIVE,
 * leaves all reading to the reader, as before.
 */

#define QUEUE_CAP 4096	/* the first ring; it doubles when full */
#define RESCUE_CAP 64
#define NOMEM_PARK 256	/* faults short of memory waiting for the memory waiter */
/*
 * A fault whose install fails with ENOMEM this many times in a row, each
 * right after the service thread's own fault took a page and nothing of
 * the window came home, is failed (SIGBUS): not a charge the memory
 * cgroup refused (that fault would have waited), something else.
 */
#define NOMEM_TRIES 64
#define READER_STACK (4u << 20)	/* sanitizer runtimes need room */

struct uhmm__msgq {
	pid_t worker_tid;
	/* The ring: @cap messages and their seqs, in the mapping @ring. */
	void *ring;
	size_t cap;
	struct uffd_msg *msg;
	unsigned long *seq;		/* the read each message came from */
	size_t head, count;
	struct retired_ring *retired;	/* outgrown rings, for the worker to unmap */
	unsigned long last_seq;		/* ev_read of the reader's last read */
	bool stop;
	pthread_mutex_t lock;
	pthread_cond_t nonfull;
	/*
	 * The wake-ups (see "Who reads" above): the worker waits in
	 * epoll_wait on @worker_ep (the userfaultfd, exclusive and first in
	 * line, when @direct; and @wake_fd), the reader on @reader_ep (the
	 * userfaultfd, exclusive, after the worker's; the context's stop_fd;
	 * @kick_fd).  @worker_idle is set while the worker is about to wait
	 * or waits: the reader writes @wake_fd after queueing only then.
	 */
	bool direct;
	int wake_fd, kick_fd, worker_ep, reader_ep;
	atomic_bool worker_idle;
	/* Held across one read of the userfaultfd and the queueing of what it read. */
	pthread_mutex_t rd_lock;
	/*
	 * Faults of the worker itself on pages uhmm holds something for (a
	 * callback reading memory that sits in device memory): the worker
	 * cannot serve them, the rescue thread does.  A full ring drops the
	 * message; the worker's fault is then woken and comes again.
	 */
	struct uffd_msg rmsg[RESCUE_CAP];
	size_t rhead, rcount;
	pthread_cond_t rnonempty;
	pthread_t rescue;
	bool rescue_started;
	/*
	 * Faults short of memory ("A fault short of memory" below): the
	 * worker parks them here (@nomem_msg, a ring of @nomem_n from
	 * @nomem_head, at most one per page), the memory waiter serves them
	 * one at a time (@nomem_busy: the page it serves, 0 none).
	 * @nomem_live counts both, read without the lock by the worker's
	 * quick look.  @scratch: the waiter's and the rescue thread's page to
	 * fault on, between PROT_NONE guards (NULL if it could not be had).
	 */
	struct uffd_msg nomem_msg[NOMEM_PARK];
	unsigned long nomem_seq[NOMEM_PARK];
	size_t nomem_head, nomem_n;
	uintptr_t nomem_busy;
	atomic_size_t nomem_live;
	pthread_cond_t nomem_cond;
	pthread_t nomemw;
	bool nomemw_started;
	char *scratch;
	/* Service threads past their start (uhmm__service_start waits). */
	unsigned int nready;
	pthread_cond_t ready;
};

/*
 * A service thread has set itself up (its signal mask, its name, its
 * thread-local state: the first access is what makes a sanitizer runtime
 * map its per-thread bookkeeping).  uhmm__service_start waits for all of
 * them, so none of that happens later, at a time the application may be
 * punching holes into its own memory that such a mapping could land in.
 */
/*
 * The start of every service thread: every signal blocked (a handler must
 * never run on a thread others wait for), marked as a service thread, named.
 */
static void service_thread_begin(const char *name)
{
	sigset_t all;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	uhmm__set_service_thread();
	pthread_setname_np(pthread_self(), name);
}

static void service_thread_ready(struct uhmm__msgq *q)
{
	pthread_mutex_lock(&q->lock);
	q->nready++;
	pthread_cond_broadcast(&q->ready);
	pthread_mutex_unlock(&q->lock);
}

/*
 * A fault short of memory.  An install (UFFDIO_COPY, UFFDIO_ZEROPAGE; a
 * MOVE's page table) is charged to the memory cgroup from a system call:
 * at the cgroup's limit with its OOM killer disabled (cgroup v1
 * oom_kill_disable) that fails with ENOMEM at once, where the kernel's own
 * fault (VM_FAULT_OOM) waits in the cgroup until memory is uncharged or
 * the limit raised, or, with the OOM killer on, lets it act, and then
 * retries (mm/memcontrol-v1.c: only a user fault waits; a charge from a
 * system call fails).  So the service thread takes one page the kernel's
 * way, by an ordinary user fault of its own on its scratch page (never
 * registered with any userfaultfd, MADV_DONTFORK), gives it back at once
 * (MADV_DONTNEED) and retries the whole fault.
 *
 * Who waits.  Not the reader: it waits for nobody (docs/CONCURRENCY.md,
 * rule 5); a fault of the worker it could not fill for want of memory goes
 * to the rescue thread.  Not the worker either: every munmap, mremap and
 * MADV_DONTNEED wrapper over registered memory and every migration waits
 * until the worker has applied the events read so far (rules 2 and 4), and
 * one of them may be what gives memory back; in the kernel the faulting
 * thread alone waits.  So the worker parks the fault (its thread stays
 * asleep in the kernel) and goes on; the memory waiter, a service thread
 * of its own, serves parked faults one at a time, waiting in the cgroup as
 * long as the kernel's fault would (for ever, if memory never comes back).
 * Later messages for a parked page are dropped by the worker: the page is
 * woken once the waiter is done with it, after it left the parked set, so
 * every thread that faulted on it meanwhile faults again.  The rescue
 * thread serves the worker's own faults, which the worker waits for in
 * any case: it waits for memory itself.
 *
 * A page that cannot be installed although the scratch fault takes a page
 * each time is not short of a charge (an address-space limit makes no
 * install fail, it fails the driver's staging; an injected failure): after
 * NOMEM_TRIES such rounds in a row in which nothing of the window came
 * home, the fault fails (SIGBUS), the data stays on the device.
 */
static bool service_stopping(struct uhmm__msgq *q)
{
	bool stop;

	pthread_mutex_lock(&q->lock);
	stop = q->stop;
	pthread_mutex_unlock(&q->lock);
	return stop;
}

/*
 * Take one page by an ordinary fault and give it back: waits in the memory
 * cgroup (or has the OOM killer act) as the kernel's fault would.  The
 * page is unregistered first in case a notifier's registration of a whole
 * range covered it: the discard must not be an event.  The store is atomic
 * only because the rescue thread and the waiter share the page; it is a
 * plain store to the CPU.
 */
static void take_one_page(struct uhmm_mm *mm, char *scratch)
{
	struct uffdio_range r = { .start = (uintptr_t)scratch, .len = uhmm__page_size };

	pthread_mutex_lock(&mm->reg_lock);
	uhmm__uffd_ioctl(mm->uffd, UFFDIO_UNREGISTER, &r);
	pthread_mutex_unlock(&mm->reg_lock);
	__atomic_store_n(scratch, 1, __ATOMIC_RELAXED);
	uhmm__sys_madvise(scratch, uhmm__page_size, MADV_DONTNEED);
}

/*
 * Serve @msg, whose install just failed with -ENOMEM (@brought pages of
 * the window came home all the same), until it is done: take a page,
 * retry; fail it after NOMEM_TRIES fruitless rounds.  Returns 0 when done
 * with (served or failed), -EAGAIN when the caller must wake the page (the
 * thread faults again), as for a fault that met an unread event, or when
 * the service stops.
 */
static int serve_nomem(struct uhmm_mm *mm, const struct uffd_msg *msg, unsigned long seq,
		       long brought)
{
	struct uhmm__msgq *q = mm->msgq;
	uintptr_t page = uhmm__page_align_down((uintptr_t)msg->arg.pagefault.address);
	unsigned int tries = brought > 0 ? 0 : 1;

	for (;;) {
		int r;

		if (!q->scratch) {
			fault_fail(mm, msg, seq, page, -ENOMEM);
			return 0;
		}
		if (service_stopping(q))
			return -EAGAIN;
		take_one_page(mm, q->scratch);
		brought = 0;
		r = handle_fault(mm, msg, seq, &brought);
		if (r != -ENOMEM)
			return r;
		tries = brought > 0 ? 0 : tries + 1;
		if (tries >= NOMEM_TRIES) {
			uhmm__warn("fault at %#lx: no page could be installed %u times in a row "
				   "although memory could be had", (unsigned long)page, tries);
			fault_fail(mm, msg, seq, page, -ENOMEM);
			return 0;
		}
	}
}

/* Is @msg a fault on a page the memory waiter holds (the worker drops it)? */
static bool nomem_parked(struct uhmm_mm *mm, const struct uffd_msg *msg)
{
	struct uhmm__msgq *q = mm->msgq;
	uintptr_t page = uhmm__page_align_down((uintptr_t)msg->arg.pagefault.address);
	bool found = false;

	if (!atomic_load_explicit(&q->nomem_live, memory_order_acquire) ||
	    (msg->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP))
		return false;
	pthread_mutex_lock(&q->lock);
	found = q->nomem_busy == page;
	for (size_t i = 0; i < q->nomem_n && !found; i++)
		found = uhmm__page_align_down((uintptr_t)q->nomem_msg[(q->nomem_head + i) %
						NOMEM_PARK].arg.pagefault.address) == page;
	pthread_mutex_unlock(&q->lock);
	return found;
}

/* Hand a fault short of memory to the memory waiter (on the worker). */
static void nomem_park(struct uhmm_mm *mm, const struct uffd_msg *msg, unsigned long seq)
{
	struct uhmm__msgq *q = mm->msgq;
	bool parked = false;

	pthread_mutex_lock(&q->lock);
	if (q->nomemw_started && q->nomem_n < NOMEM_PARK) {
		size_t at = (q->nomem_head + q->nomem_n) % NOMEM_PARK;

		q->nomem_msg[at] = *msg;
		q->nomem_seq[at] = seq;
		q->nomem_n++;
		atomic_fetch_add_explicit(&q->nomem_live, 1, memory_order_release);
		pthread_cond_signal(&q->nomem_cond);
		parked = true;
	}
	pthread_mutex_unlock(&q->lock);
	if (!parked) {
		/* No room (or no waiter): the thread faults again and is seen again. */
		sched_yield();
		wake_msg(mm, msg);
	}
}

/* The memory waiter: serves the faults the worker parked, one at a time. */
static void *nomem_main(void *arg)
{
	struct uhmm_mm *mm = arg;
	struct uhmm__msgq *q = mm->msgq;

	service_thread_begin("uhmm-memwait");
	service_thread_ready(q);
	for (;;) {
		struct uffd_msg m;
		unsigned long seq;
		uintptr_t page;

		pthread_mutex_lock(&q->lock);
		while (!q->nomem_n && !q->stop)
			pthread_cond_wait(&q->nomem_cond, &q->lock);
		if (q->stop) {
			pthread_mutex_unlock(&q->lock);
			break;
		}
		m = q->nomem_msg[q->nomem_head];
		seq = q->nomem_seq[q->nomem_head];
		q->nomem_head = (q->nomem_head + 1) % NOMEM_PARK;
		q->nomem_n--;
		page = uhmm__page_align_down((uintptr_t)m.arg.pagefault.address);
		q->nomem_busy = page;
		pthread_mutex_unlock(&q->lock);
		serve_nomem(mm, &m, seq, 0);
		pthread_mutex_lock(&q->lock);
		q->nomem_busy = 0;
		atomic_fetch_sub_explicit(&q->nomem_live, 1, memory_order_release);
		pthread_mutex_unlock(&q->lock);
		/* Out of the parked set first: a fault dropped meanwhile is woken here. */
		wake_page(mm, page);
	}
	return NULL;
}

/*
 * The rescue thread: serves the worker's own faults, one at a time.  A
 * fault that cannot be served now (-EAGAIN) is woken, and the worker faults
 * again with a fresh message.  Its own callbacks must not fault on device
 * memory again (one level of nesting is served; docs/CONCURRENCY.md).
 */
static void *rescue_main(void *arg)
{
	struct uhmm_mm *mm = arg;
	struct uhmm__msgq *q = mm->msgq;

	service_thread_begin("uhmm-rescue");
	service_thread_ready(q);
	for (;;) {
		struct uffd_msg m;
		long brought = 0;
		int r;

		pthread_mutex_lock(&q->lock);
		while (!q->rcount && !q->stop)
			pthread_cond_wait(&q->rnonempty, &q->lock);
		if (q->stop) {
			pthread_mutex_unlock(&q->lock);
			break;
		}
		m = q->rmsg[q->rhead];
		q->rhead = (q->rhead + 1) % RESCUE_CAP;
		q->rcount--;
		pthread_mutex_unlock(&q->lock);
		r = handle_fault(mm, &m, 0, &brought);
		/*
		 * Short of memory: the worker waits for this fault anyway, so
		 * the rescue thread waits for memory itself.
		 */
		if (r == -ENOMEM)
			r = serve_nomem(mm, &m, 0, brought);
		if (r == -EAGAIN) {
			sched_yield();
			wake_msg(mm, &m);
		}
	}
	return NULL;
}

/*
 * An outgrown ring, written over its own first bytes.  The reader never
 * unmaps it: a notifier may have registered the mapping for events (a
 * driver watching a whole aligned gigabyte, as simdev does, registers
 * every anonymous mapping in it, uhmm's own included), and the reader
 * would then sleep until it read its own UNMAP event.  The worker unmaps
 * it; its event is read by the reader.
 */
struct retired_ring {
	struct retired_ring *next;
	size_t len;
};

static size_t ring_bytes(size_t cap)
{
	return cap * (sizeof(struct uffd_msg) + sizeof(unsigned long));
}

/* A populated ring of @cap messages, never registered; NULL if none. */
static void *ring_map(size_t cap)
{
	void *p = uhmm__sys_mmap(NULL, ring_bytes(cap), PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

/*
 * The queue is full (q->lock held, dropped meanwhile): move it to a ring
 * twice as large.  False if no memory could be had.
 */
static bool queue_grow(struct uhmm__msgq *q)
{
	size_t ncap = 2 * q->cap;
	struct uffd_msg *nmsg;
	unsigned long *nseq;
	void *old = q->ring;
	size_t olen = ring_bytes(q->cap);
	void *p;

	/* Only the reader changes the ring: the worker takes from it meanwhile. */
	pthread_mutex_unlock(&q->lock);
	p = ring_map(ncap);
	pthread_mutex_lock(&q->lock);
	if (!p)
		return false;
	nmsg = p;
	nseq = (unsigned long *)(nmsg + ncap);
	for (size_t i = 0; i < q->count; i++) {
		nmsg[i] = q->msg[(q->head + i) % q->cap];
		nseq[i] = q->seq[(q->head + i) % q->cap];
	}
	q->ring = p;
	q->msg = nmsg;
	q->seq = nseq;
	q->cap = ncap;
	q->head = 0;
	((struct retired_ring *)old)->next = q->retired;
	((struct retired_ring *)old)->len = olen;
	q->retired = old;
	return true;	/* the worker unmaps the old ring when it next takes */
}

/*
 * Unmap rings the reader outgrew, on the worker (see struct retired_ring);
 * unregistered first, as staging is, so no event says so.
 */
static void rings_unmap(struct uhmm_mm *mm, struct retired_ring *r)
{
	while (r) {
		struct retired_ring *next = r->next;
		struct uffdio_range ur = { .start = (uintptr_t)r, .len = r->len };

		pthread_mutex_lock(&mm->reg_lock);
		uhmm__uffd_ioctl(mm->uffd, UFFDIO_UNREGISTER, &ur);
		pthread_mutex_unlock(&mm->reg_lock);
		uhmm__sys_munmap(r, ur.len);
		r = next;
	}
}

/* Add one to an eventfd (a wake-up); @who names it in the warning if that fails. */
static void eventfd_poke(int fd, const char *who)
{
	uint64_t one = 1;

	/* EAGAIN: the counter is full, so the wake-up is pending anyway. */
	if (write(fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		uhmm__warn("service: cannot wake %s: %s", who, uhmm__err_text(errno));
}

/* Empty an eventfd that said it was readable. */
static void eventfd_drain(int fd)
{
	uint64_t v;

	if (read(fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		uhmm__warn("service: eventfd read: %s", uhmm__err_text(errno));
}

/* Room for one more message (q->lock held); waits only if no memory can be had. */
static void queue_make_room(struct uhmm__msgq *q)
{
	static bool warned;

	while (q->count == q->cap && !q->stop && !queue_grow(q)) {
		struct timespec ts;

		if (!warned) {
			warned = true;
			uhmm__warn("reader: no memory to grow the message queue past %zu",
				   q->cap);
		}
		/* The worker may make room meanwhile, or memory come back. */
		eventfd_poke(q->wake_fd, "the worker");
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&q->nonfull, &q->lock, &ts);
	}
}

enum { FILL_NOT_MINE, FILL_DONE, FILL_LATER, FILL_NOMEM };

/*
 * Zero-fill a fault of the worker on a page uhmm holds nothing for:
 * FILL_NOT_MINE if uhmm holds something there (the rescue thread's), else
 * FILL_DONE, or FILL_LATER when UFFDIO_ZEROPAGE said EAGAIN (an event is
 * pending): the fault is neither filled nor woken, and the reader tries
 * again once it has read on.  (It used to be dropped: the worker then
 * waited in that fault for good.)
 */
static int reader_fill(struct uhmm_mm *mm, const struct uffd_msg *msg)
{
	uintptr_t page = uhmm__page_align_down((uintptr_t)msg->arg.pagefault.address);

	int r;

	if (uhmm__ptable_get(&mm->ptable, page) != 0)
		return FILL_NOT_MINE;
	r = fault_fill_zero(mm, page);
	/*
	 * No memory for the page: the reader waits for nobody, so the rescue
	 * thread serves it (and waits for memory, see "A fault short of
	 * memory").
	 */
	return r == -EAGAIN ? FILL_LATER : r == -ENOMEM ? FILL_NOMEM : FILL_DONE;
}

/*
 * Try a held fault of the worker again: filled, or woken when uhmm now
 * holds something at the page (the worker faults again, and the new
 * message goes to the rescue thread).  True when it is done with.
 */
static bool reader_fill_retry(struct uhmm_mm *mm, const struct uffd_msg *msg)
{
	int r = reader_fill(mm, msg);

	/* Woken: the worker faults again, and the new message goes where it belongs. */
	if (r == FILL_NOT_MINE || r == FILL_NOMEM) {
		wake_msg(mm, msg);
	}
	return r != FILL_LATER;
}

/* Tell the worker there is something for it, if it waits or is about to. */
static void wake_worker(struct uhmm__msgq *q)
{
	if (atomic_load(&q->worker_idle))
		eventfd_poke(q->wake_fd, "the worker");
}

static void *reader_main(void *arg)
{
	struct uhmm_mm *mm = arg;
	struct uhmm__msgq *q = mm->msgq;
	struct uffd_msg buf[MSG_BATCH];
	struct uffd_msg held = { 0 };	/* a fault of the worker to fill later */
	bool holding = false;

	service_thread_begin("uhmm-reader");
	service_thread_ready(q);
	for (;;) {
		struct epoll_event ev[3];
		bool stop = false;
		unsigned long seq;
		ssize_t got;
		size_t n;
		int pr;

		/*
		 * A held fault is tried again every millisecond: the event
		 * that made it EAGAIN is read below, and its thread ends the
		 * kernel's "changing" state without telling the userfaultfd.
		 */
		pr = epoll_wait(q->reader_ep, ev, 3, holding ? 1 : -1);
		if (pr < 0) {
			if (errno == EINTR)
				continue;
			uhmm__warn("reader: epoll_wait: %s", uhmm__err_text(errno));
			break;
		}
		for (int i = 0; i < pr; i++) {
			if (ev[i].data.fd == mm->stop_fd) {
				/* POLLIN is the clean stop: only anything else is worth a warning. */
				if (ev[i].events & ~EPOLLIN)
					uhmm__warn("reader: stop (%#x)", ev[i].events);
				stop = true;
			} else if (ev[i].data.fd == q->kick_fd) {
				eventfd_drain(q->kick_fd);	/* the worker could not read */
			}
		}
		if (stop)
			break;
		if (holding && reader_fill_retry(mm, &held))
			holding = false;
		if (pr == 0)
			continue;
		pthread_mutex_lock(&q->rd_lock);
		seq = atomic_fetch_add_explicit(&mm->ev_read, 1, memory_order_acq_rel) + 1;
		got = read(mm->uffd, buf, sizeof(buf));
		atomic_store_explicit(&mm->ev_read_returned, seq, memory_order_release);
		n = got > 0 ? (size_t)got / sizeof(buf[0]) : 0;
		pthread_mutex_lock(&q->lock);
		for (size_t i = 0; i < n; i++) {
			queue_make_room(q);
			if (q->stop)
				break;
			/*
			 * A fault of the worker itself (it touched a page it
			 * never had in a registered range: libc or a sanitizer
			 * runtime using memory next to the application's) would
			 * wait for the worker forever: fill it here.
			 */
			if (buf[i].event == UFFD_EVENT_PAGEFAULT &&
			    (pid_t)buf[i].arg.pagefault.feat.ptid == q->worker_tid) {
				int f = reader_fill(mm, &buf[i]);

				if (f == FILL_LATER) {
					/* The worker has one fault at a time: the newest. */
					held = buf[i];
					holding = true;
				}
				if (f != FILL_NOT_MINE && f != FILL_NOMEM)
					continue;
				/*
				 * On a page uhmm holds, or short of memory: the
				 * rescue thread serves it.
				 */
				if (q->rcount < RESCUE_CAP) {
					q->rmsg[(q->rhead + q->rcount) % RESCUE_CAP] = buf[i];
					q->rcount++;
					pthread_cond_signal(&q->rnonempty);
				} else {
					wake_msg(mm, &buf[i]);
				}
				continue;
			}
			q->msg[(q->head + q->count) % q->cap] = buf[i];
			q->seq[(q->head + q->count) % q->cap] = seq;
			q->count++;
		}
		q->last_seq = seq;
		pthread_mutex_unlock(&q->lock);
		pthread_mutex_unlock(&q->rd_lock);
		/*
		 * After the unlock: a worker woken while the lock is still
		 * held blocks on it at once and has to be woken a second time.
		 * The worker sets worker_idle before it looks at the queue
		 * for the last time before waiting, so no wake-up is lost.
		 */
		wake_worker(q);
	}
	return NULL;
}

/*
 * Handle a batch in the worker, mark the events of reads up to @done_seq
 * processed (0: none), then wake the faults that could not be served: the
 * thread may have been woken meanwhile and the state changed, so never act
 * on the old message: wake the address, and a thread still waiting faults
 * again with a fresh one.
 */
static void worker_handle(struct uhmm_mm *mm, const struct uffd_msg *batch,
			  const unsigned long *seqs, size_t n, unsigned long done_seq)
{
	struct uffd_msg retry[UHMM__RETRY_MAX];
	size_t nr;

	process_msgs(mm, batch, seqs, n);
	if (done_seq)
		events_done(mm, done_seq);
	nr = mm->nretry;
	if (!nr)
		return;
	memcpy(retry, mm->retry, nr * sizeof(retry[0]));
	mm->nretry = 0;
	for (size_t i = 0; i < nr; i++)
		wake_msg(mm, &retry[i]);
}

/*
 * Something for the worker in the queue (q->lock held): messages, or a read
 * of the reader's whose events are not marked processed yet.
 */
static bool queue_has_work(struct uhmm_mm *mm, const struct uhmm__msgq *q)
{
	return q->count || q->last_seq > atomic_load(&mm->ev_done);
}

enum { WREAD_DONE, WREAD_KICKED };

/*
 * The kernel woke the worker for a message: read it here, before anything
 * that can wait, and handle it.  WREAD_KICKED when the reader was told to
 * read instead (it holds rd_lock, or messages read before are queued).
 */
static int worker_read(struct uhmm_mm *mm, struct uhmm__msgq *q, struct uffd_msg *buf,
		       unsigned long *seqs)
{
	unsigned long seq;
	ssize_t got;
	size_t n;
	bool queued;

	if (pthread_mutex_trylock(&q->rd_lock) == 0) {
		pthread_mutex_lock(&q->lock);
		queued = q->count != 0;
		pthread_mutex_unlock(&q->lock);
		if (!queued) {
			seq = atomic_fetch_add_explicit(&mm->ev_read, 1, memory_order_acq_rel) + 1;
			got = read(mm->uffd, buf, MSG_BATCH * sizeof(buf[0]));
			atomic_store_explicit(&mm->ev_read_returned, seq, memory_order_release);
			pthread_mutex_unlock(&q->rd_lock);
			n = got > 0 ? (size_t)got / sizeof(buf[0]) : 0;
			/*
			 * A full batch may leave messages unread that the kernel
			 * woke nobody else for: the reader reads them meanwhile.
			 */
			if (n == MSG_BATCH)
				eventfd_poke(q->kick_fd, "the reader");
			for (size_t i = 0; i < n; i++)
				seqs[i] = seq;
			/* Nothing was read before it that is not handled yet. */
			worker_handle(mm, buf, seqs, n, seq);
			return WREAD_DONE;
		}
		pthread_mutex_unlock(&q->rd_lock);
	}
	eventfd_poke(q->kick_fd, "the reader");
	return WREAD_KICKED;
}

static void *worker_main(void *arg)
{
	struct uhmm_mm *mm = arg;
	struct uhmm__msgq *q = mm->msgq;
	struct uffd_msg batch[MSG_BATCH];
	unsigned long batch_seq[MSG_BATCH];
	bool uffd_ready = false, kicked = false;

	service_thread_begin("uhmm-worker");
	on_worker = true;
	pthread_mutex_lock(&q->lock);
	q->worker_tid = (pid_t)syscall(SYS_gettid);
	pthread_mutex_unlock(&q->lock);
	service_thread_ready(q);
	for (;;) {
		struct retired_ring *retired;
		struct epoll_event ev[2];
		unsigned long seq;
		size_t n = 0;
		bool work;
		int k;

		if (uffd_ready) {
			uffd_ready = false;
			if (worker_read(mm, q, batch, batch_seq) == WREAD_DONE)
				continue;
			kicked = true;	/* the reader reads it and tells us */
		}
		pthread_mutex_lock(&q->lock);
		if (q->stop) {
			pthread_mutex_unlock(&q->lock);
			break;
		}
		if (queue_has_work(mm, q)) {
			while (q->count && n < MSG_BATCH) {
				batch_seq[n] = q->seq[q->head];
				batch[n++] = q->msg[q->head];
				q->head = (q->head + 1) % q->cap;
				q->count--;
			}
			/* Everything the reader read up to last_seq is in this batch or done. */
			seq = q->count ? 0 : q->last_seq;
			retired = q->retired;
			q->retired = NULL;
			pthread_cond_signal(&q->nonfull);
			pthread_mutex_unlock(&q->lock);
			rings_unmap(mm, retired);
			worker_handle(mm, batch, batch_seq, n, seq);
			kicked = false;
			continue;
		}
		pthread_mutex_unlock(&q->lock);

		/*
		 * Nothing queued: wait.  Idle first, then look once more, so
		 * that a reader queueing meanwhile sees the flag and writes
		 * wake_fd.  After a kick, wait for the reader's word only (the
		 * userfaultfd may stay readable until the reader has read it).
		 */
		atomic_store(&q->worker_idle, true);
		pthread_mutex_lock(&q->lock);
		work = q->stop || queue_has_work(mm, q);
		pthread_mutex_unlock(&q->lock);
		if (!work) {
			if (kicked) {
				struct pollfd pfd = { .fd = q->wake_fd, .events = POLLIN };

				k = poll(&pfd, 1, -1);
				if (k > 0)
					eventfd_drain(q->wake_fd);
				kicked = false;
			} else {
				/* No retry waits here: worker_handle() woke them all. */
				k = epoll_wait(q->worker_ep, ev, 2, -1);
				for (int i = 0; i < k; i++) {
					if (ev[i].data.fd == mm->uffd)
						uffd_ready = true;
					else
						eventfd_drain(q->wake_fd);
				}
			}
			if (k < 0 && errno != EINTR)
				uhmm__warn("worker: wait: %s", uhmm__err_text(errno));
		}
		atomic_store(&q->worker_idle, false);
	}
	return NULL;
}

/*
 * The epoll sets and eventfds of the wake-ups; q->direct when the worker
 * reads too.  The worker's exclusive entry is added first: the kernel
 * offers a message to exclusive entries in the order they were added.
 */
static int wakeups_setup(struct uhmm_mm *mm, struct uhmm__msgq *q)
{
	struct epoll_event e = { .events = EPOLLIN };

	q->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	q->kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	q->worker_ep = epoll_create1(EPOLL_CLOEXEC);
	q->reader_ep = epoll_create1(EPOLL_CLOEXEC);
	if (q->wake_fd < 0 || q->kick_fd < 0 || q->worker_ep < 0 || q->reader_ep < 0)
		return -errno;
	e.data.fd = q->wake_fd;
	if (epoll_ctl(q->worker_ep, EPOLL_CTL_ADD, q->wake_fd, &e))
		return -errno;
	q->direct = false;
	if (uhmm__worker_reads) {
		e.events = EPOLLIN | EPOLLEXCLUSIVE;
		e.data.fd = mm->uffd;
		/* EINVAL before Linux 4.5: the reader reads everything. */
		q->direct = epoll_ctl(q->worker_ep, EPOLL_CTL_ADD, mm->uffd, &e) == 0;
	}
	e.events = EPOLLIN | (q->direct ? EPOLLEXCLUSIVE : 0);
	e.data.fd = mm->uffd;
	if (epoll_ctl(q->reader_ep, EPOLL_CTL_ADD, mm->uffd, &e))
		return -errno;
	e.events = EPOLLIN;
	e.data.fd = mm->stop_fd;
	if (epoll_ctl(q->reader_ep, EPOLL_CTL_ADD, mm->stop_fd, &e))
		return -errno;
	e.data.fd = q->kick_fd;
	if (epoll_ctl(q->reader_ep, EPOLL_CTL_ADD, q->kick_fd, &e))
		return -errno;
	return 0;
}

static void wakeups_close(struct uhmm__msgq *q)
{
	int *fds[] = { &q->wake_fd, &q->kick_fd, &q->worker_ep, &q->reader_ep };

	for (size_t i = 0; i < UHMM__ARRAY_SIZE(fds); i++) {
		if (*fds[i] >= 0)
			close(*fds[i]);
		*fds[i] = -1;
	}
}

/*
 * The scratch page of "A fault short of memory": one page between two
 * PROT_NONE guards of its own (so it never merges with a neighbour's
 * mapping), not populated, MADV_DONTFORK.  NULL if it cannot be had.
 */
static char *scratch_map(void)
{
	char *p = uhmm__sys_mmap(NULL, 3 * uhmm__page_size, PROT_NONE,
				 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	if (uhmm__sys_mprotect(p + uhmm__page_size, uhmm__page_size, PROT_READ | PROT_WRITE)) {
		uhmm__sys_munmap(p, 3 * uhmm__page_size);
		return NULL;
	}
	uhmm__sys_madvise(p, 3 * uhmm__page_size, MADV_DONTFORK);
	return p + uhmm__page_size;
}

/* Free the message queue, its rings and its wake-ups (no thread uses them). */
static void msgq_free(struct uhmm_mm *mm)
{
	if (mm->msgq->scratch)
		uhmm__sys_munmap(mm->msgq->scratch - uhmm__page_size, 3 * uhmm__page_size);
	wakeups_close(mm->msgq);
	rings_unmap(mm, mm->msgq->retired);
	uhmm__sys_munmap(mm->msgq->ring, ring_bytes(mm->msgq->cap));
	uhmm__sys_munmap(mm->msgq, sizeof(*mm->msgq));
	mm->msgq = NULL;
}

void uhmm__service_atfork_child(struct uhmm_mm *mm)
{
	/* The parent's threads are not here; their descriptors are. */
	if (mm->msgq)
		wakeups_close(mm->msgq);
}

int uhmm__service_start(struct uhmm_mm *mm)
{
	pthread_attr_t attr;
	int ret;

	/* Its own populated mapping: never memory anyone registers. */
	mm->msgq = uhmm__sys_mmap(NULL, sizeof(*mm->msgq), PROT_READ | PROT_WRITE,
				  MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (mm->msgq == MAP_FAILED) {
		mm->msgq = NULL;
		return uhmm__err(ENOMEM, "cannot allocate the message queue");
	}
	mm->msgq->cap = QUEUE_CAP;
	mm->msgq->ring = ring_map(QUEUE_CAP);
	if (!mm->msgq->ring) {
		uhmm__sys_munmap(mm->msgq, sizeof(*mm->msgq));
		mm->msgq = NULL;
		return uhmm__err(ENOMEM, "cannot allocate the message queue");
	}
	mm->msgq->msg = mm->msgq->ring;
	mm->msgq->seq = (unsigned long *)(mm->msgq->msg + QUEUE_CAP);
	mm->msgq->wake_fd = mm->msgq->kick_fd = mm->msgq->worker_ep = mm->msgq->reader_ep = -1;
	ret = wakeups_setup(mm, mm->msgq);
	if (ret) {
		msgq_free(mm);
		return uhmm__err(-ret, "cannot set up the service threads' wake-ups");
	}
	pthread_mutex_init(&mm->msgq->lock, NULL);
	pthread_mutex_init(&mm->msgq->rd_lock, NULL);
	pthread_cond_init(&mm->msgq->nonfull, NULL);
	pthread_cond_init(&mm->msgq->rnonempty, NULL);
	pthread_cond_init(&mm->msgq->nomem_cond, NULL);
	pthread_cond_init(&mm->msgq->ready, NULL);
	mm->msgq->scratch = scratch_map();
	/*
	 * The reader's stack is ours, not libc's: libc discards the unused
	 * part of a stack it allocated when the thread exits (MADV_DONTNEED),
	 * and if that stack lies in registered memory the exiting reader
	 * would wait for itself to read the REMOVE event.
	 */
	mm->reader_stack = uhmm__sys_mmap(NULL, READER_STACK, PROT_READ | PROT_WRITE,
					  MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK | MAP_NORESERVE,
					  -1, 0);
	if (mm->reader_stack == MAP_FAILED) {
		mm->reader_stack = NULL;
		msgq_free(mm);
		return uhmm__err(ENOMEM, "cannot allocate the reader's stack");
	}
	pthread_attr_init(&attr);
	pthread_attr_setstack(&attr, mm->reader_stack, READER_STACK);
	ret = pthread_create(&mm->reader, &attr, reader_main, mm);
	pthread_attr_destroy(&attr);
	pthread_attr_init(&attr);
	if (!ret) {
		pthread_attr_setstacksize(&attr, 1024 * 1024);
		ret = pthread_create(&mm->service, &attr, worker_main, mm);
		if (!ret) {
			/* Best effort: without it, only the self-fault case hangs. */
			mm->msgq->rescue_started = pthread_create(&mm->msgq->rescue, &attr,
								  rescue_main, mm) == 0;
			if (!mm->msgq->rescue_started)
				uhmm__warn("cannot start the rescue thread");
			/*
			 * Without it a fault short of memory is woken to fault
			 * again.  Under the lock: the worker reads it to park.
			 */
			bool w = pthread_create(&mm->msgq->nomemw, &attr, nomem_main, mm) == 0;

			pthread_mutex_lock(&mm->msgq->lock);
			mm->msgq->nomemw_started = w;
			pthread_mutex_unlock(&mm->msgq->lock);
			if (!w)
				uhmm__warn("cannot start the memory waiter");
		}
		if (ret) {
			eventfd_poke(mm->stop_fd, "the reader to stop");
			pthread_join(mm->reader, NULL);
		}
	}
	pthread_attr_destroy(&attr);
	if (ret) {
		msgq_free(mm);
		uhmm__sys_munmap(mm->reader_stack, READER_STACK);
		mm->reader_stack = NULL;
		return uhmm__err(EAGAIN, "cannot start the service threads: %s",
				 uhmm__err_text(ret));
	}
	probe_create(mm);
	/* The threads are running and set up before anyone uses the context. */
	pthread_mutex_lock(&mm->msgq->lock);
	while (mm->msgq->nready < 2u + mm->msgq->rescue_started + mm->msgq->nomemw_started)
		pthread_cond_wait(&mm->msgq->ready, &mm->msgq->lock);
	pthread_mutex_unlock(&mm->msgq->lock);
	mm->service_started = true;
	return 0;
}

/*
 * Unregister every mapping from the userfaultfd (one ioctl per mapping that
 * can be registered; the others are refused harmlessly).  After this no
 * munmap or discard can make a thread wait for an event read.
 */
static void unregister_all(struct uhmm_mm *mm)
{
	struct uhmm__vma v[64];
	uintptr_t cur = 0;
	bool fresh = true;
	size_t n;

	/*
	 * 64 mappings and one look-up more per call (uhmm__vma_find() never
	 * counts ahead); the fallback's list is read once, not per call: an
	 * unregistration merges pieces but never moves or unmaps anything.
	 */
	for (;;) {
		if (uhmm__vma_find(cur, UINTPTR_MAX, v, UHMM__ARRAY_SIZE(v), &n, fresh) || !n)
			return;
		fresh = false;
		for (size_t i = 0; i < UHMM__MIN(n, UHMM__ARRAY_SIZE(v)); i++) {
			struct uffdio_range r = { .start = v[i].start, .len = v[i].end - v[i].start };

			if (v[i].flags & (UHMM__VMA_ANON | UHMM__VMA_SHMEM))
				uhmm__uffd_ioctl(mm->uffd, UFFDIO_UNREGISTER, &r);
		}
		if (n <= UHMM__ARRAY_SIZE(v))
			return;
		cur = v[UHMM__ARRAY_SIZE(v) - 1].end;
	}
}

void uhmm__service_stop(struct uhmm_mm *mm)
{
	if (!mm->service_started)
		return;
	/*
	 * Threads that exit unmap or discard memory of their own (libc's
	 * stack trimming, sanitizer runtimes): with nothing registered, none
	 * of that can wait for the reader.  The worker stops first, while the
	 * reader still reads.
	 */
	pthread_mutex_lock(&mm->reg_lock);
	unregister_all(mm);
	pthread_mutex_unlock(&mm->reg_lock);
	pthread_mutex_lock(&mm->msgq->lock);
	mm->msgq->stop = true;
	eventfd_poke(mm->msgq->wake_fd, "the worker to stop");
	pthread_cond_broadcast(&mm->msgq->nonfull);
	pthread_cond_broadcast(&mm->msgq->rnonempty);
	pthread_cond_broadcast(&mm->msgq->nomem_cond);
	pthread_mutex_unlock(&mm->msgq->lock);
	pthread_join(mm->service, NULL);
	if (mm->msgq->rescue_started)
		pthread_join(mm->msgq->rescue, NULL);
	/*
	 * Parked faults were woken by the unregistration; one the waiter is
	 * serving ends at its next round (a wait in the memory cgroup that
	 * never ends holds this join, as it holds the kernel's fault).
	 */
	if (mm->msgq->nomemw_started)
		pthread_join(mm->msgq->nomemw, NULL);
	eventfd_poke(mm->stop_fd, "the reader to stop");
	pthread_join(mm->reader, NULL);
	pthread_mutex_destroy(&mm->msgq->lock);
	pthread_mutex_destroy(&mm->msgq->rd_lock);
	pthread_cond_destroy(&mm->msgq->nonfull);
	pthread_cond_destroy(&mm->msgq->rnonempty);
	pthread_cond_destroy(&mm->msgq->nomem_cond);
	pthread_cond_destroy(&mm->msgq->ready);
	msgq_free(mm);	/* nothing is registered any more: rings unmap silently */
	mm->service_started = false;
}

void uhmm__service_free_stack(struct uhmm_mm *mm)
{
	/* After the userfaultfd is closed: no event can make this wait. */
	if (mm->reader_stack)
		uhmm__sys_munmap(mm->reader_stack, READER_STACK);
	mm->reader_stack = NULL;
	if (probe_page)
		uhmm__sys_munmap(probe_page, uhmm__page_size);
	probe_page = NULL;
}
