// SPDX-License-Identifier: MIT
/*
 * tokenizer.c — loading a tokenizer: the VTOK blob, Hugging Face's
 * tokenizer.json and tokenizer_config.json (jansson, load time only), the
 * tables the hot path uses (vocab hash, merge hash, added-token tries,
 * decoded forms of every token) and the scratch memory that encode needs.
 *
 * Memory (per tokenizer): tables ~ 40 bytes per vocab entry + 16 bytes per
 * merge slot (load <= 0.5); scratch ~ 130 bytes per budget byte
 * (CONFIG_ENGINE_TOK_TEXT_BYTES_MAX, 64 KiB -> ~8 MiB):
 *   2 text buffers of 4x budget            8 B
 *   2 piece lists of 2x budget pieces     48 B
 *   BPE symbols, 2x budget chars          32 B
 *   BPE heap, 3 entries per symbol        48 B
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer_priv.h"
#include "utf8.h"
#include "velo/compiler.h"
#include "../../tools/lib/counters.h"
#include "../../tools/lib/errbuf.h"
#include "../../tools/lib/log.h"

#ifndef CONFIG_ENGINE_TOK_TEXT_BYTES_MAX
#define CONFIG_ENGINE_TOK_TEXT_BYTES_MAX 65536
#endif
#ifndef CONFIG_ENGINE_TOK_REGEX_MATCH_LIMIT
#define CONFIG_ENGINE_TOK_REGEX_MATCH_LIMIT 1000000
#endif

#define TOK_IDS_MAX (1u << 24)		/* sanity bound on ids */
#define TOK_JIT_STACK_BYTES (512 * 1024)

static const struct ctr_desc tok_ctr_desc[] = {
#define X(name, help) { #name, help },
	foreach_eng_tok_counter(X)
#undef X
};

/* GPT-2's bytes_to_unicode(): printable bytes map to themselves, the 68
 * others to U+0100.. in byte order. */
static uint16_t byte_to_cp_tab[256];
static int8_t cp_to_byte_init;
static int16_t cp_to_byte_tab[0x144];

static void bytemap_init(void)
{
	if (__atomic_load_n(&cp_to_byte_init, __ATOMIC_ACQUIRE))
		return;
	unsigned n = 0;
	for (unsigned b = 0; b < 256; b++) {
		bool printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) ||
				 (b >= 0xae);
		byte_to_cp_tab[b] = (uint16_t)(printable ? b : 256 + n++);
	}
	for (unsigned c = 0; c < 0x144; c++)
		cp_to_byte_tab[c] = -1;
	for (unsigned b = 0; b < 256; b++)
		cp_to_byte_tab[byte_to_cp_tab[b]] = (int16_t)b;
	__atomic_store_n(&cp_to_byte_init, 1, __ATOMIC_RELEASE);
}

int tok_cp_to_byte(uint32_t cp)
{
	return cp < 0x144 ? cp_to_byte_tab[cp] : -1;
}

uint32_t tok_bytelevel_cp(uint8_t b)
{
	return byte_to_cp_tab[b];
}

/* ------------------------------------------------------------------ */
/* Arena and vocab hash                                                 */

int tok_arena_add(struct eng_tokenizer *t, const char *s, size_t n,
		  struct tok_span *out)
{
	if (n > UINT32_MAX / 2 || t->arena_len + n > UINT32_MAX / 2)
		return -E2BIG;
	if (t->arena_len + n + 1 > t->arena_cap) {
		size_t cap = t->arena_cap ? t->arena_cap : 1 << 16;
		while (cap < t->arena_len + n + 1)
			cap *= 2;
		char *a = realloc(t->arena, cap);
		if (!a)
			return -ENOMEM;
		t->arena = a;
		t->arena_cap = cap;
	}
	memcpy(t->arena + t->arena_len, s, n);
	out->off = (uint32_t)t->arena_len;
	out->len = (uint32_t)n;
	t->arena_len += n;
	t->arena[t->arena_len] = 0;	/* keeps strings printable in a debugger */
	return 0;
}

static uint32_t str_hash(const char *s, size_t n)
{
	uint32_t h = 2166136261u;	/* FNV-1a */

	for (size_t i = 0; i < n; i++)
		h = (h ^ (uint8_t)s[i]) * 16777619u;
	return h | 1;			/* 0 marks an empty slot */
}

uint32_t tok_vocab_find(const struct eng_tokenizer *t, const char *s, size_t n)
{
	uint32_t h = str_hash(s, n);
	uint32_t i = h & t->vh_mask;

	for (;;) {
		uint32_t hv = t->vh_hash[i];
		if (!hv)
			return TOK_NONE;
		if (hv == h) {
			uint32_t id = t->vh_ids[i];
			struct tok_span sp = t->model_text[id];
			if (sp.len == n && !memcmp(t->arena + sp.off, s, n))
				return id;
		}
		i = (i + 1) & t->vh_mask;
	}
}

static void vocab_insert(struct eng_tokenizer *t, uint32_t id)
{
	struct tok_span sp = t->model_text[id];
	uint32_t h = str_hash(t->arena + sp.off, sp.len);
	uint32_t i = h & t->vh_mask;

	while (t->vh_hash[i])
		i = (i + 1) & t->vh_mask;
	t->vh_hash[i] = h;
	t->vh_ids[i] = id;
}

static void merge_insert(struct eng_tokenizer *t, uint32_t a, uint32_t b,
			 uint32_t rank, uint32_t id)
{
	uint64_t h = ((uint64_t)a << 32 | b) * 0x9e3779b97f4a7c15ull;
	uint32_t i = (uint32_t)(h >> 32) & t->mh_mask;

	for (;;) {
		struct tok_merge *m = &t->mh[i];
		if (m->a == TOK_NONE || (m->a == a && m->b == b)) {
			/* a repeated pair: the later rank wins, as HF's map */
			m->a = a;
			m->b = b;
			m->rank = rank;
			m->id = id;
			return;
		}
		i = (i + 1) & t->mh_mask;
	}
}

static uint32_t pow2_at_least(uint64_t n)
{
	uint32_t c = 16;

	while (c < n)
		c *= 2;
	return c;
}

/* ------------------------------------------------------------------ */
/* Regex                                                                */

/*
 * Hugging Face runs these patterns with Oniguruma, whose \s is Unicode
 * White_Space; PCRE2's \s under UCP also matches U+180E.  Rewrite \s and \S
 * (outside classes) and \s (inside classes) to the White_Space set so that
 * both engines split alike.  Everything else (\p{L}, (?i:...), lookahead,
 * {1,3}) means the same in both.
 */
#define WS_SET "\\t-\\r\\x{85}\\p{Z}"

static int regex_rewrite(const char *pat, size_t len, char *out, size_t cap,
			 size_t *outlen)
{
	size_t o = 0;
	bool in_class = false;
	size_t class_start = 0;

#define PUT(str)                                                              \
	do {                                                                  \
		size_t l_ = strlen(str);                                      \
		if (o + l_ >= cap)                                            \
			return -E2BIG;                                        \
		memcpy(out + o, str, l_);                                     \
		o += l_;                                                      \
	} while (0)
#define PUTC(c)                                                               \
	do {                                                                  \
		if (o + 1 >= cap)                                             \
			return -E2BIG;                                        \
		out[o++] = (c);                                               \
	} while (0)

	for (size_t i = 0; i < len; i++) {
		char c = pat[i];
		if (c == '\\' && i + 1 < len) {
			char d = pat[i + 1];
			i++;
			if (d == 's') {
				PUT(in_class ? WS_SET : "[" WS_SET "]");
				continue;
			}
			if (d == 'S' && !in_class) {
				PUT("[^" WS_SET "]");
				continue;
			}
			PUTC('\\');
			PUTC(d);
			continue;
		}
		if (!in_class && c == '[') {
			in_class = true;
			PUTC(c);
			class_start = i + 1;
			if (i + 1 < len && pat[i + 1] == '^') {
				PUTC('^');
				i++;
				class_start = i + 1;
			}
			continue;
		}
		if (in_class && c == '[' && i + 1 < len && pat[i + 1] == ':') {
			/* POSIX class [:alpha:] inside a class */
			const char *e = memchr(pat + i + 2, ']', len - i - 2);
			if (e) {
				size_t l = (size_t)(e - (pat + i)) + 1;
				for (size_t k = 0; k < l; k++)
					PUTC(pat[i + k]);
				i += l - 1;
				continue;
			}
		}
		if (in_class && c == ']' && i != class_start)
			in_class = false;
		PUTC(c);
	}
	out[o] = 0;
	*outlen = o;
	return 0;
#undef PUT
#undef PUTC
}

pcre2_code *tok_regex_compile(struct eng_tokenizer *t, const char *pat,
			      size_t len, bool literal, char *err, size_t errlen)
{
	size_t cap = len * 24 + 64, rlen = 0;
	char *rw = malloc(cap);
	int ec;
	PCRE2_SIZE eo;
	pcre2_code *re;

	if (!rw) {
		velo_errf(err, errlen, "out of memory");
		return NULL;
	}
	if (literal) {
		memcpy(rw, pat, len);
		rlen = len;
	} else if (regex_rewrite(pat, len, rw, cap, &rlen)) {
		free(rw);
		velo_errf(err, errlen, "regex too long");
		return NULL;
	}
	re = pcre2_compile((PCRE2_SPTR)rw, rlen,
			   literal ? PCRE2_UTF | PCRE2_LITERAL : PCRE2_UTF | PCRE2_UCP,
			   &ec, &eo, t->cctx);
	if (!re) {
		PCRE2_UCHAR msg[160];
		pcre2_get_error_message(ec, msg, sizeof(msg));
		velo_errf(err, errlen, "regex /%.*s/ at %zu: %s", (int)MIN(len, 80),
		       pat, (size_t)eo, (const char *)msg);
		free(rw);
		return NULL;
	}
	free(rw);
	/* JIT: ~5x the interpreter on these patterns; the interpreter stays
	 * as fallback where JIT is unavailable. */
	(void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
	return re;
}

/* ------------------------------------------------------------------ */
/* JSON helpers                                                         */

static const char *jstr(json_t *o, const char *key, size_t *len)
{
	json_t *v = json_object_get(o, key);

	if (!json_is_string(v))
		return NULL;
	if (len)
		*len = json_string_length(v);
	return json_string_value(v);
}

static bool jbool(json_t *o, const char *key, bool dflt)
{
	json_t *v = json_object_get(o, key);

	if (json_is_boolean(v))
		return json_is_true(v);
	return dflt;
}

/* Pattern object {"String": "..."} or {"Regex": "..."}. */
static int jpattern(json_t *o, const char **s, size_t *len, bool *is_regex)
{
	json_t *p = json_object_get(o, "pattern");
	json_t *v;

	if (!json_is_object(p))
		return -EINVAL;
	if ((v = json_object_get(p, "String")) && json_is_string(v)) {
		*is_regex = false;
	} else if ((v = json_object_get(p, "Regex")) && json_is_string(v)) {
		*is_regex = true;
	} else {
		return -EINVAL;
	}
	*s = json_string_value(v);
	*len = json_string_length(v);
	return 0;
}

/* An AddedToken in tokenizer_config.json: "text" or {"content": "text"}. */
static const char *jtoken_name(json_t *v)
{
	if (json_is_string(v))
		return json_string_value(v);
	if (json_is_object(v))
		return jstr(v, "content", NULL);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Normalizers and pre-tokenizers                                       */

static int parse_normalizer(struct eng_tokenizer *t, json_t *n, char *err,
			    size_t errlen)
{
	const char *type;

	if (!n || json_is_null(n))
		return 0;
	type = jstr(n, "type", NULL);
	if (!type) {
		velo_errf(err, errlen, "normalizer without type");
		return -EINVAL;
	}
	if (!strcmp(type, "Sequence")) {
		json_t *arr = json_object_get(n, "normalizers"), *e;
		size_t i;
		if (!json_is_array(arr)) {
			velo_errf(err, errlen, "normalizer Sequence without list");
			return -EINVAL;
		}
		json_array_foreach(arr, i, e) {
			int rc = parse_normalizer(t, e, err, errlen);
			if (rc)
				return rc;
		}
		return 0;
	}
	if (t->n_norm >= TOK_STEPS_MAX) {
		velo_errf(err, errlen, "more than %d normalizers", TOK_STEPS_MAX);
		return -EINVAL;
	}
	struct tok_norm *s = &t->norm[t->n_norm];
	memset(s, 0, sizeof(*s));
	if (!strcmp(type, "Prepend")) {
		size_t l;
		const char *p = jstr(n, "prepend", &l);
		if (!p || tok_arena_add(t, p, l, &s->a))
			goto bad;
		s->kind = NORM_PREPEND;
	} else if (!strcmp(type, "Replace")) {
		const char *p, *c;
		size_t pl, cl;
		bool is_re;
		if (jpattern(n, &p, &pl, &is_re) || !(c = jstr(n, "content", &cl)))
			goto bad;
		if (tok_arena_add(t, p, pl, &s->a) || tok_arena_add(t, c, cl, &s->b))
			return -ENOMEM;
		if (is_re && !(s->re = tok_regex_compile(t, p, pl, false, err, errlen)))
			return -EINVAL;
		s->kind = NORM_REPLACE;
	} else if (!strcmp(type, "NFC")) {
		s->kind = NORM_NFC;
	} else if (!strcmp(type, "NFD")) {
		s->kind = NORM_NFD;
	} else if (!strcmp(type, "NFKC")) {
		s->kind = NORM_NFKC;
	} else if (!strcmp(type, "NFKD")) {
		s->kind = NORM_NFKD;
	} else if (!strcmp(type, "Strip")) {
		s->kind = NORM_STRIP;
		s->left = jbool(n, "strip_left", true);
		s->right = jbool(n, "strip_right", true);
	} else {
		velo_errf(err, errlen, "unsupported normalizer %s", type);
		return -EINVAL;
	}
	t->n_norm++;
	return 0;
bad:
	velo_errf(err, errlen, "bad normalizer %s", type);
	return -EINVAL;
}

static const char gpt2_regex[] =
	"'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static struct tok_pre *pre_new(struct eng_tokenizer *t, char *err, size_t errlen)
{
	if (t->n_pre >= TOK_STEPS_MAX) {
		velo_errf(err, errlen, "more than %d pre-tokenizer steps", TOK_STEPS_MAX);
		return NULL;
	}
	struct tok_pre *p = &t->pre[t->n_pre++];
	memset(p, 0, sizeof(*p));
	return p;
}

static int parse_pretok(struct eng_tokenizer *t, json_t *n, char *err,
			size_t errlen)
{
	const char *type;
	struct tok_pre *p;

	if (!n || json_is_null(n))
		return 0;
	type = jstr(n, "type", NULL);
	if (!type) {
		velo_errf(err, errlen, "pre_tokenizer without type");
		return -EINVAL;
	}
	if (!strcmp(type, "Sequence")) {
		json_t *arr = json_object_get(n, "pretokenizers"), *e;
		size_t i;
		if (!json_is_array(arr)) {
			velo_errf(err, errlen, "pre_tokenizer Sequence without list");
			return -EINVAL;
		}
		json_array_foreach(arr, i, e) {
			int rc = parse_pretok(t, e, err, errlen);
			if (rc)
				return rc;
		}
		return 0;
	}
	if (!strcmp(type, "Split")) {
		const char *pat, *beh;
		size_t pl;
		bool is_re;
		if (jpattern(n, &pat, &pl, &is_re) || !(beh = jstr(n, "behavior", NULL)))
			goto bad;
		if (!(p = pre_new(t, err, errlen)))
			return -EINVAL;
		p->kind = PRE_SPLIT;
		if (!strcmp(beh, "Removed"))
			p->behavior = SPLIT_REMOVED;
		else if (!strcmp(beh, "Isolated"))
			p->behavior = SPLIT_ISOLATED;
		else if (!strcmp(beh, "MergedWithPrevious"))
			p->behavior = SPLIT_MERGED_PREV;
		else if (!strcmp(beh, "MergedWithNext"))
			p->behavior = SPLIT_MERGED_NEXT;
		else if (!strcmp(beh, "Contiguous"))
			p->behavior = SPLIT_CONTIGUOUS;
		else
			goto bad;
		p->invert = jbool(n, "invert", false);
		if (!(p->re = tok_regex_compile(t, pat, pl, !is_re, err, errlen)))
			return -EINVAL;
		return 0;
	}
	if (!strcmp(type, "ByteLevel")) {
		if (jbool(n, "add_prefix_space", true)) {
			if (!(p = pre_new(t, err, errlen)))
				return -EINVAL;
			p->kind = PRE_PREFIX_SPACE;
		}
		if (jbool(n, "use_regex", true)) {
			if (!(p = pre_new(t, err, errlen)))
				return -EINVAL;
			p->kind = PRE_SPLIT;
			p->behavior = SPLIT_ISOLATED;
			if (!(p->re = tok_regex_compile(t, gpt2_regex, sizeof(gpt2_regex) - 1,
							false, err, errlen)))
				return -EINVAL;
		}
		if (!(p = pre_new(t, err, errlen)))
			return -EINVAL;
		p->kind = PRE_BYTEMAP;
		return 0;
	}
	if (!strcmp(type, "Metaspace")) {
		size_t rl;
		const char *r = jstr(n, "replacement", &rl);
		const char *scheme = jstr(n, "prepend_scheme", NULL);
		if (!r || rl == 0 || rl > 4 || eng_utf8_seq_len((uint8_t)r[0]) != rl)
			goto bad;
		if (!(p = pre_new(t, err, errlen)))
			return -EINVAL;
		p->kind = PRE_METASPACE;
		memcpy(p->repl, r, rl);
		p->repl_len = (uint8_t)rl;
		p->split = jbool(n, "split", true);
		if (scheme) {
			if (!strcmp(scheme, "always"))
				p->prepend = PREPEND_ALWAYS;
			else if (!strcmp(scheme, "first"))
				p->prepend = PREPEND_FIRST;
			else if (!strcmp(scheme, "never"))
				p->prepend = PREPEND_NEVER;
			else
				goto bad;
		} else {
			/* files older than prepend_scheme */
			p->prepend = jbool(n, "add_prefix_space", true) ? PREPEND_ALWAYS
									: PREPEND_NEVER;
		}
		return 0;
	}
	if (!strcmp(type, "Digits")) {
		static const char one[] = "\\p{N}", many[] = "\\p{N}+";
		bool ind = jbool(n, "individual_digits", false);
		if (!(p = pre_new(t, err, errlen)))
			return -EINVAL;
		p->kind = PRE_SPLIT;
		p->behavior = SPLIT_ISOLATED;
		p->re = ind ? tok_regex_compile(t, one, sizeof(one) - 1, false, err, errlen)
			    : tok_regex_compile(t, many, sizeof(many) - 1, false, err, errlen);
		return p->re ? 0 : -EINVAL;
	}
	if (!strcmp(type, "WhitespaceSplit")) {
		static const char ws[] = "\\s+";
		if (!(p = pre_new(t, err, errlen)))
			return -EINVAL;
		p->kind = PRE_SPLIT;
		p->behavior = SPLIT_REMOVED;
		p->re = tok_regex_compile(t, ws, sizeof(ws) - 1, false, err, errlen);
		return p->re ? 0 : -EINVAL;
	}
	velo_errf(err, errlen, "unsupported pre_tokenizer %s", type);
	return -EINVAL;
bad:
	velo_errf(err, errlen, "bad pre_tokenizer %s", type);
	return -EINVAL;
}

/* ------------------------------------------------------------------ */
/* Post-processor                                                       */

static int tmpl_push(struct eng_tokenizer *t, bool before, uint32_t id,
		     char *err, size_t errlen)
{
	unsigned *n = before ? &t->n_tmpl_pre : &t->n_tmpl_post;
	uint32_t *a = before ? t->tmpl_pre : t->tmpl_post;

	if (id >= t->n_ids || *n >= TOK_TEMPLATE_MAX) {
		velo_errf(err, errlen, "post_processor: bad or too many template ids");
		return -EINVAL;
	}
	a[(*n)++] = id;
	return 0;
}

static int parse_post(struct eng_tokenizer *t, json_t *n, char *err,
		      size_t errlen)
{
	const char *type;

	if (!n || json_is_null(n))
		return 0;
	type = jstr(n, "type", NULL);
	if (!type)
		goto bad;
	if (!strcmp(type, "Sequence")) {
		json_t *arr = json_object_get(n, "processors"), *e;
		size_t i;
		if (!json_is_array(arr))
			goto bad;
		json_array_foreach(arr, i, e) {
			int rc = parse_post(t, e, err, errlen);
			if (rc)
				return rc;
		}
		return 0;
	}
	if (!strcmp(type, "ByteLevel"))
		return 0;	/* offsets only */
	if (!strcmp(type, "TemplateProcessing")) {
		json_t *single = json_object_get(n, "single"), *sp, *e;
		json_t *specials = json_object_get(n, "special_tokens");
		bool seen_seq = false;
		size_t i;
		if (!json_is_array(single))
			goto bad;
		t->n_tmpl_pre = t->n_tmpl_post = 0;
		json_array_foreach(single, i, e) {
			if (json_object_get(e, "Sequence")) {
				seen_seq = true;
				continue;
			}
			sp = json_object_get(e, "SpecialToken");
			const char *name = sp ? jstr(sp, "id", NULL) : NULL;
			json_t *st = name ? json_object_get(specials, name) : NULL;
			json_t *ids = st ? json_object_get(st, "ids") : NULL, *idv;
			size_t k;
			if (!json_is_array(ids))
				goto bad;
			json_array_foreach(ids, k, idv) {
				if (!json_is_integer(idv) || json_integer_value(idv) < 0 ||
				    tmpl_push(t, !seen_seq, (uint32_t)json_integer_value(idv),
					      err, errlen))
					goto bad;
			}
		}
		return 0;
	}
	if (!strcmp(type, "RobertaProcessing") || !strcmp(type, "BertProcessing")) {
		json_t *cls = json_object_get(n, "cls"), *sep = json_object_get(n, "sep");
		json_t *ci = json_array_get(cls, 1), *si = json_array_get(sep, 1);
		if (!json_is_integer(ci) || !json_is_integer(si))
			goto bad;
		t->n_tmpl_pre = t->n_tmpl_post = 0;
		if (tmpl_push(t, true, (uint32_t)json_integer_value(ci), err, errlen) ||
		    tmpl_push(t, false, (uint32_t)json_integer_value(si), err, errlen))
			return -EINVAL;
		return 0;
	}
	velo_errf(err, errlen, "unsupported post_processor %s", type);
	return -EINVAL;
bad:
	velo_errf(err, errlen, "bad post_processor %s", type ? type : "(no type)");
	return -EINVAL;
}

/* ------------------------------------------------------------------ */
/* Added-token tries                                                    */

static int trie_init(struct tok_trie *tr)
{
	memset(tr, 0, sizeof(*tr));
	tr->cap = 64;
	tr->nodes = calloc(tr->cap, sizeof(*tr->nodes));
	if (!tr->nodes)
		return -ENOMEM;
	tr->n = 1;
	tr->nodes[0].term = -1;
	return 0;
}

static int trie_add(struct tok_trie *tr, const char *s, size_t n, int32_t term)
{
	uint32_t cur = 0;

	for (size_t i = 0; i < n; i++) {
		uint8_t b = (uint8_t)s[i];
		uint32_t c = cur == 0 ? tr->root_child[b] : tr->nodes[cur].child;
		if (cur != 0)
			while (c && tr->nodes[c].byte != b)
				c = tr->nodes[c].sibling;
		if (!c) {
			if (tr->n == tr->cap) {
				struct tok_trie_node *nn =
					realloc(tr->nodes, 2 * tr->cap * sizeof(*nn));
				if (!nn)
					return -ENOMEM;
				tr->nodes = nn;
				tr->cap *= 2;
			}
			c = tr->n++;
			tr->nodes[c] = (struct tok_trie_node){ .term = -1, .byte = b };
			if (cur == 0) {
				tr->root_child[b] = c;
			} else {
				tr->nodes[c].sibling = tr->nodes[cur].child;
				tr->nodes[cur].child = c;
			}
		}
		cur = c;
	}
	if (cur != 0)
		tr->nodes[cur].term = term;	/* a repeated content: last wins */
	return 0;
}


static int build_added(struct eng_tokenizer *t, json_t *arr, char *err,
		       size_t errlen)
{
	json_t *e;
	size_t i, n = json_array_size(arr);

	if (trie_init(&t->trie_raw) || trie_init(&t->trie_norm))
		return -ENOMEM;
	if (!n)
		return 0;
	t->added = calloc(n, sizeof(*t->added));
	if (!t->added)
		return -ENOMEM;
	json_array_foreach(arr, i, e) {
		struct tok_added *a = &t->added[t->n_added];
		json_t *idv = json_object_get(e, "id");
		size_t cl;
		const char *c = jstr(e, "content", &cl);
		if (!json_is_integer(idv) || !c || cl == 0 ||
		    json_integer_value(idv) < 0 ||
		    (uint64_t)json_integer_value(idv) >= t->n_ids) {
			velo_errf(err, errlen, "bad added_tokens entry %zu", i);
			return -EINVAL;
		}
		a->id = (uint32_t)json_integer_value(idv);
		if (tok_arena_add(t, c, cl, &a->text))
			return -ENOMEM;
		a->special = jbool(e, "special", false);
		a->lstrip = jbool(e, "lstrip", false);
		a->rstrip = jbool(e, "rstrip", false);
		a->single_word = jbool(e, "single_word", false);
		a->normalized = jbool(e, "normalized", !a->special);
		t->tok_text[a->id] = a->text;	/* the added vocab decodes first */
		t->tok_flags[a->id] |= TOKF_ADDED | (a->special ? TOKF_SPECIAL : 0);
		t->n_added++;
	}
	return 0;
}

static int build_tries(struct eng_tokenizer *t)
{
	for (uint32_t i = 0; i < t->n_added; i++) {
		struct tok_added *a = &t->added[i];
		int rc;
		if (a->normalized && t->n_norm) {
			const char *ns;
			size_t nl;
			rc = tok_normalize_string(t, tok_str(t, a->text), a->text.len,
						  &ns, &nl);
			if (rc)
				return rc;
			if (!nl)
				continue;
			if ((rc = tok_arena_add(t, ns, nl, &a->norm)))
				return rc;
		} else {
			a->norm = a->text;
		}
		rc = a->normalized ? trie_add(&t->trie_norm, tok_str(t, a->norm),
					      a->norm.len, (int32_t)i)
				   : trie_add(&t->trie_raw, tok_str(t, a->text),
					      a->text.len, (int32_t)i);
		if (rc)
			return rc;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* Model                                                                */

static int build_model(struct eng_tokenizer *t, json_t *model, json_t *added,
		       char *err, size_t errlen)
{
	json_t *vocab = json_object_get(model, "vocab");
	json_t *merges = json_object_get(model, "merges");
	const char *type = jstr(model, "type", NULL);
	const char *key;
	json_t *v, *e;
	uint64_t max_id = 0;
	size_t i, nv;
	int rc;

	if (type && strcmp(type, "BPE")) {
		velo_errf(err, errlen, "unsupported model type %s (BPE only)", type);
		return -EINVAL;
	}
	if (!json_is_object(vocab) || (merges && !json_is_array(merges))) {
		velo_errf(err, errlen, "model without vocab/merges");
		return -EINVAL;
	}
	json_t *dropout = json_object_get(model, "dropout");
	if (json_is_number(dropout) && json_number_value(dropout) > 0) {
		velo_errf(err, errlen, "BPE dropout is not supported");
		return -EINVAL;
	}
	const char *pfx = jstr(model, "continuing_subword_prefix", NULL);
	const char *sfx = jstr(model, "end_of_word_suffix", NULL);
	if ((pfx && *pfx) || (sfx && *sfx)) {
		velo_errf(err, errlen, "BPE subword prefix/suffix not supported");
		return -EINVAL;
	}
	nv = json_object_size(vocab);
	if (!nv) {
		velo_errf(err, errlen, "empty vocab");
		return -EINVAL;
	}
	json_object_foreach(vocab, key, v) {
		if (!json_is_integer(v) || json_integer_value(v) < 0 ||
		    json_integer_value(v) >= TOK_IDS_MAX) {
			velo_errf(err, errlen, "bad vocab id for %.40s", key);
			return -EINVAL;
		}
		max_id = MAX(max_id, (uint64_t)json_integer_value(v));
	}
	json_array_foreach(added, i, e) {
		json_t *idv = json_object_get(e, "id");
		if (json_is_integer(idv) && json_integer_value(idv) >= 0 &&
		    json_integer_value(idv) < TOK_IDS_MAX)
			max_id = MAX(max_id, (uint64_t)json_integer_value(idv));
	}
	t->n_ids = (uint32_t)max_id + 1;
	t->tok_text = malloc(t->n_ids * sizeof(*t->tok_text));
	t->model_text = malloc(t->n_ids * sizeof(*t->model_text));
	t->tok_flags = calloc(t->n_ids, 1);
	t->vh_mask = pow2_at_least((uint64_t)nv * 2) - 1;
	t->vh_ids = calloc((size_t)t->vh_mask + 1, sizeof(uint32_t));
	t->vh_hash = calloc((size_t)t->vh_mask + 1, sizeof(uint32_t));
	if (!t->tok_text || !t->model_text || !t->tok_flags || !t->vh_ids || !t->vh_hash)
		return -ENOMEM;
	for (uint32_t k = 0; k < t->n_ids; k++)
		t->tok_text[k] = t->model_text[k] = (struct tok_span){ 0, TOK_NONE };

	void *it;
	for (it = json_object_iter(vocab); it; it = json_object_iter_next(vocab, it)) {
		size_t kl = json_object_iter_key_len(it);
		uint32_t id = (uint32_t)json_integer_value(json_object_iter_value(it));
		struct tok_span sp;
		if ((rc = tok_arena_add(t, json_object_iter_key(it), kl, &sp)))
			return rc;
		if (t->model_text[id].len != TOK_NONE)
			continue;	/* two strings, one id: keep the first */
		t->model_text[id] = t->tok_text[id] = sp;
		vocab_insert(t, id);
	}

	/* single code points, for the BPE word set-up without hashing */
	for (uint32_t cp = 0; cp < ARRAY_SIZE(t->char_id); cp++) {
		char b[4];
		unsigned l = eng_utf8_encode(cp, b);
		t->char_id[cp] = tok_vocab_find(t, b, l);
	}
	for (unsigned b = 0; b < 256; b++) {
		char name[8];
		snprintf(name, sizeof(name), "<0x%02X>", b);
		t->bf_id[b] = tok_vocab_find(t, name, 6);
	}

	t->byte_fallback = jbool(model, "byte_fallback", false);
	t->ignore_merges = jbool(model, "ignore_merges", false);
	t->fuse_unk = jbool(model, "fuse_unk", false);
	size_t ul;
	const char *unk = jstr(model, "unk_token", &ul);
	t->unk_id = unk ? tok_vocab_find(t, unk, ul) : TOK_NONE;

	size_t nm = merges ? json_array_size(merges) : 0;
	if (nm >= TOK_IDS_MAX * 4u) {
		velo_errf(err, errlen, "too many merges");
		return -E2BIG;
	}
	t->mh_mask = pow2_at_least((uint64_t)nm * 2 + 2) - 1;
	t->mh = malloc(((size_t)t->mh_mask + 1) * sizeof(*t->mh));
	if (!t->mh)
		return -ENOMEM;
	for (size_t k = 0; k <= t->mh_mask; k++)
		t->mh[k].a = TOK_NONE;
	char *cat = NULL;
	size_t cat_cap = 0;
	json_array_foreach(merges, i, e) {
		const char *a, *b;
		size_t al, bl;
		if (json_is_string(e)) {
			/* "a b": exactly one space, as HF requires */
			a = json_string_value(e);
			const char *sp = memchr(a, ' ', json_string_length(e));
			if (!sp || memchr(sp + 1, ' ', json_string_length(e) -
							     (size_t)(sp + 1 - a)))
				goto bad_merge;
			al = (size_t)(sp - a);
			b = sp + 1;
			bl = json_string_length(e) - al - 1;
		} else if (json_is_array(e) && json_array_size(e) == 2 &&
			   json_is_string(json_array_get(e, 0)) &&
			   json_is_string(json_array_get(e, 1))) {
			a = json_string_value(json_array_get(e, 0));
			al = json_string_length(json_array_get(e, 0));
			b = json_string_value(json_array_get(e, 1));
			bl = json_string_length(json_array_get(e, 1));
		} else {
			goto bad_merge;
		}
		uint32_t ia = tok_vocab_find(t, a, al), ib = tok_vocab_find(t, b, bl);
		if (al + bl > cat_cap) {
			cat_cap = 2 * (al + bl) + 64;
			char *nc = realloc(cat, cat_cap);
			if (!nc) {
				free(cat);
				return -ENOMEM;
			}
			cat = nc;
		}
		memcpy(cat, a, al);
		memcpy(cat + al, b, bl);
		uint32_t im = tok_vocab_find(t, cat, al + bl);
		if (ia == TOK_NONE || ib == TOK_NONE || im == TOK_NONE) {
			free(cat);
			velo_errf(err, errlen, "merge %zu (%.*s %.*s) out of vocabulary", i,
			       (int)MIN(al, 40), a, (int)MIN(bl, 40), b);
			return -EINVAL;
		}
		merge_insert(t, ia, ib, (uint32_t)i, im);
	}
	free(cat);
	t->n_merges = (uint32_t)nm;
	return 0;
bad_merge:
	free(cat);
	velo_errf(err, errlen, "bad merge entry %zu", i);
	return -EINVAL;
}

/* ------------------------------------------------------------------ */
/* tokenizer_config.json                                                */

static uint32_t lookup_any(const struct eng_tokenizer *t, const char *s)
{
	return s ? eng_tok_id(t, s) : TOK_NONE;
}

static int parse_config(struct eng_tokenizer *t, json_t *cfg, char *err,
			size_t errlen)
{
	json_t *ct;

	t->bos_id = lookup_any(t, jtoken_name(json_object_get(cfg, "bos_token")));
	t->eos_id = lookup_any(t, jtoken_name(json_object_get(cfg, "eos_token")));
	/* transformers' default since 4.45 is False; older files say True */
	t->cleanup = jbool(cfg, "clean_up_tokenization_spaces", false);

	/*
	 * LlamaTokenizerFast and friends rebuild the post-processor from
	 * add_bos_token/add_eos_token; a config that states either decides.
	 */
	json_t *ab = json_object_get(cfg, "add_bos_token");
	json_t *ae = json_object_get(cfg, "add_eos_token");
	if (json_is_boolean(ab) || json_is_boolean(ae)) {
		t->n_tmpl_pre = t->n_tmpl_post = 0;
		if (json_is_true(ab) && t->bos_id != TOK_NONE &&
		    tmpl_push(t, true, t->bos_id, err, errlen))
			return -EINVAL;
		if (json_is_true(ae) && t->eos_id != TOK_NONE &&
		    tmpl_push(t, false, t->eos_id, err, errlen))
			return -EINVAL;
	}

	ct = json_object_get(cfg, "chat_template");
	const char *tmpl = NULL;
	if (json_is_string(ct)) {
		tmpl = json_string_value(ct);
	} else if (json_is_array(ct)) {
		json_t *e;
		size_t i;
		json_array_foreach(ct, i, e) {
			const char *name = jstr(e, "name", NULL);
			if (!tmpl || (name && !strcmp(name, "default")))
				tmpl = jstr(e, "template", NULL);
		}
	}
	if (tmpl && !(t->chat_template = strdup(tmpl)))
		return -ENOMEM;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Scratch                                                              */

static int alloc_scratch(struct eng_tokenizer *t, size_t text_max)
{
	t->text_max = text_max;
	/* normalisers and pre-tokenizers grow text: " " -> "▁" is 3x,
	 * ByteLevel 2x; 4x covers every real configuration, more is E2BIG */
	t->buf_cap = 4 * text_max + 64;
	t->pieces_cap = 2 * text_max + 64;
	t->sym_cap = 2 * text_max + 64;
	t->heap_cap = 3 * t->sym_cap;
	for (int i = 0; i < 2; i++) {
		t->buf[i] = malloc(t->buf_cap);
		t->pieces[i] = malloc(t->pieces_cap * sizeof(struct tok_piece));
		if (!t->buf[i] || !t->pieces[i])
			return -ENOMEM;
	}
	t->sym = malloc(t->sym_cap * sizeof(*t->sym));
	t->heap = malloc(t->heap_cap * sizeof(*t->heap));
	if (!t->sym || !t->heap)
		return -ENOMEM;
	/* NFC code points share the symbol array (never live together) */
	t->cps = (int32_t *)t->sym;
	t->cps_cap = t->sym_cap * sizeof(*t->sym) / sizeof(int32_t);

	t->gctx = pcre2_general_context_create(NULL, NULL, NULL);
	t->cctx = pcre2_compile_context_create(t->gctx);
	t->mctx = pcre2_match_context_create(t->gctx);
	t->jit_stack = pcre2_jit_stack_create(32 * 1024, TOK_JIT_STACK_BYTES, t->gctx);
	t->md = pcre2_match_data_create(1, t->gctx);
	if (!t->gctx || !t->cctx || !t->mctx || !t->jit_stack || !t->md)
		return -ENOMEM;
	pcre2_jit_stack_assign(t->mctx, NULL, t->jit_stack);
	pcre2_set_match_limit(t->mctx, CONFIG_ENGINE_TOK_REGEX_MATCH_LIMIT);
	pcre2_set_depth_limit(t->mctx, 10000);
	return 0;
}

/* ------------------------------------------------------------------ */
/* Load / free                                                          */

struct eng_tokenizer *eng_tok_load(const void *blob, size_t len,
				   size_t text_bytes_max, char *err,
				   size_t errlen)
{
	struct eng_tok_blob_hdr h;
	struct eng_tokenizer *t;
	json_t *root = NULL, *cfg = NULL;
	json_error_t je;
	int rc = -EINVAL;

	velo_errf(err, errlen, "ok");
	bytemap_init();
	if (!blob || len < sizeof(h)) {
		velo_errf(err, errlen, "tokenizer blob too short");
		errno = EINVAL;
		return NULL;
	}
	memcpy(&h, blob, sizeof(h));
	if (h.magic != ENG_TOK_MAGIC || h.version != ENG_TOK_VERSION) {
		velo_errf(err, errlen, "bad tokenizer blob magic/version");
		errno = EINVAL;
		return NULL;
	}
	if ((uint64_t)h.tokenizer_json_len + h.tokenizer_config_json_len >
	    len - sizeof(h)) {
		velo_errf(err, errlen, "tokenizer blob lengths exceed the blob");
		errno = EINVAL;
		return NULL;
	}
	if (!text_bytes_max)
		text_bytes_max = CONFIG_ENGINE_TOK_TEXT_BYTES_MAX;
	if (text_bytes_max > (1u << 28)) {
		velo_errf(err, errlen, "text budget too large");
		errno = E2BIG;
		return NULL;
	}
	t = calloc(1, sizeof(*t));
	if (!t) {
		errno = ENOMEM;
		return NULL;
	}
	t->bos_id = t->eos_id = t->unk_id = TOK_NONE;
	if ((rc = alloc_scratch(t, text_bytes_max)))
		goto err_free;

	const char *js = (const char *)blob + sizeof(h);
	root = json_loadb(js, h.tokenizer_json_len, JSON_ALLOW_NUL, &je);
	if (!json_is_object(root)) {
		velo_errf(err, errlen, "tokenizer.json: %s (line %d)", je.text, je.line);
		rc = -EINVAL;
		goto err_free;
	}
	if (h.tokenizer_config_json_len) {
		/* INT_AS_REAL: transformers writes model_max_length = 1e30 as an
		 * integer literal (over int64) when a tokenizer has no limit;
		 * nothing read from this file is an integer. */
		cfg = json_loadb(js + h.tokenizer_json_len, h.tokenizer_config_json_len,
				 JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &je);
		if (!json_is_object(cfg)) {
			velo_errf(err, errlen, "tokenizer_config.json: %s (line %d)",
			       je.text, je.line);
			rc = -EINVAL;
			goto err_free;
		}
	} else {
		cfg = json_object();
	}

	json_t *added = json_object_get(root, "added_tokens");
	if (added && !json_is_array(added)) {
		velo_errf(err, errlen, "added_tokens is not a list");
		rc = -EINVAL;
		goto err_free;
	}
	if ((rc = build_model(t, json_object_get(root, "model"), added, err, errlen)))
		goto err_free;
	if ((rc = build_added(t, added, err, errlen)))
		goto err_free;
	if ((rc = parse_normalizer(t, json_object_get(root, "normalizer"), err, errlen)))
		goto err_free;
	if ((rc = parse_pretok(t, json_object_get(root, "pre_tokenizer"), err, errlen)))
		goto err_free;
	if ((rc = build_tries(t)))
		goto err_free;
	if ((rc = parse_post(t, json_object_get(root, "post_processor"), err, errlen)))
		goto err_free;
	if ((rc = tok_decoder_build(t, json_object_get(root, "decoder"), err, errlen)))
		goto err_free;
	if ((rc = parse_config(t, cfg, err, errlen)))
		goto err_free;

	json_decref(root);
	json_decref(cfg);
	t->ctr_registered = ctr_block_register("tok", tok_ctr_desc, t->ctr,
					       ENG_TOK_CTR__COUNT) == 0;
	LOG_I(eng, "tokenizer: %u ids, %u merges, %u added, %u normalizer and %u "
		   "pre-tokenizer steps, text budget %zu bytes",
	      t->n_ids, t->n_merges, t->n_added, t->n_norm, t->n_pre, t->text_max);
	return t;

err_free:
	if (rc == -ENOMEM)
		velo_errf(err, errlen, "out of memory");
	json_decref(root);
	json_decref(cfg);
	eng_tok_free(t);
	errno = -rc;
	return NULL;
}

void eng_tok_free(struct eng_tokenizer *t)
{
	if (!t)
		return;
	if (t->ctr_registered)
		ctr_block_unregister(t->ctr);
	for (unsigned i = 0; i < t->n_norm; i++)
		pcre2_code_free(t->norm[i].re);
	for (unsigned i = 0; i < t->n_pre; i++)
		pcre2_code_free(t->pre[i].re);
	pcre2_match_data_free(t->md);
	pcre2_jit_stack_free(t->jit_stack);
	pcre2_match_context_free(t->mctx);
	pcre2_compile_context_free(t->cctx);
	pcre2_general_context_free(t->gctx);
	for (int i = 0; i < 2; i++) {
		free(t->buf[i]);
		free(t->pieces[i]);
	}
	free(t->sym);
	free(t->heap);
	free(t->trie_raw.nodes);
	free(t->trie_norm.nodes);
	free(t->added);
	free(t->mh);
	free(t->vh_ids);
	free(t->vh_hash);
	free(t->tok_text);
	free(t->model_text);
	free(t->tok_flags);
	free(t->dec);
	free(t->dec_first);
	free(t->chat_template);
	free(t->arena);
	free(t);
}

/* ------------------------------------------------------------------ */
/* Lookups                                                              */

uint32_t eng_tok_id(const struct eng_tokenizer *t, const char *s)
{
	if (!t || !s)
		return TOK_NONE;
	size_t n = strlen(s);
	for (uint32_t i = 0; i < t->n_added; i++) {
		const struct tok_added *a = &t->added[i];
		if (a->text.len == n && !memcmp(tok_str(t, a->text), s, n))
			return a->id;
	}
	return tok_vocab_find(t, s, n);
}

const char *eng_tok_token(const struct eng_tokenizer *t, uint32_t id, size_t *len)
{
	if (!t || id >= t->n_ids || t->tok_text[id].len == TOK_NONE)
		return NULL;
	if (len)
		*len = t->tok_text[id].len;
	return tok_str(t, t->tok_text[id]);
}

uint32_t eng_tok_vocab_size(const struct eng_tokenizer *t)
{
	return t ? t->n_ids : 0;
}

uint32_t eng_tok_bos_id(const struct eng_tokenizer *t)
{
	return t ? t->bos_id : TOK_NONE;
}

uint32_t eng_tok_eos_id(const struct eng_tokenizer *t)
{
	return t ? t->eos_id : TOK_NONE;
}

bool eng_tok_is_special(const struct eng_tokenizer *t, uint32_t id)
{
	return t && id < t->n_ids && (t->tok_flags[id] & TOKF_SPECIAL);
}

const char *eng_tok_chat_template(const struct eng_tokenizer *t)
{
	return t ? t->chat_template : NULL;
}

const uint64_t *eng_tok_counters(const struct eng_tokenizer *t)
{
	return t ? t->ctr : NULL;
}
