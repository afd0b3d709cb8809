#!/usr/bin/env bash
# A real FreeRADIUS 3.2 accounting server writing to PostgreSQL through rlm_sql, run from a
# private directory so that it never reads or changes /etc/freeradius or /var.
#
#   scripts/freeradius.sh schema
#       print the path of the stock FreeRADIUS PostgreSQL schema
#       (mods-config/sql/main/postgresql/schema.sql)
#   scripts/freeradius.sh start DIR ACCT_PORT PGHOST PGPORT PGUSER PGDB SECRET
#       build a configuration in DIR/raddb and start FreeRADIUS in the background;
#       prints its PID once it is ready to process requests
#   scripts/freeradius.sh start-sqlite DIR ACCT_PORT DBFILE SECRET
#       the same accounting server writing to the SQLite file DBFILE through rlm_sql_sqlite
#       (see "SQLite" below); prints its PID once it is ready to process requests
#   scripts/freeradius.sh coa DIR PORT SECRET
#       build a configuration in DIR/raddb and start FreeRADIUS in the background as an
#       RFC 5176 CoA/Disconnect receiver on 127.0.0.1:PORT (see "CoA mode" below);
#       prints its PID once it is ready to process requests
#   scripts/freeradius.sh stop DIR
#       stop the FreeRADIUS started in DIR by `start` or `coa` (TERM, then KILL after 10 s)
#
# Why: radacctd claims to work on a database FreeRADIUS created, and to leave it usable by
# FreeRADIUS. The compatibility test (tests/integration/freeradius.rs) checks that against
# the real thing: the stock schema, the stock rlm_sql PostgreSQL queries (queries.conf) and
# the stock acct_unique policy that computes acctuniqueid. The benchmark comparing radacctd
# with FreeRADIUS + rlm_sql uses the same setup.
#
# What the configuration is: DIR/raddb is a copy of /etc/freeradius/3.0 (so queries.conf,
# policy.d and the dictionaries are the packaged ones) in which only these files are
# replaced:
#   radiusd.conf        paths inside DIR (log DIR/radius.log, pid DIR/run), no proxying,
#                       no privilege drop (see below)
#   clients.conf        one client, 127.0.0.1, with SECRET
#   sites-enabled/      only `default`, with one listener: accounting on 127.0.0.1:ACCT_PORT
#                       (no auth listener); preacct runs preprocess + acct_unique (so
#                       acctuniqueid is FreeRADIUS's MD5), accounting runs sql
#   mods-enabled/       only the modules that site needs, and `sql` with
#                       dialect postgresql, driver rlm_sql_postgresql and the connection
#                       from the arguments (empty password: the test cluster trusts TCP
#                       from 127.0.0.1)
# detail, unix, exec, radutmp, eap and the rest of the stock modules are left out: they
# write files outside DIR or need certificates and system users.
#
# Privileges: Debian's radiusd.conf switches to the `freerad` user after start. Here the
# `user`/`group` settings are removed, so FreeRADIUS keeps the identity it was started with
# (root in the test containers); it then can write DIR and read the copied configuration
# whatever their owners are.
#
# FreeRADIUS runs with -f (foreground, not -X: debug logging is far too slow for a
# benchmark), in the background of this script, logging to DIR/radius.log. "Ready" means
# the log says "Ready to process requests" (rlm_sql has then connected to PostgreSQL: with
# the default pool settings FreeRADIUS refuses to start if it cannot).
#
# Needs the Debian packages freeradius and freeradius-postgresql; installs them with
# apt-get when /usr/sbin/freeradius or rlm_sql_postgresql is missing.
#
# SQLite (`start-sqlite`): the same site, with `sql` set to dialect sqlite and driver
# rlm_sql_sqlite (both in the freeradius package) and everything else of the stock
# mods-available/sql: the stock sqlite queries.conf, `busy_timeout = 200` (ms; the
# environment variable SQLITE_BUSY_TIMEOUT_MS overrides it), and
# `bootstrap` with the stock SQLite schema (mods-config/sql/main/sqlite/schema.sql), so a
# DBFILE that does not exist is created with it. SQLite's own defaults apply (rollback
# journal, synchronous = FULL): that is FreeRADIUS as packaged, not tuned.
#
# CoA mode (`coa`): FreeRADIUS plays the NAS side of RFC 5176 so that radacctd's
# Disconnect-Request client is checked against an independent implementation
# (tests/integration/disconnect.rs). Same radiusd.conf and clients.conf as above (one client,
# 127.0.0.1, with SECRET); sites-enabled/ holds only a `coa` server, modelled on the stock
# sites-available/coa, with one listener `type = coa` on 127.0.0.1:PORT. What FreeRADIUS 3
# does with a packet there, and what that means for the test:
#   - It checks the Request Authenticator (RFC 5176 §2.3) and, when present, the
#     Message-Authenticator (computed over 16 zero octets in the authenticator field,
#     RFC 5176 §3.1); a packet failing either is dropped unanswered. An ACK therefore proves
#     that both were right.
#   - Disconnect-Request and CoA-Request both run through `recv-coa`. Its result decides
#     the answer: ok, updated, noop or notfound give Disconnect-ACK; reject, fail, invalid,
#     userlock give Disconnect-NAK. `recv-coa` here writes one line per packet to
#     DIR/coa.log (linelog `coa_log`: packet type, User-Name, Acct-Session-Id,
#     Framed-IP-Address, NAS-IP-Address) and then returns `ok`, so every authentic
#     Disconnect-Request is ACKed (FreeRADIUS has no session to look up; a real NAS would
#     NAK an unknown one with Error-Cause 503).
#   - Only the `always` modules (for `ok`) and that linelog instance are enabled; nothing
#     needs PostgreSQL, so CoA mode requires only the freeradius package.
set -euo pipefail

usage() {
  echo "usage: freeradius.sh schema" >&2
  echo "       freeradius.sh start DIR ACCT_PORT PGHOST PGPORT PGUSER PGDB SECRET" >&2
  echo "       freeradius.sh start-sqlite DIR ACCT_PORT DBFILE SECRET" >&2
  echo "       freeradius.sh coa DIR PORT SECRET" >&2
  echo "       freeradius.sh stop DIR" >&2
  exit 2
}

STOCK=/etc/freeradius/3.0
SCHEMA=$STOCK/mods-config/sql/main/postgresql/schema.sql
SQLITE_SCHEMA=$STOCK/mods-config/sql/main/sqlite/schema.sql
BIN=/usr/sbin/freeradius

# Tests run in parallel and several may need the packages at once: one apt run at a time
# (flock), and apt itself waits for its lock instead of failing when something else holds it.
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  (
    flock -w 600 9 || { echo "freeradius.sh: timed out waiting for another install" >&2; exit 1; }
    apt-get -o DPkg::Lock::Timeout=300 update -qq >&2
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq "$@" >/dev/null
  ) 9>/tmp/radacctd-apt.lock
}

ensure_installed() {
  local mod
  mod=$(ls /usr/lib/freeradius/rlm_sql_postgresql.so 2>/dev/null || true)
  if [ -x "$BIN" ] && [ -n "$mod" ] && [ -f "$SCHEMA" ]; then
    return 0
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "freeradius.sh: need the packages freeradius and freeradius-postgresql (run as root or install them)" >&2
    exit 1
  fi
  echo "freeradius.sh: installing freeradius and freeradius-postgresql" >&2
  apt_install freeradius freeradius-postgresql
  # The package starts the system service; nothing here uses it.
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet freeradius 2>/dev/null; then
    systemctl stop freeradius >&2 || true
  fi
  [ -x "$BIN" ] && [ -f "$SCHEMA" ]
}

# CoA mode needs FreeRADIUS itself only (no rlm_sql driver).
ensure_core_installed() {
  if [ -x "$BIN" ] && [ -f "$STOCK/mods-available/linelog" ] && [ -f "$STOCK/mods-available/always" ]; then
    return 0
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "freeradius.sh: need the package freeradius (run as root or install it)" >&2
    exit 1
  fi
  echo "freeradius.sh: installing freeradius" >&2
  apt_install freeradius
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet freeradius 2>/dev/null; then
    systemctl stop freeradius >&2 || true
  fi
  [ -x "$BIN" ]
}

abs_dir() {
  mkdir -p "$1"
  (cd "$1" && pwd)
}

# Double quotes and backslashes would end a FreeRADIUS string early.
check_value() {
  case "$2" in
    *\"* | *\\* | '')
      echo "freeradius.sh: $1 must be non-empty and contain no quote or backslash" >&2
      exit 2
      ;;
  esac
}

write_config() {
  local dir=$1 port=$2 pghost=$3 pgport=$4 pguser=$5 pgdb=$6 secret=$7

  write_base_config "$dir" "$secret" "an accounting server only"
  write_acct_site "$dir" "$port"
  write_sql_postgresql "$dir" "$pghost" "$pgport" "$pguser" "$pgdb"
}

# radiusd.conf and clients.conf, shared by both modes; ROLE names the mode in the header.
write_base_config() {
  local dir=$1 secret=$2 role=$3
  local raddb=$dir/raddb

  rm -rf "$raddb"
  cp -a "$STOCK" "$raddb"
  mkdir -p "$dir/run"

  cat >"$raddb/radiusd.conf" <<CONF
# Written by scripts/freeradius.sh: FreeRADIUS as $role, inside $dir.
prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = $dir
sbindir = /usr/sbin
logdir = $dir
raddbdir = $raddb
radacctdir = $dir/radacct
name = freeradius
confdir = \${raddbdir}
modconfdir = \${confdir}/mods-config
certdir = \${confdir}/certs
cadir = \${confdir}/certs
run_dir = $dir/run
db_dir = $dir
libdir = /usr/lib/freeradius
pidfile = \${run_dir}/\${name}.pid

max_request_time = 30
cleanup_delay = 5
max_requests = 65536
hostname_lookups = no

log {
	destination = files
	colourise = no
	file = $dir/radius.log
	syslog_facility = daemon
	stripped_names = no
	auth = no
	auth_badpass = no
	auth_goodpass = no
}

checkrad = \${sbindir}/checkrad

# No user/group: keep the identity FreeRADIUS was started with (see freeradius.sh).
security {
	allow_core_dumps = no
	max_attributes = 200
	reject_delay = 1
	status_server = yes
}

proxy_requests = no

\$INCLUDE clients.conf

thread pool {
	start_servers = 5
	max_servers = 32
	min_spare_servers = 3
	max_spare_servers = 10
	max_requests_per_server = 0
	auto_limit_acct = no
}

modules {
	\$INCLUDE mods-enabled/
}

instantiate {
}

policy {
	\$INCLUDE policy.d/
}

\$INCLUDE sites-enabled/
CONF

  cat >"$raddb/clients.conf" <<CONF
client localhost {
	ipaddr = 127.0.0.1
	secret = "$secret"
	require_message_authenticator = no
	nas_type = other
}
CONF
}

# sites-enabled/default (accounting into `sql`) and mods-enabled/ without `sql` itself.
write_acct_site() {
  local dir=$1 port=$2
  local raddb=$dir/raddb

  rm -rf "$raddb/sites-enabled"
  mkdir "$raddb/sites-enabled"
  cat >"$raddb/sites-enabled/default" <<CONF
# The stock default server reduced to accounting into SQL.
server default {
listen {
	type = acct
	ipaddr = 127.0.0.1
	port = $port
	limit {
	}
}

authorize {
	preprocess
}

authenticate {
}

preacct {
	preprocess
	acct_unique
}

accounting {
	sql
	attr_filter.accounting_response
}

session {
}

post-auth {
}
}
CONF

  rm -rf "$raddb/mods-enabled"
  mkdir "$raddb/mods-enabled"
  local m
  for m in always attr_filter expr preprocess; do
    ln -s ../mods-available/$m "$raddb/mods-enabled/$m"
  done
}

# mods-enabled/sql: the stock sql module (mods-available/sql) pointed at PostgreSQL.
write_sql_postgresql() {
  local dir=$1 pghost=$2 pgport=$3 pguser=$4 pgdb=$5
  write_sql_module "$dir" "PostgreSQL" "postgresql" "$(cat <<CONF
	postgresql {
		send_application_name = yes
	}

	server = "$pghost"
	port = $pgport
	login = "$pguser"
	password = ""
	radius_db = "$pgdb"
CONF
)"
}

# mods-enabled/sql: the stock sql module pointed at the SQLite file DBFILE (see the header).
write_sql_sqlite() {
  local dir=$1 dbfile=$2
  write_sql_module "$dir" "the SQLite file $dbfile" "sqlite" "$(cat <<CONF
	sqlite {
		filename = "$dbfile"
		busy_timeout = ${SQLITE_BUSY_TIMEOUT_MS:-200}
		bootstrap = "\${modconfdir}/\${..:name}/main/sqlite/schema.sql"
	}
CONF
)"
}

# write_sql_module DIR WHAT DIALECT CONNECTION: the sql module with the stock settings and
# CONNECTION (the driver's section and where to connect).
write_sql_module() {
  local dir=$1 what=$2 dialect=$3 connection=$4
  cat >"$dir/raddb/mods-enabled/sql" <<CONF
# The stock sql module (mods-available/sql) pointed at $what.
sql {
	dialect = "$dialect"
	driver = "rlm_sql_$dialect"

$connection

	acct_table1 = "radacct"
	acct_table2 = "radacct"
	postauth_table = "radpostauth"
	authcheck_table = "radcheck"
	groupcheck_table = "radgroupcheck"
	authreply_table = "radreply"
	groupreply_table = "radgroupreply"
	usergroup_table = "radusergroup"

	delete_stale_sessions = yes

	pool {
		start = \${thread[pool].start_servers}
		min = \${thread[pool].min_spare_servers}
		max = \${thread[pool].max_servers}
		spare = \${thread[pool].max_spare_servers}
		uses = 0
		retry_delay = 30
		lifetime = 0
		idle_timeout = 60
	}

	read_clients = no
	client_table = "nas"
	group_attribute = "SQL-Group"

	\$INCLUDE \${modconfdir}/\${.:name}/main/\${dialect}/queries.conf
}
CONF
}

# sites-enabled/ and mods-enabled/ for CoA mode (see the header).
write_coa_site() {
  local dir=$1 port=$2
  local raddb=$dir/raddb

  rm -rf "$raddb/sites-enabled"
  mkdir "$raddb/sites-enabled"
  cat >"$raddb/sites-enabled/coa" <<CONF
# The stock sites-available/coa reduced to: log the packet, answer ACK.
server coa {
listen {
	type = coa
	ipaddr = 127.0.0.1
	port = $port
	limit {
	}
}

recv-coa {
	coa_log
	ok
}

send-coa {
	ok
}
}
CONF

  rm -rf "$raddb/mods-enabled"
  mkdir "$raddb/mods-enabled"
  ln -s ../mods-available/always "$raddb/mods-enabled/always"
  cat >"$raddb/mods-enabled/coa_log" <<CONF
# One line per CoA/Disconnect packet received, for the test to read.
linelog coa_log {
	filename = $dir/coa.log
	escape_filenames = no
	permissions = 0600
	format = "%{Packet-Type} User-Name=%{User-Name} Acct-Session-Id=%{Acct-Session-Id} Framed-IP-Address=%{Framed-IP-Address} NAS-IP-Address=%{NAS-IP-Address}"
}
CONF
}

start() {
  [ $# -eq 7 ] || usage
  local dir port=$2 pghost=$3 pgport=$4 pguser=$5 pgdb=$6 secret=$7
  ensure_installed
  dir=$(abs_dir "$1")
  for v in port pghost pgport pguser pgdb secret; do check_value "$v" "${!v}"; done
  case "$port$pgport" in *[!0-9]*)
    echo "freeradius.sh: ports must be numbers" >&2
    exit 2
    ;;
  esac

  refuse_if_running "$dir"
  write_config "$dir" "$port" "$pghost" "$pgport" "$pguser" "$pgdb" "$secret"
  launch "$dir"
}

# SQLite: see the header.
start_sqlite() {
  [ $# -eq 4 ] || usage
  local dir port=$2 dbfile=$3 secret=$4
  ensure_core_installed
  [ -f "$SQLITE_SCHEMA" ] && [ -f /usr/lib/freeradius/rlm_sql_sqlite.so ] || {
    echo "freeradius.sh: rlm_sql_sqlite or its schema ($SQLITE_SCHEMA) is missing" >&2
    exit 1
  }
  dir=$(abs_dir "$1")
  case "$dbfile" in /*) ;; *) dbfile=$PWD/$dbfile ;; esac
  for v in port dbfile secret; do check_value "$v" "${!v}"; done
  case "$port${SQLITE_BUSY_TIMEOUT_MS:-200}" in *[!0-9]*)
    echo "freeradius.sh: the port and SQLITE_BUSY_TIMEOUT_MS must be numbers" >&2
    exit 2
    ;;
  esac

  refuse_if_running "$dir"
  write_base_config "$dir" "$secret" "an accounting server only (SQLite)"
  write_acct_site "$dir" "$port"
  write_sql_sqlite "$dir" "$dbfile"
  launch "$dir"
}

# CoA mode: see the header.
coa() {
  [ $# -eq 3 ] || usage
  local dir port=$2 secret=$3
  ensure_core_installed
  dir=$(abs_dir "$1")
  for v in port secret; do check_value "$v" "${!v}"; done
  case "$port" in *[!0-9]*)
    echo "freeradius.sh: ports must be numbers" >&2
    exit 2
    ;;
  esac

  refuse_if_running "$dir"
  write_base_config "$dir" "$secret" "an RFC 5176 CoA/Disconnect receiver only"
  write_coa_site "$dir" "$port"
  (umask 077 && : >"$dir/coa.log")
  launch "$dir"
}

refuse_if_running() {
  local dir=$1
  if [ -f "$dir/freeradius.pid" ] && kill -0 "$(cat "$dir/freeradius.pid")" 2>/dev/null; then
    echo "freeradius.sh: already running in $dir (pid $(cat "$dir/freeradius.pid"))" >&2
    exit 1
  fi
}

# Check the configuration in DIR/raddb, start FreeRADIUS on it in the background and wait
# until it is ready; prints its PID.
launch() {
  local dir=$1
  # Check the configuration first: a clear error instead of a server that never gets ready.
  if ! "$BIN" -C -d "$dir/raddb" >"$dir/check.log" 2>&1; then
    echo "freeradius.sh: configuration check failed:" >&2
    tail -n 30 "$dir/check.log" >&2
    exit 1
  fi

  : >"$dir/radius.log"
  # setsid: its own process group, so that signals sent to the caller's group (a test
  # runner's Ctrl-C) do not race with `stop`.
  setsid "$BIN" -f -d "$dir/raddb" </dev/null >"$dir/stdout.log" 2>&1 &
  local pid=$!
  echo "$pid" >"$dir/freeradius.pid"

  local _
  for _ in $(seq 1 300); do
    if grep -q 'Ready to process requests' "$dir/radius.log"; then
      echo "$pid"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "freeradius.sh: FreeRADIUS exited during start:" >&2
      tail -n 30 "$dir/radius.log" >&2
      rm -f "$dir/freeradius.pid"
      exit 1
    fi
    sleep 0.1
  done
  echo "freeradius.sh: FreeRADIUS not ready after 30 s:" >&2
  tail -n 30 "$dir/radius.log" >&2
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$dir/freeradius.pid"
  exit 1
}

stop() {
  [ $# -eq 1 ] || usage
  local dir=$1 pid _
  [ -f "$dir/freeradius.pid" ] || return 0
  pid=$(cat "$dir/freeradius.pid")
  if kill -TERM "$pid" 2>/dev/null; then
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$dir/freeradius.pid"
}

cmd=${1:-}
[ -n "$cmd" ] || usage
shift
case "$cmd" in
  schema)
    [ $# -eq 0 ] || usage
    ensure_installed
    echo "$SCHEMA"
    ;;
  start) start "$@" ;;
  start-sqlite) start_sqlite "$@" ;;
  coa) coa "$@" ;;
  stop) stop "$@" ;;
  *) usage ;;
esac
