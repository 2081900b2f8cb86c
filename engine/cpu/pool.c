// SPDX-License-Identifier: MIT
/*
 * pool.c — pinned worker threads and the spin-then-futex job hand-off.
 * See pool.h.
 */
#include <errno.h>
#include <linux/futex.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "../../tools/lib/clock.h"
#include "../../tools/lib/cpu.h"
#include "../../tools/lib/log.h"
#include "pool.h"

struct worker_arg {
	struct cpu_pool *p;
	uint32_t wid;
	int core;
};

static long futex(uint32_t *addr, int op, uint32_t val)
{
	return syscall(SYS_futex, addr, op, val, NULL, NULL, 0);
}

/* Wait until p->gen != seen: spin first, then sleep. */
static uint32_t wait_gen(struct cpu_pool *p, uint32_t seen)
{
	uint64_t t0 = 0;
	uint32_t g;

	for (uint32_t i = 0;; i++) {
		g = __atomic_load_n(&p->gen, __ATOMIC_ACQUIRE);
		if (g != seen)
			return g;
		cpu_relax();
		if ((i & 255) != 255)
			continue;
		if (!t0) {
			t0 = clock_mono_ns();
			continue;
		}
		if (clock_mono_ns() - t0 < p->spin_ns)
			continue;
		/* Sleep.  The caller bumps gen before it reads sleepers (both
		 * seq_cst), so either it sees us here or the kernel sees the
		 * new gen and returns at once: no lost wake-up. */
		__atomic_fetch_add(&p->sleepers, 1, __ATOMIC_SEQ_CST);
		futex(&p->gen, FUTEX_WAIT_PRIVATE, seen);
		__atomic_fetch_sub(&p->sleepers, 1, __ATOMIC_SEQ_CST);
		t0 = 0;
	}
}

static void *worker_main(void *argp)
{
	struct worker_arg a = *(struct worker_arg *)argp;
	struct cpu_pool *p = a.p;
	uint32_t seen = 0;

	free(argp);
	if (a.core >= 0 && cpu_pin_self(a.core))
		LOG_W(eng, "cpu worker %u: cannot pin to core %d", a.wid, a.core);
	for (;;) {
		seen = wait_gen(p, seen);
		if (__atomic_load_n(&p->stop, __ATOMIC_ACQUIRE))
			return NULL;
		p->fn(p->arg, a.wid, p->n);
		__atomic_fetch_add(&p->done, 1, __ATOMIC_RELEASE);
	}
}

static void pool_stop(struct cpu_pool *p)
{
	__atomic_store_n(&p->stop, 1, __ATOMIC_RELEASE);
	__atomic_fetch_add(&p->gen, 1, __ATOMIC_SEQ_CST);
	futex(&p->gen, FUTEX_WAKE_PRIVATE, INT32_MAX);
	for (uint32_t i = 1; i < p->n_started; i++)
		pthread_join(p->th[i], NULL);
}

struct cpu_pool *cpu_pool_create(uint32_t n, const int *cores, uint32_t spin_us)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	struct cpu_pool *p;
	int rc;

	if (!n || ncpu < 1) {
		errno = EINVAL;
		return NULL;
	}
	for (uint32_t i = 1; cores && i < n; i++)
		if (cores[i] >= ncpu || cores[i] < -1) {
			LOG_E(eng, "cpu worker %u: core %d does not exist", i,
			      cores[i]);
			errno = EINVAL;
			return NULL;
		}
	if (posix_memalign((void **)&p, VELO_CACHE_LINE,
			   sizeof(*p) + n * sizeof(pthread_t))) {
		errno = ENOMEM;
		return NULL;
	}
	memset(p, 0, sizeof(*p) + n * sizeof(pthread_t));
	p->n = n;
	p->spin_ns = (spin_us ? spin_us : 200) * 1000u;
	p->n_started = 1;
	for (uint32_t i = 1; i < n; i++) {
		struct worker_arg *a = malloc(sizeof(*a));

		if (!a) {
			rc = ENOMEM;
			goto err_stop;
		}
		*a = (struct worker_arg){ p, i, cores ? cores[i] : (int)(i % ncpu) };
		rc = pthread_create(&p->th[i], NULL, worker_main, a);
		if (rc) {
			free(a);
			goto err_stop;
		}
		p->n_started++;
	}
	return p;

err_stop:
	pool_stop(p);
	free(p);
	errno = rc;
	return NULL;
}

void cpu_pool_destroy(struct cpu_pool *p)
{
	if (!p)
		return;
	pool_stop(p);
	free(p);
}

void cpu_pool_run(struct cpu_pool *p, cpu_job_fn fn, void *arg)
{
	uint32_t want = p->n - 1;

	if (!want) {
		fn(arg, 0, 1);
		return;
	}
	p->fn = fn;
	p->arg = arg;
	__atomic_store_n(&p->done, 0, __ATOMIC_RELAXED);
	__atomic_fetch_add(&p->gen, 1, __ATOMIC_SEQ_CST);
	if (__atomic_load_n(&p->sleepers, __ATOMIC_SEQ_CST))
		futex(&p->gen, FUTEX_WAKE_PRIVATE, INT32_MAX);
	fn(arg, 0, p->n);
	/* A late worker on a pinned, isolated core is a few microseconds
	 * away; on an oversubscribed machine (tests, 2-core laptops) it may
	 * need this core, so give it up now and then. */
	for (uint32_t i = 1; __atomic_load_n(&p->done, __ATOMIC_ACQUIRE) != want; i++) {
		cpu_relax();
		if (!(i & 1023))
			sched_yield();
	}
}
