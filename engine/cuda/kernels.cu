// SPDX-License-Identifier: MIT
/*
 * kernels.cu — the CUDA backend's device code, compiled by nvcc into a
 * fatbin (sm_90a, sm_90) that the library embeds and loads with
 * cuModuleLoadData.  Every entry point is extern "C" so the host finds it
 * by name (cuModuleGetFunction); arguments are the blocks of cuda_abi.h.
 *
 * Numerics follow the CPU backend (engine/cpu/forward.c), which follows HF
 * transformers' float32 forward: activations and accumulators in float32,
 * weights decoded exactly (BF16, F16, FP8 E4M3 times the row's scale after
 * the dot product, INT4 (q - 8) times the group's f16 scale), RMSNorm's
 * mean of squares in double, rotate-half RoPE from host-built float32
 * tables, softmax with the running maximum.  Only the summation order
 * differs from the CPU, so parity is checked within tolerances.
 */
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <stdint.h>

#include "cuda_abi.h"

#define DEV static __device__ __forceinline__

/* ---- element decoding ---------------------------------------------------- */

DEV float bf16f(uint32_t h16)
{
	return __uint_as_float(h16 << 16);
}

/* Two FP8 E4M3 bytes (low byte first) to two floats, one cvt on sm_89+. */
DEV float2 fp8x2f(uint32_t b2)
{
	uint32_t h2;
	unsigned short in = (unsigned short)b2;

	asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(h2) : "h"(in));
	__half2 h = *reinterpret_cast<__half2 *>(&h2);
	return __half22float2(h);
}

/* A nibble (0..15) to (nibble - 8) as float: 2^23 + n, minus 2^23 + 8. */
DEV float i4f(uint32_t n)
{
	return __uint_as_float(0x4B000000u | n) - 8388616.0f;
}

/* Scalar element (r, k) of a [rows][cols] matrix; FP8 includes the row
 * scale.  Used by the embedding gather and by nothing hot. */
DEV float w_at(int dt, const void *w, const void *sc, uint32_t r, uint32_t k,
	       uint32_t cols)
{
	size_t i = (size_t)r * cols + k;

	switch (dt) {
	case CUDA_DT_F32:
		return ((const float *)w)[i];
	case CUDA_DT_BF16:
		return bf16f(((const uint16_t *)w)[i]);
	case CUDA_DT_F16:
		return __half2float(((const __half *)w)[i]);
	case CUDA_DT_FP8:
		return fp8x2f(((const uint8_t *)w)[i]).x * ((const float *)sc)[r];
	case CUDA_DT_INT4: {
		uint8_t b = ((const uint8_t *)w)[i / 2];
		uint32_t n = (i & 1) ? b >> 4 : b & 15;

		return i4f(n) * __half2float(((const __half *)sc)[(size_t)r * (cols / 128) + k / 128]);
	}
	}
	return 0.0f;
}

/* Elements per 16-byte chunk of a row. */
template <int DT> struct dt_traits;
template <> struct dt_traits<CUDA_DT_F32> { enum { EPC = 4 }; };
template <> struct dt_traits<CUDA_DT_BF16> { enum { EPC = 8 }; };
template <> struct dt_traits<CUDA_DT_F16> { enum { EPC = 8 }; };
template <> struct dt_traits<CUDA_DT_FP8> { enum { EPC = 16 }; };
template <> struct dt_traits<CUDA_DT_INT4> { enum { EPC = 32 }; };

/* One 16-byte chunk to EPC floats (INT4: q - 8, unscaled; FP8: unscaled). */
#define TDEV __device__ __forceinline__
template <int DT> TDEV void decode16(uint4 v, float *o);

template <> TDEV void decode16<CUDA_DT_F32>(uint4 v, float *o)
{
	o[0] = __uint_as_float(v.x);
	o[1] = __uint_as_float(v.y);
	o[2] = __uint_as_float(v.z);
	o[3] = __uint_as_float(v.w);
}

template <> TDEV void decode16<CUDA_DT_BF16>(uint4 v, float *o)
{
	uint32_t u[4] = { v.x, v.y, v.z, v.w };
#pragma unroll
	for (int j = 0; j < 4; j++) {
		o[2 * j] = __uint_as_float(u[j] << 16);
		o[2 * j + 1] = __uint_as_float(u[j] & 0xffff0000u);
	}
}

template <> TDEV void decode16<CUDA_DT_F16>(uint4 v, float *o)
{
	uint32_t u[4] = { v.x, v.y, v.z, v.w };
#pragma unroll
	for (int j = 0; j < 4; j++) {
		float2 f = __half22float2(*reinterpret_cast<__half2 *>(&u[j]));

		o[2 * j] = f.x;
		o[2 * j + 1] = f.y;
	}
}

template <> TDEV void decode16<CUDA_DT_FP8>(uint4 v, float *o)
{
	uint32_t u[4] = { v.x, v.y, v.z, v.w };
#pragma unroll
	for (int j = 0; j < 4; j++) {
		float2 a = fp8x2f(u[j] & 0xffff), b = fp8x2f(u[j] >> 16);

		o[4 * j] = a.x;
		o[4 * j + 1] = a.y;
		o[4 * j + 2] = b.x;
		o[4 * j + 3] = b.y;
	}
}

template <> TDEV void decode16<CUDA_DT_INT4>(uint4 v, float *o)
{
	uint32_t u[4] = { v.x, v.y, v.z, v.w };
#pragma unroll
	for (int j = 0; j < 4; j++)
#pragma unroll
		for (int n = 0; n < 8; n++)
			o[8 * j + n] = i4f((u[j] >> (4 * n)) & 15);
}

DEV float warp_sum(float v)
{
#pragma unroll
	for (int o = 16; o; o >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

DEV float silu(float g)
{
	return g / (1.0f + expf(-g));
}

/* Which part a global row (or tile) belongs to. */
DEV uint32_t part_of(const uint32_t *base, uint32_t n_parts, uint32_t g)
{
	uint32_t p = 0;

	while (p + 1 < n_parts && g >= base[p + 1])
		p++;
	return p;
}

/* ---- GEMV: decode and small batches -------------------------------------- */

template <int DT>
DEV size_t row_bytes(uint32_t cols)
{
	return DT == CUDA_DT_F32 ? (size_t)cols * 4 :
	       DT == CUDA_DT_FP8 ? (size_t)cols :
	       DT == CUDA_DT_INT4 ? (size_t)cols / 2 : (size_t)cols * 2;
}

/* Rows per block: the x a lane loads is used against R rows. */
template <int DT> struct mv_rows { enum { R = 4 }; };

/* Elements decoded at a time (registers: R x SUB floats); INT4's 32 per
 * chunk go in two halves. */
template <int DT> struct dt_sub { enum { SUB = dt_traits<DT>::EPC > 16 ? 16 : dt_traits<DT>::EPC }; };

template <int DT>
DEV void decode_sub(uint4 v, int part, float *o)
{
	if (DT == CUDA_DT_INT4) {
		uint32_t a = part ? v.z : v.x, b = part ? v.w : v.y;

#pragma unroll
		for (int n = 0; n < 8; n++) {
			o[n] = i4f((a >> (4 * n)) & 15);
			o[8 + n] = i4f((b >> (4 * n)) & 15);
		}
	} else {
		decode16<DT>(v, o);
	}
}

/*
 * acc[r][t] = row r0 + r of W . x[t] for r < nr (<= R) rows, t < nt (<= NT)
 * tokens, on one warp.  Each lane streams 16-byte chunks of the R rows,
 * chunk c = lane + 32 i, two chunks of every row in flight (R x 32 bytes
 * per lane, 2-4 KiB per warp), decodes them in registers and multiplies
 * them against the tokens' x, loaded once per chunk for all R rows (x is
 * L1/L2 resident: at most 8 x 56 KiB).  Decode is x-load and ALU bound
 * otherwise: one fp8 byte needs 4 bytes of x per token.  Rows must be
 * 16-byte aligned and cols a multiple of the chunk (checked at load).
 */
/* A weight chunk, streamed: read once, so kept out of L1 (x lives there). */
DEV uint4 ld_stream(const uint4 *p)
{
	uint4 v;

	asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
		     : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
	return v;
}

template <int DT, int NT>
DEV void rows_dot(const uint8_t *w, const void *scales, uint32_t r0, uint32_t nr,
		  uint32_t cols, const float *x, uint32_t ldx, uint32_t nt,
		  uint32_t lane, uint32_t warp, float (*acc)[NT])
{
	const int EPC = dt_traits<DT>::EPC, R = mv_rows<DT>::R;
	const uint32_t S = 32 * CUDA_MV_WARPS;	/* chunks per block-wide step */
	__shared__ float red[CUDA_MV_WARPS][R][NT];
	size_t rb = row_bytes<DT>(cols);
	uint32_t nch = cols / EPC, ng = cols / 128;

#pragma unroll
	for (int r = 0; r < R; r++)
#pragma unroll
		for (int t = 0; t < NT; t++)
			acc[r][t] = 0.0f;
	for (uint32_t c0 = warp * 32 + lane; c0 < nch; c0 += 2 * S) {
		uint4 buf[2][R];
		__half gsh[2][R];

		/* the weights and (INT4) their group scales, all in flight
		 * before the first is used: a scale read after the weights
		 * put an L2 latency in every chunk */
#pragma unroll
		for (int u = 0; u < 2; u++)
#pragma unroll
			for (int r = 0; r < R; r++) {
				uint32_t c = c0 + S * u;

				buf[u][r] = make_uint4(0, 0, 0, 0);
				gsh[u][r] = __float2half(1.0f);
				if (c < nch && (uint32_t)r < nr) {
					buf[u][r] = ld_stream(reinterpret_cast<const uint4 *>(
						w + (size_t)(r0 + r) * rb) + c);
					if (DT == CUDA_DT_INT4)
						gsh[u][r] = ((const __half *)scales)
							[(size_t)(r0 + r) * ng + c * EPC / 128];
				}
			}
#pragma unroll
		for (int u = 0; u < 2; u++) {
			const int SUB = dt_sub<DT>::SUB;
			uint32_t c = c0 + S * u;
			float gs[R];

			if (c >= nch)
				break;
#pragma unroll
			for (int r = 0; r < R; r++)
				gs[r] = __half2float(gsh[u][r]);
#pragma unroll
			for (int sp = 0; sp < EPC / SUB; sp++) {
				float wf[R][SUB];

#pragma unroll
				for (int r = 0; r < R; r++)
					decode_sub<DT>(buf[u][r], sp, wf[r]);
#pragma unroll
				for (int t = 0; t < NT; t++) {
					const float4 *xv;
					float part[R];

					if (t >= (int)nt)
						break;
					xv = reinterpret_cast<const float4 *>(
						x + (size_t)t * ldx + (size_t)c * EPC + sp * SUB);
#pragma unroll
					for (int r = 0; r < R; r++)
						part[r] = 0.0f;
#pragma unroll
					for (int e = 0; e < SUB / 4; e++) {
						float4 xx = __ldg(xv + e);

#pragma unroll
						for (int r = 0; r < R; r++) {
							part[r] = fmaf(wf[r][4 * e], xx.x, part[r]);
							part[r] = fmaf(wf[r][4 * e + 1], xx.y, part[r]);
							part[r] = fmaf(wf[r][4 * e + 2], xx.z, part[r]);
							part[r] = fmaf(wf[r][4 * e + 3], xx.w, part[r]);
						}
					}
#pragma unroll
					for (int r = 0; r < R; r++)
						acc[r][t] += DT == CUDA_DT_INT4 ? part[r] * gs[r] : part[r];
				}
			}
		}
	}
	/* lanes, then the block's warps (each took a quarter of the chunks) */
#pragma unroll
	for (int r = 0; r < R; r++)
#pragma unroll
		for (int t = 0; t < NT; t++)
			acc[r][t] = warp_sum(acc[r][t]);
	__syncthreads();	/* red[] free (a previous rows_dot read it) */
	if (lane == 0)
#pragma unroll
		for (int r = 0; r < R; r++)
#pragma unroll
			for (int t = 0; t < NT; t++)
				red[warp][r][t] = acc[r][t];
	__syncthreads();
#pragma unroll
	for (int r = 0; r < R; r++)
#pragma unroll
		for (int t = 0; t < NT; t++) {
			float v = 0.0f;

#pragma unroll
			for (int k = 0; k < CUDA_MV_WARPS; k++)
				v += red[k][r][t];
			acc[r][t] = v;
		}
	if (DT == CUDA_DT_FP8)
#pragma unroll
		for (int r = 0; r < R; r++) {
			float post = (uint32_t)r < nr ? ((const float *)scales)[r0 + r] : 0.0f;

#pragma unroll
			for (int t = 0; t < NT; t++)
				acc[r][t] *= post;
		}
}

/*
 * Block g of the grid takes R rows of one part, its 4 warps a quarter of
 * the columns each (interleaved 512-byte segments): part p owns units
 * [tile_base[p], tile_base[p + 1]) (the host counts ceil(rows / R) per
 * part, so no block straddles two parts).  Splitting the columns gives 4x
 * the blocks of a row split alone: an 8B model's 4096-row matrices fill
 * every SM several times over, which is what keeps enough loads in
 * flight.  SWIGLU: the same R rows of the gate (part 0) and up (part 1)
 * matrices.  Warp 0's lane (r * NT + t) % 32 writes output (r, t).
 */
template <int DT, int NT>
DEV void mv_body(const cuda_mv_args &a)
{
	const int R = mv_rows<DT>::R;
	uint32_t lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
	uint32_t g = blockIdx.x;
	uint32_t t0 = blockIdx.y * NT, nt = min((uint32_t)NT, a.nt - t0);
	const float *x = a.x + (size_t)t0 * a.ldx;
	float acc[R][NT], acc2[R][NT];
	uint32_t p, r0, nr;

	p = part_of(a.tile_base, a.n_parts, g);
	r0 = (g - a.tile_base[p]) * R;
	nr = min((uint32_t)R, a.rows[p] - r0);
	rows_dot<DT, NT>((const uint8_t *)a.w[p], a.scales[p], r0, nr, a.cols, x, a.ldx,
			 nt, lane, warp, acc);
	if (a.mode == CUDA_MV_SWIGLU) {
		rows_dot<DT, NT>((const uint8_t *)a.w[1], a.scales[1], r0, nr, a.cols, x,
				 a.ldx, nt, lane, warp, acc2);
		if (warp)
			return;
#pragma unroll
		for (int r = 0; r < R; r++)
#pragma unroll
			for (int t = 0; t < NT; t++)
				if (lane == (uint32_t)(r * NT + t) % 32 && t < (int)nt &&
				    (uint32_t)r < nr)
					a.y[0][(size_t)(t0 + t) * a.ldy[0] + r0 + r] =
						silu(acc[r][t]) * acc2[r][t];
		return;
	}
	if (warp)
		return;
#pragma unroll
	for (int r = 0; r < R; r++)
#pragma unroll
		for (int t = 0; t < NT; t++) {
			if (lane == (uint32_t)(r * NT + t) % 32 && t < (int)nt &&
			    (uint32_t)r < nr) {
				float v = acc[r][t];
				float *y = a.y[p] + (size_t)(t0 + t) * a.ldy[p] + r0 + r;

				if (a.bias[p])
					v += a.bias[p][r0 + r];
				if (a.mode == CUDA_MV_ADD)
					*y += v;
				else
					*y = v;
			}
		}
}

#define MV_ENTRY(name, DT, NT)                                                 \
	extern "C" __global__ void __launch_bounds__(32 * CUDA_MV_WARPS)        \
	k_mv_##name##_##NT(cuda_mv_args a)                                      \
	{                                                                       \
		mv_body<DT, NT>(a);                                             \
	}
#define MV_ENTRIES(name, DT)                                                   \
	MV_ENTRY(name, DT, 1) MV_ENTRY(name, DT, 2) MV_ENTRY(name, DT, 4)       \
	MV_ENTRY(name, DT, 8)

MV_ENTRIES(f32, CUDA_DT_F32)
MV_ENTRIES(bf16, CUDA_DT_BF16)
MV_ENTRIES(f16, CUDA_DT_F16)
MV_ENTRIES(fp8, CUDA_DT_FP8)
MV_ENTRIES(int4, CUDA_DT_INT4)

/* ---- tiled GEMM: prefill ------------------------------------------------- */

/* 8 consecutive weights of row r from k0 (k0 % 8 == 0), FP8 unscaled,
 * INT4 scaled by its group. */
template <int DT>
DEV void load8(const void *w, const void *sc, uint32_t r, uint32_t k0,
	       uint32_t cols, float *o)
{
	const uint8_t *row = (const uint8_t *)w + r * row_bytes<DT>(cols);

	if (DT == CUDA_DT_F32) {
		const float4 *p = reinterpret_cast<const float4 *>(row + (size_t)k0 * 4);
		float4 a = __ldg(p), b = __ldg(p + 1);

		o[0] = a.x; o[1] = a.y; o[2] = a.z; o[3] = a.w;
		o[4] = b.x; o[5] = b.y; o[6] = b.z; o[7] = b.w;
	} else if (DT == CUDA_DT_BF16 || DT == CUDA_DT_F16) {
		decode16<DT>(__ldg(reinterpret_cast<const uint4 *>(row + (size_t)k0 * 2)), o);
	} else if (DT == CUDA_DT_FP8) {
		uint2 v = __ldg(reinterpret_cast<const uint2 *>(row + k0));
		float2 f;

		f = fp8x2f(v.x & 0xffff); o[0] = f.x; o[1] = f.y;
		f = fp8x2f(v.x >> 16); o[2] = f.x; o[3] = f.y;
		f = fp8x2f(v.y & 0xffff); o[4] = f.x; o[5] = f.y;
		f = fp8x2f(v.y >> 16); o[6] = f.x; o[7] = f.y;
	} else {
		uint32_t v = __ldg(reinterpret_cast<const uint32_t *>(row + k0 / 2));
		float s = __half2float(((const __half *)sc)[(size_t)r * (cols / 128) + k0 / 128]);

#pragma unroll
		for (int n = 0; n < 8; n++)
			o[n] = i4f((v >> (4 * n)) & 15) * s;
	}
}

/*
 * y[t][r] for a 64-row x 64-token tile: weights decoded to float32 into
 * shared memory 32 columns at a time beside the matching x columns, each
 * of 256 threads accumulating 4 rows x 4 tokens.  CUDA-core float32
 * (no tensor cores): correct first; cuBLASLt is the fast route (docs).
 */
template <int DT>
DEV void mm_body(const cuda_mv_args &a)
{
	__shared__ __align__(16) float ws[CUDA_MM_TK][CUDA_MM_TILE + 4];
	__shared__ __align__(16) float xs[CUDA_MM_TK][CUDA_MM_TILE + 4];
	uint32_t tid = threadIdx.x, ty = tid / 16, tx = tid % 16;
	uint32_t p = part_of(a.tile_base, a.n_parts, blockIdx.x);
	uint32_t r0 = (blockIdx.x - a.tile_base[p]) * CUDA_MM_TILE;
	uint32_t t0 = blockIdx.y * CUDA_MM_TILE, rows = a.rows[p];
	uint32_t lr = tid / 4, lk = (tid % 4) * 8;
	float acc[4][4] = { { 0 } };

	for (uint32_t k0 = 0; k0 < a.cols; k0 += CUDA_MM_TK) {
		float wv[8], xv[8];

		if (r0 + lr < rows && k0 + lk < a.cols) {
			load8<DT>(a.w[p], a.scales[p], r0 + lr, k0 + lk, a.cols, wv);
		} else {
#pragma unroll
			for (int j = 0; j < 8; j++)
				wv[j] = 0.0f;
		}
		if (t0 + lr < a.nt && k0 + lk < a.cols) {
			const float4 *xp = reinterpret_cast<const float4 *>(
				a.x + (size_t)(t0 + lr) * a.ldx + k0 + lk);
			float4 u = __ldg(xp), v = __ldg(xp + 1);

			xv[0] = u.x; xv[1] = u.y; xv[2] = u.z; xv[3] = u.w;
			xv[4] = v.x; xv[5] = v.y; xv[6] = v.z; xv[7] = v.w;
		} else {
#pragma unroll
			for (int j = 0; j < 8; j++)
				xv[j] = 0.0f;
		}
		__syncthreads();
#pragma unroll
		for (int j = 0; j < 8; j++) {
			ws[lk + j][lr] = wv[j];
			xs[lk + j][lr] = xv[j];
		}
		__syncthreads();
#pragma unroll 8
		for (int k = 0; k < CUDA_MM_TK; k++) {
			float4 wa = *reinterpret_cast<const float4 *>(&ws[k][ty * 4]);
			float4 xb = *reinterpret_cast<const float4 *>(&xs[k][tx * 4]);
			float wr[4] = { wa.x, wa.y, wa.z, wa.w };
			float xr[4] = { xb.x, xb.y, xb.z, xb.w };

#pragma unroll
			for (int i = 0; i < 4; i++)
#pragma unroll
				for (int j = 0; j < 4; j++)
					acc[i][j] = fmaf(wr[i], xr[j], acc[i][j]);
		}
	}
#pragma unroll
	for (int i = 0; i < 4; i++) {
		uint32_t r = r0 + ty * 4 + i;
		float post, b;

		if (r >= rows)
			continue;
		post = DT == CUDA_DT_FP8 ? ((const float *)a.scales[p])[r] : 1.0f;
		b = a.bias[p] ? a.bias[p][r] : 0.0f;
#pragma unroll
		for (int j = 0; j < 4; j++) {
			uint32_t t = t0 + tx * 4 + j;
			float *y;

			if (t >= a.nt)
				continue;
			y = a.y[p] + (size_t)t * a.ldy[p] + r;
			if (a.mode == CUDA_MV_ADD)
				*y += acc[i][j] * post + b;
			else
				*y = acc[i][j] * post + b;
		}
	}
}

#define MM_ENTRY(name, DT)                                                     \
	extern "C" __global__ void __launch_bounds__(256) k_mm_##name(cuda_mv_args a) \
	{                                                                       \
		mm_body<DT>(a);                                                 \
	}
MM_ENTRY(f32, CUDA_DT_F32)
MM_ENTRY(bf16, CUDA_DT_BF16)
MM_ENTRY(f16, CUDA_DT_F16)
MM_ENTRY(fp8, CUDA_DT_FP8)
MM_ENTRY(int4, CUDA_DT_INT4)


/* ---- cuBLASLt companions (lt.c) ------------------------------------------- */

/*
 * A power of two for a token's row of n floats, by the 256 threads of the
 * block (all must call): e = the exponent of the row's largest magnitude,
 * clamped to +-100; returns 2^(target - e), by which the row is scaled
 * exactly, and thread 0 stores the inverse 2^(e - target) in *inv.  The
 * cuBLASLt E4M3 quantiser (target 7: within +-256) and the tensor-core
 * GEMM's pre-pass (k_mma_xq, target 14: within +-2^15 for f16) use it.
 */
DEV float row_pow2_scale(const float *xr, uint32_t n, int target, float *inv)
{
	__shared__ float red[8];
	float m = 0.0f;
	int e;

	for (uint32_t i = threadIdx.x; i < n; i += 256)
		m = fmaxf(m, fabsf(xr[i]));
#pragma unroll
	for (int o = 16; o; o >>= 1)
		m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
	if ((threadIdx.x & 31) == 0)
		red[threadIdx.x >> 5] = m;
	__syncthreads();
	m = 0.0f;
#pragma unroll
	for (int k = 0; k < 8; k++)
		m = fmaxf(m, red[k]);
	e = (int)((__float_as_uint(m) >> 23) & 0xff) - 127;
	e = max(-100, min(100, e));
	if (threadIdx.x == 0)
		*inv = __uint_as_float((uint32_t)(127 + e - target) << 23);
	return __uint_as_float((uint32_t)(127 + target - e) << 23);
}

/*
 * Token row blockIdx.x of x (K columns) to E4M3 with a power-of-two scale:
 * e = the exponent of the row's largest magnitude (clamped to +-100), the
 * row multiplied by 2^(7 - e) (exact) so that it lies within +-256, then
 * rounded to nearest even (saturating; nothing reaches 448); ts[t] =
 * 2^(e - 7) undoes it in the epilogue.  256 threads.
 */
extern "C" __global__ void __launch_bounds__(256)
k_ltq_fp8(const float *x, uint32_t ldx, uint32_t K, uint8_t *q, float *ts)
{
	uint32_t t = blockIdx.x;
	const float *xr = x + (size_t)t * ldx;
	uint8_t *qr = q + (size_t)t * K;
	float mul = row_pow2_scale(xr, K, 7, ts + t);

	for (uint32_t i = threadIdx.x; i < K; i += 256)
		qr[i] = (uint8_t)__nv_cvt_float_to_fp8(xr[i] * mul, __NV_SATFINITE, __NV_E4M3);
}

DEV uint16_t bf16_rne(float f)
{
	uint32_t b = __float_as_uint(f);

	return (uint16_t)((b + 0x7fffu + ((b >> 16) & 1)) >> 16);
}

/* Token row blockIdx.x of x to BF16 (nearest even); ts unused. */
extern "C" __global__ void __launch_bounds__(256)
k_ltq_bf16(const float *x, uint32_t ldx, uint32_t K, uint16_t *q, float *ts)
{
	uint32_t t = blockIdx.x;
	const float *xr = x + (size_t)t * ldx;
	uint16_t *qr = q + (size_t)t * K;

	(void)ts;
	for (uint32_t i = threadIdx.x; i < K; i += 256)
		qr[i] = bf16_rne(xr[i]);
}

/*
 * INT4 g128 [rows][K] to BF16 [rows][K]: each thread one 32-bit word (8
 * weights): (q - 8) * the group's f16 scale (exact in float32), rounded to
 * BF16.
 */
extern "C" __global__ void __launch_bounds__(256)
k_lt_deq4(const uint32_t *w, const __half *sc, uint32_t rows, uint32_t K, uint4 *out)
{
	size_t i = blockIdx.x * (size_t)256 + threadIdx.x;
	uint32_t wpr = K / 8, r, k0, v, o[4];
	float s;

	if (i >= (size_t)rows * wpr)
		return;
	r = (uint32_t)(i / wpr);
	k0 = (uint32_t)(i % wpr) * 8;
	s = __half2float(sc[(size_t)r * (K / 128) + k0 / 128]);
	v = w[i];
#pragma unroll
	for (int j = 0; j < 4; j++) {
		uint32_t lo = bf16_rne(i4f((v >> (8 * j)) & 15) * s);
		uint32_t hi = bf16_rne(i4f((v >> (8 * j + 4)) & 15) * s);

		o[j] = lo | (hi << 16);
	}
	out[i] = make_uint4(o[0], o[1], o[2], o[3]);
}

/* FP8 E4M3 weights to BF16, exactly (3 mantissa bits fit in 7), unscaled
 * (the epilogue applies the row scale): each thread 4 weights. */
extern "C" __global__ void __launch_bounds__(256)
k_lt_deq8(const uint32_t *w, uint32_t words, uint2 *out)
{
	size_t i = blockIdx.x * (size_t)256 + threadIdx.x;
	uint32_t v;
	float2 a, b;

	if (i >= words)
		return;
	v = w[i];
	a = fp8x2f(v & 0xffff);
	b = fp8x2f(v >> 16);
	out[i] = make_uint2((uint32_t)bf16_rne(a.x) | ((uint32_t)bf16_rne(a.y) << 16),
			    (uint32_t)bf16_rne(b.x) | ((uint32_t)bf16_rne(b.y) << 16));
}

/* The product's epilogue (cuda_lt_epi_args). */
extern "C" __global__ void __launch_bounds__(256) k_lt_epi(cuda_lt_epi_args e)
{
	size_t i = blockIdx.x * (size_t)256 + threadIdx.x;
	uint32_t t, r;
	float v;

	if (i >= (size_t)e.nt * e.rows)
		return;
	t = (uint32_t)(i / e.rows);
	r = (uint32_t)(i % e.rows);
	v = e.src[(size_t)t * e.ld_src + r];
	if (e.wscale)
		v *= e.wscale[r];
	if (e.tscale)
		v *= e.tscale[t];
	if (e.bias)
		v += e.bias[r];
	if (e.mode == CUDA_MV_ADD)
		e.y[(size_t)t * e.ldy + r] += v;
	else
		e.y[(size_t)t * e.ldy + r] = v;
}

/* ---- small ops ------------------------------------------------------------ */

/* x[t] = embed[tok[t]], one block per token. */
extern "C" __global__ void k_embed(const void *w, const void *sc, int dt,
				   uint32_t cols, const uint32_t *tok, float *x)
{
	uint32_t t = blockIdx.x, id = tok[t];

	/* 8 elements' loads in flight per thread before the stores (one at
	 * a time, a 4096-row took 7.7 us) */
	for (uint32_t i0 = threadIdx.x; i0 < cols; i0 += 8 * blockDim.x) {
		float v[8];

#pragma unroll
		for (uint32_t k = 0; k < 8; k++) {
			uint32_t i = i0 + k * blockDim.x;

			v[k] = i < cols ? w_at(dt, w, sc, id, i, cols) : 0.0f;
		}
#pragma unroll
		for (uint32_t k = 0; k < 8; k++)
			if (i0 + k * blockDim.x < cols)
				x[(size_t)t * cols + i0 + k * blockDim.x] = v[k];
	}
}

/*
 * out[i] = w * (x[src(i)] * rsqrt(mean(x^2) + eps)), one block (256
 * threads) per row; src(i) = idx ? idx[i] : i.  The mean of squares in
 * double, as the CPU backend.
 */
extern "C" __global__ void __launch_bounds__(256)
k_rmsnorm(const float *x, const uint32_t *idx, const float *w, float *out,
	  uint32_t n, float eps)
{
	__shared__ double red[8];
	uint32_t row = idx ? idx[blockIdx.x] : blockIdx.x;
	const float *xr = x + (size_t)row * n;
	float *o = out + (size_t)blockIdx.x * n;
	/* Rows of n % 4 == 0 and n <= 256 x 4 x RMS_V (8192) are read once,
	 * RMS_V float4s per thread all in flight before the first is used:
	 * a loop of dependent scalar loads made this a chain of n / 256 L2
	 * latencies (8.9 us per 4096-row on an H200, 64 of them per token). */
	const uint32_t RMS_V = 8;
	bool vec = (n & 3) == 0 && n <= 256 * 4 * RMS_V;
	float4 c[RMS_V], wv[RMS_V];
	double ss = 0.0;
	float r;

	if (vec) {
		/* the weights too: they do not wait for the sum */
#pragma unroll
		for (uint32_t k = 0; k < RMS_V; k++) {
			uint32_t i4 = threadIdx.x + 256 * k;
			bool in = 4 * i4 < n;

			c[k] = in ? __ldg(reinterpret_cast<const float4 *>(xr) + i4) :
				    make_float4(0.0f, 0.0f, 0.0f, 0.0f);
			wv[k] = in ? __ldg(reinterpret_cast<const float4 *>(w) + i4) :
				     make_float4(0.0f, 0.0f, 0.0f, 0.0f);
		}
#pragma unroll
		for (uint32_t k = 0; k < RMS_V; k++)
			ss += (double)c[k].x * c[k].x + (double)c[k].y * c[k].y +
			      (double)c[k].z * c[k].z + (double)c[k].w * c[k].w;
	} else {
		for (uint32_t i = threadIdx.x; i < n; i += 256)
			ss += (double)xr[i] * xr[i];
	}
#pragma unroll
	for (int k = 16; k; k >>= 1)
		ss += __shfl_xor_sync(0xffffffffu, ss, k);
	if ((threadIdx.x & 31) == 0)
		red[threadIdx.x >> 5] = ss;
	__syncthreads();
	ss = 0.0;
	for (int k = 0; k < 8; k++)
		ss += red[k];
	r = 1.0f / sqrtf((float)(ss / n) + eps);
	if (vec) {
#pragma unroll
		for (uint32_t k = 0; k < RMS_V; k++) {
			uint32_t i4 = threadIdx.x + 256 * k;

			if (4 * i4 < n) {
				float4 y;

				y.x = wv[k].x * (c[k].x * r);
				y.y = wv[k].y * (c[k].y * r);
				y.z = wv[k].z * (c[k].z * r);
				y.w = wv[k].w * (c[k].w * r);
				reinterpret_cast<float4 *>(o)[i4] = y;
			}
		}
		return;
	}
	for (uint32_t i = threadIdx.x; i < n; i += 256)
		o[i] = w[i] * (xr[i] * r);
}

/* g[i] = silu(g[i]) * u[i] (the GEMM route's SwiGLU). */
extern "C" __global__ void k_swiglu(float *g, const float *u, uint32_t n)
{
	uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;

	if (i < n)
		g[i] = silu(g[i]) * u[i];
}

/*
 * RoPE on q and k of token blockIdx.x, then k and v into the token's KV
 * slot.  Thread i of the token: unit i / half (q heads, k heads, v heads),
 * pair (e, e + half) with e = i % half.
 */
extern "C" __global__ void k_rope_store(cuda_rope_args a)
{
	uint32_t t = blockIdx.x, half = a.hd / 2, pos = a.tok_pos[t];
	uint32_t q_dim = a.n_heads * a.hd, kv_dim = a.n_kv * a.hd;
	uint32_t units = a.n_heads + 2 * a.n_kv;
	const float *cs = a.cos_t + (size_t)pos * half, *sn = a.sin_t + (size_t)pos * half;
	size_t blk = (size_t)a.tok_blk[t] * a.blk_stride;

	for (uint32_t i = threadIdx.x; i < units * half; i += blockDim.x) {
		uint32_t u = i / half, e = i % half;
		float x0, x1, y0, y1;
		size_t o;

		if (u < a.n_heads) {
			float *q = a.q + (size_t)t * q_dim + u * a.hd;

			x0 = q[e];
			x1 = q[e + half];
			q[e] = x0 * cs[e] - x1 * sn[e];
			q[e + half] = x1 * cs[e] + x0 * sn[e];
			continue;
		}
		if (u < a.n_heads + a.n_kv) {
			uint32_t h = u - a.n_heads;
			const float *k = a.k + (size_t)t * kv_dim + h * a.hd;

			x0 = k[e];
			x1 = k[e + half];
			y0 = x0 * cs[e] - x1 * sn[e];
			y1 = x1 * cs[e] + x0 * sn[e];
			o = blk + ((size_t)h * a.B + a.tok_slot[t]) * a.hd + e;
			if (a.kv_bf16) {
				uint16_t *kc = (uint16_t *)a.kc;
				uint32_t b0 = __float_as_uint(y0), b1 = __float_as_uint(y1);

				/* round to nearest even */
				kc[o] = (uint16_t)((b0 + 0x7fffu + ((b0 >> 16) & 1)) >> 16);
				kc[o + half] = (uint16_t)((b1 + 0x7fffu + ((b1 >> 16) & 1)) >> 16);
			} else {
				((float *)a.kc)[o] = y0;
				((float *)a.kc)[o + half] = y1;
			}
			continue;
		}
		{
			uint32_t h = u - a.n_heads - a.n_kv;
			const float *v = a.v + (size_t)t * kv_dim + h * a.hd;

			o = blk + ((size_t)h * a.B + a.tok_slot[t]) * a.hd + e;
			if (a.kv_bf16) {
				uint16_t *vc = (uint16_t *)a.vc;
				uint32_t b0 = __float_as_uint(v[e]), b1 = __float_as_uint(v[e + half]);

				vc[o] = (uint16_t)((b0 + 0x7fffu + ((b0 >> 16) & 1)) >> 16);
				vc[o + half] = (uint16_t)((b1 + 0x7fffu + ((b1 >> 16) & 1)) >> 16);
			} else {
				((float *)a.vc)[o] = v[e];
				((float *)a.vc)[o + half] = v[e + half];
			}
		}
	}
}

/* ---- paged attention ------------------------------------------------------ */

template <bool BF16>
DEV float kv_at(const void *base, size_t i)
{
	if (BF16)
		return bf16f(((const uint16_t *)base)[i]);
	return ((const float *)base)[i];
}

#define ATT_WARPS 4
#define ATT_E 8		/* head_dim <= 32 * ATT_E = 256 */
#define ATT_P 4		/* positions per warp in flight (decode) */

/*
 * One block of 4 warps per (head, token, split): the split's positions
 * dealt to the warps round robin; a warp takes one position at a time,
 * its lanes holding elements lane + 32 e of q, k, v (coalesced rows), and
 * keeps a running maximum, sum and weighted v (online softmax).  The four
 * warps merge through shared memory; with nsplit > 1 the block writes
 * (max, sum, o[hd]) for k_attn_merge, which splits long contexts over
 * more blocks (flash-decoding) so that a batch-1 decode fills the GPU.
 */
template <bool BF16>
DEV void attn_body(const cuda_attn_args &a)
{
	__shared__ float sm_m[ATT_WARPS], sm_l[ATT_WARPS];
	__shared__ float sm_o[ATT_WARPS][32 * ATT_E];
	uint32_t h = blockIdx.x, t = blockIdx.y, z = blockIdx.z;
	uint32_t lane = threadIdx.x & 31, w = threadIdx.x >> 5;
	uint32_t hd = a.hd, kvh = h / a.group, B = 1u << a.b_shift;
	uint32_t n = a.tok_pos[t] + 1;
	uint32_t j0 = a.window && n > a.window ? n - a.window : 0;
	uint32_t len = n - j0, chunk = (len + a.nsplit - 1) / a.nsplit;
	uint32_t js = j0 + z * chunk, je = min(n, js + chunk);
	const uint32_t *tab = a.tables + (size_t)a.tok_seq[t] * a.table_ld;
	const float *q = a.q + (size_t)t * a.q_ld + h * hd;
	float qv[ATT_E], o[ATT_E], m = -INFINITY, l = 0.0f;

#pragma unroll
	for (int e = 0; e < ATT_E; e++) {
		uint32_t i = lane + 32 * e;

		qv[e] = i < hd ? q[i] : 0.0f;
		o[e] = 0.0f;
	}
	/* ATT_P positions per warp at a time, their block-table reads, then
	 * their K and V rows, all issued before the first is used: one
	 * position at a time made each split a chain of dependent L2/HBM
	 * latencies (28 us per layer at 600 positions on an H200). */
	for (uint32_t j = js + w * ATT_P; j < je; j += ATT_WARPS * ATT_P) {
		size_t base[ATT_P];
		float kf[ATT_P][ATT_E], vf[ATT_P][ATT_E], s[ATT_P], mn = m, corr;

#pragma unroll
		for (int p = 0; p < ATT_P; p++) {
			uint32_t jj = j + p < je ? j + p : j;

			base[p] = (size_t)tab[jj >> a.b_shift] * a.blk_stride +
				  ((size_t)kvh * B + (jj & (B - 1))) * hd;
		}
#pragma unroll
		for (int p = 0; p < ATT_P; p++)
#pragma unroll
			for (int e = 0; e < ATT_E; e++) {
				uint32_t i = lane + 32 * e;

				kf[p][e] = i < hd ? kv_at<BF16>(a.kc, base[p] + i) : 0.0f;
				vf[p][e] = i < hd ? kv_at<BF16>(a.vc, base[p] + i) : 0.0f;
			}
#pragma unroll
		for (int p = 0; p < ATT_P; p++) {
			s[p] = 0.0f;
#pragma unroll
			for (int e = 0; e < ATT_E; e++)
				s[p] = fmaf(qv[e], kf[p][e], s[p]);
		}
#pragma unroll
		for (int p = 0; p < ATT_P; p++) {
			s[p] = warp_sum(s[p]) * a.scale;
			if (j + p < je)
				mn = fmaxf(mn, s[p]);
		}
		corr = expf(m - mn);
		l *= corr;
#pragma unroll
		for (int e = 0; e < ATT_E; e++)
			o[e] *= corr;
#pragma unroll
		for (int p = 0; p < ATT_P; p++) {
			float pr = j + p < je ? expf(s[p] - mn) : 0.0f;

			l += pr;
#pragma unroll
			for (int e = 0; e < ATT_E; e++)
				o[e] = fmaf(pr, vf[p][e], o[e]);
		}
		m = mn;
	}
	if (lane == 0) {
		sm_m[w] = m;
		sm_l[w] = l;
	}
#pragma unroll
	for (int e = 0; e < ATT_E; e++)
		sm_o[w][lane + 32 * e] = o[e];
	__syncthreads();
	if (w)
		return;
	{
		float M = -INFINITY, L = 0.0f, O[ATT_E], f[ATT_WARPS];

		for (int k = 0; k < ATT_WARPS; k++)
			M = fmaxf(M, sm_m[k]);
		for (int k = 0; k < ATT_WARPS; k++) {
			f[k] = sm_m[k] == -INFINITY ? 0.0f : expf(sm_m[k] - M);
			L += sm_l[k] * f[k];
		}
#pragma unroll
		for (int e = 0; e < ATT_E; e++) {
			O[e] = 0.0f;
			for (int k = 0; k < ATT_WARPS; k++)
				O[e] += sm_o[k][lane + 32 * e] * f[k];
		}
		if (a.nsplit == 1) {
			float *out = a.out + (size_t)t * a.q_ld + h * hd;
			float inv = 1.0f / L;

#pragma unroll
			for (int e = 0; e < ATT_E; e++)
				if (lane + 32 * e < hd)
					out[lane + 32 * e] = O[e] * inv;
		} else {
			float *pp = a.part + (((size_t)t * a.n_heads + h) * a.nsplit + z) * (hd + 2);

			if (lane == 0) {
				pp[0] = M;
				pp[1] = L;
			}
#pragma unroll
			for (int e = 0; e < ATT_E; e++)
				if (lane + 32 * e < hd)
					pp[2 + lane + 32 * e] = O[e];
		}
	}
}

extern "C" __global__ void __launch_bounds__(32 * ATT_WARPS) k_attn_f32(cuda_attn_args a)
{
	attn_body<false>(a);
}

extern "C" __global__ void __launch_bounds__(32 * ATT_WARPS) k_attn_bf16(cuda_attn_args a)
{
	attn_body<true>(a);
}

/*
 * Merge the splits of (head blockIdx.x, token blockIdx.y); hd threads.
 * Warp 0 reads every split's (max, sum) at once (nsplit <= 64, the cap of
 * cuda_att_splits) and leaves each split's factor in shared memory; a
 * loop of dependent reads over the splits made this 4 us per layer.
 */
extern "C" __global__ void k_attn_merge(cuda_attn_args a)
{
	__shared__ float sf[64], sl;
	uint32_t h = blockIdx.x, t = blockIdx.y, hd = a.hd, ns = a.nsplit;
	const float *pp = a.part + ((size_t)t * a.n_heads + h) * ns * (hd + 2);

	if (threadIdx.x < 32) {
		uint32_t z0 = threadIdx.x, z1 = threadIdx.x + 32;
		float m0 = z0 < ns ? pp[z0 * (hd + 2)] : -INFINITY;
		float m1 = z1 < ns ? pp[z1 * (hd + 2)] : -INFINITY;
		float l0 = z0 < ns ? pp[z0 * (hd + 2) + 1] : 0.0f;
		float l1 = z1 < ns ? pp[z1 * (hd + 2) + 1] : 0.0f;
		float M = fmaxf(m0, m1), f0, f1, L;

#pragma unroll
		for (int o = 16; o; o >>= 1)
			M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, o));
		f0 = m0 == -INFINITY ? 0.0f : expf(m0 - M);
		f1 = m1 == -INFINITY ? 0.0f : expf(m1 - M);
		L = warp_sum(l0 * f0 + l1 * f1);
		if (z0 < ns)
			sf[z0] = f0;
		if (z1 < ns)
			sf[z1] = f1;
		if (threadIdx.x == 0)
			sl = L;
	}
	__syncthreads();
	for (uint32_t i = threadIdx.x; i < hd; i += blockDim.x) {
		float O = 0.0f;

#pragma unroll 4
		for (uint32_t z = 0; z < ns; z++)
			O = fmaf(pp[z * (hd + 2) + 2 + i], sf[z], O);
		a.out[(size_t)t * a.q_ld + h * hd + i] = O / sl;
	}
}

/*
 * Tiled (flash-style) prefill attention.  Block (tile, head): the tile's
 * up to 16 queries (consecutive tokens of one sequence, tiles[2 * tile] =
 * first token, tiles[2 * tile + 1] = count) against the keys 0 .. the
 * last query's position (a sliding window from the first query's), 8 keys
 * at a time through shared memory, so each key and value row is read once
 * per tile instead of once per query.  Warp w owns queries 4w .. 4w + 3;
 * for the scores lane (k = lane & 7, part = lane >> 3) takes key k's
 * dimensions part, part + 4, ...; a causal mask per query; online softmax
 * as k_attn; lane holds output elements lane + 32 e.  K rows are padded by
 * 4 floats so that the 32 lanes' reads fall in 32 banks.
 */
#define FL_KT 8
#define FL_WQ (CUDA_FLASH_QT / ATT_WARPS)

template <bool BF16>
DEV void flash_body(const cuda_attn_args &a, const uint32_t *tiles)
{
	__shared__ float qs[CUDA_FLASH_QT][32 * ATT_E];
	__shared__ float ks[FL_KT][32 * ATT_E + 4];
	__shared__ float vs[FL_KT][32 * ATT_E];
	uint32_t tile = blockIdx.x, h = blockIdx.y;
	uint32_t t0 = tiles[2 * tile], nq = tiles[2 * tile + 1];
	uint32_t lane = threadIdx.x & 31, w = threadIdx.x >> 5;
	uint32_t k = lane & 7, part = lane >> 3;
	uint32_t hd = a.hd, kvh = h / a.group, B = 1u << a.b_shift;
	uint32_t p_first = a.tok_pos[t0], p_last = a.tok_pos[t0 + nq - 1];
	uint32_t j_lo = a.window && p_first + 1 > a.window ? p_first + 1 - a.window : 0;
	const uint32_t *tab = a.tables + (size_t)a.tok_seq[t0] * a.table_ld;
	float m[FL_WQ], l[FL_WQ], o[FL_WQ][ATT_E];
	uint32_t pos[FL_WQ], lo[FL_WQ];

	for (uint32_t i = threadIdx.x; i < CUDA_FLASH_QT * hd; i += blockDim.x) {
		uint32_t qi = i / hd, d = i % hd;

		qs[qi][d] = qi < nq ? a.q[(size_t)(t0 + qi) * a.q_ld + h * hd + d] : 0.0f;
	}
#pragma unroll
	for (int u = 0; u < FL_WQ; u++) {
		uint32_t qi = w * FL_WQ + u;

		pos[u] = qi < nq ? a.tok_pos[t0 + qi] : 0;
		lo[u] = a.window && pos[u] + 1 > a.window ? pos[u] + 1 - a.window : 0;
		m[u] = -INFINITY;
		l[u] = 0.0f;
#pragma unroll
		for (int e = 0; e < ATT_E; e++)
			o[u][e] = 0.0f;
	}
	for (uint32_t jc = j_lo; jc <= p_last; jc += FL_KT) {
		__syncthreads();	/* the previous chunk is consumed (and qs written) */
		for (uint32_t i = threadIdx.x; i < FL_KT * hd; i += blockDim.x) {
			uint32_t kk = i / hd, d = i % hd, j = jc + kk;
			float kv = 0.0f, vv = 0.0f;

			if (j <= p_last) {
				size_t base = (size_t)tab[j >> a.b_shift] * a.blk_stride +
					      ((size_t)kvh * B + (j & (B - 1))) * hd;

				kv = kv_at<BF16>(a.kc, base + d);
				vv = kv_at<BF16>(a.vc, base + d);
			}
			ks[kk][d] = kv;
			vs[kk][d] = vv;
		}
		__syncthreads();
#pragma unroll
		for (int u = 0; u < FL_WQ; u++) {
			uint32_t qi = w * FL_WQ + u, j = jc + k;
			float s = 0.0f, cmax, mn, corr, p, ps;

			if (qi >= nq)
				break;	/* warp-uniform */
			for (uint32_t d = part; d < hd; d += 4)
				s = fmaf(qs[qi][d], ks[k][d], s);
			s += __shfl_xor_sync(0xffffffffu, s, 8);
			s += __shfl_xor_sync(0xffffffffu, s, 16);
			s *= a.scale;
			if (j > pos[u] || j < lo[u])
				s = -INFINITY;
			cmax = s;
			cmax = fmaxf(cmax, __shfl_xor_sync(0xffffffffu, cmax, 1));
			cmax = fmaxf(cmax, __shfl_xor_sync(0xffffffffu, cmax, 2));
			cmax = fmaxf(cmax, __shfl_xor_sync(0xffffffffu, cmax, 4));
			mn = fmaxf(m[u], cmax);
			if (mn == -INFINITY)
				continue;	/* no key of this query here yet (uniform) */
			corr = expf(m[u] - mn);
			p = expf(s - mn);
			ps = p;
			ps += __shfl_xor_sync(0xffffffffu, ps, 1);
			ps += __shfl_xor_sync(0xffffffffu, ps, 2);
			ps += __shfl_xor_sync(0xffffffffu, ps, 4);
			l[u] = l[u] * corr + ps;
#pragma unroll
			for (int e = 0; e < ATT_E; e++)
				o[u][e] *= corr;
#pragma unroll
			for (int kk = 0; kk < FL_KT; kk++) {
				float pk = __shfl_sync(0xffffffffu, p, kk);

#pragma unroll
				for (int e = 0; e < ATT_E; e++)
					if (lane + 32 * e < hd)
						o[u][e] = fmaf(pk, vs[kk][lane + 32 * e], o[u][e]);
			}
			m[u] = mn;
		}
	}
#pragma unroll
	for (int u = 0; u < FL_WQ; u++) {
		uint32_t qi = w * FL_WQ + u;
		float inv;
		float *out;

		if (qi >= nq)
			break;
		inv = 1.0f / l[u];
		out = a.out + (size_t)(t0 + qi) * a.q_ld + h * hd;
#pragma unroll
		for (int e = 0; e < ATT_E; e++)
			if (lane + 32 * e < hd)
				out[lane + 32 * e] = o[u][e] * inv;
	}
}

extern "C" __global__ void __launch_bounds__(32 * ATT_WARPS)
k_flash_f32(cuda_attn_args a, const uint32_t *tiles)
{
	flash_body<false>(a, tiles);
}

extern "C" __global__ void __launch_bounds__(32 * ATT_WARPS)
k_flash_bf16(cuda_attn_args a, const uint32_t *tiles)
{
	flash_body<true>(a, tiles);
}

/* ---- greedy --------------------------------------------------------------- */

/*
 * tok[i] = argmax of logits row i (NaN as -inf, ties to the lowest id, as
 * eng_sampler's greedy); -1 when no logit is finite or above -inf (the
 * host sampler then decides).  One block of 1024 threads per row.
 */
extern "C" __global__ void __launch_bounds__(1024)
k_argmax(const float *logits, uint32_t vocab, int32_t *tok)
{
	__shared__ float sv[32];
	__shared__ int32_t si[32];
	const float *l = logits + (size_t)blockIdx.x * vocab;
	float bv = -INFINITY;
	int32_t bi = -1;
	uint32_t lane = threadIdx.x & 31, w = threadIdx.x >> 5, i = threadIdx.x;

	/* 8 loads in flight per thread (a loop of one load at a time was a
	 * chain of 125 L2 latencies for a 128256 row: 18.6 us on an H200);
	 * ascending i per thread, so ties still go to the lowest id */
	for (; i + 7 * 1024 < vocab; i += 8 * 1024) {
		float v[8];

#pragma unroll
		for (int k = 0; k < 8; k++)
			v[k] = l[i + 1024 * k];
#pragma unroll
		for (int k = 0; k < 8; k++)
			if (v[k] > bv) {	/* NaN never compares greater */
				bv = v[k];
				bi = (int32_t)(i + 1024 * k);
			}
	}
	for (; i < vocab; i += 1024) {
		float v = l[i];

		if (v > bv) {
			bv = v;
			bi = (int32_t)i;
		}
	}
#pragma unroll
	for (int k = 16; k; k >>= 1) {
		float ov = __shfl_xor_sync(0xffffffffu, bv, k);
		int32_t oi = __shfl_xor_sync(0xffffffffu, bi, k);

		if (oi >= 0 && (bi < 0 || ov > bv || (ov == bv && oi < bi))) {
			bv = ov;
			bi = oi;
		}
	}
	if (lane == 0) {
		sv[w] = bv;
		si[w] = bi;
	}
	__syncthreads();
	if (w == 0) {
		bv = sv[lane];
		bi = si[lane];
#pragma unroll
		for (int k = 16; k; k >>= 1) {
			float ov = __shfl_xor_sync(0xffffffffu, bv, k);
			int32_t oi = __shfl_xor_sync(0xffffffffu, bi, k);

			if (oi >= 0 && (bi < 0 || ov > bv || (ov == bv && oi < bi))) {
				bv = ov;
				bi = oi;
			}
		}
		if (lane == 0)
			tok[blockIdx.x] = bi;
	}
}

/* Device-to-device copy bandwidth probe and fill for tests: y[i] = x[i]. */
extern "C" __global__ void k_copy16(const uint4 *x, uint4 *y, size_t n)
{
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
	     i += (size_t)gridDim.x * blockDim.x)
		y[i] = x[i];
}

/* ---- tensor-core GEMM (gpumma) ------------------------------------------- */
#include "k_mma.cuh"

/* ---- sampling (gpusample) ------------------------------------------------ */
#include "k_sample.cuh"

/* ---- tensor-core GEMV for decode (integrator) -------------------------- */
#include "k_mvt.cuh"
