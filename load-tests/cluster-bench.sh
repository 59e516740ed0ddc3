#!/usr/bin/env bash
# Cluster benchmarks, run on one machine in one go (ratios are only meaningful within one
# run: the machine is shared). One etcd (single member) and three `sluice serve` nodes on
# free loopback ports, each with its own checkpoint dir and sink files; durable ack, memory
# backend without delay, 12 partitions, capacity 1000, backlog 20000, batches of 1,000
# records, 4 connections (CONNECTIONS for figure 1), lease_ttl_ms 2000. Prints one line per figure (indented lines
# are details):
#
#   1. records/s: one standalone node vs three nodes with POSTs to random nodes (a warm-up
#      run each, then RUNS runs alternating between the two; medians and their ratio)
#   2. failover after kill -9 of node-3 while load runs on node-1 and node-2: from the kill
#      until every partition is owned by a live node (GET /v1/cluster on node-1 every 50 ms)
#   3. 503 window of graceful handovers, measured by probes: one key per partition, one
#      single-record POST per key every 10 ms to node-1; the longest run of 503s of a moved
#      partition. Measured when the crashed node-3 rejoins, when node-3 leaves (SIGTERM),
#      and when it joins again (a clean scale-out 2 -> 3)
#   4. rolling restart of all three nodes under load (SIGTERM, exit, restart on the same
#      data dir and config, /readyz 200, next node): the statuses clients saw, then, once
#      every node is quiescent and checkpointed, accepted ids vs emitted lines
#
#   bash load-tests/cluster-bench.sh                 # RECORDS=300000, RUNS=3
#   RECORDS=100000 RUNS=1 bash load-tests/cluster-bench.sh
#   KEEP=1 bash load-tests/cluster-bench.sh          # keep the work dir (logs, sinks, ids)
set -euo pipefail
cd "$(dirname "$0")/.."
RECORDS=${RECORDS:-300000}
RUNS=${RUNS:-3}
# Client connections of figure 1 (the single node and the cluster get the same).
CONNECTIONS=${CONNECTIONS:-4}
LEASE_TTL_MS=${LEASE_TTL_MS:-2000}
KEEP=${KEEP:-0}
export NO_COLOR=1

cargo build --release --quiet --bin sluice --example http-load
BIN=$PWD/target/release/sluice
LOAD=$PWD/target/release/examples/http-load
TABLE=$PWD/config/sample-users.jsonl
WORK=$(mktemp -d /tmp/sluice-cluster-bench.XXXXXX)
PREFIX="/sluice-bench/$$"

declare -A NODE_PID=() PORT=() OFF=()
ETCD_PID="" SERVER="" LOADER="" PROBE=""
cleanup() {
  local p
  for p in "${NODE_PID[@]}" $SERVER $LOADER $PROBE $ETCD_PID; do
    [ -n "$p" ] && kill -KILL "$p" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  if [ "$KEEP" = 1 ]; then echo "# work dir kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "# $*" >&2; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
strip() { sed 's/^http-load: //; s/^http-load probe: //'; }

USED=" "
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 40000))
    case "$USED" in *" $p "*) continue ;; esac
    if [ -z "$(ss -ltnH "( sport = :$p )" 2>/dev/null)" ]; then USED="$USED$p "; echo "$p"; return; fi
  done
}

# wait_http URL TIMEOUT_S: until URL answers 2xx.
wait_http() {
  local until=$((SECONDS + $2))
  while ! curl -sf -o /dev/null --max-time 1 "$1"; do
    [ $SECONDS -ge "$until" ] && { log "timeout waiting for $1"; return 1; }
    sleep 0.05
  done
}

url() { echo "http://127.0.0.1:${PORT[$1]}"; }

node_config() {
  local i=$1
  mkdir -p "$WORK/node-$i"
  cat > "$WORK/node-$i.toml" <<TOML
[server]
bind = "127.0.0.1:${PORT[$i]}"
max_records_per_request = 10000
node = "node-$i"
[pipeline]
partitions = 12
capacity = 1000
backlog = 20000
[lookup.memory]
table = "$TABLE"
delay_ms = [0, 0]
[output]
path = "$WORK/node-$i/out.jsonl"
[dead_letter]
path = "$WORK/node-$i/dead-letter.jsonl"
[checkpoint]
dir = "$WORK/node-$i/checkpoints"
ack = "durable"
[cluster]
enabled = true
node = "node-$i"
etcd = ["http://127.0.0.1:$ETCD_PORT"]
prefix = "$PREFIX"
lease_ttl_ms = $LEASE_TTL_MS
TOML
}

start_node() {
  local i=$1
  echo "--- start $(date -u +%T.%N)" >> "$WORK/node-$i.log"
  $BIN serve --config "$WORK/node-$i.toml" >> "$WORK/node-$i.log" 2>&1 &
  NODE_PID[$i]=$!
}

# owners_ok URL NODE...: every partition has an owner among NODE...; with BALANCED=1 they
# own equal shares (± 1).
owners_ok() {
  local url=$1; shift
  local live; live=$(printf '"%s",' "$@"); live="[${live%,}]"
  curl -sf --max-time 1 "$url/v1/cluster" 2>/dev/null | jq -e --argjson live "$live" --arg bal "${BALANCED:-0}" '
    .partitions as $p
    | ($p | length) == 12
      and ($p | all(.owner as $o | $o != null and ($live | index($o)) != null))
      and (if $bal == "1" then
             ([$live[] as $n | $p | map(select(.owner == $n)) | length] | (max - min) <= 1)
           else true end)' >/dev/null 2>&1
}

wait_owners() {
  local url=$1 limit=$2; shift 2
  local until=$((SECONDS + limit))
  until owners_ok "$url" "$@"; do
    [ $SECONDS -ge "$until" ] && { log "timeout: owners not on [$*]: $(curl -s "$url/v1/cluster" | jq -c '[.partitions[].owner]')"; return 1; }
    sleep 0.05
  done
}

owners() { curl -sf "$(url "$1")/v1/cluster" | jq -c '[.partitions[].owner]'; }
# moved BEFORE AFTER: ids of partitions whose owner differs, comma-separated.
moved() { jq -rn --argjson a "$1" --argjson b "$2" '[range(0; 12) | select($a[.] != $b[.]) | tostring] | join(",")'; }
staged() { curl -sf --max-time 2 "$(url "$1")/metrics" | awk '/^sluice_cluster_staged_records / {print $2}'; }

# Log offsets, so that a phase's handovers can be read from the nodes' logs.
mark() { local i; for i in 1 2 3; do OFF[$i]=$(stat -c %s "$WORK/node-$i.log" 2>/dev/null || echo 0); done; }
handovers() {
  local i
  for i in 1 2 3; do
    tail -c +$((OFF[$i] + 1)) "$WORK/node-$i.log" 2>/dev/null | grep 'partition handed over' \
      | sed -n 's/.*partition=\([0-9]*\).* to=\([^ ]*\) handed=\([0-9]*\) ms=\([0-9]*\).*/p\1 node-'"$i"'->\2 \4 ms (handed \3)/p'
  done | sort -t' ' -k3,3nr | paste -sd, | sed 's/,/, /g'
}

start_probe() { # start_probe NAME URLS
  rm -f "$WORK/stop-$1"
  $LOAD --url "$2" --probe "$PROBE_KEYS" --interval-ms 10 --max-seconds 120 --stop-file "$WORK/stop-$1" \
    --id-prefix "p$1-" --accepted-log "$WORK/acc-p$1.txt" > "$WORK/probe-$1.txt" &
  PROBE=$!
}
stop_probe() { touch "$WORK/stop-$1"; wait "$PROBE" || true; PROBE=; }

# probe_report NAME MOVED: per moved partition "longest 503 run / longest gap between 202
# answers / slowest request" (ms); then the worst of the partitions that stayed.
probe_report() {
  awk -v moved=",$2," -v keys="$WORK/probe-keys.txt" '
    BEGIN { while ((getline l < keys) > 0) { split(l, f, " "); part[f[2]] = f[1] } }
    function num(re, skip, back) { if (match($0, re)) return substr($0, RSTART + skip, RLENGTH - skip - back) + 0; return 0 }
    /^http-load probe: key / {
      key = $4; sub(":", "", key); p = part[key]
      r = num("longest 503 run [0-9.]+ ms", 16, 3)
      g = num("longest gap between 202 answers [0-9.]+ ms", 32, 3)
      s = num("slowest request [0-9.]+ ms", 16, 3)
      e = num("refused [0-9]+", 8, 0) + num("broken [0-9]+", 7, 0)
      if (index(moved, "," p ",")) {
        line = line sprintf("%sp%d %.0f/%.0f/%.0f", (line == "" ? "" : ", "), p, r, g, s)
        if (r > worst) worst = r
      } else {
        if (r > sr) sr = r; if (g > sg) sg = g; if (s > ss) ss = s
      }
      errs += e
    }
    END {
      printf "   moved partitions (longest 503 run / longest gap between 202 answers / slowest request, ms): %s\n", (line == "" ? "none" : line)
      printf "   partitions that stayed: longest 503 run %.0f ms, longest gap between 202 answers %.0f ms, slowest request %.0f ms; probe connection errors %d\n", sr, sg, ss, errs
      printf "WORST %.1f\n", worst
    }' "$WORK/probe-$1.txt" > "$WORK/probe-$1.report"
  grep -v '^WORST' "$WORK/probe-$1.report"
  echo "   probe: $(tail -1 "$WORK/probe-$1.txt" | strip)"
}
probe_worst() { sed -n 's/^WORST //p' "$WORK/probe-$1.report"; }

echo "# machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "# date: $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# setup: ack durable, memory backend delay 0, file sinks, 12 partitions, capacity 1000, backlog 20000, batches of 1000, $CONNECTIONS connections (figure 1), lease_ttl_ms $LEASE_TTL_MS, $RECORDS records per run"

# ---------------------------------------------------------------------------------------
# 1. One standalone node vs three nodes. The standalone node stays up (idle) while the
#    cluster runs, so that the runs can alternate.
cat > "$WORK/single.toml" <<TOML
[server]
bind = "127.0.0.1:0"
max_records_per_request = 10000
[pipeline]
partitions = 12
capacity = 1000
backlog = 20000
[lookup.memory]
table = "$TABLE"
delay_ms = [0, 0]
[output]
path = "$WORK/single/out.jsonl"
[dead_letter]
path = "$WORK/single/dead-letter.jsonl"
[checkpoint]
dir = "$WORK/single/checkpoints"
ack = "durable"
TOML
mkdir -p "$WORK/single"
$BIN serve --config "$WORK/single.toml" > "$WORK/single.out" 2> "$WORK/single.err" &
SERVER=$!
for _ in $(seq 200); do grep -q listening "$WORK/single.out" 2>/dev/null && break; sleep 0.05; done
SINGLE_URL=$(sed -n 's/^sluice listening on //p' "$WORK/single.out")
wait_http "$SINGLE_URL/readyz" 30

# Probe keys: the first of u1, u2, ... in every partition (the hash is the cluster's too).
seq 1 300 | awk '{ printf "{\"user_id\":\"u%d\"}\n", $1 }' > "$WORK/keys.jsonl"
curl -sf "$SINGLE_URL/v1/enrich" -H 'content-type: application/x-ndjson' --data-binary @"$WORK/keys.jsonl" \
  | jq -r '.results[] | "\(.partition) \(.key)"' | sort -n -k1,1 -s | awk '!seen[$1]++' > "$WORK/probe-keys.txt"
PROBE_KEYS=$(awk '{print $2}' "$WORK/probe-keys.txt" | paste -sd,)
[ "$(wc -l < "$WORK/probe-keys.txt")" = 12 ] || { log "probe keys cover only $(wc -l < "$WORK/probe-keys.txt") partitions"; exit 1; }

ETCD_PORT=$(free_port); ETCD_PEER=$(free_port)
for i in 1 2 3; do PORT[$i]=$(free_port); node_config "$i"; done
etcd --name e0 --data-dir "$WORK/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
  --initial-cluster "e0=http://127.0.0.1:$ETCD_PEER" > "$WORK/etcd.log" 2>&1 &
ETCD_PID=$!
wait_http "http://127.0.0.1:$ETCD_PORT/health" 30
for i in 1 2 3; do start_node "$i"; done
for i in 1 2 3; do wait_http "$(url "$i")/readyz" 60; done
BALANCED=1 wait_owners "$(url 1)" 60 node-1 node-2 node-3
ALL3="$(url 1),$(url 2),$(url 3)"

rate() { sed -n '1s/.* = \([0-9]*\) records\/s.*/\1/p' "$1"; }
# Warm-up (the first load after a start is slower on both sides; not counted).
$LOAD --url "$SINGLE_URL" --records "$RECORDS" --batch 1000 --connections "$CONNECTIONS" --tolerate-503 --id-prefix s0- > "$WORK/single-load-0.txt"
$LOAD --url "$ALL3" --records "$RECORDS" --batch 1000 --connections "$CONNECTIONS" --tolerate-503 \
  --id-prefix c0- --accepted-log "$WORK/acc-c0.txt" > "$WORK/cluster-load-0.txt" || true
echo "1. warm-up (not counted): single node $(rate "$WORK/single-load-0.txt") records/s, 3 nodes $(rate "$WORK/cluster-load-0.txt") records/s"
SINGLE_RATES=() CLUSTER_RATES=()
for run in $(seq "$RUNS"); do
  $LOAD --url "$SINGLE_URL" --records "$RECORDS" --batch 1000 --connections "$CONNECTIONS" --tolerate-503 \
    --id-prefix "s$run-" > "$WORK/single-load-$run.txt"
  SINGLE_RATES+=("$(rate "$WORK/single-load-$run.txt")")
  echo "1. single node, run $run: $(head -1 "$WORK/single-load-$run.txt" | strip)"
  $LOAD --url "$ALL3" --records "$RECORDS" --batch 1000 --connections "$CONNECTIONS" --tolerate-503 \
    --id-prefix "c$run-" --accepted-log "$WORK/acc-c$run.txt" > "$WORK/cluster-load-$run.txt" || true
  CLUSTER_RATES+=("$(rate "$WORK/cluster-load-$run.txt")")
  echo "1. 3 nodes, random node per request, run $run: $(head -1 "$WORK/cluster-load-$run.txt" | strip)"
  echo "   $(sed -n 2p "$WORK/cluster-load-$run.txt" | strip)"
done
median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
S=$(median "${SINGLE_RATES[@]}"); C=$(median "${CLUSTER_RATES[@]}")
awk -v s="$S" -v c="$C" -v runs="$RUNS" 'BEGIN {
  printf "1. records/s accepted (median of %d): single node %d, 3 nodes on the same machine %d = %.0f %% of single (target >= 60 %%)\n", runs, s, c, 100 * c / s }'
kill -TERM "$SERVER"; wait "$SERVER" || true; SERVER=

# ---------------------------------------------------------------------------------------
# 2. Failover: load on node-1 and node-2 (and the probes on node-1), kill -9 node-3.
rm -f "$WORK/stop-load2"
$LOAD --url "$(url 1),$(url 2)" --records 100000000 --lazy --batch 1000 --connections 4 --tolerate-503 \
  --max-seconds 120 --stop-file "$WORK/stop-load2" --id-prefix f- --accepted-log "$WORK/acc-f.txt" > "$WORK/failover-load.txt" &
LOADER=$!
start_probe 2 "$(url 1)"
sleep 2
BEFORE=$(owners 1)
T0=$(now)
kill -KILL "${NODE_PID[3]}"; wait "${NODE_PID[3]}" 2>/dev/null || true; NODE_PID[3]=""
POLLS=0
until owners_ok "$(url 1)" node-1 node-2; do
  POLLS=$((POLLS + 1))
  [ $POLLS -gt 1200 ] && { log "failover: not done after 60 s: $(owners 1)"; break; }
  sleep 0.05
done
FAILOVER=$(elapsed "$T0" "$(now)")
AFTER_FAILOVER=$(owners 1)
sleep 2
touch "$WORK/stop-load2"; wait "$LOADER" || true; LOADER=
stop_probe 2
awk -v f="$FAILOVER" -v ttl="$LEASE_TTL_MS" 'BEGIN {
  printf "2. failover after kill -9 (load on the 2 others, lease_ttl_ms %d): %.2f s from the kill until every partition is owned by a live node (target <= %.1f s)\n", ttl, f, ttl / 1000 + 2 }'
echo "   load during failover: $(head -1 "$WORK/failover-load.txt" | strip)"
echo "   $(sed -n 2p "$WORK/failover-load.txt" | strip)"
probe_report 2 "$(moved "$BEFORE" "$AFTER_FAILOVER")"
sleep 3
echo "   acknowledged records still held on the survivors for the dead node, 5 s after the failover (sluice_cluster_staged_records): node-1 $(staged 1), node-2 $(staged 2)"
# One single-record POST per key to each survivor, all at once: which are slow now?
CURLS=()
for i in 1 2; do
  while read -r part key; do
    curl -s -o "$WORK/h-$i-$key.json" -w "node-$i $key p$part %{http_code} %{time_total}\n" "$(url "$i")/v1/records" \
      -H 'content-type: application/json' -d "[{\"id\":\"h-$i-$key\",\"user_id\":\"$key\"}]" > "$WORK/h-$i-$key.txt" &
    CURLS+=($!)
  done < "$WORK/probe-keys.txt"
done
wait "${CURLS[@]}" || true
cat "$WORK"/h-*.txt > "$WORK/after-failover-posts.txt"
awk '$4 == 202 { print "h-" substr($1, 6) "-" $2 }' "$WORK/after-failover-posts.txt" > "$WORK/acc-h.txt"
: > "$WORK/acc-h.txt.doubt"
echo "   single-record POSTs to the survivors 5 s after the failover, one per partition and node: $(awk '{ n++; if ($4 != 202) bad++; if ($5 > 0.5) slow = slow sprintf(" %s %s %s %.2f s;", $1, $3, $4, $5) } END { printf "%d sent, %d not 202; slower than 0.5 s:%s", n, bad, (slow == "" ? " none" : slow) }' "$WORK/after-failover-posts.txt")"

# ---------------------------------------------------------------------------------------
# Start node-3 (again) while probes run on node-1; sets T0 (start), T1 (ready), T2
# (balanced) and PR (the probe report of the partitions that moved).
join_node3() {
  mark; start_probe "$1" "$(url 1)"; sleep 1
  BEFORE=$(owners 1)
  T0=$(now)
  start_node 3
  wait_http "$(url 3)/readyz" 60; T1=$(now)
  BALANCED=1 wait_owners "$(url 1)" 60 node-1 node-2 node-3; T2=$(now)
  sleep 1; stop_probe "$1"
  PR=$(probe_report "$1" "$(moved "$BEFORE" "$(owners 1)")")
}

# 3. 503 windows of handovers, probed on node-1.
# 3a. node-3 restarts on its data dir after the crash and rejoins.
sleep 5
echo "   ... still held 10 s after the failover, just before node-3 restarts: node-1 $(staged 1), node-2 $(staged 2)"
join_node3 3a
echo "3. rejoin after the crash (node-3 restarted on its data dir): ready $(elapsed "$T0" "$T1") s after start, balanced after $(elapsed "$T0" "$T2") s; longest 503 run of a moved partition $(probe_worst 3a) ms"
echo "   handovers (from the logs): $(handovers)"
echo "$PR"
echo "   held for other nodes afterwards: node-1 $(staged 1), node-2 $(staged 2), node-3 $(staged 3)"

# 3b. node-3 leaves gracefully (3 -> 2), then joins again (2 -> 3): clean handovers.
sleep 1
mark; start_probe 3b "$(url 1)"; sleep 1
BEFORE=$(owners 1)
T0=$(now)
kill -TERM "${NODE_PID[3]}"; wait "${NODE_PID[3]}" || log "node-3 exited with $?"; T1=$(now); NODE_PID[3]=""
BALANCED=1 wait_owners "$(url 1)" 60 node-1 node-2; T2=$(now)
sleep 1; stop_probe 3b
PR=$(probe_report 3b "$(moved "$BEFORE" "$(owners 1)")")
echo "3. graceful leave 3 -> 2 (SIGTERM node-3): exited after $(elapsed "$T0" "$T1") s, balanced after $(elapsed "$T0" "$T2") s; longest 503 run of a moved partition $(probe_worst 3b) ms"
echo "   handovers: $(handovers)"
echo "$PR"
sleep 1
join_node3 3c
echo "3. 503 window of a graceful handover (scale-out 2 -> 3, node-3 joins): longest continuous 503 run of a moved partition $(probe_worst 3c) ms (target < 500 ms); node-3 ready after $(elapsed "$T0" "$T1") s, balanced after $(elapsed "$T0" "$T2") s"
echo "   handovers: $(handovers)"
echo "$PR"

# ---------------------------------------------------------------------------------------
# 4. Rolling restart under load (load and probes to all three nodes).
sleep 1
rm -f "$WORK/stop-load4"
$LOAD --url "$ALL3" --records 100000000 --lazy --batch 1000 --connections 4 --tolerate-503 \
  --max-seconds 300 --stop-file "$WORK/stop-load4" --id-prefix rr- --accepted-log "$WORK/acc-rr.txt" > "$WORK/rolling-load.txt" &
LOADER=$!
mark; start_probe 4 "$ALL3"
sleep 2
BEFORE=$(owners 1)
T=$(now)
for i in 1 2 3; do
  TA=$(now)
  kill -TERM "${NODE_PID[$i]}"; wait "${NODE_PID[$i]}" || log "node-$i exited with $?"
  TB=$(now)
  start_node "$i"
  wait_http "$(url "$i")/readyz" 60
  TC=$(now)
  echo "4. rolling restart: node-$i exited $(elapsed "$TA" "$TB") s after SIGTERM, ready $(elapsed "$TB" "$TC") s after restart"
done
TR=$(elapsed "$T" "$(now)")
BALANCED=1 wait_owners "$(url 1)" 60 node-1 node-2 node-3 || true
TB=$(elapsed "$T" "$(now)")
sleep 2
touch "$WORK/stop-load4"; wait "$LOADER" || true; LOADER=
stop_probe 4
echo "4. rolling restart of 3 nodes under load: $TR s (balanced after $TB s); clients saw: $(sed -n 2p "$WORK/rolling-load.txt" | strip)"
echo "   load: $(head -1 "$WORK/rolling-load.txt" | strip)"
echo "   handovers: $(handovers)"
probe_report 4 "0,1,2,3,4,5,6,7,8,9,10,11"

# Quiesce: nothing pending or staged anywhere, then a checkpoint on each node commits the sinks.
T=$(now)
QUIET=0
for _ in $(seq 1200); do
  busy=0
  for i in 1 2 3; do
    p=$(curl -sf "$(url "$i")/v1/status" | jq -r .pending)
    [ "$p" = 0 ] && [ "$(staged "$i")" = 0 ] || busy=1
  done
  [ $busy = 0 ] && { QUIET=1; break; }
  sleep 0.05
done
if [ $QUIET = 0 ]; then
  for i in 1 2 3; do
    log "node-$i not quiescent after 60 s: pending $(curl -s "$(url "$i")/v1/status" | jq -c '[.pending, [.partitions[] | select(.in_flight + .backlog > 0)]]'), staged $(staged "$i")"
  done
fi
for i in 1 2 3; do curl -sf -X POST "$(url "$i")/v1/checkpoint" > /dev/null || log "checkpoint on node-$i failed"; done
echo "   quiescent (pending 0, staged 0 on every node) $(elapsed "$T" "$(now)") s after the load stopped"

# Accepted vs emitted, per phase (ids carry the phase's prefix).
# Envelopes start with {"id":…,"partition":…,"seq":…: keep "id partition seq".
cat "$WORK"/node-*/out.jsonl "$WORK"/node-*/dead-letter.jsonl 2>/dev/null \
  | cut -d, -f1-3 | tr -d '{}"' | sed 's/^id://; s/,partition:/ /; s/,seq:/ /' > "$WORK/emitted-ips.txt"
cut -d' ' -f1 "$WORK/emitted-ips.txt" > "$WORK/emitted-all.txt"
report() { # report ID-REGEX ACCEPTED-FILES...
  local re=$1; shift
  sort -u "$@" > "$WORK/acc.sorted"
  cat "${@/%/.doubt}" 2>/dev/null | sort -u > "$WORK/doubt.sorted"
  { grep -E "$re" "$WORK/emitted-all.txt" || true; } | sort > "$WORK/emi.sorted"
  uniq "$WORK/emi.sorted" > "$WORK/emi.uniq"
  local n m d miss extra extra_doubt
  n=$(wc -l < "$WORK/acc.sorted"); m=$(wc -l < "$WORK/emi.sorted")
  d=$((m - $(wc -l < "$WORK/emi.uniq")))
  miss=$(comm -23 "$WORK/acc.sorted" "$WORK/emi.uniq" | wc -l)
  comm -13 "$WORK/acc.sorted" "$WORK/emi.uniq" > "$WORK/extra.txt"
  extra=$(wc -l < "$WORK/extra.txt")
  extra_doubt=$(comm -12 "$WORK/extra.txt" "$WORK/doubt.sorted" | wc -l)
  echo "accepted $n, emitted $m, duplicates $d; accepted but not emitted $miss; emitted but not accepted $extra ($extra_doubt of them in doubt at the client)"
  [ "$miss" -gt 0 ] && log "accepted but not emitted ($re), first 5: $(comm -23 "$WORK/acc.sorted" "$WORK/emi.uniq" | head -5 | paste -sd' ')"
  [ "$d" -gt 0 ] && log "duplicated ($re), first 5: $(uniq -d "$WORK/emi.sorted" | head -5 | paste -sd' ')"
  [ "$extra" -gt 0 ] && log "emitted but not accepted ($re), first 5: $(head -5 "$WORK/extra.txt" | paste -sd' ')"
  return 0
}
echo "4. after the rolling restart (every node quiescent and checkpointed): $(report '^rr-' "$WORK/acc-rr.txt")"
echo "   all cluster phases together (1-4, kill -9 included): $(report '^(c[0-9]+|f|h|p[0-9a-c]+|rr)-' "$WORK"/acc-c*.txt "$WORK/acc-f.txt" "$WORK/acc-h.txt" "$WORK"/acc-p*.txt "$WORK/acc-rr.txt")"
SEQDUP=$(awk '{ print $2, $3 }' "$WORK/emitted-ips.txt" | sort | uniq -d | wc -l)
# Each probe key is sent sequentially (the next POST after the previous answer), so its
# records must come out in that order (mode "ordered": seq order within the partition).
ORDER=$(awk '$1 ~ /^p[0-9a-c]+-u[0-9]+-[0-9]+$/ { split($1, a, "-"); print a[1] "-" a[2], a[3], $3 }' "$WORK/emitted-ips.txt" \
  | sort -k1,1 -k2,2n | awk '
    { if ($1 == k && $3 < s) { bad++; if (first == "") first = sprintf("%s-%d (accepted first) has seq %s, %s-%d has seq %s", $1, n, s, $1, $2, $3) } }
    $1 != k { keys++ }
    { k = $1; s = $3; n = $2 }
    END { printf "%d inversions over %d probe keys x phases%s", bad, keys, (bad ? "; first: " first : "") }')
echo "   (partition, seq) pairs emitted twice: $SEQDUP; per-key order of the probes (each key sent sequentially): $ORDER"
for i in 1 2 3; do
  kill -TERM "${NODE_PID[$i]}" 2>/dev/null || true; wait "${NODE_PID[$i]}" 2>/dev/null || true; NODE_PID[$i]=""
done
grep -h -E ' (ERROR|WARN) ' "$WORK"/node-*.log 2>/dev/null | sed 's/\x1b\[[0-9;]*m//g; s/^[^ ]* *//; s/ partition=[0-9]*//; s/ node=node-[0-9]//; s/ lease=[0-9]*//; s/ owned=[0-9]*//' \
  | cut -c1-200 | sort | uniq -c | sort -rn | head -12 | sed 's/^ */# node log (count, message): /' >&2 || true
