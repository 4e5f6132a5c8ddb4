#!/usr/bin/env bash
# Builds the cargo-fuzz targets and runs each for SECONDS (default 60) on a
# scratch copy of its committed corpus. Any crash fails the run; libFuzzer
# leaves the input in fuzz/artifacts/<target>/ — copy it to
# fuzz/regressions/<target>/ once fixed, and `cargo test` replays it forever.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${SECONDS_PER_TARGET:-${1:-60}}
export RUSTC_BOOTSTRAP=1   # cargo-fuzz needs nightly flags; stable accepts them this way

command -v cargo-fuzz >/dev/null || cargo install --quiet --locked cargo-fuzz@0.13.2
cargo fuzz build -O
for target in frame_decoder handshake session; do
    scratch=$(mktemp -d)
    cp -r "fuzz/corpus/$target/." "$scratch/"
    cargo fuzz run -O "$target" "$scratch" -- -max_total_time="$seconds" -rss_limit_mb=2048 \
        -print_final_stats=1 >"target/fuzz-$target.log" 2>&1 || {
        echo "fuzz: $target found a crash:"; grep -A30 -m1 'panicked\|ERROR: libFuzzer' "target/fuzz-$target.log"; exit 1; }
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "target/fuzz-$target.log")
    echo "fuzz: $target ran $runs inputs in ${seconds}s without a failure"
    rm -rf "$scratch"
done
