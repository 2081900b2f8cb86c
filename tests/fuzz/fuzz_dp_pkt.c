// SPDX-License-Identifier: MIT
/*
 * fuzz_dp_pkt.c — libFuzzer target over the kernel-bypass packet layer
 * (dataplane/dpdk/pkt.c): any frame is classified without reading outside
 * it, counted exactly once, and what it hands on stays inside the frame:
 *   - a UDP payload lies within the frame and the IPv4 packet;
 *   - a reply is at most max(frame, 60) bytes (Ethernet minimum);
 *   - a reply built from the input, fed back in, never crashes either.
 * The input goes into a heap buffer of exactly its size (60 at least, the
 * padding a reply may use), so ASan sees any read past it.
 */
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>

#include "../../dataplane/dpdk/pkt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t outcomes(const struct dp_pkt_if *i)
{
	uint64_t s = i->ctr[DP_PKT_CTR_udp_rx] + i->ctr[DP_PKT_CTR_arp_reply_tx] +
		     i->ctr[DP_PKT_CTR_arp_learned_only] +
		     i->ctr[DP_PKT_CTR_icmp_echo_tx];

	for (unsigned c = DP_PKT_CTR_drop_runt; c < DP_PKT_CTR__COUNT; c++)
		s += i->ctr[c];
	return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t mac[6] = { 0x02, 0, 0, 0, 0, 0x0b };
	struct dp_pkt_if ifc;
	struct dp_pkt_rx_info info;
	size_t cap = size < 60 ? 60 : size;
	uint8_t *f;
	enum dp_pkt_verdict v;

	if (size > 9000)
		return 0;
	f = malloc(cap);
	if (!f)
		return 0;
	memset(f, 0, cap);
	memcpy(f, data, size);
	/* The VLAN id comes from the input so tagged paths are reached. */
	dp_pkt_if_init(&ifc, mac, inet_addr("10.1.0.2"), htons(7400),
		       size > 15 ? (uint16_t)(data[size - 1] & 7) : 0);
	/* Frames the fuzzer makes rarely carry our MAC: put it there half
	 * the time. */
	if (size >= 6 && (size & 1))
		memcpy(f, mac, 6);
	v = dp_pkt_rx(&ifc, f, (unsigned)size, &info);
	if (outcomes(&ifc) != 1 || ifc.ctr[DP_PKT_CTR_rx_frames] != 1)
		abort();
	if (v == DP_PKT_UDP &&
	    (info.payload_off > size || info.payload_len > size - info.payload_off))
		abort();
	if (v == DP_PKT_REPLY) {
		if (info.reply_len > cap)
			abort();
		dp_pkt_rx(&ifc, f, info.reply_len, &info);
	}
	free(f);
	return 0;
}
