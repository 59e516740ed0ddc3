#!/usr/bin/env bash
# Benchmarks of issue #3, run on one machine in one go (ratios are only meaningful within
# one run: the machine is shared). Prints one line per figure; BENCHMARKS.md records them.
#
#   bash load-tests/bench.sh            # full run (1M records)
#   RECORDS=200000 bash load-tests/bench.sh   # quicker
set -euo pipefail
cd "$(dirname "$0")/.."
RECORDS=${RECORDS:-1000000}
cargo build --release --quiet --bin sluice --example http-load --example cql-bench
BIN=target/release/sluice
LOAD=target/release/examples/http-load
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"; [ -n "${SERVER:-}" ] && kill "$SERVER" 2>/dev/null || true' EXIT
TABLE=$PWD/config/sample-users.jsonl

echo "# machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "# date: $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"

$LOAD --generate "$RECORDS" > "$WORK/in.jsonl"
$LOAD --generate 100000 > "$WORK/in100k.jsonl"

cat > "$WORK/cpu.toml" <<TOML
[pipeline]
partitions = 2
capacity = 1000
[lookup.memory]
table = "$TABLE"
TOML
for mode in ordered unordered key_ordered; do
  for run in 1 2 3; do
    printf 'enrich cpu-bound mode=%s run=%s: ' "$mode" "$run"
    SLUICE__PIPELINE__MODE=$mode /usr/bin/time -f '(%e s wall, %U s user, %S s sys, max RSS %M KB)' \
      $BIN enrich --config "$WORK/cpu.toml" --input "$WORK/in.jsonl" --output "$WORK/out.jsonl" \
      --dead-letter "$WORK/dead.jsonl" 2>&1 | grep -v INFO | sed 's/^sluice enrich: //' | tr '\n' ' '
    echo
  done
done

cat > "$WORK/lat.toml" <<TOML
[pipeline]
partitions = 2
capacity = 100
[lookup.memory]
table = "$TABLE"
delay_ms = [10, 10]
TOML
for mode in ordered unordered; do
  printf 'enrich latency-bound delay=10ms C=200 (C/L = 20000/s) mode=%s: ' "$mode"
  SLUICE__PIPELINE__MODE=$mode $BIN enrich --config "$WORK/lat.toml" --input "$WORK/in100k.jsonl" \
    --output "$WORK/out.jsonl" --dead-letter "$WORK/dead.jsonl" 2>&1 | grep -v INFO | sed 's/^sluice enrich: //'
done

for ack in durable received; do
  cat > "$WORK/http.toml" <<TOML
[server]
bind = "127.0.0.1:0"
max_records_per_request = 10000
[pipeline]
partitions = 4
capacity = 1000
backlog = 20000
[lookup.memory]
table = "$TABLE"
[output]
path = "$WORK/http-out.jsonl"
[dead_letter]
path = "$WORK/http-dead.jsonl"
[checkpoint]
dir = "$WORK/checkpoints"
ack = "$ack"
TOML
  rm -f "$WORK/http-out.jsonl"
  $BIN serve --config "$WORK/http.toml" > "$WORK/serve.out" 2> "$WORK/serve.err" &
  SERVER=$!
  for _ in $(seq 100); do grep -q listening "$WORK/serve.out" 2>/dev/null && break; sleep 0.05; done
  URL=$(sed -n 's/^sluice listening on //p' "$WORK/serve.out")
  printf 'http ingest ack=%s batch=1000 connections=4: ' "$ack"
  T0=$(date +%s.%N)
  $LOAD --url "$URL" --records "$RECORDS" --batch 1000 --connections 4 | sed 's/^http-load: //'
  for _ in $(seq 2000); do
    P=$(curl -s "$URL/v1/status" | sed -n 's/.*"pending":\([0-9]*\).*/\1/p')
    [ "$P" = "0" ] && break; sleep 0.01
  done
  T1=$(date +%s.%N)
  awk -v n="$RECORDS" -v a="$T0" -v b="$T1" \
    'BEGIN { printf "  end to end (first request to pending = 0): %.2f s = %.0f records/s\n", b - a, n / (b - a) }'
  FSYNCS=$(curl -s "$URL/metrics" | awk '/^sluice_journal_fsyncs_total/ {print $2}')
  awk -v f="$FSYNCS" -v a="$T0" -v b="$T1" 'BEGIN { printf "  journal fsyncs: %d (%.0f/s)\n", f, f / (b - a) }'
  echo "  server max RSS: $(awk '/VmHWM/ {print $2, $3}' /proc/$SERVER/status)"
  kill -TERM "$SERVER"; wait "$SERVER" || true; SERVER=
  echo "  emitted lines: $(wc -l < "$WORK/http-out.jsonl")"
done

# Sustained overload: a 20k records/s pipeline (10 ms lookups, capacity 100, 2 partitions)
# offered as much as 4 connections can send for 20 s; RSS sampled every 2 s must stay flat.
cat > "$WORK/overload.toml" <<TOML
[server]
bind = "127.0.0.1:0"
[pipeline]
partitions = 2
capacity = 100
backlog = 5000
[lookup.memory]
table = "$TABLE"
delay_ms = [10, 10]
[output]
path = "$WORK/o-out.jsonl"
[dead_letter]
path = "$WORK/o-dead.jsonl"
[checkpoint]
dir = "$WORK/o-checkpoints"
TOML
$BIN serve --config "$WORK/overload.toml" > "$WORK/o.out" 2> "$WORK/o.err" &
SERVER=$!
for _ in $(seq 100); do grep -q listening "$WORK/o.out" 2>/dev/null && break; sleep 0.05; done
URL=$(sed -n 's/^sluice listening on //p' "$WORK/o.out")
for _ in $(seq 200); do curl -sf "$URL/readyz" >/dev/null && break; sleep 0.05; done
$LOAD --url "$URL" --records 5000000 --batch 1000 --connections 4 --max-seconds 20 > "$WORK/o-load.txt" &
LOADER=$!
RSS=""
for _ in $(seq 10); do sleep 2; RSS="$RSS $(awk '/VmRSS/ {print int($2/1024)}' /proc/$SERVER/status)"; done
wait "$LOADER" || true
echo "overload (capacity 20000 records/s, offered as fast as 4 connections go, 20 s): $(sed 's/^http-load: //' "$WORK/o-load.txt")"
echo "  server RSS every 2 s (MB):$RSS"
kill -TERM "$SERVER"; wait "$SERVER" || true; SERVER=

# CQL: sluice's lookup rate next to a raw driver loop, same node, latency and concurrency.
for latency in 2 10; do
  SLUICE_BIN=$BIN target/release/examples/cql-bench --records 100000 --latency-ms "$latency" --concurrency 200
done

# Restore: PENDING records held pending (a 1 h lookup delay), checkpointed, then kill -9
# and a timed restart until /readyz answers 200.
PENDING=${PENDING:-1000000}
cat > "$WORK/restore.toml" <<TOML
[server]
bind = "127.0.0.1:0"
max_records_per_request = 10000
[pipeline]
partitions = 4
capacity = 1
backlog = $((PENDING / 2))
timeout_ms = 7200000
[lookup]
attempt_timeout_ms = 7200000
[lookup.memory]
table = "$TABLE"
delay_ms = [3600000, 3600000]
[output]
path = "$WORK/r-out.jsonl"
[dead_letter]
path = "$WORK/r-dead.jsonl"
[checkpoint]
dir = "$WORK/r-checkpoints"
interval_ms = 600000
TOML
start_server() {
  $BIN serve --config "$WORK/restore.toml" > "$WORK/r.out" 2> "$WORK/r.err" &
  SERVER=$!
  for _ in $(seq 400); do grep -q listening "$WORK/r.out" 2>/dev/null && break; sleep 0.05; done
  URL=$(sed -n 's/^sluice listening on //p' "$WORK/r.out")
}
start_server
for _ in $(seq 400); do curl -sf "$URL/readyz" >/dev/null && break; sleep 0.05; done
$LOAD --url "$URL" --records "$PENDING" --batch 10000 --connections 2 > /dev/null
curl -s -X POST "$URL/v1/checkpoint" > "$WORK/cp.json"
kill -9 "$SERVER"; wait "$SERVER" 2>/dev/null || true
SNAP=$(ls "$WORK/r-checkpoints"/*.snap | tail -1)
SNAP_BYTES=$(stat -c %s "$SNAP")
printf 'snapshot of %s pending records: %s bytes (%.0f bytes per record)\n' "$PENDING" "$SNAP_BYTES" \
  "$(awk -v b="$SNAP_BYTES" -v n="$PENDING" 'BEGIN { print b / n }')"
echo "checkpoint took: $(sed -n 's/.*"duration_ms":\([0-9.]*\).*/\1/p' "$WORK/cp.json") ms"
T0=$(date +%s.%N)
start_server
for _ in $(seq 6000); do curl -sf "$URL/readyz" >/dev/null && break; sleep 0.01; done
T1=$(date +%s.%N)
awk -v a="$T0" -v b="$T1" -v n="$PENDING" 'BEGIN { printf "restore of %d pending records: %.2f s from start to ready\n", n, b - a }'
echo "  restored: $(curl -s "$URL/v1/status" | sed -n 's/.*"pending":\([0-9]*\).*/\1/p') pending; server max RSS: $(awk '/VmHWM/ {print $2, $3}' /proc/$SERVER/status)"
kill -9 "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=
