/* SPDX-License-Identifier: MIT */
/*
 * cuda_priv.h — the CUDA backend's private state.
 *
 * The driver (libcuda.so.1) is opened with dlopen at ops->init and reached
 * only through struct cuda_api, one function pointer per entry point, so
 * that every program links and starts on machines without a driver (CI,
 * the QEMU image): init then fails with -ENODEV and a reason.  The types
 * come from the toolkit's cuda.h (headers only; nothing is linked).
 *
 * Threads: the backend's state is written by init only, except the health
 * word, the fault text (written once, before health), the memory and model
 * counts and the counters, all atomics.  Each model owns its stream, events
 * and buffers, so a loader thread may load (and self-test) one model while
 * the scheduler thread steps another on the same device; every op makes the
 * device's primary context current on the calling thread first.
 */
#ifndef VELO_ENG_CUDA_PRIV_H
#define VELO_ENG_CUDA_PRIV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cuda.h>
/* cublasLt.h has one declaration without a prototype */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#include <cublasLt.h>
#pragma GCC diagnostic pop

#include "../../tools/lib/counters.h"
#include "../backend.h"
#include "../core/sampler.h"
#include "cuda_abi.h"
#include "cuda_sample.h"

/* Driver entry points (cuda.h maps versioned names: cuMemAlloc is
 * cuMemAlloc_v2, which is also the symbol looked up). */
#define CUDA_API_FUNCS(X)                                                     \
	X(cuInit) X(cuDriverGetVersion) X(cuDeviceGetCount) X(cuDeviceGet)    \
	X(cuDeviceGetName) X(cuDeviceGetAttribute) X(cuDeviceTotalMem)        \
	X(cuDevicePrimaryCtxRetain) X(cuDevicePrimaryCtxRelease)              \
	X(cuCtxSetCurrent) X(cuModuleLoadData) X(cuModuleUnload)              \
	X(cuModuleGetFunction) X(cuMemAlloc) X(cuMemFree) X(cuMemAllocHost)   \
	X(cuMemFreeHost) X(cuMemGetInfo) X(cuMemcpyHtoDAsync)                 \
	X(cuMemcpyDtoHAsync) X(cuMemcpyDtoDAsync) X(cuMemsetD32Async)         \
	X(cuStreamCreate) X(cuStreamDestroy) X(cuStreamSynchronize)           \
	X(cuEventCreate) X(cuEventDestroy) X(cuEventRecord)                   \
	X(cuEventSynchronize) X(cuEventElapsedTime) X(cuLaunchKernel)         \
	X(cuGetErrorName) X(cuStreamBeginCapture) X(cuStreamEndCapture)       \
	X(cuGraphInstantiate) X(cuGraphLaunch) X(cuGraphExecDestroy)          \
	X(cuGraphDestroy)

#define CUDA_API_MEMBER(f) __typeof__(f) *f;
struct cuda_api {
	void *lib;
	CUDA_API_FUNCS(CUDA_API_MEMBER)
};

/* cuBLASLt entry points (lt.c), resolved from libcublasLt.so.13 (or .12,
 * or $VELO_CUDA_CUBLASLT) with dlopen like the driver's. */
#define CUDA_LT_FUNCS(X)                                                      \
	X(cublasLtCreate) X(cublasLtDestroy) X(cublasLtGetVersion)             \
	X(cublasLtGetStatusName) X(cublasLtMatmulDescCreate)                   \
	X(cublasLtMatmulDescDestroy) X(cublasLtMatmulDescSetAttribute)         \
	X(cublasLtMatrixLayoutCreate) X(cublasLtMatrixLayoutDestroy)           \
	X(cublasLtMatmulPreferenceCreate) X(cublasLtMatmulPreferenceDestroy)   \
	X(cublasLtMatmulPreferenceSetAttribute)                                \
	X(cublasLtMatmulAlgoGetHeuristic) X(cublasLtMatmul)

struct cuda_lt_api {
	void *lib;
	CUDA_LT_FUNCS(CUDA_API_MEMBER)
};

#define foreach_cuda_counter(X)                                               \
	X(steps, "forward steps launched")                                    \
	X(step_tokens, "tokens run through the forward pass")                 \
	X(step_logits, "logit rows computed")                                 \
	X(bad_batches, "steps rejected as malformed (-EINVAL)")               \
	X(over_budget, "steps rejected as over the model budget (-E2BIG)")    \
	X(kv_copies, "KV blocks copied (copy on write)")                      \
	X(samples_gpu, "tokens chosen by the device argmax")                  \
	X(samples_host, "tokens sampled on the host from copied logits")      \
	X(samples_dev, "tokens sampled by the device sampler (k_sample)")     \
	X(sample_errors, "sample calls failed")                               \
	X(models_loaded, "models loaded")                                     \
	X(load_errors, "model loads refused")                                 \
	X(faults, "driver calls that failed (backend marked down)")           \
	X(lt_gemms, "matrix products run by cuBLASLt")                       \
	X(flash_steps, "steps whose attention ran the tiled prefill kernel")   \
	X(mma_gemms, "matrix products run by the tensor-core GEMM")

enum {
	foreach_cuda_counter(CTR_ENUM) CUDA_CTR__COUNT
};

/* Kernel entry points by dtype (CUDA_DT_*) and GEMV token width. */
#define CUDA_N_DT 5
#define CUDA_N_NT 4		/* NT = 1, 2, 4, 8 */

struct cuda_backend {
	struct eng_backend base;
	struct cuda_api api;
	CUdevice dev;
	CUcontext ctx;
	CUmodule mod;
	CUfunction f_mv[CUDA_N_DT][CUDA_N_NT];
	CUfunction f_mm[CUDA_N_DT];
	CUfunction f_embed, f_rmsnorm, f_swiglu, f_rope, f_attn[2], f_merge;
	CUfunction f_argmax, f_copy, f_sample;
	CUfunction f_mvt[2][2];		/* k_mvt_{fp8,int4}_{8,16} (k_mvt.cuh) */
	uint32_t mvt;			/* VELO_CUDA_MVT: k_mvt for 2..16 tokens (0: k_mv) */
	CUfunction f_ltq_fp8, f_ltq_bf16, f_lt_deq4, f_lt_deq8, f_lt_epi, f_flash[2];
	CUfunction f_mma[CUDA_N_DT][2], f_mma_xq;	/* [dt][split - 1]; F32: none */
	struct cuda_lt_api lt;		/* lt.lib NULL: cuBLASLt not in use */
	int sm_count, cc_major, cc_minor;
	char name[96];
	uint64_t total_mem;
	uint64_t mem_bytes_max;
	uint64_t mem_bytes_used;	/* atomic */
	uint32_t n_models;		/* atomic */
	int health;			/* atomic: 0 or -errno */
	int why_set;			/* atomic: the fault text is written */
	char why[192];
	long fail_nth;			/* VELO_CUDA_FAIL_NTH fault injection; 0: off */
	long calls;			/* atomic: checked calls so far */
	uint64_t ctr[CUDA_CTR__COUNT];	/* atomic adds */
};

/* A weight matrix on the device, in the image's layout. */
struct cuda_tensor {
	int dt;				/* CUDA_DT_* */
	uint32_t rows, cols;
	CUdeviceptr data, scales;
};

struct cuda_layer {
	struct cuda_tensor wq, wk, wv, wo, w_gate, w_up, w_down;
	CUdeviceptr attn_norm, ffn_norm;	/* f32 [hidden] */
	CUdeviceptr bq, bk, bv, bo;		/* f32 or 0 */
};

/*
 * CUDA graphs of decode steps (VELO_CUDA_GRAPHS=1 at model load; off by
 * default until measured): one per (T sequences of one token each, all
 * wanting logits, T <= CUDA_GRAPH_T_MAX and <= seqs_max) and attention
 * split bucket (1, 4, 16, 64 splits: the smallest at least what the step
 * needs), captured at load, replayed with the step's inputs copied to the
 * same device addresses.
 */
#define CUDA_GRAPH_T_MAX 16
#define CUDA_GRAPH_BUCKETS 4

/* Offsets (in 32-bit words) of the step inputs, host and device alike. */
struct cuda_in_layout {
	size_t tok_id, tok_pos, tok_seq, tok_blk, tok_slot, logit_tok, tables, tiles;
	size_t words;
};

/*
 * cuBLASLt matrix products (lt.c) for steps of at least min_nt tokens: the
 * plans (one per weight dtype, output rows n, input columns k and token
 * bucket) are chosen at load with cublasLtMatmulAlgoGetHeuristic and the
 * buffers carved from the model's activation block then; a step only
 * launches.  A GEMM runs on exactly its plan's bucket of tokens (the rows
 * past the step's tokens are scratch), so every call has the shape its
 * algorithm was chosen for.
 */
#define CUDA_LT_BUCKETS 16

struct cuda_lt_plan {
	uint32_t dt, n, k, nt;			/* nt: the bucket */
	cublasLtMatrixLayout_t la, lb, ld;
	cublasLtMatmulAlgo_t algo;
	size_t ws_need;
};

struct cuda_lt {
	struct cuda_backend *be;
	cublasLtHandle_t h;
	cublasLtMatmulDesc_t desc_fp8, desc_bf16;
	struct cuda_lt_plan *plans;
	uint32_t n_plans, cap_plans;
	uint32_t min_nt;			/* smallest step that uses it */
	uint32_t t_max;				/* tokens the buffers hold */
	uint32_t unsupported;			/* shapes the heuristic refused */
	bool fp8_bf16;				/* FP8 weights as BF16 (VELO_CUDA_LT=2) */
	CUdeviceptr ws;				/* cuBLASLt workspace */
	size_t ws_bytes;
	CUdeviceptr xq;				/* [t_max][k_max] fp8 or bf16 */
	CUdeviceptr tscale;			/* [t_max] f32 per-token scales */
	CUdeviceptr acc;			/* [t_max][n_acc] f32 (residual adds) */
	CUdeviceptr wdeq;			/* INT4 weights as bf16 */
	size_t k_max, n_acc, wdeq_elems;
};

/*
 * The tensor-core GEMM (k_mma.cuh) for products of more than 16 tokens
 * (VELO_CUDA_MMA at load: 0 off, 1 f16 activations, 2 hi + lo): its
 * activation workspace, carved from the model's block at load:
 * split x [tokens][ldk] 16-bit halves, then [tokens] f32 scales, for
 * t_max tokens of up to k_max columns (ldk = k_max rounded up to 32).
 */
struct cuda_mma {
	uint32_t split;				/* 0: off (k_mm) */
	uint32_t swiglu;			/* 1: silu(gate) * up in the epilogue
						 * (models); 0: two stores and
						 * k_swiglu (tests compare both) */
	uint32_t t_max, k_max;
	CUdeviceptr ws;
	size_t bytes;
};

struct cuda_model {
	struct eng_be_model base;
	struct cuda_backend *be;
	const struct eng_model *m;
	struct eng_model_budget bud;

	uint32_t n_layers, hidden, n_heads, n_kv, hd, q_dim, kv_dim, ffn, vocab;
	uint32_t B, b_shift, ctx_max, window, table_ld;
	float att_scale, eps;
	bool kv_bf16;

	CUstream st;
	CUevent ev_in, ev_done;
	bool in_pending;		/* ev_in recorded, not yet waited on */

	CUdeviceptr wmem, amem;		/* weights; everything else */
	size_t wbytes, abytes;
	uint64_t weight_read_bytes;	/* per token (model_info) */

	struct cuda_tensor embed, lm_head;
	struct cuda_layer *layers;
	CUdeviceptr final_norm, rope_cos, rope_sin;

	/* KV pool: k and v [layer][block][kv_head][slot][hd], f32 or bf16 */
	CUdeviceptr kc, vc;
	size_t kv_esz, kv_blk_elems, kv_layer_elems;

	/* activations: T = step_tokens_max rows, S = seqs_max */
	CUdeviceptr x, xb, q, k, v, att, hb, hb2;	/* [T][...] f32 */
	CUdeviceptr xl, logits;				/* [S][hidden], [S][vocab] */
	CUdeviceptr part;				/* attention split partials */
	size_t part_slots;				/* (token, head, split) entries */
	CUdeviceptr mvt_part, mvt_sem;		/* k_mvt split-K sums, counters */
	uint32_t mvt_cap;			/* partial-sum tiles in mvt_part */
	CUdeviceptr d_in, d_tok;
	CUdeviceptr d_samp, d_stok;		/* [S] k_sample rows, [S] its tokens */

	/* pinned host buffers */
	struct cuda_in_layout in;
	uint32_t *h_in;
	float *h_logits;		/* [S][vocab] filled on demand */
	int32_t *h_tok;			/* [S] device argmax */
	struct cuda_samp_row *h_samp;	/* [S] k_sample rows, then [S] tokens */
	int32_t *h_stok;		/* in h_samp's allocation */

	/* host-side step state */
	uint32_t *blk_stamp, stamp;	/* [kv_blocks] write-conflict check */
	int32_t *seq_logit_row;		/* [S] */
	uint8_t *row_on_host;		/* [S] */
	uint32_t T, n_logits, last_n_seqs;
	bool have_step, tok_ready;

	CUgraphExec graphs[CUDA_GRAPH_T_MAX][CUDA_GRAPH_BUCKETS];
	uint32_t graph_t_max;		/* 0: graphs off */
	uint32_t nsplit_force;		/* capture: this many splits; 0: computed */
	uint64_t graph_steps;

	struct cuda_lt lt_ctx;
	struct cuda_lt *lt;		/* &lt_ctx when cuBLASLt is on, else NULL */
	struct cuda_mma mma;		/* mma.split 0: the CUDA-core GEMM */
	bool flash_on;			/* VELO_CUDA_FLASH at load */
	bool flash_step;		/* this step: tiled prefill attention */
	uint32_t n_tiles;		/* query tiles of this step */

	struct eng_sampler_scratch samp;
	double load_ms;
};

/* lt.c — see cuda_lt.h */

/* drv.c */
int cuda_api_load(struct cuda_api *api, char *why, size_t whylen);
void cuda_api_unload(struct cuda_api *api);

/*
 * cuda_check() - 0 for CUDA_SUCCESS; otherwise log @what at @file:@line,
 * mark @be down (health -EIO, the first fault's text kept) and return
 * -EIO.
 */
int cuda_check(struct cuda_backend *be, CUresult r, const char *what,
	       const char *file, int line);

/* Fault injection (VELO_CUDA_FAIL_NTH=N): the N-th checked call is not
 * made and fails as a launch failure would.  Off: one predicted branch. */
static inline bool cuda_inject(struct cuda_backend *be)
{
	return __builtin_expect(be->fail_nth != 0, 0) &&
	       __atomic_add_fetch(&be->calls, 1, __ATOMIC_RELAXED) == be->fail_nth;
}

#define CU_CHECK(be, call)                                                    	cuda_check((be), cuda_inject(be) ? CUDA_ERROR_LAUNCH_FAILED : (call),  		   #call, __FILE__, __LINE__)

/* The embedded fatbin (kernels_fatbin.S). */
extern const unsigned char eng_cuda_fatbin[];
extern const unsigned char eng_cuda_fatbin_end[];

#endif
