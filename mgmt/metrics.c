// SPDX-License-Identifier: MIT
/*
 * metrics.c — velo-mgmtd's HTTP endpoints (libmicrohttpd, its own thread):
 *
 *   /metrics  Prometheus text format 0.0.4.  vLLM's names where the meaning
 *             is the same (vllm:time_to_first_token_seconds, ...), so that
 *             existing dashboards work; velo_* for the appliance's own.
 *   /health   200 when velod answers its control socket, else 503.
 *   /ready    200 only when velod answers and its engine reports "ready"
 *             (a model passed its self-test), else 503 with the reason.
 *
 * Truthfulness: every value comes from a live source at scrape time
 * (velod's "counters json" and "stats json", mgmtd's own counters); a
 * source that does not answer is reported as down (velo_velod_up 0), never
 * as stale numbers.  vLLM metrics velod does not produce yet (no engine
 * statistics on its control socket) are exported with zero observations
 * and a HELP line saying so: a scrape with no model loaded is true.
 * Cost: one scrape is two control socket round trips (~100 us each) and
 * ~20 KB of text.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "../tools/lib/counters.h"
#include "../tools/lib/log.h"
#include "mgmt.h"
#include "mgmtd.h"

#define SCRAPE_QUERY_MS	500
#define PAGE_MAX	(256u << 10)

static struct MHD_Daemon *httpd;
static struct mgmtd *mgmtd;

struct page {
	char *buf;
	size_t len, cap;
};

static void __attribute__((format(printf, 2, 3))) put(struct page *p,
						      const char *fmt, ...)
{
	va_list ap;
	int w;

	if (p->len >= p->cap)
		return;
	va_start(ap, fmt);
	w = vsnprintf(p->buf + p->len, p->cap - p->len, fmt, ap);
	va_end(ap);
	if (w > 0)
		p->len += (size_t)w < p->cap - p->len ? (size_t)w
						      : p->cap - p->len - 1;
}

static uint64_t jget(json_t *c, const char *k)
{
	return (uint64_t)json_integer_value(json_object_get(c, k));
}

/* A histogram with the vLLM bucket bounds and no observations. */
static void histo_empty(struct page *p, const char *name, const char *help,
			const double *le, unsigned n)
{
	put(p, "# HELP %s %s (velod reports no engine statistics yet)\n"
	    "# TYPE %s histogram\n", name, help, name);
	for (unsigned i = 0; i < n; i++)
		put(p, "%s_bucket{le=\"%g\"} 0\n", name, le[i]);
	put(p, "%s_bucket{le=\"+Inf\"} 0\n%s_sum 0\n%s_count 0\n", name, name,
	    name);
}

static void render_metrics(struct page *p)
{
	static const double ttft_le[] = { 0.001, 0.005, 0.01, 0.02, 0.04, 0.06,
					  0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
					  5.0, 7.5, 10.0 };
	static const double itl_le[] = { 0.01, 0.025, 0.05, 0.075, 0.1, 0.15,
					 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5 };
	static const double e2e_le[] = { 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0,
					 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0 };
	struct mgmtd_view v;
	char *buf = malloc(PAGE_MAX);
	json_t *c = NULL;
	const char *k;
	json_t *val;
	bool up;

	mgmtd_view(mgmtd, &v);
	if (buf && v.sv.ready &&
	    mgmt_velod_query(v.velod_ctl, "counters json", buf, PAGE_MAX,
			     SCRAPE_QUERY_MS) > 0)
		c = json_loads(buf, 0, NULL);
	free(buf);
	up = json_is_object(c);

	put(p, "# HELP velo_velod_up 1 when velod answered this scrape\n"
	    "# TYPE velo_velod_up gauge\nvelo_velod_up %d\n", up);
	put(p, "# HELP velo_ready 1 when a model passed its self-test and the "
	    "engine answers\n# TYPE velo_ready gauge\nvelo_ready %d\n",
	    up && v.sv.answering && !strcmp(v.sv.engine_state, "ready"));

	/* vLLM-compatible. */
	histo_empty(p, "vllm:time_to_first_token_seconds",
		    "Histogram of time to first token in seconds.", ttft_le, 16);
	histo_empty(p, "vllm:inter_token_latency_seconds",
		    "Histogram of inter-token latency in seconds.", itl_le, 13);
	histo_empty(p, "vllm:request_queue_time_seconds",
		    "Histogram of time spent in WAITING phase for request.",
		    e2e_le, 15);
	histo_empty(p, "vllm:e2e_request_latency_seconds",
		    "Histogram of e2e request latency in seconds.", e2e_le, 15);
	put(p, "# HELP vllm:num_requests_running Number of requests in model "
	    "execution batches.\n# TYPE vllm:num_requests_running gauge\n"
	    "vllm:num_requests_running %llu\n",
	    (unsigned long long)(up ? jget(c, "sched.running") : 0));
	put(p, "# HELP vllm:num_requests_waiting Number of requests waiting to "
	    "be processed.\n# TYPE vllm:num_requests_waiting gauge\n"
	    "vllm:num_requests_waiting %llu\n",
	    (unsigned long long)(up ? jget(c, "sched.waiting") : 0));
	{
		/* Cached blocks hold a reusable prefix but are free to take. */
		uint64_t used = up ? jget(c, "sched.kv_blocks_used") : 0,
			 total = up ? used + jget(c, "sched.kv_blocks_free") +
					      jget(c, "sched.kv_blocks_cached")
				    : 0;

		put(p, "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means "
		    "100 percent usage.\n# TYPE vllm:kv_cache_usage_perc gauge\n"
		    "vllm:kv_cache_usage_perc %g\n",
		    total ? (double)used / (double)total : 0.0);
	}
	put(p, "# HELP vllm:request_success_total Count of successfully "
	    "processed requests.\n# TYPE vllm:request_success_total counter\n");
	/* vLLM's "stop" is EOS or a stop sequence. */
	put(p, "vllm:request_success_total{finished_reason=\"stop\"} %llu\n",
	    (unsigned long long)(up ? jget(c, "sched.done_stop") +
					      jget(c, "sched.done_eos") : 0));
	put(p, "vllm:request_success_total{finished_reason=\"length\"} %llu\n",
	    (unsigned long long)(up ? jget(c, "sched.done_length") : 0));
	put(p, "vllm:request_success_total{finished_reason=\"abort\"} %llu\n",
	    (unsigned long long)(up ? jget(c, "sched.done_cancel") : 0));

	/* The appliance's own. */
	put(p, "# HELP velo_dataplane_drops_total Datagrams dropped by the "
	    "dataplane, by reason\n# TYPE velo_dataplane_drops_total counter\n");
	if (up)
		json_object_foreach(c, k, val)
			if (!strncmp(k, "dp.drop_", 8))
				put(p, "velo_dataplane_drops_total{reason=\"%s\"} %llu\n",
				    k + 8, (unsigned long long)json_integer_value(val));
	put(p, "# HELP velo_retransmits_total Datagrams retransmitted on "
	    "RETRANSMIT_REQUEST\n# TYPE velo_retransmits_total counter\n"
	    "velo_retransmits_total %llu\n",
	    (unsigned long long)(up ? jget(c, "sess.retrans_datagrams") : 0));
	put(p, "# HELP velo_auth_failures_total Datagrams failing "
	    "authentication, by reason\n# TYPE velo_auth_failures_total counter\n");
	put(p, "velo_auth_failures_total{reason=\"bad_tag\"} %llu\n",
	    (unsigned long long)(up ? jget(c, "dp.drop_bad_tag") : 0));
	put(p, "velo_auth_failures_total{reason=\"replay\"} %llu\n",
	    (unsigned long long)(up ? jget(c, "dp.drop_replay") : 0));
	put(p, "velo_auth_failures_total{reason=\"stale_logon\"} %llu\n",
	    (unsigned long long)(up ? jget(c, "dp.drop_stale_logon") : 0));
	put(p, "velo_auth_failures_total{reason=\"unknown_session\"} %llu\n",
	    (unsigned long long)(up ? jget(c, "dp.drop_unknown_session") : 0));
	put(p, "# HELP velo_model_swaps_total Model swaps completed\n"
	    "# TYPE velo_model_swaps_total counter\nvelo_model_swaps_total %llu\n",
	    (unsigned long long)ctr_read(&mgmt_ctr[MGMT_CTR_model_swaps]));
	put(p, "# HELP velo_velod_restarts_total velod restarts by cause\n"
	    "# TYPE velo_velod_restarts_total counter\n"
	    "velo_velod_restarts_total{cause=\"exit\"} %llu\n"
	    "velo_velod_restarts_total{cause=\"wedge\"} %llu\n"
	    "velo_velod_restarts_total{cause=\"asked\"} %llu\n",
	    (unsigned long long)ctr_read(&mgmt_ctr[MGMT_CTR_velod_exits]),
	    (unsigned long long)ctr_read(&mgmt_ctr[MGMT_CTR_velod_wedges]),
	    (unsigned long long)ctr_read(&mgmt_ctr[MGMT_CTR_velod_restarts_asked]));
	put(p, "# HELP velo_model_images_refused_total Model images refused by "
	    "the full check\n# TYPE velo_model_images_refused_total counter\n"
	    "velo_model_images_refused_total %llu\n",
	    (unsigned long long)ctr_read(&mgmt_ctr[MGMT_CTR_model_refused]));
	put(p, "# HELP velo_label_applications_total velod canary/shadow slot "
	    "commands sent for labels.json, by result\n"
	    "# TYPE velo_label_applications_total counter\n"
	    "velo_label_applications_total{result=\"ok\"} %llu\n"
	    "velo_label_applications_total{result=\"failed\"} %llu\n",
	    (unsigned long long)ctr_read(&mgmt_ctr[MGMT_CTR_label_applies]),
	    (unsigned long long)ctr_read(&mgmt_ctr[MGMT_CTR_label_apply_failures]));
	put(p, "# HELP velo_config_commit Serial of the running configuration\n"
	    "# TYPE velo_config_commit gauge\nvelo_config_commit %llu\n",
	    (unsigned long long)v.config_serial);
	put(p, "# HELP velo_config_unconfirmed 1 while a commit confirmed "
	    "waits\n# TYPE velo_config_unconfirmed gauge\n"
	    "velo_config_unconfirmed %d\n", v.confirm_left_ms > 0);

	/* Every counter of both processes, by name, for the rest. */
	put(p, "# HELP velo_counter Every velod and mgmtd counter by name\n"
	    "# TYPE velo_counter counter\n");
	if (up)
		json_object_foreach(c, k, val)
			put(p, "velo_counter{name=\"%s\"} %llu\n", k,
			    (unsigned long long)json_integer_value(val));
	for (unsigned b = 0; b < ctr_block_count(); b++) {
		const struct ctr_block *blk = ctr_block_get(b);

		for (unsigned i = 0; i < blk->n; i++)
			put(p, "velo_counter{name=\"%s.%s\"} %llu\n", blk->prefix,
			    blk->desc[i].name,
			    (unsigned long long)ctr_read(&blk->vals[i]));
	}
	json_decref(c);
}

static enum MHD_Result answer(void *cls, struct MHD_Connection *conn,
			      const char *url, const char *method,
			      const char *version, const char *upload,
			      size_t *upload_len, void **ctx)
{
	struct page p = { .cap = PAGE_MAX };
	struct MHD_Response *r;
	struct mgmtd_view v;
	unsigned code = 200;
	const char *type = "text/plain; charset=utf-8";
	enum MHD_Result rc;

	(void)cls, (void)version, (void)upload, (void)ctx;
	if (*upload_len)
		return MHD_NO;
	p.buf = malloc(p.cap);
	if (!p.buf)
		return MHD_NO;
	p.buf[0] = '\0';
	mgmt_ctr_inc(MGMT_CTR_metrics_scrapes);
	if (strcmp(method, "GET") && strcmp(method, "HEAD")) {
		code = 405;
		put(&p, "method not allowed\n");
	} else if (!strcmp(url, "/metrics")) {
		type = "text/plain; version=0.0.4; charset=utf-8";
		render_metrics(&p);
	} else if (!strcmp(url, "/health") || !strcmp(url, "/healthz")) {
		mgmtd_view(mgmtd, &v);
		if (v.sv.answering) {
			put(&p, "ok: velod pid %d answers\n", (int)v.sv.pid);
		} else {
			code = 503;
			put(&p, "unhealthy: velod %s\n", v.sv.pid
			    ? "does not answer its control socket"
			    : "is not running");
		}
	} else if (!strcmp(url, "/ready") || !strcmp(url, "/readyz")) {
		mgmtd_view(mgmtd, &v);
		if (!v.sv.answering) {
			code = 503;
			put(&p, "not ready: velod %s\n", v.sv.pid
			    ? "does not answer" : "is not running");
		} else if (strcmp(v.sv.engine_state, "ready")) {
			code = 503;
			put(&p, "not ready: engine %s (%s)\n", v.sv.engine_state,
			    v.sv.engine_why[0] ? v.sv.engine_why
					       : "no model has passed its self-test");
		} else {
			put(&p, "ready\n");
		}
	} else {
		code = 404;
		put(&p, "not found: /metrics /health /ready\n");
	}
	r = MHD_create_response_from_buffer(p.len, p.buf, MHD_RESPMEM_MUST_FREE);
	if (!r) {
		free(p.buf);
		return MHD_NO;
	}
	MHD_add_response_header(r, "Content-Type", type);
	rc = MHD_queue_response(conn, code, r);
	MHD_destroy_response(r);
	return rc;
}

int mgmt_metrics_start(struct mgmtd *d, const char *addr, unsigned port,
		       unsigned *bound_port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_port = htons((uint16_t)port) };
	const union MHD_DaemonInfo *info;

	if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1)
		return -EINVAL;
	mgmtd = d;
	/* One thread, a handful of connections: scrapers and probes. */
	httpd = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD |
					 MHD_USE_ERROR_LOG,
				 (uint16_t)port, NULL, NULL, answer, NULL,
				 MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
				 MHD_OPTION_CONNECTION_LIMIT, 16u,
				 MHD_OPTION_CONNECTION_TIMEOUT, 5u,
				 MHD_OPTION_END);
	if (!httpd)
		return -EADDRINUSE;
	info = MHD_get_daemon_info(httpd, MHD_DAEMON_INFO_BIND_PORT);
	*bound_port = info ? info->port : port;
	return 0;
}

void mgmt_metrics_stop(void)
{
	if (httpd)
		MHD_stop_daemon(httpd);
	httpd = NULL;
}
