// SPDX-License-Identifier: MIT
/*
 * logprob.c — log-softmax of one logits row, the chosen token and the top k
 * (logprob.h has the contract and the rules for NaN / inf).
 */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <velo/compiler.h>

#include "logprob.h"

_Static_assert(ENG_LOGPROB_TOPK_MAX == 8, "= PROTO_LOGPROBS_MAX");

struct cand {
	float v;
	uint32_t id;
};

/* Insert (v, id) into the sorted top list (descending value; an equal
 * value goes after those present, which have lower ids: ties to the lower
 * id since ids arrive in increasing order). */
static inline void top_insert(struct cand *top, uint32_t *n, uint32_t k,
			      float v, uint32_t id)
{
	uint32_t i = *n < k ? (*n)++ : k - 1;

	while (i > 0 && top[i - 1].v < v) {
		top[i] = top[i - 1];
		i--;
	}
	top[i].v = v;
	top[i].id = id;
}

/*
 * sum_i exp(l[i] - m) for logits <= m, four lanes at a time with GCC
 * vector extensions (16 bytes: SSE, every x86-64; a wider type would
 * change the ABI of non-AVX builds), two vectors per iteration:
 *   d = l - m, below -87 (and -inf, NaN: the compare is false) taken as
 *   -87, whose e^-87 = 1.6e-38 is nothing next to the 1 of the largest;
 *   2^(d log2 e) = 2^n 2^f, n rounded by the 1.5 x 2^23 trick, f in
 *   [-0.5, 0.5], 2^f = e^(f ln 2) by a degree-6 Taylor polynomial
 *   (relative error < 3e-8 there), 2^n added into the exponent bits.
 * Lanes sum blocks of 64 tokens in float, blocks are added in double.
 * The tail (< 4) goes through the same code on a padded vector.
 */
typedef float v4f __attribute__((vector_size(16)));	/* 4 lanes: SSE */
typedef int32_t v4i __attribute__((vector_size(16)));

static inline v4f exp_neg4(v4f d)
{
	const v4f lim = (v4f){ 0 } - 87.0f;
	const v4f magic = (v4f){ 0 } + 12582912.0f;	/* 1.5 x 2^23 */
	v4i keep = d > lim;
	v4i db, lb, xb;
	v4f x, n, f, p;

	__builtin_memcpy(&db, &d, sizeof(d));
	__builtin_memcpy(&lb, &lim, sizeof(lim));
	xb = (db & keep) | (lb & ~keep);
	__builtin_memcpy(&x, &xb, sizeof(x));
	x = x * 1.44269504088896341f;
	n = (x + magic) - magic;
	f = (x - n) * 0.693147180559945309f;
	p = 1.0f + f * (1.0f + f * (0.5f + f * (1.0f / 6 + f * (1.0f / 24 +
	    f * (1.0f / 120 + f * (1.0f / 720))))));
	__builtin_memcpy(&xb, &p, sizeof(p));
	xb += __builtin_convertvector(n, v4i) << 23;
	__builtin_memcpy(&p, &xb, sizeof(p));
	return p;
}

#define EXP_BLOCK 64
static double exp_sum(const float *l, uint32_t vocab, float m)
{
	double sum = 0.0;
	uint32_t i = 0;
	v4f a0, a1, v, w;

	while (i + 8 <= vocab) {
		uint32_t end = i + EXP_BLOCK <= vocab ? i + EXP_BLOCK : vocab & ~7u;

		a0 = a1 = (v4f){ 0 };
		for (; i < end; i += 8) {
			__builtin_memcpy(&v, l + i, sizeof(v));
			__builtin_memcpy(&w, l + i + 4, sizeof(w));
			a0 += exp_neg4(v - m);
			a1 += exp_neg4(w - m);
		}
		a0 += a1;
		sum += (double)(a0[0] + a0[1] + a0[2] + a0[3]);
	}
	for (; i < vocab; i += 4) {
		v = (v4f){ 0 } - INFINITY;
		for (uint32_t j = 0; j < 4 && i + j < vocab; j++)
			v[j] = l[i + j];
		a0 = exp_neg4(v - m);
		sum += (double)(a0[0] + a0[1] + a0[2] + a0[3]);
	}
	return sum;
}

static float lp_of(float l, double m, double lse, uint32_t n_inf)
{
	if (n_inf)	/* the +inf tokens share everything */
		return l == INFINITY ? (float)-log((double)n_inf) : -INFINITY;
	if (!(l > -INFINITY))	/* -inf and NaN */
		return -INFINITY;
	return (float)((double)l - m - lse);
}

int eng_logprob_topk(const float *logits, uint32_t vocab, uint32_t chosen,
		     uint32_t k, struct proto_logprob *out)
{
	struct cand top[ENG_LOGPROB_TOPK_MAX];
	uint32_t n = 0, n_inf = 0;
	float thr = -INFINITY;	/* k-th value once k are held */
	float m = -INFINITY;	/* largest finite logit */
	double sum = 0.0, lse = 0.0;

	if (!logits || !out || !vocab || chosen >= vocab ||
	    k > ENG_LOGPROB_TOPK_MAX || k > vocab)
		return -EINVAL;
	/* Pass 1: largest finite logit, +inf count, top k.  A token enters
	 * the list only if strictly above the k-th (NaN and -inf never).
	 * Blocks of 8 where no logit is above min(k-th, m) change nothing
	 * and are skipped after one vector compare (most of them, once the
	 * list has settled: ~0.3 ns per token instead of ~1). */
	for (uint32_t i = 0; i < vocab;) {
		uint32_t end = i + 8 <= vocab ? i + 8 : vocab;

		if (end == i + 8) {
			v4f lo = (v4f){ 0 } + (k && thr < m ? thr : m);
			v4f a, b;
			v4i hit;

			__builtin_memcpy(&a, logits + i, sizeof(a));
			__builtin_memcpy(&b, logits + i + 4, sizeof(b));
			hit = (a > lo) | (b > lo);
			if (!(hit[0] | hit[1] | hit[2] | hit[3])) {
				i = end;
				continue;
			}
		}
		for (; i < end; i++) {
			float v = logits[i];

			if (v > thr && k) {
				top_insert(top, &n, k, v, i);
				if (n == k)
					thr = top[k - 1].v;
			}
			if (v > m) {
				if (unlikely(v == INFINITY))
					n_inf++;
				else
					m = v;
			}
		}
	}
	/* Pass 2: the normaliser, relative to m (every term <= 1). */
	if (!n_inf && m > -INFINITY) {
		sum = exp_sum(logits, vocab, m);
		lse = log(sum);
	}
	/* Fewer than k above -inf: the lowest ids not listed, at -inf. */
	for (uint32_t id = 0; n < k && id < vocab; id++) {
		bool listed = false;

		for (uint32_t j = 0; j < n; j++)
			listed |= top[j].id == id;
		if (!listed) {
			top[n].v = -INFINITY;
			top[n].id = id;
			n++;
		}
	}
	out[0].token = chosen;
	out[0].logprob = lp_of(logits[chosen], m, lse, n_inf);
	for (uint32_t j = 0; j < k; j++) {
		out[1 + j].token = top[j].id;
		out[1 + j].logprob = lp_of(top[j].v, m, lse, n_inf);
	}
	return 0;
}
