// SPDX-License-Identifier: MIT
/*
 * drv.c — the driver API through dlopen: libcuda.so.1 (or the file named
 * by VELO_CUDA_DRIVER, which tests point at a missing path to check the
 * no-driver route on any machine) and every entry point the backend uses,
 * all resolved at init.  Nothing here runs per step but cuda_check.
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <velo/compiler.h>

#include "../../tools/lib/log.h"
#include "cuda_priv.h"

#define CUDA_STR_(x) #x
#define CUDA_STR(x) CUDA_STR_(x)

int cuda_api_load(struct cuda_api *api, char *why, size_t whylen)
{
	const char *path = getenv("VELO_CUDA_DRIVER");

	memset(api, 0, sizeof(*api));
	if (!path || !*path)
		path = "libcuda.so.1";
	api->lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!api->lib) {
		const char *e = dlerror();

		snprintf(why, whylen, "no CUDA driver: %s", e ? e : path);
		return -ENODEV;
	}
#define CUDA_API_RESOLVE(f)                                                   \
	api->f = (__typeof__(f) *)dlsym(api->lib, CUDA_STR(f));               \
	if (!api->f) {                                                        \
		snprintf(why, whylen, "CUDA driver %s lacks %s (too old?)", path, \
			 CUDA_STR(f));                                        \
		goto err_close;                                               \
	}
	CUDA_API_FUNCS(CUDA_API_RESOLVE)
#undef CUDA_API_RESOLVE
	return 0;

err_close:
	dlclose(api->lib);
	api->lib = NULL;
	return -ENODEV;
}

void cuda_api_unload(struct cuda_api *api)
{
	if (api->lib)
		dlclose(api->lib);
	api->lib = NULL;
}

int cuda_check(struct cuda_backend *be, CUresult r, const char *what,
	       const char *file, int line)
{
	const char *name = NULL;

	if (likely(r == CUDA_SUCCESS))
		return 0;
	if (be->api.cuGetErrorName)
		be->api.cuGetErrorName(r, &name);
	/* The first fault names the backend's state; later ones only log. */
	if (!__atomic_exchange_n(&be->why_set, 1, __ATOMIC_ACQ_REL)) {
		snprintf(be->why, sizeof(be->why), "device fault: %s (%d) in %.100s",
			 name ? name : "?", (int)r, what);
		__atomic_store_n(&be->health, -EIO, __ATOMIC_RELEASE);
	}
	__atomic_fetch_add(&be->ctr[CTR_faults], 1, __ATOMIC_RELAXED);
	LOG_E(eng, "cuda: %s failed: %s (%d) at %s:%d; backend down", what,
	      name ? name : "?", (int)r, file, line);
	return -EIO;
}
