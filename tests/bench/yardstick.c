/* yardstick.c — the physical ceiling for durable acknowledgements on this machine.
 *
 *   rg-yardstick serve --socket PATH --file PATH [--no-sync]
 *   rg-yardstick bench --socket PATH [--connections 50] [--duration 5]
 *
 * DESIGN: `serve` is the least a durable server can do. One thread, one epoll
 * loop: take every 32-byte frame that is ready on any connection, append them
 * all to one file with a single write(2), one fdatasync(2), then echo each frame
 * back to its sender. No parsing, no state, no allocation per request — so its
 * acknowledged requests/s is what the disk's flush rate and the Unix-socket
 * round trip allow, and any real system (ours, Redis with appendfsync always,
 * PostgreSQL with synchronous_commit) can be read as a fraction of it. It is
 * the "naive" group commit: a batch is whatever is ready when the previous
 * fdatasync returns, nothing waits to gather more.
 *
 * `bench` is its closed-loop client: `connections` connections driven by one
 * epoll thread (like rg-bench --threads 1 and redis-benchmark), one frame in
 * flight each, the next sent the moment the echo arrives. It prints ops/s and
 * latency percentiles; `serve` prints frames and fdatasyncs on SIGTERM.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "tools/latency.h"

#define FRAME_LEN 32
#define CONN_MAX 4096
#define CONN_BUF_LEN 8192     /* per connection: 256 frames, far above one in flight */
#define HIST_US 200000        /* latencies above 200 ms land in the last bucket */

typedef struct YardConn {
	int fd;
	size_t in_len;        /* bytes buffered in `in`; whole frames are echoed after the sync */
	size_t ready;         /* bytes of whole frames taken into the current batch */
	uint8_t in[CONN_BUF_LEN];
	int64_t sent_ns;      /* client side: when the frame in flight left */
	uint64_t seq;
} YardConn;

static volatile sig_atomic_t yard_stop;

static void yard_on_signal(int sig)
{
	(void)sig;
	yard_stop = 1;
}

static void yard_die(const char *what)
{
	fprintf(stderr, "rg-yardstick: %s: %s\n", what, strerror(errno));
	exit(1);
}

static int64_t yard_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void yard_sockaddr(const char *path, struct sockaddr_un *sa)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sa->sun_path)) {
		fprintf(stderr, "rg-yardstick: socket path too long: %s\n", path);
		exit(2);
	}
	memcpy(sa->sun_path, path, strlen(path) + 1);
}

/* Writes all of buf to a blocking or non-blocking fd; returns 0 or -errno.
 * The echo is at most a few frames, so a full socket buffer here means the
 * peer stopped reading: treat it as gone. */
static int yard_write_all(int fd, const uint8_t *buf, size_t len)
{
	while (len) {
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

static int yard_serve(const char *sock_path, const char *file_path, int sync)
{
	int log_fd = open(file_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
	if (log_fd < 0)
		yard_die("open log file");
	struct sockaddr_un sa;
	yard_sockaddr(sock_path, &sa);
	unlink(sock_path);
	int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(lfd, 1024) != 0)
		yard_die("listen");
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event lev = { .events = EPOLLIN, .data.ptr = NULL };
	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev) != 0)
		yard_die("epoll");

	static YardConn conns[CONN_MAX];
	static YardConn *batch_conns[CONN_MAX];
	uint8_t *batch = NULL; /* grows to the largest batch seen */
	size_t batch_cap = 0;
	uint64_t frames = 0, syncs = 0;
	struct epoll_event events[CONN_MAX];
	while (!yard_stop) {
		int n = epoll_wait(ep, events, CONN_MAX, 100);
		if (n < 0 && errno != EINTR)
			yard_die("epoll_wait");
		size_t batch_len = 0;
		int nbatch = 0;
		for (int e = 0; e < n; e++) {
			YardConn *c = events[e].data.ptr;
			if (!c) {
				int fd;
				while ((fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC)) >= 0) {
					if (fd >= CONN_MAX) {
						close(fd);
						continue;
					}
					conns[fd] = (YardConn){ .fd = fd };
					struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &conns[fd] };
					epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
				}
				continue;
			}
			ssize_t got = recv(c->fd, c->in + c->in_len, CONN_BUF_LEN - c->in_len, MSG_DONTWAIT);
			if (got <= 0) {
				if (got < 0 && (errno == EAGAIN || errno == EINTR))
					continue;
				close(c->fd); /* also leaves the epoll set */
				c->fd = -1;
				c->in_len = 0;
				continue;
			}
			c->in_len += (size_t)got;
			size_t whole = c->in_len / FRAME_LEN * FRAME_LEN;
			if (!whole)
				continue; /* a partial frame: the rest is on its way */
			if (batch_len + whole > batch_cap) {
				batch_cap = 2 * (batch_len + whole);
				batch = realloc(batch, batch_cap);
				if (!batch)
					yard_die("realloc");
			}
			memcpy(batch + batch_len, c->in, whole);
			batch_len += whole;
			c->ready = whole;
			batch_conns[nbatch++] = c;
		}
		if (!batch_len)
			continue;
		if (write(log_fd, batch, batch_len) != (ssize_t)batch_len)
			yard_die("write log");
		if (sync && fdatasync(log_fd) != 0)
			yard_die("fdatasync"); /* like the ledger: never carry on after a failed sync */
		syncs++;
		frames += batch_len / FRAME_LEN;
		/* Only now, with the batch on stable storage, acknowledge it. */
		for (int i = 0; i < nbatch; i++) {
			YardConn *c = batch_conns[i];
			if (c->fd < 0)
				continue;
			if (yard_write_all(c->fd, c->in, c->ready) != 0) {
				close(c->fd);
				c->fd = -1;
				c->in_len = 0;
				continue;
			}
			memmove(c->in, c->in + c->ready, c->in_len - c->ready);
			c->in_len -= c->ready;
			c->ready = 0;
		}
	}
	printf("frames %llu fdatasyncs %llu frames_per_sync %.1f\n", (unsigned long long)frames,
	       (unsigned long long)syncs, syncs ? (double)frames / (double)syncs : 0.0);
	fflush(stdout);
	free(batch);
	close(log_fd);
	unlink(sock_path);
	return 0;
}

static void yard_send_frame(YardConn *c)
{
	uint8_t frame[FRAME_LEN];
	memset(frame, 0xA5, sizeof(frame));
	c->seq++;
	memcpy(frame, &c->seq, sizeof(c->seq));
	c->sent_ns = yard_now_ns();
	if (yard_write_all(c->fd, frame, sizeof(frame)) != 0)
		yard_die("send");
}

static int yard_bench(const char *sock_path, int connections, int duration_s)
{
	struct sockaddr_un sa;
	yard_sockaddr(sock_path, &sa);
	YardConn *conns = calloc((size_t)connections, sizeof(YardConn));
	uint32_t *hist = calloc(HIST_US, sizeof(uint32_t));
	int ep = epoll_create1(EPOLL_CLOEXEC);
	if (!conns || !hist || ep < 0)
		yard_die("setup");
	for (int i = 0; i < connections; i++) {
		YardConn *c = &conns[i];
		c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
			yard_die("connect");
		struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
		epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
	}
	int64_t start = yard_now_ns(), stop_at = start + (int64_t)duration_s * 1000000000;
	for (int i = 0; i < connections; i++)
		yard_send_frame(&conns[i]);
	uint64_t done = 0;
	struct epoll_event events[256];
	while (yard_now_ns() < stop_at) {
		int n = epoll_wait(ep, events, 256, 100);
		for (int e = 0; e < n; e++) {
			YardConn *c = events[e].data.ptr;
			ssize_t got = recv(c->fd, c->in + c->in_len, CONN_BUF_LEN - c->in_len, MSG_DONTWAIT);
			if (got <= 0) {
				if (got < 0 && (errno == EAGAIN || errno == EINTR))
					continue;
				fprintf(stderr, "rg-yardstick: the server closed a connection\n");
				return 1;
			}
			c->in_len += (size_t)got;
			if (c->in_len < FRAME_LEN)
				continue;
			uint64_t seq;
			memcpy(&seq, c->in, sizeof(seq));
			if (seq != c->seq) {
				fprintf(stderr, "rg-yardstick: echo out of order\n");
				return 1;
			}
			c->in_len -= FRAME_LEN;
			memmove(c->in, c->in + FRAME_LEN, c->in_len);
			int64_t us = (yard_now_ns() - c->sent_ns) / 1000;
			hist[us < HIST_US ? us : HIST_US - 1]++;
			done++;
			yard_send_frame(c);
		}
	}
	double secs = (double)(yard_now_ns() - start) / 1e9;
	printf("connections=%d duration=%.1fs\n", connections, secs);
	printf("  echoes/s %10.0f   (acknowledged %llu)\n", (double)done / secs, (unsigned long long)done);
	printf("  latency us     p50 %lld  p99 %lld  p99.9 %lld\n",
	       (long long)latency_percentile_us(hist, HIST_US, done, 0.50),
	       (long long)latency_percentile_us(hist, HIST_US, done, 0.99),
	       (long long)latency_percentile_us(hist, HIST_US, done, 0.999));
	for (int i = 0; i < connections; i++)
		close(conns[i].fd);
	free(conns);
	free(hist);
	close(ep);
	return done ? 0 : 1;
}

int main(int argc, char **argv)
{
	const char *usage = "usage: rg-yardstick serve --socket PATH --file PATH [--no-sync]\n"
			    "       rg-yardstick bench --socket PATH [--connections N] [--duration S]\n";
	if (argc < 2) {
		fputs(usage, stderr);
		return 2;
	}
	const char *mode = argv[1], *sock_path = NULL, *file_path = NULL;
	int connections = 50, duration_s = 5, sync = 1;
	static const struct option options[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "file", required_argument, NULL, 'f' },
		{ "no-sync", no_argument, NULL, 'N' },
		{ "connections", required_argument, NULL, 'c' },
		{ "duration", required_argument, NULL, 'd' },
		{ NULL, 0, NULL, 0 },
	};
	int o;
	optind = 2;
	while ((o = getopt_long(argc, argv, "", options, NULL)) != -1) {
		switch (o) {
		case 's': sock_path = optarg; break;
		case 'f': file_path = optarg; break;
		case 'N': sync = 0; break;
		case 'c': connections = atoi(optarg); break;
		case 'd': duration_s = atoi(optarg); break;
		default: fputs(usage, stderr); return 2;
		}
	}
	if (!sock_path || connections < 1 || connections > CONN_MAX - 16 || duration_s < 1) {
		fputs(usage, stderr);
		return 2;
	}
	if (strcmp(mode, "serve") == 0) {
		if (!file_path) {
			fputs(usage, stderr);
			return 2;
		}
		struct sigaction sa = { .sa_handler = yard_on_signal };
		sigaction(SIGTERM, &sa, NULL);
		sigaction(SIGINT, &sa, NULL);
		return yard_serve(sock_path, file_path, sync);
	}
	if (strcmp(mode, "bench") == 0)
		return yard_bench(sock_path, connections, duration_s);
	fputs(usage, stderr);
	return 2;
}
