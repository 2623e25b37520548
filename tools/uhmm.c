// SPDX-License-Identifier: MIT
/*
 * uhmm - command-line tool: "uhmm info" tells whether and how uhmm works on
 * this machine.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uhmm/uhmm.h>

#include "bench.h"
#include "demo.h"
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
		"                                    (move, pagemap_scan, wp_unpopulated,\n"
		"                                    madv_populate, procmap_query, uffd_wp);\n"
		"                                    uffd_full forces user-mode-only\n"
		"  UHMM_LOG=1                        print every error reason to stderr\n");
}

static int cmd_info(int argc, char **argv)
{
	static const char *const mode[] = { "none", "user-mode-only", "full" };
	struct uhmm_sysinfo si;
	struct uhmm_mm *mm = NULL;
	int ret;

	if (argc > 1 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
		printf("usage: uhmm info\n\n"
		       "Prints the kernel version, the userfaultfd mode uhmm obtains\n"
		       "(full, user-mode-only or none, and why), each kernel feature\n"
		       "uhmm can use and whether its fallback is active, the page size,\n"
		       "the transparent huge page mode and whether the kernel maps the\n"
		       "shared zero page. Exits 1 when uhmm cannot work here.\n");
		return 0;
	}
	if (argc > 1) {
		fprintf(stderr, "uhmm info: unknown option '%s' (it takes none; --help)\n",
			argv[1]);
		return 2;
	}
	uhmm_sysinfo(&si);
	printf("kernel:            %s\n", si.kernel_release);
	printf("userfaultfd:       %s (%s)\n", mode[si.uffd_mode], si.uffd_source);
	if (si.uffd_mode == UHMM_UFFD_USER_ONLY)
		printf("                   full mode refused: %s; kernel-mode access to\n"
		       "                   device-resident memory (read(2) into it, futexes)\n"
		       "                   fails with EFAULT in this mode\n",
		       strerror(si.uffd_errno));
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
			state = "absent: fallback in use";
		else if (si.disabled & f)
			state = "present, disabled by UHMM_DISABLE: fallback in use";
		else
			state = "present: fast path in use";
		printf("  %-16s %s\n", uhmm_feature_name(f), state);
	}
	if (si.uffd_mode == UHMM_UFFD_NONE) {
		printf("\nuhmm cannot work here.\n%s\n", si.advice);
		return 1;
	}
	ret = uhmm_mm_get(&mm);
	if (ret) {
		printf("\nuhmm cannot create its context: %s\n%s\n", strerror(-ret),
		       uhmm_last_error());
		return 1;
	}
	uhmm_mm_put(mm);
	printf("status:            ok\n");
	return 0;
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
