// SPDX-License-Identifier: MIT
/*
 * io.c — the framed veloctl <-> velo-mgmtd protocol, velod's control
 * socket client and atomic file replacement.  All blocking with explicit
 * time bounds: mgmtd must answer the operator even when velod is wedged.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "../tools/lib/clock.h"
#include "mgmt.h"

int mgmt_frame_check(const struct mgmt_frame_hdr *h, uint16_t type,
		     uint32_t cap)
{
	if (h->magic != MGMT_FRAME_MAGIC || h->version != MGMT_FRAME_VERSION ||
	    h->type != type || h->reserved != 0)
		return -EPROTO;
	if (h->len > cap)
		return -EMSGSIZE;
	return 0;
}

static int write_all(int fd, const void *p, size_t n)
{
	const char *c = p;

	while (n) {
		ssize_t w = send(fd, c, n, MSG_NOSIGNAL);

		if (w < 0 && errno == ENOTSOCK)
			w = write(fd, c, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

int mgmt_frame_send(int fd, uint16_t type, uint32_t flags, int32_t status,
		    const void *buf, uint32_t len)
{
	struct mgmt_frame_hdr h = {
		.magic = MGMT_FRAME_MAGIC, .version = MGMT_FRAME_VERSION,
		.type = type, .flags = flags, .status = status, .len = len,
	};
	int rc = write_all(fd, &h, sizeof(h));

	return rc ? rc : write_all(fd, buf, len);
}

/* Read exactly @n bytes before @deadline (CLOCK_MONOTONIC ns). */
static int read_full(int fd, void *p, size_t n, uint64_t deadline)
{
	char *c = p;

	while (n) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		uint64_t now = clock_mono_ns();
		int ms, pr;
		ssize_t r;

		if (now >= deadline)
			return -ETIMEDOUT;
		ms = (int)((deadline - now + 999999) / 1000000);
		pr = poll(&pfd, 1, ms);
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr < 0)
			return -errno;
		if (pr == 0)
			return -ETIMEDOUT;
		r = read(fd, c, n);
		if (r < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -ECONNRESET;
		c += r;
		n -= (size_t)r;
	}
	return 0;
}

int mgmt_frame_recv(int fd, uint16_t type, struct mgmt_frame_hdr *h,
		    char *buf, uint32_t cap, int timeout_ms)
{
	uint64_t deadline = clock_mono_ns() + (uint64_t)timeout_ms * 1000000u;
	int rc;

	rc = read_full(fd, h, sizeof(*h), deadline);
	if (rc)
		return rc;
	rc = mgmt_frame_check(h, type, cap);
	if (rc)
		return rc;
	rc = read_full(fd, buf, h->len, deadline);
	if (rc)
		return rc;
	buf[h->len] = '\0';
	return 0;
}

int mgmt_velod_query(const char *path, const char *cmd, char *buf, size_t len,
		     int timeout_ms)
{
	uint64_t deadline = clock_mono_ns() + (uint64_t)timeout_ms * 1000000u;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t got = 0;
	int fd, rc;

	if (!len || strlen(path) >= sizeof(sa.sun_path))
		return -EINVAL;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/* A Unix stream connect does not block on a live listener with room
	 * in its backlog; a wedged velod with a full backlog fails it with
	 * EAGAIN, which is as good as a timeout here. */
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		rc = errno == EAGAIN ? -ETIMEDOUT : -errno;
		goto out;
	}
	rc = write_all(fd, cmd, strlen(cmd));
	if (!rc)
		rc = write_all(fd, "\n", 1);
	if (rc)
		goto out;
	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		uint64_t now = clock_mono_ns();
		ssize_t r;
		int pr;

		if (now >= deadline) {
			rc = -ETIMEDOUT;
			goto out;
		}
		pr = poll(&pfd, 1, (int)((deadline - now + 999999) / 1000000));
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr <= 0) {
			rc = pr ? -errno : -ETIMEDOUT;
			goto out;
		}
		if (got == len - 1) {
			rc = -EMSGSIZE;
			goto out;
		}
		r = read(fd, buf + got, len - 1 - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			rc = -errno;
			goto out;
		}
		if (r == 0)
			break;
		got += (size_t)r;
	}
	rc = (int)got;
out:
	buf[got] = '\0';
	close(fd);
	return rc;
}

int mgmt_file_write_atomic(const char *path, const void *buf, size_t len,
			   unsigned mode)
{
	char tmp[PATH_MAX], dir[PATH_MAX];
	const char *slash;
	int fd, dfd, rc = 0;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path,
			     (int)getpid()) >= sizeof(tmp))
		return -ENAMETOOLONG;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0)
		return -errno;
	rc = write_all(fd, buf, len);
	if (!rc && fsync(fd))
		rc = -errno;
	if (close(fd) && !rc)
		rc = -errno;
	if (!rc && rename(tmp, path))
		rc = -errno;
	if (rc) {
		unlink(tmp);
		return rc;
	}
	/* The rename is durable only once the directory is synced. */
	slash = strrchr(path, '/');
	if (!slash)
		snprintf(dir, sizeof(dir), ".");
	else
		snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path + (slash == path)),
			 path);
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		if (fsync(dfd))
			rc = -errno;
		close(dfd);
	}
	return rc;
}
