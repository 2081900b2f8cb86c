// SPDX-License-Identifier: MIT
/*
 * test_sched.c — the scheduler (engine/sched.h) driven directly through
 * the rings, with the CPU backend and the bundled model image
 * (images/models/fortune-5m-fp8.velo, 5 M parameters): model loading and
 * the known-answer self-test (a tampered record fails it and leaves the
 * scheduler not ready), admission (unknown model, too large, infeasible
 * deadline, queue full, chat), greedy outputs identical alone and batched,
 * priority order, preemption under KV exhaustion with identical outputs,
 * cancel freeing blocks at once, prefix-cache hits, and every block free
 * (refcount 0) after each test.  The reference for "same output" is the
 * same model run one request at a time, a run that shares no step.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../engine/core/image.h"
#include "../../engine/core/kv_cache.h"
#include "../../engine/sched_priv.h"
#include "../../tools/lib/clock.h"
#include "alloc_count.h"

#define IMAGE "images/models/fortune-5m-fp8.velo"
#define SLOTS 64
#define GEN_MAX 512

static struct dp_rings R;
static struct eng_sched S;

struct out {
	uint64_t id;
	uint32_t toks[GEN_MAX];
	uint32_t n;
	int final;			/* DP_RESP_* of the final record, 0 none */
	uint16_t code;			/* REJECT/ERROR code */
	struct proto_done done;
	int accepted;
	int cancel_found;
	uint32_t order;			/* finish order */
};

static struct out OUT[SLOTS];
static uint32_t n_finished;

static void setup_sched(uint32_t kv_blocks, uint32_t seqs, uint32_t step_tokens,
			uint32_t queue_max, const char *image, int want_rc)
{
	struct dp_rings_config rc = { .slots = SLOTS, .prompt_tokens_max = 512,
				      .text_bytes_max = 2048, .resp_entries = 4096 };
	struct eng_sched_config c;
	struct eng_sched_model_config mc = {
		.name = "fortune", .image = image, .backend = "cpu",
		.kv_blocks = kv_blocks, .kv_block_tokens = 16, .seqs_max = seqs,
		.step_tokens_max = step_tokens, .threads = 1, .queue_max = queue_max,
	};
	char err[200];

	memset(OUT, 0, sizeof(OUT));
	n_finished = 0;
	assert_int_equal(dp_rings_init(&R, &rc), 0);
	eng_sched_config_default(&c);
	c.text_bytes_max = 2048;
	assert_int_equal(eng_sched_init(&S, &c, &R, false), 0);
	assert_int_equal(eng_sched_model_load(&S, &mc, err, sizeof(err)), want_rc);
}

static void teardown_sched(void)
{
	eng_sched_fini(&S);
	dp_rings_fini(&R);
}

static struct dp_req_slot *slot_fill(uint32_t i, uint64_t id, const uint32_t *p,
				     uint32_t n, uint32_t max_tokens)
{
	struct dp_req_slot *q = &R.slots[i];

	q->sess_slot = 1;
	q->sess_gen = 7;
	q->request_id = id;
	q->arrival_ns = clock_mono_ns();
	memset(&q->f, 0, sizeof(q->f));
	q->f.request_id = id;
	q->f.max_tokens = max_tokens;
	q->f.flags = PROTO_INFER_PROMPT_TOKENS | PROTO_INFER_IGNORE_EOS;
	q->n_prompt_tokens = n;
	memcpy(q->prompt_tokens, p, n * sizeof(*p));
	q->n_stop_tokens = q->n_logit_bias = q->n_stop_seqs = q->n_messages = 0;
	q->model.len = q->version.len = q->prompt_text.len = 0;
	q->text_used = 0;
	OUT[i] = (struct out){ .id = id };
	return q;
}

static void submit(uint32_t i)
{
	struct dp_req_msg m = { .op = DP_REQ_INFER, .sess_slot = 1, .sess_gen = 7,
				.req_slot = i, .request_id = R.slots[i].request_id };

	assert_true(dp_req_enqueue(&R, &m));
}

static void cancel(uint32_t i)
{
	struct dp_req_msg m = { .op = DP_REQ_CANCEL, .sess_slot = 1, .sess_gen = 7,
				.req_slot = i, .request_id = R.slots[i].request_id };

	assert_true(dp_req_enqueue(&R, &m));
}

static void drain(void)
{
	struct dp_resp r;

	while (dp_resp_dequeue(&R, &r)) {
		struct out *o;

		assert_true(r.req_slot < SLOTS);
		o = &OUT[r.req_slot];
		assert_int_equal(r.request_id, o->id);
		assert_int_equal(o->final, 0);
		switch (r.kind) {
		case DP_RESP_ACCEPT:
			o->accepted = 1;
			break;
		case DP_RESP_TOKENS:
			assert_true(o->n + r.n_tokens <= GEN_MAX);
			assert_int_equal(r.u.tokens.first_index, o->n);
			memcpy(o->toks + o->n, r.tokens, r.n_tokens * 4);
			o->n += r.n_tokens;
			break;
		case DP_RESP_CANCEL_ACK:
			o->cancel_found = r.u.cancel_ack.found;
			break;
		case DP_RESP_DONE:
			o->done = r.u.done;
			assert_int_equal(r.u.done.completion_tokens, o->n);
			/* fall through */
		case DP_RESP_REJECT:
		case DP_RESP_ERROR:
			assert_true(r.flags & DP_RESP_F_FINAL);
			o->final = r.kind;
			o->code = r.kind == DP_RESP_REJECT ? r.u.reject.code :
				  r.kind == DP_RESP_ERROR ? r.u.error.code : 0;
			o->order = ++n_finished;
			break;
		default:
			fail_msg("unknown response kind %u", r.kind);
		}
	}
}

/* Poll until every slot in [0, n) has its final record. */
static void run_all(uint32_t n)
{
	for (int guard = 0; guard < 100000; guard++) {
		uint32_t fin = 0;

		eng_sched_poll(&S);
		drain();
		for (uint32_t i = 0; i < n; i++)
			fin += OUT[i].final != 0;
		if (fin == n)
			return;
	}
	fail_msg("requests did not finish");
}

static void assert_kv_idle(void)
{
	const char *why = NULL;

	assert_true(eng_kvc_idle_ok(S.models[0]->kv));
	assert_int_equal(eng_kvc_check(S.models[0]->kv, &why), 0);
	assert_int_equal(S.models[0]->n_running, 0);
	assert_int_equal(S.models[0]->n_waiting, 0);
}

/* Deterministic prompts over the vocabulary (2048). */
static void prompt_make(uint32_t *p, uint32_t n, uint32_t seed)
{
	p[0] = 0;	/* BOS */
	for (uint32_t i = 1; i < n; i++)
		p[i] = 2 + (seed * 7919u + i * 104729u) % 2000u;
}

static void test_load_ready(void **state)
{
	char why[200];

	(void)state;
	setup_sched(64, 4, 64, 0, IMAGE, 0);
	assert_true(eng_sched_ready(&S, why, sizeof(why)));
	assert_int_equal(dp_rings_engine_state(&R), PROTO_STATE_READY);
	assert_int_equal(S.models[0]->st.state, ENG_MODEL_READY);
	assert_true(S.models[0]->prefill_ns_tok > 0);
	assert_true(S.models[0]->decode_ns_step > 0);
	teardown_sched();
}

/* A known-answer record that does not match the weights: the self-test
 * fails, the model stays unrouted and INFER is answered NOT_READY. */
static void test_selftest_fails(void **state)
{
	char path[] = "/tmp/velo-test-sched-XXXXXX", err[200], why[200];
	uint32_t prompt[4] = { 0, 10, 20, 30 }, expect[2] = { 5, 6 }, p[4];
	struct eng_image_ka ka = { .prompt = prompt, .prompt_len = 4,
				   .expect = expect, .expect_len = 2,
				   .logit_tol = 0.001f };
	FILE *in, *out;
	char buf[65536];
	size_t n;
	int fd;

	(void)state;
	fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
	in = fopen(IMAGE, "rb");
	out = fopen(path, "wb");
	assert_non_null(in);
	assert_non_null(out);
	while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
		assert_int_equal(fwrite(buf, 1, n, out), n);
	fclose(in);
	fclose(out);
	/* greedy tokens 5, 6 after that prompt: wrong unless the model
	 * really says so (then the logit check below still fails: none) */
	assert_int_equal(eng_image_ka_patch(path, &ka, err, sizeof(err)), 0);
	setup_sched(64, 4, 64, 0, path, -EIO);
	unlink(path);
	assert_false(eng_sched_ready(&S, why, sizeof(why)));
	assert_non_null(strstr(why, "self-test"));
	assert_int_equal(S.models[0]->st.state, ENG_MODEL_FAILED);
	assert_int_not_equal(dp_rings_engine_state(&R), PROTO_STATE_READY);
	prompt_make(p, 4, 1);
	slot_fill(0, 1, p, 4, 4);
	submit(0);
	run_all(1);
	assert_int_equal(OUT[0].final, DP_RESP_REJECT);
	assert_int_equal(OUT[0].code, PROTO_E_NOT_READY);
	teardown_sched();
}

static void test_admission(void **state)
{
	uint32_t p[600];
	struct dp_req_slot *q;

	(void)state;
	setup_sched(64, 2, 64, 2, IMAGE, 0);
	prompt_make(p, 600, 3);
	/* 0: unknown model name */
	q = slot_fill(0, 10, p, 8, 4);
	memcpy(q->text, "nope", 4);
	q->model = (struct dp_str_ref){ 0, 4 };
	submit(0);
	/* 1: longer than the context (512) */
	slot_fill(1, 11, p, 512, 4);
	submit(1);
	/* 2: a deadline already past */
	q = slot_fill(2, 12, p, 100, 4);
	q->f.deadline_ns = clock_real_ns() - 1000000;
	submit(2);
	/* 3: chat: not supported, said so */
	q = slot_fill(3, 13, p, 8, 4);
	q->f.flags = PROTO_INFER_CHAT;
	submit(3);
	/* 4: token id beyond the vocabulary */
	q = slot_fill(4, 14, p, 8, 4);
	q->prompt_tokens[3] = 5000;
	submit(4);
	run_all(5);
	assert_int_equal(OUT[0].code, PROTO_E_UNKNOWN_MODEL);
	assert_int_equal(OUT[1].code, PROTO_E_TOO_LARGE);
	assert_int_equal(OUT[2].code, PROTO_E_DEADLINE);
	assert_int_equal(OUT[3].code, PROTO_E_INVALID_PARAM);
	assert_int_equal(OUT[4].code, PROTO_E_INVALID_PARAM);
	for (int i = 0; i < 5; i++)
		assert_int_equal(OUT[i].final, DP_RESP_REJECT);
	/* queue_max 2: of 6 submitted in one burst, 2 wait, the rest are
	 * OVERLOADED at once (nothing runs before the burst is admitted) */
	memset(OUT, 0, sizeof(OUT));
	for (uint32_t i = 0; i < 6; i++) {
		slot_fill(i, 20 + i, p + i, 8, 2);
		submit(i);
	}
	run_all(6);
	{
		int over = 0, done = 0;

		for (int i = 0; i < 6; i++) {
			over += OUT[i].final == DP_RESP_REJECT &&
				OUT[i].code == PROTO_E_OVERLOADED;
			done += OUT[i].final == DP_RESP_DONE;
		}
		assert_int_equal(over, 4);
		assert_int_equal(done, 2);
	}
	assert_kv_idle();
	teardown_sched();
}

/* Reference: each prompt alone (seqs_max 1: no shared step). */
static void run_alone(uint32_t n_req, const uint32_t *lens, uint32_t max_tokens,
		      uint32_t ref[][GEN_MAX])
{
	uint32_t p[300];

	setup_sched(128, 1, 64, 64, IMAGE, 0);
	for (uint32_t i = 0; i < n_req; i++) {
		prompt_make(p, lens[i], 100 + i);
		memset(OUT, 0, sizeof(OUT));
		slot_fill(0, 1000 + i, p, lens[i], max_tokens);
		submit(0);
		run_all(1);
		assert_int_equal(OUT[0].final, DP_RESP_DONE);
		assert_int_equal(OUT[0].n, max_tokens);
		memcpy(ref[i], OUT[0].toks, sizeof(ref[i]));
	}
	teardown_sched();
}

static const uint32_t LENS[8] = { 5, 40, 17, 90, 33, 64, 8, 150 };

static void test_batched_equals_alone(void **state)
{
	uint32_t ref[8][GEN_MAX], p[300];

	(void)state;
	run_alone(8, LENS, 24, ref);
	/* all 8 at once: 8 sequences per step, chunked prefill of 32 */
	setup_sched(256, 8, 32, 64, IMAGE, 0);
	for (uint32_t i = 0; i < 8; i++) {
		prompt_make(p, LENS[i], 100 + i);
		slot_fill(i, 1000 + i, p, LENS[i], 24);
		submit(i);
	}
	run_all(8);
	for (uint32_t i = 0; i < 8; i++) {
		assert_int_equal(OUT[i].final, DP_RESP_DONE);
		assert_int_equal(OUT[i].done.finish_reason, PROTO_FINISH_LENGTH);
		assert_memory_equal(OUT[i].toks, ref[i], 24 * 4);
	}
	assert_true(S.ctr[ENG_SCHED_CTR_steps] < 8 * 24);	/* steps were shared */
	assert_kv_idle();
	teardown_sched();
}

/* A pool too small for every request at once: preemption by
 * recomputation, and still the same greedy output. */
/* Whether the backend the tests run on promises batch invariance: the CPU
 * backend does; tests/gpu/sched_backend.c runs these tests on another one
 * named by $VELO_TEST_BACKEND. */
static bool backend_batch_invariant(void)
{
	const char *b = getenv("VELO_TEST_BACKEND");

	return !b || !*b || !strcmp(b, "cpu");
}

static void test_preempt_same_output(void **state)
{
	uint32_t ref[8][GEN_MAX], p[300];

	(void)state;
	run_alone(8, LENS, 40, ref);
	/* 8 requests need up to 12 blocks each; 24 blocks hold two or three */
	setup_sched(24, 8, 64, 64, IMAGE, 0);
	for (uint32_t i = 0; i < 8; i++) {
		prompt_make(p, LENS[i], 100 + i);
		slot_fill(i, 1000 + i, p, LENS[i], 40);
		submit(i);
	}
	run_all(8);
	for (uint32_t i = 0; i < 8; i++) {
		assert_int_equal(OUT[i].final, DP_RESP_DONE);
		assert_int_equal(OUT[i].n, 40);
		/* The CPU backend is batch invariant (backend.h), so a request
		 * recomputed after preemption continues with the same bits.
		 * The CUDA backend is not (split attention, and with the
		 * cuBLASLt route the recomputed prefill's BF16-rounded
		 * activations where the first pass decoded those positions
		 * with f32 GEMVs), so a greedy choice between near-equal
		 * logits may flip (vLLM's recomputation preemption has the
		 * same property).  There the outputs are
		 * compared and reported, and must agree at least up to the
		 * first token (computed before any preemption). */
		if (backend_batch_invariant())
			assert_memory_equal(OUT[i].toks, ref[i], 40 * 4);
		else
			assert_int_equal(OUT[i].toks[0], ref[i][0]);
	}
	if (!backend_batch_invariant()) {
		unsigned same = 0;

		for (uint32_t i = 0; i < 8; i++)
			same += !memcmp(OUT[i].toks, ref[i], 40 * 4);
		printf("# %s backend: %u of 8 preempted requests kept the unpreempted "
		       "output bit for bit\n", getenv("VELO_TEST_BACKEND"), same);
	}
	assert_true(S.ctr[ENG_SCHED_CTR_preemptions] > 0);
	assert_kv_idle();
	teardown_sched();
}

static void test_priority_order(void **state)
{
	uint32_t p[64];
	struct dp_req_slot *q;

	(void)state;
	setup_sched(64, 1, 64, 8, IMAGE, 0);
	prompt_make(p, 20, 5);
	for (uint32_t i = 0; i < 4; i++) {
		q = slot_fill(i, 50 + i, p, 20, 4);
		q->f.priority = (uint8_t)(3 - i);	/* the last is most urgent */
	}
	/* same class, earliest deadline first */
	q = slot_fill(4, 60, p, 20, 4);
	q->f.priority = 0;
	q->f.deadline_ns = clock_real_ns() + 60ull * 1000000000;
	q = slot_fill(5, 61, p, 20, 4);
	q->f.priority = 0;
	q->f.deadline_ns = clock_real_ns() + 30ull * 1000000000;
	for (uint32_t i = 0; i < 6; i++)
		submit(i);
	run_all(6);
	assert_true(OUT[5].order < OUT[4].order);	/* EDF in class 0 */
	assert_true(OUT[4].order < OUT[3].order);	/* deadline before none */
	assert_true(OUT[3].order < OUT[2].order);
	assert_true(OUT[2].order < OUT[1].order);
	assert_true(OUT[1].order < OUT[0].order);
	assert_kv_idle();
	teardown_sched();
}

static void test_cancel_frees(void **state)
{
	uint32_t p[64];
	const uint64_t *kc;

	(void)state;
	setup_sched(64, 2, 64, 8, IMAGE, 0);
	prompt_make(p, 50, 9);
	slot_fill(0, 70, p, 50, 60);
	submit(0);
	for (int i = 0; i < 200 && OUT[0].n < 5; i++) {
		eng_sched_poll(&S);
		drain();
	}
	assert_true(OUT[0].n >= 5);
	kc = eng_kvc_counters(S.models[0]->kv);
	assert_true(kc[ENG_KVC_CTR_blocks_used] > 0);
	cancel(0);
	eng_sched_poll(&S);
	drain();
	/* freed in the poll that took the CANCEL, before any further step */
	assert_int_equal(kc[ENG_KVC_CTR_blocks_used], 0);
	assert_int_equal(OUT[0].cancel_found, 1);
	assert_int_equal(OUT[0].final, DP_RESP_DONE);
	assert_int_equal(OUT[0].done.finish_reason, PROTO_FINISH_CANCELLED);
	assert_true(OUT[0].done.completion_tokens >= 5);
	/* a CANCEL for a finished request: found 0 */
	OUT[0].final = 0;
	cancel(0);
	eng_sched_poll(&S);
	drain();
	assert_int_equal(OUT[0].cancel_found, 0);
	assert_int_equal(OUT[0].final, 0);
	assert_kv_idle();
	teardown_sched();
}

static void test_prefix_hits(void **state)
{
	uint32_t p[128];

	(void)state;
	setup_sched(64, 2, 64, 8, IMAGE, 0);
	prompt_make(p, 100, 11);	/* a shared 96-token "system prompt" */
	slot_fill(0, 80, p, 100, 4);
	submit(0);
	run_all(1);
	assert_int_equal(OUT[0].done.cached_prompt_tokens, 0);
	p[98] = 7;			/* same first 96 tokens, other tail */
	slot_fill(1, 81, p, 100, 4);
	submit(1);
	run_all(2);
	assert_int_equal(OUT[1].done.cached_prompt_tokens, 96);
	assert_int_equal(S.ctr[ENG_SCHED_CTR_prefix_hit_tokens], 96);
	assert_kv_idle();
	teardown_sched();
}

/* Admission charges the queue ahead: a request whose deadline it could
 * meet alone is refused DEADLINE behind 4000 prompt tokens of more urgent
 * requests (the measured prefill cost is ~200 us/token here; the refusal
 * holds down to 12 us/token), while the same request sorted first is
 * accepted and served. */
static void test_deadline_queue_ahead(void **state)
{
	uint32_t p[512];
	struct dp_req_slot *q;

	(void)state;
	setup_sched(128, 2, 64, 16, IMAGE, 0);
	for (uint32_t i = 0; i < 8; i++) {
		prompt_make(p, 500, 40 + i);
		q = slot_fill(i, 100 + i, p, 500, 2);
		q->f.priority = 0;
		submit(i);
	}
	prompt_make(p, 8, 60);
	q = slot_fill(8, 108, p, 8, 2);		/* behind the queue */
	q->f.priority = 1;
	q->f.deadline_ns = clock_real_ns() + 50ull * 1000000;
	submit(8);
	q = slot_fill(9, 109, p, 8, 2);		/* ahead of it (EDF) */
	q->f.priority = 0;
	q->f.deadline_ns = clock_real_ns() + 50ull * 1000000;
	submit(9);
	run_all(10);
	assert_int_equal(OUT[8].final, DP_RESP_REJECT);
	assert_int_equal(OUT[8].code, PROTO_E_DEADLINE);
	assert_int_equal(OUT[9].final, DP_RESP_DONE);
	assert_true(OUT[9].accepted);
	for (uint32_t i = 0; i < 8; i++)
		assert_int_equal(OUT[i].final, DP_RESP_DONE);
	assert_int_equal(S.ctr[ENG_SCHED_CTR_reject_deadline], 1);
	assert_kv_idle();
	teardown_sched();
}

/* A running request whose deadline passes ends with DONE DEADLINE. */
static void test_deadline_expires(void **state)
{
	uint32_t p[16];
	struct dp_req_slot *q;
	uint64_t t0;

	(void)state;
	setup_sched(64, 2, 64, 8, IMAGE, 0);
	prompt_make(p, 8, 13);
	q = slot_fill(0, 90, p, 8, 400);
	q->f.deadline_ns = clock_real_ns() + 60ull * 1000000;
	t0 = clock_mono_ns();
	submit(0);
	run_all(1);
	assert_int_equal(OUT[0].final, DP_RESP_DONE);
	assert_int_equal(OUT[0].done.finish_reason, PROTO_FINISH_DEADLINE);
	assert_true(OUT[0].n > 0 && OUT[0].n < 400);
	assert_true(clock_mono_ns() - t0 < 1000ull * 1000000);
	assert_int_equal(S.ctr[ENG_SCHED_CTR_done_deadline], 1);
	assert_kv_idle();
	teardown_sched();
}

/* The loop allocates nothing: admission (text tokenized too), steps,
 * preemption, streaming, cancel and DONE, once the model is loaded. */
static void test_no_alloc(void **state)
{
	uint32_t p[128];
	struct dp_req_slot *q;
	unsigned long n;

	(void)state;
	setup_sched(24, 8, 32, 64, IMAGE, 0);
	alloc_count_start();
	for (uint32_t i = 0; i < 8; i++) {
		prompt_make(p, 20 + 10 * i, 40 + i);
		slot_fill(i, 300 + i, p, 20 + 10 * i, 40);
		submit(i);
	}
	q = slot_fill(8, 308, p, 1, 16);
	q->f.flags = PROTO_INFER_PROMPT_TEXT;
	q->f.stream = PROTO_STREAM_SENTENCE;
	memcpy(q->text, "A wise man", 10);
	q->prompt_text = (struct dp_str_ref){ 0, 10 };
	q->text_used = 10;
	submit(8);
	for (int i = 0; i < 30; i++) {
		eng_sched_poll(&S);
		drain();
	}
	cancel(0);
	run_all(9);
	n = alloc_count_stop();
	if (alloc_count_supported())
		assert_int_equal(n, 0);
	assert_true(S.ctr[ENG_SCHED_CTR_preemptions] > 0);
	assert_int_equal(OUT[8].final, DP_RESP_DONE);
	assert_kv_idle();
	teardown_sched();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_load_ready),
		cmocka_unit_test(test_selftest_fails),
		cmocka_unit_test(test_admission),
		cmocka_unit_test(test_batched_equals_alone),
		cmocka_unit_test(test_preempt_same_output),
		cmocka_unit_test(test_priority_order),
		cmocka_unit_test(test_cancel_frees),
		cmocka_unit_test(test_prefix_hits),
		cmocka_unit_test(test_deadline_expires),
		cmocka_unit_test(test_deadline_queue_ahead),
		cmocka_unit_test(test_no_alloc),
	};

	if (access(IMAGE, R_OK)) {
		fprintf(stderr, "test_sched: %s missing (run from the source root)\n",
			IMAGE);
		return 1;
	}
	return cmocka_run_group_tests(tests, NULL, NULL);
}
