#!/usr/bin/env bash
# Side-by-side ingest comparison: FreeRADIUS 3.2 (Debian package, rlm_sql) and radacctd
# doing accounting into the same PostgreSQL, and into SQLite, on the same machine, under
# the same load (DESIGN.md §9). Prints one table and the ratio for each database.
#
#   scripts/compare-freeradius.sh
#
# Environment (all optional):
#   SESSIONS=5000 INTERIMS=2 WINDOW=64   the loadgen command used for every server
#   WORK=/tmp/...                        work directory (default: a new mktemp -d, removed
#                                        at the end unless KEEP=1)
#   CARGO_TARGET_DIR                     honoured for the release build
#
# What it does:
#   1. cargo build --release --bins (radacctd and loadgen);
#   2. a throwaway PostgreSQL (scripts/pg-cluster.sh) with two databases, fr and rad, both
#      created from the stock FreeRADIUS schema (scripts/freeradius.sh schema);
#   3. FreeRADIUS (scripts/freeradius.sh start: rlm_sql → fr, installs the Debian packages
#      freeradius and freeradius-postgresql if missing) and radacctd (→ rad; one [[nas]]
#      127.0.0.1 with the secret, default_client = false, jobs off) on different ports;
#   4. FreeRADIUS again, into a new SQLite file created by rlm_sql_sqlite from the stock
#      FreeRADIUS SQLite schema (scripts/freeradius.sh start-sqlite: the stock sql module,
#      busy_timeout 200 ms, SQLite's defaults), once more with busy_timeout 5,000 ms (as
#      radacctd waits for the lock; the stock 200 ms makes FreeRADIUS fail packets with
#      "database is locked", which loadgen then retransmits after its 1 s timeout), and
#      radacctd on a new SQLite file of its own schema (sqlite_synchronous = full). Each server gets its own stock schema here:
#      radacctd supports an existing FreeRADIUS database on PostgreSQL, not on SQLite
#      (docs/OPERATIONS.md), and FreeRADIUS's SQLite schema already carries fourteen
#      indexes of its own;
#   5. the same loadgen command against each, one after the other (never concurrently, so
#      that each server has the 2 cores to itself apart from loadgen), and a table of
#      packets/s, p50, p99, lost answers, retransmissions, plus the radacctd/FreeRADIUS
#      ratio on each database. Also prints radacctd's commit batch histogram from /metrics.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SESSIONS=${SESSIONS:-5000}
INTERIMS=${INTERIMS:-2}
WINDOW=${WINDOW:-64}
# shellcheck source=scripts/bench-lib.sh
. "$ROOT/scripts/bench-lib.sh"
bench_work compare-freeradius

cleanup() {
  kill_radacctd
  "$ROOT/scripts/freeradius.sh" stop "$WORK/fr" >/dev/null 2>&1 || true
  "$ROOT/scripts/freeradius.sh" stop "$WORK/freeradius-sqlite" >/dev/null 2>&1 || true
  "$ROOT/scripts/freeradius.sh" stop "$WORK/freeradius-sqlite-5s" >/dev/null 2>&1 || true
  "$ROOT/scripts/pg-cluster.sh" destroy "$WORK/pg" >/dev/null 2>&1 || true
  remove_work
}
trap cleanup EXIT

build_release

echo "== PostgreSQL" >&2
PGURL=$("$ROOT/scripts/pg-cluster.sh" start "$WORK/pg")
PGPORT=${PGURL##*:}
PGPORT=${PGPORT%%/*}
SCHEMA=$("$ROOT/scripts/freeradius.sh" schema)
for db in fr rad; do
  psql -q -h 127.0.0.1 -p "$PGPORT" -U postgres -d postgres -c "CREATE DATABASE $db" >/dev/null
  psql -q -h 127.0.0.1 -p "$PGPORT" -U postgres -d "$db" -v ON_ERROR_STOP=1 -f "$SCHEMA" >/dev/null
done

LOADGEN_ARGS=(--secret "$SECRET" --sessions "$SESSIONS" --interims "$INTERIMS" --window "$WINDOW")
declare -A RESULT

# run_load NAME ADDR: runs loadgen, keeps its output in $WORK/NAME.loadgen.
run_load() {
  local name=$1 addr=$2
  echo "== load: $name ($LOADGEN --server $addr ${LOADGEN_ARGS[*]})" >&2
  "$LOADGEN" --server "$addr" "${LOADGEN_ARGS[@]}" --prefix "$name" | tee "$WORK/$name.loadgen" >&2
  local out=$WORK/$name.loadgen
  RESULT[$name.pps]=$(awk '/^throughput/ {print $2}' "$out")
  RESULT[$name.p50]=$(awk '/^latency/ {print $3}' "$out")
  RESULT[$name.p99]=$(awk '/^latency/ {print $6}' "$out")
  RESULT[$name.lost]=$(awk '/^lost answers/ {print $3}' "$out")
  RESULT[$name.retx]=$(awk '/^retransmissions/ {print $2}' "$out")
  RESULT[$name.answered]=$(awk '/^packets answered/ {print $3}' "$out")
}

# 1. FreeRADIUS → PostgreSQL (db fr)
FR_PORT=$(free_port udp)
echo "== FreeRADIUS on 127.0.0.1:$FR_PORT" >&2
"$ROOT/scripts/freeradius.sh" start "$WORK/fr" "$FR_PORT" 127.0.0.1 "$PGPORT" postgres fr "$SECRET" >/dev/null
run_load freeradius-pg "127.0.0.1:$FR_PORT"
"$ROOT/scripts/freeradius.sh" stop "$WORK/fr" >/dev/null

# 2. radacctd → PostgreSQL (db rad)
start_radacctd radacctd-pg "postgres://postgres@127.0.0.1:$PGPORT/rad"
run_load radacctd-pg "127.0.0.1:$RAD_UDP"
stop_radacctd radacctd-pg

# 3. FreeRADIUS → SQLite (a new file each time, created by rlm_sql_sqlite from its stock
#    schema): as packaged (busy_timeout 200 ms), then with busy_timeout 5,000 ms — radacctd's
#    own lock wait — so that the ratio does not rest on FreeRADIUS's lock-timeout failures.
for variant in freeradius-sqlite:200 freeradius-sqlite-5s:5000; do
  name=${variant%%:*}
  FR_PORT=$(free_port udp)
  echo "== FreeRADIUS (SQLite, busy_timeout ${variant#*:} ms) on 127.0.0.1:$FR_PORT" >&2
  SQLITE_BUSY_TIMEOUT_MS=${variant#*:} "$ROOT/scripts/freeradius.sh" start-sqlite \
    "$WORK/$name" "$FR_PORT" "$WORK/$name.db" "$SECRET" >/dev/null
  run_load "$name" "127.0.0.1:$FR_PORT"
  "$ROOT/scripts/freeradius.sh" stop "$WORK/$name" >/dev/null
done

# 4. radacctd → SQLite
start_radacctd radacctd-sqlite "sqlite://$WORK/rad.db"
run_load radacctd-sqlite "127.0.0.1:$RAD_UDP"
stop_radacctd radacctd-sqlite

# sqlite_rows FILE: the same summary for an SQLite file (Python's sqlite3 module: the
# sqlite3 command-line tool is not installed everywhere).
sqlite_rows() {
  python3 -c 'import sqlite3, sys
n, o = sqlite3.connect(sys.argv[1]).execute(
    "SELECT count(*), count(*) - count(acctstoptime) FROM radacct").fetchone()
print(f"{n} rows, {o} open")' "$1"
}

rows() {
  psql -At -h 127.0.0.1 -p "$PGPORT" -U postgres -d "$1" -c \
    "SELECT count(*) || ' rows, ' || count(*) FILTER (WHERE acctstoptime IS NULL) || ' open' FROM radacct"
}

echo
echo "loadgen: ${LOADGEN_ARGS[*]}   ($(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg))"
printf '%-28s %10s %10s %10s %8s %8s\n' server "packets/s" "p50 ms" "p99 ms" lost retx
for name in freeradius-pg radacctd-pg freeradius-sqlite freeradius-sqlite-5s radacctd-sqlite; do
  printf '%-28s %10s %10s %10s %8s %8s\n' "$name" "${RESULT[$name.pps]}" \
    "${RESULT[$name.p50]}" "${RESULT[$name.p99]}" "${RESULT[$name.lost]}" "${RESULT[$name.retx]}"
done
awk -v a="${RESULT[radacctd-pg.pps]}" -v b="${RESULT[freeradius-pg.pps]}" \
  'BEGIN { if (b > 0) printf "ratio radacctd/FreeRADIUS on PostgreSQL: %.2fx\n", a / b }'
for fr in freeradius-sqlite freeradius-sqlite-5s; do
  awk -v a="${RESULT[radacctd-sqlite.pps]}" -v b="${RESULT[$fr.pps]}" -v n="$fr" \
    'BEGIN { if (b > 0) printf "ratio radacctd/FreeRADIUS on SQLite (%s): %.2fx\n", n, a / b }'
done
echo "database fr (FreeRADIUS):  $(rows fr)"
echo "database rad (radacctd):   $(rows rad)"
for fr in freeradius-sqlite freeradius-sqlite-5s; do
  echo "SQLite ($fr): $(sqlite_rows "$WORK/$fr.db")"
done
echo "SQLite (radacctd):         $(sqlite_rows "$WORK/rad.db")"
for name in radacctd-pg radacctd-sqlite; do
  commit_batches "$name"
done
