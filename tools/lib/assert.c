// SPDX-License-Identifier: MIT
#include <stdio.h>
#include <stdlib.h>

#include <velo/compiler.h>

void velo_assert_fail(const char *expr, const char *file, int line,
		      const char *func)
{
	fprintf(stderr, "velo: assertion failed: %s (%s:%d, %s)\n", expr, file,
		line, func);
	abort();
}
