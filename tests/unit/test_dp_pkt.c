// SPDX-License-Identifier: MIT
/*
 * test_dp_pkt.c — the kernel-bypass packet layer (dataplane/dpdk/pkt.h):
 * the Internet checksum against published references (RFC 1071's worked
 * example, a textbook IPv4 header), UDP frames built by one interface and
 * parsed by another (both checksums verified independently), ARP answers
 * and learning, ICMP echo replies, 802.1Q, and every malformed-frame class
 * dropped by exactly its own counter, each frame counted exactly once.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "../../dataplane/dpdk/pkt.h"

static const uint8_t mac_a[6] = { 0x02, 0, 0, 0, 0, 0x0a };
static const uint8_t mac_b[6] = { 0x02, 0, 0, 0, 0, 0x0b };
static uint32_t ip_a, ip_b;
static struct dp_pkt_if A, B;	/* A: the client side, B: velod */
static _Alignas(8) uint8_t f[2048];

static int setup(void **state)
{
	ip_a = inet_addr("10.1.0.1");
	ip_b = inet_addr("10.1.0.2");
	assert_int_equal(dp_pkt_if_init(&A, mac_a, ip_a, htons(40000), 0), 0);
	assert_int_equal(dp_pkt_if_init(&B, mac_b, ip_b, htons(7400), 0), 0);
	dp_pkt_neigh_learn(&A, ip_b, mac_b);
	return 0;
}

static struct dp_addr addr4(uint32_t ip, uint16_t port)
{
	struct dp_addr a;

	memset(&a, 0, sizeof(a));
	a.u.in4.sin_family = AF_INET;
	a.u.in4.sin_addr.s_addr = ip;
	a.u.in4.sin_port = htons(port);
	a.len = sizeof(a.u.in4);
	return a;
}

/* A good frame from A to B's port with @n payload bytes; returns length. */
static unsigned good_frame(unsigned n)
{
	struct dp_addr to = addr4(ip_b, 7400);
	int len;

	for (unsigned i = 0; i < n; i++)
		f[DP_PKT_HDR_LEN + i] = (uint8_t)(i * 7 + 1);
	len = dp_pkt_udp_build(&A, f, n, &to);
	assert_int_equal(len, DP_PKT_HDR_LEN + n);
	return (unsigned)len;
}

static void ip_csum_fix(uint8_t *ip)
{
	uint16_t s;

	ip[10] = ip[11] = 0;
	s = (uint16_t)~dp_pkt_csum_fold(dp_pkt_csum_add(0, ip, (ip[0] & 15u) * 4));
	ip[10] = (uint8_t)(s >> 8);
	ip[11] = (uint8_t)s;
}

static uint64_t outcomes(const struct dp_pkt_if *i)
{
	uint64_t s = i->ctr[DP_PKT_CTR_udp_rx] + i->ctr[DP_PKT_CTR_arp_reply_tx] +
		     i->ctr[DP_PKT_CTR_arp_learned_only] +
		     i->ctr[DP_PKT_CTR_icmp_echo_tx];

	for (unsigned c = DP_PKT_CTR_drop_runt; c < DP_PKT_CTR__COUNT; c++)
		s += i->ctr[c];
	return s;
}

static void test_csum_references(void **state)
{
	/* RFC 1071 section 3: the sum of these bytes is 0xddf2. */
	static const uint8_t rfc[] = { 0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7 };
	/* A textbook IPv4 header whose checksum field is 0xb861. */
	uint8_t hdr[] = { 0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11,
			  0xb8, 0x61, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7 };

	assert_int_equal(dp_pkt_csum_fold(dp_pkt_csum_add(0, rfc, sizeof(rfc))), 0xddf2);
	assert_int_equal(dp_pkt_csum_fold(dp_pkt_csum_add(0, hdr, sizeof(hdr))), 0xffff);
	hdr[10] = hdr[11] = 0;
	assert_int_equal((uint16_t)~dp_pkt_csum_fold(dp_pkt_csum_add(0, hdr, sizeof(hdr))),
			 0xb861);
	/* Odd length: the last byte is the high half of a word. */
	assert_int_equal(dp_pkt_csum_fold(dp_pkt_csum_add(0, rfc, 3)), 0xf201 + 0x0000 + 0);
}

static void test_udp_roundtrip(void **state)
{
	for (unsigned n = 0; n <= 1401; n += 467) {
		struct dp_pkt_rx_info info;
		unsigned len = good_frame(n);
		uint32_t s;

		/* Independent checks of what was built. */
		assert_memory_equal(f, mac_b, 6);
		assert_memory_equal(f + 6, mac_a, 6);
		assert_int_equal(dp_pkt_csum_fold(dp_pkt_csum_add(0, f + 14, 20)), 0xffff);
		s = dp_pkt_csum_add(0, f + 26, 8) + 17 + 8 + n;
		s = dp_pkt_csum_add(s, f + 34, 8 + n);
		assert_int_equal(dp_pkt_csum_fold(s), 0xffff);

		assert_int_equal(dp_pkt_rx(&B, f, len, &info), DP_PKT_UDP);
		assert_int_equal(info.payload_off, DP_PKT_HDR_LEN);
		assert_int_equal(info.payload_len, n);
		assert_int_equal(info.from.u.in4.sin_addr.s_addr, ip_a);
		assert_int_equal(ntohs(info.from.u.in4.sin_port), 40000);
		for (unsigned i = 0; i < n; i++)
			assert_int_equal(f[DP_PKT_HDR_LEN + i], (uint8_t)(i * 7 + 1));
	}
	/* B learned A's MAC from the datagrams: it can answer. */
	assert_memory_equal(dp_pkt_neigh_lookup(&B, ip_a), mac_a, 6);
	/* Ethernet padding after the IP packet is accepted; UDP checksum
	 * 0 means none. */
	{
		struct dp_pkt_rx_info info;
		unsigned len = good_frame(4);

		memset(f + len, 0, 60 - len);
		f[40] = f[41] = 0;
		assert_int_equal(dp_pkt_rx(&B, f, 60, &info), DP_PKT_UDP);
		assert_int_equal(info.payload_len, 4);
	}
	assert_int_equal(outcomes(&B), B.ctr[DP_PKT_CTR_rx_frames]);
}

static void test_no_neighbour(void **state)
{
	struct dp_pkt_if C;
	struct dp_addr to = addr4(inet_addr("10.1.0.9"), 7400);
	struct dp_addr six;

	assert_int_equal(dp_pkt_if_init(&C, mac_a, ip_a, htons(1), 0), 0);
	assert_int_equal(dp_pkt_udp_build(&C, f, 10, &to), -EHOSTUNREACH);
	assert_int_equal(C.ctr[DP_PKT_CTR_tx_no_neigh], 1);
	memset(&six, 0, sizeof(six));
	six.u.sa.sa_family = AF_INET6;
	assert_int_equal(dp_pkt_udp_build(&C, f, 10, &six), -EAFNOSUPPORT);
	/* Bad interface settings. */
	assert_int_equal(dp_pkt_if_init(&C, mac_a, 0, htons(1), 0), -EINVAL);
	assert_int_equal(dp_pkt_if_init(&C, mac_a, ip_a, 0, 0), -EINVAL);
	assert_int_equal(dp_pkt_if_init(&C, mac_a, ip_a, htons(1), 4095), -EINVAL);
	assert_int_equal(dp_pkt_if_init(&C, (const uint8_t[6]){ 1, 0, 0, 0, 0, 1 },
					ip_a, htons(1), 0), -EINVAL);
}

static unsigned arp_frame(uint16_t op, uint32_t spa, uint32_t tpa)
{
	memset(f, 0, 64);
	memset(f, 0xff, 6);
	memcpy(f + 6, mac_a, 6);
	f[12] = 0x08; f[13] = 0x06;
	f[14] = 0; f[15] = 1; f[16] = 0x08; f[17] = 0; f[18] = 6; f[19] = 4;
	f[20] = 0; f[21] = (uint8_t)op;
	memcpy(f + 22, mac_a, 6);
	memcpy(f + 28, &spa, 4);
	memcpy(f + 38, &tpa, 4);
	return 42;
}

static void test_arp(void **state)
{
	struct dp_pkt_if X;
	struct dp_pkt_rx_info info;
	uint32_t other = inet_addr("10.1.0.77");

	assert_int_equal(dp_pkt_if_init(&X, mac_b, ip_b, htons(7400), 0), 0);
	/* A request for us: answered in place, padded to 60, sender learned. */
	assert_int_equal(dp_pkt_rx(&X, f, arp_frame(1, ip_a, ip_b), &info), DP_PKT_REPLY);
	assert_int_equal(info.reply_len, 60);
	assert_memory_equal(f, mac_a, 6);		/* to the asker */
	assert_memory_equal(f + 6, mac_b, 6);
	assert_int_equal(f[21], 2);			/* reply */
	assert_memory_equal(f + 22, mac_b, 6);		/* sha: us */
	assert_memory_equal(f + 28, &ip_b, 4);		/* spa: our address */
	assert_memory_equal(f + 32, mac_a, 6);		/* tha */
	assert_memory_equal(f + 38, &ip_a, 4);		/* tpa */
	assert_memory_equal(dp_pkt_neigh_lookup(&X, ip_a), mac_a, 6);
	assert_int_equal(X.ctr[DP_PKT_CTR_arp_reply_tx], 1);
	/* A request for another address: dropped, not learned. */
	assert_int_equal(dp_pkt_rx(&X, f, arp_frame(1, other, ip_a), &info), DP_PKT_DROP);
	assert_int_equal(X.ctr[DP_PKT_CTR_drop_arp_other], 1);
	/* A reply to us: learned, nothing sent. */
	assert_null(dp_pkt_neigh_lookup(&X, other));
	assert_int_equal(dp_pkt_rx(&X, f, arp_frame(2, other, ip_b), &info), DP_PKT_DROP);
	assert_int_equal(X.ctr[DP_PKT_CTR_arp_learned_only], 1);
	assert_non_null(dp_pkt_neigh_lookup(&X, other));
	/* Malformed: short, wrong hardware type, unknown op. */
	assert_int_equal(dp_pkt_rx(&X, f, 30, &info), DP_PKT_DROP);
	arp_frame(1, ip_a, ip_b);
	f[15] = 6;
	assert_int_equal(dp_pkt_rx(&X, f, 42, &info), DP_PKT_DROP);
	assert_int_equal(dp_pkt_rx(&X, f, arp_frame(9, ip_a, ip_b), &info), DP_PKT_DROP);
	assert_int_equal(X.ctr[DP_PKT_CTR_drop_arp_bad], 3);
	assert_int_equal(outcomes(&X), X.ctr[DP_PKT_CTR_rx_frames]);
}

static void test_neigh_table_bounded(void **state)
{
	struct dp_pkt_if X;
	uint8_t m[6] = { 2, 0, 0, 0, 0, 0 };

	assert_int_equal(dp_pkt_if_init(&X, mac_b, ip_b, htons(7400), 0), 0);
	for (unsigned i = 0; i < 3 * DP_PKT_NEIGH_MAX; i++) {
		m[5] = (uint8_t)i;
		dp_pkt_neigh_learn(&X, htonl(0x0a020000u + i + 1), m);
	}
	/* The newest are there, the table never grew. */
	m[5] = (uint8_t)(3 * DP_PKT_NEIGH_MAX - 1);
	assert_memory_equal(dp_pkt_neigh_lookup(&X, htonl(0x0a020000u + 3 * DP_PKT_NEIGH_MAX)),
			    m, 6);
	assert_null(dp_pkt_neigh_lookup(&X, htonl(0x0a020001u)));
}

/*
 * The last-hit entry never answers for a peer that is no longer there:
 * random learns and lookups over 80 peers (more than the table holds, so
 * entries are replaced, the last hit among them) against a plain model of
 * the documented policy (refresh in place, else the first free entry, else
 * round robin), which scans every time.
 */
static void test_neigh_last_hit(void **state)
{
	struct { uint32_t ip; uint8_t mac[6]; } ref[DP_PKT_NEIGH_MAX];
	unsigned ref_next = 0, ref_learned = 0;
	uint64_t rnd = 0x9e3779b97f4a7c15ull;
	struct dp_pkt_if X;

	memset(ref, 0, sizeof(ref));
	assert_int_equal(dp_pkt_if_init(&X, mac_b, ip_b, htons(7400), 0), 0);
	for (unsigned it = 0; it < 20000; it++) {
		uint32_t ip, r;
		uint8_t m[6] = { 2, 0, 0, 0, 0, 0 };
		const uint8_t *got, *want = NULL;
		unsigned k;

		rnd ^= rnd << 13, rnd ^= rnd >> 7, rnd ^= rnd << 17;
		r = (uint32_t)(rnd >> 32);
		ip = htonl(0x0a030000u + 1 + r % 80);
		m[5] = (uint8_t)(r >> 8) & 3;	/* MACs change now and then */
		for (k = 0; k < DP_PKT_NEIGH_MAX && ref[k].ip != ip; k++)
			;
		if ((r >> 16) & 1) {
			dp_pkt_neigh_learn(&X, ip, m);
			if (k == DP_PKT_NEIGH_MAX) {
				for (k = 0; k < DP_PKT_NEIGH_MAX && ref[k].ip; k++)
					;
				if (k == DP_PKT_NEIGH_MAX) {
					k = ref_next;
					ref_next = (ref_next + 1) % DP_PKT_NEIGH_MAX;
				}
				ref[k].ip = ip;
				ref_learned++;
			} else if (memcmp(ref[k].mac, m, 6)) {
				ref_learned++;
			}
			memcpy(ref[k].mac, m, 6);
		}
		if (k < DP_PKT_NEIGH_MAX && ref[k].ip == ip)
			want = ref[k].mac;
		got = dp_pkt_neigh_lookup(&X, ip);
		if (!want)
			assert_null(got);
		else
			assert_memory_equal(got, want, 6);
	}
	assert_int_equal(X.ctr[DP_PKT_CTR_neigh_learned], ref_learned);
}

static void test_icmp_echo(void **state)
{
	struct dp_pkt_rx_info info;
	uint8_t *ip = f + 14, *ic = f + 34;
	unsigned len = good_frame(40);	/* reuse the headers, then make ICMP */
	uint16_t s;

	ip[9] = 1;
	ic[0] = 8; ic[1] = 0; ic[2] = ic[3] = 0;
	ic[4] = 0x12; ic[5] = 0x34; ic[6] = 0; ic[7] = 1;
	s = (uint16_t)~dp_pkt_csum_fold(dp_pkt_csum_add(0, ic, 48));
	ic[2] = (uint8_t)(s >> 8); ic[3] = (uint8_t)s;
	ip_csum_fix(ip);
	assert_int_equal(dp_pkt_rx(&B, f, len, &info), DP_PKT_REPLY);
	assert_int_equal(info.reply_len, len);
	assert_int_equal(ic[0], 0);
	assert_int_equal(dp_pkt_csum_fold(dp_pkt_csum_add(0, ic, 48)), 0xffff);
	assert_int_equal(dp_pkt_csum_fold(dp_pkt_csum_add(0, ip, 20)), 0xffff);
	assert_memory_equal(ip + 12, &ip_b, 4);
	assert_memory_equal(ip + 16, &ip_a, 4);
	assert_memory_equal(f, mac_a, 6);
	assert_memory_equal(f + 6, mac_b, 6);
	assert_int_equal(B.ctr[DP_PKT_CTR_icmp_echo_tx], 1);
}

static void test_vlan(void **state)
{
	struct dp_pkt_if V, W;
	struct dp_pkt_rx_info info;
	struct dp_addr to = addr4(ip_b, 7400);
	int len;

	assert_int_equal(dp_pkt_if_init(&V, mac_a, ip_a, htons(40000), 5), 0);
	assert_int_equal(dp_pkt_if_init(&W, mac_b, ip_b, htons(7400), 5), 0);
	dp_pkt_neigh_learn(&V, ip_b, mac_b);
	assert_int_equal(dp_pkt_hdr_len(&V), DP_PKT_HDR_LEN_MAX);
	memset(f + DP_PKT_HDR_LEN_MAX, 0x5a, 100);
	len = dp_pkt_udp_build(&V, f, 100, &to);
	assert_int_equal(len, DP_PKT_HDR_LEN_MAX + 100);
	assert_int_equal(f[12], 0x81);
	assert_int_equal(f[15], 5);
	assert_int_equal(dp_pkt_rx(&W, f, (unsigned)len, &info), DP_PKT_UDP);
	assert_int_equal(info.payload_off, DP_PKT_HDR_LEN_MAX);
	/* Another VLAN, and untagged frames on a tagged interface. */
	f[15] = 6;
	assert_int_equal(dp_pkt_rx(&W, f, (unsigned)len, &info), DP_PKT_DROP);
	assert_int_equal(dp_pkt_rx(&W, f, good_frame(10), &info), DP_PKT_DROP);
	assert_int_equal(W.ctr[DP_PKT_CTR_drop_vlan], 2);
}

/* Each malformed class: mutate a good frame, expect its own counter. */
static void test_malformed(void **state)
{
	struct dp_pkt_if X;
	struct dp_pkt_rx_info info;
	uint8_t *ip = f + 14, *udp = f + 34;
	unsigned len;

#define EXPECT_DROP(name, flen)                                               \
	do {                                                                  \
		uint64_t before_ = X.ctr[DP_PKT_CTR_##name];                  \
		assert_int_equal(dp_pkt_rx(&X, f, (flen), &info), DP_PKT_DROP); \
		assert_int_equal(X.ctr[DP_PKT_CTR_##name], before_ + 1);      \
	} while (0)

	assert_int_equal(dp_pkt_if_init(&X, mac_b, ip_b, htons(7400), 0), 0);
	len = good_frame(32);
	EXPECT_DROP(drop_runt, 13);
	f[0] ^= 1; f[5] ^= 0x10;
	EXPECT_DROP(drop_not_for_us, len);		/* multicast dst */
	len = good_frame(32); f[5] ^= 0x10;
	EXPECT_DROP(drop_not_for_us, len);		/* another unicast */
	len = good_frame(32); f[12] = 0x86; f[13] = 0xdd;
	EXPECT_DROP(drop_ethertype, len);
	len = good_frame(32); f[12] = 0x88; f[13] = 0xa8;
	EXPECT_DROP(drop_vlan, len);			/* QinQ */
	len = good_frame(32); f[12] = 0x81; f[13] = 0;
	EXPECT_DROP(drop_vlan, len);			/* tagged, we are not */
	len = good_frame(32);
	EXPECT_DROP(drop_ip_short, 14 + 19);
	len = good_frame(32); ip[0] = 0x65;
	EXPECT_DROP(drop_ip_version, len);
	len = good_frame(32); ip[0] = 0x44;
	EXPECT_DROP(drop_ip_hdr_len, len);
	len = good_frame(32); ip[0] = 0x4f;
	EXPECT_DROP(drop_ip_hdr_len, 14 + 40);		/* 60 > what is there */
	len = good_frame(32); ip[11] ^= 1;
	EXPECT_DROP(drop_ip_csum, len);
	len = good_frame(32); ip[3] += 1; ip_csum_fix(ip);
	EXPECT_DROP(drop_ip_len, len);			/* longer than the frame */
	len = good_frame(32); ip[2] = 0; ip[3] = 10; ip_csum_fix(ip);
	EXPECT_DROP(drop_ip_len, len);			/* shorter than the header */
	len = good_frame(32); ip[6] |= 0x20; ip_csum_fix(ip);
	EXPECT_DROP(drop_ip_frag, len);			/* more fragments */
	len = good_frame(32); ip[7] = 3; ip_csum_fix(ip);
	EXPECT_DROP(drop_ip_frag, len);			/* an offset */
	len = good_frame(32); ip[19] ^= 1; ip_csum_fix(ip);
	EXPECT_DROP(drop_ip_not_us, len);
	len = good_frame(32); memset(ip + 12, 0xff, 4); ip_csum_fix(ip);
	EXPECT_DROP(drop_ip_src, len);			/* broadcast source */
	len = good_frame(32); memcpy(ip + 12, &ip_b, 4); ip_csum_fix(ip);
	EXPECT_DROP(drop_ip_src, len);			/* our own address */
	len = good_frame(32); ip[9] = 6; ip_csum_fix(ip);
	EXPECT_DROP(drop_ip_proto, len);
	len = good_frame(32); ip[9] = 1; ip_csum_fix(ip);
	EXPECT_DROP(drop_icmp_bad, len);		/* checksum wrong */
	len = good_frame(32); ip[2] = 0; ip[3] = 24; ip_csum_fix(ip);
	EXPECT_DROP(drop_udp_short, len);
	len = good_frame(32); udp[5] += 1;
	EXPECT_DROP(drop_udp_len, len);
	len = good_frame(32); udp[4] = 0; udp[5] = 4;
	EXPECT_DROP(drop_udp_len, len);
	len = good_frame(32); f[len - 1] ^= 0x40;
	EXPECT_DROP(drop_udp_csum, len);
	len = good_frame(32); udp[3] ^= 1;
	EXPECT_DROP(drop_udp_port, len);
	/* Nothing else moved: every frame counted once, none passed. */
	assert_int_equal(X.ctr[DP_PKT_CTR_udp_rx], 0);
	assert_int_equal(outcomes(&X), X.ctr[DP_PKT_CTR_rx_frames]);
	/* And the good frame still passes. */
	len = good_frame(32);
	assert_int_equal(dp_pkt_rx(&X, f, len, &info), DP_PKT_UDP);
#undef EXPECT_DROP
}

/* Deterministic garbage: never a crash, always exactly one outcome. */
static void test_garbage(void **state)
{
	struct dp_pkt_if X;
	struct dp_pkt_rx_info info;
	uint64_t x = 88172645463325252ull;

	assert_int_equal(dp_pkt_if_init(&X, mac_b, ip_b, htons(7400), 0), 0);
	for (unsigned round = 0; round < 20000; round++) {
		unsigned len = good_frame(64), n;

		x ^= x << 13; x ^= x >> 7; x ^= x << 17;
		n = 1 + (unsigned)(x % 4);
		for (unsigned k = 0; k < n; k++) {
			x ^= x << 13; x ^= x >> 7; x ^= x << 17;
			f[12 + x % 40] ^= (uint8_t)(x >> 32);
		}
		x ^= x << 13; x ^= x >> 7; x ^= x << 17;
		dp_pkt_rx(&X, f, (unsigned)(x % (len + 1)), &info);
	}
	assert_int_equal(X.ctr[DP_PKT_CTR_rx_frames], 20000);
	assert_int_equal(outcomes(&X), 20000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_csum_references),
		cmocka_unit_test_setup(test_udp_roundtrip, setup),
		cmocka_unit_test(test_no_neighbour),
		cmocka_unit_test(test_arp),
		cmocka_unit_test(test_neigh_table_bounded),
		cmocka_unit_test(test_neigh_last_hit),
		cmocka_unit_test_setup(test_icmp_echo, setup),
		cmocka_unit_test_setup(test_vlan, setup),
		cmocka_unit_test_setup(test_malformed, setup),
		cmocka_unit_test_setup(test_garbage, setup),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
