// SPDX-License-Identifier: MIT
/*
 * test_mgmt_repo — the model repository's labels as mgmtd uses them to
 * drive velod (docs/mgmt.md, "Labels drive velod"): a saved copy put back
 * after velod refused a change restores labels.json on disk and in memory,
 * a malformed copy is refused and changes nothing, and the labelled names
 * are listed.  (Images and the full check are covered by t-mgmt-models and
 * t-mgmt-labels with real images.)
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "../../mgmt/mgmt.h"
#include "testutil.h"

static char dir[64], path[128];

static int setup(void **state)
{
	(void)state;
	assert_int_equal(velo_test_tmpdir(dir, sizeof(dir), "repo"), 0);
	snprintf(path, sizeof(path), "%s/labels.json", dir);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	return velo_test_rmtree(dir);
}

static char *slurp(const char *p)
{
	static char buf[4096];
	FILE *f = fopen(p, "r");
	size_t n;

	if (!f)
		return NULL;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	return buf;
}

static void write_file(const char *p, const char *text)
{
	FILE *f = fopen(p, "w");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void test_save_restore(void **state)
{
	struct mgmt_repo *r;
	const char *names[8];
	char *saved, *again;

	(void)state;
	write_file(path, "{\"fortune\": {\"canary\": {\"version\": \"2\", "
		   "\"percent\": 30}}, \"other\": {\"shadow\": \"7\"}}");
	r = mgmt_repo_open(dir);
	assert_non_null(r);
	assert_int_equal(mgmt_repo_label_names(r, names, 8), 2);
	assert_int_equal(mgmt_repo_label_names(r, names, 1), 1);
	saved = mgmt_repo_labels_save(r);
	assert_non_null(saved);
	assert_non_null(strstr(saved, "\"percent\": 30"));

	/* Another state, then the saved one back: the same text on disk. */
	assert_int_equal(mgmt_repo_labels_restore(r, "{\"fortune\": {\"shadow\": \"3\"}}"), 0);
	assert_int_equal(mgmt_repo_label_names(r, names, 8), 1);
	assert_string_equal(names[0], "fortune");
	assert_non_null(strstr(slurp(path), "\"shadow\": \"3\""));
	assert_int_equal(mgmt_repo_labels_restore(r, saved), 0);
	assert_string_equal(slurp(path), saved);
	again = mgmt_repo_labels_save(r);
	assert_string_equal(again, saved);
	free(again);
	mgmt_repo_close(r);

	/* Persisted: a reopen reads what was put back. */
	r = mgmt_repo_open(dir);
	assert_non_null(r);
	again = mgmt_repo_labels_save(r);
	assert_string_equal(again, saved);
	free(again);
	free(saved);
	mgmt_repo_close(r);
}

static void test_restore_refuses_bad(void **state)
{
	struct mgmt_repo *r;
	const char *names[8];
	char before[4096];

	(void)state;
	write_file(path, "{\"m\": {\"production\": \"1\"}}");
	r = mgmt_repo_open(dir);
	assert_non_null(r);
	snprintf(before, sizeof(before), "%s", slurp(path));
	assert_int_equal(mgmt_repo_labels_restore(r, "[1, 2]"), -EINVAL);
	assert_int_equal(mgmt_repo_labels_restore(r, "{\"m\": "), -EINVAL);
	assert_int_equal(mgmt_repo_labels_restore(r, ""), -EINVAL);
	assert_string_equal(slurp(path), before);
	assert_int_equal(mgmt_repo_label_names(r, names, 8), 1);
	assert_string_equal(names[0], "m");
	/* No such image: labelling is refused, the labels stay. */
	assert_int_equal(mgmt_repo_label(r, "m", "9", MGMT_LABEL_CANARY, 10),
			 -ENOENT);
	assert_string_equal(slurp(path), before);
	mgmt_repo_close(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_save_restore, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restore_refuses_bad, setup,
						teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
