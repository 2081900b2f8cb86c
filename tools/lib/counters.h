/* SPDX-License-Identifier: MIT */
/*
 * counters.h — counters declared once in an X-macro list (as VPP's
 * foreach_*_error), owned by one thread each (plain increments, no atomics),
 * registered at init in a fixed registry and read by anyone: the SIGUSR1 and
 * exit dumps, the control socket, the metrics exporter.
 *
 * A module declares:
 *   #define foreach_dp_counter(X) X(rx_datagrams, "datagrams received") ...
 *   enum { foreach_dp_counter(CTR_ENUM) DP_CTR__COUNT };
 *   static const struct ctr_desc dp_ctr_desc[] = { foreach_dp_counter(CTR_DESC) };
 * and keeps a uint64_t array of DP_CTR__COUNT per instance.
 */
#ifndef VELO_COUNTERS_H
#define VELO_COUNTERS_H

#include <stdint.h>
#include <stdio.h>

struct ctr_desc {
	const char *name;
	const char *help;
};

#define CTR_ENUM(name, help) CTR_##name,
#define CTR_DESC(name, help) { #name, help },

struct ctr_block {
	const char *prefix;		/* "dp", "sess", "eng0" */
	const struct ctr_desc *desc;
	const uint64_t *vals;
	unsigned n;
};

/*
 * ctr_block_register() - add a block to the registry (init only).
 * Return: 0, or -ENOSPC when CONFIG_LIB_COUNTER_BLOCKS_MAX are registered.
 */
int ctr_block_register(const char *prefix, const struct ctr_desc *desc,
		       const uint64_t *vals, unsigned n);
void ctr_block_unregister(const uint64_t *vals);

/* Number of registered blocks and access to one (for exporters). */
unsigned ctr_block_count(void);
const struct ctr_block *ctr_block_get(unsigned i);

/* Read one counter as another thread may be writing it. */
static inline uint64_t ctr_read(const uint64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_RELAXED);
}

/*
 * ctr_dump() - write "prefix.name value" lines for every counter.
 * @all: include zero counters.
 */
void ctr_dump(FILE *f, int all);

/* ctr_lookup() - value of "prefix.name", or -1 (as uint64) if unknown. */
uint64_t ctr_lookup(const char *fullname);

#endif
