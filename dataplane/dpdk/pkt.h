/* SPDX-License-Identifier: MIT */
/*
 * dataplane/dpdk/pkt.h — the packet layer under the session layer for the
 * kernel-bypass transports (DPDK, AF_XDP): Ethernet (with one 802.1Q tag),
 * ARP (answer requests for our address, learn senders), IPv4 (header
 * checks, no fragments, no options needed), ICMP echo, UDP to our port.
 *
 * Transport-neutral on purpose: it works on a frame in a byte buffer (an
 * mbuf's data, an AF_XDP umem frame, or a test's array), so it is unit
 * tested in every configuration (tests/unit/test_dp_pkt.c) and is the same
 * code whichever transport carries the frames.
 *
 * Receive: dp_pkt_rx() classifies one frame:
 *   DP_PKT_UDP    a datagram for our port: payload offset, length, sender;
 *   DP_PKT_REPLY  the frame was rewritten in place into an ARP reply or an
 *                 ICMP echo reply of *reply_len bytes: send it back;
 *   DP_PKT_DROP   dropped, and exactly one pkt.drop_<reason> was counted.
 * Transmit: dp_pkt_udp_build() writes Ethernet + IPv4 + UDP headers in front
 * of a payload (in place, the payload already at DP_PKT_HDR_LEN).
 *
 * Nothing allocates after dp_pkt_if_init(); the neighbour table is a small
 * fixed array (DP_PKT_NEIGH_MAX), replaced round robin when full, with the
 * entry last found or learned tried first: a datagram's sender is learned
 * on receive and its answer looked up on transmit, so both find it without
 * a scan while one peer is busy.
 */
#ifndef VELO_DP_PKT_H
#define VELO_DP_PKT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../../tools/lib/counters.h"
#include "../sock.h"

#define DP_PKT_ETH_LEN 14
#define DP_PKT_VLAN_LEN 4
#define DP_PKT_IP_LEN 20
#define DP_PKT_UDP_LEN 8
/* Headers in front of a datagram we send (no VLAN tag). */
#define DP_PKT_HDR_LEN (DP_PKT_ETH_LEN + DP_PKT_IP_LEN + DP_PKT_UDP_LEN)
/* ... and with a VLAN tag. */
#define DP_PKT_HDR_LEN_MAX (DP_PKT_HDR_LEN + DP_PKT_VLAN_LEN)
#define DP_PKT_NEIGH_MAX 64

/* Every frame received bumps rx_frames and then exactly one of: udp_rx,
 * arp_reply_tx, arp_learned_only, icmp_echo_tx, or one drop_*. */
#define foreach_dp_pkt_counter(X)                                             \
	X(rx_frames, "frames received")                                       \
	X(udp_rx, "datagrams for our port passed to the session layer")       \
	X(arp_reply_tx, "ARP requests for our address answered")              \
	X(arp_learned_only, "ARP replies/requests learned, nothing to answer") \
	X(icmp_echo_tx, "ICMP echo requests answered")                        \
	X(tx_frames, "datagram frames built for sending")                     \
	X(tx_no_neigh, "datagrams not sent: no MAC known for the peer")       \
	X(neigh_learned, "neighbour entries added or changed")                \
	X(drop_runt, "frames shorter than an Ethernet header")                \
	X(drop_not_for_us, "frames to another unicast MAC address")           \
	X(drop_vlan, "frames with another VLAN or stacked tags")              \
	X(drop_ethertype, "frames neither IPv4 nor ARP")                      \
	X(drop_arp_bad, "malformed ARP packets")                              \
	X(drop_arp_other, "ARP requests for another address")                 \
	X(drop_ip_short, "IPv4 packets shorter than their header")            \
	X(drop_ip_version, "IP version other than 4")                         \
	X(drop_ip_hdr_len, "IPv4 header length below 20 or beyond the packet") \
	X(drop_ip_csum, "IPv4 header checksum wrong")                         \
	X(drop_ip_len, "IPv4 total length wrong for the frame")               \
	X(drop_ip_frag, "IPv4 fragments (not reassembled)")                   \
	X(drop_ip_not_us, "IPv4 packets to another address")                  \
	X(drop_ip_src, "IPv4 packets from a broadcast, multicast or zero source") \
	X(drop_ip_proto, "IPv4 protocols other than UDP and ICMP")            \
	X(drop_icmp_bad, "ICMP too short or checksum wrong")                  \
	X(drop_icmp_type, "ICMP other than echo request")                     \
	X(drop_udp_short, "UDP shorter than its header")                      \
	X(drop_udp_len, "UDP length field wrong for the IP packet")           \
	X(drop_udp_csum, "UDP checksum wrong")                                \
	X(drop_udp_port, "UDP to another port")

enum dp_pkt_ctr {
#define X(name, help) DP_PKT_CTR_##name,
	foreach_dp_pkt_counter(X)
#undef X
	DP_PKT_CTR__COUNT
};

extern const struct ctr_desc dp_pkt_ctr_desc[DP_PKT_CTR__COUNT];

struct dp_pkt_neigh {
	uint32_t ip;		/* network order; 0: free */
	uint8_t mac[6];
	uint16_t reserved;
};

struct dp_pkt_if {
	uint8_t mac[6];
	uint16_t vlan;		/* 0: untagged; else the only VLAN accepted */
	uint32_t ip;		/* network order */
	uint16_t port;		/* network order */
	uint8_t ttl;
	bool rx_csum_ok;	/* the port verified IP/UDP checksums already */
	bool tx_csum_offload;	/* the port fills IP/UDP checksums */
	uint16_t ip_id;
	unsigned neigh_next;	/* round-robin victim when full */
	unsigned neigh_last;	/* entry last found or learned: tried first */
	struct dp_pkt_neigh neigh[DP_PKT_NEIGH_MAX];
	uint64_t ctr[DP_PKT_CTR__COUNT];
};

/*
 * dp_pkt_if_init() - set our addresses.
 * @mac: our MAC; @ip, @port: network order; @vlan: 0 or 1..4094.
 * Return: 0, or -EINVAL (zero/broadcast/multicast IP, port 0, vlan > 4094,
 * multicast MAC).
 */
int dp_pkt_if_init(struct dp_pkt_if *ifc, const uint8_t mac[6], uint32_t ip,
		   uint16_t port, uint16_t vlan);

enum dp_pkt_verdict { DP_PKT_DROP = 0, DP_PKT_UDP = 1, DP_PKT_REPLY = 2 };

struct dp_pkt_rx_info {
	unsigned payload_off;	/* UDP payload in the frame */
	unsigned payload_len;
	unsigned reply_len;	/* DP_PKT_REPLY: frame length to send */
	struct dp_addr from;	/* IPv4 sender */
};

/*
 * dp_pkt_rx() - classify one received frame (see the top of this file).
 * @frame: may be rewritten (replies are built in place).
 * Return: enum dp_pkt_verdict; @info filled for UDP and REPLY.
 */
enum dp_pkt_verdict dp_pkt_rx(struct dp_pkt_if *ifc, uint8_t *frame,
			      unsigned len, struct dp_pkt_rx_info *info);

/*
 * dp_pkt_udp_build() - write the headers of a datagram to @to in front of
 * the @len payload bytes found at @frame + dp_pkt_hdr_len(ifc).
 * Return: frame length, or -EHOSTUNREACH (no MAC known for @to: counted
 * tx_no_neigh), -EAFNOSUPPORT (not IPv4).
 */
int dp_pkt_udp_build(struct dp_pkt_if *ifc, uint8_t *frame, unsigned len,
		     const struct dp_addr *to);

/* Header bytes in front of a payload we send (42, or 46 with a VLAN). */
static inline unsigned dp_pkt_hdr_len(const struct dp_pkt_if *ifc)
{
	return ifc->vlan ? DP_PKT_HDR_LEN_MAX : DP_PKT_HDR_LEN;
}

/* Learn (or refresh) a neighbour (ignored for a broadcast, multicast or
 * zero IP or a multicast MAC). */
void dp_pkt_neigh_learn(struct dp_pkt_if *ifc, uint32_t ip, const uint8_t mac[6]);
/* The MAC of neighbour @ip, or NULL; remembers the entry (neigh_last). */
const uint8_t *dp_pkt_neigh_lookup(struct dp_pkt_if *ifc, uint32_t ip);

/* The Internet checksum (RFC 1071) of @len bytes, folded, not inverted,
 * added to @sum. */
uint32_t dp_pkt_csum_add(uint32_t sum, const void *data, size_t len);
uint16_t dp_pkt_csum_fold(uint32_t sum);

#endif /* VELO_DP_PKT_H */
