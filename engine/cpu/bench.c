// SPDX-License-Identifier: MIT
/*
 * bench.c — velo-bench-engine: prefill and decode speed of the CPU backend
 * on a synthetic model of real shape (values do not matter for speed), in
 * each weight dtype, and the share of the machine's memory bandwidth that
 * batch-1 decode reaches, the bandwidth measured in the same run
 * (PERFORMANCE.md: a speed is a ratio to something measured alongside).
 *
 *   copy bandwidth   memcpy between two 512 MiB buffers on every worker
 *                    thread, bytes read + written per second (best of 5);
 *                    a read-only pass (sum) is reported beside it
 *   prefill          one sequence, a P-token prompt in one step (R runs):
 *                    P / time
 *   decode           batch 1: D single-token steps after the prompt
 *                    (median step): 1 / time; the weight bytes each step
 *                    reads (every matrix, the LM head included) / time =
 *                    achieved bandwidth, and its share of the copy figure
 *   decode batch B   B sequences (each prefilled alone) decoding together,
 *                    one token each per step: B / median step time
 *
 * Every figure is given as the median and as the best of its runs: on a
 * machine shared with other work (the 2-core development VM) the best is
 * the closer estimate of the uncontended speed.  The load average at start
 * and end is recorded.  Prints a table; --json FILE writes the figures with the settings, the
 * machine and the commit (docs/perf.md quotes it).
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <velo/compiler.h>

#include "../../tools/lib/benchmeta.h"
#include "../../tools/lib/clock.h"
#include "../core/sampler.h"
#include "../../tools/lib/cpu.h"
#include "../../tools/lib/log.h"
#include "../backend.h"
#include "cpu_priv.h"
#include "pool.h"
#include "synth.h"

#define BW_BYTES (512u << 20)

static int cmp_u64_fwd(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

struct opts {
	uint32_t threads;
	enum eng_cpu_isa isa;
	uint32_t prefill, decode, batch, reps;
	const char *json, *commit, *dtypes;
	struct eng_model_config cfg;
};

/* ~100M parameters, Llama shape: 12 layers of 768 (GQA 12/4, FFN 2048,
 * 6.3 M weights each) + a 32000 x 768 embedding and an untied LM head. */
static const struct eng_model_config shape_100m = {
	.arch = ENG_ARCH_LLAMA, .vocab_size = 32000, .hidden = 768,
	.n_layers = 12, .n_heads = 12, .n_kv_heads = 4, .head_dim = 64,
	.ffn = 2048, .max_seq = 4096, .norm_eps = 1e-5f, .rope_theta = 500000.0f,
	.bos_id = 1, .eos_ids = { 2 }, .n_eos = 1, .pad_id = UINT32_MAX,
};

/* ---- memory bandwidth ------------------------------------------------------ */

struct bw_job {
	char *src, *dst;
	size_t len;
	bool read_only;
	const struct cpu_kern *kern;
	double part[ENG_CPU_THREADS_MAX];
};

static void bw_worker(void *arg, uint32_t wid, uint32_t nw)
{
	struct bw_job *j = arg;
	size_t chunk = j->len / nw, off = chunk * wid;

	if (!j->read_only) {
		memcpy(j->dst + off, j->src + off, chunk);
	} else {
		/* the decode kernels' own dot product: what reading at full
		 * speed looks like to them */
		const float *p = (const float *)(j->src + off);

		j->part[wid] = j->kern->dot(p, p, (uint32_t)(chunk / 4));
	}
}

/* Best of 5: copy (read + written bytes / s) and read-only (bytes / s). */
static void measure_bw(struct cpu_pool *pool, const struct cpu_kern *kern,
		       double *copy_bps, double *read_bps)
{
	struct bw_job j = { .kern = kern };

	j.len = BW_BYTES;
	j.src = aligned_alloc(4096, j.len);
	j.dst = aligned_alloc(4096, j.len);
	if (!j.src || !j.dst) {
		*copy_bps = *read_bps = 0;
		free(j.src);
		free(j.dst);
		return;
	}
	memset(j.src, 0x3c, j.len);	/* floats near 0.0115 */
	memset(j.dst, 2, j.len);
	*copy_bps = *read_bps = 0;
	for (int ro = 0; ro < 2; ro++) {
		j.read_only = ro;
		for (int r = 0; r < 6; r++) {
			uint64_t t0 = clock_mono_ns(), dt;
			double bps;

			cpu_pool_run(pool, bw_worker, &j);
			dt = clock_mono_ns() - t0;
			if (!r)
				continue;	/* warm-up */
			bps = (ro ? 1.0 : 2.0) * j.len / (dt * 1e-9);
			if (ro)
				*read_bps = MAX(*read_bps, bps);
			else
				*copy_bps = MAX(*copy_bps, bps);
		}
	}
	free(j.src);
	free(j.dst);
}

/* ---- pool hand-off and sampler costs ---------------------------------------- */

static void empty_job(void *arg, uint32_t wid, uint32_t nw)
{
	(void)arg, (void)wid, (void)nw;
}

/* Median round trip of an empty job over 20000 runs, in ns. */
static double pool_rtt_ns(struct cpu_pool *pool)
{
	enum { N = 20000 };
	static uint64_t t[N];

	for (int i = 0; i < N; i++) {
		uint64_t t0 = clock_mono_ns();

		cpu_pool_run(pool, empty_job, NULL);
		t[i] = clock_mono_ns() - t0;
	}
	qsort(t, N, sizeof(t[0]), cmp_u64_fwd);
	return (double)t[N / 2];
}

/* Median cost of one eng_sampler_sample over a 128256-token vocabulary
 * (Llama 3), random logits in +-8, for a few settings, in us. */
struct samp_cost {
	const char *what;
	double us;
};

static void sampler_costs(struct samp_cost *out, unsigned *n_out)
{
	enum { V = 128256, N = 200, WIN = 256 };
	static const struct { const char *what; float t; uint32_t k; float p, mp, rep; } cs[] = {
		{ "greedy", 0.0f, 0, 1.0f, 0.0f, 1.0f },
		{ "greedy + repetition penalty", 0.0f, 0, 1.0f, 0.0f, 1.1f },
		{ "temperature 0.8", 0.8f, 0, 1.0f, 0.0f, 1.0f },
		{ "top-k 40", 0.8f, 40, 1.0f, 0.0f, 1.0f },
		{ "top-p 0.9", 0.8f, 0, 0.9f, 0.0f, 1.0f },
		{ "min-p 0.05 + top-p 0.95", 0.8f, 0, 0.95f, 0.05f, 1.0f },
	};
	struct eng_sampler_scratch sc;
	float *l = malloc(V * sizeof(float));
	void *mem = malloc(eng_sampler_size(WIN));
	uint64_t t[N], x = 88172645463325252ull;

	*n_out = 0;
	if (!l || !mem || eng_sampler_scratch_init(&sc, V)) {
		free(l);
		free(mem);
		return;
	}
	for (uint32_t i = 0; i < V; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		l[i] = (float)((x >> 40) * 0x1.0p-24 * 16.0 - 8.0);
	}
	for (unsigned c = 0; c < sizeof(cs) / sizeof(cs[0]); c++) {
		struct eng_sampler_params p;
		struct eng_sampler *s;
		uint32_t tok;

		eng_sampler_params_default(&p);
		p.temperature = cs[c].t;
		p.top_k = cs[c].k;
		p.top_p = cs[c].p;
		p.min_p = cs[c].mp;
		p.repetition_penalty = cs[c].rep;
		p.penalty_window = WIN;
		s = eng_sampler_init(mem, eng_sampler_size(WIN), &p, WIN);
		for (uint32_t i = 0; i < WIN; i++)
			eng_sampler_accept(s, i * 499);
		for (int i = 0; i < N; i++) {
			uint64_t t0 = clock_mono_ns();

			eng_sampler_sample(s, &sc, l, V, &tok);
			t[i] = clock_mono_ns() - t0;
		}
		qsort(t, N, sizeof(t[0]), cmp_u64_fwd);
		out[*n_out].what = cs[c].what;
		out[(*n_out)++].us = t[N / 2] * 1e-3;
	}
	eng_sampler_scratch_fini(&sc);
	free(l);
	free(mem);
}

/* ---- engine runs ----------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Median; *best gets the minimum.  On a machine shared with other work
 * the minimum is the closer estimate of the uncontended speed, the median
 * of what a user sees; both are reported. */
static uint64_t median(uint64_t *v, unsigned n, uint64_t *best)
{
	qsort(v, n, sizeof(*v), cmp_u64);
	*best = v[0];
	return v[n / 2];
}

struct result {
	const char *dtype;
	double prefill_tps, decode_tps, batch_tps, weight_gb, decode_bps;
	double prefill_best, decode_best, batch_best;	/* from the fastest run */
	double build_s;
};

/* Block table of sequence s: blocks [s * per, (s + 1) * per). */
static void table(uint32_t *blk, uint32_t s, uint32_t per)
{
	for (uint32_t i = 0; i < per; i++)
		blk[i] = s * per + i;
}

static int run_dtype(const struct opts *o, struct eng_backend *be,
		     enum eng_dtype dt, const char *name, struct result *res)
{
	const struct eng_backend_ops *ops = &eng_cpu_ops;
	uint32_t B = 16, per = (o->prefill + o->decode + B) / B + 1;
	struct eng_model_budget bud = {
		.seqs_max = MAX(o->batch, 1u), .step_tokens_max = MAX(o->prefill, o->batch),
		.kv_blocks = per * MAX(o->batch, 1u), .kv_block_tokens = B,
		.seq_blocks_max = per, .kv_dtype = ENG_KV_F32,
	};
	struct eng_be_model_info info;
	struct eng_be_model *bm;
	struct eng_synth s;
	uint32_t *ids, *blk, n_ids = o->prefill + o->decode + 1;
	uint64_t *t, t0, tb;
	struct eng_seq_in *in;
	struct eng_batch b;
	int rc;

	memset(res, 0, sizeof(*res));
	res->dtype = name;
	t0 = clock_mono_ns();
	rc = eng_synth_build(&s, &o->cfg, dt, 1);
	if (rc)
		return rc;
	res->build_s = (clock_mono_ns() - t0) * 1e-9;
	rc = ops->model_load(be, &s.m, &bud, &bm);
	if (rc) {
		eng_synth_free(&s);
		return rc;
	}
	ops->model_info(bm, &info);
	res->weight_gb = info.weight_bytes * 1e-9;
	ids = malloc((size_t)n_ids * MAX(o->batch, 1u) * 4);
	blk = malloc((size_t)per * MAX(o->batch, 1u) * 4);
	t = malloc(sizeof(*t) * (MAX(o->decode, o->reps) + 1));
	in = calloc(MAX(o->batch, 1u), sizeof(*in));
	if (!ids || !blk || !t || !in) {
		rc = -ENOMEM;
		goto out;
	}
	for (uint32_t i = 0; i < n_ids * MAX(o->batch, 1u); i++)
		ids[i] = (i * 7919u + 13) % o->cfg.vocab_size;
	for (uint32_t sq = 0; sq < MAX(o->batch, 1u); sq++)
		table(blk + sq * per, sq, per);
	b.seqs = in;

	/* prefill: the whole prompt in one step, logits of its last token */
	for (uint32_t r = 0; r <= o->reps; r++) {
		in[0] = (struct eng_seq_in){ ids, o->prefill, 0, blk, per, ENG_SEQ_LOGITS };
		b.n_seqs = 1;
		t0 = clock_mono_ns();
		rc = ops->step(bm, &b);
		if (rc)
			goto out;
		if (r)	/* the first is warm-up */
			t[r - 1] = clock_mono_ns() - t0;
	}
	res->prefill_tps = o->prefill / (median(t, o->reps, &tb) * 1e-9);
	res->prefill_best = o->prefill / (tb * 1e-9);

	/* decode, batch 1 */
	for (uint32_t d = 0; d <= o->decode; d++) {
		in[0] = (struct eng_seq_in){ ids + o->prefill + d, 1, o->prefill + d,
					     blk, per, ENG_SEQ_LOGITS };
		t0 = clock_mono_ns();
		rc = ops->step(bm, &b);
		if (rc)
			goto out;
		if (d)
			t[d - 1] = clock_mono_ns() - t0;
	}
	res->decode_tps = 1.0 / (median(t, o->decode, &tb) * 1e-9);
	res->decode_best = 1.0 / (tb * 1e-9);
	res->decode_bps = info.weight_bytes * res->decode_tps;

	/* decode, batch B: each sequence prefilled alone, then all of them
	 * one token per step */
	if (o->batch > 1) {
		uint32_t nd = MIN(o->decode, 32u);

		for (uint32_t sq = 0; sq < o->batch; sq++) {
			in[0] = (struct eng_seq_in){ ids + sq * n_ids, o->prefill, 0,
						     blk + sq * per, per, 0 };
			b.n_seqs = 1;
			rc = ops->step(bm, &b);
			if (rc)
				goto out;
		}
		for (uint32_t d = 0; d <= nd; d++) {
			for (uint32_t sq = 0; sq < o->batch; sq++)
				in[sq] = (struct eng_seq_in){
					ids + sq * n_ids + o->prefill + d, 1,
					o->prefill + d, blk + sq * per, per,
					ENG_SEQ_LOGITS };
			b.n_seqs = o->batch;
			t0 = clock_mono_ns();
			rc = ops->step(bm, &b);
			if (rc)
				goto out;
			if (d)
				t[d - 1] = clock_mono_ns() - t0;
		}
		res->batch_tps = o->batch / (median(t, nd, &tb) * 1e-9);
		res->batch_best = o->batch / (tb * 1e-9);
	}
out:
	free(ids);
	free(blk);
	free(t);
	free(in);
	ops->model_unload(bm);
	eng_synth_free(&s);
	return rc;
}

/* ---- report ---------------------------------------------------------------- */

static uint64_t params(const struct eng_model_config *c)
{
	uint64_t q = (uint64_t)c->n_heads * c->head_dim, kv = (uint64_t)c->n_kv_heads * c->head_dim;
	uint64_t layer = c->hidden * (2 * q + 2 * kv) + 3ull * c->hidden * c->ffn;

	return layer * c->n_layers + (c->tied_embeddings ? 1 : 2) *
	       (uint64_t)c->vocab_size * c->hidden;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: velo-bench-engine [options]\n"
		"  -t, --threads N     workers including the caller (default: online cores)\n"
		"  -i, --isa NAME      auto (default), generic, avx2, avx512\n"
		"  -d, --dtypes LIST   comma list of bf16, fp8, int4, f32 (default bf16,fp8,int4)\n"
		"  -p, --prefill N     prompt tokens (default 128)\n"
		"  -n, --decode N      decode steps measured (default 64)\n"
		"  -b, --batch N       sequences in the batched decode (default 8; 1: skip)\n"
		"  -r, --reps N        prefill repetitions (default 5)\n"
		"  -l, --layers N      layers of the synthetic model (default 12)\n"
		"  -j, --json FILE     write the results as JSON\n"
		"  -c, --commit ID     recorded in the JSON (default: $VELO_COMMIT or git HEAD)\n");
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "threads", required_argument, NULL, 't' },
		{ "isa", required_argument, NULL, 'i' },
		{ "dtypes", required_argument, NULL, 'd' },
		{ "prefill", required_argument, NULL, 'p' },
		{ "decode", required_argument, NULL, 'n' },
		{ "batch", required_argument, NULL, 'b' },
		{ "reps", required_argument, NULL, 'r' },
		{ "layers", required_argument, NULL, 'l' },
		{ "json", required_argument, NULL, 'j' },
		{ "commit", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	struct opts o = { .prefill = 128, .decode = 64, .batch = 8, .reps = 5,
			  .dtypes = "bf16,fp8,int4" };
	char commit[80];
	const struct { const char *name; enum eng_dtype dt; } dts[] = {
		{ "f32", ENG_DT_F32 }, { "bf16", ENG_DT_BF16 },
		{ "fp8", ENG_DT_FP8_E4M3 }, { "int4", ENG_DT_INT4_G128 },
	};
	struct eng_backend_budget bb = { 0 };
	struct eng_backend *be;
	struct cpu_backend *cbe;
	struct result res[4];
	unsigned n_res = 0;
	double copy_bps, read_bps;
	char cpu[128], date[32], load0[16], load1[16];
	struct samp_cost sc[8];
	unsigned n_sc = 0;
	double rtt_ns;
	struct utsname un;
	time_t now = time(NULL);
	int c, rc;

	o.cfg = shape_100m;
	while ((c = getopt_long(argc, argv, "t:i:d:p:n:b:r:l:j:c:h", lo, NULL)) != -1) {
		switch (c) {
		case 't': o.threads = (uint32_t)atoi(optarg); break;
		case 'i':
			o.isa = !strcmp(optarg, "generic") ? ENG_CPU_ISA_GENERIC :
				!strcmp(optarg, "avx2") ? ENG_CPU_ISA_AVX2 :
				!strcmp(optarg, "avx512") ? ENG_CPU_ISA_AVX512 :
				ENG_CPU_ISA_AUTO;
			break;
		case 'd': o.dtypes = optarg; break;
		case 'p': o.prefill = (uint32_t)atoi(optarg); break;
		case 'n': o.decode = (uint32_t)atoi(optarg); break;
		case 'b': o.batch = (uint32_t)atoi(optarg); break;
		case 'r': o.reps = (uint32_t)atoi(optarg); break;
		case 'l': o.cfg.n_layers = (uint32_t)atoi(optarg); break;
		case 'j': o.json = optarg; break;
		case 'c': o.commit = optarg; break;
		default: usage(); return c == 'h' ? 0 : 2;
		}
	}
	if (!o.prefill || !o.decode || !o.reps || !o.cfg.n_layers || !o.batch) {
		usage();
		return 2;
	}
	log_set_spec("warn");
	/* The calling thread is worker 0 (the scheduler core in velod). */
	cpu_pin_self(0);
	bb.cpu.threads = o.threads;
	bb.cpu.isa = o.isa;
	rc = eng_cpu_ops.init(&bb, &be);
	if (rc) {
		fprintf(stderr, "velo-bench-engine: backend init: %s\n", strerror(-rc));
		return 1;
	}
	cbe = (struct cpu_backend *)be;
	if (o.commit)
		snprintf(commit, sizeof(commit), "%s", o.commit);
	else
		velo_bench_commit(commit, sizeof(commit));
	velo_bench_loadavg(load0, sizeof(load0));
	measure_bw(cbe->pool, cbe->kern, &copy_bps, &read_bps);
	rtt_ns = pool_rtt_ns(cbe->pool);
	sampler_costs(sc, &n_sc);

	for (unsigned i = 0; i < 4; i++) {
		if (!strstr(o.dtypes, dts[i].name))
			continue;
		rc = run_dtype(&o, be, dts[i].dt, dts[i].name, &res[n_res]);
		if (rc) {
			fprintf(stderr, "velo-bench-engine: %s: %s\n", dts[i].name,
				strerror(-rc));
			eng_cpu_ops.fini(be);
			return 1;
		}
		n_res++;
	}

	velo_bench_loadavg(load1, sizeof(load1));
	velo_bench_cpu_name(cpu, sizeof(cpu));
	uname(&un);
	strftime(date, sizeof(date), "%Y-%m-%d", gmtime(&now));
	printf("velo-bench-engine: CPU backend, %s kernels, %u threads, %s (%ld cores)\n",
	       cbe->kern->name, cbe->threads, cpu, sysconf(_SC_NPROCESSORS_ONLN));
	printf("model: synthetic Llama shape, %.1f M params (hidden %u, %u layers, "
	       "heads %u/%u, ffn %u, vocab %u, untied head); prompt %u, decode %u, batch %u\n",
	       params(&o.cfg) * 1e-6, o.cfg.hidden, o.cfg.n_layers, o.cfg.n_heads,
	       o.cfg.n_kv_heads, o.cfg.ffn, o.cfg.vocab_size, o.prefill, o.decode,
	       o.batch);
	printf("memory bandwidth: copy %.2f GB/s (read + written), read-only %.2f GB/s; "
	       "load average %s at start, %s at end\n\n", copy_bps * 1e-9,
	       read_bps * 1e-9, load0, load1);
	printf("%-6s %8s %17s %17s %17s %17s\n", "dtype", "weights", "prefill tok/s",
	       "decode b=1 tok/s", "decode b=B tok/s", "b=1 GB/s, of copy");
	printf("%-6s %8s %8s %8s %8s %8s %8s %8s %8s %8s\n", "", "GB/tok", "median",
	       "best", "median", "best", "median", "best", "median", "best");
	for (unsigned i = 0; i < n_res; i++)
		printf("%-6s %8.3f %8.1f %8.1f %8.1f %8.1f %8.1f %8.1f %7.0f%% %7.0f%%\n",
		       res[i].dtype, res[i].weight_gb, res[i].prefill_tps,
		       res[i].prefill_best, res[i].decode_tps, res[i].decode_best,
		       res[i].batch_tps, res[i].batch_best,
		       100.0 * res[i].decode_bps / copy_bps,
		       100.0 * res[i].decode_best * res[i].weight_gb * 1e9 / copy_bps);
	printf("\nworker pool: empty job round trip %.2f us (median of 20000)\n",
	       rtt_ns * 1e-3);
	printf("sampler, vocab 128256, median us per token:");
	for (unsigned i = 0; i < n_sc; i++)
		printf("%s %s %.1f", i ? "," : "", sc[i].what, sc[i].us);
	printf("\n");

	if (o.json) {
		FILE *f = fopen(o.json, "w");

		if (!f) {
			perror(o.json);
		} else {
			fprintf(f, "{\n  \"bench\": \"velo-bench-engine\",\n"
				   "  \"commit\": \"%s\",\n  \"date\": \"%s\",\n"
				   "  \"machine\": {\"cpu\": \"%s\", \"cores\": %ld, "
				   "\"kernel\": \"%s\", \"loadavg_start\": \"%s\", "
				   "\"loadavg_end\": \"%s\"},\n",
				commit, date, cpu, sysconf(_SC_NPROCESSORS_ONLN),
				un.release, load0, load1);
			fprintf(f, "  \"settings\": {\"kernels\": \"%s\", \"threads\": %u, "
				   "\"params_m\": %.1f, \"hidden\": %u, \"layers\": %u, "
				   "\"heads\": %u, \"kv_heads\": %u, \"ffn\": %u, "
				   "\"vocab\": %u, \"prefill_tokens\": %u, "
				   "\"decode_steps\": %u, \"batch\": %u, \"kv\": \"f32\"},\n",
				cbe->kern->name, cbe->threads, params(&o.cfg) * 1e-6,
				o.cfg.hidden, o.cfg.n_layers, o.cfg.n_heads,
				o.cfg.n_kv_heads, o.cfg.ffn, o.cfg.vocab_size,
				o.prefill, o.decode, o.batch);
			fprintf(f, "  \"copy_bw_gbs\": %.3f,\n  \"read_bw_gbs\": %.3f,\n"
				   "  \"pool_empty_job_us\": %.3f,\n  \"sampler_us\": {",
				copy_bps * 1e-9, read_bps * 1e-9, rtt_ns * 1e-3);
			for (unsigned i = 0; i < n_sc; i++)
				fprintf(f, "%s\"%s\": %.2f", i ? ", " : "", sc[i].what,
					sc[i].us);
			fprintf(f, "},\n  \"results\": [\n");
			for (unsigned i = 0; i < n_res; i++)
				fprintf(f, "    {\"dtype\": \"%s\", \"weight_gb_per_token\": %.4f, "
					   "\"prefill_tok_s\": %.1f, \"prefill_tok_s_best\": %.1f, "
					   "\"decode_tok_s\": %.2f, \"decode_tok_s_best\": %.2f, "
					   "\"decode_batch_tok_s\": %.1f, "
					   "\"decode_batch_tok_s_best\": %.1f, "
					   "\"decode_gb_s\": %.3f, "
					   "\"decode_share_of_copy_bw\": %.3f, "
					   "\"decode_share_of_copy_bw_best\": %.3f, "
					   "\"decode_share_of_read_bw\": %.3f}%s\n",
					res[i].dtype, res[i].weight_gb, res[i].prefill_tps,
					res[i].prefill_best, res[i].decode_tps,
					res[i].decode_best, res[i].batch_tps,
					res[i].batch_best, res[i].decode_bps * 1e-9,
					res[i].decode_bps / copy_bps,
					res[i].decode_best * res[i].weight_gb * 1e9 / copy_bps,
					res[i].decode_bps / read_bps, i + 1 < n_res ? "," : "");
			fprintf(f, "  ]\n}\n");
			fclose(f);
			printf("\nwrote %s\n", o.json);
		}
	}
	eng_cpu_ops.fini(be);
	return 0;
}
