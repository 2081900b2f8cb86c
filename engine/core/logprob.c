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
	 * the list only if strictly above the k-th (NaN and -inf never). */
	for (uint32_t i = 0; i < vocab; i++) {
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
	/* Pass 2: the normaliser, relative to m (every term <= 1). */
	if (!n_inf && m > -INFINITY) {
		for (uint32_t i = 0; i < vocab; i++) {
			float d = logits[i] - m;

			if (d > -INFINITY)	/* skips NaN and -inf */
				sum += (double)expf(d);
		}
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
