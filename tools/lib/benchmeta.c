// SPDX-License-Identifier: MIT
/* benchmeta.c — commit, date and load average for benchmark records. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "benchmeta.h"

/* First line of @cmd's output into @buf; 0 when there was one. */
static int first_line(const char *cmd, char *buf, size_t len)
{
	FILE *p = popen(cmd, "r");
	int rc = -1;

	if (!p)
		return -1;
	if (fgets(buf, (int)len, p)) {
		buf[strcspn(buf, "\n")] = 0;
		rc = 0;
	}
	pclose(p);
	return rc;
}

void velo_bench_commit(char *buf, size_t len)
{
	const char *env = getenv("VELO_COMMIT");
	char hash[64], dirty[8];

	if (!len)
		return;
	if (env && *env) {
		snprintf(buf, len, "%s", env);
		return;
	}
	snprintf(buf, len, "unknown");
	if (first_line("git rev-parse --verify -q HEAD 2>/dev/null", hash,
		       sizeof(hash)) ||
	    strlen(hash) != 40 || strspn(hash, "0123456789abcdef") != 40)
		return;
	/* any output at all means tracked files changed */
	if (!first_line("git status --porcelain --untracked-files=no 2>/dev/null",
			dirty, sizeof(dirty)))
		snprintf(buf, len, "%s-dirty", hash);
	else
		snprintf(buf, len, "%s", hash);
}

void velo_bench_date(char *buf, size_t len)
{
	time_t now = time(NULL);
	struct tm tm;

	if (!len)
		return;
	if (!gmtime_r(&now, &tm) ||
	    !strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(buf, len, "?");
}

void velo_bench_loadavg(char *buf, size_t len)
{
	FILE *f = fopen("/proc/loadavg", "r");

	if (!len)
		return;
	snprintf(buf, len, "?");
	if (f) {
		char tmp[32];

		if (fscanf(f, "%31s", tmp) == 1)
			snprintf(buf, len, "%s", tmp);
		fclose(f);
	}
}

void velo_bench_cpu_name(char *buf, size_t len)
{
	FILE *f = fopen("/proc/cpuinfo", "r");
	char line[256];

	if (!len)
		return;
	snprintf(buf, len, "unknown");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		char *c = strchr(line, ':');

		if (!strncmp(line, "model name", 10) && c) {
			snprintf(buf, len, "%s", c + 2);
			buf[strcspn(buf, "\n")] = 0;
			break;
		}
	}
	fclose(f);
}
