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
#include <poll.h>
#include <string.h>
#include <sys/prctl.h>

#include <velo/compiler.h>

#include "../tools/lib/clock.h"
#include "../tools/lib/counters.h"
#include "../tools/lib/cpu.h"
#include "../tools/lib/log.h"
#include "dp.h"

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
		sent = dp_dpdk_tx(dp->dpdk, q->pkts, n);
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
	return dp->dpdk ? 0 : -errno;
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
	rc = dp_sess_init(&dp->sess, &cfg->sess, keys, n_keys, rings, &dp->txq,
			  true);
	if (rc)
		goto err_free_txq;
	rc = ctr_block_register("dp", dp_loss_ctr_desc, dp->loss.ctr,
				DP_LOSS_CTR__COUNT);
	if (rc)
		goto err_fini_sess;
	return 0;

err_fini_sess:
	dp_sess_fini(&dp->sess);
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
	dp_txq_fini(&dp->txq);
	dp_transport_close(dp);
}

static __always_inline unsigned dp_poll_worker(struct dp *dp, const bool loss)
{
	struct dp_sess_table *t = &dp->sess;
	unsigned work = 0;
	int n;

	if (IS_ENABLED(CONFIG_DP_DPDK) && dp->dpdk) {
		/* Frames: ARP and ICMP answered, UDP to the session layer
		 * (the clock first: datagrams are handled inside). */
		dp_sess_clock(t, clock_mono_ns(), clock_real_ns());
		work += dp_dpdk_rx(dp->dpdk, t, loss ? &dp->loss : NULL);
		if (unlikely(t->now_ns - dp->link_poll_ns > 1000000000ull)) {
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
		if (loss && dp_loss_drop(&dp->loss, DP_LOSS_RX, buf,
					 MIN(len, dp->sock.buf_size)))
			continue;
		if (unlikely(len > t->cfg.mtu)) {
			/* Truncated by the kernel: longer than any buffer. */
			t->dp_ctr[DP_CTR_rx_datagrams]++;
			t->dp_ctr[DP_CTR_rx_bytes] += len;
			t->dp_ctr[DP_CTR_drop_oversize]++;
			continue;
		}
		dp_sess_rx(t, buf, len, &dp->sock.rx_addr[i]);
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

static void dp_wait_fd(int fd, unsigned timeout_us, bool *woke)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	struct timespec ts = { .tv_sec = 0, .tv_nsec = (long)timeout_us * 1000 };

	*woke = ppoll(&p, fd >= 0, &ts, NULL) > 0 && (p.revents & POLLIN);
}

void dp_run(struct dp *dp)
{
	LOG_I(dp, "dataplane loop running (idle backoff %s)",
	      dp->cfg.idle_backoff ? "on" : "off");
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
			struct dp_wake *w = &dp->rings->wake_dp;
			bool woke = false;

			/* Asleep on the socket and on the scheduler's kick. */
			dp_wake_prepare(w);
			if (!dp_resp_pending(dp->rings)) {
				dp->sess.dp_ctr[DP_CTR_idle_sleeps]++;
				if (IS_ENABLED(CONFIG_DP_DPDK) && dp->dpdk)
					dp_wait_fd(w->fd, MIN(dp->cfg.idle_sleep_us,
							      DP_DPDK_IDLE_US),
						   &woke);
				else
					dp_sock_wait(&dp->sock,
						     dp->cfg.idle_sleep_us,
						     w->fd, &woke);
			}
			dp_wake_done(w, woke);
		} else {
			cpu_relax();
		}
	}
	/* Shutdown: answers already produced go out, then end of session. */
	dp_sess_clock(&dp->sess, clock_mono_ns(), clock_real_ns());
	dp_sess_resp_poll(&dp->sess, DP_RESP_BURST);
	dp_sess_flush(&dp->sess);
	dp_sess_close_all(&dp->sess);
	dp_txq_flush(&dp->txq);
	LOG_I(dp, "dataplane loop stopped");
}

void dp_stop(struct dp *dp)
{
	__atomic_store_n(&dp->stop, 1, __ATOMIC_RELAXED);
}
