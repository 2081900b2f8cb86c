/* SPDX-License-Identifier: MIT */
/*
 * dataplane/xdp/xdp.h — velod's side of the XDP program (velo_xdp.bpf.c)
 * that DPDK's net_af_xdp vdev loads with xdp_prog=: find the program
 * attached to the interface, write the protocol's address and port into its
 * configuration map (until then it passes everything to the kernel), and
 * read its per-CPU counters into the "xdp" counter block.
 * CONFIG_DP_XDP (libbpf).
 */
#ifndef VELO_DP_XDP_H
#define VELO_DP_XDP_H

#include <stdint.h>

struct dp_xdp;

/*
 * dp_xdp_open() - attach to the velo XDP program on @ifname (in velod's
 * network namespace), configure it for @ip, @port (network order), register
 * the "xdp" counters.
 * Return: the handle, or NULL with errno: ENODEV (no such interface),
 * ENOENT (no XDP program there, or not ours: maps missing), or libbpf's.
 */
struct dp_xdp *dp_xdp_open(const char *ifname, uint32_t ip, uint16_t port);
/* Set the port back to 0 (the program passes everything), unregister. */
void dp_xdp_close(struct dp_xdp *x);
/* Sum the per-CPU counters into the block (a map read: ~2 us; call about
 * once a second, never per packet). */
void dp_xdp_stats_poll(struct dp_xdp *x);

#endif /* VELO_DP_XDP_H */
