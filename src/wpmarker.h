/* SPDX-License-Identifier: MIT */
/* wpmarker.c: device-resident pages shown in pagemap as swap entries. */
#ifndef UHMM__WPMARKER_H
#define UHMM__WPMARKER_H

#include "base.h"

/*
 * Are uffd-wp markers put on device-resident pages (WP_UNPOPULATED and
 * uffd write-protect active, and the context's userfaultfd has both)?
 */
UHMM__HIDDEN bool uhmm__markers_on(const struct uhmm_mm *mm);
/*
 * Put markers on the empty entries of [start, end) (pages uhmm holds
 * MIGRATING and is about to commit as device pages), or drop the markers
 * of [start, end) without waking (before a UFFDIO_MOVE installs there, or
 * a stale one).  Best effort: 0 or -errno, and nothing depends on the
 * result (wpmarker.c).  No-ops when markers are off.
 */
UHMM__HIDDEN int uhmm__marker_set(struct uhmm_mm *mm, uintptr_t start, uintptr_t end);
UHMM__HIDDEN int uhmm__marker_clear(struct uhmm_mm *mm, uintptr_t start, uintptr_t end);
/*
 * Before a UFFDIO_MOVE from staging at @src installs [start, end), pages
 * uhmm holds MIGRATING whose entries may be markers: free the page tables
 * the markers needed under the whole 2 MiB blocks whose staging is a huge
 * page, so it can be moved in as one PMD (a destination PMD with a page
 * table splits it).
 */
UHMM__HIDDEN void uhmm__marker_make_pmd_room(struct uhmm_mm *mm, uintptr_t start,
					       uintptr_t end, uintptr_t src);

#endif /* UHMM__WPMARKER_H */
