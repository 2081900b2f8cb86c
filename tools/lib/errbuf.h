/* SPDX-License-Identifier: MIT */
/* errbuf.h — the caller-supplied error message buffers of load/parse APIs. */
#ifndef VELO_ERRBUF_H
#define VELO_ERRBUF_H

#include <stddef.h>

/*
 * velo_errf() - format a message into @err (at most @errlen bytes, always
 * NUL-terminated); does nothing when @err is NULL or @errlen is 0.
 */
void velo_errf(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif
