#!/usr/bin/env bash
# Benchmark: the controller's footprint while it manages many clusters. Brings up the test bed, runs the release
# controller on this host watching one namespace, creates N one-member clusters (etcd 3.4.23), waits until all
# are Running, lets it resync for a while, and prints its RSS now and at peak (VmRSS, VmHWM) and the time to
# bring all clusters up. Target: under 50 MB RSS with 20 clusters. Cleans its namespace up afterwards.
#   scripts/bench-controller.sh [CLUSTERS=20] [SETTLE_SECONDS=60]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20}
SETTLE=${2:-60}
NS=kec-bench
deps=$(scripts/install-deps.sh) || { echo "bench-controller.sh: scripts/install-deps.sh failed" >&2; exit 1; }
eval "$deps"
up_env=$(tests/e2e/up.sh) || { echo "bench-controller.sh: the test bed did not come up" >&2; exit 1; }
eval "$up_env"
KUBECTL=$(tests/e2e/build.sh kubectl)/kubectl
kubectl() { "$KUBECTL" "$@"; }
source scripts/lib.sh
cargo build --release -q -p controller

kubectl apply -f example/etcd-crd.yaml >/dev/null
wait_crd_established
# The controller measured must be the only one: a deployed one (the demo leaves it running) watches every namespace.
kubectl delete -f example/etcd-controller.yaml --ignore-not-found --wait=true >/dev/null
kubectl delete namespace "$NS" --ignore-not-found --wait=true >/dev/null
kubectl create namespace "$NS" >/dev/null
log=$(mktemp)
target/release/etcd-controller run --namespace "$NS" --metrics-listen 127.0.0.1:0 >"$log" 2>&1 &
pid=$!
cleanup() {
  kill "$pid" 2>/dev/null || true
  kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
  rm -f "$log"
}
trap cleanup EXIT

start=$SECONDS
# Small requests: this measures the controller, and the members' default requests (100m CPU each) would not let
# 20 of them fit on the test bed's two cores.
for i in $(seq -w 1 "$N"); do
  printf 'apiVersion: kube-etcd-controller.dev/v1alpha1\nkind: EtcdCluster\nmetadata: {name: bench-%s}\nspec: {size: 1, version: 3.4.23, pod: {resources: {requests: {cpu: 10m, memory: 32Mi}}}}\n' "$i"
  echo ---
done | kubectl -n "$NS" apply -f - >/dev/null
until (($(kubectl -n "$NS" get etcd -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}' | grep -c '^Running$') == N)); do
  ((SECONDS - start < 600)) || { echo "bench-controller.sh: not all clusters became Running" >&2; tail -n 20 "$log" >&2; exit 1; }
  sleep 2
done
echo "$N clusters Running after $((SECONDS - start)) s"
sleep "$SETTLE"
rss=$(sed -n 's/^VmRSS:\s*\([0-9]*\) kB/\1/p' "/proc/$pid/status")
hwm=$(sed -n 's/^VmHWM:\s*\([0-9]*\) kB/\1/p' "/proc/$pid/status")
echo "controller RSS with $N clusters after ${SETTLE}s of resyncs: $((rss / 1024)) MiB now, $((hwm / 1024)) MiB peak (target: under 50 MB)"
