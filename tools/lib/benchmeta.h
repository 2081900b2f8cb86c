/* SPDX-License-Identifier: MIT */
/*
 * benchmeta.h — what every benchmark records beside its figures
 * (PERFORMANCE.md: a number without its commit, date and machine state is
 * not a result): the commit of the measured tree, the UTC date and the load
 * average.  One place for all benchmark programs.
 */
#ifndef VELO_BENCHMETA_H
#define VELO_BENCHMETA_H

#include <stddef.h>

/*
 * velo_bench_commit() - the commit being measured into @buf: $VELO_COMMIT
 * when set (a tree copied without .git, e.g. to the GPU machine), else
 * `git rev-parse HEAD` of the working directory, else "unknown".  Only a
 * 40-digit hash is taken from git (outside a repository it says other
 * things); a "-dirty" suffix is added when tracked files differ from HEAD.
 */
void velo_bench_commit(char *buf, size_t len);

/* velo_bench_date() - the current UTC time as 2026-11-27T12:00:00Z. */
void velo_bench_date(char *buf, size_t len);

/* velo_bench_loadavg() - the 1-minute load average as text ("?" when
 * /proc/loadavg cannot be read): other work on the machine skews figures. */
void velo_bench_loadavg(char *buf, size_t len);

/* velo_bench_cpu_name() - the CPU's model name from /proc/cpuinfo
 * ("unknown" when there is none). */
void velo_bench_cpu_name(char *buf, size_t len);

#endif
