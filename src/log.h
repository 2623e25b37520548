/* SPDX-License-Identifier: MIT */
/* log.c: errors and messages. */
#ifndef UHMM__LOG_H
#define UHMM__LOG_H

#include "hidden.h"

/* Record a reason for the calling thread and return -err. */
UHMM__HIDDEN int uhmm__err(int err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* The text of errno @err, without translation and without allocating. */
UHMM__HIDDEN const char *uhmm__err_text(int err);
/* Print a warning when UHMM_LOG asks for it. */
UHMM__HIDDEN void uhmm__warn(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));

#endif /* UHMM__LOG_H */
