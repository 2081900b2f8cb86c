/* SPDX-License-Identifier: MIT */
/*
 * pool.h — the CPU backend's worker pool (private).  Threads are created
 * and pinned once, at backend init; a step hands them jobs with
 * cpu_pool_run(), which returns when every worker has finished its share.
 * Worker 0 is the calling thread, so a 2-thread pool on a 2-core machine
 * uses both cores without a third thread waiting.
 *
 * Hand-off: the caller bumps a generation counter; workers spin on it for
 * spin_us (pause loop) and then sleep on a futex; the caller wakes sleepers
 * only when there are any.  Within a step jobs follow each other within
 * microseconds, so the futex path is taken only after an idle gap.
 * Measured (velo-bench-engine, 2-core development VM): an empty job's round
 * trip is 0.4-0.5 us (median) while the workers spin.
 */
#ifndef VELO_ENG_CPU_POOL_H
#define VELO_ENG_CPU_POOL_H

#include <pthread.h>
#include <stdint.h>

#include <velo/compiler.h>

/* A job: worker @wid of @nw does its share of @arg. */
typedef void (*cpu_job_fn)(void *arg, uint32_t wid, uint32_t nw);

struct cpu_pool {
	uint32_t n;			/* workers including the caller */
	uint32_t spin_ns;
	/* Written by the caller before a run, read by the workers after they
	 * observe the new generation (release / acquire on gen). */
	cpu_job_fn fn;
	void *arg;
	uint32_t gen __cache_aligned;	/* job generation (futex word) */
	uint32_t sleepers;		/* workers in futex_wait */
	uint32_t stop;
	uint32_t done __cache_aligned;	/* workers (other than 0) finished */
	uint32_t n_started;
	pthread_t th[];			/* [n]; th[0] unused */
};

/*
 * cpu_pool_create() - start n - 1 worker threads, worker i pinned to
 * cores[i] (-1: unpinned; cores NULL: i % online cores).
 * Return: the pool, or NULL with errno (EINVAL bad core, EAGAIN, ENOMEM).
 */
struct cpu_pool *cpu_pool_create(uint32_t n, const int *cores,
				 uint32_t spin_us);
void cpu_pool_destroy(struct cpu_pool *p);

/* Run @fn on every worker (the caller is worker 0); returns when all are
 * done.  Allocates nothing.  Not reentrant. */
void cpu_pool_run(struct cpu_pool *p, cpu_job_fn fn, void *arg);

/* Share of [0, n) for worker @wid of @nw, in units of @align. */
static inline void cpu_split(uint32_t n, uint32_t align, uint32_t wid,
			     uint32_t nw, uint32_t *lo, uint32_t *hi)
{
	uint32_t units = (n + align - 1) / align;
	uint32_t a = (uint32_t)((uint64_t)units * wid / nw) * align;
	uint32_t b = (uint32_t)((uint64_t)units * (wid + 1) / nw) * align;

	*lo = MIN(a, n);
	*hi = MIN(b, n);
}

#endif
