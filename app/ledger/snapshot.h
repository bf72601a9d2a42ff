/* snapshot.h — a shard's book written whole to disk, so recovery replays
 * only the WAL after it.
 *
 * File "snap-<lsn as 16 hex>.snap" in the shard directory, covering every
 * record with lsn <= its number. Layout (little-endian):
 *   0   8  magic "RGSNAP01"
 *   8   8  lsn
 *   16  8  payload length
 *   24  4  crc32c of the payload
 *   28  4  crc32c of bytes 0..28
 *   32  .. payload (book_save's bytes; opaque here)
 * Written to a temp file, fsynced, renamed into place, directory fsynced: a
 * crash leaves either the old set of snapshots or the new one. */
#ifndef RG_SNAPSHOT_H
#define RG_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

/* Writes a snapshot covering lsn, then deletes all but the newest `keep`
 * (>= 1) snapshots. Returns 0 or a negative errno (fatal for the caller: a
 * failed fsync may have lost data). */
int snapshot_write(const char *dir, uint64_t lsn, const void *data, size_t len, unsigned keep)
	__attribute__((warn_unused_result));

/* Loads the newest snapshot that passes its checks; a damaged newer one is
 * skipped with a warning. On success *data is malloc'd (caller frees); when
 * there is no snapshot, returns 0 with *data = NULL, *lsn = 0. Returns a
 * negative errno on I/O errors. */
int snapshot_load_latest(const char *dir, uint64_t *lsn, uint8_t **data, size_t *len)
	__attribute__((warn_unused_result));

/* After a recovery from snapshot lsn (0: none) succeeded: every snapshot
 * newer than lsn is one snapshot_load_latest skipped as damaged. Each is
 * renamed "snap-<lsn>.damaged" (kept for inspection, never loaded or
 * counted again) and the directory fsynced. Without this, the next
 * snapshot_write would keep the damaged file as one of its `keep` and
 * delete the good one recovery just used: a second fault could then leave
 * no snapshot whose WAL is still there. Returns 0 or a negative errno. */
int snapshot_quarantine_newer(const char *dir, uint64_t lsn) __attribute__((warn_unused_result));

#endif
