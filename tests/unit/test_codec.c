// SPDX-License-Identifier: MIT
/*
 * test_codec.c — the wire codec (velo/codec.h): every template round trips,
 * old and new senders interoperate, and every malformed class the codec owns
 * is produced by a crafted datagram and rejected with exactly its reason.
 * The UTF-8 validator is compared with an independent reference decoder,
 * exhaustively up to three bytes.
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

#include <cmocka.h>

#include <velo/codec.h>
#include <velo/compiler.h>

#include "ref_utf8.h"

#define BUF_CAP 4096

static _Alignas(8) uint8_t buf[BUF_CAP];
static _Alignas(8) uint8_t buf2[BUF_CAP];

static const struct proto_limits lim_default = {
	.vocab_size = 32000,
	.prompt_tokens_max = 4096,
	.max_tokens_max = 4096,
	.text_bytes_max = 16384,
};

static struct proto_pkt_hdr hdr_make(uint8_t flags)
{
	struct proto_pkt_hdr h;

	memset(&h, 0, sizeof(h));
	h.magic = PROTO_MAGIC;
	h.version = PROTO_VERSION;
	h.flags = flags;
	h.session_id = 0x1122334455667788ull;
	h.seq = 1000;
	h.ack = 77;
	h.pkt_num = 5;
	return h;
}

/* Deterministic filler (xorshift) so that round trips compare real bytes. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static void fill_rand(void *p, size_t n)
{
	uint8_t *b = p;

	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)rnd();
}

/* Parse a datagram and return its first message. */
static void parse_first(const uint8_t *b, int len, struct proto_msg *m)
{
	struct proto_pkt_view v;
	struct proto_msg_iter it;

	assert_true(len > 0);
	assert_int_equal(proto_pkt_parse(b, (size_t)len, PROTO_MTU_MAX, &v), 0);
	proto_msg_iter_init(&it, &v);
	assert_int_equal(proto_msg_next(&it, m), 1);
}

/*
 * The receive pipeline as velod and clients run it, minus the session layer:
 * framing, every message, each template's decoder.  Returns the first drop
 * reason (negative) or the number of messages decoded; unknown templates
 * are counted in *unknown and skipped.
 */
static int pipeline(const uint8_t *b, size_t len, const struct proto_limits *lim,
		    unsigned *unknown)
{
	struct proto_pkt_view v;
	struct proto_msg_iter it;
	struct proto_msg m;
	int rc, n = 0;

	rc = proto_pkt_parse(b, len, PROTO_MTU_MAX, &v);
	if (rc)
		return rc;
	proto_msg_iter_init(&it, &v);
	while ((rc = proto_msg_next(&it, &m)) == 1) {
		union {
			struct proto_infer_view infer;
			struct proto_tokens_view tokens;
			struct proto_done_view done;
			struct proto_reject_view reject;
			struct proto_error_view error;
			struct proto_logon_view logon;
			struct proto_fragment_view frag;
			struct proto_logon_ack ack;
		} u;
		int d = 0;

		switch (m.template_id) {
		case PROTO_T_INFER:
			d = proto_decode_infer(&m, lim, &u.infer);
			break;
		case PROTO_T_TOKENS:
			d = proto_decode_tokens(&m, &u.tokens);
			break;
		case PROTO_T_DONE:
			d = proto_decode_done(&m, &u.done);
			break;
		case PROTO_T_REJECT:
			d = proto_decode_reject(&m, &u.reject);
			break;
		case PROTO_T_ERROR:
		case PROTO_T_LOGON_REJECT:
		case PROTO_T_LOGOUT:
			d = proto_decode_error(&m, &u.error);
			break;
		case PROTO_T_LOGON:
			d = proto_decode_logon(&m, &u.logon);
			break;
		case PROTO_T_FRAGMENT:
			d = proto_decode_fragment(&m, &u.frag);
			break;
		case PROTO_T_LOGON_ACK:
			d = proto_block_get(&m, &u.ack, sizeof(u.ack), sizeof(u.ack));
			break;
		default:
			if (!proto_template_name(m.template_id))
				(*unknown)++;
			break;
		}
		if (d)
			return d;
		n++;
	}
	return rc < 0 ? rc : n;
}

static int pipeline_rc(const uint8_t *b, int len)
{
	unsigned unknown = 0;

	assert_true(len > 0);
	return pipeline(b, (size_t)len, &lim_default, &unknown);
}

/* ------------------------------------------------------------------------
 * INFER fixtures.
 */
static uint32_t prompt_toks[60];
static const uint32_t stop_toks[3] = { 2, 13, 31999 };
static const struct proto_logit_bias biases[2] = { { 50, -5.5f }, { 7, 100.0f } };
static const char *const stop_seqs[3] = { "\n\n", "END", "ünïcödé" };
static const struct proto_chat_msg roles[3] = {
	{ .role = PROTO_ROLE_SYSTEM }, { .role = PROTO_ROLE_USER },
	{ .role = PROTO_ROLE_ASSISTANT } };
static const char *const texts[3] = { "You are terse.", "Hi 👋", "" };

static struct proto_infer_req infer_req_tokens(void)
{
	struct proto_infer_req r;

	memset(&r, 0, sizeof(r));
	for (unsigned i = 0; i < 60; i++)
		prompt_toks[i] = (i * 977u) % 32000u;
	r.f.request_id = 0x0102030405060708ull;
	r.f.deadline_ns = 1700000000123456789ull;
	r.f.seed = 42;
	r.f.ttft_target_us = 20000;
	r.f.max_tokens = 256;
	r.f.min_tokens = 1;
	r.f.model_id = 3;
	r.f.temperature = 0.7f;
	r.f.top_p = 0.95f;
	r.f.min_p = 0.05f;
	r.f.repetition_penalty = 1.1f;
	r.f.presence_penalty = -0.5f;
	r.f.frequency_penalty = 0.25f;
	r.f.top_k = 40;
	r.f.flags = PROTO_INFER_PROMPT_TOKENS | PROTO_INFER_IGNORE_EOS;
	r.f.priority = 2;
	r.f.logprobs = 5;
	r.f.stream = PROTO_STREAM_EVERY_K;
	r.f.stream_k = 4;
	r.prompt_tokens = prompt_toks;
	r.n_prompt_tokens = 60;
	r.stop_tokens = stop_toks;
	r.n_stop_tokens = 3;
	r.logit_bias = biases;
	r.n_logit_bias = 2;
	r.stop_seqs = stop_seqs;
	r.n_stop_seqs = 3;
	r.model = "tiny-llama";
	r.version = "prod";
	return r;
}

static struct proto_infer_req infer_req_text(const char *text)
{
	struct proto_infer_req r = infer_req_tokens();

	r.f.flags = PROTO_INFER_PROMPT_TEXT;
	r.prompt_tokens = NULL;
	r.n_prompt_tokens = 0;
	r.prompt_text = text;
	r.prompt_text_len = strlen(text);
	return r;
}

static int enc_infer_dgram(uint8_t *b, const struct proto_infer_req *r)
{
	struct proto_pkt_hdr h = hdr_make(0);
	struct proto_enc e;

	proto_enc_init(&e, b, BUF_CAP, &h);
	assert_int_equal(proto_enc_infer(&e, r), 0);
	return proto_enc_finish(&e, PROTO_TAG_LEN);
}

static void str_eq(struct proto_str s, const char *want)
{
	assert_int_equal(s.len, strlen(want));
	if (s.len)
		assert_memory_equal(s.p, want, s.len);
}

static void check_infer_equal(const struct proto_infer_view *v,
			      const struct proto_infer_req *r)
{
	const uint8_t *blk;
	struct proto_str s;
	struct proto_group_var it;

	assert_memory_equal(&v->f, &r->f, sizeof(v->f));
	assert_int_equal(v->n_prompt_tokens, r->n_prompt_tokens);
	for (uint32_t i = 0; i < r->n_prompt_tokens; i++)
		assert_int_equal(proto_u32_at(v->prompt_tokens, i), r->prompt_tokens[i]);
	assert_int_equal(v->n_stop_tokens, r->n_stop_tokens);
	for (uint32_t i = 0; i < r->n_stop_tokens; i++)
		assert_int_equal(proto_u32_at(v->stop_tokens, i), r->stop_tokens[i]);
	assert_int_equal(v->logit_bias.n, r->n_logit_bias);
	for (uint32_t i = 0; i < r->n_logit_bias; i++) {
		struct proto_logit_bias lb;

		memcpy(&lb, v->logit_bias.entries + i * v->logit_bias.stride, sizeof(lb));
		assert_int_equal(lb.token, r->logit_bias[i].token);
		assert_true(lb.bias == r->logit_bias[i].bias);
	}
	assert_int_equal(v->n_stop_seqs, r->n_stop_seqs);
	for (uint32_t i = 0; i < r->n_stop_seqs; i++)
		str_eq(v->stop_seqs[i], r->stop_seqs[i]);
	assert_int_equal(v->n_messages, r->n_messages);
	it = v->messages;
	for (uint32_t i = 0; i < r->n_messages; i++) {
		assert_int_equal(proto_group_var_next(&it, &blk, &s), 1);
		assert_int_equal(blk[0], r->msg_roles[i].role);
		str_eq(s, r->msg_texts[i]);
	}
	assert_int_equal(proto_group_var_next(&it, &blk, &s), 0);
	str_eq(v->model, r->model ? r->model : "");
	str_eq(v->version, r->version ? r->version : "");
	assert_int_equal(v->prompt_text.len, r->prompt_text ? r->prompt_text_len : 0);
	if (v->prompt_text.len)
		assert_memory_equal(v->prompt_text.p, r->prompt_text, v->prompt_text.len);
}

/* ------------------------------------------------------------------------
 * Round trips.
 */

static void test_infer_roundtrip_tokens(void **state)
{
	struct proto_infer_req r = infer_req_tokens();
	struct proto_infer_view v;
	struct proto_msg m;
	int len = enc_infer_dgram(buf, &r);

	(void)state;
	parse_first(buf, len, &m);
	assert_int_equal(m.template_id, PROTO_T_INFER);
	assert_int_equal(m.raw_len, proto_infer_msg_size(&r));
	assert_int_equal((size_t)len, sizeof(struct proto_pkt_hdr) +
			 proto_infer_msg_size(&r) + PROTO_TAG_LEN);
	assert_int_equal(proto_decode_infer(&m, &lim_default, &v), 0);
	check_infer_equal(&v, &r);
}

static void test_infer_roundtrip_text_and_chat(void **state)
{
	struct proto_infer_req r = infer_req_text("Once upon a time, ∀x∈ℝ 🙂");
	struct proto_infer_view v;
	struct proto_msg m;
	int len;

	(void)state;
	len = enc_infer_dgram(buf, &r);
	parse_first(buf, len, &m);
	assert_int_equal(proto_decode_infer(&m, &lim_default, &v), 0);
	check_infer_equal(&v, &r);

	r.prompt_text = NULL;
	r.prompt_text_len = 0;
	r.f.flags = PROTO_INFER_CHAT;
	r.msg_roles = roles;
	r.msg_texts = texts;
	r.n_messages = 3;
	r.model = NULL;		/* default model, production label */
	r.version = NULL;
	len = enc_infer_dgram(buf, &r);
	parse_first(buf, len, &m);
	assert_int_equal(m.raw_len, proto_infer_msg_size(&r));
	assert_int_equal(proto_decode_infer(&m, &lim_default, &v), 0);
	check_infer_equal(&v, &r);
}

/* Templates whose body is the root block only: random block, exact copy. */
static void test_block_only_roundtrip(void **state)
{
	static const struct {
		unsigned t;
		size_t size;
	} tab[] = {
		{ PROTO_T_LOGON_ACK, sizeof(struct proto_logon_ack) },
		{ PROTO_T_TEST_REQUEST, sizeof(struct proto_test_request) },
		{ PROTO_T_TEST_RESPONSE, sizeof(struct proto_test_response) },
		{ PROTO_T_RETRANSMIT_REQUEST, sizeof(struct proto_retransmit_request) },
		{ PROTO_T_GAP_FILL, sizeof(struct proto_gap_fill) },
		{ PROTO_T_CANCEL, sizeof(struct proto_cancel) },
		{ PROTO_T_STATUS_REQUEST, 0 },
		{ PROTO_T_ACCEPT, sizeof(struct proto_accept) },
		{ PROTO_T_CANCEL_ACK, sizeof(struct proto_cancel_ack) },
		{ PROTO_T_STATUS, sizeof(struct proto_status) },
	};
	struct proto_pkt_hdr h = hdr_make(PROTO_F_S2C);
	struct proto_pkt_view v;
	struct proto_msg_iter it;
	struct proto_msg m;
	struct proto_enc e;
	uint8_t want[ARRAY_SIZE(tab)][64], got[64];
	int len;

	(void)state;
	/* All of them in one datagram, in order. */
	proto_enc_init(&e, buf, BUF_CAP, &h);
	for (size_t i = 0; i < ARRAY_SIZE(tab); i++) {
		void *blk = proto_enc_msg_begin(&e, tab[i].t, (unsigned)tab[i].size);

		assert_non_null(blk);
		fill_rand(want[i], tab[i].size);
		memcpy(blk, want[i], tab[i].size);
		proto_enc_msg_end(&e);
	}
	len = proto_enc_finish(&e, PROTO_TAG_LEN);
	assert_true(len > 0);
	assert_int_equal(proto_pkt_parse(buf, (size_t)len, PROTO_MTU_DEFAULT, &v), 0);
	assert_int_equal(v.hdr->msg_count, ARRAY_SIZE(tab));
	assert_int_equal(v.hdr->flags, PROTO_F_S2C | PROTO_F_AUTH);
	assert_int_equal(v.hdr->session_id, h.session_id);
	assert_int_equal(v.hdr->seq, h.seq);
	assert_int_equal(v.hdr->ack, h.ack);
	assert_int_equal(v.hdr->pkt_num, h.pkt_num);
	assert_ptr_equal(v.tag, buf + len - PROTO_TAG_LEN);
	assert_int_equal(v.auth_len, (size_t)len - PROTO_TAG_LEN);
	proto_msg_iter_init(&it, &v);
	for (size_t i = 0; i < ARRAY_SIZE(tab); i++) {
		assert_int_equal(proto_msg_next(&it, &m), 1);
		assert_int_equal(m.template_id, tab[i].t);
		assert_non_null(proto_template_name(m.template_id));
		assert_int_equal(m.block_len, tab[i].size);
		assert_int_equal(m.raw_len % PROTO_ALIGN, 0);
		memset(got, 0xee, sizeof(got));
		assert_int_equal(proto_block_get(&m, got, tab[i].size, tab[i].size), 0);
		if (tab[i].size)
			assert_memory_equal(got, want[i], tab[i].size);
	}
	assert_int_equal(proto_msg_next(&it, &m), 0);
}

static void test_logon_roundtrip(void **state)
{
	struct proto_pkt_hdr h = hdr_make(PROTO_F_CTRL);
	struct proto_logon *b;
	struct proto_logon want;
	struct proto_logon_view v;
	struct proto_msg m;
	struct proto_enc e;
	int len;

	(void)state;
	h.session_id = 0;
	memset(&want, 0, sizeof(want));
	want.key_id = 7;
	want.heartbeat_ms = 100;
	want.timestamp_ns = 1700000000000000000ull;
	fill_rand(want.client_nonce, sizeof(want.client_nonce));
	want.mtu = 1408;
	want.flags = 3;
	proto_enc_init(&e, buf, BUF_CAP, &h);
	b = proto_enc_msg_begin(&e, PROTO_T_LOGON, sizeof(*b));
	*b = want;
	proto_enc_var(&e, "velo-client/1.0", 15);
	proto_enc_msg_end(&e);
	len = proto_enc_finish(&e, PROTO_TAG_LEN);
	parse_first(buf, len, &m);
	assert_int_equal(proto_decode_logon(&m, &v), 0);
	assert_memory_equal(&v.f, &want, sizeof(want));
	str_eq(v.client_name, "velo-client/1.0");
}

static int enc_code_text(uint8_t *b, unsigned t, const void *blk, size_t n,
			 const char *text)
{
	struct proto_pkt_hdr h = hdr_make(PROTO_F_S2C);
	struct proto_enc e;
	void *p;

	proto_enc_init(&e, b, BUF_CAP, &h);
	p = proto_enc_msg_begin(&e, t, (unsigned)n);
	assert_non_null(p);
	memcpy(p, blk, n);
	proto_enc_var(&e, text, strlen(text));
	proto_enc_msg_end(&e);
	return proto_enc_finish(&e, PROTO_TAG_LEN);
}

static void test_reject_error_logout_roundtrip(void **state)
{
	struct proto_reject rj = { .request_id = 99, .code = PROTO_E_OVERLOADED,
				   .retry_after_ms = 250 };
	struct proto_error er = { .request_id = 100, .code = PROTO_E_INTERNAL };
	struct proto_logon_reject lr = { .code = PROTO_E_AUTH };
	struct proto_logout lo = { .code = PROTO_E_SHUTTING_DOWN };
	struct proto_reject_view rv;
	struct proto_error_view ev;
	struct proto_msg m;

	(void)state;
	parse_first(buf, enc_code_text(buf, PROTO_T_REJECT, &rj, sizeof(rj),
					"no model loaded"), &m);
	assert_int_equal(proto_decode_reject(&m, &rv), 0);
	assert_memory_equal(&rv.f, &rj, sizeof(rj));
	str_eq(rv.text, "no model loaded");

	parse_first(buf, enc_code_text(buf, PROTO_T_ERROR, &er, sizeof(er),
					"device lost"), &m);
	assert_int_equal(proto_decode_error(&m, &ev), 0);
	assert_memory_equal(&ev.f, &er, sizeof(er));
	str_eq(ev.text, "device lost");

	parse_first(buf, enc_code_text(buf, PROTO_T_LOGON_REJECT, &lr, sizeof(lr),
					"unknown key"), &m);
	assert_int_equal(proto_decode_error(&m, &ev), 0);
	assert_int_equal(ev.f.request_id, 0);
	assert_int_equal(ev.f.code, PROTO_E_AUTH);
	str_eq(ev.text, "unknown key");

	parse_first(buf, enc_code_text(buf, PROTO_T_LOGOUT, &lo, sizeof(lo), ""), &m);
	assert_int_equal(proto_decode_error(&m, &ev), 0);
	assert_int_equal(ev.f.code, PROTO_E_SHUTTING_DOWN);
	str_eq(ev.text, "");
	/* A decoder given another template refuses it. */
	assert_int_equal(proto_decode_reject(&m, &rv), -PROTO_DROP_unknown_template);
}

static int enc_tokens(uint8_t *b, const struct proto_tokens *f,
		      const uint32_t *ids, unsigned n,
		      const struct proto_logprob *lp, unsigned nlp,
		      const char *text)
{
	struct proto_pkt_hdr h = hdr_make(PROTO_F_S2C);
	struct proto_enc e;
	struct proto_tokens *p;

	proto_enc_init(&e, b, BUF_CAP, &h);
	p = proto_enc_msg_begin(&e, PROTO_T_TOKENS, sizeof(*p));
	*p = *f;
	proto_enc_group_u32(&e, ids, n);
	proto_enc_group(&e, lp, sizeof(*lp), nlp);
	proto_enc_var(&e, text, strlen(text));
	proto_enc_msg_end(&e);
	return proto_enc_finish(&e, PROTO_TAG_LEN);
}

static void test_tokens_done_roundtrip(void **state)
{
	static const uint32_t ids[3] = { 450, 4996, 29889 };
	struct proto_logprob lp[6];
	struct proto_tokens f = { .request_id = 5, .first_index = 17,
				  .flags = PROTO_TOK_SENTENCE, .top_logprobs = 1 };
	struct proto_done d = { .request_id = 5, .prompt_tokens = 60,
				.cached_prompt_tokens = 32, .completion_tokens = 20,
				.finish_reason = PROTO_FINISH_STOP_SEQUENCE,
				.queue_us = 10, .prefill_us = 2000, .ttft_us = 2100,
				.decode_us = 9000, .mean_itl_us = 450 };
	struct proto_tokens_view tv;
	struct proto_done_view dv;
	struct proto_pkt_hdr h = hdr_make(PROTO_F_S2C);
	struct proto_enc e;
	struct proto_msg m;
	int len;

	(void)state;
	for (unsigned i = 0; i < 6; i++) {
		lp[i].token = 100 + i;
		lp[i].logprob = -0.25f * (float)i;
	}
	parse_first(buf, enc_tokens(buf, &f, ids, 3, lp, 6, "The end."), &m);
	assert_int_equal(proto_decode_tokens(&m, &tv), 0);
	assert_memory_equal(&tv.f, &f, sizeof(f));
	assert_int_equal(tv.n_tokens, 3);
	for (unsigned i = 0; i < 3; i++)
		assert_int_equal(proto_u32_at(tv.tokens, i), ids[i]);
	assert_int_equal(tv.logprobs.n, 6);
	assert_int_equal(tv.logprobs.stride, sizeof(struct proto_logprob));
	assert_memory_equal(tv.logprobs.entries, lp, sizeof(lp));
	str_eq(tv.text, "The end.");

	proto_enc_init(&e, buf, BUF_CAP, &h);
	*(struct proto_done *)proto_enc_msg_begin(&e, PROTO_T_DONE, sizeof(d)) = d;
	proto_enc_var(&e, "tiny-llama", 10);
	proto_enc_var(&e, "2024-06-01", 10);
	proto_enc_msg_end(&e);
	len = proto_enc_finish(&e, PROTO_TAG_LEN);
	parse_first(buf, len, &m);
	assert_int_equal(proto_decode_done(&m, &dv), 0);
	assert_memory_equal(&dv.f, &d, sizeof(d));
	str_eq(dv.model, "tiny-llama");
	str_eq(dv.version, "2024-06-01");
}

static int enc_fragment(uint8_t *b, const struct proto_fragment *f,
			const void *data, size_t n)
{
	struct proto_pkt_hdr h = hdr_make(0);
	struct proto_enc e;

	proto_enc_init(&e, b, BUF_CAP, &h);
	*(struct proto_fragment *)proto_enc_msg_begin(&e, PROTO_T_FRAGMENT,
						      sizeof(*f)) = *f;
	proto_enc_var(&e, data, n);
	proto_enc_msg_end(&e);
	return proto_enc_finish(&e, PROTO_TAG_LEN);
}

/* Split a long INFER into FRAGMENTs, reassemble, decode: equal. */
static void test_fragment_roundtrip(void **state)
{
	static char text[3000];
	static _Alignas(8) uint8_t whole[8192];
	struct proto_infer_req r;
	struct proto_infer_view iv;
	struct proto_fragment_view fv;
	struct proto_msg m;
	size_t total, off = 0;
	const size_t piece = 1000;
	int len;

	(void)state;
	for (size_t i = 0; i < sizeof(text) - 1; i++)
		text[i] = (char)('a' + i % 26);
	r = infer_req_text(text);
	len = enc_infer_dgram(buf2, &r);
	assert_true(len > PROTO_MTU_DEFAULT);
	total = proto_infer_msg_size(&r);
	memset(whole, 0, sizeof(whole));
	for (unsigned idx = 0; off < total; idx++) {
		size_t n = total - off < piece ? total - off : piece;
		struct proto_fragment f = {
			.frag_id = 77, .index = (uint16_t)idx,
			.flags = (uint16_t)((off == 0 ? PROTO_FRAG_BEGIN : 0) |
					    (off + n == total ? PROTO_FRAG_END : 0)),
			.total_length = (uint32_t)total, .offset = (uint32_t)off,
		};

		len = enc_fragment(buf, &f, buf2 + sizeof(struct proto_pkt_hdr) + off, n);
		assert_true(len <= PROTO_MTU_DEFAULT);
		parse_first(buf, len, &m);
		assert_int_equal(proto_decode_fragment(&m, &fv), 0);
		assert_memory_equal(&fv.f, &f, sizeof(f));
		memcpy(whole + fv.f.offset, fv.data.p, fv.data.len);
		off += n;
	}
	assert_int_equal(proto_msg_parse(whole, total, &m), 0);
	assert_int_equal(proto_decode_infer(&m, &lim_default, &iv), 0);
	check_infer_equal(&iv, &r);
	/* One byte less is not a whole message. */
	assert_int_equal(proto_msg_parse(whole, total - 8, &m),
			 -PROTO_DROP_bad_msg_length);
}

static void test_heartbeat_and_end(void **state)
{
	struct proto_pkt_hdr h = hdr_make(PROTO_F_CTRL);
	struct proto_pkt_view v;
	struct proto_msg_iter it;
	struct proto_msg m;
	struct proto_enc e;
	int len;

	(void)state;
	proto_enc_init(&e, buf, BUF_CAP, &h);
	len = proto_enc_finish(&e, PROTO_TAG_LEN);
	assert_int_equal(len, sizeof(h) + PROTO_TAG_LEN);
	assert_int_equal(proto_pkt_parse(buf, (size_t)len, PROTO_MTU_DEFAULT, &v), 0);
	assert_int_equal(v.hdr->msg_count, PROTO_COUNT_HEARTBEAT);
	assert_int_equal(v.msgs_len, 0);
	proto_msg_iter_init(&it, &v);
	assert_int_equal(proto_msg_next(&it, &m), 0);

	h.msg_count = PROTO_COUNT_END;
	proto_enc_init(&e, buf, BUF_CAP, &h);
	len = proto_enc_finish(&e, PROTO_TAG_LEN);
	assert_int_equal(proto_pkt_parse(buf, (size_t)len, PROTO_MTU_DEFAULT, &v), 0);
	assert_int_equal(v.hdr->msg_count, PROTO_COUNT_END);
	proto_msg_iter_init(&it, &v);
	assert_int_equal(proto_msg_next(&it, &m), 0);

	/* Without a tag: F_AUTH cleared, no tag pointer. */
	proto_enc_init(&e, buf, BUF_CAP, &h);
	len = proto_enc_finish(&e, 0);
	assert_int_equal(proto_pkt_parse(buf, (size_t)len, PROTO_MTU_DEFAULT, &v), 0);
	assert_null(v.tag);
	assert_int_equal(v.hdr->flags & PROTO_F_AUTH, 0);
}

/* ------------------------------------------------------------------------
 * Evolution.
 */

/* A newer sender: longer root block, an extra body field at the end. */
static void test_newer_sender(void **state)
{
	struct proto_infer_req r = infer_req_tokens();
	struct proto_pkt_hdr h = hdr_make(0);
	struct proto_infer_view v;
	struct proto_infer *b;
	struct proto_enc e;
	struct proto_msg m;
	uint8_t *blk;
	int len;

	(void)state;
	proto_enc_init(&e, buf, BUF_CAP, &h);
	blk = proto_enc_msg_begin(&e, PROTO_T_INFER, sizeof(*b) + 12);
	memcpy(blk, &r.f, sizeof(r.f));
	memset(blk + sizeof(r.f), 0xab, 12);	/* fields we do not know */
	proto_enc_group_u32(&e, r.prompt_tokens, r.n_prompt_tokens);
	proto_enc_group_u32(&e, r.stop_tokens, r.n_stop_tokens);
	proto_enc_group(&e, r.logit_bias, sizeof(*r.logit_bias), r.n_logit_bias);
	proto_enc_group_hdr(&e, 0, r.n_stop_seqs);
	for (unsigned i = 0; i < r.n_stop_seqs; i++)
		proto_enc_var(&e, r.stop_seqs[i], strlen(r.stop_seqs[i]));
	proto_enc_group_hdr(&e, sizeof(struct proto_chat_msg), 0);
	proto_enc_var(&e, r.model, strlen(r.model));
	proto_enc_var(&e, r.version, strlen(r.version));
	proto_enc_var(&e, NULL, 0);
	proto_enc_var(&e, "a field from schema v2", 22);
	proto_enc_group_u32(&e, stop_toks, 3);	/* and a v2 group */
	proto_enc_msg_end(&e);
	len = proto_enc_finish(&e, PROTO_TAG_LEN);
	parse_first(buf, len, &m);
	assert_int_equal(m.block_len, sizeof(*b) + 12);
	assert_int_equal(proto_decode_infer(&m, &lim_default, &v), 0);
	check_infer_equal(&v, &r);
}

/* An older sender: shorter root block (zero-filled), trailing fields absent
 * (read as empty). */
static void test_older_sender(void **state)
{
	struct proto_pkt_hdr h = hdr_make(PROTO_F_S2C);
	struct proto_test_response tr;
	struct proto_done_view dv;
	struct proto_enc e;
	struct proto_msg m;
	uint64_t *p;
	uint8_t *d;
	int len;

	(void)state;
	/* TEST_RESPONSE as a sender that only knew correlation_id. */
	proto_enc_init(&e, buf, BUF_CAP, &h);
	p = proto_enc_msg_begin(&e, PROTO_T_TEST_RESPONSE, 8);
	*p = 0x5555;
	proto_enc_msg_end(&e);
	len = proto_enc_finish(&e, PROTO_TAG_LEN);
	parse_first(buf, len, &m);
	memset(&tr, 0xff, sizeof(tr));
	assert_int_equal(proto_block_get(&m, &tr, sizeof(tr), 8), 0);
	assert_int_equal(tr.correlation_id, 0x5555);
	assert_int_equal(tr.timestamp_ns, 0);
	assert_int_equal(tr.server_time_ns, 0);
	/* ... but not shorter than the minimum the reader asks for. */
	assert_int_equal(proto_block_get(&m, &tr, sizeof(tr), 16),
			 -PROTO_DROP_short_block);

	/* DONE without the version var data: reads as empty. */
	proto_enc_init(&e, buf, BUF_CAP, &h);
	d = proto_enc_msg_begin(&e, PROTO_T_DONE, sizeof(struct proto_done));
	d[0] = 9;
	proto_enc_var(&e, "m", 1);	/* 48 + 3 bytes: 5 bytes of padding */
	proto_enc_msg_end(&e);
	len = proto_enc_finish(&e, PROTO_TAG_LEN);
	parse_first(buf, len, &m);
	assert_int_equal(proto_decode_done(&m, &dv), 0);
	assert_int_equal(dv.f.request_id, 9);
	str_eq(dv.model, "m");
	str_eq(dv.version, "");
}

/* Unknown templates are framed, skipped by length and counted; the next
 * message decodes. */
static void test_unknown_template_skipped(void **state)
{
	struct proto_pkt_hdr h = hdr_make(PROTO_F_S2C);
	struct proto_enc e;
	struct proto_reject rj = { .request_id = 1, .code = PROTO_E_NOT_READY };
	uint8_t *p;
	unsigned unknown = 0;
	int len;

	(void)state;
	proto_enc_init(&e, buf, BUF_CAP, &h);
	p = proto_enc_msg_begin(&e, 63, 20);
	memset(p, 0x5a, 20);
	proto_enc_var(&e, "future", 6);
	proto_enc_msg_end(&e);
	*(struct proto_reject *)proto_enc_msg_begin(&e, PROTO_T_REJECT, sizeof(rj)) = rj;
	proto_enc_var(&e, "no model loaded", 15);
	proto_enc_msg_end(&e);
	p = proto_enc_msg_begin(&e, 1000, 0);
	assert_non_null(p);
	proto_enc_msg_end(&e);
	len = proto_enc_finish(&e, PROTO_TAG_LEN);
	assert_int_equal(pipeline(buf, (size_t)len, &lim_default, &unknown), 3);
	assert_int_equal(unknown, 2);
	assert_null(proto_template_name(63));
	assert_string_equal(proto_template_name(PROTO_T_INFER), "INFER");
}

/* Padding is zero on send and ignored on receive. */
static void test_padding(void **state)
{
	struct proto_reject rj = { .request_id = 3 };
	struct proto_reject_view rv;
	struct proto_msg m;
	int len;

	(void)state;
	len = enc_code_text(buf, PROTO_T_REJECT, &rj, sizeof(rj), "abc");
	parse_first(buf, len, &m);
	/* 8 + 16 + 2 + 3 = 29 -> 32: three zero bytes. */
	assert_int_equal(m.raw_len, 32);
	assert_int_equal(m.raw[29] | m.raw[30] | m.raw[31], 0);
	buf[sizeof(struct proto_pkt_hdr) + 29] = 0xff;
	buf[sizeof(struct proto_pkt_hdr) + 31] = 0x7f;
	parse_first(buf, len, &m);
	assert_int_equal(proto_decode_reject(&m, &rv), 0);
	str_eq(rv.text, "abc");
}

/* ------------------------------------------------------------------------
 * Encoder.
 */

static void test_encoder_limits(void **state)
{
	struct proto_pkt_hdr h = hdr_make(PROTO_F_S2C);
	struct proto_enc e;
	struct proto_infer_req r = infer_req_tokens();
	static char big[2000];
	size_t room, len_before;
	uint8_t *p;
	int len;

	(void)state;
	memset(big, 'x', sizeof(big));
	/* room is exact: a var of room - 2 bytes fits, one more does not. */
	proto_enc_init(&e, buf, PROTO_MTU_DEFAULT, &h);
	p = proto_enc_msg_begin(&e, PROTO_T_TOKENS, sizeof(struct proto_tokens));
	assert_non_null(p);
	proto_enc_group_u32(&e, NULL, 0);
	proto_enc_group(&e, NULL, sizeof(struct proto_logprob), 0);
	room = proto_enc_room(&e, PROTO_TAG_LEN);
	assert_int_equal(room, PROTO_MTU_DEFAULT - PROTO_TAG_LEN - e.len);
	proto_enc_var(&e, big, room - 2);
	proto_enc_msg_end(&e);
	len = proto_enc_finish(&e, PROTO_TAG_LEN);
	assert_int_equal(len, PROTO_MTU_DEFAULT);

	proto_enc_init(&e, buf, PROTO_MTU_DEFAULT, &h);
	proto_enc_msg_begin(&e, PROTO_T_TOKENS, sizeof(struct proto_tokens));
	proto_enc_group_u32(&e, NULL, 0);
	proto_enc_group(&e, NULL, sizeof(struct proto_logprob), 0);
	room = proto_enc_room(&e, PROTO_TAG_LEN);
	proto_enc_var(&e, big, room - 1);
	proto_enc_msg_end(&e);
	/* Fits in the buffer but not with the tag. */
	assert_int_equal(proto_enc_finish(&e, PROTO_TAG_LEN), -ENOSPC);

	/* Overflow: sticky error, msg_abort returns to the last message. */
	proto_enc_init(&e, buf, 256, &h);
	p = proto_enc_msg_begin(&e, PROTO_T_CANCEL, sizeof(struct proto_cancel));
	proto_enc_msg_end(&e);
	len_before = e.len;
	assert_non_null(proto_enc_msg_begin(&e, PROTO_T_ERROR, sizeof(struct proto_error)));
	proto_enc_var(&e, big, 500);
	assert_int_equal(e.err, -ENOSPC);
	proto_enc_var(&e, "x", 1);	/* no-op */
	proto_enc_msg_end(&e);
	proto_enc_msg_abort(&e);
	assert_int_equal(e.err, 0);
	assert_int_equal(e.len, len_before);
	len = proto_enc_finish(&e, PROTO_TAG_LEN);
	assert_int_equal(len, len_before + PROTO_TAG_LEN);
	assert_int_equal(pipeline_rc(buf, len), 1);

	/* A message that does not even begin. */
	proto_enc_init(&e, buf, 80, &h);
	assert_null(proto_enc_msg_begin(&e, PROTO_T_DONE, sizeof(struct proto_done)));
	proto_enc_msg_abort(&e);
	assert_int_equal(proto_enc_finish(&e, PROTO_TAG_LEN), 64);

	/* proto_enc_infer leaves the encoder as it was when it fails. */
	proto_enc_init(&e, buf, 200, &h);
	len_before = e.len;
	assert_int_equal(proto_enc_infer(&e, &r), -ENOSPC);
	assert_int_equal(e.len, len_before);
	assert_int_equal(e.err, 0);
	assert_int_equal(e.count, 0);

	/* Programmer errors: nested message, finish with an open message. */
	proto_enc_init(&e, buf, BUF_CAP, &h);
	proto_enc_msg_begin(&e, PROTO_T_CANCEL, 8);
	assert_int_equal(proto_enc_finish(&e, PROTO_TAG_LEN), -EINVAL);
	assert_null(proto_enc_msg_begin(&e, PROTO_T_CANCEL, 8));
	assert_int_equal(e.err, -EINVAL);
	/* Var data longer than its u16 length. */
	proto_enc_init(&e, buf, BUF_CAP, &h);
	proto_enc_msg_begin(&e, PROTO_T_ERROR, 16);
	proto_enc_var(&e, big, 70000);
	assert_int_equal(e.err, -EINVAL);
}

/* ------------------------------------------------------------------------
 * Malformed datagrams: each rejected with exactly its reason.
 */

static int good_cancel(uint8_t *b)
{
	struct proto_pkt_hdr h = hdr_make(0);
	struct proto_enc e;

	proto_enc_init(&e, b, BUF_CAP, &h);
	((struct proto_cancel *)proto_enc_msg_begin(&e, PROTO_T_CANCEL, 8))
		->request_id = 1;
	proto_enc_msg_end(&e);
	return proto_enc_finish(&e, PROTO_TAG_LEN);
}

static struct proto_pkt_hdr *H(uint8_t *b)
{
	return (struct proto_pkt_hdr *)b;
}

static struct proto_msg_hdr *M(uint8_t *b)
{
	return (struct proto_msg_hdr *)(b + sizeof(struct proto_pkt_hdr));
}

static void test_bad_framing(void **state)
{
	struct proto_pkt_view v;
	int len;

	(void)state;
	len = good_cancel(buf);
	assert_int_equal(pipeline_rc(buf, len), 1);

	/* short */
	assert_int_equal(proto_pkt_parse(buf, 47, PROTO_MTU_MAX, &v), -PROTO_DROP_short);
	assert_int_equal(proto_pkt_parse(buf, 0, PROTO_MTU_MAX, &v), -PROTO_DROP_short);
	/* bad magic: any byte of it */
	for (int i = 0; i < 4; i++) {
		len = good_cancel(buf);
		buf[i] ^= 0x20;
		assert_int_equal(pipeline_rc(buf, len), -PROTO_DROP_bad_magic);
	}
	/* bad version */
	len = good_cancel(buf);
	H(buf)->version = 2;
	assert_int_equal(pipeline_rc(buf, len), -PROTO_DROP_bad_version);
	H(buf)->version = 0;
	assert_int_equal(pipeline_rc(buf, len), -PROTO_DROP_bad_version);
	/* bad flags: unknown bits; retransmitted control, heartbeat */
	for (unsigned bit = 4; bit < 8; bit++) {
		len = good_cancel(buf);
		H(buf)->flags |= (uint8_t)(1u << bit);
		assert_int_equal(pipeline_rc(buf, len), -PROTO_DROP_bad_flags);
	}
	len = good_cancel(buf);
	H(buf)->flags |= PROTO_F_RETRANS | PROTO_F_CTRL;
	assert_int_equal(pipeline_rc(buf, len), -PROTO_DROP_bad_flags);
	H(buf)->flags &= (uint8_t)~PROTO_F_CTRL;
	assert_int_equal(pipeline_rc(buf, len), 1);	/* data replay is fine */
	/* bad length: field disagrees, not a multiple of 8, no tag room */
	len = good_cancel(buf);
	H(buf)->length = (uint16_t)(len + 8);
	assert_int_equal(pipeline_rc(buf, len), -PROTO_DROP_bad_length);
	len = good_cancel(buf);
	assert_int_equal(pipeline(buf, (size_t)len - 1, &lim_default, &(unsigned){0}),
			 -PROTO_DROP_bad_length);
	H(buf)->length = (uint16_t)(len + 4);
	memset(buf + len, 0, 4);
	assert_int_equal(pipeline_rc(buf, len + 4), -PROTO_DROP_bad_length);
	{
		struct proto_pkt_hdr h = hdr_make(PROTO_F_AUTH);

		h.length = 56;
		memcpy(buf, &h, sizeof(h));
		memset(buf + 48, 0, 8);
		assert_int_equal(pipeline_rc(buf, 56), -PROTO_DROP_bad_length);
	}
	/* bad count: more messages than 8-byte units, messages in a
	 * heartbeat or an end of session */
	len = good_cancel(buf);
	H(buf)->msg_count = 3;
	assert_int_equal(pipeline_rc(buf, len), -PROTO_DROP_bad_count);
	H(buf)->msg_count = PROTO_COUNT_HEARTBEAT;
	assert_int_equal(pipeline_rc(buf, len), -PROTO_DROP_bad_count);
	H(buf)->msg_count = PROTO_COUNT_END;
	assert_int_equal(pipeline_rc(buf, len), -PROTO_DROP_bad_count);
	/* oversize: larger than the MTU given */
	len = good_cancel(buf);
	assert_int_equal(proto_pkt_parse(buf, (size_t)len, 64, &v), -PROTO_DROP_oversize);
	assert_int_equal(proto_pkt_parse(buf, (size_t)len, (size_t)len, &v), 0);
}

static void test_bad_msg_frame(void **state)
{
	int len;

	(void)state;
	/* bad msg length: too short, unaligned, past the end, block past
	 * the frame; messages missing; bytes after the last message */
	len = good_cancel(buf);
	M(buf)->length = 4;
	assert_int_equal(pipeline_rc(buf, len), -PROTO_DROP_bad_msg_length);
	M(buf)->length = 12;
	assert_int_equal(pipeline_rc(buf, len), -PROTO_DROP_bad_msg_length);
	M(buf)->length = 24;
	assert_int_equal(pipeline_rc(buf, len), -PROTO_DROP_bad_msg_length);
	M(buf)->length = 16;
	M(buf)->block_length = 9;
	assert_int_equal(pipeline_rc(buf, len), -PROTO_DROP_bad_msg_length);
	len = good_cancel(buf);
	M(buf)->length = 8;
	M(buf)->block_length = 0;	/* one message, 8 bytes left over */
	assert_int_equal(pipeline_rc(buf, len), -PROTO_DROP_bad_msg_length);
	H(buf)->msg_count = 2;		/* second message too short to frame */
	M(buf)->template_id = PROTO_T_STATUS_REQUEST;
	memset(buf + 56, 0, 4);
	assert_int_equal(pipeline_rc(buf, len), -PROTO_DROP_bad_msg_length);
	/* Two 12-byte messages fill 24 bytes exactly: only the alignment
	 * rule rejects them. */
	{
		struct proto_pkt_hdr h = hdr_make(0);
		struct proto_msg_hdr mh = { .length = 12, .block_length = 4,
					    .template_id = PROTO_T_STATUS_REQUEST,
					    .schema_id = PROTO_SCHEMA_ID, .version = 1 };

		h.msg_count = 2;
		h.length = sizeof(h) + 24;
		memset(buf, 0, sizeof(buf));
		memcpy(buf, &h, sizeof(h));
		memcpy(buf + sizeof(h), &mh, sizeof(mh));
		memcpy(buf + sizeof(h) + 12, &mh, sizeof(mh));
		assert_int_equal(pipeline_rc(buf, h.length), -PROTO_DROP_bad_msg_length);
		mh.length = 16;		/* and the same as 2 x 16 is fine */
		mh.block_length = 8;
		h.length = sizeof(h) + 32;
		memcpy(buf, &h, sizeof(h));
		memcpy(buf + sizeof(h), &mh, sizeof(mh));
		memcpy(buf + sizeof(h) + 16, &mh, sizeof(mh));
		assert_int_equal(pipeline_rc(buf, h.length), 2);
	}
	/* bad schema */
	len = good_cancel(buf);
	M(buf)->schema_id = 2;
	assert_int_equal(pipeline_rc(buf, len), -PROTO_DROP_bad_schema);
	/* a newer schema *version* is fine */
	M(buf)->schema_id = PROTO_SCHEMA_ID;
	M(buf)->version = 9;
	assert_int_equal(pipeline_rc(buf, len), 1);
}

/* Rewrite the INFER of @b in place: the first message's body offsets. */
static uint8_t *infer_body(uint8_t *b)
{
	return b + sizeof(struct proto_pkt_hdr) + sizeof(struct proto_msg_hdr) +
	       sizeof(struct proto_infer);
}

static void test_bad_structure(void **state)
{
	struct proto_infer_req r = infer_req_tokens();
	struct proto_group_hdr *g;
	int len;

	(void)state;
	/* short block: INFER root block below its minimum */
	len = enc_infer_dgram(buf, &r);
	M(buf)->block_length = sizeof(struct proto_infer) - 8;
	assert_int_equal(pipeline_rc(buf, len), -PROTO_DROP_short_block);
	/* truncated group: the prompt group claims more than the message */
	len = enc_infer_dgram(buf, &r);
	g = (struct proto_group_hdr *)infer_body(buf);
	g->num_in_group = 200;
	assert_int_equal(pipeline_rc(buf, len), -PROTO_DROP_truncated_group);
	/* bad group: entries smaller than a token id */
	len = enc_infer_dgram(buf, &r);
	g = (struct proto_group_hdr *)infer_body(buf);
	g->block_length = 2;
	assert_int_equal(pipeline_rc(buf, len), -PROTO_DROP_bad_group);
	g->block_length = 8;		/* token ids never grow */
	g->num_in_group = 30;
	assert_int_equal(pipeline_rc(buf, len), -PROTO_DROP_bad_group);
	/* bad group: logit bias entries smaller than {token, bias} */
	len = enc_infer_dgram(buf, &r);
	g = (struct proto_group_hdr *)(infer_body(buf) + 4 + 240 + 4 + 12);
	assert_int_equal(g->num_in_group, 2);
	g->block_length = 4;
	assert_int_equal(pipeline_rc(buf, len), -PROTO_DROP_bad_group);
	/* oversize: more stop tokens than PROTO_STOP_TOKENS_MAX */
	{
		static uint32_t many[PROTO_STOP_TOKENS_MAX + 1];
		struct proto_infer_req r2 = r;

		r2.stop_tokens = many;
		r2.n_stop_tokens = PROTO_STOP_TOKENS_MAX + 1;
		len = enc_infer_dgram(buf, &r2);
		assert_int_equal(pipeline_rc(buf, len), -PROTO_DROP_oversize);
		r2.n_stop_tokens = PROTO_STOP_TOKENS_MAX;
		len = enc_infer_dgram(buf, &r2);
		assert_int_equal(pipeline_rc(buf, len), 1);
	}
	/* truncated var: the model name's length runs past the message */
	r.n_stop_seqs = 0;
	len = enc_infer_dgram(buf, &r);
	{
		uint8_t *model = infer_body(buf) + 4 + 240 + 4 + 12 + 4 + 16 + 4 + 4;
		uint16_t l;

		memcpy(&l, model, 2);
		assert_int_equal(l, strlen("tiny-llama"));
		l = 500;
		memcpy(model, &l, 2);
		assert_int_equal(pipeline_rc(buf, len), -PROTO_DROP_truncated_var);
	}
	/* truncated var inside a var group: a stop sequence */
	r = infer_req_tokens();
	len = enc_infer_dgram(buf, &r);
	{
		uint8_t *seq0 = infer_body(buf) + 4 + 240 + 4 + 12 + 4 + 16 + 4;
		uint16_t l = 1000;

		memcpy(seq0, &l, 2);
		assert_int_equal(pipeline_rc(buf, len), -PROTO_DROP_truncated_var);
	}
	/* truncated group: a var group whose entries cannot all fit */
	len = enc_infer_dgram(buf, &r);
	g = (struct proto_group_hdr *)(infer_body(buf) + 4 + 240 + 4 + 12 + 4 + 16);
	assert_int_equal(g->num_in_group, 3);
	g->block_length = 300;
	assert_int_equal(pipeline_rc(buf, len), -PROTO_DROP_truncated_group);
}

/* Each INFER value out of range, one at a time: exactly its reason. */
struct infer_case {
	const char *what;
	void (*mut)(struct proto_infer_req *r);
	int want;
};

#define MUT(name, ...) \
	static void mut_##name(struct proto_infer_req *r) { __VA_ARGS__; }
MUT(temp_neg, r->f.temperature = -0.01f)
MUT(temp_big, r->f.temperature = 100.5f)
MUT(temp_nan, r->f.temperature = NAN)
MUT(temp_inf, r->f.temperature = INFINITY)
MUT(top_p_big, r->f.top_p = 1.0001f)
MUT(top_p_neg, r->f.top_p = -0.1f)
MUT(top_p_nan, r->f.top_p = NAN)
MUT(min_p_big, r->f.min_p = 1.5f)
MUT(min_p_neg, r->f.min_p = -1e-6f)
MUT(rep_neg, r->f.repetition_penalty = -1.0f)
MUT(rep_big, r->f.repetition_penalty = 10.5f)
MUT(rep_nan, r->f.repetition_penalty = NAN)
MUT(pres_big, r->f.presence_penalty = 2.5f)
MUT(pres_neg, r->f.presence_penalty = -2.01f)
MUT(freq_big, r->f.frequency_penalty = 3.0f)
MUT(freq_inf, r->f.frequency_penalty = -INFINITY)
MUT(top_k_big, r->f.top_k = 32001)
MUT(logprobs_big, r->f.logprobs = PROTO_LOGPROBS_MAX + 1)
MUT(stream_bad, r->f.stream = 3)
MUT(stream_k_zero, r->f.stream = PROTO_STREAM_EVERY_K; r->f.stream_k = 0)
MUT(max_zero_ok, r->f.max_tokens = 0; r->f.min_tokens = 4096)
MUT(max_zero_min_big, r->f.max_tokens = 0; r->f.min_tokens = 4097)
MUT(max_over_limit, r->f.max_tokens = 4097)
MUT(min_over_max, r->f.min_tokens = 300)
MUT(flag_unknown, r->f.flags |= 0x100)
MUT(no_prompt_kind, r->f.flags = 0)
MUT(two_prompt_kinds, r->f.flags |= PROTO_INFER_PROMPT_TEXT; r->prompt_text = "x";
    r->prompt_text_len = 1)
MUT(kind_without_prompt, r->n_prompt_tokens = 0)
MUT(text_besides_tokens, r->prompt_text = "x"; r->prompt_text_len = 1)
MUT(chat_besides_tokens, r->msg_roles = roles; r->msg_texts = texts; r->n_messages = 1)
MUT(chat_role_bad, static const struct proto_chat_msg bad[1] = { { .role = 3 } };
    static const char *const t[1] = { "hi" };
    r->f.flags = PROTO_INFER_CHAT; r->prompt_tokens = NULL; r->n_prompt_tokens = 0;
    r->msg_roles = bad; r->msg_texts = t; r->n_messages = 1)
MUT(bias_big, static const struct proto_logit_bias b[1] = { { 5, 101.0f } };
    r->logit_bias = b; r->n_logit_bias = 1)
MUT(bias_nan, static const struct proto_logit_bias b[1] = { { 5, NAN } };
    r->logit_bias = b; r->n_logit_bias = 1)
MUT(stop_seq_empty, static const char *const s[2] = { "a", "" };
    r->stop_seqs = s; r->n_stop_seqs = 2)
MUT(model_long, r->model = "an-extremely-long-model-name-that-goes-on-and-on-"
			   "well-past-64-bytes")
/* bad_token */
MUT(prompt_token_oov, prompt_toks[59] = 32000)
MUT(stop_token_oov, static const uint32_t s[1] = { 0xffffffffu };
    r->stop_tokens = s; r->n_stop_tokens = 1)
MUT(bias_token_oov, static const struct proto_logit_bias b[1] = { { 40000, 1.0f } };
    r->logit_bias = b; r->n_logit_bias = 1)
/* bad_utf8 */
MUT(utf8_prompt, r->f.flags = PROTO_INFER_PROMPT_TEXT; r->n_prompt_tokens = 0;
    r->prompt_text = "ok \xc0\xaf"; r->prompt_text_len = 5)
MUT(utf8_model, r->model = "m\xed\xa0\x80")
MUT(utf8_version, r->version = "\xf4\x90\x80\x80")
MUT(utf8_stop, static const char *const s[1] = { "\xe2\x82" };
    r->stop_seqs = s; r->n_stop_seqs = 1)
MUT(utf8_chat, static const struct proto_chat_msg ro[1] = { { .role = 1 } };
    static const char *const t[1] = { "\x80" };
    r->f.flags = PROTO_INFER_CHAT; r->prompt_tokens = NULL; r->n_prompt_tokens = 0;
    r->msg_roles = ro; r->msg_texts = t; r->n_messages = 1)
/* oversize */
MUT(prompt_too_long, static uint32_t t[4097]; r->prompt_tokens = t;
    r->n_prompt_tokens = 4097)
MUT(text_too_long, static char t[16385]; memset(t, 'a', sizeof(t));
    r->f.flags = PROTO_INFER_PROMPT_TEXT; r->n_prompt_tokens = 0;
    r->prompt_text = t; r->prompt_text_len = sizeof(t))
MUT(stop_seqs_too_long, static char t[16390]; memset(t, 'a', sizeof(t) - 1);
    static const char *s[1] = { t }; r->stop_seqs = s; r->n_stop_seqs = 1)
MUT(too_many_stop_seqs, static const char *const s[9] = { "1", "2", "3", "4", "5",
								"6", "7", "8", "9" };
    r->stop_seqs = s; r->n_stop_seqs = 9)
/* accepted edges */
MUT(edges_ok, r->f.temperature = 100.0f; r->f.top_p = 1.0f; r->f.min_p = 0.0f;
    r->f.repetition_penalty = 10.0f; r->f.presence_penalty = -2.0f;
    r->f.frequency_penalty = 2.0f; r->f.top_k = 32000; r->f.logprobs = 8;
    r->f.max_tokens = 4096; r->f.min_tokens = 4096; r->f.stream = PROTO_STREAM_SENTENCE;
    r->f.stream_k = 0; r->f.priority = 255)
MUT(zeros_ok, r->f.temperature = 0; r->f.top_p = 0; r->f.min_p = 0;
    r->f.repetition_penalty = 0; r->f.presence_penalty = 0;
    r->f.frequency_penalty = 0; r->f.top_k = 0; r->f.logprobs = 0;
    r->f.min_tokens = 0; r->f.stream = PROTO_STREAM_TOKEN)

static const struct infer_case infer_cases[] = {
#define C(name, want) { #name, mut_##name, want }
	C(temp_neg, -PROTO_DROP_bad_param),
	C(temp_big, -PROTO_DROP_bad_param),
	C(temp_nan, -PROTO_DROP_bad_param),
	C(temp_inf, -PROTO_DROP_bad_param),
	C(top_p_big, -PROTO_DROP_bad_param),
	C(top_p_neg, -PROTO_DROP_bad_param),
	C(top_p_nan, -PROTO_DROP_bad_param),
	C(min_p_big, -PROTO_DROP_bad_param),
	C(min_p_neg, -PROTO_DROP_bad_param),
	C(rep_neg, -PROTO_DROP_bad_param),
	C(rep_big, -PROTO_DROP_bad_param),
	C(rep_nan, -PROTO_DROP_bad_param),
	C(pres_big, -PROTO_DROP_bad_param),
	C(pres_neg, -PROTO_DROP_bad_param),
	C(freq_big, -PROTO_DROP_bad_param),
	C(freq_inf, -PROTO_DROP_bad_param),
	C(top_k_big, -PROTO_DROP_bad_param),
	C(logprobs_big, -PROTO_DROP_bad_param),
	C(stream_bad, -PROTO_DROP_bad_param),
	C(stream_k_zero, -PROTO_DROP_bad_param),
	C(max_zero_ok, 0),
	C(max_zero_min_big, -PROTO_DROP_bad_param),
	C(max_over_limit, -PROTO_DROP_bad_param),
	C(min_over_max, -PROTO_DROP_bad_param),
	C(flag_unknown, -PROTO_DROP_bad_param),
	C(no_prompt_kind, -PROTO_DROP_bad_param),
	C(two_prompt_kinds, -PROTO_DROP_bad_param),
	C(kind_without_prompt, -PROTO_DROP_bad_param),
	C(text_besides_tokens, -PROTO_DROP_bad_param),
	C(chat_besides_tokens, -PROTO_DROP_bad_param),
	C(chat_role_bad, -PROTO_DROP_bad_param),
	C(bias_big, -PROTO_DROP_bad_param),
	C(bias_nan, -PROTO_DROP_bad_param),
	C(stop_seq_empty, -PROTO_DROP_bad_param),
	C(model_long, -PROTO_DROP_bad_param),
	C(prompt_token_oov, -PROTO_DROP_bad_token),
	C(stop_token_oov, -PROTO_DROP_bad_token),
	C(bias_token_oov, -PROTO_DROP_bad_token),
	C(utf8_prompt, -PROTO_DROP_bad_utf8),
	C(utf8_model, -PROTO_DROP_bad_utf8),
	C(utf8_version, -PROTO_DROP_bad_utf8),
	C(utf8_stop, -PROTO_DROP_bad_utf8),
	C(utf8_chat, -PROTO_DROP_bad_utf8),
	C(prompt_too_long, -PROTO_DROP_oversize),
	C(text_too_long, -PROTO_DROP_oversize),
	C(too_many_stop_seqs, -PROTO_DROP_oversize),
	C(stop_seqs_too_long, -PROTO_DROP_oversize),
	C(edges_ok, 0),
	C(zeros_ok, 0),
#undef C
};

static void test_infer_values(void **state)
{
	static _Alignas(8) uint8_t big[80000];

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(infer_cases); i++) {
		struct proto_infer_req r = infer_req_tokens();
		struct proto_pkt_hdr h = hdr_make(0);
		struct proto_infer_view v;
		struct proto_enc e;
		struct proto_msg m;
		int got;

		infer_cases[i].mut(&r);
		/* Encode the message alone (it may exceed a datagram) and
		 * frame it as a reassembled message. */
		proto_enc_init(&e, big, sizeof(big), &h);
		assert_int_equal(proto_enc_infer(&e, &r), 0);
		assert_int_equal(proto_msg_parse(big + sizeof(h), e.len - sizeof(h), &m), 0);
		got = proto_decode_infer(&m, &lim_default, &v);
		if (got != infer_cases[i].want)
			fail_msg("case %s: got %s, want %s", infer_cases[i].what,
				 proto_drop_name(got), proto_drop_name(infer_cases[i].want));
	}
	/* Limits of 0 are not checked. */
	{
		struct proto_infer_req r = infer_req_tokens();
		struct proto_limits none = { 0 };
		struct proto_infer_view v;
		struct proto_msg m;

		prompt_toks[0] = 0xfffffff0u;
		r.f.top_k = 1u << 30;
		r.f.max_tokens = 1u << 30;
		parse_first(buf, enc_infer_dgram(buf, &r), &m);
		assert_int_equal(proto_decode_infer(&m, &none, &v), 0);
		assert_int_equal(proto_decode_infer(&m, &lim_default, &v),
				 -PROTO_DROP_bad_param);
	}
}

static void test_bad_tokens_logon_fragment(void **state)
{
	static const uint32_t ids[2] = { 1, 2 };
	struct proto_logprob lp[4] = { { 0 } };
	struct proto_tokens f = { .request_id = 1, .top_logprobs = 1 };
	struct proto_pkt_hdr h = hdr_make(PROTO_F_CTRL);
	struct proto_enc e;
	struct proto_logon *lb;
	int len;

	(void)state;
	/* TOKENS: logprob count must be n * (1 + top) */
	assert_int_equal(pipeline_rc(buf, enc_tokens(buf, &f, ids, 2, lp, 4, "ab")), 1);
	assert_int_equal(pipeline_rc(buf, enc_tokens(buf, &f, ids, 2, lp, 3, "ab")),
			 -PROTO_DROP_bad_param);
	f.top_logprobs = 9;
	assert_int_equal(pipeline_rc(buf, enc_tokens(buf, &f, ids, 2, NULL, 0, "ab")),
			 -PROTO_DROP_bad_param);
	f.top_logprobs = 0;
	assert_int_equal(pipeline_rc(buf, enc_tokens(buf, &f, ids, 2, NULL, 0, "\xff")),
			 -PROTO_DROP_bad_utf8);

	/* LOGON: MTU out of range, name too long, short block */
	for (int k = 0; k < 4; k++) {
		static const char name65[] = "0123456789012345678901234567890123456789"
					     "0123456789012345678901234";
		const char *name = k == 2 ? name65 : "c";

		proto_enc_init(&e, buf, BUF_CAP, &h);
		lb = proto_enc_msg_begin(&e, PROTO_T_LOGON, k == 3 ? 32 : sizeof(*lb));
		if (k < 3)
			lb->mtu = k == 0 ? 511 : k == 1 ? 8968 : 1408;
		proto_enc_var(&e, name, strlen(name));
		proto_enc_msg_end(&e);
		len = proto_enc_finish(&e, PROTO_TAG_LEN);
		assert_int_equal(pipeline_rc(buf, len),
				 k == 3 ? -PROTO_DROP_short_block : -PROTO_DROP_bad_param);
	}

	/* FRAGMENT: inconsistent pieces */
	{
		static const struct {
			struct proto_fragment f;
			size_t n;
			int ok;
		} fc[] = {
			{ { 1, 0, PROTO_FRAG_BEGIN, 64, 0 }, 32, 1 },
			{ { 1, 1, 0, 64, 16 }, 16, 1 },
			{ { 1, 2, PROTO_FRAG_END, 64, 48 }, 16, 1 },
			{ { 1, 0, PROTO_FRAG_BEGIN | PROTO_FRAG_END, 64, 0 }, 64, 0 },
			{ { 1, 1, PROTO_FRAG_BEGIN, 64, 0 }, 32, 0 },	/* index */
			{ { 1, 0, 0, 64, 0 }, 32, 0 },			/* no BEGIN */
			{ { 1, 2, 0, 64, 48 }, 16, 0 },			/* no END */
			{ { 1, 1, PROTO_FRAG_END, 64, 48 }, 24, 0 },	/* past total */
			{ { 1, 1, 0, 64, 70 }, 8, 0 },			/* offset */
			{ { 1, 1, 0x4, 64, 8 }, 8, 0 },			/* flag */
			{ { 1, 0, PROTO_FRAG_BEGIN, 60, 0 }, 8, 0 },	/* total % 8 */
			{ { 1, 0, PROTO_FRAG_BEGIN, 70000, 0 }, 8, 0 },	/* total */
			{ { 1, 1, 0, 64, 8 }, 0, 0 },			/* empty */
		};
		static const uint8_t data[64];

		for (size_t i = 0; i < ARRAY_SIZE(fc); i++) {
			len = enc_fragment(buf, &fc[i].f, data, fc[i].n);
			if (pipeline_rc(buf, len) != (fc[i].ok ? 1 : -PROTO_DROP_bad_fragment))
				fail_msg("fragment case %zu", i);
		}
	}
}

/* Every drop reason has its own name; every error code its HTTP status. */
static void test_names(void **state)
{
	(void)state;
	for (int i = 1; i < PROTO_DROP__COUNT; i++) {
		assert_string_not_equal(proto_drop_name(i), "?");
		assert_string_equal(proto_drop_name(-i), proto_drop_name(i));
		for (int j = 1; j < i; j++)
			assert_string_not_equal(proto_drop_name(i), proto_drop_name(j));
	}
	assert_string_equal(proto_drop_name(-PROTO_DROP_bad_tag), "bad_tag");
	assert_string_equal(proto_drop_name(PROTO_DROP__COUNT), "?");
	assert_int_equal(proto_err_http(PROTO_E_INVALID), 400);
	assert_int_equal(proto_err_http(PROTO_E_INVALID_PARAM), 422);
	assert_int_equal(proto_err_http(PROTO_E_UNKNOWN_MODEL), 404);
	assert_int_equal(proto_err_http(PROTO_E_OVERLOADED), 429);
	assert_int_equal(proto_err_http(PROTO_E_DEADLINE), 504);
	assert_int_equal(proto_err_http(PROTO_E_NOT_READY), 503);
	assert_int_equal(proto_err_http(PROTO_E_INTERNAL), 500);
	assert_int_equal(proto_err_http(999), 500);
	assert_string_equal(proto_err_name(PROTO_E_OVERLOADED), "OVERLOADED");
	assert_string_equal(proto_err_name(999), "?");
}

/* ------------------------------------------------------------------------
 * UTF-8.
 */

static void test_utf8_cases(void **state)
{
	static const struct {
		const char *s;
		bool ok;
	} tab[] = {
		{ "", true }, { "plain ascii text, longer than eight", true },
		{ "\xc2\x80", true }, { "\xdf\xbf", true },		/* U+0080, U+07FF */
		{ "\xe0\xa0\x80", true }, { "\xef\xbf\xbf", true },	/* U+0800, U+FFFF */
		{ "\xed\x9f\xbf", true }, { "\xee\x80\x80", true },	/* U+D7FF, U+E000 */
		{ "\xf0\x90\x80\x80", true }, { "\xf4\x8f\xbf\xbf", true }, /* U+10000, max */
		{ "h\xc3\xa9llo w\xc3\xb6rld \xf0\x9f\x98\x80!", true },
		/* overlongs */
		{ "\xc0\x80", false }, { "\xc1\xbf", false }, { "\xe0\x80\x80", false },
		{ "\xe0\x9f\xbf", false }, { "\xf0\x80\x80\x80", false },
		{ "\xf0\x8f\xbf\xbf", false },
		/* surrogates */
		{ "\xed\xa0\x80", false }, { "\xed\xbf\xbf", false },
		{ "\xed\xb2\x80", false },
		/* above U+10FFFF */
		{ "\xf4\x90\x80\x80", false }, { "\xf5\x80\x80\x80", false },
		{ "\xf7\xbf\xbf\xbf", false }, { "\xf8\x88\x80\x80\x80", false },
		{ "\xff", false }, { "\xfe", false },
		/* truncated */
		{ "\xc3", false }, { "\xe2\x82", false }, { "\xf0\x9f\x98", false },
		{ "abcdefgh\xe2\x82", false },
		/* stray or bad continuation */
		{ "\x80", false }, { "\xbf", false }, { "\xc3\x28", false },
		{ "\xe2\x28\xa1", false }, { "\xe2\x82\x28", false },
		{ "\xf0\x9f\x98\x28", false },
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(tab); i++) {
		size_t n = strlen(tab[i].s);

		if (proto_utf8_valid(tab[i].s, n) != tab[i].ok)
			fail_msg("utf8 case %zu", i);
		assert_true(ref_utf8_valid((const uint8_t *)tab[i].s, n) == tab[i].ok);
	}
	/* Embedded NUL is a valid code point. */
	assert_true(proto_utf8_valid("a\0b", 3));
}

/* Every 1-, 2- and 3-byte string, and 2^22 4-byte ones, against the
 * reference; also each with ASCII around it (fast path boundaries). */
static void test_utf8_exhaustive(void **state)
{
	uint8_t s[16];

	(void)state;
	for (uint32_t x = 0; x < (1u << 24); x++) {
		size_t n = x < 0x100 ? 1 : x < 0x10000 ? 2 : 3;

		for (size_t k = 0; k < n; k++)
			s[k] = (uint8_t)(x >> (8 * (n - 1 - k)));
		if (proto_utf8_valid((char *)s, n) != ref_utf8_valid(s, n))
			fail_msg("utf8 mismatch on %06x (%zu bytes)", x, n);
	}
	/* all 3-byte strings, also those whose first byte is < 0x01 etc. */
	for (uint32_t x = 0; x < (1u << 24); x += 0x1f) {
		memcpy(s, "abcdefg", 7);
		s[7] = (uint8_t)(x >> 16), s[8] = (uint8_t)(x >> 8), s[9] = (uint8_t)x;
		if (proto_utf8_valid((char *)s, 10) != ref_utf8_valid(s, 10))
			fail_msg("utf8 mismatch on 7+%06x", x);
	}
	for (uint32_t i = 0; i < (1u << 22); i++) {
		uint32_t x = (uint32_t)rnd();

		s[0] = (uint8_t)(0xf0 | ((x >> 24) & 0x07));
		s[1] = (uint8_t)(x >> 16), s[2] = (uint8_t)(x >> 8), s[3] = (uint8_t)x;
		if (i & 1)		/* mostly-valid continuations */
			s[2] = (uint8_t)(0x80 | (s[2] & 0x3f)),
			s[3] = (uint8_t)(0x80 | (s[3] & 0x3f));
		if (proto_utf8_valid((char *)s, 4) != ref_utf8_valid(s, 4))
			fail_msg("utf8 mismatch on %02x%02x%02x%02x", s[0], s[1], s[2], s[3]);
	}
}

static void test_utf8_complete_prefix(void **state)
{
	static const char txt[] = "a\xc3\xa9" "\xe2\x82\xac" "\xf0\x9f\x98\x80";
	const size_t n = sizeof(txt) - 1;	/* a é € 😀 = 1 + 2 + 3 + 4 */

	(void)state;
	/* Cut at every length: the prefix ends on the last boundary. */
	static const size_t want[] = { 0, 1, 1, 3, 3, 3, 6, 6, 6, 6, 10 };
	for (size_t len = 0; len <= n; len++) {
		size_t p = proto_utf8_complete_prefix(txt, len);

		if (p != want[len])
			fail_msg("prefix(%zu) = %zu, want %zu", len, p, want[len]);
		assert_true(proto_utf8_valid(txt, p));
	}
	/* Bytes that can never become valid are not held back (the text is
	 * rejected elsewhere, not stalled here). */
	assert_int_equal(proto_utf8_complete_prefix("ab\xff", 3), 3);
	assert_int_equal(proto_utf8_complete_prefix("ab\xed\xa0", 4), 4);
	assert_int_equal(proto_utf8_complete_prefix("ab\xed\x9f", 4), 2);
	assert_int_equal(proto_utf8_complete_prefix("\x80\x80\x80\x80", 4), 4);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_infer_roundtrip_tokens),
		cmocka_unit_test(test_infer_roundtrip_text_and_chat),
		cmocka_unit_test(test_block_only_roundtrip),
		cmocka_unit_test(test_logon_roundtrip),
		cmocka_unit_test(test_reject_error_logout_roundtrip),
		cmocka_unit_test(test_tokens_done_roundtrip),
		cmocka_unit_test(test_fragment_roundtrip),
		cmocka_unit_test(test_heartbeat_and_end),
		cmocka_unit_test(test_newer_sender),
		cmocka_unit_test(test_older_sender),
		cmocka_unit_test(test_unknown_template_skipped),
		cmocka_unit_test(test_padding),
		cmocka_unit_test(test_encoder_limits),
		cmocka_unit_test(test_bad_framing),
		cmocka_unit_test(test_bad_msg_frame),
		cmocka_unit_test(test_bad_structure),
		cmocka_unit_test(test_infer_values),
		cmocka_unit_test(test_bad_tokens_logon_fragment),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_utf8_cases),
		cmocka_unit_test(test_utf8_exhaustive),
		cmocka_unit_test(test_utf8_complete_prefix),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
