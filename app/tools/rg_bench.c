/* rg_bench.c — load generator for rg-ledger over its Unix socket.
 *
 * Closed loop: every connection keeps `pipeline` reservations in flight and
 * sends the next the moment one is answered, so the figure is what the ledger
 * sustains, durably, at that concurrency. A few client threads drive all the
 * connections with epoll (one thread per connection would measure the
 * scheduler instead). Prints ops/s, latency percentiles from a 1 µs-resolution
 * histogram, and from the ledger's own STATS: fsyncs/s and requests per fsync.
 *
 * Open loop (--rate R): requests are due at R per second in all, spread over
 * the connections (up to 256 in flight on each), whatever the answers do;
 * each latency counts from when its request was due, so a stall shows in
 * the percentiles instead of slowing the senders (no coordinated omission).
 * This is how "p99 at half the peak load" is measured.
 *
 *   rg-bench --socket PATH [--connections 50] [--pipeline 1] [--duration 5]
 *            [--rate R]    (open loop at R reservations/s instead of closed)
 *            [--skus 1] [--threads 2] [--prefix bench] [--setup-only]
 *            [--count N]   (stop after N reservations instead of after --duration)
 *            [--no-setup]  (the SKUs exist already: do not create or top them up,
 *                           so a run measures reservations only — tests/bench/compare
 *                           counts the ledger's CPU time around it)
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/ledger_client.h"
#include "common/wire.h"
#include "common/xmalloc.h"
#include "tools/latency.h"

#define HIST_US 200000 /* latencies above 200 ms land in the last bucket */
#define CONN_INFLIGHT_MAX 256 /* requests in flight per connection (open loop) */

typedef struct Options {
	const char *socket;
	const char *prefix;
	int connections, pipeline, duration_s, skus, threads, setup_only, no_setup;
	long count;          /* stop after this many reservations in all (0: by duration) */
	double rate;         /* open loop: reservations/s in all (0: closed loop) */
} Options;

typedef struct BenchConn {
	int fd;
	Buf in, out;
	/* A request in flight holds a slot, named in the low byte of its id: its
	 * answer finds the send (open loop: due) time there even when answers
	 * from different shards overtake each other. */
	int64_t sent_ns[CONN_INFLIGHT_MAX];
	uint8_t free_slot[CONN_INFLIGHT_MAX];
	int inflight;                 /* slots taken; free_slot[inflight..) are free */
	uint64_t next_id;
	uint64_t counter;
} BenchConn;

typedef struct Worker {
	const Options *opt;
	int index, nconns;
	BenchConn *conns;
	uint32_t *hist;
	uint64_t ok, sold_out, busy, other;
	int64_t stop_at_ns;
	long quota;          /* reservations this worker sends (0: unlimited) */
	long sent;
	int64_t start_ns, interval_ns; /* open loop: request k is due at start + k * interval */
	int next_conn;
	uint64_t late;       /* open loop: due while every connection had 256 in flight */
} Worker;

static void die(const char *what)
{
	fprintf(stderr, "rg-bench: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void sku_name(const Options *opt, uint64_t n, char *out, size_t len)
{
	snprintf(out, len, "%s-%llu", opt->prefix, (unsigned long long)(n % (uint64_t)opt->skus));
}

static void queue_reserve(Worker *w, BenchConn *c, int64_t due_ns)
{
	if (w->quota && w->sent >= w->quota)
		return;
	w->sent++;
	WireRequest req = { .op = WIRE_OP_RESERVE, .quantity = 1 };
	char sku[80], session[64];
	uint8_t slot = c->free_slot[c->inflight++];
	req.id = ++c->next_id << 8 | slot;
	sku_name(w->opt, c->counter * 7919 + (uint64_t)w->index * 104729 + c->next_id, sku, sizeof(sku));
	snprintf(session, sizeof(session), "b%d-%p-%llu", w->index, (void *)c,
		 (unsigned long long)c->next_id);
	wire_set_str(req.sku, &req.sku_len, sku, strlen(sku), WIRE_SKU_MAX);
	wire_set_str(req.session, &req.session_len, session, strlen(session), WIRE_SESSION_MAX);
	wire_encode_request(&c->out, &req);
	c->sent_ns[slot] = due_ns ? due_ns : clock_mono_ns();
	c->counter++;
}

static void conn_write(BenchConn *c)
{
	while (c->out.len) {
		ssize_t n = send(c->fd, c->out.data, c->out.len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			die("send");
		}
		buf_consume(&c->out, (size_t)n);
	}
}

/* Open loop: queues every request due by now on the next connections with
 * room, and returns how long until the next one is due (ns). */
static int64_t send_due(Worker *w, int64_t now)
{
	for (;;) {
		int64_t due = w->start_ns + (int64_t)w->sent * w->interval_ns;
		if (due > now)
			return due - now;
		if (w->quota && w->sent >= w->quota)
			return 100 * 1000000LL;
		BenchConn *c = NULL;
		for (int i = 0; i < w->nconns && !c; i++) {
			BenchConn *k = &w->conns[(w->next_conn + i) % w->nconns];
			if (k->inflight < CONN_INFLIGHT_MAX)
				c = k;
		}
		if (!c) {
			w->late++;
			return 1000000; /* all full: it stays due, and its latency grows */
		}
		w->next_conn = (int)(c - w->conns + 1) % w->nconns;
		queue_reserve(w, c, due);
		conn_write(c);
	}
}

static int connect_raw(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
		die("connect");
	/* Handshake synchronously, then switch to the event loop. */
	Buf b;
	buf_init(&b, 64);
	WireRequest hello = { .op = WIRE_OP_HELLO, .magic = WIRE_MAGIC, .version = WIRE_VERSION };
	wire_encode_request(&b, &hello);
	if (write(fd, b.data, b.len) != (ssize_t)b.len)
		die("hello");
	uint8_t in[64];
	size_t have = 0, used;
	WireResponse resp;
	const char *why;
	while (wire_decode_response(in, have, &resp, &used, &why) == WIRE_DECODE_NEED_MORE) {
		ssize_t n = read(fd, in + have, sizeof(in) - have);
		if (n <= 0)
			die("hello reply");
		have += (size_t)n;
	}
	buf_free(&b);
	return fd;
}

static void *worker_main(void *arg)
{
	Worker *w = arg;
	int ep = epoll_create1(EPOLL_CLOEXEC);
	for (int i = 0; i < w->nconns; i++) {
		BenchConn *c = &w->conns[i];
		c->fd = connect_raw(w->opt->socket);
		buf_init(&c->in, 65536);
		buf_init(&c->out, 65536);
		for (int k = 0; k < CONN_INFLIGHT_MAX; k++)
			c->free_slot[k] = (uint8_t)k;
		for (int k = 0; k < w->opt->pipeline && !w->interval_ns; k++)
			queue_reserve(w, c, 0);
		conn_write(c);
		struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
		epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
	}
	struct epoll_event events[64];
	w->start_ns = clock_mono_ns();
	while (clock_mono_ns() < w->stop_at_ns &&
	       !(w->quota && w->ok + w->sold_out + w->busy + w->other >= (uint64_t)w->quota)) {
		struct timespec wait = { 0, 100 * 1000000 };
		if (w->interval_ns) {
			int64_t ns = send_due(w, clock_mono_ns());
			wait = (struct timespec){ ns / 1000000000, ns % 1000000000 };
		}
		int n = epoll_pwait2(ep, events, 64, &wait, NULL);
		if (n < 0 && errno != EINTR)
			die("epoll_pwait2"); /* e.g. ENOSYS before Linux 5.11: never spin */
		for (int e = 0; e < n; e++) {
			BenchConn *c = events[e].data.ptr;
			buf_reserve(&c->in, 16384);
			ssize_t got = read(c->fd, c->in.data + c->in.len, 16384);
			if (got <= 0) {
				if (got < 0 && (errno == EAGAIN || errno == EINTR))
					continue;
				fprintf(stderr, "rg-bench: the ledger closed a connection\n");
				exit(1);
			}
			c->in.len += (size_t)got;
			size_t off = 0, used;
			WireResponse resp;
			const char *why;
			int64_t now = clock_mono_ns();
			while (wire_decode_response(c->in.data + off, c->in.len - off, &resp, &used, &why) ==
			       WIRE_DECODE_OK) {
				off += used;
				uint8_t slot = (uint8_t)resp.id;
				int64_t us = (now - c->sent_ns[slot]) / 1000;
				/* now was read before this batch; a request queued while
				 * answering it may have been sent after. */
				if (us < 0)
					us = 0;
				w->hist[us < HIST_US ? us : HIST_US - 1]++;
				if (resp.status == WIRE_CREATED)
					w->ok++;
				else if (resp.status == WIRE_SOLD_OUT || resp.status == WIRE_INSUFFICIENT_STOCK)
					w->sold_out++;
				else if (resp.status == WIRE_BUSY)
					w->busy++;
				else
					w->other++;
				c->free_slot[--c->inflight] = slot;
				if (!w->interval_ns)
					queue_reserve(w, c, 0);
			}
			buf_consume(&c->in, off);
			conn_write(c);
		}
	}
	for (int i = 0; i < w->nconns; i++)
		close(w->conns[i].fd);
	close(ep);
	return NULL;
}

static void ledger_stats(LedgerClient *c, WireResponse *out)
{
	WireRequest req = { .op = WIRE_OP_STATS };
	if (ledger_client_call(c, &req, out, 10000) != 0 || out->status != WIRE_OK) {
		fprintf(stderr, "rg-bench: STATS failed\n");
		exit(1);
	}
}

/* Creates (or tops up) the SKUs, 128 requests in flight at a time: one by
 * one, a million SKUs would take a million fsyncs. */
static void setup_skus(LedgerClient *c, const Options *opt)
{
	for (int k = 0; k < opt->skus;) {
		int n = opt->skus - k < 128 ? opt->skus - k : 128;
		for (int i = 0; i < n; i++) {
			WireRequest req = { .op = WIRE_OP_PUT_SKU };
			char sku[80];
			sku_name(opt, (uint64_t)(k + i), sku, sizeof(sku));
			wire_set_str(req.sku, &req.sku_len, sku, strlen(sku), WIRE_SKU_MAX);
			req.settings.fields = WIRE_SKU_HAS_STOCK | WIRE_SKU_HAS_TTL;
			req.settings.stock = WIRE_STOCK_MAX;
			req.settings.reservation_ttl_s = WIRE_TTL_MAX_S;
			ledger_client_send(c, &req);
		}
		if (ledger_client_flush(c) != 0) {
			fprintf(stderr, "rg-bench: cannot send to the ledger\n");
			exit(1);
		}
		for (int i = 0; i < n; i++) {
			WireResponse resp;
			if (ledger_client_recv(c, &resp, 30000) != 0 ||
			    (resp.status != WIRE_OK && resp.status != WIRE_CREATED)) {
				fprintf(stderr, "rg-bench: cannot create SKUs (%s)\n",
					wire_status_name(resp.status));
				exit(1);
			}
		}
		k += n;
	}
}

int main(int argc, char **argv)
{
	Options opt = { .prefix = "bench", .connections = 50, .pipeline = 1, .duration_s = 5,
			.skus = 1, .threads = 2 };
	static const struct option options[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "connections", required_argument, NULL, 'c' },
		{ "pipeline", required_argument, NULL, 'p' },
		{ "duration", required_argument, NULL, 'd' },
		{ "skus", required_argument, NULL, 'k' },
		{ "threads", required_argument, NULL, 't' },
		{ "prefix", required_argument, NULL, 'x' },
		{ "setup-only", no_argument, NULL, 'S' },
		{ "count", required_argument, NULL, 'n' },
		{ "no-setup", no_argument, NULL, 'N' },
		{ "rate", required_argument, NULL, 'r' },
		{ NULL, 0, NULL, 0 },
	};
	int o;
	while ((o = getopt_long(argc, argv, "", options, NULL)) != -1) {
		switch (o) {
		case 's': opt.socket = optarg; break;
		case 'c': opt.connections = atoi(optarg); break;
		case 'p': opt.pipeline = atoi(optarg); break;
		case 'd': opt.duration_s = atoi(optarg); break;
		case 'k': opt.skus = atoi(optarg); break;
		case 't': opt.threads = atoi(optarg); break;
		case 'x': opt.prefix = optarg; break;
		case 'S': opt.setup_only = 1; break;
		case 'n': opt.count = atol(optarg); break;
		case 'N': opt.no_setup = 1; break;
		case 'r': opt.rate = atof(optarg); break;
		default:
			fprintf(stderr, "usage: rg-bench --socket PATH [--connections N] [--pipeline D] "
					"[--duration S] [--skus K] [--threads T] [--prefix P] [--setup-only] [--count N] "
					"[--no-setup] [--rate R]\n");
			return 2;
		}
	}
	if (!opt.socket || opt.connections < 1 || opt.pipeline < 1 || opt.pipeline > 256 ||
	    opt.skus < 1 || opt.threads < 1 || opt.duration_s < 1 || opt.rate < 0 ||
	    opt.rate > 10e6) {
		fprintf(stderr, "rg-bench: --socket is required; counts must be positive, pipeline <= 256, "
				"rate <= 10M/s\n");
		return 2;
	}
	if (opt.threads > opt.connections)
		opt.threads = opt.connections;

	LedgerClient *admin;
	if (ledger_client_connect(opt.socket, 10000, &admin) != 0) {
		fprintf(stderr, "rg-bench: cannot connect to %s\n", opt.socket);
		return 1;
	}
	if (!opt.no_setup)
		setup_skus(admin, &opt);
	if (opt.setup_only)
		return 0;

	WireResponse before, after;
	ledger_stats(admin, &before);
	Worker *w = xcalloc((size_t)opt.threads, sizeof(Worker));
	pthread_t *tid = xcalloc((size_t)opt.threads, sizeof(pthread_t));
	int64_t start = clock_mono_ns();
	for (int i = 0; i < opt.threads; i++) {
		w[i].opt = &opt;
		w[i].index = i;
		w[i].nconns = opt.connections / opt.threads + (i < opt.connections % opt.threads);
		w[i].conns = xcalloc((size_t)w[i].nconns, sizeof(BenchConn));
		w[i].hist = xcalloc(HIST_US, sizeof(uint32_t));
		w[i].stop_at_ns = start + (int64_t)opt.duration_s * 1000000000;
		w[i].quota = opt.count ? opt.count / opt.threads + (i < opt.count % opt.threads) : 0;
		if (opt.rate > 0)
			w[i].interval_ns = (int64_t)(1e9 * opt.threads / opt.rate);
		pthread_create(&tid[i], NULL, worker_main, &w[i]);
	}
	uint64_t ok = 0, sold_out = 0, busy = 0, other = 0, late = 0;
	uint32_t *hist = xcalloc(HIST_US, sizeof(uint32_t));
	for (int i = 0; i < opt.threads; i++) {
		pthread_join(tid[i], NULL);
		ok += w[i].ok;
		sold_out += w[i].sold_out;
		busy += w[i].busy;
		other += w[i].other;
		late += w[i].late;
		for (int k = 0; k < HIST_US; k++)
			hist[k] += w[i].hist[k];
	}
	double secs = (double)(clock_mono_ns() - start) / 1e9;
	ledger_stats(admin, &after);
	uint64_t total = ok + sold_out + busy + other;
	uint64_t fsyncs = wire_stat_value(&after, "fsyncs") - wire_stat_value(&before, "fsyncs");
	uint64_t requests = wire_stat_value(&after, "requests") - wire_stat_value(&before, "requests");
	uint64_t fsync_us = wire_stat_value(&after, "fsync_us_total") - wire_stat_value(&before, "fsync_us_total");

	if (opt.rate > 0)
		printf("skus=%d connections=%d open loop at %.0f/s duration=%.1fs%s\n", opt.skus,
		       opt.connections, opt.rate, secs, late ? " (fell behind: connections full)" : "");
	else
		printf("skus=%d connections=%d pipeline=%d duration=%.1fs\n", opt.skus,
		       opt.connections, opt.pipeline, secs);
	printf("  reservations/s %10.0f   (created %llu, sold out %llu, busy %llu, other %llu)\n",
	       (double)ok / secs, (unsigned long long)ok, (unsigned long long)sold_out,
	       (unsigned long long)busy, (unsigned long long)other);
	printf("  latency us     p50 %lld  p99 %lld  p99.9 %lld\n",
	       (long long)latency_percentile_us(hist, HIST_US, total, 0.50),
	       (long long)latency_percentile_us(hist, HIST_US, total, 0.99),
	       (long long)latency_percentile_us(hist, HIST_US, total, 0.999));
	printf("  fsyncs/s %8.0f   requests per fsync %.1f   mean fsync %.0f us\n",
	       (double)fsyncs / secs, fsyncs ? (double)requests / (double)fsyncs : 0.0,
	       fsyncs ? (double)fsync_us / (double)fsyncs : 0.0);
	ledger_client_close(admin);
	return other ? 1 : 0;
}
