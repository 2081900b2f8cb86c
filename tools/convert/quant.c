// SPDX-License-Identifier: MIT
/*
 * quant.c — one row at a time from f32 to a stored dtype, with the error
 * against the source.  The rules are docs/model-format.md's; the decoders
 * used for the error are the loader's (image.c), so what is reported is
 * what a backend will see.
 *
 * Cost (gcc 12 -O2, x86-64-v2, one core of this machine): INT4 about
 * 2.5 ns per weight including the error statistics, FP8 about 3 ns, BF16
 * about 1 ns; a 1B model quantises in a few seconds on two cores.
 */
#include <errno.h>
#include <math.h>
#include <string.h>

#include <velo/compiler.h>

#include "convert.h"

void qstats_merge(struct qstats *into, const struct qstats *from)
{
	into->err2 += from->err2;
	into->ref2 += from->ref2;
	into->max_abs = MAX(into->max_abs, from->max_abs);
	into->n += from->n;
	into->nonfinite += from->nonfinite;
}

double qstats_rel_rms(const struct qstats *s)
{
	return s->ref2 > 0 ? sqrt(s->err2 / s->ref2) : 0.0;
}

/* Accumulate (w - d)^2, w^2 and max |w - d| over n values. */
static void stats_add(struct qstats *st, const float *w, const float *d,
		      uint32_t n)
{
	double e2 = 0, r2 = 0;
	float mx = 0;

	for (uint32_t i = 0; i < n; i++) {
		float e = w[i] - d[i];

		e2 += (double)e * e;
		r2 += (double)w[i] * w[i];
		mx = fmaxf(mx, fabsf(e));
	}
	st->err2 += e2;
	st->ref2 += r2;
	st->max_abs = MAX(st->max_abs, (double)mx);
	st->n += n;
}

static float absmax(const float *w, uint32_t n)
{
	float m = 0;

	for (uint32_t i = 0; i < n; i++)
		m = fmaxf(m, fabsf(w[i]));
	return m;
}

static bool all_finite(const float *w, uint32_t n)
{
	uint32_t bad = 0;

	for (uint32_t i = 0; i < n; i++)
		bad |= (eng_f32_bits(w[i]) & 0x7f800000u) == 0x7f800000u;
	return !bad;
}

int quant_row(enum eng_dtype dt, const float *src, uint32_t cols, void *dst,
	      void *scales, struct qstats *st)
{
	float deq[ENG_INT4_GROUP];

	if (!all_finite(src, cols)) {
		st->nonfinite++;
		return -ERANGE;
	}
	switch (dt) {
	case ENG_DT_F32:
		memcpy(dst, src, (size_t)cols * 4);
		stats_add(st, src, src, cols);
		return 0;
	case ENG_DT_BF16:
	case ENG_DT_F16: {
		uint16_t *o = dst;

		for (uint32_t i = 0; i < cols; i += ENG_INT4_GROUP) {
			uint32_t n = MIN(cols - i, (uint32_t)ENG_INT4_GROUP);

			for (uint32_t j = 0; j < n; j++) {
				uint16_t h = dt == ENG_DT_BF16 ?
					eng_f32_to_bf16(src[i + j]) :
					eng_f32_to_f16(src[i + j]);

				o[i + j] = h;
				deq[j] = dt == ENG_DT_BF16 ? eng_bf16_to_f32(h) :
							      eng_f16_to_f32(h);
			}
			stats_add(st, src + i, deq, n);
		}
		return 0;
	}
	case ENG_DT_FP8_E4M3: {
		uint8_t *o = dst;
		float mx = absmax(src, cols);
		float scale = mx / 448.0f;

		memcpy(scales, &scale, sizeof(scale));
		for (uint32_t i = 0; i < cols; i += ENG_INT4_GROUP) {
			uint32_t n = MIN(cols - i, (uint32_t)ENG_INT4_GROUP);

			for (uint32_t j = 0; j < n; j++) {
				uint8_t q = scale > 0 ?
					eng_f32_to_fp8_e4m3(src[i + j] / scale) : 0;

				o[i + j] = q;
				deq[j] = eng_fp8_e4m3_to_f32(q) * scale;
			}
			stats_add(st, src + i, deq, n);
		}
		return 0;
	}
	case ENG_DT_INT4_G128: {
		uint8_t *o = dst;
		uint16_t *sc = scales;

		for (uint32_t g = 0; g < cols / ENG_INT4_GROUP; g++) {
			const float *w = src + g * ENG_INT4_GROUP;
			float mx = absmax(w, ENG_INT4_GROUP), s;
			int8_t q[ENG_INT4_GROUP];

			sc[g] = eng_f32_to_f16(mx / 7.0f);
			s = eng_f16_to_f32(sc[g]);
			if (!isfinite(s)) {
				st->nonfinite++;
				return -ERANGE;
			}
			for (uint32_t j = 0; j < ENG_INT4_GROUP; j++) {
				float r = s > 0 ? rintf(w[j] / s) : 0.0f;

				r = fminf(fmaxf(r, -8.0f), 7.0f);
				q[j] = (int8_t)r;
				deq[j] = r * s;
			}
			for (uint32_t j = 0; j < ENG_INT4_GROUP; j += 2)
				o[g * ENG_INT4_GROUP / 2 + j / 2] =
					(uint8_t)((q[j] + 8) | ((q[j + 1] + 8) << 4));
			stats_add(st, w, deq, ENG_INT4_GROUP);
		}
		return 0;
	}
	default:
		return -EINVAL;
	}
}
