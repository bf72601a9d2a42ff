/* rg_drill.c — a flash-sale drill through the public HTTP API.
 *
 * Many buyers race for few units: each buyer POSTs one reservation (with its
 * own session and idempotency key) for a random SKU, over keep-alive HTTP/1.1
 * connections driven by one epoll loop. A share of the winners then confirm.
 * Afterwards every SKU is read back and the drill checks what API.md
 * promises: no SKU sold or held more than its stock, and the ledger's
 * counters equal the answers the buyers got. Prints a progress line while it
 * runs and a summary table at the end; exits 1 if anything was oversold or
 * disagrees.
 *
 *   rg-drill --url http://127.0.0.1:8080/api --admin-token T
 *            [--buyers 20000] [--skus 10] [--units 500] [--connections 64]
 *            [--confirm-percent 50] [--prefix drill]
 */
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/clock.h"
#include "common/xmalloc.h"
#include "tools/latency.h"

#define HIST_US 2000000
#define RESPONSE_MAX (64 * 1024)

typedef struct Options {
	const char *url, *admin_token, *prefix;
	char host[256], port[16], base_path[256];
	int buyers, skus, units, connections, confirm_percent;
} Options;

/* One HTTP exchange in flight on a connection. */
typedef struct Conn {
	int fd;
	Buf out, in;
	int buyer;            /* the buyer whose request is in flight, -1: idle */
	int confirming;       /* the request in flight is a confirm */
	char id[64];          /* its reservation, when confirming */
	int64_t sent_ns;
	int retries;          /* reconnects for the request in flight */
} Conn;

typedef struct Tally {
	long created, sold_out, insufficient, other, confirmed, confirm_failed;
	long *created_per_sku, *confirmed_per_sku;
	uint32_t *hist;
	long answered;
} Tally;

static void die(const char *what)
{
	fprintf(stderr, "rg-drill: %s: %s\n", what, strerror(errno));
	exit(2);
}

static void parse_url(Options *o)
{
	const char *p = o->url;
	if (strncmp(p, "http://", 7) != 0) {
		fprintf(stderr, "rg-drill: --url must start with http://\n");
		exit(2);
	}
	p += 7;
	const char *slash = strchr(p, '/');
	const char *hostport_end = slash ? slash : p + strlen(p);
	const char *colon = memchr(p, ':', (size_t)(hostport_end - p));
	snprintf(o->host, sizeof(o->host), "%.*s", (int)((colon ? colon : hostport_end) - p), p);
	snprintf(o->port, sizeof(o->port), "%.*s", colon ? (int)(hostport_end - colon - 1) : 2,
		 colon ? colon + 1 : "80");
	snprintf(o->base_path, sizeof(o->base_path), "%s", slash ? slash : "");
	size_t n = strlen(o->base_path);
	if (n && o->base_path[n - 1] == '/')
		o->base_path[n - 1] = '\0';
}

static int connect_to(const Options *o)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *ai;
	if (getaddrinfo(o->host, o->port, &hints, &ai) != 0) {
		fprintf(stderr, "rg-drill: cannot resolve %s\n", o->host);
		exit(2);
	}
	int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) != 0)
		die("connect");
	freeaddrinfo(ai);
	return fd;
}

static void put_request(Buf *out, const Options *o, const char *method, const char *path,
			const char *auth, const char *body)
{
	char head[1024];
	int n = snprintf(head, sizeof(head),
			 "%s %s%s HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: application/json\r\n"
			 "Content-Length: %zu\r\n%s%s%s\r\n",
			 method, o->base_path, path, o->host, o->port, body ? strlen(body) : 0,
			 auth ? "Authorization: Bearer " : "", auth ? auth : "", auth ? "\r\n" : "");
	buf_append(out, head, (size_t)n);
	if (body)
		buf_append(out, body, strlen(body));
}

/* Parses one whole response at the front of in. Returns its length (and the
 * status and body), 0 when more bytes are needed, -1 when it is malformed. */
static long parse_response(const Buf *in, int *status, const char **body, size_t *body_len)
{
	const char *data = (const char *)in->data;
	const char *end = memmem(data, in->len, "\r\n\r\n", 4);
	if (!end)
		return in->len > RESPONSE_MAX ? -1 : 0;
	size_t head_len = (size_t)(end - data) + 4;
	if (sscanf(data, "HTTP/1.%*d %d", status) != 1)
		return -1;
	long content_length = -1;
	int chunked = 0;
	for (const char *line = strstr(data, "\r\n") + 2; line < end; line = strstr(line, "\r\n") + 2) {
		if (strncasecmp(line, "Content-Length:", 15) == 0)
			content_length = strtol(line + 15, NULL, 10);
		else if (strncasecmp(line, "Transfer-Encoding:", 18) == 0 && strstr(line, "chunked") &&
			 strstr(line, "chunked") < strstr(line, "\r\n"))
			chunked = 1;
	}
	if (!chunked) {
		if (content_length < 0 || content_length > RESPONSE_MAX)
			return -1;
		if (in->len < head_len + (size_t)content_length)
			return 0;
		*body = data + head_len;
		*body_len = (size_t)content_length;
		return (long)(head_len + (size_t)content_length);
	}
	/* Chunked: the body is only looked at in the summary phase, where one
	 * chunk is all servers send for our small answers; find the final 0 chunk. */
	const char *p = data + head_len, *stop = data + in->len;
	*body = NULL;
	*body_len = 0;
	for (;;) {
		const char *eol = memmem(p, (size_t)(stop - p), "\r\n", 2);
		if (!eol)
			return 0;
		long size = strtol(p, NULL, 16);
		if (size < 0 || size > RESPONSE_MAX)
			return -1;
		if (eol + 2 + size + 2 > stop)
			return 0;
		if (size == 0)
			return (long)(eol + 4 - data);
		if (!*body) {
			*body = eol + 2;
			*body_len = (size_t)size;
		}
		p = eol + 2 + size + 2;
	}
}

/* A blocking request on a fresh connection, for setup and read-back. */
static int http_call(const Options *o, const char *method, const char *path, const char *auth,
		     const char *body, char *answer, size_t answer_len)
{
	int fd = connect_to(o);
	Buf out, in;
	buf_init(&out, 1024);
	buf_init(&in, 4096);
	put_request(&out, o, method, path, auth, body);
	if (write(fd, out.data, out.len) != (ssize_t)out.len)
		die("write");
	int status = 0;
	for (;;) {
		const char *b;
		size_t blen;
		long used = parse_response(&in, &status, &b, &blen);
		if (used < 0) {
			fprintf(stderr, "rg-drill: malformed response to %s %s\n", method, path);
			exit(2);
		}
		if (used > 0) {
			snprintf(answer, answer_len, "%.*s", (int)blen, b ? b : "");
			break;
		}
		buf_reserve(&in, 4096);
		ssize_t n = read(fd, in.data + in.len, 4096);
		if (n <= 0)
			die("read");
		in.len += (size_t)n;
	}
	close(fd);
	buf_free(&out);
	buf_free(&in);
	return status;
}

static long json_int(const char *body, const char *key)
{
	char pattern[64];
	snprintf(pattern, sizeof(pattern), "\"%s\":", key);
	const char *p = strstr(body, pattern);
	return p ? strtol(p + strlen(pattern), NULL, 10) : -1;
}

static int sku_of(int buyer, int skus)
{
	return (int)(((unsigned)buyer * 2654435761u) % (unsigned)skus);
}

static void queue_buyer(Conn *c, const Options *o, int buyer)
{
	char body[256];
	snprintf(body, sizeof(body),
		 "{\"sku\":\"%s-%d\",\"quantity\":1,\"session\":\"%s-buyer-%d\",\"idempotency_key\":\"k-%d\"}",
		 o->prefix, sku_of(buyer, o->skus), o->prefix, buyer, buyer);
	put_request(&c->out, o, "POST", "/v1/reservations", NULL, body);
	c->buyer = buyer;
	c->confirming = 0;
	c->sent_ns = clock_mono_ns();
}

static void queue_confirm(Conn *c, const Options *o, int buyer, const char *reservation_id)
{
	char path[128], body[96];
	snprintf(path, sizeof(path), "/v1/reservations/%s/confirm", reservation_id);
	snprintf(body, sizeof(body), "{\"session\":\"%s-buyer-%d\"}", o->prefix, buyer);
	put_request(&c->out, o, "POST", path, NULL, body);
	c->buyer = buyer;
	c->confirming = 1;
	snprintf(c->id, sizeof(c->id), "%s", reservation_id);
	c->sent_ns = clock_mono_ns();
}

static void flush_out(Conn *c)
{
	while (c->out.len) {
		ssize_t n = send(c->fd, c->out.data, c->out.len, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("send");
		}
		buf_consume(&c->out, (size_t)n);
	}
}

int main(int argc, char **argv)
{
	Options o = { .prefix = "drill", .buyers = 20000, .skus = 10, .units = 500,
		      .connections = 64, .confirm_percent = 50 };
	static const struct option options[] = {
		{ "url", required_argument, NULL, 'u' },
		{ "admin-token", required_argument, NULL, 'a' },
		{ "buyers", required_argument, NULL, 'b' },
		{ "skus", required_argument, NULL, 'k' },
		{ "units", required_argument, NULL, 'n' },
		{ "connections", required_argument, NULL, 'c' },
		{ "confirm-percent", required_argument, NULL, 'f' },
		{ "prefix", required_argument, NULL, 'p' },
		{ NULL, 0, NULL, 0 },
	};
	int opt;
	while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
		switch (opt) {
		case 'u': o.url = optarg; break;
		case 'a': o.admin_token = optarg; break;
		case 'b': o.buyers = atoi(optarg); break;
		case 'k': o.skus = atoi(optarg); break;
		case 'n': o.units = atoi(optarg); break;
		case 'c': o.connections = atoi(optarg); break;
		case 'f': o.confirm_percent = atoi(optarg); break;
		case 'p': o.prefix = optarg; break;
		default:
			fprintf(stderr, "usage: rg-drill --url URL --admin-token T [--buyers N] [--skus K] "
					"[--units U] [--connections C] [--confirm-percent P] [--prefix X]\n");
			return 2;
		}
	}
	if (!o.url || !o.admin_token || o.buyers < 1 || o.skus < 1 || o.units < o.skus ||
	    o.connections < 1 || o.confirm_percent < 0 || o.confirm_percent > 100) {
		fprintf(stderr, "rg-drill: --url and --admin-token are required; units >= skus >= 1\n");
		return 2;
	}
	parse_url(&o);
	if (o.connections > o.buyers)
		o.connections = o.buyers;

	/* The SKUs, each with its share of the units. */
	long *stock = xcalloc((size_t)o.skus, sizeof(long));
	for (int k = 0; k < o.skus; k++) {
		char path[160], body[160], answer[4096];
		stock[k] = o.units / o.skus + (k < o.units % o.skus);
		snprintf(path, sizeof(path), "/v1/admin/skus/%s-%d", o.prefix, k);
		snprintf(body, sizeof(body), "{\"stock\":%ld,\"name\":\"Drill item %d\",\"max_per_order\":10}",
			 stock[k], k);
		int status = http_call(&o, "PUT", path, o.admin_token, body, answer, sizeof(answer));
		if (status != 200 && status != 201) {
			fprintf(stderr, "rg-drill: PUT %s answered %d: %s\n", path, status, answer);
			return 2;
		}
		if (json_int(answer, "reserved") != 0 || json_int(answer, "sold") != 0) {
			fprintf(stderr, "rg-drill: %s already has sales; use another --prefix\n", path);
			return 2;
		}
	}

	Tally t = { 0 };
	t.created_per_sku = xcalloc((size_t)o.skus, sizeof(long));
	t.confirmed_per_sku = xcalloc((size_t)o.skus, sizeof(long));
	t.hist = xcalloc(HIST_US, sizeof(uint32_t));
	int ep = epoll_create1(EPOLL_CLOEXEC);
	Conn *conns = xcalloc((size_t)o.connections, sizeof(Conn));
	int next_buyer = 0;
	int64_t started = clock_mono_ns(), last_progress = 0;
	for (int i = 0; i < o.connections; i++) {
		Conn *c = &conns[i];
		c->fd = connect_to(&o);
		buf_init(&c->out, 1024);
		buf_init(&c->in, 8192);
		queue_buyer(c, &o, next_buyer++);
		flush_out(c);
		struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
		epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
	}
	int active = o.connections;
	while (active > 0) {
		struct epoll_event events[64];
		int n = epoll_wait(ep, events, 64, 1000);
		for (int e = 0; e < n; e++) {
			Conn *c = events[e].data.ptr;
			buf_reserve(&c->in, 8192);
			ssize_t got = read(c->fd, c->in.data + c->in.len, 8192);
			if (got <= 0) {
				/* A server may close a keep-alive connection at any time
				 * (request caps, restarts): reconnect and ask again. Both
				 * requests are safe to repeat — a reservation carries its
				 * idempotency key, and confirming twice is 200. */
				if (++c->retries > 5) {
					fprintf(stderr, "\nrg-drill: the server keeps closing connections\n");
					return 2;
				}
				epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
				close(c->fd);
				c->fd = connect_to(&o);
				buf_reset(&c->in);
				buf_reset(&c->out);
				if (c->confirming) {
					char again[64];
					snprintf(again, sizeof(again), "%s", c->id);
					queue_confirm(c, &o, c->buyer, again);
				} else {
					queue_buyer(c, &o, c->buyer);
				}
				flush_out(c);
				struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
				epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
				continue;
			}
			c->retries = 0;
			c->in.len += (size_t)got;
			int status;
			const char *body;
			size_t body_len;
			long used = parse_response(&c->in, &status, &body, &body_len);
			if (used < 0) {
				fprintf(stderr, "\nrg-drill: malformed HTTP response\n");
				return 2;
			}
			if (used == 0)
				continue;
			int64_t us = (clock_mono_ns() - c->sent_ns) / 1000;
			t.hist[us < HIST_US ? us : HIST_US - 1]++;
			t.answered++;
			char text[512];
			snprintf(text, sizeof(text), "%.*s", (int)body_len, body ? body : "");
			buf_consume(&c->in, (size_t)used);
			int k = sku_of(c->buyer, o.skus);
			int confirm_next = 0;
			char id[64] = "";
			if (c->confirming) {
				if (status == 200) {
					t.confirmed++;
					t.confirmed_per_sku[k]++;
				} else {
					t.confirm_failed++;
				}
			} else if (status == 201 || status == 200) { /* 200: a retry's replay */
				t.created++;
				t.created_per_sku[k]++;
				const char *p = strstr(text, "\"reservation_id\":\"");
				if (p && sscanf(p + 18, "%63[0-9a-f]", id) == 1 &&
				    (c->buyer * 37) % 100 < o.confirm_percent)
					confirm_next = 1;
			} else if (status == 409 && strstr(text, "\"sold_out\"")) {
				t.sold_out++;
			} else if (status == 409 && strstr(text, "\"insufficient_stock\"")) {
				t.insufficient++;
			} else {
				t.other++;
			}
			if (confirm_next)
				queue_confirm(c, &o, c->buyer, id);
			else if (next_buyer < o.buyers)
				queue_buyer(c, &o, next_buyer++);
			else {
				epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
				close(c->fd);
				active--;
				continue;
			}
			flush_out(c);
		}
		int64_t now = clock_mono_ns();
		if (now - last_progress > 250000000) {
			fprintf(stderr, "\r  buyers %6d/%d   reserved %5ld   sold out %6ld   other %4ld",
				next_buyer, o.buyers, t.created, t.sold_out + t.insufficient, t.other);
			last_progress = now;
		}
	}
	double secs = (double)(clock_mono_ns() - started) / 1e9;
	fprintf(stderr, "\r  buyers %6d/%d   reserved %5ld   sold out %6ld   other %4ld\n", next_buyer,
		o.buyers, t.created, t.sold_out + t.insufficient, t.other);

	/* Read back every SKU: the ledger must agree with what buyers were told. */
	long oversold = 0, disagree = 0, units_sold = 0, units_held = 0;
	for (int k = 0; k < o.skus; k++) {
		char path[160], answer[4096];
		snprintf(path, sizeof(path), "/v1/skus/%s-%d", o.prefix, k);
		if (http_call(&o, "GET", path, NULL, NULL, answer, sizeof(answer)) != 200) {
			fprintf(stderr, "rg-drill: GET %s failed: %s\n", path, answer);
			return 2;
		}
		long reserved = json_int(answer, "reserved"), sold = json_int(answer, "sold");
		/* Oversold by either account: the ledger's counters or the buyers' 201s. */
		long taken = reserved + sold > t.created_per_sku[k] ? reserved + sold : t.created_per_sku[k];
		if (taken > stock[k])
			oversold += taken - stock[k];
		if (sold != t.confirmed_per_sku[k] || reserved + sold != t.created_per_sku[k])
			disagree++;
		units_sold += sold;
		units_held += reserved;
	}

	printf("\n| drill | %d buyers, %d units over %d SKUs, %d connections |\n", o.buyers, o.units,
	       o.skus, o.connections);
	printf("|---|---|\n");
	printf("| reservations created | %ld |\n", t.created);
	printf("| units sold (confirmed) / still held | %ld / %ld |\n", units_sold, units_held);
	printf("| oversold | %ld |\n", oversold);
	printf("| sold-out answers | %ld |\n", t.sold_out + t.insufficient);
	printf("| other answers | %ld |\n", t.other + t.confirm_failed);
	printf("| requests/s | %.0f |\n", (double)t.answered / secs);
	printf("| latency p50 / p99 | %.1f ms / %.1f ms |\n",
	       (double)latency_percentile_us(t.hist, HIST_US, (uint64_t)t.answered, 0.50) / 1000.0,
	       (double)latency_percentile_us(t.hist, HIST_US, (uint64_t)t.answered, 0.99) / 1000.0);
	printf("| ledger agrees with the answers | %s |\n", disagree ? "NO" : "yes");
	return oversold || disagree || t.created != o.units ? 1 : 0;
}
