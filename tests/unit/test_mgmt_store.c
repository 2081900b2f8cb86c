// SPDX-License-Identifier: MIT
/*
 * test_mgmt_store — the configuration store: set/delete on the candidate,
 * commit, commit confirmed rolling back by itself (and a plain commit
 * confirming it), rollback N, show | compare, persistence across a
 * reopen (the pending confirmation too), history bound, malformed files.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../mgmt/mgmt.h"
#include "testutil.h"

static char dir[64], path[128];
static char buf[65536];

static int setup(void **state)
{
	(void)state;
	assert_int_equal(velo_test_tmpdir(dir, sizeof(dir), "store"), 0);
	snprintf(path, sizeof(path), "%s/config.json", dir);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	return velo_test_rmtree(dir);
}

static struct mgmt_store *open_store(unsigned hist)
{
	struct mgmt_store *st = mgmt_store_open(path, hist);

	assert_non_null(st);
	return st;
}

static const char *show(struct mgmt_store *st, enum mgmt_store_which w)
{
	mgmt_store_show(st, w, false, buf, sizeof(buf));
	return buf;
}

static void set(struct mgmt_store *st, const char *k, const char *v)
{
	char err[128];

	assert_int_equal(mgmt_store_set(st, k, v, err, sizeof(err)), 0);
}

static void test_set_commit_show(void **state)
{
	struct mgmt_store *st = open_store(10);
	char err[128];

	(void)state;
	assert_int_equal(mgmt_store_history_count(st), 1);
	assert_int_equal(mgmt_store_serial(st), 0);
	set(st, "velod.sessions.max", "32");
	set(st, "system.hostname", "box1");
	set(st, "velod.loss.patterns", "tx");
	/* Nothing running yet: compare shows the additions. */
	assert_true(mgmt_store_compare(st, buf, sizeof(buf)) > 0);
	assert_string_equal(buf, "+ set system.hostname box1\n"
				 "+ set velod.loss.patterns tx\n"
				 "+ set velod.sessions.max 32\n");
	assert_string_equal(show(st, MGMT_STORE_RUNNING), "");
	assert_int_equal(mgmt_store_commit(st, 1000, 0, "c1"), 1);
	assert_int_equal(mgmt_store_serial(st), 1);
	assert_string_equal(show(st, MGMT_STORE_RUNNING),
			    "set system.hostname box1\n"
			    "set velod.loss.patterns tx\n"
			    "set velod.sessions.max 32\n");
	assert_int_equal(mgmt_store_compare(st, buf, sizeof(buf)), 0);
	/* Committing the same thing again changes nothing. */
	assert_int_equal(mgmt_store_commit(st, 1001, 0, "c2"), 0);
	assert_int_equal(mgmt_store_serial(st), 1);
	/* A key under a value is refused; delete prunes empty parents. */
	assert_int_equal(mgmt_store_set(st, "velod.sessions.max.x", "1", err,
					sizeof(err)), -EINVAL);
	assert_int_equal(mgmt_store_set(st, "velod", "1", err, sizeof(err)),
			 -EINVAL);
	assert_int_equal(mgmt_store_delete(st, "velod.loss.patterns"), 0);
	assert_int_equal(mgmt_store_delete(st, "velod.loss.patterns"), -ENOENT);
	assert_string_equal(show(st, MGMT_STORE_CANDIDATE),
			    "set system.hostname box1\n"
			    "set velod.sessions.max 32\n");
	mgmt_store_compare(st, buf, sizeof(buf));
	assert_string_equal(buf, "- set velod.loss.patterns tx\n");
	/* A string that reads as a number shows quoted. */
	set(st, "system.tag", "\"42\"");
	assert_int_equal(mgmt_store_get(st, "system.tag", buf, sizeof(buf)),
			 -ENOENT);
	mgmt_store_commit(st, 1002, 0, "c3");
	assert_int_equal(mgmt_store_get(st, "system.tag", buf, sizeof(buf)), 0);
	assert_string_equal(buf, "42");
	assert_non_null(strstr(show(st, MGMT_STORE_RUNNING),
			       "set system.tag \"42\"\n"));
	mgmt_store_close(st);
}

static void test_commit_confirmed_rolls_back(void **state)
{
	struct mgmt_store *st = open_store(10);

	(void)state;
	set(st, "velod.sessions.max", "32");
	assert_int_equal(mgmt_store_commit(st, 1000, 0, "base"), 1);
	set(st, "velod.sessions.max", "8");
	assert_int_equal(mgmt_store_commit(st, 2000, 60000, "try"), 1);
	assert_int_equal(mgmt_store_confirm_deadline(st), 62000);
	assert_non_null(strstr(show(st, MGMT_STORE_RUNNING), "max 8\n"));
	/* Not due yet. */
	assert_int_equal(mgmt_store_tick(st, 61999), 0);
	assert_non_null(strstr(show(st, MGMT_STORE_RUNNING), "max 8\n"));
	/* Due: back to 32, as a new commit, candidate too. */
	assert_int_equal(mgmt_store_tick(st, 62000), 1);
	assert_non_null(strstr(show(st, MGMT_STORE_RUNNING), "max 32\n"));
	assert_non_null(strstr(show(st, MGMT_STORE_CANDIDATE), "max 32\n"));
	assert_int_equal(mgmt_store_confirm_deadline(st), 0);
	assert_int_equal(mgmt_store_serial(st), 3);
	mgmt_store_history(st, buf, sizeof(buf));
	assert_non_null(strstr(buf, "automatic rollback to commit 1"));
	/* Nothing more to do. */
	assert_int_equal(mgmt_store_tick(st, 99999), 0);
	mgmt_store_close(st);
}

static void test_commit_confirmed_confirmed(void **state)
{
	struct mgmt_store *st = open_store(10);

	(void)state;
	set(st, "a.b", "1");
	assert_int_equal(mgmt_store_commit(st, 1000, 0, "base"), 1);
	set(st, "a.b", "2");
	assert_int_equal(mgmt_store_commit(st, 2000, 1000, "try"), 1);
	/* A second commit confirmed extends the time but keeps the target. */
	set(st, "a.b", "3");
	assert_int_equal(mgmt_store_commit(st, 2500, 1000, "try2"), 1);
	assert_int_equal(mgmt_store_confirm_deadline(st), 3500);
	/* Plain commit with nothing new: confirms. */
	assert_int_equal(mgmt_store_commit(st, 3000, 0, "confirm"), 0);
	assert_int_equal(mgmt_store_confirm_deadline(st), 0);
	assert_int_equal(mgmt_store_tick(st, 10000), 0);
	assert_non_null(strstr(show(st, MGMT_STORE_RUNNING), "a.b 3\n"));
	/* The rollback of an extended one goes to the last confirmed. */
	set(st, "a.b", "4");
	mgmt_store_commit(st, 11000, 1000, "t");
	set(st, "a.b", "5");
	mgmt_store_commit(st, 11500, 1000, "t");
	assert_int_equal(mgmt_store_tick(st, 12500), 1);
	assert_non_null(strstr(show(st, MGMT_STORE_RUNNING), "a.b 3\n"));
	mgmt_store_close(st);
}

static void test_persist_and_rollback(void **state)
{
	struct mgmt_store *st = open_store(3);

	(void)state;
	for (int i = 1; i <= 5; i++) {
		char v[8];

		snprintf(v, sizeof(v), "%d", i);
		set(st, "k", v);
		assert_int_equal(mgmt_store_commit(st, (uint64_t)i * 1000, 0, "c"), 1);
	}
	/* Bounded history: 3 commits (5, 4, 3). */
	assert_int_equal(mgmt_store_history_count(st), 3);
	assert_int_equal(mgmt_store_rollback(st, 3), -ERANGE);
	assert_int_equal(mgmt_store_rollback(st, 2), 0);
	assert_string_equal(show(st, MGMT_STORE_CANDIDATE), "set k 3\n");
	assert_string_equal(show(st, MGMT_STORE_RUNNING), "set k 5\n");
	/* A pending confirmation survives a reopen (a restarted mgmtd). */
	assert_int_equal(mgmt_store_commit(st, 6000, 5000, "c"), 1);
	mgmt_store_close(st);
	st = open_store(3);
	assert_string_equal(show(st, MGMT_STORE_RUNNING), "set k 3\n");
	assert_int_equal(mgmt_store_confirm_deadline(st), 11000);
	assert_int_equal(mgmt_store_serial(st), 6);
	assert_int_equal(mgmt_store_tick(st, 11000), 1);
	assert_string_equal(show(st, MGMT_STORE_RUNNING), "set k 5\n");
	mgmt_store_close(st);
	/* No temporary files left behind. */
	assert_int_equal(access(path, F_OK), 0);
}

static void test_bad_files(void **state)
{
	static const char *const bad[] = {
		"", "{", "[]", "{\"format\": 2, \"history\": [], \"candidate\": {}}",
		"{\"format\": 1, \"history\": [1], \"candidate\": {}}",
		"{\"format\": 1, \"history\": [], \"candidate\": []}",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		FILE *f = fopen(path, "w");

		assert_non_null(f);
		fputs(bad[i], f);
		fclose(f);
		errno = 0;
		assert_null(mgmt_store_open(path, 5));
		assert_int_equal(errno, EINVAL);
	}
	unlink(path);
	assert_null(mgmt_store_open(path, 1));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_set_commit_show, setup, teardown),
		cmocka_unit_test_setup_teardown(test_commit_confirmed_rolls_back,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_commit_confirmed_confirmed,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_persist_and_rollback, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_bad_files, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
