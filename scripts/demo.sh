#!/usr/bin/env bash
# `make demo`: builds everything, starts the embedded devcluster and the operator, applies the
# examples (a pool and a session), runs Python on the session, shows what kubectl and /metrics say,
# then keeps running until Ctrl-C. With CAPSULE_DEMO_EXIT=1 it stops after the first result (CI).
# With DEMO_IMAGES=1 (as root) the worker pods run from the worker and sidecar images, built first
# with scripts/images.sh --profile debug (docs/devcluster.md, "Pods from the real images").
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
state="${CAPSULE_DEMO_STATE:-}"
port="${CAPSULE_DEMO_PORT:-8080}"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if [ "${CAPSULE_DEMO_SKIP_BUILD:-0}" != 1 ]; then
  say "building (cargo build --workspace --bins)"
  cargo build --workspace --bins
fi
scripts/install-tools.sh kubectl client
images="${DEMO_IMAGES:-${CAPSULE_DEMO_IMAGES:-0}}"
case "$images" in 0|1) ;; *) echo "DEMO_IMAGES must be 0 or 1, not '$images'" >&2; exit 2 ;; esac
kubectl="$root/.tools/bin/kubectl"
python="$root/.tools/venv/bin/python"
bin="${CAPSULE_DEMO_BIN_DIR:-${CARGO_TARGET_DIR:-$root/target}/debug}"

# Pick a free port if the default one is taken.
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
fi

if [ -z "$state" ]; then
  # Under /tmp, with .devcluster pointing at it: the pods' containers run as other users (the
  # interpreter's runAsUser), who must reach their volumes, which a checkout under /root hides.
  if [ -L "$root/.devcluster" ]; then rm -rf "$(readlink "$root/.devcluster")"; fi
  rm -rf "$root/.devcluster"
  state="$(mktemp -d /tmp/capsule-demo.XXXXXX)"
  ln -s "$state" "$root/.devcluster"
else
  rm -rf "$state"
  mkdir -p "$state"
fi
chmod 0755 "$state"
# Binaries every container's user can run, whatever the permissions of the build tree.
mkdir -p "$state/bin"
cp "$bin/capsule-worker" "$bin/capsule-sidecar" "$state/bin/"
pids=()
cleanup() {
  trap - EXIT INT TERM
  say "stopping"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

image_roots=()
if [ "$images" = 1 ]; then
  [ "$(id -u)" = 0 ] || { echo "DEMO_IMAGES=1 needs root (the kubelet makes namespaces, mounts and switches uids)" >&2; exit 1; }
  say "building the images (scripts/images.sh --profile debug)"
  scripts/install-tools.sh buildah mmdebstrap
  prefix="${IMAGE_PREFIX:-localhost/}"
  version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
  IMAGE_PREFIX="$prefix" scripts/images.sh --profile debug
  image_roots=(--buildah "$root/scripts/buildah.sh"
    --image-root "capsule-worker:*=${prefix}capsule-worker:$version"
    --image-root "capsule-sidecar:*=${prefix}capsule-sidecar:$version")
fi

say "starting the devcluster (logs: $state/devcluster.log)"
mkfifo "$state/ready"
"$bin/capsule-devcluster" serve --state-dir "$state" \
  --image-map "capsule-worker:*=$state/bin/capsule-worker" \
  --image-map "capsule-sidecar:*=$state/bin/capsule-sidecar" \
  "${image_roots[@]}" \
  >"$state/ready" 2>"$state/devcluster.log" &
pids+=($!)
read -r ready <"$state/ready"
echo "$ready"
export KUBECONFIG="$state/kubeconfig"

say "installing the CRDs"
"$kubectl" apply -f crds/capsule.dev_crds.yaml

say "starting the operator on 127.0.0.1:$port (logs: $state/operator.log)"
"$bin/capsule-operator" run --listen "127.0.0.1:$port" \
  --heartbeat-url "http://127.0.0.1:$port/v1/heartbeats" --status-interval-seconds 2 \
  2>"$state/operator.log" &
pids+=($!)
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done

say "applying examples/pool-minimal.yaml and examples/session.yaml"
"$kubectl" apply -f examples/pool-minimal.yaml
"$kubectl" wait --for=jsonpath='{.status.idle}'=2 cpool/demo --timeout=120s
"$kubectl" apply -f examples/session.yaml
"$kubectl" wait --for=jsonpath='{.status.phase}'=Bound csess/demo-session --timeout=120s

say "running Python on the session with the SDK (examples/sdk_demo.py, capsule-client)"
"$python" examples/sdk_demo.py --session demo-session

if [ "$images" = 1 ]; then
  say "the pods run from the images (devcluster log)"
  grep -a 'image rootfs mounted' "$state/devcluster.log" | sed 's/\x1b\[[0-9;]*m//g; s/^.*image rootfs mounted/  mounted/'
fi

say "kubectl get cpool,csess"
"$kubectl" get cpool,csess -o wide

say "metrics"
echo "Prometheus metrics: http://127.0.0.1:$port/metrics"
curl -s "http://127.0.0.1:$port/metrics" | grep -E '^capsule_pool_(workers|hits_total|executions_total)\{' | head -12

if [ "${CAPSULE_DEMO_EXIT:-0}" = 1 ]; then
  say "demo complete"
  exit 0
fi
say "running. In another shell: export KUBECONFIG=$KUBECONFIG; $kubectl get cpool,csess -w   (Ctrl-C stops everything)"
wait
