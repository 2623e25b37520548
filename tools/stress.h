/* SPDX-License-Identifier: MIT */
#ifndef UHMM_STRESS_H
#define UHMM_STRESS_H
/* "uhmm stress": returns the process exit status. */
int uhmm_stress_main(int argc, char **argv);
#endif
