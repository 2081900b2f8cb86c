/* SPDX-License-Identifier: MIT */
/*
 * cudrv.h — the few CUDA driver API calls velo-bench-gpu makes itself, with
 * libcuda.so.1 opened at run time (dlopen, as the CUDA backend does: the
 * program builds and runs its CPU half on machines without a driver).
 *
 * What for: the device name for the record, and the copy-bandwidth ceiling
 * of the card measured in the same run (PERFORMANCE.md: a speed is a ratio
 * to something measured alongside).  The copy runs in the device's primary
 * context — the one the CUDA backend uses — pushed for the measurement and
 * popped after, so the backend's current context is left as it was.
 */
#ifndef VELO_BENCH_GPU_CUDRV_H
#define VELO_BENCH_GPU_CUDRV_H

#include <stddef.h>
#include <stdint.h>

/* One copy-bandwidth measurement: bytes read + written per second. */
struct gb_bw {
	double median_bps;
	double best_bps;
	double worst_bps;
	unsigned runs;			/* timed copies (after one warm-up) */
	uint64_t bytes;			/* size of one buffer */
	char method[96];		/* how it was measured, for the record */
};

/*
 * gb_cuda_open() - dlopen libcuda.so.1, cuInit, look up device @dev.
 * @name:    out, the device name (cuDeviceGetName)
 * @drv:     out, cuDriverGetVersion (e.g. 13000)
 * @mem:     out, device memory in bytes (cuDeviceTotalMem)
 * Return: 0; -ENOENT (no libcuda or a missing symbol), -ENODEV (cuInit or
 * the device failed; the CUresult is logged to stderr).
 */
int gb_cuda_open(int dev, char *name, size_t name_len, int *drv,
		 uint64_t *mem);

/*
 * gb_cuda_copy_bw() - device-to-device cuMemcpyDtoDAsync of @bytes between
 * two buffers of the device opened above, timed with CUDA events: one
 * warm-up, then @runs copies each timed alone.
 * Return: 0; -ENOMEM (the buffers did not fit), -EIO (a driver call failed).
 */
int gb_cuda_copy_bw(uint64_t bytes, unsigned runs, struct gb_bw *out);

/* gb_cuda_close() - release the primary context reference taken by open. */
void gb_cuda_close(void);

/*
 * gb_cpu_copy_bw() - the CPU backend's ceiling: memcpy of @bytes between
 * two buffers split over @threads threads (0: online cores), host clock
 * around the joined threads; one warm-up, @runs timed.
 * Return: 0 or -ENOMEM, -EAGAIN.
 */
int gb_cpu_copy_bw(uint64_t bytes, unsigned threads, unsigned runs,
		   struct gb_bw *out);

#endif
