/* SPDX-License-Identifier: MIT */
/*
 * uhmm - Heterogeneous Memory Management for user space.
 *
 * The umbrella header: include this one.
 */
#ifndef UHMM_UHMM_H
#define UHMM_UHMM_H

#include <uhmm/version.h>
#include <uhmm/mm.h>
#include <uhmm/notifier.h>
#include <uhmm/range.h>
#include <uhmm/pagestate.h>
#include <uhmm/devmem.h>
#include <uhmm/migrate.h>
#include <uhmm/exclusive.h>
#include <uhmm/inject.h>

#endif /* UHMM_UHMM_H */
