// SPDX-License-Identifier: MIT
/*
 * velo-bench — load generator for velod over the client library.
 *
 *   velo-bench [--server H:P] [--key FILE] --mode ping|infer
 *              (--closed N | --rate R [--poisson])
 *              (--requests N | --duration S) [--sessions S] [--json FILE]
 *
 * Closed loop: N operations outstanding at all times (a new one as soon as
 * one completes).  Open loop: operations started at R per second, evenly
 * spaced or with exponential gaps (--poisson); latency is measured from the
 * *intended* start, so a stalled server is not hidden by a stalled sender
 * (coordinated omission).  Every run is bounded in time and in count: with
 * --requests the duration is capped (--max-seconds, default 60), with
 * --duration the count is capped (--max-requests, default 10^7); then the
 * operations still outstanding get --timeout-ms to finish.
 *
 * ping:  TEST_REQUEST -> TEST_RESPONSE; latency = round trip.  A response
 *        that does not come within --timeout-ms counts as lost.
 * infer: INFER -> ACCEPT, TOKENS..., DONE (or REJECT / ERROR); TTFT (to the
 *        first TOKENS), inter-token latency (gap between TOKENS chunks per
 *        token), end to end (to the final answer).  REJECTs are counted by
 *        code; their latency is a round trip too and is reported as
 *        end-to-end of rejected requests.
 *
 * Memory: latency arrays sized at start from the count bound
 * (--max-samples caps them; samples past it are counted, not kept).
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <velo/client.h>
#include <velo/codec.h>
#include <velo/compiler.h>

#include "../client/tool.h"
#include "../lib/clock.h"
#include "../lib/benchmeta.h"
#include "../lib/cpu.h"

#define SESSIONS_MAX 256
#define CODES_MAX 16

enum mode { M_PING, M_INFER, M_UDP };

struct op {			/* one outstanding operation */
	uint64_t id;		/* correlation or request id; 0: free */
	uint64_t start_ns;	/* intended start (open loop) or send time */
	uint64_t last_tok_ns;
	uint32_t tokens;
};

struct sess {
	struct velo_client *c;
	struct op *ops;		/* ring indexed by id & mask */
	uint32_t mask;
	uint32_t outstanding;
	uint64_t base;
};

struct samples {
	uint64_t *v;
	size_t n, cap;
	uint64_t dropped;
};

struct opts {
	const char *server, *key, *json;
	uint32_t key_id;
	enum mode mode;
	uint64_t closed, requests, max_requests, max_samples, warmup;
	double rate, duration, max_seconds;
	int poisson, busy;
	uint32_t sessions, timeout_ms, heartbeat_ms;
	uint64_t prompt_bytes, max_tokens;
	const char *prompt;
	double loss;
	uint64_t seed;
	int echo_core;
};

static volatile sig_atomic_t stop;

static void on_sig(int s)
{
	(void)s;
	stop = 1;
}

static struct {
	uint64_t inflight;
	uint64_t started, completed, lost, timeouts, send_errors, skipped;
	uint64_t rejects[CODES_MAX + 1], errors, tokens, warm_left;
	struct samples rtt, ttft, itl, e2e, e2e_rej;
	uint64_t t0, t_end_send, t_last;
} R;

static int samples_init(struct samples *s, size_t cap)
{
	s->cap = cap;
	s->n = 0;
	s->v = malloc(cap * sizeof(*s->v));
	return s->v ? 0 : -ENOMEM;
}

static void sample(struct samples *s, uint64_t ns)
{
	if (R.warm_left)
		return;
	if (s->n < s->cap)
		s->v[s->n++] = ns;
	else
		s->dropped++;
}

static void usage(FILE *f)
{
	fprintf(f,
"usage: velo-bench [options] --mode ping|infer (--closed N | --rate R [--poisson])\n"
"                  (--requests N | --duration S)\n"
"  -s, --server H:P       velod [" VELO_CLIENT_SERVER_DEFAULT "]\n"
"  -k, --key FILE         key file [$VELO_KEY, ./velo.key, " VELO_CLIENT_KEY_DEFAULT "]\n"
"      --key-id N         key of the file [first]\n"
"      --mode ping|infer  TEST_REQUEST round trips, or INFER requests\n"
"      --mode udp         baseline: plain 88-byte UDP round trips to a\n"
"                         busy-polling echo thread of velo-bench itself on\n"
"                         127.0.0.1 (no protocol, no auth; the client waits\n"
"                         as for ping), closed loop 1; --echo-core C pins\n"
"                         the echo thread\n"
"      --closed N         closed loop: N operations outstanding\n"
"      --rate R           open loop: R operations per second\n"
"      --poisson          open loop with exponential gaps (Poisson arrivals)\n"
"      --requests N       stop after N operations (time still capped by\n"
"                         --max-seconds [60])\n"
"      --duration S       stop starting operations after S seconds (count\n"
"                         still capped by --max-requests [10000000])\n"
"      --sessions S       sessions (default: 1 for ping; for infer enough to\n"
"                         stay within the server's per-session credit)\n"
"      --warmup N         first N completions not recorded [0]\n"
"      --timeout-ms MS    logon; a ping unanswered after MS is lost; drain [2000]\n"
"      --prompt TEXT | --prompt-bytes N   INFER prompt [\"Hello\"]\n"
"      --max-tokens N     INFER max_tokens [16]\n"
"      --heartbeat-ms N   session heartbeat asked for [1000]\n"
"      --loss P --seed S  client-side loss injection (both directions)\n"
"      --busy             busy-poll instead of sleeping in poll()\n"
"      --max-samples N    latency samples kept per metric [2000000]\n"
"      --json FILE        write the results as JSON\n"
"  Prints p50/p90/p99/p99.9/max and throughput.  Exit: 0 ok, 1 error,\n"
"  2 usage, 3 logon failed, 4 operations lost or timed out.\n");
}

/* ------------------------------------------------------------------------
 * Operations.
 */
static struct op *op_slot(struct sess *s, uint64_t id)
{
	struct op *o = &s->ops[id & s->mask];

	return o->id == id ? o : NULL;
}

static int op_start(struct opts *o, struct sess *s, uint64_t start_ns,
		    const struct proto_infer_req *rq)
{
	uint64_t id;
	int rc;

	if (s->outstanding > s->mask) {
		R.skipped++;
		return -ENOBUFS;
	}
	if (o->mode == M_PING)
		rc = velo_client_test_request(s->c, &id);
	else
		rc = velo_client_infer(s->c, rq, &id);
	if (rc == -EBUSY) {
		R.skipped++;	/* an older INFER unanswered yet: later */
		return rc;
	}
	if (rc) {
		R.send_errors++;
		return rc;
	}
	if (s->ops[id & s->mask].id) {
		/* Ring collision: the old one is long overdue. */
		s->ops[id & s->mask].id = 0;
		s->outstanding--;
		R.inflight--;
		R.lost++;
	}
	s->ops[id & s->mask] = (struct op){ .id = id, .start_ns = start_ns };
	s->outstanding++;
	R.inflight++;
	R.started++;
	return 0;
}

static void op_done(struct sess *s, struct op *op)
{
	op->id = 0;
	s->outstanding--;
	R.inflight--;
	R.completed++;
	if (R.warm_left)
		R.warm_left--;
}

static void handle(struct opts *o, struct sess *s,
		   const struct velo_client_event *ev)
{
	struct op *op = op_slot(s, ev->request_id);

	if (!op)
		return;
	switch (ev->type) {
	case VELO_CLIENT_EV_TEST_RESPONSE:
		if (o->mode != M_PING)
			return;
		sample(&R.rtt, ev->rx_ns - op->start_ns);
		op_done(s, op);
		break;
	case VELO_CLIENT_EV_TOKENS:
		if (!op->tokens)
			sample(&R.ttft, ev->rx_ns - op->start_ns);
		else if (ev->u.tokens.n_tokens)
			for (uint32_t i = 0; i < ev->u.tokens.n_tokens; i++)
				sample(&R.itl, (ev->rx_ns - op->last_tok_ns) /
						       ev->u.tokens.n_tokens);
		op->tokens += ev->u.tokens.n_tokens;
		op->last_tok_ns = ev->rx_ns;
		R.tokens += ev->u.tokens.n_tokens;
		break;
	case VELO_CLIENT_EV_DONE:
		sample(&R.e2e, ev->rx_ns - op->start_ns);
		op_done(s, op);
		break;
	case VELO_CLIENT_EV_REJECT:
		R.rejects[MIN(ev->u.reject.f.code, (unsigned)CODES_MAX)]++;
		sample(&R.e2e_rej, ev->rx_ns - op->start_ns);
		op_done(s, op);
		break;
	case VELO_CLIENT_EV_ERROR:
		R.errors++;
		op_done(s, op);
		break;
	case VELO_CLIENT_EV_TIMEOUT:
		R.timeouts++;
		op->id = 0;
		s->outstanding--;
		R.inflight--;
		break;
	default:
		break;
	}
}

/* Pings are not retried: give up on those older than the timeout.  Called
 * a few times a second; walks the ring (bounded by its size). */
static void expire_pings(struct opts *o, struct sess *s, uint64_t now)
{
	uint64_t lim = (uint64_t)o->timeout_ms * 1000000u;

	if (o->mode != M_PING || !s->outstanding)
		return;
	for (uint32_t i = 0; i <= s->mask; i++)
		if (s->ops[i].id && now - s->ops[i].start_ns > lim) {
			s->ops[i].id = 0;
			s->outstanding--;
			R.inflight--;
			R.lost++;
		}
}

/* Exponential gap with mean 1/rate (inverse transform of a uniform). */
static uint64_t gap_ns(const struct opts *o, uint64_t *rng)
{
	double mean = 1e9 / o->rate, u;

	if (!o->poisson)
		return (uint64_t)mean;
	*rng ^= *rng << 13;
	*rng ^= *rng >> 7;
	*rng ^= *rng << 17;
	u = ((*rng >> 11) + 0.5) / 9007199254740992.0;
	return (uint64_t)(-log(u) * mean);
}

/* ------------------------------------------------------------------------
 * Report.
 */
static void pct_line(FILE *f, const char *name, struct samples *s, double div,
		     const char *unit)
{
	if (!s->n)
		return;
	tool_sort_u64(s->v, s->n);
	fprintf(f, "  %-22s %9.1f %9.1f %9.1f %9.1f %9.1f  %s  n=%zu\n", name,
		tool_pct(s->v, s->n, 50) / div, tool_pct(s->v, s->n, 90) / div,
		tool_pct(s->v, s->n, 99) / div, tool_pct(s->v, s->n, 99.9) / div,
		s->v[s->n - 1] / div, unit, s->n);
}

static void pct_json(FILE *f, const char *name, const struct samples *s,
		     int *first)
{
	if (!s->n)
		return;
	fprintf(f, "%s\n    \"%s\": {\"n\": %zu, \"dropped\": %llu, "
		"\"p50\": %.0f, \"p90\": %.0f, \"p99\": %.0f, \"p99.9\": %.0f, "
		"\"max\": %llu, \"min\": %llu}",
		*first ? "" : ",", name, s->n, (unsigned long long)s->dropped,
		tool_pct(s->v, s->n, 50), tool_pct(s->v, s->n, 90),
		tool_pct(s->v, s->n, 99), tool_pct(s->v, s->n, 99.9),
		(unsigned long long)s->v[s->n - 1], (unsigned long long)s->v[0]);
	*first = 0;
}

static int write_json(const struct opts *o, uint32_t n_sess, double secs)
{
	char commit[64], date[64];
	time_t now = time(NULL);
	FILE *f = fopen(o->json, "w");
	int first = 1;

	if (!f) {
		fprintf(stderr, "velo-bench: %s: %s\n", o->json, strerror(errno));
		return -1;
	}
	velo_bench_commit(commit, sizeof(commit));
	strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
	fprintf(f, "{\n  \"tool\": \"velo-bench\",\n  \"commit\": ");
	tool_json_str(f, commit, strlen(commit));
	fprintf(f, ",\n  \"date\": \"%s\",\n  \"machine\": ", date);
	tool_json_str(f, tool_machine(), strlen(tool_machine()));
	fprintf(f, ",\n  \"settings\": {\"server\": \"%s\", \"mode\": \"%s\", "
		"\"loop\": \"%s\", \"closed\": %llu, \"rate\": %g, "
		"\"poisson\": %s, \"requests\": %llu, \"duration_s\": %g, "
		"\"sessions\": %u, \"warmup\": %llu, \"timeout_ms\": %u, "
		"\"busy_poll\": %s, \"prompt_bytes\": %zu, \"max_tokens\": %llu, "
		"\"client_loss\": %g},\n",
		o->server,
		o->mode == M_PING ? "ping" : o->mode == M_UDP ? "udp" : "infer",
		o->closed ? "closed" : "open", (unsigned long long)o->closed,
		o->rate, o->poisson ? "true" : "false",
		(unsigned long long)o->requests, o->duration, n_sess,
		(unsigned long long)o->warmup, o->timeout_ms,
		o->busy ? "true" : "false", o->prompt ? strlen(o->prompt) : 0,
		(unsigned long long)o->max_tokens, o->loss);
	fprintf(f, "  \"results\": {\n    \"elapsed_s\": %.6f,\n"
		"    \"started\": %llu, \"completed\": %llu, \"lost\": %llu, "
		"\"timeouts\": %llu, \"send_errors\": %llu, \"skipped\": %llu, "
		"\"errors\": %llu, \"tokens\": %llu,\n"
		"    \"throughput_ops_s\": %.1f, \"throughput_tokens_s\": %.1f,\n"
		"    \"rejects\": {",
		secs, (unsigned long long)R.started,
		(unsigned long long)R.completed, (unsigned long long)R.lost,
		(unsigned long long)R.timeouts,
		(unsigned long long)R.send_errors, (unsigned long long)R.skipped,
		(unsigned long long)R.errors, (unsigned long long)R.tokens,
		secs > 0 ? R.completed / secs : 0, secs > 0 ? R.tokens / secs : 0);
	for (unsigned i = 0, k = 0; i <= CODES_MAX; i++)
		if (R.rejects[i])
			fprintf(f, "%s\"%s\": %llu", k++ ? ", " : "",
				proto_err_name(i), (unsigned long long)R.rejects[i]);
	fprintf(f, "},\n    \"latency_ns\": {");
	pct_json(f, "rtt", &R.rtt, &first);
	pct_json(f, "ttft", &R.ttft, &first);
	pct_json(f, "inter_token", &R.itl, &first);
	pct_json(f, "end_to_end", &R.e2e, &first);
	pct_json(f, "end_to_end_rejected", &R.e2e_rej, &first);
	fprintf(f, "\n    }\n  }\n}\n");
	return fclose(f) ? -1 : 0;
}

/* ------------------------------------------------------------------------ */

static int parse(int argc, char **argv, struct opts *o)
{
	enum { O_MODE = 256, O_CLOSED, O_RATE, O_POISSON, O_REQ, O_DUR,
	       O_SESS, O_WARM, O_TIMEOUT, O_PROMPT, O_PBYTES, O_MAXT, O_HB,
	       O_LOSS, O_SEED, O_BUSY, O_MAXS, O_JSON, O_KEYID, O_MAXREQ,
	       O_MAXSEC, O_ECHO_CORE };
	static const struct option opts[] = {
		{ "server", required_argument, NULL, 's' },
		{ "key", required_argument, NULL, 'k' },
		{ "key-id", required_argument, NULL, O_KEYID },
		{ "mode", required_argument, NULL, O_MODE },
		{ "closed", required_argument, NULL, O_CLOSED },
		{ "rate", required_argument, NULL, O_RATE },
		{ "poisson", no_argument, NULL, O_POISSON },
		{ "requests", required_argument, NULL, O_REQ },
		{ "duration", required_argument, NULL, O_DUR },
		{ "max-requests", required_argument, NULL, O_MAXREQ },
		{ "max-seconds", required_argument, NULL, O_MAXSEC },
		{ "sessions", required_argument, NULL, O_SESS },
		{ "warmup", required_argument, NULL, O_WARM },
		{ "timeout-ms", required_argument, NULL, O_TIMEOUT },
		{ "prompt", required_argument, NULL, O_PROMPT },
		{ "prompt-bytes", required_argument, NULL, O_PBYTES },
		{ "max-tokens", required_argument, NULL, O_MAXT },
		{ "heartbeat-ms", required_argument, NULL, O_HB },
		{ "loss", required_argument, NULL, O_LOSS },
		{ "seed", required_argument, NULL, O_SEED },
		{ "busy", no_argument, NULL, O_BUSY },
		{ "max-samples", required_argument, NULL, O_MAXS },
		{ "json", required_argument, NULL, O_JSON },
		{ "echo-core", required_argument, NULL, O_ECHO_CORE },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	uint64_t v;
	char *end;
	int c, mode_set = 0;

	while ((c = getopt_long(argc, argv, "s:k:h", opts, NULL)) != -1) {
		switch (c) {
		case 's': o->server = optarg; break;
		case 'k': o->key = optarg; break;
		case O_KEYID:
			if (tool_u64(optarg, 1, UINT32_MAX, &v))
				return -1;
			o->key_id = (uint32_t)v;
			break;
		case O_MODE:
			if (!strcmp(optarg, "ping"))
				o->mode = M_PING;
			else if (!strcmp(optarg, "infer"))
				o->mode = M_INFER;
			else if (!strcmp(optarg, "udp"))
				o->mode = M_UDP;
			else
				return -1;
			mode_set = 1;
			break;
		case O_CLOSED:
			if (tool_u64(optarg, 1, 1000000, &o->closed))
				return -1;
			break;
		case O_RATE:
			o->rate = strtod(optarg, &end);
			if (*end || !(o->rate > 0 && o->rate <= 1e8))
				return -1;
			break;
		case O_POISSON: o->poisson = 1; break;
		case O_REQ:
			if (tool_u64(optarg, 1, 1000000000, &o->requests))
				return -1;
			break;
		case O_DUR:
			o->duration = strtod(optarg, &end);
			if (*end || !(o->duration > 0 && o->duration <= 86400))
				return -1;
			break;
		case O_MAXREQ:
			if (tool_u64(optarg, 1, 1000000000, &o->max_requests))
				return -1;
			break;
		case O_MAXSEC:
			o->max_seconds = strtod(optarg, &end);
			if (*end || !(o->max_seconds > 0 && o->max_seconds <= 86400))
				return -1;
			break;
		case O_SESS:
			if (tool_u64(optarg, 1, SESSIONS_MAX, &v))
				return -1;
			o->sessions = (uint32_t)v;
			break;
		case O_WARM:
			if (tool_u64(optarg, 0, 100000000, &o->warmup))
				return -1;
			break;
		case O_TIMEOUT:
			if (tool_u64(optarg, 1, 600000, &v))
				return -1;
			o->timeout_ms = (uint32_t)v;
			break;
		case O_PROMPT: o->prompt = optarg; break;
		case O_PBYTES:
			if (tool_u64(optarg, 1, 65000, &o->prompt_bytes))
				return -1;
			break;
		case O_MAXT:
			if (tool_u64(optarg, 0, UINT32_MAX, &o->max_tokens))
				return -1;
			break;
		case O_HB:
			if (tool_u64(optarg, 1, 3600000, &v))
				return -1;
			o->heartbeat_ms = (uint32_t)v;
			break;
		case O_LOSS:
			if (tool_double01(optarg, &o->loss))
				return -1;
			break;
		case O_SEED:
			if (tool_u64(optarg, 0, UINT64_MAX, &o->seed))
				return -1;
			break;
		case O_BUSY: o->busy = 1; break;
		case O_MAXS:
			if (tool_u64(optarg, 1000, 100000000, &o->max_samples))
				return -1;
			break;
		case O_JSON: o->json = optarg; break;
		case O_ECHO_CORE:
			if (tool_u64(optarg, 0, 4095, &v))
				return -1;
			o->echo_core = (int)v;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			return -1;
		}
	}
	if (optind != argc || !mode_set || !!o->closed == (o->rate > 0) ||
	    !!o->requests == (o->duration > 0)) {
		fprintf(stderr, "velo-bench: need --mode, one of --closed/--rate "
				"and one of --requests/--duration\n");
		return -1;
	}
	return 0;
}

/* ------------------------------------------------------------------------
 * --mode udp: the kernel's loopback round trip with nothing of velo in it,
 * measured the same way, as the floor the PING figures compare with.
 */
struct echo {
	int fd;
	int core;
	volatile int stop;
};

static void *echo_main(void *arg)
{
	struct echo *e = arg;
	uint8_t buf[2048];

	/* Busy-polls, as velod's dataplane can: the kernel's path alone. */
	cpu_pin_self(e->core);
	while (!e->stop) {
		struct sockaddr_storage from;
		socklen_t fl = sizeof(from);
		ssize_t n;

		n = recvfrom(e->fd, buf, sizeof(buf), MSG_DONTWAIT,
			     (struct sockaddr *)&from, &fl);
		if (n > 0)
			sendto(e->fd, buf, (size_t)n, 0, (struct sockaddr *)&from, fl);
	}
	return NULL;
}

static int run_udp(const struct opts *o, uint64_t limit_ops, uint64_t limit_ns)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t al = sizeof(a);
	struct echo e = { .core = o->echo_core };
	uint8_t buf[88] = { 0 }, rx[2048];
	pthread_t th;
	int fd;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	e.fd = socket(AF_INET, SOCK_DGRAM, 0);
	fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
	if (e.fd < 0 || fd < 0 || bind(e.fd, (struct sockaddr *)&a, sizeof(a)) ||
	    getsockname(e.fd, (struct sockaddr *)&a, &al) ||
	    connect(fd, (struct sockaddr *)&a, sizeof(a)) ||
	    pthread_create(&th, NULL, echo_main, &e)) {
		fprintf(stderr, "velo-bench: udp baseline: %s\n", strerror(errno));
		return -1;
	}
	R.t0 = clock_mono_ns();
	while (!stop && R.started < limit_ops &&
	       clock_mono_ns() - R.t0 < limit_ns) {
		uint64_t t = clock_mono_ns();
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n = -1;

		if (send(fd, buf, sizeof(buf), 0) != (ssize_t)sizeof(buf))
			break;
		R.started++;
		while (n < 0 && clock_mono_ns() - t < (uint64_t)o->timeout_ms * 1000000u) {
			if (!o->busy)
				poll(&p, 1, 5);
			n = recv(fd, rx, sizeof(rx), MSG_DONTWAIT);
		}
		if (n < 0) {
			R.lost++;
			continue;
		}
		sample(&R.rtt, clock_mono_ns() - t);
		R.completed++;
		if (R.warm_left)
			R.warm_left--;
	}
	R.t_last = clock_mono_ns();
	e.stop = 1;
	pthread_join(th, NULL);
	close(e.fd);
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	struct opts o = {
		.server = VELO_CLIENT_SERVER_DEFAULT,
		.max_requests = 10000000, .max_seconds = 60,
		.max_samples = 2000000, .timeout_ms = 2000, .max_tokens = 16,
		.seed = 1, .echo_core = -1,
	};
	static struct sess ss[SESSIONS_MAX];
	struct proto_infer_req rq = { 0 };
	struct velo_client_config cfg = { 0 };
	struct sigaction sa = { .sa_handler = on_sig };
	static struct pollfd pfd[SESSIONS_MAX];
	char *prompt_buf = NULL;
	uint64_t limit_ops, limit_ns, next_ns, rng = 0x9e3779b97f4a7c15ull;
	uint64_t last_expire = 0, per_sess;
	uint32_t n_sess, rr = 0;
	size_t cap;
	double secs;
	int rc = 0;

	if (parse(argc, argv, &o)) {
		usage(stderr);
		return 2;
	}
	if (!o.key)
		o.key = velo_client_key_path();
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	/* Sleeps end when asked, not up to 50 us later (the default timer
	 * slack): an open-loop start is timed from when it was due. */
	prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);

	/* Bounds: count and time, whichever the user did not give. */
	limit_ops = o.requests ? o.requests : o.max_requests;
	limit_ns = (uint64_t)((o.duration > 0 ? o.duration : o.max_seconds) * 1e9);
	if (o.rate > 0 && o.duration > 0)
		limit_ops = MIN(limit_ops, (uint64_t)(o.rate * o.duration * 1.5) + 16);
	cap = (size_t)MIN(limit_ops, o.max_samples);
	R.warm_left = o.warmup;
	if (samples_init(&R.rtt, o.mode != M_INFER ? cap : 1) ||
	    samples_init(&R.ttft, o.mode == M_INFER ? cap : 1) ||
	    samples_init(&R.itl, o.mode == M_INFER ? cap * 4 : 1) ||
	    samples_init(&R.e2e, o.mode == M_INFER ? cap : 1) ||
	    samples_init(&R.e2e_rej, o.mode == M_INFER ? cap : 1)) {
		fprintf(stderr, "velo-bench: out of memory\n");
		return 1;
	}

	if (o.mode == M_UDP) {
		if (run_udp(&o, limit_ops, limit_ns))
			return 1;
		n_sess = 0;
		goto report;
	}

	/* Sessions: an INFER session holds at most the server's request
	 * credit (16 by default), so closed loops spread over enough. */
	n_sess = o.sessions;
	if (!n_sess)
		n_sess = o.mode == M_INFER && o.closed ?
				 (uint32_t)MIN((o.closed + 15) / 16, SESSIONS_MAX) : 1;
	per_sess = o.closed ? (o.closed + n_sess - 1) / n_sess : 4096;

	if (o.mode == M_INFER) {
		if (o.prompt_bytes) {
			prompt_buf = malloc(o.prompt_bytes + 1);
			if (!prompt_buf)
				return 1;
			for (uint64_t i = 0; i < o.prompt_bytes; i++)
				prompt_buf[i] = "lorem ipsum dolor sit amet "[i % 27];
			prompt_buf[o.prompt_bytes] = 0;
			o.prompt = prompt_buf;
		}
		if (!o.prompt)
			o.prompt = "Hello";
		rq.f.flags = PROTO_INFER_PROMPT_TEXT;
		rq.f.max_tokens = (uint32_t)o.max_tokens;
		rq.prompt_text = o.prompt;
		rq.prompt_text_len = strlen(o.prompt);
	}

	if (tool_load_key(o.key, o.key_id, &cfg.psk))
		return 1;
	cfg.server = o.server;
	cfg.client_name = "velo-bench";
	cfg.heartbeat_ms = o.heartbeat_ms;
	cfg.logon_timeout_ms = o.timeout_ms;
	cfg.requests_max = (uint32_t)MAX(per_sess * 2, 16);
	cfg.request_bytes_max = (uint32_t)ALIGN_UP(proto_infer_msg_size(&rq) + 64, 64);
	cfg.reorder_msgs = 1024;
	cfg.ctrl_events_max = (uint32_t)MIN(MAX(per_sess * 2, 64), 1u << 16);
	if (o.loss > 0) {
		uint32_t ppm = (uint32_t)lround(o.loss * 1e6);

		cfg.loss = (struct velo_client_loss){ o.seed, ppm, ppm, ppm, ppm };
	}
	for (uint32_t i = 0; i < n_sess; i++) {
		struct sess *s = &ss[i];
		uint32_t ring = 1;
		int err;

		while (ring < per_sess * 4 && ring < (1u << 20))
			ring <<= 1;
		if (o.rate > 0)
			ring = 1u << 16;
		cfg.loss.seed = o.seed + i;
		s->c = velo_client_create(&cfg);
		s->ops = calloc(ring, sizeof(*s->ops));
		s->mask = ring - 1;
		if (!s->c || !s->ops) {
			fprintf(stderr, "velo-bench: session %u: %s\n", i,
				strerror(errno));
			return 1;
		}
		err = velo_client_logon(s->c, (int)o.timeout_ms);
		if (err) {
			fprintf(stderr, "velo-bench: logon to %s failed: %s\n",
				o.server, strerror(-err));
			return 3;
		}
		pfd[i].fd = velo_client_fd(s->c);
		pfd[i].events = POLLIN;
	}
	memset(&cfg.psk, 0, sizeof(cfg.psk));

	R.t0 = clock_mono_ns();
	next_ns = R.t0;
	for (;;) {
		uint64_t now = clock_mono_ns();
		bool sending = !stop && R.started < limit_ops &&
			       now - R.t0 < limit_ns;

		if (!sending && !R.t_end_send)
			R.t_end_send = now;
		if (!sending && (!R.inflight || stop ||
				 now - R.t_end_send >
					 (uint64_t)o.timeout_ms * 1000000u))
			break;

		/* Start what is due. */
		if (sending && o.closed) {
			for (uint32_t i = 0; i < n_sess; i++)
				while (ss[i].outstanding < per_sess &&
				       R.started < limit_ops &&
				       R.inflight < o.closed)
					if (op_start(&o, &ss[i], clock_mono_ns(), &rq))
						break;
		} else if (sending) {
			/* At most a burst per pass, so a stall does not make
			 * the loop spin on a backlog forever. */
			for (int b = 0; b < 64 && next_ns <= now &&
			     R.started < limit_ops; b++) {
				op_start(&o, &ss[rr++ % n_sess], next_ns, &rq);
				next_ns += gap_ns(&o, &rng);
			}
		}

		/* Wait for answers, the next start or a library timer, with
		 * nanosecond resolution (a millisecond poll would either spin or
		 * start late at rates above 1000/s). */
		if (!o.busy) {
			int64_t t = 5000000;
			struct timespec ts;

			for (uint32_t i = 0; i < n_sess; i++)
				t = MIN(t, (int64_t)velo_client_timeout_ms(ss[i].c) *
						   1000000);
			if (sending && !o.closed)
				t = MIN(t, (int64_t)(next_ns - MIN(next_ns, now)));
			if (t > 0) {
				ts.tv_sec = t / 1000000000;
				ts.tv_nsec = t % 1000000000;
				ppoll(pfd, n_sess, &ts, NULL);
			}
		}
		for (uint32_t i = 0; i < n_sess; i++) {
			struct velo_client_event ev;

			velo_client_poll(ss[i].c);
			while (velo_client_event_next(ss[i].c, &ev) == 1)
				handle(&o, &ss[i], &ev);
		}
		now = clock_mono_ns();
		if (now - last_expire > 100000000u) {
			for (uint32_t i = 0; i < n_sess; i++)
				expire_pings(&o, &ss[i], now);
			last_expire = now;
		}
	}
	R.t_last = clock_mono_ns();
	for (uint32_t i = 0; i < n_sess; i++) {
		R.lost += ss[i].outstanding;
		if (o.loss > 0 || getenv("VELO_BENCH_COUNTERS")) {
			const uint64_t *v = velo_client_counters(ss[i].c);

			for (unsigned k = 0; k < VELO_CLIENT_CTR__COUNT; k++)
				if (v[k])
					fprintf(stderr, "session %u: %s %llu\n", i,
						velo_client_counter_name(k),
						(unsigned long long)v[k]);
		}
		velo_client_destroy(ss[i].c);
		free(ss[i].ops);
	}

report:
	/* Throughput over the sending period (plus drain of the last). */
	secs = (R.t_last - R.t0) / 1e9;
	printf("velo-bench %s: %s loop (%s), %u session(s), %s\n",
	       o.mode == M_PING ? "ping" : o.mode == M_UDP ? "udp" : "infer",
	       o.closed ? "closed" : "open",
	       o.closed ? "fixed concurrency" : o.poisson ? "poisson" : "fixed rate",
	       n_sess, o.server);
	if (o.closed)
		printf("  concurrency %llu", (unsigned long long)o.closed);
	else
		printf("  rate %.0f/s", o.rate);
	printf(", %llu started, %llu completed, %llu lost, %llu timeouts, "
	       "%.3f s\n", (unsigned long long)R.started,
	       (unsigned long long)R.completed, (unsigned long long)R.lost,
	       (unsigned long long)R.timeouts, secs);
	printf("  throughput %.0f ops/s", secs > 0 ? R.completed / secs : 0);
	if (o.mode == M_INFER)
		printf(", %.0f tokens/s", secs > 0 ? R.tokens / secs : 0);
	printf("\n");
	for (unsigned i = 0; i <= CODES_MAX; i++)
		if (R.rejects[i])
			printf("  rejects %s (HTTP %u): %llu\n", proto_err_name(i),
			       proto_err_http(i), (unsigned long long)R.rejects[i]);
	if (R.errors)
		printf("  errors after admission: %llu\n",
		       (unsigned long long)R.errors);
	printf("  %-22s %9s %9s %9s %9s %9s\n", "latency", "p50", "p90", "p99",
	       "p99.9", "max");
	pct_line(stdout, "rtt", &R.rtt, 1e3, "us");
	pct_line(stdout, "ttft", &R.ttft, 1e3, "us");
	pct_line(stdout, "inter-token", &R.itl, 1e3, "us");
	pct_line(stdout, "end-to-end", &R.e2e, 1e3, "us");
	pct_line(stdout, "end-to-end (rejected)", &R.e2e_rej, 1e3, "us");
	if (o.json && write_json(&o, n_sess, secs))
		rc = 1;
	free(prompt_buf);
	if (!rc && (R.lost || R.timeouts))
		rc = 4;
	return rc;
}
