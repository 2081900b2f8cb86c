// SPDX-License-Identifier: MIT
/*
 * test_loss.c — the seeded loss injector (dataplane/loss.h): rates per
 * direction and class within statistical bounds, the same decisions for the
 * same seed, exact patterns (seq, nth, times), classification and the
 * pattern parser's errors.
 */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <velo/proto.h>

#include "../../dataplane/loss.h"

static _Alignas(8) uint8_t pkt[64];

/* A header-only datagram of a class: data (count msgs from seq) or ctrl. */
static const uint8_t *mk(bool data, uint64_t seq, uint16_t count)
{
	struct proto_pkt_hdr *h = (struct proto_pkt_hdr *)pkt;

	memset(pkt, 0, sizeof(pkt));
	h->magic = PROTO_MAGIC;
	h->version = PROTO_VERSION;
	h->flags = data ? PROTO_F_S2C : (PROTO_F_S2C | PROTO_F_CTRL);
	h->msg_count = data ? count : 1;
	h->seq = seq;
	return pkt;
}

static void loss_init(struct dp_loss *l, uint64_t seed, double rxd, double rxc,
		      double txd, double txc, const char **pats, unsigned n)
{
	struct dp_loss_config c;
	char err[128];

	memset(&c, 0, sizeof(c));
	c.seed = seed;
	c.rate[DP_LOSS_RX][DP_LOSS_DATA] = rxd;
	c.rate[DP_LOSS_RX][DP_LOSS_CTRL] = rxc;
	c.rate[DP_LOSS_TX][DP_LOSS_DATA] = txd;
	c.rate[DP_LOSS_TX][DP_LOSS_CTRL] = txc;
	for (unsigned i = 0; i < n; i++)
		c.patterns[i] = pats[i];
	c.n_patterns = n;
	assert_int_equal(dp_loss_init(l, &c, err, sizeof(err)), 0);
}

static void test_classify(void **state)
{
	struct proto_pkt_hdr *h = (struct proto_pkt_hdr *)pkt;

	(void)state;
	assert_int_equal(dp_loss_classify(mk(true, 1, 3), 64), DP_LOSS_DATA);
	assert_int_equal(dp_loss_classify(mk(false, 1, 1), 64), DP_LOSS_CTRL);
	mk(true, 1, 1);
	h->msg_count = PROTO_COUNT_HEARTBEAT;
	assert_int_equal(dp_loss_classify(pkt, 64), DP_LOSS_CTRL);
	h->msg_count = PROTO_COUNT_END;
	assert_int_equal(dp_loss_classify(pkt, 64), DP_LOSS_CTRL);
	assert_int_equal(dp_loss_classify(mk(true, 1, 1), 10), DP_LOSS_CTRL);
}

/* Rates: 100000 datagrams per class, binomial bounds at ~6 sigma. */
static void test_rates(void **state)
{
	static struct dp_loss l;
	const unsigned N = 100000;
	const double p[2][2] = { { 0.05, 0.20 }, { 0.01, 0.0 } };
	unsigned dropped[2][2] = { { 0 } };

	(void)state;
	loss_init(&l, 42, p[0][0], p[0][1], p[1][0], p[1][1], NULL, 0);
	assert_true(dp_loss_active(&l));
	for (unsigned i = 0; i < N; i++)
		for (int d = 0; d < 2; d++)
			for (int c = 0; c < 2; c++)
				dropped[d][c] += dp_loss_drop(&l, (enum dp_loss_dir)d,
							      mk(c == DP_LOSS_DATA, i, 1),
							      64);
	for (int d = 0; d < 2; d++)
		for (int c = 0; c < 2; c++) {
			double mean = N * p[d][c];
			double sd = sqrt(N * p[d][c] * (1 - p[d][c]));

			assert_true(fabs(dropped[d][c] - mean) <= 6 * sd + 1e-9);
		}
	assert_int_equal(dropped[1][1], 0);
	assert_int_equal(l.ctr[DP_LOSS_CTR_loss_rx_data], dropped[0][0]);
	assert_int_equal(l.ctr[DP_LOSS_CTR_loss_rx_ctrl], dropped[0][1]);
	assert_int_equal(l.ctr[DP_LOSS_CTR_loss_tx_data], dropped[1][0]);
	assert_int_equal(l.ctr[DP_LOSS_CTR_loss_tx_ctrl], 0);
	assert_int_equal(l.ctr[DP_LOSS_CTR_loss_pattern], 0);
}

static void test_seeded(void **state)
{
	static struct dp_loss a, b, c;
	unsigned same_ab = 0, same_ac = 0;

	(void)state;
	loss_init(&a, 7, 0.5, 0, 0, 0, NULL, 0);
	loss_init(&b, 7, 0.5, 0, 0, 0, NULL, 0);
	loss_init(&c, 8, 0.5, 0, 0, 0, NULL, 0);
	for (unsigned i = 0; i < 1000; i++) {
		bool x = dp_loss_drop(&a, DP_LOSS_RX, mk(true, i, 1), 64);
		bool y = dp_loss_drop(&b, DP_LOSS_RX, mk(true, i, 1), 64);
		bool z = dp_loss_drop(&c, DP_LOSS_RX, mk(true, i, 1), 64);

		same_ab += x == y;
		same_ac += x == z;
	}
	assert_int_equal(same_ab, 1000);
	assert_true(same_ac < 600);	/* independent: ~500 */
	/* Nothing configured: inactive, never drops. */
	loss_init(&a, 7, 0, 0, 0, 0, NULL, 0);
	assert_false(dp_loss_active(&a));
	assert_false(dp_loss_drop(&a, DP_LOSS_TX, mk(true, 1, 1), 64));
}

static void test_pattern_seq(void **state)
{
	static struct dp_loss l;
	const char *pats[] = { "tx data seq 5,6,7" };

	(void)state;
	loss_init(&l, 1, 0, 0, 0, 0, pats, 1);
	assert_true(dp_loss_active(&l));
	for (uint64_t s = 1; s <= 4; s++)
		assert_false(dp_loss_drop(&l, DP_LOSS_TX, mk(true, s, 1), 64));
	assert_true(dp_loss_drop(&l, DP_LOSS_TX, mk(true, 5, 1), 64));
	/* The retransmission of 5 goes through (times 1). */
	assert_false(dp_loss_drop(&l, DP_LOSS_TX, mk(true, 5, 1), 64));
	/* One datagram holding 6..8: dropped once, uses up 6 and 7. */
	assert_true(dp_loss_drop(&l, DP_LOSS_TX, mk(true, 6, 3), 64));
	assert_false(dp_loss_drop(&l, DP_LOSS_TX, mk(true, 7, 1), 64));
	assert_false(dp_loss_drop(&l, DP_LOSS_TX, mk(true, 6, 1), 64));
	/* rx and control are untouched. */
	assert_false(dp_loss_drop(&l, DP_LOSS_RX, mk(true, 5, 1), 64));
	assert_false(dp_loss_drop(&l, DP_LOSS_TX, mk(false, 5, 1), 64));
	assert_int_equal(l.ctr[DP_LOSS_CTR_loss_tx_data], 2);
	assert_int_equal(l.ctr[DP_LOSS_CTR_loss_pattern], 2);
}

static void test_pattern_times_nth(void **state)
{
	static struct dp_loss l;
	const char *pats[] = { "rx data seq 3-4 times 2", "tx ctrl nth 2,4",
			       "tx any nth 10 times 0" };
	unsigned drops = 0;

	(void)state;
	loss_init(&l, 1, 0, 0, 0, 0, pats, 3);
	assert_true(dp_loss_drop(&l, DP_LOSS_RX, mk(true, 3, 1), 64));
	assert_true(dp_loss_drop(&l, DP_LOSS_RX, mk(true, 3, 1), 64));
	assert_false(dp_loss_drop(&l, DP_LOSS_RX, mk(true, 3, 1), 64));
	assert_true(dp_loss_drop(&l, DP_LOSS_RX, mk(true, 4, 1), 64));
	/* Control datagrams 1..5 on tx: the 2nd and 4th are lost; every
	 * datagram counts towards the 10th of "any". */
	for (int i = 1; i <= 5; i++) {
		bool d = dp_loss_drop(&l, DP_LOSS_TX, mk(false, 0, 1), 64);

		assert_int_equal(d, i == 2 || i == 4);
	}
	for (int i = 6; i <= 12; i++)
		drops += dp_loss_drop(&l, DP_LOSS_TX, mk(true, 100 + i, 1), 64);
	assert_int_equal(drops, 1);	/* the 10th tx datagram */
	assert_int_equal(l.ctr[DP_LOSS_CTR_loss_tx_ctrl], 2);
	assert_int_equal(l.ctr[DP_LOSS_CTR_loss_rx_data], 3);
}

static void test_pattern_parse(void **state)
{
	struct dp_loss_rule r;
	char err[128];
	const char *bad[] = {
		"", "tx", "tx data seq", "up data seq 1", "tx foo seq 1",
		"tx data when 1", "tx data seq x", "tx data seq 5-", "tx data seq 7-5",
		"tx data seq 1,,2", "tx data seq 1-1000", "tx data seq 1 times",
		"tx data seq 1 times -1", "tx data seq 1 twice 2", "tx ctrl seq 1",
		"tx data seq 1 times 2 extra",
	};

	(void)state;
	assert_int_equal(dp_loss_rule_parse("rx any nth 9,2,5-6 times 3", &r, err,
					    sizeof(err)), 0);
	assert_int_equal(r.dir, DP_LOSS_RX);
	assert_int_equal(r.cls, DP_LOSS_ANY);
	assert_int_equal(r.by, DP_LOSS_BY_NTH);
	assert_int_equal(r.times, 3);
	assert_int_equal(r.n_nums, 4);
	assert_int_equal(r.nums[0], 2);	/* sorted */
	assert_int_equal(r.nums[3], 9);
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = 0;
		assert_int_equal(dp_loss_rule_parse(bad[i], &r, err, sizeof(err)),
				 -EINVAL);
		assert_true(err[0] != 0);
	}
	/* Rates outside 0..1 are refused. */
	{
		struct dp_loss l;
		struct dp_loss_config c;

		memset(&c, 0, sizeof(c));
		c.rate[0][0] = 1.5;
		assert_int_equal(dp_loss_init(&l, &c, err, sizeof(err)), -EINVAL);
		c.rate[0][0] = NAN;
		assert_int_equal(dp_loss_init(&l, &c, err, sizeof(err)), -EINVAL);
		c.rate[0][0] = 1.0;
		assert_int_equal(dp_loss_init(&l, &c, err, sizeof(err)), 0);
		assert_true(dp_loss_drop(&l, DP_LOSS_RX, mk(true, 1, 1), 64));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_classify),
		cmocka_unit_test(test_rates),
		cmocka_unit_test(test_seeded),
		cmocka_unit_test(test_pattern_seq),
		cmocka_unit_test(test_pattern_times_nth),
		cmocka_unit_test(test_pattern_parse),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
