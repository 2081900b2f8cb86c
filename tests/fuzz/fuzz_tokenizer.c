// SPDX-License-Identifier: MIT
/*
 * fuzz_tokenizer.c — libFuzzer target for the tokenizers.
 *
 * Input: byte 0 picks the tokenizer (hand-made bl / sp / sp2 from
 * tests/unit/data/tokenizer, plus the fixture tokenizers when present) and
 * the mode:
 *   even: the rest is text for eng_tok_encode() (with and without specials)
 *   odd:  the rest is little-endian u16 ids (mod vocab size + 16, so some
 *         are unknown) for the streaming detokenizer and eng_tok_decode()
 * Invariants checked (abort = finding):
 *   - encode returns 0, -EILSEQ (exactly when the text is not UTF-8),
 *     -E2BIG, -ENOSPC or -ERANGE; ids are below the vocab size;
 *   - SentencePiece legacy (sp): decode(encode(text)) == text for UTF-8
 *     text without '<' (no special tokens to meet) and without U+2581;
 *   - every chunk the stream emits is valid UTF-8 (U+FFFD stands for bytes
 *     that can never complete), decode() output too;
 *   - stream == decode() when decode() has no U+FFFD and the tokenizer
 *     does no cleanup (cleanup streams in one pass, see tokenizer.h).
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../engine/core/tokenizer.h"
#include "../../engine/core/utf8.h"

#define TOK_MAX 8
#define IDS_CAP 8192

static struct eng_tokenizer *toks[TOK_MAX];
static bool roundtrip[TOK_MAX];
static bool exact_stream[TOK_MAX];
static unsigned n_toks;
static uint32_t ids[IDS_CAP];
static char out[1 << 18], out2[1 << 18];

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *b = NULL;
	long n;

	if (!f)
		return NULL;
	if (!fseek(f, 0, SEEK_END) && (n = ftell(f)) >= 0 && !fseek(f, 0, SEEK_SET) &&
	    (b = malloc((size_t)n + 1)) && fread(b, 1, (size_t)n, f) == (size_t)n) {
		*len = (size_t)n;
	} else {
		free(b);
		b = NULL;
	}
	fclose(f);
	return b;
}

static void add_dir(const char *dir, bool rt, bool exact)
{
	char p[PATH_MAX + 64], err[200];
	size_t tl = 0, cl = 0;
	char *tj, *cj;

	if (n_toks >= TOK_MAX)
		return;
	snprintf(p, sizeof(p), "%s/tokenizer.json", dir);
	tj = slurp(p, &tl);
	snprintf(p, sizeof(p), "%s/tokenizer_config.json", dir);
	cj = slurp(p, &cl);
	if (!tj) {
		free(cj);
		return;
	}
	struct eng_tok_blob_hdr h = { ENG_TOK_MAGIC, ENG_TOK_VERSION, (uint32_t)tl,
				      cj ? (uint32_t)cl : 0 };
	char *blob = malloc(sizeof(h) + tl + cl);
	memcpy(blob, &h, sizeof(h));
	memcpy(blob + sizeof(h), tj, tl);
	if (cj)
		memcpy(blob + sizeof(h) + tl, cj, cl);
	struct eng_tokenizer *t = eng_tok_load(blob, sizeof(h) + tl + (cj ? cl : 0), 4096,
					       err, sizeof(err));
	if (t) {
		roundtrip[n_toks] = rt;
		exact_stream[n_toks] = exact;
		toks[n_toks++] = t;
	} else {
		fprintf(stderr, "fuzz_tokenizer: %s: %s\n", dir, err);
	}
	free(blob);
	free(tj);
	free(cj);
}

static bool find_root(char *root, size_t cap)
{
	const char *env = getenv("VELO_SRCTREE");
	const char *starts[2] = { ".", "/proc/self/exe" };
	char cand[PATH_MAX], probe[PATH_MAX + 64];

	if (env) {
		snprintf(root, cap, "%s", env);
		return true;
	}
	for (int s = 0; s < 2; s++) {
		if (!realpath(starts[s], cand))
			continue;
		for (;;) {
			snprintf(probe, sizeof(probe), "%s/tests/unit/data/tokenizer", cand);
			if (!access(probe, R_OK)) {
				snprintf(root, cap, "%s", cand);
				return true;
			}
			char *sl = strrchr(cand, '/');
			if (!sl || sl == cand)
				break;
			*sl = 0;
		}
	}
	return false;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char root[PATH_MAX], d[PATH_MAX + 64];

	(void)argc;
	(void)argv;
	if (!find_root(root, sizeof(root))) {
		fprintf(stderr, "fuzz_tokenizer: source tree not found (set VELO_SRCTREE)\n");
		abort();
	}
	static const struct {
		const char *name;
		bool rt, exact;
	} hand[] = { { "bl", false, false }, { "sp", true, true }, { "sp2", false, true } };
	for (size_t i = 0; i < 3; i++) {
		snprintf(d, sizeof(d), "%s/tests/unit/data/tokenizer/%s", root, hand[i].name);
		add_dir(d, hand[i].rt, hand[i].exact);
	}
	static const char *const fx[] = { "llama3", "spm", "qwen2" };
	for (size_t i = 0; i < 3; i++) {
		snprintf(d, sizeof(d), "%s/tests/fixtures/models/%s", root, fx[i]);
		add_dir(d, false, false);
	}
	if (n_toks < 3)
		abort();
	return 0;
}

static void check_utf8(const char *s, size_t n)
{
	if (!eng_utf8_valid(s, n))
		abort();
}

static void fuzz_encode(unsigned k, const char *text, size_t len)
{
	struct eng_tokenizer *t = toks[k];
	size_t n = 0;
	bool valid = eng_utf8_valid(text, len);

	for (int sp = 0; sp < 2; sp++) {
		int rc = eng_tok_encode(t, text, len, sp, ids, IDS_CAP, &n);
		if (rc == -EILSEQ) {
			if (valid)
				abort();
			return;
		}
		if (!valid)
			abort();
		if (rc == -E2BIG || rc == -ERANGE)
			return;
		if (rc != 0 && rc != -ENOSPC)
			abort();
		if (rc == -ENOSPC)
			return;
		for (size_t i = 0; i < n; i++)
			if (ids[i] >= eng_tok_vocab_size(t))
				abort();
		ssize_t dl = eng_tok_decode(t, ids, n, sp, out, sizeof(out));
		if (dl < 0)
			return;
		check_utf8(out, (size_t)dl);
		/* "▁" in the text decodes as a space: lossy, as in HF */
		if (roundtrip[k] && !sp && !memchr(text, '<', len) &&
		    !memmem(text, len, "\xe2\x96\x81", 3) &&
		    ((size_t)dl != len || memcmp(out, text, len)))
			abort();
	}
}

static void fuzz_ids(unsigned k, const uint8_t *d, size_t len)
{
	struct eng_tokenizer *t = toks[k];
	uint32_t mod = eng_tok_vocab_size(t) + 16;
	size_t n = 0, o = 0;
	struct eng_detok st;
	char chunk[4096];

	if (eng_tok_detok_bytes_max(t) > sizeof(chunk))
		abort();
	for (size_t i = 0; i + 1 < len && n < IDS_CAP; i += 2)
		ids[n++] = (uint32_t)(d[i] | d[i + 1] << 8) % mod;
	bool skip = len & 1;
	eng_detok_init(t, &st, skip ? ENG_DETOK_SKIP_SPECIAL : 0);
	for (size_t i = 0; i < n; i++) {
		ssize_t r = eng_detok_push(t, &st, ids[i], chunk, sizeof(chunk));
		if (r < 0)
			abort();
		check_utf8(chunk, (size_t)r);
		if (o + (size_t)r > sizeof(out2))
			return;
		memcpy(out2 + o, chunk, (size_t)r);
		o += (size_t)r;
	}
	ssize_t r = eng_detok_flush(t, &st, chunk, sizeof(chunk));
	if (r < 0)
		abort();
	check_utf8(chunk, (size_t)r);
	if (o + (size_t)r > sizeof(out2))
		return;
	memcpy(out2 + o, chunk, (size_t)r);
	o += (size_t)r;

	ssize_t dl = eng_tok_decode(t, ids, n, skip, out, sizeof(out));
	if (dl < 0)
		return;
	check_utf8(out, (size_t)dl);
	if (exact_stream[k] && !memmem(out, (size_t)dl, ENG_UTF8_FFFD, 3) &&
	    ((size_t)dl != o || memcmp(out, out2, o)))
		abort();
	/* a small output buffer: -ENOSPC, state unchanged, then it fits */
	eng_detok_init(t, &st, 0);
	for (size_t i = 0; i < n && i < 64; i++) {
		ssize_t a = eng_detok_push(t, &st, ids[i], chunk, 1);
		if (a == -ENOSPC)
			a = eng_detok_push(t, &st, ids[i], chunk, sizeof(chunk));
		if (a < 0)
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	unsigned k = (data[0] >> 1) % n_toks;
	if (data[0] & 1)
		fuzz_ids(k, data + 1, size - 1);
	else
		fuzz_encode(k, (const char *)data + 1, size - 1);
	return 0;
}
