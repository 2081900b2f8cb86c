// SPDX-License-Identifier: MIT
/*
 * velo-bench-dp — protocol datagrams per second per dataplane lcore: the
 * whole receive-to-transmit path of the DPDK transport on one thread, minus
 * the PMD, on frames built in memory beforehand.
 *
 *   velo-bench-dp [--seconds S] [--reps N] [--frames F] [--burst B]
 *                 [--neigh K] [--core C] [--json FILE]
 *
 * One session is logged on (a real LOGON, sealed with a random key); then
 * F Ethernet/IPv4/UDP frames, each an authenticated TEST_REQUEST with the
 * next packet number, are built once.  A pass runs every frame through what
 * dp_dpdk_rx() and dp_dpdk_tx() do to it, in bursts of B (the dataplane's
 * burst):
 *   dp_pkt_rx (eth, IPv4 header checksum, UDP checksum in software, port,
 *   neighbour learning) -> copy to the aligned scratch buffer -> dp_sess_rx
 *   (parse, session lookup, replay window, tag check, TEST_RESPONSE built
 *   and sealed) -> per burst dp_sess_flush + txq flush: each answer copied
 *   behind Ethernet/IPv4/UDP headers (dp_pkt_udp_build, software checksums)
 *   into a frame buffer, as into an mbuf.
 * --neigh K (1..DP_PKT_NEIGH_MAX, default 1): the server's neighbour table
 * holds K - 1 other peers, learned before the client, so the client's
 * entry is the K-th (the worst case of a full table is K = 64).
 * The session's replay window is reset between passes (the same packet
 * numbers come again).  What is not in it: rte_eth_rx_burst/tx_burst and
 * mbuf alloc/free (on a NIC a few ns per packet amortised over the burst;
 * on the veth vdevs the kernel's cost, measured by t-dpdk-bench instead).
 *
 * Figures, each the median of N runs of S seconds, on the calling thread
 * (pinned with --core): full path ns/datagram and Mpps (thread CPU time and
 * wall time), the packet layer alone (dp_pkt_rx + dp_pkt_udp_build of the
 * answer, no session layer), and a memcpy of the same bytes as the anchor
 * for comparing machines.  Every pass checks that each frame was answered.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <arpa/inet.h>

#include <velo/auth.h>
#include <velo/codec.h>
#include <velo/compiler.h>

#include "../../tools/client/tool.h"
#include "../../tools/lib/benchmeta.h"
#include "../../tools/lib/clock.h"
#include "../../tools/lib/cpu.h"
#include "../../tools/lib/log.h"
#include "../ring.h"
#include "../session.h"
#include "pkt.h"

#define FRAMES_MAX 2048		/* inside the replay window (2048) */
#define FRAME_BYTES 256		/* one TEST_REQUEST frame is 122 bytes */
#define REPS_MAX 51

struct bench {
	struct dp_pkt_if srv, cli;
	struct dp_sess_table t;
	struct dp_txq txq;
	struct dp_rings rings;
	struct velo_psk psk;
	struct velo_session_keys logon_keys, keys;
	struct dp_addr cli_addr, srv_addr;
	uint8_t cnonce[PROTO_NONCE_LEN];
	uint64_t sid;
	/* transmit side: the frame being built, as an mbuf's data */
	_Alignas(64) uint8_t txframe[PROTO_MTU_MAX + 64];
	uint64_t answered, tx_bytes;
	bool want_ack;
	_Alignas(64) uint8_t scratch[PROTO_MTU_MAX + 64];
	uint8_t *frames;		/* (nframes, FRAME_BYTES) */
	unsigned *lens;
	unsigned nframes, burst, neigh;
};

static struct dp_addr v4(uint32_t ip, uint16_t port)
{
	struct dp_addr a;

	memset(&a, 0, sizeof(a));
	a.u.in4.sin_family = AF_INET;
	a.u.in4.sin_addr.s_addr = htonl(ip);
	a.u.in4.sin_port = htons(port);
	a.len = sizeof(a.u.in4);
	return a;
}

/* The txq flush: what dp_dpdk_tx does, into one frame buffer. */
static void tx_flush(struct dp_txq *q, void *arg)
{
	struct bench *b = arg;
	unsigned hl = dp_pkt_hdr_len(&b->srv);

	for (unsigned i = 0; i < q->n; i++) {
		int len;

		memcpy(b->txframe + hl, q->pkts[i].data, q->pkts[i].len);
		len = dp_pkt_udp_build(&b->srv, b->txframe, q->pkts[i].len,
				       &q->pkts[i].addr);
		if (len < 0)
			continue;
		b->answered++;
		b->tx_bytes += (unsigned)len;
		if (unlikely(b->want_ack)) {
			const struct proto_pkt_hdr *h =
				(const void *)(b->txframe + hl);
			const struct proto_msg_hdr *mh = (const void *)(h + 1);
			struct proto_logon_ack ack;

			if (q->pkts[i].len < sizeof(*h) + sizeof(*mh) + sizeof(ack) ||
			    mh->template_id != PROTO_T_LOGON_ACK)
				continue;
			memcpy(&ack, mh + 1, sizeof(ack));
			if (velo_auth_open(&b->logon_keys.s2c, b->txframe + hl,
					   q->pkts[i].len, ack.server_nonce))
				continue;
			b->sid = ack.session_id;
			velo_auth_session_keys(&b->psk, b->cnonce, ack.server_nonce,
					       b->sid, (enum velo_suite)ack.suite,
					       &b->keys);
			b->want_ack = false;
		}
	}
	q->n = 0;
}

/* One received frame, as dp_dpdk.c's rx_one (UDP path). */
static __always_inline void rx_frame(struct bench *b, uint8_t *f, unsigned len)
{
	struct dp_pkt_rx_info info;

	if (dp_pkt_rx(&b->srv, f, len, &info) != DP_PKT_UDP)
		return;
	memcpy(b->scratch, f + info.payload_off, info.payload_len);
	dp_sess_rx(&b->t, b->scratch, info.payload_len, &info.from);
}

static void burst_end(struct bench *b)
{
	dp_sess_flush(&b->t);
	dp_txq_flush(&b->txq);
}

/* A client datagram (header, one message of @tmpl with @body) in a frame. */
static int client_frame(struct bench *b, uint8_t *frame, uint64_t pkt_num,
			uint16_t tmpl, const void *body, size_t blen, bool logon)
{
	unsigned hl = dp_pkt_hdr_len(&b->cli);
	struct proto_pkt_hdr h = {
		.magic = PROTO_MAGIC, .version = PROTO_VERSION,
		.flags = PROTO_F_AUTH | PROTO_F_CTRL, .pkt_num = pkt_num,
		.session_id = logon ? 0 : b->sid, .seq = 1, .ack = 1,
	};
	struct proto_enc e;
	void *m;
	int len;

	proto_enc_init(&e, frame + hl, FRAME_BYTES - hl, &h);
	m = proto_enc_msg_begin(&e, tmpl, blen);
	if (!m)
		return -EMSGSIZE;
	memcpy(m, body, blen);
	if (logon)
		proto_enc_var(&e, "velo-bench-dp", 13);
	proto_enc_msg_end(&e);
	len = proto_enc_finish(&e, PROTO_TAG_LEN);
	if (len < 0)
		return len;
	if (velo_auth_seal(logon ? &b->logon_keys.c2s : &b->keys.c2s,
			   frame + hl, (size_t)len, logon ? b->cnonce : NULL))
		return -EINVAL;
	return dp_pkt_udp_build(&b->cli, frame, (unsigned)len, &b->srv_addr);
}

static int setup(struct bench *b)
{
	static const uint8_t smac[6] = { 0x02, 0, 0, 0, 0, 2 };
	static const uint8_t cmac[6] = { 0x02, 0, 0, 0, 0, 1 };
	_Alignas(8) uint8_t f[FRAME_BYTES * 4];
	struct dp_rings_config rc = { .slots = 16, .prompt_tokens_max = 64,
				      .text_bytes_max = 256, .resp_entries = 64 };
	struct dp_sess_config c;
	struct proto_logon l = { 0 };
	int len, rc2;

	b->cli_addr = v4(0x0a000001, 40000);
	b->srv_addr = v4(0x0a000002, 7400);
	if (dp_pkt_if_init(&b->srv, smac, b->srv_addr.u.in4.sin_addr.s_addr,
			   b->srv_addr.u.in4.sin_port, 0) ||
	    dp_pkt_if_init(&b->cli, cmac, b->cli_addr.u.in4.sin_addr.s_addr,
			   b->cli_addr.u.in4.sin_port, 0))
		return -EINVAL;
	dp_pkt_neigh_learn(&b->cli, b->srv_addr.u.in4.sin_addr.s_addr, smac);
	/* other peers first (10.0.1.x): the client's entry comes after them */
	for (unsigned i = 1; i < b->neigh; i++) {
		uint8_t m[6] = { 0x02, 0, 0, 0, 1, (uint8_t)i };

		dp_pkt_neigh_learn(&b->srv, htonl(0x0a000100u + i), m);
	}
	if (velo_auth_init())
		return -EIO;
	b->psk.key_id = 1;
	velo_random(b->psk.key, sizeof(b->psk.key));
	velo_auth_logon_keys(&b->psk, &b->logon_keys);
	dp_sess_config_default(&c);
	c.sessions_max = 4;
	c.rate_pps = 0;			/* the limiter would cap the figure */
	c.logon_rate_pps = 0;
	c.limits.prompt_tokens_max = rc.prompt_tokens_max;	/* no INFER here */
	c.limits.text_bytes_max = rc.text_bytes_max;
	rc2 = dp_rings_init(&b->rings, &rc);
	if (!rc2)
		rc2 = dp_txq_init(&b->txq, 2 * b->burst, c.mtu, tx_flush, b);
	if (!rc2)
		rc2 = dp_sess_init(&b->t, &c, &b->psk, 1, &b->rings, &b->txq, false);
	if (rc2)
		return rc2;
	dp_sess_clock(&b->t, clock_mono_ns(), clock_real_ns());

	/* LOGON, as velo-client sends it. */
	velo_random(b->cnonce, sizeof(b->cnonce));
	l.key_id = b->psk.key_id;
	l.timestamp_ns = clock_real_ns();
	memcpy(l.client_nonce, b->cnonce, sizeof(b->cnonce));
	l.mtu = PROTO_MTU_DEFAULT;
	l.flags = (uint16_t)velo_auth_suites_local();
	len = client_frame(b, f, 1, PROTO_T_LOGON, &l, sizeof(l), true);
	if (len < 0)
		return len;
	b->want_ack = true;
	rx_frame(b, f, (unsigned)len);
	burst_end(b);
	if (b->want_ack || !b->sid)
		return -EPROTO;

	/* The TEST_REQUEST frames. */
	b->frames = aligned_alloc(64, (size_t)b->nframes * FRAME_BYTES);
	b->lens = calloc(b->nframes, sizeof(*b->lens));
	if (!b->frames || !b->lens)
		return -ENOMEM;
	for (unsigned i = 0; i < b->nframes; i++) {
		struct proto_test_request tr = { .correlation_id = i + 1,
						 .timestamp_ns = clock_real_ns() };

		len = client_frame(b, b->frames + (size_t)i * FRAME_BYTES, i + 2,
				   PROTO_T_TEST_REQUEST, &tr, sizeof(tr), false);
		if (len < 0 || len > FRAME_BYTES)
			return -EMSGSIZE;
		b->lens[i] = (unsigned)len;
	}
	return 0;
}

/* One pass over every frame through the full path. */
static int pass_full(struct bench *b)
{
	struct dp_sess *s = dp_sess_lookup(&b->t, b->sid);
	uint64_t before = b->answered;

	if (!s)
		return -ENOENT;
	velo_replay_init(&s->rx_win);
	for (unsigned i = 0; i < b->nframes; i += b->burst) {
		unsigned n = MIN(b->burst, b->nframes - i);

		dp_sess_clock(&b->t, clock_mono_ns(), clock_real_ns());
		for (unsigned k = 0; k < n; k++) {
			uint8_t *f = b->frames + (size_t)(i + k) * FRAME_BYTES;

			if (k + 2 < n)
				__builtin_prefetch(f + 2 * FRAME_BYTES);
			rx_frame(b, f, b->lens[i + k]);
		}
		burst_end(b);
	}
	return b->answered - before == b->nframes ? 0 : -EPROTO;
}

/* The packet layer alone: classify, then build an answer of the same size. */
static int pass_pkt(struct bench *b)
{
	unsigned hl = dp_pkt_hdr_len(&b->srv);
	uint64_t ok = 0;

	for (unsigned i = 0; i < b->nframes; i++) {
		struct dp_pkt_rx_info info;
		uint8_t *f = b->frames + (size_t)i * FRAME_BYTES;

		if (dp_pkt_rx(&b->srv, f, b->lens[i], &info) != DP_PKT_UDP)
			continue;
		memcpy(b->scratch, f + info.payload_off, info.payload_len);
		memcpy(b->txframe + hl, b->scratch, info.payload_len);
		ok += dp_pkt_udp_build(&b->srv, b->txframe, info.payload_len,
				       &info.from) > 0;
	}
	return ok == b->nframes ? 0 : -EPROTO;
}

/* The anchor: copy the same bytes twice (in and out), as memcpy does. */
static int pass_copy(struct bench *b)
{
	for (unsigned i = 0; i < b->nframes; i++) {
		memcpy(b->scratch, b->frames + (size_t)i * FRAME_BYTES, b->lens[i]);
		memcpy(b->txframe, b->scratch, b->lens[i]);
		__asm__ volatile("" : : "r"(b->txframe) : "memory");
	}
	return 0;
}

static uint64_t thread_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

struct fig {
	double wall_ns[REPS_MAX], cpu_ns[REPS_MAX];
	double wall, cpu;	/* medians, ns per datagram */
};

static int measure(struct bench *b, int (*pass)(struct bench *), double secs,
		   unsigned reps, struct fig *out)
{
	for (unsigned r = 0; r < reps; r++) {
		uint64_t t0 = clock_mono_ns(), c0 = thread_ns(), n = 0, t1;
		uint64_t end = t0 + (uint64_t)(secs * 1e9);

		do {
			int rc = pass(b);

			if (rc)
				return rc;
			n += b->nframes;
			t1 = clock_mono_ns();
		} while (t1 < end);
		out->wall_ns[r] = (double)(t1 - t0) / (double)n;
		out->cpu_ns[r] = (double)(thread_ns() - c0) / (double)n;
	}
	qsort(out->wall_ns, reps, sizeof(double), cmp_d);
	qsort(out->cpu_ns, reps, sizeof(double), cmp_d);
	out->wall = out->wall_ns[reps / 2];
	out->cpu = out->cpu_ns[reps / 2];
	return 0;
}

int main(int argc, char **argv)
{
	enum { O_SECS = 256, O_REPS, O_FRAMES, O_BURST, O_NEIGH, O_CORE, O_JSON };
	static const struct option opts[] = {
		{ "seconds", required_argument, NULL, O_SECS },
		{ "reps", required_argument, NULL, O_REPS },
		{ "frames", required_argument, NULL, O_FRAMES },
		{ "burst", required_argument, NULL, O_BURST },
		{ "neigh", required_argument, NULL, O_NEIGH },
		{ "core", required_argument, NULL, O_CORE },
		{ "json", required_argument, NULL, O_JSON },
		{ NULL, 0, NULL, 0 },
	};
	static struct bench b;
	struct fig full, pkt, copy;
	const char *json = NULL;
	double secs = 0.3;
	unsigned reps = 5;
	int core = -1, o, rc;
	uint64_t v;
	char commit[64], date[32], load[32];

	b.nframes = 1024;
	b.burst = 32;
	b.neigh = 1;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case O_SECS:
			secs = atof(optarg);
			if (!(secs > 0 && secs <= 60))
				goto usage;
			break;
		case O_REPS:
			if (tool_u64(optarg, 1, REPS_MAX, &v))
				goto usage;
			reps = (unsigned)v;
			break;
		case O_FRAMES:
			if (tool_u64(optarg, 1, FRAMES_MAX, &v))
				goto usage;
			b.nframes = (unsigned)v;
			break;
		case O_BURST:
			if (tool_u64(optarg, 1, 64, &v))
				goto usage;
			b.burst = (unsigned)v;
			break;
		case O_NEIGH:
			if (tool_u64(optarg, 1, DP_PKT_NEIGH_MAX, &v))
				goto usage;
			b.neigh = (unsigned)v;
			break;
		case O_CORE:
			if (tool_u64(optarg, 0, 4095, &v))
				goto usage;
			core = (int)v;
			break;
		case O_JSON:
			json = optarg;
			break;
		default:
			goto usage;
		}
	}
	log_set_spec("err");
	if (core >= 0 && cpu_pin_self(core))
		fprintf(stderr, "velo-bench-dp: cannot pin to core %d\n", core);
	rc = setup(&b);
	if (rc) {
		fprintf(stderr, "velo-bench-dp: setup: %s\n", strerror(-rc));
		return 1;
	}
	rc = measure(&b, pass_full, secs, reps, &full);
	if (!rc)
		rc = measure(&b, pass_pkt, secs, reps, &pkt);
	if (!rc)
		rc = measure(&b, pass_copy, secs, reps, &copy);
	if (rc) {
		fprintf(stderr, "velo-bench-dp: a frame was not answered (%s)\n",
			strerror(-rc));
		return 1;
	}
	velo_bench_commit(commit, sizeof(commit));
	velo_bench_date(date, sizeof(date));
	velo_bench_loadavg(load, sizeof(load));
	printf("velo-bench-dp: %u TEST_REQUEST frames of %u bytes, burst %u, "
	       "neighbour %u of the table, %u x %.2f s, core %d, load %s\n",
	       b.nframes, b.lens[0], b.burst, b.neigh, reps, secs, core, load);
	printf("%-34s %9s %9s %9s\n", "path (per datagram)", "ns wall",
	       "ns cpu", "Mpps/lcore");
	printf("%-34s %9.1f %9.1f %9.2f\n", "full: pkt + session + auth + answer",
	       full.wall, full.cpu, 1e3 / full.wall);
	printf("%-34s %9.1f %9.1f %9.2f\n", "packet layer only (rx + tx build)",
	       pkt.wall, pkt.cpu, 1e3 / pkt.wall);
	printf("%-34s %9.1f %9.1f %9.2f\n", "memcpy of the same bytes (anchor)",
	       copy.wall, copy.cpu, 1e3 / copy.wall);
	if (json) {
		FILE *f = fopen(json, "w");

		if (!f) {
			fprintf(stderr, "velo-bench-dp: %s: %s\n", json, strerror(errno));
			return 1;
		}
		fprintf(f, "{\"bench\": \"velo-bench-dp\", \"commit\": \"%s\", "
			"\"date\": \"%s\", \"loadavg\": \"%s\", \"frames\": %u, "
			"\"frame_bytes\": %u, \"burst\": %u, \"neigh\": %u, "
			"\"reps\": %u, \"seconds\": %.3f, \"core\": %d, "
			"\"suites\": %u,\n"
			" \"full\": {\"ns_wall\": %.2f, \"ns_cpu\": %.2f, \"mpps\": %.3f},\n"
			" \"pkt_only\": {\"ns_wall\": %.2f, \"ns_cpu\": %.2f, \"mpps\": %.3f},\n"
			" \"memcpy\": {\"ns_wall\": %.2f, \"ns_cpu\": %.2f},\n"
			" \"full_over_memcpy\": %.2f}\n", commit, date, load,
			b.nframes, b.lens[0], b.burst, b.neigh, reps, secs, core,
			velo_auth_suites_local(), full.wall, full.cpu,
			1e3 / full.wall, pkt.wall, pkt.cpu, 1e3 / pkt.wall,
			copy.wall, copy.cpu, full.wall / copy.wall);
		fclose(f);
	}
	dp_sess_fini(&b.t);
	dp_txq_fini(&b.txq);
	dp_rings_fini(&b.rings);
	free(b.frames);
	free(b.lens);
	return 0;
usage:
	fprintf(stderr, "usage: velo-bench-dp [--seconds S] [--reps N] "
		"[--frames F<=%d] [--burst B<=64] [--neigh K<=%d] [--core C] "
		"[--json FILE]\n", FRAMES_MAX, DP_PKT_NEIGH_MAX);
	return 2;
}
