/* test_writebehind.c — the write-behind against a real stack (scripts/stack):
 * rg-ledger selling over its socket, PostgreSQL checked with libpq.
 *
 *   test_writebehind SCENARIO     (RG_STACK_DIR: a running stack; RG_REPO_DIR)
 *
 * Scenarios (each a ctest test sharing one stack, one at a time):
 *   arrays   nasty strings and numbers round-trip through PostgreSQL arrays
 *   basic    reserve / confirm / release / expiry / admin changes reach
 *            inventory_log and products with the right values and times
 *   outage   under load, PostgreSQL stopped (-m immediate) for seconds: every
 *            reservation succeeds; after it is back the backlog drains and
 *            inventory_log has exactly one row per reservation, latest status
 *   kill     kill -9 of the ledger during write-behind, several times: no
 *            missing or duplicate rows, statuses final, per-SKU sums equal the
 *            ledger's, ledger_checkpoint never moves backwards (sampled)
 *   adopt    products rows inserted by SQL are adopted (SIGHUP, and at start)
 *            and sellable; known SKUs are not overwritten; bad rows skipped
 *   coldstart the ledger starts and sells with PostgreSQL down; once it is
 *            back, the sales reach it and rows added meanwhile are adopted
 *   audit    after a mixed workload scripts/audit reports zero differences;
 *            a hand edit of products.stock is reported; undone, zero again
 *   pipeline the ledger restarted to reach PostgreSQL through a counting
 *            socket proxy: every write-behind COMMIT (but a connection's
 *            first) came after exactly one round trip; rows all correct;
 *            then with writebehind_delay_ms = 300, 40 reservations sent one
 *            by one over ~250 ms reach PostgreSQL in a few transactions;
 *            with 10000, SIGTERM during a gathering window stops the ledger
 *            at once and the gathered reservation reaches PostgreSQL
 *
 * Randomised parts print their seed; RG_TEST_SEED reproduces a run. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "check.h"
#include "common/clock.h"
#include "common/hash.h"
#include "common/htab.h"
#include "common/ledger_client.h"
#include "common/rng.h"
#include "common/xmalloc.h"
#include "ledger/pgsql.h"

#define TIMEOUT_MS 10000
#define CHUNK 64

static char stack_dir[512], repo_dir[512];
static char env_socket[512], env_pghost[512], env_pgport[32], env_pgdb[128], env_pguser[128];
static char env_ledger_pid[32];
static unsigned nshards;

/* ---- the stack ------------------------------------------------------------------ */

/* Reads stack.env; after the first call only LEDGER_PID (other threads
 * read the rest meanwhile, and it does not change). */
static void load_env(void)
{
	static int loaded;
	char path[600], line[1024];
	snprintf(path, sizeof(path), "%s/stack.env", stack_dir);
	FILE *f = fopen(path, "r");
	REQUIRE(f);
	struct { const char *key; char *dst; size_t len; } keys[] = {
		{ "LEDGER_SOCKET", env_socket, sizeof(env_socket) },
		{ "PGHOST", env_pghost, sizeof(env_pghost) },
		{ "PGPORT", env_pgport, sizeof(env_pgport) },
		{ "PGDATABASE", env_pgdb, sizeof(env_pgdb) },
		{ "PGUSER", env_pguser, sizeof(env_pguser) },
		{ "LEDGER_PID", env_ledger_pid, sizeof(env_ledger_pid) },
	};
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		for (size_t i = loaded ? 5 /* LEDGER_PID */ : 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
			size_t k = strlen(keys[i].key);
			if (strncmp(line, keys[i].key, k) == 0 && line[k] == '=')
				snprintf(keys[i].dst, keys[i].len, "%s", line + k + 1);
		}
	}
	fclose(f);
	loaded = 1;
	REQUIRE(env_socket[0] && env_pghost[0]);
}

static int stack_cmd(const char *cmd)
{
	char sh[1400];
	snprintf(sh, sizeof(sh), "'%s/scripts/stack' %s '%s'", repo_dir, cmd, stack_dir);
	printf("+ scripts/stack %s\n", cmd);
	fflush(stdout);
	int rc = system(sh);
	load_env(); /* LEDGER_PID changes with ledger-start */
	return rc;
}

static PGconn *pg_open(void)
{
	const char *k[] = { "host", "port", "dbname", "user", NULL };
	const char *v[] = { env_pghost, env_pgport, env_pgdb, env_pguser, NULL };
	PGconn *c = PQconnectdbParams(k, v, 0);
	if (PQstatus(c) != CONNECTION_OK) {
		fprintf(stderr, "PostgreSQL: %s", PQerrorMessage(c));
		exit(1);
	}
	return c;
}

/* Runs sql with text parameters; fails the test on any error. */
static PGresult *pg_q(PGconn *c, const char *sql, int n, const char *const *params)
{
	PGresult *r = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
	ExecStatusType st = PQresultStatus(r);
	if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
		fprintf(stderr, "SQL failed: %s\n  %s", sql, PQresultErrorMessage(r));
		exit(1);
	}
	return r;
}

static long long pg_int(PGconn *c, const char *sql, int n, const char *const *params)
{
	PGresult *r = pg_q(c, sql, n, params);
	REQUIRE(PQntuples(r) == 1);
	long long v = PQgetisnull(r, 0, 0) ? -1 : atoll(PQgetvalue(r, 0, 0));
	PQclear(r);
	return v;
}

static LedgerClient *ledger_open(void)
{
	LedgerClient *c = NULL;
	int64_t deadline = clock_mono_ns() + 30LL * 1000000000;
	for (;;) {
		int rc = ledger_client_connect(env_socket, TIMEOUT_MS, &c);
		if (rc == 0)
			break;
		if (clock_mono_ns() > deadline) {
			fprintf(stderr, "cannot connect to %s: %s\n", env_socket, strerror(-rc));
			exit(1);
		}
		usleep(100000);
	}
	nshards = ledger_client_shards(c);
	return c;
}

static uint64_t stat_value(const WireResponse *r, const char *name)
{
	for (unsigned i = 0; i < r->u.stats.count; i++)
		if (strlen(name) == r->u.stats.item[i].name_len &&
		    memcmp(r->u.stats.item[i].name, name, r->u.stats.item[i].name_len) == 0)
			return r->u.stats.item[i].value;
	fprintf(stderr, "no stat %s\n", name);
	exit(1);
}

static WireResponse stats(LedgerClient *c)
{
	WireRequest q = { .op = WIRE_OP_STATS };
	WireResponse r;
	REQUIRE(ledger_client_call(c, &q, &r, TIMEOUT_MS) == 0);
	return r;
}

/* Waits until every writer is connected and has nothing left (twice). */
static void wait_drained(LedgerClient *c, int timeout_s)
{
	int64_t t0 = clock_mono_ns(), deadline = t0 + (int64_t)timeout_s * 1000000000;
	int calm = 0;
	for (;;) {
		WireResponse r = stats(c);
		uint64_t lag = stat_value(&r, "writebehind_lag_records");
		uint64_t conn = stat_value(&r, "writebehind_connected_shards");
		calm = lag == 0 && conn == nshards ? calm + 1 : 0;
		if (calm >= 2)
			break;
		if (clock_mono_ns() > deadline) {
			fprintf(stderr, "write-behind not drained after %d s: lag %" PRIu64 " records, %" PRIu64
				" of %u writers connected\n", timeout_s, lag, conn, nshards);
			exit(1);
		}
		usleep(200000);
	}
	printf("drained in %.1f s\n", (double)(clock_mono_ns() - t0) / 1e9);
}

static void put_sku(LedgerClient *c, const char *sku, int64_t stock, int32_t ttl_s, const char *name,
		    int64_t price)
{
	WireRequest q = { .op = WIRE_OP_PUT_SKU };
	WireResponse r;
	wire_set_str(q.sku, &q.sku_len, sku, strlen(sku), WIRE_SKU_MAX);
	q.settings.fields = WIRE_SKU_HAS_STOCK | WIRE_SKU_HAS_MAX_PER_ORDER | WIRE_SKU_HAS_TTL |
			    WIRE_SKU_HAS_PRICE | (name ? WIRE_SKU_HAS_NAME : 0);
	q.settings.stock = stock;
	q.settings.max_per_order = 100;
	q.settings.reservation_ttl_s = ttl_s;
	q.settings.price_cents = price;
	if (name)
		wire_set_str(q.settings.name, &q.settings.name_len, name, strlen(name), WIRE_NAME_MAX);
	REQUIRE(ledger_client_call(c, &q, &r, TIMEOUT_MS) == 0);
	if (r.status != WIRE_CREATED && r.status != WIRE_OK) {
		fprintf(stderr, "put_sku %s: %s\n", sku, wire_status_name(r.status));
		exit(1);
	}
}

static int get_sku(LedgerClient *c, const char *sku, WireSku *out)
{
	WireRequest q = { .op = WIRE_OP_GET_SKU };
	WireResponse r;
	wire_set_str(q.sku, &q.sku_len, sku, strlen(sku), WIRE_SKU_MAX);
	REQUIRE(ledger_client_call(c, &q, &r, TIMEOUT_MS) == 0);
	if (r.status != WIRE_OK)
		return -1;
	*out = r.u.sku;
	return 0;
}

/* ---- reservations and what they should end as --------------------------------------- */

typedef struct Res {
	HNode node;                /* by id */
	ResId id;
	char sku[72];
	char session[128];
	int32_t quantity;
	uint8_t want;              /* WireResState it must end as */
	uint8_t acked;             /* the RESERVE was answered CREATED */
	uint8_t action_done;       /* its confirm/release was answered */
	int64_t created_ms, expires_ms;
} Res;

typedef struct ResSet {
	Res *v;
	size_t n, cap;
	HTab tab;
	pthread_mutex_t mu;
} ResSet;

static void resset_init(ResSet *s)
{
	memset(s, 0, sizeof(*s));
	htab_init(&s->tab, 1024);
	pthread_mutex_init(&s->mu, NULL);
}

static Res *resset_find(ResSet *s, const ResId *id)
{
	uint64_t h = hash_bytes(id->b, RESID_BYTES);
	HTAB_FOR_HASH(&s->tab, h, node) {
		Res *r = (Res *)node;
		if (resid_equal(&r->id, id))
			return r;
	}
	return NULL;
}

/* Rebuilds the index (the array may have moved). */
static void resset_index(ResSet *s)
{
	htab_free(&s->tab);
	htab_init(&s->tab, 1024);
	for (size_t i = 0; i < s->n; i++) {
		s->v[i].node.hash = hash_bytes(s->v[i].id.b, RESID_BYTES);
		htab_insert(&s->tab, &s->v[i].node);
	}
}

static void make_reserve(WireRequest *q, const char *sku, const char *session, int32_t qty, uint64_t id)
{
	memset(q, 0, sizeof(*q));
	q->op = WIRE_OP_RESERVE;
	q->id = id;
	wire_set_str(q->sku, &q->sku_len, sku, strlen(sku), WIRE_SKU_MAX);
	wire_set_str(q->session, &q->session_len, session, strlen(session), WIRE_SESSION_MAX);
	q->quantity = qty;
}

static void make_change(WireRequest *q, const Res *r, uint8_t op, uint64_t id)
{
	memset(q, 0, sizeof(*q));
	q->op = op;
	q->id = id;
	q->reservation = r->id;
	wire_set_str(q->session, &q->session_len, r->session, strlen(r->session), WIRE_SESSION_MAX);
}

/* Sends n reservations pipelined and fills in their ids. Returns 0, or -1
 * when the connection failed (unanswered ones stay unacked). refused counts
 * answers other than CREATED. */
static int reserve_batch(LedgerClient *c, Res *rs, size_t n, uint64_t *next_id, size_t *refused)
{
	uint64_t base = *next_id;
	for (size_t i = 0; i < n; i++) {
		WireRequest q;
		make_reserve(&q, rs[i].sku, rs[i].session, rs[i].quantity, base + i);
		ledger_client_send(c, &q);
	}
	*next_id += n;
	if (ledger_client_flush(c) != 0)
		return -1;
	for (size_t k = 0; k < n; k++) {
		WireResponse r;
		if (ledger_client_recv(c, &r, TIMEOUT_MS) != 0)
			return -1;
		REQUIRE(r.id >= base && r.id < base + n);
		Res *x = &rs[r.id - base];
		if (r.status == WIRE_CREATED) {
			x->acked = 1;
			x->id = r.u.reservation.id;
			x->created_ms = r.u.reservation.created_ms;
			x->expires_ms = r.u.reservation.expires_ms;
		} else {
			(*refused)++;
			if (*refused <= 5)
				fprintf(stderr, "reserve %s refused: %s\n", x->sku, wire_status_name(r.status));
		}
	}
	return 0;
}

/* Sends the confirm/release of every acked reservation whose want asks for
 * one and that is not done yet. Returns 0 or -1 (connection failed: call
 * again on a new one; both are idempotent). */
static int actions_batch(LedgerClient *c, Res *rs, size_t n, uint64_t *next_id)
{
	uint64_t base = *next_id;
	size_t sent = 0;
	for (size_t i = 0; i < n; i++) {
		Res *r = &rs[i];
		if (!r->acked || r->action_done)
			continue;
		if (r->want != WIRE_RES_CONFIRMED && r->want != WIRE_RES_RELEASED) {
			r->action_done = 1;
			continue;
		}
		WireRequest q;
		make_change(&q, r, r->want == WIRE_RES_CONFIRMED ? WIRE_OP_CONFIRM : WIRE_OP_RELEASE, base + i);
		ledger_client_send(c, &q);
		sent++;
	}
	*next_id += n;
	if (ledger_client_flush(c) != 0)
		return -1;
	for (size_t k = 0; k < sent; k++) {
		WireResponse resp;
		if (ledger_client_recv(c, &resp, TIMEOUT_MS) != 0)
			return -1;
		REQUIRE(resp.id >= base && resp.id < base + n);
		Res *r = &rs[resp.id - base];
		if (resp.status != WIRE_OK) {
			fprintf(stderr, "%s of a reservation: %s\n", wire_op_name(resp.op),
				wire_status_name(resp.status));
			check_failures++;
		}
		r->action_done = 1;
	}
	return 0;
}

static uint8_t state_of(const char *status)
{
	if (strcmp(status, "reserved") == 0) return WIRE_RES_RESERVED;
	if (strcmp(status, "confirmed") == 0) return WIRE_RES_CONFIRMED;
	if (strcmp(status, "released") == 0) return WIRE_RES_RELEASED;
	if (strcmp(status, "timeout") == 0) return WIRE_RES_TIMEOUT;
	return 0;
}

/* Checks inventory_log for the SKUs matching like: one row per acked
 * reservation, with its wanted status; rows of reservations nobody saw
 * acknowledged (lost answers) are counted, and must still be 'reserved'. */
static void verify_rows(PGconn *pg, ResSet *s, const char *like)
{
	size_t acked = 0, found = 0, wrong = 0, unknown = 0;
	for (size_t i = 0; i < s->n; i++)
		acked += s->v[i].acked;
	resset_index(s);
	const char *p[1] = { like };
	PGresult *r = pg_q(pg, "SELECT id, status, quantity, sku_id FROM inventory_log WHERE sku_id LIKE $1", 1, p);
	uint8_t *seen = xcalloc(s->n ? s->n : 1, 1);
	for (int i = 0; i < PQntuples(r); i++) {
		ResId id;
		const char *text = PQgetvalue(r, i, 0);
		REQUIRE(resid_parse(text, strlen(text), &id) == 0);
		Res *x = resset_find(s, &id);
		if (!x || !x->acked) {
			unknown++;
			if (strcmp(PQgetvalue(r, i, 1), "reserved") != 0) {
				fprintf(stderr, "unacknowledged reservation %s has status %s\n", text, PQgetvalue(r, i, 1));
				check_failures++;
			}
			continue;
		}
		size_t k = (size_t)(x - s->v);
		if (seen[k]++) {
			fprintf(stderr, "reservation %s has two rows\n", text);
			check_failures++;
		}
		found++;
		if (state_of(PQgetvalue(r, i, 1)) != x->want || atoi(PQgetvalue(r, i, 2)) != x->quantity ||
		    strcmp(PQgetvalue(r, i, 3), x->sku) != 0) {
			if (++wrong <= 10)
				fprintf(stderr, "reservation %s: status %s quantity %s sku %s, want %s %d %s\n", text,
					PQgetvalue(r, i, 1), PQgetvalue(r, i, 2), PQgetvalue(r, i, 3),
					wire_res_state_name(x->want), x->quantity, x->sku);
		}
	}
	PQclear(r);
	free(seen);
	printf("inventory_log for %s: %zu acknowledged reservations, %zu rows found, %zu with a wrong "
	       "status, %zu rows of unacknowledged ones\n", like, acked, found, wrong, unknown);
	CHECK_EQ_INT(found, acked);
	CHECK_EQ_INT(wrong, 0);
}

/* Per SKU: the ledger's reserved and sold equal PostgreSQL's sums. */
static void verify_sums(LedgerClient *c, PGconn *pg, const char *prefix, int nskus)
{
	for (int i = 0; i < nskus; i++) {
		char sku[72];
		WireSku w;
		snprintf(sku, sizeof(sku), "%s%d", prefix, i);
		REQUIRE(get_sku(c, sku, &w) == 0);
		const char *p[1] = { sku };
		long long res = pg_int(pg, "SELECT COALESCE(SUM(quantity), 0) FROM inventory_log "
				       "WHERE sku_id = $1 AND status = 'reserved'", 1, p);
		long long sold = pg_int(pg, "SELECT COALESCE(SUM(quantity), 0) FROM inventory_log "
					"WHERE sku_id = $1 AND status = 'confirmed'", 1, p);
		long long stock = pg_int(pg, "SELECT stock FROM products WHERE id = $1", 1, p);
		if (res != w.reserved || sold != w.sold || stock != w.stock) {
			fprintf(stderr, "%s: ledger stock %" PRId64 " reserved %" PRId64 " sold %" PRId64
				", PostgreSQL %lld %lld %lld\n", sku, w.stock, w.reserved, w.sold, stock, res, sold);
			check_failures++;
		}
	}
}

/* ---- scenario: arrays ------------------------------------------------------------------- */

static void scenario_arrays(void)
{
	static const char *const nasty[] = {
		"", "NULL", "null", "a,b", "{x}", "}{", "\"", "\\", "\\\"", "a\"b\\c", " lead", "trail ",
		"tab\there", "new\nline", "caf\xc3\xa9", "\xe2\x82\xac 5", "\xf0\x9f\x8e\x9f ticket",
		"'single'", "$1", "(1,2)", "[1:2]={1,2}", "{\"a\",\"b\"}", "\\N",
	};
	size_t n = sizeof(nasty) / sizeof(nasty[0]);
	PgsqlArray a, b;
	pgsql_array_init(&a);
	pgsql_array_init(&b);
	for (size_t i = 0; i < n; i++) {
		pgsql_array_add_text(&a, nasty[i], strlen(nasty[i]));
		pgsql_array_add_i64(&b, (int64_t)i * 1000000000000LL - 5);
	}
	PGconn *pg = pg_open();
	const char *p[2] = { pgsql_array_text(&a), pgsql_array_text(&b) };
	PGresult *r = pg_q(pg, "SELECT u.t, u.n, u.t IS NULL FROM unnest($1::text[], $2::bigint[]) "
			   "WITH ORDINALITY AS u(t, n, i) ORDER BY u.i", 2, p);
	CHECK_EQ_INT(PQntuples(r), n);
	for (int i = 0; i < PQntuples(r) && (size_t)i < n; i++) {
		if (strcmp(PQgetvalue(r, i, 0), nasty[i]) != 0 || strcmp(PQgetvalue(r, i, 2), "f") != 0) {
			fprintf(stderr, "element %d: sent \"%s\", got \"%s\"\n", i, nasty[i], PQgetvalue(r, i, 0));
			check_failures++;
		}
		CHECK_EQ_INT(atoll(PQgetvalue(r, i, 1)), (int64_t)i * 1000000000000LL - 5);
	}
	PQclear(r);

	/* Invalid UTF-8, cleaned, is accepted; uncleaned it would not be. */
	const char bad[] = "bad \xff\xfe name \xc0\xaf end";
	char clean[3 * sizeof(bad)];
	size_t len = pgsql_utf8_clean(bad, sizeof(bad) - 1, clean);
	pgsql_array_reset(&a);
	pgsql_array_add_text(&a, clean, len);
	const char *q[1] = { pgsql_array_text(&a) };
	r = pg_q(pg, "SELECT unnest($1::text[])", 1, q);
	CHECK(strcmp(PQgetvalue(r, 0, 0), "bad \xef\xbf\xbd\xef\xbf\xbd name \xef\xbf\xbd\xef\xbf\xbd end") == 0);
	PQclear(r);
	PQfinish(pg);
	pgsql_array_free(&a);
	pgsql_array_free(&b);
	printf("%zu nasty strings round-tripped\n", n);
}

/* ---- scenario: basic ------------------------------------------------------------------------ */

static void scenario_basic(void)
{
	static const char name[] = "Tee \"quoted\" \\ back, {brace} caf\xc3\xa9 \xf0\x9f\x8e\x9f NULL";
	LedgerClient *c = ledger_open();
	PGconn *pg = pg_open();
	char tag[32];
	snprintf(tag, sizeof(tag), "%lld", (long long)clock_wall_ms());
	char sku_a[72], sku_x[72], like[72];
	snprintf(sku_a, sizeof(sku_a), "wb-basic-%s-a", tag);
	snprintf(sku_x, sizeof(sku_x), "wb-basic-%s-x", tag);
	snprintf(like, sizeof(like), "wb-basic-%s-%%", tag);

	put_sku(c, sku_a, 100, 300, name, 1999);
	put_sku(c, sku_x, 10, 1, NULL, 0);

	ResSet s;
	resset_init(&s);
	s.n = 13;
	s.v = xcalloc(s.n, sizeof(Res));
	for (size_t i = 0; i < s.n; i++) {
		Res *r = &s.v[i];
		snprintf(r->sku, sizeof(r->sku), "%s", i < 10 ? sku_a : sku_x);
		snprintf(r->session, sizeof(r->session), "basic-%s-%zu", tag, i);
		r->quantity = (int32_t)(i % 3) + 1;
		r->want = i >= 10 ? WIRE_RES_TIMEOUT : i < 3 ? WIRE_RES_CONFIRMED : i < 6 ? WIRE_RES_RELEASED
											: WIRE_RES_RESERVED;
	}
	uint64_t next_id = 1;
	size_t refused = 0;
	REQUIRE(reserve_batch(c, s.v, s.n, &next_id, &refused) == 0);
	CHECK_EQ_INT(refused, 0);
	REQUIRE(actions_batch(c, s.v, s.n, &next_id) == 0);
	/* An admin change after the sales: products must follow it. */
	put_sku(c, sku_a, 200, 300, name, 2500);
	usleep(2600 * 1000); /* the 1 s holds of sku_x expire */
	wait_drained(c, 60);

	verify_rows(pg, &s, like);
	verify_sums(c, pg, "", 0);
	/* Times: created_at, expires_at as the ledger said, to the millisecond. */
	size_t bad_times = 0;
	for (size_t i = 0; i < s.n; i++) {
		char id[RESID_TEXT_LEN + 1];
		resid_format(&s.v[i].id, id);
		const char *p[1] = { id };
		PGresult *r = pg_q(pg, "SELECT (extract(epoch FROM \"timestamp\") * 1000)::bigint, "
				   "(extract(epoch FROM expires_at) * 1000)::bigint, updated_at >= \"timestamp\", "
				   "shard, lsn FROM inventory_log WHERE id = $1", 1, p);
		REQUIRE(PQntuples(r) == 1);
		if (atoll(PQgetvalue(r, 0, 0)) != s.v[i].created_ms ||
		    atoll(PQgetvalue(r, 0, 1)) != s.v[i].expires_ms || strcmp(PQgetvalue(r, 0, 2), "t") != 0 ||
		    atoll(PQgetvalue(r, 0, 4)) <= 0)
			bad_times++;
		PQclear(r);
	}
	CHECK_EQ_INT(bad_times, 0);

	const char *pa[1] = { sku_a };
	PGresult *r = pg_q(pg, "SELECT name, price_cents, stock, max_per_order, reservation_ttl_s, "
			   "per_session_limit FROM products WHERE id = $1", 1, pa);
	REQUIRE(PQntuples(r) == 1);
	CHECK(strcmp(PQgetvalue(r, 0, 0), name) == 0);
	CHECK_EQ_INT(atoll(PQgetvalue(r, 0, 1)), 2500);
	CHECK_EQ_INT(atoll(PQgetvalue(r, 0, 2)), 200);
	CHECK_EQ_INT(atoll(PQgetvalue(r, 0, 3)), 100);
	CHECK_EQ_INT(atoll(PQgetvalue(r, 0, 4)), 300);
	CHECK_EQ_INT(atoll(PQgetvalue(r, 0, 5)), 0);
	PQclear(r);
	/* Every shard has a checkpoint row, and PostgreSQL is at the ledger's end. */
	CHECK_EQ_INT(pg_int(pg, "SELECT count(*) FROM ledger_checkpoint", 0, NULL), nshards);
	WireResponse st = stats(c);
	CHECK_EQ_INT(stat_value(&st, "writebehind_lag_records"), 0);
	printf("basic: statuses, times, products settings and checkpoints as expected\n");
	free(s.v);
	htab_free(&s.tab);
	PQfinish(pg);
	ledger_client_close(c);
}

/* ---- load with reconnects, shared by outage and kill ------------------------------------- */

#define LOAD_SKUS 16

typedef struct Load {
	const char *prefix;
	const char *tag;
	Rng rng;
	atomic_int stop;
	ResSet set;
	size_t refused, reconnects;
	int64_t worst_chunk_ms;
	int tolerate_failures;     /* kill: the ledger dies under us */
} Load;

static void *load_main(void *arg)
{
	Load *l = arg;
	LedgerClient *c = ledger_open();
	uint64_t next_id = 1;
	size_t seq = 0;

	while (!atomic_load(&l->stop)) {
		Res chunk[CHUNK];
		memset(chunk, 0, sizeof(chunk));
		for (size_t i = 0; i < CHUNK; i++, seq++) {
			Res *r = &chunk[i];
			snprintf(r->sku, sizeof(r->sku), "%s%u", l->prefix, (unsigned)(rng_u64(&l->rng) % LOAD_SKUS));
			snprintf(r->session, sizeof(r->session), "%s-%s-%zu", l->prefix, l->tag, seq);
			r->quantity = (int32_t)(rng_u64(&l->rng) % 3) + 1;
			unsigned d = (unsigned)(rng_u64(&l->rng) % 10);
			r->want = d < 4 ? WIRE_RES_CONFIRMED : d < 6 ? WIRE_RES_RELEASED : WIRE_RES_RESERVED;
		}
		int64_t t0 = clock_mono_ns();
		int rc = reserve_batch(c, chunk, CHUNK, &next_id, &l->refused);
		while (rc == 0 || l->tolerate_failures) {
			if (rc == 0 && actions_batch(c, chunk, CHUNK, &next_id) == 0)
				break;
			if (!l->tolerate_failures)
				break;
			/* The ledger went away: reconnect and finish the chunk's actions. */
			ledger_client_close(c);
			c = ledger_open();
			l->reconnects++;
			rc = 0;
		}
		if (rc != 0 && !l->tolerate_failures) {
			fprintf(stderr, "the ledger connection failed under load\n");
			exit(1);
		}
		int64_t ms = (clock_mono_ns() - t0) / 1000000;
		if (ms > l->worst_chunk_ms)
			l->worst_chunk_ms = ms;
		pthread_mutex_lock(&l->set.mu);
		if (l->set.n + CHUNK > l->set.cap) {
			l->set.cap = l->set.cap ? l->set.cap * 2 : 4096;
			l->set.v = xrealloc(l->set.v, l->set.cap * sizeof(Res));
		}
		memcpy(l->set.v + l->set.n, chunk, sizeof(chunk));
		l->set.n += CHUNK;
		pthread_mutex_unlock(&l->set.mu);
	}
	ledger_client_close(c);
	return NULL;
}

static size_t load_count(Load *l)
{
	pthread_mutex_lock(&l->set.mu);
	size_t n = l->set.n;
	pthread_mutex_unlock(&l->set.mu);
	return n;
}

static uint64_t test_seed(void)
{
	const char *e = getenv("RG_TEST_SEED");
	uint64_t seed = e && *e ? strtoull(e, NULL, 0) : (uint64_t)clock_wall_ms();
	printf("seed %" PRIu64 " (set RG_TEST_SEED=%" PRIu64 " to reproduce)\n", seed, seed);
	return seed;
}

static void setup_skus(LedgerClient *c, const char *prefix)
{
	for (int i = 0; i < LOAD_SKUS; i++) {
		char sku[72];
		snprintf(sku, sizeof(sku), "%s%d", prefix, i);
		put_sku(c, sku, 100000000, 3600, "load", 100);
	}
}

/* ---- scenario: outage ----------------------------------------------------------------------- */

static void scenario_outage(void)
{
	LedgerClient *c = ledger_open();
	char tag[24], prefix[40], like[64];
	snprintf(tag, sizeof(tag), "%lld", (long long)clock_wall_ms());
	snprintf(prefix, sizeof(prefix), "wb-out-%s-", tag);
	snprintf(like, sizeof(like), "%s%%", prefix);
	setup_skus(c, prefix);
	wait_drained(c, 60);

	Load l = { .prefix = prefix, .tag = tag };
	rng_init_seeded(&l.rng, test_seed());
	resset_init(&l.set);
	pthread_t t;
	REQUIRE(pthread_create(&t, NULL, load_main, &l) == 0);
	usleep(1000 * 1000);
	size_t before = load_count(&l);
	REQUIRE(stack_cmd("pg-stop") == 0);
	int64_t down_at = clock_mono_ns();
	usleep(1500 * 1000);
	WireResponse st = stats(c);
	uint64_t conn_down = stat_value(&st, "writebehind_connected_shards");
	uint64_t lag_down = stat_value(&st, "writebehind_lag_records");
	uint64_t lag_ms_down = stat_value(&st, "writebehind_lag_ms");
	usleep(4500 * 1000);
	size_t during = load_count(&l) - before;
	st = stats(c);
	uint64_t lag_end = stat_value(&st, "writebehind_lag_records");
	REQUIRE(stack_cmd("pg-start") == 0);
	printf("PostgreSQL was down %.1f s: %zu reservations made meanwhile, writers connected %" PRIu64
	       ", lag %" PRIu64 " records / %" PRIu64 " ms after 1.5 s, %" PRIu64 " records at the end\n",
	       (double)(clock_mono_ns() - down_at) / 1e9, during, conn_down, lag_down, lag_ms_down, lag_end);
	CHECK_EQ_INT(conn_down, 0);
	CHECK(lag_down > 0);
	CHECK(lag_ms_down > 0);
	CHECK(during > 1000);
	usleep(1000 * 1000);
	atomic_store(&l.stop, 1);
	pthread_join(t, NULL);
	printf("%zu reservations in all, %zu refused, slowest chunk of %d: %lld ms\n", l.set.n, l.refused,
	       CHUNK, (long long)l.worst_chunk_ms);
	CHECK_EQ_INT(l.refused, 0);
	CHECK(l.worst_chunk_ms < 3000); /* selling never waited for PostgreSQL */
	wait_drained(c, 180);

	PGconn *pg = pg_open();
	verify_rows(pg, &l.set, like);
	verify_sums(c, pg, prefix, LOAD_SKUS);
	PQfinish(pg);
	free(l.set.v);
	htab_free(&l.set.tab);
	ledger_client_close(c);
}

/* ---- scenario: kill -9 ---------------------------------------------------------------------- */

typedef struct Sampler {
	atomic_int stop;
	size_t samples, advances, backwards, failures;
	long long last[256];
} Sampler;

static void *sampler_main(void *arg)
{
	Sampler *s = arg;
	PGconn *pg = NULL;
	while (!atomic_load(&s->stop)) {
		if (!pg || PQstatus(pg) != CONNECTION_OK) {
			PQfinish(pg);
			const char *k[] = { "host", "port", "dbname", "user", NULL };
			const char *v[] = { env_pghost, env_pgport, env_pgdb, env_pguser, NULL };
			pg = PQconnectdbParams(k, v, 0);
		}
		PGresult *r = PQexec(pg, "SELECT shard, lsn FROM ledger_checkpoint");
		if (PQresultStatus(r) == PGRES_TUPLES_OK) {
			s->samples++;
			for (int i = 0; i < PQntuples(r); i++) {
				int shard = atoi(PQgetvalue(r, i, 0));
				long long lsn = atoll(PQgetvalue(r, i, 1));
				if (shard < 0 || shard >= 256)
					continue;
				if (lsn < s->last[shard]) {
					fprintf(stderr, "ledger_checkpoint of shard %d went back from %lld to %lld\n",
						shard, s->last[shard], lsn);
					s->backwards++;
				} else if (lsn > s->last[shard]) {
					s->advances++;
				}
				s->last[shard] = lsn;
			}
		} else {
			s->failures++;
		}
		PQclear(r);
		usleep(20000);
	}
	PQfinish(pg);
	return NULL;
}

static void scenario_kill(void)
{
	LedgerClient *c = ledger_open();
	char tag[24], prefix[40], like[64];
	snprintf(tag, sizeof(tag), "%lld", (long long)clock_wall_ms());
	snprintf(prefix, sizeof(prefix), "wb-kill-%s-", tag);
	snprintf(like, sizeof(like), "%s%%", prefix);
	setup_skus(c, prefix);
	wait_drained(c, 60);
	ledger_client_close(c);

	uint64_t seed = test_seed();
	Rng rng;
	rng_init_seeded(&rng, seed);
	Load l = { .prefix = prefix, .tag = tag, .tolerate_failures = 1 };
	rng_init_seeded(&l.rng, seed ^ 0x9e3779b97f4a7c15ULL);
	resset_init(&l.set);
	Sampler sm = { 0 };
	pthread_t t, ts;
	REQUIRE(pthread_create(&ts, NULL, sampler_main, &sm) == 0);
	REQUIRE(pthread_create(&t, NULL, load_main, &l) == 0);
	int kills = 5;
	size_t mid_batch = 0;
	for (int k = 0; k < kills; k++) {
		usleep((useconds_t)(400 + rng_u64(&rng) % 1100) * 1000);
		LedgerClient *probe = ledger_open();
		WireResponse st = stats(probe);
		uint64_t lag = stat_value(&st, "writebehind_lag_records");
		ledger_client_close(probe);
		mid_batch += lag > 0;
		printf("kill %d: write-behind %" PRIu64 " records behind\n", k + 1, lag);
		REQUIRE(stack_cmd("ledger-kill") == 0);
		usleep((useconds_t)(rng_u64(&rng) % 300) * 1000);
		REQUIRE(stack_cmd("ledger-start") == 0);
	}
	usleep(1000 * 1000);
	atomic_store(&l.stop, 1);
	pthread_join(t, NULL);
	c = ledger_open();
	wait_drained(c, 180);
	atomic_store(&sm.stop, 1);
	pthread_join(ts, NULL);
	printf("%zu reservations sent, %zu reconnects; checkpoint: %zu samples, %zu advances, %zu moves "
	       "backwards; %zu of %d kills hit a backlog\n", l.set.n, l.reconnects, sm.samples,
	       sm.advances, sm.backwards, mid_batch, kills);
	CHECK_EQ_INT(sm.backwards, 0);
	CHECK(sm.advances > (size_t)kills);
	CHECK(mid_batch > 0);

	PGconn *pg = pg_open();
	verify_rows(pg, &l.set, like);
	verify_sums(c, pg, prefix, LOAD_SKUS);
	/* The checkpoint equals what the ledger made durable: PostgreSQL has all. */
	CHECK_EQ_INT(pg_int(pg, "SELECT count(*) FROM ledger_checkpoint WHERE lsn > 0", 0, NULL), nshards);
	PQfinish(pg);
	free(l.set.v);
	htab_free(&l.set.tab);
	ledger_client_close(c);
}

/* ---- scenario: adopt ------------------------------------------------------------------------ */

static int wait_known(LedgerClient **c, const char *sku, WireSku *out, int timeout_s)
{
	int64_t deadline = clock_mono_ns() + (int64_t)timeout_s * 1000000000;
	while (clock_mono_ns() < deadline) {
		if (get_sku(*c, sku, out) == 0)
			return 0;
		usleep(100000);
	}
	return -1;
}

static void reserve_expect(LedgerClient *c, const char *sku, const char *session, int32_t qty, uint8_t want)
{
	WireRequest q;
	WireResponse r;
	make_reserve(&q, sku, session, qty, 0);
	REQUIRE(ledger_client_call(c, &q, &r, TIMEOUT_MS) == 0);
	if (r.status != want) {
		fprintf(stderr, "reserve %d of %s: %s, want %s\n", qty, sku, wire_status_name(r.status),
			wire_status_name(want));
		check_failures++;
	}
}

static void scenario_adopt(void)
{
	static const char name[] = "Caf\xc3\xa9 \xe2\x98\x95 \"adopted\"";
	LedgerClient *c = ledger_open();
	PGconn *pg = pg_open();
	char tag[32], hup[48], start[48], bad[48];
	snprintf(tag, sizeof(tag), "%lld", (long long)clock_wall_ms());
	snprintf(hup, sizeof(hup), "wb-adopt-%s-hup", tag);
	snprintf(start, sizeof(start), "wb-adopt-%s-start", tag);
	snprintf(bad, sizeof(bad), "wb adopt %s bad!", tag);
	static const char ins[] =
		"INSERT INTO products (id, name, price_cents, stock, per_session_limit, max_per_order, "
		"reservation_ttl_s) VALUES ($1, $2, 500, $3, 0, 5, 300)";

	/* On SIGHUP. */
	const char *p1[3] = { hup, name, "7" };
	PQclear(pg_q(pg, ins, 3, p1));
	const char *p2[3] = { bad, "bad", "3" };
	PQclear(pg_q(pg, ins, 3, p2));
	WireSku w;
	CHECK(get_sku(c, hup, &w) != 0);
	REQUIRE(kill((pid_t)atoi(env_ledger_pid), SIGHUP) == 0);
	REQUIRE(wait_known(&c, hup, &w, 30) == 0);
	CHECK_EQ_INT(w.stock, 7);
	CHECK_EQ_INT(w.max_per_order, 5);
	CHECK_EQ_INT(w.price_cents, 500);
	CHECK(w.name_len == strlen(name) && memcmp(w.name, name, w.name_len) == 0);
	reserve_expect(c, hup, "adopt-1", 5, WIRE_CREATED);
	reserve_expect(c, hup, "adopt-2", 2, WIRE_CREATED);
	reserve_expect(c, hup, "adopt-3", 1, WIRE_SOLD_OUT);

	/* A known SKU is never overwritten by its row. */
	const char *ph[1] = { hup };
	PQclear(pg_q(pg, "UPDATE products SET stock = 1000, price_cents = 1 WHERE id = $1", 1, ph));
	REQUIRE(kill((pid_t)atoi(env_ledger_pid), SIGHUP) == 0);
	usleep(1500 * 1000);
	REQUIRE(get_sku(c, hup, &w) == 0);
	CHECK_EQ_INT(w.stock, 7);
	CHECK_EQ_INT(w.price_cents, 500);
	PQclear(pg_q(pg, "UPDATE products SET stock = 7, price_cents = 500 WHERE id = $1", 1, ph));

	/* At start, PostgreSQL up: inserted while the ledger is down. */
	ledger_client_close(c);
	REQUIRE(stack_cmd("ledger-kill") == 0);
	const char *p3[3] = { start, "", "4" };
	PQclear(pg_q(pg, ins, 3, p3));
	REQUIRE(stack_cmd("ledger-start") == 0);
	c = ledger_open();
	REQUIRE(wait_known(&c, start, &w, 30) == 0);
	CHECK_EQ_INT(w.stock, 4);
	reserve_expect(c, start, "adopt-4", 4, WIRE_CREATED);

	/* The bad row is skipped, with a warning, and does not stop the rest. */
	char sh[1200];
	snprintf(sh, sizeof(sh), "grep -q \"products row 'wb adopt %s bad!' is not adopted\" '%s/log/ledger.log'",
		 tag, stack_dir);
	CHECK(system(sh) == 0);
	const char *pb[1] = { bad };
	PQclear(pg_q(pg, "DELETE FROM products WHERE id = $1", 1, pb));

	/* Adopted SKUs and their sales reach PostgreSQL like any other. */
	wait_drained(c, 60);
	const char *ps[1] = { start };
	CHECK_EQ_INT(pg_int(pg, "SELECT count(*) FROM inventory_log WHERE sku_id = $1 AND quantity = 4", 1, ps), 1);
	CHECK_EQ_INT(pg_int(pg, "SELECT count(*) FROM inventory_log WHERE sku_id = $1", 1, ph), 2);
	CHECK_EQ_INT(pg_int(pg, "SELECT stock FROM products WHERE id = $1", 1, ph), 7);
	printf("adopt: SIGHUP and start-up adoption, no overwrite of known SKUs, bad rows skipped\n");
	PQfinish(pg);
	ledger_client_close(c);
}

/* ---- scenario: coldstart ------------------------------------------------------------------- */

static void scenario_coldstart(void)
{
	LedgerClient *c = ledger_open();
	PGconn *pg = pg_open();
	char tag[24], known[72], later[72], session[64];
	snprintf(tag, sizeof(tag), "%lld", (long long)clock_wall_ms());
	snprintf(known, sizeof(known), "wb-cold-%s-known", tag);
	snprintf(later, sizeof(later), "wb-cold-%s-later", tag);
	put_sku(c, known, 50, 3600, NULL, 0);
	wait_drained(c, 60);
	ledger_client_close(c);

	REQUIRE(stack_cmd("ledger-kill") == 0);
	const char *p1[1] = { later };
	PQclear(pg_q(pg, "INSERT INTO products (id, name, stock) VALUES ($1, 'later', 9)", 1, p1));
	PQfinish(pg);
	REQUIRE(stack_cmd("pg-stop") == 0);
	REQUIRE(stack_cmd("ledger-start") == 0);
	c = ledger_open();
	snprintf(session, sizeof(session), "cold-%s-1", tag);
	reserve_expect(c, known, session, 3, WIRE_CREATED); /* sells from its own WAL */
	WireSku w;
	CHECK(get_sku(c, later, &w) != 0);              /* not adopted yet */
	WireResponse st = stats(c);
	CHECK_EQ_INT(stat_value(&st, "writebehind_connected_shards"), 0);
	REQUIRE(stack_cmd("pg-start") == 0);
	REQUIRE(wait_known(&c, later, &w, 60) == 0);     /* adopted once reachable */
	CHECK_EQ_INT(w.stock, 9);
	snprintf(session, sizeof(session), "cold-%s-2", tag);
	reserve_expect(c, later, session, 2, WIRE_CREATED);
	wait_drained(c, 60);
	pg = pg_open();
	const char *p2[1] = { known };
	CHECK_EQ_INT(pg_int(pg, "SELECT count(*) FROM inventory_log WHERE sku_id = $1 AND quantity = 3", 1, p2), 1);
	CHECK_EQ_INT(pg_int(pg, "SELECT count(*) FROM inventory_log WHERE sku_id = $1 AND quantity = 2", 1, p1), 1);
	printf("coldstart: sold with PostgreSQL down at start; caught up and adopted once it was back\n");
	PQfinish(pg);
	ledger_client_close(c);
}

/* ---- scenario: audit ------------------------------------------------------------------------ */

static int run_audit(void)
{
	char sh[1200];
	snprintf(sh, sizeof(sh), "'%s/scripts/audit' '%s' --timeout 120", repo_dir, stack_dir);
	printf("+ scripts/audit\n");
	fflush(stdout);
	int rc = system(sh);
	return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static void scenario_audit(void)
{
	LedgerClient *c = ledger_open();
	char tag[24], prefix[40];
	snprintf(tag, sizeof(tag), "%lld", (long long)clock_wall_ms());
	snprintf(prefix, sizeof(prefix), "wb-aud-%s-", tag);
	Rng rng;
	rng_init_seeded(&rng, test_seed());

	/* A mixed workload: holds, confirms, releases, expiries, restocks. */
	ResSet s;
	resset_init(&s);
	s.n = 600;
	s.v = xcalloc(s.n, sizeof(Res));
	for (int i = 0; i < 6; i++) {
		char sku[72];
		snprintf(sku, sizeof(sku), "%s%d", prefix, i);
		put_sku(c, sku, 2000, i == 5 ? 1 : 3600, NULL, 0);
	}
	for (size_t i = 0; i < s.n; i++) {
		Res *r = &s.v[i];
		snprintf(r->sku, sizeof(r->sku), "%s%u", prefix, (unsigned)(rng_u64(&rng) % 6));
		snprintf(r->session, sizeof(r->session), "aud-%s-%zu", tag, i);
		r->quantity = (int32_t)(rng_u64(&rng) % 4) + 1;
		unsigned d = (unsigned)(rng_u64(&rng) % 3);
		r->want = d == 0 ? WIRE_RES_CONFIRMED : d == 1 ? WIRE_RES_RELEASED : WIRE_RES_RESERVED;
	}
	uint64_t next_id = 1;
	size_t refused = 0;
	for (size_t off = 0; off < s.n; off += CHUNK) {
		size_t n = s.n - off < CHUNK ? s.n - off : CHUNK;
		REQUIRE(reserve_batch(c, s.v + off, n, &next_id, &refused) == 0);
		REQUIRE(actions_batch(c, s.v + off, n, &next_id) == 0);
	}
	char sku0[72];
	snprintf(sku0, sizeof(sku0), "%s0", prefix);
	put_sku(c, sku0, 2500, 3600, "restocked", 0);
	usleep(2500 * 1000); /* the 1 s holds expire */
	CHECK_EQ_INT(run_audit(), 0);

	/* A hand edit of products.stock is a difference. */
	PGconn *pg = pg_open();
	const char *p[1] = { sku0 };
	PQclear(pg_q(pg, "UPDATE products SET stock = stock + 1 WHERE id = $1", 1, p));
	CHECK_EQ_INT(run_audit(), 1);
	PQclear(pg_q(pg, "UPDATE products SET stock = stock - 1 WHERE id = $1", 1, p));
	CHECK_EQ_INT(run_audit(), 0);
	PQfinish(pg);
	free(s.v);
	htab_free(&s.tab);
	ledger_client_close(c);
}

/* ---- scenario: pipeline ------------------------------------------------------------------ */

/* A Unix-socket proxy between the ledger and PostgreSQL ("tap") that counts,
 * on each write-behind connection (recognised by its application_name in the
 * startup packet), the round trips before each COMMIT: a round trip is a
 * reply from PostgreSQL after the ledger sent something. It reads the
 * server's messages (type byte, length) only to spot CommandComplete
 * "COMMIT". The first COMMIT of a connection also pays for connecting and
 * preparing, so it is not judged. PostgreSQL flushes its answers only at a
 * Sync (or past 8 KiB of them), so a batch sent as one pipeline is exactly
 * one round trip; BEGIN, checkpoint, rows and COMMIT sent one by one are four
 * or more. Counting messages, not time: the result does not depend on speed. */
typedef struct Tap {
	pthread_mutex_t mu;
	atomic_int stop;
	int lfd;
	char path[700], upstream[700];
	unsigned long writer_conns, judged, bad, max_turns;
	unsigned long commits;     /* every write-behind COMMIT, judged or not */
	pthread_t accept_thread;
} Tap;

typedef struct TapConn {
	Tap *tap;
	int cfd, sfd;
	int refs;                  /* the two forwarding threads */
	int writer;
	int client_spoke;          /* the ledger sent since PostgreSQL last answered */
	unsigned long turns, commits;
	uint8_t hdr[5];            /* the server message being read */
	size_t hdr_len, tag_len;
	uint32_t body_left;
	char tag[8];
} TapConn;

static Tap tap;

static int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t k = write(fd, p, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

static void tap_message_done(TapConn *c)
{
	Tap *t = c->tap;
	if (c->hdr[0] == 'C' && c->tag_len == 7 && memcmp(c->tag, "COMMIT", 7) == 0) {
		t->commits++;
		if (c->commits++ > 0) {
			t->judged++;
			if (c->turns != 1 && ++t->bad <= 5)
				fprintf(stderr, "a write-behind COMMIT took %lu round trips\n", c->turns);
			if (c->turns > t->max_turns)
				t->max_turns = c->turns;
		}
		c->turns = 0;
	}
	c->hdr_len = 0;
}

/* Follows the server's message stream (under tap.mu). */
static void tap_parse(TapConn *c, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (c->hdr_len < 5) {
			c->hdr[c->hdr_len++] = p[i];
			if (c->hdr_len == 5) {
				uint32_t len = (uint32_t)c->hdr[1] << 24 | (uint32_t)c->hdr[2] << 16 |
					       (uint32_t)c->hdr[3] << 8 | c->hdr[4];
				REQUIRE(len >= 4);
				c->body_left = len - 4;
				c->tag_len = 0;
				if (c->body_left == 0)
					tap_message_done(c);
			}
			continue;
		}
		if (c->hdr[0] == 'C' && c->tag_len < sizeof(c->tag))
			c->tag[c->tag_len++] = (char)p[i];
		if (--c->body_left == 0)
			tap_message_done(c);
	}
}

static void tap_conn_release(TapConn *c)
{
	pthread_mutex_lock(&tap.mu);
	int last = --c->refs == 0;
	pthread_mutex_unlock(&tap.mu);
	if (last) {
		close(c->cfd);
		close(c->sfd);
		free(c);
	}
}

static void *tap_up_main(void *arg) /* ledger -> PostgreSQL */
{
	TapConn *c = arg;
	uint8_t buf[65536];
	int first = 1;
	for (;;) {
		ssize_t n = read(c->cfd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		pthread_mutex_lock(&tap.mu);
		if (first && memmem(buf, (size_t)n, "rg-ledger write-behind", 22)) {
			c->writer = 1;
			tap.writer_conns++;
		}
		first = 0;
		c->client_spoke = 1;
		pthread_mutex_unlock(&tap.mu);
		if (write_all(c->sfd, buf, (size_t)n) != 0)
			break;
	}
	shutdown(c->sfd, SHUT_WR);
	tap_conn_release(c);
	return NULL;
}

static void *tap_down_main(void *arg) /* PostgreSQL -> ledger */
{
	TapConn *c = arg;
	uint8_t buf[65536];
	for (;;) {
		ssize_t n = read(c->sfd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		pthread_mutex_lock(&tap.mu);
		if (c->writer) {
			if (c->client_spoke)
				c->turns++;
			tap_parse(c, buf, (size_t)n);
		}
		c->client_spoke = 0;
		pthread_mutex_unlock(&tap.mu);
		if (write_all(c->cfd, buf, (size_t)n) != 0)
			break;
	}
	shutdown(c->cfd, SHUT_WR);
	tap_conn_release(c);
	return NULL;
}

static int unix_connect(const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	REQUIRE(strlen(path) < sizeof(a.sun_path));
	memcpy(a.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
		close(fd);
		fd = -1;
	}
	return fd;
}

static void *tap_accept_main(void *arg)
{
	(void)arg;
	while (!atomic_load(&tap.stop)) {
		struct pollfd pfd = { .fd = tap.lfd, .events = POLLIN };
		if (poll(&pfd, 1, 100) <= 0)
			continue;
		int cfd = accept4(tap.lfd, NULL, NULL, SOCK_CLOEXEC);
		if (cfd < 0)
			continue;
		int sfd = unix_connect(tap.upstream);
		if (sfd < 0) {
			close(cfd); /* PostgreSQL away: the ledger retries */
			continue;
		}
		TapConn *c = xcalloc(1, sizeof(*c));
		*c = (TapConn){ .tap = &tap, .cfd = cfd, .sfd = sfd, .refs = 2 };
		pthread_t t1, t2;
		REQUIRE(pthread_create(&t1, NULL, tap_up_main, c) == 0);
		REQUIRE(pthread_create(&t2, NULL, tap_down_main, c) == 0);
		pthread_detach(t1);
		pthread_detach(t2);
	}
	return NULL;
}

/* Reads the stack's config, or writes it back. */
static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	REQUIRE(f);
	char *s = xcalloc(1, 65536);
	size_t n = fread(s, 1, 65535, f);
	REQUIRE(n < 65535);
	fclose(f);
	return s;
}

static void spit(const char *path, const char *s)
{
	FILE *f = fopen(path, "w");
	REQUIRE(f);
	REQUIRE(fputs(s, f) >= 0);
	REQUIRE(fclose(f) == 0);
}

/* Lines of path containing what (0 when there is no file). */
static int count_in_file(const char *path, const char *what)
{
	FILE *f = fopen(path, "r");
	char line[4096];
	int n = 0;
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		n += strstr(line, what) != NULL;
	fclose(f);
	return n;
}

/* writebehind_delay_ms: under a steady trickle, a writer that has just
 * committed gathers for that long before the next COMMIT. 40 reservations,
 * each durable on its own, 6 ms apart: the first goes out at once, the rest
 * wait for the 300 ms to pass, so a handful of COMMITs; without the delay
 * every one would be its own. */
/* Restarts the ledger on the tapped config with writebehind_delay_ms =
 * delay_ms and returns a client once it is drained and has been quiet for
 * a second (so the next record goes out at once, the ones after it wait). */
static LedgerClient *restart_with_delay(const char *conf, const char *tapped, int delay_ms)
{
	char delayed[71000];
	const char *zero = strstr(tapped, "\nwritebehind_delay_ms = 0\n");
	REQUIRE(zero);
	snprintf(delayed, sizeof(delayed), "%.*s\nwritebehind_delay_ms = %d\n", (int)(zero - tapped),
		 tapped, delay_ms);
	REQUIRE(stack_cmd("ledger-kill") == 0);
	spit(conf, delayed);
	REQUIRE(stack_cmd("ledger-start") == 0);
	LedgerClient *c = ledger_open();
	wait_drained(c, 60);
	sleep(1);
	return c;
}

/* Reserves n units of the tag's first SKU one at a time, pause_us apart,
 * each for its own session "pipe-<tag>-<what>-<i>". Returns how many were
 * refused. */
static size_t reserve_one_by_one(LedgerClient *c, const char *tag, const char *what, int n,
				 useconds_t pause_us)
{
	uint64_t next_id = 1;
	size_t refused = 0;
	for (int i = 0; i < n; i++) {
		Res r;
		memset(&r, 0, sizeof(r));
		snprintf(r.sku, sizeof(r.sku), "wb-pipe-%s-0", tag);
		snprintf(r.session, sizeof(r.session), "pipe-%s-%s-%d", tag, what, i);
		r.quantity = 1;
		r.want = WIRE_RES_RESERVED;
		REQUIRE(reserve_batch(c, &r, 1, &next_id, &refused) == 0);
		usleep(pause_us);
	}
	return refused;
}

static void gathering(const char *conf, const char *tapped, const char *tag)
{
	LedgerClient *c = restart_with_delay(conf, tapped, 300);

	pthread_mutex_lock(&tap.mu);
	unsigned long commits_before = tap.commits;
	pthread_mutex_unlock(&tap.mu);
	int64_t started_ns = clock_mono_ns();
	size_t refused = reserve_one_by_one(c, tag, "gather", 40, 6000);
	int64_t sending_ms = (clock_mono_ns() - started_ns) / 1000000;
	wait_drained(c, 60);
	pthread_mutex_lock(&tap.mu);
	unsigned long commits = tap.commits - commits_before;
	pthread_mutex_unlock(&tap.mu);
	/* One commit per 300 ms window the sending spanned, plus the first
	 * record's (it goes out at once), a window cut by the end and a spare:
	 * ~3 on a fast disk, more where each reservation's fsync is slow.
	 * Without the gathering it would be close to 40. */
	unsigned long bound = (unsigned long)(sending_ms / 300) + 4;
	printf("gathering: 40 reservations one by one over %lld ms reached PostgreSQL in %lu "
	       "COMMIT(s) (writebehind_delay_ms = 300, at most %lu expected)\n",
	       (long long)sending_ms, commits, bound);
	CHECK_EQ_INT(refused, 0);
	CHECK(commits >= 1 && commits <= bound && commits < 20);
	ledger_client_close(c);
}

/* Whether pid still runs: a zombie whose last thread has exited is gone. */
static int pid_running(long pid)
{
	char path[64], stat[512];
	snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	size_t n = fread(stat, 1, sizeof(stat) - 1, f);
	fclose(f);
	stat[n] = '\0';
	const char *st = strrchr(stat, ')');
	if (!st || (st[2] != 'Z' && st[2] != 'X'))
		return 1;
	snprintf(path, sizeof(path), "/proc/%ld/task", pid);
	int tasks = 0;
	DIR *d = opendir(path);
	for (struct dirent *de; d && (de = readdir(d));)
		tasks += de->d_name[0] != '.';
	if (d)
		closedir(d);
	return tasks > 1;
}

/* SIGTERM while the write-behind gathers a long window (10 s): the ledger
 * stops at once, and what the writer held reaches PostgreSQL first. */
static void stop_while_gathering(const char *conf, const char *tapped, const char *tag)
{
	char session[64];
	LedgerClient *c = restart_with_delay(conf, tapped, 10000);
	size_t refused = reserve_one_by_one(c, tag, "stop", 2, 200000);
	ledger_client_close(c);
	long pid = atol(env_ledger_pid);
	REQUIRE(pid > 1);
	int64_t t0 = clock_mono_ns();
	REQUIRE(kill((pid_t)pid, SIGTERM) == 0);
	while (pid_running(pid) && clock_mono_ns() - t0 < 30 * 1000000000LL)
		usleep(10000);
	int64_t took_ms = (clock_mono_ns() - t0) / 1000000;
	printf("stop while gathering: the ledger exited %lld ms after SIGTERM "
	       "(writebehind_delay_ms = 10000)\n", (long long)took_ms);
	CHECK(!pid_running(pid));
	CHECK(took_ms < 5000); /* it used to sleep out the window */

	PGconn *pg = pg_open();
	snprintf(session, sizeof(session), "pipe-%s-stop-1", tag);
	const char *p[] = { session };
	CHECK_EQ_INT(pg_int(pg, "SELECT count(*) FROM inventory_log WHERE user_session_id = $1", 1, p),
		     1);
	PQfinish(pg);
	CHECK_EQ_INT(refused, 0);
	REQUIRE(stack_cmd("ledger-start") == 0);
}

static void scenario_pipeline(void)
{
	char dir[600], conf[600], tag[24], like[64];
	snprintf(dir, sizeof(dir), "%s/pipeline-tap", stack_dir);
	snprintf(conf, sizeof(conf), "%s/revenue-guard.conf", stack_dir);
	snprintf(tag, sizeof(tag), "%lld", (long long)clock_wall_ms());
	snprintf(like, sizeof(like), "wb-pipe-%s-%%", tag);

	/* The tap, where the ledger will look for PostgreSQL's socket. */
	REQUIRE(mkdir(dir, 0755) == 0 || errno == EEXIST);
	pthread_mutex_init(&tap.mu, NULL);
	atomic_init(&tap.stop, 0);
	snprintf(tap.path, sizeof(tap.path), "%s/.s.PGSQL.%s", dir, env_pgport);
	snprintf(tap.upstream, sizeof(tap.upstream), "%s/.s.PGSQL.%s", env_pghost, env_pgport);
	unlink(tap.path);
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	REQUIRE(strlen(tap.path) < sizeof(a.sun_path));
	memcpy(a.sun_path, tap.path, strlen(tap.path) + 1);
	tap.lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	REQUIRE(tap.lfd >= 0 && bind(tap.lfd, (struct sockaddr *)&a, sizeof(a)) == 0);
	REQUIRE(chmod(tap.path, 0777) == 0 && listen(tap.lfd, 16) == 0);
	REQUIRE(pthread_create(&tap.accept_thread, NULL, tap_accept_main, NULL) == 0);

	/* The ledger, restarted to write behind through the tap. */
	char *orig = slurp(conf), *tapped = xcalloc(1, 70000);
	char *line = strstr(orig, "\npg_conninfo = ");
	REQUIRE(line);
	char *eol = strchr(line + 1, '\n');
	REQUIRE(eol);
	/* writebehind_delay_ms = 0: batches as small as they come, more COMMITs
	 * to judge. */
	snprintf(tapped, 70000, "%.*s\npg_conninfo = \"host=%s port=%s dbname=%s user=%s\"%s"
		 "\nwritebehind_delay_ms = 0\n",
		 (int)(line - orig), orig, dir, env_pgport, env_pgdb, env_pguser, eol);
	REQUIRE(stack_cmd("ledger-kill") == 0);
	spit(conf, tapped);
	REQUIRE(stack_cmd("ledger-start") == 0);
	LedgerClient *c = ledger_open();

	/* Batches of every kind (products, reservations, status changes) until
	 * enough COMMITs were judged. */
	ResSet set;
	resset_init(&set);
	uint64_t next_id = 1;
	size_t refused = 0;
	for (int i = 0; i < 4; i++) {
		char sku[72];
		snprintf(sku, sizeof(sku), "wb-pipe-%s-%d", tag, i);
		put_sku(c, sku, 1000000, 3600, "pipeline", 100);
	}
	int64_t deadline = clock_mono_ns() + 60LL * 1000000000;
	for (int round = 0;; round++) {
		pthread_mutex_lock(&tap.mu);
		unsigned long judged = tap.judged;
		pthread_mutex_unlock(&tap.mu);
		if (judged >= 30)
			break;
		if (clock_mono_ns() > deadline) {
			fprintf(stderr, "only %lu write-behind COMMITs went through the tap in 60 s\n", judged);
			check_failures++;
			break;
		}
		char sku[72];
		snprintf(sku, sizeof(sku), "wb-pipe-%s-%d", tag, round % 4);
		put_sku(c, sku, 1000000, 3600, "pipeline", 100 + round);
		if (set.n + 8 > set.cap) {
			set.cap = set.cap ? 2 * set.cap : 256;
			set.v = xrealloc(set.v, set.cap * sizeof(Res));
		}
		Res *rs = &set.v[set.n];
		memset(rs, 0, 8 * sizeof(Res));
		for (int i = 0; i < 8; i++) {
			snprintf(rs[i].sku, sizeof(rs[i].sku), "wb-pipe-%s-%d", tag, (round + i) % 4);
			snprintf(rs[i].session, sizeof(rs[i].session), "pipe-%s-%d-%d", tag, round, i);
			rs[i].quantity = 1 + i % 3;
			rs[i].want = i % 3 == 0 ? WIRE_RES_CONFIRMED : i % 3 == 1 ? WIRE_RES_RELEASED
										     : WIRE_RES_RESERVED;
		}
		set.n += 8;
		REQUIRE(reserve_batch(c, rs, 8, &next_id, &refused) == 0);
		REQUIRE(actions_batch(c, rs, 8, &next_id) == 0);
		usleep(20000); /* let most batches commit separately: more COMMITs judged */
	}
	wait_drained(c, 60);

	/* A checkpoint moved behind the writer's back (as by another writer):
	 * the advance inside the pipeline must fail, be recognised as such
	 * (-ESTALE: "no longer at lsn" in the log) and the batch, rolled back,
	 * must be applied again from PostgreSQL's checkpoint. */
	char log_path[700];
	snprintf(log_path, sizeof(log_path), "%s/log/ledger.log", stack_dir);
	int stale_before = count_in_file(log_path, "is no longer at lsn");
	PGconn *pg = pg_open();
	PQclear(pg_q(pg, "UPDATE ledger_checkpoint SET lsn = lsn - 1 WHERE lsn > 0", 0, NULL));
	deadline = clock_mono_ns() + 60LL * 1000000000;
	for (int round = 0; count_in_file(log_path, "is no longer at lsn") == stale_before; round++) {
		REQUIRE(clock_mono_ns() < deadline);
		if (set.n + 4 > set.cap) {
			set.cap = 2 * set.cap;
			set.v = xrealloc(set.v, set.cap * sizeof(Res));
		}
		Res *rs = &set.v[set.n];
		memset(rs, 0, 4 * sizeof(Res));
		for (int i = 0; i < 4; i++) {
			snprintf(rs[i].sku, sizeof(rs[i].sku), "wb-pipe-%s-%d", tag, i);
			snprintf(rs[i].session, sizeof(rs[i].session), "pipe-%s-stale-%d-%d", tag, round, i);
			rs[i].quantity = 1;
			rs[i].want = WIRE_RES_RESERVED;
		}
		set.n += 4;
		REQUIRE(reserve_batch(c, rs, 4, &next_id, &refused) == 0);
		usleep(50000);
	}
	printf("pipeline: a moved checkpoint was noticed and the writer resynchronised\n");
	wait_drained(c, 60);
	CHECK_EQ_INT(refused, 0);
	verify_rows(pg, &set, like);
	PQfinish(pg);
	ledger_client_close(c);

	pthread_mutex_lock(&tap.mu);
	printf("pipeline: %lu write-behind connection(s) through the tap, %lu COMMITs judged, %lu of "
	       "them after more than one round trip (most: %lu)\n", tap.writer_conns, tap.judged,
	       tap.bad, tap.max_turns);
	CHECK(tap.writer_conns >= 1);
	CHECK(tap.judged >= 30);
	CHECK_EQ_INT(tap.bad, 0);
	pthread_mutex_unlock(&tap.mu);
	gathering(conf, tapped, tag);
	stop_while_gathering(conf, tapped, tag);

	/* Back to the stack as it was. */
	REQUIRE(stack_cmd("ledger-kill") == 0);
	spit(conf, orig);
	REQUIRE(stack_cmd("ledger-start") == 0);
	c = ledger_open();
	wait_drained(c, 60);
	ledger_client_close(c);
	atomic_store(&tap.stop, 1);
	pthread_join(tap.accept_thread, NULL);
	close(tap.lfd);
	unlink(tap.path);
	free(orig);
	free(tapped);
	free(set.v);
	htab_free(&set.tab);
}

int main(int argc, char **argv)
{
	const char *dir = getenv("RG_STACK_DIR"), *repo = getenv("RG_REPO_DIR");
	if (argc != 2 || !dir || !repo) {
		fprintf(stderr, "usage: RG_STACK_DIR=DIR RG_REPO_DIR=REPO test_writebehind "
			"arrays|basic|outage|kill|adopt|coldstart|audit|pipeline\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	snprintf(stack_dir, sizeof(stack_dir), "%s", dir);
	snprintf(repo_dir, sizeof(repo_dir), "%s", repo);
	load_env();
	signal(SIGPIPE, SIG_IGN);

	const char *what = argv[1];
	if (strcmp(what, "arrays") == 0)
		scenario_arrays();
	else if (strcmp(what, "basic") == 0)
		scenario_basic();
	else if (strcmp(what, "outage") == 0)
		scenario_outage();
	else if (strcmp(what, "kill") == 0)
		scenario_kill();
	else if (strcmp(what, "adopt") == 0)
		scenario_adopt();
	else if (strcmp(what, "coldstart") == 0)
		scenario_coldstart();
	else if (strcmp(what, "audit") == 0)
		scenario_audit();
	else if (strcmp(what, "pipeline") == 0)
		scenario_pipeline();
	else {
		fprintf(stderr, "unknown scenario %s\n", what);
		return 2;
	}
	return check_exit();
}
