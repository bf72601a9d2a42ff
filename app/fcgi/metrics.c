/* metrics.c — shared counters and their Prometheus text (see metrics.h). */
#include "fcgi/metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "common/xmalloc.h"

/* The statuses rg-fcgi sends; the last slot counts any other. */
static const int metrics_statuses[] = { 200, 201, 204, 400, 401, 403, 404, 405, 409, 413, 415,
					429, 500, 503, 0 };
#define METRICS_STATUSES (sizeof(metrics_statuses) / sizeof(metrics_statuses[0]))

/* Upper bounds of the round-trip buckets: 100 us to 1 s, then +Inf. */
static const int64_t bucket_ns[] = { 100000, 250000, 500000, 1000000, 2500000, 5000000,
				     10000000, 25000000, 50000000, 100000000, 250000000,
				     500000000, 1000000000 };
static const char *const bucket_le[] = { "0.0001", "0.00025", "0.0005", "0.001", "0.0025",
					 "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5",
					 "1", "+Inf" };
#define METRICS_BUCKETS (sizeof(bucket_le) / sizeof(bucket_le[0]))
_Static_assert(sizeof(bucket_ns) / sizeof(bucket_ns[0]) + 1 == METRICS_BUCKETS, "buckets");

static const char *const outcome_names[METRICS_OUTCOME_COUNT] = {
	[METRICS_CREATED] = "created",
	[METRICS_REPLAYED] = "replayed",
	[METRICS_INVALID_REQUEST] = "invalid_request",
	[METRICS_BOT_CHECK_FAILED] = "bot_check_failed",
	[METRICS_UNKNOWN_SKU] = "unknown_sku",
	[METRICS_SOLD_OUT] = "sold_out",
	[METRICS_INSUFFICIENT_STOCK] = "insufficient_stock",
	[METRICS_IDEMPOTENCY_CONFLICT] = "idempotency_conflict",
	[METRICS_LIMIT_EXCEEDED] = "limit_exceeded",
	[METRICS_UNAVAILABLE] = "unavailable",
};

/* Counters shared between processes must not hide a lock. */
_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "64-bit atomics must be lock-free");

typedef struct MetricsShm {
	uint64_t version;
	uint64_t size;
	_Atomic uint64_t http[METRICS_ENDPOINTS][METRICS_STATUSES];
	_Atomic uint64_t reservations[METRICS_OUTCOME_COUNT];
	_Atomic uint64_t roundtrip_bucket[METRICS_BUCKETS];
	_Atomic uint64_t roundtrip_count, roundtrip_sum_ns;
	_Atomic uint64_t ledger_connects, ledger_failures;
	_Atomic uint64_t http_shed;
} MetricsShm;

#define METRICS_VERSION_WORD ((uint64_t)METRICS_MAGIC << 32 | METRICS_LAYOUT_VERSION)

struct Metrics {
	MetricsShm *shm;
};

static void shm_reset(MetricsShm *shm)
{
	memset(shm, 0, sizeof(*shm));
	shm->version = METRICS_VERSION_WORD;
	shm->size = sizeof(*shm);
}

/* Maps path, creating or resetting it under an exclusive flock so two
 * processes starting together agree on one layout. */
static int map_file(const char *path, MetricsShm **out, char *why, size_t why_len)
{
	MetricsShm *shm;
	struct stat st;
	int fd, rc;

	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0) {
		rc = -errno;
		snprintf(why, why_len, "cannot open metrics_file %s: %s", path, strerror(-rc));
		return rc;
	}
	if (flock(fd, LOCK_EX) < 0 || fstat(fd, &st) < 0)
		goto fail;
	if (st.st_size != (off_t)sizeof(MetricsShm)) {
		if (st.st_size)
			log_warn("metrics_file %s has another layout; resetting its counters", path);
		if (ftruncate(fd, 0) < 0 || ftruncate(fd, sizeof(MetricsShm)) < 0)
			goto fail;
	}
	shm = mmap(NULL, sizeof(MetricsShm), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (shm == MAP_FAILED)
		goto fail;
	if (shm->version != METRICS_VERSION_WORD || shm->size != sizeof(MetricsShm)) {
		if (shm->version)
			log_warn("metrics_file %s has another version; resetting its counters", path);
		shm_reset(shm);
	}
	flock(fd, LOCK_UN);
	close(fd);
	*out = shm;
	return 0;
fail:
	rc = -errno;
	snprintf(why, why_len, "cannot map metrics_file %s: %s", path, strerror(-rc));
	close(fd);
	return rc;
}

int metrics_open(const char *path, Metrics **out, char *why, size_t why_len)
{
	MetricsShm *shm = NULL;
	Metrics *m;
	int rc;

	if (path && *path) {
		rc = map_file(path, &shm, why, why_len);
		if (rc < 0)
			return rc;
	} else {
		shm = mmap(NULL, sizeof(MetricsShm), PROT_READ | PROT_WRITE,
			   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		if (shm == MAP_FAILED) {
			rc = -errno;
			snprintf(why, why_len, "cannot map shared counters: %s", strerror(-rc));
			return rc;
		}
		shm_reset(shm);
	}
	m = xcalloc(1, sizeof(*m));
	m->shm = shm;
	*out = m;
	return 0;
}

void metrics_close(Metrics *m)
{
	if (!m)
		return;
	munmap(m->shm, sizeof(MetricsShm));
	free(m);
}

static size_t status_index(int status)
{
	size_t i;

	for (i = 0; i + 1 < METRICS_STATUSES; i++) {
		if (metrics_statuses[i] == status)
			break;
	}
	return i;
}

static void bump(_Atomic uint64_t *c, uint64_t n)
{
	atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

static uint64_t load(_Atomic uint64_t *c)
{
	return atomic_load_explicit(c, memory_order_relaxed);
}

void metrics_http(Metrics *m, unsigned endpoint, int status)
{
	if (endpoint >= METRICS_ENDPOINTS)
		endpoint = ROUTE_NONE;
	bump(&m->shm->http[endpoint][status_index(status)], 1);
}

void metrics_reservation(Metrics *m, MetricsOutcome outcome)
{
	if ((unsigned)outcome < METRICS_OUTCOME_COUNT)
		bump(&m->shm->reservations[outcome], 1);
}

void metrics_roundtrip(Metrics *m, int64_t ns)
{
	size_t b = 0;

	if (ns < 0)
		ns = 0;
	while (b + 1 < METRICS_BUCKETS && ns > bucket_ns[b])
		b++;
	bump(&m->shm->roundtrip_bucket[b], 1);
	bump(&m->shm->roundtrip_sum_ns, (uint64_t)ns);
	bump(&m->shm->roundtrip_count, 1);
}

void metrics_ledger_connect(Metrics *m)
{
	bump(&m->shm->ledger_connects, 1);
}

void metrics_ledger_failure(Metrics *m)
{
	bump(&m->shm->ledger_failures, 1);
}

void metrics_shed(Metrics *m)
{
	bump(&m->shm->http_shed, 1);
}

uint64_t metrics_http_count(Metrics *m, unsigned endpoint, int status)
{
	return endpoint < METRICS_ENDPOINTS ? load(&m->shm->http[endpoint][status_index(status)]) : 0;
}

uint64_t metrics_reservation_count(Metrics *m, MetricsOutcome outcome)
{
	return (unsigned)outcome < METRICS_OUTCOME_COUNT ? load(&m->shm->reservations[outcome]) : 0;
}

/* ---- exposition -------------------------------------------------------------- */

static __attribute__((format(printf, 2, 3)))
void out_printf(Buf *out, const char *fmt, ...)
{
	char line[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n > 0)
		buf_append(out, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

static const char *endpoint_name(unsigned endpoint)
{
	return endpoint == METRICS_PREFLIGHT ? "preflight" : route_name((RouteId)endpoint);
}

/* Ledger stat names that would collide with our own rg_ledger_* series. */
static int stat_name_ours(const char *name)
{
	return strcmp(name, "up") == 0 || strncmp(name, "connects", 8) == 0 ||
	       strncmp(name, "failures", 8) == 0 || strncmp(name, "roundtrip", 9) == 0 ||
	       strncmp(name, "shard_", 6) == 0 || strncmp(name, "reservations", 12) == 0 ||
	       strncmp(name, "expiries", 8) == 0;
}

/* Global STATS values that only ever grow; the rest are gauges. */
static int stat_is_counter(const char *name)
{
	static const char *const counters[] = {
		"connections_total", "protocol_errors", "confirmed", "released", "timed_out",
		"forgotten", "busy", "batches", "requests", "fsyncs", "fsync_us_total",
		"wal_records", "wal_bytes", "snapshots", "writebehind_errors", "peers_refused",
		"recovered_records",
	};
	if (strncmp(name, "reserve_", 8) == 0)
		return 1;
	for (size_t i = 0; i < sizeof(counters) / sizeof(counters[0]); i++)
		if (strcmp(name, counters[i]) == 0)
			return 1;
	return 0;
}

/* The ledger's RESERVE outcomes: STATS name, outcome label. */
static const char *const ledger_outcomes[][2] = {
	{ "reserve_created", "created" },
	{ "reserve_replayed", "replayed" },
	{ "reserve_sold_out", "sold_out" },
	{ "reserve_insufficient_stock", "insufficient_stock" },
	{ "reserve_limit_exceeded", "limit_exceeded" },
	{ "reserve_quantity_too_large", "quantity_too_large" },
	{ "reserve_idempotency_conflict", "idempotency_conflict" },
	{ "reserve_unknown_sku", "unknown_sku" },
};

static void family(Buf *out, const char *name, const char *type, const char *help)
{
	out_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void render_ledger_stats(const WireResponse *stats, Buf *out)
{
	for (unsigned i = 0; i < stats->u.stats.count && i < WIRE_STATS_MAX; i++) {
		const WireStat *st = &stats->u.stats.item[i];
		char name[WIRE_STAT_NAME_MAX + 1];
		size_t len = st->name_len < WIRE_STAT_NAME_MAX ? st->name_len : WIRE_STAT_NAME_MAX;

		/* Metric names are [a-zA-Z0-9_]; anything else becomes '_'. */
		for (size_t k = 0; k < len; k++) {
			char c = st->name[k];
			int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
				 (c >= '0' && c <= '9') || c == '_';
			name[k] = ok ? c : '_';
		}
		name[len] = '\0';
		if (!len || stat_name_ours(name))
			continue;
		out_printf(out, "# TYPE rg_ledger_%s %s\nrg_ledger_%s %llu\n", name,
			   stat_is_counter(name) ? "counter" : "gauge", name,
			   (unsigned long long)st->value);
	}

	family(out, "rg_ledger_reservations_total", "counter",
	       "Outcomes of RESERVE in the ledger (all shards).");
	for (size_t i = 0; i < sizeof(ledger_outcomes) / sizeof(ledger_outcomes[0]); i++)
		out_printf(out, "rg_ledger_reservations_total{outcome=\"%s\"} %llu\n",
			   ledger_outcomes[i][1],
			   (unsigned long long)wire_stat_value(stats, ledger_outcomes[i][0]));
	family(out, "rg_ledger_expiries_total", "counter",
	       "Holds that reached expires_at unconfirmed and returned their units.");
	out_printf(out, "rg_ledger_expiries_total %llu\n",
		   (unsigned long long)wire_stat_value(stats, "timed_out"));
}

/* One value per shard. div > 1 prints value/div with three decimals (ms -> s). */
static void render_per_shard(Buf *out, const WireResponse *shards, unsigned n, const char *metric,
			     const char *type, const char *help, const char *stat, unsigned div)
{
	family(out, metric, type, help);
	for (unsigned k = 0; k < n; k++) {
		uint64_t v = wire_stat_value(&shards[k], stat);
		if (div > 1)
			out_printf(out, "%s{shard=\"%u\"} %llu.%03llu\n", metric, k,
				   (unsigned long long)(v / div),
				   (unsigned long long)(v % div * 1000 / div));
		else
			out_printf(out, "%s{shard=\"%u\"} %llu\n", metric, k, (unsigned long long)v);
	}
}

/* A histogram from the stats named prefix<bound>[unit] (in the ledger's
 * order, increasing), one series set per shard. A bound with the suffix "us"
 * is shown in seconds. sum_stat/sum_div give _sum (sum_div 1e6: us -> s). */
static void render_histogram(Buf *out, const WireResponse *shards, unsigned n, const char *metric,
			     const char *help, const char *prefix, const char *sum_stat,
			     uint64_t sum_div)
{
	size_t plen = strlen(prefix);

	family(out, metric, "histogram", help);
	for (unsigned k = 0; k < n; k++) {
		const WireResponse *r = &shards[k];
		uint64_t cumulative = 0;
		for (unsigned i = 0; i < r->u.stats.count && i < WIRE_STATS_MAX; i++) {
			const WireStat *st = &r->u.stats.item[i];
			const char *bound = st->name + plen;
			char le[32];
			if (strncmp(st->name, prefix, plen) != 0)
				continue;
			cumulative += st->value;
			size_t blen = strlen(bound);
			if (strcmp(bound, "inf") == 0)
				snprintf(le, sizeof(le), "+Inf");
			else if (blen > 2 && strcmp(bound + blen - 2, "us") == 0)
				snprintf(le, sizeof(le), "%g", strtod(bound, NULL) / 1e6);
			else
				snprintf(le, sizeof(le), "%.20s", bound);
			out_printf(out, "%s_bucket{shard=\"%u\",le=\"%s\"} %llu\n", metric, k, le,
				   (unsigned long long)cumulative);
		}
		uint64_t sum = wire_stat_value(r, sum_stat);
		if (sum_div > 1)
			out_printf(out, "%s_sum{shard=\"%u\"} %llu.%06llu\n", metric, k,
				   (unsigned long long)(sum / sum_div),
				   (unsigned long long)(sum % sum_div * 1000000 / sum_div));
		else
			out_printf(out, "%s_sum{shard=\"%u\"} %llu\n", metric, k, (unsigned long long)sum);
		out_printf(out, "%s_count{shard=\"%u\"} %llu\n", metric, k,
			   (unsigned long long)cumulative);
	}
}

static void render_shards(const WireResponse *shards, unsigned n, Buf *out)
{
	render_per_shard(out, shards, n, "rg_ledger_shard_queue_depth", "gauge",
			 "Requests waiting in the shard's inbox at the scrape.", "queue_len", 1);
	render_per_shard(out, shards, n, "rg_ledger_shard_holds_active", "gauge",
			 "Live holds (reserved, neither confirmed, released nor expired).",
			 "holds_active", 1);
	render_per_shard(out, shards, n, "rg_ledger_shard_expiries_total", "counter",
			 "Holds the shard timed out.", "timed_out", 1);
	render_per_shard(out, shards, n, "rg_ledger_shard_busy_total", "counter",
			 "Requests refused with busy because the shard's inbox was full.", "busy", 1);
	render_histogram(out, shards, n, "rg_ledger_shard_batch_requests",
			 "Requests answered per batch (one WAL write and fdatasync: group commit).",
			 "batch_le_", "requests", 1);
	render_histogram(out, shards, n, "rg_ledger_shard_fsync_seconds",
			 "Time of one batch's WAL write plus fdatasync.", "fsync_le_",
			 "fsync_us_total", 1000000);
	render_per_shard(out, shards, n, "rg_ledger_shard_last_lsn", "gauge",
			 "LSN of the shard's newest durable WAL record.", "last_lsn", 1);
	render_per_shard(out, shards, n, "rg_ledger_shard_snapshot_lsn", "gauge",
			 "LSN the shard's newest snapshot on disk covers.", "snapshot_lsn", 1);
	render_per_shard(out, shards, n, "rg_ledger_shard_writebehind_lag_records", "gauge",
			 "Durable WAL records not yet in PostgreSQL.", "writebehind_lag_records", 1);
	render_per_shard(out, shards, n, "rg_ledger_shard_writebehind_lag_seconds", "gauge",
			 "Age of the oldest durable record not yet in PostgreSQL.",
			 "writebehind_lag_ms", 1000);
	render_per_shard(out, shards, n, "rg_ledger_shard_writebehind_errors_total", "counter",
			 "Failed write-behind transactions and connections.", "writebehind_errors", 1);
	render_per_shard(out, shards, n, "rg_ledger_shard_pg_connected", "gauge",
			 "1 while the shard's write-behind connection to PostgreSQL works.",
			 "writebehind_connected", 1);
}

void metrics_render(Metrics *m, const WireResponse *stats, const WireResponse *shards,
		    unsigned nshards, Buf *out)
{
	MetricsShm *s = m->shm;
	uint64_t cumulative = 0, sum_ns;

	out_printf(out, "# HELP rg_http_requests_total HTTP requests answered, by endpoint and status.\n"
			"# TYPE rg_http_requests_total counter\n");
	for (unsigned e = 0; e < METRICS_ENDPOINTS; e++) {
		for (size_t k = 0; k < METRICS_STATUSES; k++) {
			uint64_t v = load(&s->http[e][k]);
			char status[16];

			if (!v)
				continue;
			if (metrics_statuses[k])
				snprintf(status, sizeof(status), "%d", metrics_statuses[k]);
			else
				snprintf(status, sizeof(status), "other");
			out_printf(out, "rg_http_requests_total{endpoint=\"%s\",status=\"%s\"} %llu\n",
				   endpoint_name(e), status, (unsigned long long)v);
		}
	}

	out_printf(out, "# HELP rg_reservations_total Outcomes of POST /v1/reservations.\n"
			"# TYPE rg_reservations_total counter\n");
	for (unsigned o = 0; o < METRICS_OUTCOME_COUNT; o++)
		out_printf(out, "rg_reservations_total{outcome=\"%s\"} %llu\n", outcome_names[o],
			   (unsigned long long)load(&s->reservations[o]));

	out_printf(out, "# HELP rg_ledger_roundtrip_seconds Time from sending a request to the "
			"ledger to reading its answer.\n"
			"# TYPE rg_ledger_roundtrip_seconds histogram\n");
	for (size_t b = 0; b < METRICS_BUCKETS; b++) {
		cumulative += load(&s->roundtrip_bucket[b]);
		out_printf(out, "rg_ledger_roundtrip_seconds_bucket{le=\"%s\"} %llu\n", bucket_le[b],
			   (unsigned long long)cumulative);
	}
	sum_ns = load(&s->roundtrip_sum_ns);
	/* The count is the buckets' total, so the histogram is self-consistent
	 * even when a round trip lands between two loads. */
	out_printf(out, "rg_ledger_roundtrip_seconds_sum %llu.%09llu\n"
			"rg_ledger_roundtrip_seconds_count %llu\n",
		   (unsigned long long)(sum_ns / 1000000000u),
		   (unsigned long long)(sum_ns % 1000000000u), (unsigned long long)cumulative);

	out_printf(out, "# HELP rg_ledger_connects_total Connections made to the ledger.\n"
			"# TYPE rg_ledger_connects_total counter\n"
			"rg_ledger_connects_total %llu\n",
		   (unsigned long long)load(&s->ledger_connects));
	out_printf(out, "# HELP rg_ledger_failures_total Ledger calls that failed (timeout, lost "
			"connection, refused).\n"
			"# TYPE rg_ledger_failures_total counter\n"
			"rg_ledger_failures_total %llu\n",
		   (unsigned long long)load(&s->ledger_failures));
	out_printf(out, "# HELP rg_http_shed_total Requests answered 503 at once, without the "
			"ledger, because too many connections waited on the worker's socket.\n"
			"# TYPE rg_http_shed_total counter\n"
			"rg_http_shed_total %llu\n",
		   (unsigned long long)load(&s->http_shed));
	out_printf(out, "# HELP rg_ledger_up 1 when the ledger answered STATS for this scrape.\n"
			"# TYPE rg_ledger_up gauge\n"
			"rg_ledger_up %d\n", stats ? 1 : 0);
	if (!stats)
		return;
	render_ledger_stats(stats, out);
	if (shards && nshards)
		render_shards(shards, nshards, out);
}
