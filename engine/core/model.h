/* SPDX-License-Identifier: MIT */
/*
 * model.h — a loaded model as the engine sees it: its configuration and its
 * weights, wherever they live (an mmap'd image for the CPU backend, device
 * memory for CUDA).  Filled by the image loader (image.c), consumed by the
 * backends.  The file layout itself is docs/model-format.md.
 */
#ifndef VELO_ENG_MODEL_H
#define VELO_ENG_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Tensor element types, as stored in model images (values are on disk). */
enum eng_dtype {
	ENG_DT_F32 = 0,
	ENG_DT_BF16 = 1,
	ENG_DT_F16 = 2,
	/* FP8 E4M3 (OCP, max 448), row-major [rows, cols]; one f32 scale per
	 * output row (per output channel): w = fp8 * scale[row]. */
	ENG_DT_FP8_E4M3 = 3,
	/* INT4, symmetric, groups of 128 along the input dimension.  Row-major
	 * [rows, cols/2] bytes; byte j of a row holds element 2j in its low
	 * nibble and 2j+1 in its high nibble, each stored as q + 8 with q in
	 * [-8, 7]; one f16 scale per (row, group), row-major [rows, cols/128]:
	 * w = (nibble - 8) * scale.  A 16-byte load is 32 consecutive weights
	 * of one row, which is what a GEMV thread wants. */
	ENG_DT_INT4_G128 = 4,
	ENG_DT__COUNT
};
#define ENG_INT4_GROUP 128

enum eng_arch {
	ENG_ARCH_LLAMA = 1,	/* Llama 2/3/3.1/3.2, TinyLlama, SmolLM */
	ENG_ARCH_MISTRAL = 2,
	ENG_ARCH_QWEN2 = 3,	/* q/k/v biases */
};

enum eng_rope_scaling {
	ENG_ROPE_NONE = 0,
	ENG_ROPE_LLAMA3 = 1,	/* factor, low/high freq factor, orig max pos */
	ENG_ROPE_LINEAR = 2,	/* factor */
};

enum eng_chat_template {
	ENG_CHAT_NONE = 0,
	ENG_CHAT_LLAMA3 = 1,
	ENG_CHAT_LLAMA2 = 2,	/* [INST] ... [/INST], Mistral too */
	ENG_CHAT_CHATML = 3,	/* Qwen2, SmolLM */
	ENG_CHAT_ZEPHYR = 4,	/* TinyLlama chat */
};

#define ENG_EOS_MAX 4

struct eng_model_config {
	enum eng_arch arch;
	uint32_t vocab_size;
	uint32_t hidden;		/* model dimension */
	uint32_t n_layers;
	uint32_t n_heads;
	uint32_t n_kv_heads;
	uint32_t head_dim;		/* usually hidden / n_heads */
	uint32_t ffn;			/* intermediate size */
	uint32_t max_seq;		/* max_position_embeddings */
	float norm_eps;
	float rope_theta;
	enum eng_rope_scaling rope_scaling;
	float rope_factor;
	float rope_low_freq_factor;
	float rope_high_freq_factor;
	uint32_t rope_orig_max_pos;
	bool tied_embeddings;		/* lm_head is embed_tokens */
	bool qkv_bias;			/* Qwen2 */
	bool o_bias;
	bool mlp_bias;
	uint32_t bos_id;		/* UINT32_MAX: none */
	uint32_t eos_ids[ENG_EOS_MAX];
	uint32_t n_eos;
	uint32_t pad_id;		/* UINT32_MAX: none */
	enum eng_chat_template chat_template;
	uint32_t sliding_window;	/* 0: full attention (Mistral v0.1: 4096) */
};

/* One weight matrix or vector.  data/scales point into the image mapping
 * (CPU) or device memory (CUDA). */
struct eng_tensor {
	enum eng_dtype dtype;
	uint32_t rows;		/* output dim for matrices; 1 for vectors */
	uint32_t cols;		/* input dim */
	const void *data;
	const void *scales;	/* FP8: f32[rows]; INT4: f16[rows][cols/128]; else NULL */
};

/* An expected logit of the known-answer record (at the last prompt
 * position). */
struct eng_ka_logit {
	uint32_t id;
	float logit;
};

struct eng_layer_weights {
	struct eng_tensor attn_norm;	/* [hidden] f32/bf16 */
	struct eng_tensor wq, wk, wv, wo;
	struct eng_tensor bq, bk, bv, bo; /* biases, dtype F32/BF16, or data NULL */
	struct eng_tensor ffn_norm;
	struct eng_tensor w_gate, w_up, w_down;
};

struct eng_model {
	struct eng_model_config cfg;
	char name[64];
	char version[32];
	struct eng_tensor embed;	/* [vocab, hidden]; kept BF16 or F32 */
	struct eng_tensor final_norm;
	struct eng_tensor lm_head;	/* == embed when tied */
	struct eng_layer_weights *layers; /* n_layers */
	/* the tokenizer section of the image (see tokenizer.h) */
	const void *tokenizer_blob;
	size_t tokenizer_blob_len;
	/* known-answer record: prompt tokens and the expected greedy tokens */
	const uint32_t *ka_prompt;
	uint32_t ka_prompt_len;
	const uint32_t *ka_expect;
	uint32_t ka_expect_len;
	const struct eng_ka_logit *ka_logits;	/* may be NULL */
	uint32_t ka_n_logits;
	float ka_logit_tol;			/* absolute */
};

#endif
