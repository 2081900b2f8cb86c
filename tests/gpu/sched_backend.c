// SPDX-License-Identifier: MIT
/*
 * sched_backend.c — runs the scheduler's own unit tests (tests/unit/
 * test_sched.c, test_sched_swap.c: serving path, admission, batching,
 * preemption, prefix cache, hot swap with a loader thread) on another
 * backend without touching them: the GPU test binaries are linked with
 * -Wl,--wrap=eng_sched_model_load,--wrap=eng_sched_slot_load and these
 * wrappers replace the model configuration's backend by $VELO_TEST_BACKEND
 * (default "cuda") before the real loader sees it.
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

static const char *test_backend(void)
{
	const char *b = getenv("VELO_TEST_BACKEND");

	return b && *b ? b : "cuda";
}

int __wrap_eng_sched_model_load(struct eng_sched *s,
				const struct eng_sched_model_config *mc, char *err,
				size_t errlen)
{
	struct eng_sched_model_config c = *mc;

	c.backend = test_backend();
	return __real_eng_sched_model_load(s, &c, err, errlen);
}

int __wrap_eng_sched_slot_load(struct eng_sched *s,
			       const struct eng_sched_model_config *mc,
			       struct eng_sched_model **out, char *err, size_t errlen)
{
	struct eng_sched_model_config c = *mc;

	c.backend = test_backend();
	return __real_eng_sched_slot_load(s, &c, out, err, errlen);
}
