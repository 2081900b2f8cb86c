// SPDX-License-Identifier: MIT
/*
 * ring.c — the request slot pool and the two rings between the dataplane
 * and the scheduler (see ring.h for the ownership rules).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "ring.h"

static unsigned pow2_at_least(unsigned x)
{
	unsigned p = 1;

	while (p < x && p < (1u << 30))
		p <<= 1;
	return p;
}

int dp_rings_init(struct dp_rings *r, const struct dp_rings_config *cfg)
{
	unsigned req_entries;
	size_t per_slot_arena;
	int rc = -ENOMEM;

	memset(r, 0, sizeof(*r));
	if (!cfg->slots || cfg->slots > (1u << 20) || !cfg->prompt_tokens_max ||
	    !cfg->text_bytes_max || cfg->resp_entries < 2 ||
	    (cfg->resp_entries & (cfg->resp_entries - 1)))
		return -EINVAL;

	/* One INFER and one CANCEL per slot at most, plus ck's empty entry:
	 * the dataplane's enqueue never fails. */
	req_entries = pow2_at_least(2 * cfg->slots + 1);
	/* Per slot: prompt token ids (u32) then text; 64-byte aligned. */
	per_slot_arena = ALIGN_UP((size_t)cfg->prompt_tokens_max * 4, 64) +
			 ALIGN_UP((size_t)cfg->text_bytes_max, 64);

	r->req_buf = aligned_alloc(VELO_CACHE_LINE,
				   ALIGN_UP(req_entries * sizeof(*r->req_buf), 64));
	if (!r->req_buf)
		goto err;
	r->resp_buf = aligned_alloc(VELO_CACHE_LINE,
				    (size_t)cfg->resp_entries * sizeof(*r->resp_buf));
	if (!r->resp_buf)
		goto err_free_req;
	r->slots = aligned_alloc(VELO_CACHE_LINE,
				 (size_t)cfg->slots * sizeof(*r->slots));
	if (!r->slots)
		goto err_free_resp;
	r->free_stack = calloc(cfg->slots, sizeof(*r->free_stack));
	if (!r->free_stack)
		goto err_free_slots;
	r->arena = aligned_alloc(VELO_CACHE_LINE, per_slot_arena * cfg->slots);
	if (!r->arena)
		goto err_free_stack;
	r->wake_dp.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (r->wake_dp.fd < 0) {
		rc = -errno;
		goto err_free_arena;
	}
	r->wake_sched.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (r->wake_sched.fd < 0) {
		rc = -errno;
		goto err_close_wake_dp;
	}

	memset(r->slots, 0, (size_t)cfg->slots * sizeof(*r->slots));
	r->n_slots = cfg->slots;
	r->prompt_tokens_max = cfg->prompt_tokens_max;
	r->text_bytes_max = cfg->text_bytes_max;
	for (unsigned i = 0; i < cfg->slots; i++) {
		uint8_t *a = (uint8_t *)r->arena + per_slot_arena * i;

		r->slots[i].index = i;
		r->slots[i].prompt_tokens = (uint32_t *)a;
		r->slots[i].text = (char *)a +
			ALIGN_UP((size_t)cfg->prompt_tokens_max * 4, 64);
		/* Pop order 0, 1, 2...: the stack's top is the lowest index. */
		r->free_stack[i] = cfg->slots - 1 - i;
	}
	r->n_free = cfg->slots;
	ck_ring_init(&r->req, req_entries);
	ck_ring_init(&r->resp, cfg->resp_entries);
	r->engine_state = PROTO_STATE_NOT_READY;
	return 0;

err_close_wake_dp:
	close(r->wake_dp.fd);
err_free_arena:
	free(r->arena);
err_free_stack:
	free(r->free_stack);
err_free_slots:
	free(r->slots);
err_free_resp:
	free(r->resp_buf);
err_free_req:
	free(r->req_buf);
err:
	memset(r, 0, sizeof(*r));
	return rc;
}

void dp_rings_fini(struct dp_rings *r)
{
	if (r->n_slots) {
		close(r->wake_sched.fd);
		close(r->wake_dp.fd);
	}
	free(r->arena);
	free(r->free_stack);
	free(r->slots);
	free(r->resp_buf);
	free(r->req_buf);
	memset(r, 0, sizeof(*r));
}
