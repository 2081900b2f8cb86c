// SPDX-License-Identifier: MIT
/*
 * sched.c — the scheduler thread, no-model edition (see sched.h).
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <velo/compiler.h>

#include "../tools/lib/cpu.h"
#include "../tools/lib/log.h"
#include "sched.h"

static const struct ctr_desc eng_sched_ctr_desc[ENG_SCHED_CTR__COUNT] = {
#define X(name, help) { #name, help },
	foreach_eng_sched_counter(X)
#undef X
};

void eng_sched_config_default(struct eng_sched_config *c)
{
	memset(c, 0, sizeof(*c));
	c->core = -1;
	c->idle_backoff = true;
	c->idle_polls = 64;
	c->idle_sleep_us = 1000;
	c->burst = 32;
}

int eng_sched_init(struct eng_sched *s, const struct eng_sched_config *cfg,
		   struct dp_rings *rings, bool register_counters)
{
	int rc;

	memset(s, 0, sizeof(*s));
	if (!rings || !rings->n_slots || !cfg->burst || cfg->burst > 64)
		return -EINVAL;
	s->cfg = *cfg;
	s->rings = rings;
	s->slot_state = calloc(rings->n_slots, sizeof(*s->slot_state));
	if (!s->slot_state)
		return -ENOMEM;
	if (register_counters) {
		rc = ctr_block_register("sched", eng_sched_ctr_desc, s->ctr,
					ENG_SCHED_CTR__COUNT);
		if (rc) {
			free(s->slot_state);
			s->slot_state = NULL;
			return rc;
		}
		s->registered = true;
	}
	dp_rings_engine_state_set(rings, PROTO_STATE_NOT_READY);
	return 0;
}

void eng_sched_fini(struct eng_sched *s)
{
	if (s->started)
		eng_sched_stop(s);
	if (s->registered)
		ctr_block_unregister(s->ctr);
	free(s->slot_state);
	memset(s, 0, sizeof(*s));
}

/* Send a response, or hold it when the ring is full (returns false). */
static bool resp_send(struct eng_sched *s, const struct dp_resp *r)
{
	if (dp_resp_enqueue(s->rings, r))
		return true;
	s->pending = *r;
	s->has_pending = true;
	s->ctr[ENG_SCHED_CTR_resp_ring_full]++;
	return false;
}

static void resp_init(struct dp_resp *r, const struct dp_req_msg *m,
		      enum dp_resp_kind kind, uint8_t flags)
{
	memset(r, 0, offsetof(struct dp_resp, tokens));
	r->kind = (uint8_t)kind;
	r->flags = flags;
	r->sess_slot = m->sess_slot;
	r->sess_gen = m->sess_gen;
	r->req_slot = m->req_slot;
	r->request_id = m->request_id;
}

static bool handle_infer(struct eng_sched *s, const struct dp_req_msg *m)
{
	static const char text[] = "no model loaded";
	struct eng_slot_state *st = &s->slot_state[m->req_slot];
	struct dp_resp r;

	s->ctr[ENG_SCHED_CTR_infer_rx]++;
	/* No model: admitted and refused at once.  (The serving path marks
	 * the slot active here and keeps it until DONE.) */
	st->active = 0;
	resp_init(&r, m, DP_RESP_REJECT, DP_RESP_F_FINAL);
	r.u.reject.request_id = m->request_id;
	r.u.reject.code = PROTO_E_NOT_READY;
	r.u.reject.retry_after_ms = 0;
	memcpy(r.text, text, sizeof(text) - 1);
	r.text_len = sizeof(text) - 1;
	s->ctr[ENG_SCHED_CTR_reject_not_ready]++;
	return resp_send(s, &r);
}

static bool handle_cancel(struct eng_sched *s, const struct dp_req_msg *m)
{
	struct eng_slot_state *st = &s->slot_state[m->req_slot];
	bool found = st->active && st->request_id == m->request_id &&
		     st->sess_gen == m->sess_gen && st->sess_slot == m->sess_slot;
	struct dp_resp r;

	s->ctr[ENG_SCHED_CTR_cancel_rx]++;
	s->ctr[found ? ENG_SCHED_CTR_cancel_found : ENG_SCHED_CTR_cancel_not_found]++;
	resp_init(&r, m, DP_RESP_CANCEL_ACK, 0);
	r.u.cancel_ack.request_id = m->request_id;
	r.u.cancel_ack.found = found;
	r.u.cancel_ack.tokens_generated = 0;
	return resp_send(s, &r);
}

static unsigned sched_poll(struct eng_sched *s)
{
	struct dp_req_msg m;
	unsigned n = 0;

	s->ctr[ENG_SCHED_CTR_polls]++;
	if (s->has_pending) {
		if (!dp_resp_enqueue(s->rings, &s->pending))
			return 0;
		s->has_pending = false;
		n++;
	}
	/* Every record makes exactly one response now: stop taking records
	 * as soon as one response has to wait. */
	while (n < s->cfg.burst && dp_req_dequeue(s->rings, &m)) {
		bool ok;

		n++;
		s->ctr[ENG_SCHED_CTR_req_rx]++;
		if (unlikely(m.req_slot >= s->rings->n_slots)) {
			s->ctr[ENG_SCHED_CTR_bad_record]++;
			continue;
		}
		switch (m.op) {
		case DP_REQ_INFER:
			ok = handle_infer(s, &m);
			break;
		case DP_REQ_CANCEL:
			ok = handle_cancel(s, &m);
			break;
		default:
			s->ctr[ENG_SCHED_CTR_bad_record]++;
			ok = true;
			break;
		}
		if (!ok)
			break;
	}
	return n;
}

unsigned eng_sched_poll(struct eng_sched *s)
{
	unsigned n = sched_poll(s);

	if (n)	/* responses went out: wake the dataplane if it sleeps */
		dp_wake_kick(&s->rings->wake_dp);
	return n;
}

static void *sched_thread(void *arg)
{
	struct eng_sched *s = arg;
	int rc = cpu_pin_self(s->cfg.core);

	if (rc)
		LOG_W(eng, "scheduler: cannot pin to core %d: %s (unpinned)",
		      s->cfg.core, strerror(-rc));
	LOG_I(eng, "scheduler running on core %d (idle backoff %s), no model "
	      "loaded: INFER answered NOT_READY", s->cfg.core,
	      s->cfg.idle_backoff ? "on" : "off");
	while (!__atomic_load_n(&s->stop, __ATOMIC_RELAXED)) {
		if (eng_sched_poll(s)) {
			s->idle = 0;
			continue;
		}
		if (s->cfg.idle_backoff && ++s->idle >= s->cfg.idle_polls) {
			struct dp_wake *w = &s->rings->wake_sched;
			struct timespec ts = { 0, (long)s->cfg.idle_sleep_us * 1000 };
			struct pollfd p = { .fd = w->fd, .events = POLLIN };
			bool woke = false;

			/* Asleep until the dataplane kicks (or the timeout). */
			dp_wake_prepare(w);
			if (!dp_req_pending(s->rings)) {
				s->ctr[ENG_SCHED_CTR_idle_sleeps]++;
				woke = ppoll(&p, 1, &ts, NULL) > 0;
			}
			dp_wake_done(w, woke);
		} else {
			cpu_relax();
		}
	}
	return NULL;
}

int eng_sched_start(struct eng_sched *s)
{
	int rc;

	__atomic_store_n(&s->stop, 0, __ATOMIC_RELAXED);
	rc = pthread_create(&s->thread, NULL, sched_thread, s);
	if (rc)
		return -rc;
	pthread_setname_np(s->thread, "velo-sched");
	s->started = true;
	return 0;
}

void eng_sched_stop(struct eng_sched *s)
{
	if (!s->started)
		return;
	__atomic_store_n(&s->stop, 1, __ATOMIC_RELAXED);
	pthread_join(s->thread, NULL);
	s->started = false;
}
