#!/usr/bin/env bash
# buildah with the project's own container storage under .tools/containers (ignored by git), never
# /var/lib/containers: builds and tests are hermetic, a fresh clone starts clean, and removing
# .tools/containers forgets every image. vfs needs no overlay support from the kernel.
# Usage: scripts/buildah.sh <buildah arguments...>
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
store="${CAPSULE_TOOLS_DIR:-$root/.tools}/containers"
command -v buildah >/dev/null || {
  echo "buildah is not installed: run scripts/install-tools.sh buildah (as root)" >&2
  exit 1
}
mkdir -p "$store/storage" "$store/run" "$store/tmp"
# Layers being built are staged in TMPDIR; keep them beside the storage instead of /var/tmp.
export TMPDIR="$store/tmp"
exec buildah --root "$store/storage" --runroot "$store/run" --storage-driver vfs "$@"
