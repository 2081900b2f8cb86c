/* SPDX-License-Identifier: MIT */
/*
 * sched_priv.h — the scheduler's private state, shared by sched.c (the
 * loop) and sched_model.c (loading, self-test).
 */
#ifndef VELO_ENG_SCHED_PRIV_H
#define VELO_ENG_SCHED_PRIV_H

#include <stdbool.h>
#include <stdint.h>

#include "backend.h"
#include "core/image.h"
#include "core/sampler.h"
#include "core/tokenizer.h"
#include "sched.h"

#include "core/stream.h"

struct eng_kvc;

/* Worst-case response records of one finish: the stream's pending text
 * (ENG_STREAM_TEXT_BUF bytes in chunks of ENG_STREAM_CHUNK_TEXT_MAX), DONE,
 * and a CANCEL_ACK. */
#define SCHED_FINISH_RECORDS_MAX                                              \
	(ENG_STREAM_TEXT_BUF / ENG_STREAM_CHUNK_TEXT_MAX + 4)

/* What a chat template adds to the messages' own text, at most: per
 * message a header and a trailer (Llama 3: 46 bytes) and a BOS/EOS of up
 * to 63 bytes each, plus the generation prompt and Qwen2's default system
 * message.  The rendered prompt buffer and the tokenizer's text budget
 * are the request text budget plus this. */
#define SCHED_CHAT_OVERHEAD (PROTO_CHAT_MSGS_MAX * 192 + 256)

/* Rows of a request's logprobs ring: the most tokens one response record
 * carries with logprobs (dataplane/ring.h dp_resp_lp_tokens_max(1)). */
#define SCHED_LP_ROWS 6

struct eng_sched_model {
	struct eng_sched_model_status st;	/* names, state, sizes */
	unsigned index;
	/* owned by the scheduler thread once installed (loader commands) */
	uint8_t route;				/* enum eng_route */
	uint32_t share;				/* canary percent */
	uint64_t served;			/* DONE records sent */
	bool own_be;				/* be is this slot's own instance */
	unsigned dev;				/* device index */
	struct eng_image *img;
	const struct eng_model *m;
	struct eng_tokenizer *tok;		/* used by the scheduler thread only */
	/* chat template inputs (core/chat.h), from the tokenizer */
	char chat_bos[64], chat_eos[64];
	const char *chat_default_system;	/* Qwen2's, or NULL */
	const struct eng_backend_ops *ops;
	struct eng_backend *be;
	struct eng_be_model *bm;
	struct eng_model_budget budget;
	struct eng_kvc *kv;
	uint32_t vocab;
	uint32_t ctx_max;
	uint32_t queue_max;
	/* measured costs (EWMA, ns): prefill per token, one decode step */
	double prefill_ns_tok;
	double decode_ns_step;
	/* step arrays, [seqs_max] each */
	struct eng_seq_in *seq_in;
	struct eng_sampler **samplers;
	uint32_t *sampled;
	struct eng_sched_req **step_req;
	/* queues: request indices */
	uint32_t *waiting;			/* [queue_max], sorted */
	uint32_t n_waiting;
	uint32_t *running;			/* [seqs_max] */
	uint32_t n_running;
};

/* Loader -> scheduler commands (one at a time: eng_sched.cmd). */
enum sched_cmd_op {
	SCHED_CMD_INSTALL = 1,	/* sm with route; index out */
	SCHED_CMD_ROUTE,	/* index, route, share */
	SCHED_CMD_DETACH,	/* index; sm out */
	SCHED_CMD_TOKCAP,	/* swap in larger token / block arrays */
};

struct eng_sched_cmd {
	int op;
	struct eng_sched_model *sm;
	unsigned index;
	uint8_t route;
	uint32_t share;
	uint32_t *tok_mem, *blk_mem;	/* TOKCAP: new arrays; the old back */
	uint32_t tok_cap, blk_cap;
	int rc;
	int done;			/* atomic: set last by the scheduler */
};

/* Execute @c here and now (the scheduler thread, or any thread before
 * the loop starts). */
void sched_cmd_exec(struct eng_sched *s, struct eng_sched_cmd *c);
/* Post @c and wait until the scheduler executed it. */
int sched_cmd_run(struct eng_sched *s, struct eng_sched_cmd *c);

bool sched_ready(const struct eng_sched *s, char *why, size_t whylen);
int sched_tok_cap_ensure(struct eng_sched *s, uint32_t cap, uint32_t blocks);
int sched_model_selftest(struct eng_sched_model *sm, char *err, size_t errlen);

#endif
