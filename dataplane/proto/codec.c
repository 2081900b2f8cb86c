// SPDX-License-Identifier: MIT
/*
 * codec.c — framing, message iteration, body cursors and the encoder
 * (velo/codec.h).  The template decoders are in decode.c.
 *
 * Rules kept everywhere in this file:
 *  - no allocation and no libc call that allocates; the only libc calls are
 *    memcpy/memset;
 *  - every read is checked against the end of the message (or datagram)
 *    before it happens, with the remaining length compared, never a pointer
 *    moved past the end and then compared;
 *  - multi-byte fields inside message bodies are read with memcpy: groups
 *    follow root blocks of any length, so their entries may be unaligned.
 * Measured on the dev VM (Xeon, 2 cores, gcc 12 -O2, one thread pinned):
 * pkt_parse + msg_next over a one-message datagram ~9 ns; the whole receive
 * path without the tag ~19 ns for a TEST_REQUEST, ~85-115 ns for a 60-token
 * INFER (velo-bench-codec, suite "none").
 */
#include <errno.h>
#include <string.h>

#include <velo/codec.h>
#include <velo/compiler.h>

/*
 * The wire is little-endian and the structs of velo/proto.h are read and
 * written by memcpy: on a big-endian host that would silently mis-decode
 * every field, so such a build fails here instead.
 */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
	       "velo's codec assumes a little-endian host (the wire is LE)");
_Static_assert(sizeof(float) == 4 && __FLT_MANT_DIG__ == 24,
	       "floats on the wire are IEEE 754 binary32");

static inline uint16_t rd16(const uint8_t *p)
{
	uint16_t x;

	memcpy(&x, p, 2);
	return x;
}

/* ------------------------------------------------------------------------
 * Datagrams.
 */

int proto_pkt_parse(const void *buf, size_t len, size_t mtu,
		    struct proto_pkt_view *v)
{
	const uint8_t *b = buf;
	struct proto_pkt_hdr h;
	size_t tag_len, msgs_len;

	if (unlikely(len < sizeof(h)))
		return -PROTO_DROP_short;
	if (mtu > PROTO_MTU_MAX)
		mtu = PROTO_MTU_MAX;
	memcpy(&h, b, sizeof(h));
	if (unlikely(h.magic != PROTO_MAGIC))
		return -PROTO_DROP_bad_magic;
	if (unlikely(h.version != PROTO_VERSION))
		return -PROTO_DROP_bad_version;
	if (unlikely(len > mtu))
		return -PROTO_DROP_oversize;
	if (unlikely(h.flags & ~PROTO_F_KNOWN))
		return -PROTO_DROP_bad_flags;
	/* Control datagrams are never replayed; heartbeats and end of session
	 * carry no messages to replay. */
	if (unlikely((h.flags & PROTO_F_RETRANS) &&
		     ((h.flags & PROTO_F_CTRL) ||
		      h.msg_count == PROTO_COUNT_HEARTBEAT ||
		      h.msg_count == PROTO_COUNT_END)))
		return -PROTO_DROP_bad_flags;
	/* Every part is a multiple of 8 bytes, so is the datagram. */
	if (unlikely(h.length != len || (len & (PROTO_ALIGN - 1))))
		return -PROTO_DROP_bad_length;
	tag_len = (h.flags & PROTO_F_AUTH) ? PROTO_TAG_LEN : 0;
	if (unlikely(len < sizeof(h) + tag_len))
		return -PROTO_DROP_bad_length;
	msgs_len = len - sizeof(h) - tag_len;
	if (h.msg_count == PROTO_COUNT_HEARTBEAT ||
	    h.msg_count == PROTO_COUNT_END) {
		if (unlikely(msgs_len != 0))
			return -PROTO_DROP_bad_count;
	} else if (unlikely(h.msg_count > msgs_len / sizeof(struct proto_msg_hdr))) {
		return -PROTO_DROP_bad_count;
	}

	v->hdr = (const struct proto_pkt_hdr *)b;
	v->msgs = b + sizeof(h);
	v->msgs_len = msgs_len;
	v->tag = tag_len ? b + len - PROTO_TAG_LEN : NULL;
	v->auth_len = len - tag_len;
	return 0;
}

void proto_msg_iter_init(struct proto_msg_iter *it,
			 const struct proto_pkt_view *v)
{
	uint16_t count;

	memcpy(&count, &v->hdr->msg_count, sizeof(count));
	it->p = v->msgs;
	it->end = v->msgs + v->msgs_len;
	it->left = (count == PROTO_COUNT_END) ? 0 : count;
}

int proto_msg_next(struct proto_msg_iter *it, struct proto_msg *m)
{
	size_t avail = (size_t)(it->end - it->p);
	struct proto_msg_hdr h;

	if (it->left == 0) {
		/* Messages are padded one by one: nothing may follow the last. */
		if (unlikely(avail != 0))
			return -PROTO_DROP_bad_msg_length;
		return 0;
	}
	if (unlikely(avail < sizeof(h)))
		return -PROTO_DROP_bad_msg_length;	/* messages missing */
	memcpy(&h, it->p, sizeof(h));
	if (unlikely(h.length < sizeof(h) || h.length > avail ||
		     (h.length & (PROTO_ALIGN - 1)) ||
		     h.block_length > h.length - sizeof(h)))
		return -PROTO_DROP_bad_msg_length;
	if (unlikely(h.schema_id != PROTO_SCHEMA_ID))
		return -PROTO_DROP_bad_schema;

	m->hdr = (const struct proto_msg_hdr *)it->p;
	m->template_id = h.template_id;
	m->block = it->p + sizeof(h);
	m->block_len = h.block_length;
	m->body = m->block + h.block_length;
	m->body_len = h.length - sizeof(h) - h.block_length;
	m->raw = it->p;
	m->raw_len = h.length;
	it->p += h.length;
	it->left--;
	return 1;
}

int proto_block_get(const struct proto_msg *m, void *out, size_t size,
		    size_t min_size)
{
	size_t n = m->block_len < size ? m->block_len : size;

	if (unlikely(m->block_len < min_size))
		return -PROTO_DROP_short_block;
	memcpy(out, m->block, n);
	if (n < size)
		memset((uint8_t *)out + n, 0, size - n);
	return 0;
}

/* ------------------------------------------------------------------------
 * Body cursors.
 *
 * Elements of a body are read in template order.  One that does not start
 * inside the body is absent: an older sender did not write it, and it reads
 * as empty.  "Does not start" means fewer bytes left than its header: those
 * bytes can only be the message's zero padding (< 8 bytes).  A newer
 * sender's extra elements after the last one we know are never looked at.
 */

int proto_cursor_group(struct proto_cursor *c, unsigned min_entry,
		       unsigned max_n, struct proto_group *g)
{
	size_t avail = (size_t)(c->end - c->p);
	struct proto_group_hdr h;
	size_t bytes;

	if (avail < sizeof(h)) {
		g->entries = c->p;
		g->n = 0;
		g->stride = min_entry;
		c->p = c->end;
		return 0;
	}
	memcpy(&h, c->p, sizeof(h));
	if (h.num_in_group != 0 && unlikely(h.block_length < min_entry))
		return -PROTO_DROP_bad_group;
	if (unlikely(h.num_in_group > max_n))
		return -PROTO_DROP_oversize;
	bytes = (size_t)h.num_in_group * h.block_length;
	if (unlikely(bytes > avail - sizeof(h)))
		return -PROTO_DROP_truncated_group;
	g->entries = c->p + sizeof(h);
	g->n = h.num_in_group;
	g->stride = h.block_length;
	c->p += sizeof(h) + bytes;
	return 0;
}

int proto_cursor_var(struct proto_cursor *c, struct proto_str *s)
{
	size_t avail = (size_t)(c->end - c->p);
	uint16_t len;

	if (avail < sizeof(struct proto_var_hdr)) {
		s->p = (const char *)c->p;
		s->len = 0;
		c->p = c->end;
		return 0;
	}
	len = rd16(c->p);
	if (unlikely(len > avail - sizeof(struct proto_var_hdr)))
		return -PROTO_DROP_truncated_var;
	s->p = (const char *)c->p + sizeof(struct proto_var_hdr);
	s->len = len;
	c->p += sizeof(struct proto_var_hdr) + len;
	return 0;
}

/* One entry of a var group: @block fixed bytes then one var data. */
static int group_var_entry(const uint8_t **pp, const uint8_t *end,
			   unsigned block, const uint8_t **blk,
			   struct proto_str *s)
{
	const uint8_t *p = *pp;
	size_t avail = (size_t)(end - p);
	uint16_t len;

	if (unlikely(avail < block))
		return -PROTO_DROP_truncated_group;
	avail -= block;
	if (unlikely(avail < sizeof(struct proto_var_hdr)))
		return -PROTO_DROP_truncated_var;
	len = rd16(p + block);
	if (unlikely(len > avail - sizeof(struct proto_var_hdr)))
		return -PROTO_DROP_truncated_var;
	*blk = p;
	s->p = (const char *)p + block + sizeof(struct proto_var_hdr);
	s->len = len;
	*pp = p + block + sizeof(struct proto_var_hdr) + len;
	return 0;
}

int proto_cursor_group_var(struct proto_cursor *c, unsigned min_entry,
			   unsigned max_n, struct proto_group_var *g)
{
	size_t avail = (size_t)(c->end - c->p);
	struct proto_group_hdr h;
	const uint8_t *p;

	if (avail < sizeof(h)) {
		g->p = c->p;
		g->end = c->p;
		g->left = 0;
		g->block = min_entry;
		c->p = c->end;
		return 0;
	}
	memcpy(&h, c->p, sizeof(h));
	if (h.num_in_group != 0 && unlikely(h.block_length < min_entry))
		return -PROTO_DROP_bad_group;
	if (unlikely(h.num_in_group > max_n))
		return -PROTO_DROP_oversize;
	/* Cheap bound first: each entry needs its block and a var header. */
	if (unlikely((size_t)h.num_in_group *
		     (h.block_length + sizeof(struct proto_var_hdr)) >
		     avail - sizeof(h)))
		return -PROTO_DROP_truncated_group;
	/* Walk the entries (at most max_n) to find where the group ends, so
	 * that the cursor can go on to the fields after it. */
	p = c->p + sizeof(h);
	for (unsigned i = 0; i < h.num_in_group; i++) {
		const uint8_t *blk;
		struct proto_str s;
		int rc = group_var_entry(&p, c->end, h.block_length, &blk, &s);

		if (rc)
			return rc;
	}
	g->p = c->p + sizeof(h);
	g->end = p;
	g->left = h.num_in_group;
	g->block = h.block_length;
	c->p = p;
	return 0;
}

int proto_group_var_next(struct proto_group_var *g, const uint8_t **block,
			 struct proto_str *s)
{
	int rc;

	if (g->left == 0)
		return 0;
	rc = group_var_entry(&g->p, g->end, g->block, block, s);
	if (rc)
		return rc;
	g->left--;
	return 1;
}

/* ------------------------------------------------------------------------
 * Encoder.  Errors are sticky (e->err), so a sequence of calls needs one
 * check at the end.
 */

/* A message and a datagram are at most 65535 bytes (u16 lengths). */
#define ENC_CAP_MAX ((size_t)0xffff & ~(size_t)(PROTO_ALIGN - 1))

static inline bool enc_fits(struct proto_enc *e, size_t n)
{
	if (unlikely(e->err))
		return false;
	if (unlikely(n > e->cap - e->len)) {
		e->err = -ENOSPC;
		return false;
	}
	return true;
}

static inline void enc_put(struct proto_enc *e, const void *p, size_t n)
{
	if (n)
		memcpy(e->buf + e->len, p, n);
	e->len += n;
}

void proto_enc_init(struct proto_enc *e, void *buf, size_t cap,
		    const struct proto_pkt_hdr *hdr)
{
	e->buf = buf;
	e->cap = cap < ENC_CAP_MAX ? cap : ENC_CAP_MAX;
	e->len = 0;
	e->msg_start = SIZE_MAX;
	e->count = 0;
	e->err = 0;
	if (!enc_fits(e, sizeof(*hdr)))
		return;
	enc_put(e, hdr, sizeof(*hdr));
}

void *proto_enc_msg_begin(struct proto_enc *e, unsigned template_id,
			  unsigned block_len)
{
	struct proto_msg_hdr h;
	void *blk;

	if (e->err)
		return NULL;
	if (unlikely(e->msg_start != SIZE_MAX || template_id > 0xffff ||
		     block_len > 0xffff)) {
		e->err = -EINVAL;	/* programmer error: nested or absurd */
		return NULL;
	}
	ASSERT((e->len & (PROTO_ALIGN - 1)) == 0);
	/* Where the message starts, also when it does not fit: msg_abort()
	 * comes back here. */
	e->msg_start = e->len;
	if (!enc_fits(e, sizeof(h) + (size_t)block_len))
		return NULL;
	h.length = 0;		/* set by msg_end */
	h.block_length = (uint16_t)block_len;
	h.template_id = (uint16_t)template_id;
	h.schema_id = PROTO_SCHEMA_ID;
	h.version = PROTO_SCHEMA_VERSION;
	enc_put(e, &h, sizeof(h));
	blk = e->buf + e->len;
	memset(blk, 0, block_len);
	e->len += block_len;
	return blk;
}

void proto_enc_group_hdr(struct proto_enc *e, unsigned stride, unsigned n)
{
	struct proto_group_hdr h;

	if (e->err)
		return;
	if (unlikely(e->msg_start == SIZE_MAX || stride > 0xffff ||
		     n > 0xffff)) {
		e->err = -EINVAL;
		return;
	}
	if (!enc_fits(e, sizeof(h)))
		return;
	h.block_length = (uint16_t)stride;
	h.num_in_group = (uint16_t)n;
	enc_put(e, &h, sizeof(h));
}

void proto_enc_group(struct proto_enc *e, const void *entries, unsigned stride,
		     unsigned n)
{
	size_t bytes = (size_t)stride * n;

	proto_enc_group_hdr(e, stride, n);
	if (!enc_fits(e, bytes))
		return;
	enc_put(e, entries, bytes);
}

void proto_enc_group_u32(struct proto_enc *e, const uint32_t *v, unsigned n)
{
	/* Little-endian host (asserted above): the array is the wire form. */
	proto_enc_group(e, v, sizeof(uint32_t), n);
}

void proto_enc_raw(struct proto_enc *e, const void *p, size_t len)
{
	if (e->err)
		return;
	if (unlikely(e->msg_start == SIZE_MAX)) {
		e->err = -EINVAL;
		return;
	}
	if (!enc_fits(e, len))
		return;
	enc_put(e, p, len);
}

void proto_enc_var(struct proto_enc *e, const void *p, size_t len)
{
	uint16_t l16;

	if (e->err)
		return;
	if (unlikely(e->msg_start == SIZE_MAX || len > 0xffff)) {
		e->err = -EINVAL;
		return;
	}
	if (!enc_fits(e, sizeof(l16) + len))
		return;
	l16 = (uint16_t)len;
	enc_put(e, &l16, sizeof(l16));
	enc_put(e, p, len);
}

void proto_enc_msg_end(struct proto_enc *e)
{
	size_t pad, mlen;
	uint16_t l16;

	if (e->err)
		return;
	if (unlikely(e->msg_start == SIZE_MAX)) {
		e->err = -EINVAL;
		return;
	}
	/* Padding is zero on send (docs/protocol.md: receivers read missing
	 * trailing fields from it as empty). */
	pad = ALIGN_UP(e->len, (size_t)PROTO_ALIGN) - e->len;
	if (!enc_fits(e, pad))
		return;
	memset(e->buf + e->len, 0, pad);
	e->len += pad;
	mlen = e->len - e->msg_start;
	if (unlikely(mlen > 0xffff || e->count >= PROTO_COUNT_MAX)) {
		e->err = -ENOSPC;
		return;
	}
	l16 = (uint16_t)mlen;
	memcpy(e->buf + e->msg_start + offsetof(struct proto_msg_hdr, length),
	       &l16, sizeof(l16));
	e->count++;
	e->msg_start = SIZE_MAX;
}

size_t proto_enc_room(const struct proto_enc *e, size_t tag_len)
{
	size_t limit;

	if (e->err || tag_len > e->cap)
		return 0;
	/* The message's end is padded to 8, so only whole 8-byte units
	 * before the tag are usable. */
	limit = (e->cap - tag_len) & ~(size_t)(PROTO_ALIGN - 1);
	return limit > e->len ? limit - e->len : 0;
}

void proto_enc_msg_abort(struct proto_enc *e)
{
	if (e->msg_start == SIZE_MAX)
		return;
	e->len = e->msg_start;
	e->msg_start = SIZE_MAX;
	/* Whatever went wrong went wrong inside the abandoned message. */
	if (e->len >= sizeof(struct proto_pkt_hdr))
		e->err = 0;
}

int proto_enc_finish(struct proto_enc *e, size_t tag_len)
{
	struct proto_pkt_hdr *h = (struct proto_pkt_hdr *)e->buf;
	uint16_t count, length;
	uint8_t flags;

	if (e->err)
		return e->err;
	if (unlikely(e->msg_start != SIZE_MAX))
		return -EINVAL;		/* a message is still open */
	if (unlikely(tag_len != 0 && tag_len != PROTO_TAG_LEN))
		return -EINVAL;
	if (unlikely(tag_len > e->cap - e->len))
		return -ENOSPC;
	memset(e->buf + e->len, 0, tag_len);	/* written by velo_auth_seal */
	e->len += tag_len;

	memcpy(&count, &h->msg_count, sizeof(count));
	/* With no message, the caller's count stays: 0 is a heartbeat,
	 * PROTO_COUNT_END ends the session. */
	if (e->count != 0 || count != PROTO_COUNT_END)
		count = (uint16_t)e->count;
	length = (uint16_t)e->len;
	memcpy(&flags, &h->flags, 1);
	flags = tag_len ? (flags | PROTO_F_AUTH) : (flags & ~PROTO_F_AUTH);
	memcpy(&h->flags, &flags, 1);
	memcpy(&h->msg_count, &count, sizeof(count));
	memcpy(&h->length, &length, sizeof(length));
	return (int)e->len;
}

/* ------------------------------------------------------------------------
 * INFER encoder.
 */

static size_t var_size(const char *s, size_t len)
{
	(void)s;
	return sizeof(struct proto_var_hdr) + len;
}

static size_t str_len(const char *s)
{
	return s ? strlen(s) : 0;
}

size_t proto_infer_msg_size(const struct proto_infer_req *r)
{
	const size_t gh = sizeof(struct proto_group_hdr);
	size_t n = sizeof(struct proto_msg_hdr) + sizeof(struct proto_infer);

	n += gh + 4u * (size_t)r->n_prompt_tokens;
	n += gh + 4u * (size_t)r->n_stop_tokens;
	n += gh + sizeof(struct proto_logit_bias) * (size_t)r->n_logit_bias;
	n += gh;
	for (uint32_t i = 0; i < r->n_stop_seqs; i++)
		n += var_size(r->stop_seqs[i], str_len(r->stop_seqs[i]));
	n += gh;
	for (uint32_t i = 0; i < r->n_messages; i++)
		n += sizeof(struct proto_chat_msg) +
		     var_size(r->msg_texts[i], str_len(r->msg_texts[i]));
	n += var_size(r->model, str_len(r->model));
	n += var_size(r->version, str_len(r->version));
	n += var_size(r->prompt_text, r->prompt_text ? r->prompt_text_len : 0);
	return ALIGN_UP(n, (size_t)PROTO_ALIGN);
}

int proto_enc_infer(struct proto_enc *e, const struct proto_infer_req *r)
{
	struct proto_infer *blk;

	if (e->err)
		return e->err;
	blk = proto_enc_msg_begin(e, PROTO_T_INFER, sizeof(*blk));
	if (!blk)
		goto err;
	memcpy(blk, &r->f, sizeof(*blk));
	proto_enc_group_u32(e, r->prompt_tokens, r->n_prompt_tokens);
	proto_enc_group_u32(e, r->stop_tokens, r->n_stop_tokens);
	proto_enc_group(e, r->logit_bias, sizeof(struct proto_logit_bias),
			r->n_logit_bias);
	proto_enc_group_hdr(e, 0, r->n_stop_seqs);
	for (uint32_t i = 0; i < r->n_stop_seqs; i++)
		proto_enc_var(e, r->stop_seqs[i], str_len(r->stop_seqs[i]));
	proto_enc_group_hdr(e, sizeof(struct proto_chat_msg), r->n_messages);
	for (uint32_t i = 0; i < r->n_messages; i++) {
		proto_enc_raw(e, &r->msg_roles[i], sizeof(struct proto_chat_msg));
		proto_enc_var(e, r->msg_texts[i], str_len(r->msg_texts[i]));
	}
	proto_enc_var(e, r->model, str_len(r->model));
	proto_enc_var(e, r->version, str_len(r->version));
	proto_enc_var(e, r->prompt_text, r->prompt_text ? r->prompt_text_len : 0);
	proto_enc_msg_end(e);
	if (e->err)
		goto err;
	return 0;
err:
	{
		int rc = e->err ? e->err : -ENOSPC;

		proto_enc_msg_abort(e);
		return rc == -EINVAL ? -EINVAL : -ENOSPC;
	}
}
