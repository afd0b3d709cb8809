#!/usr/bin/env bash
# The whole test suite, as the README and CI run it: formatting, lints, unit tests and the
# integration suite on SQLite and on a throwaway PostgreSQL cluster started here.
#
# Installs what it needs on a fresh Debian machine (radclient from freeradius-utils, the
# PostgreSQL server if missing). In CI (CI=true) the PostgreSQL suite is required: if the
# cluster cannot be started the run fails. Elsewhere it is skipped with a loud notice.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {
  if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 update -qq && apt-get -o DPkg::Lock::Timeout=300 install -y -qq "$@" >/dev/null
  else
    echo "test.sh: need $* (run as root or install it)" >&2
    return 1
  fi
}

command -v radclient >/dev/null || apt_install freeradius-utils

pgdir=$(mktemp -d /tmp/radacctd-pg.XXXXXX)
cleanup() { scripts/pg-cluster.sh destroy "$pgdir" >/dev/null 2>&1 || true; }
trap cleanup EXIT
if url=$(scripts/pg-cluster.sh start "$pgdir"); then
  export RADACCTD_TEST_PG_URL="$url"
  export RADACCTD_TEST_PG_DIR="$pgdir"
  echo "test.sh: PostgreSQL test cluster at $url"
elif [ "${CI:-}" = "true" ]; then
  echo "test.sh: cannot start PostgreSQL, and CI requires the PostgreSQL suite" >&2
  exit 1
else
  echo "test.sh: *** cannot start PostgreSQL: PostgreSQL tests are SKIPPED ***" >&2
  export RADACCTD_TEST_SKIP_PG=1
fi

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
bash scripts/check-deps.sh
# The full-size export tests read this process's RSS while downloading ~75 MB: they run
# alone, after the rest, so that no other test's memory is counted in theirs.
cargo test --lib --bins --tests -- --skip full_size_export
cargo test --benches
cargo test --test integration full_size_export -- --test-threads=1

# A short bounded run of every fuzz target (docs/SECURITY.md, "Fuzzing"): in CI always,
# elsewhere on request (it builds the library once more with coverage instrumentation).
if [ "${CI:-}" = "true" ] || [ "${RADACCTD_TEST_FUZZ:-}" = "1" ]; then
  bash scripts/fuzz.sh 20
fi

# The Debian package and its unit file: in CI always, elsewhere on request (it needs
# cargo-deb, which this installs from crates.io if missing).
if [ "${CI:-}" = "true" ] || [ "${RADACCTD_TEST_PACKAGE:-}" = "1" ]; then
  bash scripts/check-packaging.sh
fi
