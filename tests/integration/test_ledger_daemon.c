/* test_ledger_daemon.c — the real rg-ledger over its socket.
 *
 * What API.md promises about the ledger, checked against the daemon itself:
 * concurrent buyers never get more than the stock (exactly the stock sells);
 * an acknowledged reservation survives kill -9; a clean stop and restart keeps
 * everything; holds expire within a second; a full queue answers "busy" at
 * once; a malformed frame closes only its own connection; the daemon refuses
 * a second instance on the same data and a changed shard count. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "common/clock.h"
#include "common/ledger_client.h"
#include "ledger_proc.h"

#define TIMEOUT_MS 10000

static LedgerClient *connect_or_die(const LedgerProc *p)
{
	LedgerClient *c;
	int rc = ledger_client_connect(p->socket, TIMEOUT_MS, &c);
	if (rc != 0) {
		fprintf(stderr, "connect %s: %s\n", p->socket, strerror(-rc));
		exit(1);
	}
	return c;
}

static void put_sku(LedgerClient *c, const char *sku, int64_t stock, int32_t ttl_s)
{
	WireRequest req = { .op = WIRE_OP_PUT_SKU };
	WireResponse resp;
	wire_set_str(req.sku, &req.sku_len, sku, strlen(sku), WIRE_SKU_MAX);
	req.settings.fields = WIRE_SKU_HAS_STOCK | WIRE_SKU_HAS_MAX_PER_ORDER |
			      (ttl_s ? WIRE_SKU_HAS_TTL : 0);
	req.settings.stock = stock;
	req.settings.max_per_order = 100;
	req.settings.reservation_ttl_s = ttl_s;
	REQUIRE(ledger_client_call(c, &req, &resp, TIMEOUT_MS) == 0);
	REQUIRE(resp.status == WIRE_CREATED || resp.status == WIRE_OK);
}

static WireSku get_sku(LedgerClient *c, const char *sku)
{
	WireRequest req = { .op = WIRE_OP_GET_SKU };
	WireResponse resp;
	wire_set_str(req.sku, &req.sku_len, sku, strlen(sku), WIRE_SKU_MAX);
	REQUIRE(ledger_client_call(c, &req, &resp, TIMEOUT_MS) == 0);
	REQUIRE(resp.status == WIRE_OK);
	return resp.u.sku;
}

static void make_reserve(WireRequest *req, const char *sku, const char *session, int32_t qty)
{
	memset(req, 0, sizeof(*req));
	req->op = WIRE_OP_RESERVE;
	wire_set_str(req->sku, &req->sku_len, sku, strlen(sku), WIRE_SKU_MAX);
	wire_set_str(req->session, &req->session_len, session, strlen(session), WIRE_SESSION_MAX);
	req->quantity = qty;
}

/* ---- exactly the stock sells under concurrency ------------------------------ */

#define RACE_SKUS 12
#define RACE_STOCK 40
#define RACE_THREADS 16

static LedgerProc *race_proc;
static atomic_int race_sold[RACE_SKUS];
static atomic_int race_bad;

static void *race_buyer(void *arg)
{
	int id = (int)(intptr_t)arg;
	LedgerClient *c = connect_or_die(race_proc);
	unsigned seed = (unsigned)id * 7919u;
	int sold_out[RACE_SKUS] = { 0 }, remaining = RACE_SKUS;

	for (int n = 0; remaining > 0 && n < 100000; n++) {
		int k = (int)(rand_r(&seed) % RACE_SKUS);
		if (sold_out[k])
			continue;
		char sku[32], session[32];
		snprintf(sku, sizeof(sku), "race-%d", k);
		snprintf(session, sizeof(session), "buyer-%d-%d", id, n);
		WireRequest req;
		WireResponse resp;
		make_reserve(&req, sku, session, 1);
		if (ledger_client_call(c, &req, &resp, TIMEOUT_MS) != 0) {
			atomic_fetch_add(&race_bad, 1);
			break;
		}
		if (resp.status == WIRE_CREATED) {
			atomic_fetch_add(&race_sold[k], 1);
		} else if (resp.status == WIRE_SOLD_OUT) {
			sold_out[k] = 1;
			remaining--;
		} else if (resp.status != WIRE_BUSY) {
			atomic_fetch_add(&race_bad, 1);
		}
	}
	ledger_client_close(c);
	return NULL;
}

static void test_exact_stock_sells(LedgerProc *p)
{
	LedgerClient *c = connect_or_die(p);
	for (int k = 0; k < RACE_SKUS; k++) {
		char sku[32];
		snprintf(sku, sizeof(sku), "race-%d", k);
		put_sku(c, sku, RACE_STOCK, 0);
	}
	race_proc = p;
	pthread_t t[RACE_THREADS];
	for (int i = 0; i < RACE_THREADS; i++)
		pthread_create(&t[i], NULL, race_buyer, (void *)(intptr_t)i);
	for (int i = 0; i < RACE_THREADS; i++)
		pthread_join(t[i], NULL);
	CHECK_EQ_INT(atomic_load(&race_bad), 0);
	for (int k = 0; k < RACE_SKUS; k++) {
		char sku[32];
		snprintf(sku, sizeof(sku), "race-%d", k);
		CHECK_EQ_INT(atomic_load(&race_sold[k]), RACE_STOCK);
		WireSku s = get_sku(c, sku);
		CHECK_EQ_INT(s.reserved, RACE_STOCK);
		CHECK_EQ_INT(s.stock - s.reserved - s.sold, 0);
	}
	ledger_client_close(c);
	printf("race: %d threads bought exactly %d units of each of %d SKUs\n", RACE_THREADS,
	       RACE_STOCK, RACE_SKUS);
}

/* ---- acknowledged reservations survive kill -9 ------------------------------- */

#define CRASH_THREADS 8
#define CRASH_ACKS_MAX 200000

typedef struct Ack {
	ResId id;
	char session[32];
} Ack;

static LedgerProc *crash_proc;
static Ack *crash_acks;
static atomic_int crash_ack_len;
static atomic_int crash_stop;

static void *crash_buyer(void *arg)
{
	int id = (int)(intptr_t)arg;
	LedgerClient *c = connect_or_die(crash_proc);
	for (int n = 0; !atomic_load(&crash_stop); n++) {
		char sku[32], session[32];
		snprintf(sku, sizeof(sku), "crash-%d", n % 4);
		snprintf(session, sizeof(session), "s-%d-%d", id, n);
		WireRequest req;
		WireResponse resp;
		make_reserve(&req, sku, session, 1);
		if (ledger_client_call(c, &req, &resp, TIMEOUT_MS) != 0)
			break; /* the ledger died: this request may or may not have landed */
		if (resp.status != WIRE_CREATED)
			continue;
		int i = atomic_fetch_add(&crash_ack_len, 1);
		if (i >= CRASH_ACKS_MAX)
			break;
		crash_acks[i].id = resp.u.reservation.id;
		snprintf(crash_acks[i].session, sizeof(crash_acks[i].session), "%s", session);
	}
	ledger_client_close(c);
	return NULL;
}

static void test_kill9_keeps_acknowledged(LedgerProc *p)
{
	crash_acks = calloc(CRASH_ACKS_MAX, sizeof(Ack));
	LedgerClient *c = connect_or_die(p);
	for (int k = 0; k < 4; k++) {
		char sku[32];
		snprintf(sku, sizeof(sku), "crash-%d", k);
		put_sku(c, sku, 1000000, 3600);
	}
	ledger_client_close(c);

	for (int round = 0; round < 3; round++) {
		int before = atomic_load(&crash_ack_len);
		crash_proc = p;
		atomic_store(&crash_stop, 0);
		pthread_t t[CRASH_THREADS];
		for (int i = 0; i < CRASH_THREADS; i++)
			pthread_create(&t[i], NULL, crash_buyer, (void *)(intptr_t)i);
		struct timespec ts = { 0, 300 * 1000000 + round * 100 * 1000000 };
		nanosleep(&ts, NULL);
		ledger_proc_kill(p); /* mid-batch, mid-fsync: wherever it is */
		atomic_store(&crash_stop, 1);
		for (int i = 0; i < CRASH_THREADS; i++)
			pthread_join(t[i], NULL);
		REQUIRE(ledger_proc_start(p) == 0);

		int acked = atomic_load(&crash_ack_len);
		if (acked > CRASH_ACKS_MAX)
			acked = CRASH_ACKS_MAX;
		int missing = 0;
		c = connect_or_die(p);
		for (int i = 0; i < acked; i++) {
			WireRequest req = { .op = WIRE_OP_GET_RESERVATION, .reservation = crash_acks[i].id };
			WireResponse resp;
			wire_set_str(req.session, &req.session_len, crash_acks[i].session,
				     strlen(crash_acks[i].session), WIRE_SESSION_MAX);
			REQUIRE(ledger_client_call(c, &req, &resp, TIMEOUT_MS) == 0);
			if (resp.status != WIRE_OK || resp.u.reservation.state != WIRE_RES_RESERVED)
				missing++;
		}
		int64_t held = 0;
		for (int k = 0; k < 4; k++) {
			char sku[32];
			snprintf(sku, sizeof(sku), "crash-%d", k);
			WireSku s = get_sku(c, sku);
			CHECK(s.reserved + s.sold <= s.stock);
			held += s.reserved;
		}
		ledger_client_close(c);
		CHECK_EQ_INT(missing, 0);
		/* Holds beyond the acknowledged ones are requests whose answer the
		 * crash swallowed: at most one in flight per buyer. */
		CHECK(held >= acked && held <= acked + (round + 1) * CRASH_THREADS);
		printf("kill -9 round %d: %d acknowledged (+%d this round), all present; %lld held\n",
		       round, acked, acked - before, (long long)held);
	}
	free(crash_acks);
}

/* ---- clean stop, expiry, backpressure, bad frames, refusals ------------------ */

static void test_clean_restart(LedgerProc *p)
{
	LedgerClient *c = connect_or_die(p);
	put_sku(c, "restart", 10, 0);
	WireRequest req;
	WireResponse resp;
	make_reserve(&req, "restart", "alice", 3);
	REQUIRE(ledger_client_call(c, &req, &resp, TIMEOUT_MS) == 0);
	REQUIRE(resp.status == WIRE_CREATED);
	ResId id = resp.u.reservation.id;
	WireRequest confirm = { .op = WIRE_OP_CONFIRM, .reservation = id };
	wire_set_str(confirm.session, &confirm.session_len, "alice", 5, WIRE_SESSION_MAX);
	REQUIRE(ledger_client_call(c, &confirm, &resp, TIMEOUT_MS) == 0);
	CHECK_EQ_INT(resp.status, WIRE_OK);
	ledger_client_close(c);

	CHECK_EQ_INT(ledger_proc_stop(p), 0);
	CHECK(ledger_proc_log_contains(p, "stopped cleanly"));
	REQUIRE(ledger_proc_start(p) == 0);
	c = connect_or_die(p);
	WireSku s = get_sku(c, "restart");
	CHECK_EQ_INT(s.sold, 3);
	CHECK_EQ_INT(s.reserved, 0);
	WireRequest get = { .op = WIRE_OP_GET_RESERVATION, .reservation = id };
	wire_set_str(get.session, &get.session_len, "alice", 5, WIRE_SESSION_MAX);
	REQUIRE(ledger_client_call(c, &get, &resp, TIMEOUT_MS) == 0);
	CHECK_EQ_INT(resp.status, WIRE_OK);
	CHECK_EQ_INT(resp.u.reservation.state, WIRE_RES_CONFIRMED);
	ledger_client_close(c);
}

static void test_expiry_within_a_second(LedgerProc *p)
{
	LedgerClient *c = connect_or_die(p);
	put_sku(c, "short-hold", 5, 1);
	WireRequest req;
	WireResponse resp;
	make_reserve(&req, "short-hold", "bob", 5);
	REQUIRE(ledger_client_call(c, &req, &resp, TIMEOUT_MS) == 0);
	REQUIRE(resp.status == WIRE_CREATED);
	int64_t expires = resp.u.reservation.expires_ms;
	ResId id = resp.u.reservation.id;
	CHECK_EQ_INT(resp.u.reservation.available, 0);

	/* Wait until one second past expiry, reading nothing meanwhile, so only
	 * the shard's own timer can have expired the hold. */
	while (clock_wall_ms() < expires + 1000) {
		struct timespec ts = { 0, 20 * 1000000 };
		nanosleep(&ts, NULL);
	}
	WireRequest stats = { .op = WIRE_OP_STATS };
	REQUIRE(ledger_client_call(c, &stats, &resp, TIMEOUT_MS) == 0);
	CHECK(wire_stat_value(&resp, "timed_out") >= 1);

	WireRequest get = { .op = WIRE_OP_GET_RESERVATION, .reservation = id };
	wire_set_str(get.session, &get.session_len, "bob", 3, WIRE_SESSION_MAX);
	REQUIRE(ledger_client_call(c, &get, &resp, TIMEOUT_MS) == 0);
	CHECK_EQ_INT(resp.u.reservation.state, WIRE_RES_TIMEOUT);
	CHECK_EQ_INT(resp.u.reservation.available, 5);
	ledger_client_close(c);
}

static void test_full_queue_is_busy(void)
{
	LedgerProc p;
	ledger_proc_init(&p, "busy");
	p.extra_env[0] = "RG_SHARD_QUEUE_LEN_MAX=16";
	p.extra_env[1] = "RG_SHARDS=1";
	REQUIRE(ledger_proc_start(&p) == 0);
	LedgerClient *c = connect_or_die(&p);
	put_sku(c, "busy", 1000000, 0);

	enum { N = 600 };
	for (int i = 0; i < N; i++) {
		WireRequest req;
		char session[32];
		snprintf(session, sizeof(session), "p%d", i);
		make_reserve(&req, "busy", session, 1);
		ledger_client_send(c, &req);
	}
	REQUIRE(ledger_client_flush(c) == 0);
	int created = 0, busy = 0, other = 0;
	for (int i = 0; i < N; i++) {
		WireResponse resp;
		REQUIRE(ledger_client_recv(c, &resp, TIMEOUT_MS) == 0);
		if (resp.status == WIRE_CREATED)
			created++;
		else if (resp.status == WIRE_BUSY)
			busy++;
		else
			other++;
	}
	WireSku s = get_sku(c, "busy");
	CHECK_EQ_INT(other, 0);
	CHECK(busy > 0);
	CHECK(created > 0);
	CHECK_EQ_INT(s.reserved, created); /* a busy answer changed nothing */
	printf("backpressure: %d pipelined, %d created, %d busy\n", N, created, busy);
	ledger_client_close(c);
	CHECK_EQ_INT(ledger_proc_stop(&p), 0);
	CHECK(!ledger_proc_sanitizer_reports(&p));
}

static void test_bad_frame_closes_only_its_connection(LedgerProc *p)
{
	LedgerClient *good = connect_or_die(p);
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	REQUIRE(strlen(p->socket) < sizeof(sa.sun_path));
	memcpy(sa.sun_path, p->socket, strlen(p->socket) + 1);
	REQUIRE(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
	const uint8_t junk[] = { 0xff, 0xff, 0xff, 0x7f, 1, 2, 3, 4 }; /* a 2 GiB frame */
	REQUIRE(write(fd, junk, sizeof(junk)) == (ssize_t)sizeof(junk));
	char b;
	CHECK(read(fd, &b, 1) == 0); /* closed by the ledger, no answer */
	close(fd);

	WireRequest ping = { .op = WIRE_OP_PING };
	WireResponse resp;
	REQUIRE(ledger_client_call(good, &ping, &resp, TIMEOUT_MS) == 0);
	CHECK_EQ_INT(resp.status, WIRE_OK);
	ledger_client_close(good);
}

/* A client that sends and never reads: the ledger stops reading it once
 * its unsent answers pile up, instead of buffering without limit, and keeps
 * serving everyone else. */
static void test_reader_that_never_reads(LedgerProc *p)
{
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	REQUIRE(strlen(p->socket) < sizeof(sa.sun_path));
	memcpy(sa.sun_path, p->socket, strlen(p->socket) + 1);
	REQUIRE(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);

	Buf frames;
	buf_init(&frames, 0);
	WireRequest hello = { .op = WIRE_OP_HELLO, .id = 1, .magic = WIRE_MAGIC, .version = WIRE_VERSION };
	wire_encode_request(&frames, &hello);
	REQUIRE(write(fd, frames.data, frames.len) == (ssize_t)frames.len);
	buf_reset(&frames);
	for (int i = 0; i < 4096; i++) {
		WireRequest stats = { .op = WIRE_OP_STATS, .id = (uint64_t)i + 2 };
		wire_encode_request(&frames, &stats); /* each answer is ~100x its request */
	}
	/* Send STATS frames round and round (the buffer holds whole frames, so
	 * any prefix sent is a frame boundary) until the ledger stops reading. */
	size_t sent = 0, off = 0;
	int64_t quiet_since = clock_mono_ns();
	while (sent < ((size_t)64 << 20) && clock_mono_ns() - quiet_since < 500 * 1000000LL) {
		ssize_t n = send(fd, frames.data + off, frames.len - off, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n > 0) {
			sent += (size_t)n;
			off = (off + (size_t)n) % frames.len;
			quiet_since = clock_mono_ns();
			continue;
		}
		REQUIRE(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)); /* not closed */
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
	}
	printf("never-reading client: the ledger stopped taking its requests after %zu bytes\n", sent);
	CHECK(sent < ((size_t)16 << 20));

	LedgerClient *good = connect_or_die(p);
	WireRequest ping = { .op = WIRE_OP_PING };
	WireResponse resp;
	REQUIRE(ledger_client_call(good, &ping, &resp, TIMEOUT_MS) == 0);
	CHECK_EQ_INT(resp.status, WIRE_OK);
	ledger_client_close(good);
	close(fd);
	buf_free(&frames);
}

static void test_refusals(LedgerProc *p)
{
	/* A second ledger on the same data directory (different socket). */
	LedgerProc twin = *p;
	snprintf(twin.socket, sizeof(twin.socket), "%s/twin.sock", p->dir);
	snprintf(twin.log, sizeof(twin.log), "%s/twin.log", p->dir);
	CHECK(ledger_proc_run_expect_exit(&twin) != 0);
	CHECK(ledger_proc_log_contains(&twin, "in use by another rg-ledger"));

	/* A changed shard count, once the first is stopped. */
	CHECK_EQ_INT(ledger_proc_stop(p), 0);
	LedgerProc reshard = *p;
	reshard.extra_env[0] = "RG_SHARDS=3";
	snprintf(reshard.log, sizeof(reshard.log), "%s/reshard.log", p->dir);
	CHECK(ledger_proc_run_expect_exit(&reshard) != 0);
	CHECK(ledger_proc_log_contains(&reshard, "re-sharding"));
}

int main(void)
{
	LedgerProc p;
	ledger_proc_init(&p, "daemon");
	p.extra_env[0] = "RG_SHARDS=2";
	p.extra_env[1] = "RG_WAL_SEGMENT_SIZE_MB=4";
	p.extra_env[2] = "RG_SNAPSHOT_INTERVAL_RECORDS=20000";
	REQUIRE(ledger_proc_start(&p) == 0);

	test_exact_stock_sells(&p);
	test_kill9_keeps_acknowledged(&p);
	test_clean_restart(&p);
	test_expiry_within_a_second(&p);
	test_bad_frame_closes_only_its_connection(&p);
	test_reader_that_never_reads(&p);
	test_refusals(&p);
	test_full_queue_is_busy();

	ledger_proc_kill(&p);
	CHECK(!ledger_proc_sanitizer_reports(&p));
	return check_exit();
}
