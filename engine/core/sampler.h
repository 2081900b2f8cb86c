/* SPDX-License-Identifier: MIT */
/*
 * sampler.h — turning a row of logits into the next token: greedy,
 * temperature, top-k, top-p, min-p, repetition / presence / frequency
 * penalties, a seeded per-request RNG (same seed and same logits, same
 * tokens) and stop tokens.
 *
 * Two objects, both sized up front so that sampling allocates nothing:
 *   struct eng_sampler          per request: parameters, RNG state and the
 *                               window of recent tokens the penalties look
 *                               at.  Placed in memory the caller provides
 *                               (the scheduler's request pool), size from
 *                               eng_sampler_size(window_max).
 *   struct eng_sampler_scratch  per sampling thread: vocabulary-sized work
 *                               arrays (a penalised copy of the logits, the
 *                               candidate list, token counts), allocated
 *                               once by eng_sampler_scratch_init().
 *
 * The pipeline, in order (as HF transformers' generate() applies its logits
 * processors and warpers):
 *   1. penalties, on the tokens of the window (the last penalty_window
 *      tokens given to eng_sampler_accept: prompt and output alike):
 *        repetition (CTRL / HF):  l > 0 ? l / r : l * r
 *        presence and frequency (OpenAI): l -= presence + frequency * count
 *      then the request's logit biases: l[id] += bias
 *   2. temperature <= 0, or top_k == 1: greedy — the highest logit, ties to
 *      the lowest token id.  Stop here.
 *   3. l / temperature, softmax over the finite logits;
 *   4. top-k: keep the k most likely (ties to the lower id);
 *   5. top-p: keep the smallest most-likely prefix whose probability,
 *      renormalised over what top-k kept, reaches top_p (at least one);
 *   6. min-p: keep tokens with p >= min_p * p_max;
 *   7. draw u in [0, 1) from xoshiro256** (seeded by splitmix64 from the
 *      request's seed) and take the token where the cumulative probability
 *      of the kept set, in descending order (or in id order when no
 *      truncation is active), first exceeds u.
 * NaN logits count as -inf.
 *
 * Cost, vocab 128256, random logits in +-8 (a flat, worst-case
 * distribution), median per token on the 2-core development VM
 * (velo-bench-engine prints these): greedy ~0.1 ms, temperature only
 * ~0.6 ms (one exp per token), top-k 40 ~0.3 ms (heap selection), top-p
 * 0.9 ~1.4 ms (O(V) log-probability buckets, then a sort of one bucket).
 * Peaked model logits keep far fewer candidates.
 */
#ifndef VELO_ENG_SAMPLER_H
#define VELO_ENG_SAMPLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ENG_SAMPLER_STOP_MAX 8
/* Logit biases per request (the protocol's logit_bias group holds 64). */
#define ENG_SAMPLER_BIAS_MAX 64
/* A bias is within +-this (OpenAI's range: -100 bans, +100 forces). */
#define ENG_SAMPLER_BIAS_LIMIT 100.0f
/* Longest penalty window a sampler may be sized for. */
#define ENG_SAMPLER_WINDOW_MAX 65536

struct eng_sampler_params {
	float temperature;		/* <= 0: greedy */
	uint32_t top_k;			/* 0 or >= vocab: off */
	float top_p;			/* (0, 1]; 1: off */
	float min_p;			/* [0, 1); 0: off */
	float repetition_penalty;	/* > 0; 1: off */
	float presence_penalty;		/* finite; 0: off */
	float frequency_penalty;	/* finite; 0: off */
	uint32_t penalty_window;	/* tokens looked at, <= window_max */
	uint64_t seed;
	uint32_t stop_ids[ENG_SAMPLER_STOP_MAX];
	uint32_t n_stop;
	/* added to the logits of bias_ids[i] after the penalties (a token
	 * listed twice gets both); every id must be < the vocabulary the
	 * sampler is used with (eng_sampler_sample: -EINVAL otherwise) */
	uint32_t bias_ids[ENG_SAMPLER_BIAS_MAX];
	float bias[ENG_SAMPLER_BIAS_MAX];
	uint32_t n_bias;
};

/* Defaults: greedy, no truncation, no penalties, seed 0, no stop ids. */
void eng_sampler_params_default(struct eng_sampler_params *p);

struct eng_sampler {
	struct eng_sampler_params p;
	uint64_t rng[4];		/* xoshiro256** state */
	uint32_t win_cap;		/* window slots (window_max at init) */
	uint32_t win_len;		/* tokens in the window, <= win_cap */
	uint32_t win_head;		/* next slot written */
	uint32_t win[];			/* [win_cap] ring of recent tokens */
};

struct eng_sampler_scratch {
	uint32_t vocab;
	float *val;			/* [vocab] penalised logits */
	uint32_t *idx;			/* [vocab] candidate ids */
	uint32_t *cnt;			/* [vocab] window counts, zero between calls */
	void *mem;
	size_t mem_len;
};

/* Bytes a sampler with a window of @window_max tokens needs. */
size_t eng_sampler_size(uint32_t window_max);

/*
 * eng_sampler_init() - place a sampler in @mem and seed it.
 * @mem:        at least eng_sampler_size(window_max) bytes, 8-byte aligned.
 * @p:          parameters (copied); penalty_window <= window_max.
 * Return: the sampler (== @mem), or NULL with errno EINVAL (parameter out
 * of range, NaN, window too large, misaligned) or ENOSPC (@len too small).
 */
struct eng_sampler *eng_sampler_init(void *mem, size_t len,
				     const struct eng_sampler_params *p,
				     uint32_t window_max);

/*
 * eng_sampler_accept() - append a token to the penalty window (prompt
 * tokens at admission, each generated token after it is chosen).
 */
void eng_sampler_accept(struct eng_sampler *s, uint32_t token);

/* eng_sampler_is_stop() - whether @token is one of the request's stop ids. */
bool eng_sampler_is_stop(const struct eng_sampler *s, uint32_t token);

/*
 * eng_sampler_scratch_init() - allocate work arrays for a vocabulary of
 * @vocab tokens (16 bytes per token).  Init time only.
 * Return: 0, -EINVAL (vocab 0 or over 2^24), -ENOMEM.
 */
int eng_sampler_scratch_init(struct eng_sampler_scratch *sc, uint32_t vocab);
void eng_sampler_scratch_fini(struct eng_sampler_scratch *sc);

/*
 * eng_sampler_plain_greedy() - true when eng_sampler_sample() would return
 * the highest raw logit (greedy, and no penalty or logit bias active that
 * could reorder the logits): a backend may then pick the token itself, on
 * the device, without the row.
 */
bool eng_sampler_plain_greedy(const struct eng_sampler *s);

/*
 * eng_sampler_penalized() - true when eng_sampler_sample() would apply a
 * repetition / presence / frequency penalty (a non-neutral penalty and a
 * non-empty window): a backend that samples on the device without the
 * window sends such a sampler to the host path.
 */
bool eng_sampler_penalized(const struct eng_sampler *s);

/*
 * eng_sampler_sample() - choose the next token from @logits [vocab].
 * Does not append it to the window (call eng_sampler_accept).  Allocates
 * nothing; advances the RNG only when it draws.
 * Return: 0 with *token set; -EINVAL when @vocab exceeds the scratch's or
 * a token in the window is >= @vocab; -EDOM when no logit is finite.
 */
int eng_sampler_sample(struct eng_sampler *s, struct eng_sampler_scratch *sc,
		       const float *logits, uint32_t vocab, uint32_t *token);

/* Next raw 64-bit value of the sampler's RNG (tests, reproducibility). */
uint64_t eng_sampler_rng_next(struct eng_sampler *s);

#endif /* VELO_ENG_SAMPLER_H */
