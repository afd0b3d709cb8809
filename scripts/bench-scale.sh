#!/usr/bin/env bash
# Scale measurements of DESIGN.md §9 at 1,000,000 open sessions, on SQLite and PostgreSQL:
#   - warm restart: time from launching `radacctd serve` to the "index rebuilt" log line
#     (and its own elapsed_ms) and to the first 200 from /readyz;
#   - memory per open session: VmRSS once ready with 1M open rows minus VmRSS once ready
#     on the same backend with 0 open rows, divided by the number of open sessions (this
#     includes whatever the rebuild's transient allocations left in the allocator); VmHWM
#     (peak) of the 1M start as well;
#   - p50/p90/max of GET /api/sessions/count and GET /api/sessions?status=active (default
#     page of 50) over $REQUESTS requests each (curl -w %{time_total}, one connection per
#     request, so it includes TCP connect on loopback);
#   - export of $CLOSED closed rows (GET /api/sessions/export?status=closed): wall time,
#     bytes, and the server's peak RSS during the export (VmHWM reset via
#     /proc/PID/clear_refs before it, plus VmRSS sampled every 50 ms).
#
#   scripts/bench-scale.sh [sqlite|postgres|both]     (default both)
#
# Environment: OPEN=1000000 CLOSED=500000 REQUESTS=50 WORK=<dir> KEEP=1 CARGO_TARGET_DIR.
# The rows are generated with SQL in one statement per table (SQLite: INSERT … SELECT from
# a recursive CTE, with md5() registered from Python's hashlib because SQLite has none;
# PostgreSQL: generate_series and md5()). acctuniqueid = sessionkey = md5 of a unique
# string, usernames user<n>, 16 NAS addresses, start times over the last day, counters.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WHICH=${1:-both}
OPEN=${OPEN:-1000000}
CLOSED=${CLOSED:-500000}
REQUESTS=${REQUESTS:-50}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=${WORK:-$(mktemp -d /tmp/bench-scale.XXXXXX)}
mkdir -p "$WORK"
chmod 755 "$WORK"
export RADACCTD_JWT_SECRET=bench-scale-secret-0123456789abcdef

RAD_PID=
cleanup() {
  if [ -n "$RAD_PID" ]; then kill "$RAD_PID" 2>/dev/null || true; wait "$RAD_PID" 2>/dev/null || true; fi
  "$ROOT/scripts/pg-cluster.sh" destroy "$WORK/pg" >/dev/null 2>&1 || true
  if [ "${KEEP:-0}" != 1 ]; then rm -rf "$WORK"; else echo "kept $WORK" >&2; fi
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM if sys.argv[1]=="udp" else socket.SOCK_STREAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' "$1"
}
now_ms() { date +%s%3N; }
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }

echo "== build" >&2
(cd "$ROOT" && cargo build --release --bins -q)
RADACCTD=$TARGET/release/radacctd

cat >"$WORK/radacctd.toml" <<EOF
[database]
max_connections = 8

[radius]
default_client = false

[http]
rate_limit_per_minute = 100000

[jobs]
sweeper = false
archiver = false

[log]
filter = "info"
EOF
TOKEN=$(RADACCTD_DATABASE_URL=sqlite::memory: "$RADACCTD" --config "$WORK/radacctd.toml" token --role admin)

# serve NAME URL: starts radacctd, sets RAD_PID/HTTP, T_REBUILT_MS, T_READY_MS, REBUILD_LINE.
serve() {
  local name=$1 url=$2
  HTTP=$(free_port tcp)
  local t0
  t0=$(now_ms)
  : >"$WORK/$name.log"
  RADACCTD_DATABASE_URL=$url "$RADACCTD" --config "$WORK/radacctd.toml" serve \
    --radius-listen "127.0.0.1:$(free_port udp)" --http-listen "127.0.0.1:$HTTP" \
    >"$WORK/$name.log" 2>&1 &
  RAD_PID=$!
  T_REBUILT_MS=
  while :; do
    if [ -z "$T_REBUILT_MS" ] && grep -q 'index rebuilt' "$WORK/$name.log"; then
      T_REBUILT_MS=$(($(now_ms) - t0))
    fi
    if curl -fsS -o /dev/null "http://127.0.0.1:$HTTP/readyz" 2>/dev/null; then
      T_READY_MS=$(($(now_ms) - t0))
      [ -n "$T_REBUILT_MS" ] || T_REBUILT_MS=$T_READY_MS
      break
    fi
    if ! kill -0 "$RAD_PID" 2>/dev/null; then cat "$WORK/$name.log" >&2; exit 1; fi
    sleep 0.02
  done
  REBUILD_LINE=$(grep 'index rebuilt' "$WORK/$name.log" | sed 's/\x1b\[[0-9;]*m//g' | tail -n 1)
}

stop() {
  kill "$RAD_PID"
  wait "$RAD_PID" 2>/dev/null || true
  RAD_PID=
}

# latency PATH: p50 p90 max in ms over $REQUESTS requests (after 3 warm-up requests).
latency() {
  local path=$1 i
  for i in 1 2 3; do
    curl -fsS -o /dev/null -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$HTTP$path"
  done
  for i in $(seq 1 "$REQUESTS"); do
    curl -fsS -o /dev/null -w '%{time_total}\n' -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$HTTP$path"
  done | sort -n | awk '{v[NR]=$1*1000} END {printf "p50 %.2f ms  p90 %.2f ms  max %.2f ms", v[int(NR*0.5)+1], v[int(NR*0.9)+1], v[NR]}'
}

measure() {
  local name=$1 url=$2 empty_url=$3
  echo "== $name: baseline (0 open sessions)" >&2
  serve "$name-empty" "$empty_url"
  local base_rss
  base_rss=$(status_kb "$RAD_PID" VmRSS)
  stop

  echo "== $name: $OPEN open sessions" >&2
  serve "$name" "$url"
  local rss hwm
  sleep 1
  rss=$(status_kb "$RAD_PID" VmRSS)
  hwm=$(status_kb "$RAD_PID" VmHWM)
  local count_json
  count_json=$(curl -fsS -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$HTTP/api/sessions/count")
  local lat_count lat_list
  lat_count=$(latency "/api/sessions/count")
  lat_list=$(latency "/api/sessions?status=active")

  echo "== $name: export of the closed rows" >&2
  echo 5 >"/proc/$RAD_PID/clear_refs" 2>/dev/null || true
  local peak_file=$WORK/$name.rss-samples
  ( while kill -0 "$RAD_PID" 2>/dev/null; do status_kb "$RAD_PID" VmRSS; sleep 0.05; done ) >"$peak_file" &
  local sampler=$!
  local before_export
  before_export=$(status_kb "$RAD_PID" VmRSS)
  local export_out
  export_out=$(curl -fsS -o "$WORK/$name.export.csv" -w '%{http_code} %{time_total} %{size_download}' \
    -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$HTTP/api/sessions/export?status=closed")
  kill "$sampler" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  local export_hwm export_rows sampled_peak
  export_hwm=$(status_kb "$RAD_PID" VmHWM)
  sampled_peak=$(sort -n "$peak_file" | tail -n 1)
  export_rows=$(($(wc -l <"$WORK/$name.export.csv") - 1))
  rm -f "$WORK/$name.export.csv"
  stop

  {
    echo "### $name"
    echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "log: $REBUILD_LINE"
    echo "warm restart: 'index rebuilt' after ${T_REBUILT_MS} ms, /readyz 200 after ${T_READY_MS} ms"
    echo "/api/sessions/count: $count_json"
    echo "RSS ready, 0 open: ${base_rss} kB; RSS ready, $OPEN open: ${rss} kB (VmHWM ${hwm} kB)"
    awk -v a="$rss" -v b="$base_rss" -v n="$OPEN" \
      'BEGIN {printf "memory per open session: %.0f bytes\n", (a - b) * 1024 / n}'
    echo "GET /api/sessions/count:          $lat_count"
    echo "GET /api/sessions?status=active:  $lat_list"
    echo "export status=closed: http ${export_out% * *}, $(echo "$export_out" | awk '{printf "%.2f s, %d bytes", $2, $3}'), $export_rows rows"
    echo "export memory: VmRSS before ${before_export} kB, peak during (VmHWM after clear_refs) ${export_hwm} kB, sampled max ${sampled_peak} kB"
  } | tee -a "$WORK/results.txt"
}

if [ "$WHICH" = sqlite ] || [ "$WHICH" = both ]; then
  echo "== SQLite: generating $OPEN open + $CLOSED closed rows" >&2
  for db in scale empty; do
    RADACCTD_DATABASE_URL="sqlite://$WORK/$db.db" "$RADACCTD" --config "$WORK/radacctd.toml" migrate >/dev/null
  done
  t0=$(now_ms)
  python3 - "$WORK/scale.db" "$OPEN" "$CLOSED" <<'PY'
import hashlib, sqlite3, sys
db, n_open, n_closed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
c = sqlite3.connect(db)
c.create_function("md5", 1, lambda s: hashlib.md5(s.encode()).hexdigest(), deterministic=True)
c.execute("PRAGMA synchronous=OFF")
ins = """
INSERT INTO radacct (acctsessionid, acctuniqueid, sessionkey, username, realm, nasipaddress,
  nasportid, nasporttype, acctstarttime, acctupdatetime, acctstoptime, acctinterval,
  acctsessiontime, acctinputoctets, acctoutputoctets, calledstationid, callingstationid,
  acctterminatecause, servicetype, framedprotocol, framedipaddress, nas_id, stopsource)
WITH RECURSIVE g(n) AS (SELECT ? UNION ALL SELECT n + 1 FROM g WHERE n < ?)
SELECT printf('%08x', n), md5('scale-' || n), md5('scale-' || n), 'user' || n || '@example.net', '',
  '10.0.' || (n % 16) || '.1', 'bridge1', 'Ethernet',
  datetime('now', '-' || (86400 + n % 86400) || ' seconds'),
  datetime('now', '-' || (n % 300) || ' seconds'),
  CASE WHEN ? THEN datetime('now', '-' || (n % 300) || ' seconds') END,
  300, 86400 + n % 86400 - n % 300, n * 1000, n * 3000, 'service1',
  printf('F8:B4:6A:%02X:%02X:%02X', (n >> 16) % 256, (n >> 8) % 256, n % 256),
  CASE WHEN ? THEN 'User-Request' ELSE '' END, 'Framed-User', 'PPP',
  '100.' || (64 + (n >> 16) % 64) || '.' || ((n >> 8) % 256) || '.' || (n % 256),
  NULL, CASE WHEN ? THEN 'nas' END
FROM g
"""
c.execute(ins, (1, n_open, 0, 0, 0))
c.execute(ins, (n_open + 1, n_open + n_closed, 1, 1, 1))
c.commit()
print(c.execute("SELECT count(*), sum(acctstoptime IS NULL) FROM radacct").fetchone())
PY
  echo "generated in $(($(now_ms) - t0)) ms" >&2
  measure sqlite "sqlite://$WORK/scale.db" "sqlite://$WORK/empty.db"
fi

if [ "$WHICH" = postgres ] || [ "$WHICH" = both ]; then
  echo "== PostgreSQL: generating $OPEN open + $CLOSED closed rows" >&2
  PGURL=$("$ROOT/scripts/pg-cluster.sh" start "$WORK/pg")
  PGPORT=${PGURL##*:}
  PGPORT=${PGPORT%%/*}
  PSQL=(psql -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PGPORT" -U postgres)
  for db in scale empty; do
    "${PSQL[@]}" -d postgres -c "CREATE DATABASE $db" >/dev/null
    RADACCTD_DATABASE_URL="postgres://postgres@127.0.0.1:$PGPORT/$db" "$RADACCTD" --config "$WORK/radacctd.toml" migrate >/dev/null
  done
  t0=$(now_ms)
  for part in open closed; do
    if [ $part = open ]; then lo=1; hi=$OPEN; closed=false; else lo=$((OPEN + 1)); hi=$((OPEN + CLOSED)); closed=true; fi
    "${PSQL[@]}" -d scale <<SQL
INSERT INTO radacct (acctsessionid, acctuniqueid, sessionkey, username, realm, nasipaddress,
  nasportid, nasporttype, acctstarttime, acctupdatetime, acctstoptime, acctinterval,
  acctsessiontime, acctinputoctets, acctoutputoctets, calledstationid, callingstationid,
  acctterminatecause, servicetype, framedprotocol, framedipaddress, stopsource)
SELECT lpad(to_hex(n), 8, '0'), md5('scale-' || n), md5('scale-' || n), 'user' || n || '@example.net', '',
  ('10.0.' || (n % 16) || '.1')::inet, 'bridge1', 'Ethernet',
  now() - make_interval(secs => 86400 + n % 86400),
  now() - make_interval(secs => n % 300),
  CASE WHEN $closed THEN now() - make_interval(secs => n % 300) END,
  300, 86400 + n % 86400 - n % 300, n::bigint * 1000, n::bigint * 3000, 'service1',
  'F8:B4:6A:' || lpad(to_hex((n >> 16) % 256), 2, '0') || ':' || lpad(to_hex((n >> 8) % 256), 2, '0') || ':' || lpad(to_hex(n % 256), 2, '0'),
  CASE WHEN $closed THEN 'User-Request' ELSE '' END, 'Framed-User', 'PPP',
  ('100.' || (64 + (n >> 16) % 64) || '.' || ((n >> 8) % 256) || '.' || (n % 256))::inet,
  CASE WHEN $closed THEN 'nas' END
FROM generate_series($lo, $hi) AS n;
SQL
  done
  "${PSQL[@]}" -d scale -c "VACUUM ANALYZE radacct" >/dev/null
  echo "generated in $(($(now_ms) - t0)) ms" >&2
  measure postgres "postgres://postgres@127.0.0.1:$PGPORT/scale" "postgres://postgres@127.0.0.1:$PGPORT/empty"
fi

echo
cat "$WORK/results.txt"
