// SPDX-License-Identifier: MIT
/*
 * stream.c — see stream.h.  Runs on the scheduler thread once per sampled
 * token; bounded work per push: the detokenizer, then a stop-sequence scan
 * of at most (held tail + new text) x stop sequences x 64 bytes, then a
 * sentence scan of the new text.  Nothing allocates; the state holds no
 * pointers.  Measured on the 2-core development VM, llama3 fixture
 * tokenizer, English text, push + take per token: 130 ns without stop
 * sequences, 276 ns with 8 (token mode), 230 ns with 8 (sentence mode).
 *
 * Pending text layout in st->text: [0, text_len) is final (released) text
 * not yet taken; the stop-sequence tail lives in st->hold.  While a push
 * works, it appends the hold and the new text after text_len and then
 * decides how much of that region is released.
 */
#include <errno.h>
#include <string.h>

#include <velo/codec.h>
#include <velo/compiler.h>

#include "../../dataplane/ring.h"
#include "model.h"
#include "stream.h"
#include "utf8.h"

_Static_assert(ENG_STREAM_STOP_SEQS_MAX == PROTO_STOP_SEQ_MAX, "stop seqs");
_Static_assert(ENG_STREAM_STOP_IDS_MAX == PROTO_STOP_TOKENS_MAX, "stop ids");
_Static_assert(ENG_STREAM_CHUNK_IDS_MAX == DP_RESP_TOKENS_MAX, "chunk ids");
_Static_assert(ENG_STREAM_CHUNK_TEXT_MAX == DP_RESP_TEXT_MAX, "chunk text");
_Static_assert(ENG_STREAM_EOS_MAX == ENG_EOS_MAX, "eos ids");
_Static_assert(ENG_STREAM_STOP_SEQ_BYTES_MAX <= 255, "lens fit a byte");
_Static_assert(ENG_STREAM_TEXT_BUF <= UINT16_MAX, "text offsets fit 16 bits");
_Static_assert(ENG_STREAM_DETOK_BYTES_MAX >= 128, "room for real tokenizers");

/* The tokenizer is optional (CONFIG_ENGINE_TOKENIZER): without it a stream
 * carries ids only. */
#ifdef CONFIG_ENGINE_TOKENIZER
static ssize_t detok_push(const struct eng_tokenizer *tok, struct eng_detok *d,
			  uint32_t id, char *out, size_t cap)
{
	return eng_detok_push(tok, d, id, out, cap);
}

static ssize_t detok_flush(const struct eng_tokenizer *tok, struct eng_detok *d,
			   char *out, size_t cap)
{
	return eng_detok_flush(tok, d, out, cap);
}

static int detok_init(const struct eng_tokenizer *tok, struct eng_detok *d,
		      unsigned flags)
{
	if (eng_tok_detok_bytes_max(tok) > ENG_STREAM_DETOK_BYTES_MAX)
		return -E2BIG;
	eng_detok_init(tok, d, flags);
	return 0;
}
#else
static ssize_t detok_push(const struct eng_tokenizer *tok, struct eng_detok *d,
			  uint32_t id, char *out, size_t cap)
{
	return 0;
}

static ssize_t detok_flush(const struct eng_tokenizer *tok, struct eng_detok *d,
			   char *out, size_t cap)
{
	return 0;
}

static int detok_init(const struct eng_tokenizer *tok, struct eng_detok *d,
		      unsigned flags)
{
	return -EINVAL;
}
#endif

/* ---- init ---------------------------------------------------------------- */

int eng_stream_init(struct eng_stream *st, const struct eng_tokenizer *tok,
		    const struct eng_stream_params *p)
{
	int rc;

	if (!st || !p || p->n_stop_ids > ENG_STREAM_STOP_IDS_MAX ||
	    (p->n_stop_ids && !p->stop_ids) ||
	    p->n_stop_seqs > ENG_STREAM_STOP_SEQS_MAX ||
	    p->n_eos_ids > ENG_STREAM_EOS_MAX || (p->n_eos_ids && !p->eos_ids) ||
	    (p->n_stop_seqs && !tok) ||
	    (p->mode != PROTO_STREAM_TOKEN && p->mode != PROTO_STREAM_EVERY_K &&
	     p->mode != PROTO_STREAM_SENTENCE))
		return -EINVAL;
	for (uint32_t i = 0; i < p->n_stop_seqs; i++) {
		if (!p->stop_seqs[i] || p->stop_seq_lens[i] == 0)
			return -EINVAL;
		if (p->stop_seq_lens[i] > ENG_STREAM_STOP_SEQ_BYTES_MAX)
			return -E2BIG;
		/* Valid UTF-8 starts on a code point, so a match or a held
		 * tail never splits one. */
		if (!eng_utf8_valid(p->stop_seqs[i], p->stop_seq_lens[i]))
			return -EINVAL;
	}
	memset(st, 0, offsetof(struct eng_stream, stop_seq_lens));
	if (tok) {
		rc = detok_init(tok, &st->detok, p->detok_flags);
		if (rc)
			return rc;
		st->has_tok = 1;
	}
	st->mode = (uint8_t)p->mode;
	st->ids_max = p->ids_max && p->ids_max < ENG_STREAM_CHUNK_IDS_MAX ?
		      (uint16_t)p->ids_max : ENG_STREAM_CHUNK_IDS_MAX;
	st->every_k = p->every_k ? p->every_k : 1;
	if (st->every_k > st->ids_max)
		st->every_k = st->ids_max;
	st->max_tokens = p->max_tokens;
	st->min_tokens = p->min_tokens;
	st->eos_id = p->eos_id;
	st->ignore_eos = p->ignore_eos;
	st->n_eos_ids = p->n_eos_ids;
	if (p->n_eos_ids)
		memcpy(st->eos_ids, p->eos_ids, p->n_eos_ids * sizeof(*p->eos_ids));
	st->n_stop_ids = p->n_stop_ids;
	if (p->n_stop_ids)
		memcpy(st->stop_ids, p->stop_ids,
		       p->n_stop_ids * sizeof(*p->stop_ids));
	st->n_stop_seqs = (uint8_t)p->n_stop_seqs;
	for (uint32_t i = 0; i < p->n_stop_seqs; i++) {
		st->stop_seq_lens[i] = (uint8_t)p->stop_seq_lens[i];
		memcpy(st->stop_seqs[i], p->stop_seqs[i], p->stop_seq_lens[i]);
	}
	return 0;
}

/* ---- stop sequences --------------------------------------------------------- */

/*
 * The region text[w0, w1) holds the held tail followed by new text.  With
 * @match, find the earliest complete stop sequence in it: cut the text
 * there and return true.  Otherwise release all but the longest suffix that
 * is a proper prefix of a stop sequence, which goes back to st->hold.
 * Bounded: (w1 - w0) x stop seqs x 64 byte compares.
 */
static bool stop_scan(struct eng_stream *st, uint32_t w0, uint32_t w1,
		      bool match)
{
	uint32_t q;

	if (!st->n_stop_seqs) {
		st->text_len = (uint16_t)w1;
		return false;
	}
	if (match) {
		for (uint32_t p = w0; p < w1; p++) {
			for (uint32_t k = 0; k < st->n_stop_seqs; k++) {
				uint32_t l = st->stop_seq_lens[k];

				if (p + l <= w1 &&
				    !memcmp(st->text + p, st->stop_seqs[k], l)) {
					st->text_len = (uint16_t)p;
					st->hold_len = 0;
					return true;
				}
			}
		}
	}
	/* Earliest start whose rest could still grow into a stop sequence. */
	q = w1 > w0 + ENG_STREAM_STOP_SEQ_BYTES_MAX - 1
		    ? w1 - (ENG_STREAM_STOP_SEQ_BYTES_MAX - 1)
		    : w0;
	for (; q < w1; q++) {
		uint32_t rest = w1 - q, k;

		for (k = 0; k < st->n_stop_seqs; k++)
			if (rest < st->stop_seq_lens[k] &&
			    !memcmp(st->text + q, st->stop_seqs[k], rest))
				break;
		if (k < st->n_stop_seqs)
			break;
	}
	st->hold_len = (uint16_t)(w1 - q);
	memcpy(st->hold, st->text + q, st->hold_len);
	st->text_len = (uint16_t)q;
	return false;
}

/* ---- sentences -------------------------------------------------------------- */

static bool is_ws(char c)
{
	return c == ' ' || c == '\n';
}

static bool is_term(char c)
{
	return c == '.' || c == '!' || c == '?';
}

/* Find the first sentence end in the pending text from st->scan on and
 * set st->sent_cut to the first token boundary at or after it.  A '.'
 * whose next character has not arrived yet stops the scan there. */
static void sentence_scan(struct eng_stream *st)
{
	uint32_t i, end = 0;

	for (i = st->scan; i < st->text_len; i++) {
		char c = st->text[i];

		if (c == '\n') {
			end = i + 1;
			break;
		}
		if (is_term(c)) {
			if (i + 1 == st->text_len)
				break;		/* undecided */
			if (is_ws(st->text[i + 1])) {
				end = i + 1;
				break;
			}
		}
	}
	st->scan = (uint16_t)i;
	if (!end)
		return;
	for (uint32_t k = 0; k < st->n_ids; k++) {
		if (st->id_text_end[k] >= end) {
			st->sent_cut = (uint16_t)(k + 1);
			return;
		}
	}
	/* The end lies in text no pending id ends after (text released at
	 * the finish): the LAST chunk takes it. */
}

/* ---- push / finish ---------------------------------------------------------- */

static bool is_stop_id(const struct eng_stream *st, uint32_t id)
{
	for (uint32_t i = 0; i < st->n_stop_ids; i++)
		if (st->stop_ids[i] == id)
			return true;
	return false;
}

static bool is_eos(const struct eng_stream *st, uint32_t id)
{
	if (id == st->eos_id && id != ENG_TOK_NONE)
		return true;
	for (uint32_t i = 0; i < st->n_eos_ids; i++)
		if (st->eos_ids[i] == id)
			return true;
	return false;
}

/* End of stream: release the held tail and the detokenizer's held bytes
 * (matching stop sequences on them once more when @match), then mark it
 * finished with @reason.  Return: whether a stop sequence matched. */
static bool finish_text(struct eng_stream *st, const struct eng_tokenizer *tok,
			int reason, bool match)
{
	bool matched;
	uint32_t w0 = st->text_len, w1;
	ssize_t n = 0;

	memcpy(st->text + w0, st->hold, st->hold_len);
	w1 = w0 + st->hold_len;
	st->hold_len = 0;
	if (st->has_tok)
		n = detok_flush(tok, &st->detok, st->text + w1,
				ENG_STREAM_TEXT_BUF - w1);
	VERIFY(n >= 0);		/* the buffer bound of stream.h */
	w1 += (uint32_t)n;
	matched = stop_scan(st, w0, w1, match);
	/* No more text can come: the held tail is final. */
	memmove(st->text + st->text_len, st->hold, st->hold_len);
	st->text_len = (uint16_t)(st->text_len + st->hold_len);
	st->hold_len = 0;
	st->finished = 1;
	st->finish_reason = (uint8_t)reason;
	return matched;
}

int eng_stream_push(struct eng_stream *st, const struct eng_tokenizer *tok,
		    uint32_t id, bool *ready)
{
	bool allowed, matched = false;
	uint32_t w0, w1;
	int reason = -1;
	ssize_t n = 0;

	if (ready)
		*ready = false;
	if (unlikely(!st))
		return -EINVAL;
	if (unlikely(st->finished))
		return -EALREADY;
	if (unlikely(eng_stream_ready(st))) {
		if (ready)
			*ready = true;
		return -EBUSY;
	}
	allowed = st->n_pushed + 1 >= st->min_tokens;
	if (allowed && is_stop_id(st, id))
		reason = PROTO_FINISH_STOP_TOKEN;
	else if (allowed && !st->ignore_eos && is_eos(st, id))
		reason = PROTO_FINISH_EOS;

	/* Append the held tail, then this token's text, after the pending
	 * text; the detokenizer leaves its state alone on -ENOSPC. */
	w0 = st->text_len;
	w1 = w0 + st->hold_len;
	if (reason < 0 && st->has_tok) {
		n = detok_push(tok, &st->detok, id, st->text + w1,
			       ENG_STREAM_TEXT_BUF - w1);
		if (unlikely(n < 0))
			return (int)n;
	}
	memmove(st->text + w0, st->hold, st->hold_len);
	w1 += (uint32_t)n;
	st->n_pushed++;
	if (reason < 0)
		matched = stop_scan(st, w0, w1, allowed);
	else
		st->text_len = (uint16_t)w1;	/* tail rejoins the text */
	if (reason >= 0 || matched)
		st->hold_len = 0;

	st->ids[st->n_ids] = id;
	st->id_text_end[st->n_ids] = st->text_len;
	st->n_ids++;

	if (matched) {
		st->finished = 1;
		st->finish_reason = PROTO_FINISH_STOP_SEQUENCE;
	} else if (reason >= 0) {
		/* The flush may still complete a stop sequence: the text is
		 * cut before it, the stop token or EOS stays the reason. */
		finish_text(st, tok, reason, allowed);
	} else if (st->max_tokens && st->n_pushed >= st->max_tokens) {
		/* A stop sequence completed by the flush wins over LENGTH. */
		if (finish_text(st, tok, PROTO_FINISH_LENGTH, allowed))
			st->finish_reason = PROTO_FINISH_STOP_SEQUENCE;
	}
	if (!st->finished && st->mode == PROTO_STREAM_SENTENCE && !st->sent_cut)
		sentence_scan(st);
	if (ready)
		*ready = eng_stream_ready(st);
	return st->finished ? 1 : 0;
}

int eng_stream_finish(struct eng_stream *st, const struct eng_tokenizer *tok,
		      enum proto_finish reason)
{
	if (!st || (unsigned)reason > PROTO_FINISH_ERROR)
		return -EINVAL;
	if (st->finished)
		return -EALREADY;
	/* The external reason stays even if the flush completes a stop
	 * sequence (the text is still cut before it). */
	finish_text(st, tok, (int)reason, st->n_pushed >= st->min_tokens);
	return 0;
}

int eng_stream_finish_reason(const struct eng_stream *st)
{
	return st->finished ? st->finish_reason : -1;
}

bool eng_stream_ready(const struct eng_stream *st)
{
	if (st->last_taken)
		return false;
	if (st->finished || st->n_ids >= st->ids_max ||
	    st->text_len >= ENG_STREAM_CHUNK_TEXT_MAX)
		return true;
	switch (st->mode) {
	case PROTO_STREAM_TOKEN:
		return st->n_ids >= 1;
	case PROTO_STREAM_EVERY_K:
		return st->n_ids >= st->every_k;
	default:
		return st->sent_cut > 0;
	}
}

/* ---- chunks -------------------------------------------------------------- */

/* Does the chunk text[0, t) end a sentence (stream.h's rule)? */
static bool chunk_ends_sentence(const struct eng_stream *st, uint32_t t)
{
	uint32_t i = t;

	while (i > 0 && is_ws(st->text[i - 1])) {
		if (st->text[i - 1] == '\n')
			return true;
		i--;
	}
	if (i == 0 || !is_term(st->text[i - 1]))
		return false;
	if (i < t)
		return true;
	if (t < st->text_len)
		return is_ws(st->text[t]);
	return st->finished;
}

int eng_stream_take_chunk(struct eng_stream *st, uint32_t *ids,
			  uint16_t *n_ids, char *text, uint16_t *text_len,
			  uint16_t *flags, uint32_t *first_index)
{
	uint32_t k, t;
	uint16_t fl = 0;

	if (!eng_stream_ready(st))
		return 0;
	/* How many ids this chunk takes, by priority. */
	if (st->finished)
		k = st->n_ids;
	else if (st->mode == PROTO_STREAM_SENTENCE && st->sent_cut)
		k = st->sent_cut;
	else if (st->mode == PROTO_STREAM_EVERY_K && st->n_ids >= st->every_k)
		k = st->every_k;
	else
		k = st->n_ids;
	if (k > st->ids_max)
		k = st->ids_max;
	t = k == st->n_ids ? st->text_len : (k ? st->id_text_end[k - 1] : 0);
	if (t > ENG_STREAM_CHUNK_TEXT_MAX) {
		/* Too much text: cut at a code point boundary; ids whose text
		 * does not end in this chunk wait for the next one. */
		t = ENG_STREAM_CHUNK_TEXT_MAX;
		while (t > 0 && ((uint8_t)st->text[t] & 0xc0) == 0x80)
			t--;
		while (k > 0 && st->id_text_end[k - 1] > t)
			k--;
	}

	if (!st->first_sent)
		fl |= PROTO_TOK_FIRST;
	if (t && chunk_ends_sentence(st, t))
		fl |= PROTO_TOK_SENTENCE;
	if (st->finished && k == st->n_ids && t == st->text_len) {
		fl |= PROTO_TOK_LAST;
		st->last_taken = 1;
	}
	memcpy(ids, st->ids, k * sizeof(*ids));
	memcpy(text, st->text, t);
	*n_ids = (uint16_t)k;
	*text_len = (uint16_t)t;
	*flags = fl;
	*first_index = st->first_index;

	/* Shift what stays. */
	st->first_sent = 1;
	st->first_index += k;
	st->n_ids = (uint16_t)(st->n_ids - k);
	for (uint32_t i = 0; i < st->n_ids; i++) {
		st->ids[i] = st->ids[k + i];
		st->id_text_end[i] = (uint16_t)(st->id_text_end[k + i] - t);
	}
	st->text_len = (uint16_t)(st->text_len - t);
	memmove(st->text, st->text + t, st->text_len);
	st->scan = 0;
	st->sent_cut = 0;
	if (!st->finished && st->mode == PROTO_STREAM_SENTENCE)
		sentence_scan(st);
	return 1;
}
