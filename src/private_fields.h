/* SPDX-License-Identifier: MIT */
/*
 * The library's view of the private fields of public structures.
 *
 * A public structure that has private state (struct uhmm_page, struct
 * uhmm_devmem, struct uhmm_interval_notifier, struct uhmm_migrate_vma)
 * shows callers only its documented fields and an anonymous union holding a
 * reserved array of fixed size.  Inside the library (this header defines
 * the UHMM__*_PRIVATE macros before any public header is read) the same
 * union also holds an anonymous struct of the private fields, under their
 * usual names, so the sources use pgmap->pages, page->refcount... as
 * before.  The union keeps the size and layout the caller compiled against;
 * base.h checks with _Static_assert that the private fields fit.
 *
 * The public headers therefore need no <stdatomic.h> and compile as C++.
 * Include this (through base.h) before any <uhmm/...> header.
 */
#ifndef UHMM__PRIVATE_FIELDS_H
#define UHMM__PRIVATE_FIELDS_H

#if defined(UHMM_DEVMEM_H) || defined(UHMM_NOTIFIER_H) || defined(UHMM_MIGRATE_H)
#error "src/private_fields.h (base.h) must come before every public header"
#endif

#include <stdatomic.h>
#include <stdint.h>

struct uhmm_devmem;
struct uhmm_mm;
struct uhmm_page;
struct uhmm_interval_notifier_ops;
struct uhmm_migrate_state;
struct uhmm__pool_faults;

/* struct uhmm_page: 24 bytes, exactly (README: 40 bytes per device page). */
#define UHMM__PAGE_PRIVATE				\
	atomic_int refcount;				\
	atomic_int locked;				\
	_Atomic uintptr_t addr;	/* address it holds the data of, or 0 */ \
	uint64_t pfn;

/* struct uhmm_devmem */
#define UHMM__DEVMEM_PRIVATE				\
	struct uhmm_mm *mm;				\
	unsigned int id;				\
	struct uhmm_page *pages;			\
	atomic_long nr_resident; /* pages holding process data */ \
	struct uhmm__pool_faults *faults; /* CPU faults: streams, in flight (devmem.c) */ \
	_Atomic uint32_t *folio_meta; /* UHMM_DEVMEM_COMPOUND: devmem.c */

/* struct uhmm_interval_notifier */
#define UHMM__NOTIFIER_PRIVATE				\
	const struct uhmm_interval_notifier_ops *ops;	\
	struct uhmm_mm *mm;				\
	unsigned long invalidate_seq;			\
	void *node;

/* struct uhmm_migrate_vma */
#define UHMM__MIGRATE_PRIVATE				\
	struct uhmm_migrate_state *state;

#endif /* UHMM__PRIVATE_FIELDS_H */
