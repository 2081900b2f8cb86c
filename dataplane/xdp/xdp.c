// SPDX-License-Identifier: MIT
/*
 * xdp.c — find and drive the XDP program that shares the NIC (see xdp.h).
 *
 * The program is loaded and attached by DPDK's net_af_xdp PMD (libbpf), so
 * velod holds no object of its own: it asks the kernel which program is on
 * the interface (bpf_xdp_query_id), walks that program's maps by id and
 * takes file descriptors of the two it knows by name.
 */
#include <errno.h>
#include <net/if.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/if_link.h>
#include <linux/types.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <velo/compiler.h>

#include "../../tools/lib/counters.h"
#include "../../tools/lib/log.h"
#include "velo_xdp.h"
#include "xdp.h"

#define DP_XDP_MAPS_MAX 16
#define DP_XDP_CPUS_MAX 1024

static const struct ctr_desc dp_xdp_ctr_desc[VELO_XDP_CTR__COUNT] = {
	foreach_velo_xdp_counter(CTR_DESC)
};

struct dp_xdp {
	int cfg_fd;
	int ctr_fd;
	int n_cpus;
	uint64_t *percpu;		/* (n_cpus), read buffer */
	uint64_t ctr[VELO_XDP_CTR__COUNT];
};

static int map_fd_by_name(const uint32_t *ids, unsigned n, const char *name)
{
	for (unsigned i = 0; i < n; i++) {
		struct bpf_map_info info;
		uint32_t len = sizeof(info);
		int fd = bpf_map_get_fd_by_id(ids[i]);

		if (fd < 0)
			continue;
		memset(&info, 0, sizeof(info));
		if (!bpf_obj_get_info_by_fd(fd, &info, &len) &&
		    !strcmp(info.name, name))
			return fd;
		close(fd);
	}
	return -ENOENT;
}

struct dp_xdp *dp_xdp_open(const char *ifname, uint32_t ip, uint16_t port)
{
	uint32_t prog_id = 0, map_ids[DP_XDP_MAPS_MAX], len, zero = 0;
	struct velo_xdp_cfg cfg = { .ip = ip, .port = port };
	struct bpf_prog_info info;
	struct dp_xdp *x;
	int ifindex, prog_fd, rc;

	ifindex = (int)if_nametoindex(ifname);
	if (!ifindex) {
		LOG_E(dp, "xdp: no interface %s", ifname);
		errno = ENODEV;
		return NULL;
	}
	rc = bpf_xdp_query_id(ifindex, 0, &prog_id);
	if (rc || !prog_id) {
		LOG_E(dp, "xdp: no XDP program on %s", ifname);
		errno = ENOENT;
		return NULL;
	}
	prog_fd = bpf_prog_get_fd_by_id(prog_id);
	if (prog_fd < 0) {
		rc = -errno;
		goto err;
	}
	memset(&info, 0, sizeof(info));
	info.nr_map_ids = DP_XDP_MAPS_MAX;
	info.map_ids = (uint64_t)(uintptr_t)map_ids;
	len = sizeof(info);
	rc = bpf_obj_get_info_by_fd(prog_fd, &info, &len);
	close(prog_fd);
	if (rc)
		goto err;
	x = calloc(1, sizeof(*x));
	if (!x) {
		rc = -ENOMEM;
		goto err;
	}
	x->n_cpus = libbpf_num_possible_cpus();
	if (x->n_cpus <= 0 || x->n_cpus > DP_XDP_CPUS_MAX) {
		rc = -EINVAL;
		goto err_free;
	}
	x->percpu = calloc((size_t)x->n_cpus, sizeof(uint64_t));
	if (!x->percpu) {
		rc = -ENOMEM;
		goto err_free;
	}
	x->cfg_fd = map_fd_by_name(map_ids, MIN(info.nr_map_ids, DP_XDP_MAPS_MAX),
				   "velo_xdp_cfg");
	x->ctr_fd = map_fd_by_name(map_ids, MIN(info.nr_map_ids, DP_XDP_MAPS_MAX),
				   "velo_xdp_ctr");
	if (x->cfg_fd < 0 || x->ctr_fd < 0) {
		LOG_E(dp, "xdp: the program on %s (id %u) is not velo_xdp "
		      "(maps velo_xdp_cfg/velo_xdp_ctr missing)", ifname, prog_id);
		rc = -ENOENT;
		goto err_close;
	}
	rc = bpf_map_update_elem(x->cfg_fd, &zero, &cfg, BPF_ANY);
	if (rc)
		goto err_close;
	rc = ctr_block_register("xdp", dp_xdp_ctr_desc, x->ctr, VELO_XDP_CTR__COUNT);
	if (rc)
		goto err_close;
	LOG_I(dp, "xdp: program %u on %s redirects udp port %u to velod, "
	      "passes the rest to the kernel", prog_id, ifname,
	      (unsigned)__builtin_bswap16(port));
	return x;

err_close:
	if (x->cfg_fd >= 0)
		close(x->cfg_fd);
	if (x->ctr_fd >= 0)
		close(x->ctr_fd);
err_free:
	free(x->percpu);
	free(x);
err:
	LOG_E(dp, "xdp: %s: %s", ifname, strerror(rc < 0 ? -rc : errno));
	errno = rc < 0 ? -rc : errno;
	return NULL;
}

void dp_xdp_stats_poll(struct dp_xdp *x)
{
	for (uint32_t k = 0; k < VELO_XDP_CTR__COUNT; k++) {
		uint64_t s = 0;

		if (bpf_map_lookup_elem(x->ctr_fd, &k, x->percpu))
			return;
		for (int c = 0; c < x->n_cpus; c++)
			s += x->percpu[c];
		__atomic_store_n(&x->ctr[k], s, __ATOMIC_RELAXED);
	}
}

void dp_xdp_close(struct dp_xdp *x)
{
	struct velo_xdp_cfg off = { 0 };
	uint32_t zero = 0;

	if (!x)
		return;
	bpf_map_update_elem(x->cfg_fd, &zero, &off, BPF_ANY);
	ctr_block_unregister(x->ctr);
	close(x->cfg_fd);
	close(x->ctr_fd);
	free(x->percpu);
	free(x);
}
