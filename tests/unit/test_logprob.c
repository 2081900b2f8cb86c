// SPDX-License-Identifier: MIT
/*
 * test_logprob.c — eng_logprob_topk() against a double-precision
 * log-softmax and a full sort computed here: random rows (vocab 1 ..
 * 128256), every k 0..8, chosen tokens anywhere; ties to the lower id;
 * NaN, -inf and +inf logits; argument checks; how many tokens a response
 * record holds with logprobs (dataplane/ring.h) and the stream cutting its
 * chunks to that (ids_max).  VELO_LOGPROB_BENCH=1 also
 * prints the cost per token over a 128256-token vocabulary.
 */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "../../dataplane/ring.h"
#include "../../engine/core/logprob.h"
#include "../../engine/core/stream.h"

#define V_BIG 128256

static uint64_t trng = 0x9e3779b97f4a7c15ull;

static double urand(void)
{
	trng ^= trng << 13;
	trng ^= trng >> 7;
	trng ^= trng << 17;
	return (double)(trng >> 11) * 0x1.0p-53;
}

static float *row;
static uint32_t *order;
static const float *cmp_row;

static int setup(void **st)
{
	(void)st;
	row = malloc(V_BIG * sizeof(*row));
	order = malloc(V_BIG * sizeof(*order));
	return row && order ? 0 : -1;
}

static int teardown(void **st)
{
	(void)st;
	free(row);
	free(order);
	return 0;
}

/* NaN as -inf; descending value, ties to the lower id. */
static double key(float v)
{
	return isnan(v) ? -INFINITY : (double)v;
}

static int by_value(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	double vx = key(cmp_row[x]), vy = key(cmp_row[y]);

	if (vx != vy)
		return vx > vy ? -1 : 1;
	return x < y ? -1 : 1;
}

/* Reference log-softmax of token @i in double. */
static double ref_lp(const float *l, uint32_t v, uint32_t i)
{
	double m = -INFINITY, s = 0.0;
	uint32_t ninf = 0;

	for (uint32_t j = 0; j < v; j++) {
		if (l[j] == INFINITY)
			ninf++;
		else if (key(l[j]) > m)
			m = l[j];
	}
	if (ninf)
		return l[i] == INFINITY ? -log((double)ninf) : -INFINITY;
	if (m == -INFINITY || key(l[i]) == -INFINITY)
		return -INFINITY;
	for (uint32_t j = 0; j < v; j++)
		if (key(l[j]) > -INFINITY)
			s += exp((double)l[j] - m);
	return (double)l[i] - m - log(s);
}

static void check_lp(double ref, float got)
{
	if (isinf(ref)) {
		assert_true(isinf(got) && (ref < 0) == (got < 0));
		return;
	}
	assert_false(isnan(got));
	if (fabs(ref - (double)got) > 1e-5 + 1e-6 * fabs(ref)) {
		fprintf(stderr, "ref %.9g got %.9g\n", ref, (double)got);
		fail();
	}
}

/* Check @out (k alternatives) for row[0, v) and @chosen against a sort. */
static void check_row(uint32_t v, uint32_t k, uint32_t chosen)
{
	struct proto_logprob out[1 + ENG_LOGPROB_TOPK_MAX];
	double psum = 0.0;

	memset(out, 0xa5, sizeof(out));
	assert_int_equal(eng_logprob_topk(row, v, chosen, k, out), 0);
	for (uint32_t i = 0; i < v; i++)
		order[i] = i;
	cmp_row = row;
	qsort(order, v, sizeof(*order), by_value);
	assert_int_equal(out[0].token, chosen);
	check_lp(ref_lp(row, v, chosen), out[0].logprob);
	for (uint32_t j = 0; j < k; j++) {
		assert_int_equal(out[1 + j].token, order[j]);
		check_lp(ref_lp(row, v, order[j]), out[1 + j].logprob);
		psum += exp((double)out[1 + j].logprob);
	}
	assert_true(psum <= 1.0 + 1e-5);
}

static void t_random_rows(void **st)
{
	static const uint32_t vs[] = { 1, 2, 7, 8, 9, 100, 1000, 32000, V_BIG };

	(void)st;
	for (unsigned a = 0; a < sizeof(vs) / sizeof(vs[0]); a++) {
		uint32_t v = vs[a];

		for (uint32_t k = 0; k <= ENG_LOGPROB_TOPK_MAX && k <= v; k++) {
			double scale = k & 1 ? 16.0 : 4.0;

			for (uint32_t i = 0; i < v; i++)
				row[i] = (float)((urand() * 2.0 - 1.0) * scale);
			/* peaked: one clear winner now and then */
			if (k == 3)
				row[v / 2] = 40.0f;
			check_row(v, k, (uint32_t)(urand() * v) % v);
			check_row(v, k, v - 1);
		}
	}
}

static void t_ties_lower_id(void **st)
{
	struct proto_logprob out[9];

	(void)st;
	for (uint32_t i = 0; i < 1000; i++)
		row[i] = (float)(i % 10);	/* ties everywhere */
	check_row(1000, 8, 5);
	assert_int_equal(eng_logprob_topk(row, 1000, 5, 8, out), 0);
	/* value 9 at ids 9, 19, 29, ...: the lowest first */
	assert_int_equal(out[1].token, 9);
	assert_int_equal(out[2].token, 19);
	assert_int_equal(out[8].token, 79);
	assert_true(out[1].logprob == out[8].logprob);
	/* all equal: uniform, ids 0..7 */
	for (uint32_t i = 0; i < 1000; i++)
		row[i] = 1.5f;
	assert_int_equal(eng_logprob_topk(row, 1000, 999, 8, out), 0);
	for (uint32_t j = 0; j < 8; j++)
		assert_int_equal(out[1 + j].token, j);
	check_lp(-log(1000.0), out[0].logprob);
}

static void t_nan_inf(void **st)
{
	struct proto_logprob out[9];

	(void)st;
	/* NaN and -inf never listed above a finite logit, never NaN out */
	for (uint32_t i = 0; i < 5000; i++)
		row[i] = (float)(urand() * 10.0 - 5.0);
	for (uint32_t i = 0; i < 5000; i += 7)
		row[i] = NAN;
	for (uint32_t i = 3; i < 5000; i += 11)
		row[i] = -INFINITY;
	check_row(5000, 8, 0);	/* chosen NaN: -inf */
	check_row(5000, 8, 3);	/* chosen -inf */
	check_row(5000, 8, 1);
	/* fewer finite than k: the rest are the lowest other ids at -inf */
	for (uint32_t i = 0; i < 20; i++)
		row[i] = NAN;
	row[12] = 2.0f;
	row[4] = -INFINITY;
	row[17] = 1.0f;
	assert_int_equal(eng_logprob_topk(row, 20, 12, 5, out), 0);
	assert_int_equal(out[1].token, 12);
	assert_int_equal(out[2].token, 17);
	assert_int_equal(out[3].token, 0);
	assert_int_equal(out[4].token, 1);
	assert_int_equal(out[5].token, 2);
	check_lp(-log1p(exp(-1.0)), out[1].logprob);
	assert_true(isinf(out[3].logprob) && out[3].logprob < 0);
	/* +inf: those share the mass */
	for (uint32_t i = 0; i < 100; i++)
		row[i] = (float)i;
	row[30] = INFINITY;
	row[70] = INFINITY;
	check_row(100, 4, 30);
	assert_int_equal(eng_logprob_topk(row, 100, 30, 4, out), 0);
	assert_int_equal(out[1].token, 30);
	assert_int_equal(out[2].token, 70);
	assert_int_equal(out[3].token, 99);
	check_lp(-log(2.0), out[0].logprob);
	assert_true(isinf(out[3].logprob));
	/* nothing finite: all -inf, no NaN */
	for (uint32_t i = 0; i < 50; i++)
		row[i] = i & 1 ? NAN : -INFINITY;
	assert_int_equal(eng_logprob_topk(row, 50, 7, 3, out), 0);
	for (uint32_t j = 0; j < 4; j++)
		assert_true(isinf(out[j].logprob) && out[j].logprob < 0);
	assert_int_equal(out[1].token, 0);
	assert_int_equal(out[3].token, 2);
}

static void t_args(void **st)
{
	struct proto_logprob out[9] = { { 0 } };

	(void)st;
	row[0] = 1.0f;
	row[1] = 2.0f;
	assert_int_equal(eng_logprob_topk(NULL, 2, 0, 1, out), -EINVAL);
	assert_int_equal(eng_logprob_topk(row, 2, 0, 1, NULL), -EINVAL);
	assert_int_equal(eng_logprob_topk(row, 0, 0, 0, out), -EINVAL);
	assert_int_equal(eng_logprob_topk(row, 2, 2, 1, out), -EINVAL);
	assert_int_equal(eng_logprob_topk(row, 2, 0, 3, out), -EINVAL);
	assert_int_equal(eng_logprob_topk(row, 100, 0, 9, out), -EINVAL);
	assert_int_equal(out[0].token, 0);
	assert_int_equal(eng_logprob_topk(row, 2, 0, 2, out), 0);
	assert_int_equal(out[1].token, 1);
}

/* Tokens per record with k alternatives: every entry inside tokens[],
 * none overlapping the ids, and one more token would not fit. */
static void t_record_fit(void **st)
{
	static const unsigned want[9] = { 0, 6, 4, 3, 2, 2, 2, 1, 1 };
	struct dp_resp r;

	(void)st;
	for (unsigned k = 1; k <= PROTO_LOGPROBS_MAX; k++) {
		unsigned n = dp_resp_lp_tokens_max(k);
		const char *end = (const char *)r.tokens + sizeof(r.tokens);

		assert_int_equal(n, want[k]);
		r.n_tokens = (uint16_t)n;
		assert_true((const char *)dp_resp_lp(&r) >= (const char *)&r.tokens[n]);
		assert_true((const char *)(dp_resp_lp(&r) + n * (1 + k)) <= end);
		assert_false(dp_resp_lp_fits(n + 1, k));
		assert_true(n <= 6);	/* SCHED_LP_ROWS */
	}
}

/* The stream never holds more than ids_max ids: chunks of ids_max in
 * every mode (ids only, no tokenizer), the rest at the end. */
static void t_stream_ids_max(void **st)
{
	static const enum proto_stream modes[] = { PROTO_STREAM_EVERY_K,
						   PROTO_STREAM_SENTENCE,
						   PROTO_STREAM_TOKEN };
	static struct eng_stream s;
	uint32_t ids[ENG_STREAM_CHUNK_IDS_MAX];
	char text[ENG_STREAM_CHUNK_TEXT_MAX];

	(void)st;
	for (unsigned a = 0; a < 3; a++) {
		struct eng_stream_params p = { .mode = modes[a], .every_k = 8,
					       .max_tokens = 10,
					       .eos_id = 0xffffffffu,
					       .ids_max = 3 };
		uint32_t next = 0, chunks = 0;

		assert_int_equal(eng_stream_init(&s, NULL, &p), 0);
		for (uint32_t i = 0; i < 10; i++) {
			bool ready;
			int rc = eng_stream_push(&s, NULL, 100 + i, &ready);

			assert_true(rc == 0 || (rc == 1 && i == 9));
			while (ready) {
				uint16_t n = 0, tl = 0, fl = 0;
				uint32_t fi = 0;

				assert_int_equal(eng_stream_take_chunk(&s, ids, &n, text,
								      &tl, &fl, &fi), 1);
				assert_true(n <= 3);
				assert_int_equal(fi, next);
				for (uint32_t j = 0; j < n; j++)
					assert_int_equal(ids[j], 100 + next + j);
				next += n;
				chunks++;
				ready = eng_stream_ready(&s);
			}
		}
		assert_int_equal(next, 10);
		assert_true(eng_stream_done(&s));
		if (modes[a] != PROTO_STREAM_TOKEN)
			assert_int_equal(chunks, 4);	/* 3 3 3 1 */
	}
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Cost per generated token, 128256 random logits in +-8, k = 8 and 1:
 * median of 50 calls (printed; the test itself only checks it runs). */
static void t_bench(void **st)
{
	struct proto_logprob out[9];
	static const uint32_t ks[] = { 1, 8 };

	(void)st;
	if (!getenv("VELO_LOGPROB_BENCH"))
		skip();
	for (uint32_t i = 0; i < V_BIG; i++)
		row[i] = (float)(urand() * 16.0 - 8.0);
	for (unsigned a = 0; a < 2; a++) {
		uint64_t t[51];

		for (unsigned r = 0; r < 51; r++) {
			uint64_t t0 = now_ns();

			assert_int_equal(eng_logprob_topk(row, V_BIG, 5, ks[a], out), 0);
			t[r] = now_ns() - t0;
		}
		for (unsigned i = 1; i < 51; i++)	/* insertion sort */
			for (unsigned j = i; j > 0 && t[j - 1] > t[j]; j--) {
				uint64_t x = t[j];

				t[j] = t[j - 1];
				t[j - 1] = x;
			}
		printf("logprob_topk vocab %u k %u: median %.1f us per token "
		       "(%.2f ns per vocab entry), min %.1f us\n", V_BIG, ks[a],
		       t[25] / 1e3, (double)t[25] / V_BIG, t[0] / 1e3);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_random_rows),
		cmocka_unit_test(t_ties_lower_id),
		cmocka_unit_test(t_nan_inf),
		cmocka_unit_test(t_args),
		cmocka_unit_test(t_record_fit),
		cmocka_unit_test(t_stream_ids_max),
		cmocka_unit_test(t_bench),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
