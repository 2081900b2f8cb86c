// SPDX-License-Identifier: MIT
/*
 * test_sampler.c — the sampler against distributions computed here in
 * double precision: chi-square frequency tests with fixed seeds (so a run
 * is reproducible, and a wrong temperature, truncation or normalisation
 * pushes the statistic far past the 1e-4 critical value), truncation sets
 * (top-k, top-p, min-p) checked exactly, penalties checked value by value,
 * greedy ties, determinism per seed, stop ids, parameter checks, and no
 * allocation per call.
 */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../engine/core/sampler.h"
#include "alloc_count.h"

#define WIN 64

/* Test-local RNG for logits (independent of the sampler's). */
static uint64_t trng = 0x1234567;

static double urand(void)
{
	trng ^= trng << 13;
	trng ^= trng >> 7;
	trng ^= trng << 17;
	return (double)(trng >> 11) * 0x1.0p-53;
}

static struct eng_sampler *mk(void *mem, const struct eng_sampler_params *p)
{
	struct eng_sampler *s = eng_sampler_init(mem, eng_sampler_size(WIN), p, WIN);

	assert_non_null(s);
	return s;
}

static struct eng_sampler_params params(float t, uint32_t k, float tp, float mp,
					uint64_t seed)
{
	struct eng_sampler_params p;

	eng_sampler_params_default(&p);
	p.temperature = t;
	p.top_k = k;
	p.top_p = tp;
	p.min_p = mp;
	p.seed = seed;
	return p;
}

/* Chi-square critical value at p = 1e-4 (Wilson-Hilferty, z = 3.719). */
static double chi2_crit(int df)
{
	double a = 2.0 / (9.0 * df);

	return df * pow(1.0 - a + 3.719 * sqrt(a), 3);
}

/*
 * Draw n samples; every sample must have expected probability > 0; the
 * chi-square statistic over the tokens with probability > 0 must pass.
 */
static void check_freq(struct eng_sampler *s, struct eng_sampler_scratch *sc,
		       const float *logits, uint32_t V, const double *pexp,
		       int n)
{
	unsigned *cnt = calloc(V, sizeof(*cnt));
	double chi = 0.0;
	int df = -1;

	for (int i = 0; i < n; i++) {
		uint32_t t;

		assert_int_equal(eng_sampler_sample(s, sc, logits, V, &t), 0);
		assert_true(t < V);
		if (pexp[t] <= 0.0)
			fail_msg("token %u drawn, expected probability 0", t);
		cnt[t]++;
	}
	for (uint32_t t = 0; t < V; t++) {
		double e;

		if (pexp[t] <= 0.0)
			continue;
		e = pexp[t] * n;
		chi += (cnt[t] - e) * (cnt[t] - e) / e;
		df++;
	}
	free(cnt);
	if (df > 0 && chi > chi2_crit(df))
		fail_msg("chi-square %.1f > %.1f (df %d)", chi, chi2_crit(df), df);
}

/* softmax(l / T) over a subset mask, in double */
static void softmax_d(const float *l, uint32_t V, double T, const bool *keep,
		      double *p)
{
	double mx = -INFINITY, z = 0.0;

	for (uint32_t t = 0; t < V; t++)
		if (keep[t] && l[t] / T > mx)
			mx = l[t] / T;
	for (uint32_t t = 0; t < V; t++) {
		p[t] = keep[t] ? exp(l[t] / T - mx) : 0.0;
		z += p[t];
	}
	for (uint32_t t = 0; t < V; t++)
		p[t] /= z;
}

/* ids sorted by logit desc, id asc */
static const float *sort_l;
static int cmp_desc(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	if (sort_l[x] != sort_l[y])
		return sort_l[x] > sort_l[y] ? -1 : 1;
	return x < y ? -1 : 1;
}

static void sorted_ids(const float *l, uint32_t V, uint32_t *ids)
{
	for (uint32_t t = 0; t < V; t++)
		ids[t] = t;
	sort_l = l;
	qsort(ids, V, sizeof(*ids), cmp_desc);
}

/* ------------------------------------------------------------------------ */

static void test_greedy_and_ties(void **st)
{
	struct eng_sampler_scratch sc;
	uint64_t mem[(sizeof(struct eng_sampler) + 4 * WIN) / 8 + 1];
	struct eng_sampler_params p = params(0.0f, 0, 1.0f, 0.0f, 1);
	struct eng_sampler *s = mk(mem, &p);
	float l[1000];
	uint32_t t, best = 0;

	(void)st;
	assert_int_equal(eng_sampler_scratch_init(&sc, 1000), 0);
	for (int round = 0; round < 20; round++) {
		for (int i = 0; i < 1000; i++)
			l[i] = (float)(urand() * 20.0 - 10.0);
		best = 0;
		for (int i = 1; i < 1000; i++)
			if (l[i] > l[best])
				best = i;
		assert_int_equal(eng_sampler_sample(s, &sc, l, 1000, &t), 0);
		assert_int_equal(t, best);
	}
	/* ties go to the lowest id; NaN is never chosen */
	l[700] = 50.0f;
	l[300] = 50.0f;
	l[10] = NAN;
	assert_int_equal(eng_sampler_sample(s, &sc, l, 1000, &t), 0);
	assert_int_equal(t, 300);
	/* top_k == 1 is greedy at any temperature */
	p = params(1.5f, 1, 1.0f, 0.0f, 9);
	s = mk(mem, &p);
	assert_int_equal(eng_sampler_sample(s, &sc, l, 1000, &t), 0);
	assert_int_equal(t, 300);
	/* no finite logit */
	for (int i = 0; i < 1000; i++)
		l[i] = -INFINITY;
	assert_int_equal(eng_sampler_sample(s, &sc, l, 1000, &t), -EDOM);
	eng_sampler_scratch_fini(&sc);
}

static void test_temperature_distribution(void **st)
{
	enum { V = 12 };
	struct eng_sampler_scratch sc;
	uint64_t mem[(sizeof(struct eng_sampler) + 4 * WIN) / 8 + 1];
	float l[V];
	double p[V];
	bool all[V];
	const float temps[] = { 1.0f, 0.5f, 2.0f };

	(void)st;
	assert_int_equal(eng_sampler_scratch_init(&sc, V), 0);
	for (int i = 0; i < V; i++) {
		l[i] = (float)(urand() * 4.0 - 2.0);
		all[i] = true;
	}
	for (unsigned k = 0; k < sizeof(temps) / sizeof(temps[0]); k++) {
		struct eng_sampler_params pr = params(temps[k], 0, 1.0f, 0.0f, 42 + k);
		struct eng_sampler *s = mk(mem, &pr);

		softmax_d(l, V, temps[k], all, p);
		check_freq(s, &sc, l, V, p, 40000);
	}
	eng_sampler_scratch_fini(&sc);
}

static void test_top_k(void **st)
{
	enum { V = 200, K = 7 };
	struct eng_sampler_scratch sc;
	uint64_t mem[(sizeof(struct eng_sampler) + 4 * WIN) / 8 + 1];
	struct eng_sampler_params pr = params(0.8f, K, 1.0f, 0.0f, 7);
	struct eng_sampler *s = mk(mem, &pr);
	float l[V];
	double p[V];
	bool keep[V];
	uint32_t ids[V];

	(void)st;
	assert_int_equal(eng_sampler_scratch_init(&sc, V), 0);
	for (int i = 0; i < V; i++)
		l[i] = (float)(urand() * 3.0);
	l[50] = l[51] = 4.0f;	/* a tie inside the top-k */
	sorted_ids(l, V, ids);
	memset(keep, 0, sizeof(keep));
	for (int i = 0; i < K; i++)
		keep[ids[i]] = true;
	softmax_d(l, V, 0.8, keep, p);
	check_freq(s, &sc, l, V, p, 30000);
	eng_sampler_scratch_fini(&sc);
}

/* Kept set of top-p (over the top-k set when k) then min-p, in double. */
static void expect_trunc(const float *l, uint32_t V, double T, uint32_t k,
			 double top_p, double min_p, double *p)
{
	uint32_t *ids = malloc(V * sizeof(*ids));
	bool *keep = calloc(V, sizeof(*keep));
	uint32_t n = k ? k : V, kept = n;
	double z = 0.0, cum = 0.0, mx;

	sorted_ids(l, V, ids);
	mx = l[ids[0]] / T;
	for (uint32_t i = 0; i < n; i++)
		z += exp(l[ids[i]] / T - mx);
	for (uint32_t i = 0; i < n; i++) {
		cum += exp(l[ids[i]] / T - mx);
		if (cum >= top_p * z) {
			kept = i + 1;
			break;
		}
	}
	for (uint32_t i = 0; i < kept; i++)
		if (i == 0 || exp(l[ids[i]] / T - mx) >= min_p)
			keep[ids[i]] = true;
	softmax_d(l, V, T, keep, p);
	free(ids);
	free(keep);
}

static void test_top_p_min_p(void **st)
{
	enum { V = 1200 };
	struct eng_sampler_scratch sc;
	uint64_t mem[(sizeof(struct eng_sampler) + 4 * WIN) / 8 + 1];
	static float l[V];
	static double p[V];
	struct {
		float t;
		uint32_t k;
		float tp, mp;
	} cases[] = {
		{ 1.0f, 0, 0.9f, 0.0f },	/* needs hundreds of candidates */
		{ 0.7f, 0, 0.5f, 0.0f },
		{ 1.0f, 0, 1.0f, 0.3f },	/* min-p alone */
		{ 1.3f, 0, 0.95f, 0.05f },	/* both */
		{ 1.0f, 40, 0.8f, 0.0f },	/* top-p renormalised over top-k */
		{ 1.0f, 40, 0.9f, 0.5f },
	};

	(void)st;
	assert_int_equal(eng_sampler_scratch_init(&sc, V), 0);
	/* a long flat tail under a few strong tokens */
	for (int i = 0; i < V; i++)
		l[i] = (float)(urand() * 1.5);
	for (int i = 0; i < 5; i++)
		l[(i * 577) % V] = 6.0f + (float)i * 0.3f;
	for (unsigned c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		struct eng_sampler_params pr =
			params(cases[c].t, cases[c].k, cases[c].tp, cases[c].mp, 100 + c);
		struct eng_sampler *s = mk(mem, &pr);
		uint32_t nz = 0;

		expect_trunc(l, V, cases[c].t, cases[c].k, cases[c].tp, cases[c].mp, p);
		for (int i = 0; i < V; i++)
			nz += p[i] > 0.0;
		assert_true(nz > 1 && nz < V);
		check_freq(s, &sc, l, V, p, nz > 400 ? 30000 : 15000);
	}
	eng_sampler_scratch_fini(&sc);
}

static void test_determinism(void **st)
{
	enum { V = 500, N = 300 };
	struct eng_sampler_scratch sc;
	uint64_t m1[(sizeof(struct eng_sampler) + 4 * WIN) / 8 + 1];
	uint64_t m2[(sizeof(struct eng_sampler) + 4 * WIN) / 8 + 1];
	float l[V];
	uint32_t a[N], b[N], t;
	int same = 0;

	(void)st;
	assert_int_equal(eng_sampler_scratch_init(&sc, V), 0);
	for (int i = 0; i < V; i++)
		l[i] = (float)(urand() * 2.0);
	for (int mode = 0; mode < 3; mode++) {
		struct eng_sampler_params pr =
			params(1.0f, mode == 1 ? 50 : 0, mode == 2 ? 0.9f : 1.0f, 0.0f, 77);
		struct eng_sampler *s1 = mk(m1, &pr), *s2;

		for (int i = 0; i < N; i++)
			assert_int_equal(eng_sampler_sample(s1, &sc, l, V, &a[i]), 0);
		s2 = mk(m2, &pr);
		for (int i = 0; i < N; i++) {
			assert_int_equal(eng_sampler_sample(s2, &sc, l, V, &b[i]), 0);
			assert_int_equal(a[i], b[i]);
		}
		pr.seed = 78;
		s2 = mk(m2, &pr);
		same = 0;
		for (int i = 0; i < N; i++) {
			assert_int_equal(eng_sampler_sample(s2, &sc, l, V, &t), 0);
			same += t == a[i];
		}
		assert_true(same < N / 4);	/* another seed, another stream */
	}
	eng_sampler_scratch_fini(&sc);
}

static void test_penalties(void **st)
{
	enum { V = 64 };
	struct eng_sampler_scratch sc;
	uint64_t mem[(sizeof(struct eng_sampler) + 4 * WIN) / 8 + 1];
	struct eng_sampler_params pr = params(0.0f, 0, 1.0f, 0.0f, 1);
	struct eng_sampler *s;
	const uint32_t hist[] = { 99, 3, 5, 3, 7, 3, 9, 5 };	/* 99: outside window */
	float l[V];
	double want[V];
	unsigned cnt[V] = { 0 };
	uint32_t t;

	(void)st;
	assert_int_equal(eng_sampler_scratch_init(&sc, V), 0);
	for (int i = 0; i < V; i++)
		l[i] = (float)(urand() * 4.0 - 2.0);
	l[3] = 3.0f;	/* positive: divided */
	l[5] = -1.0f;	/* negative: multiplied */
	pr.repetition_penalty = 1.3f;
	pr.presence_penalty = 0.25f;
	pr.frequency_penalty = 0.125f;
	pr.penalty_window = 7;	/* the last 7 of 8 accepted tokens */
	s = mk(mem, &pr);
	assert_false(eng_sampler_penalized(s));	/* empty window */
	for (unsigned i = 0; i < sizeof(hist) / sizeof(hist[0]); i++)
		eng_sampler_accept(s, hist[i]);
	assert_true(eng_sampler_penalized(s));
	for (unsigned i = 1; i < sizeof(hist) / sizeof(hist[0]); i++)
		cnt[hist[i]]++;
	for (int i = 0; i < V; i++) {
		double x = l[i];

		if (cnt[i]) {
			x = x > 0 ? x / 1.3 : x * 1.3;
			x -= 0.25 + 0.125 * cnt[i];
		}
		want[i] = x;
	}
	assert_int_equal(eng_sampler_sample(s, &sc, l, V, &t), 0);
	for (int i = 0; i < V; i++)
		assert_float_equal(sc.val[i], want[i], 1e-6);
	for (int i = 0; i < V; i++)
		assert_int_equal(sc.cnt[i], 0);	/* scratch left clean */
	/* greedy on the penalised values: 3 no longer wins */
	l[3] = 3.0f;
	l[11] = 2.5f;
	assert_int_equal(eng_sampler_sample(s, &sc, l, V, &t), 0);
	assert_int_equal(t, 11);
	/* token 99 is in the window but outside the vocabulary: only if it
	 * is within penalty_window does it matter */
	pr.penalty_window = 8;
	s = mk(mem, &pr);
	for (unsigned i = 0; i < sizeof(hist) / sizeof(hist[0]); i++)
		eng_sampler_accept(s, hist[i]);
	assert_int_equal(eng_sampler_sample(s, &sc, l, V, &t), -EINVAL);
	eng_sampler_scratch_fini(&sc);
}

/* Logit biases: added after the penalties; -100 bans a token under
 * sampling, a bias can move the greedy choice; out-of-range biases and ids
 * are refused. */
static void test_logit_bias(void **st)
{
	enum { V = 32, DRAWS = 4000 };
	struct eng_sampler_scratch sc;
	uint64_t mem[(sizeof(struct eng_sampler) + 4 * WIN) / 8 + 1];
	struct eng_sampler_params pr = params(0.0f, 0, 1.0f, 0.0f, 7);
	struct eng_sampler *s;
	float l[V];
	unsigned seen[V] = { 0 };
	uint32_t t, best = 0;

	(void)st;
	assert_int_equal(eng_sampler_scratch_init(&sc, V), 0);
	for (int i = 0; i < V; i++) {
		l[i] = (float)(urand() * 2.0 - 1.0);
		if (l[i] > l[best])
			best = (uint32_t)i;
	}
	/* greedy: +3 on a token that is not the best makes it the best */
	pr.bias_ids[0] = (best + 1) % V;
	pr.bias[0] = 3.0f;
	pr.n_bias = 1;
	s = mk(mem, &pr);
	assert_int_equal(eng_sampler_sample(s, &sc, l, V, &t), 0);
	assert_int_equal(t, (best + 1) % V);
	assert_float_equal(sc.val[(best + 1) % V], l[(best + 1) % V] + 3.0f, 1e-6);
	/* with a repetition penalty too: penalty first, then the bias */
	pr.repetition_penalty = 2.0f;
	pr.penalty_window = 4;
	s = mk(mem, &pr);
	eng_sampler_accept(s, (best + 1) % V);
	assert_int_equal(eng_sampler_sample(s, &sc, l, V, &t), 0);
	{
		float x = l[(best + 1) % V];

		x = x > 0 ? x / 2.0f : x * 2.0f;
		assert_float_equal(sc.val[(best + 1) % V], x + 3.0f, 1e-6);
	}
	/* sampling at temperature 1: -100 on the best token bans it */
	pr = params(1.0f, 0, 1.0f, 0.0f, 11);
	pr.bias_ids[0] = best;
	pr.bias[0] = -100.0f;
	pr.n_bias = 1;
	s = mk(mem, &pr);
	for (unsigned i = 0; i < DRAWS; i++) {
		assert_int_equal(eng_sampler_sample(s, &sc, l, V, &t), 0);
		seen[t]++;
	}
	assert_int_equal(seen[best], 0);
	/* and without the bias the same token is drawn (about 1 in 20) */
	pr.n_bias = 0;
	s = mk(mem, &pr);
	memset(seen, 0, sizeof(seen));
	for (unsigned i = 0; i < DRAWS; i++) {
		assert_int_equal(eng_sampler_sample(s, &sc, l, V, &t), 0);
		seen[t]++;
	}
	assert_true(seen[best] > 0);
	/* refused: a bias beyond +-100, NaN, too many; an id >= vocab at
	 * sample time */
	pr.n_bias = 1;
	pr.bias[0] = 100.5f;
	assert_null(eng_sampler_init(mem, sizeof(mem), &pr, WIN));
	pr.bias[0] = NAN;
	assert_null(eng_sampler_init(mem, sizeof(mem), &pr, WIN));
	pr.bias[0] = 1.0f;
	pr.n_bias = ENG_SAMPLER_BIAS_MAX + 1;
	assert_null(eng_sampler_init(mem, sizeof(mem), &pr, WIN));
	pr.n_bias = 1;
	pr.bias_ids[0] = V;
	s = mk(mem, &pr);
	assert_int_equal(eng_sampler_sample(s, &sc, l, V, &t), -EINVAL);
	eng_sampler_scratch_fini(&sc);
}

/* eng_sampler_plain_greedy: only when nothing can reorder the raw logits. */
static void test_plain_greedy(void **st)
{
	uint64_t mem[(sizeof(struct eng_sampler) + 4 * WIN) / 8 + 1];
	struct eng_sampler_params pr = params(0.0f, 0, 1.0f, 0.0f, 1);

	(void)st;
	assert_true(eng_sampler_plain_greedy(mk(mem, &pr)));
	pr.n_bias = 1;
	pr.bias_ids[0] = 3;
	pr.bias[0] = 1.0f;
	assert_false(eng_sampler_plain_greedy(mk(mem, &pr)));
	pr.n_bias = 0;
	pr.repetition_penalty = 1.2f;
	pr.penalty_window = 8;
	assert_true(eng_sampler_plain_greedy(mk(mem, &pr)));	/* window empty */
	eng_sampler_accept(mk(mem, &pr), 5);
	assert_false(eng_sampler_plain_greedy((struct eng_sampler *)mem));
	pr = params(0.7f, 0, 1.0f, 0.0f, 1);
	assert_false(eng_sampler_plain_greedy(mk(mem, &pr)));
	pr.top_k = 1;
	assert_true(eng_sampler_plain_greedy(mk(mem, &pr)));
}

static void test_window_ring(void **st)
{
	enum { V = 16 };
	struct eng_sampler_scratch sc;
	uint64_t mem[(sizeof(struct eng_sampler) + 4 * 4) / 8 + 1];
	struct eng_sampler_params pr = params(0.0f, 0, 1.0f, 0.0f, 1);
	struct eng_sampler *s;
	float l[V];
	uint32_t t;

	(void)st;
	assert_int_equal(eng_sampler_scratch_init(&sc, V), 0);
	pr.presence_penalty = 10.0f;
	pr.penalty_window = 4;
	s = eng_sampler_init(mem, sizeof(mem), &pr, 4);
	assert_non_null(s);
	/* 10 tokens through a ring of 4: only 6..9 remain penalised */
	for (uint32_t i = 0; i < 10; i++)
		eng_sampler_accept(s, i);
	for (int i = 0; i < V; i++)
		l[i] = (float)(V - i);	/* token 0 best, then 1, ... */
	for (uint32_t i = 0; i < 6; i++)
		l[i] = -100.0f;
	l[7] = 100.0f;	/* penalised (in window): 90 */
	l[12] = 95.0f;	/* not in window */
	assert_int_equal(eng_sampler_sample(s, &sc, l, V, &t), 0);
	assert_int_equal(t, 12);
	eng_sampler_scratch_fini(&sc);
}

static void test_stop_and_params(void **st)
{
	uint64_t mem[(sizeof(struct eng_sampler) + 4 * WIN) / 8 + 1];
	struct eng_sampler_params pr = params(1.0f, 0, 1.0f, 0.0f, 1);
	struct eng_sampler *s;
	struct eng_sampler_scratch sc;

	(void)st;
	pr.stop_ids[0] = 2;
	pr.stop_ids[1] = 128001;
	pr.n_stop = 2;
	s = mk(mem, &pr);
	assert_true(eng_sampler_is_stop(s, 2));
	assert_true(eng_sampler_is_stop(s, 128001));
	assert_false(eng_sampler_is_stop(s, 3));

	pr.temperature = NAN;
	errno = 0;
	assert_null(eng_sampler_init(mem, sizeof(mem), &pr, WIN));
	assert_int_equal(errno, EINVAL);
	pr.temperature = 1.0f;
	pr.top_p = 0.0f;
	assert_null(eng_sampler_init(mem, sizeof(mem), &pr, WIN));
	pr.top_p = 1.0f;
	pr.min_p = 1.0f;
	assert_null(eng_sampler_init(mem, sizeof(mem), &pr, WIN));
	pr.min_p = 0.0f;
	pr.repetition_penalty = 0.0f;
	assert_null(eng_sampler_init(mem, sizeof(mem), &pr, WIN));
	pr.repetition_penalty = 1.0f;
	pr.penalty_window = WIN + 1;
	assert_null(eng_sampler_init(mem, sizeof(mem), &pr, WIN));
	pr.penalty_window = 0;
	pr.n_stop = ENG_SAMPLER_STOP_MAX + 1;
	assert_null(eng_sampler_init(mem, sizeof(mem), &pr, WIN));
	pr.n_stop = 0;
	errno = 0;
	assert_null(eng_sampler_init(mem, 16, &pr, WIN));
	assert_int_equal(errno, ENOSPC);
	assert_int_equal(eng_sampler_scratch_init(&sc, 0), -EINVAL);
	assert_int_equal(eng_sampler_scratch_init(&sc, 100), 0);
	{
		float l[200] = { 0 };
		uint32_t t;

		s = mk(mem, &pr);
		assert_int_equal(eng_sampler_sample(s, &sc, l, 200, &t), -EINVAL);
	}
	eng_sampler_scratch_fini(&sc);
}

static void test_no_alloc(void **st)
{
	enum { V = 32000 };
	struct eng_sampler_scratch sc;
	uint64_t mem[(sizeof(struct eng_sampler) + 4 * WIN) / 8 + 1];
	static float l[V];
	uint32_t t;
	unsigned long n;

	(void)st;
	if (!alloc_count_supported())
		skip();
	assert_int_equal(eng_sampler_scratch_init(&sc, V), 0);
	for (int i = 0; i < V; i++)
		l[i] = (float)(urand() * 10.0);
	alloc_count_start();
	for (int mode = 0; mode < 5; mode++) {
		struct eng_sampler_params pr =
			params(mode ? 1.0f : 0.0f, mode == 2 ? 40 : 0,
			       mode == 3 ? 0.9f : 1.0f, mode == 4 ? 0.1f : 0.0f, 5);
		struct eng_sampler *s;

		pr.repetition_penalty = 1.1f;
		pr.penalty_window = WIN;
		s = eng_sampler_init(mem, sizeof(mem), &pr, WIN);
		for (int i = 0; i < 50; i++) {
			assert_int_equal(eng_sampler_sample(s, &sc, l, V, &t), 0);
			eng_sampler_accept(s, t);
		}
	}
	n = alloc_count_stop();
	assert_int_equal(n, 0);
	eng_sampler_scratch_fini(&sc);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_greedy_and_ties),
		cmocka_unit_test(test_temperature_distribution),
		cmocka_unit_test(test_top_k),
		cmocka_unit_test(test_top_p_min_p),
		cmocka_unit_test(test_determinism),
		cmocka_unit_test(test_penalties),
		cmocka_unit_test(test_logit_bias),
		cmocka_unit_test(test_plain_greedy),
		cmocka_unit_test(test_window_ring),
		cmocka_unit_test(test_stop_and_params),
		cmocka_unit_test(test_no_alloc),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
