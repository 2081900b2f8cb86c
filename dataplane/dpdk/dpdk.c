// SPDX-License-Identifier: MIT
/*
 * dpdk.c — the DPDK transport (see dpdk.h).
 *
 * One port with dpdk.queues rx/tx queue pairs (RSS on the UDP 5-tuple when
 * more than one), each polled by one dataplane thread (dp.c), none of which
 * is an EAL lcore: the mempool is used without a per-lcore cache, which
 * costs one ring operation per burst.  The EAL pins the calling thread to
 * its first lcore; the caller's CPU affinity is restored afterwards so the
 * threads velod starts later keep the cores velod gives them.
 *
 * Receive: the session layer wants its datagram 8-byte aligned; a frame
 * starts at the mbuf headroom (128) so the UDP payload sits at 170 (2 mod
 * 8): it is copied into an aligned scratch buffer (one copy of <= MTU
 * bytes, ~40 ns for 1400 bytes here; the session layer then reads it once
 * for the tag).  Transmit: the session layer writes into the txq's buffers;
 * each datagram is copied behind headers written in place in an mbuf.
 * Mbufs are taken from and given back to the pool once per burst
 * (rte_pktmbuf_alloc_bulk / rte_pktmbuf_free_bulk): one ring operation for
 * the burst instead of one per frame.
 */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* velo's headers first: libbsd (pulled in by DPDK) defines __packed only
 * when it is not defined yet. */
#include <velo/compiler.h>

#include "../../tools/lib/counters.h"
#include "../../tools/lib/log.h"
#include "../rx.h"
#include "../xdp/xdp.h"
#include "dpdk.h"

#include <rte_eal.h>
#include <rte_lcore.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_mbuf_pool_ops.h>
#include <rte_mempool.h>

#define DP_DPDK_BURST_MAX 64
#define DP_DPDK_EAL_ARGS_MAX 64

static const struct ctr_desc dp_dpdk_ctr_desc[DP_DPDK_CTR__COUNT] = {
	foreach_dp_dpdk_counter(CTR_DESC)
};

/*
 * One rx/tx queue pair, polled by one dataplane thread: everything written
 * per frame lives here (its own packet-layer state, neighbour table and
 * counters), so queues share nothing on the hot path but the mbuf pool
 * (whose ring is multi-producer/multi-consumer).  Each queue learns its
 * peers' MACs from the datagrams it receives itself; RSS keeps a session's
 * datagrams on one queue, so the answers find their MAC there.
 */
struct dp_dpdk_q {
	struct dp_dpdk *parent;
	uint16_t port;
	uint16_t queue;
	unsigned burst;
	unsigned mtu;
	struct rte_mempool *pool;
	struct dp_pkt_if ifc;		/* .tx_csum_offload: the port's tx checksums */
	uint8_t *scratch;		/* (mtu + 64), 64-byte aligned */
	struct rte_mbuf *rx[DP_DPDK_BURST_MAX];
	struct rte_mbuf *tx[DP_DPDK_BURST_MAX];
	unsigned n_tx;
	/* frames of this rx burst done with: freed in one call at its end */
	struct rte_mbuf *done[DP_DPDK_BURST_MAX];
	unsigned n_done;
	char name_dpdk[24], name_pkt[24];	/* counter block prefixes */
	uint64_t ctr[DP_DPDK_CTR__COUNT];
} __cache_aligned;

struct dp_dpdk {
	uint16_t port;
	unsigned nq;
	struct rte_mempool *pool;
	struct dp_xdp *xdp;		/* our XDP program under net_af_xdp */
	struct dp_dpdk_q *q[DP_DPDK_QUEUES_MAX];
};

/* The EAL can be initialised once per process. */
static bool eal_done;

static int eal_init(const char *args)
{
	static char buf[2048];
	char *argv[DP_DPDK_EAL_ARGS_MAX + 2], *save = NULL, *tok;
	int argc = 0, rc;
	cpu_set_t aff;
	bool have_aff;

	if (eal_done)
		return 0;
	if (strlen(args) >= sizeof(buf)) {
		LOG_E(dp, "dpdk.eal: longer than %zu bytes", sizeof(buf) - 1);
		return -EINVAL;
	}
	/* The EAL keeps pointers into argv: static storage. */
	snprintf(buf, sizeof(buf), "%s", args);
	argv[argc++] = (char *)"velod";
	for (tok = strtok_r(buf, " \t", &save); tok;
	     tok = strtok_r(NULL, " \t", &save)) {
		if (argc > DP_DPDK_EAL_ARGS_MAX) {
			LOG_E(dp, "dpdk.eal: more than %d arguments",
			      DP_DPDK_EAL_ARGS_MAX);
			return -EINVAL;
		}
		argv[argc++] = tok;
	}
	argv[argc] = NULL;
	have_aff = sched_getaffinity(0, sizeof(aff), &aff) == 0;
	rc = rte_eal_init(argc, argv);
	if (have_aff)
		sched_setaffinity(0, sizeof(aff), &aff);
	if (rc < 0) {
		rc = rte_errno ? -rte_errno : -EINVAL;
		LOG_E(dp, "rte_eal_init(\"%s\"): %s", args, rte_strerror(-rc));
		return rc;
	}
	eal_done = true;
	return 0;
}

/*
 * The mbuf pool.  Without hugepages (--no-huge: development, vdevs that do
 * no DMA) it is created with RTE_MEMPOOL_F_NO_IOVA_CONTIG, so its objects
 * are packed in one virtually contiguous chunk.  Without the flag the
 * mempool keeps each object inside one 4 KiB page: 2.4 KB mbufs sit one per
 * page, while net_af_xdp registers as its umem only populated_size x object
 * size bytes from the pool's first address.  The last ~40 % of the mbufs
 * lay outside the umem; the kernel dropped tx descriptors that pointed
 * there (never completed: the mbufs leaked too), so transmit stopped for
 * good once allocation reached them: ~1,343 PINGs with 8192 mbufs, ~160
 * with 4096, none with 16384 in 3,000 (two allocations per PING: the fill
 * ring's refill and the reply).  With hugepages (a NIC, DMA) objects must
 * stay IOVA-contiguous within a page and 2 MB/1 GB pages hold them packed
 * anyway: the ordinary pool.
 */
static struct rte_mempool *pool_create(const char *name, unsigned n, int socket)
{
	struct rte_pktmbuf_pool_private priv = {
		.mbuf_data_room_size = RTE_MBUF_DEFAULT_BUF_SIZE,
		.mbuf_priv_size = 0,
	};
	struct rte_mempool *mp;
	int rc;

	if (rte_eal_has_hugepages())
		return rte_pktmbuf_pool_create(name, n, 0, 0,
					       RTE_MBUF_DEFAULT_BUF_SIZE, socket);
	mp = rte_mempool_create_empty(name, n, sizeof(struct rte_mbuf) +
				      RTE_MBUF_DEFAULT_BUF_SIZE, 0, sizeof(priv),
				      socket, RTE_MEMPOOL_F_NO_IOVA_CONTIG);
	if (!mp)
		return NULL;
	rc = rte_mempool_set_ops_byname(mp, rte_mbuf_best_mempool_ops(), NULL);
	if (rc) {
		rte_errno = -rc;
		goto err;
	}
	rte_pktmbuf_pool_init(mp, &priv);
	rc = rte_mempool_populate_default(mp);
	if (rc < 0) {
		rte_errno = -rc;
		goto err;
	}
	rte_mempool_obj_iter(mp, rte_pktmbuf_init, NULL);
	if (mp->nb_mem_chunks != 1)
		LOG_W(dp, "dpdk: mbuf pool in %u memory chunks: net_af_xdp "
		      "needs one (give the EAL more memory, -m)",
		      mp->nb_mem_chunks);
	return mp;
err:
	rte_mempool_free(mp);
	return NULL;
}

/* Configure and start the port; *@tx_offload: whether it fills the IPv4 and
 * UDP checksums of what we send (each queue's packet layer keeps it). */
static int port_setup(struct dp_dpdk *d, const struct dp_dpdk_config *cfg,
		      bool *tx_offload)
{
	struct rte_eth_dev_info info;
	struct rte_eth_conf conf;
	struct rte_eth_rxconf rxc;
	struct rte_eth_txconf txc;
	uint16_t nrx = (uint16_t)cfg->rx_desc, ntx = (uint16_t)cfg->tx_desc;
	uint64_t rx_ck = RTE_ETH_RX_OFFLOAD_IPV4_CKSUM | RTE_ETH_RX_OFFLOAD_UDP_CKSUM;
	uint64_t tx_ck = RTE_ETH_TX_OFFLOAD_IPV4_CKSUM | RTE_ETH_TX_OFFLOAD_UDP_CKSUM;
	int rc;

	rc = rte_eth_dev_info_get(d->port, &info);
	if (rc) {
		LOG_E(dp, "dpdk: port %u info: %s", d->port, rte_strerror(-rc));
		return rc;
	}
	memset(&conf, 0, sizeof(conf));
	*tx_offload = false;
	if (cfg->queues > 1) {
		/* Several dataplane lcores: spread sessions by the UDP
		 * 5-tuple, so one client's datagrams stay on one lcore. */
		conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
		conf.rx_adv_conf.rss_conf.rss_hf = RTE_ETH_RSS_NONFRAG_IPV4_UDP &
						   info.flow_type_rss_offloads;
	}
	if (cfg->offloads && (info.rx_offload_capa & rx_ck) == rx_ck)
		conf.rxmode.offloads |= rx_ck;
	if (cfg->offloads && (info.tx_offload_capa & tx_ck) == tx_ck) {
		conf.txmode.offloads |= tx_ck;
		*tx_offload = true;
	}
	rc = rte_eth_dev_configure(d->port, (uint16_t)cfg->queues,
				   (uint16_t)cfg->queues, &conf);
	if (rc) {
		LOG_E(dp, "dpdk: configure port %u: %s", d->port, rte_strerror(-rc));
		return rc;
	}
	rc = rte_eth_dev_adjust_nb_rx_tx_desc(d->port, &nrx, &ntx);
	if (rc)
		return rc;
	rxc = info.default_rxconf;
	rxc.offloads = conf.rxmode.offloads;
	txc = info.default_txconf;
	txc.offloads = conf.txmode.offloads;
	for (uint16_t q = 0; q < cfg->queues; q++) {
		rc = rte_eth_rx_queue_setup(d->port, q, nrx,
					    (unsigned)rte_eth_dev_socket_id(d->port),
					    &rxc, d->pool);
		if (!rc)
			rc = rte_eth_tx_queue_setup(d->port, q, ntx,
						    (unsigned)rte_eth_dev_socket_id(d->port),
						    &txc);
		if (rc) {
			LOG_E(dp, "dpdk: port %u queue %u setup: %s", d->port, q,
			      rte_strerror(-rc));
			return rc;
		}
	}
	rc = rte_eth_dev_start(d->port);
	if (rc) {
		LOG_E(dp, "dpdk: start port %u: %s", d->port, rte_strerror(-rc));
		return rc;
	}
	LOG_I(dp, "dpdk: port %u (%s) started: %u queue(s), %u/%u descriptors, "
	      "checksums rx %s tx %s", d->port, info.driver_name, cfg->queues,
	      nrx, ntx, conf.rxmode.offloads ? "offloaded" : "software",
	      *tx_offload ? "offloaded" : "software");
	return 0;
}

void dp_dpdk_link_poll(struct dp_dpdk *dd)
{
	struct dp_dpdk_q *d = dd->q[0];
	struct rte_eth_link link;
	uint64_t up;

	memset(&link, 0, sizeof(link));
	if (rte_eth_link_get_nowait(d->port, &link))
		return;
	up = link.link_status == RTE_ETH_LINK_UP;
	if (IS_ENABLED(CONFIG_DP_XDP) && dd->xdp)
		dp_xdp_stats_poll(dd->xdp);
	/* A leak shows as a falling gauge (rte_mempool_avail_count walks
	 * no per-lcore caches here: the pool has none). */
	__atomic_store_n(&d->ctr[DP_DPDK_CTR_mbufs_free],
			 rte_mempool_avail_count(d->pool), __ATOMIC_RELAXED);
	if (up != d->ctr[DP_DPDK_CTR_link_up])
		d->ctr[DP_DPDK_CTR_link_changes]++;
	__atomic_store_n(&d->ctr[DP_DPDK_CTR_link_up], up, __ATOMIC_RELAXED);
	__atomic_store_n(&d->ctr[DP_DPDK_CTR_link_speed_mbps],
			 up ? link.link_speed : 0, __ATOMIC_RELAXED);
}

/*
 * A net_af_xdp vdev given our program (xdp_prog=): tell the program our
 * address and port, and read its counters.  The PMD loaded and attached it;
 * until configured it passes everything to the kernel.
 */
static int xdp_attach(struct dp_dpdk *d, const char *eal)
{
	const char *v = strstr(eal, "net_af_xdp"), *ifp;
	char ifname[64];
	size_t n;

	if (!v || !strstr(v, "xdp_prog="))
		return 0;
	if (!IS_ENABLED(CONFIG_DP_XDP)) {
		LOG_W(dp, "dpdk: xdp_prog given but this build has no "
		      "CONFIG_DP_XDP: its port is not configured (all frames "
		      "go to the kernel)");
		return 0;
	}
	ifp = strstr(v, "iface=");
	if (!ifp) {
		LOG_E(dp, "dpdk: net_af_xdp without iface=");
		return -EINVAL;
	}
	ifp += 6;
	n = strcspn(ifp, ", \t");
	if (!n || n >= sizeof(ifname))
		return -EINVAL;
	memcpy(ifname, ifp, n);
	ifname[n] = 0;
	d->xdp = dp_xdp_open(ifname, d->q[0]->ifc.ip, d->q[0]->ifc.port);
	dp_dpdk_link_poll(d);
	return d->xdp ? 0 : -errno;
}

/* Queue @i's state and counter blocks ("dpdk"/"pkt" for queue 0,
 * "dpdk.q<i>"/"pkt.q<i>" for the others). */
static int queue_open(struct dp_dpdk *d, unsigned i,
		      const struct dp_dpdk_config *cfg,
		      const struct dp_addr *local, const uint8_t mac[6],
		      unsigned mtu, unsigned burst, bool tx_offload)
{
	struct dp_dpdk_q *q = aligned_alloc(VELO_CACHE_LINE, sizeof(*q));
	int rc;

	if (!q)
		return -ENOMEM;
	memset(q, 0, sizeof(*q));
	q->parent = d;
	q->port = d->port;
	q->queue = (uint16_t)i;
	q->burst = burst;
	q->mtu = mtu;
	q->pool = d->pool;
	q->scratch = aligned_alloc(VELO_CACHE_LINE, ALIGN_UP(mtu + 64, 64u));
	if (!q->scratch) {
		free(q);
		return -ENOMEM;
	}
	rc = dp_pkt_if_init(&q->ifc, mac, local->u.in4.sin_addr.s_addr,
			    local->u.in4.sin_port, (uint16_t)cfg->vlan);
	if (rc) {
		LOG_E(dp, "dpdk: bad local address or MAC");
		goto err_free;
	}
	q->ifc.tx_csum_offload = tx_offload;
	if (i) {
		snprintf(q->name_dpdk, sizeof(q->name_dpdk), "dpdk.q%u", i);
		snprintf(q->name_pkt, sizeof(q->name_pkt), "pkt.q%u", i);
	} else {
		snprintf(q->name_dpdk, sizeof(q->name_dpdk), "dpdk");
		snprintf(q->name_pkt, sizeof(q->name_pkt), "pkt");
	}
	rc = ctr_block_register(q->name_dpdk, dp_dpdk_ctr_desc, q->ctr,
				DP_DPDK_CTR__COUNT);
	if (rc)
		goto err_free;
	rc = ctr_block_register(q->name_pkt, dp_pkt_ctr_desc, q->ifc.ctr,
				DP_PKT_CTR__COUNT);
	if (rc) {
		ctr_block_unregister(q->ctr);
		goto err_free;
	}
	d->q[i] = q;
	return 0;

err_free:
	free(q->scratch);
	free(q);
	return rc;
}

static void queue_close(struct dp_dpdk_q *q)
{
	if (!q)
		return;
	ctr_block_unregister(q->ifc.ctr);
	ctr_block_unregister(q->ctr);
	if (q->n_tx)
		rte_pktmbuf_free_bulk(q->tx, q->n_tx);
	free(q->scratch);
	free(q);
}

struct dp_dpdk *dp_dpdk_open(const struct dp_dpdk_config *cfg,
			     const struct dp_addr *local, unsigned mtu,
			     unsigned burst)
{
	struct rte_ether_addr mac;
	struct dp_dpdk *d;
	unsigned mbufs;
	bool tx_offload;
	char name[32];
	int rc;

	if (local->u.sa.sa_family != AF_INET || !local->u.in4.sin_port) {
		LOG_E(dp, "dpdk: listen must be an IPv4 address and a port");
		errno = EINVAL;
		return NULL;
	}
	if (!burst || burst > DP_DPDK_BURST_MAX || !cfg->queues ||
	    cfg->queues > DP_DPDK_QUEUES_MAX ||
	    cfg->rx_desc < 32 || cfg->tx_desc < 32 || cfg->vlan > 4094 ||
	    mtu + DP_PKT_HDR_LEN_MAX > RTE_MBUF_DEFAULT_DATAROOM) {
		LOG_E(dp, "dpdk: bad configuration (burst 1..%d, queues 1..%d, "
		      "descriptors >= 32, vlan <= 4094, mtu + %d <= %d)",
		      DP_DPDK_BURST_MAX, DP_DPDK_QUEUES_MAX, DP_PKT_HDR_LEN_MAX,
		      RTE_MBUF_DEFAULT_DATAROOM);
		errno = EINVAL;
		return NULL;
	}
	rc = eal_init(cfg->eal ? cfg->eal : "");
	if (rc) {
		errno = -rc;
		return NULL;
	}
	if (!rte_eth_dev_is_valid_port((uint16_t)cfg->port)) {
		LOG_E(dp, "dpdk: no port %u (%u available: check dpdk.eal's "
		      "--vdev or the PCI allow-list)", cfg->port,
		      (unsigned)rte_eth_dev_count_avail());
		errno = ENODEV;
		return NULL;
	}
	d = calloc(1, sizeof(*d));
	if (!d) {
		errno = ENOMEM;
		return NULL;
	}
	d->port = (uint16_t)cfg->port;
	d->nq = cfg->queues;
	/* Pool budget: every rx descriptor holds an mbuf, every tx
	 * descriptor may, plus one rx burst, one tx burst and replies in
	 * flight, plus slack for the PMD's own staging; per queue. */
	mbufs = cfg->mbufs ? cfg->mbufs
			   : cfg->queues * (cfg->rx_desc + cfg->tx_desc +
					    4 * burst) + 256;
	snprintf(name, sizeof(name), "velo_mb_%u", cfg->port);
	d->pool = pool_create(name, mbufs, rte_eth_dev_socket_id(d->port));
	if (!d->pool) {
		rc = -(rte_errno ? rte_errno : ENOMEM);
		LOG_E(dp, "dpdk: mbuf pool of %u: %s", mbufs, rte_strerror(-rc));
		goto err_free;
	}
	rc = port_setup(d, cfg, &tx_offload);
	if (rc)
		goto err_free_pool;
	rc = rte_eth_macaddr_get(d->port, &mac);
	if (rc) {
		LOG_E(dp, "dpdk: no MAC address for port %u", d->port);
		goto err_stop;
	}
	for (unsigned i = 0; i < d->nq; i++) {
		rc = queue_open(d, i, cfg, local, mac.addr_bytes, mtu, burst,
				tx_offload);
		if (rc)
			goto err_queues;
	}
	dp_dpdk_link_poll(d);
	LOG_I(dp, "dpdk: port %u mac %02x:%02x:%02x:%02x:%02x:%02x, link %s "
	      "%u Mb/s, %u mbufs, %u queue(s)", d->port, mac.addr_bytes[0],
	      mac.addr_bytes[1], mac.addr_bytes[2], mac.addr_bytes[3],
	      mac.addr_bytes[4], mac.addr_bytes[5],
	      d->q[0]->ctr[DP_DPDK_CTR_link_up] ? "up" : "down",
	      (unsigned)d->q[0]->ctr[DP_DPDK_CTR_link_speed_mbps], mbufs, d->nq);
	rc = xdp_attach(d, cfg->eal ? cfg->eal : "");
	if (rc)
		goto err_queues;
	return d;

err_queues:
	for (unsigned i = 0; i < d->nq; i++)
		queue_close(d->q[i]);
err_stop:
	rte_eth_dev_stop(d->port);
	rte_eth_dev_close(d->port);
err_free_pool:
	rte_mempool_free(d->pool);
err_free:
	free(d);
	errno = -rc;
	return NULL;
}

void dp_dpdk_close(struct dp_dpdk *d)
{
	if (!d)
		return;
	if (IS_ENABLED(CONFIG_DP_XDP))
		dp_xdp_close(d->xdp);
	for (unsigned i = 0; i < d->nq; i++)
		queue_close(d->q[i]);
	rte_eth_dev_stop(d->port);
	rte_eth_dev_close(d->port);
	rte_mempool_free(d->pool);
	free(d);
}

int dp_dpdk_lcore_cpu(unsigned i)
{
	unsigned lc = rte_get_next_lcore((unsigned)-1, 0, 0);

	while (i-- && lc < RTE_MAX_LCORE)
		lc = rte_get_next_lcore(lc, 0, 0);
	return lc < RTE_MAX_LCORE ? (int)rte_lcore_to_cpu_id((int)lc) : -1;
}

unsigned dp_dpdk_queues(const struct dp_dpdk *d)
{
	return d->nq;
}

struct dp_dpdk_q *dp_dpdk_queue(struct dp_dpdk *d, unsigned i)
{
	return i < d->nq ? d->q[i] : NULL;
}

/* Send the queued frames; return how many were dropped (tx ring full). */
static unsigned tx_push(struct dp_dpdk_q *d)
{
	unsigned dropped = 0;
	uint16_t sent = 0;
	unsigned spins = 0;

	while (sent < d->n_tx) {
		uint16_t k = rte_eth_tx_burst(d->port, d->queue, d->tx + sent,
					      (uint16_t)(d->n_tx - sent));

		sent = (uint16_t)(sent + k);
		/* Bounded: a full tx ring drains in microseconds; past that
		 * the peer's retransmission recovers the datagrams. */
		if (!k && ++spins > 16)
			break;
	}
	d->ctr[DP_DPDK_CTR_tx_mbufs] += sent;
	if (sent < d->n_tx) {
		dropped = d->n_tx - sent;
		d->ctr[DP_DPDK_CTR_tx_full] += dropped;
		rte_pktmbuf_free_bulk(d->tx + sent, dropped);
	}
	d->n_tx = 0;
	return dropped;
}

static __always_inline void rx_one(struct dp_dpdk_q *d, struct dp_sess_table *t,
				   struct dp_loss *loss, struct rte_mbuf *m)
{
	struct dp_pkt_rx_info info;
	uint8_t *frame = rte_pktmbuf_mtod(m, uint8_t *);
	enum dp_pkt_verdict v;

	if (unlikely(m->nb_segs != 1)) {
		d->ctr[DP_DPDK_CTR_rx_multiseg]++;
		d->done[d->n_done++] = m;
		return;
	}
	/* The port's verdict replaces the software checksums when it has
	 * checked both; a bad or unknown one is re-checked (and counted). */
	d->ifc.rx_csum_ok = (m->ol_flags & (RTE_MBUF_F_RX_IP_CKSUM_MASK |
					    RTE_MBUF_F_RX_L4_CKSUM_MASK)) ==
			    (RTE_MBUF_F_RX_IP_CKSUM_GOOD | RTE_MBUF_F_RX_L4_CKSUM_GOOD);
	v = dp_pkt_rx(&d->ifc, frame, m->data_len, &info);
	if (v == DP_PKT_REPLY) {
		if (info.reply_len > m->data_len) {	/* padding to 60 */
			memset(frame + m->data_len, 0, info.reply_len - m->data_len);
		}
		m->data_len = (uint16_t)info.reply_len;
		m->pkt_len = info.reply_len;
		m->ol_flags = 0;
		if (d->n_tx == DP_DPDK_BURST_MAX)
			tx_push(d);
		d->tx[d->n_tx++] = m;
		d->ctr[DP_DPDK_CTR_replies_tx]++;
		return;
	}
	if (v == DP_PKT_UDP) {
		/* (the session layer's counters too: dp_rx_datagram) */
		if (unlikely(info.payload_len > d->mtu))
			d->ctr[DP_DPDK_CTR_rx_oversize]++;
		dp_rx_datagram(t, loss, frame + info.payload_off,
			       info.payload_len, &info.from, d->scratch);
	}
	d->done[d->n_done++] = m;
}

unsigned dp_dpdk_rx(struct dp_dpdk_q *d, struct dp_sess_table *t,
		    struct dp_loss *loss)
{
	uint16_t n = rte_eth_rx_burst(d->port, d->queue, d->rx,
				      (uint16_t)d->burst);

	if (!n)
		return 0;
	d->ctr[DP_DPDK_CTR_rx_bursts]++;
	d->ctr[DP_DPDK_CTR_rx_mbufs] += n;
	t->dp_ctr[DP_CTR_rx_bursts]++;
	/* Prefetch the headers two frames ahead (l3fwd's pattern). */
	for (unsigned i = 0; i < n && i < 2; i++)
		rte_prefetch0(rte_pktmbuf_mtod(d->rx[i], void *));
	for (unsigned i = 0; i < n; i++) {
		if (i + 2 < n)
			rte_prefetch0(rte_pktmbuf_mtod(d->rx[i + 2], void *));
		rx_one(d, t, loss, d->rx[i]);
	}
	/* (n <= burst <= DP_DPDK_BURST_MAX: done[] never overflows) */
	if (d->n_done) {
		rte_pktmbuf_free_bulk(d->done, d->n_done);
		d->n_done = 0;
	}
	if (d->n_tx)
		tx_push(d);
	return n;
}

/*
 * @k mbufs for the next frames: one bulk get from the pool.  The bulk get
 * is all or nothing; a pool too low for it (a leak, or a burst bigger than
 * the budget) falls back to one get per frame so as many frames as there
 * are mbufs still go out.  Return: how many of @mb were filled (the
 * caller counts the frames left without one).
 */
static unsigned tx_alloc(struct dp_dpdk_q *d, struct rte_mbuf **mb, unsigned k)
{
	unsigned got = 0;

	if (likely(!rte_pktmbuf_alloc_bulk(d->pool, mb, k)))
		return k;
	while (got < k && (mb[got] = rte_pktmbuf_alloc(d->pool)))
		got++;
	return got;
}

unsigned dp_dpdk_tx(struct dp_dpdk_q *d, const struct dp_pkt *pkts, unsigned n)
{
	unsigned hl = dp_pkt_hdr_len(&d->ifc), ok = 0;
	struct rte_mbuf *mb[DP_DPDK_BURST_MAX];

	for (unsigned i = 0; i < n; ) {
		unsigned k = MIN(n - i, (unsigned)DP_DPDK_BURST_MAX), got, used = 0;

		got = tx_alloc(d, mb, k);
		for (unsigned j = 0; j < k; j++) {
			const struct dp_pkt *p = &pkts[i + j];
			struct rte_mbuf *m;
			uint8_t *frame;
			int len;

			if (unlikely(p->len + hl > RTE_MBUF_DEFAULT_DATAROOM))
				continue;	/* cannot happen: mtu checked at open */
			if (unlikely(used == got)) {
				/* the pool ran dry: these frames had none */
				d->ctr[DP_DPDK_CTR_tx_alloc_fail] += k - j;
				break;
			}
			m = mb[used];
			frame = rte_pktmbuf_mtod(m, uint8_t *);
			memcpy(frame + hl, p->data, p->len);
			len = dp_pkt_udp_build(&d->ifc, frame, p->len, &p->addr);
			if (unlikely(len < 0))
				continue;	/* m is reused for the next frame */
			used++;
			m->data_len = (uint16_t)len;
			m->pkt_len = (uint32_t)len;
			if (d->ifc.tx_csum_offload) {
				m->ol_flags = RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_IP_CKSUM |
					      RTE_MBUF_F_TX_UDP_CKSUM;
				m->l2_len = hl - DP_PKT_IP_LEN - DP_PKT_UDP_LEN;
				m->l3_len = DP_PKT_IP_LEN;
			}
			/* frames the rx path queued (ARP, ICMP replies) may be
			 * among those dropped: ok never goes below zero */
			if (d->n_tx == DP_DPDK_BURST_MAX)
				ok -= MIN(ok, tx_push(d));
			d->tx[d->n_tx++] = m;
			ok++;
		}
		if (unlikely(used < got))	/* frames that were not built */
			rte_pktmbuf_free_bulk(mb + used, got - used);
		i += k;
	}
	if (d->n_tx)
		ok -= MIN(ok, tx_push(d));
	return ok;
}
