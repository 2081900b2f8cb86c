// SPDX-License-Identifier: MIT
/*
 * sched_backend.c — runs the scheduler's own unit tests (tests/unit/
 * test_sched.c, test_sched_swap.c: serving path, admission, batching,
 * preemption, prefix cache, hot swap with a loader thread) on another
 * backend without touching them: the GPU test binaries are linked with
 * -Wl,--wrap=eng_sched_model_load,--wrap=eng_sched_slot_load and these
 * wrappers replace the model configuration's backend by $VELO_TEST_BACKEND
 * (default "cuda") before the real loader sees it, and the device index
 * by $VELO_TEST_DEVICE when set (test_sched_swap alternates devices 0 and
 * 1; on a one-GPU machine both versions then share device 0, which is the
 * case to test: a load and self-test on the loader thread while the
 * scheduler steps the old version on the same device).
 */
#include <stdlib.h>

#include "../../engine/sched.h"

int __real_eng_sched_model_load(struct eng_sched *s,
				const struct eng_sched_model_config *mc, char *err,
				size_t errlen);
int __wrap_eng_sched_model_load(struct eng_sched *s,
				const struct eng_sched_model_config *mc, char *err,
				size_t errlen);
int __real_eng_sched_slot_load(struct eng_sched *s,
			       const struct eng_sched_model_config *mc,
			       struct eng_sched_model **out, char *err, size_t errlen);
int __wrap_eng_sched_slot_load(struct eng_sched *s,
			       const struct eng_sched_model_config *mc,
			       struct eng_sched_model **out, char *err, size_t errlen);

static void test_config(struct eng_sched_model_config *c)
{
	const char *b = getenv("VELO_TEST_BACKEND"), *d = getenv("VELO_TEST_DEVICE");

	c->backend = b && *b ? b : "cuda";
	/* the tests read it too (batch invariance is the CPU backend's) */
	setenv("VELO_TEST_BACKEND", c->backend, 0);
	if (d && *d)
		c->device = (uint32_t)strtoul(d, NULL, 10);
}

int __wrap_eng_sched_model_load(struct eng_sched *s,
				const struct eng_sched_model_config *mc, char *err,
				size_t errlen)
{
	struct eng_sched_model_config c = *mc;

	test_config(&c);
	return __real_eng_sched_model_load(s, &c, err, errlen);
}

int __wrap_eng_sched_slot_load(struct eng_sched *s,
			       const struct eng_sched_model_config *mc,
			       struct eng_sched_model **out, char *err, size_t errlen)
{
	struct eng_sched_model_config c = *mc;

	test_config(&c);
	return __real_eng_sched_slot_load(s, &c, out, err, errlen);
}
