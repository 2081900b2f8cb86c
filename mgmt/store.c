// SPDX-License-Identifier: MIT
/*
 * store.c — configuration store: candidate, commit, commit confirmed,
 * rollback N, show | compare.  The whole state is one JSON file
 *
 *   { "format": 1, "serial": S,
 *     "history": [ { "serial", "time_ms", "comment", "config" } ...newest first ],
 *     "candidate": { ... },
 *     "confirm": { "deadline_ms": T, "rollback_serial": R }   (when pending) }
 *
 * rewritten atomically on every change (mgmt_file_write_atomic), so a
 * crash or power loss leaves either the old or the new state, and a
 * pending confirmation survives a restart of mgmtd (the deadline is wall
 * clock).  Bounds: history_max commits, MGMT_STORE_FILE_MAX bytes.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../tools/lib/log.h"
#include "mgmt.h"

struct mgmt_store {
	char *path;
	unsigned history_max;
	json_t *history;	/* array, newest first; [0] is running */
	json_t *candidate;	/* object */
	uint64_t serial;	/* of the newest commit */
	uint64_t confirm_deadline_ms;	/* 0: nothing pending */
	uint64_t confirm_rollback_serial;
};

static json_t *running(const struct mgmt_store *st)
{
	json_t *h = json_array_get(st->history, 0);

	return h ? json_object_get(h, "config") : NULL;
}

static int store_save(struct mgmt_store *st)
{
	json_t *root = json_pack("{s:i, s:I, s:O, s:O}", "format", 1, "serial",
				 (json_int_t)st->serial, "history", st->history,
				 "candidate", st->candidate);
	char *text;
	int rc;

	if (!root)
		return -ENOMEM;
	if (st->confirm_deadline_ms)
		json_object_set_new(root, "confirm",
				    json_pack("{s:I, s:I}", "deadline_ms",
					      (json_int_t)st->confirm_deadline_ms,
					      "rollback_serial",
					      (json_int_t)st->confirm_rollback_serial));
	text = json_dumps(root, JSON_INDENT(1) | JSON_SORT_KEYS);
	json_decref(root);
	if (!text)
		return -ENOMEM;
	rc = mgmt_file_write_atomic(st->path, text, strlen(text), 0600);
	free(text);
	if (rc)
		LOG_E(mgmt, "config store %s: write failed: %s", st->path,
		      strerror(-rc));
	return rc ? -EIO : 0;
}

static int store_load(struct mgmt_store *st)
{
	json_error_t je;
	json_t *root, *h, *c, *cf;
	struct stat sb;
	size_t i;
	json_t *e;

	if (stat(st->path, &sb)) {
		if (errno != ENOENT)
			return -errno;
		return 0;	/* first start: empty store */
	}
	if (sb.st_size > (off_t)MGMT_STORE_FILE_MAX) {
		LOG_E(mgmt, "config store %s: larger than %u bytes", st->path,
		      MGMT_STORE_FILE_MAX);
		return -EINVAL;
	}
	root = json_load_file(st->path, JSON_REJECT_DUPLICATES, &je);
	if (!root) {
		LOG_E(mgmt, "config store %s: %s (line %d)", st->path, je.text,
		      je.line);
		return -EINVAL;
	}
	h = json_object_get(root, "history");
	c = json_object_get(root, "candidate");
	if (json_integer_value(json_object_get(root, "format")) != 1 ||
	    !json_is_array(h) || !json_is_object(c))
		goto bad;
	json_array_foreach(h, i, e)
		if (!json_is_object(json_object_get(e, "config")) ||
		    !json_is_integer(json_object_get(e, "serial")))
			goto bad;
	while (json_array_size(h) > st->history_max)
		json_array_remove(h, json_array_size(h) - 1);
	json_decref(st->history);
	json_decref(st->candidate);
	st->history = json_incref(h);
	st->candidate = json_incref(c);
	st->serial = (uint64_t)json_integer_value(json_object_get(root, "serial"));
	cf = json_object_get(root, "confirm");
	if (cf) {
		st->confirm_deadline_ms = (uint64_t)json_integer_value(
			json_object_get(cf, "deadline_ms"));
		st->confirm_rollback_serial = (uint64_t)json_integer_value(
			json_object_get(cf, "rollback_serial"));
	}
	json_decref(root);
	return 0;
bad:
	LOG_E(mgmt, "config store %s: not a velo configuration store", st->path);
	json_decref(root);
	return -EINVAL;
}

struct mgmt_store *mgmt_store_open(const char *path, unsigned history_max)
{
	struct mgmt_store *st;
	int rc;

	if (history_max < 2) {
		errno = EINVAL;
		return NULL;
	}
	st = calloc(1, sizeof(*st));
	if (!st)
		goto err;
	st->path = strdup(path);
	st->history_max = history_max;
	st->history = json_array();
	st->candidate = json_object();
	if (!st->path || !st->history || !st->candidate) {
		errno = ENOMEM;
		goto err_free;
	}
	rc = store_load(st);
	if (rc) {
		errno = -rc;
		goto err_free;
	}
	/* An empty store has one commit: the empty configuration. */
	if (!json_array_size(st->history)) {
		json_array_append_new(st->history,
				      json_pack("{s:I, s:I, s:s, s:o}", "serial",
						(json_int_t)0, "time_ms",
						(json_int_t)0, "comment",
						"initial", "config", json_object()));
	}
	return st;
err_free:
	mgmt_store_close(st);
	return NULL;
err:
	errno = ENOMEM;
	return NULL;
}

void mgmt_store_close(struct mgmt_store *st)
{
	if (!st)
		return;
	json_decref(st->history);
	json_decref(st->candidate);
	free(st->path);
	free(st);
}

/* Walk @key's dots in @obj; create objects on the way when @create.  The
 * last component is returned in *leaf. */
static json_t *key_parent(json_t *obj, const char *key, bool create,
			  char *leaf, size_t leaf_len)
{
	const char *p = key;

	for (;;) {
		const char *dot = strchr(p, '.');
		char part[MGMT_TOK_LEN];
		json_t *next;

		if (!dot) {
			if (strlen(p) >= leaf_len)
				return NULL;
			memcpy(leaf, p, strlen(p) + 1);
			return obj;
		}
		if ((size_t)(dot - p) >= sizeof(part) || dot == p)
			return NULL;
		memcpy(part, p, (size_t)(dot - p));
		part[dot - p] = '\0';
		next = json_object_get(obj, part);
		if (!next) {
			if (!create)
				return NULL;
			/* set_new frees the value when it refuses the key (not
			 * UTF-8): never touch it then (found by fuzz_mgmt). */
			next = json_object();
			if (json_object_set_new(obj, part, next))
				return NULL;
		}
		if (!json_is_object(next))
			return NULL;
		obj = next;
		p = dot + 1;
	}
}

int mgmt_store_set(struct mgmt_store *st, const char *key, const char *value,
		   char *err, size_t err_len)
{
	char leaf[MGMT_TOK_LEN];
	json_t *parent, *v;

	if (!key[0] || key[0] == '.' || key[strlen(key) - 1] == '.') {
		snprintf(err, err_len, "'%s': not a key", key);
		return -EINVAL;
	}
	parent = key_parent(st->candidate, key, true, leaf, sizeof(leaf));
	if (!parent) {
		snprintf(err, err_len, "'%s': a part of it holds a value, not keys",
			 key);
		return -EINVAL;
	}
	v = json_loads(value, JSON_DECODE_ANY, NULL);
	if (!v || json_is_object(v) || json_is_array(v)) {
		json_decref(v);
		v = json_string(value);
	}
	if (!v) {
		snprintf(err, err_len, "value is not valid UTF-8");
		return -EINVAL;
	}
	if (json_is_object(json_object_get(parent, leaf))) {
		json_decref(v);
		snprintf(err, err_len, "'%s' holds keys; delete it first", key);
		return -EINVAL;
	}
	if (json_object_set_new(parent, leaf, v)) {
		snprintf(err, err_len, "'%s': not a valid key", key);
		return -EINVAL;
	}
	return 0;
}

/* Remove objects left empty by a delete, from the leaf up. */
static void prune(json_t *obj)
{
	const char *k;
	json_t *v;
	void *tmp;

	json_object_foreach_safe(obj, tmp, k, v) {
		if (json_is_object(v)) {
			prune(v);
			if (!json_object_size(v))
				json_object_del(obj, k);
		}
	}
}

int mgmt_store_delete(struct mgmt_store *st, const char *key)
{
	char leaf[MGMT_TOK_LEN];
	json_t *parent = key_parent(st->candidate, key, false, leaf, sizeof(leaf));

	if (!parent || json_object_del(parent, leaf))
		return -ENOENT;
	prune(st->candidate);
	return 0;
}

static int commit_config(struct mgmt_store *st, json_t *cfg, uint64_t now_ms,
			 const char *comment)
{
	json_t *e = json_pack("{s:I, s:I, s:s, s:O}", "serial",
			      (json_int_t)(st->serial + 1), "time_ms",
			      (json_int_t)now_ms, "comment", comment, "config", cfg);

	if (!e)
		return -ENOMEM;
	json_array_insert_new(st->history, 0, e);
	while (json_array_size(st->history) > st->history_max)
		json_array_remove(st->history, json_array_size(st->history) - 1);
	st->serial++;
	return 0;
}

int mgmt_store_commit(struct mgmt_store *st, uint64_t now_ms,
		      uint64_t confirm_ms, const char *comment)
{
	json_t *old_hist = json_deep_copy(st->history);
	uint64_t old_serial = st->serial, old_dl = st->confirm_deadline_ms,
		 old_rb = st->confirm_rollback_serial;
	bool same = json_equal(st->candidate, running(st));
	int rc;

	if (!old_hist)
		return -ENOMEM;
	if (same && !confirm_ms && !st->confirm_deadline_ms) {
		json_decref(old_hist);
		return 0;
	}
	if (!same) {
		json_t *cfg = json_deep_copy(st->candidate);

		rc = cfg ? commit_config(st, cfg, now_ms, comment) : -ENOMEM;
		json_decref(cfg);
		if (rc)
			goto restore;
	}
	if (confirm_ms) {
		/* A second commit confirmed extends the deadline but keeps
		 * the configuration to go back to: the last confirmed one. */
		if (!st->confirm_deadline_ms)
			st->confirm_rollback_serial = same ? st->serial : old_serial;
		st->confirm_deadline_ms = now_ms + confirm_ms;
	} else {
		st->confirm_deadline_ms = 0;
		st->confirm_rollback_serial = 0;
	}
	rc = store_save(st);
	if (rc)
		goto restore;
	json_decref(old_hist);
	return same ? 0 : 1;
restore:
	json_decref(st->history);
	st->history = old_hist;
	st->serial = old_serial;
	st->confirm_deadline_ms = old_dl;
	st->confirm_rollback_serial = old_rb;
	return rc;
}

int mgmt_store_rollback(struct mgmt_store *st, unsigned n)
{
	json_t *e = json_array_get(st->history, n), *cfg;

	if (!e)
		return -ERANGE;
	cfg = json_deep_copy(json_object_get(e, "config"));
	if (!cfg)
		return -ENOMEM;
	json_decref(st->candidate);
	st->candidate = cfg;
	return 0;
}

int mgmt_store_tick(struct mgmt_store *st, uint64_t now_ms)
{
	json_t *e, *target = NULL, *cfg;
	char comment[96];
	size_t i;
	int rc;

	if (!st->confirm_deadline_ms || now_ms < st->confirm_deadline_ms)
		return 0;
	json_array_foreach(st->history, i, e)
		if ((uint64_t)json_integer_value(json_object_get(e, "serial")) ==
		    st->confirm_rollback_serial) {
			target = json_object_get(e, "config");
			break;
		}
	if (!target) {
		/* Pushed out of the history (history_max commits made while
		 * unconfirmed): nothing to go back to; say so, keep running. */
		LOG_E(mgmt, "commit confirmed: commit %llu left the history, "
		      "no rollback", (unsigned long long)st->confirm_rollback_serial);
		st->confirm_deadline_ms = 0;
		return store_save(st);
	}
	cfg = json_deep_copy(target);
	if (!cfg)
		return -ENOMEM;
	snprintf(comment, sizeof(comment),
		 "automatic rollback to commit %llu (not confirmed)",
		 (unsigned long long)st->confirm_rollback_serial);
	json_decref(st->candidate);
	st->candidate = cfg;
	rc = mgmt_store_commit(st, now_ms, 0, comment);
	if (rc < 0)
		return rc;
	LOG_W(mgmt, "%s", comment);
	return rc;
}

uint64_t mgmt_store_confirm_deadline(const struct mgmt_store *st)
{
	return st->confirm_deadline_ms;
}

unsigned mgmt_store_history_count(const struct mgmt_store *st)
{
	return (unsigned)json_array_size(st->history);
}

uint64_t mgmt_store_serial(const struct mgmt_store *st)
{
	return (uint64_t)json_integer_value(
		json_object_get(json_array_get(st->history, 0), "serial"));
}

/* ------------------------------------------------------------------------
 * Flattening to "set KEY VALUE" lines.
 */

struct lines {
	char **v;
	size_t n, cap;
};

static bool plain_word(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || strchr("._-:/,+=@", *s)))
			return false;
	return true;
}

/* Value text: JSON, but a string that is one plain word shows bare (and
 * reads back the same through set, unless it looks like a number). */
static char *value_text(json_t *v, bool bare_strings)
{
	if (bare_strings && json_is_string(v) && plain_word(json_string_value(v))) {
		json_t *probe = json_loads(json_string_value(v), JSON_DECODE_ANY, NULL);
		bool ambiguous = probe != NULL;

		json_decref(probe);
		if (!ambiguous)
			return strdup(json_string_value(v));
	}
	return json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
}

static void flatten(json_t *obj, const char *prefix, struct lines *out,
		    const char *fmt_set)
{
	const char *k;
	json_t *v;

	json_object_foreach(obj, k, v) {
		char key[512];

		snprintf(key, sizeof(key), "%s%s%s", prefix, *prefix ? "." : "", k);
		if (json_is_object(v)) {
			flatten(v, key, out, fmt_set);
			continue;
		}
		if (out->n == out->cap) {
			size_t cap = out->cap ? out->cap * 2 : 32;
			char **nv = realloc(out->v, cap * sizeof(*nv));

			if (!nv)
				return;
			out->v = nv;
			out->cap = cap;
		}
		{
			char *val = value_text(v, true), *line = NULL;

			if (val && asprintf(&line, fmt_set, key, val) < 0)
				line = NULL;
			free(val);
			if (line)
				out->v[out->n++] = line;
		}
	}
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void lines_free(struct lines *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
}

#define APPEND(buf, len, o, ...)                                              \
	do {                                                                  \
		int w_ = snprintf((buf) + ((o) < (len) ? (o) : (len)),        \
				  (o) < (len) ? (len) - (o) : 0, __VA_ARGS__); \
		if (w_ > 0)                                                   \
			(o) += (size_t)w_;                                    \
	} while (0)

size_t mgmt_store_show(const struct mgmt_store *st, enum mgmt_store_which w,
		       bool json, char *buf, size_t len)
{
	json_t *cfg = w == MGMT_STORE_RUNNING ? running(st) : st->candidate;
	struct lines l = { 0 };
	size_t o = 0;

	if (len)
		buf[0] = '\0';
	if (json) {
		char *t = json_dumps(cfg, JSON_INDENT(2) | JSON_SORT_KEYS);

		if (t)
			APPEND(buf, len, o, "%s\n", t);
		free(t);
		return o;
	}
	flatten(cfg, "", &l, "set %s %s");
	if (l.n)
		qsort(l.v, l.n, sizeof(*l.v), cmp_str);
	for (size_t i = 0; i < l.n; i++)
		APPEND(buf, len, o, "%s\n", l.v[i]);
	lines_free(&l);
	return o;
}

size_t mgmt_store_compare(const struct mgmt_store *st, char *buf, size_t len)
{
	struct lines a = { 0 }, b = { 0 };
	size_t i = 0, j = 0, o = 0;

	if (len)
		buf[0] = '\0';
	flatten(running(st), "", &a, "set %s %s");
	flatten(st->candidate, "", &b, "set %s %s");
	if (a.n)	/* qsort's base must not be NULL, even for 0 */
		qsort(a.v, a.n, sizeof(*a.v), cmp_str);
	if (b.n)
		qsort(b.v, b.n, sizeof(*b.v), cmp_str);
	while (i < a.n || j < b.n) {
		int c = i == a.n ? 1 : j == b.n ? -1 : strcmp(a.v[i], b.v[j]);

		if (c < 0)
			APPEND(buf, len, o, "- %s\n", a.v[i++]);
		else if (c > 0)
			APPEND(buf, len, o, "+ %s\n", b.v[j++]);
		else
			i++, j++;
	}
	lines_free(&a);
	lines_free(&b);
	return o;
}

size_t mgmt_store_history(const struct mgmt_store *st, char *buf, size_t len)
{
	size_t i, o = 0;
	json_t *e;

	if (len)
		buf[0] = '\0';
	json_array_foreach(st->history, i, e) {
		long long t = json_integer_value(json_object_get(e, "time_ms"));

		APPEND(buf, len, o, "%2zu  commit %lld  time_ms %lld  %s\n", i,
		       json_integer_value(json_object_get(e, "serial")), t,
		       json_string_value(json_object_get(e, "comment")) ?: "");
	}
	return o;
}

int mgmt_store_get(const struct mgmt_store *st, const char *key, char *buf,
		   size_t len)
{
	char leaf[MGMT_TOK_LEN];
	json_t *parent = key_parent(running(st), key, false, leaf, sizeof(leaf));
	json_t *v = parent ? json_object_get(parent, leaf) : NULL;
	char *t;

	if (!v)
		return -ENOENT;
	t = json_is_string(v) ? strdup(json_string_value(v))
			      : json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
	if (!t)
		return -ENOMEM;
	snprintf(buf, len, "%s", t);
	free(t);
	return 0;
}

struct each_ctx {
	void (*fn)(void *arg, const char *key, const char *json);
	void *arg;
	unsigned n;
};

static void each_walk(json_t *obj, const char *prefix, struct each_ctx *c)
{
	const char *k;
	json_t *v;

	json_object_foreach(obj, k, v) {
		char key[512];

		snprintf(key, sizeof(key), "%s%s%s", prefix, *prefix ? "." : "", k);
		if (json_is_object(v)) {
			each_walk(v, key, c);
		} else {
			char *t = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);

			if (t)
				c->fn(c->arg, key, t);
			free(t);
			c->n++;
		}
	}
}

unsigned mgmt_store_each(const struct mgmt_store *st, enum mgmt_store_which w,
			 const char *prefix,
			 void (*fn)(void *arg, const char *key,
				    const char *json),
			 void *arg)
{
	struct each_ctx c = { fn, arg, 0 };
	char leaf[MGMT_TOK_LEN], key[MGMT_TOK_LEN];
	json_t *parent, *sub;

	/* prefix "velod." names the object at "velod". */
	snprintf(key, sizeof(key), "%.*s", (int)strlen(prefix) -
		 (prefix[0] && prefix[strlen(prefix) - 1] == '.'), prefix);
	parent = key_parent(w == MGMT_STORE_RUNNING ? running(st) : st->candidate,
			    key, false, leaf, sizeof(leaf));
	sub = parent ? json_object_get(parent, leaf) : NULL;
	if (json_is_object(sub))
		each_walk(sub, "", &c);
	return c.n;
}

unsigned mgmt_store_top_keys(const struct mgmt_store *st, const char **out,
			     unsigned max)
{
	const char *k;
	unsigned n = 0;
	json_t *v;

	json_object_foreach(st->candidate, k, v)
		if (n < max)
			out[n++] = k;
	return n;
}
