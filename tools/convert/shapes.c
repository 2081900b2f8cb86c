// SPDX-License-Identifier: MIT
/*
 * shapes.c — named model shapes for velo-convert --random: real
 * architectures' dimensions (from their published config.json files), and
 * tiny ones for tests.  Values do not matter for speed; shapes do.  The
 * special token ids follow the generated tokenizer (tokgen.c: the family's
 * specials from special_base on), not the real checkpoints' where those
 * would collide with its byte tokens.
 */
#include <stdio.h>
#include <string.h>

#include <velo/compiler.h>

#include "convert.h"

#define LLAMA3_EOS .eos_ids = { 128001, 128008, 128009 }, .n_eos = 3
#define NONE UINT32_MAX

static const struct shape shapes[] = {
	{ "llama3-8b", "Llama-3.1-8B: 32 layers, hidden 4096, GQA 32/8, FFN 14336",
	  { .arch = ENG_ARCH_LLAMA, .vocab_size = 128256, .hidden = 4096,
	    .n_layers = 32, .n_heads = 32, .n_kv_heads = 8, .head_dim = 128,
	    .ffn = 14336, .max_seq = 131072, .norm_eps = 1e-5f,
	    .rope_theta = 500000.0f, .rope_scaling = ENG_ROPE_LLAMA3,
	    .rope_factor = 8.0f, .rope_low_freq_factor = 1.0f,
	    .rope_high_freq_factor = 4.0f, .rope_orig_max_pos = 8192,
	    .bos_id = 128000, LLAMA3_EOS, .pad_id = NONE,
	    .chat_template = ENG_CHAT_LLAMA3 },
	  TOK_LLAMA3, 128000 },
	{ "llama3-3b", "Llama-3.2-3B: 28 layers, hidden 3072, GQA 24/8, tied",
	  { .arch = ENG_ARCH_LLAMA, .vocab_size = 128256, .hidden = 3072,
	    .n_layers = 28, .n_heads = 24, .n_kv_heads = 8, .head_dim = 128,
	    .ffn = 8192, .max_seq = 131072, .norm_eps = 1e-5f,
	    .rope_theta = 500000.0f, .rope_scaling = ENG_ROPE_LLAMA3,
	    .rope_factor = 32.0f, .rope_low_freq_factor = 1.0f,
	    .rope_high_freq_factor = 4.0f, .rope_orig_max_pos = 8192,
	    .tied_embeddings = true, .bos_id = 128000, LLAMA3_EOS,
	    .pad_id = NONE, .chat_template = ENG_CHAT_LLAMA3 },
	  TOK_LLAMA3, 128000 },
	{ "llama3-1b", "Llama-3.2-1B: 16 layers, hidden 2048, GQA 32/8, tied",
	  { .arch = ENG_ARCH_LLAMA, .vocab_size = 128256, .hidden = 2048,
	    .n_layers = 16, .n_heads = 32, .n_kv_heads = 8, .head_dim = 64,
	    .ffn = 8192, .max_seq = 131072, .norm_eps = 1e-5f,
	    .rope_theta = 500000.0f, .rope_scaling = ENG_ROPE_LLAMA3,
	    .rope_factor = 32.0f, .rope_low_freq_factor = 1.0f,
	    .rope_high_freq_factor = 4.0f, .rope_orig_max_pos = 8192,
	    .tied_embeddings = true, .bos_id = 128000, LLAMA3_EOS,
	    .pad_id = NONE, .chat_template = ENG_CHAT_LLAMA3 },
	  TOK_LLAMA3, 128000 },
	{ "mistral-7b", "Mistral-7B-v0.3: 32 layers, hidden 4096, GQA 32/8, vocab 32768",
	  { .arch = ENG_ARCH_MISTRAL, .vocab_size = 32768, .hidden = 4096,
	    .n_layers = 32, .n_heads = 32, .n_kv_heads = 8, .head_dim = 128,
	    .ffn = 14336, .max_seq = 32768, .norm_eps = 1e-5f,
	    .rope_theta = 1000000.0f, .bos_id = 32000, .eos_ids = { 32001 },
	    .n_eos = 1, .pad_id = NONE, .chat_template = ENG_CHAT_LLAMA2 },
	  TOK_LLAMA3, 32000 },
	{ "qwen2-0.5b", "Qwen2.5-0.5B: 24 layers, hidden 896, GQA 14/2, qkv bias, tied",
	  { .arch = ENG_ARCH_QWEN2, .vocab_size = 151936, .hidden = 896,
	    .n_layers = 24, .n_heads = 14, .n_kv_heads = 2, .head_dim = 64,
	    .ffn = 4864, .max_seq = 32768, .norm_eps = 1e-6f,
	    .rope_theta = 1000000.0f, .tied_embeddings = true, .qkv_bias = true,
	    .bos_id = NONE, .eos_ids = { 151645, 151643 }, .n_eos = 2,
	    .pad_id = 151643, .chat_template = ENG_CHAT_CHATML },
	  TOK_CHATML, 151643 },
	{ "smollm-135m", "SmolLM-135M: 30 layers, hidden 576 (INT4 falls back to BF16 there)",
	  { .arch = ENG_ARCH_LLAMA, .vocab_size = 49152, .hidden = 576,
	    .n_layers = 30, .n_heads = 9, .n_kv_heads = 3, .head_dim = 64,
	    .ffn = 1536, .max_seq = 2048, .norm_eps = 1e-5f,
	    .rope_theta = 10000.0f, .tied_embeddings = true,
	    .bos_id = 49136, .eos_ids = { 49138, 49136 }, .n_eos = 2,
	    .pad_id = NONE, .chat_template = ENG_CHAT_CHATML },
	  TOK_CHATML, 49136 },
	{ "tiny", "tests: 4 layers, hidden 256, GQA 8/4, FFN 768, vocab 512",
	  { .arch = ENG_ARCH_LLAMA, .vocab_size = 512, .hidden = 256,
	    .n_layers = 4, .n_heads = 8, .n_kv_heads = 4, .head_dim = 32,
	    .ffn = 768, .max_seq = 2048, .norm_eps = 1e-5f,
	    .rope_theta = 500000.0f, .rope_scaling = ENG_ROPE_LLAMA3,
	    .rope_factor = 8.0f, .rope_low_freq_factor = 1.0f,
	    .rope_high_freq_factor = 4.0f, .rope_orig_max_pos = 256,
	    .bos_id = 496, .eos_ids = { 497, 504, 505 }, .n_eos = 3,
	    .pad_id = NONE, .chat_template = ENG_CHAT_LLAMA3 },
	  TOK_LLAMA3, 496 },
	{ "tiny-qwen2", "tests: 2 layers, hidden 256, GQA 4/2, qkv bias, tied, vocab 512",
	  { .arch = ENG_ARCH_QWEN2, .vocab_size = 512, .hidden = 256,
	    .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .head_dim = 64,
	    .ffn = 512, .max_seq = 1024, .norm_eps = 1e-6f,
	    .rope_theta = 1000000.0f, .tied_embeddings = true, .qkv_bias = true,
	    .bos_id = NONE, .eos_ids = { 498, 496 }, .n_eos = 2, .pad_id = 496,
	    .chat_template = ENG_CHAT_CHATML },
	  TOK_CHATML, 496 },
	{ "micro", "fuzz seeds: 1 layer, hidden 32, vocab 320",
	  { .arch = ENG_ARCH_LLAMA, .vocab_size = 320, .hidden = 32,
	    .n_layers = 1, .n_heads = 2, .n_kv_heads = 1, .head_dim = 16,
	    .ffn = 64, .max_seq = 128, .norm_eps = 1e-5f,
	    .rope_theta = 10000.0f, .bos_id = 304, .eos_ids = { 305 },
	    .n_eos = 1, .pad_id = NONE, .chat_template = ENG_CHAT_LLAMA3 },
	  TOK_LLAMA3, 304 },
	{ "micro-qwen2", "fuzz seeds: 1 layer, hidden 32, qkv bias, tied, vocab 320",
	  { .arch = ENG_ARCH_QWEN2, .vocab_size = 320, .hidden = 32,
	    .n_layers = 1, .n_heads = 2, .n_kv_heads = 1, .head_dim = 16,
	    .ffn = 64, .max_seq = 128, .norm_eps = 1e-6f,
	    .rope_theta = 1000000.0f, .tied_embeddings = true, .qkv_bias = true,
	    .bos_id = NONE, .eos_ids = { 306, 304 }, .n_eos = 2, .pad_id = 304,
	    .chat_template = ENG_CHAT_CHATML },
	  TOK_CHATML, 304 },
	{ "micro-int4", "fuzz seeds: 1 layer, hidden 128 (INT4-able), tied, vocab 320",
	  { .arch = ENG_ARCH_LLAMA, .vocab_size = 320, .hidden = 128,
	    .n_layers = 1, .n_heads = 2, .n_kv_heads = 1, .head_dim = 64,
	    .ffn = 128, .max_seq = 128, .norm_eps = 1e-5f,
	    .rope_theta = 10000.0f, .tied_embeddings = true, .bos_id = 304,
	    .eos_ids = { 305 }, .n_eos = 1, .pad_id = NONE,
	    .chat_template = ENG_CHAT_LLAMA3 },
	  TOK_LLAMA3, 304 },
};

const struct shape *shape_find(const char *name)
{
	for (unsigned i = 0; i < ARRAY_SIZE(shapes); i++)
		if (!strcmp(shapes[i].name, name))
			return &shapes[i];
	return NULL;
}

void shapes_list(FILE *f)
{
	for (unsigned i = 0; i < ARRAY_SIZE(shapes); i++)
		fprintf(f, "  %-12s %s\n", shapes[i].name, shapes[i].what);
}
