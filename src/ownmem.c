// SPDX-License-Identifier: MIT
/*
 * The library's own memory: every allocation of libuhmm (uhmm__malloc,
 * uhmm__calloc, uhmm__realloc, freed with uhmm__free) comes from mappings
 * the library made itself, never from the application's heap.
 *
 * Why: the application may migrate any of its memory to a device, its heap
 * included, and memory libc's malloc hands out (or reads: free-list
 * pointers in freed blocks, a neighbour's header) may be on a device page
 * that a migration has frozen.  A thread that froze a page and then
 * touches it waits for its own finalize, forever; a thread that holds a
 * library lock while it waits for another thread's frozen page can stop
 * that thread's finalize.  So while any page is frozen the library touches
 * only memory it owns (docs/CONCURRENCY.md, "Frozen pages"): these
 * mappings, its static data, its initial-exec thread-local variables and
 * the service threads' own stacks.
 *
 * The allocator is deliberately simple: power-of-two size classes from 32
 * bytes to 256 KiB (16 bytes of header each) carved from 2 MiB mappings
 * and kept on per-class free lists (memory is reused, never returned to
 * the system while the process lives); larger blocks are a mapping each.
 * One leaf lock; nothing is called while it is held except mmap/munmap.
 *
 * The service thread allocates here too (a migration's state, when the
 * device's migrate_to_ram serves a CPU fault), so the lock is held only
 * with asynchronous signals blocked (own_lock_take()): a signal handler
 * that touched device memory while its thread held it would wait for the
 * service thread, and the service thread for the lock, for good
 * (docs/CONCURRENCY.md, "Signals").  Inside a region that blocks them
 * already, and on the service threads, that costs no system call.
 */
#include <string.h>
#include <sys/mman.h>

#include "base.h"
#include "features_priv.h"
#include "ownmem.h"
#include "sigblock.h"
#include "sys.h"

#define OWN_MIN_SHIFT	5		/* 32-byte blocks */
#define OWN_MAX_SHIFT	18		/* 256 KiB blocks */
#define OWN_CLASSES	(OWN_MAX_SHIFT - OWN_MIN_SHIFT + 1)
#define OWN_CHUNK	((size_t)2 << 20)
#define OWN_BIG		UINT64_C(0x7568686d62696721)	/* a block that is its own mapping */
#define OWN_SMALL	UINT64_C(0x7568686d736d6c21)

struct own_hdr {
	uint64_t size;		/* class index, or the mapping's length */
	uint64_t magic;		/* OWN_SMALL or OWN_BIG */
};

struct own_free {
	struct own_free *next;
};

static pthread_mutex_t own_lock = PTHREAD_MUTEX_INITIALIZER;
static struct own_free *own_lists[OWN_CLASSES];
static char *own_cur, *own_end;		/* the rest of the newest chunk */

/* own_lock, with no signal handler on this thread while it is held. */
static void own_lock_take(void)
{
	uhmm__sig_enter();
	pthread_mutex_lock(&own_lock);
}

static void own_lock_drop(void)
{
	pthread_mutex_unlock(&own_lock);
	uhmm__sig_leave();
}

static void own_prepare(void)
{
	pthread_mutex_lock(&own_lock);
}

static void own_parent(void)
{
	pthread_mutex_unlock(&own_lock);
}

static void own_child(void)
{
	/* The forking thread took it in prepare: it owns it in the child too. */
	pthread_mutex_unlock(&own_lock);
}

/*
 * Registered before any other handler of the library (the highest
 * constructor priority), so its prepare runs last: every other prepare
 * handler may still allocate, and no thread is inside the allocator when
 * the process forks.
 */
__attribute__((constructor(101))) static void own_init(void)
{
	pthread_atfork(own_prepare, own_parent, own_child);
}

static unsigned int own_class(size_t total)
{
	unsigned int c = 0;

	while (((size_t)1 << (c + OWN_MIN_SHIFT)) < total)
		c++;
	return c;
}

static void *own_map(size_t len)
{
	void *p = uhmm__sys_mmap(NULL, len, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

/* A block of at least @n bytes, its content undefined; NULL (ENOMEM). */
static void *own_alloc(size_t n)
{
	size_t total = n + sizeof(struct own_hdr);
	struct own_hdr *h;

	if (n > SIZE_MAX / 2) {
		errno = ENOMEM;
		return NULL;
	}
	own_lock_take();
	if (total > ((size_t)1 << OWN_MAX_SHIFT)) {
		/* Mapped under the lock: the lock orders its users (a race detector sees it). */
		size_t len = (total + uhmm__page_size - 1) & ~(uhmm__page_size - 1);

		h = own_map(len);
		if (h) {
			h->size = len;
			h->magic = OWN_BIG;
		}
	} else {
		unsigned int c = own_class(total);
		size_t bsize = (size_t)1 << (c + OWN_MIN_SHIFT);

		h = (struct own_hdr *)own_lists[c];
		if (h) {
			own_lists[c] = own_lists[c]->next;
		} else {
			if ((size_t)(own_end - own_cur) < bsize) {
				char *chunk = own_map(OWN_CHUNK);

				if (chunk) {
					own_cur = chunk;
					own_end = chunk + OWN_CHUNK;
				}
			}
			if ((size_t)(own_end - own_cur) >= bsize) {
				h = (struct own_hdr *)own_cur;
				own_cur += bsize;
			}
		}
		if (h) {
			h->size = c;
			h->magic = OWN_SMALL;
		}
	}
	own_lock_drop();
	if (!h) {
		errno = ENOMEM;
		return NULL;
	}
	return h + 1;
}

static size_t own_usable(const struct own_hdr *h)
{
	if (h->magic == OWN_BIG)
		return h->size - sizeof(*h);
	return ((size_t)1 << (h->size + OWN_MIN_SHIFT)) - sizeof(*h);
}

void uhmm__free(void *p)
{
	struct own_hdr *h;

	if (!p)
		return;
	h = (struct own_hdr *)p - 1;
	own_lock_take();
	if (h->magic == OWN_BIG) {
		uhmm__sys_munmap(h, h->size);
	} else {
		struct own_free *f = (struct own_free *)h;
		unsigned int c = (unsigned int)h->size;

		h->magic = 0;
		f->next = own_lists[c];
		own_lists[c] = f;
	}
	own_lock_drop();
}

void *uhmm__own_malloc(size_t n)
{
	return own_alloc(n);
}

void *uhmm__own_calloc(size_t n, size_t size)
{
	void *p;

	if (size && n > SIZE_MAX / size) {
		errno = ENOMEM;
		return NULL;
	}
	p = own_alloc(n * size);
	if (p)
		memset(p, 0, n * size);
	return p;
}

void *uhmm__own_realloc(void *old, size_t n)
{
	void *p;

	if (!old)
		return own_alloc(n);
	if (own_usable((struct own_hdr *)old - 1) >= n)
		return old;
	p = own_alloc(n);
	if (p) {
		memcpy(p, old, own_usable((struct own_hdr *)old - 1));
		uhmm__free(old);
	}
	return p;
}
