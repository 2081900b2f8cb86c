// SPDX-License-Identifier: MIT
/*
 * fuzz_image.c — libFuzzer target for the model image validator
 * (engine/core/image.c): the input is an image file's bytes.
 *
 * Each input is opened three ways: as it is (FAST: the checksums stop most
 * random damage at the door), then with its checksums recomputed
 * (eng_image_checksums_update) so that the damage reaches the structural
 * checks of the header, configuration, tensor table, tokenizer section and
 * known-answer record, FAST and FULL.  Whatever is accepted must be
 * usable: every tensor, scale array, the tokenizer blob and the known-answer
 * arrays are read at their first and last byte, inside the buffer (ASan
 * would report a byte outside it), and their shapes match the config.
 * Findings: a crash, a sanitizer report, or an abort below.
 *
 * Seeds: tests/fuzz/corpus/image/ (velo-convert --random micro and
 * micro-qwen2 images, 64-byte aligned); dictionary: tests/fuzz/image.dict.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <velo/compiler.h>

#include "../../engine/core/image.h"

#define INPUT_MAX (8u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint8_t sink;

static void touch(const void *p, uint64_t len)
{
	const uint8_t *b = p;

	if (!len)
		return;
	if (!p)
		abort();
	sink ^= b[0];
	sink ^= b[len - 1];
}

static void touch_tensor(const struct eng_tensor *t, uint32_t rows, uint32_t cols,
			 bool optional)
{
	uint64_t dl, sl;

	if (!t->data) {
		if (!optional)
			abort();
		return;
	}
	if (t->rows != rows || t->cols != cols ||
	    eng_dtype_sizes(t->dtype, t->rows, t->cols, &dl, &sl))
		abort();
	touch(t->data, dl);
	if (sl && !t->scales)
		abort();
	touch(t->scales, sl);
}

static void check_model(const struct eng_image *img, const uint8_t *buf, size_t size)
{
	const struct eng_model *m = eng_image_model(img);
	const struct eng_model_config *c = &m->cfg;
	const uint32_t q = c->n_heads * c->head_dim, kv = c->n_kv_heads * c->head_dim;

	touch_tensor(&m->embed, c->vocab_size, c->hidden, false);
	touch_tensor(&m->final_norm, 1, c->hidden, false);
	touch_tensor(&m->lm_head, c->vocab_size, c->hidden, false);
	if (c->tied_embeddings && m->lm_head.data != m->embed.data)
		abort();
	for (uint32_t l = 0; l < c->n_layers; l++) {
		const struct eng_layer_weights *w = &m->layers[l];

		touch_tensor(&w->attn_norm, 1, c->hidden, false);
		touch_tensor(&w->ffn_norm, 1, c->hidden, false);
		touch_tensor(&w->wq, q, c->hidden, false);
		touch_tensor(&w->wk, kv, c->hidden, false);
		touch_tensor(&w->wv, kv, c->hidden, false);
		touch_tensor(&w->wo, c->hidden, q, false);
		touch_tensor(&w->w_gate, c->ffn, c->hidden, false);
		touch_tensor(&w->w_up, c->ffn, c->hidden, false);
		touch_tensor(&w->w_down, c->hidden, c->ffn, false);
		touch_tensor(&w->bq, 1, q, !c->qkv_bias);
		touch_tensor(&w->bk, 1, kv, !c->qkv_bias);
		touch_tensor(&w->bv, 1, kv, !c->qkv_bias);
		touch_tensor(&w->bo, 1, c->hidden, !c->o_bias);
		if ((!c->qkv_bias && w->bq.data) || (!c->o_bias && w->bo.data))
			abort();
	}
	touch(m->tokenizer_blob, m->tokenizer_blob_len);
	if ((const uint8_t *)m->tokenizer_blob < buf ||
	    (const uint8_t *)m->tokenizer_blob + m->tokenizer_blob_len > buf + size)
		abort();
	touch(m->ka_prompt, 4ull * m->ka_prompt_len);
	touch(m->ka_expect, 4ull * m->ka_expect_len);
	touch(m->ka_logits, 8ull * m->ka_n_logits);
	for (uint32_t i = 0; i < m->ka_prompt_len; i++)
		if (m->ka_prompt[i] >= c->vocab_size)
			abort();
	if (eng_image_tensor_count(img) > 3 + 13 * c->n_layers)
		abort();
}

static void try_open(uint8_t *buf, size_t size, enum eng_image_verify v)
{
	struct eng_image *img;
	char err[256];
	int rc;

	err[0] = 0;
	rc = eng_image_open_mem(buf, size, v, &img, err, sizeof(err));
	if (rc == 0) {
		check_model(img, buf, size);
		eng_image_close(img);
		return;
	}
	/* the documented errors only, each with a message */
	if ((rc != -EINVAL && rc != -EBADMSG && rc != -ENOTSUP) || !err[0])
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *buf;

	if (size > INPUT_MAX)
		return 0;
	/* exact size (ASan sees a read one byte past the end), 64-byte aligned
	 * as eng_image_open_mem() requires */
	if (posix_memalign((void **)&buf, 64, size ? size : 1))
		return 0;
	memcpy(buf, data, size);
	try_open(buf, size, ENG_IMAGE_VERIFY_FAST);
	if (!eng_image_checksums_update(buf, size)) {
		try_open(buf, size, ENG_IMAGE_VERIFY_FAST);
		try_open(buf, size, ENG_IMAGE_VERIFY_FULL);
	}
	free(buf);
	return 0;
}
