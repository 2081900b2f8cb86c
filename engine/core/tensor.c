// SPDX-License-Identifier: MIT
/* tensor.c — host-side tensor helpers shared by the backends (tensor.h). */
#include <math.h>
#include <string.h>

#include "image.h"
#include "tensor.h"

size_t eng_row_bytes(enum eng_dtype dt, uint32_t cols)
{
	switch (dt) {
	case ENG_DT_F32:
		return (size_t)cols * 4;
	case ENG_DT_BF16:
	case ENG_DT_F16:
		return (size_t)cols * 2;
	case ENG_DT_FP8_E4M3:
		return cols;
	case ENG_DT_INT4_G128:
		return cols / 2;
	default:
		return 0;
	}
}

void eng_vec_to_f32(const struct eng_tensor *t, float *out, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		uint16_t h;

		switch (t->dtype) {
		case ENG_DT_F32:
			memcpy(&out[i], (const char *)t->data + 4 * (size_t)i, 4);
			break;
		case ENG_DT_BF16:
			memcpy(&h, (const char *)t->data + 2 * (size_t)i, 2);
			out[i] = eng_bf16_to_f32(h);
			break;
		default:
			memcpy(&h, (const char *)t->data + 2 * (size_t)i, 2);
			out[i] = eng_f16_to_f32(h);
			break;
		}
	}
}

void eng_rope_tables(const struct eng_model_config *c, uint32_t head_dim,
		     uint32_t positions, float *cos_out, float *sin_out)
{
	uint32_t half = head_dim / 2;
	float inv[ENG_ROPE_HEAD_DIM_MAX / 2];

	for (uint32_t i = 0; i < half; i++) {
		float e = (float)(2 * i) / (float)head_dim;
		float f = 1.0f / (float)pow((double)c->rope_theta, (double)e);

		if (c->rope_scaling == ENG_ROPE_LINEAR && c->rope_factor > 0.0f) {
			f = f / c->rope_factor;
		} else if (c->rope_scaling == ENG_ROPE_LLAMA3) {
			float old = (float)c->rope_orig_max_pos;
			float lo_wl = old / c->rope_low_freq_factor;
			float hi_wl = old / c->rope_high_freq_factor;
			float wl = (float)(2.0 * M_PI) / f;
			float fl = wl > lo_wl ? f / c->rope_factor : f;

			if (!(wl < hi_wl) && !(wl > lo_wl)) {
				float sm = (old / wl - c->rope_low_freq_factor) /
					   (c->rope_high_freq_factor -
					    c->rope_low_freq_factor);

				fl = (1.0f - sm) * fl / c->rope_factor + sm * fl;
			}
			f = fl;
		}
		inv[i] = f;
	}
	for (uint32_t p = 0; p < positions; p++)
		for (uint32_t i = 0; i < half; i++) {
			float a = (float)p * inv[i];

			cos_out[(size_t)p * half + i] = (float)cos((double)a);
			sin_out[(size_t)p * half + i] = (float)sin((double)a);
		}
}
