/* server.c — the ledger's socket front (see server.h for the design). */
#include "ledger/server.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <stdlib.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/hash.h"
#include "common/log.h"
#include "common/xmalloc.h"

#define READ_CHUNK 16384
#define TAG_LISTEN UINT64_MAX
#define TAG_EVENT (UINT64_MAX - 1)
#define TAG_SIGNAL (UINT64_MAX - 2)
#define CLOSE_FLUSH_MS 1000
/* A connection whose unsent answers reach this stops being read until the
 * peer takes them: one client that never reads cannot grow the ledger. */
#define OUT_HIGH_WATER ((size_t)256 << 10)
#define PEER_IDS_MAX 32
#define PEER_LOG_INTERVAL_MS 1000
/* Requests staged per shard before they are handed in early (see Server.staged). */
#define STAGE_MAX 256

typedef struct Conn {
	int fd;                    /* -1: free slot */
	uint32_t gen;              /* bumped on close, so late replies are dropped */
	uint8_t hello;             /* handshake done */
	uint8_t close_after_flush;
	uint32_t events;           /* the epoll interest now registered */
	uint8_t dirty;             /* on the flush list */
	uint32_t inflight;         /* submitted to shards, not yet answered */
	Buf in, out;
} Conn;

struct Server {
	ServerConfig cfg;
	int listen_fd, epoll_fd, event_fd, signal_fd;
	Conn *conns;
	uint32_t *free_slots;
	size_t free_len;
	uint32_t *dirty;           /* connections with output to flush */
	size_t dirty_len;
	Shard **shards;
	unsigned nshards;
	/* Requests decoded in this pass of the loop, per shard: handed in by
	 * end_pass (or submit_shard once STAGE_MAX are waiting for one shard),
	 * so a shard's lock and its thread's wakeup cost once per pass rather
	 * than once per request. */
	ShardRequest **staged;     /* [nshards][STAGE_MAX] */
	size_t *staged_len;
	size_t staged_total;
	ServerReloadFn reload;     /* SIGHUP */
	void *reload_ctx;

	pthread_mutex_t mu;        /* guards posted */
	Buf posted;                /* replies from syncers: u64 conn, u32 len, frame */
	Buf taken;                 /* the I/O thread's side of the swap */

	uint64_t connections_total, protocol_errors, busy_inflight;
	int accept_paused;         /* out of descriptors: the listen fd is out of epoll */

	/* SO_PEERCRED check (server.h PEERS); off when both lists are empty. */
	int peer_check;
	uid_t peer_uids[PEER_IDS_MAX];
	gid_t peer_gids[PEER_IDS_MAX];
	size_t n_peer_uids, n_peer_gids;
	uint64_t peers_refused;
	uint64_t peers_refused_unlogged;
	int64_t peer_logged_ms;    /* monotonic ms of the last refusal logged */
};

/* ---- connections --------------------------------------------------------------- */

static uint64_t conn_ref(const Server *srv, const Conn *c)
{
	return (uint64_t)c->gen << 32 | (uint64_t)(c - srv->conns);
}

/* The connection a reference names, or NULL when it has gone since. */
static Conn *conn_deref(Server *srv, uint64_t ref)
{
	Conn *c = &srv->conns[(uint32_t)ref];
	return c->fd >= 0 && c->gen == (uint32_t)(ref >> 32) ? c : NULL;
}

static void conn_close(Server *srv, Conn *c)
{
	epoll_ctl(srv->epoll_fd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	c->fd = -1;
	c->gen++;
	buf_free(&c->in);
	buf_free(&c->out);
	srv->free_slots[srv->free_len++] = (uint32_t)(c - srv->conns);
	if (srv->accept_paused && srv->listen_fd >= 0) {
		struct epoll_event ev = { .events = EPOLLIN, .data.u64 = TAG_LISTEN };
		if (epoll_ctl(srv->epoll_fd, EPOLL_CTL_ADD, srv->listen_fd, &ev) == 0)
			srv->accept_paused = 0;
	}
}

static void conn_mark_dirty(Server *srv, Conn *c)
{
	if (!c->dirty) {
		c->dirty = 1;
		srv->dirty[srv->dirty_len++] = (uint32_t)(c - srv->conns);
	}
}

static void conn_reply(Server *srv, Conn *c, const WireResponse *resp)
{
	wire_encode_response(&c->out, resp);
	conn_mark_dirty(srv, c);
}

static void conn_reply_status(Server *srv, Conn *c, const WireRequest *req, uint8_t status)
{
	WireResponse resp = { .id = req->id, .op = req->op, .status = status };
	conn_reply(srv, c, &resp);
}

static int conn_process(Server *srv, Conn *c);

/* Writes what it can, then handles requests left waiting in the input while
 * the output was full, and registers interest in what comes next: input
 * while the output is under its high-water mark, output while any is left.
 * Returns -1 when the connection was closed. */
static int conn_flush(Server *srv, Conn *c)
{
	for (;;) {
		int blocked = 0;
		while (c->out.len > 0) {
			ssize_t n = send(c->fd, c->out.data, c->out.len, MSG_NOSIGNAL | MSG_DONTWAIT);
			if (n > 0) {
				buf_consume(&c->out, (size_t)n);
				continue;
			}
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
				blocked = 1;
				break;
			}
			conn_close(srv, c);
			return -1;
		}
		size_t pending = c->in.len;
		if (blocked || pending == 0 || c->out.len >= OUT_HIGH_WATER || c->close_after_flush)
			break;
		if (conn_process(srv, c) != 0)
			return -1;
		if (c->in.len == pending)
			break; /* only part of a frame is buffered */
	}
	if (c->out.len == 0 && c->close_after_flush) {
		conn_close(srv, c);
		return -1;
	}
	uint32_t events = (c->out.len < OUT_HIGH_WATER ? EPOLLIN : 0) | (c->out.len > 0 ? EPOLLOUT : 0);
	if (events != c->events) {
		struct epoll_event ev = { .events = events, .data.u64 = (uint64_t)(c - srv->conns) };
		epoll_ctl(srv->epoll_fd, EPOLL_CTL_MOD, c->fd, &ev);
		c->events = events;
	}
	return 0;
}

/* The dirty list is a stack holding each connection at most once (its
 * dirty flag says it is there), so it never outgrows max_connections even
 * when flushing one connection handles more of its requests and marks it
 * again. */
static void flush_dirty(Server *srv)
{
	while (srv->dirty_len > 0) {
		Conn *c = &srv->conns[srv->dirty[--srv->dirty_len]];
		c->dirty = 0;
		if (c->fd >= 0)
			conn_flush(srv, c);
	}
}

/* ---- requests ------------------------------------------------------------------ */

static unsigned route(const Server *srv, const WireRequest *req)
{
	switch (req->op) {
	case WIRE_OP_CONFIRM:
	case WIRE_OP_RELEASE:
	case WIRE_OP_GET_RESERVATION:
		return hash_shard(resid_route(&req->reservation), srv->nshards);
	case WIRE_OP_SNAPSHOT:
	case WIRE_OP_AUDIT:
		return req->shard; /* checked against nshards in handle_request */
	default:
		return hash_shard(hash_route(req->sku, req->sku_len), srv->nshards);
	}
}

static void stat_add(WireResponse *resp, const char *name, uint64_t value)
{
	rg_assert(resp->u.stats.count < WIRE_STATS_MAX);
	WireStat *st = &resp->u.stats.item[resp->u.stats.count++];
	wire_set_str(st->name, &st->name_len, name, strlen(name), WIRE_STAT_NAME_MAX);
	st->value = value;
}

/* Adds one shard's figures to the ledger's: counters add up, the worst
 * fsync and the oldest write-behind backlog are maxima. */
static void stats_add(ShardStats *sum, const ShardStats *one)
{
	const BookStats *b = &one->book;
	sum->book.skus += b->skus;
	sum->book.holds_active += b->holds_active;
	sum->book.reservations_retained += b->reservations_retained;
	sum->book.reserve_created += b->reserve_created;
	sum->book.reserve_replayed += b->reserve_replayed;
	sum->book.reserve_sold_out += b->reserve_sold_out;
	sum->book.reserve_insufficient += b->reserve_insufficient;
	sum->book.reserve_limit += b->reserve_limit;
	sum->book.reserve_too_large += b->reserve_too_large;
	sum->book.reserve_conflict += b->reserve_conflict;
	sum->book.reserve_unknown_sku += b->reserve_unknown_sku;
	sum->book.confirmed += b->confirmed;
	sum->book.released += b->released;
	sum->book.timed_out += b->timed_out;
	sum->book.forgotten += b->forgotten;
	sum->queue_len += one->queue_len;
	sum->busy += one->busy;
	sum->batches += one->batches;
	sum->requests += one->requests;
	sum->fsyncs += one->fsyncs;
	sum->fsync_ns_total += one->fsync_ns_total;
	if (one->fsync_ns_max > sum->fsync_ns_max)
		sum->fsync_ns_max = one->fsync_ns_max;
	sum->records += one->records;
	sum->wal_bytes += one->wal_bytes;
	sum->snapshots += one->snapshots;
	sum->recovered_records += one->recovered_records;
	sum->recovery_ms += one->recovery_ms;
	sum->wb_lag_records += one->wb_lag_records;
	if (one->wb_lag_ms > sum->wb_lag_ms)
		sum->wb_lag_ms = one->wb_lag_ms;
	sum->wb_connected += one->wb_connected;
	sum->wb_errors += one->wb_errors;
}

static void answer_stats(Server *srv, Conn *c, const WireRequest *req)
{
	ShardStats sum = { 0 }, one;
	uint64_t connections = 0;

	for (unsigned i = 0; i < srv->nshards; i++) {
		shard_stats(srv->shards[i], &one);
		stats_add(&sum, &one);
	}
	for (int i = 0; i < srv->cfg.max_connections; i++)
		connections += srv->conns[i].fd >= 0;

	WireResponse resp = { .id = req->id, .op = req->op, .status = WIRE_OK };
	stat_add(&resp, "shards", srv->nshards);
	stat_add(&resp, "connections", connections);
	stat_add(&resp, "connections_total", srv->connections_total);
	stat_add(&resp, "protocol_errors", srv->protocol_errors);
	stat_add(&resp, "skus", sum.book.skus);
	stat_add(&resp, "holds_active", sum.book.holds_active);
	stat_add(&resp, "reservations_retained", sum.book.reservations_retained);
	stat_add(&resp, "reserve_created", sum.book.reserve_created);
	stat_add(&resp, "reserve_replayed", sum.book.reserve_replayed);
	stat_add(&resp, "reserve_sold_out", sum.book.reserve_sold_out);
	stat_add(&resp, "reserve_insufficient_stock", sum.book.reserve_insufficient);
	stat_add(&resp, "reserve_limit_exceeded", sum.book.reserve_limit);
	stat_add(&resp, "reserve_quantity_too_large", sum.book.reserve_too_large);
	stat_add(&resp, "reserve_idempotency_conflict", sum.book.reserve_conflict);
	stat_add(&resp, "reserve_unknown_sku", sum.book.reserve_unknown_sku);
	stat_add(&resp, "confirmed", sum.book.confirmed);
	stat_add(&resp, "released", sum.book.released);
	stat_add(&resp, "timed_out", sum.book.timed_out);
	stat_add(&resp, "forgotten", sum.book.forgotten);
	stat_add(&resp, "queue_len", sum.queue_len);
	stat_add(&resp, "busy", sum.busy + srv->busy_inflight);
	stat_add(&resp, "batches", sum.batches);
	stat_add(&resp, "requests", sum.requests);
	stat_add(&resp, "fsyncs", sum.fsyncs);
	stat_add(&resp, "fsync_us_total", sum.fsync_ns_total / 1000);
	stat_add(&resp, "fsync_us_max", sum.fsync_ns_max / 1000);
	stat_add(&resp, "wal_records", sum.records);
	stat_add(&resp, "wal_bytes", sum.wal_bytes);
	stat_add(&resp, "snapshots", sum.snapshots);
	stat_add(&resp, "recovered_records", sum.recovered_records);
	stat_add(&resp, "recovery_ms", sum.recovery_ms);
	stat_add(&resp, "writebehind_lag_records", sum.wb_lag_records);
	stat_add(&resp, "writebehind_lag_ms", sum.wb_lag_ms);
	stat_add(&resp, "writebehind_connected_shards", sum.wb_connected);
	stat_add(&resp, "writebehind_errors", sum.wb_errors);
	stat_add(&resp, "peers_refused", srv->peers_refused);
	conn_reply(srv, c, &resp);
}

/* One shard's figures; histogram buckets are named by their upper bound
 * ("batch_le_16", "fsync_le_2500us", "..._le_inf"), so a reader needs no
 * table of bounds to label them. */
static void answer_shard_stats(Server *srv, Conn *c, const WireRequest *req)
{
	ShardStats st;
	char name[WIRE_STAT_NAME_MAX + 1];

	shard_stats(srv->shards[req->shard], &st);
	WireResponse resp = { .id = req->id, .op = req->op, .status = WIRE_OK };
	stat_add(&resp, "shard", req->shard);
	stat_add(&resp, "queue_len", st.queue_len);
	stat_add(&resp, "busy", st.busy);
	stat_add(&resp, "skus", st.book.skus);
	stat_add(&resp, "holds_active", st.book.holds_active);
	stat_add(&resp, "timed_out", st.book.timed_out);
	stat_add(&resp, "batches", st.batches);
	stat_add(&resp, "requests", st.requests);
	stat_add(&resp, "fsyncs", st.fsyncs);
	stat_add(&resp, "fsync_us_total", st.fsync_ns_total / 1000);
	stat_add(&resp, "fsync_us_max", st.fsync_ns_max / 1000);
	stat_add(&resp, "wal_records", st.records);
	stat_add(&resp, "wal_bytes", st.wal_bytes);
	stat_add(&resp, "last_lsn", st.last_lsn);
	stat_add(&resp, "snapshots", st.snapshots);
	stat_add(&resp, "snapshot_lsn", st.snapshot_lsn);
	stat_add(&resp, "writebehind_applied_lsn", st.wb_applied_lsn);
	stat_add(&resp, "writebehind_lag_records", st.wb_lag_records);
	stat_add(&resp, "writebehind_lag_ms", st.wb_lag_ms);
	stat_add(&resp, "writebehind_connected", st.wb_connected);
	stat_add(&resp, "writebehind_errors", st.wb_errors);
	for (unsigned i = 0; i < SHARD_BATCH_BUCKETS; i++) {
		if (i + 1 < SHARD_BATCH_BUCKETS)
			snprintf(name, sizeof(name), "batch_le_%llu",
				 (unsigned long long)shard_batch_bound[i]);
		else
			snprintf(name, sizeof(name), "batch_le_inf");
		stat_add(&resp, name, st.batch_hist[i]);
	}
	for (unsigned i = 0; i < SHARD_FSYNC_BUCKETS; i++) {
		if (i + 1 < SHARD_FSYNC_BUCKETS)
			snprintf(name, sizeof(name), "fsync_le_%lluus",
				 (unsigned long long)shard_fsync_bound_us[i]);
		else
			snprintf(name, sizeof(name), "fsync_le_inf");
		stat_add(&resp, name, st.fsync_hist[i]);
	}
	conn_reply(srv, c, &resp);
}

/* Hands shard k what is staged for it; requests its full inbox (or its
 * stopping) refuses are answered BUSY (SHUTTING_DOWN) at once, as before
 * staging. A connection that went away meanwhile loses its answers, just as
 * with answers the shard posts. */
static void submit_shard(Server *srv, unsigned k)
{
	const ShardRequest *q = srv->staged[k];
	size_t n = srv->staged_len[k];
	if (n == 0)
		return;
	srv->staged_len[k] = 0;
	srv->staged_total -= n;
	int taken = shard_submit_many(srv->shards[k], q, n);
	uint8_t status = taken < 0 ? WIRE_SHUTTING_DOWN : WIRE_BUSY;
	for (size_t i = taken < 0 ? 0 : (size_t)taken; i < n; i++) {
		Conn *c = conn_deref(srv, q[i].conn);
		if (!c)
			continue;
		c->inflight--;
		conn_reply_status(srv, c, &q[i].req, status);
	}
}

/* Ends a pass of the loop: hands the staged requests in, then writes the
 * answers. Writing can handle input left waiting (conn_flush), which stages
 * more, so repeat until nothing is staged: nothing may wait for a next pass
 * that might never come. */
static void end_pass(Server *srv)
{
	do {
		for (unsigned k = 0; k < srv->nshards; k++)
			submit_shard(srv, k);
		flush_dirty(srv);
	} while (srv->staged_total > 0);
}

/* Returns -1 when the connection must be closed. */
static int handle_request(Server *srv, Conn *c, const WireRequest *req)
{
	if (!c->hello) {
		if (req->op != WIRE_OP_HELLO)
			return -1;
		WireResponse resp = { .id = req->id, .op = WIRE_OP_HELLO, .status = WIRE_OK };
		resp.u.hello.magic = WIRE_MAGIC;
		resp.u.hello.version = WIRE_VERSION;
		resp.u.hello.shards = (uint16_t)srv->nshards;
		if (req->version != WIRE_VERSION) {
			resp.status = WIRE_VERSION_MISMATCH;
			c->close_after_flush = 1;
		}
		conn_reply(srv, c, &resp);
		c->hello = 1;
		return 0;
	}
	switch (req->op) {
	case WIRE_OP_HELLO:
		return -1;
	case WIRE_OP_PING:
		conn_reply_status(srv, c, req, WIRE_OK);
		return 0;
	case WIRE_OP_STATS:
		answer_stats(srv, c, req);
		return 0;
	case WIRE_OP_SHARD_STATS:
		if (req->shard >= srv->nshards)
			return -1;
		answer_shard_stats(srv, c, req);
		return 0;
	case WIRE_OP_SNAPSHOT:
	case WIRE_OP_AUDIT:
		if (req->shard >= srv->nshards)
			return -1;
		break;
	}
	if (c->inflight >= (uint32_t)srv->cfg.inflight_max) {
		srv->busy_inflight++;
		conn_reply_status(srv, c, req, WIRE_BUSY);
		return 0;
	}
	unsigned k = route(srv, req);
	if (srv->staged_len[k] == STAGE_MAX)
		submit_shard(srv, k);
	ShardRequest *slot = &srv->staged[k][srv->staged_len[k]++];
	slot->req = *req;
	slot->conn = conn_ref(srv, c);
	srv->staged_total++;
	c->inflight++;
	return 0;
}

/* Decodes and handles buffered requests while the output stays under its
 * high-water mark. Returns -1 when the connection was closed. */
static int conn_process(Server *srv, Conn *c)
{
	size_t off = 0;

	while (off < c->in.len && !c->close_after_flush && c->out.len < OUT_HIGH_WATER) {
		WireRequest req;
		size_t frame_len;
		const char *why = "";
		WireDecode d = wire_decode_request(c->in.data + off, c->in.len - off, &req, &frame_len, &why);
		if (d == WIRE_DECODE_NEED_MORE)
			break;
		if (d == WIRE_DECODE_ERROR || handle_request(srv, c, &req) != 0) {
			srv->protocol_errors++;
			log_debug("closing connection: %s", d == WIRE_DECODE_ERROR ? why : "unexpected op");
			conn_close(srv, c);
			return -1;
		}
		off += frame_len;
	}
	buf_consume(&c->in, off);
	return 0;
}

static void conn_read(Server *srv, Conn *c)
{
	if (c->out.len >= OUT_HIGH_WATER)
		return; /* reported readable before its output filled up */
	buf_reserve(&c->in, READ_CHUNK);
	ssize_t n = read(c->fd, c->in.data + c->in.len, READ_CHUNK);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		conn_close(srv, c);
		return;
	}
	c->in.len += (size_t)n;
	if (conn_process(srv, c) == 0)
		conn_mark_dirty(srv, c); /* flush, and settle what to poll for */
}

/* 1 when the peer on fd may talk to the ledger (server.h PEERS). */
static int peer_allowed(Server *srv, int fd)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (!srv->peer_check)
		return 1;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || len != sizeof(cred)) {
		log_warn("SO_PEERCRED: %s; refusing the connection", strerror(errno));
		return 0;
	}
	if (cred.uid == 0 || cred.uid == geteuid())
		return 1;
	for (size_t i = 0; i < srv->n_peer_uids; i++)
		if (cred.uid == srv->peer_uids[i])
			return 1;
	for (size_t i = 0; i < srv->n_peer_gids; i++)
		if (cred.gid == srv->peer_gids[i])
			return 1;
	srv->peers_refused++;
	int64_t now_ms = clock_mono_ns() / 1000000;
	if (srv->peer_logged_ms && now_ms - srv->peer_logged_ms < PEER_LOG_INTERVAL_MS) {
		srv->peers_refused_unlogged++;
		return 0;
	}
	char more[64] = "";
	if (srv->peers_refused_unlogged)
		snprintf(more, sizeof(more), " (and %llu more since the last such line)",
			 (unsigned long long)srv->peers_refused_unlogged);
	log_warn("refused a connection from pid %ld uid %lu gid %lu: not in ledger_allowed_uids "
		 "or ledger_allowed_gids%s", (long)cred.pid, (unsigned long)cred.uid,
		 (unsigned long)cred.gid, more);
	srv->peers_refused_unlogged = 0;
	srv->peer_logged_ms = now_ms;
	return 0;
}

static void accept_all(Server *srv)
{
	for (;;) {
		int fd = accept4(srv->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE) {
				/* Level-triggered, the listen fd would wake us forever:
				 * stop listening until a connection closes. */
				log_warn("accept: %s; not accepting until a connection closes",
					 strerror(errno));
				if (epoll_ctl(srv->epoll_fd, EPOLL_CTL_DEL, srv->listen_fd, NULL) == 0)
					srv->accept_paused = 1;
			} else if (errno != EAGAIN && errno != EINTR) {
				log_warn("accept: %s", strerror(errno));
			}
			return;
		}
		if (!peer_allowed(srv, fd)) {
			close(fd);
			continue;
		}
		if (srv->free_len == 0) {
			log_warn("max_connections (%d) reached: refusing a connection", srv->cfg.max_connections);
			close(fd);
			continue;
		}
		Conn *c = &srv->conns[srv->free_slots[--srv->free_len]];
		c->fd = fd;
		c->hello = c->close_after_flush = 0; /* dirty: flush_dirty clears it */
		c->events = EPOLLIN;
		c->inflight = 0;
		buf_init(&c->in, 0);
		buf_init(&c->out, 0);
		struct epoll_event ev = { .events = EPOLLIN, .data.u64 = (uint64_t)(c - srv->conns) };
		if (epoll_ctl(srv->epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0) {
			log_warn("epoll_ctl: %s", strerror(errno));
			conn_close(srv, c);
			continue;
		}
		srv->connections_total++;
	}
}

/* ---- replies from the shards ------------------------------------------------ */

void server_post_replies(void *ctx, const ShardReply *replies, size_t n, const uint8_t *data)
{
	Server *srv = ctx;
	pthread_mutex_lock(&srv->mu);
	for (size_t i = 0; i < n; i++) {
		buf_put_u64(&srv->posted, replies[i].conn);
		buf_put_u32(&srv->posted, replies[i].len);
		buf_append(&srv->posted, data + replies[i].offset, replies[i].len);
	}
	pthread_mutex_unlock(&srv->mu);
	uint64_t one = 1;
	ssize_t ignored = write(srv->event_fd, &one, sizeof(one));
	(void)ignored; /* the counter cannot overflow in practice; a wakeup is all we need */
}

static void deliver_posted(Server *srv)
{
	uint64_t count;
	ssize_t ignored = read(srv->event_fd, &count, sizeof(count));
	(void)ignored;

	pthread_mutex_lock(&srv->mu);
	Buf t = srv->posted;
	srv->posted = srv->taken;
	srv->taken = t;
	pthread_mutex_unlock(&srv->mu);

	const uint8_t *p = srv->taken.data, *end = p + srv->taken.len;
	while (p < end) {
		uint64_t ref = get_u64le(p);
		uint32_t len = get_u32le(p + 8);
		const uint8_t *frame = p + 12;
		p = frame + len;
		Conn *c = conn_deref(srv, ref);
		if (!c)
			continue; /* the connection went away; its answer goes with it */
		c->inflight--;
		buf_append(&c->out, frame, len);
		conn_mark_dirty(srv, c);
	}
	buf_reset(&srv->taken);
}

/* ---- life cycle ------------------------------------------------------------------ */

/* Refuses to take over a socket path another live ledger is serving. */
static int socket_in_use(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return 0;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	int live = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	close(fd);
	return live;
}

/* Parses a comma-separated list of names or numeric ids into ids[]: user
 * names when users, else group names. Returns 0 or -EINVAL with why. */
static int parse_ids(const char *list, const char *key, int users, unsigned *ids, size_t *n,
		     char *why, size_t why_len)
{
	char item[64];
	const char *p = list ? list : "";

	*n = 0;
	while (*p) {
		size_t len = strcspn(p, ",");
		const char *next = p[len] ? p + len + 1 : p + len;
		while (len && (*p == ' ' || *p == '\t')) {
			p++;
			len--;
		}
		while (len && (p[len - 1] == ' ' || p[len - 1] == '\t'))
			len--;
		if (len == 0 || len >= sizeof(item)) {
			snprintf(why, why_len, "%s: empty or overlong entry in '%s'", key, list);
			return -EINVAL;
		}
		if (*n == PEER_IDS_MAX) {
			snprintf(why, why_len, "%s: more than %d entries", key, PEER_IDS_MAX);
			return -EINVAL;
		}
		memcpy(item, p, len);
		item[len] = '\0';
		char *end;
		errno = 0;
		unsigned long v = strtoul(item, &end, 10);
		if (*end == '\0' && errno == 0 && item[0] >= '0' && item[0] <= '9' && v < UINT32_MAX) {
			ids[(*n)++] = (unsigned)v;
		} else if (users) {
			struct passwd *pw = getpwnam(item);
			if (!pw) {
				snprintf(why, why_len, "%s: no such user '%s'", key, item);
				return -EINVAL;
			}
			ids[(*n)++] = (unsigned)pw->pw_uid;
		} else {
			struct group *gr = getgrnam(item);
			if (!gr) {
				snprintf(why, why_len, "%s: no such group '%s'", key, item);
				return -EINVAL;
			}
			ids[(*n)++] = (unsigned)gr->gr_gid;
		}
		p = next;
	}
	return 0;
}

int server_open(const ServerConfig *cfg, Server **out, char *why, size_t why_len)
{
	Server *srv = xcalloc(1, sizeof(*srv));
	unsigned ids[PEER_IDS_MAX];
	int rc;

	srv->cfg = *cfg;
	srv->cfg.allowed_uids = srv->cfg.allowed_gids = NULL; /* borrowed only for this call */
	srv->listen_fd = srv->epoll_fd = srv->event_fd = srv->signal_fd = -1;
	rc = parse_ids(cfg->allowed_uids, "ledger_allowed_uids", 1, ids, &srv->n_peer_uids, why, why_len);
	for (size_t i = 0; rc == 0 && i < srv->n_peer_uids; i++)
		srv->peer_uids[i] = (uid_t)ids[i];
	if (rc == 0)
		rc = parse_ids(cfg->allowed_gids, "ledger_allowed_gids", 0, ids, &srv->n_peer_gids,
			       why, why_len);
	for (size_t i = 0; rc == 0 && i < srv->n_peer_gids; i++)
		srv->peer_gids[i] = (gid_t)ids[i];
	if (rc != 0) {
		free(srv);
		return rc;
	}
	srv->peer_check = srv->n_peer_uids > 0 || srv->n_peer_gids > 0;
	if (srv->peer_check)
		log_info("ledger socket peers: root, uid %lu, %zu listed uid(s), %zu listed gid(s)",
			 (unsigned long)geteuid(), srv->n_peer_uids, srv->n_peer_gids);
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	srv->signal_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	srv->event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	srv->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (srv->signal_fd < 0 || srv->event_fd < 0 || srv->epoll_fd < 0) {
		rc = -errno;
		snprintf(why, why_len, "cannot set up the event loop: %s", strerror(errno));
		goto fail;
	}
	struct epoll_event ev = { .events = EPOLLIN };
	ev.data.u64 = TAG_EVENT;
	epoll_ctl(srv->epoll_fd, EPOLL_CTL_ADD, srv->event_fd, &ev);
	ev.data.u64 = TAG_SIGNAL;
	epoll_ctl(srv->epoll_fd, EPOLL_CTL_ADD, srv->signal_fd, &ev);

	srv->conns = xcalloc((size_t)cfg->max_connections, sizeof(Conn));
	srv->free_slots = xmalloc((size_t)cfg->max_connections * sizeof(uint32_t));
	srv->dirty = xmalloc((size_t)cfg->max_connections * sizeof(uint32_t));
	for (int i = cfg->max_connections - 1; i >= 0; i--) {
		srv->conns[i].fd = -1;
		srv->free_slots[srv->free_len++] = (uint32_t)i;
	}
	pthread_mutex_init(&srv->mu, NULL);
	buf_init(&srv->posted, 64 * 1024);
	buf_init(&srv->taken, 64 * 1024);
	*out = srv;
	return 0;
fail:
	if (srv->signal_fd >= 0)
		close(srv->signal_fd);
	if (srv->event_fd >= 0)
		close(srv->event_fd);
	if (srv->epoll_fd >= 0)
		close(srv->epoll_fd);
	free(srv);
	return rc;
}

int server_listen(Server *srv, char *why, size_t why_len)
{
	const ServerConfig *cfg = &srv->cfg;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	if (strlen(cfg->socket_path) >= sizeof(sa.sun_path)) {
		snprintf(why, why_len, "socket path too long: %s", cfg->socket_path);
		return -ENAMETOOLONG;
	}
	if (socket_in_use(cfg->socket_path)) {
		snprintf(why, why_len, "another ledger is serving %s", cfg->socket_path);
		return -EADDRINUSE;
	}
	strcpy(sa.sun_path, cfg->socket_path);
	unlink(cfg->socket_path);
	srv->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (srv->listen_fd < 0)
		goto fail;
	mode_t old_umask = umask(0177); /* no moment where the socket is more open than asked */
	int rc = bind(srv->listen_fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old_umask);
	if (rc != 0 || listen(srv->listen_fd, 1024) != 0)
		goto fail;
	if (chmod(cfg->socket_path, (mode_t)cfg->socket_mode) != 0 ||
	    (cfg->socket_gid != (gid_t)-1 && chown(cfg->socket_path, (uid_t)-1, cfg->socket_gid) != 0))
		goto fail;
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = TAG_LISTEN };
	if (epoll_ctl(srv->epoll_fd, EPOLL_CTL_ADD, srv->listen_fd, &ev) != 0)
		goto fail;
	return 0;
fail:
	rc = -errno;
	snprintf(why, why_len, "cannot listen on %s: %s", cfg->socket_path, strerror(errno));
	if (srv->listen_fd >= 0) {
		close(srv->listen_fd);
		srv->listen_fd = -1;
	}
	return rc;
}

void server_set_shards(Server *srv, Shard **shards, unsigned n)
{
	srv->shards = shards;
	srv->nshards = n;
	srv->staged = xcalloc(n, sizeof(*srv->staged));
	srv->staged_len = xcalloc(n, sizeof(*srv->staged_len));
	for (unsigned k = 0; k < n; k++)
		srv->staged[k] = xmalloc(STAGE_MAX * sizeof(ShardRequest));
}

void server_set_reload_hook(Server *srv, ServerReloadFn fn, void *ctx)
{
	srv->reload = fn;
	srv->reload_ctx = ctx;
}

int server_run(Server *srv)
{
	struct epoll_event events[256];

	log_set_context("server");
	log_info("serving %s (%u shards)", srv->cfg.socket_path, srv->nshards);
	for (;;) {
		int n = epoll_wait(srv->epoll_fd, events, 256, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		for (int i = 0; i < n; i++) {
			uint64_t tag = events[i].data.u64;
			if (tag == TAG_LISTEN) {
				accept_all(srv);
			} else if (tag == TAG_EVENT) {
				deliver_posted(srv);
			} else if (tag == TAG_SIGNAL) {
				struct signalfd_siginfo si;
				if (read(srv->signal_fd, &si, sizeof(si)) != (ssize_t)sizeof(si))
					continue;
				if (si.ssi_signo == SIGHUP) {
					log_info("SIGHUP: %s", srv->reload ? "reloading" : "nothing to reload");
					if (srv->reload)
						srv->reload(srv->reload_ctx);
				} else {
					log_info("signal %u: finishing the batch in flight and stopping", si.ssi_signo);
					end_pass(srv); /* what this pass decoded reaches its shard */
					return 0;
				}
			} else {
				Conn *c = &srv->conns[tag];
				if (c->fd < 0)
					continue;
				if (events[i].events & EPOLLOUT) {
					if (conn_flush(srv, c) != 0)
						continue;
				}
				if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
					conn_read(srv, c);
			}
		}
		end_pass(srv);
	}
}

void server_deliver(Server *srv)
{
	/* The shards have drained: their last answers are posted. Give clients
	 * a bounded moment to take them. */
	if (srv->listen_fd >= 0) {
		epoll_ctl(srv->epoll_fd, EPOLL_CTL_DEL, srv->listen_fd, NULL);
		close(srv->listen_fd);
		srv->listen_fd = -1;
		srv->accept_paused = 0;
		unlink(srv->cfg.socket_path);
	}
	deliver_posted(srv);
	end_pass(srv);
	int64_t deadline = clock_mono_ns() + (int64_t)CLOSE_FLUSH_MS * 1000000;
	for (;;) {
		int pending = 0;
		for (int i = 0; i < srv->cfg.max_connections; i++) {
			Conn *c = &srv->conns[i];
			if (c->fd >= 0 && c->out.len > 0)
				conn_flush(srv, c);
		}
		end_pass(srv); /* answers SHUTTING_DOWN to what the flushes decoded */
		for (int i = 0; i < srv->cfg.max_connections; i++)
			if (srv->conns[i].fd >= 0 && srv->conns[i].out.len > 0)
				pending = 1;
		if (!pending || clock_mono_ns() > deadline)
			break;
		poll(NULL, 0, 5);
	}
}

void server_close(Server *srv)
{
	if (!srv)
		return;
	server_deliver(srv);
	for (int i = 0; i < srv->cfg.max_connections; i++)
		if (srv->conns[i].fd >= 0)
			conn_close(srv, &srv->conns[i]);
	close(srv->signal_fd);
	close(srv->event_fd);
	close(srv->epoll_fd);
	buf_free(&srv->posted);
	buf_free(&srv->taken);
	pthread_mutex_destroy(&srv->mu);
	free(srv->conns);
	free(srv->free_slots);
	free(srv->dirty);
	for (unsigned k = 0; srv->staged && k < srv->nshards; k++)
		free(srv->staged[k]);
	free(srv->staged);
	free(srv->staged_len);
	free(srv);
}
