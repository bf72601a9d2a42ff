/* catalog.h — adopts the SKUs of PostgreSQL's products table into the ledger.
 *
 * DESIGN. The ledger sells from its own snapshot and WAL; PostgreSQL is not
 * needed to start or to sell. A catalog thread (its own libpq connection,
 * never a shard thread) waits until PostgreSQL is reachable, then reads
 * products in id order, a page at a time, and offers every row to the shard
 * that owns its SKU as a PUT_SKU with WIRE_SKU_ONLY_IF_NEW and all the row's
 * settings: a SKU the ledger does not know is created with the row's stock,
 * one it knows is left exactly as it is (the ledger is the truth for what it
 * sells; the admin API changes it). The new SKU's record then reaches
 * products through the write-behind like any other change. It runs once at
 * start and again on every catalog_reload (SIGHUP). Rows that break the wire
 * rules (bad SKU characters, negative numbers, a name over 200 bytes or with
 * control characters) are skipped with a WARN naming them. */
#ifndef RG_CATALOG_H
#define RG_CATALOG_H

#include "ledger/shard.h"

typedef struct Catalog Catalog;

/* Starts the catalog thread. shards are borrowed until catalog_stop.
 * Returns 0 or a negative errno. */
int catalog_start(const char *conninfo, int retry_max_ms, Shard **shards, unsigned nshards,
		  Catalog **out) __attribute__((warn_unused_result));

/* Asks for another adoption pass (coalesced with one already asked for).
 * Thread-safe and non-blocking: the server's I/O thread calls it on SIGHUP.
 * Takes a Catalog * as void * so it can be a server reload hook. */
void catalog_reload(void *catalog);

/* Stops the thread (a pass in progress ends at the next row) and frees it.
 * NULL is a no-op. */
void catalog_stop(Catalog *c);

#endif
