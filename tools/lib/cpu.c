// SPDX-License-Identifier: MIT
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include "cpu.h"

int cpu_pin_self(int core)
{
	cpu_set_t set;
	long ncpu = sysconf(_SC_NPROCESSORS_CONF);

	if (core < 0)
		return 0;
	if (core >= ncpu || core >= CPU_SETSIZE)
		return -EINVAL;
	CPU_ZERO(&set);
	CPU_SET(core, &set);
	return -pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}
