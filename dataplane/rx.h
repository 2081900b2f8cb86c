/* SPDX-License-Identifier: MIT */
/*
 * dataplane/rx.h — the end of every transport's receive path: one datagram
 * that reached our port, on its way to the session layer.  The kernel
 * socket (dp.c) and the DPDK/AF_XDP packet path (dpdk/dpdk.c) both end in
 * dp_rx_datagram(), so an oversize datagram and an injected loss are
 * handled and counted the same whichever transport carried them.
 */
#ifndef VELO_DP_RX_H
#define VELO_DP_RX_H

#include <string.h>

#include <velo/compiler.h>

#include "loss.h"
#include "session.h"

/*
 * dp_rx_datagram() - hand one received datagram to the session layer.
 * @t:       the loop's session table.
 * @loss:    the loop's loss injector, or NULL (a constant NULL in the plain
 *           instance of an inlined caller: no test left in it).
 * @p, @len: the datagram; @len is its length on the wire, of which at least
 *           MIN(@len, t->cfg.mtu) bytes are readable at @p (the kernel
 *           truncates one longer than the socket's buffer).
 * @from:    the sender.
 * @scratch: NULL when @p is 8-byte aligned and may be modified (the
 *           socket's rx buffer); else an aligned buffer of at least
 *           t->cfg.mtu bytes the datagram is copied into first (an mbuf's
 *           UDP payload sits at 2 mod 8).
 * In this order: longer than the session MTU is counted (rx_datagrams,
 * rx_bytes, drop_oversize) and dropped; the loss injector may drop it
 * (counted there); the rest goes to dp_sess_rx().
 */
static __always_inline void dp_rx_datagram(struct dp_sess_table *t,
					   struct dp_loss *loss,
					   const uint8_t *p, unsigned len,
					   const struct dp_addr *from,
					   uint8_t *scratch)
{
	if (unlikely(len > t->cfg.mtu)) {
		t->dp_ctr[DP_CTR_rx_datagrams]++;
		t->dp_ctr[DP_CTR_rx_bytes] += len;
		t->dp_ctr[DP_CTR_drop_oversize]++;
		return;
	}
	if (loss && dp_loss_drop(loss, DP_LOSS_RX, p, len))
		return;
	if (scratch) {
		memcpy(scratch, p, len);
		p = scratch;
	}
	dp_sess_rx(t, p, len, from);
}

#endif /* VELO_DP_RX_H */
