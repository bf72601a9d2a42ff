/* wal.h — one shard's write-ahead log: framed records in preallocated segments.
 *
 * The byte layout and the recovery rules are documented at the top of wal.c.
 * A Wal is used by one thread at a time (the shard's syncer after recovery).
 * The WAL knows nothing about what records mean: payloads are opaque bytes
 * (see record.h). */
#ifndef RG_WAL_H
#define RG_WAL_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

#define WAL_RECORD_HEADER_LEN 16
#define WAL_RECORD_PAYLOAD_MAX 65536

typedef struct Wal Wal;

typedef struct WalOptions {
	const char *dir;         /* the shard's directory; created if missing */
	size_t segment_size;     /* bytes per segment file, preallocated (>= 1 MiB) */
	int allow_corruption;    /* recover past mid-log damage (drops the rest) instead of refusing */
	/* Optional, for a WalRecordFn that applies records some time after it is
	 * given them: called with wal_open's ctx before recovery changes anything
	 * on disk (trims a torn tail, drops damage, prepares the tail for
	 * appending), to apply what it holds. A non-zero return stops recovery
	 * with that value and leaves the log as it was. */
	int (*settle)(void *ctx);
} WalOptions;

typedef struct WalRecoveryStats {
	uint64_t records;        /* records handed to the callback */
	uint64_t last_lsn;       /* the last valid LSN found (0: empty log) */
	uint64_t torn_bytes;     /* bytes of torn tail trimmed */
	unsigned segments;       /* segment files read */
} WalRecoveryStats;

/* Called for each valid record with lsn > after_lsn, in LSN order. The payload
 * is borrowed for the call. A non-zero return stops recovery with that value. */
typedef int (*WalRecordFn)(void *ctx, uint64_t lsn, const uint8_t *payload, size_t len);

/* Opens dir, reads every segment, calls fn for records after after_lsn, trims
 * a torn tail (logging the bytes), and leaves the log ready to append at
 * last_lsn + 1 (or after_lsn + 1 when the log ends before the snapshot).
 * Returns 0, or a negative errno: -EBADMSG when a damaged record is followed by
 * valid ones (corruption in the middle), or is in the last write but shows no
 * zeroed sector as a torn write leaves (bit rot; see wal.c RECOVERY), with
 * *why saying where, and allow_corruption is off; -EIO etc. on I/O failure. */
int wal_open(const WalOptions *opt, uint64_t after_lsn, WalRecordFn fn, void *ctx,
	     Wal **out, WalRecoveryStats *stats, char *why, size_t why_len)
	__attribute__((warn_unused_result));
void wal_close(Wal *w);

/* The LSN the next appended record must carry. */
uint64_t wal_next_lsn(const Wal *w);

/* Appends one framed record (header + payload + padding to 8 bytes) to batch.
 * Framing is separate from writing so a shard can build its batch while the
 * previous one is syncing. */
void wal_frame(Buf *batch, uint64_t lsn, const void *payload, size_t len);

/* Writes a batch of framed records (LSNs consecutive from wal_next_lsn) with
 * one write, or, where it crosses the end of the current segment, one write
 * per segment (syncing the full one before starting the next). Does not sync
 * the last. Marks the first record of each write as a batch start in data
 * itself (a bit in its length word, crc updated: see wal.c), which is why
 * data is not const. Returns 0 or a negative errno; the caller must treat an
 * error as fatal (the file state is unknown). */
int wal_write(Wal *w, uint8_t *data, size_t len) __attribute__((warn_unused_result));
/* fdatasync of the current segment. Same fatal rule. */
int wal_sync(Wal *w) __attribute__((warn_unused_result));

/* Deletes segment files all of whose records have lsn <= lsn (they are in a
 * snapshot, and in PostgreSQL once write-behind exists). Returns the count
 * deleted or a negative errno. */
int wal_delete_through(Wal *w, uint64_t lsn);

/* ---- reading a live log: for the write-behind ------------------------------
 *
 * A WalReader follows one shard's segment files from an LSN onwards with its
 * own file descriptors, while the shard keeps appending. It returns only
 * records at or below an LSN the caller knows to be durable, so it never sees
 * a torn batch; a record there that fails its checks is real damage. Segments
 * are deleted only behind the write-behind (shard.h), so the files it needs
 * stay. Used by one thread. */
typedef struct WalReader WalReader;

/* Positions at the first record with lsn >= from_lsn. Returns 0, or -ENOENT
 * when the log no longer holds from_lsn (deleted), or another negative errno. */
int wal_reader_open(const char *dir, uint64_t from_lsn, WalReader **out)
	__attribute__((warn_unused_result));
/* The next record if its LSN is <= upto: returns 1 and sets *lsn, *payload
 * and *len (borrowed until the next call); 0 when the next record is above
 * upto (or not written yet); -EBADMSG on a damaged record at or below upto;
 * another negative errno on I/O errors. */
int wal_reader_next(WalReader *r, uint64_t upto, uint64_t *lsn, const uint8_t **payload,
		    size_t *len) __attribute__((warn_unused_result));
void wal_reader_close(WalReader *r);

#endif
