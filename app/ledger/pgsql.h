/* pgsql.h — the ledger's few PostgreSQL helpers: bounded libpq calls and
 * array parameters.
 *
 * DESIGN. The write-behind and catalog threads talk to PostgreSQL with
 * libpq's asynchronous calls and poll(2), so every wait is bounded and a
 * stopping ledger never hangs on a server that went silent: each wait ends
 * at a deadline or as soon as *stop is set, and the connection is then
 * dropped (PostgreSQL rolls back what was not committed). Rows travel as
 * array parameters ($1::text[] ...) built here as PostgreSQL array literals,
 * one statement per batch, so no SQL text is ever built from data.
 * pgsql_transaction sends a whole transaction (BEGIN, prepared statements,
 * COMMIT) in libpq pipeline mode ending in a single Sync: one round
 * trip however many statements, which is what matters across a wide-area
 * link.
 *
 * Connection strings are never logged (they may hold a password); messages
 * name the host and database libpq reports instead. */
#ifndef RG_PGSQL_H
#define RG_PGSQL_H

#include <libpq-fe.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

/* ---- array literals ------------------------------------------------------------
 *
 * A PgsqlArray accumulates the text form of a one-dimensional array, e.g.
 * {"a\"b","c\\d"} or {1,2,3}. Every text element is double-quoted, with '"'
 * and '\' backslash-escaped; inside quotes PostgreSQL takes every other byte
 * (commas, braces, blanks, the word NULL, any UTF-8) literally, so any string
 * round-trips exactly and none can become NULL. Elements must not contain a
 * NUL byte (a C string cannot carry one to libpq anyway). */
typedef struct PgsqlArray {
	Buf buf;
	size_t n;          /* elements added */
} PgsqlArray;

void pgsql_array_init(PgsqlArray *a);
void pgsql_array_free(PgsqlArray *a);
/* Empties the array for reuse (keeps its memory). */
void pgsql_array_reset(PgsqlArray *a);
void pgsql_array_add_text(PgsqlArray *a, const char *s, size_t len);
void pgsql_array_add_i64(PgsqlArray *a, int64_t v);
/* The literal, NUL-terminated; borrowed until the next change. */
const char *pgsql_array_text(PgsqlArray *a);

/* Copies s to out as valid UTF-8: every byte sequence that is not
 * well-formed UTF-8 (stray continuation bytes, overlongs, surrogates, > U+10FFFF,
 * truncated sequences) becomes U+FFFD. NUL bytes become U+FFFD too. PostgreSQL
 * rejects invalid UTF-8 in a text parameter, and one bad name must not stall
 * the write-behind. Returns the bytes written (at most 3 * len). */
size_t pgsql_utf8_clean(const char *s, size_t len, char *out);

/* ---- connections ----------------------------------------------------------------- */

/* Connects with conninfo (a libpq keyword/value string or URI; its settings
 * win over our defaults: connect_timeout 10 s, TCP keepalives, the given
 * application_name), waiting at most timeout_ms or until *stop. Then sets
 * client_encoding UTF8, DateStyle ISO, statement_timeout 60 s and
 * synchronous_commit on. Returns the
 * connection, or NULL with a reason in why (never the conninfo itself). */
PGconn *pgsql_connect(const char *conninfo, const char *application_name, int timeout_ms,
		      const atomic_int *stop, char *why, size_t why_len);

/* Runs one statement, prepared (name != NULL, see pgsql_prepare) or given as
 * sql with text parameters, and waits at most timeout_ms (or until *stop) for
 * its result. Returns the result when its status is PGRES_COMMAND_OK or
 * PGRES_TUPLES_OK (the caller PQclear()s it), else NULL with a reason in why;
 * after NULL the connection must be dropped. */
PGresult *pgsql_exec(PGconn *conn, const char *name, const char *sql, int nparams,
		     const char *const *values, int timeout_ms, const atomic_int *stop, char *why,
		     size_t why_len);

/* One prepared statement of a transaction, with nparams text parameters
 * (values borrowed until pgsql_transaction returns). */
typedef struct PgsqlStmt {
	const char *name;
	int nparams;
	const char *const *values;
} PgsqlStmt;

/* Runs BEGIN, the n prepared statements in order, COMMIT, in libpq pipeline
 * mode with one Sync, so the whole transaction costs one round trip (the
 * server answers nothing before the Sync), and waits at most timeout_ms (or
 * until *stop) for every answer. Once a statement fails PostgreSQL skips the
 * rest up to the Sync, COMMIT included, so nothing commits after an error.
 * results has n slots: on return each holds its statement's result or NULL
 * (skipped, or never answered), whatever the return value; the caller
 * PQclear()s them all. Returns 0 when everything, COMMIT included, succeeded;
 * else -EIO with a reason in why and *failed = the index of the statement
 * that failed (its error result in results[*failed], for
 * PQresultErrorField), or -1 when BEGIN, COMMIT, the connection or the wait
 * failed. After -EIO the connection must be dropped (which rolls back). */
int pgsql_transaction(PGconn *conn, const PgsqlStmt *stmts, int n, PGresult **results, int *failed,
		      int timeout_ms, const atomic_int *stop, char *why, size_t why_len)
	__attribute__((warn_unused_result));

/* Prepares sql under name. Returns 0 or -EIO with a reason in why. */
int pgsql_prepare(PGconn *conn, const char *name, const char *sql, int nparams, int timeout_ms,
		  const atomic_int *stop, char *why, size_t why_len) __attribute__((warn_unused_result));

/* Sleeps ms, waking early (and returning 1) once *stop is set. */
int pgsql_sleep(int ms, const atomic_int *stop);

/* "host H port P database D user U" of a live connection, for logs. */
void pgsql_describe(PGconn *conn, char *out, size_t out_len);

#endif
