// SPDX-License-Identifier: MIT
/*
 * main.c — velo-bench-gpu: the latency-tier figures of issue #6 for one
 * model image on one backend, through the generic backend ops table
 * (engine/backend.h), so that the same program measures the CUDA backend on
 * the GPU machine and the CPU backend anywhere:
 *
 *   cold load        main() entry -> first generated token: backend init
 *                    (CUDA: cuInit, context), image open (FAST verify by
 *                    default), model_load (CUDA: upload), a 16-token
 *                    prompt, one sampled token.  The image is in page cache
 *                    (just written or read by the caller).
 *   copy bandwidth   the ceiling, measured in the same process: CUDA: a
 *                    device-to-device cuMemcpyDtoDAsync (driver API, dlopen
 *                    of libcuda.so.1), bytes read + written over the event
 *                    time; CPU: memcpy on every core.  Median of 10.
 *   decode, batch 1  a --ctx prompt, 8 warm-up steps, then --runs runs of
 *                    --decode steps, each step = ops->step + ops->sample
 *                    (greedy; sample waits for the device, so host clocks
 *                    around it time finished work).  Bytes read per token
 *                    = weight_bytes + KV bytes per position x positions
 *                    attended; their rate over the copy bandwidth is the
 *                    share of the ceiling (PERFORMANCE.md goal: 85 %).
 *   TTFT             fresh sequence, P-token prompt (random ids) in one
 *                    step + the first sampled token; 1 warm-up, --reps
 *                    timed, median.
 *   streams          N sequences, each with its own KV blocks, prefilled
 *                    with --in tokens (packed into steps of at most
 *                    step_tokens_max), then --out - 1 decode steps of all
 *                    N together: N / median step = output tok/s (decode);
 *                    N x --out / (prefill + all decode steps) = end to end
 *                    (what the TensorRT-LLM 128/128 anchor counts).
 *
 * Prints a table; --json FILE writes settings, card, commit and figures
 * (tools/bench/gpu/report.py puts them beside the HF baseline).
 * --time-budget S skips the phases that would start after S seconds, so a
 * slow backend cannot run a device call past its limit; skipped phases are
 * listed.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <velo/compiler.h>

#include "../../../engine/backend.h"
#include "../../../engine/core/image.h"
#include "../../../engine/core/sampler.h"
#include "../../lib/benchmeta.h"
#include "../../lib/clock.h"
#include "../../lib/log.h"
#include "cudrv.h"

#define LIST_MAX 8
#define SAMPLER_WINDOW 16
#define COLD_PROMPT 16
#define B1_WARMUP 8
#define STREAM_WARMUP 3

struct opts {
	const char *backend, *image, *json, *commit, *kv;
	uint32_t ctx, decode, runs, reps, in_tok, out_tok, threads, block;
	uint32_t ttft[LIST_MAX], n_ttft;
	uint32_t streams[LIST_MAX], n_streams;
	int device;
	double time_budget;
	uint64_t bw_bytes;
	bool verify_full;
};

struct stats {
	double median, p10, p90, p99, min, max;
	unsigned n;
};

struct ttft_res {
	uint32_t prompt;
	struct stats ms;
};

struct stream_res {
	uint32_t n;
	struct stats step_ms;
	double decode_tps, prefill_s, e2e_tps;
	uint32_t steps;
};

struct bench {
	const struct opts *o;
	const struct eng_backend_ops *ops;
	struct eng_backend *be;
	struct eng_image *img;
	const struct eng_model *m;
	struct eng_be_model *bm;
	struct eng_be_model_info info;
	struct eng_model_budget bud;
	enum eng_kv_dtype kv_dtype;
	uint64_t kv_tok_bytes;		/* KV bytes per position, all layers */
	uint32_t vocab, per_long, per_stream, seqs_max;
	uint64_t t_main, rng;
	/* step buffers, sized at start */
	struct eng_seq_in *in;
	uint32_t *blocks;		/* [seqs_max][per_stream] then [per_long] */
	uint32_t *toks;			/* prompt ids, [step_tokens_max] */
	uint32_t *next;			/* [seqs_max] last sampled token */
	uint32_t *pos;			/* [seqs_max] positions held */
	struct eng_sampler **samp;	/* [seqs_max] greedy */
	void *samp_mem;
	double *t;			/* timing samples */
	size_t t_cap;
	/* results */
	struct gb_bw bw;
	double cold_init_s, cold_open_s, cold_load_s, cold_first_s, cold_total_s;
	struct stats b1_ms;
	double b1_run_med[16];
	unsigned b1_runs;
	double b1_ctx_mean, b1_bytes;
	struct ttft_res ttft[LIST_MAX];
	unsigned n_ttft;
	struct stream_res st[LIST_MAX];
	unsigned n_st;
	char skipped[256];
};

static double now_s(const struct bench *b)
{
	return (clock_mono_ns() - b->t_main) * 1e-9;
}

/* Past the time budget (and a phase may end early, with what it has). */
static bool over_budget(const struct bench *b)
{
	return b->o->time_budget > 0 && now_s(b) >= b->o->time_budget;
}

static void note_skip(struct bench *b, const char *what)
{
	size_t l = strlen(b->skipped);

	snprintf(b->skipped + l, sizeof(b->skipped) - l, "%s%s", l ? ", " : "", what);
}

/* Whether a phase may still start; if not, it is named in b->skipped. */
static bool phase_ok(struct bench *b, const char *what)
{
	if (!over_budget(b))
		return true;
	note_skip(b, what);
	return false;
}

static int cmp_dbl(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static struct stats stats_of(double *v, unsigned n)
{
	struct stats s = { 0 };

	if (!n)
		return s;
	qsort(v, n, sizeof(*v), cmp_dbl);
	s.n = n;
	s.min = v[0];
	s.max = v[n - 1];
	s.median = n & 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
	s.p10 = v[(n - 1) / 10];
	s.p90 = v[(n - 1) - (n - 1) / 10];
	s.p99 = v[(n - 1) - (n - 1) / 100];
	return s;
}

static uint32_t rand_tok(struct bench *b)
{
	b->rng ^= b->rng << 13;
	b->rng ^= b->rng >> 7;
	b->rng ^= b->rng << 17;
	return (uint32_t)((b->rng >> 11) % b->vocab);
}

/* Block table of stream s (blocks [s * per_stream, ...)); the long
 * sequence (TTFT, batch-1 decode) uses blocks [0, per_long): the phases
 * run one after the other and every sequence starts at position 0. */
static const uint32_t *table_stream(const struct bench *b, uint32_t s)
{
	return b->blocks + (size_t)s * b->per_stream;
}

static const uint32_t *table_long(const struct bench *b)
{
	return b->blocks + (size_t)b->seqs_max * b->per_stream;
}

/* One step of b->in[0..n) and the greedy token of each (all ask for
 * logits); sample() waits for the device. */
static int step_sample(struct bench *b, uint32_t n, uint32_t *out)
{
	struct eng_batch batch = { b->in, n };
	int rc = b->ops->step(b->bm, &batch);

	if (rc)
		return rc;
	return b->ops->sample(b->bm, b->samp, n, out);
}

static int check(int rc, const char *what)
{
	if (rc)
		fprintf(stderr, "velo-bench-gpu: %s: %s\n", what, strerror(-rc));
	return rc;
}

/* ---- setup ----------------------------------------------------------------- */

static const char *kv_name(enum eng_kv_dtype k)
{
	return k == ENG_KV_F32 ? "f32" : k == ENG_KV_BF16 ? "bf16" :
	       k == ENG_KV_FP8_E4M3 ? "fp8" : "?";
}

static int load_model(struct bench *b)
{
	const struct opts *o = b->o;
	enum eng_kv_dtype order[3];
	unsigned n_order = 0;
	uint32_t max_ttft = 0, long_pos, stream_pos;
	int rc = -EOPNOTSUPP;

	for (unsigned i = 0; i < o->n_ttft; i++)
		max_ttft = MAX(max_ttft, o->ttft[i]);
	for (unsigned i = 0; i < o->n_streams; i++)
		b->seqs_max = MAX(b->seqs_max, o->streams[i]);
	b->seqs_max = MAX(b->seqs_max, 1u);
	long_pos = MAX(max_ttft + 1, o->ctx + B1_WARMUP + o->runs * o->decode + 1);
	long_pos = MAX(long_pos, (uint32_t)COLD_PROMPT + 1);
	stream_pos = o->in_tok + o->out_tok;
	b->per_long = eng_kv_blocks_for(long_pos, o->block);
	b->per_stream = eng_kv_blocks_for(stream_pos, o->block);
	b->bud = (struct eng_model_budget){
		.seqs_max = b->seqs_max,
		/* the largest single step: a TTFT prompt, the batch-1
		 * prompt, one stream's prompt, a decode of every stream */
		.step_tokens_max = MAX(MAX(max_ttft, MAX(o->in_tok, o->ctx)),
				       MAX(b->seqs_max, (uint32_t)COLD_PROMPT)),
		.kv_blocks = b->seqs_max * b->per_stream + b->per_long,
		.kv_block_tokens = o->block,
		.seq_blocks_max = MAX(b->per_long, b->per_stream),
	};
	/* --kv NAME, else what each backend keeps: f32 on the CPU (its
	 * only one), bf16 then fp8 then f32 elsewhere */
	if (o->kv) {
		order[n_order++] = !strcmp(o->kv, "bf16") ? ENG_KV_BF16 :
				   !strcmp(o->kv, "fp8") ? ENG_KV_FP8_E4M3 : ENG_KV_F32;
	} else if (!strcmp(b->ops->name, "cpu")) {
		order[n_order++] = ENG_KV_F32;
	} else {
		order[n_order++] = ENG_KV_BF16;
		order[n_order++] = ENG_KV_FP8_E4M3;
		order[n_order++] = ENG_KV_F32;
	}
	for (unsigned i = 0; i < n_order && rc == -EOPNOTSUPP; i++) {
		b->bud.kv_dtype = order[i];
		rc = b->ops->model_load(b->be, b->m, &b->bud, &b->bm);
	}
	if (rc)
		return check(rc, "model_load");
	b->kv_dtype = b->bud.kv_dtype;
	b->ops->model_info(b->bm, &b->info);
	b->kv_tok_bytes = b->info.kv_bytes /
			  ((uint64_t)b->bud.kv_blocks * b->bud.kv_block_tokens);
	return 0;
}

static int alloc_bufs(struct bench *b)
{
	size_t ssz = eng_sampler_size(SAMPLER_WINDOW);
	struct eng_sampler_params p;
	size_t nblk = (size_t)b->seqs_max * b->per_stream + b->per_long;

	b->in = calloc(b->seqs_max, sizeof(*b->in));
	b->blocks = calloc(nblk, sizeof(*b->blocks));
	b->toks = calloc(b->bud.step_tokens_max, sizeof(*b->toks));
	b->next = calloc(b->seqs_max, sizeof(*b->next));
	b->pos = calloc(b->seqs_max, sizeof(*b->pos));
	b->samp = calloc(b->seqs_max, sizeof(*b->samp));
	b->samp_mem = aligned_alloc(64, ALIGN_UP(ssz * b->seqs_max, (size_t)64));
	b->t_cap = MAX((size_t)b->o->runs * b->o->decode, (size_t)b->o->out_tok) + 64;
	b->t = calloc(b->t_cap, sizeof(*b->t));
	if (!b->in || !b->blocks || !b->toks || !b->next || !b->pos ||
	    !b->samp || !b->samp_mem || !b->t)
		return -ENOMEM;
	for (size_t i = 0; i < nblk; i++)
		b->blocks[i] = (uint32_t)i;
	eng_sampler_params_default(&p);	/* greedy */
	p.penalty_window = 0;
	for (uint32_t s = 0; s < b->seqs_max; s++) {
		b->samp[s] = eng_sampler_init((char *)b->samp_mem + s * ssz, ssz,
					      &p, SAMPLER_WINDOW);
		if (!b->samp[s])
			return -EINVAL;
	}
	return 0;
}

/* ---- phases ---------------------------------------------------------------- */

/* Prefill the long sequence with @n random tokens, one step, first token. */
static int prefill_long(struct bench *b, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		b->toks[i] = rand_tok(b);
	b->in[0] = (struct eng_seq_in){ b->toks, n, 0, table_long(b), b->per_long,
					ENG_SEQ_LOGITS };
	b->pos[0] = n;
	return step_sample(b, 1, b->next);
}

/* One decode step of the long sequence; its time in seconds in *dt. */
static int decode_long(struct bench *b, double *dt)
{
	uint64_t t0 = clock_mono_ns();
	int rc;

	b->in[0] = (struct eng_seq_in){ &b->next[0], 1, b->pos[0], table_long(b),
					b->per_long, ENG_SEQ_LOGITS };
	rc = step_sample(b, 1, b->next);
	*dt = (clock_mono_ns() - t0) * 1e-9;
	b->pos[0]++;
	return rc;
}

static int phase_cold(struct bench *b, uint64_t t_init, uint64_t t_open,
		      uint64_t t_load)
{
	int rc = prefill_long(b, COLD_PROMPT);
	uint64_t t1 = clock_mono_ns();

	if (rc)
		return check(rc, "cold first token");
	b->cold_init_s = (t_init - b->t_main) * 1e-9;
	b->cold_open_s = (t_open - t_init) * 1e-9;
	b->cold_load_s = (t_load - t_open) * 1e-9;
	b->cold_first_s = (t1 - t_load) * 1e-9;
	b->cold_total_s = (t1 - b->t_main) * 1e-9;
	return 0;
}

static int phase_b1(struct bench *b)
{
	const struct opts *o = b->o;
	double dt, ctx_sum = 0;
	unsigned k = 0;
	int rc;

	rc = prefill_long(b, o->ctx);
	for (uint32_t i = 0; !rc && i < B1_WARMUP; i++)
		rc = decode_long(b, &dt);
	for (uint32_t r = 0; !rc && r < o->runs; r++) {
		double *run = b->t + k;

		if (r && over_budget(b)) {
			note_skip(b, "decode batch 1 runs after the first");
			break;
		}
		for (uint32_t i = 0; !rc && i < o->decode; i++) {
			ctx_sum += b->pos[0] + 1;	/* positions attended */
			rc = decode_long(b, &b->t[k++]);
		}
		if (!rc && r < ARRAY_SIZE(b->b1_run_med)) {
			/* median of this run, from a copy (stats_of sorts) */
			double *c = malloc(o->decode * sizeof(*c));

			if (!c)
				return -ENOMEM;
			memcpy(c, run, o->decode * sizeof(*c));
			b->b1_run_med[b->b1_runs++] = stats_of(c, o->decode).median * 1e3;
			free(c);
		}
	}
	if (rc)
		return check(rc, "batch-1 decode");
	b->b1_ctx_mean = ctx_sum / k;
	b->b1_bytes = (double)b->info.weight_bytes + b->kv_tok_bytes * b->b1_ctx_mean;
	b->b1_ms = stats_of(b->t, k);
	b->b1_ms.median *= 1e3, b->b1_ms.p10 *= 1e3, b->b1_ms.p90 *= 1e3;
	b->b1_ms.p99 *= 1e3;
	b->b1_ms.min *= 1e3, b->b1_ms.max *= 1e3;
	return 0;
}

static int phase_ttft(struct bench *b, uint32_t p, struct ttft_res *res)
{
	unsigned n = 0;
	int rc = 0;

	for (uint32_t r = 0; !rc && r <= b->o->reps; r++) {
		uint64_t t0 = clock_mono_ns();

		rc = prefill_long(b, p);
		if (r)	/* run 0 is the warm-up */
			b->t[n++] = (clock_mono_ns() - t0) * 1e3 * 1e-9;
	}
	if (rc)
		return check(rc, "TTFT");
	res->prompt = p;
	res->ms = stats_of(b->t, n);
	return 0;
}

static int phase_streams(struct bench *b, uint32_t n, struct stream_res *res)
{
	const struct opts *o = b->o;
	uint32_t per_step = MAX(b->bud.step_tokens_max / o->in_tok, 1u);
	uint32_t steps = o->out_tok > 1 ? o->out_tok - 1 : 0, k = 0;
	uint64_t t0 = clock_mono_ns(), t1;
	double decode_sum = 0;
	int rc = 0;

	memset(res, 0, sizeof(*res));
	res->n = n;
	/* prefill: per_step prompts per step, each with its own blocks */
	for (uint32_t s0 = 0; !rc && s0 < n; s0 += per_step) {
		uint32_t m = MIN(per_step, n - s0);

		for (uint32_t j = 0; j < m; j++) {
			uint32_t *t = b->toks + j * o->in_tok;

			for (uint32_t i = 0; i < o->in_tok; i++)
				t[i] = rand_tok(b);
			b->in[j] = (struct eng_seq_in){ t, o->in_tok, 0,
				table_stream(b, s0 + j), b->per_stream, ENG_SEQ_LOGITS };
		}
		rc = step_sample(b, m, b->next + s0);
		for (uint32_t j = 0; j < m; j++)
			b->pos[s0 + j] = o->in_tok;
	}
	if (rc)
		return check(rc, "streams prefill");
	t1 = clock_mono_ns();
	res->prefill_s = (t1 - t0) * 1e-9;
	/* decode: all n streams one token per step */
	for (uint32_t d = 0; !rc && d < steps; d++) {
		uint64_t ts = clock_mono_ns();
		double dt;

		if (k >= 8 && over_budget(b)) {
			char what[48];

			snprintf(what, sizeof(what), "streams %u after %u steps", n, d);
			note_skip(b, what);
			steps = d;
			break;
		}
		for (uint32_t s = 0; s < n; s++)
			b->in[s] = (struct eng_seq_in){ &b->next[s], 1, b->pos[s],
				table_stream(b, s), b->per_stream, ENG_SEQ_LOGITS };
		rc = step_sample(b, n, b->next);
		dt = (clock_mono_ns() - ts) * 1e-9;
		decode_sum += dt;
		for (uint32_t s = 0; s < n; s++)
			b->pos[s]++;
		if (d >= STREAM_WARMUP || steps <= STREAM_WARMUP)
			b->t[k++] = dt * 1e3;
	}
	if (rc)
		return check(rc, "streams decode");
	res->steps = steps;
	res->step_ms = stats_of(b->t, k);
	res->decode_tps = k ? n / (res->step_ms.median * 1e-3) : 0;
	res->e2e_tps = (double)n * (steps + 1) / (res->prefill_s + decode_sum);
	return 0;
}

/* ---- report ---------------------------------------------------------------- */

static void json_stats(FILE *f, const char *key, const struct stats *s)
{
	fprintf(f, "\"%s\": {\"median\": %.4f, \"p10\": %.4f, \"p90\": %.4f, "
		   "\"p99\": %.4f, \"min\": %.4f, \"max\": %.4f, \"n\": %u}",
		key, s->median, s->p10, s->p90, s->p99, s->min, s->max, s->n);
}

struct meta {
	char commit[80], date[32], load0[16], load1[16], card[192], cpu[128];
	int driver;
	uint64_t card_mem;
	const char *dtype;
};

static double b1_tps(const struct bench *b)
{
	return b->b1_ms.n ? 1e3 / b->b1_ms.median : 0;
}

static double b1_share(const struct bench *b, double ms)
{
	return ms > 0 && b->bw.median_bps > 0 ?
	       b->b1_bytes / (ms * 1e-3) / b->bw.median_bps : 0;
}

static void print_table(const struct bench *b, const struct meta *mt)
{
	const struct opts *o = b->o;

	printf("velo-bench-gpu: backend %s, %s (%s), commit %s, %s\n", b->ops->name,
	       mt->card, b->info.kernels ? b->info.kernels : "?", mt->commit, mt->date);
	printf("model: %s (%s weights, %u layers, hidden %u, vocab %u), %.3f GB read per "
	       "token, KV %s %.1f KiB per position, load %s -> %s\n",
	       o->image, mt->dtype, b->m->cfg.n_layers, b->m->cfg.hidden,
	       b->vocab, b->info.weight_bytes * 1e-9, kv_name(b->kv_dtype),
	       b->kv_tok_bytes / 1024.0, mt->load0, mt->load1);
	printf("copy bandwidth: %.1f GB/s median (%.1f .. %.1f; %s)\n",
	       b->bw.median_bps * 1e-9, b->bw.worst_bps * 1e-9,
	       b->bw.best_bps * 1e-9, b->bw.method);
	printf("cold load to first token: %.3f s (init %.3f, open %.3f, model_load %.3f, "
	       "first token %.3f)\n", b->cold_total_s, b->cold_init_s, b->cold_open_s,
	       b->cold_load_s, b->cold_first_s);
	if (b->b1_ms.n) {
		printf("decode batch 1: %.3f ms/token median (p10 %.3f, p90 %.3f, p99 %.3f, "
		       "min %.3f, max %.3f, n %u; run medians", b->b1_ms.median, b->b1_ms.p10,
		       b->b1_ms.p90, b->b1_ms.p99, b->b1_ms.min, b->b1_ms.max, b->b1_ms.n);
		for (unsigned i = 0; i < b->b1_runs; i++)
			printf(" %.3f", b->b1_run_med[i]);
		printf("), %.1f tok/s; %.3f GB/token at mean context %.0f -> %.0f GB/s = "
		       "%.1f %% of copy bandwidth (best step %.1f %%)\n", b1_tps(b),
		       b->b1_bytes * 1e-9, b->b1_ctx_mean,
		       b->b1_bytes / (b->b1_ms.median * 1e-3) * 1e-9,
		       100 * b1_share(b, b->b1_ms.median), 100 * b1_share(b, b->b1_ms.min));
	}
	printf("\n%-10s %10s %10s %10s %6s\n", "TTFT", "median ms", "min ms", "max ms", "n");
	for (unsigned i = 0; i < b->n_ttft; i++)
		printf("%-10u %10.3f %10.3f %10.3f %6u\n", b->ttft[i].prompt,
		       b->ttft[i].ms.median, b->ttft[i].ms.min, b->ttft[i].ms.max,
		       b->ttft[i].ms.n);
	printf("\n%-8s %12s %10s %10s %10s %10s %12s\n", "streams", "decode tok/s",
	       "step ms", "p10 ms", "p90 ms", "prefill s", "e2e tok/s");
	for (unsigned i = 0; i < b->n_st; i++)
		printf("%-8u %12.1f %10.3f %10.3f %10.3f %10.3f %12.1f\n", b->st[i].n,
		       b->st[i].decode_tps, b->st[i].step_ms.median, b->st[i].step_ms.p10,
		       b->st[i].step_ms.p90, b->st[i].prefill_s, b->st[i].e2e_tps);
	printf("(streams: %u-token prompts, %u output tokens each; e2e counts prefill)\n",
	       o->in_tok, o->out_tok);
	if (b->skipped[0])
		printf("SKIPPED (time budget %.0f s): %s\n", o->time_budget, b->skipped);
}

static void write_json(const struct bench *b, const struct meta *mt)
{
	const struct opts *o = b->o;
	FILE *f = fopen(o->json, "w");

	if (!f) {
		perror(o->json);
		return;
	}
	fprintf(f, "{\n  \"bench\": \"velo-bench-gpu\",\n  \"commit\": \"%s\",\n"
		   "  \"date\": \"%s\",\n  \"backend\": \"%s\",\n  \"card\": \"%s\",\n"
		   "  \"card_mem_bytes\": %llu,\n  \"driver_version\": %d,\n"
		   "  \"host_cpu\": \"%s\",\n  \"loadavg_start\": \"%s\",\n"
		   "  \"loadavg_end\": \"%s\",\n",
		mt->commit, mt->date, b->ops->name, mt->card,
		(unsigned long long)mt->card_mem, mt->driver, mt->cpu, mt->load0,
		mt->load1);
	fprintf(f, "  \"model\": {\"image\": \"%s\", \"name\": \"%s\", \"dtype\": \"%s\", "
		   "\"layers\": %u, \"hidden\": %u, \"ffn\": %u, \"heads\": %u, "
		   "\"kv_heads\": %u, \"vocab\": %u, \"weight_bytes\": %llu, "
		   "\"kv_dtype\": \"%s\", \"kv_bytes_per_position\": %llu, "
		   "\"mem_bytes\": %llu, \"ctx_max\": %u, \"kernels\": \"%s\"},\n",
		o->image, b->m->name, mt->dtype, b->m->cfg.n_layers, b->m->cfg.hidden,
		b->m->cfg.ffn, b->m->cfg.n_heads, b->m->cfg.n_kv_heads, b->vocab,
		(unsigned long long)b->info.weight_bytes, kv_name(b->kv_dtype),
		(unsigned long long)b->kv_tok_bytes,
		(unsigned long long)b->info.mem_bytes, b->info.ctx_max,
		b->info.kernels ? b->info.kernels : "?");
	fprintf(f, "  \"settings\": {\"ctx\": %u, \"decode_steps\": %u, \"runs\": %u, "
		   "\"ttft_reps\": %u, \"in_tokens\": %u, \"out_tokens\": %u, "
		   "\"kv_block_tokens\": %u, \"kv_blocks\": %u, \"seqs_max\": %u, "
		   "\"step_tokens_max\": %u, \"verify\": \"%s\", \"threads\": %u, "
		   "\"time_budget_s\": %.0f, \"timing\": \"host clock around step + "
		   "sample (sample waits for the device)\"},\n",
		o->ctx, o->decode, o->runs, o->reps, o->in_tok, o->out_tok,
		b->bud.kv_block_tokens, b->bud.kv_blocks, b->bud.seqs_max,
		b->bud.step_tokens_max, o->verify_full ? "full" : "fast",
		b->info.threads, o->time_budget);
	fprintf(f, "  \"copy_bw\": {\"median_gbs\": %.2f, \"best_gbs\": %.2f, "
		   "\"worst_gbs\": %.2f, \"runs\": %u, \"bytes\": %llu, \"method\": \"%s\"},\n",
		b->bw.median_bps * 1e-9, b->bw.best_bps * 1e-9, b->bw.worst_bps * 1e-9,
		b->bw.runs, (unsigned long long)b->bw.bytes, b->bw.method);
	fprintf(f, "  \"cold_load\": {\"total_s\": %.4f, \"init_s\": %.4f, \"open_s\": %.4f, "
		   "\"model_load_s\": %.4f, \"first_token_s\": %.4f, \"from\": \"main() "
		   "entry\", \"prompt_tokens\": %u},\n",
		b->cold_total_s, b->cold_init_s, b->cold_open_s, b->cold_load_s,
		b->cold_first_s, COLD_PROMPT);
	fprintf(f, "  \"decode_b1\": {");
	json_stats(f, "ms", &b->b1_ms);
	fprintf(f, ", \"run_medians_ms\": [");
	for (unsigned i = 0; i < b->b1_runs; i++)
		fprintf(f, "%s%.4f", i ? ", " : "", b->b1_run_med[i]);
	fprintf(f, "], \"tok_s\": %.2f, \"mean_context\": %.1f, \"bytes_per_token\": %.0f, "
		   "\"gbs\": %.2f, \"share_of_copy_bw\": %.4f, \"share_of_copy_bw_best\": %.4f},\n",
		b1_tps(b), b->b1_ctx_mean, b->b1_bytes,
		b->b1_ms.n ? b->b1_bytes / (b->b1_ms.median * 1e-3) * 1e-9 : 0,
		b1_share(b, b->b1_ms.median), b1_share(b, b->b1_ms.min));
	fprintf(f, "  \"ttft\": [");
	for (unsigned i = 0; i < b->n_ttft; i++) {
		fprintf(f, "%s\n    {\"prompt\": %u, ", i ? "," : "", b->ttft[i].prompt);
		json_stats(f, "ms", &b->ttft[i].ms);
		fprintf(f, "}");
	}
	fprintf(f, "\n  ],\n  \"streams\": [");
	for (unsigned i = 0; i < b->n_st; i++) {
		fprintf(f, "%s\n    {\"n\": %u, \"decode_tok_s\": %.2f, \"e2e_tok_s\": %.2f, "
			   "\"prefill_s\": %.4f, \"decode_steps\": %u, ",
			i ? "," : "", b->st[i].n, b->st[i].decode_tps, b->st[i].e2e_tps,
			b->st[i].prefill_s, b->st[i].steps);
		json_stats(f, "step_ms", &b->st[i].step_ms);
		fprintf(f, "}");
	}
	fprintf(f, "\n  ],\n  \"skipped\": \"%s\"\n}\n", b->skipped);
	fclose(f);
	printf("wrote %s\n", o->json);
}

/* ---- options --------------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: velo-bench-gpu [options] IMAGE\n"
		"  -B, --backend NAME    cpu or cuda (default: cuda when built, else cpu)\n"
		"  -D, --device N        CUDA device ordinal (default 0)\n"
		"  -t, --threads N       CPU backend workers (default: online cores)\n"
		"  -x, --ctx N           prompt before the batch-1 decode (default 128)\n"
		"  -n, --decode N        decode steps per batch-1 run (default 64)\n"
		"  -R, --runs N          batch-1 runs (default 3)\n"
		"  -r, --reps N          TTFT repetitions after one warm-up (default 5)\n"
		"  -T, --ttft LIST       prompt lengths (default 128,512,2048)\n"
		"  -s, --streams LIST    concurrent streams (default 1,8,32,64,128)\n"
		"  -i, --in N            prompt tokens per stream (default 128)\n"
		"  -o, --out N           output tokens per stream (default 128)\n"
		"  -k, --kv NAME         KV dtype f32, bf16, fp8 (default: CPU f32; else\n"
		"                        bf16, then fp8, then f32, the first the backend takes)\n"
		"  -b, --block N         KV block tokens (default 16)\n"
		"  -w, --bw-mib N        copy-bandwidth buffer size (default 1024; CPU 512)\n"
		"  -F, --verify-full     open the image with the FULL verify (velod does)\n"
		"  -L, --time-budget S   skip phases that would start after S seconds\n"
		"  -j, --json FILE       write the results as JSON\n"
		"  -c, --commit ID       recorded (default: $VELO_COMMIT or git HEAD)\n");
}

static int parse_list(const char *s, uint32_t *v, uint32_t *n)
{
	char *end;

	*n = 0;
	while (*s) {
		unsigned long x = strtoul(s, &end, 10);

		if (end == s || !x || x > 1000000 || *n == LIST_MAX)
			return -EINVAL;
		v[(*n)++] = (uint32_t)x;
		s = *end == ',' ? end + 1 : end;
		if (*end && *end != ',')
			return -EINVAL;
	}
	return *n ? 0 : -EINVAL;
}

static int parse_u32(const char *s, uint32_t *v)
{
	char *end;
	unsigned long x = strtoul(s, &end, 10);

	if (end == s || *end || x > 100000000)
		return -EINVAL;
	*v = (uint32_t)x;
	return 0;
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
	static const struct option lo[] = {
		{ "backend", required_argument, NULL, 'B' },
		{ "device", required_argument, NULL, 'D' },
		{ "threads", required_argument, NULL, 't' },
		{ "ctx", required_argument, NULL, 'x' },
		{ "decode", required_argument, NULL, 'n' },
		{ "runs", required_argument, NULL, 'R' },
		{ "reps", required_argument, NULL, 'r' },
		{ "ttft", required_argument, NULL, 'T' },
		{ "streams", required_argument, NULL, 's' },
		{ "in", required_argument, NULL, 'i' },
		{ "out", required_argument, NULL, 'o' },
		{ "kv", required_argument, NULL, 'k' },
		{ "block", required_argument, NULL, 'b' },
		{ "bw-mib", required_argument, NULL, 'w' },
		{ "verify-full", no_argument, NULL, 'F' },
		{ "time-budget", required_argument, NULL, 'L' },
		{ "json", required_argument, NULL, 'j' },
		{ "commit", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	uint32_t v = 0;
	int c, bad = 0;

	while ((c = getopt_long(argc, argv, "B:D:t:x:n:R:r:T:s:i:o:k:b:w:FL:j:c:h",
				lo, NULL)) != -1) {
		switch (c) {
		case 'B': o->backend = optarg; break;
		case 'D': bad |= parse_u32(optarg, &v); o->device = (int)v; break;
		case 't': bad |= parse_u32(optarg, &o->threads); break;
		case 'x': bad |= parse_u32(optarg, &o->ctx); break;
		case 'n': bad |= parse_u32(optarg, &o->decode); break;
		case 'R': bad |= parse_u32(optarg, &o->runs); break;
		case 'r': bad |= parse_u32(optarg, &o->reps); break;
		case 'T': bad |= parse_list(optarg, o->ttft, &o->n_ttft); break;
		case 's': bad |= parse_list(optarg, o->streams, &o->n_streams); break;
		case 'i': bad |= parse_u32(optarg, &o->in_tok); break;
		case 'o': bad |= parse_u32(optarg, &o->out_tok); break;
		case 'k': o->kv = optarg; break;
		case 'b': bad |= parse_u32(optarg, &o->block); break;
		case 'w': bad |= parse_u32(optarg, &v); o->bw_bytes = (uint64_t)v << 20; break;
		case 'F': o->verify_full = true; break;
		case 'L': o->time_budget = atof(optarg); break;
		case 'j': o->json = optarg; break;
		case 'c': o->commit = optarg; break;
		case 'h': usage(stdout); exit(0);
		default: return -EINVAL;
		}
	}
	if (bad || optind != argc - 1)
		return -EINVAL;
	o->image = argv[optind];
	if (!o->ctx || !o->decode || !o->runs || !o->reps || !o->in_tok ||
	    !o->out_tok || !o->block || (o->block & (o->block - 1)) || !o->bw_bytes)
		return -EINVAL;
	if (o->kv && strcmp(o->kv, "f32") && strcmp(o->kv, "bf16") && strcmp(o->kv, "fp8"))
		return -EINVAL;
	return 0;
}

static const struct eng_backend_ops *pick_backend(const char *name)
{
	if (IS_ENABLED(CONFIG_ENGINE_CPU) && !strcmp(name, "cpu"))
		return &eng_cpu_ops;
#if IS_ENABLED(CONFIG_ENGINE_CUDA)
	if (!strcmp(name, "cuda"))
		return &eng_cuda_ops;
#endif
	return NULL;
}

int main(int argc, char **argv)
{
	struct opts o = {
		.backend = IS_ENABLED(CONFIG_ENGINE_CUDA) ? "cuda" : "cpu",
		.ctx = 128, .decode = 64, .runs = 3, .reps = 5, .in_tok = 128,
		.out_tok = 128, .block = 16, .bw_bytes = 0,
		.ttft = { 128, 512, 2048 }, .n_ttft = 3,
		.streams = { 1, 8, 32, 64, 128 }, .n_streams = 5,
	};
	struct bench b = { .o = &o, .rng = 0x9e3779b97f4a7c15ull };
	struct eng_backend_budget bb = { 0 };
	struct meta mt = { .driver = 0 };
	uint64_t t_init, t_open, t_load;
	char err[256];
	bool is_cuda;
	int rc;

	b.t_main = clock_mono_ns();
	o.bw_bytes = 1;		/* set below once the backend is known */
	if (parse_opts(argc, argv, &o)) {
		usage(stderr);
		return 2;
	}
	b.ops = pick_backend(o.backend);
	if (!b.ops) {
		fprintf(stderr, "velo-bench-gpu: backend '%s' is not built here (have: cpu%s)\n",
			o.backend, IS_ENABLED(CONFIG_ENGINE_CUDA) ? ", cuda" : "");
		return 2;
	}
	is_cuda = !strcmp(b.ops->name, "cuda");
	if (o.bw_bytes == 1)
		o.bw_bytes = is_cuda ? 1024ull << 20 : 512ull << 20;
	log_set_spec("warn");

	/* cold load: everything from main() entry to the first token */
	bb.device = o.device;
	bb.cpu.threads = o.threads;
	rc = b.ops->init(&bb, &b.be);
	if (rc)
		return check(rc, "backend init"), 1;
	t_init = clock_mono_ns();
	rc = eng_image_open(o.image, o.verify_full ? ENG_IMAGE_VERIFY_FULL :
			    ENG_IMAGE_VERIFY_FAST, &b.img, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "velo-bench-gpu: %s: %s\n", o.image, err);
		return 1;
	}
	t_open = clock_mono_ns();
	b.m = eng_image_model(b.img);
	b.vocab = b.m->cfg.vocab_size;
	if (load_model(&b))
		return 1;
	t_load = clock_mono_ns();
	if (check(alloc_bufs(&b), "buffers") || phase_cold(&b, t_init, t_open, t_load))
		return 1;

	/* the record */
	if (o.commit)
		snprintf(mt.commit, sizeof(mt.commit), "%s", o.commit);
	else
		velo_bench_commit(mt.commit, sizeof(mt.commit));
	velo_bench_date(mt.date, sizeof(mt.date));
	velo_bench_loadavg(mt.load0, sizeof(mt.load0));
	velo_bench_cpu_name(mt.cpu, sizeof(mt.cpu));
	mt.dtype = eng_dtype_name((enum eng_dtype)eng_image_cfg(b.img)->weight_dtype);
	if (is_cuda) {
		rc = gb_cuda_open(o.device, mt.card, sizeof(mt.card), &mt.driver, &mt.card_mem);
		if (!rc)
			rc = gb_cuda_copy_bw(o.bw_bytes, 10, &b.bw);
	} else {
		snprintf(mt.card, sizeof(mt.card), "%s (%ld cores)", mt.cpu,
			 sysconf(_SC_NPROCESSORS_ONLN));
		rc = gb_cpu_copy_bw(o.bw_bytes, o.threads, 10, &b.bw);
	}
	if (rc)
		fprintf(stderr, "velo-bench-gpu: copy bandwidth not measured: %s\n",
			strerror(-rc));

	if (phase_ok(&b, "decode batch 1") && phase_b1(&b))
		return 1;
	for (unsigned i = 0; i < o.n_ttft; i++) {
		char what[32];

		snprintf(what, sizeof(what), "TTFT %u", o.ttft[i]);
		if (!phase_ok(&b, what))
			continue;
		if (phase_ttft(&b, o.ttft[i], &b.ttft[b.n_ttft]))
			return 1;
		b.n_ttft++;
	}
	for (unsigned i = 0; i < o.n_streams; i++) {
		char what[32];

		snprintf(what, sizeof(what), "streams %u", o.streams[i]);
		if (!phase_ok(&b, what))
			continue;
		if (phase_streams(&b, o.streams[i], &b.st[b.n_st]))
			return 1;
		b.n_st++;
	}
	velo_bench_loadavg(mt.load1, sizeof(mt.load1));
	print_table(&b, &mt);
	if (o.json)
		write_json(&b, &mt);

	b.ops->model_unload(b.bm);
	if (is_cuda)
		gb_cuda_close();
	if (b.ops->fini)
		b.ops->fini(b.be);
	eng_image_close(b.img);
	free(b.in);
	free(b.blocks);
	free(b.toks);
	free(b.next);
	free(b.pos);
	free(b.samp);
	free(b.samp_mem);
	free(b.t);
	return 0;
}
