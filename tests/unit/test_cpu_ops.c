// SPDX-License-Identifier: MIT
/*
 * test_cpu_ops.c — the CPU backend's kernels, one op at a time, against
 * naive double-precision references on fresh random inputs (never zeros),
 * for every kernel table the machine supports (generic, AVX2, AVX-512),
 * and the SIMD tables against the generic one.
 *
 * Tolerances (stated, checked):
 *   matrix products: |y - ref| <= 1e-5 * sum_k |w_k x_k| per output (float32
 *     accumulation in 8 or 16 lanes; measured worst about 1e-7 relative);
 *   SIMD vs generic: the same bound, 2e-5;
 *   mv route vs tile route within one table: bit-identical (batch
 *     invariance, the contract of kern.h);
 *   dequantisation: exact (every FP8 byte, INT4 nibble, BF16/F16 value);
 *   dot, axpy: 1e-6 * sum |a_i b_i|.
 * The pool: every worker runs every job exactly once, also after sleeping
 * on the futex.
 */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../engine/core/image.h"
#include "../../engine/cpu/kern.h"
#include "../../engine/cpu/pool.h"
#include "../../engine/cpu/synth.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static float frand(float a)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return ((float)(rng >> 40) * 0x1.0p-24f * 2.0f - 1.0f) * a;
}

/* Random non-zero activations. */
static void fill(float *x, size_t n, float a)
{
	for (size_t i = 0; i < n; i++) {
		float v = frand(a);

		x[i] = v != 0.0f ? v : a * 0.5f;
	}
}

static const struct cpu_kern *tables[3];
static unsigned n_tables;

static int setup(void **st)
{
	const enum eng_cpu_isa isas[] = { ENG_CPU_ISA_GENERIC, ENG_CPU_ISA_AVX2,
					  ENG_CPU_ISA_AVX512 };

	(void)st;
	for (unsigned i = 0; i < 3; i++) {
		const struct cpu_kern *k = cpu_kern_get(isas[i]);

		if (k)
			tables[n_tables++] = k;
		else
			printf("# %s kernels not supported here: skipped\n",
			       i == 1 ? "avx2" : "avx512");
	}
	return 0;
}

/* One random weight matrix, quantised as velo-convert does. */
static struct eng_tensor mk_w(struct eng_synth *s, enum eng_dtype dt,
			      uint32_t rows, uint32_t cols, uint64_t seed)
{
	struct eng_tensor t;

	memset(s, 0, sizeof(*s));
	assert_int_equal(eng_synth_matrix(s, &t, dt, rows, cols, seed), 0);
	return t;
}

/* y = W x with the table's routes, x given naturally; handles the INT4
 * permutation as the forward pass does. */
static void mm(const struct cpu_kern *k, const struct eng_tensor *w,
	       const float *x, uint32_t nt, float *y, uint32_t r0, uint32_t r1)
{
	uint32_t K = w->cols;
	float *xp = malloc((size_t)nt * K * 4 + 64);
	float *tile = malloc(cpu_tile_floats(K) * 4);

	if (k->x_perm)
		for (uint32_t t = 0; t < nt; t++)
			if (w->dtype == ENG_DT_INT4_G128)
				k->x_perm(x + (size_t)t * K, xp + (size_t)t * K, K);
	cpu_mm_rows(k, w, x, K, xp, K, nt, y, w->rows, r0, r1, tile);
	free(xp);
	free(tile);
}

static void check_matmul_case(enum eng_dtype dt, uint32_t rows, uint32_t cols,
			      uint32_t nt)
{
	struct eng_synth s;
	struct eng_tensor w = mk_w(&s, dt, rows, cols, rows * 31 + cols + nt);
	float *x = malloc((size_t)nt * cols * 4);
	float *y = malloc((size_t)nt * rows * 4);
	float *yg = malloc((size_t)nt * rows * 4);
	double *ref = malloc((size_t)nt * rows * 8), *mag = malloc((size_t)nt * rows * 8);
	double worst = 0.0;

	fill(x, (size_t)nt * cols, 2.0f);
	for (uint32_t t = 0; t < nt; t++)
		for (uint32_t r = 0; r < rows; r++) {
			double acc = 0.0, m = 0.0;

			for (uint32_t kk = 0; kk < cols; kk++) {
				double p = (double)cpu_weight_at(&w, r, kk) *
					   x[(size_t)t * cols + kk];

				acc += p;
				m += fabs(p);
			}
			ref[(size_t)t * rows + r] = acc;
			mag[(size_t)t * rows + r] = m;
		}
	for (unsigned ti = 0; ti < n_tables; ti++) {
		const struct cpu_kern *k = tables[ti];

		memset(y, 0xff, (size_t)nt * rows * 4);
		/* in two row ranges, as two workers would */
		mm(k, &w, x, nt, y, 0, rows / 3);
		mm(k, &w, x, nt, y, rows / 3, rows);
		for (size_t i = 0; i < (size_t)nt * rows; i++) {
			double e = fabs(y[i] - ref[i]);

			if (!(e <= 1e-5 * mag[i] + 1e-30))
				fail_msg("%s dtype %d %ux%u nt %u [%zu]: %g vs %g (tol %g)",
					 k->name, dt, rows, cols, nt, i, y[i],
					 ref[i], 1e-5 * mag[i]);
			if (mag[i] > 0.0)
				worst = fmax(worst, e / mag[i]);
		}
		if (ti == 0) {
			memcpy(yg, y, (size_t)nt * rows * 4);
		} else {
			for (size_t i = 0; i < (size_t)nt * rows; i++)
				if (!(fabs(y[i] - yg[i]) <= 2e-5 * mag[i] + 1e-30))
					fail_msg("%s vs generic, dtype %d: %g vs %g",
						 k->name, dt, y[i], yg[i]);
		}
		/* batch invariance: each token alone gives the same bits */
		for (uint32_t t = 0; t < nt; t += 3) {
			float *y1 = malloc((size_t)rows * 4);

			mm(k, &w, x + (size_t)t * cols, 1, y1, 0, rows);
			if (memcmp(y1, y + (size_t)t * rows, (size_t)rows * 4))
				fail_msg("%s dtype %d nt %u: token %u alone differs",
					 k->name, dt, nt, t);
			free(y1);
		}
	}
	if (worst > 2e-7)
		printf("# dtype %d %ux%u nt %u: worst relative error %.2e\n", dt,
		       rows, cols, nt, worst);
	free(x);
	free(y);
	free(yg);
	free(ref);
	free(mag);
	eng_synth_free(&s);
}

static void test_matmul(void **st)
{
	const enum eng_dtype dts[] = { ENG_DT_F32, ENG_DT_BF16, ENG_DT_F16,
				       ENG_DT_FP8_E4M3, ENG_DT_INT4_G128 };
	const uint32_t nts[] = { 1, 2, 3, 4, 5, 9, 17 };

	(void)st;
	for (unsigned d = 0; d < sizeof(dts) / sizeof(dts[0]); d++)
		for (unsigned n = 0; n < sizeof(nts) / sizeof(nts[0]); n++) {
			bool q4 = dts[d] == ENG_DT_INT4_G128;

			/* odd row counts; input dims with and without tails */
			check_matmul_case(dts[d], 37, q4 ? 256 : 200, nts[n]);
			check_matmul_case(dts[d], 21, q4 ? 384 : 77, nts[n]);
		}
	/* one larger shape, decode and prefill */
	check_matmul_case(ENG_DT_BF16, 96, 1024, 1);
	check_matmul_case(ENG_DT_INT4_G128, 96, 1024, 8);
	check_matmul_case(ENG_DT_FP8_E4M3, 96, 1024, 6);
}

/* Every table's dequant gives exactly the values cpu_weight_at names. */
static void test_dequant_exact(void **st)
{
	const enum eng_dtype dts[] = { ENG_DT_BF16, ENG_DT_F16, ENG_DT_FP8_E4M3,
				       ENG_DT_INT4_G128 };
	uint8_t fp8[256];
	float sc1 = 1.0f;

	(void)st;
	for (unsigned d = 0; d < 4; d++) {
		struct eng_synth s;
		struct eng_tensor w = mk_w(&s, dts[d], 5, 256, d);

		for (unsigned ti = 0; ti < n_tables; ti++) {
			const struct cpu_kern *k = tables[ti];
			float tile[5 * 256], post[5];

			if (!k->dequant)
				continue;
			k->dequant(&w, 0, 5, tile, post);
			for (uint32_t r = 0; r < 5; r++)
				for (uint32_t c = 0; c < 256; c++) {
					uint32_t src = c;
					uint32_t b = k->x_perm_block, j = c % b;

					/* the tile holds INT4 in permuted order */
					if (dts[d] == ENG_DT_INT4_G128)
						src = c - j + (j < b / 2 ? 2 * j : 2 * (j - b / 2) + 1);
					assert_true(tile[r * 256 + c] * post[r] ==
						    cpu_weight_at(&w, r, src));
				}
		}
		eng_synth_free(&s);
	}
	/* all 256 FP8 bytes (but NaN), scale 1 */
	for (int i = 0; i < 256; i++)
		fp8[i] = (i & 0x7f) == 0x7f ? 0x7e : (uint8_t)i;
	{
		struct eng_tensor w = { ENG_DT_FP8_E4M3, 1, 256, fp8, &sc1 };

		for (unsigned ti = 0; ti < n_tables; ti++) {
			float tile[256], post[1];

			if (!tables[ti]->dequant)
				continue;
			tables[ti]->dequant(&w, 0, 1, tile, post);
			for (int i = 0; i < 256; i++)
				assert_true(tile[i] * post[0] ==
					    eng_fp8_e4m3_to_f32(fp8[i]));
		}
	}
}

/* Our scalar decoders against the image module's (written independently). */
static void test_scalar_decoders(void **st)
{
	(void)st;
	for (uint32_t h = 0; h < 65536; h++) {
		float a = cpu_f16_to_f32((uint16_t)h), b = eng_f16_to_f32((uint16_t)h);

		if (isnan(a) || isnan(b))
			assert_true(isnan(a) && isnan(b));
		else
			assert_memory_equal(&a, &b, 4);
		a = cpu_bf16_to_f32((uint16_t)h);
		b = eng_bf16_to_f32((uint16_t)h);
		assert_memory_equal(&a, &b, 4);
	}
	for (int i = 0; i < 256; i++) {
		float a = cpu_fp8_e4m3_lut[i], b = eng_fp8_e4m3_to_f32((uint8_t)i);

		if (isnan(a) || isnan(b))
			assert_true(isnan(a) && isnan(b));
		else
			assert_memory_equal(&a, &b, 4);
	}
	assert_true(cpu_fp8_e4m3_lut[0x7e] == 448.0f);
	assert_true(cpu_fp8_e4m3_lut[0x01] == 0x1p-9f);
}

static void test_dot_axpy(void **st)
{
	const uint32_t ns[] = { 1, 7, 8, 31, 64, 80, 128, 257 };

	(void)st;
	for (unsigned ti = 0; ti < n_tables; ti++)
		for (unsigned i = 0; i < sizeof(ns) / sizeof(ns[0]); i++) {
			uint32_t n = ns[i];
			float a[300], b[300], y[300], y0[300], al = frand(1.5f);
			double ref = 0.0, mag = 0.0;

			fill(a, n, 3.0f);
			fill(b, n, 3.0f);
			fill(y, n, 1.0f);
			memcpy(y0, y, sizeof(y));
			for (uint32_t j = 0; j < n; j++) {
				ref += (double)a[j] * b[j];
				mag += fabs((double)a[j] * b[j]);
			}
			assert_true(fabs(tables[ti]->dot(a, b, n) - ref) <= 1e-6 * mag);
			tables[ti]->axpy(al, a, y, n);
			for (uint32_t j = 0; j < n; j++) {
				double r = y0[j] + (double)al * a[j];

				assert_true(fabs(y[j] - r) <=
					    1e-6 * (fabs(y0[j]) + fabs(al * a[j])));
			}
		}
}

/* ---- the worker pool ---------------------------------------------------- */

struct pool_probe {
	uint32_t hits[8];
	uint32_t seen_nw;
};

static void probe_job(void *arg, uint32_t wid, uint32_t nw)
{
	struct pool_probe *p = arg;

	__atomic_fetch_add(&p->hits[wid], 1, __ATOMIC_RELAXED);
	p->seen_nw = nw;
}

static void test_pool(void **st)
{
	struct pool_probe pr = { 0 };
	struct cpu_pool *p;
	const int cores[3] = { -1, 0, -1 };

	(void)st;
	p = cpu_pool_create(3, cores, 50);
	assert_non_null(p);
	for (int i = 0; i < 2000; i++)
		cpu_pool_run(p, probe_job, &pr);
	for (int w = 0; w < 3; w++)
		assert_int_equal(pr.hits[w], 2000);
	assert_int_equal(pr.seen_nw, 3);
	/* idle past the spin window: workers sleep, the next run wakes them */
	for (int i = 0; i < 5; i++) {
		usleep(2000);
		cpu_pool_run(p, probe_job, &pr);
	}
	for (int w = 0; w < 3; w++)
		assert_int_equal(pr.hits[w], 2005);
	cpu_pool_destroy(p);

	/* a core that does not exist */
	{
		const int bad[2] = { -1, 4096 };

		errno = 0;
		assert_null(cpu_pool_create(2, bad, 0));
		assert_int_equal(errno, EINVAL);
	}
	/* one worker: the caller alone */
	p = cpu_pool_create(1, NULL, 0);
	assert_non_null(p);
	cpu_pool_run(p, probe_job, &pr);
	assert_int_equal(pr.hits[0], 2006);
	cpu_pool_destroy(p);
}

static void test_split(void **st)
{
	(void)st;
	for (uint32_t n = 0; n < 200; n += 7)
		for (uint32_t nw = 1; nw <= 5; nw++) {
			uint32_t prev = 0;

			for (uint32_t w = 0; w < nw; w++) {
				uint32_t lo, hi;

				cpu_split(n, 8, w, nw, &lo, &hi);
				assert_int_equal(lo, prev);
				assert_true(hi >= lo && hi <= n);
				assert_true(lo % 8 == 0 || lo == n);
				prev = hi;
			}
			assert_int_equal(prev, n);
		}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_scalar_decoders),
		cmocka_unit_test(test_dequant_exact),
		cmocka_unit_test(test_matmul),
		cmocka_unit_test(test_dot_axpy),
		cmocka_unit_test(test_pool),
		cmocka_unit_test(test_split),
	};

	return cmocka_run_group_tests(tests, setup, NULL);
}
