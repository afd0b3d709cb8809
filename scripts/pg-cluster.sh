#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the test suite.
#
#   scripts/pg-cluster.sh start DIR   create (if needed) and start a cluster in DIR on a free
#                                     port; prints the connection URL
#   scripts/pg-cluster.sh stop DIR    stop it (fast) and keep the files
#   scripts/pg-cluster.sh restart DIR stop and start on the same port (tests use this to
#                                     cut the database off during traffic)
#   scripts/pg-cluster.sh destroy DIR stop it and remove DIR
#
# PostgreSQL refuses to run as root, so when run as root the server runs as the
# `postgres` user. The server binaries come from /usr/lib/postgresql/*/bin (installed with
# apt-get if missing).
set -euo pipefail

cmd=${1:?usage: pg-cluster.sh start|stop|restart|destroy DIR}
dir=${2:?usage: pg-cluster.sh start|stop|restart|destroy DIR}

find_bin() {
  local b
  b=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$b" ] || [ ! -x "$b/initdb" ]; then
    echo "pg-cluster: installing PostgreSQL server packages" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 update -qq >&2 && apt-get -o DPkg::Lock::Timeout=300 install -y -qq postgresql >&2
    b=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  fi
  echo "$b"
}

as_pg() {
  if [ "$(id -u)" = 0 ]; then
    # runuser keeps no controlling terminal and needs no password.
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

bin=$(find_bin)
case "$cmd" in
  start)
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; chmod 700 "$dir"; fi
    if [ ! -f "$dir/data/PG_VERSION" ]; then
      as_pg "$bin/initdb" -D "$dir/data" -U postgres -A trust --no-sync -E UTF8 >/dev/null
      port=$(free_port)
      echo "$port" > "$dir/data/radacctd-test-port"
      cat >> "$dir/data/postgresql.conf" <<CONF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
max_connections = 200
shared_buffers = 128MB
CONF
    fi
    port=$(cat "$dir/data/radacctd-test-port")
    if ! as_pg "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
      as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 start >/dev/null
    fi
    echo "postgres://postgres@127.0.0.1:$port/postgres"
    ;;
  stop)
    as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
    ;;
  restart)
    as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
    sleep "${PG_DOWN_SECS:-0}"
    as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 start >/dev/null
    ;;
  destroy)
    as_pg "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$dir"
    ;;
  *)
    echo "unknown command $cmd" >&2
    exit 2
    ;;
esac
