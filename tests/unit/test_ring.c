// SPDX-License-Identifier: MIT
/*
 * test_ring.c — the request slot pool and the SPSC rings between the
 * dataplane and the scheduler (dataplane/ring.h): sizes, order, full and
 * empty rings, slot ownership, and a two-thread run that checks every
 * record arrives once, in order, intact.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <time.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "../../dataplane/ring.h"

static struct dp_rings R;

static int teardown(void **state)
{
	(void)state;
	dp_rings_fini(&R);
	return 0;
}

static void test_init_errors(void **state)
{
	struct dp_rings_config c = { .slots = 4, .prompt_tokens_max = 16,
				     .text_bytes_max = 64, .resp_entries = 6 };

	(void)state;
	assert_int_equal(dp_rings_init(&R, &c), -EINVAL);	/* not 2^n */
	c.resp_entries = 8;
	c.slots = 0;
	assert_int_equal(dp_rings_init(&R, &c), -EINVAL);
	c.slots = 4;
	c.text_bytes_max = 0;
	assert_int_equal(dp_rings_init(&R, &c), -EINVAL);
	c.text_bytes_max = 64;
	assert_int_equal(dp_rings_init(&R, &c), 0);
}

static void test_slots(void **state)
{
	struct dp_rings_config c = { .slots = 3, .prompt_tokens_max = 100,
				     .text_bytes_max = 1000, .resp_entries = 8 };
	struct dp_req_slot *s[3];

	(void)state;
	assert_int_equal(dp_rings_init(&R, &c), 0);
	assert_int_equal(dp_rings_slots_in_use(&R), 0);
	for (int i = 0; i < 3; i++) {
		s[i] = dp_req_slot_get(&R);
		assert_non_null(s[i]);
		assert_int_equal(s[i]->index, i);
		/* Each slot's arena is its own and writable end to end. */
		memset(s[i]->prompt_tokens, 0x11 * (i + 1), 100 * 4);
		memset(s[i]->text, 0x22 * (i + 1), 1000);
		assert_int_equal((uintptr_t)s[i] % 64, 0);
	}
	assert_null(dp_req_slot_get(&R));
	assert_int_equal(dp_rings_slots_in_use(&R), 3);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(s[i]->prompt_tokens[99], 0x11111111u * (i + 1));
		assert_int_equal((uint8_t)s[i]->text[999], 0x22 * (i + 1));
	}
	dp_req_slot_put(&R, 1);
	assert_ptr_equal(dp_req_slot_get(&R), s[1]);
	dp_req_slot_put(&R, 0);
	dp_req_slot_put(&R, 1);
	dp_req_slot_put(&R, 2);
	assert_int_equal(dp_rings_slots_in_use(&R), 0);
	assert_int_equal(dp_rings_engine_state(&R), PROTO_STATE_NOT_READY);
	dp_rings_engine_state_set(&R, PROTO_STATE_READY);
	assert_int_equal(dp_rings_engine_state(&R), PROTO_STATE_READY);
}

static void test_fifo_full_empty(void **state)
{
	struct dp_rings_config c = { .slots = 4, .prompt_tokens_max = 1,
				     .text_bytes_max = 64, .resp_entries = 4 };
	struct dp_req_msg m, out;
	struct dp_resp r, *rp;
	unsigned n = 0;

	(void)state;
	assert_int_equal(dp_rings_init(&R, &c), 0);
	/* The request ring takes two records per slot, whatever happens. */
	for (;;) {
		m = (struct dp_req_msg){ .op = DP_REQ_INFER, .req_slot = n,
					 .request_id = 1000 + n };
		if (!dp_req_enqueue(&R, &m))
			break;
		n++;
	}
	assert_true(n >= 2 * c.slots);
	for (unsigned i = 0; i < n; i++) {
		assert_true(dp_req_dequeue(&R, &out));
		assert_int_equal(out.request_id, 1000 + i);
		assert_int_equal(out.req_slot, i);
	}
	assert_false(dp_req_dequeue(&R, &out));

	/* Response ring of 4 holds 3 (ck keeps one entry empty). */
	for (int i = 0; i < 3; i++) {
		rp = dp_resp_reserve(&R);
		assert_non_null(rp);
		rp->kind = DP_RESP_TOKENS;
		rp->request_id = (uint64_t)i;
		rp->n_tokens = 2;
		rp->tokens[0] = 10u + (unsigned)i;
		dp_resp_commit(&R);
	}
	assert_null(dp_resp_reserve(&R));
	memset(&r, 0, sizeof(r));
	assert_false(dp_resp_enqueue(&R, &r));
	for (int i = 0; i < 3; i++) {
		assert_true(dp_resp_dequeue(&R, &r));
		assert_int_equal(r.request_id, i);
		assert_int_equal(r.tokens[0], 10 + i);
	}
	assert_false(dp_resp_dequeue(&R, &r));
	assert_true(dp_resp_enqueue(&R, &r));
}

/* Two threads, 2^18 records each way through small rings: every record
 * arrives once, in order, with its payload intact. */
#define N_STRESS (1u << 18)

static void *producer(void *arg)
{
	struct dp_rings *r = arg;

	for (uint32_t i = 0; i < N_STRESS;) {
		struct dp_resp *p = dp_resp_reserve(r);

		if (!p)
			continue;
		p->kind = DP_RESP_TOKENS;
		p->request_id = i;
		p->n_tokens = (uint16_t)(i % DP_RESP_TOKENS_MAX);
		p->tokens[DP_RESP_TOKENS_MAX - 1] = ~i;
		p->text[DP_RESP_TEXT_MAX - 1] = (char)(i * 7);
		dp_resp_commit(r);
		i++;
	}
	return NULL;
}

static void test_spsc_threads(void **state)
{
	struct dp_rings_config c = { .slots = 8, .prompt_tokens_max = 1,
				     .text_bytes_max = 64, .resp_entries = 64 };
	struct dp_resp r;
	pthread_t t;
	uint32_t next = 0;
	unsigned bad = 0;

	(void)state;
	assert_int_equal(dp_rings_init(&R, &c), 0);
	assert_int_equal(pthread_create(&t, NULL, producer, &R), 0);
	while (next < N_STRESS) {
		if (!dp_resp_dequeue(&R, &r))
			continue;
		bad += r.request_id != next || r.n_tokens != next % DP_RESP_TOKENS_MAX ||
		       r.tokens[DP_RESP_TOKENS_MAX - 1] != ~next ||
		       r.text[DP_RESP_TEXT_MAX - 1] != (char)(next * 7);
		next++;
	}
	pthread_join(t, NULL);
	assert_int_equal(bad, 0);
	assert_false(dp_resp_dequeue(&R, &r));
}

/* A consumer asleep on its eventfd (10 s timeout) is woken by the
 * producer's kick at once; with nobody asleep a kick writes nothing. */
static int woke_ok;

static void *sleeper(void *arg)
{
	struct dp_rings *r = arg;
	struct pollfd p = { .fd = r->wake_sched.fd, .events = POLLIN };
	struct timespec ts = { 10, 0 };
	struct dp_req_msg m;
	bool woke = false;

	dp_wake_prepare(&r->wake_sched);
	if (!dp_req_pending(r))
		woke = ppoll(&p, 1, &ts, NULL) > 0;
	dp_wake_done(&r->wake_sched, woke);
	woke_ok = dp_req_dequeue(r, &m) && m.request_id == 99;
	return NULL;
}

static void test_wake(void **state)
{
	struct dp_rings_config c = { .slots = 2, .prompt_tokens_max = 1,
				     .text_bytes_max = 64, .resp_entries = 4 };
	struct dp_req_msg m = { .op = DP_REQ_INFER, .request_id = 99 };
	struct timespec t0, t1;
	pthread_t t;
	uint64_t n;

	(void)state;
	assert_int_equal(dp_rings_init(&R, &c), 0);
	assert_true(R.wake_dp.fd >= 0 && R.wake_sched.fd >= 0);
	/* Nobody asleep: the kick costs a fence, writes nothing. */
	dp_wake_kick(&R.wake_sched);
	assert_int_equal(read(R.wake_sched.fd, &n, sizeof(n)), -1);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(pthread_create(&t, NULL, sleeper, &R), 0);
	while (!__atomic_load_n(&R.wake_sched.sleeping, __ATOMIC_SEQ_CST))
		;
	usleep(1000);
	assert_true(dp_req_enqueue(&R, &m));
	dp_wake_kick(&R.wake_sched);
	pthread_join(t, NULL);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	assert_true(woke_ok);
	assert_true(t1.tv_sec - t0.tv_sec < 5);	/* not the 10 s timeout */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_init_errors, teardown),
		cmocka_unit_test_teardown(test_slots, teardown),
		cmocka_unit_test_teardown(test_fifo_full_empty, teardown),
		cmocka_unit_test_teardown(test_spsc_threads, teardown),
		cmocka_unit_test_teardown(test_wake, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
