/* SPDX-License-Identifier: MIT */
/*
 * tensor.h — host-side helpers every backend needs to read a model image's
 * tensors the same way: bytes per row, small vectors widened to float32,
 * and the RoPE cos/sin tables (one computation, so that the CPU reference
 * and the CUDA backend start from the same bits).
 */
#ifndef VELO_ENG_TENSOR_H
#define VELO_ENG_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"

/* Bytes of one row of @cols elements of @dt (INT4: packed nibbles, the
 * scales apart); 0 for an unknown dtype. */
size_t eng_row_bytes(enum eng_dtype dt, uint32_t cols);

/* The first @n elements of vector @t (F32, BF16 or F16) as float32. */
void eng_vec_to_f32(const struct eng_tensor *t, float *out, uint32_t n);

/* Largest head_dim eng_rope_tables() takes. */
#define ENG_ROPE_HEAD_DIM_MAX 1024

/*
 * eng_rope_tables() - cos and sin, [positions][head_dim / 2] each, as HF
 * computes them in float32: inv_freq[i] = 1 / theta^(2i/d) with llama3 or
 * linear scaling applied, angle = (float)pos * inv_freq[i], cos/sin of the
 * float32 angle computed in double and rounded to float.
 * @head_dim: even, <= ENG_ROPE_HEAD_DIM_MAX (eng_model_check guarantees).
 */
void eng_rope_tables(const struct eng_model_config *c, uint32_t head_dim,
		     uint32_t positions, float *cos_out, float *sin_out);

#endif
