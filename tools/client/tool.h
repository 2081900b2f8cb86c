/* SPDX-License-Identifier: MIT */
/*
 * tool.h — small helpers shared by velo-client, velo-bench and the
 * integration test driver: argument parsing, key loading, percentiles, JSON
 * strings.  In libvelo-core.a (obj-y), not in the integrators' libvelo.a.
 */
#ifndef VELO_TOOL_H
#define VELO_TOOL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <velo/auth.h>

/* Parse an unsigned decimal in [lo, hi]; prints the reason and returns -1
 * on error. */
int tool_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out);
/* A finite float; a probability in [0, 1]. */
int tool_float(const char *s, float *out);
int tool_double01(const char *s, double *out);
/* "1,2,3" into @ids (at most @max). */
int tool_u32_list(const char *s, uint32_t *ids, uint32_t max, uint32_t *n);

/*
 * tool_load_key() - load key @key_id (0: the first) of the key file @path.
 * Prints the reason (file mode, format, missing id) on failure.
 * Return: 0 or -errno.
 */
int tool_load_key(const char *path, uint32_t key_id, struct velo_psk *out);

void tool_sleep_ms(uint64_t ms);
void tool_sleep_ns(uint64_t ns);

/* Sort ascending; the p-th percentile (nearest rank) of a sorted array. */
void tool_sort_u64(uint64_t *v, size_t n);
double tool_pct(const uint64_t *sorted, size_t n, double p);

/* Write @s as a JSON string literal (quotes, escapes; bytes >= 0x80 are
 * passed through: the text is valid UTF-8 from the codec). */
void tool_json_str(FILE *f, const char *s, size_t len);

/* Short description of this machine for result files: "host (cpu model,
 * N cores)".  Static buffer. */
const char *tool_machine(void);

#endif
