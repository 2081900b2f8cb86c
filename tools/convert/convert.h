/* SPDX-License-Identifier: MIT */
/*
 * convert.h — velo-convert internals: Hugging Face input (hf.c), synthetic
 * shapes (shapes.c), generated tokenizers (tokgen.c), quantisation
 * (quant.c), the conversion pipeline (main.c).
 */
#ifndef VELO_CONVERT_H
#define VELO_CONVERT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "../../engine/core/image.h"
#include "../../engine/core/model.h"

#define CONV_ERR_LEN 512

/* ------------------------------------------------------------------------
 * Quantisation (quant.c).
 */

/* Error of a converted tensor against its source values. */
struct qstats {
	double err2;		/* sum (w - dequant(q))^2 */
	double ref2;		/* sum w^2 */
	double max_abs;		/* max |w - dequant(q)| */
	uint64_t n;
	uint64_t nonfinite;	/* source values that were NaN or infinite */
};

void qstats_merge(struct qstats *into, const struct qstats *from);
/* sqrt(err2 / ref2), 0 when the reference is all zeros. */
double qstats_rel_rms(const struct qstats *s);

/*
 * quant_row() - encode one row of @cols f32 values as @dt.
 * @dst:    row bytes (eng_dtype_sizes(dt, 1, cols) of them)
 * @scales: FP8: one f32; INT4: cols/128 f16; else unused
 *
 * FP8 E4M3: scale = max|row| / 448, q = e4m3(w / scale) rounded to nearest
 * even, saturating.  INT4: per group of 128, scale = f16(max|group| / 7),
 * q = clamp(rint(w / scale), -8, 7) stored as q + 8, two per byte (low
 * nibble first).  BF16/F16: round to nearest even.
 * Return: 0, or -ERANGE (a non-finite input, or an INT4 scale beyond f16).
 */
int quant_row(enum eng_dtype dt, const float *src, uint32_t cols, void *dst,
	      void *scales, struct qstats *st);

/* ------------------------------------------------------------------------
 * Hugging Face model directories (hf.c).
 */

enum st_dtype { ST_F32, ST_F16, ST_BF16 };

struct st_tensor {
	char *name;
	enum st_dtype dtype;
	uint32_t ndim;
	uint64_t shape[2];
	const uint8_t *data;	/* in the shard's mapping */
	uint64_t len;
};

struct hf_model {
	char *dir;
	struct eng_model_config cfg;
	struct st_tensor *t;	/* every tensor of every shard */
	unsigned n_t;
	struct hf_shard {
		char *file;
		uint8_t *map;
		size_t len;
	} *shards;
	unsigned n_shards;
	char *tok_json, *tok_cfg_json;
	size_t tok_json_len, tok_cfg_json_len;
	char model_type[32];
};

/*
 * hf_open() - read config.json, generation_config.json, tokenizer.json,
 * tokenizer_config.json and the safetensors headers (single file or
 * sharded) of @dir; the tensor data are mapped, not read.
 * Return: 0 or -errno with a message in @err.
 */
int hf_open(struct hf_model *m, const char *dir, char *err, size_t err_len);
void hf_close(struct hf_model *m);
const struct st_tensor *hf_tensor(const struct hf_model *m, const char *name);
/* Decode row @row of @t (a 2-D tensor, or the 1-D tensor as row 0) to f32. */
void hf_row_f32(const struct st_tensor *t, uint64_t row, float *out);
/* Drop the mapping's pages of rows [row0, row0 + n) from this process. */
void hf_rows_release(const struct st_tensor *t, uint64_t row0, uint64_t n);

/* Chat template family from a tokenizer_config.json chat template. */
enum eng_chat_template hf_chat_template(const char *tok_cfg_json, size_t len);

/* ------------------------------------------------------------------------
 * Synthetic models (shapes.c, tokgen.c).
 */

enum tok_family { TOK_LLAMA3, TOK_CHATML };

struct shape {
	const char *name;
	const char *what;
	struct eng_model_config cfg;
	enum tok_family tok;
	uint32_t special_base;	/* id of the first special token */
};

const struct shape *shape_find(const char *name);
void shapes_list(FILE *f);

/*
 * tokgen() - a small byte-level BPE tokenizer (256 byte tokens, a few dozen
 * merges, the family's special tokens at @s->special_base) as tokenizer.json
 * and tokenizer_config.json text (malloc'd, caller frees).
 * Return: 0 or -ENOMEM / -EINVAL (a special id >= vocab).
 */
int tokgen(const struct shape *s, char **tok_json, size_t *tok_len,
	   char **cfg_json, size_t *cfg_len);

/*
 * ka_compute() - run the image at @path on the CPU backend (@threads, 0:
 * all cores) and store its known-answer record in it (ka.c).
 * Return: 0; -ENOTSUP without the CPU backend; -errno with @err set.
 */
int ka_compute(const char *path, unsigned threads, bool verbose, char *err,
	       size_t err_len);

/* splitmix64 step: seeds and hashes. */
static inline uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* xoshiro256** (Blackman and Vigna), seeded through splitmix64. */
struct xoshiro {
	uint64_t s[4];
};

static inline void xoshiro_seed(struct xoshiro *r, uint64_t seed)
{
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl64(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

static inline uint64_t xoshiro_next(struct xoshiro *r)
{
	uint64_t *s = r->s;
	uint64_t out = rotl64(s[1] * 5, 7) * 9, t = s[1] << 17;

	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl64(s[3], 45);
	return out;
}

#endif
