-- 001_initial.sql — the cold record the ledger writes behind: products,
-- one row per reservation, and how far each shard's WAL has been applied.
--
-- Applied once, inside a transaction, by scripts/migrate (which also creates
-- schema_migrations). Forward-only: never edit this file once it has shipped;
-- add sql/002_*.sql instead. No BEGIN/COMMIT here — the runner owns the
-- transaction. The table and column names of products and inventory_log are
-- part of the public contract (API.md) and stay.

-- A SKU and its settings. stock is the total ever offered; what is available
-- (stock - reserved - sold) is the ledger's to know, not a column here.
CREATE TABLE products (
    id                 TEXT PRIMARY KEY,
    name               TEXT        NOT NULL DEFAULT '',
    price_cents        BIGINT      NOT NULL DEFAULT 0 CHECK (price_cents >= 0),
    stock              BIGINT      NOT NULL CHECK (stock >= 0),
    per_session_limit  INT         NOT NULL DEFAULT 0,   -- 0: no limit
    max_per_order      INT         NOT NULL DEFAULT 10,
    reservation_ttl_s  INT         NOT NULL DEFAULT 300,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

-- One row per reservation: id is the reservation_id, status its latest state.
-- "timestamp" is when the reservation was made (quoted: a type name).
CREATE TABLE inventory_log (
    id               TEXT        PRIMARY KEY,
    sku_id           TEXT        NOT NULL REFERENCES products(id),
    user_session_id  TEXT        NOT NULL,
    quantity         INT         NOT NULL CHECK (quantity > 0),
    status           TEXT        NOT NULL
                     CHECK (status IN ('reserved', 'confirmed', 'released', 'timeout')),
    "timestamp"      timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- "How many units of this SKU are held / sold" and "what did this session buy".
CREATE INDEX inventory_log_sku_status_idx ON inventory_log (sku_id, status);
CREATE INDEX inventory_log_session_idx ON inventory_log (user_session_id);

-- Write-behind progress: the highest WAL LSN of each shard already applied
-- here, advanced in the same transaction as the rows it covers (exactly once
-- in effect). epoch fences a stale ledger owner once ownership can move.
CREATE TABLE ledger_checkpoint (
    shard       INT         PRIMARY KEY,
    lsn         BIGINT      NOT NULL,
    epoch       BIGINT      NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
