/* SPDX-License-Identifier: MIT */
/*
 * migrate.c's private side, for the files that work on a migration's state
 * with it: staging.c (the staging mapping and its cache) and
 * migrate_device.c (device-range migration).
 */
#ifndef UHMM_MIGRATE_PRIV_H
#define UHMM_MIGRATE_PRIV_H

#include "internal.h"

/* What entry i of a migration holds. */
enum kind { K_NONE = 0, K_SYS, K_DEV };

struct uhmm_migrate_state {
	char *staging;		/* page i of the range <-> staging + i pages */
	void *map;		/* the staging mapping */
	size_t map_len;
	bool registered;	/* staging registered with the uffd */
	bool by_mremap;		/* frozen with mremap(MREMAP_DONTUNMAP) */
	bool locked;		/* took migrate_lock */
	bool inv_active;	/* the MIGRATE invalidation is open */
	uint8_t *kind;
	uint64_t *orig;		/* the entry before the migration claimed it */
	uint64_t *dst_given;	/* alloc_sys pages handed out (bitmap) */
	struct stage_entry *cache;	/* staging borrowed from the staging cache */
};

/*
 * Device -> system installs move staged pages into place (UFFDIO_MOVE)
 * unless UHMM_INSTALL=copy (migrate.c).
 */
extern bool uhmm__install_by_move UHMM_HIDDEN;

/*
 * Store a migrated entry's final value; a device page whose address was
 * unmapped meanwhile (GONE) is dropped instead.
 */
UHMM_HIDDEN void uhmm__migrate_commit_entry(struct uhmm_mm *mm, _Atomic uint64_t *slot,
					       uint64_t e, uint64_t final);
/* A migration ended: wake the threads in uhmm__wait_migrations(). */
UHMM_HIDDEN void uhmm__migrate_done_broadcast(struct uhmm_mm *mm);

#endif /* UHMM_MIGRATE_PRIV_H */
