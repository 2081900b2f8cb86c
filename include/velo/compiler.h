/* SPDX-License-Identifier: MIT */
/*
 * velo/compiler.h — small compiler and configuration helpers shared by every
 * module: branch hints, IS_ENABLED() over the generated autoconf.h, ASSERT and
 * VERIFY, alignment.
 */
#ifndef VELO_COMPILER_H
#define VELO_COMPILER_H

#include <stddef.h>
#include <stdint.h>

#ifndef likely
#define likely(x)   __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#endif

#define VELO_CACHE_LINE 64
#define __cache_aligned __attribute__((aligned(VELO_CACHE_LINE)))
#define __packed        __attribute__((packed))
#define __unused        __attribute__((unused))
#define __must_check    __attribute__((warn_unused_result))

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define ALIGN_UP(x, a) (((x) + ((a) - 1)) & ~((__typeof__(x))(a) - 1))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

/*
 * IS_ENABLED(CONFIG_X): 1 when autoconf.h defines CONFIG_X to 1 (bool y),
 * else 0, usable in ordinary C expressions so that disabled code is still
 * parsed and type-checked.  A defined symbol expands to "1", which pastes to
 * the placeholder below and shifts a 1 into the second argument slot.
 */
#define VELO_PH_1 0,
#define velo_second_(ignored, val, ...) val
#define velo_is_set__(junk) velo_second_(junk 1, 0, 0)
#define velo_is_set_(val) velo_is_set__(VELO_PH_##val)
#define IS_ENABLED(option) velo_is_set_(option)

void velo_assert_fail(const char *expr, const char *file, int line,
		      const char *func) __attribute__((noreturn, cold));

/* Programmer errors in hot paths; compiled always, removed when disabled. */
#define ASSERT(x)                                                             \
	do {                                                                  \
		if (IS_ENABLED(CONFIG_DEBUG_ASSERT) && unlikely(!(x)))        \
			velo_assert_fail(#x, __FILE__, __LINE__, __func__);   \
	} while (0)

/* Contracts at module boundaries; always on. */
#define VERIFY(x)                                                             \
	do {                                                                  \
		if (unlikely(!(x)))                                           \
			velo_assert_fail(#x, __FILE__, __LINE__, __func__);   \
	} while (0)

#endif /* VELO_COMPILER_H */
