/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/*
 * dataplane/xdp/velo_xdp.h — what the XDP program (velo_xdp.bpf.c) and
 * velod share: the configuration record and the counter indices.  Plain C
 * types only: included by BPF and by user space.
 */
#ifndef VELO_XDP_H
#define VELO_XDP_H

#define VELO_XDP_QUEUES_MAX 64

/* velo_xdp_cfg[0]; network byte order; ip 0: any local address. */
struct velo_xdp_cfg {
	__u32 ip;
	__u16 port;
	__u16 reserved;
};

#define foreach_velo_xdp_counter(X)                                           \
	X(frames, "frames seen by the XDP program")                           \
	X(redirected, "protocol datagrams redirected to velod's AF_XDP socket") \
	X(pass_other, "frames passed to the kernel (ARP, ICMP, SSH, ...)")    \
	X(pass_no_socket, "protocol datagrams passed: no AF_XDP socket on the queue") \
	X(pass_unconfigured, "frames passed before velod set the port")

enum velo_xdp_ctr {
#define X(name, help) VELO_XDP_CTR_##name,
	foreach_velo_xdp_counter(X)
#undef X
	VELO_XDP_CTR__COUNT
};

#endif /* VELO_XDP_H */
