#!/usr/bin/env bash
# Runs every fuzz target for the given time (seconds, default 60) on the stable
# toolchain (`--sanitizer none`: the address sanitizer needs nightly, which these
# machines do not have; the targets are safe Rust, and a panic, an allocation past
# -rss_limit_mb or an input slower than -timeout is a crash either way).
#   fuzz/run.sh 600            # 10 minutes each
#   fuzz/run.sh 60 request ecs # only these
# New corpus entries go to fuzz/corpus/<target>/ (minimise before committing:
# `cargo fuzz cmin --sanitizer none <target>`), crashes to fuzz/artifacts/<target>/,
# which `cargo test --test fuzz_corpus` replays. Per target, the last line of
# fuzz/logs/<target>.log has the executions and coverage.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(request ecs zone_file policy_file tenants_csv config_file geoip gossip admin_body state_file)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
mkdir -p logs
cargo fuzz build --sanitizer none "${targets[@]/#/}" >/dev/null 2>&1 || cargo fuzz build --sanitizer none
for t in "${targets[@]}"; do
  echo "== $t: ${seconds}s"
  # -timeout: an input taking over a second is a hang; inputs over 64 KiB are not
  # what the surfaces take (a UDP datagram, a config file are smaller in practice).
  cargo fuzz run --sanitizer none "$t" -- -max_total_time="$seconds" -timeout=1 \
    -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 >"logs/$t.log" 2>&1 || {
      echo "$t: CRASH (see fuzz/logs/$t.log and fuzz/artifacts/$t/)"; exit 1; }
  grep -E "^(#[0-9]+.*DONE|stat::number_of_executed_units|stat::peak_rss_mb)" "logs/$t.log" | tr '\n' ' '
  echo
done
