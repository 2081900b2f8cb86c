/* SPDX-License-Identifier: MIT */
/*
 * velo/client.h — the velo client library for integrators (libvelo.a).
 *
 * A struct velo_client is one authenticated session with one velod over
 * UDP.  It owns a non-blocking socket, logs on with a pre-shared key, keeps
 * the server's sequence numbers, repairs gaps (RETRANSMIT_REQUEST, GAP_FILL),
 * sends heartbeats, measures round trips (TEST_REQUEST), sends INFER (split
 * into FRAGMENTs when the request does not fit one datagram) and CANCEL, and
 * retries both with the same request id until the server answers.  Server
 * messages are delivered as events, in sequence order, exactly once: a
 * message repeated by a retransmission, or a second answer to a retried
 * INFER, is dropped and counted.
 *
 * Threading: a session is used by one thread at a time (no locks inside).
 * Different sessions are independent.
 *
 * Memory: everything is allocated by velo_client_create(), sized by the
 * configuration (requests in flight, out-of-order messages held, largest
 * request); nothing is allocated afterwards.
 *
 * Integration in an event loop:
 *
 *   struct velo_client *c = velo_client_create(&cfg);
 *   velo_client_logon_start(c);
 *   loop:
 *     poll({velo_client_fd(c), POLLIN}, velo_client_timeout_ms(c));
 *     velo_client_poll(c);                  I/O and timers, never blocks
 *     while (velo_client_event_next(c, &ev) == 1) handle(&ev);
 *
 * or set cfg.on_event and velo_client_poll() calls it for every event.
 * Simple programs use the blocking helpers velo_client_logon() and
 * velo_client_wait().
 *
 * Functions return 0 (or a count) on success and a negative errno value on
 * failure, as listed with each; constructors return NULL and set errno.
 */
#ifndef VELO_CLIENT_H
#define VELO_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <velo/auth.h>
#include <velo/codec.h>
#include <velo/proto.h>

#ifdef __cplusplus
extern "C" {
#endif

struct velo_client;

/* ------------------------------------------------------------------------
 * Events.
 */

enum velo_client_ev_type {
	/* Sequenced server messages, in sequence order, each exactly once. */
	VELO_CLIENT_EV_ACCEPT = 1,	/* ev.u.accept */
	VELO_CLIENT_EV_REJECT,		/* ev.u.reject: final for the request */
	VELO_CLIENT_EV_TOKENS,		/* ev.u.tokens */
	VELO_CLIENT_EV_DONE,		/* ev.u.done: final for the request */
	VELO_CLIENT_EV_ERROR,		/* ev.u.error: final for the request */
	VELO_CLIENT_EV_CANCEL_ACK,	/* ev.u.cancel_ack */
	VELO_CLIENT_EV_STATUS,		/* ev.u.status */
	VELO_CLIENT_EV_GAP,		/* ev.u.gap: the server's GAP_FILL:
					   messages lost for good */
	/* Control and local events (not sequenced, delivered first). */
	VELO_CLIENT_EV_LOGON,		/* ev.u.logon: session up */
	VELO_CLIENT_EV_LOGON_FAILED,	/* ev.u.closed: refused or timed out */
	VELO_CLIENT_EV_TEST_RESPONSE,	/* ev.u.test: a round trip */
	VELO_CLIENT_EV_TIMEOUT,		/* request_id: INFER or CANCEL unanswered
					   after retries_max tries; final */
	VELO_CLIENT_EV_CLOSED,		/* ev.u.closed: LOGOUT from the server or
					   session timeout; every request left in
					   flight is abandoned */
};

/*
 * One event.  Pointers (text, token ids) point into the session's buffers
 * and stay valid until the next call of velo_client_event_next(),
 * velo_client_poll() or velo_client_wait() on the same session (for
 * on_event: until the callback returns).  Text is not NUL-terminated.
 */
struct velo_client_event {
	enum velo_client_ev_type type;
	uint64_t request_id;	/* 0 for session events */
	uint64_t seq;		/* server sequence number; 0 if not sequenced */
	uint64_t rx_ns;		/* CLOCK_MONOTONIC of the datagram's receipt */
	uint64_t sent_ns;	/* CLOCK_MONOTONIC of the request's first
				   transmission (INFER / CANCEL / TEST_REQUEST),
				   0 if unknown; rx_ns - sent_ns is the latency */
	union {
		struct proto_accept accept;
		struct proto_reject_view reject;
		struct proto_tokens_view tokens;
		struct proto_done_view done;
		struct proto_error_view error;
		struct proto_cancel_ack cancel_ack;
		struct proto_status status;
		struct proto_gap_fill gap;
		struct proto_logon_ack logon;
		struct proto_test_response test;
		struct {
			int err;	/* -errno: -ETIMEDOUT, -EACCES (AUTH),
					   -ECONNREFUSED (nothing listens),
					   -ECONNRESET (LOGOUT) ... */
			uint16_t code;	/* enum proto_err from the server, or 0 */
			struct proto_str text;
		} closed;
	} u;
};

typedef void velo_client_event_cb(void *arg, const struct velo_client_event *ev);

/* ------------------------------------------------------------------------
 * Configuration.
 */

/*
 * Seeded loss injection, for tests (as Aeron's debug channels): each
 * datagram is dropped with the given probability, in parts per million,
 * drawn from a generator seeded with @seed, separately on receive and
 * transmit and for data (sequenced) and control datagrams.  All zero: off,
 * and the send and receive paths carry no test.
 */
struct velo_client_loss {
	uint64_t seed;
	uint32_t rx_data_ppm;
	uint32_t rx_ctrl_ppm;
	uint32_t tx_data_ppm;
	uint32_t tx_ctrl_ppm;
};

/* Directions for the tap. */
#define VELO_CLIENT_TAP_TX 1
#define VELO_CLIENT_TAP_RX 2

/*
 * Tap: called with every datagram the session sends (after sealing, before
 * loss injection) and receives (before any check).  For tests and tracing;
 * NULL in production.
 */
typedef void velo_client_tap_cb(void *arg, int dir, const void *dgram,
				size_t len);

struct velo_client_config {
	const char *server;	/* "host:port" ("127.0.0.1:7400", "[::1]:7400",
				   "name:port"); required */
	struct velo_psk psk;	/* the key (velo_keyfile_load()) */
	const char *client_name;/* sent in LOGON, <= 64 bytes; NULL: "" */
	unsigned suites;	/* PROTO_LOGON_SUITE_* offered; 0: every suite
				   this CPU runs */
	uint32_t heartbeat_ms;	/* requested interval; 0: 1000 */
	uint16_t mtu;		/* largest datagram accepted; 0: 1408 */

	/* Budgets (each 0: the default in brackets). */
	uint32_t requests_max;	/* requests in flight at once [64] */
	uint32_t request_bytes_max; /* largest encoded INFER, prompt included;
				   larger ones are refused [65480, also
				   the most: a message length is 16 bits] */
	uint32_t reorder_msgs;	/* server messages held while a gap is
				   repaired or the application lags [256] */
	uint32_t ctrl_events_max; /* control events queued for
				   velo_client_event_next() [64] */
	uint32_t dedup_window;	/* request ids may run at most this far
				   ahead of the oldest unanswered INFER
				   (velod remembers sessions.dedup_ids ids
				   for resends; more: REJECT DUPLICATE)
				   [the request credit from LOGON_ACK, which
				   velod guarantees is below dedup_ids] */

	/* Timers (each 0: the default in brackets). */
	uint32_t logon_timeout_ms;	/* whole logon, retries included [2000] */
	uint32_t retry_ms;	/* INFER, CANCEL, LOGON unanswered: resend [100] */
	uint32_t retries_max;	/* sends of one INFER or CANCEL at most [20] */
	uint32_t retransmit_ms;	/* a gap still open: ask again [20] */

	struct velo_client_loss loss;
	velo_client_tap_cb *tap;
	void *tap_arg;

	/* NULL: events are queued for velo_client_event_next(). */
	velo_client_event_cb *on_event;
	void *on_event_arg;
};

/* ------------------------------------------------------------------------
 * Session.
 */

/*
 * velo_client_create() - allocate a session and its socket (not logged on).
 * @cfg: configuration; copied (strings included), need not outlive the call.
 * Return: the session, or NULL with errno: EINVAL (bad configuration or
 * server address), ENOMEM, EIO (libsodium), or the socket's errno.
 */
struct velo_client *velo_client_create(const struct velo_client_config *cfg);

/* velo_client_destroy() - close the socket and free everything.  Sends
 * LOGOUT first when the session is up.  NULL is a no-op. */
void velo_client_destroy(struct velo_client *c);

/* velo_client_fd() - the socket, for poll/epoll (readable: call
 * velo_client_poll()).  Owned by the session: do not read or close it. */
int velo_client_fd(const struct velo_client *c);

/*
 * velo_client_timeout_ms() - milliseconds until a timer of the session
 * (retry, heartbeat, retransmit, logon, session timeout) needs
 * velo_client_poll(), for the poll timeout of an event loop.
 * Return: 0 .. 1000 (never longer, so a caller notices a stuck server),
 * or 0 when events are ready.
 */
int velo_client_timeout_ms(const struct velo_client *c);

/*
 * velo_client_logon_start() - send LOGON; the answer arrives as a
 * VELO_CLIENT_EV_LOGON or VELO_CLIENT_EV_LOGON_FAILED event.  LOGON is
 * resent every retry_ms until logon_timeout_ms.
 * Return: 0, -EISCONN (already logged on or logging on), or the send's
 * -errno.
 */
int velo_client_logon_start(struct velo_client *c);

/*
 * velo_client_logon() - log on and wait for the answer (blocking helper).
 * @timeout_ms: overall wait, < 0 for the configured logon_timeout_ms.
 * Return: 0, -ETIMEDOUT, -EACCES (refused: bad key), -ECONNREFUSED (no
 * server on that port), -EPROTO (refused for another reason; the code is
 * in velo_client_last_reject()), or another -errno.
 */
int velo_client_logon(struct velo_client *c, int timeout_ms);

/* velo_client_is_up() - true once LOGON_ACK arrived, until the session
 * closes. */
bool velo_client_is_up(const struct velo_client *c);

/* The server's code and text of the last LOGON_REJECT or LOGOUT
 * (0 / "" if none). */
unsigned velo_client_last_reject(const struct velo_client *c,
				 const char **text);

/* Negotiated parameters (valid once up). */
const struct proto_logon_ack *velo_client_params(const struct velo_client *c);

/*
 * velo_client_logout() - send LOGOUT and close the session (no more
 * events).  Return: 0 or -ENOTCONN.
 */
int velo_client_logout(struct velo_client *c);

/*
 * velo_client_poll() - receive what the socket holds (in batches), run the
 * timers (resends, heartbeats, gap repair, session timeout), and, with an
 * on_event callback, deliver every ready event.  Never blocks.
 * Return: number of events made ready (or delivered), or -errno of a
 * socket failure the session cannot survive.
 */
int velo_client_poll(struct velo_client *c);

/*
 * velo_client_wait() - block until the socket is readable or a timer is
 * due, at most @timeout_ms (< 0: until something happens), then
 * velo_client_poll().
 * Return: as velo_client_poll(); 0 on timeout.
 */
int velo_client_wait(struct velo_client *c, int timeout_ms);

/*
 * velo_client_event_next() - take the next ready event (control events
 * first, then server messages in sequence order).
 * Return: 1 with @ev filled, 0 when none is ready.
 */
int velo_client_event_next(struct velo_client *c, struct velo_client_event *ev);

/* ------------------------------------------------------------------------
 * Requests.
 */

/*
 * INFER parameters: proto_infer_req from velo/codec.h.  f.request_id 0 lets
 * the library choose (the next of an increasing sequence, starting from
 * the wall clock in microseconds so that ids keep increasing across client
 * restarts); a caller-chosen id must be larger than every earlier one.
 */

/*
 * velo_client_infer() - send an INFER and track it until its final event
 * (REJECT, DONE, ERROR, or a local TIMEOUT).  Resent with the same request
 * id every retry_ms until ACCEPT or REJECT arrives, retries_max times.  A
 * request larger than one datagram goes as FRAGMENTs.  A send that fails
 * (socket buffer full ...) is counted in tx_errors and repaired by the
 * resend like a lost datagram.
 * @req:        the request; copied (encoded) before the call returns.
 * @request_id: set to the id used (may be NULL).
 * Return: 0 (the request is tracked: exactly one final event will come),
 * or, with nothing sent: -ENOTCONN (not logged on), -ENOBUFS
 * (requests_max in flight), -EBUSY (an older request is still unanswered
 * and this id would run dedup_window or more ahead of it: past what the
 * server remembers for resends; retry once answers came), -EMSGSIZE
 * (encoded request over request_bytes_max or the fragment limit), -EINVAL
 * (request id not increasing, or already in flight).
 */
int velo_client_infer(struct velo_client *c, const struct proto_infer_req *req,
		      uint64_t *request_id);

/*
 * velo_client_cancel() - send CANCEL for a request in flight; resent until
 * CANCEL_ACK arrives (retry_ms, retries_max).
 * Return: 0, -ENOTCONN, -ENOENT (no such request in flight), -EALREADY (a
 * cancel is already under way), or the send's -errno.
 */
int velo_client_cancel(struct velo_client *c, uint64_t request_id);

/*
 * velo_client_test_request() - send a TEST_REQUEST; its TEST_RESPONSE comes
 * as VELO_CLIENT_EV_TEST_RESPONSE with sent_ns and rx_ns (the round trip).
 * Not retried: a lost one is simply never answered.
 * @correlation_id: set to the id used (may be NULL).
 * Return: 0, -ENOTCONN, or the send's -errno.
 */
int velo_client_test_request(struct velo_client *c, uint64_t *correlation_id);

/*
 * velo_client_status_request() - ask for STATUS (arrives as an event).
 * Return: 0, -ENOTCONN, or the send's -errno.
 */
int velo_client_status_request(struct velo_client *c);

/* Requests in flight now (sent, final event not yet delivered). */
unsigned velo_client_in_flight(const struct velo_client *c);

/* ------------------------------------------------------------------------
 * Counters of the session (plain reads; the session's thread writes them).
 */
#define foreach_velo_client_counter(X)                                        \
	X(tx_datagrams, "datagrams sent")                                     \
	X(tx_bytes, "bytes sent")                                             \
	X(rx_datagrams, "datagrams received")                                 \
	X(rx_bytes, "bytes received")                                         \
	X(tx_errors, "sends the kernel refused: counted as lost")             \
	X(rx_drop_parse, "received datagrams with bad framing")               \
	X(rx_drop_session, "received datagrams of another session or state")  \
	X(rx_drop_tag, "received datagrams whose tag did not verify")         \
	X(rx_drop_replay, "received datagrams replayed or too old")           \
	X(rx_drop_msg, "received messages that did not decode")               \
	X(rx_dup_msgs, "sequenced messages received twice (retransmits)")     \
	X(rx_reorder_full, "messages dropped: beyond the reorder window")     \
	X(rx_unknown_template, "messages of an unknown template (skipped)")   \
	X(rx_stale_events, "events for a request not in flight (dropped)")    \
	X(rx_dup_answers, "second ACCEPT/REJECT for one request (dropped)")   \
	X(gaps, "gaps detected in the server sequence")                       \
	X(retransmit_requests, "RETRANSMIT_REQUESTs sent")                    \
	X(gap_fills, "GAP_FILLs received")                                    \
	X(gap_fill_msgs, "messages skipped by GAP_FILL")                      \
	X(infer_sent, "INFER requests started")                               \
	X(infer_retries, "INFER resends")                                     \
	X(fragments_sent, "FRAGMENT datagrams sent")                          \
	X(cancel_sent, "CANCEL requests started")                             \
	X(cancel_retries, "CANCEL resends")                                   \
	X(request_timeouts, "requests given up after retries_max")            \
	X(heartbeats_sent, "heartbeats sent")                                 \
	X(heartbeats_rx, "heartbeats received")                               \
	X(test_requests, "TEST_REQUESTs sent")                                \
	X(logon_sent, "LOGON datagrams sent")                                 \
	X(ctrl_events_dropped, "control events lost: queue full")             \
	X(loss_rx, "received datagrams dropped by loss injection")            \
	X(loss_tx, "datagrams not sent: loss injection")

enum velo_client_counter {
#define X(name, help) VELO_CLIENT_CTR_##name,
	foreach_velo_client_counter(X)
#undef X
	VELO_CLIENT_CTR__COUNT
};

/* The session's counters: VELO_CLIENT_CTR__COUNT values. */
const uint64_t *velo_client_counters(const struct velo_client *c);
/* Name of counter @i ("rx_dup_msgs"), or NULL. */
const char *velo_client_counter_name(unsigned i);

/* ------------------------------------------------------------------------
 * Helpers for programs.
 */

/*
 * velo_client_key_path() - the key file a program should use when none is
 * given: $VELO_KEY if set, else ./velo.key if it exists, else
 * VELO_CLIENT_KEY_DEFAULT (where `make run` writes its key).
 */
#define VELO_CLIENT_KEY_DEFAULT "build/velo.key"
const char *velo_client_key_path(void);

/* Default server address (velod's default port on loopback). */
#define VELO_CLIENT_SERVER_DEFAULT "127.0.0.1:7400"

#ifdef __cplusplus
}
#endif

#endif /* VELO_CLIENT_H */
