// SPDX-License-Identifier: MIT
/*
 * auth.c — key derivation, datagram tags and the replay window
 * (velo/auth.h), on libsodium 1.0.18.
 *
 * A datagram is authenticated, not encrypted: AEAD over an empty plaintext
 * with the whole datagram (header + messages) as associated data, detached
 * 16-byte tag at its end.
 *
 * Nonces (docs/protocol.md, "Security"):
 *   logon  (XChaCha20-Poly1305, 24 bytes): the message's random 16-byte
 *          nonce || pkt_num (u64 LE)
 *   session (AES-256-GCM or ChaCha20-Poly1305-IETF, 12 bytes):
 *          direction (u32 LE, 0 client->server, 1 server->client) ||
 *          pkt_num (u64 LE)
 * Each key is used by one direction of one session only (the KDF binds
 * direction, session id and both logon nonces), and pkt_num never repeats
 * within a direction, so a (key, nonce) pair is never reused.
 *
 * Measured cost per 128-byte datagram (112 bytes of AD), seal / open, one
 * pinned thread on the dev VM (Xeon with AES-NI/PCLMUL, 2 cores, gcc 12
 * -O2, libsodium 1.0.18), best of 7 runs of 2*10^5:
 *   AES-256-GCM, precomputed state   74 / 108 ns  (128 ns to seal without
 *                                    the precomputed state: beforenm is 64)
 *   ChaCha20-Poly1305-IETF          275 / 274 ns
 *   XChaCha20-Poly1305 (logon only) 393 ns
 * Session keys (two KDFs, and two beforenm for AES): ~0.8 us per logon.
 */
#include <errno.h>
#include <string.h>

#include <sodium.h>

#include <velo/auth.h>
#include <velo/codec.h>
#include <velo/compiler.h>

_Static_assert(sizeof(crypto_aead_aes256gcm_state) <= VELO_AES_STATE_LEN,
	       "aes_state too small for libsodium's state");
_Static_assert(_Alignof(crypto_aead_aes256gcm_state) <= 16, "aes_state align");
_Static_assert(crypto_aead_aes256gcm_ABYTES == PROTO_TAG_LEN &&
	       crypto_aead_chacha20poly1305_ietf_ABYTES == PROTO_TAG_LEN &&
	       crypto_aead_xchacha20poly1305_ietf_ABYTES == PROTO_TAG_LEN,
	       "tag length");
_Static_assert(crypto_aead_aes256gcm_KEYBYTES == VELO_KEY_LEN &&
	       crypto_aead_chacha20poly1305_ietf_KEYBYTES == VELO_KEY_LEN &&
	       crypto_aead_xchacha20poly1305_ietf_KEYBYTES == VELO_KEY_LEN &&
	       crypto_generichash_KEYBYTES_MAX >= VELO_KEY_LEN,
	       "key length");
_Static_assert(crypto_aead_aes256gcm_NPUBBYTES == 12 &&
	       crypto_aead_chacha20poly1305_ietf_NPUBBYTES == 12 &&
	       crypto_aead_xchacha20poly1305_ietf_NPUBBYTES ==
		       PROTO_NONCE_LEN + 8,
	       "nonce layout");

int velo_auth_init(void)
{
	/* 0: initialised now, 1: already was; thread-safe in libsodium. */
	return sodium_init() < 0 ? -EIO : 0;
}

unsigned velo_auth_suites_local(void)
{
	unsigned s = PROTO_LOGON_SUITE_CHACHA;

	if (crypto_aead_aes256gcm_is_available())
		s |= PROTO_LOGON_SUITE_AESGCM;
	return s;
}

/* ------------------------------------------------------------------------
 * Key derivation: BLAKE2b-256 keyed with the PSK over a fixed-size input
 * (no length ambiguity), whose first 32 bytes name the key's purpose and
 * direction.  Distinct labels give independent keys.
 */
#define KDF_LABEL_LEN 32

static void kdf(const struct velo_psk *psk, const char *label,
		const void *ctx, size_t ctx_len, uint8_t out[VELO_KEY_LEN])
{
	crypto_generichash_state st;
	uint8_t lbl[KDF_LABEL_LEN] = { 0 };
	uint8_t id[4];

	memcpy(lbl, label, strnlen(label, KDF_LABEL_LEN - 1));
	memcpy(id, &psk->key_id, 4);	/* LE host: wire order */
	crypto_generichash_init(&st, psk->key, VELO_KEY_LEN, VELO_KEY_LEN);
	crypto_generichash_update(&st, lbl, sizeof(lbl));
	crypto_generichash_update(&st, id, sizeof(id));
	if (ctx_len)
		crypto_generichash_update(&st, ctx, ctx_len);
	crypto_generichash_final(&st, out, VELO_KEY_LEN);
	sodium_memzero(&st, sizeof(st));
}

static void dir_key_clear(struct velo_dir_key *k)
{
	sodium_memzero(k, sizeof(*k));
}

void velo_auth_logon_keys(const struct velo_psk *psk,
			  struct velo_session_keys *out)
{
	dir_key_clear(&out->c2s);
	dir_key_clear(&out->s2c);
	kdf(psk, "velo-v1 logon c2s", NULL, 0, out->c2s.key);
	kdf(psk, "velo-v1 logon s2c", NULL, 0, out->s2c.key);
	out->c2s.suite = 0;	/* XChaCha20-Poly1305, with a logon nonce */
	out->s2c.suite = 0;
}

static void session_dir_key(const struct velo_psk *psk, const char *label,
			    const uint8_t *ctx, size_t ctx_len,
			    enum velo_suite suite, struct velo_dir_key *k)
{
	dir_key_clear(k);
	kdf(psk, label, ctx, ctx_len, k->key);
	k->suite = suite;
	/* The AES key schedule and GHASH key once per session (64 ns here)
	 * instead of on every datagram. */
	if (suite == VELO_SUITE_AES256_GCM && crypto_aead_aes256gcm_is_available())
		crypto_aead_aes256gcm_beforenm(
			(crypto_aead_aes256gcm_state *)(void *)k->aes_state,
			k->key);
}

void velo_auth_session_keys(const struct velo_psk *psk,
			    const uint8_t client_nonce[PROTO_NONCE_LEN],
			    const uint8_t server_nonce[PROTO_NONCE_LEN],
			    uint64_t session_id, enum velo_suite suite,
			    struct velo_session_keys *out)
{
	/* suite (u32) | session_id (u64) | client_nonce | server_nonce */
	uint8_t ctx[4 + 8 + 2 * PROTO_NONCE_LEN];
	uint32_t s32 = (uint32_t)suite;

	memcpy(ctx, &s32, 4);
	memcpy(ctx + 4, &session_id, 8);
	memcpy(ctx + 12, client_nonce, PROTO_NONCE_LEN);
	memcpy(ctx + 12 + PROTO_NONCE_LEN, server_nonce, PROTO_NONCE_LEN);
	session_dir_key(psk, "velo-v1 session c2s", ctx, sizeof(ctx), suite,
			&out->c2s);
	session_dir_key(psk, "velo-v1 session s2c", ctx, sizeof(ctx), suite,
			&out->s2c);
}

/* ------------------------------------------------------------------------
 * Tags.
 */

/* Header fields by memcpy: no alignment assumed. */
#define HDR_FLAGS(d) ((d)[offsetof(struct proto_pkt_hdr, flags)])

/* Session nonce: direction word then packet number, from the header. */
static inline void session_nonce(const uint8_t *dgram, uint8_t n[12])
{
	uint32_t dir = (HDR_FLAGS(dgram) & PROTO_F_S2C) ? 1 : 0;

	memcpy(n, &dir, 4);
	memcpy(n + 4, dgram + offsetof(struct proto_pkt_hdr, pkt_num), 8);
}

static inline void logon_nonce_make(const uint8_t *dgram,
				    const uint8_t *logon_nonce, uint8_t n[24])
{
	memcpy(n, logon_nonce, PROTO_NONCE_LEN);
	memcpy(n + PROTO_NONCE_LEN,
	       dgram + offsetof(struct proto_pkt_hdr, pkt_num), 8);
}

/* The datagram's framing as the tag functions need it. */
static inline bool dgram_ok(const uint8_t *dgram, size_t len)
{
	return len >= sizeof(struct proto_pkt_hdr) + PROTO_TAG_LEN &&
	       (HDR_FLAGS(dgram) & PROTO_F_AUTH);
}

/* Costs: see the top of this file; velo-bench-codec measures the whole
 * receive path per suite. */
int velo_auth_seal(const struct velo_dir_key *k, uint8_t *dgram, size_t len,
		   const uint8_t *logon_nonce)
{
	size_t adlen;
	uint8_t *tag;
	uint8_t n[24];
	uint8_t dummy;
	int rc = -1;

	if (unlikely(!dgram_ok(dgram, len)))
		return -EINVAL;
	adlen = len - PROTO_TAG_LEN;
	tag = dgram + adlen;
	if (logon_nonce) {
		if (unlikely(k->suite != 0))
			return -EINVAL;
		logon_nonce_make(dgram, logon_nonce, n);
		rc = crypto_aead_xchacha20poly1305_ietf_encrypt_detached(
			&dummy, tag, NULL, NULL, 0, dgram, adlen, NULL, n,
			k->key);
	} else if (k->suite == VELO_SUITE_AES256_GCM) {
		if (unlikely(!crypto_aead_aes256gcm_is_available()))
			return -EINVAL;
		session_nonce(dgram, n);
		rc = crypto_aead_aes256gcm_encrypt_detached_afternm(
			&dummy, tag, NULL, NULL, 0, dgram, adlen, NULL, n,
			(const crypto_aead_aes256gcm_state *)(const void *)
				k->aes_state);
	} else if (k->suite == VELO_SUITE_CHACHA20_POLY1305) {
		session_nonce(dgram, n);
		rc = crypto_aead_chacha20poly1305_ietf_encrypt_detached(
			&dummy, tag, NULL, NULL, 0, dgram, adlen, NULL, n,
			k->key);
	}
	return rc == 0 ? 0 : -EINVAL;
}

int velo_auth_open(const struct velo_dir_key *k, const uint8_t *dgram,
		   size_t len, const uint8_t *logon_nonce)
{
	const uint8_t *tag;
	size_t adlen;
	uint8_t n[24];
	uint8_t dummy = 0;
	int rc = -1;

	if (unlikely(!dgram_ok(dgram, len)))
		return -PROTO_DROP_bad_tag;
	adlen = len - PROTO_TAG_LEN;
	tag = dgram + adlen;
	/* Both decrypt_detached functions compare tags in constant time. */
	if (logon_nonce) {
		if (unlikely(k->suite != 0))
			return -PROTO_DROP_bad_tag;
		logon_nonce_make(dgram, logon_nonce, n);
		rc = crypto_aead_xchacha20poly1305_ietf_decrypt_detached(
			NULL, NULL, &dummy, 0, tag, dgram, adlen, n, k->key);
	} else if (k->suite == VELO_SUITE_AES256_GCM) {
		if (unlikely(!crypto_aead_aes256gcm_is_available()))
			return -PROTO_DROP_bad_tag;
		session_nonce(dgram, n);
		rc = crypto_aead_aes256gcm_decrypt_detached_afternm(
			&dummy, NULL, &dummy, 0, tag, dgram, adlen, n,
			(const crypto_aead_aes256gcm_state *)(const void *)
				k->aes_state);
	} else if (k->suite == VELO_SUITE_CHACHA20_POLY1305) {
		session_nonce(dgram, n);
		rc = crypto_aead_chacha20poly1305_ietf_decrypt_detached(
			NULL, NULL, &dummy, 0, tag, dgram, adlen, n, k->key);
	}
	return rc == 0 ? 0 : -PROTO_DROP_bad_tag;
}

/* ------------------------------------------------------------------------
 * Replay window: a ring of VELO_REPLAY_WINDOW bits, bit (pn mod W) for
 * packet number pn.  Exact: every pn in (top - W, top] has its own bit,
 * and when top advances the bits of the newly covered numbers are cleared
 * (at most W/64 + 1 word operations, however far it jumps).
 * Check + update of in-order packet numbers: ~8 ns together (dev VM).
 */
#define RW_BITS VELO_REPLAY_WINDOW
_Static_assert(RW_BITS % 64 == 0 && (RW_BITS & (RW_BITS - 1)) == 0,
	       "replay window: power of two, whole words");

void velo_replay_init(struct velo_replay *w)
{
	memset(w, 0, sizeof(*w));
}

static inline bool rw_bit(const struct velo_replay *w, uint64_t pn)
{
	unsigned i = (unsigned)(pn % RW_BITS);

	return (w->bits[i / 64] >> (i % 64)) & 1;
}

bool velo_replay_check(const struct velo_replay *w, uint64_t pn)
{
	if (unlikely(pn == 0))
		return false;
	if (pn > w->top)
		return true;
	if (w->top - pn >= RW_BITS)
		return false;		/* too old */
	return !rw_bit(w, pn);
}

void velo_replay_update(struct velo_replay *w, uint64_t pn)
{
	unsigned i;

	if (unlikely(pn == 0))
		return;
	if (pn > w->top) {
		if (pn - w->top >= RW_BITS) {
			memset(w->bits, 0, sizeof(w->bits));
		} else {
			/* Clear the bits of top+1 .. pn, word by word. */
			uint64_t from = w->top + 1;

			while (from <= pn) {
				unsigned b = (unsigned)(from % RW_BITS);
				unsigned off = b % 64;
				uint64_t n = 64 - off;
				uint64_t mask;

				if (n > pn - from + 1)
					n = pn - from + 1;
				mask = (n == 64) ? ~0ull
						 : (((1ull << n) - 1) << off);
				w->bits[b / 64] &= ~mask;
				from += n;
			}
		}
		w->top = pn;
	} else if (w->top - pn >= RW_BITS) {
		return;			/* too old: nothing to remember */
	}
	i = (unsigned)(pn % RW_BITS);
	w->bits[i / 64] |= 1ull << (i % 64);
}

void velo_random(void *buf, size_t len)
{
	randombytes_buf(buf, len);
}
