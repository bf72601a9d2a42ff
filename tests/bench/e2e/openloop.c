/* openloop.c — constant-rate (open-loop) HTTP/1.1 load generator for the e2e benches.
 *
 * DESIGN. A closed-loop tool (wrk) sends the next request only when an answer
 * came back, so a server that stalls also stops the clock: the requests that
 * would have arrived meanwhile are never sent and never measured ("coordinated
 * omission"). Here request i is due at t0 + i / rate whatever happened to the
 * earlier ones, and its latency is measured from that intended time, not from
 * the moment it left: a request that had to wait for a free connection, or
 * behind a slow one, is charged for the wait (what wrk2 does). Keep-alive
 * connections are opened on demand up to --connections; one request in
 * flight per connection (no pipelining, like a browser). One thread: epoll for
 * the sockets, a timerfd for the exact due times. Every latency is kept (the
 * run is bounded), sorted at the end; requests still unanswered --drain
 * seconds after the last one was due are reported as "unanswered" and
 * excluded from the percentiles (they are the first thing to look at).
 *
 * The result is one JSON object on stdout; progress and errors on stderr.
 *
 *   openloop --url http://127.0.0.1:8080/api/v1/reservations --rate 1000
 *            [--duration 10] [--connections 64] [--method POST|GET]
 *            [--sku NAME] [--quantity 1] [--drain 10] [--tag TEXT]
 *
 * POST bodies are {"sku":NAME,"quantity":Q,"session":"ol<pid>-<i>"}: every
 * request a new buyer, so no per-session limit applies.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define OPENLOOP_REQUESTS_MAX 20000000L /* bounds the latency array (160 MB) */
#define OPENLOOP_IN_MAX (1 << 20)       /* a response larger than this is an error */

enum { CONN_CLOSED, CONN_CONNECTING, CONN_IDLE, CONN_BUSY };

typedef struct Conn {
	int fd, state;
	long request;        /* index of the request in flight */
	char *out;
	size_t out_len, out_off;
	char *in;
	size_t in_len, in_cap;
} Conn;

typedef struct Options {
	const char *url, *method, *sku, *tag;
	double rate, duration_s, drain_s;
	int connections, quantity;
} Options;

static struct sockaddr_storage openloop_addr;
static socklen_t openloop_addr_len;
static char openloop_host[256], openloop_path[1024];

static int64_t openloop_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void openloop_die(const char *what)
{
	fprintf(stderr, "openloop: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* Splits http://HOST[:PORT]/PATH and resolves HOST once. */
static void openloop_parse_url(const char *url)
{
	const char *p, *slash, *colon;
	char port[16] = "80";
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res;
	size_t hl;

	if (strncmp(url, "http://", 7) != 0) {
		fprintf(stderr, "openloop: only http:// URLs\n");
		exit(2);
	}
	p = url + 7;
	slash = strchr(p, '/');
	if (!slash)
		slash = p + strlen(p);
	colon = memchr(p, ':', (size_t)(slash - p));
	hl = (size_t)((colon ? colon : slash) - p);
	if (hl == 0 || hl >= sizeof(openloop_host)) {
		fprintf(stderr, "openloop: bad host in %s\n", url);
		exit(2);
	}
	memcpy(openloop_host, p, hl);
	openloop_host[hl] = 0;
	if (colon)
		snprintf(port, sizeof(port), "%.*s", (int)(slash - colon - 1), colon + 1);
	snprintf(openloop_path, sizeof(openloop_path), "%s", *slash ? slash : "/");
	if (getaddrinfo(openloop_host, port, &hints, &res) != 0 || !res) {
		fprintf(stderr, "openloop: cannot resolve %s:%s\n", openloop_host, port);
		exit(2);
	}
	memcpy(&openloop_addr, res->ai_addr, res->ai_addrlen);
	openloop_addr_len = res->ai_addrlen;
	freeaddrinfo(res);
}

static int openloop_connect(Conn *c, int ep)
{
	int one = 1;
	struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT, .data.ptr = c };

	c->fd = socket(openloop_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		return -errno;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(c->fd, (struct sockaddr *)&openloop_addr, openloop_addr_len) != 0 &&
	    errno != EINPROGRESS) {
		int e = -errno;
		close(c->fd);
		c->fd = -1;
		return e;
	}
	c->state = CONN_CONNECTING;
	c->in_len = 0;
	epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
	return 0;
}

static void openloop_close(Conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->state = CONN_CLOSED;
	c->in_len = 0;
	c->out_len = c->out_off = 0;
}

/* Writes what is left of the request; 0, or -1 when the connection broke. */
static int openloop_flush(Conn *c)
{
	while (c->out_off < c->out_len) {
		ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
		if (n < 0)
			return errno == EAGAIN || errno == EINTR ? 0 : -1;
		c->out_off += (size_t)n;
	}
	return 0;
}

static void openloop_format(Conn *c, const Options *opt, long i)
{
	char body[512];
	int n, bl = 0;

	if (strcmp(opt->method, "POST") == 0)
		bl = snprintf(body, sizeof(body), "{\"sku\":\"%s\",\"quantity\":%d,\"session\":\"ol%d-%ld\"}",
			      opt->sku, opt->quantity, (int)getpid(), i);
	if (bl)
		n = snprintf(c->out, 2048,
			     "POST %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: rg-openloop\r\n"
			     "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
			     openloop_path, openloop_host, bl, body);
	else
		n = snprintf(c->out, 2048, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: rg-openloop\r\n\r\n",
			     openloop_path, openloop_host);
	c->out_len = (size_t)n;
	c->out_off = 0;
}

/* Finds the end of one response in c->in. Returns its total length, 0 when
 * more bytes are needed, -1 on a malformed response. *status and *close_after
 * are set when a length is returned. */
static long openloop_response_len(const Conn *c, int *status, int *close_after)
{
	const char *s = c->in, *end, *line, *eol;
	size_t hl;
	long cl = -1;
	int chunked = 0;

	end = memmem(s, c->in_len, "\r\n\r\n", 4);
	if (!end)
		return c->in_len > 65536 ? -1 : 0;
	hl = (size_t)(end - s) + 4;
	if (c->in_len < 12 || strncmp(s, "HTTP/1.", 7) != 0)
		return -1;
	*status = atoi(s + 9);
	*close_after = strncmp(s, "HTTP/1.0", 8) == 0;
	for (line = memchr(s, '\n', hl) + 1; line < end; line = eol + 2) {
		eol = memmem(line, (size_t)(end + 2 - line), "\r\n", 2);
		if (!eol)
			break;
		if (strncasecmp(line, "Content-Length:", 15) == 0)
			cl = atol(line + 15);
		else if (strncasecmp(line, "Transfer-Encoding:", 18) == 0 &&
			 memmem(line, (size_t)(eol - line), "chunked", 7))
			chunked = 1;
		else if (strncasecmp(line, "Connection:", 11) == 0 &&
			 memmem(line, (size_t)(eol - line), "close", 5))
			*close_after = 1;
	}
	if (chunked) {
		size_t off = hl;
		for (;;) {
			const char *nl = memmem(s + off, c->in_len - off, "\r\n", 2);
			long size;
			if (!nl)
				return 0;
			size = strtol(s + off, NULL, 16);
			if (size < 0)
				return -1;
			off = (size_t)(nl - s) + 2;
			if (size == 0) {
				/* No trailers from our servers: just the final CRLF. */
				return c->in_len >= off + 2 ? (long)(off + 2) : 0;
			}
			if (c->in_len < off + (size_t)size + 2)
				return 0;
			off += (size_t)size + 2;
		}
	}
	if (cl < 0)
		cl = (*status == 204 || *status == 304) ? 0 : -1;
	if (cl < 0)
		return -1; /* read-until-close bodies: our servers never send them */
	return c->in_len >= hl + (size_t)cl ? (long)(hl + (size_t)cl) : 0;
}

static int openloop_cmp(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

static int64_t openloop_pct(const int64_t *v, long n, double q)
{
	long i;
	if (n == 0)
		return 0;
	i = (long)(q * (double)n);
	if (i >= n)
		i = n - 1;
	return v[i];
}

int main(int argc, char **argv)
{
	Options opt = { .method = "GET", .sku = "bench-hot", .tag = "", .rate = 100, .duration_s = 5,
			.drain_s = 10, .connections = 64, .quantity = 1 };
	static const struct option options[] = {
		{ "url", required_argument, NULL, 'u' },
		{ "rate", required_argument, NULL, 'r' },
		{ "duration", required_argument, NULL, 'd' },
		{ "connections", required_argument, NULL, 'c' },
		{ "method", required_argument, NULL, 'm' },
		{ "sku", required_argument, NULL, 's' },
		{ "quantity", required_argument, NULL, 'q' },
		{ "drain", required_argument, NULL, 'D' },
		{ "tag", required_argument, NULL, 't' },
		{ NULL, 0, NULL, 0 },
	};
	int o;
	while ((o = getopt_long(argc, argv, "", options, NULL)) != -1) {
		switch (o) {
		case 'u': opt.url = optarg; break;
		case 'r': opt.rate = atof(optarg); break;
		case 'd': opt.duration_s = atof(optarg); break;
		case 'c': opt.connections = atoi(optarg); break;
		case 'm': opt.method = optarg; break;
		case 's': opt.sku = optarg; break;
		case 'q': opt.quantity = atoi(optarg); break;
		case 'D': opt.drain_s = atof(optarg); break;
		case 't': opt.tag = optarg; break;
		default:
			fprintf(stderr, "usage: openloop --url URL --rate R [--duration S] [--connections C] "
					"[--method GET|POST] [--sku S] [--quantity Q] [--drain S] [--tag T]\n");
			return 2;
		}
	}
	if (!opt.url || opt.rate <= 0 || opt.duration_s <= 0 || opt.connections < 1 ||
	    opt.connections > 10000 || (strcmp(opt.method, "GET") && strcmp(opt.method, "POST")) ||
	    strlen(opt.sku) > 64 || strpbrk(opt.sku, "\"\\") || strpbrk(opt.tag, "\"\\")) {
		fprintf(stderr, "openloop: --url and a positive --rate are required; method GET or POST\n");
		return 2;
	}
	openloop_parse_url(opt.url);

	double total_d = opt.rate * opt.duration_s;
	if (total_d < 1 || total_d > (double)OPENLOOP_REQUESTS_MAX) {
		fprintf(stderr, "openloop: rate x duration must be 1..%ld requests\n", OPENLOOP_REQUESTS_MAX);
		return 2;
	}
	long total = (long)total_d;
	double period_ns = 1e9 / opt.rate;
	int64_t *lat_us = calloc((size_t)total, sizeof(int64_t));
	int64_t *late_us = calloc((size_t)total, sizeof(int64_t));
	Conn *conns = calloc((size_t)opt.connections, sizeof(Conn));
	int *idle = calloc((size_t)opt.connections, sizeof(int));
	if (!lat_us || !late_us || !conns || !idle)
		openloop_die("calloc");
	for (int i = 0; i < opt.connections; i++) {
		conns[i].fd = -1;
		conns[i].out = malloc(2048);
		conns[i].in_cap = 8192;
		conns[i].in = malloc(conns[i].in_cap);
		if (!conns[i].out || !conns[i].in)
			openloop_die("malloc");
	}

	int ep = epoll_create1(EPOLL_CLOEXEC);
	int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (ep < 0 || tfd < 0)
		openloop_die("epoll/timerfd");
	struct epoll_event tev = { .events = EPOLLIN, .data.ptr = NULL };
	epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &tev);

	long next_send = 0, completed = 0, errors = 0, done_count = 0, opened = 0;
	long st2 = 0, st4 = 0, st5 = 0, st_other = 0, connect_errors = 0;
	int nidle = 0, nopen = 0, inflight = 0;
	int64_t t0 = openloop_now_ns() + 10000000; /* 10 ms to settle */
	int64_t t_due_end = t0 + (int64_t)((double)total * period_ns);
	int64_t t_drain_end = t_due_end + (int64_t)(opt.drain_s * 1e9);
	int64_t t_last_done = t0;

	for (;;) {
		int64_t now = openloop_now_ns();
		long due = now < t0 ? 0 : (long)((double)(now - t0) / period_ns) + 1;
		if (due > total)
			due = total;

		/* Hand every due request to an idle connection, oldest first. */
		while (next_send < due && nidle > 0) {
			Conn *c = &conns[idle[--nidle]];
			int64_t intended = t0 + (int64_t)((double)next_send * period_ns);
			openloop_format(c, &opt, next_send);
			c->request = next_send;
			c->state = CONN_BUSY;
			late_us[next_send] = (now - intended) / 1000;
			next_send++;
			inflight++;
			if (openloop_flush(c) < 0) {
				errors++;
				done_count++;
				inflight--;
				lat_us[c->request] = -1;
				openloop_close(c);
				nopen--;
				continue;
			}
			if (c->out_off < c->out_len) {
				struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT, .data.ptr = c };
				epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
			}
		}
		/* Still waiting ones: open connections (those connecting count). */
		int connecting = 0;
		for (int i = 0; i < opt.connections; i++)
			connecting += conns[i].state == CONN_CONNECTING;
		for (int i = 0; i < opt.connections && next_send + connecting < due; i++) {
			if (conns[i].state != CONN_CLOSED)
				continue;
			if (openloop_connect(&conns[i], ep) != 0) {
				connect_errors++;
				break;
			}
			nopen++;
			opened++;
			connecting++;
		}
		if (done_count >= total)
			break;
		if (now >= t_drain_end)
			break;

		/* Sleep until the next request is due (exactly, by timerfd) or a socket
		 * has something. */
		struct itimerspec its = { 0 };
		int64_t wake = next_send < total ? t0 + (int64_t)((double)due * period_ns) : t_drain_end;
		if (next_send < due)
			wake = t_drain_end; /* waiting for a connection, not for the clock */
		its.it_value.tv_sec = wake / 1000000000;
		its.it_value.tv_nsec = wake % 1000000000;
		timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);

		struct epoll_event events[256];
		int n = epoll_wait(ep, events, 256, 1000);
		if (n < 0 && errno != EINTR)
			openloop_die("epoll_wait");
		now = openloop_now_ns();
		for (int e = 0; e < n; e++) {
			Conn *c = events[e].data.ptr;
			if (!c) {
				uint64_t x;
				if (read(tfd, &x, sizeof(x)) < 0 && errno != EAGAIN)
					openloop_die("timerfd");
				continue;
			}
			if (c->state == CONN_CONNECTING) {
				int err = 0;
				socklen_t el = sizeof(err);
				if (!(events[e].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
					continue;
				getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
				if (err || (events[e].events & (EPOLLERR | EPOLLHUP))) {
					connect_errors++;
					openloop_close(c);
					nopen--;
					continue;
				}
				struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
				epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
				c->state = CONN_IDLE;
				idle[nidle++] = (int)(c - conns);
				continue;
			}
			if (events[e].events & EPOLLOUT) {
				if (openloop_flush(c) == 0 && c->out_off == c->out_len) {
					struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
					epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
				}
			}
			if (!(events[e].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
				continue;
			int eof = 0;
			for (;;) {
				if (c->in_len == c->in_cap) {
					if (c->in_cap >= OPENLOOP_IN_MAX)
						break;
					c->in_cap *= 2;
					c->in = realloc(c->in, c->in_cap);
					if (!c->in)
						openloop_die("realloc");
				}
				ssize_t got = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
				if (got > 0) {
					c->in_len += (size_t)got;
					continue;
				}
				if (got < 0 && (errno == EAGAIN || errno == EINTR))
					break;
				eof = 1; /* EOF or error: what was read may still hold the answer */
				break;
			}
			int status = 0, close_after = 0;
			long len = c->state == CONN_BUSY && c->in_len ? openloop_response_len(c, &status, &close_after) : 0;
			if (len == 0) {
				if (!eof)
					continue;
				/* The connection ended without (the rest of) an answer. */
				if (c->state == CONN_BUSY) {
					errors++;
					done_count++;
					inflight--;
					lat_us[c->request] = -1;
				} else if (c->state == CONN_IDLE) {
					for (int k = 0; k < nidle; k++)
						if (idle[k] == (int)(c - conns)) {
							idle[k] = idle[--nidle];
							break;
						}
				}
				openloop_close(c);
				nopen--;
				continue;
			}
			inflight--;
			done_count++;
			if (len < 0) {
				errors++;
				lat_us[c->request] = -1;
				openloop_close(c);
				nopen--;
				continue;
			}
			int64_t intended = t0 + (int64_t)((double)c->request * period_ns);
			lat_us[c->request] = (now - intended) / 1000;
			completed++;
			t_last_done = now;
			if (status >= 200 && status < 300)
				st2++;
			else if (status >= 400 && status < 500)
				st4++;
			else if (status >= 500 && status < 600)
				st5++;
			else
				st_other++;
			memmove(c->in, c->in + len, c->in_len - (size_t)len);
			c->in_len -= (size_t)len;
			if (close_after || eof) {
				openloop_close(c);
				nopen--;
			} else {
				c->state = CONN_IDLE;
				idle[nidle++] = (int)(c - conns);
			}
		}
	}

	/* Percentiles over answered requests; late sends over sent ones. */
	long m = 0;
	double sum = 0;
	for (long i = 0; i < total; i++)
		if (i < next_send && lat_us[i] > 0) { /* 0: unanswered, -1: failed */
			lat_us[m++] = lat_us[i];
			sum += (double)lat_us[i];
		}
	qsort(lat_us, (size_t)m, sizeof(int64_t), openloop_cmp);
	qsort(late_us, (size_t)next_send, sizeof(int64_t), openloop_cmp);
	double span_s = (double)(t_last_done - t0) / 1e9;
	long unanswered = total - done_count;

	printf("{\"tool\":\"openloop\",\"tag\":\"%s\",\"url\":\"%s\",\"method\":\"%s\","
	       "\"rate\":%.1f,\"duration_s\":%.2f,\"connections_max\":%d,"
	       "\"requests\":%ld,\"sent\":%ld,\"answered\":%ld,\"unanswered\":%ld,\"errors\":%ld,"
	       "\"connect_errors\":%ld,\"connections_opened\":%ld,"
	       "\"status\":{\"2xx\":%ld,\"4xx\":%ld,\"5xx\":%ld,\"other\":%ld},"
	       "\"achieved_rps\":%.1f,"
	       "\"latency_us\":{\"p50\":%lld,\"p90\":%lld,\"p99\":%lld,\"p999\":%lld,\"max\":%lld,"
	       "\"mean\":%.0f},"
	       "\"send_late_us\":{\"p50\":%lld,\"p99\":%lld,\"max\":%lld}}\n",
	       opt.tag, opt.url, opt.method, opt.rate, opt.duration_s, opt.connections, total,
	       next_send, completed, unanswered, errors, connect_errors, opened, st2, st4, st5,
	       st_other, span_s > 0 ? (double)completed / span_s : 0.0,
	       (long long)openloop_pct(lat_us, m, 0.50), (long long)openloop_pct(lat_us, m, 0.90),
	       (long long)openloop_pct(lat_us, m, 0.99), (long long)openloop_pct(lat_us, m, 0.999),
	       (long long)(m ? lat_us[m - 1] : 0), m ? sum / (double)m : 0.0,
	       (long long)openloop_pct(late_us, next_send, 0.50),
	       (long long)openloop_pct(late_us, next_send, 0.99),
	       (long long)(next_send ? late_us[next_send - 1] : 0));
	(void)inflight;
	(void)nopen;
	for (int i = 0; i < opt.connections; i++) {
		if (conns[i].fd >= 0)
			close(conns[i].fd);
		free(conns[i].out);
		free(conns[i].in);
	}
	free(conns);
	free(idle);
	free(lat_us);
	free(late_us);
	close(tfd);
	close(ep);
	return 0;
}
