// SPDX-License-Identifier: MIT
/*
 * The managed-range summary (managed.h): at most MR_CAP ranges, read under
 * a sequence count with relaxed atomic loads, written under mr_lock.
 *
 * Two kinds of entry.  A notifier's interval is counted (two notifiers over
 * the same interval share one entry) and leaves with the notifier.  A
 * registered range stays until a wrapper unmaps it (it is trimmed then);
 * registered ranges that overlap or touch are merged, and when the table is
 * full a new one widens an existing one instead of being lost.  Notifier
 * entries that do not fit are counted in @overflow, and while it is not
 * zero every range is reported managed.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "managed.h"

#define MR_CAP 64

enum { MR_NOTIFIER = 1, MR_REG };

static struct {
	atomic_uint seq;		/* odd while a writer changes the table */
	atomic_uint n;			/* entries [0, n) are valid */
	atomic_uint overflow;		/* notifier entries that did not fit */
	struct {
		atomic_uintptr_t start, last;	/* inclusive */
	} iv[MR_CAP];
} mr;

/* Writer side, under mr_lock. */
static pthread_mutex_t mr_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned char mr_kind[MR_CAP];
static unsigned int mr_count[MR_CAP];

static void w_begin(void)
{
	unsigned int q = atomic_load_explicit(&mr.seq, memory_order_relaxed);

	atomic_store_explicit(&mr.seq, q + 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
}

static void w_end(void)
{
	unsigned int q = atomic_load_explicit(&mr.seq, memory_order_relaxed);

	atomic_store_explicit(&mr.seq, q + 1, memory_order_release);
}

static uintptr_t ld(atomic_uintptr_t *p)
{
	return atomic_load_explicit(p, memory_order_relaxed);
}

static void set(unsigned int i, uintptr_t start, uintptr_t last)
{
	atomic_store_explicit(&mr.iv[i].start, start, memory_order_relaxed);
	atomic_store_explicit(&mr.iv[i].last, last, memory_order_relaxed);
}

/* Append an entry (room checked by the caller); inside w_begin/w_end. */
static void append(uintptr_t start, uintptr_t last, unsigned char kind)
{
	unsigned int n = atomic_load_explicit(&mr.n, memory_order_relaxed);

	set(n, start, last);
	mr_kind[n] = kind;
	mr_count[n] = 1;
	atomic_store_explicit(&mr.n, n + 1, memory_order_relaxed);
}

/* Remove entry @i (the last one takes its place); inside w_begin/w_end. */
static void drop(unsigned int i)
{
	unsigned int n = atomic_load_explicit(&mr.n, memory_order_relaxed) - 1;

	set(i, ld(&mr.iv[n].start), ld(&mr.iv[n].last));
	mr_kind[i] = mr_kind[n];
	mr_count[i] = mr_count[n];
	atomic_store_explicit(&mr.n, n, memory_order_relaxed);
}

void uhmm__managed_notifier_add(uintptr_t start, uintptr_t last)
{
	unsigned int n;

	pthread_mutex_lock(&mr_lock);
	n = atomic_load_explicit(&mr.n, memory_order_relaxed);
	for (unsigned int i = 0; i < n; i++) {
		if (mr_kind[i] == MR_NOTIFIER && ld(&mr.iv[i].start) == start &&
		    ld(&mr.iv[i].last) == last) {
			mr_count[i]++;
			pthread_mutex_unlock(&mr_lock);
			return;
		}
	}
	if (n < MR_CAP) {
		w_begin();
		append(start, last, MR_NOTIFIER);
		w_end();
	} else {
		atomic_fetch_add(&mr.overflow, 1);
	}
	pthread_mutex_unlock(&mr_lock);
}

void uhmm__managed_notifier_del(uintptr_t start, uintptr_t last)
{
	unsigned int n;

	pthread_mutex_lock(&mr_lock);
	n = atomic_load_explicit(&mr.n, memory_order_relaxed);
	for (unsigned int i = 0; i < n; i++) {
		if (mr_kind[i] == MR_NOTIFIER && ld(&mr.iv[i].start) == start &&
		    ld(&mr.iv[i].last) == last) {
			if (--mr_count[i] == 0) {
				w_begin();
				drop(i);
				w_end();
			}
			pthread_mutex_unlock(&mr_lock);
			return;
		}
	}
	if (atomic_load(&mr.overflow))
		atomic_fetch_sub(&mr.overflow, 1);
	pthread_mutex_unlock(&mr_lock);
}

void uhmm__managed_registered(uintptr_t start, uintptr_t end)
{
	uintptr_t last = end - 1;
	unsigned int n, widen = MR_CAP;

	if (end <= start)
		return;
	pthread_mutex_lock(&mr_lock);
	n = atomic_load_explicit(&mr.n, memory_order_relaxed);
	/* Already inside one: nothing to change. */
	for (unsigned int i = 0; i < n; i++)
		if (mr_kind[i] == MR_REG && ld(&mr.iv[i].start) <= start &&
		    last <= ld(&mr.iv[i].last)) {
			pthread_mutex_unlock(&mr_lock);
			return;
		}
	w_begin();
	/* Absorb the registered ranges it overlaps or touches. */
	for (unsigned int i = 0; i < atomic_load_explicit(&mr.n, memory_order_relaxed);) {
		uintptr_t a = ld(&mr.iv[i].start), b = ld(&mr.iv[i].last);

		if (mr_kind[i] == MR_REG && (a == 0 || a - 1 <= last) &&
		    (b == UINTPTR_MAX || start <= b + 1)) {
			start = a < start ? a : start;
			last = b > last ? b : last;
			drop(i);
			continue;
		}
		if (mr_kind[i] == MR_REG)
			widen = i;
		i++;
	}
	n = atomic_load_explicit(&mr.n, memory_order_relaxed);
	if (n < MR_CAP) {
		append(start, last, MR_REG);
	} else if (widen < MR_CAP) {
		/* Full: cover it by widening another registered range. */
		uintptr_t a = ld(&mr.iv[widen].start), b = ld(&mr.iv[widen].last);

		set(widen, a < start ? a : start, b > last ? b : last);
	} else {
		atomic_fetch_add(&mr.overflow, 1);	/* full of notifiers: all managed */
	}
	w_end();
	pthread_mutex_unlock(&mr_lock);
}

void uhmm__managed_unmapped(uintptr_t start, uintptr_t end)
{
	uintptr_t last = end - 1;

	if (end <= start)
		return;
	pthread_mutex_lock(&mr_lock);
	w_begin();
	for (unsigned int i = 0; i < atomic_load_explicit(&mr.n, memory_order_relaxed);) {
		uintptr_t a = ld(&mr.iv[i].start), b = ld(&mr.iv[i].last);

		if (mr_kind[i] != MR_REG || b < start || last < a) {
			i++;
			continue;
		}
		if (start <= a && b <= last) {
			drop(i);		/* all of it unmapped */
			continue;
		}
		if (a < start && last < b) {
			/* A hole in the middle: two pieces, if there is room. */
			if (atomic_load_explicit(&mr.n, memory_order_relaxed) < MR_CAP) {
				set(i, a, start - 1);
				append(end, b, MR_REG);
			}
		} else if (a < start) {
			set(i, a, start - 1);
		} else {
			set(i, end, b);
		}
		i++;
	}
	w_end();
	pthread_mutex_unlock(&mr_lock);
}

void uhmm__managed_reset(void)
{
	pthread_mutex_lock(&mr_lock);
	w_begin();
	atomic_store_explicit(&mr.n, 0, memory_order_relaxed);
	atomic_store_explicit(&mr.overflow, 0, memory_order_relaxed);
	w_end();
	pthread_mutex_unlock(&mr_lock);
}

/*
 * The fast paths in flight (managed.h).  A wrapper adds one to a counter of
 * the current phase (fg_gen's parity; the stripe by its stack, to spread
 * threads over cache lines) and takes it away after its system call.  A
 * waiter drains: under fg_lock it moves fg_gen on (new wrappers count in
 * the other phase) and waits until the old phase's counters are all 0
 * (each is a system call of another thread, which waits for nothing of
 * uhmm's: bounded), then records the generation in fg_drained.  A wrapper
 * may read fg_gen just before a move and add to the old phase just after
 * it, so an insertion that saw wrappers in flight at generation G waits
 * for both phases, G and G + 1.
 */
#define FG_STRIPES 8

static struct {
	_Alignas(64) atomic_ulong n;
} fg_cnt[2 * FG_STRIPES];
static atomic_ulong fg_gen = 1;		/* the phase new wrappers count in: & 1 */
static atomic_ulong fg_drained;		/* every generation up to this is drained */
static pthread_mutex_t fg_lock = PTHREAD_MUTEX_INITIALIZER;

unsigned int uhmm__fast_enter(void)
{
	uintptr_t sp = (uintptr_t)__builtin_frame_address(0);
	unsigned int stripe = (unsigned int)((sp >> 16) ^ (sp >> 23)) % FG_STRIPES;
	unsigned int tok = (unsigned int)(atomic_load_explicit(&fg_gen, memory_order_relaxed) & 1) *
			   FG_STRIPES + stripe;

	atomic_fetch_add_explicit(&fg_cnt[tok].n, 1, memory_order_relaxed);
	/* The announcement before the summary is read (the insertion: after). */
	atomic_thread_fence(memory_order_seq_cst);
	return tok;
}

void uhmm__fast_leave(unsigned int tok)
{
	/* After the system call: the drain's acquire load sees it done. */
	atomic_fetch_sub_explicit(&fg_cnt[tok].n, 1, memory_order_release);
}

unsigned long uhmm__fast_inflight(void)
{
	bool busy = false;

	/* The summary entry (mr.seq's release) before the announcements are read. */
	atomic_thread_fence(memory_order_seq_cst);
	for (unsigned int i = 0; i < 2 * FG_STRIPES && !busy; i++)
		busy = atomic_load_explicit(&fg_cnt[i].n, memory_order_seq_cst) != 0;
	if (!busy)
		return 0;
	return atomic_load_explicit(&fg_gen, memory_order_seq_cst) + 1;
}

void uhmm__fast_wait(unsigned long target)
{
	if (!target || atomic_load_explicit(&fg_drained, memory_order_acquire) >= target)
		return;
	pthread_mutex_lock(&fg_lock);
	while (atomic_load_explicit(&fg_drained, memory_order_relaxed) < target) {
		unsigned long g = atomic_load_explicit(&fg_gen, memory_order_relaxed);
		unsigned int ph = (unsigned int)(g & 1) * FG_STRIPES;

		atomic_store_explicit(&fg_gen, g + 1, memory_order_seq_cst);
		for (unsigned int i = ph; i < ph + FG_STRIPES; i++)
			while (atomic_load_explicit(&fg_cnt[i].n, memory_order_seq_cst))
				sched_yield();	/* another thread's system call */
		atomic_store_explicit(&fg_drained, g, memory_order_release);
	}
	pthread_mutex_unlock(&fg_lock);
}

/*
 * A fork child has no registration and no notifier; mr_lock may have been
 * held by a thread of the parent that the child does not have, and the
 * fast paths in flight were the parent's other threads'.
 */
static void managed_atfork_child(void)
{
	unsigned int q = atomic_load_explicit(&mr.seq, memory_order_relaxed);

	pthread_mutex_init(&fg_lock, NULL);
	for (unsigned int i = 0; i < 2 * FG_STRIPES; i++)
		atomic_store_explicit(&fg_cnt[i].n, 0, memory_order_relaxed);
	atomic_store_explicit(&fg_drained,
			      atomic_load_explicit(&fg_gen, memory_order_relaxed) - 1,
			      memory_order_relaxed);
	pthread_mutex_init(&mr_lock, NULL);
	atomic_store_explicit(&mr.n, 0, memory_order_relaxed);
	atomic_store_explicit(&mr.overflow, 0, memory_order_relaxed);
	atomic_store_explicit(&mr.seq, (q | 1) + 1, memory_order_release);
}

__attribute__((constructor)) static void managed_init(void)
{
	pthread_atfork(NULL, NULL, managed_atfork_child);
}

bool uhmm__managed_hit(uintptr_t start, uintptr_t end)
{
	uintptr_t last = end - 1;

	if (end <= start)
		return true;	/* the caller's range wraps: let the full path judge */
	for (int tries = 0; tries < 16; tries++) {
		unsigned int q = atomic_load_explicit(&mr.seq, memory_order_acquire);
		unsigned int n;

		if (q & 1)
			continue;	/* a writer is at work: look again */
		if (atomic_load_explicit(&mr.overflow, memory_order_relaxed))
			return true;
		n = atomic_load_explicit(&mr.n, memory_order_relaxed);
		if (n > MR_CAP)
			continue;
		for (unsigned int i = 0; i < n; i++)
			if (ld(&mr.iv[i].start) <= last && start <= ld(&mr.iv[i].last))
				return true;	/* a torn read only errs this way */
		atomic_thread_fence(memory_order_acquire);
		if (atomic_load_explicit(&mr.seq, memory_order_relaxed) == q)
			return false;
	}
	return true;
}
