#!/usr/bin/env bash
# sluice vs Apache Flink's Async I/O operator on the same job, side by side in one run:
# JSON record -> lookup in an in-memory table (after a fixed delay) -> enriched JSON file.
# Flink 2.3 comes from the apache-flink-libraries wheel on PyPI (its jars), compiled and
# run with the machine's Java 17 as a MiniCluster. Not part of CI (it downloads ~330 MB).
#
#   bash load-tests/flink-bench.sh            # 1M records CPU-bound, 100k latency-bound
set -euo pipefail
cd "$(dirname "$0")/.."
RECORDS=${RECORDS:-1000000}
FLINK=${FLINK_DIR:-target/flink}
mkdir -p "$FLINK/lib" "$FLINK/classes"
if [ ! -f "$FLINK/lib/flink-dist-2.3.0.jar" ]; then
  pip download --quiet --no-deps -d "$FLINK" apache-flink-libraries==2.3.0
  python3 - "$FLINK" <<'PY'
import sys, zipfile, glob
d = sys.argv[1]
z = zipfile.ZipFile(glob.glob(d + "/apache_flink_libraries-*.whl")[0])
for n in z.namelist():
    if n.startswith("pyflink/lib/") and n.endswith(".jar") and any(k in n for k in ("dist", "connector-files", "log4j")):
        open(d + "/lib/" + n.split("/")[-1], "wb").write(z.read(n))
PY
fi
javac -cp "$FLINK/lib/*" -d "$FLINK/classes" load-tests/flink/FlinkAsyncBench.java
cargo build --release --quiet --bin sluice --example http-load
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
TABLE=$PWD/config/sample-users.jsonl
target/release/examples/http-load --generate "$RECORDS" > "$WORK/in.jsonl"
target/release/examples/http-load --generate 100000 > "$WORK/in100k.jsonl"
flink() { rm -rf "$WORK/flink-out"; java -cp "$FLINK/lib/*:$FLINK/classes" FlinkAsyncBench "$@" 2>/dev/null | grep '^flink'; }
sluice() { SLUICE__LOOKUP__MEMORY__TABLE=$TABLE target/release/sluice enrich --no-progress "$@" \
  --output "$WORK/sluice-out.jsonl" --dead-letter "$WORK/dead.jsonl" 2>&1 | grep '^sluice enrich'; }

echo "# $(nproc) cores; $(date -u +%FT%TZ); commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "## CPU-bound: delay 0, capacity 1000, parallelism / partitions 2, $RECORDS records"
for mode in ordered unordered; do
  flink "$WORK/in.jsonl" "$TABLE" "$WORK/flink-out" 2 1000 0 "$mode" batch
  flink "$WORK/in.jsonl" "$TABLE" "$WORK/flink-out" 2 1000 0 "$mode" streaming
  SLUICE__PIPELINE__MODE=$mode SLUICE__PIPELINE__PARTITIONS=2 SLUICE__PIPELINE__CAPACITY=1000 \
    sluice --input "$WORK/in.jsonl"
done
echo "## latency-bound: delay 10 ms, capacity 100, parallelism / partitions 2 (C/L = 20000/s), 100k records"
flink "$WORK/in100k.jsonl" "$TABLE" "$WORK/flink-out" 2 100 10 ordered batch
flink "$WORK/in100k.jsonl" "$TABLE" "$WORK/flink-out" 2 100 10 ordered streaming
SLUICE__PIPELINE__PARTITIONS=2 SLUICE__PIPELINE__CAPACITY=100 SLUICE__LOOKUP__MEMORY__DELAY_MS=10,10 \
  sluice --input "$WORK/in100k.jsonl"
