-- 002_writebehind.sql — what the exactly-once write-behind needs beyond 001.
--
-- inventory_log rows carry the shard and the WAL LSN of the record that set
-- their current status. LSNs grow per shard, and a reservation belongs to one
-- shard for life (its SKU's), so a status change is applied only when it is
-- newer than what the row holds (lsn < the record's) and only to a row that
-- is still 'reserved': a replayed or reordered record can never move a row
-- backwards. Rows written before this migration keep lsn 0 (older than any
-- record). The writer also advances ledger_checkpoint only from the exact LSN
-- it read, in the same transaction as the rows (app/ledger/writebehind.c).
ALTER TABLE inventory_log
    ADD COLUMN shard INT    NOT NULL DEFAULT 0 CHECK (shard >= 0),
    ADD COLUMN lsn   BIGINT NOT NULL DEFAULT 0 CHECK (lsn >= 0);

ALTER TABLE ledger_checkpoint
    ADD CONSTRAINT ledger_checkpoint_lsn_nonnegative CHECK (lsn >= 0),
    ADD CONSTRAINT ledger_checkpoint_shard_nonnegative CHECK (shard >= 0);

