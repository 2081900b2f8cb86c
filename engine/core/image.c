// SPDX-License-Identifier: MIT
/*
 * image.c — model image loader and validator (docs/model-format.md).
 *
 * Everything in the file is untrusted until checked: each field is read
 * through a copy, every offset and size is checked against the file length
 * with overflow-safe arithmetic before anything points at it, and every
 * failure returns -errno with a message naming the check and the tensor.
 * Work is bounded by the file: the tensor count is bounded by the count the
 * configuration implies (<= 3 + 13 * 1024) and by the metadata length.
 *
 * Cost: FAST touches the header and metadata only: 0.03-0.08 ms for a
 * synthetic 1B image (26 KiB of metadata) here; a real Llama-3 image's
 * 9 MB tokenizer.json adds about 1 ms of hashing.  FULL adds one
 * XXH3-64 pass over the file.  Debian's libxxhash (its SSE2 code) measured
 * here, 2-core development VM, best of 7: 15 GB/s on a 1 MiB buffer in
 * cache, 8 GB/s on 256 MiB (memory bound), the same as the header compiled
 * inline; test_image's xxh3_throughput prints it on every run.  So FULL
 * costs about 1 s per 8 GB image in page cache, plus the page faults of
 * a first touch (velo-convert --verify prints the end-to-end rate).
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

#define XXH_STATIC_LINKING_ONLY	/* XXH3_state_t on the stack */
#include <xxhash.h>

#include <velo/compiler.h>

#include "../../tools/lib/counters.h"
#include "image.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
	       "model images are little-endian and read in place");

struct eng_image {
	struct eng_model model;
	const uint8_t *base;
	size_t len;
	bool mapped;
	struct eng_image_hdr hdr;	/* validated copies */
	struct eng_image_cfg cfg;
	const struct eng_image_tensor_ent *ents; /* in the image, 8-aligned */
	unsigned n_ents;
};

static uint64_t image_ctr[ENG_IMAGE_CTR__COUNT];
static const struct ctr_desc image_ctr_desc[] = {
	foreach_eng_image_counter(CTR_DESC)
};

const uint64_t *eng_image_counters(const struct ctr_desc **desc)
{
	if (desc)
		*desc = image_ctr_desc;
	return image_ctr;
}

static void ctr_inc(enum eng_image_counter c)
{
	__atomic_fetch_add(&image_ctr[c], 1, __ATOMIC_RELAXED);
}

/* Record a failure: count it, format the message, return @rc (< 0). */
static int __attribute__((format(printf, 5, 6)))
fail(char *err, size_t err_len, enum eng_image_counter c, int rc,
     const char *fmt, ...)
{
	va_list ap;

	ctr_inc(c);
	if (err && err_len) {
		va_start(ap, fmt);
		vsnprintf(err, err_len, fmt, ap);
		va_end(ap);
	}
	return rc;
}

/* ------------------------------------------------------------------------
 * Element types.
 */

const char *eng_dtype_name(enum eng_dtype dt)
{
	switch (dt) {
	case ENG_DT_F32: return "f32";
	case ENG_DT_BF16: return "bf16";
	case ENG_DT_F16: return "f16";
	case ENG_DT_FP8_E4M3: return "fp8_e4m3";
	case ENG_DT_INT4_G128: return "int4_g128";
	default: return "?";
	}
}

int eng_dtype_sizes(enum eng_dtype dt, uint32_t rows, uint32_t cols,
		    uint64_t *data_len, uint64_t *scale_len)
{
	uint64_t n = (uint64_t)rows * cols;	/* < 2^64: both < 2^32 */

	if (!rows || !cols)
		return -EINVAL;
	switch (dt) {
	case ENG_DT_F32:
		if (n > UINT64_MAX / 4)
			return -EINVAL;
		*data_len = n * 4;
		*scale_len = 0;
		return 0;
	case ENG_DT_BF16:
	case ENG_DT_F16:
		*data_len = n * 2;	/* n < 2^64 / 2: rows, cols < 2^32 */
		*scale_len = 0;
		return 0;
	case ENG_DT_FP8_E4M3:
		*data_len = n;
		*scale_len = (uint64_t)rows * 4;
		return 0;
	case ENG_DT_INT4_G128:
		if (cols % ENG_INT4_GROUP)
			return -EINVAL;
		*data_len = n / 2;
		*scale_len = (uint64_t)rows * (cols / ENG_INT4_GROUP) * 2;
		return 0;
	default:
		return -EINVAL;
	}
}

float eng_f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16;
	uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ff;
	float v;

	if (e == 0) {
		v = (float)m * 0x1p-24f;
		return sign ? -v : v;
	}
	if (e == 31)
		return eng_f32_from_bits(sign | 0x7f800000u | (m << 13));
	return eng_f32_from_bits(sign | ((e + 112) << 23) | (m << 13));
}

float eng_fp8_e4m3_to_f32(uint8_t v)
{
	uint32_t e = (v >> 3) & 0xf, m = v & 7;
	float r;

	if (e == 15 && m == 7)
		return (v & 0x80) ? -NAN : NAN;
	if (e == 0)
		r = (float)m * 0x1p-9f;
	else
		r = eng_f32_from_bits(((e + 120) << 23) | (m << 20));
	return (v & 0x80) ? -r : r;
}

uint16_t eng_f32_to_bf16(float f)
{
	uint32_t x = eng_f32_bits(f);

	if ((x & 0x7fffffffu) > 0x7f800000u)
		return (uint16_t)((x >> 16) | 0x40);	/* quiet NaN */
	x += 0x7fffu + ((x >> 16) & 1);			/* nearest even */
	return (uint16_t)(x >> 16);
}

uint16_t eng_f32_to_f16(float f)
{
	uint32_t x = eng_f32_bits(f);
	uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
	uint32_t a = x & 0x7fffffffu, r;

	if (a > 0x7f800000u)
		return sign | 0x7e00 | (uint16_t)((a >> 13) & 0x3ff);
	if (a >= 0x477ff000u)		/* >= 65520: rounds to infinity */
		return sign | 0x7c00;
	if (a >= 0x38800000u) {		/* >= 2^-14: normal */
		r = (a + 0xfffu + ((a >> 13) & 1)) >> 13;
		return sign | (uint16_t)(r - (112u << 10));
	}
	/* Subnormal: multiples of 2^-24; 1024 is the smallest normal. */
	return sign | (uint16_t)lrintf(eng_f32_from_bits(a) * 0x1p24f);
}

uint8_t eng_f32_to_fp8_e4m3(float f)
{
	uint32_t x = eng_f32_bits(f);
	uint8_t sign = (uint8_t)((x >> 24) & 0x80);
	uint32_t a = x & 0x7fffffffu, r;

	if (a > 0x7f800000u)
		return sign | 0x7f;
	if (a >= 0x43e00000u)		/* >= 448 (and infinity): saturate */
		return sign | 0x7e;
	if (a < 0x3c800000u)		/* < 2^-6: subnormal, step 2^-9 */
		return sign | (uint8_t)lrintf(eng_f32_from_bits(a) * 512.0f);
	r = (a + 0x7ffffu + ((a >> 20) & 1)) >> 20;	/* nearest even */
	r -= 120u << 3;					/* rebias 127 -> 7 */
	return sign | (uint8_t)(r > 0x7e ? 0x7e : r);
}

/* ------------------------------------------------------------------------
 * Checksums.
 */

static uint64_t xxh_range(const uint8_t *p, uint64_t len)
{
	return XXH3_64bits(p, (size_t)len);
}

/* file_xxh: [data_off, len), then [0, data_off) with the file_xxh and
 * hdr_xxh fields as zero.  The caller checked data_off in [hdr_len, len]. */
static uint64_t file_xxh_compute(const uint8_t *base, size_t len,
				 uint64_t data_off)
{
	struct eng_image_hdr h;
	XXH3_state_t st;

	memcpy(&h, base, sizeof(h));
	h.file_xxh = 0;
	h.hdr_xxh = 0;
	XXH3_64bits_reset(&st);
	XXH3_64bits_update(&st, base + data_off, len - data_off);
	XXH3_64bits_update(&st, &h, sizeof(h));
	XXH3_64bits_update(&st, base + sizeof(h), data_off - sizeof(h));
	return XXH3_64bits_digest(&st);
}

static uint64_t tensor_xxh_compute(const uint8_t *data,
				   const struct eng_image_tensor_ent *e)
{
	XXH3_state_t st;

	XXH3_64bits_reset(&st);
	XXH3_64bits_update(&st, data + e->data_off, e->data_len);
	if (e->scale_len)
		XXH3_64bits_update(&st, data + e->scale_off, e->scale_len);
	return XXH3_64bits_digest(&st);
}

/* a + b <= lim, without overflow. */
static bool range_ok(uint64_t a, uint64_t b, uint64_t lim)
{
	uint64_t end;

	return !__builtin_add_overflow(a, b, &end) && end <= lim;
}

int eng_image_checksums_update(void *buf, size_t len)
{
	struct eng_image_hdr h;
	uint8_t *p = buf;

	if (len < sizeof(h))
		return -EINVAL;
	memcpy(&h, p, sizeof(h));
	if (h.meta_off < sizeof(h) || !range_ok(h.meta_off, h.meta_len, len) ||
	    h.data_off < sizeof(h) || h.data_off > len)
		return -EINVAL;
	h.meta_xxh = xxh_range(p + h.meta_off, h.meta_len);
	memcpy(p, &h, sizeof(h));
	h.file_xxh = file_xxh_compute(p, len, h.data_off);
	h.hdr_xxh = xxh_range((const uint8_t *)&h,
			      offsetof(struct eng_image_hdr, hdr_xxh));
	memcpy(p, &h, sizeof(h));
	return 0;
}

/* ------------------------------------------------------------------------
 * Validation.
 */

static bool is_pow2(uint64_t x)
{
	return x && !(x & (x - 1));
}

/* A fixed-size text field: NUL-terminated, printable ASCII (@space: space
 * allowed), zero after the NUL, at least @min_len characters. */
static bool text_ok(const char *s, size_t size, bool space, size_t min_len)
{
	size_t n = strnlen(s, size);

	if (n == size || n < min_len)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c > 0x7e || c < (space ? 0x20 : 0x21))
			return false;
	}
	for (size_t i = n; i < size; i++)
		if (s[i])
			return false;
	return true;
}

struct section {
	const char *name;
	uint64_t off, len;
};

static int check_header(struct eng_image *img, char *err, size_t el)
{
	struct eng_image_hdr *h = &img->hdr;
	const uint64_t len = img->len;
	uint64_t meta_end, xxh;
	struct section s[4];

	if (len < sizeof(*h))
		return fail(err, el, ENG_IMAGE_CTR_rej_header, -EINVAL,
			    "truncated: %llu bytes, the header alone is %zu",
			    (unsigned long long)len, sizeof(*h));
	memcpy(h, img->base, sizeof(*h));
	if (memcmp(h->magic, ENG_IMAGE_MAGIC, sizeof(h->magic)))
		return fail(err, el, ENG_IMAGE_CTR_rej_header, -EINVAL,
			    "not a velo model image (bad magic)");
	if (h->version_major != ENG_IMAGE_VERSION_MAJOR)
		return fail(err, el, ENG_IMAGE_CTR_rej_header, -ENOTSUP,
			    "format version %u.%u, this build reads %u.x",
			    h->version_major, h->version_minor,
			    ENG_IMAGE_VERSION_MAJOR);
	if (h->hdr_len != sizeof(*h))
		return fail(err, el, ENG_IMAGE_CTR_rej_header, -EINVAL,
			    "header length %u, expected %zu", h->hdr_len,
			    sizeof(*h));
	if (h->file_size != len)
		return fail(err, el, ENG_IMAGE_CTR_rej_header, -EINVAL,
			    "%s: file is %llu bytes, header says %llu",
			    len < h->file_size ? "truncated" : "trailing bytes",
			    (unsigned long long)len,
			    (unsigned long long)h->file_size);
	xxh = xxh_range(img->base, offsetof(struct eng_image_hdr, hdr_xxh));
	if (xxh != h->hdr_xxh)
		return fail(err, el, ENG_IMAGE_CTR_rej_checksum, -EBADMSG,
			    "header checksum mismatch (%016llx, header says %016llx)",
			    (unsigned long long)xxh,
			    (unsigned long long)h->hdr_xxh);
	if (!is_pow2(h->data_align) || h->data_align < ENG_IMAGE_ALIGN_MIN ||
	    h->data_align > ENG_IMAGE_DATA_ALIGN_MAX)
		return fail(err, el, ENG_IMAGE_CTR_rej_header, -EINVAL,
			    "data alignment %u: not a power of two in [%u, %u]",
			    h->data_align, ENG_IMAGE_ALIGN_MIN,
			    ENG_IMAGE_DATA_ALIGN_MAX);
	if (!is_pow2(h->tensor_align) || h->tensor_align < ENG_IMAGE_ALIGN_MIN ||
	    h->tensor_align > h->data_align)
		return fail(err, el, ENG_IMAGE_CTR_rej_header, -EINVAL,
			    "tensor alignment %u: not a power of two in [%u, data alignment %u]",
			    h->tensor_align, ENG_IMAGE_ALIGN_MIN, h->data_align);
	if (h->meta_off != sizeof(*h) ||
	    __builtin_add_overflow(h->meta_off, h->meta_len, &meta_end) ||
	    meta_end > h->data_off)
		return fail(err, el, ENG_IMAGE_CTR_rej_header, -EINVAL,
			    "metadata [%llu, +%llu) does not lie between the header and the data region at %llu",
			    (unsigned long long)h->meta_off,
			    (unsigned long long)h->meta_len,
			    (unsigned long long)h->data_off);
	if (h->data_off % h->data_align || !range_ok(h->data_off, h->data_len, len) ||
	    h->data_off + h->data_len != len || h->data_len % h->data_align)
		return fail(err, el, ENG_IMAGE_CTR_rej_header, -EINVAL,
			    "data region [%llu, +%llu) is not aligned to %u or does not end the %llu-byte file",
			    (unsigned long long)h->data_off,
			    (unsigned long long)h->data_len, h->data_align,
			    (unsigned long long)len);
	if (h->cfg_len != sizeof(struct eng_image_cfg))
		return fail(err, el, ENG_IMAGE_CTR_rej_header, -EINVAL,
			    "config section is %llu bytes, expected %zu",
			    (unsigned long long)h->cfg_len,
			    sizeof(struct eng_image_cfg));
	if (h->tensor_ent_len != sizeof(struct eng_image_tensor_ent))
		return fail(err, el, ENG_IMAGE_CTR_rej_header, -EINVAL,
			    "tensor entries are %u bytes, expected %zu",
			    h->tensor_ent_len,
			    sizeof(struct eng_image_tensor_ent));
	s[0] = (struct section){ "config", h->cfg_off, h->cfg_len };
	s[1] = (struct section){ "tensor table", h->tensors_off,
				 (uint64_t)h->n_tensors * h->tensor_ent_len };
	s[2] = (struct section){ "tokenizer", h->tok_off, h->tok_len };
	s[3] = (struct section){ "known-answer", h->ka_off, h->ka_len };
	for (unsigned i = 0; i < ARRAY_SIZE(s); i++) {
		if (s[i].off % 8 || s[i].off < h->meta_off ||
		    !range_ok(s[i].off, s[i].len, meta_end))
			return fail(err, el, ENG_IMAGE_CTR_rej_header, -EINVAL,
				    "%s section [%llu, +%llu) is misaligned or outside the metadata [%llu, %llu)",
				    s[i].name, (unsigned long long)s[i].off,
				    (unsigned long long)s[i].len,
				    (unsigned long long)h->meta_off,
				    (unsigned long long)meta_end);
		for (unsigned j = 0; j < i; j++)
			if (s[i].len && s[j].len && s[i].off < s[j].off + s[j].len &&
			    s[j].off < s[i].off + s[i].len)
				return fail(err, el, ENG_IMAGE_CTR_rej_header,
					    -EINVAL, "%s and %s sections overlap",
					    s[j].name, s[i].name);
	}
	if (!text_ok(h->name, sizeof(h->name), true, 1) ||
	    !text_ok(h->version, sizeof(h->version), true, 0))
		return fail(err, el, ENG_IMAGE_CTR_rej_header, -EINVAL,
			    "model name or version is not NUL-terminated printable text");
	xxh = xxh_range(img->base + h->meta_off, h->meta_len);
	if (xxh != h->meta_xxh)
		return fail(err, el, ENG_IMAGE_CTR_rej_checksum, -EBADMSG,
			    "metadata checksum mismatch (%016llx, header says %016llx)",
			    (unsigned long long)xxh,
			    (unsigned long long)h->meta_xxh);
	return 0;
}

#define CFG_FAIL(...) fail(err, el, ENG_IMAGE_CTR_rej_config, -EINVAL, __VA_ARGS__)

static bool finite_pos(float x)
{
	return isfinite(x) && x > 0;
}

static int check_config(struct eng_image *img, char *err, size_t el)
{
	const struct eng_image_cfg *c = &img->cfg;
	struct eng_model_config *m = &img->model.cfg;

	memcpy(&img->cfg, img->base + img->hdr.cfg_off, sizeof(img->cfg));
	if (c->arch != ENG_ARCH_LLAMA && c->arch != ENG_ARCH_MISTRAL &&
	    c->arch != ENG_ARCH_QWEN2)
		return fail(err, el, ENG_IMAGE_CTR_rej_config, -ENOTSUP,
			    "config: unknown architecture %u", c->arch);
	if (c->act != ENG_IMAGE_ACT_SILU || c->rope_style != ENG_IMAGE_ROPE_HALF)
		return fail(err, el, ENG_IMAGE_CTR_rej_config, -ENOTSUP,
			    "config: activation %u or RoPE style %u not supported",
			    c->act, c->rope_style);
	if (c->flags & ENG_IMAGE_CFG_MLP_BIAS)
		return fail(err, el, ENG_IMAGE_CTR_rej_config, -ENOTSUP,
			    "config: MLP biases are not supported");
	if (c->flags & ~ENG_IMAGE_CFG_KNOWN)
		return CFG_FAIL("config: unknown flags %#x", c->flags);
	if (!c->vocab_size || c->vocab_size > (1u << 22))
		return CFG_FAIL("config: vocab_size %u not in [1, 4194304]",
				c->vocab_size);
	if (!c->hidden || c->hidden > 65536)
		return CFG_FAIL("config: hidden %u not in [1, 65536]", c->hidden);
	if (!c->n_layers || c->n_layers > 1024)
		return CFG_FAIL("config: n_layers %u not in [1, 1024]",
				c->n_layers);
	if (!c->n_heads || c->n_heads > 1024 || !c->n_kv_heads ||
	    c->n_kv_heads > c->n_heads || c->n_heads % c->n_kv_heads)
		return CFG_FAIL("config: %u heads, %u KV heads (need 1..1024, KV heads dividing heads)",
				c->n_heads, c->n_kv_heads);
	if (c->head_dim < 2 || c->head_dim > 1024 || c->head_dim % 2 ||
	    c->n_heads * c->head_dim > 65536)
		return CFG_FAIL("config: head_dim %u (need even, 2..1024, heads * head_dim <= 65536)",
				c->head_dim);
	if (!c->ffn || c->ffn > (1u << 20))
		return CFG_FAIL("config: ffn %u not in [1, 1048576]", c->ffn);
	if (!c->max_seq || c->max_seq > (1u << 24) ||
	    c->sliding_window > c->max_seq)
		return CFG_FAIL("config: max_seq %u, sliding_window %u",
				c->max_seq, c->sliding_window);
	if (!finite_pos(c->norm_eps) || c->norm_eps >= 1.0f)
		return CFG_FAIL("config: norm_eps %g not in (0, 1)",
				(double)c->norm_eps);
	if (!finite_pos(c->rope_theta))
		return CFG_FAIL("config: rope_theta %g", (double)c->rope_theta);
	switch (c->rope_scaling) {
	case ENG_ROPE_NONE:
		break;
	case ENG_ROPE_LLAMA3:
		if (!finite_pos(c->rope_low_freq_factor) ||
		    !finite_pos(c->rope_high_freq_factor) ||
		    c->rope_high_freq_factor <= c->rope_low_freq_factor ||
		    !c->rope_orig_max_pos || c->rope_orig_max_pos > c->max_seq)
			return CFG_FAIL("config: llama3 rope scaling: low %g high %g orig_max_pos %u",
					(double)c->rope_low_freq_factor,
					(double)c->rope_high_freq_factor,
					c->rope_orig_max_pos);
		/* fall through */
	case ENG_ROPE_LINEAR:
		if (!finite_pos(c->rope_factor) || c->rope_factor < 1.0f)
			return CFG_FAIL("config: rope factor %g (need >= 1)",
					(double)c->rope_factor);
		break;
	default:
		return fail(err, el, ENG_IMAGE_CTR_rej_config, -ENOTSUP,
			    "config: unknown rope scaling %u", c->rope_scaling);
	}
	if (c->bos_id != UINT32_MAX && c->bos_id >= c->vocab_size)
		return CFG_FAIL("config: bos id %u >= vocab %u", c->bos_id,
				c->vocab_size);
	if (c->pad_id != UINT32_MAX && c->pad_id >= c->vocab_size)
		return CFG_FAIL("config: pad id %u >= vocab %u", c->pad_id,
				c->vocab_size);
	if (c->n_eos > ENG_EOS_MAX)
		return CFG_FAIL("config: %u eos ids (max %d)", c->n_eos,
				ENG_EOS_MAX);
	for (unsigned i = 0; i < c->n_eos; i++)
		if (c->eos_ids[i] >= c->vocab_size)
			return CFG_FAIL("config: eos id %u >= vocab %u",
					c->eos_ids[i], c->vocab_size);
	if (c->chat_template > ENG_CHAT_ZEPHYR)
		return CFG_FAIL("config: unknown chat template %u",
				c->chat_template);
	if (c->weight_dtype >= ENG_DT__COUNT)
		return CFG_FAIL("config: unknown weight dtype %u",
				c->weight_dtype);

	*m = (struct eng_model_config){
		.arch = (enum eng_arch)c->arch,
		.vocab_size = c->vocab_size,
		.hidden = c->hidden,
		.n_layers = c->n_layers,
		.n_heads = c->n_heads,
		.n_kv_heads = c->n_kv_heads,
		.head_dim = c->head_dim,
		.ffn = c->ffn,
		.max_seq = c->max_seq,
		.norm_eps = c->norm_eps,
		.rope_theta = c->rope_theta,
		.rope_scaling = (enum eng_rope_scaling)c->rope_scaling,
		.rope_factor = c->rope_factor,
		.rope_low_freq_factor = c->rope_low_freq_factor,
		.rope_high_freq_factor = c->rope_high_freq_factor,
		.rope_orig_max_pos = c->rope_orig_max_pos,
		.tied_embeddings = c->flags & ENG_IMAGE_CFG_TIED,
		.qkv_bias = c->flags & ENG_IMAGE_CFG_QKV_BIAS,
		.o_bias = c->flags & ENG_IMAGE_CFG_O_BIAS,
		.mlp_bias = false,
		.bos_id = c->bos_id,
		.n_eos = c->n_eos,
		.pad_id = c->pad_id,
		.chat_template = (enum eng_chat_template)c->chat_template,
		.sliding_window = c->sliding_window,
	};
	memcpy(m->eos_ids, c->eos_ids, sizeof(m->eos_ids));
	return 0;
}

/* Tensor roles: which dtypes they may have and how their shape follows
 * from the configuration. */
enum role { R_EMBED, R_MAT, R_NORM, R_BIAS };
enum dim { D_ONE, D_HIDDEN, D_VOCAB, D_Q, D_KV, D_FFN };

struct slot {
	const char *suffix;
	size_t off;			/* in struct eng_layer_weights */
	uint8_t role, rows, cols;
	uint32_t need;			/* ENG_IMAGE_CFG_* flag, or 0 */
};

#define LW(f) offsetof(struct eng_layer_weights, f)
static const struct slot layer_slots[] = {
	{ "input_layernorm.weight", LW(attn_norm), R_NORM, D_ONE, D_HIDDEN, 0 },
	{ "self_attn.q_proj.weight", LW(wq), R_MAT, D_Q, D_HIDDEN, 0 },
	{ "self_attn.k_proj.weight", LW(wk), R_MAT, D_KV, D_HIDDEN, 0 },
	{ "self_attn.v_proj.weight", LW(wv), R_MAT, D_KV, D_HIDDEN, 0 },
	{ "self_attn.o_proj.weight", LW(wo), R_MAT, D_HIDDEN, D_Q, 0 },
	{ "self_attn.q_proj.bias", LW(bq), R_BIAS, D_ONE, D_Q, ENG_IMAGE_CFG_QKV_BIAS },
	{ "self_attn.k_proj.bias", LW(bk), R_BIAS, D_ONE, D_KV, ENG_IMAGE_CFG_QKV_BIAS },
	{ "self_attn.v_proj.bias", LW(bv), R_BIAS, D_ONE, D_KV, ENG_IMAGE_CFG_QKV_BIAS },
	{ "self_attn.o_proj.bias", LW(bo), R_BIAS, D_ONE, D_HIDDEN, ENG_IMAGE_CFG_O_BIAS },
	{ "post_attention_layernorm.weight", LW(ffn_norm), R_NORM, D_ONE, D_HIDDEN, 0 },
	{ "mlp.gate_proj.weight", LW(w_gate), R_MAT, D_FFN, D_HIDDEN, 0 },
	{ "mlp.up_proj.weight", LW(w_up), R_MAT, D_FFN, D_HIDDEN, 0 },
	{ "mlp.down_proj.weight", LW(w_down), R_MAT, D_HIDDEN, D_FFN, 0 },
};
#undef LW

#define MO(f) offsetof(struct eng_model, f)
static const struct slot model_slots[] = {
	{ "model.embed_tokens.weight", MO(embed), R_EMBED, D_VOCAB, D_HIDDEN, 0 },
	{ "model.norm.weight", MO(final_norm), R_NORM, D_ONE, D_HIDDEN, 0 },
	/* need: inverted below (present unless tied) */
	{ "lm_head.weight", MO(lm_head), R_MAT, D_VOCAB, D_HIDDEN, ENG_IMAGE_CFG_TIED },
};
#undef MO

static uint32_t dim_value(const struct eng_image_cfg *c, enum dim d)
{
	switch (d) {
	case D_ONE: return 1;
	case D_HIDDEN: return c->hidden;
	case D_VOCAB: return c->vocab_size;
	case D_Q: return c->n_heads * c->head_dim;
	case D_KV: return c->n_kv_heads * c->head_dim;
	case D_FFN: return c->ffn;
	}
	return 0;
}

static bool slot_needed(const struct slot *s, const struct eng_image_cfg *c,
			bool global)
{
	if (global && s->need == ENG_IMAGE_CFG_TIED)
		return !(c->flags & ENG_IMAGE_CFG_TIED);
	return !s->need || (c->flags & s->need);
}

static bool role_dtype_ok(enum role r, enum eng_dtype dt)
{
	if (r == R_MAT)
		return dt < ENG_DT__COUNT;
	/* norms, biases and the embedding stay full or half precision */
	return dt == ENG_DT_F32 || dt == ENG_DT_BF16;
}

/* Map @name to its slot and the eng_tensor it fills; NULL if unknown. */
static const struct slot *slot_find(struct eng_image *img, const char *name,
				    struct eng_tensor **tp, bool *global)
{
	static const char pfx[] = "model.layers.";
	const char *p = name + sizeof(pfx) - 1;
	uint32_t layer = 0;
	unsigned nd = 0;

	for (unsigned i = 0; i < ARRAY_SIZE(model_slots); i++)
		if (!strcmp(name, model_slots[i].suffix)) {
			*tp = (struct eng_tensor *)((char *)&img->model +
						    model_slots[i].off);
			*global = true;
			return &model_slots[i];
		}
	if (strncmp(name, pfx, sizeof(pfx) - 1))
		return NULL;
	/* decimal, no leading zero, at most 4 digits (n_layers <= 1024) */
	while (p[nd] >= '0' && p[nd] <= '9' && nd < 5)
		layer = layer * 10 + (uint32_t)(p[nd++] - '0');
	if (!nd || nd > 4 || (nd > 1 && p[0] == '0') || p[nd] != '.' ||
	    layer >= img->cfg.n_layers)
		return NULL;
	p += nd + 1;
	for (unsigned i = 0; i < ARRAY_SIZE(layer_slots); i++)
		if (!strcmp(p, layer_slots[i].suffix)) {
			*tp = (struct eng_tensor *)((char *)&img->model.layers[layer] +
						    layer_slots[i].off);
			*global = false;
			return &layer_slots[i];
		}
	return NULL;
}

struct range {
	uint64_t off, len;
	unsigned ent;
};

static int range_cmp(const void *a, const void *b)
{
	const struct range *x = a, *y = b;

	return x->off < y->off ? -1 : x->off > y->off;
}

#define TFAIL(...) fail(err, el, ENG_IMAGE_CTR_rej_tensor, -EINVAL, __VA_ARGS__)

static int check_tensor(struct eng_image *img, unsigned i, struct range *r,
			unsigned *nr, char *err, size_t el)
{
	const struct eng_image_tensor_ent *e = &img->ents[i];
	const struct eng_image_cfg *c = &img->cfg;
	const uint8_t *data = img->base + img->hdr.data_off;
	uint64_t dlen, slen;
	const struct slot *s;
	struct eng_tensor *t;
	bool global;

	if (!text_ok(e->name, sizeof(e->name), false, 1))
		return TFAIL("tensor %u: name is not NUL-terminated printable text", i);
	if (e->dtype >= ENG_DT__COUNT)
		return fail(err, el, ENG_IMAGE_CTR_rej_tensor, -ENOTSUP,
			    "tensor '%s': unknown dtype %u", e->name, e->dtype);
	s = slot_find(img, e->name, &t, &global);
	if (!s)
		return TFAIL("tensor '%s': unknown name (or layer >= %u)",
			     e->name, c->n_layers);
	if (!slot_needed(s, c, global))
		return TFAIL("tensor '%s': present, but the config says it is not (tied %d, qkv bias %d, o bias %d)",
			     e->name, !!(c->flags & ENG_IMAGE_CFG_TIED),
			     !!(c->flags & ENG_IMAGE_CFG_QKV_BIAS),
			     !!(c->flags & ENG_IMAGE_CFG_O_BIAS));
	if (t->data)
		return TFAIL("tensor '%s': duplicate name", e->name);
	if (!role_dtype_ok((enum role)s->role, (enum eng_dtype)e->dtype))
		return TFAIL("tensor '%s': dtype %s not allowed (norms, biases and the embedding are f32 or bf16)",
			     e->name, eng_dtype_name((enum eng_dtype)e->dtype));
	if (e->ndim != (s->rows == D_ONE ? 1u : 2u) ||
	    e->rows != dim_value(c, (enum dim)s->rows) ||
	    e->cols != dim_value(c, (enum dim)s->cols))
		return TFAIL("tensor '%s': shape %ud [%u, %u], the config implies %ud [%u, %u]",
			     e->name, e->ndim, e->rows, e->cols,
			     s->rows == D_ONE ? 1u : 2u,
			     dim_value(c, (enum dim)s->rows),
			     dim_value(c, (enum dim)s->cols));
	if (eng_dtype_sizes((enum eng_dtype)e->dtype, e->rows, e->cols, &dlen,
			    &slen))
		return TFAIL("tensor '%s': %s needs columns in multiples of %d, has %u",
			     e->name, eng_dtype_name((enum eng_dtype)e->dtype),
			     ENG_INT4_GROUP, e->cols);
	if (e->data_len != dlen || e->scale_len != slen || (!slen && e->scale_off))
		return TFAIL("tensor '%s': %llu data + %llu scale bytes, %s [%u, %u] needs %llu + %llu",
			     e->name, (unsigned long long)e->data_len,
			     (unsigned long long)e->scale_len,
			     eng_dtype_name((enum eng_dtype)e->dtype), e->rows,
			     e->cols, (unsigned long long)dlen,
			     (unsigned long long)slen);
	if (e->data_off % img->hdr.tensor_align ||
	    e->scale_off % img->hdr.tensor_align)
		return TFAIL("tensor '%s': offset %llu or scale offset %llu not aligned to %u",
			     e->name, (unsigned long long)e->data_off,
			     (unsigned long long)e->scale_off,
			     img->hdr.tensor_align);
	if (!range_ok(e->data_off, e->data_len, img->hdr.data_len) ||
	    !range_ok(e->scale_off, e->scale_len, img->hdr.data_len))
		return TFAIL("tensor '%s': [%llu, +%llu) or scales [%llu, +%llu) outside the %llu-byte data region",
			     e->name, (unsigned long long)e->data_off,
			     (unsigned long long)e->data_len,
			     (unsigned long long)e->scale_off,
			     (unsigned long long)e->scale_len,
			     (unsigned long long)img->hdr.data_len);
	*t = (struct eng_tensor){
		.dtype = (enum eng_dtype)e->dtype,
		.rows = e->rows,
		.cols = e->cols,
		.data = data + e->data_off,
		.scales = slen ? data + e->scale_off : NULL,
	};
	r[(*nr)++] = (struct range){ e->data_off, e->data_len, i };
	if (slen)
		r[(*nr)++] = (struct range){ e->scale_off, e->scale_len, i };
	return 0;
}

static int check_tensors(struct eng_image *img, char *err, size_t el)
{
	const struct eng_image_cfg *c = &img->cfg;
	unsigned per_layer = 9, expect, nr = 0;
	struct range *r;
	int rc = 0;

	if (c->flags & ENG_IMAGE_CFG_QKV_BIAS)
		per_layer += 3;
	if (c->flags & ENG_IMAGE_CFG_O_BIAS)
		per_layer += 1;
	expect = 2 + !(c->flags & ENG_IMAGE_CFG_TIED) + c->n_layers * per_layer;
	if (img->hdr.n_tensors > expect)
		return TFAIL("%u tensors, the config implies %u",
			     img->hdr.n_tensors, expect);
	img->ents = (const void *)(img->base + img->hdr.tensors_off);
	img->n_ents = img->hdr.n_tensors;

	img->model.layers = calloc(c->n_layers, sizeof(*img->model.layers));
	r = malloc(sizeof(*r) * 2 * (img->n_ents + 1));
	if (!img->model.layers || !r) {
		free(r);
		return fail(err, el, ENG_IMAGE_CTR_rej_nomem, -ENOMEM,
			    "out of memory for %u layers", c->n_layers);
	}
	for (unsigned i = 0; i < img->n_ents && !rc; i++)
		rc = check_tensor(img, i, r, &nr, err, el);
	if (rc)
		goto out;

	/* Every needed tensor present: name the first missing one. */
	for (unsigned i = 0; i < ARRAY_SIZE(model_slots); i++) {
		const struct eng_tensor *t = (const void *)((const char *)&img->model +
							    model_slots[i].off);

		if (slot_needed(&model_slots[i], c, true) && !t->data) {
			rc = TFAIL("missing tensor '%s'", model_slots[i].suffix);
			goto out;
		}
	}
	for (uint32_t l = 0; l < c->n_layers; l++)
		for (unsigned i = 0; i < ARRAY_SIZE(layer_slots); i++) {
			const struct eng_tensor *t =
				(const void *)((const char *)&img->model.layers[l] +
					       layer_slots[i].off);

			if (slot_needed(&layer_slots[i], c, false) && !t->data) {
				rc = TFAIL("missing tensor 'model.layers.%u.%s'",
					   l, layer_slots[i].suffix);
				goto out;
			}
		}
	if (c->flags & ENG_IMAGE_CFG_TIED)
		img->model.lm_head = img->model.embed;

	/* No two ranges (data or scales, any tensors) overlap. */
	qsort(r, nr, sizeof(*r), range_cmp);
	for (unsigned i = 1; i < nr; i++)
		if (r[i - 1].off + r[i - 1].len > r[i].off) {
			rc = TFAIL("tensors '%s' and '%s' overlap in the data region",
				   img->ents[r[i - 1].ent].name,
				   img->ents[r[i].ent].name);
			goto out;
		}
out:
	free(r);
	return rc;
}

static int check_tokenizer(struct eng_image *img, char *err, size_t el)
{
	const struct eng_image_hdr *h = &img->hdr;
	struct eng_image_tok_hdr t;

	if (h->tok_len < sizeof(t))
		return fail(err, el, ENG_IMAGE_CTR_rej_tokenizer, -EINVAL,
			    "tokenizer section is %llu bytes, its header alone is %zu",
			    (unsigned long long)h->tok_len, sizeof(t));
	memcpy(&t, img->base + h->tok_off, sizeof(t));
	if (t.magic != ENG_IMAGE_TOK_MAGIC || t.version != ENG_IMAGE_TOK_VERSION)
		return fail(err, el, ENG_IMAGE_CTR_rej_tokenizer, -EINVAL,
			    "tokenizer section: bad magic %#x or version %u",
			    t.magic, t.version);
	if (!t.tokenizer_json_len ||
	    sizeof(t) + (uint64_t)t.tokenizer_json_len +
	    t.tokenizer_config_json_len != h->tok_len)
		return fail(err, el, ENG_IMAGE_CTR_rej_tokenizer, -EINVAL,
			    "tokenizer section: %u + %u JSON bytes do not fill its %llu bytes",
			    t.tokenizer_json_len, t.tokenizer_config_json_len,
			    (unsigned long long)h->tok_len);
	img->model.tokenizer_blob = img->base + h->tok_off;
	img->model.tokenizer_blob_len = h->tok_len;
	return 0;
}

#define KFAIL(...) fail(err, el, ENG_IMAGE_CTR_rej_known_answer, -EINVAL, __VA_ARGS__)

static int check_ka(struct eng_image *img, char *err, size_t el)
{
	const struct eng_image_hdr *h = &img->hdr;
	const uint32_t vocab = img->cfg.vocab_size;
	const uint8_t *p = img->base + h->ka_off;
	struct eng_image_ka_hdr k;
	const uint32_t *prompt, *expect;
	const struct eng_ka_logit *lg;

	if (!h->ka_len)
		return 0;		/* none recorded */
	if (h->ka_len < sizeof(k))
		return KFAIL("known-answer record is %llu bytes, its header alone is %zu",
			     (unsigned long long)h->ka_len, sizeof(k));
	memcpy(&k, p, sizeof(k));
	if (k.magic != ENG_IMAGE_KA_MAGIC || k.version != ENG_IMAGE_KA_VERSION)
		return KFAIL("known-answer record: bad magic %#x or version %u",
			     k.magic, k.version);
	if (!k.prompt_len || k.prompt_len > ENG_IMAGE_KA_PROMPT_MAX ||
	    k.expect_len > ENG_IMAGE_KA_EXPECT_MAX ||
	    k.n_logits > ENG_IMAGE_KA_LOGITS_MAX ||
	    (!k.expect_len && !k.n_logits))
		return KFAIL("known-answer record: %u prompt, %u expected tokens, %u logits (limits %d, %d, %d)",
			     k.prompt_len, k.expect_len, k.n_logits,
			     ENG_IMAGE_KA_PROMPT_MAX, ENG_IMAGE_KA_EXPECT_MAX,
			     ENG_IMAGE_KA_LOGITS_MAX);
	if (sizeof(k) + 4ull * (k.prompt_len + k.expect_len) + 8ull * k.n_logits != h->ka_len)
		return KFAIL("known-answer record: lengths do not add up to its %llu bytes",
			     (unsigned long long)h->ka_len);
	if (k.prompt_len + k.expect_len > img->cfg.max_seq)
		return KFAIL("known-answer record: %u tokens exceed max_seq %u",
			     k.prompt_len + k.expect_len, img->cfg.max_seq);
	if (!isfinite(k.logit_tol) || k.logit_tol < 0)
		return KFAIL("known-answer record: logit tolerance %g",
			     (double)k.logit_tol);
	prompt = (const uint32_t *)(p + sizeof(k));
	expect = prompt + k.prompt_len;
	lg = (const struct eng_ka_logit *)(expect + k.expect_len);
	for (uint32_t i = 0; i < k.prompt_len + k.expect_len; i++)
		if (prompt[i] >= vocab)
			return KFAIL("known-answer record: token %u >= vocab %u",
				     prompt[i], vocab);
	for (uint32_t i = 0; i < k.n_logits; i++)
		if (lg[i].id >= vocab || !isfinite(lg[i].logit))
			return KFAIL("known-answer record: logit %u (id %u, %g) invalid",
				     i, lg[i].id, (double)lg[i].logit);
	img->model.ka_prompt = prompt;
	img->model.ka_prompt_len = k.prompt_len;
	img->model.ka_expect = k.expect_len ? expect : NULL;
	img->model.ka_expect_len = k.expect_len;
	img->model.ka_logits = k.n_logits ? lg : NULL;
	img->model.ka_n_logits = k.n_logits;
	img->model.ka_logit_tol = k.logit_tol;
	return 0;
}

int eng_image_verify_full(const struct eng_image *img, char *err, size_t el)
{
	const uint8_t *data = img->base + img->hdr.data_off;
	uint64_t x;

	if (img->mapped)	/* one sequential pass: read ahead aggressively */
		madvise((void *)img->base, img->len, MADV_SEQUENTIAL);
	x = file_xxh_compute(img->base, img->len, img->hdr.data_off);
	if (x == img->hdr.file_xxh)
		return 0;
	for (unsigned i = 0; i < img->n_ents; i++)
		if (tensor_xxh_compute(data, &img->ents[i]) != img->ents[i].xxh)
			return fail(err, el, ENG_IMAGE_CTR_rej_checksum, -EBADMSG,
				    "tensor '%s': checksum mismatch (data damaged)",
				    img->ents[i].name);
	return fail(err, el, ENG_IMAGE_CTR_rej_checksum, -EBADMSG,
		    "file checksum mismatch (%016llx, header says %016llx), outside any tensor",
		    (unsigned long long)x,
		    (unsigned long long)img->hdr.file_xxh);
}

static int image_validate(struct eng_image *img, enum eng_image_verify verify,
			  char *err, size_t el)
{
	int rc;

	if (verify != ENG_IMAGE_VERIFY_FAST && verify != ENG_IMAGE_VERIFY_FULL)
		return fail(err, el, ENG_IMAGE_CTR_rej_header, -EINVAL,
			    "unknown verify level %d", (int)verify);
	rc = check_header(img, err, el);
	if (!rc)
		rc = check_config(img, err, el);
	if (!rc)
		rc = check_tensors(img, err, el);
	if (!rc)
		rc = check_tokenizer(img, err, el);
	if (!rc)
		rc = check_ka(img, err, el);
	if (!rc && verify == ENG_IMAGE_VERIFY_FULL)
		rc = eng_image_verify_full(img, err, el);
	if (rc)
		return rc;
	memcpy(img->model.name, img->hdr.name, sizeof(img->model.name));
	memcpy(img->model.version, img->hdr.version, sizeof(img->model.version));
	_Static_assert(sizeof(img->model.name) == sizeof(img->hdr.name), "name");
	_Static_assert(sizeof(img->model.version) == sizeof(img->hdr.version),
		       "version");
	ctr_inc(ENG_IMAGE_CTR_opened);
	return 0;
}

int eng_image_open_mem(const void *buf, size_t len,
		       enum eng_image_verify verify, struct eng_image **imgp,
		       char *err, size_t err_len)
{
	struct eng_image *img;
	int rc;

	*imgp = NULL;
	if ((uintptr_t)buf % ENG_IMAGE_ALIGN_MIN)
		return fail(err, err_len, ENG_IMAGE_CTR_rej_io, -EINVAL,
			    "image buffer not aligned to %u bytes",
			    ENG_IMAGE_ALIGN_MIN);
	img = calloc(1, sizeof(*img));
	if (!img)
		return fail(err, err_len, ENG_IMAGE_CTR_rej_nomem, -ENOMEM,
			    "out of memory");
	img->base = buf;
	img->len = len;
	rc = image_validate(img, verify, err, err_len);
	if (rc) {
		eng_image_close(img);
		return rc;
	}
	*imgp = img;
	return 0;
}

int eng_image_open(const char *path, enum eng_image_verify verify,
		   struct eng_image **imgp, char *err, size_t err_len)
{
	struct eng_image *img;
	struct stat st;
	void *map;
	int fd, rc;

	*imgp = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		return fail(err, err_len, ENG_IMAGE_CTR_rej_io, rc, "%s: %s",
			    path, strerror(-rc));
	}
	if (fstat(fd, &st)) {
		rc = -errno;
		close(fd);
		return fail(err, err_len, ENG_IMAGE_CTR_rej_io, rc, "%s: %s",
			    path, strerror(-rc));
	}
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size < sizeof(struct eng_image_hdr)) {
		close(fd);
		return fail(err, err_len, ENG_IMAGE_CTR_rej_header, -EINVAL,
			    "%s: not a regular file of at least %zu bytes (truncated?)",
			    path, sizeof(struct eng_image_hdr));
	}
	map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	rc = -errno;
	close(fd);
	if (map == MAP_FAILED)
		return fail(err, err_len, ENG_IMAGE_CTR_rej_io, rc, "%s: mmap: %s",
			    path, strerror(-rc));
	img = calloc(1, sizeof(*img));
	if (!img) {
		munmap(map, (size_t)st.st_size);
		return fail(err, err_len, ENG_IMAGE_CTR_rej_nomem, -ENOMEM,
			    "out of memory");
	}
	img->base = map;
	img->len = (size_t)st.st_size;
	img->mapped = true;
	rc = image_validate(img, verify, err, err_len);
	if (rc) {
		eng_image_close(img);
		return rc;
	}
	*imgp = img;
	return 0;
}

void eng_image_close(struct eng_image *img)
{
	if (!img)
		return;
	if (img->mapped)
		munmap((void *)img->base, img->len);
	free(img->model.layers);
	free(img);
}

const struct eng_model *eng_image_model(const struct eng_image *img)
{
	return &img->model;
}

const struct eng_image_hdr *eng_image_hdr(const struct eng_image *img)
{
	return &img->hdr;
}

const struct eng_image_cfg *eng_image_cfg(const struct eng_image *img)
{
	return &img->cfg;
}

unsigned eng_image_tensor_count(const struct eng_image *img)
{
	return img->n_ents;
}

const struct eng_image_tensor_ent *eng_image_tensor(const struct eng_image *img,
						    unsigned i)
{
	return i < img->n_ents ? &img->ents[i] : NULL;
}

const struct eng_image_tensor_ent *
eng_image_tensor_find(const struct eng_image *img, const char *name)
{
	for (unsigned i = 0; i < img->n_ents; i++)
		if (!strncmp(img->ents[i].name, name, sizeof(img->ents[i].name)))
			return &img->ents[i];
	return NULL;
}

const void *eng_image_data(const struct eng_image *img)
{
	return img->base + img->hdr.data_off;
}
