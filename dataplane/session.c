// SPDX-License-Identifier: MIT
/*
 * session.c — server sessions (see session.h and docs/velod.md).
 *
 * Everything runs on the dataplane thread; nothing allocates after
 * dp_sess_init().  Costs that matter: a session datagram is one table index
 * (the session id carries its slot), a GCRA compare when rate limiting is
 * on, a 2048-bit window test, one AEAD verification (the dominant cost,
 * ~0.3-1 us for a 100-1400 byte datagram) and the message walk.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <velo/compiler.h>

#include "../tools/lib/log.h"
#include "session.h"

#define NS_PER_MS 1000000ull
#define TICK_NS NS_PER_MS		/* timer scan period */
#define TICK_SLOTS 1024			/* sessions looked at per tick */
#define RETRY_AFTER_MS 10		/* in REJECT OVERLOADED */

const struct ctr_desc dp_ctr_desc[DP_CTR__COUNT] = {
#define X(name, help) { #name, help },
	foreach_dp_counter(X)
#undef X
#define X(name, help) { "drop_" #name, help },
	foreach_proto_drop(X)
#undef X
};

const struct ctr_desc sess_ctr_desc[SESS_CTR__COUNT] = {
#define X(name, help) { #name, help },
	foreach_sess_counter(X)
#undef X
};

/* ------------------------------------------------------------------------
 * Configuration.
 */

void dp_sess_config_default(struct dp_sess_config *c)
{
	memset(c, 0, sizeof(*c));
	c->sessions_max = CONFIG_DP_SESSIONS_MAX;
	c->mtu = CONFIG_DP_MTU;
	c->replay_depth = CONFIG_DP_REPLAY_DEPTH;
	c->heartbeat_ms = CONFIG_DP_HEARTBEAT_MS;
	c->heartbeat_min_ms = 10;
	c->heartbeat_max_ms = 30000;
	c->timeout_ms = CONFIG_DP_SESSION_TIMEOUT_MS;
	c->logon_window_ms = CONFIG_DP_LOGON_WINDOW_MS;
	c->nonce_cache = CONFIG_DP_NONCE_CACHE;
	c->credit_requests = CONFIG_DP_CREDIT_REQUESTS;
	c->credit_tokens = CONFIG_DP_CREDIT_TOKENS;
	c->dedup_ids = CONFIG_DP_DEDUP_IDS;
	c->rate_pps = 0;
	c->rate_burst = 0;
	c->logon_rate_pps = 100;
	c->logon_rate_burst = 20;
	c->frag_buffers = CONFIG_DP_FRAG_BUFFERS;
	c->frag_bytes = CONFIG_DP_FRAG_BYTES;
	c->frag_timeout_ms = CONFIG_DP_FRAG_TIMEOUT_MS;
	c->limits.vocab_size = 0;
	c->limits.prompt_tokens_max = CONFIG_DP_PROMPT_TOKENS_MAX;
	c->limits.max_tokens_max = CONFIG_DP_MAX_TOKENS_MAX;
	c->limits.text_bytes_max = CONFIG_DP_TEXT_BYTES_MAX;
}

#define CHECK(cond, ...)                                                      \
	do {                                                                  \
		if (!(cond)) {                                                \
			if (err && errlen)                                    \
				snprintf(err, errlen, __VA_ARGS__);           \
			return -EINVAL;                                       \
		}                                                             \
	} while (0)

int dp_sess_config_check(const struct dp_sess_config *c, char *err,
			 size_t errlen)
{
	CHECK(c->sessions_max >= 1 && c->sessions_max <= 65535,
	      "sessions.max must be 1..65535");
	CHECK(c->mtu >= PROTO_MTU_MIN && c->mtu <= PROTO_MTU_MAX && !(c->mtu % 8),
	      "sessions.mtu must be %d..%d and a multiple of 8", PROTO_MTU_MIN,
	      PROTO_MTU_MAX);
	CHECK(c->replay_depth >= 4 && c->replay_depth <= 65536,
	      "sessions.replay_depth must be 4..65536");
	CHECK((uint64_t)c->sessions_max * c->replay_depth * c->mtu <= (8ull << 30),
	      "replay buffers (max x depth x mtu) over 8 GiB");
	CHECK(c->heartbeat_min_ms >= 1 && c->heartbeat_min_ms <= c->heartbeat_max_ms,
	      "sessions.heartbeat_min_ms must be >= 1 and <= heartbeat_max_ms");
	CHECK(c->heartbeat_ms >= c->heartbeat_min_ms &&
	      c->heartbeat_ms <= c->heartbeat_max_ms,
	      "sessions.heartbeat_ms outside heartbeat_min_ms..heartbeat_max_ms");
	CHECK(c->timeout_ms >= 1, "sessions.timeout_ms must be >= 1");
	CHECK(c->logon_window_ms >= 1, "sessions.logon_window_ms must be >= 1");
	CHECK(c->nonce_cache >= 1 && c->nonce_cache <= (1u << 22),
	      "sessions.nonce_cache must be 1..4194304");
	CHECK(c->credit_requests >= 1, "sessions.credit_requests must be >= 1");
	CHECK(c->credit_tokens >= 1, "sessions.credit_tokens must be >= 1");
	CHECK(c->dedup_ids > c->credit_requests && c->dedup_ids <= 65536,
	      "sessions.dedup_ids must be > credit_requests (and <= 65536)");
	CHECK(!c->rate_pps || c->rate_burst >= 1,
	      "sessions.rate_burst must be >= 1 when rate_pps is set");
	CHECK(!c->logon_rate_pps || c->logon_rate_burst >= 1,
	      "sessions.logon_rate_burst must be >= 1 when logon_rate_pps is set");
	CHECK(c->frag_buffers >= 1 && c->frag_buffers <= 65536,
	      "reassembly.buffers must be 1..65536");
	CHECK(c->frag_bytes >= 64 && c->frag_bytes <= (64u << 20),
	      "reassembly.bytes must be 64..64M");
	CHECK(c->frag_timeout_ms >= 1, "reassembly.timeout_ms must be >= 1");
	CHECK(c->limits.prompt_tokens_max >= 1, "requests.prompt_tokens_max >= 1");
	CHECK(c->limits.text_bytes_max >= 64, "requests.text_bytes_max >= 64");
	CHECK(c->limits.max_tokens_max >= 1, "requests.max_tokens_max >= 1");
	return 0;
}

/* ------------------------------------------------------------------------
 * Init.
 */

int dp_sess_init(struct dp_sess_table *t, const struct dp_sess_config *cfg,
		 const struct velo_psk *keys, unsigned n_keys,
		 struct dp_rings *rings, struct dp_txq *txq,
		 bool register_counters)
{
	const struct dp_sess_config *c = cfg;
	size_t rb_bytes;
	int rc = -ENOMEM;

	memset(t, 0, sizeof(*t));
	if (dp_sess_config_check(cfg, NULL, 0) || !rings || !txq ||
	    txq->buf_size < cfg->mtu || rings->prompt_tokens_max <
	    cfg->limits.prompt_tokens_max || rings->text_bytes_max <
	    cfg->limits.text_bytes_max)
		return -EINVAL;
	t->cfg = *cfg;
	t->keys = keys;
	t->n_keys = n_keys;
	t->rings = rings;
	t->txq = txq;
	t->rb_stride = ALIGN_UP(c->mtu, 64u);

	/* sessions_max x replay_depth x mtu: the dominant term. */
	rb_bytes = (size_t)c->sessions_max * c->replay_depth * t->rb_stride;
	t->sess = aligned_alloc(VELO_CACHE_LINE,
				ALIGN_UP(c->sessions_max * sizeof(*t->sess), 64));
	if (!t->sess)
		goto err;
	t->free_slots = calloc(c->sessions_max, sizeof(*t->free_slots));
	if (!t->free_slots)
		goto err_free_sess;
	t->rb_data = aligned_alloc(VELO_CACHE_LINE, rb_bytes);
	if (!t->rb_data)
		goto err_free_slots;
	t->rb_ents = calloc((size_t)c->sessions_max * c->replay_depth,
			    sizeof(*t->rb_ents));
	if (!t->rb_ents)
		goto err_free_rb;
	t->dedup_mask = 1;
	while (t->dedup_mask + 1 < c->dedup_ids)
		t->dedup_mask = 2 * t->dedup_mask + 1;
	t->dedup_ents = calloc((size_t)c->sessions_max * (t->dedup_mask + 1),
			       sizeof(*t->dedup_ents));
	if (!t->dedup_ents)
		goto err_free_rb_ents;
	t->dirty = calloc(c->sessions_max, sizeof(*t->dirty));
	if (!t->dirty)
		goto err_free_dedup;
	t->frags = calloc(c->frag_buffers, sizeof(*t->frags));
	if (!t->frags)
		goto err_free_dirty;
	t->frag_data = aligned_alloc(VELO_CACHE_LINE,
				     (size_t)c->frag_buffers * ALIGN_UP(c->frag_bytes, 64u));
	if (!t->frag_data)
		goto err_free_frags;
	t->nonces = calloc(c->nonce_cache, sizeof(*t->nonces));
	if (!t->nonces)
		goto err_free_frag_data;
	t->logon_tat = calloc(DP_LOGON_ADDRS, sizeof(*t->logon_tat));
	if (!t->logon_tat)
		goto err_free_nonces;
	t->logon_keys = calloc(n_keys ? n_keys : 1, sizeof(*t->logon_keys));
	if (!t->logon_keys)
		goto err_free_tat;

	memset(t->sess, 0, c->sessions_max * sizeof(*t->sess));
	for (unsigned i = 0; i < c->sessions_max; i++) {
		struct dp_sess *s = &t->sess[i];

		s->slot = (uint16_t)i;
		s->rb = &t->rb_ents[(size_t)i * c->replay_depth];
		s->rb_data = t->rb_data + (size_t)i * c->replay_depth * t->rb_stride;
		s->dedup = &t->dedup_ents[(size_t)i * (t->dedup_mask + 1)];
		t->free_slots[i] = (uint16_t)(c->sessions_max - 1 - i);
	}
	t->n_free_slots = c->sessions_max;
	for (unsigned i = 0; i < c->frag_buffers; i++)
		t->frags[i].data = t->frag_data + (size_t)i * ALIGN_UP(c->frag_bytes, 64u);
	for (unsigned i = 0; i < n_keys; i++)
		velo_auth_logon_keys(&keys[i], &t->logon_keys[i]);
	t->suites_local = velo_auth_suites_local();

	if (c->rate_pps) {
		t->rl_interval_ns = 1000000000ull / c->rate_pps;
		t->rl_tau_ns = t->rl_interval_ns * (c->rate_burst - 1);
	}
	if (c->logon_rate_pps) {
		t->logon_interval_ns = 1000000000ull / c->logon_rate_pps;
		t->logon_tau_ns = t->logon_interval_ns * (c->logon_rate_burst - 1);
	}

	if (register_counters) {
		rc = ctr_block_register("dp", dp_ctr_desc, t->dp_ctr, DP_CTR__COUNT);
		if (rc)
			goto err_free_keys;
		rc = ctr_block_register("sess", sess_ctr_desc, t->ctr, SESS_CTR__COUNT);
		if (rc) {
			ctr_block_unregister(t->dp_ctr);
			goto err_free_keys;
		}
		t->registered = true;
	}
	LOG_I(sess, "session table: %u sessions, replay %u x %u bytes (%zu MiB), "
	      "%u reassembly buffers x %u bytes, %u keys", c->sessions_max,
	      c->replay_depth, c->mtu, rb_bytes >> 20, c->frag_buffers,
	      c->frag_bytes, n_keys);
	return 0;

err_free_keys:
	free(t->logon_keys);
err_free_tat:
	free(t->logon_tat);
err_free_nonces:
	free(t->nonces);
err_free_frag_data:
	free(t->frag_data);
err_free_frags:
	free(t->frags);
err_free_dirty:
	free(t->dirty);
err_free_dedup:
	free(t->dedup_ents);
err_free_rb_ents:
	free(t->rb_ents);
err_free_rb:
	free(t->rb_data);
err_free_slots:
	free(t->free_slots);
err_free_sess:
	free(t->sess);
err:
	memset(t, 0, sizeof(*t));
	return rc;
}

void dp_sess_fini(struct dp_sess_table *t)
{
	if (t->registered) {
		ctr_block_unregister(t->ctr);
		ctr_block_unregister(t->dp_ctr);
	}
	if (t->logon_keys)
		explicit_bzero(t->logon_keys, t->n_keys * sizeof(*t->logon_keys));
	if (t->sess)
		explicit_bzero(t->sess, t->cfg.sessions_max * sizeof(*t->sess));
	free(t->logon_keys);
	free(t->logon_tat);
	free(t->nonces);
	free(t->frag_data);
	free(t->frags);
	free(t->dirty);
	free(t->dedup_ents);
	free(t->rb_ents);
	free(t->rb_data);
	free(t->free_slots);
	free(t->sess);
	memset(t, 0, sizeof(*t));
}

/* ------------------------------------------------------------------------
 * Small helpers.
 */

static inline void drop(struct dp_sess_table *t, int reason)
{
	if (unlikely(reason <= PROTO_DROP_NONE || reason >= PROTO_DROP__COUNT))
		reason = PROTO_DROP_bad_length;	/* a codec bug: still count */
	t->dp_ctr[DP_CTR_drop_short + (reason - PROTO_DROP_short)]++;
}

static inline void ctr(struct dp_sess_table *t, enum sess_ctr c)
{
	t->ctr[c]++;
}

/* GCRA (virtual scheduling): at most burst back to back, then one per
 * interval.  Returns false when over. */
static inline bool gcra(uint64_t *tat, uint64_t now, uint64_t interval,
			uint64_t tau)
{
	uint64_t t0 = *tat > now ? *tat : now;

	if (t0 - now > tau)
		return false;
	*tat = t0 + interval;
	return true;
}

static void reject_ctr(struct dp_sess_table *t, unsigned code)
{
	static const uint8_t map[] = {
		[PROTO_E_INVALID] = SESS_CTR_reject_invalid,
		[PROTO_E_INVALID_PARAM] = SESS_CTR_reject_invalid_param,
		[PROTO_E_UNKNOWN_MODEL] = SESS_CTR_reject_unknown_model,
		[PROTO_E_OVERLOADED] = SESS_CTR_reject_overloaded,
		[PROTO_E_DEADLINE] = SESS_CTR_reject_deadline,
		[PROTO_E_NOT_READY] = SESS_CTR_reject_not_ready,
		[PROTO_E_INTERNAL] = SESS_CTR_reject_internal,
		[PROTO_E_DUPLICATE] = SESS_CTR_reject_duplicate,
		[PROTO_E_TOO_LARGE] = SESS_CTR_reject_too_large,
		[PROTO_E_AUTH] = SESS_CTR_reject_auth,
		[PROTO_E_SHUTTING_DOWN] = SESS_CTR_reject_shutting_down,
	};

	if (code && code < ARRAY_SIZE(map) && map[code])
		ctr(t, map[code]);
	else
		ctr(t, SESS_CTR_reject_other);
}

static void hdr_init(struct proto_pkt_hdr *h, uint8_t flags, uint64_t sid,
		     uint64_t seq, uint64_t ack)
{
	memset(h, 0, sizeof(*h));
	h->magic = PROTO_MAGIC;
	h->version = PROTO_VERSION;
	h->flags = flags;
	h->session_id = sid;
	h->seq = seq;
	h->ack = ack;
}

struct dp_sess *dp_sess_lookup(struct dp_sess_table *t, uint64_t id)
{
	unsigned slot = (unsigned)(id & 0xffff);
	struct dp_sess *s;

	if (unlikely(!id || slot >= t->cfg.sessions_max))
		return NULL;
	s = &t->sess[slot];
	if (unlikely(s->id != id || s->state != DP_SESS_ACTIVE))
		return NULL;
	return s;
}

unsigned dp_sess_frags_used(const struct dp_sess_table *t)
{
	return t->frags_used;
}

/* ------------------------------------------------------------------------
 * Transmit.  Message writers append one message to an encoder; the caller
 * checks e->err.
 */

typedef void (*msg_put_fn)(struct proto_enc *e, const void *arg);

struct put_block {
	unsigned tid;
	const void *block;
	unsigned len;
	const char *text;	/* optional var data */
	size_t text_len;
	bool has_text;
};

static void put_block(struct proto_enc *e, const void *arg)
{
	const struct put_block *p = arg;
	void *blk = proto_enc_msg_begin(e, p->tid, p->len);

	if (!blk)
		return;
	memcpy(blk, p->block, p->len);
	if (p->has_text)
		proto_enc_var(e, p->text ? p->text : "", p->text_len);
	proto_enc_msg_end(e);
}

static void sess_txq_push(struct dp_sess_table *t, struct dp_sess *s,
			  const uint8_t *dgram, unsigned len)
{
	uint8_t *o = dp_txq_buf(t->txq);

	memcpy(o, dgram, len);
	dp_txq_commit(t->txq, len, &s->peer);
	s->last_tx_ns = t->now_ns;
	s->tx_datagrams++;
}

/* Begin a control datagram in a txq buffer. */
static void ctrl_begin(struct dp_sess_table *t, struct proto_enc *e,
		       uint64_t sid, uint64_t seq, uint64_t ack, unsigned mtu)
{
	struct proto_pkt_hdr h;
	uint8_t *buf = dp_txq_buf(t->txq);

	hdr_init(&h, PROTO_F_S2C | PROTO_F_CTRL, sid, seq, ack);
	proto_enc_init(e, buf, MIN(mtu, t->txq->buf_size), &h);
}

/* Finish, number, seal and queue a control datagram begun by ctrl_begin. */
static bool ctrl_send(struct dp_sess_table *t, struct proto_enc *e,
		      const struct velo_dir_key *k, uint64_t pkt_num,
		      const uint8_t *logon_nonce, const struct dp_addr *to,
		      bool end_of_session)
{
	struct proto_pkt_hdr *h = (struct proto_pkt_hdr *)e->buf;
	int len = proto_enc_finish(e, PROTO_TAG_LEN);

	if (unlikely(len < 0)) {
		ctr(t, SESS_CTR_tx_msg_too_large);
		return false;
	}
	h->pkt_num = pkt_num;
	if (end_of_session)
		h->msg_count = PROTO_COUNT_END;
	if (unlikely(velo_auth_seal(k, e->buf, (size_t)len, logon_nonce))) {
		ctr(t, SESS_CTR_tx_msg_too_large);
		return false;
	}
	dp_txq_commit(t->txq, (uint32_t)len, to);
	ctr(t, SESS_CTR_tx_ctrl_datagrams);
	return true;
}

/* A control datagram of a session: zero or one message. */
static void sess_ctrl(struct dp_sess_table *t, struct dp_sess *s,
		      msg_put_fn put, const void *arg, bool end_of_session)
{
	struct proto_enc e;

	ctrl_begin(t, &e, s->id, s->tx_seq, s->rx_seq_next, s->mtu);
	if (put)
		put(&e, arg);
	if (ctrl_send(t, &e, &s->keys.s2c, s->tx_pkt_num, NULL, &s->peer,
		      end_of_session)) {
		s->tx_pkt_num++;
		s->last_tx_ns = t->now_ns;
		s->tx_datagrams++;
	}
}

static inline uint8_t *rb_buf(const struct dp_sess_table *t,
			      const struct dp_sess *s, unsigned i)
{
	return s->rb_data + (size_t)i * t->rb_stride;
}

/* Open a data datagram in the replay slot rb_head. */
static void data_open(struct dp_sess_table *t, struct dp_sess *s)
{
	struct dp_replay_ent *ent = &s->rb[s->rb_head];
	struct proto_pkt_hdr h;

	if (s->rb_used == t->cfg.replay_depth)
		s->rb_used--;	/* the oldest datagram is overwritten */
	ent->first_seq = s->tx_seq;
	ent->count = 0;
	ent->len = 0;
	hdr_init(&h, PROTO_F_S2C, s->id, s->tx_seq, s->rx_seq_next);
	proto_enc_init(&s->enc, rb_buf(t, s, s->rb_head), s->mtu, &h);
	s->open = true;
	if (!s->dirty) {
		s->dirty = true;
		t->dirty[t->n_dirty++] = s->slot;
	}
}

/* Close the open data datagram: seal it in the replay buffer, queue a copy. */
static void data_close(struct dp_sess_table *t, struct dp_sess *s)
{
	struct dp_replay_ent *ent = &s->rb[s->rb_head];
	uint8_t *buf = rb_buf(t, s, s->rb_head);
	struct proto_pkt_hdr *h = (struct proto_pkt_hdr *)buf;
	int len;

	s->open = false;
	if (!ent->count)
		return;		/* nothing went in: the slot stays free */
	len = proto_enc_finish(&s->enc, PROTO_TAG_LEN);
	VERIFY(len > 0 && (unsigned)len <= s->mtu);
	h->pkt_num = s->tx_pkt_num++;
	h->ack = s->rx_seq_next;
	velo_auth_seal(&s->keys.s2c, buf, (size_t)len, NULL);
	ent->len = (uint16_t)len;
	s->rb_head = (s->rb_head + 1) % t->cfg.replay_depth;
	s->rb_used++;
	sess_txq_push(t, s, buf, (unsigned)len);
	ctr(t, SESS_CTR_tx_data_datagrams);
}

/*
 * Append one sequenced message to the session's open datagram (a new one
 * when it does not fit).  Return: its seq, or 0 when the message can not
 * fit even an empty datagram (counted).
 */
static uint64_t data_emit(struct dp_sess_table *t, struct dp_sess *s,
			  msg_put_fn put, const void *arg)
{
	for (int attempt = 0; attempt < 2; attempt++) {
		struct dp_replay_ent *ent;

		size_t len0;
		unsigned count0;

		if (!s->open)
			data_open(t, s);
		ent = &s->rb[s->rb_head];
		len0 = s->enc.len;
		count0 = s->enc.count;
		put(&s->enc, arg);
		/* The encoder fills up to its cap; the tag must fit after. */
		if (likely(!s->enc.err && ent->count < PROTO_COUNT_MAX &&
			   s->enc.len + PROTO_TAG_LEN <= s->enc.cap)) {
			ent->count++;
			ctr(t, SESS_CTR_tx_msgs);
			return s->tx_seq++;
		}
		/* Undo the message whole: put() may have closed it already (it
		 * fit the encoder but left no room for the tag), which
		 * proto_enc_msg_abort() alone can not take back. */
		proto_enc_msg_abort(&s->enc);
		s->enc.len = len0;
		s->enc.count = count0;
		s->enc.err = 0;
		if (!ent->count) {
			s->open = false;	/* give the empty slot back */
			break;
		}
		data_close(t, s);
	}
	ctr(t, SESS_CTR_tx_msg_too_large);
	return 0;
}

static void data_block(struct dp_sess_table *t, struct dp_sess *s, unsigned tid,
		       const void *block, unsigned len, uint64_t *seq)
{
	struct put_block p = { .tid = tid, .block = block, .len = len };
	uint64_t q = data_emit(t, s, put_block, &p);

	if (seq)
		*seq = q;
}

/* Retransmit replay entry i: same bytes, F_RETRANS, new pkt_num and ack. */
static void retransmit_ent(struct dp_sess_table *t, struct dp_sess *s, unsigned i)
{
	const struct dp_replay_ent *ent = &s->rb[i];
	uint8_t *o = dp_txq_buf(t->txq);
	struct proto_pkt_hdr *h = (struct proto_pkt_hdr *)o;

	memcpy(o, rb_buf(t, s, i), ent->len);
	h->flags |= PROTO_F_RETRANS;
	h->pkt_num = s->tx_pkt_num++;
	h->ack = s->rx_seq_next;
	velo_auth_seal(&s->keys.s2c, o, ent->len, NULL);
	dp_txq_commit(t->txq, ent->len, &s->peer);
	s->last_tx_ns = t->now_ns;
	s->tx_datagrams++;
	ctr(t, SESS_CTR_retrans_datagrams);
}

static inline unsigned rb_oldest(const struct dp_sess_table *t,
				 const struct dp_sess *s)
{
	return (s->rb_head + t->cfg.replay_depth - s->rb_used) % t->cfg.replay_depth;
}

/* Replay entry holding seq, or -1. */
static int rb_find(const struct dp_sess_table *t, const struct dp_sess *s,
		   uint64_t seq)
{
	unsigned i = rb_oldest(t, s);

	for (unsigned k = 0; k < s->rb_used; k++) {
		const struct dp_replay_ent *ent = &s->rb[i];

		if (seq >= ent->first_seq && seq < ent->first_seq + ent->count)
			return (int)i;
		if (ent->first_seq > seq)
			break;
		i = (i + 1) % t->cfg.replay_depth;
	}
	return -1;
}

/* ------------------------------------------------------------------------
 * Session life.
 */

static void frag_free(struct dp_sess_table *t, struct dp_frag_buf *b)
{
	if (b->used) {
		b->used = false;
		t->frags_used--;
	}
}

static void sess_free(struct dp_sess_table *t, struct dp_sess *s,
		      enum sess_ctr why, bool send_end)
{
	if (s->open)
		data_close(t, s);	/* answers already made go out first */
	if (send_end) {
		sess_ctrl(t, s, NULL, NULL, true);
		ctr(t, SESS_CTR_end_tx);
	}
	/* Requests still with the scheduler: cancel them; their responses
	 * will find the session gone (generation) and free the slots. */
	for (unsigned i = 0; i <= t->dedup_mask; i++) {
		struct dp_dedup_ent *e = &s->dedup[i];
		struct dp_req_msg m;

		if (e->state != DP_DEDUP_INFLIGHT || e->cancel_sent)
			continue;
		m = (struct dp_req_msg){ .op = DP_REQ_CANCEL, .sess_slot = s->slot,
					 .sess_gen = s->gen, .req_slot = e->req_slot,
					 .request_id = e->request_id,
					 .session_id = s->id };
		if (dp_req_enqueue(t->rings, &m)) {
			ctr(t, SESS_CTR_cancel_to_engine);
			t->kick_engine = true;
		}
	}
	for (unsigned i = 0; i < t->cfg.frag_buffers; i++) {
		struct dp_frag_buf *b = &t->frags[i];

		if (b->used && b->sess_slot == s->slot && b->sess_gen == s->gen)
			frag_free(t, b);
	}
	ctr(t, why);
	explicit_bzero(&s->keys, sizeof(s->keys));
	s->id = 0;
	s->state = DP_SESS_FREE;
	s->gen++;
	s->open = false;	/* s->dirty stays: it may still be listed */
	t->free_slots[t->n_free_slots++] = s->slot;
	t->n_active--;
}

/* ------------------------------------------------------------------------
 * LOGON.
 */

static int key_find(const struct dp_sess_table *t, uint32_t key_id)
{
	for (unsigned i = 0; i < t->n_keys; i++)
		if (t->keys[i].key_id == key_id)
			return (int)i;
	return -1;
}

/* Client nonce seen inside the window?  Entries live 2 windows: a logon
 * stamped up to one window ahead stays acceptable that long. */
static bool nonce_seen(const struct dp_sess_table *t, const uint8_t *n)
{
	for (unsigned i = 0; i < t->nonce_used; i++)
		if (!memcmp(t->nonces[i].nonce, n, PROTO_NONCE_LEN))
			return true;
	return false;
}

/* Insert into @t's cache at time @now (another loop's clock when the
 * cache is shared). */
static bool nonce_insert_at(struct dp_sess_table *t, uint64_t now,
			    const uint8_t *n)
{
	struct dp_nonce_ent *e;

	if (t->nonce_used == t->cfg.nonce_cache) {
		e = &t->nonces[t->nonce_head];	/* the oldest */
		/* (another loop's clock may lag the entry's by a little) */
		if (now < e->seen_ns ||
		    now - e->seen_ns < 2 * t->cfg.logon_window_ms * NS_PER_MS)
			return false;
	} else {
		e = &t->nonces[t->nonce_used++];
		t->nonce_head = t->nonce_used % t->cfg.nonce_cache;
		memcpy(e->nonce, n, PROTO_NONCE_LEN);
		e->seen_ns = now;
		return true;
	}
	memcpy(e->nonce, n, PROTO_NONCE_LEN);
	e->seen_ns = now;
	t->nonce_head = (t->nonce_head + 1) % t->cfg.nonce_cache;
	return true;
}

/*
 * Claim a LOGON's client nonce: new -> remembered, 0; seen inside the
 * window -> -EALREADY (a replay); the cache full of entries younger than
 * two windows -> -ENOBUFS.  One path for a table's own cache and for the
 * cache several loops share (nonce_tab, under nonce_lock): look-up and
 * insert in one critical section, so two loops can not both find a
 * replayed nonce new.  Cost: one scan of at most nonce_cache entries.
 */
static int nonce_claim(struct dp_sess_table *t, const uint8_t *n)
{
	struct dp_sess_table *c = t->nonce_lock ? t->nonce_tab : t;
	int rc = 0;

	if (t->nonce_lock)
		pthread_spin_lock(t->nonce_lock);
	if (nonce_seen(c, n))
		rc = -EALREADY;
	else if (!nonce_insert_at(c, t->now_ns, n))
		rc = -ENOBUFS;
	if (t->nonce_lock)
		pthread_spin_unlock(t->nonce_lock);
	return rc;
}

void dp_sess_nonces_share(struct dp_sess_table *t, struct dp_sess_table *owner,
			  pthread_spinlock_t *lock)
{
	t->nonce_tab = owner;
	t->nonce_lock = lock;
}

struct logon_ctx {
	const struct dp_addr *from;
	const struct velo_session_keys *lk;
	const uint8_t *client_nonce;
};

static void logon_reject(struct dp_sess_table *t, const struct logon_ctx *c,
			 unsigned code, const char *text)
{
	struct proto_logon_reject r = { .code = (uint16_t)code };
	struct put_block p = { .tid = PROTO_T_LOGON_REJECT, .block = &r,
			       .len = sizeof(r), .text = text,
			       .text_len = strlen(text), .has_text = true };
	struct proto_enc e;

	ctrl_begin(t, &e, 0, 0, 0, PROTO_MTU_MIN);
	put_block(&e, &p);
	/* Sealed under the logon s2c key with the client's nonce: the reply
	 * to this (single-use) logon, which carries no nonce of its own. */
	if (ctrl_send(t, &e, &c->lk->s2c, 1, c->client_nonce, c->from, false))
		ctr(t, SESS_CTR_logon_rejected);
}

static void rx_logon(struct dp_sess_table *t, const struct proto_pkt_view *v,
		     const uint8_t *buf, size_t len, const struct dp_addr *from)
{
	const struct proto_pkt_hdr *h = v->hdr;
	struct proto_msg_iter it;
	struct proto_msg m;
	struct proto_logon lb;
	struct proto_logon_view lv;
	struct proto_logon_ack ack;
	struct logon_ctx lc;
	struct dp_sess *s;
	uint8_t server_nonce[PROTO_NONCE_LEN];
	uint64_t diff, id, rnd;
	unsigned hb, mtu, suite;
	int k, rc;

	if ((h->flags & (PROTO_F_S2C | PROTO_F_AUTH | PROTO_F_CTRL |
			 PROTO_F_RETRANS)) != (PROTO_F_AUTH | PROTO_F_CTRL)) {
		drop(t, PROTO_DROP_bad_flags);
		return;
	}
	if (h->msg_count != 1) {
		drop(t, PROTO_DROP_bad_count);
		return;
	}
	/* The key id is in the (not yet authenticated) root block: a
	 * bounds-checked read of 40 bytes, nothing acted on but the lookup. */
	proto_msg_iter_init(&it, v);
	rc = proto_msg_next(&it, &m);
	if (rc <= 0) {
		drop(t, rc < 0 ? -rc : PROTO_DROP_bad_count);
		return;
	}
	if (m.template_id != PROTO_T_LOGON) {
		drop(t, PROTO_DROP_wrong_direction);
		return;
	}
	rc = proto_block_get(&m, &lb, sizeof(lb), sizeof(lb));
	if (rc) {
		drop(t, -rc);
		return;
	}
	k = key_find(t, lb.key_id);
	if (k < 0) {
		drop(t, PROTO_DROP_unknown_session);
		return;
	}
	if (t->logon_interval_ns) {
		/* Per source address, port ignored (a flood from one host
		 * over many ports shares one bucket). */
		struct dp_addr a = *from;

		if (a.u.sa.sa_family == AF_INET)
			a.u.in4.sin_port = 0;
		else if (a.u.sa.sa_family == AF_INET6)
			a.u.in6.sin6_port = 0;
		if (!gcra(&t->logon_tat[dp_addr_hash(&a) % DP_LOGON_ADDRS],
			  t->now_ns, t->logon_interval_ns, t->logon_tau_ns)) {
			drop(t, PROTO_DROP_rate_limit);
			return;
		}
	}
	if (velo_auth_open(&t->logon_keys[k].c2s, buf, len, lb.client_nonce)) {
		drop(t, PROTO_DROP_bad_tag);
		return;
	}
	/* Authenticated from here on: answers are allowed. */
	diff = t->real_ns > lb.timestamp_ns ? t->real_ns - lb.timestamp_ns
					    : lb.timestamp_ns - t->real_ns;
	if (diff > (uint64_t)t->cfg.logon_window_ms * NS_PER_MS) {
		drop(t, PROTO_DROP_stale_logon);
		return;
	}
	rc = proto_decode_logon(&m, &lv);
	if (rc) {
		drop(t, -rc);
		return;
	}
	lc = (struct logon_ctx){ .from = from, .lk = &t->logon_keys[k],
				 .client_nonce = lb.client_nonce };
	/* (after the decode: a logon that does not decode is never
	 * remembered, so its replays fail the decode the same way) */
	rc = nonce_claim(t, lb.client_nonce);
	if (rc == -EALREADY) {
		drop(t, PROTO_DROP_replay);
		return;
	}
	if (rc) {
		/* No answer: a logon whose nonce can not be remembered could
		 * be replayed, and every copy would be answered (reflection).
		 * The client retries with a new nonce. */
		ctr(t, SESS_CTR_nonce_cache_full);
		drop(t, PROTO_DROP_no_buffer);
		return;
	}
	mtu = lb.mtu ? lb.mtu : t->cfg.mtu;
	if (mtu < PROTO_MTU_MIN) {
		drop(t, PROTO_DROP_bad_param);
		logon_reject(t, &lc, PROTO_E_INVALID_PARAM, "mtu below 512");
		return;
	}
	mtu = MIN(mtu, t->cfg.mtu) & ~7u;
	if (!t->n_free_slots) {
		drop(t, PROTO_DROP_no_buffer);
		logon_reject(t, &lc, PROTO_E_OVERLOADED, "session table full");
		return;
	}

	/* Suite: the client offers, the server picks the fastest it runs. */
	suite = VELO_SUITE_CHACHA20_POLY1305;
	if ((lb.flags & PROTO_LOGON_SUITE_AESGCM) &&
	    (t->suites_local & PROTO_LOGON_SUITE_AESGCM))
		suite = VELO_SUITE_AES256_GCM;
	hb = lb.heartbeat_ms ? MIN(MAX(lb.heartbeat_ms, t->cfg.heartbeat_min_ms),
				   t->cfg.heartbeat_max_ms)
			     : t->cfg.heartbeat_ms;

	s = &t->sess[t->free_slots[--t->n_free_slots]];
	velo_random(&rnd, sizeof(rnd));
	id = (rnd & ~0xffffull) | s->slot;
	if (!(id >> 16))
		id |= 1ull << 16;
	velo_random(server_nonce, sizeof(server_nonce));

	s->id = id;
	s->state = DP_SESS_ACTIVE;
	s->suite = (uint8_t)suite;
	s->key_id = lb.key_id;
	s->mtu = (uint16_t)mtu;
	s->peer = *from;
	velo_auth_session_keys(&t->keys[k], lb.client_nonce, server_nonce, id,
			       (enum velo_suite)suite, &s->keys);
	velo_replay_init(&s->rx_win);
	s->tx_pkt_num = 2;	/* 1 was the LOGON_ACK (logon key) */
	s->tx_seq = 1;
	s->rx_seq_next = 1;
	s->peer_ack = 0;
	s->opened_ns = s->last_rx_ns = s->last_tx_ns = t->now_ns;
	s->heartbeat_ms = hb;
	s->hb_ns = (uint64_t)hb * NS_PER_MS;
	s->timeout_ns = (uint64_t)MAX(t->cfg.timeout_ms, 3 * hb) * NS_PER_MS;
	s->inflight_reqs = 0;
	s->inflight_tokens = 0;
	s->rl_tat = 0;
	memset(s->dedup, 0, (t->dedup_mask + 1) * sizeof(*s->dedup));
	velo_replay_init(&s->req_win);
	s->rb_head = 0;
	s->rb_used = 0;
	s->open = false;
	s->rx_datagrams = 1;
	s->tx_datagrams = 0;
	{
		size_t n = MIN(lv.client_name.len, sizeof(s->client_name) - 1);

		for (size_t i = 0; i < n; i++) {
			char ch = lv.client_name.p[i];

			s->client_name[i] = (ch >= 0x20 && ch < 0x7f) ? ch : '?';
		}
		s->client_name[n] = 0;
	}
	t->n_active++;

	ack = (struct proto_logon_ack){
		.session_id = id,
		.server_time_ns = t->real_ns,
		.heartbeat_ms = hb,
		.session_timeout_ms = (uint32_t)(s->timeout_ns / NS_PER_MS),
		.credit_requests = t->cfg.credit_requests,
		.credit_tokens = t->cfg.credit_tokens,
		.replay_msgs = t->cfg.replay_depth,
		.mtu = (uint16_t)mtu,
		.suite = (uint16_t)suite,
		.dedup_ids = t->cfg.dedup_ids,
	};
	memcpy(ack.server_nonce, server_nonce, sizeof(server_nonce));
	{
		struct put_block p = { .tid = PROTO_T_LOGON_ACK, .block = &ack,
				       .len = sizeof(ack) };
		struct proto_enc e;

		ctrl_begin(t, &e, id, s->tx_seq, s->rx_seq_next, mtu);
		put_block(&e, &p);
		if (ctrl_send(t, &e, &t->logon_keys[k].s2c, 1, server_nonce,
			      from, false)) {
			s->last_tx_ns = t->now_ns;
			s->tx_datagrams++;
		}
	}
	explicit_bzero(server_nonce, sizeof(server_nonce));
	ctr(t, SESS_CTR_logon_ok);
	ctr(t, SESS_CTR_opened);
}

/* ------------------------------------------------------------------------
 * Request ids.
 */

/*
 * The table of recent request ids is direct-mapped by id (ids increase, so
 * consecutive ids take consecutive entries: a ring of the last dedup_ids
 * ids), with DEDUP_PROBE entries of linear probing for sparse ids.  Cost:
 * at most DEDUP_PROBE compares.  Which ids were ever seen is kept apart, in
 * a 2048-id sliding window (struct velo_replay over request_id + 1): an id
 * seen whose answer was forgotten, or older than the window, is DUPLICATE.
 */
#define DEDUP_PROBE 8

static struct dp_dedup_ent *dedup_find(struct dp_sess_table *t,
				       struct dp_sess *s, uint64_t rid)
{
	for (unsigned k = 0; k < DEDUP_PROBE; k++) {
		struct dp_dedup_ent *e = &s->dedup[(rid + k) & t->dedup_mask];

		if (e->state != DP_DEDUP_FREE && e->request_id == rid)
			return e;
	}
	return NULL;
}

/* A new entry for rid: a free one, else the oldest finished one among the
 * probed entries.  NULL when all of them are in flight. */
static struct dp_dedup_ent *dedup_insert(struct dp_sess_table *t,
					 struct dp_sess *s, uint64_t rid)
{
	struct dp_dedup_ent *victim = NULL;

	for (unsigned k = 0; k < DEDUP_PROBE; k++) {
		struct dp_dedup_ent *e = &s->dedup[(rid + k) & t->dedup_mask];

		if (e->state == DP_DEDUP_FREE) {
			victim = e;
			break;
		}
		if (e->state == DP_DEDUP_DONE &&
		    (!victim || e->request_id < victim->request_id))
			victim = e;
	}
	if (!victim)
		return NULL;
	memset(victim, 0, sizeof(*victim));
	victim->request_id = rid;
	velo_replay_update(&s->req_win, rid + 1);
	return victim;
}

/* ------------------------------------------------------------------------
 * Answers.
 */

static uint64_t send_reject(struct dp_sess_table *t, struct dp_sess *s,
			    uint64_t rid, unsigned code, const char *text,
			    uint32_t retry_after_ms)
{
	struct proto_reject r = { .request_id = rid, .code = (uint16_t)code,
				  .retry_after_ms = retry_after_ms };
	struct put_block p = { .tid = PROTO_T_REJECT, .block = &r,
			       .len = sizeof(r), .text = text,
			       .text_len = text ? strlen(text) : 0,
			       .has_text = true };
	uint64_t seq = data_emit(t, s, put_block, &p);

	if (seq)
		reject_ctr(t, code);
	return seq;
}

/* A REJECT from the dataplane, remembered as the request id's answer. */
/* A REJECT from the dataplane, remembered (in @e, when not NULL) as the
 * request id's final answer. */
static void reject_into(struct dp_sess_table *t, struct dp_sess *s,
			struct dp_dedup_ent *e, uint64_t rid, unsigned code,
			const char *text, uint32_t retry_after_ms)
{
	uint64_t seq = send_reject(t, s, rid, code, text, retry_after_ms);

	if (e) {
		e->state = DP_DEDUP_DONE;
		e->answered = PROTO_T_REJECT;
		e->code = (uint16_t)code;
		e->answer_seq = seq;
	}
}

static void reject_final(struct dp_sess_table *t, struct dp_sess *s,
			 uint64_t rid, unsigned code, const char *text,
			 uint32_t retry_after_ms)
{
	reject_into(t, s, dedup_insert(t, s, rid), rid, code, text,
		    retry_after_ms);
}

static void send_accept(struct dp_sess_table *t, struct dp_sess *s,
			uint64_t rid, uint32_t queue_position, uint32_t flags,
			uint64_t *seq)
{
	struct proto_accept a = { .request_id = rid,
				  .queue_position = queue_position,
				  .flags = flags,
				  .server_time_ns = t->real_ns };

	data_block(t, s, PROTO_T_ACCEPT, &a, sizeof(a), seq);
	ctr(t, SESS_CTR_accept_tx);
}

/* A retried request id: its answer again, never a second run. */
static void infer_retry(struct dp_sess_table *t, struct dp_sess *s,
			struct dp_dedup_ent *e)
{
	int i;

	if (!e->answered || !e->answer_seq) {
		ctr(t, SESS_CTR_infer_dup_pending);
		return;
	}
	if (s->open && e->answer_seq >= s->rb[s->rb_head].first_seq) {
		ctr(t, SESS_CTR_infer_dup_pending);	/* goes out this burst */
		return;
	}
	ctr(t, SESS_CTR_infer_dup_resent);
	i = rb_find(t, s, e->answer_seq);
	if (i >= 0) {
		retransmit_ent(t, s, (unsigned)i);
		return;
	}
	if (e->answered == PROTO_T_ACCEPT)
		send_accept(t, s, e->request_id, 0, PROTO_ACCEPT_DUPLICATE, NULL);
	else
		send_reject(t, s, e->request_id, e->code,
			    "answer to a retried request", 0);
}

/* ------------------------------------------------------------------------
 * INFER: decode, admit, copy into a request slot, hand to the scheduler.
 */

static int text_put(struct dp_req_slot *r, unsigned cap, const char *p,
		    size_t len, struct dp_str_ref *out)
{
	if (len + 1 > cap - r->text_used)
		return -E2BIG;
	out->off = r->text_used;
	out->len = (uint32_t)len;
	if (len)
		memcpy(r->text + r->text_used, p, len);
	r->text[r->text_used + len] = 0;	/* NUL for the engine's ease */
	r->text_used += (uint32_t)len + 1;
	return 0;
}

static int infer_copy(struct dp_sess_table *t, struct dp_req_slot *r,
		      const struct proto_infer_view *v)
{
	unsigned cap = t->rings->text_bytes_max;
	struct proto_group_var gv;
	int rc;

	r->f = v->f;
	r->text_used = 0;
	if (v->n_prompt_tokens > t->rings->prompt_tokens_max ||
	    v->n_stop_tokens > PROTO_STOP_TOKENS_MAX ||
	    v->logit_bias.n > PROTO_LOGIT_BIAS_MAX ||
	    v->n_stop_seqs > PROTO_STOP_SEQ_MAX ||
	    v->n_messages > PROTO_CHAT_MSGS_MAX)
		return -E2BIG;
	r->n_prompt_tokens = v->n_prompt_tokens;
	if (v->n_prompt_tokens)
		memcpy(r->prompt_tokens, v->prompt_tokens, 4ull * v->n_prompt_tokens);
	r->n_stop_tokens = v->n_stop_tokens;
	if (v->n_stop_tokens)
		memcpy(r->stop_tokens, v->stop_tokens, 4ull * v->n_stop_tokens);
	r->n_logit_bias = v->logit_bias.n;
	for (unsigned i = 0; i < v->logit_bias.n; i++)
		memcpy(&r->logit_bias[i],
		       v->logit_bias.entries + (size_t)i * v->logit_bias.stride,
		       sizeof(r->logit_bias[i]));
	if ((rc = text_put(r, cap, v->model.p, v->model.len, &r->model)) ||
	    (rc = text_put(r, cap, v->version.p, v->version.len, &r->version)) ||
	    (rc = text_put(r, cap, v->prompt_text.p, v->prompt_text.len,
			   &r->prompt_text)))
		return rc;
	r->n_stop_seqs = v->n_stop_seqs;
	for (unsigned i = 0; i < v->n_stop_seqs; i++) {
		rc = text_put(r, cap, v->stop_seqs[i].p, v->stop_seqs[i].len,
			      &r->stop_seqs[i]);
		if (rc)
			return rc;
	}
	r->n_messages = 0;
	gv = v->messages;
	for (unsigned i = 0; i < v->n_messages; i++) {
		const uint8_t *blk;
		struct proto_str txt;

		if (proto_group_var_next(&gv, &blk, &txt) != 1)
			return -EINVAL;	/* the decoder walked it: not reached */
		r->messages[i].role = blk[0];
		rc = text_put(r, cap, txt.p, txt.len, &r->messages[i].text);
		if (rc)
			return rc;
		r->n_messages++;
	}
	return 0;
}

/* Prompt size for credit: token ids, or text bytes (>= tokens for byte
 * level BPE and SentencePiece alike). */
static uint64_t infer_prompt_cost(const struct proto_infer_view *v)
{
	uint64_t n = 0;

	if (v->f.flags & PROTO_INFER_PROMPT_TOKENS)
		return v->n_prompt_tokens;
	if (v->f.flags & PROTO_INFER_PROMPT_TEXT)
		return v->prompt_text.len;
	{
		struct proto_group_var gv = v->messages;
		const uint8_t *blk;
		struct proto_str txt;

		while (proto_group_var_next(&gv, &blk, &txt) == 1)
			n += txt.len;
	}
	return n;
}

static unsigned drop_to_err(int reason)
{
	switch (reason) {
	case PROTO_DROP_bad_param:
	case PROTO_DROP_bad_token:
		return PROTO_E_INVALID_PARAM;
	case PROTO_DROP_oversize:
		return PROTO_E_TOO_LARGE;
	default:
		return PROTO_E_INVALID;
	}
}

static void rx_infer(struct dp_sess_table *t, struct dp_sess *s,
		     const struct proto_msg *m)
{
	struct proto_infer f0;
	struct proto_infer_view iv;
	struct dp_dedup_ent *e;
	struct dp_req_slot *r;
	struct dp_req_msg rm;
	uint64_t rid, cost;
	int rc;

	ctr(t, SESS_CTR_infer_rx);
	rc = proto_block_get(m, &f0, sizeof(f0), sizeof(f0.request_id));
	if (rc) {
		drop(t, -rc);
		return;
	}
	rid = f0.request_id;
	e = dedup_find(t, s, rid);
	if (e) {
		infer_retry(t, s, e);
		return;
	}
	if (!velo_replay_check(&s->req_win, rid + 1)) {
		send_reject(t, s, rid, PROTO_E_DUPLICATE,
			    "request id already used (answer no longer held) "
			    "or too old", 0);
		return;
	}
	rc = proto_decode_infer(m, &t->cfg.limits, &iv);
	if (rc) {
		drop(t, -rc);
		/* Not remembered: the same bytes fail the same way again. */
		send_reject(t, s, rid, drop_to_err(-rc), proto_drop_name(-rc), 0);
		return;
	}
	cost = infer_prompt_cost(&iv) +
	       (iv.f.max_tokens ? iv.f.max_tokens : t->cfg.limits.max_tokens_max);
	if (cost > t->cfg.credit_tokens) {
		drop(t, PROTO_DROP_over_credit);
		reject_final(t, s, rid, PROTO_E_TOO_LARGE,
			     "prompt + max_tokens over the session's credit", 0);
		return;
	}
	if (s->inflight_reqs >= t->cfg.credit_requests ||
	    s->inflight_tokens + cost > t->cfg.credit_tokens) {
		drop(t, PROTO_DROP_over_credit);
		reject_final(t, s, rid, PROTO_E_OVERLOADED, "over credit",
			     RETRY_AFTER_MS);
		return;
	}
	e = dedup_insert(t, s, rid);
	if (!e) {
		/* Sparse ids colliding with DEDUP_PROBE requests in flight. */
		drop(t, PROTO_DROP_no_buffer);
		send_reject(t, s, rid, PROTO_E_OVERLOADED,
			    "too many request ids in flight", RETRY_AFTER_MS);
		return;
	}
	e->state = DP_DEDUP_DONE;	/* until it is in flight */
	r = dp_req_slot_get(t->rings);
	if (!r) {
		drop(t, PROTO_DROP_no_buffer);
		ctr(t, SESS_CTR_req_slots_exhausted);
		reject_into(t, s, e, rid, PROTO_E_OVERLOADED, "server busy",
			     RETRY_AFTER_MS);
		return;
	}
	rc = infer_copy(t, r, &iv);
	if (rc) {
		dp_req_slot_put(t->rings, r->index);
		drop(t, PROTO_DROP_oversize);
		reject_into(t, s, e, rid, PROTO_E_TOO_LARGE,
			     "request text over requests.text_bytes_max", 0);
		return;
	}
	r->sess_slot = s->slot;
	r->sess_gen = s->gen;
	r->session_id = s->id;
	r->request_id = rid;
	r->arrival_ns = t->now_ns;
	r->cost_tokens = (uint32_t)cost;
	rm = (struct dp_req_msg){ .op = DP_REQ_INFER, .sess_slot = s->slot,
				  .sess_gen = s->gen, .req_slot = r->index,
				  .request_id = rid, .session_id = s->id };
	if (unlikely(!dp_req_enqueue(t->rings, &rm))) {
		/* Not reached: the ring holds two records per slot. */
		dp_req_slot_put(t->rings, r->index);
		drop(t, PROTO_DROP_no_buffer);
		reject_into(t, s, e, rid, PROTO_E_OVERLOADED, "server busy",
			     RETRY_AFTER_MS);
		return;
	}
	e->state = DP_DEDUP_INFLIGHT;
	e->req_slot = r->index;
	e->cost_tokens = (uint32_t)cost;
	s->inflight_reqs++;
	s->inflight_tokens += cost;
	ctr(t, SESS_CTR_infer_to_engine);
	t->kick_engine = true;
}

static void rx_cancel(struct dp_sess_table *t, struct dp_sess *s,
		      const struct proto_msg *m)
{
	struct proto_cancel c;
	struct dp_dedup_ent *e;
	int rc;

	ctr(t, SESS_CTR_cancel_rx);
	rc = proto_block_get(m, &c, sizeof(c), sizeof(c));
	if (rc) {
		drop(t, -rc);
		return;
	}
	e = dedup_find(t, s, c.request_id);
	if (e && e->state == DP_DEDUP_INFLIGHT) {
		struct dp_req_msg rm = { .op = DP_REQ_CANCEL, .sess_slot = s->slot,
					 .sess_gen = s->gen, .req_slot = e->req_slot,
					 .request_id = e->request_id,
					 .session_id = s->id };

		/* One CANCEL per request in flight: the ring never overflows,
		 * and the one CANCEL_ACK answers repeated CANCELs. */
		if (!e->cancel_sent && dp_req_enqueue(t->rings, &rm)) {
			e->cancel_sent = 1;
			ctr(t, SESS_CTR_cancel_to_engine);
			t->kick_engine = true;
		}
		return;
	}
	{
		struct proto_cancel_ack a = { .request_id = c.request_id,
					      .found = 0 };

		data_block(t, s, PROTO_T_CANCEL_ACK, &a, sizeof(a), NULL);
		ctr(t, SESS_CTR_cancel_ack_tx);
	}
}

static void rx_status_request(struct dp_sess_table *t, struct dp_sess *s)
{
	struct proto_status st = {
		.credit_requests = t->cfg.credit_requests - s->inflight_reqs,
		.credit_tokens = (uint32_t)(t->cfg.credit_tokens - s->inflight_tokens),
		.in_flight = s->inflight_reqs,
		.state = (uint8_t)dp_rings_engine_state(t->rings),
		.server_time_ns = t->real_ns,
	};

	data_block(t, s, PROTO_T_STATUS, &st, sizeof(st), NULL);
	ctr(t, SESS_CTR_status_requests);
}

static void rx_test_request(struct dp_sess_table *t, struct dp_sess *s,
			    const struct proto_msg *m)
{
	struct proto_test_request q;
	struct proto_test_response r;
	struct put_block p = { .tid = PROTO_T_TEST_RESPONSE, .block = &r,
			       .len = sizeof(r) };
	int rc = proto_block_get(m, &q, sizeof(q), sizeof(q));

	if (rc) {
		drop(t, -rc);
		return;
	}
	r = (struct proto_test_response){ .correlation_id = q.correlation_id,
					  .timestamp_ns = q.timestamp_ns,
					  .server_time_ns = t->real_ns };
	sess_ctrl(t, s, put_block, &p, false);
	ctr(t, SESS_CTR_test_requests);
}

static void rx_retransmit(struct dp_sess_table *t, struct dp_sess *s,
			  const struct proto_msg *m)
{
	struct proto_retransmit_request q;
	uint64_t from, end;
	unsigned i;
	int rc = proto_block_get(m, &q, sizeof(q), 12);

	if (rc) {
		drop(t, -rc);
		return;
	}
	ctr(t, SESS_CTR_retrans_requests);
	if (s->open)
		data_close(t, s);	/* so that the range is all in the buffer */
	from = q.from_seq;
	end = from + q.count;
	if (end < from)
		end = UINT64_MAX;
	end = MIN(end, s->tx_seq);
	if (!q.count || from >= s->tx_seq) {
		ctr(t, SESS_CTR_retrans_future);
		return;
	}
	{
		uint64_t oldest = s->rb_used ? s->rb[rb_oldest(t, s)].first_seq
					     : s->tx_seq;

		if (from < oldest) {
			uint64_t gap_end = MIN(end, oldest);
			struct proto_gap_fill g = { .from_seq = from,
						    .count = (uint32_t)(gap_end - from) };
			struct put_block p = { .tid = PROTO_T_GAP_FILL, .block = &g,
					       .len = sizeof(g) };

			sess_ctrl(t, s, put_block, &p, false);
			ctr(t, SESS_CTR_gap_fills);
			t->ctr[SESS_CTR_gap_fill_msgs] += g.count;
			from = gap_end;
		}
	}
	/* Bounded by replay_depth datagrams. */
	i = rb_oldest(t, s);
	for (unsigned k = 0, n = s->rb_used; k < n && from < end; k++) {
		const struct dp_replay_ent *ent = &s->rb[i];

		if (ent->first_seq >= end)
			break;
		if (ent->first_seq + ent->count > from)
			retransmit_ent(t, s, i);
		i = (i + 1) % t->cfg.replay_depth;
	}
}

/* ------------------------------------------------------------------------
 * Fragments.
 */

static void dispatch(struct dp_sess_table *t, struct dp_sess *s,
		     const struct proto_msg *m, bool from_frag);

static struct dp_frag_buf *frag_find(struct dp_sess_table *t,
				     const struct dp_sess *s, uint32_t frag_id)
{
	for (unsigned i = 0; i < t->cfg.frag_buffers; i++) {
		struct dp_frag_buf *b = &t->frags[i];

		if (b->used && b->frag_id == frag_id && b->sess_slot == s->slot &&
		    b->sess_gen == s->gen)
			return b;
	}
	return NULL;
}

static struct dp_frag_buf *frag_alloc(struct dp_sess_table *t)
{
	if (t->frags_used == t->cfg.frag_buffers)
		return NULL;
	for (unsigned i = 0; i < t->cfg.frag_buffers; i++)
		if (!t->frags[i].used) {
			t->frags[i].used = true;
			t->frags_used++;
			return &t->frags[i];
		}
	return NULL;
}

static inline bool bit_get(const uint64_t *b, unsigned i)
{
	return b[i / 64] >> (i % 64) & 1;
}

static void rx_fragment(struct dp_sess_table *t, struct dp_sess *s,
			const struct proto_msg *m)
{
	struct proto_fragment_view fv;
	const struct proto_fragment *f = &fv.f;
	struct dp_frag_buf *b;
	int rc;

	ctr(t, SESS_CTR_frag_rx);
	rc = proto_decode_fragment(m, &fv);
	if (rc) {
		drop(t, -rc);
		return;
	}
	if (f->total_length > t->cfg.frag_bytes) {
		drop(t, PROTO_DROP_oversize);
		return;
	}
	if (!f->total_length || f->index >= DP_FRAG_PIECES_MAX ||
	    (uint64_t)f->offset + fv.data.len > f->total_length ||
	    ((f->flags & PROTO_FRAG_BEGIN) && (f->index || f->offset)) ||
	    (!f->index && f->offset) || !fv.data.len) {
		drop(t, PROTO_DROP_bad_fragment);
		return;
	}
	b = frag_find(t, s, f->frag_id);
	if (!b) {
		b = frag_alloc(t);
		if (!b) {
			drop(t, PROTO_DROP_no_buffer);
			return;
		}
		b->sess_slot = s->slot;
		b->sess_gen = s->gen;
		b->frag_id = f->frag_id;
		b->total_length = f->total_length;
		b->bytes = 0;
		b->end_index = -1;
		b->started_ns = t->now_ns;
		memset(b->got, 0, sizeof(b->got));
		/* Zeroed so that overlapping pieces can never expose an
		 * earlier message's bytes (~2 us for 64 KiB). */
		memset(b->data, 0, f->total_length);
		ctr(t, SESS_CTR_frag_started);
	} else if (b->total_length != f->total_length) {
		drop(t, PROTO_DROP_bad_fragment);
		return;
	}
	b->last_ns = t->now_ns;
	if (bit_get(b->got, f->index)) {
		ctr(t, SESS_CTR_frag_dup);
		return;
	}
	if (f->flags & PROTO_FRAG_END) {
		bool later = false;

		for (unsigned i = f->index + 1u; i < DP_FRAG_PIECES_MAX; i++)
			later |= bit_get(b->got, i);
		if ((b->end_index >= 0 && b->end_index != f->index) || later) {
			drop(t, PROTO_DROP_bad_fragment);
			return;
		}
		b->end_index = f->index;
	} else if (b->end_index >= 0 && f->index >= b->end_index) {
		drop(t, PROTO_DROP_bad_fragment);
		return;
	}
	memcpy(b->data + f->offset, fv.data.p, fv.data.len);
	b->got[f->index / 64] |= 1ull << (f->index % 64);
	b->bytes += fv.data.len;
	if (b->bytes > b->total_length) {
		/* Overlapping pieces: the message can not be trusted. */
		frag_free(t, b);
		drop(t, PROTO_DROP_bad_fragment);
		return;
	}
	if (b->end_index < 0 || b->bytes != b->total_length)
		return;
	for (int i = 0; i <= b->end_index; i++)
		if (!bit_get(b->got, (unsigned)i))
			return;
	/* Complete: decode the whole message like any other, then free. */
	ctr(t, SESS_CTR_frag_completed);
	{
		struct proto_msg_iter it = { .p = b->data,
					     .end = b->data + b->total_length,
					     .left = 1 };
		struct proto_msg im;

		rc = proto_msg_next(&it, &im);
		if (rc < 0)
			drop(t, -rc);
		else if (rc == 0)
			drop(t, PROTO_DROP_bad_fragment);
		else
			dispatch(t, s, &im, true);
	}
	frag_free(t, b);
}

/* ------------------------------------------------------------------------
 * Session datagrams.
 */

static void dispatch(struct dp_sess_table *t, struct dp_sess *s,
		     const struct proto_msg *m, bool from_frag)
{
	switch (m->template_id) {
	case PROTO_T_INFER:
		rx_infer(t, s, m);
		break;
	case PROTO_T_CANCEL:
		rx_cancel(t, s, m);
		break;
	case PROTO_T_STATUS_REQUEST:
		rx_status_request(t, s);
		break;
	case PROTO_T_TEST_REQUEST:
		rx_test_request(t, s, m);
		break;
	case PROTO_T_RETRANSMIT_REQUEST:
		rx_retransmit(t, s, m);
		break;
	case PROTO_T_FRAGMENT:
		if (from_frag)
			drop(t, PROTO_DROP_bad_fragment);
		else
			rx_fragment(t, s, m);
		break;
	case PROTO_T_LOGOUT:
		ctr(t, SESS_CTR_logout_rx);
		sess_free(t, s, SESS_CTR_closed, true);
		break;
	default:
		if (proto_template_name(m->template_id))
			drop(t, PROTO_DROP_wrong_direction);
		else
			drop(t, PROTO_DROP_unknown_template);
		break;
	}
}

static void rx_session(struct dp_sess_table *t, const struct proto_pkt_view *v,
		       const uint8_t *buf, size_t len, const struct dp_addr *from)
{
	const struct proto_pkt_hdr *h = v->hdr;
	struct dp_sess *s = dp_sess_lookup(t, h->session_id);
	struct proto_msg_iter it;
	struct proto_msg m;
	uint32_t gen;
	int rc;

	if (unlikely(!s)) {
		drop(t, PROTO_DROP_unknown_session);
		return;
	}
	if (unlikely((h->flags & (PROTO_F_S2C | PROTO_F_AUTH)) != PROTO_F_AUTH)) {
		drop(t, PROTO_DROP_bad_flags);
		return;
	}
	if (unlikely(len > s->mtu)) {
		drop(t, PROTO_DROP_oversize);
		return;
	}
	if (t->rl_interval_ns &&
	    unlikely(!gcra(&s->rl_tat, t->now_ns, t->rl_interval_ns, t->rl_tau_ns))) {
		drop(t, PROTO_DROP_rate_limit);
		return;
	}
	/* Read-only check first (cheap), update only once the tag passed. */
	if (unlikely(!velo_replay_check(&s->rx_win, h->pkt_num))) {
		drop(t, PROTO_DROP_replay);
		return;
	}
	if (unlikely(velo_auth_open(&s->keys.c2s, buf, len, NULL))) {
		drop(t, PROTO_DROP_bad_tag);
		return;
	}
	velo_replay_update(&s->rx_win, h->pkt_num);
	s->last_rx_ns = t->now_ns;
	s->rx_datagrams++;
	if (unlikely(!dp_addr_eq(&s->peer, from))) {
		s->peer = *from;	/* authenticated: follow the client */
		ctr(t, SESS_CTR_peer_moved);
	}
	if (h->ack > s->peer_ack && h->ack <= s->tx_seq)
		s->peer_ack = h->ack;
	if (h->msg_count == PROTO_COUNT_END) {
		ctr(t, SESS_CTR_logout_rx);
		sess_free(t, s, SESS_CTR_closed, true);
		return;
	}
	if (h->msg_count == PROTO_COUNT_HEARTBEAT) {
		ctr(t, SESS_CTR_hb_rx);
		return;
	}
	if (!(h->flags & PROTO_F_CTRL) && h->seq + h->msg_count > s->rx_seq_next)
		s->rx_seq_next = h->seq + h->msg_count;

	gen = s->gen;
	proto_msg_iter_init(&it, v);
	while ((rc = proto_msg_next(&it, &m)) > 0) {
		dispatch(t, s, &m, false);
		if (s->gen != gen)
			return;		/* LOGOUT closed the session */
	}
	if (rc < 0)
		drop(t, -rc);
}

void dp_sess_rx(struct dp_sess_table *t, const uint8_t *buf, size_t len,
		const struct dp_addr *from)
{
	struct proto_pkt_view v;
	int rc;

	t->dp_ctr[DP_CTR_rx_datagrams]++;
	t->dp_ctr[DP_CTR_rx_bytes] += len;
	rc = proto_pkt_parse(buf, len, t->cfg.mtu, &v);
	if (unlikely(rc)) {
		drop(t, -rc);
		return;
	}
	if (v.hdr->session_id == 0)
		rx_logon(t, &v, buf, len, from);
	else
		rx_session(t, &v, buf, len, from);
}

/* ------------------------------------------------------------------------
 * Responses from the scheduler.
 */

struct put_tokens {
	const struct dp_resp *r;
	struct proto_tokens blk;
	unsigned n_lp;		/* logprob entries: 0 or n x (1 + k) */
};

static void put_tokens(struct proto_enc *e, const void *arg)
{
	const struct put_tokens *p = arg;
	void *blk = proto_enc_msg_begin(e, PROTO_T_TOKENS, sizeof(p->blk));
	static const struct proto_logprob none;

	if (!blk)
		return;
	memcpy(blk, &p->blk, sizeof(p->blk));
	proto_enc_group_u32(e, p->r->tokens, MIN(p->r->n_tokens, DP_RESP_TOKENS_MAX));
	/* ring.h: the entries follow the ids inside tokens[] */
	proto_enc_group(e, p->n_lp ? dp_resp_lp_const(p->r) : &none,
			sizeof(none), p->n_lp);
	proto_enc_var(e, p->r->text, MIN(p->r->text_len, DP_RESP_TEXT_MAX));
	proto_enc_msg_end(e);
}

struct put_done {
	const struct dp_resp *r;
	struct proto_done blk;
};

static void put_done(struct proto_enc *e, const void *arg)
{
	const struct put_done *p = arg;
	void *blk = proto_enc_msg_begin(e, PROTO_T_DONE, sizeof(p->blk));
	unsigned tl = MIN(p->r->text_len, DP_RESP_TEXT_MAX);
	unsigned nl = MIN(p->r->name_len, tl);

	if (!blk)
		return;
	memcpy(blk, &p->blk, sizeof(p->blk));
	proto_enc_var(e, p->r->text, nl);
	proto_enc_var(e, p->r->text + nl, tl - nl);
	proto_enc_msg_end(e);
}

static void resp_one(struct dp_sess_table *t, const struct dp_resp *r)
{
	bool final = r->flags & DP_RESP_F_FINAL;
	struct dp_sess *s = r->sess_slot < t->cfg.sessions_max
				    ? &t->sess[r->sess_slot] : NULL;
	struct dp_dedup_ent *e;
	uint64_t seq = 0;

	ctr(t, SESS_CTR_resp_rx);
	if (!s || s->state != DP_SESS_ACTIVE || s->gen != r->sess_gen) {
		ctr(t, SESS_CTR_resp_stale);
		if (final)
			dp_req_slot_put(t->rings, r->req_slot);
		return;
	}
	e = dedup_find(t, s, r->request_id);
	switch (r->kind) {
	case DP_RESP_ACCEPT:
		send_accept(t, s, r->request_id, r->u.accept.queue_position,
			    r->u.accept.flags, &seq);
		if (e && !e->answered && seq) {
			e->answered = PROTO_T_ACCEPT;
			e->answer_seq = seq;
		}
		break;
	case DP_RESP_REJECT: {
		struct proto_reject rj = r->u.reject;
		struct put_block p = { .tid = PROTO_T_REJECT, .block = &rj,
				       .len = sizeof(rj), .text = r->text,
				       .text_len = MIN(r->text_len, DP_RESP_TEXT_MAX),
				       .has_text = true };

		rj.request_id = r->request_id;
		seq = data_emit(t, s, put_block, &p);
		if (seq)
			reject_ctr(t, rj.code);
		if (e && !e->answered && seq) {
			e->answered = PROTO_T_REJECT;
			e->code = rj.code;
			e->answer_seq = seq;
		}
		break;
	}
	case DP_RESP_TOKENS: {
		struct put_tokens p = { .r = r, .blk = r->u.tokens };
		unsigned k = r->u.tokens.top_logprobs;

		p.blk.request_id = r->request_id;
		p.blk.reserved = 0;
		/* Logprobs that could not be in the record (the scheduler
		 * broke ring.h's rule): none, and counted; the decoder takes
		 * an empty group with top_logprobs > 0. */
		if (k && r->n_tokens) {
			if (k <= PROTO_LOGPROBS_MAX && dp_resp_lp_fits(r->n_tokens, k))
				p.n_lp = r->n_tokens * (1u + k);
			else
				ctr(t, SESS_CTR_resp_bad_logprobs);
		}
		if (k > PROTO_LOGPROBS_MAX)
			p.blk.top_logprobs = 0;
		if (data_emit(t, s, put_tokens, &p))
			ctr(t, SESS_CTR_tokens_tx);
		break;
	}
	case DP_RESP_DONE: {
		struct put_done p = { .r = r, .blk = r->u.done };

		p.blk.request_id = r->request_id;
		if (data_emit(t, s, put_done, &p))
			ctr(t, SESS_CTR_done_tx);
		break;
	}
	case DP_RESP_ERROR: {
		struct proto_error er = r->u.error;
		struct put_block p = { .tid = PROTO_T_ERROR, .block = &er,
				       .len = sizeof(er), .text = r->text,
				       .text_len = MIN(r->text_len, DP_RESP_TEXT_MAX),
				       .has_text = true };

		er.request_id = r->request_id;
		if (data_emit(t, s, put_block, &p))
			ctr(t, SESS_CTR_error_tx);
		break;
	}
	case DP_RESP_CANCEL_ACK: {
		struct proto_cancel_ack a = r->u.cancel_ack;

		a.request_id = r->request_id;
		data_block(t, s, PROTO_T_CANCEL_ACK, &a, sizeof(a), NULL);
		ctr(t, SESS_CTR_cancel_ack_tx);
		if (e)
			e->cancel_sent = 0;
		break;
	}
	default:
		break;
	}
	if (final) {
		if (e && e->state == DP_DEDUP_INFLIGHT) {
			e->state = DP_DEDUP_DONE;
			s->inflight_reqs--;
			s->inflight_tokens -= e->cost_tokens;
		}
		dp_req_slot_put(t->rings, r->req_slot);
	}
}

unsigned dp_sess_resp_poll(struct dp_sess_table *t, unsigned max)
{
	struct dp_resp r;
	unsigned n = 0;

	while (n < max && dp_resp_dequeue(t->rings, &r)) {
		resp_one(t, &r);
		n++;
	}
	return n;
}

/* ------------------------------------------------------------------------
 * Flush, timers, shutdown.
 */

void dp_sess_flush(struct dp_sess_table *t)
{
	for (unsigned i = 0; i < t->n_dirty; i++) {
		struct dp_sess *s = &t->sess[t->dirty[i]];

		s->dirty = false;
		if (s->open && s->state == DP_SESS_ACTIVE)
			data_close(t, s);
	}
	t->n_dirty = 0;
}

void dp_sess_tick(struct dp_sess_table *t)
{
	unsigned n;

	if (t->now_ns - t->tick_last_ns < TICK_NS)
		return;
	t->tick_last_ns = t->now_ns;
	n = MIN(t->cfg.sessions_max, TICK_SLOTS);
	for (unsigned k = 0; k < n; k++) {
		struct dp_sess *s = &t->sess[t->tick_cursor];

		t->tick_cursor = (t->tick_cursor + 1) % t->cfg.sessions_max;
		if (s->state != DP_SESS_ACTIVE)
			continue;
		if (t->now_ns - s->last_rx_ns > s->timeout_ns) {
			sess_free(t, s, SESS_CTR_timed_out, true);
			continue;
		}
		if (!s->open && t->now_ns - s->last_tx_ns >= s->hb_ns) {
			sess_ctrl(t, s, NULL, NULL, false);
			ctr(t, SESS_CTR_hb_tx);
		}
	}
	if (t->frags_used)
		for (unsigned i = 0; i < t->cfg.frag_buffers; i++) {
			struct dp_frag_buf *b = &t->frags[i];

			if (b->used && t->now_ns - b->started_ns >
					       (uint64_t)t->cfg.frag_timeout_ms * NS_PER_MS) {
				frag_free(t, b);
				ctr(t, SESS_CTR_frag_timed_out);
			}
		}
}

void dp_sess_close_all(struct dp_sess_table *t)
{
	for (unsigned i = 0; i < t->cfg.sessions_max; i++)
		if (t->sess[i].state == DP_SESS_ACTIVE)
			sess_free(t, &t->sess[i], SESS_CTR_closed_shutdown, true);
	t->n_dirty = 0;
	for (unsigned i = 0; i < t->cfg.sessions_max; i++)
		t->sess[i].dirty = false;
}
