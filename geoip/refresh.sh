#!/usr/bin/env bash
# Refreshes geoip/geo-whois-asn-country.mmdb from npm (default) or a URL to an .mmdb/.tgz.
# The new file is written beside the old one and renamed over it, so a running server
# reloading at the same moment never reads a half-written file.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
if [ $# -ge 1 ]; then
  curl -fsSL "$1" -o "$tmp/download"
  if file "$tmp/download" | grep -q gzip; then tar -xzf "$tmp/download" -C "$tmp"; else cp "$tmp/download" "$tmp/geo-whois-asn-country.mmdb"; fi
else
  (cd "$tmp" && npm pack --silent @ip-location-db/geo-whois-asn-country-mmdb >/dev/null && tar -xzf ./*.tgz)
fi
src="$(find "$tmp" -name 'geo-whois-asn-country.mmdb' -o -name '*.mmdb' | head -n 1)"
[ -n "$src" ] || { echo "no .mmdb in the download" >&2; exit 1; }
[ -f "$tmp/package/NRO_LICENSE" ] && cp "$tmp/package/NRO_LICENSE" "$here/NRO_LICENSE"
cp "$src" "$here/.geo-whois-asn-country.mmdb.new"
mv "$here/.geo-whois-asn-country.mmdb.new" "$here/geo-whois-asn-country.mmdb"
echo "updated $here/geo-whois-asn-country.mmdb; run 'meridian check' and reload" >&2
