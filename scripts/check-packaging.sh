#!/usr/bin/env bash
# Build the Debian package with cargo-deb and check it: the files it installs, that the
# packaged configuration is valid, the dashboard is JSON, and — where systemd-analyze is
# available — that the unit file verifies against the unpacked package.
#
# Uses the dev profile so the test run's build is reused; release packages are built the
# same way with plain `cargo deb`.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-deb >/dev/null; then
  echo "check-packaging: installing cargo-deb"
  cargo install cargo-deb --locked --quiet
fi
out=$(mktemp -d /tmp/radacctd-deb.XXXXXX)
trap 'rm -rf "$out"' EXIT

# cargo-deb warns that the dev profile is meant for testing only: that is the point here.
cargo deb --profile dev --no-strip --output "$out/radacctd.deb" >/dev/null 2>&1 ||
  cargo deb --profile dev --no-strip --output "$out/radacctd.deb"
contents=$(dpkg-deb -c "$out/radacctd.deb")
for path in ./usr/bin/radacctd ./usr/lib/systemd/system/radacctd.service \
  ./etc/radacctd/radacctd.toml ./etc/default/radacctd \
  ./usr/share/radacctd/dictionaries/dictionary ./usr/share/radacctd/dictionaries/dictionary.mikrotik \
  ./usr/share/doc/radacctd/radacctd.toml.example ./usr/share/doc/radacctd/grafana-dashboard.json; do
  if ! grep -q " $path\$" <<<"$contents"; then
    echo "check-packaging: $path missing from the package" >&2
    exit 1
  fi
done
# Capture first: `dpkg-deb -I | grep -q` dies of SIGPIPE under pipefail when grep exits early.
info=$(dpkg-deb -I "$out/radacctd.deb")
if ! grep -q "Depends:.*adduser" <<<"$info"; then
  echo "check-packaging: the package does not depend on adduser" >&2
  exit 1
fi

root="$out/root"
dpkg-deb -x "$out/radacctd.deb" "$root"
"$root/usr/bin/radacctd" --config "$root/etc/radacctd/radacctd.toml" check-config >/dev/null
"$root/usr/bin/radacctd" --config packaging/radacctd.toml check-config >/dev/null
python3 -m json.tool packaging/grafana-dashboard.json >/dev/null

if command -v systemd-analyze >/dev/null; then
  # Verify the packaged unit with its binary path pointed at the unpacked binary (nothing
  # is installed on this machine).
  sed "s#/usr/bin/radacctd#$root/usr/bin/radacctd#g" \
    "$root/usr/lib/systemd/system/radacctd.service" >"$out/radacctd.service"
  systemd-analyze verify "$out/radacctd.service"
  echo "check-packaging: systemd-analyze verify passed"
else
  echo "check-packaging: systemd-analyze not available; unit file not verified"
fi
echo "check-packaging: package OK ($(du -h "$out/radacctd.deb" | cut -f1))"
