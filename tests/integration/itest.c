// SPDX-License-Identifier: MIT
/*
 * velo-itest — the integration tests' driver, for what shell cannot do:
 *
 *   velo-itest loss  --server H:P --key F [--sessions S] [--requests N]
 *                    [--pings P] [--loss P] [--seed S] [--max-seconds T]
 *       S sessions with client-side loss injection send N INFERs and P
 *       pings.  Checks that every request gets exactly one final answer
 *       (REJECT, DONE or ERROR), at most one ACCEPT, no TIMEOUT, and that
 *       loss really happened on the client (datagrams dropped both ways,
 *       gaps repaired).  Prints the totals as "name value" lines.
 *
 *   velo-itest forge --server H:P --key F
 *       Logs on, captures a STATUS_REQUEST datagram as sent (tap), then
 *       sends a replay of it and a forged copy (fresh packet number, bad
 *       tag) from the session's own socket and from a stranger's socket,
 *       plus a LOGON with a wrong tag.  Checks that zero bytes come back to
 *       either socket.  The shell script checks velod's drop counters.
 *
 * Exit: 0 pass, 1 fail (the reason on stderr), 2 usage.
 */
#include <errno.h>
#include <stdarg.h>
#include <getopt.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netdb.h>
#include <unistd.h>

#include <velo/client.h>
#include <velo/codec.h>
#include <velo/compiler.h>

#include "../../tools/client/tool.h"
#include "../../tools/lib/clock.h"

#define SESS_MAX 64
#define INFLIGHT_PER_SESS 8	/* below the server's default credit (16) */

struct opts {
	const char *server, *key;
	uint32_t sessions;
	uint64_t requests, pings, seed;
	double loss, max_seconds;
};

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int fail(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "velo-itest: FAIL: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 1;
}

static struct velo_client *open_session(const struct opts *o, uint32_t i,
					velo_client_tap_cb *tap, void *tap_arg,
					uint32_t heartbeat_ms)
{
	struct velo_client_config cfg = { 0 };
	struct velo_client *c;
	int rc;

	if (tool_load_key(o->key, 0, &cfg.psk))
		return NULL;
	cfg.server = o->server;
	cfg.client_name = "velo-itest";
	cfg.heartbeat_ms = heartbeat_ms;
	cfg.requests_max = 64;
	cfg.request_bytes_max = 4096;
	cfg.logon_timeout_ms = 5000;
	cfg.retry_ms = 50;
	cfg.retries_max = 100;
	cfg.tap = tap;
	cfg.tap_arg = tap_arg;
	if (o->loss > 0) {
		uint32_t ppm = (uint32_t)lround(o->loss * 1e6);

		cfg.loss = (struct velo_client_loss){ o->seed * 1000 + i, ppm, ppm,
						      ppm, ppm };
	}
	c = velo_client_create(&cfg);
	memset(&cfg.psk, 0, sizeof(cfg.psk));
	if (!c) {
		fprintf(stderr, "velo-itest: create: %s\n", strerror(errno));
		return NULL;
	}
	rc = velo_client_logon(c, -1);
	if (rc) {
		fprintf(stderr, "velo-itest: logon: %s\n", strerror(-rc));
		velo_client_destroy(c);
		return NULL;
	}
	return c;
}

/* ------------------------------------------------------------------------
 * loss
 */
struct req_rec {
	uint64_t key;		/* request id | session << 56; 0: empty */
	uint16_t accepts, finals, timeouts;
};

/* Request ids are wall-clock microseconds (< 2^56) per session. */
static uint64_t rec_key(uint64_t id, uint32_t sess)
{
	return id | (uint64_t)(sess + 1) << 56;
}

static struct req_rec *rec_get(struct req_rec *t, uint64_t mask, uint64_t key,
			       bool add)
{
	for (uint64_t h = (key * 0x9e3779b97f4a7c15ull) >> 20;; h++) {
		struct req_rec *r = &t[h & mask];

		if (r->key == key)
			return r;
		if (!r->key) {
			if (!add)
				return NULL;
			r->key = key;
			return r;
		}
	}
}

static int cmd_loss(const struct opts *o)
{
	static struct velo_client *cs[SESS_MAX];
	static uint32_t inflight[SESS_MAX];
	struct req_rec *recs;
	struct proto_infer_req rq = { 0 };
	uint64_t sent = 0, pings_sent = 0, pongs = 0, dup_pongs = 0, stale = 0;
	uint64_t tot[VELO_CLIENT_CTR__COUNT] = { 0 };
	uint64_t t0 = clock_mono_ns(), next_ping = t0, done = 0, mask = 1;
	uint64_t *ping_seen;
	int bad = 0;

	while (mask < 2 * o->requests + 2)
		mask <<= 1;
	recs = calloc(mask, sizeof(*recs));
	mask--;
	ping_seen = calloc(o->pings + 1, sizeof(*ping_seen));
	if (!recs || !ping_seen)
		return fail("out of memory");
	for (uint32_t i = 0; i < o->sessions; i++) {
		/* 100 ms heartbeats: a lost last answer is found quickly. */
		cs[i] = open_session(o, i, NULL, NULL, 100);
		if (!cs[i])
			return fail("session %u did not log on", i);
	}
	rq.f.flags = PROTO_INFER_PROMPT_TEXT;
	rq.f.max_tokens = 16;
	rq.prompt_text = "The quick brown fox";
	rq.prompt_text_len = strlen(rq.prompt_text);

	for (;;) {
		uint64_t now = clock_mono_ns();

		if (done == o->requests && pings_sent == o->pings &&
		    (pongs == o->pings || now - next_ping > 1000000000u))
			break;
		if (now - t0 > (uint64_t)(o->max_seconds * 1e9)) {
			fprintf(stderr, "velo-itest: time limit: %llu of %llu "
				"requests answered\n", (unsigned long long)done,
				(unsigned long long)o->requests);
			bad = 1;
			break;
		}
		for (uint32_t i = 0; i < o->sessions; i++) {
			struct velo_client *c = cs[i];
			struct velo_client_event ev;

			while (sent < o->requests &&
			       inflight[i] < INFLIGHT_PER_SESS) {
				uint64_t id;
				int rc = velo_client_infer(c, &rq, &id);

				if (rc == -EBUSY)
					break;	/* an older one unanswered yet */
				if (rc)
					return fail("infer: %s", strerror(-rc));
				rec_get(recs, mask, rec_key(id, i), true);
				sent++;
				inflight[i]++;
			}
			if (pings_sent < o->pings && now >= next_ping) {
				if (!velo_client_test_request(c, NULL))
					pings_sent++;
				next_ping = now + 1000000;	/* 1 kHz */
			}
			velo_client_wait(c, 0);
			while (velo_client_event_next(c, &ev) == 1) {
				struct req_rec *r = NULL;

				if (ev.type == VELO_CLIENT_EV_TEST_RESPONSE) {
					if (ev.request_id <= o->pings &&
					    ping_seen[ev.request_id]++)
						dup_pongs++;
					pongs++;
					continue;
				}
				if (ev.type == VELO_CLIENT_EV_LOGON)
					continue;	/* queued by the logon */
				if (ev.type == VELO_CLIENT_EV_CLOSED)
					return fail("session %u closed (%s)", i,
						    strerror(-ev.u.closed.err));
				if (ev.type == VELO_CLIENT_EV_GAP) {
					fprintf(stderr, "velo-itest: GAP_FILL of %u "
						"messages (replay buffer too small?)\n",
						ev.u.gap.count);
					bad = 1;
					continue;
				}
				r = rec_get(recs, mask,
					    rec_key(ev.request_id, i), false);
				if (!r) {
					stale++;
					continue;
				}
				switch (ev.type) {
				case VELO_CLIENT_EV_ACCEPT:
					r->accepts++;
					break;
				case VELO_CLIENT_EV_REJECT:
					if (ev.u.reject.f.code != PROTO_E_NOT_READY) {
						fprintf(stderr, "velo-itest: REJECT %s: "
							"%.*s\n",
							proto_err_name(ev.u.reject.f.code),
							(int)ev.u.reject.text.len,
							ev.u.reject.text.p);
						bad++;
					}
					/* fall through */
				case VELO_CLIENT_EV_DONE:
				case VELO_CLIENT_EV_ERROR:
					if (!r->finals++ && !r->timeouts) {
						inflight[i]--;
						done++;
					}
					break;
				case VELO_CLIENT_EV_TIMEOUT:
					if (!r->timeouts++ && !r->finals) {
						inflight[i]--;
						done++;
					}
					break;
				default:
					break;
				}
			}
		}
	}

	for (uint64_t k = 0, seen = 0; k <= mask; k++) {
		const struct req_rec *r = &recs[k];

		if (!r->key)
			continue;
		seen++;
		if (r->finals != 1 || r->timeouts || r->accepts > 1) {
			if (bad < 10)
				fprintf(stderr, "velo-itest: request %llu: %u final "
					"answers, %u accepts, %u timeouts\n",
					(unsigned long long)(r->key & ((1ull << 56) - 1)),
					r->finals, r->accepts, r->timeouts);
			bad++;
		}
		if (k == mask && seen != o->requests) {
			fprintf(stderr, "velo-itest: %llu requests sent of %llu\n",
				(unsigned long long)seen,
				(unsigned long long)o->requests);
			bad++;
		}
	}
	for (uint32_t i = 0; i < o->sessions; i++) {
		const uint64_t *v = velo_client_counters(cs[i]);

		for (unsigned k = 0; k < VELO_CLIENT_CTR__COUNT; k++)
			tot[k] += v[k];
		velo_client_destroy(cs[i]);
	}
	printf("requests %llu\nbad %d\npings_sent %llu\n"
	       "pongs %llu\ndup_pongs %llu\nstale_events %llu\nseconds %.3f\n",
	       (unsigned long long)o->requests, bad,
	       (unsigned long long)pings_sent, (unsigned long long)pongs,
	       (unsigned long long)dup_pongs, (unsigned long long)stale,
	       (clock_mono_ns() - t0) / 1e9);
	for (unsigned k = 0; k < VELO_CLIENT_CTR__COUNT; k++)
		printf("client.%s %llu\n", velo_client_counter_name(k),
		       (unsigned long long)tot[k]);
	free(recs);
	free(ping_seen);
	if (bad)
		return fail("%d requests without exactly one answer", bad);
	if (dup_pongs)
		return fail("%llu TEST_RESPONSEs delivered twice",
			    (unsigned long long)dup_pongs);
	if (o->loss > 0 && (!tot[VELO_CLIENT_CTR_loss_tx] ||
			    !tot[VELO_CLIENT_CTR_loss_rx]))
		return fail("client loss injection dropped nothing");
	return 0;
}

/* ------------------------------------------------------------------------
 * forge
 */
struct capture {
	_Alignas(8) uint8_t buf[PROTO_MTU_MAX];
	size_t len;
	int want;
};

static void tap_capture(void *arg, int dir, const void *d, size_t len)
{
	struct capture *cap = arg;
	const struct proto_pkt_hdr *h = d;

	/* The first data datagram sent after the request to capture. */
	if (!cap->want || dir != VELO_CLIENT_TAP_TX || len > sizeof(cap->buf) ||
	    (h->flags & PROTO_F_CTRL) || h->msg_count == 0)
		return;
	memcpy(cap->buf, d, len);
	cap->len = len;
	cap->want = 0;
}

/* Bytes that arrive on @fd within @ms. */
static size_t listen_bytes(int fd, int ms)
{
	uint8_t buf[PROTO_MTU_MAX];
	size_t total = 0;
	uint64_t end = clock_mono_ns() + (uint64_t)ms * 1000000u;

	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		uint64_t now = clock_mono_ns();
		ssize_t n;

		if (now >= end)
			return total;
		if (poll(&p, 1, (int)((end - now) / 1000000u) + 1) <= 0)
			continue;
		n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n > 0)
			total += (size_t)n;
	}
}

static int stranger_socket(const char *server)
{
	char host[256];
	const char *colon = strrchr(server, ':');
	struct addrinfo hints = { .ai_socktype = SOCK_DGRAM }, *res;
	int fd;

	if (!colon || (size_t)(colon - server) >= sizeof(host))
		return -1;
	memcpy(host, server, (size_t)(colon - server));
	host[colon - server] = 0;
	if (getaddrinfo(host, colon + 1, &hints, &res))
		return -1;
	fd = socket(res->ai_family, SOCK_DGRAM, 0);
	if (fd >= 0 && connect(fd, res->ai_addr, res->ai_addrlen)) {
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	return fd;
}

static int cmd_forge(const struct opts *o)
{
	static struct capture cap;
	_Alignas(8) uint8_t forged[PROTO_MTU_MAX];
	_Alignas(8) uint8_t logon[256];
	struct velo_client *c;
	struct velo_client_event ev;
	struct velo_psk psk;
	uint64_t rx0, got_status = 0;
	size_t back_sess, back_stranger;
	int fd, sfd;

	if (tool_load_key(o->key, 0, &psk))
		return fail("key");
	/* Heartbeats far apart: the listening window must be quiet. */
	c = open_session(o, 0, tap_capture, &cap, 10000);
	if (!c)
		return fail("logon");
	/* A genuine STATUS_REQUEST, answered. */
	cap.want = 1;
	if (velo_client_status_request(c))
		return fail("status request not sent");
	for (int i = 0; i < 200 && !got_status; i++) {
		velo_client_wait(c, 10);
		while (velo_client_event_next(c, &ev) == 1)
			got_status += ev.type == VELO_CLIENT_EV_STATUS;
	}
	if (!got_status || !cap.len)
		return fail("no STATUS for a genuine STATUS_REQUEST");
	velo_client_poll(c);
	while (velo_client_event_next(c, &ev) == 1)
		;

	/* The forged copy: a fresh packet number (so the replay window lets
	 * it through to the tag check) and one flipped tag bit. */
	memcpy(forged, cap.buf, cap.len);
	((struct proto_pkt_hdr *)forged)->pkt_num += 1000;
	forged[cap.len - 1] ^= 0x01;

	/* A LOGON from nobody: key id 1, zero tag. */
	{
		struct proto_pkt_hdr h = {
			.magic = PROTO_MAGIC, .version = PROTO_VERSION,
			.flags = PROTO_F_CTRL, .pkt_num = 1,
		};
		struct proto_enc e;
		struct proto_logon *l;
		int len;

		proto_enc_init(&e, logon, sizeof(logon), &h);
		l = proto_enc_msg_begin(&e, PROTO_T_LOGON, sizeof(*l));
		if (!l)
			return fail("encode");
		/* the right key id, so that it is the tag that fails */
		l->key_id = psk.key_id;
		memset(&psk, 0, sizeof(psk));
		velo_random(l->client_nonce, sizeof(l->client_nonce));
		l->timestamp_ns = clock_real_ns();
		proto_enc_var(&e, "", 0);
		proto_enc_msg_end(&e);
		len = proto_enc_finish(&e, PROTO_TAG_LEN);
		if (len < 0)
			return fail("encode");
		/* tag left as zeros */
		cap.want = 0;
		fd = stranger_socket(o->server);
		if (fd < 0)
			return fail("stranger socket");
		sfd = velo_client_fd(c);
		rx0 = velo_client_counters(c)[VELO_CLIENT_CTR_rx_datagrams];

		if (send(sfd, cap.buf, cap.len, 0) != (ssize_t)cap.len ||
		    send(sfd, forged, cap.len, 0) != (ssize_t)cap.len ||
		    send(fd, cap.buf, cap.len, 0) != (ssize_t)cap.len ||
		    send(fd, forged, cap.len, 0) != (ssize_t)cap.len ||
		    send(fd, logon, (size_t)len, 0) != len)
			return fail("send: %s", strerror(errno));
	}
	back_stranger = listen_bytes(fd, 500);
	/* The session's socket: let the library read it and count. */
	velo_client_poll(c);
	back_sess = velo_client_counters(c)[VELO_CLIENT_CTR_rx_datagrams] - rx0;
	printf("replayed_and_forged_sent 5\nbytes_back_stranger %zu\n"
	       "datagrams_back_session %llu\n", back_stranger,
	       (unsigned long long)back_sess);
	while (velo_client_event_next(c, &ev) == 1)
		if (ev.type == VELO_CLIENT_EV_STATUS)
			return fail("the replayed STATUS_REQUEST was answered");
	close(fd);
	velo_client_destroy(c);
	if (back_stranger)
		return fail("%zu bytes came back to the stranger", back_stranger);
	if (back_sess)
		return fail("%llu datagrams came back to the session",
			    (unsigned long long)back_sess);
	return 0;
}

int main(int argc, char **argv)
{
	enum { O_SESS = 256, O_REQ, O_PINGS, O_LOSS, O_SEED, O_MAXS };
	static const struct option opts[] = {
		{ "server", required_argument, NULL, 's' },
		{ "key", required_argument, NULL, 'k' },
		{ "sessions", required_argument, NULL, O_SESS },
		{ "requests", required_argument, NULL, O_REQ },
		{ "pings", required_argument, NULL, O_PINGS },
		{ "loss", required_argument, NULL, O_LOSS },
		{ "seed", required_argument, NULL, O_SEED },
		{ "max-seconds", required_argument, NULL, O_MAXS },
		{ NULL, 0, NULL, 0 },
	};
	struct opts o = {
		.server = VELO_CLIENT_SERVER_DEFAULT, .sessions = 4,
		.requests = 2000, .pings = 1000, .seed = 1, .max_seconds = 60,
	};
	const char *cmd;
	uint64_t v;
	int c;

	if (argc < 2)
		goto usage;
	cmd = argv[1];
	argv++;
	argc--;
	while ((c = getopt_long(argc, argv, "s:k:", opts, NULL)) != -1) {
		switch (c) {
		case 's': o.server = optarg; break;
		case 'k': o.key = optarg; break;
		case O_SESS:
			if (tool_u64(optarg, 1, SESS_MAX, &v))
				goto usage;
			o.sessions = (uint32_t)v;
			break;
		case O_REQ:
			if (tool_u64(optarg, 0, 10000000, &o.requests))
				goto usage;
			break;
		case O_PINGS:
			if (tool_u64(optarg, 0, 10000000, &o.pings))
				goto usage;
			break;
		case O_LOSS:
			if (tool_double01(optarg, &o.loss))
				goto usage;
			break;
		case O_SEED:
			if (tool_u64(optarg, 0, 1000000, &o.seed))
				goto usage;
			break;
		case O_MAXS:
			o.max_seconds = atof(optarg);
			break;
		default:
			goto usage;
		}
	}
	if (!o.key)
		o.key = velo_client_key_path();
	if (!strcmp(cmd, "loss"))
		return cmd_loss(&o);
	if (!strcmp(cmd, "forge"))
		return cmd_forge(&o);
usage:
	fprintf(stderr, "usage: velo-itest loss|forge --server H:P --key FILE "
			"[--sessions S --requests N --pings P --loss P --seed S "
			"--max-seconds T]\n");
	return 2;
}
