/* SPDX-License-Identifier: MIT */
/*
 * velo/proto.h — the velo wire protocol: datagram and message layouts.
 *
 * docs/protocol.md is the specification; this header is its machine-readable
 * half and must agree with it field for field.  Public: integrators include it
 * (with velo/client.h) and so do velod and the tools.
 *
 * EVERYTHING ON THE WIRE IS LITTLE-ENDIAN.  (ITCH, MoldUDP64 and SoupBinTCP
 * are big-endian; velo is not.)  The structs below are the exact wire layout
 * on a little-endian host, naturally aligned, with explicit padding, and every
 * size and offset is checked by _Static_assert.
 *
 * Datagram:
 *   struct proto_pkt_hdr (48 bytes)
 *   msg_count messages, each 8-byte aligned:
 *     struct proto_msg_hdr (8 bytes) | root block | groups | var data | pad
 *   16-byte authentication tag (when PROTO_F_AUTH; every datagram of a
 *   session, LOGON included, carries one)
 */
#ifndef VELO_PROTO_H
#define VELO_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define PROTO_MAGIC	0x4f4c4556u	/* "VELO" as bytes on the wire */
#define PROTO_VERSION	1
#define PROTO_SCHEMA_ID	1		/* the schema of every template below */
#define PROTO_SCHEMA_VERSION 1

#define PROTO_TAG_LEN	16
#define PROTO_MTU_DEFAULT 1408		/* datagram payload bytes, as Aeron */
#define PROTO_MTU_MIN	512
#define PROTO_MTU_MAX	8960		/* jumbo frames, by negotiation */
#define PROTO_ALIGN	8

/* msg_count values with a meaning of their own (MoldUDP64). */
#define PROTO_COUNT_HEARTBEAT	0
#define PROTO_COUNT_END		0xffff	/* end of session */
#define PROTO_COUNT_MAX		0xfffe

/* Packet header flags. */
#define PROTO_F_S2C	0x01	/* server to client (else client to server) */
#define PROTO_F_AUTH	0x02	/* a 16-byte tag ends the datagram */
#define PROTO_F_CTRL	0x04	/* control messages: not sequenced, not replayed */
#define PROTO_F_RETRANS	0x08	/* a replay of messages sent before */
#define PROTO_F_KNOWN	0x0f	/* any other bit set: rejected (bad flags) */

/*
 * Packet header.  seq: for data datagrams the sequence number of the first
 * message (messages are numbered seq, seq+1, ...); for control datagrams and
 * heartbeats, the next sequence number the sender will use.  ack: the next
 * sequence number the sender expects from its peer (cumulative).  pkt_num:
 * per session and direction, strictly increasing for every datagram sent
 * (retransmissions included); the AEAD nonce and the replay window use it.
 * session_id is 0 only in LOGON.
 */
struct proto_pkt_hdr {
	uint32_t magic;
	uint8_t version;
	uint8_t flags;
	uint16_t msg_count;
	uint16_t length;	/* whole datagram, header and tag included */
	uint16_t reserved0;	/* sent as 0, ignored */
	uint32_t reserved1;	/* sent as 0, ignored */
	uint64_t session_id;
	uint64_t seq;
	uint64_t ack;
	uint64_t pkt_num;
};
_Static_assert(sizeof(struct proto_pkt_hdr) == 48, "packet header");
_Static_assert(offsetof(struct proto_pkt_hdr, session_id) == 16, "session_id");
_Static_assert(offsetof(struct proto_pkt_hdr, pkt_num) == 40, "pkt_num");

/*
 * Message header, SBE style with a length in front so that any message,
 * known or not, can be skipped.  length: the whole message, header, root
 * block, groups, var data and padding to 8 bytes.  block_length: the root
 * block's size as the sender wrote it: a newer sender appends fields (the
 * receiver reads the prefix it knows), an older one sends fewer (the
 * receiver takes the missing ones as 0).
 */
struct proto_msg_hdr {
	uint16_t length;
	uint16_t block_length;
	uint16_t template_id;
	uint8_t schema_id;
	uint8_t version;
};
_Static_assert(sizeof(struct proto_msg_hdr) == 8, "message header");

/* Repeating group header (SBE groupSizeEncoding); entries follow. */
struct proto_group_hdr {
	uint16_t block_length;	/* bytes per entry */
	uint16_t num_in_group;
};
_Static_assert(sizeof(struct proto_group_hdr) == 4, "group header");

/* Var data: uint16 length, then that many bytes (UTF-8 for text). */
struct proto_var_hdr {
	uint16_t length;
};

/* Templates.  1..15 session control, 16..31 client requests, 32..63 server
 * messages.  A breaking change takes a new id; ids are never reused. */
#define foreach_proto_template(X)                                             \
	X(LOGON, 1, "client opens a session")                                 \
	X(LOGON_ACK, 2, "server accepts: session id, parameters, credit")     \
	X(LOGON_REJECT, 3, "server refuses an authenticated logon")           \
	X(LOGOUT, 4, "either side closes the session")                        \
	X(TEST_REQUEST, 5, "echo request (round trip time)")                  \
	X(TEST_RESPONSE, 6, "echo answer")                                    \
	X(RETRANSMIT_REQUEST, 7, "client asks for a range of sequence numbers") \
	X(GAP_FILL, 8, "server: the range is no longer available")           \
	X(FRAGMENT, 9, "one piece of a message too large for a datagram")     \
	X(INFER, 16, "inference request")                                     \
	X(CANCEL, 17, "cancel a request")                                     \
	X(STATUS_REQUEST, 18, "ask for STATUS")                               \
	X(ACCEPT, 32, "request admitted")                                     \
	X(REJECT, 33, "request refused")                                      \
	X(TOKENS, 34, "a chunk of generated tokens")                          \
	X(DONE, 35, "request finished")                                       \
	X(CANCEL_ACK, 36, "cancel done")                                      \
	X(ERROR, 37, "request failed after admission")                        \
	X(STATUS, 38, "credit and server state")

enum proto_template {
#define X(name, id, help) PROTO_T_##name = id,
	foreach_proto_template(X)
#undef X
};

/* ------------------------------------------------------------------------
 * Session messages.
 */

#define PROTO_NONCE_LEN 16

/* LOGON (control datagram, session_id 0, tag by the pre-shared key).
 * var data: client_name (<= 64 bytes). */
struct proto_logon {
	uint32_t key_id;	/* which pre-shared key (velo-keygen id) */
	uint32_t heartbeat_ms;	/* requested interval; server may change it */
	uint64_t timestamp_ns;	/* client wall clock: logons older than the
				   freshness window are refused */
	uint8_t client_nonce[PROTO_NONCE_LEN];
	uint16_t mtu;		/* largest datagram the client accepts */
	uint16_t flags;
	uint32_t reserved;
};
_Static_assert(sizeof(struct proto_logon) == 40, "logon");

/* LOGON_ACK (control, tag by the pre-shared key; the session key is derived
 * from both nonces from here on). */
struct proto_logon_ack {
	uint64_t session_id;
	uint64_t server_time_ns;
	uint8_t server_nonce[PROTO_NONCE_LEN];
	uint32_t heartbeat_ms;		/* negotiated */
	uint32_t session_timeout_ms;	/* silence after which it is closed */
	uint32_t credit_requests;	/* in-flight requests allowed */
	uint32_t credit_tokens;		/* prompt + max_tokens allowed in flight */
	uint32_t replay_msgs;		/* replay buffer depth, messages */
	uint16_t mtu;			/* negotiated */
	uint16_t suite;			/* enum velo_suite chosen for the session */
	/* Request ids the server remembers per session (a retry of an id
	 * this far behind the newest is answered REJECT DUPLICATE, since the
	 * server can no longer tell whether it ran); > credit_requests. */
	uint32_t dedup_ids;
	uint32_t reserved;		/* 0 */
};
_Static_assert(sizeof(struct proto_logon_ack) == 64, "logon ack");

/* LOGON_REJECT: var data text. */
struct proto_logon_reject {
	uint16_t code;		/* enum proto_err */
	uint16_t reserved[3];
};

/* LOGOUT: var data reason text (may be empty). */
struct proto_logout {
	uint16_t code;
	uint16_t reserved[3];
};

/* TEST_REQUEST / TEST_RESPONSE (control).  The response echoes both fields
 * and adds the server's clock so a client can estimate the offset. */
struct proto_test_request {
	uint64_t correlation_id;
	uint64_t timestamp_ns;
};
struct proto_test_response {
	uint64_t correlation_id;
	uint64_t timestamp_ns;		/* as sent */
	uint64_t server_time_ns;
};

/* RETRANSMIT_REQUEST (control, client): replay server messages
 * [from_seq, from_seq + count).  count <= the negotiated replay depth. */
struct proto_retransmit_request {
	uint64_t from_seq;
	uint32_t count;
	uint32_t reserved;
};

/* GAP_FILL (control, server): messages [from_seq, from_seq + count) are
 * gone from the replay buffer; the client skips them and carries on. */
struct proto_gap_fill {
	uint64_t from_seq;
	uint32_t count;
	uint32_t reserved;
};

/* FRAGMENT: var data holds bytes [offset, offset + len) of one whole
 * encoded message (header included) that is total_length long.  All
 * fragments of one message share frag_id; BEGIN on the first, END on the
 * last.  Reassembled in preallocated buffers; abandoned ones time out. */
#define PROTO_FRAG_BEGIN 0x1
#define PROTO_FRAG_END	 0x2
struct proto_fragment {
	uint32_t frag_id;
	uint16_t index;		/* 0, 1, 2 ... */
	uint16_t flags;		/* PROTO_FRAG_* */
	uint32_t total_length;
	uint32_t offset;
};
_Static_assert(sizeof(struct proto_fragment) == 16, "fragment");

/* ------------------------------------------------------------------------
 * Inference messages.
 */

/* INFER flags */
#define PROTO_INFER_IGNORE_EOS	  0x0001
#define PROTO_INFER_PROMPT_TOKENS 0x0002 /* prompt is the token group */
#define PROTO_INFER_PROMPT_TEXT	  0x0004 /* prompt is the text var data */
#define PROTO_INFER_CHAT	  0x0008 /* prompt is the messages group */
#define PROTO_INFER_ECHO_PROMPT	  0x0010 /* stream the prompt tokens first */

/* stream granularity */
enum proto_stream {
	PROTO_STREAM_TOKEN = 0,		/* every token */
	PROTO_STREAM_EVERY_K = 1,	/* every stream_k tokens */
	PROTO_STREAM_SENTENCE = 2,	/* at sentence ends */
};

/*
 * INFER root block.  Groups, in this order: prompt_tokens (u32 token ids),
 * stop_tokens (u32), logit_bias (struct proto_logit_bias), stop_sequences
 * (entry block 0, each entry one var data), messages (struct proto_chat_msg,
 * each entry followed by one var data: the text).  Then var data: model
 * name, model version or label (empty: the production label), prompt text.
 * Sampling fields: 0 keeps the default where 0 is not itself meaningful
 * (see docs/protocol.md: temperature 0 is greedy, top_k 0 is off, top_p 0
 * is off (1.0), penalties 0 are off (repetition 0 means 1.0)).
 */
struct proto_infer {
	uint64_t request_id;	/* client chosen, increasing per session */
	uint64_t deadline_ns;	/* absolute, server wall clock; 0 none */
	uint64_t seed;		/* sampling RNG seed */
	uint32_t ttft_target_us;/* 0 none */
	uint32_t max_tokens;
	uint32_t min_tokens;
	uint32_t model_id;	/* catalogue id; 0: by name (var data) */
	float temperature;
	float top_p;
	float min_p;
	float repetition_penalty;
	float presence_penalty;
	float frequency_penalty;
	uint32_t top_k;
	uint32_t flags;		/* PROTO_INFER_* */
	uint8_t priority;	/* class; 0 highest */
	uint8_t logprobs;	/* top-k logprobs per token, 0 none, <= 8 */
	uint8_t stream;		/* enum proto_stream */
	uint8_t stream_k;
	uint32_t reserved;
};
_Static_assert(sizeof(struct proto_infer) == 80, "infer");

struct proto_logit_bias {
	uint32_t token;
	float bias;
};

enum proto_role { PROTO_ROLE_SYSTEM = 0, PROTO_ROLE_USER = 1,
		  PROTO_ROLE_ASSISTANT = 2 };
struct proto_chat_msg {
	uint8_t role;		/* enum proto_role */
	uint8_t reserved[3];
};

struct proto_cancel {
	uint64_t request_id;
};

/* ACCEPT: the request was admitted (or is a retry of one that was). */
#define PROTO_ACCEPT_DUPLICATE 0x1
struct proto_accept {
	uint64_t request_id;
	uint32_t queue_position;
	uint32_t flags;		/* PROTO_ACCEPT_* */
	uint64_t server_time_ns;
};

/* Error and reject codes, with the HTTP status a gateway maps them to. */
#define foreach_proto_err(X)                                                  \
	X(NONE, 0, 200, "no error")                                           \
	X(INVALID, 1, 400, "malformed or invalid request")                    \
	X(INVALID_PARAM, 2, 422, "a parameter is out of range")               \
	X(UNKNOWN_MODEL, 3, 404, "no such model or version")                  \
	X(OVERLOADED, 4, 429, "over credit or over capacity")                 \
	X(DEADLINE, 5, 504, "the deadline cannot be met")                     \
	X(NOT_READY, 6, 503, "no model loaded or model not ready")            \
	X(INTERNAL, 7, 500, "internal or device error")                       \
	X(DUPLICATE, 8, 409, "request id reused for another request")         \
	X(TOO_LARGE, 9, 413, "prompt or request too large")                   \
	X(AUTH, 10, 401, "authentication failed")                             \
	X(SHUTTING_DOWN, 11, 503, "server is draining")

enum proto_err {
#define X(name, code, http, help) PROTO_E_##name = code,
	foreach_proto_err(X)
#undef X
};

/* REJECT (before admission) and ERROR (after): var data text. */
struct proto_reject {
	uint64_t request_id;
	uint16_t code;		/* enum proto_err */
	uint16_t reserved;
	uint32_t retry_after_ms;/* 0: do not retry */
};
struct proto_error {
	uint64_t request_id;
	uint16_t code;
	uint16_t reserved[3];
};

/* TOKENS flags */
#define PROTO_TOK_FIRST	   0x1
#define PROTO_TOK_SENTENCE 0x2	/* the text ends a sentence */
#define PROTO_TOK_LAST	   0x4

/*
 * TOKENS.  Groups: tokens (u32 ids), logprobs (struct proto_logprob,
 * n_tokens x (1 + top_logprobs) entries: the chosen token's then its top
 * alternatives).  Var data: the UTF-8 text of these tokens; never ends
 * inside a code point (bytes that do not complete one are held back for the
 * next chunk).
 */
struct proto_tokens {
	uint64_t request_id;
	uint32_t first_index;	/* index of the first token in the completion */
	uint16_t flags;		/* PROTO_TOK_* */
	uint8_t top_logprobs;
	uint8_t reserved;
};
struct proto_logprob {
	uint32_t token;
	float logprob;
};

enum proto_finish {
	PROTO_FINISH_EOS = 0,
	PROTO_FINISH_STOP_SEQUENCE = 1,
	PROTO_FINISH_STOP_TOKEN = 2,
	PROTO_FINISH_LENGTH = 3,
	PROTO_FINISH_CANCELLED = 4,
	PROTO_FINISH_DEADLINE = 5,
	PROTO_FINISH_DRAINED = 6,
	PROTO_FINISH_ERROR = 7,
};

/* DONE.  Var data: model name, model version. */
struct proto_done {
	uint64_t request_id;
	uint32_t prompt_tokens;
	uint32_t cached_prompt_tokens;
	uint32_t completion_tokens;
	uint8_t finish_reason;	/* enum proto_finish */
	uint8_t reserved[3];
	uint32_t queue_us;
	uint32_t prefill_us;
	uint32_t ttft_us;
	uint32_t decode_us;
	uint32_t mean_itl_us;	/* mean inter-token latency */
	uint32_t reserved2;
};
_Static_assert(sizeof(struct proto_done) == 48, "done");

struct proto_cancel_ack {
	uint64_t request_id;
	uint32_t tokens_generated;
	uint16_t found;		/* 0: no such request in flight */
	uint16_t reserved;
};

/* STATUS (data, sequenced) */
enum proto_state { PROTO_STATE_NOT_READY = 0, PROTO_STATE_READY = 1,
		   PROTO_STATE_DRAINING = 2 };
struct proto_status {
	uint32_t credit_requests;	/* free now */
	uint32_t credit_tokens;		/* free now */
	uint32_t in_flight;
	uint8_t state;			/* enum proto_state */
	uint8_t reserved[3];
	uint64_t server_time_ns;
};

/* Sizes of the remaining wire structs (the layout tables in
 * docs/protocol.md give every offset). */
_Static_assert(sizeof(struct proto_logon_reject) == 8, "logon reject");
_Static_assert(sizeof(struct proto_logout) == 8, "logout");
_Static_assert(sizeof(struct proto_test_request) == 16, "test request");
_Static_assert(sizeof(struct proto_test_response) == 24, "test response");
_Static_assert(sizeof(struct proto_retransmit_request) == 16, "retransmit");
_Static_assert(sizeof(struct proto_gap_fill) == 16, "gap fill");
_Static_assert(sizeof(struct proto_logit_bias) == 8, "logit bias");
_Static_assert(sizeof(struct proto_chat_msg) == 4, "chat msg");
_Static_assert(sizeof(struct proto_cancel) == 8, "cancel");
_Static_assert(sizeof(struct proto_accept) == 24, "accept");
_Static_assert(sizeof(struct proto_reject) == 16, "reject");
_Static_assert(sizeof(struct proto_error) == 16, "error");
_Static_assert(sizeof(struct proto_tokens) == 16, "tokens");
_Static_assert(sizeof(struct proto_logprob) == 8, "logprob");
_Static_assert(sizeof(struct proto_cancel_ack) == 16, "cancel ack");
_Static_assert(sizeof(struct proto_status) == 24, "status");
_Static_assert(offsetof(struct proto_infer, temperature) == 40, "infer temp");
_Static_assert(offsetof(struct proto_infer, priority) == 72, "infer prio");
_Static_assert(offsetof(struct proto_logon_ack, mtu) == 52, "ack mtu");
_Static_assert(offsetof(struct proto_logon_ack, dedup_ids) == 56, "ack dedup");

#endif /* VELO_PROTO_H */
