// SPDX-License-Identifier: MIT
/*
 * ka.c — the known-answer record of a freshly written image, computed by
 * running the image itself on the CPU reference backend (engine/cpu): a
 * fixed English prompt through the image's own tokenizer (BOS first when
 * the tokenizer's template adds one), 16 greedy tokens, and the 8 largest
 * logits at the last prompt position.  The record then lets a loader (hot
 * swap) check that a model loaded on any backend answers as this one did.
 *
 * What is recorded must hold on other backends too (CUDA computes in other
 * precisions), so:
 *   - logit_tol = 0.05 + 0.01 * |top logit|;
 *   - the expected tokens stop before the first greedy step whose top-1 /
 *     top-2 margin is under 2 * logit_tol: past it another backend may
 *     rightly pick the runner-up (random-weight images have tiny margins
 *     and may keep no token, only the logits).
 * Cost: one prefill and 15 decode steps, each reading every weight, plus
 * the FULL verify eng_image_ka_patch() does before it re-seals the image:
 * 10.7 s for a 1B INT4 image (982 MiB) on the 2-core development VM under
 * load, 0.1-0.3 s for the test models.  --no-known-answer skips it.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <velo/compiler.h>

#include "../../engine/backend.h"
#include "../../engine/core/tokenizer.h"
#include "convert.h"

#define KA_PROMPT_TEXT	"The capital of France is"
#define KA_STEPS	16
#define KA_TOP		8
#define KA_BLOCK	16

/* The prompt's ids: the image's tokenizer, else a fixed fallback. */
static uint32_t ka_prompt(const struct eng_model *m, uint32_t *ids, uint32_t cap,
			  bool *from_tok)
{
	const uint32_t vocab = m->cfg.vocab_size;
	uint32_t n = 0;

	*from_tok = false;
	if (IS_ENABLED(CONFIG_ENGINE_TOKENIZER)) {
		struct eng_tokenizer *tok = eng_tok_load(m->tokenizer_blob,
							 m->tokenizer_blob_len, 0,
							 NULL, 0);
		size_t got = 0;
		bool ok = tok && !eng_tok_encode(tok, KA_PROMPT_TEXT,
						 strlen(KA_PROMPT_TEXT), true,
						 ids, cap, &got) && got;

		eng_tok_free(tok);
		for (size_t i = 0; ok && i < got; i++)
			ok = ids[i] < vocab;
		if (ok) {
			*from_tok = true;
			return (uint32_t)got;
		}
	}
	/* BOS and a few ids spread over the vocabulary */
	if (m->cfg.bos_id != UINT32_MAX)
		ids[n++] = m->cfg.bos_id;
	for (uint32_t i = 1; n < 8 && n < cap; i++)
		ids[n++] = (uint32_t)((i * 2654435761u) % vocab);
	return n;
}

static uint32_t argmax2(const float *l, uint32_t n, float *margin)
{
	uint32_t best = 0;
	float b1 = -INFINITY, b2 = -INFINITY;

	for (uint32_t i = 0; i < n; i++) {
		if (l[i] > b1) {
			b2 = b1;
			b1 = l[i];
			best = i;
		} else if (l[i] > b2) {
			b2 = l[i];
		}
	}
	*margin = b1 - b2;
	return best;
}

int ka_compute(const char *path, unsigned threads, bool verbose, char *err,
	       size_t el)
{
	uint32_t prompt[64], expect[KA_STEPS], blocks[8], tok;
	struct eng_ka_logit top[KA_TOP];
	const struct eng_backend_ops *ops;
	struct eng_backend_budget bb = { 0 };
	struct eng_model_budget mb = { 0 };
	struct eng_backend *be = NULL;
	struct eng_be_model *bm = NULL;
	const struct eng_model *m;
	struct eng_image *img;
	struct eng_image_ka ka = { 0 };
	float margin, min_margin = INFINITY, tol = 0;
	uint32_t np, ne = 0, vocab, nb;
	bool from_tok, fragile = false;
	const float *lg;
	int rc;

	if (!IS_ENABLED(CONFIG_ENGINE_CPU)) {
		snprintf(err, el, "the CPU backend is not built (CONFIG_ENGINE_CPU)");
		return -ENOTSUP;
	}
	ops = &eng_cpu_ops;
	rc = eng_image_open(path, ENG_IMAGE_VERIFY_FAST, &img, err, el);
	if (rc)
		return rc;
	m = eng_image_model(img);
	vocab = m->cfg.vocab_size;
	np = ka_prompt(m, prompt, ARRAY_SIZE(prompt), &from_tok);
	if (np + KA_STEPS > m->cfg.max_seq) {
		snprintf(err, el, "max_seq %u too short for a %u-token known-answer run",
			 m->cfg.max_seq, np + KA_STEPS);
		rc = -EINVAL;
		goto out;
	}
	nb = (np + KA_STEPS + KA_BLOCK - 1) / KA_BLOCK;
	for (uint32_t i = 0; i < nb; i++)
		blocks[i] = i;
	bb.cpu.threads = threads;
	mb = (struct eng_model_budget){
		.seqs_max = 1, .step_tokens_max = np, .kv_blocks = nb,
		.kv_block_tokens = KA_BLOCK, .seq_blocks_max = nb,
		.kv_dtype = ENG_KV_F32,
	};
	rc = ops->init(&bb, &be);
	if (!rc)
		rc = ops->model_load(be, m, &mb, &bm);
	if (rc) {
		snprintf(err, el, "CPU backend: loading the image: %s", strerror(-rc));
		goto out;
	}
	for (uint32_t step = 0; step < KA_STEPS; step++) {
		struct eng_seq_in in = {
			.tokens = step ? &tok : prompt,
			.n_tokens = step ? 1 : np,
			.pos = step ? np + step - 1 : 0,
			.blocks = blocks, .n_blocks = nb, .flags = ENG_SEQ_LOGITS,
		};
		struct eng_batch b = { &in, 1 };

		rc = ops->step(bm, &b);
		if (!rc)
			rc = ops->logits(bm, 0, &lg);
		if (rc) {
			snprintf(err, el, "CPU backend: step %u: %s", step, strerror(-rc));
			goto out;
		}
		tok = argmax2(lg, vocab, &margin);
		if (!step) {
			/* the KA_TOP largest logits, by selection (vocab x 8) */
			for (uint32_t k = 0; k < KA_TOP && k < vocab; k++) {
				uint32_t bi = 0;
				float bv = -INFINITY;

				for (uint32_t i = 0; i < vocab; i++) {
					bool taken = false;

					for (uint32_t j = 0; j < k && !taken; j++)
						taken = top[j].id == i;
					if (!taken && lg[i] > bv) {
						bv = lg[i];
						bi = i;
					}
				}
				top[k] = (struct eng_ka_logit){ bi, bv };
				ka.n_logits = k + 1;
			}
			tol = 0.05f + 0.01f * fabsf(top[0].logit);
		}
		min_margin = MIN(min_margin, margin);
		if (margin < 2 * tol)
			fragile = true;
		if (!fragile)
			expect[ne++] = tok;
	}
	ka.prompt = prompt;
	ka.prompt_len = np;
	ka.expect = expect;
	ka.expect_len = ne;
	ka.logits = top;
	ka.logit_tol = tol;
	/* the image is closed before it is patched (and verified FULL) */
	ops->model_unload(bm);
	bm = NULL;
	ops->fini(be);
	be = NULL;
	eng_image_close(img);
	img = NULL;
	rc = eng_image_ka_patch(path, &ka, err, el);
	if (!rc && verbose)
		fprintf(stderr, "velo-convert: known answer (CPU backend): %u-token prompt%s, %u expected tokens, %u logits within %.3g (smallest greedy margin %.3g)\n",
			np, from_tok ? " \"" KA_PROMPT_TEXT "\"" : " (fixed ids: the tokenizer could not encode)",
			ne, ka.n_logits, (double)tol, (double)min_margin);
out:
	if (bm)
		ops->model_unload(bm);
	if (be)
		ops->fini(be);
	eng_image_close(img);
	return rc;
}
