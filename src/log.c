// SPDX-License-Identifier: MIT
/*
 * Error reasons: each failing call records one line for its thread, shown by
 * uhmm_last_error() and printed to stderr when UHMM_LOG is set.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

static __thread char errbuf[256];

static bool log_enabled(void)
{
	static int enabled = -1;
	int e = __atomic_load_n(&enabled, __ATOMIC_RELAXED);

	if (e < 0) {
		const char *v = getenv("UHMM_LOG");

		e = v && *v && strcmp(v, "0") != 0;
		__atomic_store_n(&enabled, e, __ATOMIC_RELAXED);
	}
	return e;
}

static int verr(const char *prefix, int err, const char *fmt, va_list ap)
{
	int n;

	n = snprintf(errbuf, sizeof(errbuf), "%s", prefix);
	vsnprintf(errbuf + n, sizeof(errbuf) - n, fmt, ap);
	if (log_enabled())
		fprintf(stderr, "%s (%s)\n", errbuf, strerror(err));
	return -err;
}

int uhmm__err(int err, const char *fmt, ...)
{
	va_list ap;
	int ret;

	va_start(ap, fmt);
	ret = verr("uhmm: ", err, fmt, ap);
	va_end(ap);
	return ret;
}

int uhmm_set_error(int err, const char *fmt, ...)
{
	va_list ap;
	int ret;

	if (!fmt || !*fmt)
		return uhmm__err(err, "(a driver gave no reason)");
	va_start(ap, fmt);
	ret = verr("", err, fmt, ap);
	va_end(ap);
	if (!errbuf[0])
		return uhmm__err(err, "(a driver gave no reason)");
	return ret;
}

void uhmm__warn(const char *fmt, ...)
{
	va_list ap;
	char buf[256];

	if (!log_enabled())
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	fprintf(stderr, "uhmm: warning: %s\n", buf);
}

const char *uhmm_last_error(void)
{
	return errbuf;
}
