/* metrics.h — the counters behind GET /metrics (Prometheus text format).
 *
 * DESIGN. Every rg-fcgi process may answer /metrics, so the counters live in
 * memory all processes share: a MAP_SHARED mapping of a fixed layout of C11
 * atomic 64-bit counters (lock-free and address-free on every platform we
 * build for, so they work across processes). With metrics_file set, every
 * process maps that file — the web server may spawn the processes
 * independently — and it survives restarts. Without it, the mapping is
 * anonymous: a prefork master creates it before forking, so its workers share
 * it; a process the web server spawned alone counts for itself.
 *
 * FILE LAYOUT (native byte order; the file is a cache, not an archive)
 *   u64 version     METRICS_MAGIC << 32 | METRICS_LAYOUT_VERSION
 *   u64 size        bytes of the whole layout
 *   u64 http[METRICS_ENDPOINTS][METRICS_STATUSES]   requests by endpoint, status
 *   u64 reservations[METRICS_OUTCOME_COUNT]          POST /v1/reservations outcomes
 *   u64 roundtrip_bucket[METRICS_BUCKETS]            ledger round trips per bucket
 *                                                    (not cumulative; summed when shown)
 *   u64 roundtrip_count, roundtrip_sum_ns
 *   u64 ledger_connects, ledger_failures
 * A file whose version or size differs (another release) is reset under an
 * flock, with a warning: counters may restart from zero, as Prometheus
 * counters are allowed to. */
#ifndef RG_METRICS_H
#define RG_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/wire.h"
#include "fcgi/route.h"

#define METRICS_MAGIC 0x52474d31u /* "RGM1" */
#define METRICS_LAYOUT_VERSION 1

/* Endpoint labels: the routes, plus CORS preflights. */
#define METRICS_PREFLIGHT ROUTE_COUNT
#define METRICS_ENDPOINTS (ROUTE_COUNT + 1)

typedef enum MetricsOutcome {
	METRICS_CREATED,
	METRICS_REPLAYED,
	METRICS_INVALID_REQUEST,
	METRICS_BOT_CHECK_FAILED,
	METRICS_UNKNOWN_SKU,
	METRICS_SOLD_OUT,
	METRICS_INSUFFICIENT_STOCK,
	METRICS_IDEMPOTENCY_CONFLICT,
	METRICS_LIMIT_EXCEEDED,
	METRICS_UNAVAILABLE,
	METRICS_OUTCOME_COUNT,
} MetricsOutcome;

typedef struct Metrics Metrics;

/* Maps the counters: path "" for an anonymous shared mapping, else the file
 * (created mode 0640 and sized if missing). Returns 0 or a negative errno
 * with a message in why. */
int metrics_open(const char *path, Metrics **out, char *why, size_t why_len)
	__attribute__((warn_unused_result));
void metrics_close(Metrics *m);

/* endpoint: a RouteId or METRICS_PREFLIGHT. */
void metrics_http(Metrics *m, unsigned endpoint, int status);
void metrics_reservation(Metrics *m, MetricsOutcome outcome);
void metrics_roundtrip(Metrics *m, int64_t ns);
void metrics_ledger_connect(Metrics *m);
void metrics_ledger_failure(Metrics *m);

/* The exposition text: our counters, and when stats is not NULL every value
 * of a ledger STATS answer as rg_ledger_<name> (rg_ledger_up says which). */
void metrics_render(Metrics *m, const WireResponse *stats, Buf *out);

/* Test helpers: a counter's current value. */
uint64_t metrics_http_count(Metrics *m, unsigned endpoint, int status);
uint64_t metrics_reservation_count(Metrics *m, MetricsOutcome outcome);

#endif
