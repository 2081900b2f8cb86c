// SPDX-License-Identifier: MIT
/*
 * test_session.c — the server session layer (dataplane/session.h) driven
 * datagram by datagram with an injected clock: logon (good, bad tag, stale,
 * replayed, unknown key, table full, rate limit), every drop reason the
 * session layer owns (each bumps exactly one dp.drop_* and sends nothing to
 * an unauthenticated sender), the replay window, heartbeats and timeouts,
 * INFER through the rings to the no-model scheduler, request-id dedup,
 * credit, the replay buffer (RETRANSMIT_REQUEST, GAP_FILL), CANCEL,
 * fragment reassembly, LOGOUT, and no allocation on the receive path.
 *
 * The client side is written here from the codec and auth APIs (not the
 * client library), so a mistake shared by both sides of velo's own code
 * would still have to agree with libsodium and the wire layout.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>

#include <cmocka.h>

#include <velo/auth.h>
#include <velo/codec.h>
#include <velo/compiler.h>

#include "../../dataplane/ring.h"
#include "../../dataplane/session.h"
#include "../../dataplane/sock.h"
#include "../../engine/sched.h"
#include "alloc_count.h"

#define MS 1000000ull
#define REAL0 1800000000000000000ull	/* wall clock of the tests */
#define MONO0 1000000000000ull

/* ------------------------------------------------------------------------
 * Harness: a session table whose txq is captured.
 */

struct cap {
	_Alignas(8) uint8_t data[PROTO_MTU_MAX];
	uint32_t len;
	struct dp_addr to;
};

static struct dp_rings rings;
static struct dp_txq txq;
static struct dp_sess_table T;
static struct eng_sched sched;
static struct cap caps[512];
static unsigned ncap;
static struct velo_psk psk = { .key_id = 7 };
static uint64_t mono = MONO0, real = REAL0;

static void cap_flush(struct dp_txq *q, void *arg)
{
	(void)arg;
	for (unsigned i = 0; i < q->n; i++) {
		assert_true(ncap < ARRAY_SIZE(caps));
		memcpy(caps[ncap].data, q->pkts[i].data, q->pkts[i].len);
		caps[ncap].len = q->pkts[i].len;
		caps[ncap].to = q->pkts[i].addr;
		ncap++;
	}
	q->n = 0;
}

static void small_config(struct dp_sess_config *c)
{
	dp_sess_config_default(c);
	c->sessions_max = 4;
	c->replay_depth = 8;
	c->heartbeat_ms = 100;
	c->timeout_ms = 1000;
	c->credit_requests = 4;
	c->credit_tokens = 10000;
	c->dedup_ids = 16;
	c->frag_buffers = 2;
	c->frag_bytes = 4096;
	c->frag_timeout_ms = 500;
	c->nonce_cache = 64;
	c->logon_rate_pps = 0;
	c->limits.prompt_tokens_max = 256;
	c->limits.text_bytes_max = 2048;
	c->limits.max_tokens_max = 512;
}

static void h_start(const struct dp_sess_config *c)
{
	struct dp_rings_config rc = { .slots = 8, .prompt_tokens_max = 256,
				      .text_bytes_max = 2048, .resp_entries = 16 };
	struct eng_sched_config ec;

	for (unsigned i = 0; i < VELO_KEY_LEN; i++)
		psk.key[i] = (uint8_t)(3 * i + 1);
	assert_int_equal(velo_auth_init(), 0);
	assert_int_equal(dp_rings_init(&rings, &rc), 0);
	eng_sched_config_default(&ec);
	assert_int_equal(eng_sched_init(&sched, &ec, &rings, false), 0);
	assert_int_equal(dp_txq_init(&txq, 8, PROTO_MTU_MAX, cap_flush, NULL), 0);
	assert_int_equal(dp_sess_init(&T, c, &psk, 1, &rings, &txq, false), 0);
	mono = MONO0;
	real = REAL0;
	dp_sess_clock(&T, mono, real);
	ncap = 0;
}

static int teardown(void **state)
{
	(void)state;
	dp_sess_fini(&T);
	dp_txq_fini(&txq);
	eng_sched_fini(&sched);
	dp_rings_fini(&rings);
	return 0;
}

static void h_clock(uint64_t advance_ns)
{
	mono += advance_ns;
	real += advance_ns;
	dp_sess_clock(&T, mono, real);
}

/* What the dataplane loop does after a datagram. */
static void h_rx(const uint8_t *b, size_t len, const struct dp_addr *from)
{
	_Alignas(8) uint8_t copy[PROTO_MTU_MAX + 64];

	assert_true(len <= sizeof(copy));
	memcpy(copy, b, len);
	dp_sess_rx(&T, copy, len, from);
	dp_sess_flush(&T);
	dp_txq_flush(&txq);
}

/* Scheduler then dataplane: answers come back. */
static void h_engine(void)
{
	eng_sched_poll(&sched);
	dp_sess_resp_poll(&T, 64);
	dp_sess_flush(&T);
	dp_txq_flush(&txq);
}

static void h_tick(void)
{
	dp_sess_tick(&T);
	dp_sess_flush(&T);
	dp_txq_flush(&txq);
}

static uint64_t drops_total(void)
{
	uint64_t n = 0;

	for (int i = DP_CTR_drop_short; i < DP_CTR__COUNT; i++)
		n += T.dp_ctr[i];
	return n;
}

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

/* ------------------------------------------------------------------------
 * A client written from the codec and auth APIs.
 */

struct tcli {
	struct dp_addr addr;
	struct velo_session_keys lk;	/* logon keys */
	struct velo_session_keys sk;	/* session keys */
	uint8_t cnonce[PROTO_NONCE_LEN];
	struct proto_logon_ack ack;
	uint64_t sid;
	uint64_t pkt;			/* next packet number */
	uint64_t seq;			/* next data seq */
	uint64_t next_s2c;		/* next server seq expected */
};

static _Alignas(8) uint8_t dg[PROTO_MTU_MAX + 64];

static void c_init(struct tcli *c, uint32_t ip)
{
	memset(c, 0, sizeof(*c));
	c->addr = addr_v4(ip, 40000);
	velo_auth_logon_keys(&psk, &c->lk);
	velo_random(c->cnonce, sizeof(c->cnonce));
	c->pkt = 1;
	c->seq = 1;
	c->next_s2c = 1;
}

static size_t c_logon_dgram(struct tcli *c, uint8_t *b, uint32_t key_id,
			    uint64_t ts, uint16_t mtu, uint32_t hb_ms)
{
	struct proto_pkt_hdr h = { .magic = PROTO_MAGIC, .version = PROTO_VERSION,
				   .flags = PROTO_F_CTRL, .pkt_num = 1 };
	struct proto_enc e;
	struct proto_logon *l;
	int len;

	proto_enc_init(&e, b, PROTO_MTU_MAX, &h);
	l = proto_enc_msg_begin(&e, PROTO_T_LOGON, sizeof(*l));
	l->key_id = key_id;
	l->heartbeat_ms = hb_ms;
	l->timestamp_ns = ts;
	memcpy(l->client_nonce, c->cnonce, PROTO_NONCE_LEN);
	l->mtu = mtu;
	l->flags = PROTO_LOGON_SUITE_CHACHA | PROTO_LOGON_SUITE_AESGCM;
	proto_enc_var(&e, "unit-test", 9);
	proto_enc_msg_end(&e);
	len = proto_enc_finish(&e, PROTO_TAG_LEN);
	assert_true(len > 0);
	assert_int_equal(velo_auth_seal(&c->lk.c2s, b, (size_t)len, c->cnonce), 0);
	return (size_t)len;
}

/* Open a server datagram: tag, framing.  Returns its first message. */
static int s_open(const struct velo_dir_key *k, const uint8_t *logon_nonce,
		  const struct cap *cp, struct proto_pkt_view *v,
		  struct proto_msg *m)
{
	struct proto_msg_iter it;

	if (velo_auth_open(k, cp->data, cp->len, logon_nonce))
		return -1;
	assert_int_equal(proto_pkt_parse(cp->data, cp->len, PROTO_MTU_MAX, v), 0);
	assert_true(v->hdr->flags & PROTO_F_S2C);
	proto_msg_iter_init(&it, v);
	return proto_msg_next(&it, m);
}

/* Log on; the server's LOGON_ACK is checked and the keys derived. */
static void c_logon(struct tcli *c, uint16_t mtu)
{
	struct proto_pkt_view v;
	struct proto_msg m;
	size_t len = c_logon_dgram(c, dg, psk.key_id, real, mtu, 0);
	unsigned n0 = ncap;

	h_rx(dg, len, &c->addr);
	assert_int_equal(ncap, n0 + 1);
	/* LOGON_ACK: tagged under the logon key with the server nonce, which
	 * is in the message: read it, then verify. */
	assert_int_equal(proto_pkt_parse(caps[n0].data, caps[n0].len,
					 PROTO_MTU_MAX, &v), 0);
	{
		struct proto_msg_iter it;

		proto_msg_iter_init(&it, &v);
		assert_int_equal(proto_msg_next(&it, &m), 1);
	}
	assert_int_equal(m.template_id, PROTO_T_LOGON_ACK);
	assert_int_equal(proto_block_get(&m, &c->ack, sizeof(c->ack), sizeof(c->ack)), 0);
	assert_int_equal(velo_auth_open(&c->lk.s2c, caps[n0].data, caps[n0].len,
					c->ack.server_nonce), 0);
	assert_true(memcmp(&caps[n0].to, &c->addr, sizeof(c->addr.u.in4)) == 0);
	assert_int_equal(v.hdr->session_id, c->ack.session_id);
	assert_int_equal(v.hdr->pkt_num, 1);
	c->sid = c->ack.session_id;
	velo_auth_session_keys(&psk, c->cnonce, c->ack.server_nonce, c->sid,
			       (enum velo_suite)c->ack.suite, &c->sk);
}

static void c_begin(struct tcli *c, struct proto_enc *e, uint8_t *b, bool ctrl)
{
	struct proto_pkt_hdr h = { .magic = PROTO_MAGIC, .version = PROTO_VERSION,
				   .flags = ctrl ? PROTO_F_CTRL : 0,
				   .session_id = c->sid, .seq = c->seq,
				   .ack = c->next_s2c, .pkt_num = c->pkt++ };

	proto_enc_init(e, b, PROTO_MTU_MAX, &h);
}

static size_t c_end(struct tcli *c, struct proto_enc *e)
{
	struct proto_pkt_hdr *h = (struct proto_pkt_hdr *)e->buf;
	int len = proto_enc_finish(e, PROTO_TAG_LEN);

	assert_true(len > 0);
	if (!(h->flags & PROTO_F_CTRL) && e->count)
		c->seq += e->count;
	assert_int_equal(velo_auth_seal(&c->sk.c2s, e->buf, (size_t)len, NULL), 0);
	return (size_t)len;
}

/* One message with a root block only. */
static size_t c_block(struct tcli *c, uint8_t *b, bool ctrl, unsigned tid,
		      const void *blk, unsigned blen)
{
	struct proto_enc e;
	void *p;

	c_begin(c, &e, b, ctrl);
	p = proto_enc_msg_begin(&e, tid, blen);
	if (blen)
		memcpy(p, blk, blen);
	proto_enc_msg_end(&e);
	return c_end(c, &e);
}

static void c_send_block(struct tcli *c, bool ctrl, unsigned tid,
			 const void *blk, unsigned blen)
{
	h_rx(dg, c_block(c, dg, ctrl, tid, blk, blen), &c->addr);
}

static void infer_req(struct proto_infer_req *r, uint64_t rid,
		      const char *prompt, uint32_t max_tokens)
{
	memset(r, 0, sizeof(*r));
	r->f.request_id = rid;
	r->f.max_tokens = max_tokens;
	r->f.flags = PROTO_INFER_PROMPT_TEXT;
	r->f.temperature = 0.7f;
	r->prompt_text = prompt;
	r->prompt_text_len = strlen(prompt);
	r->model = "tiny";
}

static size_t c_infer_dgram(struct tcli *c, uint8_t *b, uint64_t rid,
			    const char *prompt, uint32_t max_tokens)
{
	struct proto_infer_req r;
	struct proto_enc e;

	infer_req(&r, rid, prompt, max_tokens);
	c_begin(c, &e, b, false);
	assert_int_equal(proto_enc_infer(&e, &r), 0);
	return c_end(c, &e);
}

static void c_infer(struct tcli *c, uint64_t rid, const char *prompt,
		    uint32_t max_tokens)
{
	h_rx(dg, c_infer_dgram(c, dg, rid, prompt, max_tokens), &c->addr);
}

/* A server session datagram: verified under the session key. */
struct sdg {
	struct proto_pkt_view v;
	struct proto_msg m;	/* first message (template 0 when none) */
	int n;			/* proto_msg_next result */
};

static struct sdg s_get(struct tcli *c, unsigned i)
{
	struct sdg d;

	memset(&d, 0, sizeof(d));
	assert_true(i < ncap);
	d.n = s_open(&c->sk.s2c, NULL, &caps[i], &d.v, &d.m);
	assert_true(d.n >= 0);
	assert_int_equal(d.v.hdr->session_id, c->sid);
	return d;
}

/* ------------------------------------------------------------------------
 * Logon.
 */

static void test_logon_ok(void **state)
{
	struct dp_sess_config c;
	struct tcli cl;
	struct dp_sess *s;

	(void)state;
	small_config(&c);
	h_start(&c);
	c_init(&cl, 0x7f000001);
	c_logon(&cl, 1200);
	assert_int_equal(T.ctr[SESS_CTR_logon_ok], 1);
	assert_int_equal(T.ctr[SESS_CTR_opened], 1);
	assert_int_equal(drops_total(), 0);
	assert_int_equal(cl.ack.heartbeat_ms, 100);	/* asked 0: default */
	assert_int_equal(cl.ack.session_timeout_ms, 1000);
	assert_int_equal(cl.ack.credit_requests, 4);
	assert_int_equal(cl.ack.credit_tokens, 10000);
	assert_int_equal(cl.ack.replay_msgs, 8);
	assert_int_equal(cl.ack.mtu, 1200);		/* min(client, server) */
	assert_true(cl.ack.suite == VELO_SUITE_CHACHA20_POLY1305 ||
		    cl.ack.suite == VELO_SUITE_AES256_GCM);
	assert_int_equal(cl.ack.server_time_ns, real);
	s = dp_sess_lookup(&T, cl.sid);
	assert_non_null(s);
	assert_int_equal(s->mtu, 1200);
	assert_string_equal(s->client_name, "unit-test");

	/* A second logon with the same key: a new session. */
	{
		struct tcli c2;

		c_init(&c2, 0x7f000001);
		c_logon(&c2, 0);
		assert_true(c2.sid != cl.sid);
		assert_int_equal(c2.ack.mtu, CONFIG_DP_MTU);
		assert_int_equal(T.n_active, 2);
	}
}

static void expect_silent_drop(const uint8_t *b, size_t len,
			       const struct dp_addr *from, int reason)
{
	uint64_t before = T.dp_ctr[DP_CTR_drop_short + reason - PROTO_DROP_short];
	uint64_t total = drops_total();
	unsigned n0 = ncap;

	h_rx(b, len, from);
	assert_int_equal(T.dp_ctr[DP_CTR_drop_short + reason - PROTO_DROP_short],
			 before + 1);
	assert_int_equal(drops_total(), total + 1);
	assert_int_equal(ncap, n0);	/* zero bytes back */
}

static void test_logon_rejections(void **state)
{
	struct dp_sess_config c;
	struct tcli cl;
	size_t len;

	(void)state;
	small_config(&c);
	h_start(&c);
	c_init(&cl, 0x0a000001);

	/* Bad tag. */
	len = c_logon_dgram(&cl, dg, psk.key_id, real, 0, 0);
	dg[len - 1] ^= 1;
	expect_silent_drop(dg, len, &cl.addr, PROTO_DROP_bad_tag);
	/* A header byte changed after sealing (the tag covers it). */
	len = c_logon_dgram(&cl, dg, psk.key_id, real, 0, 0);
	((struct proto_pkt_hdr *)dg)->ack ^= 1;
	expect_silent_drop(dg, len, &cl.addr, PROTO_DROP_bad_tag);
	/* Unknown key id. */
	len = c_logon_dgram(&cl, dg, 999, real, 0, 0);
	expect_silent_drop(dg, len, &cl.addr, PROTO_DROP_unknown_session);
	/* Stale, either side of the window (30 s). */
	len = c_logon_dgram(&cl, dg, psk.key_id, real - 31000 * MS, 0, 0);
	expect_silent_drop(dg, len, &cl.addr, PROTO_DROP_stale_logon);
	len = c_logon_dgram(&cl, dg, psk.key_id, real + 31000 * MS, 0, 0);
	expect_silent_drop(dg, len, &cl.addr, PROTO_DROP_stale_logon);
	/* Not marked control, or marked server-to-client. */
	len = c_logon_dgram(&cl, dg, psk.key_id, real, 0, 0);
	((struct proto_pkt_hdr *)dg)->flags |= PROTO_F_S2C;
	expect_silent_drop(dg, len, &cl.addr, PROTO_DROP_bad_flags);
	assert_int_equal(T.n_active, 0);

	/* Inside the window: accepted once; the same datagram again (a
	 * replay, from anywhere) is dropped. */
	len = c_logon_dgram(&cl, dg, psk.key_id, real - 29000 * MS, 0, 0);
	{
		_Alignas(8) uint8_t copy[256];

		memcpy(copy, dg, len);
		h_rx(dg, len, &cl.addr);
		assert_int_equal(ncap, 1);
		assert_int_equal(T.n_active, 1);
		h_clock(5 * MS);
		expect_silent_drop(copy, len, &cl.addr, PROTO_DROP_replay);
		{
			struct dp_addr other = addr_v4(0x0b000002, 999);

			expect_silent_drop(copy, len, &other, PROTO_DROP_replay);
		}
		assert_int_equal(T.n_active, 1);
	}
	assert_int_equal(T.ctr[SESS_CTR_logon_ok], 1);
}

static void test_logon_table_full(void **state)
{
	struct dp_sess_config c;
	struct tcli cl[3];
	struct proto_pkt_view v;
	struct proto_msg m;
	struct proto_logon_reject rj;
	size_t len;

	(void)state;
	small_config(&c);
	c.sessions_max = 2;
	h_start(&c);
	c_init(&cl[0], 1);
	c_logon(&cl[0], 0);
	c_init(&cl[1], 2);
	c_logon(&cl[1], 0);
	c_init(&cl[2], 3);
	len = c_logon_dgram(&cl[2], dg, psk.key_id, real, 0, 0);
	h_rx(dg, len, &cl[2].addr);
	assert_int_equal(ncap, 3);
	assert_int_equal(T.dp_ctr[DP_CTR_drop_no_buffer], 1);
	assert_int_equal(T.ctr[SESS_CTR_logon_rejected], 1);
	/* LOGON_REJECT: logon s2c key, the client's nonce. */
	assert_int_equal(s_open(&cl[2].lk.s2c, cl[2].cnonce, &caps[2], &v, &m), 1);
	assert_int_equal(m.template_id, PROTO_T_LOGON_REJECT);
	assert_int_equal(v.hdr->session_id, 0);
	assert_int_equal(proto_block_get(&m, &rj, sizeof(rj), 2), 0);
	assert_int_equal(rj.code, PROTO_E_OVERLOADED);
	/* A session leaves: the next logon gets its slot. */
	c_send_block(&cl[0], true, PROTO_T_LOGOUT, &(struct proto_logout){ 0 },
		     sizeof(struct proto_logout));
	assert_int_equal(T.n_active, 1);
	c_init(&cl[2], 3);
	c_logon(&cl[2], 0);
	assert_int_equal(T.n_active, 2);
}

/* The nonce cache full of fresh entries: the logon is dropped unanswered
 * (an answered logon whose nonce is not remembered could be replayed). */
static void test_logon_nonce_cache_full(void **state)
{
	struct dp_sess_config c;
	struct tcli cl;
	size_t len;

	(void)state;
	small_config(&c);
	c.nonce_cache = 2;
	h_start(&c);
	c_init(&cl, 1);
	c_logon(&cl, 0);
	c_init(&cl, 2);
	c_logon(&cl, 0);
	c_init(&cl, 3);
	len = c_logon_dgram(&cl, dg, psk.key_id, real, 0, 0);
	expect_silent_drop(dg, len, &cl.addr, PROTO_DROP_no_buffer);
	assert_int_equal(T.ctr[SESS_CTR_nonce_cache_full], 1);
	/* Two windows later the oldest nonces may go. */
	h_clock(60001 * MS);
	c_init(&cl, 3);
	c_logon(&cl, 0);
	assert_int_equal(T.ctr[SESS_CTR_logon_ok], 3);
}

static void test_logon_rate_limit(void **state)
{
	struct dp_sess_config c;
	struct tcli cl;
	size_t len;

	(void)state;
	small_config(&c);
	c.sessions_max = 16;
	c.logon_rate_pps = 10;
	c.logon_rate_burst = 3;
	h_start(&c);
	for (int i = 0; i < 3; i++) {
		c_init(&cl, 0x0a000005);
		cl.addr.u.in4.sin_port = htons((uint16_t)(1000 + i)); /* port ignored */
		c_logon(&cl, 0);
	}
	c_init(&cl, 0x0a000005);
	len = c_logon_dgram(&cl, dg, psk.key_id, real, 0, 0);
	expect_silent_drop(dg, len, &cl.addr, PROTO_DROP_rate_limit);
	/* Another address has its own bucket. */
	c_init(&cl, 0x0a000006);
	c_logon(&cl, 0);
	/* 100 ms later one more fits. */
	h_clock(100 * MS);
	c_init(&cl, 0x0a000005);
	c_logon(&cl, 0);
	assert_int_equal(T.ctr[SESS_CTR_logon_ok], 5);
}

/* ------------------------------------------------------------------------
 * Session datagrams: every drop reason.
 */

static void test_session_drops(void **state)
{
	struct dp_sess_config c;
	struct tcli cl;
	struct dp_addr stranger = addr_v4(0xc0000201, 6666);
	size_t len;

	(void)state;
	small_config(&c);
	h_start(&c);
	c_init(&cl, 0x7f000001);
	c_logon(&cl, 512);
	ncap = 0;

	/* Framing, before any lookup. */
	memset(dg, 0, 64);
	expect_silent_drop(dg, 40, &stranger, PROTO_DROP_short);
	len = c_block(&cl, dg, true, PROTO_T_TEST_REQUEST,
		      &(struct proto_test_request){ 1, 2 },
		      sizeof(struct proto_test_request));
	((struct proto_pkt_hdr *)dg)->magic ^= 1;
	expect_silent_drop(dg, len, &stranger, PROTO_DROP_bad_magic);
	((struct proto_pkt_hdr *)dg)->magic ^= 1;
	((struct proto_pkt_hdr *)dg)->version = 9;
	expect_silent_drop(dg, len, &stranger, PROTO_DROP_bad_version);
	((struct proto_pkt_hdr *)dg)->version = PROTO_VERSION;
	((struct proto_pkt_hdr *)dg)->length += 8;
	expect_silent_drop(dg, len, &stranger, PROTO_DROP_bad_length);
	((struct proto_pkt_hdr *)dg)->length -= 8;
	((struct proto_pkt_hdr *)dg)->flags |= 0x40;
	expect_silent_drop(dg, len, &stranger, PROTO_DROP_bad_flags);
	((struct proto_pkt_hdr *)dg)->flags &= ~0x40;
	((struct proto_pkt_hdr *)dg)->msg_count = 40;
	expect_silent_drop(dg, len, &stranger, PROTO_DROP_bad_count);
	((struct proto_pkt_hdr *)dg)->msg_count = 1;

	/* Unknown session; direction flag wrong; bad tag (forged); oversize
	 * for the negotiated 512-byte MTU. */
	((struct proto_pkt_hdr *)dg)->session_id ^= 0x10000;
	expect_silent_drop(dg, len, &stranger, PROTO_DROP_unknown_session);
	((struct proto_pkt_hdr *)dg)->session_id ^= 0x10000;
	((struct proto_pkt_hdr *)dg)->flags |= PROTO_F_S2C;
	expect_silent_drop(dg, len, &stranger, PROTO_DROP_bad_flags);
	((struct proto_pkt_hdr *)dg)->flags &= ~PROTO_F_S2C;
	dg[len - 3] ^= 0x80;
	expect_silent_drop(dg, len, &stranger, PROTO_DROP_bad_tag);
	dg[len - 3] ^= 0x80;
	{
		struct proto_enc e;
		void *p;

		c_begin(&cl, &e, dg, false);
		p = proto_enc_msg_begin(&e, PROTO_T_STATUS_REQUEST, 600);
		assert_non_null(p);
		proto_enc_msg_end(&e);
		expect_silent_drop(dg, c_end(&cl, &e), &stranger, PROTO_DROP_oversize);
	}
	assert_int_equal(T.ctr[SESS_CTR_test_requests], 0);

	/* The genuine datagram from the stranger's address: accepted (the
	 * peer moves), answered there. */
	len = c_block(&cl, dg, true, PROTO_T_TEST_REQUEST,
		      &(struct proto_test_request){ 1, 2 },
		      sizeof(struct proto_test_request));
	{
		_Alignas(8) uint8_t copy[256];

		memcpy(copy, dg, len);
		h_rx(dg, len, &stranger);
		assert_int_equal(ncap, 1);
		assert_int_equal(T.ctr[SESS_CTR_peer_moved], 1);
		/* And again: replayed packet number. */
		expect_silent_drop(copy, len, &cl.addr, PROTO_DROP_replay);
	}
	c_send_block(&cl, true, PROTO_T_TEST_REQUEST,
		     &(struct proto_test_request){ 1, 2 },
		     sizeof(struct proto_test_request));
	assert_int_equal(T.ctr[SESS_CTR_peer_moved], 2);	/* and back */

	/* Authenticated, but the body is wrong: counted, no answer. */
	ncap = 0;
	{
		uint64_t total = drops_total();

		c_send_block(&cl, false, PROTO_T_ACCEPT, &(struct proto_accept){ 0 },
			     sizeof(struct proto_accept));
		assert_int_equal(T.dp_ctr[DP_CTR_drop_wrong_direction], 1);
		c_send_block(&cl, false, 1234, "abcdefgh", 8);
		assert_int_equal(T.dp_ctr[DP_CTR_drop_unknown_template], 1);
		c_send_block(&cl, true, PROTO_T_TEST_REQUEST, "abc", 3);
		assert_int_equal(T.dp_ctr[DP_CTR_drop_short_block], 1);
		c_send_block(&cl, false, PROTO_T_LOGON, "abcdefgh", 8);
		assert_int_equal(T.dp_ctr[DP_CTR_drop_wrong_direction], 2);
		/* A frame whose length runs past the datagram. */
		{
			struct proto_enc e;

			c_begin(&cl, &e, dg, false);
			proto_enc_msg_begin(&e, PROTO_T_STATUS_REQUEST, 0);
			proto_enc_msg_end(&e);
			((struct proto_msg_hdr *)(dg + sizeof(struct proto_pkt_hdr)))->length = 64;
			h_rx(dg, c_end(&cl, &e), &cl.addr);
			assert_int_equal(T.dp_ctr[DP_CTR_drop_bad_msg_length], 1);
		}
		assert_int_equal(drops_total(), total + 5);
		assert_int_equal(ncap, 0);
	}
}

static void expect_reject(struct tcli *cl, unsigned i, uint64_t rid,
			  unsigned code, uint64_t seq);

/* The per-session rate limit, and the body classes the decoder owns, seen
 * through the session: each counted once, INFERs answered REJECT. */
static void test_session_drops_body(void **state)
{
	struct dp_sess_config c;
	struct tcli cl;
	struct proto_infer_req r;
	struct proto_enc e;

	(void)state;
	small_config(&c);
	c.rate_pps = 1000;
	c.rate_burst = 4;
	c.limits.vocab_size = 100;
	h_start(&c);
	c_init(&cl, 0x7f000001);
	c_logon(&cl, 0);
	ncap = 0;
	/* Rate: 4 back to back, the 5th dropped before the tag; 1 ms later
	 * one more passes. */
	for (int i = 0; i < 4; i++)
		c_send_block(&cl, false, PROTO_T_STATUS_REQUEST, NULL, 0);
	expect_silent_drop(dg, c_block(&cl, dg, false, PROTO_T_STATUS_REQUEST,
				       NULL, 0), &cl.addr, PROTO_DROP_rate_limit);
	assert_int_equal(ncap, 4);
	h_clock(1 * MS);
	c_send_block(&cl, false, PROTO_T_STATUS_REQUEST, NULL, 0);
	assert_int_equal(ncap, 5);
	h_clock(100 * MS);

	/* Unknown schema. */
	c_begin(&cl, &e, dg, false);
	proto_enc_msg_begin(&e, PROTO_T_STATUS_REQUEST, 0);
	proto_enc_msg_end(&e);
	((struct proto_msg_hdr *)(dg + sizeof(struct proto_pkt_hdr)))->schema_id = 9;
	h_rx(dg, c_end(&cl, &e), &cl.addr);
	assert_int_equal(T.dp_ctr[DP_CTR_drop_bad_schema], 1);
	assert_int_equal(ncap, 5);

	/* INFER with invalid UTF-8, a token id outside the vocabulary, a
	 * group running past the message: counted and answered. */
	ncap = 0;
	infer_req(&r, 1, "ab\xff", 4);
	c_begin(&cl, &e, dg, false);
	assert_int_equal(proto_enc_infer(&e, &r), 0);
	h_rx(dg, c_end(&cl, &e), &cl.addr);
	assert_int_equal(T.dp_ctr[DP_CTR_drop_bad_utf8], 1);
	expect_reject(&cl, 0, 1, PROTO_E_INVALID, s_get(&cl, 0).v.hdr->seq);
	{
		static const uint32_t toks[] = { 5, 100 };

		infer_req(&r, 2, "", 4);
		r.f.flags = PROTO_INFER_PROMPT_TOKENS;
		r.prompt_text = NULL;
		r.prompt_text_len = 0;
		r.prompt_tokens = toks;
		r.n_prompt_tokens = 2;
		c_begin(&cl, &e, dg, false);
		assert_int_equal(proto_enc_infer(&e, &r), 0);
		h_rx(dg, c_end(&cl, &e), &cl.addr);
		assert_int_equal(T.dp_ctr[DP_CTR_drop_bad_token], 1);
		expect_reject(&cl, 1, 2, PROTO_E_INVALID_PARAM,
			      s_get(&cl, 1).v.hdr->seq);
	}
	{
		struct proto_infer *f;
		struct proto_group_hdr g = { .block_length = 4, .num_in_group = 500 };

		c_begin(&cl, &e, dg, false);
		f = proto_enc_msg_begin(&e, PROTO_T_INFER, sizeof(*f));
		f->request_id = 3;
		f->flags = PROTO_INFER_PROMPT_TOKENS;
		proto_enc_raw(&e, &g, sizeof(g));
		proto_enc_raw(&e, "abcdefgh", 8);
		proto_enc_msg_end(&e);
		h_rx(dg, c_end(&cl, &e), &cl.addr);
		assert_true(T.dp_ctr[DP_CTR_drop_truncated_group] +
			    T.dp_ctr[DP_CTR_drop_oversize] == 1);
		assert_int_equal(ncap, 3);
	}
	assert_int_equal(sched.ctr[ENG_SCHED_CTR_infer_rx], 0);
	assert_int_equal(dp_rings_slots_in_use(&rings), 0);
}

/* Packet numbers out of order are accepted once each; far behind: replay. */
static void test_replay_window(void **state)
{
	struct dp_sess_config c;
	struct tcli cl;
	uint64_t order[] = { 5, 3, 4, 2, 3000, 1000, 953, 952, 4000 };
	bool ok[] = { 1, 1, 1, 1, 1, 1, 1, 0, 1 };
	uint64_t seen = 0;

	(void)state;
	small_config(&c);
	h_start(&c);
	c_init(&cl, 0x7f000001);
	c_logon(&cl, 0);
	for (unsigned i = 0; i < ARRAY_SIZE(order); i++) {
		uint64_t drops = T.dp_ctr[DP_CTR_drop_replay];

		cl.pkt = order[i];
		c_send_block(&cl, false, PROTO_T_STATUS_REQUEST, NULL, 0);
		if (ok[i])
			seen++;
		assert_int_equal(T.ctr[SESS_CTR_status_requests], seen);
		assert_int_equal(T.dp_ctr[DP_CTR_drop_replay], drops + !ok[i]);
		/* Each accepted packet number, sent again: replay. */
		cl.pkt = order[i];
		c_send_block(&cl, false, PROTO_T_STATUS_REQUEST, NULL, 0);
		assert_int_equal(T.dp_ctr[DP_CTR_drop_replay], drops + 1 + !ok[i]);
	}
	(void)seen;
}

/* ------------------------------------------------------------------------
 * Heartbeats, timeouts, LOGOUT.
 */

static void test_heartbeat_timeout(void **state)
{
	struct dp_sess_config c;
	struct tcli cl;
	struct sdg d;

	(void)state;
	small_config(&c);
	h_start(&c);
	c_init(&cl, 0x7f000001);
	c_logon(&cl, 0);
	ncap = 0;
	h_clock(50 * MS);
	h_tick();
	assert_int_equal(ncap, 0);		/* not idle long enough */
	h_clock(50 * MS);
	h_tick();
	assert_int_equal(ncap, 1);		/* 100 ms without sending */
	d = s_get(&cl, 0);
	assert_int_equal(d.v.hdr->msg_count, PROTO_COUNT_HEARTBEAT);
	assert_true(d.v.hdr->flags & PROTO_F_CTRL);
	assert_int_equal(d.v.hdr->seq, 1);	/* the next seq */
	assert_int_equal(T.ctr[SESS_CTR_hb_tx], 1);
	h_tick();
	assert_int_equal(ncap, 1);		/* ticks are per millisecond */

	/* The client's heartbeat keeps the session alive. */
	h_clock(900 * MS);
	{
		struct proto_enc e;

		c_begin(&cl, &e, dg, true);
		h_rx(dg, c_end(&cl, &e), &cl.addr);
	}
	assert_int_equal(T.ctr[SESS_CTR_hb_rx], 1);
	h_clock(900 * MS);
	h_tick();
	assert_non_null(dp_sess_lookup(&T, cl.sid));
	/* 1 s of silence: closed, with an end-of-session datagram. */
	h_clock(101 * MS);
	ncap = 0;
	h_tick();
	assert_null(dp_sess_lookup(&T, cl.sid));
	assert_int_equal(T.ctr[SESS_CTR_timed_out], 1);
	assert_int_equal(T.n_active, 0);
	assert_int_equal(ncap, 1);
	d = s_get(&cl, 0);
	assert_int_equal(d.v.hdr->msg_count, PROTO_COUNT_END);
	/* Its datagrams are now unknown. */
	expect_silent_drop(dg, c_block(&cl, dg, false, PROTO_T_STATUS_REQUEST,
				       NULL, 0), &cl.addr,
			   PROTO_DROP_unknown_session);
}

static void test_logout_and_end(void **state)
{
	struct dp_sess_config c;
	struct tcli cl;
	struct sdg d;

	(void)state;
	small_config(&c);
	h_start(&c);
	c_init(&cl, 0x7f000001);
	c_logon(&cl, 0);
	ncap = 0;
	c_send_block(&cl, true, PROTO_T_LOGOUT, &(struct proto_logout){ 0 },
		     sizeof(struct proto_logout));
	assert_int_equal(ncap, 1);
	d = s_get(&cl, 0);
	assert_int_equal(d.v.hdr->msg_count, PROTO_COUNT_END);
	assert_int_equal(T.ctr[SESS_CTR_closed], 1);
	assert_int_equal(T.n_active, 0);

	/* The end-of-session count from the client closes too. */
	c_init(&cl, 0x7f000001);
	c_logon(&cl, 0);
	{
		struct proto_pkt_hdr h = { .magic = PROTO_MAGIC,
					   .version = PROTO_VERSION,
					   .flags = PROTO_F_CTRL,
					   .msg_count = PROTO_COUNT_END,
					   .session_id = cl.sid, .seq = 1,
					   .pkt_num = cl.pkt++ };
		struct proto_enc e;

		proto_enc_init(&e, dg, PROTO_MTU_MAX, &h);
		h_rx(dg, c_end(&cl, &e), &cl.addr);
	}
	assert_int_equal(T.ctr[SESS_CTR_closed], 2);
	assert_int_equal(T.n_active, 0);
}

static void test_test_request(void **state)
{
	struct dp_sess_config c;
	struct tcli cl;
	struct sdg d;
	struct proto_test_response r;

	(void)state;
	small_config(&c);
	h_start(&c);
	c_init(&cl, 0x7f000001);
	c_logon(&cl, 0);
	ncap = 0;
	c_send_block(&cl, true, PROTO_T_TEST_REQUEST,
		     &(struct proto_test_request){ 0xabc, 12345 },
		     sizeof(struct proto_test_request));
	assert_int_equal(ncap, 1);
	d = s_get(&cl, 0);
	assert_int_equal(d.m.template_id, PROTO_T_TEST_RESPONSE);
	assert_true(d.v.hdr->flags & PROTO_F_CTRL);
	assert_int_equal(proto_block_get(&d.m, &r, sizeof(r), sizeof(r)), 0);
	assert_int_equal(r.correlation_id, 0xabc);
	assert_int_equal(r.timestamp_ns, 12345);
	assert_int_equal(r.server_time_ns, real);
	assert_int_equal(d.v.hdr->pkt_num, 2);	/* first session datagram */
}

/* ------------------------------------------------------------------------
 * INFER, dedup, credit.
 */

static void expect_reject(struct tcli *cl, unsigned i, uint64_t rid,
			  unsigned code, uint64_t seq)
{
	struct sdg d = s_get(cl, i);
	struct proto_reject_view rv;

	assert_int_equal(d.m.template_id, PROTO_T_REJECT);
	assert_false(d.v.hdr->flags & PROTO_F_CTRL);
	assert_int_equal(d.v.hdr->seq, seq);
	assert_int_equal(proto_decode_reject(&d.m, &rv), 0);
	assert_int_equal(rv.f.request_id, rid);
	assert_int_equal(rv.f.code, code);
}

static void test_infer_not_ready(void **state)
{
	struct dp_sess_config c;
	struct tcli cl;
	struct proto_reject_view rv;
	struct sdg d;

	(void)state;
	small_config(&c);
	h_start(&c);
	c_init(&cl, 0x7f000001);
	c_logon(&cl, 0);
	ncap = 0;
	c_infer(&cl, 1, "Hello there", 16);
	assert_int_equal(ncap, 0);			/* with the scheduler */
	assert_int_equal(dp_rings_slots_in_use(&rings), 1);
	assert_int_equal(T.sess[cl.sid & 0xffff].inflight_reqs, 1);
	{
		/* The slot holds a copy, not pointers into the datagram. */
		const struct dp_req_slot *r = &rings.slots[0];

		memset(dg, 0, sizeof(dg));
		assert_int_equal(r->request_id, 1);
		assert_int_equal(r->prompt_text.len, 11);
		assert_memory_equal(dp_req_str(r, r->prompt_text), "Hello there", 11);
		assert_string_equal(dp_req_str(r, r->model), "tiny");
		assert_int_equal(r->f.max_tokens, 16);
		assert_int_equal(r->cost_tokens, 11 + 16);
	}
	h_engine();
	assert_int_equal(ncap, 1);
	expect_reject(&cl, 0, 1, PROTO_E_NOT_READY, 1);
	d = s_get(&cl, 0);
	assert_int_equal(proto_decode_reject(&d.m, &rv), 0);
	assert_int_equal(rv.text.len, strlen("no model loaded"));
	assert_memory_equal(rv.text.p, "no model loaded", rv.text.len);
	assert_int_equal(dp_rings_slots_in_use(&rings), 0);
	assert_int_equal(T.sess[cl.sid & 0xffff].inflight_reqs, 0);
	assert_int_equal(T.ctr[SESS_CTR_reject_not_ready], 1);
	assert_int_equal(sched.ctr[ENG_SCHED_CTR_infer_rx], 1);

	/* STATUS is sequenced after it. */
	c_send_block(&cl, false, PROTO_T_STATUS_REQUEST, NULL, 0);
	d = s_get(&cl, 1);
	assert_int_equal(d.m.template_id, PROTO_T_STATUS);
	assert_int_equal(d.v.hdr->seq, 2);
	{
		struct proto_status st;

		assert_int_equal(proto_block_get(&d.m, &st, sizeof(st), sizeof(st)), 0);
		assert_int_equal(st.credit_requests, 4);
		assert_int_equal(st.credit_tokens, 10000);
		assert_int_equal(st.state, PROTO_STATE_NOT_READY);
	}
	/* An invalid INFER: answered (authenticated), not sent to the engine. */
	{
		struct proto_infer_req r;
		struct proto_enc e;

		infer_req(&r, 9, "x", 16);
		r.f.temperature = 1000.0f;
		c_begin(&cl, &e, dg, false);
		assert_int_equal(proto_enc_infer(&e, &r), 0);
		h_rx(dg, c_end(&cl, &e), &cl.addr);
		assert_int_equal(T.dp_ctr[DP_CTR_drop_bad_param], 1);
		expect_reject(&cl, 2, 9, PROTO_E_INVALID_PARAM, 3);
		assert_int_equal(dp_rings_slots_in_use(&rings), 0);
	}
}

static void test_dedup(void **state)
{
	struct dp_sess_config c;
	struct tcli cl;
	struct sdg d;

	(void)state;
	small_config(&c);
	h_start(&c);
	c_init(&cl, 0x7f000001);
	c_logon(&cl, 0);
	ncap = 0;
	/* Retry before the answer: ignored, runs once. */
	c_infer(&cl, 5, "abc", 8);
	c_infer(&cl, 5, "abc", 8);
	assert_int_equal(T.ctr[SESS_CTR_infer_dup_pending], 1);
	h_engine();
	assert_int_equal(sched.ctr[ENG_SCHED_CTR_infer_rx], 1);
	assert_int_equal(ncap, 1);
	expect_reject(&cl, 0, 5, PROTO_E_NOT_READY, 1);
	/* Retry after: the same datagram again, F_RETRANS, same seq. */
	c_infer(&cl, 5, "abc", 8);
	h_engine();
	assert_int_equal(ncap, 2);
	expect_reject(&cl, 1, 5, PROTO_E_NOT_READY, 1);
	d = s_get(&cl, 1);
	assert_true(d.v.hdr->flags & PROTO_F_RETRANS);
	assert_true(d.v.hdr->pkt_num > s_get(&cl, 0).v.hdr->pkt_num);
	assert_int_equal(sched.ctr[ENG_SCHED_CTR_infer_rx], 1);
	assert_int_equal(T.ctr[SESS_CTR_infer_dup_resent], 1);

	/* Push the answer out of the replay buffer (depth 8): the retry is
	 * re-encoded as a new message with the same code. */
	for (int i = 0; i < 8; i++)
		c_send_block(&cl, false, PROTO_T_STATUS_REQUEST, NULL, 0);
	ncap = 0;
	c_infer(&cl, 5, "abc", 8);
	assert_int_equal(ncap, 1);
	expect_reject(&cl, 0, 5, PROTO_E_NOT_READY, 10);
	assert_int_equal(sched.ctr[ENG_SCHED_CTR_infer_rx], 1);

	/* Ids out of order are fine (a lost one retried later runs). */
	ncap = 0;
	c_infer(&cl, 7, "abc", 8);
	c_infer(&cl, 6, "abc", 8);
	h_engine();
	assert_int_equal(sched.ctr[ENG_SCHED_CTR_infer_rx], 3);
	/* Forgotten ids (dedup_ids 16, all DONE): 20 newer ids evict 5..7. */
	for (uint64_t id = 100; id < 120; id++) {
		c_infer(&cl, id, "abc", 8);
		h_engine();
	}
	ncap = 0;
	c_infer(&cl, 6, "abc", 8);
	assert_int_equal(ncap, 1);
	expect_reject(&cl, 0, 6, PROTO_E_DUPLICATE, s_get(&cl, 0).v.hdr->seq);
	/* Far below the 2048-id window: DUPLICATE, never run. */
	ncap = 0;
	c_infer(&cl, 10000, "abc", 8);
	h_engine();
	c_infer(&cl, 50, "abc", 8);
	expect_reject(&cl, ncap - 1, 50, PROTO_E_DUPLICATE,
		      s_get(&cl, ncap - 1).v.hdr->seq);
	assert_int_equal(sched.ctr[ENG_SCHED_CTR_infer_rx], 24);
	assert_int_equal(T.ctr[SESS_CTR_reject_duplicate], 2);
}

static void test_credit(void **state)
{
	struct dp_sess_config c;
	struct tcli cl;

	(void)state;
	small_config(&c);
	c.credit_tokens = 1000;
	h_start(&c);
	c_init(&cl, 0x7f000001);
	c_logon(&cl, 0);
	ncap = 0;
	for (uint64_t id = 1; id <= 4; id++)
		c_infer(&cl, id, "abc", 10);
	assert_int_equal(ncap, 0);
	/* The fifth request in flight: OVERLOADED, counted, remembered. */
	c_infer(&cl, 5, "abc", 10);
	assert_int_equal(ncap, 1);
	expect_reject(&cl, 0, 5, PROTO_E_OVERLOADED, 1);
	assert_int_equal(T.dp_ctr[DP_CTR_drop_over_credit], 1);
	{
		struct proto_reject_view rv;
		struct sdg d = s_get(&cl, 0);

		assert_int_equal(proto_decode_reject(&d.m, &rv), 0);
		assert_true(rv.f.retry_after_ms > 0);
	}
	h_engine();
	assert_int_equal(ncap, 2);		/* four REJECTs, one datagram */
	assert_int_equal(s_get(&cl, 1).v.hdr->msg_count, 4);
	assert_int_equal(s_get(&cl, 1).v.hdr->seq, 2);
	/* Credit is back: a new id runs; the old one stays rejected. */
	c_infer(&cl, 6, "abc", 10);
	assert_int_equal(T.ctr[SESS_CTR_infer_to_engine], 5);
	h_engine();
	c_infer(&cl, 5, "abc", 10);
	assert_int_equal(T.ctr[SESS_CTR_infer_dup_resent], 1);
	assert_int_equal(T.ctr[SESS_CTR_infer_to_engine], 5);

	/* Token credit: 1000 per session here. */
	{
		char big[601];

		memset(big, 'b', 600);
		big[600] = 0;
		ncap = 0;
		c_infer(&cl, 20, "abc", 500);		/* 503: fits */
		assert_int_equal(T.ctr[SESS_CTR_infer_to_engine], 6);
		c_infer(&cl, 21, big, 500);		/* 1100: never fits */
		expect_reject(&cl, 0, 21, PROTO_E_TOO_LARGE,
			      s_get(&cl, 0).v.hdr->seq);
		c_infer(&cl, 22, "abcdefgh", 500);	/* 503 + 508 > 1000 */
		expect_reject(&cl, 1, 22, PROTO_E_OVERLOADED,
			      s_get(&cl, 1).v.hdr->seq);
		assert_int_equal(T.dp_ctr[DP_CTR_drop_over_credit], 3);
	}
	/* max_tokens 0 counts as max_tokens_max (512). */
	h_engine();
	assert_int_equal(T.sess[cl.sid & 0xffff].inflight_tokens, 0);
	c_infer(&cl, 23, "abc", 0);
	assert_int_equal(T.sess[cl.sid & 0xffff].inflight_tokens, 3 + 512);
	h_engine();
	assert_int_equal(T.sess[cl.sid & 0xffff].inflight_reqs, 0);
}

static void test_cancel(void **state)
{
	struct dp_sess_config c;
	struct tcli cl;
	struct proto_cancel_ack a;
	struct sdg d;

	(void)state;
	small_config(&c);
	h_start(&c);
	c_init(&cl, 0x7f000001);
	c_logon(&cl, 0);
	ncap = 0;
	/* Not in flight: found 0 at once. */
	c_send_block(&cl, false, PROTO_T_CANCEL, &(struct proto_cancel){ 77 },
		     sizeof(struct proto_cancel));
	assert_int_equal(ncap, 1);
	d = s_get(&cl, 0);
	assert_int_equal(d.m.template_id, PROTO_T_CANCEL_ACK);
	assert_int_equal(d.v.hdr->seq, 1);
	assert_int_equal(proto_block_get(&d.m, &a, sizeof(a), sizeof(a)), 0);
	assert_int_equal(a.request_id, 77);
	assert_int_equal(a.found, 0);
	/* In flight: the scheduler decides (no model: it already refused
	 * the request, so found 0), one CANCEL_ACK for repeated CANCELs. */
	c_infer(&cl, 78, "abc", 4);
	c_send_block(&cl, false, PROTO_T_CANCEL, &(struct proto_cancel){ 78 },
		     sizeof(struct proto_cancel));
	c_send_block(&cl, false, PROTO_T_CANCEL, &(struct proto_cancel){ 78 },
		     sizeof(struct proto_cancel));
	assert_int_equal(T.ctr[SESS_CTR_cancel_to_engine], 1);
	h_engine();
	assert_int_equal(ncap, 2);	/* REJECT and CANCEL_ACK, one datagram */
	expect_reject(&cl, 1, 78, PROTO_E_NOT_READY, 2);
	d = s_get(&cl, 1);
	assert_int_equal(d.v.hdr->msg_count, 2);
	{
		struct proto_msg_iter it;

		proto_msg_iter_init(&it, &d.v);
		assert_int_equal(proto_msg_next(&it, &d.m), 1);
		assert_int_equal(proto_msg_next(&it, &d.m), 1);
	}
	assert_int_equal(d.m.template_id, PROTO_T_CANCEL_ACK);
	assert_int_equal(proto_block_get(&d.m, &a, sizeof(a), sizeof(a)), 0);
	assert_int_equal(a.request_id, 78);
	assert_int_equal(a.found, 0);
	assert_int_equal(sched.ctr[ENG_SCHED_CTR_cancel_not_found], 1);
	assert_int_equal(dp_rings_slots_in_use(&rings), 0);
}

/* ------------------------------------------------------------------------
 * Replay buffer: RETRANSMIT_REQUEST and GAP_FILL.
 */

static void c_retransmit(struct tcli *cl, uint64_t from, uint32_t count)
{
	struct proto_retransmit_request q = { .from_seq = from, .count = count };

	c_send_block(cl, true, PROTO_T_RETRANSMIT_REQUEST, &q, sizeof(q));
}

static void test_retransmit(void **state)
{
	struct dp_sess_config c;
	struct tcli cl;
	struct sdg d;
	struct proto_gap_fill g;
	uint8_t orig[6][PROTO_MTU_MAX];
	uint32_t orig_len[6];

	(void)state;
	small_config(&c);
	h_start(&c);
	c_init(&cl, 0x7f000001);
	c_logon(&cl, 0);
	ncap = 0;
	/* Seqs 1..6, one datagram each. */
	for (int i = 0; i < 6; i++) {
		c_send_block(&cl, false, PROTO_T_STATUS_REQUEST, NULL, 0);
		memcpy(orig[i], caps[i].data, caps[i].len);
		orig_len[i] = caps[i].len;
		assert_int_equal(s_get(&cl, (unsigned)i).v.hdr->seq, (uint64_t)i + 1);
	}
	/* In the buffer: 3..5 come back unchanged but for flags, pkt_num,
	 * ack and tag. */
	ncap = 0;
	c_retransmit(&cl, 3, 3);
	assert_int_equal(ncap, 3);
	for (unsigned i = 0; i < 3; i++) {
		struct proto_pkt_hdr *h;

		d = s_get(&cl, i);
		h = (struct proto_pkt_hdr *)caps[i].data;
		assert_int_equal(h->seq, 3 + i);
		assert_true(h->flags & PROTO_F_RETRANS);
		assert_int_equal(caps[i].len, orig_len[2 + i]);
		assert_memory_equal(caps[i].data + sizeof(*h),
				    orig[2 + i] + sizeof(*h),
				    caps[i].len - sizeof(*h) - PROTO_TAG_LEN);
	}
	assert_int_equal(T.ctr[SESS_CTR_retrans_datagrams], 3);
	/* Not sent yet: nothing. */
	ncap = 0;
	c_retransmit(&cl, 7, 5);
	assert_int_equal(ncap, 0);
	assert_int_equal(T.ctr[SESS_CTR_retrans_future], 1);
	/* A range running past the last seq: clipped. */
	c_retransmit(&cl, 6, 100);
	assert_int_equal(ncap, 1);

	/* Ten more: the buffer (8) now holds 9..16. */
	for (int i = 0; i < 10; i++)
		c_send_block(&cl, false, PROTO_T_STATUS_REQUEST, NULL, 0);
	/* Partly out: GAP_FILL 5..8, then 9..10 replayed. */
	ncap = 0;
	c_retransmit(&cl, 5, 6);
	assert_int_equal(ncap, 3);
	d = s_get(&cl, 0);
	assert_int_equal(d.m.template_id, PROTO_T_GAP_FILL);
	assert_true(d.v.hdr->flags & PROTO_F_CTRL);
	assert_int_equal(proto_block_get(&d.m, &g, sizeof(g), sizeof(g)), 0);
	assert_int_equal(g.from_seq, 5);
	assert_int_equal(g.count, 4);
	assert_int_equal(s_get(&cl, 1).v.hdr->seq, 9);
	assert_int_equal(s_get(&cl, 2).v.hdr->seq, 10);
	/* Fully out: GAP_FILL only. */
	ncap = 0;
	c_retransmit(&cl, 1, 3);
	assert_int_equal(ncap, 1);
	d = s_get(&cl, 0);
	assert_int_equal(proto_block_get(&d.m, &g, sizeof(g), sizeof(g)), 0);
	assert_int_equal(g.from_seq, 1);
	assert_int_equal(g.count, 3);
	assert_int_equal(T.ctr[SESS_CTR_gap_fills], 2);
	assert_int_equal(T.ctr[SESS_CTR_gap_fill_msgs], 7);
	assert_int_equal(sched.ctr[ENG_SCHED_CTR_infer_rx], 0); /* never re-run */
}

/* Several messages in one datagram; the open datagram is sealed before a
 * retransmit of its seqs. */
static void test_batching(void **state)
{
	struct dp_sess_config c;
	struct tcli cl;
	struct proto_enc e;
	struct sdg d;

	(void)state;
	small_config(&c);
	h_start(&c);
	c_init(&cl, 0x7f000001);
	c_logon(&cl, 0);
	ncap = 0;
	c_begin(&cl, &e, dg, false);
	for (int i = 0; i < 3; i++) {
		proto_enc_msg_begin(&e, PROTO_T_STATUS_REQUEST, 0);
		proto_enc_msg_end(&e);
	}
	h_rx(dg, c_end(&cl, &e), &cl.addr);
	assert_int_equal(ncap, 1);
	d = s_get(&cl, 0);
	assert_int_equal(d.v.hdr->msg_count, 3);
	assert_int_equal(d.v.hdr->seq, 1);
	assert_int_equal(T.sess[cl.sid & 0xffff].tx_seq, 4);
	assert_int_equal(d.v.hdr->ack, 4);	/* client seqs 1..3 received */
	/* A retransmit of seq 2 sends the whole datagram 1..3. */
	c_retransmit(&cl, 2, 1);
	assert_int_equal(ncap, 2);
	d = s_get(&cl, 1);
	assert_int_equal(d.v.hdr->seq, 1);
	assert_int_equal(d.v.hdr->msg_count, 3);
}

/*
 * A message that fits the encoder but leaves less than a tag's room must
 * move whole to the next datagram (regression: velod aborted in data_close
 * under streaming load).  STATUS answers are 32 bytes: with an MTU of 1400,
 * 42 of them end at 1392, 8 bytes short of the tag.
 */
static void test_tag_room(void **state)
{
	struct dp_sess_config c;
	struct tcli cl;
	struct proto_enc e;
	unsigned total = 0;

	(void)state;
	small_config(&c);
	h_start(&c);
	for (uint16_t mtu = 1392; mtu <= 1408; mtu += 8) {	/* 3 sessions: the table holds 4 */
		unsigned n0;

		c_init(&cl, 0x7f000001u + mtu);
		c_logon(&cl, mtu);
		n0 = ncap;
		c_begin(&cl, &e, dg, false);
		for (int i = 0; i < 60; i++) {
			proto_enc_msg_begin(&e, PROTO_T_STATUS_REQUEST, 0);
			proto_enc_msg_end(&e);
		}
		h_rx(dg, c_end(&cl, &e), &cl.addr);
		assert_true(ncap >= n0 + 2);
		total = 0;
		for (unsigned i = n0; i < ncap; i++) {
			struct sdg d = s_get(&cl, i);

			assert_true(caps[i].len <= mtu);
			assert_int_equal(d.v.hdr->seq, total + 1);
			total += d.v.hdr->msg_count;
		}
		assert_int_equal(total, 60);
	}
}

/* ------------------------------------------------------------------------
 * Fragments.
 */

/* The INFER message bytes (header included) for fragmenting. */
static size_t infer_msg_bytes(uint8_t *out, uint64_t rid, const char *prompt)
{
	_Alignas(8) uint8_t tmp[8192];
	struct proto_pkt_hdr h = { .magic = PROTO_MAGIC, .version = PROTO_VERSION };
	struct proto_infer_req r;
	struct proto_enc e;
	struct proto_msg_hdr mh;

	infer_req(&r, rid, prompt, 8);
	proto_enc_init(&e, tmp, sizeof(tmp), &h);
	assert_int_equal(proto_enc_infer(&e, &r), 0);
	memcpy(&mh, tmp + sizeof(h), sizeof(mh));
	memcpy(out, tmp + sizeof(h), mh.length);
	return mh.length;
}

static void c_frag(struct tcli *cl, uint32_t frag_id, uint16_t index,
		   uint16_t flags, uint32_t total, uint32_t off,
		   const uint8_t *data, size_t len)
{
	struct proto_enc e;
	struct proto_fragment *f;

	c_begin(cl, &e, dg, false);
	f = proto_enc_msg_begin(&e, PROTO_T_FRAGMENT, sizeof(*f));
	f->frag_id = frag_id;
	f->index = index;
	f->flags = flags;
	f->total_length = total;
	f->offset = off;
	proto_enc_var(&e, data, len);
	proto_enc_msg_end(&e);
	h_rx(dg, c_end(cl, &e), &cl->addr);
}

/* Pieces order[0..n_order) of a message cut in n_pieces. */
static void send_pieces(struct tcli *cl, uint32_t frag_id, const uint8_t *msg,
			size_t len, const int *order, int n_order, int n_pieces)
{
	size_t piece = (len + (size_t)n_pieces - 1) / (size_t)n_pieces;

	for (int k = 0; k < n_order; k++) {
		int i = order[k];
		size_t off = (size_t)i * piece;
		size_t l = MIN(piece, len - off);
		uint16_t fl = (i == 0 ? PROTO_FRAG_BEGIN : 0) |
			      (i == n_pieces - 1 ? PROTO_FRAG_END : 0);

		c_frag(cl, frag_id, (uint16_t)i, fl, (uint32_t)len, (uint32_t)off,
		       msg + off, l);
	}
}

static void test_fragments(void **state)
{
	struct dp_sess_config c;
	struct tcli cl;
	uint8_t msg[4096];
	char prompt[1500];
	size_t len;

	(void)state;
	small_config(&c);
	h_start(&c);
	c_init(&cl, 0x7f000001);
	c_logon(&cl, 0);
	for (size_t i = 0; i < sizeof(prompt) - 1; i++)
		prompt[i] = (char)('a' + i % 26);
	prompt[sizeof(prompt) - 1] = 0;
	len = infer_msg_bytes(msg, 31, prompt);
	assert_true(len > 1408);

	/* In order. */
	send_pieces(&cl, 1, msg, len, (int[]){ 0, 1, 2 }, 3, 3);
	assert_int_equal(T.ctr[SESS_CTR_frag_completed], 1);
	assert_int_equal(T.ctr[SESS_CTR_infer_to_engine], 1);
	assert_int_equal(dp_sess_frags_used(&T), 0);
	assert_memory_equal(dp_req_str(&rings.slots[0], rings.slots[0].prompt_text),
			    prompt, strlen(prompt));
	h_engine();
	/* Out of order. */
	len = infer_msg_bytes(msg, 32, prompt);
	send_pieces(&cl, 2, msg, len, (int[]){ 2, 0, 1 }, 3, 3);
	assert_int_equal(T.ctr[SESS_CTR_frag_completed], 2);
	/* A duplicate piece is ignored. */
	len = infer_msg_bytes(msg, 33, prompt);
	send_pieces(&cl, 3, msg, len, (int[]){ 1, 2, 1 }, 3, 3);
	assert_int_equal(T.ctr[SESS_CTR_frag_dup], 1);
	assert_int_equal(T.ctr[SESS_CTR_frag_completed], 2);
	send_pieces(&cl, 3, msg, len, (int[]){ 0 }, 1, 3);
	assert_int_equal(T.ctr[SESS_CTR_frag_completed], 3);
	assert_int_equal(T.ctr[SESS_CTR_infer_to_engine], 3);
	h_engine();
	assert_int_equal(dp_rings_slots_in_use(&rings), 0);
	assert_int_equal(sched.ctr[ENG_SCHED_CTR_infer_rx], 3);

	/* Pool exhaustion (2 buffers), then the timeout frees them. */
	send_pieces(&cl, 10, msg, len, (int[]){ 0 }, 1, 3);
	send_pieces(&cl, 11, msg, len, (int[]){ 0 }, 1, 3);
	assert_int_equal(dp_sess_frags_used(&T), 2);
	send_pieces(&cl, 12, msg, len, (int[]){ 0 }, 1, 3);
	assert_int_equal(T.dp_ctr[DP_CTR_drop_no_buffer], 1);
	h_clock(501 * MS);
	h_tick();
	assert_int_equal(T.ctr[SESS_CTR_frag_timed_out], 2);
	assert_int_equal(dp_sess_frags_used(&T), 0);
	/* The late pieces of 10 start a new reassembly, which can not
	 * complete without piece 0. */
	send_pieces(&cl, 10, msg, len, (int[]){ 1, 2 }, 2, 3);
	assert_int_equal(T.ctr[SESS_CTR_frag_completed], 3);
	assert_int_equal(dp_sess_frags_used(&T), 1);

	/* Inconsistent pieces: bad_fragment, no crash. */
	{
		uint64_t bad = T.dp_ctr[DP_CTR_drop_bad_fragment];

		c_frag(&cl, 20, 0, PROTO_FRAG_BEGIN, 104, 0, msg, 8);
		assert_int_equal(dp_sess_frags_used(&T), 2);
		c_frag(&cl, 20, 0, PROTO_FRAG_BEGIN, 104, 48, msg, 8); /* BEGIN at 48 */
		c_frag(&cl, 20, 1, 0, 104, 100, msg, 8);	       /* past the end */
		c_frag(&cl, 20, 1, 0, 208, 8, msg, 8);		       /* other total */
		c_frag(&cl, 20, 0, PROTO_FRAG_BEGIN, 104, 0, msg, 8);  /* duplicate */
		assert_int_equal(T.dp_ctr[DP_CTR_drop_bad_fragment], bad + 3);
		assert_int_equal(T.ctr[SESS_CTR_frag_dup], 2);
		c_frag(&cl, 21, 0, PROTO_FRAG_BEGIN, 65528, 0, msg, 8); /* > frag_bytes */
		assert_int_equal(T.dp_ctr[DP_CTR_drop_oversize], 1);
	}
	/* Session close frees its buffers. */
	c_send_block(&cl, true, PROTO_T_LOGOUT, &(struct proto_logout){ 0 },
		     sizeof(struct proto_logout));
	assert_int_equal(dp_sess_frags_used(&T), 0);
}

/* ------------------------------------------------------------------------
 * Responses for a session that has gone; nothing allocated on the path.
 */

static void test_stale_response(void **state)
{
	struct dp_sess_config c;
	struct tcli cl;

	(void)state;
	small_config(&c);
	h_start(&c);
	c_init(&cl, 0x7f000001);
	c_logon(&cl, 0);
	c_infer(&cl, 1, "abc", 4);
	c_send_block(&cl, true, PROTO_T_LOGOUT, &(struct proto_logout){ 0 },
		     sizeof(struct proto_logout));
	assert_int_equal(T.ctr[SESS_CTR_cancel_to_engine], 1);
	ncap = 0;
	h_engine();
	assert_int_equal(ncap, 0);
	assert_int_equal(T.ctr[SESS_CTR_resp_stale], 2);	/* REJECT, CANCEL_ACK */
	assert_int_equal(dp_rings_slots_in_use(&rings), 0);
}

static void test_no_alloc(void **state)
{
	struct dp_sess_config c;
	struct tcli cl;
	uint8_t msg[4096];
	char prompt[1500];
	size_t len;
	unsigned long n;

	(void)state;
	if (!alloc_count_supported())
		skip();
	small_config(&c);
	h_start(&c);
	memset(prompt, 'x', sizeof(prompt) - 1);
	prompt[sizeof(prompt) - 1] = 0;
	len = infer_msg_bytes(msg, 40, prompt);
	c_init(&cl, 0x7f000001);
	alloc_count_start();
	c_logon(&cl, 0);
	c_infer(&cl, 1, "abc", 4);
	h_engine();
	c_send_block(&cl, true, PROTO_T_TEST_REQUEST,
		     &(struct proto_test_request){ 1, 2 },
		     sizeof(struct proto_test_request));
	c_retransmit(&cl, 1, 1);
	send_pieces(&cl, 1, msg, len, (int[]){ 2, 1, 0 }, 3, 3);
	h_engine();
	h_clock(2000 * MS);
	h_tick();
	n = alloc_count_stop();
	assert_int_equal(n, 0);
	assert_int_equal(T.ctr[SESS_CTR_timed_out], 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_logon_ok, teardown),
		cmocka_unit_test_teardown(test_logon_rejections, teardown),
		cmocka_unit_test_teardown(test_logon_table_full, teardown),
		cmocka_unit_test_teardown(test_logon_nonce_cache_full, teardown),
		cmocka_unit_test_teardown(test_logon_rate_limit, teardown),
		cmocka_unit_test_teardown(test_session_drops, teardown),
		cmocka_unit_test_teardown(test_session_drops_body, teardown),
		cmocka_unit_test_teardown(test_replay_window, teardown),
		cmocka_unit_test_teardown(test_heartbeat_timeout, teardown),
		cmocka_unit_test_teardown(test_logout_and_end, teardown),
		cmocka_unit_test_teardown(test_test_request, teardown),
		cmocka_unit_test_teardown(test_infer_not_ready, teardown),
		cmocka_unit_test_teardown(test_dedup, teardown),
		cmocka_unit_test_teardown(test_credit, teardown),
		cmocka_unit_test_teardown(test_cancel, teardown),
		cmocka_unit_test_teardown(test_retransmit, teardown),
		cmocka_unit_test_teardown(test_batching, teardown),
		cmocka_unit_test_teardown(test_tag_room, teardown),
		cmocka_unit_test_teardown(test_fragments, teardown),
		cmocka_unit_test_teardown(test_stale_response, teardown),
		cmocka_unit_test_teardown(test_no_alloc, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
