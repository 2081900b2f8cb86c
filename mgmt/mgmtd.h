/* SPDX-License-Identifier: MIT */
/*
 * mgmtd.h — velo-mgmtd's private interfaces: the supervisor of velod
 * (super.c), the metrics server (metrics.c) and the state they share with
 * the main loop (mgmtd.c).
 */
#ifndef VELO_MGMTD_H
#define VELO_MGMTD_H

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define SUPER_ARGS_MAX	64	/* --set arguments passed to velod */

/* mgmtd's own counters (X-macro, registered as block "mgmt"). */
#define foreach_mgmt_counter(X)                                               \
	X(velod_starts, "velod processes started")                            \
	X(velod_exits, "velod exits not asked for (crash, kill)")             \
	X(velod_wedges, "velod killed for missing heartbeats")                \
	X(velod_start_timeouts, "velod killed for no ready line in time")     \
	X(velod_restarts_asked, "restarts asked by an operator or a commit")  \
	X(heartbeats_ok, "heartbeats velod answered")                         \
	X(heartbeats_missed, "heartbeats velod did not answer in time")       \
	X(cli_requests, "veloctl requests served")                            \
	X(cli_bad_frames, "veloctl frames refused (bad header, size, time)")  \
	X(cli_bad_commands, "veloctl commands refused by the grammar")        \
	X(commits, "configuration commits")                                   \
	X(commits_refused, "commits refused by validation")                   \
	X(auto_rollbacks, "commit confirmed rolled back by the timer")        \
	X(model_checks_ok, "model images that passed the full check")         \
	X(model_refused, "model images refused (corrupt, truncated, bad)")    \
	X(model_swaps, "model swaps velod completed")                         \
	X(model_auto_rollbacks, "swaps rolled back for want of a confirm")    \
	X(label_applies, "canary/shadow slot loads and unloads velod did")   \
	X(label_apply_failures, "canary/shadow changes velod refused")        \
	X(label_reapplies, "labels re-applied to a restarted velod")          \
	X(label_velod_queries, "velod slot lists asked by label syncs (one a sync)") \
	X(metrics_scrapes, "HTTP requests served")

#define MGMT_CTR_ENUM(name, help) MGMT_CTR_##name,
enum { foreach_mgmt_counter(MGMT_CTR_ENUM) MGMT_CTR__COUNT };
extern uint64_t mgmt_ctr[MGMT_CTR__COUNT];

static inline void mgmt_ctr_inc(unsigned i)
{
	__atomic_fetch_add(&mgmt_ctr[i], 1, __ATOMIC_RELAXED);
}

struct super_cfg {
	char velod_bin[PATH_MAX];
	char velod_cfg[PATH_MAX];	/* "" : none */
	char ctl_path[108];		/* velod's control socket */
	char listen[128];		/* "" : velod's own default */
	unsigned hb_ms;			/* heartbeat period */
	unsigned wedge_ms;		/* no answer for this long: wedged */
	unsigned start_ms;		/* ready line within this */
	unsigned backoff_min_ms, backoff_max_ms;
	unsigned stable_ms;		/* ready this long: backoff resets */
};

/* What everybody may read (under super.lock). */
struct super_view {
	pid_t pid;			/* 0: not running */
	bool ready;			/* ready line seen */
	bool answering;			/* last heartbeat answered */
	char engine_state[32];		/* from velod "stats json" */
	char engine_why[128];		/* its not_ready_reason, if any */
	char listen[128];		/* from the ready line */
	uint64_t started_ms, ready_ms, last_ok_ms;	/* CLOCK_MONOTONIC */
	uint64_t next_start_ms;		/* when stopped: next attempt */
	unsigned backoff_ms;
	int last_status;		/* wait status of the last exit */
	char last_exit[96];		/* in words */
};

struct super {
	struct super_cfg cfg;
	pthread_mutex_t lock;
	struct super_view v;
	int out_fd;			/* velod's stdout, -1 */
	char out[512];
	size_t out_len;
	bool restart_now;		/* an asked restart: no backoff */
	bool stopping;
	char *args[SUPER_ARGS_MAX];	/* "--set" "k=v" pairs */
	unsigned n_args;
	pthread_t hb;
	bool hb_run;
};

uint64_t mgmt_now_ms(void);		/* CLOCK_MONOTONIC */
uint64_t mgmt_wall_ms(void);		/* CLOCK_REALTIME */

int mgmt_super_init(struct super *s, const struct super_cfg *cfg);
void mgmt_super_fini(struct super *s);
/* Replace the --set arguments (taken at the next start). */
void mgmt_super_set_args(struct super *s, char **args, unsigned n);
/* One step of the state machine (start when due, read the ready line,
 * reap, detect a wedge).  Called every loop turn (<= 100 ms apart). */
void mgmt_super_step(struct super *s);
/* fd to poll for velod's output (-1 when none). */
int mgmt_super_fd(const struct super *s);
/* Ask for a restart now (SIGTERM: clean, sessions told). */
void mgmt_super_restart(struct super *s, const char *why);
void mgmt_super_view(struct super *s, struct super_view *out);

/* metrics.c */
struct mgmtd;
int mgmt_metrics_start(struct mgmtd *d, const char *addr, unsigned port,
		       unsigned *bound_port);
void mgmt_metrics_stop(void);

/* mgmtd.c, for the metrics thread: a consistent copy of the state. */
struct mgmtd_view {
	struct super_view sv;
	char velod_ctl[108];
	bool model_loaded;		/* a model passed its self-test */
	unsigned models, models_bad;
	uint64_t config_serial;
	uint64_t confirm_left_ms;
};
void mgmtd_view(struct mgmtd *d, struct mgmtd_view *out);

#endif
