/* ledger_conn.c — persistent ledger connection with backoff (see ledger_conn.h). */
#include "fcgi/ledger_conn.h"

#include <errno.h>
#include <string.h>

#include "common/clock.h"
#include "common/ledger_client.h"
#include "common/log.h"
#include "common/xmalloc.h"

struct LedgerConn {
	char *path;
	int timeout_ms;
	Metrics *metrics;
	LedgerClient *client;     /* NULL while disconnected */
	unsigned shards;
	int backoff_ms;           /* the last delay; 0 after a good answer */
	int64_t retry_at_ns;      /* monotonic: no connect before this */
	int down;                 /* an outage was logged and is not over */
};

LedgerConn *ledger_conn_new(const char *socket_path, int timeout_ms, Metrics *metrics)
{
	LedgerConn *lc = xcalloc(1, sizeof(*lc));

	lc->path = xstrndup(socket_path, strlen(socket_path));
	lc->timeout_ms = timeout_ms;
	lc->metrics = metrics;
	return lc;
}

void ledger_conn_free(LedgerConn *lc)
{
	if (!lc)
		return;
	ledger_client_close(lc->client);
	free(lc->path);
	free(lc);
}

unsigned ledger_conn_shards(const LedgerConn *lc)
{
	return lc->shards;
}

static void disconnect(LedgerConn *lc)
{
	ledger_client_close(lc->client);
	lc->client = NULL;
}

/* Drops the connection after a failure and schedules the next attempt. */
static void fail(LedgerConn *lc, int rc, const char *what)
{
	disconnect(lc);
	lc->backoff_ms = lc->backoff_ms ? lc->backoff_ms * 2 : LEDGER_CONN_BACKOFF_MIN_MS;
	if (lc->backoff_ms > LEDGER_CONN_BACKOFF_MAX_MS)
		lc->backoff_ms = LEDGER_CONN_BACKOFF_MAX_MS;
	lc->retry_at_ns = clock_mono_ns() + (int64_t)lc->backoff_ms * 1000000;
	if (lc->metrics)
		metrics_ledger_failure(lc->metrics);
	if (!lc->down) {
		log_warn("ledger at %s: %s: %s; answering 503 and reconnecting (backoff up to %d ms)",
			 lc->path, what, strerror(-rc), LEDGER_CONN_BACKOFF_MAX_MS);
		lc->down = 1;
	}
}

int ledger_conn_ensure(LedgerConn *lc, const char **why)
{
	int rc;

	if (lc->client)
		return 0;
	if (clock_mono_ns() < lc->retry_at_ns) {
		*why = "the ledger is unavailable (waiting to reconnect)";
		return -EAGAIN;
	}
	rc = ledger_client_connect(lc->path, lc->timeout_ms, &lc->client);
	if (rc < 0) {
		lc->client = NULL;
		fail(lc, rc, "cannot connect");
		*why = "cannot connect to the ledger";
		return rc;
	}
	lc->shards = ledger_client_shards(lc->client);
	log_info("%s the ledger at %s (%u shards)", lc->down ? "reconnected to" : "connected to",
		 lc->path, lc->shards);
	lc->down = 0;
	if (lc->metrics)
		metrics_ledger_connect(lc->metrics);
	return 0;
}

int ledger_conn_call(LedgerConn *lc, WireRequest *req, WireResponse *resp, const char **why)
{
	for (int attempt = 0;; attempt++) {
		int fresh = !lc->client;
		int64_t start, left_ms;
		int rc;

		rc = ledger_conn_ensure(lc, why);
		if (rc < 0)
			return rc;
		start = clock_mono_ns();
		req->id = 0; /* ids are per connection: let the client number it */
		ledger_client_send(lc->client, req);
		rc = ledger_client_flush(lc->client);
		if (rc < 0) {
			/* A kept connection the ledger closed while we were idle
			 * (it restarted): these bytes never reached it, so one
			 * retry on a new connection cannot apply a request twice. */
			if (!fresh && attempt == 0 && (rc == -EPIPE || rc == -ECONNRESET)) {
				disconnect(lc);
				continue;
			}
			fail(lc, rc, "send failed");
			*why = "the ledger connection failed";
			return rc;
		}
		left_ms = lc->timeout_ms - (clock_mono_ns() - start) / 1000000;
		rc = ledger_client_recv(lc->client, resp, left_ms > 0 ? (int)left_ms : 0);
		if (rc == 0 && (resp->id != req->id || resp->op != req->op))
			rc = -EPROTO;
		if (rc < 0) {
			fail(lc, rc, rc == -ETIMEDOUT ? "no answer in time" : "answer lost");
			*why = rc == -ETIMEDOUT ? "the ledger did not answer in time"
						: "the ledger connection failed";
			return rc;
		}
		if (lc->metrics)
			metrics_roundtrip(lc->metrics, clock_mono_ns() - start);
		lc->backoff_ms = 0;
		if (resp->status == WIRE_SHUTTING_DOWN) {
			/* It is going away: reconnect to its successor, not to it. */
			disconnect(lc);
			lc->retry_at_ns = clock_mono_ns() + (int64_t)LEDGER_CONN_BACKOFF_MIN_MS * 1000000;
		}
		return 0;
	}
}
