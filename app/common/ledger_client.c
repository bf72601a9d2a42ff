/* ledger_client.c — a blocking client for the ledger's Unix socket.
 *
 * DESIGN. The socket is non-blocking once connected and every wait is a
 * poll(2) with a deadline, so no call can hang past its timeout. Requests are
 * encoded into a send buffer and written by flush; responses are read into a
 * receive buffer and cut into frames by the incremental decoder, so several
 * responses that arrive in one read are handed out one per recv without
 * another syscall. flush has no timeout argument in the header; it uses the
 * one given to connect, so a stuck ledger cannot wedge a worker forever.
 *
 * Pipelining caveat: flush does not read. A caller that sends more requests
 * than the socket buffers hold in responses (hundreds of frames) before
 * receiving can see flush time out while the ledger waits for it to read. */
#include "common/ledger_client.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/xmalloc.h"

struct LedgerClient {
	int fd;
	int timeout_ms;     /* from connect; bounds each flush */
	unsigned shards;
	uint64_t next_id;
	Buf out;            /* encoded requests not yet written */
	Buf in;             /* bytes read, not yet decoded */
};

/* Deadline in monotonic ns for a timeout in ms; -1 stays "never". */
static int64_t deadline_after(int timeout_ms)
{
	if (timeout_ms < 0)
		return -1;
	return clock_mono_ns() + (int64_t)timeout_ms * 1000000;
}

/* Waits for events on fd until deadline. Returns 0 when ready, -ETIMEDOUT,
 * or a negative errno. */
static int wait_fd(int fd, short events, int64_t deadline)
{
	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = events };
		int ms = -1;
		if (deadline >= 0) {
			int64_t left_ns = deadline - clock_mono_ns();
			/* Round up: a 0 ms poll just before the deadline would spin. */
			ms = left_ns <= 0 ? 0 : (int)((left_ns + 999999) / 1000000);
		}
		int n = poll(&pfd, 1, ms);
		if (n > 0)
			return 0; /* includes POLLHUP/POLLERR: the next read/write reports it */
		if (n == 0)
			return -ETIMEDOUT;
		if (errno != EINTR)
			return -errno;
	}
}

static int flush_until(LedgerClient *c, int64_t deadline)
{
	size_t done = 0;
	int rc = 0;

	while (done < c->out.len) {
		/* MSG_NOSIGNAL: a ledger that went away must be an -EPIPE, not a dead worker. */
		ssize_t n = send(c->fd, c->out.data + done, c->out.len - done, MSG_NOSIGNAL);
		if (n >= 0) {
			done += (size_t)n;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK) {
			rc = -errno;
			break;
		}
		rc = wait_fd(c->fd, POLLOUT, deadline);
		if (rc < 0)
			break;
	}
	buf_consume(&c->out, done);
	return rc;
}

static int recv_until(LedgerClient *c, WireResponse *resp, int64_t deadline)
{
	for (;;) {
		size_t used;
		const char *why;
		WireDecode d = wire_decode_response(c->in.data, c->in.len, resp, &used, &why);
		if (d == WIRE_DECODE_OK) {
			buf_consume(&c->in, used);
			return 0;
		}
		if (d == WIRE_DECODE_ERROR)
			return -EPROTO;

		buf_reserve(&c->in, WIRE_FRAME_MAX);
		ssize_t n = recv(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len, 0);
		if (n > 0) {
			c->in.len += (size_t)n;
			continue;
		}
		if (n == 0)
			return -ECONNRESET;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		int rc = wait_fd(c->fd, POLLIN, deadline);
		if (rc < 0)
			return rc;
	}
}

/* A Unix connect only blocks while the listen backlog is full; SO_SNDTIMEO
 * bounds that wait (the kernel then fails with EAGAIN), which a non-blocking
 * connect cannot do: it fails at once instead of waiting for room. */
static int connect_unix(const char *path, int timeout_ms, int *out_fd)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	size_t len = strlen(path);
	int fd, rc;

	if (len >= sizeof(addr.sun_path))
		return -ENAMETOOLONG;
	memcpy(addr.sun_path, path, len + 1);

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (timeout_ms >= 0) {
		int ms = timeout_ms > 0 ? timeout_ms : 1; /* 0 would mean "forever" */
		struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };
		if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0)
			goto fail;
	}
	do {
		rc = connect(fd, (struct sockaddr *)&addr, sizeof(addr));
	} while (rc < 0 && errno == EINTR);
	if (rc < 0) {
		if (errno == EAGAIN)
			errno = ETIMEDOUT;
		goto fail;
	}
	int flags = fcntl(fd, F_GETFL);
	if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
		goto fail;
	*out_fd = fd;
	return 0;
fail:
	rc = -errno;
	close(fd);
	return rc;
}

static int handshake(LedgerClient *c, int timeout_ms)
{
	WireRequest req = { .op = WIRE_OP_HELLO, .magic = WIRE_MAGIC, .version = WIRE_VERSION };
	WireResponse resp;
	int rc;

	ledger_client_send(c, &req);
	rc = flush_until(c, deadline_after(timeout_ms));
	if (rc < 0)
		return rc;
	rc = recv_until(c, &resp, deadline_after(timeout_ms));
	if (rc < 0)
		return rc;
	/* VERSION_MISMATCH is a bad handshake too: the ledger closes after it. */
	if (resp.op != WIRE_OP_HELLO || resp.id != req.id || resp.status != WIRE_OK ||
	    resp.u.hello.version != WIRE_VERSION || resp.u.hello.shards == 0)
		return -EPROTO;
	c->shards = resp.u.hello.shards;
	return 0;
}

int ledger_client_connect(const char *path, int timeout_ms, LedgerClient **out)
{
	LedgerClient *c;
	int fd = -1, rc;

	rc = connect_unix(path, timeout_ms, &fd);
	if (rc < 0)
		return rc;
	c = xcalloc(1, sizeof(*c));
	c->fd = fd;
	c->timeout_ms = timeout_ms;
	c->next_id = 1;
	buf_init(&c->out, WIRE_FRAME_MAX);
	buf_init(&c->in, 2 * WIRE_FRAME_MAX);
	rc = handshake(c, timeout_ms);
	if (rc < 0) {
		ledger_client_close(c);
		return rc;
	}
	*out = c;
	return 0;
}

void ledger_client_close(LedgerClient *c)
{
	if (!c)
		return;
	close(c->fd);
	buf_free(&c->out);
	buf_free(&c->in);
	free(c);
}

unsigned ledger_client_shards(const LedgerClient *c)
{
	return c->shards;
}

void ledger_client_send(LedgerClient *c, WireRequest *req)
{
	if (req->id == 0)
		req->id = c->next_id++;
	wire_encode_request(&c->out, req);
}

int ledger_client_flush(LedgerClient *c)
{
	return flush_until(c, deadline_after(c->timeout_ms));
}

int ledger_client_recv(LedgerClient *c, WireResponse *resp, int timeout_ms)
{
	return recv_until(c, resp, deadline_after(timeout_ms));
}

int ledger_client_call(LedgerClient *c, WireRequest *req, WireResponse *resp, int timeout_ms)
{
	int64_t deadline = deadline_after(timeout_ms);
	int rc;

	ledger_client_send(c, req);
	rc = flush_until(c, deadline);
	if (rc < 0)
		return rc;
	rc = recv_until(c, resp, deadline);
	if (rc < 0)
		return rc;
	/* With one request in flight, any other answer means the stream is off. */
	if (resp->id != req->id || resp->op != req->op)
		return -EPROTO;
	return 0;
}
