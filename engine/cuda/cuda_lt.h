/* SPDX-License-Identifier: MIT */
/*
 * cuda_lt.h — cuBLASLt matrix products for prefill and large batches
 * (lt.c), beside the CUDA-core GEMM of kernels.cu.
 *
 * Weights stay in the image's layout ([rows][cols] row-major); in
 * cuBLASLt's column-major terms that is W^T with ld = cols, so a product
 * y[t][r] = sum_k W[r][k] x[t][k] is "TN" (A = W transposed, B = the
 * activations not), the one form FP8 allows on Hopper.
 *   FP8 E4M3 weights: each token's row of x is quantised to E4M3 with its
 *     own power-of-two scale (amax on the device, in the same kernel), the
 *     product accumulates in float32 (D = float32), and the epilogue
 *     multiplies by the weight row's scale and the token's scale and adds
 *     bias / residual.  Power-of-two scales make x * scale exact, so the
 *     quantised activations are a pure function of x (the tests emulate
 *     them bit for bit on the host).  The per-tensor A/B scale pointers are
 *     left at their default (1): per-token scales in the epilogue are at
 *     least as precise and cost nothing extra there.
 *   BF16 weights: x rounded to BF16 (nearest even), BF16 x BF16 -> f32.
 *   INT4 g128: the matrix dequantised ((q - 8) * group scale, rounded to
 *     BF16) into a workspace, then the BF16 product.  Matrices above the
 *     workspace (an LM head of 128k rows) keep the CUDA-core route.
 * Anything else (F32/F16 weights, dimensions not multiples of 16, steps
 * below min_nt tokens) keeps the existing kernels.
 */
#ifndef VELO_ENG_CUDA_LT_H
#define VELO_ENG_CUDA_LT_H

#include "cuda_priv.h"

/*
 * cuda_lt_open() - dlopen cuBLASLt ($VELO_CUDA_CUBLASLT, else
 * libcublasLt.so.13, else .12) and resolve every entry point into be->lt.
 * Return: 0, or -ENODEV (not there, too old; logged once, nothing marked
 * down: the CUDA-core kernels stay in use).
 */
int cuda_lt_open(struct cuda_backend *be);
void cuda_lt_close(struct cuda_backend *be);

/*
 * cuda_lt_init() - handle and descriptors for @lt, whose buffers (ws, xq,
 * tscale, acc, wdeq and their sizes, t_max, min_nt) the caller set.
 * Return: 0, -EIO (a cuBLASLt call failed: backend down).
 */
int cuda_lt_init(struct cuda_lt *lt, struct cuda_backend *be);

/*
 * cuda_lt_plan_add() - choose algorithms for weight dtype @dt (CUDA_DT_*)
 * with @n output rows and @k input columns, for every token bucket from
 * min_nt up to @nt_max (<= t_max).  A shape the library has no algorithm
 * for is skipped (counted in lt->unsupported; the CUDA-core kernel then
 * serves it).
 * Return: 0, -ENOMEM, -EIO (backend down).
 */
int cuda_lt_plan_add(struct cuda_lt *lt, int dt, uint32_t n, uint32_t k, uint32_t nt_max);

/*
 * cuda_lt_warm() - run every plan once at load on scratch operands (@a: a
 * device range read as A, at least the largest plan's matrix; @d: written
 * as D, plans whose output does not fit are skipped), so that what
 * cuBLASLt loads or allocates on an algorithm's first use happens here and
 * not in a step (which allocates nothing, and whose latency should not pay
 * for it).  Synchronises @st.
 * Return: 0, -EIO (backend down).
 */
int cuda_lt_warm(struct cuda_lt *lt, CUstream st, CUdeviceptr a, size_t a_bytes,
		 CUdeviceptr d, size_t d_bytes);

/* Free what cuda_lt_init and cuda_lt_plan_add made (not the buffers). */
void cuda_lt_fini(struct cuda_lt *lt);

/*
 * cuda_lt_mv() - the product of cuda_mv_launch (same arguments, all parts)
 * through cuBLASLt on @st, if every part has a plan.
 * Return: 0 done, 1 not applicable (nothing launched: use the CUDA-core
 * route), -EIO (backend down).
 */
int cuda_lt_mv(struct cuda_lt *lt, CUstream st, int dt, struct cuda_mv_args *a);

/* The token bucket a step of @nt tokens runs in (0: none). */
uint32_t cuda_lt_bucket(const struct cuda_lt *lt, uint32_t nt, uint32_t nt_max);

#endif
