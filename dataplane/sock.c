// SPDX-License-Identifier: MIT
/*
 * sock.c — UDP socket transport with recvmmsg/sendmmsg batches.
 *
 * Cost (loopback, this 2-core VM): recvmmsg of a batch of 32 costs about the
 * same as one recvfrom, so a full batch is ~1/30th of the syscall per
 * datagram.  Nothing here allocates after dp_sock_open().
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <velo/compiler.h>

#include "../tools/lib/log.h"
#include "sock.h"

bool dp_addr_eq(const struct dp_addr *a, const struct dp_addr *b)
{
	if (a->u.sa.sa_family != b->u.sa.sa_family)
		return false;
	if (a->u.sa.sa_family == AF_INET)
		return a->u.in4.sin_port == b->u.in4.sin_port &&
		       a->u.in4.sin_addr.s_addr == b->u.in4.sin_addr.s_addr;
	if (a->u.sa.sa_family == AF_INET6)
		return a->u.in6.sin6_port == b->u.in6.sin6_port &&
		       !memcmp(&a->u.in6.sin6_addr, &b->u.in6.sin6_addr, 16);
	return false;
}

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	x ^= x >> 33;
	return x;
}

uint64_t dp_addr_hash(const struct dp_addr *a)
{
	uint64_t h = a->u.sa.sa_family;

	if (a->u.sa.sa_family == AF_INET) {
		h = mix64(h ^ ((uint64_t)a->u.in4.sin_addr.s_addr << 16 ^
			       a->u.in4.sin_port));
	} else if (a->u.sa.sa_family == AF_INET6) {
		uint64_t w[2];

		memcpy(w, &a->u.in6.sin6_addr, 16);
		h = mix64(mix64(h ^ w[0]) ^ w[1] ^ a->u.in6.sin6_port);
	}
	return h;
}

char *dp_addr_format(const struct dp_addr *a, char *buf, size_t len)
{
	char host[INET6_ADDRSTRLEN] = "?";

	if (a->u.sa.sa_family == AF_INET) {
		inet_ntop(AF_INET, &a->u.in4.sin_addr, host, sizeof(host));
		snprintf(buf, len, "%s:%u", host, ntohs(a->u.in4.sin_port));
	} else if (a->u.sa.sa_family == AF_INET6) {
		inet_ntop(AF_INET6, &a->u.in6.sin6_addr, host, sizeof(host));
		snprintf(buf, len, "[%s]:%u", host, ntohs(a->u.in6.sin6_port));
	} else {
		snprintf(buf, len, "?");
	}
	return buf;
}

int dp_addr_parse(const char *s, unsigned def_port, struct dp_addr *out)
{
	char host[256], port[16];
	const char *colon;
	struct addrinfo hints = { 0 }, *res = NULL;
	size_t hl;
	int rc;

	snprintf(port, sizeof(port), "%u", def_port);
	if (s[0] == '[') {
		const char *rb = strchr(s, ']');

		if (!rb || (rb[1] && rb[1] != ':'))
			return -EINVAL;
		hl = rb - s - 1;
		if (hl >= sizeof(host))
			return -EINVAL;
		memcpy(host, s + 1, hl);
		host[hl] = 0;
		if (rb[1] == ':')
			snprintf(port, sizeof(port), "%s", rb + 2);
	} else {
		colon = strrchr(s, ':');
		if (colon && strchr(s, ':') != colon)
			colon = NULL;	/* bare IPv6 address without a port */
		hl = colon ? (size_t)(colon - s) : strlen(s);
		if (hl >= sizeof(host))
			return -EINVAL;
		memcpy(host, s, hl);
		host[hl] = 0;
		if (colon)
			snprintf(port, sizeof(port), "%s", colon + 1);
	}
	for (const char *p = port; *p; p++)
		if (*p < '0' || *p > '9')
			return -EINVAL;
	if (!port[0] || atol(port) > 65535)
		return -EINVAL;
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_DGRAM;
	hints.ai_flags = AI_NUMERICSERV | AI_PASSIVE;
	rc = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
	if (rc || !res)
		return -EINVAL;
	if (res->ai_addrlen > sizeof(out->u)) {
		freeaddrinfo(res);
		return -EINVAL;
	}
	memset(out, 0, sizeof(*out));
	memcpy(&out->u, res->ai_addr, res->ai_addrlen);
	out->len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

int dp_txq_init(struct dp_txq *q, unsigned cap, unsigned buf_size,
		void (*flush)(struct dp_txq *q, void *arg), void *arg)
{
	memset(q, 0, sizeof(*q));
	if (!cap || buf_size < 64 || !flush)
		return -EINVAL;
	buf_size = ALIGN_UP(buf_size, 64u);
	q->pkts = calloc(cap, sizeof(*q->pkts));
	if (!q->pkts)
		return -ENOMEM;
	q->bufs = aligned_alloc(VELO_CACHE_LINE, (size_t)cap * buf_size);
	if (!q->bufs) {
		free(q->pkts);
		q->pkts = NULL;
		return -ENOMEM;
	}
	q->cap = cap;
	q->buf_size = buf_size;
	q->flush = flush;
	q->arg = arg;
	return 0;
}

void dp_txq_fini(struct dp_txq *q)
{
	free(q->bufs);
	free(q->pkts);
	memset(q, 0, sizeof(*q));
}

static void sock_set_int(int fd, int level, int opt, int val, const char *name)
{
	if (setsockopt(fd, level, opt, &val, sizeof(val)) < 0)
		LOG_W(dp, "setsockopt %s=%d: %s (continuing)", name, val,
		      strerror(errno));
}

int dp_sock_open(struct dp_sock *s, const struct dp_sock_config *cfg)
{
	struct dp_addr a;
	char buf[80];
	int rc;

	memset(s, 0, sizeof(*s));
	s->fd = -1;
	if (cfg->batch < 1 || cfg->batch > 64 || cfg->mtu < 64)
		return -EINVAL;
	rc = dp_addr_parse(cfg->listen, 7400, &a);
	if (rc) {
		LOG_E(dp, "bad listen address '%s'", cfg->listen);
		return rc;
	}
	s->batch = cfg->batch;
	s->buf_size = ALIGN_UP(cfg->mtu + 8, 64u);

	s->rx_msgs = calloc(s->batch, sizeof(*s->rx_msgs));
	s->rx_iov = calloc(s->batch, sizeof(*s->rx_iov));
	s->rx_addr = calloc(s->batch, sizeof(*s->rx_addr));
	s->tx_msgs = calloc(s->batch, sizeof(*s->tx_msgs));
	s->tx_iov = calloc(s->batch, sizeof(*s->tx_iov));
	s->rx_bufs = aligned_alloc(VELO_CACHE_LINE, (size_t)s->batch * s->buf_size);
	if (!s->rx_msgs || !s->rx_iov || !s->rx_addr || !s->tx_msgs ||
	    !s->tx_iov || !s->rx_bufs) {
		rc = -ENOMEM;
		goto err_free;
	}
	for (unsigned i = 0; i < s->batch; i++) {
		s->rx_iov[i].iov_base = dp_sock_rx_data(s, i);
		s->rx_iov[i].iov_len = s->buf_size;
		s->rx_msgs[i].msg_hdr.msg_iov = &s->rx_iov[i];
		s->rx_msgs[i].msg_hdr.msg_iovlen = 1;
		s->rx_msgs[i].msg_hdr.msg_name = &s->rx_addr[i].u;
		s->rx_msgs[i].msg_hdr.msg_namelen = sizeof(s->rx_addr[i].u);
		s->tx_msgs[i].msg_hdr.msg_iov = &s->tx_iov[i];
		s->tx_msgs[i].msg_hdr.msg_iovlen = 1;
	}

	s->fd = socket(a.u.sa.sa_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
		       IPPROTO_UDP);
	if (s->fd < 0) {
		rc = -errno;
		goto err_free;
	}
	if (cfg->rcvbuf)
		sock_set_int(s->fd, SOL_SOCKET, SO_RCVBUF, cfg->rcvbuf, "SO_RCVBUF");
	if (cfg->sndbuf)
		sock_set_int(s->fd, SOL_SOCKET, SO_SNDBUF, cfg->sndbuf, "SO_SNDBUF");
	if (cfg->busy_poll_us)
		sock_set_int(s->fd, SOL_SOCKET, SO_BUSY_POLL, cfg->busy_poll_us,
			     "SO_BUSY_POLL");
	if (bind(s->fd, &a.u.sa, a.len) < 0) {
		rc = -errno;
		LOG_E(dp, "bind %s: %s", cfg->listen, strerror(errno));
		goto err_close;
	}
	s->local.len = sizeof(s->local.u);
	if (getsockname(s->fd, &s->local.u.sa, &s->local.len) < 0) {
		rc = -errno;
		goto err_close;
	}
	LOG_I(dp, "udp socket bound to %s, batch %u, mtu %u",
	      dp_addr_format(&s->local, buf, sizeof(buf)), s->batch, cfg->mtu);
	return 0;

err_close:
	close(s->fd);
err_free:
	free(s->rx_bufs);
	free(s->tx_iov);
	free(s->tx_msgs);
	free(s->rx_addr);
	free(s->rx_iov);
	free(s->rx_msgs);
	memset(s, 0, sizeof(*s));
	s->fd = -1;
	return rc;
}

void dp_sock_close(struct dp_sock *s)
{
	if (s->fd >= 0)
		close(s->fd);
	free(s->rx_bufs);
	free(s->tx_iov);
	free(s->tx_msgs);
	free(s->rx_addr);
	free(s->rx_iov);
	free(s->rx_msgs);
	memset(s, 0, sizeof(*s));
	s->fd = -1;
}

int dp_sock_rx_burst(struct dp_sock *s)
{
	int n;

	for (unsigned i = 0; i < s->batch; i++) {
		s->rx_msgs[i].msg_hdr.msg_namelen = sizeof(s->rx_addr[i].u);
		s->rx_msgs[i].msg_hdr.msg_flags = 0;
	}
	n = recvmmsg(s->fd, s->rx_msgs, s->batch, MSG_DONTWAIT, NULL);
	if (n < 0)
		return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
			       ? 0 : -errno;
	for (int i = 0; i < n; i++)
		s->rx_addr[i].len = s->rx_msgs[i].msg_hdr.msg_namelen;
	return n;
}

unsigned dp_sock_tx_burst(struct dp_sock *s, const struct dp_pkt *pkts,
			  unsigned n)
{
	unsigned done = 0, ok = 0, spins = 0;

	while (done < n) {
		unsigned k = MIN(n - done, s->batch);
		int sent;

		for (unsigned i = 0; i < k; i++) {
			const struct dp_pkt *p = &pkts[done + i];

			s->tx_iov[i].iov_base = p->data;
			s->tx_iov[i].iov_len = p->len;
			s->tx_msgs[i].msg_hdr.msg_name = (void *)&p->addr.u;
			s->tx_msgs[i].msg_hdr.msg_namelen = p->addr.len;
		}
		sent = sendmmsg(s->fd, s->tx_msgs, k, MSG_DONTWAIT);
		if (sent > 0) {
			done += sent;
			ok += sent;
			continue;
		}
		if (sent == 0 || errno == EAGAIN || errno == EWOULDBLOCK ||
		    errno == ENOBUFS || errno == EINTR) {
			s->tx_eagain++;
			/* Bounded: a full socket buffer drains in microseconds
			 * on loopback; past that the datagrams are dropped
			 * and the peer's retransmission recovers them. */
			if (++spins < 64)
				continue;
			break;
		}
		/* Another error (unreachable peer, bad address) concerns the
		 * first datagram of the batch: skip it. */
		done++;
	}
	return ok;
}

int dp_sock_wait(struct dp_sock *s, unsigned timeout_us, int wake_fd,
		 bool *woke)
{
	struct pollfd p[2] = { { .fd = s->fd, .events = POLLIN },
			       { .fd = wake_fd, .events = POLLIN } };
	struct timespec ts = { .tv_sec = timeout_us / 1000000,
			       .tv_nsec = (long)(timeout_us % 1000000) * 1000 };
	int rc = ppoll(p, wake_fd >= 0 ? 2 : 1, &ts, NULL);

	*woke = rc > 0 && wake_fd >= 0 && (p[1].revents & POLLIN);
	if (rc < 0)
		return -errno;
	return rc > 0;
}
