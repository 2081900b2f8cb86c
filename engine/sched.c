// SPDX-License-Identifier: MIT
/*
 * sched.c — the scheduler loop (see sched.h): admission, priority + EDF
 * waiting queue, continuous batching with chunked prefill, paged KV with
 * prefix caching (core/kv_cache.h), preemption by recomputation, cancel,
 * deadlines, streaming (core/stream.h) and DONE accounting.
 *
 * A request is (toks[0, n_tot), n_kv): the tokens known so far (prompt, then
 * every generated token appended) and how many of them are in its KV
 * blocks.  A step feeds toks[n_kv, n_kv + chunk); when that reaches n_tot
 * the step asks for logits and the sampled token is appended.  Decode is
 * chunk 1, prefill any chunk, and a preempted request is simply one whose
 * n_kv went back to its prefix-cache hit: it recomputes prompt + generated
 * tokens and then samples exactly what it would have (greedy), with no
 * special case.
 *
 * Bounds: request records per poll cfg.burst; sequences per step seqs_max;
 * tokens per step step_tokens_max; waiting queue queue_max (sorted insert,
 * O(queue_max)); every stop-token check O(64).  The response ring is never
 * overrun: a poll takes requests and runs a step only while the ring has
 * room for every record they can produce, otherwise it waits (counted).
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <velo/compiler.h>

#include "../tools/lib/clock.h"
#include "../tools/lib/cpu.h"
#include "../tools/lib/log.h"
#include "core/chat.h"
#include "core/kv_cache.h"
#include "core/logprob.h"
#include "core/stream.h"
#include "sched_priv.h"

/* Penalty window of every request's sampler (tokens). */
#define SAMPLER_WINDOW CONFIG_ENGINE_SCHED_PENALTY_WINDOW
/* EWMA weight of a new step measurement. */
#define EWMA_NEW (1.0 / (1 << CONFIG_ENGINE_SCHED_EWMA_SHIFT))

enum req_state { REQ_FREE = 0, REQ_WAITING, REQ_RUNNING };

struct eng_sched_req {
	uint8_t state;			/* enum req_state */
	uint8_t prio;
	uint8_t model;
	uint8_t ignore_eos;
	uint8_t in_step;		/* in the step being built */
	uint8_t shadow;			/* a shadow copy: nothing is sent */
	uint8_t reserved[2];
	uint16_t sess_slot;
	uint16_t reserved1;
	uint32_t sess_gen;
	uint32_t slot;
	uint64_t request_id;
	uint64_t order;			/* admission order (ties) */
	uint64_t arrival_ns, run_ns, prefill_ns, first_tok_ns, last_tok_ns;
	uint64_t deadline_ns;		/* monotonic; UINT64_MAX: none */
	uint32_t *toks;			/* (tok_cap) prompt + generated */
	uint32_t n_prompt, n_tot, n_kv, n_cached;
	uint32_t max_tokens, min_tokens;
	uint32_t preempted;
	struct eng_sampler *sampler;
	struct eng_kvc_seq kseq;	/* block table: blk_mem */
	struct eng_stream stream;
	/* logprobs (INFER logprobs = k > 0): the entries of the tokens the
	 * stream holds, row (completion index % lp_ring); the stream never
	 * holds more than lp_ring ids (eng_stream_params.ids_max), which is
	 * what one response record carries with k alternatives. */
	uint8_t logprobs;		/* k; 0: none */
	uint8_t lp_ring;		/* rows in use: dp_resp_lp_tokens_max(k) */
	struct proto_logprob lp[SCHED_LP_ROWS][1 + PROTO_LOGPROBS_MAX];
};

static const struct ctr_desc eng_sched_ctr_desc[ENG_SCHED_CTR__COUNT] = {
#define X(name, help) { #name, help },
	foreach_eng_sched_counter(X)
#undef X
};

static const struct ctr_desc eng_model_ctr_desc[ENG_MODEL_CTR__COUNT] = {
#define X(name, help) { #name, help },
	foreach_eng_model_counter(X)
#undef X
};

_Static_assert(ENG_KVC_CTR__COUNT <= ARRAY_SIZE(((struct eng_sched *)0)->kv_ctr),
	       "kv counter mirror too small");

static const uint32_t le_ttft[] = { 1000, 5000, 10000, 20000, 40000, 60000,
	80000, 100000, 250000, 500000, 750000, 1000000, 2500000, 5000000,
	7500000, 10000000 };
static const uint32_t le_itl[] = { 10000, 25000, 50000, 75000, 100000, 150000,
	200000, 300000, 400000, 500000, 750000, 1000000, 2500000 };
static const uint32_t le_e2e[] = { 300000, 500000, 800000, 1000000, 1500000,
	2000000, 2500000, 5000000, 10000000, 15000000, 20000000, 30000000,
	40000000, 50000000, 60000000 };
static const struct {
	const char *name;
	const uint32_t *le;
	unsigned n;
} hist_def[ENG_SCHED_HIST__COUNT] = {
	[ENG_SCHED_HIST_TTFT] = { "time_to_first_token_seconds", le_ttft, ARRAY_SIZE(le_ttft) },
	[ENG_SCHED_HIST_ITL] = { "inter_token_latency_seconds", le_itl, ARRAY_SIZE(le_itl) },
	[ENG_SCHED_HIST_QUEUE] = { "request_queue_time_seconds", le_e2e, ARRAY_SIZE(le_e2e) },
	[ENG_SCHED_HIST_E2E] = { "e2e_request_latency_seconds", le_e2e, ARRAY_SIZE(le_e2e) },
};
_Static_assert(ARRAY_SIZE(le_ttft) < ENG_SCHED_HIST_BUCKETS, "ttft buckets");

const char *eng_sched_hist_name(enum eng_sched_hist_id h)
{
	return h < ENG_SCHED_HIST__COUNT ? hist_def[h].name : "?";
}

const uint32_t *eng_sched_hist_le_us(enum eng_sched_hist_id h, unsigned *n)
{
	if (h >= ENG_SCHED_HIST__COUNT) {
		*n = 0;
		return NULL;
	}
	*n = hist_def[h].n;
	return hist_def[h].le;
}

/* One observation (at most 16 compares). */
static void hist_add(struct eng_sched *s, enum eng_sched_hist_id h, uint64_t us)
{
	struct eng_sched_hist *x = &s->hist[h];
	unsigned i = 0;

	while (i < hist_def[h].n && us > hist_def[h].le[i])
		i++;
	x->bucket[i]++;
	x->count++;
	x->sum_us += us;
}

void eng_sched_config_default(struct eng_sched_config *c)
{
	memset(c, 0, sizeof(*c));
	c->core = -1;
	c->idle_backoff = true;
	c->idle_polls = 64;
	c->idle_sleep_us = 1000;
	c->burst = 32;
	c->text_bytes_max = 4096;
}

static size_t sampler_bytes(void)
{
	return ALIGN_UP(eng_sampler_size(SAMPLER_WINDOW), (size_t)64);
}

int eng_sched_init(struct eng_sched *s, const struct eng_sched_config *cfg,
		   struct dp_rings *rings, bool register_counters)
{
	int rc;

	memset(s, 0, sizeof(*s));
	if (!rings || !rings->n_slots || !cfg->burst || cfg->burst > 64)
		return -EINVAL;
	/* The loop takes a request only when the response ring has room for
	 * everything it may answer (SCHED_FINISH_RECORDS_MAX): a smaller ring
	 * would never take one.  Refuse it here rather than stall. */
	if (ck_ring_capacity(&rings->resp) - 1 < SCHED_FINISH_RECORDS_MAX)
		return -EINVAL;
	s->cfg = *cfg;
	s->rings = rings;
	s->n_reqs = rings->n_slots + ENG_SCHED_SHADOW_MAX;
	s->reqs = calloc(s->n_reqs, sizeof(*s->reqs));
	s->sampler_mem = aligned_alloc(64, s->n_reqs * sampler_bytes());
	s->chat_cap = (size_t)cfg->text_bytes_max + SCHED_CHAT_OVERHEAD;
	s->chat_buf = malloc(s->chat_cap);
	if (!s->reqs || !s->sampler_mem || !s->chat_buf) {
		rc = -ENOMEM;
		goto err_free;
	}
	for (unsigned i = 0; i < s->n_reqs; i++) {
		s->reqs[i].slot = i;
		s->reqs[i].shadow = i >= rings->n_slots;
	}
	pthread_mutex_init(&s->slots_lock, NULL);
	if (register_counters) {
		rc = ctr_block_register("sched", eng_sched_ctr_desc, s->ctr,
					ENG_SCHED_CTR__COUNT);
		if (rc)
			goto err_free;
		/* "kv": the KV managers of every slot, summed by the scheduler
		 * (update_gauges), so that slots come and go at run time
		 * without touching the registry (not thread-safe). */
		rc = ctr_block_register("kv", eng_kvc_ctr_desc, s->kv_ctr,
					ENG_KVC_CTR__COUNT);
		if (rc)
			goto err_unreg_sched;
		rc = ctr_block_register("model", eng_model_ctr_desc, s->mctr,
					ENG_MODEL_CTR__COUNT);
		if (rc)
			goto err_unreg_kv;
		s->registered = true;
	}
	dp_rings_engine_state_set(rings, PROTO_STATE_NOT_READY);
	return 0;

err_unreg_kv:
	ctr_block_unregister(s->kv_ctr);
err_unreg_sched:
	ctr_block_unregister(s->ctr);
err_free:
	pthread_mutex_destroy(&s->slots_lock);
	free(s->chat_buf);
	free(s->sampler_mem);
	free(s->reqs);
	s->reqs = NULL;
	s->sampler_mem = NULL;
	s->chat_buf = NULL;
	return rc;
}

void eng_sched_fini(struct eng_sched *s)
{
	if (s->started)
		eng_sched_stop(s);
	if (s->registered) {
		ctr_block_unregister(s->mctr);
		ctr_block_unregister(s->kv_ctr);
		ctr_block_unregister(s->ctr);
	}
	for (unsigned i = 0; i < s->n_models; i++)
		if (s->models[i])
			eng_sched_slot_free(s, s->models[i]);
	if (s->reqs)
		pthread_mutex_destroy(&s->slots_lock);
	free(s->tok_mem);
	free(s->blk_mem);
	free(s->chat_buf);
	free(s->sampler_mem);
	free(s->reqs);
	memset(s, 0, sizeof(*s));
}

/* Model load (loader thread, or before start): every request's token
 * array holds @cap ids and its block table @blocks entries.  New arrays
 * are allocated here and swapped in by the scheduler only while no
 * request is in flight (SCHED_CMD_TOKCAP): a short wait, retried for at
 * most 2 s, then -EBUSY.  Versions of one model have the same sizes, so a
 * swap never needs this after the first load. */
int sched_tok_cap_ensure(struct eng_sched *s, uint32_t cap, uint32_t blocks)
{
	const struct timespec nap = { 0, 1000000 };
	struct eng_sched_cmd c = { .op = SCHED_CMD_TOKCAP };
	int rc = -EBUSY;

	if (cap <= s->tok_cap && blocks <= s->blk_cap)
		return 0;
	c.tok_cap = MAX(cap, s->tok_cap);
	c.blk_cap = MAX(blocks, s->blk_cap);
	c.tok_mem = malloc((size_t)s->n_reqs * c.tok_cap * sizeof(uint32_t));
	c.blk_mem = malloc((size_t)s->n_reqs * c.blk_cap * sizeof(uint32_t));
	if (!c.tok_mem || !c.blk_mem) {
		free(c.tok_mem);
		free(c.blk_mem);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < 2000 && rc == -EBUSY; i++) {
		rc = sched_cmd_run(s, &c);
		if (rc == -EBUSY)
			nanosleep(&nap, NULL);
	}
	/* on success c holds the old arrays, on failure the new ones */
	free(c.tok_mem);
	free(c.blk_mem);
	return rc;
}

/* ------------------------------------------------------------------------
 * Responses.  Callers checked that the ring has room (resp_room).
 */

static unsigned resp_room(const struct eng_sched *s)
{
	unsigned cap = ck_ring_capacity(&s->rings->resp) - 1;
	unsigned used = ck_ring_size(&s->rings->resp);

	return used < cap ? cap - used : 0;
}

static struct dp_resp *resp_get(struct eng_sched *s, const struct eng_sched_req *r,
				enum dp_resp_kind kind, uint8_t flags)
{
	struct dp_resp *p = dp_resp_reserve(s->rings);

	/* VERIFY: the room was checked; a miss is a scheduler bug. */
	VERIFY(p);
	memset(p, 0, offsetof(struct dp_resp, tokens));
	p->kind = (uint8_t)kind;
	p->flags = flags;
	p->sess_slot = r->sess_slot;
	p->sess_gen = r->sess_gen;
	p->req_slot = r->slot;
	p->request_id = r->request_id;
	return p;
}

static void resp_put(struct eng_sched *s)
{
	dp_resp_commit(s->rings);
	s->sent++;
}

static void reject(struct eng_sched *s, struct eng_sched_req *r, uint16_t code,
		   uint32_t retry_ms, const char *text, enum eng_sched_ctr c)
{
	struct dp_resp *p = resp_get(s, r, DP_RESP_REJECT, DP_RESP_F_FINAL);
	size_t n = strlen(text);

	p->u.reject.request_id = r->request_id;
	p->u.reject.code = code;
	p->u.reject.retry_after_ms = retry_ms;
	n = MIN(n, sizeof(p->text));
	memcpy(p->text, text, n);
	p->text_len = (uint16_t)n;
	resp_put(s);
	s->ctr[c]++;
	r->state = REQ_FREE;
}

/* Every chunk the stream has ready, one TOKENS record each (the stream
 * cuts chunks to what one record holds). */
static void send_ready(struct eng_sched *s, struct eng_sched_req *r)
{
	while (eng_stream_ready(&r->stream)) {
		struct dp_resp *p;
		uint16_t nt = 0, nx = 0, fl = 0;
		uint32_t fi = 0;

		if (r->shadow) {	/* taken and discarded */
			eng_stream_take_chunk(&r->stream, s->scratch.tokens, &nt,
					      s->scratch.text, &nx, &fl, &fi);
			continue;
		}
		p = resp_get(s, r, DP_RESP_TOKENS, 0);
		eng_stream_take_chunk(&r->stream, p->tokens, &nt, p->text, &nx,
				      &fl, &fi);
		p->n_tokens = nt;
		p->text_len = nx;
		p->u.tokens.request_id = r->request_id;
		p->u.tokens.first_index = fi;
		p->u.tokens.flags = fl;
		if (r->logprobs) {
			/* nt <= lp_ring (ids_max): fits, ring.h */
			struct proto_logprob *lp = dp_resp_lp(p);
			unsigned w = 1u + r->logprobs;

			p->u.tokens.top_logprobs = r->logprobs;
			for (uint32_t j = 0; j < nt; j++)
				memcpy(lp + j * w, r->lp[(fi + j) % r->lp_ring],
				       w * sizeof(*lp));
		}
		resp_put(s);
		s->ctr[ENG_SCHED_CTR_tokens_msgs]++;
	}
}

static uint32_t us_between(uint64_t a, uint64_t b)
{
	return b > a ? (uint32_t)MIN((b - a) / 1000, (uint64_t)UINT32_MAX) : 0;
}

static void req_release_kv(struct eng_sched_model *sm, struct eng_sched_req *r)
{
	if (r->state == REQ_RUNNING)
		eng_kvc_seq_release(sm->kv, &r->kseq);
}

static void queue_remove(uint32_t *q, uint32_t *n, uint32_t idx)
{
	for (uint32_t i = 0; i < *n; i++)
		if (q[i] == idx) {
			memmove(q + i, q + i + 1, (*n - i - 1) * sizeof(*q));
			(*n)--;
			return;
		}
}

/* Earlier in the waiting order: priority class, deadline, admission. */
static bool before(const struct eng_sched_req *a, const struct eng_sched_req *b)
{
	if (a->prio != b->prio)
		return a->prio < b->prio;
	if (a->deadline_ns != b->deadline_ns)
		return a->deadline_ns < b->deadline_ns;
	return a->order < b->order;
}

static void waiting_insert(struct eng_sched *s, struct eng_sched_model *sm,
			   struct eng_sched_req *r)
{
	uint32_t i = sm->n_waiting;

	while (i && before(r, &s->reqs[sm->waiting[i - 1]])) {
		sm->waiting[i] = sm->waiting[i - 1];
		i--;
	}
	sm->waiting[i] = r->slot;
	sm->n_waiting++;
	r->state = REQ_WAITING;
}

/* Finish: flush the stream, DONE (final), free everything.  The caller
 * checked room for the flush records and DONE. */
/* A request leaves its model: its KV blocks (if running) and its queue
 * entry go back, the slot is free. */
static void req_drop(struct eng_sched_model *sm, struct eng_sched_req *r)
{
	if (r->state == REQ_RUNNING) {
		req_release_kv(sm, r);
		queue_remove(sm->running, &sm->n_running, r->slot);
	} else if (r->state == REQ_WAITING) {
		queue_remove(sm->waiting, &sm->n_waiting, r->slot);
	}
	r->state = REQ_FREE;
}

static void finish(struct eng_sched *s, struct eng_sched_model *sm,
		   struct eng_sched_req *r, enum proto_finish why)
{
	static const enum eng_sched_ctr fc[] = {
		[PROTO_FINISH_EOS] = ENG_SCHED_CTR_done_eos,
		[PROTO_FINISH_STOP_SEQUENCE] = ENG_SCHED_CTR_done_stop,
		[PROTO_FINISH_STOP_TOKEN] = ENG_SCHED_CTR_done_stop,
		[PROTO_FINISH_LENGTH] = ENG_SCHED_CTR_done_length,
		[PROTO_FINISH_CANCELLED] = ENG_SCHED_CTR_done_cancel,
		[PROTO_FINISH_DEADLINE] = ENG_SCHED_CTR_done_deadline,
		[PROTO_FINISH_DRAINED] = ENG_SCHED_CTR_done_cancel,
		[PROTO_FINISH_ERROR] = ENG_SCHED_CTR_done_error,
	};
	uint32_t ngen = r->n_tot - r->n_prompt;
	struct dp_resp *p;
	size_t nl, vl;

	/* the held-back text and the LAST chunk (no-op when the stream
	 * itself decided the end) */
	if (eng_stream_finish_reason(&r->stream) < 0)
		eng_stream_finish(&r->stream, sm->tok, why);
	send_ready(s, r);
	if (r->shadow) {
		/* the answer is discarded: counted, nothing sent, no client
		 * latency recorded */
		s->ctr[ENG_SCHED_CTR_shadow_done]++;
		goto release;
	}
	p = resp_get(s, r, DP_RESP_DONE, DP_RESP_F_FINAL);
	p->u.done.request_id = r->request_id;
	p->u.done.prompt_tokens = r->n_prompt;
	p->u.done.cached_prompt_tokens = r->n_cached;
	p->u.done.completion_tokens = ngen;
	p->u.done.finish_reason = (uint8_t)why;
	p->u.done.queue_us = r->run_ns ? us_between(r->arrival_ns, r->run_ns) :
				 us_between(r->arrival_ns, clock_mono_ns());
	p->u.done.prefill_us = r->prefill_ns ? us_between(r->run_ns, r->prefill_ns) : 0;
	p->u.done.ttft_us = r->first_tok_ns ? us_between(r->arrival_ns, r->first_tok_ns) : 0;
	p->u.done.decode_us = r->first_tok_ns ? us_between(r->first_tok_ns, r->last_tok_ns) : 0;
	p->u.done.mean_itl_us = ngen > 1 ? p->u.done.decode_us / (ngen - 1) : 0;
	if (r->first_tok_ns)
		hist_add(s, ENG_SCHED_HIST_TTFT, p->u.done.ttft_us);
	hist_add(s, ENG_SCHED_HIST_QUEUE, p->u.done.queue_us);
	hist_add(s, ENG_SCHED_HIST_E2E, us_between(r->arrival_ns, clock_mono_ns()));
	nl = strnlen(sm->st.name, sizeof(sm->st.name));
	vl = strnlen(sm->st.version, sizeof(sm->st.version));
	memcpy(p->text, sm->st.name, nl);
	memcpy(p->text + nl, sm->st.version, vl);
	p->name_len = (uint16_t)nl;
	p->text_len = (uint16_t)(nl + vl);
	resp_put(s);
	s->ctr[fc[why]]++;
	sm->served++;
release:
	req_drop(sm, r);
}

/* ------------------------------------------------------------------------
 * Admission.
 */

static const char *const route_label[] = {
	[ENG_ROUTE_NONE] = "standby", [ENG_ROUTE_PRODUCTION] = "production",
	[ENG_ROUTE_CANARY] = "canary", [ENG_ROUTE_SHADOW] = "shadow",
};

/* A canary's share: the same request id from the same session always
 * lands on the same side (a retried INFER too); splitmix64 finaliser. */
static bool canary_pick(const struct dp_req_msg *m, uint32_t share)
{
	uint64_t h = m->request_id ^ ((uint64_t)m->sess_slot << 40) ^
		     ((uint64_t)m->sess_gen << 20);

	h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
	h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
	h ^= h >> 31;
	return h % 100 < share;
}

/* Routed slots only (production, canary): a warm standby slot finishes
 * what it has and takes nothing new.  A version (or label) in the request
 * picks that slot; otherwise the name's production slot, or its canary
 * for the canary's share of requests.  At most ENG_SCHED_MODELS_MAX
 * entries, a few compares each. */
static struct eng_sched_model *model_find(struct eng_sched *s,
					  const struct dp_req_slot *q,
					  const struct dp_req_msg *m)
{
	const char *name = dp_req_str(q, q->model);
	const char *ver = dp_req_str(q, q->version);
	struct eng_sched_model *label_hit = NULL, *prod = NULL;

	for (unsigned i = 0; i < s->n_models; i++) {
		struct eng_sched_model *sm = s->models[i];
		const char *lab;

		if (!sm || sm->st.state != ENG_MODEL_READY ||
		    sm->route == ENG_ROUTE_NONE || sm->route == ENG_ROUTE_SHADOW)
			continue;
		if (q->f.model_id && q->f.model_id != sm->st.id)
			continue;
		if (q->model.len && (q->model.len != strlen(sm->st.name) ||
				     memcmp(name, sm->st.name, q->model.len)))
			continue;
		lab = route_label[sm->route];
		if (!q->version.len) {
			if (sm->route == ENG_ROUTE_PRODUCTION && !prod)
				prod = sm;
			else if (!label_hit)
				label_hit = sm;
			continue;
		}
		if ((q->version.len == strlen(sm->st.version) &&
		     !memcmp(ver, sm->st.version, q->version.len)) ||
		    (q->version.len == strlen(lab) &&
		     !memcmp(ver, lab, q->version.len)))
			return sm;
	}
	if (q->version.len)
		return NULL;
	if (prod) {
		for (unsigned i = 0; i < s->n_models; i++) {
			struct eng_sched_model *c = s->models[i];

			if (c && c->route == ENG_ROUTE_CANARY &&
			    c->st.state == ENG_MODEL_READY &&
			    !strcmp(c->st.name, prod->st.name))
				return canary_pick(m, c->share) ? c : prod;
		}
		return prod;
	}
	return label_hit;
}

static void sampler_params(const struct proto_infer *f,
			   struct eng_sampler_params *p)
{
	eng_sampler_params_default(p);
	p->temperature = f->temperature;
	p->top_k = f->top_k;
	p->top_p = f->top_p > 0 ? f->top_p : 1.0f;
	p->min_p = f->min_p;
	p->repetition_penalty = f->repetition_penalty > 0 ? f->repetition_penalty : 1.0f;
	p->presence_penalty = f->presence_penalty;
	p->frequency_penalty = f->frequency_penalty;
	p->penalty_window = SAMPLER_WINDOW;
	p->seed = f->seed;
}

/* @r's sampler, in its slot's share of sampler_mem.  Return: NULL for a
 * parameter out of range (eng_sampler_init). */
static struct eng_sampler *req_sampler_init(struct eng_sched *s,
					    struct eng_sched_req *r,
					    const struct eng_sampler_params *sp)
{
	r->sampler = eng_sampler_init(s->sampler_mem + (size_t)r->slot * sampler_bytes(),
				      sampler_bytes(), sp, SAMPLER_WINDOW);
	return r->sampler;
}

/*
 * The stream parameters every request of model @sm starts from, for @r's
 * max_tokens, min_tokens and ignore_eos (set first): token streaming, every
 * EOS of the model ends it (Llama 3: <|end_of_text|>, <|eom_id|>,
 * <|eot_id|>), no stop ids or sequences.  The output always continues a
 * prompt, text or token ids: no SentencePiece leading-space strip on its
 * first token.
 */
static void req_stream_params(const struct eng_sched_model *sm,
			      const struct eng_sched_req *r,
			      struct eng_stream_params *stp)
{
	memset(stp, 0, sizeof(*stp));
	stp->mode = PROTO_STREAM_TOKEN;
	stp->max_tokens = r->max_tokens;
	stp->min_tokens = r->min_tokens;
	stp->eos_id = ENG_TOK_NONE;
	stp->eos_ids = sm->m->cfg.eos_ids;
	stp->n_eos_ids = MIN(sm->m->cfg.n_eos, (uint32_t)ENG_STREAM_EOS_MAX);
	stp->ignore_eos = r->ignore_eos;
	stp->detok_flags = ENG_DETOK_SKIP_SPECIAL | ENG_DETOK_CONTINUE;
}

/*
 * A request about to wait for its first step, its prompt in r->toks: the
 * prompt fed to its sampler's penalty window, nothing computed or cached
 * yet, no timestamps, no deadline (the caller sets one), arrived at
 * @arrival_ns.
 */
static void req_reset(struct eng_sched_req *r, uint64_t arrival_ns)
{
	for (uint32_t i = 0; i < r->n_prompt; i++)
		eng_sampler_accept(r->sampler, r->toks[i]);
	r->n_tot = r->n_prompt;
	r->n_kv = 0;
	r->n_cached = 0;
	r->preempted = 0;
	r->arrival_ns = arrival_ns;
	r->run_ns = r->prefill_ns = r->first_tok_ns = r->last_tok_ns = 0;
	r->deadline_ns = UINT64_MAX;
}

/*
 * The time before @r would get its first step, from measured costs: the
 * prompt positions still to compute of the waiting requests that sort
 * before it (they are scheduled first) at the per-token prefill cost, and,
 * when every sequence of a step is taken, the decodes until the first
 * running request can end (its max_tokens left).  O(n_waiting + n_running),
 * both bounded by the model's queue_max + seqs_max.  An estimate: EOS and
 * stop sequences end requests sooner, so it errs towards refusing late
 * rather than accepting a request that cannot make it.
 */
static uint64_t queue_ahead_ns(const struct eng_sched *s,
			       const struct eng_sched_model *sm,
			       const struct eng_sched_req *r)
{
	uint64_t toks = 0, ns;
	uint32_t ahead = 0, left = UINT32_MAX;

	for (uint32_t i = 0; i < sm->n_waiting; i++) {
		const struct eng_sched_req *w = &s->reqs[sm->waiting[i]];

		if (!before(w, r))
			break;	/* sorted: the rest come after @r */
		toks += w->n_tot - w->n_kv;
		ahead++;
	}
	ns = (uint64_t)(sm->prefill_ns_tok * (double)toks);
	if (sm->n_running && sm->n_running + ahead >= sm->budget.seqs_max) {
		for (uint32_t i = 0; i < sm->n_running; i++) {
			const struct eng_sched_req *x = &s->reqs[sm->running[i]];
			uint32_t gen = x->n_tot - x->n_prompt;

			left = MIN(left, x->max_tokens > gen ? x->max_tokens - gen : 1u);
		}
		ns += (uint64_t)(sm->decode_ns_step * (double)left);
	}
	return ns;
}

/*
 * A shadow slot of the name @sm serves gets a copy of @r: the same prompt
 * tokens, sampling parameters and lengths, but no stop tokens or stop
 * sequences (they live in the request slot, which the dataplane reuses once
 * the original is answered) and no deadline.  Its answer is discarded
 * (finish() counts it).  Bounded: a scan of the slot table, then of the
 * ENG_SCHED_SHADOW_MAX shadow states; no free state, a full queue or a
 * prompt the shadow cannot hold drops the copy (counted).
 */
static void shadow_copy(struct eng_sched *s, const struct eng_sched_model *sm,
			const struct eng_sched_req *r, const struct dp_req_slot *q)
{
	struct eng_sched_model *x = NULL;
	struct eng_sched_req *c = NULL;
	struct eng_sampler_params sp;
	struct eng_stream_params stp;

	for (unsigned i = 0; i < s->n_models && !x; i++)
		if (s->models[i] && s->models[i]->route == ENG_ROUTE_SHADOW &&
		    s->models[i]->st.state == ENG_MODEL_READY &&
		    !strcmp(s->models[i]->st.name, sm->st.name))
			x = s->models[i];
	if (likely(!x))
		return;
	for (unsigned i = s->rings->n_slots; i < s->n_reqs && !c; i++)
		if (s->reqs[i].state == REQ_FREE)
			c = &s->reqs[i];
	if (!c || x->n_waiting >= x->queue_max || r->n_prompt >= x->ctx_max) {
		s->ctr[ENG_SCHED_CTR_shadow_dropped]++;
		return;
	}
	for (uint32_t i = 0; i < r->n_prompt; i++) {
		if (r->toks[i] >= x->vocab) {
			s->ctr[ENG_SCHED_CTR_shadow_dropped]++;
			return;
		}
		c->toks[i] = r->toks[i];
	}
	sampler_params(&q->f, &sp);
	c->max_tokens = MIN(r->max_tokens, x->ctx_max);
	c->min_tokens = r->min_tokens;
	c->ignore_eos = r->ignore_eos;
	req_stream_params(x, c, &stp);
	if (!req_sampler_init(s, c, &sp) || eng_stream_init(&c->stream, x->tok, &stp)) {
		s->ctr[ENG_SCHED_CTR_shadow_dropped]++;
		return;
	}
	c->model = (uint8_t)x->index;
	c->request_id = r->request_id;
	c->sess_slot = r->sess_slot;
	c->sess_gen = r->sess_gen;
	c->n_prompt = r->n_prompt;
	c->prio = r->prio;
	req_reset(c, clock_mono_ns());
	c->order = ++s->order;
	waiting_insert(s, x, c);
	s->ctr[ENG_SCHED_CTR_shadow_admitted]++;
}

/*
 * A chat prompt (PROTO_INFER_CHAT): the messages rendered with the model's
 * template (core/chat.h) into s->chat_buf, then encoded without added
 * specials (the template holds the BOS).  Return: 0; -EOPNOTSUPP,
 * -EINVAL (the conversation, @why says what), -ENOSPC/-E2BIG (too long).
 */
static int chat_prompt(struct eng_sched *s, const struct eng_sched_model *sm,
		       const struct dp_req_slot *q, struct eng_sched_req *r,
		       char *why, size_t whylen)
{
	struct eng_chat_msg msgs[PROTO_CHAT_MSGS_MAX];
	const struct eng_chat_tokens tk = {
		.bos = sm->chat_bos, .eos = sm->chat_eos,
		.default_system = sm->chat_default_system,
	};
	uint32_t n = MIN(q->n_messages, (uint32_t)PROTO_CHAT_MSGS_MAX);
	size_t len = 0, nt = 0;
	int rc;

	for (uint32_t i = 0; i < n; i++) {
		msgs[i].role = (enum eng_chat_role)q->messages[i].role;
		msgs[i].text = dp_req_str(q, q->messages[i].text);
		msgs[i].len = q->messages[i].text.len;
	}
	rc = eng_chat_render(sm->m->cfg.chat_template, &tk, msgs, n, s->chat_buf,
			     s->chat_cap, &len, why, whylen);
	if (rc == -EOPNOTSUPP)
		snprintf(why, whylen, "model has no chat template: send the prompt "
			 "as text or tokens");
	if (rc)
		return rc;
	rc = eng_tok_encode(sm->tok, s->chat_buf, len, false, r->toks,
			    sm->ctx_max - 1, &nt);
	if (rc && rc != -ENOSPC && rc != -E2BIG)
		snprintf(why, whylen, "chat prompt could not be tokenized");
	if (rc)
		return rc;
	r->n_prompt = (uint32_t)nt;
	return 0;
}

/* Handle one INFER.  Produces exactly one record (ACCEPT or REJECT). */
static void handle_infer(struct eng_sched *s, const struct dp_req_msg *m)
{
	struct eng_sched_req *r = &s->reqs[m->req_slot];
	const struct dp_req_slot *q = &s->rings->slots[m->req_slot];
	struct eng_sampler_params sp;
	struct eng_stream_params stp;
	struct eng_sched_model *sm;
	uint64_t now = clock_mono_ns(), est, ahead;
	struct dp_resp *p;
	char why[120];
	int rc;

	s->ctr[ENG_SCHED_CTR_infer_rx]++;
	r->state = REQ_FREE;
	r->sess_slot = m->sess_slot;
	r->sess_gen = m->sess_gen;
	r->request_id = m->request_id;
	sm = model_find(s, q, m);
	if (!sm) {
		if (!s->ctr[ENG_SCHED_CTR_models_ready])
			reject(s, r, PROTO_E_NOT_READY, 1000, "no model loaded",
			       ENG_SCHED_CTR_reject_not_ready);
		else
			reject(s, r, PROTO_E_UNKNOWN_MODEL, 0,
			       "no such model, id, version or label",
			       ENG_SCHED_CTR_reject_unknown_model);
		return;
	}
	r->model = (uint8_t)sm->index;
	/* the prompt */
	if (q->f.flags & PROTO_INFER_PROMPT_TOKENS) {
		if (q->n_prompt_tokens >= sm->ctx_max) {
			reject(s, r, PROTO_E_TOO_LARGE, 0, "prompt too long for the context",
			       ENG_SCHED_CTR_reject_too_large);
			return;
		}
		for (uint32_t i = 0; i < q->n_prompt_tokens; i++) {
			if (q->prompt_tokens[i] >= sm->vocab) {
				reject(s, r, PROTO_E_INVALID_PARAM, 0,
				       "prompt token id beyond the vocabulary",
				       ENG_SCHED_CTR_reject_invalid);
				return;
			}
			r->toks[i] = q->prompt_tokens[i];
		}
		r->n_prompt = q->n_prompt_tokens;
	} else if (q->f.flags & PROTO_INFER_PROMPT_TEXT) {
		size_t n = 0;

		/* BOS and friends as the tokenizer's template adds them. */
		rc = eng_tok_encode(sm->tok, dp_req_str(q, q->prompt_text),
				    q->prompt_text.len, true, r->toks,
				    sm->ctx_max - 1, &n);
		if (rc == -ENOSPC || rc == -E2BIG) {
			reject(s, r, PROTO_E_TOO_LARGE, 0, "prompt too long for the context",
			       ENG_SCHED_CTR_reject_too_large);
			return;
		}
		if (rc) {
			reject(s, r, PROTO_E_INVALID, 0, "prompt text could not be tokenized",
			       ENG_SCHED_CTR_reject_invalid);
			return;
		}
		r->n_prompt = (uint32_t)n;
	} else {
		rc = chat_prompt(s, sm, q, r, why, sizeof(why));
		if (rc == -ENOSPC || rc == -E2BIG) {
			reject(s, r, PROTO_E_TOO_LARGE, 0, "chat prompt too long for the context",
			       ENG_SCHED_CTR_reject_too_large);
			return;
		}
		if (rc) {
			reject(s, r, PROTO_E_INVALID_PARAM, 0, why,
			       ENG_SCHED_CTR_reject_invalid);
			return;
		}
	}
	if (!r->n_prompt) {
		reject(s, r, PROTO_E_INVALID, 0, "empty prompt",
		       ENG_SCHED_CTR_reject_invalid);
		return;
	}
	/* The decoder refuses more than PROTO_LOGPROBS_MAX; checked again
	 * because the ring rows are sized by it. */
	r->logprobs = 0;
	r->lp_ring = 0;
	if (q->f.logprobs) {
		unsigned rows = q->f.logprobs <= PROTO_LOGPROBS_MAX ?
				dp_resp_lp_tokens_max(q->f.logprobs) : 0;

		if (!rows || rows > SCHED_LP_ROWS) {
			reject(s, r, PROTO_E_INVALID_PARAM, 0, "logprobs out of range (0..8)",
			       ENG_SCHED_CTR_reject_invalid);
			return;
		}
		r->logprobs = q->f.logprobs;
		r->lp_ring = (uint8_t)rows;
	}
	sampler_params(&q->f, &sp);
	for (uint32_t i = 0; i < q->n_logit_bias && i < ENG_SAMPLER_BIAS_MAX; i++) {
		if (q->logit_bias[i].token >= sm->vocab) {
			reject(s, r, PROTO_E_INVALID_PARAM, 0,
			       "logit_bias token id beyond the vocabulary",
			       ENG_SCHED_CTR_reject_invalid);
			return;
		}
		sp.bias_ids[i] = q->logit_bias[i].token;
		sp.bias[i] = q->logit_bias[i].bias;
	}
	sp.n_bias = MIN(q->n_logit_bias, (uint32_t)ENG_SAMPLER_BIAS_MAX);
	if (!req_sampler_init(s, r, &sp)) {
		reject(s, r, PROTO_E_INVALID_PARAM, 0, "sampling parameter out of range",
		       ENG_SCHED_CTR_reject_invalid);
		return;
	}
	r->max_tokens = q->f.max_tokens ? q->f.max_tokens : sm->ctx_max;
	r->min_tokens = q->f.min_tokens;
	r->ignore_eos = !!(q->f.flags & PROTO_INFER_IGNORE_EOS);
	req_stream_params(sm, r, &stp);
	stp.mode = (enum proto_stream)q->f.stream;
	stp.every_k = q->f.stream_k;
	stp.stop_ids = q->stop_tokens;
	stp.n_stop_ids = q->n_stop_tokens;
	for (uint32_t i = 0; i < q->n_stop_seqs && i < ENG_STREAM_STOP_SEQS_MAX; i++) {
		stp.stop_seqs[i] = dp_req_str(q, q->stop_seqs[i]);
		stp.stop_seq_lens[i] = q->stop_seqs[i].len;
	}
	stp.n_stop_seqs = q->n_stop_seqs;
	stp.ids_max = r->lp_ring;	/* 0: a whole record's worth */
	rc = eng_stream_init(&r->stream, sm->tok, &stp);
	if (rc) {
		reject(s, r, PROTO_E_INVALID_PARAM, 0, "stream parameters out of range",
		       ENG_SCHED_CTR_reject_invalid);
		return;
	}
	r->prio = q->f.priority;
	req_reset(r, q->arrival_ns ? q->arrival_ns : now);
	if (q->f.deadline_ns) {
		uint64_t real = clock_real_ns();

		r->deadline_ns = q->f.deadline_ns > real ?
				 now + (q->f.deadline_ns - real) : now;
	}
	/* Feasibility from measured costs: the queue ahead of it (same
	 * order as the waiting queue: priority class, deadline, admission),
	 * then the whole prompt's prefill plus the decodes min_tokens needs
	 * (at least the first token).  A request that still misses its
	 * deadline ends with DONE DEADLINE (expire()). */
	r->order = s->order + 1;	/* sorts after every admitted tie */
	ahead = (r->deadline_ns != UINT64_MAX || q->f.ttft_target_us) ?
		queue_ahead_ns(s, sm, r) : 0;
	est = ahead + (uint64_t)(sm->prefill_ns_tok * r->n_prompt +
				 sm->decode_ns_step * MAX(r->min_tokens, 1u));
	if (r->deadline_ns != UINT64_MAX && now + est > r->deadline_ns) {
		snprintf(why, sizeof(why), "deadline infeasible: needs about %llu us "
			 "(%llu us of it the queue ahead)",
			 (unsigned long long)(est / 1000),
			 (unsigned long long)(ahead / 1000));
		reject(s, r, PROTO_E_DEADLINE, 0, why, ENG_SCHED_CTR_reject_deadline);
		return;
	}
	if (q->f.ttft_target_us &&
	    ahead + sm->prefill_ns_tok * r->n_prompt > q->f.ttft_target_us * 1000.0) {
		reject(s, r, PROTO_E_DEADLINE, 0, "TTFT target infeasible",
		       ENG_SCHED_CTR_reject_deadline);
		return;
	}
	if (sm->n_waiting >= sm->queue_max) {
		uint32_t retry = (uint32_t)MIN(sm->decode_ns_step * 16 / 1e6 + 1, 1000.0);

		reject(s, r, PROTO_E_OVERLOADED, retry, "queue full",
		       ENG_SCHED_CTR_reject_overloaded);
		return;
	}
	r->order = ++s->order;
	waiting_insert(s, sm, r);
	p = resp_get(s, r, DP_RESP_ACCEPT, 0);
	p->u.accept.request_id = r->request_id;
	p->u.accept.queue_position = sm->n_waiting - 1;
	p->u.accept.server_time_ns = clock_real_ns();
	resp_put(s);
	s->ctr[ENG_SCHED_CTR_accepted]++;
	shadow_copy(s, sm, r, q);
}

/* CANCEL: CANCEL_ACK, and for a request in flight its DONE CANCELLED
 * (the final record that gives the slot back); its blocks are freed now. */
static void handle_cancel(struct eng_sched *s, const struct dp_req_msg *m)
{
	struct eng_sched_req *r = &s->reqs[m->req_slot];
	bool found = r->state != REQ_FREE && r->request_id == m->request_id &&
		     r->sess_gen == m->sess_gen && r->sess_slot == m->sess_slot;
	struct eng_sched_req tmp;
	struct dp_resp *p;

	s->ctr[ENG_SCHED_CTR_cancel_rx]++;
	s->ctr[found ? ENG_SCHED_CTR_cancel_found : ENG_SCHED_CTR_cancel_not_found]++;
	if (!found) {
		memset(&tmp, 0, sizeof(tmp));
		tmp.sess_slot = m->sess_slot;
		tmp.sess_gen = m->sess_gen;
		tmp.slot = m->req_slot;
		tmp.request_id = m->request_id;
		r = &tmp;
	}
	p = resp_get(s, r, DP_RESP_CANCEL_ACK, 0);
	p->u.cancel_ack.request_id = m->request_id;
	p->u.cancel_ack.found = found;
	p->u.cancel_ack.tokens_generated = found ? r->n_tot - r->n_prompt : 0;
	resp_put(s);
	if (found)
		finish(s, s->models[r->model], r, PROTO_FINISH_CANCELLED);
}

/* ------------------------------------------------------------------------
 * Steps.
 */

#define FINISH_RECORDS_MAX SCHED_FINISH_RECORDS_MAX

/* Worst-case records one step of @sm sends: per sequence its chunks and
 * DONE. */
static unsigned step_records_max(const struct eng_sched_model *sm)
{
	return sm->budget.seqs_max * FINISH_RECORDS_MAX + 4;
}

static void update_gauges(struct eng_sched *s)
{
	uint64_t qd = 0, run = 0;
	uint64_t kv[ENG_KVC_CTR__COUNT] = { 0 };

	for (unsigned i = 0; i < s->n_models; i++) {
		struct eng_sched_model *sm = s->models[i];
		const uint64_t *kc;

		if (!sm || sm->st.state != ENG_MODEL_READY)
			continue;
		qd += sm->n_waiting;
		run += sm->n_running;
		sm->st.inflight = sm->n_waiting + sm->n_running;
		kc = eng_kvc_counters(sm->kv);
		for (unsigned k = 0; k < ENG_KVC_CTR__COUNT; k++)
			kv[k] += kc[k];
	}
	/* every slot's KV manager, summed (a slot freed takes its share) */
	for (unsigned k = 0; k < ENG_KVC_CTR__COUNT; k++)
		__atomic_store_n(&s->kv_ctr[k], kv[k], __ATOMIC_RELAXED);
	s->ctr[ENG_SCHED_CTR_waiting] = qd;
	s->ctr[ENG_SCHED_CTR_running] = run;
	s->ctr[ENG_SCHED_CTR_kv_blocks_used] = kv[ENG_KVC_CTR_blocks_used];
	s->ctr[ENG_SCHED_CTR_kv_blocks_free] = kv[ENG_KVC_CTR_blocks_free];
	s->ctr[ENG_SCHED_CTR_kv_blocks_cached] = kv[ENG_KVC_CTR_blocks_cached];
}

/* Expire the requests of queue @q (@n entries; finish() removes from it,
 * hence the walk from the end) whose deadline passed: DONE DEADLINE. */
static void expire_queue(struct eng_sched *s, struct eng_sched_model *sm,
			 const uint32_t *q, const uint32_t *n, uint64_t now)
{
	for (uint32_t i = *n; i-- > 0;) {
		struct eng_sched_req *r = &s->reqs[q[i]];

		if (r->deadline_ns <= now && resp_room(s) >= FINISH_RECORDS_MAX)
			finish(s, sm, r, PROTO_FINISH_DEADLINE);
	}
}

static void expire(struct eng_sched *s, struct eng_sched_model *sm, uint64_t now)
{
	expire_queue(s, sm, sm->running, &sm->n_running, now);
	expire_queue(s, sm, sm->waiting, &sm->n_waiting, now);
}

/* The running request to preempt: lowest priority class, then latest
 * deadline, then latest admitted.  Never @keep. */
static struct eng_sched_req *victim(struct eng_sched *s, struct eng_sched_model *sm,
				    const struct eng_sched_req *keep)
{
	struct eng_sched_req *v = NULL;

	for (uint32_t i = 0; i < sm->n_running; i++) {
		struct eng_sched_req *r = &s->reqs[sm->running[i]];

		if (r == keep || r->in_step)
			continue;
		if (!v || before(v, r))
			v = r;
	}
	return v;
}

static void preempt(struct eng_sched *s, struct eng_sched_model *sm,
		    struct eng_sched_req *r)
{
	eng_kvc_seq_release(sm->kv, &r->kseq);
	queue_remove(sm->running, &sm->n_running, r->slot);
	r->n_kv = 0;
	r->preempted++;
	s->ctr[ENG_SCHED_CTR_preemptions]++;
	/* Back to the waiting queue even over queue_max: it was admitted
	 * (the array holds queue_max + seqs_max: see sched_model.c). */
	VERIFY(sm->n_waiting < sm->queue_max + sm->budget.seqs_max);
	waiting_insert(s, sm, r);
}

/*
 * Make room for @r to hold @positions: reserve, preempting running
 * requests that come after @r in the order (never one before it) while
 * the pool is short.  Return: 0, or -ENOSPC.
 */
static int kv_reserve(struct eng_sched *s, struct eng_sched_model *sm,
		      struct eng_sched_req *r, uint32_t positions)
{
	for (;;) {
		struct eng_sched_req *v;
		int rc = eng_kvc_seq_reserve(sm->kv, &r->kseq, positions);

		if (rc != -ENOSPC)
			return rc;
		v = victim(s, sm, r);
		if (!v || before(v, r))
			return -ENOSPC;
		preempt(s, sm, v);
	}
}

/*
 * The logprobs of the token just sampled for step sequence @seq, into the
 * row of its completion index (before token_out pushes it).  From the raw
 * logits row of the step (ops->logits; the CUDA backend copies it back on
 * demand, also when it sampled greedily on the device), so what is
 * reported does not depend on where the token was sampled
 * (core/logprob.h).  Cost: ~0.17 ms per token at a 128k vocabulary on the
 * development VM (docs/protocol.md §5.7).  A row that can not be had
 * fails the request (counted; the caller finishes it with ERROR).
 */
static int token_logprobs(struct eng_sched *s, struct eng_sched_model *sm,
			  struct eng_sched_req *r, uint32_t seq, uint32_t t)
{
	const float *row = NULL;
	uint32_t idx = eng_stream_tokens(&r->stream);
	int rc = sm->ops->logits(sm->bm, seq, &row);

	if (!rc)
		rc = eng_logprob_topk(row, sm->vocab, t, r->logprobs,
				      r->lp[idx % r->lp_ring]);
	if (unlikely(rc)) {
		s->ctr[ENG_SCHED_CTR_logprob_fail]++;
		return rc;
	}
	s->ctr[ENG_SCHED_CTR_logprob_tokens]++;
	return 0;
}

/* A token was sampled for @r: append, stream, maybe finish. */
static void token_out(struct eng_sched *s, struct eng_sched_model *sm,
		      struct eng_sched_req *r, uint32_t t, uint64_t now)
{
	int rc;

	r->toks[r->n_tot++] = t;
	eng_sampler_accept(r->sampler, t);
	if (!r->first_tok_ns)
		r->first_tok_ns = now;
	else if (!r->shadow)
		hist_add(s, ENG_SCHED_HIST_ITL, us_between(r->last_tok_ns, now));
	r->last_tok_ns = now;
	s->ctr[ENG_SCHED_CTR_tokens_decoded]++;
	rc = eng_stream_push(&r->stream, sm->tok, t, NULL);
	send_ready(s, r);
	if (rc == 1)
		finish(s, sm, r, (enum proto_finish)eng_stream_finish_reason(&r->stream));
	else if (rc < 0)
		finish(s, sm, r, PROTO_FINISH_ERROR);
	else if (r->n_tot >= sm->ctx_max)
		finish(s, sm, r, PROTO_FINISH_LENGTH);
}

/* Add @r's next chunk to the step (at most @budget tokens).  Returns the
 * tokens added, 0 when it could not be placed. */
static uint32_t step_add(struct eng_sched *s, struct eng_sched_model *sm,
			 struct eng_sched_req *r, uint32_t budget, uint32_t *n)
{
	uint32_t chunk = MIN(r->n_tot - r->n_kv, budget);
	struct eng_seq_in *in = &sm->seq_in[*n];
	const uint32_t *blocks;
	uint32_t nb;

	if (!chunk || kv_reserve(s, sm, r, r->n_kv + chunk))
		return 0;
	blocks = r->kseq.blocks;
	nb = r->kseq.n_blocks;
	in->tokens = r->toks + r->n_kv;
	in->n_tokens = chunk;
	in->pos = r->n_kv;
	in->blocks = blocks;
	in->n_blocks = nb;
	in->flags = r->n_kv + chunk == r->n_tot ? ENG_SEQ_LOGITS : 0;
	sm->step_req[*n] = r;
	r->in_step = 1;
	sm->samplers[*n] = in->flags ? r->sampler : NULL;
	(*n)++;
	return chunk;
}

static void step_hist(struct eng_sched *s, uint64_t ns)
{
	enum eng_sched_ctr c = ns < 100000 ? ENG_SCHED_CTR_step_lt_100us :
			       ns < 300000 ? ENG_SCHED_CTR_step_lt_300us :
			       ns < 1000000 ? ENG_SCHED_CTR_step_lt_1ms :
			       ns < 3000000 ? ENG_SCHED_CTR_step_lt_3ms :
			       ns < 10000000 ? ENG_SCHED_CTR_step_lt_10ms :
			       ns < 30000000 ? ENG_SCHED_CTR_step_lt_30ms :
			       ENG_SCHED_CTR_step_ge_30ms;
	s->ctr[c]++;
}

/* Running requests in priority / deadline order (insertion sort,
 * seqs_max at most), so that the first ones get their blocks first. */
static void running_sort(struct eng_sched *s, struct eng_sched_model *sm)
{
	for (uint32_t i = 1; i < sm->n_running; i++) {
		uint32_t x = sm->running[i], j = i;

		while (j && before(&s->reqs[x], &s->reqs[sm->running[j - 1]])) {
			sm->running[j] = sm->running[j - 1];
			j--;
		}
		sm->running[j] = x;
	}
}

/* One step of @sm.  Returns 1 when a step ran. */
static unsigned model_step(struct eng_sched *s, struct eng_sched_model *sm)
{
	uint32_t budget = sm->budget.step_tokens_max, n = 0, prefill = 0, dec = 0;
	uint64_t t0, t1;
	int rc;

	t0 = clock_mono_ns();
	expire(s, sm, t0);
	if (!sm->n_running && !sm->n_waiting)
		return 0;
	if (resp_room(s) < step_records_max(sm)) {
		s->ctr[ENG_SCHED_CTR_resp_ring_full]++;
		return 0;
	}
	running_sort(s, sm);
	/* 1. decodes of running requests first (a long prompt never stalls
	 *    them), then 2. their unfinished prefills.  A running request
	 *    that cannot get its blocks (everything ahead of it holds them)
	 *    is preempted itself. */
	for (int pass = 0; pass < 2; pass++) {
		for (uint32_t i = 0; i < sm->n_running && n < sm->budget.seqs_max &&
		     budget; i++) {
			struct eng_sched_req *r = &s->reqs[sm->running[i]];
			bool decode = r->n_tot - r->n_kv == 1;
			uint32_t k;

			if (decode != (pass == 0))
				continue;
			if (r->in_step)
				continue;
			k = step_add(s, sm, r, budget, &n);
			if (!k) {
				if (r->state == REQ_RUNNING) {
					preempt(s, sm, r);
					i--;
				}
				continue;
			}
			budget -= k;
			if (decode)
				dec++;
			else
				prefill += k;
		}
	}
	/* 3. waiting requests in priority / deadline order */
	while (sm->n_waiting && n < sm->budget.seqs_max && budget &&
	       sm->n_running < sm->budget.seqs_max) {
		struct eng_sched_req *r = &s->reqs[sm->waiting[0]];
		uint32_t cached, k;

		rc = eng_kvc_seq_begin(sm->kv, &r->kseq, r->toks, r->n_tot);
		if (rc < 0)
			break;
		cached = (uint32_t)rc;
		memmove(sm->waiting, sm->waiting + 1, (sm->n_waiting - 1) * sizeof(uint32_t));
		sm->n_waiting--;
		r->state = REQ_RUNNING;
		sm->running[sm->n_running++] = r->slot;
		r->n_kv = cached;
		if (!r->preempted) {
			r->n_cached = cached;
			s->ctr[ENG_SCHED_CTR_prefix_hit_tokens] += cached;
		}
		if (!r->run_ns)
			r->run_ns = t0;
		k = step_add(s, sm, r, budget, &n);
		if (!k) {
			/* no blocks even after preemption: back in line */
			eng_kvc_seq_release(sm->kv, &r->kseq);
			sm->n_running--;
			r->n_kv = 0;
			waiting_insert(s, sm, r);
			break;
		}
		budget -= k;
		if (r->n_tot - cached == 1 && r->preempted)
			dec++;
		else
			prefill += k;
	}
	for (uint32_t i = 0; i < n; i++)
		sm->step_req[i]->in_step = 0;
	if (!n)
		return 0;
	rc = sm->ops->step(sm->bm, &(struct eng_batch){ sm->seq_in, n });
	if (!rc)
		rc = sm->ops->sample(sm->bm, sm->samplers, n, sm->sampled);
	t1 = clock_mono_ns();
	s->ctr[ENG_SCHED_CTR_steps]++;
	s->ctr[ENG_SCHED_CTR_step_ns_total] += t1 - t0;
	step_hist(s, t1 - t0);
	if (rc) {
		/* The step failed: fail its requests explicitly. */
		s->ctr[ENG_SCHED_CTR_step_fail]++;
		for (uint32_t i = 0; i < n; i++) {
			struct eng_sched_req *r = sm->step_req[i];
			struct dp_resp *p;

			if (!r->shadow) {
				p = resp_get(s, r, DP_RESP_ERROR, DP_RESP_F_FINAL);
				p->u.error.request_id = r->request_id;
				p->u.error.code = PROTO_E_INTERNAL;
				p->text_len = sizeof("engine step failed") - 1;
				memcpy(p->text, "engine step failed", p->text_len);
				resp_put(s);
			}
			s->ctr[ENG_SCHED_CTR_done_error]++;
			req_drop(sm, r);
		}
		return 1;
	}
	if (dec && !prefill)
		sm->decode_ns_step += EWMA_NEW * ((double)(t1 - t0) - sm->decode_ns_step);
	else if (prefill && !dec)
		sm->prefill_ns_tok += EWMA_NEW * ((double)(t1 - t0) / prefill -
						  sm->prefill_ns_tok);
	s->ctr[ENG_SCHED_CTR_tokens_prefilled] += prefill;
	for (uint32_t i = 0; i < n; i++) {
		struct eng_sched_req *r = sm->step_req[i];
		const struct eng_seq_in *in = &sm->seq_in[i];

		r->n_kv += in->n_tokens;
		eng_kvc_seq_commit(sm->kv, &r->kseq, r->toks, r->n_kv);
		if (!(in->flags & ENG_SEQ_LOGITS))
			continue;
		if (!r->prefill_ns)
			r->prefill_ns = t1;
		if (r->logprobs && !r->shadow &&
		    token_logprobs(s, sm, r, i, sm->sampled[i])) {
			finish(s, sm, r, PROTO_FINISH_ERROR);
			continue;
		}
		token_out(s, sm, r, sm->sampled[i], t1);
	}
	return 1;
}

/* ------------------------------------------------------------------------
 * Loader commands (sched_priv.h): executed by the scheduler thread between
 * two polls, or directly before the loop starts.
 */

/* After any route or table change: the gauge, and the engine state the
 * dataplane reports (READY only with a routed model and no failed one). */
static void routes_changed(struct eng_sched *s)
{
	unsigned routed = 0;

	for (unsigned i = 0; i < s->n_models; i++) {
		const struct eng_sched_model *sm = s->models[i];

		if (sm && sm->st.state == ENG_MODEL_READY &&
		    sm->route != ENG_ROUTE_NONE && sm->route != ENG_ROUTE_SHADOW)
			routed++;
	}
	s->ctr[ENG_SCHED_CTR_models_ready] = routed;
	dp_rings_engine_state_set(s->rings, sched_ready(s, NULL, 0) ?
				  PROTO_STATE_READY : PROTO_STATE_NOT_READY);
}

/* The flip: a new production slot of a name demotes the old one to NONE
 * in the same instant; requests it admitted stay on it to their DONE. */
static void route_set(struct eng_sched *s, struct eng_sched_model *sm,
		      uint8_t route, uint32_t share)
{
	if (route == ENG_ROUTE_PRODUCTION) {
		for (unsigned i = 0; i < s->n_models; i++) {
			struct eng_sched_model *o = s->models[i];

			if (o && o != sm && o->route == ENG_ROUTE_PRODUCTION &&
			    !strcmp(o->st.name, sm->st.name))
				o->route = ENG_ROUTE_NONE;
		}
	}
	if (sm->route != route)
		s->ctr[ENG_SCHED_CTR_route_changes]++;
	sm->route = route;
	sm->share = share;
	sm->st.route = (enum eng_route)route;
	sm->st.share = share;
}

void sched_cmd_exec(struct eng_sched *s, struct eng_sched_cmd *c)
{
	struct eng_sched_model *sm;
	unsigned i;

	s->ctr[ENG_SCHED_CTR_slot_cmds]++;
	c->rc = 0;
	switch (c->op) {
	case SCHED_CMD_INSTALL:
		sm = c->sm;
		if (c->route == ENG_ROUTE_CANARY || c->route == ENG_ROUTE_SHADOW)
			for (i = 0; i < s->n_models; i++)
				if (s->models[i] && s->models[i]->route == c->route &&
				    !strcmp(s->models[i]->st.name, sm->st.name)) {
					c->rc = -EEXIST;
					return;
				}
		for (i = 0; i < ENG_SCHED_MODELS_MAX && s->models[i]; i++)
			;
		if (i == ENG_SCHED_MODELS_MAX) {
			c->rc = -ENOSPC;
			return;
		}
		sm->index = i;
		sm->st.id = i + 1;
		sm->route = ENG_ROUTE_NONE;
		__atomic_store_n(&s->models[i], sm, __ATOMIC_RELEASE);
		if (i >= s->n_models)
			s->n_models = i + 1;
		c->index = i;
		route_set(s, sm, c->route, c->share);
		break;
	case SCHED_CMD_ROUTE:
		sm = c->index < s->n_models ? s->models[c->index] : NULL;
		if (!sm) {
			c->rc = -ENOENT;
			return;
		}
		if (sm->st.state != ENG_MODEL_READY) {
			c->rc = -EINVAL;
			return;
		}
		route_set(s, sm, c->route, c->share);
		break;
	case SCHED_CMD_DETACH:
		sm = c->index < s->n_models ? s->models[c->index] : NULL;
		if (!sm) {
			c->rc = -ENOENT;
			return;
		}
		if (sm->route != ENG_ROUTE_NONE) {
			c->rc = -EPERM;
			return;
		}
		if (sm->n_waiting || sm->n_running) {
			c->rc = -EBUSY;
			return;
		}
		__atomic_store_n(&s->models[c->index], NULL, __ATOMIC_RELEASE);
		while (s->n_models && !s->models[s->n_models - 1])
			s->n_models--;
		sm->st.served = sm->served;	/* final, for the loader */
		sm->st.inflight = 0;
		c->sm = sm;
		break;
	case SCHED_CMD_TOKCAP: {
		uint32_t *om = s->tok_mem, *ob = s->blk_mem;

		/* Request slots point into these arrays: swap them only while
		 * none is in flight (the loader retries). */
		for (i = 0; i < s->n_reqs; i++)
			if (s->reqs[i].state != REQ_FREE) {
				c->rc = -EBUSY;
				return;
			}
		s->tok_mem = c->tok_mem;
		s->blk_mem = c->blk_mem;
		s->tok_cap = c->tok_cap;
		s->blk_cap = c->blk_cap;
		for (i = 0; i < s->n_reqs; i++) {
			s->reqs[i].toks = s->tok_mem + (size_t)i * s->tok_cap;
			eng_kvc_seq_init(&s->reqs[i].kseq,
					 s->blk_mem + (size_t)i * s->blk_cap, s->blk_cap);
		}
		c->tok_mem = om;
		c->blk_mem = ob;
		break;
	}
	default:
		c->rc = -EINVAL;
		return;
	}
	routes_changed(s);
}

int sched_cmd_run(struct eng_sched *s, struct eng_sched_cmd *c)
{
	const struct timespec nap = { 0, 50000 };

	c->done = 0;
	c->rc = 0;
	if (!s->started) {
		sched_cmd_exec(s, c);
		return c->rc;
	}
	__atomic_store_n(&s->cmd, c, __ATOMIC_RELEASE);
	dp_wake_kick(&s->rings->wake_sched);
	/* The scheduler takes it within one poll (at most one step, or its
	 * idle sleep); the loader, not the scheduler, waits. */
	while (!__atomic_load_n(&c->done, __ATOMIC_ACQUIRE))
		nanosleep(&nap, NULL);
	return c->rc;
}

/* ------------------------------------------------------------------------
 * The loop.
 */

static unsigned sched_poll(struct eng_sched *s)
{
	struct dp_req_msg m;
	unsigned n = 0, work = 0;

	s->ctr[ENG_SCHED_CTR_polls]++;
	/* A loader command (install, route flip, detach): between two polls,
	 * bounded (a scan of ENG_SCHED_MODELS_MAX entries), never blocking. */
	if (unlikely(__atomic_load_n(&s->cmd, __ATOMIC_ACQUIRE) != NULL)) {
		struct eng_sched_cmd *c = s->cmd;

		sched_cmd_exec(s, c);
		__atomic_store_n(&s->cmd, NULL, __ATOMIC_RELAXED);
		__atomic_store_n(&c->done, 1, __ATOMIC_RELEASE);
		work++;
	}
	/* A record makes at most FINISH_RECORDS_MAX responses (CANCEL: ACK,
	 * the stream's last chunks, DONE): take records only while they fit. */
	while (n < s->cfg.burst && resp_room(s) >= FINISH_RECORDS_MAX &&
	       dp_req_dequeue(s->rings, &m)) {
		n++;
		s->ctr[ENG_SCHED_CTR_req_rx]++;
		if (unlikely(m.req_slot >= s->rings->n_slots)) {
			s->ctr[ENG_SCHED_CTR_bad_record]++;
			continue;
		}
		switch (m.op) {
		case DP_REQ_INFER:
			handle_infer(s, &m);
			break;
		case DP_REQ_CANCEL:
			handle_cancel(s, &m);
			break;
		default:
			s->ctr[ENG_SCHED_CTR_bad_record]++;
			break;
		}
	}
	for (unsigned i = 0; i < s->n_models; i++)
		if (s->models[i] && s->models[i]->st.state == ENG_MODEL_READY)
			work += model_step(s, s->models[i]);
	if (n || work)
		update_gauges(s);
	return n + work;
}

unsigned eng_sched_poll(struct eng_sched *s)
{
	unsigned n;

	s->sent = 0;
	n = sched_poll(s);
	if (s->sent)	/* responses went out: wake the dataplane if it sleeps */
		dp_wake_kick(&s->rings->wake_dp);
	return n;
}

static void *sched_thread(void *arg)
{
	struct eng_sched *s = arg;
	int rc = cpu_pin_self(s->cfg.core);

	if (rc)
		LOG_W(eng, "scheduler: cannot pin to core %d: %s (unpinned)",
		      s->cfg.core, strerror(-rc));
	LOG_I(eng, "scheduler running on core %d (idle backoff %s), %u model(s)",
	      s->cfg.core, s->cfg.idle_backoff ? "on" : "off", s->n_models);
	while (!__atomic_load_n(&s->stop, __ATOMIC_RELAXED)) {
		if (eng_sched_poll(s)) {
			s->idle = 0;
			continue;
		}
		if (s->cfg.idle_backoff && ++s->idle >= s->cfg.idle_polls) {
			struct dp_wake *w = &s->rings->wake_sched;
			struct timespec ts = { 0, (long)s->cfg.idle_sleep_us * 1000 };
			struct pollfd p = { .fd = w->fd, .events = POLLIN };
			bool woke = false;

			/* Asleep until the dataplane kicks (or the timeout). */
			dp_wake_prepare(w);
			if (!dp_req_pending(s->rings) &&
			    !__atomic_load_n(&s->cmd, __ATOMIC_ACQUIRE)) {
				s->ctr[ENG_SCHED_CTR_idle_sleeps]++;
				woke = ppoll(&p, 1, &ts, NULL) > 0;
			}
			dp_wake_done(w, woke);
		} else {
			cpu_relax();
		}
	}
	return NULL;
}

int eng_sched_start(struct eng_sched *s)
{
	int rc;

	__atomic_store_n(&s->stop, 0, __ATOMIC_RELAXED);
	rc = pthread_create(&s->thread, NULL, sched_thread, s);
	if (rc)
		return -rc;
	pthread_setname_np(s->thread, "velo-sched");
	s->started = true;
	return 0;
}

void eng_sched_stop(struct eng_sched *s)
{
	if (!s->started)
		return;
	__atomic_store_n(&s->stop, 1, __ATOMIC_RELAXED);
	pthread_join(s->thread, NULL);
	s->started = false;
}
