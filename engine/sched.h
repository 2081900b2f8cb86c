/* SPDX-License-Identifier: MIT */
/*
 * engine/sched.h — the scheduler thread: the engine side of the rings
 * between the dataplane and the engine (dataplane/ring.h).
 *
 * It takes DP_REQ_INFER and DP_REQ_CANCEL records from the request ring and
 * answers through the response ring.  With no model loaded (today) every
 * INFER is answered REJECT NOT_READY "no model loaded" (final: the request
 * slot goes back to the dataplane) and every CANCEL with CANCEL_ACK found=0.
 * The serving-path issue turns eng_sched_poll() into the real scheduler
 * (admission, batching, streaming TOKENS, DONE); the ring records already
 * carry what it needs (ring.h).
 *
 * Per request slot the scheduler keeps its own state (slot_active): a
 * CANCEL is "found" only when the slot is active here with the same request
 * id and session generation, never judged from the slot's contents (the
 * dataplane may already have reused it; see ring.h).
 */
#ifndef VELO_ENG_SCHED_H
#define VELO_ENG_SCHED_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "../dataplane/ring.h"
#include "../tools/lib/counters.h"

#define foreach_eng_sched_counter(X)                                          \
	X(req_rx, "records taken from the request ring")                      \
	X(infer_rx, "INFER requests received")                                \
	X(cancel_rx, "CANCEL requests received")                              \
	X(reject_not_ready, "INFER answered REJECT NOT_READY (no model)")     \
	X(cancel_found, "CANCEL of a request in flight here")                 \
	X(cancel_not_found, "CANCEL of a request not in flight here")         \
	X(bad_record, "request records with an unknown op or slot")           \
	X(resp_ring_full, "responses held back: response ring full")          \
	X(polls, "scheduler loop iterations")                                 \
	X(idle_sleeps, "idle backoff sleeps")

enum eng_sched_ctr {
#define X(name, help) ENG_SCHED_CTR_##name,
	foreach_eng_sched_counter(X)
#undef X
	ENG_SCHED_CTR__COUNT
};

struct eng_sched_config {
	int core;			/* -1: unpinned */
	bool idle_backoff;
	unsigned idle_polls;		/* empty polls before sleeping */
	unsigned idle_sleep_us;
	unsigned burst;			/* request records per poll (<= 64) */
};

void eng_sched_config_default(struct eng_sched_config *c);

struct eng_slot_state {
	uint64_t request_id;
	uint32_t sess_gen;
	uint16_t sess_slot;
	uint8_t active;
	uint8_t reserved;
};

struct eng_sched {
	struct eng_sched_config cfg;
	struct dp_rings *rings;		/* not owned */
	struct eng_slot_state *slot_state; /* (rings->n_slots) */
	struct dp_resp pending;		/* held while the response ring is full */
	bool has_pending;
	unsigned idle;
	int stop;			/* atomic */
	bool started;
	pthread_t thread;
	uint64_t ctr[ENG_SCHED_CTR__COUNT];
	bool registered;
};

/*
 * eng_sched_init() - set up the scheduler over @rings.
 * @register_counters: add the "sched" counter block.
 * Return: 0, -EINVAL, -ENOMEM, -ENOSPC (counter registry full).
 */
int eng_sched_init(struct eng_sched *s, const struct eng_sched_config *cfg,
		   struct dp_rings *rings, bool register_counters);
void eng_sched_fini(struct eng_sched *s);

/* One iteration (tests call it directly).  Returns the records handled. */
unsigned eng_sched_poll(struct eng_sched *s);

/*
 * eng_sched_start() - run the loop on its own thread, pinned to cfg.core.
 * Return: 0, or -errno (pinning failures are logged and ignored).
 */
int eng_sched_start(struct eng_sched *s);
/* Stop and join the thread. */
void eng_sched_stop(struct eng_sched *s);

#endif /* VELO_ENG_SCHED_H */
