// SPDX-License-Identifier: MIT
/*
 * kern_avx512.c — AVX-512 (F, BW, VL) + F16C kernels (16 lanes), chosen at
 * run time.  The kernels themselves are kern_simd.inc.  gemm is 4 rows x 4
 * tokens: 16 accumulators out of 32 registers, 8 loads per 16 FMAs.
 */
#include <immintrin.h>
#include <string.h>

#include <velo/compiler.h>

#include "kern.h"

#define KS(name) avx512_##name
#define TGT __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
#define L 16
#define GEMM_NT 4
typedef __m512 vec;

#define V_ZERO() _mm512_setzero_ps()
#define V_LOADU(p) _mm512_loadu_ps(p)
#define V_STOREU(p, v) _mm512_storeu_ps(p, v)
#define V_FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define V_MUL(a, b) _mm512_mul_ps(a, b)
#define V_SET1(f) _mm512_set1_ps(f)
#define V_HSUM(v) avx512_hsum(v)

/* A fixed tree (not _mm512_reduce_add_ps, whose order is the compiler's). */
TGT static inline __attribute__((always_inline)) float avx512_hsum(__m512 v)
{
	__m256 a = _mm256_add_ps(_mm512_castps512_ps256(v),
				 _mm256_castpd_ps(_mm512_extractf64x4_pd(
					 _mm512_castps_pd(v), 1)));
	__m128 lo = _mm_add_ps(_mm256_castps256_ps128(a),
			       _mm256_extractf128_ps(a, 1));

	lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
	lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));
	return _mm_cvtss_f32(lo);
}

TGT static inline __attribute__((always_inline)) __m512
ld_w(const int dt, const uint8_t *p, uint32_t k)
{
	switch (dt) {
	case ENG_DT_F32:
		return _mm512_loadu_ps((const float *)p + k);
	case ENG_DT_BF16: {
		__m256i h = _mm256_loadu_si256((const __m256i *)(p + 2 * (size_t)k));

		return _mm512_castsi512_ps(
			_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
	}
	case ENG_DT_F16:
		return _mm512_cvtph_ps(
			_mm256_loadu_si256((const __m256i *)(p + 2 * (size_t)k)));
	default: {
		/* FP8 E4M3 -> half (value * 2^-8) -> float: see kern_simd.inc */
		__m256i h = _mm256_cvtepu8_epi16(
			_mm_loadu_si128((const __m128i *)(p + k)));

		h = _mm256_slli_epi16(h, 8);
		h = _mm256_srai_epi16(h, 1);
		h = _mm256_and_si256(h, _mm256_set1_epi16((short)0xbfff));
		return _mm512_cvtph_ps(h);
	}
	}
}

/*
 * INT4 through a 16-entry table: per group, lut[q] = (q - 8) * scale (one
 * multiply, exact: a small integer times an f16); vpermps picks lut[nibble]
 * by the low 4 bits of each lane, so the low nibble needs no mask.  5 uops
 * per 32 weights (zero-extend, shift, 2 vpermps, and the FMAs) instead of
 * 10 with convert + subtract + scale; the values are the same bits.
 */
#define Q_GROUP(sf) _mm512_mul_ps(_mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, \
						 0, 1, 2, 3, 4, 5, 6, 7),        \
				  _mm512_set1_ps(sf))

TGT static inline __attribute__((always_inline)) void
ld_q(const uint8_t *p, uint32_t k, __m512 lut, __m512 *lo, __m512 *hi)
{
	__m512i v = _mm512_cvtepu8_epi32(
		_mm_loadu_si128((const __m128i *)(p + k / 2)));

	*lo = _mm512_permutexvar_ps(v, lut);
	*hi = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), lut);
}

#include "kern_simd.inc"

const struct cpu_kern cpu_kern_avx512 = {
	.name = "avx512",
	.x_perm_block = 2 * L,
	.mv = avx512_mv,
	.dequant = avx512_dequant,
	.gemm = avx512_gemm,
	.x_perm = avx512_x_perm,
	.dot = avx512_dot,
	.axpy = avx512_axpy,
};
