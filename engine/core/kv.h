/* SPDX-License-Identifier: MIT */
/*
 * kv.h — the paged KV cache contract between the scheduler and the backends.
 *
 * The KV cache of one loaded model is a pool of kv_blocks fixed-size blocks,
 * allocated by the backend at model load from the budget
 * (struct eng_model_budget).  A block holds the keys and values of
 * kv_block_tokens consecutive positions of one sequence, for every layer and
 * every KV head.  Blocks are named by their index in the pool, 0 ..
 * kv_blocks - 1.
 *
 * Who does what:
 *   - the scheduler owns the blocks: it allocates them to sequences, shares
 *     full blocks between sequences with a common prefix (prefix caching),
 *     copies a shared partial block before a sequence appends to it
 *     (ops->kv_copy), and frees them;
 *   - a sequence's block table lists its blocks in position order: entry i
 *     holds positions [i * kv_block_tokens, (i + 1) * kv_block_tokens);
 *   - the backend only reads the blocks a step's block tables name, and only
 *     writes the slots of the step's new tokens (positions pos .. pos +
 *     n_tokens - 1 of that sequence).  It keeps no per-sequence state: a
 *     sequence is entirely (its block table, its length).
 *
 * Rules a step must satisfy (the backend checks them, rejects the step with
 * -EINVAL and counts it; nothing is written then):
 *   - every block index < kv_blocks;
 *   - the table covers pos + n_tokens positions;
 *   - no two sequences of one step write the same block, and no sequence
 *     reads (positions < its pos) a block another sequence of the same step
 *     writes — a shared block is full, hence read-only.
 *
 * Layout on the CPU backend (the CUDA backend documents its own; the
 * scheduler never looks inside a block):
 *   k[layer][block][kv_head][slot][head_dim]  float32
 *   v[layer][block][kv_head][slot][head_dim]  float32
 * float32 so that the CPU backend stays the precision reference (attention
 * against an f32 cache is what HF's float32 forward computes).  One slot row
 * is head_dim * 4 contiguous bytes; the keys of one head within one block
 * are contiguous (kv_block_tokens * head_dim * 4 bytes: 4 KiB for 16 x 64),
 * which is what the attention loop streams.
 */
#ifndef VELO_ENG_KV_H
#define VELO_ENG_KV_H

#include <stdint.h>

/* Tokens per block when the configuration does not say (vLLM's default). */
#define ENG_KV_BLOCK_TOKENS_DEFAULT 16
/* Bounds checked at model load. */
#define ENG_KV_BLOCK_TOKENS_MAX 256

enum eng_kv_dtype {
	ENG_KV_F32 = 0,		/* CPU backend */
	ENG_KV_BF16 = 1,	/* reserved for the CUDA backend */
	ENG_KV_FP8_E4M3 = 2,	/* reserved for the CUDA backend */
};

/* Number of blocks a sequence of @tokens positions needs. */
static inline uint32_t eng_kv_blocks_for(uint32_t tokens, uint32_t block_tokens)
{
	return (tokens + block_tokens - 1) / block_tokens;
}

#endif
