// SPDX-License-Identifier: MIT
/*
 * dp.c — the dataplane loop (see dp.h).
 *
 * Loss injection follows the "constant argument to a static inline worker"
 * rule (VPP's do_trace): dp_poll_worker() is instantiated twice, with
 * loss = false and loss = true, and the plain instance has no loss test in
 * it; likewise the two txq flush callbacks.  The choice is made once per
 * poll on a flag that is constant after init.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <velo/compiler.h>

#include "../tools/lib/clock.h"
#include "../tools/lib/counters.h"
#include "../tools/lib/cpu.h"
#include "../tools/lib/log.h"
#include "dp.h"
#include "rx.h"

void dp_config_default(struct dp_config *c)
{
	memset(c, 0, sizeof(*c));
	c->sock.listen = "127.0.0.1:7400";
	c->sock.batch = CONFIG_DP_BATCH;
	c->sock.mtu = CONFIG_DP_MTU;
	c->sock.busy_poll_us = 0;
	c->sock.rcvbuf = 4u << 20;
	c->sock.sndbuf = 4u << 20;
	dp_sess_config_default(&c->sess);
	dp_dpdk_config_default(&c->dpdk);
	c->loss.seed = 1;
	c->idle_backoff = true;
	c->idle_polls = 64;
	c->idle_sleep_us = 1000;
}

static __always_inline void dp_tx_flush_worker(struct dp_txq *q, struct dp *dp,
					       const bool loss)
{
	uint64_t *c = dp->sess.dp_ctr;
	unsigned n = q->n, sent;

	if (loss) {
		unsigned k = 0;

		for (unsigned i = 0; i < n; i++) {
			if (dp_loss_drop(&dp->loss, DP_LOSS_TX, q->pkts[i].data,
					 q->pkts[i].len))
				continue;
			if (k != i)
				q->pkts[k] = q->pkts[i];
			k++;
		}
		n = k;
	}
	if (IS_ENABLED(CONFIG_DP_DPDK) && dp->dpdk)
		sent = dp_dpdk_tx(dp->dpq, q->pkts, n);
	else
		sent = dp_sock_tx_burst(&dp->sock, q->pkts, n);
	c[DP_CTR_tx_datagrams] += sent;
	for (unsigned i = 0; i < sent; i++)
		c[DP_CTR_tx_bytes] += q->pkts[i].len;
	c[DP_CTR_tx_dropped] += n - sent;
	q->n = 0;
}

static void dp_tx_flush_plain(struct dp_txq *q, void *arg)
{
	dp_tx_flush_worker(q, arg, false);
}

static void dp_tx_flush_loss(struct dp_txq *q, void *arg)
{
	dp_tx_flush_worker(q, arg, true);
}

/* The socket, or a DPDK port that answers for the "listen" address. */
static int dp_transport_open(struct dp *dp)
{
	struct dp_addr a;
	int rc;

	if (dp->cfg.transport == DP_TRANSPORT_SOCK)
		return dp_sock_open(&dp->sock, &dp->cfg.sock);
	if (dp->cfg.transport != DP_TRANSPORT_DPDK || !IS_ENABLED(CONFIG_DP_DPDK)) {
		LOG_E(dp, "transport dpdk: this build has no DPDK "
		      "(CONFIG_DP_DPDK=n)");
		return -EINVAL;
	}
	rc = dp_addr_parse(dp->cfg.sock.listen, 7400, &a);
	if (rc) {
		LOG_E(dp, "bad listen address '%s'", dp->cfg.sock.listen);
		return rc;
	}
	memset(&dp->sock, 0, sizeof(dp->sock));
	dp->sock.fd = -1;
	dp->sock.local = a;
	dp->dpdk = dp_dpdk_open(&dp->cfg.dpdk, &a, dp->cfg.sess.mtu,
				dp->cfg.sock.batch);
	if (!dp->dpdk)
		return -errno;
	dp->dpq = dp_dpdk_queue(dp->dpdk, 0);
	return 0;
}

static void dp_transport_close(struct dp *dp)
{
	if (IS_ENABLED(CONFIG_DP_DPDK) && dp->dpdk) {
		dp_dpdk_close(dp->dpdk);
		dp->dpdk = NULL;
		return;
	}
	dp_sock_close(&dp->sock);
}

/* ------------------------------------------------------------------------
 * Several DPDK queues: private ring pairs and the forwarding (dp.h).
 */

/* Loop @i's ring pair: its slice [first, first + count) of the scheduler's
 * request slots (the slot array itself is shared: the scheduler reads slots
 * by index), request and response rings as large as the scheduler's (so a
 * loop's enqueue never fails and a response never waits for another loop's
 * ring), a wake-up eventfd for its idle naps. */
static int priv_rings_init(struct dp_rings *p, const struct dp_rings *g,
			   unsigned first, unsigned count)
{
	unsigned req_n = ck_ring_capacity(&g->req), resp_n = ck_ring_capacity(&g->resp);

	memset(p, 0, sizeof(*p));
	p->wake_dp.fd = p->wake_sched.fd = -1;
	p->req_buf = aligned_alloc(VELO_CACHE_LINE,
				   ALIGN_UP(req_n * sizeof(*p->req_buf), 64));
	p->resp_buf = aligned_alloc(VELO_CACHE_LINE, resp_n * sizeof(*p->resp_buf));
	p->free_stack = calloc(count ? count : 1, sizeof(*p->free_stack));
	if (!p->req_buf || !p->resp_buf || !p->free_stack)
		return -ENOMEM;
	p->wake_dp.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (p->wake_dp.fd < 0)
		return -errno;
	p->slots = g->slots;
	p->n_slots = g->n_slots;
	p->prompt_tokens_max = g->prompt_tokens_max;
	p->text_bytes_max = g->text_bytes_max;
	for (unsigned i = 0; i < count; i++)
		p->free_stack[i] = first + count - 1 - i;	/* lowest on top */
	p->n_free = count;
	p->engine_state = dp_rings_engine_state(g);
	ck_ring_init(&p->req, req_n);
	ck_ring_init(&p->resp, resp_n);
	return 0;
}

static void priv_rings_fini(struct dp_rings *p)
{
	if (p->wake_dp.fd >= 0)
		close(p->wake_dp.fd);
	free(p->req_buf);
	free(p->resp_buf);
	free(p->free_stack);
	memset(p, 0, sizeof(*p));
}

/*
 * Queue 0's loop, every poll: requests from every loop's private ring into
 * the scheduler's (never full: it holds 2 x slots entries and each slot has
 * at most one INFER and one CANCEL in flight, whichever loop sent them);
 * responses from the scheduler's ring to the ring of the loop that owns the
 * request's slot (a full one keeps the record here, and the ones behind it
 * in the scheduler's ring, until the next poll: never blocks, never drops);
 * the engine state and the free-slot count copied across.
 * Cost: one 32-byte copy per request, two 512-byte copies per response
 * record (~30 ns); nothing when the rings are empty but one load per ring.
 */
static const struct ctr_desc dp_mux_ctr_desc[DP_MUX_CTR__COUNT] = {
	foreach_dp_mux_counter(CTR_DESC)
};

static unsigned dp_mux(struct dp *dp)
{
	struct dp_multi *m = dp->multi;
	struct dp_rings *g = m->sched;
	bool kick[16] = { false };
	unsigned work = 0, fwd = 0, n_free = 0;
	int state = dp_rings_engine_state(g);

	for (unsigned i = 0; i < m->n; i++) {
		struct dp_rings *p = &m->priv[i];
		struct dp_req_msg r;

		/* Room first: a record taken from a loop's ring cannot be
		 * put back.  (The scheduler's ring holds 2 x slots entries and
		 * the loops at most that many in flight: never full; counted
		 * if it ever is.) */
		while (ck_ring_size(&g->req) + 1 < ck_ring_capacity(&g->req)) {
			if (!dp_req_dequeue(p, &r))
				break;
			dp_req_enqueue(g, &r);
			fwd++;
		}
		if (unlikely(dp_req_pending(p) &&
			     ck_ring_size(&g->req) + 1 >= ck_ring_capacity(&g->req)))
			m->ctr[DP_MUX_CTR_req_ring_full]++;
		n_free += __atomic_load_n(&p->n_free, __ATOMIC_RELAXED);
		if (dp_rings_engine_state(p) != state)
			dp_rings_engine_state_set(p, state);
	}
	if (fwd) {
		m->ctr[DP_MUX_CTR_fwd_requests] += fwd;
		dp_wake_kick(&g->wake_sched);
		work += fwd;
	}
	/* For velod's stats (dp_rings_slots_in_use): racy, display only. */
	__atomic_store_n(&g->n_free, n_free, __ATOMIC_RELAXED);
	for (unsigned k = 0; k < DP_RESP_BURST; k++) {
		uint32_t slot;
		unsigned o;

		if (!m->has_pending) {
			if (!dp_resp_dequeue(g, &m->pending))
				break;
			m->has_pending = true;
		}
		slot = m->pending.req_slot;
		/* An index the scheduler should never send: loop 0's session
		 * layer rejects and counts it. */
		o = slot < g->n_slots ? m->slot_owner[slot] : 0;
		if (!dp_resp_enqueue(&m->priv[o], &m->pending)) {
			m->ctr[DP_MUX_CTR_resp_ring_full]++;
			break;
		}
		m->has_pending = false;
		m->ctr[DP_MUX_CTR_fwd_responses]++;
		kick[o] = true;
		work++;
	}
	for (unsigned i = 1; i < m->n; i++)
		if (kick[i])
			dp_wake_kick(&m->priv[i].wake_dp);
	return work;
}

static void dp_tx_flush_plain(struct dp_txq *q, void *arg);
static void dp_tx_flush_loss(struct dp_txq *q, void *arg);

/* Loop @i (> 0): the same as dp_init's, on queue i, without a transport of
 * its own; counter blocks "dp.q<i>" and "sess.q<i>". */
static int dp_loop_init(struct dp *w, struct dp *dp0, unsigned i,
			const struct velo_psk *keys, unsigned n_keys)
{
	struct dp_multi *m = dp0->multi;
	struct dp_loss_config lc = dp0->cfg.loss;
	char err[160] = "";
	int rc;

	memset(w, 0, sizeof(*w));
	w->cfg = dp0->cfg;
	w->lcore = i;
	w->rings = &m->priv[i];
	w->dpdk = dp0->dpdk;
	w->dpq = dp_dpdk_queue(dp0->dpdk, i);
	w->sock.fd = -1;
	w->sock.local = dp0->sock.local;
	w->loss_on = dp0->loss_on;
	lc.seed = lc.seed * 1000003u + i;	/* each loop its own sequence */
	rc = dp_loss_init(&w->loss, &lc, err, sizeof(err));
	if (rc)
		return rc;
	rc = dp_txq_init(&w->txq, 2 * w->cfg.sock.batch, w->cfg.sess.mtu,
			 w->loss_on ? dp_tx_flush_loss : dp_tx_flush_plain, w);
	if (rc)
		return rc;
	rc = dp_sess_init(&w->sess, &w->cfg.sess, keys, n_keys, w->rings,
			  &w->txq, false);
	if (rc) {
		dp_txq_fini(&w->txq);
		return rc;
	}
	snprintf(m->names[i][0], sizeof(m->names[i][0]), "dp.q%u", i);
	snprintf(m->names[i][1], sizeof(m->names[i][1]), "sess.q%u", i);
	if (ctr_block_register(m->names[i][0], dp_ctr_desc, w->sess.dp_ctr,
			       DP_CTR__COUNT) ||
	    ctr_block_register(m->names[i][0], dp_loss_ctr_desc, w->loss.ctr,
			       DP_LOSS_CTR__COUNT) ||
	    ctr_block_register(m->names[i][1], sess_ctr_desc, w->sess.ctr,
			       SESS_CTR__COUNT))
		LOG_W(dp, "loop %u: counter registry full (its counters are "
		      "not shown)", i);
	return 0;
}

static void dp_loop_fini(struct dp *w)
{
	ctr_block_unregister(w->sess.ctr);
	ctr_block_unregister(w->loss.ctr);
	ctr_block_unregister(w->sess.dp_ctr);
	dp_sess_fini(&w->sess);
	dp_txq_fini(&w->txq);
}

static void dp_multi_fini(struct dp *dp)
{
	struct dp_multi *m = dp->multi;

	if (!m)
		return;
	for (unsigned i = 1; i < m->n; i++)
		if (m->loops[i]) {
			dp_loop_fini(m->loops[i]);
			free(m->loops[i]);
		}
	if (m->priv)
		for (unsigned i = 0; i < m->n; i++)
			priv_rings_fini(&m->priv[i]);
	free(m->priv);
	free(m->slot_owner);
	if (m->nonce_lock_init)
		pthread_spin_destroy(&m->nonce_lock);
	if (m->ctr_registered)
		ctr_block_unregister(m->ctr);
	free(m);
	dp->multi = NULL;
}

/* dpdk.queues > 1: the private rings (slots split evenly: loop i owns
 * [i x S / N, (i + 1) x S / N)) and loops 1..N-1.  Loop 0 (@dp) then uses
 * priv[0] like any other loop. */
static int dp_multi_init(struct dp *dp, const struct velo_psk *keys,
			 unsigned n_keys)
{
	struct dp_rings *g = dp->rings;
	unsigned n = dp_dpdk_queues(dp->dpdk);
	struct dp_multi *m;
	int rc = -ENOMEM;

	if (n > ARRAY_SIZE(m->loops) || g->n_free != g->n_slots ||
	    g->n_slots < n) {
		LOG_E(dp, "dpdk.queues %u: at most %zu, and at least one request "
		      "slot each (requests.slots %u)", n, ARRAY_SIZE(m->loops),
		      g->n_slots);
		return -EINVAL;
	}
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	dp->multi = m;
	m->n = n;
	m->sched = g;
	m->loops[0] = dp;
	m->priv = calloc(n, sizeof(*m->priv));
	m->slot_owner = calloc(g->n_slots, 1);
	if (!m->priv || !m->slot_owner)
		goto err;
	for (unsigned i = 0; i < n; i++) {
		unsigned first = (unsigned)((uint64_t)g->n_slots * i / n);
		unsigned end = (unsigned)((uint64_t)g->n_slots * (i + 1) / n);

		rc = priv_rings_init(&m->priv[i], g, first, end - first);
		if (rc)
			goto err;
		memset(m->slot_owner + first, (int)i, end - first);
	}
	/* The scheduler's slots are all lent out to the loops. */
	g->n_free = 0;
	dp->rings = &m->priv[0];
	for (unsigned i = 1; i < n; i++) {
		m->loops[i] = aligned_alloc(VELO_CACHE_LINE,
					    ALIGN_UP(sizeof(struct dp), 64));
		if (!m->loops[i]) {
			rc = -ENOMEM;
			goto err;
		}
		rc = dp_loop_init(m->loops[i], dp, i, keys, n_keys);
		if (rc) {
			free(m->loops[i]);
			m->loops[i] = NULL;
			goto err;
		}
	}
	m->ctr_registered = !ctr_block_register("mux", dp_mux_ctr_desc, m->ctr,
						DP_MUX_CTR__COUNT);
	LOG_I(dp, "dataplane: %u loops (one per DPDK queue), %u request slots "
	      "each, queue 0's loop forwards to the scheduler", n,
	      g->n_slots / n);
	return 0;
err:
	g->n_free = g->n_slots;
	dp->rings = g;
	dp_multi_fini(dp);
	return rc;
}

int dp_init(struct dp *dp, const struct dp_config *cfg,
	    const struct velo_psk *keys, unsigned n_keys, struct dp_rings *rings)
{
	char err[160] = "";
	int rc;

	memset(dp, 0, sizeof(*dp));
	dp->cfg = *cfg;
	dp->rings = rings;
	rc = dp_sess_config_check(&cfg->sess, err, sizeof(err));
	if (rc) {
		LOG_E(dp, "%s", err);
		return rc;
	}
	rc = dp_loss_init(&dp->loss, &cfg->loss, err, sizeof(err));
	if (rc) {
		LOG_E(dp, "%s", err);
		return rc;
	}
	if (dp_loss_active(&dp->loss)) {
		if (!IS_ENABLED(CONFIG_DP_LOSS_INJECT)) {
			LOG_E(dp, "loss.* is set but this build has no loss "
			      "injection (CONFIG_DP_LOSS_INJECT=n)");
			return -EINVAL;
		}
		dp->loss_on = true;
		LOG_W(dp, "loss injection ON: seed %llu rx data %g ctrl %g, tx "
		      "data %g ctrl %g, %u pattern(s)",
		      (unsigned long long)cfg->loss.seed, cfg->loss.rate[0][0],
		      cfg->loss.rate[0][1], cfg->loss.rate[1][0],
		      cfg->loss.rate[1][1], cfg->loss.n_patterns);
	}
	/* The socket's rx buffers take the session MTU. */
	dp->cfg.sock.mtu = cfg->sess.mtu;
	rc = dp_transport_open(dp);
	if (rc)
		return rc;
	/* Room for two batches before a flush: a burst's answers rarely
	 * exceed its datagrams, and a full queue just flushes early. */
	rc = dp_txq_init(&dp->txq, 2 * dp->cfg.sock.batch, cfg->sess.mtu,
			 dp->loss_on ? dp_tx_flush_loss : dp_tx_flush_plain, dp);
	if (rc)
		goto err_close_sock;
	if (IS_ENABLED(CONFIG_DP_DPDK) && dp->dpdk &&
	    dp_dpdk_queues(dp->dpdk) > 1) {
		rc = dp_multi_init(dp, keys, n_keys);
		if (rc)
			goto err_free_txq;
	}
	rc = dp_sess_init(&dp->sess, &cfg->sess, keys, n_keys, dp->rings,
			  &dp->txq, true);
	if (rc)
		goto err_multi;
	if (dp->multi) {
		/* One LOGON nonce cache for every loop (session.h). */
		struct dp_multi *m = dp->multi;

		rc = -pthread_spin_init(&m->nonce_lock, PTHREAD_PROCESS_PRIVATE);
		if (rc)
			goto err_fini_sess;
		m->nonce_lock_init = true;
		for (unsigned i = 0; i < m->n; i++)
			dp_sess_nonces_share(&m->loops[i]->sess, &dp->sess,
					     &m->nonce_lock);
	}
	rc = ctr_block_register("dp", dp_loss_ctr_desc, dp->loss.ctr,
				DP_LOSS_CTR__COUNT);
	if (rc)
		goto err_fini_sess;
	return 0;

err_fini_sess:
	dp_sess_fini(&dp->sess);
err_multi:
	if (dp->multi) {
		dp->rings->n_free = 0;	/* (priv[0], freed below) */
		dp->rings = rings;
		rings->n_free = rings->n_slots;
		dp_multi_fini(dp);
	}
err_free_txq:
	dp_txq_fini(&dp->txq);
err_close_sock:
	dp_transport_close(dp);
	return rc;
}

void dp_fini(struct dp *dp)
{
	ctr_block_unregister(dp->loss.ctr);
	dp_sess_fini(&dp->sess);
	if (dp->multi) {
		struct dp_rings *g = dp->multi->sched;

		dp_multi_fini(dp);
		dp->rings = g;
	}
	dp_txq_fini(&dp->txq);
	dp_transport_close(dp);
}

static __always_inline unsigned dp_poll_worker(struct dp *dp, const bool loss)
{
	struct dp_sess_table *t = &dp->sess;
	unsigned work = 0;
	int n;

	if (IS_ENABLED(CONFIG_DP_DPDK) && dp->dpdk) {
		/* Several loops: queue 0's forwards first, so that the
		 * responses it hands itself go out in this same poll. */
		if (dp->multi)
			work += dp_mux(dp);
		/* Frames: ARP and ICMP answered, UDP to the session layer
		 * (the clock first: datagrams are handled inside). */
		dp_sess_clock(t, clock_mono_ns(), clock_real_ns());
		work += dp_dpdk_rx(dp->dpq, t, loss ? &dp->loss : NULL);
		if (unlikely(dp->lcore == 0 &&
			     t->now_ns - dp->link_poll_ns > 1000000000ull)) {
			dp->link_poll_ns = t->now_ns;
			dp_dpdk_link_poll(dp->dpdk);
		}
		n = 0;
	} else {
		n = dp_sock_rx_burst(&dp->sock);
		dp_sess_clock(t, clock_mono_ns(), clock_real_ns());
	}
	if (unlikely(n < 0)) {
		t->dp_ctr[DP_CTR_rx_errors]++;
		n = 0;
	}
	if (n)
		t->dp_ctr[DP_CTR_rx_bursts]++;
	for (int i = 0; i < n; i++) {
		const uint8_t *buf = dp_sock_rx_data(&dp->sock, (unsigned)i);
		unsigned len = dp_sock_rx_len(&dp->sock, (unsigned)i);

		if (i + 1 < n)
			__builtin_prefetch(dp_sock_rx_data(&dp->sock, (unsigned)i + 1));
		/* (one longer than the MTU was truncated by the kernel: its
		 * buffer holds mtu + 8 rounded up) */
		dp_rx_datagram(t, loss ? &dp->loss : NULL, buf, len,
			       &dp->sock.rx_addr[i], NULL);
	}
	work += (unsigned)n;
	work += dp_sess_resp_poll(t, DP_RESP_BURST);
	dp_sess_tick(t);
	dp_sess_flush(t);
	dp_txq_flush(&dp->txq);
	if (t->kick_engine) {
		t->kick_engine = false;
		dp_wake_kick(&dp->rings->wake_sched);
	}
	t->dp_ctr[DP_CTR_polls]++;
	return work;
}

unsigned dp_poll(struct dp *dp)
{
	if (IS_ENABLED(CONFIG_DP_LOSS_INJECT) && dp->loss_on)
		return dp_poll_worker(dp, true);
	return dp_poll_worker(dp, false);
}

/* A port has no file descriptor to sleep on (vdevs without rx
 * interrupts): an idle DPDK loop naps this long at most, so a frame waits
 * at most that much more after an idle spell.  Busy polling (idle_backoff
 * off) is the production setting. */
#define DP_DPDK_IDLE_US 50

/* Queue 0's loop with several loops: anything to forward? */
static bool dp_multi_pending(const struct dp *dp)
{
	const struct dp_multi *m = dp->multi;

	if (m->has_pending || dp_resp_pending(m->sched))
		return true;
	for (unsigned i = 0; i < m->n; i++)
		if (dp_req_pending(&m->priv[i]))
			return true;
	return false;
}

static void dp_loop(struct dp *dp)
{
	/* An idle DPDK loop naps DP_DPDK_IDLE_US in ppoll(): with the
	 * default 50 us timer slack each nap lasted ~100 us and a frame
	 * arriving in one waited for it (PING p50 143 us on veth against
	 * 26 us for the socket, which wakes on its fd).  1 us slack. */
	if (IS_ENABLED(CONFIG_DP_DPDK) && dp->dpdk && dp->cfg.idle_backoff)
		prctl(PR_SET_TIMERSLACK, 1000ul, 0, 0, 0);
	while (!__atomic_load_n(&dp->stop, __ATOMIC_RELAXED)) {
		if (dp_poll(dp)) {
			dp->idle = 0;
			continue;
		}
		if (dp->cfg.idle_backoff && ++dp->idle >= dp->cfg.idle_polls) {
			/* Queue 0's loop with several loops is woken by the
			 * scheduler (the other loops' requests wait for its
			 * nap to end: DP_DPDK_IDLE_US at most). */
			struct dp_wake *w = dp->multi ? &dp->multi->sched->wake_dp
						      : &dp->rings->wake_dp;
			bool woke = false;

			/* Asleep on the socket and on the scheduler's kick. */
			dp_wake_prepare(w);
			if (!dp_resp_pending(dp->rings) &&
			    !(dp->multi && dp_multi_pending(dp))) {
				dp->sess.dp_ctr[DP_CTR_idle_sleeps]++;
				/* a DPDK loop's sock.fd is -1: ppoll skips
				 * it and the nap is bounded instead */
				dp_sock_wait(&dp->sock,
					     IS_ENABLED(CONFIG_DP_DPDK) && dp->dpdk ?
					     MIN(dp->cfg.idle_sleep_us, DP_DPDK_IDLE_US) :
					     dp->cfg.idle_sleep_us,
					     w->fd, &woke);
			}
			dp_wake_done(w, woke);
		} else {
			cpu_relax();
		}
	}
}

/* Shutdown: answers already produced go out, then end of session. */
static void dp_loop_end(struct dp *dp)
{
	dp_sess_clock(&dp->sess, clock_mono_ns(), clock_real_ns());
	dp_sess_resp_poll(&dp->sess, DP_RESP_BURST);
	dp_sess_flush(&dp->sess);
	dp_sess_close_all(&dp->sess);
	dp_txq_flush(&dp->txq);
}

static void *dp_loop_thread(void *arg)
{
	struct dp *w = arg;
	int cpu = dp_dpdk_lcore_cpu(w->lcore);
	char name[16];

	snprintf(name, sizeof(name), "velo-dp%u", w->lcore);
	pthread_setname_np(pthread_self(), name);
	if (cpu < 0)
		LOG_W(dp, "loop %u: the EAL has no lcore %u (dpdk.eal -l): not "
		      "pinned", w->lcore, w->lcore);
	else if (cpu_pin_self(cpu))
		LOG_W(dp, "loop %u: cannot pin to cpu %d", w->lcore, cpu);
	dp_loop(w);
	dp_loop_end(w);
	return NULL;
}

void dp_run(struct dp *dp)
{
	struct dp_multi *m = dp->multi;

	LOG_I(dp, "dataplane loop running (idle backoff %s)",
	      dp->cfg.idle_backoff ? "on" : "off");
	for (unsigned i = 1; m && i < m->n; i++) {
		int rc = pthread_create(&m->threads[i], NULL, dp_loop_thread,
					m->loops[i]);

		m->started[i] = rc == 0;
		if (rc)
			LOG_E(dp, "loop %u: pthread_create: %s (its queue is "
			      "not polled)", i, strerror(rc));
	}
	dp_loop(dp);
	if (m) {
		/* The last responses to the other loops, then their own
		 * shutdown (end of session to each of their clients). */
		dp_mux(dp);
		for (unsigned i = 1; i < m->n; i++) {
			if (!m->started[i])
				continue;
			__atomic_store_n(&m->loops[i]->stop, 1, __ATOMIC_RELAXED);
			pthread_join(m->threads[i], NULL);
			m->started[i] = false;
		}
	}
	dp_loop_end(dp);
	LOG_I(dp, "dataplane loop stopped");
}

void dp_stop(struct dp *dp)
{
	__atomic_store_n(&dp->stop, 1, __ATOMIC_RELAXED);
}
