// SPDX-License-Identifier: MIT
/*
 * tokenizer_encode.c — text to ids, following Hugging Face tokenizers'
 * pipeline step by step:
 *
 *   1. split out added tokens that match the raw text (normalized: false)
 *   2. normalise the remaining pieces (Prepend, Replace, NFC, ...)
 *   3. split out added tokens that match the normalised text
 *   4. pre-tokenize (Split regex, ByteLevel, Metaspace) into words
 *   5. BPE each word (merge ranks, byte fallback, unk), emit ids
 *   6. post-processor template (BOS ...) when add_special
 *
 * Every step maps a list of pieces (byte ranges of one text buffer, or an
 * added token's id) to a new list; the lists and the two text buffers
 * ping-pong, all sized at load from the text budget.  Nothing here
 * allocates (PCRE2 runs JIT code on the preallocated match data and JIT
 * stack).
 *
 * BPE merges a word with a binary min-heap keyed (rank, position) with lazy
 * deletion, as HF's Word::merge_all: O(n log n) for an n-char word, which
 * matters for SentencePiece-style tokenizers whose "word" is the whole text.
 *
 * Measured (test_tokenizer's bench test: best of N runs, -O2, one core of
 * the 2-core development VM, noisy; English prose):
 *   synthetic byte-level vocab (every word of the text built by merges,
 *   296 merges, Llama-3 regex):     ~40 MB/s at 4 KiB, ~15 MB/s at 256 KiB
 *   synthetic SentencePiece (legacy normalizer: the whole text is one
 *   word, heap of n symbols):       ~18 MB/s at 4 KiB, ~6 MB/s at 256 KiB
 *   fixture llama3 (ignore_merges): ~50 MB/s at 4 KiB; qwen2 ~42 MB/s;
 *   fixture spm:                    ~16 MB/s at 4 KiB
 * i.e. a 2 KiB prompt costs 50-150 us.  The 256 KiB figures fall because
 * the piece lists and the SentencePiece heap leave the caches.
 */
#include <errno.h>
#include <string.h>
#include <utf8proc.h>

#include "tokenizer_priv.h"
#include "utf8.h"
#include "velo/compiler.h"

struct plist {
	const char *base;
	struct tok_piece *p;
	size_t n;
};

struct out {
	uint32_t *ids;
	size_t cap;
	size_t n;
};

static inline void emit(struct out *o, uint32_t id)
{
	if (o->n < o->cap)
		o->ids[o->n] = id;
	o->n++;
}

static inline int piece_push(const struct eng_tokenizer *t, struct plist *l,
			     size_t off, size_t len, uint32_t id, uint32_t origin)
{
	if (unlikely(l->n >= t->pieces_cap))
		return -E2BIG;
	l->p[l->n++] = (struct tok_piece){ (uint32_t)off, (uint32_t)len, id, origin };
	return 0;
}

static char *other_buf(struct eng_tokenizer *t, const char *base)
{
	return base == t->buf[0] ? t->buf[1] : t->buf[0];
}

/* ------------------------------------------------------------------ */
/* Regex iteration                                                      */

/* Next match at or after @from.  Return 1 (match in *ms, *me), 0 (none),
 * -ERANGE (match or JIT stack limit: adversarial input). */
static int re_next(struct eng_tokenizer *t, const pcre2_code *re, const char *s,
		   size_t n, size_t from, size_t *ms, size_t *me)
{
	int rc = pcre2_match(re, (PCRE2_SPTR)s, n, from, PCRE2_NO_UTF_CHECK,
			     t->md, t->mctx);
	if (rc == PCRE2_ERROR_NOMATCH)
		return 0;
	if (unlikely(rc < 0)) {
		t->ctr[ENG_TOK_CTR_encode_regex_limit]++;
		return -ERANGE;
	}
	PCRE2_SIZE *ov = pcre2_get_ovector_pointer(t->md);
	*ms = ov[0];
	*me = ov[1];
	return 1;
}

static size_t char_len_at(const char *s, size_t i)
{
	unsigned l = eng_utf8_seq_len((uint8_t)s[i]);
	return l ? l : 1;
}

/* ------------------------------------------------------------------ */
/* Split behaviours (HF NormalizedString::split), streamed              */

struct fold {
	enum tok_split_behavior beh;
	size_t first;		/* index of this input's first output piece */
	bool prev;		/* previous segment was a match */
	bool pending;		/* MergedWithNext: a match waiting for its next */
	size_t pa, pb;
};

static int fold_feed(const struct eng_tokenizer *t, struct fold *f,
		     struct plist *out, size_t a, size_t b, bool m)
{
	struct tok_piece *last = out->n > f->first ? &out->p[out->n - 1] : NULL;
	int rc = 0;

	switch (f->beh) {
	case SPLIT_REMOVED:
		if (!m)
			rc = piece_push(t, out, a, b - a, TOK_NONE, 0);
		break;
	case SPLIT_ISOLATED:
		rc = piece_push(t, out, a, b - a, TOK_NONE, 0);
		break;
	case SPLIT_CONTIGUOUS:
		if (m == f->prev && last)
			last->len = (uint32_t)(b - last->off);
		else
			rc = piece_push(t, out, a, b - a, TOK_NONE, 0);
		f->prev = m;
		break;
	case SPLIT_MERGED_PREV:
		if (m && !f->prev && last)
			last->len = (uint32_t)(b - last->off);
		else
			rc = piece_push(t, out, a, b - a, TOK_NONE, 0);
		f->prev = m;
		break;
	case SPLIT_MERGED_NEXT:
		if (f->pending) {
			if (!m) {
				rc = piece_push(t, out, f->pa, b - f->pa, TOK_NONE, 0);
				f->pending = false;
			} else {
				rc = piece_push(t, out, f->pa, f->pb - f->pa, TOK_NONE, 0);
				f->pa = a;
				f->pb = b;
			}
		} else if (m) {
			f->pending = true;
			f->pa = a;
			f->pb = b;
		} else {
			rc = piece_push(t, out, a, b - a, TOK_NONE, 0);
		}
		break;
	}
	return rc;
}

/* Close one input piece: flush, drop empty pieces, set origin. */
static int fold_end(const struct eng_tokenizer *t, struct fold *f,
		    struct plist *out, const struct tok_piece *in)
{
	if (f->pending && piece_push(t, out, f->pa, f->pb - f->pa, TOK_NONE, 0))
		return -E2BIG;
	size_t w = f->first;
	for (size_t r = f->first; r < out->n; r++) {
		if (!out->p[r].len)
			continue;
		out->p[w] = out->p[r];
		out->p[w].origin = in->origin && out->p[w].off == in->off;
		w++;
	}
	out->n = w;
	return 0;
}

/* Split the text pieces of @in by @re (absolute offsets kept). */
static int step_split(struct eng_tokenizer *t, const pcre2_code *re,
		      enum tok_split_behavior beh, bool invert,
		      const struct plist *in, struct plist *out)
{
	out->base = in->base;
	out->n = 0;
	for (size_t k = 0; k < in->n; k++) {
		const struct tok_piece *pc = &in->p[k];
		if (pc->id != TOK_NONE) {
			if (piece_push(t, out, pc->off, pc->len, pc->id, 0))
				return -E2BIG;
			continue;
		}
		const char *s = in->base + pc->off;
		size_t n = pc->len, from = 0, prev = 0, ms, me;
		struct fold f = { .beh = beh, .first = out->n };
		int rc;

		while (from <= n) {
			rc = re_next(t, re, s, n, from, &ms, &me);
			if (rc < 0)
				return rc;
			if (!rc)
				break;
			if (ms != prev &&
			    fold_feed(t, &f, out, pc->off + prev, pc->off + ms, invert))
				return -E2BIG;
			if (fold_feed(t, &f, out, pc->off + ms, pc->off + me, !invert))
				return -E2BIG;
			prev = me;
			if (me == ms) {
				/* empty match: step one char, as Oniguruma's find_iter */
				if (me >= n)
					break;
				from = me + char_len_at(s, me);
			} else {
				from = me;
			}
		}
		if (prev != n &&
		    fold_feed(t, &f, out, pc->off + prev, pc->off + n, invert))
			return -E2BIG;
		if (fold_end(t, &f, out, pc))
			return -E2BIG;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* Added tokens (HF AddedVocabulary::find_matches)                      */

static bool prev_char_is_word(const char *s, size_t i)
{
	size_t j = i;
	uint32_t cp;

	if (!i)
		return false;
	do
		j--;
	while (j > 0 && ((uint8_t)s[j] & 0xc0) == 0x80);
	eng_utf8_decode(s + j, &cp);
	return eng_utf8_is_word(cp);
}

static int split_added(struct eng_tokenizer *t, const struct tok_trie *tr,
		       const struct plist *in, struct plist *out)
{
	out->base = in->base;
	out->n = 0;
	for (size_t k = 0; k < in->n; k++) {
		const struct tok_piece *pc = &in->p[k];
		if (pc->id != TOK_NONE) {
			if (piece_push(t, out, pc->off, pc->len, pc->id, 0))
				return -E2BIG;
			continue;
		}
		const char *s = in->base + pc->off;
		size_t n = pc->len, pos = 0, i = 0;

		while (i < n) {
			uint32_t node = tr->root_child[(uint8_t)s[i]];
			int32_t best = -1;
			size_t best_end = 0, j = i;

			if (likely(!node)) {
				i++;
				continue;
			}
			/* longest token starting at i (leftmost-longest) */
			for (;;) {
				if (tr->nodes[node].term >= 0) {
					best = tr->nodes[node].term;
					best_end = j + 1;
				}
				if (++j >= n)
					break;
				uint32_t c = tr->nodes[node].child;
				while (c && tr->nodes[c].byte != (uint8_t)s[j])
					c = tr->nodes[c].sibling;
				if (!c)
					break;
				node = c;
			}
			if (best < 0) {
				i++;
				continue;
			}
			const struct tok_added *a = &t->added[best];
			size_t start = i, stop = best_end;
			if (a->single_word) {
				uint32_t cp = 0;
				if (stop < n)
					eng_utf8_decode(s + stop, &cp);
				if (prev_char_is_word(s, start) ||
				    (stop < n && eng_utf8_is_word(cp))) {
					i = stop;	/* HF's iterator moves past it */
					continue;
				}
			}
			if (a->lstrip) {
				size_t ns = start;
				while (ns > pos) {
					size_t j2 = ns;
					uint32_t cp;
					do
						j2--;
					while (j2 > 0 && ((uint8_t)s[j2] & 0xc0) == 0x80);
					eng_utf8_decode(s + j2, &cp);
					if (!eng_utf8_is_space(cp))
						break;
					ns = j2;
				}
				start = ns < pos ? pos : ns;
			}
			if (a->rstrip) {
				while (stop < n) {
					uint32_t cp;
					unsigned l = eng_utf8_decode(s + stop, &cp);
					if (!eng_utf8_is_space(cp))
						break;
					stop += l;
				}
			}
			if (pos < start &&
			    piece_push(t, out, pc->off + pos, start - pos, TOK_NONE,
				       pc->origin && pos == 0))
				return -E2BIG;
			if (piece_push(t, out, pc->off + start, stop - start, a->id, 0))
				return -E2BIG;
			pos = stop;
			i = stop;
		}
		if (pos < n &&
		    piece_push(t, out, pc->off + pos, n - pos, TOK_NONE,
			       pc->origin && pos == 0))
			return -E2BIG;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* Normalizers                                                          */

static bool all_ascii(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((uint8_t)s[i] & 0x80)
			return false;
	return true;
}

#define PUT(src, l)                                                           \
	do {                                                                  \
		if (unlikely(o + (l) > cap))                                  \
			return -E2BIG;                                        \
		memcpy(dst + o, (src), (l));                                  \
		o += (l);                                                     \
	} while (0)

static int norm_one(struct eng_tokenizer *t, const struct tok_norm *st,
		    const char *s, size_t n, char *dst, size_t cap, size_t *outn)
{
	size_t o = 0;

	switch (st->kind) {
	case NORM_PREPEND:
		if (n)
			PUT(tok_str(t, st->a), st->a.len);
		PUT(s, n);
		break;
	case NORM_REPLACE: {
		const char *c = tok_str(t, st->b);
		size_t i = 0;
		if (st->re) {
			size_t ms, me, from = 0;
			while (from <= n) {
				int rc = re_next(t, st->re, s, n, from, &ms, &me);
				if (rc < 0)
					return rc;
				if (!rc)
					break;
				PUT(s + i, ms - i);
				if (me > ms) {
					PUT(c, st->b.len);	/* empty matches replace nothing */
					i = me;
					from = me;
				} else {
					i = ms;
					from = ms < n ? ms + char_len_at(s, ms) : n + 1;
				}
			}
		} else if (st->a.len) {
			const char *p = tok_str(t, st->a);
			const char *m;
			while (i < n && (m = memmem(s + i, n - i, p, st->a.len))) {
				PUT(s + i, (size_t)(m - (s + i)));
				PUT(c, st->b.len);
				i = (size_t)(m - s) + st->a.len;
			}
		}
		PUT(s + i, n - i);
		break;
	}
	case NORM_NFC:
	case NORM_NFD:
	case NORM_NFKC:
	case NORM_NFKD: {
		if (all_ascii(s, n)) {
			PUT(s, n);
			break;
		}
		int opt = UTF8PROC_STABLE;
		if (st->kind == NORM_NFC || st->kind == NORM_NFKC)
			opt |= UTF8PROC_COMPOSE;
		else
			opt |= UTF8PROC_DECOMPOSE;
		if (st->kind == NORM_NFKC || st->kind == NORM_NFKD)
			opt |= UTF8PROC_COMPAT;
		utf8proc_ssize_t r = utf8proc_decompose((const utf8proc_uint8_t *)s,
							(utf8proc_ssize_t)n, t->cps,
							(utf8proc_ssize_t)t->cps_cap,
							(utf8proc_option_t)opt);
		if (r < 0)
			return -EILSEQ;
		if ((size_t)r > t->cps_cap)
			return -E2BIG;
		r = utf8proc_normalize_utf32(t->cps, r, (utf8proc_option_t)opt);
		if (r < 0)
			return -EILSEQ;
		for (utf8proc_ssize_t k = 0; k < r; k++) {
			if (unlikely(o + 4 > cap))
				return -E2BIG;
			o += eng_utf8_encode((uint32_t)t->cps[k], dst + o);
		}
		break;
	}
	case NORM_STRIP: {
		size_t a = 0, b = n;
		uint32_t cp;
		if (st->left)
			while (a < b) {
				unsigned l = eng_utf8_decode(s + a, &cp);
				if (!eng_utf8_is_space(cp))
					break;
				a += l;
			}
		if (st->right)
			while (b > a) {
				size_t j = b;
				do
					j--;
				while (j > a && ((uint8_t)s[j] & 0xc0) == 0x80);
				eng_utf8_decode(s + j, &cp);
				if (!eng_utf8_is_space(cp))
					break;
				b = j;
			}
		PUT(s + a, b - a);
		break;
	}
	}
	*outn = o;
	return 0;
}

static int step_norm(struct eng_tokenizer *t, const struct tok_norm *st,
		     const struct plist *in, struct plist *out)
{
	char *dst = other_buf(t, in->base);
	size_t o = 0;

	out->base = dst;
	out->n = 0;
	for (size_t k = 0; k < in->n; k++) {
		const struct tok_piece *pc = &in->p[k];
		size_t l = 0;
		int rc;
		if (pc->id != TOK_NONE) {
			if (piece_push(t, out, 0, 0, pc->id, 0))
				return -E2BIG;
			continue;
		}
		rc = norm_one(t, st, in->base + pc->off, pc->len, dst + o,
			      t->buf_cap - o, &l);
		if (rc)
			return rc;
		if (l && piece_push(t, out, o, l, TOK_NONE, pc->origin))
			return -E2BIG;
		o += l;
	}
	return 0;
}

int tok_normalize_string(struct eng_tokenizer *t, const char *s, size_t n,
			 const char **out, size_t *outlen)
{
	const char *cur = s;
	size_t len = n;

	if (n > t->text_max)
		return -E2BIG;
	for (unsigned i = 0; i < t->n_norm; i++) {
		char *dst = other_buf(t, cur);
		size_t l;
		int rc = norm_one(t, &t->norm[i], cur, len, dst, t->buf_cap, &l);
		if (rc)
			return rc;
		cur = dst;
		len = l;
	}
	*out = cur;
	*outlen = len;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Pre-tokenizer transforms                                             */

static int step_transform(struct eng_tokenizer *t, const struct tok_pre *st,
			  const struct plist *in, struct plist *out)
{
	char *dst = other_buf(t, in->base);
	size_t o = 0, cap = t->buf_cap;

	out->base = dst;
	out->n = 0;
	for (size_t k = 0; k < in->n; k++) {
		const struct tok_piece *pc = &in->p[k];
		const char *s = in->base + pc->off;
		size_t n = pc->len, start = o;

		if (pc->id != TOK_NONE) {
			if (piece_push(t, out, 0, 0, pc->id, 0))
				return -E2BIG;
			continue;
		}
		switch (st->kind) {
		case PRE_PREFIX_SPACE:
			if (s[0] != ' ')
				PUT(" ", 1);
			PUT(s, n);
			break;
		case PRE_BYTEMAP:
			if (unlikely(o + 2 * n > cap))
				return -E2BIG;
			for (size_t i = 0; i < n; i++)
				o += eng_utf8_encode(tok_bytelevel_cp((uint8_t)s[i]), dst + o);
			break;
		case PRE_METASPACE: {
			bool starts = s[0] == ' ' ||
				      (n >= st->repl_len && !memcmp(s, st->repl, st->repl_len));
			bool prepend = !starts &&
				       (st->prepend == PREPEND_ALWAYS ||
					(st->prepend == PREPEND_FIRST && pc->origin));
			if (prepend)
				PUT(st->repl, st->repl_len);
			for (size_t i = 0; i < n; i++) {
				if (s[i] == ' ')
					PUT(st->repl, st->repl_len);
				else
					PUT(s + i, 1);
			}
			break;
		}
		case PRE_SPLIT:
			return -EINVAL;	/* not a transform */
		}
		if (st->kind == PRE_METASPACE && st->split) {
			/* split before each replacement char (MergedWithNext) */
			struct fold f = { .beh = SPLIT_MERGED_NEXT, .first = out->n };
			struct tok_piece whole = { (uint32_t)start, (uint32_t)(o - start),
						   TOK_NONE, pc->origin };
			size_t prev = start, i = start;
			while (i < o) {
				if (o - i >= st->repl_len &&
				    !memcmp(dst + i, st->repl, st->repl_len)) {
					if (i != prev && fold_feed(t, &f, out, prev, i, false))
						return -E2BIG;
					if (fold_feed(t, &f, out, i, i + st->repl_len, true))
						return -E2BIG;
					i += st->repl_len;
					prev = i;
				} else {
					i++;
				}
			}
			if (prev != o && fold_feed(t, &f, out, prev, o, false))
				return -E2BIG;
			if (fold_end(t, &f, out, &whole))
				return -E2BIG;
		} else if (o > start &&
			   piece_push(t, out, start, o - start, TOK_NONE, pc->origin)) {
			return -E2BIG;
		}
	}
	return 0;
}
#undef PUT

/* ------------------------------------------------------------------ */
/* BPE                                                                  */

static inline void heap_push(uint64_t *h, size_t *n, uint64_t k)
{
	size_t i = (*n)++;

	while (i) {
		size_t p = (i - 1) / 2;
		if (h[p] <= k)
			break;
		h[i] = h[p];
		i = p;
	}
	h[i] = k;
}

static inline uint64_t heap_pop(uint64_t *h, size_t *n)
{
	uint64_t top = h[0], last = h[--*n];
	size_t i = 0, m = *n;

	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= m)
			break;
		if (c + 1 < m && h[c + 1] < h[c])
			c++;
		if (h[c] >= last)
			break;
		h[i] = h[c];
		i = c;
	}
	h[i] = last;
	return top;
}

static int bpe_word(struct eng_tokenizer *t, const char *w, size_t n,
		    struct out *o)
{
	struct tok_sym *sym = t->sym;
	size_t ns = 0;
	bool unk = false;
	uint32_t unk_len = 0;

	if (t->ignore_merges) {
		uint32_t id = tok_vocab_find(t, w, n);
		if (id != TOK_NONE) {
			emit(o, id);
			return 0;
		}
	}
#define PUSH(id_, len_)                                                       \
	do {                                                                  \
		if (unlikely(ns >= t->sym_cap))                               \
			return -E2BIG;                                        \
		sym[ns] = (struct tok_sym){ (int32_t)ns - 1, (int32_t)ns + 1, \
					    (id_), (len_) };                  \
		ns++;                                                         \
	} while (0)

	for (size_t i = 0; i < n;) {
		uint32_t cp;
		unsigned l = eng_utf8_decode(w + i, &cp);
		uint32_t id = cp < ARRAY_SIZE(t->char_id) ? t->char_id[cp]
							  : tok_vocab_find(t, w + i, l);
		if (likely(id != TOK_NONE)) {
			if (unk) {
				PUSH(t->unk_id, unk_len);
				unk = false;
			}
			PUSH(id, l);
		} else {
			bool done = false;
			if (t->byte_fallback) {
				done = true;
				for (unsigned k = 0; k < l; k++)
					if (t->bf_id[(uint8_t)w[i + k]] == TOK_NONE)
						done = false;
				if (done)
					for (unsigned k = 0; k < l; k++)
						PUSH(t->bf_id[(uint8_t)w[i + k]], 1);
			}
			if (!done && t->unk_id != TOK_NONE) {
				t->ctr[ENG_TOK_CTR_encode_unk]++;
				if (unk && t->fuse_unk) {
					unk_len += l;
				} else {
					if (unk)
						PUSH(t->unk_id, unk_len);
					unk = true;
					unk_len = l;
				}
			}
			/* no unk token: HF drops the char */
		}
		i += l;
	}
	if (unk)
		PUSH(t->unk_id, unk_len);
#undef PUSH
	if (!ns)
		return 0;
	sym[ns - 1].next = -1;

	if (ns > 1) {
		uint64_t *h = t->heap;
		size_t hn = 0;
		uint32_t rank, nid;

		for (size_t i = 0; i + 1 < ns; i++)
			if (tok_merge_find(t, sym[i].id, sym[i + 1].id, &rank, &nid))
				heap_push(h, &hn, (uint64_t)rank << 32 | i);
		while (hn) {
			uint64_t key = heap_pop(h, &hn);
			uint32_t r0 = (uint32_t)(key >> 32), pos = (uint32_t)key;
			struct tok_sym *s = &sym[pos];
			if (!s->len || s->next < 0)
				continue;
			struct tok_sym *rs = &sym[s->next];
			/* stale entry: the pair at pos changed since it was pushed */
			if (!tok_merge_find(t, s->id, rs->id, &rank, &nid) || rank != r0)
				continue;
			s->id = nid;
			s->len += rs->len;
			rs->len = 0;
			s->next = rs->next;
			if (s->next >= 0)
				sym[s->next].prev = (int32_t)pos;
			if (s->prev >= 0 &&
			    tok_merge_find(t, sym[s->prev].id, s->id, &rank, &nid))
				heap_push(h, &hn, (uint64_t)rank << 32 | (uint32_t)s->prev);
			if (s->next >= 0 &&
			    tok_merge_find(t, s->id, sym[s->next].id, &rank, &nid))
				heap_push(h, &hn, (uint64_t)rank << 32 | pos);
		}
	}
	for (int32_t i = 0; i >= 0; i = sym[i].next)
		emit(o, sym[i].id);
	return 0;
}

/* ------------------------------------------------------------------ */

static int encode_pieces(struct eng_tokenizer *t, const char *text, size_t len,
			 struct out *o)
{
	struct plist la = { text, t->pieces[0], 0 }, lb = { NULL, t->pieces[1], 0 };
	struct plist *cur = &la, *nxt = &lb, *tmp;
	int rc;

#define SWAP() (tmp = cur, cur = nxt, nxt = tmp)
	if (!len)
		return 0;
	la.p[0] = (struct tok_piece){ 0, (uint32_t)len, TOK_NONE, 1 };
	la.n = 1;
	if (t->trie_raw.n > 1) {
		if ((rc = split_added(t, &t->trie_raw, cur, nxt)))
			return rc;
		SWAP();
	}
	for (unsigned i = 0; i < t->n_norm; i++) {
		if ((rc = step_norm(t, &t->norm[i], cur, nxt)))
			return rc;
		SWAP();
	}
	if (t->trie_norm.n > 1) {
		if ((rc = split_added(t, &t->trie_norm, cur, nxt)))
			return rc;
		SWAP();
	}
	for (unsigned i = 0; i < t->n_pre; i++) {
		const struct tok_pre *st = &t->pre[i];
		rc = st->kind == PRE_SPLIT
			     ? step_split(t, st->re, st->behavior, st->invert, cur, nxt)
			     : step_transform(t, st, cur, nxt);
		if (rc)
			return rc;
		SWAP();
	}
#undef SWAP
	for (size_t k = 0; k < cur->n; k++) {
		const struct tok_piece *pc = &cur->p[k];
		if (pc->id != TOK_NONE) {
			emit(o, pc->id);
			continue;
		}
		if ((rc = bpe_word(t, cur->base + pc->off, pc->len, o)))
			return rc;
	}
	return 0;
}

int eng_tok_encode(struct eng_tokenizer *t, const char *text, size_t len,
		   bool add_special, uint32_t *ids, size_t cap, size_t *n)
{
	struct out o = { ids, ids ? cap : 0, 0 };
	int rc;

	if (!t || (!text && len) || !n)
		return -EINVAL;
	*n = 0;
	t->ctr[ENG_TOK_CTR_encode_calls]++;
	if (len > t->text_max) {
		t->ctr[ENG_TOK_CTR_encode_too_big]++;
		return -E2BIG;
	}
	if (!eng_utf8_valid(text, len)) {
		t->ctr[ENG_TOK_CTR_encode_bad_utf8]++;
		return -EILSEQ;
	}
	t->ctr[ENG_TOK_CTR_encode_bytes] += len;
	if (add_special)
		for (unsigned i = 0; i < t->n_tmpl_pre; i++)
			emit(&o, t->tmpl_pre[i]);
	rc = encode_pieces(t, text, len, &o);
	if (rc) {
		if (rc == -E2BIG)
			t->ctr[ENG_TOK_CTR_encode_too_big]++;
		return rc;
	}
	if (add_special)
		for (unsigned i = 0; i < t->n_tmpl_post; i++)
			emit(&o, t->tmpl_post[i]);
	*n = o.n;
	if (o.n > o.cap) {
		t->ctr[ENG_TOK_CTR_encode_nospc]++;
		return -ENOSPC;
	}
	return 0;
}
