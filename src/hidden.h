/* SPDX-License-Identifier: MIT */
/*
 * UHMM__HIDDEN: the one marker for the library's internal functions and
 * variables.  The library is built with -fvisibility=hidden already; the
 * marker keeps a symbol hidden in the static library too and says to a
 * reader that a declaration is not part of the API.
 */
#ifndef UHMM__SRC_HIDDEN_H
#define UHMM__SRC_HIDDEN_H

#define UHMM__HIDDEN __attribute__((visibility("hidden")))

#endif
