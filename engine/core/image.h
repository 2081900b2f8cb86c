/* SPDX-License-Identifier: MIT */
/*
 * image.h — the velo model image: one file per model version, mmap-able, its
 * data section aligned for direct DMA.  docs/model-format.md is the
 * specification; the structs below are its on-disk half and must agree with
 * it field for field.  Everything is little-endian.
 *
 * File layout (offsets absolute unless said otherwise):
 *
 *   0         struct eng_image_hdr (256 bytes)
 *   meta_off  metadata region, meta_len bytes, each section 8-byte aligned:
 *               struct eng_image_cfg                (cfg_off, cfg_len)
 *               struct eng_image_tensor_ent[n]      (tensors_off)
 *               tokenizer blob ("VTOK")             (tok_off, tok_len)
 *               known-answer record ("VKAR")        (ka_off, ka_len; may be 0)
 *             zero padding (room for a larger known-answer record)
 *   data_off  data region (data_off % data_align == 0), data_len bytes
 *             (a multiple of data_align): every tensor's data and scales,
 *             each range at a multiple of tensor_align from data_off, the
 *             gaps zero.  data_off + data_len == file size.
 *
 * Checksums (XXH3-64, seed 0):
 *   hdr_xxh   header bytes [0, offsetof(hdr_xxh))
 *   meta_xxh  [meta_off, meta_off + meta_len)
 *   file_xxh  the whole file, in this order: [data_off, file_size), then
 *             [0, data_off) with the file_xxh and hdr_xxh fields read as zero
 *             (data first so that a writer can hash while it streams)
 *   ent.xxh   a tensor's data bytes followed by its scale bytes
 *
 * Loading: eng_image_open() maps the file read-only, validates everything
 * (never crashes, never aborts on bad input) and fills a struct eng_model
 * whose tensors point into the mapping.
 */
#ifndef VELO_ENG_IMAGE_H
#define VELO_ENG_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model.h"

/* ------------------------------------------------------------------------
 * On-disk structures.
 */

#define ENG_IMAGE_MAGIC		"VELOIMG\0"	/* 8 bytes */
#define ENG_IMAGE_VERSION_MAJOR	1	/* a reader refuses another major */
#define ENG_IMAGE_VERSION_MINOR	0	/* minors add fields in reserved space */

#define ENG_IMAGE_DATA_ALIGN	(2u << 20)	/* velo-convert default: 2 MiB */
#define ENG_IMAGE_TENSOR_ALIGN	256u		/* velo-convert default */
#define ENG_IMAGE_ALIGN_MIN	64u		/* smallest accepted, either one */
#define ENG_IMAGE_DATA_ALIGN_MAX (1u << 30)

#define ENG_IMAGE_NAME_LEN	64	/* tensor names, model name */
#define ENG_IMAGE_VERSION_LEN	32

struct eng_image_hdr {
	uint8_t magic[8];		/* ENG_IMAGE_MAGIC */
	uint16_t version_major;
	uint16_t version_minor;
	uint32_t hdr_len;		/* sizeof(struct eng_image_hdr) */
	uint64_t file_size;
	uint32_t data_align;		/* power of two, 64 .. 1 GiB */
	uint32_t tensor_align;		/* power of two, 64 .. data_align */
	uint64_t meta_off;		/* == hdr_len */
	uint64_t meta_len;
	uint64_t data_off;
	uint64_t data_len;
	uint64_t cfg_off;
	uint64_t cfg_len;		/* sizeof(struct eng_image_cfg) */
	uint64_t tensors_off;
	uint32_t n_tensors;
	uint32_t tensor_ent_len;	/* sizeof(struct eng_image_tensor_ent) */
	uint64_t tok_off;
	uint64_t tok_len;
	uint64_t ka_off;
	uint64_t ka_len;		/* 0: no known-answer record */
	char name[ENG_IMAGE_NAME_LEN];	/* model name, NUL-terminated */
	char version[ENG_IMAGE_VERSION_LEN]; /* model version, NUL-terminated */
	uint64_t reserved;		/* written 0, ignored */
	uint64_t meta_xxh;
	uint64_t file_xxh;
	uint64_t hdr_xxh;		/* last: covers every byte before it */
};
_Static_assert(sizeof(struct eng_image_hdr) == 256, "image header");
_Static_assert(offsetof(struct eng_image_hdr, name) == 128, "hdr name");
_Static_assert(offsetof(struct eng_image_hdr, meta_xxh) == 232, "hdr xxh");
_Static_assert(offsetof(struct eng_image_hdr, hdr_xxh) == 248, "hdr xxh");

/* eng_image_cfg.flags */
#define ENG_IMAGE_CFG_TIED	0x1u	/* no lm_head tensor: it is the embedding */
#define ENG_IMAGE_CFG_QKV_BIAS	0x2u	/* q/k/v_proj.bias present (Qwen2) */
#define ENG_IMAGE_CFG_O_BIAS	0x4u	/* o_proj.bias present */
#define ENG_IMAGE_CFG_MLP_BIAS	0x8u	/* refused by this version (no model needs it) */
#define ENG_IMAGE_CFG_KNOWN	0x7u

#define ENG_IMAGE_ACT_SILU	1	/* SwiGLU MLP: down(silu(gate(x)) * up(x)) */
#define ENG_IMAGE_ROPE_HALF	0	/* HF rotate_half: pairs (i, i + head_dim/2) */

/* The model configuration, from config.json / generation_config.json. */
struct eng_image_cfg {
	uint32_t arch;			/* enum eng_arch */
	uint32_t vocab_size;		/* rows of the embedding and lm_head */
	uint32_t hidden;
	uint32_t n_layers;
	uint32_t n_heads;
	uint32_t n_kv_heads;
	uint32_t head_dim;
	uint32_t ffn;
	uint32_t max_seq;
	uint32_t sliding_window;	/* 0: full attention */
	float norm_eps;
	float rope_theta;
	uint32_t rope_scaling;		/* enum eng_rope_scaling */
	float rope_factor;
	float rope_low_freq_factor;
	float rope_high_freq_factor;
	uint32_t rope_orig_max_pos;
	uint32_t flags;			/* ENG_IMAGE_CFG_* */
	uint32_t bos_id;		/* UINT32_MAX: none */
	uint32_t eos_ids[ENG_EOS_MAX];
	uint32_t n_eos;
	uint32_t pad_id;		/* UINT32_MAX: none */
	uint32_t chat_template;		/* enum eng_chat_template */
	uint32_t weight_dtype;		/* velo-convert --dtype (informational) */
	uint32_t act;			/* ENG_IMAGE_ACT_SILU */
	uint32_t rope_style;		/* ENG_IMAGE_ROPE_HALF */
	uint32_t reserved[3];
};
_Static_assert(sizeof(struct eng_image_cfg) == 128, "image cfg");

/* One tensor.  Offsets are relative to the data region (data_off), so a
 * backend that uploads the whole region finds tensor t at base + t.data_off. */
struct eng_image_tensor_ent {
	char name[ENG_IMAGE_NAME_LEN];	/* HF name, NUL-padded */
	uint32_t dtype;			/* enum eng_dtype */
	uint32_t ndim;			/* 1 (rows == 1) or 2 */
	uint32_t rows;
	uint32_t cols;
	uint64_t data_off;
	uint64_t data_len;
	uint64_t scale_off;		/* FP8 and INT4 only, else 0 */
	uint64_t scale_len;		/* FP8 and INT4 only, else 0 */
	uint64_t xxh;			/* XXH3-64 of data then scales */
	uint64_t reserved;
};
_Static_assert(sizeof(struct eng_image_tensor_ent) == 128, "tensor entry");

/* Tokenizer section (docs/fixtures-spec: "Tokenizer blob inside a model
 * image"): this header, tokenizer.json, tokenizer_config.json. */
#define ENG_IMAGE_TOK_MAGIC	0x4b4f5456u	/* "VTOK" */
#define ENG_IMAGE_TOK_VERSION	1
struct eng_image_tok_hdr {
	uint32_t magic;
	uint32_t version;
	uint32_t tokenizer_json_len;
	uint32_t tokenizer_config_json_len;
};
_Static_assert(sizeof(struct eng_image_tok_hdr) == 16, "tokenizer header");

/* Known-answer record: this header, uint32 prompt[prompt_len], uint32
 * expect[expect_len], struct eng_ka_logit logits[n_logits].  The logits are
 * expected values at the last prompt position (the one that yields
 * expect[0]), compared within logit_tol. */
#define ENG_IMAGE_KA_MAGIC	0x52414b56u	/* "VKAR" */
#define ENG_IMAGE_KA_VERSION	1
#define ENG_IMAGE_KA_PROMPT_MAX	256
#define ENG_IMAGE_KA_EXPECT_MAX	64
#define ENG_IMAGE_KA_LOGITS_MAX	32
struct eng_image_ka_hdr {
	uint32_t magic;
	uint32_t version;
	uint32_t prompt_len;		/* 1 .. ENG_IMAGE_KA_PROMPT_MAX */
	uint32_t expect_len;		/* 0 .. ENG_IMAGE_KA_EXPECT_MAX */
	uint32_t n_logits;		/* 0 .. ENG_IMAGE_KA_LOGITS_MAX */
	float logit_tol;		/* absolute, >= 0 */
	uint32_t reserved[2];
};
_Static_assert(sizeof(struct eng_image_ka_hdr) == 32, "known-answer header");
_Static_assert(sizeof(struct eng_ka_logit) == 8, "known-answer logit");
/* Room the writer keeps for the record, so that it can be set later
 * (eng_image_ka_patch) without moving the data region. */
#define ENG_IMAGE_KA_RESERVE	(sizeof(struct eng_image_ka_hdr) +           \
				 4 * ENG_IMAGE_KA_PROMPT_MAX +               \
				 4 * ENG_IMAGE_KA_EXPECT_MAX +               \
				 8 * ENG_IMAGE_KA_LOGITS_MAX)

/* ------------------------------------------------------------------------
 * Element types.
 */

/* Name of a dtype ("bf16", "fp8_e4m3", "int4_g128"), "?" when invalid. */
const char *eng_dtype_name(enum eng_dtype dt);

/*
 * eng_dtype_sizes() - bytes of a [rows, cols] tensor of type @dt.
 * @data_len, @scale_len: out; scale_len is 0 for F32/BF16/F16.
 * Return: 0; -EINVAL for an unknown dtype, a zero dimension or INT4 with
 * cols not a multiple of ENG_INT4_GROUP.
 */
int eng_dtype_sizes(enum eng_dtype dt, uint32_t rows, uint32_t cols,
		    uint64_t *data_len, uint64_t *scale_len);

/* Scalar decoders (the reference for the backends' vector versions). */
static inline float eng_f32_from_bits(uint32_t u)
{
	union { uint32_t u; float f; } v = { .u = u };

	return v.f;
}

static inline uint32_t eng_f32_bits(float f)
{
	union { float f; uint32_t u; } v = { .f = f };

	return v.u;
}

static inline float eng_bf16_to_f32(uint16_t h)
{
	return eng_f32_from_bits((uint32_t)h << 16);
}

float eng_f16_to_f32(uint16_t h);
/* FP8 E4M3 (OCP): bias 7, no infinities, S.1111.111 is NaN, max 448. */
float eng_fp8_e4m3_to_f32(uint8_t v);

/* Encoders, round to nearest even.  NaN stays NaN; bf16 and f16 overflow
 * to infinity, FP8 saturates to +-448 (there is no infinity). */
uint16_t eng_f32_to_bf16(float f);
uint16_t eng_f32_to_f16(float f);
uint8_t eng_f32_to_fp8_e4m3(float f);

/* ------------------------------------------------------------------------
 * Loading.
 */

enum eng_image_verify {
	/* Every structural check, the header and metadata checksums; touches
	 * no tensor data page (load time independent of model size). */
	ENG_IMAGE_VERIFY_FAST = 0,
	/* FAST, plus the whole-file checksum (one pass over every byte; on a
	 * mismatch every tensor's checksum, to name the damaged ones). */
	ENG_IMAGE_VERIFY_FULL = 1,
};

struct eng_image;

/*
 * eng_image_open() - map a model image read-only, validate it and fill the
 * model it holds.
 * @path:    image file; it must not change while open (images are written
 *           to a temporary name and renamed, never rewritten in place)
 * @verify:  ENG_IMAGE_VERIFY_FAST or ENG_IMAGE_VERIFY_FULL
 * @imgp:    out, the image; eng_image_close() releases it
 * @err:     out, a NUL-terminated message naming the failed check (and the
 *           tensor) when the call fails; may be NULL
 * @err_len: size of @err
 *
 * Every failure is counted (eng_image_counters()).
 * Return: 0; -errno of open/fstat/mmap; -EINVAL for a truncated, malformed
 * or inconsistent image; -EBADMSG for a checksum mismatch; -ENOTSUP for a
 * format version, architecture, dtype or feature this build does not
 * handle; -ENOMEM.
 */
int eng_image_open(const char *path, enum eng_image_verify verify,
		   struct eng_image **imgp, char *err, size_t err_len);

/*
 * eng_image_open_mem() - the same over bytes in memory (fuzzing, tests,
 * images received over the network).  @buf must stay valid and unchanged
 * until eng_image_close(), and be aligned to ENG_IMAGE_ALIGN_MIN.
 * Return: as eng_image_open(); -EINVAL also for a misaligned @buf.
 */
int eng_image_open_mem(const void *buf, size_t len,
		       enum eng_image_verify verify, struct eng_image **imgp,
		       char *err, size_t err_len);

/* Unmap (when mapped) and free.  NULL is a no-op. */
void eng_image_close(struct eng_image *img);

/* The model: configuration and tensors pointing into the image; valid until
 * eng_image_close(). */
const struct eng_model *eng_image_model(const struct eng_image *img);

/* Inspection (velo-convert --info, tests). */
const struct eng_image_hdr *eng_image_hdr(const struct eng_image *img);
const struct eng_image_cfg *eng_image_cfg(const struct eng_image *img);
unsigned eng_image_tensor_count(const struct eng_image *img);
/* Entry @i (< count), or NULL. */
const struct eng_image_tensor_ent *eng_image_tensor(const struct eng_image *img,
						    unsigned i);
/* Entry named @name, or NULL. */
const struct eng_image_tensor_ent *
eng_image_tensor_find(const struct eng_image *img, const char *name);
/* Start of the image's data region (tensor offsets are relative to it). */
const void *eng_image_data(const struct eng_image *img);

/*
 * eng_image_verify_full() - the whole-file checksum of an open image (what
 * ENG_IMAGE_VERIFY_FULL adds), for a FAST-opened image checked later in the
 * background.  On a mismatch, names the first damaged tensor in @err.
 * Return: 0 or -EBADMSG.
 */
int eng_image_verify_full(const struct eng_image *img, char *err,
			  size_t err_len);

/*
 * eng_image_checksums_update() - recompute meta_xxh, file_xxh and hdr_xxh
 * of the image in @buf (in place).  For writers and for tests and fuzzers
 * that modify an image and want it to pass the checksum checks.
 * Return: 0, or -EINVAL when the header's sections do not lie inside @len.
 */
int eng_image_checksums_update(void *buf, size_t len);

/* Loader counters (foreach_eng_image_counter), for the owner of the
 * counter registry to register; incremented atomically (several loader
 * threads may open images). */
#define foreach_eng_image_counter(X)                                          \
	X(opened, "images opened and validated")                              \
	X(rej_io, "refused: open, stat or mmap failed")                       \
	X(rej_header, "refused: header malformed, truncated or unsupported")  \
	X(rej_checksum, "refused: a checksum did not match")                  \
	X(rej_config, "refused: model configuration invalid")                 \
	X(rej_tensor, "refused: tensor table invalid or inconsistent")        \
	X(rej_tokenizer, "refused: tokenizer section malformed")              \
	X(rej_known_answer, "refused: known-answer record malformed")         \
	X(rej_nomem, "refused: out of memory")

enum eng_image_counter {
#define X(name, help) ENG_IMAGE_CTR_##name,
	foreach_eng_image_counter(X)
#undef X
	ENG_IMAGE_CTR__COUNT
};

struct ctr_desc;
/* Values (ENG_IMAGE_CTR__COUNT of them) and their descriptions. */
const uint64_t *eng_image_counters(const struct ctr_desc **desc);

/* ------------------------------------------------------------------------
 * Writing (image_write.c, CONFIG_ENGINE_IMAGE_WRITER): velo-convert and
 * tests.
 */

struct eng_image_writer;

struct eng_image_writer_params {
	const struct eng_model_config *cfg;
	const char *name;		/* < ENG_IMAGE_NAME_LEN bytes */
	const char *version;		/* < ENG_IMAGE_VERSION_LEN bytes */
	enum eng_dtype weight_dtype;	/* recorded in the config */
	uint32_t data_align;		/* 0: ENG_IMAGE_DATA_ALIGN */
	uint32_t tensor_align;		/* 0: ENG_IMAGE_TENSOR_ALIGN (or data_align if less) */
	const void *tokenizer_json;
	size_t tokenizer_json_len;	/* > 0 */
	const void *tokenizer_config_json;
	size_t tokenizer_config_json_len;
	bool durable;			/* fsync before the rename */
};

/* A known-answer record to store (lengths within ENG_IMAGE_KA_*_MAX). */
struct eng_image_ka {
	const uint32_t *prompt;
	uint32_t prompt_len;
	const uint32_t *expect;
	uint32_t expect_len;
	const struct eng_ka_logit *logits;
	uint32_t n_logits;
	float logit_tol;
};

/*
 * eng_image_writer_open() - start writing an image to "@path.tmp"; the
 * file appears at @path only when eng_image_writer_finish() succeeds.
 * @err: buffer kept by the writer for every later error message.
 * Return: 0; -EINVAL for bad parameters; -errno of open; -ENOMEM.
 */
int eng_image_writer_open(const char *path,
			  const struct eng_image_writer_params *p,
			  struct eng_image_writer **wp, char *err,
			  size_t err_len);

/*
 * eng_image_writer_tensor_add() - declare a tensor (all of them before the
 * first row is written; file order is declaration order).
 * @ndim: 1 (@rows must be 1) or 2.
 * Return: the tensor's index (>= 0); -EINVAL (bad name, dtype, shape,
 * duplicate); -EBUSY after the first write; -ENOMEM.
 */
int eng_image_writer_tensor_add(struct eng_image_writer *w, const char *name,
				enum eng_dtype dtype, uint32_t ndim,
				uint32_t rows, uint32_t cols);

/*
 * eng_image_writer_ka_set() - set the known-answer record (any time before
 * finish; the latest call wins).
 * Return: 0 or -EINVAL (lengths out of bounds, ids >= vocab).
 */
int eng_image_writer_ka_set(struct eng_image_writer *w,
			    const struct eng_image_ka *ka);

/*
 * eng_image_writer_rows_write() - write rows [@row0, @row0 + @nrows) of
 * tensor @idx in the stored encoding: @data holds nrows * row bytes,
 * @scales nrows scale rows (FP8: one f32; INT4: cols/128 f16) or NULL for
 * the other dtypes.  Tensors are written in declaration order, the rows of
 * each in order; memory use is bounded by one tensor's scales.
 * Return: 0; -EINVAL (out of order, bad range); -errno of write.
 */
int eng_image_writer_rows_write(struct eng_image_writer *w, unsigned idx,
				uint32_t row0, uint32_t nrows,
				const void *data, const void *scales);

/*
 * eng_image_writer_finish() - write the metadata and checksums, check the
 * result with the loader (FAST), rename it into place and free @w.
 * @bytes: out, file size (may be NULL).
 * Return: 0; -EINVAL when tensors are missing rows or the result does not
 * validate (a writer bug, message in err); -errno of write/fsync/rename.
 * On failure the temporary file is removed.
 */
int eng_image_writer_finish(struct eng_image_writer *w, uint64_t *bytes);

/* Abandon: remove the temporary file and free @w.  NULL is a no-op. */
void eng_image_writer_abort(struct eng_image_writer *w);

/*
 * eng_image_ka_patch() - replace the known-answer record of an existing
 * image in place (the image is verified FULL first, so that corruption is
 * never re-sealed), then update the checksums.  For velo-convert once the
 * CPU backend can compute the answer from the written image.
 * Return: 0; as eng_image_open(); -ENOSPC when the record does not fit the
 * room left before the data region.
 */
int eng_image_ka_patch(const char *path, const struct eng_image_ka *ka,
		       char *err, size_t err_len);

#endif
