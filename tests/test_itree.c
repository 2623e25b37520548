// SPDX-License-Identifier: MIT
/*
 * test_itree.c - standalone test of the augmented interval tree.
 *
 * Build and run from the top of the tree:
 *
 *   gcc -std=gnu11 -DUHMM_ITREE_DEBUG -Wall -Wextra -Werror -O2 \
 *       tests/test_itree.c src/itree.c -o test_itree && ./test_itree [seed]
 *
 * (add -fsanitize=address,undefined -fno-sanitize-recover=all -g for a
 * sanitizer run).  src/itree.c must be compiled with -DUHMM_ITREE_DEBUG too:
 * the node-visit counter only exists in that build.
 *
 * What is checked:
 *  - fixed cases: empty tree, [0, 0], ranges ending at UINTPTR_MAX, the full
 *    range, duplicates;
 *  - a long random insert/remove sequence over intervals spread across the
 *    whole uintptr_t space, with the red-black rules, parent links, in-order
 *    ordering by start, the subtree_last augmentation and count verified
 *    after every operation, and random queries compared with a brute-force
 *    scan of the live nodes;
 *  - with 100000 nodes, that queries examine a number of nodes bounded by a
 *    small multiple of the tree height plus the number of matches (counted
 *    through uhmm__itree_debug_visits, never by timing).
 *
 * Exit status 0 means every check passed; failures are printed.
 */
#define UHMM__ITREE_DEBUG 1
#include "../src/itree.h"
#include "cases.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef UHMM__ITREE_DEBUG
#error "UHMM__ITREE_DEBUG must be defined"
#endif

#define container_of(ptr, type, member) \
	((type *)((char *)(ptr) - offsetof(type, member)))

struct item {
	struct uhmm__itree_node node;
	bool in_tree;
	unsigned int seen;	/* query stamp, catches repeated results */
	unsigned int id;
};

static unsigned long failures;

#define CHECK(cond, ...)						\
	do {								\
		if (!(cond)) {						\
			failures++;					\
			if (failures <= 20) {				\
				fprintf(stderr, "FAIL %s:%d: %s: ",	\
					__FILE__, __LINE__, #cond);	\
				fprintf(stderr, __VA_ARGS__);		\
				fputc('\n', stderr);			\
			}						\
		}							\
	} while (0)

/* xorshift64*: small, deterministic, good enough for test data. */
static uint64_t rng_state;

static uint64_t rng(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * UINT64_C(2685821657736338717);
}

static uintptr_t rng_below(uintptr_t n)
{
	return n ? (uintptr_t)(rng() % n) : 0;
}

/* ----------------------------------------------------------------------
 * Structural checker
 */

struct check_state {
	size_t nodes;
	bool have_prev;
	uintptr_t prev_start;
	bool ok;
};

/*
 * Check the subtree at n, returning its black height (counting the missing
 * children below leaves as one).  Records problems in st->ok.
 */
static int check_subtree(const struct uhmm__itree_node *n,
			 const struct uhmm__itree_node *parent,
			 struct check_state *st, int depth, int *max_depth)
{
	int lh, rh;
	uintptr_t max;

	if (!n)
		return 1;
	if (depth > *max_depth)
		*max_depth = depth;
	if (n->parent != parent) {
		fprintf(stderr, "bad parent link at [%#" PRIxPTR ",%#" PRIxPTR "]\n",
			n->start, n->last);
		st->ok = false;
	}
	if (n->color_or_height != 0 && n->color_or_height != 1) {
		fprintf(stderr, "bad colour %d\n", n->color_or_height);
		st->ok = false;
	}
	/* Red is 1 in itree.c; a red node may not have a red child. */
	if (n->color_or_height == 1 &&
	    ((n->left && n->left->color_or_height == 1) ||
	     (n->right && n->right->color_or_height == 1))) {
		fprintf(stderr, "red node with red child\n");
		st->ok = false;
	}
	if (n->last < n->start) {
		fprintf(stderr, "node with last < start\n");
		st->ok = false;
	}

	lh = check_subtree(n->left, n, st, depth + 1, max_depth);

	/* In-order position: starts must never decrease. */
	if (st->have_prev && n->start < st->prev_start) {
		fprintf(stderr, "in-order start %#" PRIxPTR " after %#" PRIxPTR "\n",
			n->start, st->prev_start);
		st->ok = false;
	}
	st->have_prev = true;
	st->prev_start = n->start;
	st->nodes++;

	rh = check_subtree(n->right, n, st, depth + 1, max_depth);

	if (lh != rh) {
		fprintf(stderr, "black height mismatch %d vs %d\n", lh, rh);
		st->ok = false;
	}
	max = n->last;
	if (n->left && n->left->subtree_last > max)
		max = n->left->subtree_last;
	if (n->right && n->right->subtree_last > max)
		max = n->right->subtree_last;
	if (n->subtree_last != max) {
		fprintf(stderr, "subtree_last %#" PRIxPTR " should be %#" PRIxPTR "\n",
			n->subtree_last, max);
		st->ok = false;
	}
	return lh + (n->color_or_height == 1 ? 0 : 1);
}

/* Full invariant check; returns the height (root at depth 1) or -1. */
static int check_tree(const struct uhmm__itree *t)
{
	struct check_state st = { .ok = true };
	int height = 0;

	if (t->root) {
		if (t->root->parent) {
			fprintf(stderr, "root has a parent\n");
			st.ok = false;
		}
		if (t->root->color_or_height == 1) {
			fprintf(stderr, "root is red\n");
			st.ok = false;
		}
	}
	check_subtree(t->root, NULL, &st, 1, &height);
	if (st.nodes != t->count) {
		fprintf(stderr, "count %zu but %zu nodes reachable\n",
			t->count, st.nodes);
		st.ok = false;
	}
	return st.ok ? height : -1;
}

/* Height bound of a red-black tree with n nodes: 2 * log2(n + 1). */
static int rb_height_bound(size_t n)
{
	int lg = 0;

	n++;
	while (n > 1) {
		n >>= 1;
		lg++;
	}
	return 2 * (lg + 1);
}

/* ----------------------------------------------------------------------
 * Query comparison against brute force
 */

static unsigned int query_stamp;

static bool overlaps(const struct item *it, uintptr_t s, uintptr_t l)
{
	return it->node.start <= l && it->node.last >= s;
}

/* Run one query both ways; returns the number of matches. */
static size_t check_query(const struct uhmm__itree *t, struct item *items,
			  size_t nitems, uintptr_t s, uintptr_t l)
{
	struct uhmm__itree_node *n;
	size_t got = 0, want = 0, i;
	uintptr_t prev = 0;
	bool first = true;

	query_stamp++;
	for (n = uhmm__itree_iter_first(t, s, l); n;
	     n = uhmm__itree_iter_next(n, s, l)) {
		struct item *it = container_of(n, struct item, node);

		CHECK(it->in_tree, "query [%#" PRIxPTR ",%#" PRIxPTR
		      "] returned removed item %u", s, l, it->id);
		CHECK(overlaps(it, s, l), "query [%#" PRIxPTR ",%#" PRIxPTR
		      "] returned non-overlapping [%#" PRIxPTR ",%#" PRIxPTR "]",
		      s, l, n->start, n->last);
		CHECK(it->seen != query_stamp, "query [%#" PRIxPTR ",%#"
		      PRIxPTR "] returned item %u twice", s, l, it->id);
		CHECK(first || n->start >= prev, "query [%#" PRIxPTR ",%#"
		      PRIxPTR "] out of order", s, l);
		it->seen = query_stamp;
		prev = n->start;
		first = false;
		got++;
		if (got > nitems) {
			CHECK(0, "query [%#" PRIxPTR ",%#" PRIxPTR
			      "] does not terminate", s, l);
			break;
		}
	}
	for (i = 0; i < nitems; i++) {
		if (!items[i].in_tree || !overlaps(&items[i], s, l))
			continue;
		want++;
		CHECK(items[i].seen == query_stamp, "query [%#" PRIxPTR ",%#"
		      PRIxPTR "] missed item %u [%#" PRIxPTR ",%#" PRIxPTR "]",
		      s, l, items[i].id, items[i].node.start,
		      items[i].node.last);
	}
	CHECK(got == want, "query [%#" PRIxPTR ",%#" PRIxPTR
	      "] got %zu want %zu", s, l, got, want);
	return got;
}

/* ----------------------------------------------------------------------
 * Random interval generation covering the whole address space
 */

/* A value drawn from a handful of shapes, edges included. */
static uintptr_t rand_point(void)
{
	switch (rng() % 8) {
	case 0:
		return rng_below(64);			/* near 0 */
	case 1:
		return UINTPTR_MAX - rng_below(64);	/* near the top */
	case 2:
	case 3:
		return (uintptr_t)rng();		/* anywhere */
	default:
		/* A crowded band so that overlaps and duplicates are common. */
		return (uintptr_t)0x10000 + rng_below(4096);
	}
}

static void rand_range(uintptr_t *s, uintptr_t *l)
{
	uintptr_t a, b, len;

	switch (rng() % 10) {
	case 0:
		*s = 0;
		*l = UINTPTR_MAX;
		return;
	case 1:
		*s = rand_point();
		*l = UINTPTR_MAX;
		return;
	case 2:
		*s = 0;
		*l = rand_point();
		return;
	case 3:
		*s = *l = rand_point();
		return;
	case 4:
	case 5:
		a = rand_point();
		b = rand_point();
		*s = a < b ? a : b;
		*l = a < b ? b : a;
		return;
	default:
		*s = rand_point();
		len = rng() % 4 == 0 ? (uintptr_t)rng() : rng_below(512);
		*l = len > UINTPTR_MAX - *s ? UINTPTR_MAX : *s + len;
		return;
	}
}

/* ----------------------------------------------------------------------
 * Tests
 */

static void test_fixed(void)
{
	static struct item it[8];
	struct uhmm__itree t;
	struct uhmm__itree_node *n;
	static const uintptr_t b[][2] = {
		{ 0, 0 },
		{ 0, 9 },
		{ 5, 5 },
		{ 5, 5 },			/* duplicate */
		{ 100, UINTPTR_MAX },
		{ UINTPTR_MAX, UINTPTR_MAX },
		{ UINTPTR_MAX - 1, UINTPTR_MAX },
		{ 0, UINTPTR_MAX },
	};
	size_t i;

	uhmm__itree_init(&t);
	CHECK(t.root == NULL && t.count == 0, "init");
	CHECK(uhmm__itree_iter_first(&t, 0, UINTPTR_MAX) == NULL, "empty");
	CHECK(check_tree(&t) >= 0, "empty tree invariants");

	for (i = 0; i < 8; i++) {
		it[i].id = i;
		it[i].node.start = b[i][0];
		it[i].node.last = b[i][1];
		uhmm__itree_insert(&t, &it[i].node);
		it[i].in_tree = true;
		CHECK(check_tree(&t) >= 0, "invariants after fixed insert %zu", i);
	}
	CHECK(t.count == 8, "count %zu", t.count);

	CHECK(check_query(&t, it, 8, 0, 0) == 3, "[0,0]");
	CHECK(check_query(&t, it, 8, 5, 5) == 4, "[5,5]");
	CHECK(check_query(&t, it, 8, 10, 99) == 1, "[10,99]");
	CHECK(check_query(&t, it, 8, UINTPTR_MAX, UINTPTR_MAX) == 4, "[max,max]");
	CHECK(check_query(&t, it, 8, UINTPTR_MAX - 1, UINTPTR_MAX - 1) == 3,
	      "[max-1,max-1]");
	CHECK(check_query(&t, it, 8, 0, UINTPTR_MAX) == 8, "everything");

	/* The first result must be the lowest start. */
	n = uhmm__itree_iter_first(&t, 0, UINTPTR_MAX);
	CHECK(n && n->start == 0, "first of everything");
	/* Equal starts come back in insertion order. */
	n = uhmm__itree_iter_first(&t, 5, 5);
	/* skip [0,9] and [0,max], which start at 0 */
	n = n ? uhmm__itree_iter_next(n, 5, 5) : NULL;
	n = n ? uhmm__itree_iter_next(n, 5, 5) : NULL;
	CHECK(n == &it[2].node, "duplicate order (first)");
	n = n ? uhmm__itree_iter_next(n, 5, 5) : NULL;
	CHECK(n == &it[3].node, "duplicate order (second)");

	/* Remove in a scrambled order, checking as we go. */
	static const int order[] = { 7, 2, 0, 5, 3, 6, 1, 4 };
	for (i = 0; i < 8; i++) {
		struct item *x = &it[order[i]];

		uhmm__itree_remove(&t, &x->node);
		x->in_tree = false;
		CHECK(check_tree(&t) >= 0, "invariants after fixed remove %zu", i);
		check_query(&t, it, 8, 0, UINTPTR_MAX);
		check_query(&t, it, 8, UINTPTR_MAX, UINTPTR_MAX);
		check_query(&t, it, 8, 0, 0);
	}
	CHECK(t.root == NULL && t.count == 0, "empty after removing all");
	printf("fixed cases: done\n");
}

#define RAND_POOL	1000
#define RAND_OPS	60000
#define RAND_QUERIES	4

static void test_random(void)
{
	static struct item it[RAND_POOL];
	struct uhmm__itree t;
	size_t i, live = 0, max_live = 0, matches = 0;
	unsigned long op, inserts = 0, removes = 0, queries = 0;
	int h, worst_excess = -1000;

	uhmm__itree_init(&t);
	for (i = 0; i < RAND_POOL; i++)
		it[i].id = i;

	for (op = 0; op < RAND_OPS; op++) {
		/*
		 * Bias toward growth for the first half and toward shrinking
		 * in the second, so the tree passes through many sizes.
		 */
		unsigned int grow = op < RAND_OPS / 2 ? 70 : 35;
		struct item *x = &it[rng() % RAND_POOL];
		int q;

		if (!x->in_tree && rng() % 100 < grow) {
			rand_range(&x->node.start, &x->node.last);
			/* Sometimes copy a live item's bounds: exact duplicate. */
			if (rng() % 8 == 0) {
				struct item *y = &it[rng() % RAND_POOL];

				if (y->in_tree) {
					x->node.start = y->node.start;
					x->node.last = y->node.last;
				}
			}
			uhmm__itree_insert(&t, &x->node);
			x->in_tree = true;
			live++;
			inserts++;
		} else if (x->in_tree) {
			uhmm__itree_remove(&t, &x->node);
			x->in_tree = false;
			live--;
			removes++;
		} else {
			continue;
		}
		if (live > max_live)
			max_live = live;

		h = check_tree(&t);
		if (h < 0) {
			CHECK(0, "invariants broken after op %lu", op);
			return;
		}
		CHECK(t.count == live, "count %zu live %zu", t.count, live);
		CHECK(h <= rb_height_bound(live), "height %d for %zu nodes",
		      h, live);
		if (h - rb_height_bound(live) > worst_excess)
			worst_excess = h - rb_height_bound(live);

		for (q = 0; q < RAND_QUERIES; q++) {
			uintptr_t s, l;

			rand_range(&s, &l);
			matches += check_query(&t, it, RAND_POOL, s, l);
			queries++;
		}
		if (failures)
			return;
	}

	/* Drain, still checking. */
	for (i = 0; i < RAND_POOL; i++) {
		if (!it[i].in_tree)
			continue;
		uhmm__itree_remove(&t, &it[i].node);
		it[i].in_tree = false;
		removes++;
		CHECK(check_tree(&t) >= 0, "invariants while draining");
	}
	CHECK(t.root == NULL && t.count == 0, "not empty after drain");

	printf("random: %lu inserts, %lu removes, %lu queries (%zu matches), "
	       "max %zu live, invariants checked after every op\n",
	       inserts, removes, queries, matches, max_live);
}

#define BIG_N		100000
#define BIG_STRIDE	64	/* node i covers [i*64, i*64 + 31] */

static struct item big[BIG_N];

/* Count visits of one query and check the result against the layout. */
static unsigned long big_query(const struct uhmm__itree *t, uintptr_t s,
			       uintptr_t l, size_t *nres)
{
	struct uhmm__itree_node *n;
	size_t k = 0;

	uhmm__itree_debug_visits = 0;
	for (n = uhmm__itree_iter_first(t, s, l); n;
	     n = uhmm__itree_iter_next(n, s, l)) {
		CHECK(n->start <= l && n->last >= s, "big: non-overlap");
		k++;
	}
	*nres = k;
	return uhmm__itree_debug_visits;
}

/* Number of nodes i (with in_tree set) overlapping [s, l], by arithmetic. */
static size_t big_expected(uintptr_t s, uintptr_t l)
{
	size_t i, k = 0, lo, hi;

	lo = s / BIG_STRIDE;
	hi = l / BIG_STRIDE;
	if (hi >= BIG_N)
		hi = BIG_N - 1;
	for (i = lo; i <= hi && i < BIG_N; i++)
		if (big[i].in_tree && overlaps(&big[i], s, l))
			k++;
	return k;
}

static void test_big(void)
{
	struct uhmm__itree t;
	static unsigned int perm[BIG_N];
	size_t i, k, total_k = 0;
	unsigned long v, worst_small = 0, worst_gap = 0, worst_wide_v = 0;
	unsigned long total_wide_v = 0;
	size_t worst_wide_k = 0;
	int h, bound;

	uhmm__itree_init(&t);
	for (i = 0; i < BIG_N; i++)
		perm[i] = i;
	for (i = BIG_N - 1; i > 0; i--) {
		size_t j = rng() % (i + 1);
		unsigned int tmp = perm[i];

		perm[i] = perm[j];
		perm[j] = tmp;
	}
	for (i = 0; i < BIG_N; i++) {
		struct item *x = &big[perm[i]];

		x->id = perm[i];
		x->node.start = (uintptr_t)perm[i] * BIG_STRIDE;
		x->node.last = x->node.start + BIG_STRIDE / 2 - 1;
		uhmm__itree_insert(&t, &x->node);
		x->in_tree = true;
	}
	h = check_tree(&t);
	CHECK(h > 0 && h <= rb_height_bound(BIG_N), "big: height %d", h);
	/* Every search descends at most one root-to-leaf path twice. */
	bound = 2 * h + 2;

	for (i = 0; i < 2000; i++) {
		uintptr_t s = rng_below((uintptr_t)BIG_N * BIG_STRIDE);
		uintptr_t l;

		/* Point or short query: at most a couple of matches. */
		l = s + rng_below(BIG_STRIDE);
		v = big_query(&t, s, l, &k);
		CHECK(k == big_expected(s, l), "big: short query count");
		CHECK(v <= (unsigned long)(bound + 2 * k),
		      "big: short query [%#" PRIxPTR ",%#" PRIxPTR
		      "] visited %lu nodes for %zu results (bound %d)",
		      s, l, v, k, bound);
		if (v > worst_small)
			worst_small = v;

		/* A query falling into a gap between nodes: no matches. */
		s = (s / BIG_STRIDE) * BIG_STRIDE + BIG_STRIDE / 2;
		v = big_query(&t, s, s + BIG_STRIDE / 4, &k);
		CHECK(k == 0, "big: gap query found %zu", k);
		CHECK(v <= (unsigned long)bound, "big: gap query visited %lu", v);
		if (v > worst_gap)
			worst_gap = v;

		/* A wider query: cost must grow with k, not with n. */
		s = rng_below((uintptr_t)BIG_N * BIG_STRIDE);
		l = s + rng_below(2000) * BIG_STRIDE;
		v = big_query(&t, s, l, &k);
		CHECK(k == big_expected(s, l), "big: wide query count");
		CHECK(v <= (unsigned long)(2 * bound + 3 * k),
		      "big: wide query visited %lu for %zu results", v, k);
		total_k += k;
		total_wide_v += v;
		if (v > worst_wide_v) {
			worst_wide_v = v;
			worst_wide_k = k;
		}
	}
	/* Beyond the last node and at the very top of the space. */
	v = big_query(&t, (uintptr_t)BIG_N * BIG_STRIDE, UINTPTR_MAX, &k);
	CHECK(k == 0 && v <= 1, "big: past-the-end query visited %lu", v);
	v = big_query(&t, 0, UINTPTR_MAX, &k);
	CHECK(k == BIG_N, "big: full query found %zu", k);
	CHECK(v <= (unsigned long)(3 * BIG_N), "big: full walk visited %lu", v);

	printf("big: %d nodes, height %d (RB bound %d); worst visits: "
	       "short query %lu, gap query %lu, wide query %lu (for %zu "
	       "results); wide queries overall %lu visits for %zu results; "
	       "full walk %lu\n",
	       BIG_N, h, rb_height_bound(BIG_N), worst_small, worst_gap,
	       worst_wide_v, worst_wide_k, total_wide_v, total_k, v);

	/*
	 * Add a few huge intervals that overlap everything, then remove every
	 * other ordinary node: the augmentation must still let queries skip
	 * the removed regions while reporting the huge ones.
	 */
	static struct item huge[4];
	for (i = 0; i < 4; i++) {
		huge[i].node.start = i * 1000;
		huge[i].node.last = UINTPTR_MAX - i;
		uhmm__itree_insert(&t, &huge[i].node);
		huge[i].in_tree = true;
	}
	for (i = 0; i < BIG_N; i += 2) {
		uhmm__itree_remove(&t, &big[i].node);
		big[i].in_tree = false;
	}
	h = check_tree(&t);
	CHECK(h > 0 && h <= rb_height_bound(t.count), "big: height %d after removes", h);
	CHECK(t.count == BIG_N / 2 + 4, "big: count %zu", t.count);
	bound = 2 * h + 2;
	worst_wide_v = 0;
	worst_wide_k = 0;
	for (i = 0; i < 1000; i++) {
		uintptr_t s = rng_below((uintptr_t)BIG_N * BIG_STRIDE) + 4000;
		uintptr_t l = s + rng_below(BIG_STRIDE);
		size_t want = big_expected(s, l) + 4;

		v = big_query(&t, s, l, &k);
		CHECK(k == want, "big: huge query found %zu want %zu", k, want);
		CHECK(v <= (unsigned long)(2 * bound + 3 * k),
		      "big: huge query visited %lu for %zu results", v, k);
		if (v > worst_wide_v) {
			worst_wide_v = v;
			worst_wide_k = k;
		}
	}
	printf("big: after removing half and adding 4 spanning intervals: "
	       "%zu nodes, height %d, worst short query %lu visits (for %zu "
	       "results)\n", t.count, h, worst_wide_v, worst_wide_k);
}

static uint64_t seed = UINT64_C(0x5eed1234abcd9876);

static void start(void)
{
	if (!seed)
		seed = 1;	/* xorshift must not start at zero */
	rng_state = seed;
	printf("test_itree: seed %#" PRIx64 ", uintptr_t is %zu bits\n",
	       seed, sizeof(uintptr_t) * 8);
}

/* After a failure, the cases that follow it do not run. */
static void case_random(void)
{
	if (!failures)
		test_random();
}

static void case_big(void)
{
	if (!failures)
		test_big();
}

static int finish(void)
{
	if (failures) {
		printf("test_itree: FAILED (%lu failed checks)\n", failures);
		return 1;
	}
	return 0;
}

static const struct test_case cases[] = {
	TEST_CASE(test_fixed),
	{ "random", case_random },
	{ "big", case_big },
};

int main(int argc, char **argv)
{
	struct test_suite s = {
		.name = "test_itree", .cases = cases,
		.nr_cases = sizeof(cases) / sizeof(cases[0]),
		.start = start, .finish = finish,
	};

	/* `test_itree SEED`: every case, from that seed. */
	if (argc > 1 && argv[1][0] >= '0' && argv[1][0] <= '9') {
		seed = strtoull(argv[1], NULL, 0);
		argv[1] = argv[0];
		argc--;
		argv++;
	}
	return test_run(argc, argv, &s);
}
