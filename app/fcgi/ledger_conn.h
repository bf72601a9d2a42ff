/* ledger_conn.h — a worker's one persistent connection to the ledger.
 *
 * DESIGN. A worker serves one request at a time, so one LedgerClient with one
 * request in flight is all it needs; keeping it open saves a connect and a
 * handshake per request. Any failure (refused, timed out, lost, malformed)
 * drops the connection and schedules a reconnect with capped exponential
 * backoff (LEDGER_CONN_BACKOFF_MIN_MS doubling to LEDGER_CONN_BACKOFF_MAX_MS);
 * until then calls fail at once with -EAGAIN, so a worker answers 503 without
 * waiting on a ledger that is known to be down (DESIGN.md: workers are
 * disposable, fail fast). A request whose bytes never left (the send failed on
 * a connection the ledger had closed, e.g. after its restart) is retried once
 * on a fresh connection: the ledger cannot have seen it. Nothing is retried
 * once it may have been read. Each connect is logged at INFO, each loss at
 * WARN (once per outage). */
#ifndef RG_LEDGER_CONN_H
#define RG_LEDGER_CONN_H

#include "common/wire.h"
#include "fcgi/metrics.h"

#define LEDGER_CONN_BACKOFF_MIN_MS 50
#define LEDGER_CONN_BACKOFF_MAX_MS 1000

typedef struct LedgerConn LedgerConn;

/* Nothing is connected yet. socket_path is copied; metrics is borrowed and
 * may be NULL. */
LedgerConn *ledger_conn_new(const char *socket_path, int timeout_ms, Metrics *metrics);
void ledger_conn_free(LedgerConn *lc);

/* Sends req and waits for its answer (at most timeout_ms for the round trip,
 * plus a connect when needed). Returns 0 with any ledger status in resp, or a
 * negative errno: -EAGAIN while backing off, else the failure (the connection
 * is then dropped). *why gets a static reason for logs. A SHUTTING_DOWN answer
 * is returned as is but also drops the connection. */
int ledger_conn_call(LedgerConn *lc, WireRequest *req, WireResponse *resp, const char **why)
	__attribute__((warn_unused_result));

/* Connects now unless connected or backing off (at worker start, so the
 * first request does not pay for the handshake). Returns as ledger_conn_call. */
int ledger_conn_ensure(LedgerConn *lc, const char **why);

/* The shard count of the last handshake; 0 before any. */
unsigned ledger_conn_shards(const LedgerConn *lc);

#endif
