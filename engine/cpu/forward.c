// SPDX-License-Identifier: MIT
/*
 * forward.c — the Llama-family forward pass of one batch on the CPU:
 * embeddings, per layer RMSNorm -> QKV (+bias) -> RoPE -> paged-KV
 * attention (grouped query) -> O (+bias) + residual -> RMSNorm -> SwiGLU
 * MLP + residual; then the final norm and the LM head for the sequences
 * that want logits only.
 *
 * Every op is one pool job: matrix products split by output rows (each
 * worker streams its own slice of the weights: decode is bandwidth bound
 * and a row split reads each weight exactly once; Q/K/V split by heads so
 * that RoPE and the KV store ride along), attention handed out
 * dynamically in (token, head) items because their cost grows with the
 * position.  The norms are recomputed by each worker of the job that
 * consumes them rather than run as a job of their own.  5 jobs per layer
 * (7 with INT4 O / down projections); an empty job's round trip is ~0.5
 * us on 2 cores (velo-bench-engine), under 0.5 % of a 100M-model decode
 * step.
 *
 * Numerics follow HF transformers' float32 forward: RMSNorm as
 * w * (x * rsqrt(mean(x^2) + eps)) (mean taken in double, then rounded),
 * rotate-half RoPE with float32 angles pos * inv_freq, softmax(q.k *
 * head_dim^-0.5) with the causal mask (and the sliding window: position p
 * sees p - window + 1 .. p), silu(gate) * up.
 */
#include <errno.h>
#include <math.h>
#include <string.h>

#include <velo/compiler.h>

#include "../core/model_check.h"
#include "../core/tensor.h"
#include "cpu_priv.h"

/* ---- validation (before anything is written) ---------------------------- */

static int validate(struct cpu_model *cm, const struct eng_batch *b)
{
	const struct eng_batch_limits lim = {
		.bud = &cm->bud, .ctx_max = cm->ctx_max, .vocab = cm->vocab,
		.block_tokens = cm->B, .block_shift = cm->b_shift,
	};

	return eng_batch_check(b, &lim, cm->blk_stamp, &cm->stamp, &cm->T);
}

/* ---- per-token jobs ----------------------------------------------------- */

static void rmsnorm(const float *x, const float *w, float *o, uint32_t n,
		    float eps)
{
	double ss = 0.0;
	float r;

	for (uint32_t i = 0; i < n; i++)
		ss += (double)x[i] * x[i];
	r = 1.0f / sqrtf((float)(ss / n) + eps);
	for (uint32_t i = 0; i < n; i++)
		o[i] = w[i] * (x[i] * r);
}

static void embed_row(const struct eng_tensor *e, uint32_t id, float *o)
{
	const uint8_t *p = (const uint8_t *)e->data +
			   (size_t)id * eng_row_bytes(e->dtype, e->cols);

	if (e->dtype == ENG_DT_F32) {
		memcpy(o, p, (size_t)e->cols * 4);
	} else if (e->dtype == ENG_DT_BF16) {
		const uint16_t *h = (const uint16_t *)p;

		for (uint32_t i = 0; i < e->cols; i++)
			o[i] = cpu_bf16_to_f32(h[i]);
	} else {
		for (uint32_t i = 0; i < e->cols; i++)
			o[i] = cpu_weight_at(e, id, i);
	}
}

static void job_embed(void *arg, uint32_t wid, uint32_t nw)
{
	struct cpu_model *cm = arg;
	uint32_t lo, hi;

	cpu_split(cm->T, 1, wid, nw, &lo, &hi);
	for (uint32_t t = lo; t < hi; t++)
		embed_row(&cm->m->embed, cm->tok_id[t], cm->x + (size_t)t * cm->hidden);
}

/* INT4 permutation of [T][cols] rows (attention output, MLP hidden). */
static void job_perm(void *arg, uint32_t wid, uint32_t nw)
{
	struct cpu_model *cm = arg;
	uint32_t lo, hi, n = cm->perm_cols;

	cpu_split(cm->T, 1, wid, nw, &lo, &hi);
	for (uint32_t t = lo; t < hi; t++)
		cm->kern->x_perm(cm->perm_src + (size_t)t * n,
				 cm->xp + (size_t)t * cm->kmax, n);
}

static inline size_t kv_off(const struct cpu_model *cm, uint32_t layer,
			    uint32_t blk, uint32_t kvh, uint32_t slot)
{
	return (size_t)layer * cm->kv_layer_stride +
	       (size_t)blk * cm->kv_block_stride +
	       ((size_t)kvh * cm->B + slot) * cm->hd;
}

static inline void rope(float *v, const float *c, const float *s, uint32_t half)
{
	for (uint32_t i = 0; i < half; i++) {
		float a = v[i], b = v[i + half];

		v[i] = a * c[i] - b * s[i];
		v[i + half] = b * c[i] + a * s[i];
	}
}

/* Items of (token, head), handed out 4 at a time. */
#define ATT_CHUNK 4

static void job_attn(void *arg, uint32_t wid, uint32_t nw)
{
	struct cpu_model *cm = arg;
	const struct cpu_kern *kr = cm->kern;
	uint32_t n_items = cm->T * cm->n_heads, group = cm->n_heads / cm->n_kv;
	uint32_t hd = cm->hd;
	float *sc = cm->scores + (size_t)wid * cm->scores_stride;

	for (;;) {
		uint32_t i0 = __atomic_fetch_add(&cm->att_next, ATT_CHUNK,
						 __ATOMIC_RELAXED);

		if (i0 >= n_items)
			return;
		for (uint32_t it = i0; it < MIN(i0 + ATT_CHUNK, n_items); it++) {
			uint32_t t = it / cm->n_heads, h = it % cm->n_heads;
			uint32_t kvh = h / group, n = cm->tok_pos[t] + 1;
			const struct eng_seq_in *sq = &cm->batch->seqs[cm->tok_seq[t]];
			const float *q = cm->q + (size_t)t * cm->q_dim + h * hd;
			float *o = cm->att + (size_t)t * cm->q_dim + h * hd;
			float mx = -INFINITY, sum = 0.0f, inv;
			uint32_t j0 = cm->window && n > cm->window ? n - cm->window : 0;

			/* scores of positions j0 .. n-1, block by block */
			for (uint32_t j = j0; j < n;) {
				uint32_t blk = sq->blocks[j >> cm->b_shift];
				uint32_t u0 = j & (cm->B - 1), m = MIN(cm->B - u0, n - j);
				const float *kb = cm->kc + kv_off(cm, cm->layer, blk, kvh, u0);

				for (uint32_t u = 0; u < m; u++) {
					float s = kr->dot(q, kb + (size_t)u * hd, hd) *
						  cm->att_scale;

					sc[j - j0 + u] = s;
					mx = s > mx ? s : mx;
				}
				j += m;
			}
			for (uint32_t j = 0; j < n - j0; j++) {
				sc[j] = expf(sc[j] - mx);
				sum += sc[j];
			}
			inv = 1.0f / sum;
			memset(o, 0, hd * 4);
			for (uint32_t j = j0; j < n;) {
				uint32_t blk = sq->blocks[j >> cm->b_shift];
				uint32_t u0 = j & (cm->B - 1), m = MIN(cm->B - u0, n - j);
				const float *vb = cm->vc + kv_off(cm, cm->layer, blk, kvh, u0);

				for (uint32_t u = 0; u < m; u++)
					kr->axpy(sc[j - j0 + u] * inv, vb + (size_t)u * hd, o, hd);
				j += m;
			}
		}
	}
}

/* ---- matrix products ---------------------------------------------------- */

/* y[t][r] for r in [r0, r1) of one weight matrix, on worker wid. */
static void mm_rows(struct cpu_model *cm, uint32_t wid, const struct eng_tensor *w,
		    const float *x, size_t ldx, const float *xp, size_t ldxp,
		    uint32_t nt, float *y, size_t ldy, uint32_t r0, uint32_t r1)
{
	cpu_mm_rows(cm->kern, w, x, ldx, xp, ldxp, nt, y, ldy, r0, r1,
		    cm->tile + (size_t)wid * cm->tile_stride);
}

static inline float silu(float g)
{
	return g / (1.0f + expf(-g));
}

/*
 * Q, K, V by heads: unit u is one head of q, then of k, then of v (hd rows
 * each, equal cost).  The worker that computes a head also adds its bias,
 * rotates it (q, k) and stores it in the token's KV slot (k, v): no extra
 * pass, no barrier before attention but the job's end.
 */
static void qkv_heads(struct cpu_model *cm, uint32_t wid, uint32_t nw,
		      const float *x, size_t ldx, const float *xp, size_t ldxp)
{
	const struct cpu_mm *mm = &cm->mm;
	uint32_t hd = cm->hd, half = hd / 2, u, units = cm->n_heads + 2 * cm->n_kv;

	while ((u = __atomic_fetch_add(&cm->mm_next, 1, __ATOMIC_RELAXED)) < units) {
		uint32_t p = u < cm->n_heads ? 0 : u < cm->n_heads + cm->n_kv ? 1 : 2;
		uint32_t h = p == 0 ? u : p == 1 ? u - cm->n_heads :
			     u - cm->n_heads - cm->n_kv;
		const struct cpu_mm_part *pt = &mm->part[p];
		uint32_t r0 = h * hd;

		mm_rows(cm, wid, pt->w, x, ldx, xp, ldxp, mm->nt, pt->y, pt->ldy,
			r0, r0 + hd);
		for (uint32_t t = 0; t < mm->nt; t++) {
			float *y = pt->y + t * pt->ldy + r0;
			uint32_t pos = cm->tok_pos[t];
			const struct eng_seq_in *sq = &cm->batch->seqs[cm->tok_seq[t]];
			size_t o;

			if (pt->bias)
				for (uint32_t i = 0; i < hd; i++)
					y[i] += pt->bias[r0 + i];
			if (p < 2)
				rope(y, cm->rope_cos + (size_t)pos * half,
				     cm->rope_sin + (size_t)pos * half, half);
			if (p == 0)
				continue;
			o = kv_off(cm, cm->layer, sq->blocks[pos >> cm->b_shift], h,
				   pos & (cm->B - 1));
			memcpy((p == 1 ? cm->kc : cm->vc) + o, y, hd * 4);
		}
	}
}

static void mm_chunk(struct cpu_model *cm, uint32_t wid, const float *x,
		     size_t ldx, const float *xp, size_t ldxp, uint32_t lo,
		     uint32_t hi);

static inline bool mm_grab(struct cpu_model *cm, uint32_t total, uint32_t chunk,
			   uint32_t *lo, uint32_t *hi)
{
	uint32_t a = __atomic_fetch_add(&cm->mm_next, chunk, __ATOMIC_RELAXED);

	if (a >= total)
		return false;
	*lo = a;
	*hi = MIN(a + chunk, total);
	return true;
}

static void job_mm(void *arg, uint32_t wid, uint32_t nw)
{
	struct cpu_model *cm = arg;
	const struct cpu_mm *mm = &cm->mm;
	const float *x = mm->x, *xp = mm->xp;
	size_t ldx = mm->ldx, ldxp = cm->kmax;
	uint32_t lo, hi, total = mm->qkv ? cm->n_heads + 2 * cm->n_kv :
				 mm->swiglu ? mm->part[0].w->rows : mm->rows;
	/* Rows handed out in chunks (about 4 per worker, multiples of 16)
	 * from a shared counter: a worker the OS preempts (a shared or
	 * oversubscribed machine) delays the job by one chunk, not by its
	 * whole share.  Per-row results do not depend on the split. */
	uint32_t chunk = ALIGN_UP(MAX(16u, total / (4 * nw)), 16u);

	if (__atomic_load_n(&cm->mm_next, __ATOMIC_RELAXED) >= total)
		return;		/* late: the others took everything */
	if (mm->norm_w) {
		/* Every worker normalises every token for itself (T x hidden,
		 * against T x hidden x rows for its matrix share): one
		 * barrier less per use. */
		uint32_t H = cm->hidden;
		float *xb = cm->xbw + (size_t)wid * cm->xbw_stride;
		float *xq = cm->xpw ? cm->xpw + (size_t)wid * cm->xbw_stride : NULL;

		for (uint32_t t = 0; t < mm->nt; t++) {
			rmsnorm(mm->x + t * mm->ldx, mm->norm_w, xb + (size_t)t * H, H,
				cm->m->cfg.norm_eps);
			if (mm->norm_perm)
				cm->kern->x_perm(xb + (size_t)t * H, xq + (size_t)t * H, H);
		}
		x = xb;
		xp = xq;
		ldx = ldxp = H;
	}
	if (mm->qkv) {
		qkv_heads(cm, wid, nw, x, ldx, xp, ldxp);
		return;
	}
	if (mm->swiglu) {
		/* gate and up rows [lo, hi) on the same worker: fused epilogue */
		const struct cpu_mm_part *g = &mm->part[0], *u = &mm->part[1];

		while (mm_grab(cm, g->w->rows, chunk, &lo, &hi)) {
			mm_rows(cm, wid, g->w, x, ldx, xp, ldxp, mm->nt, g->y, g->ldy, lo, hi);
			mm_rows(cm, wid, u->w, x, ldx, xp, ldxp, mm->nt, u->y, u->ldy, lo, hi);
			for (uint32_t t = 0; t < mm->nt; t++) {
				float *gy = g->y + t * g->ldy, *uy = u->y + t * u->ldy;

				for (uint32_t r = lo; r < hi; r++)
					gy[r] = silu(gy[r]) * uy[r];
			}
		}
		return;
	}

	while (mm_grab(cm, mm->rows, chunk, &lo, &hi))
		mm_chunk(cm, wid, x, ldx, xp, ldxp, lo, hi);
}

/* Rows [lo, hi) of the concatenated parts: product, bias, residual. */
static void mm_chunk(struct cpu_model *cm, uint32_t wid, const float *x,
		     size_t ldx, const float *xp, size_t ldxp, uint32_t lo,
		     uint32_t hi)
{
	const struct cpu_mm *mm = &cm->mm;
	uint32_t base = 0;

	for (uint32_t p = 0; p < mm->n_part; p++) {
		const struct cpu_mm_part *pt = &mm->part[p];
		uint32_t rows = pt->w->rows;
		uint32_t a = MAX(lo, base), b = MIN(hi, base + rows);

		base += rows;
		if (a >= b)
			continue;
		a -= base - rows;
		b -= base - rows;
		mm_rows(cm, wid, pt->w, x, ldx, xp, ldxp, mm->nt, pt->y, pt->ldy, a, b);
		for (uint32_t t = 0; t < mm->nt; t++) {
			float *y = pt->y + t * pt->ldy;

			if (pt->bias)
				for (uint32_t r = a; r < b; r++)
					y[r] += pt->bias[r];
			if (mm->resid && p == 0) {
				float *xr = mm->resid + t * mm->ld_resid;

				for (uint32_t r = a; r < b; r++)
					xr[r] += y[r];
			}
		}
	}
}

static void mm_set(struct cpu_model *cm, const float *x, const float *xp,
		   size_t ldx, uint32_t nt)
{
	memset(&cm->mm, 0, sizeof(cm->mm));
	cm->mm_next = 0;
	cm->mm.x = x;
	cm->mm.xp = xp;
	cm->mm.ldx = ldx;
	cm->mm.nt = nt;
}

static void mm_add(struct cpu_model *cm, const struct eng_tensor *w,
		   const float *bias, float *y, size_t ldy)
{
	struct cpu_mm_part *p = &cm->mm.part[cm->mm.n_part++];

	p->w = w;
	p->bias = bias;
	p->y = y;
	p->ldy = ldy;
	cm->mm.rows += w->rows;
}

/* ---- the pass ----------------------------------------------------------- */

static void run_perm(struct cpu_model *cm, const float *src, uint32_t cols)
{
	cm->perm_src = src;
	cm->perm_cols = cols;
	cpu_pool_run(cm->be->pool, job_perm, cm);
}

/*
 * One layer in 5 jobs (7 when INT4 matrices need a permuted input):
 * norm + QKV + RoPE + KV store | attention | O + residual |
 * norm + gate/up + SwiGLU | down + residual.
 */
static void layer_forward(struct cpu_model *cm, uint32_t l)
{
	const struct eng_layer_weights *lw = &cm->m->layers[l];
	struct cpu_pool *pool = cm->be->pool;
	uint32_t T = cm->T;

	cm->layer = l;
	mm_set(cm, cm->x, NULL, cm->hidden, T);
	cm->mm.norm_w = cm->attn_norm + (size_t)l * cm->hidden;
	cm->mm.norm_perm = cm->perm_hidden;
	mm_add(cm, &lw->wq, cm->bq ? cm->bq + (size_t)l * cm->q_dim : NULL, cm->q, cm->q_dim);
	mm_add(cm, &lw->wk, cm->bk ? cm->bk + (size_t)l * cm->kv_dim : NULL, cm->k, cm->kv_dim);
	mm_add(cm, &lw->wv, cm->bv ? cm->bv + (size_t)l * cm->kv_dim : NULL, cm->v, cm->kv_dim);
	cm->mm.qkv = true;
	cpu_pool_run(pool, job_mm, cm);

	cm->att_next = 0;
	cpu_pool_run(pool, job_attn, cm);

	if (cm->perm_q)
		run_perm(cm, cm->att, cm->q_dim);
	mm_set(cm, cm->att, cm->xp, cm->q_dim, T);
	/* O projection into xb, then added to the residual */
	mm_add(cm, &lw->wo, cm->bo ? cm->bo + (size_t)l * cm->hidden : NULL, cm->xb, cm->hidden);
	cm->mm.resid = cm->x;
	cm->mm.ld_resid = cm->hidden;
	cpu_pool_run(pool, job_mm, cm);

	mm_set(cm, cm->x, NULL, cm->hidden, T);
	cm->mm.norm_w = cm->ffn_norm + (size_t)l * cm->hidden;
	cm->mm.norm_perm = cm->perm_hidden;
	mm_add(cm, &lw->w_gate, NULL, cm->hb, cm->ffn);
	mm_add(cm, &lw->w_up, NULL, cm->hb2, cm->ffn);
	cm->mm.swiglu = true;
	cpu_pool_run(pool, job_mm, cm);

	if (cm->perm_ffn)
		run_perm(cm, cm->hb, cm->ffn);
	mm_set(cm, cm->hb, cm->xp, cm->ffn, T);
	mm_add(cm, &lw->w_down, NULL, cm->xb, cm->hidden);
	cm->mm.resid = cm->x;
	cm->mm.ld_resid = cm->hidden;
	cpu_pool_run(pool, job_mm, cm);
}

int cpu_forward(struct cpu_model *cm, const struct eng_batch *b)
{
	uint32_t t = 0, nl = 0;
	int rc;

	cm->have_step = false;
	rc = validate(cm, b);
	if (rc)
		return rc;
	cm->batch = b;
	for (uint32_t s = 0; s < b->n_seqs; s++) {
		const struct eng_seq_in *q = &b->seqs[s];

		for (uint32_t i = 0; i < q->n_tokens; i++, t++) {
			cm->tok_id[t] = q->tokens[i];
			cm->tok_seq[t] = s;
			cm->tok_pos[t] = q->pos + i;
		}
		cm->seq_logit_row[s] = -1;
		if (q->flags & ENG_SEQ_LOGITS) {
			cm->seq_logit_row[s] = (int32_t)nl;
			cm->logit_tok[nl++] = t - 1;
		}
	}
	cm->n_logits = nl;

	cpu_pool_run(cm->be->pool, job_embed, cm);
	for (uint32_t l = 0; l < cm->n_layers; l++)
		layer_forward(cm, l);

	if (nl) {
		/* Final norm of the rows that want logits, then the LM head. */
		for (uint32_t i = 0; i < nl; i++) {
			float *o = cm->xl + (size_t)i * cm->hidden;

			rmsnorm(cm->x + (size_t)cm->logit_tok[i] * cm->hidden,
				cm->final_norm, o, cm->hidden, cm->m->cfg.norm_eps);
			if (cm->perm_lm)
				cm->kern->x_perm(o, cm->xlp + (size_t)i * cm->kmax,
						 cm->hidden);
		}
		mm_set(cm, cm->xl, cm->xlp, cm->hidden, nl);
		mm_add(cm, cm->lm_head, NULL, cm->logits, cm->vocab);
		cpu_pool_run(cm->be->pool, job_mm, cm);
	}
	cm->last_n_seqs = b->n_seqs;
	cm->have_step = true;
	return 0;
}

