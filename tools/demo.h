/* SPDX-License-Identifier: MIT */
#ifndef UHMM_DEMO_H
#define UHMM_DEMO_H
/* "uhmm demo": returns the process exit status. */
int uhmm_demo_main(int argc, char **argv);
#endif
