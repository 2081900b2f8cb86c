// SPDX-License-Identifier: MIT
#include <errno.h>
#include <string.h>

#include "counters.h"

/* Registered at init by the thread that starts the others: no lock needed
 * while readers only ever run after that. */
static struct ctr_block blocks[CONFIG_LIB_COUNTER_BLOCKS_MAX];
static unsigned n_blocks;

int ctr_block_register(const char *prefix, const struct ctr_desc *desc,
		       const uint64_t *vals, unsigned n)
{
	if (n_blocks >= CONFIG_LIB_COUNTER_BLOCKS_MAX)
		return -ENOSPC;
	blocks[n_blocks++] = (struct ctr_block){ prefix, desc, vals, n };
	return 0;
}

void ctr_block_unregister(const uint64_t *vals)
{
	for (unsigned i = 0; i < n_blocks; i++) {
		if (blocks[i].vals != vals)
			continue;
		memmove(&blocks[i], &blocks[i + 1],
			(n_blocks - i - 1) * sizeof(blocks[0]));
		n_blocks--;
		return;
	}
}

unsigned ctr_block_count(void)
{
	return n_blocks;
}

const struct ctr_block *ctr_block_get(unsigned i)
{
	return i < n_blocks ? &blocks[i] : NULL;
}

void ctr_dump(FILE *f, int all)
{
	for (unsigned b = 0; b < n_blocks; b++)
		for (unsigned i = 0; i < blocks[b].n; i++) {
			uint64_t v = ctr_read(&blocks[b].vals[i]);

			if (v || all)
				fprintf(f, "%s.%s %llu\n", blocks[b].prefix,
					blocks[b].desc[i].name,
					(unsigned long long)v);
		}
}

uint64_t ctr_lookup(const char *fullname)
{
	for (unsigned b = 0; b < n_blocks; b++) {
		size_t pl = strlen(blocks[b].prefix);

		if (strncmp(fullname, blocks[b].prefix, pl) || fullname[pl] != '.')
			continue;
		for (unsigned i = 0; i < blocks[b].n; i++)
			if (!strcmp(fullname + pl + 1, blocks[b].desc[i].name))
				return ctr_read(&blocks[b].vals[i]);
	}
	return (uint64_t)-1;
}
