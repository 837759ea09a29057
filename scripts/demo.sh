#!/usr/bin/env bash
# The whole story: `kubevisor up`, `kubectl apply -f examples/vm-legacy.yaml`, `kubectl get vms`
# turning Running, the guest's console up to its login prompt and cloud-init's output, then a
# clean stop (kubectl delete, then `kubevisor up` powers down and stops). Starts from a fresh
# data dir each time (KUBEVISOR_DEMO_DIR, default $KUBEVISOR_DATA/demo).
set -euo pipefail
cd "$(dirname "$0")/.."

DATA="${KUBEVISOR_DEMO_DIR:-${KUBEVISOR_DATA:-/var/lib/kubevisor}/demo}"
PY=.venv/bin/python
KUBECTL="${KUBECTL:-/usr/lib/google-cloud-sdk/bin/kubectl.1.32}"
[[ -x "$KUBECTL" ]] || KUBECTL=kubectl
VM=legacy
TIMEOUT=600

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
kubectl() { "$KUBECTL" "$@"; }

# A fresh data dir; an interrupted earlier demo may still run there: stop it first.
"$PY" -m kubevisor.cli down --data-dir "$DATA" >/dev/null
if [[ -e "$DATA" ]]; then
    if [[ ! -d "$DATA/procs" && -n "$(ls -A "$DATA")" ]]; then
        echo "demo: $DATA exists and is not a kubevisor up data dir; set KUBEVISOR_DEMO_DIR" >&2
        exit 1
    fi
    rm -rf "$DATA"
fi
mkdir -p "$DATA"

UP_PID=""
stop_up() {
    if [[ -n "$UP_PID" ]] && kill -0 "$UP_PID" 2>/dev/null; then
        kill -TERM "$UP_PID"
        wait "$UP_PID" || true
    fi
    UP_PID=""
}
trap stop_up EXIT

step "kubevisor up --data-dir $DATA"
"$PY" -m kubevisor.cli up --data-dir "$DATA" --listen 127.0.0.1:0 >"$DATA/up.log" 2>&1 &
UP_PID=$!
shown=0
until grep -q "Kubevisor is up" "$DATA/up.log"; do
    if ! kill -0 "$UP_PID" 2>/dev/null; then
        cat "$DATA/up.log"
        echo "demo: kubevisor up exited" >&2
        exit 1
    fi
    sleep 0.5
done
sleep 0.5
cat "$DATA/up.log"
shown=$(wc -l <"$DATA/up.log")
export KUBECONFIG="$DATA/kubeconfig"

step "kubectl apply -f examples/vm-legacy.yaml"
kubectl apply -f examples/vm-legacy.yaml

step "kubectl get vms   (until Running)"
last=""
deadline=$((SECONDS + TIMEOUT))
while :; do
    out="$(kubectl get vms "$VM" 2>&1 || true)"
    status="$(awk 'NR==2 {print $3}' <<<"$out")"
    if [[ "$status" != "$last" ]]; then
        if [[ -z "$last" ]]; then echo "$out"; else tail -n 1 <<<"$out"; fi
        last="$status"
    fi
    [[ "$status" == "Running" ]] && break
    if ((SECONDS > deadline)); then
        echo "demo: the VM did not reach Running in ${TIMEOUT}s" >&2
        exit 1
    fi
    sleep 1
done
kubectl get vmis -o wide
kubectl get pods -o wide

step "the guest's serial console ($DATA/run/vms/default_$VM/serial0.log)"
"$PY" scripts/demo_console.py "$DATA/run/vms/default_$VM/serial0.log" --timeout "$TIMEOUT"

step "kubectl delete -f examples/vm-legacy.yaml"
kubectl delete -f examples/vm-legacy.yaml --wait=true --timeout=120s
for _ in $(seq 120); do
    [[ -z "$(kubectl get vmis,pods -o name 2>/dev/null)" ]] && break
    sleep 1
done
kubectl get vms,vmis,pods

step "stopping kubevisor up"
stop_up
tail -n +"$((shown + 1))" "$DATA/up.log"
left="$(find "$DATA/run" "$DATA/node" -mindepth 2 2>/dev/null | head -5)"
if [[ -n "$left" ]]; then
    echo "demo: left behind:" >&2
    echo "$left" >&2
    exit 1
fi
echo "demo: done; nothing left running (data dir: $DATA)"
