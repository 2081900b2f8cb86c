// SPDX-License-Identifier: MIT
/*
 * k_mvt.cuh — tensor-core GEMV for decode steps of 1..16 tokens with FP8
 * E4M3 weights (included by kernels.cu; uses its helpers).
 *
 * Why: the CUDA-core GEMV (k_mv) spends nt FMAs per weight and reads each
 * token's f32 activations at a 64-byte lane stride: a Llama-3-8B step of 8
 * tokens took 16 ms on an H200 (3.5 ms for one).  Here the weights go
 * through mma.sync m16n8k16 (f16 in, f32 accumulation) with the tokens as
 * the n dimension, so 2..16 tokens cost about what the weight bytes cost.
 *
 * Numerics: E4M3 -> f16 is exact (cvt.rn.f16x2.e4m3x2).  Each token's
 * activations are split per 64-column chunk into two f16 parts, x * 2^s =
 * hi + lo (2^s puts the chunk's largest magnitude in [2^14, 2^15), so
 * nothing overflows), both multiplied in: hi + lo carry ~22 bits, so the
 * result is as precise as the f32 path's up to summation order.  A
 * chunk's two products land in a scratch accumulator scaled back by 2^-s
 * into the running one.  FP8's row scale after the dot product, as k_mv.
 *
 * Layout: a block of 4 warps owns 64 rows (16 per warp; SWIGLU: 32 rows,
 * warps 0-1 the gate's, 2-3 the same rows of up) and one slice of at most
 * MVT_SLICE chunks of 64 columns (blockIdx.y of gridDim.y, split-K).  It
 * converts the tokens' activations of its slice once into shared memory
 * while its first weights are in flight, then each warp streams its rows
 * with MVT_DEPTH chunks in flight per lane and no further barrier.
 * Lane (g = lane / 4, q = lane % 4) loads bytes [16q, 16q + 16) of rows g
 * and g + 8 of a chunk; for k-step j (0..3) its A registers are bytes
 * 16q + 4j .. + 3 of both rows, which fixes the k order the B fragment
 * follows: the B registers of lane (n = g, q) are token n's activations
 * at those four columns, 8 bytes of the converted slice.
 *
 * Split-K: with gridDim.y > 1 each block writes its 64 x 16 partial sums
 * to a.part, and the last block of a row tile to arrive (a counter per
 * tile in a.sem, reset by that block) adds the slices in slice order and
 * applies the epilogue — deterministic, one launch.  The host picks the
 * split (cuda_mvt_split) so that a small matrix still spreads over every
 * SM; the split depends on the shape only, not on the tokens.
 */

#define MVT_WARPS 4
#define MVT_CH 64			/* columns per chunk */
/* chunks per column slice, the same for 8 and 16 tokens so that the
 * split, hence the sum order, does not depend on the token count; the
 * block's activations (hi and lo f16) take 16 or 32 KiB of shared memory */
#define MVT_SLICE(NTL) CUDA_MVT_SLICE
/* f16 pitch of a token's slice: 2 mod 64, so a half-warp's B reads hit
 * 16 distinct bank pairs */
#define MVT_XP(NTL) (MVT_CH * MVT_SLICE(NTL) + 4)
#define MVT_NT 16			/* tokens per launch (2 n-tiles) */
#define MVT_DEPTH 4			/* chunks of weights in flight per lane */
#define MVT_TILE (16 * MVT_WARPS)	/* partial sums per token per block */

DEV void mma_f16_16816(float *c, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
		       uint32_t b0, uint32_t b1)
{
	asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
		     "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
		     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
		     : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

DEV uint32_t e4m3x2_f16x2(uint32_t b2)
{
	uint32_t h2;
	unsigned short in = (unsigned short)b2;

	asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(h2) : "h"(in));
	return h2;
}

DEV uint32_t f16x2_pack(float lo, float hi)
{
	__half2 h = __floats2half2_rn(lo, hi);

	return *reinterpret_cast<uint32_t *>(&h);
}

/*
 * The block's slice of the activations, converted once: thread i takes
 * float4 i, i + 128, ... of the slice's nt x (16 per chunk); a token's 16
 * float4 of one chunk lie in one half-warp, which reduces their largest
 * magnitude.  xs[0] (hi) and xs[1] (lo), f16, token t's chunk c at
 * xs[.][t][64 c ..], scaled by 2^s per (chunk, token); 2^-s in
 * xsc[c][t].  Tokens past nt are not written (their B columns only feed
 * output columns that are never read).
 */
template <int NTL>
DEV void mvt_x_slice(const float *x, uint32_t ldx, uint32_t nt, uint32_t c_lo,
		     uint32_t nc, __half (*xs)[8 * NTL][MVT_XP(NTL)], float (*xsc)[MVT_NT])
{
	uint32_t n4 = ((nt + 1) & ~1u) * 16 * nc;	/* whole half-warps per token */

	for (uint32_t i = threadIdx.x; i < n4; i += 128) {
		uint32_t t = (i >> 4) % ((nt + 1) & ~1u), c = (i >> 4) / ((nt + 1) & ~1u);
		uint32_t e = i & 15, col = 64 * c + 4 * e;
		float4 v = t < nt ? __ldg(reinterpret_cast<const float4 *>(
					x + (size_t)t * ldx + (size_t)(c_lo + c) * MVT_CH) + e) :
				    make_float4(0.0f, 0.0f, 0.0f, 0.0f);
		float mx, sc, a0, a1, a2, a3;
		uint32_t h01, h23, eb;
		float2 f01, f23;
		int ex;

		mx = fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w)));
#pragma unroll
		for (int o = 8; o; o >>= 1)
			mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
		/* 2^ex puts the largest magnitude in [2^14, 2^15): from its
		 * biased exponent eb, ex = 14 - (eb - 127); zero, subnormal,
		 * inf or NaN: 1 */
		eb = (__float_as_uint(mx) >> 23) & 0xffu;
		ex = eb && eb < 255 ? max(-100, min(100, 141 - (int)eb)) : 0;
		if (t >= nt)
			continue;
		sc = __uint_as_float((uint32_t)(127 + ex) << 23);
		a0 = v.x * sc, a1 = v.y * sc, a2 = v.z * sc, a3 = v.w * sc;
		h01 = f16x2_pack(a0, a1);
		h23 = f16x2_pack(a2, a3);
		f01 = __half22float2(*reinterpret_cast<__half2 *>(&h01));
		f23 = __half22float2(*reinterpret_cast<__half2 *>(&h23));
		*reinterpret_cast<uint2 *>(&xs[0][t][col]) = make_uint2(h01, h23);
		*reinterpret_cast<uint2 *>(&xs[1][t][col]) =
			make_uint2(f16x2_pack(a0 - f01.x, a1 - f01.y), f16x2_pack(a2 - f23.x, a3 - f23.y));
		if (e == 0)
			xsc[c][t] = __uint_as_float((uint32_t)(127 - ex) << 23);
	}
}

/* Bytes [16q, 16q + 16) of rows g and g + 8 (of nr valid) of chunk c. */
DEV void mvt_w_load(const uint8_t *w, size_t rb, uint32_t nr, uint32_t c, uint32_t g,
		    uint32_t q, uint4 &wa, uint4 &wb)
{
	const uint8_t *base = w + (size_t)c * MVT_CH + 16 * q;

	wa = g < nr ? ld_stream(reinterpret_cast<const uint4 *>(base + (size_t)g * rb)) :
		      make_uint4(0, 0, 0, 0);
	wb = g + 8 < nr ? ld_stream(reinterpret_cast<const uint4 *>(base + (size_t)(g + 8) * rb)) :
			  make_uint4(0, 0, 0, 0);
}

/* One chunk of the warp's 16 rows (wa, wb) against the converted tokens. */
template <int NTL>
DEV void mvt_chunk(uint4 wa, uint4 wb, const __half (*xs)[8 * NTL][MVT_XP(NTL)],
		   uint32_t c, const float *xsc, uint32_t g, uint32_t q, float (*acc)[4])
{
	float tmp[NTL][4];

#pragma unroll
	for (int n = 0; n < NTL; n++)
#pragma unroll
		for (int i = 0; i < 4; i++)
			tmp[n][i] = 0.0f;
#pragma unroll
	for (int j = 0; j < 4; j++) {
		uint32_t wj = j == 0 ? wa.x : j == 1 ? wa.y : j == 2 ? wa.z : wa.w;
		uint32_t vj = j == 0 ? wb.x : j == 1 ? wb.y : j == 2 ? wb.z : wb.w;
		uint32_t a0 = e4m3x2_f16x2(wj & 0xffff), a1 = e4m3x2_f16x2(vj & 0xffff);
		uint32_t a2 = e4m3x2_f16x2(wj >> 16), a3 = e4m3x2_f16x2(vj >> 16);

#pragma unroll
		for (int n = 0; n < NTL; n++) {
			uint2 h = *reinterpret_cast<const uint2 *>(&xs[0][8 * n + g][64 * c + 16 * q + 4 * j]);
			uint2 l = *reinterpret_cast<const uint2 *>(&xs[1][8 * n + g][64 * c + 16 * q + 4 * j]);

			mma_f16_16816(tmp[n], a0, a1, a2, a3, h.x, h.y);
			mma_f16_16816(tmp[n], a0, a1, a2, a3, l.x, l.y);
		}
	}
	/* C columns 2q, 2q + 1 of n-tile n are tokens 8n + 2q, + 1 */
#pragma unroll
	for (int n = 0; n < NTL; n++) {
		float s0 = xsc[8 * n + 2 * q], s1 = xsc[8 * n + 2 * q + 1];

		acc[n][0] = fmaf(tmp[n][0], s0, acc[n][0]);
		acc[n][1] = fmaf(tmp[n][1], s1, acc[n][1]);
		acc[n][2] = fmaf(tmp[n][2], s0, acc[n][2]);
		acc[n][3] = fmaf(tmp[n][3], s1, acc[n][3]);
	}
}

/* y for element (row rr of the block, token t) from the reduced sums. */
DEV void mvt_out(const cuda_mv_args &a, uint32_t p, uint32_t r0, uint32_t rr, uint32_t t,
		 float v, float u)
{
	float *y;

	if (a.mode == CUDA_MV_SWIGLU) {
		v *= ((const float *)a.scales[0])[r0 + rr];
		u *= ((const float *)a.scales[1])[r0 + rr];
		a.y[0][(size_t)t * a.ldy[0] + r0 + rr] = silu(v) * u;
		return;
	}
	v *= ((const float *)a.scales[p])[r0 + rr];
	if (a.bias[p])
		v += a.bias[p][r0 + rr];
	y = a.y[p] + (size_t)t * a.ldy[p] + r0 + rr;
	if (a.mode == CUDA_MV_ADD)
		*y += v;
	else
		*y = v;
}

template <int NTL>
DEV void mvt_body(const cuda_mv_args &a)
{
	__shared__ __align__(16) __half xs[2][8 * NTL][MVT_XP(NTL)];
	__shared__ float xsc[MVT_SLICE(NTL)][MVT_NT];
	__shared__ float red[MVT_TILE][MVT_NT + 1];
	__shared__ uint32_t last;
	uint32_t lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
	uint32_t g = lane >> 2, q = lane & 3, blk = blockIdx.x;
	uint32_t ks = blockIdx.y, nks = gridDim.y, nt = a.nt;
	bool swiglu = a.mode == CUDA_MV_SWIGLU;
	uint32_t p = part_of(a.tile_base, a.n_parts, blk);
	uint32_t rows_blk = swiglu ? MVT_TILE / 2 : MVT_TILE;
	uint32_t r0 = (blk - a.tile_base[p]) * rows_blk, nrow = min(rows_blk, a.rows[p] - r0);
	/* this warp's matrix and first row (SWIGLU: warps 2-3 take up) */
	uint32_t wm = swiglu ? warp >> 1 : p, wr = swiglu ? 16 * (warp & 1) : 16 * warp;
	uint32_t nr = nrow > wr ? min(16u, nrow - wr) : 0;
	const uint8_t *w = (const uint8_t *)a.w[wm] + (size_t)(r0 + wr) * a.cols;
	uint32_t nch = a.cols / MVT_CH;
	uint32_t c_lo = ks * nch / nks, c_hi = (ks + 1) * nch / nks;
	float acc[NTL][4] = {};
	uint4 ra[MVT_DEPTH], rbw[MVT_DEPTH];

	/* the first weights in flight, then the activations converted
	 * while they arrive (the host keeps c_hi - c_lo <= MVT_SLICE) */
#pragma unroll
	for (int d = 0; d < MVT_DEPTH; d++)
		if (c_lo + d < c_hi)
			mvt_w_load(w, a.cols, nr, c_lo + d, g, q, ra[d], rbw[d]);
	mvt_x_slice<NTL>(a.x, a.ldx, nt, c_lo, c_hi - c_lo, xs, xsc);
	__syncthreads();
	for (uint32_t c0 = c_lo; c0 < c_hi; c0 += MVT_DEPTH) {
#pragma unroll
		for (int d = 0; d < MVT_DEPTH; d++) {
			uint32_t c = c0 + d;

			if (c >= c_hi)
				break;
			mvt_chunk<NTL>(ra[d], rbw[d], xs, c - c_lo, xsc[c - c_lo], g, q, acc);
			if (c + MVT_DEPTH < c_hi)
				mvt_w_load(w, a.cols, nr, c + MVT_DEPTH, g, q, ra[d], rbw[d]);
		}
	}
#pragma unroll
	for (int n = 0; n < NTL; n++) {
		red[16 * warp + g][8 * n + 2 * q] = acc[n][0];
		red[16 * warp + g][8 * n + 2 * q + 1] = acc[n][1];
		red[16 * warp + g + 8][8 * n + 2 * q] = acc[n][2];
		red[16 * warp + g + 8][8 * n + 2 * q + 1] = acc[n][3];
	}
	__syncthreads();
	if (nks > 1) {
		float *mine = a.part + ((size_t)blk * nks + ks) * MVT_TILE * MVT_NT;

		for (uint32_t i = threadIdx.x; i < MVT_TILE * MVT_NT; i += 128)
			mine[i] = red[i / MVT_NT][i % MVT_NT];
		__threadfence();
		__syncthreads();
		if (threadIdx.x == 0) {
			last = atomicAdd(&a.sem[blk], 1u) == nks - 1;
			if (last)
				a.sem[blk] = 0;	/* for the next launch */
		}
		__syncthreads();
		if (!last)
			return;
		__threadfence();
		for (uint32_t i = threadIdx.x; i < MVT_TILE * MVT_NT; i += 128) {
			const volatile float *pp = a.part + (size_t)blk * nks * MVT_TILE * MVT_NT + i;
			float v = 0.0f;

			for (uint32_t k = 0; k < nks; k++)
				v += pp[(size_t)k * MVT_TILE * MVT_NT];
			red[i / MVT_NT][i % MVT_NT] = v;
		}
		__syncthreads();
	}
	for (uint32_t i = threadIdx.x; i < rows_blk * nt; i += 128) {
		uint32_t rr = i / nt, t = i % nt;

		if (rr >= nrow)
			continue;
		if (swiglu)
			mvt_out(a, p, r0, rr, t, red[rr][t], red[MVT_TILE / 2 + rr][t]);
		else
			mvt_out(a, p, r0, rr, t, red[rr][t], 0.0f);
	}
}

extern "C" __global__ void __launch_bounds__(32 * MVT_WARPS) k_mvt_fp8_8(cuda_mv_args a)
{
	mvt_body<1>(a);
}

extern "C" __global__ void __launch_bounds__(32 * MVT_WARPS) k_mvt_fp8_16(cuda_mv_args a)
{
	mvt_body<2>(a);
}
