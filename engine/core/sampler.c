// SPDX-License-Identifier: MIT
/*
 * sampler.c — see sampler.h for the pipeline.  Everything here runs per
 * generated token on the scheduler thread, so nothing allocates and every
 * loop is bounded by the vocabulary or the penalty window.
 */
#include <errno.h>
#include <math.h>
#ifdef __SSE4_1__
#include <smmintrin.h>
#endif
#include <stdlib.h>
#include <string.h>

#include <velo/compiler.h>

#include "sampler.h"

#define SAMPLER_VOCAB_MAX (1u << 24)

/* ---- RNG: splitmix64 seeds xoshiro256** (Blackman & Vigna) ------------- */

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static inline uint64_t rotl64(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

uint64_t eng_sampler_rng_next(struct eng_sampler *s)
{
	uint64_t *st = s->rng;
	uint64_t r = rotl64(st[1] * 5, 7) * 9;
	uint64_t t = st[1] << 17;

	st[2] ^= st[0];
	st[3] ^= st[1];
	st[1] ^= st[2];
	st[0] ^= st[3];
	st[2] ^= t;
	st[3] = rotl64(st[3], 45);
	return r;
}

/* Uniform in [0, 1) with 53 random bits. */
static double rng_uniform(struct eng_sampler *s)
{
	return (double)(eng_sampler_rng_next(s) >> 11) * 0x1.0p-53;
}

/* ---- parameters and state ---------------------------------------------- */

void eng_sampler_params_default(struct eng_sampler_params *p)
{
	memset(p, 0, sizeof(*p));
	p->temperature = 0.0f;
	p->top_p = 1.0f;
	p->repetition_penalty = 1.0f;
}

size_t eng_sampler_size(uint32_t window_max)
{
	return sizeof(struct eng_sampler) + (size_t)window_max * sizeof(uint32_t);
}

static bool params_ok(const struct eng_sampler_params *p, uint32_t window_max)
{
	if (isnan(p->temperature) || isinf(p->temperature))
		return false;
	if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
		return false;
	if (!(p->min_p >= 0.0f && p->min_p < 1.0f))
		return false;
	if (!(p->repetition_penalty > 0.0f) || isinf(p->repetition_penalty))
		return false;
	if (!isfinite(p->presence_penalty) || !isfinite(p->frequency_penalty))
		return false;
	if (p->penalty_window > window_max || p->n_stop > ENG_SAMPLER_STOP_MAX)
		return false;
	if (p->n_bias > ENG_SAMPLER_BIAS_MAX)
		return false;
	for (uint32_t i = 0; i < p->n_bias; i++)
		if (!(fabsf(p->bias[i]) <= ENG_SAMPLER_BIAS_LIMIT))
			return false;
	return true;
}

struct eng_sampler *eng_sampler_init(void *mem, size_t len,
				     const struct eng_sampler_params *p,
				     uint32_t window_max)
{
	struct eng_sampler *s = mem;
	uint64_t x;

	if (!mem || !p || ((uintptr_t)mem & 7) ||
	    window_max > ENG_SAMPLER_WINDOW_MAX || !params_ok(p, window_max)) {
		errno = EINVAL;
		return NULL;
	}
	if (len < eng_sampler_size(window_max)) {
		errno = ENOSPC;
		return NULL;
	}
	memset(s, 0, sizeof(*s));
	s->p = *p;
	x = p->seed;
	for (int i = 0; i < 4; i++)
		s->rng[i] = splitmix64(&x);
	s->win_cap = window_max;
	return s;
}

void eng_sampler_accept(struct eng_sampler *s, uint32_t token)
{
	if (!s->win_cap)
		return;
	s->win[s->win_head] = token;
	s->win_head = s->win_head + 1 == s->win_cap ? 0 : s->win_head + 1;
	if (s->win_len < s->win_cap)
		s->win_len++;
}

bool eng_sampler_is_stop(const struct eng_sampler *s, uint32_t token)
{
	for (uint32_t i = 0; i < s->p.n_stop; i++)
		if (s->p.stop_ids[i] == token)
			return true;
	return false;
}

/* ---- scratch ------------------------------------------------------------ */

int eng_sampler_scratch_init(struct eng_sampler_scratch *sc, uint32_t vocab)
{
	/* One allocation, four arrays of vocab entries: val (f32), idx
	 * (u32), cnt (u32), prob (f32): 16 bytes a token, 2 MiB for a
	 * 128k vocabulary. */
	size_t n = ALIGN_UP((size_t)vocab, 16);
	char *m;

	memset(sc, 0, sizeof(*sc));
	if (!vocab || vocab > SAMPLER_VOCAB_MAX)
		return -EINVAL;
	sc->mem_len = 4 * n * sizeof(uint32_t);
	m = calloc(1, sc->mem_len);
	if (!m)
		return -ENOMEM;
	sc->mem = m;
	sc->vocab = vocab;
	sc->val = (float *)m;
	sc->idx = (uint32_t *)(m + n * 4);
	sc->cnt = (uint32_t *)(m + 2 * n * 4);
	return 0;
}

void eng_sampler_scratch_fini(struct eng_sampler_scratch *sc)
{
	free(sc->mem);
	memset(sc, 0, sizeof(*sc));
}

/* The fourth array: exp(l - max) of every token, when top-k is off. */
static inline float *scratch_prob(struct eng_sampler_scratch *sc)
{
	return (float *)((char *)sc->mem + 3 * ALIGN_UP((size_t)sc->vocab, 16) * 4);
}

/* ---- selection ---------------------------------------------------------- */

/* Total order on tokens: higher logit first, then lower id. */
static inline bool better(const float *v, uint32_t a, uint32_t b)
{
	return v[a] > v[b] || (v[a] == v[b] && a < b);
}

/* Heap whose root is the worst kept token (every child is better). */
static void heap_sift_down(uint32_t *h, uint32_t n, uint32_t i, const float *v)
{
	for (;;) {
		uint32_t l = 2 * i + 1, r = l + 1, w = i, t;

		if (l < n && better(v, h[w], h[l]))
			w = l;
		if (r < n && better(v, h[w], h[r]))
			w = r;
		if (w == i)
			return;
		t = h[i];
		h[i] = h[w];
		h[w] = t;
		i = w;
	}
}

static void heap_sift_up(uint32_t *h, uint32_t i, const float *v)
{
	while (i) {
		uint32_t p = (i - 1) / 2, t;

		if (!better(v, h[p], h[i]))
			return;
		t = h[i];
		h[i] = h[p];
		h[p] = t;
		i = p;
	}
}

/*
 * The best @c tokens of v[0..vocab) with finite logits >= @thr, in h[],
 * best first.  O(V log c) worst case, about O(V) when logits are not
 * adversarially ordered (most tokens lose against the root).
 * Return: how many (<= c).
 */
static uint32_t select_best(const float *v, uint32_t vocab, uint32_t c,
			    float thr, uint32_t *h)
{
	uint32_t n = 0;

	for (uint32_t t = 0; t < vocab; t++) {
		float x = v[t];

		if (!(x >= thr) || isinf(x))
			continue;
		if (n < c) {
			h[n] = t;
			heap_sift_up(h, n++, v);
		} else if (better(v, t, h[0])) {
			h[0] = t;
			heap_sift_down(h, n, 0, v);
		}
	}
	/* Heap sort: the worst goes to the end each round. */
	for (uint32_t k = n; k > 1; k--) {
		uint32_t t = h[0];

		h[0] = h[k - 1];
		h[k - 1] = t;
		heap_sift_down(h, k - 1, 0, v);
	}
	return n;
}

/*
 * Index of the highest finite logit, ties to the lowest id; vocab if none.
 * Two passes: the maximum over finite values (SSE4.1, in the x86-64-v2
 * baseline: 4 lanes x 2, NaN and +inf masked to -inf), then the first id
 * holding it.  ~100 us for 128k logits on the 2-core development VM,
 * half of a plain scalar max loop there (velo-bench-engine prints it).
 */
static uint32_t argmax(const float *v, uint32_t vocab)
{
	float m = -INFINITY;
	uint32_t t = 0;

#ifdef __SSE4_1__
	{
		const __m128 ninf = _mm_set1_ps(-INFINITY), pinf = _mm_set1_ps(INFINITY);
		__m128 m0 = ninf, m1 = ninf;
		float lanes[4];

		for (; t + 8 <= vocab; t += 8) {
			__m128 a = _mm_loadu_ps(v + t), b = _mm_loadu_ps(v + t + 4);

			/* x < +inf is false for NaN and +inf: those become -inf */
			a = _mm_blendv_ps(ninf, a, _mm_cmplt_ps(a, pinf));
			b = _mm_blendv_ps(ninf, b, _mm_cmplt_ps(b, pinf));
			m0 = _mm_max_ps(m0, a);
			m1 = _mm_max_ps(m1, b);
		}
		_mm_storeu_ps(lanes, _mm_max_ps(m0, m1));
		for (int j = 0; j < 4; j++)
			m = lanes[j] > m ? lanes[j] : m;
	}
#endif
	for (; t < vocab; t++)
		m = v[t] > m && v[t] < INFINITY ? v[t] : m;
	if (m == -INFINITY)
		return vocab;
	for (t = 0; t < vocab; t++)
		if (v[t] == m)
			return t;
	return vocab;
}

/* ---- penalties ---------------------------------------------------------- */

static bool penalties_active(const struct eng_sampler *s)
{
	const struct eng_sampler_params *p = &s->p;

	return s->win_len && p->penalty_window &&
	       (p->repetition_penalty != 1.0f || p->presence_penalty != 0.0f ||
		p->frequency_penalty != 0.0f);
}

/* Tokens of the window, newest last: slot of the i-th newest. */
static inline uint32_t win_token(const struct eng_sampler *s, uint32_t i)
{
	uint32_t slot = s->win_head + s->win_cap - 1 - i;

	return s->win[slot >= s->win_cap ? slot - s->win_cap : slot];
}

/* Penalised and biased copy of @logits in sc->val.  O(vocab) copy +
 * O(window) + O(biases). */
static int apply_penalties(const struct eng_sampler *s,
			   struct eng_sampler_scratch *sc, const float *logits,
			   uint32_t vocab)
{
	const struct eng_sampler_params *p = &s->p;
	uint32_t n = penalties_active(s) ? MIN(s->win_len, p->penalty_window) : 0;

	for (uint32_t i = 0; i < n; i++)
		if (win_token(s, i) >= vocab)
			return -EINVAL;
	for (uint32_t i = 0; i < p->n_bias; i++)
		if (p->bias_ids[i] >= vocab)
			return -EINVAL;
	memcpy(sc->val, logits, (size_t)vocab * sizeof(float));
	for (uint32_t i = 0; i < n; i++)
		sc->cnt[win_token(s, i)]++;
	/* Second pass applies each distinct token once and re-zeroes cnt. */
	for (uint32_t i = 0; i < n; i++) {
		uint32_t t = win_token(s, i);
		uint32_t c = sc->cnt[t];
		float x;

		if (!c)
			continue;
		x = sc->val[t];
		if (p->repetition_penalty != 1.0f)
			x = x > 0.0f ? x / p->repetition_penalty
				     : x * p->repetition_penalty;
		x -= p->presence_penalty + p->frequency_penalty * (float)c;
		sc->val[t] = x;
		sc->cnt[t] = 0;
	}
	for (uint32_t i = 0; i < p->n_bias; i++)
		sc->val[p->bias_ids[i]] += p->bias[i];
	return 0;
}

bool eng_sampler_plain_greedy(const struct eng_sampler *s)
{
	const struct eng_sampler_params *p = &s->p;

	return (p->temperature <= 0.0f || p->top_k == 1) && !p->n_bias &&
	       !penalties_active(s);
}

bool eng_sampler_penalized(const struct eng_sampler *s)
{
	return penalties_active(s);
}

/* ---- sampling ----------------------------------------------------------- */

/*
 * Draw from the kept candidates idx[0..n), weights exp((v - m) / T), or
 * e[id] when the caller has them already (the same expression, so the
 * same values).
 */
static uint32_t draw_sorted(struct eng_sampler *s, const float *v,
			    const uint32_t *idx, uint32_t n, float m, float inv_t,
			    const float *e)
{
	double z = 0.0, target, cum = 0.0;

	for (uint32_t i = 0; i < n; i++)
		z += e ? e[idx[i]] : expf((v[idx[i]] - m) * inv_t);
	target = rng_uniform(s) * z;
	for (uint32_t i = 0; i < n; i++) {
		cum += e ? e[idx[i]] : expf((v[idx[i]] - m) * inv_t);
		if (cum > target)
			return idx[i];
	}
	return idx[n - 1];	/* rounding: target within the last ulp of z */
}

/* Sort ids h[0..n) best first (heap sort, O(n log n), no recursion). */
static void sort_best_first(const float *v, uint32_t *h, uint32_t n)
{
	for (uint32_t i = n / 2; i-- > 0;)
		heap_sift_down(h, n, i, v);
	for (uint32_t k = n; k > 1; k--) {
		uint32_t t = h[0];

		h[0] = h[k - 1];
		h[k - 1] = t;
		heap_sift_down(h, k - 1, 0, v);
	}
}

/*
 * Bucket b of a token: floor of its distance below the top logit, in
 * units of SAMPLER_BUCKET_W nats (after temperature); monotone in the
 * logit, so buckets are ranges of the sorted order.  The last bucket
 * takes everything further down (e^-32: negligible mass).
 */
#define SAMPLER_BUCKETS 128
#define SAMPLER_BUCKET_W 0.25f

static inline uint32_t bucket_of(float x, float m, float inv_t)
{
	float d = (m - x) * inv_t * (1.0f / SAMPLER_BUCKET_W);

	return d < (float)(SAMPLER_BUCKETS - 1) ? (uint32_t)d : SAMPLER_BUCKETS - 1;
}

/*
 * Top-p (when top_p <= 1) then min-p (logit >= thr) without sorting the
 * vocabulary: two O(V) passes and a sort of one bucket.  The kept set is
 * exactly the one a full sort would give: the most likely prefix (ties to
 * the lower id) whose mass reaches top_p of the total, cut at thr.
 * Return: the kept ids in sc->idx (the crossing bucket in descending
 * order, the buckets above it in id order).
 */
static uint32_t truncate_buckets(struct eng_sampler_scratch *sc, const float *v,
				 uint32_t vocab, float m, float inv_t,
				 float top_p, float thr)
{
	float *e = scratch_prob(sc);
	double mass[SAMPLER_BUCKETS] = { 0 }, z = 0.0, cum = 0.0, need = 0.0;
	uint32_t cnt[SAMPLER_BUCKETS] = { 0 };
	uint32_t bstar = SAMPLER_BUCKETS - 1, n = 0, nb = 0;

	for (uint32_t t = 0; t < vocab; t++) {
		float x = v[t];
		uint32_t b;

		if (!isfinite(x)) {
			e[t] = 0.0f;
			continue;
		}
		e[t] = expf((x - m) * inv_t);
		z += e[t];
		b = bucket_of(x, m, inv_t);
		mass[b] += e[t];
		cnt[b]++;
	}
	if (top_p <= 1.0f) {
		for (uint32_t b = 0; b < SAMPLER_BUCKETS; b++) {
			if (cum + mass[b] >= (double)top_p * z) {
				bstar = b;
				need = (double)top_p * z - cum;
				break;
			}
			cum += mass[b];
		}
	}
	/* Buckets above bstar are kept whole (then cut at thr); bstar's
	 * tokens go after them, sorted, and are kept until the mass. */
	for (uint32_t t = 0; t < vocab; t++) {
		uint32_t b;

		if (e[t] == 0.0f && !isfinite(v[t]))
			continue;
		b = bucket_of(v[t], m, inv_t);
		if (b < bstar && v[t] >= thr)
			sc->idx[n++] = t;
		else if (b == bstar)
			sc->idx[vocab - 1 - nb++] = t;	/* from the end */
	}
	/* move bstar's ids next to the others (ranges may overlap), sort */
	memmove(sc->idx + n, sc->idx + vocab - nb, (size_t)nb * sizeof(uint32_t));
	sort_best_first(v, sc->idx + n, nb);
	{
		double acc = 0.0;
		uint32_t i;

		for (i = 0; i < nb; i++) {
			uint32_t t = sc->idx[n + i];

			if (v[t] < thr)
				break;
			acc += e[t];
			if (top_p <= 1.0f && acc >= need) {
				i++;
				break;
			}
		}
		n += i;
	}
	return n;
}

int eng_sampler_sample(struct eng_sampler *s, struct eng_sampler_scratch *sc,
		       const float *logits, uint32_t vocab, uint32_t *token)
{
	const struct eng_sampler_params *p = &s->p;
	const float *v = logits;
	float m, inv_t, thr;
	uint32_t best, k, n, kept;
	bool top_p_on, min_p_on;
	int rc;

	if (!vocab || vocab > sc->vocab)
		return -EINVAL;
	if (penalties_active(s) || p->n_bias) {
		rc = apply_penalties(s, sc, logits, vocab);
		if (rc)
			return rc;
		v = sc->val;
	}

	best = argmax(v, vocab);
	if (best == vocab)
		return -EDOM;
	if (p->temperature <= 0.0f || p->top_k == 1) {
		*token = best;
		return 0;
	}

	m = v[best];
	inv_t = 1.0f / p->temperature;
	k = p->top_k && p->top_k < vocab ? p->top_k : 0;
	top_p_on = p->top_p < 1.0f;
	min_p_on = p->min_p > 0.0f;
	/* min-p in logit units: p_i >= min_p * p_max <=> l_i >= thr. */
	thr = min_p_on ? m + logf(p->min_p) * p->temperature : -INFINITY;

	if (k) {
		/* Top-k first; top-p renormalises over those k. */
		n = select_best(v, vocab, k, -INFINITY, sc->idx);
		kept = n;
		if (top_p_on) {
			double z = 0.0, cum = 0.0;

			for (uint32_t i = 0; i < n; i++)
				z += expf((v[sc->idx[i]] - m) * inv_t);
			for (uint32_t i = 0; i < n; i++) {
				cum += expf((v[sc->idx[i]] - m) * inv_t);
				if (cum >= (double)p->top_p * z) {
					kept = i + 1;
					break;
				}
			}
		}
	} else if (!top_p_on && !min_p_on) {
		/* No truncation: draw over every finite token in id order. */
		float *e = scratch_prob(sc);
		double z = 0.0, target, cum = 0.0;

		for (uint32_t t = 0; t < vocab; t++) {
			float x = v[t];

			e[t] = isfinite(x) ? expf((x - m) * inv_t) : 0.0f;
			z += e[t];
		}
		target = rng_uniform(s) * z;
		for (uint32_t t = 0; t < vocab; t++) {
			cum += e[t];
			if (e[t] > 0.0f && cum > target) {
				*token = t;
				return 0;
			}
		}
		*token = best;	/* rounding at the very end of the sum */
		return 0;
	} else {
		/* Top-p / min-p over the whole vocabulary, in O(V): bucket the
		 * tokens by log-probability, find the bucket where the kept
		 * mass is reached, sort only that bucket. */
		n = truncate_buckets(sc, v, vocab, m, inv_t,
				     top_p_on ? p->top_p : 2.0f, thr);
		*token = draw_sorted(s, v, sc->idx, n, m, inv_t, scratch_prob(sc));
		return 0;
	}

	/* min-p cuts the sorted prefix where logits fall below thr. */
	if (min_p_on)
		while (kept > 1 && v[sc->idx[kept - 1]] < thr)
			kept--;
	*token = draw_sorted(s, v, sc->idx, kept, m, inv_t, NULL);
	return 0;
}
