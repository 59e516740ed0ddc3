# shellcheck shell=bash
# apt_install, sourced by k8s/podman.sh and k8s/check.sh: the Debian packages they need
# when missing (a fresh machine has Rust and apt, nothing else).

# apt_install PKG...: Debian packages, as root or through sudo; services stay stopped.
apt_install() {
  local sudo="" policy=/usr/sbin/policy-rc.d added="" rc=0
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "need root or sudo to install $*" >&2; return 1; }
    sudo="sudo -n"
  fi
  command -v apt-get >/dev/null 2>&1 || { echo "apt-get not found: install $* by hand" >&2; return 1; }
  printf '==> installing %s (Debian)\n' "$*" >&2
  # policy-rc.d 101 keeps packages (etcd-server) from starting their services.
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null && $sudo chmod 755 "$policy" && added=1
  fi
  local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -qq)
  [ -z "$sudo" ] || apt=(sudo -n "${apt[@]}")
  if ! "${apt[@]}" install -y --no-install-recommends "$@" >/dev/null 2>&1; then
    "${apt[@]}" update >/dev/null 2>&1 || rc=$?
    [ "$rc" -ne 0 ] || "${apt[@]}" install -y --no-install-recommends "$@" >/dev/null || rc=$?
  fi
  [ -z "$added" ] || $sudo rm -f "$policy"
  [ "$rc" -eq 0 ] || echo "apt-get install $* failed (exit $rc)" >&2
  return "$rc"
}
