#!/usr/bin/env bash
# test_migrations.sh — scripts/migrate from an empty database, and again.
#
#   test_migrations.sh STACK_DIR REPO_DIR
#
# Uses the PostgreSQL server of a running stack (its stack.env), in a
# database of its own that it creates and drops: every migration applies
# from nothing, a second run applies none and changes nothing, and the
# schema has what the write-behind relies on.
set -euo pipefail
stack_dir=$1 repo=$2
while IFS='=' read -r key value; do
  case $key in PGHOST|PGPORT|PGUSER) export "$key=$value" ;; esac
done <"$stack_dir/stack.env"
db=rg_migrate_test_$$
export PGDATABASE=$db
psql_() { psql -X -q -v ON_ERROR_STOP=1 -At "$@"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
cleanup() { psql_ -d postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true; }
trap cleanup EXIT
psql_ -d postgres -c "CREATE DATABASE $db"

files=$(ls "$repo"/sql/[0-9][0-9][0-9]_*.sql | wc -l)
out=$("$repo/scripts/migrate")
echo "$out"
grep -q "migrate: $files applied, 0 already applied" <<<"$out" || fail "first run did not apply all $files files"
# pg_dump 15.14+ frames its output with \restrict KEY, a random key per run.
before=$(pg_dump -s -d "$db" | grep -Ev '^.(un)?restrict ' | md5sum)
out=$("$repo/scripts/migrate")
echo "$out"
grep -q "migrate: 0 applied, $files already applied" <<<"$out" || fail "second run applied something"
after=$(pg_dump -s -d "$db" | grep -Ev '^.(un)?restrict ' | md5sum)
[[ $before == "$after" ]] || fail "the schema changed on the second run"

[[ $(psql_ -c "SELECT count(*) FROM schema_migrations") == "$files" ]] || fail "schema_migrations rows"
cols=$(psql_ -c "SELECT string_agg(column_name, ',' ORDER BY column_name) FROM information_schema.columns WHERE table_name = 'inventory_log'")
[[ $cols == 'expires_at,id,lsn,quantity,shard,sku_id,status,timestamp,updated_at,user_session_id' ]] ||
  fail "inventory_log columns: $cols"
cols=$(psql_ -c "SELECT string_agg(column_name, ',' ORDER BY column_name) FROM information_schema.columns WHERE table_name = 'ledger_checkpoint'")
[[ $cols == 'epoch,lsn,shard,updated_at' ]] || fail "ledger_checkpoint columns: $cols"
# The CHECKs hold.
if psql_ -c "INSERT INTO products (id, stock) VALUES ('neg', -1)" 2>/dev/null; then fail "negative stock accepted"; fi
if psql_ -c "INSERT INTO ledger_checkpoint (shard, lsn) VALUES (0, -5)" 2>/dev/null; then fail "negative lsn accepted"; fi
psql_ -c "INSERT INTO products (id, stock) VALUES ('p', 1)"
if psql_ -c "INSERT INTO inventory_log (id, sku_id, user_session_id, quantity, status, \"timestamp\", expires_at) VALUES ('r', 'p', 's', 1, 'sold', now(), now())" 2>/dev/null; then
  fail "unknown status accepted"
fi
echo "migrations: $files applied from empty, none on the second run, schema unchanged"
