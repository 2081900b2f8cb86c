/* SPDX-License-Identifier: MIT */
/*
 * stream.h — per-request output handling: what the scheduler does with each
 * sampled token before anything goes on the response ring.
 *
 *   - the token goes through the streaming detokenizer (tokenizer.h
 *     eng_detok) and becomes UTF-8 text;
 *   - stop sequences are matched on that text ACROSS token and chunk
 *     boundaries: text that could be the start of a stop sequence is held
 *     back until it is known not to be one;
 *   - stop token ids, EOS, max_tokens end the request;
 *   - the granularity (every token, every K tokens, sentence ends) decides
 *     when a TOKENS chunk is cut; chunks are bounded to what one response
 *     record holds (DP_RESP_TOKENS_MAX ids, DP_RESP_TEXT_MAX bytes).
 *
 * The state is one fixed-size struct (about 2.9 KiB) that lives in the
 * request's slot; it holds no pointers (it may be copied) and nothing is
 * allocated.  One thread (the scheduler's) uses a given stream.
 *
 * Finishing, in the order checked after each token (n = tokens pushed so
 * far, this one included):
 *   1. stop token (one of params.stop_ids)      -> PROTO_FINISH_STOP_TOKEN
 *   2. EOS (params.eos_id or one of params.eos_ids, unless ignore_eos)
 *                                                -> PROTO_FINISH_EOS
 *   3. a stop sequence completed in the text     -> PROTO_FINISH_STOP_SEQUENCE
 *   4. n == max_tokens (when max_tokens > 0)     -> PROTO_FINISH_LENGTH
 * 1-3 apply only once n >= min_tokens: before that a stop id or EOS is an
 * ordinary token (its text is streamed, empty for special tokens when
 * skipping them) and a stop sequence that completes is streamed as text.
 * (HF and vLLM also mask EOS in the logits before min_tokens; the sampler
 * does not, so the scheduler may add a -inf logit bias there if it wants
 * that behaviour exactly.)
 * A stop or EOS token's id is part of the last chunk's ids (it was
 * generated and is counted in completion_tokens) but its text is not.  On a
 * stop sequence the text before it is emitted; the stop sequence and
 * anything after it in the same token are not.  On STOP_TOKEN, EOS and
 * LENGTH the held-back text is released and the detokenizer flushed.
 *
 * Stop sequences, matching: the earliest occurrence in the text wins; the
 * text is what the streaming detokenizer emits (so the clean-up and strip
 * rules of tokenizer.h apply before matching).  The held-back tail is at
 * most the longest stop sequence minus one byte.
 *
 * Chunks.  A chunk carries the ids pushed since the previous chunk and the
 * text that became final since then (text lags ids when bytes are held:
 * a partial code point, a detokenizer clean-up space, a possible stop
 * sequence), and flags PROTO_TOK_FIRST (first chunk of the request),
 * PROTO_TOK_SENTENCE, PROTO_TOK_LAST (the request finished; after it, no
 * more chunks).  A chunk is cut:
 *   - PROTO_STREAM_TOKEN:   after every token (text may be empty);
 *   - PROTO_STREAM_EVERY_K: every K tokens (K = stream_k; 0 taken as 1,
 *                           more than DP_RESP_TOKENS_MAX taken as that);
 *   - PROTO_STREAM_SENTENCE: at the first token boundary at or after a
 *     sentence end.  A sentence end is the position right after a '\n', or
 *     right after '.', '!' or '?' when the next character is ' ' or '\n'
 *     (decided when that character arrives; at the end of the stream the
 *     LAST chunk goes anyway).  So with tokens "end" "." " The" the chunk
 *     "...end." is cut when " The" arrives and " The" starts the next one.
 *     PROTO_TOK_SENTENCE is set on a chunk whose text has a sentence end
 *     followed only by spaces/newlines (or the end of the text).
 *   - in every mode: as soon as DP_RESP_TOKENS_MAX ids (params.ids_max
 *     when set) are pending, or
 *     DP_RESP_TEXT_MAX bytes of text (the text is then split at a code
 *     point boundary; the ids whose text is not entirely in the chunk go
 *     to the next one, so a chunk may carry text and no ids);
 *   - when the request finishes (the LAST chunk; possibly empty).
 * Concatenating every chunk's text gives exactly eng_tok_decode() of all
 * the ids (under tokenizer.h's streaming rules), cut before the stop
 * sequence when one matched; concatenating the ids gives every id pushed.
 *
 * Use, per sampled token:
 *   rc = eng_stream_push(st, tok, id, &ready);   (1 = finished)
 *   while (ready)   -> take the chunk into a dp_resp record, enqueue it
 *       ready = eng_stream_take_chunk(st, ...) > 0 && eng_stream_ready(st);
 * and eng_stream_finish() for an end decided outside (cancel, deadline,
 * drain, error, context full).  Every ready chunk must be taken before the
 * next push (push refuses with -EBUSY otherwise).
 */
#ifndef VELO_ENG_STREAM_H
#define VELO_ENG_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <velo/proto.h>

#include "tokenizer.h"

#define ENG_STREAM_STOP_SEQS_MAX 8	/* = PROTO_STOP_SEQ_MAX */
#define ENG_STREAM_STOP_SEQ_BYTES_MAX 64 /* longest stop sequence accepted */
#define ENG_STREAM_STOP_IDS_MAX 64	/* = PROTO_STOP_TOKENS_MAX */
#define ENG_STREAM_EOS_MAX 4		/* = ENG_EOS_MAX (core/model.h) */
#define ENG_STREAM_CHUNK_IDS_MAX 32	/* = DP_RESP_TOKENS_MAX */
#define ENG_STREAM_CHUNK_TEXT_MAX 304	/* = DP_RESP_TEXT_MAX */
/* Text pending between chunks: less than a chunk, the held-back
 * stop-sequence tail, and what one push adds at most (a detokenizer output
 * and, when it finishes the stream, the detokenizer's flush). */
#define ENG_STREAM_TEXT_BUF 1536
/* Largest eng_tok_detok_bytes_max() a stream accepts (init: -E2BIG):
 * 584 bytes (the fixture tokenizers need 55 to 124). */
#define ENG_STREAM_DETOK_BYTES_MAX                                            \
	((ENG_STREAM_TEXT_BUF - ENG_STREAM_CHUNK_TEXT_MAX -                   \
	  ENG_STREAM_STOP_SEQ_BYTES_MAX) / 2)

/* Parameters, resolved by the scheduler from the INFER and the server's
 * defaults; copied by eng_stream_init(). */
struct eng_stream_params {
	enum proto_stream mode;		/* granularity */
	uint32_t every_k;		/* EVERY_K: tokens per chunk */
	uint32_t max_tokens;		/* finish LENGTH after this many; 0: no
					   limit here (the scheduler resolves
					   INFER's 0 to its default first) */
	uint32_t min_tokens;		/* no stop/EOS/stop sequence before */
	uint32_t eos_id;		/* ENG_TOK_NONE: none */
	bool ignore_eos;		/* PROTO_INFER_IGNORE_EOS */
	unsigned detok_flags;		/* ENG_DETOK_*: CONTINUE when the
					   output continues a text prompt,
					   SKIP_SPECIAL to drop special tokens */
	const uint32_t *stop_ids;	/* [n_stop_ids], copied */
	uint32_t n_stop_ids;		/* <= ENG_STREAM_STOP_IDS_MAX */
	const char *stop_seqs[ENG_STREAM_STOP_SEQS_MAX]; /* UTF-8, copied */
	uint32_t stop_seq_lens[ENG_STREAM_STOP_SEQS_MAX]; /* 1 .. 64 bytes */
	uint32_t n_stop_seqs;		/* <= ENG_STREAM_STOP_SEQS_MAX */
	/* More end-of-sequence ids besides eos_id (a model may have several:
	 * Llama-3 instruct ends turns with <|eot_id|> and text with
	 * <|end_of_text|>; pass the model's cfg.eos_ids here).  They end the
	 * stream with PROTO_FINISH_EOS and obey ignore_eos and min_tokens
	 * exactly as eos_id does.  Copied. */
	const uint32_t *eos_ids;	/* [n_eos_ids] */
	uint32_t n_eos_ids;		/* <= ENG_STREAM_EOS_MAX */
	/* Ids per chunk at most, 1..ENG_STREAM_CHUNK_IDS_MAX; 0 means
	 * ENG_STREAM_CHUNK_IDS_MAX.  A request with logprobs sets it to what
	 * one response record holds with its logprobs
	 * (dataplane/ring.h dp_resp_lp_tokens_max()).  So at most this many
	 * ids are ever pending: the caller may keep per-token data in a ring
	 * of this many entries indexed by completion index. */
	uint32_t ids_max;
};

/* The state (fields private; sized here so it can live in a slot). */
struct eng_stream {
	struct eng_detok detok;
	uint8_t mode;			/* enum proto_stream */
	uint8_t finished;		/* a finish reason is set */
	uint8_t finish_reason;		/* enum proto_finish */
	uint8_t first_sent;		/* the FIRST chunk was taken */
	uint8_t last_taken;		/* the LAST chunk was taken */
	uint8_t ignore_eos;
	uint8_t has_tok;		/* a tokenizer was given at init */
	uint8_t n_stop_seqs;
	uint32_t every_k;
	uint32_t max_tokens;
	uint32_t min_tokens;
	uint32_t eos_id;
	uint32_t n_stop_ids;
	uint32_t n_pushed;		/* tokens pushed */
	uint32_t first_index;		/* completion index of pending ids[0] */
	uint16_t n_ids;			/* pending ids */
	uint16_t text_len;		/* pending text bytes */
	uint16_t hold_len;		/* held-back stop-sequence tail */
	uint16_t scan;			/* sentence scan position in text */
	uint16_t sent_cut;		/* pending ids up to a sentence cut; 0 none */
	uint16_t ids_max;		/* ids per chunk at most */
	uint16_t reserved0;
	uint32_t n_eos_ids;
	uint32_t eos_ids[ENG_STREAM_EOS_MAX];
	uint8_t stop_seq_lens[ENG_STREAM_STOP_SEQS_MAX];
	uint16_t id_text_end[ENG_STREAM_CHUNK_IDS_MAX]; /* text_len after id i */
	uint32_t ids[ENG_STREAM_CHUNK_IDS_MAX];
	uint32_t stop_ids[ENG_STREAM_STOP_IDS_MAX];
	char stop_seqs[ENG_STREAM_STOP_SEQS_MAX][ENG_STREAM_STOP_SEQ_BYTES_MAX];
	char hold[ENG_STREAM_STOP_SEQ_BYTES_MAX];
	char text[ENG_STREAM_TEXT_BUF];
};

/*
 * eng_stream_init() - start the output stream of one request.
 * @tok: the model's tokenizer, or NULL for a request without text (ids
 *       only: no stop sequences then).
 * Return: 0; -EINVAL (NULL @st/@p, bad mode, stop sequence empty or not
 * valid UTF-8, stop sequences without a tokenizer, too many stop ids,
 * stop sequences or EOS ids); -E2BIG (a stop sequence over ENG_STREAM_STOP_SEQ_BYTES_MAX
 * bytes, or a tokenizer whose eng_tok_detok_bytes_max() exceeds
 * ENG_STREAM_DETOK_BYTES_MAX).  The scheduler rejects the request with
 * PROTO_E_INVALID_PARAM on these.
 */
int eng_stream_init(struct eng_stream *st, const struct eng_tokenizer *tok,
		    const struct eng_stream_params *p);

/*
 * eng_stream_push() - one sampled token.
 * @tok:   the same tokenizer as at init (or NULL if it was NULL).
 * @ready: set to whether a chunk is ready to take (may be NULL).
 * Return: 0 (go on), 1 (the request finished with this token: see
 * eng_stream_finish_reason(); take the chunks, the last one has LAST), or
 * -EBUSY (a ready chunk was not taken), -EALREADY (already finished),
 * -EINVAL (NULL st); the state is unchanged on error.
 */
int eng_stream_push(struct eng_stream *st, const struct eng_tokenizer *tok,
		    uint32_t id, bool *ready);

/*
 * eng_stream_finish() - end the request for a reason decided outside the
 * stream (PROTO_FINISH_CANCELLED, _DEADLINE, _DRAINED, _ERROR, or _LENGTH
 * when the context is full): release the held-back text, flush the
 * detokenizer, and make the LAST chunk ready.
 * Return: 0; -EALREADY when the stream had already finished (its reason
 * stays); -EINVAL (NULL, reason out of range).
 */
int eng_stream_finish(struct eng_stream *st, const struct eng_tokenizer *tok,
		      enum proto_finish reason);

/* eng_stream_ready() - whether a chunk is ready to take. */
bool eng_stream_ready(const struct eng_stream *st);

/*
 * eng_stream_take_chunk() - take the next ready chunk, written straight
 * into a response record.
 * @ids:         [ENG_STREAM_CHUNK_IDS_MAX] (dp_resp.tokens)
 * @n_ids:       ids written (dp_resp.n_tokens)
 * @text:        [ENG_STREAM_CHUNK_TEXT_MAX] (dp_resp.text), not NUL-ended
 * @text_len:    bytes written (dp_resp.text_len)
 * @flags:       PROTO_TOK_* (dp_resp.u.tokens.flags)
 * @first_index: completion index of ids[0] (u.tokens.first_index); with no
 *               ids, the index the next id will have.
 * Return: 1 with a chunk written, 0 when none is ready (outputs untouched).
 */
int eng_stream_take_chunk(struct eng_stream *st, uint32_t *ids,
			  uint16_t *n_ids, char *text, uint16_t *text_len,
			  uint16_t *flags, uint32_t *first_index);

/* Finish reason (enum proto_finish) once finished, else -1. */
int eng_stream_finish_reason(const struct eng_stream *st);

/* Tokens pushed so far (completion_tokens). */
static inline uint32_t eng_stream_tokens(const struct eng_stream *st)
{
	return st->n_pushed;
}

/* True once the LAST chunk has been taken. */
static inline bool eng_stream_done(const struct eng_stream *st)
{
	return st->last_taken;
}

#endif /* VELO_ENG_STREAM_H */
