// SPDX-License-Identifier: MIT
/*
 * quant.c — one row at a time from f32 to a stored dtype, with the error
 * against the source.  The rules are docs/model-format.md's; the decoders
 * used for the error are the loader's (image.c), so what is reported is
 * what a backend will see.
 *
 * Cost per weight, error statistics included (gcc 12 -O2, x86-64-v2, one
 * core of the 2-core development VM, 2048-wide rows): BF16 1.0 ns, INT4
 * 1.9 ns, FP8 2.4 ns with the SSE4.1 loops below, against 4-5, 6 and 9 ns
 * for the scalar versions; generating a synthetic weight costs 2.0 ns.
 */
#include <errno.h>
#include <math.h>
#include <string.h>

#include <immintrin.h>

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

/*
 * The loops below use SSE4.1 (part of x86-64-v2, the build's baseline) on
 * four floats at a time.  Their results are exactly those of the scalar
 * rules: the same IEEE operations in the same order per element, rounding
 * by the default nearest-even mode; test_image compares every converted
 * weight with a brute-force reference.
 */
#define SSE41 __attribute__((target("sse4.1")))

SSE41 static float hmax(__m128 v)
{
	v = _mm_max_ps(v, _mm_movehl_ps(v, v));
	v = _mm_max_ss(v, _mm_shuffle_ps(v, v, 1));
	return _mm_cvtss_f32(v);
}

SSE41 static double hsum(__m128 v)
{
	float f[4];

	_mm_storeu_ps(f, v);
	return ((double)f[0] + f[1]) + ((double)f[2] + f[3]);
}

/* Accumulate (w - d)^2, w^2 and max |w - d| over n values, in float lanes
 * summed into doubles per call (calls cover <= 128 values, except exact
 * F32 copies: float keeps ~7 digits, plenty for an error report). */
SSE41 static void stats_add(struct qstats *st, const float *w, const float *d,
			    uint32_t n)
{
	const __m128 abs = _mm_castsi128_ps(_mm_set1_epi32(0x7fffffff));
	__m128 e2 = _mm_setzero_ps(), r2 = _mm_setzero_ps(), mx = _mm_setzero_ps();
	double se, sr;
	float m;
	uint32_t i = 0;

	for (; i + 4 <= n; i += 4) {
		__m128 wv = _mm_loadu_ps(w + i), e = _mm_sub_ps(wv, _mm_loadu_ps(d + i));

		e2 = _mm_add_ps(e2, _mm_mul_ps(e, e));
		r2 = _mm_add_ps(r2, _mm_mul_ps(wv, wv));
		mx = _mm_max_ps(mx, _mm_and_ps(e, abs));
	}
	se = hsum(e2);
	sr = hsum(r2);
	m = hmax(mx);
	for (; i < n; i++) {
		float e = w[i] - d[i];

		se += (double)e * e;
		sr += (double)w[i] * w[i];
		m = fabsf(e) > m ? fabsf(e) : m;
	}
	st->err2 += se;
	st->ref2 += sr;
	st->max_abs = MAX(st->max_abs, (double)m);
	st->n += n;
}

SSE41 static float absmax(const float *w, uint32_t n)
{
	const __m128 abs = _mm_castsi128_ps(_mm_set1_epi32(0x7fffffff));
	__m128 mx = _mm_setzero_ps();
	uint32_t i = 0;
	float m;

	for (; i + 4 <= n; i += 4)
		mx = _mm_max_ps(mx, _mm_and_ps(_mm_loadu_ps(w + i), abs));
	m = hmax(mx);
	for (; i < n; i++)
		m = fabsf(w[i]) > m ? fabsf(w[i]) : m;
	return m;
}

static bool all_finite(const float *w, uint32_t n)
{
	uint32_t bad = 0;

	for (uint32_t i = 0; i < n; i++)
		bad |= (eng_f32_bits(w[i]) & 0x7f800000u) == 0x7f800000u;
	return !bad;
}

/* BF16 of four finite floats (nearest even), and their values back. */
SSE41 static __m128i bf16x4(__m128 v, __m128 *back)
{
	__m128i x = _mm_castps_si128(v);
	__m128i lsb = _mm_and_si128(_mm_srli_epi32(x, 16), _mm_set1_epi32(1));
	__m128i r = _mm_add_epi32(_mm_add_epi32(x, _mm_set1_epi32(0x7fff)), lsb);

	r = _mm_and_si128(r, _mm_set1_epi32((int)0xffff0000u));
	*back = _mm_castsi128_ps(r);
	return _mm_srli_epi32(r, 16);
}

/* FP8 E4M3 codes of four finite floats (nearest even, saturating at 448),
 * as int32 lanes, and their values back. */
SSE41 static __m128i fp8x4(__m128 v, __m128 *back)
{
	const __m128i one = _mm_set1_epi32(1), max = _mm_set1_epi32(0x7e);
	__m128i x = _mm_castps_si128(v);
	__m128i a = _mm_and_si128(x, _mm_set1_epi32(0x7fffffff));
	__m128i nrm = _mm_add_epi32(_mm_add_epi32(a, _mm_set1_epi32(0x7ffff)),
				    _mm_and_si128(_mm_srli_epi32(a, 20), one));
	/* subnormal: multiples of 2^-9, cvtps rounds to nearest even */
	__m128i sub = _mm_cvtps_epi32(_mm_mul_ps(_mm_castsi128_ps(a), _mm_set1_ps(512.0f)));
	__m128i c, sat, e, m, bits;
	__m128 vs, vn;

	nrm = _mm_sub_epi32(_mm_srli_epi32(nrm, 20), _mm_set1_epi32(120 << 3));
	c = _mm_blendv_epi8(nrm, sub, _mm_cmplt_epi32(a, _mm_set1_epi32(0x3c800000)));
	sat = _mm_or_si128(_mm_cmpgt_epi32(a, _mm_set1_epi32(0x43dfffff)),
			   _mm_cmpgt_epi32(c, max));
	c = _mm_blendv_epi8(c, max, sat);
	/* value back: e == 0 -> m * 2^-9, else (1 + m/8) * 2^(e - 7) */
	e = _mm_srli_epi32(c, 3);
	m = _mm_and_si128(c, _mm_set1_epi32(7));
	bits = _mm_or_si128(_mm_slli_epi32(_mm_add_epi32(e, _mm_set1_epi32(120)), 23),
			    _mm_slli_epi32(m, 20));
	vn = _mm_castsi128_ps(bits);
	vs = _mm_mul_ps(_mm_cvtepi32_ps(m), _mm_set1_ps(0x1p-9f));
	vn = _mm_blendv_ps(vn, vs, _mm_castsi128_ps(_mm_cmpeq_epi32(e, _mm_setzero_si128())));
	/* sign */
	x = _mm_and_si128(x, _mm_set1_epi32((int)0x80000000u));
	*back = _mm_or_ps(vn, _mm_castsi128_ps(x));
	return _mm_or_si128(c, _mm_srli_epi32(x, 24));
}

/* Pack the low bytes of 4 int32 lanes (each < 256) into 4 bytes at @o. */
SSE41 static void store4(uint8_t *o, __m128i v)
{
	int32_t b = _mm_cvtsi128_si32(_mm_packus_epi16(_mm_packus_epi32(v, v), v));

	memcpy(o, &b, 4);
}

SSE41 static void row_bf16(const float *src, uint32_t cols, uint16_t *o,
			   struct qstats *st)
{
	float deq[ENG_INT4_GROUP];

	for (uint32_t i = 0; i < cols; i += ENG_INT4_GROUP) {
		uint32_t n = MIN(cols - i, (uint32_t)ENG_INT4_GROUP), j = 0;

		for (; j + 8 <= n; j += 8) {
			__m128 b0, b1;
			__m128i h0 = bf16x4(_mm_loadu_ps(src + i + j), &b0);
			__m128i h1 = bf16x4(_mm_loadu_ps(src + i + j + 4), &b1);

			_mm_storeu_si128((__m128i *)(o + i + j), _mm_packus_epi32(h0, h1));
			_mm_storeu_ps(deq + j, b0);
			_mm_storeu_ps(deq + j + 4, b1);
		}
		for (; j < n; j++) {
			uint32_t x = eng_f32_bits(src[i + j]);

			o[i + j] = (uint16_t)((x + 0x7fffu + ((x >> 16) & 1)) >> 16);
			deq[j] = eng_bf16_to_f32(o[i + j]);
		}
		stats_add(st, src + i, deq, n);
	}
}

SSE41 static void row_fp8(const float *src, uint32_t cols, uint8_t *o,
			  float *scale_out, struct qstats *st)
{
	float deq[ENG_INT4_GROUP];
	float scale = absmax(src, cols) / 448.0f;
	const __m128 sv = _mm_set1_ps(scale);

	memcpy(scale_out, &scale, sizeof(scale));
	for (uint32_t i = 0; i < cols; i += ENG_INT4_GROUP) {
		uint32_t n = MIN(cols - i, (uint32_t)ENG_INT4_GROUP), j = 0;

		if (!(scale > 0)) {	/* an all-zero row */
			memset(o + i, 0, n);
			memset(deq, 0, sizeof(deq));
			stats_add(st, src + i, deq, n);
			continue;
		}
		for (; j + 4 <= n; j += 4) {
			__m128 b;
			__m128i c = fp8x4(_mm_div_ps(_mm_loadu_ps(src + i + j), sv), &b);

			store4(o + i + j, c);
			_mm_storeu_ps(deq + j, _mm_mul_ps(b, sv));
		}
		for (; j < n; j++) {
			o[i + j] = eng_f32_to_fp8_e4m3(src[i + j] / scale);
			deq[j] = eng_fp8_e4m3_to_f32(o[i + j]) * scale;
		}
		stats_add(st, src + i, deq, n);
	}
}

SSE41 static int row_int4(const float *src, uint32_t cols, uint8_t *o,
			  uint16_t *sc, struct qstats *st)
{
	float deq[ENG_INT4_GROUP];
	int32_t q[ENG_INT4_GROUP];

	for (uint32_t g = 0; g < cols / ENG_INT4_GROUP; g++) {
		const float *w = src + g * ENG_INT4_GROUP;
		float s;
		__m128 sv;

		sc[g] = eng_f32_to_f16(absmax(w, ENG_INT4_GROUP) / 7.0f);
		s = eng_f16_to_f32(sc[g]);
		if (!isfinite(s)) {
			st->nonfinite++;
			return -ERANGE;
		}
		sv = _mm_set1_ps(s);
		for (uint32_t j = 0; j < ENG_INT4_GROUP; j += 4) {
			__m128 r = _mm_round_ps(_mm_div_ps(_mm_loadu_ps(w + j), sv),
						_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);

			if (!(s > 0))	/* all-zero group: scale 0, codes 0 */
				r = _mm_setzero_ps();
			r = _mm_min_ps(_mm_max_ps(r, _mm_set1_ps(-8.0f)), _mm_set1_ps(7.0f));
			_mm_storeu_ps(deq + j, _mm_mul_ps(r, sv));
			_mm_storeu_si128((__m128i *)(q + j),
					 _mm_add_epi32(_mm_cvttps_epi32(r), _mm_set1_epi32(8)));
		}
		for (uint32_t j = 0; j < ENG_INT4_GROUP; j += 2)
			o[g * ENG_INT4_GROUP / 2 + j / 2] = (uint8_t)(q[j] | (q[j + 1] << 4));
		stats_add(st, w, deq, ENG_INT4_GROUP);
	}
	return 0;
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
		row_bf16(src, cols, dst, st);
		return 0;
	case ENG_DT_F16: {
		uint16_t *o = dst;

		for (uint32_t i = 0; i < cols; i += ENG_INT4_GROUP) {
			uint32_t n = MIN(cols - i, (uint32_t)ENG_INT4_GROUP);

			for (uint32_t j = 0; j < n; j++) {
				o[i + j] = eng_f32_to_f16(src[i + j]);
				deq[j] = eng_f16_to_f32(o[i + j]);
			}
			stats_add(st, src + i, deq, n);
		}
		return 0;
	}
	case ENG_DT_FP8_E4M3:
		row_fp8(src, cols, dst, scales, st);
		return 0;
	case ENG_DT_INT4_G128:
		return row_int4(src, cols, dst, scales, st);
	default:
		return -EINVAL;
	}
}
