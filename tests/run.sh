#!/usr/bin/env bash
# The test command: installs the reference servers and clients the black-box tests use
# (NSD for the differential test, Unbound as the validating resolver of the DNSSEC
# test, dig and delv, dnsperf, Prometheus and promtool, Chromium for
# the status page screenshot, openssl for a TLS health endpoint, iproute2 for the
# network namespaces of the fragmentation, cluster and network-fault tests, python3 for
# their backends, nftables for the packet loss of the latter, BIRD 2 and ExaBGP as the
# anycast test's BGP speakers), then runs the suite.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(nsd dnsutils unbound dnsperf prometheus chromium openssl iproute2 python3 nftables curl jq bird2 exabgp)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -q >/dev/null
  $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

# `fuzzing`: tests/fuzz_corpus.rs replays the fuzz corpus through meridian::fuzzing.
cargo test --locked --features fuzzing "$@"
