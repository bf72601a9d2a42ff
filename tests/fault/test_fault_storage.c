/* test_fault_storage.c — storage faults and power loss at every I/O call of
 * the real rg-ledger (LD_PRELOAD fault_shim.so), then recovery is checked.
 *
 * DESIGN
 * One workload, the same requests every time for a seed: SKUs created, then
 * rounds of pipelined reserves (two SKUs sell out), confirms and releases,
 * enough to fill two WAL segments, write several snapshots and delete the
 * first segment. A clean run under the shim lists the storage calls, sorted
 * into classes (WAL append, WAL sync, segment creation, spare segment,
 * rotation, snapshot, segment deletion, start-up files, empty directory
 * syncs). Then, for each fault mode and class, the workload runs again with
 * the fault at the n-th call of that class (the shim's RG_FAULT_MATCH), for
 * every n with RG_FAULT_LONG=1, else a seeded sample (see main):
 *
 *   crash   power loss at call n (unsynced bytes and entries dropped, page
 *           by page at random), the process gone
 *   eio     call n fails with EIO
 *   enospc  call n fails with ENOSPC (writes: a short write, then ENOSPC)
 *
 * and every answer is recorded. Afterwards (the shim also drops everything
 * unsynced when the process ends) the ledger restarts without the shim, and:
 *   - it starts (a crash or a failed call never leaves a log it refuses);
 *   - every acknowledged reservation is there with its acknowledged state (or
 *     the state of an unanswered later request): nothing acknowledged was
 *     unsynced;
 *   - per SKU reserved + sold <= stock, and reserved + sold lies between what
 *     the acknowledged requests imply and that plus the unanswered ones;
 *   - eio/enospc: the process exited with status 1 (log_fatal: fail-stop),
 *     except where the ledger documents a failure as harmless — preparing the
 *     spare segment (rotation then creates segments inline) and deleting old
 *     WAL segments (they stay, recovery skips them) — where it may go on.
 * Before the sweep, spare_retry checks that a failed spare preparation is
 * retried: the spare is back, whole, seconds later.
 * Writes one line per mode and class to the reliability table. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <regex.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "common/ledger_client.h"
#include "ledger_proc.h"

#define TIMEOUT_MS 10000
#define NSKU 6
#define ROUNDS 50
#define BATCH 200
#define OPS_MAX (ROUNDS * BATCH + 64)

typedef struct Res {
	ResId id;
	char session[WIRE_SESSION_MAX + 1];
	int sku, qty;
	int acked;        /* the reserve was answered CREATED */
	int state;        /* acknowledged state (WireResState) */
	int pending;      /* an unanswered confirm/release: its target state, else 0 */
	int pending_reserve; /* the reserve itself went unanswered */
} Res;

static Res res[OPS_MAX];
static int nres;
static int64_t stock[NSKU];
static int sku_acked[NSKU];   /* PUT_SKU answered */
static uint64_t seed;
static const char *shim;
static const char *preload_first;

static uint64_t rnd(void)
{
	uint64_t z = (seed += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void sku_name(char *out, int k)
{
	sprintf(out, "fault-sku-%d", k);
}

/* ---- the ledger under the shim ---- */

static pid_t spawn(LedgerProc *p, const char *mode, const char *match, unsigned long long at,
		   const char *report, uint64_t crash_seed)
{
	pid_t pid = fork();
	if (pid != 0)
		return pid;
	char pre[1024], dir[400], m[64], a[64], r[600], s[64], sock[400], data[400], re[400];
	if (preload_first && preload_first[0])
		snprintf(pre, sizeof(pre), "LD_PRELOAD=%s %s", preload_first, shim);
	else
		snprintf(pre, sizeof(pre), "LD_PRELOAD=%s", shim);
	snprintf(dir, sizeof(dir), "RG_FAULT_DIR=%s", p->data_dir);
	snprintf(m, sizeof(m), "RG_FAULT_MODE=%s", mode);
	snprintf(a, sizeof(a), "RG_FAULT_AT=%llu", at);
	snprintf(r, sizeof(r), "RG_FAULT_REPORT=%s", report);
	snprintf(s, sizeof(s), "RG_FAULT_SEED=%" PRIu64, crash_seed);
	snprintf(sock, sizeof(sock), "RG_LEDGER_SOCKET=%s", p->socket);
	snprintf(data, sizeof(data), "RG_DATA_DIR=%s", p->data_dir);
	putenv(pre);
	putenv(dir);
	putenv(m);
	putenv(a);
	putenv(r);
	putenv(s);
	putenv(sock);
	putenv(data);
	snprintf(re, sizeof(re), "RG_FAULT_MATCH=%s", match ? match : "");
	putenv(re);
	int fd = open(p->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
	if (fd >= 0) {
		dup2(fd, 1);
		dup2(fd, 2);
		close(fd);
	}
	const char *bin = getenv("RG_LEDGER_BIN");
	execl(bin, bin, (char *)NULL);
	_exit(127);
}

/* Waits for PING; returns a client, or NULL when the process exited first. */
static LedgerClient *wait_up(LedgerProc *p, int *status, int *exited)
{
	*exited = 0;
	for (int i = 0; i < 2000; i++) {
		if (waitpid(p->pid, status, WNOHANG) == p->pid) {
			*exited = 1;
			p->pid = 0;
			return NULL;
		}
		LedgerClient *c;
		if (ledger_client_connect(p->socket, 1000, &c) == 0) {
			WireRequest req = { .op = WIRE_OP_PING };
			WireResponse resp;
			if (ledger_client_call(c, &req, &resp, TIMEOUT_MS) == 0 && resp.status == WIRE_OK)
				return c;
			ledger_client_close(c);
		}
		struct timespec ts = { 0, 10 * 1000000 };
		nanosleep(&ts, NULL);
	}
	fprintf(stderr, "rg-ledger did not come up in 20 s\n");
	exit(1);
}

/* Waits at most 20 s for the process to exit; returns its status word. */
static int wait_exit(LedgerProc *p, int term)
{
	int status = 0;
	if (term)
		kill(p->pid, SIGTERM);
	for (int i = 0; i < 2000; i++) {
		if (waitpid(p->pid, &status, WNOHANG) == p->pid) {
			p->pid = 0;
			return status;
		}
		struct timespec ts = { 0, 10 * 1000000 };
		nanosleep(&ts, NULL);
	}
	fprintf(stderr, "rg-ledger did not exit within 20 s\n");
	kill(p->pid, SIGKILL);
	waitpid(p->pid, NULL, 0);
	exit(1);
}

/* ---- the workload ---- */

static void make_req(WireRequest *q, int op, int k, const char *session)
{
	char sku[32];
	memset(q, 0, sizeof(*q));
	q->op = (uint8_t)op;
	sku_name(sku, k);
	wire_set_str(q->sku, &q->sku_len, sku, strlen(sku), WIRE_SKU_MAX);
	wire_set_str(q->session, &q->session_len, session, strlen(session), WIRE_SESSION_MAX);
}

typedef struct Sent {
	uint64_t id;
	int kind;    /* 0 put, 1 reserve, 2 confirm, 3 release */
	int idx;     /* sku for put, reservation otherwise */
} Sent;

/* Runs the workload on c until done or the connection dies. Returns the
 * number of answered requests. The content depends only on wseed. */
static long workload(LedgerClient *c, uint64_t wseed)
{
	static Sent sent[BATCH + NSKU];
	static WireRequest q;
	long answered = 0;
	int dead = 0;

	seed = wseed;
	nres = 0;
	memset(sku_acked, 0, sizeof(sku_acked));
	for (int k = 0; k < NSKU; k++) {
		/* Two SKUs sell out part-way; the others never do. */
		stock[k] = k < 2 ? 1500 + (int64_t)(rnd() % 500) : 1000000;
		make_req(&q, WIRE_OP_PUT_SKU, k, "admin");
		q.settings.fields = WIRE_SKU_HAS_STOCK | WIRE_SKU_HAS_MAX_PER_ORDER | WIRE_SKU_HAS_TTL;
		q.settings.stock = stock[k];
		q.settings.max_per_order = 10;
		q.settings.reservation_ttl_s = 36000;
		q.id = 0;
		ledger_client_send(c, &q);
		sent[k] = (Sent){ q.id, 0, k };
	}
	int n = NSKU;
	for (int round = 0; round <= ROUNDS && !dead; round++) {
		if (round > 0) {
			n = 0;
			for (int i = 0; i < BATCH; i++) {
				uint64_t r = rnd() % 100;
				Res *x = nres ? &res[rnd() % (uint64_t)nres] : NULL;
				if (r < 15 && x && x->acked && x->state == WIRE_RES_RESERVED && !x->pending) {
					make_req(&q, r < 10 ? WIRE_OP_CONFIRM : WIRE_OP_RELEASE, x->sku, x->session);
					q.reservation = x->id;
					q.id = 0;
					ledger_client_send(c, &q);
					x->pending = r < 10 ? WIRE_RES_CONFIRMED : WIRE_RES_RELEASED;
					sent[n++] = (Sent){ q.id, r < 10 ? 2 : 3, (int)(x - res) };
					continue;
				}
				Res *y = &res[nres];
				memset(y, 0, sizeof(*y));
				y->sku = (int)(rnd() % NSKU);
				y->qty = 1 + (int)(rnd() % 3);
				/* Long sessions make big records: three segments fill quickly. */
				snprintf(y->session, sizeof(y->session),
					 "buyer-%06d-%s", nres,
					 "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
				make_req(&q, WIRE_OP_RESERVE, y->sku, y->session);
				q.quantity = y->qty;
				q.id = 0;
				ledger_client_send(c, &q);
				y->pending_reserve = 1;
				sent[n++] = (Sent){ q.id, 1, nres };
				nres++;
			}
		}
		if (ledger_client_flush(c) != 0) {
			dead = 1;
			break;
		}
		for (int got = 0; got < n; got++) {
			WireResponse resp;
			if (ledger_client_recv(c, &resp, TIMEOUT_MS) != 0) {
				dead = 1;
				break;
			}
			Sent *s = NULL;
			for (int i = 0; i < n; i++)
				if (sent[i].id == resp.id)
					s = &sent[i];
			REQUIRE(s);
			answered++;
			if (s->kind == 0) {
				REQUIRE(resp.status == WIRE_CREATED || resp.status == WIRE_OK);
				sku_acked[s->idx] = 1;
			} else if (s->kind == 1) {
				Res *y = &res[s->idx];
				y->pending_reserve = 0;
				if (resp.status == WIRE_CREATED) {
					y->acked = 1;
					y->state = WIRE_RES_RESERVED;
					y->id = resp.u.reservation.id;
				} else {
					REQUIRE(resp.status == WIRE_SOLD_OUT ||
						resp.status == WIRE_INSUFFICIENT_STOCK);
				}
			} else {
				Res *x = &res[s->idx];
				REQUIRE(resp.status == WIRE_OK);
				x->state = x->pending;
				x->pending = 0;
			}
			s->id = 0;
		}
	}
	return answered;
}

/* ---- the checks after recovery ---- */

static int fail_case(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail_case(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "FAIL: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	check_failures++;
	return 1;
}

/* Returns the number of problems found. */
static int verify(LedgerClient *c, const char *what)
{
	static WireRequest q;
	int bad = 0;
	int64_t lo[NSKU] = { 0 }, hi[NSKU] = { 0 };

	for (int i = 0; i < nres; i++) {
		Res *x = &res[i];
		if (x->pending_reserve)
			hi[x->sku] += x->qty;
		if (!x->acked)
			continue;
		if (x->state != WIRE_RES_RELEASED)
			hi[x->sku] += x->qty;
		if (x->state != WIRE_RES_RELEASED && x->pending != WIRE_RES_RELEASED)
			lo[x->sku] += x->qty;
	}
	/* Every acknowledged reservation, pipelined in chunks. */
	for (int i = 0; i < nres;) {
		int idx[256], n = 0;
		for (; i < nres && n < 256; i++) {
			if (!res[i].acked)
				continue;
			make_req(&q, WIRE_OP_GET_RESERVATION, res[i].sku, res[i].session);
			q.reservation = res[i].id;
			q.id = (uint64_t)i + 1;
			ledger_client_send(c, &q);
			idx[n++] = i;
		}
		REQUIRE(ledger_client_flush(c) == 0);
		for (int k = 0; k < n; k++) {
			WireResponse resp;
			REQUIRE(ledger_client_recv(c, &resp, TIMEOUT_MS) == 0);
			Res *x = &res[resp.id - 1];
			if (resp.status != WIRE_OK) {
				if (bad++ < 5)
					fail_case("%s: acknowledged reservation %s is missing after recovery (status %d)",
						  what, x->session, resp.status);
				continue;
			}
			WireReservation *r = &resp.u.reservation;
			if (r->quantity != x->qty || (r->state != x->state && r->state != x->pending)) {
				if (bad++ < 5)
					fail_case("%s: reservation %s recovered as state %d qty %d, acknowledged "
						  "state %d qty %d (pending %d)", what, x->session, r->state,
						  r->quantity, x->state, x->qty, x->pending);
			}
		}
		(void)idx;
	}
	for (int k = 0; k < NSKU; k++) {
		char sku[32];
		sku_name(sku, k);
		make_req(&q, WIRE_OP_GET_SKU, k, "admin");
		q.id = 0;
		WireResponse resp;
		REQUIRE(ledger_client_call(c, &q, &resp, TIMEOUT_MS) == 0);
		if (resp.status == WIRE_UNKNOWN_SKU) {
			if (sku_acked[k] && bad++ < 5)
				fail_case("%s: acknowledged SKU %s is missing after recovery", what, sku);
			continue;
		}
		REQUIRE(resp.status == WIRE_OK);
		WireSku *s = &resp.u.sku;
		int64_t used = s->reserved + s->sold;
		if (used > s->stock || s->reserved < 0 || s->sold < 0 || used < lo[k] || used > hi[k]) {
			if (bad++ < 5)
				fail_case("%s: %s stock %" PRId64 " reserved %" PRId64 " sold %" PRId64
					  ", the acknowledged requests imply %" PRId64 "..%" PRId64,
					  what, sku, s->stock, s->reserved, s->sold, lo[k], hi[k]);
		}
	}
	return bad;
}

/* ---- one case ---- */

typedef struct Injected {
	int hit;
	char op[32], path[1024], ctx[256];
} Injected;

static void read_report(const char *report, Injected *inj, unsigned long long *count)
{
	FILE *f = fopen(report, "r");
	char line[2400];
	memset(inj, 0, sizeof(*inj));
	if (count)
		*count = 0;
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long n;
		if (strncmp(line, "inject ", 7) == 0) {
			inj->hit = 1;
			if (sscanf(line, "inject %llu %31s %1023s %255[^\n]", &n, inj->op, inj->path, inj->ctx) < 3)
				inj->hit = 2;
		} else if (count && sscanf(line, "count %llu", &n) == 1) {
			*count = n;
		}
	}
	fclose(f);
}

static const char *base(const char *path)
{
	const char *s = strrchr(path, '/');
	return s ? s + 1 : path;
}

/* What part of the ledger made the call, from the shim's line "OP PATH
 * CONTEXT" (for a directory sync the context names the newest change it
 * makes durable). The patterns are disjoint; the shim takes the same one as
 * RG_FAULT_MATCH to aim at the n-th call of a class. */
#define SEG "wal-[0-9a-f]{16}\\.seg"
enum { C_APPEND, C_SYNC, C_CREATE, C_SPARE, C_ROTATE, C_SNAPSHOT, C_DELETE, C_STARTUP, C_OTHER, NCLASS };
static const struct { const char *name, *re; } classes[NCLASS] = {
	{ "WAL append (pwrite to a segment)", "^pwrite .*/" SEG },
	{ "WAL sync (fdatasync of a segment)", "^fdatasync .*/" SEG },
	{ "segment creation (create, fallocate, directory fsync)",
	  "^(create|fallocate) .*/" SEG "|^fsync .* after create " SEG },
	{ "spare segment preparation", "^(create|fallocate|pwrite|fdatasync|unlink) .*/wal-spare\\.tmp" },
	{ "segment rotation (rename of the spare, directory fsync)",
	  "^rename .* from wal-spare\\.tmp|^fsync .* after rename " SEG },
	{ "snapshot (write, fsync, rename, prune, directory fsync)", "snap-[0-9a-f]{16}" },
	{ "WAL segment deletion (unlink, directory fsync)",
	  "^unlink .*/" SEG "|^fsync .* after unlink " SEG },
	{ "start-up files (LOCK, SHARDS)", "/LOCK|/SHARDS|after (create|rename) (LOCK|SHARDS)" },
	{ "directory fsync with no change pending (snapshot prune, WAL open)", "^fsync .* after nothing$" },
};
static regex_t class_re[NCLASS];

static int op_class(const char *op, const char *path, const char *ctx)
{
	char line[1400];
	snprintf(line, sizeof(line), "%s %s %s", op, path, ctx);
	for (int k = 0; k < NCLASS; k++)
		if (regexec(&class_re[k], line, 0, NULL, 0) == 0)
			return k;
	return -1;
}

/* Whether the ledger may go on after this call failed (see the header). */
static int harmless(const Injected *inj)
{
	const char *b = base(inj->path);
	if (strstr(inj->path, "wal-spare.tmp") || strstr(inj->ctx, "wal-spare.tmp"))
		return 1;
	if (!strcmp(inj->op, "unlink") && (strncmp(b, "wal-", 4) == 0 || strstr(b, ".tmp")))
		return 1;
	if (!strcmp(inj->op, "fsync") && strstr(inj->ctx, "after unlink wal-"))
		return 1;
	return 0;
}

typedef struct Tally {
	unsigned cases, failstops, continued, startup, crashes, bad;
	unsigned by_class[NCLASS], bad_by_class[NCLASS];
} Tally;

static unsigned trace_class[NCLASS], trace_unclassified;

/* Tallies the clean run's calls by class. */
static void read_trace(const char *report)
{
	FILE *f = fopen(report, "r");
	char line[2400], op[32], path[1024], ctx[256];
	unsigned long long n;
	memset(trace_class, 0, sizeof(trace_class));
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		ctx[0] = '\0';
		if (sscanf(line, "op %llu %31s %1023s %255[^\n]", &n, op, path, ctx) >= 3) {
			int k = op_class(op, path, ctx);
			if (k < 0) {
				fprintf(stderr, "unclassified storage call: %s", line);
				trace_unclassified++;
			} else {
				trace_class[k]++;
			}
		}
	}
	fclose(f);
}

static void run_case(LedgerProc *p, const char *mode, int cls, unsigned long long at,
		     uint64_t wseed, uint64_t cseed, Tally *t, unsigned long long *count_out)
{
	char report[400], what[200], cmd[700];
	int status = 0, exited = 0;
	Injected inj;

	snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s'", p->data_dir, p->log);
	REQUIRE(system(cmd) == 0);
	snprintf(report, sizeof(report), "%s/fault.report", p->dir);
	unlink(report);
	snprintf(what, sizeof(what), "%s at call %llu of class %d (RG_SEED=%" PRIu64 ")", mode, at,
		 cls, wseed);

	p->pid = spawn(p, mode, cls >= 0 ? classes[cls].re : NULL, at, report, cseed);
	LedgerClient *c = wait_up(p, &status, &exited);
	if (c) {
		workload(c, wseed);
		ledger_client_close(c);
		status = wait_exit(p, 1);
	} else {
		nres = 0;
		memset(sku_acked, 0, sizeof(sku_acked));
		t->startup++;
	}
	read_report(report, &inj, count_out);
	if (count_out) {
		char keep[500];
		read_trace(report);
		snprintf(keep, sizeof(keep), "%s/clean.trace", p->dir);
		rename(report, keep);
	}
	t->cases++;
	int hit_cls = inj.hit ? op_class(inj.op, inj.path, inj.ctx) : -1;
	if (hit_cls >= 0)
		t->by_class[hit_cls]++;

	int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	int bad = 0;
	if (!strcmp(mode, "count")) {
		if (code != 0)
			bad += fail_case("%s: clean run exited with %d", what, code);
	} else if (!inj.hit) {
		if (code != 0)
			bad += fail_case("%s: no fault injected, yet exit status %d", what, code);
	} else if (!strcmp(mode, "crash")) {
		if (code != 86)
			bad += fail_case("%s: expected the simulated crash (86), got %d", what, code);
		t->crashes++;
	} else if (code == 1) {
		t->failstops++;
	} else if (code == 0 && harmless(&inj)) {
		t->continued++;
	} else {
		bad += fail_case("%s: %s of %s %s failed, and the ledger %s (status %d) instead of "
				 "stopping with status 1", what, inj.op, inj.path, inj.ctx,
				 code == 0 ? "carried on" : "ended otherwise", code);
	}

	/* Recovery without the shim. */
	if (ledger_proc_start(p) != 0) {
		bad += fail_case("%s: the ledger does not start after the fault (%s %s)", what,
				 inj.op, inj.path);
	} else {
		LedgerClient *v;
		REQUIRE(ledger_client_connect(p->socket, TIMEOUT_MS, &v) == 0);
		bad += verify(v, what);
		ledger_client_close(v);
		if (ledger_proc_stop(p) != 0)
			bad += fail_case("%s: the recovered ledger did not stop cleanly", what);
	}
	if (ledger_proc_sanitizer_reports(p))
		bad += fail_case("%s: sanitizer report in the ledger's log", what);
	if (bad) {
		fprintf(stderr, "  (fault was: %s %s %s; log %s)\n", inj.op, inj.path, inj.ctx, p->log);
		t->bad++;
		if (hit_cls >= 0)
			t->bad_by_class[hit_cls]++;
	}
}

/* A failed spare preparation is retried: EIO at each of the first calls
 * that prepare it (unlink of a stale one, create, preallocate), then the
 * spare must be there, whole, within a few seconds (the first retry comes
 * after 1 s), and the ledger must stop cleanly. */
static void spare_retry(LedgerProc *p, uint64_t wseed)
{
	char report[400], spare[600], cmd[700];
	int status = 0, exited = 0;
	Injected inj;

	snprintf(report, sizeof(report), "%s/fault.report", p->dir);
	snprintf(spare, sizeof(spare), "%s/shard-000/wal-spare.tmp", p->data_dir);
	for (unsigned long long at = 1; at <= 3; at++) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", p->data_dir);
		REQUIRE(system(cmd) == 0);
		unlink(report);
		p->pid = spawn(p, "eio", classes[C_SPARE].re, at, report, wseed);
		LedgerClient *c = wait_up(p, &status, &exited);
		REQUIRE(c != NULL);
		ledger_client_close(c);
		struct stat st = { 0 };
		for (int i = 0; i < 500; i++) {
			if (stat(spare, &st) == 0 && st.st_size == 1024 * 1024)
				break;
			struct timespec ts = { 0, 10 * 1000000 };
			nanosleep(&ts, NULL);
		}
		status = wait_exit(p, 1);
		read_report(report, &inj, NULL);
		printf("spare retry: EIO at spare call %llu (%s %s): spare %s\n", at, inj.op,
		       base(inj.path), st.st_size == 1024 * 1024 ? "prepared again" : "missing");
		CHECK_EQ_INT(inj.hit, 1);
		CHECK_EQ_INT(st.st_size, 1024 * 1024);
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
}

static void reliability(const char *name, const char *cls, const char *how, unsigned cases,
			const char *result)
{
	const char *dir = getenv("RG_RELIABILITY_DIR");
	char path[600];
	if (!dir)
		return;
	mkdir(dir, 0755);
	snprintf(path, sizeof(path), "%s/%s.tsv", dir, name);
	FILE *f = fopen(path, "a");
	if (!f)
		return;
	fprintf(f, "%s\t%s\t%u\t%s\n", cls, how, cases, result);
	fclose(f);
}

int main(void)
{
	const char *s = getenv("RG_SEED");
	uint64_t wseed = s ? strtoull(s, NULL, 10) : (uint64_t)time(NULL);
	int longrun = getenv("RG_FAULT_LONG") && atoi(getenv("RG_FAULT_LONG")) > 0;
	/* Sanitizer trees run several times slower: a seeded sample there. */
	int quick = !longrun && getenv("RG_FAULT_QUICK") && atoi(getenv("RG_FAULT_QUICK")) > 0;
	const char *only = getenv("RG_FAULT_MODES");
	char rpath[600];

	shim = getenv("RG_FAULT_SHIM");
	preload_first = getenv("RG_FAULT_PRELOAD_FIRST");
	REQUIRE(shim && getenv("RG_LEDGER_BIN"));
	printf("test_fault_storage: RG_SEED=%" PRIu64 "%s\n", wseed,
	       longrun ? " RG_FAULT_LONG=1" : quick ? " RG_FAULT_QUICK=1" : "");
	fflush(stdout);
	setenv("RG_SHARDS", "1", 1);
	setenv("RG_WAL_SEGMENT_SIZE_MB", "1", 1);
	setenv("RG_SNAPSHOT_INTERVAL_RECORDS", "1000", 1);
	setenv("RG_LOG_LEVEL", "info", 1);
	setenv("RG_PG_CONNINFO", "", 1);

	const char *dir = getenv("RG_RELIABILITY_DIR");
	if (dir) {
		snprintf(rpath, sizeof(rpath), "%s/test_fault_storage.tsv", dir);
		unlink(rpath);
	}

	/* The shim decides what survives a crash, so the disk's own flushes
	 * add nothing but time: work on tmpfs where there is one. */
	char tmpl[512];
	ledger_proc_use_tmpfs("fault-storage", tmpl, sizeof(tmpl));
	LedgerProc p;
	ledger_proc_init(&p, "fault-storage");
	printf("working in %s\n", p.dir);

	/* The clean run: how many storage calls, and the workload passes. */
	Tally t0 = { 0 };
	unsigned long long total = 0;
	for (int k = 0; k < NCLASS; k++)
		REQUIRE(regcomp(&class_re[k], classes[k].re, REG_EXTENDED | REG_NOSUB) == 0);
	run_case(&p, "count", -1, 0, wseed, 0, &t0, &total);
	REQUIRE(t0.bad == 0);
	REQUIRE(total > 20);
	printf("clean run: %llu storage calls, %d reservations attempted\n", total, nres);

	for (int k = 0; k < NCLASS; k++)
		printf("  %3u calls: %s\n", trace_class[k], classes[k].name);
	CHECK_EQ_INT(trace_unclassified, 0);
	/* The workload must reach every part of the storage path. */
	for (int k = 0; k < NCLASS; k++)
		if (k != C_OTHER)
			CHECK(trace_class[k] > 0);

	spare_retry(&p, wseed);

	static const struct { const char *mode, *what; } modes[] = {
		{ "crash", "power loss (unsynced bytes lost page by page at random, unsynced directory "
			   "entries lost)" },
		{ "eio", "EIO" },
		{ "enospc", "ENOSPC (writes: short, then ENOSPC)" },
	};
	for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
		if (only && !strstr(only, modes[m].mode))
			continue;
		Tally t = { 0 };
		char range[NCLASS][64];
		for (int k = 0; k < NCLASS; k++) {
			/* Every call of the class with RG_FAULT_LONG; else for crashes
			 * every call of the small classes and every second or so of
			 * the big ones (WAL append, sync, snapshot: ~35 each), and for
			 * errors, whose handling is the same at every call of a class,
			 * the first and a seeded sample of about six. The
			 * count varies a little between runs (batching follows thread
			 * timing): two more past the clean run's count, which are clean
			 * runs when the class has no such call. */
			unsigned long long last = trace_class[k] + 2, step = 1;
			unsigned per_class = m > 0 ? (quick ? 2 : 6) : (quick ? 12 : 35);
			if (!longrun && trace_class[k] > per_class)
				step = trace_class[k] / per_class;
			unsigned long long first = 1 + (wseed + m + (uint64_t)k) % step;
			unsigned before = t.cases;
			if (first != 1)
				run_case(&p, modes[m].mode, k, 1, wseed, wseed * 1000003u + 1, &t, NULL);
			for (unsigned long long n = first; n <= last; n += step)
				run_case(&p, modes[m].mode, k, n, wseed, wseed * 1000003u + n + (uint64_t)k * 7919,
					 &t, NULL);
			snprintf(range[k], sizeof(range[k]), "%u cases over calls 1..%llu step %llu",
				 t.cases - before, last, step);
		}
		for (int k = 0; k < NCLASS; k++) {
			if (!t.by_class[k])
				continue;
			char cls[300], how[1024], result[200];
			snprintf(cls, sizeof(cls), "%s: %s", classes[k].name, modes[m].what);
			snprintf(how, sizeof(how), "LD_PRELOAD shim on rg-ledger, %s at the N-th call of the "
				 "class (%s, RG_SEED=%" PRIu64 ")", modes[m].mode, range[k], wseed);
			if (t.bad_by_class[k])
				snprintf(result, sizeof(result), "FAIL: %u case(s)", t.bad_by_class[k]);
			else
				snprintf(result, sizeof(result), "pass");
			reliability("test_fault_storage", cls, how, t.by_class[k], result);
		}
		printf("%s: %u cases, %u crashes recovered, %u fail-stops, %u continued (harmless), "
		       "%u refused start, %u bad\n", modes[m].mode, t.cases, t.crashes,
		       t.failstops, t.continued, t.startup, t.bad);
		for (int k = 0; k < NCLASS; k++)
			if (t.by_class[k])
				printf("  %3u %s\n", t.by_class[k], classes[k].name);
		fflush(stdout);
	}
	ledger_proc_cleanup(&p, tmpl, check_failures);
	return check_exit();
}
