// SPDX-License-Identifier: MIT
/*
 * test_cuda_host.c — the CUDA backend on a machine without a GPU (CI, the
 * development VM, the QEMU image): init fails cleanly with -ENODEV and
 * leaves nothing behind, whether the driver library is missing (forced
 * here with VELO_CUDA_DRIVER pointing at no file) or present without a
 * device; the kernels' fatbin is embedded in the library (nvcc's fatbin
 * magic, the entry points' names, a plausible size).  The GPU itself is
 * tested by velo-test-cuda (make check-gpu).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../engine/backend.h"

extern const unsigned char eng_cuda_fatbin[];
extern const unsigned char eng_cuda_fatbin_end[];

static void test_no_driver(void **st)
{
	struct eng_backend *be = (struct eng_backend *)(uintptr_t)0x1;

	(void)st;
	setenv("VELO_CUDA_DRIVER", "/nonexistent/libcuda.so.1", 1);
	assert_int_equal(eng_cuda_ops.init(NULL, &be), -ENODEV);
	assert_ptr_equal(be, (struct eng_backend *)(uintptr_t)0x1);	/* untouched */
	/* a driver library without the entry points is no driver either */
	setenv("VELO_CUDA_DRIVER", "libm.so.6", 1);
	assert_int_equal(eng_cuda_ops.init(NULL, &be), -ENODEV);
	unsetenv("VELO_CUDA_DRIVER");
}

static void test_default_driver(void **st)
{
	struct eng_backend_budget b = { 0 };
	struct eng_backend *be = NULL;
	const char *why = NULL;
	int rc;

	(void)st;
	rc = eng_cuda_ops.init(&b, &be);
	if (rc == 0) {
		/* a GPU machine: the backend is up and healthy */
		assert_int_equal(eng_cuda_ops.health(be, &why), 0);
		eng_cuda_ops.fini(be);
		return;
	}
	assert_int_equal(rc, -ENODEV);
	b.device = -1;
	assert_int_equal(eng_cuda_ops.init(&b, &be), -EINVAL);
}

static void test_fatbin_embedded(void **st)
{
	size_t n = (size_t)(eng_cuda_fatbin_end - eng_cuda_fatbin);
	static const char *const names[] = { "k_mv_fp8_1", "k_mv_int4_8", "k_mm_bf16",
					     "k_attn_bf16", "k_rope_store", "k_argmax" };

	(void)st;
	assert_true(n > 64 * 1024 && n < 64 * 1024 * 1024);
	/* nvcc fatbin header: magic 0xBA55ED50, little endian */
	assert_int_equal(eng_cuda_fatbin[0], 0x50);
	assert_int_equal(eng_cuda_fatbin[1], 0xed);
	assert_int_equal(eng_cuda_fatbin[2], 0x55);
	assert_int_equal(eng_cuda_fatbin[3], 0xba);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		assert_non_null(memmem(eng_cuda_fatbin, n, names[i], strlen(names[i])));
	assert_string_equal(eng_cuda_ops.name, "cuda");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_no_driver),
		cmocka_unit_test(test_default_driver),
		cmocka_unit_test(test_fatbin_embedded),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
