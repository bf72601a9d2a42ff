/* rg_ctl.c — rg-ctl, the operator's command line over the ledger socket.
 *
 *   rg-ctl [--socket PATH | --config FILE] [--timeout-ms N] COMMAND
 *
 * One connection, one command, plain "key value" lines on stdout (easy to
 * grep and diff), reasons on stderr. The socket is --socket, else the
 * ledger_socket of --config FILE, else of the defaults with RG_* environment
 * overrides (RG_LEDGER_SOCKET) — the same lookup the daemons do.
 *
 * DESIGN. Everything goes through the public wire ops, so rg-ctl can do
 * nothing a worker could not, except the admin ops (SHARD_STATS, SNAPSHOT,
 * AUDIT) that exist for it. The exit code is the contract for scripts:
 *   0  done
 *   1  the ledger answered but refused or found nothing (unknown SKU or
 *      reservation, stock below committed, audit found a broken invariant,
 *      a snapshot that did not reach the disk in time)
 *   2  usage: unknown command, bad argument (checked before connecting)
 *   3  the ledger cannot be reached (no socket, refused, timed out, lost)
 *
 * audit asks each shard to recompute every SKU's reserved count from its
 * live holds and to check reserved + sold <= stock (book_check_all, the
 * check recovery runs). It checks the ledger against itself; whether
 * PostgreSQL agrees with the ledger is scripts/audit's job. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cfg.h"
#include "common/clock.h"
#include "common/ledger_client.h"
#include "common/resid.h"
#include "common/wire.h"

#define EXIT_REFUSED 1
#define EXIT_USAGE 2
#define EXIT_UNREACHABLE 3
#define SNAPSHOT_WAIT_MS 30000
#define POLL_MS 20

typedef struct Ctl {
	LedgerClient *client;
	int timeout_ms;
} Ctl;

static void usage(FILE *out)
{
	fprintf(out,
		"usage: rg-ctl [--socket PATH | --config FILE] [--timeout-ms N] COMMAND\n"
		"\n"
		"commands:\n"
		"  stats                          the ledger's figures, then each shard's (shard.K.name)\n"
		"  sku get ID                     one SKU: stock, reserved, sold, available, settings\n"
		"  sku put ID [--stock N] [--per-session-limit N] [--max-per-order N] [--ttl S]\n"
		"             [--price-cents N] [--name TEXT]\n"
		"                                 create (needs --stock) or change a SKU\n"
		"  reservation get ID --session S one reservation (the ledger shows it only to its session)\n"
		"  snapshot now                   every shard writes a snapshot; waits until on disk\n"
		"  writebehind status             each shard's PostgreSQL writer: connected, lag, errors\n"
		"  audit                          each shard rechecks every SKU's counters against its holds\n"
		"\n"
		"The socket: --socket, else ledger_socket of --config FILE, else the default\n"
		"or RG_LEDGER_SOCKET. --timeout-ms bounds each answer (default 10000).\n"
		"exit: 0 ok, 1 refused or not found, 2 usage, 3 cannot reach the ledger\n");
}

static int usage_error(const char *fmt, const char *arg)
{
	fprintf(stderr, "rg-ctl: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n(rg-ctl --help for usage)\n");
	return EXIT_USAGE;
}

/* Parses a decimal in [lo, hi]; returns 0 or -1. */
static int parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out)
{
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (!*s || *end || errno || v < lo || v > hi)
		return -1;
	*out = v;
	return 0;
}

/* One request, one answer. Returns 0 or EXIT_UNREACHABLE (reason printed). */
static int call(Ctl *ctl, WireRequest *req, WireResponse *resp)
{
	int rc = ledger_client_call(ctl->client, req, resp, ctl->timeout_ms);
	if (rc != 0) {
		fprintf(stderr, "rg-ctl: the ledger did not answer %s: %s\n", wire_op_name(req->op),
			strerror(-rc));
		return EXIT_UNREACHABLE;
	}
	return 0;
}

static int refused(const WireResponse *resp, const char *what)
{
	fprintf(stderr, "rg-ctl: %s: %s\n", what, wire_status_name(resp->status));
	return EXIT_REFUSED;
}

static void print_stats(const WireResponse *resp, const char *prefix)
{
	for (unsigned i = 0; i < resp->u.stats.count; i++)
		printf("%s%s %" PRIu64 "\n", prefix, resp->u.stats.item[i].name,
		       resp->u.stats.item[i].value);
}

static int shard_stats(Ctl *ctl, unsigned k, WireResponse *resp)
{
	WireRequest req = { .op = WIRE_OP_SHARD_STATS, .shard = (uint16_t)k };
	int rc = call(ctl, &req, resp);
	if (rc)
		return rc;
	return resp->status == WIRE_OK ? 0 : refused(resp, "shard stats");
}

static void print_sku(const WireSku *s)
{
	printf("sku %s\nstock %" PRId64 "\nreserved %" PRId64 "\nsold %" PRId64 "\navailable %" PRId64
	       "\nprice_cents %" PRId64 "\nper_session_limit %d\nmax_per_order %d\n"
	       "reservation_ttl_s %d\nname %s\n",
	       s->sku, s->stock, s->reserved, s->sold, s->stock - s->reserved - s->sold,
	       s->price_cents, s->per_session_limit, s->max_per_order, s->reservation_ttl_s,
	       s->name);
}

/* ---- commands ------------------------------------------------------------------- */

static int cmd_stats(Ctl *ctl)
{
	WireRequest req = { .op = WIRE_OP_STATS };
	WireResponse resp;
	int rc = call(ctl, &req, &resp);
	if (rc)
		return rc;
	if (resp.status != WIRE_OK)
		return refused(&resp, "stats");
	print_stats(&resp, "");
	for (unsigned k = 0; k < ledger_client_shards(ctl->client); k++) {
		char prefix[32];
		if ((rc = shard_stats(ctl, k, &resp)) != 0)
			return rc;
		snprintf(prefix, sizeof(prefix), "shard.%u.", k);
		print_stats(&resp, prefix);
	}
	return 0;
}

static int cmd_sku_get(Ctl *ctl, const char *id)
{
	WireRequest req = { .op = WIRE_OP_GET_SKU };
	WireResponse resp;
	wire_set_str(req.sku, &req.sku_len, id, strlen(id), WIRE_SKU_MAX);
	int rc = call(ctl, &req, &resp);
	if (rc)
		return rc;
	if (resp.status != WIRE_OK)
		return refused(&resp, id);
	print_sku(&resp.u.sku);
	return 0;
}

/* The settings of "sku put" into req; returns 0 or EXIT_USAGE (printed). */
static int parse_put(WireRequest *req, const char *id, int argc, char **argv)
{
	WireSkuSettings *s = &req->settings;

	req->op = WIRE_OP_PUT_SKU;
	for (int i = 0; i < argc; i++) {
		const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
		int64_t v;
		if (!val)
			return usage_error("%s needs a value", opt);
		i++;
		if (strcmp(opt, "--stock") == 0) {
			if (parse_i64(val, 0, WIRE_STOCK_MAX, &v) != 0)
				return usage_error("--stock: '%s' is not an integer 0..2147483647", val);
			s->fields |= WIRE_SKU_HAS_STOCK;
			s->stock = v;
		} else if (strcmp(opt, "--per-session-limit") == 0) {
			if (parse_i64(val, 0, INT32_MAX, &v) != 0)
				return usage_error("--per-session-limit: '%s' is not an integer >= 0 (0: none)", val);
			s->fields |= WIRE_SKU_HAS_SESSION_LIMIT;
			s->per_session_limit = (int32_t)v;
		} else if (strcmp(opt, "--max-per-order") == 0) {
			if (parse_i64(val, 1, INT32_MAX, &v) != 0)
				return usage_error("--max-per-order: '%s' is not an integer >= 1", val);
			s->fields |= WIRE_SKU_HAS_MAX_PER_ORDER;
			s->max_per_order = (int32_t)v;
		} else if (strcmp(opt, "--ttl") == 0) {
			if (parse_i64(val, 1, WIRE_TTL_MAX_S, &v) != 0)
				return usage_error("--ttl: '%s' is not a number of seconds 1..604800", val);
			s->fields |= WIRE_SKU_HAS_TTL;
			s->reservation_ttl_s = (int32_t)v;
		} else if (strcmp(opt, "--price-cents") == 0) {
			if (parse_i64(val, 0, WIRE_PRICE_MAX, &v) != 0)
				return usage_error("--price-cents: '%s' is out of range", val);
			s->fields |= WIRE_SKU_HAS_PRICE;
			s->price_cents = v;
		} else if (strcmp(opt, "--name") == 0) {
			if (!wire_name_valid(val, strlen(val)))
				return usage_error("--name: '%s' is too long or has control characters", val);
			s->fields |= WIRE_SKU_HAS_NAME;
			wire_set_str(s->name, &s->name_len, val, strlen(val), WIRE_NAME_MAX);
		} else {
			return usage_error("sku put: unknown option %s", opt);
		}
	}
	if (!s->fields)
		return usage_error("sku put %s: give at least one setting (e.g. --stock N)", id);
	wire_set_str(req->sku, &req->sku_len, id, strlen(id), WIRE_SKU_MAX);
	return 0;
}

static int cmd_sku_put(Ctl *ctl, WireRequest *req, const char *id)
{
	WireResponse resp;
	int rc = call(ctl, req, &resp);
	if (rc)
		return rc;
	if (resp.status == WIRE_STOCK_BELOW_COMMITTED) {
		fprintf(stderr, "rg-ctl: %s: stock_below_committed (reserved %" PRId64 " + sold %" PRId64
			" > the stock asked for)\n", id, resp.u.sku.reserved, resp.u.sku.sold);
		return EXIT_REFUSED;
	}
	if (resp.status == WIRE_MISSING_STOCK) {
		fprintf(stderr, "rg-ctl: %s: missing_stock (a new SKU needs --stock)\n", id);
		return EXIT_REFUSED;
	}
	if (resp.status != WIRE_OK && resp.status != WIRE_CREATED)
		return refused(&resp, id);
	printf("result %s\n", resp.status == WIRE_CREATED ? "created" : "updated");
	print_sku(&resp.u.sku);
	return 0;
}

static int cmd_reservation_get(Ctl *ctl, const char *id, const char *session)
{
	WireRequest req = { .op = WIRE_OP_GET_RESERVATION };
	WireResponse resp;
	char text[RESID_TEXT_LEN + 1];

	if (resid_parse(id, strlen(id), &req.reservation) != 0)
		return usage_error("reservation id '%s' is not 32 hex digits", id);
	wire_set_str(req.session, &req.session_len, session, strlen(session), WIRE_SESSION_MAX);
	int rc = call(ctl, &req, &resp);
	if (rc)
		return rc;
	if (resp.status != WIRE_OK)
		return refused(&resp, id);
	const WireReservation *r = &resp.u.reservation;
	resid_format(&r->id, text);
	printf("reservation_id %s\nsku %s\nsession %s\nquantity %d\nstatus %s\n"
	       "created_ms %" PRId64 "\nexpires_ms %" PRId64 "\navailable %" PRId64 "\n",
	       text, r->sku, r->session, r->quantity, wire_res_state_name(r->state), r->created_ms,
	       r->expires_ms, r->available);
	return 0;
}

static void sleep_ms(int ms)
{
	poll(NULL, 0, ms);
}

/* Each shard serialises its book (retrying while its previous snapshot is
 * still being written), then we wait until the snapshot on disk covers the
 * LSN it answered. */
static int cmd_snapshot_now(Ctl *ctl)
{
	unsigned n = ledger_client_shards(ctl->client);
	int64_t deadline = clock_mono_ns() + (int64_t)SNAPSHOT_WAIT_MS * 1000000;

	for (unsigned k = 0; k < n; k++) {
		WireRequest req = { .op = WIRE_OP_SNAPSHOT, .shard = (uint16_t)k };
		WireResponse resp;
		uint64_t lsn;
		int rc;
		for (;;) {
			req.id = 0;
			if ((rc = call(ctl, &req, &resp)) != 0)
				return rc;
			if (resp.status != WIRE_BUSY || clock_mono_ns() > deadline)
				break;
			sleep_ms(POLL_MS);
		}
		if (resp.status != WIRE_OK)
			return refused(&resp, "snapshot");
		lsn = wire_stat_value(&resp, "lsn");
		for (;;) {
			if ((rc = shard_stats(ctl, k, &resp)) != 0)
				return rc;
			if (wire_stat_value(&resp, "snapshot_lsn") >= lsn)
				break;
			if (clock_mono_ns() > deadline) {
				fprintf(stderr, "rg-ctl: shard %u: the snapshot at lsn %" PRIu64
					" is not on disk after %d s\n", k, lsn, SNAPSHOT_WAIT_MS / 1000);
				return EXIT_REFUSED;
			}
			sleep_ms(POLL_MS);
		}
		printf("shard.%u.snapshot_lsn %" PRIu64 "\n", k, lsn);
	}
	return 0;
}

static int cmd_writebehind_status(Ctl *ctl)
{
	/* shown name, SHARD_STATS name */
	static const char *const keys[][2] = {
		{ "connected", "writebehind_connected" },
		{ "applied_lsn", "writebehind_applied_lsn" },
		{ "last_lsn", "last_lsn" },
		{ "lag_records", "writebehind_lag_records" },
		{ "lag_ms", "writebehind_lag_ms" },
		{ "errors", "writebehind_errors" },
	};
	unsigned n = ledger_client_shards(ctl->client), connected = 0;

	for (unsigned k = 0; k < n; k++) {
		WireResponse resp;
		int rc = shard_stats(ctl, k, &resp);
		if (rc)
			return rc;
		for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
			printf("shard.%u.%s %" PRIu64 "\n", k, keys[i][0],
			       wire_stat_value(&resp, keys[i][1]));
		connected += wire_stat_value(&resp, "writebehind_connected") != 0;
	}
	printf("connected_shards %u\nshards %u\n", connected, n);
	return 0;
}

static int cmd_audit(Ctl *ctl)
{
	unsigned n = ledger_client_shards(ctl->client), broken = 0;
	uint64_t skus = 0, stock = 0, reserved = 0, sold = 0, holds = 0;

	for (unsigned k = 0; k < n; k++) {
		WireRequest req = { .op = WIRE_OP_AUDIT, .shard = (uint16_t)k };
		WireResponse resp;
		int rc = call(ctl, &req, &resp);
		if (rc)
			return rc;
		if (resp.status == WIRE_AUDIT_FAILED) {
			printf("shard.%u.audit failed\n", k);
			fprintf(stderr, "rg-ctl: shard %u: a broken invariant (the ledger's log says "
				"which)\n", k);
			broken++;
			continue;
		}
		if (resp.status != WIRE_OK)
			return refused(&resp, "audit");
		printf("shard.%u.audit ok\n", k);
		skus += wire_stat_value(&resp, "skus");
		stock += wire_stat_value(&resp, "stock");
		reserved += wire_stat_value(&resp, "reserved");
		sold += wire_stat_value(&resp, "sold");
		holds += wire_stat_value(&resp, "holds_active");
	}
	printf("skus %" PRIu64 "\nstock %" PRIu64 "\nreserved %" PRIu64 "\nsold %" PRIu64
	       "\nholds_active %" PRIu64 "\nbroken_shards %u\n", skus, stock, reserved, sold, holds,
	       broken);
	return broken ? EXIT_REFUSED : 0;
}

/* ---- main ------------------------------------------------------------------------ */

typedef enum Cmd {
	CMD_STATS, CMD_SKU_GET, CMD_SKU_PUT, CMD_RES_GET, CMD_SNAPSHOT, CMD_WB_STATUS, CMD_AUDIT,
} Cmd;

int main(int argc, char **argv)
{
	const char *socket_path = NULL, *config = NULL, *session = NULL, *id = NULL;
	int64_t timeout_ms = 10000;
	char err[512];
	Config cfg;
	WireRequest put = { 0 };
	int i = 1;
	Cmd cmd;

	for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
		const char *opt = argv[i];
		if (strcmp(opt, "--help") == 0 || strcmp(opt, "-h") == 0) {
			usage(stdout);
			return 0;
		}
		if (i + 1 >= argc)
			return usage_error("%s needs a value", opt);
		if (strcmp(opt, "--socket") == 0)
			socket_path = argv[++i];
		else if (strcmp(opt, "--config") == 0)
			config = argv[++i];
		else if (strcmp(opt, "--timeout-ms") == 0) {
			if (parse_i64(argv[++i], 1, 3600000, &timeout_ms) != 0)
				return usage_error("--timeout-ms: '%s' is not 1..3600000", argv[i]);
		} else
			return usage_error("unknown option %s", opt);
	}
	if (socket_path && config)
		return usage_error("%s", "give --socket or --config, not both");

	/* The command and its arguments, all checked before connecting. */
	int left = argc - i;
	char **a = argv + i;
	if (left == 1 && strcmp(a[0], "stats") == 0) {
		cmd = CMD_STATS;
	} else if (left == 3 && strcmp(a[0], "sku") == 0 && strcmp(a[1], "get") == 0) {
		cmd = CMD_SKU_GET;
		id = a[2];
	} else if (left >= 3 && strcmp(a[0], "sku") == 0 && strcmp(a[1], "put") == 0) {
		cmd = CMD_SKU_PUT;
		id = a[2];
		if (!wire_sku_valid(id, strlen(id)))
			return usage_error("sku '%s': 1-64 characters of A-Z a-z 0-9 . _ : -", id);
		int urc = parse_put(&put, id, left - 3, a + 3);
		if (urc)
			return urc;
	} else if (left == 5 && strcmp(a[0], "reservation") == 0 && strcmp(a[1], "get") == 0 &&
		   strcmp(a[3], "--session") == 0) {
		cmd = CMD_RES_GET;
		id = a[2];
		session = a[4];
		ResId probe;
		if (resid_parse(id, strlen(id), &probe) != 0)
			return usage_error("reservation id '%s' is not 32 hex digits", id);
		if (!wire_session_valid(session, strlen(session)))
			return usage_error("--session '%s': 1-128 printable characters, no spaces", session);
	} else if (left == 2 && strcmp(a[0], "snapshot") == 0 && strcmp(a[1], "now") == 0) {
		cmd = CMD_SNAPSHOT;
	} else if (left == 2 && strcmp(a[0], "writebehind") == 0 && strcmp(a[1], "status") == 0) {
		cmd = CMD_WB_STATUS;
	} else if (left == 1 && strcmp(a[0], "audit") == 0) {
		cmd = CMD_AUDIT;
	} else {
		if (left == 0)
			return usage_error("%s", "no command given");
		return usage_error("unknown command or wrong arguments: %s", a[0]);
	}
	if (cmd == CMD_SKU_GET && !wire_sku_valid(id, strlen(id)))
		return usage_error("sku '%s': 1-64 characters of A-Z a-z 0-9 . _ : -", id);

	if (!socket_path) {
		int rc = cfg_load(&cfg, config, err, sizeof(err));
		if (rc != 0) {
			if (rc == -EINVAL)
				fprintf(stderr, "rg-ctl: %s\n", err);
			else
				fprintf(stderr, "rg-ctl: cannot read %s: %s\n", config, strerror(-rc));
			return EXIT_USAGE;
		}
		socket_path = cfg.ledger_socket;
	}

	Ctl ctl = { .timeout_ms = (int)timeout_ms };
	int rc = ledger_client_connect(socket_path, ctl.timeout_ms, &ctl.client);
	if (rc != 0) {
		fprintf(stderr, "rg-ctl: cannot reach the ledger at %s: %s\n", socket_path,
			strerror(-rc));
		return EXIT_UNREACHABLE;
	}
	switch (cmd) {
	case CMD_STATS: rc = cmd_stats(&ctl); break;
	case CMD_SKU_GET: rc = cmd_sku_get(&ctl, id); break;
	case CMD_SKU_PUT: rc = cmd_sku_put(&ctl, &put, id); break;
	case CMD_RES_GET: rc = cmd_reservation_get(&ctl, id, session); break;
	case CMD_SNAPSHOT: rc = cmd_snapshot_now(&ctl); break;
	case CMD_WB_STATUS: rc = cmd_writebehind_status(&ctl); break;
	case CMD_AUDIT: rc = cmd_audit(&ctl); break;
	}
	ledger_client_close(ctl.client);
	return rc;
}
