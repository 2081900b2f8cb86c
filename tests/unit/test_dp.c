// SPDX-License-Identifier: MIT
/*
 * test_dp.c — the dataplane loop on a real UDP socket on loopback
 * (dataplane/dp.h, sock.h): address parsing, a logon, TEST_REQUEST and
 * INFER round trips through the socket and the scheduler, recvmmsg bursts,
 * truncated datagrams, and the loss injector in the real tx and rx paths
 * (an exact pattern drops the first LOGON_ACK; the retry gets through).
 */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/socket.h>

#include <cmocka.h>

#include <velo/auth.h>
#include <velo/codec.h>
#include <velo/compiler.h>

#include "../../dataplane/dp.h"
#include "../../engine/sched.h"
#include "../../tools/lib/clock.h"

static struct velo_psk psk = { .key_id = 11 };
static struct dp_rings rings;
static struct eng_sched sched;
static struct dp dp;
static int cfd = -1;

static void test_addr_parse(void **state)
{
	struct dp_addr a, b;
	char buf[80];

	(void)state;
	assert_int_equal(dp_addr_parse("127.0.0.1:8080", 1, &a), 0);
	assert_int_equal(a.u.sa.sa_family, AF_INET);
	assert_string_equal(dp_addr_format(&a, buf, sizeof(buf)), "127.0.0.1:8080");
	assert_int_equal(dp_addr_parse("127.0.0.1", 7400, &b), 0);
	assert_string_equal(dp_addr_format(&b, buf, sizeof(buf)), "127.0.0.1:7400");
	assert_false(dp_addr_eq(&a, &b));
	assert_int_equal(dp_addr_parse("[::1]:5", 1, &a), 0);
	assert_int_equal(a.u.sa.sa_family, AF_INET6);
	assert_string_equal(dp_addr_format(&a, buf, sizeof(buf)), "[::1]:5");
	assert_int_equal(dp_addr_parse("::1", 9, &b), 0);
	assert_string_equal(dp_addr_format(&b, buf, sizeof(buf)), "[::1]:9");
	assert_true(dp_addr_hash(&a) != dp_addr_hash(&b));
	assert_int_equal(dp_addr_parse("1.2.3.4:99999", 1, &a), -EINVAL);
	assert_int_equal(dp_addr_parse("1.2.3.4:x", 1, &a), -EINVAL);
	assert_int_equal(dp_addr_parse("[::1", 1, &a), -EINVAL);
	assert_int_equal(dp_addr_parse("[::1]x", 1, &a), -EINVAL);
}

/* ------------------------------------------------------------------------
 * A loopback client.
 */

struct cli {
	struct velo_session_keys lk, sk;
	uint8_t cnonce[PROTO_NONCE_LEN];
	uint64_t sid, pkt;
};

static _Alignas(8) uint8_t buf[2048];

static void start(const char **patterns, unsigned n_patterns)
{
	struct dp_config c;
	struct dp_rings_config rc = { .slots = 8, .prompt_tokens_max = 64,
				      .text_bytes_max = 1024, .resp_entries = 16 };
	struct eng_sched_config ec;
	struct sockaddr_in any = { .sin_family = AF_INET,
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };

	for (unsigned i = 0; i < VELO_KEY_LEN; i++)
		psk.key[i] = (uint8_t)(i * 5 + 2);
	assert_int_equal(velo_auth_init(), 0);
	dp_config_default(&c);
	c.sock.listen = "127.0.0.1:0";
	c.sess.sessions_max = 4;
	c.sess.replay_depth = 8;
	c.sess.limits.prompt_tokens_max = 64;
	c.sess.limits.text_bytes_max = 1024;
	c.sess.dedup_ids = 32;
	c.sess.frag_buffers = 2;
	c.sess.frag_bytes = 4096;
	c.loss.seed = 5;
	for (unsigned i = 0; i < n_patterns; i++)
		c.loss.patterns[i] = patterns[i];
	c.loss.n_patterns = n_patterns;
	assert_int_equal(dp_rings_init(&rings, &rc), 0);
	eng_sched_config_default(&ec);
	assert_int_equal(eng_sched_init(&sched, &ec, &rings, false), 0);
	assert_int_equal(dp_init(&dp, &c, &psk, 1, &rings), 0);
	assert_int_equal(dp.loss_on, n_patterns > 0);
	cfd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(cfd >= 0);
	assert_int_equal(bind(cfd, (struct sockaddr *)&any, sizeof(any)), 0);
	assert_int_equal(connect(cfd, &dp.sock.local.u.sa, dp.sock.local.len), 0);
}

static int teardown(void **state)
{
	(void)state;
	if (cfd >= 0)
		close(cfd);
	cfd = -1;
	dp_fini(&dp);
	eng_sched_fini(&sched);
	dp_rings_fini(&rings);
	return 0;
}

/* Run the loop (and the scheduler) until the client has a datagram or
 * @ms pass.  Returns its length, 0 on timeout. */
static size_t pump(unsigned ms)
{
	uint64_t end = clock_mono_ns() + (uint64_t)ms * 1000000;

	do {
		struct pollfd p = { .fd = cfd, .events = POLLIN };
		ssize_t n;

		dp_poll(&dp);
		eng_sched_poll(&sched);
		dp_poll(&dp);
		if (poll(&p, 1, 1) == 1) {
			n = recv(cfd, buf, sizeof(buf), 0);
			assert_true(n > 0);
			return (size_t)n;
		}
	} while (clock_mono_ns() < end);
	return 0;
}

static void send_logon(struct cli *c)
{
	struct proto_pkt_hdr h = { .magic = PROTO_MAGIC, .version = PROTO_VERSION,
				   .flags = PROTO_F_CTRL, .pkt_num = 1 };
	struct proto_enc e;
	struct proto_logon *l;
	int len;

	velo_auth_logon_keys(&psk, &c->lk);
	velo_random(c->cnonce, sizeof(c->cnonce));
	proto_enc_init(&e, buf, sizeof(buf), &h);
	l = proto_enc_msg_begin(&e, PROTO_T_LOGON, sizeof(*l));
	l->key_id = psk.key_id;
	l->timestamp_ns = clock_real_ns();
	memcpy(l->client_nonce, c->cnonce, PROTO_NONCE_LEN);
	l->flags = PROTO_LOGON_SUITE_CHACHA;
	proto_enc_var(&e, "test_dp", 7);
	proto_enc_msg_end(&e);
	len = proto_enc_finish(&e, PROTO_TAG_LEN);
	assert_true(len > 0);
	assert_int_equal(velo_auth_seal(&c->lk.c2s, buf, (size_t)len, c->cnonce), 0);
	assert_int_equal(send(cfd, buf, (size_t)len, 0), len);
}

/* The LOGON_ACK in buf: verify, derive the session keys. */
static void take_ack(struct cli *c, size_t n)
{
	struct proto_pkt_view v;
	struct proto_msg_iter it;
	struct proto_msg m;
	struct proto_logon_ack ack;

	assert_int_equal(proto_pkt_parse(buf, n, PROTO_MTU_MAX, &v), 0);
	proto_msg_iter_init(&it, &v);
	assert_int_equal(proto_msg_next(&it, &m), 1);
	assert_int_equal(m.template_id, PROTO_T_LOGON_ACK);
	assert_int_equal(proto_block_get(&m, &ack, sizeof(ack), sizeof(ack)), 0);
	assert_int_equal(velo_auth_open(&c->lk.s2c, buf, n, ack.server_nonce), 0);
	assert_int_equal(ack.suite, VELO_SUITE_CHACHA20_POLY1305);
	/* the dedup window configured below (c.sess.dedup_ids) */
	assert_int_equal(ack.dedup_ids, 32);
	assert_int_equal(ack.reserved, 0);
	c->sid = ack.session_id;
	c->pkt = 1;
	velo_auth_session_keys(&psk, c->cnonce, ack.server_nonce, c->sid,
			       VELO_SUITE_CHACHA20_POLY1305, &c->sk);
}

static void send_block(struct cli *c, bool ctrl, unsigned tid, const void *blk,
		       unsigned blen)
{
	_Alignas(8) uint8_t b[256];
	struct proto_pkt_hdr h = { .magic = PROTO_MAGIC, .version = PROTO_VERSION,
				   .flags = ctrl ? PROTO_F_CTRL : 0,
				   .session_id = c->sid, .seq = 1, .ack = 1,
				   .pkt_num = c->pkt++ };
	struct proto_enc e;
	void *p;
	int len;

	proto_enc_init(&e, b, sizeof(b), &h);
	p = proto_enc_msg_begin(&e, tid, blen);
	memcpy(p, blk, blen);
	proto_enc_msg_end(&e);
	len = proto_enc_finish(&e, PROTO_TAG_LEN);
	assert_true(len > 0);
	assert_int_equal(velo_auth_seal(&c->sk.c2s, b, (size_t)len, NULL), 0);
	assert_int_equal(send(cfd, b, (size_t)len, 0), len);
}

static unsigned first_template(size_t n, struct cli *c)
{
	struct proto_pkt_view v;
	struct proto_msg_iter it;
	struct proto_msg m;

	assert_int_equal(velo_auth_open(&c->sk.s2c, buf, n, NULL), 0);
	assert_int_equal(proto_pkt_parse(buf, n, PROTO_MTU_MAX, &v), 0);
	proto_msg_iter_init(&it, &v);
	if (proto_msg_next(&it, &m) != 1)
		return 0;
	return m.template_id;
}

static void test_loopback(void **state)
{
	struct cli c;
	size_t n;

	(void)state;
	start(NULL, 0);
	send_logon(&c);
	n = pump(1000);
	assert_true(n > 0);
	take_ack(&c, n);
	assert_int_equal(dp.sess.ctr[SESS_CTR_logon_ok], 1);

	send_block(&c, true, PROTO_T_TEST_REQUEST,
		   &(struct proto_test_request){ 42, 1 },
		   sizeof(struct proto_test_request));
	n = pump(1000);
	assert_int_equal(first_template(n, &c), PROTO_T_TEST_RESPONSE);

	/* An INFER crosses the rings and comes back REJECT NOT_READY. */
	{
		_Alignas(8) uint8_t b[512];
		struct proto_pkt_hdr h = { .magic = PROTO_MAGIC,
					   .version = PROTO_VERSION,
					   .session_id = c.sid, .seq = 1,
					   .ack = 1, .pkt_num = c.pkt++ };
		struct proto_infer_req r;
		struct proto_enc e;
		int len;

		memset(&r, 0, sizeof(r));
		r.f.request_id = 1;
		r.f.max_tokens = 4;
		r.f.flags = PROTO_INFER_PROMPT_TEXT;
		r.prompt_text = "hi";
		r.prompt_text_len = 2;
		proto_enc_init(&e, b, sizeof(b), &h);
		assert_int_equal(proto_enc_infer(&e, &r), 0);
		len = proto_enc_finish(&e, PROTO_TAG_LEN);
		assert_int_equal(velo_auth_seal(&c.sk.c2s, b, (size_t)len, NULL), 0);
		assert_int_equal(send(cfd, b, (size_t)len, 0), len);
	}
	n = pump(1000);
	assert_int_equal(first_template(n, &c), PROTO_T_REJECT);
	assert_int_equal(sched.ctr[ENG_SCHED_CTR_reject_not_ready], 1);

	/* A burst of 40 TEST_REQUESTs: two recvmmsg batches at least, each
	 * answered. */
	for (int i = 0; i < 40; i++)
		send_block(&c, true, PROTO_T_TEST_REQUEST,
			   &(struct proto_test_request){ (uint64_t)i, 1 },
			   sizeof(struct proto_test_request));
	for (int i = 0; i < 40; i++)
		assert_true(pump(1000) > 0);
	assert_int_equal(dp.sess.ctr[SESS_CTR_test_requests], 41);
	assert_true(dp.sess.dp_ctr[DP_CTR_rx_bursts] >= 4);

	/* Longer than any buffer: truncated by the kernel, counted oversize. */
	{
		static uint8_t big[3000];
		uint64_t over = dp.sess.dp_ctr[DP_CTR_drop_oversize];

		assert_int_equal(send(cfd, big, sizeof(big), 0), (ssize_t)sizeof(big));
		assert_int_equal(pump(50), 0);
		assert_int_equal(dp.sess.dp_ctr[DP_CTR_drop_oversize], over + 1);
	}
	/* Counters add up: every datagram received is accounted for. */
	assert_int_equal(dp.sess.dp_ctr[DP_CTR_rx_datagrams], 1 + 1 + 1 + 40 + 1);
	assert_int_equal(dp.sess.dp_ctr[DP_CTR_tx_datagrams], 1 + 1 + 1 + 40);
	assert_int_equal(dp.loss.ctr[DP_LOSS_CTR_loss_tx_ctrl], 0);
}

static void test_loss_patterns(void **state)
{
	const char *pats[] = { "tx ctrl nth 1", "rx ctrl nth 3" };
	struct cli c;
	size_t n;

	(void)state;
	start(pats, 2);
	/* The first LOGON_ACK is lost on tx. */
	send_logon(&c);
	assert_int_equal(pump(100), 0);
	assert_int_equal(dp.loss.ctr[DP_LOSS_CTR_loss_tx_ctrl], 1);
	assert_int_equal(dp.sess.ctr[SESS_CTR_logon_ok], 1);
	/* A new logon (new nonce) goes through. */
	send_logon(&c);
	n = pump(1000);
	assert_true(n > 0);
	take_ack(&c, n);
	/* The third control datagram received (this TEST_REQUEST) is lost
	 * on rx before the session layer sees it. */
	send_block(&c, true, PROTO_T_TEST_REQUEST,
		   &(struct proto_test_request){ 1, 1 },
		   sizeof(struct proto_test_request));
	assert_int_equal(pump(100), 0);
	assert_int_equal(dp.loss.ctr[DP_LOSS_CTR_loss_rx_ctrl], 1);
	assert_int_equal(dp.sess.dp_ctr[DP_CTR_rx_datagrams], 2);
	send_block(&c, true, PROTO_T_TEST_REQUEST,
		   &(struct proto_test_request){ 2, 1 },
		   sizeof(struct proto_test_request));
	n = pump(1000);
	assert_int_equal(first_template(n, &c), PROTO_T_TEST_RESPONSE);
	assert_int_equal(dp.loss.ctr[DP_LOSS_CTR_loss_pattern], 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_addr_parse),
		cmocka_unit_test_teardown(test_loopback, teardown),
		cmocka_unit_test_teardown(test_loss_patterns, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
