#!/usr/bin/env bash
# Build sluice's runtime image with podman, without a container registry (any cwd):
#
#   bash k8s/image.sh [TAG]           # default localhost/sluice:dev
#   bash k8s/image.sh --etcd [TAG]    # Debian's etcd as an image, default localhost/sluice-etcd:dev
#
# The release binary (`cargo build --release --locked --bin sluice`; SLUICE_BIN=PATH uses
# that binary instead) and the shared libraries `ldd` lists for it, on an otherwise empty
# base with the nonroot user (65532) and a 1777 /tmp, in exactly the runtime stage of
# k8s/Dockerfile: /usr/local/bin/sluice, /usr/share/sluice/sample-users.jsonl,
# /var/lib/sluice owned by 65532, USER 65532, ENTRYPOINT ["/usr/local/bin/sluice"],
# CMD ["serve"]. podman, runc, netavark and aardvark-dns are installed from Debian when
# missing; podman runs with target/podman/containers.conf (k8s/podman.sh explains it).
# The last line printed is the image's tag.
set -euo pipefail
k8s_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_dir="$(dirname "$k8s_dir")"
# shellcheck source=k8s/podman.sh
. "$k8s_dir/podman.sh"

what=sluice
if [ "${1:-}" = --etcd ]; then
  what=etcd
  shift
fi
case "${1:-}" in -h | --help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;; esac
[ $# -le 1 ] || { echo "usage: bash k8s/image.sh [--etcd] [TAG]" >&2; exit 2; }

podman_setup || { echo "image.sh: $PODMAN_WHY" >&2; exit 1; }
t0=$SECONDS
if [ "$what" = etcd ]; then
  tag=${1:-localhost/sluice-etcd:dev}
  etcd_image "$tag"
else
  tag=${1:-localhost/sluice:dev}
  bin=${SLUICE_BIN:-}
  if [ -z "$bin" ]; then
    (cd "$repo_dir" && cargo build --release --locked --quiet --bin sluice)
    bin="${CARGO_TARGET_DIR:-$repo_dir/target}/release/sluice"
  fi
  sluice_image "$tag" "$bin"
  podman run --rm --pull=never "$tag" --version >&2
fi
podman_say "built $tag in $((SECONDS - t0)) s ($(podman image inspect -f '{{.Size}}' "$tag" | awk '{ printf "%.0f MB", $1 / 1e6 }'))"
echo "$tag"
