// SPDX-License-Identifier: MIT
/*
 * kern_avx2.c — AVX2 + FMA + F16C kernels (8 lanes), compiled with a target
 * attribute so that the portable build can pick them at run time.  The
 * kernels themselves are kern_simd.inc.
 *
 * Decode cost per 8 weights: BF16 zero-extend + shift (2 uops), FP8 unpack +
 * shift + and + cvtph (4), INT4 per 16 weights zero-extend, and, shift,
 * 2 sub, 2 cvt, 2 mul (9); then one FMA per token.  gemm is 4 rows x 2
 * tokens: 8 accumulators, 6 loads per 8 FMAs, FMA bound.
 */
#include <immintrin.h>
#include <string.h>

#include <velo/compiler.h>

#include "kern.h"

#define KS(name) avx2_##name
#define TGT __attribute__((target("avx2,fma,f16c")))
#define L 8
#define GEMM_NT 2
typedef __m256 vec;

#define V_ZERO() _mm256_setzero_ps()
#define V_LOADU(p) _mm256_loadu_ps(p)
#define V_STOREU(p, v) _mm256_storeu_ps(p, v)
#define V_FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define V_MUL(a, b) _mm256_mul_ps(a, b)
#define V_SET1(f) _mm256_set1_ps(f)
#define V_HSUM(v) avx2_hsum(v)

TGT static inline __attribute__((always_inline)) float avx2_hsum(__m256 v)
{
	__m128 lo = _mm_add_ps(_mm256_castps256_ps128(v),
			       _mm256_extractf128_ps(v, 1));

	lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
	lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));
	return _mm_cvtss_f32(lo);
}

TGT static inline __attribute__((always_inline)) __m256
ld_w(const int dt, const uint8_t *p, uint32_t k)
{
	switch (dt) {
	case ENG_DT_F32:
		return _mm256_loadu_ps((const float *)p + k);
	case ENG_DT_BF16: {
		__m128i h = _mm_loadu_si128((const __m128i *)(p + 2 * (size_t)k));

		return _mm256_castsi256_ps(
			_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
	}
	case ENG_DT_F16:
		return _mm256_cvtph_ps(
			_mm_loadu_si128((const __m128i *)(p + 2 * (size_t)k)));
	default: {
		/* FP8 E4M3 -> half (value * 2^-8) -> float: see kern_simd.inc */
		__m128i b = _mm_loadl_epi64((const __m128i *)(p + k));
		__m128i h = _mm_unpacklo_epi8(_mm_setzero_si128(), b);

		h = _mm_srai_epi16(h, 1);
		h = _mm_and_si128(h, _mm_set1_epi16((short)0xbfff));
		return _mm256_cvtph_ps(h);
	}
	}
}

#define Q_GROUP(sf) _mm256_set1_ps(sf)

TGT static inline __attribute__((always_inline)) void
ld_q(const uint8_t *p, uint32_t k, __m256 s, __m256 *lo, __m256 *hi)
{
	__m256i v = _mm256_cvtepu8_epi32(
		_mm_loadl_epi64((const __m128i *)(p + k / 2)));
	__m256i eight = _mm256_set1_epi32(8);
	__m256i l = _mm256_sub_epi32(_mm256_and_si256(v, _mm256_set1_epi32(15)),
				     eight);
	__m256i h = _mm256_sub_epi32(_mm256_srli_epi32(v, 4), eight);

	*lo = _mm256_mul_ps(_mm256_cvtepi32_ps(l), s);
	*hi = _mm256_mul_ps(_mm256_cvtepi32_ps(h), s);
}

#include "kern_simd.inc"

const struct cpu_kern cpu_kern_avx2 = {
	.name = "avx2",
	.x_perm_block = 2 * L,
	.mv = avx2_mv,
	.dequant = avx2_dequant,
	.gemm = avx2_gemm,
	.x_perm = avx2_x_perm,
	.dot = avx2_dot,
	.axpy = avx2_axpy,
};
