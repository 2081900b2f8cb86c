/* SPDX-License-Identifier: MIT */
/*
 * kern.h — the CPU backend's compute kernels, one table per instruction set
 * (private).  The generic table is portable C; the AVX2 (+FMA+F16C) and
 * AVX-512 tables are compiled with target attributes and chosen at run time
 * from cpuid, so the default x86-64-v2 build still uses them.  Unit tests
 * run every table the machine supports against the generic one and against
 * double-precision references.
 *
 * Matrix products.  W is an eng_tensor [rows, cols] in any weight dtype
 * (F32, BF16, F16, FP8 E4M3 + per-row scale, INT4 g128 + f16 group scales);
 * x is float32 [nt, cols]; y[t][r] = sum_k W[r][k] * x[t][k], accumulated
 * in float32.  Two routes:
 *   mv        streams the weights once and converts them in registers, for
 *             nt <= CPU_MV_T_MAX (decode: memory bound);
 *   dequant + gemm
 *             converts a tile of rows (cpu_tile_rows(): as many as fit
 *             512 KiB, 4 to 64) to float32, then runs a register-blocked
 *             kernel over every token, 16 tokens at a time against each
 *             group of 4 rows (prefill: compute bound).
 * Within one table both routes sum in the same order (lane j of L
 * accumulates k = j mod L in increasing k, the same reduction tree, the
 * same tail loop, the same post-scale), so a token's result does not depend
 * on how many other tokens share the step: the CPU backend is batch
 * invariant, bit for bit, within one instruction set.
 *
 * INT4 weights pair elements 2j / 2j+1 in one byte (low / high nibble).
 * The SIMD tables multiply them against x permuted within blocks of
 * x_perm_block elements (evens first, then odds), which cpu_kern.x_perm
 * produces once per activation row; the tile holds the weights in the same
 * permuted order.  The generic table needs no permutation (x_perm_block 0).
 */
#ifndef VELO_ENG_CPU_KERN_H
#define VELO_ENG_CPU_KERN_H

#include <stddef.h>
#include <stdint.h>

#include "../backend.h"
#include "../core/tensor.h"

/* Largest token count mv handles; above it the tile route is faster. */
#define CPU_MV_T_MAX 4
/* Rows per dequantised tile: as many as fit CPU_TILE_BYTES (L2 resident),
 * a multiple of 4 within [4, CPU_TILE_ROWS_MAX]. */
#define CPU_TILE_ROWS_MAX 64
#define CPU_TILE_BYTES (512u << 10)

static inline uint32_t cpu_tile_rows(uint32_t cols)
{
	uint32_t r = CPU_TILE_BYTES / 4 / (cols ? cols : 1) / 4 * 4;

	return r < 4 ? 4 : r > CPU_TILE_ROWS_MAX ? CPU_TILE_ROWS_MAX : r;
}

/* Floats of tile scratch a worker needs for inputs up to @kmax wide. */
static inline size_t cpu_tile_floats(uint32_t kmax)
{
	size_t a = (size_t)CPU_TILE_BYTES / 4, b = (size_t)4 * kmax;

	return (a > b ? a : b) + 16;
}

struct cpu_kern {
	const char *name;
	uint32_t x_perm_block;		/* INT4 activation permutation; 0: none */

	/*
	 * mv() - y[t * ldy + r] for r in [r0, r1), t < nt (nt <= CPU_MV_T_MAX
	 * unless gemm is NULL, then any nt).  For INT4 weights x is the
	 * permuted activation (x_perm).
	 */
	void (*mv)(const struct eng_tensor *w, uint32_t r0, uint32_t r1,
		   const float *x, size_t ldx, uint32_t nt, float *y, size_t ldy);

	/*
	 * dequant() - rows [r0, r0 + nr) (nr <= CPU_TILE_ROWS_MAX) to tile
	 * [nr][cols] (the kernel's order: INT4 permuted) and post[nr], the
	 * factor the row's dot product is multiplied by (FP8 row scale; 1).
	 * NULL in tables without a tile route.
	 */
	void (*dequant)(const struct eng_tensor *w, uint32_t r0, uint32_t nr,
			float *tile, float *post);

	/* gemm() - y[t * ldy + i] = post[i] * tile[i] . x[t], i < nr, t < nt. */
	void (*gemm)(const float *tile, uint32_t nr, uint32_t cols,
		     const float *post, const float *x, size_t ldx, uint32_t nt,
		     float *y, size_t ldy);

	/* x_perm() - dst[cols] = src[cols] permuted for INT4 (cols % 128 == 0). */
	void (*x_perm)(const float *src, float *dst, uint32_t cols);

	/* Attention helpers, float32 vectors. */
	float (*dot)(const float *a, const float *b, uint32_t n);
	void (*axpy)(float a, const float *x, float *y, uint32_t n); /* y += a x */
};

extern const struct cpu_kern cpu_kern_generic;
extern const struct cpu_kern cpu_kern_avx2;
extern const struct cpu_kern cpu_kern_avx512;

/*
 * cpu_kern_get() - the table for @isa (AUTO: best supported).
 * Return: the table, or NULL when the CPU lacks that instruction set.
 */
const struct cpu_kern *cpu_kern_get(enum eng_cpu_isa isa);

/*
 * cpu_mm_rows() - y[t * ldy + r] = W[r] . x[t] for r in [r0, r1), t < nt,
 * by the route that suits nt (mv up to CPU_MV_T_MAX tokens, else dequant +
 * gemm through @tile, cpu_tile_floats(cols) floats).  @xp / @ldxp: the same
 * activations INT4-permuted (used when W is INT4 and k->x_perm_block).
 */
void cpu_mm_rows(const struct cpu_kern *k, const struct eng_tensor *w,
		 const float *x, size_t ldx, const float *xp, size_t ldxp,
		 uint32_t nt, float *y, size_t ldy, uint32_t r0, uint32_t r1,
		 float *tile);

/* Scalar conversions shared by every table (exact). */
float cpu_bf16_to_f32(uint16_t h);
float cpu_f16_to_f32(uint16_t h);
/* FP8 E4M3 byte -> exact float32 (0x7f/0xff NaN); filled before main. */
extern float cpu_fp8_e4m3_lut[256];

/* Element k of row r as float32, scales applied (reference, tails). */
float cpu_weight_at(const struct eng_tensor *w, uint32_t r, uint32_t k);

/* Bytes of one row of @w's data (INT4: cols / 2). */

#endif
