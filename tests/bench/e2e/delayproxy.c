/* delayproxy.c — a TCP proxy that adds a fixed round-trip time, for the geography bench.
 *
 * DESIGN. netem is not available on our machines (no sch_netem module), so a
 * wide-area link to PostgreSQL is emulated in user space: every chunk read
 * from one side is forwarded to the other side RTT/2 after it arrived, in
 * each direction, in order. A request/answer exchange therefore costs one
 * RTT, and a client that pipelines (the write-behind sends a batch before it
 * reads the answers) pays the RTT once per exchange, not per row — as on a
 * real link. Bandwidth and loss are not emulated. Buffers are bounded: when a
 * direction holds --buffer bytes not yet delivered, reading from its source
 * stops (TCP back-pressure) until they drain. One thread: epoll for the
 * sockets, a timerfd set to the earliest delivery time.
 *
 *   delayproxy --listen 127.0.0.1:PORT --to unix:/path/.s.PGSQL.5432|HOST:PORT
 *              --rtt-ms 75 [--buffer 4194304]
 *
 * Prints "ready" on stdout once it listens; runs until SIGTERM/SIGINT.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define DELAYPROXY_CHUNK 65536
#define DELAYPROXY_REMOVED 0xffffffffu /* armed[] of a side no longer in epoll */

typedef struct Chunk {
	struct Chunk *next;
	int64_t due_ns;
	size_t len, off;
	char data[];
} Chunk;

/* One direction of a pair: bytes read from `from`, queued, written to `to`. */
typedef struct Dir {
	int from, to;
	Chunk *head, *tail;
	size_t queued;
	int eof;       /* `from` reached EOF: shut `to` down once the queue is empty */
	int shut;      /* that shutdown happened */
	int paused;    /* not reading `from`: the queue is full */
} Dir;

typedef struct Pair {
	struct Pair *next, *prev;
	int fd[2];     /* 0: the client that connected to us, 1: upstream */
	Dir dir[2];    /* 0: client → upstream, 1: upstream → client */
	uint32_t armed[2]; /* the epoll events each side is registered for */
	int dead;
} Pair;

static int64_t delayproxy_delay_ns;
static size_t delayproxy_buffer_max = 4u << 20;
static Pair *delayproxy_pairs;
static int delayproxy_ep;
static volatile sig_atomic_t delayproxy_stop;
static struct sockaddr_storage delayproxy_up;
static socklen_t delayproxy_up_len;

static int64_t delayproxy_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void delayproxy_on_signal(int sig)
{
	delayproxy_stop = 1;
}

/* Parses unix:PATH or HOST:PORT (numeric IPv4) into an address. */
static int delayproxy_addr(const char *spec, struct sockaddr_storage *ss, socklen_t *len)
{
	memset(ss, 0, sizeof(*ss));
	if (strncmp(spec, "unix:", 5) == 0) {
		struct sockaddr_un *un = (struct sockaddr_un *)ss;
		if (strlen(spec + 5) >= sizeof(un->sun_path))
			return -ENAMETOOLONG;
		un->sun_family = AF_UNIX;
		strcpy(un->sun_path, spec + 5);
		*len = sizeof(*un);
		return 0;
	}
	const char *colon = strrchr(spec, ':');
	struct sockaddr_in *in = (struct sockaddr_in *)ss;
	char host[64];
	if (!colon || (size_t)(colon - spec) >= sizeof(host))
		return -EINVAL;
	memcpy(host, spec, (size_t)(colon - spec));
	host[colon - spec] = 0;
	in->sin_family = AF_INET;
	in->sin_port = htons((uint16_t)atoi(colon + 1));
	if (inet_pton(AF_INET, host, &in->sin_addr) != 1)
		return -EINVAL;
	*len = sizeof(*in);
	return 0;
}

/* Re-arms epoll for side `i` of the pair: readable unless its outgoing
 * direction is paused or at EOF, writable when the direction into it has
 * bytes due but blocked. epoll data: the pair's address | the side (pairs
 * are malloc-aligned, so bit 0 is free; 1 and 3 tag the listener and timer). */
static void delayproxy_watch(Pair *p, int i, int want_out)
{
	struct epoll_event ev = { .events = 0 };

	if (p->fd[i] < 0 || p->armed[i] == DELAYPROXY_REMOVED)
		return;
	if (!p->dir[i].paused && !p->dir[i].eof)
		ev.events |= EPOLLIN;
	if (want_out)
		ev.events |= EPOLLOUT;
	if (ev.events == p->armed[i])
		return;
	p->armed[i] = ev.events;
	ev.data.u64 = ((uint64_t)(uintptr_t)p) | (uint64_t)i;
	epoll_ctl(delayproxy_ep, EPOLL_CTL_MOD, p->fd[i], &ev);
}

static void delayproxy_kill(Pair *p)
{
	for (int i = 0; i < 2; i++) {
		if (p->fd[i] >= 0)
			close(p->fd[i]);
		p->fd[i] = -1;
		Chunk *c = p->dir[i].head;
		while (c) {
			Chunk *n = c->next;
			free(c);
			c = n;
		}
		p->dir[i].head = p->dir[i].tail = NULL;
	}
	p->dead = 1;
}

/* Side i hung up after its EOF: drop the direction into it and its epoll
 * registration; the pair ends once the other direction has delivered. */
static void delayproxy_gone(Pair *p, int i)
{
	Dir *in = &p->dir[1 - i];
	Chunk *c = in->head;

	epoll_ctl(delayproxy_ep, EPOLL_CTL_DEL, p->fd[i], NULL);
	p->armed[i] = DELAYPROXY_REMOVED;
	while (c) {
		Chunk *n = c->next;
		free(c);
		c = n;
	}
	in->head = in->tail = NULL;
	in->queued = 0;
	in->eof = in->shut = 1;
}

/* Reads what `from` has into the direction's queue, due after the delay. */
static void delayproxy_read(Pair *p, int i)
{
	Dir *d = &p->dir[i];
	while (!d->paused && !d->eof) {
		Chunk *c = malloc(sizeof(Chunk) + DELAYPROXY_CHUNK);
		if (!c) {
			delayproxy_kill(p);
			return;
		}
		ssize_t n = recv(d->from, c->data, DELAYPROXY_CHUNK, MSG_DONTWAIT);
		if (n <= 0) {
			free(c);
			if (n < 0 && (errno == EAGAIN || errno == EINTR))
				break;
			if (n < 0) {
				delayproxy_kill(p);
				return;
			}
			d->eof = 1;
			break;
		}
		c->next = NULL;
		c->len = (size_t)n;
		c->off = 0;
		c->due_ns = delayproxy_now_ns() + delayproxy_delay_ns;
		if (d->tail)
			d->tail->next = c;
		else
			d->head = c;
		d->tail = c;
		d->queued += (size_t)n;
		if (d->queued >= delayproxy_buffer_max)
			d->paused = 1;
	}
}

/* Writes every chunk of the direction that is due; returns 1 when the
 * destination would block with bytes due. */
static int delayproxy_deliver(Pair *p, int i, int64_t now)
{
	Dir *d = &p->dir[i];
	while (d->head && d->head->due_ns <= now) {
		Chunk *c = d->head;
		ssize_t n = send(d->to, c->data + c->off, c->len - c->off, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return 1;
			delayproxy_kill(p);
			return 0;
		}
		c->off += (size_t)n;
		d->queued -= (size_t)n;
		if (c->off < c->len)
			return 1;
		d->head = c->next;
		if (!d->head)
			d->tail = NULL;
		free(c);
	}
	if (d->paused && d->queued < delayproxy_buffer_max / 2)
		d->paused = 0;
	if (d->eof && !d->head && !d->shut) {
		shutdown(d->to, SHUT_WR);
		d->shut = 1;
	}
	return 0;
}

static void delayproxy_accept(int lfd)
{
	for (;;) {
		int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (c < 0)
			return;
		int u = socket(delayproxy_up.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		/* A blocking connect: the upstream is local and accepts at once. */
		if (u < 0 || connect(u, (struct sockaddr *)&delayproxy_up, delayproxy_up_len) != 0) {
			fprintf(stderr, "delayproxy: cannot reach upstream: %s\n", strerror(errno));
			if (u >= 0)
				close(u);
			close(c);
			continue;
		}
		int one = 1;
		setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (delayproxy_up.ss_family == AF_INET)
			setsockopt(u, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		Pair *p = calloc(1, sizeof(Pair));
		if (!p) {
			close(c);
			close(u);
			continue;
		}
		p->fd[0] = c;
		p->fd[1] = u;
		p->dir[0].from = c;
		p->dir[0].to = u;
		p->dir[1].from = u;
		p->dir[1].to = c;
		p->next = delayproxy_pairs;
		if (p->next)
			p->next->prev = p;
		delayproxy_pairs = p;
		for (int i = 0; i < 2; i++) {
			struct epoll_event ev = { .events = EPOLLIN };
			ev.data.u64 = ((uint64_t)(uintptr_t)p) | (uint64_t)i;
			p->armed[i] = EPOLLIN;
			epoll_ctl(delayproxy_ep, EPOLL_CTL_ADD, p->fd[i], &ev);
		}
	}
}

int main(int argc, char **argv)
{
	const char *listen_spec = NULL, *to_spec = NULL;
	double rtt_ms = -1;
	static const struct option options[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "to", required_argument, NULL, 't' },
		{ "rtt-ms", required_argument, NULL, 'r' },
		{ "buffer", required_argument, NULL, 'b' },
		{ NULL, 0, NULL, 0 },
	};
	int o;
	while ((o = getopt_long(argc, argv, "", options, NULL)) != -1) {
		switch (o) {
		case 'l': listen_spec = optarg; break;
		case 't': to_spec = optarg; break;
		case 'r': rtt_ms = atof(optarg); break;
		case 'b': delayproxy_buffer_max = (size_t)atol(optarg); break;
		default: goto usage;
		}
	}
	struct sockaddr_storage lss;
	socklen_t lss_len;
	if (!listen_spec || !to_spec || rtt_ms < 0 || delayproxy_buffer_max < 4096 ||
	    delayproxy_addr(listen_spec, &lss, &lss_len) != 0 || lss.ss_family != AF_INET ||
	    delayproxy_addr(to_spec, &delayproxy_up, &delayproxy_up_len) != 0)
		goto usage;
	delayproxy_delay_ns = (int64_t)(rtt_ms * 1e6 / 2);

	struct sigaction sa = { .sa_handler = delayproxy_on_signal };
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	int one = 1;
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&lss, lss_len) != 0 || listen(lfd, 128) != 0) {
		fprintf(stderr, "delayproxy: cannot listen on %s: %s\n", listen_spec, strerror(errno));
		return 1;
	}
	delayproxy_ep = epoll_create1(EPOLL_CLOEXEC);
	int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	struct epoll_event ev = { .events = EPOLLIN };
	ev.data.u64 = 1; /* the listener: pair pointers are aligned, so 1 and 3 are free */
	epoll_ctl(delayproxy_ep, EPOLL_CTL_ADD, lfd, &ev);
	ev.data.u64 = 3;
	epoll_ctl(delayproxy_ep, EPOLL_CTL_ADD, tfd, &ev);
	printf("ready\n");
	fflush(stdout);

	while (!delayproxy_stop) {
		int64_t now = delayproxy_now_ns(), next = INT64_MAX;
		/* Deliver what is due, drop dead pairs, find the next due time. */
		for (Pair *p = delayproxy_pairs, *n; p; p = n) {
			n = p->next;
			int blocked[2] = { 0, 0 };
			for (int i = 0; i < 2 && !p->dead; i++) {
				blocked[i] = delayproxy_deliver(p, i, now);
				if (!p->dead && p->dir[i].head && !blocked[i] && p->dir[i].head->due_ns < next)
					next = p->dir[i].head->due_ns;
			}
			/* Side s is written by direction 1 - s (dir 0 goes to fd[1]). */
			for (int s = 0; s < 2 && !p->dead; s++)
				delayproxy_watch(p, s, blocked[1 - s]);
			if (!p->dead && p->dir[0].shut && p->dir[1].shut)
				delayproxy_kill(p);
			if (p->dead) {
				if (p->prev)
					p->prev->next = p->next;
				else
					delayproxy_pairs = p->next;
				if (p->next)
					p->next->prev = p->prev;
				free(p);
			}
		}
		struct itimerspec its = { 0 };
		if (next != INT64_MAX) {
			its.it_value.tv_sec = next / 1000000000;
			its.it_value.tv_nsec = next % 1000000000;
		}
		timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);

		struct epoll_event events[128];
		int nev = epoll_wait(delayproxy_ep, events, 128, 1000);
		for (int e = 0; e < nev; e++) {
			uint64_t tag = events[e].data.u64;
			if (tag == 1) {
				delayproxy_accept(lfd);
			} else if (tag == 3) {
				uint64_t x;
				if (read(tfd, &x, sizeof(x)) < 0 && errno != EAGAIN)
					return 1;
			} else {
				Pair *p = (Pair *)(uintptr_t)(tag & ~(uint64_t)1);
				int i = (int)(tag & 1);
				if (p->dead)
					continue;
				if (events[e].events & EPOLLERR) {
					delayproxy_kill(p);
					continue;
				}
				/* HUP after EOF: side i is gone both ways. What it sent still
				 * goes out after the delay; what was going to it cannot. epoll
				 * reports HUP whatever it is asked for, so stop watching. */
				if ((events[e].events & EPOLLHUP) && p->dir[i].eof) {
					delayproxy_gone(p, i);
					continue;
				}
				if (events[e].events & (EPOLLIN | EPOLLHUP))
					delayproxy_read(p, i);
				/* EPOLLOUT: the delivery pass at the top of the loop writes. */
			}
		}
	}
	while (delayproxy_pairs) {
		Pair *p = delayproxy_pairs;
		delayproxy_pairs = p->next;
		delayproxy_kill(p);
		free(p);
	}
	close(tfd);
	close(lfd);
	close(delayproxy_ep);
	return 0;

usage:
	fprintf(stderr, "usage: delayproxy --listen 127.0.0.1:PORT --to unix:PATH|HOST:PORT "
			"--rtt-ms MS [--buffer BYTES]\n");
	return 2;
}
