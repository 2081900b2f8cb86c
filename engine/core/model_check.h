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

/*
 * The step-input checker of the backends (backend.h: a malformed batch is
 * refused before anything is written).  @blk_stamp has one entry per KV
 * block (kv_blocks); @stamp is the checker's generation, advanced per call
 * (the array is cleared when it wraps), so a call costs O(tokens + table
 * entries), not O(kv_blocks).
 */
struct eng_batch_limits {
	const struct eng_model_budget *bud;
	uint32_t ctx_max;		/* positions a sequence may hold */
	uint32_t vocab;
	uint32_t block_tokens;		/* KV block size */
	uint32_t block_shift;		/* log2(block_tokens) */
};

/*
 * eng_batch_check() - @b against @lim: sizes, token ids, block tables; no
 * block written by two sequences (or twice), none read that another
 * writes (core/kv.h).
 * @tokens: the step's total new tokens, on success.
 * Return: 0; -EINVAL (malformed); -E2BIG (over the budget or the context).
 */
int eng_batch_check(const struct eng_batch *b, const struct eng_batch_limits *lim,
		    uint32_t *blk_stamp, uint32_t *stamp, uint32_t *tokens);

#endif
