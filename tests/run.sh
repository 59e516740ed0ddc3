#!/usr/bin/env bash
# The whole test suite, installing what it needs on a fresh machine: Rust toolchain
# components, and Debian's etcd-server for the cluster tests (everything else comes from
# crates.io through cargo; schemathesis and openapi-spec-validator come from PyPI into target/).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "cargo not found: install Rust (rustup) first" >&2
    exit 1
  fi
fi
if command -v rustup >/dev/null 2>&1; then
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi
# The cluster tests run a real etcd (3.4, /usr/bin/etcd from Debian's etcd-server): each
# test starts its own members on ephemeral loopback ports (tests/support/etcd.rs), so the
# packaged service must not be left running.
install_etcd() {
  local sudo="" policy=/usr/sbin/policy-rc.d added_policy="" rc=0
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "etcd is not installed and neither root nor sudo is available: install etcd-server" >&2
      return 1
    fi
    sudo="sudo"
  fi
  echo "installing etcd-server (Debian) for the cluster tests"
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "apt-get not found: install etcd (3.4+) so that \`etcd\` is on PATH" >&2
    return 1
  fi
  # Keep the package from starting its service (invoke-rc.d / deb-systemd-invoke honour
  # policy-rc.d; 101 = action forbidden).
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod 755 "$policy"
    added_policy=1
  fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -qq || rc=$?
  if [ "$rc" -eq 0 ]; then
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
      --no-install-recommends etcd-server || rc=$?
  fi
  if [ -n "$added_policy" ]; then $sudo rm -f "$policy"; fi
  # Belt and braces: should a service have started anyway, stop it and keep it off.
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    $sudo systemctl disable --now etcd.service >/dev/null 2>&1 || true
  elif [ -x /etc/init.d/etcd ]; then
    $sudo /etc/init.d/etcd stop >/dev/null 2>&1 || true
  fi
  if [ "$rc" -ne 0 ]; then
    echo "installing etcd-server failed (apt-get exit $rc)" >&2
    return "$rc"
  fi
  if ! command -v etcd >/dev/null 2>&1; then
    echo "etcd-server installed but \`etcd\` is not on PATH" >&2
    return 1
  fi
}
if ! command -v etcd >/dev/null 2>&1; then
  install_etcd
fi
etcd --version 2>&1 | sed -n 1p
cargo build --workspace --all-targets
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --lib --tests 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# Checks beyond cargo's tests; each failure fails the run (and counts as one failed test in
# the closing line): the Kubernetes manifests, the API against its OpenAPI document
# (openapi-spec-validator and schemathesis from PyPI), a few seconds of each fuzz target (nightly toolchain, cargo-fuzz).
extra_failed=0
extra() {
  "$@"
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "$* failed (exit $rc)" >&2
    extra_failed=$((extra_failed + 1))
    if [ "$status" -eq 0 ]; then status=$rc; fi
  fi
}
if [ -f k8s/check.sh ]; then extra bash k8s/check.sh; fi
extra bash tests/api/conformance.sh target/debug/sluice
# The cluster in real containers (podman from Debian, installed when missing; a visible SKIP
# where it cannot run), its quickest scenario; `bash tests/containers/cluster.sh` runs all.
extra bash tests/containers/cluster.sh --quick
extra bash tests/fuzz-smoke.sh
set -e
# One closing line over all test binaries.
awk -v extra="$extra_failed" \
  '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f + extra }' "$log"
exit "$status"
