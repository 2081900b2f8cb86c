// SPDX-License-Identifier: MIT
/*
 * super.c — velo-mgmtd's supervisor of velod.
 *
 * States: stopped (next start at next_start_ms) -> starting (fork+exec,
 * waiting for the "velod: ready" line on its stdout, at most start_ms) ->
 * ready (heartbeat thread queries "stats json" every hb_ms; no answer for
 * wedge_ms: SIGKILL) -> exited (reaped; backoff doubles from
 * backoff_min_ms to backoff_max_ms, back to the minimum once a run was
 * ready for stable_ms) -> stopped.
 *
 * After the first ready line the listen address velod reported (the port
 * the kernel picked for ":0") is passed on every restart, so clients find
 * the new process where the old one was: their sessions are gone (the new
 * velod does not know them, and answers nothing to strangers), which the
 * client library reports as a closed session or timed-out requests.
 *
 * The heartbeat runs on its own thread, so a wedged velod never stalls the
 * main loop that answers veloctl: each query is bounded by hb_ms.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../tools/lib/log.h"
#include "mgmt.h"
#include "mgmtd.h"

uint64_t mgmt_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t mgmt_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void *hb_main(void *arg)
{
	struct super *s = arg;
	static char buf[8192];	/* this thread only */

	while (__atomic_load_n(&s->hb_run, __ATOMIC_ACQUIRE)) {
		bool ready;
		pid_t pid;

		pthread_mutex_lock(&s->lock);
		ready = s->v.ready;
		pid = s->v.pid;
		pthread_mutex_unlock(&s->lock);
		if (ready && pid > 0) {
			int rc = mgmt_velod_query(s->cfg.ctl_path, "stats json", buf,
						  sizeof(buf), (int)s->cfg.hb_ms);
			json_t *j = rc > 0 ? json_loads(buf, 0, NULL) : NULL;
			const char *es = json_string_value(
				json_object_get(j, "engine_state"));

			pthread_mutex_lock(&s->lock);
			if (s->v.pid == pid) {
				s->v.answering = j != NULL;
				if (j) {
					s->v.last_ok_ms = mgmt_now_ms();
					const char *why = json_string_value(
						json_object_get(j, "not_ready_reason"));

					snprintf(s->v.engine_state,
						 sizeof(s->v.engine_state), "%s",
						 es ? es : "unknown");
					snprintf(s->v.engine_why,
						 sizeof(s->v.engine_why), "%s",
						 why ? why : "");
				}
			}
			pthread_mutex_unlock(&s->lock);
			mgmt_ctr_inc(j ? MGMT_CTR_heartbeats_ok
				       : MGMT_CTR_heartbeats_missed);
			json_decref(j);
		}
		usleep(s->cfg.hb_ms * 1000u);
	}
	return NULL;
}

int mgmt_super_init(struct super *s, const struct super_cfg *cfg)
{
	int rc;

	memset(s, 0, sizeof(*s));
	s->cfg = *cfg;
	s->out_fd = -1;
	s->v.backoff_ms = cfg->backoff_min_ms;
	s->v.next_start_ms = mgmt_now_ms();
	snprintf(s->v.engine_state, sizeof(s->v.engine_state), "down");
	snprintf(s->v.listen, sizeof(s->v.listen), "%s", cfg->listen);
	pthread_mutex_init(&s->lock, NULL);
	s->hb_run = true;
	rc = pthread_create(&s->hb, NULL, hb_main, s);
	if (rc) {
		pthread_mutex_destroy(&s->lock);
		return -rc;
	}
	return 0;
}

void mgmt_super_set_args(struct super *s, char **args, unsigned n)
{
	for (unsigned i = 0; i < s->n_args; i++)
		free(s->args[i]);
	s->n_args = 0;
	for (unsigned i = 0; i < n && i < SUPER_ARGS_MAX; i++)
		s->args[s->n_args++] = args[i];
}

int mgmt_super_fd(const struct super *s)
{
	return s->out_fd;
}

static void start(struct super *s)
{
	char *argv[16 + SUPER_ARGS_MAX];
	unsigned a = 0;
	int p[2];
	pid_t pid;

	argv[a++] = s->cfg.velod_bin;
	if (s->cfg.velod_cfg[0]) {
		argv[a++] = "-c";
		argv[a++] = s->cfg.velod_cfg;
	}
	argv[a++] = "-s";
	argv[a++] = s->cfg.ctl_path;
	for (unsigned i = 0; i < s->n_args; i++)
		argv[a++] = s->args[i];
	/* After the config: the address of the first run wins. */
	if (s->v.listen[0]) {
		argv[a++] = "--listen";
		argv[a++] = s->v.listen;
	}
	argv[a] = NULL;
	if (pipe2(p, O_CLOEXEC)) {
		LOG_E(mgmt, "pipe: %s", strerror(errno));
		s->v.next_start_ms = mgmt_now_ms() + s->v.backoff_ms;
		return;
	}
	pid = fork();
	if (pid < 0) {
		LOG_E(mgmt, "fork: %s", strerror(errno));
		close(p[0]);
		close(p[1]);
		s->v.next_start_ms = mgmt_now_ms() + s->v.backoff_ms;
		return;
	}
	if (pid == 0) {
		sigset_t none;

		/* velod must not outlive a killed mgmtd. */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		signal(SIGPIPE, SIG_DFL);
		dup2(p[1], STDOUT_FILENO);
		execv(argv[0], argv);
		dprintf(STDERR_FILENO, "velo-mgmtd: exec %s: %s\n", argv[0],
			strerror(errno));
		_exit(127);
	}
	close(p[1]);
	fcntl(p[0], F_SETFL, O_NONBLOCK);
	s->out_fd = p[0];
	s->out_len = 0;
	mgmt_ctr_inc(MGMT_CTR_velod_starts);
	pthread_mutex_lock(&s->lock);
	s->v.pid = pid;
	s->v.ready = false;
	s->v.answering = false;
	s->v.started_ms = mgmt_now_ms();
	snprintf(s->v.engine_state, sizeof(s->v.engine_state), "starting");
	pthread_mutex_unlock(&s->lock);
	LOG_I(mgmt, "velod started, pid %d", (int)pid);
}

/* Read velod's stdout: the ready line, then whatever it prints (counter
 * dumps), which is drained so that velod never blocks on a full pipe. */
static void read_output(struct super *s)
{
	for (;;) {
		ssize_t r = read(s->out_fd, s->out + s->out_len,
				 sizeof(s->out) - 1 - s->out_len);
		char *nl;

		if (r <= 0) {
			if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
				close(s->out_fd);
				s->out_fd = -1;
			}
			return;
		}
		s->out_len += (size_t)r;
		s->out[s->out_len] = '\0';
		while ((nl = strchr(s->out, '\n'))) {
			*nl = '\0';
			if (!s->v.ready && !strncmp(s->out, "velod: ready ", 13)) {
				char *l = strstr(s->out, "listen=");

				pthread_mutex_lock(&s->lock);
				if (l)
					snprintf(s->v.listen, sizeof(s->v.listen),
						 "%.*s", (int)strcspn(l + 7, " "),
						 l + 7);
				s->v.ready = true;
				s->v.answering = true;
				s->v.ready_ms = s->v.last_ok_ms = mgmt_now_ms();
				snprintf(s->v.engine_state,
					 sizeof(s->v.engine_state), "unknown");
				pthread_mutex_unlock(&s->lock);
				LOG_I(mgmt, "velod ready, pid %d, listen %s",
				      (int)s->v.pid, s->v.listen);
			}
			s->out_len -= (size_t)(nl + 1 - s->out);
			memmove(s->out, nl + 1, s->out_len + 1);
		}
		if (s->out_len == sizeof(s->out) - 1)
			s->out_len = 0;	/* an overlong line: dropped */
	}
}

static void describe_exit(char *buf, size_t len, int st)
{
	if (WIFEXITED(st))
		snprintf(buf, len, "exit status %d", WEXITSTATUS(st));
	else if (WIFSIGNALED(st))
		snprintf(buf, len, "killed by signal %d (%s)", WTERMSIG(st),
			 strsignal(WTERMSIG(st)));
	else
		snprintf(buf, len, "wait status 0x%x", st);
}

static void reaped(struct super *s, int st)
{
	uint64_t now = mgmt_now_ms();
	bool stable, asked = s->restart_now;

	pthread_mutex_lock(&s->lock);
	stable = s->v.ready && now - s->v.ready_ms >= s->cfg.stable_ms;
	describe_exit(s->v.last_exit, sizeof(s->v.last_exit), st);
	s->v.last_status = st;
	s->v.pid = 0;
	s->v.ready = false;
	s->v.answering = false;
	snprintf(s->v.engine_state, sizeof(s->v.engine_state), "down");
	if (asked || stable)
		s->v.backoff_ms = s->cfg.backoff_min_ms;
	s->v.next_start_ms = asked ? now : now + s->v.backoff_ms;
	if (!asked) {
		s->v.backoff_ms *= 2;
		if (s->v.backoff_ms > s->cfg.backoff_max_ms)
			s->v.backoff_ms = s->cfg.backoff_max_ms;
	}
	pthread_mutex_unlock(&s->lock);
	s->restart_now = false;
	if (!asked && !s->stopping) {
		mgmt_ctr_inc(MGMT_CTR_velod_exits);
		LOG_W(mgmt, "velod %s; restart in %llu ms", s->v.last_exit,
		      (unsigned long long)(s->v.next_start_ms - now));
	}
	if (s->out_fd >= 0) {
		close(s->out_fd);
		s->out_fd = -1;
	}
}

void mgmt_super_step(struct super *s)
{
	uint64_t now = mgmt_now_ms();
	pid_t pid = s->v.pid;
	int st;

	if (s->out_fd >= 0)
		read_output(s);
	if (pid > 0 && waitpid(pid, &st, WNOHANG) == pid) {
		if (s->out_fd >= 0)
			read_output(s);
		reaped(s, st);
		pid = 0;
	}
	if (s->stopping)
		return;
	if (pid == 0 && now >= s->v.next_start_ms) {
		start(s);
		return;
	}
	if (pid > 0 && !s->v.ready && now - s->v.started_ms > s->cfg.start_ms) {
		LOG_E(mgmt, "velod pid %d: no ready line in %u ms, killed",
		      (int)pid, s->cfg.start_ms);
		mgmt_ctr_inc(MGMT_CTR_velod_start_timeouts);
		kill(pid, SIGKILL);
		s->v.started_ms = now;	/* one kill per attempt */
		return;
	}
	if (pid > 0 && s->v.ready) {
		uint64_t last;

		pthread_mutex_lock(&s->lock);
		last = s->v.last_ok_ms;
		pthread_mutex_unlock(&s->lock);
		if (now - last > s->cfg.wedge_ms) {
			LOG_E(mgmt, "velod pid %d: no heartbeat answer for %llu ms "
			      "(wedged), killed", (int)pid,
			      (unsigned long long)(now - last));
			mgmt_ctr_inc(MGMT_CTR_velod_wedges);
			kill(pid, SIGKILL);
			pthread_mutex_lock(&s->lock);
			s->v.last_ok_ms = now;	/* one kill per wedge */
			pthread_mutex_unlock(&s->lock);
		}
	}
}

void mgmt_super_restart(struct super *s, const char *why)
{
	mgmt_ctr_inc(MGMT_CTR_velod_restarts_asked);
	LOG_I(mgmt, "velod restart: %s", why);
	if (s->v.pid > 0) {
		s->restart_now = true;
		kill(s->v.pid, SIGTERM);
	} else {
		s->v.next_start_ms = mgmt_now_ms();
		s->v.backoff_ms = s->cfg.backoff_min_ms;
	}
}

void mgmt_super_view(struct super *s, struct super_view *out)
{
	pthread_mutex_lock(&s->lock);
	*out = s->v;
	pthread_mutex_unlock(&s->lock);
}

void mgmt_super_fini(struct super *s)
{
	pid_t pid = s->v.pid;
	int st;

	s->stopping = true;
	__atomic_store_n(&s->hb_run, false, __ATOMIC_RELEASE);
	pthread_join(s->hb, NULL);
	if (pid > 0) {
		/* Clean stop (sessions are told), then force after 5 s. */
		kill(pid, SIGTERM);
		for (int i = 0; i < 50; i++) {
			if (waitpid(pid, &st, WNOHANG) == pid) {
				pid = 0;
				break;
			}
			usleep(100000);
		}
		if (pid > 0) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
		}
	}
	if (s->out_fd >= 0)
		close(s->out_fd);
	mgmt_super_set_args(s, NULL, 0);
	pthread_mutex_destroy(&s->lock);
}
