/* SPDX-License-Identifier: MIT */
/*
 * dataplane/dp.h — the dataplane thread's loop: receive a burst from the
 * UDP socket, hand each datagram to the session layer, take responses from
 * the scheduler's ring, run the timers, seal and send what was produced in
 * one sendmmsg batch.  Loss injection sits at the two ends (rx before the
 * session layer, tx before the socket).
 *
 * One iteration (dp_poll) does bounded work: at most one receive batch,
 * at most DP_RESP_BURST responses, one timer scan slice.
 */
#ifndef VELO_DP_H
#define VELO_DP_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "loss.h"
#include "ring.h"
#include "session.h"
#include "sock.h"
#include "dpdk/dpdk.h"

#define DP_RESP_BURST 64

/* The transport under the session layer (dataplane.transport). */
enum dp_transport {
	DP_TRANSPORT_SOCK = 0,	/* kernel UDP socket (sock.h) */
	DP_TRANSPORT_DPDK = 1,	/* DPDK port (dpdk/dpdk.h), CONFIG_DP_DPDK */
};

struct dp_config {
	enum dp_transport transport;
	struct dp_sock_config sock;	/* DPDK: listen is our IPv4 address:port */
	struct dp_dpdk_config dpdk;
	struct dp_sess_config sess;
	struct dp_loss_config loss;
	bool idle_backoff;		/* block after idle_polls empty polls */
	unsigned idle_polls;
	unsigned idle_sleep_us;		/* longest block in ppoll() */
};

/* Defaults: Kconfig values (listen 127.0.0.1:7400). */
void dp_config_default(struct dp_config *c);

/*
 * Several DPDK queues (dpdk.queues = N > 1): one struct dp per queue, each
 * with its own session table, txq, loss injector and thread (sessions are
 * pinned to a queue by RSS on the UDP 5-tuple).  The scheduler still sees
 * one pair of rings: each loop's session layer talks to a private ring pair
 * (its own slice of the request slots), and queue 0's loop forwards between
 * them and the scheduler's rings (dp_mux, dp.c).  Everything here is
 * allocated by dp_init.
 */
/* Queue 0's forwarding, block "mux" (several loops only). */
#define foreach_dp_mux_counter(X)                                             \
	X(fwd_requests, "requests forwarded from the loops to the scheduler")  \
	X(fwd_responses, "response records forwarded to their loop")          \
	X(resp_ring_full, "forwarding paused: a loop's response ring was full") \
	X(req_ring_full, "forwarding paused: the scheduler's request ring was full")

enum dp_mux_ctr {
#define X(name, help) DP_MUX_CTR_##name,
	foreach_dp_mux_counter(X)
#undef X
	DP_MUX_CTR__COUNT
};

struct dp_multi {
	unsigned n;			/* loops (queues) */
	struct dp *loops[16];		/* [0] is the struct dp velod holds */
	struct dp_rings *priv;		/* (n) private ring pairs */
	uint8_t *slot_owner;		/* (n_slots) loop of each request slot */
	struct dp_rings *sched;		/* the scheduler's rings */
	pthread_t threads[16];		/* [1..n-1] */
	bool started[16];
	struct dp_resp pending;		/* a response whose loop's ring was full */
	bool has_pending;
	char names[16][2][24];		/* counter block prefixes of loops 1.. */
	pthread_spinlock_t nonce_lock;	/* the loops' shared LOGON nonce cache */
	bool nonce_lock_init;
	uint64_t ctr[DP_MUX_CTR__COUNT];
	bool ctr_registered;
};

struct dp {
	struct dp_config cfg;
	struct dp_sock sock;		/* DPDK: fd -1, local = our address */
	struct dp_dpdk *dpdk;		/* DP_TRANSPORT_DPDK only */
	struct dp_dpdk_q *dpq;		/* DPDK: the queue this loop polls */
	struct dp_multi *multi;		/* dpdk.queues > 1, queue 0's loop only */
	unsigned lcore;			/* index of this loop (queue) */
	uint64_t link_poll_ns;
	struct dp_txq txq;
	struct dp_sess_table sess;
	struct dp_loss loss;
	struct dp_rings *rings;		/* not owned */
	bool loss_on;			/* CONFIG_DP_LOSS_INJECT and configured */
	unsigned idle;			/* consecutive empty polls */
	int stop;			/* atomic: dp_run returns when set */
};

/*
 * dp_init() - open the socket, allocate the session table and queues.
 * @keys: pre-shared keys (kept by pointer).  @rings: the scheduler rings.
 * Return: 0, -EINVAL (bad configuration, reason logged; loss settings when
 * CONFIG_DP_LOSS_INJECT is off; the DPDK transport when CONFIG_DP_DPDK is
 * off), -ENOMEM, -ENODEV (no DPDK port), or a socket error (-EADDRINUSE...).
 */
int dp_init(struct dp *dp, const struct dp_config *cfg,
	    const struct velo_psk *keys, unsigned n_keys, struct dp_rings *rings);
void dp_fini(struct dp *dp);

/* One iteration; returns the work done (datagrams + responses). */
unsigned dp_poll(struct dp *dp);

/* Loop until dp_stop(), with idle backoff when configured; on the way out
 * every session is sent an end-of-session datagram. */
void dp_run(struct dp *dp);
void dp_stop(struct dp *dp);

/*
 * dp_loops() / dp_loop_sess() - the session table of each dataplane loop,
 * for velod's control commands (sessions, stats): one, or one per DPDK
 * queue (dpdk.queues > 1; loop @i's table belongs to thread velo-dp<i>).
 * The set is fixed from dp_init() to dp_fini(), so another thread may walk
 * it while the loops run; what it reads of a table it must read as velod
 * does for loop 0's: counters and gauges with relaxed atomic loads
 * (__atomic_load_n), a session copied whole and used only if its
 * id and ACTIVE state were seen first (torn at worst, never invalid
 * memory: the tables are never reallocated).  Nothing is locked: the
 * loops never wait for a reader.
 */
static inline unsigned dp_loops(const struct dp *dp)
{
	return dp->multi ? dp->multi->n : 1;
}

/* @i < dp_loops(dp). */
static inline struct dp_sess_table *dp_loop_sess(struct dp *dp, unsigned i)
{
	return i ? &dp->multi->loops[i]->sess : &dp->sess;
}

#endif /* VELO_DP_H */
