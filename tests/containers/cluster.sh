#!/usr/bin/env bash
# The cluster in real containers, configured from the manifests in k8s/, under faults
# injected through the container runtime (podman). Any cwd:
#
#   bash tests/containers/cluster.sh [--quick] [--debug] [--keep] [all | SCENARIO...]
#
# Scenarios (default: all):
#   kill          podman kill (SIGKILL) of sluice-1; after its partitions moved, podman start
#   pause         podman pause of sluice-1 past its lease, then unpause
#   netcut        sluice-1 disconnected from both networks past its lease, then reconnected
#   peercut       sluice-1 disconnected from the peers' network only (it keeps etcd and the
#                 clients) until its partitions moved (DESIGN: after cluster.peer_timeout_ms;
#                 fails if they did not within 2 x lease_ttl_ms + 5 s), then reconnected
#   rolling       podman stop (SIGTERM) + start of sluice-2, sluice-1, sluice-0, one at a
#                 time, each time waiting for /readyz
#   empty-volume  podman stop (SIGTERM) of sluice-1, then a new sluice-1 on a new, empty volume
#   frozen-twin   podman pause of sluice-1 past its lease; a replacement sluice-1 on an empty
#                 volume; then unpause of the original
# --quick runs `rolling` only (the quickest), with the debug build (the one `cargo build`
# makes for the tests), for CI; --debug uses the debug build for any scenarios (default:
# the release build).
# --keep keeps the containers and volumes of the last scenario (the work dir, with logs,
# load reports and id lists, is target/containers/ and stays until the next run).
#
# Each scenario starts a fresh cluster: 3 etcd containers and 3 sluice containers, each
# configured as its StatefulSet configures a pod. The pod specs are read from
# `kubectl kustomize k8s/` (tests/containers/pod_spec.py): command/args, the environment
# (POD_NAME = the container's name, as a pod's name; the advertise URL and node id follow
# from it exactly as in the manifest), the ConfigMap (sluice.toml) mounted read-only at its
# mountPath, the volume claim as a named podman volume (data-<pod>-<n>), the emptyDir /tmp
# as a tmpfs, user 65532, read-only root, no capabilities, no privilege escalation, the
# termination grace period as podman's stop timeout. Nothing in the configuration is
# overridden: the cluster wiring is made by DNS instead. Two podman networks:
#   sluice-ct-net    etcd and sluice containers; etcd members answer as <pod>.etcd (the
#                    names in sluice.toml and in etcd's --initial-cluster); the published
#                    ports of the sluice containers go through it
#   sluice-ct-peers  sluice containers only, each with its advertise name as alias
#                    (<pod>.sluice-headless.default.svc.cluster.local)
# so that cutting one node from the peers' network alone leaves it its etcd and its clients
# (there is no iptables inside the containers). Not mirrored: CPU/memory limits, probes
# acting on their own (the script waits for /readyz itself), the Services.
#
# Load: load-tests/http_load.rs from the host to random nodes through published ports
# (127.0.0.1:PORT -> 8080), batches of $BATCH records (default 500) on $CONNECTIONS
# connections (default 4), 503s and broken connections retried, requests time out after
# 5 s. Audit: once every running node has nothing pending or staged and has checkpointed,
# every id that got a 202 must appear exactly once across all nodes' output and dead-letter
# files, read from the containers' volumes (the former volumes of replaced nodes included).
# Each scenario prints one line: accepted, lost, duplicated (ids emitted twice that the
# client also sent twice, after a broken connection, are counted apart), the longest run of
# 503s one batch got, refused connections. Exit 1 if any scenario lost or duplicated
# records or did not recover; where podman cannot run, a SKIP line and exit 0.
set -uo pipefail
repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
k8s_dir="$repo_dir/k8s"
cd "$repo_dir" || exit 1
export NO_COLOR=1
# Byte order for sort/comm/uniq (and speed: the audit sorts millions of ids).
export LC_ALL=C

ALL_SCENARIOS=(kill pause netcut peercut rolling empty-volume frozen-twin)
QUICK_SCENARIO=rolling
BATCH=${BATCH:-500}
CONNECTIONS=${CONNECTIONS:-4}
NAMESPACE=default
NET=sluice-ct-net
PEERS=sluice-ct-peers
LABEL=sluice-container-test=1

quick=0 debug=0 keep=0 scenarios=()
for a in "$@"; do
  case "$a" in
    --quick) quick=1 debug=1 ;;
    --debug) debug=1 ;;
    --keep) keep=1 ;;
    all) scenarios+=("${ALL_SCENARIOS[@]}") ;;
    -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *)
      if printf '%s\n' "${ALL_SCENARIOS[@]}" | grep -qx -- "$a"; then scenarios+=("$a"); else
        echo "unknown scenario $a (known: ${ALL_SCENARIOS[*]}, all)" >&2
        exit 2
      fi
      ;;
  esac
done
if [ $quick = 1 ]; then scenarios=("$QUICK_SCENARIO"); fi
[ ${#scenarios[@]} -gt 0 ] || scenarios=("${ALL_SCENARIOS[@]}")

say() { printf '==> %s\n' "$*"; }
log() { printf '# %s\n' "$*"; }
die() { printf 'cluster.sh: %s\n' "$*" >&2; exit 1; }
skip() {
  echo "SKIP: container cluster test: $*"
  exit 0
}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

[ "$(uname -s)" = Linux ] || skip "podman containers need Linux"
# shellcheck source=k8s/podman.sh
. "$k8s_dir/podman.sh"
podman_setup || skip "$PODMAN_WHY"
# One run at a time on a machine: the container, volume and network names are fixed.
exec 8>"${TMPDIR:-/tmp}/sluice-container-test.lock"
flock -w 900 8 || die "another container test holds ${TMPDIR:-/tmp}/sluice-container-test.lock"
# kubectl and PyYAML as k8s/check.sh gets them.
# shellcheck source=k8s/tools.sh
. "$k8s_dir/tools.sh"
PY="$venv/bin/python"

T_START=$(now)
target="${CARGO_TARGET_DIR:-$repo_dir/target}"
if [ $debug = 1 ]; then
  say "cargo build --bin sluice --example http-load (debug)"
  cargo build --quiet --bin sluice --example http-load || die "cargo build failed"
  BIN="$target/debug/sluice" LOAD="$target/debug/examples/http-load"
else
  say "cargo build --release --bin sluice --example http-load"
  cargo build --release --quiet --bin sluice --example http-load || die "cargo build --release failed"
  BIN="$target/release/sluice" LOAD="$target/release/examples/http-load"
fi
WORK="$target/containers"
rm -rf "$WORK"
mkdir -p "$WORK"
IMAGE=localhost/sluice:container-test
ETCD_IMAGE=localhost/sluice-etcd:container-test
T=$(now)
# Debug info is not needed in the containers (and makes the debug image 300 MB).
if command -v objcopy >/dev/null; then
  objcopy --strip-debug "$BIN" "$WORK/sluice" && BIN_IMG="$WORK/sluice"
fi
sluice_image "$IMAGE" "${BIN_IMG:-$BIN}" || die "building $IMAGE failed"
etcd_image "$ETCD_IMAGE" || die "building $ETCD_IMAGE failed"
if ! out=$(podman run --rm --pull=never "$IMAGE" --version 2>&1); then
  skip "podman cannot run a container here: $(echo "$out" | tail -1)"
fi
say "images $IMAGE, $ETCD_IMAGE built in $(since "$T") s ($out)"

# --- the manifests ------------------------------------------------------------------------
"$kubectl" kustomize "$k8s_dir" >"$WORK/rendered.yaml" || die "kubectl kustomize k8s/ failed"
mkdir -p "$WORK/spec"
for i in 0 1 2; do
  "$PY" "$repo_dir/tests/containers/pod_spec.py" "$WORK/rendered.yaml" etcd "etcd-$i" "$NAMESPACE" "$WORK/spec/etcd-$i" \
    >"$WORK/spec/etcd-$i.json" || die "etcd-$i: cannot read its pod spec"
  "$PY" "$repo_dir/tests/containers/pod_spec.py" "$WORK/rendered.yaml" sluice "sluice-$i" "$NAMESPACE" "$WORK/spec/sluice-$i" \
    >"$WORK/spec/sluice-$i.json" || die "sluice-$i: cannot read its pod spec"
done
# From the ConfigMap as mounted: what the waits and the audit need.
TOML=$(jq -r '.mounts[] | select(.kind == "configmap") | .dir' "$WORK/spec/sluice-0.json")/sluice.toml
DATA_MOUNT=$(jq -r '.mounts[] | select(.kind == "claim") | .path' "$WORK/spec/sluice-0.json")
read -r LEASE_MS PARTITIONS OUT_PATH DLQ_PATH < <("$PY" -c '
import sys, tomllib
c = tomllib.load(open(sys.argv[1], "rb"))
print(c["cluster"].get("lease_ttl_ms", 10000), c["pipeline"]["partitions"], c["output"]["path"], c["dead_letter"]["path"])' "$TOML") ||
  die "cannot read $TOML"
case "$OUT_PATH:$DLQ_PATH" in "$DATA_MOUNT"/*:"$DATA_MOUNT"/*) ;; *) die "output.path and dead_letter.path must lie on the volume ($DATA_MOUNT)" ;; esac
OUT_REL=${OUT_PATH#"$DATA_MOUNT"/} DLQ_REL=${DLQ_PATH#"$DATA_MOUNT"/}
LEASE_S=$(((LEASE_MS + 999) / 1000))
log "from k8s/: $(jq -r .image "$WORK/spec/sluice-0.json") as $IMAGE, ConfigMap $(jq -r '.mounts[] | select(.kind == "configmap") | .configmap' "$WORK/spec/sluice-0.json"): $PARTITIONS partitions, lease_ttl_ms $LEASE_MS, output $OUT_PATH"
log "sluice-1's environment: $(jq -r '[.env[] | "\(.[0])=\(.[1])"] | join(" ")' "$WORK/spec/sluice-1.json")"

# --- containers ---------------------------------------------------------------------------
# Host ports below the ephemeral range (the load's own connections take ports from it),
# in no TCP socket's use.
USED=" "
EPHEMERAL_LOW=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
free_port() {
  local p
  while :; do
    p=$((15000 + RANDOM % (EPHEMERAL_LOW - 15000)))
    case "$USED" in *" $p "*) continue ;; esac
    if [ -z "$(ss -tanH "( sport = :$p )" 2>/dev/null)" ]; then
      USED="$USED$p "
      echo "$p"
      return
    fi
  done
}

teardown() {
  podman rm -f -t 0 --filter "label=$LABEL" >/dev/null 2>&1 || podman ps -aq --filter "label=$LABEL" | xargs -r podman rm -f -t 0 >/dev/null 2>&1
  podman volume ls -q --filter "label=$LABEL" | xargs -r podman volume rm -f >/dev/null 2>&1
  podman network rm -f "$NET" "$PEERS" >/dev/null 2>&1
  return 0
}
cleanup() {
  local p
  for p in $(jobs -p); do kill "$p" 2>/dev/null; done
  if [ $keep = 0 ]; then teardown; else echo "# kept: the containers and volumes labelled $LABEL" >&2; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

declare -A PORT=() VOL=() EPORT=()
VOLUMES=() # every sluice volume of the scenario, in order (the audit reads them all)

# run_pod NAME SPEC VOLUME NETWORKS... : `podman run -d` as the pod spec says; NETWORKS are
# "network:alias=a,alias=b" (podman's syntax).
run_pod() {
  local name=$1 spec=$2 vol=$3
  shift 3
  local args=(-d --name "$name" --hostname "$name" --label "$LABEL" --pull=never
    --stop-timeout "$(jq -r .grace_seconds "$spec")")
  local n
  for n in "$@"; do args+=(--network "$n"); done
  local user
  user=$(jq -r '.user // empty' "$spec")
  [ -z "$user" ] || args+=(--user "$user")
  [ "$(jq -r .read_only_root "$spec")" != true ] || args+=(--read-only --read-only-tmpfs=false)
  [ "$(jq -r .no_new_privileges "$spec")" != true ] || args+=(--security-opt no-new-privileges)
  while read -r cap; do args+=(--cap-drop "$cap"); done < <(jq -r '.cap_drop[]' "$spec")
  while IFS=$'\t' read -r kind path src size; do
    case "$kind" in
      claim) args+=(-v "$vol:$path") ;;
      configmap) args+=(-v "$src:$path:ro") ;;
      emptydir) args+=(--tmpfs "$path:rw,mode=1777${size:+,size=$(numfmt --from=iec-i "$size")}") ;;
    esac
  done < <(jq -r '.mounts[] | [.kind, .path, (.dir // ""), (.size // "")] | @tsv' "$spec")
  while IFS=$'\t' read -r k v; do args+=(-e "$k=$v"); done < <(jq -r '.env[] | @tsv' "$spec")
  if [ "$name" = "${name#etcd}" ]; then
    args+=(-p "127.0.0.1:${PORT[$name]}:$(jq -r .ports.http "$spec")")
  else
    args+=(-p "127.0.0.1:${EPORT[$name]}:$(jq -r .readiness.port "$spec")")
  fi
  local cmd=()
  mapfile -t cmd < <(jq -r '(.command // []) + .args | .[]' "$spec")
  # (stderr to a file: netavark's aardvark-dns complains that there is no syslog)
  podman run "${args[@]}" "$IMAGE_OF" "${cmd[@]}" >/dev/null 2>"$WORK/podman-run.err" || {
    cat "$WORK/podman-run.err" >&2
    return 1
  }
}

sluice_aliases() { # the names the headless Service gives pod $1
  local svc
  svc=$(jq -r .service "$WORK/spec/$1.json")
  echo "alias=$1.$svc.$NAMESPACE.svc.cluster.local,alias=$1.$svc"
}
connect_peers() { # connect_peers POD: back on the peers' network, under its Service names
  local a args=()
  for a in $(sluice_aliases "$1" | tr ',' ' '); do args+=(--alias "${a#alias=}"); done
  podman network connect "${args[@]}" "$PEERS" "$1"
}

start_sluice() { # start_sluice POD: a new container for POD, on the volume VOL[POD]
  local pod=$1
  IMAGE_OF=$IMAGE run_pod "$pod" "$WORK/spec/$pod.json" "${VOL[$pod]}" "$NET" "$PEERS:$(sluice_aliases "$pod")"
}

new_volume() { # new_volume POD: VOL[POD] = a fresh, empty volume (as a re-created PVC)
  local n=0 v
  while :; do
    v="data-$1-$n"
    podman volume exists "$v" || break
    n=$((n + 1))
  done
  podman volume create --label "$LABEL" "$v" >/dev/null
  VOLUMES+=("$v")
  VOL[$1]=$v
}

url() { echo "http://127.0.0.1:${PORT[$1]}"; }

wait_ready() { # wait_ready POD TIMEOUT_S
  local until=$((SECONDS + $2))
  while ! curl -sf -o /dev/null --max-time 1 "$(url "$1")/readyz"; do
    if [ $SECONDS -ge "$until" ]; then
      ERR="${ERR:+$ERR; }$1 not ready after $2 s"
      log "$1 not ready after $2 s: $(podman ps -a --filter "name=^$1\$" --format '{{.Status}}')"
      return 1
    fi
    sleep 0.2
  done
}

# owners_ok VIEW POD...: VIEW's /v1/cluster has every partition owned by one of POD...,
# with BALANCED=1 in equal shares (± 1).
owners_ok() {
  local view=$1
  shift
  local live
  live=$(printf '"%s",' "$@")
  curl -sf --max-time 2 "$(url "$view")/v1/cluster" 2>/dev/null | jq -e --argjson live "[${live%,}]" \
    --arg bal "${BALANCED:-0}" --argjson n "$PARTITIONS" '
    .partitions as $p
    | ($p | length) == $n
      and ($p | all(.owner as $o | $o != null and ($live | index($o)) != null))
      and (if $bal == "1" then ([$live[] as $m | $p | map(select(.owner == $m)) | length] | (max - min) <= 1) else true end)' \
    >/dev/null 2>&1
}
wait_owners() { # wait_owners TIMEOUT_S VIEW POD...
  local limit=$1
  shift
  local until=$((SECONDS + limit))
  until owners_ok "$@"; do
    if [ $SECONDS -ge "$until" ]; then
      ERR="${ERR:+$ERR; }partitions not on [${*:2}]${BALANCED:+ (balanced)} after $limit s"
      log "owners not on [${*:2}] after $limit s: $(owners "$1")"
      return 1
    fi
    sleep 0.2
  done
}
owners() { curl -sf --max-time 2 "$(url "$1")/v1/cluster" | jq -c '[.partitions[].owner]' 2>/dev/null || echo '?'; }
max_epoch() { curl -sf --max-time 2 "$(url "$1")/v1/cluster" | jq '[.partitions[].epoch // 0] | max' 2>/dev/null || echo 0; }

cluster_up() {
  teardown
  podman network create --label "$LABEL" "$NET" >/dev/null || return 1
  podman network create --label "$LABEL" "$PEERS" >/dev/null || return 1
  PORT=() VOL=() EPORT=() VOLUMES=()
  local i svc
  for i in 0 1 2; do
    EPORT[etcd-$i]=$(free_port)
    svc=$(jq -r .service "$WORK/spec/etcd-$i.json")
    podman volume create --label "$LABEL" "data-etcd-$i" >/dev/null
    IMAGE_OF=$ETCD_IMAGE run_pod "etcd-$i" "$WORK/spec/etcd-$i.json" "data-etcd-$i" \
      "$NET:alias=etcd-$i.$svc,alias=etcd-$i.$svc.$NAMESPACE.svc.cluster.local" || return 1
  done
  for i in 0 1 2; do
    PORT[sluice-$i]=$(free_port)
    new_volume "sluice-$i"
    start_sluice "sluice-$i" || return 1
  done
  local until=$((SECONDS + 60)) path
  path=$(jq -r .readiness.path "$WORK/spec/etcd-0.json")
  for i in 0 1 2; do
    until curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:${EPORT[etcd-$i]}$path"; do
      [ $SECONDS -lt "$until" ] || { ERR="etcd-$i not healthy after 60 s"; return 1; }
      sleep 0.2
    done
  done
  for i in 0 1 2; do wait_ready "sluice-$i" 90 || return 1; done
  BALANCED=1 wait_owners 60 sluice-0 sluice-0 sluice-1 sluice-2
}

# --- load ---------------------------------------------------------------------------------
LOADER="" LOADN=0
load_start() { # load_start POD...: load to random ones of POD...
  LOADN=$((LOADN + 1))
  local urls="" p
  for p in "$@"; do urls="$urls${urls:+,}$(url "$p")"; done
  rm -f "$SW/stop-$LOADN"
  "$LOAD" --url "$urls" --records 1000000000 --lazy --batch "$BATCH" --connections "$CONNECTIONS" \
    --tolerate-503 --timeout-ms 5000 --max-seconds 1200 --stop-file "$SW/stop-$LOADN" \
    --id-prefix "$SC-$LOADN-" --accepted-log "$SW/acc-$LOADN.txt" >"$SW/load-$LOADN.txt" 2>&1 &
  LOADER=$!
}
load_stop() {
  [ -n "$LOADER" ] || return 0
  touch "$SW/stop-$LOADN"
  wait "$LOADER"
  LOADER=""
}

# --- the audit ----------------------------------------------------------------------------
quiesce() { # every running sluice container: nothing pending or staged; then a checkpoint
  local until=$((SECONDS + 120)) busy c st t
  t=$(now)
  local running=()
  mapfile -t running < <(podman ps --filter "label=$LABEL" --filter status=running --format '{{.Names}}' | grep '^sluice-')
  while :; do
    busy=""
    for c in "${running[@]}"; do
      st=$(curl -sf --max-time 2 "http://127.0.0.1:$(podman port "$c" | sed -n 's/.*:\([0-9]*\)$/\1/p' | head -1)/v1/status" |
        jq -r '"\(.pending) \(.staged)"' 2>/dev/null)
      [ "$st" = "0 0" ] || busy="$busy $c($st)"
    done
    [ -z "$busy" ] && break
    if [ $SECONDS -ge "$until" ]; then
      ERR="${ERR:+$ERR; }not quiescent after 120 s:$busy"
      break
    fi
    sleep 0.5
  done
  NOTE="$NOTE; quiescent $(since "$t") s after the load stopped"
  for c in "${running[@]}"; do
    curl -sf --max-time 30 -X POST "http://127.0.0.1:$(podman port "$c" | sed -n 's/.*:\([0-9]*\)$/\1/p' | head -1)/v1/checkpoint" \
      >/dev/null || log "checkpoint on $c failed"
  done
}

FAILED=() SUMMARY=()
audit() {
  local v mp
  quiesce
  : >"$SW/emitted.txt"
  for v in "${VOLUMES[@]}"; do
    mp=$(podman volume inspect -f '{{.Mountpoint}}' "$v") || continue
    for f in "$mp/$OUT_REL" "$mp/$DLQ_REL"; do
      # Envelopes begin {"id":"<id>",...: the id is the 4th "-separated field.
      [ -f "$f" ] && cut -d'"' -f4 "$f" >>"$SW/emitted.txt"
    done
  done
  cat "$SW"/acc-*.txt 2>/dev/null | sort -u >"$SW/accepted.sorted"
  cat "$SW"/acc-*.txt.doubt 2>/dev/null | sort -u >"$SW/doubt.sorted"
  grep "^$SC-" "$SW/emitted.txt" | sort >"$SW/emitted.sorted"
  uniq "$SW/emitted.sorted" >"$SW/emitted.uniq"
  uniq -d "$SW/emitted.sorted" >"$SW/duplicated.txt"
  comm -23 "$SW/accepted.sorted" "$SW/emitted.uniq" >"$SW/lost.txt"
  comm -13 "$SW/accepted.sorted" "$SW/emitted.uniq" >"$SW/unacknowledged.txt"
  ACCEPTED=$(wc -l <"$SW/accepted.sorted")
  LOST=$(wc -l <"$SW/lost.txt")
  DUP=$(wc -l <"$SW/duplicated.txt")
  DUP_DOUBT=$(comm -12 "$SW/duplicated.txt" "$SW/doubt.sorted" | wc -l)
  EXTRA=$(wc -l <"$SW/unacknowledged.txt")
  RUN503=$(sed -n 's/.*longest 503 run of a batch \([0-9]*\) ms.*/\1/p' "$SW"/load-*.txt | sort -n | tail -1)
  REFUSED=$(sed -n 's/.*connection errors: refused \([0-9]*\), broken.*/\1/p' "$SW"/load-*.txt | awk '{ s += $1 } END { print s + 0 }')
  BROKEN=$(sed -n 's/.*, broken \([0-9]*\);.*/\1/p' "$SW"/load-*.txt | awk '{ s += $1 } END { print s + 0 }')
  [ "$LOST" -eq 0 ] || log "$SC: lost, first 5: $(head -5 "$SW/lost.txt" | paste -sd' ')"
  [ "$DUP" -eq 0 ] || log "$SC: emitted twice, first 5: $(head -5 "$SW/duplicated.txt" | paste -sd' ')"
  local verdict=ok
  if [ "$LOST" -gt 0 ] || [ $((DUP - DUP_DOUBT)) -gt 0 ] || [ -n "$ERR" ]; then verdict=FAILED; fi
  local line
  line=$(printf '%s %s: accepted %d, lost %d, duplicated %d (+%d resent by the client), longest 503 run %s ms, refused connections %d' \
    "$verdict" "$SC" "$ACCEPTED" "$LOST" $((DUP - DUP_DOUBT)) "$DUP_DOUBT" "${RUN503:-0}" "$REFUSED")
  echo "$line"
  echo "   $(since "$T_SC") s; broken connections $BROKEN; emitted without a 202 $EXTRA (client gave up or in doubt)${NOTE:+; $NOTE}${ERR:+; error: $ERR}"
  for f in "$SW"/load-*.txt; do sed -n 2p "$f" | sed 's/^http-load: /   load: /'; done
  SUMMARY+=("$line")
  [ $verdict = ok ] || FAILED+=("$SC")
}

save_logs() {
  local c
  for c in $(podman ps -a --filter "label=$LABEL" --format '{{.Names}}'); do
    podman logs "$c" >"$SW/$c.log" 2>&1
  done
}

# --- scenarios ----------------------------------------------------------------------------
WARM=${WARM:-5}   # seconds of load before the fault
AFTER=${AFTER:-5} # seconds of load after recovery

sc_kill() {
  podman kill -s KILL sluice-1 >/dev/null
  wait_owners $((LEASE_S + 30)) sluice-0 sluice-0 sluice-2 || return
  NOTE="$NOTE; partitions moved $(since "$T_FAULT") s after the kill"
  podman start sluice-1 >/dev/null
  wait_ready sluice-1 90 && BALANCED=1 wait_owners 60 sluice-0 sluice-0 sluice-1 sluice-2
}

sc_pause() {
  podman pause sluice-1 >/dev/null
  wait_owners $((LEASE_S + 30)) sluice-0 sluice-0 sluice-2
  NOTE="$NOTE; partitions moved $(since "$T_FAULT") s after the pause"
  sleep 2
  podman unpause sluice-1 >/dev/null
  wait_ready sluice-1 90 && BALANCED=1 wait_owners 60 sluice-0 sluice-0 sluice-1 sluice-2
}

sc_netcut() {
  podman network disconnect "$PEERS" sluice-1 && podman network disconnect "$NET" sluice-1 || {
    ERR="network disconnect failed"
    return
  }
  wait_owners $((LEASE_S + 30)) sluice-0 sluice-0 sluice-2
  NOTE="$NOTE; partitions moved $(since "$T_FAULT") s after the cut"
  sleep 2
  podman network connect "$NET" sluice-1 && connect_peers sluice-1 || ERR="network connect failed"
  wait_ready sluice-1 90 && BALANCED=1 wait_owners 60 sluice-0 sluice-0 sluice-1 sluice-2
}

# DESIGN: when a majority of the other members have not reached an owner for
# cluster.peer_timeout_ms (default lease_ttl_ms), its partitions move away. The cut lasts
# until they did, at most 2 x lease_ttl_ms + 5 s (then the scenario fails).
sc_peercut() {
  local had
  had=$(owners sluice-0 | jq '[.[] | select(. == "sluice-1")] | length')
  podman network disconnect "$PEERS" sluice-1 || {
    ERR="network disconnect failed"
    return
  }
  if wait_owners $((2 * LEASE_S + 5)) sluice-0 sluice-0 sluice-2; then
    NOTE="$NOTE; sluice-1's $had partitions moved $(since "$T_FAULT") s into the cut"
  else
    NOTE="$NOTE; sluice-1 still owned $(owners sluice-0 | jq '[.[] | select(. == "sluice-1")] | length') of its $had partitions $((2 * LEASE_S + 5)) s into the cut"
  fi
  connect_peers sluice-1 || ERR="${ERR:+$ERR; }network connect failed"
  wait_ready sluice-1 90 && BALANCED=1 wait_owners 60 sluice-0 sluice-0 sluice-1 sluice-2
}

sc_rolling() {
  local i t steps=""
  for i in 2 1 0; do
    t=$(now)
    podman stop "sluice-$i" >/dev/null
    steps="$steps${steps:+,} sluice-$i exited $(since "$t") s"
    t=$(now)
    podman start "sluice-$i" >/dev/null
    wait_ready "sluice-$i" 90 || return
    steps="$steps and was ready $(since "$t") s after its start"
  done
  BALANCED=1 wait_owners 60 sluice-0 sluice-0 sluice-1 sluice-2
  NOTE="$NOTE; after SIGTERM$steps"
}

sc_empty_volume() {
  local t
  t=$(now)
  podman stop sluice-1 >/dev/null
  NOTE="$NOTE; sluice-1 exited $(since "$t") s after SIGTERM"
  podman rm sluice-1 >/dev/null
  new_volume sluice-1
  start_sluice sluice-1 || {
    ERR="cannot start sluice-1 again"
    return
  }
  wait_ready sluice-1 90 && BALANCED=1 wait_owners 60 sluice-0 sluice-0 sluice-1 sluice-2
  sleep 5 # the first seconds back are the ones at risk: more load before AFTER
}

sc_frozen_twin() {
  local e0 state
  e0=$(max_epoch sluice-0)
  podman pause sluice-1 >/dev/null
  wait_owners $((LEASE_S + 30)) sluice-0 sluice-0 sluice-2 || return
  # As Kubernetes would: the pod object is deleted (its name and DNS record freed) while
  # the frozen process lives on; a new pod of the same name starts on a new volume.
  podman rename sluice-1 sluice-1-frozen &&
    podman network disconnect "$PEERS" sluice-1-frozen &&
    podman network connect "$PEERS" sluice-1-frozen || {
    ERR="cannot free sluice-1's name and DNS record"
    return
  }
  PORT[sluice-1-frozen]=${PORT[sluice-1]}
  PORT[sluice-1]=$(free_port)
  new_volume sluice-1
  start_sluice sluice-1 || {
    ERR="cannot start the replacement sluice-1"
    return
  }
  wait_ready sluice-1 90 || return
  # Clients now reach the replacement (the Service's endpoints), not the frozen one.
  load_stop
  load_start sluice-0 sluice-1 sluice-2
  podman unpause sluice-1-frozen >/dev/null
  sleep $((LEASE_S + 5))
  state=$(podman inspect -f '{{.State.Status}} {{.State.ExitCode}}' sluice-1-frozen)
  case "$state" in
    exited*) NOTE="$NOTE; the woken original exited ${state#exited }" ;;
    *) NOTE="$NOTE; the woken original is still ${state%% *} $((LEASE_S + 5)) s after unpause" ;;
  esac
  BALANCED=1 wait_owners 60 sluice-0 sluice-0 sluice-1 sluice-2
  NOTE="$NOTE; highest epoch +$(($(max_epoch sluice-0) - e0))"
}

run_scenario() {
  SC=$1
  SW="$WORK/$SC"
  mkdir -p "$SW"
  ERR="" NOTE="" LOADN=0
  T_SC=$(now)
  say "scenario $SC"
  if ! cluster_up; then
    ERR="${ERR:-cannot start the cluster}"
    save_logs
    echo "FAILED $SC: $ERR"
    SUMMARY+=("FAILED $SC: $ERR")
    FAILED+=("$SC")
    return
  fi
  NOTE="cluster up in $(since "$T_SC") s"
  load_start sluice-0 sluice-1 sluice-2
  sleep "$WARM"
  T_FAULT=$(now)
  "sc_${SC//-/_}"
  NOTE="$NOTE; fault and recovery took $(since "$T_FAULT") s"
  sleep "$AFTER"
  load_stop
  audit
  save_logs
}

for s in "${scenarios[@]}"; do run_scenario "$s"; done
echo
say "container cluster test: ${#scenarios[@]} scenario(s) in $(since "$T_START") s; $BATCH records per batch, $CONNECTIONS connections; $([ $debug = 1 ] && echo debug || echo release) build, commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'); machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%s\n' "${SUMMARY[@]}"
if [ ${#FAILED[@]} -gt 0 ]; then
  echo "container cluster test: FAILED (${FAILED[*]})"
  exit 1
fi
echo "container cluster test: ok"
