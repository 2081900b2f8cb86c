// SPDX-License-Identifier: MIT
/*
 * velo-convert — Hugging Face model directory (or a named synthetic shape)
 * to a velo model image; also --info and --verify of an image.
 *
 *   velo-convert [--dtype bf16|fp8|int4] HF_DIR -o OUT
 *   velo-convert --random SHAPE [--dtype ...] [--seed N] -o OUT
 *   velo-convert --info IMAGE | --verify IMAGE | --list-shapes
 *
 * Pipeline: plan the tensors in file order (embedding, then each layer's,
 * final norm, lm_head), declare them to the image writer, then for each
 * tensor convert chunks of rows (about CHUNK_ELEMS weights) on every
 * thread, release the chunk's source pages, hand it to the writer thread
 * and convert the next one meanwhile.  Peak memory is two chunk buffers
 * plus one tensor's scales, whatever the model size.
 */
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <jansson.h>

#include <velo/compiler.h>

#include "../lib/clock.h"
#include "../lib/log.h"
#include "convert.h"

#define CHUNK_ELEMS	(4u << 20)	/* weights per chunk: 16 MiB of f32 */
#define THREADS_MAX	64

enum init { INIT_NORMAL, INIT_ONES };

struct ptensor {
	char name[ENG_IMAGE_NAME_LEN];
	char kind[ENG_IMAGE_NAME_LEN];	/* name without "model.layers.N." */
	enum eng_dtype out;
	uint32_t ndim, rows, cols;
	const struct st_tensor *src;	/* HF input, or NULL: synthetic */
	uint64_t key;			/* synthetic: the tensor's seed */
	enum init init;
	bool fallback;			/* INT4 asked, cols % 128: BF16 */
	int idx;			/* in the writer */
	struct qstats st;
	double secs;
};

struct opts {
	const char *in, *out, *random, *info, *verify, *ka_file, *name, *version;
	enum eng_dtype dtype;
	uint64_t seed;
	unsigned threads;
	uint32_t data_align, tensor_align;
	bool quiet, no_sync, no_ka;
};

/* ------------------------------------------------------------------------
 * A tiny fork-join pool: pool_run() runs fn(arg, tid) on every thread (the
 * caller is tid 0) and returns when all are done.
 */
struct pool {
	unsigned n;
	pthread_t th[THREADS_MAX];
	pthread_mutex_t mu;
	pthread_cond_t go, done;
	uint64_t gen;
	unsigned pending;
	bool quit;
	void (*fn)(void *arg, unsigned tid);
	void *arg;
};

struct worker_start {
	struct pool *p;
	unsigned tid;
};

static void *pool_main(void *a)
{
	struct worker_start ws = *(struct worker_start *)a;
	struct pool *p = ws.p;
	uint64_t seen = 0;

	free(a);
	pthread_mutex_lock(&p->mu);
	for (;;) {
		while (p->gen == seen && !p->quit)
			pthread_cond_wait(&p->go, &p->mu);
		if (p->quit)
			break;
		seen = p->gen;
		pthread_mutex_unlock(&p->mu);
		p->fn(p->arg, ws.tid);
		pthread_mutex_lock(&p->mu);
		if (!--p->pending)
			pthread_cond_signal(&p->done);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

static int pool_init(struct pool *p, unsigned n)
{
	memset(p, 0, sizeof(*p));
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->go, NULL);
	pthread_cond_init(&p->done, NULL);
	p->n = 1;
	for (unsigned i = 1; i < n; i++) {
		struct worker_start *ws = malloc(sizeof(*ws));

		if (!ws)
			return -ENOMEM;
		*ws = (struct worker_start){ p, i };
		if (pthread_create(&p->th[i], NULL, pool_main, ws)) {
			free(ws);
			return -EAGAIN;
		}
		p->n++;
	}
	return 0;
}

static void pool_run(struct pool *p, void (*fn)(void *, unsigned), void *arg)
{
	pthread_mutex_lock(&p->mu);
	p->fn = fn;
	p->arg = arg;
	p->pending = p->n - 1;
	p->gen++;
	pthread_cond_broadcast(&p->go);
	pthread_mutex_unlock(&p->mu);
	fn(arg, 0);
	pthread_mutex_lock(&p->mu);
	while (p->pending)
		pthread_cond_wait(&p->done, &p->mu);
	pthread_mutex_unlock(&p->mu);
}

static void pool_fini(struct pool *p)
{
	pthread_mutex_lock(&p->mu);
	p->quit = true;
	pthread_cond_broadcast(&p->go);
	pthread_mutex_unlock(&p->mu);
	for (unsigned i = 1; i < p->n; i++)
		pthread_join(p->th[i], NULL);
}

/* ------------------------------------------------------------------------
 * The writer thread: chunk k is written while chunk k+1 is converted (two
 * buffers), so that the disk and the cores work at the same time.  It is
 * the only caller of eng_image_writer_rows_write() while it runs.
 */
struct wthread {
	pthread_t th;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct eng_image_writer *w;
	unsigned idx;
	uint32_t row0, nrows;
	const void *data, *scales;
	bool pending, quit;
	int rc;
};

static void *wthread_main(void *a)
{
	struct wthread *wt = a;

	pthread_mutex_lock(&wt->mu);
	for (;;) {
		int rc;

		while (!wt->pending && !wt->quit)
			pthread_cond_wait(&wt->cv, &wt->mu);
		if (!wt->pending)
			break;
		pthread_mutex_unlock(&wt->mu);
		rc = eng_image_writer_rows_write(wt->w, wt->idx, wt->row0, wt->nrows,
						 wt->data, wt->scales);
		pthread_mutex_lock(&wt->mu);
		if (rc && !wt->rc)
			wt->rc = rc;
		wt->pending = false;
		pthread_cond_broadcast(&wt->cv);
	}
	pthread_mutex_unlock(&wt->mu);
	return NULL;
}

/* Wait for the chunk in flight; its result, or the first error. */
static int wthread_drain(struct wthread *wt)
{
	int rc;

	pthread_mutex_lock(&wt->mu);
	while (wt->pending)
		pthread_cond_wait(&wt->cv, &wt->mu);
	rc = wt->rc;
	pthread_mutex_unlock(&wt->mu);
	return rc;
}

/* Queue a chunk (after the one in flight is written). */
static int wthread_submit(struct wthread *wt, unsigned idx, uint32_t row0,
			  uint32_t nrows, const void *data, const void *scales)
{
	int rc = wthread_drain(wt);

	if (rc)
		return rc;
	pthread_mutex_lock(&wt->mu);
	wt->idx = idx;
	wt->row0 = row0;
	wt->nrows = nrows;
	wt->data = data;
	wt->scales = scales;
	wt->pending = true;
	pthread_cond_broadcast(&wt->cv);
	pthread_mutex_unlock(&wt->mu);
	return 0;
}

static void wthread_stop(struct wthread *wt)
{
	wthread_drain(wt);
	pthread_mutex_lock(&wt->mu);
	wt->quit = true;
	pthread_cond_broadcast(&wt->cv);
	pthread_mutex_unlock(&wt->mu);
	pthread_join(wt->th, NULL);
}

/* ------------------------------------------------------------------------
 * The plan: every tensor of the image, in file order.
 */

static void plan_add(struct ptensor *pt, unsigned *n, const char *name,
		     const char *kind, uint32_t ndim, uint32_t rows,
		     uint32_t cols, enum eng_dtype out, enum init init)
{
	struct ptensor *t = &pt[(*n)++];

	memset(t, 0, sizeof(*t));
	snprintf(t->name, sizeof(t->name), "%s", name);
	snprintf(t->kind, sizeof(t->kind), "%s", kind);
	t->ndim = ndim;
	t->rows = rows;
	t->cols = cols;
	t->init = init;
	t->out = out;
	if (out == ENG_DT_INT4_G128 && cols % ENG_INT4_GROUP) {
		t->out = ENG_DT_BF16;
		t->fallback = true;
	}
}

/* Up to 3 + 13 per layer entries. */
static unsigned plan_build(const struct eng_model_config *c, enum eng_dtype mat,
			   struct ptensor *pt)
{
	const uint32_t q = c->n_heads * c->head_dim, kv = c->n_kv_heads * c->head_dim;
	/* norms and biases F32 (exact from BF16), embedding BF16 */
	const enum eng_dtype vec = ENG_DT_F32, emb = ENG_DT_BF16;
	static const struct {
		const char *kind;
		int rows, cols;		/* 0 hidden, 1 q, 2 kv, 3 ffn, -1 vector */
		int which;		/* 0 always, 1 qkv bias, 2 o bias */
	} layer[] = {
		{ "input_layernorm.weight", -1, 0, 0 },
		{ "self_attn.q_proj.weight", 1, 0, 0 },
		{ "self_attn.k_proj.weight", 2, 0, 0 },
		{ "self_attn.v_proj.weight", 2, 0, 0 },
		{ "self_attn.q_proj.bias", -1, 1, 1 },
		{ "self_attn.k_proj.bias", -1, 2, 1 },
		{ "self_attn.v_proj.bias", -1, 2, 1 },
		{ "self_attn.o_proj.weight", 0, 1, 0 },
		{ "self_attn.o_proj.bias", -1, 0, 2 },
		{ "post_attention_layernorm.weight", -1, 0, 0 },
		{ "mlp.gate_proj.weight", 3, 0, 0 },
		{ "mlp.up_proj.weight", 3, 0, 0 },
		{ "mlp.down_proj.weight", 0, 3, 0 },
	};
	const uint32_t dims[] = { c->hidden, q, kv, c->ffn };
	unsigned n = 0;
	char name[ENG_IMAGE_NAME_LEN];

	plan_add(pt, &n, "model.embed_tokens.weight", "model.embed_tokens.weight",
		 2, c->vocab_size, c->hidden, emb, INIT_NORMAL);
	for (uint32_t l = 0; l < c->n_layers; l++)
		for (unsigned i = 0; i < ARRAY_SIZE(layer); i++) {
			bool norm = strstr(layer[i].kind, "norm");

			if ((layer[i].which == 1 && !c->qkv_bias) ||
			    (layer[i].which == 2 && !c->o_bias))
				continue;
			snprintf(name, sizeof(name), "model.layers.%u.%s", l, layer[i].kind);
			if (layer[i].rows < 0)
				plan_add(pt, &n, name, layer[i].kind, 1, 1,
					 dims[layer[i].cols], vec,
					 norm ? INIT_ONES : INIT_NORMAL);
			else
				plan_add(pt, &n, name, layer[i].kind, 2,
					 dims[layer[i].rows], dims[layer[i].cols],
					 mat, INIT_NORMAL);
		}
	plan_add(pt, &n, "model.norm.weight", "model.norm.weight", 1, 1, c->hidden,
		 vec, INIT_ONES);
	if (!c->tied_embeddings)
		plan_add(pt, &n, "lm_head.weight", "lm_head.weight", 2,
			 c->vocab_size, c->hidden, mat, INIT_NORMAL);
	return n;
}

/* ------------------------------------------------------------------------
 * Conversion of one chunk of rows on every thread.
 */

struct job {
	const struct ptensor *t;
	uint32_t row0, nrows;
	uint8_t *data;			/* nrows * row bytes (one of two) */
	uint8_t *scales;		/* nrows * row scale bytes */
	uint64_t row_bytes, row_scale_bytes;
	float *rowbuf[THREADS_MAX];	/* per thread, max cols */
	struct qstats st[THREADS_MAX];
	int rc[THREADS_MAX];
	uint32_t bad_row[THREADS_MAX];
	unsigned nthreads;
};

/* ~N(0, 0.02): the sum of four 16-bit uniforms (Irwin-Hall), centred and
 * scaled; one xoshiro step per weight (about 1 ns), bounded at 3.46 sigma. */
#define IH_MEAN	131070.0f
#define IH_STD	37837.23f	/* sqrt((65536^2 - 1) / 3) */

static void random_row(const struct ptensor *t, uint32_t row, float *out)
{
	const float k = 0.02f / IH_STD;
	struct xoshiro r;

	if (t->init == INIT_ONES) {
		for (uint32_t i = 0; i < t->cols; i++)
			out[i] = 1.0f;
		return;
	}
	/* seeded per row: the same bytes whatever the threads and chunks */
	xoshiro_seed(&r, t->key + (uint64_t)row * 0x9e3779b97f4a7c15ull);
	for (uint32_t i = 0; i < t->cols; i++) {
		uint64_t u = xoshiro_next(&r);
		uint32_t s = (uint32_t)(u & 0xffff) + (uint32_t)((u >> 16) & 0xffff) +
			     (uint32_t)((u >> 32) & 0xffff) + (uint32_t)(u >> 48);

		out[i] = ((float)s - IH_MEAN) * k;
	}
}

static void job_work(void *arg, unsigned tid)
{
	struct job *j = arg;
	const struct ptensor *t = j->t;
	uint32_t a = j->nrows * tid / j->nthreads;
	uint32_t b = j->nrows * (tid + 1) / j->nthreads;

	for (uint32_t r = a; r < b; r++) {
		int rc;

		if (t->src)
			hf_row_f32(t->src, j->row0 + r, j->rowbuf[tid]);
		else
			random_row(t, j->row0 + r, j->rowbuf[tid]);
		rc = quant_row(t->out, j->rowbuf[tid], t->cols,
			       j->data + r * j->row_bytes,
			       j->scales + r * j->row_scale_bytes, &j->st[tid]);
		if (rc) {
			j->rc[tid] = rc;
			j->bad_row[tid] = j->row0 + r;
			return;
		}
	}
}

/* ------------------------------------------------------------------------
 * Known-answer record.
 */

static int ids_from_json(const json_t *a, uint32_t *out, uint32_t max, uint32_t *n)
{
	size_t i;
	const json_t *v;

	if (!json_is_array(a) || json_array_size(a) > max)
		return -EINVAL;
	json_array_foreach(a, i, v) {
		if (!json_is_integer(v) || json_integer_value(v) < 0 ||
		    json_integer_value(v) > UINT32_MAX)
			return -EINVAL;
		out[i] = (uint32_t)json_integer_value(v);
	}
	*n = (uint32_t)json_array_size(a);
	return 0;
}

struct ka_buf {
	uint32_t prompt[ENG_IMAGE_KA_PROMPT_MAX];
	uint32_t expect[ENG_IMAGE_KA_EXPECT_MAX];
	struct eng_ka_logit logits[ENG_IMAGE_KA_LOGITS_MAX];
	struct eng_image_ka ka;
};

/* {"prompt":[ids],"expect":[ids],"logits":[[id,value]...],"tolerance":x},
 * or a fixture logits.json ({"cases":[{"ids":[..],"greedy":[..]}]}: its
 * first case; its logits are of the BF16 weights, so they are not kept). */
static int ka_load(const char *file, struct ka_buf *kb, char *err, size_t el)
{
	json_error_t je;
	json_t *j = json_load_file(file, 0, &je), *o, *lg;
	const char *pk = "prompt", *ek = "expect";
	size_t i;
	int rc = -EINVAL;

	memset(kb, 0, sizeof(*kb));
	if (!j) {
		snprintf(err, el, "%s: line %d: %s", file, je.line, je.text);
		return -EINVAL;
	}
	o = j;
	if (json_is_array(json_object_get(j, "cases"))) {
		o = json_array_get(json_object_get(j, "cases"), 0);
		pk = "ids";
		ek = "greedy";
	}
	if (!json_is_object(o) ||
	    ids_from_json(json_object_get(o, pk), kb->prompt, ENG_IMAGE_KA_PROMPT_MAX,
			  &kb->ka.prompt_len) ||
	    ids_from_json(json_object_get(o, ek), kb->expect, ENG_IMAGE_KA_EXPECT_MAX,
			  &kb->ka.expect_len)) {
		snprintf(err, el, "%s: \"%s\" and \"%s\" must be arrays of token ids (at most %d and %d)",
			 file, pk, ek, ENG_IMAGE_KA_PROMPT_MAX, ENG_IMAGE_KA_EXPECT_MAX);
		goto out;
	}
	lg = o == j ? json_object_get(j, "logits") : NULL;
	if (lg) {
		const json_t *p;

		if (!json_is_array(lg) || json_array_size(lg) > ENG_IMAGE_KA_LOGITS_MAX) {
			snprintf(err, el, "%s: \"logits\": at most %d [id, value] pairs",
				 file, ENG_IMAGE_KA_LOGITS_MAX);
			goto out;
		}
		json_array_foreach(lg, i, p) {
			const json_t *id = json_array_get(p, 0), *v = json_array_get(p, 1);

			if (!json_is_integer(id) || !json_is_number(v) ||
			    json_integer_value(id) < 0 || json_integer_value(id) > UINT32_MAX) {
				snprintf(err, el, "%s: logits[%zu] is not [id, value]", file, i);
				goto out;
			}
			kb->logits[i].id = (uint32_t)json_integer_value(id);
			kb->logits[i].logit = (float)json_number_value(v);
		}
		kb->ka.n_logits = (uint32_t)json_array_size(lg);
		kb->ka.logit_tol = (float)json_number_value(json_object_get(j, "tolerance"));
	}
	kb->ka.prompt = kb->prompt;
	kb->ka.expect = kb->expect;
	kb->ka.logits = kb->logits;
	rc = 0;
out:
	json_decref(j);
	return rc;
}

/* ------------------------------------------------------------------------
 * --info and --verify.
 */

static const char *arch_name(uint32_t a)
{
	switch (a) {
	case ENG_ARCH_LLAMA: return "llama";
	case ENG_ARCH_MISTRAL: return "mistral";
	case ENG_ARCH_QWEN2: return "qwen2";
	default: return "?";
	}
}

static const char *chat_name(uint32_t c)
{
	static const char *const n[] = { "none", "llama3", "llama2", "chatml", "zephyr" };

	return c < ARRAY_SIZE(n) ? n[c] : "?";
}

static int do_info(const char *path)
{
	char err[CONV_ERR_LEN];
	const struct eng_image_hdr *h;
	const struct eng_image_cfg *c;
	const struct eng_model *m;
	struct eng_image_tok_hdr th;
	struct eng_image *img;
	int rc;

	rc = eng_image_open(path, ENG_IMAGE_VERIFY_FAST, &img, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "velo-convert: %s: %s\n", path, err);
		return 1;
	}
	h = eng_image_hdr(img);
	c = eng_image_cfg(img);
	m = eng_image_model(img);
	printf("image      %s\n", path);
	printf("format     %u.%u, %llu bytes, header %u, metadata %llu bytes at %llu\n",
	       h->version_major, h->version_minor, (unsigned long long)h->file_size,
	       h->hdr_len, (unsigned long long)h->meta_len, (unsigned long long)h->meta_off);
	printf("data       %llu bytes at %llu (aligned %u, tensors aligned %u)\n",
	       (unsigned long long)h->data_len, (unsigned long long)h->data_off,
	       h->data_align, h->tensor_align);
	printf("checksums  header %016llx  metadata %016llx  file %016llx (XXH3-64)\n",
	       (unsigned long long)h->hdr_xxh, (unsigned long long)h->meta_xxh,
	       (unsigned long long)h->file_xxh);
	printf("model      %s  version %s\n", h->name, h->version[0] ? h->version : "-");
	printf("arch       %s, weights %s\n", arch_name(c->arch),
	       eng_dtype_name((enum eng_dtype)c->weight_dtype));
	printf("dims       vocab %u, hidden %u, layers %u, heads %u, kv heads %u, head_dim %u, ffn %u\n",
	       c->vocab_size, c->hidden, c->n_layers, c->n_heads, c->n_kv_heads,
	       c->head_dim, c->ffn);
	printf("context    max_seq %u, sliding window %u\n", c->max_seq, c->sliding_window);
	printf("norm       rms, eps %g\n", (double)c->norm_eps);
	printf("rope       theta %g, scaling %s", (double)c->rope_theta,
	       c->rope_scaling == ENG_ROPE_LLAMA3 ? "llama3" :
	       c->rope_scaling == ENG_ROPE_LINEAR ? "linear" : "none");
	if (c->rope_scaling == ENG_ROPE_LLAMA3)
		printf(" (factor %g, low %g, high %g, orig max pos %u)",
		       (double)c->rope_factor, (double)c->rope_low_freq_factor,
		       (double)c->rope_high_freq_factor, c->rope_orig_max_pos);
	else if (c->rope_scaling == ENG_ROPE_LINEAR)
		printf(" (factor %g)", (double)c->rope_factor);
	printf("\nflags      tied %d, qkv bias %d, o bias %d\n",
	       !!(c->flags & ENG_IMAGE_CFG_TIED), !!(c->flags & ENG_IMAGE_CFG_QKV_BIAS),
	       !!(c->flags & ENG_IMAGE_CFG_O_BIAS));
	printf("tokens     bos %d, pad %d, eos", c->bos_id == UINT32_MAX ? -1 : (int)c->bos_id,
	       c->pad_id == UINT32_MAX ? -1 : (int)c->pad_id);
	for (uint32_t i = 0; i < c->n_eos; i++)
		printf(" %u", c->eos_ids[i]);
	printf(", chat template %s\n", chat_name(c->chat_template));
	memcpy(&th, m->tokenizer_blob, sizeof(th));
	printf("tokenizer  %zu bytes: tokenizer.json %u, tokenizer_config.json %u\n",
	       m->tokenizer_blob_len, th.tokenizer_json_len, th.tokenizer_config_json_len);
	if (m->ka_prompt_len) {
		printf("known      prompt");
		for (uint32_t i = 0; i < m->ka_prompt_len; i++)
			printf(" %u", m->ka_prompt[i]);
		printf(" -> expect");
		for (uint32_t i = 0; i < m->ka_expect_len; i++)
			printf(" %u", m->ka_expect[i]);
		printf(" (%u logits, tol %g)\n", m->ka_n_logits, (double)m->ka_logit_tol);
	} else {
		printf("known      (no known-answer record)\n");
	}
	printf("tensors    %u\n", eng_image_tensor_count(img));
	printf("  %-48s %-10s %-14s %12s %12s %12s  %s\n", "name", "dtype", "shape",
	       "offset", "bytes", "scales", "xxh3");
	for (unsigned i = 0; i < eng_image_tensor_count(img); i++) {
		const struct eng_image_tensor_ent *e = eng_image_tensor(img, i);
		char shape[32];

		if (e->ndim == 1)
			snprintf(shape, sizeof(shape), "[%u]", e->cols);
		else
			snprintf(shape, sizeof(shape), "[%u, %u]", e->rows, e->cols);
		printf("  %-48s %-10s %-14s %12llu %12llu %12llu  %016llx\n", e->name,
		       eng_dtype_name((enum eng_dtype)e->dtype), shape,
		       (unsigned long long)e->data_off, (unsigned long long)e->data_len,
		       (unsigned long long)e->scale_len, (unsigned long long)e->xxh);
	}
	eng_image_close(img);
	return 0;
}

static int do_verify(const char *path)
{
	char err[CONV_ERR_LEN];
	struct eng_image *img;
	uint64_t t0 = clock_mono_ns(), t1;
	double s;
	int rc;

	rc = eng_image_open(path, ENG_IMAGE_VERIFY_FULL, &img, err, sizeof(err));
	t1 = clock_mono_ns();
	if (rc) {
		fprintf(stderr, "velo-convert: %s: INVALID: %s\n", path, err);
		return 1;
	}
	s = (double)(t1 - t0) / 1e9;
	printf("%s: OK, %u tensors, %llu bytes, every checksum verified in %.3f s (%.2f GB/s)\n",
	       path, eng_image_tensor_count(img),
	       (unsigned long long)eng_image_hdr(img)->file_size, s,
	       (double)eng_image_hdr(img)->file_size / 1e9 / (s > 0 ? s : 1e-9));
	eng_image_close(img);
	return 0;
}

/* ------------------------------------------------------------------------
 * Conversion.
 */

static uint64_t fnv1a(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
	return h;
}

/* Bind each planned tensor to its safetensors source and check shapes. */
static int bind_hf(struct hf_model *hf, struct ptensor *pt, unsigned n)
{
	unsigned used = 0;

	for (unsigned i = 0; i < n; i++) {
		struct ptensor *t = &pt[i];
		const struct st_tensor *s = hf_tensor(hf, t->name);

		if (!s) {
			fprintf(stderr, "velo-convert: %s: tensor %s missing (config: %s)\n",
				hf->dir, t->name, t->ndim == 1 ? "vector" : "matrix");
			return -EINVAL;
		}
		if (!s->len) {
			fprintf(stderr, "velo-convert: tensor %s: unsupported safetensors dtype (F32, F16, BF16)\n",
				t->name);
			return -ENOTSUP;
		}
		if (s->ndim != t->ndim ||
		    (t->ndim == 2 && (s->shape[0] != t->rows || s->shape[1] != t->cols)) ||
		    (t->ndim == 1 && s->shape[0] != t->cols)) {
			fprintf(stderr, "velo-convert: tensor %s: shape [%llu, %llu] (%ud), config implies [%u, %u]\n",
				t->name, (unsigned long long)s->shape[0],
				(unsigned long long)s->shape[1], s->ndim, t->rows, t->cols);
			return -EINVAL;
		}
		t->src = s;
		used++;
	}
	if (used < hf->n_t) {
		unsigned shown = 0;

		fprintf(stderr, "velo-convert: note: %u input tensors not used by the engine:",
			hf->n_t - used);
		for (unsigned i = 0; i < hf->n_t && shown < 4; i++) {
			bool found = false;

			for (unsigned k = 0; k < n && !found; k++)
				found = pt[k].src == &hf->t[i];
			if (!found) {
				fprintf(stderr, " %s", hf->t[i].name);
				shown++;
			}
		}
		fprintf(stderr, "%s\n", hf->n_t - used > shown ? " ..." : "");
	}
	return 0;
}

static void summary(const struct ptensor *pt, unsigned n)
{
	struct {
		const char *kind;
		enum eng_dtype dt;
		unsigned count, fallback;
		struct qstats st;
		double worst;
	} k[24];
	unsigned nk = 0;
	struct qstats all = { 0 };

	for (unsigned i = 0; i < n; i++) {
		unsigned j;

		for (j = 0; j < nk; j++)
			if (!strcmp(k[j].kind, pt[i].kind) && k[j].dt == pt[i].out)
				break;
		if (j == nk) {
			if (nk == ARRAY_SIZE(k))
				continue;
			memset(&k[nk], 0, sizeof(k[nk]));
			k[nk].kind = pt[i].kind;
			k[nk].dt = pt[i].out;
			nk++;
		}
		k[j].count++;
		k[j].fallback += pt[i].fallback;
		qstats_merge(&k[j].st, &pt[i].st);
		k[j].worst = MAX(k[j].worst, qstats_rel_rms(&pt[i].st));
		qstats_merge(&all, &pt[i].st);
	}
	fprintf(stderr, "\nquantization error (relative RMS = sqrt(sum err^2 / sum w^2), over all tensors of a kind):\n");
	fprintf(stderr, "  %-34s %-10s %5s %12s %12s %12s\n", "tensor", "dtype", "count",
		"rel_rms", "worst", "max_abs");
	for (unsigned j = 0; j < nk; j++)
		fprintf(stderr, "  %-34s %-10s %5u %12.4e %12.4e %12.4e%s\n", k[j].kind,
			eng_dtype_name(k[j].dt), k[j].count, qstats_rel_rms(&k[j].st),
			k[j].worst, k[j].st.max_abs,
			k[j].fallback ? "  (int4 impossible: cols % 128)" : "");
	fprintf(stderr, "  %-34s %-10s %5u %12.4e %12s %12.4e\n", "all", "", n,
		qstats_rel_rms(&all), "", all.max_abs);
}

static int convert(const struct opts *o)
{
	char err[CONV_ERR_LEN] = "";
	struct hf_model hf = { 0 };
	const struct shape *shape = NULL;
	const struct eng_model_config *cfg;
	struct eng_image_writer_params wp = { 0 };
	struct eng_image_writer *w = NULL;
	struct ptensor *pt = NULL;
	struct job *job = NULL;
	struct pool pool;
	char *tok = NULL, *tcfg = NULL, name[ENG_IMAGE_NAME_LEN];
	size_t tok_len = 0, tcfg_len = 0;
	uint64_t t0 = clock_mono_ns(), bytes = 0, max_row = 0, max_srow = 0, params = 0;
	uint32_t max_cols = 0;
	unsigned n, threads = o->threads;
	struct ka_buf kb;
	struct rusage ru;
	bool pool_up = false, wt_up = false;
	struct wthread wt = { 0 };
	uint8_t *data[2] = { NULL, NULL }, *scales[2] = { NULL, NULL };
	unsigned cur = 0;
	double secs;
	int rc;

	if (o->ka_file && ka_load(o->ka_file, &kb, err, sizeof(err))) {
		fprintf(stderr, "velo-convert: %s\n", err);
		return 1;
	}
	if (o->random) {
		shape = shape_find(o->random);
		if (!shape) {
			fprintf(stderr, "velo-convert: unknown shape '%s'; known shapes:\n", o->random);
			shapes_list(stderr);
			return 2;
		}
		cfg = &shape->cfg;
		rc = tokgen(shape, &tok, &tok_len, &tcfg, &tcfg_len);
		if (rc) {
			fprintf(stderr, "velo-convert: generating the tokenizer: %s\n", strerror(-rc));
			return 1;
		}
		snprintf(name, sizeof(name), "random-%s", shape->name);
	} else {
		char *d = strdup(o->in);

		rc = hf_open(&hf, o->in, err, sizeof(err));
		if (rc) {
			free(d);
			fprintf(stderr, "velo-convert: %s\n", err);
			return 1;
		}
		cfg = &hf.cfg;
		snprintf(name, sizeof(name), "%s", d ? basename(d) : "model");
		free(d);
	}

	pt = calloc(3 + 13 * (size_t)cfg->n_layers, sizeof(*pt));
	job = calloc(1, sizeof(*job));
	if (!pt || !job) {
		fprintf(stderr, "velo-convert: out of memory\n");
		rc = -ENOMEM;
		goto out;
	}
	n = plan_build(cfg, o->dtype, pt);
	if (!o->random) {
		rc = bind_hf(&hf, pt, n);
		if (rc)
			goto out;
	}

	wp.cfg = cfg;
	wp.name = o->name ? o->name : name;
	wp.version = o->version ? o->version : "1";
	wp.weight_dtype = o->dtype;
	wp.data_align = o->data_align;
	wp.tensor_align = o->tensor_align;
	wp.tokenizer_json = o->random ? tok : hf.tok_json;
	wp.tokenizer_json_len = o->random ? tok_len : hf.tok_json_len;
	wp.tokenizer_config_json = o->random ? tcfg : hf.tok_cfg_json;
	wp.tokenizer_config_json_len = o->random ? tcfg_len : hf.tok_cfg_json_len;
	wp.durable = !o->no_sync;
	rc = eng_image_writer_open(o->out, &wp, &w, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "velo-convert: %s\n", err);
		goto out;
	}
	for (unsigned i = 0; i < n; i++) {
		uint64_t dl, sl, rows_c;

		pt[i].idx = eng_image_writer_tensor_add(w, pt[i].name, pt[i].out,
							pt[i].ndim, pt[i].rows, pt[i].cols);
		if (pt[i].idx < 0) {
			rc = pt[i].idx;
			fprintf(stderr, "velo-convert: %s\n", err);
			goto out;
		}
		pt[i].key = o->seed ^ fnv1a(pt[i].name);
		/* the largest chunk: rows_c rows of dl data and sl scale bytes */
		eng_dtype_sizes(pt[i].out, 1, pt[i].cols, &dl, &sl);
		rows_c = MIN(MAX(1u, CHUNK_ELEMS / pt[i].cols), pt[i].rows);
		max_row = MAX(max_row, rows_c * dl);
		max_srow = MAX(max_srow, rows_c * sl);
		max_cols = MAX(max_cols, pt[i].cols);
		params += (uint64_t)pt[i].rows * pt[i].cols;
	}
	if (o->ka_file && eng_image_writer_ka_set(w, &kb.ka)) {
		fprintf(stderr, "velo-convert: %s\n", err);
		rc = -EINVAL;
		goto out;
	}

	/* Buffers: one chunk of output rows, one f32 row per thread. */
	threads = MAX(1u, MIN(threads, (unsigned)THREADS_MAX));
	job->nthreads = threads;
	for (unsigned i = 0; i < 2; i++) {
		data[i] = malloc(max_row);
		scales[i] = malloc(MAX(max_srow, (uint64_t)64));
		if (!data[i] || !scales[i])
			rc = -ENOMEM;
	}
	for (unsigned i = 0; i < threads; i++) {
		job->rowbuf[i] = malloc((size_t)max_cols * sizeof(float));
		if (!job->rowbuf[i])
			rc = -ENOMEM;
	}
	if (rc) {
		fprintf(stderr, "velo-convert: out of memory for conversion buffers\n");
		rc = -ENOMEM;
		goto out;
	}
	rc = pool_init(&pool, threads);
	pool_up = true;
	if (rc) {
		fprintf(stderr, "velo-convert: starting threads: %s\n", strerror(-rc));
		goto out;
	}
	wt.w = w;
	pthread_mutex_init(&wt.mu, NULL);
	pthread_cond_init(&wt.cv, NULL);
	if (pthread_create(&wt.th, NULL, wthread_main, &wt)) {
		fprintf(stderr, "velo-convert: starting the writer thread failed\n");
		rc = -EAGAIN;
		goto out;
	}
	wt_up = true;
	if (!o->quiet)
		fprintf(stderr, "velo-convert: %s -> %s: %u tensors, %.2f G parameters, matrices %s, %u threads\n",
			o->random ? o->random : o->in, o->out, n, (double)params / 1e9,
			eng_dtype_name(o->dtype), threads);

	for (unsigned i = 0; i < n; i++) {
		struct ptensor *t = &pt[i];
		uint32_t chunk = MAX(1u, CHUNK_ELEMS / t->cols);
		uint64_t ts = clock_mono_ns(), dl, sl;

		eng_dtype_sizes(t->out, 1, t->cols, &dl, &sl);
		job->t = t;
		job->row_bytes = dl;
		job->row_scale_bytes = sl;
		for (uint32_t r0 = 0; r0 < t->rows; r0 += chunk) {
			job->row0 = r0;
			job->nrows = MIN(chunk, t->rows - r0);
			job->data = data[cur];
			job->scales = scales[cur];
			memset(job->st, 0, sizeof(job->st));
			memset(job->rc, 0, sizeof(job->rc));
			pool_run(&pool, job_work, job);
			for (unsigned k = 0; k < threads; k++) {
				qstats_merge(&t->st, &job->st[k]);
				if (job->rc[k]) {
					fprintf(stderr, "velo-convert: tensor %s row %u: %s\n",
						t->name, job->bad_row[k],
						t->st.nonfinite ? "non-finite weight (NaN or infinity)"
								: "INT4 scale beyond f16 range");
					rc = job->rc[k];
					goto out;
				}
			}
			if (t->src)	/* converted: its source pages can go */
				hf_rows_release(t->src, r0, job->nrows);
			rc = wthread_submit(&wt, (unsigned)t->idx, r0, job->nrows,
					    data[cur], sl ? scales[cur] : NULL);
			if (rc) {
				fprintf(stderr, "velo-convert: %s\n", err);
				goto out;
			}
			cur ^= 1;
		}
		t->secs = (double)(clock_mono_ns() - ts) / 1e9;
		if (!o->quiet)
			fprintf(stderr, "[%4u/%u] %-46s %-9s [%u%s%.0u]%s rel_rms %.3e max_abs %.3e %6.2f s\n",
				i + 1, n, t->name, eng_dtype_name(t->out),
				t->ndim == 2 ? t->rows : t->cols, t->ndim == 2 ? ", " : "",
				t->ndim == 2 ? t->cols : 0,
				t->fallback ? " (int4: cols % 128 != 0, kept bf16)" : "",
				qstats_rel_rms(&t->st), t->st.max_abs, t->secs);
	}
	rc = wthread_drain(&wt);
	wthread_stop(&wt);
	wt_up = false;
	if (rc) {
		fprintf(stderr, "velo-convert: %s\n", err);
		goto out;
	}
	rc = eng_image_writer_finish(w, &bytes);
	w = NULL;
	if (rc) {
		fprintf(stderr, "velo-convert: %s\n", err);
		goto out;
	}
	secs = (double)(clock_mono_ns() - t0) / 1e9;
	if (!o->quiet)
		summary(pt, n);
	getrusage(RUSAGE_SELF, &ru);
	fprintf(stderr, "velo-convert: wrote %s: %llu bytes (%.1f MiB), %u tensors in %.2f s (%.0f MB/s written, %.0f M weights/s), peak RSS %ld MiB\n",
		o->out, (unsigned long long)bytes, (double)bytes / 1048576.0, n, secs,
		(double)bytes / 1e6 / secs, (double)params / 1e6 / secs, ru.ru_maxrss / 1024);
	/* The record must be this image's answer: computed by running it,
	 * unless given (--known-answer) or declined (--no-known-answer). */
	if (!o->ka_file && !o->no_ka) {
		uint64_t tk = clock_mono_ns();

		rc = ka_compute(o->out, threads, !o->quiet, err, sizeof(err));
		if (rc == -ENOTSUP) {
			fprintf(stderr, "velo-convert: note: no known-answer record: %s\n", err);
		} else if (rc) {
			fprintf(stderr, "velo-convert: computing the known answer: %s\n", err);
			unlink(o->out);
			return 1;
		} else if (!o->quiet) {
			fprintf(stderr, "velo-convert: known answer computed and recorded in %.2f s\n",
				(double)(clock_mono_ns() - tk) / 1e9);
		}
	}
	rc = 0;
out:
	if (wt_up)
		wthread_stop(&wt);
	if (pool_up)
		pool_fini(&pool);
	eng_image_writer_abort(w);
	for (unsigned i = 0; i < 2; i++) {
		free(data[i]);
		free(scales[i]);
	}
	if (job) {
		for (unsigned i = 0; i < THREADS_MAX; i++)
			free(job->rowbuf[i]);
	}
	free(job);
	free(pt);
	free(tok);
	free(tcfg);
	if (!o->random)
		hf_close(&hf);
	return rc ? 1 : 0;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: velo-convert [options] HF_DIR -o IMAGE\n"
		"       velo-convert --random SHAPE [options] -o IMAGE\n"
		"       velo-convert --info IMAGE | --verify IMAGE | --list-shapes\n"
		"\n"
		"  -o, --out IMAGE         image to write (written to IMAGE.tmp, renamed when valid)\n"
		"  -d, --dtype T           matrices as bf16 (default), fp8 (E4M3, per-row scale)\n"
		"                          or int4 (group 128, f16 scales); norms and biases stay\n"
		"                          f32, the embedding bf16\n"
		"  -r, --random SHAPE      synthetic weights ~N(0, 0.02) of a named shape\n"
		"      --seed N            seed for --random (default 1)\n"
		"  -k, --known-answer FILE {\"prompt\":[ids],\"expect\":[ids]} (or a fixture logits.json);\n"
		"                          default: computed by running the image on the CPU backend\n"
		"      --no-known-answer   record none\n"
		"      --name S --model-version S   recorded in the header\n"
		"  -j, --threads N         conversion threads (default: online CPUs)\n"
		"      --align N           data alignment (default 2097152; tests use 64)\n"
		"      --tensor-align N    tensor alignment (default 256)\n"
		"      --no-sync           skip fsync before the rename\n"
		"  -q, --quiet             no per-tensor progress lines\n"
		"  -i, --info IMAGE        print header, metadata and tensor table\n"
		"  -v, --verify IMAGE      verify every checksum\n"
		"      --list-shapes       shapes for --random\n");
}

static int parse_dtype(const char *s, enum eng_dtype *dt)
{
	if (!strcmp(s, "bf16"))
		*dt = ENG_DT_BF16;
	else if (!strcmp(s, "fp8"))
		*dt = ENG_DT_FP8_E4M3;
	else if (!strcmp(s, "int4"))
		*dt = ENG_DT_INT4_G128;
	else
		return -EINVAL;
	return 0;
}

static int parse_u64(const char *s, uint64_t *v)
{
	char *end;

	errno = 0;
	*v = strtoull(s, &end, 0);
	return errno || !*s || *end || *s == '-' ? -EINVAL : 0;
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "out", required_argument, NULL, 'o' },
		{ "dtype", required_argument, NULL, 'd' },
		{ "random", required_argument, NULL, 'r' },
		{ "seed", required_argument, NULL, 's' },
		{ "known-answer", required_argument, NULL, 'k' },
		{ "name", required_argument, NULL, 'N' },
		{ "model-version", required_argument, NULL, 'V' },
		{ "threads", required_argument, NULL, 'j' },
		{ "align", required_argument, NULL, 'A' },
		{ "tensor-align", required_argument, NULL, 'T' },
		{ "no-sync", no_argument, NULL, 'S' },
		{ "no-known-answer", no_argument, NULL, 'K' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "info", required_argument, NULL, 'i' },
		{ "verify", required_argument, NULL, 'v' },
		{ "list-shapes", no_argument, NULL, 'L' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct opts o = { .dtype = ENG_DT_BF16, .seed = 1 };
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	uint64_t v;
	int c;

	o.threads = ncpu > 0 ? (unsigned)MIN(ncpu, (long)THREADS_MAX) : 1;
	/* the engine's own info lines (tokenizer, backend) are noise here */
	log_set_ident("velo-convert");
	log_set_spec("eng=warn");
	while ((c = getopt_long(argc, argv, "o:d:r:k:j:qi:v:h", lo, NULL)) != -1) {
		switch (c) {
		case 'o': o.out = optarg; break;
		case 'd':
			if (parse_dtype(optarg, &o.dtype)) {
				fprintf(stderr, "velo-convert: --dtype: bf16, fp8 or int4\n");
				return 2;
			}
			break;
		case 'r': o.random = optarg; break;
		case 's':
			if (parse_u64(optarg, &o.seed)) {
				fprintf(stderr, "velo-convert: --seed: an unsigned integer\n");
				return 2;
			}
			break;
		case 'k': o.ka_file = optarg; break;
		case 'N': o.name = optarg; break;
		case 'V': o.version = optarg; break;
		case 'j':
			if (parse_u64(optarg, &v) || !v || v > THREADS_MAX) {
				fprintf(stderr, "velo-convert: --threads: 1..%d\n", THREADS_MAX);
				return 2;
			}
			o.threads = (unsigned)v;
			break;
		case 'A':
		case 'T':
			if (parse_u64(optarg, &v) || v > UINT32_MAX) {
				fprintf(stderr, "velo-convert: --align/--tensor-align: a power of two\n");
				return 2;
			}
			if (c == 'A')
				o.data_align = (uint32_t)v;
			else
				o.tensor_align = (uint32_t)v;
			break;
		case 'S': o.no_sync = true; break;
		case 'K': o.no_ka = true; break;
		case 'q': o.quiet = true; break;
		case 'i': o.info = optarg; break;
		case 'v': o.verify = optarg; break;
		case 'L': shapes_list(stdout); return 0;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (o.info)
		return do_info(o.info);
	if (o.verify)
		return do_verify(o.verify);
	if (optind < argc)
		o.in = argv[optind++];
	if (optind != argc || !o.out || (!o.in == !o.random)) {
		usage(stderr);
		return 2;
	}
	return convert(&o);
}
