// SPDX-License-Identifier: MIT
/*
 * Error reasons: each failing call records one line for its thread, shown by
 * uhmm_last_error() and printed to stderr when UHMM_LOG is set.
 *
 * An error can be recorded while a migration holds pages frozen, so this
 * touches only memory of the library's own (docs/CONCURRENCY.md, "Frozen
 * pages"): UHMM_LOG is read once, when the library is loaded (getenv()
 * later could read an environment setenv() moved onto the heap), the
 * reason goes into an initial-exec thread-local buffer, and a printed line
 * is formatted on the stack and written with write(2), without stdio (its
 * buffers and locks) or strerror() (which may translate, and allocate).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base.h"
#include "log.h"

static __thread char errbuf[256];

static bool enabled;

__attribute__((constructor)) static void log_init(void)
{
	const char *v = getenv("UHMM_LOG");

	enabled = v && *v && strcmp(v, "0") != 0;
}

static bool log_enabled(void)
{
	return enabled;
}

/*
 * The untranslated description of @err, from libc's static table: unlike
 * strerror it never translates, allocates or touches libc's locale state,
 * so it may run under uhmm's locks, on the reader, and while pages are
 * frozen (docs/CONCURRENCY.md, "Frozen pages").
 */
const char *uhmm__err_text(int err)
{
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
	const char *d = strerrordesc_np(err);

	if (d)
		return d;
#endif
	(void)err;
	return "error";
}

/* One line to stderr with write(2): no stdio. */
static void put_line(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));
static void put_line(const char *fmt, ...)
{
	char line[512];
	int n, saved = errno;
	va_list ap;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (n < 0) {
		errno = saved;
		return;
	}
	if ((size_t)n > sizeof(line) - 2)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	for (int off = 0; off < n;) {
		ssize_t w = write(STDERR_FILENO, line + off, (size_t)(n - off));

		if (w <= 0 && errno != EINTR)
			break;
		if (w > 0)
			off += (int)w;
	}
	errno = saved;
}

static int verr(const char *prefix, int err, const char *fmt, va_list ap)
{
	int n;

	n = snprintf(errbuf, sizeof(errbuf), "%s", prefix);
	vsnprintf(errbuf + n, sizeof(errbuf) - n, fmt, ap);
	if (log_enabled())
		put_line("%s (%s)", errbuf, uhmm__err_text(err));
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
	put_line("uhmm: warning: %s", buf);
}

const char *uhmm_last_error(void)
{
	return errbuf;
}
