#!/usr/bin/env bash
# Renders the plain manifests of example/ from the Helm chart (charts/kube-etcd-controller), the one source of the
# install, and copies the CRD into the chart: run it after changing the chart or the CRD (after
# `cargo run -p controller -- crd > example/etcd-crd.yaml`); tests/tests/chart.rs fails while they differ.
#   scripts/render-manifests.sh          writes example/etcd-controller.yaml and example/etcd-controller-namespaced.yaml
#   scripts/render-manifests.sh --check  fails if either differs from what the chart renders
set -euo pipefail
cd "$(dirname "$0")/.."
helm=${HELM_BIN:-}
[[ -x $helm ]] || helm=$(eval "$(scripts/install-deps.sh)" && echo "$HELM_BIN")
chart=charts/kube-etcd-controller

render() { # file namespace header [--set ...]
  local file=$1 namespace=$2 header=$3
  shift 3
  {
    printf '%s\n' "$header"
    "$helm" template etcd-controller "$chart" --namespace "$namespace" --set crds.install=false "$@"
  }
}
cluster_header="# The controller as a user deploys it without Helm, for every namespace:
#   kubectl apply -f example/etcd-crd.yaml -f example/etcd-controller.yaml
# Rendered from charts/kube-etcd-controller by scripts/render-manifests.sh: change the chart, not this file.
# Its permissions are the rows of controller/src/rbac.rs (a unit test holds this file to that table both ways)."
namespaced_header="# The controller for one namespace only (here \`etcd\`): it watches EtcdClusters there, holds its Lease there,
# and reads only Nodes and StorageClasses cluster-wide. The CRD is installed once by a cluster administrator:
#   kubectl apply -f example/etcd-crd.yaml && kubectl create namespace etcd && kubectl apply -f example/etcd-controller-namespaced.yaml
# For another namespace render the chart: helm template etcd-controller charts/kube-etcd-controller -n team-a \\
#   --set scope=namespace,crds.install=false | kubectl apply -f -
# Rendered from charts/kube-etcd-controller by scripts/render-manifests.sh: change the chart, not this file."

check=0
[[ ${1:-} == --check ]] && check=1
status=0
while read -r file namespace header sets; do
  # shellcheck disable=SC2086 # sets is a list of arguments
  rendered=$(render "$file" "$namespace" "${!header}" $sets)
  if ((check)); then
    if ! diff -u "$file" <(printf '%s\n' "$rendered") >&2; then
      echo "render-manifests: $file is stale: run scripts/render-manifests.sh" >&2
      status=1
    fi
  else
    printf '%s\n' "$rendered" > "$file"
  fi
done <<'LIST'
example/etcd-controller.yaml etcd-controller cluster_header --set namespace.create=true
example/etcd-controller-namespaced.yaml etcd namespaced_header --set scope=namespace
LIST
# The chart ships the CRD as `etcd-controller crd` prints it (example/etcd-crd.yaml, held to the controller by
# controller/src/crd.rs).
crd=$chart/files/etcd-crd.yaml
if ((check)); then
  cmp -s example/etcd-crd.yaml "$crd" || { echo "render-manifests: $crd differs from example/etcd-crd.yaml: run scripts/render-manifests.sh" >&2; status=1; }
else
  cp example/etcd-crd.yaml "$crd"
fi
exit $status
