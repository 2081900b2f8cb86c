// SPDX-License-Identifier: MIT
/*
 * fuzz_cpu_batch.c — libFuzzer target over the CPU backend's step input:
 * arbitrary batches (sequence counts, token ids, positions, block tables,
 * flags, NULL pointers) against a small synthetic model, then logits,
 * sample and kv_copy on whatever was accepted.  Properties, for any input:
 *   - no crash, no out-of-bounds access (ASan), no undefined behaviour;
 *   - step returns 0, -EINVAL or -E2BIG, nothing else;
 *   - after a successful step, every requested row of logits is finite and
 *     the greedy sample is its argmax;
 *   - kv_copy accepts exactly the in-range, distinct pairs.
 *
 * Input layout (bytes, read cyclically when short): n_seqs, then per
 * sequence: n_tokens, pos, flags, n_blocks, a NULL-pointer mask, n_blocks
 * block ids, n_tokens token ids; finally two bytes for a kv_copy.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <velo/compiler.h>

#include "../../engine/backend.h"
#include "../../engine/core/sampler.h"
#include "../../engine/cpu/synth.h"
#include "../../tools/lib/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define SEQS_MAX 4
#define KV_BLOCKS 12
#define B 4
#define TAB_MAX 12	/* seq_blocks_max 8, tables up to 12 long */

static const struct eng_backend_ops *ops = &eng_cpu_ops;
static struct eng_synth syn;
static struct eng_backend *be;
static struct eng_be_model *bm;
static _Alignas(8) uint8_t smem[SEQS_MAX][1024];
static uint32_t vocab;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct eng_model_config c = {
		.arch = ENG_ARCH_QWEN2, .vocab_size = 64, .hidden = 128,
		.n_layers = 1, .n_heads = 4, .n_kv_heads = 2, .head_dim = 32,
		.ffn = 128, .max_seq = 28, .norm_eps = 1e-6f,
		.rope_theta = 10000.0f, .qkv_bias = true, .sliding_window = 9,
	};
	struct eng_backend_budget bb = { 0 };
	struct eng_model_budget mb = {
		.seqs_max = SEQS_MAX, .step_tokens_max = 16, .kv_blocks = KV_BLOCKS,
		.kv_block_tokens = B, .seq_blocks_max = 8,
	};

	(void)argc, (void)argv;
	log_set_spec("err");
	bb.cpu.threads = 1;
	if (eng_synth_build(&syn, &c, ENG_DT_INT4_G128, 7) ||
	    ops->init(&bb, &be) || ops->model_load(be, &syn.m, &mb, &bm)) {
		fprintf(stderr, "fuzz_cpu_batch: setup failed\n");
		abort();
	}
	vocab = c.vocab_size;
	return 0;
}

struct rd {
	const uint8_t *d;
	size_t n, i;
};

static uint8_t next(struct rd *r)
{
	return r->n ? r->d[r->i++ % r->n] : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rd r = { data, size, 0 };
	struct eng_seq_in in[SEQS_MAX + 2];
	uint32_t tok[SEQS_MAX + 2][20], blk[SEQS_MAX + 2][TAB_MAX];
	struct eng_sampler *sm[SEQS_MAX + 2];
	uint32_t out[SEQS_MAX + 2], src, dst;
	struct eng_batch b = { in, 0 };
	int rc;

	if (!size)
		return 0;
	b.n_seqs = next(&r) % (SEQS_MAX + 3);	/* 0 .. 6: some over budget */
	for (uint32_t s = 0; s < b.n_seqs; s++) {
		uint8_t nulls;

		in[s].n_tokens = next(&r) % 20;
		in[s].pos = next(&r) % 40;
		in[s].flags = next(&r);
		in[s].flags = in[s].flags >= 0xf8 ? 2 : in[s].flags & 1;
		in[s].n_blocks = next(&r) % (TAB_MAX + 1);
		nulls = next(&r);
		for (uint32_t i = 0; i < in[s].n_blocks; i++)
			blk[s][i] = next(&r) % (KV_BLOCKS + 3);
		for (uint32_t i = 0; i < in[s].n_tokens; i++)
			tok[s][i] = next(&r) % (vocab + 8);
		in[s].tokens = (nulls & 1) == 1 && (nulls & 0x30) == 0x30 ? NULL : tok[s];
		in[s].blocks = (nulls & 2) == 2 && (nulls & 0xc0) == 0xc0 ? NULL : blk[s];
	}
	rc = ops->step(bm, b.n_seqs ? &b : NULL);
	if (rc != 0 && rc != -EINVAL && rc != -E2BIG)
		abort();
	if (!rc) {
		for (uint32_t s = 0; s < b.n_seqs; s++) {
			const float *l;
			struct eng_sampler_params p;

			sm[s] = NULL;
			if (ops->logits(bm, s, &l))
				continue;
			for (uint32_t t = 0; t < vocab; t++)
				if (!isfinite(l[t]))
					abort();
			eng_sampler_params_default(&p);
			sm[s] = eng_sampler_init(smem[s], sizeof(smem[s]), &p, 0);
		}
		if (ops->sample(bm, sm, b.n_seqs, out))
			abort();
		for (uint32_t s = 0; s < b.n_seqs; s++) {
			const float *l;

			if (!sm[s])
				continue;
			ops->logits(bm, s, &l);
			for (uint32_t t = 0; t < vocab; t++)
				if (l[t] > l[out[s]])
					abort();
		}
	}
	src = next(&r) % (KV_BLOCKS + 2);
	dst = next(&r) % (KV_BLOCKS + 2);
	rc = ops->kv_copy(bm, &src, &dst, 1);
	if ((rc == 0) != (src < KV_BLOCKS && dst < KV_BLOCKS && src != dst))
		abort();
	return 0;
}
