/* api.h — the endpoints of API.md: validate, ask the ledger, answer.
 *
 * DESIGN. api_handle is the whole life of one request after FastCGI has
 * delivered it: route (404, 405, OPTIONS preflight), run the endpoint's
 * handler, add CORS headers, count it in the metrics. Each handler validates
 * everything it can before the ledger sees anything (path ids, query, then
 * the body through the bounded gate and the JSON getters), builds one
 * WireRequest, makes one ledger round trip, and maps the ledger's status to
 * the HTTP status and error code API.md gives (wire_status_name supplies the
 * codes). A ledger that is busy, shutting down, slow or unreachable is 503
 * unavailable with Retry-After; every 5xx is logged once at WARN. The admin
 * token is compared in constant time and appears in no log or answer. */
#ifndef RG_API_H
#define RG_API_H

#include "common/cfg.h"
#include "fcgi/botcheck.h"
#include "fcgi/http.h"
#include "fcgi/ledger_conn.h"
#include "fcgi/metrics.h"

typedef struct Api Api;

/* Everything is borrowed and must outlive the Api; botcheck may be NULL (no
 * bot check), metrics may be NULL (not counted). */
Api *api_new(const Config *cfg, Botcheck *botcheck, LedgerConn *ledger, Metrics *metrics);
void api_free(Api *api);

/* Overload shedding (worker.c owns the measure): asked before a reservation
 * or a read is handled; nonzero answers 503 unavailable + Retry-After at once,
 * without the ledger and without a log line per request (the hook logs). */
typedef int (*ApiShedFn)(void *ctx);
void api_set_shed(Api *api, ApiShedFn fn, void *ctx);

/* Answers req into resp (which is reset first). May read the request body. */
void api_handle(Api *api, HttpRequest *req, HttpResponse *resp);

#endif
