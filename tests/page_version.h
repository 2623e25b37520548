/* SPDX-License-Identifier: MIT */
/*
 * Pages that carry a version: every 32-bit word of page @i at version @v
 * names both, so a check tells the right data from zeroes (a discard, a
 * lost page) and from any other page's or version's data.  For tests that
 * race discards and remaps against migrations (test_unmap_migrate.c,
 * test_discard_overlap.c).  Include after common.h (page_size).
 */
#ifndef UHMM_TEST_PAGE_VERSION_H
#define UHMM_TEST_PAGE_VERSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A small deterministic generator: each test thread has its own seed. */
static inline unsigned int next(unsigned int *s)
{
	*s = *s * 1103515245u + 12345u;
	return *s >> 8;
}

/* Write page @i at version @v into @p. */
static inline void put_page(char *p, size_t i, uint32_t v)
{
	uint32_t *w = (uint32_t *)p;

	for (size_t k = 0; k < page_size / 4; k++)
		w[k] = v * 2654435761u ^ (uint32_t)(i << 16) ^ (uint32_t)k;
}

/* 1 if @p is page @i at version @v, 0 if it is all zero, -1 otherwise. */
static inline int page_is(const char *p, size_t i, uint32_t v)
{
	const uint32_t *w = (const uint32_t *)p;
	bool data = true, zero = true;

	for (size_t k = 0; k < page_size / 4 && (data || zero); k++) {
		data &= w[k] == (v * 2654435761u ^ (uint32_t)(i << 16) ^ (uint32_t)k);
		zero &= w[k] == 0;
	}
	return data ? 1 : zero ? 0 : -1;
}

/* page_is()'s answer in words. */
static inline const char *what_is(int st)
{
	return st == 1 ? "the old data" : st == 0 ? "zeroes" : "other data";
}

#endif /* UHMM_TEST_PAGE_VERSION_H */
