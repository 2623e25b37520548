/* SPDX-License-Identifier: MIT */
/* features.c: what the kernel offers (the probe) and the page size. */
#ifndef UHMM__FEATURES_PRIV_H
#define UHMM__FEATURES_PRIV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base.h"

UHMM__HIDDEN const struct uhmm_sysinfo *uhmm__sysinfo(void);
static inline bool uhmm__has(unsigned int feat)
{
	return (uhmm__sysinfo()->active & feat) != 0;
}
extern size_t uhmm__page_size UHMM__HIDDEN;
extern unsigned int uhmm__page_shift UHMM__HIDDEN;
/*
 * Device -> system installs move staged pages into place (UFFDIO_MOVE)
 * unless UHMM_INSTALL=copy (features.c reads it at load).
 */
extern bool uhmm__install_by_move UHMM__HIDDEN;
/*
 * The worker thread reads the userfaultfd itself while idle, unless
 * UHMM_DISABLE=worker_read or =all (features.c; service.c explains).
 */
extern bool uhmm__worker_reads UHMM__HIDDEN;
/* Open a userfaultfd the way the probe found works; -errno on failure. */
UHMM__HIDDEN int uhmm__uffd_open(uint64_t *features_out);
/*
 * Open a second userfaultfd the same way with UFFD_FEATURE_MOVE only (no
 * events): the small staging area's (staging.c).  fd or -errno.
 */
UHMM__HIDDEN int uhmm__uffd_open_move_only(void);

static inline uintptr_t uhmm__page_align_down(uintptr_t a)
{
	return a & ~(uintptr_t)(uhmm__page_size - 1);
}
static inline bool uhmm__page_aligned(uintptr_t a)
{
	return (a & (uhmm__page_size - 1)) == 0;
}

#endif /* UHMM__FEATURES_PRIV_H */
