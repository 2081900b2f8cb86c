// SPDX-License-Identifier: MIT
/*
 * cuda_fake.c — libcuda-fake.so, a stand-in for the CUDA driver that
 * test_cuda_fake points the CUDA backend at (VELO_CUDA_DRIVER), so that the
 * backend's host side runs on machines without a GPU: one "device" of
 * compute capability 9.0 whose memory is the host heap, copies done at
 * once, kernels not run (cuLaunchKernel only counts).  What it checks is
 * the host logic — validation, budgets, cleanup ladders under injected
 * faults — not numbers.  Every object it hands out is counted, so the test
 * can prove that a backend torn down after any fault leaks nothing
 * (fake_cuda_outstanding).  A capture left open (a stream never ended)
 * makes the next capture fail, as the real driver's would.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cuda.h>

#define FAKE_API __attribute__((visibility("default")))

static long outstanding;	/* device/host allocations and handles alive */
static long launches;
static int inited;

FAKE_API long fake_cuda_outstanding(void);
FAKE_API long fake_cuda_launches(void);
FAKE_API int fake_cuda_capturing(void);

static int capturing;

int fake_cuda_capturing(void)
{
	return capturing;
}

long fake_cuda_outstanding(void)
{
	return __atomic_load_n(&outstanding, __ATOMIC_SEQ_CST);
}

long fake_cuda_launches(void)
{
	return __atomic_load_n(&launches, __ATOMIC_SEQ_CST);
}

static void *obj_new(size_t n)
{
	void *p = calloc(1, n ? n : 1);

	if (p)
		__atomic_add_fetch(&outstanding, 1, __ATOMIC_SEQ_CST);
	return p;
}

static void obj_free(void *p)
{
	if (!p)
		return;
	__atomic_sub_fetch(&outstanding, 1, __ATOMIC_SEQ_CST);
	free(p);
}

CUresult CUDAAPI cuInit(unsigned int flags)
{
	(void)flags;
	inited = 1;
	return CUDA_SUCCESS;
}

CUresult CUDAAPI cuDriverGetVersion(int *v)
{
	*v = 13000;
	return CUDA_SUCCESS;
}

CUresult CUDAAPI cuDeviceGetCount(int *n)
{
	*n = inited ? 1 : 0;
	return inited ? CUDA_SUCCESS : CUDA_ERROR_NOT_INITIALIZED;
}

CUresult CUDAAPI cuDeviceGet(CUdevice *d, int ordinal)
{
	if (ordinal != 0)
		return CUDA_ERROR_INVALID_DEVICE;
	*d = 0;
	return CUDA_SUCCESS;
}

CUresult CUDAAPI cuDeviceGetName(char *name, int len, CUdevice d)
{
	(void)d;
	strncpy(name, "fake sm_90", (size_t)len);
	name[len - 1] = 0;
	return CUDA_SUCCESS;
}

CUresult CUDAAPI cuDeviceGetAttribute(int *v, CUdevice_attribute a, CUdevice d)
{
	(void)d;
	switch (a) {
	case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT:
		*v = 132;
		break;
	case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR:
		*v = 9;
		break;
	default:
		*v = 0;
	}
	return CUDA_SUCCESS;
}

CUresult CUDAAPI cuDeviceTotalMem(size_t *b, CUdevice d)
{
	(void)d;
	*b = (size_t)1 << 34;
	return CUDA_SUCCESS;
}

static int ctx_refs;

CUresult CUDAAPI cuDevicePrimaryCtxRetain(CUcontext *c, CUdevice d)
{
	(void)d;
	*c = (CUcontext)(uintptr_t)0x1000;
	ctx_refs++;
	__atomic_add_fetch(&outstanding, 1, __ATOMIC_SEQ_CST);
	return CUDA_SUCCESS;
}

CUresult CUDAAPI cuDevicePrimaryCtxRelease(CUdevice d)
{
	(void)d;
	if (!ctx_refs)
		return CUDA_ERROR_INVALID_CONTEXT;
	ctx_refs--;
	__atomic_sub_fetch(&outstanding, 1, __ATOMIC_SEQ_CST);
	return CUDA_SUCCESS;
}

CUresult CUDAAPI cuCtxSetCurrent(CUcontext c)
{
	(void)c;
	return CUDA_SUCCESS;
}

CUresult CUDAAPI cuModuleLoadData(CUmodule *m, const void *image)
{
	/* the real driver parses the fatbin: check its magic at least */
	if (!image || memcmp(image, "\x50\xed\x55\xba", 4))
		return CUDA_ERROR_INVALID_IMAGE;
	*m = obj_new(8);
	return *m ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

CUresult CUDAAPI cuModuleUnload(CUmodule m)
{
	obj_free(m);
	return CUDA_SUCCESS;
}

CUresult CUDAAPI cuModuleGetFunction(CUfunction *f, CUmodule m, const char *name)
{
	(void)m;
	(void)name;
	*f = (CUfunction)(uintptr_t)0x2000;
	return CUDA_SUCCESS;
}

CUresult CUDAAPI cuMemAlloc(CUdeviceptr *p, size_t n)
{
	void *h = obj_new(n);

	if (!h)
		return CUDA_ERROR_OUT_OF_MEMORY;
	*p = (CUdeviceptr)(uintptr_t)h;
	return CUDA_SUCCESS;
}

CUresult CUDAAPI cuMemFree(CUdeviceptr p)
{
	obj_free((void *)(uintptr_t)p);
	return CUDA_SUCCESS;
}

CUresult CUDAAPI cuMemAllocHost(void **p, size_t n)
{
	*p = obj_new(n);
	return *p ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

CUresult CUDAAPI cuMemFreeHost(void *p)
{
	obj_free(p);
	return CUDA_SUCCESS;
}

CUresult CUDAAPI cuMemGetInfo(size_t *f, size_t *t)
{
	*f = (size_t)1 << 33;
	*t = (size_t)1 << 34;
	return CUDA_SUCCESS;
}

CUresult CUDAAPI cuMemcpyHtoDAsync(CUdeviceptr d, const void *s, size_t n, CUstream st)
{
	(void)st;
	memcpy((void *)(uintptr_t)d, s, n);
	return CUDA_SUCCESS;
}

CUresult CUDAAPI cuMemcpyDtoHAsync(void *d, CUdeviceptr s, size_t n, CUstream st)
{
	(void)st;
	memcpy(d, (const void *)(uintptr_t)s, n);
	return CUDA_SUCCESS;
}

CUresult CUDAAPI cuMemcpyDtoDAsync(CUdeviceptr d, CUdeviceptr s, size_t n, CUstream st)
{
	(void)st;
	memmove((void *)(uintptr_t)d, (const void *)(uintptr_t)s, n);
	return CUDA_SUCCESS;
}

CUresult CUDAAPI cuMemsetD32Async(CUdeviceptr d, unsigned int v, size_t n, CUstream st)
{
	uint32_t *p = (uint32_t *)(uintptr_t)d;

	(void)st;
	for (size_t i = 0; i < n; i++)
		p[i] = v;
	return CUDA_SUCCESS;
}

CUresult CUDAAPI cuStreamCreate(CUstream *s, unsigned int flags)
{
	(void)flags;
	*s = obj_new(8);
	return *s ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

CUresult CUDAAPI cuStreamDestroy(CUstream s)
{
	obj_free(s);
	return CUDA_SUCCESS;
}

CUresult CUDAAPI cuStreamSynchronize(CUstream s)
{
	(void)s;
	return CUDA_SUCCESS;
}

CUresult CUDAAPI cuEventCreate(CUevent *e, unsigned int flags)
{
	(void)flags;
	*e = obj_new(8);
	return *e ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

CUresult CUDAAPI cuEventDestroy(CUevent e)
{
	obj_free(e);
	return CUDA_SUCCESS;
}

CUresult CUDAAPI cuEventRecord(CUevent e, CUstream s)
{
	(void)e;
	(void)s;
	return CUDA_SUCCESS;
}

CUresult CUDAAPI cuEventSynchronize(CUevent e)
{
	(void)e;
	return CUDA_SUCCESS;
}

CUresult CUDAAPI cuEventElapsedTime(float *ms, CUevent a, CUevent b)
{
	(void)a;
	(void)b;
	*ms = 0.0f;
	return CUDA_SUCCESS;
}

CUresult CUDAAPI cuLaunchKernel(CUfunction f, unsigned int gx, unsigned int gy,
				unsigned int gz, unsigned int bx, unsigned int by,
				unsigned int bz, unsigned int smem, CUstream s,
				void **params, void **extra)
{
	(void)f, (void)s, (void)params, (void)extra, (void)smem;
	if (!gx || !gy || !gz || !bx || !by || !bz || bx * by * bz > 1024)
		return CUDA_ERROR_INVALID_VALUE;
	__atomic_add_fetch(&launches, 1, __ATOMIC_SEQ_CST);
	return CUDA_SUCCESS;
}

CUresult CUDAAPI cuGetErrorName(CUresult r, const char **s)
{
	*s = r == CUDA_ERROR_LAUNCH_FAILED ? "CUDA_ERROR_LAUNCH_FAILED" : "CUDA_ERROR_FAKE";
	return CUDA_SUCCESS;
}

/* Stream capture: launches while capturing are recorded (counted) only;
 * a graph and its executable are counted objects. */

CUresult CUDAAPI cuStreamBeginCapture(CUstream s, CUstreamCaptureMode mode)
{
	(void)s;
	(void)mode;
	if (capturing)
		return CUDA_ERROR_ILLEGAL_STATE;
	capturing = 1;
	return CUDA_SUCCESS;
}

CUresult CUDAAPI cuStreamEndCapture(CUstream s, CUgraph *g)
{
	(void)s;
	if (!capturing)
		return CUDA_ERROR_ILLEGAL_STATE;
	capturing = 0;
	*g = obj_new(8);
	return *g ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

CUresult CUDAAPI cuGraphInstantiate(CUgraphExec *e, CUgraph g, unsigned long long flags)
{
	(void)flags;
	if (!g)
		return CUDA_ERROR_INVALID_VALUE;
	*e = obj_new(8);
	return *e ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

CUresult CUDAAPI cuGraphLaunch(CUgraphExec e, CUstream s)
{
	(void)s;
	if (!e)
		return CUDA_ERROR_INVALID_VALUE;
	__atomic_add_fetch(&launches, 1, __ATOMIC_SEQ_CST);
	return CUDA_SUCCESS;
}

CUresult CUDAAPI cuGraphExecDestroy(CUgraphExec e)
{
	obj_free(e);
	return CUDA_SUCCESS;
}

CUresult CUDAAPI cuGraphDestroy(CUgraph g)
{
	obj_free(g);
	return CUDA_SUCCESS;
}

/*
 * cuBLASLt: test_cuda_fake points VELO_CUDA_CUBLASLT at this same library.
 * Handles, descriptors, layouts and preferences are counted objects; the
 * heuristic offers one algorithm needing no workspace; a product only
 * counts as a launch (its operands checked for presence).
 */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#include <cublasLt.h>
#pragma GCC diagnostic pop

static long lt_matmuls;

FAKE_API long fake_lt_matmuls(void);

long fake_lt_matmuls(void)
{
	return __atomic_load_n(&lt_matmuls, __ATOMIC_SEQ_CST);
}

static cublasStatus_t lt_new(void **p)
{
	*p = obj_new(8);
	return *p ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_ALLOC_FAILED;
}

cublasStatus_t CUBLASWINAPI cublasLtCreate(cublasLtHandle_t *h)
{
	return lt_new((void **)h);
}

cublasStatus_t CUBLASWINAPI cublasLtDestroy(cublasLtHandle_t h)
{
	obj_free(h);
	return CUBLAS_STATUS_SUCCESS;
}

size_t CUBLASWINAPI cublasLtGetVersion(void)
{
	return 130000;
}

const char *CUBLASWINAPI cublasLtGetStatusName(cublasStatus_t s)
{
	return s == CUBLAS_STATUS_EXECUTION_FAILED ? "CUBLAS_STATUS_EXECUTION_FAILED" :
						     "CUBLAS_STATUS_FAKE";
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d,
						     cublasComputeType_t ct,
						     cudaDataType_t st)
{
	(void)ct, (void)st;
	return lt_new((void **)d);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d)
{
	obj_free(d);
	return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d,
							   cublasLtMatmulDescAttributes_t a,
							   const void *buf, size_t n)
{
	(void)a;
	return d && buf && n ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
}

cublasStatus_t CUBLASWINAPI cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l,
						       cudaDataType type, uint64_t rows,
						       uint64_t cols, int64_t ld)
{
	(void)type;
	if (!rows || !cols || ld < (int64_t)rows)
		return CUBLAS_STATUS_INVALID_VALUE;
	return lt_new((void **)l);
}

cublasStatus_t CUBLASWINAPI cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l)
{
	obj_free(l);
	return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p)
{
	return lt_new((void **)p);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p)
{
	obj_free(p);
	return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p,
								 cublasLtMatmulPreferenceAttributes_t a,
								 const void *buf, size_t n)
{
	(void)a;
	return p && buf && n ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t h,
		cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t la, cublasLtMatrixLayout_t lb,
		cublasLtMatrixLayout_t lc, cublasLtMatrixLayout_t ld,
		cublasLtMatmulPreference_t pref, int req,
		cublasLtMatmulHeuristicResult_t res[], int *got)
{
	if (!h || !d || !la || !lb || !lc || !ld || !pref || req < 1)
		return CUBLAS_STATUS_INVALID_VALUE;
	memset(&res[0], 0, sizeof(res[0]));
	res[0].state = CUBLAS_STATUS_SUCCESS;
	*got = 1;
	return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t d,
		const void *alpha, const void *A, cublasLtMatrixLayout_t la, const void *B,
		cublasLtMatrixLayout_t lb, const void *beta, const void *C,
		cublasLtMatrixLayout_t lc, void *D, cublasLtMatrixLayout_t ld,
		const cublasLtMatmulAlgo_t *algo, void *ws, size_t ws_bytes, cudaStream_t st)
{
	(void)ws, (void)ws_bytes, (void)st;
	if (!h || !d || !alpha || !A || !la || !B || !lb || !beta || !C || !lc || !D ||
	    !ld || !algo)
		return CUBLAS_STATUS_INVALID_VALUE;
	__atomic_add_fetch(&lt_matmuls, 1, __ATOMIC_SEQ_CST);
	__atomic_add_fetch(&launches, 1, __ATOMIC_SEQ_CST);
	return CUBLAS_STATUS_SUCCESS;
}
