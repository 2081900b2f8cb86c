/* SPDX-License-Identifier: MIT */
/*
 * dataplane/loss.h — seeded loss injection in the dataplane's own receive
 * and transmit paths (as Aeron's debug channels): random drops with a
 * probability per direction (rx, tx) and class (data, control), plus exact
 * drop patterns such as "tx data seq 5,6,7".  Used by the loss tests, which
 * also read the loss counters to show that the loss really happened.
 *
 * Classes: a data datagram has msg_count in 1..PROTO_COUNT_MAX and no
 * F_CTRL; everything else (heartbeats, end of session, control messages,
 * anything too short to classify) is control.
 *
 * Pattern grammar, one rule per string:
 *   <rx|tx> <data|ctrl|any> <seq|nth> <list> [times N]
 *   list: numbers and ranges, "5", "5,6,7", "5-7", "2,9-11" (<= 256 numbers)
 *   seq:  a datagram whose messages [seq, seq + msg_count) contain a listed
 *         number (data datagrams only)
 *   nth:  the n-th datagram (1-based) of that direction and class
 *   times N: each listed number drops at most N datagrams (default 1: the
 *         first transmission is lost, the retransmission gets through);
 *         0: unlimited
 * A datagram dropped by a pattern is not also drawn against the rate.
 */
#ifndef VELO_DP_LOSS_H
#define VELO_DP_LOSS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../tools/lib/counters.h"

#define DP_LOSS_RULES_MAX 16
#define DP_LOSS_NUMS_MAX 256

enum dp_loss_dir { DP_LOSS_RX = 0, DP_LOSS_TX = 1 };
enum dp_loss_class { DP_LOSS_DATA = 0, DP_LOSS_CTRL = 1, DP_LOSS_ANY = 2 };
enum dp_loss_by { DP_LOSS_BY_SEQ = 0, DP_LOSS_BY_NTH = 1 };

/* Counters (registered as "dp.loss_*"). */
#define foreach_dp_loss_counter(X)                                            \
	X(loss_rx_data, "received data datagrams dropped by the injector")    \
	X(loss_rx_ctrl, "received control datagrams dropped by the injector") \
	X(loss_tx_data, "data datagrams not sent, dropped by the injector")   \
	X(loss_tx_ctrl, "control datagrams not sent, dropped by the injector") \
	X(loss_pattern, "of those, dropped by an exact pattern")

enum dp_loss_ctr {
#define X(name, help) DP_LOSS_CTR_##name,
	foreach_dp_loss_counter(X)
#undef X
	DP_LOSS_CTR__COUNT
};

extern const struct ctr_desc dp_loss_ctr_desc[DP_LOSS_CTR__COUNT];

struct dp_loss_rule {
	uint8_t dir;		/* enum dp_loss_dir */
	uint8_t cls;		/* enum dp_loss_class */
	uint8_t by;		/* enum dp_loss_by */
	uint8_t reserved;
	uint32_t times;		/* 0: unlimited */
	uint64_t nth_count;	/* datagrams of this dir/class seen */
	unsigned n_nums;
	uint64_t nums[DP_LOSS_NUMS_MAX];	/* sorted ascending */
	uint32_t hits[DP_LOSS_NUMS_MAX];
};

struct dp_loss_config {
	uint64_t seed;
	double rate[2][2];	/* [dir][class]: probability 0..1 */
	const char *patterns[DP_LOSS_RULES_MAX];
	unsigned n_patterns;
};

struct dp_loss {
	uint64_t rng[4];		/* xoshiro256** state */
	uint64_t threshold[2][2];	/* drop when next() < threshold */
	bool active;			/* any rate or rule */
	unsigned n_rules;
	struct dp_loss_rule rules[DP_LOSS_RULES_MAX];
	uint64_t ctr[DP_LOSS_CTR__COUNT];
};

/*
 * dp_loss_rule_parse() - parse one pattern string.
 * Return: 0, or -EINVAL with a reason in @err.
 */
int dp_loss_rule_parse(const char *s, struct dp_loss_rule *r, char *err,
		       size_t errlen);

/*
 * dp_loss_init() - seed the generator, set the rates, parse the patterns.
 * Return: 0, or -EINVAL (rate outside 0..1, bad pattern: reason in @err).
 */
int dp_loss_init(struct dp_loss *l, const struct dp_loss_config *cfg,
		 char *err, size_t errlen);

/* Whether anything is configured (the dataplane picks its worker by it). */
static inline bool dp_loss_active(const struct dp_loss *l)
{
	return l->active;
}

/* Class of a datagram (enum dp_loss_class: DATA or CTRL). */
int dp_loss_classify(const void *pkt, size_t len);

/*
 * dp_loss_drop() - decide the fate of one datagram and count a drop.
 * Return: true to drop it.
 */
bool dp_loss_drop(struct dp_loss *l, enum dp_loss_dir dir, const void *pkt,
		  size_t len);

#endif /* VELO_DP_LOSS_H */
