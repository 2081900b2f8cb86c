// SPDX-License-Identifier: MIT
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

int log_levels[LOG_MOD__COUNT] = {
#define X(id, name) [LOG_MOD_##id] = CONFIG_LOG_LEVEL_DEFAULT,
	foreach_log_module(X)
#undef X
};

static const char *const mod_names[LOG_MOD__COUNT] = {
#define X(id, name) [LOG_MOD_##id] = #id,
	foreach_log_module(X)
#undef X
};

static const char *const lvl_names[] = { "err", "warn", "info", "debug", "trace" };
static const char *ident = "velo";

void log_set_ident(const char *id)
{
	ident = id;
}

void log_msg(enum log_module mod, enum log_level lvl, const char *fmt, ...)
{
	char line[512];
	struct timespec ts;
	va_list ap;
	int n;

	clock_gettime(CLOCK_REALTIME, &ts);
	n = snprintf(line, sizeof(line), "%s: %ld.%06ld %s %s: ", ident,
		     (long)ts.tv_sec, ts.tv_nsec / 1000, lvl_names[lvl],
		     mod_names[mod]);
	va_start(ap, fmt);
	if (n > 0 && (size_t)n < sizeof(line))
		vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	va_end(ap);
	/* One write per line keeps lines from interleaving across threads. */
	fprintf(stderr, "%s\n", line);
}

static int parse_level(const char *s, size_t len)
{
	for (size_t i = 0; i < sizeof(lvl_names) / sizeof(lvl_names[0]); i++)
		if (strlen(lvl_names[i]) == len && !strncmp(s, lvl_names[i], len))
			return (int)i;
	if (len == 1 && s[0] >= '0' && s[0] <= '4')
		return s[0] - '0';
	return -1;
}

int log_set_spec(const char *spec)
{
	int levels[LOG_MOD__COUNT];
	const char *p = spec;

	memcpy(levels, log_levels, sizeof(levels));
	if (!strchr(spec, '=')) {
		int l = parse_level(spec, strlen(spec));

		if (l < 0)
			return -EINVAL;
		for (int i = 0; i < LOG_MOD__COUNT; i++)
			log_levels[i] = l;
		return 0;
	}
	while (*p) {
		const char *eq = strchr(p, '='), *end = strchr(p, ',');
		int m = -1, l;

		if (!end)
			end = p + strlen(p);
		if (!eq || eq > end)
			return -EINVAL;
		for (int i = 0; i < LOG_MOD__COUNT; i++)
			if (strlen(mod_names[i]) == (size_t)(eq - p) &&
			    !strncmp(p, mod_names[i], eq - p))
				m = i;
		l = parse_level(eq + 1, end - eq - 1);
		if (m < 0 || l < 0)
			return -EINVAL;
		levels[m] = l;
		p = *end ? end + 1 : end;
	}
	memcpy(log_levels, levels, sizeof(levels));
	return 0;
}
