/* SPDX-License-Identifier: MIT */
/*
 * What hunt3.c and hunt4.c share: the per-round generator, pages whose
 * every word names a tag, the page and the word (so a check tells the
 * right data from zeroes and from anything else), and a simdev maker.
 * Include after the program's PG, seed and FAIL().
 */
#ifndef UHMM_HUNT_PAGES_H
#define UHMM_HUNT_PAGES_H

static inline unsigned rnd_r(unsigned *s)
{
	*s = *s * 1103515245u + 12345u;
	return *s >> 8;
}

static inline unsigned rnd(void) { return rnd_r(&seed); }

static inline uint64_t word(unsigned tag, size_t pg, size_t w)
{
	return ((uint64_t)tag << 40) ^ ((pg * PG / 8 + w) * 0x9E3779B97F4A7C15ull);
}

static inline void fill(char *p, size_t np, unsigned tag, size_t pgoff)
{
	for (size_t i = 0; i < np; i++)
		for (size_t w = 0; w < PG / 8; w++)
			((uint64_t *)(p + i * PG))[w] = word(tag, pgoff + i, w);
}

/* 1 if the page holds @tag's data, 0 if all zero, -1 otherwise. */
static inline int page_is(const char *p, unsigned tag, size_t pg)
{
	const uint64_t *q = (const uint64_t *)p;
	bool data = true, zero = true;
	for (size_t w = 0; w < PG / 8; w++) {
		if (q[w] != word(tag, pg, w)) data = false;
		if (q[w]) zero = false;
		if (!data && !zero) return -1;
	}
	return data ? 1 : 0;
}

static inline struct uhmm_simdev *mkdev(size_t cap, unsigned threads, unsigned policy)
{
	struct uhmm_simdev *d;
	struct uhmm_simdev_config c = { .capacity_pages = cap, .threads = threads, .policy = policy };
	int r = uhmm_simdev_create(&c, &d);
	if (r) FAIL("create %d %s", r, uhmm_last_error());
	return d;
}

#endif /* UHMM_HUNT_PAGES_H */
