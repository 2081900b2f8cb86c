/* SPDX-License-Identifier: MIT */
/*
 * dataplane/dpdk/dpdk.h — the DPDK transport (CONFIG_DP_DPDK): EAL
 * initialisation from velod's configuration, one mbuf pool and one port
 * with rx/tx queues created at init, and the burst functions the dataplane
 * loop (dp.c) calls instead of the socket's.  Frames go through the packet
 * layer (pkt.h) and then into the same session layer as the socket
 * transport.
 *
 * This header has no DPDK includes: dp.h embeds the configuration and a
 * pointer, and builds without DPDK installed when CONFIG_DP_DPDK=n.
 */
#ifndef VELO_DP_DPDK_H
#define VELO_DP_DPDK_H

#include <stdbool.h>
#include <stdint.h>

#include "../loss.h"
#include "../session.h"
#include "../sock.h"
#include "pkt.h"

/* Transport-level counters, block "dpdk". */
#define foreach_dp_dpdk_counter(X)                                            \
	X(rx_bursts, "non-empty rx bursts")                                   \
	X(rx_mbufs, "mbufs received")                                         \
	X(rx_multiseg, "frames in several mbufs (dropped: larger than the MTU)") \
	X(rx_oversize, "datagrams longer than the session MTU (dropped)")     \
	X(tx_mbufs, "frames handed to the port")                              \
	X(tx_full, "frames dropped: the tx queue was full")                   \
	X(tx_alloc_fail, "datagrams dropped: mbuf pool empty")                \
	X(replies_tx, "ARP/ICMP replies sent")                                \
	X(link_up, "1 while the port's link is up")                           \
	X(link_speed_mbps, "the port's link speed")                           \
	X(link_changes, "link status changes seen")                           \
	X(mbufs_free, "mbufs free in the pool (sampled once a second)")

enum dp_dpdk_ctr {
#define X(name, help) DP_DPDK_CTR_##name,
	foreach_dp_dpdk_counter(X)
#undef X
	DP_DPDK_CTR__COUNT
};

struct dp_dpdk_config {
	const char *eal;	/* EAL arguments, space-separated, e.g.
				 * "--no-huge --no-pci -m 128
				 *  --vdev=net_af_packet0,iface=eth1" */
	unsigned port;		/* ethdev port id (0: the first) */
	unsigned mbufs;		/* pool size; 0: rx_desc + tx_desc + 4 x burst + 256 */
	unsigned rx_desc;	/* rx ring descriptors */
	unsigned tx_desc;
	unsigned queues;	/* rx/tx queue pairs = dataplane threads, with
				 * RSS on the UDP 5-tuple when > 1 (dp.c) */
	unsigned vlan;		/* 802.1Q id, 0 untagged */
	bool offloads;		/* use checksum offloads the port has */
};

/* Defaults: development vdev settings without a port (dpdk.eal adds one). */
static inline void dp_dpdk_config_default(struct dp_dpdk_config *c)
{
	c->eal = "--no-huge --no-pci -m 128 --no-telemetry";
	c->port = 0;
	c->mbufs = 0;
	c->rx_desc = 512;
	c->tx_desc = 512;
	c->queues = 1;
	c->vlan = 0;
	c->offloads = true;
}

#define DP_DPDK_QUEUES_MAX 16

struct dp_dpdk;
struct dp_dpdk_q;	/* one rx/tx queue pair, polled by one thread */

/*
 * dp_dpdk_open() - initialise the EAL (once per process), create the mbuf
 * pool, configure and start the port, register the "dpdk" and "pkt"
 * counter blocks.
 * @local: our IPv4 address and UDP port (from velod's "listen").
 * @mtu:   largest datagram (session MTU).
 * @burst: rx/tx burst size.
 * Return: the transport, or NULL with errno set: EINVAL (bad configuration,
 * not IPv4, reason logged), ENODEV (no such port), ENOMEM, or the EAL's.
 */
struct dp_dpdk *dp_dpdk_open(const struct dp_dpdk_config *cfg,
			     const struct dp_addr *local, unsigned mtu,
			     unsigned burst);
void dp_dpdk_close(struct dp_dpdk *d);

#ifndef CONFIG_DP_DPDK
/* Builds without DPDK: dp.c's multi-queue code is never reached (no port
 * is ever opened) but must link. */
static inline unsigned dp_dpdk_queues(const struct dp_dpdk *d)
{
	(void)d;
	return 1;
}

static inline struct dp_dpdk_q *dp_dpdk_queue(struct dp_dpdk *d, unsigned i)
{
	(void)d;
	(void)i;
	return NULL;
}

static inline int dp_dpdk_lcore_cpu(unsigned i)
{
	(void)i;
	return -1;
}
#else
/* Queue pairs, and queue @i (NULL past the last).  Queue 0 registers the
 * "dpdk" and "pkt" counter blocks, queue i > 0 "dpdk.q<i>" and "pkt.q<i>";
 * the link and XDP figures are queue 0's. */
unsigned dp_dpdk_queues(const struct dp_dpdk *d);
struct dp_dpdk_q *dp_dpdk_queue(struct dp_dpdk *d, unsigned i);

/*
 * dp_dpdk_lcore_cpu() - the CPU of the EAL's @i-th lcore (in the order of
 * dpdk.eal's -l list), -1 when it has fewer: where queue i's thread runs.
 */
int dp_dpdk_lcore_cpu(unsigned i);
#endif

/*
 * dp_dpdk_rx() - receive one burst on queue @q: answer ARP and ICMP echo,
 * hand UDP datagrams for our port to the session layer (through @loss when
 * not NULL).  One thread per queue.  Return: frames received.
 */
unsigned dp_dpdk_rx(struct dp_dpdk_q *q, struct dp_sess_table *t,
		    struct dp_loss *loss);

/*
 * dp_dpdk_tx() - send @n datagrams on queue @q (payload + destination): each copied
 * behind freshly written headers in an mbuf, sent in bursts.
 * Return: datagrams handed to the port; the rest were dropped and counted.
 */
unsigned dp_dpdk_tx(struct dp_dpdk_q *q, const struct dp_pkt *pkts, unsigned n);

/* Refresh link status, the XDP counters and the pool gauge (cheap; queue
 * 0's thread calls it about once a second). */
void dp_dpdk_link_poll(struct dp_dpdk *d);

#endif /* VELO_DP_DPDK_H */
