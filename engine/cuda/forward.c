// SPDX-License-Identifier: MIT
/*
 * forward.c — the Llama-family forward pass of one batch on the GPU, as
 * kernel launches on the model's stream:
 *   embed | per layer: RMSNorm -> QKV (+bias, one launch for the three)
 *   -> RoPE + KV store -> paged attention (+ split merge) -> O (+bias)
 *   added to the residual -> RMSNorm -> gate/up with SwiGLU (one launch)
 *   -> down added to the residual | final RMSNorm of the rows that want
 *   logits -> LM head -> argmax.
 * 9 or 10 launches per layer; nothing allocated, nothing waited for.
 */
#include <errno.h>
#include <string.h>

#include <velo/compiler.h>

#include "cuda_fwd.h"
#include "cuda_lt.h"

#define DP(p) ((void *)(uintptr_t)(p))

static int launch(struct cuda_backend *be, CUstream st, CUfunction f,
		  unsigned gx, unsigned gy, unsigned gz, unsigned bx, void **args)
{
	return CU_CHECK(be, be->api.cuLaunchKernel(f, gx, gy, gz, bx, 1, 1, 0, st,
						   args, NULL));
}

/*
 * Rows and @unit-row tiles of each part before it (row_base, tile_base),
 * which the kernels map their blocks with; @first_only: part 0's blocks
 * also do part 1's rows (a SWIGLU whose kernel takes gate and up rows in
 * the same block).  Return: the tiles, i.e. blocks along the rows.
 */
static uint32_t mv_tiles(struct cuda_mv_args *a, uint32_t unit, bool first_only)
{
	a->row_base[0] = a->tile_base[0] = 0;
	for (uint32_t p = 0; p < CUDA_MV_PARTS; p++) {
		uint32_t rows = p < a->n_parts && !(first_only && p) ? a->rows[p] : 0;

		a->row_base[p + 1] = a->row_base[p] + rows;
		a->tile_base[p + 1] = a->tile_base[p] + (rows + unit - 1) / unit;
	}
	return a->tile_base[a->n_parts];
}

/* SWIGLU the unfused way: y[0] = silu(y[0]) * y[1] over nt x rows[0]. */
static int swiglu_launch(struct cuda_backend *be, CUstream st, struct cuda_mv_args *a)
{
	uint32_t n = a->nt * a->rows[0];
	void *sa[] = { &a->y[0], &a->y[1], &n };

	return launch(be, st, be->f_swiglu, (n + 255) / 256, 1, 1, 256, sa);
}

/*
 * The tensor-core GEMV (k_mvt.cuh) for FP8 and INT4 weights and 2..16
 * tokens (VELO_CUDA_MVT=0: k_mv): 64 rows per block (SWIGLU: 32 rows of
 * gate and the same of up), the columns split by cuda_mvt_split.  One
 * token stays on k_mv, which an H200 ran faster (8B step: FP8 3.5 against
 * 4.6 ms, INT4 3.8 against 4.3 ms).  1: not taken (another dtype, a
 * column count that is not a multiple of the chunk, a split beyond the
 * workspace), the caller goes on with k_mv.
 */
static int mvt_launch(struct cuda_backend *be, CUstream st, int dt, struct cuda_mv_args *a)
{
	bool swiglu = a->mode == CUDA_MV_SWIGLU;
	uint32_t kch = dt == CUDA_DT_INT4 ? 128 : 64, nch = a->cols / kch;
	uint32_t tiles, nks;
	void *args[] = { a };

	if ((dt != CUDA_DT_FP8 && dt != CUDA_DT_INT4) || a->cols % kch || !be->mvt ||
	    a->nt < 2 || a->nt > 16)
		return 1;
	tiles = mv_tiles(a, swiglu ? 32 : 64, swiglu);
	nks = cuda_mvt_split(be, tiles, nch, 64 * CUDA_MVT_SLICE / kch);
	if (nks > 1 && (!a->part || !a->sem || (size_t)tiles * nks > a->part_cap))
		return 1;
	return launch(be, st, be->f_mvt[dt == CUDA_DT_INT4][a->nt > 8], tiles, nks, 1, 128, args);
}

/*
 * k_mvt's column split for @tiles row tiles of @nch chunks: at least the
 * slices of @per chunks its shared memory holds, more until about 4
 * blocks per SM (slices of 2 chunks at the least).  A function of the
 * shape alone, so a product's sum order does not depend on how many
 * tokens share the step.
 */
uint32_t cuda_mvt_split(const struct cuda_backend *be, uint32_t tiles, uint32_t nch,
			uint32_t per)
{
	uint32_t need = (nch + per - 1) / per;
	uint32_t tgt = (4 * (uint32_t)be->sm_count + tiles - 1) / MAX(tiles, 1u);

	tgt = MIN(tgt, MAX(nch / 2, 1u));
	return MAX(MAX(need, tgt), 1u);
}

/* Partial-sum tiles k_mvt needs for the model's largest FP8 or INT4
 * product (counted in FP8's 64-column chunks, which split at least as
 * finely as INT4's 128); 0 when no matrix is either (k_mvt is not used). */
uint32_t cuda_mvt_part_tiles(const struct cuda_model *cm)
{
	const struct eng_layer_weights *w = &cm->m->layers[0];
	const struct eng_tensor *t[4] = { &w->wq, &w->w_gate, &w->w_down, &cm->m->lm_head };
	/* rows, rows per tile, columns of: QKV, O, gate/up, down, LM head */
	const uint32_t sh[5][3] = {
		{ cm->q_dim + 2 * cm->kv_dim, 64, cm->hidden },
		{ cm->hidden, 64, cm->q_dim },
		{ cm->ffn, 32, cm->hidden },
		{ cm->hidden, 64, cm->ffn },
		{ cm->vocab, 64, cm->hidden },
	};
	size_t need = 0;
	bool any = false;

	for (int i = 0; i < 4; i++)
		any |= t[i]->dtype == ENG_DT_FP8_E4M3 || t[i]->dtype == ENG_DT_INT4_G128;
	if (!any)
		return 0;
	for (int i = 0; i < 5; i++) {
		uint32_t tiles = (sh[i][0] + sh[i][1] - 1) / sh[i][1] + 2;	/* part ends */

		need = MAX(need, (size_t)tiles * cuda_mvt_split(cm->be, tiles, sh[i][2] / 64,
								CUDA_MVT_SLICE));
	}
	return (uint32_t)need;
}

/*
 * The tensor-core GEMM (k_mma.cuh): the pre-pass writes x as f16 (bf16)
 * halves into the workspace, then one launch of 64-token x 128-row tiles
 * over every part.  SWIGLU of two equal parts: tiles of 64 gate rows and
 * the same 64 up rows, silu(gate) * up stored by the GEMM's epilogue
 * (mm->swiglu; else two stores and k_swiglu, as k_mm's).  1: not taken
 * (no kernel for the dtype, or the workspace is too small), the caller
 * goes on with k_mm.
 */
static int mma_launch(struct cuda_backend *be, const struct cuda_mma *mm, CUstream st,
		      int dt, struct cuda_mv_args *a)
{
	uint32_t ldk = ALIGN_UP(a->cols, (uint32_t)CUDA_MMA_TK), nt = a->nt;
	size_t half = (size_t)nt * ldk * 2;
	uint32_t flags = (dt == CUDA_DT_BF16 ? 1u : 0u) | (dt == CUDA_DT_INT4 ? 2u : 0u);
	struct cuda_mma_args m;
	void *px = (void *)a->x, *pxh, *pxl, *pxs;
	void *qargs[] = { &px, &a->ldx, &a->cols, &ldk, &flags, &pxh, &pxl, &pxs };
	void *args[] = { a, &m };
	uint32_t mode = a->mode, tiles;
	bool fuse = mode == CUDA_MV_SWIGLU && mm && mm->swiglu && a->n_parts == 2 &&
		    a->rows[0] == a->rows[1];
	int rc;

	if (!mm || !mm->split || dt < 0 || dt >= CUDA_N_DT || !be->f_mma[dt][0] ||
	    half * mm->split + 4 * (size_t)nt > mm->bytes)
		return 1;
	memset(&m, 0, sizeof(m));
	m.xh = DP(mm->ws);
	m.xl = mm->split == 2 ? DP(mm->ws + half) : NULL;
	m.xs = DP(mm->ws + half * mm->split);
	m.ldk = ldk;
	pxh = (void *)m.xh, pxl = (void *)m.xl, pxs = (void *)m.xs;
	tiles = mv_tiles(a, fuse ? CUDA_MMA_TN / 2 : CUDA_MMA_TN, fuse);
	rc = launch(be, st, be->f_mma_xq, nt, 1, 1, 256, qargs);
	if (rc)
		return rc;
	if (mode == CUDA_MV_SWIGLU && !fuse)
		a->mode = CUDA_MV_STORE;
	rc = launch(be, st, be->f_mma[dt][mm->split - 1], (nt + CUDA_MMA_TM - 1) / CUDA_MMA_TM,
		    tiles, 1, 256, args);
	a->mode = mode;
	if (!rc && mode == CUDA_MV_SWIGLU && !fuse)
		rc = swiglu_launch(be, st, a);
	if (!rc)
		__atomic_fetch_add(&be->ctr[CTR_mma_gemms], 1, __ATOMIC_RELAXED);
	return rc;
}

int cuda_mv_launch_mma(struct cuda_backend *be, struct cuda_lt *lt, const struct cuda_mma *mm,
		       CUstream st, int dt, struct cuda_mv_args *a)
{
	bool gemv = a->nt <= 2 * CUDA_MV_NT_MAX;
	/* rows per unit: GEMM tile, or the GEMV's rows per block (kernels.cu
	 * mv_rows) */
	uint32_t unit = gemv ? 4 : CUDA_MM_TILE;
	uint32_t tiles;
	void *args[] = { a };

	if (lt && !gemv) {
		int rc = cuda_lt_mv(lt, st, dt, a);

		if (rc <= 0)
			return rc;	/* done, or the backend is down */
	}
	if (mm && !gemv) {
		int rc = mma_launch(be, mm, st, dt, a);

		if (rc <= 0)
			return rc;
	}
	if (gemv) {
		int rc = mvt_launch(be, st, dt, a);

		if (rc <= 0)
			return rc;
	}
	/* GEMV: the warps of part 0 do both SWIGLU matrices */
	tiles = mv_tiles(a, unit, gemv && a->mode == CUDA_MV_SWIGLU);
	if (gemv) {
		unsigned ni = a->nt <= 1 ? 0 : a->nt <= 2 ? 1 : a->nt <= 4 ? 2 : 3;
		unsigned nt = 1u << ni;

		return launch(be, st, be->f_mv[dt][ni], tiles, (a->nt + nt - 1) / nt, 1,
			      32 * CUDA_MV_WARPS, args);
	}
	if (a->mode == CUDA_MV_SWIGLU) {
		int rc;

		a->mode = CUDA_MV_STORE;
		rc = launch(be, st, be->f_mm[dt], tiles,
			    (a->nt + CUDA_MM_TILE - 1) / CUDA_MM_TILE, 1, 256, args);
		a->mode = CUDA_MV_SWIGLU;
		return rc ?: swiglu_launch(be, st, a);
	}
	return launch(be, st, be->f_mm[dt], tiles,
		      (a->nt + CUDA_MM_TILE - 1) / CUDA_MM_TILE, 1, 256, args);
}

int cuda_mv_launch_lt(struct cuda_backend *be, struct cuda_lt *lt, CUstream st,
		      int dt, struct cuda_mv_args *a)
{
	return cuda_mv_launch_mma(be, lt, NULL, st, dt, a);
}

int cuda_mv_launch(struct cuda_backend *be, CUstream st, int dt,
		   struct cuda_mv_args *a)
{
	return cuda_mv_launch_mma(be, NULL, NULL, st, dt, a);
}

/* The model's tensor-core GEMM, or NULL (VELO_CUDA_MMA=0). */
static const struct cuda_mma *mma_of(const struct cuda_model *cm)
{
	return cm->mma.split ? &cm->mma : NULL;
}

static void mv_part(struct cuda_mv_args *a, const struct cuda_tensor *w,
		    CUdeviceptr bias, CUdeviceptr y, uint32_t ldy)
{
	uint32_t p = a->n_parts++;

	a->w[p] = DP(w->data);
	a->scales[p] = DP(w->scales);
	a->bias[p] = DP(bias);
	a->y[p] = DP(y);
	a->rows[p] = w->rows;
	a->ldy[p] = ldy;
}

static void mv_init(const struct cuda_model *cm, struct cuda_mv_args *a, CUdeviceptr x,
		    uint32_t ldx, uint32_t cols, uint32_t nt, uint32_t mode)
{
	memset(a, 0, sizeof(*a));
	a->part = DP(cm->mvt_part);
	a->sem = DP(cm->mvt_sem);
	a->part_cap = cm->mvt_cap;
	a->x = DP(x);
	a->ldx = ldx;
	a->cols = cols;
	a->nt = nt;
	a->mode = mode;
}

/* One matrix, or parts of one dtype in one launch, else one by one. */
static int mv_parts(struct cuda_model *cm, struct cuda_lt *lt, struct cuda_mv_args *a,
		    const struct cuda_tensor *const *w)
{
	struct cuda_backend *be = cm->be;
	bool same = true;

	for (uint32_t p = 1; p < a->n_parts; p++)
		same &= w[p]->dt == w[0]->dt;
	if (same)
		return cuda_mv_launch_mma(be, lt, mma_of(cm), cm->st, w[0]->dt, a);
	for (uint32_t p = 0; p < a->n_parts; p++) {
		struct cuda_mv_args one = *a;

		one.n_parts = 1;
		one.w[0] = a->w[p];
		one.scales[0] = a->scales[p];
		one.bias[0] = a->bias[p];
		one.y[0] = a->y[p];
		one.rows[0] = a->rows[p];
		one.ldy[0] = a->ldy[p];
		if (cuda_mv_launch_mma(be, lt, mma_of(cm), cm->st, w[p]->dt, &one))
			return -EIO;
	}
	return 0;
}

static int rmsnorm(struct cuda_model *cm, CUdeviceptr x, CUdeviceptr idx,
		   CUdeviceptr w, CUdeviceptr out, uint32_t rows)
{
	void *px = DP(x), *pi = DP(idx), *pw = DP(w), *po = DP(out);
	uint32_t n = cm->hidden;
	float eps = cm->eps;
	void *args[] = { &px, &pi, &pw, &po, &n, &eps };

	return launch(cm->be, cm->st, cm->be->f_rmsnorm, rows, 1, 1, 256, args);
}

static int layer(struct cuda_model *cm, uint32_t l, uint32_t nsplit)
{
	struct cuda_backend *be = cm->be;
	const struct cuda_layer *d = &cm->layers[l];
	const struct cuda_in_layout *in = &cm->in;
	uint32_t T = cm->T;
	size_t kvo = (size_t)l * cm->kv_layer_elems * cm->kv_esz;
	struct cuda_mv_args a;
	struct cuda_rope_args ra;
	struct cuda_attn_args aa;
	void *rargs[] = { &ra }, *aargs[] = { &aa };
	const struct cuda_tensor *w3[3];
	int rc;

	rc = rmsnorm(cm, cm->x, 0, d->attn_norm, cm->xb, T);
	if (rc)
		return rc;
	mv_init(cm, &a, cm->xb, cm->hidden, cm->hidden, T, CUDA_MV_STORE);
	mv_part(&a, &d->wq, d->bq, cm->q, cm->q_dim);
	mv_part(&a, &d->wk, d->bk, cm->k, cm->kv_dim);
	mv_part(&a, &d->wv, d->bv, cm->v, cm->kv_dim);
	w3[0] = &d->wq, w3[1] = &d->wk, w3[2] = &d->wv;
	rc = mv_parts(cm, cm->lt, &a, w3);
	if (rc)
		return rc;

	memset(&ra, 0, sizeof(ra));
	ra.q = DP(cm->q);
	ra.k = DP(cm->k);
	ra.v = DP(cm->v);
	ra.kc = DP(cm->kc + kvo);
	ra.vc = DP(cm->vc + kvo);
	ra.cos_t = DP(cm->rope_cos);
	ra.sin_t = DP(cm->rope_sin);
	ra.tok_pos = DP(cm->d_in + 4 * in->tok_pos);
	ra.tok_blk = DP(cm->d_in + 4 * in->tok_blk);
	ra.tok_slot = DP(cm->d_in + 4 * in->tok_slot);
	ra.blk_stride = cm->kv_blk_elems;
	ra.n_heads = cm->n_heads;
	ra.n_kv = cm->n_kv;
	ra.hd = cm->hd;
	ra.B = cm->B;
	ra.kv_bf16 = cm->kv_bf16;
	rc = launch(be, cm->st, be->f_rope, T, 1, 1, 1024, rargs);
	if (rc)
		return rc;

	memset(&aa, 0, sizeof(aa));
	aa.q = DP(cm->q);
	aa.out = DP(cm->att);
	aa.kc = DP(cm->kc + kvo);
	aa.vc = DP(cm->vc + kvo);
	aa.tok_pos = DP(cm->d_in + 4 * in->tok_pos);
	aa.tok_seq = DP(cm->d_in + 4 * in->tok_seq);
	aa.tables = DP(cm->d_in + 4 * in->tables);
	aa.part = DP(cm->part);
	aa.blk_stride = cm->kv_blk_elems;
	aa.table_ld = cm->table_ld;
	aa.q_ld = cm->q_dim;
	aa.n_heads = cm->n_heads;
	aa.group = cm->n_heads / cm->n_kv;
	aa.hd = cm->hd;
	aa.b_shift = cm->b_shift;
	aa.window = cm->window;
	aa.nsplit = nsplit;
	aa.scale = cm->att_scale;
	if (cm->flash_step) {
		void *pt = DP(cm->d_in + 4 * in->tiles);
		void *fargs[] = { &aa, &pt };

		rc = launch(be, cm->st, be->f_flash[cm->kv_bf16], cm->n_tiles, cm->n_heads, 1,
			    128, fargs);
		nsplit = 1;	/* no merge */
	} else {
		rc = launch(be, cm->st, be->f_attn[cm->kv_bf16], cm->n_heads, T, nsplit, 128,
			    aargs);
	}
	if (!rc && nsplit > 1)
		rc = launch(be, cm->st, be->f_merge, cm->n_heads, T, 1,
			    MIN(ALIGN_UP(cm->hd, 32u), 256u), aargs);
	if (rc)
		return rc;

	mv_init(cm, &a, cm->att, cm->q_dim, cm->q_dim, T, CUDA_MV_ADD);
	mv_part(&a, &d->wo, d->bo, cm->x, cm->hidden);
	w3[0] = &d->wo;
	rc = mv_parts(cm, cm->lt, &a, w3) ?: rmsnorm(cm, cm->x, 0, d->ffn_norm, cm->xb, T);
	if (rc)
		return rc;

	if (d->w_gate.dt == d->w_up.dt) {
		mv_init(cm, &a, cm->xb, cm->hidden, cm->hidden, T, CUDA_MV_SWIGLU);
		mv_part(&a, &d->w_gate, 0, cm->hb, cm->ffn);
		mv_part(&a, &d->w_up, 0, cm->hb2, cm->ffn);
		rc = cuda_mv_launch_mma(be, cm->lt, mma_of(cm), cm->st, d->w_gate.dt, &a);
	} else {
		mv_init(cm, &a, cm->xb, cm->hidden, cm->hidden, T, CUDA_MV_STORE);
		mv_part(&a, &d->w_gate, 0, cm->hb, cm->ffn);
		mv_part(&a, &d->w_up, 0, cm->hb2, cm->ffn);
		w3[0] = &d->w_gate, w3[1] = &d->w_up;
		rc = mv_parts(cm, cm->lt, &a, w3) ?: swiglu_launch(be, cm->st, &a);
	}
	if (rc)
		return rc;

	mv_init(cm, &a, cm->hb, cm->ffn, cm->ffn, T, CUDA_MV_ADD);
	mv_part(&a, &d->w_down, 0, cm->x, cm->hidden);
	w3[0] = &d->w_down;
	return mv_parts(cm, cm->lt, &a, w3);
}

/*
 * Position splits: about 64 positions per block for the longest sequence,
 * at most 64 splits, and no more than the partials workspace holds for
 * this many tokens.  A prompt's tokens already give n_heads x T blocks.
 * (16 positions per split made k_attn 9.3 -> 7.4 us per layer at 600
 * positions on an H200 but its merge 3.5 -> 5.9 us: no gain.)
 */
uint32_t cuda_att_splits(const struct cuda_model *cm, uint32_t max_len)
{
	uint32_t n = cm->nsplit_force ? cm->nsplit_force : (max_len + 63) / 64;
	size_t cap = cm->part_slots / ((size_t)cm->T * cm->n_heads);

	n = MIN(n, 64u);
	n = (uint32_t)MIN((size_t)n, cap);
	return n ? n : 1;
}

int cuda_forward(struct cuda_model *cm, uint32_t max_len)
{
	struct cuda_backend *be = cm->be;
	const struct cuda_in_layout *in = &cm->in;
	uint32_t nsplit = cuda_att_splits(cm, max_len), nl = cm->n_logits;
	void *pe = DP(cm->embed.data), *ps = DP(cm->embed.scales);
	int dt = cm->embed.dt;
	uint32_t cols = cm->hidden;
	void *ptok = DP(cm->d_in + 4 * in->tok_id), *px = DP(cm->x);
	void *eargs[] = { &pe, &ps, &dt, &cols, &ptok, &px };
	int rc;

	rc = launch(be, cm->st, be->f_embed, cm->T, 1, 1, 256, eargs);
	for (uint32_t l = 0; l < cm->n_layers && !rc; l++)
		rc = layer(cm, l, nsplit);
	if (rc || !nl)
		return rc;
	{
		struct cuda_mv_args a;
		void *pl = DP(cm->logits), *pt = DP(cm->d_tok);
		uint32_t V = cm->vocab;
		void *gargs[] = { &pl, &V, &pt };
		const struct cuda_tensor *w1[1] = { &cm->lm_head };

		rc = rmsnorm(cm, cm->x, cm->d_in + 4 * in->logit_tok, cm->final_norm,
			     cm->xl, nl);
		mv_init(cm, &a, cm->xl, cm->hidden, cm->hidden, nl, CUDA_MV_STORE);
		mv_part(&a, &cm->lm_head, 0, cm->logits, cm->vocab);
		/* the LM head's output holds seqs_max rows only: never padded
		 * to a cuBLASLt bucket */
		rc = rc ?: mv_parts(cm, NULL, &a, w1) ?:
		     launch(be, cm->st, be->f_argmax, nl, 1, 1, 1024, gargs);
	}
	return rc;
}
