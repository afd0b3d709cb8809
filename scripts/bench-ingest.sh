#!/usr/bin/env bash
# Ingest throughput and latency of radacctd on SQLite and PostgreSQL (DESIGN.md §9):
# durable acknowledgements (sqlite_synchronous = full; PostgreSQL's synchronous_commit on),
# mixed Start / Interim-Update / Stop traffic from loadgen.
#
#   scripts/bench-ingest.sh [sqlite|postgres|both]
#
# Environment (all optional):
#   SESSIONS=20000 INTERIMS=2 WINDOW=256   loadgen's unpaced (peak) run
#   PACED_PCT=80                           then a paced run at this % of the measured peak
#   WORK=/tmp/...                          work directory (default: a new mktemp -d,
#                                          removed at the end unless KEEP=1)
#   CARGO_TARGET_DIR                       honoured for the release build
#
# Per backend: a fresh database (SQLite file, or a throwaway PostgreSQL cluster from
# scripts/pg-cluster.sh), radacctd with one [[nas]] 127.0.0.1 and jobs off, then
#   1. loadgen unpaced at WINDOW requests in flight: peak packets/s, p50/p99;
#   2. loadgen paced at PACED_PCT % of that peak (new usernames): p50/p99 there;
# with the kernel's UDP receive-buffer drops (/proc/net/snmp RcvbufErrors) before and
# after, radacctd's commit batch sizes from /metrics, and the load average, since the
# machine may be shared.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WHICH=${1:-both}
SESSIONS=${SESSIONS:-20000}
INTERIMS=${INTERIMS:-2}
WINDOW=${WINDOW:-256}
PACED_PCT=${PACED_PCT:-80}
SECRET=testing123
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=${WORK:-$(mktemp -d /tmp/bench-ingest.XXXXXX)}
mkdir -p "$WORK"
chmod 755 "$WORK"

free_port() {
  python3 -c 'import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM if sys.argv[1]=="udp" else socket.SOCK_STREAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' "$1"
}

RAD_PID=
PG_STARTED=0
cleanup() {
  [ -n "$RAD_PID" ] && kill "$RAD_PID" 2>/dev/null && wait "$RAD_PID" 2>/dev/null || true
  [ "$PG_STARTED" = 1 ] && "$ROOT/scripts/pg-cluster.sh" destroy "$WORK/pg" >/dev/null 2>&1 || true
  if [ "${KEEP:-0}" != 1 ]; then rm -rf "$WORK"; else echo "kept $WORK" >&2; fi
}
trap cleanup EXIT

rcvbuf_errors() {
  awk '/^Udp:/ { if (!h) { for (i = 1; i <= NF; i++) if ($i == "RcvbufErrors") c = i; h = 1 } else print $c }' /proc/net/snmp
}

echo "== build" >&2
(cd "$ROOT" && cargo build --release --bins -q)
RADACCTD=$TARGET/release/radacctd
LOADGEN=$TARGET/release/loadgen

start_radacctd() {
  local name=$1 url=$2
  RAD_UDP=$(free_port udp)
  RAD_HTTP=$(free_port tcp)
  cat >"$WORK/$name.toml" <<EOF
[database]
max_connections = 8
sqlite_synchronous = "full"

[radius]
recv_buffer_bytes = 8388608
default_client = false

[jobs]
sweeper = false
archiver = false

[log]
filter = "info"

[[nas]]
name = "bench"
ip = "127.0.0.1"
secret = "$SECRET"
EOF
  RADACCTD_DATABASE_URL=$url "$RADACCTD" --config "$WORK/$name.toml" serve \
    --radius-listen "127.0.0.1:$RAD_UDP" --http-listen "127.0.0.1:$RAD_HTTP" \
    >"$WORK/$name.log" 2>&1 &
  RAD_PID=$!
  for _ in $(seq 1 300); do
    if curl -fsS "http://127.0.0.1:$RAD_HTTP/readyz" >/dev/null 2>&1; then return 0; fi
    if ! kill -0 "$RAD_PID" 2>/dev/null; then
      echo "radacctd ($name) exited:" >&2
      cat "$WORK/$name.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "radacctd ($name) not ready after 30 s" >&2
  exit 1
}

stop_radacctd() {
  local name=$1
  curl -fsS "http://127.0.0.1:$RAD_HTTP/metrics" >"$WORK/$name.metrics" 2>/dev/null || true
  kill "$RAD_PID"
  wait "$RAD_PID" 2>/dev/null || true
  RAD_PID=
}

# load NAME PREFIX RATE: one loadgen run against the running radacctd.
load() {
  local name=$1 prefix=$2 rate=$3 before after
  before=$(rcvbuf_errors)
  echo "-- $name: loadgen --sessions $SESSIONS --interims $INTERIMS --window $WINDOW --rate $rate (load average $(cut -d' ' -f1-3 /proc/loadavg))"
  "$LOADGEN" --server "127.0.0.1:$RAD_UDP" --secret "$SECRET" --sessions "$SESSIONS" \
    --interims "$INTERIMS" --window "$WINDOW" --rate "$rate" --prefix "$prefix" \
    | tee "$WORK/$name.$prefix.loadgen"
  after=$(rcvbuf_errors)
  echo "kernel UDP RcvbufErrors during the run: $((after - before)); load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
}

run_backend() {
  local name=$1 url=$2 peak paced
  echo "### $name"
  start_radacctd "$name" "$url"
  load "$name" peak 0
  peak=$(awk '/^throughput/ {print int($2)}' "$WORK/$name.peak.loadgen")
  paced=$((peak * PACED_PCT / 100))
  load "$name" paced "$paced"
  stop_radacctd "$name"
  echo "-- $name: commit batches (radacctd_commit_batch_size / radacctd_commit_duration_seconds)"
  grep -E '^radacctd_commit_(batch_size|duration_seconds)_(sum|count)' "$WORK/$name.metrics" || true
}

echo "$(nproc) cores; $(date -u +%FT%TZ)"
if [ "$WHICH" = sqlite ] || [ "$WHICH" = both ]; then
  run_backend sqlite "sqlite://$WORK/rad.db"
fi
if [ "$WHICH" = postgres ] || [ "$WHICH" = both ]; then
  PGURL=$("$ROOT/scripts/pg-cluster.sh" start "$WORK/pg")
  PG_STARTED=1
  run_backend postgres "$PGURL"
fi
