// SPDX-License-Identifier: MIT
/*
 * tokenizer_decode.c — ids to text: full decode and the streaming
 * detokenizer, sharing one path.
 *
 * At load the decoder chain of tokenizer.json (Replace, ByteLevel,
 * Metaspace, ByteFallback, Fuse, Strip) is "compiled": every step that acts
 * on one token at a time is applied once to every vocabulary entry and the
 * result stored (dec[id], and dec_first[id] where the first token of a text
 * decodes differently: Metaspace).  What depends on neighbours is left to
 * run time and done in a few bytes of state:
 *   - byte tokens (ByteFallback "<0xE2>", or any ByteLevel token) are bytes
 *     that assemble into code points; invalid bytes become U+FFFD;
 *   - Strip after Fuse removes chars at the start (and end) of the text;
 *   - transformers' clean_up_tokenization_spaces.
 * A push is then a table lookup plus a byte loop: ~20 ns per token.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer_priv.h"
#include "utf8.h"
#include "velo/compiler.h"

/* private stream flags, above the public ENG_DETOK_* */
#define DT_NOCLEAN 0x80u	/* decode(): cleanup is applied afterwards, exactly */

/* ------------------------------------------------------------------ */
/* Decoder chain at load                                                */

enum dkind { D_REPLACE, D_BYTEFALLBACK, D_FUSE, D_STRIP, D_BYTELEVEL, D_METASPACE };

struct dstep {
	enum dkind kind;
	const char *pat, *content;
	size_t plen, clen;
	uint32_t cp;		/* Strip content */
	unsigned start, stop;
	char repl[4];
	unsigned rlen;
	bool drop_first;	/* Metaspace: first token's repl chars vanish */
};

struct dchain {
	struct dstep s[TOK_STEPS_MAX];
	unsigned n;
};

static int dparse(json_t *d, struct dchain *c, char *err, size_t errlen)
{
	const char *type = json_string_value(json_object_get(d, "type"));
	struct dstep *s;

	if (!type)
		goto bad;
	if (!strcmp(type, "Sequence")) {
		json_t *arr = json_object_get(d, "decoders"), *e;
		size_t i;
		if (!json_is_array(arr))
			goto bad;
		json_array_foreach(arr, i, e) {
			int rc = dparse(e, c, err, errlen);
			if (rc)
				return rc;
		}
		return 0;
	}
	if (c->n >= TOK_STEPS_MAX)
		goto bad;
	s = &c->s[c->n];
	memset(s, 0, sizeof(*s));
	if (!strcmp(type, "Replace")) {
		json_t *p = json_object_get(d, "pattern");
		json_t *ps = json_object_get(p, "String");
		json_t *ct = json_object_get(d, "content");
		if (!json_is_string(ps) || !json_is_string(ct)) {
			snprintf(err, errlen, "decoder Replace: only String patterns");
			return -EINVAL;
		}
		s->kind = D_REPLACE;
		s->pat = json_string_value(ps);
		s->plen = json_string_length(ps);
		s->content = json_string_value(ct);
		s->clen = json_string_length(ct);
	} else if (!strcmp(type, "ByteFallback")) {
		s->kind = D_BYTEFALLBACK;
	} else if (!strcmp(type, "Fuse")) {
		s->kind = D_FUSE;
	} else if (!strcmp(type, "Strip")) {
		json_t *ct = json_object_get(d, "content");
		const char *cs = json_string_value(ct);
		if (!cs || !*cs || eng_utf8_seq_len((uint8_t)cs[0]) != json_string_length(ct))
			goto bad;
		s->kind = D_STRIP;
		eng_utf8_decode(cs, &s->cp);
		s->start = (unsigned)json_integer_value(json_object_get(d, "start"));
		s->stop = (unsigned)json_integer_value(json_object_get(d, "stop"));
		if (s->start > 16 || s->stop > 4)
			goto bad;
	} else if (!strcmp(type, "ByteLevel")) {
		s->kind = D_BYTELEVEL;
	} else if (!strcmp(type, "Metaspace")) {
		json_t *r = json_object_get(d, "replacement");
		const char *scheme = json_string_value(json_object_get(d, "prepend_scheme"));
		size_t rl = json_string_length(r);
		if (!json_is_string(r) || rl == 0 || rl > 4)
			goto bad;
		s->kind = D_METASPACE;
		memcpy(s->repl, json_string_value(r), rl);
		s->rlen = (unsigned)rl;
		if (scheme) {
			s->drop_first = strcmp(scheme, "never") != 0;
		} else {
			json_t *aps = json_object_get(d, "add_prefix_space");
			s->drop_first = !json_is_boolean(aps) || json_is_true(aps);
		}
	} else {
		snprintf(err, errlen, "unsupported decoder %s", type);
		return -EINVAL;
	}
	c->n++;
	return 0;
bad:
	snprintf(err, errlen, "bad decoder %s", type ? type : "(no type)");
	return -EINVAL;
}

/* Apply the per-token steps to one token; @buf has room for 4x @n + 16. */
static size_t dtoken(const struct dchain *c, unsigned upto, const char *s,
		     size_t n, bool first, char *buf, char *tmp)
{
	size_t len = n;

	memcpy(buf, s, n);
	for (unsigned k = 0; k < upto; k++) {
		const struct dstep *st = &c->s[k];
		size_t o = 0, i = 0;
		switch (st->kind) {
		case D_REPLACE:
			if (!st->plen)
				continue;
			while (i < len) {
				if (len - i >= st->plen && !memcmp(buf + i, st->pat, st->plen)) {
					memcpy(tmp + o, st->content, st->clen);
					o += st->clen;
					i += st->plen;
				} else {
					tmp[o++] = buf[i++];
				}
			}
			break;
		case D_METASPACE:
			while (i < len) {
				if (len - i >= st->rlen && !memcmp(buf + i, st->repl, st->rlen)) {
					if (!(first && st->drop_first))
						tmp[o++] = ' ';
					i += st->rlen;
				} else {
					tmp[o++] = buf[i++];
				}
			}
			break;
		case D_STRIP: {
			/* per-token Strip (before any Fuse): whole chars */
			size_t a = 0, b = len;
			char cb[4];
			unsigned cl = eng_utf8_encode(st->cp, cb);
			for (unsigned r = 0; r < st->start && b - a >= cl &&
					     !memcmp(buf + a, cb, cl); r++)
				a += cl;
			for (unsigned r = 0; r < st->stop && b - a >= cl &&
					     !memcmp(buf + b - cl, cb, cl); r++)
				b -= cl;
			memcpy(tmp, buf + a, b - a);
			o = b - a;
			break;
		}
		case D_BYTELEVEL: {
			/* every char back to its byte; a token with any char
			 * outside the map keeps its UTF-8 bytes (as HF) */
			bool all = true;
			while (i < len) {
				uint32_t cp;
				unsigned l;
				if (!eng_utf8_seq_len((uint8_t)buf[i]) ||
				    i + eng_utf8_seq_len((uint8_t)buf[i]) > len) {
					all = false;
					break;
				}
				l = eng_utf8_decode(buf + i, &cp);
				int b = tok_cp_to_byte(cp);
				if (b < 0) {
					all = false;
					break;
				}
				tmp[o++] = (char)b;
				i += l;
			}
			if (!all) {
				memcpy(tmp, buf, len);
				o = len;
			}
			break;
		}
		case D_BYTEFALLBACK:
		case D_FUSE:
			continue;
		}
		memcpy(buf, tmp, o);
		len = o;
	}
	return len;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int tok_decoder_build(struct eng_tokenizer *t, json_t *d, char *err,
		      size_t errlen)
{
	struct dchain c = { .n = 0 };
	unsigned upto;
	bool bf = false;
	size_t maxlen = 0;
	char *buf = NULL, *tmp = NULL;
	int rc;

	if (d && !json_is_null(d) && (rc = dparse(d, &c, err, errlen)))
		return rc;
	t->dec_join_space = !d || json_is_null(d);

	/* per-token steps: everything up to the first Fuse, then Replace and
	 * Metaspace after it (applied per token: exact unless a pattern spans
	 * two tokens, which no known tokenizer does) */
	struct dchain pt = { .n = 0 };
	bool fused = false;
	for (unsigned k = 0; k < c.n; k++) {
		const struct dstep *st = &c.s[k];
		if (st->kind == D_FUSE) {
			fused = true;
			continue;
		}
		if (st->kind == D_BYTEFALLBACK) {
			bf = true;
			continue;
		}
		if (st->kind == D_BYTELEVEL)
			t->dec_bytelevel = true;
		if (fused && st->kind == D_STRIP) {
			t->strip_cp = st->cp;
			t->strip_start = (uint8_t)st->start;
			t->strip_stop = (uint8_t)st->stop;
			continue;
		}
		pt.s[pt.n++] = *st;
	}
	upto = pt.n;

	for (uint32_t id = 0; id < t->n_ids; id++)
		if (t->tok_text[id].len != TOK_NONE)
			maxlen = MAX(maxlen, t->tok_text[id].len);
	buf = malloc(4 * maxlen + 16);
	tmp = malloc(4 * maxlen + 16);
	t->dec = calloc(t->n_ids, sizeof(*t->dec));
	t->dec_first = calloc(t->n_ids, sizeof(*t->dec_first));
	if (!buf || !tmp || !t->dec || !t->dec_first) {
		rc = -ENOMEM;
		goto out;
	}
	t->dec_bytes_max = 4;
	for (uint32_t id = 0; id < t->n_ids; id++) {
		struct tok_span sp = t->tok_text[id];
		const char *s;
		size_t l;
		if (sp.len == TOK_NONE) {
			t->dec[id].len = TOK_NONE;
			continue;
		}
		s = tok_str(t, sp);
		if (bf && sp.len == 6 && !memcmp(s, "<0x", 3) && s[5] == '>' &&
		    hexval(s[3]) >= 0 && hexval(s[4]) >= 0) {
			char b = (char)(hexval(s[3]) * 16 + hexval(s[4]));
			if ((rc = tok_arena_add(t, &b, 1, &t->dec[id])))
				goto out;
			t->tok_flags[id] |= TOKF_BYTE;
			continue;
		}
		/* dtoken writes into buf, which may move the arena: copy out */
		l = dtoken(&pt, upto, s, sp.len, false, buf, tmp);
		if ((rc = tok_arena_add(t, buf, l, &t->dec[id])))
			goto out;
		t->dec_bytes_max = (uint32_t)MAX(t->dec_bytes_max, l);
		s = tok_str(t, t->tok_text[id]);
		size_t l1 = dtoken(&pt, upto, s, sp.len, true, buf, tmp);
		if (l1 != l || memcmp(buf, tok_str(t, t->dec[id]), l)) {
			if ((rc = tok_arena_add(t, buf, l1, &t->dec_first[id])))
				goto out;
			t->tok_flags[id] |= TOKF_FIRST;
		}
	}
	rc = 0;
out:
	free(buf);
	free(tmp);
	return rc;
}

/* ------------------------------------------------------------------ */
/* The stream                                                           */

struct sink {
	char *out;
	size_t cap, n;
	bool full;
};

static inline void sink_put(struct sink *k, const char *s, size_t n)
{
	if (unlikely(k->n + n > k->cap)) {
		k->full = true;
		return;
	}
	memcpy(k->out + k->n, s, n);
	k->n += n;
}

static const struct {
	const char *pat, *rep;
	uint8_t plen, rlen;
} cleanup_tab[] = {
	{ " .", ".", 2, 1 },     { " ?", "?", 2, 1 },     { " !", "!", 2, 1 },
	{ " ,", ",", 2, 1 },     { " ' ", "'", 3, 1 },    { " n't", "n't", 4, 3 },
	{ " 'm", "'m", 3, 2 },   { " 's", "'s", 3, 2 },   { " 've", "'ve", 4, 3 },
	{ " 're", "'re", 4, 3 },
};

/* transformers' clean_up_tokenization, exactly: str.replace in order. */
static size_t cleanup_inplace(char *s, size_t n)
{
	for (size_t p = 0; p < ARRAY_SIZE(cleanup_tab); p++) {
		size_t r = 0, w = 0;
		while (r < n) {
			if (n - r >= cleanup_tab[p].plen &&
			    !memcmp(s + r, cleanup_tab[p].pat, cleanup_tab[p].plen)) {
				memcpy(s + w, cleanup_tab[p].rep, cleanup_tab[p].rlen);
				w += cleanup_tab[p].rlen;
				r += cleanup_tab[p].plen;
			} else {
				s[w++] = s[r++];
			}
		}
		n = w;
	}
	return n;
}

/* Streaming cleanup: hold a space while what follows may still complete a
 * pattern.  Single pass, earliest-listed complete pattern wins. */
static void clean_feed(struct eng_detok *st, struct sink *k, const char *c,
		       size_t n)
{
	if (!st->hold_len && !(n == 1 && c[0] == ' ')) {
		sink_put(k, c, n);
		return;
	}
	memcpy(st->hold + st->hold_len, c, n);	/* hold_len <= 4 + one char */
	st->hold_len = (uint8_t)(st->hold_len + n);
	while (st->hold_len) {
		bool prefix = false;
		for (size_t p = 0; p < ARRAY_SIZE(cleanup_tab); p++) {
			size_t pl = cleanup_tab[p].plen;
			if (st->hold_len == pl && !memcmp(st->hold, cleanup_tab[p].pat, pl)) {
				sink_put(k, cleanup_tab[p].rep, cleanup_tab[p].rlen);
				st->hold_len = 0;
				return;
			}
			if (st->hold_len < pl && !memcmp(st->hold, cleanup_tab[p].pat,
							  st->hold_len))
				prefix = true;
		}
		if (prefix)
			return;
		/* no pattern: the space goes out, the rest is looked at again */
		sink_put(k, " ", 1);
		memmove(st->hold, st->hold + 1, --st->hold_len);
		if (st->hold_len && st->hold[0] != ' ') {
			sink_put(k, (const char *)st->hold, st->hold_len);
			st->hold_len = 0;
		}
	}
}

static void char_out(const struct eng_tokenizer *t, struct eng_detok *st,
		     struct sink *k, const char *c, size_t n)
{
	if (t->strip_start || t->strip_stop) {
		uint32_t cp;
		eng_utf8_decode(c, &cp);
		if (st->strip_left) {
			if (cp == t->strip_cp) {
				st->strip_left--;
				return;
			}
			st->strip_left = 0;
		}
		if (t->strip_stop) {
			char cb[4];
			unsigned cl = eng_utf8_encode(t->strip_cp, cb);
			if (cp == t->strip_cp) {
				if (st->strip_held < t->strip_stop) {
					st->strip_held++;
					return;
				}
				goto out;	/* the oldest held one goes */
			}
			for (; st->strip_held; st->strip_held--) {
				if (t->cleanup && !(st->flags & DT_NOCLEAN))
					clean_feed(st, k, cb, cl);
				else
					sink_put(k, cb, cl);
			}
		}
	}
out:
	if (t->cleanup && !(st->flags & DT_NOCLEAN))
		clean_feed(st, k, c, n);
	else
		sink_put(k, c, n);
}

static void fffd(const struct eng_tokenizer *t, struct eng_detok *st,
		 struct sink *k, unsigned count)
{
	tok_ctr_add(t, ENG_TOK_CTR_decode_fffd, count);
	while (count--)
		char_out(t, st, k, ENG_UTF8_FFFD, 3);
}

/* Bytes that can never complete: HF's ByteFallback writes one U+FFFD per
 * byte, from_utf8_lossy (ByteLevel) one per maximal invalid subpart. */
static void part_drop(const struct eng_tokenizer *t, struct eng_detok *st,
		      struct sink *k)
{
	if (st->part_len)
		fffd(t, st, k, t->dec_bytelevel ? 1 : st->part_len);
	st->part_len = 0;
}

static void byte_in(const struct eng_tokenizer *t, struct eng_detok *st,
		    struct sink *k, uint8_t b)
{
	for (;;) {
		if (!st->part_len) {
			unsigned l = eng_utf8_seq_len(b);
			if (l == 1) {
				char c = (char)b;
				char_out(t, st, k, &c, 1);
			} else if (!l) {
				fffd(t, st, k, 1);
			} else {
				st->part[0] = b;
				st->part_len = 1;
				st->part_need = (uint8_t)l;
			}
			return;
		}
		if (eng_utf8_cont_ok(st->part, st->part_len, b)) {
			st->part[st->part_len++] = b;
			if (st->part_len == st->part_need) {
				char_out(t, st, k, (const char *)st->part, st->part_len);
				st->part_len = 0;
			}
			return;
		}
		part_drop(t, st, k);	/* then look at b afresh */
	}
}

static void bytes_in(const struct eng_tokenizer *t, struct eng_detok *st,
		     struct sink *k, const char *s, size_t n)
{
	size_t i = 0;

	/* whole ASCII / complete chars straight through when nothing pends */
	while (i < n) {
		uint8_t b = (uint8_t)s[i];
		if (!st->part_len && b < 0x80 && !st->strip_left && !t->strip_stop &&
		    (!t->cleanup || (st->flags & DT_NOCLEAN))) {
			size_t j = i + 1;
			while (j < n && (uint8_t)s[j] < 0x80)
				j++;
			sink_put(k, s + i, j - i);
			i = j;
			continue;
		}
		byte_in(t, st, k, b);
		i++;
	}
}

void eng_detok_init(const struct eng_tokenizer *t, struct eng_detok *st,
		    unsigned flags)
{
	memset(st, 0, sizeof(*st));
	st->flags = (uint8_t)flags;
	if (t && !(flags & ENG_DETOK_CONTINUE))
		st->strip_left = t->strip_start;
}

/* One token into the stream (no rollback; callers handle -ENOSPC). */
static void push_one(const struct eng_tokenizer *t, struct eng_detok *st,
		     struct sink *k, uint32_t id)
{
	uint8_t f = t->tok_flags[id];
	struct tok_span sp;

	if (f & TOKF_BYTE) {
		byte_in(t, st, k, (uint8_t)tok_str(t, t->dec[id])[0]);
		st->started = 1;
		st->n_tokens++;
		return;
	}
	if (!t->dec_bytelevel)
		part_drop(t, st, k);	/* a byte-fallback run ends here */
	if (t->dec_join_space && (st->started || (st->flags & ENG_DETOK_CONTINUE)))
		bytes_in(t, st, k, " ", 1);
	sp = (f & TOKF_FIRST) && !st->started && !(st->flags & ENG_DETOK_CONTINUE)
		     ? t->dec_first[id]
		     : t->dec[id];
	bytes_in(t, st, k, tok_str(t, sp), sp.len);
	st->started = 1;
	st->n_tokens++;
}

static bool id_ok(const struct eng_tokenizer *t, const struct eng_detok *st,
		  uint32_t id)
{
	if (id >= t->n_ids || t->dec[id].len == TOK_NONE) {
		tok_ctr_add(t, ENG_TOK_CTR_decode_unknown_id, 1);
		return false;
	}
	if ((st->flags & ENG_DETOK_SKIP_SPECIAL) && (t->tok_flags[id] & TOKF_SPECIAL))
		return false;
	return true;
}

ssize_t eng_detok_push(const struct eng_tokenizer *t, struct eng_detok *st,
		       uint32_t id, char *out, size_t cap)
{
	struct sink k = { out, out ? cap : 0, 0, false };
	struct eng_detok save;

	if (!t || !st)
		return -EINVAL;
	if (!id_ok(t, st, id))
		return 0;
	save = *st;
	push_one(t, st, &k, id);
	if (k.full) {
		*st = save;
		return -ENOSPC;
	}
	return (ssize_t)k.n;
}

static void flush_into(const struct eng_tokenizer *t, struct eng_detok *st,
		       struct sink *k)
{
	part_drop(t, st, k);
	if (st->strip_held) {
		/* at most strip_stop trailing chars were held: all go */
		st->strip_held = 0;
	}
	if (st->hold_len) {
		sink_put(k, (const char *)st->hold, st->hold_len);
		st->hold_len = 0;
	}
}

ssize_t eng_detok_flush(const struct eng_tokenizer *t, struct eng_detok *st,
			char *out, size_t cap)
{
	struct sink k = { out, out ? cap : 0, 0, false };
	struct eng_detok save;

	if (!t || !st)
		return -EINVAL;
	save = *st;
	flush_into(t, st, &k);
	if (k.full) {
		*st = save;
		return -ENOSPC;
	}
	return (ssize_t)k.n;
}

size_t eng_tok_detok_bytes_max(const struct eng_tokenizer *t)
{
	/* every byte of a token may become U+FFFD (3 bytes), plus a pending
	 * partial char, held strip chars and the cleanup hold */
	return 3 * (size_t)t->dec_bytes_max + 16 + 4 * (size_t)t->strip_stop +
	       ENG_DETOK_HOLD_MAX;
}

/* ------------------------------------------------------------------ */
/* Full decode                                                          */

ssize_t eng_tok_decode(struct eng_tokenizer *t, const uint32_t *ids, size_t n,
		       bool skip_special, char *out, size_t cap)
{
	struct eng_detok st;
	struct sink k = { out, cap ? cap - 1 : 0, 0, false };

	if (!t || (!ids && n) || !out || !cap)
		return -EINVAL;
	eng_detok_init(t, &st, (skip_special ? ENG_DETOK_SKIP_SPECIAL : 0) | DT_NOCLEAN);
	for (size_t i = 0; i < n && !k.full;) {
		uint32_t id = ids[i];
		if (!id_ok(t, &st, id)) {
			i++;
			continue;
		}
		if (!(t->tok_flags[id] & TOKF_BYTE) || t->dec_bytelevel) {
			push_one(t, &st, &k, id);
			i++;
			continue;
		}
		/*
		 * A run of byte-fallback tokens (skipped ids in between do not
		 * break it, as HF filters first): HF converts the run as a
		 * whole and, if it is not valid UTF-8, emits one U+FFFD per
		 * byte.  Validate the run first, then replay it.
		 */
		size_t j = i, nb = 0;
		uint8_t seq[4];
		unsigned have = 0, need = 0;
		bool valid = true;
		for (; j < n; j++) {
			uint32_t jd = ids[j];
			if (jd >= t->n_ids || t->dec[jd].len == TOK_NONE ||
			    ((st.flags & ENG_DETOK_SKIP_SPECIAL) &&
			     (t->tok_flags[jd] & TOKF_SPECIAL)))
				continue;
			if (!(t->tok_flags[jd] & TOKF_BYTE))
				break;
			uint8_t b = (uint8_t)tok_str(t, t->dec[jd])[0];
			nb++;
			if (!have) {
				need = eng_utf8_seq_len(b);
				if (!need) {
					valid = false;
				} else if (need > 1) {
					seq[0] = b;
					have = 1;
				}
			} else if (eng_utf8_cont_ok(seq, have, b)) {
				seq[have++] = b;
				if (have == need)
					have = 0;
			} else {
				valid = false;
				have = 0;
			}
		}
		if (have)
			valid = false;
		if (valid) {
			for (; i < j; i++)
				if (id_ok(t, &st, ids[i]))
					push_one(t, &st, &k, ids[i]);
		} else {
			part_drop(t, &st, &k);
			fffd(t, &st, &k, (unsigned)nb);
			st.started = 1;
			i = j;
		}
	}
	flush_into(t, &st, &k);
	if (k.full)
		return -ENOSPC;
	if (t->cleanup)
		k.n = cleanup_inplace(out, k.n);
	out[k.n] = 0;
	return (ssize_t)k.n;
}
