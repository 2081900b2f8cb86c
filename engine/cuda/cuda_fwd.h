/* SPDX-License-Identifier: MIT */
/*
 * cuda_fwd.h — the forward pass of one validated step (forward.c), and the
 * matrix-product launcher the per-op tests drive too.
 */
#ifndef VELO_ENG_CUDA_FWD_H
#define VELO_ENG_CUDA_FWD_H

#include "cuda_priv.h"

/*
 * cuda_forward() - launch the whole step on cm->st: the step inputs are
 * already copied to cm->d_in; @max_len is the longest sequence's length
 * after the step (sizes the attention split).
 * Return: 0, -EIO (device fault, backend down).
 */
int cuda_forward(struct cuda_model *cm, uint32_t max_len);

/* Attention position splits a step of @max_len positions uses. */
uint32_t cuda_att_splits(const struct cuda_model *cm, uint32_t max_len);

/*
 * cuda_mv_launch() - y = W x for up to three matrices of one dtype
 * (a->w/.., n_parts, nt, mode filled by the caller; row and tile bases
 * are computed here), by GEMV (nt <= 16) or the tiled GEMM.  A SWIGLU
 * request above the GEMV range runs as two stores (y[0], y[1]) and the
 * SwiGLU kernel over y[0] with a->ldy[0] == a->rows[0].
 * Return: 0, -EIO.
 */
int cuda_mv_launch(struct cuda_backend *be, CUstream st, int dt,
		   struct cuda_mv_args *a);

/* k_mvt (k_mvt.cuh): the column split of a product; the partial-sum
 * tiles a model needs (forward.c) */
uint32_t cuda_mvt_split(const struct cuda_backend *be, uint32_t tiles, uint32_t nch,
			uint32_t per);
uint32_t cuda_mvt_part_tiles(const struct cuda_model *cm);

/*
 * cuda_mv_launch_lt() - the same, through cuBLASLt (cuda_lt.h) when @lt
 * is not NULL, the product is beyond the GEMV range and @lt has plans for
 * every part (@a->y[p] must then hold the plan's token bucket of rows);
 * otherwise as cuda_mv_launch.
 */
struct cuda_lt;
int cuda_mv_launch_lt(struct cuda_backend *be, struct cuda_lt *lt, CUstream st,
		      int dt, struct cuda_mv_args *a);

/*
 * cuda_mv_launch_mma() - the same, and a product beyond the GEMV range
 * that cuBLASLt did not take runs on the tensor-core GEMM (k_mma.cuh)
 * when @mm is not NULL, has a split (1 or 2), a kernel for @dt (not F32)
 * and room in its workspace for a->nt x a->cols (else the CUDA-core
 * k_mm).  The workspace is overwritten; a->x may not lie in it.
 */
struct cuda_mma;
int cuda_mv_launch_mma(struct cuda_backend *be, struct cuda_lt *lt, const struct cuda_mma *mm,
		       CUstream st, int dt, struct cuda_mv_args *a);

#endif
