/* wal.c — one shard's write-ahead log: framed records in preallocated segments.
 *
 * DESIGN
 * The shard applies a batch of requests in memory, frames their records, hands
 * the batch to wal_write (one pwrite) and wal_sync (one fdatasync), and only
 * then answers (DESIGN.md decision 2). Segment files are preallocated and
 * filled with zeros when created, so every later write overwrites blocks that
 * already exist: fdatasync then flushes data only, with no file-size or extent
 * change to journal, which is several times cheaper than syncing an append.
 * The zeros double as the end-of-data marker, so no separate header or index
 * has to be kept in step with the records.
 *
 * FILES
 * The shard directory holds segment files named
 *
 *     wal-<LSN of its first record, 16 lowercase hex digits>.seg
 *
 * Every segment is created at the configured segment size (>= 1 MiB) and
 * zero-filled before any record is written to it. Records are appended from
 * offset 0; after the last record the segment holds zeros up to its end.
 * Segments sorted by name hold consecutive LSNs: the first record of each
 * segment carries exactly the LSN in its name, and each record's LSN is one
 * more than the previous record's, across segment boundaries. A segment may
 * be empty (all zeros: created, then the process stopped before writing).
 * Other files in the directory (snapshots, temp files) are ignored.
 *
 * RECORD FORMAT (all integers little-endian)
 *
 *     offset  size  field
 *        0      4   crc32c of bytes 4..16 of this header, then of the payload
 *        4      4   bits 0..30: payload length, 1..WAL_RECORD_PAYLOAD_MAX;
 *                   bit 31: set on the first record of each write ("batch start")
 *        8      8   LSN (>= 1)
 *       16    len   payload (opaque: see record.h)
 *     16+len   0-7  zero padding to the next multiple of 8 bytes
 *
 * So every record starts at an 8-byte-aligned offset and occupies
 * 16 + round_up(len, 8) bytes. The padding is not checksummed. The batch-start
 * bit and the zero fill are what let recovery tell a torn write from damage
 * to synced data (see RECOVERY); wal_frame leaves the bit clear and wal_write
 * sets it. A record never spans two segments: a batch that does not fit in
 * the rest of the current segment goes whole into a new segment named after
 * the batch's first LSN.
 *
 * VALIDITY
 * A record at offset off of a segment of size S is valid when
 *   - its length is in 1..WAL_RECORD_PAYLOAD_MAX and off + 16 + padded length <= S,
 *   - its crc32c matches, and
 *   - its LSN is the expected one: the segment name for the first record of a
 *     segment, else the previous record's LSN + 1.
 * A header of 16 zero bytes is the clean end of the segment's data; every byte
 * after it must be zero too.
 *
 * RECOVERY (wal_open)
 * Segments are read in LSN order, each whole into one buffer, and every
 * record is verified; records with LSN <= after_lsn (already in the snapshot)
 * are verified but not passed to the callback. Reading a segment stops at the
 * clean end or at the first record that is not valid ("damage"). At damage:
 *   - If no valid record follows it, it is a torn tail: the last write never
 *     completed (it was never acknowledged, since the shard answers only after
 *     wal_sync). "Follows" means: a later segment holds any non-zero byte, or
 *     some 8-byte-aligned offset at or after the damage, inside the segment's
 *     non-zero region, holds a batch-start record with valid length and crc
 *     and an LSN in the range a record that far on could carry (above the last
 *     good LSN, at most one more per 24 bytes past the damage). Only a batch
 *     start counts: each write is synced before the next one begins, so the
 *     start of a later write proves the damaged one was synced, while valid
 *     records of the damaged write itself prove nothing — its pages reach the
 *     disk in any order, so a crash can keep a later page and lose an earlier
 *     one. So the damage is in the last write, which may have been synced and
 *     acknowledged all the same: it is a torn tail only if it looks like one.
 *     A page lost by a crash reverts to what the disk held: the synced bytes
 *     before the write's start offset (the last batch start at or before the
 *     damage), zeros from there on (segments are zero-filled). So it is torn
 *     when the damaged record's header is all zero, or the non-zero data
 *     stops before the record's declared end (its length, or just the header
 *     when the length is impossible), or some 512-byte-aligned sector
 *     overlapping the record is all zero from max(sector start, write start)
 *     to its end. Then the tail is overwritten with zeros up to the end of
 *     the non-zero region, fdatasync'ed, counted in torn_bytes and logged;
 *     later (empty) segments are deleted. Non-zero garbage throughout (a
 *     flipped bit) is bit rot: corruption, as below. Not told apart: rot
 *     that lengthens a record of the last write past the end of the data,
 *     or hits the write's final record when its payload ends in zero bytes,
 *     looks like a cut there and is trimmed.
 *   - Otherwise it is corruption of possibly acknowledged data: wal_open
 *     refuses with -EBADMSG and says where, unless allow_corruption is set,
 *     in which case everything from the damage on is dropped the same way
 *     (zeroed, later segments deleted) and an ERROR is logged.
 * Non-zero bytes after a zero header are damage too: a page of a torn write
 * can reach the disk while an earlier one does not, and stale bytes left
 * after the append point could later be read back as records.
 *
 * LSNs missing from the log are allowed only when the snapshot covers them:
 * the first segment may start at any LSN <= after_lsn + 1 (older segments
 * were deleted after a snapshot), and a later segment may start above the
 * previous record's LSN + 1 only if every missing LSN is <= after_lsn (what
 * wal_open itself leaves behind when the log ended before the snapshot).
 * Any other gap, or an overlap, is corruption. A valid record that carries
 * the wrong LSN inside a segment is damage (with the rules above).
 *
 * After recovery appends go after the last valid record of the last segment,
 * which is first extended back to full size if it is short (the process
 * stopped while preallocating it). When the log ends before after_lsn (the
 * snapshot is newer than the log) the next LSN is after_lsn + 1 and a new
 * segment is started there; an empty last segment with the wrong name is
 * removed. With no segments at all, the first one is created at
 * max(last LSN, after_lsn) + 1.
 *
 * SPARE SEGMENT
 * Zero-filling a segment writes and syncs its whole size, far too slow for
 * the write path. So a helper thread keeps one spare ready ahead of time:
 * "wal-spare.tmp", full size, zero-filled and fdatasync'ed. Rotation renames
 * it to the new segment's name and syncs the directory (microseconds), then
 * wakes the helper to prepare the next. If the spare is not ready (or could
 * not be made) rotation creates the segment itself, the slow way; a helper
 * that failed tries again after 1 s, backing off to a minute. The spare
 * is never read by recovery (its name is not a segment name) and a stale one
 * is simply made anew.
 *
 * DURABILITY
 * Segment creation: fallocate, zero-fill, fdatasync, fsync of the directory.
 * Before a batch goes to a new segment the old one is fdatasync'ed, so a
 * segment that has a successor is always complete on disk, and damage in it
 * can only be corruption. The directory is flock'ed while a Wal is open so two
 * processes can never append to one log. */
#include "ledger/wal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/crc32c.h"
#include "common/fileio.h"
#include "common/log.h"
#include "common/xmalloc.h"

#define SEG_NAME_LEN 24                       /* "wal-" + 16 hex + ".seg" */
#define SEG_SIZE_MIN ((size_t)1 << 20)
#define ZERO_CHUNK ((size_t)1 << 20)
#define REC_SIZE_MIN (WAL_RECORD_HEADER_LEN + 8)
#define SPARE_NAME "wal-spare.tmp"
#define LEN_MASK 0x7fffffffu                  /* the length bits of the length word */
#define LEN_BATCH_START 0x80000000u           /* the first record of a write */

typedef struct Seg {
	uint64_t lsn;    /* from the name: the LSN its first record must carry */
	size_t end;      /* recovery only: offset after the last valid record */
} Seg;

struct Wal {
	char *dir;
	int dirfd;           /* flock'ed for the Wal's lifetime */
	int fd;              /* the current (last) segment */
	size_t segment_size; /* size of segments we create */
	size_t seg_size;     /* size of the current segment's file */
	size_t off;          /* where the next batch goes in the current segment */
	uint64_t next_lsn;
	Seg *segs;           /* every segment, ascending; the last is the current */
	size_t nsegs, segs_cap;

	/* The spare segment (see SPARE SEGMENT above); guarded by spare_mu. */
	pthread_t spare_thread;
	int spare_started;
	pthread_mutex_t spare_mu;
	pthread_cond_t spare_cond;
	int spare_fd;        /* >= 0: SPARE_NAME is ready, full size and synced */
	int spare_stop;
};

static const uint8_t zeros[ZERO_CHUNK];

static size_t pad8(size_t n)
{
	return (n + 7) & ~(size_t)7;
}

static void seg_name(char out[SEG_NAME_LEN + 1], uint64_t lsn)
{
	snprintf(out, SEG_NAME_LEN + 1, "wal-%016" PRIx64 ".seg", lsn);
}

/* Parses "wal-<16 lowercase hex>.seg"; returns 1 and sets *lsn on a match. */
static int seg_name_parse(const char *name, uint64_t *lsn)
{
	return strlen(name) == SEG_NAME_LEN && memcmp(name, "wal-", 4) == 0 &&
	       strcmp(name + 20, ".seg") == 0 && fileio_parse_hex16(name + 4, lsn);
}

static __attribute__((format(printf, 3, 4)))
void set_why(char *why, size_t why_len, const char *fmt, ...)
{
	va_list ap;

	if (!why || !why_len)
		return;
	va_start(ap, fmt);
	vsnprintf(why, why_len, fmt, ap);
	va_end(ap);
}

/* Writes zeros over [from, to) in large chunks. */
static int zero_range(int fd, size_t from, size_t to)
{
	while (from < to) {
		size_t n = to - from < ZERO_CHUNK ? to - from : ZERO_CHUNK;
		int rc = fileio_pwrite_all(fd, zeros, n, (off_t)from);
		if (rc < 0)
			return rc;
		from += n;
	}
	return 0;
}

/* Allocates and zero-fills [from, to) and syncs it. fallocate first so the
 * blocks are reserved in one go (and ENOSPC shows up here, not mid-batch);
 * the zero writes then turn them into written extents, so later overwrites
 * need no extent conversion at fdatasync time. */
static int prealloc(int fd, size_t from, size_t to)
{
	int rc;

	if (to <= from)
		return 0;
	if (fallocate(fd, 0, (off_t)from, (off_t)(to - from)) < 0 &&
	    errno != EOPNOTSUPP && errno != ENOSYS)
		return -errno;
	rc = zero_range(fd, from, to);
	if (rc < 0)
		return rc;
	return fileio_fdatasync(fd);
}

static void segs_push(Wal *w, uint64_t lsn)
{
	if (w->nsegs == w->segs_cap) {
		w->segs_cap = w->segs_cap ? w->segs_cap * 2 : 16;
		w->segs = xrealloc(w->segs, w->segs_cap * sizeof(*w->segs));
	}
	w->segs[w->nsegs].lsn = lsn;
	w->segs[w->nsegs].end = 0;
	w->nsegs++;
}

static int seg_cmp(const void *a, const void *b)
{
	uint64_t x = ((const Seg *)a)->lsn, y = ((const Seg *)b)->lsn;
	return x < y ? -1 : x > y;
}

static int seg_list(Wal *w, char *why, size_t why_len)
{
	DIR *d;
	struct dirent *de;
	int dfd = openat(w->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (dfd < 0 || !(d = fdopendir(dfd))) {
		int rc = -errno;
		if (dfd >= 0)
			close(dfd);
		set_why(why, why_len, "cannot list %s: %s", w->dir, strerror(-rc));
		return rc;
	}
	errno = 0;
	while ((de = readdir(d))) {
		uint64_t lsn;
		if (!seg_name_parse(de->d_name, &lsn)) {
			if (strncmp(de->d_name, "wal-", 4) == 0 && strcmp(de->d_name, SPARE_NAME) != 0)
				log_warn("wal: ignoring %s/%s: not a segment name", w->dir, de->d_name);
			continue;
		}
		if (lsn == 0) {
			closedir(d);
			set_why(why, why_len, "%s/%s: LSN 0 is not a valid segment start", w->dir, de->d_name);
			return -EBADMSG;
		}
		segs_push(w, lsn);
	}
	if (errno) {
		int rc = -errno;
		closedir(d);
		set_why(why, why_len, "cannot list %s: %s", w->dir, strerror(-rc));
		return rc;
	}
	closedir(d);
	if (w->nsegs > 1)
		qsort(w->segs, w->nsegs, sizeof(*w->segs), seg_cmp);
	return 0;
}

/* Creates segment lsn at full size, zero-filled and durable (file and
 * directory entry); on failure removes what it created. */
static int seg_create(Wal *w, uint64_t lsn, int *out)
{
	char name[SEG_NAME_LEN + 1];
	int rc, fd;

	seg_name(name, lsn);
	fd = openat(w->dirfd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0) {
		rc = -errno;
		log_error("wal: cannot create %s/%s: %s", w->dir, name, strerror(-rc));
		return rc;
	}
	rc = prealloc(fd, 0, w->segment_size);
	if (rc == 0)
		rc = fileio_fsync(w->dirfd);
	if (rc < 0) {
		log_error("wal: cannot preallocate %s/%s: %s", w->dir, name, strerror(-rc));
		close(fd);
		unlinkat(w->dirfd, name, 0);
		return rc;
	}
	*out = fd;
	return 0;
}

/* Takes the ready spare as segment lsn: rename it into place and make the
 * name durable. Returns the fd, -1 when no spare is ready (create one), or
 * another negative errno when the directory fsync failed (fatal). */
static int spare_take(Wal *w, uint64_t lsn)
{
	char name[SEG_NAME_LEN + 1];
	int fd, rc;

	if (!w->spare_started)
		return -1;
	seg_name(name, lsn);
	/* Rename under the lock: once woken, the helper starts by removing
	 * SPARE_NAME, which must by then be the segment's name. */
	pthread_mutex_lock(&w->spare_mu);
	fd = w->spare_fd;
	if (fd >= 0) {
		w->spare_fd = -1;
		if (renameat(w->dirfd, SPARE_NAME, w->dirfd, name) < 0) {
			log_warn("wal: cannot use the spare segment in %s: %s", w->dir, strerror(errno));
			close(fd);
			fd = -1;
		} else if ((rc = fileio_fsync(w->dirfd)) < 0) {
			/* The name may or may not be durable: never retry an fsync. */
			log_error("wal: fsync of %s failed: %s", w->dir, strerror(-rc));
			close(fd);
			fd = rc == -1 ? -EIO : rc; /* -1 means "no spare" to the caller */
		}
		pthread_cond_signal(&w->spare_cond); /* make the next one */
	}
	pthread_mutex_unlock(&w->spare_mu);
	return fd;
}

/* Creates segment lsn and makes it current; the caller has closed the
 * previous current segment's fd. */
static int seg_start(Wal *w, uint64_t lsn)
{
	int fd = spare_take(w, lsn), rc;

	if (fd < -1)
		return fd; /* a failed directory fsync: fatal for the caller */
	if (fd < 0) {
		rc = seg_create(w, lsn, &fd);
		if (rc < 0)
			return rc;
	}
	w->fd = fd;
	w->seg_size = w->segment_size;
	w->off = 0;
	segs_push(w, lsn);
	return 0;
}

/* After a failure to prepare a spare, rotation creates segments inline (the
 * shard waits for the preallocation) until a retry succeeds; retries back off
 * from 1 s to a minute so a full disk is not hammered. */
#define SPARE_RETRY_MIN_S 1
#define SPARE_RETRY_MAX_S 60

static void *spare_main(void *arg)
{
	Wal *w = arg;
	int retry_s = SPARE_RETRY_MIN_S;

	log_set_thread("wal spare");
	pthread_mutex_lock(&w->spare_mu);
	while (!w->spare_stop) {
		if (w->spare_fd >= 0) {
			pthread_cond_wait(&w->spare_cond, &w->spare_mu);
			continue;
		}
		pthread_mutex_unlock(&w->spare_mu);
		/* A stale spare (from a crash) may be partly filled: start over. */
		unlinkat(w->dirfd, SPARE_NAME, 0);
		int fd = openat(w->dirfd, SPARE_NAME, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		int rc = fd < 0 ? -errno : prealloc(fd, 0, w->segment_size);
		if (rc < 0) {
			log_warn("wal: cannot prepare a spare segment in %s: %s (rotation creates "
				 "segments inline; next try in %d s)", w->dir, strerror(-rc), retry_s);
			if (fd >= 0)
				close(fd);
			unlinkat(w->dirfd, SPARE_NAME, 0);
			struct timespec until;
			clock_gettime(CLOCK_MONOTONIC, &until);
			until.tv_sec += retry_s;
			retry_s = retry_s * 2 > SPARE_RETRY_MAX_S ? SPARE_RETRY_MAX_S : retry_s * 2;
			pthread_mutex_lock(&w->spare_mu);
			while (!w->spare_stop &&
			       pthread_cond_timedwait(&w->spare_cond, &w->spare_mu, &until) != ETIMEDOUT)
				;
			continue;
		}
		if (retry_s > SPARE_RETRY_MIN_S)
			log_info("wal: spare segment in %s prepared again", w->dir);
		retry_s = SPARE_RETRY_MIN_S;
		pthread_mutex_lock(&w->spare_mu);
		w->spare_fd = fd;
	}
	pthread_mutex_unlock(&w->spare_mu);
	return NULL;
}

static void spare_start(Wal *w)
{
	pthread_condattr_t mono; /* the retry wait must not follow wall-clock steps */
	pthread_condattr_init(&mono);
	pthread_condattr_setclock(&mono, CLOCK_MONOTONIC);
	pthread_mutex_init(&w->spare_mu, NULL);
	pthread_cond_init(&w->spare_cond, &mono);
	pthread_condattr_destroy(&mono);
	w->spare_fd = -1;
	if (pthread_create(&w->spare_thread, NULL, spare_main, w) == 0)
		w->spare_started = 1;
	else
		log_warn("wal: no spare segment thread; rotation will create segments inline");
}

static void spare_stop(Wal *w)
{
	if (!w->spare_started)
		return;
	pthread_mutex_lock(&w->spare_mu);
	w->spare_stop = 1;
	pthread_cond_signal(&w->spare_cond);
	pthread_mutex_unlock(&w->spare_mu);
	pthread_join(w->spare_thread, NULL);
	if (w->spare_fd >= 0)
		close(w->spare_fd);
	unlinkat(w->dirfd, SPARE_NAME, 0);
	pthread_mutex_destroy(&w->spare_mu);
	pthread_cond_destroy(&w->spare_cond);
	w->spare_started = 0;
}

/* Deletes segments [from, nsegs) and syncs the directory. */
static int seg_unlink_from(Wal *w, size_t from)
{
	if (from >= w->nsegs)
		return 0;
	while (w->nsegs > from) {
		char name[SEG_NAME_LEN + 1];
		seg_name(name, w->segs[w->nsegs - 1].lsn);
		if (unlinkat(w->dirfd, name, 0) < 0 && errno != ENOENT) {
			int rc = -errno;
			log_error("wal: cannot delete %s/%s: %s", w->dir, name, strerror(-rc));
			return rc;
		}
		w->nsegs--;
	}
	return fileio_fsync(w->dirfd);
}

void wal_frame(Buf *batch, uint64_t lsn, const void *payload, size_t len)
{
	rg_assert(len >= 1 && len <= WAL_RECORD_PAYLOAD_MAX);
	rg_assert(lsn >= 1);
	size_t total = WAL_RECORD_HEADER_LEN + pad8(len);
	buf_reserve(batch, total);
	uint8_t *p = batch->data + batch->len;
	put_u32le(p + 4, (uint32_t)len);
	put_u64le(p + 8, lsn);
	memcpy(p + WAL_RECORD_HEADER_LEN, payload, len);
	memset(p + WAL_RECORD_HEADER_LEN + len, 0, total - WAL_RECORD_HEADER_LEN - len);
	uint32_t crc = crc32c(0, p + 4, WAL_RECORD_HEADER_LEN - 4);
	put_u32le(p, crc32c(crc, p + WAL_RECORD_HEADER_LEN, len));
	batch->len += total;
}

/* Checks the record at p (room bytes left in the segment): length in range,
 * fits, crc matches. Sets *lsn and *total (bytes including padding). Does not
 * look at the LSN. */
static int rec_valid(const uint8_t *p, size_t room, uint64_t *lsn, size_t *total)
{
	if (room < WAL_RECORD_HEADER_LEN)
		return 0;
	uint32_t len = get_u32le(p + 4) & LEN_MASK;
	if (len == 0 || len > WAL_RECORD_PAYLOAD_MAX)
		return 0;
	size_t t = WAL_RECORD_HEADER_LEN + pad8(len);
	if (t > room)
		return 0;
	uint32_t crc = crc32c(0, p + 4, WAL_RECORD_HEADER_LEN - 4);
	if (crc32c(crc, p + WAL_RECORD_HEADER_LEN, len) != get_u32le(p))
		return 0;
	*lsn = get_u64le(p + 8);
	*total = t;
	return 1;
}

static int is_zero(const uint8_t *p, size_t len)
{
	while (len >= 8) {
		uint64_t v;
		memcpy(&v, p, 8);
		if (v)
			return 0;
		p += 8;
		len -= 8;
	}
	while (len--)
		if (*p++)
			return 0;
	return 1;
}

/* The offset just after the last non-zero byte in [from, to), or from when
 * the range is all zeros. Scans backwards a word at a time: the zero region
 * after the data is usually most of the segment. */
static size_t nonzero_end(const uint8_t *p, size_t from, size_t to)
{
	while (to > from && (to & 7))
		if (p[--to])
			return to + 1;
	while (to >= from + 8) {
		uint64_t v;
		memcpy(&v, p + to - 8, 8);
		if (v)
			break;
		to -= 8;
	}
	while (to > from)
		if (p[--to])
			return to + 1;
	return from;
}

/* Whether the start of a later write follows the damage at off (the torn-tail
 * test): a valid batch-start record that the log could really have written
 * there. A genuine record at p carries an LSN
 * above last_lsn and at most one more per REC_SIZE_MIN bytes past off; the
 * LSN test is cheap and keeps payload bytes that merely look like a header
 * from costing a crc each. */
static int valid_follows(const uint8_t *buf, size_t off, size_t nz, size_t size, uint64_t last_lsn)
{
	for (size_t p = off; p < nz && p + WAL_RECORD_HEADER_LEN <= size; p += 8) {
		uint64_t lsn = get_u64le(buf + p + 8);
		size_t total;
		if (!(get_u32le(buf + p + 4) & LEN_BATCH_START))
			continue;
		if (lsn <= last_lsn || lsn - last_lsn > 1 + (p - off) / REC_SIZE_MIN)
			continue;
		if (rec_valid(buf + p, size - p, &lsn, &total))
			return 1;
	}
	return 0;
}

/* Whether damage at off, inside the last write (which started at wstart),
 * looks like a torn write rather than bit rot (the RECOVERY rules): the
 * header at off is all zero, the data stops before the damaged record's
 * declared end, or some 512-byte sector overlapping the record is zero from
 * max(sector start, wstart) to its end. A lost page of an unsynced write
 * reverts to what the disk held: the synced bytes before wstart, zeros from
 * wstart on (segments are zero-filled). Rot leaves non-zero garbage. */
static int torn_write(const uint8_t *buf, size_t off, size_t nz, size_t size, size_t wstart)
{
	if (is_zero(buf + off, WAL_RECORD_HEADER_LEN))
		return 1;
	/* The declared extent; a header with an impossible length declares
	 * only itself (the caller checked off + 16 <= size). */
	uint32_t len = get_u32le(buf + off + 4) & LEN_MASK;
	size_t end = off + WAL_RECORD_HEADER_LEN;
	if (len >= 1 && len <= WAL_RECORD_PAYLOAD_MAX)
		end = size - end < len ? size : end + len;
	if (nz < end)
		return 1;
	for (size_t s = off & ~(size_t)511; s < end; s += 512) {
		size_t from = s > wstart ? s : wstart, to = s + 512 < size ? s + 512 : size;
		if (is_zero(buf + from, to - from))
			return 1;
	}
	return 0;
}

/* State of one wal_open. */
typedef struct Recovery {
	Wal *w;
	const WalOptions *opt;
	uint64_t after_lsn;
	WalRecordFn fn;
	void *ctx;
	WalRecoveryStats *st;
	char *why;
	size_t why_len;
	uint8_t *buf;          /* one whole segment */
	size_t buf_cap;
	uint64_t last_lsn;     /* last valid LSN so far; 0 before the first record */
} Recovery;

/* Reads segment i whole into r->buf; sets *size to the segment's size. */
static int seg_read(Recovery *r, size_t i, size_t *size)
{
	Wal *w = r->w;
	char name[SEG_NAME_LEN + 1];
	struct stat sb;
	int rc, fd;

	seg_name(name, w->segs[i].lsn);
	fd = openat(w->dirfd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &sb) < 0) {
		rc = -errno;
		goto fail;
	}
	/* A short segment (the process stopped while preallocating it) reads as
	 * if already extended with zeros, as it will be before any append. */
	size_t file_size = (size_t)sb.st_size;
	*size = file_size > w->segment_size ? file_size : w->segment_size;
	if (*size > r->buf_cap) {
		free(r->buf);
		r->buf = xmalloc(*size);
		r->buf_cap = *size;
	}
	rc = fileio_pread_all(fd, r->buf, file_size, 0);
	if (rc < 0)
		goto fail;
	memset(r->buf + file_size, 0, *size - file_size);
	close(fd);
	return 0;
fail:
	set_why(r->why, r->why_len, "cannot read %s/%s: %s", w->dir, name, strerror(-rc));
	if (fd >= 0)
		close(fd);
	return rc;
}

/* Overwrites [from, to) of segment i with zeros, durably. */
static int seg_zero_tail(Recovery *r, size_t i, size_t from, size_t to)
{
	Wal *w = r->w;
	char name[SEG_NAME_LEN + 1];
	int rc, fd;

	seg_name(name, w->segs[i].lsn);
	fd = openat(w->dirfd, name, O_WRONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		goto fail;
	}
	rc = zero_range(fd, from, to);
	if (rc == 0)
		rc = fileio_fdatasync(fd);
	close(fd);
	if (rc == 0)
		return 0;
fail:
	set_why(r->why, r->why_len, "cannot trim %s/%s: %s", w->dir, name, strerror(-rc));
	return rc;
}

/* Whether any segment after i holds a non-zero byte. Clobbers r->buf. */
static int later_nonempty(Recovery *r, size_t i, int *out)
{
	*out = 0;
	for (size_t j = i + 1; j < r->w->nsegs; j++) {
		size_t size;
		int rc = seg_read(r, j, &size);
		if (rc < 0)
			return rc;
		if (nonzero_end(r->buf, 0, size) > 0) {
			*out = 1;
			return 0;
		}
	}
	return 0;
}

/* Damage at offset off of segment i (what says which kind; nz is the end of
 * its non-zero region; wstart is where the last write seen so far in this
 * segment starts, 0 when none). gap is set when the damage is a valid record
 * whose LSNs do not continue the log, so records certainly follow. Trims a torn
 * tail, or drops the rest when allowed, or refuses. Afterwards segment i is
 * the last one. */
static int recover_damage(Recovery *r, size_t i, size_t off, size_t nz, size_t size,
			  const char *what, int gap, size_t wstart)
{
	Wal *w = r->w;
	char name[SEG_NAME_LEN + 1], msg[512];
	const char *why = gap ? "" : " but valid records follow";
	int rc, follows = gap;

	seg_name(name, w->segs[i].lsn);
	if (!follows)
		follows = valid_follows(r->buf, off, nz, size, r->last_lsn);
	if (!follows) {
		rc = later_nonempty(r, i, &follows);
		if (rc < 0)
			return rc;
	}
	/* The damage is in the last write. A damaged record that starts a
	 * write (its batch-start bit survived) starts the last one. Torn, or
	 * rot in what may be a synced, acknowledged write? */
	if (!follows && off + WAL_RECORD_HEADER_LEN <= size) {
		if (get_u32le(r->buf + off + 4) & LEN_BATCH_START)
			wstart = off;
		follows = !torn_write(r->buf, off, nz, size, wstart);
		if (follows)
			why = " in the last write, with no sector zeroed as a torn write leaves it";
	}
	snprintf(msg, sizeof(msg), "segment %s/%s offset %zu: %s%s", w->dir, name, off, what, why);
	if (follows && !r->opt->allow_corruption) {
		set_why(r->why, r->why_len, "%s; refusing to start "
			"(use --allow-wal-corruption to drop everything after it)", msg);
		log_error("wal: %s; refusing to start", msg);
		return -EBADMSG;
	}
	if (nz > off) {
		rc = seg_zero_tail(r, i, off, nz);
		if (rc < 0)
			return rc;
	}
	size_t dropped = w->nsegs - i - 1;
	rc = seg_unlink_from(w, i + 1);
	if (rc < 0) {
		set_why(r->why, r->why_len, "cannot delete segments after %s/%s: %s",
			w->dir, name, strerror(-rc));
		return rc;
	}
	if (follows) {
		log_error("wal: %s; allow_corruption is set: dropped %zu bytes there and %zu later "
			  "segment(s), the log now ends at lsn %" PRIu64,
			  msg, nz - off, dropped, r->last_lsn);
	} else {
		r->st->torn_bytes += nz - off;
		log_warn("wal: segment %s/%s offset %zu: torn tail, %s: trimmed %zu bytes%s; "
			 "the log ends at lsn %" PRIu64,
			 w->dir, name, off, what, nz - off,
			 dropped ? " and the empty segment(s) after it" : "", r->last_lsn);
	}
	w->segs[i].end = off;
	return 0;
}

/* WalOptions.settle: the caller applies what it deferred, before recovery
 * writes. Returns its value (0: go on). */
static int settle(Recovery *r)
{
	return r->opt->settle ? r->opt->settle(r->ctx) : 0;
}

/* Reads and verifies segment i, handing records to the callback. Returns 0
 * to go on, 1 when segment i is now the last one, a negative errno, or the
 * callback's non-zero value (as *cb_rc). */
static int recover_segment(Recovery *r, size_t i, int *cb_rc)
{
	Wal *w = r->w;
	uint64_t name_lsn = w->segs[i].lsn;
	size_t size, off = 0, wstart = 0;
	const char *what = NULL;
	int rc = seg_read(r, i, &size);

	if (rc < 0)
		return rc;
	r->st->segments++;
	while (off + WAL_RECORD_HEADER_LEN <= size) {
		const uint8_t *p = r->buf + off;
		uint64_t lsn;
		size_t total;

		if (is_zero(p, WAL_RECORD_HEADER_LEN))
			break;
		if (!rec_valid(p, size - off, &lsn, &total)) {
			what = "record damaged (bad length or checksum)";
			break;
		}
		if (off == 0) {
			if (lsn != name_lsn) {
				what = "first record's LSN differs from the segment name";
				break;
			}
			/* LSNs missing before this segment must all be in the snapshot. */
			uint64_t expect = r->last_lsn + 1;
			if (lsn != expect && (lsn < expect || lsn - 1 > r->after_lsn)) {
				char gap[160];
				if (lsn < expect)
					snprintf(gap, sizeof(gap), "segment starts at lsn %" PRIu64
						 " but lsn %" PRIu64 " was already read", lsn, r->last_lsn);
				else
					snprintf(gap, sizeof(gap), "records %" PRIu64 "..%" PRIu64
						 " are missing (not in the log, nor in the snapshot, which ends at lsn %"
						 PRIu64 ")", expect, lsn - 1, r->after_lsn);
				if ((*cb_rc = settle(r)) != 0)
					return 0;
				rc = recover_damage(r, i, 0, nonzero_end(r->buf, 0, size), size, gap, 1, 0);
				return rc < 0 ? rc : 1;
			}
			if (lsn != expect && r->last_lsn)
				log_warn("wal: %s/wal-%016" PRIx64 ".seg: records %" PRIu64 "..%" PRIu64
					 " are not in the log; the snapshot covers them",
					 w->dir, name_lsn, expect, lsn - 1);
		} else if (lsn != r->last_lsn + 1) {
			what = "record LSN out of sequence";
			break;
		}
		if (lsn > r->after_lsn) {
			if (r->fn) {
				int v = r->fn(r->ctx, lsn, p + WAL_RECORD_HEADER_LEN,
					      get_u32le(p + 4) & LEN_MASK);
				if (v) {
					*cb_rc = v;
					return 0;
				}
			}
			r->st->records++;
		}
		r->last_lsn = lsn;
		if (get_u32le(p + 4) & LEN_BATCH_START)
			wstart = off;
		off += total;
	}
	size_t nz = nonzero_end(r->buf, off, size);
	if (!what && nz == off) {
		w->segs[i].end = off;
		return 0;
	}
	if (!what)
		what = "non-zero bytes after the end of the data";
	if ((*cb_rc = settle(r)) != 0)
		return 0;
	rc = recover_damage(r, i, off, nz, size, what, 0, wstart);
	return rc < 0 ? rc : 1;
}

/* Makes the last segment current, or starts a new one, so the next append
 * carries next_lsn. */
static int recover_tail(Recovery *r, uint64_t next_lsn)
{
	Wal *w = r->w;
	char name[SEG_NAME_LEN + 1];
	struct stat sb;
	int rc;

	w->next_lsn = next_lsn;
	/* An empty last segment named for another LSN holds nothing: drop it. */
	while (w->nsegs && w->segs[w->nsegs - 1].end == 0 && w->segs[w->nsegs - 1].lsn != next_lsn) {
		rc = seg_unlink_from(w, w->nsegs - 1);
		if (rc < 0)
			return rc;
	}
	if (!w->nsegs)
		return seg_start(w, next_lsn);

	Seg *s = &w->segs[w->nsegs - 1];
	seg_name(name, s->lsn);
	w->fd = openat(w->dirfd, name, O_RDWR | O_CLOEXEC);
	if (w->fd < 0 || fstat(w->fd, &sb) < 0) {
		rc = -errno;
		goto fail;
	}
	/* The records just replayed may sit only in the page cache (the last
	 * process died before its fdatasync); the shard will act on them, so
	 * they must be durable before anything else happens. */
	rc = fileio_fdatasync(w->fd);
	if (rc < 0)
		goto fail;
	if (s->end > 0 && r->last_lsn + 1 != next_lsn) {
		/* The log ends before the snapshot: go on at after_lsn + 1. */
		close(w->fd);
		w->fd = -1;
		return seg_start(w, next_lsn);
	}
	w->seg_size = (size_t)sb.st_size;
	w->off = s->end;
	if (w->seg_size < w->segment_size) {
		/* The process stopped while preallocating this segment. */
		log_warn("wal: %s/%s is %zu bytes, extending it to %zu",
			 w->dir, name, w->seg_size, w->segment_size);
		rc = prealloc(w->fd, w->seg_size, w->segment_size);
		if (rc < 0)
			goto fail;
		w->seg_size = w->segment_size;
	}
	return 0;
fail:
	log_error("wal: cannot prepare %s/%s for appending: %s", w->dir, name, strerror(-rc));
	return rc;
}

/* Creates dir if missing, makes its entry durable, opens and locks it. The
 * parent is synced even when dir already existed: whoever made it (the shard
 * does, before loading snapshots) may not have synced it, and a shard
 * directory lost in a power failure would take the whole log with it. */
static int dir_open(Wal *w, char *why, size_t why_len)
{
	int rc;

	if (mkdir(w->dir, 0755) == 0 || errno == EEXIST) {
		char *parent = xstrndup(w->dir, strlen(w->dir));
		char *slash = strrchr(parent, '/');
		if (!slash)
			strcpy(parent, ".");
		else if (slash == parent)
			parent[1] = '\0';
		else
			*slash = '\0';
		int pfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		rc = pfd < 0 ? -errno : fileio_fsync(pfd);
		if (pfd >= 0)
			close(pfd);
		free(parent);
		if (rc < 0) {
			set_why(why, why_len, "cannot sync the parent of %s: %s", w->dir, strerror(-rc));
			return rc;
		}
	} else {
		rc = -errno;
		set_why(why, why_len, "cannot create %s: %s", w->dir, strerror(-rc));
		return rc;
	}
	w->dirfd = open(w->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (w->dirfd < 0) {
		rc = -errno;
		set_why(why, why_len, "cannot open %s: %s", w->dir, strerror(-rc));
		return rc;
	}
	if (flock(w->dirfd, LOCK_EX | LOCK_NB) < 0) {
		rc = errno == EWOULDBLOCK ? -EBUSY : -errno;
		set_why(why, why_len, "cannot lock %s: %s", w->dir,
			rc == -EBUSY ? "another process has this WAL open" : strerror(-rc));
		return rc;
	}
	return 0;
}

int wal_open(const WalOptions *opt, uint64_t after_lsn, WalRecordFn fn, void *ctx,
	     Wal **out, WalRecoveryStats *stats, char *why, size_t why_len)
{
	WalRecoveryStats st_local;
	Recovery r;
	Wal *w;
	int rc, cb_rc = 0;

	*out = NULL;
	if (!stats)
		stats = &st_local;
	memset(stats, 0, sizeof(*stats));
	set_why(why, why_len, "%s", "");
	if (!opt->dir || !opt->dir[0] || opt->segment_size < SEG_SIZE_MIN) {
		set_why(why, why_len, "bad WAL options (segment_size must be >= %zu)", SEG_SIZE_MIN);
		return -EINVAL;
	}

	w = xcalloc(1, sizeof(*w));
	w->dir = xstrndup(opt->dir, strlen(opt->dir));
	w->dirfd = -1;
	w->fd = -1;
	w->segment_size = opt->segment_size;

	memset(&r, 0, sizeof(r));
	r.w = w;
	r.opt = opt;
	r.after_lsn = after_lsn;
	r.fn = fn;
	r.ctx = ctx;
	r.st = stats;
	r.why = why;
	r.why_len = why_len;

	rc = dir_open(w, why, why_len);
	if (rc < 0)
		goto fail;
	rc = seg_list(w, why, why_len);
	if (rc < 0)
		goto fail;
	for (size_t i = 0; i < w->nsegs; i++) {
		rc = recover_segment(&r, i, &cb_rc);
		if (rc < 0)
			goto fail;
		if (cb_rc) {
			rc = cb_rc;
			goto fail;
		}
		if (rc == 1)
			break;
	}
	free(r.buf);
	r.buf = NULL;
	stats->last_lsn = r.last_lsn;

	if ((rc = settle(&r)) != 0)
		goto fail;
	rc = recover_tail(&r, (r.last_lsn > after_lsn ? r.last_lsn : after_lsn) + 1);
	if (rc < 0) {
		if (why && !why[0])
			set_why(why, why_len, "cannot prepare %s for appending: %s", w->dir, strerror(-rc));
		goto fail;
	}
	spare_start(w);
	*out = w;
	return 0;
fail:
	free(r.buf);
	wal_close(w);
	return rc;
}

void wal_close(Wal *w)
{
	if (!w)
		return;
	spare_stop(w);
	if (w->fd >= 0)
		close(w->fd);
	if (w->dirfd >= 0)
		close(w->dirfd);      /* releases the flock */
	free(w->segs);
	free(w->dir);
	free(w);
}

uint64_t wal_next_lsn(const Wal *w)
{
	return w->next_lsn;
}

/* Makes the current segment durable and starts segment lsn. The old segment
 * must be durable before a successor exists: recovery treats damage in a
 * non-last segment as corruption. */
static int rotate(Wal *w, uint64_t lsn)
{
	int rc = fileio_fdatasync(w->fd);
	if (rc < 0) {
		log_error("wal: fdatasync of %s before rotating failed: %s", w->dir, strerror(-rc));
		return rc;
	}
	close(w->fd);
	w->fd = -1;
	return seg_start(w, lsn);
}

/* Sets the batch-start bit of the framed record at p and updates its crc. */
static void mark_batch_start(uint8_t *p)
{
	uint32_t word = get_u32le(p + 4);
	put_u32le(p + 4, word | LEN_BATCH_START);
	uint32_t crc = crc32c(0, p + 4, WAL_RECORD_HEADER_LEN - 4);
	put_u32le(p, crc32c(crc, p + WAL_RECORD_HEADER_LEN, word & LEN_MASK));
}

int wal_write(Wal *w, uint8_t *data, size_t len)
{
	uint64_t lsn = w->next_lsn;
	size_t off = 0;
	int rc;

	/* Walk the headers: a batch that does not continue the log would make
	 * it unreadable past this point. */
	while (off < len) {
		if (len - off < WAL_RECORD_HEADER_LEN)
			goto bad;
		uint32_t plen = get_u32le(data + off + 4) & LEN_MASK;
		if (plen == 0 || plen > WAL_RECORD_PAYLOAD_MAX || get_u64le(data + off + 8) != lsn)
			goto bad;
		off += WAL_RECORD_HEADER_LEN + pad8(plen);
		lsn++;
	}
	if (off != len)
		goto bad;

	/* One write for the batch, except where it crosses into a new segment:
	 * then the records that fit go first and the rest start the next one
	 * (a batch can be larger than a segment, e.g. after a long downtime
	 * every overdue hold times out at once). */
	off = 0;
	lsn = w->next_lsn;
	while (off < len) {
		size_t part = 0;
		uint64_t part_lsn = lsn;
		while (off + part < len) {
			size_t rec = WAL_RECORD_HEADER_LEN + pad8(get_u32le(data + off + part + 4) & LEN_MASK);
			if (w->off + part + rec > w->seg_size)
				break;
			part += rec;
			lsn++;
		}
		if (part == 0) {
			rc = rotate(w, part_lsn);
			if (rc < 0)
				return rc;
			continue;
		}
		mark_batch_start(data + off);
		rc = fileio_pwrite_all(w->fd, data + off, part, (off_t)w->off);
		if (rc < 0) {
			log_error("wal: write of %zu bytes to %s failed: %s", part, w->dir, strerror(-rc));
			return rc;
		}
		w->off += part;
		w->next_lsn = lsn;
		off += part;
	}
	return 0;
bad:
	log_error("wal: malformed batch for %s at byte %zu (expected lsn %" PRIu64 ")",
		  w->dir, off, lsn);
	return -EINVAL;
}

int wal_sync(Wal *w)
{
	int rc = fileio_fdatasync(w->fd);

	if (rc < 0)
		log_error("wal: fdatasync of %s failed: %s", w->dir, strerror(-rc));
	return rc;
}

int wal_delete_through(Wal *w, uint64_t lsn)
{
	size_t n = 0;

	/* Segment i holds LSNs segs[i].lsn .. segs[i + 1].lsn - 1. */
	while (n + 1 < w->nsegs && w->segs[n + 1].lsn <= lsn + 1)
		n++;
	for (size_t i = 0; i < n; i++) {
		char name[SEG_NAME_LEN + 1];
		seg_name(name, w->segs[i].lsn);
		if (unlinkat(w->dirfd, name, 0) < 0 && errno != ENOENT) {
			int rc = -errno;
			log_error("wal: cannot delete %s/%s: %s", w->dir, name, strerror(-rc));
			memmove(w->segs, w->segs + i, (w->nsegs - i) * sizeof(*w->segs));
			w->nsegs -= i;
			return rc;
		}
	}
	if (!n)
		return 0;
	memmove(w->segs, w->segs + n, (w->nsegs - n) * sizeof(*w->segs));
	w->nsegs -= n;
	int rc = fileio_fsync(w->dirfd);
	if (rc < 0) {
		log_error("wal: fsync of %s failed: %s", w->dir, strerror(-rc));
		return rc;
	}
	return (int)n;
}

/* ---- the reader ---------------------------------------------------------------
 *
 * It keeps a chunk of the current segment in memory. Bytes past the durable
 * point may be read into that chunk before the shard has written them (as
 * zeros, or half a batch), so a record that looks missing or damaged in the
 * chunk is read again from the file before anything is concluded. */

#define READER_CHUNK ((size_t)256 << 10)

_Static_assert(READER_CHUNK >= WAL_RECORD_HEADER_LEN + WAL_RECORD_PAYLOAD_MAX,
	       "a reader chunk must hold the largest record");

struct WalReader {
	int dirfd;
	int fd;               /* the current segment, -1 before the first */
	size_t seg_size;
	size_t off;           /* file offset of the next record */
	uint64_t next_lsn;    /* the LSN the next record carries */
	uint64_t skip_until;  /* records below this are passed over, not returned */
	uint8_t *buf;         /* file bytes [buf_off, buf_off + buf_len) */
	size_t buf_off, buf_len;
};

static int reader_open_segment(WalReader *r, uint64_t lsn)
{
	char name[SEG_NAME_LEN + 1];
	struct stat sb;

	seg_name(name, lsn);
	int fd = openat(r->dirfd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &sb) < 0) {
		int rc = -errno;
		close(fd);
		return rc;
	}
	if (r->fd >= 0)
		close(r->fd);
	r->fd = fd;
	r->seg_size = (size_t)sb.st_size;
	r->off = 0;
	r->next_lsn = lsn;
	r->buf_len = 0;
	return 0;
}

/* Makes at least `need` bytes at r->off available (fewer only at the end of
 * the segment), from the chunk unless fresh, else from the file. */
static int reader_fill(WalReader *r, size_t need, int fresh, const uint8_t **p, size_t *avail)
{
	if (!fresh && r->off >= r->buf_off && r->off + need <= r->buf_off + r->buf_len) {
		*p = r->buf + (r->off - r->buf_off);
		*avail = r->buf_off + r->buf_len - r->off;
		return 0;
	}
	size_t want = READER_CHUNK;
	if (r->off + want > r->seg_size)
		want = r->seg_size > r->off ? r->seg_size - r->off : 0;
	int rc = fileio_pread_all(r->fd, r->buf, want, (off_t)r->off);
	if (rc < 0)
		return rc;
	r->buf_off = r->off;
	r->buf_len = want;
	*p = r->buf;
	*avail = want;
	return 0;
}

int wal_reader_open(const char *dir, uint64_t from_lsn, WalReader **out)
{
	WalReader *r = xcalloc(1, sizeof(*r));
	uint64_t best = 0;
	int found = 0, rc;

	r->fd = -1;
	r->dirfd = -1;
	r->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (r->dirfd < 0) {
		rc = -errno;
		goto fail;
	}
	/* The segment holding from_lsn: the last one named at or below it. */
	DIR *d = fdopendir(dup(r->dirfd));
	if (!d) {
		rc = -errno;
		goto fail;
	}
	struct dirent *de;
	while ((de = readdir(d))) {
		uint64_t lsn;
		if (seg_name_parse(de->d_name, &lsn) && lsn <= from_lsn && (!found || lsn > best)) {
			best = lsn;
			found = 1;
		}
	}
	closedir(d);
	if (!found) {
		rc = -ENOENT;
		goto fail;
	}
	r->buf = xmalloc(READER_CHUNK);
	rc = reader_open_segment(r, best);
	if (rc < 0)
		goto fail;
	r->skip_until = from_lsn;
	*out = r;
	return 0;
fail:
	wal_reader_close(r);
	return rc;
}

int wal_reader_next(WalReader *r, uint64_t upto, uint64_t *lsn, const uint8_t **payload, size_t *len)
{
	for (;;) {
		const uint8_t *p;
		size_t avail, total;
		uint64_t got;
		int rc;

		if (r->next_lsn > upto)
			return 0;
		/* The record is durable, so it is here or, when its batch did not
		 * fit, at the start of the segment named after it. */
		int fresh = 0;
		for (;;) {
			rc = reader_fill(r, WAL_RECORD_HEADER_LEN, fresh, &p, &avail);
			if (rc < 0)
				return rc;
			if (avail >= WAL_RECORD_HEADER_LEN && !is_zero(p, WAL_RECORD_HEADER_LEN))
				break;
			if (!fresh) {
				fresh = 1;
				continue;
			}
			rc = reader_open_segment(r, r->next_lsn);
			if (rc == -ENOENT)
				return -EBADMSG; /* durable, yet nowhere */
			if (rc < 0)
				return rc;
			fresh = 0;
		}
		uint32_t plen = get_u32le(p + 4) & LEN_MASK;
		size_t need = WAL_RECORD_HEADER_LEN + pad8(plen > WAL_RECORD_PAYLOAD_MAX ? 0 : plen);
		rc = reader_fill(r, need, 0, &p, &avail);
		if (rc < 0)
			return rc;
		if (!rec_valid(p, avail, &got, &total) || got != r->next_lsn) {
			rc = reader_fill(r, need, 1, &p, &avail); /* maybe read before it was written */
			if (rc < 0)
				return rc;
			if (!rec_valid(p, avail, &got, &total) || got != r->next_lsn) {
				log_error("wal reader: record %" PRIu64 " at offset %zu is damaged",
					  r->next_lsn, r->off);
				return -EBADMSG;
			}
		}
		r->off += total;
		r->next_lsn++;
		if (got < r->skip_until)
			continue;
		*lsn = got;
		*payload = p + WAL_RECORD_HEADER_LEN;
		*len = get_u32le(p + 4) & LEN_MASK;
		return 1;
	}
}

void wal_reader_close(WalReader *r)
{
	if (!r)
		return;
	if (r->fd >= 0)
		close(r->fd);
	if (r->dirfd >= 0)
		close(r->dirfd);
	free(r->buf);
	free(r);
}
