#!/usr/bin/env bash
# The whole thing on this machine: the Kubernetes test bed (built from upstream sources on first use), the
# controller installed as a user installs it (helm install of charts/kube-etcd-controller, images from the release
# binaries), the example three-member cluster (each member on its own volume), data written through its
# client service, every member pod deleted at once and the same members back on their volumes with the data. Leaves everything running; tests/e2e/down.sh stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."
deps=$(scripts/install-deps.sh) || { echo "demo-cluster.sh: scripts/install-deps.sh failed" >&2; exit 1; }
eval "$deps"
if ! up_env=$(tests/e2e/up.sh); then
  echo "demo-cluster.sh: the test bed did not come up; see ~/.cache/kec/testbed/logs" >&2
  exit 1
fi
eval "$up_env"
# This build's images, under tags that change with the build (so a controller left running by an earlier demo is
# replaced, not kept).
images=$(tests/e2e/app-images.sh) || { echo "demo-cluster.sh: building the images failed" >&2; exit 1; }
eval "$images"
KUBECTL=$(tests/e2e/build.sh kubectl)/kubectl
kubectl() { "$KUBECTL" "$@"; }
source scripts/lib.sh
etcdctl() { ETCDCTL_API=3 command etcdctl --endpoints "$ENDPOINT" "$@"; }
step() { echo; echo "== $*"; }

step "helm upgrade --install etcd-controller charts/kube-etcd-controller -n etcd-controller (this build's images)"
helm() { "$HELM_BIN" "$@"; }
# A controller an earlier demo applied with kubectl is not Helm's to take over: removed first (its CRD is adopted,
# as README.md's "From the plain manifests to the chart" says, so no cluster is deleted).
if kubectl -n etcd-controller get deployment etcd-controller >/dev/null 2>&1 &&
  [[ -z $(kubectl -n etcd-controller get deployment etcd-controller -o jsonpath='{.metadata.annotations.meta\.helm\.sh/release-name}') ]]; then
  kubectl delete -f example/etcd-controller.yaml --ignore-not-found --wait=true
fi
crd=customresourcedefinition/etcdclusters.kube-etcd-controller.dev
if kubectl get "$crd" >/dev/null 2>&1; then
  kubectl label "$crd" app.kubernetes.io/managed-by=Helm --overwrite >/dev/null
  kubectl annotate "$crd" meta.helm.sh/release-name=etcd-controller meta.helm.sh/release-namespace=etcd-controller --overwrite >/dev/null
fi
kubectl create namespace etcd-controller --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl label namespace etcd-controller pod-security.kubernetes.io/enforce=restricted --overwrite >/dev/null
helm upgrade --install etcd-controller charts/kube-etcd-controller -n etcd-controller \
  --set image.tag="${KEC_CONTROLLER_IMAGE##*:}" --set sidecarImage="$KEC_SIDECAR_IMAGE" --wait --timeout 180s
wait_crd_established
kubectl -n etcd-controller get pods -o wide

# A cluster left by an earlier run starts over, so every run shows the same thing.
if kubectl get etcd example-etcd-cluster >/dev/null 2>&1; then
  step "kubectl delete etcd example-etcd-cluster (left by an earlier run)"
  kubectl delete etcd example-etcd-cluster --wait=true
  until [[ -z $(kubectl get pods -l kube-etcd-controller.dev/cluster=example-etcd-cluster -o name) ]]; do sleep 1; done
  # Its claims are retained (whenDeleted: Retain), and a new cluster of the same name refuses to start beside them.
  kubectl delete pvc -l kube-etcd-controller.dev/cluster=example-etcd-cluster --wait=true
fi

step "kubectl apply -f example/example-etcd-cluster.yaml"
kubectl apply -f example/example-etcd-cluster.yaml
start=$SECONDS
until [[ $(kubectl get etcd example-etcd-cluster -o jsonpath='{.status.phase}/{.status.readyMembers}' 2>/dev/null) == Running/3 ]]; do
  ((SECONDS - start < 180)) || { echo "demo-cluster.sh: the cluster did not become ready" >&2; kubectl describe etcd example-etcd-cluster >&2; exit 1; }
  sleep 1
done
echo "three members ready in $((SECONDS - start)) s"
kubectl get etcd,pods,services -o wide

ENDPOINT=http://$(kubectl get service example-etcd-cluster-client -o jsonpath='{.spec.clusterIP}'):2379
step "etcdctl put/get through the client service ($ENDPOINT)"
etcdctl put /demo/greeting "hello from $(hostname)"
etcdctl get /demo/greeting
etcdctl member list -w table

step "kubectl delete pods -l kube-etcd-controller.dev/cluster=example-etcd-cluster (every member at once: they come back on their volumes)"
kubectl get pvc -l kube-etcd-controller.dev/cluster=example-etcd-cluster
members=kube-etcd-controller.dev/cluster=example-etcd-cluster,kube-etcd-controller.dev/member
before=$(kubectl get pods -l "$members" -o jsonpath='{.items[*].metadata.uid}')
kubectl delete pods -l "$members" --wait=false
start=$SECONDS
# Three new pods (none of the UIDs deleted), Ready, named as before.
back() {
  kubectl get pods -l "$members" -o jsonpath='{range .items[*]}{.metadata.uid} {.metadata.name} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' |
    awk -v before="$before" 'BEGIN { n = split(before, b, " "); for (i = 1; i <= n; i++) old[b[i]] = 1 }
      !($1 in old) && $3 == "True" { ready++ } END { print ready + 0 }'
}
until [[ $(back) == 3 ]]; do
  ((SECONDS - start < 120)) || { echo "demo-cluster.sh: the members did not come back" >&2; exit 1; }
  sleep 1
done
kubectl get pods -l "$members" -o wide
echo "the same members back on their volumes in $((SECONDS - start)) s"
etcdctl member list -w table
etcdctl get /demo/greeting
kubectl get events --field-selector involvedObject.kind=EtcdCluster --sort-by .metadata.creationTimestamp | tail -n 8

echo
echo "export KUBECONFIG=$KUBECONFIG   # then: $KUBECTL get etcd; tests/e2e/down.sh stops everything"
