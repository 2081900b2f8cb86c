// SPDX-License-Identifier: MIT
/*
 * kern_generic.c — portable C kernels (the fallback on CPUs without AVX2,
 * and the second opinion the SIMD tables are tested against), the scalar
 * conversions every table shares, and the run-time choice of a table.
 *
 * The generic mv converts 8 weights at a time and keeps 8 partial sums per
 * (row, token), the same shape as the AVX2 kernels, so that the compiler
 * can vectorise it for SSE and the rounding behaves alike.  It has no tile
 * route: it is used for every token count, which keeps it batch invariant.
 */
#include <cpuid.h>
#include <math.h>
#include <string.h>

#include <velo/compiler.h>

#include "kern.h"

float cpu_fp8_e4m3_lut[256];

/* Filled before main(): 256 exact values, NaN for S.1111.111. */
__attribute__((constructor)) static void fp8_lut_init(void)
{
	float *lut = cpu_fp8_e4m3_lut;

	for (int b = 0; b < 256; b++) {
		int e = (b >> 3) & 15, m = b & 7;
		float v;

		if (e == 15 && m == 7)
			v = NAN;
		else if (!e)
			v = ldexpf((float)m / 8.0f, -6);
		else
			v = ldexpf(1.0f + (float)m / 8.0f, e - 7);
		lut[b] = (b & 0x80) ? -v : v;
	}
}

float cpu_bf16_to_f32(uint16_t h)
{
	uint32_t u = (uint32_t)h << 16;
	float f;

	memcpy(&f, &u, 4);
	return f;
}

float cpu_f16_to_f32(uint16_t h)
{
	uint32_t s = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 31, m = h & 1023;
	uint32_t u;
	float f;

	if (e == 31) {
		u = s | 0x7f800000u | (m << 13);
	} else if (e) {
		u = s | ((e + 112) << 23) | (m << 13);
	} else {
		/* Subnormal (or zero): m * 2^-24, exact in float32. */
		f = ldexpf((float)m, -24);
		return s ? -f : f;
	}
	memcpy(&f, &u, 4);
	return f;
}

static inline const uint8_t *row_ptr(const struct eng_tensor *w, uint32_t r)
{
	return (const uint8_t *)w->data + (size_t)r * eng_row_bytes(w->dtype, w->cols);
}

float cpu_weight_at(const struct eng_tensor *w, uint32_t r, uint32_t k)
{
	const uint8_t *p = row_ptr(w, r);
	uint16_t h;
	float f;

	switch (w->dtype) {
	case ENG_DT_F32:
		memcpy(&f, p + 4 * (size_t)k, 4);
		return f;
	case ENG_DT_BF16:
		memcpy(&h, p + 2 * (size_t)k, 2);
		return cpu_bf16_to_f32(h);
	case ENG_DT_F16:
		memcpy(&h, p + 2 * (size_t)k, 2);
		return cpu_f16_to_f32(h);
	case ENG_DT_FP8_E4M3:
		return cpu_fp8_e4m3_lut[p[k]] * ((const float *)w->scales)[r];
	case ENG_DT_INT4_G128: {
		uint8_t b = p[k / 2];
		int q = (int)((k & 1) ? b >> 4 : b & 15) - 8;
		const uint16_t *s = (const uint16_t *)w->scales +
				    (size_t)r * (w->cols / ENG_INT4_GROUP);

		return (float)q * cpu_f16_to_f32(s[k / ENG_INT4_GROUP]);
	}
	default:
		return NAN;
	}
}

/* 8 weights of row @p from k, unscaled for FP8 (the row's post-scale). */
static inline void w8(const struct eng_tensor *w, const uint8_t *p,
		      const uint16_t *gs, uint32_t k, float out[8])
{
	uint16_t h;

	switch (w->dtype) {
	case ENG_DT_F32:
		memcpy(out, p + 4 * (size_t)k, 32);
		break;
	case ENG_DT_BF16:
		for (int j = 0; j < 8; j++) {
			memcpy(&h, p + 2 * (size_t)(k + j), 2);
			out[j] = cpu_bf16_to_f32(h);
		}
		break;
	case ENG_DT_F16:
		for (int j = 0; j < 8; j++) {
			memcpy(&h, p + 2 * (size_t)(k + j), 2);
			out[j] = cpu_f16_to_f32(h);
		}
		break;
	case ENG_DT_FP8_E4M3:
		for (int j = 0; j < 8; j++)
			out[j] = cpu_fp8_e4m3_lut[p[k + j]];
		break;
	case ENG_DT_INT4_G128: {
		float s = cpu_f16_to_f32(gs[k / ENG_INT4_GROUP]);

		for (int j = 0; j < 4; j++) {
			uint8_t b = p[k / 2 + j];

			out[2 * j] = (float)((int)(b & 15) - 8) * s;
			out[2 * j + 1] = (float)((int)(b >> 4) - 8) * s;
		}
		break;
	}
	default:
		memset(out, 0, 32);
	}
}

static void g_mv(const struct eng_tensor *w, uint32_t r0, uint32_t r1,
		 const float *x, size_t ldx, uint32_t nt, float *y, size_t ldy)
{
	uint32_t K = w->cols, K8 = K & ~7u;
	uint32_t ng = w->cols / ENG_INT4_GROUP;

	for (uint32_t r = r0; r < r1; r++) {
		const uint8_t *p = row_ptr(w, r);
		const uint16_t *gs = w->dtype == ENG_DT_INT4_G128 ?
			(const uint16_t *)w->scales + (size_t)r * ng : NULL;
		float post = w->dtype == ENG_DT_FP8_E4M3 ?
			((const float *)w->scales)[r] : 1.0f;

		for (uint32_t t0 = 0; t0 < nt; t0 += 4) {
			uint32_t tn = MIN(4u, nt - t0);
			float acc[4][8] = { { 0 } }, wv[8];

			for (uint32_t k = 0; k < K8; k += 8) {
				w8(w, p, gs, k, wv);
				for (uint32_t t = 0; t < tn; t++) {
					const float *xt = x + (t0 + t) * ldx + k;

					for (int j = 0; j < 8; j++)
						acc[t][j] += wv[j] * xt[j];
				}
			}
			for (uint32_t t = 0; t < tn; t++) {
				const float *a = acc[t];
				float s = ((a[0] + a[4]) + (a[2] + a[6])) +
					  ((a[1] + a[5]) + (a[3] + a[7]));

				for (uint32_t k = K8; k < K; k++) {
					float wk = w->dtype == ENG_DT_FP8_E4M3 ?
						cpu_fp8_e4m3_lut[p[k]] :
						cpu_weight_at(w, r, k);

					s += wk * x[(t0 + t) * ldx + k];
				}
				y[(t0 + t) * ldy + r] = s * post;
			}
		}
	}
}

static float g_dot(const float *a, const float *b, uint32_t n)
{
	float acc[8] = { 0 }, s;
	uint32_t n8 = n & ~7u;

	for (uint32_t i = 0; i < n8; i += 8)
		for (int j = 0; j < 8; j++)
			acc[j] += a[i + j] * b[i + j];
	s = ((acc[0] + acc[4]) + (acc[2] + acc[6])) +
	    ((acc[1] + acc[5]) + (acc[3] + acc[7]));
	for (uint32_t i = n8; i < n; i++)
		s += a[i] * b[i];
	return s;
}

static void g_axpy(float a, const float *x, float *y, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		y[i] += a * x[i];
}

const struct cpu_kern cpu_kern_generic = {
	.name = "generic",
	.x_perm_block = 0,
	.mv = g_mv,
	.dot = g_dot,
	.axpy = g_axpy,
};

void cpu_mm_rows(const struct cpu_kern *kr, const struct eng_tensor *w,
		 const float *x, size_t ldx, const float *xp, size_t ldxp,
		 uint32_t nt, float *y, size_t ldy, uint32_t r0, uint32_t r1,
		 float *tile)
{
	float post[CPU_TILE_ROWS_MAX];
	uint32_t tr = cpu_tile_rows(w->cols);

	if (w->dtype == ENG_DT_INT4_G128 && kr->x_perm_block) {
		x = xp;
		ldx = ldxp;
	}
	if (nt <= CPU_MV_T_MAX || !kr->gemm) {
		kr->mv(w, r0, r1, x, ldx, nt, y, ldy);
		return;
	}
	for (uint32_t r = r0; r < r1; r += tr) {
		uint32_t nr = MIN(tr, r1 - r);

		kr->dequant(w, r, nr, tile, post);
		kr->gemm(tile, nr, w->cols, post, x, ldx, nt, y + r, ldy);
	}
}

const struct cpu_kern *cpu_kern_get(enum eng_cpu_isa isa)
{
	bool avx2, avx512;

	unsigned a, b, c, d;
	bool f16c;

	/* F16C: CPUID.1:ECX bit 29 (clang 14 has no "f16c" for
	 * __builtin_cpu_supports); every AVX2 CPU shipped has it. */
	f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
	__builtin_cpu_init();
	avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
	       f16c;
	avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
		 __builtin_cpu_supports("avx512bw") &&
		 __builtin_cpu_supports("avx512vl");
	switch (isa) {
	case ENG_CPU_ISA_AUTO:
		return avx512 ? &cpu_kern_avx512 : avx2 ? &cpu_kern_avx2 :
		       &cpu_kern_generic;
	case ENG_CPU_ISA_GENERIC:
		return &cpu_kern_generic;
	case ENG_CPU_ISA_AVX2:
		return avx2 ? &cpu_kern_avx2 : NULL;
	case ENG_CPU_ISA_AVX512:
		return avx512 ? &cpu_kern_avx512 : NULL;
	}
	return NULL;
}
