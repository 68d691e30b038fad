#!/usr/bin/env bash
# The whole thing on this machine: the Kubernetes test bed (built from upstream sources on first use), the
# controller deployed as a user deploys it (kubectl apply -f the CRD and example/etcd-controller.yaml, images from
# the release binaries), the example three-member cluster, data written through its client service, and a member
# deleted and replaced. Leaves everything running; tests/e2e/down.sh stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/install-deps.sh)"
if ! up_env=$(tests/e2e/up.sh); then
  echo "demo-cluster.sh: the test bed did not come up; see ~/.cache/kec/testbed/logs" >&2
  exit 1
fi
eval "$up_env"
tests/e2e/app-images.sh
KUBECTL=$(tests/e2e/build.sh kubectl)/kubectl
kubectl() { "$KUBECTL" "$@"; }
etcdctl() { ETCDCTL_API=3 command etcdctl --endpoints "$ENDPOINT" "$@"; }
step() { echo; echo "== $*"; }

step "kubectl apply -f example/etcd-crd.yaml -f example/etcd-controller.yaml"
kubectl apply -f example/etcd-crd.yaml
kubectl wait --for condition=Established crd/etcdclusters.kube-etcd-controller.dev --timeout 60s
kubectl apply -f example/etcd-controller.yaml
kubectl -n etcd-controller rollout status deployment/etcd-controller --timeout 120s

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

step "kubectl delete pod example-etcd-cluster-0001 (the controller replaces the member under a new name)"
kubectl delete pod example-etcd-cluster-0001
start=$SECONDS
until [[ $(kubectl get etcd example-etcd-cluster -o jsonpath='{.status.phase}/{.status.readyMembers}/{.status.members.ready}') == Running/3/*0003* ]]; do
  ((SECONDS - start < 120)) || { echo "demo-cluster.sh: the member was not replaced" >&2; exit 1; }
  sleep 1
done
echo "replaced in $((SECONDS - start)) s"
etcdctl member list -w table
etcdctl get /demo/greeting
kubectl get events --field-selector involvedObject.kind=EtcdCluster --sort-by .metadata.creationTimestamp | tail -n 8

echo
echo "export KUBECONFIG=$KUBECONFIG   # then: $KUBECTL get etcd; tests/e2e/down.sh stops everything"
