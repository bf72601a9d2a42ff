/* shard.c — a shard's two threads: apply (shard thread) and sync (syncer).
 * See shard.h for the design. */
#include "ledger/shard.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "common/clock.h"
#include "common/hash.h"
#include "common/log.h"
#include "common/rng.h"
#include "common/xmalloc.h"
#include "ledger/record.h"
#include "ledger/snapshot.h"
#include "ledger/wal.h"

#define SHARD_TICK_MS 250          /* expiry runs at least this often */
#define SNAPSHOTS_KEPT 2

const uint64_t shard_batch_bound[SHARD_BATCH_BUCKETS - 1] = { 1, 2, 4, 8, 16, 32, 64, 128,
							      256, 512, 1024 };
const uint64_t shard_fsync_bound_us[SHARD_FSYNC_BUCKETS - 1] = { 100, 250, 500, 1000, 2500,
								 5000, 10000, 25000, 50000,
								 100000, 1000000 };

/* Everything one fsync makes durable, and the answers it releases. */
typedef struct Batch {
	Buf wal;                   /* framed records */
	uint64_t records;
	Buf out;                   /* encoded response frames */
	ShardReply *replies;
	size_t n, cap;
} Batch;

struct Shard {
	ShardConfig cfg;
	Book *book;
	Wal *wal;
	Rng rng;
	ShardReplyFn reply;
	void *reply_ctx;

	pthread_t thread, syncer;
	pthread_mutex_t mu;
	pthread_cond_t work_cond;  /* shard thread: inbox filled, syncer freed, stop */
	pthread_cond_t sync_cond;  /* syncer: a batch was handed over, stop */

	/* Guarded by mu. */
	ShardRequest *inbox;       /* filled by shard_submit */
	size_t inbox_len;
	Batch *syncing;            /* owned by the syncer while non-NULL */
	int stopping;              /* no more requests; finish and exit */
	int syncer_exit;
	int drained;               /* stopping, and every answer is durable and posted */
	pthread_cond_t drain_cond;
	ShardStats stats;

	/* Snapshots, also guarded by mu. The shard thread serialises the book
	 * into snap_buf (a consistent copy, at memory speed); the snapshotter
	 * thread writes it to disk once the WAL through snap_lsn is durable, so
	 * neither applying nor acknowledging waits for a large file's fsync. */
	pthread_t snapshotter;
	pthread_cond_t snap_cond;
	Buf snap_buf;
	uint64_t snap_lsn;
	int snap_queued;           /* snap_buf is the snapshotter's until it clears this */
	int64_t snap_serialise_ns; /* how long the shard thread took to fill snap_buf */
	int snap_exit;
	uint64_t durable_lsn;      /* the last LSN the syncer made durable */
	uint64_t older_snapshot_lsn; /* the snapshot before the newest */
	uint64_t deletable_lsn;    /* a snapshot covers the WAL through this */
	uint64_t deleted_lsn;      /* the syncer deleted segments through this */
	pthread_cond_t durable_cond; /* the write-behind waits for durable_lsn here */
	int durable_released;      /* shard_wake_durable: no more waiting */
	int writebehind;           /* deletion also waits for PostgreSQL */
	int wb_reported;           /* the writer has said where PostgreSQL is */

	/* Shard thread only. */
	ShardRequest *work;        /* the inbox array it swapped out */
	Batch batch[2];
	Batch *building;
	uint64_t next_lsn;
	uint64_t records_since_snapshot;
	int64_t next_tick_ms;
	Buf scratch;
};

/* ---- recovery --------------------------------------------------------------- */

/* Replay reads ahead: a record is decoded REPLAY_AHEAD records before it is
 * applied, its hash buckets fetched into the cache on arrival and the
 * entries they point to halfway, so in a book larger than the cache the
 * lookups of many records wait on memory at once instead of one by one. */
#define REPLAY_AHEAD 16

typedef struct Replay {
	Book *book;
	Record rec[REPLAY_AHEAD];
	uint64_t lsn[REPLAY_AHEAD];
	uint64_t seen;             /* records decoded; all but the last `queued` applied */
	size_t queued;
	char why[160];             /* the record that stopped the replay */
} Replay;

static int replay_apply_oldest(Replay *rp)
{
	size_t i = (size_t)((rp->seen - rp->queued) % REPLAY_AHEAD);
	rp->queued--;
	if (book_replay(rp->book, &rp->rec[i]) != 0) {
		snprintf(rp->why, sizeof(rp->why), "wal record %llu (%s) does not fit the recovered state",
			 (unsigned long long)rp->lsn[i], record_type_name(rp->rec[i].type));
		return -EBADMSG;
	}
	return 0;
}

static int replay_record(void *ctx, uint64_t lsn, const uint8_t *payload, size_t len)
{
	Replay *rp = ctx;
	if (rp->queued == REPLAY_AHEAD && replay_apply_oldest(rp) != 0)
		return -EBADMSG;
	size_t i = (size_t)(rp->seen % REPLAY_AHEAD);
	if (record_decode(payload, len, &rp->rec[i]) != 0) {
		snprintf(rp->why, sizeof(rp->why), "wal record %llu cannot be decoded",
			 (unsigned long long)lsn);
		return -EBADMSG;
	}
	rp->lsn[i] = lsn;
	rp->seen++;
	rp->queued++;
	book_prefetch(rp->book, &rp->rec[i], 0);
	if (rp->queued > REPLAY_AHEAD / 2)
		book_prefetch(rp->book, &rp->rec[(rp->seen - 1 - REPLAY_AHEAD / 2) % REPLAY_AHEAD], 1);
	return 0;
}

/* WalOptions.settle: applies what replay_record still holds, before
 * recovery trims, drops or appends anything — so a record that does not fit
 * refuses the start with the log exactly as it was. */
static int replay_settle(void *ctx)
{
	Replay *rp = ctx;
	while (rp->queued > 0)
		if (replay_apply_oldest(rp) != 0)
			return -EBADMSG;
	return 0;
}

int shard_open(const ShardConfig *cfg, IdemIndex *idem, ShardReplyFn reply, void *reply_ctx,
	       Shard **out, char *why, size_t why_len)
{
	Shard *s = xcalloc(1, sizeof(*s));
	uint8_t *snap = NULL;
	Replay *replay = NULL;
	size_t snap_len = 0;
	uint64_t snap_lsn = 0;
	int64_t started = clock_mono_ns();
	int rc;

	s->cfg = *cfg;
	s->reply = reply;
	s->reply_ctx = reply_ctx;
	rng_init_kernel(&s->rng);
	s->book = book_new(&cfg->book, idem, &s->rng);

	if (mkdir(cfg->dir, 0750) != 0 && errno != EEXIST) {
		rc = -errno;
		snprintf(why, why_len, "cannot create %s: %s", cfg->dir, strerror(errno));
		goto fail;
	}
	rc = snapshot_load_latest(cfg->dir, &snap_lsn, &snap, &snap_len);
	if (rc != 0) {
		snprintf(why, why_len, "cannot read snapshots in %s: %s", cfg->dir, strerror(-rc));
		goto fail;
	}
	if (snap && book_load(s->book, snap, snap_len) != 0) {
		rc = -EBADMSG;
		snprintf(why, why_len, "snapshot %llu in %s passed its checksum but does not load",
			 (unsigned long long)snap_lsn, cfg->dir);
		goto fail;
	}
	free(snap);
	snap = NULL;
	s->older_snapshot_lsn = snap_lsn;
	s->deletable_lsn = 0;
	s->deleted_lsn = 0;

	WalOptions opt = { .dir = cfg->dir, .segment_size = cfg->wal_segment_size,
			   .allow_corruption = cfg->allow_wal_corruption, .settle = replay_settle };
	WalRecoveryStats rs;
	replay = xcalloc(1, sizeof(*replay));
	replay->book = s->book;
	rc = wal_open(&opt, snap_lsn, replay_record, replay, &s->wal, &rs, why, why_len);
	rg_assert(rc != 0 || replay->queued == 0); /* settled before the tail was prepared */
	if (rc != 0) {
		if (replay->why[0])
			snprintf(why, why_len, "%s in %s", replay->why, cfg->dir);
		else if (!why[0])
			snprintf(why, why_len, "cannot recover the WAL in %s: %s", cfg->dir, strerror(-rc));
		goto fail;
	}
	char broken[256];
	if (book_check_all(s->book, broken, sizeof(broken)) != 0) {
		rc = -EBADMSG;
		snprintf(why, why_len, "recovered state of %s is inconsistent: %s", cfg->dir, broken);
		goto fail;
	}
	book_check_touched(s->book);
	rc = snapshot_quarantine_newer(cfg->dir, snap_lsn);
	if (rc != 0) {
		snprintf(why, why_len, "cannot set aside damaged snapshots in %s: %s", cfg->dir,
			 strerror(-rc));
		goto fail;
	}
	free(replay);
	replay = NULL;
	s->next_lsn = wal_next_lsn(s->wal);

	int64_t ms = (clock_mono_ns() - started) / 1000000;
	s->stats.recovered_records = rs.records;
	s->stats.recovery_ms = (uint64_t)ms;
	s->stats.last_lsn = s->next_lsn - 1;
	s->stats.snapshot_lsn = snap_lsn;
	s->durable_lsn = s->next_lsn - 1;
	log_info("shard %u recovered: snapshot lsn %llu, %llu wal records replayed in %lld ms, "
		 "torn tail %llu bytes, next lsn %llu", cfg->index, (unsigned long long)snap_lsn,
		 (unsigned long long)rs.records, (long long)ms, (unsigned long long)rs.torn_bytes,
		 (unsigned long long)s->next_lsn);

	pthread_mutex_init(&s->mu, NULL);
	/* Timed waits count on the monotonic clock: a wall-clock step (NTP,
	 * an operator) must not stretch or cut the expiry tick or a wait for
	 * durability. */
	pthread_condattr_t mono;
	pthread_condattr_init(&mono);
	pthread_condattr_setclock(&mono, CLOCK_MONOTONIC);
	pthread_cond_init(&s->work_cond, &mono);
	pthread_cond_init(&s->sync_cond, &mono);
	pthread_cond_init(&s->snap_cond, &mono);
	pthread_cond_init(&s->durable_cond, &mono);
	pthread_cond_init(&s->drain_cond, &mono);
	pthread_condattr_destroy(&mono);
	buf_init(&s->snap_buf, 0);
	s->inbox = xmalloc(cfg->queue_len_max * sizeof(ShardRequest));
	s->work = xmalloc(cfg->queue_len_max * sizeof(ShardRequest));
	for (int i = 0; i < 2; i++) {
		buf_init(&s->batch[i].wal, 64 * 1024);
		buf_init(&s->batch[i].out, 64 * 1024);
	}
	buf_init(&s->scratch, 1024);
	s->building = &s->batch[0];
	*out = s;
	return 0;
fail:
	free(snap);
	free(replay);
	wal_close(s->wal);
	book_free(s->book);
	free(s);
	return rc;
}

/* ---- the shard thread: apply ---------------------------------------------------- */

static void emit_record(void *ctx, const Record *rec)
{
	Shard *s = ctx;
	buf_reset(&s->scratch);
	record_encode(rec, &s->scratch);
	wal_frame(&s->building->wal, s->next_lsn++, s->scratch.data, s->scratch.len);
	s->building->records++;
	s->records_since_snapshot++;
}

static void batch_add_reply(Batch *b, uint64_t conn, const WireResponse *resp)
{
	if (conn == SHARD_CONN_NONE)
		return;
	size_t offset = b->out.len;
	wire_encode_response(&b->out, resp);
	if (b->n == b->cap) {
		b->cap = b->cap ? b->cap * 2 : 256;
		b->replies = xrealloc(b->replies, b->cap * sizeof(*b->replies));
	}
	b->replies[b->n++] = (ShardReply){ conn, (uint32_t)offset, (uint32_t)(b->out.len - offset) };
}

static int batch_empty(const Batch *b)
{
	return b->n == 0 && b->records == 0;
}

/* A batch this large is handed over before taking more requests, so neither
 * its memory nor its fsync grows without bound. */
static int batch_full(const Shard *s)
{
	return s->building->n >= s->cfg.queue_len_max ||
	       s->building->wal.len >= s->cfg.wal_segment_size / 8;
}

static void maybe_snapshot(Shard *s, int force);

static void stat_put(WireResponse *resp, const char *name, uint64_t value)
{
	WireStat *st = &resp->u.stats.item[resp->u.stats.count++];
	wire_set_str(st->name, &st->name_len, name, strlen(name), WIRE_STAT_NAME_MAX);
	st->value = value;
}

/* SNAPSHOT: see shard.h. */
static void admin_snapshot(Shard *s, WireResponse *resp)
{
	uint64_t current = s->next_lsn - 1;

	pthread_mutex_lock(&s->mu);
	int busy = s->snap_queued;
	uint64_t queued = s->snap_lsn, newest = s->stats.snapshot_lsn;
	pthread_mutex_unlock(&s->mu);
	if (busy && queued != current) {
		resp->status = WIRE_BUSY;
		return;
	}
	if (!busy && newest != current)
		maybe_snapshot(s, 1);
	resp->status = WIRE_OK;
	stat_put(resp, "shard", s->cfg.index);
	stat_put(resp, "lsn", current);
}

typedef struct AuditSum {
	uint64_t skus, stock, reserved, sold;
} AuditSum;

static void audit_add(void *ctx, const WireSku *sku)
{
	AuditSum *sum = ctx;
	sum->skus++;
	sum->stock += (uint64_t)sku->stock;
	sum->reserved += (uint64_t)sku->reserved;
	sum->sold += (uint64_t)sku->sold;
}

/* AUDIT: see shard.h. */
static void admin_audit(Shard *s, WireResponse *resp)
{
	char why[256];
	AuditSum sum = { 0 };

	if (book_check_all(s->book, why, sizeof(why)) != 0) {
		log_error("audit: %s", why);
		resp->status = WIRE_AUDIT_FAILED;
		return;
	}
	book_foreach_sku(s->book, audit_add, &sum);
	resp->status = WIRE_OK;
	stat_put(resp, "shard", s->cfg.index);
	stat_put(resp, "skus", sum.skus);
	stat_put(resp, "stock", sum.stock);
	stat_put(resp, "reserved", sum.reserved);
	stat_put(resp, "sold", sum.sold);
	stat_put(resp, "holds_active", book_stats(s->book)->holds_active);
}

/* How far ahead of the request being applied the book is told what comes
 * (book_prefetch_request, the buckets only: measured, that beat fetching the
 * entries too, whose hashes must be computed once more). A batch of many
 * requests then waits on memory for several at a time. The first request
 * gets no hint (it is applied at once: the hint would only cost its
 * hashes), so a batch of one does exactly the work it did before. */
#define APPLY_AHEAD 4

static void apply_requests(Shard *s, size_t n, int64_t now_ms)
{
	for (size_t i = 1; i < n && i < APPLY_AHEAD; i++)
		book_prefetch_request(s->book, &s->work[i].req);
	for (size_t i = 0; i < n; i++) {
		const WireRequest *req = &s->work[i].req;
		if (i + APPLY_AHEAD < n)
			book_prefetch_request(s->book, &s->work[i + APPLY_AHEAD].req);
		WireResponse resp;
		if (req->op == WIRE_OP_SNAPSHOT || req->op == WIRE_OP_AUDIT) {
			memset(&resp, 0, sizeof(resp));
			resp.id = req->id;
			resp.op = req->op;
			if (req->op == WIRE_OP_SNAPSHOT)
				admin_snapshot(s, &resp);
			else
				admin_audit(s, &resp);
		} else {
			book_execute(s->book, req, now_ms, &resp, emit_record, s);
		}
		batch_add_reply(s->building, s->work[i].conn, &resp);
	}
}

static void maybe_tick(Shard *s, int64_t now_ms)
{
	if (now_ms < s->next_tick_ms && now_ms < book_next_expiry(s->book))
		return;
	book_tick(s->book, now_ms, emit_record, s);
	s->next_tick_ms = now_ms + SHARD_TICK_MS;
}

static void maybe_snapshot(Shard *s, int force)
{
	if (!force && s->records_since_snapshot < s->cfg.snapshot_interval_records)
		return;
	pthread_mutex_lock(&s->mu);
	int busy = s->snap_queued;
	pthread_mutex_unlock(&s->mu);
	if (busy)
		return; /* the previous one is still being written: try after the next batch */
	int64_t t0 = clock_mono_ns();
	buf_reset(&s->snap_buf);
	book_save(s->book, &s->snap_buf);
	pthread_mutex_lock(&s->mu);
	s->snap_serialise_ns = clock_mono_ns() - t0;
	s->snap_lsn = s->next_lsn - 1;
	s->snap_queued = 1;
	pthread_cond_signal(&s->snap_cond);
	pthread_mutex_unlock(&s->mu);
	s->records_since_snapshot = 0;
}

/* With mu held: gives the building batch to the syncer if it is free.
 * Returns 1 when it did: the caller then signals sync_cond. */
static int hand_over(Shard *s)
{
	s->stats.book = *book_stats(s->book);
	if (s->syncing || batch_empty(s->building))
		return 0;
	s->syncing = s->building;
	s->building = s->building == &s->batch[0] ? &s->batch[1] : &s->batch[0];
	return 1;
}

/* A deadline for pthread_cond_timedwait on the shard's (monotonic) condvars. */
static struct timespec deadline_in_ms(int64_t ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	return ts;
}

static void *shard_main(void *arg)
{
	Shard *s = arg;
	char name[16];

	snprintf(name, sizeof(name), "shard %u", s->cfg.index);
	log_set_thread(name);
	s->next_tick_ms = clock_wall_ms() + SHARD_TICK_MS;

	pthread_mutex_lock(&s->mu);
	for (;;) {
		int can_take = !batch_full(s);
		for (;;) {
			if (can_take && s->inbox_len > 0)
				break;                  /* requests to apply */
			if (!s->syncing && !batch_empty(s->building))
				break;                  /* a batch to hand over */
			if (s->stopping && s->inbox_len == 0)
				break;                  /* all answered: finish */
			int64_t now = clock_wall_ms();
			int64_t due = s->next_tick_ms;
			int64_t expiry = book_next_expiry(s->book);
			if (expiry < due)
				due = expiry;
			if (due <= now)
				break;                  /* holds to expire */
			if (due - now > SHARD_TICK_MS)
				due = now + SHARD_TICK_MS; /* the wall clock stepped back */
			struct timespec ts = deadline_in_ms(due - now);
			pthread_cond_timedwait(&s->work_cond, &s->mu, &ts);
		}
		if (s->stopping && s->inbox_len == 0)
			break;
		size_t n = 0;
		if (can_take) {
			ShardRequest *t = s->inbox;
			s->inbox = s->work;
			s->work = t;
			n = s->inbox_len;
			s->inbox_len = 0;
		}
		pthread_mutex_unlock(&s->mu);

		int64_t now = clock_wall_ms();
		maybe_tick(s, now);
		apply_requests(s, n, now);
		book_check_touched(s->book);
		maybe_snapshot(s, 0);

		pthread_mutex_lock(&s->mu);
		if (hand_over(s)) {
			/* Signalled outside mu, so the syncer does not wake into
			 * a lock this thread still holds. */
			pthread_mutex_unlock(&s->mu);
			pthread_cond_signal(&s->sync_cond);
			pthread_mutex_lock(&s->mu);
		}
	}

	/* Stopping: everything queued has been applied. Make the last batch
	 * durable; its answers are then posted, and shard_drain returns so the
	 * server can deliver them while the final snapshot is written. */
	for (;;) {
		if (hand_over(s))
			pthread_cond_signal(&s->sync_cond);
		if (!s->syncing && batch_empty(s->building))
			break;
		pthread_cond_wait(&s->work_cond, &s->mu);
	}
	s->drained = 1;
	pthread_cond_broadcast(&s->drain_cond);

	/* A final snapshot, so the next start replays nothing; then the other
	 * two threads finish and exit. */
	while (s->snap_queued)
		pthread_cond_wait(&s->work_cond, &s->mu);
	pthread_mutex_unlock(&s->mu);
	if (s->records_since_snapshot > 0)
		maybe_snapshot(s, 1);
	pthread_mutex_lock(&s->mu);
	while (s->syncing || s->snap_queued)
		pthread_cond_wait(&s->work_cond, &s->mu);
	s->syncer_exit = 1;
	s->snap_exit = 1;
	pthread_cond_signal(&s->sync_cond);
	pthread_cond_signal(&s->snap_cond);
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

/* ---- the syncer thread: make durable, then answer ---------------------------- */

static void batch_reset(Batch *b)
{
	buf_reset(&b->wal);
	buf_reset(&b->out);
	b->records = 0;
	b->n = 0;
}

static unsigned hist_bucket(const uint64_t *bound, unsigned nbounds, uint64_t v)
{
	unsigned i = 0;
	while (i < nbounds && v > bound[i])
		i++;
	return i;
}

/* Makes b durable, posts its answers, then frees the syncer (syncing =
 * NULL) and wakes the shard thread, which may hand b back at once. */
static void sync_batch(Shard *s, Batch *b)
{
	uint64_t fsync_ns = 0;

	if (b->wal.len > 0) {
		int64_t t0 = clock_mono_ns();
		int rc = wal_write(s->wal, b->wal.data, b->wal.len);
		if (rc != 0)
			log_fatal("wal write failed: %s; exiting, the next start recovers from the log",
				  strerror(-rc));
		rc = wal_sync(s->wal);
		if (rc != 0)
			log_fatal("wal fdatasync failed: %s; exiting, the next start recovers from the log",
				  strerror(-rc));
		fsync_ns = (uint64_t)(clock_mono_ns() - t0);
	}
	if (b->n > 0)
		s->reply(s->reply_ctx, b->replies, b->n, b->out.data);
	/* Emptied before syncing = NULL below: the shard thread may build
	 * into it again the moment it sees the syncer free. */
	uint64_t records = b->records, wal_len = b->wal.len, n = b->n;
	batch_reset(b);

	pthread_mutex_lock(&s->mu);
	s->durable_lsn += records;
	if (s->snap_queued && s->durable_lsn >= s->snap_lsn)
		pthread_cond_signal(&s->snap_cond);
	if (records)
		pthread_cond_broadcast(&s->durable_cond);
	ShardStats *st = &s->stats;
	st->batches++;
	st->requests += n;
	st->records += records;
	st->wal_bytes += wal_len;
	st->last_lsn += records;
	if (n > 0)
		st->batch_hist[hist_bucket(shard_batch_bound, SHARD_BATCH_BUCKETS - 1, n)]++;
	if (wal_len > 0) {
		st->fsyncs++;
		st->fsync_ns_total += fsync_ns;
		if (fsync_ns > st->fsync_ns_max)
			st->fsync_ns_max = fsync_ns;
		st->fsync_hist[hist_bucket(shard_fsync_bound_us, SHARD_FSYNC_BUCKETS - 1,
					   fsync_ns / 1000)]++;
	}
	s->syncing = NULL;
	pthread_mutex_unlock(&s->mu);
	/* After the unlock, so the shard thread does not wake into a held mu. */
	pthread_cond_signal(&s->work_cond);
}

/* With mu held: the LSN through which WAL segments may now be deleted, or 0
 * when nothing new. Snapshots must cover them (deletable_lsn keeps the log
 * back to the older of the last two) and so must the write-behind. */
static uint64_t deletable_through(const Shard *s)
{
	uint64_t lsn = s->deletable_lsn;
	if (s->writebehind && s->stats.wb_applied_lsn < lsn)
		lsn = s->stats.wb_applied_lsn;
	return lsn > s->deleted_lsn ? lsn : 0;
}

/* Deletes covered segments. Only the syncer calls it: it is the thread that
 * writes the WAL, so the segment list needs no lock. */
static void delete_segments_through(Shard *s, uint64_t lsn)
{
	if (!lsn)
		return;
	int rc = wal_delete_through(s->wal, lsn);
	if (rc < 0)
		log_warn("cannot delete WAL segments through lsn %llu: %s", (unsigned long long)lsn,
			 strerror(-rc));
	else if (rc > 0)
		log_info("deleted %d WAL segment(s) through lsn %llu", rc, (unsigned long long)lsn);
}

/* ---- the snapshotter thread: write snapshots off the hot path ------------------ */

static void *snapshotter_main(void *arg)
{
	Shard *s = arg;
	char name[16];

	snprintf(name, sizeof(name), "snap %u", s->cfg.index);
	log_set_thread(name);
	pthread_mutex_lock(&s->mu);
	for (;;) {
		while (!(s->snap_queued && s->durable_lsn >= s->snap_lsn) && !s->snap_exit)
			pthread_cond_wait(&s->snap_cond, &s->mu);
		if (!(s->snap_queued && s->durable_lsn >= s->snap_lsn))
			break;
		uint64_t lsn = s->snap_lsn;
		int64_t serialise_ns = s->snap_serialise_ns;
		pthread_mutex_unlock(&s->mu);

		int64_t t0 = clock_mono_ns();
		int rc = snapshot_write(s->cfg.dir, lsn, s->snap_buf.data, s->snap_buf.len, SNAPSHOTS_KEPT);
		if (rc != 0)
			log_fatal("snapshot write failed: %s; exiting, the next start recovers from the log",
				  strerror(-rc));
		/* The serialising is the part that holds up this shard's buyers. */
		log_info("snapshot at lsn %llu: %zu bytes, serialised in %lld ms (the shard waited), "
			 "written in %lld ms", (unsigned long long)lsn, s->snap_buf.len,
			 (long long)(serialise_ns / 1000000), (long long)((clock_mono_ns() - t0) / 1000000));

		pthread_mutex_lock(&s->mu);
		/* Keep the log back to the previous snapshot as well, so a damaged
		 * newest snapshot still leaves a complete older one plus log. */
		s->deletable_lsn = s->older_snapshot_lsn;
		s->older_snapshot_lsn = lsn;
		s->snap_queued = 0;
		s->stats.snapshots++;
		s->stats.snapshot_lsn = lsn;
		pthread_cond_signal(&s->work_cond);
		pthread_cond_signal(&s->sync_cond); /* segments to delete, even when idle */
	}
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

static void *syncer_main(void *arg)
{
	Shard *s = arg;
	char name[16];

	snprintf(name, sizeof(name), "sync %u", s->cfg.index);
	log_set_thread(name);
	pthread_mutex_lock(&s->mu);
	for (;;) {
		while (!s->syncing && !s->syncer_exit && !deletable_through(s))
			pthread_cond_wait(&s->sync_cond, &s->mu);
		Batch *b = s->syncing;
		uint64_t deletable = deletable_through(s);
		int exiting = !b && s->syncer_exit;
		if (deletable)
			s->deleted_lsn = deletable;
		pthread_mutex_unlock(&s->mu);
		if (b)
			sync_batch(s, b);
		delete_segments_through(s, deletable);
		pthread_mutex_lock(&s->mu);
		if (exiting)
			break;
	}
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

/* ---- the rest of the life cycle ------------------------------------------------ */

int shard_start(Shard *s)
{
	/* A half-started shard cannot be stopped cleanly: fail hard. */
	if (pthread_create(&s->syncer, NULL, syncer_main, s) != 0 ||
	    pthread_create(&s->snapshotter, NULL, snapshotter_main, s) != 0 ||
	    pthread_create(&s->thread, NULL, shard_main, s) != 0)
		log_fatal("cannot start the threads of shard %u", s->cfg.index);
	return 0;
}

int shard_submit_many(Shard *s, const ShardRequest *reqs, size_t n)
{
	pthread_mutex_lock(&s->mu);
	if (s->stopping) {
		pthread_mutex_unlock(&s->mu);
		return -ESHUTDOWN;
	}
	size_t room = s->cfg.queue_len_max - s->inbox_len;
	size_t take = n < room ? n : room;
	int was_empty = s->inbox_len == 0;
	memcpy(&s->inbox[s->inbox_len], reqs, take * sizeof(*reqs));
	s->inbox_len += take;
	s->stats.busy += n - take;
	pthread_mutex_unlock(&s->mu);
	/* The shard thread sleeps only on an empty inbox (or a full batch,
	 * when the syncer wakes it): one signal per non-empty hand-in. After
	 * the unlock, so the woken thread does not at once block on mu. */
	if (was_empty && take > 0)
		pthread_cond_signal(&s->work_cond);
	return (int)take;
}

int shard_submit(Shard *s, const WireRequest *req, uint64_t conn)
{
	ShardRequest one = { .req = *req, .conn = conn };
	int rc = shard_submit_many(s, &one, 1);
	return rc == 1 ? 0 : rc == 0 ? -EBUSY : rc;
}

void shard_drain(Shard *s)
{
	pthread_mutex_lock(&s->mu);
	s->stopping = 1;
	pthread_cond_signal(&s->work_cond);
	while (!s->drained)
		pthread_cond_wait(&s->drain_cond, &s->mu);
	pthread_mutex_unlock(&s->mu);
}

void shard_stop(Shard *s)
{
	shard_drain(s);
	pthread_join(s->thread, NULL);
	pthread_join(s->syncer, NULL);
	pthread_join(s->snapshotter, NULL);
}

void shard_close(Shard *s)
{
	if (!s)
		return;
	wal_close(s->wal);
	book_free(s->book);
	for (int i = 0; i < 2; i++) {
		buf_free(&s->batch[i].wal);
		buf_free(&s->batch[i].out);
		free(s->batch[i].replies);
	}
	buf_free(&s->scratch);
	buf_free(&s->snap_buf);
	pthread_cond_destroy(&s->snap_cond);
	pthread_cond_destroy(&s->durable_cond);
	pthread_cond_destroy(&s->drain_cond);
	free(s->inbox);
	free(s->work);
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->work_cond);
	pthread_cond_destroy(&s->sync_cond);
	free(s);
}

void shard_stats(Shard *s, ShardStats *out)
{
	pthread_mutex_lock(&s->mu);
	*out = s->stats;
	out->queue_len = s->inbox_len;
	/* Measured now, not when the writer last reported: right after a burst
	 * the writer is busy and the lag is at its largest. */
	if (s->wb_reported)
		out->wb_lag_records = s->durable_lsn > s->stats.wb_applied_lsn ?
				      s->durable_lsn - s->stats.wb_applied_lsn : 0;
	pthread_mutex_unlock(&s->mu);
}

uint64_t shard_wait_durable(Shard *s, uint64_t after, int timeout_ms)
{
	pthread_mutex_lock(&s->mu);
	/* A stopping shard waits too (returning at once would make an idle
	 * writer spin); writebehind_stop releases it with shard_wake_durable. */
	if (s->durable_lsn <= after && !s->durable_released) {
		struct timespec ts = deadline_in_ms(timeout_ms);
		pthread_cond_timedwait(&s->durable_cond, &s->mu, &ts);
	}
	uint64_t lsn = s->durable_lsn;
	pthread_mutex_unlock(&s->mu);
	return lsn;
}

void shard_wake_durable(Shard *s)
{
	pthread_mutex_lock(&s->mu);
	s->durable_released = 1; /* under mu: a writer about to wait sees it */
	pthread_cond_broadcast(&s->durable_cond);
	pthread_mutex_unlock(&s->mu);
}

void shard_enable_writebehind(Shard *s)
{
	pthread_mutex_lock(&s->mu);
	s->writebehind = 1;
	pthread_mutex_unlock(&s->mu);
}

void shard_report_writebehind(Shard *s, uint64_t applied_lsn, uint64_t lag_ms, int connected,
			      uint64_t errors)
{
	pthread_mutex_lock(&s->mu);
	s->stats.wb_applied_lsn = applied_lsn;
	s->wb_reported = 1;
	s->stats.wb_lag_ms = lag_ms;
	s->stats.wb_connected = (uint64_t)connected;
	s->stats.wb_errors = errors;
	/* PostgreSQL may now cover segments a snapshot already covers: the
	 * syncer deletes them even when no batch comes to wake it. */
	int deletable = deletable_through(s) != 0;
	pthread_mutex_unlock(&s->mu);
	if (deletable)
		pthread_cond_signal(&s->sync_cond);
}
