// SPDX-License-Identifier: MIT
/*
 * lt.c — cuBLASLt through dlopen (no link-time dependency: without the
 * library the CUDA-core kernels serve every product), the plans chosen at
 * model load, and the launch sequence of one product (cuda_lt.h).
 *
 * Per product: one quantise launch (x -> E4M3 with per-token scales, or
 * BF16), per part [INT4: one dequantise launch] one cublasLtMatmul and,
 * where needed, one epilogue launch; SwiGLU one more.  Every call is
 * checked: a failed cuBLASLt call marks the backend down like a failed
 * driver call (health -EIO, the call named), and VELO_CUDA_FAIL_NTH counts
 * these calls too.
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <velo/compiler.h>

#include "../../tools/lib/log.h"
#include "cuda_fwd.h"
#include "cuda_lt.h"

#define LT_STR_(x) #x
#define LT_STR(x) LT_STR_(x)
#define DP(p) ((void *)(uintptr_t)(p))

/* A failed cuBLASLt call: the same fault path as a driver call's. */
static int lt_check(struct cuda_backend *be, cublasStatus_t s, const char *what,
		    const char *file, int line)
{
	const char *name = NULL;

	if (likely(s == CUBLAS_STATUS_SUCCESS))
		return 0;
	if (be->lt.cublasLtGetStatusName)
		name = be->lt.cublasLtGetStatusName(s);
	if (!__atomic_exchange_n(&be->why_set, 1, __ATOMIC_ACQ_REL)) {
		snprintf(be->why, sizeof(be->why), "cuBLASLt fault: %s (%d) in %.100s",
			 name ? name : "?", (int)s, what);
		__atomic_store_n(&be->health, -EIO, __ATOMIC_RELEASE);
	}
	__atomic_fetch_add(&be->ctr[CTR_faults], 1, __ATOMIC_RELAXED);
	LOG_E(eng, "cuda: %s failed: %s (%d) at %s:%d; backend down", what,
	      name ? name : "?", (int)s, file, line);
	return -EIO;
}

#define LT_CHECK(be, call)                                                    \
	lt_check((be), cuda_inject(be) ? CUBLAS_STATUS_EXECUTION_FAILED : (call), \
		 #call, __FILE__, __LINE__)

int cuda_lt_open(struct cuda_backend *be)
{
	static const char *const names[] = {
		"libcublasLt.so.13", "/usr/local/cuda/lib64/libcublasLt.so.13",
		"libcublasLt.so.12", "/usr/local/cuda/lib64/libcublasLt.so.12",
	};
	struct cuda_lt_api *api = &be->lt;
	const char *env = getenv("VELO_CUDA_CUBLASLT"), *path = NULL;
	const char *missing = NULL;

	memset(api, 0, sizeof(*api));
	if (env && *env) {
		path = env;
		api->lib = dlopen(env, RTLD_NOW | RTLD_LOCAL);
	} else {
		for (unsigned i = 0; i < ARRAY_SIZE(names) && !api->lib; i++) {
			path = names[i];
			api->lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
		}
	}
	if (!api->lib) {
		const char *e = dlerror();

		LOG_W(eng, "cuda: cuBLASLt not available (%s): CUDA-core products only",
		      e ? e : path);
		return -ENODEV;
	}
#define LT_RESOLVE(f)                                                         \
	api->f = (__typeof__(f) *)dlsym(api->lib, LT_STR(f));                 \
	if (!api->f && !missing)                                              \
		missing = LT_STR(f);
	CUDA_LT_FUNCS(LT_RESOLVE)
#undef LT_RESOLVE
	if (missing) {
		LOG_W(eng, "cuda: %s lacks %s: CUDA-core products only", path, missing);
		dlclose(api->lib);
		memset(api, 0, sizeof(*api));
		return -ENODEV;
	}
	LOG_I(eng, "cuda: cuBLASLt %zu from %s", api->cublasLtGetVersion(), path);
	return 0;
}

void cuda_lt_close(struct cuda_backend *be)
{
	if (be->lt.lib)
		dlclose(be->lt.lib);
	memset(&be->lt, 0, sizeof(be->lt));
}

static int desc_make(struct cuda_lt *lt, cublasLtMatmulDesc_t *d)
{
	struct cuda_backend *be = lt->be;
	struct cuda_lt_api *L = &be->lt;
	cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
	int rc;

	rc = LT_CHECK(be, L->cublasLtMatmulDescCreate(d, CUBLAS_COMPUTE_32F, CUDA_R_32F));
	if (rc) {
		*d = NULL;
		return rc;
	}
	return LT_CHECK(be, L->cublasLtMatmulDescSetAttribute(*d, CUBLASLT_MATMUL_DESC_TRANSA,
							      &ta, sizeof(ta))) ?:
	       LT_CHECK(be, L->cublasLtMatmulDescSetAttribute(*d, CUBLASLT_MATMUL_DESC_TRANSB,
							      &tb, sizeof(tb)));
}

int cuda_lt_init(struct cuda_lt *lt, struct cuda_backend *be)
{
	int rc;

	lt->be = be;
	lt->plans = NULL;
	lt->n_plans = lt->cap_plans = 0;
	lt->unsupported = 0;
	lt->h = NULL;
	lt->desc_fp8 = lt->desc_bf16 = NULL;
	if (!be->lt.lib)
		return -ENODEV;
	rc = LT_CHECK(be, be->lt.cublasLtCreate(&lt->h));
	if (rc) {
		lt->h = NULL;
		return rc;
	}
	return desc_make(lt, &lt->desc_fp8) ?: desc_make(lt, &lt->desc_bf16);
}

int cuda_lt_warm(struct cuda_lt *lt, CUstream st, CUdeviceptr a, size_t a_bytes,
		 CUdeviceptr d, size_t d_bytes)
{
	static const float one = 1.0f, zero = 0.0f;
	struct cuda_backend *be = lt->be;
	uint32_t warmed = 0;
	int rc;

	for (uint32_t i = 0; i < lt->n_plans; i++) {
		const struct cuda_lt_plan *p = &lt->plans[i];
		bool gemm8 = p->dt == CUDA_DT_FP8;

		if ((size_t)p->n * p->k * (gemm8 ? 1 : 2) > a_bytes ||
		    (size_t)p->n * p->nt * 4 > d_bytes)
			continue;
		rc = LT_CHECK(be, be->lt.cublasLtMatmul(lt->h, gemm8 ? lt->desc_fp8 : lt->desc_bf16,
				&one, DP(a), p->la, DP(lt->xq), p->lb, &zero,
				DP(d), p->ld, DP(d), p->ld, &p->algo,
				DP(lt->ws), lt->ws_bytes, (cudaStream_t)st));
		if (rc)
			return rc;
		warmed++;
	}
	rc = CU_CHECK(be, be->api.cuStreamSynchronize(st));
	if (!rc)
		LOG_D(eng, "cuda: cuBLASLt: %u of %u plans run once at load", warmed,
		      lt->n_plans);
	return rc;
}

void cuda_lt_fini(struct cuda_lt *lt)
{
	struct cuda_backend *be = lt->be;
	struct cuda_lt_api *L;

	if (!be || !be->lt.lib)
		return;
	L = &be->lt;
	for (uint32_t i = 0; i < lt->n_plans; i++) {
		struct cuda_lt_plan *p = &lt->plans[i];

		if (p->la)
			L->cublasLtMatrixLayoutDestroy(p->la);
		if (p->lb)
			L->cublasLtMatrixLayoutDestroy(p->lb);
		if (p->ld)
			L->cublasLtMatrixLayoutDestroy(p->ld);
	}
	free(lt->plans);
	lt->plans = NULL;
	lt->n_plans = lt->cap_plans = 0;
	if (lt->desc_fp8)
		L->cublasLtMatmulDescDestroy(lt->desc_fp8);
	if (lt->desc_bf16)
		L->cublasLtMatmulDescDestroy(lt->desc_bf16);
	if (lt->h)
		L->cublasLtDestroy(lt->h);
	lt->desc_fp8 = lt->desc_bf16 = NULL;
	lt->h = NULL;
}

/* Token buckets: about 1.5x apart, so a step pays at most ~50 % padding;
 * the last bucket is the cap rounded down to 16 (every bucket a multiple
 * of 16 tokens, as FP8 layouts like; a step between that and the cap
 * keeps the CUDA-core route). */
static const uint32_t lt_buckets[] = { 32, 48, 64, 96, 128, 192, 256, 384, 512, 768,
				       1024, 1536, 2048, 3072, 4096 };

uint32_t cuda_lt_bucket(const struct cuda_lt *lt, uint32_t nt, uint32_t nt_max)
{
	nt_max &= ~15u;
	if (nt < lt->min_nt || nt > nt_max)
		return 0;
	for (unsigned i = 0; i < ARRAY_SIZE(lt_buckets); i++)
		if (lt_buckets[i] >= nt)
			return MIN(lt_buckets[i], nt_max);
	return nt_max;
}

/* Weights cuBLASLt serves: FP8 (E4M3 GEMM, or exactly as BF16), BF16, INT4. */
static bool lt_dtype_ok(int dt)
{
	return dt == CUDA_DT_FP8 || dt == CUDA_DT_BF16 || dt == CUDA_DT_INT4;
}

/* @gt: the GEMM's element type, CUDA_DT_FP8 (E4M3 x E4M3) or CUDA_DT_BF16. */
static int plan_one(struct cuda_lt *lt, int gt, uint32_t n, uint32_t k, uint32_t nt)
{
	struct cuda_backend *be = lt->be;
	struct cuda_lt_api *L = &be->lt;
	cudaDataType ty = gt == CUDA_DT_FP8 ? CUDA_R_8F_E4M3 : CUDA_R_16BF;
	cublasLtMatmulPreference_t pref = NULL;
	cublasLtMatmulHeuristicResult_t res;
	struct cuda_lt_plan p;
	cublasStatus_t s;
	int got = 0, rc;

	memset(&p, 0, sizeof(p));
	p.dt = (uint32_t)gt;
	p.n = n, p.k = k, p.nt = nt;
	memset(&res, 0, sizeof(res));
	rc = LT_CHECK(be, L->cublasLtMatrixLayoutCreate(&p.la, ty, k, n, k));
	if (rc)
		return rc;
	rc = LT_CHECK(be, L->cublasLtMatrixLayoutCreate(&p.lb, ty, k, nt, k));
	if (rc)
		goto err_a;
	rc = LT_CHECK(be, L->cublasLtMatrixLayoutCreate(&p.ld, CUDA_R_32F, n, nt, n));
	if (rc)
		goto err_b;
	rc = LT_CHECK(be, L->cublasLtMatmulPreferenceCreate(&pref));
	if (rc)
		goto err_d;
	rc = LT_CHECK(be, L->cublasLtMatmulPreferenceSetAttribute(pref,
			CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &lt->ws_bytes,
			sizeof(lt->ws_bytes)));
	if (rc)
		goto err_pref;
	/* NOT_SUPPORTED or no result: this shape keeps the CUDA-core kernel
	 * (not a fault); any other error is one. */
	s = cuda_inject(be) ? CUBLAS_STATUS_EXECUTION_FAILED :
	    L->cublasLtMatmulAlgoGetHeuristic(lt->h, p.dt == CUDA_DT_FP8 ? lt->desc_fp8 :
					      lt->desc_bf16, p.la, p.lb, p.ld, p.ld, pref,
					      1, &res, &got);
	if (s == CUBLAS_STATUS_NOT_SUPPORTED || (s == CUBLAS_STATUS_SUCCESS &&
	    (got < 1 || res.state != CUBLAS_STATUS_SUCCESS || res.workspaceSize > lt->ws_bytes))) {
		lt->unsupported++;
		rc = 0;
		goto err_pref;
	}
	rc = lt_check(be, s, "cublasLtMatmulAlgoGetHeuristic", __FILE__, __LINE__);
	if (rc)
		goto err_pref;
	L->cublasLtMatmulPreferenceDestroy(pref);
	p.algo = res.algo;
	p.ws_need = res.workspaceSize;
	if (lt->n_plans == lt->cap_plans) {
		uint32_t cap = lt->cap_plans ? 2 * lt->cap_plans : 64;
		struct cuda_lt_plan *np = realloc(lt->plans, cap * sizeof(*np));

		if (!np) {
			rc = -ENOMEM;
			goto err_d;
		}
		lt->plans = np;
		lt->cap_plans = cap;
	}
	lt->plans[lt->n_plans++] = p;
	return 0;

err_pref:
	L->cublasLtMatmulPreferenceDestroy(pref);
err_d:
	L->cublasLtMatrixLayoutDestroy(p.ld);
err_b:
	L->cublasLtMatrixLayoutDestroy(p.lb);
err_a:
	L->cublasLtMatrixLayoutDestroy(p.la);
	return rc;
}

static const struct cuda_lt_plan *plan_find(const struct cuda_lt *lt, int gt,
					    uint32_t n, uint32_t k, uint32_t nt)
{
	for (uint32_t i = 0; i < lt->n_plans; i++) {
		const struct cuda_lt_plan *p = &lt->plans[i];

		if (p->dt == (uint32_t)gt && p->n == n && p->k == k && p->nt == nt)
			return p;
	}
	return NULL;
}

/* Plans of GEMM type @gt for every bucket; the number refused. */
static int plans_for(struct cuda_lt *lt, int gt, uint32_t n, uint32_t k, uint32_t nt_max,
		     uint32_t *refused)
{
	uint32_t last = 0, u0 = lt->unsupported;

	for (uint32_t nt = lt->min_nt; nt && nt <= nt_max; nt = last + 1) {
		uint32_t b = cuda_lt_bucket(lt, nt, nt_max);
		int rc;

		if (!b || b == last)
			break;
		last = b;
		if (plan_find(lt, gt, n, k, b))
			continue;	/* the same shape as another matrix's */
		rc = plan_one(lt, gt, n, k, b);
		if (rc)
			return rc;
	}
	*refused = lt->unsupported - u0;
	return 0;
}

/*
 * FP8 weights: E4M3 GEMMs, unless fp8_bf16 (VELO_CUDA_LT=2) or the
 * heuristic refuses them; then BF16 GEMMs of the weights converted to BF16
 * (exact: E4M3 fits in BF16) and BF16-rounded activations — more precise,
 * twice the tensor-core time of FP8.  INT4 and FP8-as-BF16 need the matrix
 * to fit the dequantisation workspace.
 */
int cuda_lt_plan_add(struct cuda_lt *lt, int dt, uint32_t n, uint32_t k, uint32_t nt_max)
{
	bool fits = (size_t)n * k <= lt->wdeq_elems;
	uint32_t refused = 0;
	int rc = 0;

	if (!lt->h || !lt_dtype_ok(dt) || n % 16 || k % 16 || k > lt->k_max)
		return 0;
	nt_max = MIN(nt_max, lt->t_max);
	if (dt == CUDA_DT_FP8 && !lt->fp8_bf16) {
		rc = plans_for(lt, CUDA_DT_FP8, n, k, nt_max, &refused);
		if (rc || !refused)
			return rc;
	}
	if (dt == CUDA_DT_BF16 || fits)
		rc = plans_for(lt, CUDA_DT_BF16, n, k, nt_max, &refused);
	return rc;
}

static int lt_launch(struct cuda_backend *be, CUstream st, CUfunction f, unsigned gx,
		     unsigned gy, unsigned bx, void **args)
{
	return CU_CHECK(be, be->api.cuLaunchKernel(f, gx, gy, 1, bx, 1, 1, 0, st, args, NULL));
}

int cuda_lt_mv(struct cuda_lt *lt, CUstream st, int dt, struct cuda_mv_args *a)
{
	struct cuda_backend *be;
	const struct cuda_lt_plan *pl[CUDA_MV_PARTS];
	uint32_t nt = a->nt, K = a->cols, nb, np = a->n_parts;
	float one = 1.0f, zero = 0.0f;
	int gt = CUDA_DT_BF16, rc;
	bool deq = dt == CUDA_DT_INT4;

	if (!lt || !lt->h || !lt_dtype_ok(dt) || K % 16 || K > lt->k_max)
		return 1;
	be = lt->be;
	nb = cuda_lt_bucket(lt, nt, lt->t_max);
	if (!nb)
		return 1;
	if (dt == CUDA_DT_FP8) {
		/* E4M3 GEMMs if every part has its plan (kept in pl[]), else
		 * as BF16 */
		gt = lt->fp8_bf16 ? CUDA_DT_BF16 : CUDA_DT_FP8;
		for (uint32_t p = 0; p < np && gt == CUDA_DT_FP8; p++)
			if (!(pl[p] = plan_find(lt, CUDA_DT_FP8, a->rows[p], K, nb)))
				gt = CUDA_DT_BF16;
		deq = gt == CUDA_DT_BF16;
	}
	for (uint32_t p = 0; p < np; p++) {
		bool in_place = a->mode != CUDA_MV_ADD && a->ldy[p] == a->rows[p];

		if (gt != CUDA_DT_FP8)
			pl[p] = plan_find(lt, gt, a->rows[p], K, nb);
		if (!pl[p] || (!in_place && a->rows[p] > lt->n_acc) ||
		    (deq && (size_t)a->rows[p] * K > lt->wdeq_elems))
			return 1;
	}
	if (a->mode == CUDA_MV_SWIGLU && (np != 2 || a->ldy[0] != a->rows[0]))
		return 1;

	/* activations: E4M3 with per-token scales, or BF16 */
	{
		void *px = DP(a->x), *pq = DP(lt->xq), *ps = DP(lt->tscale);
		uint32_t ldx = a->ldx;
		void *qa[] = { &px, &ldx, &K, &pq, &ps };

		rc = lt_launch(be, st, gt == CUDA_DT_FP8 ? be->f_ltq_fp8 : be->f_ltq_bf16,
			       nt, 1, 256, qa);
		if (rc)
			return rc;
	}
	for (uint32_t p = 0; p < np; p++) {
		bool in_place = a->mode != CUDA_MV_ADD && a->ldy[p] == a->rows[p];
		bool fp8 = dt == CUDA_DT_FP8, gemm8 = gt == CUDA_DT_FP8;
		CUdeviceptr d = in_place ? (CUdeviceptr)(uintptr_t)a->y[p] : lt->acc;
		const void *w = a->w[p];

		if (deq && fp8) {
			void *pw = DP(a->w[p]), *po = DP(lt->wdeq);
			uint32_t words = a->rows[p] * (K / 4);
			void *da[] = { &pw, &words, &po };

			rc = lt_launch(be, st, be->f_lt_deq8, (words + 255) / 256, 1, 256, da);
			if (rc)
				return rc;
			w = DP(lt->wdeq);
		} else if (deq) {
			void *pw = DP(a->w[p]), *psc = DP(a->scales[p]), *po = DP(lt->wdeq);
			uint32_t rows = a->rows[p];
			uint32_t words = rows * (K / 8);
			void *da[] = { &pw, &psc, &rows, &K, &po };

			rc = lt_launch(be, st, be->f_lt_deq4, (words + 255) / 256, 1, 256, da);
			if (rc)
				return rc;
			w = DP(lt->wdeq);
		}
		rc = LT_CHECK(be, be->lt.cublasLtMatmul(lt->h, gemm8 ? lt->desc_fp8 : lt->desc_bf16,
				&one, w, pl[p]->la, DP(lt->xq), pl[p]->lb, &zero,
				DP(d), pl[p]->ld, DP(d), pl[p]->ld, &pl[p]->algo,
				DP(lt->ws), lt->ws_bytes, (cudaStream_t)st));
		if (rc)
			return rc;
		__atomic_fetch_add(&be->ctr[CTR_lt_gemms], 1, __ATOMIC_RELAXED);
		if (fp8 || a->bias[p] || !in_place) {
			struct cuda_lt_epi_args e;
			void *ea[] = { &e };
			size_t n = (size_t)nt * a->rows[p];

			memset(&e, 0, sizeof(e));
			e.y = a->y[p];
			e.src = (const float *)DP(d);
			e.wscale = fp8 ? (const float *)a->scales[p] : NULL;
			e.tscale = gemm8 ? (const float *)DP(lt->tscale) : NULL;
			e.bias = a->mode == CUDA_MV_SWIGLU ? NULL : a->bias[p];
			e.ldy = a->ldy[p];
			e.ld_src = a->rows[p];
			e.rows = a->rows[p];
			e.nt = nt;
			e.mode = a->mode == CUDA_MV_ADD ? CUDA_MV_ADD : CUDA_MV_STORE;
			rc = lt_launch(be, st, be->f_lt_epi, (unsigned)((n + 255) / 256), 1, 256, ea);
			if (rc)
				return rc;
		}
	}
	if (a->mode == CUDA_MV_SWIGLU) {
		uint32_t n = nt * a->rows[0];
		void *sa[] = { &a->y[0], &a->y[1], &n };

		rc = lt_launch(be, st, be->f_swiglu, (n + 255) / 256, 1, 256, sa);
	}
	return rc;
}
