/* test_rg_ctl.c — rg-ctl against a real rg-ledger: every subcommand and
 * every exit code (0 ok, 1 refused / not found, 2 usage, 3 unreachable).
 *
 * A two-shard ledger gets a SKU and a hold through the ledger client, then
 * rg-ctl must show and change them: sku put/get, reservation get (only to
 * its own session), stats with per-shard histograms that add up, snapshot
 * now (the snapshot file must be on disk and cover the newest LSN when it
 * returns), audit totals that equal what was sold and held, writebehind
 * status. Bad arguments must be refused before any connection (exit 2 even
 * with no ledger); a dead ledger is exit 3. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "common/ledger_client.h"
#include "common/resid.h"
#include "ledger_proc.h"

#define TIMEOUT_MS 10000
#define OUT_MAX 65536

static const char *ctl_bin;
static char out[OUT_MAX];

/* Runs rg-ctl with the NULL-terminated arguments; its stdout lands in out.
 * Returns its exit status. */
static int ctl(const char *arg, ...)
{
	const char *argv[32];
	int argc = 0, fds[2], status;
	va_list ap;

	argv[argc++] = ctl_bin;
	va_start(ap, arg);
	for (const char *a = arg; a && argc < 31; a = va_arg(ap, const char *))
		argv[argc++] = a;
	va_end(ap);
	argv[argc] = NULL;
	REQUIRE(pipe(fds) == 0);
	pid_t pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		dup2(fds[1], 1);
		close(fds[0]);
		close(fds[1]);
		execv(ctl_bin, (char *const *)argv);
		_exit(127);
	}
	close(fds[1]);
	size_t len = 0;
	ssize_t n;
	while ((n = read(fds[0], out + len, sizeof(out) - 1 - len)) > 0)
		len += (size_t)n;
	out[len] = '\0';
	close(fds[0]);
	REQUIRE(waitpid(pid, &status, 0) == pid);
	REQUIRE(WIFEXITED(status));
	return WEXITSTATUS(status);
}

/* The value of "key value" in out, or -1 when the line is missing. */
static long long value_of(const char *key)
{
	size_t klen = strlen(key);
	for (const char *p = out; *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : p + strlen(p)) {
		if (strncmp(p, key, klen) == 0 && p[klen] == ' ')
			return atoll(p + klen + 1);
	}
	return -1;
}

static int has_line(const char *line)
{
	size_t len = strlen(line);
	for (const char *p = out; *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : p + strlen(p))
		if (strncmp(p, line, len) == 0 && (p[len] == '\n' || p[len] == '\0'))
			return 1;
	return 0;
}

/* Sum of shard.K.<prefix>* values in out. */
static long long sum_prefix(unsigned k, const char *prefix)
{
	char want[64];
	long long sum = 0;
	snprintf(want, sizeof(want), "shard.%u.%s", k, prefix);
	for (const char *p = out; *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : p + strlen(p)) {
		if (strncmp(p, want, strlen(want)) == 0) {
			const char *sp = strchr(p, ' ');
			if (sp)
				sum += atoll(sp + 1);
		}
	}
	return sum;
}

static void test_usage(void)
{
	/* All checked before connecting: no ledger runs at this path. */
	const char *nowhere = "/nonexistent/rg-ctl-test.sock";

	CHECK_EQ_INT(ctl("--help", NULL), 0);
	CHECK(strstr(out, "usage: rg-ctl") && strstr(out, "snapshot now"));
	CHECK_EQ_INT(ctl(NULL), 2);
	CHECK_EQ_INT(ctl("--socket", nowhere, "frobnicate", NULL), 2);
	CHECK_EQ_INT(ctl("--socket", nowhere, "stats", "extra", NULL), 2);
	CHECK_EQ_INT(ctl("--socket", nowhere, "sku", "get", "bad/sku", NULL), 2);
	CHECK_EQ_INT(ctl("--socket", nowhere, "sku", "put", "A", NULL), 2);
	CHECK_EQ_INT(ctl("--socket", nowhere, "sku", "put", "A", "--stock", "lots", NULL), 2);
	CHECK_EQ_INT(ctl("--socket", nowhere, "sku", "put", "A", "--stock", "-1", NULL), 2);
	CHECK_EQ_INT(ctl("--socket", nowhere, "sku", "put", "A", "--ttl", "0", NULL), 2);
	CHECK_EQ_INT(ctl("--socket", nowhere, "sku", "put", "A", "--colour", "red", NULL), 2);
	CHECK_EQ_INT(ctl("--socket", nowhere, "reservation", "get", "xyz", "--session", "s", NULL), 2);
	CHECK_EQ_INT(ctl("--socket", nowhere, "reservation", "get",
			 "00000000000000000000000000000000", NULL), 2);
	CHECK_EQ_INT(ctl("--socket", nowhere, "--config", "/etc/none.conf", "stats", NULL), 2);
	CHECK_EQ_INT(ctl("--config", "/nonexistent/revenue-guard.conf", "stats", NULL), 2);
	CHECK_EQ_INT(ctl("--timeout-ms", "0", "stats", NULL), 2);
	/* Well-formed, but nobody listens. */
	CHECK_EQ_INT(ctl("--socket", nowhere, "stats", NULL), 3);
	CHECK_EQ_INT(ctl("--socket", nowhere, "sku", "get", "A", NULL), 3);
}

static ResId reserve(const char *socket, const char *sku, const char *session, int32_t qty)
{
	LedgerClient *c;
	WireRequest req = { .op = WIRE_OP_RESERVE };
	WireResponse resp;

	REQUIRE(ledger_client_connect(socket, TIMEOUT_MS, &c) == 0);
	wire_set_str(req.sku, &req.sku_len, sku, strlen(sku), WIRE_SKU_MAX);
	wire_set_str(req.session, &req.session_len, session, strlen(session), WIRE_SESSION_MAX);
	req.quantity = qty;
	REQUIRE(ledger_client_call(c, &req, &resp, TIMEOUT_MS) == 0);
	REQUIRE(resp.status == WIRE_CREATED);
	ledger_client_close(c);
	return resp.u.reservation.id;
}

static int count_snapshots(const char *data_dir, unsigned shard)
{
	char dir[400];
	int n = 0;
	snprintf(dir, sizeof(dir), "%s/shard-%03u", data_dir, shard);
	DIR *d = opendir(dir);
	if (!d)
		return -1;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		size_t len = strlen(e->d_name);
		if (len > 5 && strcmp(e->d_name + len - 5, ".snap") == 0)
			n++;
	}
	closedir(d);
	return n;
}

static void test_against_ledger(void)
{
	LedgerProc p;
	const char *s;
	char resid[RESID_TEXT_LEN + 1], conf[400];

	ledger_proc_init(&p, "rg-ctl");
	p.extra_env[0] = "RG_SHARDS=2";
	REQUIRE(ledger_proc_start(&p) == 0);
	s = p.socket;

	/* sku put: create with every setting, then update. */
	CHECK_EQ_INT(ctl("--socket", s, "sku", "put", "TICKET-1", "--stock", "5", "--ttl", "60",
			 "--max-per-order", "3", "--per-session-limit", "4", "--price-cents", "1999",
			 "--name", "Front row", NULL), 0);
	CHECK(has_line("result created"));
	CHECK_EQ_INT(value_of("stock"), 5);
	CHECK_EQ_INT(value_of("max_per_order"), 3);
	CHECK_EQ_INT(value_of("per_session_limit"), 4);
	CHECK_EQ_INT(value_of("reservation_ttl_s"), 60);
	CHECK(has_line("name Front row"));
	CHECK_EQ_INT(ctl("--socket", s, "sku", "put", "TICKET-1", "--stock", "7", NULL), 0);
	CHECK(has_line("result updated"));
	CHECK_EQ_INT(value_of("stock"), 7);
	CHECK_EQ_INT(value_of("max_per_order"), 3); /* untouched settings stay */

	/* sku get, and the refusals. */
	CHECK_EQ_INT(ctl("--socket", s, "sku", "get", "TICKET-1", NULL), 0);
	CHECK_EQ_INT(value_of("available"), 7);
	CHECK_EQ_INT(ctl("--socket", s, "sku", "get", "NO-SUCH-SKU", NULL), 1);
	CHECK_EQ_INT(ctl("--socket", s, "sku", "put", "NEW-SKU", "--ttl", "5", NULL), 1);

	/* A hold of 3; stock below reserved + sold is refused. */
	ResId id = reserve(s, "TICKET-1", "buyer-1", 3);
	resid_format(&id, resid);
	CHECK_EQ_INT(ctl("--socket", s, "sku", "put", "TICKET-1", "--stock", "2", NULL), 1);
	CHECK_EQ_INT(ctl("--socket", s, "sku", "get", "TICKET-1", NULL), 0);
	CHECK_EQ_INT(value_of("stock"), 7);
	CHECK_EQ_INT(value_of("reserved"), 3);

	/* reservation get: only with its own session. */
	CHECK_EQ_INT(ctl("--socket", s, "reservation", "get", resid, "--session", "buyer-1", NULL), 0);
	CHECK(has_line("status reserved"));
	CHECK_EQ_INT(value_of("quantity"), 3);
	CHECK(strstr(out, resid) != NULL);
	CHECK_EQ_INT(ctl("--socket", s, "reservation", "get", resid, "--session", "buyer-2", NULL), 1);
	CHECK_EQ_INT(ctl("--socket", s, "reservation", "get", "0123456789abcdef0123456789abcdef",
			 "--session", "buyer-1", NULL), 1);

	/* stats: the ledger's figures and each shard's, histograms that add up. */
	CHECK_EQ_INT(ctl("--socket", s, "stats", NULL), 0);
	CHECK_EQ_INT(value_of("shards"), 2);
	CHECK_EQ_INT(value_of("holds_active"), 1);
	CHECK_EQ_INT(value_of("reserve_created"), 1);
	long long fsyncs = 0;
	for (unsigned k = 0; k < 2; k++) {
		char key[64];
		snprintf(key, sizeof(key), "shard.%u.fsyncs", k);
		CHECK(value_of(key) >= 0);
		CHECK_EQ_INT(sum_prefix(k, "fsync_le_"), value_of(key));
		fsyncs += value_of(key);
		snprintf(key, sizeof(key), "shard.%u.requests", k);
		CHECK(value_of(key) > 0);
		snprintf(key, sizeof(key), "shard.%u.queue_len", k);
		CHECK_EQ_INT(value_of(key), 0);
	}
	CHECK_EQ_INT(fsyncs, value_of("fsyncs"));
	CHECK(fsyncs >= 3); /* create, update, reserve */
	CHECK_EQ_INT(value_of("shard.0.holds_active") + value_of("shard.1.holds_active"), 1);

	/* snapshot now: when it returns, each shard's snapshot is on disk and
	 * covers its newest record (none was there: the interval is 10^6). */
	CHECK_EQ_INT(count_snapshots(p.data_dir, 0) + count_snapshots(p.data_dir, 1), 0);
	CHECK_EQ_INT(ctl("--socket", s, "snapshot", "now", NULL), 0);
	long long lsn0 = value_of("shard.0.snapshot_lsn"), lsn1 = value_of("shard.1.snapshot_lsn");
	CHECK(lsn0 >= 0 && lsn1 >= 0 && lsn0 + lsn1 >= 3);
	CHECK_EQ_INT(ctl("--socket", s, "stats", NULL), 0);
	CHECK_EQ_INT(value_of("shard.0.snapshot_lsn"), value_of("shard.0.last_lsn"));
	CHECK_EQ_INT(value_of("shard.1.snapshot_lsn"), value_of("shard.1.last_lsn"));
	CHECK_EQ_INT(value_of("shard.0.snapshot_lsn"), lsn0);
	for (unsigned k = 0; k < 2; k++) {
		char key[64];
		snprintf(key, sizeof(key), "shard.%u.last_lsn", k);
		if (value_of(key) > 0)
			CHECK_EQ_INT(count_snapshots(p.data_dir, k), 1);
	}
	/* Nothing new: answered from the snapshot already there. */
	CHECK_EQ_INT(ctl("--socket", s, "snapshot", "now", NULL), 0);
	CHECK_EQ_INT(value_of("shard.0.snapshot_lsn"), lsn0);
	CHECK_EQ_INT(value_of("shard.1.snapshot_lsn"), lsn1);

	/* audit: the shards' recomputed totals. */
	CHECK_EQ_INT(ctl("--socket", s, "audit", NULL), 0);
	CHECK(has_line("shard.0.audit ok") && has_line("shard.1.audit ok"));
	CHECK_EQ_INT(value_of("skus"), 1);
	CHECK_EQ_INT(value_of("stock"), 7);
	CHECK_EQ_INT(value_of("reserved"), 3);
	CHECK_EQ_INT(value_of("sold"), 0);
	CHECK_EQ_INT(value_of("holds_active"), 1);
	CHECK_EQ_INT(value_of("broken_shards"), 0);

	/* writebehind status: no PostgreSQL configured, so nobody is connected. */
	CHECK_EQ_INT(ctl("--socket", s, "writebehind", "status", NULL), 0);
	CHECK_EQ_INT(value_of("shards"), 2);
	CHECK_EQ_INT(value_of("connected_shards"), 0);
	CHECK_EQ_INT(value_of("shard.0.lag_records"), 0);

	/* --config: the socket comes from the file. */
	snprintf(conf, sizeof(conf), "%s/ctl.conf", p.dir);
	FILE *f = fopen(conf, "w");
	REQUIRE(f);
	fprintf(f, "ledger_socket = %s\n", s);
	fclose(f);
	CHECK_EQ_INT(ctl("--config", conf, "sku", "get", "TICKET-1", NULL), 0);
	CHECK_EQ_INT(value_of("reserved"), 3);

	/* The ledger gone: 3. */
	ledger_proc_kill(&p);
	CHECK_EQ_INT(ctl("--socket", s, "stats", NULL), 3);
	CHECK_EQ_INT(ctl("--config", conf, "audit", NULL), 3);
	CHECK(!ledger_proc_sanitizer_reports(&p));
}

int main(void)
{
	ctl_bin = getenv("RG_CTL_BIN");
	REQUIRE(ctl_bin != NULL);
	test_usage();
	test_against_ledger();
	return check_exit();
}
