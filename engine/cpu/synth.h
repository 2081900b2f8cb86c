/* SPDX-License-Identifier: MIT */
/*
 * synth.h — synthetic models in memory: random weights of any shape,
 * quantised to BF16, FP8 E4M3 or INT4 g128 the way velo-convert does it,
 * and the exact float32 dequantisation of a model.  For the CPU backend's
 * tests (before and besides real checkpoints) and for velo-bench-engine
 * (speed does not depend on the values: PERFORMANCE.md).  Init-time code:
 * it allocates freely.
 */
#ifndef VELO_ENG_SYNTH_H
#define VELO_ENG_SYNTH_H

#include <stdint.h>

#include "../core/model.h"

struct eng_synth {
	struct eng_model m;
	void **allocs;		/* everything below m, freed by _free */
	unsigned n_allocs, cap_allocs;
};

/*
 * eng_synth_build() - a model of shape @cfg with random weights: matrices
 * uniform in +-sqrt(3 / fan_in) stored as @dt (BF16, F16, F32, FP8 with a
 * per-row scale max|row| / 448, INT4 with per-group f16 scale max|g| / 7);
 * the embedding BF16 (F32 when @dt is F32), norm weights 1 + U(-0.1, 0.1)
 * and biases U(-0.1, 0.1) as F32; an untied lm_head in @dt.  Same seed,
 * same model.
 * Return: 0; -EINVAL (shape, dtype, INT4 with a dimension not a multiple
 * of 128); -ENOMEM.
 */
int eng_synth_build(struct eng_synth *s, const struct eng_model_config *cfg,
		    enum eng_dtype dt, uint64_t seed);

/*
 * eng_synth_dequant() - @s becomes a copy of @src with every weight matrix
 * (and the embedding) converted to F32, element for element the value the
 * quantised format stands for.  The vectors are shared with @src.
 * Return: 0, -ENOMEM.
 */
int eng_synth_dequant(struct eng_synth *s, const struct eng_model *src);

/*
 * eng_synth_matrix() - one random [rows, cols] matrix of dtype @dt, quantised
 * as above, owned by @s (which may be otherwise empty: zero it first).
 * Return: 0, -EINVAL, -ENOMEM.
 */
int eng_synth_matrix(struct eng_synth *s, struct eng_tensor *t,
		     enum eng_dtype dt, uint32_t rows, uint32_t cols,
		     uint64_t seed);

void eng_synth_free(struct eng_synth *s);

#endif
