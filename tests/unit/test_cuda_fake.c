// SPDX-License-Identifier: MIT
/*
 * test_cuda_fake.c — the CUDA backend's host side on any machine, against
 * libcuda-fake.so (tests/unit/cuda_fake.c: host memory for the device,
 * kernels not run).  What the GPU machine cannot cheaply show, CI does:
 *   - up and down: init, load, prefill and decode steps, logits, greedy and
 *     sampled tokens, kv_copy, unload, fini, and every driver object
 *     released (the fake counts them);
 *   - malformed batches rejected with -EINVAL / -E2BIG before any launch,
 *     the backend still healthy; logits of a rejected step -ENOENT;
 *   - load-time refusals: over mem_bytes_max (-ENOMEM), KV dtype FP8
 *     (-EOPNOTSUPP), block size not a power of two, head_dim over 256;
 *   - the fault ladder (RELIABILITY.md): the N-th checked driver call fails,
 *     for every N over init, load, steps, sampling, KV copy: no crash,
 *     the failing op returns -EIO (init -ENODEV), every later op -ENODEV,
 *     health reports -EIO, and after unload + fini nothing is left; the
 *     same with the decode graphs on (VELO_CUDA_GRAPHS=1: captured at
 *     load, replayed by decode steps), no capture ever left open; and the
 *     same with cuBLASLt products (VELO_CUDA_LT=1, this library standing
 *     in for libcublasLt too: handle, descriptors, per-shape heuristics at
 *     load, cublasLtMatmul in the prefill step) and the tiled prefill
 *     attention (VELO_CUDA_FLASH=1) on.
 */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dlfcn.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../engine/backend.h"
#include "../../engine/core/sampler.h"
#include "../../engine/cpu/synth.h"
#include "../../tools/lib/counters.h"

static const struct eng_backend_ops *ops = &eng_cuda_ops;
static char fake_path[PATH_MAX];
static long (*fake_outstanding)(void);
static long (*fake_launches)(void);
static long (*fake_lt_matmuls)(void);
static struct eng_synth S, S8;
static const struct eng_model *RM;	/* the model round_trip loads (S's) */

static const struct eng_model_budget bud = {
	.seqs_max = 4, .step_tokens_max = 64, .kv_blocks = 32,
	.kv_block_tokens = 16, .seq_blocks_max = 8, .kv_dtype = ENG_KV_F32,
};

static struct eng_model_config cfg(void)
{
	return (struct eng_model_config){
		.arch = ENG_ARCH_LLAMA, .vocab_size = 300, .hidden = 128,
		.n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .head_dim = 32,
		.ffn = 256, .max_seq = 512, .norm_eps = 1e-5f,
		.rope_theta = 10000.0f, .qkv_bias = true, .bos_id = 1,
		.eos_ids = { 2 }, .n_eos = 1, .pad_id = UINT32_MAX,
	};
}

/* One round of every op; rcs[] gets each op's result.  Stops at init or
 * load failure (nothing to step). */
enum { OP_INIT, OP_LOAD, OP_PREFILL, OP_DECODE, OP_LOGITS, OP_SAMPLE, OP_SAMPLE2,
       OP_KVCOPY, OP_N };

static void round_trip(int *rc, int *health)
{
	struct eng_backend *be = NULL;
	struct eng_be_model *bm = NULL;
	uint32_t ids[20], b0[8] = { 3, 4, 5, 6, 7, 8, 9, 10 }, b1[8] = { 11, 12, 13 };
	struct eng_seq_in in[2];
	struct eng_batch b = { in, 2 };
	_Alignas(8) static char m0[4096], m1[4096], m2[4096];
	struct eng_sampler_params pp;
	struct eng_sampler *sp[2], *sq[2];
	uint32_t tok[2], src = 3, dst = 20;
	const float *l;

	for (int i = 0; i < OP_N; i++)
		rc[i] = 1;	/* not run */
	*health = 0;
	for (uint32_t i = 0; i < 20; i++)
		ids[i] = 3 + i * 7;
	rc[OP_INIT] = ops->init(NULL, &be);
	if (rc[OP_INIT])
		return;
	rc[OP_LOAD] = ops->model_load(be, RM, &bud, &bm);
	if (!rc[OP_LOAD]) {
		in[0] = (struct eng_seq_in){ ids, 20, 0, b0, 8, ENG_SEQ_LOGITS };
		in[1] = (struct eng_seq_in){ ids, 5, 0, b1, 3, 0 };
		rc[OP_PREFILL] = ops->step(bm, &b);
		in[0] = (struct eng_seq_in){ ids + 3, 1, 20, b0, 8, ENG_SEQ_LOGITS };
		in[1] = (struct eng_seq_in){ ids + 4, 1, 5, b1, 3, ENG_SEQ_LOGITS };
		rc[OP_DECODE] = ops->step(bm, &b);
		rc[OP_LOGITS] = ops->logits(bm, 1, &l);
		eng_sampler_params_default(&pp);
		sp[0] = eng_sampler_init(m0, sizeof(m0), &pp, 8);
		pp.temperature = 0.8f;
		pp.top_k = 20;
		sp[1] = eng_sampler_init(m1, sizeof(m1), &pp, 8);
		/* a penalty window keeps a sampler on the host route */
		pp.repetition_penalty = 1.3f;
		pp.penalty_window = 8;
		sq[0] = eng_sampler_init(m2, sizeof(m2), &pp, 8);
		eng_sampler_accept(sq[0], 7);
		sq[1] = sp[1];
		rc[OP_SAMPLE] = ops->sample(bm, sp, 2, tok);	/* device argmax + k_sample */
		rc[OP_SAMPLE2] = ops->sample(bm, sq, 2, tok);	/* host (penalties) + k_sample */
		rc[OP_KVCOPY] = ops->kv_copy(bm, &src, &dst, 1);
	}
	*health = ops->health(be, NULL);
	ops->model_unload(bm);
	ops->fini(be);
}

/* Every op of a round trip returned 0 and the backend is healthy. */
static void assert_round_trip_ok(const int *rc, int h)
{
	for (int i = 0; i < OP_N; i++)
		assert_int_equal(rc[i], 0);
	assert_int_equal(h, 0);
}

static void test_up_down(void **st)
{
	int rc[OP_N], h;
	long base = fake_outstanding(), l0 = fake_launches();

	(void)st;
	round_trip(rc, &h);
	assert_round_trip_ok(rc, h);
	/* 2 layers x (norm, qkv, rope, attn, o, norm, gate/up, down) + embed,
	 * final norm, LM head, argmax, per step */
	assert_true(fake_launches() - l0 >= 2 * (2 * 8 + 4));
	assert_int_equal(fake_outstanding(), base);
}

static void test_bad_batches(void **st)
{
	struct eng_backend *be;
	struct eng_be_model *bm;
	uint32_t ids[80], t0[8] = { 0, 1, 2, 3, 4, 5, 6, 7 }, t1[8] = { 8, 9, 10, 11 };
	uint32_t bad[8] = { 0, 99 }, tok;
	struct eng_seq_in in[5];
	struct eng_batch b = { in, 1 };
	const float *l;
	long base = fake_outstanding(), l0;

	(void)st;
	for (uint32_t i = 0; i < 80; i++)
		ids[i] = 5;
	assert_int_equal(ops->init(NULL, &be), 0);
	assert_int_equal(ops->model_load(be, &S.m, &bud, &bm), 0);
	l0 = fake_launches();
#define BAD(want, ...)                                                        \
	do {                                                                  \
		struct eng_seq_in v_[] = { __VA_ARGS__ };                     \
		memcpy(in, v_, sizeof(v_));                                   \
		b.n_seqs = sizeof(v_) / sizeof(v_[0]);                        \
		assert_int_equal(ops->step(bm, &b), want);                    \
	} while (0)
	assert_int_equal(ops->step(bm, NULL), -EINVAL);
	b.n_seqs = 0;
	assert_int_equal(ops->step(bm, &b), -EINVAL);
	BAD(-E2BIG, { ids, 1, 0, t0, 8, 0 }, { ids, 1, 0, t1, 4, 0 }, { ids, 1, 0, t0 + 4, 1, 0 },
	    { ids, 1, 0, t0 + 5, 1, 0 }, { ids, 1, 0, t0 + 6, 1, 0 });		/* > seqs_max */
	BAD(-EINVAL, { ids, 0, 0, t0, 8, 0 });					/* no tokens */
	BAD(-EINVAL, { NULL, 1, 0, t0, 8, 0 });
	BAD(-EINVAL, { ids, 1, 0, NULL, 8, 0 });
	BAD(-EINVAL, { ids, 1, 0, t0, 8, 0x4 });				/* flags */
	{
		uint32_t big = 300;

		BAD(-EINVAL, { &big, 1, 0, t0, 8, 0 });				/* token >= vocab */
	}
	BAD(-EINVAL, { ids, 17, 0, t0, 1, 0 });				/* table short */
	BAD(-EINVAL, { ids, 1, 16, bad, 2, 0 });				/* block >= kv_blocks */
	BAD(-EINVAL, { ids, 1, 0, t0, 8, 0 }, { ids, 1, 0, t0, 8, 0 });	/* same block written */
	BAD(-EINVAL, { ids, 1, 16, t0, 8, 0 }, { ids, 1, 0, t0, 1, 0 });	/* read while written */
	BAD(-E2BIG, { ids, 65, 0, t0, 8, 0 });				/* > step_tokens_max */
	BAD(-E2BIG, { ids, 1, 128, t0, 8, 0 });				/* beyond ctx_max */
#undef BAD
	assert_int_equal(fake_launches(), l0);	/* nothing ran */
	assert_int_equal(ops->health(be, NULL), 0);
	assert_int_equal(ops->logits(bm, 0, &l), -ENOENT);
	assert_int_equal(ops->sample(bm, NULL, 1, &tok), -EINVAL);
	{
		uint32_t s = 1, d = 1, big = 32;

		assert_int_equal(ops->kv_copy(bm, &s, &d, 1), -EINVAL);
		assert_int_equal(ops->kv_copy(bm, &s, &big, 1), -EINVAL);
	}
	/* and a good step still runs */
	in[0] = (struct eng_seq_in){ ids, 3, 0, t0, 8, ENG_SEQ_LOGITS };
	b.n_seqs = 1;
	assert_int_equal(ops->step(bm, &b), 0);
	assert_int_equal(ops->logits(bm, 0, &l), 0);
	assert_int_equal(ops->logits(bm, 1, &l), -EINVAL);
	ops->model_unload(bm);
	ops->fini(be);
	assert_int_equal(fake_outstanding(), base);
}

static void test_load_rejects(void **st)
{
	struct eng_backend_budget bb = { .mem_bytes_max = 1 << 20 };
	struct eng_model_budget b = bud;
	struct eng_backend *be;
	struct eng_be_model *bm = NULL;
	struct eng_model m2;
	long base = fake_outstanding();

	(void)st;
	assert_int_equal(ops->init(&bb, &be), 0);
	assert_int_equal(ops->model_load(be, &S.m, &bud, &bm), -ENOMEM);
	ops->fini(be);
	assert_int_equal(ops->init(NULL, &be), 0);
	b.kv_dtype = ENG_KV_FP8_E4M3;
	assert_int_equal(ops->model_load(be, &S.m, &b, &bm), -EOPNOTSUPP);
	b = bud;
	b.kv_block_tokens = 12;
	assert_int_equal(ops->model_load(be, &S.m, &b, &bm), -EINVAL);
	b = bud;
	b.seqs_max = 0;
	assert_int_equal(ops->model_load(be, &S.m, &b, &bm), -EINVAL);
	m2 = S.m;
	m2.cfg.head_dim = 512;
	assert_int_equal(ops->model_load(be, &m2, &bud, &bm), -EINVAL);
	m2 = S.m;
	m2.cfg.mlp_bias = true;
	assert_int_equal(ops->model_load(be, &m2, &bud, &bm), -EOPNOTSUPP);
	/* two models side by side, then gone */
	{
		struct eng_be_model *a, *c;
		struct eng_be_model_info ia;

		assert_int_equal(ops->model_load(be, &S.m, &bud, &a), 0);
		assert_int_equal(ops->model_load(be, &S.m, &bud, &c), 0);
		ops->model_info(a, &ia);
		assert_true(ia.mem_bytes > ia.kv_bytes && ia.kv_bytes > 0);
		assert_int_equal(ia.kv_bytes, 2ull * 4 * 2 * 32 * 2 * 16 * 32);
		assert_int_equal(ia.ctx_max, 128);
		ops->model_unload(a);
		ops->model_unload(c);
	}
	ops->fini(be);
	assert_int_equal(fake_outstanding(), base);
}

static int (*fake_capturing)(void);

static void test_graphs_up_down(void **st)
{
	int rc[OP_N], h;
	long base = fake_outstanding(), l0 = fake_launches();

	(void)st;
	setenv("VELO_CUDA_GRAPHS", "1", 1);
	round_trip(rc, &h);
	setenv("VELO_CUDA_GRAPHS", "0", 1);
	assert_round_trip_ok(rc, h);
	/* captures record >= 4 x 4 graphs' launches; the decode step is one */
	assert_true(fake_launches() - l0 > 16 * 20);
	assert_int_equal(fake_capturing(), 0);
	assert_int_equal(fake_outstanding(), base);
}

/* cuBLASLt from 17 tokens (the prefill step has 25) and tiled attention */
static void lt_env(bool on)
{
	if (on) {
		setenv("VELO_CUDA_LT", "1", 1);
		setenv("VELO_CUDA_LT_MIN_TOKENS", "17", 1);
		setenv("VELO_CUDA_FLASH", "1", 1);
	} else {
		/* explicitly off: the backend's defaults have them on */
		setenv("VELO_CUDA_LT", "0", 1);
		unsetenv("VELO_CUDA_LT_MIN_TOKENS");
		setenv("VELO_CUDA_FLASH", "0", 1);
	}
}

/* With nothing in the environment the backend's defaults hold: decode
 * graphs captured at load (as many launches as test_graphs_up_down sees). */
static void test_defaults_graphs_on(void **st)
{
	int rc[OP_N], h;
	long base = fake_outstanding(), l0 = fake_launches();

	(void)st;
	unsetenv("VELO_CUDA_GRAPHS");
	unsetenv("VELO_CUDA_LT");
	unsetenv("VELO_CUDA_FLASH");
	round_trip(rc, &h);
	setenv("VELO_CUDA_GRAPHS", "0", 1);
	lt_env(false);
	assert_round_trip_ok(rc, h);
	assert_true(fake_launches() - l0 > 16 * 20);
	assert_int_equal(fake_outstanding(), base);
}

/* cuBLASLt plans of the synthetic models here, each run once at load
 * (cuda_lt_warm): their distinct (shape, token bucket) pairs. */
#define LT_PLANS 12

static void test_lt_up_down(void **st)
{
	int rc[OP_N], h;
	long base = fake_outstanding(), m0 = fake_lt_matmuls();

	(void)st;
	lt_env(true);
	round_trip(rc, &h);
	lt_env(false);
	assert_round_trip_ok(rc, h);
	/* the prefill step: 2 layers x (q, k, v, o, gate, up, down); and at
	 * load each plan once (LT_PLANS: 4 shapes x 3 token buckets) */
	assert_int_equal(fake_lt_matmuls() - m0, 2 * 7 + LT_PLANS);
	assert_int_equal(fake_outstanding(), base);
	/* off: no product through cuBLASLt */
	m0 = fake_lt_matmuls();
	round_trip(rc, &h);
	assert_int_equal(fake_lt_matmuls(), m0);
	assert_int_equal(fake_outstanding(), base);
}

/* FP8 weights: E4M3 GEMMs (VELO_CUDA_LT=1), or as BF16 after an exact
 * conversion (VELO_CUDA_LT=2); both 14 products in the prefill step. */
static void test_lt_fp8_up_down(void **st)
{
	int rc[OP_N], h;
	long base = fake_outstanding(), m0;

	(void)st;
	RM = &S8.m;
	for (int mode = 1; mode <= 2; mode++) {
		lt_env(true);
		setenv("VELO_CUDA_LT", mode == 1 ? "1" : "2", 1);
		m0 = fake_lt_matmuls();
		round_trip(rc, &h);
		lt_env(false);
		assert_round_trip_ok(rc, h);
		assert_int_equal(fake_lt_matmuls() - m0, 2 * 7 + LT_PLANS);
		assert_int_equal(fake_outstanding(), base);
	}
	RM = &S.m;
}

/*
 * The tensor-core GEMM (VELO_CUDA_MMA=1/2, the default 2) takes every
 * product of the 25-token prefill step: 2 layers x (QKV, O, gate/up,
 * down), counted in eng_cuda.mma_gemms; =0 leaves them to k_mm.  BF16 and
 * FP8 weights; nothing left behind.
 */
static void test_mma_routes(void **st)
{
	long base = fake_outstanding();
	uint32_t ids[25], b0[8] = { 3, 4, 5, 6, 7, 8, 9, 10 }, b1[8] = { 11, 12, 13 };

	(void)st;
	for (uint32_t i = 0; i < 25; i++)
		ids[i] = 3 + i * 7;
	for (int mode = 0; mode <= 2; mode++) {
		for (int w = 0; w < 2; w++) {
			struct eng_seq_in in[2] = {
				{ ids, 20, 0, b0, 8, ENG_SEQ_LOGITS },
				{ ids + 20, 5, 0, b1, 3, ENG_SEQ_LOGITS },
			};
			struct eng_batch b = { in, 2 };
			struct eng_backend *be;
			struct eng_be_model *bm;
			char v[4];
			uint64_t n0, n1;

			snprintf(v, sizeof(v), "%d", mode);
			setenv("VELO_CUDA_MMA", v, 1);
			assert_int_equal(ops->init(NULL, &be), 0);
			assert_int_equal(ops->model_load(be, w ? &S8.m : &S.m, &bud, &bm), 0);
			n0 = ctr_lookup("eng_cuda.mma_gemms");
			assert_int_equal(ops->step(bm, &b), 0);
			n1 = ctr_lookup("eng_cuda.mma_gemms");
			assert_int_equal(n1 - n0, mode ? 2 * 4 : 0);
			/* a decode step (2 tokens) stays on the GEMV */
			in[0] = (struct eng_seq_in){ ids, 1, 20, b0, 8, ENG_SEQ_LOGITS };
			in[1] = (struct eng_seq_in){ ids, 1, 5, b1, 3, ENG_SEQ_LOGITS };
			assert_int_equal(ops->step(bm, &b), 0);
			assert_int_equal(ctr_lookup("eng_cuda.mma_gemms"), n1);
			assert_int_equal(ops->health(be, NULL), 0);
			ops->model_unload(bm);
			ops->fini(be);
		}
	}
	setenv("VELO_CUDA_MMA", "2", 1);
	assert_int_equal(fake_outstanding(), base);
}

static void ladder(bool graphs, bool lt)
{
	long base = fake_outstanding();
	int rc[OP_N], h, n_fail_runs = 0;

	setenv("VELO_CUDA_GRAPHS", graphs ? "1" : "0", 1);
	lt_env(lt);
	for (int n = 1; n < 100000; n++) {
		char buf[16];
		int first = -1;

		snprintf(buf, sizeof(buf), "%d", n);
		setenv("VELO_CUDA_FAIL_NTH", buf, 1);
		round_trip(rc, &h);
		for (int i = 0; i < OP_N && first < 0; i++)
			if (rc[i] != 0 && rc[i] != 1)
				first = i;
		if (first < 0) {
			/* N beyond the round: everything ran */
			for (int i = 0; i < OP_N; i++)
				assert_int_equal(rc[i], 0);
			break;
		}
		n_fail_runs++;
		if (first == OP_INIT) {
			assert_int_equal(rc[OP_INIT], -ENODEV);
		} else {
			assert_int_equal(rc[first], -EIO);
			for (int i = first + 1; i < OP_N; i++)
				if (rc[i] != 1)
					assert_int_equal(rc[i], -ENODEV);
			assert_int_equal(h, -EIO);
		}
		if (fake_outstanding() != base)
			fail_msg("fault at call %d (op %d): %ld driver objects leaked", n, first,
				 fake_outstanding() - base);
		if (fake_capturing())
			fail_msg("fault at call %d (op %d): stream capture left open", n, first);
	}
	unsetenv("VELO_CUDA_FAIL_NTH");
	setenv("VELO_CUDA_GRAPHS", "0", 1);
	lt_env(false);
	printf("# fault ladder%s%s: %d injection points, every one handled\n",
	       graphs ? " (decode graphs)" : "", lt ? " (cuBLASLt, flash)" : "", n_fail_runs);
	assert_true(n_fail_runs > 50);
}

static void test_fault_ladder(void **st)
{
	(void)st;
	ladder(false, false);
}

static void test_fault_ladder_lt(void **st)
{
	(void)st;
	ladder(false, true);
}

static void test_fault_ladder_graphs(void **st)
{
	(void)st;
	ladder(true, false);
}

static int setup(void **st)
{
	char exe[PATH_MAX - 32];
	struct eng_model_config c = cfg();
	ssize_t n;
	void *h;

	(void)st;
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n <= 0)
		return -1;
	exe[n] = 0;
	*strrchr(exe, '/') = 0;
	snprintf(fake_path, sizeof(fake_path), "%s/libcuda-fake.so", exe);
	setenv("VELO_CUDA_DRIVER", fake_path, 1);
	setenv("VELO_CUDA_CUBLASLT", fake_path, 1);
	/* the backend's dlopen gets this same instance (same path) */
	h = dlopen(fake_path, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		printf("# %s: %s\n", fake_path, dlerror());
		return -1;
	}
	fake_outstanding = (long (*)(void))dlsym(h, "fake_cuda_outstanding");
	fake_launches = (long (*)(void))dlsym(h, "fake_cuda_launches");
	fake_capturing = (int (*)(void))dlsym(h, "fake_cuda_capturing");
	fake_lt_matmuls = (long (*)(void))dlsym(h, "fake_lt_matmuls");
	if (!fake_outstanding || !fake_launches || !fake_capturing || !fake_lt_matmuls)
		return -1;
	memset(&S, 0, sizeof(S));
	memset(&S8, 0, sizeof(S8));
	RM = &S.m;
	return eng_synth_build(&S, &c, ENG_DT_BF16, 11) ?:
	       eng_synth_build(&S8, &c, ENG_DT_FP8_E4M3, 12);
}

static int teardown(void **st)
{
	(void)st;
	eng_synth_free(&S);
	eng_synth_free(&S8);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_up_down),
		cmocka_unit_test(test_bad_batches),
		cmocka_unit_test(test_load_rejects),
		cmocka_unit_test(test_fault_ladder),
		cmocka_unit_test(test_graphs_up_down),
		cmocka_unit_test(test_defaults_graphs_on),
		cmocka_unit_test(test_fault_ladder_graphs),
		cmocka_unit_test(test_lt_up_down),
		cmocka_unit_test(test_lt_fp8_up_down),
		cmocka_unit_test(test_fault_ladder_lt),
		cmocka_unit_test(test_mma_routes),
	};

	/* The backend's defaults turn graphs, cuBLASLt and tiled attention
	 * on; each test here names the routes it covers, the plain ones with
	 * all three off. */
	setenv("VELO_CUDA_GRAPHS", "0", 1);
	lt_env(false);
	/* the tensor-core GEMM named too (its default): every plain test,
	 * the plain fault ladder included, runs its products on it */
	setenv("VELO_CUDA_MMA", "2", 1);
	return cmocka_run_group_tests(tests, setup, teardown);
}
