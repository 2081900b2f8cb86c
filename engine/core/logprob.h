/* SPDX-License-Identifier: MIT */
/*
 * logprob.h — log-probabilities of generated tokens for the protocol's
 * logprobs group (docs/protocol.md §5.7, §6.14).
 *
 * What is computed: the log-softmax of the RAW model logits of the step
 * that produced the token — before penalties, logit biases, temperature
 * and truncation (top-k/p, min-p).  That is what vLLM returns by default
 * (its "raw_logprobs" mode) and what OpenAI documents for its models; the
 * sampler's own distribution is not reported.  So under greedy decoding
 * without biases or penalties the chosen token is the top-1 alternative.
 *
 * Numbers: logprob(i) = l[i] - log(sum_j exp(l[j] - m)) - m with m the
 * largest finite logit, accumulated in double and stored as float (error
 * well under 1e-5 against a double reference, tests/unit/test_logprob.c).
 * NaN logits count as -inf (as in the sampler).  If some logits are +inf
 * they share the probability: each has log(1 / count), every other token
 * -inf.  If no logit is finite or +inf, every logprob is -inf.  Logprobs
 * are never NaN; -inf is a valid value.
 *
 * Top-k: the k largest logits, most likely first, ties to the lower id; a
 * partial selection in one pass (a sorted array of k <= 8 entries, one
 * compare against the current k-th value per token), not a sort.  When
 * fewer than k tokens have a logit above -inf, the rest of the list is
 * filled with the lowest remaining ids at -inf.
 *
 * Cost, vocab 128256, random logits in +-8 (flat: the worst case for the
 * block skip of the selection), on the 2-core development VM under a load
 * average of 5, test_logprob's bench (VELO_LOGPROB_BENCH=1), median per
 * token: 167 us (1.3 ns per vocabulary entry), k = 1 and k = 8 alike;
 * the first scalar version (libm expf, no block skip) took 566 us.  The
 * normaliser (vectorised exp, 4 lanes) is most of it; the top-k selection
 * skips blocks of 8 logits none of which beats the current k-th.
 * No allocation; the caller's output only.
 */
#ifndef VELO_ENG_LOGPROB_H
#define VELO_ENG_LOGPROB_H

#include <stdint.h>

#include <velo/proto.h>

/* Alternatives per token at most (= PROTO_LOGPROBS_MAX). */
#define ENG_LOGPROB_TOPK_MAX 8

/*
 * eng_logprob_topk() - one token's logprobs entries.
 * @logits: [vocab] raw logits of the step that produced @chosen.
 * @chosen: the sampled token (< vocab).
 * @k:      alternatives, 0..ENG_LOGPROB_TOPK_MAX.
 * @out:    [1 + k]: out[0] = {@chosen, its logprob}, out[1..k] the top k
 *          {id, logprob}, most likely first, ties to the lower id.
 * Return: 0; -EINVAL (NULL, vocab 0, chosen >= vocab, k too large, or
 * k > vocab); @out is untouched on error.
 */
int eng_logprob_topk(const float *logits, uint32_t vocab, uint32_t chosen,
		     uint32_t k, struct proto_logprob *out);

#endif /* VELO_ENG_LOGPROB_H */
