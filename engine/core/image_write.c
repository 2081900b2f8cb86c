// SPDX-License-Identifier: MIT
/*
 * image_write.c — model image writer (docs/model-format.md), for
 * velo-convert and tests.
 *
 * Streaming: the tensor list is declared first, which fixes the layout
 * (metadata size, every offset); rows are then written in file order and
 * hashed as they go (file checksum and per-tensor checksum), so memory use
 * is one tensor's scales (8 MiB for a 128256 x 4096 INT4 lm_head) whatever
 * the model size.  The header and metadata are written last, at offset 0,
 * and the file is renamed into place only after the loader accepted it
 * (the writer's output is checked by the same code that reads it).
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include <velo/compiler.h>

#include "image.h"

struct wtensor {
	struct eng_image_tensor_ent ent;
	uint64_t row_bytes, row_scale_bytes;
	uint32_t rows_done;
};

struct eng_image_writer {
	char *path, *tmp;
	int fd;
	char *err;
	size_t err_len;
	bool durable;
	struct eng_image_hdr hdr;
	struct eng_image_cfg cfg;
	uint8_t *tok;			/* VTOK blob */
	size_t tok_len;
	uint8_t ka[ENG_IMAGE_KA_RESERVE];
	size_t ka_len;
	struct wtensor *t;
	unsigned n, cap;
	bool started;			/* layout fixed, data being written */
	unsigned cur;			/* tensor being written */
	uint64_t pos;			/* bytes written into the data region */
	uint8_t *scales;		/* current tensor's scales */
	XXH3_state_t file_st, tensor_st;
};

static int __attribute__((format(printf, 3, 4)))
werr(struct eng_image_writer *w, int rc, const char *fmt, ...)
{
	va_list ap;

	if (w->err && w->err_len) {
		va_start(ap, fmt);
		vsnprintf(w->err, w->err_len, fmt, ap);
		va_end(ap);
	}
	return rc;
}

static int write_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int pwrite_all(int fd, const void *buf, size_t len, off_t off)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = pwrite(fd, p, len, off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		off += n;
		len -= (size_t)n;
	}
	return 0;
}

static bool name_ok(const char *s, size_t size, bool space, bool empty_ok)
{
	size_t n = strnlen(s, size);

	if (n == size || (!n && !empty_ok))
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] > 0x7e ||
		    (unsigned char)s[i] < (space ? 0x20 : 0x21))
			return false;
	return true;
}

static void cfg_from_model(struct eng_image_cfg *c,
			   const struct eng_model_config *m,
			   enum eng_dtype weight_dtype)
{
	memset(c, 0, sizeof(*c));
	c->arch = m->arch;
	c->vocab_size = m->vocab_size;
	c->hidden = m->hidden;
	c->n_layers = m->n_layers;
	c->n_heads = m->n_heads;
	c->n_kv_heads = m->n_kv_heads;
	c->head_dim = m->head_dim;
	c->ffn = m->ffn;
	c->max_seq = m->max_seq;
	c->sliding_window = m->sliding_window;
	c->norm_eps = m->norm_eps;
	c->rope_theta = m->rope_theta;
	c->rope_scaling = m->rope_scaling;
	c->rope_factor = m->rope_factor;
	c->rope_low_freq_factor = m->rope_low_freq_factor;
	c->rope_high_freq_factor = m->rope_high_freq_factor;
	c->rope_orig_max_pos = m->rope_orig_max_pos;
	c->flags = (m->tied_embeddings ? ENG_IMAGE_CFG_TIED : 0) |
		   (m->qkv_bias ? ENG_IMAGE_CFG_QKV_BIAS : 0) |
		   (m->o_bias ? ENG_IMAGE_CFG_O_BIAS : 0) |
		   (m->mlp_bias ? ENG_IMAGE_CFG_MLP_BIAS : 0);
	c->bos_id = m->bos_id;
	memcpy(c->eos_ids, m->eos_ids, sizeof(c->eos_ids));
	c->n_eos = m->n_eos;
	c->pad_id = m->pad_id;
	c->chat_template = m->chat_template;
	c->weight_dtype = weight_dtype;
	c->act = ENG_IMAGE_ACT_SILU;
	c->rope_style = ENG_IMAGE_ROPE_HALF;
}

/* Serialise a known-answer record into @out (ENG_IMAGE_KA_RESERVE bytes). */
static int ka_encode(const struct eng_image_ka *ka, uint32_t vocab,
		     uint32_t max_seq, uint8_t *out, size_t *len)
{
	struct eng_image_ka_hdr k = {
		.magic = ENG_IMAGE_KA_MAGIC,
		.version = ENG_IMAGE_KA_VERSION,
		.prompt_len = ka->prompt_len,
		.expect_len = ka->expect_len,
		.n_logits = ka->n_logits,
		.logit_tol = ka->logit_tol,
	};
	size_t off = sizeof(k);

	if (!ka->prompt_len || ka->prompt_len > ENG_IMAGE_KA_PROMPT_MAX ||
	    ka->expect_len > ENG_IMAGE_KA_EXPECT_MAX ||
	    ka->n_logits > ENG_IMAGE_KA_LOGITS_MAX ||
	    (!ka->expect_len && !ka->n_logits) ||
	    ka->prompt_len + ka->expect_len > max_seq ||
	    !(ka->logit_tol >= 0) || !ka->prompt ||
	    (ka->expect_len && !ka->expect) || (ka->n_logits && !ka->logits))
		return -EINVAL;
	for (uint32_t i = 0; i < ka->prompt_len; i++)
		if (ka->prompt[i] >= vocab)
			return -EINVAL;
	for (uint32_t i = 0; i < ka->expect_len; i++)
		if (ka->expect[i] >= vocab)
			return -EINVAL;
	for (uint32_t i = 0; i < ka->n_logits; i++)
		if (ka->logits[i].id >= vocab || !(ka->logits[i].logit == ka->logits[i].logit))
			return -EINVAL;
	memset(out, 0, ENG_IMAGE_KA_RESERVE);
	memcpy(out, &k, sizeof(k));
	memcpy(out + off, ka->prompt, 4 * (size_t)ka->prompt_len);
	off += 4 * (size_t)ka->prompt_len;
	if (ka->expect_len)
		memcpy(out + off, ka->expect, 4 * (size_t)ka->expect_len);
	off += 4 * (size_t)ka->expect_len;
	if (ka->n_logits)
		memcpy(out + off, ka->logits, 8 * (size_t)ka->n_logits);
	off += 8 * (size_t)ka->n_logits;
	*len = off;
	return 0;
}

int eng_image_writer_open(const char *path,
			  const struct eng_image_writer_params *p,
			  struct eng_image_writer **wp, char *err,
			  size_t err_len)
{
	struct eng_image_writer *w;
	struct eng_image_tok_hdr th;
	int rc;

	*wp = NULL;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->fd = -1;
	w->err = err;
	w->err_len = err_len;
	w->durable = p->durable;
	if (!p->cfg || !p->name || !name_ok(p->name, ENG_IMAGE_NAME_LEN, true, false) ||
	    (p->version && !name_ok(p->version, ENG_IMAGE_VERSION_LEN, true, true))) {
		rc = werr(w, -EINVAL, "model name must be 1..%d printable characters, version < %d",
			  ENG_IMAGE_NAME_LEN - 1, ENG_IMAGE_VERSION_LEN);
		goto err_free;
	}
	if (!p->tokenizer_json || !p->tokenizer_json_len ||
	    p->tokenizer_json_len > UINT32_MAX ||
	    p->tokenizer_config_json_len > UINT32_MAX ||
	    (p->tokenizer_config_json_len && !p->tokenizer_config_json)) {
		rc = werr(w, -EINVAL, "tokenizer.json is required (and < 4 GiB)");
		goto err_free;
	}
	w->hdr.data_align = p->data_align ? p->data_align : ENG_IMAGE_DATA_ALIGN;
	w->hdr.tensor_align = p->tensor_align ? p->tensor_align :
			      MIN(ENG_IMAGE_TENSOR_ALIGN, w->hdr.data_align);
	if (!w->hdr.data_align || (w->hdr.data_align & (w->hdr.data_align - 1)) ||
	    w->hdr.data_align < ENG_IMAGE_ALIGN_MIN ||
	    w->hdr.data_align > ENG_IMAGE_DATA_ALIGN_MAX ||
	    (w->hdr.tensor_align & (w->hdr.tensor_align - 1)) ||
	    w->hdr.tensor_align < ENG_IMAGE_ALIGN_MIN ||
	    w->hdr.tensor_align > w->hdr.data_align) {
		rc = werr(w, -EINVAL, "alignments %u/%u: powers of two, %u <= tensor <= data <= %u",
			  w->hdr.tensor_align, w->hdr.data_align,
			  ENG_IMAGE_ALIGN_MIN, ENG_IMAGE_DATA_ALIGN_MAX);
		goto err_free;
	}
	if ((unsigned)p->weight_dtype >= ENG_DT__COUNT) {
		rc = werr(w, -EINVAL, "unknown weight dtype %d", p->weight_dtype);
		goto err_free;
	}
	memcpy(w->hdr.magic, ENG_IMAGE_MAGIC, sizeof(w->hdr.magic));
	w->hdr.version_major = ENG_IMAGE_VERSION_MAJOR;
	w->hdr.version_minor = ENG_IMAGE_VERSION_MINOR;
	w->hdr.hdr_len = sizeof(w->hdr);
	w->hdr.tensor_ent_len = sizeof(struct eng_image_tensor_ent);
	strncpy(w->hdr.name, p->name, sizeof(w->hdr.name) - 1);
	if (p->version)
		strncpy(w->hdr.version, p->version, sizeof(w->hdr.version) - 1);
	cfg_from_model(&w->cfg, p->cfg, p->weight_dtype);

	w->tok_len = sizeof(th) + p->tokenizer_json_len + p->tokenizer_config_json_len;
	w->tok = malloc(w->tok_len);
	w->path = strdup(path);
	if (!w->tok || !w->path || asprintf(&w->tmp, "%s.tmp", path) < 0) {
		w->tmp = NULL;
		rc = werr(w, -ENOMEM, "out of memory");
		goto err_free;
	}
	th = (struct eng_image_tok_hdr){
		.magic = ENG_IMAGE_TOK_MAGIC,
		.version = ENG_IMAGE_TOK_VERSION,
		.tokenizer_json_len = (uint32_t)p->tokenizer_json_len,
		.tokenizer_config_json_len = (uint32_t)p->tokenizer_config_json_len,
	};
	memcpy(w->tok, &th, sizeof(th));
	memcpy(w->tok + sizeof(th), p->tokenizer_json, p->tokenizer_json_len);
	if (p->tokenizer_config_json_len)
		memcpy(w->tok + sizeof(th) + p->tokenizer_json_len,
		       p->tokenizer_config_json, p->tokenizer_config_json_len);

	w->fd = open(w->tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (w->fd < 0) {
		rc = werr(w, -errno, "%s: %s", w->tmp, strerror(errno));
		goto err_free;
	}
	*wp = w;
	return 0;

err_free:
	free(w->tok);
	free(w->path);
	free(w->tmp);
	free(w);
	return rc;
}

int eng_image_writer_tensor_add(struct eng_image_writer *w, const char *name,
				enum eng_dtype dtype, uint32_t ndim,
				uint32_t rows, uint32_t cols)
{
	struct eng_image_tensor_ent *e;
	uint64_t dlen, slen;

	if (w->started)
		return werr(w, -EBUSY, "tensor '%s' declared after data was written", name);
	if (!name_ok(name, ENG_IMAGE_NAME_LEN, false, false))
		return werr(w, -EINVAL, "tensor name '%s': 1..%d printable characters, no spaces",
			    name, ENG_IMAGE_NAME_LEN - 1);
	if ((ndim != 1 && ndim != 2) || (ndim == 1 && rows != 1) ||
	    eng_dtype_sizes(dtype, rows, cols, &dlen, &slen))
		return werr(w, -EINVAL, "tensor '%s': %s %ud [%u, %u] is not a valid shape",
			    name, eng_dtype_name(dtype), ndim, rows, cols);
	for (unsigned i = 0; i < w->n; i++)
		if (!strcmp(w->t[i].ent.name, name))
			return werr(w, -EINVAL, "tensor '%s' declared twice", name);
	if (w->n == w->cap) {
		unsigned cap = w->cap ? 2 * w->cap : 64;
		struct wtensor *t = realloc(w->t, cap * sizeof(*t));

		if (!t)
			return werr(w, -ENOMEM, "out of memory");
		w->t = t;
		w->cap = cap;
	}
	memset(&w->t[w->n], 0, sizeof(w->t[w->n]));
	e = &w->t[w->n].ent;
	strncpy(e->name, name, sizeof(e->name) - 1);
	e->dtype = dtype;
	e->ndim = ndim;
	e->rows = rows;
	e->cols = cols;
	e->data_len = dlen;
	e->scale_len = slen;
	w->t[w->n].row_bytes = dlen / rows;
	w->t[w->n].row_scale_bytes = slen / rows;
	return (int)w->n++;
}

int eng_image_writer_ka_set(struct eng_image_writer *w,
			    const struct eng_image_ka *ka)
{
	size_t len;

	if (ka_encode(ka, w->cfg.vocab_size, w->cfg.max_seq, w->ka, &len))
		return werr(w, -EINVAL, "known-answer record: %u prompt, %u expected tokens, %u logits: out of bounds or ids >= vocab %u",
			    ka->prompt_len, ka->expect_len, ka->n_logits,
			    w->cfg.vocab_size);
	w->ka_len = len;
	return 0;
}

/* Metadata layout: header, config, tensor table, tokenizer, known-answer
 * (with its reserve), then the data region. */
static int layout(struct eng_image_writer *w)
{
	struct eng_image_hdr *h = &w->hdr;
	uint64_t pos = 0, max_scales = 0;

	if (!w->n)
		return werr(w, -EINVAL, "no tensors declared");
	h->meta_off = sizeof(*h);
	h->cfg_off = h->meta_off;
	h->cfg_len = sizeof(struct eng_image_cfg);
	h->tensors_off = h->cfg_off + h->cfg_len;
	h->n_tensors = w->n;
	h->tok_off = ALIGN_UP(h->tensors_off + (uint64_t)w->n * h->tensor_ent_len, 8);
	h->tok_len = w->tok_len;
	h->ka_off = ALIGN_UP(h->tok_off + h->tok_len, 8);
	h->data_off = ALIGN_UP(h->ka_off + ENG_IMAGE_KA_RESERVE, (uint64_t)h->data_align);
	for (unsigned i = 0; i < w->n; i++) {
		struct eng_image_tensor_ent *e = &w->t[i].ent;

		e->data_off = pos;
		pos = ALIGN_UP(pos + e->data_len, (uint64_t)h->tensor_align);
		if (e->scale_len) {
			e->scale_off = pos;
			pos = ALIGN_UP(pos + e->scale_len, (uint64_t)h->tensor_align);
			max_scales = MAX(max_scales, e->scale_len);
		}
	}
	h->data_len = ALIGN_UP(pos, (uint64_t)h->data_align);
	h->file_size = h->data_off + h->data_len;
	if (max_scales) {
		w->scales = malloc(max_scales);
		if (!w->scales)
			return werr(w, -ENOMEM, "out of memory for %llu scale bytes",
				    (unsigned long long)max_scales);
	}
	if (lseek(w->fd, (off_t)h->data_off, SEEK_SET) < 0)
		return werr(w, -errno, "%s: seek: %s", w->tmp, strerror(errno));
	XXH3_64bits_reset(&w->file_st);
	XXH3_64bits_reset(&w->tensor_st);
	w->started = true;
	return 0;
}

/* Write and hash zeros up to data-region offset @to. */
static int pad_to(struct eng_image_writer *w, uint64_t to)
{
	static const uint8_t zeros[65536];
	int rc;

	while (w->pos < to) {
		size_t n = (size_t)MIN(to - w->pos, (uint64_t)sizeof(zeros));

		rc = write_all(w->fd, zeros, n);
		if (rc)
			return werr(w, rc, "%s: write: %s", w->tmp, strerror(-rc));
		XXH3_64bits_update(&w->file_st, zeros, n);
		w->pos += n;
	}
	return 0;
}

static int emit(struct eng_image_writer *w, const void *p, size_t n)
{
	int rc = write_all(w->fd, p, n);

	if (rc)
		return werr(w, rc, "%s: write: %s", w->tmp, strerror(-rc));
	XXH3_64bits_update(&w->file_st, p, n);
	XXH3_64bits_update(&w->tensor_st, p, n);
	w->pos += n;
	return 0;
}

int eng_image_writer_rows_write(struct eng_image_writer *w, unsigned idx,
				uint32_t row0, uint32_t nrows,
				const void *data, const void *scales)
{
	struct wtensor *t;
	int rc;

	if (!w->started && (rc = layout(w)))
		return rc;
	if (idx != w->cur || idx >= w->n)
		return werr(w, -EINVAL, "tensor %u written out of order (expected %u)",
			    idx, w->cur);
	t = &w->t[idx];
	if (row0 != t->rows_done || !nrows || nrows > t->ent.rows - row0 ||
	    (t->row_scale_bytes && !scales) || !data)
		return werr(w, -EINVAL, "tensor '%s': rows [%u, +%u) out of order (next %u of %u) or data missing",
			    t->ent.name, row0, nrows, t->rows_done, t->ent.rows);
	if (!row0) {
		rc = pad_to(w, t->ent.data_off);
		if (rc)
			return rc;
		XXH3_64bits_reset(&w->tensor_st);
	}
	rc = emit(w, data, (size_t)(t->row_bytes * nrows));
	if (rc)
		return rc;
	if (t->row_scale_bytes)
		memcpy(w->scales + t->row_scale_bytes * row0, scales,
		       (size_t)(t->row_scale_bytes * nrows));
	t->rows_done += nrows;
	if (t->rows_done < t->ent.rows)
		return 0;
	if (t->ent.scale_len) {
		rc = pad_to(w, t->ent.scale_off);
		if (!rc)
			rc = emit(w, w->scales, (size_t)t->ent.scale_len);
		if (rc)
			return rc;
	}
	t->ent.xxh = XXH3_64bits_digest(&w->tensor_st);
	w->cur++;
	return 0;
}

static void writer_free(struct eng_image_writer *w)
{
	if (w->fd >= 0)
		close(w->fd);
	free(w->tok);
	free(w->t);
	free(w->scales);
	free(w->path);
	free(w->tmp);
	free(w);
}

void eng_image_writer_abort(struct eng_image_writer *w)
{
	if (!w)
		return;
	if (w->tmp)
		unlink(w->tmp);
	writer_free(w);
}

static int fsync_dir(const char *path)
{
	char *copy = strdup(path);
	int fd, rc = 0;

	if (!copy)
		return -ENOMEM;
	fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	free(copy);
	if (fd < 0)
		return -errno;
	if (fsync(fd))
		rc = -errno;
	close(fd);
	return rc;
}

int eng_image_writer_finish(struct eng_image_writer *w, uint64_t *bytes)
{
	struct eng_image_hdr *h = &w->hdr;
	struct eng_image *img;
	uint8_t *meta = NULL;
	char verr[256];
	int rc;

	if (!w->started && (rc = layout(w)))
		goto err;
	if (w->cur != w->n) {
		rc = werr(w, -EINVAL, "tensor '%s': %u of %u rows written",
			  w->t[w->cur].ent.name, w->t[w->cur].rows_done,
			  w->t[w->cur].ent.rows);
		goto err;
	}
	rc = pad_to(w, h->data_len);
	if (rc)
		goto err;

	/* Header and metadata: [0, data_off), zero padded. */
	meta = calloc(1, (size_t)h->data_off);
	if (!meta) {
		rc = werr(w, -ENOMEM, "out of memory");
		goto err;
	}
	h->ka_len = w->ka_len;
	h->meta_len = h->ka_off + h->ka_len - h->meta_off;
	memcpy(meta + h->cfg_off, &w->cfg, sizeof(w->cfg));
	for (unsigned i = 0; i < w->n; i++)
		memcpy(meta + h->tensors_off + (uint64_t)i * h->tensor_ent_len,
		       &w->t[i].ent, sizeof(w->t[i].ent));
	memcpy(meta + h->tok_off, w->tok, w->tok_len);
	memcpy(meta + h->ka_off, w->ka, w->ka_len);
	h->meta_xxh = XXH3_64bits(meta + h->meta_off, (size_t)h->meta_len);
	h->file_xxh = 0;
	h->hdr_xxh = 0;
	/* The file checksum so far covers the data region; the header (with
	 * both checksums zero) and the metadata follow. */
	XXH3_64bits_update(&w->file_st, h, sizeof(*h));
	XXH3_64bits_update(&w->file_st, meta + sizeof(*h), (size_t)h->data_off - sizeof(*h));
	h->file_xxh = XXH3_64bits_digest(&w->file_st);
	h->hdr_xxh = XXH3_64bits(h, offsetof(struct eng_image_hdr, hdr_xxh));
	memcpy(meta, h, sizeof(*h));
	rc = pwrite_all(w->fd, meta, (size_t)h->data_off, 0);
	free(meta);
	if (rc) {
		rc = werr(w, rc, "%s: write: %s", w->tmp, strerror(-rc));
		goto err;
	}
	if (w->durable && fsync(w->fd)) {
		rc = werr(w, -errno, "%s: fsync: %s", w->tmp, strerror(errno));
		goto err;
	}

	/* Paired check: the loader must accept what the writer wrote. */
	rc = eng_image_open(w->tmp, ENG_IMAGE_VERIFY_FAST, &img, verr, sizeof(verr));
	if (rc) {
		rc = werr(w, -EINVAL, "written image does not validate (writer bug): %s", verr);
		goto err;
	}
	eng_image_close(img);
	if (rename(w->tmp, w->path)) {
		rc = werr(w, -errno, "rename %s -> %s: %s", w->tmp, w->path,
			  strerror(errno));
		goto err;
	}
	if (w->durable && (rc = fsync_dir(w->path))) {
		werr(w, rc, "%s: fsync of the directory: %s", w->path, strerror(-rc));
		writer_free(w);
		return rc;
	}
	if (bytes)
		*bytes = h->file_size;
	writer_free(w);
	return 0;

err:
	eng_image_writer_abort(w);
	return rc;
}

int eng_image_ka_patch(const char *path, const struct eng_image_ka *ka,
		       char *err, size_t err_len)
{
	uint8_t rec[ENG_IMAGE_KA_RESERVE];
	struct eng_image_hdr h;
	const struct eng_image_cfg *c;
	struct eng_image *img;
	uint64_t others_end;
	size_t len;
	uint8_t *map;
	int fd, rc;

	rc = eng_image_open(path, ENG_IMAGE_VERIFY_FULL, &img, err, err_len);
	if (rc)
		return rc;
	h = *eng_image_hdr(img);
	c = eng_image_cfg(img);
	rc = ka_encode(ka, c->vocab_size, c->max_seq, rec, &len);
	eng_image_close(img);
	if (rc) {
		snprintf(err, err_len, "known-answer record out of bounds or ids >= vocab");
		return rc;
	}
	others_end = MAX(h.cfg_off + h.cfg_len,
			 MAX(h.tensors_off + (uint64_t)h.n_tensors * h.tensor_ent_len,
			     h.tok_off + h.tok_len));
	if (h.ka_off < others_end || h.ka_off + len > h.data_off) {
		snprintf(err, err_len, "no room for a %zu-byte known-answer record before the data region",
			 len);
		return -ENOSPC;
	}
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		snprintf(err, err_len, "%s: %s", path, strerror(-rc));
		return rc;
	}
	map = mmap(NULL, (size_t)h.file_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	rc = -errno;
	close(fd);
	if (map == MAP_FAILED) {
		snprintf(err, err_len, "%s: mmap: %s", path, strerror(-rc));
		return rc;
	}
	memset(map + h.ka_off, 0, (size_t)(h.data_off - h.ka_off));
	memcpy(map + h.ka_off, rec, len);
	h.ka_len = len;
	h.meta_len = h.ka_off + len - h.meta_off;
	memcpy(map, &h, sizeof(h));
	rc = eng_image_checksums_update(map, (size_t)h.file_size);
	if (!rc && msync(map, (size_t)h.file_size, MS_SYNC))
		rc = -errno;
	munmap(map, (size_t)h.file_size);
	if (rc) {
		snprintf(err, err_len, "%s: updating checksums: %s", path, strerror(-rc));
		return rc;
	}
	rc = eng_image_open(path, ENG_IMAGE_VERIFY_FAST, &img, err, err_len);
	eng_image_close(img);
	return rc;
}
