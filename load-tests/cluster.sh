#!/usr/bin/env bash
# A 3-node sluice cluster on this machine: one etcd (Debian's etcd-server, installed when
# missing) and three `sluice serve` nodes on ports 8081-8083, each with its own data dir
# under ${SLUICE_CLUSTER_DIR:-/tmp/sluice-cluster}. Ctrl-C stops everything (gracefully).
#
#   bash load-tests/cluster.sh            # start etcd + 3 nodes, print the cluster
#   NODES=5 bash load-tests/cluster.sh    # more nodes (ports 8081..)
#
# Then, in another terminal:
#   curl -s localhost:8082/v1/records -H 'content-type: application/json' -d '[{"user_id":"u1"}]'
#   cargo run --release -- cluster status --config /tmp/sluice-cluster/node-1.toml
#   kill -9 <pid of a node>               # its partitions move after lease_ttl_ms
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=${NODES:-3}
DIR=${SLUICE_CLUSTER_DIR:-/tmp/sluice-cluster}
ETCD_PORT=${ETCD_PORT:-23790}
if ! command -v etcd >/dev/null 2>&1; then
  echo "installing etcd-server (apt)" >&2
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq && $sudo_cmd apt-get install -y -qq etcd-server >/dev/null
  $sudo_cmd systemctl disable --now etcd >/dev/null 2>&1 || true
fi
cargo build --release --quiet
mkdir -p "$DIR"
pids=()
cleanup() {
  # Nodes first (they leave through etcd), etcd last.
  for p in "${pids[@]:1}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]:1}"; do wait "$p" 2>/dev/null || true; done
  kill -TERM "${pids[0]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM
etcd --name e0 --data-dir "$DIR/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
  --initial-cluster "e0=http://127.0.0.1:$((ETCD_PORT + 1))" >"$DIR/etcd.log" 2>&1 &
pids+=($!)
for i in $(seq 1 "$NODES"); do
  cat >"$DIR/node-$i.toml" <<TOML
[server]
bind = "127.0.0.1:$((8080 + i))"
[pipeline]
partitions = 12
[lookup.memory]
table = "$PWD/config/sample-users.jsonl"
[output]
path = "$DIR/node-$i/out.jsonl"
[dead_letter]
path = "$DIR/node-$i/dead-letter.jsonl"
[checkpoint]
dir = "$DIR/node-$i/checkpoints"
[cluster]
enabled = true
node = "node-$i"
etcd = ["http://127.0.0.1:$ETCD_PORT"]
prefix = "/sluice/demo"
lease_ttl_ms = 3000
TOML
  ./target/release/sluice serve --config "$DIR/node-$i.toml" >"$DIR/node-$i.log" 2>&1 &
  pids+=($!)
  echo "node-$i: http://127.0.0.1:$((8080 + i)) (pid $!, log $DIR/node-$i.log)"
done
for _ in $(seq 1 100); do
  curl -sf "localhost:8081/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
sleep 1
./target/release/sluice cluster status --config "$DIR/node-1.toml" || true
echo "running; Ctrl-C stops every node gracefully"
wait
