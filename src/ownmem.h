/* SPDX-License-Identifier: MIT */
/* ownmem.c: the library's own allocator (no failure injection). */
#ifndef UHMM__OWNMEM_H
#define UHMM__OWNMEM_H

#include <stddef.h>

#include "hidden.h"

/* Behind uhmm__malloc() and friends (inject_priv.h), which call these. */
UHMM__HIDDEN void *uhmm__own_malloc(size_t n);
UHMM__HIDDEN void *uhmm__own_calloc(size_t n, size_t size);
UHMM__HIDDEN void *uhmm__own_realloc(void *old, size_t n);
/* Free what any of them (or uhmm__malloc() and friends) returned. */
UHMM__HIDDEN void uhmm__free(void *p);

#endif /* UHMM__OWNMEM_H */
