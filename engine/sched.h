/* SPDX-License-Identifier: MIT */
/*
 * engine/sched.h — the scheduler: the engine side of the rings between the
 * dataplane and the engine (dataplane/ring.h), and the models it serves.
 *
 * Life cycle (one scheduler per engine instance):
 *   eng_sched_init()        pools sized from the ring's slot count
 *   eng_sched_model_load()  per configured model, before start: image
 *                           opened (FULL verify), tokenizer, backend, model
 *                           loaded from explicit budgets, KV cache, then the
 *                           image's known-answer self-test; only a model that
 *                           passed is routed (sched_model.c)
 *   eng_sched_start()       the loop on its pinned core
 *   eng_sched_stop(), eng_sched_fini()
 *
 * The loop (sched.c): drain the request ring (burst), admit (model lookup,
 * tokenization of a text prompt, size and deadline feasibility, queue
 * bound) and answer ACCEPT or REJECT at once; then, per model with work,
 * one step: decodes of the running requests plus chunked prefill of waiting
 * or partially prefilled ones within step_tokens_max; sample; stream TOKENS;
 * finish with DONE.  No allocation, no locks, no blocking call in the loop:
 * every pool is sized at init.
 *
 * Per request slot the scheduler keeps its own state: a CANCEL is "found"
 * only when the slot is active here with the same request id and session
 * generation, never judged from the slot's contents (see ring.h).
 */
#ifndef VELO_ENG_SCHED_H
#define VELO_ENG_SCHED_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "../dataplane/ring.h"
#include "../tools/lib/counters.h"

/* Model slots of one scheduler at most (versions of one name included: a
 * hot swap holds the serving slot, the warm rollback slot and, briefly, a
 * draining one of the same name). */
#define ENG_SCHED_MODELS_MAX 8
/* Shadow copies in flight at most (request states beyond the ring's slots;
 * a copy that finds none free is dropped and counted). */
#define ENG_SCHED_SHADOW_MAX 16
/* Device indices a model config may name ("device"; CUDA ordinals). */
#define ENG_SCHED_DEVICES_MAX 8
#define ENG_SCHED_NAME_LEN 64
#define ENG_SCHED_VERSION_LEN 32
#define ENG_SCHED_LABEL_LEN 32
#define ENG_SCHED_WHY_LEN 160

/*
 * Counters and gauges of the "sched" block.  Gauges ("gauge:") are set by the
 * scheduler thread and read racily by the control socket: a snapshot.
 */
#define foreach_eng_sched_counter(X)                                          \
	X(req_rx, "records taken from the request ring")                      \
	X(infer_rx, "INFER requests received")                                \
	X(cancel_rx, "CANCEL requests received")                              \
	X(accepted, "INFER admitted (ACCEPT sent)")                           \
	X(reject_not_ready, "REJECT NOT_READY: no model routed")              \
	X(reject_unknown_model, "REJECT UNKNOWN_MODEL: no such name/id/version") \
	X(reject_invalid, "REJECT INVALID/INVALID_PARAM (chat, bad tokens, text)") \
	X(reject_too_large, "REJECT TOO_LARGE: prompt + 1 over the context")  \
	X(reject_deadline, "REJECT DEADLINE: infeasible from measured costs") \
	X(reject_overloaded, "REJECT OVERLOADED: waiting queue full")         \
	X(cancel_found, "CANCEL of a request in flight here")                 \
	X(cancel_not_found, "CANCEL of a request not in flight here")         \
	X(done_eos, "DONE finish EOS")                                      \
	X(done_stop, "DONE finish STOP_SEQUENCE or STOP_TOKEN")              \
	X(done_length, "DONE finish LENGTH (max_tokens or context)")        \
	X(done_cancel, "DONE finish CANCELLED")                          \
	X(done_deadline, "DONE finish DEADLINE (expired while queued or running)") \
	X(done_error, "ERROR after admission (backend step failed)")        \
	X(steps, "engine steps run")                                          \
	X(step_fail, "engine steps that failed")                              \
	X(step_lt_100us, "steps under 100 us")                                \
	X(step_lt_300us, "steps 100-300 us")                                  \
	X(step_lt_1ms, "steps 0.3-1 ms")                                      \
	X(step_lt_3ms, "steps 1-3 ms")                                        \
	X(step_lt_10ms, "steps 3-10 ms")                                      \
	X(step_lt_30ms, "steps 10-30 ms")                                     \
	X(step_ge_30ms, "steps 30 ms or more")                                \
	X(step_ns_total, "nanoseconds spent in engine steps (incl. sampling)") \
	X(tokens_prefilled, "prompt positions computed (prefill chunks)")     \
	X(tokens_decoded, "tokens generated")                                 \
	X(prefix_hit_tokens, "prompt tokens served from the prefix cache")    \
	X(preemptions, "running requests preempted (recomputation)")          \
	X(tokens_msgs, "TOKENS records sent")                                 \
	X(logprob_tokens, "generated tokens given logprobs (INFER logprobs > 0)") \
	X(logprob_fail, "requests ended (ERROR) because their logits row was not available") \
	X(bad_record, "request records with an unknown op or slot")           \
	X(resp_ring_full, "polls that found the response ring full")          \
	X(polls, "scheduler loop iterations")                                 \
	X(idle_sleeps, "idle backoff sleeps")                                 \
	X(waiting, "gauge: requests waiting (not yet running)")         \
	X(running, "gauge: requests running (holding KV)")                  \
	X(kv_blocks_used, "gauge: KV blocks referenced by requests")        \
	X(kv_blocks_free, "gauge: KV blocks on the free list (not the cached)") \
	X(kv_blocks_cached, "gauge: free KV blocks kept for prefix hits")   \
	X(models_ready, "gauge: model slots routed (production or canary)") \
	X(route_changes, "route flips done between two polls (swap, rollback)") \
	X(slot_cmds, "model slot commands from the loader (install, route, detach)") \
	X(shadow_admitted, "shadow copies of admitted requests queued")     \
	X(shadow_done, "shadow copies finished (answer discarded)")          \
	X(shadow_dropped, "shadow copies not made (no free state, queue full, prompt does not fit)")

/*
 * Counters of the "model" block: runtime model management, written by the
 * one loader thread (velod's), read racily like the others.
 */
#define foreach_eng_model_counter(X)                                          \
	X(loads, "model slots loaded and self-tested at run time")            \
	X(load_failures, "loads refused (image, tokenizer, backend, self-test)") \
	X(swaps, "swaps: the route of a name flipped to another slot")        \
	X(rollbacks, "rollbacks: the route flipped back to the warm slot")    \
	X(confirms, "swaps confirmed (the warm rollback slot released)")      \
	X(unloads, "model slots freed (drained first)")

enum eng_model_ctr {
#define X(name, help) ENG_MODEL_CTR_##name,
	foreach_eng_model_counter(X)
#undef X
	ENG_MODEL_CTR__COUNT
};

enum eng_sched_ctr {
#define X(name, help) ENG_SCHED_CTR_##name,
	foreach_eng_sched_counter(X)
#undef X
	ENG_SCHED_CTR__COUNT
};

/*
 * Request latency histograms (vLLM's bucket bounds, so that mgmt renders
 * them as vLLM's Prometheus histograms): bucket[i] counts observations
 * <= le_us[i] and > le_us[i - 1]; bucket[n_le] the rest.  Written by the
 * scheduler thread (at DONE; inter-token at each token), read racily.
 */
enum eng_sched_hist_id {
	ENG_SCHED_HIST_TTFT = 0,	/* arrival -> first token */
	ENG_SCHED_HIST_ITL,		/* between consecutive tokens */
	ENG_SCHED_HIST_QUEUE,		/* arrival -> first scheduled */
	ENG_SCHED_HIST_E2E,		/* arrival -> DONE */
	ENG_SCHED_HIST__COUNT
};
#define ENG_SCHED_HIST_BUCKETS 17	/* bounds + 1 at most */

struct eng_sched_hist {
	uint64_t bucket[ENG_SCHED_HIST_BUCKETS];
	uint64_t count;
	uint64_t sum_us;
};

/* Name ("time_to_first_token_seconds"...), bounds in microseconds. */
const char *eng_sched_hist_name(enum eng_sched_hist_id h);
const uint32_t *eng_sched_hist_le_us(enum eng_sched_hist_id h, unsigned *n);

struct eng_sched_config {
	int core;			/* -1: unpinned */
	bool idle_backoff;
	unsigned idle_polls;		/* empty polls before sleeping */
	unsigned idle_sleep_us;
	unsigned burst;			/* request records per poll (<= 64) */
	unsigned text_bytes_max;	/* longest text prompt (tokenizer budget) */
};

void eng_sched_config_default(struct eng_sched_config *c);

/* One model to serve (velod's "models" entries). */
struct eng_sched_model_config {
	const char *name;		/* routing name; NULL/"": the image's */
	const char *image;		/* path of the model image */
	const char *label;		/* "production" when NULL/"" */
	const char *backend;		/* "cpu" */
	uint32_t kv_blocks;		/* KV pool (blocks of kv_block_tokens) */
	uint32_t kv_block_tokens;	/* 0: 16 */
	uint32_t seqs_max;		/* sequences per step */
	uint32_t step_tokens_max;	/* tokens per step (chunked prefill) */
	uint32_t threads;		/* backend workers; 0: backend default */
	uint32_t queue_max;		/* waiting requests; 0: seqs_max * 4 */
	uint32_t device;		/* device index (< ENG_SCHED_DEVICES_MAX):
					 * the CUDA ordinal; CPU: a label (each
					 * CPU slot has its own worker pool) */
	uint32_t share;			/* canary: percent of admissions 1..99 */
};

/*
 * How a slot takes new requests.  NONE: loaded and warm but unrouted (the
 * rollback slot after a swap, or draining before an unload): it finishes
 * the requests it already has and admits none.  A name has at most one
 * PRODUCTION slot; a CANARY slot of the same name takes a deterministic
 * share of its admissions (by a hash of request id and session).
 */
enum eng_route {
	ENG_ROUTE_NONE = 0,
	ENG_ROUTE_PRODUCTION,
	ENG_ROUTE_CANARY,
	ENG_ROUTE_SHADOW,	/* gets a copy of every request the name admits
				 * (as far as ENG_SCHED_SHADOW_MAX states and its
				 * queue allow); its answers are discarded and
				 * counted, never sent */
};

enum eng_model_state {
	ENG_MODEL_EMPTY = 0,
	ENG_MODEL_LOADING,
	ENG_MODEL_READY,		/* self-test passed, routed */
	ENG_MODEL_FAILED,		/* load or self-test failed: unrouted */
};

struct eng_sched_model;			/* private (sched_priv.h) */
struct eng_sched_req;

/* A snapshot of one model for status commands. */
struct eng_sched_model_status {
	char name[ENG_SCHED_NAME_LEN];
	char version[ENG_SCHED_VERSION_LEN];
	char label[ENG_SCHED_LABEL_LEN];
	char image[256];
	char why[ENG_SCHED_WHY_LEN];	/* failure reason, or "" */
	enum eng_model_state state;
	uint32_t id;			/* catalogue id (1-based) */
	uint32_t vocab, ctx_max, kv_blocks, kv_block_tokens, seqs_max,
		 step_tokens_max, threads;
	uint64_t mem_bytes, kv_bytes, weight_bytes;
	double load_s, selftest_s;
	double prefill_us_per_token, decode_us_per_step;	/* EWMA */
	uint32_t ka_prompt, ka_expect;	/* self-test sizes */
	uint32_t device;
	enum eng_route route;		/* snapshot (the scheduler owns it) */
	uint32_t share;			/* canary percent */
	uint32_t inflight;		/* waiting + running (snapshot) */
	uint64_t served;		/* DONE records this slot sent */
	uint32_t kv_used, kv_free, kv_cached;	/* this slot's KV blocks */
};

struct eng_sched {
	struct eng_sched_config cfg;
	struct dp_rings *rings;		/* not owned */
	struct eng_sched_req *reqs;	/* (n_reqs): the ring's slots, then
					 * ENG_SCHED_SHADOW_MAX shadow copies */
	unsigned n_reqs;
	uint8_t *sampler_mem;		/* (n_reqs) samplers */
	char *chat_buf;			/* a rendered chat prompt (chat_cap) */
	size_t chat_cap;
	uint32_t *tok_mem;		/* (n_reqs, tok_cap) token arrays */
	uint32_t tok_cap;		/* largest model context */
	uint32_t *blk_mem;		/* (n_reqs, blk_cap) block tables */
	uint32_t blk_cap;
	uint64_t order;			/* admissions so far */
	unsigned sent;			/* responses this poll */
	/* Slot table: index = catalogue id - 1; NULL entries are free.  The
	 * scheduler thread writes entries (install, detach: loader commands
	 * executed between two polls); status readers hold slots_lock, which
	 * the loader holds around every command that changes the table and
	 * around freeing a slot, so a snapshot never reads freed memory.  The
	 * scheduler never takes it. */
	struct eng_sched_model *models[ENG_SCHED_MODELS_MAX];
	unsigned n_models;		/* entries in use up to this index */
	pthread_mutex_t slots_lock;
	struct eng_sched_cmd *cmd;	/* loader -> scheduler mailbox (atomic) */
	uint64_t kv_ctr[32];		/* "kv" block: sum over the slots */
	/* Backend instances shared by the slots of one device (backends
	 * whose contract allows loading beside a running model: CUDA).  The
	 * CPU backend gets one instance per slot instead (its own worker
	 * pool), so a self-test never shares a pool with the scheduler.
	 * Loader thread only. */
	struct {
		const struct eng_backend_ops *ops;
		struct eng_backend *be;
		unsigned users;
	} dev[ENG_SCHED_DEVICES_MAX];
	unsigned idle;
	int stop;			/* atomic */
	bool started;
	pthread_t thread;
	uint64_t ctr[ENG_SCHED_CTR__COUNT];
	uint64_t mctr[ENG_MODEL_CTR__COUNT];	/* loader thread's */
	struct eng_sched_hist hist[ENG_SCHED_HIST__COUNT];
	struct dp_resp scratch;		/* shadow copies' discarded chunks */
	bool registered;
};

/*
 * eng_sched_init() - set up the scheduler over @rings (no model yet: every
 * INFER is answered REJECT NOT_READY until a model is routed).
 * @register_counters: add the "sched" counter block.
 * Return: 0, -EINVAL, -ENOMEM, -ENOSPC (counter registry full).
 */
int eng_sched_init(struct eng_sched *s, const struct eng_sched_config *cfg,
		   struct dp_rings *rings, bool register_counters);
void eng_sched_fini(struct eng_sched *s);

/*
 * eng_sched_model_load() - load, self-test and route one model.  Before
 * eng_sched_start() only (the loop owns the models once it runs).  A model
 * that fails is kept in the table as FAILED (unrouted) with its reason, so
 * that status commands show it.
 * @err: the reason on failure (also logged).
 * Return: 0 when routed; -ENOSPC (table full), -EINVAL (bad config or
 * image), -EBADMSG (image checksum), -ENOMEM, -EIO (self-test mismatch),
 * -ENOTSUP (backend), or the backend's -errno.
 */
int eng_sched_model_load(struct eng_sched *s,
			 const struct eng_sched_model_config *mc, char *err,
			 size_t errlen);

/* Upper bound of the table's indices in use (entries may be free). */
unsigned eng_sched_model_count(const struct eng_sched *s);
/* Snapshot of slot @i (< count); safe from any thread but the scheduler's
 * (takes slots_lock).  Return: 0, or -ENOENT for a free entry. */
int eng_sched_model_status(struct eng_sched *s, unsigned i,
			   struct eng_sched_model_status *st);
/* True when at least one model is routed and none failed. */
bool eng_sched_ready(const struct eng_sched *s, char *why, size_t whylen);

/*
 * Runtime model management (hot swap, docs/mgmt.md).  Called by ONE loader
 * thread, never the scheduler's, whether the loop runs or not.  Loading is
 * done entirely on the caller's thread; the scheduler only takes a ready
 * slot or changes a route between two polls, through a single-slot
 * lock-free mailbox (eng_sched.cmd: the loader stores a command with
 * release order, the scheduler executes it at the top of its next poll —
 * bounded, no allocation, no lock — and stores "done"; the loader waits by
 * sleeping 50 us at a time).  Requests admitted to a slot stay on it to
 * their DONE (which names that slot's version), so a flip never moves a
 * request between versions.
 */

/*
 * eng_sched_slot_load() - open (FULL verify), tokenizer, backend instance,
 * model, known-answer self-test and KV cache of one slot, on the calling
 * thread; not routed yet.  The scheduler's per-request token arrays grow
 * if the model needs more (only while no request is in flight: -EBUSY).
 * @out: the ready slot, to be installed or freed.
 * Return: 0, or as eng_sched_model_load() (nothing kept on failure).
 */
int eng_sched_slot_load(struct eng_sched *s,
			const struct eng_sched_model_config *mc,
			struct eng_sched_model **out, char *err, size_t errlen);
/*
 * eng_sched_slot_install() - hand a loaded slot to the scheduler with
 * @route.  PRODUCTION flips the name's route at once: its previous
 * production slot becomes NONE (warm, finishing its requests).
 * @share: a canary's percent of admissions (1..99).
 * @index: the table index it got (its catalogue id - 1).
 * Return: 0, -ENOSPC (table full), -EEXIST (a canary, or a shadow, of that
 * name exists already).
 */
int eng_sched_slot_install(struct eng_sched *s, struct eng_sched_model *sm,
			   enum eng_route route, uint32_t share, unsigned *index);
/* The loader's view of a slot it loaded or holds (names, sizes, times);
 * route, inflight and served there are not kept current. */
const struct eng_sched_model_status *
eng_sched_slot_status(const struct eng_sched_model *sm);
/*
 * eng_sched_slot_route() - change the route of slot @index (a flip: to
 * PRODUCTION demotes the name's current production slot to NONE).
 * Return: 0, -ENOENT (no such slot), -EINVAL (not ready).
 */
int eng_sched_slot_route(struct eng_sched *s, unsigned index,
			 enum eng_route route, uint32_t share);
/*
 * eng_sched_slot_detach() - take unrouted slot @index out of the table once
 * it has no request left; the caller then frees it.
 * Return: 0; -EBUSY while requests are in flight on it (try again later),
 * -EPERM when it is routed, -ENOENT.
 */
int eng_sched_slot_detach(struct eng_sched *s, unsigned index,
			  struct eng_sched_model **out);
/* Free a detached (or never installed) slot: KV, model, backend, image. */
void eng_sched_slot_free(struct eng_sched *s, struct eng_sched_model *sm);
/* Read by the loader (the only thread that changes them, through commands). */
enum eng_route eng_sched_slot_route_get(const struct eng_sched *s, unsigned index);
/* Index of the slot of @name with @version (NULL: any) and @route (-1: any),
 * or -1.  Loader thread (or before start). */
int eng_sched_slot_find(const struct eng_sched *s, const char *name,
			const char *version, int route);

/* One iteration (tests call it directly).  Returns the work done (records
 * handled + steps run); 0 means idle. */
unsigned eng_sched_poll(struct eng_sched *s);

/*
 * eng_sched_start() - run the loop on its own thread, pinned to cfg.core.
 * Return: 0, or -errno (pinning failures are logged and ignored).
 */
int eng_sched_start(struct eng_sched *s);
/* Stop and join the thread. */
void eng_sched_stop(struct eng_sched *s);

#endif /* VELO_ENG_SCHED_H */
