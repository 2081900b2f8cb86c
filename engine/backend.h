/* SPDX-License-Identifier: MIT */
/*
 * backend.h — the one table of function pointers every engine backend
 * implements (cpu/ in CI and for small models, cuda/ in production).  The
 * scheduler drives a backend only through this table, so the same scheduler
 * and the same tests run on both, and the CPU backend is the reference the
 * CUDA one is checked against (ARCHITECTURE principle 7).
 *
 * Objects:
 *   struct eng_backend   one per device (the CPU backend: one per worker
 *                        pool); created by ops->init from a budget.
 *   struct eng_be_model  one model loaded on a backend ("a slot"): the
 *                        weights as the backend reads them, the paged KV
 *                        pool, the activation and logits buffers — all
 *                        allocated by ops->model_load from an explicit
 *                        budget.  Several may live on one backend (hot swap
 *                        loads the new version beside the old one).
 *
 * A step: the scheduler hands a batch — for each sequence, its new tokens
 * (1 for decode, a chunk for prefill), the position of the first one, its
 * KV block table and whether it wants logits — to ops->step, then reads the
 * logits (ops->logits) or the sampled tokens (ops->sample) of the sequences
 * that asked.  Sequences of different lengths, some prefilling and some
 * decoding, share one step.  The backend keeps no per-sequence state: the
 * KV blocks hold everything, and the scheduler owns their allocation (see
 * core/kv.h for the block contract).
 *
 * Threads: the ops of one model (step, logits, sample, kv_copy) are called
 * from one thread at a time; ops->health from any thread.  The backend's
 * own workers (CPU worker pool, CUDA streams) are internal.  Hot swap adds
 * a loader thread (never the scheduler's): it calls init, model_load, the
 * known-answer self-test of the NEW model (step, logits) and later
 * model_unload and fini, while the scheduler thread steps OTHER models.
 *   - CUDA: one instance per device, shared by the slots on it.  model_load,
 *     model_unload and a new model's steps on the loader thread must be
 *     safe concurrently with steps of another model of the same instance
 *     on the scheduler thread (each model its own stream and buffers; no
 *     device-wide synchronisation such as cuCtxSynchronize in the step
 *     path; allocation on the loader thread only).
 *   - CPU: its worker pool runs one step at a time, so the scheduler gives
 *     every CPU slot its own instance (its own pool): a new version loads
 *     and self-tests "beside" the old one on the same device without
 *     sharing a pool (engine/sched_model.c, backend_get()).
 * Every op of one model stays on one thread at a time: the loader hands a
 * self-tested model to the scheduler through a release/acquire handoff and
 * never touches it again until the scheduler gives it back (detached) for
 * model_unload.
 *
 * Determinism: the CPU backend is batch invariant — a sequence's logits are
 * the same bits whatever else shares the step, however a prompt is chunked
 * into steps and however many worker threads run (within one SIMD kernel
 * table; generic, AVX2 and AVX-512 differ in the last bits).  Greedy
 * decoding and seeded sampling are therefore reproducible under any
 * scheduling.  A CUDA backend need not be; parity with the CPU is checked
 * within tolerances.
 *
 * Memory: init and model_load allocate everything; step, logits, sample and
 * kv_copy allocate nothing, take no locks shared with other threads, make
 * no blocking system call and log nothing (principle 1).  A CPU worker pool
 * that has been idle for a while sleeps on a futex; waking it is the only
 * system call of a step.
 *
 * Errors: actions return 0 or -errno.  Bad input from the scheduler (a token
 * beyond the vocabulary, a block out of range, a batch over budget) is
 * rejected with -EINVAL or -E2BIG before anything is written, and counted;
 * it never crashes the backend.  A device fault fails the step with -EIO
 * and marks the backend down: every later call returns -ENODEV until mgmt
 * reinitialises it (fini + init); ops->health reports the fault.
 */
#ifndef VELO_ENG_BACKEND_H
#define VELO_ENG_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/kv.h"
#include "core/model.h"

struct eng_backend_ops;
struct eng_sampler;

/* Every backend's objects start with these (the rest is private). */
struct eng_backend {
	const struct eng_backend_ops *ops;
};
struct eng_be_model {
	struct eng_backend *be;		/* the backend it is loaded on */
};

/* Workers of the CPU backend at most (worker 0 is the caller). */
#define ENG_CPU_THREADS_MAX 64

/* SIMD kernel family of the CPU backend; AUTO picks the best the CPU has. */
enum eng_cpu_isa {
	ENG_CPU_ISA_AUTO = 0,
	ENG_CPU_ISA_GENERIC = 1,	/* portable C */
	ENG_CPU_ISA_AVX2 = 2,		/* AVX2 + FMA + F16C */
	ENG_CPU_ISA_AVX512 = 3,		/* AVX-512 F/BW/VL + F16C */
};

/*
 * Device-level budget, for ops->init.  Zero fields take the default stated.
 */
struct eng_backend_budget {
	/* Bytes all models loaded on this backend may allocate together
	 * (weights copied to the device, KV pools, activations); 0: no limit.
	 * model_load fails with -ENOMEM rather than exceed it. */
	uint64_t mem_bytes_max;
	int device;			/* CUDA device ordinal; CPU: unused */
	struct {
		/* Workers including the calling thread (worker 0 is the
		 * thread that calls step; the backend never moves it).
		 * 0: one per online core, at most ENG_CPU_THREADS_MAX. */
		uint32_t threads;
		/* Core of worker i for i >= 1 (cores[0] is ignored); -1
		 * leaves that worker unpinned.  NULL: worker i on online
		 * core i % ncores. */
		const int *cores;
		/* How long an idle worker spins before it sleeps on a futex
		 * (microseconds; 0: 200).  Within a step the next job comes
		 * within microseconds, so the workers never sleep there. */
		uint32_t spin_us;
		enum eng_cpu_isa isa;	/* AUTO, or force one (tests) */
	} cpu;
};

/*
 * Per-model budget, for ops->model_load.  Every buffer the model needs is
 * sized from these; a step over them is rejected with -E2BIG.
 */
struct eng_model_budget {
	uint32_t seqs_max;		/* sequences in one step (>= 1) */
	uint32_t step_tokens_max;	/* new tokens in one step, all sequences */
	uint32_t kv_blocks;		/* blocks in the paged KV pool */
	uint32_t kv_block_tokens;	/* tokens per block; 0: 16; power of 2 */
	/* Longest block table: a sequence holds at most seq_blocks_max *
	 * kv_block_tokens positions (also capped by the model's max_seq). */
	uint32_t seq_blocks_max;
	enum eng_kv_dtype kv_dtype;	/* CPU: ENG_KV_F32 only */
};

/* Per-sequence flags of a step (other bits: -EINVAL). */
#define ENG_SEQ_LOGITS 0x1u	/* compute logits of this sequence's last token */

/* One sequence of a step. */
struct eng_seq_in {
	const uint32_t *tokens;		/* new tokens, [n_tokens] */
	uint32_t n_tokens;		/* >= 1: 1 for decode, a chunk for prefill */
	/* Position of tokens[0] = number of this sequence's positions already
	 * in its KV blocks (0 for a fresh prompt; the cached prefix length
	 * after a prefix-cache hit). */
	uint32_t pos;
	const uint32_t *blocks;		/* block table, [n_blocks] */
	uint32_t n_blocks;		/* >= ceil((pos + n_tokens) / block) */
	uint32_t flags;			/* ENG_SEQ_* */
};

/* The batch of one step: sequences in any order, any mix of lengths. */
struct eng_batch {
	const struct eng_seq_in *seqs;	/* [n_seqs] */
	uint32_t n_seqs;		/* 1 .. seqs_max */
};

/* What a loaded model costs and allows (for mgmt, benchmarks, logs). */
struct eng_be_model_info {
	uint64_t mem_bytes;		/* allocated by model_load, all of it */
	uint64_t kv_bytes;		/* of which the KV pool */
	uint64_t weight_bytes;		/* weights read per token (decode floor) */
	uint32_t ctx_max;		/* positions a sequence may hold */
	uint32_t kv_block_tokens;
	const char *kernels;		/* CPU: "avx2", ...; CUDA: arch */
	uint32_t threads;
};

struct eng_backend_ops {
	const char *name;		/* "cpu", "cuda" */

	/*
	 * init() - bring a backend up: CPU worker pool (threads created and
	 * pinned here), CUDA context and streams.
	 * @b:   the budget; NULL for defaults.
	 * @out: the backend, on success.
	 * Return: 0; -EINVAL for a bad budget (unknown core, ISA the CPU lacks),
	 * -ENOMEM, -EAGAIN (threads), -ENODEV (no device).
	 */
	int (*init)(const struct eng_backend_budget *b, struct eng_backend **out);

	/* fini() - tear down; every model must have been unloaded. NULL ok. */
	void (*fini)(struct eng_backend *be);

	/*
	 * model_load() - make @m runnable on @be.  @m must outlive the result:
	 * the CPU backend reads the weights in place (the image mapping);
	 * CUDA copies them to the device.  Allocates the KV pool, activation,
	 * logits and scratch buffers for @b's worst case, so that no step
	 * allocates; the pages are touched here, not in the first step.
	 * Return: 0; -EINVAL when the model is inconsistent (shapes, dtypes,
	 * missing tensors — logged with the tensor's name) or the budget is
	 * (zero sizes, block size not a power of two); -EOPNOTSUPP for a dtype
	 * or KV dtype this backend lacks; -ENOMEM (also when over the
	 * backend's mem_bytes_max); -ENODEV when the backend is down.
	 */
	int (*model_load)(struct eng_backend *be, const struct eng_model *m,
			  const struct eng_model_budget *b,
			  struct eng_be_model **out);

	/* model_unload() - free everything model_load allocated. NULL ok. */
	void (*model_unload)(struct eng_be_model *bm);

	/*
	 * step() - run the forward pass of one batch: for each sequence,
	 * write the keys and values of its new tokens into its blocks (slots
	 * pos .. pos + n_tokens - 1) and, if it asked (ENG_SEQ_LOGITS), compute
	 * the logits of its last new token.  May return before the work is
	 * done (CUDA launches); logits() and sample() wait for it.
	 * Return: 0; -EINVAL for a malformed batch (token >= vocab, block >=
	 * kv_blocks, table too short, n_tokens 0, NULL tokens or blocks,
	 * unknown flags, write conflict between sequences — see core/kv.h); -E2BIG when over the budget (n_seqs,
	 * tokens, positions beyond ctx_max); -ENODEV when down; -EIO on a
	 * device fault (the backend is then down).  On error nothing was
	 * written to any block.
	 */
	int (*step)(struct eng_be_model *bm, const struct eng_batch *batch);

	/*
	 * logits() - logits of sequence @seq (index into the last step's
	 * batch), float32 [vocab], valid until the next step of @bm.
	 * Return: 0; -ENOENT if that sequence did not ask for logits or no
	 * step ran; -EINVAL for @seq out of range.
	 */
	int (*logits)(struct eng_be_model *bm, uint32_t seq, const float **out);

	/*
	 * sample() - pick the next token of each sequence of the last step.
	 * @s:      [n] per-request samplers (core/sampler.h); NULL for a
	 *          sequence that did not ask for logits (its token is left).
	 * @n:      must equal the last step's n_seqs.
	 * @tokens: [n] the sampled tokens.
	 * The CPU backend runs eng_sampler_sample() on its logits; CUDA may
	 * sample on the device and copy back only the tokens.  The samplers'
	 * penalty windows are not updated: the scheduler feeds the chosen
	 * token back with eng_sampler_accept().
	 * Return: 0; -EINVAL (n mismatch, sampler for a sequence without
	 * logits); -ENODEV, -EIO as step().
	 */
	int (*sample)(struct eng_be_model *bm, struct eng_sampler *const *s,
		      uint32_t n, uint32_t *tokens);

	/*
	 * kv_copy() - copy blocks src[i] to dst[i] (every layer, every slot),
	 * for copy-on-write of a shared partial block.  Not concurrent with a
	 * step (same thread).
	 * Return: 0; -EINVAL for an index out of range or src == dst.
	 */
	int (*kv_copy)(struct eng_be_model *bm, const uint32_t *src,
		       const uint32_t *dst, uint32_t n);

	/* model_info() - sizes and limits of a loaded model. */
	void (*model_info)(const struct eng_be_model *bm,
			   struct eng_be_model_info *info);

	/*
	 * health() - 0 while the backend is usable, else the -errno of the
	 * fault that marked it down; *why (if not NULL) gets a static text.
	 * Any thread may call it.
	 */
	int (*health)(const struct eng_backend *be, const char **why);
};

/* The CPU backend (engine/cpu/, CONFIG_ENGINE_CPU). */
extern const struct eng_backend_ops eng_cpu_ops;
/* The CUDA backend (engine/cuda/, CONFIG_ENGINE_CUDA). */
extern const struct eng_backend_ops eng_cuda_ops;

#endif /* VELO_ENG_BACKEND_H */
