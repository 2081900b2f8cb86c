// SPDX-License-Identifier: MIT
/*
 * velo-bench-codec — single-thread cost of velod's receive path per
 * datagram: proto_pkt_parse, replay window check, tag verification, replay
 * window update, message iteration and the template decoder; for each
 * session suite and for typical datagrams (TEST_REQUEST, a 60-token INFER).
 * Each figure is set next to a plain memcpy of the same bytes measured in
 * the same run, so results from different machines compare.
 *
 *   velo-bench-codec [--seconds S] [--reps N] [--core C] [--json FILE]
 *
 * Method: a batch of BATCH datagrams with consecutive packet numbers is
 * encoded and sealed once; a pass resets the replay window and runs the
 * whole receive path over the batch.  Passes repeat for --seconds; each
 * figure is the median of --reps such runs.  Seal (the transmit side) is
 * measured the same way.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <velo/auth.h>
#include <velo/codec.h>
#include <velo/compiler.h>

#include "../client/tool.h"
#include "../lib/clock.h"
#include "../lib/benchmeta.h"
#include "../lib/cpu.h"

#define BATCH 256
#define DGRAM_MAX 2048
#define REPS_MAX 51

/*
 * The batch is packed, each datagram on its own cache lines (as receive
 * buffers are), so that it stays in L2 (~110 KB for the INFER batch) and
 * slots do not alias in the L1 sets, as fixed 2 KB slots would.
 */
static _Alignas(64) uint8_t pool[BATCH * DGRAM_MAX];
static _Alignas(64) uint8_t sink_pool[BATCH * DGRAM_MAX];
static uint8_t *dgrams[BATCH], *sink[BATCH];
static size_t dlen[BATCH];

struct opts {
	double seconds;
	unsigned reps;
	int core;
	const char *json;
};

enum kind { K_TEST_REQUEST, K_INFER60, K__COUNT };
static const char *const kind_name[K__COUNT] = { "test_request", "infer_60tok" };

/* Suites: NONE measures everything but the tag. */
enum { S_AES, S_CHACHA, S_NONE, S__COUNT };
static const char *const suite_name[S__COUNT] = {
	"aes256gcm", "chacha20poly1305", "none" };

struct figure {
	bool valid;
	size_t bytes;		/* datagram size */
	double rx_ns;		/* receive path, ns per datagram (median) */
	double rx_best_ns;	/* the fastest run (least disturbed) */
	double seal_ns;		/* transmit side: seal only */
	double memcpy_ns;	/* memcpy of the same bytes */
};
static struct figure fig[K__COUNT][S__COUNT];

static const struct proto_limits lim = {
	.vocab_size = 32000,
	.prompt_tokens_max = 8192,
	.max_tokens_max = 8192,
	.text_bytes_max = 32768,
};

/* Keep the optimiser from dropping work whose result is unused. */
static inline void escape(void *p)
{
	__asm__ volatile("" : : "g"(p) : "memory");
}

static int build_batch(enum kind k, const struct velo_dir_key *key)
{
	static uint32_t toks[60];
	struct proto_infer_req r;

	for (unsigned i = 0; i < 60; i++)
		toks[i] = (i * 7919u) % 32000u;
	memset(&r, 0, sizeof(r));
	r.f.max_tokens = 128;
	r.f.temperature = 0.7f;
	r.f.top_p = 0.9f;
	r.f.top_k = 40;
	r.f.flags = PROTO_INFER_PROMPT_TOKENS;
	r.prompt_tokens = toks;
	r.n_prompt_tokens = 60;
	r.model = "tiny-llama";

	size_t off = 0;

	for (unsigned i = 0; i < BATCH; i++) {
		struct proto_pkt_hdr h;
		struct proto_enc e;
		int len;

		dgrams[i] = pool + off;
		sink[i] = sink_pool + off;

		memset(&h, 0, sizeof(h));
		h.magic = PROTO_MAGIC;
		h.version = PROTO_VERSION;
		h.session_id = 0x5eed;
		h.seq = 1 + i;
		h.ack = 1;
		h.pkt_num = 1 + i;
		if (k == K_TEST_REQUEST)
			h.flags = PROTO_F_CTRL;
		proto_enc_init(&e, dgrams[i], DGRAM_MAX, &h);
		if (k == K_TEST_REQUEST) {
			struct proto_test_request *t =
				proto_enc_msg_begin(&e, PROTO_T_TEST_REQUEST,
						    sizeof(*t));
			if (t) {
				t->correlation_id = i;
				t->timestamp_ns = 1700000000000000000ull + i;
			}
			proto_enc_msg_end(&e);
		} else {
			r.f.request_id = 1 + i;
			proto_enc_infer(&e, &r);
		}
		len = proto_enc_finish(&e, PROTO_TAG_LEN);
		if (len < 0)
			return len;
		dlen[i] = (size_t)len;
		off += ALIGN_UP(dlen[i], (size_t)64);
		if (key && velo_auth_seal(key, dgrams[i], dlen[i], NULL))
			return -EINVAL;
	}
	return 0;
}

/*
 * The receive path velod runs for one datagram, minus the socket and the
 * session lookup (a hash probe, not the codec's cost).  Returns the number
 * of messages decoded, or a negative drop reason.
 */
static inline int rx_one(const uint8_t *b, size_t len, struct velo_replay *w,
			 const struct velo_dir_key *key)
{
	struct proto_pkt_view v;
	struct proto_msg_iter it;
	struct proto_msg m;
	int rc, n = 0;

	rc = proto_pkt_parse(b, len, PROTO_MTU_DEFAULT, &v);
	if (unlikely(rc))
		return rc;
	if (unlikely(!velo_replay_check(w, v.hdr->pkt_num)))
		return -PROTO_DROP_replay;
	if (key) {
		rc = velo_auth_open(key, b, len, NULL);
		if (unlikely(rc))
			return rc;
	}
	velo_replay_update(w, v.hdr->pkt_num);
	proto_msg_iter_init(&it, &v);
	while ((rc = proto_msg_next(&it, &m)) == 1) {
		if (m.template_id == PROTO_T_INFER) {
			struct proto_infer_view iv;

			rc = proto_decode_infer(&m, &lim, &iv);
			escape(&iv);
		} else {
			struct proto_test_request t;

			rc = proto_block_get(&m, &t, sizeof(t), sizeof(t));
			escape(&t);
		}
		if (unlikely(rc))
			return rc;
		n++;
	}
	return rc < 0 ? rc : n;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

enum what { W_RX, W_SEAL, W_MEMCPY };

/* ns per datagram of one run of about @seconds. */
static double run_once(enum what w, const struct velo_dir_key *key,
		       double seconds)
{
	const uint64_t budget = (uint64_t)(seconds * 1e9);
	struct velo_replay win;
	uint64_t t0 = clock_mono_ns(), t1, n = 0;

	do {
		for (unsigned rep = 0; rep < 16; rep++) {
			switch (w) {
			case W_RX:
				velo_replay_init(&win);
				for (unsigned i = 0; i < BATCH; i++)
					if (unlikely(rx_one(dgrams[i], dlen[i],
							    &win, key) != 1)) {
						fprintf(stderr, "velo-bench-codec: "
							"datagram %u rejected\n", i);
						exit(1);
					}
				break;
			case W_SEAL:
				for (unsigned i = 0; i < BATCH; i++)
					velo_auth_seal(key, dgrams[i], dlen[i], NULL);
				break;
			case W_MEMCPY:
				for (unsigned i = 0; i < BATCH; i++) {
					memcpy(sink[i], dgrams[i], dlen[i]);
					escape(sink[i]);
				}
				break;
			}
			n += BATCH;
		}
		t1 = clock_mono_ns();
	} while (t1 - t0 < budget);
	return (double)(t1 - t0) / (double)n;
}

static double run_median(enum what w, const struct velo_dir_key *key,
			 const struct opts *o, double *best)
{
	double v[REPS_MAX];

	for (unsigned r = 0; r < o->reps; r++)
		v[r] = run_once(w, key, o->seconds);
	qsort(v, o->reps, sizeof(v[0]), cmp_double);
	if (best)
		*best = v[0];
	return v[o->reps / 2];
}

static int write_json(const struct opts *o, const char *chosen)
{
	char commit[64], date[64];
	time_t now = time(NULL);
	FILE *f = fopen(o->json, "w");
	bool first = true;

	if (!f) {
		fprintf(stderr, "velo-bench-codec: %s: %s\n", o->json, strerror(errno));
		return -1;
	}
	velo_bench_commit(commit, sizeof(commit));
	strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
	fprintf(f, "{\n  \"tool\": \"velo-bench-codec\",\n  \"commit\": \"%s\",\n"
		"  \"date\": \"%s\",\n  \"machine\": ", commit, date);
	tool_json_str(f, tool_machine(), strlen(tool_machine()));
	fprintf(f, ",\n  \"settings\": {\"seconds\": %.3f, \"reps\": %u, "
		"\"core\": %d, \"batch\": %u, \"session_suite\": \"%s\", "
		"\"aes_available\": %s},\n  \"results\": [",
		o->seconds, o->reps, o->core, BATCH, chosen,
		(velo_auth_suites_local() & PROTO_LOGON_SUITE_AESGCM) ? "true" : "false");
	for (unsigned k = 0; k < K__COUNT; k++) {
		for (unsigned s = 0; s < S__COUNT; s++) {
			const struct figure *g = &fig[k][s];

			if (!g->valid)
				continue;
			fprintf(f, "%s\n    {\"datagram\": \"%s\", \"suite\": \"%s\", "
				"\"bytes\": %zu, \"rx_ns\": %.1f, \"rx_best_ns\": %.1f, "
				"\"rx_datagrams_per_s\": %.0f, \"seal_ns\": %.1f, "
				"\"memcpy_ns\": %.2f, \"rx_vs_memcpy\": %.1f}",
				first ? "" : ",", kind_name[k], suite_name[s],
				g->bytes, g->rx_ns, g->rx_best_ns, 1e9 / g->rx_ns, g->seal_ns,
				g->memcpy_ns, g->rx_ns / g->memcpy_ns);
			first = false;
		}
	}
	fprintf(f, "\n  ]\n}\n");
	return fclose(f) ? -1 : 0;
}

static void usage(FILE *f)
{
	fprintf(f,
"usage: velo-bench-codec [options]\n"
"  Receive-path cost per datagram (parse, replay window, tag, decode), one\n"
"  thread, per session suite, next to a memcpy of the same bytes.\n"
"      --seconds S   length of one run (default 0.3)\n"
"      --reps N      runs per figure, the median is reported (default 5, <= %d)\n"
"      --core C      pin to core C (default -1: unpinned)\n"
"      --json FILE   write the results as JSON\n"
"  -h, --help\n", REPS_MAX);
}

int main(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "seconds", required_argument, NULL, 's' },
		{ "reps", required_argument, NULL, 'r' },
		{ "core", required_argument, NULL, 'c' },
		{ "json", required_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct opts o = { .seconds = 0.3, .reps = 5, .core = -1 };
	struct velo_psk psk = { .key_id = 1 };
	uint8_t cn[PROTO_NONCE_LEN], sn[PROTO_NONCE_LEN];
	const char *chosen;
	int c;

	while ((c = getopt_long(argc, argv, "h", lopts, NULL)) != -1) {
		char *end;

		switch (c) {
		case 's':
			o.seconds = strtod(optarg, &end);
			if (*end || !(o.seconds > 0 && o.seconds <= 60)) {
				fprintf(stderr, "velo-bench-codec: --seconds in (0, 60]\n");
				return 2;
			}
			break;
		case 'r':
			o.reps = (unsigned)strtoul(optarg, &end, 10);
			if (*end || o.reps < 1 || o.reps > REPS_MAX) {
				fprintf(stderr, "velo-bench-codec: --reps in 1..%d\n", REPS_MAX);
				return 2;
			}
			break;
		case 'c':
			o.core = (int)strtol(optarg, &end, 10);
			if (*end) {
				usage(stderr);
				return 2;
			}
			break;
		case 'j':
			o.json = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	if (velo_auth_init()) {
		fprintf(stderr, "velo-bench-codec: libsodium init failed\n");
		return 1;
	}
	if (o.core >= 0 && cpu_pin_self(o.core)) {
		fprintf(stderr, "velo-bench-codec: cannot pin to core %d\n", o.core);
		return 1;
	}
	velo_random(psk.key, sizeof(psk.key));
	velo_random(cn, sizeof(cn));
	velo_random(sn, sizeof(sn));
	/* velod's choice: AES-256-GCM where the CPU runs it, else ChaCha20. */
	chosen = (velo_auth_suites_local() & PROTO_LOGON_SUITE_AESGCM)
			 ? suite_name[S_AES] : suite_name[S_CHACHA];

	printf("velo-bench-codec: %s\n", tool_machine());
	printf("one thread%s, %.2f s x %u runs per figure (median), batch %u; "
	       "velod's session suite here: %s\n",
	       o.core >= 0 ? " (pinned)" : "", o.seconds, o.reps, BATCH, chosen);
	printf("%-13s %-17s %6s %8s %8s %12s %8s %10s %8s\n", "datagram", "suite",
	       "bytes", "rx ns", "best", "rx dgram/s", "seal ns", "memcpy ns",
	       "x memcpy");
	for (unsigned k = 0; k < K__COUNT; k++) {
		for (unsigned s = 0; s < S__COUNT; s++) {
			struct velo_session_keys keys;
			const struct velo_dir_key *key = NULL;
			struct figure *g = &fig[k][s];

			if (s == S_AES && !(velo_auth_suites_local() &
					    PROTO_LOGON_SUITE_AESGCM))
				continue;
			if (s != S_NONE) {
				velo_auth_session_keys(&psk, cn, sn, 0x5eed,
					s == S_AES ? VELO_SUITE_AES256_GCM
						   : VELO_SUITE_CHACHA20_POLY1305,
					&keys);
				key = &keys.c2s;
			}
			if (build_batch((enum kind)k, key)) {
				fprintf(stderr, "velo-bench-codec: encode failed\n");
				return 1;
			}
			g->bytes = dlen[0];
			g->rx_ns = run_median(W_RX, key, &o, &g->rx_best_ns);
			g->seal_ns = key ? run_median(W_SEAL, key, &o, NULL) : 0;
			g->memcpy_ns = run_median(W_MEMCPY, NULL, &o, NULL);
			g->valid = true;
			printf("%-13s %-17s %6zu %8.1f %8.1f %12.0f %8.1f %10.2f %8.1f\n",
			       kind_name[k], suite_name[s], g->bytes, g->rx_ns,
			       g->rx_best_ns,
			       1e9 / g->rx_ns, g->seal_ns, g->memcpy_ns,
			       g->rx_ns / g->memcpy_ns);
		}
	}
	if (o.json && write_json(&o, chosen))
		return 1;
	return 0;
}
