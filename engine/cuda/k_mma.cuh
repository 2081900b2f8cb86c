// SPDX-License-Identifier: MIT
/*
 * k_mma.cuh — the tensor-core GEMM for products of more than 16 tokens
 * (prefill, large batches), #included at the end of kernels.cu (it uses
 * part_of, bf16_rne).  docs/cuda.md "Tensor-core GEMM" says why it looks
 * like this; in short:
 *
 *   y[t][r] = (sum_k W[r][k] x[t][k]) * (FP8 row scale) + bias[r]
 *
 * with mma.sync m16n8k16 (f16 x f16 -> f32, bf16 for BF16 weights): A =
 * the activations [tokens][K] (row), B = the weights [rows][K] in the
 * image's layout (col), both K-major.  Weights are exact in the MMA's
 * type: FP8 E4M3 -> f16 by cvt.rn.f16x2.e4m3x2, INT4 (q - 8) -> f16 by
 * the 0x6400 exponent trick (the group's f16 scale applied in f32 to a
 * partial sum per 128-column group), BF16 and F16 as they are.  The
 * activations are split (k_mma_xq) into hi + lo halves of 11 bits each
 * (22 bits, split 2) or hi only (split 1) after a per-token power-of-two
 * scale.  Accumulation in f32, in one fixed K order: an output element
 * depends on its token's row and the weights only, never on the other
 * tokens of the product or the token's place in it (no split-K, no
 * atomics): batch invariant.
 *
 * Block: 256 threads (8 warps as 2 token halves x 4 row quarters), 64
 * tokens x 128 rows, each warp 32 x 32 = 2 x 4 MMA tiles of 16 x 8.  K in
 * steps of 32 through a 3-stage cp.async ring in static shared memory
 * (<= 48 KiB: no dynamic-size attribute needed): per stage the hi (and
 * lo) activations, 64 rows of 64 bytes XOR-swizzled by 16-byte chunk so
 * that ldmatrix.x4 is conflict-free, and the raw weight bytes, 128 rows
 * of 16 (INT4), 32 (FP8) or 64 (BF16/F16) bytes, read back as one 4-,
 * 8- or 16-byte word per lane and row, contiguous across the warp.
 *
 * Fragment layouts (PTX ISA, mma.m16n8k16 .f16/.bf16): g = lane / 4,
 * c = lane % 4.  A (16 x 16): a0a1 (row g, k 2c..2c+1), a2a3 (row g+8,
 * k 2c..), a4a5 (row g, k 2c+8..), a6a7 (row g+8, k 2c+8..).  B (16 x 8):
 * b0b1 (k 2c..2c+1, col g), b2b3 (k 2c+8.., col g).  C (16 x 8): c0c1
 * (row g, cols 2c, 2c+1), c2c3 (row g+8, cols 2c, 2c+1).
 *
 * The weight words a lane reads from one row do not hold the columns of
 * the B layout: lane (g, c) reads bytes [8c, 8c + 8) of an FP8 row step,
 * i.e. columns 8c..8c+7, and uses them as the B registers of both k16
 * halves.  A dot product does not care in which order its K terms are
 * numbered as long as both operands agree, so the pre-pass stores each
 * step's 32 activation columns permuted to match (mma_perm): storage
 * column j of a step holds the real column mma_perm(j), and ldmatrix then
 * hands every lane the activations of exactly its weight columns.
 */

#define MMA_STAGES 3
#define MMA_THREADS 256

/* Storage column j (0..31) of a k step -> the real column it holds. */
DEV uint32_t mma_perm(uint32_t j, bool int4)
{
	uint32_t s = j >> 4, h = (j >> 3) & 1, c = (j >> 1) & 3, e = j & 1;

	/* s: k16 half, h: b0b1 (0) or b2b3 (1), c: the lane's column
	 * quad, e: the element of the f16x2 register */
	if (int4)	/* word of 8 nibbles: register m = (nibble m, m + 4) */
		return 8 * c + 2 * s + h + 4 * e;
	return 8 * c + 4 * s + 2 * h + e;	/* bytes/halves in order */
}

/* Flags of k_mma_xq. */
#define MMA_XQ_BF16 1u		/* bf16 halves (BF16 weights), else f16 */
#define MMA_XQ_INT4 2u		/* INT4's column order */

/*
 * The pre-pass: token row blockIdx.x of x (cols columns, ld ldx) scaled by
 * 2^(14 - e), e the exponent of its largest magnitude (clamped to
 * +-100), so the largest lies in [2^14, 2^15) and nothing overflows f16;
 * hi = round(v), lo = round(v - hi) (exact in f32) to f16 or bf16,
 * nearest even; columns past cols are 0; xs[t] = 2^(e - 14).  xl NULL:
 * hi only.  256 threads.
 */
extern "C" __global__ void __launch_bounds__(256)
k_mma_xq(const float *x, uint32_t ldx, uint32_t cols, uint32_t ldk, uint32_t flags,
	 uint16_t *xh, uint16_t *xl, float *xs)
{
	uint32_t t = blockIdx.x;
	const float *xr = x + (size_t)t * ldx;
	uint16_t *hr = xh + (size_t)t * ldk, *lr = xl ? xl + (size_t)t * ldk : NULL;
	bool bf = flags & MMA_XQ_BF16, i4 = flags & MMA_XQ_INT4;
	float mul = row_pow2_scale(xr, cols, 14, xs + t);
	for (uint32_t i = threadIdx.x; i < ldk; i += 256) {
		uint32_t k = (i & ~31u) + mma_perm(i & 31, i4);
		float v = k < cols ? xr[k] * mul : 0.0f, hf;
		uint16_t h;

		if (bf) {
			h = bf16_rne(v);
			hf = __uint_as_float((uint32_t)h << 16);
		} else {
			__half hh = __float2half_rn(v);

			h = __half_as_ushort(hh);
			hf = __half2float(hh);
		}
		hr[i] = h;
		if (lr)
			lr[i] = bf ? bf16_rne(v - hf) : __half_as_ushort(__float2half_rn(v - hf));
	}
}

DEV uint32_t smem_u32(const void *p)
{
	return (uint32_t)__cvta_generic_to_shared(p);
}

/* 16 bytes global -> shared, asynchronously; n = 0 writes zeros. */
DEV void cp_async16(void *dst, const void *src, uint32_t n)
{
	asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n"
		     :: "r"(smem_u32(dst)), "l"(src), "r"(n) : "memory");
}

DEV void cp_async_commit(void)
{
	asm volatile("cp.async.commit_group;\n" ::: "memory");
}

template <int N>
DEV void cp_async_wait(void)
{
	asm volatile("cp.async.wait_group %0;\n" :: "n"(N) : "memory");
}

DEV void ldsm_x4(uint32_t *r, const void *p)
{
	asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
		     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
		     : "r"(smem_u32(p)));
}

template <bool BF>
DEV void mma16816(float *d, const uint32_t *a, const uint32_t *b)
{
	if (BF)
		asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
		    "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
		    : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
		    : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
	else
		asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
		    "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
		    : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
		    : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

/* Two E4M3 bytes (low first) -> f16x2, exactly. */
DEV uint32_t e4m3x2_h2(uint32_t two)
{
	uint32_t h2;
	unsigned short in = (unsigned short)two;

	asm("cvt.rn.f16x2.e4m3x2 %0, %1;\n" : "=r"(h2) : "h"(in));
	return h2;
}

/* Nibbles m and m + 4 of a word -> f16x2 (q - 8): 0x6400 | q is 1024 + q
 * exactly, minus 1032. */
DEV uint32_t i4x2_h2(uint32_t w, int m)
{
	uint32_t v = ((w >> (4 * m)) & 0x000F000Fu) | 0x64006400u;
	__half2 h = __hsub2(*reinterpret_cast<__half2 *>(&v),
			    __halves2half2(__ushort_as_half(0x6408), __ushort_as_half(0x6408)));

	return *reinterpret_cast<uint32_t *>(&h);
}

/* Weight bytes per row and k step. */
template <int DT> struct mma_w {
	enum { BYTES = DT == CUDA_DT_FP8 ? 32 : DT == CUDA_DT_INT4 ? 16 : 64,
	       EPC = DT == CUDA_DT_FP8 ? 16 : DT == CUDA_DT_INT4 ? 32 : 8 };	/* per 16 B */
};

/*
 * TN weight rows per block (128: the backend's; 256: a wide variant the
 * throughput test measures beside it), ST pipeline stages, NW warps (8:
 * the backend's; 4: a variant) as 2 token halves x NW / 2 row groups;
 * each warp owns 32 tokens x 2 TN / NW rows (J tiles of 8 rows).
 */
template <int DT, int SPLIT, int TN, int ST, int NW = 8>
DEV void mma_body(const cuda_mv_args &a, const cuda_mma_args &m)
{
	constexpr bool BF = DT == CUDA_DT_BF16, I4 = DT == CUDA_DT_INT4;
	constexpr int NTH = 32 * NW, WR = 2 * TN / NW;	/* threads, rows per warp */
	constexpr int WB = mma_w<DT>::BYTES, CPR = WB / 16, J = WR / 8;
	constexpr int AB = CUDA_MMA_TM * CUDA_MMA_TK * 2;	/* one half's bytes */
	constexpr int HN = TN / 2, UP = HN + 4;	/* SWIGLU: rows of each; su pitch */
	/* the ring: [ST][SPLIT] activation halves, then [ST] weight tiles;
	 * SWIGLU's epilogue reuses it for the up values, [64][UP] floats */
	constexpr int RING = ST * SPLIT * AB + ST * TN * WB;
	static_assert(RING >= CUDA_MMA_TM * UP * 4, "SWIGLU exchange fits the ring");
	__shared__ __align__(128) uint8_t ring[RING];
	uint32_t tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
	uint32_t g = lane >> 2, c = lane & 3;
	uint32_t wm = (warp & 1) * 32, wn = (warp >> 1) * WR;
	/* SWIGLU (fused; the launcher's tiles are HN rows of part 0): smem
	 * rows [0, HN) are gate rows r0.., [HN, TN) the same rows of up */
	bool sw = a.mode == CUDA_MV_SWIGLU;
	uint32_t p = sw ? 0 : part_of(a.tile_base, a.n_parts, blockIdx.y);
	uint32_t r0 = (blockIdx.y - a.tile_base[p]) * (sw ? HN : TN);
	uint32_t t0 = blockIdx.x * CUDA_MMA_TM, rows = a.rows[p], cols = a.cols;
	uint32_t nk = m.ldk / CUDA_MMA_TK;
	size_t pitch = DT == CUDA_DT_FP8 ? cols : I4 ? cols / 2 : (size_t)cols * 2;
	/* smem row -> (part, matrix row) */
	auto wrow = [&](uint32_t row, uint32_t &q) -> uint32_t {
		q = sw && row >= HN ? 1 : p;
		return r0 + (sw && row >= HN ? row - HN : row);
	};
	auto sa = [&](int st, int i) -> uint8_t * { return ring + (st * SPLIT + i) * AB; };
	auto sb = [&](int st) -> uint8_t * { return ring + ST * SPLIT * AB + st * TN * WB; };
	float acc[2][J][4], accg[I4 ? 2 : 1][J][4], gs[J][2];

#pragma unroll
	for (int i = 0; i < 2; i++)
#pragma unroll
		for (int j = 0; j < J; j++)
#pragma unroll
			for (int q = 0; q < 4; q++) {
				acc[i][j][q] = 0.0f;
				if (I4)
					accg[i][j][q] = 0.0f;
			}

	auto load = [&](uint32_t kt, int st) {
		/* activations: 64 rows x 4 chunks per half */
#pragma unroll
		for (int h = 0; h < SPLIT * 256 / NTH; h++) {
			int i = h * NTH / 256;
			uint32_t n = (h * NTH) % 256 + tid, row = n >> 2, ch = n & 3;
			uint32_t t = t0 + row;
			const uint16_t *src = (i ? m.xl : m.xh);
			bool ok = t < a.nt;

			cp_async16(sa(st, i) + row * 64 + ((ch ^ ((row >> 1) & 3)) << 4),
				   ok ? src + (size_t)t * m.ldk + kt * CUDA_MMA_TK + ch * 8 : src,
				   ok ? 16 : 0);
		}
		/* weights: 128 rows x CPR chunks */
#pragma unroll
		for (int i = 0; i < (TN * CPR + NTH - 1) / NTH; i++) {
			uint32_t n = tid + i * NTH, row = n / CPR, ch = n % CPR, q;
			uint32_t r = wrow(row, q), k = kt * CUDA_MMA_TK + ch * mma_w<DT>::EPC;
			const uint8_t *w = (const uint8_t *)a.w[q];
			bool ok = r < rows && k < cols;

			if (TN * CPR % NTH && n >= TN * CPR)
				break;
			cp_async16(sb(st) + row * WB + ch * 16,
				   ok ? w + r * pitch + (size_t)kt * WB + ch * 16 : w, ok ? 16 : 0);
		}
	};

#pragma unroll
	for (int s = 0; s < ST - 1; s++) {
		if ((uint32_t)s < nk)
			load(s, s);
		cp_async_commit();
	}
	for (uint32_t kt = 0; kt < nk; kt++) {
		int st = kt % ST;
		uint32_t b[2][J][2];	/* [k16 half][n8 tile][reg] */

		if (I4 && kt % 4 == 0) {
			/* this 128-column group's scales for the lane's 8 rows,
			 * used 4 steps later */
			uint32_t grp = kt / 4, ng = cols / 128;

#pragma unroll
			for (int j = 0; j < J; j++)
#pragma unroll
				for (int e = 0; e < 2; e++) {
					uint32_t q, r = wrow(wn + 8 * j + 2 * c + e, q);
					const __half *sc = (const __half *)a.scales[q];

					gs[j][e] = r < rows ? __half2float(sc[(size_t)r * ng + grp]) : 0.0f;
				}
		}
		cp_async_wait<ST - 2>();
		__syncthreads();
		if (kt + ST - 1 < nk)
			load(kt + ST - 1, (kt + ST - 1) % ST);
		cp_async_commit();

#pragma unroll
		for (int j = 0; j < J; j++) {
			const uint8_t *rp = sb(st) + (wn + 8 * j + g) * WB;

			if (DT == CUDA_DT_FP8) {
				uint2 v = *reinterpret_cast<const uint2 *>(rp + 8 * c);

				b[0][j][0] = e4m3x2_h2(v.x);
				b[0][j][1] = e4m3x2_h2(v.x >> 16);
				b[1][j][0] = e4m3x2_h2(v.y);
				b[1][j][1] = e4m3x2_h2(v.y >> 16);
			} else if (I4) {
				uint32_t v = *reinterpret_cast<const uint32_t *>(rp + 4 * c);

				b[0][j][0] = i4x2_h2(v, 0);
				b[0][j][1] = i4x2_h2(v, 1);
				b[1][j][0] = i4x2_h2(v, 2);
				b[1][j][1] = i4x2_h2(v, 3);
			} else {
				uint4 v = *reinterpret_cast<const uint4 *>(rp + 16 * c);

				b[0][j][0] = v.x;
				b[0][j][1] = v.y;
				b[1][j][0] = v.z;
				b[1][j][1] = v.w;
			}
		}
#pragma unroll
		for (int s = 0; s < 2; s++) {
			/* the k16 half's A fragments first (ldmatrix is ordered
			 * asm: issued together their latencies overlap), then
			 * every hi MMA, then every lo one: 2 x 4 J independent
			 * accumulators between two uses of one (each element
			 * still sums hi, then lo, step by step: the same order
			 * and bits as one hi-lo pair at a time) */
			uint32_t ah[2][4], al[2][4];

#pragma unroll
			for (int i = 0; i < 2; i++) {
				uint32_t row = wm + 16 * i + (lane & 7) + 8 * ((lane >> 3) & 1);
				uint32_t ch = 2 * s + (lane >> 4);
				uint32_t off = row * 64 + ((ch ^ ((row >> 1) & 3)) << 4);

				ldsm_x4(ah[i], sa(st, 0) + off);
				if (SPLIT == 2)
					ldsm_x4(al[i], sa(st, SPLIT - 1) + off);
			}
#pragma unroll
			for (int h = 0; h < SPLIT; h++)
#pragma unroll
				for (int i = 0; i < 2; i++)
#pragma unroll
					for (int j = 0; j < J; j++)
						mma16816<BF>(I4 ? accg[I4 ? i : 0][j] : acc[i][j],
							     h ? al[i] : ah[i], b[s][j]);
		}
		if (I4 && (kt % 4 == 3 || kt + 1 == nk)) {
#pragma unroll
			for (int i = 0; i < 2; i++)
#pragma unroll
				for (int j = 0; j < J; j++)
#pragma unroll
					for (int q = 0; q < 4; q++) {
						acc[i][j][q] = fmaf(accg[I4 ? i : 0][j][q], gs[j][q & 1],
								    acc[i][j][q]);
						accg[I4 ? i : 0][j][q] = 0.0f;
					}
		}
	}
	cp_async_wait<0>();

	/*
	 * epilogue: c0c1 (token g, rows 2c, 2c+1), c2c3 (token g + 8).
	 * SWIGLU: the up warps (wn >= HN) leave their values in the ring
	 * (every warp past its last ldmatrix first), the gate warps store
	 * silu(gate) * up, the same f32 operations as k_swiglu after two
	 * stores.
	 */
	bool up = sw && wn >= HN;
	float *su = reinterpret_cast<float *>(ring);

	if (sw)
		__syncthreads();
#pragma unroll
	for (int i = 0; i < 2; i++)
#pragma unroll
		for (int q2 = 0; q2 < 2; q2++) {
			uint32_t tl = wm + 16 * i + g + 8 * q2, t = t0 + tl;
			float ts = t < a.nt ? m.xs[t] : 0.0f;

#pragma unroll
			for (int j = 0; j < J; j++)
#pragma unroll
				for (int e = 0; e < 2; e++) {
					uint32_t row = wn + 8 * j + 2 * c + e, q, r = wrow(row, q);
					float v = acc[i][j][2 * q2 + e] * ts, *y;

					if (DT == CUDA_DT_FP8 && r < rows)
						v *= ((const float *)a.scales[q])[r];
					if (a.bias[q] && r < rows)
						v += a.bias[q][r];
					if (up) {
						su[tl * UP + row - HN] = v;
						continue;
					}
					if (sw || t >= a.nt || r >= rows)
						continue;
					y = a.y[p] + (size_t)t * a.ldy[p] + r;
					if (a.mode == CUDA_MV_ADD)
						*y += v;
					else
						*y = v;
				}
		}
	if (!sw)
		return;
	__syncthreads();
	if (up)
		return;
#pragma unroll
	for (int i = 0; i < 2; i++)
#pragma unroll
		for (int q2 = 0; q2 < 2; q2++) {
			uint32_t tl = wm + 16 * i + g + 8 * q2, t = t0 + tl;
			float ts = t < a.nt ? m.xs[t] : 0.0f;

			if (t >= a.nt)
				continue;
#pragma unroll
			for (int j = 0; j < J; j++)
#pragma unroll
				for (int e = 0; e < 2; e++) {
					uint32_t row = wn + 8 * j + 2 * c + e, r = r0 + row;
					float v = acc[i][j][2 * q2 + e] * ts;

					if (r >= rows)
						continue;
					if (DT == CUDA_DT_FP8)
						v *= ((const float *)a.scales[0])[r];
					if (a.bias[0])
						v += a.bias[0][r];
					a.y[0][(size_t)t * a.ldy[0] + r] = silu(v) * su[tl * UP + row];
				}
		}
}

#define MMA_ENTRY(name, DT, SPLIT)                                              \
	extern "C" __global__ void __launch_bounds__(MMA_THREADS, 2)            \
	k_mma_##name##_##SPLIT(cuda_mv_args a, cuda_mma_args m)                 \
	{                                                                       \
		mma_body<DT, SPLIT, CUDA_MMA_TN, MMA_STAGES>(a, m);             \
	}
MMA_ENTRY(bf16, CUDA_DT_BF16, 1)
MMA_ENTRY(bf16, CUDA_DT_BF16, 2)
MMA_ENTRY(f16, CUDA_DT_F16, 1)
MMA_ENTRY(f16, CUDA_DT_F16, 2)
MMA_ENTRY(fp8, CUDA_DT_FP8, 1)
MMA_ENTRY(fp8, CUDA_DT_FP8, 2)
MMA_ENTRY(int4, CUDA_DT_INT4, 1)
MMA_ENTRY(int4, CUDA_DT_INT4, 2)

/* The wide variant (256 rows, one block per SM; 16-bit weights in 2
 * stages to stay within 48 KiB): not used by the backend, measured by
 * velo-test-cuda's throughput table beside the default tiles. */
#define MMA_WIDE(name, DT, ST)                                                  \
	extern "C" __global__ void __launch_bounds__(MMA_THREADS, 1)            \
	k_mma_##name##_2_w(cuda_mv_args a, cuda_mma_args m)                     \
	{                                                                       \
		mma_body<DT, 2, 256, ST>(a, m);                                 \
	}
MMA_WIDE(bf16, CUDA_DT_BF16, 2)
MMA_WIDE(fp8, CUDA_DT_FP8, 3)
MMA_WIDE(int4, CUDA_DT_INT4, 3)

/* Two more variants timed (and checked) by the test, not routed to: the
 * default tiles at three blocks per SM (80 registers: BF16 without
 * spills, FP8 40 bytes, INT4 228), and FP8/INT4 in four stages. */
#define MMA_VAR(name, DT, ST, OCC, sfx)                                         \
	extern "C" __global__ void __launch_bounds__(MMA_THREADS, OCC)          \
	k_mma_##name##_2_##sfx(cuda_mv_args a, cuda_mma_args m)                 \
	{                                                                       \
		mma_body<DT, 2, CUDA_MMA_TN, ST>(a, m);                         \
	}
MMA_VAR(bf16, CUDA_DT_BF16, 3, 3, o3)
MMA_VAR(fp8, CUDA_DT_FP8, 3, 3, o3)
MMA_VAR(int4, CUDA_DT_INT4, 3, 3, o3)
MMA_VAR(fp8, CUDA_DT_FP8, 4, 2, s4)
MMA_VAR(int4, CUDA_DT_INT4, 4, 2, s4)

/* And 4 warps of 32 tokens x 64 rows (the same 64 x 128 block): half the
 * A fragment loads per MMA; 128 threads, 3 blocks per SM. */
#define MMA_W4(name, DT)                                                        \
	extern "C" __global__ void __launch_bounds__(128, 3)                    \
	k_mma_##name##_2_w4(cuda_mv_args a, cuda_mma_args m)                    \
	{                                                                       \
		mma_body<DT, 2, CUDA_MMA_TN, 3, 4>(a, m);                       \
	}
MMA_W4(bf16, CUDA_DT_BF16)
MMA_W4(fp8, CUDA_DT_FP8)
MMA_W4(int4, CUDA_DT_INT4)
