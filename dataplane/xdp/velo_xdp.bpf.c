// SPDX-License-Identifier: (MIT OR GPL-2.0)
/*
 * velo_xdp.bpf.c — XDP program for one NIC shared by both planes: IPv4
 * UDP datagrams to the protocol's port (and address, when set) are
 * redirected to the AF_XDP socket of their rx queue (DPDK's net_af_xdp
 * vdev, which loads this object through libbpf with xdp_prog=); everything
 * else — ARP, ICMP, SSH, management, IPv6 — passes to the kernel stack.
 *
 * Maps (names are what velod looks up; the PMD needs "xsks_map"):
 *   xsks_map      XSKMAP, rx queue -> AF_XDP socket (filled by the PMD)
 *   velo_xdp_cfg  ARRAY[1]: { ip, port } in network order; velod writes
 *                 it at start.  Port 0 (not configured): pass everything.
 *   velo_xdp_ctr  PERCPU_ARRAY of counters (VELO_XDP_CTR_*), summed and
 *                 shown by velod as xdp.* counters.
 * Bounds: a fixed header walk (Ethernet, at most one 802.1Q tag, IPv4,
 * UDP), every access checked against data_end for the verifier; no loops.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "velo_xdp.h"

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, VELO_XDP_QUEUES_MAX);
	__type(key, __u32);
	__type(value, __u32);
} xsks_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct velo_xdp_cfg);
} velo_xdp_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, VELO_XDP_CTR__COUNT);
	__type(key, __u32);
	__type(value, __u64);
} velo_xdp_ctr SEC(".maps");

static __always_inline void count(__u32 which)
{
	__u64 *v = bpf_map_lookup_elem(&velo_xdp_ctr, &which);

	if (v)
		*v += 1;
}

static __always_inline int pass(__u32 why)
{
	count(why);
	return XDP_PASS;
}

SEC("xdp")
int velo_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct velo_xdp_cfg *cfg;
	struct iphdr *ip;
	struct udphdr *udp;
	__u32 zero = 0, queue;
	__u16 proto;
	void *l3;

	count(VELO_XDP_CTR_frames);
	cfg = bpf_map_lookup_elem(&velo_xdp_cfg, &zero);
	if (!cfg || !cfg->port)
		return pass(VELO_XDP_CTR_pass_unconfigured);
	if ((void *)(eth + 1) > end)
		return pass(VELO_XDP_CTR_pass_other);
	proto = eth->h_proto;
	l3 = eth + 1;
	if (proto == bpf_htons(ETH_P_8021Q)) {
		__u16 *tag = l3;

		if ((void *)(tag + 2) > end)
			return pass(VELO_XDP_CTR_pass_other);
		proto = tag[1];
		l3 = tag + 2;
	}
	if (proto != bpf_htons(ETH_P_IP))
		return pass(VELO_XDP_CTR_pass_other);
	ip = l3;
	if ((void *)(ip + 1) > end || ip->ihl < 5 || ip->protocol != IPPROTO_UDP)
		return pass(VELO_XDP_CTR_pass_other);
	if (cfg->ip && ip->daddr != cfg->ip)
		return pass(VELO_XDP_CTR_pass_other);
	/* A later fragment has no UDP header: the kernel's. */
	if (ip->frag_off & bpf_htons(0x1fff))
		return pass(VELO_XDP_CTR_pass_other);
	udp = (void *)ip + ip->ihl * 4;
	if ((void *)(udp + 1) > end || udp->dest != cfg->port)
		return pass(VELO_XDP_CTR_pass_other);
	/* The verifier wants map keys on the stack, not in the context. */
	queue = ctx->rx_queue_index;
	if (bpf_map_lookup_elem(&xsks_map, &queue)) {
		count(VELO_XDP_CTR_redirected);
		return bpf_redirect_map(&xsks_map, queue, XDP_PASS);
	}
	/* No socket on this queue (velod down, or RSS sent it elsewhere):
	 * the kernel answers ICMP port unreachable, nothing is lost silently. */
	return pass(VELO_XDP_CTR_pass_no_socket);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
