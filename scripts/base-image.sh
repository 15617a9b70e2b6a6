#!/usr/bin/env bash
# Builds a Debian base image from Debian packages (mmdebstrap), for machines that reach Debian's
# archive but no container registry, and loads it into the project's buildah storage.
#   runtime: glibc, libgcc, CA certificates, tzdata (what distroless/cc-debian12 carries), no shell
#   python:  Debian's essential set + python3 (what python:3.x-slim carries; the worker's base)
# Both carry /etc/passwd entries for root and nonroot (65532, the images' user).
# Cached under .tools/images, keyed by its inputs (flavor, suite, packages, this script, the
# mmdebstrap version): a second run only checks the image is there. Prints the image's name.
# Usage: scripts/base-image.sh runtime|python
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tools="${CAPSULE_TOOLS_DIR:-$root/.tools}"
flavor="${1:?usage: scripts/base-image.sh runtime|python}"
suite="${CAPSULE_DEBIAN_SUITE:-bookworm}"
mirror="${CAPSULE_DEBIAN_MIRROR:-}"
log() { printf '[base-image] %s\n' "$*" >&2; }

case "$flavor" in
  # extract: packages unpacked, no dpkg or shell in the result (so no maintainer scripts run).
  runtime) variant=extract; include="libc6,libgcc-s1,ca-certificates,tzdata,netbase,base-files" ;;
  python) variant=essential; include="python3,ca-certificates" ;;
  *) log "unknown flavor '$flavor': expected runtime or python"; exit 2 ;;
esac
command -v mmdebstrap >/dev/null || {
  log "mmdebstrap is not installed: run scripts/install-tools.sh mmdebstrap (as root)"; exit 1; }

key="$( { echo "$flavor $suite $mirror $variant $include"; mmdebstrap --version; cat "$0"; } \
  | sha256sum | cut -c1-16)"
image="localhost/capsule-base-$flavor:$key"
if "$root/scripts/buildah.sh" inspect --type image "$image" >/dev/null 2>&1; then
  echo "$image"; exit 0
fi

mkdir -p "$tools/images"
tar="$tools/images/base-$flavor-$key.tar"
if [ ! -s "$tar" ]; then
  log "$flavor: mmdebstrap --variant=$variant --include=$include $suite"
  # Documentation and translations are no use in a container; the runtime flavor gets its
  # certificate bundle the way update-ca-certificates would make it (it has no shell to run that;
# the python flavor ran it when ca-certificates was configured).
  # (An extract variant runs no customize phase: its hooks run after extraction.)
  phase=customize; [ "$variant" = extract ] && phase=extract
  mmdebstrap --quiet --variant="$variant" --include="$include" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --$phase-hook='rm -rf "$1"/usr/share/doc "$1"/usr/share/man "$1"/usr/share/info "$1"/usr/share/locale "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/*' \
    --$phase-hook='[ -s "$1"/etc/ssl/certs/ca-certificates.crt ] || cat "$1"/usr/share/ca-certificates/mozilla/*.crt > "$1"/etc/ssl/certs/ca-certificates.crt' \
    --$phase-hook='[ -e "$1"/etc/passwd ] || echo "root:x:0:0:root:/root:/usr/sbin/nologin" > "$1"/etc/passwd; [ -e "$1"/etc/group ] || echo "root:x:0:" > "$1"/etc/group' \
    --$phase-hook='echo "nonroot:x:65532:65532:nonroot:/home/nonroot:/usr/sbin/nologin" >> "$1"/etc/passwd; echo "nonroot:x:65532:" >> "$1"/etc/group' \
    "$suite" "$tar.part.tar" ${mirror:+"$mirror"}
  mv "$tar.part.tar" "$tar"
fi

log "$flavor: loading $tar as $image"
ctr="$("$root/scripts/buildah.sh" from --quiet scratch)"
trap '"$root/scripts/buildah.sh" rm "$ctr" >/dev/null 2>&1 || true' EXIT
"$root/scripts/buildah.sh" add --quiet "$ctr" "$tar" / >/dev/null
"$root/scripts/buildah.sh" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --label "org.opencontainers.image.description=Debian $suite $flavor base (mmdebstrap, scripts/base-image.sh)" \
  "$ctr"
"$root/scripts/buildah.sh" commit --quiet --rm "$ctr" "$image" >/dev/null
trap - EXIT
# Earlier bases of this flavor (other inputs) are no longer used by anything here.
for old in $("$root/scripts/buildah.sh" images --format '{{.Name}}:{{.Tag}}' --filter "reference=localhost/capsule-base-$flavor"); do
  [ "$old" = "$image" ] || "$root/scripts/buildah.sh" rmi "$old" >/dev/null 2>&1 || true
done
find "$tools/images" -maxdepth 1 -name "base-$flavor-*.tar" ! -name "base-$flavor-$key.tar" -delete
echo "$image"
