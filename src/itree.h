/* SPDX-License-Identifier: MIT */
/*
 * itree.h - intrusive augmented interval tree.
 *
 * A red-black tree of closed intervals [start, last], ordered by start and
 * augmented with the largest "last" found in each subtree.  That extra value
 * lets an overlap query skip every subtree that ends before the query
 * begins, so finding the first overlapping node is O(log n) and walking the
 * k overlapping nodes is O(log n) per step, and usually far less (each
 * subtree the walk enters holds at least one match).
 *
 * The tree never allocates: the caller embeds struct uhmm__itree_node in its
 * own object and recovers the object with UHMM__CONTAINER_OF() (base.h).  The tree does no
 * locking either: the caller must serialize every call on a given tree
 * (read-only queries may run concurrently with each other, but not with
 * insert or remove).
 */
#ifndef UHMM__ITREE_H
#define UHMM__ITREE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hidden.h"

/**
 * struct uhmm__itree_node - one interval, embedded in the user's object
 * @start: first byte covered
 * @last: last byte covered (inclusive); must satisfy @last >= @start
 * @subtree_last: private, largest @last in the subtree rooted here
 * @parent: private, parent node or NULL for the root
 * @left: private, left child
 * @right: private, right child
 * @color_or_height: private, red-black colour of the node
 *
 * @start and @last must not be changed while the node is in a tree; to move
 * an interval, remove it, update the bounds and insert it again.
 */
struct uhmm__itree_node {
	uintptr_t start;
	uintptr_t last;
	/* private: */
	uintptr_t subtree_last;
	struct uhmm__itree_node *parent, *left, *right;
	int color_or_height;
};

/**
 * struct uhmm__itree - root of an interval tree
 * @root: topmost node, NULL when the tree is empty
 * @count: number of nodes currently in the tree
 */
struct uhmm__itree {
	struct uhmm__itree_node *root;
	size_t count;
};

#ifdef UHMM__ITREE_DEBUG
/*
 * Number of nodes examined by uhmm__itree_iter_first() and
 * uhmm__itree_iter_next() since the counter was last reset (tests reset it by
 * assigning 0).  Only present when both the tree and its user are built with
 * -DUHMM_ITREE_DEBUG.
 */
extern unsigned long uhmm__itree_debug_visits;
#endif

/**
 * uhmm__itree_init() - make @t an empty tree
 * @t: tree to initialise
 *
 * Context: the caller must own @t exclusively.
 */
UHMM__HIDDEN void uhmm__itree_init(struct uhmm__itree *t);

/**
 * uhmm__itree_insert() - add an interval to a tree
 * @t: tree to add to
 * @node: node to add; @node->start and @node->last must already be set and
 *        @node must not be in any tree
 *
 * Nodes with identical bounds may coexist; among nodes with equal @start the
 * later insertion comes later in iteration order.  O(log n), never
 * allocates.
 *
 * Context: the caller serializes all access to @t (no internal locking).
 */
UHMM__HIDDEN void uhmm__itree_insert(struct uhmm__itree *t,
				   struct uhmm__itree_node *node);

/**
 * uhmm__itree_remove() - take an interval out of a tree
 * @t: tree that currently holds @node
 * @node: node to remove
 *
 * O(log n).  On return @node is no longer linked and may be freed, reused or
 * re-inserted (its @start and @last are left untouched).
 *
 * Context: the caller serializes all access to @t (no internal locking).
 */
UHMM__HIDDEN void uhmm__itree_remove(struct uhmm__itree *t,
				   struct uhmm__itree_node *node);

/**
 * uhmm__itree_iter_first() - find the first node overlapping a range
 * @t: tree to search
 * @start: first byte of the query range
 * @last: last byte of the query range (inclusive), @last >= @start
 *
 * A node overlaps when node->start <= @last and node->last >= @start.
 *
 * Return: the overlapping node with the smallest start, or NULL if none.
 * O(log n).
 *
 * Context: the caller must keep @t from being modified during the call and
 * for as long as it iterates from the returned node.
 */
UHMM__HIDDEN struct uhmm__itree_node *
uhmm__itree_iter_first(const struct uhmm__itree *t, uintptr_t start,
		      uintptr_t last);

/**
 * uhmm__itree_iter_next() - find the next node overlapping a range
 * @node: node returned by uhmm__itree_iter_first() or a previous
 *        uhmm__itree_iter_next() call for the same range
 * @start: first byte of the query range
 * @last: last byte of the query range (inclusive)
 *
 * Walking from uhmm__itree_iter_first() with uhmm__itree_iter_next() visits
 * every overlapping node exactly once, in order of start.
 *
 * Return: the next overlapping node after @node in order of start, or NULL
 * when there are no more.
 *
 * Context: the caller must keep the tree from being modified between the
 * first call and the last one; in particular @node must not be removed while
 * it is still needed to continue the walk.
 */
UHMM__HIDDEN struct uhmm__itree_node *
uhmm__itree_iter_next(const struct uhmm__itree_node *node, uintptr_t start,
		     uintptr_t last);

#endif /* UHMM__ITREE_H */
