/* SPDX-License-Identifier: MIT */
/*
 * dataplane/sock.h — the kernel UDP socket transport (development machines,
 * CI, make run): one non-blocking socket, received and sent in batches with
 * recvmmsg/sendmmsg (one system call per batch of up to 32 datagrams),
 * optionally with SO_BUSY_POLL.
 *
 * Also the transport-neutral packet types the session layer writes into:
 * struct dp_addr (a peer) and struct dp_txq (datagrams waiting to be sent).
 */
#ifndef VELO_DP_SOCK_H
#define VELO_DP_SOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>
#include <sys/socket.h>

/* A peer address (IPv4 or IPv6). */
struct dp_addr {
	union {
		struct sockaddr sa;
		struct sockaddr_in in4;
		struct sockaddr_in6 in6;
	} u;
	socklen_t len;
};

bool dp_addr_eq(const struct dp_addr *a, const struct dp_addr *b);
/* 64-bit hash of address and port (rate-limit tables). */
uint64_t dp_addr_hash(const struct dp_addr *a);
/* "1.2.3.4:5" or "[::1]:5" into buf; returns buf. */
char *dp_addr_format(const struct dp_addr *a, char *buf, size_t len);
/*
 * dp_addr_parse() - "host:port", "[v6]:port" or "host" (port @def_port);
 * numeric hosts or names (getaddrinfo, init only).
 * Return: 0, or -EINVAL.
 */
int dp_addr_parse(const char *s, unsigned def_port, struct dp_addr *out);

/* One datagram to send: data (8-byte aligned), length, destination. */
struct dp_pkt {
	uint8_t *data;
	uint32_t len;
	struct dp_addr addr;
};

/*
 * Transmit queue: the session layer takes a buffer (dp_txq_buf), writes a
 * datagram of at most buf_size bytes into it, and commits it
 * (dp_txq_commit).  When the queue is full the owner's flush callback sends
 * what is queued (sendmmsg, or a test's capture) and empties it.  Buffers are
 * allocated at init (cap x buf_size).
 */
struct dp_txq {
	struct dp_pkt *pkts;	/* (cap) */
	uint8_t *bufs;		/* (cap, buf_size) */
	unsigned n;
	unsigned cap;
	unsigned buf_size;
	void (*flush)(struct dp_txq *q, void *arg);
	void *arg;
};

/* Return: 0, -EINVAL, -ENOMEM. */
int dp_txq_init(struct dp_txq *q, unsigned cap, unsigned buf_size,
		void (*flush)(struct dp_txq *q, void *arg), void *arg);
void dp_txq_fini(struct dp_txq *q);

/* The next free buffer (flushing first when the queue is full). */
static inline uint8_t *dp_txq_buf(struct dp_txq *q)
{
	if (q->n == q->cap) {
		q->flush(q, q->arg);
		if (q->n == q->cap)	/* a flush must empty the queue */
			q->n = 0;
	}
	return q->bufs + (size_t)q->n * q->buf_size;
}

/* Queue the buffer dp_txq_buf() returned, @len bytes, to @to. */
static inline void dp_txq_commit(struct dp_txq *q, uint32_t len,
				 const struct dp_addr *to)
{
	struct dp_pkt *p = &q->pkts[q->n++];

	p->data = q->bufs + (size_t)(q->n - 1) * q->buf_size;
	p->len = len;
	p->addr = *to;
}

static inline void dp_txq_flush(struct dp_txq *q)
{
	if (q->n)
		q->flush(q, q->arg);
	q->n = 0;
}

/* ------------------------------------------------------------------------
 * The socket.
 */

struct dp_sock_config {
	const char *listen;	/* "127.0.0.1:7400"; port 0 picks one */
	unsigned batch;		/* 1..64 */
	unsigned mtu;		/* largest datagram accepted (rx buffer size) */
	unsigned busy_poll_us;	/* SO_BUSY_POLL, 0 off */
	unsigned rcvbuf;	/* SO_RCVBUF bytes, 0 default */
	unsigned sndbuf;
};

struct dp_sock {
	int fd;
	unsigned batch;
	unsigned buf_size;	/* mtu + 8: a longer datagram is truncated */
	struct dp_addr local;	/* bound address (real port) */
	struct mmsghdr *rx_msgs;	/* (batch) */
	struct iovec *rx_iov;
	struct dp_addr *rx_addr;
	uint8_t *rx_bufs;	/* (batch, buf_size) */
	struct mmsghdr *tx_msgs;
	struct iovec *tx_iov;
	uint64_t tx_eagain;	/* sendmmsg found the socket buffer full */
};

/*
 * dp_sock_open() - create, configure and bind the socket, allocate the
 * batch arrays.
 * Return: 0, or -errno (-EINVAL bad address or batch, -EADDRINUSE, ...).
 */
int dp_sock_open(struct dp_sock *s, const struct dp_sock_config *cfg);
void dp_sock_close(struct dp_sock *s);

/*
 * dp_sock_rx_burst() - receive up to batch datagrams without blocking.
 * Return: count received (0 when none), or -errno on a socket error.
 * Datagram i: dp_sock_rx_data(s, i), dp_sock_rx_len(s, i) (a length above
 * mtu means the datagram was truncated: oversize), s->rx_addr[i].
 */
int dp_sock_rx_burst(struct dp_sock *s);

static inline uint8_t *dp_sock_rx_data(const struct dp_sock *s, unsigned i)
{
	return s->rx_bufs + (size_t)i * s->buf_size;
}

static inline unsigned dp_sock_rx_len(const struct dp_sock *s, unsigned i)
{
	unsigned n = s->rx_msgs[i].msg_len;

	if (s->rx_msgs[i].msg_hdr.msg_flags & MSG_TRUNC)
		n = s->buf_size + 1;
	return n;
}

/*
 * dp_sock_tx_burst() - send datagrams, in batches, without blocking.  A
 * full socket buffer is retried a few times (spinning), then the rest is
 * given up.
 * Return: count sent (the others were dropped: count them).
 */
unsigned dp_sock_tx_burst(struct dp_sock *s, const struct dp_pkt *pkts,
			  unsigned n);

/*
 * dp_sock_wait() - block until the socket or @wake_fd (-1: none) is
 * readable, or @timeout_us passed.  *@woke tells whether wake_fd was.
 * Return: 1 something readable, 0 timeout, -errno (-EINTR).
 */
int dp_sock_wait(struct dp_sock *s, unsigned timeout_us, int wake_fd,
		 bool *woke);

#endif /* VELO_DP_SOCK_H */
