/* SPDX-License-Identifier: MIT */
/*
 * staging.c: a migration's staging mapping and the staging cache.
 */
#ifndef UHMM__STAGING_H
#define UHMM__STAGING_H

#include "base.h"
#include "itree.h"

struct uhmm__stage_entry;

/*
 * The small staging area: pages in it and the largest system->device
 * migration (in pages) that takes its staging there.
 */
#define UHMM__SAREA_PAGES 8192
#define UHMM__SAREA_MAX_PAGES 32

/*
 * The staging cache's state, owned by the context (mm->staging_cache):
 * lock guards the rest.  Cleared in a fork child (the mappings are
 * MADV_DONTFORK); pid tells entries of a child made without
 * pthread_atfork from its parent's.
 */
struct uhmm__staging_cache {
	pthread_mutex_t lock;
	struct uhmm__stage_entry *head;	/* newest first (doubly linked) */
	struct uhmm__stage_entry *tail;	/* the oldest */
	size_t pages;			/* pages the entries on the list hold (tree.count: how many) */
	struct uhmm__stage_entry *dead;	/* emptied, to unmap (CACHE_MAX_DEAD) */
	size_t ndead;
	size_t cap;			/* the bound in pages; 0: no caching */
	pid_t pid;			/* the process the entries are of */
	unsigned long checked_gen;	/* every entry is of this context generation */
	/*
	 * The entries on the list by the range they mirror: a put finds the
	 * entries it supersedes and a take the entries covering its range
	 * without walking the list (a list walk per migration made many
	 * small migrations to the device spend 5% of their time there).
	 */
	struct uhmm__itree tree;
	unsigned long seq;		/* the newest entry's seq */
	/*
	 * The small staging area (staging.c, "the small staging area"): made
	 * on first use, registered (WP) with its own userfaultfd sa_uffd;
	 * sa_used has a bit per page handed out.  All under lock.
	 */
	char *sa_map;			/* NULL: not made */
	int sa_uffd;			/* valid while sa_map */
	unsigned long sa_gen;		/* the context generation it was made in */
	bool sa_off;			/* cannot be made, or spoiled: not used until teardown */
	size_t sa_hint;			/* where the next search starts (a page index) */
	uint64_t sa_used[UHMM__SAREA_PAGES / 64];
};

/*
 * Map @m's staging (page i at the range's 2 MiB offset), registered for
 * write-protect events when @reg; 0 or -errno.
 */
UHMM__HIDDEN int uhmm__staging_create(struct uhmm_migrate_vma *m, bool reg);
/*
 * The context's bounce area: staging for device->system migrations of at
 * most UHMM__BOUNCE_PAGES pages that the staging cache has nothing for,
 * reused instead of mapped and unmapped each time (a one-page CPU
 * fault-back).  Made with the context (0 or -ENOMEM), unmapped at teardown;
 * take gives it to @m if it is free and @m small enough.
 */
#define UHMM__BOUNCE_PAGES 64
UHMM__HIDDEN int uhmm__bounce_create(struct uhmm_mm *mm);
UHMM__HIDDEN void uhmm__bounce_destroy(struct uhmm_mm *mm);
UHMM__HIDDEN bool uhmm__bounce_take(struct uhmm_migrate_vma *m);
/*
 * Staging for a system->device migration of at most UHMM__SAREA_MAX_PAGES
 * pages in a mapping @vma_flags (vma.h) describes, from the small staging
 * area: true if @m got it (s->sarea); false if the area cannot serve it
 * (then uhmm__staging_create()).  uhmm__staging_freeze_fd() is the
 * userfaultfd to move pages into @m's staging with.
 */
UHMM__HIDDEN bool uhmm__sarea_take(struct uhmm_migrate_vma *m, unsigned int vma_flags);
UHMM__HIDDEN int uhmm__staging_freeze_fd(struct uhmm_mm *mm, const struct uhmm_migrate_state *s);
/* Take no more slots from the area until teardown (they are not empty). */
UHMM__HIDDEN void uhmm__sarea_off(struct uhmm_mm *mm);
/* Unmap the small staging area (context teardown, after the cache's drop). */
UHMM__HIDDEN void uhmm__sarea_destroy(struct uhmm_mm *mm);
/*
 * Unregister and unmap a staging mapping uhmm__staging_create() made (or
 * give the bounce area back).
 */
UHMM__HIDDEN void uhmm__staging_destroy(struct uhmm_mm *mm, struct uhmm_migrate_state *s);
/* A system->device migration is done: keep its staging in the cache. */
UHMM__HIDDEN void uhmm__staging_cache_put(struct uhmm_migrate_vma *m);
/* A device->system migration borrows cached staging; true if it found one. */
UHMM__HIDDEN bool uhmm__staging_cache_take(struct uhmm_migrate_vma *m);
/* Where the borrowed entry's emptied slots begin (past its bound; else its end). */
UHMM__HIDDEN uintptr_t uhmm__staging_cache_filled(const struct uhmm_migrate_state *s);
/* Give back a borrowed entry; @moved of its slots went into the range. */
UHMM__HIDDEN void uhmm__staging_cache_release(struct uhmm_migrate_vma *m, size_t moved);
/* Unmap the staging cache of recycled system pages (context teardown). */
UHMM__HIDDEN void uhmm__staging_cache_drop(struct uhmm_mm *mm);
/* ... and the entries whose pages went to @pool (the pool is being removed). */
UHMM__HIDDEN void uhmm__staging_cache_drop_pool(struct uhmm_mm *mm,
						  const struct uhmm_devmem *pool);

#endif /* UHMM__STAGING_H */
