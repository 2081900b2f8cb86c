// SPDX-License-Identifier: MIT
/*
 * k_mvt.cuh — tensor-core GEMV for decode steps of 2..16 tokens with FP8
 * E4M3 or INT4 group-128 weights (included by kernels.cu; uses its
 * helpers).
 *
 * Why: the CUDA-core GEMV (k_mv) spends nt FMAs per weight and reads each
 * token's f32 activations at a 64-byte lane stride: a Llama-3-8B step of 8
 * tokens took 16 ms (FP8) and 23 ms (INT4) on an H200, against 3.5 and
 * 3.8 ms for one.  Here the weights go through mma.sync m16n8k16 (f16 in,
 * f32 accumulation) with the tokens as the n dimension, so 2..16 tokens
 * cost about what the weight bytes cost (6.7 and 6.5 ms for 8 tokens).
 * One token stays on k_mv, which is faster there.
 *
 * Numerics: E4M3 -> f16 is exact (cvt.rn.f16x2.e4m3x2), so is INT4's
 * q - 8 (0x6400 | q is the f16 1024 + q, minus 1032).  Each token's
 * activations are split per chunk (64 columns; INT4 128) into two f16
 * parts, x * 2^s =
 * hi + lo (2^s puts the chunk's largest magnitude in [2^14, 2^15), so
 * nothing overflows), both multiplied in: hi + lo carry ~22 bits, so the
 * result is as precise as the f32 path's up to summation order.  A
 * chunk's two products land in a scratch accumulator scaled back by 2^-s
 * (INT4: times the chunk's group scale, a chunk being one group) into the
 * running one.  FP8's row scale after the dot product, as k_mv.
 *
 * Layout: a block of 4 warps owns 64 rows (16 per warp; SWIGLU: 32 rows,
 * warps 0-1 the gate's, 2-3 the same rows of up) and one slice of at most
 * MVT_COLS columns (blockIdx.y of gridDim.y, split-K).  It
 * converts the tokens' activations of its slice once into shared memory
 * while its first weights are in flight, then each warp streams its rows
 * with MVT_DEPTH chunks in flight per lane and no further barrier.
 * Lane (g = lane / 4, q = lane % 4) loads bytes [16q, 16q + 16) of rows g
 * and g + 8 of a chunk; for k-step j (0..3) its A registers are bytes
 * 16q + 4j .. + 3 of both rows (INT4: mvt_chunk), which fixes the k
 * order the B fragment follows: the B registers of lane (n = g, q) are
 * token n's activations at those four columns, 8 bytes of the converted
 * slice (mvt_x_pos puts INT4's in nibble order).
 *
 * Split-K: with gridDim.y > 1 each block writes its 64 x 16 partial sums
 * to a.part, and the last block of a row tile to arrive (a counter per
 * tile in a.sem, reset by that block) adds the slices in slice order and
 * applies the epilogue — deterministic, one launch.  The host picks the
 * split (cuda_mvt_split) so that a small matrix still spreads over every
 * SM; the split depends on the shape only, not on the tokens.
 */

#define MVT_WARPS 4
/* columns per chunk (64 weight bytes of a row): FP8 64, INT4 128 (one
 * group, so its scale applies per chunk) */
#define MVT_KCH(DT) ((DT) == CUDA_DT_INT4 ? 128 : 64)
/* columns per slice, the same for 8 and 16 tokens so that the split,
 * hence the sum order, does not depend on the token count; the block's
 * activations (hi and lo f16) take 16 or 32 KiB of shared memory */
#define MVT_COLS (64 * CUDA_MVT_SLICE)
/* f16 pitch of a token's slice: 2 mod 64, so a half-warp's B reads hit
 * 16 distinct bank pairs */
#define MVT_XP (MVT_COLS + 4)
#define MVT_NT 16			/* tokens per launch (2 n-tiles) */
#define MVT_DEPTH 4			/* chunks of weights in flight per lane */
#define MVT_TILE (16 * MVT_WARPS)	/* partial sums per token per block */

/* The mma.sync wrapper and the exact E4M3 / INT4 -> f16x2 conversions are
 * k_mma.cuh's (included before this file): mma16816, e4m3x2_h2, i4x2_h2. */

DEV uint32_t f16x2_pack(float lo, float hi)
{
	__half2 h = __floats2half2_rn(lo, hi);

	return *reinterpret_cast<uint32_t *>(&h);
}

/*
 * Where column k of a chunk goes in the converted slice: FP8 in order;
 * INT4 in the order its A fragments come out of the nibbles (mvt_chunk):
 * lane quarter q = k / 32 holds its 32 columns as 8 k-steps s of 4 f16,
 * word i = (k % 32) / 8, nibble n = k % 4 + the half (k % 8) / 4 x 4:
 * k-step 2i + n / 2, place (n % 2) x 2 + half.
 */
template <int DT>
DEV uint32_t mvt_x_pos(uint32_t k)
{
	uint32_t q = k >> 5, r = k & 31, i = r >> 3, n = r & 3, hf = (r >> 2) & 1;

	if (DT != CUDA_DT_INT4)
		return k;
	return (q * 8 + 2 * i + (n >> 1)) * 4 + (n & 1) * 2 + hf;
}

/*
 * The block's slice of the activations, converted once: thread i takes
 * float4 i, i + 128, ... of the slice's nt x (U per chunk, U = columns per
 * chunk / 4); a (token, chunk)'s U float4 lie in U consecutive lanes,
 * which reduce their largest magnitude.  xs[0] (hi) and xs[1] (lo), f16,
 * token t's chunk c at xs[.][t][KCH c + mvt_x_pos(column)], scaled by 2^s
 * per (chunk, token); 2^-s in xsc[c][t].  Tokens past nt are not written
 * (their B columns only feed output columns that are never read).
 */
template <int DT, int NTL>
DEV void mvt_x_slice(const float *x, uint32_t ldx, uint32_t nt, uint32_t c_lo,
		     uint32_t nc, __half (*xs)[8 * NTL][MVT_XP], float (*xsc)[MVT_NT])
{
	const uint32_t KCH = MVT_KCH(DT), U = KCH / 4, per = 32 / U;
	uint32_t ntr = (nt + per - 1) / per * per;	/* whole warps */
	uint32_t n4 = ntr * U * nc;

	for (uint32_t i = threadIdx.x; i < n4; i += 128) {
		uint32_t unit = i / U, t = unit % ntr, c = unit / ntr, e = i % U;
		float4 v = t < nt ? __ldg(reinterpret_cast<const float4 *>(
					x + (size_t)t * ldx + (size_t)(c_lo + c) * KCH) + e) :
				    make_float4(0.0f, 0.0f, 0.0f, 0.0f);
		float mx, sc, f[4];
		uint32_t eb;
		int ex;

		mx = fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w)));
#pragma unroll
		for (uint32_t o = U / 2; o; o >>= 1)
			mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
		/* 2^ex puts the largest magnitude in [2^14, 2^15): from its
		 * biased exponent eb, ex = 14 - (eb - 127); zero, subnormal,
		 * inf or NaN: 1 */
		eb = (__float_as_uint(mx) >> 23) & 0xffu;
		ex = eb && eb < 255 ? max(-100, min(100, 141 - (int)eb)) : 0;
		if (t >= nt)
			continue;
		sc = __uint_as_float((uint32_t)(127 + ex) << 23);
		f[0] = v.x * sc, f[1] = v.y * sc, f[2] = v.z * sc, f[3] = v.w * sc;
		if (DT != CUDA_DT_INT4) {
			uint32_t col = KCH * c + 4 * e;
			uint32_t h01 = f16x2_pack(f[0], f[1]), h23 = f16x2_pack(f[2], f[3]);
			float2 f01 = __half22float2(*reinterpret_cast<__half2 *>(&h01));
			float2 f23 = __half22float2(*reinterpret_cast<__half2 *>(&h23));

			*reinterpret_cast<uint2 *>(&xs[0][t][col]) = make_uint2(h01, h23);
			*reinterpret_cast<uint2 *>(&xs[1][t][col]) =
				make_uint2(f16x2_pack(f[0] - f01.x, f[1] - f01.y),
					   f16x2_pack(f[2] - f23.x, f[3] - f23.y));
		} else {
#pragma unroll
			for (int j = 0; j < 4; j++) {
				uint32_t col = KCH * c + mvt_x_pos<DT>(4 * e + j);
				__half h = __float2half_rn(f[j]);

				xs[0][t][col] = h;
				xs[1][t][col] = __float2half_rn(f[j] - __half2float(h));
			}
		}
		if (e == 0)
			xsc[c][t] = __uint_as_float((uint32_t)(127 - ex) << 23);
	}
}

/*
 * Bytes [16q, 16q + 16) of rows g and g + 8 (of nr valid) of chunk c, and
 * for INT4 their groups' scales (gs: the warp's first row's, ng per row).
 */
template <int DT>
DEV void mvt_w_load(const uint8_t *w, const __half *gs, size_t rb, uint32_t ng, uint32_t nr,
		    uint32_t c, uint32_t g, uint32_t q, uint4 &wa, uint4 &wb, __half2 &sc)
{
	const uint8_t *base = w + (size_t)c * 64 + 16 * q;

	wa = g < nr ? ld_stream(reinterpret_cast<const uint4 *>(base + (size_t)g * rb)) :
		      make_uint4(0, 0, 0, 0);
	wb = g + 8 < nr ? ld_stream(reinterpret_cast<const uint4 *>(base + (size_t)(g + 8) * rb)) :
			  make_uint4(0, 0, 0, 0);
	if (DT == CUDA_DT_INT4)
		sc = __halves2half2(g < nr ? gs[(size_t)g * ng + c] : __float2half(0.0f),
				    g + 8 < nr ? gs[(size_t)(g + 8) * ng + c] : __float2half(0.0f));
}

/*
 * One chunk of the warp's 16 rows (wa, wb) against the converted tokens.
 * FP8: k-step j (0..3) is bytes 16q + 4j .. + 3.  INT4: k-step s (0..7)
 * is word s / 2, nibbles n0 = 2 (s % 2) and n0 + 1 with their + 4
 * partners (mvt_x_pos put the activations in that order); the chunk is
 * one group, its scale (sc: rows g, g + 8) applied with the tokens'.
 */
template <int DT, int NTL>
DEV void mvt_chunk(uint4 wa, uint4 wb, __half2 sc, const __half (*xs)[8 * NTL][MVT_XP],
		   uint32_t c, const float *xsc, uint32_t g, uint32_t q, float (*acc)[4])
{
	const uint32_t KCH = MVT_KCH(DT);
	float tmp[NTL][4], sg = 1.0f, sg8 = 1.0f;

#pragma unroll
	for (int n = 0; n < NTL; n++)
#pragma unroll
		for (int i = 0; i < 4; i++)
			tmp[n][i] = 0.0f;
#pragma unroll
	for (int j = 0; j < (DT == CUDA_DT_INT4 ? 8 : 4); j++) {
		int wi = DT == CUDA_DT_INT4 ? j / 2 : j;
		uint32_t wj = wi == 0 ? wa.x : wi == 1 ? wa.y : wi == 2 ? wa.z : wa.w;
		uint32_t vj = wi == 0 ? wb.x : wi == 1 ? wb.y : wi == 2 ? wb.z : wb.w;
		uint32_t av[4];

		if (DT == CUDA_DT_INT4) {
			int n0 = 2 * (j & 1);

			av[0] = i4x2_h2(wj, n0), av[1] = i4x2_h2(vj, n0);
			av[2] = i4x2_h2(wj, n0 + 1), av[3] = i4x2_h2(vj, n0 + 1);
		} else {
			av[0] = e4m3x2_h2(wj & 0xffff), av[1] = e4m3x2_h2(vj & 0xffff);
			av[2] = e4m3x2_h2(wj >> 16), av[3] = e4m3x2_h2(vj >> 16);
		}
#pragma unroll
		for (int n = 0; n < NTL; n++) {
			uint32_t off = KCH * c + 16 * q + 4 * j;
			uint2 h, l;

			if (DT == CUDA_DT_INT4)
				off = KCH * c + (q * 8 + j) * 4;
			h = *reinterpret_cast<const uint2 *>(&xs[0][8 * n + g][off]);
			l = *reinterpret_cast<const uint2 *>(&xs[1][8 * n + g][off]);
			mma16816<false>(tmp[n], av, &h.x);
			mma16816<false>(tmp[n], av, &l.x);
		}
	}
	if (DT == CUDA_DT_INT4) {
		sg = __low2float(sc);
		sg8 = __high2float(sc);
	}
	/* C columns 2q, 2q + 1 of n-tile n are tokens 8n + 2q, + 1 */
#pragma unroll
	for (int n = 0; n < NTL; n++) {
		float s0 = xsc[8 * n + 2 * q], s1 = xsc[8 * n + 2 * q + 1];

		acc[n][0] = fmaf(tmp[n][0], s0 * sg, acc[n][0]);
		acc[n][1] = fmaf(tmp[n][1], s1 * sg, acc[n][1]);
		acc[n][2] = fmaf(tmp[n][2], s0 * sg8, acc[n][2]);
		acc[n][3] = fmaf(tmp[n][3], s1 * sg8, acc[n][3]);
	}
}

/* y for element (row rr of the block, token t) from the reduced sums. */
template <int DT>
DEV void mvt_out(const cuda_mv_args &a, uint32_t p, uint32_t r0, uint32_t rr, uint32_t t,
		 float v, float u)
{
	float *y;

	if (a.mode == CUDA_MV_SWIGLU) {
		if (DT == CUDA_DT_FP8) {
			v *= ((const float *)a.scales[0])[r0 + rr];
			u *= ((const float *)a.scales[1])[r0 + rr];
		}
		a.y[0][(size_t)t * a.ldy[0] + r0 + rr] = silu(v) * u;
		return;
	}
	if (DT == CUDA_DT_FP8)
		v *= ((const float *)a.scales[p])[r0 + rr];
	if (a.bias[p])
		v += a.bias[p][r0 + rr];
	y = a.y[p] + (size_t)t * a.ldy[p] + r0 + rr;
	if (a.mode == CUDA_MV_ADD)
		*y += v;
	else
		*y = v;
}

template <int DT, int NTL>
DEV void mvt_body(const cuda_mv_args &a)
{
	const uint32_t KCH = MVT_KCH(DT);
	__shared__ __align__(16) __half xs[2][8 * NTL][MVT_XP];
	__shared__ float xsc[MVT_COLS / 64][MVT_NT];
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
	size_t rb = DT == CUDA_DT_INT4 ? a.cols / 2 : a.cols;
	uint32_t ng = a.cols / 128;
	const uint8_t *w = (const uint8_t *)a.w[wm] + (size_t)(r0 + wr) * rb;
	const __half *gs = (const __half *)a.scales[wm] + (size_t)(r0 + wr) * ng;
	uint32_t nch = a.cols / KCH;
	uint32_t c_lo = ks * nch / nks, c_hi = (ks + 1) * nch / nks;
	float acc[NTL][4] = {};
	uint4 ra[MVT_DEPTH], rbw[MVT_DEPTH];
	__half2 rs[MVT_DEPTH];

	/* the first weights in flight, then the activations converted
	 * while they arrive (the host keeps a slice within MVT_COLS) */
#pragma unroll
	for (int d = 0; d < MVT_DEPTH; d++)
		if (c_lo + d < c_hi)
			mvt_w_load<DT>(w, gs, rb, ng, nr, c_lo + d, g, q, ra[d], rbw[d], rs[d]);
	mvt_x_slice<DT, NTL>(a.x, a.ldx, nt, c_lo, c_hi - c_lo, xs, xsc);
	__syncthreads();
	for (uint32_t c0 = c_lo; c0 < c_hi; c0 += MVT_DEPTH) {
#pragma unroll
		for (int d = 0; d < MVT_DEPTH; d++) {
			uint32_t c = c0 + d;

			if (c >= c_hi)
				break;
			mvt_chunk<DT, NTL>(ra[d], rbw[d], rs[d], xs, c - c_lo, xsc[c - c_lo], g, q, acc);
			if (c + MVT_DEPTH < c_hi)
				mvt_w_load<DT>(w, gs, rb, ng, nr, c + MVT_DEPTH, g, q, ra[d], rbw[d],
					       rs[d]);
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
			mvt_out<DT>(a, p, r0, rr, t, red[rr][t], red[MVT_TILE / 2 + rr][t]);
		else
			mvt_out<DT>(a, p, r0, rr, t, red[rr][t], 0.0f);
	}
}

#define MVT_ENTRY(name, DT, NTL, NT)                                           \
	extern "C" __global__ void __launch_bounds__(32 * MVT_WARPS)            \
	k_mvt_##name##_##NT(cuda_mv_args a)                                     \
	{                                                                       \
		mvt_body<DT, NTL>(a);                                           \
	}

MVT_ENTRY(fp8, CUDA_DT_FP8, 1, 8)
MVT_ENTRY(fp8, CUDA_DT_FP8, 2, 16)
MVT_ENTRY(int4, CUDA_DT_INT4, 1, 8)
MVT_ENTRY(int4, CUDA_DT_INT4, 2, 16)
