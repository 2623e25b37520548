/* SPDX-License-Identifier: MIT */
/*
 * What every source file of the library starts with: the private fields of
 * the public structures (before any public header), the public API, the
 * kernel ABI uhmm needs beyond the installed headers (compat.h), the
 * hidden-visibility marker and three small macros.  Each module's own
 * declarations are in its private header (CONTRIBUTING.md, "Where things
 * live"); docs/CONCURRENCY.md has the locks and the order they nest in.
 */
#ifndef UHMM__BASE_H
#define UHMM__BASE_H

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "private_fields.h"	/* before every public header */
#include <uhmm/uhmm.h>
#include <uhmm/devmem.h>
#include <uhmm/migrate.h>
#include "compat.h"
#include "hidden.h"

/* The private fields fit the reserved bytes callers compiled against. */
#define UHMM__FITS(type, reserved)					\
	_Static_assert(sizeof(((type *)0)->reserved) ==			\
		       sizeof(type) - offsetof(type, reserved),		\
		       #type ": private fields larger than its reserved bytes")
UHMM__FITS(struct uhmm_page, uhmm_reserved);
UHMM__FITS(struct uhmm_devmem, uhmm_reserved);
UHMM__FITS(struct uhmm_interval_notifier, uhmm_reserved);
UHMM__FITS(struct uhmm_migrate_vma, uhmm_reserved);
_Static_assert(sizeof(struct uhmm_page) == 40, "README: 40 bytes per device page");

#define UHMM__MIN(a, b) ((a) < (b) ? (a) : (b))
#define UHMM__MAX(a, b) ((a) > (b) ? (a) : (b))
#define UHMM__ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
/* The object of @type whose field @member is at @ptr (an embedded node). */
#define UHMM__CONTAINER_OF(ptr, type, member) \
	((type *)((char *)(ptr) - offsetof(type, member)))

/*
 * The negative errno for a failed open / read / ioctl of a /proc/self
 * file (@e is errno): -ENOMEM when the kernel (or uhmm, for a buffer) had
 * no memory, which callers pass on as such; -EIO for anything else.
 */
static inline int uhmm__proc_err(int e)
{
	return e == ENOMEM ? -ENOMEM : -EIO;
}

#endif /* UHMM__BASE_H */
