/* SPDX-License-Identifier: MIT */
/*
 * cuda_sample.h — the per-row parameter block of the device sampler
 * (k_sample in k_sample.cuh), one definition for the host (gcc) and the
 * device (nvcc): 64-bit first, then 32-bit fields, no implicit padding
 * (backend.c pins the size with a _Static_assert).
 *
 * The host fills one block per sampled row from the request's sampler
 * (core/sampler.h) in a pinned buffer allocated at model_load, copies the
 * blocks of a sample() call with one cuMemcpyHtoDAsync, and k_sample runs
 * one thread block per row.  What each field means is the host sampler's
 * parameter after the host's own arithmetic, so that both backends start
 * from the same float values:
 */
#ifndef VELO_ENG_CUDA_SAMPLE_H
#define VELO_ENG_CUDA_SAMPLE_H

#include <stdint.h>

/* == ENG_SAMPLER_BIAS_MAX (backend.c asserts it; nvcc does not see
 * core/sampler.h) */
#define CUDA_SAMP_BIAS_MAX 64
/* Token weights exp((l - m) / T) <= 1 are summed as integers in units of
 * 2^-45: exact and order-free (a 256K vocabulary sums to < 2^63); a
 * weight >= 2^-21 is represented exactly, a smaller one to within 2^-46. */
#define CUDA_SAMP_FIX_SHIFT 45
/* Threads of one k_sample block (one row). */
#define CUDA_SAMP_THREADS 1024

struct cuda_samp_row {
	uint64_t r;		/* raw RNG draw: u = (r >> 11) * 2^-53, as the host's */
	float inv_t;		/* 1.0f / temperature */
	float minp_c;		/* logf(min_p) * temperature; -inf: min-p off */
	float top_p;		/* >= 1: off */
	uint32_t top_k;		/* 0: off (the host clears it when >= vocab) */
	uint32_t greedy;	/* 1: highest (biased) logit, no draw */
	uint32_t n_bias;	/* <= CUDA_SAMP_BIAS_MAX */
	uint32_t row;		/* logit row (index into the model's logits) */
	uint32_t pad_;
	uint32_t bias_id[CUDA_SAMP_BIAS_MAX];	/* < vocab, checked by the host */
	float bias[CUDA_SAMP_BIAS_MAX];
};

#endif
