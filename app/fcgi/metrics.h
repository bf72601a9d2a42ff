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
 *   u64 http_shed    requests shed by the worker (fcgi_shed_queue_len)
 * A file whose version or size differs (another release) is reset under an
 * flock, with a warning: counters may restart from zero, as Prometheus
 * counters are allowed to.
 *
 * LEDGER SERIES. The ledger's own figures are not kept here: each scrape asks
 * the ledger (STATS, then SHARD_STATS per shard, each within
 * ledger_timeout_ms) and renders the answers. Every global STATS value
 * appears as rg_ledger_<name> (typed counter or gauge; scripts/audit reads
 * some), plus these families:
 *   rg_ledger_reservations_total{outcome}     ledger RESERVE outcomes
 *   rg_ledger_expiries_total                  holds timed out
 *   rg_ledger_shard_queue_depth{shard}        requests waiting in the inbox
 *   rg_ledger_shard_holds_active{shard}
 *   rg_ledger_shard_expiries_total{shard}
 *   rg_ledger_shard_busy_total{shard}         refused with a full inbox
 *   rg_ledger_shard_batch_requests{shard}     histogram: requests per batch
 *   rg_ledger_shard_fsync_seconds{shard}      histogram: WAL write + fdatasync
 *   rg_ledger_shard_last_lsn{shard}, rg_ledger_shard_snapshot_lsn{shard}
 *   rg_ledger_shard_writebehind_lag_records{shard}, _lag_seconds{shard},
 *   rg_ledger_shard_writebehind_errors_total{shard},
 *   rg_ledger_shard_pg_connected{shard}       1 while its PostgreSQL link works
 * The ledger names histogram buckets by their bound (batch_le_16,
 * fsync_le_2500us, ..._le_inf), so no table of bounds is repeated here.
 * When the ledger does not answer, none of these appear and rg_ledger_up is 0. */
#ifndef RG_METRICS_H
#define RG_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/wire.h"
#include "fcgi/route.h"

#define METRICS_MAGIC 0x52474d31u /* "RGM1" */
#define METRICS_LAYOUT_VERSION 2

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
/* A request answered 503 by the worker itself: its accept queue was too long. */
void metrics_shed(Metrics *m);

/* Bounds the per-shard answers one scrape asks for (cfg allows 256 shards). */
#define METRICS_SHARDS_MAX 256

/* The exposition text: our counters, and when stats (a ledger STATS answer)
 * is not NULL the ledger series above; shards[0..nshards) are its
 * SHARD_STATS answers (nshards 0: no per-shard series). rg_ledger_up says
 * whether stats was given. */
void metrics_render(Metrics *m, const WireResponse *stats, const WireResponse *shards,
		    unsigned nshards, Buf *out);

/* Test helpers: a counter's current value. */
uint64_t metrics_http_count(Metrics *m, unsigned endpoint, int status);
uint64_t metrics_reservation_count(Metrics *m, MetricsOutcome outcome);

#endif
