/* SPDX-License-Identifier: MIT */
/*
 * model_check.h — what every backend checks of a model and a budget before
 * it allocates anything (ops->model_load): the configuration in range,
 * every tensor present with the shape the configuration implies, a known
 * dtype with its scales, input dimensions the backend's kernels can walk;
 * the budget's sizes consistent.  One definition, so that the CPU and CUDA
 * backends refuse the same inputs with the same messages (the tensor's name
 * and layer).  The KV dtype stays each backend's own check.
 */
#ifndef VELO_ENG_MODEL_CHECK_H
#define VELO_ENG_MODEL_CHECK_H

#include <stdint.h>

#include "../backend.h"
#include "model.h"

/* What a backend's kernels need beyond the model's own consistency. */
struct eng_model_limits {
	const char *who;		/* "cpu", "cuda": the log prefix */
	uint32_t head_dim_max;		/* even head_dim up to this */
	uint32_t dim_multiple;		/* hidden and ffn multiples of this (1: any) */
	/* input dimension multiple a matrix of @dt needs; NULL: INT4's group */
	uint32_t (*col_multiple)(enum eng_dtype dt);
};

/*
 * eng_model_check() - @m against @lim; each refusal logged with the tensor.
 * Return: 0; -EINVAL (out of range, missing or misshapen tensor);
 * -EOPNOTSUPP (MLP biases).
 */
int eng_model_check(const struct eng_model *m, const struct eng_model_limits *lim);

/*
 * eng_model_budget_check() - the sizes of @b: non-zero, block size a power
 * of two up to ENG_KV_BLOCK_TOKENS_MAX, seqs_max <= step_tokens_max, bounds
 * that keep every size computation in 64 bits.  Return: 0 or -EINVAL.
 */
int eng_model_budget_check(const struct eng_model_budget *b, const char *who);

#endif
