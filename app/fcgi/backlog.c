/* backlog.c — the accept queue length of a listening socket (see backlog.h). */
#include "fcgi/backlog.h"

#include <errno.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>


struct Backlog {
	int fd;          /* the listener (borrowed) */
	int family;      /* AF_UNIX, AF_INET or AF_INET6 */
	int nl;          /* NETLINK_SOCK_DIAG socket (AF_UNIX only), else -1 */
	uint32_t ino;    /* the listener's inode, which sock_diag looks up */
	uint32_t seq;
};

int backlog_open(int listen_fd, Backlog **out)
{
	struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
	int family = 0, listening = 0, type = 0;
	socklen_t len = sizeof(family);
	struct stat st;
	Backlog *b;

	*out = NULL;
	if (fstat(listen_fd, &st) < 0)
		return -errno;
	if (!S_ISSOCK(st.st_mode))
		return -ENOTSOCK;
	if (getsockopt(listen_fd, SOL_SOCKET, SO_DOMAIN, &family, &len) < 0)
		return -errno;
	len = sizeof(type);
	if (getsockopt(listen_fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0)
		return -errno;
	len = sizeof(listening);
	if (getsockopt(listen_fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0)
		return -errno;
	if (!listening)
		return -EINVAL;
	if (type != SOCK_STREAM || (family != AF_UNIX && family != AF_INET && family != AF_INET6))
		return -EAFNOSUPPORT;
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->fd = listen_fd;
	b->family = family;
	b->nl = -1;
	/* sock_diag's udiag_ino is 32 bits, as socket inode numbers are. */
	b->ino = (uint32_t)st.st_ino;
	if (family == AF_UNIX) {
		b->nl = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
		if (b->nl < 0 || connect(b->nl, (struct sockaddr *)&kernel, sizeof(kernel)) < 0) {
			int err = -errno;

			backlog_close(b);
			return err;
		}
	}
	*out = b;
	return 0;
}

void backlog_close(Backlog *b)
{
	if (!b)
		return;
	if (b->nl >= 0)
		close(b->nl);
	free(b);
}

static int query_tcp(Backlog *b, uint32_t *queued, uint32_t *max)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);

	memset(&ti, 0, sizeof(ti));
	if (getsockopt(b->fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
		return -errno;
	if (ti.tcpi_state != TCP_LISTEN)
		return -EINVAL;
	/* For a listener tcp_get_info puts sk_ack_backlog / sk_max_ack_backlog here. */
	*queued = ti.tcpi_unacked;
	*max = ti.tcpi_sacked;
	return 0;
}

/* Finds UNIX_DIAG_RQLEN in one SOCK_DIAG_BY_FAMILY answer. */
static int parse_unix(const struct nlmsghdr *h, uint32_t ino, uint32_t *queued, uint32_t *max)
{
	const struct unix_diag_msg *msg = NLMSG_DATA(h);
	const struct rtattr *a;
	int rest;

	if (h->nlmsg_len < NLMSG_LENGTH(sizeof(*msg)) || msg->udiag_ino != ino)
		return -EPROTO;
	rest = (int)(h->nlmsg_len - NLMSG_LENGTH(sizeof(*msg)));
	for (a = (const struct rtattr *)(msg + 1); RTA_OK(a, rest); a = RTA_NEXT(a, rest)) {
		if (a->rta_type == UNIX_DIAG_RQLEN &&
		    RTA_PAYLOAD(a) >= (int)sizeof(struct unix_diag_rqlen)) {
			const struct unix_diag_rqlen *rq = RTA_DATA(a);

			*queued = rq->udiag_rqueue;
			*max = rq->udiag_wqueue;
			return 0;
		}
	}
	return -EPROTO;
}

static int query_unix(Backlog *b, uint32_t *queued, uint32_t *max)
{
	struct {
		struct nlmsghdr nlh;
		struct unix_diag_req req;
	} ask = {
		.nlh = { .nlmsg_len = sizeof(ask), .nlmsg_type = SOCK_DIAG_BY_FAMILY,
			 .nlmsg_flags = NLM_F_REQUEST, .nlmsg_seq = ++b->seq },
		.req = { .sdiag_family = AF_UNIX, .udiag_states = ~0u, .udiag_ino = b->ino,
			 .udiag_show = UDIAG_SHOW_RQLEN,
			 .udiag_cookie = { INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE } },
	};
	/* One unix_diag_msg and one attribute; room for an error with its echo. */
	union {
		struct nlmsghdr h;
		char bytes[512];
	} ans;
	ssize_t n;

	if (send(b->nl, &ask, sizeof(ask), MSG_NOSIGNAL) != (ssize_t)sizeof(ask))
		return errno ? -errno : -EIO;
	/* Earlier answers left behind (a query that failed half way) carry an
	 * older sequence number: skip them, a bounded number of times. */
	for (int tries = 0; tries < 4; tries++) {
		n = recv(b->nl, &ans, sizeof(ans), MSG_DONTWAIT);
		if (n < 0)
			return -errno;
		if ((size_t)n < sizeof(struct nlmsghdr) || !NLMSG_OK(&ans.h, (size_t)n))
			return -EPROTO;
		if (ans.h.nlmsg_seq != b->seq)
			continue;
		if (ans.h.nlmsg_type == NLMSG_ERROR) {
			const struct nlmsgerr *e = NLMSG_DATA(&ans.h);

			return ans.h.nlmsg_len >= NLMSG_LENGTH(sizeof(*e)) && e->error < 0 ? e->error
											      : -EPROTO;
		}
		if (ans.h.nlmsg_type != SOCK_DIAG_BY_FAMILY)
			return -EPROTO;
		return parse_unix(&ans.h, b->ino, queued, max);
	}
	return -EPROTO;
}

int backlog_query(Backlog *b, uint32_t *queued, uint32_t *max)
{
	uint32_t q = 0, m = 0;
	int rc;

	errno = 0;
	rc = b->family == AF_UNIX ? query_unix(b, &q, &m) : query_tcp(b, &q, &m);
	if (rc < 0)
		return rc;
	if (queued)
		*queued = q;
	if (max)
		*max = m;
	return 0;
}
