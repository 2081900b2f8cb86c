/* SPDX-License-Identifier: MIT */
/*
 * dataplane/ring.h — what crosses between the dataplane thread and the
 * scheduler thread: a pool of request slots and two single-producer /
 * single-consumer rings.
 *
 *   dataplane --[req ring: struct dp_req_msg]--> scheduler
 *   dataplane <--[resp ring: struct dp_resp]---- scheduler
 *
 * Rings are Concurrency Kit's ck_ring (Debian libck-dev) with typed entries
 * (CK_RING_PROTOTYPE): records are copied by value into a preallocated
 * power-of-two array, with the store fence before the producer index
 * moves and the load fence after the consumer reads it.  It fits as it is:
 * SPSC, no allocation, header-only, and its reserve/commit pair lets the
 * scheduler fill a 512-byte response in place.  (Its capacity is size - 1
 * and it has no burst dequeue; the wrappers below loop.)
 *
 * Ownership rules (the whole contract):
 *  - Request slots belong to the dataplane.  It takes one from its free
 *    stack, fills it (a full copy of the decoded INFER: never a pointer into
 *    an rx buffer, which is reused by the next burst), then enqueues
 *    DP_REQ_INFER.  From then on the scheduler reads the slot; nobody writes
 *    it.  The slot comes back to the dataplane with the response record
 *    that has DP_RESP_F_FINAL (REJECT, DONE or ERROR); the dataplane frees it.
 *  - DP_REQ_CANCEL names the slot and request id of a request in flight.  By
 *    the time the scheduler reads it, that request may already be finished
 *    and the slot reused: the scheduler decides "found" from its own state
 *    for the slot and the request id in the message, never from the slot's
 *    contents.  Every DP_REQ_CANCEL is answered by one DP_RESP_CANCEL_ACK.
 *  - The request ring holds 2 x slots entries: each slot has at most one
 *    INFER and one CANCEL queued, so the dataplane's enqueue never fails.
 *  - The response ring can fill: the scheduler keeps the record and retries.
 */
#ifndef VELO_DP_RING_H
#define VELO_DP_RING_H

#include <stdbool.h>
#include <stdint.h>
#include <unistd.h>

#include <ck_ring.h>

#include <velo/codec.h>
#include <velo/compiler.h>
#include <velo/proto.h>

/* A string inside a request slot's text arena. */
struct dp_str_ref {
	uint32_t off;
	uint32_t len;
};

struct dp_chat_ref {
	uint8_t role;		/* enum proto_role */
	uint8_t reserved[3];
	struct dp_str_ref text;
};

/*
 * A decoded INFER, copied out of the datagram.  Strings live in @text
 * (text_bytes_max bytes), prompt token ids in @prompt_tokens
 * (prompt_tokens_max entries); both point into the pool's arena.
 * Exactly one prompt kind is set in f.flags (PROMPT_TOKENS, _TEXT, _CHAT).
 */
struct dp_req_slot {
	uint32_t index;			/* own index in the pool */
	uint16_t sess_slot;		/* session table slot */
	uint16_t reserved0;
	uint32_t sess_gen;		/* session generation (slot reuse) */
	uint32_t cost_tokens;		/* credit charged: prompt + max_tokens */
	uint64_t session_id;
	uint64_t request_id;
	uint64_t arrival_ns;		/* monotonic, when the dataplane decoded it */
	struct proto_infer f;		/* root block, host order */
	uint32_t n_prompt_tokens;
	uint32_t n_stop_tokens;
	uint32_t n_logit_bias;
	uint32_t n_stop_seqs;
	uint32_t n_messages;
	uint32_t text_used;		/* bytes of @text in use */
	struct dp_str_ref model;	/* empty: by model_id or the default */
	struct dp_str_ref version;	/* empty: the production label */
	struct dp_str_ref prompt_text;
	struct dp_str_ref stop_seqs[PROTO_STOP_SEQ_MAX];
	struct dp_chat_ref messages[PROTO_CHAT_MSGS_MAX];
	uint32_t stop_tokens[PROTO_STOP_TOKENS_MAX];
	struct proto_logit_bias logit_bias[PROTO_LOGIT_BIAS_MAX];
	uint32_t *prompt_tokens;	/* (prompt_tokens_max) */
	char *text;			/* (text_bytes_max) */
} __cache_aligned;

static inline const char *dp_req_str(const struct dp_req_slot *r,
				     struct dp_str_ref s)
{
	return r->text + s.off;
}

enum dp_req_op {
	DP_REQ_INFER = 1,	/* run the request in slot req_slot */
	DP_REQ_CANCEL = 2,	/* cancel request_id if still in slot req_slot */
};

/* Request ring record (dataplane -> scheduler). */
struct dp_req_msg {
	uint16_t op;		/* enum dp_req_op */
	uint16_t sess_slot;
	uint32_t sess_gen;
	uint32_t req_slot;
	uint32_t reserved;
	uint64_t request_id;
	uint64_t session_id;
};
_Static_assert(sizeof(struct dp_req_msg) == 32, "dp_req_msg");

enum dp_resp_kind {
	DP_RESP_ACCEPT = 1,	/* u.accept */
	DP_RESP_REJECT = 2,	/* u.reject, text; final */
	DP_RESP_TOKENS = 3,	/* u.tokens, tokens[n_tokens], text */
	DP_RESP_DONE = 4,	/* u.done, text = model name then version; final */
	DP_RESP_ERROR = 5,	/* u.error, text; final */
	DP_RESP_CANCEL_ACK = 6,	/* u.cancel_ack */
};

/* The request's slot is released with this record (REJECT/DONE/ERROR). */
#define DP_RESP_F_FINAL 0x1

#define DP_RESP_TOKENS_MAX 32
#define DP_RESP_TEXT_MAX 304

/*
 * Response ring record (scheduler -> dataplane), 512 bytes.  The union
 * holds the wire root block the dataplane copies into the message as is
 * (request_id inside it is set by the dataplane from @request_id).
 * TOKENS longer than DP_RESP_TOKENS_MAX ids or DP_RESP_TEXT_MAX bytes are
 * sent as several records; text never ends inside a UTF-8 code point.
 */
struct dp_resp {
	uint8_t kind;		/* enum dp_resp_kind */
	uint8_t flags;		/* DP_RESP_F_* */
	uint16_t sess_slot;
	uint32_t sess_gen;
	uint32_t req_slot;
	uint16_t n_tokens;	/* TOKENS: ids in tokens[] */
	uint16_t text_len;	/* bytes in text[] */
	uint64_t request_id;
	union {
		struct proto_accept accept;
		struct proto_reject reject;
		struct proto_tokens tokens;
		struct proto_done done;
		struct proto_error error;
		struct proto_cancel_ack cancel_ack;
	} u;
	uint16_t name_len;	/* DONE: text[0, name_len) model name, rest version */
	uint16_t reserved[3];
	/* TOKENS with u.tokens.top_logprobs = k > 0: ids in tokens[0, n),
	 * then n x (1 + k) logprob entries from lp[dp_resp_lp_first(n)]
	 * (dp_resp_lp()); n <= dp_resp_lp_tokens_max(k). */
	union {
		uint32_t tokens[DP_RESP_TOKENS_MAX];
		struct proto_logprob lp[DP_RESP_TOKENS_MAX / 2];
	};
	char text[DP_RESP_TEXT_MAX];
};
_Static_assert(sizeof(struct dp_resp) == 512, "dp_resp");

/*
 * Logprobs ride in the record itself (so records stay self-contained when
 * they are copied from ring to ring, dp.c's per-lcore fan-out): a TOKENS
 * record with logprobs carries fewer tokens, as many as fit the 128 bytes
 * of tokens[] with their 1 + k entries of 8 bytes each:
 *   k        1  2  3  4..6  7..8
 *   tokens   6  4  3   2     1
 * The stream cuts its chunks to that many (eng_stream_params.ids_max).
 * Cost: with stream = TOKEN (one TOKENS per token) nothing changes; with
 * EVERY_K / SENTENCE a TOKENS message carries at most that many tokens.
 */
#define DP_RESP_LP_ENTRIES (DP_RESP_TOKENS_MAX / 2)

/* Index in lp[] of the first entry, after @n ids. */
static inline unsigned dp_resp_lp_first(unsigned n)
{
	return (n + 1) / 2;
}

/* Whether @n tokens with @k alternatives each fit one record. */
static inline bool dp_resp_lp_fits(unsigned n, unsigned k)
{
	return dp_resp_lp_first(n) + n * (1 + k) <= DP_RESP_LP_ENTRIES;
}

/* Tokens one record holds with @k alternatives each (k 1..8: 6 to 1). */
static inline unsigned dp_resp_lp_tokens_max(unsigned k)
{
	unsigned n = 1;

	while (dp_resp_lp_fits(n + 1, k))
		n++;
	return n;
}

static inline struct proto_logprob *dp_resp_lp(struct dp_resp *r)
{
	return &r->lp[dp_resp_lp_first(r->n_tokens)];
}

static inline const struct proto_logprob *dp_resp_lp_const(const struct dp_resp *r)
{
	return &r->lp[dp_resp_lp_first(r->n_tokens)];
}
_Static_assert(PROTO_LOGPROBS_MAX == 8 && 1 + 1 * (1 + PROTO_LOGPROBS_MAX) <=
	       DP_RESP_LP_ENTRIES, "one token with 8 alternatives fits a record");

CK_RING_PROTOTYPE(dp_req, dp_req_msg)
CK_RING_PROTOTYPE(dp_resp, dp_resp)

/*
 * Wake-ups for a consumer that has backed off (idle backoff, development
 * machines): the sleeper announces itself in @sleeping, checks its ring
 * once more, then blocks in ppoll() on @fd (an eventfd) with a timeout;
 * a producer that has just enqueued kicks it with one write() if, and only
 * if, it sleeps.  Both sides order their store before their load with a
 * full fence (Dekker), so a record is never left unseen for a whole sleep.
 * Cost to the producer when nobody sleeps: one fence and one load per
 * burst (~20 ns); a busy-polling appliance never sets @sleeping.
 */
struct dp_wake {
	int fd;			/* eventfd, -1 when not created */
	int sleeping;		/* atomic */
};

/* Producer: after a burst of enqueues. */
static inline void dp_wake_kick(struct dp_wake *w)
{
	static const uint64_t one = 1;

	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (__atomic_load_n(&w->sleeping, __ATOMIC_RELAXED) && w->fd >= 0) {
		__atomic_store_n(&w->sleeping, 0, __ATOMIC_RELAXED);
		if (write(w->fd, &one, sizeof(one)) < 0) {
			/* EAGAIN: the counter is already non-zero: awake. */
		}
	}
}

/* Consumer: announce the sleep; then check the ring before blocking. */
static inline void dp_wake_prepare(struct dp_wake *w)
{
	__atomic_store_n(&w->sleeping, 1, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

/* Consumer: after the sleep (woken or not). */
static inline void dp_wake_done(struct dp_wake *w, bool fd_readable)
{
	uint64_t n;

	__atomic_store_n(&w->sleeping, 0, __ATOMIC_RELAXED);
	if (fd_readable && read(w->fd, &n, sizeof(n)) < 0) {
		/* EAGAIN: someone else drained it; nothing to do. */
	}
}

struct dp_rings_config {
	unsigned slots;			/* request slots */
	unsigned prompt_tokens_max;	/* per slot */
	unsigned text_bytes_max;	/* per slot */
	unsigned resp_entries;		/* response ring, power of two */
};

struct dp_rings {
	struct ck_ring req;		/* dataplane produces, scheduler consumes */
	struct ck_ring resp;		/* scheduler produces, dataplane consumes */
	struct dp_req_msg *req_buf;
	struct dp_resp *resp_buf;
	struct dp_req_slot *slots;	/* (slots) */
	unsigned n_slots;
	uint32_t *free_stack;		/* dataplane only */
	unsigned n_free;
	void *arena;			/* prompt tokens and text of every slot */
	unsigned prompt_tokens_max;
	unsigned text_bytes_max;
	int engine_state;		/* enum proto_state, as STATUS reports it:
					   set by the scheduler, read by the
					   dataplane (atomic) */
	struct dp_wake wake_dp;		/* the dataplane, sleeping on responses */
	struct dp_wake wake_sched;	/* the scheduler, sleeping on requests */
};

/*
 * dp_rings_init() - allocate the slot pool and both rings, create the two
 * wake-up eventfds.
 * Memory: slots x (sizeof(dp_req_slot) + 4 x prompt_tokens_max +
 * text_bytes_max) + 2 x slots x 32 + resp_entries x 512 bytes.
 * Return: 0, -EINVAL (zero sizes, resp_entries not a power of two),
 * -ENOMEM, or eventfd()'s -errno.
 */
int dp_rings_init(struct dp_rings *r, const struct dp_rings_config *cfg);
void dp_rings_fini(struct dp_rings *r);

/* Dataplane side: take a free slot (NULL when none) and give one back. */
static inline struct dp_req_slot *dp_req_slot_get(struct dp_rings *r)
{
	if (unlikely(r->n_free == 0))
		return NULL;
	return &r->slots[r->free_stack[--r->n_free]];
}

static inline void dp_req_slot_put(struct dp_rings *r, uint32_t index)
{
	VERIFY(index < r->n_slots && r->n_free < r->n_slots);
	r->free_stack[r->n_free++] = index;
}

/* Dataplane: enqueue a request record.  Return: true, false when full. */
static inline bool dp_req_enqueue(struct dp_rings *r, const struct dp_req_msg *m)
{
	/* ck's typed enqueue takes a non-const entry: reserve, copy, commit
	 * (the same store fence before the producer index moves). */
	struct dp_req_msg *slot =
		ck_ring_enqueue_reserve_spsc_dp_req(&r->req, r->req_buf);

	if (unlikely(!slot))
		return false;
	*slot = *m;
	ck_ring_enqueue_commit_spsc(&r->req);
	return true;
}

/* Scheduler: dequeue one request record.  Return: true with *m filled. */
static inline bool dp_req_dequeue(struct dp_rings *r, struct dp_req_msg *m)
{
	return ck_ring_dequeue_spsc_dp_req(&r->req, r->req_buf, m);
}

/* Scheduler: reserve the next response record in place (NULL when full),
 * fill it, then dp_resp_commit().  Nothing else may be enqueued between. */
static inline struct dp_resp *dp_resp_reserve(struct dp_rings *r)
{
	return ck_ring_enqueue_reserve_spsc_dp_resp(&r->resp, r->resp_buf);
}

static inline void dp_resp_commit(struct dp_rings *r)
{
	ck_ring_enqueue_commit_spsc(&r->resp);
}

static inline bool dp_resp_enqueue(struct dp_rings *r, const struct dp_resp *m)
{
	struct dp_resp *slot = dp_resp_reserve(r);

	if (unlikely(!slot))
		return false;
	*slot = *m;
	dp_resp_commit(r);
	return true;
}

/* Dataplane: dequeue one response record (512-byte copy, ~10 ns). */
static inline bool dp_resp_dequeue(struct dp_rings *r, struct dp_resp *m)
{
	return ck_ring_dequeue_spsc_dp_resp(&r->resp, r->resp_buf, m);
}

/* Records waiting (either side may call; a snapshot). */
static inline bool dp_req_pending(const struct dp_rings *r)
{
	return ck_ring_size(&r->req) != 0;
}

static inline bool dp_resp_pending(const struct dp_rings *r)
{
	return ck_ring_size(&r->resp) != 0;
}

static inline unsigned dp_rings_slots_in_use(const struct dp_rings *r)
{
	return r->n_slots - __atomic_load_n(&r->n_free, __ATOMIC_RELAXED);
}

static inline void dp_rings_engine_state_set(struct dp_rings *r, int state)
{
	__atomic_store_n(&r->engine_state, state, __ATOMIC_RELEASE);
}

static inline int dp_rings_engine_state(const struct dp_rings *r)
{
	return __atomic_load_n(&r->engine_state, __ATOMIC_ACQUIRE);
}

#endif /* VELO_DP_RING_H */
