#!/usr/bin/env bash
# Refreshes geoip/asn.mmdb from ip-location-db's ASN CSV files on npm, converted to the
# GeoLite2-ASN schema by examples/asn_mmdb.rs. Written beside the old file and renamed
# over it, so a reloading server never reads a half-written file.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent @ip-location-db/asn >/dev/null && tar -xzf ./*.tgz)
(cd "$here/.." && cargo run -q --release --example asn_mmdb -- "$tmp/asn.mmdb" \
  "$tmp/package/asn-ipv4.csv" "$tmp/package/asn-ipv6.csv")
for f in ROUTEVIEWS-LICENSE DBIP-LICENSE NRO_LICENSE; do
  [ -f "$tmp/package/$f" ] && cp "$tmp/package/$f" "$here/$f"
done
cp "$tmp/asn.mmdb" "$here/.asn.mmdb.new"
mv "$here/.asn.mmdb.new" "$here/asn.mmdb"
echo "updated $here/asn.mmdb; run 'meridian check' and reload" >&2
