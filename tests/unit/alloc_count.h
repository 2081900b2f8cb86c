/* SPDX-License-Identifier: MIT */
/*
 * alloc_count.h — count heap allocations made while a flag is up, to
 * assert that hot paths allocate nothing.  Include it in exactly one file
 * of a test program: it interposes malloc, calloc, realloc,
 * posix_memalign, aligned_alloc and memalign (glibc exports the __libc_*
 * originals), so allocations from any thread and any library are seen.
 * Under ASan (CONFIG_DEBUG_SANITIZE) the sanitizer owns malloc: counting is
 * off and alloc_count_supported() says so.
 */
#ifndef VELO_TEST_ALLOC_COUNT_H
#define VELO_TEST_ALLOC_COUNT_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>

static int alloc_count_on;
static unsigned long alloc_count_n;

static inline void alloc_count_start(void)
{
	__atomic_store_n(&alloc_count_n, 0, __ATOMIC_SEQ_CST);
	__atomic_store_n(&alloc_count_on, 1, __ATOMIC_SEQ_CST);
}

/* Stop counting; return the allocations seen since alloc_count_start. */
static inline unsigned long alloc_count_stop(void)
{
	__atomic_store_n(&alloc_count_on, 0, __ATOMIC_SEQ_CST);
	return __atomic_load_n(&alloc_count_n, __ATOMIC_SEQ_CST);
}

#ifndef CONFIG_DEBUG_SANITIZE
static inline bool alloc_count_supported(void)
{
	return true;
}

void *__libc_malloc(size_t n);
void *__libc_calloc(size_t n, size_t m);
void *__libc_realloc(void *p, size_t n);
void *__libc_memalign(size_t a, size_t n);

static inline void alloc_count_hit(void)
{
	if (__atomic_load_n(&alloc_count_on, __ATOMIC_RELAXED))
		__atomic_fetch_add(&alloc_count_n, 1, __ATOMIC_RELAXED);
}

void *malloc(size_t n);
void *malloc(size_t n)
{
	alloc_count_hit();
	return __libc_malloc(n);
}

void *calloc(size_t n, size_t m);
void *calloc(size_t n, size_t m)
{
	alloc_count_hit();
	return __libc_calloc(n, m);
}

void *realloc(void *p, size_t n);
void *realloc(void *p, size_t n)
{
	alloc_count_hit();
	return __libc_realloc(p, n);
}

void *memalign(size_t a, size_t n);
void *memalign(size_t a, size_t n)
{
	alloc_count_hit();
	return __libc_memalign(a, n);
}

void *aligned_alloc(size_t a, size_t n);
void *aligned_alloc(size_t a, size_t n)
{
	alloc_count_hit();
	return __libc_memalign(a, n);
}

int posix_memalign(void **pp, size_t a, size_t n);
int posix_memalign(void **pp, size_t a, size_t n)
{
	void *p;

	alloc_count_hit();
	if (!a || (a & (a - 1)) || a % sizeof(void *))
		return EINVAL;
	p = __libc_memalign(a, n);
	if (!p)
		return ENOMEM;
	*pp = p;
	return 0;
}
#else
static inline bool alloc_count_supported(void)
{
	return false;
}
#endif

#endif
