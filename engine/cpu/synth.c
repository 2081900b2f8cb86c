// SPDX-License-Identifier: MIT
/*
 * synth.c — random models in memory (see synth.h).  Quantisation follows
 * velo-convert (tools/convert/quant.c) so that a synthetic FP8 or INT4
 * model exercises the kernels with the value ranges a converted one has:
 * FP8 scale max|row| / 448, INT4 scale f16(max|group| / 7) and
 * q = clamp(rint(w / scale), -8, 7).  About 100 M weights a second.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <velo/compiler.h>

#include "../core/image.h"
#include "kern.h"
#include "synth.h"

static void *s_alloc(struct eng_synth *s, size_t bytes)
{
	void *p;

	if (s->n_allocs == s->cap_allocs) {
		unsigned cap = s->cap_allocs ? 2 * s->cap_allocs : 64;
		void **a = realloc(s->allocs, cap * sizeof(*a));

		if (!a)
			return NULL;
		s->allocs = a;
		s->cap_allocs = cap;
	}
	if (posix_memalign(&p, 64, bytes ? bytes : 64))
		return NULL;
	s->allocs[s->n_allocs++] = p;
	return p;
}

static inline uint64_t xs(uint64_t *st)
{
	uint64_t x = *st;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*st = x;
	return x * 0x2545f4914f6cdd1dull;
}

/* Uniform in (-a, a). */
static inline float urand(uint64_t *st, float a)
{
	return ((float)(xs(st) >> 40) * 0x1.0p-24f * 2.0f - 1.0f) * a;
}

static int quant_row(enum eng_dtype dt, const float *w, uint32_t cols,
		     uint8_t *dst, void *scales)
{
	switch (dt) {
	case ENG_DT_F32:
		memcpy(dst, w, (size_t)cols * 4);
		return 0;
	case ENG_DT_BF16:
		for (uint32_t i = 0; i < cols; i++) {
			uint16_t h = eng_f32_to_bf16(w[i]);

			memcpy(dst + 2 * i, &h, 2);
		}
		return 0;
	case ENG_DT_F16:
		for (uint32_t i = 0; i < cols; i++) {
			uint16_t h = eng_f32_to_f16(w[i]);

			memcpy(dst + 2 * i, &h, 2);
		}
		return 0;
	case ENG_DT_FP8_E4M3: {
		float mx = 0.0f, sc;

		for (uint32_t i = 0; i < cols; i++)
			mx = fmaxf(mx, fabsf(w[i]));
		sc = mx > 0.0f ? mx / 448.0f : 1.0f;
		*(float *)scales = sc;
		for (uint32_t i = 0; i < cols; i++)
			dst[i] = eng_f32_to_fp8_e4m3(w[i] / sc);
		return 0;
	}
	case ENG_DT_INT4_G128: {
		uint16_t *gs = scales;

		memset(dst, 0, cols / 2);
		for (uint32_t g = 0; g < cols / ENG_INT4_GROUP; g++) {
			const float *wg = w + g * ENG_INT4_GROUP;
			float mx = 0.0f, sc;

			for (uint32_t i = 0; i < ENG_INT4_GROUP; i++)
				mx = fmaxf(mx, fabsf(wg[i]));
			gs[g] = eng_f32_to_f16(mx > 0.0f ? mx / 7.0f : 1.0f);
			sc = eng_f16_to_f32(gs[g]);
			for (uint32_t i = 0; i < ENG_INT4_GROUP; i++) {
				float q = rintf(wg[i] / sc);
				int qi = (int)fminf(7.0f, fmaxf(-8.0f, q)) + 8;
				uint32_t k = g * ENG_INT4_GROUP + i;

				dst[k / 2] |= (uint8_t)(qi << ((k & 1) * 4));
			}
		}
		return 0;
	}
	default:
		return -EINVAL;
	}
}

static int mk_matrix(struct eng_synth *s, struct eng_tensor *t, enum eng_dtype dt,
		     uint32_t rows, uint32_t cols, uint64_t *rng)
{
	size_t rb = eng_row_bytes(dt, cols);
	float a = sqrtf(3.0f / (float)cols);
	float *row;
	uint8_t *d;
	void *sc = NULL;

	if (dt == ENG_DT_INT4_G128 && cols % ENG_INT4_GROUP)
		return -EINVAL;
	d = s_alloc(s, rb * rows);
	if (dt == ENG_DT_FP8_E4M3)
		sc = s_alloc(s, (size_t)rows * 4);
	else if (dt == ENG_DT_INT4_G128)
		sc = s_alloc(s, (size_t)rows * (cols / ENG_INT4_GROUP) * 2);
	row = malloc((size_t)cols * 4);
	if (!d || !row || (dt >= ENG_DT_FP8_E4M3 && !sc)) {
		free(row);
		return -ENOMEM;
	}
	for (uint32_t r = 0; r < rows; r++) {
		void *rs = NULL;

		for (uint32_t i = 0; i < cols; i++)
			row[i] = urand(rng, a);
		if (dt == ENG_DT_FP8_E4M3)
			rs = (float *)sc + r;
		else if (dt == ENG_DT_INT4_G128)
			rs = (uint16_t *)sc + (size_t)r * (cols / ENG_INT4_GROUP);
		quant_row(dt, row, cols, d + r * rb, rs);
	}
	free(row);
	*t = (struct eng_tensor){ dt, rows, cols, d, sc };
	return 0;
}

static int mk_vector(struct eng_synth *s, struct eng_tensor *t, uint32_t n,
		     float base, uint64_t *rng)
{
	float *v = s_alloc(s, (size_t)n * 4);

	if (!v)
		return -ENOMEM;
	for (uint32_t i = 0; i < n; i++)
		v[i] = base + urand(rng, 0.1f);
	*t = (struct eng_tensor){ ENG_DT_F32, 1, n, v, NULL };
	return 0;
}

int eng_synth_build(struct eng_synth *s, const struct eng_model_config *cfg,
		    enum eng_dtype dt, uint64_t seed)
{
	const struct eng_model_config *c = cfg;
	uint32_t q = c->n_heads * c->head_dim, kv = c->n_kv_heads * c->head_dim;
	uint64_t rng = seed * 0x9e3779b97f4a7c15ull + 0x1234567;
	enum eng_dtype edt = dt == ENG_DT_F32 ? ENG_DT_F32 : ENG_DT_BF16;
	int rc;

	memset(s, 0, sizeof(*s));
	if (!c->n_layers || !c->hidden || !c->vocab_size || dt >= ENG_DT__COUNT)
		return -EINVAL;
	s->m.cfg = *cfg;
	s->m.layers = s_alloc(s, c->n_layers * sizeof(*s->m.layers));
	if (!s->m.layers)
		return -ENOMEM;
	memset(s->m.layers, 0, c->n_layers * sizeof(*s->m.layers));
	strcpy(s->m.name, "synthetic");
	rc = mk_matrix(s, &s->m.embed, edt, c->vocab_size, c->hidden, &rng);
	for (uint32_t l = 0; l < c->n_layers && !rc; l++) {
		struct eng_layer_weights *w = &s->m.layers[l];

		rc = mk_vector(s, &w->attn_norm, c->hidden, 1.0f, &rng) ?:
		     mk_matrix(s, &w->wq, dt, q, c->hidden, &rng) ?:
		     mk_matrix(s, &w->wk, dt, kv, c->hidden, &rng) ?:
		     mk_matrix(s, &w->wv, dt, kv, c->hidden, &rng) ?:
		     mk_matrix(s, &w->wo, dt, c->hidden, q, &rng) ?:
		     mk_vector(s, &w->ffn_norm, c->hidden, 1.0f, &rng) ?:
		     mk_matrix(s, &w->w_gate, dt, c->ffn, c->hidden, &rng) ?:
		     mk_matrix(s, &w->w_up, dt, c->ffn, c->hidden, &rng) ?:
		     mk_matrix(s, &w->w_down, dt, c->hidden, c->ffn, &rng);
		if (!rc && c->qkv_bias)
			rc = mk_vector(s, &w->bq, q, 0.0f, &rng) ?:
			     mk_vector(s, &w->bk, kv, 0.0f, &rng) ?:
			     mk_vector(s, &w->bv, kv, 0.0f, &rng);
		if (!rc && c->o_bias)
			rc = mk_vector(s, &w->bo, c->hidden, 0.0f, &rng);
	}
	if (!rc)
		rc = mk_vector(s, &s->m.final_norm, c->hidden, 1.0f, &rng);
	if (!rc && !c->tied_embeddings)
		rc = mk_matrix(s, &s->m.lm_head, dt, c->vocab_size, c->hidden, &rng);
	if (!rc && c->tied_embeddings)
		s->m.lm_head = s->m.embed;
	if (rc)
		eng_synth_free(s);
	return rc;
}

static int deq(struct eng_synth *s, struct eng_tensor *o, const struct eng_tensor *t)
{
	float *d;

	*o = *t;
	if (!t->data || t->rows == 1)
		return 0;
	d = s_alloc(s, (size_t)t->rows * t->cols * 4);
	if (!d)
		return -ENOMEM;
	for (uint32_t r = 0; r < t->rows; r++)
		for (uint32_t k = 0; k < t->cols; k++)
			d[(size_t)r * t->cols + k] = cpu_weight_at(t, r, k);
	*o = (struct eng_tensor){ ENG_DT_F32, t->rows, t->cols, d, NULL };
	return 0;
}

int eng_synth_dequant(struct eng_synth *s, const struct eng_model *src)
{
	const struct eng_model_config *c = &src->cfg;
	int rc;

	memset(s, 0, sizeof(*s));
	s->m = *src;
	s->m.layers = s_alloc(s, c->n_layers * sizeof(*s->m.layers));
	if (!s->m.layers)
		return -ENOMEM;
	rc = deq(s, &s->m.embed, &src->embed);
	for (uint32_t l = 0; l < c->n_layers && !rc; l++) {
		const struct eng_layer_weights *w = &src->layers[l];
		struct eng_layer_weights *o = &s->m.layers[l];

		*o = *w;
		rc = deq(s, &o->wq, &w->wq) ?: deq(s, &o->wk, &w->wk) ?:
		     deq(s, &o->wv, &w->wv) ?: deq(s, &o->wo, &w->wo) ?:
		     deq(s, &o->w_gate, &w->w_gate) ?: deq(s, &o->w_up, &w->w_up) ?:
		     deq(s, &o->w_down, &w->w_down);
	}
	if (!rc && src->lm_head.data && src->lm_head.data != src->embed.data)
		rc = deq(s, &s->m.lm_head, &src->lm_head);
	else if (!rc)
		s->m.lm_head = s->m.embed;
	if (rc)
		eng_synth_free(s);
	return rc;
}

int eng_synth_matrix(struct eng_synth *s, struct eng_tensor *t,
		     enum eng_dtype dt, uint32_t rows, uint32_t cols,
		     uint64_t seed)
{
	uint64_t rng = seed * 0x9e3779b97f4a7c15ull + 0x7654321;

	if (!rows || !cols || dt >= ENG_DT__COUNT)
		return -EINVAL;
	return mk_matrix(s, t, dt, rows, cols, &rng);
}

void eng_synth_free(struct eng_synth *s)
{
	for (unsigned i = 0; i < s->n_allocs; i++)
		free(s->allocs[i]);
	free(s->allocs);
	memset(s, 0, sizeof(*s));
}
