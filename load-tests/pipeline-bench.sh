#!/usr/bin/env bash
# Pipelines (README "Pipelines"), measured in one run on one machine (ratios only mean
# something within one run: the machine is shared):
#   1. one step vs two independent steps vs two chained steps, each lookup 10 ms
#      (memory backend, simulated latency): records/s of `sluice enrich` against C/L
#      (C/(2L) chained), and record latency p50/p99 under capacity (`sluice serve`,
#      /v1/enrich clients; the enrich run's latencies include the wait in the backlog);
#   2. HTTP lookups against a local service, with and without batching: records/s and
#      lookups per POST;
#   3. instructions per record (callgrind, marginal over two input sizes) of the
#      single-lookup form and of the same lookup as a one-step pipeline.
#
#   bash load-tests/pipeline-bench.sh
#   RECORDS=50000 SKIP_CALLGRIND=1 bash load-tests/pipeline-bench.sh   # quicker
set -euo pipefail
cd "$(dirname "$0")/.."
RECORDS=${RECORDS:-100000}
cargo build --release --quiet --bin sluice --example http-load --example lookup-service
BIN=$PWD/target/release/sluice
LOAD=$PWD/target/release/examples/http-load
SERVICE=$PWD/target/release/examples/lookup-service
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"; [ -n "${SVC:-}" ] && kill "$SVC" 2>/dev/null || true' EXIT
TABLE=$PWD/config/sample-users.jsonl

echo "# machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "# date: $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"

$LOAD --generate "$RECORDS" > "$WORK/in.jsonl"
# A second table keyed by country, for the chained step (users -> country -> region).
python3 - "$TABLE" > "$WORK/countries.jsonl" <<'PY'
import json, sys
seen = {}
for line in open(sys.argv[1]):
    line = line.strip()
    if line:
        c = json.loads(line)["country"]
        seen.setdefault(c, len(seen))
for c, i in seen.items():
    print(json.dumps({"country": c, "region": f"r{i % 5}"}))
PY

# Percentiles of latency_ms over the envelopes of a run.
percentiles() {
  python3 - "$1" <<'PY'
import json, sys
lat = sorted(json.loads(l)["latency_ms"] for l in open(sys.argv[1]) if l.strip())
n = len(lat)
print(f"p50 {lat[n // 2]:.1f} ms, p99 {lat[min(n - 1, n * 99 // 100)]:.1f} ms")
PY
}

run() { # name, config file, C/L (records/s)
  local name=$1 cfg=$2 bound=$3 out
  out=$( { /usr/bin/time -f '%e' $BIN enrich --config "$cfg" --input "$WORK/in.jsonl" \
    --output "$WORK/out.jsonl" --dead-letter "$WORK/dead.jsonl" 2>&1 >/dev/null | grep -v INFO | tail -1; } 2>&1 )
  local secs=$out
  local rate
  rate=$(python3 -c "print(round($RECORDS / $secs))")
  printf '%-22s %8s rec/s = %5.1f %% of bound %s/s; %s\n' "$name" "$rate" \
    "$(python3 -c "print(100 * $rate / $bound)")" "$bound" "$(percentiles "$WORK/out.jsonl")"
}

# C = capacity 100 × 2 partitions = 200 records in flight; L = 10 ms per lookup.
common='[pipeline]
partitions = 2
capacity = 100
timeout_ms = 5000'
cat > "$WORK/one.toml" <<TOML
$common
[lookup.memory]
table = "$TABLE"
delay_ms = [10, 10]
TOML
cat > "$WORK/one-step.toml" <<TOML
$common
[lookup.steps.user]
backend = "memory"
table = "$TABLE"
key_column = "user_id"
binds = ["/user_id"]
into = "/user"
delay_ms = [10, 10]
TOML
cat > "$WORK/two-independent.toml" <<TOML
$(cat "$WORK/one-step.toml")
[lookup.steps.again]
backend = "memory"
table = "$TABLE"
key_column = "user_id"
binds = ["/user_id"]
into = "/again"
delay_ms = [10, 10]
TOML
cat > "$WORK/two-chained.toml" <<TOML
$(cat "$WORK/one-step.toml")
[lookup.steps.region]
backend = "memory"
table = "$WORK/countries.jsonl"
key_column = "country"
binds = ["/user/country"]
into = "/region"
delay_ms = [10, 10]
TOML
echo "## latency-bound: $RECORDS records, 10 ms per lookup, capacity 100 x 2 partitions"
run "single lookup" "$WORK/one.toml" 20000
run "one step" "$WORK/one-step.toml" 20000
run "two independent" "$WORK/two-independent.toml" 20000
run "two chained" "$WORK/two-chained.toml" 10000

# Record latency without queueing: `sluice serve`, clients keeping 40 records in flight
# (C = 200) through POST /v1/enrich; latency_ms of the envelopes (acceptance to outcome).
latency_under_capacity() { # name, config file (steps or lookup sections)
  local name=$1 cfg=$2 dir=$WORK/serve
  rm -rf "$dir"; mkdir -p "$dir"
  { cat "$cfg"; printf '[server]\nbind = "127.0.0.1:0"\n[output]\npath = "%s/out.jsonl"\n[dead_letter]\npath = "%s/dead.jsonl"\n[checkpoint]\ndir = "%s/ck"\n' "$dir" "$dir" "$dir"; } > "$dir/serve.toml"
  $BIN serve --config "$dir/serve.toml" > "$dir/stdout" 2>/dev/null &
  local pid=$!
  for _ in $(seq 100); do grep -q listening "$dir/stdout" 2>/dev/null && break; sleep 0.1; done
  local base
  base=$(sed -n 's/^sluice listening on //p' "$dir/stdout")
  for _ in $(seq 100); do curl -sf "$base/readyz" >/dev/null && break; sleep 0.1; done
  python3 - "$base" "$name" <<'PY'
import json, sys, threading, urllib.request
base, name = sys.argv[1], sys.argv[2]
lat, lock = [], threading.Lock()
def client(t):
    for i in range(100):
        body = json.dumps([{"id": f"t{t}-{i}-{j}", "user_id": f"u{(t * 7 + i + j) % 1000 + 1}"} for j in range(5)]).encode()
        req = urllib.request.Request(base + "/v1/enrich", body, {"content-type": "application/json"})
        res = json.load(urllib.request.urlopen(req))["results"]
        with lock:
            lat.extend(e["latency_ms"] for e in res)
threads = [threading.Thread(target=client, args=(t,)) for t in range(8)]
[t.start() for t in threads]; [t.join() for t in threads]
lat.sort(); n = len(lat)
print(f"{name:<22} record latency under capacity ({n} records, 40 in flight): p50 {lat[n // 2]:.1f} ms, p99 {lat[n * 99 // 100]:.1f} ms")
PY
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
latency_under_capacity "single lookup" "$WORK/one.toml"
latency_under_capacity "one step" "$WORK/one-step.toml"
latency_under_capacity "two independent" "$WORK/two-independent.toml"
latency_under_capacity "two chained" "$WORK/two-chained.toml"

echo "## HTTP lookups against a local service (examples/lookup-service), $RECORDS records"
PORT_FILE=$WORK/port
$SERVICE --table "$TABLE" --key user_id --port-file "$PORT_FILE" > "$WORK/service.log" 2>&1 &
SVC=$!
for _ in $(seq 100); do [ -s "$PORT_FILE" ] && break; sleep 0.1; done
PORT=$(cat "$PORT_FILE")
for batch in 0 100; do
  method=GET; url="http://127.0.0.1:$PORT/users/{0}"
  if [ "$batch" -gt 0 ]; then method=POST; url="http://127.0.0.1:$PORT/batch"; fi
  cat > "$WORK/http.toml" <<TOML
[pipeline]
partitions = 2
capacity = 1000
timeout_ms = 20000
[lookup.steps.user]
backend = "http"
url = "$url"
method = "$method"
binds = ["/user_id"]
into = "/user"
concurrency = 64
batch_max_keys = $batch
batch_max_ms = 2
attempt_timeout_ms = 5000
TOML
  before=$(curl -s "http://127.0.0.1:$PORT/stats")
  start=$(date +%s.%N)
  $BIN enrich --config "$WORK/http.toml" --input "$WORK/in.jsonl" --output "$WORK/out.jsonl" \
    --dead-letter "$WORK/dead.jsonl" 2>/dev/null
  end=$(date +%s.%N)
  after=$(curl -s "http://127.0.0.1:$PORT/stats")
  python3 - "$before" "$after" "$start" "$end" "$RECORDS" "$batch" <<'PY'
import json, sys
b, a = json.loads(sys.argv[1]), json.loads(sys.argv[2])
secs = float(sys.argv[4]) - float(sys.argv[3])
n = int(sys.argv[5])
req = a["requests"] - b["requests"]
keys = a["keys"] - b["keys"]
print(f"batch_max_keys={sys.argv[6]:>4}: {n / secs:,.0f} rec/s, {req:,} requests for {keys:,} lookups "
      f"({keys / max(req, 1):.1f} lookups per request)")
PY
done
kill "$SVC"; SVC=

if [ -n "${SKIP_CALLGRIND:-}" ] || ! command -v valgrind >/dev/null; then
  echo "SKIP: instructions per record (valgrind absent or SKIP_CALLGRIND set)"
  exit 0
fi
echo "## instructions per record (callgrind, marginal: (Ir(20k) - Ir(2k)) / 18k), CPU-bound"
$LOAD --generate 2000 > "$WORK/in2k.jsonl"
$LOAD --generate 20000 > "$WORK/in20k.jsonl"
cat > "$WORK/cpu-one.toml" <<TOML
[pipeline]
partitions = 2
capacity = 1000
[lookup.memory]
table = "$TABLE"
TOML
cat > "$WORK/cpu-step.toml" <<TOML
[pipeline]
partitions = 2
capacity = 1000
[lookup.steps.user]
backend = "memory"
table = "$TABLE"
key_column = "user_id"
binds = ["/user_id"]
into = "/user"
TOML
ir() { # config, input -> total instructions (the `summary:` line of the callgrind output)
  valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" "$BIN" enrich --config "$1" \
    --input "$2" --output "$WORK/out.jsonl" --dead-letter "$WORK/dead.jsonl" >/dev/null 2>&1
  awk '/^summary:/ {print $2}' "$WORK/cg.out"
}
for form in one step; do
  small=$(ir "$WORK/cpu-$form.toml" "$WORK/in2k.jsonl")
  large=$(ir "$WORK/cpu-$form.toml" "$WORK/in20k.jsonl")
  printf '%-14s %s instructions per record\n' "$([ $form = one ] && echo 'single lookup' || echo 'one-step')" \
    "$(( (large - small) / 18000 ))"
done
