/* SPDX-License-Identifier: MIT */
/*
 * cpu_priv.h — the CPU backend's private state: the backend (worker pool,
 * kernel table, counters) and a loaded model (f32 copies of the small
 * vectors, RoPE table, paged KV pool, activations, per-thread scratch — all
 * in one arena sized at load from the budget).
 */
#ifndef VELO_ENG_CPU_PRIV_H
#define VELO_ENG_CPU_PRIV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../../tools/lib/counters.h"
#include "../backend.h"
#include "../core/sampler.h"
#include "kern.h"
#include "pool.h"

#define foreach_cpu_counter(X)                                                \
	X(steps, "forward steps run")                                         \
	X(step_tokens, "tokens run through the forward pass")                 \
	X(step_logits, "logit rows computed")                                 \
	X(bad_batches, "steps rejected as malformed (-EINVAL)")               \
	X(over_budget, "steps rejected as over the model budget (-E2BIG)")    \
	X(kv_copies, "KV blocks copied (copy on write)")                      \
	X(samples, "tokens sampled")                                          \
	X(sample_errors, "sample calls failed (no finite logit, bad window)") \
	X(models_loaded, "models loaded")                                     \
	X(load_errors, "model loads refused")

enum {
	foreach_cpu_counter(CTR_ENUM) CPU_CTR__COUNT
};

struct cpu_backend {
	struct eng_backend base;
	struct cpu_pool *pool;
	const struct cpu_kern *kern;
	uint32_t threads;
	uint64_t mem_bytes_max;
	uint64_t mem_bytes_used;
	uint32_t n_models;
	int health;
	const char *why;
	uint64_t ctr[CPU_CTR__COUNT];
};

/* The op a pool job runs, with its operands (set by the caller). */
struct cpu_mm_part {
	const struct eng_tensor *w;
	const float *bias;		/* [rows] or NULL */
	float *y;			/* [nt][ldy] */
	size_t ldy;
};

struct cpu_mm {
	struct cpu_mm_part part[3];
	uint32_t n_part;
	uint32_t rows;			/* sum of the parts' rows */
	const float *x;			/* [nt][ldx] natural order */
	const float *xp;		/* same, INT4-permuted (or NULL) */
	size_t ldx;
	uint32_t nt;
	float *resid;			/* x[t][r] += y[t][r] (part 0), or NULL */
	size_t ld_resid;
	bool swiglu;			/* y0 = silu(y0) * y1, rows split alike */
	bool qkv;			/* split by heads; RoPE + KV store */
	const float *norm_w;		/* x is the residual: RMSNorm it first */
	bool norm_perm;			/* ... and permute it (INT4) */
};

struct cpu_model {
	struct eng_be_model base;
	struct cpu_backend *be;
	const struct eng_model *m;
	const struct cpu_kern *kern;
	struct eng_model_budget bud;

	/* shapes */
	uint32_t n_layers, hidden, n_heads, n_kv, hd, q_dim, kv_dim, ffn, vocab;
	uint32_t kmax;			/* widest matrix input */
	uint32_t B, b_shift;		/* tokens per KV block, log2 */
	uint32_t ctx_max;
	uint32_t window;			/* sliding window, 0: none */
	float att_scale;
	bool perm_hidden, perm_q, perm_ffn, perm_lm; /* INT4 inputs */
	const struct eng_tensor *lm_head;

	/* float32 copies of the vectors (norm weights, biases) */
	float *attn_norm, *ffn_norm;	/* [n_layers][hidden] */
	float *final_norm;		/* [hidden] */
	float *bq, *bk, *bv, *bo;	/* [n_layers][dim] or NULL */
	float *rope_cos, *rope_sin;	/* [ctx_max][hd / 2] */

	/* paged KV pool: [layer][block][kv_head][slot][hd] float32 each */
	float *kc, *vc;
	size_t kv_layer_stride;		/* floats: kv_blocks * n_kv * B * hd */
	size_t kv_block_stride;		/* floats: n_kv * B * hd */

	/* activations, T = step_tokens_max rows */
	float *x;			/* [T][hidden] residual stream */
	float *xb;			/* [T][hidden] normed */
	float *xp;			/* [T][kmax] INT4-permuted input */
	float *q;			/* [T][q_dim] */
	float *k, *v;			/* [T][kv_dim] */
	float *att;			/* [T][q_dim] attention output */
	float *hb, *hb2;		/* [T][ffn] */
	float *xl;			/* [seqs_max][hidden] rows for logits */
	float *xlp;			/* [seqs_max][kmax] permuted */
	float *logits;			/* [seqs_max][vocab] */

	/* per-token and per-sequence maps of the current step */
	uint32_t *tok_id, *tok_seq, *tok_pos;	/* [T] */
	int32_t *seq_logit_row;			/* [seqs_max] */
	uint32_t *logit_tok;			/* [seqs_max] */
	uint32_t *blk_stamp;			/* [kv_blocks] validation */
	uint32_t stamp;

	/* per-thread scratch */
	float *xbw, *xpw;		/* [threads][T][hidden] normed, permuted */
	size_t xbw_stride;
	float *tile;			/* [threads][cpu_tile_floats(kmax)] */
	float *scores;			/* [threads][ctx_max] */
	size_t tile_stride, scores_stride;

	/* current step */
	const struct eng_batch *batch;
	uint32_t T, n_logits, layer;
	uint32_t last_n_seqs;
	bool have_step;
	struct cpu_mm mm;
	uint32_t att_next;		/* dynamic attention work counter */
	uint32_t mm_next;		/* dynamic matrix rows / heads counter */
	const float *perm_src;		/* job_perm operands */
	uint32_t perm_cols;

	struct eng_sampler_scratch samp;
	void *arena;
	size_t arena_len;
};

int cpu_forward(struct cpu_model *cm, const struct eng_batch *b);

#endif
