#!/usr/bin/env bash
# Where PostgreSQL spends an ingest run: a fresh throwaway cluster with pg_stat_statements,
# radacctd on it (as scripts/bench-ingest.sh starts it), loadgen twice (new usernames the
# second time, so the table has grown), then the top statements by total execution time
# and radacct's scan / update counters (pg_stat_user_tables).
#
#   scripts/bench-pg-statements.sh
#
# Environment: SESSIONS=5000 INTERIMS=2 WINDOW=64; FRSCHEMA=PATH loads that schema file
# (e.g. a copy of FreeRADIUS's mods-config/sql/main/postgresql/schema.sql) into the
# database first, as scripts/compare-freeradius.sh does; WORK, KEEP=1, CARGO_TARGET_DIR.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SESSIONS=${SESSIONS:-5000}
INTERIMS=${INTERIMS:-2}
WINDOW=${WINDOW:-64}
# shellcheck source=scripts/bench-lib.sh
. "$ROOT/scripts/bench-lib.sh"
bench_work bench-pgstat

cleanup() {
  kill_radacctd
  "$ROOT/scripts/pg-cluster.sh" destroy "$WORK/pg" >/dev/null 2>&1 || true
  remove_work
}
trap cleanup EXIT

build_release
URL=$("$ROOT/scripts/pg-cluster.sh" start "$WORK/pg")
cat >>"$WORK/pg/data/postgresql.conf" <<'CONF'
shared_preload_libraries = 'pg_stat_statements'
CONF
"$ROOT/scripts/pg-cluster.sh" restart "$WORK/pg" >/dev/null
PORT=$(cat "$WORK/pg/data/radacctd-test-port")
psql_() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- psql -X -q -h 127.0.0.1 -p "$PORT" -d postgres "$@"
  else
    psql -X -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres "$@"
  fi
}
if [ -n "${FRSCHEMA:-}" ]; then psql_ <"$FRSCHEMA" >/dev/null; fi
psql_ -c "CREATE EXTENSION pg_stat_statements"
start_radacctd pg "$URL"
for prefix in a b; do
  echo "-- loadgen --sessions $SESSIONS --interims $INTERIMS --window $WINDOW --prefix $prefix (load average $(cut -d' ' -f1-3 /proc/loadavg))"
  "$LOADGEN" --server "127.0.0.1:$RAD_UDP" --secret "$SECRET" --sessions "$SESSIONS" \
    --interims "$INTERIMS" --window "$WINDOW" --rate 0 --prefix "$prefix" |
    grep -E 'throughput|latency|lost|retrans'
done
kill_radacctd
psql_ -c "SELECT calls, round(total_exec_time) AS total_ms, round(mean_exec_time::numeric, 2) AS mean_ms, rows, left(regexp_replace(query, '\s+', ' ', 'g'), 60) AS query FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 8"
psql_ -c "SELECT seq_scan, seq_tup_read, idx_scan, n_tup_ins, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'radacct'"
