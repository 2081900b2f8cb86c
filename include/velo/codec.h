/* SPDX-License-Identifier: MIT */
/*
 * velo/codec.h — encode and decode velo datagrams and messages.
 *
 * One codec for velod and for clients.  No allocation, every read bounds-
 * checked, zero-copy: decoded views point into the caller's datagram buffer,
 * which must stay alive (and unmodified) while the view is used.
 *
 * Decoding is layered, cheapest checks first, as PROTOCOL.md orders them:
 *   proto_pkt_parse()   length, magic, version, flags, length field, count
 *   (the session layer: session lookup, rate limit, tag, replay window)
 *   proto_msg_next()    each message's frame: length, alignment, schema
 *   proto_decode_*()    one template's root block, groups and var data
 * Each failure returns a negative enum proto_drop value that names the
 * counter to bump, so that every rejected datagram is counted by reason.
 */
#ifndef VELO_CODEC_H
#define VELO_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <velo/proto.h>

/* Rejection reasons: counter names (dp.drop_<name>) and codec return values
 * (negated).  Order is not wire-visible. */
#define foreach_proto_drop(X)                                                 \
	X(short, "shorter than a packet header")                              \
	X(bad_magic, "wrong magic")                                           \
	X(bad_version, "unsupported protocol version")                        \
	X(bad_flags, "unknown flag bits or wrong direction")                  \
	X(bad_length, "length field disagrees with the datagram")             \
	X(bad_count, "message count out of range for the datagram")          \
	X(oversize, "datagram larger than the negotiated MTU")                \
	X(unknown_session, "no such session")                                 \
	X(rate_limit, "sender over its rate limit")                           \
	X(bad_tag, "authentication tag did not verify")                       \
	X(replay, "packet number replayed or too old")                        \
	X(stale_logon, "logon timestamp outside the freshness window")        \
	X(bad_msg_length, "message frame length out of bounds or unaligned")  \
	X(bad_schema, "unknown schema id")                                    \
	X(unknown_template, "unknown template id (skipped)")                  \
	X(short_block, "root block shorter than the template's minimum")      \
	X(truncated_group, "repeating group runs past the message")           \
	X(bad_group, "group entry size smaller than the entry type")          \
	X(truncated_var, "var data runs past the message")                    \
	X(bad_utf8, "text is not valid UTF-8")                                \
	X(bad_token, "token id outside the vocabulary")                       \
	X(bad_param, "sampling or limit value out of range")                  \
	X(over_credit, "request over the session's credit")                   \
	X(wrong_direction, "message not valid in this direction or state")    \
	X(bad_fragment, "fragment inconsistent with its message")             \
	X(no_buffer, "no reassembly or session slot free")

enum proto_drop {
	PROTO_DROP_NONE = 0,
#define X(name, help) PROTO_DROP_##name,
	foreach_proto_drop(X)
#undef X
	PROTO_DROP__COUNT
};

/* Counter name of a drop reason ("bad_tag"), or "?" */
const char *proto_drop_name(int reason);
/* Name of a template ("INFER"), or NULL if unknown. */
const char *proto_template_name(unsigned template_id);
/* Name and HTTP status of an error code; "?"/500 for unknown codes. */
const char *proto_err_name(unsigned code);
unsigned proto_err_http(unsigned code);

/* ------------------------------------------------------------------------
 * Datagrams.
 */

struct proto_pkt_view {
	const struct proto_pkt_hdr *hdr;
	const uint8_t *msgs;	/* first message */
	size_t msgs_len;	/* bytes of messages (header and tag excluded) */
	const uint8_t *tag;	/* PROTO_TAG_LEN bytes, or NULL without F_AUTH */
	size_t auth_len;	/* bytes the tag covers: header + messages */
};

/*
 * proto_pkt_parse() - check a datagram's framing and split it.
 * @buf, @len:  the datagram as received (buf 8-byte aligned).
 * @mtu:        largest datagram accepted (negotiated, <= PROTO_MTU_MAX).
 * @v:          filled on success.
 * Checks length >= header, magic, version, len <= mtu, known flags
 * (F_RETRANS only on data datagrams), hdr.length == len and a multiple of
 * 8, tag room when F_AUTH, msg_count plausible for the bytes (at most one
 * message per 8 bytes; 0 and PROTO_COUNT_END carry no message bytes).
 * Return: 0, or -PROTO_DROP_* (short, bad_magic, bad_version, bad_flags,
 * bad_length, bad_count, oversize).
 */
int proto_pkt_parse(const void *buf, size_t len, size_t mtu,
		    struct proto_pkt_view *v);

/* A decoded message frame. */
struct proto_msg {
	const struct proto_msg_hdr *hdr;
	unsigned template_id;
	const uint8_t *block;	/* root block as sent */
	unsigned block_len;	/* as sent (may be more or less than we know) */
	const uint8_t *body;	/* groups and var data after the root block */
	size_t body_len;	/* up to the end of the frame (padding included) */
	const uint8_t *raw;	/* the whole frame, header included */
	size_t raw_len;
};

struct proto_msg_iter {
	const uint8_t *p;
	const uint8_t *end;
	unsigned left;		/* messages still expected (hdr.msg_count) */
};

void proto_msg_iter_init(struct proto_msg_iter *it,
			 const struct proto_pkt_view *v);

/*
 * proto_msg_next() - next message frame of a datagram.
 * Return: 1 with @m filled, 0 at the end (all msg_count messages read and
 * nothing but padding left), or -PROTO_DROP_* (bad_msg_length when a frame
 * is short, unaligned, runs past the datagram, or messages are missing or
 * extra; bad_schema).  Unknown templates are returned as frames (the
 * caller skips and counts them), so evolution never breaks framing.
 */
int proto_msg_next(struct proto_msg_iter *it, struct proto_msg *m);

/*
 * proto_msg_parse() - frame one whole message of exactly @len bytes (a
 * message reassembled from FRAGMENTs), with the checks of proto_msg_next().
 * Return: 0, or -PROTO_DROP_bad_msg_length / bad_schema.
 */
int proto_msg_parse(const void *buf, size_t len, struct proto_msg *m);

/*
 * proto_block_get() - the root block widened to the size we know: copies
 * min(block_len, size) bytes into @out and zero-fills the rest (an older
 * sender's missing fields read as 0).
 * Return: 0, or -PROTO_DROP_short_block if block_len < @min_size.
 */
int proto_block_get(const struct proto_msg *m, void *out, size_t size,
		    size_t min_size);

/* Cursor over the body: groups then var data, in template order. */
struct proto_cursor {
	const uint8_t *p;
	const uint8_t *end;
};

static inline void proto_cursor_init(struct proto_cursor *c,
				     const struct proto_msg *m)
{
	c->p = m->body;
	c->end = m->body + m->body_len;
}

/* A repeating group: n entries of stride bytes (stride >= the entry size
 * we know; the extra bytes of newer entries are ignored). */
struct proto_group {
	const uint8_t *entries;
	unsigned n;
	unsigned stride;
};

/*
 * proto_cursor_group() - read a group header and skip its entries.
 * @min_entry: smallest entry size accepted (sizeof the entry type).
 * @max_n:     largest entry count accepted.
 * Return: 0, -PROTO_DROP_truncated_group, -PROTO_DROP_bad_group, or
 * -PROTO_DROP_oversize (n > max_n).
 * A group whose entries carry var data (stop_sequences, messages) is read
 * with proto_cursor_group_var() instead.
 */
int proto_cursor_group(struct proto_cursor *c, unsigned min_entry,
		       unsigned max_n, struct proto_group *g);

/* Text and byte strings: pointer into the datagram, not NUL-terminated. */
struct proto_str {
	const char *p;
	uint16_t len;
};

/*
 * proto_cursor_var() - read one var data field.
 * Return: 0 (a missing trailing field reads as empty: older senders), or
 * -PROTO_DROP_truncated_var.
 */
int proto_cursor_var(struct proto_cursor *c, struct proto_str *s);

/* Group whose entries are a fixed block followed by one var data each.
 * Iterate with proto_group_var_next(). */
struct proto_group_var {
	const uint8_t *p;	/* next entry */
	const uint8_t *end;	/* end of the message body */
	unsigned left;
	unsigned block;		/* fixed bytes per entry */
};
int proto_cursor_group_var(struct proto_cursor *c, unsigned min_entry,
			   unsigned max_n, struct proto_group_var *g);
/* Return: 1 with @block (entry's fixed part) and @s, 0 at the end, or
 * -PROTO_DROP_truncated_var / truncated_group. */
int proto_group_var_next(struct proto_group_var *g, const uint8_t **block,
			 struct proto_str *s);

/* UTF-8 validation (RFC 3629: no overlongs, no surrogates, <= U+10FFFF). */
bool proto_utf8_valid(const char *s, size_t len);
/* Length of the longest prefix of s that ends on a code point boundary
 * (for streaming text without splitting a code point). */
size_t proto_utf8_complete_prefix(const char *s, size_t len);

/* ------------------------------------------------------------------------
 * Decoded INFER.
 */
#define PROTO_STOP_SEQ_MAX	8
#define PROTO_STOP_TOKENS_MAX	64
#define PROTO_LOGIT_BIAS_MAX	64
#define PROTO_CHAT_MSGS_MAX	32
#define PROTO_LOGPROBS_MAX	8

struct proto_infer_view {
	struct proto_infer f;		/* root block, widened and zero-filled */
	const uint32_t *prompt_tokens;	/* unaligned-safe: read with memcpy */
	uint32_t n_prompt_tokens;
	const uint8_t *stop_tokens;	/* u32 little-endian each */
	uint32_t n_stop_tokens;
	struct proto_group logit_bias;	/* struct proto_logit_bias entries */
	struct proto_str stop_seqs[PROTO_STOP_SEQ_MAX];
	uint32_t n_stop_seqs;
	struct proto_group_var messages; /* chat: proto_chat_msg + text each */
	uint32_t n_messages;
	struct proto_str model;
	struct proto_str version;
	struct proto_str prompt_text;
};

/* Limits the decoder enforces (from the server's configuration). */
struct proto_limits {
	uint32_t vocab_size;		/* 0: token ids not checked here */
	uint32_t prompt_tokens_max;
	uint32_t max_tokens_max;
	uint32_t text_bytes_max;
};

/*
 * proto_decode_infer() - decode and validate an INFER frame.
 * Checks every group and var data against the message bounds, UTF-8 of all
 * text, token ids < vocab_size, sampling values (temperature 0..100, top_p
 * 0..1, min_p 0..1, penalties finite and in documented ranges, logprobs
 * <= 8, stream mode known, exactly one prompt kind flag, non-empty prompt,
 * min_tokens <= max_tokens (max_tokens 0: the server default,
 * lim->max_tokens_max), limits; a limit of 0 is not checked).  The exact
 * ranges and their order are in docs/protocol.md §6.6.
 * Return: 0, or -PROTO_DROP_* (short_block, truncated_group, bad_group,
 * truncated_var, bad_utf8, bad_token, bad_param, oversize).
 * Every proto_decode_*() returns -PROTO_DROP_unknown_template when given a
 * frame of another template.
 */
int proto_decode_infer(const struct proto_msg *m, const struct proto_limits *lim,
		       struct proto_infer_view *v);

/* Copy-out helper: token i of a u32 group stored unaligned-safe. */
static inline uint32_t proto_u32_at(const void *base, uint32_t i)
{
	uint32_t x;

	__builtin_memcpy(&x, (const uint8_t *)base + 4u * i, 4);
	return x;
}

/* Decoded TOKENS (client side). */
struct proto_tokens_view {
	struct proto_tokens f;
	const uint8_t *tokens;		/* u32 each */
	uint32_t n_tokens;
	struct proto_group logprobs;	/* struct proto_logprob entries */
	struct proto_str text;
};
int proto_decode_tokens(const struct proto_msg *m, struct proto_tokens_view *v);

/* Decoded DONE, REJECT, ERROR, LOGON_REJECT, LOGOUT (client side).
 * proto_decode_error() also takes LOGON_REJECT and LOGOUT frames (their
 * code and text; request_id 0). */
struct proto_done_view {
	struct proto_done f;
	struct proto_str model;
	struct proto_str version;
};
int proto_decode_done(const struct proto_msg *m, struct proto_done_view *v);

struct proto_reject_view {
	struct proto_reject f;
	struct proto_str text;
};
int proto_decode_reject(const struct proto_msg *m, struct proto_reject_view *v);

struct proto_error_view {
	struct proto_error f;
	struct proto_str text;
};
int proto_decode_error(const struct proto_msg *m, struct proto_error_view *v);

/* LOGON: root block + client name. */
struct proto_logon_view {
	struct proto_logon f;
	struct proto_str client_name;
};
int proto_decode_logon(const struct proto_msg *m, struct proto_logon_view *v);

/* Messages with a root block only (LOGON_ACK, TEST_*, RETRANSMIT_REQUEST,
 * GAP_FILL, CANCEL, ACCEPT, CANCEL_ACK, STATUS, STATUS_REQUEST) are read
 * with proto_block_get() and the struct from proto.h; FRAGMENT with
 * proto_decode_fragment(). */
struct proto_fragment_view {
	struct proto_fragment f;
	struct proto_str data;
};
int proto_decode_fragment(const struct proto_msg *m,
			  struct proto_fragment_view *v);

/* ------------------------------------------------------------------------
 * Encoding.  Build a datagram in a caller buffer:
 *
 *   struct proto_enc e;
 *   proto_enc_init(&e, buf, cap, &hdr);          header fields from hdr
 *   void *blk = proto_enc_msg_begin(&e, PROTO_T_TOKENS, sizeof(struct proto_tokens));
 *   ... fill blk ...
 *   proto_enc_group_u32(&e, ids, n);
 *   proto_enc_group(&e, entries, sizeof(entry), n);
 *   proto_enc_var(&e, text, len);
 *   proto_enc_msg_end(&e);
 *   len = proto_enc_finish(&e, with_tag);        length, msg_count; room for tag
 *
 * Any call that would overflow the buffer sets e.err (-ENOSPC) and makes
 * the rest no-ops; check proto_enc_finish()'s return.  proto_enc_room()
 * says how many more bytes fit (for chunking TOKENS to the MTU).
 * The tag itself is written by the session layer (velo/auth.h).
 */
struct proto_enc {
	uint8_t *buf;
	size_t cap;		/* usable bytes, tag room included */
	size_t len;
	size_t msg_start;	/* offset of the open message, or SIZE_MAX */
	unsigned count;
	int err;
};

void proto_enc_init(struct proto_enc *e, void *buf, size_t cap,
		    const struct proto_pkt_hdr *hdr);
/* Returns a zeroed root block of block_len bytes to fill, or NULL on error. */
void *proto_enc_msg_begin(struct proto_enc *e, unsigned template_id,
			  unsigned block_len);
void proto_enc_group(struct proto_enc *e, const void *entries, unsigned stride,
		     unsigned n);
void proto_enc_group_u32(struct proto_enc *e, const uint32_t *v, unsigned n);
/* Group header for entries that carry var data; then per entry:
 * proto_enc_raw(block) + proto_enc_var(text). */
void proto_enc_group_hdr(struct proto_enc *e, unsigned stride, unsigned n);
void proto_enc_raw(struct proto_enc *e, const void *p, size_t len);
void proto_enc_var(struct proto_enc *e, const void *p, size_t len);
void proto_enc_msg_end(struct proto_enc *e);
/* Bytes still free for message content, keeping tag room (tag_len). */
size_t proto_enc_room(const struct proto_enc *e, size_t tag_len);
/* Abandon the open message (it did not fit): back to the last msg_end. */
void proto_enc_msg_abort(struct proto_enc *e);
/*
 * proto_enc_finish() - close the datagram.
 * @tag_len: PROTO_TAG_LEN to reserve room for a tag (and set F_AUTH), or 0.
 * Return: datagram length including the tag room, or a negative errno.
 */
int proto_enc_finish(struct proto_enc *e, size_t tag_len);

/* Convenience encoders for whole INFER messages (client library, tests,
 * fuzz seeds).  Text fields NULL or empty are sent as empty var data. */
struct proto_infer_req {
	struct proto_infer f;
	const uint32_t *prompt_tokens;
	uint32_t n_prompt_tokens;
	const uint32_t *stop_tokens;
	uint32_t n_stop_tokens;
	const struct proto_logit_bias *logit_bias;
	uint32_t n_logit_bias;
	const char *const *stop_seqs;
	uint32_t n_stop_seqs;
	const struct proto_chat_msg *msg_roles;
	const char *const *msg_texts;
	uint32_t n_messages;
	const char *model;
	const char *version;
	const char *prompt_text;
	size_t prompt_text_len;
};
/* Appends one INFER message; returns 0 or -ENOSPC (enc left as before). */
int proto_enc_infer(struct proto_enc *e, const struct proto_infer_req *r);
/* Size of the INFER message alone (to decide on fragmentation). */
size_t proto_infer_msg_size(const struct proto_infer_req *r);

#endif /* VELO_CODEC_H */
