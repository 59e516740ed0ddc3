#!/usr/bin/env bash
# Build the whole multi-stage k8s/Dockerfile with podman, unchanged (not run by CI: about
# 7 minutes on 2 cores, most of it cargo inside the builder stage). Any cwd:
#
#   bash k8s/build-dockerfile.sh [TAG]     # default localhost/sluice:dockerfile
#
# Base images: each FROM image of the Dockerfile already in podman's storage is used as it
# is; otherwise it is pulled (PULL=0 skips trying, for machines without a registry); if that
# fails, a stand-in is made locally and tagged with the Dockerfile's name for it:
#   rust:1-bookworm                  Debian bookworm from debootstrap (--variant=minbase,
#                                    gcc, libc6-dev, ca-certificates) with this machine's
#                                    Rust toolchain (`rustc --print sysroot`) in /usr/local/rust
#   gcr.io/distroless/cc-debian12:nonroot
#                                    the files of that root's libc6 and libgcc-s1 packages,
#                                    its CA bundle, the nonroot user (65532) and a 1777 /tmp
# The stand-ins stay in podman's storage (a second run reuses them; remove them with
# `podman rmi` to make them anew). The host's CA bundle is mounted read-only into the
# build (cargo downloads crates; the bundle stays out of the image). podman, runc, netavark,
# aardvark-dns and debootstrap are installed from Debian when missing. The last line
# printed is the image's tag.
set -euo pipefail
k8s_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_dir="$(dirname "$k8s_dir")"
# shellcheck source=k8s/podman.sh
. "$k8s_dir/podman.sh"
case "${1:-}" in -h | --help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;; esac
tag=${1:-localhost/sluice:dockerfile}
PULL=${PULL:-1}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
podman_setup || { echo "build-dockerfile.sh: $PODMAN_WHY" >&2; exit 1; }
work="${CARGO_TARGET_DIR:-$repo_dir/target}/podman/dockerfile"
mkdir -p "$work"
t_all=$SECONDS

# The Debian root both stand-ins come from (made once, then kept under target/).
bookworm_root() {
  local root="$work/bookworm"
  if [ ! -f "$root/.complete" ]; then
    command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
    podman_say "debootstrap bookworm (minbase, gcc, libc6-dev, ca-certificates) into $root"
    rm -rf "$root"
    local t=$SECONDS
    debootstrap --variant=minbase --include=gcc,libc6-dev,ca-certificates bookworm "$root" \
      "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$work/debootstrap.log" 2>&1 ||
      { tail -20 "$work/debootstrap.log" >&2; return 1; }
    rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*
    touch "$root/.complete"
    podman_say "debootstrap took $((SECONDS - t)) s"
  fi
  echo "$root"
}

standin_rust() { # standin_rust IMAGE
  local root sysroot
  root=$(bookworm_root)
  sysroot=$(rustc --print sysroot) || { echo "no Rust toolchain on this machine to put in $1" >&2; return 1; }
  podman_say "stand-in for $1: $root + $sysroot"
  local stage="$work/rust-root"
  rm -rf "$stage"
  cp -al "$root" "$stage" 2>/dev/null || { rm -rf "$stage"; cp -a "$root" "$stage"; }
  rm -f "$stage/.complete"
  mkdir -p "$stage/usr/local/rust" "$stage/usr/local/cargo"
  cp -al "$sysroot/." "$stage/usr/local/rust/" 2>/dev/null || cp -a "$sysroot/." "$stage/usr/local/rust/"
  rm -rf "$stage/usr/local/rust/share/doc"
  tar --numeric-owner -C "$stage" -c . | podman import -q \
    --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV CARGO_HOME=/usr/local/cargo' \
    --change 'CMD ["bash"]' - "$1" >/dev/null
  rm -rf "$stage"
}

standin_distroless() { # standin_distroless IMAGE
  local root stage="$work/distroless-root" pkg f
  root=$(bookworm_root)
  podman_say "stand-in for $1: libc6 and libgcc-s1 from $root"
  rm -rf "$stage"
  mkdir -p "$stage/etc/ssl/certs" "$stage/tmp" "$stage/home/nonroot"
  for pkg in libc6 libgcc-s1; do
    while read -r f; do
      # Debian's merged /usr: the package lists name /lib/..., the files are in /usr/lib/...
      case "$f" in /lib/* | /lib64/* | /bin/* | /sbin/*) f="/usr$f" ;; esac
      if [ -L "$root$f" ] || [ -f "$root$f" ]; then
        (cd "$root" && cp -a --parents ".$f" "$stage/")
      fi
    done <"$(ls "$root/var/lib/dpkg/info/$pkg".list "$root/var/lib/dpkg/info/$pkg":*.list 2>/dev/null | head -1)"
  done
  for f in lib lib64 bin sbin; do [ -e "$stage/$f" ] || ln -s "usr/$f" "$stage/$f"; done
  cp "$root/etc/ssl/certs/ca-certificates.crt" "$stage/etc/ssl/certs/"
  podman_rootfs "$work/users" # /etc/passwd, /etc/group, nsswitch.conf, /tmp, /home/nonroot
  cp -a "$work/users/etc/." "$stage/etc/"
  rm -rf "$work/users"
  chmod 1777 "$stage/tmp"
  chown 65532:65532 "$stage/home/nonroot"
  tar --numeric-owner -C "$stage" -c . | podman import -q \
    --change 'USER 65532:65532' --change 'WORKDIR /home/nonroot' - "$1" >/dev/null
  rm -rf "$stage"
}

# Every FROM image that is not an earlier stage's name.
mapfile -t bases < <(awk 'toupper($1) == "FROM" {
    img = $2; if (!(img in stage)) print img
    if (toupper($3) == "AS") stage[$4] = 1 }' "$k8s_dir/Dockerfile")
for base in "${bases[@]}"; do
  if podman image exists "$base"; then
    podman_say "$base: present"
    continue
  fi
  # A short name is Docker Hub's (podman resolves short names only through registries.conf).
  case "$base" in
    */*) case "${base%%/*}" in *.* | *:* | localhost) full=$base ;; *) full=docker.io/$base ;; esac ;;
    *) full=docker.io/library/$base ;;
  esac
  if [ "$PULL" != 0 ] && timeout 60 podman pull -q "$full" >/dev/null 2>"$work/pull.err"; then
    [ "$full" = "$base" ] || podman tag "$full" "$base"
    podman_say "$base: pulled $full"
    continue
  fi
  [ "$PULL" = 0 ] || podman_say "$base: cannot pull ($(tail -1 "$work/pull.err" | cut -c1-120)); making a stand-in"
  case "$base" in
    rust:*bookworm*) standin_rust "$base" ;;
    gcr.io/distroless/cc-debian12*) standin_distroless "$base" ;;
    *) echo "build-dockerfile.sh: no stand-in for base image $base" >&2; exit 1 ;;
  esac
done

podman_say "podman build -f k8s/Dockerfile (context: the repository, k8s/Dockerfile.dockerignore)"
t=$SECONDS
old=$(podman_id "$tag")
volumes=()
[ ! -f "$CA_BUNDLE" ] || volumes=(-v "$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro")
# RUN steps on the host's network: cargo downloads crates, and on some machines (this
# project's among them) a bridge network cannot reach the host's DNS resolver.
podman build --pull=never --network "${BUILD_NETWORK:-host}" "${volumes[@]}" -f "$k8s_dir/Dockerfile" -t "$tag" "$repo_dir"
podman_retire "$tag" "$old"
build_s=$((SECONDS - t))
podman run --rm --pull=never "$tag" --version >&2
podman_say "podman build took $build_s s; $((SECONDS - t_all)) s in all ($(podman image inspect -f '{{.Size}}' "$tag" | awk '{ printf "%.0f MB", $1 / 1e6 }'))"
echo "$tag"
