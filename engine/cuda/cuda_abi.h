/* SPDX-License-Identifier: MIT */
/*
 * cuda_abi.h — the argument blocks the host code (C, gcc) passes by value to
 * the kernels (kernels.cu, nvcc).  Both compilers see this one definition;
 * only pointers, 32-bit integers and floats, so the x86-64 and the device
 * ABI lay it out alike (the _Static_asserts in backend.c pin the sizes).
 *
 * Element types are enum eng_dtype's values (core/model.h), repeated here
 * as plain numbers because nvcc does not see the engine headers.
 */
#ifndef VELO_ENG_CUDA_ABI_H
#define VELO_ENG_CUDA_ABI_H

#include <stdint.h>

#define CUDA_DT_F32 0
#define CUDA_DT_BF16 1
#define CUDA_DT_F16 2
#define CUDA_DT_FP8 3
#define CUDA_DT_INT4 4

/* Matrix-product epilogues. */
#define CUDA_MV_STORE 0		/* y = W x (+ bias) */
#define CUDA_MV_ADD 1		/* y += W x (+ bias): the residual stream */
#define CUDA_MV_SWIGLU 2	/* y0 = silu(W0 x) * (W1 x), rows of both alike */

/* GEMV: R output rows per block (4; INT4 2), its 4 warps splitting the
 * columns, up to this many tokens per pass (grid.y covers more). */
#define CUDA_MV_WARPS 4
#define CUDA_MV_NT_MAX 8
/* Tiled GEMM (prefill): 64 rows x 64 tokens per block, k steps of 32. */
#define CUDA_MM_TILE 64
#define CUDA_MM_TK 32

#define CUDA_MV_PARTS 3

/*
 * Up to three weight matrices of one dtype against the same input rows x,
 * each into its own output (Q, K, V of a layer; gate and up).  Rows of the
 * parts are numbered one after the other: part p owns global rows
 * [row_base[p], row_base[p + 1]) and work units [tile_base[p],
 * tile_base[p + 1]): 64-row tiles for the GEMM, R-row warp groups for the
 * GEMV (SWIGLU: part 0's only).
 */
struct cuda_mv_args {
	const void *w[CUDA_MV_PARTS];		/* [rows][cols] row-major */
	const void *scales[CUDA_MV_PARTS];	/* FP8 f32[rows]; INT4 f16[rows][cols/128] */
	const float *bias[CUDA_MV_PARTS];	/* [rows] or NULL */
	float *y[CUDA_MV_PARTS];		/* [nt][ldy] */
	uint32_t rows[CUDA_MV_PARTS];
	uint32_t ldy[CUDA_MV_PARTS];
	uint32_t row_base[CUDA_MV_PARTS + 1];
	uint32_t tile_base[CUDA_MV_PARTS + 1];
	const float *x;				/* [nt][ldx] */
	uint32_t ldx;
	uint32_t cols;
	uint32_t nt;
	uint32_t n_parts;
	uint32_t mode;				/* CUDA_MV_* */
	/* k_mvt's split-K partial sums: part_cap tiles of 64 x 16 floats
	 * and a counter per row tile (zero between launches); NULL: no
	 * split */
	uint32_t part_cap;
	float *part;
	uint32_t *sem;
};

/* k_mvt: columns per block at most CUDA_MVT_SLICE chunks of 64; split-K
 * partial sums in tiles of 64 rows x 16 tokens */
#define CUDA_MVT_SLICE 8u

/*
 * Tensor-core GEMM (k_mma.cuh, VELO_CUDA_MMA): 128 weight rows x 64 tokens
 * per block, k steps of 32.  The activations come from the pre-pass
 * k_mma_xq: each token's row times a power of two (its largest magnitude
 * to [2^14, 2^15)), as f16 (bf16 for BF16 weights) hi and, for split 2,
 * lo = x - hi; rows padded with zeros to ldk = cols rounded up to 32, the
 * 32 columns of each step stored in the order the weight fragments are
 * read in (k_mma.cuh mma_perm); xs[t] undoes the power of two.
 */
#define CUDA_MMA_TN 128
#define CUDA_MMA_TM 64
#define CUDA_MMA_TK 32

struct cuda_mma_args {
	const uint16_t *xh;			/* [nt][ldk] hi */
	const uint16_t *xl;			/* [nt][ldk] lo (split 2) or NULL */
	const float *xs;			/* [nt] */
	uint32_t ldk;
	uint32_t pad_;
};

/* Paged attention over the KV pool of one layer. */
struct cuda_attn_args {
	const float *q;			/* [T][q_ld], RoPE applied */
	float *out;			/* [T][q_ld] */
	const void *kc, *vc;		/* this layer's pool: [block][kv_head][slot][hd] */
	const uint32_t *tok_pos;	/* [T] */
	const uint32_t *tok_seq;	/* [T] */
	const uint32_t *tables;		/* [n_seqs][table_ld] block tables */
	float *part;			/* split partials [T][n_heads][nsplit][hd + 2] */
	uint64_t blk_stride;		/* elements per block: n_kv * B * hd */
	uint32_t table_ld;
	uint32_t q_ld;
	uint32_t n_heads;
	uint32_t group;			/* n_heads / n_kv */
	uint32_t hd;
	uint32_t b_shift;		/* log2(tokens per block) */
	uint32_t window;		/* sliding window, 0: none */
	uint32_t nsplit;		/* position splits per (token, head) */
	float scale;			/* head_dim^-0.5 */
	uint32_t pad_;
};

/*
 * The epilogue of a cuBLASLt product (lt.c): y[t][r] (+)= src[t][r] *
 * wscale[r] * tscale[t] + bias[r] for t < nt, r < rows; src may be y
 * itself (in place, ld_src == ldy).  NULL scales and bias are 1 and 0.
 */
struct cuda_lt_epi_args {
	float *y;
	const float *src;
	const float *wscale;		/* FP8 per-row weight scales */
	const float *tscale;		/* per-token activation scales */
	const float *bias;
	uint32_t ldy, ld_src, rows, nt;
	uint32_t mode;			/* CUDA_MV_STORE or CUDA_MV_ADD */
	uint32_t pad_;
};

/* Tiled prefill attention: a query tile is up to CUDA_FLASH_QT consecutive
 * tokens of one sequence (the host lists them: (first token, count) pairs),
 * keys taken CUDA_FLASH_KT at a time through shared memory. */
#define CUDA_FLASH_QT 16
#define CUDA_FLASH_KT 16

/* Bias-free RoPE and the KV store of the step's new tokens. */
struct cuda_rope_args {
	float *q;			/* [T][q_dim], rotated in place */
	const float *k, *v;		/* [T][kv_dim] */
	void *kc, *vc;			/* this layer's pool */
	const float *cos_t, *sin_t;	/* [ctx_max][hd / 2] */
	const uint32_t *tok_pos;	/* [T] */
	const uint32_t *tok_blk;	/* [T] block of the token's slot */
	const uint32_t *tok_slot;	/* [T] slot within the block */
	uint64_t blk_stride;
	uint32_t n_heads, n_kv, hd, B;
	uint32_t kv_bf16;
	uint32_t pad_;
};

#endif
