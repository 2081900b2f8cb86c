// SPDX-License-Identifier: MIT
/*
 * fuzz_session.c — libFuzzer over the server session state machine
 * (dataplane/session.h) with one session table, the no-model scheduler and
 * an injected clock.
 *
 * The input is a script of records: op (1 byte), length (2 bytes LE),
 * payload.  Ops (op % 8):
 *   0  raw datagram from a stranger (payload as is)
 *   1  LOGON sealed with the test key by friend f (payload: f, flags,
 *      timestamp offset (s, signed), mtu (2), heartbeat (2), client name)
 *   2  session datagram sealed by friend f (payload: f, header flags,
 *      msg_count (2), pkt_num delta (1), then the message bytes as is): the
 *      fuzzer gets past the tag and into message parsing
 *   3  the last sealed datagram again, from the stranger (a replay)
 *   4  the last sealed datagram again, from its friend (a replay)
 *   5  advance the clock (payload: u16 milliseconds)
 *   6  one scheduler step and the responses back
 *   7  timers (heartbeats, timeouts, reassembly)
 * Invariants checked (abort = a finding):
 *   - nothing is ever sent to the stranger's address (unauthenticated
 *     senders get zero bytes).  One exception, inherent to answering the
 *     source address of an authenticated datagram (WireGuard roams the
 *     same way): a genuine datagram that velod never consumed (dropped
 *     over the rate limit, or a LOGON stamped ahead of the window that
 *     has become fresh since), re-sent from the stranger's address, is
 *     authentic there; from then on the stranger is trusted.  "Consumed"
 *     is read from the server's state: the LOGON's nonce is in the cache,
 *     or the packet number is marked in the session's window;
 *   - every datagram velod sends verifies under a key its friend holds;
 *   - after closing every session and draining the scheduler, no session,
 *     request slot or reassembly buffer is left in use.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>

#include <velo/auth.h>
#include <velo/codec.h>
#include <velo/compiler.h>

#include "../../dataplane/ring.h"
#include "../../dataplane/session.h"
#include "../../dataplane/sock.h"
#include "../../engine/sched.h"
#include "../../tools/lib/log.h"

#define FRIENDS 3
#define REAL0 1800000000000000000ull
#define MONO0 1000000000000ull

#define KNOWN 8

struct friend {
	struct dp_addr addr;
	uint8_t cnonce[PROTO_NONCE_LEN];	/* of the latest LOGON */
	bool have_nonce;
	uint64_t sid;				/* latest session */
	struct velo_session_keys sk;
	uint64_t pkt;
	uint64_t seq;
	struct {				/* every session it got */
		uint64_t sid;
		struct velo_session_keys sk;
	} known[KNOWN];
	unsigned n_known;
};

static struct velo_psk psk = { .key_id = 7 };
static struct velo_session_keys logon_keys;
static struct dp_addr stranger;
static struct friend fr[FRIENDS];
static struct dp_rings rings;
static struct dp_txq txq;
static struct dp_sess_table T;
static struct eng_sched sched;
static uint64_t mono, real, nonce_ctr;
static _Alignas(8) uint8_t last[PROTO_MTU_MAX];
static size_t last_len;
static int last_friend = -1;
static bool last_consumed;	/* the last sealed datagram was consumed */
static bool stranger_trusted;
static unsigned op_index;	/* for the report of a broken invariant */

static struct dp_addr addr_v4(uint32_t ip, uint16_t port)
{
	struct dp_addr a;

	memset(&a, 0, sizeof(a));
	a.u.in4.sin_family = AF_INET;
	a.u.in4.sin_addr.s_addr = htonl(ip);
	a.u.in4.sin_port = htons(port);
	a.len = sizeof(a.u.in4);
	return a;
}

static void die(const char *why)
{
	fprintf(stderr, "fuzz_session: invariant broken at op %u: %s\n",
		op_index, why);
	abort();
}

/* Learn LOGON_ACKs; check that every datagram sent verifies under a key
 * its receiver holds. */
static void check_tx(const struct dp_pkt *p)
{
	struct proto_pkt_view v;
	struct proto_msg_iter it;
	struct proto_msg m;
	struct proto_logon_ack ack;
	struct friend *f = NULL;

	if (dp_addr_eq(&p->addr, &stranger)) {
		if (!stranger_trusted)
			die("bytes sent to an unauthenticated sender");
		return;
	}
	for (int i = 0; i < FRIENDS; i++)
		if (dp_addr_eq(&p->addr, &fr[i].addr))
			f = &fr[i];
	if (!f)
		die("datagram to an address nobody used");
	if (proto_pkt_parse(p->data, p->len, PROTO_MTU_MAX, &v))
		die("server datagram does not parse");
	if (!(v.hdr->flags & PROTO_F_S2C) || !(v.hdr->flags & PROTO_F_AUTH))
		die("server datagram without S2C|AUTH");
	proto_msg_iter_init(&it, &v);
	if (v.hdr->flags & PROTO_F_CTRL && proto_msg_next(&it, &m) == 1) {
		if (m.template_id == PROTO_T_LOGON_ACK) {
			if (proto_block_get(&m, &ack, sizeof(ack), sizeof(ack)) ||
			    velo_auth_open(&logon_keys.s2c, p->data, p->len,
					   ack.server_nonce))
				die("LOGON_ACK does not verify");
			f->sid = ack.session_id;
			velo_auth_session_keys(&psk, f->cnonce, ack.server_nonce,
					       f->sid, (enum velo_suite)ack.suite,
					       &f->sk);
			f->pkt = 1;
			f->seq = 1;
			f->known[f->n_known % KNOWN].sid = f->sid;
			f->known[f->n_known % KNOWN].sk = f->sk;
			f->n_known++;
			return;
		}
		if (m.template_id == PROTO_T_LOGON_REJECT) {
			if (!f->have_nonce ||
			    velo_auth_open(&logon_keys.s2c, p->data, p->len, f->cnonce))
				die("LOGON_REJECT does not verify");
			return;
		}
	}
	for (unsigned i = 0; i < MIN(f->n_known, (unsigned)KNOWN); i++)
		if (f->known[i].sid == v.hdr->session_id &&
		    !velo_auth_open(&f->known[i].sk.s2c, p->data, p->len, NULL))
			return;
	if (f->n_known > KNOWN)
		return;		/* an old session whose keys were dropped */
	die("server datagram does not verify under any key of its receiver");
}

static void cap_flush(struct dp_txq *q, void *arg)
{
	(void)arg;
	for (unsigned i = 0; i < q->n; i++)
		check_tx(&q->pkts[i]);
	q->n = 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	log_set_spec("err");
	if (velo_auth_init())
		abort();
	for (unsigned i = 0; i < VELO_KEY_LEN; i++)
		psk.key[i] = (uint8_t)(3 * i + 1);
	velo_auth_logon_keys(&psk, &logon_keys);
	stranger = addr_v4(0xc0000201, 6666);
	return 0;
}

static void h_flush(void)
{
	dp_sess_flush(&T);
	dp_txq_flush(&txq);
}

static void h_rx(const uint8_t *b, size_t len, const struct dp_addr *from)
{
	static _Alignas(8) uint8_t copy[PROTO_MTU_MAX + 64];

	if (len > sizeof(copy))
		len = sizeof(copy);
	memcpy(copy, b, len);
	dp_sess_rx(&T, copy, len, from);
	h_flush();
}

static void keep_last(const uint8_t *b, size_t len, int f)
{
	memcpy(last, b, len);
	last_len = len;
	last_friend = f;
}

/* Did the server consume this sealed datagram (so that no copy of it can
 * ever be accepted again)? */
static bool consumed(const uint8_t *b)
{
	const struct proto_pkt_hdr *h = (const struct proto_pkt_hdr *)b;
	struct dp_sess *s;

	if (h->session_id == 0) {
		const struct proto_logon *l = (const struct proto_logon *)
			(b + sizeof(*h) + sizeof(struct proto_msg_hdr));

		for (unsigned i = 0; i < T.nonce_used; i++)
			if (!memcmp(T.nonces[i].nonce, l->client_nonce,
				    PROTO_NONCE_LEN))
				return true;
		return false;
	}
	s = dp_sess_lookup(&T, h->session_id);
	return !s || !velo_replay_check(&s->rx_win, h->pkt_num);
}

static void friend_rx(const uint8_t *b, size_t len, const struct dp_addr *from)
{
	h_rx(b, len, from);
	last_consumed = consumed(b);
}

static void op_logon(const uint8_t *p, size_t n)
{
	_Alignas(8) uint8_t b[PROTO_MTU_MAX];
	struct proto_pkt_hdr h = { .magic = PROTO_MAGIC, .version = PROTO_VERSION,
				   .flags = PROTO_F_CTRL, .pkt_num = 1 };
	struct friend *f;
	struct proto_enc e;
	struct proto_logon *l;
	int16_t ts_s = 0;
	int len;

	if (n < 8)
		return;
	f = &fr[p[0] % FRIENDS];
	memcpy(&ts_s, p + 2, 2);
	/* Deterministic nonces: a counter under the key's hash. */
	nonce_ctr++;
	memset(f->cnonce, 0, sizeof(f->cnonce));
	memcpy(f->cnonce, &nonce_ctr, sizeof(nonce_ctr));
	f->cnonce[15] = 0xa5;
	f->have_nonce = true;
	proto_enc_init(&e, b, sizeof(b), &h);
	l = proto_enc_msg_begin(&e, PROTO_T_LOGON, sizeof(*l));
	if (!l)
		return;
	l->key_id = (p[1] & 0x80) ? 8 : psk.key_id;
	l->timestamp_ns = real + (int64_t)ts_s * 1000000000ll;
	memcpy(l->client_nonce, f->cnonce, PROTO_NONCE_LEN);
	memcpy(&l->mtu, p + 4, 2);
	{
		uint16_t hb;

		memcpy(&hb, p + 6, 2);
		l->heartbeat_ms = hb;
	}
	l->flags = p[1] & 3;
	proto_enc_var(&e, p + 8, MIN(n - 8, 64));
	proto_enc_msg_end(&e);
	len = proto_enc_finish(&e, PROTO_TAG_LEN);
	if (len < 0)
		return;
	velo_auth_seal(&logon_keys.c2s, b, (size_t)len, f->cnonce);
	keep_last(b, (size_t)len, (int)(f - fr));
	friend_rx(b, (size_t)len, &f->addr);
}

static void op_session(const uint8_t *p, size_t n)
{
	_Alignas(8) uint8_t b[PROTO_MTU_MAX];
	struct proto_pkt_hdr *h = (struct proto_pkt_hdr *)b;
	struct friend *f;
	size_t body, len;
	uint16_t count;

	if (n < 5)
		return;
	f = &fr[p[0] % FRIENDS];
	memcpy(&count, p + 2, 2);
	body = MIN(n - 5, (size_t)PROTO_MTU_MAX - sizeof(*h) - PROTO_TAG_LEN);
	body &= ~(size_t)7;
	len = sizeof(*h) + body + PROTO_TAG_LEN;
	memset(h, 0, sizeof(*h));
	h->magic = PROTO_MAGIC;
	h->version = PROTO_VERSION;
	h->flags = (uint8_t)((p[1] & (PROTO_F_CTRL | PROTO_F_RETRANS | 0x40)) |
			     PROTO_F_AUTH);
	h->msg_count = count;
	h->length = (uint16_t)len;
	h->session_id = f->sid;
	h->seq = f->seq;
	h->ack = 1;
	/* Usually the next packet number; sometimes a jump or a repeat. */
	f->pkt += p[4] < 200 ? 1 : (uint64_t)(p[4] - 200) * 100;
	if (p[4] == 255)
		f->pkt -= 2;
	h->pkt_num = f->pkt;
	memcpy(b + sizeof(*h), p + 5, body);
	memset(b + sizeof(*h) + body, 0, PROTO_TAG_LEN);
	if (!(h->flags & PROTO_F_CTRL) && count && count != PROTO_COUNT_END)
		f->seq += count;
	if (f->sid) {
		velo_auth_seal(&f->sk.c2s, b, len, NULL);
		keep_last(b, len, (int)(f - fr));
		friend_rx(b, len, &f->addr);
	} else {
		keep_last(b, len, (int)(f - fr));
		h_rx(b, len, &f->addr);		/* not sealed: no session yet */
		last_consumed = true;
	}
}

static void drain(void)
{
	for (int i = 0; i < 64; i++) {
		unsigned a = eng_sched_poll(&sched);
		unsigned b = dp_sess_resp_poll(&T, 64);

		h_flush();
		if (!a && !b)
			break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct dp_sess_config c;
	struct dp_rings_config rc = { .slots = 6, .prompt_tokens_max = 256,
				      .text_bytes_max = 2048, .resp_entries = 16 };
	/* resp_entries: the scheduler needs room for one request's worst case
	 * (SCHED_FINISH_RECORDS_MAX) before it takes the request. */
	struct eng_sched_config ec;

	dp_sess_config_default(&c);
	c.sessions_max = 3;
	c.replay_depth = 6;
	c.heartbeat_ms = 50;
	c.timeout_ms = 400;
	c.credit_requests = 3;
	c.credit_tokens = 3000;
	c.dedup_ids = 8;
	c.frag_buffers = 2;
	c.frag_bytes = 2048;
	c.frag_timeout_ms = 200;
	c.nonce_cache = 8;
	c.logon_rate_pps = 1000;
	c.logon_rate_burst = 4;
	c.rate_pps = 100000;
	c.rate_burst = 64;
	c.limits.prompt_tokens_max = 256;
	c.limits.text_bytes_max = 2048;
	c.limits.max_tokens_max = 512;
	c.limits.vocab_size = 1000;
	if (dp_rings_init(&rings, &rc))
		abort();
	eng_sched_config_default(&ec);
	if (eng_sched_init(&sched, &ec, &rings, false) ||
	    dp_txq_init(&txq, 4, PROTO_MTU_MAX, cap_flush, NULL) ||
	    dp_sess_init(&T, &c, &psk, 1, &rings, &txq, false))
		abort();
	mono = MONO0;
	real = REAL0;
	nonce_ctr = 0;
	last_len = 0;
	last_friend = -1;
	last_consumed = true;
	stranger_trusted = false;
	memset(fr, 0, sizeof(fr));
	for (int i = 0; i < FRIENDS; i++)
		fr[i].addr = addr_v4(0x0a000001u + (uint32_t)i, (uint16_t)(1000 + i));
	dp_sess_clock(&T, mono, real);

	for (op_index = 0; size >= 3; op_index++) {
		uint8_t op = data[0];
		size_t n = (size_t)data[1] | (size_t)data[2] << 8;

		data += 3;
		size -= 3;
		if (n > size)
			n = size;
		switch (op % 8) {
		case 0:
			h_rx(data, n, &stranger);
			break;
		case 1:
			op_logon(data, n);
			break;
		case 2:
			op_session(data, n);
			break;
		case 3:
			if (last_len) {
				stranger_trusted |= !last_consumed;
				h_rx(last, last_len, &stranger);
			}
			break;
		case 4:
			if (last_len && last_friend >= 0)
				friend_rx(last, last_len, &fr[last_friend].addr);
			break;
		case 5: {
			uint16_t ms = 0;

			memcpy(&ms, data, MIN(n, (size_t)2));
			mono += (uint64_t)ms * 1000000ull;
			real += (uint64_t)ms * 1000000ull;
			dp_sess_clock(&T, mono, real);
			break;
		}
		case 6:
			eng_sched_poll(&sched);
			dp_sess_resp_poll(&T, 64);
			h_flush();
			break;
		case 7:
			dp_sess_tick(&T);
			h_flush();
			break;
		}
		data += n;
		size -= n;
	}

	/* FUZZ_SESSION_DUMP=1: what an input reached (corpus upkeep). */
	if (getenv("FUZZ_SESSION_DUMP")) {
		for (int i = 0; i < DP_CTR__COUNT; i++)
			if (T.dp_ctr[i])
				fprintf(stderr, "dp.%s %llu\n", dp_ctr_desc[i].name,
					(unsigned long long)T.dp_ctr[i]);
		for (int i = 0; i < SESS_CTR__COUNT; i++)
			if (T.ctr[i])
				fprintf(stderr, "sess.%s %llu\n", sess_ctr_desc[i].name,
					(unsigned long long)T.ctr[i]);
	}
	/* Nothing may leak: close everything, drain the scheduler. */
	drain();
	dp_sess_close_all(&T);
	dp_txq_flush(&txq);
	drain();
	mono += 10ull * 1000000000ull;
	dp_sess_clock(&T, mono, real);
	dp_sess_tick(&T);
	h_flush();
	if (T.n_active || T.n_free_slots != c.sessions_max)
		die("session slots leaked");
	if (dp_rings_slots_in_use(&rings))
		die("request slots leaked");
	if (dp_sess_frags_used(&T))
		die("reassembly buffers leaked");

	dp_sess_fini(&T);
	dp_txq_fini(&txq);
	eng_sched_fini(&sched);
	dp_rings_fini(&rings);
	return 0;
}
