/* SPDX-License-Identifier: MIT */
/*
 * velo/auth.h — keys, datagram authentication and the replay window, shared
 * by velod and clients (libsodium underneath).
 *
 * Keys.  A pre-shared key (PSK, 32 bytes, with a 32-bit key id) is made by
 * velo-keygen and provisioned through the management plane.  It is never
 * used on data directly:
 *   - LOGON and LOGON_ACK are tagged with XChaCha20-Poly1305 under logon
 *     keys derived from the PSK (one per direction); the 24-byte nonce is the
 *     message's random 16-byte nonce followed by the packet number, so nonces
 *     never repeat across logons, client restarts included.
 *   - Everything after is tagged under per-session keys (one per direction)
 *     derived from the PSK, both nonces and the session id: a session's
 *     packet numbers start at 1 and never repeat, so the 12-byte nonce
 *     (direction word + packet number) is unique for its key.
 *   - Session suites: AES-256-GCM where the CPU has AES-NI and PCLMUL (the
 *     fastest here), else ChaCha20-Poly1305-IETF; the client offers, the
 *     server chooses (LOGON flags / LOGON_ACK reserved field, see
 *     docs/protocol.md).
 * Datagrams are authenticated, not encrypted: the tag covers the whole
 * datagram (header and messages) as associated data with an empty
 * plaintext.  (Confidentiality can come as a suite later without changing
 * the framing.)
 */
#ifndef VELO_AUTH_H
#define VELO_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <velo/proto.h>

#define VELO_KEY_LEN 32

struct velo_psk {
	uint32_t key_id;
	uint8_t key[VELO_KEY_LEN];
};

/* LOGON flags: session suites the client supports. */
#define PROTO_LOGON_SUITE_CHACHA 0x1
#define PROTO_LOGON_SUITE_AESGCM 0x2

enum velo_suite {
	VELO_SUITE_CHACHA20_POLY1305 = 1,
	VELO_SUITE_AES256_GCM = 2,
};

/*
 * velo_auth_init() - initialise libsodium (idempotent, thread-safe).
 * Return: 0 or -EIO.
 */
int velo_auth_init(void);

/* Suites this CPU can run (PROTO_LOGON_SUITE_* bits). */
unsigned velo_auth_suites_local(void);

/*
 * Key files, one key per line: "velo-psk-v1 <key_id decimal> <64 hex chars>
 * [comment]".  Lines starting with # are comments.  Files must not be
 * readable by group or others (refused with -EPERM if they are).
 *
 * velo_keyfile_load() - read every key of a file into @keys (at most @max).
 * Return: number of keys (>= 1), or -errno (-ENOENT, -EPERM, -EINVAL for a
 * malformed line, a duplicate key id or no key at all, with the line number
 * in @err; -ENOSPC for more than @max keys).
 */
int velo_keyfile_load(const char *path, struct velo_psk *keys, unsigned max,
		      char *err, size_t errlen);
/* velo_keyfile_append() - generate a random key with @key_id and append it
 * to @path (created 0600).  @comment may be NULL; no line breaks.
 * Return: 0 or -errno (-EPERM: file readable by others; -EEXIST: the id is
 * in the file already; -EINVAL: existing file malformed, bad comment). */
int velo_keyfile_append(const char *path, uint32_t key_id,
			const char *comment, struct velo_psk *out);

/*
 * Keys for one direction of one session (or of a logon exchange).  suite is
 * 0 for logon keys (XChaCha20-Poly1305, used only with a logon nonce).
 * aes_state: the AES-256-GCM key schedule and GHASH key, expanded once by
 * velo_auth_session_keys() (libsodium's crypto_aead_aes256gcm_beforenm) so
 * that a datagram costs no key setup; opaque, unused by the other suites.
 */
#define VELO_AES_STATE_LEN 512
struct velo_dir_key {
	_Alignas(16) uint8_t aes_state[VELO_AES_STATE_LEN];
	uint8_t key[VELO_KEY_LEN];
	enum velo_suite suite;
};

struct velo_session_keys {
	struct velo_dir_key c2s;
	struct velo_dir_key s2c;
};

/* Logon keys from a PSK (suite is XChaCha20-Poly1305 implicitly). */
void velo_auth_logon_keys(const struct velo_psk *psk,
			  struct velo_session_keys *out);

/* Session keys: KDF(PSK, client_nonce, server_nonce, session_id, suite). */
void velo_auth_session_keys(const struct velo_psk *psk,
			    const uint8_t client_nonce[PROTO_NONCE_LEN],
			    const uint8_t server_nonce[PROTO_NONCE_LEN],
			    uint64_t session_id, enum velo_suite suite,
			    struct velo_session_keys *out);

/*
 * velo_auth_seal() - write the tag of a finished datagram (length includes
 * the tag room; F_AUTH set).  For LOGON/LOGON_ACK pass the message's random
 * nonce as @logon_nonce (XChaCha20); for session datagrams pass NULL.
 * Return: 0 or -EINVAL.
 */
int velo_auth_seal(const struct velo_dir_key *k, uint8_t *dgram, size_t len,
		   const uint8_t *logon_nonce);

/*
 * velo_auth_open() - verify a datagram's tag (constant time).
 * Return: 0, or -PROTO_DROP_bad_tag.
 */
int velo_auth_open(const struct velo_dir_key *k, const uint8_t *dgram,
		   size_t len, const uint8_t *logon_nonce);

/*
 * Sliding replay window over packet numbers (RFC 6479 style bitmap, as
 * WireGuard): accepts each packet number once, and nothing older than
 * VELO_REPLAY_WINDOW behind the highest seen.  Check before spending time,
 * update only after the tag verified.
 */
#define VELO_REPLAY_WINDOW 2048
struct velo_replay {
	uint64_t top;		/* highest packet number accepted */
	uint64_t bits[VELO_REPLAY_WINDOW / 64];
};
void velo_replay_init(struct velo_replay *w);
/* true when pn is new and inside the window (pn 0 is never valid). */
bool velo_replay_check(const struct velo_replay *w, uint64_t pn);
void velo_replay_update(struct velo_replay *w, uint64_t pn);

/* Random bytes (libsodium's CSPRNG). */
void velo_random(void *buf, size_t len);

#endif /* VELO_AUTH_H */
