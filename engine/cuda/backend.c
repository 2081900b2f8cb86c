// SPDX-License-Identifier: MIT
/*
 * backend.c — the CUDA backend's ops table: init (driver through dlopen,
 * primary context, the embedded fatbin), model load (checks, one device
 * block for the weights and one for everything else, sized from the
 * budget; weights copied from the image through two pinned staging
 * buffers), and the host side of a step (validation, one copy of the
 * step's token/position/block-table arrays, kernel launches on the
 * model's stream, device argmax).  The forward pass is forward.c.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <velo/compiler.h>

#include "../../tools/lib/counters.h"
#include "../../tools/lib/log.h"
#include "../core/image.h"
#include "../core/model_check.h"
#include "../core/tensor.h"
#include "cuda_fwd.h"
#include "cuda_lt.h"
#include "cuda_priv.h"

_Static_assert(sizeof(struct cuda_mv_args) == 3 * 8 * 4 + 3 * 4 * 2 + 4 * 4 * 2 + 8 + 4 * 6 + 8 * 2,
	       "cuda_mv_args layout shared with kernels.cu");
_Static_assert(sizeof(struct cuda_attn_args) == 8 * 8 + 8 + 4 * 10,
	       "cuda_attn_args layout shared with kernels.cu");
_Static_assert(sizeof(struct cuda_lt_epi_args) == 5 * 8 + 6 * 4,
	       "cuda_lt_epi_args layout shared with kernels.cu");
_Static_assert(sizeof(struct cuda_samp_row) == 8 + 4 * 8 + 8 * CUDA_SAMP_BIAS_MAX &&
	       CUDA_SAMP_BIAS_MAX == ENG_SAMPLER_BIAS_MAX,
	       "cuda_samp_row layout shared with k_sample.cuh");
_Static_assert(sizeof(struct cuda_mma_args) == 3 * 8 + 2 * 4,
	       "cuda_mma_args layout shared with k_mma.cuh");

static const struct ctr_desc cuda_ctr_desc[] = { foreach_cuda_counter(CTR_DESC) };

#define container_of(p, T, m) ((T *)((char *)(p) - offsetof(T, m)))

static inline struct cuda_backend *to_be(struct eng_backend *be)
{
	return container_of(be, struct cuda_backend, base);
}

static inline struct cuda_model *to_cm(struct eng_be_model *bm)
{
	return container_of(bm, struct cuda_model, base);
}

static inline bool be_down(const struct cuda_backend *be)
{
	return __atomic_load_n(&be->health, __ATOMIC_ACQUIRE) != 0;
}

static inline void ctr_add(struct cuda_backend *be, int c, uint64_t n)
{
	__atomic_fetch_add(&be->ctr[c], n, __ATOMIC_RELAXED);
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* ---- init / fini -------------------------------------------------------- */

static const char *const dt_names[CUDA_N_DT] = { "f32", "bf16", "f16", "fp8", "int4" };
static const unsigned nt_of[CUDA_N_NT] = { 1, 2, 4, 8 };

static int get_functions(struct cuda_backend *be)
{
	struct cuda_api *a = &be->api;
	char name[48];
	int rc = 0;

	for (int d = 0; d < CUDA_N_DT && !rc; d++) {
		for (int n = 0; n < CUDA_N_NT && !rc; n++) {
			snprintf(name, sizeof(name), "k_mv_%s_%u", dt_names[d], nt_of[n]);
			rc = CU_CHECK(be, a->cuModuleGetFunction(&be->f_mv[d][n], be->mod, name));
		}
		snprintf(name, sizeof(name), "k_mm_%s", dt_names[d]);
		rc = rc ?: CU_CHECK(be, a->cuModuleGetFunction(&be->f_mm[d], be->mod, name));
		/* the tensor-core GEMM: every weight dtype but F32 */
		for (int sp = 1; sp <= 2 && d != CUDA_DT_F32 && !rc; sp++) {
			snprintf(name, sizeof(name), "k_mma_%s_%d", dt_names[d], sp);
			rc = CU_CHECK(be, a->cuModuleGetFunction(&be->f_mma[d][sp - 1], be->mod,
								 name));
		}
	}
	return rc ?:
	       CU_CHECK(be, a->cuModuleGetFunction(&be->f_mma_xq, be->mod, "k_mma_xq")) ?:
	       CU_CHECK(be, a->cuModuleGetFunction(&be->f_embed, be->mod, "k_embed")) ?:
	       CU_CHECK(be, a->cuModuleGetFunction(&be->f_rmsnorm, be->mod, "k_rmsnorm")) ?:
	       CU_CHECK(be, a->cuModuleGetFunction(&be->f_swiglu, be->mod, "k_swiglu")) ?:
	       CU_CHECK(be, a->cuModuleGetFunction(&be->f_rope, be->mod, "k_rope_store")) ?:
	       CU_CHECK(be, a->cuModuleGetFunction(&be->f_attn[0], be->mod, "k_attn_f32")) ?:
	       CU_CHECK(be, a->cuModuleGetFunction(&be->f_attn[1], be->mod, "k_attn_bf16")) ?:
	       CU_CHECK(be, a->cuModuleGetFunction(&be->f_merge, be->mod, "k_attn_merge")) ?:
	       CU_CHECK(be, a->cuModuleGetFunction(&be->f_argmax, be->mod, "k_argmax")) ?:
	       CU_CHECK(be, a->cuModuleGetFunction(&be->f_mvt[0][0], be->mod, "k_mvt_fp8_8")) ?:
	       CU_CHECK(be, a->cuModuleGetFunction(&be->f_mvt[0][1], be->mod, "k_mvt_fp8_16")) ?:
	       CU_CHECK(be, a->cuModuleGetFunction(&be->f_mvt[1][0], be->mod, "k_mvt_int4_8")) ?:
	       CU_CHECK(be, a->cuModuleGetFunction(&be->f_mvt[1][1], be->mod, "k_mvt_int4_16")) ?:
	       CU_CHECK(be, a->cuModuleGetFunction(&be->f_copy, be->mod, "k_copy16")) ?:
	       CU_CHECK(be, a->cuModuleGetFunction(&be->f_sample, be->mod, "k_sample")) ?:
	       CU_CHECK(be, a->cuModuleGetFunction(&be->f_ltq_fp8, be->mod, "k_ltq_fp8")) ?:
	       CU_CHECK(be, a->cuModuleGetFunction(&be->f_ltq_bf16, be->mod, "k_ltq_bf16")) ?:
	       CU_CHECK(be, a->cuModuleGetFunction(&be->f_lt_deq4, be->mod, "k_lt_deq4")) ?:
	       CU_CHECK(be, a->cuModuleGetFunction(&be->f_lt_deq8, be->mod, "k_lt_deq8")) ?:
	       CU_CHECK(be, a->cuModuleGetFunction(&be->f_lt_epi, be->mod, "k_lt_epi")) ?:
	       CU_CHECK(be, a->cuModuleGetFunction(&be->f_flash[0], be->mod, "k_flash_f32")) ?:
	       CU_CHECK(be, a->cuModuleGetFunction(&be->f_flash[1], be->mod, "k_flash_bf16"));
}

/*
 * Defaults of the optional routes (each overridden by its environment
 * variable, docs/cuda.md "Optional routes"), set from the H200/H100 runs of
 * 2026-11-27 (commits bcf8583, 3683cdc), where every parity check of each
 * route passed:
 *   VELO_CUDA_FLASH=1   tiled prefill attention
 *   VELO_CUDA_GRAPHS=1  decode steps replayed from CUDA graphs (batch-1
 *                       decode 4.05 ms/token instead of 4.71, 8B FP8)
 *   VELO_CUDA_LT=0      cuBLASLt stays opt-in although it cuts TTFT at 512
 *                       tokens from 289 ms to 45 (=2, 8B FP8): cuBLASLt
 *                       allocates host memory inside cublasLtMatmul (1,680
 *                       allocations in test_sched's no-allocation test with
 *                       LT=2 alone, none with FLASH or GRAPHS alone), which
 *                       breaks the rule that nothing allocates in a step,
 *                       and its BF16-rounded activations make outputs depend
 *                       on how a prompt is chunked and batched; =1 (E4M3 x
 *                       E4M3) lay 0.52 rel L2 from the reference besides
 */
#define CUDA_LT_DEFAULT 0
/*
 * VELO_CUDA_MMA: products of more than 16 tokens on the tensor-core GEMM
 * (k_mma.cuh) instead of the CUDA-core k_mm: 2 = activations as f16 hi +
 * lo (~22 bits, two MMAs), 1 = hi only (11 bits), 0 = k_mm.  Batch
 * invariant and allocation-free either way; 2 keeps the products within
 * the f32 parity bounds (docs/cuda.md "Tensor-core GEMM").
 */
#define CUDA_MMA_DEFAULT 2
#define CUDA_FLASH_DEFAULT 1
#define CUDA_GRAPHS_DEFAULT 1
#define CUDA_MVT_DEFAULT 1

/* A non-negative integer from the environment, @def when unset or bad. */
static uint32_t env_uint(const char *name, uint32_t def)
{
	const char *v = getenv(name);
	char *end;
	unsigned long n;

	if (!v || !*v)
		return def;
	n = strtoul(v, &end, 10);
	return *end || n > UINT32_MAX ? def : (uint32_t)n;
}

static int cuda_init(const struct eng_backend_budget *b, struct eng_backend **out)
{
	struct eng_backend_budget def = { 0 };
	struct cuda_backend *be;
	char why[192];
	const char *inj = getenv("VELO_CUDA_FAIL_NTH");
	int n_dev = 0, drv = 0, rc;
	CUresult r;

	if (!b)
		b = &def;
	if (b->device < 0)
		return -EINVAL;
	be = calloc(1, sizeof(*be));
	if (!be)
		return -ENOMEM;
	be->base.ops = &eng_cuda_ops;
	be->mem_bytes_max = b->mem_bytes_max;
	be->fail_nth = inj ? strtol(inj, NULL, 10) : 0;
	be->mvt = env_uint("VELO_CUDA_MVT", CUDA_MVT_DEFAULT);
	rc = cuda_api_load(&be->api, why, sizeof(why));
	if (rc) {
		LOG_W(eng, "cuda: %s", why);
		goto err_free;
	}
	r = be->api.cuInit(0);
	if (r != CUDA_SUCCESS) {
		const char *nm = NULL;

		be->api.cuGetErrorName(r, &nm);
		LOG_W(eng, "cuda: cuInit: %s: no usable GPU", nm ? nm : "?");
		rc = -ENODEV;
		goto err_unload;
	}
	be->api.cuDriverGetVersion(&drv);
	if (be->api.cuDeviceGetCount(&n_dev) != CUDA_SUCCESS || b->device >= n_dev) {
		LOG_W(eng, "cuda: device %d requested, %d present", b->device, n_dev);
		rc = -ENODEV;
		goto err_unload;
	}
	rc = CU_CHECK(be, be->api.cuDeviceGet(&be->dev, b->device)) ?:
	     CU_CHECK(be, be->api.cuDeviceGetName(be->name, sizeof(be->name), be->dev)) ?:
	     CU_CHECK(be, be->api.cuDeviceGetAttribute(&be->sm_count,
			CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, be->dev)) ?:
	     CU_CHECK(be, be->api.cuDeviceGetAttribute(&be->cc_major,
			CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, be->dev)) ?:
	     CU_CHECK(be, be->api.cuDeviceGetAttribute(&be->cc_minor,
			CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, be->dev));
	if (rc) {
		rc = -ENODEV;
		goto err_unload;
	}
	{
		size_t tm = 0;

		be->api.cuDeviceTotalMem(&tm, be->dev);
		be->total_mem = tm;
	}
	if (be->cc_major != 9 || be->cc_minor != 0) {
		/* The fatbin holds sm_90a code only (Hopper). */
		LOG_W(eng, "cuda: %s is sm_%d%d; this build has kernels for sm_90 only",
		      be->name, be->cc_major, be->cc_minor);
		rc = -ENODEV;
		goto err_unload;
	}
	rc = CU_CHECK(be, be->api.cuDevicePrimaryCtxRetain(&be->ctx, be->dev));
	if (rc) {
		rc = -ENODEV;
		goto err_unload;
	}
	rc = CU_CHECK(be, be->api.cuCtxSetCurrent(be->ctx)) ?:
	     CU_CHECK(be, be->api.cuModuleLoadData(&be->mod, eng_cuda_fatbin));
	if (rc) {
		rc = -ENODEV;
		goto err_ctx;
	}
	rc = get_functions(be);
	if (rc) {
		rc = -ENODEV;
		goto err_mod;
	}
	/* cuBLASLt only when asked for (VELO_CUDA_LT=1 or 2, see above);
	 * absent: the CUDA-core products serve everything */
	if (env_uint("VELO_CUDA_LT", CUDA_LT_DEFAULT))
		cuda_lt_open(be);
	if (ctr_block_register("eng_cuda", cuda_ctr_desc, be->ctr, CUDA_CTR__COUNT))
		LOG_W(eng, "cuda: counter registry full");
	LOG_I(eng, "cuda backend: %s (sm_%d%d, %d SMs, %llu MiB), driver %d.%d, fatbin %zu KiB",
	      be->name, be->cc_major, be->cc_minor, be->sm_count,
	      (unsigned long long)(be->total_mem >> 20), drv / 1000, drv % 1000 / 10,
	      (size_t)(eng_cuda_fatbin_end - eng_cuda_fatbin) >> 10);
	*out = &be->base;
	return 0;

err_mod:
	be->api.cuModuleUnload(be->mod);
err_ctx:
	be->api.cuDevicePrimaryCtxRelease(be->dev);
err_unload:
	cuda_api_unload(&be->api);
err_free:
	free(be);
	return rc;
}

static void cuda_fini(struct eng_backend *ebe)
{
	struct cuda_backend *be;

	if (!ebe)
		return;
	be = to_be(ebe);
	VERIFY(__atomic_load_n(&be->n_models, __ATOMIC_ACQUIRE) == 0);
	ctr_block_unregister(be->ctr);
	cuda_lt_close(be);
	be->api.cuCtxSetCurrent(be->ctx);
	be->api.cuModuleUnload(be->mod);
	be->api.cuDevicePrimaryCtxRelease(be->dev);
	cuda_api_unload(&be->api);
	free(be);
}

static int cuda_health(const struct eng_backend *ebe, const char **why)
{
	const struct cuda_backend *be =
		container_of(ebe, const struct cuda_backend, base);
	int h = __atomic_load_n(&be->health, __ATOMIC_ACQUIRE);

	if (why)
		*why = h ? be->why : "ok";
	return h;
}

/* ---- model checks ------------------------------------------------------- */

/* Elements per 16-byte chunk the GEMV reads; cols must be a multiple. */
static uint32_t chunk_elems(enum eng_dtype d)
{
	switch (d) {
	case ENG_DT_F32:
		return 4;
	case ENG_DT_BF16:
	case ENG_DT_F16:
		return 8;
	case ENG_DT_FP8_E4M3:
		return 16;
	case ENG_DT_INT4_G128:
		return 128;
	default:
		return 0;
	}
}

/* What the kernels need of a matrix: input rows walked in 16-byte chunks,
 * 8 elements at least (the GEMV's vector loads). */
static uint32_t cuda_col_multiple(enum eng_dtype dt)
{
	return MAX(chunk_elems(dt), 8u);
}

static const struct eng_model_limits cuda_limits = {
	.who = "cuda", .head_dim_max = 256, .dim_multiple = 8,
	.col_multiple = cuda_col_multiple,
};

static size_t scale_bytes(const struct eng_tensor *t)
{
	if (t->dtype == ENG_DT_FP8_E4M3)
		return (size_t)t->rows * 4;
	if (t->dtype == ENG_DT_INT4_G128)
		return (size_t)t->rows * (t->cols / ENG_INT4_GROUP) * 2;
	return 0;
}

/* ---- layout ------------------------------------------------------------- */

/* Device offsets: pass 1 (base 0, measuring) and pass 2 alike. */
struct dev_arena {
	CUdeviceptr base;
	size_t off;
};

static CUdeviceptr dcarve(struct dev_arena *a, size_t bytes)
{
	CUdeviceptr p;

	a->off = ALIGN_UP(a->off, (size_t)256);
	p = a->base + a->off;
	a->off += bytes;
	return p;
}

static void tensor_carve(struct dev_arena *a, struct cuda_tensor *d,
			 const struct eng_tensor *t)
{
	d->dt = (int)t->dtype;
	d->rows = t->rows;
	d->cols = t->cols;
	d->data = dcarve(a, (size_t)t->rows * eng_row_bytes(t->dtype, t->cols));
	d->scales = scale_bytes(t) ? dcarve(a, scale_bytes(t)) : 0;
}

/* Weights, f32 vectors and the RoPE tables: the block the upload fills. */
static void layout_weights(struct cuda_model *cm, struct dev_arena *a)
{
	const struct eng_model *m = cm->m;
	size_t f = 4, H = cm->hidden, half = cm->hd / 2;
	bool tied = !m->lm_head.data || m->lm_head.data == m->embed.data;

	tensor_carve(a, &cm->embed, &m->embed);
	if (tied)
		cm->lm_head = cm->embed;
	else
		tensor_carve(a, &cm->lm_head, &m->lm_head);
	for (uint32_t l = 0; l < cm->n_layers; l++) {
		const struct eng_layer_weights *w = &m->layers[l];
		struct cuda_layer *d = &cm->layers[l];

		tensor_carve(a, &d->wq, &w->wq);
		tensor_carve(a, &d->wk, &w->wk);
		tensor_carve(a, &d->wv, &w->wv);
		tensor_carve(a, &d->wo, &w->wo);
		tensor_carve(a, &d->w_gate, &w->w_gate);
		tensor_carve(a, &d->w_up, &w->w_up);
		tensor_carve(a, &d->w_down, &w->w_down);
		d->attn_norm = dcarve(a, f * H);
		d->ffn_norm = dcarve(a, f * H);
		d->bq = w->bq.data ? dcarve(a, f * cm->q_dim) : 0;
		d->bk = w->bk.data ? dcarve(a, f * cm->kv_dim) : 0;
		d->bv = w->bv.data ? dcarve(a, f * cm->kv_dim) : 0;
		d->bo = w->bo.data ? dcarve(a, f * H) : 0;
	}
	cm->final_norm = dcarve(a, f * H);
	cm->rope_cos = dcarve(a, f * cm->ctx_max * half);
	cm->rope_sin = dcarve(a, f * cm->ctx_max * half);
}

static void in_layout(struct cuda_model *cm)
{
	struct cuda_in_layout *in = &cm->in;
	size_t T = cm->bud.step_tokens_max, S = cm->bud.seqs_max, o = 0;

	in->tok_id = o, o += T;
	in->tok_pos = o, o += T;
	in->tok_seq = o, o += T;
	in->tok_blk = o, o += T;
	in->tok_slot = o, o += T;
	in->logit_tok = o, o += S;
	in->tiles = o, o += 2 * (T + S);	/* flash query tiles: <= T/16 + S */
	o = ALIGN_UP(o, (size_t)4);
	in->tables = o, o += S * cm->table_ld;
	in->words = o;
}

/* KV pool, activations, workspaces, step inputs: one block, one term each. */
static void layout_act(struct cuda_model *cm, struct dev_arena *a)
{
	const struct eng_model_budget *b = &cm->bud;
	size_t T = b->step_tokens_max, S = b->seqs_max, f = 4;

	cm->kv_blk_elems = (size_t)cm->n_kv * cm->B * cm->hd;
	cm->kv_layer_elems = (size_t)b->kv_blocks * cm->kv_blk_elems;
	cm->kc = dcarve(a, cm->kv_esz * cm->n_layers * cm->kv_layer_elems);
	cm->vc = dcarve(a, cm->kv_esz * cm->n_layers * cm->kv_layer_elems);
	cm->x = dcarve(a, f * T * cm->hidden);		/* residual stream */
	cm->xb = dcarve(a, f * T * cm->hidden);		/* normed */
	cm->q = dcarve(a, f * T * cm->q_dim);
	cm->k = dcarve(a, f * T * cm->kv_dim);
	cm->v = dcarve(a, f * T * cm->kv_dim);
	cm->att = dcarve(a, f * T * cm->q_dim);
	cm->hb = dcarve(a, f * T * cm->ffn);
	cm->hb2 = dcarve(a, f * T * cm->ffn);
	cm->xl = dcarve(a, f * S * cm->hidden);
	cm->logits = dcarve(a, f * S * cm->vocab);
	/* Attention splits: up to 64 per decode sequence (a 4096-position
	 * context in splits of 64), or 2 per prompt token. */
	cm->part_slots = MAX(64 * S, 2 * T) * cm->n_heads;
	cm->part = dcarve(a, f * cm->part_slots * (cm->hd + 2));
	cm->mvt_cap = cuda_mvt_part_tiles(cm);
	cm->mvt_part = cm->mvt_cap ? dcarve(a, f * 64 * 16 * cm->mvt_cap) : 0;
	cm->mvt_sem = cm->mvt_cap ? dcarve(a, 4 * cm->mvt_cap) : 0;
	cm->d_in = dcarve(a, 4 * cm->in.words);
	cm->d_tok = dcarve(a, 4 * S);
	/* device sampler: per-row parameters and tokens (~0.5 KB a row) */
	cm->d_samp = dcarve(a, sizeof(struct cuda_samp_row) * S);
	cm->d_stok = dcarve(a, 4 * S);
	if (cm->lt) {
		struct cuda_lt *lt = cm->lt;

		lt->ws = dcarve(a, lt->ws_bytes);
		lt->xq = dcarve(a, 2 * T * lt->k_max);
		lt->tscale = dcarve(a, f * T);
		lt->acc = dcarve(a, f * T * lt->n_acc);
		lt->wdeq = lt->wdeq_elems ? dcarve(a, 2 * lt->wdeq_elems) : 0;
	}
	if (cm->mma.split)
		cm->mma.ws = dcarve(a, cm->mma.bytes);
}

/* The tensor-core GEMM's workspace (struct cuda_mma): every product's
 * input columns (hidden, q_dim, ffn) for step_tokens_max tokens; the LM
 * head's seqs_max rows fit too.  Llama-3-8B, 2048 tokens, split 2: 117 MiB. */
static void mma_size(struct cuda_model *cm)
{
	struct cuda_mma *mm = &cm->mma;
	uint32_t v = env_uint("VELO_CUDA_MMA", CUDA_MMA_DEFAULT);

	memset(mm, 0, sizeof(*mm));
	mm->split = MIN(v, 2u);
	mm->swiglu = 1;
	if (!mm->split)
		return;
	mm->t_max = MAX(cm->bud.step_tokens_max, cm->bud.seqs_max);
	mm->k_max = MAX(MAX(cm->hidden, cm->q_dim), cm->ffn);
	mm->bytes = (size_t)mm->t_max * (2 * mm->split * ALIGN_UP(mm->k_max, CUDA_MMA_TK) + 4);
}

/*
 * cuBLASLt buffers (VELO_CUDA_LT=1 or 2): a 32 MiB workspace, the quantised
 * activations and per-token scales for step_tokens_max tokens, the
 * residual-add scratch [T][hidden], and for INT4 and FP8 weights one
 * matrix as BF16 (the largest layer matrix: 117 MiB for Llama-3-8B's FFN;
 * at most 256 MiB, larger matrices keep the CUDA-core kernel).
 */
#define CUDA_LT_WS_BYTES ((size_t)32 << 20)
#define CUDA_LT_WDEQ_MAX ((size_t)128 << 20)	/* elements */

static void lt_size(struct cuda_model *cm)
{
	struct cuda_lt *lt = &cm->lt_ctx;
	size_t wd = 0;

	memset(lt, 0, sizeof(*lt));
	lt->min_nt = MAX(env_uint("VELO_CUDA_LT_MIN_TOKENS", 32), 2u * CUDA_MV_NT_MAX + 1);
	lt->t_max = cm->bud.step_tokens_max;
	lt->ws_bytes = CUDA_LT_WS_BYTES;
	lt->k_max = MAX(MAX(cm->hidden, cm->q_dim), cm->ffn);
	lt->n_acc = cm->hidden;
	for (uint32_t l = 0; l < cm->n_layers; l++) {
		const struct eng_layer_weights *w = &cm->m->layers[l];
		const struct eng_tensor *t[7] = { &w->wq, &w->wk, &w->wv, &w->wo, &w->w_gate,
						  &w->w_up, &w->w_down };

		for (int i = 0; i < 7; i++) {
			size_t n = (size_t)t[i]->rows * t[i]->cols;

			/* INT4 always, FP8 for its BF16 route (VELO_CUDA_LT=2,
			 * or the E4M3 GEMM refused by the library) */
			if ((t[i]->dtype == ENG_DT_INT4_G128 ||
			     t[i]->dtype == ENG_DT_FP8_E4M3) && n <= CUDA_LT_WDEQ_MAX)
				wd = MAX(wd, n);
		}
	}
	lt->wdeq_elems = wd;
	lt->fp8_bf16 = env_uint("VELO_CUDA_LT", CUDA_LT_DEFAULT) == 2;
	cm->lt = lt;
}

/* Plans for every layer matrix's shape (the LM head keeps the CUDA-core
 * route: its rows are the logits' S, below any bucket worth it). */
static int lt_plans(struct cuda_model *cm)
{
	struct cuda_lt *lt = cm->lt;
	int rc = cuda_lt_init(lt, cm->be);

	for (uint32_t l = 0; l < cm->n_layers && !rc; l++) {
		const struct cuda_layer *d = &cm->layers[l];
		const struct cuda_tensor *t[7] = { &d->wq, &d->wk, &d->wv, &d->wo, &d->w_gate,
						   &d->w_up, &d->w_down };

		for (int i = 0; i < 7 && !rc; i++)
			rc = cuda_lt_plan_add(lt, t[i]->dt, t[i]->rows, t[i]->cols, lt->t_max);
	}
	return rc;
}

/* ---- upload ------------------------------------------------------------- */

/*
 * Host -> device through two pinned staging buffers: the CPU fills one
 * (reading the image mapping, which faults the page cache in) while the
 * copy engine drains the other.  cuMemcpyHtoDAsync from pageable memory
 * would stage through the driver's own small buffers synchronously.
 */
#define CUDA_STAGE_BYTES (32u << 20)
/* Threads that fill a staging buffer (VELO_CUDA_UPLOAD_THREADS): one
 * thread's memcpy from the page cache ran at ~6 GB/s on the GPU machine,
 * two thirds of an 8B FP8 cold load (1.95 of 2.28 s). */
#define CUDA_UP_THREADS_DEFAULT 4
#define CUDA_UP_THREADS_MAX 16

struct uploader {
	struct cuda_backend *be;
	CUstream st;
	void *buf[2];
	CUevent ev[2];
	bool busy[2];
	unsigned cur;
	unsigned threads;		/* copying threads, the caller included */
	uint64_t bytes;
};

struct up_slice {
	void *dst;
	const void *src;
	size_t len;
};

static void *up_slice_run(void *arg)
{
	struct up_slice *sl = arg;

	memcpy(sl->dst, sl->src, sl->len);
	return NULL;
}

/*
 * memcpy of a staging buffer's fill by u->threads threads, each a
 * contiguous slice (4 KiB multiples): the caller copies the first, helper
 * threads the rest, made per fill (a few tens of microseconds against
 * ~5 ms a 32 MiB fill) and joined before return.  A helper that cannot
 * be started leaves its slice to the caller: never an error.
 */
static void up_memcpy(const struct uploader *u, void *dst, const void *src, size_t len)
{
	struct up_slice sl[CUDA_UP_THREADS_MAX];
	pthread_t th[CUDA_UP_THREADS_MAX];
	bool started[CUDA_UP_THREADS_MAX] = { false };
	unsigned n = u->threads;
	size_t per;

	if (n < 2 || len < ((size_t)4 << 20)) {
		memcpy(dst, src, len);
		return;
	}
	per = ALIGN_UP((len + n - 1) / n, (size_t)4096);
	for (unsigned k = 0; k < n; k++) {
		size_t lo = MIN(len, k * per), hi = MIN(len, lo + per);

		sl[k] = (struct up_slice){ (char *)dst + lo, (const char *)src + lo, hi - lo };
	}
	for (unsigned k = 1; k < n; k++)
		started[k] = sl[k].len && !pthread_create(&th[k], NULL, up_slice_run, &sl[k]);
	up_slice_run(&sl[0]);
	for (unsigned k = 1; k < n; k++) {
		if (started[k])
			pthread_join(th[k], NULL);
		else
			up_slice_run(&sl[k]);
	}
}

static int up_copy(struct uploader *u, CUdeviceptr dst, const void *src, size_t len)
{
	struct cuda_api *a = &u->be->api;
	int rc;

	while (len) {
		size_t n = MIN(len, (size_t)CUDA_STAGE_BYTES);
		unsigned c = u->cur;

		if (u->busy[c]) {
			rc = CU_CHECK(u->be, a->cuEventSynchronize(u->ev[c]));
			if (rc)
				return rc;
		}
		up_memcpy(u, u->buf[c], src, n);
		rc = CU_CHECK(u->be, a->cuMemcpyHtoDAsync(dst, u->buf[c], n, u->st)) ?:
		     CU_CHECK(u->be, a->cuEventRecord(u->ev[c], u->st));
		if (rc)
			return rc;
		u->busy[c] = true;
		u->cur ^= 1;
		u->bytes += n;
		dst += n;
		src = (const char *)src + n;
		len -= n;
	}
	return 0;
}

static int up_tensor(struct uploader *u, const struct cuda_tensor *d,
		     const struct eng_tensor *t)
{
	return up_copy(u, d->data, t->data, (size_t)t->rows * eng_row_bytes(t->dtype, t->cols)) ?:
	       (d->scales ? up_copy(u, d->scales, t->scales, scale_bytes(t)) : 0);
}

static int up_vec(struct uploader *u, CUdeviceptr dst, const struct eng_tensor *t,
		  uint32_t n, float *tmp)
{
	if (!dst)
		return 0;
	eng_vec_to_f32(t, tmp, n);
	return up_copy(u, dst, tmp, (size_t)n * 4);
}

static int upload(struct cuda_model *cm)
{
	struct cuda_backend *be = cm->be;
	struct cuda_api *a = &be->api;
	const struct eng_model *m = cm->m;
	struct uploader u = { .be = be, .st = cm->st };
	size_t half = cm->hd / 2, tmp_n;
	float *tmp;
	int rc;

	u.threads = MAX(1u, MIN(env_uint("VELO_CUDA_UPLOAD_THREADS", CUDA_UP_THREADS_DEFAULT),
				(uint32_t)CUDA_UP_THREADS_MAX));

	tmp_n = MAX(MAX((size_t)cm->hidden, (size_t)cm->q_dim),
		    2 * (size_t)cm->ctx_max * half);
	tmp = malloc(tmp_n * 4);
	if (!tmp)
		return -ENOMEM;
	rc = CU_CHECK(be, a->cuMemAllocHost(&u.buf[0], CUDA_STAGE_BYTES));
	if (rc)
		goto out_tmp;
	rc = CU_CHECK(be, a->cuMemAllocHost(&u.buf[1], CUDA_STAGE_BYTES));
	if (rc)
		goto out_buf0;
	rc = CU_CHECK(be, a->cuEventCreate(&u.ev[0], CU_EVENT_DISABLE_TIMING));
	if (rc)
		goto out_buf1;
	rc = CU_CHECK(be, a->cuEventCreate(&u.ev[1], CU_EVENT_DISABLE_TIMING));
	if (rc)
		goto out_ev0;

	rc = up_tensor(&u, &cm->embed, &m->embed);
	if (!rc && cm->lm_head.data != cm->embed.data)
		rc = up_tensor(&u, &cm->lm_head, &m->lm_head);
	for (uint32_t l = 0; l < cm->n_layers && !rc; l++) {
		const struct eng_layer_weights *w = &m->layers[l];
		const struct cuda_layer *d = &cm->layers[l];

		rc = up_tensor(&u, &d->wq, &w->wq) ?: up_tensor(&u, &d->wk, &w->wk) ?:
		     up_tensor(&u, &d->wv, &w->wv) ?: up_tensor(&u, &d->wo, &w->wo) ?:
		     up_tensor(&u, &d->w_gate, &w->w_gate) ?:
		     up_tensor(&u, &d->w_up, &w->w_up) ?:
		     up_tensor(&u, &d->w_down, &w->w_down) ?:
		     up_vec(&u, d->attn_norm, &w->attn_norm, cm->hidden, tmp) ?:
		     up_vec(&u, d->ffn_norm, &w->ffn_norm, cm->hidden, tmp) ?:
		     up_vec(&u, d->bq, &w->bq, cm->q_dim, tmp) ?:
		     up_vec(&u, d->bk, &w->bk, cm->kv_dim, tmp) ?:
		     up_vec(&u, d->bv, &w->bv, cm->kv_dim, tmp) ?:
		     up_vec(&u, d->bo, &w->bo, cm->hidden, tmp);
	}
	if (!rc)
		rc = up_vec(&u, cm->final_norm, &m->final_norm, cm->hidden, tmp);
	if (!rc) {
		size_t n = (size_t)cm->ctx_max * half;

		eng_rope_tables(&cm->m->cfg, cm->hd, cm->ctx_max, tmp, tmp + n);
		rc = up_copy(&u, cm->rope_cos, tmp, n * 4) ?:
		     up_copy(&u, cm->rope_sin, tmp + n, n * 4);
	}
	/* Wait before the staging buffers and tmp go. */
	rc = rc ?: CU_CHECK(be, a->cuStreamSynchronize(cm->st));
	if (rc)
		a->cuStreamSynchronize(cm->st);
	a->cuEventDestroy(u.ev[1]);
out_ev0:
	a->cuEventDestroy(u.ev[0]);
out_buf1:
	a->cuMemFreeHost(u.buf[1]);
out_buf0:
	a->cuMemFreeHost(u.buf[0]);
out_tmp:
	free(tmp);
	return rc;
}

static uint64_t tensor_read_bytes(const struct cuda_tensor *t)
{
	uint64_t n = (uint64_t)t->rows * eng_row_bytes((enum eng_dtype)t->dt, t->cols);

	if (t->dt == CUDA_DT_FP8)
		n += (uint64_t)t->rows * 4;
	else if (t->dt == CUDA_DT_INT4)
		n += (uint64_t)t->rows * (t->cols / ENG_INT4_GROUP) * 2;
	return n;
}

/* ---- decode graphs ------------------------------------------------------ */

static const uint32_t graph_splits[CUDA_GRAPH_BUCKETS] = { 1, 4, 16, 64 };

/* The bucket for a step needing @need splits (need <= 64). */
static uint32_t graph_bucket(uint32_t need)
{
	uint32_t k = 0;

	while (k + 1 < CUDA_GRAPH_BUCKETS && graph_splits[k] < need)
		k++;
	return k;
}

/*
 * Capture the decode step of T = 1 .. graph_t_max sequences for every
 * split bucket: the same launches as cuda_forward, recorded on the model's
 * stream (thread-local capture mode, so a scheduler thread stepping
 * another model meanwhile is not affected), then instantiated.  The step
 * inputs live at fixed device addresses, so a replay reads the new step's.
 * Cost: CUDA_GRAPH_T_MAX x 4 graphs of ~10 nodes per layer, host memory
 * in the driver.
 */
static int graphs_build(struct cuda_model *cm)
{
	struct cuda_backend *be = cm->be;
	struct cuda_api *a = &be->api;
	int rc = 0;

	for (uint32_t t = 1; t <= cm->graph_t_max && !rc; t++)
		for (uint32_t k = 0; k < CUDA_GRAPH_BUCKETS && !rc; k++) {
			CUgraph g = NULL;
			int rc2;

			cm->T = t;
			cm->n_logits = t;
			cm->nsplit_force = graph_splits[k];
			rc = CU_CHECK(be, a->cuStreamBeginCapture(cm->st,
						CU_STREAM_CAPTURE_MODE_THREAD_LOCAL));
			if (rc)
				break;
			rc = cuda_forward(cm, 0);
			/* the capture ends whatever happened inside it (a failed
			 * end is retried unchecked: the stream must leave capture
			 * mode before it is destroyed) */
			rc2 = CU_CHECK(be, a->cuStreamEndCapture(cm->st, &g));
			if (rc2) {
				CUgraph g2 = NULL;

				a->cuStreamEndCapture(cm->st, &g2);
				if (g2)
					a->cuGraphDestroy(g2);
			}
			rc = rc ?: rc2;
			if (!rc)
				rc = CU_CHECK(be, a->cuGraphInstantiate(&cm->graphs[t - 1][k], g, 0));
			if (g)
				a->cuGraphDestroy(g);
		}
	cm->nsplit_force = 0;
	cm->T = cm->n_logits = 0;
	return rc;
}

/* ---- load / unload ------------------------------------------------------ */

static void free_model(struct cuda_model *cm)
{
	struct cuda_api *a = &cm->be->api;

	if (cm->st)
		a->cuStreamSynchronize(cm->st);
	if (cm->lt)
		cuda_lt_fini(cm->lt);
	for (uint32_t t = 0; t < CUDA_GRAPH_T_MAX; t++)
		for (uint32_t k = 0; k < CUDA_GRAPH_BUCKETS; k++)
			if (cm->graphs[t][k])
				a->cuGraphExecDestroy(cm->graphs[t][k]);
	if (cm->amem)
		a->cuMemFree(cm->amem);
	if (cm->wmem)
		a->cuMemFree(cm->wmem);
	if (cm->h_in)
		a->cuMemFreeHost(cm->h_in);
	if (cm->h_logits)
		a->cuMemFreeHost(cm->h_logits);
	if (cm->h_tok)
		a->cuMemFreeHost(cm->h_tok);
	if (cm->h_samp)
		a->cuMemFreeHost(cm->h_samp);
	if (cm->ev_in)
		a->cuEventDestroy(cm->ev_in);
	if (cm->ev_done)
		a->cuEventDestroy(cm->ev_done);
	if (cm->st)
		a->cuStreamDestroy(cm->st);
	eng_sampler_scratch_fini(&cm->samp);
	free(cm->blk_stamp);
	free(cm->seq_logit_row);
	free(cm->row_on_host);
	free(cm->layers);
	free(cm);
}

static int cuda_model_load(struct eng_backend *ebe, const struct eng_model *m,
			   const struct eng_model_budget *b,
			   struct eng_be_model **out)
{
	struct cuda_backend *be = to_be(ebe);
	struct cuda_api *a = &be->api;
	const struct eng_model_config *c;
	struct dev_arena wa = { 0 }, aa = { 0 };
	struct cuda_model *cm;
	size_t freeb = 0, totalb = 0, S;
	uint64_t need, used;
	double t0 = now_ms();
	uint32_t ctx;
	int rc;

	if (be_down(be))
		return -ENODEV;
	if (!m || !b || !out)
		return -EINVAL;
	rc = eng_model_check(m, &cuda_limits) ?: eng_model_budget_check(b, "cuda");
	if (!rc && b->kv_dtype != ENG_KV_F32 && b->kv_dtype != ENG_KV_BF16) {
		LOG_E(eng, "cuda: KV dtype %d not supported (f32, bf16)", (int)b->kv_dtype);
		rc = -EOPNOTSUPP;
	}
	if (rc)
		goto err_count;
	rc = CU_CHECK(be, a->cuCtxSetCurrent(be->ctx));
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
	ctx = b->seq_blocks_max * cm->B;
	cm->ctx_max = c->max_seq ? MIN(ctx, c->max_seq) : ctx;
	cm->table_ld = b->seq_blocks_max;
	cm->att_scale = (float)(1.0 / sqrt((double)cm->hd));
	cm->eps = c->norm_eps;
	cm->window = c->sliding_window;
	cm->kv_bf16 = b->kv_dtype == ENG_KV_BF16;
	cm->kv_esz = cm->kv_bf16 ? 2 : 4;
	S = b->seqs_max;
	cm->layers = calloc(cm->n_layers, sizeof(*cm->layers));
	cm->blk_stamp = calloc(b->kv_blocks, 4);
	cm->seq_logit_row = calloc(S, 4);
	cm->row_on_host = calloc(S, 1);
	if (!cm->layers || !cm->blk_stamp || !cm->seq_logit_row || !cm->row_on_host) {
		rc = -ENOMEM;
		goto err_free;
	}
	rc = eng_sampler_scratch_init(&cm->samp, cm->vocab);
	if (rc)
		goto err_free;
	in_layout(cm);
	if (be->lt.lib && env_uint("VELO_CUDA_LT", CUDA_LT_DEFAULT))
		lt_size(cm);
	cm->flash_on = env_uint("VELO_CUDA_FLASH", CUDA_FLASH_DEFAULT) != 0;
	mma_size(cm);

	/* Pass 1: sizes; then the budget; then pass 2 hands out addresses. */
	layout_weights(cm, &wa);
	layout_act(cm, &aa);
	cm->wbytes = ALIGN_UP(wa.off, (size_t)1 << 16);
	cm->abytes = ALIGN_UP(aa.off, (size_t)1 << 16);
	need = cm->wbytes + cm->abytes;
	used = __atomic_add_fetch(&be->mem_bytes_used, need, __ATOMIC_ACQ_REL);
	if (be->mem_bytes_max && used > be->mem_bytes_max) {
		__atomic_sub_fetch(&be->mem_bytes_used, need, __ATOMIC_ACQ_REL);
		LOG_E(eng, "cuda: model needs %llu MiB, budget leaves %llu MiB",
		      (unsigned long long)(need >> 20),
		      (unsigned long long)((be->mem_bytes_max - (used - need)) >> 20));
		rc = -ENOMEM;
		goto err_free;
	}
	a->cuMemGetInfo(&freeb, &totalb);
	if (need > freeb) {
		LOG_E(eng, "cuda: model needs %llu MiB, device has %llu MiB free",
		      (unsigned long long)(need >> 20), (unsigned long long)(freeb >> 20));
		rc = -ENOMEM;
		goto err_unbudget;
	}
	rc = CU_CHECK(be, a->cuStreamCreate(&cm->st, CU_STREAM_NON_BLOCKING)) ?:
	     CU_CHECK(be, a->cuEventCreate(&cm->ev_in, CU_EVENT_DISABLE_TIMING)) ?:
	     CU_CHECK(be, a->cuEventCreate(&cm->ev_done, CU_EVENT_DISABLE_TIMING)) ?:
	     CU_CHECK(be, a->cuMemAlloc(&cm->wmem, cm->wbytes)) ?:
	     CU_CHECK(be, a->cuMemAlloc(&cm->amem, cm->abytes)) ?:
	     CU_CHECK(be, a->cuMemAllocHost((void **)&cm->h_in, 4 * cm->in.words)) ?:
	     CU_CHECK(be, a->cuMemAllocHost((void **)&cm->h_logits, 4 * S * cm->vocab)) ?:
	     CU_CHECK(be, a->cuMemAllocHost((void **)&cm->h_tok, 4 * S)) ?:
	     CU_CHECK(be, a->cuMemAllocHost((void **)&cm->h_samp,
					    (sizeof(struct cuda_samp_row) + 4) * S));
	if (rc)
		goto err_unbudget;
	cm->h_stok = (int32_t *)(cm->h_samp + S);
	wa = (struct dev_arena){ .base = cm->wmem };
	aa = (struct dev_arena){ .base = cm->amem };
	layout_weights(cm, &wa);
	layout_act(cm, &aa);
	/* Zeroed once: a KV slot never written reads as 0, not garbage (the
	 * scheduler never reads one, but a bug then shows as a wrong number,
	 * not a NaN storm). */
	rc = CU_CHECK(be, a->cuMemsetD32Async(cm->amem, 0, cm->abytes / 4, cm->st)) ?:
	     upload(cm);
	if (rc)
		goto err_unbudget;
	if (env_uint("VELO_CUDA_GRAPHS", CUDA_GRAPHS_DEFAULT))
		cm->graph_t_max = MIN(b->seqs_max, (uint32_t)CUDA_GRAPH_T_MAX);
	rc = graphs_build(cm);
	/* every cuBLASLt plan run once now (scratch: the weights as A, the
	 * FFN activations as D, overwritten by every step), so that no step
	 * pays for an algorithm's first use */
	if (!rc && cm->lt)
		rc = lt_plans(cm) ?:
		     cuda_lt_warm(cm->lt, cm->st, cm->wmem, cm->wbytes, cm->hb,
				  4 * (size_t)cm->bud.step_tokens_max * cm->ffn);
	if (rc)
		goto err_unbudget;
	memset(cm->h_in, 0, 4 * cm->in.words);

	cm->weight_read_bytes = tensor_read_bytes(&cm->lm_head);
	for (uint32_t l = 0; l < cm->n_layers; l++) {
		const struct cuda_layer *d = &cm->layers[l];

		cm->weight_read_bytes += tensor_read_bytes(&d->wq) + tensor_read_bytes(&d->wk) +
					 tensor_read_bytes(&d->wv) + tensor_read_bytes(&d->wo) +
					 tensor_read_bytes(&d->w_gate) +
					 tensor_read_bytes(&d->w_up) +
					 tensor_read_bytes(&d->w_down);
	}
	cm->load_ms = now_ms() - t0;
	__atomic_add_fetch(&be->n_models, 1, __ATOMIC_ACQ_REL);
	ctr_add(be, CTR_models_loaded, 1);
	LOG_I(eng, "cuda: loaded %s: %u layers, hidden %u, weights %llu MiB, KV %s %u blocks of %u, ctx %u, device memory %llu MiB, load %.0f ms (%.2f GB/s), decode graphs %s, cuBLASLt %s (%u plans, %u shapes refused, from %u tokens), flash prefill attention %s, tensor-core GEMM %s",
	      m->name[0] ? m->name : "model", cm->n_layers, cm->hidden,
	      (unsigned long long)(cm->wbytes >> 20), cm->kv_bf16 ? "bf16" : "f32",
	      b->kv_blocks, cm->B, cm->ctx_max, (unsigned long long)(need >> 20),
	      cm->load_ms, (double)cm->wbytes / (cm->load_ms * 1e6),
	      cm->graph_t_max ? "on" : "off", cm->lt ? "on" : "off",
	      cm->lt ? cm->lt->n_plans : 0, cm->lt ? cm->lt->unsupported : 0,
	      cm->lt ? cm->lt->min_nt : 0, cm->flash_on ? "on" : "off",
	      cm->mma.split == 2 ? "on (f16 hi+lo)" : cm->mma.split ? "on (f16)" : "off");
	*out = &cm->base;
	return 0;

err_unbudget:
	__atomic_sub_fetch(&be->mem_bytes_used, need, __ATOMIC_ACQ_REL);
err_free:
	free_model(cm);
err_count:
	ctr_add(be, CTR_load_errors, 1);
	return rc;
}

static void cuda_model_unload(struct eng_be_model *bm)
{
	struct cuda_model *cm;
	struct cuda_backend *be;

	if (!bm)
		return;
	cm = to_cm(bm);
	be = cm->be;
	be->api.cuCtxSetCurrent(be->ctx);
	__atomic_sub_fetch(&be->mem_bytes_used, cm->wbytes + cm->abytes, __ATOMIC_ACQ_REL);
	free_model(cm);
	__atomic_sub_fetch(&be->n_models, 1, __ATOMIC_ACQ_REL);
}

static void cuda_model_info(const struct eng_be_model *bm,
			    struct eng_be_model_info *info)
{
	const struct cuda_model *cm = container_of(bm, const struct cuda_model, base);

	memset(info, 0, sizeof(*info));
	info->mem_bytes = cm->wbytes + cm->abytes;
	info->kv_bytes = 2ull * cm->kv_esz * cm->n_layers * cm->kv_layer_elems;
	info->weight_bytes = cm->weight_read_bytes;
	info->ctx_max = cm->ctx_max;
	info->kv_block_tokens = cm->B;
	info->kernels = "sm_90a";
	info->threads = (uint32_t)cm->be->sm_count;
}

/* ---- step and results --------------------------------------------------- */

static int validate(struct cuda_model *cm, const struct eng_batch *b)
{
	const struct eng_batch_limits lim = {
		.bud = &cm->bud, .ctx_max = cm->ctx_max, .vocab = cm->vocab,
		.block_tokens = cm->B, .block_shift = cm->b_shift,
	};

	return eng_batch_check(b, &lim, cm->blk_stamp, &cm->stamp, &cm->T);
}

static int cuda_step(struct eng_be_model *bm, const struct eng_batch *batch)
{
	struct cuda_model *cm = to_cm(bm);
	struct cuda_backend *be = cm->be;
	struct cuda_api *a = &be->api;
	const struct cuda_in_layout *in = &cm->in;
	uint32_t *h = cm->h_in, t = 0, nl = 0, max_len = 0;
	size_t words;
	int rc;

	if (unlikely(be_down(be)))
		return -ENODEV;
	cm->have_step = false;
	if (unlikely(CU_CHECK(be, a->cuCtxSetCurrent(be->ctx))))
		return -EIO;
	rc = validate(cm, batch);
	if (unlikely(rc)) {
		ctr_add(be, rc == -E2BIG ? CTR_over_budget : CTR_bad_batches, 1);
		return rc;
	}
	/* The previous step's input copy must be done before h_in changes. */
	if (cm->in_pending) {
		if (CU_CHECK(be, a->cuEventSynchronize(cm->ev_in)))
			return -EIO;
		cm->in_pending = false;
	}
	for (uint32_t s = 0; s < batch->n_seqs; s++) {
		const struct eng_seq_in *q = &batch->seqs[s];
		uint32_t nb = eng_kv_blocks_for(q->pos + q->n_tokens, cm->B);

		for (uint32_t i = 0; i < q->n_tokens; i++, t++) {
			uint32_t pos = q->pos + i;

			h[in->tok_id + t] = q->tokens[i];
			h[in->tok_pos + t] = pos;
			h[in->tok_seq + t] = s;
			h[in->tok_blk + t] = q->blocks[pos >> cm->b_shift];
			h[in->tok_slot + t] = pos & (cm->B - 1);
		}
		memcpy(h + in->tables + (size_t)s * cm->table_ld, q->blocks, 4 * (size_t)nb);
		max_len = MAX(max_len, q->pos + q->n_tokens);
		cm->seq_logit_row[s] = -1;
		cm->row_on_host[s] = 0;
		if (q->flags & ENG_SEQ_LOGITS) {
			cm->seq_logit_row[s] = (int32_t)nl;
			h[in->logit_tok + nl++] = t - 1;
		}
	}
	cm->n_logits = nl;
	/* Tiled prefill attention when the step carries at least 16 prompt
	 * tokens beyond one per sequence: query tiles of up to 16 consecutive
	 * tokens of one sequence. */
	cm->flash_step = cm->flash_on && cm->T >= batch->n_seqs + CUDA_FLASH_QT;
	cm->n_tiles = 0;
	if (cm->flash_step) {
		uint32_t t0 = 0;

		for (uint32_t s = 0; s < batch->n_seqs; s++) {
			uint32_t n = batch->seqs[s].n_tokens;

			for (uint32_t i = 0; i < n; i += CUDA_FLASH_QT) {
				h[in->tiles + 2 * cm->n_tiles] = t0 + i;
				h[in->tiles + 2 * cm->n_tiles + 1] = MIN(n - i, (uint32_t)CUDA_FLASH_QT);
				cm->n_tiles++;
			}
			t0 += n;
		}
		ctr_add(be, CTR_flash_steps, 1);
	}
	words = in->tables + (size_t)batch->n_seqs * cm->table_ld;
	rc = CU_CHECK(be, a->cuMemcpyHtoDAsync(cm->d_in, h, 4 * words, cm->st)) ?:
	     CU_CHECK(be, a->cuEventRecord(cm->ev_in, cm->st));
	if (rc)
		return -EIO;
	cm->in_pending = true;
	if (cm->graph_t_max && cm->T == batch->n_seqs && nl == cm->T &&
	    cm->T <= cm->graph_t_max) {
		/* decode of T sequences: replay the captured step */
		uint32_t k = graph_bucket(cuda_att_splits(cm, max_len));

		rc = CU_CHECK(be, a->cuGraphLaunch(cm->graphs[cm->T - 1][k], cm->st));
		cm->graph_steps++;
	} else {
		rc = cuda_forward(cm, max_len);
	}
	if (!rc && nl)
		rc = CU_CHECK(be, a->cuMemcpyDtoHAsync(cm->h_tok, cm->d_tok, 4 * (size_t)nl,
						       cm->st));
	rc = rc ?: CU_CHECK(be, a->cuEventRecord(cm->ev_done, cm->st));
	if (rc)
		return -EIO;
	cm->last_n_seqs = batch->n_seqs;
	cm->have_step = true;
	cm->tok_ready = false;
	ctr_add(be, CTR_steps, 1);
	ctr_add(be, CTR_step_tokens, cm->T);
	ctr_add(be, CTR_step_logits, nl);
	return 0;
}

/* Wait for the last step (tokens and device logits complete). */
static int wait_step(struct cuda_model *cm)
{
	struct cuda_backend *be = cm->be;

	if (cm->tok_ready)
		return 0;
	if (CU_CHECK(be, be->api.cuCtxSetCurrent(be->ctx)) ||
	    CU_CHECK(be, be->api.cuEventSynchronize(cm->ev_done)))
		return -EIO;
	cm->tok_ready = true;
	return 0;
}

/* Queue the copy of logit row @row into its pinned host row. */
static int row_copy(struct cuda_model *cm, int32_t row)
{
	return CU_CHECK(cm->be, cm->be->api.cuMemcpyDtoHAsync(
				cm->h_logits + (size_t)row * cm->vocab,
				cm->logits + (size_t)row * cm->vocab * 4,
				(size_t)cm->vocab * 4, cm->st));
}

static int logits_row(struct cuda_model *cm, int32_t row, const float **out)
{
	int rc;

	if (!cm->row_on_host[row]) {
		rc = wait_step(cm);
		if (rc)
			return rc;
		if (row_copy(cm, row) || CU_CHECK(cm->be, cm->be->api.cuStreamSynchronize(cm->st)))
			return -EIO;
		cm->row_on_host[row] = 1;
	}
	*out = cm->h_logits + (size_t)row * cm->vocab;
	return 0;
}

static int cuda_logits(struct eng_be_model *bm, uint32_t seq, const float **out)
{
	struct cuda_model *cm = to_cm(bm);

	if (unlikely(be_down(cm->be)))
		return -ENODEV;
	if (!cm->have_step)
		return -ENOENT;
	if (seq >= cm->last_n_seqs)
		return -EINVAL;
	if (cm->seq_logit_row[seq] < 0)
		return -ENOENT;
	return logits_row(cm, cm->seq_logit_row[seq], out);
}

/*
 * k_sample's parameters for a sampler (cuda_sample.h): the host's own
 * float arithmetic (1/T, logf(min_p) * T) and, unless greedy, the one RNG
 * draw eng_sampler_sample would make for this token.
 */
static void samp_row(const struct cuda_model *cm, struct eng_sampler *s, uint32_t row,
		     struct cuda_samp_row *r)
{
	const struct eng_sampler_params *p = &s->p;

	r->greedy = p->temperature <= 0.0f || p->top_k == 1;
	r->row = row;
	r->inv_t = r->greedy ? 1.0f : 1.0f / p->temperature;
	r->top_k = p->top_k < cm->vocab ? p->top_k : 0;
	r->top_p = p->top_p;
	r->minp_c = p->min_p > 0.0f && !r->greedy ? logf(p->min_p) * p->temperature : -INFINITY;
	r->r = r->greedy ? 0 : eng_sampler_rng_next(s);
	r->n_bias = p->n_bias;
	r->pad_ = 0;
	memcpy(r->bias_id, p->bias_ids, sizeof(r->bias_id));
	memcpy(r->bias, p->bias, sizeof(r->bias));
}

/*
 * Three routes, one wait: plain greedy takes the step's device argmax;
 * samplers with an active penalty window run the host sampler on their
 * row (every such row's copy queued first); every other sampler (any
 * temperature / top-k / top-p / min-p, logit biases, greedy with biases)
 * runs k_sample: one copy of the rows' parameters, one launch, one copy of
 * the tokens.  Then one stream synchronisation covers the step, the
 * argmax tokens, the copies and the sampler.
 */
static int cuda_sample(struct eng_be_model *bm, struct eng_sampler *const *s,
		       uint32_t n, uint32_t *tokens)
{
	struct cuda_model *cm = to_cm(bm);
	struct cuda_backend *be = cm->be;
	struct cuda_api *a = &be->api;
	uint32_t nd = 0, nh = 0, j = 0;
	int rc;

	if (unlikely(be_down(be)))
		return -ENODEV;
	if (!cm->have_step || n != cm->last_n_seqs)
		return -EINVAL;
	for (uint32_t i = 0; i < n; i++) {
		if (!s[i])
			continue;
		if (cm->seq_logit_row[i] < 0)
			return -EINVAL;
		/* the host sampler's -EINVAL, before any RNG draw */
		for (uint32_t k = 0; k < s[i]->p.n_bias; k++)
			if (s[i]->p.bias_ids[k] >= cm->vocab) {
				ctr_add(be, CTR_sample_errors, 1);
				return -EINVAL;
			}
	}
	if (CU_CHECK(be, a->cuCtxSetCurrent(be->ctx)))
		return -EIO;
	for (uint32_t i = 0; i < n; i++) {
		int32_t row = cm->seq_logit_row[i];

		if (!s[i] || eng_sampler_plain_greedy(s[i]))
			continue;
		if (eng_sampler_penalized(s[i])) {
			if (!cm->row_on_host[row] && row_copy(cm, row))
				return -EIO;
			nh++;
			continue;
		}
		samp_row(cm, s[i], (uint32_t)row, &cm->h_samp[nd++]);
	}
	if (nd) {
		void *pl = (void *)(uintptr_t)cm->logits, *pp = (void *)(uintptr_t)cm->d_samp;
		void *po = (void *)(uintptr_t)cm->d_stok;
		uint32_t V = cm->vocab;
		void *args[] = { &pl, &V, &pp, &po };

		if (CU_CHECK(be, a->cuMemcpyHtoDAsync(cm->d_samp, cm->h_samp,
						      nd * sizeof(*cm->h_samp), cm->st)) ||
		    CU_CHECK(be, a->cuLaunchKernel(be->f_sample, nd, 1, 1, CUDA_SAMP_THREADS,
						   1, 1, 0, cm->st, args, NULL)) ||
		    CU_CHECK(be, a->cuMemcpyDtoHAsync(cm->h_stok, cm->d_stok, 4 * (size_t)nd,
						      cm->st)))
			return -EIO;
	}
	if (nd || nh) {
		if (CU_CHECK(be, a->cuStreamSynchronize(cm->st)))
			return -EIO;
		cm->tok_ready = true;
	} else {
		rc = wait_step(cm);
		if (rc)
			return rc;
	}
	for (uint32_t i = 0; i < n; i++) {
		int32_t row = cm->seq_logit_row[i], t;

		if (!s[i])
			continue;
		if (eng_sampler_plain_greedy(s[i])) {
			t = cm->h_tok[row];
			ctr_add(be, CTR_samples_gpu, 1);
		} else if (eng_sampler_penalized(s[i])) {
			cm->row_on_host[row] = 1;
			rc = eng_sampler_sample(s[i], &cm->samp,
						cm->h_logits + (size_t)row * cm->vocab,
						cm->vocab, &tokens[i]);
			if (unlikely(rc)) {
				ctr_add(be, CTR_sample_errors, 1);
				return rc;
			}
			ctr_add(be, CTR_samples_host, 1);
			continue;
		} else {
			t = cm->h_stok[j++];
			ctr_add(be, CTR_samples_dev, 1);
		}
		/* -1: no finite logit (the host sampler's -EDOM) */
		if (unlikely(t < 0 || (uint32_t)t >= cm->vocab)) {
			ctr_add(be, CTR_sample_errors, 1);
			return -EDOM;
		}
		tokens[i] = (uint32_t)t;
	}
	return 0;
}

static int cuda_kv_copy(struct eng_be_model *bm, const uint32_t *src,
			const uint32_t *dst, uint32_t n)
{
	struct cuda_model *cm = to_cm(bm);
	struct cuda_backend *be = cm->be;
	struct cuda_api *a = &be->api;
	size_t bytes = cm->kv_blk_elems * cm->kv_esz;

	if (unlikely(be_down(be)))
		return -ENODEV;
	for (uint32_t i = 0; i < n; i++)
		if (src[i] >= cm->bud.kv_blocks || dst[i] >= cm->bud.kv_blocks ||
		    src[i] == dst[i])
			return -EINVAL;
	if (CU_CHECK(be, a->cuCtxSetCurrent(be->ctx)))
		return -EIO;
	for (uint32_t i = 0; i < n; i++)
		for (uint32_t l = 0; l < cm->n_layers; l++) {
			size_t so = ((size_t)l * cm->kv_layer_elems +
				     (size_t)src[i] * cm->kv_blk_elems) * cm->kv_esz;
			size_t d = ((size_t)l * cm->kv_layer_elems +
				    (size_t)dst[i] * cm->kv_blk_elems) * cm->kv_esz;

			if (CU_CHECK(be, a->cuMemcpyDtoDAsync(cm->kc + d, cm->kc + so, bytes, cm->st)) ||
			    CU_CHECK(be, a->cuMemcpyDtoDAsync(cm->vc + d, cm->vc + so, bytes, cm->st)))
				return -EIO;
		}
	ctr_add(be, CTR_kv_copies, n);
	return 0;
}

const struct eng_backend_ops eng_cuda_ops = {
	.name = "cuda",
	.init = cuda_init,
	.fini = cuda_fini,
	.model_load = cuda_model_load,
	.model_unload = cuda_model_unload,
	.step = cuda_step,
	.logits = cuda_logits,
	.sample = cuda_sample,
	.kv_copy = cuda_kv_copy,
	.model_info = cuda_model_info,
	.health = cuda_health,
};
