/* SPDX-License-Identifier: MIT */
/*
 * tokenizer_priv.h — internals shared by tokenizer.c (load), tokenizer_encode.c
 * and tokenizer_decode.c.  Not a public header.
 */
#ifndef VELO_ENG_TOKENIZER_PRIV_H
#define VELO_ENG_TOKENIZER_PRIV_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <pcre2.h>
#include <stdbool.h>
#include <stdint.h>

#include "tokenizer.h"

#define TOK_STEPS_MAX 8		/* normalizer / pre-tokenizer / decoder steps */
#define TOK_TEMPLATE_MAX 8	/* ids added around the text by the post-processor */
#define TOK_NONE UINT32_MAX

/* A byte range of the tokenizer's string arena. */
struct tok_span {
	uint32_t off;
	uint32_t len;		/* TOK_NONE: no such token (a hole in the ids) */
};

enum tok_norm_kind {
	NORM_PREPEND,		/* a: text */
	NORM_REPLACE,		/* re or a: pattern, b: content */
	NORM_NFC, NORM_NFD, NORM_NFKC, NORM_NFKD,
	NORM_STRIP,		/* left, right */
};

struct tok_norm {
	enum tok_norm_kind kind;
	pcre2_code *re;		/* NORM_REPLACE with a Regex pattern */
	struct tok_span a, b;	/* strings in the arena */
	bool left, right;
};

enum tok_split_behavior {
	SPLIT_REMOVED, SPLIT_ISOLATED, SPLIT_MERGED_PREV, SPLIT_MERGED_NEXT,
	SPLIT_CONTIGUOUS,
};

enum tok_pre_kind {
	PRE_SPLIT,		/* re, behavior, invert */
	PRE_PREFIX_SPACE,	/* ByteLevel add_prefix_space: " " unless there */
	PRE_BYTEMAP,		/* ByteLevel: bytes to the GPT-2 printable chars */
	PRE_METASPACE,		/* repl, prepend, split */
};

enum tok_prepend { PREPEND_ALWAYS, PREPEND_FIRST, PREPEND_NEVER };

struct tok_pre {
	enum tok_pre_kind kind;
	pcre2_code *re;
	enum tok_split_behavior behavior;
	bool invert;
	bool add_prefix_space;
	enum tok_prepend prepend;
	bool split;
	char repl[4];		/* Metaspace replacement, UTF-8 */
	uint8_t repl_len;
};

/* Added tokens: matched in the text before the model sees it. */
struct tok_added {
	uint32_t id;
	struct tok_span text;	/* content */
	struct tok_span norm;	/* content after the normalizer (normalized tokens) */
	bool special, lstrip, rstrip, single_word, normalized;
};

/* Byte trie over added-token contents; children as sibling lists. */
struct tok_trie_node {
	uint32_t child;		/* first child, 0: none (node 0 is the root) */
	uint32_t sibling;
	int32_t term;		/* index into added[], -1 */
	uint8_t byte;
};

struct tok_trie {
	struct tok_trie_node *nodes;
	uint32_t n, cap;
	uint32_t root_child[256]; /* direct table for the first byte */
};

/* Merge table entry: (left id, right id) -> (rank, merged id). */
struct tok_merge {
	uint32_t a, b;		/* a == TOK_NONE: empty slot */
	uint32_t rank;
	uint32_t id;
};

/* Per-id flags. */
#define TOKF_SPECIAL 0x01	/* special added token (skip_special drops it) */
#define TOKF_ADDED 0x02		/* an added token */
#define TOKF_BYTE 0x04		/* "<0xXX>" and the decoder has ByteFallback */
#define TOKF_FIRST 0x08		/* has a different form as the first token */

/* BPE work symbol: a doubly linked list over the chars of one word. */
struct tok_sym {
	int32_t prev, next;
	uint32_t id;
	uint32_t len;		/* bytes of the word it covers; 0: merged away */
};

struct tok_piece {
	uint32_t off, len;
	uint32_t id;		/* added token id, or TOK_NONE for text */
	uint32_t origin;	/* 1: starts at offset 0 of the original text */
};

struct eng_tokenizer {
	/* -- strings -- */
	char *arena;		/* every string: vocab, added, decoded forms */
	size_t arena_len, arena_cap;

	/* -- vocabulary -- */
	uint32_t n_ids;			/* largest id + 1 */
	struct tok_span *tok_text;	/* [n_ids] raw text of each id */
	uint8_t *tok_flags;		/* [n_ids] TOKF_* */
	struct tok_span *model_text;	/* [n_ids] model vocab text (hash keys) */
	uint32_t *vh_ids;		/* model vocab hash (open addressing) */
	uint32_t *vh_hash;
	uint32_t vh_mask;
	uint32_t char_id[2048];		/* id of single code points < 2048 */

	/* -- BPE model -- */
	struct tok_merge *mh;
	uint32_t mh_mask;
	uint32_t n_merges;
	bool byte_fallback, ignore_merges, fuse_unk;
	uint32_t unk_id;
	uint32_t bf_id[256];		/* "<0xXX>" ids, TOK_NONE if absent */

	/* -- pipeline -- */
	struct tok_norm norm[TOK_STEPS_MAX];
	unsigned n_norm;
	struct tok_pre pre[TOK_STEPS_MAX];
	unsigned n_pre;
	struct tok_added *added;
	uint32_t n_added;
	struct tok_trie trie_raw;	/* normalized == false */
	struct tok_trie trie_norm;	/* normalized == true */
	uint32_t tmpl_pre[TOK_TEMPLATE_MAX], tmpl_post[TOK_TEMPLATE_MAX];
	unsigned n_tmpl_pre, n_tmpl_post;

	/* -- decoder -- */
	struct tok_span *dec;		/* [n_ids] decoded bytes */
	struct tok_span *dec_first;	/* [n_ids] as first token (TOKF_FIRST) */
	bool dec_bytelevel;		/* bytes accumulate across tokens */
	bool dec_join_space;		/* no decoder: tokens joined by " " */
	uint32_t strip_cp;		/* Strip after Fuse: content char */
	uint8_t strip_start, strip_stop;
	bool cleanup;			/* clean_up_tokenization_spaces */
	uint32_t dec_bytes_max;		/* longest decoded token */

	/* -- config -- */
	uint32_t bos_id, eos_id;
	char *chat_template;

	/* -- regex -- */
	pcre2_general_context *gctx;
	pcre2_compile_context *cctx;
	pcre2_match_context *mctx;
	pcre2_jit_stack *jit_stack;
	pcre2_match_data *md;

	/* -- scratch, sized from the text budget at load -- */
	size_t text_max;		/* budget: input bytes */
	size_t buf_cap;			/* bytes of each text buffer */
	char *buf[2];			/* ping-pong text buffers */
	struct tok_piece *pieces[2];	/* ping-pong piece lists */
	size_t pieces_cap;
	struct tok_sym *sym;		/* BPE symbols of one word */
	size_t sym_cap;
	uint64_t *heap;			/* (rank << 32 | pos) min-heap */
	size_t heap_cap;
	int32_t *cps;			/* NFC code points (aliases sym) */
	size_t cps_cap;

	uint64_t ctr[ENG_TOK_CTR__COUNT];
	bool ctr_registered;
};

/* String arena helpers (load time). */
int tok_arena_add(struct eng_tokenizer *t, const char *s, size_t n,
		  struct tok_span *out);
static inline const char *tok_str(const struct eng_tokenizer *t,
				  struct tok_span s)
{
	return t->arena + s.off;
}

/* Model vocab lookup: id of the token whose raw text is @s, or TOK_NONE. */
uint32_t tok_vocab_find(const struct eng_tokenizer *t, const char *s, size_t n);

/* Merge lookup: rank and merged id of (a, b); false if no such merge. */
static inline bool tok_merge_find(const struct eng_tokenizer *t, uint32_t a,
				  uint32_t b, uint32_t *rank, uint32_t *id)
{
	uint64_t h = ((uint64_t)a << 32 | b) * 0x9e3779b97f4a7c15ull;
	uint32_t i = (uint32_t)(h >> 32) & t->mh_mask;

	for (;;) {
		const struct tok_merge *m = &t->mh[i];
		if (m->a == TOK_NONE)
			return false;
		if (m->a == a && m->b == b) {
			*rank = m->rank;
			*id = m->id;
			return true;
		}
		i = (i + 1) & t->mh_mask;
	}
}

/* Counters written from const paths (decode of a shared tokenizer). */
static inline void tok_ctr_add(const struct eng_tokenizer *t, unsigned c,
			       uint64_t v)
{
	__atomic_fetch_add((uint64_t *)&t->ctr[c], v, __ATOMIC_RELAXED);
}

/* Compile a Hugging Face regex for PCRE2 (UTF, UCP, \s as Unicode
 * White_Space like Oniguruma), JIT it.  NULL and a message on error. */
pcre2_code *tok_regex_compile(struct eng_tokenizer *t, const char *pat,
			      size_t len, bool literal, char *err, size_t errlen);

/* Normalise @s with the tokenizer's normalizers (load time: added-token
 * contents); *out points into the scratch buffers. */
int tok_normalize_string(struct eng_tokenizer *t, const char *s, size_t n,
			 const char **out, size_t *outlen);

/* First-token / per-token decoded bytes (decode.c) used at load. */
int tok_decoder_build(struct eng_tokenizer *t, json_t *decoder, char *err,
		      size_t errlen);

/* GPT-2 byte <-> printable char map. */
uint32_t tok_bytelevel_cp(uint8_t b);
/* Byte of a GPT-2 printable char, or -1 (@cp < 0x144 else -1). */
int tok_cp_to_byte(uint32_t cp);

#endif
