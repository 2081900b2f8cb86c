// SPDX-License-Identifier: MIT
/*
 * velo-client — command-line client of velod, on the client library
 * (velo/client.h): ping (round-trip percentiles), gen (streams an answer),
 * status.  Exit codes are listed in usage() and stay stable: scripts and
 * the integration tests rely on them.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <velo/client.h>
#include <velo/codec.h>
#include <velo/compiler.h>

#include "../lib/clock.h"
#include "tool.h"

enum {
	EX_OK = 0,
	EX_ERR = 1,		/* local error: key file, socket, memory */
	EX_USAGE = 2,
	EX_LOGON = 3,		/* could not log on */
	EX_REJECT = 4,		/* request REJECTed */
	EX_ERROR = 5,		/* request failed after admission (ERROR) */
	EX_TIMEOUT = 6,		/* no answer: retries spent, session lost */
};

#define PING_MAX 10000000u
#define STOP_MAX PROTO_STOP_SEQ_MAX
#define TOKENS_MAX 65536u

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
	(void)sig;
	interrupted = 1;
}

static void usage(FILE *f)
{
	fprintf(f,
"usage: velo-client [global options] <command> [command options]\n"
"\n"
"global options:\n"
"  -s, --server HOST:PORT   velod address [" VELO_CLIENT_SERVER_DEFAULT "]\n"
"  -k, --key FILE           key file [$VELO_KEY, else ./velo.key, else\n"
"                           " VELO_CLIENT_KEY_DEFAULT " (written by make run)]\n"
"      --key-id N           which key of the file [the first]\n"
"      --heartbeat-ms N     heartbeat interval asked for [1000]\n"
"      --timeout-ms N       give up on logon / an answer after N ms [5000]\n"
"      --loss P             client-side loss injection, both directions, 0..1\n"
"      --loss-seed S        seed of the loss injector [1]\n"
"  -v, --verbose            print the session's counters to stderr at exit\n"
"\n"
"commands:\n"
"  ping [-n N] [--interval-ms MS] [--json]\n"
"      N TEST_REQUESTs [10], one at a time, MS apart [0]; prints round-trip\n"
"      p50/p90/p99/p99.9/max in microseconds.\n"
"  gen PROMPT [options]\n"
"      streams the answer's text to stdout as it arrives, the DONE summary\n"
"      to stderr.  --max-tokens N  --min-tokens N  --temperature T\n"
"      --top-k K  --top-p P  --min-p P  --repetition-penalty R  --seed S\n"
"      --stop STR (repeatable, <= 8)  --model NAME  --model-version V\n"
"      --priority N  --deadline-ms N (from now)  --ttft-target-us N\n"
"      --stream token|sentence|k:N  --tokens 1,2,3 (prompt as token ids;\n"
"      PROMPT may then be omitted)  --ignore-eos  --logprobs N\n"
"      --system TEXT  --user TEXT  --assistant TEXT (repeatable, in order,\n"
"      <= 32: a chat; the server applies the model's chat template and\n"
"      PROMPT is omitted)  --logit-bias ID:BIAS (repeatable, <= 64,\n"
"      BIAS in -100..100)\n"
"      --json (one JSON object per event on stdout)\n"
"      --cancel-after N (send CANCEL after N tokens)\n"
"  status [--json]\n"
"      the server's STATUS and the session's negotiated parameters.\n"
"\n"
"exit status:\n"
"  0 success   1 local error (key file, socket)   2 usage\n"
"  3 logon failed (timeout, refused, bad key)   4 request REJECTed\n"
"  5 request ERROR after admission   6 no answer (timeout, session lost)\n");
}

/* ------------------------------------------------------------------------
 * Session setup shared by the commands.
 */
struct gopts {
	const char *server;
	const char *key;
	uint32_t key_id;
	uint32_t heartbeat_ms;
	uint32_t timeout_ms;
	double loss;
	uint64_t loss_seed;
	int verbose;
};

static struct velo_client *session_open(const struct gopts *g, int *ex)
{
	struct velo_client_config cfg = { 0 };
	struct velo_client *c;
	const char *text;
	unsigned code;
	int rc;

	*ex = EX_ERR;
	if (tool_load_key(g->key, g->key_id, &cfg.psk))
		return NULL;
	cfg.server = g->server;
	cfg.client_name = "velo-client";
	cfg.heartbeat_ms = g->heartbeat_ms;
	cfg.logon_timeout_ms = g->timeout_ms;
	if (g->loss > 0) {
		uint32_t ppm = (uint32_t)lround(g->loss * 1e6);

		cfg.loss.seed = g->loss_seed;
		cfg.loss.rx_data_ppm = cfg.loss.tx_data_ppm = ppm;
		cfg.loss.rx_ctrl_ppm = cfg.loss.tx_ctrl_ppm = ppm;
	}
	c = velo_client_create(&cfg);
	memset(&cfg.psk, 0, sizeof(cfg.psk));
	if (!c) {
		fprintf(stderr, "velo-client: %s: %s\n", g->server,
			strerror(errno));
		return NULL;
	}
	rc = velo_client_logon(c, (int)g->timeout_ms);
	if (rc) {
		code = velo_client_last_reject(c, &text);
		fprintf(stderr, "velo-client: logon to %s failed: %s", g->server,
			rc == -ECONNREFUSED ? "nothing listens there (is velod running?)" :
			rc == -ETIMEDOUT ? "no answer (velod down, wrong key id, or clock skew)" :
			strerror(-rc));
		if (code)
			fprintf(stderr, " [%s, HTTP %u: %s]", proto_err_name(code),
				proto_err_http(code), text);
		fputc('\n', stderr);
		velo_client_destroy(c);
		*ex = EX_LOGON;
		return NULL;
	}
	*ex = EX_OK;
	return c;
}

static void session_close_print(struct velo_client *c, const struct gopts *g)
{
	if (g->verbose) {
		const uint64_t *v = velo_client_counters(c);

		for (unsigned i = 0; i < VELO_CLIENT_CTR__COUNT; i++)
			if (v[i])
				fprintf(stderr, "client.%s %llu\n",
					velo_client_counter_name(i),
					(unsigned long long)v[i]);
	}
	velo_client_destroy(c);
}

/* ------------------------------------------------------------------------
 * ping
 */
static int cmd_ping(const struct gopts *g, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "count", required_argument, NULL, 'n' },
		{ "interval-ms", required_argument, NULL, 'i' },
		{ "json", no_argument, NULL, 'j' },
		{ NULL, 0, NULL, 0 },
	};
	uint64_t n = 10, interval_ms = 0, got = 0, lost = 0;
	struct velo_client *c;
	uint64_t *rtt;
	int o, ex, json = 0;

	optind = 1;
	while ((o = getopt_long(argc, argv, "n:i:", opts, NULL)) != -1) {
		switch (o) {
		case 'n':
			if (tool_u64(optarg, 1, PING_MAX, &n))
				return EX_USAGE;
			break;
		case 'i':
			if (tool_u64(optarg, 0, 3600000, &interval_ms))
				return EX_USAGE;
			break;
		case 'j':
			json = 1;
			break;
		default:
			return EX_USAGE;
		}
	}
	if (optind != argc)
		return EX_USAGE;
	rtt = calloc(n, sizeof(*rtt));
	if (!rtt)
		return EX_ERR;
	c = session_open(g, &ex);
	if (!c) {
		free(rtt);
		return ex;
	}
	for (uint64_t i = 0; i < n && !interrupted && velo_client_is_up(c); i++) {
		uint64_t corr, end;
		int done = 0;

		if (i && interval_ms)
			tool_sleep_ms(interval_ms);
		if (velo_client_test_request(c, &corr)) {
			lost++;
			continue;
		}
		end = clock_mono_ns() + (uint64_t)g->timeout_ms * 1000000u;
		while (!done && !interrupted && clock_mono_ns() < end) {
			struct velo_client_event ev;

			if (velo_client_wait(c, 100) < 0)
				break;
			while (velo_client_event_next(c, &ev) == 1) {
				if (ev.type == VELO_CLIENT_EV_TEST_RESPONSE &&
				    ev.request_id == corr && ev.sent_ns) {
					rtt[got++] = ev.rx_ns - ev.sent_ns;
					done = 1;
				}
			}
		}
		if (!done)
			lost++;
	}
	if (!got) {
		fprintf(stderr, "velo-client: ping: no answer\n");
		session_close_print(c, g);
		free(rtt);
		return EX_TIMEOUT;
	}
	tool_sort_u64(rtt, got);
	if (json) {
		printf("{\"sent\": %llu, \"received\": %llu, \"lost\": %llu, "
		       "\"rtt_us\": {\"min\": %.1f, \"p50\": %.1f, \"p90\": %.1f, "
		       "\"p99\": %.1f, \"p99.9\": %.1f, \"max\": %.1f}}\n",
		       (unsigned long long)(got + lost), (unsigned long long)got,
		       (unsigned long long)lost, rtt[0] / 1e3,
		       tool_pct(rtt, got, 50) / 1e3, tool_pct(rtt, got, 90) / 1e3,
		       tool_pct(rtt, got, 99) / 1e3, tool_pct(rtt, got, 99.9) / 1e3,
		       rtt[got - 1] / 1e3);
	} else {
		printf("ping %s: %llu sent, %llu received, %llu lost\n",
		       g->server, (unsigned long long)(got + lost),
		       (unsigned long long)got, (unsigned long long)lost);
		printf("rtt us: min %.1f  p50 %.1f  p90 %.1f  p99 %.1f  "
		       "p99.9 %.1f  max %.1f\n",
		       rtt[0] / 1e3, tool_pct(rtt, got, 50) / 1e3,
		       tool_pct(rtt, got, 90) / 1e3, tool_pct(rtt, got, 99) / 1e3,
		       tool_pct(rtt, got, 99.9) / 1e3, rtt[got - 1] / 1e3);
	}
	session_close_print(c, g);
	free(rtt);
	return lost ? EX_TIMEOUT : EX_OK;
}

/* ------------------------------------------------------------------------
 * gen
 */
struct gen_state {
	uint64_t id;
	int json;
	uint64_t cancel_after;	/* 0: never */
	int cancel_sent;
	uint64_t tokens;
	uint64_t first_token_ns;
	int final;		/* exit code once the request is over */
	int has_final;
};

static void print_reject(const char *what, unsigned code,
			 const struct proto_str *text)
{
	fprintf(stderr, "velo-client: %s %s (HTTP %u): %.*s\n", what,
		proto_err_name(code), proto_err_http(code), (int)text->len,
		text->p);
}

static const char *finish_name(unsigned r)
{
	static const char *const names[] = {
		"eos", "stop_sequence", "stop_token", "length",
		"cancelled", "deadline", "drained", "error",
	};

	return r < ARRAY_SIZE(names) ? names[r] : "?";
}

/* A logprob for JSON: -inf (a token the model rules out) as -9999.0, as
 * vLLM's OpenAI server writes it (JSON has no infinities). */
static double json_lp(float v)
{
	return v > -9999.0f ? (double)v : -9999.0;
}

/* ", \"logprobs\": [...]": per token {id, logprob, top_logprobs: [{id,
 * logprob}...]}, from the group of n_tokens x (1 + top_logprobs) entries
 * (the decoder checked the count). */
static void json_logprobs(const struct proto_tokens_view *t)
{
	unsigned w = 1u + t->f.top_logprobs;

	printf(", \"logprobs\": [");
	for (uint32_t i = 0; i < t->n_tokens && (i + 1) * w <= t->logprobs.n; i++) {
		for (unsigned j = 0; j < w; j++) {
			struct proto_logprob e;

			memcpy(&e, t->logprobs.entries +
			       (size_t)(i * w + j) * t->logprobs.stride, sizeof(e));
			if (j == 0)
				printf("%s{\"id\": %u, \"logprob\": %.7g, "
				       "\"top_logprobs\": [", i ? ", " : "",
				       e.token, json_lp(e.logprob));
			else
				printf("%s{\"id\": %u, \"logprob\": %.7g}",
				       j > 1 ? ", " : "", e.token,
				       json_lp(e.logprob));
		}
		printf("]}");
	}
	printf("]");
}

static void gen_event(struct velo_client *c, struct gen_state *s,
		      const struct velo_client_event *ev)
{
	double lat_ms = ev->sent_ns ? (ev->rx_ns - ev->sent_ns) / 1e6 : 0;

	if (ev->request_id != s->id)
		return;
	switch (ev->type) {
	case VELO_CLIENT_EV_ACCEPT:
		if (s->json)
			printf("{\"event\": \"accept\", \"request_id\": %llu, "
			       "\"queue_position\": %u, \"latency_ms\": %.3f}\n",
			       (unsigned long long)s->id,
			       ev->u.accept.queue_position, lat_ms);
		break;
	case VELO_CLIENT_EV_TOKENS: {
		const struct proto_tokens_view *t = &ev->u.tokens;

		if (!s->tokens)
			s->first_token_ns = ev->rx_ns;
		s->tokens += t->n_tokens;
		if (s->json) {
			printf("{\"event\": \"tokens\", \"request_id\": %llu, "
			       "\"first_index\": %u, \"ids\": [",
			       (unsigned long long)s->id, t->f.first_index);
			for (uint32_t i = 0; i < t->n_tokens; i++)
				printf("%s%u", i ? ", " : "",
				       proto_u32_at(t->tokens, i));
			printf("], \"text\": ");
			tool_json_str(stdout, t->text.p, t->text.len);
			if (t->logprobs.n)
				json_logprobs(t);
			printf(", \"flags\": %u, \"latency_ms\": %.3f}\n",
			       t->f.flags, lat_ms);
		} else {
			fwrite(t->text.p, 1, t->text.len, stdout);
		}
		fflush(stdout);
		if (s->cancel_after && !s->cancel_sent &&
		    s->tokens >= s->cancel_after) {
			s->cancel_sent = 1;
			velo_client_cancel(c, s->id);
		}
		break;
	}
	case VELO_CLIENT_EV_DONE: {
		const struct proto_done *d = &ev->u.done.f;

		if (s->json) {
			printf("{\"event\": \"done\", \"request_id\": %llu, "
			       "\"finish\": \"%s\", \"prompt_tokens\": %u, "
			       "\"cached_prompt_tokens\": %u, "
			       "\"completion_tokens\": %u, \"queue_us\": %u, "
			       "\"prefill_us\": %u, \"ttft_us\": %u, "
			       "\"decode_us\": %u, \"mean_itl_us\": %u, "
			       "\"model\": ",
			       (unsigned long long)s->id,
			       finish_name(d->finish_reason), d->prompt_tokens,
			       d->cached_prompt_tokens, d->completion_tokens,
			       d->queue_us, d->prefill_us, d->ttft_us,
			       d->decode_us, d->mean_itl_us);
			tool_json_str(stdout, ev->u.done.model.p,
				     ev->u.done.model.len);
			printf(", \"version\": ");
			tool_json_str(stdout, ev->u.done.version.p,
				     ev->u.done.version.len);
			printf(", \"latency_ms\": %.3f}\n", lat_ms);
		} else {
			fputc('\n', stdout);
			fprintf(stderr,
				"[done: %s, %u prompt (%u cached) + %u completion "
				"tokens, model %.*s %.*s; server: queue %u us, "
				"ttft %u us, mean itl %u us; client: first token "
				"%.3f ms, total %.3f ms]\n",
				finish_name(d->finish_reason), d->prompt_tokens,
				d->cached_prompt_tokens, d->completion_tokens,
				(int)ev->u.done.model.len, ev->u.done.model.p,
				(int)ev->u.done.version.len,
				ev->u.done.version.p, d->queue_us, d->ttft_us,
				d->mean_itl_us,
				s->first_token_ns && ev->sent_ns ?
					(s->first_token_ns - ev->sent_ns) / 1e6 : 0.0,
				lat_ms);
		}
		s->has_final = 1;
		s->final = EX_OK;
		break;
	}
	case VELO_CLIENT_EV_REJECT:
		if (s->json) {
			printf("{\"event\": \"reject\", \"request_id\": %llu, "
			       "\"code\": \"%s\", \"http\": %u, "
			       "\"retry_after_ms\": %u, \"text\": ",
			       (unsigned long long)s->id,
			       proto_err_name(ev->u.reject.f.code),
			       proto_err_http(ev->u.reject.f.code),
			       ev->u.reject.f.retry_after_ms);
			tool_json_str(stdout, ev->u.reject.text.p,
				     ev->u.reject.text.len);
			printf(", \"latency_ms\": %.3f}\n", lat_ms);
		}
		print_reject("REJECT", ev->u.reject.f.code, &ev->u.reject.text);
		s->has_final = 1;
		s->final = EX_REJECT;
		break;
	case VELO_CLIENT_EV_ERROR:
		if (s->json) {
			printf("{\"event\": \"error\", \"request_id\": %llu, "
			       "\"code\": \"%s\", \"http\": %u, \"text\": ",
			       (unsigned long long)s->id,
			       proto_err_name(ev->u.error.f.code),
			       proto_err_http(ev->u.error.f.code));
			tool_json_str(stdout, ev->u.error.text.p,
				     ev->u.error.text.len);
			printf("}\n");
		}
		print_reject("ERROR", ev->u.error.f.code, &ev->u.error.text);
		s->has_final = 1;
		s->final = EX_ERROR;
		break;
	case VELO_CLIENT_EV_CANCEL_ACK:
		if (s->json)
			printf("{\"event\": \"cancel_ack\", \"request_id\": %llu, "
			       "\"found\": %u, \"tokens_generated\": %u}\n",
			       (unsigned long long)s->id,
			       ev->u.cancel_ack.found,
			       ev->u.cancel_ack.tokens_generated);
		else
			fprintf(stderr, "[cancelled: %u tokens generated%s]\n",
				ev->u.cancel_ack.tokens_generated,
				ev->u.cancel_ack.found ? "" :
				" (request no longer in flight)");
		if (!ev->u.cancel_ack.found) {
			s->has_final = 1;
			s->final = EX_OK;
		}
		break;
	case VELO_CLIENT_EV_TIMEOUT:
		fprintf(stderr, "velo-client: no answer to request %llu\n",
			(unsigned long long)s->id);
		s->has_final = 1;
		s->final = EX_TIMEOUT;
		break;
	default:
		break;
	}
	fflush(stdout);
}

static int parse_stream(const char *s, struct proto_infer *f)
{
	uint64_t k;

	if (!strcmp(s, "token")) {
		f->stream = PROTO_STREAM_TOKEN;
	} else if (!strcmp(s, "sentence")) {
		f->stream = PROTO_STREAM_SENTENCE;
	} else if (!strncmp(s, "k:", 2) && !tool_u64(s + 2, 1, 255, &k)) {
		f->stream = PROTO_STREAM_EVERY_K;
		f->stream_k = (uint8_t)k;
	} else {
		fprintf(stderr, "velo-client: --stream token|sentence|k:N\n");
		return -1;
	}
	return 0;
}

static int cmd_gen(const struct gopts *g, int argc, char **argv)
{
	enum { O_MAXT = 256, O_MINT, O_TEMP, O_TOPK, O_TOPP, O_MINP, O_REP,
	       O_SEED, O_STOP, O_MODEL, O_MVER, O_PRIO, O_DEADLINE, O_TTFT,
	       O_STREAM, O_TOKENS, O_JSON, O_CANCEL, O_IGNORE_EOS, O_LOGPROBS,
	       O_SYSTEM, O_USER, O_ASSISTANT, O_BIAS };
	static const struct option opts[] = {
		{ "max-tokens", required_argument, NULL, O_MAXT },
		{ "min-tokens", required_argument, NULL, O_MINT },
		{ "temperature", required_argument, NULL, O_TEMP },
		{ "top-k", required_argument, NULL, O_TOPK },
		{ "top-p", required_argument, NULL, O_TOPP },
		{ "min-p", required_argument, NULL, O_MINP },
		{ "repetition-penalty", required_argument, NULL, O_REP },
		{ "seed", required_argument, NULL, O_SEED },
		{ "stop", required_argument, NULL, O_STOP },
		{ "model", required_argument, NULL, O_MODEL },
		{ "model-version", required_argument, NULL, O_MVER },
		{ "priority", required_argument, NULL, O_PRIO },
		{ "deadline-ms", required_argument, NULL, O_DEADLINE },
		{ "ttft-target-us", required_argument, NULL, O_TTFT },
		{ "stream", required_argument, NULL, O_STREAM },
		{ "tokens", required_argument, NULL, O_TOKENS },
		{ "json", no_argument, NULL, O_JSON },
		{ "cancel-after", required_argument, NULL, O_CANCEL },
		{ "ignore-eos", no_argument, NULL, O_IGNORE_EOS },
		{ "logprobs", required_argument, NULL, O_LOGPROBS },
		{ "system", required_argument, NULL, O_SYSTEM },
		{ "user", required_argument, NULL, O_USER },
		{ "assistant", required_argument, NULL, O_ASSISTANT },
		{ "logit-bias", required_argument, NULL, O_BIAS },
		{ NULL, 0, NULL, 0 },
	};
	static uint32_t ids[TOKENS_MAX];
	const char *stops[STOP_MAX];
	static struct proto_chat_msg roles[PROTO_CHAT_MSGS_MAX];
	static const char *texts[PROTO_CHAT_MSGS_MAX];
	static struct proto_logit_bias bias[PROTO_LOGIT_BIAS_MAX];
	struct proto_infer_req rq = { 0 };
	struct gen_state st = { 0 };
	struct velo_client *c;
	uint64_t v, deadline_ms = 0;
	uint32_t n_ids = 0;
	int o, ex, rc;

	optind = 1;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case O_MAXT:
			if (tool_u64(optarg, 0, UINT32_MAX, &v))
				return EX_USAGE;
			rq.f.max_tokens = (uint32_t)v;
			break;
		case O_MINT:
			if (tool_u64(optarg, 0, UINT32_MAX, &v))
				return EX_USAGE;
			rq.f.min_tokens = (uint32_t)v;
			break;
		case O_TEMP:
			if (tool_float(optarg, &rq.f.temperature))
				return EX_USAGE;
			break;
		case O_TOPK:
			if (tool_u64(optarg, 0, UINT32_MAX, &v))
				return EX_USAGE;
			rq.f.top_k = (uint32_t)v;
			break;
		case O_TOPP:
			if (tool_float(optarg, &rq.f.top_p))
				return EX_USAGE;
			break;
		case O_MINP:
			if (tool_float(optarg, &rq.f.min_p))
				return EX_USAGE;
			break;
		case O_REP:
			if (tool_float(optarg, &rq.f.repetition_penalty))
				return EX_USAGE;
			break;
		case O_SEED:
			if (tool_u64(optarg, 0, UINT64_MAX, &rq.f.seed))
				return EX_USAGE;
			break;
		case O_STOP:
			if (rq.n_stop_seqs == STOP_MAX) {
				fprintf(stderr, "velo-client: at most %d --stop\n",
					STOP_MAX);
				return EX_USAGE;
			}
			stops[rq.n_stop_seqs++] = optarg;
			break;
		case O_MODEL:
			rq.model = optarg;
			break;
		case O_MVER:
			rq.version = optarg;
			break;
		case O_PRIO:
			if (tool_u64(optarg, 0, 255, &v))
				return EX_USAGE;
			rq.f.priority = (uint8_t)v;
			break;
		case O_DEADLINE:
			if (tool_u64(optarg, 1, 86400000, &deadline_ms))
				return EX_USAGE;
			break;
		case O_TTFT:
			if (tool_u64(optarg, 0, UINT32_MAX, &v))
				return EX_USAGE;
			rq.f.ttft_target_us = (uint32_t)v;
			break;
		case O_STREAM:
			if (parse_stream(optarg, &rq.f))
				return EX_USAGE;
			break;
		case O_TOKENS:
			if (tool_u32_list(optarg, ids, TOKENS_MAX, &n_ids))
				return EX_USAGE;
			break;
		case O_JSON:
			st.json = 1;
			break;
		case O_CANCEL:
			if (tool_u64(optarg, 1, UINT32_MAX, &st.cancel_after))
				return EX_USAGE;
			break;
		case O_IGNORE_EOS:
			rq.f.flags |= PROTO_INFER_IGNORE_EOS;
			break;
		case O_LOGPROBS:
			/* 0..PROTO_LOGPROBS_MAX is the server's rule: sent
			 * as given (u8), its decoder refuses more. */
			if (tool_u64(optarg, 0, UINT8_MAX, &v))
				return EX_USAGE;
			rq.f.logprobs = (uint8_t)v;
			break;
		case O_SYSTEM:
		case O_USER:
		case O_ASSISTANT:
			if (rq.n_messages == PROTO_CHAT_MSGS_MAX) {
				fprintf(stderr, "velo-client: at most %d chat messages\n",
					PROTO_CHAT_MSGS_MAX);
				return EX_USAGE;
			}
			roles[rq.n_messages].role = o == O_SYSTEM ? 0 : o == O_USER ? 1 : 2;
			texts[rq.n_messages++] = optarg;
			break;
		case O_BIAS: {
			char *colon = strchr(optarg, ':');

			if (rq.n_logit_bias == PROTO_LOGIT_BIAS_MAX || !colon) {
				fprintf(stderr, "velo-client: --logit-bias ID:BIAS, at most %d\n",
					PROTO_LOGIT_BIAS_MAX);
				return EX_USAGE;
			}
			*colon = 0;
			if (tool_u64(optarg, 0, UINT32_MAX, &v) ||
			    tool_float(colon + 1, &bias[rq.n_logit_bias].bias))
				return EX_USAGE;
			bias[rq.n_logit_bias++].token = (uint32_t)v;
			break;
		}
		default:
			return EX_USAGE;
		}
	}
	rq.logit_bias = bias;
	if (rq.n_messages) {
		if (n_ids || optind != argc) {
			fprintf(stderr, "velo-client: a chat (--system/--user/"
					"--assistant) takes no PROMPT or --tokens\n");
			return EX_USAGE;
		}
		rq.f.flags |= PROTO_INFER_CHAT;
		rq.msg_roles = roles;
		rq.msg_texts = texts;
	} else if (n_ids) {
		if (optind != argc)
			return EX_USAGE;
		rq.f.flags |= PROTO_INFER_PROMPT_TOKENS;
		rq.prompt_tokens = ids;
		rq.n_prompt_tokens = n_ids;
	} else {
		if (optind != argc - 1) {
			fprintf(stderr, "velo-client: gen needs one PROMPT (or "
					"--tokens)\n");
			return EX_USAGE;
		}
		rq.f.flags |= PROTO_INFER_PROMPT_TEXT;
		rq.prompt_text = argv[optind];
		rq.prompt_text_len = strlen(argv[optind]);
	}
	rq.stop_seqs = stops;

	c = session_open(g, &ex);
	if (!c)
		return ex;
	if (deadline_ms)
		rq.f.deadline_ns = clock_real_ns() + deadline_ms * 1000000u;
	rc = velo_client_infer(c, &rq, &st.id);
	if (rc) {
		fprintf(stderr, "velo-client: INFER not sent: %s\n",
			rc == -EMSGSIZE ? "request too large" : strerror(-rc));
		session_close_print(c, g);
		return rc == -EMSGSIZE ? EX_USAGE : EX_ERR;
	}
	while (!st.has_final) {
		struct velo_client_event ev;

		if (interrupted && !st.cancel_sent) {
			/* Ctrl-C cancels the request, a second one quits. */
			st.cancel_sent = 1;
			interrupted = 0;
			velo_client_cancel(c, st.id);
		} else if (interrupted) {
			break;
		}
		if (velo_client_wait(c, 100) < 0)
			break;
		while (velo_client_event_next(c, &ev) == 1) {
			if (ev.type == VELO_CLIENT_EV_CLOSED) {
				fprintf(stderr, "velo-client: session closed (%s)\n",
					strerror(-ev.u.closed.err));
				st.has_final = 1;
				st.final = EX_TIMEOUT;
				break;
			}
			gen_event(c, &st, &ev);
		}
	}
	session_close_print(c, g);
	return st.has_final ? st.final : EX_TIMEOUT;
}

/* ------------------------------------------------------------------------
 * status
 */
static int cmd_status(const struct gopts *g, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ NULL, 0, NULL, 0 },
	};
	static const char *const states[] = { "not_ready", "ready", "draining" };
	const struct proto_logon_ack *p;
	struct velo_client *c;
	uint64_t end;
	int o, ex, json = 0;

	optind = 1;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (o != 'j')
			return EX_USAGE;
		json = 1;
	}
	if (optind != argc)
		return EX_USAGE;
	c = session_open(g, &ex);
	if (!c)
		return ex;
	p = velo_client_params(c);
	velo_client_status_request(c);
	end = clock_mono_ns() + (uint64_t)g->timeout_ms * 1000000u;
	ex = EX_TIMEOUT;
	while (ex == EX_TIMEOUT && clock_mono_ns() < end && !interrupted) {
		struct velo_client_event ev;

		if (velo_client_wait(c, 100) < 0)
			break;
		while (velo_client_event_next(c, &ev) == 1) {
			const struct proto_status *s = &ev.u.status;
			const char *st;

			if (ev.type != VELO_CLIENT_EV_STATUS)
				continue;
			st = s->state < ARRAY_SIZE(states) ? states[s->state] : "?";
			if (json)
				printf("{\"state\": \"%s\", \"credit_requests\": %u, "
				       "\"credit_tokens\": %u, \"in_flight\": %u, "
				       "\"server_time_ns\": %llu, \"session_id\": "
				       "\"%016llx\", \"heartbeat_ms\": %u, "
				       "\"session_timeout_ms\": %u, \"mtu\": %u, "
				       "\"replay_msgs\": %u}\n",
				       st, s->credit_requests, s->credit_tokens,
				       s->in_flight,
				       (unsigned long long)s->server_time_ns,
				       (unsigned long long)p->session_id,
				       p->heartbeat_ms, p->session_timeout_ms,
				       p->mtu, p->replay_msgs);
			else
				printf("server %s: %s\n"
				       "  credit free: %u requests, %u tokens; "
				       "in flight: %u\n"
				       "  session %016llx: heartbeat %u ms, "
				       "timeout %u ms, mtu %u, replay %u msgs, "
				       "credit %u requests / %u tokens\n",
				       g->server, st, s->credit_requests,
				       s->credit_tokens, s->in_flight,
				       (unsigned long long)p->session_id,
				       p->heartbeat_ms, p->session_timeout_ms,
				       p->mtu, p->replay_msgs, p->credit_requests,
				       p->credit_tokens);
			ex = EX_OK;
			break;
		}
	}
	if (ex != EX_OK)
		fprintf(stderr, "velo-client: no STATUS from %s\n", g->server);
	session_close_print(c, g);
	return ex;
}

int main(int argc, char **argv)
{
	enum { O_KEYID = 256, O_HB, O_TIMEOUT, O_LOSS, O_LOSS_SEED };
	static const struct option opts[] = {
		{ "server", required_argument, NULL, 's' },
		{ "key", required_argument, NULL, 'k' },
		{ "key-id", required_argument, NULL, O_KEYID },
		{ "heartbeat-ms", required_argument, NULL, O_HB },
		{ "timeout-ms", required_argument, NULL, O_TIMEOUT },
		{ "loss", required_argument, NULL, O_LOSS },
		{ "loss-seed", required_argument, NULL, O_LOSS_SEED },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct gopts g = {
		.server = VELO_CLIENT_SERVER_DEFAULT,
		.timeout_ms = 5000,
		.loss_seed = 1,
	};
	struct sigaction sa = { .sa_handler = on_sigint };
	const char *cmd;
	uint64_t v;
	int o, rc;

	/* "+": stop at the command; its options are parsed by the command. */
	while ((o = getopt_long(argc, argv, "+s:k:vh", opts, NULL)) != -1) {
		switch (o) {
		case 's':
			g.server = optarg;
			break;
		case 'k':
			g.key = optarg;
			break;
		case O_KEYID:
			if (tool_u64(optarg, 1, UINT32_MAX, &v))
				return EX_USAGE;
			g.key_id = (uint32_t)v;
			break;
		case O_HB:
			if (tool_u64(optarg, 1, 3600000, &v))
				return EX_USAGE;
			g.heartbeat_ms = (uint32_t)v;
			break;
		case O_TIMEOUT:
			if (tool_u64(optarg, 1, 3600000, &v))
				return EX_USAGE;
			g.timeout_ms = (uint32_t)v;
			break;
		case O_LOSS:
			if (tool_double01(optarg, &g.loss))
				return EX_USAGE;
			break;
		case O_LOSS_SEED:
			if (tool_u64(optarg, 0, UINT64_MAX, &g.loss_seed))
				return EX_USAGE;
			break;
		case 'v':
			g.verbose = 1;
			break;
		case 'h':
			usage(stdout);
			return EX_OK;
		default:
			usage(stderr);
			return EX_USAGE;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return EX_USAGE;
	}
	if (!g.key)
		g.key = velo_client_key_path();
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	cmd = argv[optind];
	argc -= optind;
	argv += optind;
	if (!strcmp(cmd, "ping"))
		rc = cmd_ping(&g, argc, argv);
	else if (!strcmp(cmd, "gen"))
		rc = cmd_gen(&g, argc, argv);
	else if (!strcmp(cmd, "status"))
		rc = cmd_status(&g, argc, argv);
	else {
		fprintf(stderr, "velo-client: unknown command '%s'\n", cmd);
		rc = EX_USAGE;
	}
	if (rc == EX_USAGE)
		fprintf(stderr, "velo-client: see velo-client --help\n");
	return rc;
}
