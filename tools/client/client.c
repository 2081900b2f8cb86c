// SPDX-License-Identifier: MIT
/*
 * client.c — the velo client library (include/velo/client.h).
 *
 * One session: a connected, non-blocking UDP socket, the logon exchange,
 * per-datagram authentication (velo/auth.h), the server sequence with a
 * reorder ring and gap repair, a request table with resend timers, and the
 * event queue.  Everything is allocated in velo_client_create() from the
 * configured budgets; the send and receive paths allocate nothing.
 *
 * Bounds: requests_max requests, reorder_msgs held messages (power of two),
 * ctrl_events_max queued control events, RX_BURST datagrams per recvmmsg,
 * HOLES_MAX retransmit ranges per RETRANSMIT_REQUEST datagram.
 */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <velo/client.h>
#include <velo/compiler.h>

#include <sodium.h>

#include "../lib/clock.h"

#define RX_BURST	32
#define HOLES_MAX	16	/* RETRANSMIT_REQUEST messages in one datagram */
#define TEST_SLOTS	256	/* TEST_REQUEST send times remembered */
#define TEXT_MAX	256	/* LOGON_REJECT / LOGOUT text kept */
#define LOGON_NONCES	8	/* nonces of the LOGONs of one logon kept */
#define NIL		UINT32_MAX
/* A message's length is a u16 and the encoder's buffer holds the 48-byte
 * packet header in front of it: 65528 - 48. */
#define REQUEST_BYTES_LIMIT 65480u

enum sess_state { ST_DOWN, ST_LOGON, ST_UP, ST_CLOSED };

/* Reorder ring slot states. */
enum { RS_EMPTY, RS_HELD, RS_READY, RS_SKIP, RS_GAP };

struct rslot {
	uint64_t seq;
	uint64_t skip_to;	/* RS_GAP: first sequence after the gap */
	uint64_t rx_ns;
	uint32_t len;
	uint8_t state;
	uint8_t *buf;		/* mtu bytes, 8-byte aligned */
	struct velo_client_event ev;
};

/* Intrusive FIFO of request slots ordered by last send time: every resend
 * moves a slot to the tail, so the head is always the next one due. */
struct fifo {
	uint32_t head, tail;
};

enum { L_INFER, L_CANCEL, L__COUNT };

struct creq {
	uint64_t id;
	uint64_t first_ns;	/* first INFER send */
	uint64_t last_ns[L__COUNT];
	uint64_t cancel_first_ns;
	uint32_t tries[L__COUNT];
	uint32_t prev[L__COUNT], next[L__COUNT];
	uint8_t on_list[L__COUNT];
	uint32_t frag_id;
	uint32_t frame_len;	/* encoded INFER message */
	uint8_t used;
	uint8_t answered;	/* ACCEPT or REJECT seen (any order) */
	uint8_t accepted;	/* ACCEPT processed in order */
	uint8_t cancel;		/* enum cancel_state */
	uint8_t *frame;		/* request_bytes_max + header room */
};

enum cancel_state { CX_NONE, CX_SENDING, CX_PARKED, CX_ACKED };

struct velo_client {
	int fd;
	enum sess_state state;
	struct velo_client_config cfg;
	char client_name[65];
	struct velo_psk psk;

	/* keys */
	struct velo_session_keys logon_keys;
	struct velo_session_keys keys;
	uint8_t client_nonce[PROTO_NONCE_LEN];	/* of the session */
	/* Every LOGON resend carries a new nonce (velod drops a repeated
	 * one as a replay), and LOGON_ACK does not say which LOGON it
	 * answers: the keys are derived from the latest nonce, and while no
	 * session datagram has verified yet the earlier ones are tried too. */
	uint8_t logon_nonces[LOGON_NONCES][PROTO_NONCE_LEN];
	uint32_t n_logon_nonces;	/* sent so far (mod LOGON_NONCES) */
	bool keys_confirmed;
	struct proto_logon_ack params;
	struct velo_replay replay;
	uint16_t mtu;		/* negotiated (tx); cfg.mtu bounds rx */

	/* transmit */
	uint64_t tx_pkt_num;	/* last used */
	uint64_t tx_seq;	/* next client sequence number */
	uint64_t last_tx_ns;
	uint8_t *txbuf;		/* PROTO_MTU_MAX */
	uint64_t loss_state;

	/* receive */
	uint8_t *rxbufs;	/* RX_BURST x rx_cap */
	size_t rx_cap;
	struct mmsghdr rxmsg[RX_BURST];
	struct iovec rxiov[RX_BURST];
	uint64_t last_rx_ns;

	/* server sequence */
	struct rslot *ring;
	uint32_t ring_mask;
	uint64_t rx_next;	/* all below received (or gap filled) */
	uint64_t dl_next;	/* next to deliver */
	uint64_t top_seen;	/* highest sequence the server announced + 1 */
	uint64_t gap_req_ns;
	uint64_t gap_req_top;
	int handed;		/* a ring slot was handed to the caller */
	uint64_t handed_seq;

	/* logon */
	uint64_t logon_start_ns;
	uint64_t logon_last_ns;

	/* requests */
	struct creq *reqs;
	uint32_t *hash;		/* open addressing, request id -> slot */
	uint32_t hash_mask;
	uint32_t free_head;	/* free slots chained through next[L_INFER] */
	uint32_t n_in_flight;
	struct fifo lists[L__COUNT];
	uint64_t next_request_id;
	uint32_t next_frag_id;
	uint64_t next_corr;
	uint64_t test_sent[TEST_SLOTS];
	uint64_t test_corr[TEST_SLOTS];

	/* control events */
	struct velo_client_event *cq;
	uint32_t cq_head, cq_len, cq_cap;

	uint16_t reject_code;
	char reject_text[TEXT_MAX];

	uint64_t ctr[VELO_CLIENT_CTR__COUNT];
};

static const char *const ctr_names[] = {
#define X(name, help) #name,
	foreach_velo_client_counter(X)
#undef X
};

#define CINC(c, name) ((c)->ctr[VELO_CLIENT_CTR_##name]++)
#define CADD(c, name, v) ((c)->ctr[VELO_CLIENT_CTR_##name] += (v))

const uint64_t *velo_client_counters(const struct velo_client *c)
{
	return c->ctr;
}

const char *velo_client_counter_name(unsigned i)
{
	return i < VELO_CLIENT_CTR__COUNT ? ctr_names[i] : NULL;
}

const char *velo_client_key_path(void)
{
	const char *p = getenv("VELO_KEY");

	if (p && *p)
		return p;
	if (access("velo.key", F_OK) == 0)
		return "velo.key";
	return VELO_CLIENT_KEY_DEFAULT;
}

/* ------------------------------------------------------------------------
 * Loss injection: splitmix64, one draw per datagram when a rate is set.
 */
static uint64_t loss_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static bool loss_drop(struct velo_client *c, uint32_t ppm)
{
	return ppm && loss_next(&c->loss_state) % 1000000u < ppm;
}

/* ------------------------------------------------------------------------
 * Request table: slots, a hash from id to slot, resend FIFOs.
 */
static uint32_t hash_id(uint64_t id)
{
	id ^= id >> 33;
	id *= 0xff51afd7ed558ccdull;
	id ^= id >> 33;
	return (uint32_t)id;
}

static struct creq *req_find(struct velo_client *c, uint64_t id)
{
	for (uint32_t h = hash_id(id) & c->hash_mask, n = 0;
	     n <= c->hash_mask; h = (h + 1) & c->hash_mask, n++) {
		uint32_t s = c->hash[h];

		if (s == NIL)
			return NULL;
		if (c->reqs[s].id == id)
			return &c->reqs[s];
	}
	return NULL;
}

static void hash_insert(struct velo_client *c, uint64_t id, uint32_t slot)
{
	uint32_t h = hash_id(id) & c->hash_mask;

	/* The table has twice as many buckets as slots: a free one exists. */
	while (c->hash[h] != NIL)
		h = (h + 1) & c->hash_mask;
	c->hash[h] = slot;
}

/* Backward-shift deletion (linear probing, no tombstones). */
static void hash_remove(struct velo_client *c, uint64_t id)
{
	uint32_t m = c->hash_mask, h = hash_id(id) & m;

	while (c->hash[h] != NIL && c->reqs[c->hash[h]].id != id)
		h = (h + 1) & m;
	if (c->hash[h] == NIL)
		return;
	for (uint32_t j = h;;) {
		c->hash[h] = NIL;
		for (;;) {
			uint32_t k;

			j = (j + 1) & m;
			if (c->hash[j] == NIL)
				return;
			k = hash_id(c->reqs[c->hash[j]].id) & m;
			/* Move j back to h unless its home k lies cyclically
			 * in (h, j]. */
			if (h <= j ? (h < k && k <= j) : (h < k || k <= j))
				continue;
			break;
		}
		c->hash[h] = c->hash[j];
		h = j;
	}
}

static uint32_t req_idx(const struct velo_client *c, const struct creq *r)
{
	return (uint32_t)(r - c->reqs);
}

static void list_del(struct velo_client *c, int l, struct creq *r)
{
	struct fifo *f = &c->lists[l];

	if (!r->on_list[l])
		return;
	if (r->prev[l] != NIL)
		c->reqs[r->prev[l]].next[l] = r->next[l];
	else
		f->head = r->next[l];
	if (r->next[l] != NIL)
		c->reqs[r->next[l]].prev[l] = r->prev[l];
	else
		f->tail = r->prev[l];
	r->prev[l] = r->next[l] = NIL;
	r->on_list[l] = 0;
}

static void list_add_tail(struct velo_client *c, int l, struct creq *r)
{
	struct fifo *f = &c->lists[l];
	uint32_t i = req_idx(c, r);

	list_del(c, l, r);
	r->prev[l] = f->tail;
	r->next[l] = NIL;
	if (f->tail != NIL)
		c->reqs[f->tail].next[l] = i;
	else
		f->head = i;
	f->tail = i;
	r->on_list[l] = 1;
}

static struct creq *req_alloc(struct velo_client *c, uint64_t id)
{
	struct creq *r;
	uint32_t s = c->free_head;

	if (s == NIL)
		return NULL;
	r = &c->reqs[s];
	c->free_head = r->next[L_INFER];
	uint8_t *frame = r->frame;
	memset(r, 0, sizeof(*r));
	r->frame = frame;
	r->id = id;
	r->used = 1;
	for (int l = 0; l < L__COUNT; l++)
		r->prev[l] = r->next[l] = NIL;
	hash_insert(c, id, s);
	c->n_in_flight++;
	return r;
}

static void req_free(struct velo_client *c, struct creq *r)
{
	for (int l = 0; l < L__COUNT; l++)
		list_del(c, l, r);
	hash_remove(c, r->id);
	r->used = 0;
	r->next[L_INFER] = c->free_head;
	c->free_head = req_idx(c, r);
	c->n_in_flight--;
}

unsigned velo_client_in_flight(const struct velo_client *c)
{
	return c->n_in_flight;
}

/* ------------------------------------------------------------------------
 * Control events.
 */
static struct velo_client_event *cq_push(struct velo_client *c,
					 enum velo_client_ev_type type)
{
	struct velo_client_event *ev;

	if (c->cq_len == c->cq_cap) {
		CINC(c, ctrl_events_dropped);
		return NULL;
	}
	ev = &c->cq[(c->cq_head + c->cq_len++) % c->cq_cap];
	memset(ev, 0, sizeof(*ev));
	ev->type = type;
	ev->rx_ns = clock_mono_ns();
	return ev;
}

static void set_reject(struct velo_client *c, unsigned code,
		       const struct proto_str *text)
{
	size_t n = text ? MIN((size_t)text->len, sizeof(c->reject_text) - 1) : 0;

	c->reject_code = (uint16_t)code;
	if (n)
		memcpy(c->reject_text, text->p, n);
	c->reject_text[n] = 0;
}

unsigned velo_client_last_reject(const struct velo_client *c, const char **text)
{
	if (text)
		*text = c->reject_text;
	return c->reject_code;
}

static void session_close(struct velo_client *c, enum velo_client_ev_type type,
			  int err)
{
	struct velo_client_event *ev;

	c->state = ST_CLOSED;
	/* Abandon every request: nothing will answer them now. */
	for (uint32_t i = 0; i < c->cfg.requests_max; i++)
		if (c->reqs[i].used)
			req_free(c, &c->reqs[i]);
	ev = cq_push(c, type);
	if (ev) {
		ev->u.closed.err = err;
		ev->u.closed.code = c->reject_code;
		ev->u.closed.text.p = c->reject_text;
		ev->u.closed.text.len = (uint16_t)strlen(c->reject_text);
	}
}

/* ------------------------------------------------------------------------
 * Transmit.
 */
static void hdr_fill(struct velo_client *c, struct proto_pkt_hdr *h,
		     unsigned flags, uint64_t seq)
{
	memset(h, 0, sizeof(*h));
	h->magic = PROTO_MAGIC;
	h->version = PROTO_VERSION;
	h->flags = (uint8_t)flags;
	h->session_id = c->state == ST_UP ? c->params.session_id : 0;
	h->seq = seq;
	h->ack = c->rx_next;
	h->pkt_num = ++c->tx_pkt_num;
}

/* Seal and send one finished datagram of @len bytes (tag room included). */
static int tx_send(struct velo_client *c, uint8_t *buf, size_t len, bool ctrl,
		   const uint8_t *logon_nonce)
{
	const struct velo_dir_key *k = logon_nonce ? &c->logon_keys.c2s
						   : &c->keys.c2s;
	ssize_t n;

	if (velo_auth_seal(k, buf, len, logon_nonce))
		return -EINVAL;
	if (unlikely(c->cfg.tap))
		c->cfg.tap(c->cfg.tap_arg, VELO_CLIENT_TAP_TX, buf, len);
	c->last_tx_ns = clock_mono_ns();
	if (unlikely(loss_drop(c, ctrl ? c->cfg.loss.tx_ctrl_ppm
				       : c->cfg.loss.tx_data_ppm))) {
		CINC(c, loss_tx);
		return 0;
	}
	n = send(c->fd, buf, len, MSG_DONTWAIT);
	if (n < 0) {
		int e = errno;

		CINC(c, tx_errors);
		/* What the network does to a datagram is loss, not a failure of
		 * the session: a full socket buffer, a netfilter drop on output
		 * (EPERM), an ICMP error reported on the connected socket.  The
		 * retries and retransmissions recover as for any lost datagram;
		 * the session's timeouts decide when it is gone. */
		switch (e) {
		case EAGAIN:
		case ENOBUFS:
		case EPERM:
		case ECONNREFUSED:
		case EHOSTUNREACH:
		case ENETUNREACH:
		case EHOSTDOWN:
			return 0;
		default:
			return -e;
		}
	}
	CINC(c, tx_datagrams);
	CADD(c, tx_bytes, (uint64_t)n);
	return 0;
}

/* Start a datagram in c->txbuf. */
static void tx_begin(struct velo_client *c, struct proto_enc *e, bool ctrl)
{
	struct proto_pkt_hdr h;

	hdr_fill(c, &h, PROTO_F_AUTH | (ctrl ? PROTO_F_CTRL : 0), c->tx_seq);
	proto_enc_init(e, c->txbuf, c->mtu, &h);
}

static int tx_finish(struct velo_client *c, struct proto_enc *e, bool ctrl)
{
	int len = proto_enc_finish(e, PROTO_TAG_LEN);

	if (len < 0)
		return len;
	if (!ctrl)
		c->tx_seq += e->count;
	return tx_send(c, c->txbuf, (size_t)len, ctrl, NULL);
}

static int tx_heartbeat(struct velo_client *c)
{
	struct proto_enc e;

	CINC(c, heartbeats_sent);
	tx_begin(c, &e, true);
	return tx_finish(c, &e, true);
}

/* Send an already encoded message frame as one data datagram. */
static int tx_frame(struct velo_client *c, const uint8_t *frame, size_t flen)
{
	struct proto_pkt_hdr *h = (struct proto_pkt_hdr *)c->txbuf;
	size_t len = sizeof(*h) + flen + PROTO_TAG_LEN;

	if (len > c->mtu)
		return -EMSGSIZE;
	hdr_fill(c, h, PROTO_F_AUTH, c->tx_seq);
	h->msg_count = 1;
	h->length = (uint16_t)len;
	memcpy(c->txbuf + sizeof(*h), frame, flen);
	c->tx_seq++;
	return tx_send(c, c->txbuf, len, false, NULL);
}

/* Bytes of message data one FRAGMENT carries at this MTU (a multiple of 8
 * so that each fragment's frame has no padding). */
static size_t frag_payload(const struct velo_client *c)
{
	size_t over = sizeof(struct proto_pkt_hdr) + PROTO_TAG_LEN +
		      sizeof(struct proto_msg_hdr) +
		      sizeof(struct proto_fragment) + sizeof(uint16_t);

	return (c->mtu - over) & ~(size_t)7;
}

static int tx_infer(struct velo_client *c, struct creq *r)
{
	const uint8_t *frame = r->frame + sizeof(struct proto_pkt_hdr);
	size_t per, off;
	uint16_t idx = 0;
	int rc = 0;

	if (sizeof(struct proto_pkt_hdr) + r->frame_len + PROTO_TAG_LEN <= c->mtu)
		return tx_frame(c, frame, r->frame_len);

	/* FRAGMENT: every piece in its own datagram, all under one frag_id
	 * so a resend can complete a reassembly begun by an earlier try. */
	per = frag_payload(c);
	for (off = 0; off < r->frame_len; off += per, idx++) {
		size_t n = MIN(per, r->frame_len - off);
		struct proto_fragment *f;
		struct proto_enc e;
		int err;

		tx_begin(c, &e, false);
		f = proto_enc_msg_begin(&e, PROTO_T_FRAGMENT, sizeof(*f));
		if (!f)
			return -EMSGSIZE;
		f->frag_id = r->frag_id;
		f->index = idx;
		f->flags = (off == 0 ? PROTO_FRAG_BEGIN : 0) |
			   (off + n == r->frame_len ? PROTO_FRAG_END : 0);
		f->total_length = r->frame_len;
		f->offset = (uint32_t)off;
		proto_enc_var(&e, frame + off, n);
		proto_enc_msg_end(&e);
		CINC(c, fragments_sent);
		err = tx_finish(c, &e, false);
		if (err && !rc)
			rc = err;
	}
	return rc;
}

static int tx_cancel(struct velo_client *c, uint64_t id)
{
	struct proto_cancel *m;
	struct proto_enc e;

	tx_begin(c, &e, false);
	m = proto_enc_msg_begin(&e, PROTO_T_CANCEL, sizeof(*m));
	if (!m)
		return -EMSGSIZE;
	m->request_id = id;
	proto_enc_msg_end(&e);
	return tx_finish(c, &e, false);
}

static int tx_logon(struct velo_client *c)
{
	struct proto_pkt_hdr h;
	struct proto_logon *m;
	struct proto_enc e;
	int len;

	velo_random(c->client_nonce, sizeof(c->client_nonce));
	memcpy(c->logon_nonces[c->n_logon_nonces++ % LOGON_NONCES],
	       c->client_nonce, PROTO_NONCE_LEN);
	hdr_fill(c, &h, PROTO_F_AUTH | PROTO_F_CTRL, c->tx_seq);
	h.session_id = 0;
	proto_enc_init(&e, c->txbuf, c->cfg.mtu, &h);
	m = proto_enc_msg_begin(&e, PROTO_T_LOGON, sizeof(*m));
	if (!m)
		return -EMSGSIZE;
	m->key_id = c->psk.key_id;
	m->heartbeat_ms = c->cfg.heartbeat_ms;
	m->timestamp_ns = clock_real_ns();
	memcpy(m->client_nonce, c->client_nonce, PROTO_NONCE_LEN);
	m->mtu = c->cfg.mtu;
	m->flags = (uint16_t)c->cfg.suites;
	proto_enc_var(&e, c->client_name, strlen(c->client_name));
	proto_enc_msg_end(&e);
	len = proto_enc_finish(&e, PROTO_TAG_LEN);
	if (len < 0)
		return len;
	CINC(c, logon_sent);
	c->logon_last_ns = clock_mono_ns();
	return tx_send(c, c->txbuf, (size_t)len, true, c->client_nonce);
}

/* ------------------------------------------------------------------------
 * Gap repair.
 */

/* Ask for every hole in [rx_next, top_seen) inside the ring window; all of
 * them when @all (the resend timer ran out), else only holes that start at
 * or past what was asked before (new losses). */
static void gap_request(struct velo_client *c, uint64_t now, bool all)
{
	uint64_t lim = MIN(c->top_seen, c->dl_next + c->ring_mask + 1);
	uint32_t depth = c->params.replay_msgs ? c->params.replay_msgs : 1024;
	struct proto_enc e;
	unsigned n = 0;

	if (c->state != ST_UP || c->rx_next >= lim)
		return;
	tx_begin(c, &e, true);
	for (uint64_t s = c->rx_next; s < lim && n < HOLES_MAX;) {
		const struct rslot *rs = &c->ring[s & c->ring_mask];
		struct proto_retransmit_request *m;
		uint64_t end;

		if (rs->state != RS_EMPTY && rs->seq == s) {
			s++;
			continue;
		}
		for (end = s + 1; end < lim; end++) {
			rs = &c->ring[end & c->ring_mask];
			if (rs->state != RS_EMPTY && rs->seq == end)
				break;
		}
		if (all || s >= c->gap_req_top) {
			m = proto_enc_msg_begin(&e, PROTO_T_RETRANSMIT_REQUEST,
						sizeof(*m));
			if (!m)
				break;
			m->from_seq = s;
			m->count = (uint32_t)MIN(end - s, (uint64_t)depth);
			proto_enc_msg_end(&e);
			n++;
		}
		s = end;
	}
	if (!n)
		return;
	if (all || c->gap_req_ns == 0)
		c->gap_req_ns = now;
	c->gap_req_top = lim;
	CADD(c, retransmit_requests, n);
	tx_finish(c, &e, true);
}

/* The server has used sequence numbers below @top; @first is the lowest
 * of them this datagram vouches for (a data message's own seq; a control
 * datagram's next seq).  Numbers between what was known and @first are a
 * new hole. */
static void gap_note(struct velo_client *c, uint64_t first, uint64_t top)
{
	if (first > c->top_seen)
		CINC(c, gaps);
	if (top > c->top_seen)
		c->top_seen = top;
}

/* ------------------------------------------------------------------------
 * Receive: sequenced messages.
 */

/* Events are prepared when a message becomes next in sequence, so request
 * state changes in sequence order.  Return: RS_READY or RS_SKIP. */
static int msg_process(struct velo_client *c, struct rslot *rs)
{
	struct velo_client_event *ev = &rs->ev;
	struct proto_msg m;
	struct creq *r;
	int err = 0;

	/* The slot holds one message frame, checked again by the codec. */
	if (proto_msg_parse(rs->buf, rs->len, &m)) {
		CINC(c, rx_drop_msg);
		return RS_SKIP;
	}
	memset(ev, 0, sizeof(*ev));
	ev->seq = rs->seq;
	ev->rx_ns = rs->rx_ns;

	switch (m.template_id) {
	case PROTO_T_ACCEPT:
		ev->type = VELO_CLIENT_EV_ACCEPT;
		err = proto_block_get(&m, &ev->u.accept, sizeof(ev->u.accept),
				      sizeof(ev->u.accept));
		ev->request_id = ev->u.accept.request_id;
		break;
	case PROTO_T_REJECT:
		ev->type = VELO_CLIENT_EV_REJECT;
		err = proto_decode_reject(&m, &ev->u.reject);
		ev->request_id = ev->u.reject.f.request_id;
		break;
	case PROTO_T_TOKENS:
		ev->type = VELO_CLIENT_EV_TOKENS;
		err = proto_decode_tokens(&m, &ev->u.tokens);
		ev->request_id = ev->u.tokens.f.request_id;
		break;
	case PROTO_T_DONE:
		ev->type = VELO_CLIENT_EV_DONE;
		err = proto_decode_done(&m, &ev->u.done);
		ev->request_id = ev->u.done.f.request_id;
		break;
	case PROTO_T_ERROR:
		ev->type = VELO_CLIENT_EV_ERROR;
		err = proto_decode_error(&m, &ev->u.error);
		ev->request_id = ev->u.error.f.request_id;
		break;
	case PROTO_T_CANCEL_ACK:
		ev->type = VELO_CLIENT_EV_CANCEL_ACK;
		err = proto_block_get(&m, &ev->u.cancel_ack,
				      sizeof(ev->u.cancel_ack),
				      sizeof(ev->u.cancel_ack));
		ev->request_id = ev->u.cancel_ack.request_id;
		break;
	case PROTO_T_STATUS:
		ev->type = VELO_CLIENT_EV_STATUS;
		err = proto_block_get(&m, &ev->u.status, sizeof(ev->u.status),
				      sizeof(ev->u.status));
		return err ? (CINC(c, rx_drop_msg), RS_SKIP) : RS_READY;
	default:
		CINC(c, rx_unknown_template);
		return RS_SKIP;
	}
	if (err) {
		CINC(c, rx_drop_msg);
		return RS_SKIP;
	}

	r = req_find(c, ev->request_id);
	if (!r) {
		CINC(c, rx_stale_events);
		return RS_SKIP;
	}
	ev->sent_ns = r->first_ns;

	switch (ev->type) {
	case VELO_CLIENT_EV_ACCEPT:
		if (r->accepted) {
			CINC(c, rx_dup_answers);
			return RS_SKIP;
		}
		r->answered = r->accepted = 1;
		list_del(c, L_INFER, r);
		/* A cancel parked because the server did not know the request
		 * yet goes out now that it does. */
		if (r->cancel == CX_PARKED) {
			r->cancel = CX_SENDING;
			r->tries[L_CANCEL]++;
			r->last_ns[L_CANCEL] = clock_mono_ns();
			list_add_tail(c, L_CANCEL, r);
			tx_cancel(c, r->id);
		}
		return RS_READY;
	case VELO_CLIENT_EV_TOKENS:
		/* TOKENS imply admission even if the ACCEPT was gap filled. */
		r->answered = r->accepted = 1;
		list_del(c, L_INFER, r);
		return RS_READY;
	case VELO_CLIENT_EV_CANCEL_ACK:
		if (r->cancel == CX_NONE || r->cancel == CX_ACKED) {
			CINC(c, rx_dup_answers);
			return RS_SKIP;
		}
		list_del(c, L_CANCEL, r);
		if (!ev->u.cancel_ack.found && !r->accepted) {
			/* The INFER has not reached the server yet: cancel
			 * again once it is admitted. */
			r->cancel = CX_PARKED;
			return RS_READY;
		}
		r->cancel = CX_ACKED;
		if (!ev->u.cancel_ack.found)
			req_free(c, r);	/* server already forgot it: final */
		return RS_READY;
	case VELO_CLIENT_EV_REJECT:
		if (r->accepted) {
			CINC(c, rx_dup_answers);
			return RS_SKIP;
		}
		req_free(c, r);
		return RS_READY;
	case VELO_CLIENT_EV_DONE:
	case VELO_CLIENT_EV_ERROR:
		req_free(c, r);
		return RS_READY;
	default:
		return RS_READY;
	}
}

/* Process every held message that is next in sequence. */
static void seq_advance(struct velo_client *c)
{
	for (;;) {
		struct rslot *rs = &c->ring[c->rx_next & c->ring_mask];

		if (rs->state != RS_HELD || rs->seq != c->rx_next)
			return;
		rs->state = (uint8_t)msg_process(c, rs);
		c->rx_next++;
	}
}

/* A message with sequence number @seq arrived (frame copied if kept). */
static void seq_rx(struct velo_client *c, uint64_t seq, const struct proto_msg *m,
		   uint64_t now)
{
	struct rslot *rs;

	gap_note(c, seq, seq + 1);
	if (seq < c->rx_next) {
		CINC(c, rx_dup_msgs);
		return;
	}
	if (seq - c->dl_next > c->ring_mask) {
		CINC(c, rx_reorder_full);
		return;
	}
	rs = &c->ring[seq & c->ring_mask];
	if (rs->state != RS_EMPTY) {
		CINC(c, rx_dup_msgs);
		return;
	}
	if (m->raw_len > c->cfg.mtu) {
		CINC(c, rx_drop_msg);
		return;
	}
	memcpy(rs->buf, m->raw, m->raw_len);
	rs->len = (uint32_t)m->raw_len;
	rs->seq = seq;
	rs->rx_ns = now;
	rs->state = RS_HELD;
	if (seq == c->rx_next)
		seq_advance(c);
}

/* GAP_FILL: [from, end) will never come.  Each hole inside it becomes a
 * marker slot (delivered as VELO_CLIENT_EV_GAP, in order); held messages
 * inside it are still delivered. */
static void seq_gap_fill(struct velo_client *c, uint64_t from, uint64_t end)
{
	CINC(c, gap_fills);
	while (c->rx_next >= from && c->rx_next < end) {
		uint64_t lim = MIN(end, c->dl_next + c->ring_mask + 1);
		struct rslot *rs = &c->ring[c->rx_next & c->ring_mask];
		uint64_t s;

		if (c->rx_next - c->dl_next > c->ring_mask)
			return;	/* no room for a marker: asked again later */
		if (rs->state == RS_HELD && rs->seq == c->rx_next) {
			seq_advance(c);
			continue;
		}
		for (s = c->rx_next + 1; s < lim; s++) {
			const struct rslot *h = &c->ring[s & c->ring_mask];

			if (h->state == RS_HELD && h->seq == s)
				break;
		}
		if (s == lim)
			s = end;
		memset(&rs->ev, 0, sizeof(rs->ev));
		rs->ev.type = VELO_CLIENT_EV_GAP;
		rs->ev.seq = c->rx_next;
		rs->ev.rx_ns = clock_mono_ns();
		rs->ev.u.gap.from_seq = c->rx_next;
		rs->ev.u.gap.count = (uint32_t)(s - c->rx_next);
		rs->seq = c->rx_next;
		rs->skip_to = s;
		rs->state = RS_GAP;
		CADD(c, gap_fill_msgs, s - c->rx_next);
		c->rx_next = s;
		if (c->top_seen < s)
			c->top_seen = s;
		seq_advance(c);
	}
}

/* ------------------------------------------------------------------------
 * Receive: datagrams.
 */
static void rx_logon_reply(struct velo_client *c, const uint8_t *buf,
			   size_t len, const struct proto_pkt_view *v,
			   uint64_t now)
{
	struct proto_msg_iter it;
	struct proto_msg m;
	struct proto_logon_ack ack;

	proto_msg_iter_init(&it, v);
	if (proto_msg_next(&it, &m) != 1) {
		CINC(c, rx_drop_parse);
		return;
	}
	if (m.template_id == PROTO_T_LOGON_ACK) {
		struct velo_client_event *ev;
		enum velo_suite suite;

		if (proto_block_get(&m, &ack, sizeof(ack), sizeof(ack))) {
			CINC(c, rx_drop_msg);
			return;
		}
		if (velo_auth_open(&c->logon_keys.s2c, buf, len,
				   ack.server_nonce)) {
			CINC(c, rx_drop_tag);
			return;
		}
		suite = ack.suite == VELO_SUITE_AES256_GCM
				? VELO_SUITE_AES256_GCM
				: VELO_SUITE_CHACHA20_POLY1305;
		velo_auth_session_keys(&c->psk, c->client_nonce,
				       ack.server_nonce, ack.session_id, suite,
				       &c->keys);
		c->keys_confirmed = c->n_logon_nonces <= 1;
		c->params = ack;
		c->mtu = ack.mtu && ack.mtu < c->cfg.mtu ? ack.mtu : c->cfg.mtu;
		if (c->mtu < PROTO_MTU_MIN)
			c->mtu = PROTO_MTU_MIN;
		velo_replay_init(&c->replay);
		velo_replay_update(&c->replay, v->hdr->pkt_num);
		/* Server data sequence numbers start at 1 (docs/velod.md);
		 * the ack's header says the next one all the same. */
		c->rx_next = v->hdr->seq ? v->hdr->seq : 1;
		c->dl_next = c->top_seen = c->gap_req_top = c->rx_next;
		c->gap_req_ns = 0;
		/* A new session (after a closed one) starts with an empty
		 * ring: old slots would alias the new sequence numbers. */
		for (uint32_t i = 0; i <= c->ring_mask; i++)
			c->ring[i].state = RS_EMPTY;
		c->handed = 0;
		/* Our packet numbers go on from the LOGON's: new for the
		 * session keys whatever the server's window starts from. */
		c->state = ST_UP;
		c->last_rx_ns = now;
		ev = cq_push(c, VELO_CLIENT_EV_LOGON);
		if (ev)
			ev->u.logon = ack;
		return;
	}
	if (m.template_id == PROTO_T_LOGON_REJECT) {
		struct proto_error_view ev;

		/* LOGON_REJECT is tagged under the logon key with the nonce of
		 * the LOGON it answers. */
		uint32_t i, n = MIN(c->n_logon_nonces, (uint32_t)LOGON_NONCES);

		for (i = 0; i < n; i++)
			if (!velo_auth_open(&c->logon_keys.s2c, buf, len,
					    c->logon_nonces[i]))
				break;
		if (i == n) {
			CINC(c, rx_drop_tag);
			return;
		}
		if (proto_decode_error(&m, &ev)) {
			CINC(c, rx_drop_msg);
			return;
		}
		set_reject(c, ev.f.code, &ev.text);
		session_close(c, VELO_CLIENT_EV_LOGON_FAILED,
			      ev.f.code == PROTO_E_AUTH ? -EACCES : -EPROTO);
		return;
	}
	CINC(c, rx_drop_session);
}

static void rx_ctrl_msgs(struct velo_client *c, const struct proto_pkt_view *v,
			 uint64_t now)
{
	struct proto_msg_iter it;
	struct proto_msg m;
	int rc;

	proto_msg_iter_init(&it, v);
	while ((rc = proto_msg_next(&it, &m)) == 1) {
		switch (m.template_id) {
		case PROTO_T_TEST_RESPONSE: {
			struct proto_test_response tr;
			struct velo_client_event *ev;
			unsigned i;

			if (proto_block_get(&m, &tr, sizeof(tr), sizeof(tr))) {
				CINC(c, rx_drop_msg);
				break;
			}
			ev = cq_push(c, VELO_CLIENT_EV_TEST_RESPONSE);
			if (!ev)
				break;
			i = tr.correlation_id % TEST_SLOTS;
			ev->rx_ns = now;
			ev->request_id = tr.correlation_id;
			ev->u.test = tr;
			if (c->test_corr[i] == tr.correlation_id)
				ev->sent_ns = c->test_sent[i];
			break;
		}
		case PROTO_T_GAP_FILL: {
			struct proto_gap_fill gf;

			if (proto_block_get(&m, &gf, sizeof(gf), sizeof(gf))) {
				CINC(c, rx_drop_msg);
				break;
			}
			seq_gap_fill(c, gf.from_seq, gf.from_seq + gf.count);
			break;
		}
		case PROTO_T_LOGOUT: {
			struct proto_error_view lo;

			/* The codec reads LOGOUT's code and text as an ERROR's. */
			if (proto_decode_error(&m, &lo) == 0)
				set_reject(c, lo.f.code, &lo.text);
			session_close(c, VELO_CLIENT_EV_CLOSED, -ECONNRESET);
			return;
		}
		default:
			if (!proto_template_name(m.template_id))
				CINC(c, rx_unknown_template);
			else
				CINC(c, rx_drop_session);
			break;
		}
	}
	if (rc < 0)
		CINC(c, rx_drop_msg);
}

/* The LOGON_ACK answered an earlier LOGON than the last: find the nonce
 * whose keys verify this datagram and keep them.  Rare (a LOGON_ACK
 * delayed past a resend), bounded by LOGON_NONCES derivations. */
static bool keys_try_earlier(struct velo_client *c, const uint8_t *buf,
			     size_t len)
{
	enum velo_suite suite = c->keys.s2c.suite;
	uint32_t n = MIN(c->n_logon_nonces, (uint32_t)LOGON_NONCES);
	struct velo_session_keys k;

	for (uint32_t i = 0; i < n; i++) {
		const uint8_t *cn = c->logon_nonces[i];

		if (!memcmp(cn, c->client_nonce, PROTO_NONCE_LEN))
			continue;
		velo_auth_session_keys(&c->psk, cn, c->params.server_nonce,
				       c->params.session_id, suite, &k);
		if (velo_auth_open(&k.s2c, buf, len, NULL) == 0) {
			c->keys = k;
			memcpy(c->client_nonce, cn, PROTO_NONCE_LEN);
			sodium_memzero(&k, sizeof(k));
			return true;
		}
	}
	sodium_memzero(&k, sizeof(k));
	return false;
}

static void rx_datagram(struct velo_client *c, const uint8_t *buf, size_t len,
			uint64_t now)
{
	struct proto_pkt_view v;
	const struct proto_pkt_hdr *h;
	bool ctrl;

	if (unlikely(c->cfg.tap))
		c->cfg.tap(c->cfg.tap_arg, VELO_CLIENT_TAP_RX, buf, len);
	if (proto_pkt_parse(buf, len, c->cfg.mtu, &v)) {
		CINC(c, rx_drop_parse);
		return;
	}
	h = v.hdr;
	ctrl = (h->flags & PROTO_F_CTRL) || h->msg_count == PROTO_COUNT_HEARTBEAT;
	if (unlikely(loss_drop(c, ctrl ? c->cfg.loss.rx_ctrl_ppm
				       : c->cfg.loss.rx_data_ppm))) {
		CINC(c, loss_rx);
		return;
	}
	if (!(h->flags & PROTO_F_S2C) || !(h->flags & PROTO_F_AUTH)) {
		CINC(c, rx_drop_parse);
		return;
	}
	if (c->state == ST_LOGON) {
		rx_logon_reply(c, buf, len, &v, now);
		return;
	}
	if (c->state != ST_UP || h->session_id != c->params.session_id) {
		CINC(c, rx_drop_session);
		return;
	}
	if (!velo_replay_check(&c->replay, h->pkt_num)) {
		CINC(c, rx_drop_replay);
		return;
	}
	if (velo_auth_open(&c->keys.s2c, buf, len, NULL) &&
	    (c->keys_confirmed || !keys_try_earlier(c, buf, len))) {
		CINC(c, rx_drop_tag);
		return;
	}
	c->keys_confirmed = true;
	velo_replay_update(&c->replay, h->pkt_num);
	c->last_rx_ns = now;

	if (h->msg_count == PROTO_COUNT_END) {
		set_reject(c, PROTO_E_SHUTTING_DOWN, NULL);
		session_close(c, VELO_CLIENT_EV_CLOSED, -ECONNRESET);
		return;
	}
	if (ctrl) {
		/* Heartbeats and control datagrams carry the next sequence
		 * number the server will use: a tail loss shows here. */
		if (h->msg_count == PROTO_COUNT_HEARTBEAT)
			CINC(c, heartbeats_rx);
		gap_note(c, h->seq, h->seq);
		if (h->msg_count != PROTO_COUNT_HEARTBEAT)
			rx_ctrl_msgs(c, &v, now);
		return;
	}

	struct proto_msg_iter it;
	struct proto_msg m;
	uint64_t seq = h->seq;
	int rc;

	proto_msg_iter_init(&it, &v);
	while ((rc = proto_msg_next(&it, &m)) == 1)
		seq_rx(c, seq++, &m, now);
	if (rc < 0)
		CINC(c, rx_drop_msg);
}

static int rx_burst(struct velo_client *c)
{
	int total = 0;

	for (;;) {
		uint64_t now;
		int n;

		for (int i = 0; i < RX_BURST; i++) {
			c->rxmsg[i].msg_hdr.msg_flags = 0;
			c->rxiov[i].iov_len = c->rx_cap;
		}
		n = recvmmsg(c->fd, c->rxmsg, RX_BURST, MSG_DONTWAIT, NULL);
		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK ||
			    errno == EINTR)
				return total;
			if (errno == ECONNREFUSED) {
				/* ICMP port unreachable: nothing listens. */
				if (c->state == ST_LOGON) {
					set_reject(c, 0, NULL);
					session_close(c,
						      VELO_CLIENT_EV_LOGON_FAILED,
						      -ECONNREFUSED);
				}
				return total;
			}
			return -errno;
		}
		now = clock_mono_ns();
		for (int i = 0; i < n; i++) {
			size_t len = c->rxmsg[i].msg_len;
			const uint8_t *buf = c->rxbufs + (size_t)i * c->rx_cap;

			CINC(c, rx_datagrams);
			CADD(c, rx_bytes, len);
			if (c->rxmsg[i].msg_hdr.msg_flags & MSG_TRUNC) {
				CINC(c, rx_drop_parse);
				continue;
			}
			rx_datagram(c, buf, len, now);
		}
		total += n;
		if (n < RX_BURST)
			return total;
	}
}

/* ------------------------------------------------------------------------
 * Timers.
 */
static uint64_t ms_ns(uint32_t ms)
{
	return (uint64_t)ms * 1000000ull;
}

static void timers_run(struct velo_client *c, uint64_t now)
{
	uint64_t retry = ms_ns(c->cfg.retry_ms);

	if (c->state == ST_LOGON) {
		if (now - c->logon_start_ns >= ms_ns(c->cfg.logon_timeout_ms)) {
			set_reject(c, 0, NULL);
			session_close(c, VELO_CLIENT_EV_LOGON_FAILED, -ETIMEDOUT);
		} else if (now - c->logon_last_ns >= retry) {
			tx_logon(c);
		}
		return;
	}
	if (c->state != ST_UP)
		return;

	if (c->params.session_timeout_ms &&
	    now - c->last_rx_ns >= ms_ns(c->params.session_timeout_ms)) {
		set_reject(c, 0, NULL);
		session_close(c, VELO_CLIENT_EV_CLOSED, -ETIMEDOUT);
		return;
	}

	/* INFER resends: the FIFO head is the oldest send.  Bounded by the
	 * number of requests (each moves to the tail or leaves). */
	for (uint32_t n = 0; n < c->n_in_flight; n++) {
		uint32_t i = c->lists[L_INFER].head;
		struct creq *r;

		if (i == NIL)
			break;
		r = &c->reqs[i];
		if (now - r->last_ns[L_INFER] < retry)
			break;
		if (r->tries[L_INFER] >= c->cfg.retries_max) {
			struct velo_client_event *ev =
				cq_push(c, VELO_CLIENT_EV_TIMEOUT);

			if (ev) {
				ev->request_id = r->id;
				ev->sent_ns = r->first_ns;
			}
			CINC(c, request_timeouts);
			req_free(c, r);
			continue;
		}
		r->tries[L_INFER]++;
		r->last_ns[L_INFER] = now;
		list_add_tail(c, L_INFER, r);
		CINC(c, infer_retries);
		tx_infer(c, r);
	}
	for (uint32_t n = 0; n < c->n_in_flight; n++) {
		uint32_t i = c->lists[L_CANCEL].head;
		struct creq *r;

		if (i == NIL)
			break;
		r = &c->reqs[i];
		if (now - r->last_ns[L_CANCEL] < retry)
			break;
		if (r->tries[L_CANCEL] >= c->cfg.retries_max) {
			struct velo_client_event *ev =
				cq_push(c, VELO_CLIENT_EV_TIMEOUT);

			if (ev) {
				ev->request_id = r->id;
				ev->sent_ns = r->cancel_first_ns;
			}
			CINC(c, request_timeouts);
			req_free(c, r);
			continue;
		}
		r->tries[L_CANCEL]++;
		r->last_ns[L_CANCEL] = now;
		list_add_tail(c, L_CANCEL, r);
		CINC(c, cancel_retries);
		tx_cancel(c, r->id);
	}

	if (c->rx_next < c->top_seen)
		gap_request(c, now,
			    now - c->gap_req_ns >= ms_ns(c->cfg.retransmit_ms));
	else
		c->gap_req_ns = 0;

	if (now - c->last_tx_ns >= ms_ns(c->params.heartbeat_ms ?
					 c->params.heartbeat_ms :
					 c->cfg.heartbeat_ms))
		tx_heartbeat(c);
}

/* May say yes for messages that turn out to be skipped: a spurious
 * wake-up, never a missed one. */
static bool events_ready(const struct velo_client *c)
{
	return c->cq_len || c->dl_next < c->rx_next;
}

static int64_t due_in(uint64_t last, uint64_t period, uint64_t now)
{
	return (int64_t)(last + period - now);
}

int velo_client_timeout_ms(const struct velo_client *c)
{
	uint64_t now = clock_mono_ns();
	int64_t t = ms_ns(1000);

	if (events_ready(c))
		return 0;
	if (c->state == ST_LOGON) {
		t = MIN(t, due_in(c->logon_last_ns, ms_ns(c->cfg.retry_ms), now));
		t = MIN(t, due_in(c->logon_start_ns,
				  ms_ns(c->cfg.logon_timeout_ms), now));
	} else if (c->state == ST_UP) {
		uint32_t hb = c->params.heartbeat_ms ? c->params.heartbeat_ms
						     : c->cfg.heartbeat_ms;

		for (int l = 0; l < L__COUNT; l++)
			if (c->lists[l].head != NIL)
				t = MIN(t, due_in(c->reqs[c->lists[l].head].last_ns[l],
						  ms_ns(c->cfg.retry_ms), now));
		if (c->rx_next < c->top_seen)
			t = MIN(t, due_in(c->gap_req_ns,
					  ms_ns(c->cfg.retransmit_ms), now));
		t = MIN(t, due_in(c->last_tx_ns, ms_ns(hb), now));
		if (c->params.session_timeout_ms)
			t = MIN(t, due_in(c->last_rx_ns,
					  ms_ns(c->params.session_timeout_ms),
					  now));
	}
	if (t <= 0)
		return 0;
	return (int)((t + 999999) / 1000000);
}

/* ------------------------------------------------------------------------
 * Events out.
 */

/* The slot handed out by the last velo_client_event_next() is free again. */
static void release_handed(struct velo_client *c)
{
	struct rslot *rs;

	if (!c->handed)
		return;
	rs = &c->ring[c->handed_seq & c->ring_mask];
	if (rs->seq == c->handed_seq && rs->state != RS_HELD)
		rs->state = RS_EMPTY;
	c->handed = 0;
}

int velo_client_event_next(struct velo_client *c, struct velo_client_event *ev)
{
	release_handed(c);
	if (c->cq_len) {
		*ev = c->cq[c->cq_head];
		c->cq_head = (c->cq_head + 1) % c->cq_cap;
		c->cq_len--;
		return 1;
	}
	while (c->dl_next < c->rx_next) {
		struct rslot *rs = &c->ring[c->dl_next & c->ring_mask];
		uint64_t seq = c->dl_next;

		if (rs->seq != seq || rs->state == RS_EMPTY ||
		    rs->state == RS_HELD) {
			/* Cannot happen: everything below rx_next was
			 * processed into a slot.  Skip rather than stall. */
			c->dl_next++;
			continue;
		}
		if (rs->state == RS_SKIP) {
			rs->state = RS_EMPTY;
			c->dl_next++;
			continue;
		}
		*ev = rs->ev;
		c->dl_next = rs->state == RS_GAP ? rs->skip_to : seq + 1;
		c->handed = 1;
		c->handed_seq = seq;
		return 1;
	}
	return 0;
}

static int dispatch(struct velo_client *c)
{
	struct velo_client_event ev;
	int n = 0;

	if (!c->cfg.on_event)
		return 0;
	while (velo_client_event_next(c, &ev) == 1) {
		c->cfg.on_event(c->cfg.on_event_arg, &ev);
		n++;
	}
	release_handed(c);
	return n;
}

static int ready_count(const struct velo_client *c)
{
	return (int)(c->cq_len + (c->rx_next - c->dl_next));
}

int velo_client_poll(struct velo_client *c)
{
	int rc;

	release_handed(c);
	if (c->state == ST_DOWN)
		return dispatch(c);
	rc = rx_burst(c);
	timers_run(c, clock_mono_ns());
	if (c->cfg.on_event)
		return dispatch(c);
	if (rc < 0)
		return rc;
	return ready_count(c);
}

int velo_client_wait(struct velo_client *c, int timeout_ms)
{
	struct pollfd p = { .fd = c->fd, .events = POLLIN };
	int t = velo_client_timeout_ms(c);

	if (timeout_ms >= 0 && timeout_ms < t)
		t = timeout_ms;
	if (t > 0 && poll(&p, 1, t) < 0 && errno != EINTR)
		return -errno;
	return velo_client_poll(c);
}

/* ------------------------------------------------------------------------
 * Session API.
 */
int velo_client_fd(const struct velo_client *c)
{
	return c->fd;
}

bool velo_client_is_up(const struct velo_client *c)
{
	return c->state == ST_UP;
}

const struct proto_logon_ack *velo_client_params(const struct velo_client *c)
{
	return &c->params;
}

int velo_client_logon_start(struct velo_client *c)
{
	if (c->state == ST_UP || c->state == ST_LOGON)
		return -EISCONN;
	c->reject_code = 0;
	c->reject_text[0] = 0;
	c->n_logon_nonces = 0;
	c->tx_pkt_num = 0;
	c->tx_seq = 1;
	c->state = ST_LOGON;
	c->logon_start_ns = clock_mono_ns();
	return tx_logon(c);
}

int velo_client_logon(struct velo_client *c, int timeout_ms)
{
	uint64_t end;
	int rc;

	if (timeout_ms < 0)
		timeout_ms = (int)c->cfg.logon_timeout_ms;
	end = clock_mono_ns() + ms_ns((uint32_t)timeout_ms);
	rc = velo_client_logon_start(c);
	if (rc && rc != -ECONNREFUSED)
		return rc;
	while (c->state == ST_LOGON) {
		uint64_t now = clock_mono_ns();

		if (now >= end)
			return -ETIMEDOUT;
		/* Control events stay queued for the caller; with on_event
		 * they are delivered by velo_client_wait() itself. */
		rc = velo_client_wait(c, (int)((end - now + 999999) / 1000000));
		if (rc < 0)
			return rc;
	}
	if (c->state == ST_UP)
		return 0;
	/* LOGON_FAILED: the reason is in the queued event. */
	for (uint32_t i = 0; i < c->cq_len; i++) {
		const struct velo_client_event *ev =
			&c->cq[(c->cq_head + i) % c->cq_cap];

		if (ev->type == VELO_CLIENT_EV_LOGON_FAILED)
			return ev->u.closed.err;
	}
	return c->reject_code == PROTO_E_AUTH ? -EACCES : -EPROTO;
}

int velo_client_logout(struct velo_client *c)
{
	struct proto_logout *m;
	struct proto_enc e;

	if (c->state != ST_UP)
		return -ENOTCONN;
	tx_begin(c, &e, true);
	m = proto_enc_msg_begin(&e, PROTO_T_LOGOUT, sizeof(*m));
	if (m) {
		m->code = PROTO_E_NONE;
		proto_enc_var(&e, "", 0);
		proto_enc_msg_end(&e);
		tx_finish(c, &e, true);
	}
	for (uint32_t i = 0; i < c->cfg.requests_max; i++)
		if (c->reqs[i].used)
			req_free(c, &c->reqs[i]);
	c->state = ST_CLOSED;
	return 0;
}

/*
 * The server remembers a bounded window of recent request ids per session
 * and answers a retry of an id older than that window REJECT DUPLICATE
 * (it cannot tell whether the id ran).  So while a request is unanswered,
 * ids may run ahead of it by less than that window: cfg.dedup_window, or
 * else the window the server advertised in LOGON_ACK (dedup_ids), else the
 * least it promises, its request credit (docs/velod.md: dedup_ids >
 * credit_requests).
 * Walks the unanswered requests: at most the credit when the caller keeps
 * to it, requests_max otherwise.
 */
static bool dedup_span_ok(const struct velo_client *c, uint64_t id)
{
	uint64_t span = c->cfg.dedup_window ? c->cfg.dedup_window :
			c->params.dedup_ids ? c->params.dedup_ids :
			c->params.credit_requests ? c->params.credit_requests : 16;

	for (uint32_t i = c->lists[L_INFER].head; i != NIL;
	     i = c->reqs[i].next[L_INFER])
		if (id - c->reqs[i].id >= span)
			return false;
	return true;
}

int velo_client_infer(struct velo_client *c, const struct proto_infer_req *req,
		      uint64_t *request_id)
{
	struct proto_infer_req rq = *req;
	struct proto_pkt_hdr h;
	struct proto_enc e;
	struct creq *r;
	size_t cap = sizeof(struct proto_pkt_hdr) + c->cfg.request_bytes_max;
	uint64_t now;
	int rc;

	if (c->state != ST_UP)
		return -ENOTCONN;
	if (rq.f.request_id == 0)
		rq.f.request_id = c->next_request_id;
	else if (rq.f.request_id < c->next_request_id)
		return -EINVAL;
	if (proto_infer_msg_size(&rq) > c->cfg.request_bytes_max)
		return -EMSGSIZE;
	/* FRAGMENT index is 16 bits. */
	if (proto_infer_msg_size(&rq) / frag_payload(c) >= UINT16_MAX)
		return -EMSGSIZE;
	if (req_find(c, rq.f.request_id))
		return -EINVAL;
	if (!dedup_span_ok(c, rq.f.request_id))
		return -EBUSY;
	r = req_alloc(c, rq.f.request_id);
	if (!r)
		return -ENOBUFS;

	/* Encode once into the slot's frame buffer: resends copy it. */
	memset(&h, 0, sizeof(h));
	proto_enc_init(&e, r->frame, cap, &h);
	rc = proto_enc_infer(&e, &rq);
	if (rc || e.err) {
		req_free(c, r);
		return rc ? rc : -EMSGSIZE;
	}
	r->frame_len = (uint32_t)(e.len - sizeof(struct proto_pkt_hdr));
	r->frag_id = ++c->next_frag_id;
	c->next_request_id = rq.f.request_id + 1;
	if (request_id)
		*request_id = rq.f.request_id;

	now = clock_mono_ns();
	r->first_ns = r->last_ns[L_INFER] = now;
	r->tries[L_INFER] = 1;
	list_add_tail(c, L_INFER, r);
	CINC(c, infer_sent);
	/* A failed send is counted (tx_errors) and repaired by the resend
	 * timer like a lost datagram: the request is tracked either way. */
	tx_infer(c, r);
	return 0;
}

int velo_client_cancel(struct velo_client *c, uint64_t request_id)
{
	struct creq *r;

	if (c->state != ST_UP)
		return -ENOTCONN;
	r = req_find(c, request_id);
	if (!r)
		return -ENOENT;
	if (r->cancel != CX_NONE)
		return -EALREADY;
	r->cancel = CX_SENDING;
	r->cancel_first_ns = r->last_ns[L_CANCEL] = clock_mono_ns();
	r->tries[L_CANCEL] = 1;
	list_add_tail(c, L_CANCEL, r);
	CINC(c, cancel_sent);
	return tx_cancel(c, request_id);
}

int velo_client_test_request(struct velo_client *c, uint64_t *correlation_id)
{
	struct proto_test_request *m;
	struct proto_enc e;
	uint64_t id;
	unsigned i;

	if (c->state != ST_UP)
		return -ENOTCONN;
	id = ++c->next_corr;
	i = id % TEST_SLOTS;
	tx_begin(c, &e, true);
	m = proto_enc_msg_begin(&e, PROTO_T_TEST_REQUEST, sizeof(*m));
	if (!m)
		return -EMSGSIZE;
	m->correlation_id = id;
	m->timestamp_ns = clock_real_ns();
	proto_enc_msg_end(&e);
	c->test_corr[i] = id;
	c->test_sent[i] = clock_mono_ns();
	if (correlation_id)
		*correlation_id = id;
	CINC(c, test_requests);
	return tx_finish(c, &e, true);
}

int velo_client_status_request(struct velo_client *c)
{
	struct proto_enc e;

	if (c->state != ST_UP)
		return -ENOTCONN;
	tx_begin(c, &e, false);
	if (!proto_enc_msg_begin(&e, PROTO_T_STATUS_REQUEST, 0))
		return -EMSGSIZE;
	proto_enc_msg_end(&e);
	return tx_finish(c, &e, false);
}

/* ------------------------------------------------------------------------
 * Create and destroy.
 */
static uint32_t pow2_at_least(uint32_t x)
{
	uint32_t p = 1;

	while (p < x && p < (1u << 30))
		p <<= 1;
	return p;
}

static int parse_server(const char *s, struct sockaddr_storage *ss,
			socklen_t *sl)
{
	char host[256];
	const char *port;
	struct addrinfo hints = { .ai_socktype = SOCK_DGRAM }, *res;
	size_t hl;

	if (!s || !*s)
		return -EINVAL;
	if (s[0] == '[') {
		const char *e = strchr(s, ']');

		if (!e || e[1] != ':')
			return -EINVAL;
		hl = (size_t)(e - s - 1);
		memcpy(host, s + 1, MIN(hl, sizeof(host) - 1));
		port = e + 2;
	} else {
		const char *e = strrchr(s, ':');

		if (!e)
			return -EINVAL;
		hl = (size_t)(e - s);
		memcpy(host, s, MIN(hl, sizeof(host) - 1));
		port = e + 1;
	}
	if (hl >= sizeof(host) || !*port)
		return -EINVAL;
	host[hl] = 0;
	if (getaddrinfo(host, port, &hints, &res))
		return -EINVAL;
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*sl = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

/*
 * Memory budget (allocated here, once):
 *   ring      reorder_msgs x (sizeof(struct rslot) + mtu)
 *   requests  requests_max x (sizeof(struct creq) + 48 + request_bytes_max)
 *   hash      2 x requests_max (rounded up to a power of two) x 4
 *   rx        RX_BURST x (mtu + 8)
 *   tx        PROTO_MTU_MAX
 *   events    ctrl_events_max x sizeof(struct velo_client_event)
 */
struct velo_client *velo_client_create(const struct velo_client_config *cfg)
{
	struct sockaddr_storage ss;
	struct velo_client *c;
	socklen_t sl = 0;
	size_t fbytes, rbytes;
	int err, rcvbuf = 4 << 20;

	if (!cfg || !cfg->server) {
		errno = EINVAL;
		return NULL;
	}
	if (velo_auth_init()) {
		errno = EIO;
		return NULL;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->fd = -1;
	c->cfg = *cfg;
	c->psk = cfg->psk;
	snprintf(c->client_name, sizeof(c->client_name), "%s",
		 cfg->client_name ? cfg->client_name : "");
	c->cfg.client_name = c->client_name;
	c->cfg.server = NULL;	/* not kept */

#define DEF(f, v) do { if (!c->cfg.f) c->cfg.f = (v); } while (0)
	DEF(heartbeat_ms, 1000);
	DEF(mtu, PROTO_MTU_DEFAULT);
	DEF(requests_max, 64);
	DEF(request_bytes_max, REQUEST_BYTES_LIMIT);
	DEF(reorder_msgs, 256);
	DEF(ctrl_events_max, 64);
	DEF(logon_timeout_ms, 2000);
	DEF(retry_ms, 100);
	DEF(retries_max, 20);
	DEF(retransmit_ms, 20);
	DEF(suites, velo_auth_suites_local());
#undef DEF
	err = -EINVAL;
	if (c->cfg.mtu < PROTO_MTU_MIN || c->cfg.mtu > PROTO_MTU_MAX ||
	    c->cfg.requests_max > (1u << 24) || c->cfg.reorder_msgs > (1u << 20) ||
	    c->cfg.ctrl_events_max > (1u << 20) ||
	    c->cfg.request_bytes_max > REQUEST_BYTES_LIMIT)
		goto err_free;
	err = parse_server(cfg->server, &ss, &sl);
	if (err)
		goto err_free;
	c->mtu = c->cfg.mtu;
	c->loss_state = cfg->loss.seed;

	err = -ENOMEM;
	c->cfg.reorder_msgs = pow2_at_least(c->cfg.reorder_msgs);
	c->ring_mask = c->cfg.reorder_msgs - 1;
	rbytes = ALIGN_UP((size_t)c->cfg.mtu, 8);
	c->ring = calloc(c->cfg.reorder_msgs, sizeof(*c->ring) + rbytes);
	if (!c->ring)
		goto err_free;
	for (uint32_t i = 0; i < c->cfg.reorder_msgs; i++)
		c->ring[i].buf = (uint8_t *)(c->ring + c->cfg.reorder_msgs) +
				 (size_t)i * rbytes;

	fbytes = ALIGN_UP(sizeof(struct proto_pkt_hdr) + c->cfg.request_bytes_max +
			  PROTO_TAG_LEN, 8);
	c->reqs = calloc(c->cfg.requests_max, sizeof(*c->reqs) + fbytes);
	c->hash_mask = pow2_at_least(2 * c->cfg.requests_max) - 1;
	c->hash = malloc(((size_t)c->hash_mask + 1) * sizeof(*c->hash));
	c->cq_cap = c->cfg.ctrl_events_max;
	c->cq = calloc(c->cq_cap, sizeof(*c->cq));
	c->rx_cap = ALIGN_UP((size_t)c->cfg.mtu + 8, 8);
	c->rxbufs = aligned_alloc(64, ALIGN_UP(RX_BURST * c->rx_cap, 64));
	c->txbuf = aligned_alloc(64, PROTO_MTU_MAX);
	if (!c->reqs || !c->hash || !c->cq || !c->rxbufs || !c->txbuf)
		goto err_free_all;
	memset(c->hash, 0xff, ((size_t)c->hash_mask + 1) * sizeof(*c->hash));
	for (uint32_t i = 0; i < c->cfg.requests_max; i++) {
		struct creq *r = &c->reqs[i];

		r->frame = (uint8_t *)(c->reqs + c->cfg.requests_max) + i * fbytes;
		r->next[L_INFER] = i + 1 < c->cfg.requests_max ? i + 1 : NIL;
	}
	c->free_head = 0;
	for (int l = 0; l < L__COUNT; l++)
		c->lists[l].head = c->lists[l].tail = NIL;
	for (int i = 0; i < RX_BURST; i++) {
		c->rxiov[i].iov_base = c->rxbufs + (size_t)i * c->rx_cap;
		c->rxiov[i].iov_len = c->rx_cap;
		c->rxmsg[i].msg_hdr.msg_iov = &c->rxiov[i];
		c->rxmsg[i].msg_hdr.msg_iovlen = 1;
	}
	c->next_request_id = clock_real_ns() / 1000;

	c->fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		err = -errno;
		goto err_free_all;
	}
	/* A larger receive buffer absorbs bursts of TOKENS; failure is not
	 * fatal (the kernel caps it at rmem_max). */
	setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	/* connect(): only the server's datagrams are received, and an ICMP
	 * port unreachable shows as ECONNREFUSED. */
	if (connect(c->fd, (struct sockaddr *)&ss, sl)) {
		err = -errno;
		goto err_close;
	}
	velo_auth_logon_keys(&c->psk, &c->logon_keys);
	c->state = ST_DOWN;
	return c;

err_close:
	close(c->fd);
err_free_all:
	free(c->txbuf);
	free(c->rxbufs);
	free(c->cq);
	free(c->hash);
	free(c->reqs);
err_free:
	free(c->ring);
	free(c);
	errno = -err;
	return NULL;
}

void velo_client_destroy(struct velo_client *c)
{
	if (!c)
		return;
	if (c->state == ST_UP)
		velo_client_logout(c);
	close(c->fd);
	free(c->txbuf);
	free(c->rxbufs);
	free(c->cq);
	free(c->hash);
	free(c->reqs);
	free(c->ring);
	sodium_memzero(&c->psk, sizeof(c->psk));
	sodium_memzero(&c->keys, sizeof(c->keys));
	sodium_memzero(&c->logon_keys, sizeof(c->logon_keys));
	free(c);
}
