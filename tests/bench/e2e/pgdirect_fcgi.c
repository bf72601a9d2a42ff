/* pgdirect_fcgi.c — the "traditional" baseline for the e2e benches (bench only, never shipped).
 *
 * DESIGN. What a shop would build without Revenue Guard: a FastCGI handler
 * that reserves by decrementing PostgreSQL directly, one conditional UPDATE
 * per buy, in the same web server with the same number of processes. It is
 * given every advantage we could think of while staying correct: one
 * persistent connection per process, a prepared statement, and the decrement
 * and the reservation row in ONE statement (a data-modifying CTE, so one round
 * trip and the row lock is held only while the statement runs — a
 * BEGIN/UPDATE/INSERT/COMMIT would hold it across three more round trips).
 * It answers POST /v1/reservations like our API (201 with a reservation
 * object, 409 sold_out/insufficient_stock, 404 unknown_sku, 400, 503) and
 * GET /v1/health with {"status":"ok"}. Durability is PostgreSQL's: the bench
 * runs it with fsync and synchronous_commit on, like our WAL's fdatasync.
 *
 * The table is the real schema's (sql/001_initial.sql), in a database of its
 * own: here products.stock is the units still for sale (the classic design),
 * not the ledger's "total ever offered".
 *
 * Spawned by lighttpd (mod_fastcgi bin-path), the socket on fd 0; the libpq
 * connection string comes from PGDIRECT_CONNINFO (lighttpd bin-environment).
 */
#include <errno.h>
#include <fcgiapp.h>
#include <json-c/json.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define PGDIRECT_BODY_MAX 4096
#define PGDIRECT_TTL_S 300

/* $1 sku, $2 quantity, $3 reservation id, $4 session. Returns the units left. */
static const char pgdirect_reserve_sql[] =
	"WITH u AS (UPDATE products SET stock = stock - $2::int, updated_at = now() "
	"           WHERE id = $1 AND stock >= $2::int RETURNING stock) "
	"INSERT INTO inventory_log (id, sku_id, user_session_id, quantity, status, \"timestamp\", expires_at) "
	"SELECT $3, $1, $4, $2::int, 'reserved', now(), now() + make_interval(secs => 300) FROM u "
	"RETURNING (SELECT stock FROM u)";
static const char pgdirect_lookup_sql[] = "SELECT stock FROM products WHERE id = $1";

static PGconn *pgdirect_pg;

static void pgdirect_on_term(int sig)
{
	_exit(0);
}

static int pgdirect_prepare(void)
{
	PGresult *r;
	int ok;

	if (PQstatus(pgdirect_pg) != CONNECTION_OK)
		return -ECONNREFUSED;
	r = PQprepare(pgdirect_pg, "reserve", pgdirect_reserve_sql, 4, NULL);
	ok = PQresultStatus(r) == PGRES_COMMAND_OK;
	PQclear(r);
	r = PQprepare(pgdirect_pg, "lookup", pgdirect_lookup_sql, 1, NULL);
	ok = ok && PQresultStatus(r) == PGRES_COMMAND_OK;
	PQclear(r);
	if (!ok)
		fprintf(stderr, "pgdirect: prepare failed: %s", PQerrorMessage(pgdirect_pg));
	return ok ? 0 : -EIO;
}

static void pgdirect_send(FCGX_Request *req, int status, const char *body)
{
	char head[256];
	const char *reason = status == 201 ? "Created" : status == 200 ? "OK" :
			     status == 400 ? "Bad Request" : status == 404 ? "Not Found" :
			     status == 409 ? "Conflict" : status == 405 ? "Method Not Allowed" :
			     "Service Unavailable";
	int n = snprintf(head, sizeof(head),
			 "Status: %d %s\r\nContent-Type: application/json; charset=utf-8\r\n"
			 "Cache-Control: no-store\r\nContent-Length: %d\r\n\r\n",
			 status, reason, (int)strlen(body));
	FCGX_PutStr(head, n, req->out);
	FCGX_PutStr(body, (int)strlen(body), req->out);
}

static void pgdirect_error(FCGX_Request *req, int status, const char *code, const char *message)
{
	char body[512];
	snprintf(body, sizeof(body), "{\"error\":\"%s\",\"message\":\"%s\"}", code, message);
	pgdirect_send(req, status, body);
}

static void pgdirect_iso8601(time_t t, long ms, char *out, size_t len)
{
	struct tm tm;
	gmtime_r(&t, &tm);
	snprintf(out, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
		 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms % 1000);
}

/* Runs a prepared statement; on a broken connection resets it once and
 * retries (a statement that failed did not commit). NULL: give up. */
static PGresult *pgdirect_exec(const char *name, int n, const char *const *params)
{
	for (int attempt = 0; attempt < 2; attempt++) {
		PGresult *r = PQexecPrepared(pgdirect_pg, name, n, params, NULL, NULL, 0);
		ExecStatusType st = PQresultStatus(r);
		if (st == PGRES_TUPLES_OK)
			return r;
		fprintf(stderr, "pgdirect: %s: %s", name, PQerrorMessage(pgdirect_pg));
		PQclear(r);
		if (PQstatus(pgdirect_pg) == CONNECTION_OK)
			return NULL;
		PQreset(pgdirect_pg);
		if (pgdirect_prepare() != 0)
			return NULL;
	}
	return NULL;
}

static void pgdirect_reserve(FCGX_Request *req)
{
	const char *cl = FCGX_GetParam("CONTENT_LENGTH", req->envp);
	long len = cl ? atol(cl) : 0;
	char body[PGDIRECT_BODY_MAX + 1];
	json_object *o = NULL, *v;
	const char *sku, *session;
	int quantity;

	if (len <= 0 || len > PGDIRECT_BODY_MAX || FCGX_GetStr(body, (int)len, req->in) != len) {
		pgdirect_error(req, 400, "invalid_request", "the body must be a JSON object of at most 4 KiB");
		return;
	}
	body[len] = 0;
	o = json_tokener_parse(body);
	if (!o || !json_object_is_type(o, json_type_object) ||
	    !json_object_object_get_ex(o, "sku", &v) || !json_object_is_type(v, json_type_string) ||
	    (sku = json_object_get_string(v), strlen(sku) < 1 || strlen(sku) > 64) ||
	    !json_object_object_get_ex(o, "session", &v) || !json_object_is_type(v, json_type_string) ||
	    (session = json_object_get_string(v), strlen(session) < 1 || strlen(session) > 128) ||
	    !json_object_object_get_ex(o, "quantity", &v) || !json_object_is_type(v, json_type_int) ||
	    (quantity = json_object_get_int(v), quantity < 1 || quantity > 10)) {
		pgdirect_error(req, 400, "invalid_request", "sku, quantity (1..10) and session are required");
		json_object_put(o);
		return;
	}

	unsigned char rnd[12];
	char resid[32], qty[16];
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
		pgdirect_error(req, 503, "unavailable", "no randomness");
		json_object_put(o);
		return;
	}
	for (int i = 0; i < 12; i++)
		snprintf(resid + 2 * i, 3, "%02x", rnd[i]);
	snprintf(qty, sizeof(qty), "%d", quantity);

	const char *params[4] = { sku, qty, resid, session };
	PGresult *r = pgdirect_exec("reserve", 4, params);
	if (!r) {
		pgdirect_error(req, 503, "unavailable", "the database cannot be reached");
		json_object_put(o);
		return;
	}
	if (PQntuples(r) == 1) {
		struct timespec now;
		char created[96], expires[96], out[1024];
		clock_gettime(CLOCK_REALTIME, &now);
		pgdirect_iso8601(now.tv_sec, now.tv_nsec / 1000000, created, sizeof(created));
		pgdirect_iso8601(now.tv_sec + PGDIRECT_TTL_S, now.tv_nsec / 1000000, expires, sizeof(expires));
		/* sku and session came in as JSON strings: re-serialise them safely. */
		json_object *res = json_object_new_object();
		json_object_object_add(res, "reservation_id", json_object_new_string(resid));
		json_object_object_add(res, "sku", json_object_new_string(sku));
		json_object_object_add(res, "quantity", json_object_new_int(quantity));
		json_object_object_add(res, "session", json_object_new_string(session));
		json_object_object_add(res, "status", json_object_new_string("reserved"));
		json_object_object_add(res, "created_at", json_object_new_string(created));
		json_object_object_add(res, "expires_at", json_object_new_string(expires));
		json_object_object_add(res, "available", json_object_new_int64(atoll(PQgetvalue(r, 0, 0))));
		snprintf(out, sizeof(out), "%s",
			 json_object_to_json_string_ext(res, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
		json_object_put(res);
		pgdirect_send(req, 201, out);
	} else {
		/* Nothing updated: unknown, or not enough left (one more round trip,
		 * only on this path, as a real handler would). */
		PGresult *l = pgdirect_exec("lookup", 1, params);
		if (!l) {
			pgdirect_error(req, 503, "unavailable", "the database cannot be reached");
		} else if (PQntuples(l) == 0) {
			pgdirect_error(req, 404, "unknown_sku", "no such sku");
		} else {
			long long avail = atoll(PQgetvalue(l, 0, 0));
			char out[256];
			snprintf(out, sizeof(out), "{\"error\":\"%s\",\"message\":\"not enough units left\",\"available\":%lld}",
				 avail > 0 ? "insufficient_stock" : "sold_out", avail);
			pgdirect_send(req, 409, out);
		}
		PQclear(l);
	}
	PQclear(r);
	json_object_put(o);
}

int main(void)
{
	const char *conninfo = getenv("PGDIRECT_CONNINFO");
	FCGX_Request req;

	pgdirect_pg = PQconnectdb(conninfo ? conninfo : "");
	if (pgdirect_prepare() != 0) {
		fprintf(stderr, "pgdirect: cannot connect: %s", PQerrorMessage(pgdirect_pg));
		/* Keep serving: every buy answers 503 until the database is back. */
	}
	if (FCGX_Init() != 0 || FCGX_InitRequest(&req, 0, 0) != 0)
		return 1;
	/* libfcgi's own SIGTERM handler only sets a flag: a process blocked in
	 * accept would never exit when lighttpd stops. */
	struct sigaction sa = { .sa_handler = pgdirect_on_term };
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	while (FCGX_Accept_r(&req) >= 0) {
		const char *method = FCGX_GetParam("REQUEST_METHOD", req.envp);
		const char *path = FCGX_GetParam("PATH_INFO", req.envp);
		if (!method || !path) {
			pgdirect_error(&req, 404, "not_found", "no such path");
		} else if (strcmp(path, "/v1/reservations") == 0) {
			if (strcmp(method, "POST") == 0)
				pgdirect_reserve(&req);
			else
				pgdirect_error(&req, 405, "method_not_allowed", "POST only");
		} else if (strcmp(path, "/v1/health") == 0) {
			pgdirect_send(&req, 200, "{\"status\":\"ok\"}");
		} else {
			pgdirect_error(&req, 404, "not_found", "no such path");
		}
		FCGX_Finish_r(&req);
	}
	return 0;
}
