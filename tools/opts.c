// SPDX-License-Identifier: MIT
/*
 * The uhmm command's option parsing and exit-status conventions (opts.h).
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uhmm/uhmm.h>

#include "opts.h"

#include <uhmm/simdev.h>

void opts_init(struct opts *o, const char *cmd, int argc, char **argv)
{
	memset(o, 0, sizeof(*o));
	o->cmd = cmd;
	o->argc = argc;
	o->argv = argv;
	o->i = 0;
}

bool opts_next(struct opts *o)
{
	const char *a, *eq;
	size_t n;

	if (++o->i >= o->argc)
		return false;
	a = o->argv[o->i];
	eq = strncmp(a, "--", 2) == 0 ? strchr(a, '=') : NULL;
	n = eq ? (size_t)(eq - a) : strlen(a);
	if (n >= sizeof(o->name))
		n = sizeof(o->name) - 1;
	memcpy(o->name, a, n);
	o->name[n] = 0;
	o->inline_val = eq ? eq + 1 : NULL;
	return true;
}

bool opts_is(const struct opts *o, const char *name)
{
	return !strcmp(o->name, name);
}

static void hint(const struct opts *o)
{
	fprintf(stderr, "Run '%s --help' for the options.\n", o->cmd);
}

int opts_unknown(const struct opts *o)
{
	const char *a = o->argv[o->i];

	if (a[0] == '-' && a[1])
		fprintf(stderr, "%s: unknown option '%s'\n", o->cmd, o->name);
	else
		fprintf(stderr, "%s: unexpected argument '%s' (it takes only options)\n",
			o->cmd, a);
	hint(o);
	return -1;
}

int opts_other(struct opts *o, void (*usage)(FILE *f))
{
	if (!opts_is(o, "-h") && !opts_is(o, "--help")) {
		opts_unknown(o);
		return TOOL_EXIT_USAGE;
	}
	if (opts_flag(o))
		return TOOL_EXIT_USAGE;
	usage(stdout);
	return TOOL_EXIT_OK;
}

int opts_bad_value(const struct opts *o, const char *value, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: %s '%s': ", o->cmd, o->name, value);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	hint(o);
	return -1;
}

int opts_flag(struct opts *o)
{
	if (o->inline_val) {
		fprintf(stderr, "%s: %s takes no value (given '%s')\n", o->cmd, o->name,
			o->argv[o->i]);
		hint(o);
		return -1;
	}
	return 0;
}

static int missing(const struct opts *o, const char *what)
{
	fprintf(stderr, "%s: %s needs a value (%s)\n", o->cmd, o->name, what);
	hint(o);
	return -1;
}

/*
 * "--opt=value", or the next argument: one that begins with "--" is taken
 * for the next option (a value of "--opt" itself is missing), while "-1"
 * is a value, refused by the caller's range.
 */
static int take(struct opts *o, const char **out, const char *what)
{
	if (o->inline_val) {
		if (!*o->inline_val)
			return missing(o, what);
		*out = o->inline_val;
		return 0;
	}
	if (o->i + 1 >= o->argc || !strncmp(o->argv[o->i + 1], "--", 2) ||
	    !o->argv[o->i + 1][0])
		return missing(o, what);
	*out = o->argv[++o->i];
	return 0;
}

int opts_str(struct opts *o, const char **out)
{
	return take(o, out, "see --help");
}

int opts_u64(struct opts *o, uint64_t min, uint64_t max, uint64_t *out)
{
	char what[64], *end;
	const char *s;
	unsigned long long v;

	if (max == UINT64_MAX)
		snprintf(what, sizeof(what), "a whole number, %llu or more",
			 (unsigned long long)min);
	else
		snprintf(what, sizeof(what), "a whole number, %llu..%llu",
			 (unsigned long long)min, (unsigned long long)max);
	if (take(o, &s, what))
		return -1;
	if (s[0] < '0' || s[0] > '9') {
		if (s[0] == '-' && s[1] >= '0' && s[1] <= '9')
			return opts_bad_value(o, s, "out of range (%s)", what);
		return opts_bad_value(o, s, "not a number (%s)", what);
	}
	errno = 0;
	v = strtoull(s, &end, 10);
	if (*end)
		return opts_bad_value(o, s, "not a whole number (%s)", what);
	if (errno == ERANGE || v < min || v > max)
		return opts_bad_value(o, s, "out of range (%s)", what);
	*out = v;
	return 0;
}

int opts_uint(struct opts *o, unsigned int min, unsigned int max, unsigned int *out)
{
	uint64_t v = 0;

	if (opts_u64(o, min, max, &v))
		return -1;
	*out = (unsigned int)v;
	return 0;
}

int opts_model(struct opts *o, struct uhmm_simdev_model *out)
{
	const char *name;

	if (opts_str(o, &name))
		return -1;
	if (uhmm_simdev_model_preset(name, out))
		return opts_bad_value(o, name, "not a model (pcie4, cxl or c2c)");
	return 0;
}

int opts_double(struct opts *o, double min, double max, double *out)
{
	char what[64], *end;
	const char *s;
	double v;

	snprintf(what, sizeof(what), "a number, %.10g..%.10g", min, max);
	if (take(o, &s, what))
		return -1;
	errno = 0;
	v = strtod(s, &end);
	if (end == s || *end || (s[0] != '-' && s[0] != '.' && (s[0] < '0' || s[0] > '9')))
		return opts_bad_value(o, s, "not a number (%s)", what);
	if (errno == ERANGE || !isfinite(v) || v < min || v > max)
		return opts_bad_value(o, s, "out of range (%s)", what);
	*out = v;
	return 0;
}

void tool_print_wrapped(FILE *f, const char *text, int width)
{
	int col = 0;

	while (*text) {
		int n = (int)strcspn(text, " ");

		if (col && col + 1 + n > width) {
			fputc('\n', f);
			col = 0;
		} else if (col) {
			fputc(' ', f);
			col++;
		}
		fwrite(text, 1, (size_t)n, f);
		col += n;
		text += n;
		while (*text == ' ')
			text++;
	}
	if (col)
		fputc('\n', f);
}

int tool_need_uffd(const char *cmd)
{
	struct uhmm_sysinfo si;

	uhmm_sysinfo(&si);
	if (si.uffd_mode != UHMM_UFFD_NONE)
		return 0;
	fprintf(stderr, "%s: cannot run here: no userfaultfd (exit status %d).\n", cmd,
		TOOL_EXIT_CANNOT_RUN);
	tool_print_wrapped(stderr, si.advice, 78);
	fprintf(stderr, "'uhmm info' shows what this machine offers.\n");
	return TOOL_EXIT_CANNOT_RUN;
}
