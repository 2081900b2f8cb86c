// SPDX-License-Identifier: MIT
/*
 * test_sched_swap.c — hot swap in the scheduler (engine/sched.h, "Runtime
 * model management"), with the scheduler on its own thread as in velod and
 * this thread acting as both the dataplane (request and response rings) and
 * the loader: version 1 of the bundled model serves; version 2 (the same
 * weights re-stamped "2", so both pass the known-answer self-test and must
 * give the same greedy text) is loaded on this thread and flipped in while
 * requests run; then the route flips back (rollback) and version 2 is
 * detached once idle.  Checks: every request gets exactly one DONE, whose
 * version is the slot's that admitted it (requests admitted before a flip
 * finish on the old version, after it on the new one), the outputs are the
 * same bits on both versions, a routed or busy slot cannot be detached,
 * a corrupt image is refused and routes nothing, and every KV block is
 * free at the end.  A shadow slot runs copies whose answers never reach
 * the ring.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../engine/core/image.h"
#include "../../engine/core/kv_cache.h"
#include "../../engine/sched_priv.h"
#include "../../tools/lib/clock.h"

#define IMAGE "images/models/fortune-5m-fp8.velo"
#define SLOTS 64
#define PHASE 16		/* requests per phase */
#define GEN 40			/* tokens per request */

static struct dp_rings R;
static struct eng_sched S;
static char V2[64], BAD[64];

struct out {
	uint64_t id;
	uint32_t toks[GEN];
	uint32_t n;
	int accepted, final, dones;
	char ver[ENG_SCHED_VERSION_LEN];
};

static struct out OUT[SLOTS];

/* Write @dst: the bundled image with version @ver, checksums re-sealed;
 * @flip: also damage one byte of tensor data after sealing. */
static void image_variant(const char *dst, const char *ver, bool flip)
{
	FILE *f = fopen(IMAGE, "rb");
	uint8_t *buf;
	long n;

	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	buf = malloc((size_t)n);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	memset(buf + 192, 0, 32);		/* header: version char[32] */
	memcpy(buf + 192, ver, strlen(ver));
	assert_int_equal(eng_image_checksums_update(buf, (size_t)n), 0);
	if (flip)
		buf[n / 2] ^= 0x10;
	f = fopen(dst, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(buf, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	free(buf);
}

static struct eng_sched_model_config mconf(const char *image)
{
	return (struct eng_sched_model_config){
		.name = "m", .image = image, .backend = "cpu", .kv_blocks = 128,
		.kv_block_tokens = 16, .seqs_max = 8, .step_tokens_max = 128,
		.threads = 1, .queue_max = 64,
	};
}

static int setup(void **state)
{
	struct dp_rings_config rc = { .slots = SLOTS, .prompt_tokens_max = 512,
				      .text_bytes_max = 2048, .resp_entries = 4096 };
	struct eng_sched_model_config mc = mconf(IMAGE);
	struct eng_sched_config c;
	char err[200];

	(void)state;
	snprintf(V2, sizeof(V2), "/tmp/velo-swap-v2.%d.velo", (int)getpid());
	snprintf(BAD, sizeof(BAD), "/tmp/velo-swap-bad.%d.velo", (int)getpid());
	image_variant(V2, "2", false);
	image_variant(BAD, "3", true);
	memset(OUT, 0, sizeof(OUT));
	assert_int_equal(dp_rings_init(&R, &rc), 0);
	eng_sched_config_default(&c);
	c.text_bytes_max = 2048;
	c.idle_sleep_us = 200;
	assert_int_equal(eng_sched_init(&S, &c, &R, false), 0);
	assert_int_equal(eng_sched_model_load(&S, &mc, err, sizeof(err)), 0);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	eng_sched_fini(&S);
	dp_rings_fini(&R);
	unlink(V2);
	unlink(BAD);
	return 0;
}

static void submit(uint32_t i, uint32_t seed)
{
	struct dp_req_slot *q = &R.slots[i];
	struct dp_req_msg m = { .op = DP_REQ_INFER, .sess_slot = 1, .sess_gen = 7,
				.req_slot = i, .request_id = 1000 + i };

	q->sess_slot = 1;
	q->sess_gen = 7;
	q->request_id = m.request_id;
	q->arrival_ns = clock_mono_ns();
	memset(&q->f, 0, sizeof(q->f));
	q->f.request_id = m.request_id;
	q->f.max_tokens = GEN;
	q->f.flags = PROTO_INFER_PROMPT_TOKENS | PROTO_INFER_IGNORE_EOS;
	q->n_prompt_tokens = 12;
	q->prompt_tokens[0] = 0;
	for (uint32_t k = 1; k < 12; k++)
		q->prompt_tokens[k] = 2 + (seed * 7919u + k * 104729u) % 2000u;
	q->n_stop_tokens = q->n_logit_bias = q->n_stop_seqs = q->n_messages = 0;
	q->model.len = q->version.len = q->prompt_text.len = 0;
	q->text_used = 0;
	OUT[i] = (struct out){ .id = m.request_id };
	assert_true(dp_req_enqueue(&R, &m));
	dp_wake_kick(&R.wake_sched);
}

static void drain(void)
{
	struct dp_resp r;

	while (dp_resp_dequeue(&R, &r)) {
		struct out *o;

		assert_true(r.req_slot < SLOTS);
		o = &OUT[r.req_slot];
		assert_int_equal(r.request_id, o->id);
		assert_int_equal(o->final, 0);	/* nothing after the final */
		switch (r.kind) {
		case DP_RESP_ACCEPT:
			o->accepted++;
			break;
		case DP_RESP_TOKENS:
			assert_true(o->n + r.n_tokens <= GEN);
			memcpy(o->toks + o->n, r.tokens, r.n_tokens * 4);
			o->n += r.n_tokens;
			break;
		case DP_RESP_DONE:
			assert_true(r.text_len > r.name_len &&
				    r.text_len - r.name_len < ENG_SCHED_VERSION_LEN);
			assert_memory_equal(r.text, "m", 1);
			memcpy(o->ver, r.text + r.name_len, r.text_len - r.name_len);
			o->dones++;
			o->final = r.kind;
			break;
		default:
			fail_msg("request %u: response kind %u (REJECT/ERROR: failed)",
				 r.req_slot, r.kind);
		}
	}
}

/* Drain until every slot in [a, b) is accepted (@final: finished). */
static void wait_for(uint32_t a, uint32_t b, bool final)
{
	const struct timespec nap = { 0, 100000 };

	for (int guard = 0; guard < 200000; guard++) {
		uint32_t k = 0;

		drain();
		for (uint32_t i = a; i < b; i++)
			k += final ? OUT[i].final != 0 : OUT[i].accepted != 0;
		if (k == b - a)
			return;
		nanosleep(&nap, NULL);
	}
	fail_msg("requests %u..%u not %s", a, b - 1, final ? "finished" : "accepted");
}

static void test_swap_in_flight(void **state)
{
	struct eng_sched_model_config mc = mconf(V2), bad = mconf(BAD);
	struct eng_sched_model *v2, *x;
	unsigned i2, busy = 0;
	char err[200];
	int rc, v1;

	(void)state;
	v1 = eng_sched_slot_find(&S, "m", "1", ENG_ROUTE_PRODUCTION);
	assert_int_equal(v1, 0);
	assert_int_equal(eng_sched_start(&S), 0);

	/* A corrupt image: refused with its reason, nothing routed. */
	assert_int_equal(eng_sched_slot_load(&S, &bad, &x, err, sizeof(err)), -EBADMSG);
	assert_null(x);
	assert_non_null(strstr(err, "checksum"));
	assert_int_equal(S.mctr[ENG_MODEL_CTR_load_failures], 1);

	/* Phase A on version 1, admitted before the flip. */
	for (uint32_t i = 0; i < PHASE; i++)
		submit(i, i);
	wait_for(0, PHASE, false);
	/* Load version 2 here (the loader thread) and flip. */
	mc.device = 1;
	assert_int_equal(eng_sched_slot_load(&S, &mc, &v2, err, sizeof(err)), 0);
	assert_int_equal(eng_sched_slot_install(&S, v2, ENG_ROUTE_PRODUCTION, 0, &i2), 0);
	assert_int_equal(i2, 1);
	assert_int_equal(eng_sched_slot_route_get(&S, 0), ENG_ROUTE_NONE);
	assert_int_equal(eng_sched_slot_route_get(&S, i2), ENG_ROUTE_PRODUCTION);
	/* the routed one can not be detached */
	assert_int_equal(eng_sched_slot_detach(&S, i2, &x), -EPERM);
	/* Phase B on version 2. */
	for (uint32_t i = PHASE; i < 2 * PHASE; i++)
		submit(i, i - PHASE);
	wait_for(PHASE, 2 * PHASE, false);
	/* Rollback: the route flips back to the warm version 1. */
	assert_int_equal(eng_sched_slot_route(&S, 0, ENG_ROUTE_PRODUCTION, 0), 0);
	assert_int_equal(eng_sched_slot_route_get(&S, i2), ENG_ROUTE_NONE);
	for (uint32_t i = 2 * PHASE; i < 3 * PHASE; i++)
		submit(i, i - 2 * PHASE);
	/* Version 2 goes once its requests are done, never before. */
	for (;;) {
		rc = eng_sched_slot_detach(&S, i2, &x);
		drain();
		if (rc != -EBUSY)
			break;
		for (uint32_t i = PHASE; i < 2 * PHASE; i++)
			busy += !OUT[i].final;
		usleep(200);
	}
	assert_int_equal(rc, 0);
	assert_ptr_equal(x, v2);
	for (uint32_t i = PHASE; i < 2 * PHASE; i++)
		assert_int_equal(OUT[i].final, DP_RESP_DONE);
	assert_int_equal(eng_sched_slot_status(x)->served, PHASE);
	eng_sched_slot_free(&S, x);
	wait_for(0, 3 * PHASE, true);
	eng_sched_stop(&S);
	print_message("detach refused %u times while version 2 had requests\n", busy);

	for (uint32_t i = 0; i < 3 * PHASE; i++) {
		const char *want = i / PHASE == 1 ? "2" : "1";

		assert_int_equal(OUT[i].dones, 1);
		assert_int_equal(OUT[i].accepted, 1);
		assert_string_equal(OUT[i].ver, want);
		assert_int_equal(OUT[i].n, GEN);
		/* same weights, same greedy bits on either version */
		assert_memory_equal(OUT[i].toks, OUT[i % PHASE].toks, GEN * 4);
	}
	assert_int_equal(S.models[0]->served, 2 * PHASE);
	assert_null(S.models[1]);
	assert_int_equal(S.n_models, 1);
	assert_true(eng_kvc_idle_ok(S.models[0]->kv));
	assert_int_equal(S.models[0]->n_running + S.models[0]->n_waiting, 0);
	assert_int_equal(S.ctr[ENG_SCHED_CTR_models_ready], 1);
	assert_true(eng_sched_ready(&S, NULL, 0));
}

/* Unrouting the only model: new requests are refused NOT_READY, the ones
 * admitted finish; the engine state follows. */
static void test_unroute(void **state)
{
	struct eng_sched_model *x;

	(void)state;
	assert_int_equal(eng_sched_start(&S), 0);
	for (uint32_t i = 0; i < 4; i++)
		submit(i, i);
	wait_for(0, 4, false);
	assert_int_equal(eng_sched_slot_route(&S, 0, ENG_ROUTE_NONE, 0), 0);
	assert_int_equal(dp_rings_engine_state(&R), PROTO_STATE_NOT_READY);
	assert_false(eng_sched_ready(&S, NULL, 0));
	wait_for(0, 4, true);
	for (uint32_t i = 0; i < 4; i++)
		assert_string_equal(OUT[i].ver, "1");
	while (eng_sched_slot_detach(&S, 0, &x) == -EBUSY)
		usleep(200);
	assert_non_null(x);
	eng_sched_slot_free(&S, x);
	assert_int_equal(eng_sched_model_count(&S), 0);
	eng_sched_stop(&S);
}

/* A shadow slot gets a copy of every request the name admits: the client
 * sees only version 1's records (one DONE each, naming 1), the copies run
 * on version 2 and are counted, and nothing of theirs reaches the ring. */
static void test_shadow(void **state)
{
	struct eng_sched_model_config mc = mconf(V2);
	struct eng_sched_model *v2, *x;
	unsigned i2;
	char err[200];

	(void)state;
	assert_int_equal(eng_sched_start(&S), 0);
	mc.device = 1;
	assert_int_equal(eng_sched_slot_load(&S, &mc, &v2, err, sizeof(err)), 0);
	assert_int_equal(eng_sched_slot_install(&S, v2, ENG_ROUTE_SHADOW, 0, &i2), 0);
	assert_int_equal(eng_sched_slot_route_get(&S, 0), ENG_ROUTE_PRODUCTION);
	for (uint32_t i = 0; i < PHASE; i++)
		submit(i, i);
	wait_for(0, PHASE, true);
	/* the copies finish on their own (not cancelled with the originals) */
	for (int guard = 0; guard < 20000 &&
	     __atomic_load_n(&S.ctr[ENG_SCHED_CTR_shadow_done], __ATOMIC_RELAXED) +
	     __atomic_load_n(&S.ctr[ENG_SCHED_CTR_shadow_dropped], __ATOMIC_RELAXED) < PHASE;
	     guard++)
		usleep(500);
	assert_int_equal(eng_sched_slot_route(&S, i2, ENG_ROUTE_NONE, 0), 0);
	while (eng_sched_slot_detach(&S, i2, &x) == -EBUSY)
		usleep(200);
	eng_sched_stop(&S);
	drain();
	for (uint32_t i = 0; i < PHASE; i++) {
		assert_int_equal(OUT[i].dones, 1);
		assert_string_equal(OUT[i].ver, "1");
	}
	/* ENG_SCHED_SHADOW_MAX (16) states: all 16 copies fit */
	assert_int_equal(S.ctr[ENG_SCHED_CTR_shadow_admitted], PHASE);
	assert_int_equal(S.ctr[ENG_SCHED_CTR_shadow_done], PHASE);
	assert_int_equal(S.ctr[ENG_SCHED_CTR_shadow_dropped], 0);
	assert_int_equal(eng_sched_slot_status(x)->served, 0);	/* no DONE sent */
	assert_true(eng_kvc_idle_ok(x->kv));
	eng_sched_slot_free(&S, x);
	assert_int_equal(S.models[0]->served, PHASE);
	assert_int_equal(S.ctr[ENG_SCHED_CTR_accepted], PHASE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_swap_in_flight, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unroute, setup, teardown),
		cmocka_unit_test_setup_teardown(test_shadow, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
