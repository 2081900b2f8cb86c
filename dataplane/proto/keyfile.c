// SPDX-License-Identifier: MIT
/*
 * keyfile.c — pre-shared key files (velo/auth.h).
 *
 *   # comment
 *   velo-psk-v1 <key_id decimal> <64 hex chars> [comment]
 *
 * Init-time code, not thread-safe (one static buffer): reads the file in
 * one bounded read (KEYFILE_BYTES_MAX), parses it in place, and wipes every
 * buffer that held key material.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include <velo/auth.h>

#include "../../tools/lib/errbuf.h"

#define KEYFILE_MAGIC "velo-psk-v1"
/* A line is ~110 bytes: 64 KiB holds several hundred keys. */
#define KEYFILE_BYTES_MAX (64u * 1024)
/* Keys velo_keyfile_append() checks for a duplicate id. */
#define KEYFILE_APPEND_KEYS_MAX 512

static bool is_space(char c)
{
	return c == ' ' || c == '\t';
}

/* Next whitespace-separated word of [*p, end). */
static size_t word(const char **p, const char *end, const char **w)
{
	const char *s = *p;

	while (s < end && is_space(*s))
		s++;
	*w = s;
	while (s < end && !is_space(*s))
		s++;
	*p = s;
	return (size_t)(s - *w);
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* One key line (no newline).  Return: 1 key, 0 blank/comment, -EINVAL. */
static int parse_line(const char *s, const char *end, struct velo_psk *k,
		      const char **why)
{
	const char *w;
	size_t n;
	uint64_t id = 0;

	if (end > s && end[-1] == '\r')
		end--;
	n = word(&s, end, &w);
	if (n == 0 || w[0] == '#')
		return 0;
	if (n != sizeof(KEYFILE_MAGIC) - 1 || memcmp(w, KEYFILE_MAGIC, n)) {
		*why = "expected \"" KEYFILE_MAGIC "\"";
		return -EINVAL;
	}
	n = word(&s, end, &w);
	if (n == 0 || n > 10) {
		*why = "bad key id";
		return -EINVAL;
	}
	for (size_t i = 0; i < n; i++) {
		if (w[i] < '0' || w[i] > '9') {
			*why = "bad key id";
			return -EINVAL;
		}
		id = id * 10 + (uint64_t)(w[i] - '0');
	}
	if (id > UINT32_MAX) {
		*why = "key id above 4294967295";
		return -EINVAL;
	}
	n = word(&s, end, &w);
	if (n != 2 * VELO_KEY_LEN) {
		*why = "key is not 64 hex digits";
		return -EINVAL;
	}
	for (size_t i = 0; i < VELO_KEY_LEN; i++) {
		int hi = hexval(w[2 * i]), lo = hexval(w[2 * i + 1]);

		if (hi < 0 || lo < 0) {
			*why = "key is not 64 hex digits";
			sodium_memzero(k->key, sizeof(k->key));
			return -EINVAL;
		}
		k->key[i] = (uint8_t)(hi << 4 | lo);
	}
	/* Anything after the key, separated by blanks, is a comment. */
	k->key_id = (uint32_t)id;
	return 1;
}

/*
 * Parse @buf (@len bytes).  Return: keys found (may be 0) or -errno.
 */
static int parse_buf(const char *buf, size_t len, struct velo_psk *keys,
		     unsigned max, char *err, size_t errlen)
{
	const char *p = buf, *end = buf + len;
	unsigned n = 0, line = 0;

	while (p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		struct velo_psk k;
		const char *why = "";
		int rc;

		if (!eol)
			eol = end;
		line++;
		rc = parse_line(p, eol, &k, &why);
		p = eol + (eol < end);
		if (rc < 0) {
			velo_errf(err, errlen, "line %u: %s", line, why);
			return rc;
		}
		if (rc == 0)
			continue;
		for (unsigned i = 0; i < n; i++) {
			if (keys[i].key_id == k.key_id) {
				velo_errf(err, errlen, "line %u: duplicate key id %u",
					line, k.key_id);
				sodium_memzero(&k, sizeof(k));
				return -EINVAL;
			}
		}
		if (n == max) {
			sodium_memzero(&k, sizeof(k));
			velo_errf(err, errlen, "line %u: more than %u keys", line,
				max);
			return -ENOSPC;
		}
		keys[n++] = k;
		sodium_memzero(&k, sizeof(k));
	}
	return (int)n;
}

/* Read a whole key file from @fd, checking its permissions. */
static int read_fd(int fd, char *buf, size_t cap, size_t *len, char *err,
		   size_t errlen)
{
	struct stat st;
	size_t got = 0;

	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode)) {
		velo_errf(err, errlen, "not a regular file");
		return -EINVAL;
	}
	if (st.st_mode & (S_IRWXG | S_IRWXO)) {
		velo_errf(err, errlen, "mode %03o: must not be accessible by group "
			"or others (chmod 600)", (unsigned)(st.st_mode & 0777));
		return -EPERM;
	}
	for (;;) {
		ssize_t r = pread(fd, buf + got, cap - got, (off_t)got);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			break;
		got += (size_t)r;
		if (got == cap) {
			velo_errf(err, errlen, "larger than %u bytes",
				KEYFILE_BYTES_MAX - 1);
			return -EFBIG;
		}
	}
	*len = got;
	return 0;
}

int velo_keyfile_load(const char *path, struct velo_psk *keys, unsigned max,
		      char *err, size_t errlen)
{
	static char buf[KEYFILE_BYTES_MAX];	/* init only; wiped after */
	size_t len = 0;
	int fd, rc;

	velo_errf(err, errlen, "%s", "");
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		velo_errf(err, errlen, "%s", strerror(errno));
		return rc;
	}
	rc = read_fd(fd, buf, sizeof(buf), &len, err, errlen);
	close(fd);
	if (rc == 0) {
		rc = parse_buf(buf, len, keys, max, err, errlen);
		if (rc == 0) {
			velo_errf(err, errlen, "no key in the file");
			rc = -EINVAL;
		}
	}
	sodium_memzero(buf, len);
	return rc;
}

int velo_keyfile_append(const char *path, uint32_t key_id,
			const char *comment, struct velo_psk *out)
{
	static char buf[KEYFILE_BYTES_MAX];
	static struct velo_psk have[KEYFILE_APPEND_KEYS_MAX];
	char line[16 + 11 + 2 * VELO_KEY_LEN + 1 + 256 + 2];
	char hex[2 * VELO_KEY_LEN + 1];
	struct velo_psk k;
	size_t len = 0, clen = comment ? strlen(comment) : 0;
	int fd, rc, n;

	if (clen > 256 || (comment && strpbrk(comment, "\r\n")))
		return -EINVAL;
	fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	rc = read_fd(fd, buf, sizeof(buf), &len, NULL, 0);
	if (rc)
		goto out;
	rc = parse_buf(buf, len, have, KEYFILE_APPEND_KEYS_MAX, NULL, 0);
	if (rc < 0)
		goto out;
	for (int i = 0; i < rc; i++) {
		if (have[i].key_id == key_id) {
			rc = -EEXIST;
			goto out;
		}
	}

	k.key_id = key_id;
	randombytes_buf(k.key, sizeof(k.key));
	sodium_bin2hex(hex, sizeof(hex), k.key, sizeof(k.key));
	n = snprintf(line, sizeof(line), "%s" KEYFILE_MAGIC " %u %s%s%s\n",
		     (len && buf[len - 1] != '\n') ? "\n" : "", key_id, hex,
		     clen ? " " : "", clen ? comment : "");
	sodium_memzero(hex, sizeof(hex));
	if (n < 0 || (size_t)n >= sizeof(line)) {
		rc = -EINVAL;
		goto out_wipe;
	}
	if (write(fd, line, (size_t)n) != n) {
		rc = errno ? -errno : -EIO;
		goto out_wipe;
	}
	if (fsync(fd) < 0) {
		rc = -errno;
		goto out_wipe;
	}
	if (out)
		*out = k;
	rc = 0;
out_wipe:
	sodium_memzero(line, sizeof(line));
	sodium_memzero(&k, sizeof(k));
out:
	sodium_memzero(buf, len);
	sodium_memzero(have, sizeof(have));
	close(fd);
	return rc;
}
