/* test_wal.c — the WAL's framing, rotation, recovery, torn tails and corruption.
 *
 * Each case works in its own directory under $RG_TEST_TMP and removes it
 * afterwards. Payloads are a function of their LSN (and never contain a zero
 * byte), so a callback can check every record it is handed without keeping
 * a copy, and a cut through a payload always changes it. */
#include "ledger/wal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "testdir.h"
#include "common/log.h"

#define MIB ((size_t)1 << 20)

/* ---- helpers: directories and files ---- */

static int seg_names(const char *dir, uint64_t *lsns, int max)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;

	REQUIRE(d);
	while ((de = readdir(d))) {
		unsigned long long v;
		char tail[8];
		if (sscanf(de->d_name, "wal-%16llx.%4s", &v, tail) == 2 && !strcmp(tail, "seg")) {
			REQUIRE(n < max);
			lsns[n++] = v;
		}
	}
	closedir(d);
	for (int i = 1; i < n; i++)         /* insertion sort: a handful of names */
		for (int j = i; j > 0 && lsns[j - 1] > lsns[j]; j--) {
			uint64_t t = lsns[j];
			lsns[j] = lsns[j - 1];
			lsns[j - 1] = t;
		}
	return n;
}

static void seg_path(char *out, size_t len, const char *dir, uint64_t lsn)
{
	snprintf(out, len, "%s/wal-%016" PRIx64 ".seg", dir, lsn);
}

static uint8_t *read_file(const char *path, size_t *len)
{
	struct stat sb;
	int fd = open(path, O_RDONLY);

	REQUIRE(fd >= 0 && fstat(fd, &sb) == 0);
	uint8_t *p = malloc((size_t)sb.st_size + 1);
	REQUIRE(p);
	REQUIRE(read(fd, p, (size_t)sb.st_size) == sb.st_size);
	close(fd);
	*len = (size_t)sb.st_size;
	return p;
}

static void write_file(const char *path, const uint8_t *p, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	REQUIRE(fd >= 0);
	REQUIRE(write(fd, p, len) == (ssize_t)len);
	close(fd);
}

static void flip_bit(const char *path, size_t off, int bit)
{
	uint8_t b;
	int fd = open(path, O_RDWR);

	REQUIRE(fd >= 0);
	REQUIRE(pread(fd, &b, 1, (off_t)off) == 1);
	b ^= (uint8_t)(1u << bit);
	REQUIRE(pwrite(fd, &b, 1, (off_t)off) == 1);
	close(fd);
}

/* ---- helpers: records ---- */

static size_t payload_len(uint64_t lsn)
{
	return 1 + (size_t)(lsn * 7919 % 120);
}

static void payload_fill(uint64_t lsn, uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)(1 + (lsn * 31 + i * 17) % 255);
}

static size_t frame_len(uint64_t lsn)
{
	return WAL_RECORD_HEADER_LEN + ((payload_len(lsn) + 7) & ~(size_t)7);
}

typedef struct Got {
	uint64_t n, first, last;
	int bad;
} Got;

static int got_fn(void *ctx, uint64_t lsn, const uint8_t *payload, size_t len)
{
	Got *g = ctx;
	uint8_t want[WAL_RECORD_PAYLOAD_MAX];

	if (g->n && lsn != g->last + 1)
		g->bad = 1;
	if (!g->n)
		g->first = lsn;
	g->last = lsn;
	g->n++;
	payload_fill(lsn, want, payload_len(lsn));
	if (len != payload_len(lsn) || memcmp(payload, want, len) != 0)
		g->bad = 1;
	return 0;
}

static WalOptions opts(const char *dir, size_t segment_size)
{
	WalOptions o = { .dir = dir, .segment_size = segment_size, .allow_corruption = 0 };
	return o;
}

/* Opens expecting success; REQUIREs it. */
static Wal *open_ok(const WalOptions *o, uint64_t after, Got *g, WalRecoveryStats *st)
{
	char why[512];
	Wal *w = NULL;

	memset(g, 0, sizeof(*g));
	int rc = wal_open(o, after, got_fn, g, &w, st, why, sizeof(why));
	if (rc != 0)
		fprintf(stderr, "wal_open: %d %s\n", rc, why);
	REQUIRE(rc == 0 && w);
	CHECK(!g->bad);
	return w;
}

/* Appends records next..next+count-1 in batches of at most batch_max records
 * (and at most a quarter segment), syncing after each batch. */
static void append(Wal *w, uint64_t count, unsigned batch_max, size_t segment_size)
{
	Buf b;
	uint8_t p[WAL_RECORD_PAYLOAD_MAX];
	uint64_t lsn = wal_next_lsn(w), end = lsn + count;

	buf_init(&b, 0);
	while (lsn < end) {
		buf_reset(&b);
		for (unsigned k = 0; k < batch_max && lsn < end; k++, lsn++) {
			if (b.len + frame_len(lsn) > segment_size / 4)
				break;
			payload_fill(lsn, p, payload_len(lsn));
			wal_frame(&b, lsn, p, payload_len(lsn));
		}
		CHECK_EQ_INT(wal_write(w, b.data, b.len), 0);
		CHECK_EQ_INT(wal_sync(w), 0);
		CHECK_EQ_INT(wal_next_lsn(w), lsn);
	}
	buf_free(&b);
}

/* ---- cases ---- */

static void test_frame_layout(void)
{
	Buf b;
	const uint8_t payload[3] = { 'a', 'b', 'c' };

	buf_init(&b, 0);
	wal_frame(&b, 0x0102030405060708ull, payload, 3);
	CHECK_EQ_INT(b.len, 24);
	CHECK_EQ_INT(get_u32le(b.data + 4), 3);
	CHECK(get_u64le(b.data + 8) == 0x0102030405060708ull);
	CHECK(!memcmp(b.data + 16, "abc\0\0\0\0\0", 8));
	wal_frame(&b, 7, payload, 1);
	CHECK_EQ_INT(b.len, 48);
	buf_free(&b);
}

static void test_roundtrip(void)
{
	char dir[512];
	WalOptions o;
	WalRecoveryStats st;
	Got g;
	Wal *w;

	testdir_case(dir, sizeof(dir), "roundtrip");
	o = opts(dir, MIB);
	w = open_ok(&o, 0, &g, &st);
	CHECK_EQ_INT(g.n, 0);
	CHECK_EQ_INT(st.last_lsn, 0);
	CHECK_EQ_INT(wal_next_lsn(w), 1);
	append(w, 500, 37, MIB);
	wal_close(w);

	uint64_t segs[8];
	char path[1024];
	struct stat sb;
	CHECK_EQ_INT(seg_names(dir, segs, 8), 1);
	CHECK(segs[0] == 1);
	seg_path(path, sizeof(path), dir, 1);
	CHECK(stat(path, &sb) == 0 && (size_t)sb.st_size == MIB);

	w = open_ok(&o, 0, &g, &st);
	CHECK_EQ_INT(g.n, 500);
	CHECK_EQ_INT(g.first, 1);
	CHECK_EQ_INT(g.last, 500);
	CHECK_EQ_INT(st.records, 500);
	CHECK_EQ_INT(st.last_lsn, 500);
	CHECK_EQ_INT(st.torn_bytes, 0);
	CHECK_EQ_INT(st.segments, 1);
	CHECK_EQ_INT(wal_next_lsn(w), 501);

	/* Another Wal on the same directory is refused while this one is open. */
	Wal *w2 = NULL;
	char why[256];
	CHECK_EQ_INT(wal_open(&o, 0, NULL, NULL, &w2, NULL, why, sizeof(why)), -EBUSY);
	CHECK(w2 == NULL);

	append(w, 10, 3, MIB);
	wal_close(w);

	/* after_lsn: skipped but still verified. */
	w = open_ok(&o, 300, &g, &st);
	CHECK_EQ_INT(g.n, 210);
	CHECK_EQ_INT(g.first, 301);
	CHECK_EQ_INT(g.last, 510);
	CHECK_EQ_INT(st.records, 210);
	CHECK_EQ_INT(st.last_lsn, 510);
	wal_close(w);
	w = open_ok(&o, 510, &g, &st);
	CHECK_EQ_INT(g.n, 0);
	CHECK_EQ_INT(wal_next_lsn(w), 511);
	wal_close(w);

	/* A malformed batch is refused and changes nothing. */
	w = open_ok(&o, 0, &g, &st);
	Buf b;
	uint8_t p[8] = "xxxxxxx";
	buf_init(&b, 0);
	wal_frame(&b, 999, p, 8);
	CHECK_EQ_INT(wal_write(w, b.data, b.len), -EINVAL);
	CHECK_EQ_INT(wal_next_lsn(w), 511);
	buf_free(&b);
	wal_close(w);

	/* Without a callback recovery only verifies. */
	w = NULL;
	CHECK_EQ_INT(wal_open(&o, 0, NULL, NULL, &w, &st, why, sizeof(why)), 0);
	CHECK_EQ_INT(st.records, 510);
	wal_close(w);
	testdir_remove(dir);
}

static int stop_at_5(void *ctx, uint64_t lsn, const uint8_t *payload, size_t len)
{
	return lsn == 5 ? 42 : 0;
}

static void test_callback_stop(void)
{
	char dir[512], why[256];
	WalOptions o;
	Got g;
	Wal *w;

	testdir_case(dir, sizeof(dir), "cbstop");
	o = opts(dir, MIB);
	w = open_ok(&o, 0, &g, NULL);
	append(w, 10, 10, MIB);
	wal_close(w);
	w = NULL;
	CHECK_EQ_INT(wal_open(&o, 0, stop_at_5, NULL, &w, NULL, why, sizeof(why)), 42);
	CHECK(w == NULL);
	testdir_remove(dir);
}

static void test_rotation(void)
{
	char dir[512];
	WalOptions o;
	WalRecoveryStats st;
	Got g;
	Wal *w;
	uint64_t segs[64];

	testdir_case(dir, sizeof(dir), "rotation");
	o = opts(dir, MIB);
	w = open_ok(&o, 0, &g, &st);
	append(w, 40000, 1000, MIB);      /* ~3.3 MB: several segments */
	wal_close(w);
	int n = seg_names(dir, segs, 64);
	CHECK(n >= 4);

	w = open_ok(&o, 0, &g, &st);
	CHECK_EQ_INT(g.n, 40000);
	CHECK_EQ_INT(g.first, 1);
	CHECK_EQ_INT(g.last, 40000);
	CHECK_EQ_INT(st.segments, n);
	CHECK_EQ_INT(st.torn_bytes, 0);
	/* A batch of a quarter segment right after reopening still fits or rotates. */
	append(w, 5000, 5000, MIB);
	wal_close(w);
	w = open_ok(&o, 0, &g, &st);
	CHECK_EQ_INT(g.n, 45000);
	CHECK_EQ_INT(g.last, 45000);
	wal_close(w);
	testdir_remove(dir);
}

/* A batch larger than a whole segment (after downtime every overdue hold
 * times out at once) is split across segments and recovers whole. */
static void test_batch_larger_than_segment(void)
{
	char dir[512];
	WalOptions o;
	WalRecoveryStats st;
	Got g;
	Buf b;
	uint8_t p[WAL_RECORD_PAYLOAD_MAX];

	testdir_case(dir, sizeof(dir), "bigbatch");
	o = opts(dir, MIB);
	Wal *w = open_ok(&o, 0, &g, &st);
	append(w, 100, 100, MIB);
	buf_init(&b, 0);
	uint64_t lsn = wal_next_lsn(w);
	while (b.len < 3 * MIB) {
		payload_fill(lsn, p, payload_len(lsn));
		wal_frame(&b, lsn, p, payload_len(lsn));
		lsn++;
	}
	CHECK_EQ_INT(wal_write(w, b.data, b.len), 0);
	CHECK_EQ_INT(wal_sync(w), 0);
	CHECK_EQ_INT(wal_next_lsn(w), lsn);
	buf_free(&b);
	wal_close(w);
	uint64_t segs[64];
	CHECK(seg_names(dir, segs, 64) >= 4);
	w = open_ok(&o, 0, &g, &st);
	CHECK_EQ_INT(g.n, lsn - 1);
	CHECK_EQ_INT(st.torn_bytes, 0);
	wal_close(w);
	testdir_remove(dir);
}

/* Reads every record back while appending continues, across rotations:
 * returns exactly the records up to the durable LSN, in order, never more;
 * starts mid-log; says -ENOENT for an LSN whose segment was deleted; and
 * reports a damaged durable record as -EBADMSG. */
static void check_read(WalReader *r, uint64_t upto, uint64_t *expect)
{
	uint64_t lsn;
	const uint8_t *p;
	size_t len;
	uint8_t want[WAL_RECORD_PAYLOAD_MAX];
	int rc;

	while ((rc = wal_reader_next(r, upto, &lsn, &p, &len)) == 1) {
		CHECK_EQ_INT(lsn, *expect);
		payload_fill(lsn, want, payload_len(lsn));
		CHECK(len == payload_len(lsn) && memcmp(p, want, len) == 0);
		(*expect)++;
	}
	CHECK_EQ_INT(rc, 0);
	CHECK_EQ_INT(*expect, upto + 1);
}

static void test_reader_follows_log(void)
{
	char dir[512];
	WalOptions o;
	WalRecoveryStats st;
	Got g;
	WalReader *r, *mid;
	uint64_t expect = 1, expect_mid = 777;

	testdir_case(dir, sizeof(dir), "reader");
	o = opts(dir, MIB);
	Wal *w = open_ok(&o, 0, &g, &st);
	append(w, 10, 10, MIB);
	REQUIRE(wal_reader_open(dir, 1, &r) == 0);
	check_read(r, 10, &expect);
	for (int round = 0; round < 40; round++) {
		append(w, 1000 + (uint64_t)round * 37, 700, MIB); /* rotates every few rounds */
		uint64_t durable = wal_next_lsn(w) - 1;
		check_read(r, durable - 5, &expect);              /* a little behind */
		check_read(r, durable, &expect);
		if (round == 3)
			REQUIRE(wal_reader_open(dir, expect_mid, &mid) == 0);
		if (round >= 3)
			check_read(mid, durable, &expect_mid);
	}
	wal_reader_close(mid);

	/* Segments deleted behind the reader: it keeps going; a new reader
	 * cannot start before the oldest remaining segment. */
	uint64_t last = wal_next_lsn(w) - 1;
	CHECK(wal_delete_through(w, last - 100) > 0);
	append(w, 50, 50, MIB);
	check_read(r, last + 50, &expect);
	CHECK_EQ_INT(wal_reader_open(dir, 1, &mid), -ENOENT);
	wal_reader_close(r);

	/* A damaged durable record. */
	REQUIRE(wal_reader_open(dir, last + 1, &r) == 0);
	wal_close(w);
	uint64_t segs[64];
	int n = seg_names(dir, segs, 64);
	char path[600];
	seg_path(path, sizeof(path), dir, segs[n - 1]);
	flip_bit(path, WAL_RECORD_HEADER_LEN + 1, 3); /* the first record's payload */
	uint64_t lsn;
	const uint8_t *p;
	size_t len;
	int rc;
	while ((rc = wal_reader_next(r, last + 50, &lsn, &p, &len)) == 1)
		;
	CHECK_EQ_INT(rc, -EBADMSG);
	wal_reader_close(r);
	testdir_remove(dir);
}

/* Cuts the log at every byte offset inside its last three records, by
 * truncating the file (mode 0) or zeroing the tail (mode 1), and recovers. */
static void test_torn_tail_every_offset(void)
{
	char dir[512], path[1024];
	WalOptions o;
	WalRecoveryStats st;
	Got g;
	Wal *w;
	const uint64_t nrec = 40;
	size_t start[41];
	size_t seg_len;

	testdir_case(dir, sizeof(dir), "torn");
	o = opts(dir, MIB);
	w = open_ok(&o, 0, &g, &st);
	append(w, nrec, 7, MIB);
	wal_close(w);
	start[0] = 0;
	for (uint64_t i = 1; i <= nrec; i++)
		start[i] = start[i - 1] + frame_len(i);
	seg_path(path, sizeof(path), dir, 1);
	uint8_t *orig = read_file(path, &seg_len);
	REQUIRE(seg_len == MIB);
	uint8_t *img = malloc(seg_len);
	REQUIRE(img);

	LogLevel saved = log_level;
	log_level = LOG_ERROR;            /* hundreds of expected torn-tail warnings */
	unsigned cases = 0, torn_cases = 0;
	for (size_t cut = start[nrec - 3]; cut < start[nrec]; cut++) {
		/* Records wholly before the cut (their payload; padding is zero
		 * anyway), and the torn bytes recovery must find after them. */
		uint64_t keep = 0;
		while (keep < nrec && start[keep] + WAL_RECORD_HEADER_LEN + payload_len(keep + 1) <= cut)
			keep++;
		size_t end = start[keep], torn = 0;
		for (size_t i = end; i < cut; i++)
			if (orig[i])
				torn = i + 1 - end;

		for (int mode = 0; mode < 2; mode++) {
			testdir_clear(dir);
			memcpy(img, orig, cut);
			memset(img + cut, 0, seg_len - cut);
			write_file(path, img, mode == 0 ? cut : seg_len);

			w = open_ok(&o, 0, &g, &st);
			CHECK_EQ_INT(g.n, keep);
			CHECK_EQ_INT(st.last_lsn, keep);
			CHECK_EQ_INT(st.torn_bytes, torn);
			CHECK_EQ_INT(wal_next_lsn(w), keep + 1);
			if (torn)
				torn_cases++;
			append(w, 3, 3, MIB);
			wal_close(w);

			w = open_ok(&o, 0, &g, &st);
			CHECK_EQ_INT(g.n, keep + 3);
			CHECK_EQ_INT(st.torn_bytes, 0);
			wal_close(w);
			struct stat sb;
			CHECK(stat(path, &sb) == 0 && (size_t)sb.st_size == MIB);
			cases++;
		}
	}
	log_level = saved;
	printf("torn tail: %u cuts recovered (%u with torn bytes)\n", cases, torn_cases);
	CHECK(torn_cases > cases / 2);
	free(img);
	free(orig);
	testdir_remove(dir);
}

static void test_bit_flips(void)
{
	char dir[512], path[1024], why[512];
	WalOptions o;
	WalRecoveryStats st;
	Got g;
	Wal *w;
	size_t start[101];

	testdir_case(dir, sizeof(dir), "flip");
	o = opts(dir, MIB);
	start[0] = 0;
	for (uint64_t i = 1; i <= 100; i++)
		start[i] = start[i - 1] + frame_len(i);
	seg_path(path, sizeof(path), dir, 1);

	/* A flip in the payload, the length, the LSN or the crc of record 50
	 * (valid records follow): refused, then dropped when allowed. */
	const size_t where[] = { 16 + 3, 4, 8, 1 };
	for (unsigned k = 0; k < sizeof(where) / sizeof(where[0]); k++) {
		testdir_clear(dir);
		w = open_ok(&o, 0, &g, &st);
		append(w, 100, 9, MIB);
		wal_close(w);
		flip_bit(path, start[49] + where[k], 2);

		w = NULL;
		why[0] = '\0';
		memset(&g, 0, sizeof(g));
		CHECK_EQ_INT(wal_open(&o, 0, got_fn, &g, &w, &st, why, sizeof(why)), -EBADMSG);
		CHECK(w == NULL);
		CHECK(strstr(why, "wal-0000000000000001.seg") != NULL);
		CHECK(strstr(why, "valid records follow") != NULL);
		CHECK(strstr(why, "--allow-wal-corruption") != NULL);
		char off[64];
		snprintf(off, sizeof(off), "offset %zu:", start[49]);
		CHECK(strstr(why, off) != NULL);
		if (k == 0)
			printf("refused as expected: %s\n", why);
		/* Refusing changed nothing: it refuses again. */
		CHECK_EQ_INT(wal_open(&o, 0, NULL, NULL, &w, &st, why, sizeof(why)), -EBADMSG);

		o.allow_corruption = 1;
		w = open_ok(&o, 0, &g, &st);
		o.allow_corruption = 0;
		CHECK_EQ_INT(g.n, 49);
		CHECK_EQ_INT(st.last_lsn, 49);
		CHECK_EQ_INT(wal_next_lsn(w), 50);
		append(w, 5, 5, MIB);
		wal_close(w);
		w = open_ok(&o, 0, &g, &st);
		CHECK_EQ_INT(g.n, 54);
		CHECK_EQ_INT(st.torn_bytes, 0);
		wal_close(w);
	}

	/* A flip in the last record is bit rot, not a torn write (nothing in
	 * it is zeroed): that record may have been acknowledged. Refused, and
	 * dropped when allowed. */
	testdir_clear(dir);
	w = open_ok(&o, 0, &g, &st);
	append(w, 100, 9, MIB);
	wal_close(w);
	flip_bit(path, start[99] + 16, 0);
	w = NULL;
	CHECK_EQ_INT(wal_open(&o, 0, NULL, NULL, &w, &st, why, sizeof(why)), -EBADMSG);
	CHECK(w == NULL);
	CHECK(strstr(why, "in the last write") != NULL);
	CHECK(strstr(why, "--allow-wal-corruption") != NULL);
	o.allow_corruption = 1;
	w = open_ok(&o, 0, &g, &st);
	o.allow_corruption = 0;
	CHECK_EQ_INT(g.n, 99);
	CHECK_EQ_INT(st.torn_bytes, 0);
	CHECK_EQ_INT(wal_next_lsn(w), 100);
	append(w, 1, 1, MIB);
	wal_close(w);
	w = open_ok(&o, 0, &g, &st);
	CHECK_EQ_INT(g.n, 100);
	CHECK_EQ_INT(st.torn_bytes, 0);
	wal_close(w);

	/* Garbage after the clean end of the last segment is trimmed, not replayed. */
	uint8_t junk[40];
	memset(junk, 0x5a, sizeof(junk));
	int fd = open(path, O_WRONLY);
	REQUIRE(fd >= 0 && pwrite(fd, junk, sizeof(junk), (off_t)start[100] + 64) == (ssize_t)sizeof(junk));
	close(fd);
	w = open_ok(&o, 0, &g, &st);
	CHECK_EQ_INT(g.n, 100);
	CHECK_EQ_INT(st.torn_bytes, 64 + sizeof(junk));
	wal_close(w);
	testdir_remove(dir);
}

/* Zeros [from, to) of a file: the pages a crash lost (they were zeros
 * before the write, the segment being preallocated). */
static void zero_bytes(const char *path, size_t from, size_t to)
{
	uint8_t z[4096] = { 0 };
	int fd = open(path, O_WRONLY);

	REQUIRE(fd >= 0 && to - from <= sizeof(z));
	REQUIRE(pwrite(fd, z, to - from, (off_t)from) == (ssize_t)(to - from));
	close(fd);
}

/* A crash during the last write can keep a later page of it and lose an
 * earlier one: the valid records after the hole belong to the same unsynced
 * (never acknowledged) write, so it is a torn tail, not corruption. The
 * start of a later write after a hole still means corruption: each write is
 * synced before the next begins. */
static void test_torn_write_out_of_order(void)
{
	char dir[512], path[1024], why[512];
	WalOptions o;
	WalRecoveryStats st;
	Got g;
	Wal *w;
	size_t start[61];

	testdir_case(dir, sizeof(dir), "tornpages");
	o = opts(dir, MIB);
	start[0] = 0;
	for (uint64_t i = 1; i <= 60; i++)
		start[i] = start[i - 1] + frame_len(i);
	seg_path(path, sizeof(path), dir, 1);

	/* Batches of 10: records 51..60 are the last write. */
	for (int k = 0; k < 3; k++) {
		testdir_clear(dir);
		w = open_ok(&o, 0, &g, &st);
		append(w, 60, 10, MIB);
		wal_close(w);
		uint64_t hole = k == 0 ? 51 : k == 1 ? 53 : 59; /* first, middle, near the end */
		zero_bytes(path, start[hole - 1], start[hole]);
		w = open_ok(&o, 0, &g, &st);
		CHECK_EQ_INT(g.n, hole - 1);
		CHECK_EQ_INT(wal_next_lsn(w), hole);
		CHECK(st.torn_bytes > 0);
		append(w, 4, 4, MIB);
		wal_close(w);
		w = open_ok(&o, 0, &g, &st);
		CHECK_EQ_INT(g.n, hole + 3);
		CHECK_EQ_INT(st.torn_bytes, 0);
		wal_close(w);
	}

	/* The same hole one write earlier: the last write's start follows. */
	testdir_clear(dir);
	w = open_ok(&o, 0, &g, &st);
	append(w, 60, 10, MIB);
	wal_close(w);
	zero_bytes(path, start[44], start[45]);
	w = NULL;
	CHECK_EQ_INT(wal_open(&o, 0, NULL, NULL, &w, &st, why, sizeof(why)), -EBADMSG);
	CHECK(w == NULL);
	CHECK(strstr(why, "valid records follow") != NULL);
	testdir_remove(dir);
}

/* Torn write or bit rot inside the last write: a crash loses whole sectors,
 * which revert to zeros (the segment was zero-filled); rot leaves non-zero
 * garbage. The last write is records 41..60, about 1.4 KiB, so a whole
 * 512-byte sector lies inside it: zeroed it is trimmed, one bit flipped in
 * the same place is refused. */
static void test_torn_sector_or_rot(void)
{
	char dir[512], path[1024], why[512], where[64];
	WalOptions o;
	WalRecoveryStats st;
	Got g;
	Wal *w;
	size_t start[61];

	testdir_case(dir, sizeof(dir), "sector");
	o = opts(dir, MIB);
	start[0] = 0;
	for (uint64_t i = 1; i <= 60; i++)
		start[i] = start[i - 1] + frame_len(i);
	seg_path(path, sizeof(path), dir, 1);
	size_t sec = (start[40] + 511) & ~(size_t)511;
	REQUIRE(sec + 512 < start[60]);
	/* The record the sector starts in (or after whose payload it starts). */
	uint64_t keep = 0;
	while (start[keep] + WAL_RECORD_HEADER_LEN + payload_len(keep + 1) <= sec)
		keep++;
	REQUIRE(keep >= 40);

	for (int rot = 0; rot < 2; rot++) {
		testdir_clear(dir);
		w = open_ok(&o, 0, &g, &st);
		append(w, 40, 10, MIB);
		append(w, 20, 20, MIB);
		wal_close(w);
		if (rot)
			flip_bit(path, sec + 100, 3);
		else
			zero_bytes(path, sec, sec + 512);
		if (!rot) {
			w = open_ok(&o, 0, &g, &st);
			CHECK_EQ_INT(g.n, keep);
			CHECK(st.torn_bytes > 0);
			CHECK_EQ_INT(wal_next_lsn(w), keep + 1);
			wal_close(w);
			continue;
		}
		uint64_t bad = keep;
		while (start[bad + 1] <= sec + 100)
			bad++;
		w = NULL;
		CHECK_EQ_INT(wal_open(&o, 0, NULL, NULL, &w, &st, why, sizeof(why)), -EBADMSG);
		CHECK(w == NULL);
		snprintf(where, sizeof(where), "offset %zu:", start[bad]);
		CHECK(strstr(why, where) != NULL);
		CHECK(strstr(why, "wal-0000000000000001.seg") != NULL);
		CHECK(strstr(why, "--allow-wal-corruption") != NULL);
		printf("rot in the last write refused: %s\n", why);
	}
	testdir_remove(dir);
}

static void test_corruption_in_older_segment(void)
{
	char dir[512], path[1024], why[512];
	WalOptions o;
	WalRecoveryStats st;
	Got g;
	Wal *w;
	uint64_t segs[16];

	testdir_case(dir, sizeof(dir), "oldseg");
	o = opts(dir, MIB);
	w = open_ok(&o, 0, &g, &st);
	append(w, 30000, 500, MIB);
	wal_close(w);
	int n = seg_names(dir, segs, 16);
	REQUIRE(n >= 3);

	/* The last record of segment 0: damage in a segment with a successor is
	 * never a torn tail, even with nothing after it in that segment. */
	uint64_t last0 = segs[1] - 1;
	size_t off = 0;
	for (uint64_t l = 1; l < last0; l++)
		off += frame_len(l);
	seg_path(path, sizeof(path), dir, segs[0]);
	flip_bit(path, off + 16, 5);
	w = NULL;
	CHECK_EQ_INT(wal_open(&o, 0, NULL, NULL, &w, &st, why, sizeof(why)), -EBADMSG);
	CHECK(strstr(why, "valid records follow") != NULL);

	o.allow_corruption = 1;
	w = open_ok(&o, 0, &g, &st);
	o.allow_corruption = 0;
	CHECK_EQ_INT(g.n, last0 - 1);
	CHECK_EQ_INT(seg_names(dir, segs, 16), 1);
	append(w, 10, 10, MIB);
	wal_close(w);
	w = open_ok(&o, 0, &g, &st);
	CHECK_EQ_INT(g.n, last0 + 9);
	wal_close(w);
	testdir_remove(dir);
}

static void test_gap_and_delete(void)
{
	const uint64_t nrec = 70000;
	char dir[512], path[1024], why[512];
	WalOptions o;
	WalRecoveryStats st;
	Got g;
	Wal *w;
	uint64_t segs[16];

	testdir_case(dir, sizeof(dir), "gap");
	o = opts(dir, MIB);
	w = open_ok(&o, 0, &g, &st);
	append(w, nrec, 800, MIB);
	CHECK_EQ_INT(wal_delete_through(w, 0), 0);
	wal_close(w);
	int n = seg_names(dir, segs, 16);
	REQUIRE(n >= 5);

	/* wal_delete_through removes only segments all of whose records are <= lsn. */
	w = open_ok(&o, 0, &g, &st);
	CHECK_EQ_INT(wal_delete_through(w, segs[1] - 2), 0);   /* segment 0 ends at segs[1] - 1 */
	CHECK_EQ_INT(wal_delete_through(w, segs[1] - 1), 1);
	CHECK_EQ_INT(wal_delete_through(w, segs[3] - 1), 2);
	CHECK_EQ_INT(seg_names(dir, segs + 8, 8), n - 3);
	CHECK(segs[8] == segs[3]);
	wal_close(w);

	/* Recovery needs a snapshot that covers what was deleted. */
	uint64_t after = segs[3] + 10;
	w = open_ok(&o, after, &g, &st);
	CHECK_EQ_INT(g.n, nrec - after);
	CHECK_EQ_INT(g.first, after + 1);
	CHECK_EQ_INT(st.last_lsn, nrec);
	wal_close(w);
	w = open_ok(&o, segs[3] - 1, &g, &st);
	CHECK_EQ_INT(g.first, segs[3]);
	wal_close(w);
	w = NULL;
	CHECK_EQ_INT(wal_open(&o, segs[3] - 2, NULL, NULL, &w, &st, why, sizeof(why)), -EBADMSG);
	CHECK(strstr(why, "missing") != NULL);

	/* The current segment is never deleted. */
	w = open_ok(&o, segs[3] - 1, &g, &st);
	CHECK_EQ_INT(wal_delete_through(w, UINT64_MAX - 1), n - 4);
	CHECK_EQ_INT(seg_names(dir, segs + 8, 8), 1);
	CHECK(segs[8] == segs[n - 1]);
	wal_close(w);
	w = open_ok(&o, nrec, &g, &st);
	CHECK_EQ_INT(g.n, 0);
	CHECK_EQ_INT(wal_next_lsn(w), nrec + 1);
	wal_close(w);
	testdir_remove(dir);

	/* A segment missing in the middle is a gap: corruption. */
	testdir_case(dir, sizeof(dir), "gap2");
	o = opts(dir, MIB);
	w = open_ok(&o, 0, &g, &st);
	append(w, 40000, 800, MIB);
	wal_close(w);
	n = seg_names(dir, segs, 16);
	REQUIRE(n >= 3);
	seg_path(path, sizeof(path), dir, segs[1]);
	REQUIRE(unlink(path) == 0);
	w = NULL;
	CHECK_EQ_INT(wal_open(&o, 0, NULL, NULL, &w, &st, why, sizeof(why)), -EBADMSG);
	CHECK(w == NULL);
	CHECK(strstr(why, "missing") != NULL);
	printf("gap refused as expected: %s\n", why);
	/* ... unless the snapshot covers the missing records. */
	w = open_ok(&o, segs[2] - 1, &g, &st);
	CHECK_EQ_INT(g.first, segs[2]);
	CHECK_EQ_INT(g.last, 40000);
	wal_close(w);
	/* With allow_corruption the log ends before the gap. */
	o.allow_corruption = 1;
	w = open_ok(&o, 0, &g, &st);
	o.allow_corruption = 0;
	CHECK_EQ_INT(g.n, segs[1] - 1);
	CHECK_EQ_INT(wal_next_lsn(w), segs[1]);
	append(w, 3, 3, MIB);
	wal_close(w);
	w = open_ok(&o, 0, &g, &st);
	CHECK_EQ_INT(g.n, segs[1] + 2);
	wal_close(w);
	testdir_remove(dir);
}

static void test_snapshot_ahead_of_log(void)
{
	char dir[512], why[512];
	WalOptions o;
	WalRecoveryStats st;
	Got g;
	Wal *w;
	uint64_t segs[8];

	/* An empty directory starts at after_lsn + 1. */
	testdir_case(dir, sizeof(dir), "ahead");
	o = opts(dir, MIB);
	w = open_ok(&o, 77, &g, &st);
	CHECK_EQ_INT(wal_next_lsn(w), 78);
	wal_close(w);
	CHECK_EQ_INT(seg_names(dir, segs, 8), 1);
	CHECK(segs[0] == 78);
	/* Still empty, an older snapshot: the empty segment is renamed by
	 * recreation. */
	w = open_ok(&o, 10, &g, &st);
	CHECK_EQ_INT(wal_next_lsn(w), 11);
	append(w, 90, 10, MIB);           /* 11..100 */
	wal_close(w);

	/* The log ends at 100 but the snapshot is at 200. */
	w = open_ok(&o, 200, &g, &st);
	CHECK_EQ_INT(g.n, 0);
	CHECK_EQ_INT(st.last_lsn, 100);
	CHECK_EQ_INT(wal_next_lsn(w), 201);
	append(w, 5, 5, MIB);
	wal_close(w);
	CHECK_EQ_INT(seg_names(dir, segs, 8), 2);
	CHECK(segs[0] == 11 && segs[1] == 201);
	w = open_ok(&o, 200, &g, &st);
	CHECK_EQ_INT(g.n, 5);
	CHECK_EQ_INT(g.first, 201);
	CHECK_EQ_INT(wal_next_lsn(w), 206);
	CHECK_EQ_INT(wal_delete_through(w, 200), 1);
	wal_close(w);
	/* Without the snapshot, 101..200 are missing. */
	w = NULL;
	CHECK_EQ_INT(wal_open(&o, 0, NULL, NULL, &w, &st, why, sizeof(why)), -EBADMSG);
	testdir_remove(dir);
}

static int count_fn(void *ctx, uint64_t lsn, const uint8_t *payload, size_t len)
{
	uint64_t *n = ctx;
	if (lsn != *n + 1)
		return -1;
	*n = lsn;
	return 0;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_recovery_speed(void)
{
	char dir[512], why[256];
	const size_t seg = 16 * MIB;
	const uint64_t nrec = 1000000;
	WalOptions o;
	WalRecoveryStats st;
	Wal *w = NULL;
	Buf b;
	uint8_t p[48];

	testdir_case(dir, sizeof(dir), "speed");
	o = opts(dir, seg);
	REQUIRE(wal_open(&o, 0, NULL, NULL, &w, NULL, why, sizeof(why)) == 0);
	buf_init(&b, seg / 4);
	memset(p, 0x42, sizeof(p));
	double t0 = now_s();
	for (uint64_t lsn = 1; lsn <= nrec;) {
		buf_reset(&b);
		while (lsn <= nrec && b.len + 64 <= seg / 4) {
			put_u64le(p, lsn);
			wal_frame(&b, lsn++, p, sizeof(p));  /* 16 + 48 = 64 bytes */
		}
		REQUIRE(wal_write(w, b.data, b.len) == 0);
	}
	REQUIRE(wal_sync(w) == 0);
	wal_close(w);
	double t1 = now_s();

	/* Cold: drop the segments from the page cache (they are synced, so the
	 * pages are clean), then warm. */
	uint64_t segs[16];
	int nseg = seg_names(dir, segs, 16);
	for (int i = 0; i < nseg; i++) {
		char path[1024];
		seg_path(path, sizeof(path), dir, segs[i]);
		int fd = open(path, O_RDONLY);
		REQUIRE(fd >= 0);
		posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
		close(fd);
	}
	printf("recovery speed: %" PRIu64 " records of 64 bytes in %d segments of %zu MiB "
	       "(written in %.2f s):\n", nrec, nseg, seg / MIB, t1 - t0);
	for (int pass = 0; pass < 2; pass++) {
		uint64_t n = 0;
		double t2 = now_s();
		REQUIRE(wal_open(&o, 0, count_fn, &n, &w, &st, why, sizeof(why)) == 0);
		double t3 = now_s();
		wal_close(w);
		CHECK_EQ_INT(n, nrec);
		CHECK_EQ_INT(st.records, nrec);
		printf("  %s page cache: %.3f s = %.2f M records/s (%.0f MB/s)\n",
		       pass ? "warm" : "cold", t3 - t2, (double)nrec / (t3 - t2) / 1e6,
		       (double)nrec * 64 / (t3 - t2) / 1e6);
	}
	buf_free(&b);
	testdir_remove(dir);
}

/* Open descriptors, to catch a leak on any path. */
static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	if (!d)
		return -1;
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

int main(void)
{
	testdir_init("wal");
	int fds = count_fds();
	log_set_context("test_wal");

	test_frame_layout();
	test_roundtrip();
	test_callback_stop();
	test_rotation();
	test_reader_follows_log();
	test_batch_larger_than_segment();
	test_torn_tail_every_offset();
	test_bit_flips();
	test_torn_write_out_of_order();
	test_torn_sector_or_rot();
	test_corruption_in_older_segment();
	test_gap_and_delete();
	test_snapshot_ahead_of_log();
	test_recovery_speed();
	CHECK_EQ_INT(count_fds(), fds);
	return check_exit();
}
