/* fuzz_wal.c — WAL recovery and record decoding against arbitrary segments.
 *
 * INPUT. A 6-byte header, then segment bytes:
 *   0  flags: bit 0 allow_corruption, bit 1 split the bytes into two segments
 *   1  after_lsn (the snapshot's last LSN), 0..255
 *   2  first segment's name LSN - 1
 *   3  second segment's name LSN minus the first's
 *   4  u16 LE: where the bytes are split, in 8-byte units
 * The segment files are written as given (short files read as zero-extended,
 * as after a crash while preallocating) into a directory on tmpfs, and
 * wal_open recovers them with 1 MiB segments. The same bytes after the header
 * also go straight to record_decode, so the record reader is fuzzed even
 * when the framing does not hold.
 *
 * PROPERTIES (wal.c's RECOVERY section, record.h)
 *   - wal_open returns 0 or -EBADMSG with a reason; a refusal changes no file;
 *     with allow_corruption the same log always opens;
 *   - the callback sees LSNs after_lsn + 1, + 2, ... with no gap, and a
 *     payload that record_decode accepts re-encodes to the same bytes;
 *   - after recovery the log appends at max(last LSN, after_lsn) + 1; a record
 *     appended and synced there is found by a second recovery, which sees
 *     exactly the first one's records plus it, and trims nothing;
 *   - the live reader (write-behind's) returns the same records. */
#include "fuzz.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/crc32c.h"
#include "common/log.h"
#include "ledger/record.h"
#include "ledger/wal.h"

#define SEG_SIZE ((size_t)1 << 20)
#define SEEN_MAX 4096
#define HEADER_LEN 6

static char dir[256];

/* What a recovery handed to its callback: LSN and payload checksum. */
typedef struct Seen {
	uint64_t lsn[SEEN_MAX];
	uint32_t crc[SEEN_MAX];
	size_t n;
	uint64_t after_lsn;
} Seen;

static void check_record(const uint8_t *payload, size_t len)
{
	static Record rec;
	Buf out;

	if (record_decode(payload, len, &rec) != 0)
		return;
	buf_init(&out, 64);
	record_encode(&rec, &out);
	FUZZ_CHECK(out.len == len && memcmp(out.data, payload, len) == 0);
	buf_free(&out);
}

static int on_record(void *ctx, uint64_t lsn, const uint8_t *payload, size_t len)
{
	Seen *s = ctx;

	FUZZ_CHECK(len >= 1 && len <= WAL_RECORD_PAYLOAD_MAX);
	/* Gaps are allowed only inside the snapshot, so the first record handed
	 * over is always after_lsn + 1. */
	FUZZ_CHECK(lsn == (s->n ? s->lsn[s->n - 1] : s->after_lsn) + 1);
	FUZZ_CHECK(s->n < SEEN_MAX);
	s->lsn[s->n] = lsn;
	s->crc[s->n] = crc32c(0, payload, len);
	s->n++;
	check_record(payload, len);
	return 0;
}

static void clear_dir(void)
{
	DIR *d = opendir(dir);
	struct dirent *de;

	FUZZ_CHECK(d != NULL);
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		char path[512];
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		FUZZ_CHECK(unlink(path) == 0);
	}
	closedir(d);
}

static void write_file(const char *name, const uint8_t *data, size_t len)
{
	char path[512];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	FUZZ_CHECK(fd >= 0);
	FUZZ_CHECK(write(fd, data, len) == (ssize_t)len);
	close(fd);
}

/* Whether name in dir holds exactly data[0..len). */
static int file_is(const char *name, const uint8_t *data, size_t len)
{
	static uint8_t got[1 << 17];
	char path[512];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, got, sizeof(got));
	close(fd);
	return n == (ssize_t)len && memcmp(got, data, len) == 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *base = getenv("RG_FUZZ_TMPDIR");

	fuzz_setup();
	/* Recovery fdatasyncs and zero-fills whole segments: on tmpfs that is
	 * memory speed, on a disk it would make the fuzzer crawl. */
	if (!base)
		base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
	snprintf(dir, sizeof(dir), "%s/rg-fuzz-wal-%d", base, (int)getpid());
	FUZZ_CHECK(mkdir(dir, 0700) == 0 || errno == EEXIST);
	log_level = LOG_ERROR; /* torn tails are the common case here: no WARN per input */
	return 0;
}

/* Opens the log; returns wal_open's value, with the Wal closed. */
static int recover(uint64_t after_lsn, int allow, Seen *seen, WalRecoveryStats *st,
		   uint64_t append_lsn_expect, uint64_t *next_lsn)
{
	WalOptions opt = { .dir = dir, .segment_size = SEG_SIZE, .allow_corruption = allow };
	char why[512] = "";
	Wal *w = NULL;
	int rc;

	memset(seen, 0, sizeof(*seen));
	seen->after_lsn = after_lsn;
	rc = wal_open(&opt, after_lsn, on_record, seen, &w, st, why, sizeof(why));
	if (rc < 0) {
		FUZZ_CHECK(rc == -EBADMSG);
		FUZZ_CHECK(why[0] != '\0');
		FUZZ_CHECK(w == NULL);
		return rc;
	}
	FUZZ_CHECK(rc == 0 && w != NULL);
	FUZZ_CHECK(st->records == seen->n);
	*next_lsn = wal_next_lsn(w);
	FUZZ_CHECK(*next_lsn == (st->last_lsn > after_lsn ? st->last_lsn : after_lsn) + 1);
	if (append_lsn_expect)
		FUZZ_CHECK(*next_lsn == append_lsn_expect);
	else {
		/* Append one CONFIRM record where recovery said the log goes on. */
		Record rec = { .type = REC_CONFIRM, .at_ms = 1700000000000 };
		Buf payload, batch;
		memset(rec.id.b, 0xab, sizeof(rec.id.b));
		buf_init(&payload, 64);
		buf_init(&batch, 64);
		record_encode(&rec, &payload);
		wal_frame(&batch, *next_lsn, payload.data, payload.len);
		FUZZ_CHECK(wal_write(w, batch.data, batch.len) == 0);
		FUZZ_CHECK(wal_sync(w) == 0);
		buf_free(&payload);
		buf_free(&batch);
	}
	wal_close(w);
	return 0;
}

/* The write-behind's reader must see what recovery saw. */
static void check_reader(const Seen *seen)
{
	WalReader *r = NULL;
	uint64_t upto = seen->lsn[seen->n - 1];
	size_t i = 0;
	int rc = wal_reader_open(dir, seen->after_lsn + 1, &r);

	FUZZ_CHECK(rc == 0);
	for (;;) {
		const uint8_t *payload;
		uint64_t lsn;
		size_t len;
		rc = wal_reader_next(r, upto, &lsn, &payload, &len);
		FUZZ_CHECK(rc >= 0);
		if (rc == 0)
			break;
		FUZZ_CHECK(i < seen->n);
		FUZZ_CHECK(lsn == seen->lsn[i]);
		FUZZ_CHECK(crc32c(0, payload, len) == seen->crc[i]);
		i++;
	}
	FUZZ_CHECK(i == seen->n);
	wal_reader_close(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static Seen first, second;
	WalRecoveryStats st1, st2;
	uint64_t next1 = 0, next2 = 0;
	char name1[32], name2[32];
	const uint8_t *seg = data + HEADER_LEN;
	size_t seg_len, split;
	int rc;

	if (size < HEADER_LEN)
		return 0;
	seg_len = size - HEADER_LEN;
	check_record(seg, seg_len);
	if (seg_len > (1 << 17))
		return 0;

	int allow = data[0] & 1, two = data[0] & 2;
	uint64_t after_lsn = data[1];
	uint64_t lsn1 = (uint64_t)data[2] + 1, lsn2 = lsn1 + data[3];
	split = two ? (size_t)get_u16le(data + 4) * 8 : seg_len;
	if (split > seg_len)
		split = seg_len;
	if (two && lsn2 == lsn1)
		two = 0, split = seg_len;

	clear_dir();
	snprintf(name1, sizeof(name1), "wal-%016" PRIx64 ".seg", lsn1);
	snprintf(name2, sizeof(name2), "wal-%016" PRIx64 ".seg", lsn2);
	write_file(name1, seg, split);
	if (two)
		write_file(name2, seg + split, seg_len - split);

	rc = recover(after_lsn, allow, &first, &st1, 0, &next1);
	if (fuzz_verbose)
		fprintf(stderr, "fuzz_wal: wal_open %d: %zu records, last lsn %" PRIu64
			", %" PRIu64 " torn bytes\n", rc, first.n, st1.last_lsn, st1.torn_bytes);
	if (rc < 0) {
		/* Refused: nothing touched; with allow_corruption it must open. */
		FUZZ_CHECK(!allow);
		FUZZ_CHECK(file_is(name1, seg, split));
		if (two)
			FUZZ_CHECK(file_is(name2, seg + split, seg_len - split));
		rc = recover(after_lsn, 1, &first, &st1, 0, &next1);
		FUZZ_CHECK(rc == 0);
	}
	/* The second recovery: what the first kept, plus the appended record. */
	rc = recover(after_lsn, 0, &second, &st2, next1 + 1, &next2);
	FUZZ_CHECK(rc == 0);
	FUZZ_CHECK(st2.torn_bytes == 0);
	FUZZ_CHECK(second.n == first.n + 1);
	FUZZ_CHECK(memcmp(second.lsn, first.lsn, first.n * sizeof(first.lsn[0])) == 0);
	FUZZ_CHECK(memcmp(second.crc, first.crc, first.n * sizeof(first.crc[0])) == 0);
	FUZZ_CHECK(second.lsn[first.n] == next1);
	check_reader(&second);
	clear_dir();
	return 0;
}

/* Leaves no directory behind after a clean run (a crash keeps it: it holds
 * the files that were being recovered). */
__attribute__((destructor)) static void fuzz_wal_cleanup(void)
{
	DIR *d = dir[0] ? opendir(dir) : NULL;
	struct dirent *de;

	if (!d)
		return;
	while ((de = readdir(d))) {
		char path[512];
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if (de->d_name[0] != '.')
			unlink(path);
	}
	closedir(d);
	rmdir(dir);
}
