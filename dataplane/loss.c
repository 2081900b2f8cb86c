// SPDX-License-Identifier: MIT
/*
 * loss.c — seeded loss injection (see loss.h).  Only ever called when the
 * dataplane was built with CONFIG_DP_LOSS_INJECT and a loss setting is
 * configured: the normal path does not test for it (dp.c picks a worker).
 *
 * Generator: xoshiro256** seeded through splitmix64, so that a seed gives
 * the same drop decisions for the same datagram sequence on every machine.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <velo/proto.h>

#include "loss.h"

const struct ctr_desc dp_loss_ctr_desc[DP_LOSS_CTR__COUNT] = {
#define X(name, help) { #name, help },
	foreach_dp_loss_counter(X)
#undef X
};

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

static uint64_t xoshiro_next(uint64_t s[4])
{
	uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;

	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return r;
}

static int fail(char *err, size_t errlen, const char *s, const char *why)
{
	if (err && errlen)
		snprintf(err, errlen, "loss pattern '%s': %s", s, why);
	return -EINVAL;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

int dp_loss_rule_parse(const char *s, struct dp_loss_rule *r, char *err,
		       size_t errlen)
{
	char copy[256], *w[7], *save = NULL;
	unsigned n = 0;

	memset(r, 0, sizeof(*r));
	r->times = 1;
	if (strlen(s) >= sizeof(copy))
		return fail(err, errlen, s, "too long");
	strcpy(copy, s);
	for (char *t = strtok_r(copy, " \t", &save); t;
	     t = strtok_r(NULL, " \t", &save)) {
		if (n == 6)
			return fail(err, errlen, s, "too many words");
		w[n++] = t;
	}
	if (n != 4 && n != 6)
		return fail(err, errlen, s, "expected '<rx|tx> <data|ctrl|any> "
			    "<seq|nth> <list> [times N]'");
	if (!strcmp(w[0], "rx"))
		r->dir = DP_LOSS_RX;
	else if (!strcmp(w[0], "tx"))
		r->dir = DP_LOSS_TX;
	else
		return fail(err, errlen, s, "direction must be rx or tx");
	if (!strcmp(w[1], "data"))
		r->cls = DP_LOSS_DATA;
	else if (!strcmp(w[1], "ctrl"))
		r->cls = DP_LOSS_CTRL;
	else if (!strcmp(w[1], "any"))
		r->cls = DP_LOSS_ANY;
	else
		return fail(err, errlen, s, "class must be data, ctrl or any");
	if (!strcmp(w[2], "seq"))
		r->by = DP_LOSS_BY_SEQ;
	else if (!strcmp(w[2], "nth"))
		r->by = DP_LOSS_BY_NTH;
	else
		return fail(err, errlen, s, "selector must be seq or nth");
	if (n == 6) {
		char *end;
		unsigned long t;

		if (strcmp(w[4], "times"))
			return fail(err, errlen, s, "expected 'times N'");
		t = strtoul(w[5], &end, 10);
		if (*end || end == w[5] || w[5][0] == '-' || t > 1000000)
			return fail(err, errlen, s, "bad times count");
		r->times = (uint32_t)t;
	}
	/* The list: a,b-c,... */
	for (const char *p = w[3]; *p;) {
		char *end;
		unsigned long long lo, hi;

		if (*p < '0' || *p > '9')
			return fail(err, errlen, s, "bad number list");
		lo = strtoull(p, &end, 10);
		hi = lo;
		p = end;
		if (*p == '-') {
			p++;
			if (*p < '0' || *p > '9')
				return fail(err, errlen, s, "bad range");
			hi = strtoull(p, &end, 10);
			p = end;
		}
		if (hi < lo || hi - lo >= DP_LOSS_NUMS_MAX ||
		    r->n_nums + (hi - lo + 1) > DP_LOSS_NUMS_MAX)
			return fail(err, errlen, s, "too many numbers (max 256)");
		for (unsigned long long x = lo; x <= hi; x++)
			r->nums[r->n_nums++] = x;
		if (*p == ',')
			p++;
		else if (*p)
			return fail(err, errlen, s, "bad number list");
	}
	if (!r->n_nums)
		return fail(err, errlen, s, "empty list");
	if (r->by == DP_LOSS_BY_SEQ && r->cls == DP_LOSS_CTRL)
		return fail(err, errlen, s, "control datagrams have no seq");
	qsort(r->nums, r->n_nums, sizeof(r->nums[0]), cmp_u64);
	return 0;
}

int dp_loss_init(struct dp_loss *l, const struct dp_loss_config *cfg,
		 char *err, size_t errlen)
{
	uint64_t sm = cfg->seed;

	memset(l, 0, sizeof(*l));
	for (int i = 0; i < 4; i++)
		l->rng[i] = splitmix64(&sm);
	for (int d = 0; d < 2; d++)
		for (int c = 0; c < 2; c++) {
			double p = cfg->rate[d][c];

			if (!(p >= 0.0 && p <= 1.0)) {
				if (err && errlen)
					snprintf(err, errlen,
						 "loss rate %g outside 0..1", p);
				return -EINVAL;
			}
			/* p * 2^64, saturating at 1.0 (drop everything). */
			if (p >= 1.0)
				l->threshold[d][c] = UINT64_MAX;
			else
				l->threshold[d][c] =
					(uint64_t)ldexp(p, 64);
			if (p > 0.0)
				l->active = true;
		}
	if (cfg->n_patterns > DP_LOSS_RULES_MAX) {
		if (err && errlen)
			snprintf(err, errlen, "more than %d loss patterns",
				 DP_LOSS_RULES_MAX);
		return -EINVAL;
	}
	for (unsigned i = 0; i < cfg->n_patterns; i++) {
		int rc = dp_loss_rule_parse(cfg->patterns[i], &l->rules[i], err,
					    errlen);

		if (rc)
			return rc;
		l->n_rules++;
		l->active = true;
	}
	return 0;
}

int dp_loss_classify(const void *pkt, size_t len)
{
	const struct proto_pkt_hdr *h = pkt;

	if (len < sizeof(*h))
		return DP_LOSS_CTRL;
	if (h->msg_count == PROTO_COUNT_HEARTBEAT || h->msg_count == PROTO_COUNT_END ||
	    (h->flags & PROTO_F_CTRL))
		return DP_LOSS_CTRL;
	return DP_LOSS_DATA;
}

/* Index of the first listed number >= x (nums sorted). */
static unsigned lower_bound(const struct dp_loss_rule *r, uint64_t x)
{
	unsigned lo = 0, hi = r->n_nums;

	while (lo < hi) {
		unsigned mid = (lo + hi) / 2;

		if (r->nums[mid] < x)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static bool rule_match(struct dp_loss_rule *r, int cls, const void *pkt,
		       size_t len)
{
	bool drop = false;

	if (r->by == DP_LOSS_BY_NTH) {
		uint64_t nth = ++r->nth_count;
		unsigned i = lower_bound(r, nth);

		if (i < r->n_nums && r->nums[i] == nth &&
		    (!r->times || r->hits[i] < r->times)) {
			r->hits[i]++;
			drop = true;
		}
		return drop;
	}
	if (cls != DP_LOSS_DATA)
		return false;
	{
		const struct proto_pkt_hdr *h = pkt;
		uint64_t first = h->seq, end = h->seq + h->msg_count;

		(void)len;
		for (unsigned i = lower_bound(r, first);
		     i < r->n_nums && r->nums[i] < end; i++) {
			if (r->times && r->hits[i] >= r->times)
				continue;
			r->hits[i]++;
			drop = true;
		}
	}
	return drop;
}

bool dp_loss_drop(struct dp_loss *l, enum dp_loss_dir dir, const void *pkt,
		  size_t len)
{
	int cls = dp_loss_classify(pkt, len);
	bool drop = false;

	for (unsigned i = 0; i < l->n_rules; i++) {
		struct dp_loss_rule *r = &l->rules[i];

		if (r->dir != dir || (r->cls != DP_LOSS_ANY && r->cls != cls))
			continue;
		/* Every rule sees every datagram of its class (nth counts
		 * stay exact even when an earlier rule dropped it). */
		if (rule_match(r, cls, pkt, len))
			drop = true;
	}
	if (drop) {
		l->ctr[DP_LOSS_CTR_loss_pattern]++;
	} else if (l->threshold[dir][cls]) {
		drop = xoshiro_next(l->rng) < l->threshold[dir][cls];
	}
	if (drop)
		l->ctr[dir == DP_LOSS_RX
			       ? (cls == DP_LOSS_DATA ? DP_LOSS_CTR_loss_rx_data
						      : DP_LOSS_CTR_loss_rx_ctrl)
			       : (cls == DP_LOSS_DATA ? DP_LOSS_CTR_loss_tx_data
						      : DP_LOSS_CTR_loss_tx_ctrl)]++;
	return drop;
}
