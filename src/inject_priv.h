/* SPDX-License-Identifier: MIT */
/* inject.c: the doors failure injection watches (uhmm/inject.h). */
#ifndef UHMM__INJECT_PRIV_H
#define UHMM__INJECT_PRIV_H

#include <stddef.h>

#include "hidden.h"

/*
 * The library's allocations: never call malloc/calloc/realloc/free (or
 * anything that does, such as stdio) directly.  The memory is the
 * library's own (ownmem.c), never the application's heap, which may sit
 * in device memory or be frozen by a migration (docs/CONCURRENCY.md,
 * "Frozen pages"); free it with uhmm__free() (ownmem.c).
 */
UHMM__HIDDEN void *uhmm__malloc(size_t n);
UHMM__HIDDEN void *uhmm__calloc(size_t n, size_t size);
UHMM__HIDDEN void *uhmm__realloc(void *old, size_t n);
/* ioctl(2) on the userfaultfd: never call ioctl on it directly. */
UHMM__HIDDEN int uhmm__uffd_ioctl(int fd, unsigned long req, void *arg);

#endif /* UHMM__INJECT_PRIV_H */
