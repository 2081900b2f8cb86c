// SPDX-License-Identifier: MIT
/*
 * test_mgmt_cmd — veloctl's grammar (strict tokens, typed arguments, the
 * longest keyword match), completion and help from the one table, and the
 * framed protocol's header checks and round trip over a socketpair.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../mgmt/mgmt.h"

static int parse(const char *line, struct mgmt_parsed *p)
{
	char err[256];

	return mgmt_cmd_parse(line, p, err, sizeof(err));
}

static void test_parse_ok(void **state)
{
	struct mgmt_parsed p;

	(void)state;
	assert_int_equal(parse("show status", &p), 0);
	assert_int_equal(p.cmd->id, MGMT_CMD_SHOW_STATUS);
	assert_int_equal(parse("  show   config\tcompare \n", &p), 0);
	assert_int_equal(p.cmd->id, MGMT_CMD_SHOW_CONFIG_COMPARE);
	assert_int_equal(parse("show config", &p), 0);
	assert_int_equal(p.cmd->id, MGMT_CMD_SHOW_CONFIG);
	assert_int_equal(parse("commit", &p), 0);
	assert_int_equal(p.cmd->id, MGMT_CMD_COMMIT);
	assert_int_equal(parse("commit confirmed 5", &p), 0);
	assert_int_equal(p.cmd->id, MGMT_CMD_COMMIT_CONFIRMED);
	assert_string_equal(p.args[0], "5");
	assert_int_equal(parse("model load tiny", &p), 0);
	assert_int_equal(p.cmd->id, MGMT_CMD_MODEL_LOAD);
	assert_int_equal(p.n_args, 1);
	assert_int_equal(parse("model load tiny 1.2-rc1", &p), 0);
	assert_int_equal(p.n_args, 2);
	assert_string_equal(p.args[1], "1.2-rc1");
	assert_int_equal(parse("model label tiny 2 canary 10", &p), 0);
	assert_int_equal(parse("model label tiny 2 production", &p), 0);
	assert_int_equal(parse("set velod.sessions.max 32", &p), 0);
	assert_string_equal(p.args[0], "velod.sessions.max");
	assert_int_equal(parse("set velod.listen 127.0.0.1:7400", &p), 0);
	assert_int_equal(parse("rollback 0", &p), 0);
	assert_int_equal(parse("restart dataplane", &p), 0);
	assert_int_equal(p.cmd->id, MGMT_CMD_RESTART_DATAPLANE);
}

static void test_parse_refused(void **state)
{
	static const char *const bad[] = {
		"show", "show statu", "show status now", "frobnicate",
		"commit confirmed", "commit confirmed 0", "commit confirmed 61",
		"commit confirmed 5x", "commit confirmed -1",
		"rollback", "rollback 1001", "model load", "model load -rf",
		"model load ../etc", "model label tiny 2 gold",
		"model label tiny 2 canary 100", "set a", "set .a 1", "set a..b 1",
		"set a. 1", "set a-b 1",
		/* no shell behind it: every metacharacter refused */
		"show status; reboot", "show status | sh", "show `id`",
		"show $(id)", "set a \"x y\"", "set a 'x'", "show status &",
		"show status > /tmp/x", "set a x\\y", "show\x01status",
		"set a \xc3\xa9",
	};
	struct mgmt_parsed p;
	char err[256];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		if (mgmt_cmd_parse(bad[i], &p, err, sizeof(err)) != -EINVAL)
			fail_msg("accepted: '%s'", bad[i]);
		assert_true(strlen(err) > 5);	/* says why */
	}
	assert_int_equal(parse("", &p), -ENOENT);
	assert_int_equal(parse("   ", &p), -ENOENT);
	/* The message names the offending character. */
	mgmt_cmd_parse("show status;", &p, err, sizeof(err));
	assert_non_null(strstr(err, "';'"));
}

static void test_limits(void **state)
{
	char line[2048], tok[MGMT_TOK_MAX][MGMT_TOK_LEN], err[128];
	struct mgmt_parsed p;

	(void)state;
	memset(line, 'a', sizeof(line) - 1);
	line[sizeof(line) - 1] = '\0';
	assert_int_equal(mgmt_cmd_split(line, tok, MGMT_TOK_MAX, err, sizeof(err)),
			 -E2BIG);
	line[MGMT_TOK_LEN] = '\0';	/* one word, one byte too long */
	assert_int_equal(mgmt_cmd_split(line, tok, MGMT_TOK_MAX, err, sizeof(err)),
			 -E2BIG);
	line[MGMT_TOK_LEN - 1] = '\0';
	assert_int_equal(mgmt_cmd_split(line, tok, MGMT_TOK_MAX, err, sizeof(err)),
			 1);
	line[0] = '\0';
	for (int i = 0; i <= MGMT_TOK_MAX; i++)
		strcat(line, "a ");
	assert_int_equal(mgmt_cmd_split(line, tok, MGMT_TOK_MAX, err, sizeof(err)),
			 -E2BIG);
	assert_int_equal(parse(line, &p), -EINVAL);
}

static unsigned complete(const char *line, char words[][24])
{
	const char *c[32];
	unsigned n = mgmt_cmd_complete(line, c, 32);

	for (unsigned i = 0; i < n; i++)
		snprintf(words[i], 24, "%.*s", (int)strcspn(c[i], " "), c[i]);
	return n;
}

static void test_complete(void **state)
{
	char w[32][24];
	unsigned n;

	(void)state;
	n = complete("sh", w);
	assert_int_equal(n, 1);
	assert_string_equal(w[0], "show");
	n = complete("show ", w);
	/* status models stats sessions config counters, each once */
	assert_int_equal(n, 6);
	n = complete("show st", w);
	assert_int_equal(n, 2);
	assert_string_equal(w[0], "status");
	assert_string_equal(w[1], "stats");
	n = complete("show config ", w);
	assert_int_equal(n, 3);
	n = complete("commit c", w);
	assert_int_equal(n, 1);
	assert_string_equal(w[0], "confirmed");
	n = complete("model ", w);
	assert_int_equal(n, 7);
	assert_int_equal(complete("zzz", w), 0);
	assert_int_equal(complete("show status ", w), 0);
	/* Every word of every command is reachable by completion. */
	for (const struct mgmt_cmd *c = mgmt_cmds; c->words; c++) {
		char line[64] = "";
		const char *p = c->words;

		while (*p) {
			size_t l = strcspn(p, " ");
			bool found = false;

			n = complete(line, w);
			for (unsigned i = 0; i < n; i++)
				found |= strlen(w[i]) == l && !strncmp(w[i], p, l);
			if (!found)
				fail_msg("'%s': '%.*s' not offered after '%s'",
					 c->words, (int)l, p, line);
			strncat(line, p, l);
			strcat(line, " ");
			p += l;
			while (*p == ' ')
				p++;
		}
	}
}

static void test_help(void **state)
{
	char buf[8192];
	size_t n;

	(void)state;
	n = mgmt_cmd_help(buf, sizeof(buf), true);
	assert_true(n < sizeof(buf));
	for (const struct mgmt_cmd *c = mgmt_cmds; c->words; c++)
		assert_non_null(strstr(buf, c->words));
	assert_non_null(strstr(buf, "commit confirmed MINUTES"));
	mgmt_cmd_help(buf, sizeof(buf), false);
	assert_null(strstr(buf, "  set KEY"));
	/* Truncation is reported, never overrun. */
	assert_int_equal(mgmt_cmd_help(buf, 10, true), n);
	assert_int_equal(strlen(buf), 9);
}

static void test_frames(void **state)
{
	struct mgmt_frame_hdr h = {
		.magic = MGMT_FRAME_MAGIC, .version = MGMT_FRAME_VERSION,
		.type = MGMT_FRAME_REQUEST, .len = 10,
	};
	char buf[MGMT_FRAME_REQ_MAX + 1];
	int sv[2];

	(void)state;
	assert_int_equal(mgmt_frame_check(&h, MGMT_FRAME_REQUEST, 10), 0);
	assert_int_equal(mgmt_frame_check(&h, MGMT_FRAME_REQUEST, 9), -EMSGSIZE);
	assert_int_equal(mgmt_frame_check(&h, MGMT_FRAME_REPLY, 10), -EPROTO);
	h.magic ^= 1;
	assert_int_equal(mgmt_frame_check(&h, MGMT_FRAME_REQUEST, 10), -EPROTO);
	h.magic ^= 1;
	h.version = 2;
	assert_int_equal(mgmt_frame_check(&h, MGMT_FRAME_REQUEST, 10), -EPROTO);
	h.version = 1;
	h.reserved = 1;
	assert_int_equal(mgmt_frame_check(&h, MGMT_FRAME_REQUEST, 10), -EPROTO);

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(mgmt_frame_send(sv[0], MGMT_FRAME_REQUEST,
					 MGMT_FRAME_F_JSON, 0, "show status", 11), 0);
	assert_int_equal(mgmt_frame_recv(sv[1], MGMT_FRAME_REQUEST, &h, buf,
					 MGMT_FRAME_REQ_MAX, 1000), 0);
	assert_int_equal(h.flags, MGMT_FRAME_F_JSON);
	assert_string_equal(buf, "show status");
	/* An oversized frame is refused without reading its body. */
	assert_int_equal(mgmt_frame_send(sv[0], MGMT_FRAME_REQUEST, 0, 0, buf,
					 MGMT_FRAME_REQ_MAX), 0);
	assert_int_equal(mgmt_frame_recv(sv[1], MGMT_FRAME_REQUEST, &h, buf, 100,
					 1000), -EMSGSIZE);
	close(sv[0]);
	close(sv[1]);
	/* A half frame then silence: a timeout; then EOF: reset. */
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(write(sv[0], &h, 5), 5);
	assert_int_equal(mgmt_frame_recv(sv[1], MGMT_FRAME_REQUEST, &h, buf,
					 MGMT_FRAME_REQ_MAX, 50), -ETIMEDOUT);
	close(sv[0]);
	assert_int_equal(mgmt_frame_recv(sv[1], MGMT_FRAME_REQUEST, &h, buf,
					 MGMT_FRAME_REQ_MAX, 50), -ECONNRESET);
	close(sv[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_ok),
		cmocka_unit_test(test_parse_refused),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_complete),
		cmocka_unit_test(test_help),
		cmocka_unit_test(test_frames),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
