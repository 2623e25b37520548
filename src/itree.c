// SPDX-License-Identifier: MIT
/*
 * itree.c - intrusive red-black interval tree augmented with subtree_last.
 *
 * Invariants kept by every operation:
 *  - in-order traversal is sorted by start (equal starts keep insertion
 *    order, new duplicates go to the right);
 *  - the root is black, a red node has no red child, and every path from a
 *    node down to a missing child crosses the same number of black nodes,
 *    so the height is at most 2 * log2(n + 1);
 *  - node->subtree_last is the maximum of node->last over node's subtree.
 *
 * The augmentation is restored in three places: on the way down during
 * insertion (the new node can only raise the maxima on its path), by the
 * rotations (which recompute the two nodes whose subtrees change) and, after
 * a removal has unlinked a node, by recomputing the path from the lowest
 * altered node up to the root before any rebalancing rotation runs.
 */
#include "itree.h"

#define ITREE_BLACK	0
#define ITREE_RED	1

#ifdef UHMM__ITREE_DEBUG
UHMM__HIDDEN unsigned long uhmm__itree_debug_visits;
#define ITREE_VISIT()	(uhmm__itree_debug_visits++)
#else
#define ITREE_VISIT()	do { } while (0)
#endif

static inline bool is_red(const struct uhmm__itree_node *n)
{
	return n && n->color_or_height == ITREE_RED;
}

static inline bool is_black(const struct uhmm__itree_node *n)
{
	return !is_red(n);
}

/* Largest last in n's subtree, assuming both children are up to date. */
static inline uintptr_t compute_subtree_last(const struct uhmm__itree_node *n)
{
	uintptr_t max = n->last;

	if (n->left && n->left->subtree_last > max)
		max = n->left->subtree_last;
	if (n->right && n->right->subtree_last > max)
		max = n->right->subtree_last;
	return max;
}

/* Recompute subtree_last on n and every ancestor of n. */
static void propagate_up(struct uhmm__itree_node *n)
{
	for (; n; n = n->parent)
		n->subtree_last = compute_subtree_last(n);
}

/* Make whatever pointed at old (its parent or the root) point at new. */
static inline void replace_child(struct uhmm__itree *t,
				 struct uhmm__itree_node *parent,
				 struct uhmm__itree_node *old,
				 struct uhmm__itree_node *new)
{
	if (!parent)
		t->root = new;
	else if (parent->left == old)
		parent->left = new;
	else
		parent->right = new;
}

/*
 * Rotations keep the set of nodes below the pivot position unchanged, so the
 * node taking the top spot inherits the old top's subtree_last and only the
 * node moving down needs recomputing.
 *
 *     x               y
 *    / \             / \
 *   a   y    <->    x   c
 *      / \         / \
 *     b   c       a   b
 */
static void rotate_left(struct uhmm__itree *t, struct uhmm__itree_node *x)
{
	struct uhmm__itree_node *y = x->right;

	x->right = y->left;
	if (y->left)
		y->left->parent = x;
	y->parent = x->parent;
	replace_child(t, x->parent, x, y);
	y->left = x;
	x->parent = y;

	y->subtree_last = x->subtree_last;
	x->subtree_last = compute_subtree_last(x);
}

static void rotate_right(struct uhmm__itree *t, struct uhmm__itree_node *x)
{
	struct uhmm__itree_node *y = x->left;

	x->left = y->right;
	if (y->right)
		y->right->parent = x;
	y->parent = x->parent;
	replace_child(t, x->parent, x, y);
	y->right = x;
	x->parent = y;

	y->subtree_last = x->subtree_last;
	x->subtree_last = compute_subtree_last(x);
}

void uhmm__itree_init(struct uhmm__itree *t)
{
	t->root = NULL;
	t->count = 0;
}

/* Restore the red-black rules after linking the red node n. */
static void insert_fixup(struct uhmm__itree *t, struct uhmm__itree_node *n)
{
	struct uhmm__itree_node *parent, *grand, *uncle;

	while ((parent = n->parent) && is_red(parent)) {
		/* A red parent is never the root, so grand exists. */
		grand = parent->parent;
		if (parent == grand->left) {
			uncle = grand->right;
			if (is_red(uncle)) {
				/* Push the blackness down from grand. */
				parent->color_or_height = ITREE_BLACK;
				uncle->color_or_height = ITREE_BLACK;
				grand->color_or_height = ITREE_RED;
				n = grand;
				continue;
			}
			if (n == parent->right) {
				/* Straighten the zig-zag first. */
				rotate_left(t, parent);
				n = parent;
				parent = n->parent;
			}
			parent->color_or_height = ITREE_BLACK;
			grand->color_or_height = ITREE_RED;
			rotate_right(t, grand);
		} else {
			uncle = grand->left;
			if (is_red(uncle)) {
				parent->color_or_height = ITREE_BLACK;
				uncle->color_or_height = ITREE_BLACK;
				grand->color_or_height = ITREE_RED;
				n = grand;
				continue;
			}
			if (n == parent->left) {
				rotate_right(t, parent);
				n = parent;
				parent = n->parent;
			}
			parent->color_or_height = ITREE_BLACK;
			grand->color_or_height = ITREE_RED;
			rotate_left(t, grand);
		}
		break;
	}
	t->root->color_or_height = ITREE_BLACK;
}

void uhmm__itree_insert(struct uhmm__itree *t, struct uhmm__itree_node *node)
{
	struct uhmm__itree_node *parent = NULL, **link = &t->root;

	/* Walk down, raising the maxima the new node will sit under. */
	while (*link) {
		parent = *link;
		if (parent->subtree_last < node->last)
			parent->subtree_last = node->last;
		if (node->start < parent->start)
			link = &parent->left;
		else
			link = &parent->right;
	}

	node->parent = parent;
	node->left = NULL;
	node->right = NULL;
	node->subtree_last = node->last;
	node->color_or_height = ITREE_RED;
	*link = node;
	t->count++;

	insert_fixup(t, node);
}

/*
 * Restore the red-black rules after a black node was unlinked.  n (possibly
 * NULL) sits where the removed black was and carries an extra unit of
 * blackness; parent is its parent, needed because n may be NULL.
 */
static void remove_fixup(struct uhmm__itree *t, struct uhmm__itree_node *n,
			 struct uhmm__itree_node *parent)
{
	struct uhmm__itree_node *sib;

	while (n != t->root && is_black(n)) {
		/*
		 * n lacks one black, so its sibling's side holds at least
		 * one black node: sib is never NULL here.
		 */
		if (n == parent->left) {
			sib = parent->right;
			if (is_red(sib)) {
				/* Turn a red sibling into a black one. */
				sib->color_or_height = ITREE_BLACK;
				parent->color_or_height = ITREE_RED;
				rotate_left(t, parent);
				sib = parent->right;
			}
			if (is_black(sib->left) && is_black(sib->right)) {
				/* Move the deficit up one level. */
				sib->color_or_height = ITREE_RED;
				n = parent;
				parent = n->parent;
				continue;
			}
			if (is_black(sib->right)) {
				/* Make the far nephew the red one. */
				sib->left->color_or_height = ITREE_BLACK;
				sib->color_or_height = ITREE_RED;
				rotate_right(t, sib);
				sib = parent->right;
			}
			sib->color_or_height = parent->color_or_height;
			parent->color_or_height = ITREE_BLACK;
			sib->right->color_or_height = ITREE_BLACK;
			rotate_left(t, parent);
		} else {
			sib = parent->left;
			if (is_red(sib)) {
				sib->color_or_height = ITREE_BLACK;
				parent->color_or_height = ITREE_RED;
				rotate_right(t, parent);
				sib = parent->left;
			}
			if (is_black(sib->left) && is_black(sib->right)) {
				sib->color_or_height = ITREE_RED;
				n = parent;
				parent = n->parent;
				continue;
			}
			if (is_black(sib->left)) {
				sib->right->color_or_height = ITREE_BLACK;
				sib->color_or_height = ITREE_RED;
				rotate_left(t, sib);
				sib = parent->left;
			}
			sib->color_or_height = parent->color_or_height;
			parent->color_or_height = ITREE_BLACK;
			sib->left->color_or_height = ITREE_BLACK;
			rotate_right(t, parent);
		}
		/* The deficit is absorbed; the tree is valid again. */
		n = t->root;
		break;
	}
	if (n)
		n->color_or_height = ITREE_BLACK;
}

void uhmm__itree_remove(struct uhmm__itree *t, struct uhmm__itree_node *node)
{
	struct uhmm__itree_node *child, *parent, *succ;
	int removed_color;

	if (!node->left || !node->right) {
		/* At most one child: splice node out directly. */
		child = node->left ? node->left : node->right;
		parent = node->parent;
		removed_color = node->color_or_height;
		replace_child(t, parent, node, child);
		if (child)
			child->parent = parent;
	} else {
		/*
		 * Two children: the in-order successor (leftmost of the right
		 * subtree, which has no left child) takes node's place and
		 * colour, and the successor's old slot is what really
		 * disappears.
		 */
		succ = node->right;
		while (succ->left)
			succ = succ->left;
		removed_color = succ->color_or_height;
		child = succ->right;

		if (succ->parent == node) {
			parent = succ;
		} else {
			parent = succ->parent;
			parent->left = child;
			if (child)
				child->parent = parent;
			succ->right = node->right;
			succ->right->parent = succ;
		}
		succ->left = node->left;
		succ->left->parent = succ;
		succ->parent = node->parent;
		replace_child(t, node->parent, node, succ);
		succ->color_or_height = node->color_or_height;
	}

	/*
	 * Everything whose subtree lost node (or gained succ in a new spot)
	 * lies on the path from parent to the root; fix the maxima there
	 * first so that the rebalancing rotations start from correct values.
	 */
	propagate_up(parent);

	if (removed_color == ITREE_BLACK)
		remove_fixup(t, child, parent);

	t->count--;
	node->parent = NULL;
	node->left = NULL;
	node->right = NULL;
}

/*
 * Leftmost node of the subtree rooted at n that overlaps [start, last].
 * Requires n->subtree_last >= start.
 *
 * Going left whenever the left subtree reaches start is safe: if the first
 * such node in that subtree begins after last, so does everything after it,
 * and nothing in the whole tree can overlap past this point.
 */
static struct uhmm__itree_node *
subtree_first(struct uhmm__itree_node *n, uintptr_t start, uintptr_t last)
{
	for (;;) {
		ITREE_VISIT();
		if (n->left && n->left->subtree_last >= start) {
			n = n->left;
			continue;
		}
		if (n->start > last)
			return NULL;
		if (n->last >= start)
			return n;
		/*
		 * Neither the left subtree nor n reach start, so the match
		 * promised by n->subtree_last is in the right subtree.
		 */
		n = n->right;
		if (!n || n->subtree_last < start)
			return NULL;	/* unreachable with valid invariants */
	}
}

struct uhmm__itree_node *
uhmm__itree_iter_first(const struct uhmm__itree *t, uintptr_t start,
		      uintptr_t last)
{
	struct uhmm__itree_node *root = t->root;

	if (!root || root->subtree_last < start)
		return NULL;
	return subtree_first(root, start, last);
}

struct uhmm__itree_node *
uhmm__itree_iter_next(const struct uhmm__itree_node *node, uintptr_t start,
		     uintptr_t last)
{
	const struct uhmm__itree_node *from;
	struct uhmm__itree_node *n, *right = node->right;

	for (;;) {
		/* Anything after node inside its right subtree comes first. */
		if (right && right->subtree_last >= start)
			return subtree_first(right, start, last);

		/*
		 * Climb until we arrive from a left child: that ancestor is
		 * the next node in order after node's whole subtree.
		 */
		do {
			from = node;
			n = node->parent;
			if (!n)
				return NULL;
			ITREE_VISIT();
			node = n;
		} while (n->right == from);

		if (n->start > last)
			return NULL;
		if (n->last >= start)
			return n;
		right = n->right;
	}
}
