// SPDX-License-Identifier: MIT
/*
 * fuzz_decode.c — libFuzzer target over the wire decoder: proto_pkt_parse,
 * message iteration and every proto_decode_* (built with clang, ASan and
 * UBSan by `make check-fuzz` / `make fuzz`).
 *
 * Each input is tried two ways: as a whole datagram, and as one bare message
 * frame (a reassembled FRAGMENT payload), so that message bodies are reached
 * without the header's constraints in the way.  Besides "no crash, no
 * out-of-bounds read", it checks properties that must hold for any input:
 *   - every view returned points inside the input;
 *   - an INFER that decodes, re-encoded with proto_enc_infer(), decodes to
 *     the same fields (decode and encode agree);
 *   - proto_utf8_valid() agrees with a reference decoder, and
 *     proto_utf8_complete_prefix() never cuts a valid text.
 *
 * Seeds: `fuzz_decode --write-seeds DIR` writes the seed corpus (kept in
 * tests/fuzz/corpus/decode/) from the encoder, one file per template and
 * per malformed class, and exits.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <velo/codec.h>
#include <velo/compiler.h>

#include "../unit/ref_utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define FUZZ_CAP 65536

static _Alignas(8) uint8_t in[FUZZ_CAP];
static _Alignas(8) uint8_t re[FUZZ_CAP];
static const uint8_t *in_lo, *in_hi;	/* bounds of the current input */

static void inside(const void *p, size_t n)
{
	const uint8_t *b = p;

	if (n == 0)
		return;
	if (b < in_lo || b > in_hi || n > (size_t)(in_hi - b))
		__builtin_trap();
}

static void str_inside(const struct proto_str *s)
{
	inside(s->p, s->len);
}

static void check_utf8(const uint8_t *s, size_t n)
{
	bool ok = proto_utf8_valid((const char *)s, n);
	size_t p = proto_utf8_complete_prefix((const char *)s, n);

	if (ok != ref_utf8_valid(s, n) || p > n || (ok && p != n))
		__builtin_trap();
}

/* Decode -> encode -> decode of an INFER gives the same fields. */
static void infer_reencode(const struct proto_infer_view *v,
			   const struct proto_limits *lim)
{
	static uint32_t toks[0x10000], stops[PROTO_STOP_TOKENS_MAX];
	static struct proto_logit_bias lb[PROTO_LOGIT_BIAS_MAX];
	static char strs[PROTO_STOP_SEQ_MAX + PROTO_CHAT_MSGS_MAX + 3][0x10000 + 1];
	static const char *seqs[PROTO_STOP_SEQ_MAX];
	static const char *texts[PROTO_CHAT_MSGS_MAX];
	static struct proto_chat_msg roles[PROTO_CHAT_MSGS_MAX];
	struct proto_infer_req r;
	struct proto_infer_view v2;
	struct proto_group_var it = v->messages;
	struct proto_pkt_hdr h;
	struct proto_enc e;
	struct proto_msg m;
	const uint8_t *blk;
	struct proto_str s;
	unsigned ns = 0;
	int rc;

	memset(&r, 0, sizeof(r));
	r.f = v->f;
	for (uint32_t i = 0; i < v->n_prompt_tokens; i++)
		toks[i] = proto_u32_at(v->prompt_tokens, i);
	for (uint32_t i = 0; i < v->n_stop_tokens; i++)
		stops[i] = proto_u32_at(v->stop_tokens, i);
	for (uint32_t i = 0; i < v->logit_bias.n; i++)
		memcpy(&lb[i], v->logit_bias.entries + (size_t)i * v->logit_bias.stride,
		       sizeof(lb[i]));
	/* Text goes through NUL-terminated strings in proto_infer_req, so
	 * texts with a NUL byte are not compared. */
#define CSTR(dst, src)                                                        \
	do {                                                                  \
		if (memchr((src).p, 0, (src).len))                            \
			return;                                               \
		memcpy(strs[ns], (src).p, (src).len);                         \
		strs[ns][(src).len] = 0;                                      \
		(dst) = strs[ns++];                                           \
	} while (0)
	for (uint32_t i = 0; i < v->n_stop_seqs; i++)
		CSTR(seqs[i], v->stop_seqs[i]);
	for (uint32_t i = 0; proto_group_var_next(&it, &blk, &s) == 1; i++) {
		memcpy(&roles[i], blk, sizeof(roles[i]));
		CSTR(texts[i], s);
	}
	CSTR(r.model, v->model);
	CSTR(r.version, v->version);
#undef CSTR
	r.prompt_tokens = toks;
	r.n_prompt_tokens = v->n_prompt_tokens;
	r.stop_tokens = stops;
	r.n_stop_tokens = v->n_stop_tokens;
	r.logit_bias = lb;
	r.n_logit_bias = v->logit_bias.n;
	r.stop_seqs = seqs;
	r.n_stop_seqs = v->n_stop_seqs;
	r.msg_roles = roles;
	r.msg_texts = texts;
	r.n_messages = v->n_messages;
	r.prompt_text = v->prompt_text.p;
	r.prompt_text_len = v->prompt_text.len;

	memset(&h, 0, sizeof(h));
	proto_enc_init(&e, re, sizeof(re), &h);
	rc = proto_enc_infer(&e, &r);
	if (rc)
		return;		/* larger than one message can be: fine */
	if (e.len - sizeof(h) != proto_infer_msg_size(&r))
		__builtin_trap();
	if (proto_msg_parse(re + sizeof(h), e.len - sizeof(h), &m) ||
	    proto_decode_infer(&m, lim, &v2))
		__builtin_trap();
	if (memcmp(&v2.f, &v->f, sizeof(v->f)) ||
	    v2.n_prompt_tokens != v->n_prompt_tokens ||
	    v2.n_stop_tokens != v->n_stop_tokens ||
	    v2.logit_bias.n != v->logit_bias.n ||
	    v2.n_stop_seqs != v->n_stop_seqs || v2.n_messages != v->n_messages ||
	    v2.prompt_text.len != v->prompt_text.len ||
	    memcmp(v2.prompt_text.p, v->prompt_text.p, v->prompt_text.len) ||
	    v2.model.len != v->model.len ||
	    memcmp(v2.model.p, v->model.p, v->model.len))
		__builtin_trap();
	for (uint32_t i = 0; i < v->n_prompt_tokens; i++)
		if (proto_u32_at(v2.prompt_tokens, i) != toks[i])
			__builtin_trap();
}

static void decode_one(const struct proto_msg *m)
{
	static const struct proto_limits lims[2] = {
		{ .vocab_size = 32000, .prompt_tokens_max = 4096,
		  .max_tokens_max = 4096, .text_bytes_max = 16384 },
		{ 0 },
	};
	union {
		struct proto_infer_view infer;
		struct proto_tokens_view tokens;
		struct proto_done_view done;
		struct proto_reject_view reject;
		struct proto_error_view error;
		struct proto_logon_view logon;
		struct proto_fragment_view frag;
		uint8_t block[256];
	} u;

	inside(m->raw, m->raw_len);
	inside(m->block, m->block_len);
	inside(m->body, m->body_len);
	switch (m->template_id) {
	case PROTO_T_INFER:
		for (unsigned k = 0; k < 2; k++) {
			if (proto_decode_infer(m, &lims[k], &u.infer))
				continue;
			inside(u.infer.prompt_tokens, 4u * u.infer.n_prompt_tokens);
			inside(u.infer.stop_tokens, 4u * u.infer.n_stop_tokens);
			inside(u.infer.logit_bias.entries,
			       (size_t)u.infer.logit_bias.n * u.infer.logit_bias.stride);
			for (uint32_t i = 0; i < u.infer.n_stop_seqs; i++)
				str_inside(&u.infer.stop_seqs[i]);
			str_inside(&u.infer.model);
			str_inside(&u.infer.version);
			str_inside(&u.infer.prompt_text);
			infer_reencode(&u.infer, &lims[k]);
		}
		break;
	case PROTO_T_TOKENS:
		if (proto_decode_tokens(m, &u.tokens) == 0) {
			inside(u.tokens.tokens, 4u * u.tokens.n_tokens);
			str_inside(&u.tokens.text);
		}
		break;
	case PROTO_T_DONE:
		if (proto_decode_done(m, &u.done) == 0) {
			str_inside(&u.done.model);
			str_inside(&u.done.version);
		}
		break;
	case PROTO_T_REJECT:
		if (proto_decode_reject(m, &u.reject) == 0)
			str_inside(&u.reject.text);
		break;
	case PROTO_T_ERROR:
	case PROTO_T_LOGON_REJECT:
	case PROTO_T_LOGOUT:
		if (proto_decode_error(m, &u.error) == 0)
			str_inside(&u.error.text);
		break;
	case PROTO_T_LOGON:
		if (proto_decode_logon(m, &u.logon) == 0)
			str_inside(&u.logon.client_name);
		break;
	case PROTO_T_FRAGMENT:
		if (proto_decode_fragment(m, &u.frag) == 0) {
			str_inside(&u.frag.data);
			if (u.frag.f.offset + u.frag.data.len > u.frag.f.total_length)
				__builtin_trap();
		}
		break;
	default:
		/* Root-block-only templates and unknown ones. */
		proto_block_get(m, u.block, sizeof(u.block), 0);
		break;
	}
	/* Cursor walk with generic shapes: whatever the template says. */
	{
		struct proto_cursor c;
		struct proto_group g;
		struct proto_group_var gv;
		struct proto_str s;
		const uint8_t *blk;

		proto_cursor_init(&c, m);
		if (proto_cursor_group(&c, 1, 0xffff, &g) == 0)
			inside(g.entries, (size_t)g.n * g.stride);
		if (proto_cursor_group_var(&c, 0, 64, &gv) == 0)
			while (proto_group_var_next(&gv, &blk, &s) == 1)
				str_inside(&s);
		while (c.p < c.end && proto_cursor_var(&c, &s) == 0) {
			str_inside(&s);
			if (s.len == 0)
				break;
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proto_pkt_view v;
	struct proto_msg_iter it;
	struct proto_msg m;
	int rc;

	if (size > FUZZ_CAP)
		return 0;
	/* Datagram buffers are 8-byte aligned (codec.h contract). */
	memcpy(in, data, size);
	in_lo = in;
	in_hi = in + size;

	rc = proto_pkt_parse(in, size, PROTO_MTU_MAX, &v);
	if (rc == 0) {
		inside(v.msgs, v.msgs_len);
		if (v.tag)
			inside(v.tag, PROTO_TAG_LEN);
		proto_msg_iter_init(&it, &v);
		for (unsigned n = 0; (rc = proto_msg_next(&it, &m)) == 1; n++) {
			if (n >= PROTO_COUNT_MAX)
				__builtin_trap();
			decode_one(&m);
		}
	} else if (rc >= 0 || -rc >= PROTO_DROP__COUNT) {
		__builtin_trap();
	}
	if (proto_msg_parse(in, size, &m) == 0)
		decode_one(&m);
	check_utf8(in, size);
	return 0;
}

/* ------------------------------------------------------------------------
 * Seed corpus writer.
 */

static const char *seed_dir;
static unsigned seed_n;

static void seed_write(const char *name, const void *p, size_t n)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%02u-%s", seed_dir, seed_n++, name);
	f = fopen(path, "wb");
	if (!f || fwrite(p, 1, n, f) != n || fclose(f)) {
		perror(path);
		exit(1);
	}
}

static struct proto_pkt_hdr seed_hdr(uint8_t flags, uint64_t sid)
{
	struct proto_pkt_hdr h;

	memset(&h, 0, sizeof(h));
	h.magic = PROTO_MAGIC;
	h.version = PROTO_VERSION;
	h.flags = flags;
	h.session_id = sid;
	h.seq = 1;
	h.ack = 1;
	h.pkt_num = 2;
	return h;
}

static _Alignas(8) uint8_t sb[FUZZ_CAP];

static int seed_finish(struct proto_enc *e)
{
	int len = proto_enc_finish(e, PROTO_TAG_LEN);

	if (len < 0) {
		fprintf(stderr, "seed: encode failed (%d)\n", len);
		exit(1);
	}
	memset(sb + len - PROTO_TAG_LEN, 0xa5, PROTO_TAG_LEN);
	return len;
}

static int seed_infer(const struct proto_infer_req *r)
{
	struct proto_pkt_hdr h = seed_hdr(PROTO_F_AUTH, 9);
	struct proto_enc e;

	proto_enc_init(&e, sb, sizeof(sb), &h);
	if (proto_enc_infer(&e, r))
		exit(1);
	return seed_finish(&e);
}

/* Datagram with one message: root block @blk (n bytes), then @text. */
static int seed_block_text(unsigned t, uint8_t flags, const void *blk, size_t n,
			   const char *text)
{
	struct proto_pkt_hdr h = seed_hdr(flags, 9);
	struct proto_enc e;

	proto_enc_init(&e, sb, sizeof(sb), &h);
	memcpy(proto_enc_msg_begin(&e, t, (unsigned)n), blk, n);
	if (text)
		proto_enc_var(&e, text, strlen(text));
	proto_enc_msg_end(&e);
	return seed_finish(&e);
}

static void write_seeds(void)
{
	static uint32_t toks[60];
	static const uint32_t stops[2] = { 2, 31999 };
	static const struct proto_logit_bias lb[2] = { { 5, -1.5f }, { 9, 3.0f } };
	static const char *const seqs[2] = { "\n\n", "Ende" };
	static const struct proto_chat_msg roles[2] = { { .role = 0 }, { .role = 1 } };
	static const char *const texts[2] = { "Be brief.", "Grüß dich 👋" };
	struct proto_infer_req r;
	struct proto_pkt_hdr h;
	struct proto_enc e;
	int len;

	for (unsigned i = 0; i < 60; i++)
		toks[i] = i * 531u % 32000u;
	memset(&r, 0, sizeof(r));
	r.f.request_id = 1;
	r.f.max_tokens = 64;
	r.f.temperature = 0.8f;
	r.f.top_p = 0.9f;
	r.f.top_k = 40;
	r.f.logprobs = 2;
	r.f.stream = PROTO_STREAM_EVERY_K;
	r.f.stream_k = 4;
	r.f.flags = PROTO_INFER_PROMPT_TOKENS;
	r.prompt_tokens = toks;
	r.n_prompt_tokens = 60;
	r.stop_tokens = stops;
	r.n_stop_tokens = 2;
	r.logit_bias = lb;
	r.n_logit_bias = 2;
	r.stop_seqs = seqs;
	r.n_stop_seqs = 2;
	r.model = "tiny";
	r.version = "prod";
	len = seed_infer(&r);
	seed_write("infer-tokens", sb, (size_t)len);
	/* the same INFER as a bare message frame (reassembled) */
	seed_write("infer-frame", sb + sizeof(h),
		   (size_t)len - sizeof(h) - PROTO_TAG_LEN);

	r.f.flags = PROTO_INFER_PROMPT_TEXT;
	r.n_prompt_tokens = 0;
	r.prompt_text = "Once upon a time, ∀x ∈ ℝ";
	r.prompt_text_len = strlen(r.prompt_text);
	seed_write("infer-text", sb, (size_t)seed_infer(&r));

	r.f.flags = PROTO_INFER_CHAT | PROTO_INFER_IGNORE_EOS;
	r.prompt_text = NULL;
	r.prompt_text_len = 0;
	r.msg_roles = roles;
	r.msg_texts = texts;
	r.n_messages = 2;
	seed_write("infer-chat", sb, (size_t)seed_infer(&r));

	{
		struct proto_logon lg = { .key_id = 1, .heartbeat_ms = 100,
					  .timestamp_ns = 1700000000000000000ull,
					  .mtu = 1408, .flags = 3 };
		struct proto_logon_ack la = { .session_id = 9, .heartbeat_ms = 100,
					      .session_timeout_ms = 5000,
					      .credit_requests = 16,
					      .credit_tokens = 65536,
					      .replay_msgs = 256, .mtu = 1408,
					      .suite = 2 };
		struct proto_logon_reject lr = { .code = PROTO_E_AUTH };
		struct proto_logout lo = { .code = 0 };
		struct proto_test_request tq = { 7, 123456789 };
		struct proto_test_response ts = { 7, 123456789, 987654321 };
		struct proto_retransmit_request rr = { 10, 5, 0 };
		struct proto_gap_fill gf = { 10, 2, 0 };
		struct proto_cancel ca = { 1 };
		struct proto_accept ac = { 1, 0, 0, 5 };
		struct proto_reject rj = { 1, PROTO_E_NOT_READY, 0, 0 };
		struct proto_error er = { 1, PROTO_E_INTERNAL, { 0 } };
		struct proto_cancel_ack ck = { 1, 12, 1, 0 };
		struct proto_status st = { 15, 60000, 1, PROTO_STATE_READY, { 0 }, 5 };
		struct proto_done dn = { .request_id = 1, .prompt_tokens = 60,
					 .completion_tokens = 64,
					 .finish_reason = PROTO_FINISH_LENGTH };
		const uint8_t c = PROTO_F_AUTH | PROTO_F_CTRL, s = PROTO_F_AUTH | PROTO_F_S2C;

		seed_write("logon", sb, (size_t)seed_block_text(
			PROTO_T_LOGON, c, &lg, sizeof(lg), "velo-client"));
		seed_write("logon-ack", sb, (size_t)seed_block_text(
			PROTO_T_LOGON_ACK, c | s, &la, sizeof(la), NULL));
		seed_write("logon-reject", sb, (size_t)seed_block_text(
			PROTO_T_LOGON_REJECT, c | s, &lr, sizeof(lr), "unknown key"));
		seed_write("logout", sb, (size_t)seed_block_text(
			PROTO_T_LOGOUT, c, &lo, sizeof(lo), "bye"));
		seed_write("test-request", sb, (size_t)seed_block_text(
			PROTO_T_TEST_REQUEST, c, &tq, sizeof(tq), NULL));
		seed_write("test-response", sb, (size_t)seed_block_text(
			PROTO_T_TEST_RESPONSE, c | s, &ts, sizeof(ts), NULL));
		seed_write("retransmit-request", sb, (size_t)seed_block_text(
			PROTO_T_RETRANSMIT_REQUEST, c, &rr, sizeof(rr), NULL));
		seed_write("gap-fill", sb, (size_t)seed_block_text(
			PROTO_T_GAP_FILL, c | s, &gf, sizeof(gf), NULL));
		seed_write("cancel", sb, (size_t)seed_block_text(
			PROTO_T_CANCEL, PROTO_F_AUTH, &ca, sizeof(ca), NULL));
		seed_write("status-request", sb, (size_t)seed_block_text(
			PROTO_T_STATUS_REQUEST, PROTO_F_AUTH, &ca, 0, NULL));
		seed_write("accept", sb, (size_t)seed_block_text(
			PROTO_T_ACCEPT, s, &ac, sizeof(ac), NULL));
		seed_write("reject", sb, (size_t)seed_block_text(
			PROTO_T_REJECT, s, &rj, sizeof(rj), "no model loaded"));
		seed_write("error", sb, (size_t)seed_block_text(
			PROTO_T_ERROR, s, &er, sizeof(er), "device lost"));
		seed_write("cancel-ack", sb, (size_t)seed_block_text(
			PROTO_T_CANCEL_ACK, s, &ck, sizeof(ck), NULL));
		seed_write("status", sb, (size_t)seed_block_text(
			PROTO_T_STATUS, s, &st, sizeof(st), NULL));

		/* DONE: model and version */
		h = seed_hdr(s, 9);
		proto_enc_init(&e, sb, sizeof(sb), &h);
		memcpy(proto_enc_msg_begin(&e, PROTO_T_DONE, sizeof(dn)), &dn, sizeof(dn));
		proto_enc_var(&e, "tiny", 4);
		proto_enc_var(&e, "v1", 2);
		proto_enc_msg_end(&e);
		seed_write("done", sb, (size_t)seed_finish(&e));
	}
	{
		/* TOKENS with logprobs, then ACCEPT + TOKENS + DONE in one */
		static const uint32_t ids[3] = { 100, 200, 300 };
		struct proto_logprob lp[6];
		struct proto_tokens t = { .request_id = 1, .first_index = 0,
					  .flags = PROTO_TOK_FIRST, .top_logprobs = 1 };
		struct proto_accept ac = { .request_id = 1 };
		struct proto_done dn = { .request_id = 1, .completion_tokens = 3 };

		for (unsigned i = 0; i < 6; i++)
			lp[i] = (struct proto_logprob){ 100 + i, -0.5f * (float)i };
		h = seed_hdr(PROTO_F_AUTH | PROTO_F_S2C, 9);
		proto_enc_init(&e, sb, sizeof(sb), &h);
		memcpy(proto_enc_msg_begin(&e, PROTO_T_TOKENS, sizeof(t)), &t, sizeof(t));
		proto_enc_group_u32(&e, ids, 3);
		proto_enc_group(&e, lp, sizeof(lp[0]), 6);
		proto_enc_var(&e, "Hello, wörld", strlen("Hello, wörld"));
		proto_enc_msg_end(&e);
		seed_write("tokens", sb, (size_t)seed_finish(&e));

		proto_enc_init(&e, sb, sizeof(sb), &h);
		memcpy(proto_enc_msg_begin(&e, PROTO_T_ACCEPT, sizeof(ac)), &ac, sizeof(ac));
		proto_enc_msg_end(&e);
		t.top_logprobs = 0;
		memcpy(proto_enc_msg_begin(&e, PROTO_T_TOKENS, sizeof(t)), &t, sizeof(t));
		proto_enc_group_u32(&e, ids, 3);
		proto_enc_group(&e, NULL, sizeof(lp[0]), 0);
		proto_enc_var(&e, "abc", 3);
		proto_enc_msg_end(&e);
		memcpy(proto_enc_msg_begin(&e, PROTO_T_DONE, sizeof(dn)), &dn, sizeof(dn));
		proto_enc_var(&e, "tiny", 4);
		proto_enc_var(&e, "v1", 2);
		proto_enc_msg_end(&e);
		/* and a template from the future, skipped */
		memset(proto_enc_msg_begin(&e, 60, 12), 0x11, 12);
		proto_enc_var(&e, "future", 6);
		proto_enc_msg_end(&e);
		seed_write("multi", sb, (size_t)seed_finish(&e));
	}
	{
		/* FRAGMENT pieces of a message */
		static const uint8_t piece[40] = { 0x40, 0x00, 0x08, 0x00, 0x10 };
		struct proto_fragment f[2] = {
			{ 3, 0, PROTO_FRAG_BEGIN, 64, 0 },
			{ 3, 1, PROTO_FRAG_END, 64, 40 },
		};

		for (unsigned i = 0; i < 2; i++) {
			h = seed_hdr(PROTO_F_AUTH, 9);
			proto_enc_init(&e, sb, sizeof(sb), &h);
			memcpy(proto_enc_msg_begin(&e, PROTO_T_FRAGMENT, sizeof(f[i])),
			       &f[i], sizeof(f[i]));
			proto_enc_var(&e, piece, i ? 24 : 40);
			proto_enc_msg_end(&e);
			seed_write(i ? "fragment-end" : "fragment-begin", sb,
				   (size_t)seed_finish(&e));
		}
	}
	/* heartbeat, end of session */
	h = seed_hdr(PROTO_F_AUTH | PROTO_F_CTRL, 9);
	proto_enc_init(&e, sb, sizeof(sb), &h);
	seed_write("heartbeat", sb, (size_t)seed_finish(&e));
	h.msg_count = PROTO_COUNT_END;
	proto_enc_init(&e, sb, sizeof(sb), &h);
	seed_write("end", sb, (size_t)seed_finish(&e));
	/* Malformed: a few classes, to start mutations near the edges. */
	len = seed_infer(&r);
	sb[sizeof(h) + 4 + 2] = 2;		/* schema id */
	seed_write("bad-schema", sb, (size_t)len);
	len = seed_infer(&r);
	sb[sizeof(h) + 8 + sizeof(struct proto_infer) + 2] = 0xff; /* group n */
	seed_write("truncated-group", sb, (size_t)len);
	seed_write("utf8-mixed", "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xed\xa0\x80\xf4\x90", 16);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	for (int i = 1; i + 1 < *argc; i++) {
		if (strcmp((*argv)[i], "--write-seeds") == 0) {
			static char dir[400];

			seed_dir = (*argv)[i + 1];
			/* mkdir -p */
			snprintf(dir, sizeof(dir), "%s", seed_dir);
			for (char *p = dir + 1; *p; p++) {
				if (*p == '/') {
					*p = 0;
					mkdir(dir, 0755);
					*p = '/';
				}
			}
			mkdir(dir, 0755);
			write_seeds();
			printf("%u seeds written to %s\n", seed_n, seed_dir);
			exit(0);
		}
	}
	return 0;
}
