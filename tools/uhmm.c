// SPDX-License-Identifier: MIT
/*
 * uhmm - command-line tool: "uhmm info" tells whether and how uhmm works on
 * this machine.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uhmm/uhmm.h>

#include "bench.h"
#include "demo.h"
#include "opts.h"
#include "stress.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: uhmm <command> [options]\n"
		"\n"
		"commands:\n"
		"  demo     a stencil and a histogram on the simulated device over ordinary\n"
		"           memory, checked against the CPU (--help for options)\n"
		"  info     what the kernel offers uhmm here, and what to change if it\n"
		"           cannot work (run this first when something does not work)\n"
		"  bench    measure uhmm against same-run baselines (--help for options)\n"
		"  stress   randomized operations checked against a model (--help for options)\n"
		"  help     this text\n"
		"\n"
		"environment:\n"
		"  UHMM_DISABLE=feat[,feat...]|all   force the fallback path of features\n"
		"                                    (move, pagemap_scan, wp_unpopulated or wpmarker,\n"
		"                                    madv_populate, procmap_query, uffd_wp);\n"
		"                                    uffd_full forces user-mode-only;\n"
		"                                    worker_read: only the reader reads\n"
		"  UHMM_LOG=1                        print every error reason to stderr\n"
		"\n"
		"exit status (every command):\n"
		"  0    done, every check passed\n"
		"  1    a check or an operation failed (the reason is printed)\n"
		"  2    bad command line (the reason is printed)\n"
		"  77   cannot run here: no userfaultfd could be opened; 'uhmm info'\n"
		"       says what to change (77 is what test harnesses read as 'skip')\n");
}

static void info_usage(FILE *f)
{
	fprintf(f, "usage: uhmm info\n\n"
		"Prints the kernel version, the userfaultfd mode uhmm obtains (full,\n"
		"user-mode-only or none, why, and how to get full mode), each kernel\n"
		"feature uhmm can use and whether its fallback is active, the page\n"
		"size, the transparent huge page mode and whether the kernel maps the\n"
		"shared zero page.\n\n"
		"Exit status: 0 uhmm works here; 1 it cannot create its context for\n"
		"another reason (printed); 2 bad command line; 77 no userfaultfd can be\n"
		"opened here (what to change is printed).\n");
}

/* The userfaultfd lines of "uhmm info". */
static void info_uffd(const struct uhmm_sysinfo *si)
{
	/* The library marks a user-mode-only mode UHMM_DISABLE forced. */
	bool forced = strstr(si->uffd_source, "forced") != NULL;

	switch (si->uffd_mode) {
	case UHMM_UFFD_FULL:
		printf("userfaultfd:       full mode (opened with %s)\n",
		       strcmp(si->uffd_source, "syscall") ? si->uffd_source
							  : "the userfaultfd system call");
		break;
	case UHMM_UFFD_USER_ONLY:
		printf("userfaultfd:       user-mode-only (UFFD_USER_MODE_ONLY)\n");
		if (forced)
			printf("                   full mode not tried: UHMM_DISABLE=uffd_full\n"
			       "                   forces user-mode-only\n");
		else
			printf("                   full mode not permitted here: %s\n",
			       strerror(si->uffd_errno));
		printf("                   In this mode a kernel-mode access to device-resident\n"
		       "                   memory (read(2) into it, a futex on it) fails with\n"
		       "                   EFAULT instead of waiting for the page.\n");
		if (!forced)
			printf("                   To get full mode, any one of:\n"
			       "                     sysctl vm.unprivileged_userfaultfd=1   (as root)\n"
			       "                     read/write access to /dev/userfaultfd for this\n"
			       "                       user (Linux 6.1 or newer)\n"
			       "                     run with the CAP_SYS_PTRACE capability\n");
		break;
	default:
		printf("userfaultfd:       not available: no userfaultfd could be opened (%s)\n",
		       strerror(si->uffd_errno ? si->uffd_errno : ENOSYS));
		break;
	}
}

static int cmd_info(int argc, char **argv)
{
	struct uhmm_sysinfo si;
	struct uhmm_mm *mm = NULL;
	struct opts o;
	int ret;

	opts_init(&o, "uhmm info", argc, argv);
	while (opts_next(&o)) {
		if (opts_is(&o, "--help") || opts_is(&o, "-h")) {
			info_usage(stdout);
			return TOOL_EXIT_OK;
		}
		opts_unknown(&o);
		return TOOL_EXIT_USAGE;
	}
	uhmm_sysinfo(&si);
	printf("kernel:            %s\n", si.kernel_release);
	info_uffd(&si);
	printf("page size:         %zu\n", si.page_size);
	printf("transparent huge:  %s\n", si.thp);
	printf("shared zero page:  %s\n",
	       si.zero_page == 1 ? "yes" :
	       si.zero_page == 0 ? "no (read faults get private zeroed pages)" :
				   "unknown (needs PAGEMAP_SCAN or root)");
	printf("features:\n");
	for (unsigned int i = 0; i < UHMM_FEAT_COUNT; i++) {
		unsigned int f = 1u << i;
		const char *state;

		if (!(si.features & f))
			state = si.uffd_mode == UHMM_UFFD_NONE && f & (UHMM_FEAT_MOVE |
				UHMM_FEAT_WP_UNPOPULATED | UHMM_FEAT_UFFD_WP) ?
				"unknown: needs a userfaultfd to probe" :
				"absent: fallback in use";
		else if (si.disabled & f)
			state = "present, disabled by UHMM_DISABLE: fallback in use";
		else
			state = "present: fast path in use";
		printf("  %-16s %s\n", uhmm_feature_name(f), state);
	}
	/* What pagemap shows for a device-resident page (src/wpmarker.c). */
	printf("device pages:      %s\n",
	       (si.active & UHMM_FEAT_WP_UNPOPULATED) && (si.active & UHMM_FEAT_UFFD_WP) ?
	       "swap entries in pagemap (uffd-wp markers), as the kernel shows them" :
	       si.uffd_mode == UHMM_UFFD_NONE ? "unknown: needs a userfaultfd to probe" :
	       "empty entries in pagemap (fallback: needs wp_unpopulated and uffd_wp)");
	if (si.uffd_mode == UHMM_UFFD_NONE) {
		printf("status:            cannot run here (exit status %d)\n",
		       TOOL_EXIT_CANNOT_RUN);
		tool_print_wrapped(stdout, si.advice, 78);
		return TOOL_EXIT_CANNOT_RUN;
	}
	ret = uhmm_mm_get(&mm);
	if (ret) {
		printf("status:            cannot create its context: %s\n%s\n", strerror(-ret),
		       uhmm_last_error());
		return TOOL_EXIT_FAIL;
	}
	uhmm_mm_put(mm);
	printf("status:            ok\n");
	return TOOL_EXIT_OK;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
		printf("uhmm %s (library %s)\n", UHMM_VERSION_STRING, uhmm_version());
		return 0;
	}
	if (!strcmp(argv[1], "info"))
		return cmd_info(argc - 1, argv + 1);
	if (!strcmp(argv[1], "demo"))
		return uhmm_demo_main(argc - 1, argv + 1);
	if (!strcmp(argv[1], "bench"))
		return uhmm_bench_main(argc - 1, argv + 1);
	if (!strcmp(argv[1], "stress"))
		return uhmm_stress_main(argc - 1, argv + 1);
	if (!strcmp(argv[1], "help") || !strcmp(argv[1], "-h") ||
	    !strcmp(argv[1], "--help")) {
		usage(stdout);
		return 0;
	}
	fprintf(stderr, "uhmm: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
