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
# shellcheck source=scripts/bench-lib.sh
. "$ROOT/scripts/bench-lib.sh"
bench_work bench-ingest

PG_STARTED=0
cleanup() {
  kill_radacctd
  [ "$PG_STARTED" = 1 ] && "$ROOT/scripts/pg-cluster.sh" destroy "$WORK/pg" >/dev/null 2>&1 || true
  remove_work
}
trap cleanup EXIT

rcvbuf_errors() {
  awk '/^Udp:/ { if (!h) { for (i = 1; i <= NF; i++) if ($i == "RcvbufErrors") c = i; h = 1 } else print $c }' /proc/net/snmp
}

build_release

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
  commit_batches "$name"
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
