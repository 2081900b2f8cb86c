// SPDX-License-Identifier: MIT
/*
 * backend.c — the CPU backend's ops table: init (worker pool, kernel
 * choice), model load (checks every tensor, sizes one arena from the
 * budget, converts the small vectors to float32, builds the RoPE table),
 * step, logits, sample, KV copy.  The weights themselves are read in place
 * from wherever the loader put them (the image mapping).
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <velo/compiler.h>

#include "../../tools/lib/counters.h"
#include "../../tools/lib/log.h"
#include "../core/model_check.h"
#include "../core/tensor.h"
#include "cpu_priv.h"

static const struct ctr_desc cpu_ctr_desc[] = { foreach_cpu_counter(CTR_DESC) };

#define container_of(p, T, m) ((T *)((char *)(p) - offsetof(T, m)))

static inline struct cpu_backend *to_be(struct eng_backend *be)
{
	return container_of(be, struct cpu_backend, base);
}

static inline struct cpu_model *to_cm(struct eng_be_model *bm)
{
	return container_of(bm, struct cpu_model, base);
}

/* ---- init / fini -------------------------------------------------------- */

static int cpu_init(const struct eng_backend_budget *b, struct eng_backend **out)
{
	struct eng_backend_budget def = { 0 };
	struct cpu_backend *be;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	int rc;

	if (!b)
		b = &def;
	be = calloc(1, sizeof(*be));
	if (!be)
		return -ENOMEM;
	be->base.ops = &eng_cpu_ops;
	be->mem_bytes_max = b->mem_bytes_max;
	be->threads = b->cpu.threads ? b->cpu.threads :
		      (uint32_t)MIN(MAX(ncpu, 1), ENG_CPU_THREADS_MAX);
	if (be->threads > ENG_CPU_THREADS_MAX) {
		rc = -EINVAL;
		goto err_free;
	}
	be->kern = cpu_kern_get(b->cpu.isa);
	if (!be->kern) {
		LOG_E(eng, "cpu: this CPU lacks the requested kernels (isa %d)",
		      (int)b->cpu.isa);
		rc = -EINVAL;
		goto err_free;
	}
	be->pool = cpu_pool_create(be->threads, b->cpu.cores, b->cpu.spin_us);
	if (!be->pool) {
		rc = -errno;
		goto err_free;
	}
	/* The registry may be full (tests create many backends): counters
	 * then stay readable through the model info only. */
	if (ctr_block_register("eng_cpu", cpu_ctr_desc, be->ctr, CPU_CTR__COUNT))
		LOG_W(eng, "cpu: counter registry full");
	LOG_I(eng, "cpu backend: %u threads, %s kernels", be->threads,
	      be->kern->name);
	*out = &be->base;
	return 0;

err_free:
	free(be);
	return rc;
}

static void cpu_fini(struct eng_backend *ebe)
{
	struct cpu_backend *be;

	if (!ebe)
		return;
	be = to_be(ebe);
	VERIFY(be->n_models == 0);
	ctr_block_unregister(be->ctr);
	cpu_pool_destroy(be->pool);
	free(be);
}

static int cpu_health(const struct eng_backend *ebe, const char **why)
{
	const struct cpu_backend *be =
		container_of(ebe, const struct cpu_backend, base);
	int h = __atomic_load_n(&be->health, __ATOMIC_RELAXED);

	if (why)
		*why = h ? be->why : "ok";
	return h;
}

/* ---- model checks ------------------------------------------------------- */


/* ---- arena -------------------------------------------------------------- */

struct arena {
	char *base;
	size_t off;
};

/* Pass 1 (base NULL) measures, pass 2 hands out 64-byte aligned slices. */
static void *carve(struct arena *a, size_t bytes)
{
	void *p;

	a->off = ALIGN_UP(a->off, (size_t)64);
	p = a->base ? a->base + a->off : NULL;
	a->off += bytes;
	return p;
}

static void layout(struct cpu_model *cm, struct arena *a, uint32_t threads)
{
	const struct eng_model_budget *b = &cm->bud;
	size_t T = b->step_tokens_max, S = b->seqs_max, L = cm->n_layers, f = 4;
	size_t kv = (size_t)L * b->kv_blocks * cm->n_kv * cm->B * cm->hd;
	bool qkvb = cm->m->cfg.qkv_bias, ob = cm->m->cfg.o_bias;

	/* one term per consumer, in floats */
	cm->attn_norm = carve(a, f * L * cm->hidden);
	cm->ffn_norm = carve(a, f * L * cm->hidden);
	cm->final_norm = carve(a, f * cm->hidden);
	cm->bq = qkvb ? carve(a, f * L * cm->q_dim) : NULL;
	cm->bk = qkvb ? carve(a, f * L * cm->kv_dim) : NULL;
	cm->bv = qkvb ? carve(a, f * L * cm->kv_dim) : NULL;
	cm->bo = ob ? carve(a, f * L * cm->hidden) : NULL;
	cm->rope_cos = carve(a, f * cm->ctx_max * (cm->hd / 2));
	cm->rope_sin = carve(a, f * cm->ctx_max * (cm->hd / 2));
	cm->kc = carve(a, f * kv);	/* KV pool: the bulk, usually */
	cm->vc = carve(a, f * kv);
	cm->x = carve(a, f * T * cm->hidden);
	cm->xb = carve(a, f * T * cm->hidden);
	cm->xp = carve(a, f * T * cm->kmax);
	cm->q = carve(a, f * T * cm->q_dim);
	cm->k = carve(a, f * T * cm->kv_dim);
	cm->v = carve(a, f * T * cm->kv_dim);
	cm->att = carve(a, f * T * cm->q_dim);
	cm->hb = carve(a, f * T * cm->ffn);
	cm->hb2 = carve(a, f * T * cm->ffn);
	cm->xl = carve(a, f * S * cm->hidden);
	cm->xlp = carve(a, f * S * cm->kmax);
	cm->logits = carve(a, f * S * cm->vocab);
	cm->tok_id = carve(a, 4 * T);
	cm->tok_seq = carve(a, 4 * T);
	cm->tok_pos = carve(a, 4 * T);
	cm->seq_logit_row = carve(a, 4 * S);
	cm->logit_tok = carve(a, 4 * S);
	cm->blk_stamp = carve(a, 4 * (size_t)b->kv_blocks);
	cm->tile_stride = ALIGN_UP(cpu_tile_floats(cm->kmax), (size_t)16);
	cm->scores_stride = ALIGN_UP((size_t)cm->ctx_max, (size_t)16);
	cm->xbw_stride = ALIGN_UP(T * cm->hidden, (size_t)16);
	cm->xbw = carve(a, f * threads * cm->xbw_stride);
	cm->xpw = cm->perm_hidden ? carve(a, f * threads * cm->xbw_stride) : NULL;
	cm->tile = carve(a, f * threads * cm->tile_stride);
	cm->scores = carve(a, f * threads * cm->scores_stride);
}

static uint64_t weight_bytes(const struct eng_tensor *t)
{
	uint64_t n = (uint64_t)t->rows * eng_row_bytes(t->dtype, t->cols);

	if (t->dtype == ENG_DT_FP8_E4M3)
		n += (uint64_t)t->rows * 4;
	else if (t->dtype == ENG_DT_INT4_G128)
		n += (uint64_t)t->rows * (t->cols / ENG_INT4_GROUP) * 2;
	return n;
}

/* ---- load / unload ------------------------------------------------------ */

/* The CPU kernels take any even head_dim up to 1024 and any dimensions;
 * INT4 rows are walked by group. */
static const struct eng_model_limits cpu_limits = {
	.who = "cpu", .head_dim_max = 1024, .dim_multiple = 1, .col_multiple = NULL,
};

static int cpu_model_load(struct eng_backend *ebe, const struct eng_model *m,
			  const struct eng_model_budget *b,
			  struct eng_be_model **out)
{
	struct cpu_backend *be = to_be(ebe);
	const struct eng_model_config *c;
	struct cpu_model *cm;
	struct arena a = { 0 };
	uint32_t ctx;
	int rc;

	if (be->health)
		return -ENODEV;
	if (!m || !b || !out)
		return -EINVAL;
	rc = eng_model_check(m, &cpu_limits) ?: eng_model_budget_check(b, "cpu");
	if (!rc && b->kv_dtype != ENG_KV_F32) {
		LOG_E(eng, "cpu: only a float32 KV cache is supported");
		rc = -EOPNOTSUPP;
	}
	if (rc)
		goto err_count;
	c = &m->cfg;
	cm = calloc(1, sizeof(*cm));
	if (!cm) {
		rc = -ENOMEM;
		goto err_count;
	}
	cm->base.be = ebe;
	cm->be = be;
	cm->m = m;
	cm->kern = be->kern;
	cm->bud = *b;
	cm->B = b->kv_block_tokens ? b->kv_block_tokens : ENG_KV_BLOCK_TOKENS_DEFAULT;
	cm->bud.kv_block_tokens = cm->B;
	cm->b_shift = (uint32_t)__builtin_ctz(cm->B);
	cm->n_layers = c->n_layers;
	cm->hidden = c->hidden;
	cm->n_heads = c->n_heads;
	cm->n_kv = c->n_kv_heads;
	cm->hd = c->head_dim;
	cm->q_dim = c->n_heads * c->head_dim;
	cm->kv_dim = c->n_kv_heads * c->head_dim;
	cm->ffn = c->ffn;
	cm->vocab = c->vocab_size;
	cm->kmax = MAX(MAX(cm->hidden, cm->q_dim), cm->ffn);
	ctx = b->seq_blocks_max * cm->B;
	cm->ctx_max = c->max_seq ? MIN(ctx, c->max_seq) : ctx;
	cm->att_scale = (float)(1.0 / sqrt((double)cm->hd));
	cm->window = c->sliding_window;
	cm->lm_head = m->lm_head.data ? &m->lm_head : &m->embed;
	cm->kv_block_stride = (size_t)cm->n_kv * cm->B * cm->hd;
	cm->kv_layer_stride = (size_t)b->kv_blocks * cm->kv_block_stride;
	if (cm->kern->x_perm_block) {
		/* Layers share dtypes in practice; check them all anyway. */
		for (uint32_t l = 0; l < cm->n_layers; l++) {
			const struct eng_layer_weights *w = &m->layers[l];

			cm->perm_hidden |= w->wq.dtype == ENG_DT_INT4_G128 ||
					   w->wk.dtype == ENG_DT_INT4_G128 ||
					   w->wv.dtype == ENG_DT_INT4_G128 ||
					   w->w_gate.dtype == ENG_DT_INT4_G128 ||
					   w->w_up.dtype == ENG_DT_INT4_G128;
			cm->perm_q |= w->wo.dtype == ENG_DT_INT4_G128;
			cm->perm_ffn |= w->w_down.dtype == ENG_DT_INT4_G128;
		}
		cm->perm_lm = cm->lm_head->dtype == ENG_DT_INT4_G128;
	}

	layout(cm, &a, be->threads);
	cm->arena_len = ALIGN_UP(a.off, (size_t)4096);
	if (be->mem_bytes_max &&
	    be->mem_bytes_used + cm->arena_len > be->mem_bytes_max) {
		LOG_E(eng, "cpu: model needs %zu bytes, budget leaves %llu",
		      cm->arena_len,
		      (unsigned long long)(be->mem_bytes_max - be->mem_bytes_used));
		rc = -ENOMEM;
		goto err_free_cm;
	}
	/* Zeroed and faulted in now, not on the first step. */
	cm->arena = mmap(NULL, cm->arena_len, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (cm->arena == MAP_FAILED) {
		cm->arena = NULL;
		rc = -ENOMEM;
		goto err_free_cm;
	}
	a = (struct arena){ .base = cm->arena };
	layout(cm, &a, be->threads);
	rc = eng_sampler_scratch_init(&cm->samp, cm->vocab);
	if (rc)
		goto err_unmap;

	for (uint32_t l = 0; l < cm->n_layers; l++) {
		const struct eng_layer_weights *w = &m->layers[l];

		eng_vec_to_f32(&w->attn_norm, cm->attn_norm + (size_t)l * cm->hidden, cm->hidden);
		eng_vec_to_f32(&w->ffn_norm, cm->ffn_norm + (size_t)l * cm->hidden, cm->hidden);
		if (cm->bq) {
			eng_vec_to_f32(&w->bq, cm->bq + (size_t)l * cm->q_dim, cm->q_dim);
			eng_vec_to_f32(&w->bk, cm->bk + (size_t)l * cm->kv_dim, cm->kv_dim);
			eng_vec_to_f32(&w->bv, cm->bv + (size_t)l * cm->kv_dim, cm->kv_dim);
		}
		if (cm->bo)
			eng_vec_to_f32(&w->bo, cm->bo + (size_t)l * cm->hidden, cm->hidden);
	}
	eng_vec_to_f32(&m->final_norm, cm->final_norm, cm->hidden);
	eng_rope_tables(&cm->m->cfg, cm->hd, cm->ctx_max, cm->rope_cos, cm->rope_sin);

	be->mem_bytes_used += cm->arena_len;
	be->n_models++;
	be->ctr[CTR_models_loaded]++;
	LOG_I(eng, "cpu: loaded %s: %u layers, hidden %u, %u KV blocks of %u, ctx %u, %zu MiB",
	      m->name[0] ? m->name : "model", cm->n_layers, cm->hidden,
	      b->kv_blocks, cm->B, cm->ctx_max, cm->arena_len >> 20);
	*out = &cm->base;
	return 0;

err_unmap:
	munmap(cm->arena, cm->arena_len);
err_free_cm:
	free(cm);
err_count:
	be->ctr[CTR_load_errors]++;
	return rc;
}

static void cpu_model_unload(struct eng_be_model *bm)
{
	struct cpu_model *cm;

	if (!bm)
		return;
	cm = to_cm(bm);
	eng_sampler_scratch_fini(&cm->samp);
	munmap(cm->arena, cm->arena_len);
	cm->be->mem_bytes_used -= cm->arena_len;
	cm->be->n_models--;
	free(cm);
}

static void cpu_model_info(const struct eng_be_model *bm,
			   struct eng_be_model_info *info)
{
	const struct cpu_model *cm = container_of(bm, const struct cpu_model, base);
	const struct eng_model *m = cm->m;
	uint64_t wb = weight_bytes(cm->lm_head);

	for (uint32_t l = 0; l < cm->n_layers; l++) {
		const struct eng_layer_weights *w = &m->layers[l];

		wb += weight_bytes(&w->wq) + weight_bytes(&w->wk) +
		      weight_bytes(&w->wv) + weight_bytes(&w->wo) +
		      weight_bytes(&w->w_gate) + weight_bytes(&w->w_up) +
		      weight_bytes(&w->w_down);
	}
	memset(info, 0, sizeof(*info));
	info->mem_bytes = cm->arena_len + cm->samp.mem_len;
	info->kv_bytes = 2ull * 4 * cm->n_layers * cm->kv_layer_stride;
	info->weight_bytes = wb;
	info->ctx_max = cm->ctx_max;
	info->kv_block_tokens = cm->B;
	info->kernels = cm->kern->name;
	info->threads = cm->be->threads;
}

/* ---- step and results --------------------------------------------------- */

static int cpu_step(struct eng_be_model *bm, const struct eng_batch *batch)
{
	struct cpu_model *cm = to_cm(bm);
	int rc;

	if (unlikely(cm->be->health))
		return -ENODEV;
	rc = cpu_forward(cm, batch);
	if (unlikely(rc)) {
		cm->be->ctr[rc == -E2BIG ? CTR_over_budget : CTR_bad_batches]++;
		return rc;
	}
	cm->be->ctr[CTR_steps]++;
	cm->be->ctr[CTR_step_tokens] += cm->T;
	cm->be->ctr[CTR_step_logits] += cm->n_logits;
	return 0;
}

static int cpu_logits(struct eng_be_model *bm, uint32_t seq, const float **out)
{
	struct cpu_model *cm = to_cm(bm);

	if (!cm->have_step)
		return -ENOENT;
	if (seq >= cm->last_n_seqs)
		return -EINVAL;
	if (cm->seq_logit_row[seq] < 0)
		return -ENOENT;
	*out = cm->logits + (size_t)cm->seq_logit_row[seq] * cm->vocab;
	return 0;
}

static int cpu_sample(struct eng_be_model *bm, struct eng_sampler *const *s,
		      uint32_t n, uint32_t *tokens)
{
	struct cpu_model *cm = to_cm(bm);

	if (unlikely(cm->be->health))
		return -ENODEV;
	if (!cm->have_step || n != cm->last_n_seqs)
		return -EINVAL;
	for (uint32_t i = 0; i < n; i++) {
		int32_t row = cm->seq_logit_row[i];
		int rc;

		if (!s[i])
			continue;
		if (row < 0)
			return -EINVAL;
		rc = eng_sampler_sample(s[i], &cm->samp,
					cm->logits + (size_t)row * cm->vocab,
					cm->vocab, &tokens[i]);
		if (unlikely(rc)) {
			cm->be->ctr[CTR_sample_errors]++;
			return rc;
		}
		cm->be->ctr[CTR_samples]++;
	}
	return 0;
}

static int cpu_kv_copy(struct eng_be_model *bm, const uint32_t *src,
		       const uint32_t *dst, uint32_t n)
{
	struct cpu_model *cm = to_cm(bm);
	size_t bytes = cm->kv_block_stride * 4;

	for (uint32_t i = 0; i < n; i++)
		if (src[i] >= cm->bud.kv_blocks || dst[i] >= cm->bud.kv_blocks ||
		    src[i] == dst[i])
			return -EINVAL;
	for (uint32_t i = 0; i < n; i++)
		for (uint32_t l = 0; l < cm->n_layers; l++) {
			size_t so = l * cm->kv_layer_stride + src[i] * cm->kv_block_stride;
			size_t d = l * cm->kv_layer_stride + dst[i] * cm->kv_block_stride;

			memcpy(cm->kc + d, cm->kc + so, bytes);
			memcpy(cm->vc + d, cm->vc + so, bytes);
		}
	cm->be->ctr[CTR_kv_copies] += n;
	return 0;
}

const struct eng_backend_ops eng_cpu_ops = {
	.name = "cpu",
	.init = cpu_init,
	.fini = cpu_fini,
	.model_load = cpu_model_load,
	.model_unload = cpu_model_unload,
	.step = cpu_step,
	.logits = cpu_logits,
	.sample = cpu_sample,
	.kv_copy = cpu_kv_copy,
	.model_info = cpu_model_info,
	.health = cpu_health,
};
