/* catalog.c — products → ledger adoption (see catalog.h for the design). */
#include "ledger/catalog.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/hash.h"
#include "common/log.h"
#include "common/xmalloc.h"
#include "ledger/pgsql.h"

#define PAGE_ROWS 1000
#define TIMEOUT_MS 60000
#define RETRY_MIN_MS 100
#define BUSY_WAIT_MS 5

/* Keyset pagination: a page never holds a snapshot open for long, and a
 * huge catalog never sits in memory at once. */
static const char SQL_PAGE[] =
	"SELECT id, name, price_cents, stock, per_session_limit, max_per_order, reservation_ttl_s "
	"FROM products WHERE id > $1 ORDER BY id LIMIT 1000"; /* PAGE_ROWS */

struct Catalog {
	char *conninfo;
	int retry_max_ms;
	Shard **shards;
	unsigned nshards;
	pthread_t thread;
	atomic_int stop;
	pthread_mutex_t mu;
	pthread_cond_t cond;
	int pending;               /* guarded by mu: a pass was asked for */
};

/* Parses a bigint column into [lo, hi]; 0 or -ERANGE. */
static int column_i64(PGresult *res, int row, int col, int64_t lo, int64_t hi, int64_t *out)
{
	const char *s = PQgetvalue(res, row, col);
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (PQgetisnull(res, row, col) || errno || end == s || *end || v < lo || v > hi)
		return -ERANGE;
	*out = v;
	return 0;
}

/* Builds the PUT_SKU for one row; returns NULL or what is wrong with it. */
static const char *row_request(PGresult *res, int row, WireRequest *req)
{
	const char *sku = PQgetvalue(res, row, 0), *name = PQgetvalue(res, row, 1);
	size_t sku_len = (size_t)PQgetlength(res, row, 0), name_len = (size_t)PQgetlength(res, row, 1);
	int64_t price, stock, psl, mpo, ttl;

	if (!wire_sku_valid(sku, sku_len))
		return "the id is not a valid SKU (1-64 of A-Z a-z 0-9 . _ : -)";
	if (name_len > WIRE_NAME_MAX || !wire_name_valid(name, name_len))
		return "name is longer than 200 bytes or has control characters";
	if (column_i64(res, row, 2, 0, WIRE_PRICE_MAX, &price) != 0)
		return "price_cents is out of range";
	if (column_i64(res, row, 3, 0, WIRE_STOCK_MAX, &stock) != 0)
		return "stock is out of range";
	if (column_i64(res, row, 4, 0, INT32_MAX, &psl) != 0)
		return "per_session_limit is negative";
	if (column_i64(res, row, 5, 1, INT32_MAX, &mpo) != 0)
		return "max_per_order is below 1";
	if (column_i64(res, row, 6, 1, WIRE_TTL_MAX_S, &ttl) != 0)
		return "reservation_ttl_s is out of range";

	memset(req, 0, sizeof(*req));
	req->op = WIRE_OP_PUT_SKU;
	wire_set_str(req->sku, &req->sku_len, sku, sku_len, WIRE_SKU_MAX);
	WireSkuSettings *s = &req->settings;
	s->fields = WIRE_SKU_HAS_ALL | WIRE_SKU_ONLY_IF_NEW;
	s->stock = stock;
	s->price_cents = price;
	s->per_session_limit = (int32_t)psl;
	s->max_per_order = (int32_t)mpo;
	s->reservation_ttl_s = (int32_t)ttl;
	wire_set_str(s->name, &s->name_len, name, name_len, WIRE_NAME_MAX);
	return NULL;
}

/* Hands one request to its shard, waiting out a full inbox. Returns 0, or
 * -ESHUTDOWN once the ledger stops. */
static int submit(Catalog *c, const WireRequest *req)
{
	Shard *s = c->shards[hash_shard(hash_route(req->sku, req->sku_len), c->nshards)];
	for (;;) {
		int rc = shard_submit(s, req, SHARD_CONN_NONE);
		if (rc != -EBUSY)
			return rc;
		if (pgsql_sleep(BUSY_WAIT_MS, &c->stop))
			return -ESHUTDOWN;
	}
}

/* One adoption pass over products. Returns 0, -EIO (PostgreSQL failed; why
 * says how) or -ESHUTDOWN. */
static int adopt(Catalog *c, PGconn *conn, char *why, size_t why_len)
{
	char last[WIRE_SKU_MAX * 4 + 1] = "";
	size_t offered = 0, skipped = 0;
	int64_t t0 = clock_mono_ns();

	for (;;) {
		const char *params[1] = { last };
		PGresult *res = pgsql_exec(conn, NULL, SQL_PAGE, 1, params, TIMEOUT_MS, &c->stop, why,
					   why_len);
		if (!res)
			return -EIO;
		int rows = PQntuples(res);
		for (int i = 0; i < rows; i++) {
			WireRequest req;
			const char *bad = row_request(res, i, &req);
			if (bad) {
				char shown[3 * WIRE_SKU_MAX + 1];
				size_t n = pgsql_utf8_clean(PQgetvalue(res, i, 0),
							    strnlen(PQgetvalue(res, i, 0), WIRE_SKU_MAX), shown);
				shown[n] = '\0';
				for (size_t k = 0; k < n; k++)
					if ((unsigned char)shown[k] < 0x20 || shown[k] == 0x7f)
						shown[k] = '?';
				log_warn("products row '%s%s' is not adopted: %s", shown,
					 PQgetlength(res, i, 0) > WIRE_SKU_MAX ? "..." : "", bad);
				skipped++;
				continue;
			}
			if (submit(c, &req) != 0) {
				PQclear(res);
				return -ESHUTDOWN;
			}
			offered++;
		}
		if (rows > 0) {
			/* The next page starts after this id (however long or odd it is). */
			int len = PQgetlength(res, rows - 1, 0);
			if ((size_t)len >= sizeof(last))
				len = 0; /* cannot happen: ids this long were skipped above */
			memcpy(last, PQgetvalue(res, rows - 1, 0), (size_t)len);
			last[len] = '\0';
		}
		PQclear(res);
		if (rows < PAGE_ROWS || !last[0])
			break;
	}
	log_info("offered %zu products row(s) to the ledger in %lld ms (SKUs it did not "
		 "know are created with the row's stock; known ones are left as they are), %zu skipped",
		 offered, (long long)((clock_mono_ns() - t0) / 1000000), skipped);
	return 0;
}

static void *catalog_main(void *arg)
{
	Catalog *c = arg;
	int backoff_ms = RETRY_MIN_MS, warned = 0;
	char why[512];

	log_set_thread("catalog");
	for (;;) {
		pthread_mutex_lock(&c->mu);
		while (!c->pending && !atomic_load(&c->stop))
			pthread_cond_wait(&c->cond, &c->mu);
		c->pending = 0;
		pthread_mutex_unlock(&c->mu);
		if (atomic_load(&c->stop))
			break;

		PGconn *conn = pgsql_connect(c->conninfo, "rg-ledger catalog", TIMEOUT_MS, &c->stop, why,
					     sizeof(why));
		int rc = conn ? adopt(c, conn, why, sizeof(why)) : -EIO;
		PQfinish(conn);
		if (rc == -ESHUTDOWN || atomic_load(&c->stop))
			break;
		if (rc == 0) {
			backoff_ms = RETRY_MIN_MS;
			warned = 0;
			continue;
		}
		/* Not adopted yet: try again until it works (a reload asked
		 * meanwhile is covered by the same retry). */
		if (!warned)
			log_warn("catalog adoption waits for PostgreSQL: %s", why);
		warned = 1;
		pthread_mutex_lock(&c->mu);
		c->pending = 1;
		pthread_mutex_unlock(&c->mu);
		pgsql_sleep(backoff_ms, &c->stop);
		backoff_ms = backoff_ms * 2 > c->retry_max_ms ? c->retry_max_ms : backoff_ms * 2;
	}
	return NULL;
}

int catalog_start(const char *conninfo, int retry_max_ms, Shard **shards, unsigned nshards,
		  Catalog **out)
{
	Catalog *c = xcalloc(1, sizeof(*c));
	c->conninfo = xstrndup(conninfo, strlen(conninfo));
	c->retry_max_ms = retry_max_ms;
	c->shards = shards;
	c->nshards = nshards;
	c->pending = 1; /* the pass at start */
	atomic_init(&c->stop, 0);
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->cond, NULL);
	int rc = pthread_create(&c->thread, NULL, catalog_main, c);
	if (rc != 0) {
		pthread_mutex_destroy(&c->mu);
		pthread_cond_destroy(&c->cond);
		free(c->conninfo);
		free(c);
		return -rc;
	}
	*out = c;
	return 0;
}

void catalog_reload(void *catalog)
{
	Catalog *c = catalog;
	pthread_mutex_lock(&c->mu);
	c->pending = 1;
	pthread_cond_signal(&c->cond);
	pthread_mutex_unlock(&c->mu);
}

void catalog_stop(Catalog *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->mu);
	atomic_store(&c->stop, 1);
	pthread_cond_signal(&c->cond);
	pthread_mutex_unlock(&c->mu);
	pthread_join(c->thread, NULL);
	pthread_mutex_destroy(&c->mu);
	pthread_cond_destroy(&c->cond);
	free(c->conninfo);
	free(c);
}
