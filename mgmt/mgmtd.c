// SPDX-License-Identifier: MIT
/*
 * velo-mgmtd — the management daemon (docs/mgmt.md): supervises velod,
 * answers veloctl on a Unix socket (framed protocol, mgmt.h), keeps the
 * configuration store and the model repository, serves metrics.
 *
 * One main thread runs a poll loop (at most 100 ms a turn): the veloctl
 * socket, velod's stdout, a self-pipe for signals; each turn steps the
 * supervisor and the commit-confirmed timer.  A veloctl request is one
 * frame in, one frame out, bounded by 2 s of reading; velod queries made
 * on its behalf are bounded by 1 s, so a wedged velod delays an answer,
 * never stops mgmtd.  The heartbeat and the HTTP server have threads of
 * their own.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <velo/compiler.h>

#include "../tools/lib/counters.h"
#include "../tools/lib/log.h"
#include "mgmt.h"
#include "mgmtd.h"

uint64_t mgmt_ctr[MGMT_CTR__COUNT];
static const struct ctr_desc mgmt_ctr_desc[] = {
	foreach_mgmt_counter(CTR_DESC)
};

#define VELOD_QUERY_MS	1000
/* model load / swap / unload: velod answers when its loader thread is done
 * (image FULL verify, upload, self-test; unload waits for the slot's
 * requests): seconds for an 8B image.  Below veloctl's 15 s. */
#define VELOD_MODEL_QUERY_MS 12000
#define SWAPS_MAX	8	/* model names with an unconfirmed swap */
#define SWAP_CONFIRM_MIN_DEFAULT 10	/* system.swap_confirm_minutes */

/* A swap velod made and nobody confirmed yet: rolled back at deadline_ms
 * (CLOCK_MONOTONIC), as commit confirmed does for the configuration. */
struct swap_pending {
	char name[MGMT_MODEL_NAME_LEN];
	char from[MGMT_MODEL_VERSION_LEN], to[MGMT_MODEL_VERSION_LEN];
	uint64_t deadline_ms;		/* 0: slot free */
};
#define CLI_READ_MS	2000
#define REPLY_MAX	MGMT_FRAME_REPLY_MAX

struct mgmtd {
	char state_dir[256];		/* longer: refused at start */
	char models_dir[PATH_MAX];
	char sock_path[108];
	uint64_t minute_ms;		/* commit confirmed unit (tests shorten) */
	bool no_velod;
	struct mgmt_store *store;
	struct mgmt_repo *repo;
	struct super super;
	pthread_mutex_t lock;		/* store and repo, against metrics */
	char loaded[MGMT_MODEL_NAME_LEN + MGMT_MODEL_VERSION_LEN + 2];
	char loaded_file[256];		/* reloaded into a restarted velod */
	pid_t loaded_pid;		/* the velod that holds it */
	struct swap_pending swaps[SWAPS_MAX];
	/* velod without runtime model commands loads its "models" at start:
	 * the --set argument that carries the loaded model ("" : none). */
	char *model_arg;
	int listen_fd;
	pid_t labels_pid;		/* the velod the labels were applied to */
};

static volatile sig_atomic_t stop_flag;
static int sig_pipe[2] = { -1, -1 };
static char reply[REPLY_MAX + 1];
static char vbuf[REPLY_MAX];
static char verr[1024];		/* why the last velod_ask() failed */

static void on_signal(int sig)
{
	int e = errno;
	char c = (char)sig;

	if (sig == SIGTERM || sig == SIGINT)
		stop_flag = 1;
	if (write(sig_pipe[1], &c, 1) < 0) {
		/* full pipe: a wake-up is already pending */
	}
	errno = e;
}

void mgmtd_view(struct mgmtd *d, struct mgmtd_view *out)
{
	memset(out, 0, sizeof(*out));
	mgmt_super_view(&d->super, &out->sv);
	snprintf(out->velod_ctl, sizeof(out->velod_ctl), "%s",
		 d->super.cfg.ctl_path);
	pthread_mutex_lock(&d->lock);
	out->model_loaded = d->loaded[0] != '\0';
	out->models = mgmt_repo_count(d->repo);
	for (unsigned i = 0; i < out->models; i++)
		out->models_bad += mgmt_repo_get(d->repo, i)->bad;
	out->config_serial = mgmt_store_serial(d->store);
	if (mgmt_store_confirm_deadline(d->store)) {
		uint64_t dl = mgmt_store_confirm_deadline(d->store),
			 now = mgmt_wall_ms();

		out->confirm_left_ms = dl > now ? dl - now : 0;
	}
	pthread_mutex_unlock(&d->lock);
}

/* ------------------------------------------------------------------------
 * Reply building.
 */

struct out {
	size_t len;
	int status;		/* 0 or -errno */
	bool json;
};

static void __attribute__((format(printf, 2, 3))) say(struct out *o,
						      const char *fmt, ...)
{
	va_list ap;
	int w;

	if (o->len >= REPLY_MAX)
		return;
	va_start(ap, fmt);
	w = vsnprintf(reply + o->len, REPLY_MAX - o->len, fmt, ap);
	va_end(ap);
	if (w > 0)
		o->len += (size_t)w < REPLY_MAX - o->len ? (size_t)w
							 : REPLY_MAX - o->len - 1;
}

/* An error: text "error: ..." or JSON {"ok": false, "error": "..."}. */
static void __attribute__((format(printf, 3, 4))) fail(struct out *o, int err,
						       const char *fmt, ...)
{
	char msg[3072];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	o->status = err;
	o->len = 0;
	if (o->json) {
		json_t *j = json_pack("{s:b, s:s}", "ok", 0, "error", msg);
		char *t = json_dumps(j, JSON_COMPACT);

		say(o, "%s\n", t ? t : "{\"ok\": false}");
		free(t);
		json_decref(j);
	} else {
		say(o, "error: %s\n", msg);
	}
}

/* A success message: text as is, JSON {"ok": true, "message": "..."}. */
static void __attribute__((format(printf, 2, 3))) done(struct out *o,
						       const char *fmt, ...)
{
	char msg[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (o->json) {
		json_t *j = json_pack("{s:b, s:s}", "ok", 1, "message", msg);
		char *t = json_dumps(j, JSON_COMPACT);

		say(o, "%s\n", t ? t : "{\"ok\": true}");
		free(t);
		json_decref(j);
	} else {
		say(o, "%s\n", msg);
	}
}

static void say_json(struct out *o, json_t *j)
{
	char *t = json_dumps(j, JSON_INDENT(2));

	say(o, "%s\n", t ? t : "null");
	free(t);
	json_decref(j);
}

/* Ask velod; on failure an error reply naming why. */
static int velod_ask_ms(struct mgmtd *d, struct out *o, const char *cmd,
			int timeout_ms)
{
	int rc;

	if (!d->super.v.ready) {
		snprintf(verr, sizeof(verr), "velod is not running (%s)",
			 d->super.v.last_exit[0] ? d->super.v.last_exit
						 : "starting");
		fail(o, -EAGAIN, "%s", verr);
		return -EAGAIN;
	}
	rc = mgmt_velod_query(d->super.cfg.ctl_path, cmd, vbuf, sizeof(vbuf),
			      timeout_ms);
	if (rc < 0) {
		snprintf(verr, sizeof(verr), "velod did not answer '%s': %s", cmd,
			 strerror(-rc));
		fail(o, rc, "%s", verr);
		return rc;
	}
	if (!strncmp(vbuf, "error:", 6)) {
		size_t l;

		snprintf(verr, sizeof(verr), "velod: %.1000s",
			 vbuf + 7 - (vbuf[6] != ' '));
		l = strlen(verr);
		while (l && verr[l - 1] == '\n')
			verr[--l] = '\0';
		fail(o, -EREMOTEIO, "%s", verr);
		return -EREMOTEIO;
	}
	return 0;
}

static int velod_ask(struct mgmtd *d, struct out *o, const char *cmd)
{
	return velod_ask_ms(d, o, cmd, VELOD_QUERY_MS);
}

/* ------------------------------------------------------------------------
 * Commands.
 */

static void cmd_show_status(struct mgmtd *d, struct out *o)
{
	struct mgmtd_view v;
	uint64_t now = mgmt_now_ms();
	bool ready;

	mgmtd_view(d, &v);
	ready = v.sv.answering && !strcmp(v.sv.engine_state, "ready");
	if (o->json) {
		say_json(o, json_pack(
			"{s:{s:i, s:b, s:b, s:s, s:s, s:I, s:s}, s:b, s:b, "
			"s:{s:I, s:I, s:I}, s:{s:I, s:I}, s:{s:i, s:i}}",
			"velod", "pid", (int)v.sv.pid, "ready", v.sv.ready,
			"answering", v.sv.answering, "engine_state",
			v.sv.engine_state, "listen", v.sv.listen, "uptime_ms",
			(json_int_t)(v.sv.pid && v.sv.ready ? now - v.sv.ready_ms : 0),
			"last_exit", v.sv.last_exit,
			"healthy", v.sv.answering, "ready", ready,
			"restarts", "exits",
			(json_int_t)mgmt_ctr[MGMT_CTR_velod_exits], "wedges",
			(json_int_t)mgmt_ctr[MGMT_CTR_velod_wedges], "asked",
			(json_int_t)mgmt_ctr[MGMT_CTR_velod_restarts_asked],
			"config", "commit", (json_int_t)v.config_serial,
			"confirm_left_ms", (json_int_t)v.confirm_left_ms,
			"models", "images", (int)v.models, "refused",
			(int)v.models_bad));
		/* (loaded model and pending swaps are in "show models") */
		return;
	}
	if (v.sv.pid && v.sv.ready)
		say(o, "velod:    running, pid %d, up %llu s, listen %s\n",
		    (int)v.sv.pid,
		    (unsigned long long)((now - v.sv.ready_ms) / 1000), v.sv.listen);
	else if (v.sv.pid)
		say(o, "velod:    starting, pid %d\n", (int)v.sv.pid);
	else
		say(o, "velod:    down (%s), next start in %llu ms\n",
		    v.sv.last_exit[0] ? v.sv.last_exit : "not started",
		    (unsigned long long)(v.sv.next_start_ms > now
						 ? v.sv.next_start_ms - now : 0));
	say(o, "health:   %s\n", v.sv.answering
		? "ok (velod answers its control socket)"
		: "unhealthy (velod does not answer)");
	say(o, "engine:   %s\n", v.sv.engine_state);
	if (ready)
		say(o, "ready:    yes\n");
	else
		say(o, "ready:    no (%s)\n", v.sv.engine_why[0] ? v.sv.engine_why
			: "no model has passed its self-test");
	say(o, "restarts: %llu after exits, %llu after wedges, %llu asked\n",
	    (unsigned long long)mgmt_ctr[MGMT_CTR_velod_exits],
	    (unsigned long long)mgmt_ctr[MGMT_CTR_velod_wedges],
	    (unsigned long long)mgmt_ctr[MGMT_CTR_velod_restarts_asked]);
	if (v.sv.last_exit[0])
		say(o, "last exit: %s\n", v.sv.last_exit);
	say(o, "config:   commit %llu", (unsigned long long)v.config_serial);
	if (v.confirm_left_ms)
		say(o, ", unconfirmed: rolls back in %llu s unless confirmed (commit)",
		    (unsigned long long)(v.confirm_left_ms + 999) / 1000);
	say(o, "\nmodels:   %u image(s) in the repository, %u refused\n",
	    v.models, v.models_bad);
	say(o, "loaded:   %s\n", d->loaded[0] ? d->loaded : "none");
	for (unsigned i = 0; i < SWAPS_MAX; i++) {
		const struct swap_pending *sp = &d->swaps[i];

		if (sp->deadline_ms)
			say(o, "swap:     %s %s -> %s, rolls back in %llu s unless "
			    "confirmed (model confirm %s)\n", sp->name,
			    sp->from[0] ? sp->from : "?", sp->to,
			    (unsigned long long)(sp->deadline_ms > now
				? (sp->deadline_ms - now + 999) / 1000 : 0),
			    sp->name);
	}
}

static const char *label_err_get(const char *name);

/* velod's slot of NAME VERSION in @slots ("models json"), or NULL. */
static json_t *slot_of(json_t *slots, const char *name, const char *version)
{
	json_t *o, *best = NULL;
	size_t i;

	json_array_foreach(slots, i, o) {
		const char *n = json_string_value(json_object_get(o, "name"));
		const char *v = json_string_value(json_object_get(o, "version"));
		const char *h = json_string_value(json_object_get(o, "hold"));

		if (!n || !v || strcmp(n, name) || strcmp(v, version))
			continue;
		/* a draining slot only if nothing else holds the version */
		if (!best || !h || strcmp(h, "draining"))
			best = o;
	}
	return best;
}

static void cmd_show_models(struct mgmtd *d, struct out *o)
{
	json_t *arr = o->json ? json_array() : NULL, *slots = NULL;
	const char *lastname = "";
	unsigned n;

	/* velod's model slots (route, hold, device, in flight), side by side
	 * with the labels. */
	if (d->super.v.ready &&
	    mgmt_velod_query(d->super.cfg.ctl_path, "models json", vbuf,
			     sizeof(vbuf), VELOD_QUERY_MS) > 0)
		slots = json_loads(vbuf, 0, NULL);
	if (!json_is_array(slots)) {
		json_decref(slots);
		slots = json_array();
	}
	pthread_mutex_lock(&d->lock);
	mgmt_repo_scan(d->repo);
	n = mgmt_repo_count(d->repo);
	if (!o->json)
		say(o, "%-20s %-12s %-12s %-24s %12s  %-7s %s\n", "NAME", "VERSION",
		    "LABEL", "VELOD", "BYTES", "CHECK", "FILE");
	for (unsigned i = 0; i < n; i++) {
		const struct mgmt_model *m = mgmt_repo_get(d->repo, i);
		json_t *sl = slot_of(slots, m->name, m->version);
		const char *lerr = strcmp(lastname, m->name)
			? label_err_get(m->name) : NULL;
		char label[24], vs[48] = "-";

		lastname = m->name;
		if (m->label == MGMT_LABEL_CANARY)
			snprintf(label, sizeof(label), "canary:%u%%", m->canary_pct);
		else
			snprintf(label, sizeof(label), "%s",
				 m->label ? mgmt_label_name(m->label) : "-");
		if (sl) {
			const char *r = json_string_value(json_object_get(sl, "label"));
			const char *h = json_string_value(json_object_get(sl, "hold"));

			r = r ? r : "?";
			if (!strcmp(r, "canary"))
				snprintf(vs, sizeof(vs), "canary:%lld%% slot %lld",
					 (long long)json_integer_value(
						 json_object_get(sl, "share")),
					 (long long)json_integer_value(
						 json_object_get(sl, "id")));
			else
				snprintf(vs, sizeof(vs), "%s%s%s slot %lld", r,
					 h && h[0] ? "," : "", h ? h : "",
					 (long long)json_integer_value(
						 json_object_get(sl, "id")));
		}
		if (arr) {
			json_t *e = json_pack(
				"{s:s, s:s, s:s, s:i, s:I, s:s, s:s, s:s}",
				"name", m->name, "version", m->version, "label",
				mgmt_label_name(m->label), "canary_percent",
				(int)m->canary_pct, "bytes", (json_int_t)m->size,
				"check", m->bad ? "refused" : "ok", "error",
				m->err, "file", m->file);

			json_object_set(e, "velod", sl ? sl : json_null());
			json_object_set_new(e, "label_error",
					    lerr ? json_string(lerr) : json_null());
			json_array_append_new(arr, e);
			continue;
		}
		say(o, "%-20s %-12s %-12s %-24s %12llu  %-7s %s\n", m->name,
		    m->version, label, vs, (unsigned long long)m->size,
		    m->bad ? "REFUSED" : "ok", m->file);
		if (m->bad)
			say(o, "    %s\n", m->err);
		if (lerr)
			say(o, "    labels of %s NOT followed by velod: %s\n",
			    m->name, lerr);
	}
	pthread_mutex_unlock(&d->lock);
	if (arr) {
		json_t *sw = json_array();
		uint64_t now = mgmt_now_ms();

		for (unsigned i = 0; i < SWAPS_MAX; i++)
			if (d->swaps[i].deadline_ms)
				json_array_append_new(sw, json_pack(
					"{s:s, s:s, s:s, s:I}", "name",
					d->swaps[i].name, "from", d->swaps[i].from,
					"to", d->swaps[i].to, "rollback_in_ms",
					(json_int_t)(d->swaps[i].deadline_ms > now
						? d->swaps[i].deadline_ms - now : 0)));
		say_json(o, json_pack("{s:o, s:s, s:o, s:o}", "models", arr, "loaded",
				      d->loaded, "swaps_unconfirmed", sw,
				      "velod_slots", slots));
	} else {
		json_decref(slots);
		say(o, "loaded in velod: %s\n", d->loaded[0] ? d->loaded : "none");
		if (d->super.v.ready &&
		    mgmt_velod_query(d->super.cfg.ctl_path, "models", vbuf,
				     sizeof(vbuf), VELOD_QUERY_MS) > 0 &&
		    strncmp(vbuf, "error:", 6))
			say(o, "velod slots:\n%s", vbuf);
	}
}

static void cmd_velod_passthru(struct mgmtd *d, struct out *o, const char *cmd)
{
	char q[64];

	snprintf(q, sizeof(q), "%s%s", cmd, o->json ? " json" : "");
	if (velod_ask(d, o, q))
		return;
	say(o, "%s", vbuf);
	if (o->len && reply[o->len - 1] != '\n')
		say(o, "\n");
}

static void cmd_show_counters(struct mgmtd *d, struct out *o)
{
	if (o->json) {
		json_t *j = json_object(), *v = NULL;

		if (d->super.v.ready &&
		    mgmt_velod_query(d->super.cfg.ctl_path, "counters json", vbuf,
				     sizeof(vbuf), VELOD_QUERY_MS) > 0)
			v = json_loads(vbuf, 0, NULL);
		if (json_is_object(v))
			json_object_update(j, v);
		json_decref(v);
		for (unsigned i = 0; i < MGMT_CTR__COUNT; i++) {
			char k[64];

			snprintf(k, sizeof(k), "mgmt.%s", mgmt_ctr_desc[i].name);
			json_object_set_new(j, k, json_integer((json_int_t)ctr_read(
							  &mgmt_ctr[i])));
		}
		say_json(o, j);
		return;
	}
	for (unsigned i = 0; i < MGMT_CTR__COUNT; i++)
		if (ctr_read(&mgmt_ctr[i]))
			say(o, "mgmt.%s %llu\n", mgmt_ctr_desc[i].name,
			    (unsigned long long)ctr_read(&mgmt_ctr[i]));
	if (!d->super.v.ready) {
		say(o, "(velod is not running: its counters are gone with it)\n");
		return;
	}
	if (mgmt_velod_query(d->super.cfg.ctl_path, "counters", vbuf,
			     sizeof(vbuf), VELOD_QUERY_MS) >= 0)
		say(o, "%s", vbuf);
	else
		say(o, "(velod did not answer)\n");
}

static const struct mgmt_model *model_pick(struct mgmtd *d, struct out *o,
					   const struct mgmt_parsed *p)
{
	const struct mgmt_model *m;

	mgmt_repo_scan(d->repo);
	m = mgmt_repo_find(d->repo, p->args[0], p->n_args > 1 ? p->args[1] : NULL);
	if (!m)
		fail(o, -ENOENT, "no image of %s%s%s in %s", p->args[0],
		     p->n_args > 1 ? " version " : "",
		     p->n_args > 1 ? p->args[1] : "", d->models_dir);
	return m;
}

/* The full check; a refusal is counted and says why. */
static int model_check(struct mgmtd *d, struct out *o,
		       const struct mgmt_model *m, char *msg, size_t len)
{
	int rc;

	if (m->bad) {
		mgmt_ctr_inc(MGMT_CTR_model_refused);
		fail(o, -EBADMSG, "%s: refused: %s", m->file, m->err);
		return -EBADMSG;
	}
	rc = mgmt_repo_verify(d->repo, m, msg, len);
	if (rc) {
		mgmt_ctr_inc(MGMT_CTR_model_refused);
		LOG_W(mgmt, "%s", msg);
		fail(o, rc, "%s", msg);
		return rc;
	}
	mgmt_ctr_inc(MGMT_CTR_model_checks_ok);
	return 0;
}

static void apply(struct mgmtd *d, const char *why);
static int validate(struct mgmtd *d, enum mgmt_store_which w,
		    const char *model_arg, char *err, size_t len);

static uint64_t swap_window_ms(struct mgmtd *d)
{
	char v[32];
	long min = SWAP_CONFIRM_MIN_DEFAULT;

	if (!mgmt_store_get(d->store, "system.swap_confirm_minutes", v, sizeof(v)) &&
	    atol(v) >= 1 && atol(v) <= 1440)
		min = atol(v);
	return (uint64_t)min * d->minute_ms;
}

static void loaded_set(struct mgmtd *d, const char *name, const char *version,
		       const char *file)
{
	if (name[0])
		snprintf(d->loaded, sizeof(d->loaded), "%s %s", name, version);
	else
		d->loaded[0] = '\0';
	snprintf(d->loaded_file, sizeof(d->loaded_file), "%s", file);
	d->loaded_pid = d->super.v.pid;
}

/* Under d->lock. */
static void swap_arm(struct mgmtd *d, const char *name, const char *to)
{
	struct swap_pending *free_slot = NULL, *sp = NULL;
	size_t nl = strlen(name);

	for (unsigned i = 0; i < SWAPS_MAX; i++) {
		if (d->swaps[i].deadline_ms && !strcmp(d->swaps[i].name, name))
			sp = &d->swaps[i];
		else if (!d->swaps[i].deadline_ms && !free_slot)
			free_slot = &d->swaps[i];
	}
	if (!sp) {
		sp = free_slot ? free_slot : &d->swaps[0];
		snprintf(sp->name, sizeof(sp->name), "%s", name);
		/* From: what was loaded under that name (kept across a second
		 * swap before confirming: the rollback goes to the confirmed). */
		sp->from[0] = '\0';
		if (!strncmp(d->loaded, name, nl) && d->loaded[nl] == ' ')
			snprintf(sp->from, sizeof(sp->from), "%s", d->loaded + nl + 1);
	}
	snprintf(sp->to, sizeof(sp->to), "%s", to);
	sp->deadline_ms = mgmt_now_ms() + swap_window_ms(d);
}

static void swap_clear(struct mgmtd *d, const char *name, bool rolled_back)
{
	for (unsigned i = 0; i < SWAPS_MAX; i++) {
		struct swap_pending *sp = &d->swaps[i];

		if (!sp->deadline_ms || strcmp(sp->name, name))
			continue;
		if (rolled_back && sp->from[0])
			snprintf(d->loaded, sizeof(d->loaded), "%s %s", sp->name,
				 sp->from);
		sp->deadline_ms = 0;
	}
}


/* ------------------------------------------------------------------------
 * Labels drive velod's canary and shadow slots.  labels.json is the truth;
 * labels_sync() makes the slots of one name in velod follow it: a canary or
 * shadow slot whose version (or share) is not the labelled one is unloaded,
 * a labelled one that velod lacks is verified in full and loaded with
 * "label canary share P" / "label shadow".  velod has no command to change
 * a slot's share or label in place, so a new share is an unload and a load
 * (between the two the canary's share goes to production: no request
 * fails).  At most 4 velod model commands per name (unload + load, twice),
 * each bounded by VELOD_MODEL_QUERY_MS.
 */
#define LABEL_ERRS_MAX	16	/* names whose labels velod did not follow */

struct label_err {
	char name[MGMT_MODEL_NAME_LEN];
	char err[512];
};
static struct label_err label_errs[LABEL_ERRS_MAX];

/* Remember why velod does not follow NAME's labels (NULL: it does). */
static void label_err_set(const char *name, const char *err)
{
	struct label_err *fr = NULL;

	for (unsigned i = 0; i < LABEL_ERRS_MAX; i++) {
		struct label_err *e = &label_errs[i];

		if (e->name[0] && !strcmp(e->name, name)) {
			if (err)
				snprintf(e->err, sizeof(e->err), "%s", err);
			else
				e->name[0] = '\0';
			return;
		}
		if (!e->name[0] && !fr)
			fr = e;
	}
	if (err && fr) {
		snprintf(fr->name, sizeof(fr->name), "%s", name);
		snprintf(fr->err, sizeof(fr->err), "%s", err);
	}
}

static const char *label_err_get(const char *name)
{
	for (unsigned i = 0; i < LABEL_ERRS_MAX; i++)
		if (label_errs[i].name[0] && !strcmp(label_errs[i].name, name))
			return label_errs[i].err;
	return NULL;
}

struct lslot {
	bool on;
	char version[MGMT_MODEL_VERSION_LEN];
	unsigned share;			/* canary */
	struct mgmt_model m;		/* labels.json's side: the image */
};

/* What labels.json asks of NAME: [0] canary, [1] shadow.  Under d->lock. */
static bool label_want(struct mgmtd *d, const char *name, struct lslot want[2])
{
	memset(want, 0, 2 * sizeof(want[0]));
	for (unsigned i = 0; i < mgmt_repo_count(d->repo); i++) {
		const struct mgmt_model *m = mgmt_repo_get(d->repo, i);
		struct lslot *w;

		if (strcmp(m->name, name) || (m->label != MGMT_LABEL_CANARY &&
					      m->label != MGMT_LABEL_SHADOW))
			continue;
		w = &want[m->label == MGMT_LABEL_SHADOW];
		w->on = true;
		snprintf(w->version, sizeof(w->version), "%s", m->version);
		w->share = m->canary_pct;
		w->m = *m;
	}
	return want[0].on || want[1].on;
}

/* velod's model slots, asked once per sync ('models json', one query
 * bounded by VELOD_QUERY_MS).  Return: the list (json_decref it), or NULL
 * with *@rc = -errno and @err saying why. */
static json_t *velod_models(struct mgmtd *d, int *rc, char *err, size_t len)
{
	json_t *arr;

	mgmt_ctr_inc(MGMT_CTR_label_velod_queries);
	*rc = mgmt_velod_query(d->super.cfg.ctl_path, "models json", vbuf,
			       sizeof(vbuf), VELOD_QUERY_MS);
	if (*rc < 0) {
		snprintf(err, len, "velod did not answer 'models json': %s",
			 strerror(-*rc));
		return NULL;
	}
	arr = json_loads(vbuf, 0, NULL);
	if (!json_is_array(arr)) {
		json_decref(arr);
		snprintf(err, len, "velod's 'models json' is not a list: %.200s",
			 vbuf);
		*rc = -EPROTO;
		return NULL;
	}
	*rc = 0;
	return arr;
}

/* NAME's slots in velod's list @models (velod_models): its production
 * version (@prod, "" if none), the canary [0] and the shadow [1]. */
static void label_have(const json_t *models, const char *name, char *prod,
		       size_t prod_len, struct lslot have[2])
{
	const json_t *o;
	size_t i;

	memset(have, 0, 2 * sizeof(have[0]));
	prod[0] = '\0';
	json_array_foreach(models, i, o) {
		const char *n = json_string_value(json_object_get(o, "name"));
		const char *l = json_string_value(json_object_get(o, "label"));
		const char *v = json_string_value(json_object_get(o, "version"));
		struct lslot *h;

		if (!n || !l || !v || strcmp(n, name))
			continue;
		if (!strcmp(l, "production")) {
			snprintf(prod, prod_len, "%s", v);
			continue;
		}
		if (strcmp(l, "canary") && strcmp(l, "shadow"))
			continue;
		h = &have[!strcmp(l, "shadow")];
		h->on = true;
		snprintf(h->version, sizeof(h->version), "%s", v);
		h->share = (unsigned)json_integer_value(json_object_get(o, "share"));
	}
}

/* Append "; " and a formatted note to @msg. */
static void __attribute__((format(printf, 3, 4))) note(char *msg, size_t len,
						       const char *fmt, ...)
{
	size_t o = strlen(msg);
	va_list ap;

	if (o + 3 >= len)
		return;
	if (o) {
		memcpy(msg + o, "; ", 3);
		o += 2;
	}
	va_start(ap, fmt);
	vsnprintf(msg + o, len - o, fmt, ap);
	va_end(ap);
}

/* One velod model command of a label change; its answer noted in @msg. */
static int label_cmd(struct mgmtd *d, const char *q, char *msg, size_t len)
{
	int rc = mgmt_velod_query(d->super.cfg.ctl_path, q, vbuf, sizeof(vbuf),
				  VELOD_MODEL_QUERY_MS);
	size_t l;

	if (rc < 0) {
		mgmt_ctr_inc(MGMT_CTR_label_apply_failures);
		note(msg, len, "velod did not answer '%s': %s", q, strerror(-rc));
		return rc;
	}
	l = strlen(vbuf);
	while (l && vbuf[l - 1] == '\n')
		vbuf[--l] = '\0';
	note(msg, len, "velod: %.400s", vbuf);
	if (!strncmp(vbuf, "error:", 6)) {
		mgmt_ctr_inc(MGMT_CTR_label_apply_failures);
		return -EREMOTEIO;
	}
	mgmt_ctr_inc(MGMT_CTR_label_applies);
	return 0;
}

/* Whether velod can be asked to follow the labels now (else @msg says
 * why not, and the sync waits for velod's next start). */
static bool labels_velod_up(struct mgmtd *d, char *msg, size_t len)
{
	msg[0] = '\0';
	if (d->no_velod) {
		note(msg, len, "labels.json only (velod is not supervised)");
		return false;
	}
	if (!d->super.v.ready) {
		note(msg, len, "velod is not running: applied when it is back");
		return false;
	}
	return true;
}

/*
 * Make velod's canary and shadow slots of @name what labels.json says, as
 * the repository stands (the caller scanned it: an image added since is
 * not seen) and from velod's slots in @models (velod_models(), asked once
 * per sync: each command here changes the slots of @name only).  @models
 * NULL: velod did not answer, @qrc and @qerr say why.
 * Return: the number of velod commands it took (0: velod already follows,
 * or can not yet — not running, no production slot —, @msg says so);
 * -errno when velod refused or did not answer, or an image failed its
 * full check (@msg has the reason).
 */
static int label_apply(struct mgmtd *d, const char *name, const json_t *models,
		       int qrc, const char *qerr, char *msg, size_t len)
{
	static const char *const kind[2] = { "canary", "shadow" };
	struct lslot want[2], have[2];
	char prod[MGMT_MODEL_VERSION_LEN], q[1024], why[MGMT_MODEL_ERR_LEN + 300];
	int rc, cmds = 0;

	if (!labels_velod_up(d, msg, len))
		return 0;
	if (!models && !qrc) {	/* velod came up after the sync looked */
		note(msg, len, "velod is not running: applied when it is back");
		return 0;
	}
	if (!models) {
		mgmt_ctr_inc(MGMT_CTR_label_apply_failures);
		note(msg, len, "%s", qerr);
		return qrc;
	}
	pthread_mutex_lock(&d->lock);
	label_want(d, name, want);
	pthread_mutex_unlock(&d->lock);
	label_have(models, name, prod, sizeof(prod), have);
	/* Refused before any slot is touched. */
	for (int k = 0; k < 2; k++)
		if (want[k].on && prod[0] && !strcmp(prod, want[k].version)) {
			mgmt_ctr_inc(MGMT_CTR_label_apply_failures);
			note(msg, len, "%s %s serves production in velod: it can "
			     "not be its own %s", name, prod, kind[k]);
			return -EEXIST;
		}
	for (int k = 0; k < 2; k++) {
		bool same = have[k].on && want[k].on &&
			    !strcmp(have[k].version, want[k].version) &&
			    (k || have[k].share == want[k].share);

		if (have[k].on && !same) {
			snprintf(q, sizeof(q), "model unload %.63s %.31s", name,
				 have[k].version);
			rc = label_cmd(d, q, msg, len);
			if (rc)
				return rc;
			cmds++;
		}
		if (!want[k].on || same)
			continue;
		if (!prod[0]) {
			note(msg, len, "velod has no production slot of %s: the %s "
			     "%s follows once it is loaded (model load %s)", name,
			     kind[k], want[k].version, name);
			continue;
		}
		/* velod verifies too, but the repository names the image
		 * and says why before velod is asked anything. */
		rc = mgmt_repo_verify(d->repo, &want[k].m, why, sizeof(why));
		if (rc) {
			mgmt_ctr_inc(MGMT_CTR_model_refused);
			mgmt_ctr_inc(MGMT_CTR_label_apply_failures);
			note(msg, len, "%s", why);
			return rc;
		}
		mgmt_ctr_inc(MGMT_CTR_model_checks_ok);
		if (k)
			snprintf(q, sizeof(q), "model load %.63s %.31s %.255s "
				 "label shadow", name, want[k].version,
				 want[k].m.file);
		else
			snprintf(q, sizeof(q), "model load %.63s %.31s %.255s "
				 "label canary share %u", name, want[k].version,
				 want[k].m.file, want[k].share);
		rc = label_cmd(d, q, msg, len);
		if (rc)
			return rc;
		cmds++;
	}
	if (!msg[0])
		note(msg, len, "velod follows already");
	return cmds;
}

/* label_apply() for one name, with velod's slots asked here: after a label
 * command (which scanned the repository) or a model load. */
static int labels_sync(struct mgmtd *d, const char *name, char *msg, size_t len)
{
	char qerr[300] = "";
	json_t *models = NULL;
	int qrc = 0, rc;

	if (labels_velod_up(d, msg, len))
		models = velod_models(d, &qrc, qerr, sizeof(qerr));
	rc = label_apply(d, name, models, qrc, qerr, msg, len);
	json_decref(models);
	return rc;
}

/* A velod (re)started: every labelled name's canary and shadow again, from
 * one scan of the repository and one 'models json' (it was one of each per
 * name).  Bounded by the names in labels.json (MGMT_MODELS_MAX). */
static void labels_sync_all(struct mgmtd *d)
{
	char names[MGMT_MODELS_MAX][MGMT_MODEL_NAME_LEN], msg[2048], qerr[300] = "";
	const char *p[MGMT_MODELS_MAX];
	bool want_any[MGMT_MODELS_MAX], any = false;
	json_t *models = NULL;
	unsigned n;
	int qrc = 0;

	pthread_mutex_lock(&d->lock);
	mgmt_repo_scan(d->repo);
	n = mgmt_repo_label_names(d->repo, p, MGMT_MODELS_MAX);
	for (unsigned i = 0; i < n; i++) {
		struct lslot want[2];

		snprintf(names[i], sizeof(names[i]), "%s", p[i]);
		/* production only: model load's */
		want_any[i] = label_want(d, names[i], want);
		any |= want_any[i];
	}
	pthread_mutex_unlock(&d->lock);
	if (any && labels_velod_up(d, msg, sizeof(msg)))
		models = velod_models(d, &qrc, qerr, sizeof(qerr));
	for (unsigned i = 0; i < n; i++) {
		int rc;

		if (!want_any[i])
			continue;
		rc = label_apply(d, names[i], models, qrc, qerr, msg, sizeof(msg));
		if (rc < 0) {
			LOG_E(mgmt, "labels of %s not re-applied to velod pid %d: %s",
			      names[i], (int)d->super.v.pid, msg);
			label_err_set(names[i], msg);
			continue;
		}
		label_err_set(names[i], NULL);
		if (rc > 0) {
			mgmt_ctr_inc(MGMT_CTR_label_reapplies);
			LOG_I(mgmt, "labels of %s re-applied to velod pid %d: %s",
			      names[i], (int)d->super.v.pid, msg);
		}
	}
	json_decref(models);
}

/* Main loop: roll back swaps whose time is up; reload the model into a
 * velod that restarted without it. */
static void models_tick(struct mgmtd *d)
{
	uint64_t now = mgmt_now_ms();

	for (unsigned i = 0; i < SWAPS_MAX; i++) {
		struct swap_pending *sp = &d->swaps[i];
		char q[160];
		int rc;

		if (!sp->deadline_ms || now < sp->deadline_ms)
			continue;
		snprintf(q, sizeof(q), "model rollback %s", sp->name);
		rc = d->super.v.ready
			? mgmt_velod_query(d->super.cfg.ctl_path, q, vbuf,
					   sizeof(vbuf), VELOD_QUERY_MS)
			: -EAGAIN;
		if (rc < 0 || !strncmp(vbuf, "error:", 6))
			LOG_E(mgmt, "swap of %s to %s not confirmed; rollback "
			      "failed: %s", sp->name, sp->to,
			      rc < 0 ? strerror(-rc) : vbuf);
		else
			LOG_W(mgmt, "swap of %s to %s not confirmed: rolled back "
			      "to %s", sp->name, sp->to, sp->from[0] ? sp->from : "?");
		mgmt_ctr_inc(MGMT_CTR_model_auto_rollbacks);
		pthread_mutex_lock(&d->lock);
		swap_clear(d, sp->name, true);
		pthread_mutex_unlock(&d->lock);
	}
	if (d->loaded[0] && d->loaded_pid != -1 && d->super.v.ready &&
	    d->super.v.pid != d->loaded_pid) {
		char q[512], name[MGMT_MODEL_NAME_LEN], ver[MGMT_MODEL_VERSION_LEN];
		int rc;

		/* The slots died with the old process. */
		if (sscanf(d->loaded, "%63s %31s", name, ver) != 2)
			return;
		/* An unconfirmed swap died with them too: as commit confirmed
		 * does, the new velod gets the confirmed version back. */
		pthread_mutex_lock(&d->lock);
		for (unsigned i = 0; i < SWAPS_MAX; i++) {
			struct swap_pending *sp = &d->swaps[i];
			const struct mgmt_model *m;

			if (!sp->deadline_ms || strcmp(sp->name, name) || !sp->from[0])
				continue;
			mgmt_repo_scan(d->repo);
			m = mgmt_repo_find(d->repo, sp->name, sp->from);
			if (m && !m->bad) {
				LOG_W(mgmt, "velod restarted during the unconfirmed swap "
				      "of %s to %s: loading the confirmed %s", sp->name,
				      sp->to, sp->from);
				loaded_set(d, sp->name, sp->from, m->file);
				snprintf(ver, sizeof(ver), "%s", sp->from);
				mgmt_ctr_inc(MGMT_CTR_model_auto_rollbacks);
			}
			sp->deadline_ms = 0;
		}
		pthread_mutex_unlock(&d->lock);
		snprintf(q, sizeof(q), "model load %s %s %s", name, ver,
			 d->loaded_file);
		rc = mgmt_velod_query(d->super.cfg.ctl_path, q, vbuf, sizeof(vbuf),
				      VELOD_MODEL_QUERY_MS);
		d->loaded_pid = d->super.v.pid;
		if (rc < 0 || !strncmp(vbuf, "error:", 6))
			LOG_E(mgmt, "reload of %s into velod pid %d failed: %s",
			      d->loaded, (int)d->loaded_pid,
			      rc < 0 ? strerror(-rc) : vbuf);
		else
			LOG_I(mgmt, "%s reloaded into velod pid %d", d->loaded,
			      (int)d->loaded_pid);
	}
	/* After the production reload above: a canary or shadow needs its
	 * production slot first. */
	if (d->super.v.ready && d->super.v.pid &&
	    d->super.v.pid != d->labels_pid) {
		d->labels_pid = d->super.v.pid;
		labels_sync_all(d);
	}
}

/* velod has no runtime load (yet): it loads the "models" of its
 * configuration at start.  Restart it with this one (or none). */
static void model_at_start(struct mgmtd *d, struct out *o,
			   const struct mgmt_model *m, const char *msg)
{
	json_t *j = m ? json_pack("[{s:s, s:s, s:s}]", "name", m->name, "image",
				  m->file, "label", "production")
		      : json_array();
	char *t = j ? json_dumps(j, JSON_COMPACT) : NULL;
	char *arg = NULL, err[1024];

	json_decref(j);
	if (!t || asprintf(&arg, "models=%s", t) < 0) {
		free(t);
		fail(o, -ENOMEM, "out of memory");
		return;
	}
	free(t);
	pthread_mutex_lock(&d->lock);
	/* velod must accept it before it is restarted with it, or it would
	 * be restarted into a loop of start-up failures. */
	if (validate(d, MGMT_STORE_RUNNING, arg, err, sizeof(err))) {
		pthread_mutex_unlock(&d->lock);
		free(arg);
		fail(o, -EREMOTEIO, "%s%svelod can not load models: %s", msg,
		     msg[0] ? "; " : "", err);
		return;
	}
	free(d->model_arg);
	d->model_arg = arg;
	if (m)
		loaded_set(d, m->name, m->version, m->file);
	else
		loaded_set(d, "", "", "");
	d->loaded_pid = -1;	/* not to be sent "model load" again */
	apply(d, m ? "model load (velod loads models at start)" : "model unload");
	pthread_mutex_unlock(&d->lock);
	if (m)
		done(o, "%s; velod loads models only at start: restarting it "
		     "with %s %s (sessions are lost; show status says when the "
		     "self-test passed)", msg, m->name, m->version);
	else
		done(o, "velod restarting without models");
}

static void cmd_model(struct mgmtd *d, struct out *o, const struct mgmt_parsed *p)
{
	const struct mgmt_model *m = NULL;
	char msg[600], q[600];
	enum mgmt_cmd_id id = p->cmd->id;

	pthread_mutex_lock(&d->lock);
	if (id == MGMT_CMD_MODEL_LOAD || id == MGMT_CMD_MODEL_SWAP ||
	    id == MGMT_CMD_MODEL_VERIFY) {
		m = model_pick(d, o, p);
		if (!m || model_check(d, o, m, msg, sizeof(msg)))
			goto out;
	}
	switch (id) {
	case MGMT_CMD_MODEL_VERIFY:
		done(o, "%s", msg);
		goto out;
	case MGMT_CMD_MODEL_LOAD:
		snprintf(q, sizeof(q), "model load %s %s %s", m->name, m->version,
			 m->file);
		break;
	case MGMT_CMD_MODEL_SWAP:
		snprintf(q, sizeof(q), "model swap %s %s %s", m->name, m->version,
			 m->file);
		break;
	case MGMT_CMD_MODEL_UNLOAD:
		snprintf(q, sizeof(q), "model unload %s", p->args[0]);
		break;
	case MGMT_CMD_MODEL_ROLLBACK:
		snprintf(q, sizeof(q), "model rollback %s", p->args[0]);
		break;
	case MGMT_CMD_MODEL_CONFIRM:
		snprintf(q, sizeof(q), "model confirm %s", p->args[0]);
		break;
	default:
		fail(o, -EINVAL, "internal: not a model command");
		goto out;
	}
	pthread_mutex_unlock(&d->lock);
	/* velod owns the model slots; its answer is the operator's answer
	 * (load, swap and unload answer when velod's loader is done). */
	if (velod_ask_ms(d, o, q, id == MGMT_CMD_MODEL_LOAD ||
			 id == MGMT_CMD_MODEL_SWAP || id == MGMT_CMD_MODEL_UNLOAD ?
			 VELOD_MODEL_QUERY_MS : VELOD_QUERY_MS)) {
		if ((id == MGMT_CMD_MODEL_LOAD || id == MGMT_CMD_MODEL_UNLOAD) &&
		    o->status == -EREMOTEIO &&
		    (strstr(verr, "unknown command") || strstr(verr, "not yet"))) {
			o->len = 0;
			o->status = 0;
			model_at_start(d, o, id == MGMT_CMD_MODEL_LOAD ? m : NULL,
				       m ? msg : "");
			return;
		}
		if (m) {
			/* Keep the check's result in the refusal. */
			o->len = 0;
			fail(o, o->status, "%s; %s", msg, verr);
		}
		return;
	}
	pthread_mutex_lock(&d->lock);
	{
		char ans[512];
		size_t l;

		snprintf(ans, sizeof(ans), "%.500s", vbuf);
		l = strlen(ans);
		while (l && ans[l - 1] == '\n')
			ans[--l] = '\0';
		if (id == MGMT_CMD_MODEL_SWAP) {
			swap_arm(d, m->name, m->version);
			mgmt_ctr_inc(MGMT_CTR_model_swaps);
		}
		else if (id == MGMT_CMD_MODEL_CONFIRM ||
			 id == MGMT_CMD_MODEL_ROLLBACK)
			swap_clear(d, p->args[0], id == MGMT_CMD_MODEL_ROLLBACK);
		if (id == MGMT_CMD_MODEL_LOAD || id == MGMT_CMD_MODEL_SWAP)
			loaded_set(d, m->name, m->version, m->file);
		if (id == MGMT_CMD_MODEL_UNLOAD)
			loaded_set(d, "", "", "");
		pthread_mutex_unlock(&d->lock);
		if (id == MGMT_CMD_MODEL_SWAP) {
			done(o, "%s; velod: %s; rolls back by itself in %llu s "
			     "unless confirmed (model confirm %s)", msg, ans,
			     (unsigned long long)swap_window_ms(d) / 1000, m->name);
		} else if (id == MGMT_CMD_MODEL_LOAD) {
			struct lslot want[2];
			char lmsg[2048], name[MGMT_MODEL_NAME_LEN];
			int rc = 0;

			/* A canary or shadow labelled before the name was
			 * loaded follows it now, from the repository as this
			 * command scanned it.  (A copy of the name: @m points
			 * into the repository, rescanned by other commands
			 * once the lock is let go.) */
			pthread_mutex_lock(&d->lock);
			snprintf(name, sizeof(name), "%s", m->name);
			lmsg[0] = '\0';
			if (label_want(d, name, want)) {
				pthread_mutex_unlock(&d->lock);
				rc = labels_sync(d, name, lmsg, sizeof(lmsg));
				label_err_set(name, rc < 0 ? lmsg : NULL);
			} else {
				pthread_mutex_unlock(&d->lock);
			}
			done(o, "%s; velod: %s%s%s%.2000s", msg, ans,
			     lmsg[0] ? "; labels: " : "",
			     rc < 0 ? "NOT applied: " : "", lmsg);
		} else {
			done(o, "%s%svelod: %s", m ? msg : "", m ? "; " : "", ans);
		}
	}
	return;
out:
	pthread_mutex_unlock(&d->lock);
}

static void cmd_label(struct mgmtd *d, struct out *o, const struct mgmt_parsed *p)
{
	int l = mgmt_label_parse(p->args[2]);
	uint32_t pct = p->n_args > 3 ? (uint32_t)atoi(p->args[3]) : 0;
	char msg[2048], back[1024], *saved;
	int rc;

	pthread_mutex_lock(&d->lock);
	mgmt_repo_scan(d->repo);
	/* Traffic goes only to images that pass the full check. */
	if (l == MGMT_LABEL_PRODUCTION || l == MGMT_LABEL_CANARY) {
		const struct mgmt_model *m = mgmt_repo_find(d->repo, p->args[0],
							    p->args[1]);

		if (m && model_check(d, o, m, msg, sizeof(msg))) {
			pthread_mutex_unlock(&d->lock);
			mgmt_ctr_inc(MGMT_CTR_label_apply_failures);
			o->len = 0;
			fail(o, o->status, "%s %s: %s not set; %s", p->args[0],
			     p->args[1], p->args[2], msg);
			return;
		}
	}
	/* Put back if velod refuses what the new labels ask of it. */
	saved = mgmt_repo_labels_save(d->repo);
	rc = saved ? mgmt_repo_label(d->repo, p->args[0], p->args[1],
				     (enum mgmt_label)l, pct) : -ENOMEM;
	pthread_mutex_unlock(&d->lock);
	if (rc) {
		free(saved);
		if (rc == -ENOENT)
			fail(o, rc, "no image of %s version %s", p->args[0],
			     p->args[1]);
		else if (rc == -EINVAL)
			fail(o, rc, "%s", l == MGMT_LABEL_CANARY || pct
			     ? "a canary needs a share of 1..99 percent, other labels none"
			     : "a refused image can not be labelled");
		else
			fail(o, rc, "labels.json: %s", strerror(-rc));
		return;
	}
	/* labels.json is the truth velod follows: its canary and shadow
	 * slots now, and again after every restart of velod. */
	rc = labels_sync(d, p->args[0], msg, sizeof(msg));
	if (rc < 0) {
		int rrc;

		pthread_mutex_lock(&d->lock);
		rrc = mgmt_repo_labels_restore(d->repo, saved);
		pthread_mutex_unlock(&d->lock);
		free(saved);
		/* velod back to the labels before (a canary unloaded on the
		 * way to a refused one is loaded again). */
		back[0] = '\0';
		if (!rrc) {
			int brc = labels_sync(d, p->args[0], back, sizeof(back));

			label_err_set(p->args[0], brc < 0 ? back : NULL);
			if (!brc)
				back[0] = '\0';	/* nothing was changed */
		}
		LOG_W(mgmt, "label %s %s %s refused: %s", p->args[0], p->args[1],
		      p->args[2], msg);
		fail(o, rc, "%s %s: %s not set (labels unchanged%s): %s%s%.900s",
		     p->args[0], p->args[1], p->args[2],
		     rrc ? ", but labels.json could not be put back" : "", msg,
		     back[0] ? "; put back: " : "", back);
		return;
	}
	free(saved);
	label_err_set(p->args[0], NULL);
	if (pct)
		done(o, "%s %s: canary %u %%; %s", p->args[0], p->args[1], pct, msg);
	else
		done(o, "%s %s: %s; %s", p->args[0], p->args[1], p->args[2], msg);
}

/* --set arguments for velod from the "velod" subtree. */
struct args_ctx {
	char *v[SUPER_ARGS_MAX];
	unsigned n;
	bool overflow;
};

static void args_add(void *arg, const char *key, const char *json)
{
	struct args_ctx *c = arg;
	char *kv;

	if (c->n + 2 > SUPER_ARGS_MAX) {
		c->overflow = true;
		return;
	}
	if (asprintf(&kv, "%s=%s", key, json) < 0)
		return;
	c->v[c->n++] = strdup("--set");
	c->v[c->n++] = kv;
}

static void args_free(struct args_ctx *c)
{
	for (unsigned i = 0; i < c->n; i++)
		free(c->v[i]);
	c->n = 0;
}

/* Validation before a commit: known top-level keys, and velod itself
 * accepts the velod subtree (velod --print-config exits 0). */
static int validate(struct mgmtd *d, enum mgmt_store_which w,
		    const char *model_arg, char *err, size_t len)
{
	const char *top[32];
	unsigned n = mgmt_store_top_keys(d->store, top, 32);
	struct args_ctx a = { 0 };
	char *argv[8 + SUPER_ARGS_MAX];
	unsigned k = 0;
	int p[2], st, rc = 0;
	pid_t pid;

	for (unsigned i = 0; i < n; i++)
		if (strcmp(top[i], "velod") && strcmp(top[i], "system")) {
			snprintf(err, len, "unknown section '%s' (velod, system)",
				 top[i]);
			return -EINVAL;
		}
	mgmt_store_each(d->store, w, "velod", args_add, &a);
	if (model_arg && a.n + 2 <= SUPER_ARGS_MAX) {
		a.v[a.n++] = strdup("--set");
		a.v[a.n++] = strdup(model_arg);
	}
	if (a.overflow) {
		args_free(&a);
		snprintf(err, len, "more than %d velod keys", SUPER_ARGS_MAX / 2);
		return -E2BIG;
	}
	if (d->no_velod) {
		args_free(&a);
		return 0;
	}
	argv[k++] = d->super.cfg.velod_bin;
	if (d->super.cfg.velod_cfg[0]) {
		argv[k++] = "-c";
		argv[k++] = d->super.cfg.velod_cfg;
	}
	for (unsigned i = 0; i < a.n; i++)
		argv[k++] = a.v[i];
	argv[k++] = "--print-config";
	argv[k] = NULL;
	if (pipe2(p, O_CLOEXEC)) {
		args_free(&a);
		snprintf(err, len, "pipe: %s", strerror(errno));
		return -errno;
	}
	pid = fork();
	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY);

		dup2(null, STDOUT_FILENO);
		dup2(p[1], STDERR_FILENO);
		execv(argv[0], argv);
		_exit(127);
	}
	close(p[1]);
	args_free(&a);
	if (pid < 0) {
		close(p[0]);
		snprintf(err, len, "fork: %s", strerror(errno));
		return -EAGAIN;
	}
	{
		ssize_t r, got = 0;

		while ((r = read(p[0], err + got, len - 1 - (size_t)got)) > 0 &&
		       (size_t)(got += r) < len - 1)
			;
		err[got > 0 ? got : 0] = '\0';
		close(p[0]);
	}
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	if (!WIFEXITED(st) || WEXITSTATUS(st)) {
		size_t l = strlen(err);

		while (l && err[l - 1] == '\n')
			err[--l] = '\0';
		if (!l)
			snprintf(err, len, "velod refused the configuration");
		rc = -EINVAL;
	}
	return rc;
}

/* Running configuration -> supervisor arguments; restart velod when they
 * changed (a new configuration only takes effect in a new process). */
static void apply(struct mgmtd *d, const char *why)
{
	struct args_ctx a = { 0 };
	bool same = a.n == d->super.n_args;

	mgmt_store_each(d->store, MGMT_STORE_RUNNING, "velod", args_add, &a);
	if (d->model_arg && a.n + 2 <= SUPER_ARGS_MAX) {
		a.v[a.n++] = strdup("--set");
		a.v[a.n++] = strdup(d->model_arg);
	}
	same = a.n == d->super.n_args;
	for (unsigned i = 0; same && i < a.n; i++)
		same = !strcmp(a.v[i], d->super.args[i]);
	if (same) {
		args_free(&a);
		return;
	}
	mgmt_super_set_args(&d->super, a.v, a.n);	/* takes them */
	if (!d->no_velod)
		mgmt_super_restart(&d->super, why);
}

static void cmd_commit(struct mgmtd *d, struct out *o, uint64_t confirm_ms)
{
	char err[1024];
	int rc;

	pthread_mutex_lock(&d->lock);
	rc = validate(d, MGMT_STORE_CANDIDATE, d->model_arg, err, sizeof(err));
	if (rc) {
		pthread_mutex_unlock(&d->lock);
		mgmt_ctr_inc(MGMT_CTR_commits_refused);
		fail(o, rc, "commit refused: %s", err);
		return;
	}
	rc = mgmt_store_commit(d->store, mgmt_wall_ms(), confirm_ms,
			       confirm_ms ? "commit confirmed" : "commit");
	if (rc < 0) {
		pthread_mutex_unlock(&d->lock);
		fail(o, rc, "commit failed: %s", strerror(-rc));
		return;
	}
	if (rc > 0) {
		mgmt_ctr_inc(MGMT_CTR_commits);
		apply(d, "configuration committed");
	}
	pthread_mutex_unlock(&d->lock);
	if (confirm_ms)
		done(o, "commit %llu; rolls back by itself in %llu s unless "
		     "confirmed (commit)",
		     (unsigned long long)mgmt_store_serial(d->store),
		     (unsigned long long)(confirm_ms + 999) / 1000);
	else
		done(o, rc > 0 ? "commit %llu" : "commit %llu (no change)%s",
		     (unsigned long long)mgmt_store_serial(d->store),
		     rc > 0 ? "" : "");
}

static void cmd_show_config(struct mgmtd *d, struct out *o, enum mgmt_cmd_id id)
{
	size_t n;

	pthread_mutex_lock(&d->lock);
	switch (id) {
	case MGMT_CMD_SHOW_CONFIG_CANDIDATE:
		n = mgmt_store_show(d->store, MGMT_STORE_CANDIDATE, o->json,
				    reply + o->len, REPLY_MAX - o->len);
		break;
	case MGMT_CMD_SHOW_CONFIG_COMPARE:
		n = mgmt_store_compare(d->store, reply + o->len, REPLY_MAX - o->len);
		break;
	case MGMT_CMD_SHOW_CONFIG_HISTORY:
		n = mgmt_store_history(d->store, reply + o->len, REPLY_MAX - o->len);
		break;
	default:
		n = mgmt_store_show(d->store, MGMT_STORE_RUNNING, o->json,
				    reply + o->len, REPLY_MAX - o->len);
		break;
	}
	pthread_mutex_unlock(&d->lock);
	o->len += n < REPLY_MAX - o->len ? n : REPLY_MAX - o->len - 1;
	if (!n && id == MGMT_CMD_SHOW_CONFIG_COMPARE)
		say(o, "(no difference)\n");
}

static void dispatch(struct mgmtd *d, const char *line, struct out *o)
{
	struct mgmt_parsed p;
	char err[256];
	int rc;

	rc = mgmt_cmd_parse(line, &p, err, sizeof(err));
	if (rc) {
		mgmt_ctr_inc(MGMT_CTR_cli_bad_commands);
		fail(o, -EINVAL, "%s", err);
		return;
	}
	switch (p.cmd->id) {
	case MGMT_CMD_HELP:
		o->len += mgmt_cmd_help(reply, REPLY_MAX, true);
		break;
	case MGMT_CMD_SHOW_STATUS:
		cmd_show_status(d, o);
		break;
	case MGMT_CMD_SHOW_MODELS:
		cmd_show_models(d, o);
		break;
	case MGMT_CMD_SHOW_STATS:
		cmd_velod_passthru(d, o, "stats");
		break;
	case MGMT_CMD_SHOW_SESSIONS:
		cmd_velod_passthru(d, o, "sessions");
		break;
	case MGMT_CMD_SHOW_COUNTERS:
		cmd_show_counters(d, o);
		break;
	case MGMT_CMD_SHOW_CONFIG:
	case MGMT_CMD_SHOW_CONFIG_CANDIDATE:
	case MGMT_CMD_SHOW_CONFIG_COMPARE:
	case MGMT_CMD_SHOW_CONFIG_HISTORY:
		cmd_show_config(d, o, p.cmd->id);
		break;
	case MGMT_CMD_MODEL_LOAD:
	case MGMT_CMD_MODEL_UNLOAD:
	case MGMT_CMD_MODEL_SWAP:
	case MGMT_CMD_MODEL_ROLLBACK:
	case MGMT_CMD_MODEL_CONFIRM:
	case MGMT_CMD_MODEL_VERIFY:
		cmd_model(d, o, &p);
		break;
	case MGMT_CMD_MODEL_LABEL:
		cmd_label(d, o, &p);
		break;
	case MGMT_CMD_SET:
		pthread_mutex_lock(&d->lock);
		rc = mgmt_store_set(d->store, p.args[0], p.args[1], err, sizeof(err));
		pthread_mutex_unlock(&d->lock);
		if (rc)
			fail(o, rc, "%s", err);
		else
			done(o, "ok");
		break;
	case MGMT_CMD_DELETE:
		pthread_mutex_lock(&d->lock);
		rc = mgmt_store_delete(d->store, p.args[0]);
		pthread_mutex_unlock(&d->lock);
		if (rc)
			fail(o, rc, "'%s' is not in the candidate", p.args[0]);
		else
			done(o, "ok");
		break;
	case MGMT_CMD_COMMIT:
		cmd_commit(d, o, 0);
		break;
	case MGMT_CMD_COMMIT_CONFIRMED:
		cmd_commit(d, o, strtoull(p.args[0], NULL, 10) * d->minute_ms);
		break;
	case MGMT_CMD_ROLLBACK:
		pthread_mutex_lock(&d->lock);
		rc = mgmt_store_rollback(d->store, (unsigned)atoi(p.args[0]));
		pthread_mutex_unlock(&d->lock);
		if (rc)
			fail(o, rc, "no commit %s back (%u kept)", p.args[0],
			     mgmt_store_history_count(d->store));
		else
			done(o, "candidate = commit of %s back; commit to apply",
			     p.args[0]);
		break;
	case MGMT_CMD_RESTART_DATAPLANE:
		if (d->no_velod) {
			fail(o, -ENOTSUP, "velod is not supervised (--no-velod)");
			break;
		}
		mgmt_super_restart(&d->super, "operator (restart dataplane)");
		done(o, "velod restarting (pid %d told to stop)",
		     (int)d->super.v.pid);
		break;
	case MGMT_CMD_CONFIGURE:
	case MGMT_CMD_EXIT:
		done(o, "ok");	/* shell state lives in veloctl */
		break;
	}
}

static void serve_client(struct mgmtd *d, int fd)
{
	struct mgmt_frame_hdr h;
	char line[MGMT_FRAME_REQ_MAX + 1];
	struct out o = { 0 };
	int rc;

	rc = mgmt_frame_recv(fd, MGMT_FRAME_REQUEST, &h, line,
			     MGMT_FRAME_REQ_MAX, CLI_READ_MS);
	if (rc) {
		mgmt_ctr_inc(MGMT_CTR_cli_bad_frames);
		LOG_D(mgmt, "veloctl frame refused: %s", strerror(-rc));
		if (rc == -EPROTO || rc == -EMSGSIZE) {
			o.len = 0;
			fail(&o, rc, "bad request frame: %s", strerror(-rc));
			mgmt_frame_send(fd, MGMT_FRAME_REPLY, 0, o.status, reply,
					(uint32_t)o.len);
		}
		return;
	}
	mgmt_ctr_inc(MGMT_CTR_cli_requests);
	o.json = h.flags & MGMT_FRAME_F_JSON;
	if (memchr(line, '\0', h.len)) {
		fail(&o, -EINVAL, "NUL byte in the command");
	} else {
		LOG_D(mgmt, "veloctl: %s", line);
		dispatch(d, line, &o);
	}
	mgmt_frame_send(fd, MGMT_FRAME_REPLY, 0, o.status, reply, (uint32_t)o.len);
}

/* ------------------------------------------------------------------------
 * Start-up.
 */

static void usage(FILE *f)
{
	fprintf(f,
"usage: velo-mgmtd --state DIR [options]\n"
"  -d, --state DIR          configuration store (DIR/config.json), default\n"
"                           model repository (DIR/models)\n"
"  -m, --models DIR         model repository\n"
"  -S, --socket PATH        veloctl socket [DIR/mgmt.sock]\n"
"      --velod PATH         velod binary [velod next to velo-mgmtd]\n"
"      --velod-config FILE  velod's base configuration (JSON)\n"
"      --velod-socket PATH  velod's control socket [DIR/velod.sock]\n"
"      --listen ADDR:PORT   velod's UDP address (port 0: picked once, kept\n"
"                           across restarts)\n"
"      --no-velod           do not start velod (configuration, models only)\n"
"      --metrics ADDR:PORT  HTTP metrics/health/ready [127.0.0.1:9400]; port\n"
"                           0 picks one (on the ready line); \"off\"\n"
"      --heartbeat-ms N     velod heartbeat period [200]\n"
"      --wedge-ms N         no heartbeat answer this long: kill, restart [2000]\n"
"      --start-ms N         no ready line this long after a start: kill [120000]\n"
"                           (velod loads and self-tests its models first)\n"
"      --backoff-ms MIN,MAX restart backoff [100,10000]\n"
"      --minute-ms N        length of a minute for commit confirmed [60000]\n"
"                           (tests shorten it)\n"
"      --log SPEC           log levels (as velod)\n"
"Prints \"velo-mgmtd: ready socket=... metrics=... pid=...\" once serving.\n");
}

static int listen_unix(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	unlink(path);
	/* Operators reach it through veloctl as the same user (console
	 * login, SSH forced command): nobody else. */
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || chmod(path, 0600) ||
	    listen(fd, 16)) {
		int e = errno;

		close(fd);
		return -e;
	}
	return fd;
}

static int parse_addr_port(const char *s, char *addr, size_t len,
			   unsigned *port)
{
	const char *c = strrchr(s, ':');
	char *end;
	unsigned long p;

	if (!c || (size_t)(c - s) >= len)
		return -EINVAL;
	p = strtoul(c + 1, &end, 10);
	if (*end || p > 65535 || c[1] == '\0')
		return -EINVAL;
	memcpy(addr, s, (size_t)(c - s));
	addr[c - s] = '\0';
	*port = (unsigned)p;
	return 0;
}

enum { O_VELOD = 256, O_VELOD_CFG, O_VELOD_SOCK, O_LISTEN, O_NO_VELOD,
       O_METRICS, O_HB, O_WEDGE, O_BACKOFF, O_MINUTE, O_LOG, O_START };

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "state", required_argument, NULL, 'd' },
		{ "models", required_argument, NULL, 'm' },
		{ "socket", required_argument, NULL, 'S' },
		{ "velod", required_argument, NULL, O_VELOD },
		{ "velod-config", required_argument, NULL, O_VELOD_CFG },
		{ "velod-socket", required_argument, NULL, O_VELOD_SOCK },
		{ "listen", required_argument, NULL, O_LISTEN },
		{ "no-velod", no_argument, NULL, O_NO_VELOD },
		{ "metrics", required_argument, NULL, O_METRICS },
		{ "heartbeat-ms", required_argument, NULL, O_HB },
		{ "wedge-ms", required_argument, NULL, O_WEDGE },
		{ "backoff-ms", required_argument, NULL, O_BACKOFF },
		{ "minute-ms", required_argument, NULL, O_MINUTE },
		{ "start-ms", required_argument, NULL, O_START },
		{ "log", required_argument, NULL, O_LOG },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	static struct mgmtd D;
	struct mgmtd *d = &D;
	struct super_cfg sc = {
		.hb_ms = 200, .wedge_ms = 2000, .start_ms = 120000,
		.backoff_min_ms = 100, .backoff_max_ms = 10000, .stable_ms = 10000,
	};
	char metrics[160] = "127.0.0.1:9400", path[PATH_MAX + 32], maddr[128];
	unsigned mport = 0, bound = 0;
	struct sigaction sa = { 0 };
	int c, rc, ret = 1;

	log_set_ident("velo-mgmtd");
	d->minute_ms = 60000;
	while ((c = getopt_long(argc, argv, "d:m:S:h", lo, NULL)) != -1) {
		switch (c) {
		case 'd':
			if (strlen(optarg) >= sizeof(d->state_dir)) {
				fprintf(stderr, "velo-mgmtd: --state path too long\n");
				return 2;
			}
			snprintf(d->state_dir, sizeof(d->state_dir), "%s", optarg);
			break;
		case 'm': snprintf(d->models_dir, sizeof(d->models_dir), "%s", optarg); break;
		case 'S': snprintf(d->sock_path, sizeof(d->sock_path), "%s", optarg); break;
		case O_VELOD: snprintf(sc.velod_bin, sizeof(sc.velod_bin), "%s", optarg); break;
		case O_VELOD_CFG: snprintf(sc.velod_cfg, sizeof(sc.velod_cfg), "%s", optarg); break;
		case O_VELOD_SOCK: snprintf(sc.ctl_path, sizeof(sc.ctl_path), "%s", optarg); break;
		case O_LISTEN: snprintf(sc.listen, sizeof(sc.listen), "%s", optarg); break;
		case O_NO_VELOD: d->no_velod = true; break;
		case O_METRICS: snprintf(metrics, sizeof(metrics), "%s", optarg); break;
		case O_HB: sc.hb_ms = (unsigned)atoi(optarg); break;
		case O_WEDGE: sc.wedge_ms = (unsigned)atoi(optarg); break;
		case O_BACKOFF:
			if (sscanf(optarg, "%u,%u", &sc.backoff_min_ms,
				   &sc.backoff_max_ms) != 2) {
				usage(stderr);
				return 2;
			}
			break;
		case O_MINUTE: d->minute_ms = strtoull(optarg, NULL, 10); break;
		case O_START: sc.start_ms = (unsigned)atoi(optarg); break;
		case O_LOG:
			if (log_set_spec(optarg)) {
				fprintf(stderr, "velo-mgmtd: bad --log '%s'\n", optarg);
				return 2;
			}
			break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (!d->state_dir[0] || optind != argc || sc.hb_ms < 10 ||
	    sc.wedge_ms < 2 * sc.hb_ms || !d->minute_ms || sc.start_ms < 100 ||
	    sc.backoff_min_ms < 1 || sc.backoff_max_ms < sc.backoff_min_ms) {
		usage(stderr);
		return 2;
	}
	if (!d->models_dir[0])
		snprintf(d->models_dir, sizeof(d->models_dir), "%.255s/models",
			 d->state_dir);
	if (!d->sock_path[0] &&
	    (size_t)snprintf(d->sock_path, sizeof(d->sock_path), "%s/mgmt.sock",
			     d->state_dir) >= sizeof(d->sock_path)) {
		fprintf(stderr, "velo-mgmtd: socket path too long\n");
		return 2;
	}
	if (!sc.ctl_path[0] &&
	    (size_t)snprintf(sc.ctl_path, sizeof(sc.ctl_path), "%s/velod.sock",
			     d->state_dir) >= sizeof(sc.ctl_path)) {
		fprintf(stderr, "velo-mgmtd: velod socket path too long\n");
		return 2;
	}
	if (!sc.velod_bin[0]) {
		ssize_t l = readlink("/proc/self/exe", path, sizeof(path) - 1);
		char *slash;

		path[l > 0 ? l : 0] = '\0';
		slash = strrchr(path, '/');
		snprintf(sc.velod_bin, sizeof(sc.velod_bin), "%.*s/velod",
			 slash ? (int)(slash - path) : 1, slash ? path : ".");
	}
	if (strcmp(metrics, "off") &&
	    parse_addr_port(metrics, maddr, sizeof(maddr), &mport)) {
		fprintf(stderr, "velo-mgmtd: bad --metrics '%s'\n", metrics);
		return 2;
	}

	rc = ctr_block_register("mgmt", mgmt_ctr_desc, mgmt_ctr, MGMT_CTR__COUNT);
	if (rc)
		LOG_W(mgmt, "counters not registered: %s", strerror(-rc));
	mkdir(d->state_dir, 0700);
	mkdir(d->models_dir, 0755);
	snprintf(path, sizeof(path), "%.255s/config.json", d->state_dir);
	d->store = mgmt_store_open(path, CONFIG_MGMT_HISTORY_MAX);
	if (!d->store) {
		LOG_E(mgmt, "configuration store %s: %s", path, strerror(errno));
		return 1;
	}
	d->repo = mgmt_repo_open(d->models_dir);
	if (!d->repo) {
		LOG_E(mgmt, "model repository %s: %s", d->models_dir,
		      strerror(errno));
		goto err_store;
	}
	pthread_mutex_init(&d->lock, NULL);
	if (pipe2(sig_pipe, O_CLOEXEC | O_NONBLOCK)) {
		LOG_E(mgmt, "pipe: %s", strerror(errno));
		goto err_repo;
	}
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGCHLD, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	d->listen_fd = listen_unix(d->sock_path);
	if (d->listen_fd < 0) {
		LOG_E(mgmt, "socket %s: %s", d->sock_path, strerror(-d->listen_fd));
		goto err_pipe;
	}
	rc = mgmt_super_init(&d->super, &sc);
	if (rc) {
		LOG_E(mgmt, "supervisor: %s", strerror(-rc));
		goto err_sock;
	}
	apply(d, "start");
	if (IS_ENABLED(CONFIG_MGMT_METRICS) && strcmp(metrics, "off")) {
		rc = mgmt_metrics_start(d, maddr, mport, &bound);
		if (rc) {
			LOG_E(mgmt, "metrics on %s: %s", metrics, strerror(-rc));
			goto err_super;
		}
	}
	printf("velo-mgmtd: ready socket=%s metrics=%s:%u pid=%d\n", d->sock_path,
	       bound ? maddr : "off", bound, (int)getpid());
	fflush(stdout);

	while (!stop_flag) {
		struct pollfd pfd[3] = {
			{ .fd = d->listen_fd, .events = POLLIN },
			{ .fd = sig_pipe[0], .events = POLLIN },
			{ .fd = mgmt_super_fd(&d->super), .events = POLLIN },
		};
		char drain[64];
		int cfd;

		poll(pfd, 3, 100);
		while (read(sig_pipe[0], drain, sizeof(drain)) > 0)
			;
		if (!d->no_velod)
			mgmt_super_step(&d->super);
		pthread_mutex_lock(&d->lock);
		rc = mgmt_store_tick(d->store, mgmt_wall_ms());
		if (rc > 0) {
			mgmt_ctr_inc(MGMT_CTR_auto_rollbacks);
			apply(d, "commit confirmed not confirmed: rolled back");
		}
		pthread_mutex_unlock(&d->lock);
		if (!d->no_velod)
			models_tick(d);
		while ((cfd = accept4(d->listen_fd, NULL, NULL, SOCK_CLOEXEC)) >= 0) {
			serve_client(d, cfd);
			close(cfd);
		}
	}
	LOG_I(mgmt, "stopping");
	ret = 0;
	if (IS_ENABLED(CONFIG_MGMT_METRICS) && bound)
		mgmt_metrics_stop();
err_super:
	mgmt_super_fini(&d->super);
err_sock:
	close(d->listen_fd);
	unlink(d->sock_path);
err_pipe:
	close(sig_pipe[0]);
	close(sig_pipe[1]);
err_repo:
	free(d->model_arg);
	mgmt_repo_close(d->repo);
err_store:
	mgmt_store_close(d->store);
	return ret;
}
