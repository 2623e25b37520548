/* SPDX-License-Identifier: MIT */
#ifndef UHMM_TOOL_OPTS_H
#define UHMM_TOOL_OPTS_H
/*
 * The uhmm command's conventions, shared by its subcommands: option parsing
 * ("--opt value" and "--opt=value" alike; a bad value is refused with a
 * message naming the option and the value) and the exit statuses.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* Exit statuses of every subcommand (documented in "uhmm --help"). */
#define TOOL_EXIT_OK		0	/* done, every check passed */
#define TOOL_EXIT_FAIL		1	/* a check failed or an operation failed */
#define TOOL_EXIT_USAGE		2	/* bad command line (reason on stderr) */
#define TOOL_EXIT_CANNOT_RUN	77	/* no userfaultfd here: "uhmm info" says why */

/* One subcommand's walk over its arguments. */
struct opts {
	const char *cmd;	/* "uhmm demo": begins every message */
	int argc;
	char **argv;
	int i;			/* index of the current argument */
	char name[64];		/* the current option: "--size" of "--size=8" */
	const char *inline_val;	/* "8" of "--size=8", NULL for "--size 8" */
};

void opts_init(struct opts *o, const char *cmd, int argc, char **argv);
/* Moves to the next argument: true with o->name set, false after the last. */
bool opts_next(struct opts *o);
/* Is the current argument the option @name (as "--name" or "--name=...")? */
bool opts_is(const struct opts *o, const char *name);
/*
 * Each of these returns 0, or -1 after printing why to stderr (the caller
 * then exits with TOOL_EXIT_USAGE).
 */
/* An option without a value: refuses "--flag=value". */
int opts_flag(struct opts *o);
/* The option's value, from "=value" or the next argument. */
int opts_str(struct opts *o, const char **out);
/* A whole decimal number in [min, max]. */
int opts_u64(struct opts *o, uint64_t min, uint64_t max, uint64_t *out);
int opts_uint(struct opts *o, unsigned int min, unsigned int max, unsigned int *out);
struct uhmm_simdev_model;
/* The value of --model: a simdev cost-model preset name (pcie4, cxl, c2c). */
int opts_model(struct opts *o, struct uhmm_simdev_model *out);
/* A decimal number in [min, max]. */
int opts_double(struct opts *o, double min, double max, double *out);
/* "unknown option" (or "unexpected argument" for one not starting with '-'). */
int opts_unknown(const struct opts *o);
/*
 * The last branch of a subcommand's option loop: -h / --help prints
 * @usage to stdout and gives TOOL_EXIT_OK (TOOL_EXIT_USAGE with a value);
 * anything else is refused as opts_unknown() does (TOOL_EXIT_USAGE).
 */
int opts_other(struct opts *o, void (*usage)(FILE *f));
/* "<cmd>: <option> '<value>': <reason>" for a value the caller refuses. */
int opts_bad_value(const struct opts *o, const char *value, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* @text (words separated by spaces) in lines of at most @width columns. */
void tool_print_wrapped(FILE *f, const char *text, int width);

/*
 * 0 when a userfaultfd can be had here; otherwise prints why and what to
 * change (with "uhmm info" for the details) and returns
 * TOOL_EXIT_CANNOT_RUN.
 */
int tool_need_uffd(const char *cmd);

#endif
