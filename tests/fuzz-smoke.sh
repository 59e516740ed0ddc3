#!/usr/bin/env bash
# Fuzz smoke test: builds every cargo-fuzz target in fuzz/ once, then runs each for a few
# seconds (SLUICE_FUZZ_SECONDS, default 5) on a copy of its committed seed corpus, and
# prints one line per target. Any crash, panic, timeout or out-of-memory fails the script
# and names the reproducing input (kept under fuzz/artifacts/<target>/).
#
# Needs the nightly toolchain (libFuzzer's instrumentation); without it the script says
# SKIP and succeeds. Installs cargo-fuzz when `cargo fuzz` is missing.
#
#   tests/fuzz-smoke.sh                          # 5 s per target
#   SLUICE_FUZZ_SECONDS=60 tests/fuzz-smoke.sh   # longer
#
# The build is `--dev --sanitizer none` (see fuzz/README.md "Build flags"): safe Rust needs
# no AddressSanitizer to turn memory errors into crashes, debug assertions make integer
# overflow on input values a crash instead of a silent wrap, and an unoptimized build costs
# about 40 % less CPU to compile than `-O` — a smoke run is about the targets still building
# and running, not about executions per second (long runs use `-O`, fuzz/README.md).
set -euo pipefail

cd "$(dirname "$0")/.."
seconds="${SLUICE_FUZZ_SECONDS:-5}"
case "$seconds" in
'' | *[!0-9]*)
    echo "SLUICE_FUZZ_SECONDS must be a whole number of seconds, got '$seconds'" >&2
    exit 2
    ;;
esac

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "SKIP fuzz smoke: no nightly toolchain (rustup toolchain install nightly)"
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz smoke: installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi

started=$(date +%s)
build_flags=(--dev --sanitizer none --target-dir fuzz/target)
cargo +nightly fuzz build "${build_flags[@]}"
triple=$(rustc +nightly -vV | sed -n 's/^host: //p')
bin_dir="fuzz/target/$triple/debug"
echo "fuzz smoke: built in $(($(date +%s) - started)) s"

work=$(mktemp -d "${TMPDIR:-/tmp}/sluice-fuzz-smoke.XXXXXX")
trap 'rm -rf "$work"' EXIT

failed=0
for target in $(cargo +nightly fuzz list); do
    corpus="$work/$target/corpus"
    artifacts="fuzz/artifacts/$target/"
    mkdir -p "$corpus" "$artifacts"
    if [ -d "fuzz/corpus/$target" ]; then
        cp -R "fuzz/corpus/$target/." "$corpus/"
    fi
    log="$work/$target/log"
    t0=$(date +%s.%N)
    status=0
    # TMPDIR: the targets' scratch files go where the trap removes them.
    TMPDIR="$work/$target" "$bin_dir/$target" "$corpus" \
        -max_total_time="$seconds" -print_final_stats=1 -timeout=30 -rss_limit_mb=2048 \
        -artifact_prefix="$artifacts" >"$log" 2>&1 || status=$?
    elapsed=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    if [ "$status" -eq 0 ]; then
        printf 'fuzz %s: %s executions in %.1f s, 0 crashes\n' "$target" "${execs:-?}" "$elapsed"
    else
        failed=1
        artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
        printf 'fuzz %s: FAILED (exit %s) after %s executions in %.1f s\n' \
            "$target" "$status" "${execs:-?}" "$elapsed"
        grep -E -m 4 -A 3 "panicked at|ERROR: libFuzzer" "$log" | grep -v "^ *[0-9]*: \|stack backtrace" |
            sed 's/^/    /' || true
        echo "    reproduce: $bin_dir/$target ${artifact:-<no artifact written; see the log above>}"
        if [ -n "$artifact" ]; then
            echo "    artifact: $artifact"
        fi
    fi
done

echo "fuzz smoke: done in $(($(date +%s) - started)) s"
exit "$failed"
