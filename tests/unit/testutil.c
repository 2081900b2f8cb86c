// SPDX-License-Identifier: MIT
/* testutil.c — shared unit-test helpers (see testutil.h). */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../engine/core/tokenizer.h"
#include "testutil.h"

int velo_test_tmpdir(char *buf, size_t len, const char *name)
{
	int n = snprintf(buf, len, "/tmp/velo-test-%s.XXXXXX", name);

	if (n < 0 || (size_t)n >= len)
		return -1;
	return mkdtemp(buf) ? 0 : -1;
}

int velo_test_rmtree(const char *dir)
{
	char cmd[PATH_MAX + 16];

	if (!dir[0] || strchr(dir, '\''))
		return -1;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

const char *velo_test_srctree(void)
{
	static char dir[PATH_MAX];
	static const char *const starts[2] = { ".", "/proc/self/exe" };
	const char *env = getenv("VELO_SRCTREE");
	char cand[PATH_MAX], probe[PATH_MAX + 64];

	if (dir[0])
		return dir;
	if (env && *env) {
		snprintf(dir, sizeof(dir), "%s", env);
		return dir;
	}
	for (int s = 0; s < 2; s++) {
		if (!realpath(starts[s], cand))
			continue;
		for (;;) {
			char *sl;

			snprintf(probe, sizeof(probe), "%s/tests/fixtures/models", cand);
			if (!access(probe, R_OK)) {
				snprintf(dir, sizeof(dir), "%s", cand);
				return dir;
			}
			sl = strrchr(cand, '/');
			if (!sl || sl == cand)
				break;
			*sl = 0;
		}
	}
	return NULL;
}

char *velo_test_slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *b = NULL;
	long n;

	if (!f)
		return NULL;
	if (!fseek(f, 0, SEEK_END) && (n = ftell(f)) >= 0 && !fseek(f, 0, SEEK_SET) &&
	    (b = malloc((size_t)n + 1)) && fread(b, 1, (size_t)n, f) == (size_t)n) {
		b[n] = 0;
		*len = (size_t)n;
	} else {
		free(b);
		b = NULL;
	}
	fclose(f);
	return b;
}

void *velo_test_tok_blob(const char *tj, size_t tl, const char *cj, size_t cl,
			 size_t *len)
{
	struct eng_tok_blob_hdr h = { ENG_TOK_MAGIC, ENG_TOK_VERSION, (uint32_t)tl,
				      cj ? (uint32_t)cl : 0 };
	char *b = malloc(sizeof(h) + tl + h.tokenizer_config_json_len);

	if (!b)
		return NULL;
	memcpy(b, &h, sizeof(h));
	memcpy(b + sizeof(h), tj, tl);
	if (cj)
		memcpy(b + sizeof(h) + tl, cj, cl);
	*len = sizeof(h) + tl + h.tokenizer_config_json_len;
	return b;
}

struct eng_tokenizer *velo_test_tok_load_dir(const char *dir, size_t budget)
{
	char p[PATH_MAX + 128], err[256];
	size_t tl = 0, cl = 0, bl = 0;
	struct eng_tokenizer *t = NULL;
	char *tj, *cj;
	void *blob;

	snprintf(p, sizeof(p), "%s/tokenizer.json", dir);
	tj = velo_test_slurp(p, &tl);
	snprintf(p, sizeof(p), "%s/tokenizer_config.json", dir);
	cj = velo_test_slurp(p, &cl);
	if (!tj) {
		fprintf(stderr, "  %s/tokenizer.json: cannot read\n", dir);
		free(cj);
		return NULL;
	}
	blob = velo_test_tok_blob(tj, tl, cj, cl, &bl);
	if (blob) {
		t = eng_tok_load(blob, bl, budget, err, sizeof(err));
		if (!t)
			fprintf(stderr, "  load %s: %s\n", dir, err);
	}
	free(blob);
	free(tj);
	free(cj);
	return t;
}
