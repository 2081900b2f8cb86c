/* SPDX-License-Identifier: MIT */
/*
 * tokenizer.h — Hugging Face compatible tokenizers: text to token ids and
 * back, for the byte-level BPE of GPT-2 / Llama-3 / Qwen2 and the
 * SentencePiece-style BPE (the U+2581 "▁" convention, byte fallback) of
 * Llama-2 / Mistral / TinyLlama.
 *
 * Input is the tokenizer section of a model image ("VTOK" blob: the model's
 * tokenizer.json and tokenizer_config.json, see tests/fixtures and
 * docs/model-format.md).  What the tokenizer does is driven by that JSON
 * (normalizer, pre_tokenizer, model, post_processor, decoder, added_tokens),
 * never by the model's name.  The JSON is parsed once in eng_tok_load(); all
 * tables and all scratch memory for encoding are built there, so that
 * eng_tok_encode(), eng_tok_decode() and the streaming detokenizer never
 * allocate.
 *
 * Threads: a struct eng_tokenizer owns one set of scratch buffers, so
 * eng_tok_encode() and eng_tok_decode() on one tokenizer must not run on two
 * threads at once (load one tokenizer per thread that tokenizes).  Lookups
 * (eng_tok_id, eng_tok_vocab_size...) and eng_detok_push() only read the
 * tokenizer and may run anywhere.
 *
 * Text is UTF-8.  encode() rejects invalid UTF-8 with -EILSEQ (the wire
 * protocol requires valid UTF-8, and Hugging Face's Rust strings cannot hold
 * anything else, so there is no reference behaviour to copy).
 */
#ifndef VELO_ENG_TOKENIZER_H
#define VELO_ENG_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define ENG_TOK_MAGIC 0x4b4f5456u	/* "VTOK" little-endian */
#define ENG_TOK_VERSION 1u
#define ENG_TOK_NONE UINT32_MAX		/* "no such token" */

/* Header of the tokenizer blob inside a model image, followed by
 * tokenizer.json then tokenizer_config.json bytes (no NULs). */
struct eng_tok_blob_hdr {
	uint32_t magic;			/* ENG_TOK_MAGIC */
	uint32_t version;		/* ENG_TOK_VERSION */
	uint32_t tokenizer_json_len;
	uint32_t tokenizer_config_json_len;
};
_Static_assert(sizeof(struct eng_tok_blob_hdr) == 16, "VTOK header is 16 bytes");

struct eng_tokenizer;

/*
 * eng_tok_load() - parse a tokenizer blob and build every table.
 * @blob, @len:   the VTOK blob (header + tokenizer.json + tokenizer_config.json);
 *                not referenced after return.
 * @text_bytes_max: budget: the longest text eng_tok_encode() accepts, in
 *                bytes; 0 takes CONFIG_ENGINE_TOK_TEXT_BYTES_MAX.  Scratch
 *                memory is about 130 bytes per budget byte (tokenizer.c).
 * @err, @errlen: receives a one-line reason on failure (may be NULL/0).
 *
 * Return: the tokenizer, or NULL with errno set: EINVAL (bad blob header,
 * bad JSON, a component or option this implementation does not support:
 * the message names it), ENOMEM, E2BIG (a table would exceed 2^31 entries).
 */
struct eng_tokenizer *eng_tok_load(const void *blob, size_t len,
				   size_t text_bytes_max, char *err,
				   size_t errlen);

/* eng_tok_free() - release everything eng_tok_load() allocated.  NULL is a no-op. */
void eng_tok_free(struct eng_tokenizer *tok);

/*
 * eng_tok_encode() - text to token ids, as Hugging Face's
 * tokenizer.encode(text, add_special_tokens=@add_special).
 * @text, @len:   UTF-8 text, not NUL-terminated (NUL bytes are text).
 * @add_special:  apply the post-processor template (BOS and friends).
 * @ids, @cap:    output array and its capacity in ids.
 * @n:            receives the number of ids written; on -ENOSPC the number
 *                of ids the whole text needs.
 *
 * Special and added tokens written in the text ("<|eot_id|>") are
 * recognised and become their ids, as Hugging Face does.
 *
 * Return: 0; -EINVAL (NULL argument); -EILSEQ (text is not valid UTF-8);
 * -E2BIG (text longer than the load budget, or a normalised text or word
 * over the scratch bounds); -ENOSPC (more than @cap ids, the first @cap are
 * written); -ERANGE (the pre-tokenizer regex hit its match limit on
 * adversarial input).  Never allocates.
 */
int eng_tok_encode(struct eng_tokenizer *tok, const char *text, size_t len,
		   bool add_special, uint32_t *ids, size_t cap, size_t *n);

/*
 * eng_tok_decode() - token ids to text, as Hugging Face's
 * tokenizer.decode(ids, skip_special_tokens=@skip_special) including
 * transformers' clean_up_tokenization_spaces when tokenizer_config.json asks
 * for it.  Ids that are not in the vocabulary are skipped (as HF does) and
 * counted.  Invalid UTF-8 produced by byte tokens becomes U+FFFD exactly as
 * HF does it (byte-level: one per maximal invalid subsequence; byte
 * fallback: one per byte of an invalid run of byte tokens).
 * @out, @cap:    output buffer; always NUL-terminated on success.
 *
 * Return: the length written (without the NUL), -EINVAL (NULL argument), or
 * -ENOSPC (@cap too small; the output is then truncated garbage).
 */
ssize_t eng_tok_decode(struct eng_tokenizer *tok, const uint32_t *ids,
		       size_t n, bool skip_special, char *out, size_t cap);

/*
 * Streaming detokenizer: feed generated ids one at a time, get back the
 * UTF-8 text that is now final.  The state is a fixed-size struct that lives
 * inside the request; nothing is allocated.
 *
 * Rules:
 * - Only whole code points are emitted; the bytes of a partial one are held
 *   until the token that completes it.
 * - Bytes that can never complete a code point become U+FFFD (one per
 *   maximal invalid subsequence, as Rust's from_utf8_lossy), so the stream
 *   is always valid UTF-8, whatever the ids.  For byte-fallback tokenizers
 *   the stream emits each complete code point at once; decode() follows HF,
 *   which turns a whole run of byte tokens into U+FFFDs when any byte of the
 *   run is invalid, so the two differ only on such invalid runs.
 * - The decoder's rules for the start of the text (SentencePiece: the first
 *   token's "▁" is not a space; Strip decoders) apply only without
 *   ENG_DETOK_CONTINUE; with it the stream continues text that precedes it
 *   (the prompt), so " world" keeps its space.
 * - clean_up_tokenization_spaces (" ." -> ".") is applied by holding back a
 *   space until the next characters show whether it goes; the stream
 *   applies the replacements in one left-to-right pass, which equals
 *   transformers' chain of str.replace() except on contrived overlaps
 *   ("  ' m").
 * - Concatenated pushes and the flush equal eng_tok_decode() of the same ids
 *   under the rules above (tested on every fixture string).
 */
#define ENG_DETOK_HOLD_MAX 24		/* held-back bytes, bounded */

struct eng_detok {
	uint8_t hold[ENG_DETOK_HOLD_MAX]; /* complete text held back (cleanup, strip) */
	uint8_t part[4];		/* bytes of an incomplete code point */
	uint8_t hold_len;
	uint8_t part_len;
	uint8_t part_need;		/* total length of the code point in part[] */
	uint8_t strip_left;		/* leading strip chars still to drop */
	uint8_t flags;			/* ENG_DETOK_* and private bits */
	uint8_t started;		/* a token has been pushed */
	uint8_t strip_held;		/* trailing strip chars held back */
	uint8_t pad_;
	uint32_t n_tokens;		/* tokens pushed (unknown ids excluded) */
};
_Static_assert(sizeof(struct eng_detok) <= 48, "detok state stays small");

#define ENG_DETOK_CONTINUE 0x01u	/* stream continues earlier text */
#define ENG_DETOK_SKIP_SPECIAL 0x02u	/* drop special tokens (skip_special_tokens) */

/* eng_detok_init() - start a stream; @flags: ENG_DETOK_*. */
void eng_detok_init(const struct eng_tokenizer *tok, struct eng_detok *st,
		    unsigned flags);

/*
 * eng_detok_push() - add one token id to the stream.
 * @out, @cap: receives the bytes that became final (not NUL-terminated).
 *             eng_tok_detok_bytes_max() is always enough.
 * Return: number of bytes written (0 is common: a partial code point or a
 * held-back space), or -ENOSPC with the state unchanged.  Unknown ids are
 * skipped (return 0) and counted.
 */
ssize_t eng_detok_push(const struct eng_tokenizer *tok, struct eng_detok *st,
		       uint32_t id, char *out, size_t cap);

/*
 * eng_detok_flush() - end of stream: emit what was held back (a pending
 * partial code point becomes U+FFFD; trailing strip rules apply).
 * Return: bytes written or -ENOSPC (state unchanged).
 */
ssize_t eng_detok_flush(const struct eng_tokenizer *tok, struct eng_detok *st,
			char *out, size_t cap);

/* Largest output of one eng_detok_push() or eng_detok_flush(). */
size_t eng_tok_detok_bytes_max(const struct eng_tokenizer *tok);

/*
 * eng_tok_id() - id of a token given its text ("<|eot_id|>", "<s>"),
 * searching added tokens first, then the model vocabulary.
 * Return: the id, or ENG_TOK_NONE.
 */
uint32_t eng_tok_id(const struct eng_tokenizer *tok, const char *token);

/*
 * eng_tok_token() - the vocabulary text of @id (raw form: "Ġthe", "▁the",
 * "<0x0A>"), not NUL-terminated.  Return: pointer, *len set; NULL if @id is
 * not a token.
 */
const char *eng_tok_token(const struct eng_tokenizer *tok, uint32_t id,
			  size_t *len);

/* Ids are below this (largest id + 1, added tokens included). */
uint32_t eng_tok_vocab_size(const struct eng_tokenizer *tok);
/* BOS/EOS from tokenizer_config.json (bos_token, eos_token); ENG_TOK_NONE if none. */
uint32_t eng_tok_bos_id(const struct eng_tokenizer *tok);
uint32_t eng_tok_eos_id(const struct eng_tokenizer *tok);
/* True for special added tokens (those skip_special_tokens drops). */
bool eng_tok_is_special(const struct eng_tokenizer *tok, uint32_t id);
/* The chat_template string of tokenizer_config.json, or NULL. */
const char *eng_tok_chat_template(const struct eng_tokenizer *tok);

/* Counters of one tokenizer (also registered as block "tok"). */
#define foreach_eng_tok_counter(X)                                            \
	X(encode_calls, "eng_tok_encode calls")                               \
	X(encode_bytes, "bytes of text encoded")                              \
	X(encode_bad_utf8, "texts rejected: invalid UTF-8")                   \
	X(encode_too_big, "texts rejected: over the text or word budget")     \
	X(encode_nospc, "encodes whose output did not fit")                   \
	X(encode_regex_limit, "encodes stopped by the regex match limit")     \
	X(encode_unk, "unknown-token ids produced")                           \
	X(nfc_skipped, "non-ASCII texts not NFC-normalised (NFC disabled)")   \
	X(decode_unknown_id, "ids skipped by decode: not in the vocabulary")  \
	X(decode_fffd, "U+FFFD emitted for bytes that never complete")

enum {
#define X(name, help) ENG_TOK_CTR_##name,
	foreach_eng_tok_counter(X)
#undef X
	ENG_TOK_CTR__COUNT
};

/* Counter array (ENG_TOK_CTR__COUNT entries) of @tok, for tests and mgmt. */
const uint64_t *eng_tok_counters(const struct eng_tokenizer *tok);

#endif /* VELO_ENG_TOKENIZER_H */
