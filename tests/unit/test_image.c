// SPDX-License-Identifier: MIT
/*
 * test_image.c — the model image (engine/core/image.h) and velo-convert.
 *
 * References are independent of the code under test: BF16 and FP8 rounding
 * by brute force over the candidate codes, F16 by the compiler's _Float16,
 * INT4 codes as the minimiser of |w - q*s| over the 16 levels.  Images are
 * built with the writer API and with velo-convert (run as a program, the
 * way users run it) from Hugging Face directories this test writes itself
 * (its own safetensors writer), and from tests/fixtures/models/<name> when they
 * exist.  Corruption: truncation at many lengths, bit flips in every
 * region, and structural edits re-sealed with fresh checksums so that they
 * reach the structural checks; each must fail with its own error.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <xxhash.h>

#include <velo/compiler.h>

#include "../../engine/backend.h"
#include "../../engine/core/image.h"
#include "../../tools/lib/counters.h"

static char tmpdir[256];
static char convert_bin[4200];

/* ------------------------------------------------------------------------
 * Helpers.
 */

static uint64_t rng = 0x1234567;

static uint64_t rnd(void)
{
	uint64_t z = (rng += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static double rnd_unit(void)
{
	return ((double)(rnd() >> 11) + 0.5) / 9007199254740992.0;
}

static float rnd_normal(float sd)
{
	return (float)(sqrt(-2 * log(rnd_unit())) * cos(2 * M_PI * rnd_unit())) * sd;
}

static float bits_f(uint32_t u)
{
	float f;

	memcpy(&f, &u, 4);
	return f;
}

static uint32_t f_bits(float f)
{
	uint32_t u;

	memcpy(&u, &f, 4);
	return u;
}

/* Nearest BF16 by brute force over the two neighbours, ties to even. */
static uint16_t ref_bf16(float x)
{
	uint16_t lo = (uint16_t)(f_bits(x) >> 16), hi = (uint16_t)(lo + 1);
	double dl = fabs((double)x - bits_f((uint32_t)lo << 16));
	double dh = fabs((double)x - bits_f((uint32_t)hi << 16));

	if (dl < dh)
		return lo;
	if (dh < dl)
		return hi;
	return (lo & 1) ? hi : lo;
}

static uint16_t ref_f16(float x)
{
	_Float16 h = (_Float16)x;
	uint16_t u;

	memcpy(&u, &h, 2);
	return u;
}

static float ref_f16_val(uint16_t u)
{
	_Float16 h;

	memcpy(&h, &u, 2);
	return (float)h;
}

/* E4M3 value of a code by the definition. */
static double ref_fp8_val(uint8_t c)
{
	int e = (c >> 3) & 15, m = c & 7;
	double v = e ? ldexp(1.0 + m / 8.0, e - 7) : ldexp(m / 8.0, -6);

	return (c & 0x80) ? -v : v;
}

/* Nearest E4M3 code by brute force, ties to the even code, saturating. */
static uint8_t ref_fp8(float x)
{
	double a = fabs((double)x), best = INFINITY;
	uint8_t code = 0;

	for (unsigned c = 0; c <= 126; c++) {
		double d = fabs(a - ref_fp8_val((uint8_t)c));

		if (d < best || (d == best && !(c & 1))) {
			best = d;
			code = (uint8_t)c;
		}
	}
	if (a >= 448)
		code = 126;
	return (uint8_t)(code | (signbit(x) ? 0x80 : 0));
}

/* The INT4 level minimising |w - q s|, ties to even q. */
static int ref_int4(float w, float s)
{
	double best = INFINITY;
	int q = 0;

	if (!(s > 0))
		return 0;
	for (int c = -8; c <= 7; c++) {
		double d = fabs((double)w - (double)c * s);

		if (d < best || (d == best && !(c & 1))) {
			best = d;
			q = c;
		}
	}
	return q;
}

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	return remove(p);
}

static void write_file(const char *path, const void *buf, size_t len)
{
	FILE *f = fopen(path, "wb");

	assert_non_null(f);
	assert_int_equal(fwrite(buf, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

/* Whole file into a 64-byte aligned buffer (open_mem needs it). */
static uint8_t *read_file(const char *path, size_t *len)
{
	struct stat st;
	uint8_t *b;
	FILE *f = fopen(path, "rb");

	assert_non_null(f);
	assert_int_equal(fstat(fileno(f), &st), 0);
	b = aligned_alloc(64, ALIGN_UP((size_t)st.st_size + 1, 64));
	assert_non_null(b);
	assert_int_equal(fread(b, 1, (size_t)st.st_size, f), (size_t)st.st_size);
	fclose(f);
	*len = (size_t)st.st_size;
	return b;
}

/* A path in the test's directory; 256 live at once (argument arrays keep
 * theirs across many calls). */
static char *tpath(const char *name)
{
	static char buf[256][512];
	static unsigned i;
	char *p = buf[i++ % 256];

	snprintf(p, 512, "%s/%s", tmpdir, name);
	return p;
}

/* Run velo-convert with @args (NULL-terminated), output to a log file.
 * Return: its exit status, or -1 if it did not exit normally. */
static int run_convert(const char *const *args)
{
	const char *argv[32];
	unsigned n = 0;
	int st;
	pid_t pid;

	argv[n++] = convert_bin;
	while (*args && n < 30)
		argv[n++] = *args++;
	argv[n] = NULL;
	pid = fork();
	assert_true(pid >= 0);
	if (!pid) {
		int fd = open(tpath("convert.log"), O_WRONLY | O_CREAT | O_APPEND, 0644);

		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execv(convert_bin, (char *const *)argv);
		_exit(127);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* ------------------------------------------------------------------------
 * Element types.
 */

static void test_dtype_convert(void **state)
{
	/* FP8 decode: all 256 codes against the definition. */
	for (unsigned c = 0; c < 256; c++) {
		float v = eng_fp8_e4m3_to_f32((uint8_t)c);

		if ((c & 0x7f) == 0x7f)
			assert_true(isnan(v));
		else
			assert_true((double)v == ref_fp8_val((uint8_t)c));
	}
	/* F16 decode: all codes against _Float16. */
	for (unsigned c = 0; c < 65536; c++) {
		float a = eng_f16_to_f32((uint16_t)c), b = ref_f16_val((uint16_t)c);

		assert_true(isnan(a) ? isnan(b) : f_bits(a) == f_bits(b));
	}
	/* Encoders: edge cases, then random values over many binades. */
	static const float edge[] = {
		0.0f, -0.0f, 1.0f, 448.0f, 449.0f, 463.9f, 464.0f, 1e6f, -1e6f,
		0x1p-6f, 0x1p-9f, 0x1p-10f, 0x1.8p-10f, 3 * 0x1p-11f, 65504.0f,
		65519.0f, 65520.0f, 0x1p-14f, 0x1p-24f, 0x1p-25f, 0x1.8p-25f,
		1.0625f, 1.1875f, 240.0f, 232.0f, 248.0f, 0.00390625f, INFINITY,
		-INFINITY,
	};
	for (unsigned i = 0; i < ARRAY_SIZE(edge); i++) {
		assert_int_equal(eng_f32_to_fp8_e4m3(edge[i]), ref_fp8(edge[i]));
		assert_int_equal(eng_f32_to_f16(edge[i]), ref_f16(edge[i]));
		if (isfinite(edge[i]) && fabsf(edge[i]) < 1e30f)
			assert_int_equal(eng_f32_to_bf16(edge[i]), ref_bf16(edge[i]));
	}
	assert_int_equal(eng_f32_to_fp8_e4m3(NAN) & 0x7f, 0x7f);
	assert_true(isnan(eng_bf16_to_f32(eng_f32_to_bf16(NAN))));
	assert_true(isnan(eng_f16_to_f32(eng_f32_to_f16(NAN))));
	for (unsigned i = 0; i < 200000; i++) {
		float x = bits_f((uint32_t)rnd());
		float y = (float)ldexp(rnd_unit() * 2 - 1, (int)(rnd() % 40) - 25);
		/* exact ties: a representable value plus half a step */
		uint32_t t = (f_bits(y) & ~0xffffu) | 0x8000u;

		if (isfinite(x) && fabsf(x) < 1e30f)
			assert_int_equal(eng_f32_to_bf16(x), ref_bf16(x));
		if (isfinite(x))
			assert_int_equal(eng_f32_to_f16(x), ref_f16(x));
		assert_int_equal(eng_f32_to_bf16(y), ref_bf16(y));
		assert_int_equal(eng_f32_to_bf16(bits_f(t)), ref_bf16(bits_f(t)));
		assert_int_equal(eng_f32_to_f16(y), ref_f16(y));
		assert_int_equal(eng_f32_to_fp8_e4m3(y * 600), ref_fp8(y * 600));
		assert_int_equal(eng_f32_to_fp8_e4m3(y), ref_fp8(y));
	}
	/* FP8 ties between neighbouring codes go to the even code. */
	for (unsigned c = 0; c < 126; c++) {
		double mid = (ref_fp8_val((uint8_t)c) + ref_fp8_val((uint8_t)(c + 1))) / 2;

		assert_int_equal(eng_f32_to_fp8_e4m3((float)mid), ref_fp8((float)mid));
		assert_int_equal(eng_f32_to_fp8_e4m3((float)mid) & 1, 0);
	}

	uint64_t d, s;

	assert_int_equal(eng_dtype_sizes(ENG_DT_INT4_G128, 3, 256, &d, &s), 0);
	assert_int_equal(d, 3 * 128);
	assert_int_equal(s, 3 * 2 * 2);
	assert_int_equal(eng_dtype_sizes(ENG_DT_FP8_E4M3, 5, 7, &d, &s), 0);
	assert_int_equal(d, 35);
	assert_int_equal(s, 20);
	assert_int_equal(eng_dtype_sizes(ENG_DT_INT4_G128, 3, 200, &d, &s), -EINVAL);
	assert_int_equal(eng_dtype_sizes(ENG_DT__COUNT, 3, 256, &d, &s), -EINVAL);
	assert_int_equal(eng_dtype_sizes(ENG_DT_F32, 0, 256, &d, &s), -EINVAL);
}

/* ------------------------------------------------------------------------
 * Images built with the writer API.
 */

/* A small Qwen2-style config: biases, untied, INT4-able dims. */
static struct eng_model_config small_cfg(void)
{
	return (struct eng_model_config){
		.arch = ENG_ARCH_QWEN2, .vocab_size = 64, .hidden = 128,
		.n_layers = 2, .n_heads = 2, .n_kv_heads = 1, .head_dim = 64,
		.ffn = 256, .max_seq = 64, .norm_eps = 1e-6f,
		.rope_theta = 1e6f, .qkv_bias = true, .bos_id = UINT32_MAX,
		.eos_ids = { 60, 61 }, .n_eos = 2, .pad_id = 62,
		.chat_template = ENG_CHAT_CHATML,
	};
}

struct tdesc {
	char name[64];
	enum eng_dtype dt;
	uint32_t ndim, rows, cols;
};

/* Every tensor @c implies, in canonical order, matrices as @mat. */
static unsigned tensor_list(const struct eng_model_config *c, enum eng_dtype mat,
			    struct tdesc *t)
{
	const uint32_t q = c->n_heads * c->head_dim, kv = c->n_kv_heads * c->head_dim;
	unsigned n = 0;

#define ADD(dt_, nd, r, cl, ...) do { \
		snprintf(t[n].name, sizeof(t[n].name), __VA_ARGS__); \
		t[n].dt = (dt_); t[n].ndim = (nd); t[n].rows = (r); t[n].cols = (cl); n++; \
	} while (0)
	ADD(ENG_DT_BF16, 2, c->vocab_size, c->hidden, "model.embed_tokens.weight");
	for (uint32_t l = 0; l < c->n_layers; l++) {
		ADD(ENG_DT_F32, 1, 1, c->hidden, "model.layers.%u.input_layernorm.weight", l);
		ADD(mat, 2, q, c->hidden, "model.layers.%u.self_attn.q_proj.weight", l);
		ADD(mat, 2, kv, c->hidden, "model.layers.%u.self_attn.k_proj.weight", l);
		ADD(mat, 2, kv, c->hidden, "model.layers.%u.self_attn.v_proj.weight", l);
		if (c->qkv_bias) {
			ADD(ENG_DT_BF16, 1, 1, q, "model.layers.%u.self_attn.q_proj.bias", l);
			ADD(ENG_DT_F32, 1, 1, kv, "model.layers.%u.self_attn.k_proj.bias", l);
			ADD(ENG_DT_F32, 1, 1, kv, "model.layers.%u.self_attn.v_proj.bias", l);
		}
		ADD(mat, 2, c->hidden, q, "model.layers.%u.self_attn.o_proj.weight", l);
		if (c->o_bias)
			ADD(ENG_DT_F32, 1, 1, c->hidden, "model.layers.%u.self_attn.o_proj.bias", l);
		ADD(ENG_DT_BF16, 1, 1, c->hidden, "model.layers.%u.post_attention_layernorm.weight", l);
		ADD(mat, 2, c->ffn, c->hidden, "model.layers.%u.mlp.gate_proj.weight", l);
		ADD(mat, 2, c->ffn, c->hidden, "model.layers.%u.mlp.up_proj.weight", l);
		ADD(mat, 2, c->hidden, c->ffn, "model.layers.%u.mlp.down_proj.weight", l);
	}
	ADD(ENG_DT_F32, 1, 1, c->hidden, "model.norm.weight");
	if (!c->tied_embeddings)
		ADD(mat, 2, c->vocab_size, c->hidden, "lm_head.weight");
#undef ADD
	return n;
}

/* Deterministic content byte of tensor @i at @off (data) or scales. */
static uint8_t content(unsigned i, uint64_t off, bool scales)
{
	uint64_t x = (i * 1000003ull + off * 7919ull + (scales ? 17 : 0)) * 0x9e3779b97f4a7c15ull;

	return (uint8_t)(x >> 56);
}

static const char tok_json[] = "{\"version\":\"1.0\",\"model\":{\"type\":\"BPE\"}}";
static const char tok_cfg_json[] = "{\"eos_token\":\"<|im_end|>\"}";

static void build_image(const char *path, const struct eng_model_config *c,
			enum eng_dtype mat, uint32_t align, bool ka)
{
	struct tdesc t[64];
	char err[256] = "";
	struct eng_image_writer *w;
	struct eng_image_writer_params p = {
		.cfg = c, .name = "unit test model", .version = "v1.2",
		.weight_dtype = mat, .data_align = align, .tensor_align = 64,
		.tokenizer_json = tok_json, .tokenizer_json_len = strlen(tok_json),
		.tokenizer_config_json = tok_cfg_json,
		.tokenizer_config_json_len = strlen(tok_cfg_json),
	};
	unsigned n = tensor_list(c, mat, t);
	static const uint32_t prompt[] = { 1, 2, 3 }, expect[] = { 4, 5 };
	static const struct eng_ka_logit lg[] = { { 4, 12.5f }, { 9, 11.0f } };
	struct eng_image_ka k = { prompt, 3, expect, 2, lg, 2, 0.25f };

	assert_int_equal(eng_image_writer_open(path, &p, &w, err, sizeof(err)), 0);
	for (unsigned i = 0; i < n; i++)
		assert_int_equal(eng_image_writer_tensor_add(w, t[i].name, t[i].dt, t[i].ndim,
							     t[i].rows, t[i].cols), (int)i);
	/* the writer refuses a duplicate */
	assert_int_equal(eng_image_writer_tensor_add(w, t[0].name, ENG_DT_BF16, 2, 1, 128), -EINVAL);
	if (ka)
		assert_int_equal(eng_image_writer_ka_set(w, &k), 0);
	for (unsigned i = 0; i < n; i++) {
		uint64_t dl, sl, rb, sb;
		uint8_t *d, *s;
		uint32_t r0 = 0;

		assert_int_equal(eng_dtype_sizes(t[i].dt, t[i].rows, t[i].cols, &dl, &sl), 0);
		d = malloc(dl);
		s = malloc(sl + 1);
		for (uint64_t k2 = 0; k2 < dl; k2++)
			d[k2] = content(i, k2, false);
		for (uint64_t k2 = 0; k2 < sl; k2++)
			s[k2] = content(i, k2, true);
		if (t[i].dt == ENG_DT_FP8_E4M3)	/* scales must be finite floats */
			for (uint64_t k2 = 3; k2 < sl; k2 += 4)
				s[k2] &= 0x3f;
		rb = dl / t[i].rows;
		sb = sl / t[i].rows;
		/* rows in uneven chunks */
		while (r0 < t[i].rows) {
			uint32_t nr = MIN(t[i].rows - r0, 1 + r0 % 7);

			assert_int_equal(eng_image_writer_rows_write(w, i, r0, nr, d + r0 * rb,
								     sl ? s + r0 * sb : NULL), 0);
			r0 += nr;
		}
		free(d);
		free(s);
	}
	assert_int_equal(eng_image_writer_finish(w, NULL), 0);
}

static void test_writer_loader(void **state)
{
	struct eng_model_config c = small_cfg();
	const char *path = tpath("w.img");
	struct tdesc t[64];
	char err[256];
	struct eng_image *img;
	const struct eng_model *m;
	unsigned n;

	for (int dt = ENG_DT_F32; dt < ENG_DT__COUNT; dt++) {
		build_image(path, &c, (enum eng_dtype)dt, dt == ENG_DT_FP8_E4M3 ? 0 : 4096, true);
		assert_int_equal(access(tpath("w.img.tmp"), F_OK), -1);
		n = tensor_list(&c, (enum eng_dtype)dt, t);
		for (int v = 0; v < 2; v++) {
			err[0] = 0;
			assert_int_equal(eng_image_open(path, (enum eng_image_verify)v, &img,
							err, sizeof(err)), 0);
			m = eng_image_model(img);
			assert_int_equal(m->cfg.arch, ENG_ARCH_QWEN2);
			assert_int_equal(m->cfg.vocab_size, 64);
			assert_int_equal(m->cfg.hidden, 128);
			assert_int_equal(m->cfg.n_layers, 2);
			assert_int_equal(m->cfg.n_kv_heads, 1);
			assert_int_equal(m->cfg.n_eos, 2);
			assert_int_equal(m->cfg.eos_ids[1], 61);
			assert_int_equal(m->cfg.pad_id, 62);
			assert_int_equal(m->cfg.bos_id, UINT32_MAX);
			assert_true(m->cfg.qkv_bias);
			assert_false(m->cfg.o_bias);
			assert_false(m->cfg.tied_embeddings);
			assert_int_equal(m->cfg.chat_template, ENG_CHAT_CHATML);
			assert_string_equal(m->name, "unit test model");
			assert_string_equal(m->version, "v1.2");
			assert_int_equal(eng_image_tensor_count(img), n);
			/* every tensor where the table says, with its bytes */
			for (unsigned i = 0; i < n; i++) {
				const struct eng_image_tensor_ent *e = eng_image_tensor_find(img, t[i].name);
				const uint8_t *d;

				assert_non_null(e);
				assert_int_equal(e->dtype, t[i].dt);
				assert_int_equal(e->rows, t[i].rows);
				assert_int_equal(e->cols, t[i].cols);
				d = (const uint8_t *)eng_image_data(img) + e->data_off;
				assert_int_equal((uintptr_t)d % 64, 0);
				for (uint64_t k = 0; k < e->data_len; k += 61)
					assert_int_equal(d[k], content(i, k, false));
			}
			/* name -> model struct mapping */
			const uint8_t *base = eng_image_data(img);
#define AT(nm) (base + eng_image_tensor_find(img, nm)->data_off)
			assert_ptr_equal(m->embed.data, AT("model.embed_tokens.weight"));
			assert_ptr_equal(m->lm_head.data, AT("lm_head.weight"));
			assert_ptr_equal(m->final_norm.data, AT("model.norm.weight"));
			assert_ptr_equal(m->layers[1].wq.data, AT("model.layers.1.self_attn.q_proj.weight"));
			assert_ptr_equal(m->layers[1].wk.data, AT("model.layers.1.self_attn.k_proj.weight"));
			assert_ptr_equal(m->layers[0].wv.data, AT("model.layers.0.self_attn.v_proj.weight"));
			assert_ptr_equal(m->layers[0].wo.data, AT("model.layers.0.self_attn.o_proj.weight"));
			assert_ptr_equal(m->layers[1].bq.data, AT("model.layers.1.self_attn.q_proj.bias"));
			assert_ptr_equal(m->layers[0].bv.data, AT("model.layers.0.self_attn.v_proj.bias"));
			assert_null(m->layers[0].bo.data);
			assert_ptr_equal(m->layers[1].attn_norm.data, AT("model.layers.1.input_layernorm.weight"));
			assert_ptr_equal(m->layers[1].ffn_norm.data, AT("model.layers.1.post_attention_layernorm.weight"));
			assert_ptr_equal(m->layers[0].w_gate.data, AT("model.layers.0.mlp.gate_proj.weight"));
			assert_ptr_equal(m->layers[1].w_up.data, AT("model.layers.1.mlp.up_proj.weight"));
			assert_ptr_equal(m->layers[1].w_down.data, AT("model.layers.1.mlp.down_proj.weight"));
#undef AT
			assert_int_equal(m->layers[1].wq.rows, 128);
			assert_int_equal(m->layers[1].wk.rows, 64);
			assert_int_equal(m->layers[1].w_down.cols, 256);
			assert_int_equal(m->layers[1].attn_norm.dtype, ENG_DT_F32);
			assert_int_equal(m->layers[1].ffn_norm.dtype, ENG_DT_BF16);
			if (dt == ENG_DT_FP8_E4M3 || dt == ENG_DT_INT4_G128)
				assert_non_null(m->layers[0].wq.scales);
			else
				assert_null(m->layers[0].wq.scales);
			/* tokenizer blob: VTOK header and both files verbatim */
			struct eng_image_tok_hdr th;

			assert_int_equal(m->tokenizer_blob_len, 16 + strlen(tok_json) + strlen(tok_cfg_json));
			memcpy(&th, m->tokenizer_blob, 16);
			assert_int_equal(th.magic, 0x4b4f5456u);
			assert_memory_equal((const char *)m->tokenizer_blob + 16, tok_json, strlen(tok_json));
			assert_memory_equal((const char *)m->tokenizer_blob + 16 + strlen(tok_json),
					    tok_cfg_json, strlen(tok_cfg_json));
			/* known answer */
			assert_int_equal(m->ka_prompt_len, 3);
			assert_int_equal(m->ka_prompt[2], 3);
			assert_int_equal(m->ka_expect_len, 2);
			assert_int_equal(m->ka_expect[1], 5);
			assert_int_equal(m->ka_n_logits, 2);
			assert_int_equal(m->ka_logits[1].id, 9);
			assert_true(m->ka_logits[0].logit == 12.5f);
			assert_true(m->ka_logit_tol == 0.25f);
			/* alignment as asked */
			assert_int_equal(eng_image_hdr(img)->data_off %
					 (dt == ENG_DT_FP8_E4M3 ? ENG_IMAGE_DATA_ALIGN : 4096), 0);
			assert_int_equal(eng_image_hdr(img)->file_size % eng_image_hdr(img)->data_align, 0);
			eng_image_close(img);
		}
	}

	/* tied: no lm_head, the model's lm_head is the embedding */
	c.tied_embeddings = true;
	build_image(path, &c, ENG_DT_BF16, 64, false);
	assert_int_equal(eng_image_open(path, ENG_IMAGE_VERIFY_FULL, &img, err, sizeof(err)), 0);
	m = eng_image_model(img);
	assert_ptr_equal(m->lm_head.data, m->embed.data);
	assert_null(eng_image_tensor_find(img, "lm_head.weight"));
	assert_int_equal(m->ka_prompt_len, 0);
	assert_null(m->ka_prompt);
	eng_image_close(img);
}

static void test_writer_misuse(void **state)
{
	struct eng_model_config c = small_cfg();
	struct eng_image_writer *w;
	struct eng_image_writer_params p = {
		.cfg = &c, .name = "x", .tokenizer_json = "{}", .tokenizer_json_len = 2,
		.data_align = 64, .tensor_align = 64,
	};
	char err[256];
	uint8_t buf[1024] = { 0 };
	static const uint32_t bad_prompt[] = { 64 };
	struct eng_image_ka k = { bad_prompt, 1, bad_prompt, 1, NULL, 0, 0 };

	p.data_align = 96;
	assert_int_equal(eng_image_writer_open(tpath("m.img"), &p, &w, err, sizeof(err)), -EINVAL);
	p.data_align = 64;
	p.name = "";
	assert_int_equal(eng_image_writer_open(tpath("m.img"), &p, &w, err, sizeof(err)), -EINVAL);
	p.name = "x";
	assert_int_equal(eng_image_writer_open(tpath("m.img"), &p, &w, err, sizeof(err)), 0);
	assert_int_equal(eng_image_writer_tensor_add(w, "bad name", ENG_DT_F32, 1, 1, 4), -EINVAL);
	assert_int_equal(eng_image_writer_tensor_add(w, "a", ENG_DT_INT4_G128, 2, 4, 100), -EINVAL);
	assert_int_equal(eng_image_writer_tensor_add(w, "a", ENG_DT_F32, 1, 2, 4), -EINVAL);
	assert_int_equal(eng_image_writer_ka_set(w, &k), -EINVAL);
	assert_int_equal(eng_image_writer_tensor_add(w, "a", ENG_DT_F32, 2, 4, 4), 0);
	assert_int_equal(eng_image_writer_tensor_add(w, "b", ENG_DT_F32, 2, 4, 4), 1);
	assert_int_equal(eng_image_writer_rows_write(w, 1, 0, 1, buf, NULL), -EINVAL);
	assert_int_equal(eng_image_writer_rows_write(w, 0, 1, 1, buf, NULL), -EINVAL);
	assert_int_equal(eng_image_writer_rows_write(w, 0, 0, 5, buf, NULL), -EINVAL);
	assert_int_equal(eng_image_writer_rows_write(w, 0, 0, 4, buf, NULL), 0);
	assert_int_equal(eng_image_writer_tensor_add(w, "c", ENG_DT_F32, 2, 4, 4), -EBUSY);
	/* unfinished tensor "b" */
	assert_int_equal(eng_image_writer_finish(w, NULL), -EINVAL);
	assert_non_null(strstr(err, "'b'"));
	assert_int_equal(access(tpath("m.img.tmp"), F_OK), -1);
	assert_int_equal(access(tpath("m.img"), F_OK), -1);

	/* a complete image whose tensors do not match the config: the
	 * writer's own check refuses it and nothing appears */
	assert_int_equal(eng_image_writer_open(tpath("m.img"), &p, &w, err, sizeof(err)), 0);
	assert_int_equal(eng_image_writer_tensor_add(w, "model.norm.weight", ENG_DT_F32, 1, 1, 4), 0);
	assert_int_equal(eng_image_writer_rows_write(w, 0, 0, 1, buf, NULL), 0);
	assert_int_equal(eng_image_writer_finish(w, NULL), -EINVAL);
	assert_non_null(strstr(err, "writer bug"));
	assert_int_equal(access(tpath("m.img"), F_OK), -1);
	assert_int_equal(access(tpath("m.img.tmp"), F_OK), -1);
}

/* ------------------------------------------------------------------------
 * Corruption.
 */

static int open_buf(uint8_t *b, size_t len, enum eng_image_verify v, char *err, size_t el)
{
	struct eng_image *img;
	int rc = eng_image_open_mem(b, len, v, &img, err, el);

	if (!rc)
		eng_image_close(img);
	return rc;
}

static struct eng_image_hdr hdr_of(const uint8_t *b)
{
	struct eng_image_hdr h;

	memcpy(&h, b, sizeof(h));
	return h;
}

static unsigned ent_index(const uint8_t *b, const char *name)
{
	struct eng_image_hdr h = hdr_of(b);

	for (unsigned i = 0; i < h.n_tensors; i++)
		if (!strcmp((const char *)b + h.tensors_off + i * 128, name))
			return i;
	fail_msg("no tensor %s", name);
	return 0;
}

static struct eng_image_tensor_ent *ent_at(uint8_t *b, unsigned i)
{
	return (struct eng_image_tensor_ent *)(b + hdr_of(b).tensors_off + i * 128);
}

/* Apply @edit to a copy of @img, re-seal it, and expect @rc with @msg. */
typedef void (*edit_fn)(uint8_t *b, size_t *len);

static void expect_edit(const uint8_t *img, size_t len, edit_fn edit, int rc,
			const char *msg, const char *what)
{
	uint8_t *b = aligned_alloc(64, ALIGN_UP(len + 4096, 64));
	char err[512] = "";
	int got;

	memcpy(b, img, len);
	edit(b, &len);
	assert_int_equal(eng_image_checksums_update(b, len), 0);
	got = open_buf(b, len, ENG_IMAGE_VERIFY_FULL, err, sizeof(err));
	if (got != rc || !strstr(err, msg))
		fail_msg("%s: got %d \"%s\", expected %d \"...%s...\"", what, got, err, rc, msg);
	free(b);
}

#define EDIT(nm, body) static void nm(uint8_t *b, size_t *len) { (void)len; body; }
#define HDR_EDIT(nm, stmt) EDIT(nm, { struct eng_image_hdr h = hdr_of(b); stmt; memcpy(b, &h, sizeof(h)); })
#define CFG_EDIT(nm, stmt) EDIT(nm, { struct eng_image_cfg *c = (void *)(b + hdr_of(b).cfg_off); stmt; })

EDIT(e_dup, strcpy(ent_at(b, ent_index(b, "model.layers.0.self_attn.k_proj.weight"))->name,
		   "model.layers.0.self_attn.v_proj.weight"))
EDIT(e_shape, ent_at(b, ent_index(b, "model.layers.1.self_attn.q_proj.weight"))->rows++)
EDIT(e_cols, ent_at(b, ent_index(b, "model.layers.1.mlp.down_proj.weight"))->cols = 128)
EDIT(e_dtype, ent_at(b, 3)->dtype = 9)
EDIT(e_norm_fp8, ent_at(b, ent_index(b, "model.norm.weight"))->dtype = ENG_DT_FP8_E4M3)
EDIT(e_embed_int4, ent_at(b, 0)->dtype = ENG_DT_INT4_G128)
EDIT(e_len, ent_at(b, 2)->data_len += 64)
EDIT(e_ndim, ent_at(b, ent_index(b, "model.norm.weight"))->ndim = 2)
EDIT(e_overlap, ent_at(b, 3)->data_off = ent_at(b, 2)->data_off + 64)
EDIT(e_misalign, ent_at(b, 5)->data_off += 8)
EDIT(e_outside, ent_at(b, 5)->data_off = hdr_of(b).data_len)
EDIT(e_huge_off, ent_at(b, 5)->data_off = UINT64_MAX - 63)
EDIT(e_unknown, strcpy(ent_at(b, 2)->name, "model.layers.0.self_attn.x_proj.weight"))
EDIT(e_layer, strcpy(ent_at(b, 2)->name, "model.layers.2.self_attn.q_proj.weight"))
EDIT(e_zero, strcpy(ent_at(b, 2)->name, "model.layers.01.self_attn.q_proj.weight"))
EDIT(e_noterm, memset(ent_at(b, 2)->name, 'a', 64))
EDIT(e_scale_off, ent_at(b, 1)->scale_off = 64)
HDR_EDIT(e_missing, h.n_tensors--)
HDR_EDIT(e_toomany, h.n_tensors += 100)
HDR_EDIT(e_align, h.data_align = 96)
HDR_EDIT(e_talign, h.tensor_align = 2 * h.data_align)
HDR_EDIT(e_version, h.version_major = 2)
HDR_EDIT(e_meta, h.meta_len = h.data_off)
HDR_EDIT(e_cfglen, h.cfg_len = 64)
HDR_EDIT(e_tokoff, h.tok_off = h.cfg_off)
HDR_EDIT(e_tokodd, h.tok_off += 4)
HDR_EDIT(e_name, memset(h.name, 'x', sizeof(h.name)))
HDR_EDIT(e_datalen, h.data_len -= h.data_align)
HDR_EDIT(e_kalen, h.ka_len = 4)
CFG_EDIT(e_kv, c->n_kv_heads = 3)
CFG_EDIT(e_arch, c->arch = 9)
CFG_EDIT(e_eps, c->norm_eps = NAN)
CFG_EDIT(e_rope, c->rope_scaling = 7)
CFG_EDIT(e_rope3, { c->rope_scaling = ENG_ROPE_LLAMA3; c->rope_factor = 8; c->rope_low_freq_factor = 4; c->rope_high_freq_factor = 1; c->rope_orig_max_pos = 32; })
CFG_EDIT(e_mlpbias, c->flags |= ENG_IMAGE_CFG_MLP_BIAS)
CFG_EDIT(e_flags, c->flags |= 0x100)
CFG_EDIT(e_bos, c->bos_id = c->vocab_size)
CFG_EDIT(e_neos, c->n_eos = 5)
CFG_EDIT(e_hidden, c->hidden = 0)
CFG_EDIT(e_tied, c->flags |= ENG_IMAGE_CFG_TIED)
CFG_EDIT(e_nobias, c->flags &= ~ENG_IMAGE_CFG_QKV_BIAS)
CFG_EDIT(e_layers, c->n_layers = 3)
EDIT(e_tokmagic, b[hdr_of(b).tok_off] ^= 1)
EDIT(e_toklen, { uint32_t x; memcpy(&x, b + hdr_of(b).tok_off + 8, 4); x++; memcpy(b + hdr_of(b).tok_off + 8, &x, 4); })
EDIT(e_kamagic, b[hdr_of(b).ka_off] ^= 1)
EDIT(e_katoken, { uint32_t x = 64; memcpy(b + hdr_of(b).ka_off + 32, &x, 4); })
EDIT(e_kalogit, { float x = NAN; memcpy(b + hdr_of(b).ka_off + 32 + 12 + 8 + 4, &x, 4); })
EDIT(e_trailing, { b[*len] = 0; (*len) += 64; })

static void test_corrupt_structure(void **state)
{
	struct eng_model_config c = small_cfg();
	const uint64_t *ctr = eng_image_counters(NULL);
	uint64_t rej_tensor0 = ctr[ENG_IMAGE_CTR_rej_tensor];
	size_t len;
	uint8_t *img;
	static const struct {
		edit_fn fn;
		int rc;
		const char *msg, *what;
	} cases[] = {
		{ e_dup, -EINVAL, "duplicate", "duplicate name" },
		{ e_shape, -EINVAL, "shape", "rows off by one" },
		{ e_cols, -EINVAL, "shape", "cols of down_proj" },
		{ e_dtype, -ENOTSUP, "unknown dtype", "dtype 9" },
		{ e_norm_fp8, -EINVAL, "not allowed", "FP8 norm" },
		{ e_embed_int4, -EINVAL, "not allowed", "INT4 embedding" },
		{ e_len, -EINVAL, "needs", "data_len" },
		{ e_ndim, -EINVAL, "shape", "ndim of a norm" },
		{ e_overlap, -EINVAL, "overlap", "overlapping tensors" },
		{ e_misalign, -EINVAL, "not aligned", "misaligned offset" },
		{ e_outside, -EINVAL, "outside", "offset past the data" },
		{ e_huge_off, -EINVAL, "outside", "offset near 2^64" },
		{ e_unknown, -EINVAL, "unknown name", "unknown name" },
		{ e_layer, -EINVAL, "unknown name", "layer out of range" },
		{ e_zero, -EINVAL, "unknown name", "leading zero" },
		{ e_noterm, -EINVAL, "name is not", "unterminated name" },
		{ e_scale_off, -EINVAL, "needs", "scale offset without scales" },
		{ e_missing, -EINVAL, "missing tensor 'lm_head.weight'", "missing tensor" },
		{ e_toomany, -EINVAL, "", "more tensors than the config" },
		{ e_align, -EINVAL, "data alignment", "data alignment 96" },
		{ e_talign, -EINVAL, "tensor alignment", "tensor alignment" },
		{ e_version, -ENOTSUP, "format version 2", "major version" },
		{ e_meta, -EINVAL, "metadata", "metadata into the data" },
		{ e_cfglen, -EINVAL, "config section", "config length" },
		{ e_tokoff, -EINVAL, "overlap", "sections overlap" },
		{ e_tokodd, -EINVAL, "misaligned", "odd section offset" },
		{ e_name, -EINVAL, "model name", "unterminated model name" },
		{ e_datalen, -EINVAL, "data region", "data region length" },
		{ e_kalen, -EINVAL, "known-answer", "short known-answer" },
		{ e_kv, -EINVAL, "KV heads", "KV heads not dividing" },
		{ e_arch, -ENOTSUP, "architecture", "unknown arch" },
		{ e_eps, -EINVAL, "norm_eps", "NaN epsilon" },
		{ e_rope, -ENOTSUP, "rope scaling", "unknown rope scaling" },
		{ e_rope3, -EINVAL, "llama3 rope", "llama3 rope high < low" },
		{ e_mlpbias, -ENOTSUP, "MLP biases", "MLP bias flag" },
		{ e_flags, -EINVAL, "unknown flags", "unknown flag" },
		{ e_bos, -EINVAL, "bos id", "bos out of vocab" },
		{ e_neos, -EINVAL, "eos ids", "5 eos ids" },
		{ e_hidden, -EINVAL, "hidden", "hidden 0" },
		{ e_tied, -EINVAL, "", "tied flag with an lm_head" },
		{ e_nobias, -EINVAL, "", "biases the config does not have" },
		{ e_layers, -EINVAL, "missing tensor 'model.layers.2.", "a layer more in the config" },
		{ e_tokmagic, -EINVAL, "tokenizer section", "tokenizer magic" },
		{ e_toklen, -EINVAL, "do not fill", "tokenizer lengths" },
		{ e_kamagic, -EINVAL, "known-answer record: bad magic", "KA magic" },
		{ e_katoken, -EINVAL, "token 64", "KA token out of vocab" },
		{ e_kalogit, -EINVAL, "logit", "KA NaN logit" },
		{ e_trailing, -EINVAL, "trailing bytes", "trailing bytes" },
	};

	build_image(tpath("c.img"), &c, ENG_DT_INT4_G128, 64, true);
	img = read_file(tpath("c.img"), &len);
	/* the base image passes; each edit fails its own way */
	assert_int_equal(open_buf(img, len, ENG_IMAGE_VERIFY_FULL, NULL, 0), 0);
	for (unsigned i = 0; i < ARRAY_SIZE(cases); i++)
		expect_edit(img, len, cases[i].fn, cases[i].rc, cases[i].msg, cases[i].what);
	assert_true(ctr[ENG_IMAGE_CTR_rej_tensor] > rej_tensor0);
	/* misaligned buffer */
	uint8_t *mis = aligned_alloc(64, ALIGN_UP(len + 64, 64));

	memcpy(mis + 8, img, len);
	assert_int_equal(open_buf(mis + 8, len, ENG_IMAGE_VERIFY_FAST, NULL, 0), -EINVAL);
	free(mis);
	free(img);
}

static void test_corrupt_bytes(void **state)
{
	struct eng_model_config c = small_cfg();
	const uint64_t *ctr = eng_image_counters(NULL);
	uint64_t ck0 = ctr[ENG_IMAGE_CTR_rej_checksum];
	struct eng_image_hdr h;
	struct eng_image_tensor_ent e;
	char err[512];
	size_t len;
	uint8_t *img, *b;
	unsigned iq;

	build_image(tpath("b.img"), &c, ENG_DT_FP8_E4M3, 4096, true);
	img = read_file(tpath("b.img"), &len);
	b = aligned_alloc(64, ALIGN_UP(len, 64));
	h = hdr_of(img);

	/* truncated anywhere: refused (file and memory), never a crash */
	for (size_t l = 0; l < len; l += (l < h.data_off + 512 ? 1 + l / 64 : 4093)) {
		write_file(tpath("t.img"), img, l);
		struct eng_image *x;

		assert_int_equal(eng_image_open(tpath("t.img"), ENG_IMAGE_VERIFY_FAST, &x, err, sizeof(err)),
				 -EINVAL);
		assert_null(x);
		assert_int_equal(open_buf(img, l, ENG_IMAGE_VERIFY_FULL, err, sizeof(err)), -EINVAL);
		assert_true(strstr(err, "truncated") != NULL);
	}
	/* a missing file */
	struct eng_image *x;

	assert_int_equal(eng_image_open(tpath("nonexistent.img"), ENG_IMAGE_VERIFY_FAST, &x, err, sizeof(err)),
			 -ENOENT);

	/* header byte: header checksum */
	memcpy(b, img, len);
	b[100] ^= 0x10;
	assert_int_equal(open_buf(b, len, ENG_IMAGE_VERIFY_FAST, err, sizeof(err)), -EBADMSG);
	assert_non_null(strstr(err, "header checksum"));
	/* magic: not an image */
	memcpy(b, img, len);
	b[0] = 'X';
	assert_int_equal(open_buf(b, len, ENG_IMAGE_VERIFY_FAST, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "magic"));
	/* every metadata byte: metadata checksum, even at FAST */
	for (uint64_t off = h.meta_off; off < h.meta_off + h.meta_len; off += 7) {
		memcpy(b, img, len);
		b[off] ^= 0x01;
		assert_int_equal(open_buf(b, len, ENG_IMAGE_VERIFY_FAST, err, sizeof(err)), -EBADMSG);
		assert_non_null(strstr(err, "metadata checksum"));
	}
	/* a tensor byte: FAST does not look, FULL names the tensor */
	iq = ent_index(img, "model.layers.1.mlp.up_proj.weight");
	memcpy(&e, img + h.tensors_off + iq * 128, sizeof(e));
	memcpy(b, img, len);
	b[h.data_off + e.data_off + e.data_len / 2] ^= 0x80;
	assert_int_equal(open_buf(b, len, ENG_IMAGE_VERIFY_FAST, err, sizeof(err)), 0);
	assert_int_equal(open_buf(b, len, ENG_IMAGE_VERIFY_FULL, err, sizeof(err)), -EBADMSG);
	assert_non_null(strstr(err, "'model.layers.1.mlp.up_proj.weight'"));
	/* its scales too */
	memcpy(b, img, len);
	b[h.data_off + e.scale_off + 1] ^= 0x01;
	assert_int_equal(open_buf(b, len, ENG_IMAGE_VERIFY_FULL, err, sizeof(err)), -EBADMSG);
	assert_non_null(strstr(err, "'model.layers.1.mlp.up_proj.weight'"));
	/* padding at the end of the data region: the file checksum */
	memcpy(b, img, len);
	b[len - 1] ^= 1;
	assert_int_equal(open_buf(b, len, ENG_IMAGE_VERIFY_FULL, err, sizeof(err)), -EBADMSG);
	assert_non_null(strstr(err, "outside any tensor"));
	/* padding between metadata and data */
	memcpy(b, img, len);
	b[h.data_off - 1] ^= 1;
	assert_int_equal(open_buf(b, len, ENG_IMAGE_VERIFY_FAST, err, sizeof(err)), 0);
	assert_int_equal(open_buf(b, len, ENG_IMAGE_VERIFY_FULL, err, sizeof(err)), -EBADMSG);
	/* eng_image_verify_full on a FAST-opened damaged image */
	memcpy(b, img, len);
	b[h.data_off + e.data_off] ^= 4;
	assert_int_equal(eng_image_open_mem(b, len, ENG_IMAGE_VERIFY_FAST, &x, err, sizeof(err)), 0);
	assert_int_equal(eng_image_verify_full(x, err, sizeof(err)), -EBADMSG);
	eng_image_close(x);
	assert_true(ctr[ENG_IMAGE_CTR_rej_checksum] > ck0);

	/* random damage, re-sealed or not: a clean error or success, never a
	 * crash; the result must stay a valid model when accepted */
	for (unsigned it = 0; it < 3000; it++) {
		size_t l = len;
		unsigned nflip = 1 + rnd() % 8;

		memcpy(b, img, len);
		for (unsigned k = 0; k < nflip; k++) {
			/* mostly the header and metadata, where the parser is */
			size_t off = (rnd() % 4) ? rnd() % h.data_off : rnd() % len;

			b[off] ^= (uint8_t)(1u << (rnd() % 8));
		}
		if (rnd() % 8 == 0)
			l = rnd() % len;
		if (rnd() % 2)
			eng_image_checksums_update(b, l);
		int rc = eng_image_open_mem(b, l, (enum eng_image_verify)(rnd() % 2), &x, err, sizeof(err));

		assert_true(rc == 0 || rc == -EINVAL || rc == -EBADMSG || rc == -ENOTSUP);
		if (!rc) {
			const struct eng_model *m = eng_image_model(x);

			assert_non_null(m->embed.data);
			assert_true(m->cfg.n_layers >= 1);
			for (uint32_t li = 0; li < m->cfg.n_layers; li++)
				assert_non_null(m->layers[li].w_down.data);
			eng_image_close(x);
		} else {
			assert_true(strlen(err) > 0);
		}
	}
	free(b);
	free(img);
}

static void test_ka_patch(void **state)
{
	struct eng_model_config c = small_cfg();
	const char *path = tpath("k.img");
	static const uint32_t prompt[] = { 7, 8, 9, 10 }, expect[] = { 11, 12, 13 };
	struct eng_image_ka k = { prompt, 4, expect, 3, NULL, 0, 0 };
	struct eng_image *img;
	char err[256];
	uint32_t big[ENG_IMAGE_KA_PROMPT_MAX + 1] = { 0 };
	uint8_t *b;
	size_t len;

	build_image(path, &c, ENG_DT_BF16, 64, false);
	assert_int_equal(eng_image_ka_patch(path, &k, err, sizeof(err)), 0);
	assert_int_equal(eng_image_open(path, ENG_IMAGE_VERIFY_FULL, &img, err, sizeof(err)), 0);
	assert_int_equal(eng_image_model(img)->ka_prompt_len, 4);
	assert_int_equal(eng_image_model(img)->ka_expect[2], 13);
	eng_image_close(img);
	/* a longer record replaces it; a shorter one after that too */
	k.prompt = big;
	k.prompt_len = c.max_seq - k.expect_len;
	assert_int_equal(eng_image_ka_patch(path, &k, err, sizeof(err)), 0);
	k.prompt_len++;		/* prompt + expected tokens beyond max_seq */
	assert_int_equal(eng_image_ka_patch(path, &k, err, sizeof(err)), -EINVAL);
	k.prompt = prompt;
	k.prompt_len = 1;
	assert_int_equal(eng_image_ka_patch(path, &k, err, sizeof(err)), 0);
	assert_int_equal(eng_image_open(path, ENG_IMAGE_VERIFY_FULL, &img, err, sizeof(err)), 0);
	assert_int_equal(eng_image_model(img)->ka_prompt_len, 1);
	assert_int_equal(eng_image_model(img)->ka_prompt[0], 7);
	eng_image_close(img);
	/* out of bounds */
	k.prompt_len = ENG_IMAGE_KA_PROMPT_MAX + 1;
	k.prompt = big;
	assert_int_equal(eng_image_ka_patch(path, &k, err, sizeof(err)), -EINVAL);
	/* a damaged image is never re-sealed */
	k.prompt = prompt;
	k.prompt_len = 2;
	b = read_file(path, &len);
	b[len - 1] ^= 1;
	write_file(path, b, len);
	free(b);
	assert_int_equal(eng_image_ka_patch(path, &k, err, sizeof(err)), -EBADMSG);
	assert_int_equal(eng_image_open(path, ENG_IMAGE_VERIFY_FULL, &img, err, sizeof(err)), -EBADMSG);
}

/* ------------------------------------------------------------------------
 * velo-convert on Hugging Face directories.
 */

struct st_in {
	char name[64];
	const char *dtype;	/* "BF16", "F16", "F32" */
	uint32_t ndim, rows, cols;
	float *val;		/* the exact values stored, as f32 */
};

/* Fill @t with N(0, sd) values representable in its dtype, with a zero row
 * and tiny values in places (scale 0, FP8 subnormals). */
static void st_fill(struct st_in *t, float sd, float mean)
{
	size_t n = (size_t)t->rows * t->cols;

	t->val = malloc(n * sizeof(float));
	for (size_t i = 0; i < n; i++) {
		float x = rnd_normal(sd);

		if (t->rows > 2 && i / t->cols == 1)
			x = 0;				/* a zero row */
		if (t->rows > 3 && i / t->cols == 2 && i % 5)
			x *= 1e-4f;			/* tiny next to normal */
		x += mean;
		if (!strcmp(t->dtype, "BF16"))
			x = eng_bf16_to_f32(ref_bf16(x));
		else if (!strcmp(t->dtype, "F16"))
			x = ref_f16_val(ref_f16(x));
		t->val[i] = x;
	}
}

/* A safetensors file of @n tensors (header padded to 8 with spaces). */
static void st_write(const char *path, struct st_in *t, unsigned n)
{
	char *hdr = malloc(65536);
	size_t hl = 0, off = 0;
	uint64_t hlen;
	FILE *f;

	hl += (size_t)snprintf(hdr + hl, 65536 - hl, "{\"__metadata__\":{\"format\":\"pt\"}");
	for (unsigned i = 0; i < n; i++) {
		size_t es = strcmp(t[i].dtype, "F32") ? 2 : 4, sz = es * t[i].rows * t[i].cols;

		if (t[i].ndim == 1)
			hl += (size_t)snprintf(hdr + hl, 65536 - hl,
					       ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%u],\"data_offsets\":[%zu,%zu]}",
					       t[i].name, t[i].dtype, t[i].cols, off, off + sz);
		else
			hl += (size_t)snprintf(hdr + hl, 65536 - hl,
					       ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%u,%u],\"data_offsets\":[%zu,%zu]}",
					       t[i].name, t[i].dtype, t[i].rows, t[i].cols, off, off + sz);
		off += sz;
	}
	hdr[hl++] = '}';
	while (hl % 8)
		hdr[hl++] = ' ';
	f = fopen(path, "wb");
	assert_non_null(f);
	hlen = hl;
	fwrite(&hlen, 8, 1, f);
	fwrite(hdr, 1, hl, f);
	for (unsigned i = 0; i < n; i++)
		for (size_t k = 0; k < (size_t)t[i].rows * t[i].cols; k++) {
			float v = t[i].val[k];
			uint16_t h;

			if (!strcmp(t[i].dtype, "F32")) {
				fwrite(&v, 4, 1, f);
				continue;
			}
			h = !strcmp(t[i].dtype, "BF16") ? ref_bf16(v) : ref_f16(v);
			fwrite(&h, 2, 1, f);
		}
	assert_int_equal(fclose(f), 0);
	free(hdr);
}

/* What an image tensor must hold for source values @v, by the rules and
 * independent references: exact for F32, nearest-even for BF16, FP8 codes
 * of w / (max|row| / 448), INT4 levels minimising the error with the f16
 * group scale f16(max|group| / 7). */
static void check_tensor(const struct eng_image *img, const char *name,
			 const float *v, uint32_t rows, uint32_t cols,
			 enum eng_dtype want)
{
	const struct eng_image_tensor_ent *e = eng_image_tensor_find(img, name);
	const uint8_t *d, *s;

	if (!e)
		fail_msg("image lacks %s", name);
	if (e->dtype != (uint32_t)want || e->rows != rows || e->cols != cols)
		fail_msg("%s: %s [%u, %u], expected %s [%u, %u]", name,
			 eng_dtype_name((enum eng_dtype)e->dtype), e->rows, e->cols,
			 eng_dtype_name(want), rows, cols);
	d = (const uint8_t *)eng_image_data(img) + e->data_off;
	s = (const uint8_t *)eng_image_data(img) + e->scale_off;
	for (uint32_t r = 0; r < rows; r++) {
		const float *w = v + (size_t)r * cols;

		switch (want) {
		case ENG_DT_F32:
			for (uint32_t i = 0; i < cols; i++) {
				float x;

				memcpy(&x, d + ((size_t)r * cols + i) * 4, 4);
				if (f_bits(x) != f_bits(w[i]))
					fail_msg("%s[%u][%u]: %g, source %g", name, r, i, x, w[i]);
			}
			break;
		case ENG_DT_BF16:
			for (uint32_t i = 0; i < cols; i++) {
				uint16_t h;

				memcpy(&h, d + ((size_t)r * cols + i) * 2, 2);
				if (h != ref_bf16(w[i]))
					fail_msg("%s[%u][%u]: bf16 %04x, expected %04x", name, r, i, h,
						 ref_bf16(w[i]));
			}
			break;
		case ENG_DT_FP8_E4M3: {
			float mx = 0, sc;

			for (uint32_t i = 0; i < cols; i++)
				mx = fmaxf(mx, fabsf(w[i]));
			memcpy(&sc, s + (size_t)r * 4, 4);
			if (sc != mx / 448.0f)
				fail_msg("%s row %u: scale %g, expected %g", name, r, sc, mx / 448.0f);
			for (uint32_t i = 0; i < cols; i++) {
				uint8_t q = d[(size_t)r * cols + i];
				uint8_t want_q = sc > 0 ? ref_fp8(w[i] / sc) : 0;

				if (q != want_q)
					fail_msg("%s[%u][%u]: fp8 %02x, expected %02x (w %g scale %g)",
						 name, r, i, q, want_q, w[i], sc);
			}
			break;
		}
		case ENG_DT_INT4_G128:
			for (uint32_t g = 0; g < cols / 128; g++) {
				float mx = 0, sf;
				uint16_t sh;

				for (uint32_t i = 0; i < 128; i++)
					mx = fmaxf(mx, fabsf(w[g * 128 + i]));
				memcpy(&sh, s + ((size_t)r * (cols / 128) + g) * 2, 2);
				if (sh != ref_f16(mx / 7.0f))
					fail_msg("%s row %u group %u: scale %04x, expected %04x", name, r,
						 g, sh, ref_f16(mx / 7.0f));
				sf = ref_f16_val(sh);
				for (uint32_t i = 0; i < 128; i++) {
					uint8_t byte = d[(size_t)r * cols / 2 + (g * 128 + i) / 2];
					int q = ((i & 1) ? byte >> 4 : byte & 15) - 8;
					int want_q = ref_int4(w[g * 128 + i], sf);

					if (q != want_q)
						fail_msg("%s[%u][%u]: int4 %d, expected %d (w %g s %g)", name,
							 r, g * 128 + i, q, want_q, w[g * 128 + i], sf);
					if (fabsf(w[g * 128 + i]) <= 7 * sf &&
					    fabsf(w[g * 128 + i] - q * sf) > sf / 2 * 1.0001f)
						fail_msg("%s: int4 error beyond half a step", name);
				}
			}
			break;
		default:
			fail_msg("unexpected dtype");
		}
	}
}

struct hf_dir {
	struct eng_model_config cfg;
	struct st_in t[64];
	unsigned n;
};

/* Write an HF directory for @h->cfg (its own tensors, mixed source
 * dtypes), single-file or in two shards, plus an unused tensor. */
static void hf_write(const char *dir, struct hf_dir *h, bool sharded, const char *arch_json)
{
	const struct eng_model_config *c = &h->cfg;
	struct tdesc td[64];
	unsigned n = tensor_list(c, ENG_DT_BF16, td);
	char path[512], json[4096];
	static const char *const srcdt[] = { "BF16", "F32", "F16" };

	mkdir(dir, 0755);
	h->n = 0;
	for (unsigned i = 0; i < n; i++) {
		struct st_in *t = &h->t[h->n++];
		bool vec = td[i].ndim == 1;

		memcpy(t->name, td[i].name, sizeof(t->name));
		t->ndim = td[i].ndim;
		t->rows = td[i].rows;
		t->cols = td[i].cols;
		t->dtype = srcdt[i % 3];
		if (vec && strstr(t->name, "norm"))
			st_fill(t, 0.3f, 1.0f);
		else
			st_fill(t, 0.05f, 0.0f);
	}
	/* a tensor the engine does not use */
	struct st_in *x = &h->t[h->n];

	snprintf(x->name, sizeof(x->name), "model.rotary_emb.inv_freq");
	x->dtype = "F32";
	x->ndim = 1;
	x->rows = 1;
	x->cols = 16;
	st_fill(x, 1, 0);
	if (!sharded) {
		snprintf(path, sizeof(path), "%s/model.safetensors", dir);
		st_write(path, h->t, h->n + 1);
	} else {
		unsigned half = h->n / 2;
		size_t l = 0;

		snprintf(path, sizeof(path), "%s/model-00001-of-00002.safetensors", dir);
		st_write(path, h->t, half);
		snprintf(path, sizeof(path), "%s/model-00002-of-00002.safetensors", dir);
		st_write(path, h->t + half, h->n + 1 - half);
		char *idx = malloc(65536);

		l += (size_t)snprintf(idx + l, 65536 - l, "{\"metadata\":{},\"weight_map\":{");
		for (unsigned i = 0; i <= h->n; i++)
			l += (size_t)snprintf(idx + l, 65536 - l, "%s\"%s\":\"model-0000%u-of-00002.safetensors\"",
					      i ? "," : "", h->t[i].name, i < half ? 1 : 2);
		l += (size_t)snprintf(idx + l, 65536 - l, "}}");
		snprintf(path, sizeof(path), "%s/model.safetensors.index.json", dir);
		write_file(path, idx, l);
		free(idx);
	}
	snprintf(json, sizeof(json),
		 "{%s,\"hidden_size\":%u,\"intermediate_size\":%u,\"num_hidden_layers\":%u,"
		 "\"num_attention_heads\":%u,\"num_key_value_heads\":%u,\"vocab_size\":%u,"
		 "\"max_position_embeddings\":%u,\"rms_norm_eps\":%g,\"hidden_act\":\"silu\","
		 "\"tie_word_embeddings\":%s,\"torch_dtype\":\"bfloat16\"}",
		 arch_json, c->hidden, c->ffn, c->n_layers, c->n_heads, c->n_kv_heads,
		 c->vocab_size, c->max_seq, (double)c->norm_eps,
		 c->tied_embeddings ? "true" : "false");
	snprintf(path, sizeof(path), "%s/config.json", dir);
	write_file(path, json, strlen(json));
	snprintf(path, sizeof(path), "%s/tokenizer.json", dir);
	write_file(path, tok_json, strlen(tok_json));
}

static void free_hf(struct hf_dir *h)
{
	for (unsigned i = 0; i <= h->n; i++)
		free(h->t[i].val);
}

static enum eng_dtype want_dtype(const struct st_in *t, enum eng_dtype mat)
{
	if (t->ndim == 1)
		return ENG_DT_F32;
	if (!strcmp(t->name, "model.embed_tokens.weight"))
		return ENG_DT_BF16;
	if (mat == ENG_DT_INT4_G128 && t->cols % 128)
		return ENG_DT_BF16;
	return mat;
}

static void check_hf_image(const char *path, const struct hf_dir *h, enum eng_dtype mat)
{
	struct eng_image *img;
	char err[512] = "";

	if (eng_image_open(path, ENG_IMAGE_VERIFY_FULL, &img, err, sizeof(err)))
		fail_msg("%s: %s", path, err);
	assert_int_equal(eng_image_tensor_count(img), h->n);
	for (unsigned i = 0; i < h->n; i++)
		check_tensor(img, h->t[i].name, h->t[i].val, h->t[i].rows, h->t[i].cols,
			     want_dtype(&h->t[i], mat));
	assert_null(eng_image_tensor_find(img, "model.rotary_emb.inv_freq"));
	assert_int_equal(eng_image_cfg(img)->weight_dtype, mat);
	eng_image_close(img);
}

static const char *const dt_arg[] = { [ENG_DT_BF16] = "bf16", [ENG_DT_FP8_E4M3] = "fp8",
				      [ENG_DT_INT4_G128] = "int4" };
static const enum eng_dtype dts[] = { ENG_DT_BF16, ENG_DT_FP8_E4M3, ENG_DT_INT4_G128 };

static void test_convert_qwen2(void **state)
{
	struct hf_dir *h = calloc(1, sizeof(*h));
	const char *dir = tpath("hf-qwen2"), *out = tpath("q.img");
	char path[512];
	struct eng_image *img;
	char err[256];

	h->cfg = (struct eng_model_config){
		.vocab_size = 300, .hidden = 256, .n_layers = 2, .n_heads = 4,
		.n_kv_heads = 2, .head_dim = 64, .ffn = 384, .max_seq = 512,
		.norm_eps = 1e-6f, .tied_embeddings = true, .qkv_bias = true,
	};
	hf_write(dir, h, false,
		 "\"architectures\":[\"Qwen2ForCausalLM\"],\"model_type\":\"qwen2\","
		 "\"rope_theta\":1000000.0,\"bos_token_id\":290,\"eos_token_id\":291,"
		 "\"sliding_window\":4096,\"use_sliding_window\":false,\"max_window_layers\":2");
	snprintf(path, sizeof(path), "%s/generation_config.json", dir);
	{
		const char *g = "{\"eos_token_id\":[292,291],\"pad_token_id\":290}";

		write_file(path, g, strlen(g));
	}
	snprintf(path, sizeof(path), "%s/tokenizer_config.json", dir);
	write_file(path, tok_cfg_json, strlen(tok_cfg_json));
	/* the chat template in tokenizer_config decides the family */
	const char *tc = "{\"chat_template\":\"{% for m in messages %}<|im_start|>{{ m.content }}{% endfor %}\"}";

	write_file(path, tc, strlen(tc));

	for (unsigned k = 0; k < ARRAY_SIZE(dts); k++) {
		const char *args[] = { "--dtype", dt_arg[dts[k]], "-q", "--no-sync", "-j", k == 1 ? "1" : "2",
				       "--align", k == 0 ? "2097152" : "64", dir, "-o", out, NULL };

		assert_int_equal(run_convert(args), 0);
		check_hf_image(out, h, dts[k]);
	}
	assert_int_equal(eng_image_open(out, ENG_IMAGE_VERIFY_FAST, &img, err, sizeof(err)), 0);
	const struct eng_model *m = eng_image_model(img);

	assert_int_equal(m->cfg.arch, ENG_ARCH_QWEN2);
	assert_true(m->cfg.qkv_bias);
	assert_false(m->cfg.o_bias);
	assert_true(m->cfg.tied_embeddings);
	assert_ptr_equal(m->lm_head.data, m->embed.data);
	assert_int_equal(m->cfg.n_eos, 2);
	assert_int_equal(m->cfg.eos_ids[0], 292);
	assert_int_equal(m->cfg.eos_ids[1], 291);
	assert_int_equal(m->cfg.bos_id, 290);
	assert_int_equal(m->cfg.pad_id, 290);
	assert_int_equal(m->cfg.sliding_window, 0);
	assert_true(m->cfg.rope_theta == 1e6f);
	assert_true(m->cfg.norm_eps == 1e-6f);
	assert_int_equal(m->cfg.max_seq, 512);
	assert_int_equal(m->cfg.chat_template, ENG_CHAT_CHATML);
	assert_int_equal(m->tokenizer_blob_len, 16 + strlen(tok_json) + strlen(tc));
	assert_memory_equal((const char *)m->tokenizer_blob + 16, tok_json, strlen(tok_json));
	assert_memory_equal((const char *)m->tokenizer_blob + 16 + strlen(tok_json), tc, strlen(tc));
	assert_string_equal(m->name, "hf-qwen2");
	eng_image_close(img);

	/* --info and --verify accept it */
	const char *info[] = { "--info", out, NULL }, *ver[] = { "--verify", out, NULL };

	assert_int_equal(run_convert(info), 0);
	assert_int_equal(run_convert(ver), 0);
	free_hf(h);
	free(h);
}

static void test_convert_llama_sharded(void **state)
{
	struct hf_dir *h = calloc(1, sizeof(*h));
	const char *dir = tpath("hf-llama"), *out = tpath("l.img");
	char path[512], err[256];
	struct eng_image *img;
	const char *ka = "{\"prompt\":[1,5,9],\"expect\":[7,7,2],\"logits\":[[7,3.5],[2,3.25]],\"tolerance\":0.5}";

	h->cfg = (struct eng_model_config){
		.vocab_size = 260, .hidden = 128, .n_layers = 2, .n_heads = 2,
		.n_kv_heads = 1, .head_dim = 64, .ffn = 320, .max_seq = 256,
		.norm_eps = 1e-5f,
	};
	hf_write(dir, h, true,
		 "\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\","
		 "\"rope_theta\":500000.0,\"attention_bias\":false,\"mlp_bias\":false,"
		 "\"rope_scaling\":{\"factor\":8.0,\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,"
		 "\"original_max_position_embeddings\":64,\"rope_type\":\"llama3\"},"
		 "\"bos_token_id\":256,\"eos_token_id\":[257,258]");
	snprintf(path, sizeof(path), "%s/ka.json", tmpdir);
	write_file(path, ka, strlen(ka));
	for (unsigned k = 0; k < ARRAY_SIZE(dts); k++) {
		const char *args[] = { "--dtype", dt_arg[dts[k]], "--no-sync", "--align", "4096",
				       "--known-answer", path, "--name", "llama-test",
				       "--model-version", "2024.1", dir, "-o", out, NULL };

		assert_int_equal(run_convert(args), 0);
		check_hf_image(out, h, dts[k]);
	}
	assert_int_equal(eng_image_open(out, ENG_IMAGE_VERIFY_FULL, &img, err, sizeof(err)), 0);
	const struct eng_model *m = eng_image_model(img);

	assert_int_equal(m->cfg.arch, ENG_ARCH_LLAMA);
	assert_false(m->cfg.tied_embeddings);
	assert_false(m->cfg.qkv_bias);
	assert_int_equal(m->cfg.rope_scaling, ENG_ROPE_LLAMA3);
	assert_true(m->cfg.rope_factor == 8.0f);
	assert_true(m->cfg.rope_high_freq_factor == 4.0f);
	assert_int_equal(m->cfg.rope_orig_max_pos, 64);
	assert_true(m->cfg.rope_theta == 500000.0f);
	assert_int_equal(m->cfg.n_eos, 2);
	assert_int_equal(m->cfg.eos_ids[1], 258);
	assert_int_equal(m->cfg.chat_template, ENG_CHAT_NONE);
	assert_string_equal(m->name, "llama-test");
	assert_string_equal(m->version, "2024.1");
	assert_int_equal(m->ka_prompt_len, 3);
	assert_int_equal(m->ka_expect[0], 7);
	assert_int_equal(m->ka_n_logits, 2);
	assert_true(m->ka_logits[1].logit == 3.25f);
	assert_true(m->ka_logit_tol == 0.5f);
	assert_int_equal(m->tokenizer_blob_len, 16 + strlen(tok_json));
	/* int4: ffn 320 is not a multiple of 128, so down_proj stayed bf16 */
	assert_int_equal(m->layers[0].w_down.dtype, ENG_DT_BF16);
	assert_int_equal(m->layers[0].w_up.dtype, ENG_DT_INT4_G128);
	assert_int_equal(m->lm_head.dtype, ENG_DT_INT4_G128);
	eng_image_close(img);

	/* refused inputs leave nothing behind */
	const char *bad[] = { "--no-sync", "-q", dir, "-o", tpath("bad.img"), NULL };

	snprintf(path, sizeof(path), "%s/config.json", dir);
	write_file(path, "{\"model_type\":\"gpt2\"}", 21);
	assert_int_equal(run_convert(bad), 1);
	free_hf(h);
	hf_write(dir, h, true, "\"model_type\":\"llama\",\"eos_token_id\":2");
	unlink(tpath("hf-llama/model-00002-of-00002.safetensors"));
	assert_int_equal(run_convert(bad), 1);
	free_hf(h);
	hf_write(dir, h, true, "\"model_type\":\"llama\",\"eos_token_id\":2");
	snprintf(path, sizeof(path), "%s/config.json", dir);
	/* layer count beyond the weights: a missing tensor */
	{
		const char *c3 = "{\"model_type\":\"llama\",\"hidden_size\":128,\"intermediate_size\":320,"
				 "\"num_hidden_layers\":3,\"num_attention_heads\":2,\"num_key_value_heads\":1,"
				 "\"vocab_size\":260,\"eos_token_id\":2}";

		write_file(path, c3, strlen(c3));
	}
	assert_int_equal(run_convert(bad), 1);
	assert_int_equal(access(tpath("bad.img"), F_OK), -1);
	assert_int_equal(access(tpath("bad.img.tmp"), F_OK), -1);
	const char *usage[] = { "--dtype", "int3", dir, "-o", tpath("bad.img"), NULL };

	assert_int_equal(run_convert(usage), 2);
	free_hf(h);
	free(h);
}

/* A raw safetensors file: 8-byte length, @hdr, @dlen data bytes. */
static void st_raw(const char *path, const char *hdr, uint64_t hlen_field, size_t dlen)
{
	FILE *f = fopen(path, "wb");
	uint8_t zero[64] = { 0 };

	assert_non_null(f);
	fwrite(&hlen_field, 8, 1, f);
	fwrite(hdr, 1, strlen(hdr), f);
	while (dlen) {
		size_t n = MIN(dlen, sizeof(zero));

		fwrite(zero, 1, n, f);
		dlen -= n;
	}
	assert_int_equal(fclose(f), 0);
}

/* An index mapping every tensor of @h to model.safetensors, and "extra"
 * to @extra_file. */
static void index_write(const char *dir, const struct hf_dir *h, const char *extra_file)
{
	char *idx = malloc(65536), path[600];
	size_t l = 0;

	l += (size_t)snprintf(idx + l, 65536 - l, "{\"weight_map\":{\"extra\":\"%s\"", extra_file);
	for (unsigned i = 0; i <= h->n; i++)
		l += (size_t)snprintf(idx + l, 65536 - l, ",\"%s\":\"model.safetensors\"", h->t[i].name);
	l += (size_t)snprintf(idx + l, 65536 - l, "}}");
	snprintf(path, sizeof(path), "%s/model.safetensors.index.json", dir);
	write_file(path, idx, l);
	free(idx);
}

static void test_convert_bad_inputs(void **state)
{
	struct hf_dir *h = calloc(1, sizeof(*h));
	const char *dir = tpath("hf-bad"), *out = tpath("bad2.img");
	const char *args[] = { "-q", "--no-sync", "--no-known-answer", "--align", "64", dir, "-o", out, NULL };
	char extra[600];
	static const char i8[] =
		"{\"extra\":{\"dtype\":\"I8\",\"shape\":[2,2,2],\"data_offsets\":[0,8]}}";
	static const char beyond[] =
		"{\"extra\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,64]}}";
	static const char mismatch[] =
		"{\"extra\":{\"dtype\":\"F32\",\"shape\":[4,4],\"data_offsets\":[0,16]}}";
	static const char huge[] =
		"{\"extra\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,16]}}";
	static const char notjson[] = "{\"extra\":[1,2";

	h->cfg = (struct eng_model_config){
		.vocab_size = 260, .hidden = 128, .n_layers = 1, .n_heads = 2,
		.n_kv_heads = 1, .head_dim = 64, .ffn = 256, .max_seq = 256,
		.norm_eps = 1e-5f, .tied_embeddings = true,
	};
	hf_write(dir, h, false, "\"model_type\":\"llama\",\"eos_token_id\":2");
	snprintf(extra, sizeof(extra), "%s/extra.safetensors", dir);

	/* an unused tensor of a dtype velo-convert does not read: fine */
	st_raw(extra, i8, strlen(i8), 8);
	index_write(dir, h, "extra.safetensors");
	assert_int_equal(run_convert(args), 0);
	check_hf_image(out, h, ENG_DT_BF16);
	/* broken extra shards: refused, nothing written */
	st_raw(extra, beyond, strlen(beyond), 16);
	assert_int_equal(run_convert(args), 1);
	st_raw(extra, mismatch, strlen(mismatch), 16);
	assert_int_equal(run_convert(args), 1);
	st_raw(extra, huge, strlen(huge), 16);
	assert_int_equal(run_convert(args), 1);
	st_raw(extra, notjson, strlen(notjson), 16);
	assert_int_equal(run_convert(args), 1);
	st_raw(extra, i8, 1ull << 40, 8);		/* header length beyond the file */
	assert_int_equal(run_convert(args), 1);
	st_raw(extra, i8, 3, 8);			/* cut inside the JSON */
	assert_int_equal(run_convert(args), 1);
	write_file(extra, "abc", 3);			/* shorter than the length field */
	assert_int_equal(run_convert(args), 1);
	/* shard names may not leave the directory */
	index_write(dir, h, "../hf-llama/model-00001-of-00002.safetensors");
	assert_int_equal(run_convert(args), 1);
	index_write(dir, h, "missing.safetensors");
	assert_int_equal(run_convert(args), 1);
	assert_int_equal(access(tpath("bad2.img.tmp"), F_OK), -1);
	/* config.json problems */
	{
		static const char *const bad_cfg[] = {
			"not json",
			"[1,2]",
			"{\"model_type\":\"llama\"}",
			"{\"model_type\":\"llama\",\"hidden_size\":-5,\"intermediate_size\":256,"
			"\"num_hidden_layers\":1,\"num_attention_heads\":2,\"num_key_value_heads\":1,\"vocab_size\":260,\"eos_token_id\":2}",
			"{\"model_type\":\"llama\",\"hidden_size\":128,\"intermediate_size\":256,"
			"\"num_hidden_layers\":1,\"num_attention_heads\":2,\"num_key_value_heads\":1,\"vocab_size\":260}",
			"{\"model_type\":\"llama\",\"hidden_size\":128,\"intermediate_size\":256,"
			"\"num_hidden_layers\":1,\"num_attention_heads\":2,\"num_key_value_heads\":1,\"vocab_size\":260,\"eos_token_id\":2,"
			"\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":4}}",
			"{\"model_type\":\"llama\",\"hidden_size\":128,\"intermediate_size\":256,"
			"\"num_hidden_layers\":1,\"num_attention_heads\":2,\"num_key_value_heads\":1,\"vocab_size\":260,\"eos_token_id\":2,"
			"\"hidden_act\":\"gelu\"}",
			"{\"model_type\":\"llama\",\"hidden_size\":128,\"intermediate_size\":256,"
			"\"num_hidden_layers\":1,\"num_attention_heads\":2,\"num_key_value_heads\":1,\"vocab_size\":260,\"eos_token_id\":2,"
			"\"mlp_bias\":true}",
			"{\"model_type\":\"llama\",\"hidden_size\":128,\"intermediate_size\":256,"
			"\"num_hidden_layers\":1,\"num_attention_heads\":2,\"num_key_value_heads\":1,\"vocab_size\":260,\"eos_token_id\":2,"
			"\"tie_word_embeddings\":false}",	/* no lm_head in the weights */
			"{\"model_type\":\"llama\",\"hidden_size\":128,\"intermediate_size\":256,"
			"\"num_hidden_layers\":1,\"num_attention_heads\":3,\"vocab_size\":260,\"eos_token_id\":2}",
		};
		char path[600];

		index_write(dir, h, "model.safetensors");
		snprintf(path, sizeof(path), "%s/config.json", dir);
		for (unsigned i = 0; i < ARRAY_SIZE(bad_cfg); i++) {
			write_file(path, bad_cfg[i], strlen(bad_cfg[i]));
			if (run_convert(args) != 1)
				fail_msg("config %u accepted: %s", i, bad_cfg[i]);
		}
	}
	assert_int_equal(access(tpath("bad2.img.tmp"), F_OK), -1);
	free_hf(h);
	free(h);
}

static void test_convert_random(void **state)
{
	const char *a1[] = { "--random", "tiny", "--seed", "5", "-j", "1", "-q", "--no-sync", "-o", tpath("r1.img"), NULL };
	const char *a2[] = { "--random", "tiny", "--seed", "5", "-j", "2", "-q", "--no-sync", "-o", tpath("r2.img"), NULL };
	const char *a3[] = { "--random", "tiny", "--seed", "6", "-q", "--no-sync", "-o", tpath("r3.img"), NULL };
	const char *a4[] = { "--random", "tiny-qwen2", "--dtype", "int4", "-q", "--no-sync", "-o", tpath("r4.img"), NULL };
	const char *a5[] = { "--random", "micro", "--dtype", "fp8", "-q", "--no-sync", "--align", "64", "-o", tpath("r5.img"), NULL };
	const char *a6[] = { "--random", "no-such-shape", "-o", tpath("r6.img"), NULL };
	const char *a7[] = { "--random", "micro", "--no-known-answer", "-q", "--no-sync", "--align", "64", "-o", tpath("r7.img"), NULL };
	size_t l1, l2, l3;
	uint8_t *b1, *b2, *b3;
	struct eng_image *img;
	char err[256];

	assert_int_equal(run_convert(a1), 0);
	assert_int_equal(run_convert(a2), 0);
	assert_int_equal(run_convert(a3), 0);
	b1 = read_file(tpath("r1.img"), &l1);
	b2 = read_file(tpath("r2.img"), &l2);
	b3 = read_file(tpath("r3.img"), &l3);
	/* same seed: the same bytes whatever the threads; another: not */
	assert_int_equal(l1, l2);
	assert_memory_equal(b1, b2, l1);
	assert_int_equal(l1, l3);
	assert_true(hdr_of(b1).file_xxh != hdr_of(b3).file_xxh);
	free(b1);
	free(b2);
	free(b3);

	assert_int_equal(eng_image_open(tpath("r1.img"), ENG_IMAGE_VERIFY_FULL, &img, err, sizeof(err)), 0);
	const struct eng_model *m = eng_image_model(img);

	/* tiny: the shape asked for, weights ~N(0, 0.02), norms 1 */
	assert_int_equal(m->cfg.hidden, 256);
	assert_int_equal(m->cfg.n_layers, 4);
	assert_int_equal(m->cfg.rope_scaling, ENG_ROPE_LLAMA3);
	{
		const uint16_t *w = m->layers[2].w_gate.data;
		const float *nw = m->layers[2].attn_norm.data;
		double s = 0, s2 = 0;
		size_t n = (size_t)m->layers[2].w_gate.rows * m->layers[2].w_gate.cols;

		for (size_t i = 0; i < n; i++) {
			double x = eng_bf16_to_f32(w[i]);

			s += x;
			s2 += x * x;
		}
		assert_true(fabs(s / n) < 0.001);
		assert_true(fabs(sqrt(s2 / n) - 0.02) < 0.0005);
		assert_true(nw[0] == 1.0f && nw[255] == 1.0f);
	}
	/* the generated tokenizer is JSON with the shape's specials */
	{
		struct eng_image_tok_hdr th;
		json_error_t je;
		json_t *j;

		memcpy(&th, m->tokenizer_blob, 16);
		j = json_loadb((const char *)m->tokenizer_blob + 16, th.tokenizer_json_len, 0, &je);
		assert_non_null(j);
		assert_int_equal(json_array_size(json_object_get(j, "added_tokens")), 10);
		assert_int_equal(json_integer_value(json_object_get(json_array_get(
			json_object_get(j, "added_tokens"), 0), "id")), m->cfg.bos_id);
		assert_int_equal(json_object_size(json_object_get(json_object_get(j, "model"), "vocab")), 296);
		json_decref(j);
		j = json_loadb((const char *)m->tokenizer_blob + 16 + th.tokenizer_json_len,
			       th.tokenizer_config_json_len, 0, &je);
		assert_non_null(j);
		assert_non_null(strstr(json_string_value(json_object_get(j, "chat_template")),
				       "<|start_header_id|>"));
		json_decref(j);
	}
	/* the known answer velo-convert computed: re-run the recorded prompt
	 * on the CPU backend, the recorded logits and greedy tokens must come
	 * back */
	if (IS_ENABLED(CONFIG_ENGINE_CPU)) {
		const struct eng_backend_ops *ops = &eng_cpu_ops;
		struct eng_backend_budget bb = { .cpu.threads = 1 };
		struct eng_model_budget mb = {
			.seqs_max = 1, .step_tokens_max = m->ka_prompt_len, .kv_blocks = 8,
			.kv_block_tokens = 16, .seq_blocks_max = 8, .kv_dtype = ENG_KV_F32,
		};
		static const uint32_t blocks[8] = { 0, 1, 2, 3, 4, 5, 6, 7 };
		struct eng_backend *be;
		struct eng_be_model *bm;
		const float *lg;
		uint32_t tok = 0;

		assert_true(m->ka_prompt_len > 0 && m->ka_n_logits == 8);
		assert_true(m->ka_logit_tol > 0);
		assert_true(m->ka_expect_len <= 16);
		assert_int_equal(ops->init(&bb, &be), 0);
		assert_int_equal(ops->model_load(be, m, &mb, &bm), 0);
		for (uint32_t st = 0; st <= m->ka_expect_len; st++) {
			struct eng_seq_in in = {
				.tokens = st ? &tok : m->ka_prompt, .n_tokens = st ? 1 : m->ka_prompt_len,
				.pos = st ? m->ka_prompt_len + st - 1 : 0, .blocks = blocks,
				.n_blocks = 8, .flags = ENG_SEQ_LOGITS,
			};
			struct eng_batch bt = { &in, 1 };
			uint32_t best = 0;

			assert_int_equal(ops->step(bm, &bt), 0);
			assert_int_equal(ops->logits(bm, 0, &lg), 0);
			for (uint32_t i = 1; i < m->cfg.vocab_size; i++)
				if (lg[i] > lg[best])
					best = i;
			if (!st)
				for (uint32_t k = 0; k < m->ka_n_logits; k++) {
					assert_true(fabsf(lg[m->ka_logits[k].id] - m->ka_logits[k].logit) < 1e-4f);
					if (k)
						assert_true(m->ka_logits[k].logit <= m->ka_logits[k - 1].logit);
				}
			if (st < m->ka_expect_len)
				assert_int_equal(best, m->ka_expect[st]);
			else if (!st)
				assert_int_equal(best, m->ka_logits[0].id);
			tok = best;
		}
		ops->model_unload(bm);
		ops->fini(be);
	}
	eng_image_close(img);
	assert_int_equal(run_convert(a7), 0);
	assert_int_equal(eng_image_open(tpath("r7.img"), ENG_IMAGE_VERIFY_FULL, &img, err, sizeof(err)), 0);
	assert_int_equal(eng_image_model(img)->ka_prompt_len, 0);
	eng_image_close(img);
	assert_int_equal(run_convert(a4), 0);
	assert_int_equal(eng_image_open(tpath("r4.img"), ENG_IMAGE_VERIFY_FULL, &img, err, sizeof(err)), 0);
	assert_int_equal(eng_image_model(img)->layers[1].wq.dtype, ENG_DT_INT4_G128);
	assert_non_null(eng_image_model(img)->layers[1].bk.data);
	eng_image_close(img);
	assert_int_equal(run_convert(a5), 0);
	assert_int_equal(eng_image_open(tpath("r5.img"), ENG_IMAGE_VERIFY_FULL, &img, err, sizeof(err)), 0);
	assert_int_equal(eng_image_model(img)->layers[0].w_down.dtype, ENG_DT_FP8_E4M3);
	eng_image_close(img);
	assert_int_equal(run_convert(a6), 2);
}

/* ------------------------------------------------------------------------
 * tests/fixtures/models/<name> (produced from HF transformers on another
 * machine): every tensor of every fixture model, in each dtype.
 */

static float *st_read_tensor(const uint8_t *map, size_t len, const char *name,
			     uint32_t *rows, uint32_t *cols)
{
	uint64_t hl;
	json_error_t je;
	json_t *h, *t;
	float *out;
	size_t n, b;
	const char *dt;

	memcpy(&hl, map, 8);
	h = json_loadb((const char *)map + 8, hl, 0, &je);
	assert_non_null(h);
	t = json_object_get(h, name);
	if (!t) {
		json_decref(h);
		return NULL;
	}
	dt = json_string_value(json_object_get(t, "dtype"));
	if (json_array_size(json_object_get(t, "shape")) == 2) {
		*rows = (uint32_t)json_integer_value(json_array_get(json_object_get(t, "shape"), 0));
		*cols = (uint32_t)json_integer_value(json_array_get(json_object_get(t, "shape"), 1));
	} else {
		*rows = 1;
		*cols = (uint32_t)json_integer_value(json_array_get(json_object_get(t, "shape"), 0));
	}
	b = 8 + hl + (size_t)json_integer_value(json_array_get(json_object_get(t, "data_offsets"), 0));
	n = (size_t)*rows * *cols;
	out = malloc(n * sizeof(float));
	for (size_t i = 0; i < n; i++) {
		uint16_t u;

		if (!strcmp(dt, "F32")) {
			memcpy(&out[i], map + b + 4 * i, 4);
			continue;
		}
		memcpy(&u, map + b + 2 * i, 2);
		out[i] = !strcmp(dt, "BF16") ? eng_bf16_to_f32(u) : ref_f16_val(u);
	}
	assert_true(b + n * 2 <= len);
	json_decref(h);
	return out;
}

static void test_convert_fixtures(void **state)
{
	static const char *const names[] = { "llama3", "spm", "qwen2" };
	unsigned found = 0;

	for (unsigned f = 0; f < ARRAY_SIZE(names); f++) {
		char dir[512], path[600], err[512];
		uint8_t *map;
		size_t len;
		json_t *cfg;
		json_error_t je;
		struct eng_image *img;

		snprintf(dir, sizeof(dir), "tests/fixtures/models/%s", names[f]);
		snprintf(path, sizeof(path), "%s/model.safetensors", dir);
		if (access(path, R_OK))
			continue;
		found++;
		map = read_file(path, &len);
		snprintf(path, sizeof(path), "%s/config.json", dir);
		cfg = json_load_file(path, 0, &je);
		assert_non_null(cfg);
		for (unsigned k = 0; k < ARRAY_SIZE(dts); k++) {
			const char *out = tpath("fx.img");
			char ka[600];
			const char *args[] = { "--dtype", dt_arg[dts[k]], "-q", "--no-sync", dir, "-o", out,
					       NULL, NULL, NULL };

			snprintf(ka, sizeof(ka), "%s/logits.json", dir);
			if (!access(ka, R_OK)) {
				args[7] = "--known-answer";
				args[8] = ka;
			}
			if (run_convert(args))
				fail_msg("velo-convert %s --dtype %s failed (see %s)", dir,
					 dt_arg[dts[k]], tpath("convert.log"));
			if (eng_image_open(out, ENG_IMAGE_VERIFY_FULL, &img, err, sizeof(err)))
				fail_msg("%s: %s", names[f], err);
			const struct eng_model *m = eng_image_model(img);

			assert_int_equal(m->cfg.vocab_size, json_integer_value(json_object_get(cfg, "vocab_size")));
			assert_int_equal(m->cfg.hidden, json_integer_value(json_object_get(cfg, "hidden_size")));
			assert_int_equal(m->cfg.n_layers, json_integer_value(json_object_get(cfg, "num_hidden_layers")));
			assert_int_equal(m->cfg.ffn, json_integer_value(json_object_get(cfg, "intermediate_size")));
			assert_int_equal(m->cfg.tied_embeddings,
					 json_is_true(json_object_get(cfg, "tie_word_embeddings")));
			assert_true(fabs(m->cfg.rope_theta - json_number_value(json_object_get(cfg, "rope_theta"))) < 1);
			if (json_object_get(cfg, "rope_scaling") && !json_is_null(json_object_get(cfg, "rope_scaling")))
				assert_int_equal(m->cfg.rope_scaling, ENG_ROPE_LLAMA3);
			/* every tensor of the image from the fixture's weights */
			for (unsigned i = 0; i < eng_image_tensor_count(img); i++) {
				const struct eng_image_tensor_ent *e = eng_image_tensor(img, i);
				uint32_t r = 0, c = 0;
				float *v = st_read_tensor(map, len, e->name, &r, &c);

				if (!v)
					fail_msg("%s: image tensor %s not in the fixture", names[f], e->name);
				check_tensor(img, e->name, v, r, c, (enum eng_dtype)e->dtype);
				/* and the dtype follows the rules */
				if (e->ndim == 1)
					assert_int_equal(e->dtype, ENG_DT_F32);
				else if (!strcmp(e->name, "model.embed_tokens.weight"))
					assert_int_equal(e->dtype, ENG_DT_BF16);
				else
					assert_int_equal(e->dtype, (dts[k] == ENG_DT_INT4_G128 && c % 128) ?
							 ENG_DT_BF16 : dts[k]);
				free(v);
			}
			eng_image_close(img);
		}
		json_decref(cfg);
		free(map);
	}
	if (!found)
		skip();	/* fixtures not in the tree yet */
}

/* XXH3-64 throughput of the linked libxxhash (the FULL verify cost): best
 * of 7 passes, each over different bytes (a pure call over the same bytes
 * may be hoisted out of a loop). */
static void test_xxh3_throughput(void **state)
{
	static const size_t sizes[] = { 1u << 20, 128u << 20 };

	for (unsigned k = 0; k < ARRAY_SIZE(sizes); k++) {
		size_t n = sizes[k];
		uint8_t *b = malloc(n);
		double best = 1e9;
		uint64_t h[7];

		assert_non_null(b);
		memset(b, 0x5a, n);
		for (int r = 0; r < 7; r++) {
			struct timespec t0, t1;
			double s;

			b[r] ^= 1;
			clock_gettime(CLOCK_MONOTONIC, &t0);
			h[r] = XXH3_64bits(b, n);
			clock_gettime(CLOCK_MONOTONIC, &t1);
			s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
			best = MIN(best, s);
		}
		print_message("XXH3-64: %.1f GB/s over %zu KiB (best of 7)\n",
			      (double)n / 1e9 / best, n >> 10);
		/* different bytes, different digests */
		for (int r = 1; r < 7; r++)
			assert_true(h[r] != h[r - 1]);
		free(b);
	}
}

static int setup(void **state)
{
	char exe[4096];
	ssize_t n;

	snprintf(tmpdir, sizeof(tmpdir), "%s/velo-test-image-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(tmpdir))
		return -1;
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n <= 0)
		return -1;
	exe[n] = 0;
	/* O/tests/unit/test_image -> O/bin/velo-convert */
	*strrchr(exe, '/') = 0;
	snprintf(convert_bin, sizeof(convert_bin), "%s/../../bin/velo-convert", exe);
	if (access(convert_bin, X_OK)) {
		fprintf(stderr, "test_image: %s not built\n", convert_bin);
		return -1;
	}
	return 0;
}

static int teardown(void **state)
{
	if (!getenv("KEEP_TMP"))
		nftw(tmpdir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_dtype_convert),
		cmocka_unit_test(test_writer_loader),
		cmocka_unit_test(test_writer_misuse),
		cmocka_unit_test(test_corrupt_structure),
		cmocka_unit_test(test_corrupt_bytes),
		cmocka_unit_test(test_ka_patch),
		cmocka_unit_test(test_convert_qwen2),
		cmocka_unit_test(test_convert_llama_sharded),
		cmocka_unit_test(test_convert_bad_inputs),
		cmocka_unit_test(test_convert_random),
		cmocka_unit_test(test_convert_fixtures),
		cmocka_unit_test(test_xxh3_throughput),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
