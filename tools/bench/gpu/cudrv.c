// SPDX-License-Identifier: MIT
/*
 * cudrv.c — device name and copy bandwidth through the CUDA driver API
 * (libcuda.so.1 opened at run time), and the CPU copy bandwidth for the
 * CPU backend's runs of velo-bench-gpu.  See cudrv.h.
 *
 * The types are declared here as the driver ABI defines them (handles are
 * pointers, CUdeviceptr is 64-bit, CUresult an int), so that the program
 * needs no CUDA headers to build.
 */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <velo/compiler.h>

#include "../../lib/clock.h"
#include "cudrv.h"

typedef int cu_result;
typedef int cu_device;
typedef void *cu_context;
typedef void *cu_stream;
typedef void *cu_event;
typedef unsigned long long cu_ptr;

static struct {
	void *lib;
	cu_device dev;
	cu_context ctx;
	cu_result (*init)(unsigned);
	cu_result (*driver_version)(int *);
	cu_result (*device_get)(cu_device *, int);
	cu_result (*device_name)(char *, int, cu_device);
	cu_result (*device_mem)(size_t *, cu_device);
	cu_result (*ctx_retain)(cu_context *, cu_device);
	cu_result (*ctx_release)(cu_device);
	cu_result (*ctx_push)(cu_context);
	cu_result (*ctx_pop)(cu_context *);
	cu_result (*mem_alloc)(cu_ptr *, size_t);
	cu_result (*mem_free)(cu_ptr);
	cu_result (*memset32)(cu_ptr, unsigned, size_t);
	cu_result (*copy_async)(cu_ptr, cu_ptr, size_t, cu_stream);
	cu_result (*stream_create)(cu_stream *, unsigned);
	cu_result (*stream_destroy)(cu_stream);
	cu_result (*stream_sync)(cu_stream);
	cu_result (*event_create)(cu_event *, unsigned);
	cu_result (*event_destroy)(cu_event);
	cu_result (*event_record)(cu_event, cu_stream);
	cu_result (*event_sync)(cu_event);
	cu_result (*event_elapsed)(float *, cu_event, cu_event);
} cu;

/* First of @names that the library exports (versioned names first). */
static void *sym(const char *const *names)
{
	for (; *names; names++) {
		void *p = dlsym(cu.lib, *names);

		if (p)
			return p;
	}
	return NULL;
}

#define SYM(field, ...)                                                       \
	do {                                                                  \
		static const char *const n_[] = { __VA_ARGS__, NULL };        \
		*(void **)&cu.field = sym(n_);                                \
		if (!cu.field) {                                              \
			fprintf(stderr, "velo-bench-gpu: libcuda lacks %s\n", \
				n_[0]);                                       \
			return -ENOENT;                                       \
		}                                                             \
	} while (0)

static int load_syms(void)
{
	SYM(init, "cuInit");
	SYM(driver_version, "cuDriverGetVersion");
	SYM(device_get, "cuDeviceGet");
	SYM(device_name, "cuDeviceGetName");
	SYM(device_mem, "cuDeviceTotalMem_v2", "cuDeviceTotalMem");
	SYM(ctx_retain, "cuDevicePrimaryCtxRetain");
	SYM(ctx_release, "cuDevicePrimaryCtxRelease_v2", "cuDevicePrimaryCtxRelease");
	SYM(ctx_push, "cuCtxPushCurrent_v2", "cuCtxPushCurrent");
	SYM(ctx_pop, "cuCtxPopCurrent_v2", "cuCtxPopCurrent");
	SYM(mem_alloc, "cuMemAlloc_v2");
	SYM(mem_free, "cuMemFree_v2");
	SYM(memset32, "cuMemsetD32_v2");
	SYM(copy_async, "cuMemcpyDtoDAsync_v2");
	SYM(stream_create, "cuStreamCreate");
	SYM(stream_destroy, "cuStreamDestroy_v2", "cuStreamDestroy");
	SYM(stream_sync, "cuStreamSynchronize");
	SYM(event_create, "cuEventCreate");
	SYM(event_destroy, "cuEventDestroy_v2", "cuEventDestroy");
	SYM(event_record, "cuEventRecord");
	SYM(event_sync, "cuEventSynchronize");
	SYM(event_elapsed, "cuEventElapsedTime_v2", "cuEventElapsedTime");
	return 0;
}

#define CK(call)                                                              \
	do {                                                                  \
		cu_result r_ = (call);                                        \
		if (r_) {                                                     \
			fprintf(stderr, "velo-bench-gpu: %s: CUresult %d\n",  \
				#call, r_);                                   \
			rc = -EIO;                                            \
			goto out;                                             \
		}                                                             \
	} while (0)

int gb_cuda_open(int dev, char *name, size_t name_len, int *drv, uint64_t *mem)
{
	size_t bytes = 0;
	int rc = 0;

	if (!cu.lib) {
		cu.lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
		if (!cu.lib) {
			fprintf(stderr, "velo-bench-gpu: %s\n", dlerror());
			return -ENOENT;
		}
		rc = load_syms();
		if (rc) {
			dlclose(cu.lib);
			cu.lib = NULL;
			return rc;
		}
	}
	CK(cu.init(0));
	CK(cu.driver_version(drv));
	CK(cu.device_get(&cu.dev, dev));
	CK(cu.device_name(name, (int)name_len, cu.dev));
	CK(cu.device_mem(&bytes, cu.dev));
	*mem = bytes;
	if (!cu.ctx)
		CK(cu.ctx_retain(&cu.ctx, cu.dev));
	return 0;
out:
	return -ENODEV;
}

static int cmp_dbl(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static void bw_stats(double *bps, unsigned n, struct gb_bw *out)
{
	qsort(bps, n, sizeof(*bps), cmp_dbl);
	out->runs = n;
	out->worst_bps = bps[0];
	out->best_bps = bps[n - 1];
	out->median_bps = bps[n / 2];
}

int gb_cuda_copy_bw(uint64_t bytes, unsigned runs, struct gb_bw *out)
{
	cu_ptr a = 0, b = 0;
	cu_stream st = NULL;
	cu_event e0 = NULL, e1 = NULL;
	cu_context popped;
	double *bps;
	bool pushed = false;
	int rc = 0;

	memset(out, 0, sizeof(*out));
	if (!cu.ctx || !runs)
		return -EINVAL;
	bps = calloc(runs, sizeof(*bps));
	if (!bps)
		return -ENOMEM;
	CK(cu.ctx_push(cu.ctx));
	pushed = true;
	if (cu.mem_alloc(&a, bytes) || cu.mem_alloc(&b, bytes)) {
		fprintf(stderr, "velo-bench-gpu: copy bandwidth: 2 x %llu bytes do not fit\n",
			(unsigned long long)bytes);
		rc = -ENOMEM;
		goto out;
	}
	/* not zeros: a pattern, as real data */
	CK(cu.memset32(a, 0x3c1f5a97u, bytes / 4));
	CK(cu.memset32(b, 0x01020304u, bytes / 4));
	CK(cu.stream_create(&st, 0));
	CK(cu.event_create(&e0, 0));
	CK(cu.event_create(&e1, 0));
	for (unsigned r = 0; r <= runs; r++) {
		float ms = 0;

		CK(cu.event_record(e0, st));
		CK(cu.copy_async(r & 1 ? a : b, r & 1 ? b : a, bytes, st));
		CK(cu.event_record(e1, st));
		CK(cu.event_sync(e1));
		CK(cu.event_elapsed(&ms, e0, e1));
		if (r && ms > 0)	/* run 0 is the warm-up */
			bps[r - 1] = 2.0 * (double)bytes / (ms * 1e-3);
	}
	bw_stats(bps, runs, out);
	out->bytes = bytes;
	snprintf(out->method, sizeof(out->method),
		 "cuMemcpyDtoDAsync %llu MiB, CUDA events, median of %u",
		 (unsigned long long)(bytes >> 20), runs);
out:
	if (e0)
		cu.event_destroy(e0);
	if (e1)
		cu.event_destroy(e1);
	if (st)
		cu.stream_destroy(st);
	if (a)
		cu.mem_free(a);
	if (b)
		cu.mem_free(b);
	if (pushed)
		cu.ctx_pop(&popped);
	free(bps);
	return rc;
}

void gb_cuda_close(void)
{
	if (cu.ctx)
		cu.ctx_release(cu.dev);
	cu.ctx = NULL;
	/* the library stays mapped: the backend may still use it */
}

/* ---- CPU ------------------------------------------------------------------- */

struct cpu_bw_job {
	char *src, *dst;
	size_t off, len;
};

static void *cpu_bw_thread(void *arg)
{
	struct cpu_bw_job *j = arg;

	memcpy(j->dst + j->off, j->src + j->off, j->len);
	return NULL;
}

int gb_cpu_copy_bw(uint64_t bytes, unsigned threads, unsigned runs,
		   struct gb_bw *out)
{
	enum { T_MAX = 256 };
	struct cpu_bw_job job[T_MAX];
	pthread_t th[T_MAX];
	char *src, *dst;
	double *bps;
	size_t chunk;
	int rc = 0;

	memset(out, 0, sizeof(*out));
	if (!threads)
		threads = (unsigned)MAX(sysconf(_SC_NPROCESSORS_ONLN), 1L);
	threads = MIN(threads, (unsigned)T_MAX);
	if (!runs)
		return -EINVAL;
	chunk = ALIGN_UP((size_t)(bytes / threads), (size_t)4096);
	bytes = (uint64_t)chunk * threads;
	src = aligned_alloc(4096, bytes);
	dst = aligned_alloc(4096, bytes);
	bps = calloc(runs, sizeof(*bps));
	if (!src || !dst || !bps) {
		rc = -ENOMEM;
		goto out;
	}
	memset(src, 0x3c, bytes);
	memset(dst, 2, bytes);
	for (unsigned r = 0; r <= runs; r++) {
		uint64_t t0 = clock_mono_ns();
		unsigned started = 0;

		for (unsigned t = 0; t < threads; t++) {
			job[t] = (struct cpu_bw_job){ src, dst, chunk * t, chunk };
			if (pthread_create(&th[t], NULL, cpu_bw_thread, &job[t]))
				break;
			started++;
		}
		for (unsigned t = 0; t < started; t++)
			pthread_join(th[t], NULL);
		if (started != threads) {
			rc = -EAGAIN;
			goto out;
		}
		if (r)
			bps[r - 1] = 2.0 * (double)bytes /
				     ((clock_mono_ns() - t0) * 1e-9);
	}
	bw_stats(bps, runs, out);
	out->bytes = bytes;
	snprintf(out->method, sizeof(out->method),
		 "memcpy %llu MiB on %u threads, host clock, median of %u",
		 (unsigned long long)(bytes >> 20), threads, runs);
out:
	free(src);
	free(dst);
	free(bps);
	return rc;
}
