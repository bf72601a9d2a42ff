/* test_shard_recovery.c — shard_open replays a WAL into the same book.
 *
 * Replay reads ahead (shard.c: a record is decoded and its lookups fetched
 * into the cache REPLAY_AHEAD records before it is applied), so these cases
 * make sure that changes nothing a reader could see:
 *   - logs shorter and longer than the look-ahead, with records that depend
 *     on the one right before them (a confirm straight after its reserve) and
 *     on ones far behind, recover to exactly the book that wrote them: the
 *     same stats, and every SKU and reservation answers the same through a
 *     started shard;
 *   - a record that does not fit the state refuses the start, names its own
 *     LSN and changes no file, whether it sits in the middle of the log or
 *     among the last records (applied only once the log has been read), even
 *     when damage follows that --allow-wal-corruption would drop.
 * A damaged snapshot beside the log is skipped and set aside (.damaged).
 * The log is made by a real Book (seeded), so its records are the ones the
 * ledger writes. RG_TEST_SEED reproduces a run. */
#include "ledger/shard.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "testdir.h"
#include "common/buf.h"
#include "common/clock.h"
#include "common/hash.h"
#include "common/log.h"
#include "common/rng.h"
#include "ledger/book.h"
#include "ledger/record.h"
#include "ledger/wal.h"

static int64_t t0; /* now: the started shard expires holds by the wall clock */
#define SKUS 5
#define RES_MAX 1500 /* the book's tables (1,024 buckets) grow during replay */

/* ---- a log written by a real book --------------------------------------- */

typedef struct Log {
	Record rec[RES_MAX * 2];
	size_t n;
} Log;

static void log_emit(void *ctx, const Record *rec)
{
	Log *l = ctx;
	REQUIRE(l->n < sizeof(l->rec) / sizeof(l->rec[0]));
	l->rec[l->n++] = *rec;
}

static BookConfig book_config(void)
{
	return (BookConfig){ .default_ttl_s = 300, .default_max_per_order = 10,
			     .default_per_session_limit = 0, .retention_ms = 86400000 };
}

static void sku_name(char *out, size_t len, int k)
{
	snprintf(out, len, "replay-%d", k);
}

static void exec(Book *b, Log *l, WireRequest *q, WireResponse *resp)
{
	book_execute(b, q, t0, resp, log_emit, l);
}

/* nres reservations over SKUS SKUs; every 3rd is confirmed at once (the
 * record right after its RESERVE), every 7th released a while later. */
static void write_book(Book *b, Log *l, int nres, ResId *ids)
{
	WireRequest q;
	WireResponse r;
	for (int k = 0; k < SKUS; k++) {
		memset(&q, 0, sizeof(q));
		q.op = WIRE_OP_PUT_SKU;
		char sku[32];
		sku_name(sku, sizeof(sku), k);
		wire_set_str(q.sku, &q.sku_len, sku, strlen(sku), WIRE_SKU_MAX);
		q.settings.fields = WIRE_SKU_HAS_STOCK;
		q.settings.stock = 1000;
		exec(b, l, &q, &r);
		REQUIRE(r.status == WIRE_CREATED);
	}
	for (int i = 0; i < nres; i++) {
		char sku[32], session[32];
		sku_name(sku, sizeof(sku), i % SKUS);
		snprintf(session, sizeof(session), "buyer-%d", i);
		memset(&q, 0, sizeof(q));
		q.op = WIRE_OP_RESERVE;
		wire_set_str(q.sku, &q.sku_len, sku, strlen(sku), WIRE_SKU_MAX);
		wire_set_str(q.session, &q.session_len, session, strlen(session), WIRE_SESSION_MAX);
		q.quantity = 1 + i % 3;
		exec(b, l, &q, &r);
		REQUIRE(r.status == WIRE_CREATED);
		ids[i] = r.u.reservation.id;
		uint8_t later = i % 3 == 0 ? WIRE_OP_CONFIRM : 0;
		int target = i;
		if (!later && i % 7 == 0 && i >= 40) {
			later = WIRE_OP_RELEASE; /* one written ~40 records before */
			target = i - 40;
		}
		if (later && !(later == WIRE_OP_RELEASE && target % 3 == 0)) { /* not confirmed */
			snprintf(session, sizeof(session), "buyer-%d", target);
			memset(&q, 0, sizeof(q));
			q.op = later;
			q.reservation = ids[target];
			wire_set_str(q.session, &q.session_len, session, strlen(session),
				     WIRE_SESSION_MAX);
			exec(b, l, &q, &r);
			REQUIRE(r.status == WIRE_OK);
		}
	}
}

/* Writes l as one batch; returns the offset of the last record's frame. */
static size_t write_wal(const char *dir, const Log *l)
{
	WalOptions opt = { .dir = dir, .segment_size = 1 << 20 };
	Wal *w;
	char why[256];
	REQUIRE(wal_open(&opt, 0, NULL, NULL, &w, NULL, why, sizeof(why)) == 0);
	Buf batch, payload;
	buf_init(&batch, 4096);
	buf_init(&payload, 512);
	size_t last = 0;
	for (size_t i = 0; i < l->n; i++) {
		buf_reset(&payload);
		record_encode(&l->rec[i], &payload);
		last = batch.len;
		wal_frame(&batch, i + 1, payload.data, payload.len);
	}
	REQUIRE(wal_write(w, batch.data, batch.len) == 0);
	REQUIRE(wal_sync(w) == 0);
	wal_close(w);
	buf_free(&batch);
	buf_free(&payload);
	return last;
}

/* A digest of every file in dir: names, sizes and bytes. */
static uint64_t dir_digest(const char *dir)
{
	DIR *d = opendir(dir);
	REQUIRE(d);
	uint64_t sum = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		char path[1024];
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		FILE *f = fopen(path, "rb");
		REQUIRE(f);
		uint64_t h = hash_bytes(de->d_name, strlen(de->d_name));
		uint8_t chunk[65536];
		size_t n;
		while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
			h = h * 1000003 ^ hash_bytes(chunk, n) ^ n;
		fclose(f);
		sum += h; /* order-independent */
	}
	closedir(d);
	return sum;
}

static void flip_byte(const char *dir, size_t offset)
{
	char path[1024];
	snprintf(path, sizeof(path), "%s/wal-%016llx.seg", dir, 1ULL);
	FILE *f = fopen(path, "r+b");
	REQUIRE(f);
	REQUIRE(fseek(f, (long)offset, SEEK_SET) == 0);
	int c = fgetc(f);
	REQUIRE(c != EOF);
	REQUIRE(fseek(f, (long)offset, SEEK_SET) == 0);
	fputc(c ^ 0x10, f);
	REQUIRE(fclose(f) == 0);
}

/* ---- asking a started shard --------------------------------------------- */

typedef struct Answers {
	pthread_mutex_t mu;
	pthread_cond_t cond;
	WireResponse resp;
	int have;
} Answers;

static void on_reply(void *ctx, const ShardReply *replies, size_t n, const uint8_t *data)
{
	Answers *a = ctx;
	pthread_mutex_lock(&a->mu);
	for (size_t i = 0; i < n; i++) {
		size_t used;
		const char *why;
		REQUIRE(wire_decode_response(data + replies[i].offset, replies[i].len, &a->resp, &used,
					     &why) == WIRE_DECODE_OK);
		a->have = 1;
	}
	pthread_cond_broadcast(&a->cond);
	pthread_mutex_unlock(&a->mu);
}

static WireResponse ask(Shard *s, Answers *a, const WireRequest *q)
{
	pthread_mutex_lock(&a->mu);
	a->have = 0;
	pthread_mutex_unlock(&a->mu);
	REQUIRE(shard_submit(s, q, 1) == 0);
	pthread_mutex_lock(&a->mu);
	while (!a->have)
		pthread_cond_wait(&a->cond, &a->mu);
	WireResponse r = a->resp;
	pthread_mutex_unlock(&a->mu);
	return r;
}

/* The book that writes the log, and what it wrote. */
typedef struct Source {
	Rng rng;
	IdemIndex *idem;
	Book *book;
	Log log;
	ResId ids[RES_MAX];
} Source;

static Source source; /* large: one at a time */

static void source_open(int nres, uint64_t seed)
{
	BookConfig bc = book_config();
	rng_init_seeded(&source.rng, seed);
	source.idem = idem_new();
	source.book = book_new(&bc, source.idem, &source.rng);
	source.log.n = 0;
	write_book(source.book, &source.log, nres, source.ids);
}

static void source_close(void)
{
	book_free(source.book);
	idem_free(source.idem);
}

/* A file named like the newest snapshot that is not one: recovery must
 * skip it. */
#define DAMAGED_SNAP_LSN 0x7fffULL

static void plant_damaged_snapshot(const char *dir)
{
	char snap[1024];
	snprintf(snap, sizeof(snap), "%s/snap-%016llx.snap", dir, DAMAGED_SNAP_LSN);
	FILE *f = fopen(snap, "wb");
	REQUIRE(f && fputs("not a snapshot", f) >= 0 && fclose(f) == 0);
}

/* Asks the started shard and the book that wrote the log the same question. */
static void ask_both(Shard *s, Answers *a, const WireRequest *q, WireResponse *mine,
		     WireResponse *theirs)
{
	*mine = ask(s, a, q);
	book_execute(source.book, q, t0, theirs, log_emit, &source.log);
}

static ShardConfig shard_config(const char *dir)
{
	ShardConfig c = { .wal_segment_size = 1 << 20, .queue_len_max = 64,
			  .snapshot_interval_records = 1000000000, .book = book_config() };
	snprintf(c.dir, sizeof(c.dir), "%s", dir);
	return c;
}

/* ---- cases ---------------------------------------------------------------- */

static void recovers_same_book(int nres, uint64_t seed)
{
	char dir[512], name[32];
	snprintf(name, sizeof(name), "same-%d", nres);
	testdir_case(dir, sizeof(dir), name);

	source_open(nres, seed);
	Log *l = &source.log;
	write_wal(dir, l);
	/* A damaged snapshot newer than anything: skipped, then set aside. */
	char snap[1024], aside[1024];
	plant_damaged_snapshot(dir);
	snprintf(snap, sizeof(snap), "%s/snap-%016llx.snap", dir, DAMAGED_SNAP_LSN);
	snprintf(aside, sizeof(aside), "%s/snap-%016llx.damaged", dir, DAMAGED_SNAP_LSN);

	IdemIndex *idem2 = idem_new();
	Answers a = { .mu = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };
	ShardConfig sc = shard_config(dir);
	Shard *s;
	char why[512] = "";
	int rc = shard_open(&sc, idem2, on_reply, &a, &s, why, sizeof(why));
	if (rc != 0)
		fprintf(stderr, "shard_open: %s\n", why);
	REQUIRE(rc == 0);
	CHECK(access(snap, F_OK) != 0 && access(aside, F_OK) == 0);

	REQUIRE(shard_start(s) == 0);
	for (int k = 0; k < SKUS; k++) {
		WireRequest q = { .op = WIRE_OP_GET_SKU };
		WireResponse mine, theirs;
		char sku[32];
		sku_name(sku, sizeof(sku), k);
		wire_set_str(q.sku, &q.sku_len, sku, strlen(sku), WIRE_SKU_MAX);
		ask_both(s, &a, &q, &mine, &theirs);
		CHECK_EQ_INT(mine.status, WIRE_OK);
		CHECK_EQ_INT(mine.u.sku.stock, theirs.u.sku.stock);
		CHECK_EQ_INT(mine.u.sku.reserved, theirs.u.sku.reserved);
		CHECK_EQ_INT(mine.u.sku.sold, theirs.u.sku.sold);
	}
	for (int i = 0; i < nres; i++) {
		WireRequest q = { .op = WIRE_OP_GET_RESERVATION, .reservation = source.ids[i] };
		WireResponse mine, theirs;
		char session[32];
		snprintf(session, sizeof(session), "buyer-%d", i);
		wire_set_str(q.session, &q.session_len, session, strlen(session), WIRE_SESSION_MAX);
		ask_both(s, &a, &q, &mine, &theirs);
		CHECK_EQ_INT(mine.status, WIRE_OK);
		CHECK_EQ_INT(mine.u.reservation.state, theirs.u.reservation.state);
		CHECK_EQ_INT(mine.u.reservation.quantity, theirs.u.reservation.quantity);
	}
	ShardStats st; /* published once per batch: the queries above were batches */
	shard_stats(s, &st);
	const BookStats *want = book_stats(source.book);
	CHECK_EQ_INT(st.recovered_records, l->n);
	CHECK_EQ_INT(st.book.skus, want->skus);
	CHECK_EQ_INT(st.book.holds_active, want->holds_active);
	CHECK_EQ_INT(st.book.reservations_retained, want->reservations_retained);
	shard_stop(s);
	shard_close(s);
	source_close();
	idem_free(idem2);
	testdir_remove(dir);
}

/* A CONFIRM of a reservation that never existed, inserted at position `at`
 * of a log of nres reservations (0-based; negative: counted from the end):
 * the start is refused, naming that record's LSN, and leaves every file as
 * it was. With damage_last the last record is damaged too and
 * --allow-wal-corruption is on: the misfit before it must still refuse the
 * start before recovery drops anything. */
static void refuses_misfit(int nres, int at, int damage_last, uint64_t seed)
{
	char dir[512], name[32];
	snprintf(name, sizeof(name), "misfit-%d-%d", nres, at);
	testdir_case(dir, sizeof(dir), name);

	source_open(nres, seed);
	Log *l = &source.log;
	if (at < 0)
		at += (int)l->n;
	REQUIRE(at >= SKUS && (size_t)at <= l->n);
	memmove(&l->rec[at + 1], &l->rec[at], (l->n - (size_t)at) * sizeof(l->rec[0]));
	l->n++;
	Record bad = { .type = REC_CONFIRM, .at_ms = t0 };
	uint8_t random[12] = { 0xde, 0xad, 0xbe, 0xef };
	resid_make(&bad.id, 0, random);
	l->rec[at] = bad;
	size_t last = write_wal(dir, l);
	if (damage_last)
		flip_byte(dir, last + WAL_RECORD_HEADER_LEN);
	plant_damaged_snapshot(dir); /* a refused start must not set it aside */
	uint64_t before = dir_digest(dir);

	IdemIndex *idem2 = idem_new();
	ShardConfig sc = shard_config(dir);
	sc.allow_wal_corruption = damage_last;
	Shard *s = NULL;
	char why[512] = "", want[64];
	CHECK_EQ_INT(shard_open(&sc, idem2, on_reply, NULL, &s, why, sizeof(why)), -EBADMSG);
	snprintf(want, sizeof(want), "wal record %d (confirm) does not fit", at + 1);
	if (!strstr(why, want))
		fprintf(stderr, "want \"%s\" in: %s\n", want, why);
	CHECK(strstr(why, want) != NULL);
	CHECK(dir_digest(dir) == before);
	source_close();
	idem_free(idem2);
	testdir_remove(dir);
}

int main(void)
{
	testdir_init("shard-recovery");
	log_set_context("test_shard_recovery");
	t0 = clock_wall_ms();
	uint64_t seed = 1;
	const char *e = getenv("RG_TEST_SEED");
	if (e)
		seed = strtoull(e, NULL, 10);
	printf("seed %llu (set RG_TEST_SEED to reproduce)\n", (unsigned long long)seed);

	recovers_same_book(0, seed);   /* SKUs only: fewer records than the look-ahead */
	recovers_same_book(3, seed);
	recovers_same_book(60, seed);
	recovers_same_book(RES_MAX, seed);
	refuses_misfit(60, 30, 0, seed); /* in the middle */
	refuses_misfit(60, -3, 0, seed); /* among the last: applied once the log is read */
	refuses_misfit(3, 6, 0, seed);   /* the whole log fits in the look-ahead */
	refuses_misfit(60, -3, 1, seed); /* and damage after it that recovery would drop */
	return check_exit();
}
