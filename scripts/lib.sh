# Shell functions the scripts share; source it after defining `kubectl`.

# Waits until the EtcdCluster CRD is established. Not `kubectl wait --for condition=Established`: that fails at
# once on a CRD that has no conditions yet, right after it was applied.
wait_crd_established() {
  local start=$SECONDS
  until [[ $(kubectl get crd etcdclusters.kube-etcd-controller.dev \
    -o jsonpath='{.status.conditions[?(@.type=="Established")].status}' 2>/dev/null) == True ]]; do
    ((SECONDS - start < 60)) || { echo "the CRD etcdclusters.kube-etcd-controller.dev was not established" >&2; return 1; }
    sleep 0.5
  done
}
