// SPDX-License-Identifier: MIT
/* model_check.c — model and budget checks shared by the backends. */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "../../tools/lib/log.h"
#include "image.h"
#include "model_check.h"

static int check_matrix(const struct eng_model_limits *lim, const char *name, uint32_t l,
			const struct eng_tensor *t, uint32_t rows, uint32_t cols)
{
	const char *why = NULL;
	uint32_t mult = 1;

	if (!t->data)
		why = "missing";
	else if (t->dtype < ENG_DT_F32 || t->dtype >= ENG_DT__COUNT)
		why = "unknown dtype";
	else if (t->rows != rows || t->cols != cols)
		why = "wrong shape";
	else if ((t->dtype == ENG_DT_FP8_E4M3 || t->dtype == ENG_DT_INT4_G128) &&
		 !t->scales)
		why = "no scales";
	else if ((mult = lim->col_multiple ? lim->col_multiple(t->dtype) :
		  t->dtype == ENG_DT_INT4_G128 ? ENG_INT4_GROUP : 1) > 1 && cols % mult)
		why = "input dim not a multiple of what the kernels walk";
	if (!why)
		return 0;
	if (mult > 1 && cols % mult)
		LOG_E(eng, "%s: layer %u %s (%ux%u %s): input dim not a multiple of %u",
		      lim->who, l, name, t->rows, t->cols, eng_dtype_name(t->dtype), mult);
	else
		LOG_E(eng, "%s: layer %u %s (%ux%u %s): %s, want %ux%u", lim->who, l, name,
		      t->rows, t->cols, eng_dtype_name(t->dtype), why, rows, cols);
	return -EINVAL;
}

static int check_vector(const char *who, const char *name, uint32_t l,
			const struct eng_tensor *t, uint32_t n, bool optional)
{
	if (!t->data && optional)
		return 0;
	if (t->data && (uint64_t)t->rows * t->cols == n &&
	    (t->dtype == ENG_DT_F32 || t->dtype == ENG_DT_BF16 || t->dtype == ENG_DT_F16))
		return 0;
	LOG_E(eng, "%s: layer %u %s: missing, wrong size or dtype (want %u f32/bf16/f16)",
	      who, l, name, n);
	return -EINVAL;
}

int eng_model_check(const struct eng_model *m, const struct eng_model_limits *lim)
{
	const struct eng_model_config *c = &m->cfg;
	uint32_t q_dim, kv_dim, dm = lim->dim_multiple ? lim->dim_multiple : 1;
	const char *who = lim->who;
	int rc = 0;

	if (!c->vocab_size || !c->hidden || !c->n_layers || c->n_layers > 4096 ||
	    !c->n_heads || !c->n_kv_heads || c->n_heads % c->n_kv_heads ||
	    !c->head_dim || c->head_dim % 2 || c->head_dim > lim->head_dim_max || !c->ffn ||
	    c->hidden % dm || c->ffn % dm ||
	    !(c->norm_eps > 0.0f) || !isfinite(c->norm_eps) ||
	    !(c->rope_theta > 0.0f) || !isfinite(c->rope_theta) || !m->layers) {
		LOG_E(eng, "%s: model config out of range (head_dim even, <= %u; hidden and "
		      "ffn multiples of %u)", who, lim->head_dim_max, dm);
		return -EINVAL;
	}
	if (c->rope_scaling == ENG_ROPE_LLAMA3 &&
	    (!(c->rope_factor > 0.0f) || !(c->rope_low_freq_factor > 0.0f) ||
	     !(c->rope_high_freq_factor > c->rope_low_freq_factor) ||
	     !c->rope_orig_max_pos)) {
		LOG_E(eng, "%s: llama3 rope scaling parameters out of range", who);
		return -EINVAL;
	}
	if (c->mlp_bias) {
		LOG_E(eng, "%s: MLP biases are not supported", who);
		return -EOPNOTSUPP;
	}
	q_dim = c->n_heads * c->head_dim;
	kv_dim = c->n_kv_heads * c->head_dim;
	if (check_matrix(lim, "embed", 0, &m->embed, c->vocab_size, c->hidden) ||
	    check_vector(who, "final_norm", 0, &m->final_norm, c->hidden, false))
		return -EINVAL;
	/* a tied head may still come as its own tensor: then it must fit */
	if ((!c->tied_embeddings || m->lm_head.data) &&
	    check_matrix(lim, "lm_head", 0, &m->lm_head, c->vocab_size, c->hidden))
		return -EINVAL;
	for (uint32_t l = 0; l < c->n_layers && !rc; l++) {
		const struct eng_layer_weights *w = &m->layers[l];

		rc = check_vector(who, "attn_norm", l, &w->attn_norm, c->hidden, false) ?:
		     check_vector(who, "ffn_norm", l, &w->ffn_norm, c->hidden, false) ?:
		     check_matrix(lim, "wq", l, &w->wq, q_dim, c->hidden) ?:
		     check_matrix(lim, "wk", l, &w->wk, kv_dim, c->hidden) ?:
		     check_matrix(lim, "wv", l, &w->wv, kv_dim, c->hidden) ?:
		     check_matrix(lim, "wo", l, &w->wo, c->hidden, q_dim) ?:
		     check_matrix(lim, "w_gate", l, &w->w_gate, c->ffn, c->hidden) ?:
		     check_matrix(lim, "w_up", l, &w->w_up, c->ffn, c->hidden) ?:
		     check_matrix(lim, "w_down", l, &w->w_down, c->hidden, c->ffn) ?:
		     check_vector(who, "bq", l, &w->bq, q_dim, !c->qkv_bias) ?:
		     check_vector(who, "bk", l, &w->bk, kv_dim, !c->qkv_bias) ?:
		     check_vector(who, "bv", l, &w->bv, kv_dim, !c->qkv_bias) ?:
		     check_vector(who, "bo", l, &w->bo, c->hidden, !c->o_bias);
	}
	return rc;
}

int eng_model_budget_check(const struct eng_model_budget *b, const char *who)
{
	uint32_t B = b->kv_block_tokens ? b->kv_block_tokens : ENG_KV_BLOCK_TOKENS_DEFAULT;

	if (!b->seqs_max || !b->step_tokens_max || !b->kv_blocks ||
	    !b->seq_blocks_max || B > ENG_KV_BLOCK_TOKENS_MAX || (B & (B - 1)) ||
	    b->seqs_max > b->step_tokens_max || b->step_tokens_max > (1u << 20) ||
	    (uint64_t)b->seq_blocks_max * B > (1u << 24)) {
		LOG_E(eng, "%s: model budget out of range", who);
		return -EINVAL;
	}
	return 0;
}

int eng_batch_check(const struct eng_batch *b, const struct eng_batch_limits *lim,
		    uint32_t *blk_stamp, uint32_t *stamp, uint32_t *tokens)
{
	const struct eng_model_budget *bud = lim->bud;
	uint32_t sh = lim->block_shift;
	uint64_t T = 0;

	if (!b || !b->seqs || !b->n_seqs)
		return -EINVAL;
	if (b->n_seqs > bud->seqs_max)
		return -E2BIG;
	for (uint32_t s = 0; s < b->n_seqs; s++) {
		const struct eng_seq_in *q = &b->seqs[s];
		uint64_t end = (uint64_t)q->pos + q->n_tokens;

		if (!q->n_tokens || !q->tokens || !q->blocks ||
		    (q->flags & ~ENG_SEQ_LOGITS))
			return -EINVAL;
		T += q->n_tokens;
		if (T > bud->step_tokens_max || end > lim->ctx_max)
			return -E2BIG;
		if (q->n_blocks < eng_kv_blocks_for((uint32_t)end, lim->block_tokens))
			return -EINVAL;
		for (uint32_t i = 0; i < q->n_tokens; i++)
			if (q->tokens[i] >= lim->vocab)
				return -EINVAL;
	}
	/* Blocks written: in range, by one sequence, once. */
	if (!++*stamp) {
		memset(blk_stamp, 0, (size_t)bud->kv_blocks * 4);
		*stamp = 1;
	}
	for (uint32_t s = 0; s < b->n_seqs; s++) {
		const struct eng_seq_in *q = &b->seqs[s];
		uint32_t first = q->pos >> sh, last = (q->pos + q->n_tokens - 1) >> sh;

		for (uint32_t i = first; i <= last; i++) {
			uint32_t blk = q->blocks[i];

			if (blk >= bud->kv_blocks || blk_stamp[blk] == *stamp)
				return -EINVAL;
			blk_stamp[blk] = *stamp;
		}
	}
	/* Blocks read (positions before pos): in range, written by nobody;
	 * a table is read no further than its last position. */
	for (uint32_t s = 0; s < b->n_seqs; s++) {
		const struct eng_seq_in *q = &b->seqs[s];
		uint32_t first = q->pos >> sh;

		for (uint32_t i = 0; i < first; i++) {
			uint32_t blk = q->blocks[i];

			if (blk >= bud->kv_blocks || blk_stamp[blk] == *stamp)
				return -EINVAL;
		}
	}
	*tokens = (uint32_t)T;
	return 0;
}
