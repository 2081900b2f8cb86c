// SPDX-License-Identifier: MIT
/*
 * test_stream.c — the per-request output stream against references.
 *
 * References:
 * - Hugging Face's decode() of every fixture string (tests/fixtures/models/
 *   <name>/tokens.json, llama3 / qwen2 byte-level, spm byte fallback):
 *   without stops, the concatenated chunks must equal it, in every
 *   granularity.
 * - A naive model of the stop rules computed here: run the tokenizer's
 *   plain streaming detokenizer over the ids, and after each token look
 *   for any stop sequence anywhere in the whole text so far (memmem); the
 *   first token where one appears ends the stream and the text is cut at
 *   the earliest such occurrence.  Stop ids, EOS and max_tokens as
 *   stream.h orders them.  The stream's hold-back must give the same text,
 *   the same ids, the same finish reason — over crafted texts whose stop
 *   sequences and multi-byte characters straddle tokens, the fixture
 *   strings, and thousands of seeded random cases (random ids, stop
 *   sequences cut out of the text, random modes).
 * Also: chunk bounds (32 ids, 304 bytes, whole code points), FIRST/LAST
 * flags and first_index, granularity rules, min_tokens, ignore_eos,
 * parameter errors, -EBUSY/-EALREADY, ids-only streams, no allocation.
 */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../engine/core/stream.h"
#include "../../engine/core/utf8.h"
#include "alloc_count.h"
#include "testutil.h"

/* ---- fixtures ----------------------------------------------------------- */

#define N_TOK 3
static const char *const tok_names[N_TOK] = { "llama3", "qwen2", "spm" };
static struct eng_tokenizer *toks[N_TOK];
static json_t *cases[N_TOK];
static const char *srcdir;

/* A fixture's tokenizer as its image carries it. */
static struct eng_tokenizer *load_fixture(const char *name)
{
	char d[PATH_MAX + 64];
	struct eng_tokenizer *t;

	snprintf(d, sizeof(d), "%s/tests/fixtures/models/%s", srcdir, name);
	t = velo_test_tok_load_dir(d, 0);
	if (!t)
		fail_msg("load %s", name);
	return t;
}

static int setup(void **state)
{
	(void)state;
	if (!(srcdir = velo_test_srctree()))
		return -1;
	for (int i = 0; i < N_TOK; i++) {
		char p[PATH_MAX + 128];
		json_error_t je;

		toks[i] = load_fixture(tok_names[i]);
		snprintf(p, sizeof(p), "%s/tests/fixtures/models/%s/tokens.json",
			 srcdir, tok_names[i]);
		cases[i] = json_load_file(p, 0, &je);
		if (!toks[i] || !cases[i])
			return -1;
	}
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	for (int i = 0; i < N_TOK; i++) {
		eng_tok_free(toks[i]);
		json_decref(cases[i]);
	}
	return 0;
}

static uint64_t trng = 88172645463325252ull;

static uint32_t rnd(uint32_t n)
{
	trng ^= trng << 13;
	trng ^= trng >> 7;
	trng ^= trng << 17;
	return (uint32_t)((trng >> 11) % n);
}

/* ---- running a stream ------------------------------------------------------- */

#define MAXIDS 2048
#define MAXTEXT 32768

struct out {
	uint32_t ids[MAXIDS];
	uint32_t n_ids;
	char text[MAXTEXT];
	size_t text_len;
	int reason;
	unsigned chunks, text_only_chunks, sentence_chunks;
	uint32_t chunk_ids[MAXIDS];	/* ids per chunk */
	uint32_t chunk_flags[MAXIDS];
	uint32_t chunk_text_end[MAXIDS]; /* text_len after each chunk */
};

/* Take every ready chunk, checking bounds, flags and indices. */
static void drain(struct eng_stream *st, struct out *o)
{
	uint32_t ids[ENG_STREAM_CHUNK_IDS_MAX + 1];
	char text[ENG_STREAM_CHUNK_TEXT_MAX + 1];
	uint16_t n_ids, text_len, flags;
	uint32_t first;

	while (eng_stream_ready(st)) {
		assert_int_equal(eng_stream_take_chunk(st, ids, &n_ids, text,
						       &text_len, &flags, &first), 1);
		assert_true(n_ids <= ENG_STREAM_CHUNK_IDS_MAX);
		assert_true(text_len <= ENG_STREAM_CHUNK_TEXT_MAX);
		assert_true(n_ids > 0 || text_len > 0 || (flags & PROTO_TOK_LAST));
		/* Whole code points only. */
		assert_true(eng_utf8_valid(text, text_len));
		assert_int_equal(first, o->n_ids);
		assert_int_equal(!!(flags & PROTO_TOK_FIRST), o->chunks == 0);
		assert_true(o->chunks < MAXIDS);
		assert_true(o->n_ids + n_ids <= MAXIDS);
		assert_true(o->text_len + text_len <= MAXTEXT);
		memcpy(o->ids + o->n_ids, ids, n_ids * sizeof(*ids));
		o->n_ids += n_ids;
		memcpy(o->text + o->text_len, text, text_len);
		o->text_len += text_len;
		o->chunk_ids[o->chunks] = n_ids;
		o->chunk_flags[o->chunks] = flags;
		o->chunk_text_end[o->chunks] = (uint32_t)o->text_len;
		o->chunks++;
		if (!n_ids && text_len)
			o->text_only_chunks++;
		if (flags & PROTO_TOK_SENTENCE)
			o->sentence_chunks++;
		if (flags & PROTO_TOK_LAST) {
			assert_false(eng_stream_ready(st));
			assert_true(eng_stream_done(st));
		}
	}
	assert_int_equal(eng_stream_take_chunk(st, ids, &n_ids, text, &text_len,
					       &flags, &first), 0);
}

/* Push @ids until the stream finishes; if they run out, finish it with
 * CANCELLED.  Returns the number of ids pushed. */
static uint32_t run_stream(const struct eng_tokenizer *tok,
			   const struct eng_stream_params *p,
			   const uint32_t *ids, uint32_t n, struct out *o)
{
	static struct eng_stream st;
	uint32_t i;
	bool ready;
	int rc = 0;

	memset(o, 0, sizeof(*o));
	assert_int_equal(eng_stream_init(&st, tok, p), 0);
	for (i = 0; i < n; i++) {
		rc = eng_stream_push(&st, tok, ids[i], &ready);
		assert_true(rc == 0 || rc == 1);
		assert_int_equal(ready, eng_stream_ready(&st));
		drain(&st, o);
		if (rc == 1)
			break;
	}
	if (rc == 1) {
		i++;
		assert_int_equal(eng_stream_push(&st, tok, 1, NULL), -EALREADY);
	} else {
		assert_int_equal(eng_stream_finish_reason(&st), -1);
		assert_int_equal(eng_stream_finish(&st, tok, PROTO_FINISH_CANCELLED), 0);
		drain(&st, o);
	}
	assert_true(eng_stream_done(&st));
	assert_true(o->chunks > 0);
	assert_true(o->chunk_flags[o->chunks - 1] & PROTO_TOK_LAST);
	o->reason = eng_stream_finish_reason(&st);
	assert_int_equal(eng_stream_tokens(&st), i);
	assert_int_equal(eng_stream_finish(&st, tok, PROTO_FINISH_ERROR), -EALREADY);
	return i;
}

/* ---- the reference model ------------------------------------------------------ */

struct ref {
	char text[MAXTEXT];
	size_t text_len;
	uint32_t n_ids;		/* ids the stream takes */
	int reason;
};

/* Earliest start of any stop sequence in text[0, len), or -1. */
static long first_stop(const struct eng_stream_params *p, const char *text,
		       size_t len)
{
	long best = -1;

	for (uint32_t k = 0; k < p->n_stop_seqs; k++) {
		const char *m = memmem(text, len, p->stop_seqs[k], p->stop_seq_lens[k]);

		if (m && (best < 0 || m - text < best))
			best = m - text;
	}
	return best;
}

static bool ref_is_eos(const struct eng_stream_params *p, uint32_t id)
{
	if (id == p->eos_id)
		return true;
	for (uint32_t i = 0; i < p->n_eos_ids; i++)
		if (p->eos_ids[i] == id)
			return true;
	return false;
}

static bool ref_is_stop_id(const struct eng_stream_params *p, uint32_t id)
{
	for (uint32_t i = 0; i < p->n_stop_ids; i++)
		if (p->stop_ids[i] == id)
			return true;
	return false;
}

/* min_tokens is 0 in every reference run: the model has no suppression. */
static void reference(const struct eng_tokenizer *tok,
		      const struct eng_stream_params *p, const uint32_t *ids,
		      uint32_t n, struct ref *r)
{
	struct eng_detok d;
	char buf[4096];
	ssize_t k;
	long s;

	assert_int_equal(p->min_tokens, 0);
	memset(r, 0, sizeof(*r));
	r->reason = PROTO_FINISH_CANCELLED;
	eng_detok_init(tok, &d, p->detok_flags);
	for (uint32_t i = 0; i < n; i++) {
		bool fin = false;

		r->n_ids = i + 1;
		if (ref_is_stop_id(p, ids[i])) {
			r->reason = PROTO_FINISH_STOP_TOKEN;
			fin = true;
		} else if (!p->ignore_eos && ref_is_eos(p, ids[i])) {
			r->reason = PROTO_FINISH_EOS;
			fin = true;
		} else {
			k = eng_detok_push(tok, &d, ids[i], buf, sizeof(buf));
			assert_true(k >= 0);
			memcpy(r->text + r->text_len, buf, (size_t)k);
			r->text_len += (size_t)k;
			s = first_stop(p, r->text, r->text_len);
			if (s >= 0) {
				r->text_len = (size_t)s;
				r->reason = PROTO_FINISH_STOP_SEQUENCE;
				return;
			}
			if (p->max_tokens && i + 1 == p->max_tokens) {
				r->reason = PROTO_FINISH_LENGTH;
				fin = true;
			}
		}
		if (fin)
			break;
		if (i + 1 == n)
			r->n_ids = n;
	}
	/* The end: the flush, stop sequences once more. */
	k = eng_detok_flush(tok, &d, buf, sizeof(buf));
	assert_true(k >= 0);
	memcpy(r->text + r->text_len, buf, (size_t)k);
	r->text_len += (size_t)k;
	s = first_stop(p, r->text, r->text_len);
	if (s >= 0) {
		r->text_len = (size_t)s;
		if (r->reason == PROTO_FINISH_LENGTH)
			r->reason = PROTO_FINISH_STOP_SEQUENCE;
	}
}

/* Independent sentence-end test of stream.h's rule at text[i]. */
static bool ends_sentence_at(const char *s, size_t len, size_t i)
{
	if (s[i] == '\n')
		return true;
	return (s[i] == '.' || s[i] == '!' || s[i] == '?') &&
	       (i + 1 == len || s[i + 1] == ' ' || s[i + 1] == '\n');
}

/* The SENTENCE flag against the rule, for any mode: set only on a chunk
 * whose text has a sentence end followed by nothing but spaces/newlines;
 * always set on such a chunk when its text ends with the space/newline
 * (when it ends with the '.', whether it is an end may not be known yet). */
static void check_sentence_flags(const struct out *o)
{
	for (unsigned c = 0, start = 0; c < o->chunks; c++) {
		unsigned end = o->chunk_text_end[c];
		bool tail_end = false;

		for (unsigned i = start; i < end; i++) {
			if (!ends_sentence_at(o->text, o->text_len, i))
				continue;
			tail_end = true;
			for (unsigned j = i + 1; j < end; j++)
				if (o->text[j] != ' ' && o->text[j] != '\n')
					tail_end = false;
		}
		if (o->chunk_flags[c] & PROTO_TOK_SENTENCE)
			assert_true(tail_end);
		else if (tail_end)
			assert_true(o->text[end - 1] != ' ' && o->text[end - 1] != '\n');
		start = end;
	}
}

static void check_against_ref(const struct eng_tokenizer *tok,
			      const struct eng_stream_params *p,
			      const uint32_t *ids, uint32_t n, struct out *o)
{
	static struct ref r;
	uint32_t pushed;

	reference(tok, p, ids, n, &r);
	pushed = run_stream(tok, p, ids, n, o);
	assert_int_equal(pushed, r.n_ids);
	assert_int_equal(o->n_ids, r.n_ids);
	assert_memory_equal(o->ids, ids, r.n_ids * sizeof(*ids));
	if (o->text_len != r.text_len || memcmp(o->text, r.text, r.text_len))
		fail_msg("text differs:\n stream [%.*s]\n    ref [%.*s]",
			 (int)o->text_len, o->text, (int)r.text_len, r.text);
	assert_int_equal(o->reason, r.reason);
	check_sentence_flags(o);
}

static void params_init(struct eng_stream_params *p, enum proto_stream mode,
			uint32_t k)
{
	memset(p, 0, sizeof(*p));
	p->mode = mode;
	p->every_k = k;
	p->eos_id = ENG_TOK_NONE;
}

static void add_stop(struct eng_stream_params *p, const char *s, size_t len)
{
	p->stop_seqs[p->n_stop_seqs] = s;
	p->stop_seq_lens[p->n_stop_seqs] = (uint32_t)len;
	p->n_stop_seqs++;
}

static uint32_t encode(struct eng_tokenizer *tok, const char *text,
		       uint32_t *ids, uint32_t cap)
{
	size_t n = 0;

	assert_int_equal(eng_tok_encode(tok, text, strlen(text), false, ids, cap, &n), 0);
	return (uint32_t)n;
}

/* ---- HF decode, no stops ------------------------------------------------------- */

static void test_fixture_strings(void **state)
{
	static struct out o;
	static uint32_t ids[MAXIDS];
	enum proto_stream modes[] = { PROTO_STREAM_TOKEN, PROTO_STREAM_EVERY_K,
				      PROTO_STREAM_SENTENCE };
	unsigned n_cases = 0;

	(void)state;
	for (int t = 0; t < N_TOK; t++) {
		json_t *arr = json_object_get(cases[t], "cases"), *c;
		size_t ci;

		json_array_foreach(arr, ci, c) {
			json_t *jids = json_object_get(c, "ids"), *v;
			const char *dec = json_string_value(json_object_get(c, "decoded"));
			size_t dl = json_string_length(json_object_get(c, "decoded"));
			uint32_t n = 0;
			size_t vi;

			json_array_foreach(jids, vi, v)
				ids[n++] = (uint32_t)json_integer_value(v);
			for (unsigned m = 0; m < 3; m++) {
				struct eng_stream_params p;

				params_init(&p, modes[m], 3);
				run_stream(toks[t], &p, ids, n, &o);
				if (o.text_len != dl || memcmp(o.text, dec, dl))
					fail_msg("%s case %zu mode %u: [%.*s] != HF [%s]",
						 tok_names[t], ci, m, (int)o.text_len,
						 o.text, dec);
				assert_int_equal(o.n_ids, n);
				assert_int_equal(o.reason, PROTO_FINISH_CANCELLED);
				n_cases++;
			}
		}
	}
	assert_true(n_cases > 100);
}

/* ---- stop sequences across tokens, multi-byte text --------------------------- */

static const char crafted[] =
	"Hello world. The quick brown fox jumps over the lazy dog! "
	"Tom said: STOP here, and again.\nNext line: \xc3\xbcn\xc3\xaf" "c\xc3\xb6"
	"d\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e text \xf0\x9f\x8e\x89 "
	"end? Yes. Done.\n\nLast words here";

static void test_stop_sequences_split(void **state)
{
	static struct out o;
	static uint32_t ids[MAXIDS];
	const char *stops[] = {
		"lazy d", "STOP h", "ck br", "\xe6\x97\xa5\xe6\x9c\xac",
		"\xf0\x9f\x8e\x89", "\xc3\xaf" "c", ".\nNext", "Done.\n\nL",
		"ere", "o", "words here", "not in the text",
	};
	unsigned straddle = 0;

	(void)state;
	for (int t = 0; t < N_TOK; t++) {
		uint32_t n = encode(toks[t], crafted, ids, MAXIDS);

		for (size_t s = 0; s < sizeof(stops) / sizeof(stops[0]); s++) {
			for (int mode = 0; mode < 3; mode++) {
				struct eng_stream_params p;

				params_init(&p, (enum proto_stream)mode, 2);
				add_stop(&p, stops[s], strlen(stops[s]));
				check_against_ref(toks[t], &p, ids, n, &o);
				if (!strstr(crafted, stops[s])) {
					assert_int_equal(o.reason, PROTO_FINISH_CANCELLED);
					assert_int_equal(o.n_ids, n);
					continue;
				}
				assert_int_equal(o.reason, PROTO_FINISH_STOP_SEQUENCE);
				/* The text is exactly what precedes the first
				 * occurrence in the original string. */
				assert_int_equal(o.text_len,
						 strstr(crafted, stops[s]) - crafted);
				assert_memory_equal(o.text, crafted, o.text_len);
			}
			/* Does this stop straddle tokens?  The text of the
			 * ids before the last one taken does not contain
			 * all of it but reaches into it. */
			{
				char buf[4096];
				const char *m = strstr(crafted, stops[s]);
				ssize_t k;

				if (!m)
					continue;
				k = eng_tok_decode(toks[t], ids, o.n_ids - 1, false,
						   buf, sizeof(buf));
				assert_true(k >= 0);
				if (k > m - crafted)
					straddle++;
			}
		}
		/* Two stops: the earliest occurrence wins, whichever is
		 * listed first. */
		{
			struct eng_stream_params p;

			params_init(&p, PROTO_STREAM_TOKEN, 0);
			add_stop(&p, "words", 5);
			add_stop(&p, "fox", 3);
			check_against_ref(toks[t], &p, ids, n, &o);
			assert_int_equal(o.text_len, strstr(crafted, "fox") - crafted);
		}
	}
	/* The crafted stops really cross token boundaries. */
	assert_true(straddle >= 10);
}

static void test_multibyte_split(void **state)
{
	static struct out o;
	static uint32_t ids[MAXIDS];
	const char *text = "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xf0\x9f\x8e\x89"
			   "\xf0\x9f\xa7\xac \xce\x95\xce\xbb\xce\xbb \xe4\xb8\xad";
	unsigned split = 0;

	(void)state;
	for (int t = 0; t < N_TOK; t++) {
		uint32_t n = encode(toks[t], text, ids, MAXIDS);
		struct eng_stream_params p;

		/* The fixture vocabularies split these characters into bytes. */
		if (n > 11)	/* 11 characters */
			split++;
		params_init(&p, PROTO_STREAM_TOKEN, 0);
		run_stream(toks[t], &p, ids, n, &o);
		assert_int_equal(o.text_len, strlen(text));
		assert_memory_equal(o.text, text, o.text_len);
		/* Token mode: one id per chunk, so chunks with no text show
		 * bytes held for an incomplete code point. */
		{
			unsigned empty = 0;

			for (unsigned c = 0; c < o.chunks; c++) {
				assert_true(o.chunk_ids[c] <= 1);
				if (c > 0 && o.chunk_text_end[c] == o.chunk_text_end[c - 1])
					empty++;
			}
			if (n > 11)
				assert_true(empty > 0);
		}
		/* A stop sequence that is the second half of a character
		 * never matches inside it (it is not valid UTF-8 alone). */
		params_init(&p, PROTO_STREAM_TOKEN, 0);
		add_stop(&p, "\x97\xa5", 2);
		assert_int_equal(eng_stream_init(&(struct eng_stream){ 0 }, toks[t], &p),
				 -EINVAL);
		/* A whole multi-byte stop sequence. */
		params_init(&p, PROTO_STREAM_EVERY_K, 4);
		add_stop(&p, "\xf0\x9f\xa7\xac", 4);
		check_against_ref(toks[t], &p, ids, n, &o);
		assert_int_equal(o.reason, PROTO_FINISH_STOP_SEQUENCE);
		assert_int_equal(o.text_len, 13);
	}
	assert_true(split > 0);
}

/* ---- random property test ------------------------------------------------------ */

static void test_random_hold_back(void **state)
{
	static struct out o;
	static uint32_t ids[512];
	static char full[MAXTEXT];
	char stops[ENG_STREAM_STOP_SEQS_MAX][ENG_STREAM_STOP_SEQ_BYTES_MAX];
	unsigned by_reason[8] = { 0 };

	(void)state;
	trng = 0x243f6a8885a308d3ull;
	for (int it = 0; it < 3000; it++) {
		int t = (int)rnd(N_TOK);
		struct eng_tokenizer *tok = toks[t];
		uint32_t vocab = eng_tok_vocab_size(tok), n = 1 + rnd(120);
		struct eng_stream_params p;
		ssize_t fl;

		/* Mostly text from the fixture strings, sometimes random ids
		 * (byte tokens: invalid UTF-8, U+FFFD). */
		if (rnd(3)) {
			json_t *arr = json_object_get(cases[t], "cases");
			json_t *c = json_array_get(arr, rnd((uint32_t)json_array_size(arr)));
			json_t *jids = json_object_get(c, "ids"), *v;
			size_t vi;

			n = 0;
			json_array_foreach(jids, vi, v) {
				if (n < 512)
					ids[n++] = (uint32_t)json_integer_value(v);
			}
			if (!n)
				continue;
		} else {
			for (uint32_t i = 0; i < n; i++)
				ids[i] = rnd(vocab);
		}
		params_init(&p, (enum proto_stream)rnd(3), 1 + rnd(40));
		p.detok_flags = rnd(2) ? ENG_DETOK_SKIP_SPECIAL : 0;
		if (rnd(2))
			p.detok_flags |= ENG_DETOK_CONTINUE;
		fl = eng_tok_decode(tok, ids, n, p.detok_flags & ENG_DETOK_SKIP_SPECIAL,
				    full, sizeof(full));
		assert_true(fl >= 0);
		/* Stop sequences: pieces of the text (valid UTF-8 ones), or
		 * strings that are not there. */
		for (uint32_t k = 0, want = rnd(4); k < want; k++) {
			uint32_t len = 1 + rnd(rnd(2) ? 4 : 20), off;

			if (fl == 0 || rnd(5) == 0) {
				snprintf(stops[k], sizeof(stops[k]), "zq%u", k);
				add_stop(&p, stops[k], strlen(stops[k]));
				continue;
			}
			off = rnd((uint32_t)fl);
			if (off + len > (uint32_t)fl)
				len = (uint32_t)fl - off;
			memcpy(stops[k], full + off, len);
			if (!eng_utf8_valid(stops[k], len))
				continue;
			add_stop(&p, stops[k], len);
		}
		if (rnd(4) == 0) {
			p.stop_ids = &ids[rnd(n)];
			p.n_stop_ids = 1;
		}
		if (rnd(4) == 0)
			p.eos_id = ids[rnd(n)];
		p.ignore_eos = rnd(4) == 0;
		if (rnd(3) == 0)
			p.max_tokens = 1 + rnd(n + 5);
		check_against_ref(tok, &p, ids, n, &o);
		by_reason[o.reason]++;
	}
	/* Every way of ending was exercised. */
	assert_true(by_reason[PROTO_FINISH_STOP_SEQUENCE] > 100);
	assert_true(by_reason[PROTO_FINISH_STOP_TOKEN] > 20);
	assert_true(by_reason[PROTO_FINISH_EOS] > 20);
	assert_true(by_reason[PROTO_FINISH_LENGTH] > 20);
	assert_true(by_reason[PROTO_FINISH_CANCELLED] > 100);
}

/* ---- granularity --------------------------------------------------------------- */

static void test_granularity(void **state)
{
	static struct out o;
	static uint32_t ids[MAXIDS];

	(void)state;
	for (int t = 0; t < N_TOK; t++) {
		uint32_t n = encode(toks[t], crafted, ids, MAXIDS);
		struct eng_stream_params p;
		unsigned ends = 0;

		/* Every token. */
		params_init(&p, PROTO_STREAM_TOKEN, 0);
		run_stream(toks[t], &p, ids, n, &o);
		assert_int_equal(o.chunks, n + 1);	/* + the empty LAST */
		for (unsigned c = 0; c < n; c++)
			assert_int_equal(o.chunk_ids[c], 1);

		/* Every K, K = 5, and K over the record bound. */
		params_init(&p, PROTO_STREAM_EVERY_K, 5);
		run_stream(toks[t], &p, ids, n, &o);
		for (unsigned c = 0; c + 1 < o.chunks; c++)
			assert_int_equal(o.chunk_ids[c], 5);
		assert_int_equal(o.chunk_ids[o.chunks - 1], n % 5);
		params_init(&p, PROTO_STREAM_EVERY_K, 200);
		run_stream(toks[t], &p, ids, n, &o);
		for (unsigned c = 0; c + 1 < o.chunks; c++)
			assert_int_equal(o.chunk_ids[c], ENG_STREAM_CHUNK_IDS_MAX);

		/* Token boundaries in the text: chunk ends in TOKEN mode. */
		static uint32_t tok_end[MAXIDS];
		unsigned n_tok_end;

		params_init(&p, PROTO_STREAM_TOKEN, 0);
		run_stream(toks[t], &p, ids, n, &o);
		n_tok_end = o.chunks;
		memcpy(tok_end, o.chunk_text_end, n_tok_end * sizeof(*tok_end));

		/* Sentences: a chunk but the last holds one sentence end (two
		 * when a token carries ".\n" or "\n\n") unless it was cut at
		 * the record bound; the flag is set exactly on chunks whose
		 * text has a sentence end followed only by spaces/newlines. */
		params_init(&p, PROTO_STREAM_SENTENCE, 0);
		run_stream(toks[t], &p, ids, n, &o);
		for (size_t i = 0; i < o.text_len; i++)
			if (ends_sentence_at(o.text, o.text_len, i))
				ends++;
		assert_true(ends >= 6);
		{
			unsigned forced = 0;

			for (unsigned c = 0, start = 0; c < o.chunks; c++) {
				unsigned e = 0, end = o.chunk_text_end[c];
				bool tail_end = false;

				for (unsigned i = start; i < end; i++) {
					if (!ends_sentence_at(o.text, o.text_len, i))
						continue;
					e++;
					tail_end = true;
					for (unsigned j = i + 1; j < end; j++)
						if (o.text[j] != ' ' && o.text[j] != '\n')
							tail_end = false;
				}
				if (c + 1 < o.chunks && e == 0) {
					assert_int_equal(o.chunk_ids[c], ENG_STREAM_CHUNK_IDS_MAX);
					forced++;
				} else {
					assert_true(e <= 2);
					/* Cut at the first token boundary at or
					 * after the chunk's first sentence end. */
					unsigned first_end = end, want = 0;

					for (unsigned i = start; i < end; i++)
						if (ends_sentence_at(o.text, o.text_len, i)) {
							first_end = i + 1;
							break;
						}
					for (unsigned b2 = 0; b2 < n_tok_end; b2++)
						if (tok_end[b2] >= first_end) {
							want = tok_end[b2];
							break;
						}
					if (c + 1 < o.chunks)
						assert_int_equal(end, want);
					assert_int_equal(!!(o.chunk_flags[c] & PROTO_TOK_SENTENCE),
							 tail_end);
				}
				start = end;
			}
			assert_true(o.chunks <= ends + 1 + forced);
			assert_true(o.chunks >= ends - 2);
		}
		assert_true(o.sentence_chunks >= 4);
	}
}

/* ---- bounds ------------------------------------------------------------------- */

static void test_bounds(void **state)
{
	static struct out o;
	static uint32_t ids[MAXIDS];

	(void)state;
	for (int t = 0; t < N_TOK; t++) {
		uint32_t vocab = eng_tok_vocab_size(toks[t]), best = 0;
		size_t best_len = 0, len;
		struct eng_stream_params p;
		uint32_t n = 600;

		/* The token with the longest text, 600 times: chunks cut
		 * at 304 bytes even with fewer than 32 ids. */
		for (uint32_t id = 0; id < vocab; id++) {
			char b[512];
			ssize_t k = eng_tok_decode(toks[t], &id, 1, true, b, sizeof(b));

			len = k > 0 ? (size_t)k : 0;
			if (len > best_len && eng_utf8_valid(b, len)) {
				best_len = len;
				best = id;
			}
		}
		assert_true(best_len >= 4);
		for (uint32_t i = 0; i < n; i++)
			ids[i] = i % 7 ? best : 10 + i % 50;
		for (int mode = 0; mode < 3; mode++) {
			params_init(&p, (enum proto_stream)mode, 32);
			check_against_ref(toks[t], &p, ids, n, &o);
			if (best_len * 32 > ENG_STREAM_CHUNK_TEXT_MAX && mode)
				assert_true(o.text_only_chunks > 0 ||
					    o.chunks > n / ENG_STREAM_CHUNK_IDS_MAX + 1);
		}
		/* A long stop sequence held back for a while: 64 bytes. */
		params_init(&p, PROTO_STREAM_SENTENCE, 0);
		{
			static char stop[ENG_STREAM_STOP_SEQ_BYTES_MAX + 1];
			char whole[8192];
			ssize_t k = eng_tok_decode(toks[t], ids, 200, false, whole,
						   sizeof(whole));
			size_t off = 30, sl = ENG_STREAM_STOP_SEQ_BYTES_MAX;
			const char *m;

			assert_true(k > 200);
			while (((uint8_t)whole[off] & 0xc0) == 0x80)
				off++;
			while (sl > 0 && !eng_utf8_valid(whole + off, sl))
				sl--;
			assert_true(sl > 56);
			memcpy(stop, whole + off, sl);
			m = memmem(whole, (size_t)k, stop, sl);
			add_stop(&p, stop, sl);
			check_against_ref(toks[t], &p, ids, n, &o);
			assert_int_equal(o.reason, PROTO_FINISH_STOP_SEQUENCE);
			assert_int_equal(o.text_len, m - whole);
			memset(stop, 'a', sizeof(stop));
			p.stop_seq_lens[0] = ENG_STREAM_STOP_SEQ_BYTES_MAX + 1;
			assert_int_equal(eng_stream_init(&(struct eng_stream){ 0 }, toks[t], &p),
					 -E2BIG);
		}
	}
}

/* Long special tokens and multi-byte characters split into byte tokens:
 * the 304-byte cut lands inside a character at some offset, and must move
 * back to its start (drain() checks every chunk is valid UTF-8). */
static void test_cut_inside_code_point(void **state)
{
	static struct out o;
	static uint32_t ids[MAXIDS];
	struct eng_tokenizer *tok = toks[0];
	uint32_t sp = eng_tok_id(tok, "<|reserved_special_token_0|>"), mb[64];
	uint32_t n_mb = encode(tok, "\xe6\x97\xa5\xf0\x9f\x8e\x89\xe8\xaa\x9e", mb, 64);
	static uint32_t tok_end[MAXIDS];
	unsigned text_only = 0, last_split = 0;

	(void)state;
	assert_int_not_equal(sp, ENG_TOK_NONE);
	assert_true(n_mb >= 6);		/* split into byte tokens */
	for (uint32_t pad = 0; pad < 40; pad++) {
		uint32_t n = 0;
		struct eng_stream_params p;

		for (uint32_t i = 0; i < pad; i++)
			ids[n++] = encode(tok, "a", mb + 32, 1) ? mb[32] : 0;
		/* 28-byte specials, then the characters: 32 ids hold far
		 * more than 304 bytes. */
		while (n + 8 + n_mb < 400) {
			for (int j = 0; j < 8; j++)
				ids[n++] = sp;
			memcpy(ids + n, mb, n_mb * sizeof(*mb));
			n += n_mb;
		}
		for (int mode = 0; mode < 3; mode++) {
			params_init(&p, (enum proto_stream)mode, 32);
			check_against_ref(tok, &p, ids, n, &o);
			text_only += o.text_only_chunks;
			if (mode == PROTO_STREAM_TOKEN) {
				/* One token per chunk: the text after each. */
				assert_int_equal(o.chunks, n + 1);
				memcpy(tok_end, o.chunk_text_end, n * sizeof(*tok_end));
				continue;
			}
			/* A chunk's ids have their whole text in it or
			 * before it. */
			for (unsigned c = 0, cum = 0; c < o.chunks; c++) {
				cum += o.chunk_ids[c];
				if (cum)
					assert_true(tok_end[cum - 1] <= o.chunk_text_end[c]);
			}
			/* Every chunk but the last is full: 32 ids, or 304
			 * bytes less at most 3 (a code point moved on). */
			for (unsigned c = 0, prev = 0; c + 1 < o.chunks; c++) {
				assert_true(o.chunk_text_end[c] - prev >
						    ENG_STREAM_CHUNK_TEXT_MAX - 4 ||
					    o.chunk_ids[c] == ENG_STREAM_CHUNK_IDS_MAX);
				prev = o.chunk_text_end[c];
			}
		}
		/* The end of the stream cut the same way: max_tokens at
		 * various points, so that the text left at the finish is
		 * sometimes over one chunk. */
		for (uint32_t mt = n - 12; mt < n; mt++) {
			params_init(&p, PROTO_STREAM_SENTENCE, 0);
			p.max_tokens = mt;
			check_against_ref(tok, &p, ids, n, &o);
			assert_int_equal(o.reason, PROTO_FINISH_LENGTH);
			if (o.chunks >= 2 &&
			    !(o.chunk_flags[o.chunks - 2] & PROTO_TOK_LAST))
				last_split++;
		}
	}
	assert_true(last_split > 0);
	/* (A chunk with text and no id needs one token of over 304 bytes:
	 * none of the fixture vocabularies has one.) */
	(void)text_only;
}

/* ---- ends: EOS, stop ids, min_tokens, max_tokens -------------------------- */

static void test_ends(void **state)
{
	static struct out o;
	static uint32_t ids[MAXIDS];
	struct eng_tokenizer *tok = toks[0];
	uint32_t eos = eng_tok_eos_id(tok), n;
	struct eng_stream_params p;
	uint32_t stop_id;
	char b[1024];
	ssize_t k;

	(void)state;
	n = encode(tok, "one two. three four. five six. seven", ids, MAXIDS);
	assert_true(n > 8);
	assert_int_not_equal(eos, ENG_TOK_NONE);
	ids[n] = eos;
	ids[n + 1] = ids[0];

	/* EOS ends it; its id is in the last chunk, its text is not. */
	params_init(&p, PROTO_STREAM_EVERY_K, 4);
	p.eos_id = eos;
	check_against_ref(tok, &p, ids, n + 2, &o);
	assert_int_equal(o.reason, PROTO_FINISH_EOS);
	assert_int_equal(o.n_ids, n + 1);
	assert_int_equal(o.ids[n], eos);
	k = eng_tok_decode(tok, ids, n, false, b, sizeof(b));
	assert_int_equal(o.text_len, k);
	/* The same through the list of EOS ids (a model with several). */
	{
		uint32_t list[2] = { 100000, eos };	/* one never seen */

		params_init(&p, PROTO_STREAM_EVERY_K, 4);
		p.eos_ids = list;
		p.n_eos_ids = 2;
		check_against_ref(tok, &p, ids, n + 2, &o);
		assert_int_equal(o.reason, PROTO_FINISH_EOS);
		assert_int_equal(o.n_ids, n + 1);
		p.n_eos_ids = ENG_STREAM_EOS_MAX + 1;
		assert_int_equal(eng_stream_init(&(struct eng_stream){ 0 }, tok, &p),
				 -EINVAL);
		params_init(&p, PROTO_STREAM_EVERY_K, 4);
		p.eos_id = eos;
	}
	/* ignore_eos: its text is streamed (a special token, kept). */
	p.ignore_eos = true;
	check_against_ref(tok, &p, ids, n + 2, &o);
	assert_int_equal(o.reason, PROTO_FINISH_CANCELLED);
	assert_non_null(memmem(o.text, o.text_len, "<|", 2));
	/* ... and dropped with SKIP_SPECIAL. */
	p.detok_flags = ENG_DETOK_SKIP_SPECIAL;
	check_against_ref(tok, &p, ids, n + 2, &o);
	assert_null(memmem(o.text, o.text_len, "<|", 2));

	/* The flush at a stop token may complete a stop sequence: a
	 * pending partial character becomes U+FFFD, which is a stop here. */
	{
		uint32_t pid[16], mbi[8], sid = ids[0];
		uint32_t np = encode(tok, "ab", pid, 8);

		assert_true(encode(tok, "\xe6\x97\xa5", mbi, 8) == 3);
		pid[np++] = mbi[0];
		pid[np++] = sid;
		params_init(&p, PROTO_STREAM_TOKEN, 0);
		p.stop_ids = &sid;
		p.n_stop_ids = 1;
		add_stop(&p, "\xef\xbf\xbd", 3);
		check_against_ref(tok, &p, pid, np, &o);
		assert_int_equal(o.reason, PROTO_FINISH_STOP_TOKEN);
		assert_int_equal(o.text_len, 2);
		/* Without the stop sequence the U+FFFD is streamed. */
		p.n_stop_seqs = 0;
		check_against_ref(tok, &p, pid, np, &o);
		assert_int_equal(o.text_len, 5);
	}

	/* Stop id: the 4th token. */
	params_init(&p, PROTO_STREAM_TOKEN, 0);
	stop_id = ids[3];
	p.stop_ids = &stop_id;
	p.n_stop_ids = 1;
	check_against_ref(tok, &p, ids, n, &o);
	assert_int_equal(o.reason, PROTO_FINISH_STOP_TOKEN);
	assert_int_equal(o.n_ids, 4);

	/* min_tokens suppresses it: the stop id at 4 is ordinary with
	 * min_tokens 5, the stream goes on (no other occurrence later). */
	{
		static uint32_t ids2[MAXIDS];

		memcpy(ids2, ids, n * sizeof(*ids));
		for (uint32_t i = 4; i < n; i++)
			if (ids2[i] == stop_id)
				ids2[i] = ids2[0] == stop_id ? ids2[1] : ids2[0];
		p.min_tokens = 5;
		run_stream(tok, &p, ids2, n, &o);
		assert_int_equal(o.reason, PROTO_FINISH_CANCELLED);
		assert_int_equal(o.n_ids, n);
		k = eng_tok_decode(tok, ids2, n, false, b, sizeof(b));
		assert_int_equal(o.text_len, k);
		assert_memory_equal(o.text, b, (size_t)k);
		/* min_tokens 4 lets the 4th token stop. */
		p.min_tokens = 4;
		run_stream(tok, &p, ids2, n, &o);
		assert_int_equal(o.reason, PROTO_FINISH_STOP_TOKEN);
		assert_int_equal(o.n_ids, 4);
	}

	/* A stop sequence before min_tokens is streamed; its next
	 * occurrence ends the stream. */
	params_init(&p, PROTO_STREAM_SENTENCE, 0);
	add_stop(&p, ". ", 2);
	run_stream(tok, &p, ids, n, &o);
	assert_int_equal(o.reason, PROTO_FINISH_STOP_SEQUENCE);
	assert_int_equal(o.text_len, 7);		/* "one two" */
	{
		/* The token count at which "one two. three four." is out. */
		uint32_t m = 1;
		char bb[256];

		for (;; m++) {
			ssize_t kk = eng_tok_decode(tok, ids, m, false, bb, sizeof(bb));

			if (kk >= 10)
				break;
		}
		p.min_tokens = m + 1;	/* past the first ". " */
		run_stream(tok, &p, ids, n, &o);
		assert_int_equal(o.reason, PROTO_FINISH_STOP_SEQUENCE);
		assert_int_equal(o.text_len, strlen("one two. three four"));
		assert_memory_equal(o.text, "one two. three four", o.text_len);
	}

	/* max_tokens: LENGTH with exactly that many ids. */
	params_init(&p, PROTO_STREAM_EVERY_K, 3);
	p.max_tokens = 7;
	check_against_ref(tok, &p, ids, n, &o);
	assert_int_equal(o.reason, PROTO_FINISH_LENGTH);
	assert_int_equal(o.n_ids, 7);
	/* A stop id at the max_tokens-th token: STOP_TOKEN wins. */
	stop_id = ids[6];
	p.stop_ids = &stop_id;
	p.n_stop_ids = 1;
	run_stream(tok, &p, ids, n, &o);
	assert_true(o.reason == PROTO_FINISH_STOP_TOKEN);
}

/* ---- API errors, ids-only, allocation ----------------------------------------- */

static void test_api(void **state)
{
	static struct eng_stream st;
	struct eng_stream_params p;
	uint32_t ids[32], many[ENG_STREAM_STOP_IDS_MAX + 1] = { 0 };
	char text[ENG_STREAM_CHUNK_TEXT_MAX];
	uint16_t n_ids, tl, fl;
	uint32_t first;
	bool ready;

	(void)state;
	params_init(&p, PROTO_STREAM_TOKEN, 0);
	assert_int_equal(eng_stream_init(NULL, toks[0], &p), -EINVAL);
	assert_int_equal(eng_stream_init(&st, toks[0], NULL), -EINVAL);
	p.mode = (enum proto_stream)3;
	assert_int_equal(eng_stream_init(&st, toks[0], &p), -EINVAL);
	params_init(&p, PROTO_STREAM_TOKEN, 0);
	add_stop(&p, "", 0);
	assert_int_equal(eng_stream_init(&st, toks[0], &p), -EINVAL);
	params_init(&p, PROTO_STREAM_TOKEN, 0);
	add_stop(&p, "\xff", 1);
	assert_int_equal(eng_stream_init(&st, toks[0], &p), -EINVAL);
	params_init(&p, PROTO_STREAM_TOKEN, 0);
	add_stop(&p, "x", 1);
	assert_int_equal(eng_stream_init(&st, NULL, &p), -EINVAL);
	params_init(&p, PROTO_STREAM_TOKEN, 0);
	p.stop_ids = many;
	p.n_stop_ids = ENG_STREAM_STOP_IDS_MAX + 1;
	assert_int_equal(eng_stream_init(&st, toks[0], &p), -EINVAL);
	p.n_stop_seqs = ENG_STREAM_STOP_SEQS_MAX + 1;
	p.n_stop_ids = 0;
	assert_int_equal(eng_stream_init(&st, toks[0], &p), -EINVAL);

	/* -EBUSY until the chunk is taken; ids-only stream (no tokenizer). */
	params_init(&p, PROTO_STREAM_EVERY_K, 2);
	p.max_tokens = 3;
	assert_int_equal(eng_stream_init(&st, NULL, &p), 0);
	assert_int_equal(eng_stream_push(&st, NULL, 7, &ready), 0);
	assert_false(ready);
	assert_int_equal(eng_stream_take_chunk(&st, ids, &n_ids, text, &tl, &fl, &first), 0);
	assert_int_equal(eng_stream_push(&st, NULL, 8, &ready), 0);
	assert_true(ready);
	assert_int_equal(eng_stream_push(&st, NULL, 9, &ready), -EBUSY);
	assert_int_equal(eng_stream_tokens(&st), 2);
	assert_int_equal(eng_stream_take_chunk(&st, ids, &n_ids, text, &tl, &fl, &first), 1);
	assert_int_equal(n_ids, 2);
	assert_int_equal(ids[1], 8);
	assert_int_equal(tl, 0);
	assert_int_equal(fl, PROTO_TOK_FIRST);
	assert_int_equal(first, 0);
	assert_int_equal(eng_stream_push(&st, NULL, 9, &ready), 1);
	assert_true(ready);
	assert_int_equal(eng_stream_finish_reason(&st), PROTO_FINISH_LENGTH);
	assert_int_equal(eng_stream_take_chunk(&st, ids, &n_ids, text, &tl, &fl, &first), 1);
	assert_int_equal(n_ids, 1);
	assert_int_equal(first, 2);
	assert_int_equal(fl, PROTO_TOK_LAST);
	assert_false(eng_stream_ready(&st));
	assert_int_equal(eng_stream_push(&st, NULL, 9, &ready), -EALREADY);
	assert_int_equal(eng_stream_finish(&st, NULL, PROTO_FINISH_CANCELLED), -EALREADY);
	assert_int_equal(eng_stream_finish(&st, NULL, (enum proto_finish)99), -EINVAL);

	/* Finish with nothing pending: one empty LAST chunk, FIRST too. */
	assert_int_equal(eng_stream_init(&st, toks[1], &p), 0);
	assert_int_equal(eng_stream_finish(&st, toks[1], PROTO_FINISH_DEADLINE), 0);
	assert_int_equal(eng_stream_take_chunk(&st, ids, &n_ids, text, &tl, &fl, &first), 1);
	assert_int_equal(n_ids + tl, 0);
	assert_int_equal(fl, PROTO_TOK_FIRST | PROTO_TOK_LAST);
	assert_int_equal(eng_stream_finish_reason(&st), PROTO_FINISH_DEADLINE);
}

static void test_no_alloc(void **state)
{
	static struct eng_stream st;
	static uint32_t ids[MAXIDS];
	struct eng_stream_params p;
	uint32_t cids[32], n, first;
	char text[ENG_STREAM_CHUNK_TEXT_MAX];
	uint16_t n_ids, tl, fl;
	unsigned long allocs;
	bool ready;

	(void)state;
	if (!alloc_count_supported())
		skip();
	n = encode(toks[0], crafted, ids, MAXIDS);
	params_init(&p, PROTO_STREAM_SENTENCE, 0);
	add_stop(&p, "Last w", 6);
	add_stop(&p, "zzz", 3);
	alloc_count_start();
	for (int round = 0; round < 20; round++) {
		eng_stream_init(&st, toks[0], &p);
		for (uint32_t i = 0; i < n; i++) {
			int rc = eng_stream_push(&st, toks[0], ids[i], &ready);

			while (eng_stream_take_chunk(&st, cids, &n_ids, text, &tl, &fl, &first))
				;
			if (rc)
				break;
		}
	}
	allocs = alloc_count_stop();
	assert_int_equal(allocs, 0);
	assert_int_equal(eng_stream_finish_reason(&st), PROTO_FINISH_STOP_SEQUENCE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fixture_strings),
		cmocka_unit_test(test_stop_sequences_split),
		cmocka_unit_test(test_multibyte_split),
		cmocka_unit_test(test_random_hold_back),
		cmocka_unit_test(test_granularity),
		cmocka_unit_test(test_bounds),
		cmocka_unit_test(test_cut_inside_code_point),
		cmocka_unit_test(test_ends),
		cmocka_unit_test(test_api),
		cmocka_unit_test(test_no_alloc),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
