// SPDX-License-Identifier: MIT
/*
 * decode.c — template decoders (velo/codec.h): root block, groups and var
 * data of one message, then the values.
 *
 * Order of checks inside a decoder, cheapest first and each one bounded:
 *   1. structure: root block length, every group and var data inside the
 *      message, group entry sizes and counts (O(number of fields));
 *   2. sizes against the limits (oversize);
 *   3. scalar values (bad_param);
 *   4. token ids against the vocabulary (O(tokens), bad_token);
 *   5. UTF-8 of every text (O(bytes), bad_utf8).
 * The exact ranges are in docs/protocol.md ("INFER validation"); this file
 * and that table must agree.
 */
#include <string.h>

#include <velo/codec.h>
#include <velo/compiler.h>

/* Longest model name, model version and LOGON client name, in bytes. */
#define PROTO_NAME_MAX 64

/* Sampling ranges (inclusive).  Written as !(lo <= x && x <= hi) so that
 * NaN fails every test. */
#define TEMPERATURE_MAX 100.0f
#define REPETITION_MAX	10.0f
#define PENALTY_ABS_MAX 2.0f	/* presence and frequency, as OpenAI */
#define LOGIT_BIAS_ABS_MAX 100.0f

static inline bool in_range(float x, float lo, float hi)
{
	return lo <= x && x <= hi;
}

/* A u32 group: entries must be exactly 4 bytes (token ids never grow),
 * so that proto_u32_at() indexes them. */
static int group_u32(struct proto_cursor *c, unsigned max_n,
		     const uint8_t **entries, uint32_t *n)
{
	struct proto_group g;
	int rc = proto_cursor_group(c, 4, max_n, &g);

	if (rc)
		return rc;
	if (g.n && unlikely(g.stride != 4))
		return -PROTO_DROP_bad_group;
	*entries = g.entries;
	*n = g.n;
	return 0;
}

/* Largest u32 of a group (0 when empty); one pass, vectorisable. */
static uint32_t u32_max(const uint8_t *p, uint32_t n)
{
	uint32_t mx = 0;

	for (uint32_t i = 0; i < n; i++) {
		uint32_t x = proto_u32_at(p, i);

		mx = x > mx ? x : mx;
	}
	return mx;
}

static inline bool str_utf8(const struct proto_str *s)
{
	return proto_utf8_valid(s->p, s->len);
}

int proto_decode_infer(const struct proto_msg *m, const struct proto_limits *lim,
		       struct proto_infer_view *v)
{
	const struct proto_infer *f = &v->f;
	struct proto_cursor c;
	struct proto_group_var stops;
	const uint8_t *blk;
	size_t text_bytes;
	uint32_t kinds, max_tokens;
	int rc;

	if (unlikely(m->template_id != PROTO_T_INFER))
		return -PROTO_DROP_unknown_template;
	rc = proto_block_get(m, &v->f, sizeof(v->f), sizeof(v->f));
	if (rc)
		return rc;

	/* 1. Structure. */
	proto_cursor_init(&c, m);
	rc = group_u32(&c, lim->prompt_tokens_max ? lim->prompt_tokens_max : 0xffff,
		       &blk, &v->n_prompt_tokens);
	if (rc)
		return rc;
	v->prompt_tokens = (const uint32_t *)(const void *)blk;
	rc = group_u32(&c, PROTO_STOP_TOKENS_MAX, &v->stop_tokens,
		       &v->n_stop_tokens);
	if (rc)
		return rc;
	rc = proto_cursor_group(&c, sizeof(struct proto_logit_bias),
				PROTO_LOGIT_BIAS_MAX, &v->logit_bias);
	if (rc)
		return rc;
	rc = proto_cursor_group_var(&c, 0, PROTO_STOP_SEQ_MAX, &stops);
	if (rc)
		return rc;
	v->n_stop_seqs = 0;
	while ((rc = proto_group_var_next(&stops, &blk,
					  &v->stop_seqs[v->n_stop_seqs])) == 1)
		v->n_stop_seqs++;
	if (rc)
		return rc;
	rc = proto_cursor_group_var(&c, sizeof(struct proto_chat_msg),
				    PROTO_CHAT_MSGS_MAX, &v->messages);
	if (rc)
		return rc;
	v->n_messages = v->messages.left;
	if ((rc = proto_cursor_var(&c, &v->model)) ||
	    (rc = proto_cursor_var(&c, &v->version)) ||
	    (rc = proto_cursor_var(&c, &v->prompt_text)))
		return rc;

	/* 2. Sizes.  Chat texts and stop sequences count with the prompt. */
	text_bytes = v->prompt_text.len;
	for (uint32_t i = 0; i < v->n_stop_seqs; i++)
		text_bytes += v->stop_seqs[i].len;
	{
		struct proto_group_var it = v->messages;
		struct proto_str s;

		while (proto_group_var_next(&it, &blk, &s) == 1)
			text_bytes += s.len;
	}
	if (lim->text_bytes_max && unlikely(text_bytes > lim->text_bytes_max))
		return -PROTO_DROP_oversize;

	/* 3. Scalars. */
	kinds = f->flags & (PROTO_INFER_PROMPT_TOKENS | PROTO_INFER_PROMPT_TEXT |
			    PROTO_INFER_CHAT);
	if (unlikely(f->flags & ~(uint32_t)(PROTO_INFER_IGNORE_EOS |
					    PROTO_INFER_PROMPT_TOKENS |
					    PROTO_INFER_PROMPT_TEXT |
					    PROTO_INFER_CHAT |
					    PROTO_INFER_ECHO_PROMPT)))
		return -PROTO_DROP_bad_param;
	/* Exactly one prompt kind, that prompt non-empty, the others absent. */
	if (unlikely(kinds == 0 || (kinds & (kinds - 1))))
		return -PROTO_DROP_bad_param;
	if (unlikely((v->n_prompt_tokens != 0) !=
		     !!(kinds & PROTO_INFER_PROMPT_TOKENS) ||
		     (v->prompt_text.len != 0) !=
		     !!(kinds & PROTO_INFER_PROMPT_TEXT) ||
		     (v->n_messages != 0) != !!(kinds & PROTO_INFER_CHAT)))
		return -PROTO_DROP_bad_param;
	/* max_tokens 0: the server's default (its max_tokens_max). */
	max_tokens = f->max_tokens ? f->max_tokens : lim->max_tokens_max;
	if (unlikely((lim->max_tokens_max && f->max_tokens > lim->max_tokens_max) ||
		     (max_tokens && f->min_tokens > max_tokens)))
		return -PROTO_DROP_bad_param;
	if (unlikely(!in_range(f->temperature, 0.0f, TEMPERATURE_MAX) ||
		     !in_range(f->top_p, 0.0f, 1.0f) ||
		     !in_range(f->min_p, 0.0f, 1.0f) ||
		     !in_range(f->repetition_penalty, 0.0f, REPETITION_MAX) ||
		     !in_range(f->presence_penalty, -PENALTY_ABS_MAX, PENALTY_ABS_MAX) ||
		     !in_range(f->frequency_penalty, -PENALTY_ABS_MAX, PENALTY_ABS_MAX)))
		return -PROTO_DROP_bad_param;
	if (unlikely(lim->vocab_size && f->top_k > lim->vocab_size))
		return -PROTO_DROP_bad_param;
	if (unlikely(f->logprobs > PROTO_LOGPROBS_MAX ||
		     f->stream > PROTO_STREAM_SENTENCE ||
		     (f->stream == PROTO_STREAM_EVERY_K && f->stream_k == 0)))
		return -PROTO_DROP_bad_param;
	if (unlikely(v->model.len > PROTO_NAME_MAX ||
		     v->version.len > PROTO_NAME_MAX))
		return -PROTO_DROP_bad_param;
	for (uint32_t i = 0; i < v->n_stop_seqs; i++)
		if (unlikely(v->stop_seqs[i].len == 0))
			return -PROTO_DROP_bad_param;
	for (uint32_t i = 0; i < v->logit_bias.n; i++) {
		float b;

		memcpy(&b, v->logit_bias.entries + (size_t)i * v->logit_bias.stride +
			   offsetof(struct proto_logit_bias, bias), sizeof(b));
		if (unlikely(!in_range(b, -LOGIT_BIAS_ABS_MAX, LOGIT_BIAS_ABS_MAX)))
			return -PROTO_DROP_bad_param;
	}
	{
		struct proto_group_var it = v->messages;
		struct proto_str s;

		while (proto_group_var_next(&it, &blk, &s) == 1)
			if (unlikely(blk[0] > PROTO_ROLE_ASSISTANT))
				return -PROTO_DROP_bad_param;
	}

	/* 4. Token ids. */
	if (lim->vocab_size) {
		uint32_t mx = u32_max((const uint8_t *)v->prompt_tokens,
				      v->n_prompt_tokens);
		uint32_t t = u32_max(v->stop_tokens, v->n_stop_tokens);

		mx = t > mx ? t : mx;
		for (uint32_t i = 0; i < v->logit_bias.n; i++) {
			memcpy(&t, v->logit_bias.entries +
				   (size_t)i * v->logit_bias.stride, 4);
			mx = t > mx ? t : mx;
		}
		if (unlikely(mx >= lim->vocab_size))
			return -PROTO_DROP_bad_token;
	}

	/* 5. Text. */
	if (unlikely(!str_utf8(&v->model) || !str_utf8(&v->version) ||
		     !str_utf8(&v->prompt_text)))
		return -PROTO_DROP_bad_utf8;
	for (uint32_t i = 0; i < v->n_stop_seqs; i++)
		if (unlikely(!str_utf8(&v->stop_seqs[i])))
			return -PROTO_DROP_bad_utf8;
	{
		struct proto_group_var it = v->messages;
		struct proto_str s;

		while (proto_group_var_next(&it, &blk, &s) == 1)
			if (unlikely(!str_utf8(&s)))
				return -PROTO_DROP_bad_utf8;
	}
	return 0;
}

int proto_decode_tokens(const struct proto_msg *m, struct proto_tokens_view *v)
{
	struct proto_cursor c;
	int rc;

	if (unlikely(m->template_id != PROTO_T_TOKENS))
		return -PROTO_DROP_unknown_template;
	rc = proto_block_get(m, &v->f, sizeof(v->f), sizeof(v->f));
	if (rc)
		return rc;
	proto_cursor_init(&c, m);
	if ((rc = group_u32(&c, 0xffff, &v->tokens, &v->n_tokens)) ||
	    (rc = proto_cursor_group(&c, sizeof(struct proto_logprob), 0xffff,
				     &v->logprobs)) ||
	    (rc = proto_cursor_var(&c, &v->text)))
		return rc;
	if (unlikely(v->f.top_logprobs > PROTO_LOGPROBS_MAX))
		return -PROTO_DROP_bad_param;
	/* Logprobs are all there or not at all: 1 + top_logprobs per token. */
	if (unlikely(v->logprobs.n != 0 &&
		     v->logprobs.n != v->n_tokens * (1u + v->f.top_logprobs)))
		return -PROTO_DROP_bad_param;
	if (unlikely(!str_utf8(&v->text)))
		return -PROTO_DROP_bad_utf8;
	return 0;
}

int proto_decode_done(const struct proto_msg *m, struct proto_done_view *v)
{
	struct proto_cursor c;
	int rc;

	if (unlikely(m->template_id != PROTO_T_DONE))
		return -PROTO_DROP_unknown_template;
	rc = proto_block_get(m, &v->f, sizeof(v->f), sizeof(v->f));
	if (rc)
		return rc;
	proto_cursor_init(&c, m);
	if ((rc = proto_cursor_var(&c, &v->model)) ||
	    (rc = proto_cursor_var(&c, &v->version)))
		return rc;
	if (unlikely(!str_utf8(&v->model) || !str_utf8(&v->version)))
		return -PROTO_DROP_bad_utf8;
	return 0;
}

/* Root block then one UTF-8 text. */
static int decode_block_text(const struct proto_msg *m, void *blk,
			     size_t size, struct proto_str *text)
{
	struct proto_cursor c;
	int rc = proto_block_get(m, blk, size, size);

	if (rc)
		return rc;
	proto_cursor_init(&c, m);
	rc = proto_cursor_var(&c, text);
	if (rc)
		return rc;
	if (unlikely(!str_utf8(text)))
		return -PROTO_DROP_bad_utf8;
	return 0;
}

int proto_decode_reject(const struct proto_msg *m, struct proto_reject_view *v)
{
	if (unlikely(m->template_id != PROTO_T_REJECT))
		return -PROTO_DROP_unknown_template;
	return decode_block_text(m, &v->f, sizeof(v->f), &v->text);
}

int proto_decode_error(const struct proto_msg *m, struct proto_error_view *v)
{
	struct proto_logout b;	/* same layout as struct proto_logon_reject */
	int rc;

	_Static_assert(sizeof(struct proto_logout) ==
		       sizeof(struct proto_logon_reject), "code blocks");
	if (m->template_id == PROTO_T_ERROR)
		return decode_block_text(m, &v->f, sizeof(v->f), &v->text);
	if (unlikely(m->template_id != PROTO_T_LOGON_REJECT &&
		     m->template_id != PROTO_T_LOGOUT))
		return -PROTO_DROP_unknown_template;
	/* LOGON_REJECT and LOGOUT: a code and a text, no request. */
	rc = decode_block_text(m, &b, sizeof(b), &v->text);
	if (rc)
		return rc;
	memset(&v->f, 0, sizeof(v->f));
	v->f.code = b.code;
	return 0;
}

int proto_decode_logon(const struct proto_msg *m, struct proto_logon_view *v)
{
	int rc;

	if (unlikely(m->template_id != PROTO_T_LOGON))
		return -PROTO_DROP_unknown_template;
	rc = decode_block_text(m, &v->f, sizeof(v->f), &v->client_name);
	if (rc)
		return rc;
	if (unlikely(v->client_name.len > PROTO_NAME_MAX))
		return -PROTO_DROP_bad_param;
	if (unlikely(v->f.mtu != 0 &&
		     (v->f.mtu < PROTO_MTU_MIN || v->f.mtu > PROTO_MTU_MAX)))
		return -PROTO_DROP_bad_param;
	return 0;
}

int proto_decode_fragment(const struct proto_msg *m,
			  struct proto_fragment_view *v)
{
	const struct proto_fragment *f = &v->f;
	struct proto_cursor c;
	bool begin, end;
	int rc;

	if (unlikely(m->template_id != PROTO_T_FRAGMENT))
		return -PROTO_DROP_unknown_template;
	rc = proto_block_get(m, &v->f, sizeof(v->f), sizeof(v->f));
	if (rc)
		return rc;
	proto_cursor_init(&c, m);
	rc = proto_cursor_var(&c, &v->data);
	if (rc)
		return rc;
	begin = f->flags & PROTO_FRAG_BEGIN;
	end = f->flags & PROTO_FRAG_END;
	/*
	 * The whole message is a valid frame size (8..65528, a multiple of
	 * 8), every fragment carries bytes, lies inside it, and BEGIN/END
	 * mark exactly the first and the last piece.
	 */
	if (unlikely(f->flags & ~(PROTO_FRAG_BEGIN | PROTO_FRAG_END) ||
		     f->total_length < sizeof(struct proto_msg_hdr) ||
		     f->total_length > 0xffff ||
		     (f->total_length & (PROTO_ALIGN - 1)) ||
		     v->data.len == 0 ||
		     f->offset > f->total_length ||
		     v->data.len > f->total_length - f->offset ||
		     begin != (f->offset == 0) || begin != (f->index == 0) ||
		     end != (f->offset + v->data.len == f->total_length) ||
		     (begin && end)))
		return -PROTO_DROP_bad_fragment;
	return 0;
}

int proto_msg_parse(const void *buf, size_t len, struct proto_msg *m)
{
	struct proto_msg_iter it = {
		.p = buf,
		.end = (const uint8_t *)buf + len,
		.left = 1,
	};
	int rc = proto_msg_next(&it, m);

	if (rc < 0)
		return rc;
	if (unlikely(rc == 0 || it.p != it.end))
		return -PROTO_DROP_bad_msg_length;
	return 0;
}
