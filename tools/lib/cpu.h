/* SPDX-License-Identifier: MIT */
/* cpu.h — pinning threads to cores, and the pause hint for poll loops. */
#ifndef VELO_CPU_H
#define VELO_CPU_H

/*
 * cpu_pin_self() - pin the calling thread to one core.
 * @core: core id, or -1 to leave the thread unpinned.
 * Return: 0, or -errno (-EINVAL for a core that does not exist).
 */
int cpu_pin_self(int core);

static inline void cpu_relax(void)
{
	__builtin_ia32_pause();
}

#endif
