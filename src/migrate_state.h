/* SPDX-License-Identifier: MIT */
/*
 * The state of one migrate_vma between setup and finalize (migrate.c),
 * shared with staging.c, which maps its staging and lends it the staging
 * cache's.
 */
#ifndef UHMM__MIGRATE_STATE_H
#define UHMM__MIGRATE_STATE_H

#include "base.h"

/* What entry i of a migration holds. */
enum uhmm__entry_kind { K_NONE = 0, K_SYS, K_DEV };

struct uhmm_migrate_state {
	char *staging;		/* page i of the range <-> staging + i pages */
	void *map;		/* the staging mapping */
	size_t map_len;
	bool registered;	/* staging registered with the uffd */
	bool bounce;		/* staging is the context's bounce area (staging.c) */
	bool sarea;		/* staging is slots of the small staging area (staging.c) */
	bool by_mremap;		/* frozen with mremap(MREMAP_DONTUNMAP) */
	bool locked;		/* took migrate_lock */
	bool inv_active;	/* the MIGRATE invalidation is open */
	uint8_t *kind;
	uint64_t *orig;		/* the entry before the migration claimed it */
	uint64_t *dst_given;	/* alloc_sys pages handed out (bitmap) */
	struct uhmm__stage_entry *cache;	/* staging borrowed from the staging cache */
	/* Compound entries (migrate.c, "compound entries"); NULL without any. */
	uint64_t *full_src;	/* the per-page src entries of compound blocks */
	uint64_t *csrc;		/* the compound src entry at each head */
	uint64_t *chead;	/* bitmap: head of a block shown as one entry now */
	uint64_t *cwhole;	/* bitmap: head of a block migrating whole */
	struct uhmm__fault *fault;	/* the CPU fault on fault_page, if any */
	bool populated;		/* the emptied slots of a trimmed entry were populated */
	/* Following raw mremaps (migrate.c, "where a page is now"). */
	bool remap_user;	/* counted in mm->remap_users */
	unsigned long remap_seq0;	/* the remap log's last sequence at setup */
	uint32_t serial;	/* this migration's, in its system pages' tags */
};

#endif /* UHMM__MIGRATE_STATE_H */
