#!/usr/bin/env bash
# `make demo`: builds everything, starts the embedded devcluster and the operator, applies the
# examples (a pool and a session), runs Python on the session, shows what kubectl and /metrics say,
# then keeps running until Ctrl-C. With CAPSULE_DEMO_EXIT=1 it stops after the first result (CI).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
state="${CAPSULE_DEMO_STATE:-$root/.devcluster}"
port="${CAPSULE_DEMO_PORT:-8080}"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if [ "${CAPSULE_DEMO_SKIP_BUILD:-0}" != 1 ]; then
  say "building (cargo build --workspace --bins)"
  cargo build --workspace --bins
fi
scripts/install-tools.sh kubectl client
kubectl="$root/.tools/bin/kubectl"
python="$root/.tools/venv/bin/python"
bin="${CAPSULE_DEMO_BIN_DIR:-${CARGO_TARGET_DIR:-$root/target}/debug}"

# Pick a free port if the default one is taken.
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
fi

rm -rf "$state"
mkdir -p "$state"
pids=()
cleanup() {
  trap - EXIT INT TERM
  say "stopping"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "starting the devcluster (logs: $state/devcluster.log)"
mkfifo "$state/ready"
"$bin/capsule-devcluster" serve --state-dir "$state" \
  --image-map "capsule-worker:*=$bin/capsule-worker" \
  --image-map "capsule-sidecar:*=$bin/capsule-sidecar" \
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
