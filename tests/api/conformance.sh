#!/usr/bin/env bash
# The API against its own OpenAPI document. First the document itself: openapi-spec-validator
# (from PyPI, installed into target/openapi-spec-validator-venv on first use) must find both
# the document the running binary serves at /openapi.json and the repository's openapi.json
# valid OpenAPI (what client and server generators need, e.g. unique operation ids). Then
# schemathesis (from PyPI, installed into target/schemathesis-venv on first use) generates
# requests from the served document and runs every check on the answers (no 5xx, every
# status and header and body as documented, invalid input refused, valid input accepted,
# 405 for undocumented methods). Afterwards the process must still be alive and take a
# normal request. Prints one line per document validated, then one line: generated
# requests, 5xx answers, failed checks.
#
# Usage: bash tests/api/conformance.sh [path/to/sluice]   (default target/debug/sluice)
#        SLUICE_API_EXAMPLES=N: at most N generated requests per operation and phase (default
#        from tests/api/schemathesis.toml: 100)
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-target/debug/sluice}
version=4.32.5
venv=target/schemathesis-venv
st=$venv/bin/st
if ! "$st" --version 2>/dev/null | grep -q "$version"; then
  echo "installing schemathesis $version (PyPI) into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "schemathesis==$version"
fi
# A venv of its own: its jsonschema pins need not agree with schemathesis'.
validator_version=0.9.0
validator_venv=target/openapi-spec-validator-venv
validator=$validator_venv/bin/openapi-spec-validator
installed=$("$validator_venv/bin/pip" show openapi-spec-validator 2>/dev/null || true)
if ! grep -qx "Version: $validator_version" <<<"$installed"; then
  echo "installing openapi-spec-validator $validator_version (PyPI) into $validator_venv"
  python3 -m venv "$validator_venv"
  "$validator_venv/bin/pip" install -q --disable-pip-version-check "openapi-spec-validator==$validator_version"
fi

work=$(mktemp -d)
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
cat >"$work/sluice.toml" <<TOML
[server]
bind = "127.0.0.1:0"
[lookup.memory]
table = "$PWD/config/sample-users.jsonl"
[output]
path = "$work/out.jsonl"
[dead_letter]
path = "$work/dead.jsonl"
[checkpoint]
dir = "$work/checkpoint"
TOML
RUST_LOG=warn "$bin" serve --config "$work/sluice.toml" >"$work/stdout" 2>"$work/stderr" &
pid=$!
base=""
for _ in $(seq 1 100); do
  base=$(sed -n 's/^sluice listening on //p' "$work/stdout" | head -n1)
  if [ -n "$base" ]; then break; fi
  if ! kill -0 "$pid" 2>/dev/null; then cat "$work/stderr" >&2; echo "sluice exited at start" >&2; exit 1; fi
  sleep 0.1
done
if [ -z "$base" ]; then echo "sluice did not start" >&2; exit 1; fi

# The documents first: a document generators reject fails the script whatever the answers.
if ! curl -sf -o "$work/served-openapi.json" "$base/openapi.json"; then
  echo "api document: GET $base/openapi.json failed" >&2
  exit 1
fi
for doc in "$work/served-openapi.json" openapi.json; do
  name=$doc
  if [ "$doc" = "$work/served-openapi.json" ]; then name="the served /openapi.json"; fi
  if "$validator" --validation-errors all "$doc" >"$work/validator.out" 2>&1; then
    echo "api document: $name is valid OpenAPI (openapi-spec-validator $validator_version)"
  else
    sed "s|$work/served-openapi.json|/openapi.json|g" "$work/validator.out" | cut -c1-400 >&2
    echo "api document: $name is INVALID OpenAPI (openapi-spec-validator $validator_version): see above" >&2
    exit 1
  fi
done

status=0
PYTHONPATH=tests/api SCHEMATHESIS_HOOKS=hooks "$st" --config-file tests/api/schemathesis.toml \
  run "$base/openapi.json" --checks all --no-color ${SLUICE_API_EXAMPLES:+--max-examples "$SLUICE_API_EXAMPLES"} \
  --report har --report-har-path "$work/answers.har" >"$work/st.out" 2>&1 || status=$?

# Every answer schemathesis got, by status class (from its HAR report).
counts=$(python3 - "$work/answers.har" <<'PY'
import json, sys
total = server_errors = 0
for path in sys.argv[1:]:
    for entry in json.load(open(path))["log"]["entries"]:
        total += 1
        if entry["response"]["status"] >= 500:
            server_errors += 1
print(total, server_errors)
PY
)
read -r answered server_errors <<<"$counts"
generated=$(grep -Eo '[0-9]+ generated' "$work/st.out" | tail -n1 | grep -Eo '[0-9]+' || echo 0)
failures=$(grep -Eo '[0-9]+ failures?' "$work/st.out" | tail -n1 | grep -Eo '[0-9]+' || echo 0)

alive=yes
if ! kill -0 "$pid" 2>/dev/null; then alive=no; status=1; fi
after=$(curl -s -o /dev/null -w '%{http_code}' -H 'content-type: application/json' \
  -d '[{"user_id":"u1"}]' "$base/v1/records" || echo 000)
if [ "$after" != 202 ]; then status=1; fi
if [ "$status" -ne 0 ]; then
  cat "$work/st.out" | cut -c1-400 >&2
fi
echo "api conformance: $generated generated requests ($answered answers), $server_errors 5xx, $failures failed checks; process alive: $alive; a normal request afterwards: $after"
exit "$status"
