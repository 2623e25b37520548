/* SPDX-License-Identifier: MIT */
#ifndef UHMM_BENCH_SIM_H
#define UHMM_BENCH_SIM_H
/* Figure "sim": workloads on simdev with a cost model (bench_sim.c). */
#include <uhmm/simdev.h>

#define SIM_MAX_REPS 16

/* Per repetition; GB/s are of modelled time, wall_ms of this machine. */
struct sim_figures {
	int n;				/* repetitions done */
	double explicit_gbs[SIM_MAX_REPS], explicit_back_gbs[SIM_MAX_REPS];
	double ondemand64_gbs[SIM_MAX_REPS], ondemand2m_gbs[SIM_MAX_REPS];
	double batch_us[SIM_MAX_REPS];		/* fault service + transfers per batch */
	double faults_per_batch[SIM_MAX_REPS];
	double readback_gbs[SIM_MAX_REPS];
	double wall_ms[SIM_MAX_REPS], sim_ms[SIM_MAX_REPS];
};

/* 0, or -1 when a step failed (said on stderr). */
int bench_sim(const struct uhmm_simdev_model *m, size_t len, int reps, struct sim_figures *out);

#endif
