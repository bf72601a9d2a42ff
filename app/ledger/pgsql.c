/* pgsql.c — bounded libpq calls and array parameters (see pgsql.h). */
#include "ledger/pgsql.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"

#define POLL_SLICE_MS 100   /* how often a wait looks at *stop */

/* ---- array literals ------------------------------------------------------------ */

void pgsql_array_init(PgsqlArray *a)
{
	buf_init(&a->buf, 1024);
	pgsql_array_reset(a);
}

void pgsql_array_free(PgsqlArray *a)
{
	buf_free(&a->buf);
	a->n = 0;
}

void pgsql_array_reset(PgsqlArray *a)
{
	buf_reset(&a->buf);
	buf_put_u8(&a->buf, '{');
	a->n = 0;
}

static void array_sep(PgsqlArray *a)
{
	if (a->n++ > 0)
		buf_put_u8(&a->buf, ',');
}

void pgsql_array_add_text(PgsqlArray *a, const char *s, size_t len)
{
	array_sep(a);
	buf_reserve(&a->buf, 2 * len + 2);
	uint8_t *p = a->buf.data + a->buf.len;
	*p++ = '"';
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '"' || s[i] == '\\')
			*p++ = '\\';
		*p++ = (uint8_t)s[i];
	}
	*p++ = '"';
	a->buf.len = (size_t)(p - a->buf.data);
}

void pgsql_array_add_i64(PgsqlArray *a, int64_t v)
{
	char num[24];
	int n = snprintf(num, sizeof(num), "%" PRId64, v);
	array_sep(a);
	buf_append(&a->buf, num, (size_t)n);
}

const char *pgsql_array_text(PgsqlArray *a)
{
	/* "}" and the NUL go past len, so adding more elements stays possible. */
	buf_reserve(&a->buf, 2);
	a->buf.data[a->buf.len] = '}';
	a->buf.data[a->buf.len + 1] = '\0';
	return (const char *)a->buf.data;
}

size_t pgsql_utf8_clean(const char *s, size_t len, char *out)
{
	static const char replacement[3] = { (char)0xef, (char)0xbf, (char)0xbd };
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, o = 0;

	while (i < len) {
		unsigned c = p[i];
		size_t need;
		uint32_t cp, min;
		if (c >= 0x01 && c < 0x80) {
			out[o++] = (char)c;
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			need = 1, cp = c & 0x1f, min = 0x80;
		} else if (c >= 0xe0 && c <= 0xef) {
			need = 2, cp = c & 0x0f, min = 0x800;
		} else if (c >= 0xf0 && c <= 0xf4) {
			need = 3, cp = c & 0x07, min = 0x10000;
		} else {
			need = 0, cp = 0, min = 1; /* NUL, continuation byte, 0xc0/0xc1, 0xf5.. */
		}
		size_t k = 0;
		if (need && i + need < len + 1) {
			for (k = 1; k <= need && i + k < len && (p[i + k] & 0xc0) == 0x80; k++)
				cp = cp << 6 | (p[i + k] & 0x3f);
		}
		if (need && k == need + 1 && cp >= min && cp <= 0x10ffff && !(cp >= 0xd800 && cp <= 0xdfff)) {
			memcpy(out + o, p + i, need + 1);
			o += need + 1;
			i += need + 1;
		} else {
			memcpy(out + o, replacement, 3);
			o += 3;
			i++; /* resynchronise on the next byte */
		}
	}
	return o;
}

/* ---- waiting -------------------------------------------------------------------- */

static void set_why(char *why, size_t why_len, const char *prefix, const char *msg)
{
	snprintf(why, why_len, "%s%s", prefix, msg && *msg ? msg : "unknown error");
	/* libpq messages end in a newline and may span lines: keep one log
	 * line, with single blanks. */
	char *o = why;
	for (const char *p = why; *p; p++) {
		char ch = *p == '\n' || *p == '\r' || *p == '\t' ? ' ' : *p;
		if (ch == ' ' && (o == why || o[-1] == ' '))
			continue;
		*o++ = ch;
	}
	while (o > why && o[-1] == ' ')
		o--;
	*o = '\0';
}

/* Server notices (e.g. "terminating connection due to immediate shutdown")
 * go to our log instead of libpq's default, stderr. */
static void on_notice(void *ctx, const char *message)
{
	char line[512];
	set_why(line, sizeof(line), "", message);
	log_info("PostgreSQL says: %s", line);
}

static int stopping(const atomic_int *stop)
{
	return stop && atomic_load_explicit(stop, memory_order_relaxed);
}

int pgsql_sleep(int ms, const atomic_int *stop)
{
	int64_t deadline = clock_mono_ns() + (int64_t)ms * 1000000;
	for (;;) {
		if (stopping(stop))
			return 1;
		int64_t left = (deadline - clock_mono_ns()) / 1000000;
		if (left <= 0)
			return 0;
		poll(NULL, 0, (int)(left < POLL_SLICE_MS ? left : POLL_SLICE_MS));
	}
}

/* Waits for events on the connection's socket until the deadline. Returns
 * 1 when ready, 0 when it should look again (a slice passed), -1 at the
 * deadline or when stopping (with why set). */
static int wait_socket(PGconn *conn, short events, int64_t deadline, const atomic_int *stop,
		       char *why, size_t why_len)
{
	if (stopping(stop)) {
		snprintf(why, why_len, "the ledger is stopping");
		return -1;
	}
	int64_t left = (deadline - clock_mono_ns()) / 1000000;
	if (left <= 0) {
		snprintf(why, why_len, "no answer from PostgreSQL in time");
		return -1;
	}
	struct pollfd pfd = { .fd = PQsocket(conn), .events = events };
	if (pfd.fd < 0) {
		snprintf(why, why_len, "the connection has no socket");
		return -1;
	}
	int n = poll(&pfd, 1, (int)(left < POLL_SLICE_MS ? left : POLL_SLICE_MS));
	if (n < 0 && errno != EINTR) {
		snprintf(why, why_len, "poll: %s", strerror(errno));
		return -1;
	}
	return n > 0;
}

/* Sends what libpq has buffered. While the server's socket is not writable
 * it reads what the server sends meanwhile, so neither side can block the
 * other (libpq's advice for non-blocking connections). Returns 0 or -1. */
static int flush_all(PGconn *conn, int64_t deadline, const atomic_int *stop, char *why,
		     size_t why_len)
{
	for (;;) {
		int rc = PQflush(conn);
		if (rc == 0)
			return 0;
		if (rc < 0) {
			set_why(why, why_len, "sending to PostgreSQL: ", PQerrorMessage(conn));
			return -1;
		}
		rc = wait_socket(conn, POLLIN | POLLOUT, deadline, stop, why, why_len);
		if (rc < 0)
			return -1;
		if (rc > 0 && !PQconsumeInput(conn)) {
			set_why(why, why_len, "", PQerrorMessage(conn));
			return -1;
		}
	}
}

/* Waits until PQgetResult will not block. Returns 0 or -1. */
static int wait_result(PGconn *conn, int64_t deadline, const atomic_int *stop, char *why,
		       size_t why_len)
{
	while (PQisBusy(conn)) {
		int rc = wait_socket(conn, POLLIN, deadline, stop, why, why_len);
		if (rc < 0)
			return -1;
		if (rc > 0 && !PQconsumeInput(conn)) {
			set_why(why, why_len, "", PQerrorMessage(conn));
			return -1;
		}
	}
	return 0;
}

static int result_ok(const PGresult *res)
{
	ExecStatusType st = PQresultStatus(res);
	return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
}

static void result_why(const PGresult *res, char *why, size_t why_len)
{
	const char *msg = PQresultErrorMessage(res);
	set_why(why, why_len, "", *msg ? msg : PQresStatus(PQresultStatus(res)));
}

/* After a PQsend*: flushes the query and collects its results. */
static PGresult *collect(PGconn *conn, int timeout_ms, const atomic_int *stop, char *why,
			 size_t why_len)
{
	int64_t deadline = clock_mono_ns() + (int64_t)timeout_ms * 1000000;
	PGresult *last = NULL;
	int failed = 0;

	if (flush_all(conn, deadline, stop, why, why_len) != 0)
		return NULL;
	for (;;) {
		if (wait_result(conn, deadline, stop, why, why_len) != 0)
			goto fail;
		PGresult *res = PQgetResult(conn);
		if (!res)
			break;
		if (!result_ok(res)) {
			if (!failed)
				result_why(res, why, why_len);
			failed = 1;
			PQclear(res);
			continue;
		}
		PQclear(last);
		last = res;
	}
	if (failed)
		goto fail;
	if (!last)
		set_why(why, why_len, "", "no result from PostgreSQL");
	return last;
fail:
	PQclear(last);
	return NULL;
}

/* ---- connections ------------------------------------------------------------------ */

PGconn *pgsql_connect(const char *conninfo, const char *application_name, int timeout_ms,
		      const atomic_int *stop, char *why, size_t why_len)
{
	/* Later entries win (libpq): ours first, then the operator's string. */
	const char *keys[] = { "connect_timeout", "keepalives", "keepalives_idle",
			       "keepalives_interval", "keepalives_count", "application_name",
			       "dbname", NULL };
	const char *values[] = { "10", "1", "30", "10", "3", application_name, conninfo, NULL };
	int64_t deadline = clock_mono_ns() + (int64_t)timeout_ms * 1000000;
	PGconn *conn = PQconnectStartParams(keys, values, 1);

	if (!conn) {
		snprintf(why, why_len, "out of memory");
		return NULL;
	}
	if (PQstatus(conn) == CONNECTION_BAD) {
		set_why(why, why_len, "", PQerrorMessage(conn));
		goto fail;
	}
	PostgresPollingStatusType st = PGRES_POLLING_WRITING;
	while (st != PGRES_POLLING_OK) {
		if (st == PGRES_POLLING_FAILED) {
			set_why(why, why_len, "", PQerrorMessage(conn));
			goto fail;
		}
		int rc = wait_socket(conn, st == PGRES_POLLING_READING ? POLLIN : POLLOUT, deadline, stop,
				     why, why_len);
		if (rc < 0)
			goto fail;
		if (rc > 0)
			st = PQconnectPoll(conn);
	}
	PQsetNoticeProcessor(conn, on_notice, NULL);
	if (PQsetnonblocking(conn, 1) != 0) {
		set_why(why, why_len, "", PQerrorMessage(conn));
		goto fail;
	}
	/* A transaction of ours never needs a minute; one that waits that long
	 * on a lock is better retried. synchronous_commit stays on whatever the
	 * role's default: the ledger deletes WAL segments behind the checkpoint
	 * a commit reports, so that commit must be on PostgreSQL's disk. */
	PGresult *res = pgsql_exec(conn, NULL,
				   "SET client_encoding = 'UTF8'; SET DateStyle = 'ISO, YMD'; "
				   "SET TimeZone = 'UTC'; SET statement_timeout = '60s'; "
				   "SET synchronous_commit = on",
				   0, NULL, timeout_ms, stop, why, why_len);
	if (!res)
		goto fail;
	PQclear(res);
	return conn;
fail:
	PQfinish(conn);
	return NULL;
}

PGresult *pgsql_exec(PGconn *conn, const char *name, const char *sql, int nparams,
		     const char *const *values, int timeout_ms, const atomic_int *stop, char *why,
		     size_t why_len)
{
	int sent;
	if (name)
		sent = PQsendQueryPrepared(conn, name, nparams, values, NULL, NULL, 0);
	else if (nparams > 0)
		sent = PQsendQueryParams(conn, sql, nparams, NULL, values, NULL, NULL, 0);
	else
		sent = PQsendQuery(conn, sql); /* several statements allowed: no parameters */
	if (!sent) {
		set_why(why, why_len, "", PQerrorMessage(conn));
		return NULL;
	}
	return collect(conn, timeout_ms, stop, why, why_len);
}

/* Sends step k of a transaction of n statements: 0 is BEGIN, n + 1 COMMIT. */
static int send_step(PGconn *conn, const PgsqlStmt *stmts, int n, int k)
{
	if (k == 0)
		return PQsendQueryParams(conn, "BEGIN", 0, NULL, NULL, NULL, NULL, 0);
	if (k == n + 1)
		return PQsendQueryParams(conn, "COMMIT", 0, NULL, NULL, NULL, NULL, 0);
	const PgsqlStmt *s = &stmts[k - 1];
	return PQsendQueryPrepared(conn, s->name, s->nparams, s->values, NULL, NULL, 0);
}

int pgsql_transaction(PGconn *conn, const PgsqlStmt *stmts, int n, PGresult **results, int *failed,
		      int timeout_ms, const atomic_int *stop, char *why, size_t why_len)
{
	int64_t deadline = clock_mono_ns() + (int64_t)timeout_ms * 1000000;
	int err = 0;

	*failed = -1;
	for (int i = 0; i < n; i++)
		results[i] = NULL;
	if (!PQenterPipelineMode(conn)) {
		set_why(why, why_len, "entering pipeline mode: ", PQerrorMessage(conn));
		return -EIO;
	}
	for (int k = 0; k < n + 2; k++) {
		if (!send_step(conn, stmts, n, k)) {
			set_why(why, why_len, "", PQerrorMessage(conn));
			return -EIO;
		}
	}
	/* The only Sync: the server flushes its answers when it gets here. */
	if (!PQpipelineSync(conn)) {
		set_why(why, why_len, "", PQerrorMessage(conn));
		return -EIO;
	}
	if (flush_all(conn, deadline, stop, why, why_len) != 0)
		return -EIO;

	/* Each step's results end in NULL; those skipped after an error come
	 * back as PGRES_PIPELINE_ABORTED. */
	for (int k = 0; k < n + 2; k++) {
		int i = k - 1; /* the statement's index, when k is one */
		for (;;) {
			if (wait_result(conn, deadline, stop, why, why_len) != 0)
				return -EIO;
			PGresult *res = PQgetResult(conn);
			if (!res)
				break;
			if (PQresultStatus(res) == PGRES_PIPELINE_ABORTED) {
				PQclear(res);
				continue;
			}
			if (!result_ok(res) && !err) {
				result_why(res, why, why_len);
				*failed = i < n ? i : -1;
				err = 1;
			}
			if (i >= 0 && i < n) {
				PQclear(results[i]);
				results[i] = res;
			} else {
				PQclear(res);
			}
		}
		if (PQstatus(conn) == CONNECTION_BAD) {
			if (!err)
				set_why(why, why_len, "", PQerrorMessage(conn));
			return -EIO; /* *failed stays: -1, or a statement's own error */
		}
	}
	if (wait_result(conn, deadline, stop, why, why_len) != 0)
		return -EIO;
	PGresult *sync = PQgetResult(conn);
	int in_step = sync && PQresultStatus(sync) == PGRES_PIPELINE_SYNC;
	PQclear(sync);
	if (!in_step) {
		if (!err)
			set_why(why, why_len, "", "PostgreSQL's answers are out of step with the pipeline");
		*failed = -1;
		return -EIO;
	}
	if (!PQexitPipelineMode(conn)) {
		if (!err)
			set_why(why, why_len, "leaving pipeline mode: ", PQerrorMessage(conn));
		return -EIO;
	}
	return err ? -EIO : 0;
}

int pgsql_prepare(PGconn *conn, const char *name, const char *sql, int nparams, int timeout_ms,
		  const atomic_int *stop, char *why, size_t why_len)
{
	if (!PQsendPrepare(conn, name, sql, nparams, NULL)) {
		set_why(why, why_len, "", PQerrorMessage(conn));
		return -EIO;
	}
	PGresult *res = collect(conn, timeout_ms, stop, why, why_len);
	if (!res)
		return -EIO;
	PQclear(res);
	return 0;
}

void pgsql_describe(PGconn *conn, char *out, size_t out_len)
{
	const char *host = PQhost(conn), *port = PQport(conn), *db = PQdb(conn), *user = PQuser(conn);
	snprintf(out, out_len, "host %s port %s database %s user %s", host && *host ? host : "?",
		 port && *port ? port : "?", db ? db : "?", user ? user : "?");
}
