/* writebehind.h — carries each shard's WAL to PostgreSQL, exactly once in effect.
 *
 * DESIGN. One writer thread per shard, each with its own libpq connection
 * (never a shard thread: selling never waits for PostgreSQL). A writer reads
 * ledger_checkpoint(shard) — the last LSN PostgreSQL has — follows the shard's
 * WAL from the next record with a WalReader, but only up to the LSN the shard
 * has made durable, and applies up to writebehind_batch_max records per
 * transaction. That transaction also moves the checkpoint from exactly the LSN
 * it started from to the batch's last LSN, so a batch is either wholly in
 * PostgreSQL with its checkpoint or not at all: after any crash or lost
 * connection the writer re-reads the checkpoint and resumes right after it
 * (DESIGN.md decision 4). The rows themselves are idempotent as well
 * (inventory_log ON CONFLICT, status changes only from 'reserved' and only
 * from an older LSN), so even a checkpoint reset cannot duplicate a row or
 * move one backwards.
 *
 * A batch becomes three set-based statements whose effect equals applying its
 * records one by one in LSN order: products (the last SKU_PUT per SKU wins),
 * inventory_log inserts (a reservation whose status also changed within the
 * batch is inserted with its final status), then status updates. Rows travel
 * as array parameters, never as SQL text. BEGIN, the checkpoint move, those
 * statements and COMMIT go out as one libpq pipeline with a single Sync, so
 * a batch costs one round trip to PostgreSQL (it cost four or more, which
 * capped the drain rate across a wide-area link at batch / (4 * RTT)); a
 * checkpoint found elsewhere makes its statement fail, so PostgreSQL skips
 * the rest of the pipeline and the COMMIT with it.
 *
 * On a PostgreSQL error the writer rolls back (by dropping the connection),
 * reconnects with capped exponential backoff (100 ms doubling up to
 * writebehind_retry_max_ms), and keeps the batch it read: the backlog waits in
 * the WAL, whose segments the shard deletes only behind the applied LSN. A
 * damaged WAL record, a log that no longer holds the records after the
 * checkpoint, or a checkpoint beyond the end of the log (a database that
 * belongs to another ledger) stops that shard's writer with an ERROR and is
 * reported in its stats (connected 0, errors rising): never silently skipped.
 *
 * Under load a writer that has just committed gathers the next batch for up
 * to writebehind_delay_ms (or until it is full) before committing again: each
 * PostgreSQL transaction has a fixed cost, and at a few thousand records a
 * second batches of a handful spent more of the machine in PostgreSQL than
 * the sale itself. A record arriving after a quiet spell goes out at once.
 *
 * Progress goes to shard_report_writebehind: applied LSN, lag in records and
 * the age of the oldest record PostgreSQL does not have yet. */
#ifndef RG_WRITEBEHIND_H
#define RG_WRITEBEHIND_H

#include "ledger/shard.h"

typedef struct WriteBehind WriteBehind;

typedef struct WriteBehindConfig {
	const char *conninfo;          /* libpq connection string (copied) */
	int batch_max;                 /* records per transaction */
	int delay_ms;                  /* longest a batch gathers after the last commit */
	int retry_max_ms;              /* cap of the reconnect backoff */
} WriteBehindConfig;

/* Starts one writer per shard. shards and dirs (each shard's WAL directory)
 * are borrowed until writebehind_stop; the shards must have been given
 * shard_enable_writebehind before they started. Returns 0 or a negative
 * errno (thread creation). */
int writebehind_start(const WriteBehindConfig *cfg, Shard **shards, const char *const *dirs,
		      unsigned nshards, WriteBehind **out) __attribute__((warn_unused_result));

/* 1 when conninfo parses as a libpq connection string or URI (checked at
 * start and by --check-config, so a typo is not a writer retrying forever). */
int writebehind_conninfo_valid(const char *conninfo);

/* Stops the writers (a transaction in flight is abandoned and rolled back:
 * the next start applies it again) and frees everything. NULL is a no-op. */
void writebehind_stop(WriteBehind *wb);

#endif
