#!/usr/bin/env bash
# Shared by scripts/bench-ingest.sh, scripts/compare-freeradius.sh and
# scripts/bench-pg-statements.sh (sourced, not run): the work directory, free ports, the
# release build, and starting/stopping a benchmark radacctd.
#
# The sourcing script sets ROOT first, then calls bench_work; this file sets SECRET,
# TARGET, RADACCTD, LOADGEN, WORK, and RAD_PID / RAD_UDP / RAD_HTTP for the radacctd it
# started.

TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
RADACCTD=$TARGET/release/radacctd
LOADGEN=$TARGET/release/loadgen
RAD_PID=
SECRET=testing123

# bench_work NAME: WORK from the environment, or a new /tmp/NAME.XXXXXX; readable by the
# postgres user, whose throwaway cluster lives inside it.
bench_work() {
  WORK=${WORK:-$(mktemp -d "/tmp/$1.XXXXXX")}
  mkdir -p "$WORK"
  chmod 755 "$WORK"
}

# remove_work: for EXIT traps, after the script's own cleanup; KEEP=1 keeps WORK.
remove_work() {
  if [ "${KEEP:-0}" != 1 ]; then rm -rf "$WORK"; else echo "kept $WORK" >&2; fi
}

# free_port udp|tcp: a port free on 127.0.0.1 right now.
free_port() {
  python3 -c 'import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM if sys.argv[1]=="udp" else socket.SOCK_STREAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' "$1"
}

build_release() {
  echo "== build" >&2
  (cd "$ROOT" && cargo build --release --bins -q)
}

# kill_radacctd: stops the radacctd started by start_radacctd, if any (for EXIT traps).
kill_radacctd() {
  if [ -n "$RAD_PID" ]; then
    kill "$RAD_PID" 2>/dev/null && wait "$RAD_PID" 2>/dev/null || true
  fi
  RAD_PID=
}

# start_radacctd NAME DATABASE_URL: radacctd with durable commits (sqlite_synchronous =
# full), one [[nas]] 127.0.0.1 with $SECRET, default_client = false and jobs off, on free
# ports; waits for /readyz. Log in $WORK/NAME.log.
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

# stop_radacctd NAME: keeps its /metrics in $WORK/NAME.metrics, then stops it.
stop_radacctd() {
  local name=$1
  curl -fsS "http://127.0.0.1:$RAD_HTTP/metrics" >"$WORK/$name.metrics" 2>/dev/null || true
  kill_radacctd
}

# commit_batches NAME: radacctd's commit batch and latency sums from its saved /metrics.
commit_batches() {
  echo "-- $1: commit batches (radacctd_commit_batch_size / radacctd_commit_duration_seconds)"
  grep -E '^radacctd_commit_(batch_size|duration_seconds)_(sum|count)' "$WORK/$1.metrics" || true
}
