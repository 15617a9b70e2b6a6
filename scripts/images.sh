#!/usr/bin/env bash
# Builds the operator, worker, sidecar and gateway images (docker/README.md) and prints their sizes.
#
# With buildah (the default where it is installed): from binaries already built on the host
# (target/<profile>, debug info stripped on the way in) and Debian bases made by
# scripts/base-image.sh, so neither a registry nor a Rust builder image is needed. With docker or
# podman (CONTAINER_ENGINE=docker): the Dockerfiles' own multi-stage build from their published bases.
#
# Usage: scripts/images.sh [--profile release|debug]
# Environment:
#   CONTAINER_ENGINE   buildah (default when installed), docker or podman
#   IMAGE_PREFIX       prepended to each name, e.g. registry.example.com/platform/ (default:
#                      localhost/ with buildah, none with docker/podman)
#   VERSION            tag (default: the workspace version); REVISION (default: git HEAD)
#   BASE_IMAGE, PYTHON_BASE_IMAGE, PYTHON   override the runtime bases and the worker's python3
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tools="${CAPSULE_TOOLS_DIR:-$root/.tools}"
profile=release
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="${2:?--profile needs release or debug}"; shift 2 ;;
    *) echo "unknown argument '$1'; usage: scripts/images.sh [--profile release|debug]" >&2; exit 2 ;;
  esac
done
case "$profile" in release|debug) ;; *) echo "--profile must be release or debug, not '$profile'" >&2; exit 2 ;; esac
log() { printf '[images] %s\n' "$*" >&2; }

engine="${CONTAINER_ENGINE:-}"
if [ -z "$engine" ]; then
  if command -v buildah >/dev/null; then engine=buildah
  elif command -v docker >/dev/null; then engine=docker
  elif command -v podman >/dev/null; then engine=podman
  else log "no container engine: run scripts/install-tools.sh buildah (as root) or install docker/podman"; exit 1
  fi
fi
version="${VERSION:-$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)}"
revision="${REVISION:-$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)}"
source_url="$(sed -n 's/^repository = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)"
prefix="${IMAGE_PREFIX:-}"
common=(--build-arg "VERSION=$version" --build-arg "REVISION=$revision" --build-arg "SOURCE=$source_url")

case "$(basename "$engine")" in
  buildah)
    # Fully qualified: buildah 1.28 resolves a short name to any stored image whose name ends in
    # it (capsule-operator:0.1.0 would retag localhost/<anything>/capsule-operator:0.1.0).
    prefix="${prefix:-localhost/}"
    build=("$root/scripts/buildah.sh" bud --isolation chroot)
    sizes=("$root/scripts/buildah.sh" images --format '{{.Name}}:{{.Tag}}  {{.Size}}')
    # The binaries, debug info stripped (they keep their symbols for backtraces).
    context="$tools/images/context-$profile"
    rm -rf "$context"; mkdir -p "$context/bin" "$context/empty"
    for b in capsule-operator capsule-worker capsule-sidecar capsule-gateway; do
      [ -x "$root/target/$profile/$b" ] || {
        log "target/$profile/$b is missing: run cargo build $([ "$profile" = release ] && echo '--release ')-p capsule-operator -p capsule-worker -p capsule-sidecar -p capsule-gateway --bins"; exit 1; }
      strip --strip-debug -o "$context/bin/$b" "$root/target/$profile/$b"
    done
    base="${BASE_IMAGE:-$("$root/scripts/base-image.sh" runtime)}"
    python_base="${PYTHON_BASE_IMAGE:-$("$root/scripts/base-image.sh" python)}"
    common+=(--build-arg BINARIES=prebuilt --build-arg "BASE_IMAGE=$base"
      --build-arg "PYTHON_BASE_IMAGE=$python_base" --build-arg "PYTHON=${PYTHON:-/usr/bin/python3}")
    ;;
  docker|podman)
    "$engine" info >/dev/null 2>&1 || { log "$engine is not installed or its daemon is not running (CONTAINER_ENGINE=buildah builds without one)"; exit 1; }
    build=("$engine" build)
    sizes=("$engine" images --format '{{.Repository}}:{{.Tag}}  {{.Size}}')
    context="$root"
    [ -n "${BASE_IMAGE:-}" ] && common+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
    [ -n "${PYTHON_BASE_IMAGE:-}" ] && common+=(--build-arg "PYTHON_BASE_IMAGE=$PYTHON_BASE_IMAGE")
    [ -n "${PYTHON:-}" ] && common+=(--build-arg "PYTHON=$PYTHON")
    ;;
  *) log "CONTAINER_ENGINE must be buildah, docker or podman, not '$engine'"; exit 2 ;;
esac

images=()
image() { # name dockerfile target
  local tag="$prefix$1:$version"
  log "$tag ($2${3:+ --target $3})"
  "${build[@]}" "${common[@]}" -f "$root/docker/$2" ${3:+--target "$3"} -t "$tag" "$context" >&2
  images+=("$tag")
}
image capsule-operator Dockerfile.operator ""
image capsule-worker Dockerfile.worker worker
image capsule-sidecar Dockerfile.worker sidecar
image capsule-gateway Dockerfile.gateway ""

# buildah 1.28 leaves a working container behind for the `FROM ${BINARIES} AS binaries` stage,
# holding an unnamed stage image; both are used by nothing, so they go (this storage is ours).
if [ "$engine" = buildah ]; then
  "$root/scripts/buildah.sh" containers --format '{{.ContainerID}} [{{.ImageName}}]' \
    | awk '$2 == "[]" {print $1}' | xargs -r "$root/scripts/buildah.sh" rm >/dev/null
  "$root/scripts/buildah.sh" rmi --prune >/dev/null
fi
echo "images ($engine, $([ "$engine" = buildah ] && echo "binaries from target/$profile" || echo "built from source")):"
for i in "${images[@]}"; do "${sizes[@]}" "$i" | sed 's/^/  /'; done
