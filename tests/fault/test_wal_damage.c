/* test_wal_damage.c — truncations and bit flips in a WAL the real rg-ledger
 * wrote, then recovery.
 *
 * DESIGN
 * The real daemon writes the log (pipelined reserves in rounds, two
 * segments) and is killed with SIGKILL, so the WAL is the whole state. The
 * cases then damage a copy of it and recover with wal_open (in process, so
 * a sanitizer build watches every byte the reader touches), each against an
 * expectation computed from the record layout, which the test parses itself:
 *
 *   truncation at every byte offset of the last records (file cut short, and
 *   cut with zeros after it): a torn tail, trimmed; exactly the records
 *   wholly before the cut survive, and the log takes appends again;
 *   a bit flip anywhere (a seeded sample; every byte with RG_FAULT_LONG=1):
 *     - in any record, the last write's included: refused, -EBADMSG, and
 *       the message names the segment, the offset and
 *       --allow-wal-corruption; with allow_corruption the records before it
 *       survive. A torn write leaves zeroed sectors, a flip does not, so rot
 *       in a synced last write is no longer trimmed silently; except where
 *       the flip looks like a cut (it lengthens a record of the last write
 *       past the data, or hits the final record whose payload ends in zero
 *       bytes): then trimmed, as wal.c documents;
 *     - in padding: not checksummed, everything survives;
 *     - after the data: trimmed, everything survives.
 * A seeded handful of each kind also runs through the real rg-ledger: it
 * starts and answers for a torn tail; for mid-log damage it exits non-zero
 * with "refusing to start" and the flag's name in its log, and starts with
 * --allow-wal-corruption. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "common/ledger_client.h"
#include "common/log.h"
#include "ledger/wal.h"
#include "ledger_proc.h"

#define TIMEOUT_MS 10000
#define SEG_MAX 4
#define REC_MAX 20000

typedef struct Rec {
	int seg;
	size_t off, len;   /* header + payload, without padding */
	size_t total;      /* with padding */
	size_t nz_end;     /* after its last non-zero byte: a cut at or past it changes nothing */
	int batch_start;
} Rec;

static Rec recs[REC_MAX];
static size_t nrec;
static char seg_name[SEG_MAX][64];
static uint8_t *seg_orig[SEG_MAX];
static size_t seg_size[SEG_MAX], seg_data_end[SEG_MAX];
static int nseg;
static char shard_dir[600];
static uint64_t seed, seed0;

static uint64_t rnd(void)
{
	uint64_t z = (seed += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* ---- making the log with the real daemon ---- */

static int seg_count(void)
{
	DIR *d = opendir(shard_dir);
	struct dirent *de;
	int n = 0;
	if (!d)
		return 0;
	while ((de = readdir(d)))
		n += strncmp(de->d_name, "wal-", 4) == 0 && strstr(de->d_name, ".seg") != NULL;
	closedir(d);
	return n;
}

static void make_log(LedgerProc *p)
{
	LedgerClient *c;
	WireRequest q;
	WireResponse resp;

	REQUIRE(ledger_proc_start(p) == 0);
	REQUIRE(ledger_client_connect(p->socket, TIMEOUT_MS, &c) == 0);
	memset(&q, 0, sizeof(q));
	q.op = WIRE_OP_PUT_SKU;
	wire_set_str(q.sku, &q.sku_len, "dmg", 3, WIRE_SKU_MAX);
	q.settings.fields = WIRE_SKU_HAS_STOCK | WIRE_SKU_HAS_MAX_PER_ORDER | WIRE_SKU_HAS_TTL;
	q.settings.stock = 1000000;
	q.settings.max_per_order = 10;
	q.settings.reservation_ttl_s = 36000;
	REQUIRE(ledger_client_call(c, &q, &resp, TIMEOUT_MS) == 0 && resp.status == WIRE_CREATED);
	/* Rounds of varied size (batches of varied length) until the log has
	 * two segments, and a few more. */
	int n = 0, more = -1;
	for (int round = 0; more != 0; round++) {
		REQUIRE(round < 1000);
		if (more > 0)
			more--;
		else if (more < 0 && seg_count() >= 2)
			more = 5;
		int k = 1 + (int)(rnd() % 250);
		for (int i = 0; i < k; i++, n++) {
			char session[WIRE_SESSION_MAX + 1];
			snprintf(session, sizeof(session), "damage-%06d-%.*s", n, (int)(rnd() % 100),
				 "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz");
			memset(&q, 0, sizeof(q));
			q.op = WIRE_OP_RESERVE;
			wire_set_str(q.sku, &q.sku_len, "dmg", 3, WIRE_SKU_MAX);
			wire_set_str(q.session, &q.session_len, session, strlen(session), WIRE_SESSION_MAX);
			q.quantity = 1;
			ledger_client_send(c, &q);
		}
		REQUIRE(ledger_client_flush(c) == 0);
		for (int i = 0; i < k; i++) {
			REQUIRE(ledger_client_recv(c, &resp, TIMEOUT_MS) == 0);
			REQUIRE(resp.status == WIRE_CREATED);
		}
	}
	ledger_client_close(c);
	ledger_proc_kill(p); /* no final snapshot: the WAL is all there is */
}

/* Reads the segments and parses every record (the layout of wal.c). */
static void load_log(void)
{
	char cmd[1400], path[1400];
	snprintf(cmd, sizeof(cmd), "ls '%s' | grep '^wal-.*\\.seg$' | sort", shard_dir);
	FILE *ls = popen(cmd, "r");
	REQUIRE(ls);
	while (nseg < SEG_MAX && fgets(seg_name[nseg], sizeof(seg_name[nseg]), ls)) {
		seg_name[nseg][strcspn(seg_name[nseg], "\n")] = '\0';
		nseg++;
	}
	pclose(ls);
	REQUIRE(nseg >= 2);
	for (int s = 0; s < nseg; s++) {
		struct stat sb;
		snprintf(path, sizeof(path), "%s/%s", shard_dir, seg_name[s]);
		int fd = open(path, O_RDONLY);
		REQUIRE(fd >= 0 && fstat(fd, &sb) == 0);
		seg_size[s] = (size_t)sb.st_size;
		seg_orig[s] = malloc(seg_size[s]);
		REQUIRE(seg_orig[s] && read(fd, seg_orig[s], seg_size[s]) == (ssize_t)seg_size[s]);
		close(fd);
		size_t off = 0;
		while (off + WAL_RECORD_HEADER_LEN <= seg_size[s] && get32(seg_orig[s] + off + 4)) {
			uint32_t word = get32(seg_orig[s] + off + 4), len = word & 0x7fffffffu;
			REQUIRE(nrec < REC_MAX && len >= 1 && len <= WAL_RECORD_PAYLOAD_MAX);
			Rec *r = &recs[nrec++];
			r->seg = s;
			r->off = off;
			r->len = WAL_RECORD_HEADER_LEN + len;
			r->total = WAL_RECORD_HEADER_LEN + ((len + 7) & ~(size_t)7);
			r->batch_start = (word >> 31) != 0;
			r->nz_end = r->off + r->len;
			while (seg_orig[s][r->nz_end - 1] == 0)
				r->nz_end--;
			off += r->total;
		}
		seg_data_end[s] = off;
	}
}

static void restore(void)
{
	char cmd[1400], path[1400];
	snprintf(cmd, sizeof(cmd), "rm -f '%s'/wal-* '%s'/snap-*", shard_dir, shard_dir);
	REQUIRE(system(cmd) == 0);
	for (int s = 0; s < nseg; s++) {
		snprintf(path, sizeof(path), "%s/%s", shard_dir, seg_name[s]);
		int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		REQUIRE(fd >= 0 && write(fd, seg_orig[s], seg_size[s]) == (ssize_t)seg_size[s]);
		close(fd);
	}
}

static void seg_path(char *out, size_t len, int s)
{
	snprintf(out, len, "%s/%s", shard_dir, seg_name[s]);
}

/* ---- recovery in process ---- */

static int count_fn(void *ctx, uint64_t lsn, const uint8_t *payload, size_t len)
{
	uint64_t *n = ctx;
	(*n)++;
	return 0;
}

/* Opens the damaged log: returns wal_open's result, *got the records. */
static int recover(int allow, uint64_t *got, char *why, size_t why_len, int append_after)
{
	WalOptions o = { .dir = shard_dir, .segment_size = (size_t)1 << 20, .allow_corruption = allow };
	WalRecoveryStats st;
	Wal *w = NULL;
	*got = 0;
	int rc = wal_open(&o, 0, count_fn, got, &w, &st, why, why_len);
	if (rc == 0 && append_after) {
		/* The trimmed log takes appends, and they come back. */
		Buf b;
		uint8_t payload[40];
		memset(payload, 0x42, sizeof(payload));
		buf_init(&b, 0);
		uint64_t next = wal_next_lsn(w);
		for (int i = 0; i < 3; i++)
			wal_frame(&b, next + (uint64_t)i, payload, sizeof(payload));
		CHECK_EQ_INT(wal_write(w, b.data, b.len), 0);
		CHECK_EQ_INT(wal_sync(w), 0);
		buf_free(&b);
		wal_close(w);
		uint64_t again = 0;
		char why2[512];
		w = NULL;
		CHECK_EQ_INT(wal_open(&o, 0, count_fn, &again, &w, &st, why2, sizeof(why2)), 0);
		CHECK_EQ_INT(again, *got + 3);
		CHECK_EQ_INT(st.torn_bytes, 0);
	}
	wal_close(w);
	return rc;
}

/* ---- the real daemon on a damaged log ---- */

static int daemon_cases;

static void daemon_check(LedgerProc *p, int refuse)
{
	char cmd[700];
	snprintf(cmd, sizeof(cmd), ": > '%s'", p->log);
	REQUIRE(system(cmd) == 0);
	daemon_cases++;
	if (!refuse) {
		if (ledger_proc_start(p) != 0) {
			CHECK(!"the ledger must start on a torn tail");
			return;
		}
		CHECK_EQ_INT(ledger_proc_stop(p), 0);
		CHECK(!ledger_proc_sanitizer_reports(p));
		return;
	}
	int code = ledger_proc_run_expect_exit(p);
	CHECK(code > 0 && code < 128);
	CHECK(ledger_proc_log_contains(p, "refusing to start"));
	CHECK(ledger_proc_log_contains(p, "--allow-wal-corruption"));
	CHECK(!ledger_proc_sanitizer_reports(p));

	/* And with the flag it starts (the flag is an argument, not a key). */
	pid_t pid = fork();
	if (pid == 0) {
		char sock[400], data[400];
		snprintf(sock, sizeof(sock), "RG_LEDGER_SOCKET=%s", p->socket);
		snprintf(data, sizeof(data), "RG_DATA_DIR=%s", p->data_dir);
		putenv(sock);
		putenv(data);
		int fd = open(p->log, O_WRONLY | O_APPEND);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		const char *bin = getenv("RG_LEDGER_BIN");
		execl(bin, bin, "--allow-wal-corruption", (char *)NULL);
		_exit(127);
	}
	int up = 0;
	for (int i = 0; i < 2000 && !up; i++) {
		LedgerClient *c;
		if (waitpid(pid, NULL, WNOHANG) == pid)
			break;
		if (ledger_client_connect(p->socket, 1000, &c) == 0) {
			WireRequest q = { .op = WIRE_OP_PING };
			WireResponse resp;
			up = ledger_client_call(c, &q, &resp, TIMEOUT_MS) == 0 && resp.status == WIRE_OK;
			ledger_client_close(c);
		}
		if (!up) {
			struct timespec ts = { 0, 10 * 1000000 };
			nanosleep(&ts, NULL);
		}
	}
	CHECK(up);
	int status;
	kill(pid, SIGTERM);
	waitpid(pid, &status, 0);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK(ledger_proc_log_contains(p, "allow_corruption is set"));
}

/* ---- the cases ---- */

static FILE *rel;

static void rel_line(const char *cls, const char *how, unsigned n, unsigned bad)
{
	if (!rel)
		return;
	if (bad)
		fprintf(rel, "%s\t%s\t%u\tFAIL: %u case(s)\n", cls, how, n, bad);
	else
		fprintf(rel, "%s\t%s\t%u\tpass\n", cls, how, n);
}

static void truncations(LedgerProc *p, unsigned last_k, unsigned step)
{
	char path[1400], why[512];
	int s = nseg - 1;
	size_t first = nrec - last_k;
	REQUIRE(recs[first].seg == s);
	size_t from = recs[first].off, to = seg_data_end[s];
	unsigned cases = 0, bad_before = (unsigned)check_failures;
	uint64_t before = 0;
	for (size_t i = 0; i < nrec && recs[i].seg < s; i++)
		before++;

	seg_path(path, sizeof(path), s);
	for (size_t cut = from + (step > 1 ? seed0 % step : 0); cut <= to; cut += step) {
		/* Records of the last segment wholly before the cut. */
		uint64_t keep = before;
		for (size_t i = before; i < nrec && recs[i].nz_end <= cut; i++)
			keep++;
		for (int mode = 0; mode < 2; mode++) {
			restore();
			if (mode == 0) {
				REQUIRE(truncate(path, (off_t)cut) == 0);
			} else {
				int fd = open(path, O_WRONLY);
				REQUIRE(fd >= 0);
				static const uint8_t z[1 << 16];
				REQUIRE(pwrite(fd, z, to - cut, (off_t)cut) == (ssize_t)(to - cut));
				close(fd);
			}
			uint64_t got;
			int rc = recover(0, &got, why, sizeof(why), cut % 97 == 0);
			if (rc != 0 || got != keep) {
				printf("truncation at %s offset %zu (mode %d): rc %d, %" PRIu64
					" records, expected %" PRIu64 " (%s)\n", seg_name[s], cut, mode, rc,
					got, keep, why);
				check_failures++;
			}
			cases++;
		}
	}
	/* A few through the real daemon. */
	for (int i = 0; i < 3; i++) {
		restore();
		REQUIRE(truncate(path, (off_t)(from + rnd() % (to - from))) == 0);
		daemon_check(p, 0);
	}
	printf("truncation: %u cuts in the last %u records recovered as torn tails\n", cases, last_k);
	char how[200];
	snprintf(how, sizeof(how), "every%s byte offset of the last %u records, file cut short "
		 "and zero-filled after the cut; wal_open + rg-ledger (RG_SEED=%" PRIu64 ")",
		 step > 1 ? " 7th" : "", last_k, seed0);
	rel_line("WAL truncated in its last records: torn tail trimmed", how, cases,
		 (unsigned)check_failures - bad_before);
}

/* Whether record i of the last write, with bit `bit` of byte off flipped,
 * still looks like a cut (wal.c RECOVERY): the data stops before the end its
 * (maybe flipped) length declares. Only a flip that lengthens a record past
 * the end of the data, or one in the final record when its payload ends in
 * zero bytes, does; rot and a cut are not told apart there. */
static int flip_looks_cut(size_t i, size_t off, int bit)
{
	Rec *r = &recs[i];
	const uint8_t *seg = seg_orig[r->seg];
	uint8_t w[4];
	memcpy(w, seg + r->off + 4, 4);
	if (off >= r->off + 4 && off < r->off + 8)
		w[off - r->off - 4] ^= (uint8_t)(1u << bit);
	uint32_t len = get32(w) & 0x7fffffffu;
	size_t end = r->off + WAL_RECORD_HEADER_LEN;
	if (len >= 1 && len <= WAL_RECORD_PAYLOAD_MAX)
		end = end + len > seg_size[r->seg] ? seg_size[r->seg] : end + len;
	/* The end of the non-zero data after the flip. */
	size_t nz = recs[nrec - 1].nz_end;
	if (i == nrec - 1) {
		if (off >= nz)
			nz = off + 1;
		else if (off == nz - 1 && (seg[off] ^ (1u << bit)) == 0)
			while (nz > r->off && (nz - 1 == off || seg[nz - 1] == 0))
				nz--;
	}
	return nz < end;
}

/* What a flip at segment s, offset off, bit bit must do: 0 trimmed as torn
 * (keep says how many records survive), 1 refused (keep: with
 * allow_corruption). */
static int flip_expect(int s, size_t off, int bit, uint64_t *keep)
{
	size_t last_start = nrec;
	while (last_start > 0 && !recs[last_start - 1].batch_start)
		last_start--;
	REQUIRE(last_start > 0);
	last_start--; /* the first record of the last write */
	for (size_t i = 0; i < nrec; i++) {
		Rec *r = &recs[i];
		if (r->seg != s || off < r->off || off >= r->off + r->total)
			continue;
		if (off >= r->off + r->len) {
			*keep = nrec; /* padding */
			return 0;
		}
		/* In the last write: bit rot (refused), not a torn write, since
		 * nothing is zeroed, unless it looks like a cut. */
		*keep = i;
		return i >= last_start && r->seg == nseg - 1 ? !flip_looks_cut(i, off, bit) : 1;
	}
	/* After the data: trimmed in the last segment, corruption in an older
	 * one (a later segment holds records). */
	*keep = 0;
	while (*keep < nrec && recs[*keep].seg <= s)
		(*keep)++;
	return s != nseg - 1;
}

static void flips(LedgerProc *p, unsigned n)
{
	char path[1400], why[512];
	unsigned cases = 0, refused = 0, torn = 0, pad = 0, daemon_refuse = 0, daemon_torn = 0;
	unsigned bad_before = (unsigned)check_failures;
	size_t total_data = 0;
	for (int s = 0; s < nseg; s++)
		total_data += seg_data_end[s];

	for (unsigned c = 0; c < n; c++) {
		/* Mostly in the records; some after them; the last write often. */
		int s;
		size_t off;
		uint64_t r = rnd() % 10;
		if (r < 2) {
			s = (int)(rnd() % (uint64_t)nseg);
			if (seg_size[s] <= seg_data_end[s])
				s = nseg - 1;
			size_t room = seg_size[s] - seg_data_end[s];
			off = seg_data_end[s] + rnd() % (room < 4096 ? room : 4096);
		} else if (r < 5) {
			s = nseg - 1;
			size_t i = nrec - 1 - rnd() % 30;
			off = recs[i].off + rnd() % recs[i].total;
		} else {
			size_t at = rnd() % total_data;
			for (s = 0; at >= seg_data_end[s]; s++)
				at -= seg_data_end[s];
			off = at;
		}
		int bit = (int)(rnd() % 8);
		uint64_t keep, got;
		int expect = flip_expect(s, off, bit, &keep);

		restore();
		seg_path(path, sizeof(path), s);
		int fd = open(path, O_RDWR);
		uint8_t b;
		REQUIRE(fd >= 0 && pread(fd, &b, 1, (off_t)off) == 1);
		b ^= (uint8_t)(1u << bit);
		REQUIRE(pwrite(fd, &b, 1, (off_t)off) == 1);
		close(fd);

		int rc = recover(0, &got, why, sizeof(why), 0);
		int ok;
		if (expect == 0) {
			ok = rc == 0 && got == keep;
			if (keep == nrec && off < seg_data_end[s])
				pad++;
			else
				torn++;
		} else {
			char where[64];
			size_t exp_off = keep < nrec && recs[keep].seg == s ? recs[keep].off : seg_data_end[s];
			snprintf(where, sizeof(where), "offset %zu:", exp_off);
			ok = rc == -EBADMSG && strstr(why, seg_name[s]) && strstr(why, where) &&
			     strstr(why, "--allow-wal-corruption") && strstr(why, "refusing to start");
			if (ok) {
				uint64_t got2;
				ok = recover(1, &got2, why, sizeof(why), 0) == 0 && got2 == keep;
			}
			refused++;
		}
		if (!ok) {
			printf("flip of bit %d at %s offset %zu: rc %d, %" PRIu64 " records, "
				"expected %s with %" PRIu64 " (%s)\n", bit, seg_name[s], off, rc, got,
				expect ? "refusal" : "recovery", keep, why);
			check_failures++;
		}
		cases++;
		/* A few through the real daemon, restoring the flip first. */
		if ((expect && daemon_refuse < 3) || (!expect && keep < nrec && daemon_torn < 2)) {
			restore();
			fd = open(path, O_RDWR);
			REQUIRE(fd >= 0 && pwrite(fd, &b, 1, (off_t)off) == 1);
			close(fd);
			daemon_check(p, expect);
			if (expect)
				daemon_refuse++;
			else
				daemon_torn++;
		}
	}
	printf("bit flips: %u cases: %u refused (in records), %u trimmed (after the data, or like a cut), "
	       "%u in padding (not checksummed, harmless)\n", cases, refused, torn, pad);
	char how[200];
	snprintf(how, sizeof(how), "one bit flipped at a seeded offset over %d segments written by "
		 "rg-ledger; wal_open + rg-ledger (RG_SEED=%" PRIu64 ")", nseg, seed0);
	char cls[200];
	snprintf(cls, sizeof(cls), "WAL bit flip: refused in records, the last write's too (%u), "
		 "trimmed after the data or like a cut (%u), ignored in padding (%u)", refused, torn, pad);
	rel_line(cls, how, cases, (unsigned)check_failures - bad_before);
}

int main(void)
{
	const char *s = getenv("RG_SEED");
	int longrun = getenv("RG_FAULT_LONG") && atoi(getenv("RG_FAULT_LONG")) > 0;
	/* Sanitizer trees run several times slower: fewer cases there. */
	int quick = longrun || !getenv("RG_FAULT_QUICK") ? 0 : atoi(getenv("RG_FAULT_QUICK"));
	seed = s ? strtoull(s, NULL, 10) : (uint64_t)time(NULL);
	seed0 = seed;
	printf("test_wal_damage: RG_SEED=%" PRIu64 "%s\n", seed0,
	       longrun ? " RG_FAULT_LONG=1" : quick > 1 ? " RG_FAULT_QUICK=2" : quick ? " RG_FAULT_QUICK=1" : "");
	fflush(stdout);
	log_set_context("test_wal_damage");
	setenv("RG_SHARDS", "1", 1);
	setenv("RG_WAL_SEGMENT_SIZE_MB", "1", 1);
	setenv("RG_SNAPSHOT_INTERVAL_RECORDS", "1000000", 1);
	setenv("RG_PG_CONNINFO", "", 1);

	char tmpl[512];
	ledger_proc_use_tmpfs("wal-damage", tmpl, sizeof(tmpl));
	const char *dir = getenv("RG_RELIABILITY_DIR");
	if (dir) {
		char path[600];
		mkdir(dir, 0755);
		snprintf(path, sizeof(path), "%s/test_wal_damage.tsv", dir);
		rel = fopen(path, "w");
	}

	LedgerProc p;
	ledger_proc_init(&p, "wal-damage");
	snprintf(shard_dir, sizeof(shard_dir), "%s/shard-000", p.data_dir);
	make_log(&p);
	load_log();
	unsigned starts = 0;
	for (size_t i = 0; i < nrec; i++)
		starts += recs[i].batch_start;
	printf("log: %zu records in %d segments, %u writes\n", nrec, nseg, starts);
	CHECK(starts > 10);

	/* Thousands of expected torn-tail warnings and refusals: the bulk goes
	 * to a file, failures of this test go to stdout. */
	char quiet[700];
	snprintf(quiet, sizeof(quiet), "%s/recovery.log", p.dir);
	fflush(stderr);
	int saved_err = dup(2), qfd = open(quiet, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	REQUIRE(saved_err >= 0 && qfd >= 0);
	dup2(qfd, 2);
	close(qfd);
	truncations(&p, longrun ? 40 : quick > 1 ? 1 : quick ? 2 : 6, quick > 1 ? 7 : 1);
	flips(&p, longrun ? 40000 : quick > 1 ? 100 : quick ? 400 : 1500);
	fflush(stderr);
	dup2(saved_err, 2);
	close(saved_err);
	printf("real rg-ledger runs on damaged logs: %d\n", daemon_cases);

	if (rel)
		fclose(rel);
	for (int i = 0; i < nseg; i++)
		free(seg_orig[i]);
	ledger_proc_cleanup(&p, tmpl, check_failures);
	return check_exit();
}
