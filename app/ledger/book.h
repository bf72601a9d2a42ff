/* book.h — one shard's inventory book: the pure state machine of the ledger.
 *
 * DESIGN. The book holds SKUs (stock, reserved, sold and their settings) and
 * reservations (holds and their fates), and answers every request of the
 * wire protocol. It does no I/O and reads no clock: the caller passes "now"
 * (non-decreasing) and a random source for new ids. Each state change is
 * made in two steps — decide, producing a Record (record.h), then apply that
 * record — and every record is handed to the caller's emit function, which
 * writes it to the WAL. Recovery feeds the same records to book_replay, which
 * runs the same apply code, so a replayed book equals the live one.
 *
 * Invariants, checked by book_check after every batch (and in full by tests):
 *   for every SKU: 0 <= reserved, 0 <= sold, reserved + sold <= stock;
 *   reserved == the sum of its live holds; per (SKU, session) the held units
 *   equal the sum of its reserved and confirmed retained reservations.
 *
 * Expiry: a hold is live while now < expires_ms. Every call first times out
 * the holds that are due, so availability never counts an expired hold, even
 * between timer ticks. Finished reservations stay queryable (and their
 * idempotency keys remembered) for the retention period, then are forgotten.
 *
 * A Book is used by one thread; the IdemIndex it shares is locked inside. */
#ifndef RG_BOOK_H
#define RG_BOOK_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/rng.h"
#include "common/wire.h"
#include "ledger/idem.h"
#include "ledger/record.h"

typedef struct Book Book;

typedef struct BookConfig {
	int32_t default_ttl_s;
	int32_t default_max_per_order;
	int32_t default_per_session_limit;   /* 0 = none */
	int64_t retention_ms;                /* finished reservations kept this long */
} BookConfig;

/* Counters of what the book has done and holds; read by the shard for stats. */
typedef struct BookStats {
	uint64_t skus;
	uint64_t holds_active;
	uint64_t reservations_retained;
	uint64_t reserve_created, reserve_replayed, reserve_sold_out, reserve_insufficient;
	uint64_t reserve_limit, reserve_too_large, reserve_conflict, reserve_unknown_sku;
	uint64_t confirmed, released, timed_out, forgotten;
} BookStats;

/* Receives each record the book decides, in order. The record is borrowed. */
typedef void (*BookEmitFn)(void *ctx, const Record *rec);

/* idem and rng are borrowed and must outlive the book. */
Book *book_new(const BookConfig *cfg, IdemIndex *idem, Rng *rng);
void book_free(Book *b);

/* Answers one request at now_ms, emitting the records of any state change.
 * Handles RESERVE, CONFIRM, RELEASE, GET_RESERVATION, GET_SKU and PUT_SKU;
 * resp->id and resp->op are copied from req. */
void book_execute(Book *b, const WireRequest *req, int64_t now_ms, WireResponse *resp,
		  BookEmitFn emit, void *ctx);

/* Times out every hold due at now_ms (emitting TIMEOUT records) and forgets
 * finished reservations past retention. Returns the number timed out. */
size_t book_tick(Book *b, int64_t now_ms, BookEmitFn emit, void *ctx);

/* The earliest expires_ms of a live hold, or INT64_MAX when there is none. */
int64_t book_next_expiry(const Book *b);

/* Applies a record read back from the WAL. Returns 0, or -EBADMSG when the
 * record does not fit the state (unknown SKU or reservation, a transition
 * that cannot happen): the log is corrupt. */
int book_replay(Book *b, const Record *rec) __attribute__((warn_unused_result));
/* A hint for replay, which knows the records ahead: starts fetching into the
 * cache what replaying rec will look up — with stage 0 the hash buckets, with
 * stage 1 (some records later) the entries those buckets point to. In a book
 * larger than the cache each lookup is a miss to memory; fetched ahead, the
 * misses of several records overlap. Changes nothing. */
void book_prefetch(const Book *b, const Record *rec, int stage);
/* The stage-0 hint (hash buckets only) for a request that book_execute
 * will see soon. */
void book_prefetch_request(const Book *b, const WireRequest *req);

/* Serialises the whole book; book_load fills an empty book from those bytes
 * (returns 0 or -EBADMSG). */
void book_save(const Book *b, Buf *out);
int book_load(Book *b, const uint8_t *data, size_t len) __attribute__((warn_unused_result));

/* Checks the counter invariants of the SKUs changed since the last call;
 * fatal on a violation (the ledger must never run on a broken book). */
void book_check_touched(Book *b);
/* Recomputes every counter from the reservations and compares; returns 0 or
 * -1 with a description in why. For tests and after recovery. */
int book_check_all(Book *b, char *why, size_t why_len);

const BookStats *book_stats(const Book *b);

/* Visits every SKU's public view (for audits and tests). */
typedef void (*BookSkuFn)(void *ctx, const WireSku *sku);
void book_foreach_sku(const Book *b, BookSkuFn fn, void *ctx);
/* Visits every retained reservation's view (available = its SKU's now). */
typedef void (*BookReservationFn)(void *ctx, const WireReservation *res);
void book_foreach_reservation(const Book *b, BookReservationFn fn, void *ctx);

#endif
