// SPDX-License-Identifier: MIT
/*
 * test_auth.c — keys, datagram tags, replay window and key files
 * (velo/auth.h).  Key derivation and tags are checked against libsodium
 * called directly with the layouts docs/protocol.md specifies, and the
 * replay window against a naive model that remembers every packet number.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>

#include <velo/auth.h>
#include <velo/codec.h>
#include <velo/compiler.h>

#include "testutil.h"

static _Alignas(8) uint8_t dg[256];

static struct velo_psk psk_make(uint32_t id, uint8_t fill)
{
	struct velo_psk p;

	p.key_id = id;
	for (unsigned i = 0; i < VELO_KEY_LEN; i++)
		p.key[i] = (uint8_t)(fill + 7 * i);
	return p;
}

/* A 128-byte session datagram: header, one REJECT, tag room. */
static size_t dgram_make(uint8_t *b, uint8_t flags, uint64_t pn)
{
	struct proto_pkt_hdr h;
	struct proto_enc e;
	struct proto_reject *r;
	int len;

	memset(&h, 0, sizeof(h));
	h.magic = PROTO_MAGIC;
	h.version = PROTO_VERSION;
	h.flags = flags;
	h.session_id = 0xabcdef0123456789ull;
	h.seq = 10;
	h.ack = 3;
	h.pkt_num = pn;
	proto_enc_init(&e, b, 256, &h);
	r = proto_enc_msg_begin(&e, PROTO_T_REJECT, sizeof(*r));
	r->request_id = 77;
	r->code = PROTO_E_NOT_READY;
	proto_enc_var(&e, "no model loaded, sorry!!!!!!!!!!!!", 34);
	proto_enc_msg_end(&e);
	len = proto_enc_finish(&e, PROTO_TAG_LEN);
	assert_int_equal(len, 128);
	return (size_t)len;
}

static int setup(void **state)
{
	(void)state;
	return velo_auth_init();
}

static void test_suites(void **state)
{
	unsigned s = velo_auth_suites_local();

	(void)state;
	assert_true(s & PROTO_LOGON_SUITE_CHACHA);
	assert_int_equal(!!(s & PROTO_LOGON_SUITE_AESGCM),
			 !!crypto_aead_aes256gcm_is_available());
	assert_int_equal(velo_auth_init(), 0);	/* idempotent */
}

/* Reference KDF, written from docs/protocol.md: BLAKE2b-256 keyed with the
 * PSK over label (32 bytes, NUL padded) | key_id u32 | context. */
static void ref_kdf(const struct velo_psk *p, const char *label,
		    const uint8_t *ctx, size_t n, uint8_t out[32])
{
	uint8_t in[32 + 4 + 64];

	memset(in, 0, 32);
	memcpy(in, label, strlen(label));
	memcpy(in + 32, &p->key_id, 4);
	memcpy(in + 36, ctx, n);
	crypto_generichash(out, 32, in, 36 + n, p->key, 32);
}

static void test_kdf_reference(void **state)
{
	struct velo_psk p = psk_make(0x01020304, 9);
	struct velo_session_keys lk, sk;
	uint8_t cn[PROTO_NONCE_LEN], sn[PROTO_NONCE_LEN], ctx[44], want[32];
	uint64_t sid = 0x1122334455667788ull;
	uint32_t suite = VELO_SUITE_CHACHA20_POLY1305;

	(void)state;
	for (unsigned i = 0; i < PROTO_NONCE_LEN; i++)
		cn[i] = (uint8_t)i, sn[i] = (uint8_t)(0xf0 ^ i);
	velo_auth_logon_keys(&p, &lk);
	ref_kdf(&p, "velo-v1 logon c2s", NULL, 0, want);
	assert_memory_equal(lk.c2s.key, want, 32);
	ref_kdf(&p, "velo-v1 logon s2c", NULL, 0, want);
	assert_memory_equal(lk.s2c.key, want, 32);
	assert_int_equal(lk.c2s.suite, 0);

	velo_auth_session_keys(&p, cn, sn, sid, VELO_SUITE_CHACHA20_POLY1305, &sk);
	memcpy(ctx, &suite, 4);
	memcpy(ctx + 4, &sid, 8);
	memcpy(ctx + 12, cn, 16);
	memcpy(ctx + 28, sn, 16);
	ref_kdf(&p, "velo-v1 session c2s", ctx, sizeof(ctx), want);
	assert_memory_equal(sk.c2s.key, want, 32);
	ref_kdf(&p, "velo-v1 session s2c", ctx, sizeof(ctx), want);
	assert_memory_equal(sk.s2c.key, want, 32);
	assert_int_equal(sk.c2s.suite, VELO_SUITE_CHACHA20_POLY1305);
}

/* Every key differs from every other: directions, logon vs session, and
 * any change of PSK, key id, nonce, session id or suite. */
static void test_keys_distinct(void **state)
{
	struct velo_psk p = psk_make(5, 1), p2;
	uint8_t cn[PROTO_NONCE_LEN] = { 1 }, sn[PROTO_NONCE_LEN] = { 2 };
	struct velo_session_keys k[8];
	const uint8_t *all[16];
	unsigned n = 0;

	(void)state;
	velo_auth_logon_keys(&p, &k[0]);
	velo_auth_session_keys(&p, cn, sn, 1, VELO_SUITE_CHACHA20_POLY1305, &k[1]);
	velo_auth_session_keys(&p, cn, sn, 2, VELO_SUITE_CHACHA20_POLY1305, &k[2]);
	velo_auth_session_keys(&p, cn, sn, 1, VELO_SUITE_AES256_GCM, &k[3]);
	velo_auth_session_keys(&p, sn, cn, 1, VELO_SUITE_CHACHA20_POLY1305, &k[4]);
	p2 = p;
	p2.key_id = 6;
	velo_auth_session_keys(&p2, cn, sn, 1, VELO_SUITE_CHACHA20_POLY1305, &k[5]);
	p2 = p;
	p2.key[31] ^= 1;
	velo_auth_session_keys(&p2, cn, sn, 1, VELO_SUITE_CHACHA20_POLY1305, &k[6]);
	velo_auth_logon_keys(&p2, &k[7]);
	for (unsigned i = 0; i < 8; i++) {
		all[n++] = k[i].c2s.key;
		all[n++] = k[i].s2c.key;
	}
	for (unsigned i = 0; i < n; i++)
		for (unsigned j = 0; j < i; j++)
			assert_memory_not_equal(all[i], all[j], VELO_KEY_LEN);
	/* Deterministic: client and server derive the same keys. */
	velo_auth_session_keys(&p, cn, sn, 1, VELO_SUITE_CHACHA20_POLY1305, &k[7]);
	assert_memory_equal(k[7].c2s.key, k[1].c2s.key, VELO_KEY_LEN);
	assert_memory_equal(k[7].s2c.key, k[1].s2c.key, VELO_KEY_LEN);
}

/* The tag equals libsodium's AEAD over the datagram with the documented
 * nonce, computed here independently. */
static void test_tag_reference(void **state)
{
	struct velo_psk p = psk_make(1, 3);
	uint8_t cn[PROTO_NONCE_LEN] = { 9, 8, 7 }, sn[PROTO_NONCE_LEN] = { 1 };
	struct velo_session_keys lk, sk;
	uint8_t n12[12], n24[24], want[16], c0[1];
	unsigned long long tl;
	uint64_t pn = 0x0102030405060708ull;
	uint32_t dir = 1;
	size_t len;

	(void)state;
	/* session, ChaCha20-Poly1305, server to client */
	velo_auth_session_keys(&p, cn, sn, 99, VELO_SUITE_CHACHA20_POLY1305, &sk);
	len = dgram_make(dg, PROTO_F_S2C | PROTO_F_AUTH, pn);
	assert_int_equal(velo_auth_seal(&sk.s2c, dg, len, NULL), 0);
	memcpy(n12, &dir, 4);
	memcpy(n12 + 4, &pn, 8);
	crypto_aead_chacha20poly1305_ietf_encrypt_detached(
		c0, want, &tl, NULL, 0, dg, len - 16, NULL, n12, sk.s2c.key);
	assert_memory_equal(dg + len - 16, want, 16);

	/* session, AES-256-GCM, client to server */
	if (crypto_aead_aes256gcm_is_available()) {
		velo_auth_session_keys(&p, cn, sn, 99, VELO_SUITE_AES256_GCM, &sk);
		len = dgram_make(dg, PROTO_F_AUTH, pn);
		assert_int_equal(velo_auth_seal(&sk.c2s, dg, len, NULL), 0);
		dir = 0;
		memcpy(n12, &dir, 4);
		crypto_aead_aes256gcm_encrypt_detached(
			c0, want, &tl, NULL, 0, dg, len - 16, NULL, n12,
			sk.c2s.key);
		assert_memory_equal(dg + len - 16, want, 16);
	}

	/* logon, XChaCha20-Poly1305: nonce = logon nonce | pkt_num */
	velo_auth_logon_keys(&p, &lk);
	len = dgram_make(dg, PROTO_F_AUTH | PROTO_F_CTRL, pn);
	assert_int_equal(velo_auth_seal(&lk.c2s, dg, len, cn), 0);
	memcpy(n24, cn, 16);
	memcpy(n24 + 16, &pn, 8);
	crypto_aead_xchacha20poly1305_ietf_encrypt_detached(
		c0, want, &tl, NULL, 0, dg, len - 16, NULL, n24, lk.c2s.key);
	assert_memory_equal(dg + len - 16, want, 16);
}

/* docs/protocol.md §9: the test vectors and the worked datagram, byte for
 * byte, so that the spec and the implementation can not drift apart. */
static void test_worked_example(void **state)
{
	static const uint8_t logon_c2s[32] = {
		0x16, 0x0b, 0x9e, 0xfe, 0x6c, 0x07, 0xe4, 0xf6, 0xea, 0xee, 0x4e,
		0xf6, 0x3b, 0x1d, 0x3c, 0x8b, 0x4f, 0xca, 0x5d, 0x6f, 0xda, 0xcc,
		0x14, 0xf7, 0x9e, 0xe4, 0xa4, 0xae, 0x3a, 0x56, 0xf0, 0x87 };
	static const uint8_t logon_s2c[32] = {
		0xc7, 0xd9, 0xd7, 0xc5, 0x4d, 0x6d, 0xf0, 0xdb, 0x24, 0x5d, 0x84,
		0x30, 0xd9, 0xe0, 0x40, 0x37, 0x74, 0xa0, 0xe1, 0xa7, 0x35, 0x50,
		0x98, 0x9e, 0xdd, 0xa4, 0xed, 0x7e, 0x4c, 0x98, 0xdf, 0xd3 };
	static const uint8_t sess_c2s[32] = {
		0xf5, 0x79, 0x08, 0x31, 0xe7, 0xf4, 0x93, 0xd2, 0x52, 0x2a, 0xb7,
		0x29, 0xb7, 0xb9, 0x8d, 0xa1, 0x53, 0xe3, 0xe3, 0xab, 0x1e, 0x70,
		0x36, 0x7d, 0x6e, 0x0f, 0x7a, 0x32, 0x9f, 0xe2, 0x41, 0xb0 };
	static const uint8_t sess_s2c[32] = {
		0xb7, 0x64, 0x93, 0x8d, 0xb0, 0xce, 0xae, 0x08, 0xff, 0x19, 0x91,
		0x76, 0xfd, 0xe4, 0xa0, 0xa1, 0x18, 0x9e, 0x9a, 0xf0, 0x69, 0x76,
		0xca, 0xcd, 0x40, 0xdc, 0xdd, 0xa2, 0x28, 0x7d, 0xf7, 0xfe };
	static const uint8_t aes_c2s[32] = {
		0x4d, 0x9c, 0xa0, 0x88, 0xdf, 0x0d, 0x90, 0x47, 0x53, 0x23, 0x60,
		0xbc, 0x05, 0x73, 0x14, 0xe9, 0x61, 0xa5, 0xf4, 0xfc, 0xc0, 0x12,
		0x3a, 0x24, 0x3d, 0xee, 0xc9, 0xc7, 0x71, 0xd9, 0x3a, 0xcc };
	static const uint8_t want_dgram[88] = {
		0x56, 0x45, 0x4c, 0x4f, 0x01, 0x06, 0x01, 0x00,
		0x58, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
		0x01, 0x00, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01,
		0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
		0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
		0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
		0x18, 0x00, 0x10, 0x00, 0x05, 0x00, 0x01, 0x01,
		0x2a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
		0x00, 0x00, 0x2a, 0x36, 0xfe, 0x9c, 0x97, 0x17,
		0x3a, 0x61, 0xdf, 0xed, 0xa9, 0x8b, 0x80, 0xb7,
		0x9f, 0x9c, 0x0f, 0x6e, 0x23, 0x66, 0xa8, 0x36 };
	static const uint8_t aes_tag[16] = {
		0x5c, 0x3a, 0x16, 0x3a, 0x8f, 0xea, 0x8e, 0x6b,
		0x72, 0x83, 0x4d, 0xe8, 0x2e, 0x78, 0x8a, 0xb8 };
	const uint64_t sid = 0x0123456789ab0001ull;
	struct velo_psk p = { .key_id = 1 };
	uint8_t cn[PROTO_NONCE_LEN], sn[PROTO_NONCE_LEN];
	struct velo_session_keys lk, sk;
	struct proto_pkt_hdr h;
	struct proto_test_request *t;
	struct proto_enc e;
	int len;

	(void)state;
	for (unsigned i = 0; i < 32; i++)
		p.key[i] = (uint8_t)i;
	for (unsigned i = 0; i < 16; i++)
		cn[i] = (uint8_t)(0xa0 + i), sn[i] = (uint8_t)(0xb0 + i);
	velo_auth_logon_keys(&p, &lk);
	assert_memory_equal(lk.c2s.key, logon_c2s, 32);
	assert_memory_equal(lk.s2c.key, logon_s2c, 32);
	velo_auth_session_keys(&p, cn, sn, sid, VELO_SUITE_CHACHA20_POLY1305, &sk);
	assert_memory_equal(sk.c2s.key, sess_c2s, 32);
	assert_memory_equal(sk.s2c.key, sess_s2c, 32);

	memset(&h, 0, sizeof(h));
	h.magic = PROTO_MAGIC;
	h.version = PROTO_VERSION;
	h.flags = PROTO_F_CTRL;
	h.session_id = sid;
	h.seq = 1;
	h.ack = 5;
	h.pkt_num = 7;
	proto_enc_init(&e, dg, sizeof(dg), &h);
	t = proto_enc_msg_begin(&e, PROTO_T_TEST_REQUEST, sizeof(*t));
	t->correlation_id = 42;
	t->timestamp_ns = 1700000000000000000ull;
	proto_enc_msg_end(&e);
	len = proto_enc_finish(&e, PROTO_TAG_LEN);
	assert_int_equal(len, sizeof(want_dgram));
	assert_int_equal(velo_auth_seal(&sk.c2s, dg, (size_t)len, NULL), 0);
	assert_memory_equal(dg, want_dgram, sizeof(want_dgram));

	velo_auth_session_keys(&p, cn, sn, sid, VELO_SUITE_AES256_GCM, &sk);
	assert_memory_equal(sk.c2s.key, aes_c2s, 32);
	if (crypto_aead_aes256gcm_is_available()) {
		assert_int_equal(velo_auth_seal(&sk.c2s, dg, (size_t)len, NULL), 0);
		assert_memory_equal(dg + len - 16, aes_tag, 16);
	}
}

/* Round trip, then every single bit flipped anywhere is rejected. */
static void flip_all(const struct velo_dir_key *k, uint8_t flags,
		     const uint8_t *logon_nonce)
{
	size_t len = dgram_make(dg, flags, 1234);

	assert_int_equal(velo_auth_seal(k, dg, len, logon_nonce), 0);
	assert_int_equal(velo_auth_open(k, dg, len, logon_nonce), 0);
	for (size_t bit = 0; bit < len * 8; bit++) {
		dg[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		if (velo_auth_open(k, dg, len, logon_nonce) != -PROTO_DROP_bad_tag)
			fail_msg("bit %zu flipped was accepted", bit);
		dg[bit / 8] ^= (uint8_t)(1u << (bit % 8));
	}
	assert_int_equal(velo_auth_open(k, dg, len, logon_nonce), 0);
	/* Truncated or extended by a block: rejected too. */
	assert_int_equal(velo_auth_open(k, dg, len - 8, logon_nonce),
			 -PROTO_DROP_bad_tag);
	assert_int_equal(velo_auth_open(k, dg, 40, logon_nonce),
			 -PROTO_DROP_bad_tag);
}

static void test_seal_open_flip(void **state)
{
	struct velo_psk p = psk_make(2, 77);
	uint8_t cn[PROTO_NONCE_LEN], sn[PROTO_NONCE_LEN];
	struct velo_session_keys k;

	(void)state;
	velo_random(cn, sizeof(cn));
	velo_random(sn, sizeof(sn));
	velo_auth_session_keys(&p, cn, sn, 7, VELO_SUITE_CHACHA20_POLY1305, &k);
	flip_all(&k.c2s, PROTO_F_AUTH, NULL);
	flip_all(&k.s2c, PROTO_F_AUTH | PROTO_F_S2C, NULL);
	if (crypto_aead_aes256gcm_is_available()) {
		velo_auth_session_keys(&p, cn, sn, 7, VELO_SUITE_AES256_GCM, &k);
		flip_all(&k.c2s, PROTO_F_AUTH, NULL);
		flip_all(&k.s2c, PROTO_F_AUTH | PROTO_F_S2C, NULL);
	} else {
		/* Without AES-NI the suite is refused, never run in software. */
		size_t len = dgram_make(dg, PROTO_F_AUTH, 1);

		velo_auth_session_keys(&p, cn, sn, 7, VELO_SUITE_AES256_GCM, &k);
		assert_int_equal(velo_auth_seal(&k.c2s, dg, len, NULL), -EINVAL);
	}
	velo_auth_logon_keys(&p, &k);
	flip_all(&k.c2s, PROTO_F_AUTH | PROTO_F_CTRL, cn);
	flip_all(&k.s2c, PROTO_F_AUTH | PROTO_F_CTRL | PROTO_F_S2C, sn);
}

static void test_wrong_keys(void **state)
{
	struct velo_psk p = psk_make(3, 5), q = psk_make(4, 5);
	uint8_t cn[PROTO_NONCE_LEN] = { 1 }, sn[PROTO_NONCE_LEN] = { 2 };
	struct velo_session_keys k, k2, lk;
	size_t len;

	(void)state;
	velo_auth_session_keys(&p, cn, sn, 7, VELO_SUITE_CHACHA20_POLY1305, &k);
	velo_auth_logon_keys(&p, &lk);
	len = dgram_make(dg, PROTO_F_AUTH, 5);
	assert_int_equal(velo_auth_seal(&k.c2s, dg, len, NULL), 0);
	/* the other direction's key */
	assert_int_equal(velo_auth_open(&k.s2c, dg, len, NULL), -PROTO_DROP_bad_tag);
	/* a datagram claiming the other direction (nonce differs) */
	dg[offsetof(struct proto_pkt_hdr, flags)] |= PROTO_F_S2C;
	assert_int_equal(velo_auth_open(&k.c2s, dg, len, NULL), -PROTO_DROP_bad_tag);
	dg[offsetof(struct proto_pkt_hdr, flags)] &= (uint8_t)~PROTO_F_S2C;
	assert_int_equal(velo_auth_open(&k.c2s, dg, len, NULL), 0);
	/* another session (id), another PSK, another suite */
	velo_auth_session_keys(&p, cn, sn, 8, VELO_SUITE_CHACHA20_POLY1305, &k2);
	assert_int_equal(velo_auth_open(&k2.c2s, dg, len, NULL), -PROTO_DROP_bad_tag);
	velo_auth_session_keys(&q, cn, sn, 7, VELO_SUITE_CHACHA20_POLY1305, &k2);
	assert_int_equal(velo_auth_open(&k2.c2s, dg, len, NULL), -PROTO_DROP_bad_tag);
	/* logon keys never open session datagrams, nor the reverse */
	assert_int_equal(velo_auth_open(&lk.c2s, dg, len, NULL), -PROTO_DROP_bad_tag);
	assert_int_equal(velo_auth_open(&lk.c2s, dg, len, cn), -PROTO_DROP_bad_tag);
	assert_int_equal(velo_auth_seal(&lk.c2s, dg, len, NULL), -EINVAL);
	assert_int_equal(velo_auth_seal(&k.c2s, dg, len, cn), -EINVAL);
	assert_memory_not_equal(lk.c2s.key, k.c2s.key, VELO_KEY_LEN);
	/* logon: a different nonce */
	assert_int_equal(velo_auth_seal(&lk.c2s, dg, len, cn), 0);
	assert_int_equal(velo_auth_open(&lk.c2s, dg, len, cn), 0);
	assert_int_equal(velo_auth_open(&lk.c2s, dg, len, sn), -PROTO_DROP_bad_tag);
	/* no F_AUTH, too short: refused */
	dg[offsetof(struct proto_pkt_hdr, flags)] &= (uint8_t)~PROTO_F_AUTH;
	assert_int_equal(velo_auth_seal(&k.c2s, dg, len, NULL), -EINVAL);
	assert_int_equal(velo_auth_open(&k.c2s, dg, len, NULL), -PROTO_DROP_bad_tag);
}

/* ------------------------------------------------------------------------
 * Replay window.
 */

static void test_replay_basic(void **state)
{
	struct velo_replay w;
	const uint64_t W = VELO_REPLAY_WINDOW;

	(void)state;
	velo_replay_init(&w);
	assert_false(velo_replay_check(&w, 0));		/* pn 0 never */
	velo_replay_update(&w, 0);
	assert_false(velo_replay_check(&w, 0));
	/* in order */
	for (uint64_t pn = 1; pn <= 5000; pn++) {
		assert_true(velo_replay_check(&w, pn));
		velo_replay_update(&w, pn);
		assert_false(velo_replay_check(&w, pn));	/* duplicate */
	}
	assert_false(velo_replay_check(&w, 5000 - W + 1));	/* seen */
	assert_false(velo_replay_check(&w, 5000 - W));		/* too old */
	/* reordered inside the window */
	velo_replay_init(&w);
	velo_replay_update(&w, 100);
	assert_true(velo_replay_check(&w, 99));
	assert_true(velo_replay_check(&w, 1));
	velo_replay_update(&w, 50);
	assert_false(velo_replay_check(&w, 50));
	assert_true(velo_replay_check(&w, 51));
	/* window edge: top - W + 1 accepted, top - W refused */
	velo_replay_init(&w);
	velo_replay_update(&w, 10000);
	assert_true(velo_replay_check(&w, 10000 - W + 1));
	assert_false(velo_replay_check(&w, 10000 - W));
	velo_replay_update(&w, 10000 - W + 1);
	assert_false(velo_replay_check(&w, 10000 - W + 1));
	/* a jump of exactly W - 1 keeps the old top's bit; of W clears all */
	velo_replay_update(&w, 10000 + W - 1);
	assert_false(velo_replay_check(&w, 10000));
	velo_replay_update(&w, 10000 + 2 * W - 1);
	assert_false(velo_replay_check(&w, 10000 + W - 1));	/* too old now */
	assert_true(velo_replay_check(&w, 10000 + W));
	/* big jumps */
	velo_replay_init(&w);
	velo_replay_update(&w, 1);
	velo_replay_update(&w, 1000000);
	assert_false(velo_replay_check(&w, 1));
	assert_true(velo_replay_check(&w, 1000000 - 100));
	velo_replay_update(&w, UINT64_MAX - 1);
	assert_false(velo_replay_check(&w, 1000000));
	assert_true(velo_replay_check(&w, UINT64_MAX));
	assert_true(velo_replay_check(&w, UINT64_MAX - 2));
	assert_false(velo_replay_check(&w, UINT64_MAX - 1));
}

/* Against a model that remembers everything: random walks with reordering,
 * duplicates and jumps of every size. */
static void test_replay_model(void **state)
{
	enum { STEPS = 1 << 21, BITS = 1 << 27 };
	static uint64_t seen[BITS / 64];
	struct velo_replay w;
	uint64_t top = 0, x = 88172645463325252ull;
	unsigned accepted = 0, refused = 0;

	(void)state;
	memset(seen, 0, sizeof(seen));
	velo_replay_init(&w);
	for (unsigned i = 0; i < STEPS; i++) {
		uint64_t r, pn;
		bool want, got;

		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		r = x % 100;
		if (r < 60)		/* next few */
			pn = top + 1 + (x >> 32) % 4;
		else if (r < 98)	/* late, duplicate or too old */
			pn = top > 2 ? top - (x >> 32) % MIN(top - 1,
				(uint64_t)2 * VELO_REPLAY_WINDOW + 50) : 1;
		else if (r < 99)	/* jump, up to 3 windows */
			pn = top + 1 + (x >> 32) % (3 * VELO_REPLAY_WINDOW);
		else
			pn = 0;
		if (pn >= BITS)
			break;
		want = pn != 0 && !((seen[pn / 64] >> (pn % 64)) & 1) &&
		       (pn > top || top - pn < VELO_REPLAY_WINDOW);
		got = velo_replay_check(&w, pn);
		if (got != want)
			fail_msg("step %u pn %llu top %llu: check %d, model %d", i,
				 (unsigned long long)pn, (unsigned long long)top,
				 got, want);
		if (got) {
			velo_replay_update(&w, pn);
			seen[pn / 64] |= 1ull << (pn % 64);
			top = MAX(top, pn);
			accepted++;
		} else {
			refused++;
		}
	}
	/* The walk exercised both outcomes in earnest. */
	assert_true(accepted > STEPS / 2 && refused > STEPS / 10);
}

/* ------------------------------------------------------------------------
 * Key files.
 */

static char tmpdir[64];

static int kf_setup(void **state)
{
	(void)state;
	return velo_test_tmpdir(tmpdir, sizeof(tmpdir), "auth");
}

static int kf_teardown(void **state)
{
	(void)state;
	return velo_test_rmtree(tmpdir);
}

static const char *kf_write(const char *name, const char *text, mode_t mode)
{
	static char path[128];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	unlink(path);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	assert_int_equal(fchmod(fd, mode), 0);
	close(fd);
	return path;
}

#define HEX_A "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF"
#define HEX_B "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100"

static void test_keyfile_good(void **state)
{
	struct velo_psk k[4];
	char err[128];
	const char *path = kf_write("good",
		"# velo keys\n"
		"\n"
		"velo-psk-v1 7 " HEX_A " client a, made today\n"
		"   # indented comment\n"
		"velo-psk-v1\t4294967295\t" HEX_B "\r\n"
		"velo-psk-v1 0 " HEX_B, 0600);
	int n;

	(void)state;
	n = velo_keyfile_load(path, k, 4, err, sizeof(err));
	assert_int_equal(n, 3);
	assert_int_equal(k[0].key_id, 7);
	assert_int_equal(k[0].key[0], 0x00);
	assert_int_equal(k[0].key[9], 0x99);
	assert_int_equal(k[0].key[31], 0xff);
	assert_int_equal(k[1].key_id, 4294967295u);
	assert_int_equal(k[1].key[0], 0xff);
	assert_int_equal(k[2].key_id, 0);
	/* 0400 is fine too */
	path = kf_write("ro", "velo-psk-v1 1 " HEX_A "\n", 0400);
	assert_int_equal(velo_keyfile_load(path, k, 4, err, sizeof(err)), 1);
}

static void test_keyfile_bad(void **state)
{
	static const struct {
		const char *text;
		int line;
	} bad[] = {
		{ "velo-psk-v2 1 " HEX_A "\n", 1 },
		{ "# c\nvelo-psk-v1 " HEX_A "\n", 2 },			/* no id */
		{ "velo-psk-v1 1 " HEX_A "0\n", 1 },			/* 65 hex */
		{ "velo-psk-v1 1 " "0011" "\n", 1 },			/* short */
		{ "velo-psk-v1 1 " "x0112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n", 1 },
		{ "velo-psk-v1 4294967296 " HEX_A "\n", 1 },		/* id > u32 */
		{ "velo-psk-v1 -1 " HEX_A "\n", 1 },
		{ "velo-psk-v1 1x " HEX_A "\n", 1 },
		{ "velo-psk-v1 1 " HEX_A "\nvelo-psk-v1 1 " HEX_B "\n", 2 }, /* dup */
		{ "velo-psk-v1 1\n", 1 },
		{ "", 0 },						/* no key */
		{ "# only comments\n\n", 0 },
	};
	struct velo_psk k[4];
	char err[128], want[32];

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		const char *path = kf_write("bad", bad[i].text, 0600);

		err[0] = 0;
		if (velo_keyfile_load(path, k, 4, err, sizeof(err)) != -EINVAL)
			fail_msg("case %zu accepted", i);
		if (bad[i].line) {
			snprintf(want, sizeof(want), "line %d:", bad[i].line);
			if (strncmp(err, want, strlen(want)))
				fail_msg("case %zu: error \"%s\"", i, err);
		} else {
			assert_true(err[0] != 0);
		}
	}
	/* permissions: any group or other bit */
	for (unsigned m = 0; m < 6; m++) {
		static const mode_t modes[6] = { 0640, 0604, 0644, 0660, 0602, 0610 };
		const char *path = kf_write("perm", "velo-psk-v1 1 " HEX_A "\n", modes[m]);

		assert_int_equal(velo_keyfile_load(path, k, 4, err, sizeof(err)), -EPERM);
		assert_non_null(strstr(err, "chmod 600"));
	}
	/* missing file, too many keys, a directory */
	snprintf(err, sizeof(err), "%s/none", tmpdir);
	assert_int_equal(velo_keyfile_load(err, k, 4, NULL, 0), -ENOENT);
	{
		const char *path = kf_write("many",
			"velo-psk-v1 1 " HEX_A "\nvelo-psk-v1 2 " HEX_A "\n"
			"velo-psk-v1 3 " HEX_A "\n", 0600);

		assert_int_equal(velo_keyfile_load(path, k, 2, err, sizeof(err)), -ENOSPC);
		assert_int_equal(velo_keyfile_load(path, k, 3, err, sizeof(err)), 3);
	}
	assert_int_equal(chmod(tmpdir, 0700), 0);
	assert_int_equal(velo_keyfile_load(tmpdir, k, 4, err, sizeof(err)), -EINVAL);
}

static void test_keyfile_append(void **state)
{
	struct velo_psk out, out2, k[4];
	char path[128];
	struct stat st;

	(void)state;
	snprintf(path, sizeof(path), "%s/new.keys", tmpdir);
	unlink(path);
	assert_int_equal(velo_keyfile_append(path, 11, "first", &out), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(velo_keyfile_append(path, 12, NULL, &out2), 0);
	assert_memory_not_equal(out.key, out2.key, VELO_KEY_LEN);
	assert_int_equal(velo_keyfile_append(path, 11, "again", NULL), -EEXIST);
	assert_int_equal(velo_keyfile_append(path, 13, "two\nlines", NULL), -EINVAL);
	assert_int_equal(velo_keyfile_load(path, k, 4, NULL, 0), 2);
	assert_int_equal(k[0].key_id, 11);
	assert_memory_equal(k[0].key, out.key, VELO_KEY_LEN);
	assert_int_equal(k[1].key_id, 12);
	assert_memory_equal(k[1].key, out2.key, VELO_KEY_LEN);
	/* a file without a final newline gets one before the new line */
	strcpy(path, kf_write("nonl", "velo-psk-v1 1 " HEX_A, 0600));
	assert_int_equal(velo_keyfile_append(path, 2, NULL, NULL), 0);
	assert_int_equal(velo_keyfile_load(path, k, 4, NULL, 0), 2);
	/* refuses a readable file */
	strcpy(path, kf_write("open", "", 0644));
	assert_int_equal(velo_keyfile_append(path, 2, NULL, NULL), -EPERM);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_suites),
		cmocka_unit_test(test_kdf_reference),
		cmocka_unit_test(test_keys_distinct),
		cmocka_unit_test(test_tag_reference),
		cmocka_unit_test(test_worked_example),
		cmocka_unit_test(test_seal_open_flip),
		cmocka_unit_test(test_wrong_keys),
		cmocka_unit_test(test_replay_basic),
		cmocka_unit_test(test_replay_model),
		cmocka_unit_test_setup_teardown(test_keyfile_good, kf_setup, kf_teardown),
		cmocka_unit_test_setup_teardown(test_keyfile_bad, kf_setup, kf_teardown),
		cmocka_unit_test_setup_teardown(test_keyfile_append, kf_setup, kf_teardown),
	};

	return cmocka_run_group_tests(tests, setup, NULL);
}
