// SPDX-License-Identifier: MIT
/*
 * sched_model.c — loading the models a scheduler serves, before its loop
 * starts: image (FULL verify: one pass over every byte, so a corrupt image
 * is refused before any tensor is used), tokenizer from the image's blob,
 * backend and model from explicit budgets, KV cache, then the image's
 * known-answer self-test.  Only a model that passes is routed.
 *
 * The self-test also seeds the admission costs: its prefill gives the
 * per-token prefill cost and its decodes the per-step decode cost, so the
 * very first request is judged on measured numbers, not guesses.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <velo/compiler.h>

#include "../tools/lib/clock.h"
#include "../tools/lib/log.h"
#include "core/kv_cache.h"
#include "sched_priv.h"

#define SELFTEST_BLOCKS_MAX 64

/*
 * Run the known-answer record through the loaded model: the prompt
 * (chunked by step_tokens_max), then greedy decodes; every expected token
 * must match exactly and every recorded logit lie within the tolerance.
 * The greedy token comes from the backend's own sample() with a plain
 * greedy sampler, the path requests take: one rule (ties to the lowest id,
 * NaN as -inf) on every backend, whether it samples on the host or on the
 * device.  Uses KV blocks 0.. of the fresh pool before the KV cache hands
 * any out.
 */
static int selftest_run(struct eng_sched_model *sm, struct eng_sampler *greedy,
			char *err, size_t errlen)
{
	const struct eng_model *m = sm->m;
	const struct eng_backend_ops *ops = sm->ops;
	uint32_t blocks[SELFTEST_BLOCKS_MAX], B = sm->budget.kv_block_tokens;
	uint32_t np = m->ka_prompt_len, ne = m->ka_expect_len, nb, pos = 0;
	uint32_t steps = ne ? ne : 1, tok = 0;
	uint64_t t0, t_prefill = 0, t_decode = 0;
	const float *lg;
	int rc;

	if (!np) {
		snprintf(err, errlen, "image has no known-answer record");
		return -EINVAL;
	}
	nb = eng_kv_blocks_for(np + steps, B);
	if (nb > SELFTEST_BLOCKS_MAX || nb > sm->budget.kv_blocks ||
	    np + steps > sm->ctx_max) {
		snprintf(err, errlen, "known-answer run (%u positions) does not fit "
			 "the KV budget (%u blocks of %u, ctx %u)", np + steps,
			 sm->budget.kv_blocks, B, sm->ctx_max);
		return -EINVAL;
	}
	for (uint32_t i = 0; i < nb; i++)
		blocks[i] = i;
	/* prefill in chunks of step_tokens_max; logits on the last one */
	t0 = clock_mono_ns();
	while (pos < np) {
		uint32_t n = MIN(np - pos, sm->budget.step_tokens_max);
		struct eng_seq_in in = {
			.tokens = m->ka_prompt + pos, .n_tokens = n, .pos = pos,
			.blocks = blocks, .n_blocks = nb,
			.flags = pos + n == np ? ENG_SEQ_LOGITS : 0,
		};
		struct eng_batch b = { &in, 1 };

		rc = ops->step(sm->bm, &b);
		if (rc) {
			snprintf(err, errlen, "self-test prefill step: %s", strerror(-rc));
			return rc;
		}
		pos += n;
	}
	for (uint32_t s = 0; s < steps; s++) {
		uint32_t best;

		if (s) {
			struct eng_seq_in in = {
				.tokens = &tok, .n_tokens = 1, .pos = np + s - 1,
				.blocks = blocks, .n_blocks = nb,
				.flags = ENG_SEQ_LOGITS,
			};
			struct eng_batch b = { &in, 1 };

			rc = ops->step(sm->bm, &b);
			if (rc) {
				snprintf(err, errlen, "self-test decode step %u: %s",
					 s, strerror(-rc));
				return rc;
			}
		}
		rc = ops->logits(sm->bm, 0, &lg);
		if (rc) {
			snprintf(err, errlen, "self-test logits: %s", strerror(-rc));
			return rc;
		}
		if (!s) {
			t_prefill = clock_mono_ns() - t0;
			t0 = clock_mono_ns();
			for (uint32_t k = 0; k < m->ka_n_logits; k++) {
				const struct eng_ka_logit *e = &m->ka_logits[k];

				if (e->id >= sm->vocab ||
				    !(fabsf(lg[e->id] - e->logit) <= m->ka_logit_tol)) {
					snprintf(err, errlen, "self-test: logit of token %u is %.4f, "
						 "expected %.4f within %.3g", e->id,
						 e->id < sm->vocab ? (double)lg[e->id] : NAN,
						 (double)e->logit, (double)m->ka_logit_tol);
					return -EIO;
				}
			}
		}
		rc = ops->sample(sm->bm, &greedy, 1, &best);
		if (rc) {
			snprintf(err, errlen, "self-test sample %u: %s%s", s,
				 strerror(-rc), rc == -EDOM ? " (no finite logit)" : "");
			return rc;
		}
		if (s < ne && best != m->ka_expect[s]) {
			snprintf(err, errlen, "self-test: greedy token %u is %u, expected %u",
				 s, best, m->ka_expect[s]);
			return -EIO;
		}
		tok = best;
	}
	t_decode = clock_mono_ns() - t0;
	sm->prefill_ns_tok = (double)t_prefill / np;
	sm->decode_ns_step = steps > 1 ? (double)t_decode / (steps - 1) :
					 sm->prefill_ns_tok;
	sm->st.ka_prompt = np;
	sm->st.ka_expect = ne;
	return 0;
}

int sched_model_selftest(struct eng_sched_model *sm, char *err, size_t errlen)
{
	struct eng_sampler_params p;
	struct eng_sampler *g;
	void *mem;
	int rc;

	/* load time, not a step: the one allocation is freed below */
	mem = aligned_alloc(64, ALIGN_UP(eng_sampler_size(0), 64));
	if (!mem) {
		snprintf(err, errlen, "self-test: no memory for its sampler");
		return -ENOMEM;
	}
	eng_sampler_params_default(&p);		/* greedy, no penalties */
	g = eng_sampler_init(mem, eng_sampler_size(0), &p, 0);
	if (!g) {
		rc = -errno;
		snprintf(err, errlen, "self-test sampler: %s", strerror(errno));
	} else {
		rc = selftest_run(sm, g, err, errlen);
	}
	free(mem);
	return rc;
}

/* Drop this slot's use of its backend instance: its own (CPU) is torn
 * down, a device's shared one when its last slot goes. */
static void backend_put(struct eng_sched *s, struct eng_sched_model *sm)
{
	if (!sm->be)
		return;
	if (sm->own_be) {
		if (sm->ops->fini)
			sm->ops->fini(sm->be);
	} else if (s && sm->dev < ENG_SCHED_DEVICES_MAX &&
		   s->dev[sm->dev].be == sm->be && !--s->dev[sm->dev].users) {
		if (sm->ops->fini)
			sm->ops->fini(sm->be);
		s->dev[sm->dev].be = NULL;
		s->dev[sm->dev].ops = NULL;
	}
	sm->be = NULL;
}

/* A special token's text as a C string ("" when none or too long). */
static void token_text(const struct eng_tokenizer *tok, uint32_t id, char *buf,
		       size_t cap)
{
	size_t len = 0;
	const char *p = id != ENG_TOK_NONE ? eng_tok_token(tok, id, &len) : NULL;

	buf[0] = 0;
	if (p && len < cap) {
		memcpy(buf, p, len);
		buf[len] = 0;
	}
}

/* What the chat template splices in: the tokenizer's BOS and EOS texts
 * (the model's first EOS when the tokenizer names none) and, for Qwen2,
 * its default system message (what its template adds when the
 * conversation has none). */
static void chat_tokens(struct eng_sched_model *sm)
{
	uint32_t eos = eng_tok_eos_id(sm->tok);

	if (eos == ENG_TOK_NONE && sm->m->cfg.n_eos)
		eos = sm->m->cfg.eos_ids[0];
	token_text(sm->tok, eng_tok_bos_id(sm->tok), sm->chat_bos, sizeof(sm->chat_bos));
	token_text(sm->tok, eos, sm->chat_eos, sizeof(sm->chat_eos));
	sm->chat_default_system = sm->m->cfg.arch == ENG_ARCH_QWEN2 &&
				  sm->m->cfg.chat_template == ENG_CHAT_CHATML ?
				  "You are a helpful assistant." : NULL;
}

static void model_free(struct eng_sched *s, struct eng_sched_model *sm)
{
	if (sm->kv)
		eng_kvc_fini(sm->kv);
	if (sm->bm)
		sm->ops->model_unload(sm->bm);
	backend_put(s, sm);
	eng_tok_free(sm->tok);
	eng_image_close(sm->img);
	free(sm->seq_in);
	free(sm->samplers);
	free(sm->sampled);
	free(sm->step_req);
	free(sm->waiting);
	free(sm->running);
	sm->kv = NULL;
	sm->bm = NULL;
	sm->be = NULL;
	sm->tok = NULL;
	sm->img = NULL;
	sm->m = NULL;
	sm->seq_in = NULL;
	sm->samplers = NULL;
	sm->sampled = NULL;
	sm->step_req = NULL;
	sm->waiting = NULL;
	sm->running = NULL;
}

void eng_sched_slot_free(struct eng_sched *s, struct eng_sched_model *sm)
{
	if (!sm)
		return;
	/* status readers never see it half freed */
	pthread_mutex_lock(&s->slots_lock);
	model_free(s, sm);
	pthread_mutex_unlock(&s->slots_lock);
	free(sm);
}

/*
 * The backend instance a slot runs on.  CPU: its own instance (its own
 * worker pool of mc->threads), so that the loader thread's model_load and
 * self-test never share a pool with the scheduler thread stepping another
 * slot: that is how a new version loads "beside" the old one on the same
 * CPU device.  Other backends (CUDA): one instance per device index,
 * shared by the slots on it; their contract (backend.h) allows a load and
 * self-test on the loader thread while the scheduler steps another model
 * of the same instance.
 */
static int backend_get(struct eng_sched *s, struct eng_sched_model *sm,
		       const struct eng_sched_model_config *mc, char *err,
		       size_t errlen)
{
	struct eng_backend_budget bb = { 0 };
	int rc;

	bb.cpu.threads = mc->threads;
	bb.device = (int)mc->device;
	sm->dev = mc->device;
	if (sm->ops == &eng_cpu_ops || !IS_ENABLED(CONFIG_ENGINE_CPU)) {
		sm->own_be = true;
		rc = sm->ops->init(&bb, &sm->be);
		if (rc)
			snprintf(err, errlen, "backend init: %s", strerror(-rc));
		return rc;
	}
	if (s->dev[mc->device].be && s->dev[mc->device].ops != sm->ops) {
		snprintf(err, errlen, "device %u runs backend %s", mc->device,
			 s->dev[mc->device].ops->name);
		return -EBUSY;
	}
	if (!s->dev[mc->device].be) {
		rc = sm->ops->init(&bb, &s->dev[mc->device].be);
		if (rc) {
			snprintf(err, errlen, "backend %s init on device %u: %s",
				 sm->ops->name, mc->device, strerror(-rc));
			return rc;
		}
		s->dev[mc->device].ops = sm->ops;
	}
	s->dev[mc->device].users++;
	sm->be = s->dev[mc->device].be;
	return 0;
}

static int model_load(struct eng_sched *s, struct eng_sched_model *sm,
		      const struct eng_sched_model_config *mc, char *err,
		      size_t errlen)
{
	struct eng_be_model_info info;
	struct eng_kvc_config kc;
	uint64_t t0 = clock_mono_ns(), t1;
	uint32_t B, S;
	int rc;

	if (!mc->image || !*mc->image) {
		snprintf(err, errlen, "no image path");
		return -EINVAL;
	}
	if (!mc->backend || !*mc->backend || !strcmp(mc->backend, "cpu")) {
		if (!IS_ENABLED(CONFIG_ENGINE_CPU)) {
			snprintf(err, errlen, "the CPU backend is not built (CONFIG_ENGINE_CPU)");
			return -ENOTSUP;
		}
		sm->ops = &eng_cpu_ops;
	} else if (!strcmp(mc->backend, "cuda")) {
		if (!IS_ENABLED(CONFIG_ENGINE_CUDA)) {
			snprintf(err, errlen, "the CUDA backend is not built (CONFIG_ENGINE_CUDA)");
			return -ENOTSUP;
		}
		sm->ops = &eng_cuda_ops;
	} else {
		snprintf(err, errlen, "unknown backend '%s' (this build has: cpu%s)",
			 mc->backend, IS_ENABLED(CONFIG_ENGINE_CUDA) ? ", cuda" : "");
		return -ENOTSUP;
	}
	if (mc->device >= ENG_SCHED_DEVICES_MAX) {
		snprintf(err, errlen, "device %u: at most %d devices", mc->device,
			 ENG_SCHED_DEVICES_MAX);
		return -EINVAL;
	}
	if (!mc->kv_blocks || !mc->seqs_max || !mc->step_tokens_max ||
	    mc->seqs_max > 4096 || mc->step_tokens_max > (1u << 20)) {
		snprintf(err, errlen, "kv_blocks, seqs_max and step_tokens_max must be set "
			 "(seqs_max <= 4096)");
		return -EINVAL;
	}
	/* A step runs only when the response ring has room for everything
	 * it can send (sched.c): the ring must hold that much. */
	if (mc->seqs_max * SCHED_FINISH_RECORDS_MAX + 4 >
	    ck_ring_capacity(&s->rings->resp) - 1) {
		snprintf(err, errlen, "seqs_max %u needs a response ring of %u entries "
			 "(requests.response_ring is %u)", mc->seqs_max,
			 mc->seqs_max * SCHED_FINISH_RECORDS_MAX + 5,
			 ck_ring_capacity(&s->rings->resp));
		return -EINVAL;
	}
	rc = eng_image_open(mc->image, ENG_IMAGE_VERIFY_FULL, &sm->img, err, errlen);
	if (rc)
		return rc;
	sm->m = eng_image_model(sm->img);
	snprintf(sm->st.name, sizeof(sm->st.name), "%s",
		 mc->name && *mc->name ? mc->name : sm->m->name);
	snprintf(sm->st.version, sizeof(sm->st.version), "%s", sm->m->version);
	sm->vocab = sm->m->cfg.vocab_size;
	/* the budget covers a chat prompt rendered from a full request */
	sm->tok = eng_tok_load(sm->m->tokenizer_blob, sm->m->tokenizer_blob_len,
			       s->cfg.text_bytes_max + SCHED_CHAT_OVERHEAD, err, errlen);
	if (!sm->tok) {
		rc = -errno ?: -EINVAL;
		return rc;
	}
	chat_tokens(sm);
	rc = backend_get(s, sm, mc, err, errlen);
	if (rc)
		return rc;
	B = mc->kv_block_tokens ? mc->kv_block_tokens : ENG_KV_BLOCK_TOKENS_DEFAULT;
	S = MIN(mc->kv_blocks, eng_kv_blocks_for(sm->m->cfg.max_seq ?
						 sm->m->cfg.max_seq : 1u << 20, B));
	sm->budget = (struct eng_model_budget){
		.seqs_max = mc->seqs_max, .step_tokens_max = mc->step_tokens_max,
		.kv_blocks = mc->kv_blocks, .kv_block_tokens = B,
		.seq_blocks_max = S, .kv_dtype = ENG_KV_F32,
	};
	rc = sm->ops->model_load(sm->be, sm->m, &sm->budget, &sm->bm);
	if (rc) {
		snprintf(err, errlen, "model load on %s: %s", sm->ops->name,
			 strerror(-rc));
		return rc;
	}
	sm->ops->model_info(sm->bm, &info);
	sm->ctx_max = info.ctx_max;
	sm->st.mem_bytes = info.mem_bytes;
	sm->st.kv_bytes = info.kv_bytes;
	sm->st.weight_bytes = info.weight_bytes;
	sm->st.threads = info.threads;
	sm->queue_max = mc->queue_max ? mc->queue_max : mc->seqs_max * 4;
	rc = sched_tok_cap_ensure(s, sm->ctx_max + 1, S);
	if (rc) {
		snprintf(err, errlen, rc == -EBUSY ?
			 "token arrays must grow for this context and requests "
			 "stay in flight: try again when idle" :
			 "out of memory (token arrays)");
		return rc;
	}

	sm->seq_in = calloc(mc->seqs_max, sizeof(*sm->seq_in));
	sm->samplers = calloc(mc->seqs_max, sizeof(*sm->samplers));
	sm->sampled = calloc(mc->seqs_max, sizeof(*sm->sampled));
	sm->step_req = calloc(mc->seqs_max, sizeof(*sm->step_req));
	sm->running = calloc(mc->seqs_max, sizeof(*sm->running));
	/* admission keeps at most queue_max waiting; preempted requests (at
	 * most seqs_max, they were running) come back on top of that */
	sm->waiting = calloc(sm->queue_max + mc->seqs_max, sizeof(*sm->waiting));
	if (!sm->seq_in || !sm->samplers || !sm->sampled || !sm->step_req ||
	    !sm->running || !sm->waiting) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	t1 = clock_mono_ns();
	sm->st.state = ENG_MODEL_LOADING;
	rc = sched_model_selftest(sm, err, errlen);
	sm->st.selftest_s = (double)(clock_mono_ns() - t1) / 1e9;
	if (rc)
		return rc;
	memset(&kc, 0, sizeof(kc));
	kc.n_blocks = mc->kv_blocks;
	kc.block_tokens = B;
	kc.prefix_cache = true;
	kc.seed = sm->m->cfg.vocab_size * 0x9e3779b97f4a7c15ull ^ s->n_models;
	for (const char *c = sm->m->version; *c; c++)
		kc.seed = kc.seed * 131 + (uint8_t)*c;
	sm->kv = eng_kvc_init(&kc);
	if (!sm->kv) {
		rc = -errno;
		snprintf(err, errlen, "KV cache: %s", strerror(errno));
		return rc;
	}
	sm->st.load_s = (double)(clock_mono_ns() - t0) / 1e9;
	return 0;
}

/* A fresh slot entry from @mc (names and sizes for status, even when the
 * load then fails). */
static struct eng_sched_model *slot_new(const struct eng_sched_model_config *mc)
{
	struct eng_sched_model *sm = calloc(1, sizeof(*sm));

	if (!sm)
		return NULL;
	snprintf(sm->st.label, sizeof(sm->st.label), "%s",
		 mc->label && *mc->label ? mc->label : "production");
	snprintf(sm->st.image, sizeof(sm->st.image), "%s", mc->image ? mc->image : "");
	snprintf(sm->st.name, sizeof(sm->st.name), "%s", mc->name ? mc->name : "");
	sm->st.kv_blocks = mc->kv_blocks;
	sm->st.kv_block_tokens = mc->kv_block_tokens ? mc->kv_block_tokens :
				 ENG_KV_BLOCK_TOKENS_DEFAULT;
	sm->st.seqs_max = mc->seqs_max;
	sm->st.step_tokens_max = mc->step_tokens_max;
	sm->st.device = mc->device;
	sm->share = mc->share;
	return sm;
}

/* Load @sm; on failure its resources are released and the reason kept. */
static int slot_load(struct eng_sched *s, struct eng_sched_model *sm,
		     const struct eng_sched_model_config *mc, char *err,
		     size_t errlen)
{
	int rc;

	err[0] = 0;
	rc = model_load(s, sm, mc, err, errlen);
	if (rc) {
		if (!*err)
			snprintf(err, errlen, "%s", strerror(-rc));
		snprintf(sm->st.why, sizeof(sm->st.why), "%s", err);
		sm->st.state = ENG_MODEL_FAILED;
		LOG_E(eng, "model %s (%s): not routed: %s", sm->st.name,
		      sm->st.image, err);
		model_free(s, sm);	/* keep the entry, release the resources */
		return rc;
	}
	sm->st.state = ENG_MODEL_READY;
	sm->st.vocab = sm->vocab;
	sm->st.ctx_max = sm->ctx_max;
	sm->st.prefill_us_per_token = sm->prefill_ns_tok / 1e3;
	sm->st.decode_us_per_step = sm->decode_ns_step / 1e3;
	LOG_I(eng, "model %s %s loaded on device %u: self-test passed "
	      "(%u-token prompt, %u tokens) in %.3f s; load %.3f s; "
	      "prefill %.1f us/token, decode %.1f us/step",
	      sm->st.name, sm->st.version, sm->st.device,
	      sm->st.ka_prompt, sm->st.ka_expect, sm->st.selftest_s,
	      sm->st.load_s, sm->st.prefill_us_per_token,
	      sm->st.decode_us_per_step);
	return 0;
}

int eng_sched_model_load(struct eng_sched *s,
			 const struct eng_sched_model_config *mc, char *err,
			 size_t errlen)
{
	struct eng_sched_model *sm;
	struct eng_sched_cmd c = { .op = SCHED_CMD_INSTALL };
	int rc;

	err[0] = 0;
	if (s->started) {
		snprintf(err, errlen, "the scheduler is running (load before start)");
		return -EBUSY;
	}
	if (s->n_models >= ENG_SCHED_MODELS_MAX) {
		snprintf(err, errlen, "at most %d models", ENG_SCHED_MODELS_MAX);
		return -ENOSPC;
	}
	sm = slot_new(mc);
	if (!sm) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	rc = slot_load(s, sm, mc, err, errlen);
	/* A model that failed stays in the table (unrouted) with its
	 * reason, so that status commands show it. */
	c.sm = sm;
	c.route = rc ? ENG_ROUTE_NONE :
		  !strcmp(sm->st.label, "canary") ? ENG_ROUTE_CANARY :
		  ENG_ROUTE_PRODUCTION;
	c.share = mc->share;
	sched_cmd_exec(s, &c);
	if (c.rc) {
		snprintf(err, errlen, "%s", strerror(-c.rc));
		eng_sched_slot_free(s, sm);
		return c.rc;
	}
	if (!rc)
		LOG_I(eng, "model %s %s routed (id %u, %s)", sm->st.name,
		      sm->st.version, sm->st.id,
		      c.route == ENG_ROUTE_CANARY ? "canary" : "production");
	return rc;
}

int eng_sched_slot_load(struct eng_sched *s,
			const struct eng_sched_model_config *mc,
			struct eng_sched_model **out, char *err, size_t errlen)
{
	struct eng_sched_model *sm = slot_new(mc);
	int rc;

	*out = NULL;
	if (!sm) {
		snprintf(err, errlen, "out of memory");
		s->mctr[ENG_MODEL_CTR_load_failures]++;
		return -ENOMEM;
	}
	rc = slot_load(s, sm, mc, err, errlen);
	if (rc) {
		free(sm);
		s->mctr[ENG_MODEL_CTR_load_failures]++;
		return rc;
	}
	s->mctr[ENG_MODEL_CTR_loads]++;
	*out = sm;
	return 0;
}

const struct eng_sched_model_status *
eng_sched_slot_status(const struct eng_sched_model *sm)
{
	return &sm->st;
}

int eng_sched_slot_install(struct eng_sched *s, struct eng_sched_model *sm,
			   enum eng_route route, uint32_t share, unsigned *index)
{
	struct eng_sched_cmd c = { .op = SCHED_CMD_INSTALL, .sm = sm,
				   .route = (uint8_t)route, .share = share };
	int rc;

	pthread_mutex_lock(&s->slots_lock);
	rc = sched_cmd_run(s, &c);
	pthread_mutex_unlock(&s->slots_lock);
	if (!rc && index)
		*index = c.index;
	return rc;
}

int eng_sched_slot_route(struct eng_sched *s, unsigned index,
			 enum eng_route route, uint32_t share)
{
	struct eng_sched_cmd c = { .op = SCHED_CMD_ROUTE, .index = index,
				   .route = (uint8_t)route, .share = share };

	return sched_cmd_run(s, &c);
}

int eng_sched_slot_detach(struct eng_sched *s, unsigned index,
			  struct eng_sched_model **out)
{
	struct eng_sched_cmd c = { .op = SCHED_CMD_DETACH, .index = index };
	int rc;

	pthread_mutex_lock(&s->slots_lock);
	rc = sched_cmd_run(s, &c);
	pthread_mutex_unlock(&s->slots_lock);
	*out = rc ? NULL : c.sm;
	return rc;
}

enum eng_route eng_sched_slot_route_get(const struct eng_sched *s, unsigned index)
{
	const struct eng_sched_model *sm = index < s->n_models ? s->models[index] : NULL;

	return sm ? (enum eng_route)__atomic_load_n(&sm->route, __ATOMIC_ACQUIRE) :
		    ENG_ROUTE_NONE;
}

int eng_sched_slot_find(const struct eng_sched *s, const char *name,
			const char *version, int route)
{
	for (unsigned i = 0; i < s->n_models; i++) {
		const struct eng_sched_model *sm = s->models[i];

		if (!sm || strcmp(sm->st.name, name) ||
		    (version && strcmp(sm->st.version, version)) ||
		    (route >= 0 && sm->route != route))
			continue;
		return (int)i;
	}
	return -1;
}

unsigned eng_sched_model_count(const struct eng_sched *s)
{
	return __atomic_load_n(&s->n_models, __ATOMIC_ACQUIRE);
}

int eng_sched_model_status(struct eng_sched *s, unsigned i,
			   struct eng_sched_model_status *st)
{
	const struct eng_sched_model *sm;
	int rc = -ENOENT;

	pthread_mutex_lock(&s->slots_lock);
	sm = i < ENG_SCHED_MODELS_MAX ?
	     __atomic_load_n(&s->models[i], __ATOMIC_ACQUIRE) : NULL;
	if (sm) {
		/* a snapshot: the scheduler updates the gauges as it runs */
		*st = sm->st;
		st->route = (enum eng_route)sm->route;
		st->share = sm->share;
		st->served = __atomic_load_n(&sm->served, __ATOMIC_RELAXED);
		if (sm->st.state == ENG_MODEL_READY) {
			const uint64_t *kc = eng_kvc_counters(sm->kv);

			st->prefill_us_per_token = sm->prefill_ns_tok / 1e3;
			st->decode_us_per_step = sm->decode_ns_step / 1e3;
			st->kv_used = (uint32_t)ctr_read(&kc[ENG_KVC_CTR_blocks_used]);
			st->kv_free = (uint32_t)ctr_read(&kc[ENG_KVC_CTR_blocks_free]);
			st->kv_cached = (uint32_t)ctr_read(&kc[ENG_KVC_CTR_blocks_cached]);
		}
		rc = 0;
	}
	pthread_mutex_unlock(&s->slots_lock);
	return rc;
}

/* Ready: a routed slot and no failed one.  The scheduler's own view (no
 * lock: it owns the table). */
bool sched_ready(const struct eng_sched *s, char *why, size_t whylen)
{
	unsigned ready = 0;

	for (unsigned i = 0; i < s->n_models; i++) {
		const struct eng_sched_model *sm = s->models[i];

		if (!sm)
			continue;
		if (sm->st.state == ENG_MODEL_READY) {
			if (sm->route != ENG_ROUTE_NONE &&
			    sm->route != ENG_ROUTE_SHADOW)
				ready++;
		} else {
			if (why)
				snprintf(why, whylen, "model %s: %s", sm->st.name,
					 sm->st.why[0] ? sm->st.why : "not loaded");
			return false;
		}
	}
	if (!ready && why)
		snprintf(why, whylen, "no model routed");
	return ready > 0;
}

bool eng_sched_ready(const struct eng_sched *s, char *why, size_t whylen)
{
	struct eng_sched *w = (struct eng_sched *)s;	/* the lock only */
	bool ok;

	pthread_mutex_lock(&w->slots_lock);
	ok = sched_ready(s, why, whylen);
	pthread_mutex_unlock(&w->slots_lock);
	return ok;
}
