/* SPDX-License-Identifier: MIT */
/*
 * dataplane/session.h — the server side of velo sessions: the session
 * table, the LOGON handshake, per-datagram authentication and replay
 * window, sequencing and the per-session replay buffer (RETRANSMIT_REQUEST,
 * GAP_FILL), heartbeats and timeouts, credit, request-id deduplication,
 * fragment reassembly, and the hand-over of requests to the scheduler
 * through the rings (ring.h).
 *
 * Transport-neutral: datagrams come in through dp_sess_rx() (a buffer, its
 * length and the sender), go out through a struct dp_txq.  Single-threaded:
 * everything here runs on the dataplane thread.  The clock is injected
 * (dp_sess_clock()) so tests drive time.
 *
 * Receive path, cheapest check first (docs/velod.md):
 *   proto_pkt_parse -> session lookup (LOGON: key id) -> rate limit ->
 *   replay window check -> tag -> replay window update -> body parsing.
 * Nothing is allocated and nothing is sent before the tag passes.  Every
 * rejected datagram (or message, once the framing is sound) bumps exactly
 * one dp.drop_<reason> counter.
 *
 * Memory, all allocated by dp_sess_init():
 *   sessions_max x (sizeof(struct dp_sess)            session state
 *                   + replay_depth x (mtu + 16)       replay buffer
 *                   + dedup_ids x 32 + 264)           request ids
 *   + frag_buffers x (frag_bytes + 64)                reassembly
 *   + nonce_cache x 32 + DP_LOGON_ADDRS x 16          logon replay, rate
 */
#ifndef VELO_DP_SESSION_H
#define VELO_DP_SESSION_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <velo/auth.h>
#include <velo/codec.h>
#include <velo/proto.h>

#include "../tools/lib/counters.h"
#include "ring.h"
#include "sock.h"

/* Datagram-level counters, block "dp": each rejected datagram bumps one
 * drop_* named after foreach_proto_drop (codec.h). */
#define foreach_dp_counter(X)                                                 \
	X(rx_datagrams, "datagrams received")                                 \
	X(rx_bytes, "bytes received")                                         \
	X(tx_datagrams, "datagrams sent")                                     \
	X(tx_bytes, "bytes sent")                                             \
	X(tx_dropped, "datagrams not sent: socket buffer full or send error") \
	X(rx_errors, "recvmmsg errors")                                       \
	X(polls, "poll loop iterations")                                      \
	X(idle_sleeps, "idle backoff waits")                                  \
	X(rx_bursts, "non-empty receive bursts")

/* Session events, block "sess". */
#define foreach_sess_counter(X)                                               \
	X(opened, "sessions opened (LOGON_ACK sent)")                         \
	X(closed, "sessions closed by LOGOUT or end of session")              \
	X(timed_out, "sessions closed after the timeout")                     \
	X(closed_shutdown, "sessions closed at shutdown")                     \
	X(logon_ok, "logons accepted")                                        \
	X(logon_rejected, "LOGON_REJECT sent (authenticated logon refused)")  \
	X(nonce_cache_full, "logons refused: nonce cache full of fresh entries") \
	X(peer_moved, "authenticated datagram from a new address (roaming)")  \
	X(hb_rx, "heartbeats received")                                       \
	X(hb_tx, "heartbeats sent")                                           \
	X(end_tx, "end-of-session datagrams sent")                            \
	X(test_requests, "TEST_REQUEST answered")                             \
	X(status_requests, "STATUS_REQUEST answered")                         \
	X(logout_rx, "LOGOUT or end of session received")                     \
	X(retrans_requests, "RETRANSMIT_REQUEST received")                    \
	X(retrans_datagrams, "datagrams retransmitted")                       \
	X(retrans_future, "retransmit requests for seqs not sent yet")        \
	X(gap_fills, "GAP_FILL sent")                                         \
	X(gap_fill_msgs, "messages reported gone by GAP_FILL")                \
	X(tx_data_datagrams, "data datagrams sent (first transmissions)")     \
	X(tx_ctrl_datagrams, "control datagrams sent")                        \
	X(tx_msgs, "sequenced messages sent")                                 \
	X(tx_msg_too_large, "messages larger than the session MTU (dropped)") \
	X(infer_rx, "INFER received")                                         \
	X(infer_to_engine, "INFER handed to the scheduler")                   \
	X(infer_dup_resent, "retried INFER answered again")                   \
	X(infer_dup_pending, "retried INFER still waiting for its answer")    \
	X(accept_tx, "ACCEPT sent")                                           \
	X(tokens_tx, "TOKENS sent")                                           \
	X(done_tx, "DONE sent")                                               \
	X(error_tx, "ERROR sent")                                             \
	X(reject_invalid, "REJECT INVALID sent")                              \
	X(reject_invalid_param, "REJECT INVALID_PARAM sent")                  \
	X(reject_unknown_model, "REJECT UNKNOWN_MODEL sent")                  \
	X(reject_overloaded, "REJECT OVERLOADED sent")                        \
	X(reject_deadline, "REJECT DEADLINE sent")                            \
	X(reject_not_ready, "REJECT NOT_READY sent")                          \
	X(reject_internal, "REJECT INTERNAL sent")                            \
	X(reject_duplicate, "REJECT DUPLICATE sent")                          \
	X(reject_too_large, "REJECT TOO_LARGE sent")                          \
	X(reject_auth, "REJECT AUTH sent")                                    \
	X(reject_shutting_down, "REJECT SHUTTING_DOWN sent")                  \
	X(reject_other, "REJECT with another code sent")                      \
	X(cancel_rx, "CANCEL received")                                       \
	X(cancel_to_engine, "CANCEL handed to the scheduler")                 \
	X(cancel_ack_tx, "CANCEL_ACK sent")                                   \
	X(frag_rx, "FRAGMENT pieces received")                                \
	X(frag_started, "reassemblies started")                               \
	X(frag_completed, "reassemblies completed")                           \
	X(frag_timed_out, "reassemblies abandoned after the timeout")         \
	X(frag_dup, "duplicate pieces ignored")                               \
	X(resp_rx, "records from the response ring")                          \
	X(resp_stale, "responses for a session that has gone")                \
	X(resp_bad_logprobs, "TOKENS records whose logprobs do not fit (sent without)") \
	X(req_slots_exhausted, "INFER refused: no request slot free")

enum dp_ctr {
#define X(name, help) DP_CTR_##name,
	foreach_dp_counter(X)
#undef X
#define X(name, help) DP_CTR_drop_##name,
	foreach_proto_drop(X)
#undef X
	DP_CTR__COUNT
};

enum sess_ctr {
#define X(name, help) SESS_CTR_##name,
	foreach_sess_counter(X)
#undef X
	SESS_CTR__COUNT
};

/* Runtime configuration (defaults from Kconfig: dp_sess_config_default). */
struct dp_sess_config {
	unsigned sessions_max;
	unsigned mtu;			/* server's largest datagram */
	unsigned replay_depth;		/* datagrams per session */
	unsigned heartbeat_ms;		/* when the client asks for 0 */
	unsigned heartbeat_min_ms;
	unsigned heartbeat_max_ms;
	unsigned timeout_ms;
	unsigned logon_window_ms;
	unsigned nonce_cache;
	unsigned credit_requests;
	unsigned credit_tokens;
	unsigned dedup_ids;
	unsigned rate_pps;		/* per session, 0 off */
	unsigned rate_burst;
	unsigned logon_rate_pps;	/* per source address, 0 off */
	unsigned logon_rate_burst;
	unsigned frag_buffers;
	unsigned frag_bytes;
	unsigned frag_timeout_ms;
	struct proto_limits limits;	/* INFER decoding */
};

void dp_sess_config_default(struct dp_sess_config *c);
/* Return: 0, or -EINVAL with the reason in @err. */
int dp_sess_config_check(const struct dp_sess_config *c, char *err,
			 size_t errlen);

enum dp_sess_state { DP_SESS_FREE = 0, DP_SESS_ACTIVE = 1 };

/* One datagram in the replay buffer. */
struct dp_replay_ent {
	uint64_t first_seq;
	uint16_t count;		/* messages */
	uint16_t len;		/* datagram bytes, tag included; 0 while open */
	uint32_t reserved;
};

enum dp_dedup_state {
	DP_DEDUP_FREE = 0,
	DP_DEDUP_INFLIGHT = 1,	/* with the scheduler */
	DP_DEDUP_DONE = 2,	/* final answer sent */
};

struct dp_dedup_ent {
	uint64_t request_id;
	uint64_t answer_seq;	/* seq of ACCEPT or REJECT, when answered */
	uint32_t req_slot;	/* while in flight */
	uint32_t cost_tokens;
	uint8_t state;		/* enum dp_dedup_state */
	uint8_t answered;	/* 0 none, PROTO_T_ACCEPT or PROTO_T_REJECT */
	uint16_t code;		/* REJECT code */
	uint8_t cancel_sent;
	uint8_t reserved[3];
};

struct dp_sess {
	uint64_t id;			/* 0: free; low 16 bits: the slot */
	uint32_t gen;			/* bumped when the slot is freed */
	uint16_t slot;
	uint8_t state;			/* enum dp_sess_state */
	uint8_t suite;			/* enum velo_suite */
	uint32_t key_id;
	uint16_t mtu;			/* negotiated */
	uint16_t reserved;
	struct dp_addr peer;
	struct velo_session_keys keys;
	struct velo_replay rx_win;	/* client packet numbers */
	uint64_t tx_pkt_num;		/* next packet number to send */
	uint64_t tx_seq;		/* next data seq to assign */
	uint64_t rx_seq_next;		/* client seq we expect next (our ack) */
	uint64_t peer_ack;		/* client's ack of our seqs */
	uint64_t opened_ns, last_rx_ns, last_tx_ns;
	uint64_t hb_ns, timeout_ns;
	uint32_t heartbeat_ms;
	/* credit in use */
	uint32_t inflight_reqs;
	uint64_t inflight_tokens;
	/* rate limit (GCRA: theoretical arrival time) */
	uint64_t rl_tat;
	/* request ids: recent ones with their answers, direct-mapped by id
	 * (dedup_mask + 1 entries), and a window of the ids ever seen */
	struct dp_dedup_ent *dedup;
	struct velo_replay req_win;	/* over request_id + 1 */
	/* replay buffer: ring of replay_depth datagrams */
	struct dp_replay_ent *rb;
	uint8_t *rb_data;		/* (replay_depth, rb_stride) */
	unsigned rb_head;		/* next entry to fill */
	unsigned rb_used;		/* entries holding sent datagrams */
	/* the data datagram being filled (in the replay slot rb_head) */
	struct proto_enc enc;
	bool open;
	bool dirty;			/* on the flush list */
	/* statistics for `sessions` */
	uint64_t rx_datagrams, tx_datagrams;
	char client_name[48];
};

/* A reassembly buffer. */
struct dp_frag_buf {
	bool used;
	uint16_t sess_slot;
	uint32_t sess_gen;
	uint32_t frag_id;
	uint32_t total_length;
	uint32_t bytes;			/* sum of distinct pieces' lengths */
	int32_t end_index;		/* -1 until the END piece came */
	uint64_t started_ns, last_ns;
	uint64_t got[256 / 64];		/* pieces seen, by index */
	uint8_t *data;			/* (frag_bytes) */
};

struct dp_nonce_ent {
	uint8_t nonce[PROTO_NONCE_LEN];
	uint64_t seen_ns;
};

#define DP_LOGON_ADDRS 256
#define DP_FRAG_PIECES_MAX 256

struct dp_sess_table {
	struct dp_sess_config cfg;
	struct dp_sess *sess;		/* (sessions_max) */
	unsigned n_active;
	uint16_t *free_slots;		/* stack of free session slots */
	unsigned n_free_slots;
	uint8_t *rb_data;		/* all replay buffers */
	unsigned rb_stride;		/* mtu rounded up to 64 */
	struct dp_replay_ent *rb_ents;
	struct dp_dedup_ent *dedup_ents;
	unsigned dedup_mask;		/* dedup_ids rounded up to 2^n, - 1 */
	uint16_t *dirty;		/* sessions with an open datagram */
	unsigned n_dirty;
	struct dp_frag_buf *frags;	/* (frag_buffers) */
	uint8_t *frag_data;
	unsigned frags_used;
	struct dp_nonce_ent *nonces;	/* FIFO (nonce_cache) */
	unsigned nonce_head, nonce_used;
	/* Several tables (one per dataplane loop): the LOGON nonce cache of
	 * nonce_tab (the first table) serves them all, under nonce_lock, so
	 * a LOGON replayed from another source port (another loop) is still
	 * refused.  NULL lock: this table's own cache, no locking. */
	struct dp_sess_table *nonce_tab;
	pthread_spinlock_t *nonce_lock;
	uint64_t *logon_tat;		/* (DP_LOGON_ADDRS) GCRA per address hash */
	const struct velo_psk *keys;	/* not owned */
	unsigned n_keys;
	struct velo_session_keys *logon_keys; /* (n_keys), derived at init */
	unsigned suites_local;
	struct dp_rings *rings;		/* not owned */
	struct dp_txq *txq;		/* not owned */
	uint64_t now_ns;		/* monotonic, set by dp_sess_clock */
	uint64_t real_ns;		/* wall clock */
	uint64_t tick_last_ns;
	unsigned tick_cursor;
	uint64_t rl_interval_ns, rl_tau_ns;
	uint64_t logon_interval_ns, logon_tau_ns;
	bool kick_engine;		/* records were enqueued for the scheduler */
	/* counters (owned by the dataplane thread) */
	uint64_t dp_ctr[DP_CTR__COUNT];
	uint64_t ctr[SESS_CTR__COUNT];
	bool registered;
};

/*
 * dp_sess_init() - allocate the table and its pools.
 * @keys:  the pre-shared keys (kept by pointer: must outlive the table).
 * @rings: the scheduler rings (kept by pointer).
 * @txq:   where datagrams to send are queued (kept by pointer).
 * @register_counters: add the "dp" and "sess" counter blocks to the registry.
 * Return: 0, -EINVAL (bad config), -ENOMEM, -ENOSPC (counter registry full).
 */
int dp_sess_init(struct dp_sess_table *t, const struct dp_sess_config *cfg,
		 const struct velo_psk *keys, unsigned n_keys,
		 struct dp_rings *rings, struct dp_txq *txq,
		 bool register_counters);
void dp_sess_fini(struct dp_sess_table *t);

/* Set the clocks used until the next call (once per poll iteration). */
static inline void dp_sess_clock(struct dp_sess_table *t, uint64_t mono_ns,
				 uint64_t real_ns)
{
	t->now_ns = mono_ns;
	t->real_ns = real_ns;
}

/*
 * dp_sess_rx() - process one received datagram (@buf 8-byte aligned, may
 * be modified: it is the rx buffer).  Counts it (rx_datagrams) and every
 * rejection; queues any answer on the txq.
 */
void dp_sess_rx(struct dp_sess_table *t, const uint8_t *buf, size_t len,
		const struct dp_addr *from);

/*
 * dp_sess_resp_poll() - take up to @max records from the response ring and
 * send them.  Return: records taken.
 */
unsigned dp_sess_resp_poll(struct dp_sess_table *t, unsigned max);

/* Close every open data datagram (seal, keep in the replay buffer, queue
 * for sending).  Call after each burst, before flushing the txq. */
void dp_sess_flush(struct dp_sess_table *t);

/* Timers: heartbeats, session timeouts, reassembly timeouts.  Cheap when
 * called often (does its scan at most every millisecond, bounded slots). */
void dp_sess_tick(struct dp_sess_table *t);

/* Close every session (end-of-session datagram to each), for shutdown. */
void dp_sess_close_all(struct dp_sess_table *t);

/*
 * dp_sess_nonces_share() - make @t use @owner's LOGON nonce cache under
 * @lock (several dataplane loops, one table each; @owner may be @t).
 * Logons are rare: a spinlock held for one scan of the cache (nonce_cache
 * entries, ~1 us for 1024) costs nothing on the datagram path.  Call
 * before the tables receive anything.
 */
void dp_sess_nonces_share(struct dp_sess_table *t, struct dp_sess_table *owner,
			  pthread_spinlock_t *lock);

/* Lookups for the control socket and tests (racy reads from other threads
 * are fine for display). */
struct dp_sess *dp_sess_lookup(struct dp_sess_table *t, uint64_t session_id);
unsigned dp_sess_frags_used(const struct dp_sess_table *t);

extern const struct ctr_desc dp_ctr_desc[DP_CTR__COUNT];
extern const struct ctr_desc sess_ctr_desc[SESS_CTR__COUNT];

#endif /* VELO_DP_SESSION_H */
