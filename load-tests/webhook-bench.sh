#!/usr/bin/env bash
# Webhook sink benchmark, run on one machine in one go (ratios are only meaningful within
# one run: the machine is shared). Durable HTTP ingest (ack = "durable", 4 partitions,
# capacity 1000, backlog 20000, memory lookup backend), $RECORDS records sent by http-load
# (--batch 1000 --connections 4), measured end to end (first request to /v1/status
# pending = 0; a record is pending until its sink reported it delivered) into:
#   (a) the file sink (baseline),
#   (b) the webhook sink, batch_max_records = 100,
#   (c) the webhook sink, batch_max_records = 1000,
# both webhook cases with batch_max_ms = 50, concurrency = 4, POSTing to a local counting
# receiver (load-tests/webhook_receiver.rs, a fresh one per run) whose envelope count must
# reach the record count (at least once: ≥; below it is a lost record).
#
# Cases run in ROUNDS interleaved rounds (a b c, a b c, …) so that a burst of other work on
# the machine hits one run, not one case; the summary gives each case's median and the
# median of the per-round ratios to (a). Each run also prints the CPU the server used and
# what else the machine did meanwhile ("other"), to tell a slow sink from a busy machine.
#
#   bash load-tests/webhook-bench.sh                  # full run (1M records, 5 rounds)
#   RECORDS=200000 ROUNDS=1 bash load-tests/webhook-bench.sh   # quicker
#   WEBHOOK_EXTRA="1000:50:8 500:100:4" bash load-tests/webhook-bench.sh
#       # more webhook cases, batch_max_records:batch_max_ms:concurrency each
set -euo pipefail
cd "$(dirname "$0")/.."
RECORDS=${RECORDS:-1000000}
ROUNDS=${ROUNDS:-5}
WEBHOOK_EXTRA=${WEBHOOK_EXTRA:-}
cargo build --release --quiet --bin sluice --example http-load --example webhook-receiver
TABLE=$PWD/config/sample-users.jsonl
WORK=$(mktemp -d)
# Copies, so that a rebuild in target/ while this runs does not change what is measured.
mkdir "$WORK/bin"
cp target/release/sluice target/release/examples/http-load target/release/examples/webhook-receiver "$WORK/bin/"
BIN=$WORK/bin/sluice
LOAD=$WORK/bin/http-load
RECEIVER_BIN=$WORK/bin/webhook-receiver
SERVER=
RECEIVER=
LOADER=
# stop PID NAME: SIGTERM, then SIGKILL if it has not exited within 30 s (said so).
stop() {
  kill -TERM "$1" 2>/dev/null || true
  for _ in $(seq 300); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$1" 2>/dev/null; then
    echo "  $2 (pid $1) still running 30 s after SIGTERM: killed"
    kill -KILL "$1" 2>/dev/null || true
  fi
  wait "$1" 2>/dev/null || true
}
cleanup() {
  if [ -n "$LOADER" ]; then pkill -P "$LOADER" 2>/dev/null || true; kill "$LOADER" 2>/dev/null || true; fi
  if [ -n "$SERVER" ]; then stop "$SERVER" sluice; fi
  if [ -n "$RECEIVER" ]; then stop "$RECEIVER" webhook-receiver; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
HZ=$(getconf CLK_TCK)
CORES=$(nproc)

echo "# machine: $CORES cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "# date: $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src Cargo.toml 2>/dev/null || echo ' + uncommitted changes in src/')"
echo "# sluice binary sha256 $(sha256sum "$BIN" | cut -c1-12)"
echo "# $RECORDS records, http-load --batch 1000 --connections 4; ack = durable, 4 partitions, capacity 1000, backlog 20000; $ROUNDS rounds; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

# Busy CPU ticks of the whole machine so far.
machine_busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
# CPU ticks (user + system) a live process used so far.
proc_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }

# Wait until FILE has a "listening" line (at most 10 s); print what follows PREFIX on it.
listening_url() {
  local file=$1 prefix=$2
  for _ in $(seq 200); do grep -q listening "$file" 2>/dev/null && break; sleep 0.05; done
  sed -n "s|^$prefix||p" "$file"
}

# Case table: label and [output] section of each case.
LABELS=()
OUTPUTS=()
add_case() { LABELS+=("$1"); OUTPUTS+=("$2"); }
add_case "(a) file sink" "[output]
kind = \"file\"
path = \"$WORK/out.jsonl\""
webhook_output() {
  printf '[output]\nkind = "webhook"\n[output.webhook]\nurl = "@RECEIVER@/ingest"\n'
  printf 'batch_max_records = %s\nbatch_max_ms = %s\nconcurrency = %s\n' "$1" "$2" "$3"
  printf 'timeout_ms = 5000\ninitial_backoff_ms = 100\nmax_backoff_ms = 10000\n'
}
add_case "(b) webhook batch_max_records=100 batch_max_ms=50 concurrency=4" "$(webhook_output 100 50 4)"
add_case "(c) webhook batch_max_records=1000 batch_max_ms=50 concurrency=4" "$(webhook_output 1000 50 4)"
for extra in $WEBHOOK_EXTRA; do
  IFS=: read -r r ms conc <<< "$extra"
  add_case "(+) webhook batch_max_records=$r batch_max_ms=$ms concurrency=$conc" "$(webhook_output "$r" "$ms" "$conc")"
done

declare -A RATE RSS CPU_US PROBLEMS
PROBLEMS_ANY=0

# run CASE ROUND: one durable ingest of $RECORDS records into case CASE's sink.
run() {
  local i=$1 round=$2 output=${OUTPUTS[$1]} webhook=0
  rm -rf "$WORK/checkpoints" "$WORK/out.jsonl" "$WORK/dead.jsonl"
  echo "${LABELS[$i]}, round $round:"
  if [[ $output == *@RECEIVER@* ]]; then
    webhook=1
    rm -f "$WORK/recv.out" "$WORK/recv.err" # so a stale "listening" line is never read
    $RECEIVER_BIN --bind 127.0.0.1:0 > "$WORK/recv.out" 2> "$WORK/recv.err" &
    RECEIVER=$!
    RECEIVER_URL=$(listening_url "$WORK/recv.out" 'webhook-receiver listening on ')
    [ -n "$RECEIVER_URL" ] || { echo "webhook-receiver did not start:"; cat "$WORK/recv.err"; exit 1; }
    output=${output//@RECEIVER@/$RECEIVER_URL}
  fi
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
$output
[dead_letter]
path = "$WORK/dead.jsonl"
[checkpoint]
dir = "$WORK/checkpoints"
ack = "durable"
TOML
  rm -f "$WORK/serve.out" "$WORK/serve.err"
  $BIN serve --config "$WORK/http.toml" > "$WORK/serve.out" 2> "$WORK/serve.err" &
  SERVER=$!
  URL=$(listening_url "$WORK/serve.out" 'sluice listening on ')
  [ -n "$URL" ] || { echo "sluice did not start:"; cat "$WORK/serve.err"; exit 1; }
  for _ in $(seq 200); do curl -sf "$URL/readyz" >/dev/null && break; sleep 0.05; done

  local busy0 srv0 rcv0=0 t_load secs p="" deadline t1 busy1
  local tb0
  tb0=$(date +%s.%N); busy0=$(machine_busy); srv0=$(proc_ticks "$SERVER")
  if [ $webhook = 1 ]; then rcv0=$(proc_ticks "$RECEIVER"); fi
  # In the background, so that a signal to this script is handled at once.
  /usr/bin/time -f '%U %S' -o "$WORK/load.time" \
    $LOAD --url "$URL" --records "$RECORDS" --batch 1000 --connections 4 > "$WORK/load.out" 2> "$WORK/load.err" &
  LOADER=$!
  if ! wait "$LOADER"; then
    echo "  http-load FAILED; its errors, counted:"; sort "$WORK/load.err" | uniq -c | sort -rn | head -5
    PROBLEMS[$i]+="http-load failed; "; PROBLEMS_ANY=1
  fi
  LOADER=
  t_load=$(date +%s.%N)
  sed 's/^http-load: /  ingest: /' "$WORK/load.out"
  # The load generator builds its bodies before its clock starts: the first request went
  # out its own measured duration before it exited.
  secs=$(sed -n 's/.* records in \([0-9.]*\) s .*/\1/p' "$WORK/load.out" | head -1)
  deadline=$(($(date +%s) + 600))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    p=$(curl -s "$URL/v1/status" | sed -n 's/.*"pending":\([0-9]*\).*/\1/p' || true)
    [ "$p" = "0" ] && break
    if ! kill -0 "$SERVER" 2>/dev/null; then
      echo "  SLUICE EXITED before pending reached 0; its stderr ends:"; tail -5 "$WORK/serve.err"
      PROBLEMS[$i]+="server exited; "; PROBLEMS_ANY=1; p=exited; break
    fi
    sleep 0.01
  done
  t1=$(date +%s.%N)
  busy1=$(machine_busy)
  local srv rcv load_cpu e2e
  srv=$(( $(proc_ticks "$SERVER") - srv0 ))
  rcv=0; if [ $webhook = 1 ]; then rcv=$(( $(proc_ticks "$RECEIVER") - rcv0 )); fi
  load_cpu=$(awk '{ print $1 + $2 }' "$WORK/load.time" 2>/dev/null | tail -1)
  e2e=$(awk -v l="$t_load" -v s="${secs:-0}" -v b="$t1" 'BEGIN { printf "%.3f", b - (l - s) }')
  if [ "$p" != "0" ]; then
    if [ "$p" != exited ]; then
      echo "  PENDING NEVER REACHED 0 (still $p after 600 s); /v1/status: $(curl -s "$URL/v1/status")"
      PROBLEMS[$i]+="pending stuck at $p; "; PROBLEMS_ANY=1
    fi
    RATE[$i,$round]=0
  else
    RATE[$i,$round]=$(awk -v n="$RECORDS" -v t="$e2e" 'BEGIN { printf "%.0f", n / t }')
    echo "  end to end (first request to pending = 0): $e2e s = ${RATE[$i,$round]} records/s"
  fi
  CPU_US[$i,$round]=$(awk -v t="$srv" -v hz="$HZ" -v n="$RECORDS" 'BEGIN { printf "%.2f", t / hz * 1e6 / n }')
  awk -v t0="$tb0" -v t1="$t1" -v m="$((busy1 - busy0))" -v srv="$srv" -v rcv="$rcv" \
      -v ld="${load_cpu:-0}" -v hz="$HZ" -v n="$RECORDS" -v c="$CORES" 'BEGIN {
    w = t1 - t0; srvs = srv / hz; rcvs = rcv / hz
    other = m / hz - srvs - rcvs - ld; if (other < 0) other = 0
    printf "  CPU: server %.2f s (%.2f us/record), receiver %.2f s, http-load %.2f s; machine busy %.2f of %d cores, other processes (incl. this script polling) %.2f cores\n",
      srvs, srvs * 1e6 / n, rcvs, ld, m / hz / w, c, other / w }'

  curl -s "$URL/metrics" > "$WORK/metrics.txt" || true
  metric() { awk -v m="$1" '$1 == m || index($1, m "{") == 1 { s += $2 } END { printf "%.0f", s }' "$WORK/metrics.txt"; }
  printf '  server: journal %s fsyncs, %s MB; %s context switches (%s involuntary)' \
    "$(metric sluice_journal_fsyncs_total)" "$(( $(metric sluice_journal_bytes_total) / 1000000 ))" \
    "$(cat /proc/"$SERVER"/task/*/status 2>/dev/null | awk '/ctxt_switches/ { s += $2 } END { print s + 0 }')" \
    "$(cat /proc/"$SERVER"/task/*/status 2>/dev/null | awk '/^nonvoluntary_ctxt_switches/ { s += $2 } END { print s + 0 }')"
  if [ $webhook = 1 ]; then
    printf '; %s webhook POSTs, %s retries' "$(metric sluice_webhook_batches_total)" "$(metric sluice_webhook_retries_total)"
  fi
  echo
  RSS[$i,$round]=$(awk '/VmHWM/ {print $2}' "/proc/$SERVER/status" 2>/dev/null || echo 0)
  echo "  server max RSS (VmHWM): ${RSS[$i,$round]} kB"
  # Counted before the server stops: what pending = 0 promised has arrived.
  if [ $webhook = 1 ]; then
    local c posts envs verdict
    c=$(curl -s "$RECEIVER_URL/count" || true)
    posts=$(sed -n 's/.*"posts":\([0-9]*\).*/\1/p' <<< "$c")
    envs=$(sed -n 's/.*"envelopes":\([0-9]*\).*/\1/p' <<< "$c")
    if [ "${envs:-0}" -lt "$RECORDS" ]; then
      verdict="LOST $((RECORDS - ${envs:-0})) records"
      PROBLEMS[$i]+="receiver got ${envs:-0} < $RECORDS; "; PROBLEMS_ANY=1
    elif [ "$envs" -gt "$RECORDS" ]; then
      verdict="ok, at least once: $((envs - RECORDS)) duplicates"
    else
      verdict="ok, = records"
    fi
    echo "  receiver at pending = 0: $posts POSTs, $envs envelopes ($verdict)"
  fi
  stop "$SERVER" sluice; SERVER=
  if [ $webhook = 1 ]; then
    echo "  receiver after the server stopped: $(curl -s "$RECEIVER_URL/count")"
    stop "$RECEIVER" webhook-receiver; RECEIVER=
  else
    local lines
    lines=$(wc -l < "$WORK/out.jsonl")
    echo "  output file lines: $lines"
    if [ "$lines" -lt "$RECORDS" ]; then PROBLEMS[$i]+="file has $lines < $RECORDS lines; "; PROBLEMS_ANY=1; fi
  fi
  if [ -s "$WORK/dead.jsonl" ]; then echo "  dead-letter lines: $(wc -l < "$WORK/dead.jsonl")"; fi
  if grep -q -E 'ERROR|WARN' "$WORK/serve.err"; then
    echo "  server warnings/errors (first 5):"; grep -m5 -E 'ERROR|WARN' "$WORK/serve.err" | sed 's/^/    /'
  fi
}

for round in $(seq "$ROUNDS"); do
  for i in "${!LABELS[@]}"; do run "$i" "$round"; done
done

median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
echo
echo "summary ($RECORDS records, median of $ROUNDS rounds; every round in brackets):"
for i in "${!LABELS[@]}"; do
  rates="" ratios="" rss="" cpu=""
  for round in $(seq "$ROUNDS"); do
    rates+="${RATE[$i,$round]} "
    ratios+="$(awk -v r="${RATE[$i,$round]}" -v b="${RATE[0,$round]}" 'BEGIN { printf "%.2f", b ? r / b : 0 }') "
    rss+="${RSS[$i,$round]} "
    cpu+="${CPU_US[$i,$round]} "
  done
  printf '%s\n  end to end %s records/s [%s]' "${LABELS[$i]}" "$(median <<< "$rates")" "${rates% }"
  if [ "$i" != 0 ]; then printf '; ratio to (a) %s [%s]' "$(median <<< "$ratios")" "${ratios% }"; fi
  printf '\n  server CPU %s us/record [%s]; server max RSS %s kB [%s]\n' \
    "$(median <<< "$cpu")" "${cpu% }" "$(median <<< "$rss")" "${rss% }"
  if [ -n "${PROBLEMS[$i]:-}" ]; then echo "  PROBLEMS: ${PROBLEMS[$i]}"; fi
done
echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
exit "$PROBLEMS_ANY"
