// SPDX-License-Identifier: MIT
/*
 * hf.c — a Hugging Face model directory as velo-convert reads it:
 * config.json (+ generation_config.json) into a struct eng_model_config,
 * the safetensors files (one, or shards listed by model.safetensors.index
 * .json) mapped read-only with their headers parsed, and the tokenizer
 * files read whole (they go into the image verbatim).
 *
 * Everything read is checked: a safetensors header is bounded (100 MiB),
 * every tensor's byte range must match its dtype and shape and lie inside
 * its file, shard names may not leave the directory.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include <velo/compiler.h>

#include "convert.h"

#define ST_HEADER_MAX	(100u << 20)
#define TEXT_FILE_MAX	(256u << 20)

static int __attribute__((format(printf, 4, 5)))
herr(char *err, size_t el, int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, el, fmt, ap);
	va_end(ap);
	return rc;
}

/* Read a whole file (NUL-terminated copy).  -ENOENT when absent. */
static int read_text(const char *dir, const char *name, char **buf,
		     size_t *len, char *err, size_t el)
{
	char path[4096];
	struct stat st;
	ssize_t n;
	size_t got = 0;
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return herr(err, el, -errno, "%s: %s", path, strerror(errno));
	if (fstat(fd, &st) || !S_ISREG(st.st_mode) || st.st_size > TEXT_FILE_MAX) {
		close(fd);
		return herr(err, el, -EINVAL, "%s: not a regular file under %u MiB",
			    path, TEXT_FILE_MAX >> 20);
	}
	*buf = malloc((size_t)st.st_size + 1);
	if (!*buf) {
		close(fd);
		return herr(err, el, -ENOMEM, "out of memory");
	}
	while (got < (size_t)st.st_size &&
	       (n = read(fd, *buf + got, (size_t)st.st_size - got)) > 0)
		got += (size_t)n;
	close(fd);
	if (got != (size_t)st.st_size) {
		free(*buf);
		*buf = NULL;
		return herr(err, el, -EIO, "%s: short read", path);
	}
	(*buf)[got] = 0;
	*len = got;
	return 0;
}

static json_t *load_json(const char *dir, const char *name, bool required,
			 int *rc, char *err, size_t el)
{
	json_error_t je;
	json_t *j;
	char *buf;
	size_t len;

	*rc = read_text(dir, name, &buf, &len, err, el);
	if (*rc) {
		if (*rc == -ENOENT && !required)
			*rc = 0;
		return NULL;
	}
	j = json_loadb(buf, len, 0, &je);
	free(buf);
	if (!j) {
		*rc = herr(err, el, -EINVAL, "%s/%s: line %d: %s", dir, name,
			   je.line, je.text);
		return NULL;
	}
	if (!json_is_object(j)) {
		*rc = herr(err, el, -EINVAL, "%s/%s: not a JSON object", dir, name);
		json_decref(j);
		return NULL;
	}
	return j;
}

/* An unsigned integer member (an integral real is accepted): 1 found,
 * 0 absent or null, -EINVAL wrong type or range. */
static int get_u32(const json_t *o, const char *key, uint32_t *out)
{
	const json_t *v = json_object_get(o, key);
	double d;

	if (!v || json_is_null(v))
		return 0;
	if (!json_is_number(v))
		return -EINVAL;
	d = json_number_value(v);
	if (!(d >= 0 && d <= UINT32_MAX) || d != floor(d))
		return -EINVAL;
	*out = (uint32_t)d;
	return 1;
}

static int get_f32(const json_t *o, const char *key, float *out)
{
	const json_t *v = json_object_get(o, key);

	if (!v || json_is_null(v))
		return 0;
	if (!json_is_number(v) || !isfinite(json_number_value(v)))
		return -EINVAL;
	*out = (float)json_number_value(v);
	return 1;
}

static int get_bool(const json_t *o, const char *key, bool *out)
{
	const json_t *v = json_object_get(o, key);

	if (!v || json_is_null(v))
		return 0;
	if (!json_is_boolean(v))
		return -EINVAL;
	*out = json_is_true(v);
	return 1;
}

/* Add the eos id(s) of @v (integer or list) not yet in @c. */
static int add_eos(struct eng_model_config *c, const json_t *v)
{
	size_t i;
	const json_t *x;

	if (!v || json_is_null(v))
		return 0;
	if (json_is_integer(v)) {
		json_int_t id = json_integer_value(v);

		if (id < 0 || id > UINT32_MAX)
			return -EINVAL;
		for (i = 0; i < c->n_eos; i++)
			if (c->eos_ids[i] == (uint32_t)id)
				return 0;
		if (c->n_eos < ENG_EOS_MAX)
			c->eos_ids[c->n_eos++] = (uint32_t)id;
		return 0;
	}
	if (!json_is_array(v))
		return -EINVAL;
	json_array_foreach(v, i, x)
		if (!json_is_integer(x) || add_eos(c, x))
			return -EINVAL;
	return 0;
}

#define REQ(key, field)                                                       \
	do {                                                                  \
		if (get_u32(j, key, &c->field) != 1)                          \
			return herr(err, el, -EINVAL,                         \
				    "config.json: \"" key "\" missing or not an unsigned integer"); \
	} while (0)
#define OPT(getter, key, ptr)                                                 \
	do {                                                                  \
		if (getter(j, key, ptr) < 0)                                  \
			return herr(err, el, -EINVAL,                         \
				    "config.json: \"" key "\" has the wrong type"); \
	} while (0)

static int parse_rope(struct eng_model_config *c, const json_t *rs, char *err,
		      size_t el)
{
	const json_t *j = rs;
	const char *type;

	if (!rs || json_is_null(rs))
		return 0;
	if (!json_is_object(rs))
		return herr(err, el, -EINVAL, "config.json: rope_scaling is not an object");
	type = json_string_value(json_object_get(rs, "rope_type"));
	if (!type)
		type = json_string_value(json_object_get(rs, "type"));
	if (!type || !strcmp(type, "default"))
		return 0;
	if (!strcmp(type, "llama3")) {
		c->rope_scaling = ENG_ROPE_LLAMA3;
		OPT(get_f32, "factor", &c->rope_factor);
		OPT(get_f32, "low_freq_factor", &c->rope_low_freq_factor);
		OPT(get_f32, "high_freq_factor", &c->rope_high_freq_factor);
		OPT(get_u32, "original_max_position_embeddings", &c->rope_orig_max_pos);
		if (!c->rope_factor || !c->rope_low_freq_factor ||
		    !c->rope_high_freq_factor || !c->rope_orig_max_pos)
			return herr(err, el, -EINVAL,
				    "config.json: llama3 rope_scaling needs factor, low/high_freq_factor, original_max_position_embeddings");
		return 0;
	}
	if (!strcmp(type, "linear")) {
		c->rope_scaling = ENG_ROPE_LINEAR;
		OPT(get_f32, "factor", &c->rope_factor);
		return 0;
	}
	return herr(err, el, -ENOTSUP, "config.json: rope scaling \"%s\" is not supported",
		    type);
}

static int parse_config(struct hf_model *m, const json_t *j, const json_t *gen,
			char *err, size_t el)
{
	struct eng_model_config *c = &m->cfg;
	const char *mt = json_string_value(json_object_get(j, "model_type"));
	const char *act = json_string_value(json_object_get(j, "hidden_act"));
	const json_t *rp = json_object_get(j, "rope_parameters");
	bool b = false, use_sw = true;
	int rc;

	memset(c, 0, sizeof(*c));
	if (!mt)
		return herr(err, el, -EINVAL, "config.json: no model_type");
	snprintf(m->model_type, sizeof(m->model_type), "%s", mt);
	if (!strcmp(mt, "llama"))
		c->arch = ENG_ARCH_LLAMA;
	else if (!strcmp(mt, "mistral"))
		c->arch = ENG_ARCH_MISTRAL;
	else if (!strcmp(mt, "qwen2"))
		c->arch = ENG_ARCH_QWEN2;
	else
		return herr(err, el, -ENOTSUP,
			    "config.json: model_type \"%s\" is not supported (llama, mistral, qwen2)",
			    mt);
	if (act && strcmp(act, "silu"))
		return herr(err, el, -ENOTSUP, "config.json: hidden_act \"%s\" (only silu)",
			    act);
	REQ("hidden_size", hidden);
	REQ("num_hidden_layers", n_layers);
	REQ("num_attention_heads", n_heads);
	REQ("intermediate_size", ffn);
	REQ("vocab_size", vocab_size);
	c->n_kv_heads = c->n_heads;
	OPT(get_u32, "num_key_value_heads", &c->n_kv_heads);
	c->head_dim = c->n_heads ? c->hidden / c->n_heads : 0;
	OPT(get_u32, "head_dim", &c->head_dim);
	c->max_seq = 2048;
	OPT(get_u32, "max_position_embeddings", &c->max_seq);
	c->norm_eps = 1e-6f;
	OPT(get_f32, "rms_norm_eps", &c->norm_eps);
	c->rope_theta = 10000.0f;
	OPT(get_f32, "rope_theta", &c->rope_theta);
	rc = parse_rope(c, json_object_get(j, "rope_scaling"), err, el);
	if (rc)
		return rc;
	if (json_is_object(rp)) {	/* newer transformers: rope_parameters */
		if (get_f32(rp, "rope_theta", &c->rope_theta) < 0)
			return herr(err, el, -EINVAL, "config.json: rope_parameters.rope_theta");
		if (c->rope_scaling == ENG_ROPE_NONE && (rc = parse_rope(c, rp, err, el)))
			return rc;
	}
	OPT(get_bool, "tie_word_embeddings", &c->tied_embeddings);
	if (c->arch == ENG_ARCH_QWEN2) {
		c->qkv_bias = true;
	} else if (c->arch == ENG_ARCH_LLAMA) {
		OPT(get_bool, "attention_bias", &b);
		c->qkv_bias = c->o_bias = b;
	}
	b = false;
	OPT(get_bool, "mlp_bias", &b);
	if (b)
		return herr(err, el, -ENOTSUP, "config.json: mlp_bias is not supported");
	OPT(get_bool, "use_sliding_window", &use_sw);
	if (c->arch != ENG_ARCH_LLAMA && use_sw)
		OPT(get_u32, "sliding_window", &c->sliding_window);
	if (c->sliding_window >= c->max_seq)
		c->sliding_window = 0;	/* never reached: full attention */

	c->bos_id = c->pad_id = UINT32_MAX;
	OPT(get_u32, "bos_token_id", &c->bos_id);
	OPT(get_u32, "pad_token_id", &c->pad_id);
	if (gen) {
		if (get_u32(gen, "bos_token_id", &c->bos_id) < 0 ||
		    get_u32(gen, "pad_token_id", &c->pad_id) < 0 ||
		    add_eos(c, json_object_get(gen, "eos_token_id")))
			return herr(err, el, -EINVAL,
				    "generation_config.json: bad bos/pad/eos token id");
	}
	if (add_eos(c, json_object_get(j, "eos_token_id")))
		return herr(err, el, -EINVAL, "config.json: bad eos_token_id");
	if (!c->n_eos)
		return herr(err, el, -EINVAL, "no eos_token_id in config.json or generation_config.json");
	return 0;
}

enum eng_chat_template hf_chat_template(const char *s, size_t len)
{
	(void)len;
	if (!s)
		return ENG_CHAT_NONE;
	if (strstr(s, "<|start_header_id|>"))
		return ENG_CHAT_LLAMA3;
	if (strstr(s, "<|im_start|>"))
		return ENG_CHAT_CHATML;
	if (strstr(s, "<|user|>"))
		return ENG_CHAT_ZEPHYR;
	if (strstr(s, "[INST]"))
		return ENG_CHAT_LLAMA2;
	return ENG_CHAT_NONE;
}

static int st_dtype_parse(const char *s, enum st_dtype *dt, unsigned *size)
{
	if (!s)
		return -EINVAL;
	if (!strcmp(s, "F32")) {
		*dt = ST_F32;
		*size = 4;
	} else if (!strcmp(s, "F16")) {
		*dt = ST_F16;
		*size = 2;
	} else if (!strcmp(s, "BF16")) {
		*dt = ST_BF16;
		*size = 2;
	} else {
		return -ENOTSUP;
	}
	return 0;
}

/* Map one safetensors file and add its tensors. */
static int shard_open(struct hf_model *m, const char *file, char *err, size_t el)
{
	char path[4096];
	struct hf_shard *sh;
	json_error_t je;
	json_t *hdr, *v;
	const char *key;
	struct stat st;
	uint64_t hlen;
	size_t nnew;
	void *p;
	int fd;

	if (strchr(file, '/') || !strcmp(file, "..") || !*file)
		return herr(err, el, -EINVAL, "shard name \"%s\" leaves the model directory",
			    file);
	for (unsigned i = 0; i < m->n_shards; i++)
		if (!strcmp(m->shards[i].file, file))
			return 0;
	p = realloc(m->shards, (m->n_shards + 1) * sizeof(*m->shards));
	if (!p)
		return herr(err, el, -ENOMEM, "out of memory");
	m->shards = p;
	sh = &m->shards[m->n_shards];
	memset(sh, 0, sizeof(*sh));
	snprintf(path, sizeof(path), "%s/%s", m->dir, file);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return herr(err, el, -errno, "%s: %s", path, strerror(errno));
	if (fstat(fd, &st) || !S_ISREG(st.st_mode) || st.st_size < 8) {
		close(fd);
		return herr(err, el, -EINVAL, "%s: not a safetensors file", path);
	}
	p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (p == MAP_FAILED)
		return herr(err, el, -errno, "%s: mmap: %s", path, strerror(errno));
	sh->map = p;
	sh->len = (size_t)st.st_size;
	sh->file = strdup(file);
	m->n_shards++;
	if (!sh->file)
		return herr(err, el, -ENOMEM, "out of memory");
	memcpy(&hlen, sh->map, 8);
	if (hlen > ST_HEADER_MAX || hlen > sh->len - 8)
		return herr(err, el, -EINVAL, "%s: header length %llu beyond the file",
			    path, (unsigned long long)hlen);
	hdr = json_loadb((const char *)sh->map + 8, (size_t)hlen, 0, &je);
	if (!json_is_object(hdr)) {
		json_decref(hdr);
		return herr(err, el, -EINVAL, "%s: header: %s", path, je.text);
	}
	nnew = json_object_size(hdr);
	p = realloc(m->t, (m->n_t + nnew) * sizeof(*m->t));
	if (!p) {
		json_decref(hdr);
		return herr(err, el, -ENOMEM, "out of memory");
	}
	m->t = p;
	json_object_foreach(hdr, key, v) {
		const uint8_t *data = sh->map + 8 + hlen;
		uint64_t dlen = sh->len - 8 - hlen, numel = 1, b, e;
		const json_t *shape = json_object_get(v, "shape");
		const json_t *offs = json_object_get(v, "data_offsets");
		struct st_tensor *t = &m->t[m->n_t];
		unsigned size;
		int rc;

		if (!strcmp(key, "__metadata__"))
			continue;
		rc = st_dtype_parse(json_string_value(json_object_get(v, "dtype")),
				    &t->dtype, &size);
		if (rc == -ENOTSUP) {
			/* kept (without its shape), refused only if needed */
			size = 0;
			shape = NULL;
		} else if (rc || !json_is_array(shape) || json_array_size(shape) > 2 ||
			   !json_is_array(offs) || json_array_size(offs) != 2) {
			json_decref(hdr);
			return herr(err, el, -EINVAL, "%s: tensor \"%s\": bad dtype, shape or offsets",
				    path, key);
		}
		t->ndim = (uint32_t)json_array_size(shape);
		t->shape[0] = t->shape[1] = 1;
		for (uint32_t d = 0; d < t->ndim; d++) {
			json_int_t x = json_integer_value(json_array_get(shape, d));

			/* <= 2^30 each: numel * 4 cannot overflow */
			if (!json_is_integer(json_array_get(shape, d)) || x < 0 ||
			    x > (1ll << 30)) {
				json_decref(hdr);
				return herr(err, el, -EINVAL, "%s: tensor \"%s\": bad shape",
					    path, key);
			}
			t->shape[d] = (uint64_t)x;
			numel *= (uint64_t)x;
		}
		b = (uint64_t)json_integer_value(json_array_get(offs, 0));
		e = (uint64_t)json_integer_value(json_array_get(offs, 1));
		if (size && (!json_is_integer(json_array_get(offs, 0)) ||
			     !json_is_integer(json_array_get(offs, 1)) || b > e ||
			     e > dlen || e - b != numel * size)) {
			json_decref(hdr);
			return herr(err, el, -EINVAL,
				    "%s: tensor \"%s\": data [%llu, %llu) does not match its shape or the file",
				    path, key, (unsigned long long)b, (unsigned long long)e);
		}
		t->name = strdup(key);
		if (!t->name) {
			json_decref(hdr);
			return herr(err, el, -ENOMEM, "out of memory");
		}
		t->data = size ? data + b : data;
		t->len = size ? e - b : 0;	/* 0: unsupported dtype */
		m->n_t++;
	}
	json_decref(hdr);
	return 0;
}

static int open_weights(struct hf_model *m, char *err, size_t el)
{
	json_t *idx, *map, *v;
	const char *key;
	int rc;

	idx = load_json(m->dir, "model.safetensors.index.json", false, &rc, err, el);
	if (rc)
		return rc;
	if (!idx)
		return shard_open(m, "model.safetensors", err, el);
	map = json_object_get(idx, "weight_map");
	if (!json_is_object(map)) {
		json_decref(idx);
		return herr(err, el, -EINVAL, "model.safetensors.index.json: no weight_map");
	}
	json_object_foreach(map, key, v) {
		if (!json_is_string(v)) {
			rc = herr(err, el, -EINVAL, "model.safetensors.index.json: \"%s\" maps to a non-string",
				  key);
			break;
		}
		rc = shard_open(m, json_string_value(v), err, el);
		if (rc)
			break;
	}
	json_decref(idx);
	return rc;
}

int hf_open(struct hf_model *m, const char *dir, char *err, size_t el)
{
	json_t *cfg = NULL, *gen = NULL;
	int rc;

	memset(m, 0, sizeof(*m));
	m->dir = strdup(dir);
	if (!m->dir)
		return herr(err, el, -ENOMEM, "out of memory");
	cfg = load_json(dir, "config.json", true, &rc, err, el);
	if (rc)
		goto out;
	gen = load_json(dir, "generation_config.json", false, &rc, err, el);
	if (rc)
		goto out;
	rc = parse_config(m, cfg, gen, err, el);
	if (rc)
		goto out;
	rc = read_text(dir, "tokenizer.json", &m->tok_json, &m->tok_json_len, err, el);
	if (rc)
		goto out;
	rc = read_text(dir, "tokenizer_config.json", &m->tok_cfg_json,
		       &m->tok_cfg_json_len, err, el);
	if (rc == -ENOENT) {
		rc = 0;
	} else if (rc) {
		goto out;
	}
	m->cfg.chat_template = hf_chat_template(m->tok_cfg_json, m->tok_cfg_json_len);
	if (m->cfg.chat_template == ENG_CHAT_NONE) {
		char *tpl = NULL;
		size_t len;
		char e2[64];

		if (!read_text(dir, "chat_template.jinja", &tpl, &len, e2, sizeof(e2)))
			m->cfg.chat_template = hf_chat_template(tpl, len);
		free(tpl);
	}
	rc = open_weights(m, err, el);
out:
	json_decref(cfg);
	json_decref(gen);
	if (rc)
		hf_close(m);
	return rc;
}

void hf_close(struct hf_model *m)
{
	for (unsigned i = 0; i < m->n_t; i++)
		free(m->t[i].name);
	for (unsigned i = 0; i < m->n_shards; i++) {
		munmap(m->shards[i].map, m->shards[i].len);
		free(m->shards[i].file);
	}
	free(m->t);
	free(m->shards);
	free(m->tok_json);
	free(m->tok_cfg_json);
	free(m->dir);
	memset(m, 0, sizeof(*m));
}

const struct st_tensor *hf_tensor(const struct hf_model *m, const char *name)
{
	for (unsigned i = 0; i < m->n_t; i++)
		if (!strcmp(m->t[i].name, name))
			return &m->t[i];
	return NULL;
}

void hf_row_f32(const struct st_tensor *t, uint64_t row, float *out)
{
	uint64_t cols = t->ndim == 2 ? t->shape[1] : t->shape[0];
	const uint8_t *p;

	switch (t->dtype) {
	case ST_F32:
		memcpy(out, t->data + row * cols * 4, cols * 4);
		return;
	case ST_BF16:
		p = t->data + row * cols * 2;
		for (uint64_t i = 0; i < cols; i++) {
			uint16_t h;

			memcpy(&h, p + 2 * i, 2);
			out[i] = eng_bf16_to_f32(h);
		}
		return;
	case ST_F16:
		p = t->data + row * cols * 2;
		for (uint64_t i = 0; i < cols; i++) {
			uint16_t h;

			memcpy(&h, p + 2 * i, 2);
			out[i] = eng_f16_to_f32(h);
		}
		return;
	}
}

void hf_rows_release(const struct st_tensor *t, uint64_t row0, uint64_t n)
{
	uint64_t cols = t->ndim == 2 ? t->shape[1] : t->shape[0];
	uint64_t es = t->dtype == ST_F32 ? 4 : 2;
	uintptr_t a = (uintptr_t)(t->data + row0 * cols * es);
	uintptr_t b = a + n * cols * es;
	uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);

	/* whole pages inside the range only: neighbours may still be needed */
	a = ALIGN_UP(a, pg);
	b &= ~(pg - 1);
	if (b > a)
		madvise((void *)a, b - a, MADV_DONTNEED);
}
