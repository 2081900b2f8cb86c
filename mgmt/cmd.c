// SPDX-License-Identifier: MIT
/*
 * cmd.c — the command table: the one list that gives veloctl's grammar,
 * its help and its completion, and velo-mgmtd's dispatch.  Matching is
 * exact on keywords (completion makes them cheap to type) and typed on
 * arguments.  Bounds: MGMT_LINE_MAX bytes, MGMT_TOK_MAX tokens; a line is
 * matched against every entry (about 30), each a few string compares.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mgmt.h"

#define A(...) { __VA_ARGS__ }

const struct mgmt_cmd mgmt_cmds[] = {
	{ "help", MGMT_CMD_HELP, 0, 0, A(0), 0, 0, false, false, "",
	  "this list" },
	{ "show status", MGMT_CMD_SHOW_STATUS, 0, 0, A(0), 0, 0, false, false, "",
	  "velod state, health, readiness, restarts, pending confirmation" },
	{ "show models", MGMT_CMD_SHOW_MODELS, 0, 0, A(0), 0, 0, false, false, "",
	  "images in the model repository, labels, checks" },
	{ "show stats", MGMT_CMD_SHOW_STATS, 0, 0, A(0), 0, 0, false, false, "",
	  "velod summary (sessions, slots, traffic)" },
	{ "show sessions", MGMT_CMD_SHOW_SESSIONS, 0, 0, A(0), 0, 0, false, false, "",
	  "live client sessions" },
	{ "show config", MGMT_CMD_SHOW_CONFIG, 0, 0, A(0), 0, 0, false, false, "",
	  "running configuration" },
	{ "show config candidate", MGMT_CMD_SHOW_CONFIG_CANDIDATE, 0, 0, A(0), 0, 0,
	  false, false, "", "candidate configuration" },
	{ "show config compare", MGMT_CMD_SHOW_CONFIG_COMPARE, 0, 0, A(0), 0, 0,
	  false, false, "", "candidate against running (- running, + candidate)" },
	{ "show config history", MGMT_CMD_SHOW_CONFIG_HISTORY, 0, 0, A(0), 0, 0,
	  false, false, "", "commits, newest (rollback 0) first" },
	{ "show counters", MGMT_CMD_SHOW_COUNTERS, 0, 0, A(0), 0, 0, false, false, "",
	  "non-zero counters of velod and mgmtd" },
	{ "model load", MGMT_CMD_MODEL_LOAD, 2, 1, A(MGMT_ARG_NAME, MGMT_ARG_NAME),
	  0, 0, false, false, "NAME [VERSION]",
	  "verify an image in full, then load it into velod" },
	{ "model unload", MGMT_CMD_MODEL_UNLOAD, 1, 0, A(MGMT_ARG_NAME), 0, 0,
	  false, false, "NAME", "unload a model from velod" },
	{ "model swap", MGMT_CMD_MODEL_SWAP, 2, 0, A(MGMT_ARG_NAME, MGMT_ARG_NAME),
	  0, 0, false, false, "NAME VERSION",
	  "hot swap NAME to VERSION (verified first), old one kept warm" },
	{ "model rollback", MGMT_CMD_MODEL_ROLLBACK, 1, 0, A(MGMT_ARG_NAME), 0, 0,
	  false, false, "NAME", "route NAME back to the version before the swap" },
	{ "model confirm", MGMT_CMD_MODEL_CONFIRM, 1, 0, A(MGMT_ARG_NAME), 0, 0,
	  false, false, "NAME", "keep the swapped version, free the old one" },
	{ "model verify", MGMT_CMD_MODEL_VERIFY, 2, 1, A(MGMT_ARG_NAME, MGMT_ARG_NAME),
	  0, 0, false, false, "NAME [VERSION]",
	  "full check of an image (every checksum), loads nothing" },
	{ "model label", MGMT_CMD_MODEL_LABEL, 4, 1,
	  A(MGMT_ARG_NAME, MGMT_ARG_NAME, MGMT_ARG_LABEL, MGMT_ARG_UINT), 1, 99,
	  false, false, "NAME VERSION production|canary|shadow|none [PERCENT]",
	  "label a version; velod's canary/shadow slots follow (canary: 1..99 %)" },
	{ "configure", MGMT_CMD_CONFIGURE, 0, 0, A(0), 0, 0, true, false, "",
	  "enter configuration mode (set, delete, commit, rollback)" },
	{ "set", MGMT_CMD_SET, 2, 0, A(MGMT_ARG_KEY, MGMT_ARG_VALUE), 0, 0, false,
	  true, "KEY VALUE", "set a key of the candidate (VALUE: JSON or a word)" },
	{ "delete", MGMT_CMD_DELETE, 1, 0, A(MGMT_ARG_KEY), 0, 0, false, true, "KEY",
	  "remove a key from the candidate" },
	{ "commit", MGMT_CMD_COMMIT, 0, 0, A(0), 0, 0, false, true, "",
	  "apply the candidate (also confirms a pending commit confirmed)" },
	{ "commit confirmed", MGMT_CMD_COMMIT_CONFIRMED, 1, 0, A(MGMT_ARG_UINT), 1,
	  60, false, true, "MINUTES",
	  "apply, and roll back by itself unless confirmed within MINUTES" },
	{ "rollback", MGMT_CMD_ROLLBACK, 1, 0, A(MGMT_ARG_UINT), 0, 1000, false,
	  true, "N", "load the configuration of N commits ago into the candidate" },
	{ "restart dataplane", MGMT_CMD_RESTART_DATAPLANE, 0, 0, A(0), 0, 0, false,
	  false, "", "restart velod (sessions are lost; clients see it)" },
	{ "exit", MGMT_CMD_EXIT, 0, 0, A(0), 0, 0, true, false, "",
	  "leave configuration mode, or the shell" },
	{ NULL, 0, 0, 0, A(0), 0, 0, false, false, NULL, NULL },
};

/* Bytes a token may hold: no quoting, no globbing, no substitution. */
static bool tok_char_ok(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || strchr("._-:/,+=@", c);
}

int mgmt_cmd_split(const char *line, char tok[][MGMT_TOK_LEN], unsigned max,
		   char *err, size_t err_len)
{
	unsigned n = 0;
	size_t i = 0, len = strnlen(line, MGMT_LINE_MAX + 1);

	if (len > MGMT_LINE_MAX) {
		snprintf(err, err_len, "line longer than %d bytes", MGMT_LINE_MAX);
		return -E2BIG;
	}
	while (i < len) {
		size_t start, l;

		while (i < len && (line[i] == ' ' || line[i] == '\t' ||
				   line[i] == '\n' || line[i] == '\r'))
			i++;
		if (i == len)
			break;
		start = i;
		while (i < len && line[i] != ' ' && line[i] != '\t' &&
		       line[i] != '\n' && line[i] != '\r') {
			unsigned char c = (unsigned char)line[i];

			if (!tok_char_ok(c)) {
				if (c >= 0x20 && c < 0x7f)
					snprintf(err, err_len,
						 "character '%c' not allowed (column %zu)",
						 c, i + 1);
				else
					snprintf(err, err_len,
						 "byte 0x%02x not allowed (column %zu)",
						 c, i + 1);
				return -EINVAL;
			}
			i++;
		}
		l = i - start;
		if (n == max) {
			snprintf(err, err_len, "more than %u words", max);
			return -E2BIG;
		}
		if (l >= MGMT_TOK_LEN) {
			snprintf(err, err_len, "word longer than %d bytes",
				 MGMT_TOK_LEN - 1);
			return -E2BIG;
		}
		memcpy(tok[n], line + start, l);
		tok[n][l] = '\0';
		n++;
	}
	return (int)n;
}

/* Split an entry's keywords (static strings, at most 3 words). */
static unsigned cmd_words(const struct mgmt_cmd *c, char w[4][24])
{
	unsigned n = 0;
	const char *p = c->words;

	while (*p && n < 4) {
		size_t l = strcspn(p, " ");

		snprintf(w[n++], 24, "%.*s", (int)l, p);
		p += l;
		while (*p == ' ')
			p++;
	}
	return n;
}

static bool name_ok(const char *s)
{
	size_t l = strlen(s);

	if (!l || l >= MGMT_MODEL_NAME_LEN || s[0] == '.' || s[0] == '-')
		return false;
	for (size_t i = 0; i < l; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || strchr("_.-", s[i])))
			return false;
	return true;
}

static bool key_ok(const char *s)
{
	size_t l = strlen(s);

	if (!l || s[0] == '.' || s[l - 1] == '.' || strstr(s, ".."))
		return false;
	for (size_t i = 0; i < l; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '.'))
			return false;
	return true;
}

static int arg_check(const struct mgmt_cmd *c, unsigned i, const char *a,
		     char *err, size_t err_len)
{
	char *end;
	unsigned long v;

	switch (c->args[i]) {
	case MGMT_ARG_NAME:
		if (name_ok(a))
			return 0;
		snprintf(err, err_len, "'%s': not a name (letters, digits, _ . -)", a);
		return -EINVAL;
	case MGMT_ARG_KEY:
		if (key_ok(a))
			return 0;
		snprintf(err, err_len, "'%s': not a key (words joined by '.')", a);
		return -EINVAL;
	case MGMT_ARG_UINT:
		errno = 0;
		v = strtoul(a, &end, 10);
		if (a[0] < '0' || a[0] > '9' || *end || errno ||
		    v < c->uint_min || v > c->uint_max) {
			snprintf(err, err_len, "'%s': expected a number %u..%u", a,
				 c->uint_min, c->uint_max);
			return -EINVAL;
		}
		return 0;
	case MGMT_ARG_LABEL:
		if (mgmt_label_parse(a) >= 0)
			return 0;
		snprintf(err, err_len,
			 "'%s': expected production, canary, shadow or none", a);
		return -EINVAL;
	case MGMT_ARG_VALUE:
	case MGMT_ARG_NONE:
		return 0;
	}
	return -EINVAL;
}

int mgmt_cmd_parse(const char *line, struct mgmt_parsed *out, char *err,
		   size_t err_len)
{
	char tok[MGMT_TOK_MAX][MGMT_TOK_LEN];
	const struct mgmt_cmd *best = NULL;
	unsigned best_words = 0;
	int n = mgmt_cmd_split(line, tok, MGMT_TOK_MAX, err, err_len);

	if (n < 0)
		return -EINVAL;
	if (n == 0) {
		snprintf(err, err_len, "empty line");
		return -ENOENT;
	}
	/* The entry with the longest keyword prefix wins ("show config
	 * compare" over "show config"). */
	for (const struct mgmt_cmd *c = mgmt_cmds; c->words; c++) {
		char w[4][24];
		unsigned nw = cmd_words(c, w), k;

		if (nw > (unsigned)n)
			continue;
		for (k = 0; k < nw && !strcmp(w[k], tok[k]); k++)
			;
		if (k == nw && nw > best_words) {
			best = c;
			best_words = nw;
		}
	}
	if (!best) {
		snprintf(err, err_len, "unknown command '%s' (try help)", tok[0]);
		return -EINVAL;
	}
	{
		unsigned na = (unsigned)n - best_words;

		if (na > best->n_args) {
			snprintf(err, err_len, "%s: unexpected '%s' (usage: %s %s)",
				 best->words, tok[best_words + best->n_args],
				 best->words, best->usage);
			return -EINVAL;
		}
		if (na < (unsigned)(best->n_args - best->n_opt)) {
			snprintf(err, err_len, "%s: missing argument (usage: %s %s)",
				 best->words, best->words, best->usage);
			return -EINVAL;
		}
		for (unsigned i = 0; i < na; i++) {
			int rc = arg_check(best, i, tok[best_words + i], err, err_len);

			if (rc)
				return rc;
			memcpy(out->args[i], tok[best_words + i], MGMT_TOK_LEN);
		}
		out->cmd = best;
		out->n_args = na;
	}
	return 0;
}

unsigned mgmt_cmd_complete(const char *line, const char **out, unsigned max)
{
	char tok[MGMT_TOK_MAX][MGMT_TOK_LEN], err[80];
	size_t len = strlen(line);
	int n = mgmt_cmd_split(line, tok, MGMT_TOK_MAX, err, sizeof(err));
	bool open = n > 0 && !strchr(" \t\n\r", line[len - 1]);
	unsigned done, cnt = 0;
	const char *part;

	if (n < 0)
		return 0;
	done = open ? (unsigned)n - 1 : (unsigned)n;
	part = open ? tok[n - 1] : "";
	for (const struct mgmt_cmd *c = mgmt_cmds; c->words && cnt < max; c++) {
		char w[4][24];
		unsigned nw = cmd_words(c, w), k;
		const char *cand;
		bool dup = false;

		if (nw <= done)
			continue;
		for (k = 0; k < done && !strcmp(w[k], tok[k]); k++)
			;
		if (k != done || strncmp(w[done], part, strlen(part)))
			continue;
		/* Point into the table's own string, so the result outlives
		 * the call. */
		cand = c->words;
		for (k = 0; k < done; k++)
			cand += strlen(w[k]) + 1;
		for (unsigned j = 0; j < cnt; j++)
			if (!strncmp(out[j], cand, strlen(w[done])) &&
			    (out[j][strlen(w[done])] == ' ' ||
			     !out[j][strlen(w[done])]))
				dup = true;
		if (!dup)
			out[cnt++] = cand;
	}
	return cnt;
}

size_t mgmt_cmd_help(char *buf, size_t len, bool configure)
{
	size_t o = 0;

	for (const struct mgmt_cmd *c = mgmt_cmds; c->words; c++) {
		char head[96];
		int w;

		if (c->configure && !configure)
			continue;
		snprintf(head, sizeof(head), "%s%s%s", c->words,
			 c->usage[0] ? " " : "", c->usage);
		w = snprintf(buf + (o < len ? o : len), o < len ? len - o : 0,
			     "  %-30s %s\n", head, c->help);
		if (w > 0)
			o += (size_t)w;
	}
	return o;
}
