# shellcheck shell=bash
# Podman without a container registry: functions sourced by k8s/image.sh,
# k8s/build-dockerfile.sh and tests/containers/cluster.sh (not a script of its own).
#
#   podman_setup           install podman & co. from Debian when missing, write a
#                          containers.conf under target/ and export CONTAINERS_CONF
#   podman_base IMAGE FILE...
#                          a minimal base: the shared libraries `ldd` lists for FILE..., the
#                          loader, /etc/passwd and /etc/group with 65532 (nonroot), a 1777 /tmp
#   sluice_image TAG BIN   the runtime image: BIN in the runtime stage of k8s/Dockerfile
#   etcd_image TAG         Debian's /usr/bin/etcd on a base made the same way
#
# Each function returns non-zero after printing why on stderr; PODMAN_WHY holds the reason
# podman_setup failed (tests print it as their SKIP reason).

PODMAN_K8S_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PODMAN_REPO_DIR="$(dirname "$PODMAN_K8S_DIR")"
PODMAN_WHY=""

podman_say() { printf '==> %s\n' "$*" >&2; }
# shellcheck source=k8s/apt.sh
. "$PODMAN_K8S_DIR/apt.sh"

# podman_setup: podman, runc, netavark and aardvark-dns (DNS between containers by name;
# without them podman 4.3 falls back to CNI, where names do not resolve), and the two
# settings this kind of machine needs: pinned ulimits (root lacks CAP_SYS_RESOURCE, so
# podman's default nofile/nproc of 1048576 are refused) and runc (crun refuses hybrid
# cgroups). The file is target/podman/containers.conf; nothing under /etc is changed.
podman_setup() {
  local missing=() p
  command -v podman >/dev/null 2>&1 || missing+=(podman)
  command -v runc >/dev/null 2>&1 || missing+=(runc)
  for p in netavark aardvark-dns; do
    [ -x "/usr/lib/podman/$p" ] || [ -x "/usr/libexec/podman/$p" ] || command -v "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    apt_install "${missing[@]}" || { PODMAN_WHY="cannot install ${missing[*]}"; return 1; }
  fi
  local dir="${CARGO_TARGET_DIR:-$PODMAN_REPO_DIR/target}/podman" nofile
  nofile=$(ulimit -Hn)
  [ "$nofile" = unlimited ] && nofile=1048576
  mkdir -p "$dir"
  cat >"$dir/containers.conf" <<EOF
# Written by k8s/podman.sh (podman_setup); used through CONTAINERS_CONF.
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=4096:4096"]
[engine]
runtime = "runc"
[network]
network_backend = "netavark"
EOF
  export CONTAINERS_CONF="$dir/containers.conf"
  if ! podman info >/dev/null 2>"$dir/info.err"; then
    PODMAN_WHY="podman info fails: $(head -c 300 "$dir/info.err")"
    return 1
  fi
}

# podman_rootfs DIR FILE...: an empty root with FILE...'s shared libraries (as `ldd` lists
# them, symlinks resolved), the users of distroless' nonroot images and a 1777 /tmp.
podman_rootfs() {
  local root=$1 f lib
  shift
  rm -rf "$root"
  mkdir -p "$root/etc" "$root/tmp" "$root/home/nonroot"
  chmod 1777 "$root/tmp"
  for f in "$@"; do
    ldd "$f" >/dev/null 2>&1 || continue # a static binary needs nothing
    while read -r lib; do
      cp -L --parents "$lib" "$root/"
    done < <(ldd "$f" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u)
  done
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >"$root/etc/group"
  printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
  chown 65532:65532 "$root/home/nonroot"
}

# podman_retire IMAGE OLD_ID: after IMAGE was rebuilt, drop its former image (OLD_ID, now
# untagged) unless a container or another tag still uses it.
podman_retire() {
  local now
  now=$(podman image inspect -f '{{.Id}}' "$1" 2>/dev/null || true)
  if [ -n "$2" ] && [ "$2" != "$now" ]; then podman rmi "$2" >/dev/null 2>&1 || true; fi
}
podman_id() { podman image inspect -f '{{.Id}}' "$1" 2>/dev/null || true; }

# podman_base IMAGE FILE...: podman_rootfs imported as IMAGE (about 5 MB, under a second).
podman_base() {
  local image=$1 root old
  shift
  old=$(podman_id "$image")
  root=$(mktemp -d "${TMPDIR:-/tmp}/sluice-base.XXXXXX")
  podman_rootfs "$root/root" "$@" || { rm -rf "$root"; return 1; }
  tar --numeric-owner -C "$root/root" -c . | podman import -q - "$image" >/dev/null
  local rc=${PIPESTATUS[1]}
  rm -rf "$root"
  podman_retire "$image" "$old"
  return "$rc"
}

# sluice_image TAG BIN: k8s/Dockerfile's runtime stage, verbatim apart from its FROM line
# (podman_base of BIN), with the builder stage's output (/out/sluice, /out/data) supplied
# as a build context of the builder's name instead of being compiled.
sluice_image() {
  local tag=$1 bin=$2 ctx base builder old
  [ -x "$bin" ] || { echo "sluice_image: no binary at $bin" >&2; return 1; }
  ctx=$(mktemp -d "${TMPDIR:-/tmp}/sluice-image.XXXXXX")
  base="localhost/sluice-base:${tag##*:}"
  podman_base "$base" "$bin" || { rm -rf "$ctx"; return 1; }
  install -D -m 0755 "$bin" "$ctx/builder/out/sluice"
  install -d -m 0755 "$ctx/builder/out/data"
  install -D -m 0644 "$PODMAN_REPO_DIR/config/sample-users.jsonl" "$ctx/repo/config/sample-users.jsonl"
  builder=$(awk 'toupper($1) == "FROM" && toupper($3) == "AS" { print $4; exit }' "$PODMAN_K8S_DIR/Dockerfile")
  # From the last FROM to the end: the runtime stage.
  awk -v base="$base" '
    toupper($1) == "FROM" { stage = ""; $2 = base }
    { stage = stage $0 "\n" }
    END { printf "%s", stage }' "$PODMAN_K8S_DIR/Dockerfile" >"$ctx/Containerfile"
  old=$(podman_id "$tag")
  podman build -q --pull=never --build-context "${builder:-builder}=$ctx/builder" \
    -f "$ctx/Containerfile" -t "$tag" "$ctx/repo" >/dev/null
  local rc=$?
  rm -rf "$ctx"
  podman_retire "$tag" "$old"
  return "$rc"
}

# etcd_image TAG: /usr/bin/etcd (Debian's etcd-server, installed when missing) as
# /usr/local/bin/etcd, user 65532, /var/lib/etcd writable by it. No ENTRYPOINT: like the
# manifest's `command:`, the container's command names etcd.
etcd_image() {
  local tag=$1 ctx base old
  [ -x /usr/bin/etcd ] || apt_install etcd-server || return 1
  ctx=$(mktemp -d "${TMPDIR:-/tmp}/sluice-etcd-image.XXXXXX")
  base="localhost/sluice-etcd-base:${tag##*:}"
  podman_base "$base" /usr/bin/etcd || { rm -rf "$ctx"; return 1; }
  install -D -m 0755 /usr/bin/etcd "$ctx/etcd"
  install -d -m 0755 "$ctx/data"
  cat >"$ctx/Containerfile" <<EOF
FROM $base
COPY etcd /usr/local/bin/etcd
COPY --chown=65532:65532 data /var/lib/etcd
ENV PATH=/usr/local/bin:/usr/bin:/bin
USER 65532:65532
EXPOSE 2379 2380 2381
CMD ["etcd"]
EOF
  old=$(podman_id "$tag")
  podman build -q --pull=never -f "$ctx/Containerfile" -t "$tag" "$ctx" >/dev/null
  local rc=$?
  rm -rf "$ctx"
  podman_retire "$tag" "$old"
  return "$rc"
}
