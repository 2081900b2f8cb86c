// SPDX-License-Identifier: MIT
/* tool.c — helpers for the client-side programs (tool.h). */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <velo/auth.h>
#include <velo/compiler.h>

#include "../lib/benchmeta.h"
#include "tool.h"

int tool_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
	unsigned long long v;
	char *end;

	errno = 0;
	if (!s || !*s || *s == '-')
		goto bad;
	v = strtoull(s, &end, 10);
	if (errno || *end || v < lo || v > hi)
		goto bad;
	*out = v;
	return 0;
bad:
	fprintf(stderr, "invalid number '%s' (expected %llu..%llu)\n",
		s ? s : "", (unsigned long long)lo, (unsigned long long)hi);
	return -1;
}

int tool_float(const char *s, float *out)
{
	char *end;
	float v;

	errno = 0;
	v = strtof(s, &end);
	if (errno || *end || end == s || !isfinite(v)) {
		fprintf(stderr, "invalid number '%s'\n", s);
		return -1;
	}
	*out = v;
	return 0;
}

int tool_double01(const char *s, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || *end || end == s || !(v >= 0 && v <= 1)) {
		fprintf(stderr, "invalid probability '%s' (0..1)\n", s);
		return -1;
	}
	*out = v;
	return 0;
}

int tool_u32_list(const char *s, uint32_t *ids, uint32_t max, uint32_t *n)
{
	const char *p = s;

	*n = 0;
	while (*p) {
		unsigned long v;
		char *end;

		errno = 0;
		if (*p < '0' || *p > '9')
			goto bad;
		v = strtoul(p, &end, 10);
		if (errno || v > UINT32_MAX || (*end && *end != ','))
			goto bad;
		if (*n == max) {
			fprintf(stderr, "more than %u token ids\n", max);
			return -1;
		}
		ids[(*n)++] = (uint32_t)v;
		p = *end ? end + 1 : end;
	}
	if (*n)
		return 0;
bad:
	fprintf(stderr, "invalid token id list '%s' (expected 1,2,3)\n", s);
	return -1;
}

int tool_load_key(const char *path, uint32_t key_id, struct velo_psk *out)
{
	static struct velo_psk keys[64];
	char err[128] = "";
	int n, rc = -ENOENT;

	n = velo_keyfile_load(path, keys, ARRAY_SIZE(keys), err, sizeof(err));
	if (n < 0) {
		fprintf(stderr, "key file %s: %s%s%s%s\n", path, strerror(-n),
			*err ? " (" : "", err, *err ? ")" : "");
		if (n == -EPERM)
			fprintf(stderr, "  (group or others can read it: "
					"chmod 600 %s)\n", path);
		if (n == -ENOENT)
			fprintf(stderr, "  (make one with velo-keygen -o %s, "
					"or pass --key / set VELO_KEY)\n", path);
		return n;
	}
	for (int i = 0; i < n; i++)
		if (!key_id || keys[i].key_id == key_id) {
			*out = keys[i];
			rc = 0;
			break;
		}
	if (rc)
		fprintf(stderr, "key file %s: no key with id %u\n", path, key_id);
	memset(keys, 0, sizeof(keys));
	return rc;
}

void tool_sleep_ns(uint64_t ns)
{
	struct timespec ts = { (time_t)(ns / 1000000000u),
			       (long)(ns % 1000000000u) };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

void tool_sleep_ms(uint64_t ms)
{
	tool_sleep_ns(ms * 1000000u);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

void tool_sort_u64(uint64_t *v, size_t n)
{
	qsort(v, n, sizeof(*v), cmp_u64);
}

double tool_pct(const uint64_t *sorted, size_t n, double p)
{
	size_t rank;

	if (!n)
		return 0;
	/* Nearest rank: the smallest value with at least p % at or below. */
	rank = (size_t)ceil(p / 100.0 * (double)n);
	if (rank < 1)
		rank = 1;
	if (rank > n)
		rank = n;
	return (double)sorted[rank - 1];
}

void tool_json_str(FILE *f, const char *s, size_t len)
{
	fputc('"', f);
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];

		switch (ch) {
		case '"':
			fputs("\\\"", f);
			break;
		case '\\':
			fputs("\\\\", f);
			break;
		case '\n':
			fputs("\\n", f);
			break;
		case '\r':
			fputs("\\r", f);
			break;
		case '\t':
			fputs("\\t", f);
			break;
		default:
			if (ch < 0x20)
				fprintf(f, "\\u%04x", ch);
			else
				fputc(ch, f);
		}
	}
	fputc('"', f);
}

const char *tool_machine(void)
{
	static char buf[256];
	char host[64] = "?", model[128];

	gethostname(host, sizeof(host) - 1);
	velo_bench_cpu_name(model, sizeof(model));
	snprintf(buf, sizeof(buf), "%s (%s, %ld cores)", host, model,
		 sysconf(_SC_NPROCESSORS_ONLN));
	return buf;
}
