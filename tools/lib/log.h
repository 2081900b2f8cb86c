/* SPDX-License-Identifier: MIT */
/*
 * log.h — per-module log levels.  Logging is for init, faults and state
 * changes; nothing is logged per packet or per token (count it instead).
 */
#ifndef VELO_LOG_H
#define VELO_LOG_H

#include <stdarg.h>

enum log_level { LOG_ERR, LOG_WARN, LOG_INFO, LOG_DEBUG_, LOG_TRACE };

/* One entry per module; the name is what --log mod=level takes. */
#define foreach_log_module(X)                                                 \
	X(core, "core")                                                       \
	X(dp, "dataplane")                                                    \
	X(proto, "proto")                                                     \
	X(sess, "session")                                                    \
	X(eng, "engine")                                                      \
	X(mgmt, "mgmt")                                                       \
	X(boot, "boot")                                                       \
	X(tool, "tool")

enum log_module {
#define X(id, name) LOG_MOD_##id,
	foreach_log_module(X)
#undef X
	LOG_MOD__COUNT
};

extern int log_levels[LOG_MOD__COUNT];

void log_msg(enum log_module mod, enum log_level lvl, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/*
 * log_set_spec() - parse "mod=level[,mod=level...]" or a single level for
 * every module ("debug").  Levels: err warn info debug trace or 0..4.
 * Return: 0, or -EINVAL with nothing changed.
 */
int log_set_spec(const char *spec);

/* Prefix every line with the program name (default "velo"). */
void log_set_ident(const char *ident);

#define LOG(mod, lvl, ...)                                                    \
	do {                                                                  \
		if ((int)(lvl) <= log_levels[LOG_MOD_##mod])                  \
			log_msg(LOG_MOD_##mod, lvl, __VA_ARGS__);             \
	} while (0)
#define LOG_E(mod, ...) LOG(mod, LOG_ERR, __VA_ARGS__)
#define LOG_W(mod, ...) LOG(mod, LOG_WARN, __VA_ARGS__)
#define LOG_I(mod, ...) LOG(mod, LOG_INFO, __VA_ARGS__)
#define LOG_D(mod, ...) LOG(mod, LOG_DEBUG_, __VA_ARGS__)

#endif
