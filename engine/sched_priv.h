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

struct eng_sched_model {
	struct eng_sched_model_status st;	/* names, state, sizes */
	unsigned index;
	struct eng_image *img;
	const struct eng_model *m;
	struct eng_tokenizer *tok;		/* used by the scheduler thread only */
	const struct eng_backend_ops *ops;
	struct eng_backend *be;
	struct eng_be_model *bm;
	struct eng_model_budget budget;
	struct eng_kvc *kv;
	bool kv_registered;
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

void sched_model_destroy(struct eng_sched_model *sm);
int sched_tok_cap_ensure(struct eng_sched *s, uint32_t cap, uint32_t blocks);
int sched_model_selftest(struct eng_sched_model *sm, char *err, size_t errlen);

#endif
