/* shard.h — one shard: the single owner of its SKUs.
 *
 * DESIGN. A shard is two threads around one Book and one Wal.
 *   The shard thread takes every request waiting in its inbox, applies them to
 *   the book one at a time (so a check and a take never interleave), frames the
 *   records they produce and encodes their answers into the batch being built.
 *   The syncer thread writes a finished batch to the WAL with one write and
 *   one fdatasync, and only then releases its answers (the output gate).
 * While the syncer waits on the disk, the shard thread already gathers and
 * applies the next batch; it hands it over the moment the syncer is free. So
 * one fsync pays for everything that arrived during the previous one (group
 * commit), and the disk never waits for the CPU. Answers to reads also wait
 * for their batch, so nobody is ever shown state that is not yet durable.
 *
 * A full inbox refuses at once (-EBUSY: the caller answers "busy"), and a batch
 * stops taking requests at queue_len_max of them or wal_segment_size/8 bytes,
 * so memory stays bounded at any load.
 * A failed WAL write, fsync or snapshot is fatal: the process exits and the
 * next start recovers from the log (never retry an fsync and carry on). */
#ifndef RG_SHARD_H
#define RG_SHARD_H

#include <stddef.h>
#include <stdint.h>

#include "common/wire.h"
#include "ledger/book.h"
#include "ledger/idem.h"

typedef struct Shard Shard;

typedef struct ShardConfig {
	unsigned index;
	char dir[512];                  /* this shard's WAL and snapshots */
	size_t wal_segment_size;
	size_t queue_len_max;           /* inbox capacity */
	uint64_t snapshot_interval_records;
	int allow_wal_corruption;
	BookConfig book;
} ShardConfig;

/* The conn of a request that wants no answer (the ledger's own requests,
 * such as catalog adoption). */
#define SHARD_CONN_NONE UINT64_MAX

/* One answer in a released batch: which connection, and where its encoded
 * frame sits in the batch's data. */
typedef struct ShardReply {
	uint64_t conn;
	uint32_t offset, len;
} ShardReply;

/* Called by the syncer thread once a batch is durable; data is borrowed for
 * the call. Must not block for long: it delays the next fsync. */
typedef void (*ShardReplyFn)(void *ctx, const ShardReply *replies, size_t n, const uint8_t *data);

/* Histograms of ShardStats: bucket i counts observations <= bound[i]; the
 * last bucket counts the rest. Buckets are not cumulative. */
#define SHARD_BATCH_BUCKETS 12    /* requests per released batch: 1, 2, 4 ... 1024 */
#define SHARD_FSYNC_BUCKETS 12    /* one WAL write + fdatasync, in microseconds */
extern const uint64_t shard_batch_bound[SHARD_BATCH_BUCKETS - 1];
extern const uint64_t shard_fsync_bound_us[SHARD_FSYNC_BUCKETS - 1];

/* What a shard has done and holds, published once per batch (by the threads
 * that already hold the shard's lock then: no lock is added for them). */
typedef struct ShardStats {
	BookStats book;
	uint64_t queue_len;             /* requests waiting now */
	uint64_t busy;                  /* requests refused with a full inbox */
	uint64_t batches;               /* batches released */
	uint64_t requests;              /* requests answered */
	uint64_t fsyncs;
	uint64_t fsync_ns_total;
	uint64_t fsync_ns_max;
	uint64_t records;               /* WAL records written */
	uint64_t wal_bytes;
	uint64_t snapshots;
	uint64_t last_lsn;
	uint64_t recovered_records;
	uint64_t recovery_ms;
	uint64_t snapshot_lsn;          /* the newest snapshot on disk covers the WAL through this */
	uint64_t batch_hist[SHARD_BATCH_BUCKETS];  /* batches with answers, by requests */
	uint64_t fsync_hist[SHARD_FSYNC_BUCKETS];  /* fsyncs by latency */
	/* write-behind (0 when it is off) */
	uint64_t wb_applied_lsn;        /* the last LSN PostgreSQL has */
	uint64_t wb_lag_records;        /* durable but not yet in PostgreSQL */
	uint64_t wb_lag_ms;             /* age of the oldest record not yet in PostgreSQL */
	uint64_t wb_connected;          /* 1 while its connection works */
	uint64_t wb_errors;             /* failed transactions and connections */
} ShardStats;

/* Admin requests (WIRE_OP_SNAPSHOT, WIRE_OP_AUDIT) go through shard_submit
 * like any other, so they see the state after everything queued before them:
 *   SNAPSHOT serialises the book at once and answers the LSN it covers (the
 *     snapshotter writes the file once that LSN is durable; stats'
 *     snapshot_lsn reaching it says the file is there), or BUSY while the
 *     previous snapshot is still being written. Already covered: answers the
 *     newest snapshot's LSN without writing another.
 *   AUDIT recomputes every SKU's counters from its reservations
 *     (book_check_all) and answers the totals, or AUDIT_FAILED (the reason is
 *     logged). Both block only this shard, for a time linear in its size. */

/* Recovers the shard from cfg->dir (newest snapshot, then the WAL after it).
 * Returns 0 and *out, or a negative errno with a message in why (corruption
 * in the middle of the log, an unreadable snapshot, I/O errors). */
int shard_open(const ShardConfig *cfg, IdemIndex *idem, ShardReplyFn reply, void *reply_ctx,
	       Shard **out, char *why, size_t why_len) __attribute__((warn_unused_result));
/* Starts the two threads. */
int shard_start(Shard *s) __attribute__((warn_unused_result));

/* Queues one request; conn comes back in its ShardReply. Thread-safe.
 * Returns 0, -EBUSY when the inbox is full, -ESHUTDOWN once stopping. */
int shard_submit(Shard *s, const WireRequest *req, uint64_t conn);

/* One request with the connection its answer goes to. */
typedef struct ShardRequest {
	WireRequest req;
	uint64_t conn;
} ShardRequest;

/* Queues reqs[0..n) in order under one lock with at most one wakeup of the
 * shard thread (the server submits what one pass of its loop decoded, so the
 * lock and the wakeup are paid per pass, not per request). Returns how many
 * were queued — always a prefix; the rest found the inbox full and count as
 * busy — or -ESHUTDOWN once stopping. */
int shard_submit_many(Shard *s, const ShardRequest *reqs, size_t n);

/* Stops taking requests and returns once everything already queued is
 * durable and its answers posted (the final snapshot goes on meanwhile). */
void shard_drain(Shard *s);
/* shard_drain, then waits for the final snapshot and joins the threads. */
void shard_stop(Shard *s);
void shard_close(Shard *s);

void shard_stats(Shard *s, ShardStats *out);

/* For the write-behind (its own thread). Waits at most timeout_ms until
 * records after `after` are durable; returns the last durable LSN. */
uint64_t shard_wait_durable(Shard *s, uint64_t after, int timeout_ms);
/* The write-behind is stopping: wakes every shard_wait_durable, and later
 * calls return at once. */
void shard_wake_durable(Shard *s);

/* Write-behind progress. Once enable_writebehind was called, WAL segments
 * are deleted only when both a snapshot and PostgreSQL (applied_lsn) cover
 * them, so the backlog of an outage waits in the WAL. */
void shard_enable_writebehind(Shard *s);
void shard_report_writebehind(Shard *s, uint64_t applied_lsn, uint64_t lag_ms, int connected,
			      uint64_t errors);

#endif
