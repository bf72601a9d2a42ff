/* writebehind.c — one writer thread per shard carrying the WAL to PostgreSQL.
 * See writebehind.h for the design. */
#include "ledger/writebehind.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/hash.h"
#include "common/htab.h"
#include "common/log.h"
#include "common/xmalloc.h"
#include "ledger/pgsql.h"
#include "ledger/record.h"
#include "ledger/wal.h"

#define WAIT_DURABLE_MS 100       /* idle wait for new records; also the report period */
#define CONNECT_TIMEOUT_MS 15000
#define STATEMENT_TIMEOUT_MS 60000
#define RETRY_MIN_MS 100
#define STILL_DOWN_LOG_MS 60000   /* while PostgreSQL stays away, one WARN a minute */
#define FINISH_GRACE_MS 2000      /* at stop: how long connected writers may commit what they hold */

/* The statements, prepared on every new connection. Each batch statement
 * takes its rows as parallel arrays, one per column. Times travel as
 * milliseconds since the epoch (bigint[]) and become timestamptz through
 * to_timestamp: exact to the millisecond, and about three times cheaper for
 * the server than parsing ISO text (three per reservation row). */
static const char SQL_CHECKPOINT_ENSURE[] =
	"INSERT INTO ledger_checkpoint (shard, lsn) VALUES ($1::int, 0) ON CONFLICT (shard) DO NOTHING";
static const char SQL_CHECKPOINT_READ[] =
	"SELECT lsn FROM ledger_checkpoint WHERE shard = $1::int";
/* Exactly from the LSN this batch starts after: 0 rows means someone else
 * moved it, and the batch must not commit. The whole batch is sent in one
 * pipeline before any answer comes back, so the writer cannot look at the
 * row count and decide: the statement itself fails instead (1 / 0 rows ->
 * SQLSTATE 22012, division_by_zero), PostgreSQL then skips the rest of the
 * pipeline including the COMMIT, and the writer maps exactly that error of
 * exactly this statement to -ESTALE. */
static const char SQL_CHECKPOINT_ADVANCE[] =
	"WITH moved AS (UPDATE ledger_checkpoint SET lsn = $3::bigint, updated_at = now() "
	"WHERE shard = $1::int AND lsn = $2::bigint AND $3::bigint > $2::bigint RETURNING 1) "
	"SELECT 1 / count(*) FROM moved";
#define SQLSTATE_CHECKPOINT_MOVED "22012"
static const char SQL_PRODUCTS[] =
	"INSERT INTO products AS p (id, name, price_cents, stock, per_session_limit, max_per_order, "
	"reservation_ttl_s, created_at, updated_at) "
	"SELECT u.id, u.name, u.price, u.stock, u.psl, u.mpo, u.ttl, "
	"to_timestamp(u.at::float8 / 1000), to_timestamp(u.at::float8 / 1000) "
	"FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::int[], $6::int[], "
	"$7::int[], $8::bigint[]) AS u(id, name, price, stock, psl, mpo, ttl, at) "
	"ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, price_cents = EXCLUDED.price_cents, "
	"stock = EXCLUDED.stock, per_session_limit = EXCLUDED.per_session_limit, "
	"max_per_order = EXCLUDED.max_per_order, reservation_ttl_s = EXCLUDED.reservation_ttl_s, "
	"updated_at = EXCLUDED.updated_at";
static const char SQL_RESERVATIONS[] =
	"INSERT INTO inventory_log AS l (id, sku_id, user_session_id, quantity, status, \"timestamp\", "
	"expires_at, updated_at, shard, lsn) "
	"SELECT u.id, u.sku, u.sess, u.qty, u.status, to_timestamp(u.ts::float8 / 1000), "
	"to_timestamp(u.exp::float8 / 1000), to_timestamp(u.upd::float8 / 1000), $10::int, u.lsn "
	"FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::text[], $6::bigint[], "
	"$7::bigint[], $8::bigint[], $9::bigint[]) "
	"AS u(id, sku, sess, qty, status, ts, exp, upd, lsn) "
	"ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, updated_at = EXCLUDED.updated_at, "
	"lsn = EXCLUDED.lsn "
	"WHERE l.status = 'reserved' AND EXCLUDED.status <> 'reserved' AND l.lsn < EXCLUDED.lsn";
static const char SQL_STATUS[] =
	"UPDATE inventory_log AS l SET status = u.status, updated_at = to_timestamp(u.at::float8 / 1000), "
	"lsn = u.lsn "
	"FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[]) AS u(id, status, at, lsn) "
	"WHERE l.id = u.id AND l.status = 'reserved' AND l.lsn < u.lsn";

enum { P_ID, P_NAME, P_PRICE, P_STOCK, P_PSL, P_MPO, P_TTL, P_AT, P_COLS };
enum { R_ID, R_SKU, R_SESS, R_QTY, R_STATUS, R_TS, R_EXP, R_UPD, R_LSN, R_COLS };
enum { S_ID, S_STATUS, S_AT, S_LSN, S_COLS };

/* A reservation made in this batch: inserted once, with the last status the
 * batch gives it. */
typedef struct BatchRes {
	HNode node;                /* keyed by the reservation id */
	size_t rec;                /* its RESERVE record */
	uint8_t type;              /* the record that set its status */
	int64_t at_ms;
	uint64_t lsn;
} BatchRes;

/* A SKU changed in this batch: its last SKU_PUT wins. */
typedef struct BatchSku {
	HNode node;                /* keyed by the SKU */
	size_t rec;
} BatchSku;

typedef struct Writer {
	WriteBehind *wb;
	unsigned index;
	Shard *shard;
	const char *dir;
	pthread_t thread;
	char name[32];

	PGconn *conn;
	WalReader *reader;
	int have_checkpoint;       /* applied is what PostgreSQL says */
	uint64_t applied;          /* the checkpoint: PostgreSQL has every record <= this */
	uint64_t read_upto;        /* the last LSN in the batch (= applied when empty) */
	uint64_t errors;
	int failed;                /* stopped for good: damaged WAL, gap, foreign database */
	int backoff_ms;
	int64_t next_attempt_ns;
	int64_t gather_until_ns;   /* a part-full batch waits for more until then */
	int64_t down_since_ns;     /* 0 while connected */
	int64_t down_logged_ns;

	/* The batch: records read, not yet in PostgreSQL. */
	Record *recs;
	uint64_t *lsns;
	size_t n;

	BatchRes *res;
	BatchSku *skus;
	HTab res_tab, sku_tab;
	PgsqlArray prod[P_COLS], ins[R_COLS], upd[S_COLS];
	char *name_buf;            /* a cleaned product name */
} Writer;

struct WriteBehind {
	WriteBehindConfig cfg;
	char *conninfo;
	atomic_int finish;         /* stopping: commit what is held, gather no more, connect no more */
	atomic_int stop;           /* stopped: abort every wait, including PostgreSQL's */
	Writer *writers;
	unsigned n;                /* writers allocated */
	unsigned started;          /* writer threads running */
};

/* ---- building a batch's statements ------------------------------------------------ */

static const char *status_text(uint8_t type)
{
	switch (type) {
	case REC_RESERVE: return "reserved";
	case REC_CONFIRM: return "confirmed";
	case REC_RELEASE: return "released";
	default: return "timeout";
	}
}

static void add_time(PgsqlArray *a, int64_t ms)
{
	pgsql_array_add_i64(a, ms);
}

static void add_str(PgsqlArray *a, const char *s)
{
	pgsql_array_add_text(a, s, strlen(s));
}

static BatchRes *batch_res_find(Writer *w, const ResId *id, uint64_t h)
{
	HTAB_FOR_HASH(&w->res_tab, h, node) {
		BatchRes *r = (BatchRes *)node;
		if (resid_equal(&w->recs[r->rec].id, id))
			return r;
	}
	return NULL;
}

/* Turns the batch into the three statements' arrays. Returns the count of
 * status changes for reservations made before this batch (the UPDATE's
 * expected row count). */
static size_t batch_build(Writer *w)
{
	size_t nres = 0, nsku = 0;

	htab_clear(&w->res_tab);
	htab_clear(&w->sku_tab);
	for (int c = 0; c < P_COLS; c++)
		pgsql_array_reset(&w->prod[c]);
	for (int c = 0; c < R_COLS; c++)
		pgsql_array_reset(&w->ins[c]);
	for (int c = 0; c < S_COLS; c++)
		pgsql_array_reset(&w->upd[c]);

	for (size_t i = 0; i < w->n; i++) {
		const Record *rec = &w->recs[i];
		switch (rec->type) {
		case REC_SKU_PUT: {
			uint64_t h = hash_bytes(rec->sku, rec->sku_len);
			BatchSku *s = NULL;
			HTAB_FOR_HASH(&w->sku_tab, h, node) {
				const Record *o = &w->recs[((BatchSku *)node)->rec];
				if (o->sku_len == rec->sku_len && memcmp(o->sku, rec->sku, rec->sku_len) == 0) {
					s = (BatchSku *)node;
					break;
				}
			}
			if (s) {
				s->rec = i; /* a later change of the same SKU wins */
			} else {
				s = &w->skus[nsku++];
				s->node.hash = h;
				s->rec = i;
				htab_insert(&w->sku_tab, &s->node);
			}
			break;
		}
		case REC_RESERVE: {
			uint64_t h = hash_bytes(rec->id.b, RESID_BYTES);
			BatchRes *r = &w->res[nres++];
			r->node.hash = h;
			r->rec = i;
			r->type = REC_RESERVE;
			r->at_ms = rec->at_ms;
			r->lsn = w->lsns[i];
			htab_insert(&w->res_tab, &r->node);
			break;
		}
		default: { /* CONFIRM, RELEASE, TIMEOUT */
			BatchRes *r = batch_res_find(w, &rec->id, hash_bytes(rec->id.b, RESID_BYTES));
			if (r) {
				r->type = rec->type;
				r->at_ms = rec->at_ms;
				r->lsn = w->lsns[i];
				break;
			}
			char id[RESID_TEXT_LEN + 1];
			resid_format(&rec->id, id);
			add_str(&w->upd[S_ID], id);
			add_str(&w->upd[S_STATUS], status_text(rec->type));
			add_time(&w->upd[S_AT], rec->at_ms);
			pgsql_array_add_i64(&w->upd[S_LSN], (int64_t)w->lsns[i]);
			break;
		}
		}
	}

	for (size_t k = 0; k < nsku; k++) {
		const Record *rec = &w->recs[w->skus[k].rec];
		const WireSkuSettings *s = &rec->settings;
		pgsql_array_add_text(&w->prod[P_ID], rec->sku, rec->sku_len);
		size_t len = pgsql_utf8_clean(s->name, s->name_len, w->name_buf);
		pgsql_array_add_text(&w->prod[P_NAME], w->name_buf, len);
		pgsql_array_add_i64(&w->prod[P_PRICE], s->price_cents);
		pgsql_array_add_i64(&w->prod[P_STOCK], s->stock);
		pgsql_array_add_i64(&w->prod[P_PSL], s->per_session_limit);
		pgsql_array_add_i64(&w->prod[P_MPO], s->max_per_order);
		pgsql_array_add_i64(&w->prod[P_TTL], s->reservation_ttl_s);
		add_time(&w->prod[P_AT], rec->at_ms);
	}
	for (size_t k = 0; k < nres; k++) {
		const BatchRes *r = &w->res[k];
		const Record *rec = &w->recs[r->rec];
		char id[RESID_TEXT_LEN + 1];
		resid_format(&rec->id, id);
		add_str(&w->ins[R_ID], id);
		pgsql_array_add_text(&w->ins[R_SKU], rec->sku, rec->sku_len);
		pgsql_array_add_text(&w->ins[R_SESS], rec->session, rec->session_len);
		pgsql_array_add_i64(&w->ins[R_QTY], rec->quantity);
		add_str(&w->ins[R_STATUS], status_text(r->type));
		add_time(&w->ins[R_TS], rec->at_ms);
		add_time(&w->ins[R_EXP], rec->expires_ms);
		add_time(&w->ins[R_UPD], r->at_ms);
		pgsql_array_add_i64(&w->ins[R_LSN], (int64_t)r->lsn);
	}
	return w->upd[S_ID].n;
}

/* ---- talking to PostgreSQL ------------------------------------------------------------ */

static PGresult *exec(Writer *w, const char *stmt, int nparams, const char *const *values,
		      char *why, size_t why_len)
{
	return pgsql_exec(w->conn, stmt, NULL, nparams, values, STATEMENT_TIMEOUT_MS, &w->wb->stop,
			  why, why_len);
}

static void stmt_arrays(PgsqlStmt *st, const char *name, PgsqlArray *cols, int ncols,
			const char *extra, const char **values)
{
	for (int c = 0; c < ncols; c++)
		values[c] = pgsql_array_text(&cols[c]);
	if (extra)
		values[ncols] = extra;
	*st = (PgsqlStmt){ .name = name, .nparams = ncols + (extra ? 1 : 0), .values = values };
}

/* Applies the batch in one transaction with its checkpoint, in one round
 * trip: BEGIN, the checkpoint move, the row statements and COMMIT go out as
 * one pipeline (pgsql_transaction). If any of them fails PostgreSQL skips the
 * rest, COMMIT included, and the transaction is left aborted until the
 * caller drops the connection, which rolls it back. Returns 0, -ESTALE when
 * the checkpoint was not where this writer left it (nothing committed; the
 * caller resynchronises), or -EIO (the connection must go). */
static int batch_apply(Writer *w, char *why, size_t why_len)
{
	char shard[16], from[24], to[24];
	const char *ck[3] = { shard, from, to };
	const char *prod[P_COLS], *ins[R_COLS + 1], *upd[S_COLS];
	PgsqlStmt st[4];
	PGresult *res[4];
	int n = 0, at_ck, at_status = -1, failed;
	uint64_t updated = 0;

	size_t changes = batch_build(w);
	snprintf(shard, sizeof(shard), "%u", w->index);
	snprintf(from, sizeof(from), "%" PRIu64, w->applied);
	snprintf(to, sizeof(to), "%" PRIu64, w->read_upto);
	rg_assert(w->read_upto == w->applied + w->n);

	at_ck = n;
	st[n++] = (PgsqlStmt){ .name = "wb_checkpoint_advance", .nparams = 3, .values = ck };
	if (w->prod[P_ID].n > 0)
		stmt_arrays(&st[n++], "wb_products", w->prod, P_COLS, NULL, prod);
	if (w->ins[R_ID].n > 0)
		stmt_arrays(&st[n++], "wb_reservations", w->ins, R_COLS, shard, ins);
	if (changes > 0) {
		at_status = n;
		stmt_arrays(&st[n++], "wb_status", w->upd, S_COLS, NULL, upd);
	}
	rg_assert(n <= (int)(sizeof(st) / sizeof(st[0])));

	int rc = pgsql_transaction(w->conn, st, n, res, &failed, STATEMENT_TIMEOUT_MS, &w->wb->stop,
				   why, why_len);
	if (rc == 0 && at_status >= 0)
		updated = strtoull(PQcmdTuples(res[at_status]), NULL, 10);
	if (rc != 0 && failed == at_ck) {
		const char *state = PQresultErrorField(res[at_ck], PG_DIAG_SQLSTATE);
		if (state && strcmp(state, SQLSTATE_CHECKPOINT_MOVED) == 0) {
			snprintf(why, why_len, "ledger_checkpoint of shard %u is no longer at lsn %" PRIu64
				 " (another writer?)", w->index, w->applied);
			rc = -ESTALE;
		}
	}
	for (int i = 0; i < n; i++)
		PQclear(res[i]);
	if (rc != 0)
		return rc;
	if (updated < changes)
		log_warn("%zu status change(s) in lsn %" PRIu64 "..%" PRIu64 " found no 'reserved' row in "
			 "inventory_log (reservations older than the write-behind?)",
			 changes - (size_t)updated, w->applied + 1, w->read_upto);
	return 0;
}

static void drop_connection(Writer *w)
{
	PQfinish(w->conn);
	w->conn = NULL;
}

static void drop_batch(Writer *w)
{
	wal_reader_close(w->reader);
	w->reader = NULL;
	w->n = 0;
	w->read_upto = w->applied;
}

/* Stops this shard's writer for good (the process keeps selling). */
static void writer_fail(Writer *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void writer_fail(Writer *w, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_error("%s; write-behind of shard %u stops: PostgreSQL will lack this shard's changes "
		  "from lsn %" PRIu64 " on until this is repaired and the ledger restarted",
		  msg, w->index, w->applied + 1);
	w->failed = 1;
	w->errors++;
	drop_batch(w);
	if (w->conn)
		drop_connection(w);
}

static int prepare_all(Writer *w, char *why, size_t why_len)
{
	static const struct { const char *name, *sql; int n; } stmts[] = {
		{ "wb_checkpoint_ensure", SQL_CHECKPOINT_ENSURE, 1 },
		{ "wb_checkpoint_read", SQL_CHECKPOINT_READ, 1 },
		{ "wb_checkpoint_advance", SQL_CHECKPOINT_ADVANCE, 3 },
		{ "wb_products", SQL_PRODUCTS, P_COLS },
		{ "wb_reservations", SQL_RESERVATIONS, R_COLS + 1 },
		{ "wb_status", SQL_STATUS, S_COLS },
	};
	for (size_t i = 0; i < sizeof(stmts) / sizeof(stmts[0]); i++) {
		int rc = pgsql_prepare(w->conn, stmts[i].name, stmts[i].sql, stmts[i].n,
				       STATEMENT_TIMEOUT_MS, &w->wb->stop, why, why_len);
		if (rc != 0)
			return rc;
	}
	return 0;
}

/* Connects, prepares, and reads the checkpoint; repositions the reader when
 * PostgreSQL is not where this writer thought. Returns 0, or -EIO (retry
 * later; why says why), or -EBADMSG after writer_fail. */
static int writer_connect(Writer *w, char *why, size_t why_len)
{
	char app[64], shard[16];
	snprintf(app, sizeof(app), "rg-ledger write-behind shard %u", w->index);
	snprintf(shard, sizeof(shard), "%u", w->index);

	w->conn = pgsql_connect(w->wb->conninfo, app, CONNECT_TIMEOUT_MS, &w->wb->stop, why, why_len);
	if (!w->conn)
		return -EIO;
	const char *p[1] = { shard };
	PGresult *res = NULL;
	if (prepare_all(w, why, why_len) != 0 || !(res = exec(w, "wb_checkpoint_ensure", 1, p, why, why_len)))
		goto fail;
	PQclear(res);
	if (!(res = exec(w, "wb_checkpoint_read", 1, p, why, why_len)))
		goto fail;
	if (PQntuples(res) != 1) {
		snprintf(why, why_len, "ledger_checkpoint has no row for shard %u", w->index);
		PQclear(res);
		goto fail;
	}
	uint64_t ck = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);

	uint64_t durable = shard_wait_durable(w->shard, UINT64_MAX - 1, 0);
	if (ck > durable) {
		writer_fail(w, "PostgreSQL has shard %u through lsn %" PRIu64 " but this ledger's log ends "
			    "at lsn %" PRIu64 ": the database belongs to another ledger (or data_dir was "
			    "replaced)", w->index, ck, durable);
		return -EBADMSG;
	}
	if (!w->have_checkpoint || ck != w->applied) {
		if (w->have_checkpoint && ck == w->read_upto)
			log_info("the last transaction of shard %u did commit (checkpoint at lsn %" PRIu64
				 ")", w->index, ck);
		else if (w->have_checkpoint)
			log_warn("ledger_checkpoint of shard %u is at lsn %" PRIu64 ", not %" PRIu64
				 ": resuming from PostgreSQL's", w->index, ck, w->applied);
		w->applied = ck;
		w->have_checkpoint = 1;
		drop_batch(w);
	}
	char where[256];
	pgsql_describe(w->conn, where, sizeof(where));
	log_info("connected to PostgreSQL (%s); shard %u resumes after lsn %" PRIu64
		 " (%" PRIu64 " records behind)", where, w->index, ck, durable - ck);
	return 0;
fail:
	drop_connection(w);
	return -EIO;
}

/* ---- reading the WAL --------------------------------------------------------------------- */

/* Reads durable records after read_upto into the batch. Returns 0, or
 * -EBADMSG after writer_fail. */
static int batch_fill(Writer *w, uint64_t durable)
{
	size_t max = (size_t)w->wb->cfg.batch_max;

	if (!w->have_checkpoint || w->n >= max || w->read_upto >= durable)
		return 0;
	if (!w->reader) {
		int rc = wal_reader_open(w->dir, w->read_upto + 1, &w->reader);
		if (rc == -ENOENT) {
			writer_fail(w, "the WAL of shard %u no longer holds lsn %" PRIu64 " (its segments were "
				    "deleted before PostgreSQL had them: was write-behind off for a while?)",
				    w->index, w->read_upto + 1);
			return -EBADMSG;
		}
		if (rc < 0) {
			writer_fail(w, "cannot read the WAL of shard %u in %s: %s", w->index, w->dir,
				    strerror(-rc));
			return -EBADMSG;
		}
	}
	while (w->n < max) {
		uint64_t lsn;
		const uint8_t *payload;
		size_t len;
		int rc = wal_reader_next(w->reader, durable, &lsn, &payload, &len);
		if (rc == 0)
			break;
		if (rc < 0) {
			writer_fail(w, "reading WAL record %" PRIu64 " of shard %u: %s", w->read_upto + 1,
				    w->index, rc == -EBADMSG ? "the record is damaged" : strerror(-rc));
			return -EBADMSG;
		}
		if (lsn != w->read_upto + 1) {
			writer_fail(w, "the WAL of shard %u jumps from lsn %" PRIu64 " to %" PRIu64,
				    w->index, w->read_upto, lsn);
			return -EBADMSG;
		}
		if (record_decode(payload, len, &w->recs[w->n]) != 0) {
			writer_fail(w, "WAL record %" PRIu64 " of shard %u does not decode", lsn, w->index);
			return -EBADMSG;
		}
		w->lsns[w->n++] = lsn;
		w->read_upto = lsn;
	}
	return 0;
}

/* ---- the writer thread ------------------------------------------------------------------- */

static void report(Writer *w)
{
	uint64_t lag_ms = 0;
	if (w->n > 0) {
		int64_t age = clock_wall_ms() - w->recs[0].at_ms;
		lag_ms = age > 0 ? (uint64_t)age : 0;
	}
	shard_report_writebehind(w->shard, w->have_checkpoint ? w->applied : 0, lag_ms,
				 w->conn != NULL, w->errors);
}

static void went_down(Writer *w, const char *why)
{
	int64_t now = clock_mono_ns();
	w->errors++;
	if (w->down_since_ns == 0) {
		log_warn("PostgreSQL: %s; shard %u keeps selling, its changes wait in the WAL "
			 "(retrying with backoff up to %d ms)", why, w->index, w->wb->cfg.retry_max_ms);
		w->down_since_ns = now;
		w->down_logged_ns = now;
	} else if (now - w->down_logged_ns >= (int64_t)STILL_DOWN_LOG_MS * 1000000) {
		log_warn("PostgreSQL still unreachable after %lld s: %s",
			 (long long)((now - w->down_since_ns) / 1000000000), why);
		w->down_logged_ns = now;
	} else {
		log_debug("PostgreSQL: %s", why);
	}
	w->next_attempt_ns = now + (int64_t)w->backoff_ms * 1000000;
	w->backoff_ms = w->backoff_ms * 2 > w->wb->cfg.retry_max_ms ? w->wb->cfg.retry_max_ms
								      : w->backoff_ms * 2;
}

/* How long a part-full batch should still wait for records (0: commit now). */
static int gathering_ms(const Writer *w)
{
	if (w->n >= (size_t)w->wb->cfg.batch_max || atomic_load(&w->wb->finish))
		return 0;
	int64_t left_ns = w->gather_until_ns - clock_mono_ns();
	return left_ns > 0 ? (int)((left_ns + 999999) / 1000000) : 0;
}

static void *writer_main(void *arg)
{
	Writer *w = arg;
	char why[512];

	log_set_thread(w->name);
	while (!atomic_load(&w->wb->stop)) {
		if (w->failed) {
			report(w);
			pgsql_sleep(WAIT_DURABLE_MS * 10, &w->wb->stop);
			continue;
		}
		/* Read on while disconnected too: the oldest waiting record is the lag. */
		int idle = w->conn && w->n == 0;
		int gather_ms = gathering_ms(w);
		uint64_t before = w->read_upto;
		uint64_t durable = shard_wait_durable(w->shard, w->read_upto,
						      idle ? WAIT_DURABLE_MS : gather_ms);
		if (batch_fill(w, durable) != 0)
			continue;
		/* Gather on only while waiting brings records: a wait that
		 * ends with nothing new (a timeout, a wakeup to stop) commits
		 * what the batch holds rather than waiting again. */
		if (w->conn && w->n > 0 && w->read_upto > before && gathering_ms(w) > 0)
			continue;
		if (idle && w->n == 0 && durable > w->read_upto && w->have_checkpoint) {
			/* Durable yet not readable: cannot last; never spin on it. */
			pgsql_sleep(10, &w->wb->stop);
			continue;
		}
		if (atomic_load(&w->wb->finish) && (w->n == 0 || !w->conn)) {
			/* Finishing and nothing to commit (or no connection to
			 * commit on): the waits no longer block, so do not spin. */
			report(w);
			pgsql_sleep(10, &w->wb->stop);
			continue;
		}
		if (!w->conn) {
			report(w);
			int64_t wait_ms = (w->next_attempt_ns - clock_mono_ns()) / 1000000;
			if (wait_ms > 0) {
				pgsql_sleep(wait_ms < WAIT_DURABLE_MS ? (int)wait_ms : WAIT_DURABLE_MS,
					    &w->wb->stop);
				continue;
			}
			int rc = writer_connect(w, why, sizeof(why));
			if (rc == -EIO && !atomic_load(&w->wb->stop))
				went_down(w, why);
			if (rc == 0 && w->down_since_ns) {
				log_info("PostgreSQL is back after %lld ms",
					 (long long)((clock_mono_ns() - w->down_since_ns) / 1000000));
				w->down_since_ns = 0;
			}
			continue;
		}
		report(w);
		if (w->n == 0)
			continue;
		int rc = batch_apply(w, why, sizeof(why));
		if (rc == 0) {
			w->applied = w->read_upto;
			w->gather_until_ns = clock_mono_ns() + (int64_t)w->wb->cfg.delay_ms * 1000000;
			w->n = 0;
			w->backoff_ms = RETRY_MIN_MS;
			report(w);
			continue;
		}
		if (atomic_load(&w->wb->stop))
			break;
		drop_connection(w);
		if (rc == -ESTALE) {
			log_warn("%s; re-reading it", why);
			w->errors++;
			w->have_checkpoint = 0; /* writer_connect repositions */
			drop_batch(w);
			continue;
		}
		went_down(w, why);
	}
	if (w->conn)
		drop_connection(w);
	report(w);
	return NULL;
}

/* ---- life cycle -------------------------------------------------------------------------- */

int writebehind_conninfo_valid(const char *conninfo)
{
	char *err = NULL;
	PQconninfoOption *opts = PQconninfoParse(conninfo, &err);
	PQfreemem(err);
	if (!opts)
		return 0;
	PQconninfoFree(opts);
	return 1;
}

static size_t pow2_at_least(size_t n)
{
	size_t p = 1;
	while (p < n)
		p <<= 1;
	return p;
}

int writebehind_start(const WriteBehindConfig *cfg, Shard **shards, const char *const *dirs,
		      unsigned nshards, WriteBehind **out)
{
	WriteBehind *wb = xcalloc(1, sizeof(*wb));
	size_t max = (size_t)cfg->batch_max;

	rg_assert(cfg->batch_max >= 1 && cfg->retry_max_ms >= RETRY_MIN_MS);
	wb->cfg = *cfg;
	wb->conninfo = xstrndup(cfg->conninfo, strlen(cfg->conninfo));
	wb->cfg.conninfo = wb->conninfo;
	atomic_init(&wb->finish, 0);
	atomic_init(&wb->stop, 0);
	wb->writers = xcalloc(nshards, sizeof(Writer));
	wb->n = nshards;
	for (unsigned i = 0; i < nshards; i++) {
		Writer *w = &wb->writers[i];
		w->wb = wb;
		w->index = i;
		w->shard = shards[i];
		w->dir = dirs[i];
		w->backoff_ms = RETRY_MIN_MS;
		snprintf(w->name, sizeof(w->name), "wb %u", i);
		w->recs = xmalloc(max * sizeof(Record));
		w->lsns = xmalloc(max * sizeof(uint64_t));
		w->res = xmalloc(max * sizeof(BatchRes));
		w->skus = xmalloc(max * sizeof(BatchSku));
		htab_init(&w->res_tab, pow2_at_least(max));
		htab_init(&w->sku_tab, pow2_at_least(max));
		w->name_buf = xmalloc(3 * WIRE_NAME_MAX + 1);
		for (int c = 0; c < P_COLS; c++)
			pgsql_array_init(&w->prod[c]);
		for (int c = 0; c < R_COLS; c++)
			pgsql_array_init(&w->ins[c]);
		for (int c = 0; c < S_COLS; c++)
			pgsql_array_init(&w->upd[c]);
	}
	for (unsigned i = 0; i < nshards; i++) {
		int rc = pthread_create(&wb->writers[i].thread, NULL, writer_main, &wb->writers[i]);
		if (rc != 0) {
			writebehind_stop(wb);
			return -rc;
		}
		wb->started++;
	}
	log_info("write-behind to PostgreSQL: %u writer(s), up to %d records per transaction",
		 nshards, cfg->batch_max);
	*out = wb;
	return 0;
}

void writebehind_stop(WriteBehind *wb)
{
	if (!wb)
		return;
	/* First let connected writers commit what they hold (a gathering
	 * window may have up to writebehind_delay_ms left): waits for records
	 * return at once from here on. Then abort whatever is still waiting,
	 * PostgreSQL included; the WAL keeps the rest for the next start. */
	atomic_store(&wb->finish, 1);
	for (unsigned i = 0; i < wb->started; i++)
		shard_wake_durable(wb->writers[i].shard);
	int64_t deadline = clock_mono_ns() + (int64_t)FINISH_GRACE_MS * 1000000;
	for (unsigned i = 0; i < wb->started; i++) {
		for (;;) {
			ShardStats st;
			shard_stats(wb->writers[i].shard, &st);
			if (!st.wb_connected || st.wb_applied_lsn >= st.last_lsn ||
			    clock_mono_ns() >= deadline)
				break;
			struct timespec ts = { 0, 10 * 1000000 };
			nanosleep(&ts, NULL);
		}
	}
	atomic_store(&wb->stop, 1);
	for (unsigned i = 0; i < wb->started; i++)
		pthread_join(wb->writers[i].thread, NULL);
	for (unsigned i = 0; i < wb->n; i++) {
		Writer *w = &wb->writers[i];
		wal_reader_close(w->reader);
		free(w->recs);
		free(w->lsns);
		free(w->res);
		free(w->skus);
		htab_free(&w->res_tab);
		htab_free(&w->sku_tab);
		free(w->name_buf);
		for (int c = 0; c < P_COLS; c++)
			pgsql_array_free(&w->prod[c]);
		for (int c = 0; c < R_COLS; c++)
			pgsql_array_free(&w->ins[c]);
		for (int c = 0; c < S_COLS; c++)
			pgsql_array_free(&w->upd[c]);
	}
	free(wb->writers);
	free(wb->conninfo);
	free(wb);
}
