/* SPDX-License-Identifier: MIT */
/*
 * testutil.h — what several unit tests need and should not each carry a
 * copy of: finding the source tree (for fixtures), reading a whole file,
 * and loading a tokenizer from a tokenizer.json + tokenizer_config.json
 * pair the way a model image carries it (the VTOK blob).
 * Linked into every unit test (testlib-y in tests/unit/Makefile).
 */
#ifndef VELO_TESTUTIL_H
#define VELO_TESTUTIL_H

#include <stddef.h>

struct eng_tokenizer;

/*
 * velo_test_srctree() - the source tree: $VELO_SRCTREE, else the first
 * directory above the working directory or the executable that holds
 * tests/fixtures/models.  NULL when none does.
 */
const char *velo_test_srctree(void);

/* velo_test_slurp() - the whole file, NUL-terminated (malloc'd; *len
 * without the NUL), or NULL. */
char *velo_test_slurp(const char *path, size_t *len);

/*
 * velo_test_tok_blob() - a VTOK blob (header, tokenizer.json text,
 * tokenizer_config.json text) as model images carry it; malloc'd, length
 * in *len.  @cj may be NULL (no config).
 */
void *velo_test_tok_blob(const char *tj, size_t tl, const char *cj, size_t cl,
			 size_t *len);

/*
 * velo_test_tok_load_dir() - the tokenizer of directory @dir
 * (tokenizer.json and, when there, tokenizer_config.json) with text budget
 * @budget (0: the default).  NULL when a file is missing or the load fails;
 * the reason is printed.
 */
struct eng_tokenizer *velo_test_tok_load_dir(const char *dir, size_t budget);

/*
 * velo_test_tmpdir() - a fresh directory /tmp/velo-test-@name.XXXXXX, its
 * path in @buf (@len bytes).  Return: 0, -1 (too long or mkdtemp failed).
 * velo_test_rmtree() - removes it and what is in it; 0 or -1.
 */
int velo_test_tmpdir(char *buf, size_t len, const char *name);
int velo_test_rmtree(const char *dir);

#endif
