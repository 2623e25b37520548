/* SPDX-License-Identifier: MIT */
#ifndef UHMM_BENCH_H
#define UHMM_BENCH_H
/* "uhmm bench": returns the process exit status. */
int uhmm_bench_main(int argc, char **argv);
/* "uhmm bench --policy": the policy layer's figures (bench/policy_bench.c). */
int uhmm_bench_policy_main(int argc, char **argv);
#endif
