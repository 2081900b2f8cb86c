// SPDX-License-Identifier: MIT
/*
 * k_sample.cuh — temperature / top-k / top-p / min-p sampling with logit
 * biases on the device, one block of 1024 threads per logit row (vocab up
 * to 2^18: the integer weight sums below), #included by kernels.cu.
 *
 * The kept set is the host sampler's (core/sampler.c,
 * eng_sampler_sample) without sorting the vocabulary:
 *   - v = logit (+ the row's biases, added in list order as
 *     apply_penalties adds them); non-finite v is never kept; -0 counts
 *     as +0 (equal floats tie, as the host's compares);
 *   - order "better": higher v, then lower id; key = the v's bits mapped
 *     to an order-preserving uint32 (0: not finite);
 *   - greedy (T <= 0 or top_k == 1): the best token, no draw;
 *   - top-k: the k best (ties to the lower id): an 8-bit radix select of
 *     the k-th best key (4 histogram passes of counts), then among the
 *     tokens holding that key the lowest ids, by an id-ordered prefix;
 *   - top-p over what top-k kept (or the whole vocabulary): the smallest
 *     best-first prefix whose mass reaches ceil(top_p * Z): a radix
 *     select with histograms of mass (4 passes), then the id-ordered
 *     prefix among the tokens of the crossing key;
 *   - min-p: v >= m + logf(min_p) * T (the host computes the constant);
 *   - weights w = exp((v - m) / T) (expf, float, as the host) in fixed
 *     point (CUDA_SAMP_FIX_SHIFT): every sum is an exact integer, so the
 *     result does not depend on the summation order, and the histograms
 *     use integer shared atomics;
 *   - draw: Z = sum of the kept weights, target = floor(u * Z) with
 *     u = (r >> 11) * 2^-53 (the host's uniform from the same RNG draw),
 *     the token: the first kept one IN ID ORDER whose inclusive prefix sum
 *     exceeds the target (the host draws in best-first order when it
 *     truncates, so for one seed the CPU and CUDA backends may pick
 *     different tokens of the same distribution).
 * Output: the token, -1 when the row holds no finite value.
 *
 * Layout: warp w owns ids [w * seg, (w + 1) * seg) (seg a multiple of 32),
 * its lanes read 32 consecutive floats at a time (coalesced).  An
 * id-ordered prefix: each warp sums its segment, thread 0 finds the
 * crossing warp, that warp walks its segment 32 ids at a time with a warp
 * scan.  Passes over the row (513 KB for 128256 logits, L2-resident after
 * the first): max 1; + draw 1 (plain temperature, min-p); + top-k 5
 * (<= 1024: 4 + 2, then shared memory only); + top-p 5.
 */
#include "cuda_sample.h"

#define KS_W (CUDA_SAMP_THREADS / 32)
#define KS_FIX (1ull << CUDA_SAMP_FIX_SHIFT)
/* Radix digits of 8 bits (4 passes, 256 bins), histograms private to a
 * warp (counts) or a pair of warps (masses), merged after each pass: a
 * row's logits fill few bins of the first digits, and one histogram
 * shared by all 32 warps serialised their atomics (an H200 at 6806c12:
 * ~130 us a pass over 128256 logits) */
#define KS_BINS 256
#define KS_PER_LANE (KS_BINS / 32)

enum { KS_CNT, KS_MASS, KS_TIEK, KS_TIEP, KS_DRAW };

struct ks_shared {
	union {
		uint32_t cnt[KS_W][KS_BINS];
		unsigned long long mass[KS_W / 2][KS_BINS];
		unsigned long long raw[KS_W * KS_BINS / 2];	/* 32 KB; ks_small's too */
	} ph;
	unsigned long long hist[KS_BINS];		/* merged */
	unsigned long long warp[KS_W];
	unsigned long long rem, base, eq;
	uint32_t bmap[128];			/* biased ids, hashed by id & 4095 */
	uint32_t bid[CUDA_SAMP_BIAS_MAX];
	float bv[CUDA_SAMP_BIAS_MAX];
	float mv[KS_W];
	uint32_t mi[KS_W], nf[KS_W];
	float m;
	uint32_t best, nfin, nc, key, wsel, part, id;
};

struct ks_row {
	const float *l;
	uint32_t seg0, seg1, seg, vocab, n_bias;
	float m, inv_t, thr;
	uint32_t ck, ci;	/* candidates (top-k): key > ck || key == ck && id <= ci */
	uint32_t kc, ic;	/* kept (top-p): key > kc || key == kc && id <= ic */
	uint32_t sel;		/* the key a radix select found */
};

DEV float ks_logit(const ks_row &r, const ks_shared &s, uint32_t i)
{
	float v = r.l[i];

	if (r.n_bias && ((s.bmap[(i >> 5) & 127] >> (i & 31)) & 1u))
		for (uint32_t j = 0; j < r.n_bias; j++)
			if (s.bid[j] == i)
				v += s.bv[j];
	return v;
}

/* Order-preserving key of a finite v (> 0); 0 for NaN and +-inf. */
DEV uint32_t ks_key(float v)
{
	uint32_t u;

	if (!isfinite(v))
		return 0;
	if (v == 0.0f)
		v = 0.0f;	/* -0 ties with +0 */
	u = __float_as_uint(v);
	return u ^ ((uint32_t)((int32_t)u >> 31) | 0x80000000u);
}

DEV bool ks_in(uint32_t key, uint32_t i, uint32_t kc, uint32_t ic)
{
	return key && (key > kc || (key == kc && i <= ic));
}

/* exp((v - m) / T) in units of 2^-45; the best token weighs exactly 1
 * (also when 1/T overflowed to inf, where the host's 0 * inf is NaN). */
DEV unsigned long long ks_wt(const ks_row &r, float v)
{
	if (v == r.m)
		return KS_FIX;
	return __float2ull_rn(expf((v - r.m) * r.inv_t) * (float)KS_FIX);
}

/* Weight of id i in the id-ordered prefixes. */
template <int MODE>
DEV unsigned long long ks_weight(const ks_row &r, const ks_shared &s, uint32_t i)
{
	float v = ks_logit(r, s, i);
	uint32_t key = ks_key(v);

	if (MODE == KS_TIEK)
		return key && key == r.sel;
	if (!ks_in(key, i, r.ck, r.ci))
		return 0;
	if (MODE == KS_TIEP)
		return key == r.sel ? ks_wt(r, v) : 0;
	/* KS_DRAW */
	return ks_in(key, i, r.kc, r.ic) && v >= r.thr ? ks_wt(r, v) : 0;
}

DEV unsigned long long ks_warp_sum(unsigned long long x)
{
#pragma unroll
	for (int k = 16; k; k >>= 1)
		x += __shfl_xor_sync(0xffffffffu, x, k);
	return x;
}

DEV unsigned long long ks_warp_incl(unsigned long long x, uint32_t lane)
{
#pragma unroll
	for (int k = 1; k < 32; k <<= 1) {
		unsigned long long y = __shfl_up_sync(0xffffffffu, x, k);

		if (lane >= (uint32_t)k)
			x += y;
	}
	return x;
}

/*
 * Radix select: the largest key K with W(key >= K) >= need, where W counts
 * finite tokens (KS_CNT) or sums the candidates' weights (KS_MASS, need =
 * ceil(top_p * Z) from the first pass's total Z).  Leaves K in r.sel,
 * s.rem = what the tokens of key K must still supply (1 .. s.eq), s.eq =
 * their total.  Lanes of a warp that fall in one bin add once
 * (__match_any_sync + __reduce_add_sync): a peaked row puts most tokens in
 * a few bins, which would otherwise serialise the shared atomics.
 */
template <int MODE>
DEV void ks_radix(ks_row &r, ks_shared &s, unsigned long long need, float top_p)
{
	uint32_t lane = threadIdx.x & 31, prefix = 0, mask = 0;

	for (int pass = 0; pass < 4; pass++) {
		int shift = 24 - 8 * pass;
		uint32_t dmask = KS_BINS - 1;

		for (uint32_t t = threadIdx.x; t < KS_W * KS_BINS / 2; t += blockDim.x)
			s.ph.raw[t] = 0;
		__syncthreads();
		for (uint32_t g = r.seg0; g < r.seg1; g += 32) {
			uint32_t i = g + lane, key = 0, d, peers;
			unsigned long long w = 0, sum;

			if (i < r.seg1) {
				float v = ks_logit(r, s, i);

				key = ks_key(v);
				if (key && (key & mask) == prefix) {
					if (MODE == KS_CNT)
						w = 1;
					else if (ks_in(key, i, r.ck, r.ci))
						w = ks_wt(r, v);
				}
			}
			d = w ? (key >> shift) & dmask : KS_BINS;
			peers = __match_any_sync(0xffffffffu, d);
			if (MODE == KS_CNT) {
				if (d < KS_BINS && lane == (uint32_t)__ffs(peers) - 1)
					atomicAdd(&s.ph.cnt[threadIdx.x >> 5][d], (uint32_t)__popc(peers));
			} else {
				/* w <= 2^45: 27 + 18 bits, 32 lanes fit in 32 */
				uint32_t lo = __reduce_add_sync(peers, (uint32_t)w & 0x7ffffffu);
				uint32_t hi = __reduce_add_sync(peers, (uint32_t)(w >> 27));

				sum = ((unsigned long long)hi << 27) + lo;
				if (d < KS_BINS && lane == (uint32_t)__ffs(peers) - 1)
					atomicAdd(&s.ph.mass[threadIdx.x >> 6][d], sum);
			}
		}
		__syncthreads();
		for (uint32_t t = threadIdx.x; t < KS_BINS; t += blockDim.x) {
			unsigned long long h = 0;

			if (MODE == KS_CNT)
				for (uint32_t c = 0; c < KS_W; c++)
					h += s.ph.cnt[c][t];
			else
				for (uint32_t c = 0; c < KS_W / 2; c++)
					h += s.ph.mass[c][t];
			s.hist[t] = h;
		}
		__syncthreads();
		if (threadIdx.x < 32) {
			/* lane l: bins KS_BINS-1 - 8l down to KS_BINS - 8 (l + 1),
			 * best first */
			unsigned long long tot = 0, incl, excl;
			uint32_t hit, top = KS_BINS - 1 - KS_PER_LANE * lane;

			for (uint32_t j = 0; j < KS_PER_LANE; j++)
				tot += s.hist[top - j];
			incl = ks_warp_incl(tot, lane);
			if (MODE == KS_MASS && pass == 0) {
				unsigned long long z = __shfl_sync(0xffffffffu, incl, 31);
				double p = ceil((double)top_p * (double)z);

				need = p >= (double)z ? z : p < 1.0 ? 1 : (unsigned long long)p;
			}
			excl = incl - tot;
			hit = __ballot_sync(0xffffffffu, excl < need && incl >= need);
			if (!hit && lane == 0) {	/* cannot happen: need <= total */
				s.key = prefix;
				s.rem = 1;
				s.eq = 1;
			}
			if (hit && lane == (uint32_t)__ffs(hit) - 1) {
				unsigned long long acc = excl;

				for (uint32_t j = 0; j < KS_PER_LANE; j++) {
					unsigned long long b = s.hist[top - j];

					if (acc + b >= need) {
						s.key = prefix | ((top - j) << shift);
						s.rem = need - acc;
						s.eq = b;
						break;
					}
					acc += b;
				}
			}
		}
		__syncthreads();
		prefix = s.key;
		need = s.rem;
		mask |= dmask << shift;
	}
	r.sel = prefix;
}

/*
 * The first id (in id order) whose inclusive prefix of MODE's weights
 * exceeds @target; KS_DRAW computes the target as floor(u * Z) from the
 * raw draw @rnd.  The sums are exact integers, so the crossing found from
 * the warps' totals lies in that warp's walk.
 */
/* floor(u * z) for the raw draw rnd, u = (rnd >> 11) / 2^53: the top of
 * a 117-bit product, exact. */
DEV unsigned long long ks_draw_target(unsigned long long rnd, unsigned long long z)
{
	unsigned long long a = rnd >> 11;

	return (__umul64hi(a, z) << 11) | ((a * z) >> 53);
}

/* The warps' totals s.warp summed. */
DEV unsigned long long ks_warps_total(const ks_shared &s)
{
	unsigned long long z = 0;

	for (uint32_t k = 0; k < KS_W; k++)
		z += s.warp[k];
	return z;
}

/* One thread: the warp whose running total of s.warp first exceeds
 * @target (s.wsel; KS_W: none), the total before it (s.base); s.rem =
 * target, s.id unset. */
DEV void ks_cross_warp(ks_shared &s, unsigned long long target)
{
	unsigned long long base = 0;
	uint32_t sel = KS_W;

	for (uint32_t k = 0; k < KS_W; k++) {
		if (base + s.warp[k] > target) {
			sel = k;
			break;
		}
		base += s.warp[k];
	}
	s.wsel = sel;
	s.base = base;
	s.rem = target;
	s.id = UINT32_MAX;
}

template <int MODE>
DEV uint32_t ks_pick(const ks_row &r, ks_shared &s, unsigned long long target,
		     unsigned long long rnd)
{
	uint32_t lane = threadIdx.x & 31, w = threadIdx.x >> 5;
	unsigned long long acc = 0;

	for (uint32_t i = r.seg0 + lane; i < r.seg1; i += 32)
		acc += ks_weight<MODE>(r, s, i);
	acc = ks_warp_sum(acc);
	if (lane == 0)
		s.warp[w] = acc;
	__syncthreads();
	if (threadIdx.x == 0)
		ks_cross_warp(s, MODE == KS_DRAW ? ks_draw_target(rnd, ks_warps_total(s)) : target);
	__syncthreads();
	/* the crossing warp's segment: all warps sum a 1/32 of its groups
	 * (the whole block reads it once), thread 0 finds the crossing part,
	 * one warp walks that part's <= 4 groups (a serial walk of all 126
	 * groups of a 128256 row cost ~25 us) */
	if (s.wsel < KS_W) {
		uint32_t a0 = min(s.wsel * r.seg, r.vocab), a1 = min(a0 + r.seg, r.vocab);
		uint32_t ng = (a1 - a0 + 31) / 32, gpw = (ng + KS_W - 1) / KS_W;
		uint32_t g0 = min(w * gpw, ng), g1 = min(g0 + gpw, ng);

		acc = 0;
		for (uint32_t gi = g0; gi < g1; gi++) {
			uint32_t i = a0 + 32 * gi + lane;

			if (i < a1)
				acc += ks_weight<MODE>(r, s, i);
		}
		acc = ks_warp_sum(acc);
		__syncthreads();	/* thread 0 has read s.warp */
		if (lane == 0)
			s.warp[w] = acc;
		__syncthreads();
		if (threadIdx.x == 0) {
			unsigned long long base = s.base;
			uint32_t sel = KS_W;

			for (uint32_t k = 0; k < KS_W; k++) {
				if (base + s.warp[k] > s.rem) {
					sel = k;
					break;
				}
				base += s.warp[k];
			}
			s.part = sel;
			s.base = base;
		}
		__syncthreads();
		if (w == s.part) {
			unsigned long long base = s.base, t = s.rem;

			g0 = min(w * gpw, ng);
			g1 = min(g0 + gpw, ng);
			for (uint32_t gi = g0; gi < g1; gi++) {
				uint32_t g = a0 + 32 * gi, i = g + lane;
				unsigned long long x = i < a1 ? ks_weight<MODE>(r, s, i) : 0, incl, tot;
				uint32_t hit;

				incl = ks_warp_incl(x, lane);
				tot = __shfl_sync(0xffffffffu, incl, 31);
				if (base + tot > t) {
					hit = __ballot_sync(0xffffffffu, base + incl > t);
					if (lane == 0)
						s.id = g + (uint32_t)__ffs(hit) - 1;
					break;
				}
				base += tot;
			}
		}
	}
	__syncthreads();
	return s.id;
}

/*
 * Top-k's candidates when they fit one per thread (k <= 1024): two passes
 * copy them, in id order, into shared memory (their ids, biased logits and
 * weights over the private histograms' memory), and top-p, min-p and the draw run
 * there: a candidate is in the top-p prefix when the mass of the
 * candidates better than it is below ceil(top_p * Z) (n comparisons per
 * thread), and the draw is a block prefix sum in id order.  The kept set,
 * the weights and the target are the general path's, so is the token;
 * this saves the top-p and draw passes over the whole row.
 */
#define KS_CAP CUDA_SAMP_THREADS

DEV uint32_t ks_small(const ks_row &r, ks_shared &s, float top_p, unsigned long long rnd)
{
	uint32_t lane = threadIdx.x & 31, w = threadIdx.x >> 5, t = threadIdx.x, cnt = 0, n;
	uint32_t *cid = (uint32_t *)s.ph.raw;
	float *cv = (float *)(cid + KS_CAP);
	unsigned long long *cw = (unsigned long long *)(cv + KS_CAP), x, incl;
	bool kept;
	float v = 0.0f;

	/* pass 1: candidates per warp; thread 0 makes them offsets */
	for (uint32_t g = r.seg0; g < r.seg1; g += 32) {
		uint32_t i = g + lane;
		bool in = i < r.seg1 && ks_in(ks_key(ks_logit(r, s, i)), i, r.ck, r.ci);

		cnt += __popc(__ballot_sync(0xffffffffu, in));
	}
	if (lane == 0)
		s.warp[w] = cnt;
	__syncthreads();
	if (t == 0) {
		unsigned long long o = 0;

		for (uint32_t k = 0; k < KS_W; k++) {
			unsigned long long c = s.warp[k];

			s.warp[k] = o;
			o += c;
		}
		s.nc = (uint32_t)o;
	}
	__syncthreads();
	n = s.nc;
	/* pass 2: copy them in id order */
	{
		uint32_t o = (uint32_t)s.warp[w];

		for (uint32_t g = r.seg0; g < r.seg1; g += 32) {
			uint32_t i = g + lane, b;
			float vi = 0.0f;
			bool in = false;

			if (i < r.seg1) {
				vi = ks_logit(r, s, i);
				in = ks_in(ks_key(vi), i, r.ck, r.ci);
			}
			b = __ballot_sync(0xffffffffu, in);
			if (in) {
				uint32_t pos = o + __popc(b & ((1u << lane) - 1));

				cid[pos] = i;
				cv[pos] = vi;
			}
			o += __popc(b);
		}
	}
	__syncthreads();
	if (t < n) {
		v = cv[t];
		cw[t] = ks_wt(r, v);
	}
	__syncthreads();
	kept = t < n && v >= r.thr;
	if (top_p < 1.0f) {
		/* Z over the candidates, then the mass better than mine */
		x = t < n ? cw[t] : 0;
		x = ks_warp_sum(x);
		if (lane == 0)
			s.warp[w] = x;
		__syncthreads();
		if (t == 0) {
			unsigned long long z = ks_warps_total(s);
			double pz;

			pz = ceil((double)top_p * (double)z);
			s.rem = pz >= (double)z ? z : pz < 1.0 ? 1 : (unsigned long long)pz;
		}
		__syncthreads();
		if (kept) {
			unsigned long long above = 0, need = s.rem;
			uint32_t id = cid[t];

			for (uint32_t j = 0; j < n; j++) {
				float vj = cv[j];

				if (vj > v || (vj == v && cid[j] < id))
					above += cw[j];
			}
			kept = above < need;
		}
		__syncthreads();	/* s.warp and s.rem are reused below */
	}
	/* the draw: kept weights in id order, target floor(u * Z) */
	x = kept ? cw[t] : 0;
	incl = ks_warp_incl(x, lane);
	if (lane == 31)
		s.warp[w] = incl;
	__syncthreads();
	if (t == 0)
		ks_cross_warp(s, ks_draw_target(rnd, ks_warps_total(s)));
	__syncthreads();
	if (w == s.wsel) {
		uint32_t hit = __ballot_sync(0xffffffffu, s.base + incl > s.rem);

		if (lane == 0 && hit)
			s.id = cid[32 * w + __ffs(hit) - 1];
	}
	__syncthreads();
	return s.id;
}

extern "C" __global__ void __launch_bounds__(CUDA_SAMP_THREADS, 1)
k_sample(const float *__restrict__ logits, uint32_t vocab,
	 const struct cuda_samp_row *__restrict__ rows, int32_t *__restrict__ out)
{
	__shared__ ks_shared s;
	const struct cuda_samp_row *p = rows + blockIdx.x;
	uint32_t lane = threadIdx.x & 31, w = threadIdx.x >> 5, nf = 0;
	uint32_t seg = ((vocab + KS_W - 1) / KS_W + 31) & ~31u, bi = UINT32_MAX, tok;
	float bv = -INFINITY;
	ks_row r;

	r.l = logits + (size_t)p->row * vocab;
	r.n_bias = min(p->n_bias, (uint32_t)CUDA_SAMP_BIAS_MAX);
	r.seg0 = min(w * seg, vocab);
	r.seg1 = min(r.seg0 + seg, vocab);
	r.seg = seg;
	r.vocab = vocab;
	for (uint32_t t = threadIdx.x; t < 128; t += blockDim.x)
		s.bmap[t] = 0;
	__syncthreads();
	if (threadIdx.x < r.n_bias) {
		uint32_t id = p->bias_id[threadIdx.x];

		s.bid[threadIdx.x] = id;
		s.bv[threadIdx.x] = p->bias[threadIdx.x];
		atomicOr(&s.bmap[(id >> 5) & 127], 1u << (id & 31));
	}
	__syncthreads();

	/* pass 1: the best token (ties to the lowest id), finite count */
	for (uint32_t i = r.seg0 + lane; i < r.seg1; i += 32) {
		float v = ks_logit(r, s, i);

		if (isfinite(v)) {
			nf++;
			if (v > bv) {
				bv = v;
				bi = i;
			}
		}
	}
#pragma unroll
	for (int k = 16; k; k >>= 1) {
		float ov = __shfl_xor_sync(0xffffffffu, bv, k);
		uint32_t oi = __shfl_xor_sync(0xffffffffu, bi, k);

		nf += __shfl_xor_sync(0xffffffffu, nf, k);
		if (oi != UINT32_MAX && (bi == UINT32_MAX || ov > bv || (ov == bv && oi < bi))) {
			bv = ov;
			bi = oi;
		}
	}
	if (lane == 0) {
		s.mv[w] = bv;
		s.mi[w] = bi;
		s.nf[w] = nf;
	}
	__syncthreads();
	if (threadIdx.x == 0) {
		float m = -INFINITY;
		uint32_t b = UINT32_MAX, n = 0;

		/* warps in id order: a later warp wins only when strictly better */
		for (uint32_t k = 0; k < KS_W; k++) {
			n += s.nf[k];
			if (s.mi[k] != UINT32_MAX && (b == UINT32_MAX || s.mv[k] > m)) {
				m = s.mv[k];
				b = s.mi[k];
			}
		}
		s.m = m;
		s.best = b;
		s.nfin = n;
	}
	__syncthreads();
	if (!s.nfin || p->greedy) {
		if (threadIdx.x == 0)
			out[blockIdx.x] = s.nfin ? (int32_t)s.best : -1;
		return;
	}
	r.m = s.m;
	r.inv_t = p->inv_t;
	r.thr = r.m + p->minp_c;
	r.ck = r.kc = r.sel = 0;
	r.ci = r.ic = UINT32_MAX;
	if (p->top_k && p->top_k < s.nfin) {
		ks_radix<KS_CNT>(r, s, p->top_k, 0.0f);
		r.ck = r.sel;
		r.ci = s.rem < s.eq ? ks_pick<KS_TIEK>(r, s, s.rem - 1, 0) : UINT32_MAX;
		if (p->top_k <= KS_CAP) {
			tok = ks_small(r, s, p->top_p, p->r);
			if (threadIdx.x == 0)
				out[blockIdx.x] = tok == UINT32_MAX ? (int32_t)s.best : (int32_t)tok;
			return;
		}
	}
	if (p->top_p < 1.0f) {
		ks_radix<KS_MASS>(r, s, 0, p->top_p);
		r.kc = r.sel;
		r.ic = s.rem < s.eq ? ks_pick<KS_TIEP>(r, s, s.rem - 1, 0) : UINT32_MAX;
	}
	tok = ks_pick<KS_DRAW>(r, s, 0, p->r);
	if (threadIdx.x == 0)
		out[blockIdx.x] = tok == UINT32_MAX ? (int32_t)s.best : (int32_t)tok;
}
